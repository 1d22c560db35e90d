//! The HTTP API: an axum [`Router`] over tower layers (body limit, panics as problem details,
//! tracing, API-key authentication).

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::platform::Platform;

pub mod agent_protocol;
pub mod governance;
pub mod hooks;
pub mod langgraph;
pub mod openapi;
pub mod problem;
pub mod schedules;
pub mod servers;
pub mod sse;
pub mod v1;

pub use problem::{ApiResult, Problem};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The platform.
    pub platform: Arc<Platform>,
    /// The admin key requests must carry (`Authorization: Bearer …` or `x-api-key: …`).
    pub(crate) admin_key: Arc<str>,
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

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ok = request_key(request.headers())
        .is_some_and(|k| bool::from(k.as_bytes().ct_eq(state.admin_key.as_bytes())));
    if ok {
        next.run(request).await
    } else {
        let mut res = Problem::unauthorized(
            "send the server's API key as `Authorization: Bearer <key>` or `x-api-key: <key>` \
             (`agentkit dev` prints it; `AGENTKIT_ADMIN_KEY` sets it)",
        )
        .into_response();
        res.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        res
    }
}

/// Unknown routes: a problem detail, not an empty 404.
async fn fallback(uri: http::Uri) -> Problem {
    Problem::not_found(format!(
        "no route {}; the API is described at /openapi.json",
        uri.path()
    ))
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

/// The whole API as a router: authenticated routes, then the open ones (`/healthz`,
/// `/readyz`, `/openapi.json`), with the server's layers.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let mut authed = v1::routes();
    if let Some(g) = state.platform.gateway.get() {
        authed = authed.route_service("/mcp", g.service());
    }
    let authed = authed
        .merge(langgraph::routes())
        .merge(agent_protocol::routes())
        .merge(schedules::routes())
        .merge(hooks::routes())
        .merge(servers::routes())
        .merge(governance::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .merge(authed)
        .merge(v1::open_routes())
        .merge(hooks::open_routes())
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(openapi::document()) }),
        )
        .fallback(fallback)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}
