//! `POST /v1/hooks/{name}` (signed webhook deliveries, no API key) and
//! `POST /v1/events/{event}` (emit an event, authenticated).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{ApiResult, AppState, Json, Path, Problem};
use crate::platform::RunView;
use crate::webhooks::DeliveryError;

/// Routes that authenticate by signature, not by API key.
pub(crate) fn open_routes() -> Router<AppState> {
    Router::new().route("/v1/hooks/{name}", post(deliver))
}

/// Authenticated routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/events/{event}", post(emit_event))
}

fn now_secs() -> i64 {
    agentkit_runtime::model::now_ms().div_euclid(1000)
}

/// A webhook delivery: the hook's target starts a run (202 with the run). Sign it with the
/// hook's secret: `X-Agentkit-Timestamp: <unix seconds>` (within 5 minutes) and
/// `X-Agentkit-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`, or GitHub's
/// `X-Hub-Signature-256` with `X-GitHub-Delivery`. A replayed delivery is 409.
#[utoipa::path(post, path = "/v1/hooks/{name}", tag = "triggers",
    params(("name" = String, Path, description = "webhook name (agentkit.yaml `triggers:`)"),
           ("X-Agentkit-Timestamp" = Option<String>, Header, description = "unix seconds"),
           ("X-Agentkit-Signature" = Option<String>, Header,
            description = "sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">"),
           ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub's signature"),
           ("X-GitHub-Delivery" = Option<String>, Header, description = "GitHub's delivery id")),
    request_body(content = String, description = "any body; the hook reads its message from it"),
    security(()),
    responses((status = 202, body = RunView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn deliver(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    match s
        .platform
        .deliver(&name, &headers, &body, now_secs())
        .await?
    {
        None => Err(Problem::not_found(format!(
            "no webhook `{}`; declare it in agentkit.yaml `triggers:` with `type: webhook`",
            name.escape_debug()
        ))),
        Some(Ok(run)) => Ok((StatusCode::ACCEPTED, Json(RunView::from(run))).into_response()),
        Some(Err(e)) => Err(match e {
            DeliveryError::Unauthorized(m) => Problem::unauthorized(m),
            DeliveryError::Replay(m) => Problem::new(StatusCode::CONFLICT, "replay", m),
            other => Problem::bad_request(other.to_string()),
        }),
    }
}

/// The runs an event started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Emitted {
    /// The event.
    pub event: String,
    /// One run per target listening to it.
    pub runs: Vec<RunView>,
}

/// Emit an event: every `type: event` trigger listening to it starts a run of its target
/// with the body as input (202). An `Idempotency-Key` header makes a retried emit start
/// nothing new. 404 when no trigger listens to the event.
#[utoipa::path(post, path = "/v1/events/{event}", tag = "triggers",
    params(("event" = String, Path, description = "event name"),
           ("Idempotency-Key" = Option<String>, Header, description = "same key, same runs")),
    request_body(content = Object, description = "the payload: the runs' input"),
    responses((status = 202, body = Emitted), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
pub async fn emit_event(
    State(s): State<AppState>,
    caller: crate::tenancy::Caller,
    Path(event): Path<String>,
    headers: HeaderMap,
    Json(payload): Json<Value>,
) -> ApiResult<Response> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    Problem::bad_request(
                        "`Idempotency-Key` must be 1 to 200 visible ASCII characters",
                    )
                })?,
        ),
    };
    // The runs act as the caller (policy, audit and approvals name its key).
    let runs = s
        .platform
        .emit_event_as(&event, payload, key, Some(&caller.principal()))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Emitted {
            event,
            runs: runs.into_iter().map(RunView::from).collect(),
        }),
    )
        .into_response())
}
