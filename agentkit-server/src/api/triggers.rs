//! `/v1/triggers`: a workspace's event triggers (create, list, get, delete; role
//! `developer`). Events are emitted with `POST /v1/events/{event}` ([`hooks`](super::hooks)).
//! See [`triggers`](crate::triggers).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{ApiResult, AppState, Json, Path, Problem};
use crate::tenancy::Caller;
use crate::triggers::{NewTrigger, TriggerInfo, WorkspaceTriggers};

/// Authenticated routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/triggers", get(list_triggers).post(create_trigger))
        .route(
            "/v1/triggers/{name}",
            get(get_trigger).delete(delete_trigger),
        )
}

fn workspace_triggers(s: &AppState) -> WorkspaceTriggers {
    WorkspaceTriggers::new(std::sync::Arc::clone(s.platform.runtime().store()))
}

fn no_trigger(c: &Caller, name: &str) -> Problem {
    Problem::not_found(format!(
        "no trigger `{}` in workspace {}; list them with `GET /v1/triggers`",
        name.escape_debug(),
        c.workspace
    ))
}

/// Note a change to the caller's workspace's triggers in its audit log (`triggers.<done>`
/// of the trigger's name, with its event, target and template), before the answer.
async fn audited(s: &AppState, caller: &Caller, t: &TriggerInfo, done: &str) -> ApiResult<()> {
    tracing::info!(workspace = %caller.workspace, trigger = %t.name, "trigger {done}");
    s.audit_change(
        caller,
        &caller.workspace,
        &format!("triggers.{done}"),
        &t.name,
        json!({"event": t.event, "target": t.target, "message": t.message}),
    )
    .await
}

/// The caller's workspace's event triggers (declared with `POST /v1/triggers`), by name.
/// `agentkit.yaml` triggers are not listed: they are in the file.
#[utoipa::path(get, path = "/v1/triggers", tag = "triggers",
    responses((status = 200, body = [TriggerInfo]), (status = 403, body = Problem)))]
pub async fn list_triggers(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<TriggerInfo>>> {
    Ok(Json(workspace_triggers(&s).list(&caller.workspace).await?))
}

/// Declare an event trigger in the caller's workspace: `POST /v1/events/{event}` by a key of
/// the workspace then starts a run of `target` (an agent or workflow of the workspace) whose
/// message is the payload's `message`, or the `message` template filled from the payload.
/// Recorded in the workspace's audit log.
#[utoipa::path(post, path = "/v1/triggers", tag = "triggers", request_body = NewTrigger,
    responses((status = 201, body = TriggerInfo), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_trigger(
    State(s): State<AppState>,
    caller: Caller,
    Json(trigger): Json<NewTrigger>,
) -> ApiResult<Response> {
    let scope = caller.scope();
    let created = workspace_triggers(&s)
        .create(
            &s.platform,
            &caller.workspace,
            trigger,
            caller.key_id.as_deref(),
        )
        .await
        .map_err(super::v1::scoped(&scope))?;
    audited(&s, &caller, &created, "create").await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// One event trigger of the caller's workspace.
#[utoipa::path(get, path = "/v1/triggers/{name}", tag = "triggers",
    params(("name" = String, Path, description = "the trigger's name")),
    responses((status = 200, body = TriggerInfo), (status = 403, body = Problem),
              (status = 404, body = Problem)))]
pub async fn get_trigger(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TriggerInfo>> {
    workspace_triggers(&s)
        .get(&caller.workspace, &name)
        .await?
        .map(Json)
        .ok_or_else(|| no_trigger(&caller, &name))
}

/// Delete an event trigger of the caller's workspace: its event starts nothing from then on
/// (runs it started go on). Recorded in the workspace's audit log.
#[utoipa::path(delete, path = "/v1/triggers/{name}", tag = "triggers",
    params(("name" = String, Path, description = "the trigger's name")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_trigger(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    match workspace_triggers(&s)
        .delete(&caller.workspace, &name)
        .await
    {
        Ok(t) => {
            audited(&s, &caller, &t, "delete").await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(agentkit_core::Error::NotFound { .. }) => Err(no_trigger(&caller, &name)),
        Err(e) => Err(e.into()),
    }
}
