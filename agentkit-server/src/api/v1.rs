//! agentkit's own routes under `/v1`: the registry (agents, versions, labels, promote,
//! rollback, diff), runs (start, list, get, events, pause, resume, cancel, signal, approve,
//! reject, replay), and `/healthz`, `/readyz`.

use agentkit_core::RunStatus;
use agentkit_runtime::{APPROVAL_SIGNAL, RunQuery};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, AppState, Json, Path, Problem, Query, sse};
use crate::platform::{KeyedStart, RunEventView, RunView, StartRun};
use crate::registry::{Change, Deployed, Entry, EntryKind, Version, diff_specs};
use crate::tenancy::{Caller, Scope};
use crate::threads::ThreadPolicy;

/// The stored name of the caller's agent `name` (404 if it cannot be one).
fn agent_name(c: &Caller, name: &str) -> Result<String, Problem> {
    c.scope().internal(name).ok_or_else(|| {
        Problem::not_found(format!(
            "agent or workflow `{}` not found; list them with `GET /v1/agents` (or `agentkit \
             agents list`)",
            name.escape_debug()
        ))
    })
}

/// An error as the caller's workspace sees it (its own stored prefix removed).
pub(crate) fn scoped(scope: &Scope) -> impl Fn(agentkit_core::Error) -> Problem + '_ {
    move |e| {
        let mut p = Problem::from(e);
        p.detail = scope.unprefix(&p.detail);
        p
    }
}

pub(crate) fn entry_out(scope: &Scope, mut e: Entry) -> Entry {
    if let Some(n) = scope.external(&e.name) {
        e.name = n.to_owned();
    }
    e
}

fn version_out(scope: &Scope, mut v: Version) -> Version {
    if let Some(n) = scope.external(&v.name) {
        v.name = n.to_owned();
    }
    v.members = std::mem::take(&mut v.members)
        .into_iter()
        .map(|(m, n)| (scope.external(&m).map_or(m.clone(), str::to_owned), n))
        .collect();
    v
}

/// The authenticated `/v1` routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agents", get(list_agents).post(deploy_agent))
        .route("/v1/agents/{name}", get(super::gatewayops::agent_or_socket))
        .route("/v1/agents/{name}/versions", get(list_versions))
        .route("/v1/agents/{name}/versions/{version}", get(get_version))
        .route("/v1/agents/{name}/diff", get(diff_versions))
        .route("/v1/agents/{name}/labels/{label}", put(set_label))
        .route("/v1/agents/{name}/promote", post(promote))
        .route("/v1/agents/{name}/rollback", post(rollback))
        .route("/v1/agents/{name}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{run_id}", get(get_run))
        .route("/v1/runs/{run_id}/events", get(run_events))
        .route("/v1/runs/{run_id}/pause", post(pause_run))
        .route("/v1/runs/{run_id}/resume", post(resume_run))
        .route("/v1/runs/{run_id}/cancel", post(cancel_run))
        .route("/v1/runs/{run_id}/signal", post(signal_run))
        .route("/v1/runs/{run_id}/approve", post(approve_run))
        .route("/v1/runs/{run_id}/reject", post(reject_run))
        .route("/v1/runs/{run_id}/replay", post(replay_run))
}

/// Routes that need no key.
pub(crate) fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The process can reach its store.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Health), (status = 503, body = Problem)))]
pub async fn readyz(State(s): State<AppState>) -> ApiResult<Json<Health>> {
    s.platform.registry().list().await.map_err(|e| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("the store is not reachable: {e}"),
        )
    })?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

/// Every agent and workflow.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = [Entry])))]
pub async fn list_agents(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Entry>>> {
    let scope = caller.scope();
    let all = s.platform.registry().list_all().await?;
    Ok(Json(
        all.into_iter()
            .filter(|e| scope.contains(&e.name))
            .map(|e| entry_out(&scope, e))
            .collect(),
    ))
}

/// A spec to deploy as a new version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The agent or workflow name.
    pub name: String,
    /// `agent` or `workflow`.
    pub kind: EntryKind,
    /// The spec: an `agents:` or `workflows:` entry of `agentkit.yaml`, as JSON.
    #[schema(value_type = Object)]
    pub spec: Value,
}

/// Deploy a spec: a new immutable version (or the latest one, if the spec is unchanged);
/// `latest` moves to it.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = DeployRequest,
    responses((status = 201, body = Deployed), (status = 200, body = Deployed), (status = 400, body = Problem)))]
pub async fn deploy_agent(
    State(s): State<AppState>,
    caller: Caller,
    Json(req): Json<DeployRequest>,
) -> ApiResult<Response> {
    let scope = caller.scope();
    let deployed =
        crate::deploy::deploy_spec_in(&s.platform, &scope, &req.name, req.kind, req.spec)
            .await
            .map_err(scoped(&scope))?;
    let status = if deployed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    if deployed.created {
        s.audit_change(
            &caller,
            &caller.workspace,
            "agents.deploy",
            &req.name,
            json!({"version": deployed.version}),
        )
        .await?;
    }
    Ok((status, Json(deployed)).into_response())
}

/// One agent or workflow. With a connection id from `POST /v1/agents/connect` as `name` and
/// a WebSocket upgrade, the gateway's agent WebSocket instead (`101`): send `tool_call {id,
/// server, tool, arguments, timeout_ms?, idempotency_key?}`, `cancel {id}` and `ping`;
/// receive `tool_result`, `progress`, `error` and `pong` (see the README's GatewayOps
/// section).
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "agent or workflow name, or a connection id from POST /v1/agents/connect (WebSocket)")),
    responses((status = 200, body = Entry),
              (status = 101, description = "a connection id with a WebSocket upgrade: the agent WebSocket"),
              (status = 404, body = Problem)))]
pub async fn get_agent(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Entry>> {
    let scope = caller.scope();
    let name = agent_name(&caller, &name)?;
    let e = s
        .platform
        .registry()
        .entry(&name)
        .await
        .map_err(scoped(&scope))?;
    Ok(Json(entry_out(&scope, e)))
}

/// Paging of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Versions after this one.
    pub after: Option<u32>,
}

/// The versions of an agent, oldest first.
#[utoipa::path(get, path = "/v1/agents/{name}/versions", tag = "agents",
    params(("name" = String, Path, description = "agent or workflow name"), Page),
    responses((status = 200, body = [Version]), (status = 404, body = Problem)))]
pub async fn list_versions(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<Vec<Version>>> {
    let scope = caller.scope();
    let name = agent_name(&caller, &name)?;
    let limit = page.limit.unwrap_or(100).min(1000);
    let vs = s
        .platform
        .registry()
        .versions(&name, page.after.unwrap_or(0), limit)
        .await
        .map_err(scoped(&scope))?;
    Ok(Json(
        vs.into_iter().map(|v| version_out(&scope, v)).collect(),
    ))
}

/// One version, by number or label.
#[utoipa::path(get, path = "/v1/agents/{name}/versions/{version}", tag = "agents",
    params(("name" = String, Path, description = "agent or workflow name"),
           ("version" = String, Path, description = "a version number or a label")),
    responses((status = 200, body = Version), (status = 404, body = Problem)))]
pub async fn get_version(
    State(s): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<Version>> {
    let scope = caller.scope();
    let name = agent_name(&caller, &name)?;
    let r = s.platform.registry();
    let v = r
        .resolve(&name, Some(&version))
        .await
        .map_err(scoped(&scope))?;
    let v = r.version(&name, v).await.map_err(scoped(&scope))?;
    Ok(Json(version_out(&scope, v)))
}

/// Which two versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// A version number or label.
    pub from: String,
    /// A version number or label (default `latest`).
    pub to: Option<String>,
}

/// The difference between two versions' specs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Diff {
    /// The first version.
    pub from: u32,
    /// The second version.
    pub to: u32,
    /// What differs.
    pub changes: Vec<Change>,
}

/// Diff two versions.
#[utoipa::path(get, path = "/v1/agents/{name}/diff", tag = "agents",
    params(("name" = String, Path, description = "agent or workflow name"), DiffQuery),
    responses((status = 200, body = Diff), (status = 404, body = Problem)))]
pub async fn diff_versions(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Diff>> {
    let scope = caller.scope();
    let e = scoped(&scope);
    let name = agent_name(&caller, &name)?;
    let r = s.platform.registry();
    let from = r.resolve(&name, Some(&q.from)).await.map_err(&e)?;
    let to = r.resolve(&name, q.to.as_deref()).await.map_err(&e)?;
    let a = version_out(&scope, r.version(&name, from).await.map_err(&e)?);
    let b = version_out(&scope, r.version(&name, to).await.map_err(&e)?);
    let a = json!({"spec": a.spec, "members": a.members});
    let b = json!({"spec": b.spec, "members": b.members});
    Ok(Json(Diff {
        from,
        to,
        changes: diff_specs(&a, &b),
    }))
}

/// Where to point a label.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// The version.
    pub version: u32,
    /// Only if the label points at this version now (compare-and-swap); `0`: only if the
    /// label does not exist yet.
    #[serde(default)]
    pub expected_version: Option<u32>,
}

/// Point a label at a version (compare-and-swap with `expected_version`).
#[utoipa::path(put, path = "/v1/agents/{name}/labels/{label}", tag = "agents",
    params(("name" = String, Path, description = "agent or workflow name"),
           ("label" = String, Path, description = "label, e.g. prod")),
    request_body = LabelRequest,
    responses((status = 200, body = Entry), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn set_label(
    State(s): State<AppState>,
    caller: Caller,
    Path((name, label)): Path<(String, String)>,
    Json(req): Json<LabelRequest>,
) -> ApiResult<Json<Entry>> {
    let scope = caller.scope();
    let name = agent_name(&caller, &name)?;
    let expected = req.expected_version.map(|v| (v != 0).then_some(v));
    let e = s
        .platform
        .registry()
        .set_label(&name, &label, req.version, expected)
        .await
        .map_err(scoped(&scope))?;
    s.platform.label_moved(&name).await;
    let e = entry_out(&scope, e);
    audit_labels(&s, &caller, "agents.set_label", &e, &[&label]).await?;
    Ok(Json(e))
}

/// Promote a label's version to another label.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The label to copy (e.g. `stage`).
    pub from: String,
    /// The label to move (e.g. `prod`).
    pub to: String,
}

/// Point `to` at the version of `from`.
#[utoipa::path(post, path = "/v1/agents/{name}/promote", tag = "agents",
    params(("name" = String, Path, description = "agent or workflow name")),
    request_body = PromoteRequest,
    responses((status = 200, body = Entry), (status = 404, body = Problem)))]
pub async fn promote(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<PromoteRequest>,
) -> ApiResult<Json<Entry>> {
    let scope = caller.scope();
    let name = agent_name(&caller, &name)?;
    let e = s
        .platform
        .registry()
        .promote(&name, &req.from, &req.to)
        .await
        .map_err(scoped(&scope))?;
    s.platform.label_moved(&name).await;
    let e = entry_out(&scope, e);
    audit_labels(&s, &caller, "agents.promote", &e, &[&req.from, &req.to]).await?;
    Ok(Json(e))
}

/// Record a label change of entry `e` (as the caller sees it): the labels named and the
/// versions they point at now.
async fn audit_labels(
    s: &AppState,
    caller: &Caller,
    action: &str,
    e: &Entry,
    labels: &[&str],
) -> Result<(), Problem> {
    let now: serde_json::Map<String, Value> = labels
        .iter()
        .map(|l| ((*l).to_owned(), json!(e.labels.get(*l))))
        .collect();
    s.audit_change(
        caller,
        &caller.workspace,
        action,
        &e.name,
        json!({"labels": now}),
    )
    .await
}

/// The label to roll back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The label (e.g. `prod`).
    pub label: String,
}

/// Point a label back at its previous version.
#[utoipa::path(post, path = "/v1/agents/{name}/rollback", tag = "agents",
    params(("name" = String, Path, description = "agent or workflow name")),
    request_body = RollbackRequest,
    responses((status = 200, body = Entry), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn rollback(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<RollbackRequest>,
) -> ApiResult<Json<Entry>> {
    let scope = caller.scope();
    let name = agent_name(&caller, &name)?;
    let e = s
        .platform
        .registry()
        .rollback(&name, &req.label)
        .await
        .map_err(scoped(&scope))?;
    s.platform.label_moved(&name).await;
    let e = entry_out(&scope, e);
    audit_labels(&s, &caller, "agents.rollback", &e, &[&req.label]).await?;
    Ok(Json(e))
}

/// Start a run of an agent or workflow.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The user message.
    pub message: String,
    /// Continue this thread.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// A label or version number (default `latest`).
    #[serde(default)]
    pub version: Option<String>,
    /// Wait for the run to finish and answer with it (default: answer at once, 202).
    #[serde(default)]
    pub wait: bool,
    /// Same key, same run: a retry with the key gets the run it started. Keys are per
    /// workspace and agent; the same key with another message or thread is refused (422).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// When the thread is busy: `reject` (409) or `interrupt` (cancel the live run).
    #[serde(default)]
    pub if_busy: Option<ThreadPolicy>,
}

/// Start a run (202 with the run; 200 with the finished run when `wait`).
#[utoipa::path(post, path = "/v1/agents/{name}/runs", tag = "runs",
    params(("name" = String, Path, description = "agent or workflow name")),
    request_body = RunRequest,
    responses((status = 202, body = RunView), (status = 200, body = RunView),
              (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn start_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<RunRequest>,
) -> ApiResult<Response> {
    let scope = caller.scope();
    let mut start = StartRun::new(name, req.message).by(caller.principal());
    start.thread_id = req.thread_id;
    start.reference = req.version;
    start.idempotency_key = req.idempotency_key;
    start.if_busy = req.if_busy;
    // With a key, the run may be an earlier one: checked to be started the same way.
    let keyed = KeyedStart::of(&start);
    if req.wait && keyed.is_none() {
        let done = s
            .platform
            .start_and_wait(start)
            .await
            .map_err(scoped(&scope))?;
        return Ok((StatusCode::OK, Json(RunView::in_scope(done, &scope))).into_response());
    }
    let run = s.platform.start(start).await.map_err(scoped(&scope))?;
    if let Some(Err(detail)) = keyed.map(|k| k.check(&scope, &run)) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            detail,
        ));
    }
    if req.wait {
        let done = s.platform.wait(&run.id).await.map_err(scoped(&scope))?;
        return Ok((StatusCode::OK, Json(RunView::in_scope(done, &scope))).into_response());
    }
    Ok((StatusCode::ACCEPTED, Json(RunView::in_scope(run, &scope))).into_response())
}

/// Filters of the run list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    /// Only runs of this agent or workflow.
    pub agent: Option<String>,
    /// Only runs in this status (`queued`, `running`, `succeeded`, …).
    pub status: Option<String>,
    /// Only runs created at or after this time (ms since epoch).
    pub since: Option<i64>,
    /// Only runs created before this time (ms since epoch).
    pub until: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Skip this many.
    pub offset: Option<usize>,
}

pub(crate) fn parse_status(s: &str) -> Result<RunStatus, Problem> {
    agentkit_runtime::model::parse_status(s).ok_or_else(|| {
        Problem::bad_request(format!(
            "unknown run status `{}`; use one of queued, running, waiting_input, \
             waiting_approval, paused, succeeded, failed, cancelled",
            s.escape_debug()
        ))
    })
}

/// The most runs one `GET /v1/runs` lists.
const MAX_RUNS_PAGE: usize = 1000;

/// Runs, newest first.
#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunFilter),
    responses((status = 200, body = [RunView]), (status = 400, body = Problem)))]
pub async fn list_runs(
    State(s): State<AppState>,
    caller: Caller,
    Query(f): Query<RunFilter>,
) -> ApiResult<Json<Vec<RunView>>> {
    let limit = f.limit.unwrap_or(100);
    if limit > MAX_RUNS_PAGE {
        return Err(Problem::bad_request(format!(
            "`limit` is {limit}; at most {MAX_RUNS_PAGE} runs are listed at once: page with \
             `offset` (or narrow with `agent`, `status`, `since`, `until`)"
        )));
    }
    let mut q = RunQuery::new()
        .with_created(f.since, f.until)
        .with_page(limit, f.offset.unwrap_or(0));
    if let Some(a) = f.agent {
        q = q.with_target(a);
    }
    if let Some(st) = f.status {
        q = q.with_status(parse_status(&st)?);
    }
    let scope = caller.scope();
    let runs = s.platform.runs_in(&scope, &q).await?;
    Ok(Json(
        runs.into_iter()
            .map(|r| RunView::in_scope(r, &scope))
            .collect(),
    ))
}

/// One run.
#[utoipa::path(get, path = "/v1/runs/{run_id}", tag = "runs",
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = RunView), (status = 404, body = Problem)))]
pub async fn get_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunView>> {
    let scope = caller.scope();
    let r = s.platform.run_in(&scope, &run_id).await?;
    Ok(Json(RunView::in_scope(r, &scope)))
}

/// Which events to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this sequence number (what a client already has).
    pub after: Option<u64>,
    /// At most this many (JSON answers only; default 1000).
    pub limit: Option<usize>,
}

/// A run's events: JSON, or an SSE stream that follows the run until it ends when the
/// request accepts `text/event-stream` (resume with `Last-Event-ID`).
///
/// The SSE stream's journal events carry their sequence as `id`. While the run executes in
/// the server process serving the stream, live `delta` events (`{"agent", "text"}`) carry the
/// answer's text as the model writes it: they have no `id`, are not stored and are not
/// replayed on reconnect; the journaled model step that follows is the source of truth.
#[utoipa::path(get, path = "/v1/runs/{run_id}/events", tag = "runs",
    params(("run_id" = String, Path, description = "run id"), EventsQuery),
    responses((status = 200, body = [RunEventView], description = "JSON, or text/event-stream"),
              (status = 404, body = Problem)))]
pub async fn run_events(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    s.platform.run_in(&caller.scope(), &run_id).await?;
    let wants_sse = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if wants_sse {
        let after = sse::last_event_id(&headers)?.or(q.after);
        return Ok(sse::run_sse(s.platform.clone(), run_id, after).into_response());
    }
    let limit = q.limit.unwrap_or(1000).min(10_000);
    Ok(Json(s.platform.events(&run_id, q.after, limit).await?).into_response())
}

/// An optional JSON body: empty is the default value.
pub(crate) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            format!(
                "the body does not match the expected shape at `{}`: {}",
                e.path(),
                e.inner()
            ),
        )
    })
}

/// Run a control and answer with the run.
async fn control(
    s: &AppState,
    caller: &Caller,
    run_id: &str,
    f: impl AsyncFnOnce(&agentkit_runtime::Runtime) -> agentkit_core::Result<()>,
) -> ApiResult<Json<RunView>> {
    let scope = caller.scope();
    s.platform.run_in(&scope, run_id).await?;
    f(s.platform.runtime()).await.map_err(scoped(&scope))?;
    let r = s.platform.run_in(&scope, run_id).await?;
    Ok(Json(RunView::in_scope(r, &scope)))
}

/// Run a control that changes the run (pause, resume, cancel, signal) and answer with the
/// run, once the change is in the workspace's audit log as `action` of the run (with
/// `details` that identify it, never a signal's payload).
async fn audited_control(
    s: &AppState,
    caller: &Caller,
    run_id: &str,
    action: &str,
    details: Value,
    f: impl AsyncFnOnce(&agentkit_runtime::Runtime) -> agentkit_core::Result<()>,
) -> ApiResult<Json<RunView>> {
    let answer = control(s, caller, run_id, f).await?;
    s.audit_change(caller, &caller.workspace, action, run_id, details)
        .await?;
    Ok(answer)
}

/// Pause a run (it stops at its next step and keeps its journal). Recorded in the
/// workspace's audit log (`runs.pause`) before the answer.
#[utoipa::path(post, path = "/v1/runs/{run_id}/pause", tag = "runs",
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = RunView), (status = 409, body = Problem)))]
pub async fn pause_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunView>> {
    audited_control(&s, &caller, &run_id, "runs.pause", json!({}), async |rt| {
        rt.pause(&run_id).await
    })
    .await
}

/// Resume a paused run (it replays its journal and goes on). Recorded in the workspace's
/// audit log (`runs.resume`) before the answer.
#[utoipa::path(post, path = "/v1/runs/{run_id}/resume", tag = "runs",
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = RunView), (status = 409, body = Problem)))]
pub async fn resume_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<RunView>> {
    audited_control(&s, &caller, &run_id, "runs.resume", json!({}), async |rt| {
        rt.resume(&run_id).await
    })
    .await
}

/// Why a run is cancelled or rejected.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Recorded with the run.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancel a run, recording the reason (with the run, and in the workspace's audit log as
/// `runs.cancel` before the answer).
#[utoipa::path(post, path = "/v1/runs/{run_id}/cancel", tag = "runs",
    params(("run_id" = String, Path, description = "run id")), request_body = Reason,
    responses((status = 200, body = RunView), (status = 409, body = Problem)))]
pub async fn cancel_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<RunView>> {
    let reason = optional_json::<Reason>(&body)?
        .reason
        .unwrap_or_else(|| "cancelled by request".into());
    let details = json!({ "reason": reason });
    let reason = format!("cancelled: {reason}");
    audited_control(&s, &caller, &run_id, "runs.cancel", details, async |rt| {
        rt.cancel_with_reason(&run_id, &reason).await
    })
    .await
}

/// A signal for a waiting run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The signal name the run waits for.
    pub name: String,
    /// Its payload.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Send a signal (a waiting run resumes on any node). Recorded in the workspace's audit log
/// (`runs.signal`, with the signal's name, never its payload) before the answer.
#[utoipa::path(post, path = "/v1/runs/{run_id}/signal", tag = "runs",
    params(("run_id" = String, Path, description = "run id")), request_body = SignalRequest,
    responses((status = 200, body = RunView), (status = 409, body = Problem)))]
pub async fn signal_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Json(req): Json<SignalRequest>,
) -> ApiResult<Json<RunView>> {
    // The signal's name; never its payload (it may carry what a person typed).
    let details = json!({ "signal": req.name });
    audited_control(&s, &caller, &run_id, "runs.signal", details, async |rt| {
        rt.signal(&run_id, &req.name, req.payload).await
    })
    .await
}

async fn decide(
    s: &AppState,
    caller: &Caller,
    run_id: &str,
    approved: bool,
    reason: Option<String>,
    by: &str,
) -> ApiResult<Json<RunView>> {
    decide_call(s, caller, run_id, None, approved, reason, by).await
}

/// Decide tool call `call_id` of run `run_id` waiting for approval, or with `None` every
/// call of the run that waits (a run-level decision). The decision is noted in the approval
/// queue (who decided, why; a claim by someone else is a 409 unless the caller is the
/// server's admin key), then each decided call is signalled with its own
/// `approval/<call_id>` signal, so it reaches that call and no other. A run-level decision on
/// a run with no pending call in the queue sends the run-wide `approval` signal (a workflow
/// that waits with `WorkflowContext::wait_for_approval`).
///
/// The approval's compare-and-swap decides a race with the run's end: a call withdrawn first
/// is a 409; a decision noted first stands (200) even when the run ended before its signal
/// reached it, the answer then showing the run as it ended.
///
/// # Errors
///
/// 404 for a run (or call) the caller cannot see; 409 for a call that is not pending.
pub(crate) async fn decide_call(
    s: &AppState,
    caller: &Caller,
    run_id: &str,
    call_id: Option<&str>,
    approved: bool,
    reason: Option<String>,
    by: &str,
) -> ApiResult<Json<RunView>> {
    // The runtime's approval signal carries an `ApprovalDecision`.
    let payload = if approved {
        json!({ "decision": "approved" })
    } else {
        json!({
            "decision": "denied",
            "reason": reason.clone().unwrap_or_else(|| "rejected by an operator".to_owned()),
        })
    };
    let scope = caller.scope();
    let run = s.platform.run_in(&scope, run_id).await?;
    if crate::gatewayops::durable::is_gateway_target(&run.target) {
        // A gateway call's run resumes here: this process must know its workflow.
        s.platform.ensure_target(&run.target).await?;
    }
    // A run that ended has nothing to decide: its pending approvals are withdrawn.
    crate::policy::refuse_if_ended(&s.audit, &run, call_id)
        .await
        .map_err(scoped(&scope))?;
    // Who decided, for the approval queue and the audit log.
    let calls = s
        .audit
        .note_decision_for(
            run_id,
            call_id,
            approved,
            by,
            reason.as_deref(),
            caller.super_admin,
        )
        .await?;
    // The decision is in the audit log before the run resumes and before the answer.
    let mut unaudited = None;
    for call in &calls {
        if let Err(e) = s.audit.audit_decision(run_id, call).await {
            tracing::error!(run = run_id, call = %call, error = %e, "a decision could not be audited");
            unaudited = Some((call.clone(), e));
        }
    }
    let signalled = control(s, caller, run_id, async |rt| {
        if calls.is_empty() {
            return rt.signal(run_id, APPROVAL_SIGNAL, payload).await;
        }
        for call in &calls {
            rt.signal(
                run_id,
                &agentkit_runtime::approval_signal_for(call),
                payload.clone(),
            )
            .await?;
        }
        Ok(())
    })
    .await;
    let answer = match signalled {
        Ok(answer) => answer,
        // The run ended (cancelled through another node, say) after this decision won the
        // approval and was audited, but before its signal: the decision stands as the queue
        // and the audit log hold it, and the answer shows the run as it ended. A 409 here
        // would tell the decider nothing was decided while both say it was.
        Err(e) if !calls.is_empty() => {
            let run = s.platform.run_in(&scope, run_id).await?;
            if !run.status.is_terminal() {
                return Err(e);
            }
            Json(RunView::in_scope(run, &scope))
        }
        Err(e) => return Err(e),
    };
    match unaudited {
        None => Ok(answer),
        // The run resumes (its policy layer writes the entry then); the caller learns the
        // log does not hold it yet.
        Some((call, e)) => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit-unavailable",
            format!(
                "the decision on call {call} of run {run_id} was made and the run resumes, but \
                 its audit entry could not be stored now ({e}); the run writes it when it \
                 resumes. Check the store"
            ),
        )),
    }
}

/// Approve the calls a run waits on: every call of the run pending in the approval queue
/// (to decide one of several, use `POST /v1/approvals/{run_id}/{call_id}/approve`).
#[utoipa::path(post, path = "/v1/runs/{run_id}/approve", tag = "runs",
    params(("run_id" = String, Path, description = "run id")), request_body = Reason,
    responses((status = 200, body = RunView), (status = 409, body = Problem)))]
pub async fn approve_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<RunView>> {
    let by = decider(&caller);
    decide(
        &s,
        &caller,
        &run_id,
        true,
        optional_json::<Reason>(&body)?.reason,
        &by,
    )
    .await
}

/// Reject the calls a run waits on, with a reason the model reads: every call of the run
/// pending in the approval queue (to decide one, use
/// `POST /v1/approvals/{run_id}/{call_id}/reject`).
#[utoipa::path(post, path = "/v1/runs/{run_id}/reject", tag = "runs",
    params(("run_id" = String, Path, description = "run id")), request_body = Reason,
    responses((status = 200, body = RunView), (status = 409, body = Problem)))]
pub async fn reject_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<RunView>> {
    let by = decider(&caller);
    decide(
        &s,
        &caller,
        &run_id,
        false,
        optional_json::<Reason>(&body)?.reason,
        &by,
    )
    .await
}

/// Who decides: the caller's key id, or `admin` for the server's admin key.
pub(crate) fn decider(caller: &Caller) -> String {
    caller.key_id.clone().unwrap_or_else(|| "admin".to_owned())
}

/// What an offline replay of a run found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayView {
    /// The run.
    pub run_id: String,
    /// Whether the replay used every recorded step and asked for nothing new.
    pub faithful: bool,
    /// The replayed output.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// The replay's error, if it failed.
    pub error: Option<String>,
    /// Journal keys that were replayed.
    pub replayed: Vec<String>,
    /// Where the code now differs from the recording.
    pub divergences: Vec<String>,
}

/// Replay a run offline from its journal (no model or tool is called) and report where the
/// current code diverges from the recording.
#[utoipa::path(post, path = "/v1/runs/{run_id}/replay", tag = "runs",
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = ReplayView), (status = 404, body = Problem)))]
pub async fn replay_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<ReplayView>> {
    let run = s.platform.run_in(&caller.scope(), &run_id).await?;
    s.platform.ensure_target(&run.target).await?;
    let r = s.platform.runtime().replay(&run_id).await?;
    Ok(Json(ReplayView {
        faithful: r.is_faithful(),
        run_id: r.run_id,
        output: r.output,
        error: r.error,
        replayed: r.replayed,
        divergences: r.divergences,
    }))
}
