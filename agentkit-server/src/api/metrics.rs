//! `GET /metrics`: the server's Prometheus metrics (see [`Metrics`](crate::observe::Metrics)
//! for the families and their labels), and `GET /v1/metrics/realtime`: the last minute of
//! traffic as JSON (see [`Realtime`](crate::observe::Realtime)).
//!
//! Behind the same key as the rest of the API, admin role (the counts span every workspace);
//! point Prometheus at it with `authorization: {credentials: <key>}` in the scrape config.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{ApiResult, AppState};
use crate::observe::metrics::CONTENT_TYPE;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/metrics/realtime", get(realtime))
}

/// The Prometheus text exposition (format 0.0.4): runs, model calls, tokens, cost, tool
/// calls, schedule lag and HTTP requests of this process; runs in progress and approvals
/// pending in the whole store.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observability",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 401, body = super::Problem),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let text = state
        .metrics
        .render(state.platform.runtime.store().as_ref())
        .await?;
    Ok(([(http::header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// The last minute of traffic (the GatewayOps realtime shape): open connections by platform
/// (the caller's workspace, `admin` for the admin key), requests per second, latency p50/p99,
/// tool calls per minute, error rates and the top tools. Computed from a fixed-size window
/// in memory of this process.
#[utoipa::path(
    get,
    path = "/v1/metrics/realtime",
    tag = "observability",
    responses(
        (status = 200, body = crate::observe::realtime::RealtimeSnapshot),
        (status = 401, body = super::Problem),
        (status = 403, body = super::Problem),
    ),
)]
pub async fn realtime(
    State(state): State<AppState>,
) -> super::Json<crate::observe::realtime::RealtimeSnapshot> {
    super::Json(state.metrics.realtime().snapshot())
}
