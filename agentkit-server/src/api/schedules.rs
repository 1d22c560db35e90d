//! `/v1/schedules`: list, create, delete, pause, resume, trigger by hand, history.

use agentkit_core::config::ScheduleSpec;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, AppState, Json, Path, Problem, Query};
use crate::platform::RunView;
use crate::schedules::{ScheduleRun, ScheduleView};
use crate::tenancy::{Caller, Scope};

/// The stored name of the caller's schedule `name` (404 if it cannot be one).
fn schedule_name(c: &Caller, name: &str) -> Result<String, Problem> {
    c.scope().internal(name).ok_or_else(|| {
        Problem::not_found(format!(
            "no schedule `{}`; list them with `GET /v1/schedules`",
            name.escape_debug()
        ))
    })
}

/// Record `action` on schedule `name` (its stored name) in the caller's audit log.
async fn audited(s: &AppState, caller: &Caller, action: &str, name: &str) -> Result<(), Problem> {
    let shown = caller.scope().external(name).unwrap_or(name).to_owned();
    s.audit_change(
        caller,
        &caller.workspace,
        action,
        &shown,
        serde_json::json!({}),
    )
    .await
}

/// An error as the caller's workspace sees it (its stored prefix removed).
fn scoped(scope: &Scope) -> impl Fn(agentkit_core::Error) -> Problem + '_ {
    move |e| {
        let mut p = Problem::from(e);
        p.detail = scope.unprefix(&p.detail);
        p
    }
}

fn run_out(scope: &Scope, mut r: RunView) -> RunView {
    if let Some(n) = scope.external(&r.agent) {
        r.agent = n.to_owned();
    }
    r
}

fn view_out(scope: &Scope, mut v: ScheduleView) -> ScheduleView {
    if let Some(n) = scope.external(&v.name) {
        v.name = n.to_owned();
    }
    if let Some(n) = scope.external(&v.target) {
        v.target = n.to_owned();
    }
    v.last_run = v.last_run.map(|r| run_out(scope, r));
    if let Some(o) = &mut v.owner
        && let Some(n) = scope.external(&o.agent)
    {
        o.agent = n.to_owned();
    }
    v
}

/// The authenticated schedule routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", get(list_schedules).post(create_schedule))
        .route(
            "/v1/schedules/{name}",
            get(get_schedule).delete(delete_schedule),
        )
        .route("/v1/schedules/{name}/pause", post(pause_schedule))
        .route("/v1/schedules/{name}/resume", post(resume_schedule))
        .route("/v1/schedules/{name}/trigger", post(trigger_schedule))
        .route("/v1/schedules/{name}/history", get(schedule_history))
}

/// The schedules, by name: trigger, paused, next fire time and the run of the latest fire.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = [ScheduleView])))]
pub async fn list_schedules(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<ScheduleView>>> {
    let scope = caller.scope();
    let all = s.platform.schedules().await?;
    Ok(Json(
        all.into_iter()
            .filter(|v| scope.contains(&v.name))
            .map(|v| view_out(&scope, v))
            .collect(),
    ))
}

/// One schedule.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem)))]
pub async fn get_schedule(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    let scope = caller.scope();
    let name = schedule_name(&caller, &name)?;
    let v = s.platform.schedule(&name).await.map_err(scoped(&scope))?;
    Ok(Json(view_out(&scope, v)))
}

/// A new schedule: `name` and the fields of an `agentkit.yaml` schedule (exactly one of
/// `cron` (with `timezone`), `every` or `at`).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // The body is read as `name` + a `ScheduleSpec`; this documents it.
pub struct CreateScheduleRequest {
    /// Its name (1 to 64 letters, digits, `_` or `-`).
    name: String,
    /// The agent or workflow to start.
    target: String,
    /// What it is for.
    description: Option<String>,
    /// A cron expression (5 fields, or 6 with seconds first).
    cron: Option<String>,
    /// The cron expression's IANA time zone (default `UTC`).
    timezone: Option<String>,
    /// A fixed interval such as `15m` or `1h`.
    every: Option<String>,
    /// One fire at this RFC 3339 time.
    at: Option<String>,
    /// The runs' input (default: a message naming the schedule).
    #[schema(value_type = Option<Object>)]
    input: Option<Value>,
    /// `skip` (default), `buffer_one` or `allow_all`.
    overlap: Option<String>,
    /// `skip` (default) or `{"within": "1h"}`.
    #[schema(value_type = Option<Object>)]
    catch_up: Option<Value>,
}

/// Create a schedule. It is stored: every server process sharing the store fires it (within
/// seconds) and it survives restarts.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    request_body = CreateScheduleRequest,
    responses((status = 201, body = ScheduleView), (status = 400, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_schedule(
    State(s): State<AppState>,
    caller: Caller,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let scope = caller.scope();
    let Value::Object(mut fields) = body else {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "send a JSON object: `name` and the fields of a schedule (`target`, and one of \
             `cron`, `every` or `at`)",
        ));
    };
    let name = match fields.remove("name") {
        Some(Value::String(n)) => n,
        _ => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "the body needs `name`: the schedule's name (a string)",
            ));
        }
    };
    let spec: ScheduleSpec =
        serde_path_to_error::deserialize(Value::Object(fields)).map_err(|e| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!("the schedule is invalid at `{}`: {}", e.path(), e.inner()),
            )
        })?;
    let bad = |what: &str, n: &str| {
        Problem::bad_request(format!(
            "{what} `{}` is not valid: use 1 to 64 letters, digits, `_` or `-`",
            n.escape_debug()
        ))
    };
    let name = scope
        .internal(&name)
        .ok_or_else(|| bad("schedule name", &name))?;
    let mut spec = spec;
    spec.target = scope
        .internal(&spec.target)
        .ok_or_else(|| bad("target", &spec.target))?;
    // A workspace's scheduled runs act as the key that made the schedule: their policy
    // decisions, audit entries and approvals belong to that workspace, not the default one.
    if !scope.is_default() {
        let mut input = spec.input_or_default(scope.external(&name).unwrap_or(&name));
        if let Value::Object(o) = &mut input {
            let principal = serde_json::to_value(caller.principal()).map_err(|e| {
                Problem::from(agentkit_core::Error::json("encoding the principal", e))
            })?;
            o.insert("principal".into(), principal);
        }
        spec.input = Some(input);
    }
    let view = s
        .platform
        .create_schedule(&name, spec)
        .await
        .map_err(scoped(&scope))?;
    audited(&s, &caller, "schedules.create", &name).await?;
    Ok((StatusCode::CREATED, Json(view_out(&scope, view))).into_response())
}

/// Delete a schedule created over the API (its runs stay). Schedules from `agentkit.yaml`
/// are changed there, and those of an agent's or workflow's spec by deploying a new version
/// (409).
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "schedule name")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_schedule(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let scope = caller.scope();
    let name = schedule_name(&caller, &name)?;
    s.platform
        .delete_schedule(&name)
        .await
        .map_err(scoped(&scope))?;
    audited(&s, &caller, "schedules.delete", &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule on every server process: its fires are skipped until it is resumed.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem)))]
pub async fn pause_schedule(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    let scope = caller.scope();
    let name = schedule_name(&caller, &name)?;
    let v = s
        .platform
        .pause_schedule(&name)
        .await
        .map_err(scoped(&scope))?;
    audited(&s, &caller, "schedules.pause", &name).await?;
    Ok(Json(view_out(&scope, v)))
}

/// Resume a paused schedule (fires that came while it was paused are skipped).
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), (status = 404, body = Problem)))]
pub async fn resume_schedule(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    let scope = caller.scope();
    let name = schedule_name(&caller, &name)?;
    let v = s
        .platform
        .resume_schedule(&name)
        .await
        .map_err(scoped(&scope))?;
    audited(&s, &caller, "schedules.resume", &name).await?;
    Ok(Json(view_out(&scope, v)))
}

/// Start a run of the schedule's target with its input now (a manual fire, recorded in its
/// history), paused or not. 202 with the run.
#[utoipa::path(post, path = "/v1/schedules/{name}/trigger", tag = "schedules",
    params(("name" = String, Path, description = "schedule name")),
    responses((status = 202, body = RunView), (status = 404, body = Problem)))]
pub async fn trigger_schedule(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let scope = caller.scope();
    let name = schedule_name(&caller, &name)?;
    let run = s
        .platform
        .trigger_schedule(&name)
        .await
        .map_err(scoped(&scope))?;
    audited(&s, &caller, "schedules.trigger", &name).await?;
    Ok((StatusCode::ACCEPTED, Json(RunView::in_scope(run, &scope))).into_response())
}

/// A page of a schedule's history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Skip this many.
    pub offset: Option<usize>,
}

/// The schedule's runs (scheduled and manual fires), newest first.
#[utoipa::path(get, path = "/v1/schedules/{name}/history", tag = "schedules",
    params(("name" = String, Path, description = "schedule name"), HistoryQuery),
    responses((status = 200, body = [ScheduleRun]), (status = 404, body = Problem)))]
pub async fn schedule_history(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Vec<ScheduleRun>>> {
    let scope = caller.scope();
    let name = schedule_name(&caller, &name)?;
    let runs = s
        .platform
        .schedule_history(&name, q.limit.unwrap_or(100), q.offset.unwrap_or(0))
        .await
        .map_err(scoped(&scope))?;
    Ok(Json(
        runs.into_iter()
            .map(|mut r| {
                r.run = run_out(&scope, r.run);
                r
            })
            .collect(),
    ))
}
