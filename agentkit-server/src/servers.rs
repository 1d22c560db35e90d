//! The outbound MCP servers of the configuration (`mcp.servers`): listed, their tools listed
//! and called through one [`ConnectionManager`].

use agentkit_core::{Error, RunContext};
use agentkit_mcp::rmcp::model::CallToolResult;
use agentkit_mcp::{ConnectionManager, ServerConfig, ServerTransport};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::platform::Platform;

/// An MCP server as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct McpServerView {
    /// Its name.
    pub name: String,
    /// `stdio`, `http`, `sse` or `in_process`.
    pub transport: String,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether this process holds a live connection to it now.
    pub connected: bool,
}

/// A tool of an MCP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct McpToolView {
    /// Its name on the server.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema of its arguments.
    #[schema(value_type = Object)]
    pub input_schema: Value,
}

/// What a tool answered. `is_error` is the tool's own failure (its answer, with `content`
/// saying why), not a failed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct McpCallView {
    /// Whether the tool reported an error.
    pub is_error: bool,
    /// The MCP content blocks (`{"type": "text", "text": …}`, images, resources).
    #[schema(value_type = Vec<Object>)]
    pub content: Vec<Value>,
    /// Its structured result, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub structured_content: Option<Value>,
    /// When the call waits for an approval (`content` says so): the durable run it waits in;
    /// its output is the call's result once approved (`GET /v1/runs/{run_id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// With `run_id`: the call's id in the approval queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl McpCallView {
    /// A failed answer with `text` as its only content.
    pub(crate) fn error_text(text: String) -> Self {
        Self {
            is_error: true,
            content: vec![serde_json::json!({"type": "text", "text": text})],
            structured_content: None,
            run_id: None,
            call_id: None,
        }
    }

    /// The view of a gateway call's result.
    pub(crate) fn from_result(r: crate::gatewayops::CallResult) -> Self {
        Self {
            is_error: r.status != crate::gatewayops::CallStatus::Success,
            content: r.content,
            structured_content: r.structured_content,
            run_id: r.run_id,
            call_id: r.call_id,
        }
    }
}

/// Why an MCP request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpFailure {
    /// No such server (or tool offered by it).
    #[error("{0}")]
    NotFound(String),
    /// The server could not be reached or did not answer properly.
    #[error("MCP server `{server}`: {source}")]
    Upstream {
        /// The server.
        server: String,
        /// What failed.
        #[source]
        source: Error,
    },
}

fn transport_name(t: &ServerTransport) -> &'static str {
    match t {
        ServerTransport::Stdio { .. } => "stdio",
        ServerTransport::StreamableHttp { .. } => "http",
        ServerTransport::Sse { .. } => "sse",
        ServerTransport::InProcess(_) => "in_process",
        _ => "other",
    }
}

impl Platform {
    /// The MCP connection manager, if the server has one.
    #[must_use]
    pub fn mcp(&self) -> Option<ConnectionManager> {
        agentkit_core::sync::read(&self.ops.mcp).clone()
    }

    pub(crate) fn set_mcp(&self, manager: ConnectionManager) {
        *agentkit_core::sync::write(&self.ops.mcp) = Some(manager);
    }

    pub(crate) fn mcp_server(
        &self,
        name: &str,
    ) -> std::result::Result<(ConnectionManager, ServerConfig), McpFailure> {
        let unknown = || {
            McpFailure::NotFound(format!(
                "no MCP server `{}`; list them with GET /v1/servers (agentkit.yaml `mcp.servers`)",
                name.escape_debug()
            ))
        };
        let manager = self.mcp().ok_or_else(unknown)?;
        let config = manager.server_config(name).ok_or_else(unknown)?;
        Ok((manager, config))
    }

    /// The configured MCP servers, by name.
    #[must_use]
    pub fn mcp_servers(&self) -> Vec<McpServerView> {
        let Some(manager) = self.mcp() else {
            return Vec::new();
        };
        let mut names = manager.server_names();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| {
                let c = manager.server_config(&n)?;
                Some(McpServerView {
                    connected: manager.existing_connection(&n).is_some(),
                    transport: transport_name(&c.transport).to_owned(),
                    description: c.description.clone(),
                    name: n,
                })
            })
            .collect()
    }

    /// The tools server `name` offers (connecting if needed; its tool filter applies).
    pub async fn mcp_tools(&self, name: &str) -> std::result::Result<Vec<McpToolView>, McpFailure> {
        let (manager, config) = self.mcp_server(name)?;
        let upstream = |source| McpFailure::Upstream {
            server: name.to_owned(),
            source,
        };
        // Made again on a new connection when the server turned out to be gone (it reads only).
        let tools = manager
            .read_only(name, |conn| async move { conn.list_tools().await })
            .await
            .map_err(upstream)?;
        Ok(tools
            .into_iter()
            .filter(|t| config.offers_tool(&t.name))
            .map(|t| McpToolView {
                name: t.name.to_string(),
                description: t.description.as_ref().map(ToString::to_string),
                input_schema: Value::Object((*t.input_schema).clone()),
            })
            .collect())
    }

    /// Call tool `tool` of server `name` with `arguments`. A tool that ran and failed is an
    /// `Ok` with `is_error`; a call that could not be made is an `Err`.
    ///
    /// This is the raw in-process call: no workspace check, policy or audit. The HTTP routes
    /// (`POST /v1/servers/{name}/call_tool`, `/v1/execute`, the agent WebSocket) call through
    /// the gateway instead ([`gatewayops`](crate::gatewayops)), which adds all three.
    pub async fn mcp_call(
        &self,
        name: &str,
        tool: &str,
        arguments: Map<String, Value>,
    ) -> std::result::Result<McpCallView, McpFailure> {
        let (manager, config) = self.mcp_server(name)?;
        if !config.offers_tool(tool) {
            return Err(McpFailure::NotFound(format!(
                "MCP server `{name}` does not offer tool `{}` (its tool filter in agentkit.yaml)",
                tool.escape_debug()
            )));
        }
        let result: CallToolResult = manager
            .call_tool(name, tool, arguments, &RunContext::new())
            .await
            .map_err(|source| McpFailure::Upstream {
                server: name.to_owned(),
                source,
            })?;
        let content = result
            .content
            .iter()
            .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
            .collect();
        Ok(McpCallView {
            is_error: result.is_error.unwrap_or(false),
            content,
            structured_content: result.structured_content.clone(),
            run_id: None,
            call_id: None,
        })
    }
}
