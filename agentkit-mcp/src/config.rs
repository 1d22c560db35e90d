//! [`ServerConfig`]: how to reach one MCP server, built from agentkit's
//! [`McpServerConfig`], from mcp-agent's
//! `mcp_agent.config.yaml`, or from the `{"mcpServers": {...}}` JSON of Claude Desktop, Cursor
//! and `.mcp.json`; plus role-based server sets ([`ServerSet`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentkit_core::config::{McpRoot, McpSettings};
use agentkit_core::{Error, McpServerConfig, McpTransport, Result};
use serde_json::Value;

/// How to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerTransport {
    /// A child process speaking MCP over stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables.
        env: BTreeMap<String, String>,
        /// Working directory.
        cwd: Option<PathBuf>,
    },
    /// Streamable HTTP.
    StreamableHttp {
        /// Endpoint, e.g. `http://127.0.0.1:3001/mcp`.
        url: String,
        /// Extra HTTP headers.
        headers: BTreeMap<String, String>,
        /// Sent as `Authorization: Bearer <token>`.
        bearer_token: Option<String>,
    },
}

/// Which of a server's tools are offered: all, minus `deny`, and only `allow` when set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolFilter {
    /// Only these tools (all when `None`).
    pub allow: Option<BTreeSet<String>>,
    /// Never these tools.
    pub deny: BTreeSet<String>,
}

impl ToolFilter {
    /// A filter that lets every tool through.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Offer only these tools.
    #[must_use]
    pub fn with_allow<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.allow = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Never offer these tools.
    #[must_use]
    pub fn with_deny<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.deny.extend(names.into_iter().map(Into::into));
        self
    }

    /// Whether the tool named `name` (the server's own name) passes.
    #[must_use]
    pub fn allows(&self, name: &str) -> bool {
        !self.deny.contains(name) && self.allow.as_ref().is_none_or(|a| a.contains(name))
    }
}

/// One MCP server: its name, how to reach it, its limits, roots and tool filter.
///
/// ```
/// use agentkit_mcp::{ServerConfig, ServerTransport};
/// let fs = ServerConfig::stdio("fs", "npx", ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"])
///     .with_max_concurrency(4);
/// assert!(matches!(fs.transport, ServerTransport::Stdio { .. }));
/// let remote = ServerConfig::http("issues", "http://127.0.0.1:9000/mcp").with_bearer_token("s3cret");
/// assert_eq!(remote.name, "issues");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Name, used to prefix its tools (`name__tool`) and in errors.
    pub name: String,
    /// How to reach it.
    pub transport: ServerTransport,
    /// What it is for.
    pub description: Option<String>,
    /// Time allowed to start and initialise.
    pub connect_timeout: Duration,
    /// Time allowed for one request (re-armed by progress notifications).
    pub request_timeout: Option<Duration>,
    /// Roots offered to the server (`roots/list`).
    pub roots: Vec<McpRoot>,
    /// Which tools are offered.
    pub tool_filter: ToolFilter,
    /// At most this many requests in flight at once (unbounded when `None`).
    pub max_concurrency: Option<usize>,
}

/// Default time allowed to connect and initialise (npx may need to unpack a package).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

impl ServerConfig {
    /// A server with this transport and default limits.
    pub fn new(name: impl Into<String>, transport: ServerTransport) -> Self {
        Self {
            name: name.into(),
            transport,
            description: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
            roots: Vec::new(),
            tool_filter: ToolFilter::default(),
            max_concurrency: None,
        }
    }

    /// A stdio server started as `command args...`.
    pub fn stdio<I, S>(name: impl Into<String>, command: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(
            name,
            ServerTransport::Stdio {
                command: command.into(),
                args: args.into_iter().map(Into::into).collect(),
                env: BTreeMap::new(),
                cwd: None,
            },
        )
    }

    /// A streamable HTTP server at `url`.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(
            name,
            ServerTransport::StreamableHttp {
                url: url.into(),
                headers: BTreeMap::new(),
                bearer_token: None,
            },
        )
    }

    /// Set an environment variable of a stdio server (ignored for HTTP).
    #[must_use]
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let ServerTransport::Stdio { env, .. } = &mut self.transport {
            env.insert(key.into(), value.into());
        }
        self
    }

    /// Set the working directory of a stdio server (ignored for HTTP).
    #[must_use]
    pub fn with_cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        if let ServerTransport::Stdio { cwd, .. } = &mut self.transport {
            *cwd = Some(dir.into());
        }
        self
    }

    /// Add an HTTP header (ignored for stdio).
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        if let ServerTransport::StreamableHttp { headers, .. } = &mut self.transport {
            headers.insert(key.into(), value.into());
        }
        self
    }

    /// Send `Authorization: Bearer <token>` (ignored for stdio).
    #[must_use]
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        if let ServerTransport::StreamableHttp { bearer_token, .. } = &mut self.transport {
            *bearer_token = Some(token.into());
        }
        self
    }

    /// Describe the server.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Time allowed to connect and initialise.
    #[must_use]
    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Time allowed for one request.
    #[must_use]
    pub fn with_request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = Some(t);
        self
    }

    /// Offer a root (`file://` URI).
    #[must_use]
    pub fn with_root(mut self, uri: impl Into<String>, name: Option<String>) -> Self {
        let mut root: McpRoot =
            match serde_json::from_value(serde_json::json!({"uri": uri.into(), "name": name})) {
                Ok(r) => r,
                Err(_) => return self,
            };
        if root.name.as_deref() == Some("") {
            root.name = None;
        }
        self.roots.push(root);
        self
    }

    /// Filter the offered tools.
    #[must_use]
    pub fn with_tool_filter(mut self, filter: ToolFilter) -> Self {
        self.tool_filter = filter;
        self
    }

    /// Limit concurrent requests.
    #[must_use]
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }

    /// Build from agentkit's config type. Fails on a config that names no command (stdio) or
    /// no URL (HTTP), and on the legacy SSE transport, which rmcp no longer speaks.
    pub fn from_core(name: impl Into<String>, c: &McpServerConfig) -> Result<Self> {
        let name = name.into();
        let key = format!("mcp.servers.{name}");
        let transport = match (c.transport, &c.command, &c.url) {
            (McpTransport::Sse, _, _) => {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: "the legacy HTTP+SSE transport is not supported; use `streamable_http` (most servers serve it at `/mcp`) or run the server over stdio".into(),
                });
            }
            (McpTransport::StreamableHttp, _, Some(url)) | (_, None, Some(url)) => {
                ServerTransport::StreamableHttp {
                    url: url.clone(),
                    headers: c.headers.clone(),
                    bearer_token: c.bearer_token.clone(),
                }
            }
            (McpTransport::StreamableHttp, _, None) => {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: "a streamable_http server needs a `url`".into(),
                });
            }
            (_, Some(command), _) => ServerTransport::Stdio {
                command: command.clone(),
                args: c.args.clone(),
                env: c.env.clone(),
                cwd: c.cwd.clone(),
            },
            (_, None, None) => {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: "set `command` (stdio server) or `url` (streamable HTTP server)"
                        .into(),
                });
            }
        };
        let secs = |v: Option<f64>| {
            v.filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
        };
        let mut out = Self::new(name, transport);
        out.description = c.description.clone();
        if let Some(t) = secs(c.connect_timeout_seconds) {
            out.connect_timeout = t;
        }
        out.request_timeout = secs(c.request_timeout_seconds);
        out.roots = c.roots.clone();
        out.tool_filter = ToolFilter {
            allow: c
                .allowed_tools
                .as_ref()
                .map(|v| v.iter().cloned().collect()),
            deny: c.denied_tools.iter().cloned().collect(),
        };
        out.max_concurrency = c.max_concurrency.map(|n| n.max(1));
        Ok(out)
    }
}

/// A set of configured servers plus named roles (`roles: {dev: [core, issues]}`).
///
/// Read it from agentkit's [`McpSettings`], from `mcp_agent.config.yaml` or from `mcpServers`
/// JSON, then ask which servers an agent gets: the union of its roles and its own list.
///
/// ```
/// use agentkit_mcp::ServerSet;
/// let set = ServerSet::from_mcp_servers_json(r#"{
///   "mcpServers": {
///     "fs": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "."]},
///     "issues": {"url": "http://127.0.0.1:9000/mcp"}
///   },
///   "roles": {"dev": ["fs"]}
/// }"#).unwrap();
/// let names: Vec<_> = set.servers_for(&["dev"], &["issues"]).unwrap()
///     .into_iter().map(|s| s.name).collect();
/// assert_eq!(names, ["fs", "issues"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ServerSet {
    /// Servers by name.
    pub servers: BTreeMap<String, ServerConfig>,
    /// Roles: named lists of server names.
    pub roles: BTreeMap<String, Vec<String>>,
}

impl ServerSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a server.
    #[must_use]
    pub fn with_server(mut self, server: ServerConfig) -> Self {
        self.servers.insert(server.name.clone(), server);
        self
    }

    /// Add a role.
    #[must_use]
    pub fn with_role<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        role: impl Into<String>,
        servers: I,
    ) -> Self {
        self.roles
            .insert(role.into(), servers.into_iter().map(Into::into).collect());
        self
    }

    /// From agentkit's `mcp:` settings. Roles naming unknown servers are rejected.
    pub fn from_settings(settings: &McpSettings) -> Result<Self> {
        let mut servers = BTreeMap::new();
        for (name, c) in &settings.servers {
            servers.insert(name.clone(), ServerConfig::from_core(name.clone(), c)?);
        }
        let set = Self {
            servers,
            roles: settings.roles.clone(),
        };
        set.check_roles()?;
        Ok(set)
    }

    /// From the `{"mcpServers": {...}}` JSON used by Claude Desktop, Cursor and `.mcp.json`
    /// (a `roles` object beside `mcpServers` is accepted too).
    pub fn from_mcp_servers_json(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json).map_err(|e| Error::Config {
            file: None,
            key: String::new(),
            message: format!("not valid JSON: {e}"),
        })?;
        let servers = v
            .get("mcpServers")
            .or_else(|| v.get("servers"))
            .cloned()
            .ok_or_else(|| Error::Config {
                file: None,
                key: "mcpServers".into(),
                message: "expected an object `mcpServers` mapping names to servers".into(),
            })?;
        Self::from_values(servers, v.get("roles").cloned(), "mcpServers")
    }

    /// From mcp-agent's `mcp_agent.config.yaml` (`mcp: {servers: {...}}`); every other key of
    /// that file is ignored.
    pub fn from_mcp_agent_yaml(yaml: &str) -> Result<Self> {
        let v: Value = serde_yaml_ng::from_str(yaml).map_err(|e| Error::Config {
            file: None,
            key: String::new(),
            message: format!("not valid YAML: {e}"),
        })?;
        let mcp = v.get("mcp").cloned().unwrap_or(Value::Null);
        let servers = mcp
            .get("servers")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        Self::from_values(servers, mcp.get("roles").cloned(), "mcp.servers")
    }

    /// Read a file, choosing the format by name: `*.json` is `mcpServers` JSON, anything else
    /// is YAML (agentkit.yaml or mcp_agent.config.yaml; both keep servers under `mcp.servers`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: Some(path.to_owned()),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        let with_file = |e: Error| match e {
            Error::Config { key, message, .. } => Error::Config {
                file: Some(path.to_owned()),
                key,
                message,
            },
            other => other,
        };
        if path.extension().is_some_and(|e| e == "json") {
            Self::from_mcp_servers_json(&text).map_err(with_file)
        } else {
            Self::from_mcp_agent_yaml(&text).map_err(with_file)
        }
    }

    fn from_values(servers: Value, roles: Option<Value>, key: &str) -> Result<Self> {
        let Value::Object(map) = servers else {
            return Err(Error::Config {
                file: None,
                key: key.into(),
                message: "expected an object mapping server names to servers".into(),
            });
        };
        let mut out = BTreeMap::new();
        for (name, mut server) in map {
            // mcp-agent and Claude Desktop spell a few things differently.
            if let Value::Object(o) = &mut server {
                if let Some(t) = o.get("type").cloned() {
                    o.entry("transport").or_insert(t);
                    o.remove("type");
                }
                if let Some(Value::String(t)) = o.get_mut("transport")
                    && (t == "streamable-http" || t == "http" || t == "streamableHttp")
                {
                    *t = "streamable_http".into();
                }
                for k in ["read_timeout_seconds", "timeout"] {
                    if let Some(v) = o.remove(k) {
                        o.entry("request_timeout_seconds").or_insert(v);
                    }
                }
                o.remove("auth");
                o.remove("http_timeout_seconds");
                o.remove("terminate_on_close");
            }
            let core: McpServerConfig =
                serde_json::from_value(server).map_err(|e| Error::Config {
                    file: None,
                    key: format!("{key}.{name}"),
                    message: e.to_string(),
                })?;
            out.insert(name.clone(), ServerConfig::from_core(name, &core)?);
        }
        let roles: BTreeMap<String, Vec<String>> = match roles {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(r) => serde_json::from_value(r).map_err(|e| Error::Config {
                file: None,
                key: "roles".into(),
                message: format!("expected `{{role: [server, ...]}}`: {e}"),
            })?,
        };
        let set = Self {
            servers: out,
            roles,
        };
        set.check_roles()?;
        Ok(set)
    }

    fn check_roles(&self) -> Result<()> {
        for (role, names) in &self.roles {
            for n in names {
                if !self.servers.contains_key(n) {
                    return Err(Error::Config {
                        file: None,
                        key: format!("roles.{role}"),
                        message: format!(
                            "role `{role}` names server `{n}`, which is not configured; configured servers: {}",
                            self.servers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The servers of an agent: the union of its roles' servers and its own list, in first-seen
    /// order, without duplicates. Unknown roles or servers are an error naming them.
    pub fn servers_for<R: AsRef<str>, S: AsRef<str>>(
        &self,
        roles: &[R],
        own: &[S],
    ) -> Result<Vec<ServerConfig>> {
        let mut names: Vec<&str> = Vec::new();
        for r in roles {
            let r = r.as_ref();
            let list = self.roles.get(r).ok_or_else(|| Error::Config {
                file: None,
                key: "roles".into(),
                message: format!(
                    "unknown role `{r}`; known roles: {}",
                    self.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            names.extend(list.iter().map(String::as_str));
        }
        names.extend(own.iter().map(AsRef::as_ref));
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for n in names {
            if !seen.insert(n) {
                continue;
            }
            let s = self.servers.get(n).ok_or_else(|| Error::Config {
                file: None,
                key: "mcp.servers".into(),
                message: format!(
                    "unknown MCP server `{n}`; configured servers: {}",
                    self.servers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            out.push(s.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn mcp_agent_yaml_is_read_and_extra_keys_ignored() {
        let set = ServerSet::from_mcp_agent_yaml(
            r#"
execution_engine: asyncio
logger: {type: console}
mcp:
  servers:
    fetch:
      command: uvx
      args: [mcp-server-fetch]
      read_timeout_seconds: 30
    remote:
      transport: streamable_http
      url: http://127.0.0.1:1/mcp
      headers: {X-Team: a}
"#,
        )
        .unwrap();
        let fetch = &set.servers["fetch"];
        assert_eq!(fetch.request_timeout, Some(Duration::from_secs(30)));
        assert!(
            matches!(&fetch.transport, ServerTransport::Stdio { command, .. } if command == "uvx")
        );
        assert!(matches!(&set.servers["remote"].transport,
            ServerTransport::StreamableHttp { headers, .. } if headers["X-Team"] == "a"));
    }

    #[test]
    fn roles_union_and_unknown_names_are_errors() {
        let set = ServerSet::new()
            .with_server(ServerConfig::stdio("core", "a", Vec::<String>::new()))
            .with_server(ServerConfig::stdio("issues", "b", Vec::<String>::new()))
            .with_server(ServerConfig::stdio("pipeline", "c", Vec::<String>::new()))
            .with_role("dev", ["core", "pipeline", "issues"])
            .with_role("ops", ["pipeline"]);
        let names: Vec<_> = set
            .servers_for(&["ops", "dev"], &["core"])
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["pipeline", "core", "issues"]);
        let err = set.servers_for(&["qa"], &[] as &[&str]).unwrap_err();
        assert!(err.to_string().contains("unknown role `qa`"), "{err}");
        let err = set.servers_for(&[] as &[&str], &["nope"]).unwrap_err();
        assert!(
            err.to_string().contains("unknown MCP server `nope`"),
            "{err}"
        );
    }

    #[test]
    fn sse_and_empty_servers_are_rejected_with_advice() {
        let err = ServerSet::from_mcp_servers_json(
            r#"{"mcpServers": {"old": {"type": "sse", "url": "http://x/sse"}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("streamable_http"), "{err}");
        let err = ServerSet::from_mcp_servers_json(r#"{"mcpServers": {"x": {}}}"#).unwrap_err();
        assert!(err.to_string().contains("mcp.servers.x"), "{err}");
    }

    #[test]
    fn tool_filter_allow_and_deny() {
        let f = ToolFilter::new().with_allow(["a", "b"]).with_deny(["b"]);
        assert!(f.allows("a"));
        assert!(!f.allows("b"));
        assert!(!f.allows("c"));
    }
}
