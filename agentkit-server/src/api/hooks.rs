//! `POST /v1/hooks/{name}` and `POST /v1/hooks/{org}/{workspace}/{name}` (signed webhook
//! deliveries, no API key), `/v1/webhooks` (a workspace's webhooks: create, list, get,
//! rotate the secret, delete) and `POST /v1/events/{event}` (emit an event, authenticated).
//! See [`webhooks`](crate::webhooks).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{ApiResult, AppState, Json, Path, Problem};
use crate::platform::RunView;
use crate::tenancy::Caller;
use crate::webhooks::{DeliveryError, HookInfo, HookWithSecret, NewHook, WorkspaceHooks};

/// Routes that authenticate by signature, not by API key.
pub(crate) fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/hooks/{name}", post(deliver))
        .route(
            "/v1/hooks/{org}/{workspace}/{name}",
            post(deliver_to_workspace),
        )
}

/// Authenticated routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events/{event}", post(emit_event))
        .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/v1/webhooks/{name}",
            get(get_webhook).delete(delete_webhook),
        )
        .route("/v1/webhooks/{name}/rotate", post(rotate_webhook))
}

fn workspace_hooks(s: &AppState) -> WorkspaceHooks {
    WorkspaceHooks::new(
        std::sync::Arc::clone(s.platform.runtime.store()),
        s.vault.clone(),
    )
}

fn delivery_problem(e: DeliveryError) -> Problem {
    match e {
        DeliveryError::Unauthorized(m) | DeliveryError::Mismatch(m) => Problem::unauthorized(m),
        DeliveryError::Replay(m) => Problem::new(StatusCode::CONFLICT, "replay", m),
        other => Problem::bad_request(other.to_string()),
    }
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
        Some(Err(e)) => Err(delivery_problem(e)),
    }
}

/// A delivery to webhook `name` of workspace `org/workspace` (declared with
/// `POST /v1/webhooks`): its target starts a run in that workspace (202 with the run), acting
/// as `webhook:<name>`. Signed like `POST /v1/hooks/{name}`; a replay is 409. An unknown hook
/// answers 401 like a wrong signature, so nothing here reveals which hooks exist.
#[utoipa::path(post, path = "/v1/hooks/{org}/{workspace}/{name}", tag = "triggers",
    params(("org" = String, Path, description = "the hook's organisation"),
           ("workspace" = String, Path, description = "the hook's workspace"),
           ("name" = String, Path, description = "the hook's name"),
           ("X-Agentkit-Timestamp" = Option<String>, Header, description = "unix seconds"),
           ("X-Agentkit-Signature" = Option<String>, Header,
            description = "sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">"),
           ("X-Hub-Signature-256" = Option<String>, Header, description = "GitHub's signature"),
           ("X-GitHub-Delivery" = Option<String>, Header, description = "GitHub's delivery id")),
    request_body(content = String, description = "any body; the hook reads its message from it"),
    security(()),
    responses((status = 202, body = RunView), (status = 400, body = Problem),
              (status = 401, body = Problem), (status = 409, body = Problem)))]
pub async fn deliver_to_workspace(
    State(s): State<AppState>,
    Path((org, workspace, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    match workspace_hooks(&s)
        .deliver(
            &s.platform,
            &org,
            &workspace,
            &name,
            &headers,
            &body,
            now_secs(),
        )
        .await?
    {
        Ok(run) => {
            // The workspace's own name for its agent.
            let mut view = RunView::from(run);
            let scope =
                crate::tenancy::Scope::of(&crate::tenancy::WorkspaceId::new(org, workspace));
            if let Some(n) = scope.external(&view.agent) {
                view.agent = n.to_owned();
            }
            Ok((StatusCode::ACCEPTED, Json(view)).into_response())
        }
        Err(e) => Err(delivery_problem(e)),
    }
}

fn no_webhook(c: &Caller, name: &str) -> Problem {
    Problem::not_found(format!(
        "no webhook `{}` in workspace {}; list them with `GET /v1/webhooks`",
        name.escape_debug(),
        c.workspace
    ))
}

/// The caller's workspace's webhooks (declared with `POST /v1/webhooks`; never their
/// secrets). `agentkit.yaml` hooks are not listed: they are in the file.
#[utoipa::path(get, path = "/v1/webhooks", tag = "triggers",
    responses((status = 200, body = [HookInfo]), (status = 403, body = Problem)))]
pub async fn list_webhooks(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<HookInfo>>> {
    Ok(Json(workspace_hooks(&s).list(&caller.workspace).await?))
}

/// Declare a webhook in the caller's workspace: a signed delivery to its `url` starts a run
/// of `target` (an agent or workflow of the workspace). The answer carries the secret, 256
/// random bits as 64 hex digits, shown this once; it is stored sealed with the credential
/// vault (the server needs a master key).
#[utoipa::path(post, path = "/v1/webhooks", tag = "triggers", request_body = NewHook,
    responses((status = 201, body = HookWithSecret), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 503, body = Problem)))]
pub async fn create_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Json(hook): Json<NewHook>,
) -> ApiResult<Response> {
    let name = hook.name.clone();
    let created = workspace_hooks(&s)
        .create(
            &s.platform,
            &caller.workspace,
            hook,
            caller.key_id.as_deref(),
        )
        .await?;
    tracing::info!(workspace = %caller.workspace, webhook = %name, "webhook created");
    // Its name and target; never its secret.
    s.audit_change(
        &caller,
        &caller.workspace,
        "webhooks.create",
        &name,
        serde_json::json!({"target": created.hook.target}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// One webhook of the caller's workspace (never its secret).
#[utoipa::path(get, path = "/v1/webhooks/{name}", tag = "triggers",
    params(("name" = String, Path, description = "the webhook's name")),
    responses((status = 200, body = HookInfo), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn get_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<HookInfo>> {
    workspace_hooks(&s)
        .get(&caller.workspace, &name)
        .await?
        .map(Json)
        .ok_or_else(|| no_webhook(&caller, &name))
}

/// Give a webhook of the caller's workspace a new secret, shown this once; the old one
/// stops verifying at once.
#[utoipa::path(post, path = "/v1/webhooks/{name}/rotate", tag = "triggers",
    params(("name" = String, Path, description = "the webhook's name")),
    responses((status = 200, body = HookWithSecret), (status = 403, body = Problem),
              (status = 404, body = Problem), (status = 503, body = Problem)))]
pub async fn rotate_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<HookWithSecret>> {
    match workspace_hooks(&s).rotate(&caller.workspace, &name).await {
        Ok(h) => {
            tracing::info!(workspace = %caller.workspace, webhook = %name, "webhook secret rotated");
            s.audit_change(
                &caller,
                &caller.workspace,
                "webhooks.rotate",
                &name,
                serde_json::json!({"target": h.hook.target}),
            )
            .await?;
            Ok(Json(h))
        }
        Err(agentkit_core::Error::NotFound { .. }) => Err(no_webhook(&caller, &name)),
        Err(e) => Err(e.into()),
    }
}

/// Delete a webhook of the caller's workspace: deliveries to it are refused from then on.
#[utoipa::path(delete, path = "/v1/webhooks/{name}", tag = "triggers",
    params(("name" = String, Path, description = "the webhook's name")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_webhook(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if workspace_hooks(&s).delete(&caller.workspace, &name).await? {
        tracing::info!(workspace = %caller.workspace, webhook = %name, "webhook deleted");
        s.audit_change(
            &caller,
            &caller.workspace,
            "webhooks.delete",
            &name,
            serde_json::json!({}),
        )
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(no_webhook(&caller, &name))
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

/// Emit an event in the caller's workspace (role `invoker`): every trigger of the workspace
/// listening to it (`POST /v1/triggers`; in `default/default` also the `type: event` triggers
/// of agentkit.yaml) starts a run of its target, carrying the caller's principal (202 with
/// the runs). The payload's `message` (or the trigger's `message` template filled from the
/// payload) is the run's message; a payload a trigger cannot read is 400 and starts nothing.
/// An `Idempotency-Key` header makes a retried emit start nothing new. 404 when no trigger
/// of the workspace listens to the event; 409 when a trigger's target is no longer deployed.
/// The emit (the event's name and the runs it started, never the payload) is in the
/// workspace's audit log (`events.emit`) before the answer.
#[utoipa::path(post, path = "/v1/events/{event}", tag = "triggers",
    params(("event" = String, Path, description = "event name"),
           ("Idempotency-Key" = Option<String>, Header, description = "same key, same runs")),
    request_body(content = Object, description = "the payload"),
    responses((status = 202, body = Emitted), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn emit_event(
    State(s): State<AppState>,
    caller: Caller,
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
    let scope = caller.scope();
    let runs = s
        .platform
        .emit_in_workspace(&caller.principal(), &event, payload, key)
        .await
        .map_err(super::v1::scoped(&scope))?;
    // The event and the runs it started; never its payload.
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    s.audit_change(
        &caller,
        &caller.workspace,
        "events.emit",
        &event,
        serde_json::json!({ "runs": ids }),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Emitted {
            event,
            runs: runs
                .into_iter()
                .map(|r| RunView::in_scope(r, &scope))
                .collect(),
        }),
    )
        .into_response())
}
