//! [`McpAggregator`]: several MCP servers as one [`ToolSource`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use agentkit_core::{Content, Error, Result, RunContext, ToolOutput, ToolSource, ToolSpec};
use async_trait::async_trait;
use rmcp::model::{
    CallToolResult, ContentBlock, GetPromptResult, JsonObject, Prompt, ReadResourceResult,
    Resource, ResourceContents, Tool,
};
use serde_json::Value;
use tokio::sync::Mutex as AsyncMutex;

use crate::manager::ConnectionManager;
use crate::names::qualified_tool_name;

/// The default separator of `server__tool` names.
pub const DEFAULT_SEPARATOR: &str = "__";

/// Two servers' tools that ended up with the same exposed name; the first server keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Collision {
    /// The exposed name.
    pub name: String,
    /// The server that keeps the name.
    pub kept: (String, String),
    /// The server tool that was dropped.
    pub dropped: (String, String),
}

#[derive(Default)]
struct Index {
    /// exposed name -> (server, tool)
    exposed: HashMap<String, (String, String)>,
    /// the server's own tool name -> exposed names
    plain: HashMap<String, Vec<String>>,
    collisions: Vec<Collision>,
}

struct Cached {
    epoch: u64,
    tools: Arc<Vec<Tool>>,
}

/// Several MCP servers behind one [`ToolSource`].
///
/// Tools are exposed as `server__tool` (separator configurable), sanitised to `[a-zA-Z0-9_-]`
/// and at most 64 characters (shortened deterministically). A call by the server's own tool
/// name works when exactly one server has such a tool. Tool lists are cached per server and
/// refreshed when the server sends `tools/list_changed` (legacy) or through `subscriptions/listen`
/// (2026-07-28), and after a reconnect. Prompts and resources are listed and read too. These
/// requests only read, so one whose connection turns out lost (the server died and is back)
/// is made again, once, on a new connection ([`ConnectionManager::read_only`]): the first
/// listing after a crash does not fail.
///
/// ```no_run
/// use agentkit_core::{RunContext, ToolSource};
/// use agentkit_mcp::{ConnectionManager, McpAggregator, ServerConfig};
/// # async fn demo() -> agentkit_core::Result<()> {
/// let manager = ConnectionManager::new([
///     ServerConfig::stdio("fs", "npx", ["-y", "@modelcontextprotocol/server-filesystem", "."]),
/// ]);
/// let tools = McpAggregator::new(manager.clone(), ["fs"]);
/// for t in tools.list_tools().await? { println!("{}", t.name); } // fs__read_text_file, ...
/// let out = tools
///     .call_tool("fs__list_directory", serde_json::json!({"path": "."}), &RunContext::new())
///     .await?;
/// println!("{}", out.text_content());
/// manager.shutdown().await;
/// # Ok(()) }
/// ```
pub struct McpAggregator {
    manager: ConnectionManager,
    servers: Vec<String>,
    separator: String,
    cache: AsyncMutex<HashMap<String, Cached>>,
    index: RwLock<Arc<Index>>,
}

impl std::fmt::Debug for McpAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpAggregator")
            .field("servers", &self.servers)
            .field("separator", &self.separator)
            .finish_non_exhaustive()
    }
}

impl McpAggregator {
    /// An aggregator over these servers of `manager`.
    pub fn new<I, S>(manager: ConnectionManager, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            manager,
            servers: servers.into_iter().map(Into::into).collect(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            cache: AsyncMutex::new(HashMap::new()),
            index: RwLock::new(Arc::default()),
        }
    }

    /// An aggregator over every server of `manager`.
    #[must_use]
    pub fn all(manager: ConnectionManager) -> Self {
        let names = manager.server_names();
        Self::new(manager, names)
    }

    /// Use another separator between server and tool names.
    #[must_use]
    pub fn with_separator(mut self, separator: impl Into<String>) -> Self {
        self.separator = separator.into();
        self
    }

    /// The manager.
    #[must_use]
    pub fn manager(&self) -> &ConnectionManager {
        &self.manager
    }

    /// The servers.
    #[must_use]
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Name collisions found by the last listing.
    #[must_use]
    pub fn collisions(&self) -> Vec<Collision> {
        self.index
            .read()
            .map(|i| i.collisions.clone())
            .unwrap_or_default()
    }

    /// The tools of one server (cached until its lists change), after its tool filter.
    pub async fn server_tools(&self, server: &str) -> Result<Arc<Vec<Tool>>> {
        let epoch = self.manager.lists_epoch(server)?;
        if let Some(c) = self.cache.lock().await.get(server)
            && c.epoch == epoch
            && self.manager.existing_connection(server).is_some()
        {
            return Ok(Arc::clone(&c.tools));
        }
        let manager = &self.manager;
        let (epoch, tools) = manager
            .read_only(server, |conn| async move {
                // Read the epoch after connecting: a reconnect bumps it.
                let epoch = manager.lists_epoch(server)?;
                Ok((epoch, conn.list_tools().await?))
            })
            .await?;
        let config = self.manager.server_config(server);
        let tools: Vec<Tool> = tools
            .into_iter()
            .filter(|t| config.as_ref().is_none_or(|c| c.offers_tool(&t.name)))
            .collect();
        let tools = Arc::new(tools);
        self.cache.lock().await.insert(
            server.to_owned(),
            Cached {
                epoch,
                tools: Arc::clone(&tools),
            },
        );
        Ok(tools)
    }

    async fn rebuild(&self) -> Result<(Arc<Index>, Vec<ToolSpec>)> {
        let lists =
            futures::future::try_join_all(self.servers.iter().map(|s| self.server_tools(s)))
                .await?;
        let mut index = Index::default();
        let mut specs = Vec::new();
        for (server, tools) in self.servers.iter().zip(lists) {
            for t in tools.iter() {
                let exposed = qualified_tool_name(server, &t.name, &self.separator);
                if let Some(kept) = index.exposed.get(&exposed) {
                    let c = Collision {
                        name: exposed.clone(),
                        kept: kept.clone(),
                        dropped: (server.clone(), t.name.to_string()),
                    };
                    tracing::warn!(name = %c.name, kept = ?c.kept, dropped = ?c.dropped, "MCP tool name collision; the first server keeps the name");
                    index.collisions.push(c);
                    continue;
                }
                index
                    .exposed
                    .insert(exposed.clone(), (server.clone(), t.name.to_string()));
                index
                    .plain
                    .entry(t.name.to_string())
                    .or_default()
                    .push(exposed.clone());
                specs.push(tool_spec(&exposed, server, t));
            }
        }
        let index = Arc::new(index);
        if let Ok(mut i) = self.index.write() {
            *i = Arc::clone(&index);
        }
        Ok((index, specs))
    }

    fn resolve_in(
        index: &Index,
        name: &str,
    ) -> Option<std::result::Result<(String, String), Error>> {
        if let Some(hit) = index.exposed.get(name) {
            return Some(Ok(hit.clone()));
        }
        let plain = index.plain.get(name)?;
        match plain.as_slice() {
            [one] => index.exposed.get(one).cloned().map(Ok),
            many => Some(Err(Error::InvalidRequest(format!(
                "tool name `{name}` is ambiguous: use one of {}",
                many.join(", ")
            )))),
        }
    }

    /// Which server and tool an exposed (or unambiguous plain) name refers to.
    pub async fn resolve(&self, name: &str) -> Result<(String, String)> {
        let current = self
            .index
            .read()
            .map(|i| Arc::clone(&i))
            .unwrap_or_default();
        if let Some(r) = Self::resolve_in(&current, name) {
            return r;
        }
        let (index, specs) = self.rebuild().await?;
        match Self::resolve_in(&index, name) {
            Some(r) => r,
            None => Err(Error::ToolNotFound {
                tool: name.to_owned(),
                available: specs.into_iter().map(|s| s.name).collect(),
            }),
        }
    }

    /// Every prompt of every server, by server.
    pub async fn list_prompts(&self) -> Result<BTreeMap<String, Vec<Prompt>>> {
        let mut out = BTreeMap::new();
        for s in &self.servers {
            let prompts = self
                .manager
                .read_only(s, |conn| async move {
                    let supports = conn
                        .peer_info()
                        .is_none_or(|i| i.capabilities.prompts.is_some());
                    if supports {
                        conn.list_prompts().await
                    } else {
                        Ok(Vec::new())
                    }
                })
                .await?;
            out.insert(s.clone(), prompts);
        }
        Ok(out)
    }

    /// Every resource of every server, by server.
    pub async fn list_resources(&self) -> Result<BTreeMap<String, Vec<Resource>>> {
        let mut out = BTreeMap::new();
        for s in &self.servers {
            let resources = self
                .manager
                .read_only(s, |conn| async move {
                    let supports = conn
                        .peer_info()
                        .is_none_or(|i| i.capabilities.resources.is_some());
                    if supports {
                        conn.list_resources().await
                    } else {
                        Ok(Vec::new())
                    }
                })
                .await?;
            out.insert(s.clone(), resources);
        }
        Ok(out)
    }

    /// Read a resource of `server`.
    pub async fn read_resource(&self, server: &str, uri: &str) -> Result<ReadResourceResult> {
        self.check_server(server)?;
        self.manager
            .read_only(server, |conn| async move { conn.read_resource(uri).await })
            .await
    }

    /// Get a prompt of `server`.
    pub async fn get_prompt(
        &self,
        server: &str,
        name: &str,
        arguments: JsonObject,
    ) -> Result<GetPromptResult> {
        self.check_server(server)?;
        self.manager
            .read_only(server, |conn| {
                let arguments = arguments.clone();
                async move { conn.get_prompt(name, arguments).await }
            })
            .await
    }

    fn check_server(&self, server: &str) -> Result<()> {
        if self.servers.iter().any(|s| s == server) {
            Ok(())
        } else {
            Err(Error::InvalidRequest(format!(
                "server `{server}` is not part of this aggregator; its servers: {}",
                self.servers.join(", ")
            )))
        }
    }
}

fn tool_spec(exposed: &str, server: &str, t: &Tool) -> ToolSpec {
    let description = t
        .description
        .as_deref()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("`{}` of MCP server `{server}`", t.name));
    let mut spec = ToolSpec::new(exposed, description, t.schema_as_json_value());
    if let Some(out) = &t.output_schema {
        spec = spec.with_output_schema(Value::Object((**out).clone()));
    }
    spec
}

#[async_trait]
impl ToolSource for McpAggregator {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        Ok(self.rebuild().await?.1)
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        ctx: &RunContext,
    ) -> Result<ToolOutput> {
        let (server, tool) = self.resolve(name).await?;
        let args = match arguments {
            Value::Object(o) => o,
            Value::Null => JsonObject::new(),
            other => {
                return Ok(ToolOutput::error(format!(
                    "arguments of `{name}` must be a JSON object, got {other}"
                )));
            }
        };
        let result = self.manager.call_tool(&server, &tool, args, ctx).await?;
        Ok(to_tool_output(result))
    }
}

/// Convert an MCP tool result into agentkit's [`ToolOutput`].
#[must_use]
pub fn to_tool_output(r: CallToolResult) -> ToolOutput {
    let content = r.content.into_iter().map(to_content).collect();
    let mut out = ToolOutput::new(content).with_is_error(r.is_error.unwrap_or(false));
    if let Some(s) = r.structured_content {
        out = out.with_structured(s);
    }
    out
}

/// Convert one MCP content block into agentkit's [`Content`].
#[must_use]
pub fn to_content(block: ContentBlock) -> Content {
    match block {
        ContentBlock::Text(t) => Content::text(t.text),
        ContentBlock::Image(i) => Content::image_base64(i.mime_type, i.data),
        ContentBlock::Audio(a) => Content::text(format!("[audio {}]", a.mime_type)),
        ContentBlock::Resource(r) => resource_content(r.resource),
        ContentBlock::ResourceLink(l) => Content::text(format!("[resource {}]", l.uri)),
        other => Content::text(serde_json::to_string(&other).unwrap_or_default()),
    }
}

fn resource_content(r: ResourceContents) -> Content {
    match r {
        ResourceContents::TextResourceContents {
            uri,
            mime_type,
            text,
            ..
        } => {
            let mut c = Content::resource_text(uri, text);
            if let Content::Resource { mime_type: m, .. } = &mut c {
                *m = mime_type;
            }
            c
        }
        ResourceContents::BlobResourceContents {
            uri,
            mime_type,
            blob,
            ..
        } => {
            let mut c = Content::resource_text(uri, "");
            if let Content::Resource {
                mime_type: m,
                text,
                blob: b,
                ..
            } = &mut c
            {
                *m = mime_type;
                *text = None;
                *b = Some(blob);
            }
            c
        }
        other => Content::text(serde_json::to_string(&other).unwrap_or_default()),
    }
}
