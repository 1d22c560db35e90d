//! `/v1/servers`: the configured outbound MCP servers, their tools, and tool calls.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::gatewayops::{call_keyed, idempotency_header};
use super::{ApiResult, AppState, Json, Path, Problem};
use crate::gatewayops::idempotency::Refused;
use crate::gatewayops::{Call, CallEnv, CallStatus, trace_id};
use crate::servers::{McpCallView, McpFailure, McpServerView, McpToolView};
use crate::tenancy::Caller;

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
pub async fn list_servers(State(s): State<AppState>, caller: Caller) -> Json<Vec<McpServerView>> {
    let mut servers = s.platform.mcp_servers();
    servers.retain(|v| s.gatewayops.sees(&caller.workspace, &v.name));
    Json(servers)
}

/// The tools a server offers (connects to it if needed).
#[utoipa::path(get, path = "/v1/servers/{name}/tools", tag = "servers",
    params(("name" = String, Path, description = "MCP server name")),
    responses((status = 200, body = [McpToolView]), (status = 404, body = Problem),
              (status = 502, body = Problem)))]
pub async fn list_tools(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<McpToolView>>> {
    if !s.gatewayops.sees(&caller.workspace, &name) {
        return Err(unknown_server(&name));
    }
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

/// Call a tool, through the gateway's policy and audit log like every gateway call (see
/// `POST /v1/execute`). A tool that ran and failed answers 200 with `is_error: true` (that is
/// its answer), and so does a call a policy denied (the content says which rule and why); a
/// server that cannot be reached is 502, one that does not answer in time 504.
///
/// With an `Idempotency-Key` header (1 to 255 printable ASCII characters) the call is made
/// at most once per key in the caller's workspace within `gateway.idempotency_window_ms`
/// (24 h), as with `/v1/execute`: a retry gets the first attempt's answer (a call waiting for
/// an approval: the same `run_id`) and calls nothing; the same key with another server, tool
/// or arguments is a 422, and a retry while the first attempt is still being made waits for
/// it, then is a 409.
#[utoipa::path(post, path = "/v1/servers/{name}/call_tool", tag = "servers",
    params(("name" = String, Path, description = "MCP server name"),
           ("Idempotency-Key" = Option<String>, Header,
            description = "same key (in the caller's workspace, within 24 h), same answer; the tool is called once")),
    request_body = CallToolRequest,
    responses((status = 200, body = McpCallView), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem),
              (status = 502, body = Problem),
              (status = 503, body = Problem), (status = 504, body = Problem)))]
pub async fn call_tool(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(req): Json<CallToolRequest>,
) -> ApiResult<Json<McpCallView>> {
    let key = idempotency_header(&headers)?;
    let timeout = s.gatewayops.config().default_timeout;
    let call = Call {
        id: "call".into(),
        server: name.clone(),
        tool: req.name,
        arguments: req.arguments,
        timeout,
        cut: None,
    };
    let r = call_keyed(&s, &caller, call, key.as_deref(), &CallEnv::new(trace_id()))
        .await
        .map_err(refused)??;
    match r.status {
        CallStatus::Timeout => Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream-timeout",
            format!(
                "MCP server `{name}` did not answer in time: {}",
                r.error.unwrap_or_default()
            ),
        )),
        CallStatus::RateLimited => {
            let mut p = Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "tool-rate-limited",
                r.error.unwrap_or_default(),
            );
            p.retry_after = Some(retry_after_secs(r.retry_after_ms));
            Err(p)
        }
        CallStatus::Denied | CallStatus::Cancelled => {
            Ok(Json(McpCallView::error_text(r.error.unwrap_or_default())))
        }
        // Waiting for an approval, or (a retry with the key of an MCP Tasks client's call)
        // running as a task: the run to read.
        CallStatus::PendingApproval | CallStatus::Running => {
            let mut view = McpCallView::error_text(r.error.clone().unwrap_or_default());
            view.run_id = r.run_id;
            view.call_id = r.call_id;
            Ok(Json(view))
        }
        _ => Ok(Json(McpCallView::from_result(r))),
    }
}

/// Whole seconds (at least 1) covering `ms`: a `Retry-After` after which a rate-limited
/// call may pass.
pub(crate) fn retry_after_secs(ms: Option<u64>) -> u64 {
    ms.unwrap_or(1000).div_ceil(1000).max(1)
}

/// The problem of a call whose `Idempotency-Key` could not be used.
fn refused(r: Refused) -> Problem {
    let (status, kind) = match &r {
        Refused::Conflict => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused"),
        Refused::InFlight => (StatusCode::CONFLICT, "idempotency-key-in-flight"),
        Refused::Unchecked(_) => (StatusCode::SERVICE_UNAVAILABLE, "idempotency-unavailable"),
    };
    Problem::new(status, kind, format!("the call was not made: {r}"))
}

fn unknown_server(name: &str) -> Problem {
    Problem::not_found(format!(
        "no MCP server `{}`; list them with GET /v1/servers (agentkit.yaml `mcp.servers`)",
        name.escape_debug()
    ))
}
