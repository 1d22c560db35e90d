//! The HTTP API: an axum [`Router`] over tower layers (body limit, panics as problem details,
//! tracing, API-key authentication).

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::platform::Platform;

pub mod agent_protocol;
mod auth;
pub mod gatewayops;
pub mod governance;
pub mod hooks;
pub mod langgraph;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod schedules;
pub mod secrets;
pub mod servers;
pub mod sse;
pub mod tenancy;
pub mod triggers;
pub mod v1;

pub use problem::{ApiResult, Problem};

/// What every handler gets: cheap to clone (one reference count; axum clones the state for
/// each extractor and middleware of every request). Its parts are reached through `Deref`
/// (`state.platform`).
#[derive(Clone)]
pub struct AppState(Arc<AppStateParts>);

impl std::ops::Deref for AppState {
    type Target = AppStateParts;

    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(parts: AppStateParts) -> Self {
        Self(Arc::new(parts))
    }
}

/// The parts of an [`AppState`].
#[non_exhaustive]
pub struct AppStateParts {
    /// The platform.
    pub platform: Arc<Platform>,
    /// The server's admin key (`Authorization: Bearer …` or `x-api-key: …`): a
    /// super-admin, see [`tenancy`](crate::tenancy).
    pub(crate) admin_key: Arc<str>,
    /// The metrics requests and runs are counted into.
    pub metrics: crate::observe::Metrics,
    /// Request rate limits per key and workspace.
    pub(crate) rate_limits: crate::ratelimit::RateLimits,
    /// The API keys.
    pub(crate) keys: crate::tenancy::ApiKeys,
    /// The workspaces.
    pub(crate) workspaces: crate::tenancy::Workspaces,
    /// Bearer JWTs accepted beside API keys (`server.jwt`).
    pub(crate) jwt: Option<crate::tenancy::JwtVerifier>,
    /// The credential vault.
    pub(crate) vault: crate::vault::Vault,
    /// How long an approval claim lasts.
    pub(crate) claim_for: std::time::Duration,
    /// The gateway API (`/v1/execute`, WebSocket, `/v1/mcp/tools`, `/v1/safety/analyze`).
    pub(crate) gatewayops: Arc<crate::gatewayops::GatewayOps>,
    /// The audit log the API writes its changes to (see [`AppState::audit_change`]).
    pub(crate) audit: crate::policy::StoreAudit,
}

impl AppState {
    /// Record a change `caller` made in `workspace` (`action` such as `keys.create`, the
    /// `resource` it names, `details` that identify it, never a secret) in that workspace's
    /// audit chain, and return once the entry is stored: a handler that awaits this before
    /// answering never answers 2xx for a change its audit log does not hold.
    ///
    /// # Errors
    ///
    /// A 503 problem saying the change was made but could not be audited (the store failed).
    pub(crate) async fn audit_change(
        &self,
        caller: &crate::tenancy::Caller,
        workspace: &crate::tenancy::WorkspaceId,
        action: &str,
        resource: &str,
        details: serde_json::Value,
    ) -> Result<(), Problem> {
        let event = agentkit_core::policy::AuditEvent::change(action, resource, details)
            .with_principal(
                workspace.org.clone(),
                workspace.workspace.clone(),
                caller.key_id.clone(),
            )
            .with_actor(crate::api::v1::decider(caller));
        self.audit
            .record_change(event)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(action, resource, error = %e, "a change could not be audited");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit-unavailable",
                    format!(
                        "`{action}` of `{resource}` was made, but its audit entry could not be \
                     stored ({e}); check the store, and list the audit log before retrying"
                    ),
                )
            })
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// A JSON body whose rejections are problem details.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(Problem))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A query string whose rejections are problem details.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

/// Path parameters whose rejections are problem details.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

/// The key a request carries, if any.
pub(crate) fn request_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn refused(detail: &str) -> Response {
    let mut res = Problem::unauthorized(detail).into_response();
    res.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    res
}

/// Routes that keys of workspaces other than `default/default` may call: those whose
/// handlers scope every name and id to the caller's workspace. Other routes answer them 404.
const SCOPED_ROUTES: &[&str] = &[
    "/v1/keys",
    "/v1/keys/{id}",
    "/v1/workspaces",
    "/mcp",
    "/v1/agents",
    "/v1/agents/{name}",
    "/v1/agents/{name}/versions",
    "/v1/agents/{name}/versions/{version}",
    "/v1/agents/{name}/diff",
    "/v1/agents/{name}/labels/{label}",
    "/v1/agents/{name}/promote",
    "/v1/agents/{name}/rollback",
    "/v1/agents/{name}/runs",
    "/v1/runs",
    "/v1/runs/{run_id}",
    "/v1/runs/{run_id}/events",
    "/v1/runs/{run_id}/pause",
    "/v1/runs/{run_id}/resume",
    "/v1/runs/{run_id}/cancel",
    "/v1/runs/{run_id}/signal",
    "/v1/runs/{run_id}/approve",
    "/v1/runs/{run_id}/reject",
    "/v1/runs/{run_id}/replay",
    "/v1/schedules",
    "/v1/schedules/{name}",
    "/v1/schedules/{name}/pause",
    "/v1/schedules/{name}/resume",
    "/v1/schedules/{name}/trigger",
    "/v1/schedules/{name}/history",
    "/v1/audit",
    "/v1/audit/verify",
    "/v1/approvals",
    "/v1/approvals/{run_id}/{call_id}/claim",
    "/v1/budgets",
    "/v1/approvals/{run_id}/{call_id}/approve",
    "/v1/approvals/{run_id}/{call_id}/reject",
    "/v1/secrets",
    "/v1/secrets/{name}",
    "/v1/webhooks",
    "/v1/webhooks/{name}",
    "/v1/webhooks/{name}/rotate",
    "/v1/triggers",
    "/v1/triggers/{name}",
    "/v1/events/{event}",
    "/v1/servers",
    "/v1/servers/{name}/tools",
    "/v1/servers/{name}/call_tool",
    "/v1/execute",
    "/v1/execute/stream",
    "/v1/agents/connect",
    "/v1/mcp/tools",
    "/v1/safety/analyze",
    // The LangGraph Agent Server API and the Agent Protocol (`langgraph.rs`,
    // `agent_protocol.rs`): assistants are the workspace's agents; threads, runs, crons and
    // store items are the workspace's own.
    "/assistants/search",
    "/assistants/count",
    "/assistants/{assistant_id}",
    "/assistants/{assistant_id}/schemas",
    "/assistants/{assistant_id}/graph",
    "/threads",
    "/threads/search",
    "/threads/count",
    "/threads/{thread_id}",
    "/threads/{thread_id}/state",
    "/threads/{thread_id}/state/{checkpoint_id}",
    "/threads/{thread_id}/history",
    "/threads/{thread_id}/copy",
    "/threads/{thread_id}/runs",
    "/threads/{thread_id}/runs/wait",
    "/threads/{thread_id}/runs/stream",
    "/threads/{thread_id}/runs/{run_id}",
    "/threads/{thread_id}/runs/{run_id}/join",
    "/threads/{thread_id}/runs/{run_id}/stream",
    "/threads/{thread_id}/runs/{run_id}/cancel",
    "/threads/{thread_id}/runs/crons",
    "/runs",
    "/runs/wait",
    "/runs/stream",
    "/runs/search",
    "/runs/{run_id}",
    "/runs/{run_id}/wait",
    "/runs/{run_id}/stream",
    "/runs/{run_id}/cancel",
    "/runs/crons",
    "/runs/crons/search",
    "/runs/crons/count",
    "/runs/crons/{cron_id}",
    "/store/items",
    "/store/items/search",
    "/store/namespaces",
    "/agents/search",
    "/agents/{agent_id}",
    "/agents/{agent_id}/schemas",
];

/// `/mcp`: the caller's workspace's MCP endpoint.
async fn mcp(
    s: AppState,
    caller: crate::tenancy::Caller,
    default_mcp: agentkit_mcp::McpHttpService,
    mut request: Request,
) -> Response {
    use tower::ServiceExt;
    // The tools that depend on the caller read it (already here) and the state from the
    // request.
    request.extensions_mut().insert(s.clone());
    let scope = caller.scope();
    let svc = if scope.is_default() {
        default_mcp
    } else {
        match s.platform.mcp_service(&scope).await {
            Some(svc) => svc,
            None => {
                return Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the server is stopping",
                )
                .into_response();
            }
        }
    };
    match svc.oneshot(request).await {
        Ok(res) => res.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// Unknown routes: a problem detail, not an empty 404.
async fn fallback(uri: http::Uri) -> Problem {
    Problem::not_found(format!(
        "no route {}; the API is described at /openapi.json",
        uri.path()
    ))
}

/// A 405 axum makes itself (a route asked with a method it does not take; an empty body) as
/// a problem detail that names the methods the route takes, keeping its `Allow` header. (A
/// 413 is [`too_large_as_problem`]'s.)
async fn axum_rejections(request: Request, next: axum::middleware::Next) -> Response {
    use axum::body::HttpBody as _;
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let res = next.run(request).await;
    let status = res.status();
    if status == StatusCode::METHOD_NOT_ALLOWED && res.body().size_hint().exact() == Some(0) {
        let allow = res.headers().get(http::header::ALLOW).cloned();
        let detail = match allow.as_ref().and_then(|a| a.to_str().ok()) {
            Some(a) if !a.is_empty() => format!(
                "{path} does not take {method}; it takes {} (the Allow header)",
                a.split(',').map(str::trim).collect::<Vec<_>>().join(", ")
            ),
            _ => format!("{path} does not take {method}; the API is described at /openapi.json"),
        };
        let mut out = Problem::new(status, "method-not-allowed", detail).into_response();
        if let Some(a) = allow {
            out.headers_mut().insert(http::header::ALLOW, a);
        }
        return out;
    }
    res
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server failed to handle the request; it is logged. Retry, and report it if it \
         persists",
    )
    .into_response()
}

/// A 413 that is not a problem detail yet (axum's `Bytes` extractor answers a body over the
/// limit with plain text) as one, like the [`Json`] extractor's: one mapping for every route
/// that reads its body as raw bytes.
async fn too_large_as_problem(res: Response) -> Response {
    let is_problem = res
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if res.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_problem {
        return Problem::payload_too_large().into_response();
    }
    res
}

/// The whole API as a router: authenticated routes, then the open ones (`/healthz`,
/// `/readyz`, `/openapi.json`), with the server's layers.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let mut authed = v1::routes().merge(tenancy::routes());
    if let Some(g) = state.platform.gateway.get() {
        let default_mcp = g.service();
        let shared = state.clone();
        authed = authed.route(
            "/mcp",
            axum::routing::any(move |caller: crate::tenancy::Caller, request: Request| {
                let default_mcp = default_mcp.clone();
                let s = shared.clone();
                async move { mcp(s, caller, default_mcp, request).await }
            }),
        );
    }
    let authed = authed
        .merge(langgraph::routes())
        .merge(agent_protocol::routes())
        .merge(schedules::routes())
        .merge(hooks::routes())
        .merge(triggers::routes())
        .merge(servers::routes())
        .merge(metrics::routes())
        .merge(governance::routes())
        .merge(secrets::routes())
        .route_layer(auth::AuthLayer::new(state.clone()));
    let router = Router::new()
        .merge(authed)
        .merge(gatewayops::routes(&state));
    #[cfg(feature = "dashboard")]
    let router = router.merge(crate::dashboard::routes());
    let app = router
        .merge(v1::open_routes())
        .merge(hooks::open_routes())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(openapi::document()) }),
        )
        .fallback(fallback)
        .with_state(state.clone())
        // One layer of the whole stack: axum boxes (and clones, for every request) each
        // layer it is given around every route, so the stack goes in as one.
        .layer(
            tower::ServiceBuilder::new()
                .layer(
                    tower_http::trace::TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(record_status),
                )
                .layer(crate::observe::metrics::TrackLayer::new(
                    state.metrics.clone(),
                ))
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                    panic_response,
                ))
                .layer(axum::middleware::map_response(too_large_as_problem))
                .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes)),
        );
    // Around the whole router, not per route (as `layer` is): a 405 gets its `Allow` header
    // from the route, after the route's layers.
    Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn(axum_rejections))
            .service(app),
    )
}

/// The span of one HTTP request (OpenTelemetry HTTP server conventions: named
/// `{method} {route}`), the child of the caller's span when it sent a W3C `traceparent`.
fn request_span(request: &http::Request<axum::body::Body>) -> tracing::Span {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "http_request",
        otel.name = %match &route {
            Some(r) => format!("{method} {r}"),
            None => method.to_owned(),
        },
        otel.kind = "server",
        http.request.method = %method,
        http.route = route.as_deref().unwrap_or_default(),
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        agentkit.workspace = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(tp) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        agentkit_core::trace::set_remote_parent(&span, tp.trim());
    }
    span
}

fn record_status<B>(
    response: &http::Response<B>,
    _latency: std::time::Duration,
    span: &tracing::Span,
) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("error.type", status.as_str());
    }
}
