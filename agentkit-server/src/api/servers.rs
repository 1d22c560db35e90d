//! `/v1/servers`: the configured outbound MCP servers, their tools, and tool calls.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{ApiResult, AppState, Json, Path, Problem};
use crate::servers::{McpCallView, McpFailure, McpServerView, McpToolView};

/// The authenticated MCP server routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/servers", get(list_servers))
        .route("/v1/servers/{name}/tools", get(list_tools))
        .route("/v1/servers/{name}/call_tool", post(call_tool))
}

impl From<McpFailure> for Problem {
    fn from(f: McpFailure) -> Self {
        match f {
            McpFailure::NotFound(m) => Problem::not_found(m),
            McpFailure::Upstream { server, source } if source.is_timeout() => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                format!("MCP server `{server}` did not answer in time: {source}"),
            ),
            McpFailure::Upstream { server, source } => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream-unavailable",
                format!(
                    "MCP server `{server}` could not be reached or failed the request: {source}; \
                     check that it runs and its `mcp.servers` entry"
                ),
            ),
        }
    }
}

/// The configured MCP servers (`mcp.servers`).
#[utoipa::path(get, path = "/v1/servers", tag = "servers",
    responses((status = 200, body = [McpServerView])))]
pub async fn list_servers(State(s): State<AppState>) -> Json<Vec<McpServerView>> {
    Json(s.platform.mcp_servers())
}

/// The tools a server offers (connects to it if needed).
#[utoipa::path(get, path = "/v1/servers/{name}/tools", tag = "servers",
    params(("name" = String, Path, description = "MCP server name")),
    responses((status = 200, body = [McpToolView]), (status = 404, body = Problem),
              (status = 502, body = Problem)))]
pub async fn list_tools(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<McpToolView>>> {
    Ok(Json(s.platform.mcp_tools(&name).await?))
}

/// A tool call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallToolRequest {
    /// The tool's name on the server.
    pub name: String,
    /// Its arguments (an object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
}

/// Call a tool. A tool that ran and failed answers 200 with `is_error: true` (that is its
/// answer); a server that cannot be reached is 502.
#[utoipa::path(post, path = "/v1/servers/{name}/call_tool", tag = "servers",
    params(("name" = String, Path, description = "MCP server name")),
    request_body = CallToolRequest,
    responses((status = 200, body = McpCallView), (status = 404, body = Problem),
              (status = 502, body = Problem), (status = 504, body = Problem)))]
pub async fn call_tool(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<CallToolRequest>,
) -> ApiResult<Json<McpCallView>> {
    Ok(Json(
        s.platform.mcp_call(&name, &req.name, req.arguments).await?,
    ))
}
