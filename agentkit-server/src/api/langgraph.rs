//! The part of the LangGraph Agent Server API its official SDK clients (`langgraph-sdk`,
//! `@langchain/langgraph-sdk`) use, so existing clients drive agentkit agents unchanged:
//! assistants (registry entries: `assistant_id` and `graph_id` are the agent's name),
//! threads (create, get, search, count, patch, delete, copy, state, history, the thread's
//! stream of all its runs), runs on threads (background, wait, stream, get, list, join, join
//! stream, cancel, delete), stateless runs
//! (`/runs`, `/runs/wait`, `/runs/stream`), crons (see [`crate::crons`]) and store items. Many paths are shared with the
//! Agent Protocol (see [`super::agent_protocol`]).
//!
//! Mapping: a run's input `{"messages": [{"role"|"type": "user"|"human", "content": …}]}`
//! becomes the run's user message (the last user message; the thread keeps the
//! conversation); thread `values` are `{"messages": [...]}` in the LangGraph message shape
//! (tool calls with `args`, each tool result a `tool` message with its `tool_call_id`);
//! `multitask_strategy` `reject`|`interrupt`|`enqueue` is the thread's busy policy
//! (`rollback` is refused with a 422 problem); `on_disconnect: cancel` (a join stream's
//! `cancel_on_disconnect=1`) cancels the run when its client leaves first. Features agentkit does not have yet
//! (commands, checkpoints, `interrupt_before`, webhooks, delayed runs, store item TTLs) are refused
//! with a 422 problem rather than ignored.
//!
//! Every route serves the caller's workspace: its assistants are the workspace's agents; the
//! threads, runs, crons and store items it creates are its own, stored under its prefix
//! (see [`crate::tenancy`]); another workspace's thread, run or cron id answers 404 with the
//! same problem as an id that does not exist, and searches never list them.

use std::collections::BTreeSet;
use std::convert::Infallible;

use agentkit_core::RunStatus;
use agentkit_runtime::{Expect, RunRecord};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::v1::optional_json;
use super::{ApiResult, AppState, Path, Problem, Query, agent_protocol, sse};
use crate::crons::{Cron, Crons};
use crate::platform::StartRun;
use crate::registry::Entry;
use crate::tenancy::{Caller, Scope};
use crate::threads::{Thread, ThreadPolicy};

pub use crate::platform::RUN_META;

/// The store collection of store items (`{namespace}\u{1f}{key}`, the namespace's labels
/// joined with `.` under the workspace's prefix: `<org>~<workspace>~{namespace}`, plain for
/// `default/default`).
pub const STORE_ITEMS: &str = "agentkit.store.items";

/// The authenticated LangGraph (and shared Agent Protocol) routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/assistants/search", post(search_assistants))
        .route("/assistants/count", post(count_assistants))
        .route("/assistants/{assistant_id}", get(get_assistant))
        .route("/assistants/{assistant_id}/schemas", get(assistant_schemas))
        .route("/assistants/{assistant_id}/graph", get(assistant_graph))
        .route("/threads", post(create_thread))
        .route("/threads/search", post(search_threads))
        .route("/threads/count", post(count_threads))
        .route(
            "/threads/{thread_id}",
            get(get_thread).patch(patch_thread).delete(delete_thread),
        )
        .route("/threads/{thread_id}/state", get(thread_state))
        .route(
            "/threads/{thread_id}/state/{checkpoint_id}",
            get(thread_state_at),
        )
        .route(
            "/threads/{thread_id}/state/checkpoint",
            post(thread_state_at_checkpoint),
        )
        .route(
            "/threads/{thread_id}/history",
            post(thread_history).get(agent_protocol::thread_history),
        )
        .route("/threads/{thread_id}/copy", post(copy_thread))
        .route("/threads/{thread_id}/stream", get(join_thread_stream))
        .route(
            "/threads/{thread_id}/runs",
            post(create_thread_run).get(list_thread_runs),
        )
        .route("/threads/{thread_id}/runs/wait", post(wait_thread_run))
        .route("/threads/{thread_id}/runs/stream", post(stream_thread_run))
        .route(
            "/threads/{thread_id}/runs/{run_id}",
            get(get_thread_run).delete(delete_thread_run),
        )
        .route("/threads/{thread_id}/runs/{run_id}/join", get(join_run))
        .route(
            "/threads/{thread_id}/runs/{run_id}/stream",
            get(join_stream),
        )
        .route(
            "/threads/{thread_id}/runs/{run_id}/cancel",
            post(cancel_thread_run),
        )
        .route("/runs", post(create_stateless_run))
        .route("/runs/wait", post(wait_stateless_run))
        .route("/runs/stream", post(stream_stateless_run))
        .route("/threads/{thread_id}/runs/crons", post(create_thread_cron))
        .route("/runs/crons", post(create_cron))
        .route("/runs/crons/search", post(search_crons))
        .route("/runs/crons/count", post(count_crons))
        .route(
            "/runs/crons/{cron_id}",
            axum::routing::patch(update_cron).delete(delete_cron),
        )
        .route(
            "/store/items",
            get(get_item).put(put_item).delete(delete_item),
        )
        .route("/store/items/search", post(search_items))
        .route("/store/namespaces", post(list_namespaces))
}

// --- shared helpers ------------------------------------------------------------------------

/// An ISO 8601 (RFC 3339, UTC, milliseconds) timestamp of `ms` since the epoch.
#[must_use]
pub fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A 422 problem: the request asks for something agentkit does not support (yet).
pub(crate) fn unsupported(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "not-supported", detail)
}

/// A run's status as LangGraph names it: `pending`, `running`, `error`, `success`,
/// `timeout` or `interrupted` (cancelled, or waiting for a human).
#[must_use]
pub fn run_status(r: &RunRecord) -> &'static str {
    match r.status {
        RunStatus::Queued | RunStatus::Paused => "pending",
        RunStatus::Running => "running",
        RunStatus::Succeeded => "success",
        RunStatus::Cancelled | RunStatus::WaitingInput | RunStatus::WaitingApproval => {
            "interrupted"
        }
        RunStatus::Failed => {
            let e = r.error.as_deref().unwrap_or("").to_ascii_lowercase();
            if e.contains("timed out") || e.contains("timeout") || e.contains("deadline") {
                "timeout"
            } else {
                "error"
            }
        }
        _ => "running",
    }
}

/// A LangGraph run status (`pending`, …) as the agentkit statuses it covers.
fn statuses_of(lg: &str) -> Result<Vec<RunStatus>, Problem> {
    Ok(match lg {
        "pending" => vec![RunStatus::Queued, RunStatus::Paused],
        "running" => vec![RunStatus::Running],
        "success" => vec![RunStatus::Succeeded],
        "error" | "timeout" => vec![RunStatus::Failed],
        "interrupted" => vec![
            RunStatus::Cancelled,
            RunStatus::WaitingInput,
            RunStatus::WaitingApproval,
        ],
        other => {
            return Err(Problem::bad_request(format!(
                "unknown run status `{}`; use pending, running, error, success, timeout or \
                 interrupted",
                other.escape_debug()
            )));
        }
    })
}

/// The thread of a run (its stored id), if it has one.
fn thread_of(r: &RunRecord) -> Option<&str> {
    r.input.get("thread").and_then(Value::as_str)
}

/// The thread of a run as `scope`'s workspace calls it.
fn thread_out(scope: &Scope, r: &RunRecord) -> Option<String> {
    thread_of(r).map(|t| scope.external(t).unwrap_or(t).to_owned())
}

/// `result` with the caller's workspace prefix removed from its problem's detail, so errors
/// name threads and agents as the caller does.
pub(crate) fn unprefixed<T>(scope: &Scope, result: ApiResult<T>) -> ApiResult<T> {
    result.map_err(|mut p| {
        p.detail = scope.unprefix(&p.detail);
        p
    })
}

/// 404 for thread `id`: the same for another workspace's thread as for none at all.
fn no_thread(id: &str) -> Problem {
    Problem::from(agentkit_core::Error::not_found(
        "thread",
        id,
        "create it first (`POST /threads`)",
    ))
}

/// The stored id of the caller's thread `id` (404 if it cannot be one).
pub(crate) fn thread_key(scope: &Scope, id: &str) -> Result<String, Problem> {
    scope.internal(id).ok_or_else(|| no_thread(id))
}

/// The caller's thread `id`.
async fn thread_in(s: &AppState, scope: &Scope, id: &str) -> ApiResult<Thread> {
    Ok(s.platform.threads().get(&thread_key(scope, id)?).await?)
}

/// An agent (registry entry) of `scope`'s workspace by the name a client sends as
/// `assistant_id`, `graph_id` or `agent_id`, named as the workspace names it. Another
/// workspace's agent, or its stored name (`<org>~<workspace>~<name>`), is no assistant.
pub(crate) async fn entry_of(s: &AppState, scope: &Scope, id: &str) -> ApiResult<Entry> {
    let found = match scope.internal(id) {
        Some(name) => s.platform.registry().find(&name).await?,
        None => None,
    };
    match found {
        Some(e) => Ok(super::v1::entry_out(scope, e)),
        None => Err(Problem::not_found(format!(
            "no assistant `{}`: assistant ids are agent names (`POST /assistants/search` \
             lists them)",
            id.escape_debug()
        ))),
    }
}

// --- assistants ----------------------------------------------------------------------------

/// An agent or workflow as LangGraph clients read an assistant: its name is its
/// `assistant_id` and `graph_id`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct Assistant {
    /// The agent's name.
    pub assistant_id: String,
    /// The agent's name.
    pub graph_id: String,
    /// Always `{}`.
    #[schema(value_type = Object)]
    pub config: Value,
    /// Always `{}`.
    #[schema(value_type = Object)]
    pub context: Value,
    /// When its first version was deployed (ISO 8601).
    pub created_at: String,
    /// When it last changed (ISO 8601).
    pub updated_at: String,
    /// `kind` (agent, workflow, code) and `labels` (label → version).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Its latest version.
    pub version: u32,
    /// The agent's name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
}

impl From<Entry> for Assistant {
    fn from(e: Entry) -> Self {
        Self {
            assistant_id: e.name.clone(),
            graph_id: e.name.clone(),
            config: json!({}),
            context: json!({}),
            created_at: iso(e.created_at),
            updated_at: iso(e.updated_at),
            metadata: json!({"kind": e.kind, "labels": e.labels}),
            version: e.latest,
            name: e.name,
            description: (!e.description.is_empty()).then_some(e.description),
        }
    }
}

/// Which assistants to list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct AssistantSearch {
    /// Only assistants whose metadata contains these keys and values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Only this graph (agent name).
    #[serde(default)]
    pub graph_id: Option<String>,
    /// Only this name.
    #[serde(default)]
    pub name: Option<String>,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Only these fields of each result (LangGraph's `select`; unset: all). A name that is
    /// not a field is a 422 listing them.
    #[serde(default)]
    pub select: Option<Vec<String>>,
}

/// The fields of an [`Assistant`], for `select`.
const ASSISTANT_FIELDS: &[&str] = &[
    "assistant_id",
    "graph_id",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
    "name",
    "description",
];

/// `items` as JSON, each keeping only the fields `select` names (all without it); a name not
/// among `fields` is a 422 that lists them.
fn select_fields<T: Serialize>(
    items: Vec<T>,
    select: Option<&[String]>,
    fields: &[&str],
) -> ApiResult<Vec<Value>> {
    if let Some(bad) = select
        .into_iter()
        .flatten()
        .find(|f| !fields.contains(&f.as_str()))
    {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-select",
            format!(
                "`select` names `{}`, which is not a field; use some of {}",
                bad.escape_debug(),
                fields.join(", ")
            ),
        ));
    }
    items
        .into_iter()
        .map(|item| {
            let mut v = serde_json::to_value(item).map_err(|e| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("encoding a result: {e}"),
                )
            })?;
            if let (Some(select), Value::Object(m)) = (select, &mut v) {
                m.retain(|k, _| select.iter().any(|f| f == k));
            }
            Ok(v)
        })
        .collect()
}

/// The agents of `scope`'s workspace, named as it names them.
pub(crate) async fn entries_in(s: &AppState, scope: &Scope) -> ApiResult<Vec<Entry>> {
    let all = s.platform.registry().list_all().await?;
    Ok(all
        .into_iter()
        .filter(|e| scope.contains(&e.name))
        .map(|e| super::v1::entry_out(scope, e))
        .collect())
}

async fn matching_assistants(
    s: &AppState,
    scope: &Scope,
    q: &AssistantSearch,
) -> ApiResult<Vec<Assistant>> {
    Ok(entries_in(s, scope)
        .await?
        .into_iter()
        .map(Assistant::from)
        .filter(|a| q.graph_id.as_ref().is_none_or(|g| *g == a.graph_id))
        .filter(|a| q.name.as_ref().is_none_or(|n| *n == a.name))
        .filter(|a| {
            q.metadata
                .iter()
                .flatten()
                .all(|(k, v)| a.metadata.get(k) == Some(v))
        })
        .collect())
}

/// Search assistants (the registry's agents and workflows), by name.
#[utoipa::path(post, path = "/assistants/search", tag = "langgraph", request_body = AssistantSearch,
    responses((status = 200, body = [Assistant]), (status = 422, body = Problem)))]
pub async fn search_assistants(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<Vec<Value>>> {
    let q: AssistantSearch = optional_json(&body)?;
    let found = matching_assistants(&s, &caller.scope(), &q).await?;
    let page = found
        .into_iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(10))
        .collect();
    Ok(super::Json(select_fields(
        page,
        q.select.as_deref(),
        ASSISTANT_FIELDS,
    )?))
}

/// Count assistants matching a search.
#[utoipa::path(post, path = "/assistants/count", tag = "langgraph", request_body = AssistantSearch,
    responses((status = 200, body = usize)))]
pub async fn count_assistants(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<usize>> {
    let q: AssistantSearch = optional_json(&body)?;
    Ok(super::Json(
        matching_assistants(&s, &caller.scope(), &q).await?.len(),
    ))
}

/// One assistant.
#[utoipa::path(get, path = "/assistants/{assistant_id}", tag = "langgraph",
    params(("assistant_id" = String, Path, description = "the agent's name")),
    responses((status = 200, body = Assistant), (status = 404, body = Problem)))]
pub async fn get_assistant(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<super::Json<Assistant>> {
    Ok(super::Json(
        entry_of(&s, &caller.scope(), &id).await?.into(),
    ))
}

/// The JSON Schema of the messages state every agentkit agent takes and keeps.
#[must_use]
pub fn messages_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string", "description": "user, assistant, system or tool (or `type`: human, ai, …)"},
                        "content": {"description": "text, or a list of `{\"type\": \"text\", \"text\": …}` parts"}
                    },
                    "required": ["content"]
                }
            }
        },
        "required": ["messages"]
    })
}

/// An assistant's schemas.
#[derive(Debug, Serialize, ToSchema)]
#[non_exhaustive]
pub struct GraphSchema {
    /// The agent's name.
    pub graph_id: String,
    /// Input: `{"messages": [...]}`.
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// Output: `{"messages": [...]}`.
    #[schema(value_type = Object)]
    pub output_schema: Value,
    /// State: `{"messages": [...]}`.
    #[schema(value_type = Object)]
    pub state_schema: Value,
    /// None: agents take no config.
    #[schema(value_type = Option<Object>)]
    pub config_schema: Option<Value>,
    /// None: agents take no context.
    #[schema(value_type = Option<Object>)]
    pub context_schema: Option<Value>,
}

/// The input, output and state schemas of an assistant (messages in, messages kept).
#[utoipa::path(get, path = "/assistants/{assistant_id}/schemas", tag = "langgraph",
    params(("assistant_id" = String, Path, description = "the agent's name")),
    responses((status = 200, body = GraphSchema), (status = 404, body = Problem)))]
pub async fn assistant_schemas(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<super::Json<GraphSchema>> {
    let e = entry_of(&s, &caller.scope(), &id).await?;
    Ok(super::Json(GraphSchema {
        graph_id: e.name,
        input_schema: messages_schema(),
        output_schema: messages_schema(),
        state_schema: messages_schema(),
        config_schema: None,
        context_schema: None,
    }))
}

/// An assistant's graph: start → the agent → end.
#[utoipa::path(get, path = "/assistants/{assistant_id}/graph", tag = "langgraph",
    params(("assistant_id" = String, Path, description = "the agent's name")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn assistant_graph(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<super::Json<Value>> {
    let e = entry_of(&s, &caller.scope(), &id).await?;
    Ok(super::Json(json!({
        "nodes": [
            {"id": "__start__", "type": "schema", "data": "__start__"},
            {"id": e.name, "type": "runnable", "data": {"name": e.name, "kind": e.kind}},
            {"id": "__end__", "type": "schema", "data": "__end__"}
        ],
        "edges": [
            {"source": "__start__", "target": e.name},
            {"source": e.name, "target": "__end__"}
        ]
    })))
}

// --- threads -------------------------------------------------------------------------------

/// A thread as LangGraph clients read it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct LgThread {
    /// The thread id.
    pub thread_id: String,
    /// When it was created (ISO 8601).
    pub created_at: String,
    /// When it last changed (ISO 8601).
    pub updated_at: String,
    /// The client's metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// `idle`, `busy` (a run is live), `interrupted` (a run waits for a human) or `error`
    /// (the last run failed).
    pub status: String,
    /// `{"messages": [...]}`.
    #[schema(value_type = Object)]
    pub values: Value,
    /// Always `{}`.
    #[schema(value_type = Object)]
    pub interrupts: Value,
}

/// The thread's status, from its last run.
pub(crate) async fn thread_status(s: &AppState, t: &Thread) -> ApiResult<&'static str> {
    let Some(last) = &t.last_run else {
        return Ok("idle");
    };
    let Some(run) = s.platform.runtime().store().get_run(last).await? else {
        return Ok("idle");
    };
    Ok(match run.status {
        RunStatus::Queued | RunStatus::Running | RunStatus::Paused => "busy",
        RunStatus::WaitingInput | RunStatus::WaitingApproval => "interrupted",
        RunStatus::Failed => "error",
        _ => "idle",
    })
}

/// The thread as `scope`'s workspace sees it in LangGraph's shape (status and values
/// included).
pub(crate) async fn thread_view(s: &AppState, scope: &Scope, t: Thread) -> ApiResult<LgThread> {
    let status = thread_status(s, &t).await?;
    let values = s.platform.threads().values(&t.thread_id).await?;
    Ok(LgThread {
        thread_id: scope
            .external(&t.thread_id)
            .unwrap_or(&t.thread_id)
            .to_owned(),
        created_at: iso(t.created_at),
        updated_at: iso(t.updated_at),
        metadata: t.metadata,
        status: status.to_owned(),
        values,
        interrupts: json!({}),
    })
}

/// A thread to create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ThreadCreate {
    /// Its id (default: a fresh UUID).
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Metadata to keep with it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// `raise` (default: 409 if it exists) or `do_nothing` (answer with the existing one).
    #[serde(default)]
    pub if_exists: Option<String>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub supersteps: Option<Value>,
    /// Its time to live: minutes, or `{"ttl": minutes, "strategy": "delete"}`; the
    /// retention sweep then deletes it and its conversation once its last run has ended.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ttl: Option<Value>,
}

/// Create a thread.
#[utoipa::path(post, path = "/threads", tag = "langgraph", request_body = ThreadCreate,
    responses((status = 200, body = LgThread), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_thread(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<LgThread>> {
    let scope = caller.scope();
    unprefixed(&scope, create_thread_in(&s, &caller, &scope, &body).await)
}

async fn create_thread_in(
    s: &AppState,
    caller: &Caller,
    scope: &Scope,
    body: &[u8],
) -> ApiResult<super::Json<LgThread>> {
    let req: ThreadCreate = optional_json(body)?;
    if req.supersteps.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            "`supersteps` (creating a thread with prior state) is not supported yet; create \
             it empty and run the agent on it",
        ));
    }
    let ttl = thread_ttl(req.ttl.as_ref())?;
    let do_nothing = match req.if_exists.as_deref() {
        None | Some("raise") => false,
        Some("do_nothing") => true,
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "`if_exists` must be `raise` or `do_nothing`, not `{}`",
                other.escape_debug()
            )));
        }
    };
    let created = s
        .platform
        .threads()
        .create_expiring_in(
            scope,
            req.thread_id.clone(),
            req.metadata.unwrap_or_default(),
            false,
            ttl,
        )
        .await;
    let t = match (created, req.thread_id) {
        (Ok(t), _) => t,
        // `do_nothing`: the thread that exists, unchanged (so not audited).
        (Err(agentkit_core::Error::InvalidState { .. }), Some(id)) if do_nothing => {
            return Ok(super::Json(
                thread_view(s, scope, thread_in(s, scope, &id).await?).await?,
            ));
        }
        (Err(e), _) => return Err(e.into()),
    };
    let view = thread_view(s, scope, t).await?;
    audit_thread(s, caller, "threads.create", &view.thread_id, json!({})).await?;
    Ok(super::Json(view))
}

/// The longest thread `ttl` accepted: ten years, in minutes.
const MAX_TTL_MINUTES: f64 = 10.0 * 365.0 * 24.0 * 60.0;

/// A thread's `ttl` as LangGraph's clients send it: minutes (a number), or
/// `{"ttl": minutes, "strategy": "delete"}` (the only strategy: the thread and its
/// conversation are deleted); absent or `null`: none.
fn thread_ttl(v: Option<&Value>) -> Result<Option<std::time::Duration>, Problem> {
    let invalid =
        |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", detail);
    let minutes = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::Object(o)) => {
            match o.get("strategy") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s == "delete" => {}
                Some(other) => {
                    return Err(invalid(format!(
                        "thread `ttl.strategy` `{other}` is not supported; the one strategy is \
                         `delete`"
                    )));
                }
            }
            if let Some(extra) = o.keys().find(|k| *k != "ttl" && *k != "strategy") {
                return Err(invalid(format!(
                    "thread `ttl` has an unknown field `{extra}`; it takes `ttl` (minutes) and \
                     `strategy`"
                )));
            }
            o.get("ttl").and_then(Value::as_f64)
        }
        Some(other) => {
            return Err(invalid(format!(
                "thread `ttl` must be minutes (a number) or {{\"ttl\": minutes, \"strategy\": \
                 \"delete\"}}, not `{other}`"
            )));
        }
    };
    match minutes {
        Some(m) if m.is_finite() && m > 0.0 && m <= MAX_TTL_MINUTES => {
            Ok(Some(std::time::Duration::from_secs_f64(m * 60.0)))
        }
        _ => Err(invalid(format!(
            "thread `ttl` must be a number of minutes above 0 and at most {MAX_TTL_MINUTES}"
        ))),
    }
}

/// Record a change of the caller's thread `id` in its workspace's audit log: ids only, never
/// the thread's messages or metadata values.
async fn audit_thread(
    s: &AppState,
    caller: &Caller,
    action: &str,
    id: &str,
    details: Value,
) -> ApiResult<()> {
    s.audit_change(caller, &caller.workspace, action, id, details)
        .await
}

/// One thread.
#[utoipa::path(get, path = "/threads/{thread_id}", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")),
    responses((status = 200, body = LgThread), (status = 404, body = Problem)))]
pub async fn get_thread(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<super::Json<LgThread>> {
    let scope = caller.scope();
    unprefixed(
        &scope,
        async {
            let t = thread_in(&s, &scope, &id).await?;
            Ok(super::Json(thread_view(&s, &scope, t).await?))
        }
        .await,
    )
}

/// A change to a thread.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ThreadPatch {
    /// Merged into the thread's metadata.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub values: Option<Value>,
    /// A new time to live from now, as when creating it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ttl: Option<Value>,
}

/// Merge metadata into a thread's.
#[utoipa::path(patch, path = "/threads/{thread_id}", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")), request_body = ThreadPatch,
    responses((status = 200, body = LgThread), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn patch_thread(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let scope = caller.scope();
    unprefixed(
        &scope,
        patch_thread_in(&s, &caller, &scope, &id, &headers, &body).await,
    )
}

async fn patch_thread_in(
    s: &AppState,
    caller: &Caller,
    scope: &Scope,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let req: ThreadPatch = optional_json(body)?;
    if req.values.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            "changing a thread's values is not supported yet; run the agent on it",
        ));
    }
    let ttl = thread_ttl(req.ttl.as_ref())?;
    let metadata = req.metadata.unwrap_or_default();
    // Which metadata keys changed; never their values.
    let keys: Vec<&String> = metadata.keys().collect();
    let details = json!({ "metadata_keys": keys });
    let key = thread_key(scope, id)?;
    let mut t = s.platform.threads().patch(&key, metadata).await?;
    if ttl.is_some() {
        t = s.platform.threads().set_ttl(&key, ttl).await?;
    }
    audit_thread(s, caller, "threads.patch", id, details).await?;
    let minimal = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("return=minimal"));
    if minimal {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(super::Json(thread_view(s, scope, t).await?).into_response())
}

/// Delete a thread and its conversation (a run still live on it is cancelled first).
#[utoipa::path(delete, path = "/threads/{thread_id}", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_thread(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let scope = caller.scope();
    unprefixed(&scope, delete_thread_in(&s, &caller, &scope, &id).await)
}

async fn delete_thread_in(
    s: &AppState,
    caller: &Caller,
    scope: &Scope,
    id: &str,
) -> ApiResult<StatusCode> {
    let t = thread_in(s, scope, id).await?;
    if let Some(last) = &t.last_run {
        match s
            .platform
            .runtime()
            .cancel_with_reason(last, &format!("cancelled: thread {id} was deleted"))
            .await
        {
            Ok(()) | Err(agentkit_core::Error::InvalidState { .. }) => {}
            Err(agentkit_core::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    s.platform.threads().delete(&t.thread_id).await?;
    audit_thread(s, caller, "threads.delete", id, json!({})).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which threads to list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ThreadSearch {
    /// Only threads whose metadata contains these keys and values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Only these threads.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Only threads in this status (`idle`, `busy`, `interrupted`, `error`).
    #[serde(default)]
    pub status: Option<String>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub values: Option<Value>,
    /// `created_at` (default), `updated_at` or `thread_id`.
    #[serde(default)]
    pub sort_by: Option<String>,
    /// `desc` (default: newest first) or `asc`.
    #[serde(default)]
    pub sort_order: Option<String>,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Only these fields of each result (LangGraph's `select`; unset: all). A name that is
    /// not a field is a 422 listing them.
    #[serde(default)]
    pub select: Option<Vec<String>>,
}

/// The fields of an [`LgThread`], for `select`.
const THREAD_FIELDS: &[&str] = &[
    "thread_id",
    "created_at",
    "updated_at",
    "metadata",
    "status",
    "values",
    "interrupts",
];

/// The threads matching `q`, sorted, skipping `offset`, at most `limit` (at most 10,000
/// threads are scanned).
async fn matching_threads(
    s: &AppState,
    scope: &Scope,
    q: &ThreadSearch,
    limit: usize,
    offset: usize,
) -> ApiResult<Vec<Thread>> {
    if q.values.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            "searching threads by `values` is not supported yet",
        ));
    }
    if let Some(st) = &q.status
        && !matches!(st.as_str(), "idle" | "busy" | "interrupted" | "error")
    {
        return Err(Problem::bad_request(format!(
            "unknown thread status `{}`; use idle, busy, interrupted or error",
            st.escape_debug()
        )));
    }
    let sort_by = q.sort_by.as_deref().unwrap_or("created_at");
    if !matches!(sort_by, "created_at" | "updated_at" | "thread_id") {
        return Err(unsupported(format!(
            "sorting threads by `{}` is not supported yet; use created_at, updated_at or \
             thread_id",
            sort_by.escape_debug()
        )));
    }
    let desc = match q.sort_order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "`sort_order` must be `asc` or `desc`, not `{}`",
                other.escape_debug()
            )));
        }
    };
    let metadata = q.metadata.clone().unwrap_or_default();
    let threads = s.platform.threads();
    let candidates: Vec<Thread> = match &q.ids {
        Some(ids) => {
            let mut out = Vec::new();
            // Another workspace's id (or its stored form) is no thread of the caller's.
            for id in ids.iter().filter_map(|id| scope.internal(id)) {
                if let Some(t) = threads.find(&id).await?
                    && metadata.iter().all(|(k, v)| t.metadata.get(k) == Some(v))
                {
                    out.push(t);
                }
            }
            out
        }
        None => threads.search_in(scope, &metadata, 10_000, 0).await?,
    };
    let mut out = Vec::new();
    for t in candidates {
        if let Some(st) = &q.status
            && thread_status(s, &t).await? != st.as_str()
        {
            continue;
        }
        out.push(t);
    }
    out.sort_by(|a, b| {
        let key = match sort_by {
            "updated_at" => a.updated_at.cmp(&b.updated_at),
            "thread_id" => std::cmp::Ordering::Equal,
            _ => a.created_at.cmp(&b.created_at),
        };
        key.then_with(|| a.thread_id.cmp(&b.thread_id))
    });
    if desc {
        out.reverse();
    }
    Ok(out.into_iter().skip(offset).take(limit).collect())
}

/// Search threads by metadata, ids and status (newest first unless sorted otherwise).
#[utoipa::path(post, path = "/threads/search", tag = "langgraph", request_body = ThreadSearch,
    responses((status = 200, body = [LgThread]), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn search_threads(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<Vec<Value>>> {
    let scope = caller.scope();
    let q: ThreadSearch = optional_json(&body)?;
    let limit = q.limit.unwrap_or(10).min(1000);
    let offset = q.offset.unwrap_or(0);
    let mut out = Vec::new();
    for t in unprefixed(
        &scope,
        matching_threads(&s, &scope, &q, limit, offset).await,
    )? {
        out.push(thread_view(&s, &scope, t).await?);
    }
    Ok(super::Json(select_fields(
        out,
        q.select.as_deref(),
        THREAD_FIELDS,
    )?))
}

/// Count threads matching a search (at most 10,000 are scanned).
#[utoipa::path(post, path = "/threads/count", tag = "langgraph", request_body = ThreadSearch,
    responses((status = 200, body = usize), (status = 422, body = Problem)))]
pub async fn count_threads(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<usize>> {
    let q: ThreadSearch = optional_json(&body)?;
    let scope = caller.scope();
    let found = unprefixed(&scope, matching_threads(&s, &scope, &q, 10_000, 0).await)?;
    Ok(super::Json(found.len()))
}

/// A thread's state at a turn of its conversation.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct ThreadState {
    /// `{"messages": [...]}`.
    #[schema(value_type = Object)]
    pub values: Value,
    /// Always empty: a thread is done until it gets new input.
    pub next: Vec<String>,
    /// `{"thread_id", "checkpoint_ns": "", "checkpoint_id"}`: the id is the number of
    /// messages at this state.
    #[schema(value_type = Object)]
    pub checkpoint: Value,
    /// `{"step": <turn>}`.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// When the thread last changed (ISO 8601).
    pub created_at: Option<String>,
    /// The previous turn's checkpoint, if any.
    #[schema(value_type = Option<Object>)]
    pub parent_checkpoint: Option<Value>,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    pub tasks: Vec<Value>,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    pub interrupts: Vec<Value>,
    /// The messages (Agent Protocol).
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
}

fn checkpoint(thread: &str, n: usize) -> Value {
    json!({"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": n.to_string(), "checkpoint_map": null})
}

/// The state of `values` (a turn of the thread, whose id the caller knows as `id`), whose
/// previous turn had `parent` messages.
fn state_of(
    t: &Thread,
    id: &str,
    values: Value,
    parent: Option<usize>,
    step: usize,
) -> ThreadState {
    let messages = values
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    ThreadState {
        checkpoint: checkpoint(id, messages.len()),
        parent_checkpoint: parent.map(|p| checkpoint(id, p)),
        metadata: json!({"step": step, "source": "loop"}),
        created_at: Some(iso(t.updated_at)),
        values,
        next: Vec::new(),
        tasks: Vec::new(),
        interrupts: Vec::new(),
        messages,
    }
}

/// Every state of a thread of `scope`'s workspace, newest first, with parents.
pub(crate) async fn states(s: &AppState, scope: &Scope, t: &Thread) -> ApiResult<Vec<ThreadState>> {
    let id = scope.external(&t.thread_id).unwrap_or(&t.thread_id);
    let history = s.platform.threads().history(&t.thread_id, 10_000).await?;
    let lens: Vec<usize> = history
        .iter()
        .map(|v| {
            v.get("messages")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .collect();
    let turns = history.len();
    Ok(history
        .into_iter()
        .enumerate()
        .map(|(i, v)| state_of(t, id, v, lens.get(i + 1).copied(), turns - i))
        .collect())
}

/// The thread's current state.
pub(crate) async fn current_state(
    s: &AppState,
    scope: &Scope,
    t: &Thread,
) -> ApiResult<ThreadState> {
    let all = states(s, scope, t).await?;
    let id = scope.external(&t.thread_id).unwrap_or(&t.thread_id);
    Ok(match all.into_iter().next() {
        Some(st) => st,
        None => state_of(t, id, json!({"messages": []}), None, 0),
    })
}

/// A thread's current state (`values` are its messages).
#[utoipa::path(get, path = "/threads/{thread_id}/state", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")),
    responses((status = 200, body = ThreadState), (status = 404, body = Problem)))]
pub async fn thread_state(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<super::Json<ThreadState>> {
    let scope = caller.scope();
    unprefixed(
        &scope,
        async {
            let t = thread_in(&s, &scope, &id).await?;
            Ok(super::Json(current_state(&s, &scope, &t).await?))
        }
        .await,
    )
}

/// A thread's state at a checkpoint (a number of messages, from its history).
#[utoipa::path(get, path = "/threads/{thread_id}/state/{checkpoint_id}", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"),
           ("checkpoint_id" = String, Path, description = "a checkpoint id from the thread's history")),
    responses((status = 200, body = ThreadState), (status = 404, body = Problem)))]
pub async fn thread_state_at(
    State(s): State<AppState>,
    caller: Caller,
    Path((id, checkpoint_id)): Path<(String, String)>,
) -> ApiResult<super::Json<ThreadState>> {
    state_at(&s, &caller, &id, &checkpoint_id).await
}

/// Which checkpoint's state to read (`POST /threads/{thread_id}/state/checkpoint`, what the
/// SDKs send for `get_state(thread, checkpoint)` / `getState(thread, checkpoint)` given a
/// checkpoint object).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct StateAtRequest {
    /// `{"checkpoint_id": …}` (or a config `{"configurable": {"checkpoint_id": …}}`, or the id).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub checkpoint: Value,
}

/// A thread's state at the checkpoint the body names.
#[utoipa::path(post, path = "/threads/{thread_id}/state/checkpoint", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")), request_body = StateAtRequest,
    responses((status = 200, body = ThreadState), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn thread_state_at_checkpoint(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<ThreadState>> {
    let req: StateAtRequest = optional_json(&body)?;
    let checkpoint_id = checkpoint_id_of("checkpoint", &req.checkpoint)?.ok_or_else(|| {
        Problem::bad_request(
            "the body needs `checkpoint`: `{\"checkpoint_id\": …}` from the thread's history",
        )
    })?;
    state_at(&s, &caller, &id, &checkpoint_id).await
}

/// The checkpoint id a client sends as `field`: none (null), the id, `{"checkpoint_id": …}`,
/// or a config `{"configurable": {"checkpoint_id": …}}` (what the JavaScript SDK's `Config`
/// is); a 400 problem for anything else, rather than a value silently ignored.
fn checkpoint_id_of(field: &str, v: &Value) -> Result<Option<String>, Problem> {
    let id = match v {
        Value::Null => return Ok(None),
        Value::String(c) => Some(c.as_str()),
        v => v
            .get("checkpoint_id")
            .or_else(|| v.pointer("/configurable/checkpoint_id"))
            .and_then(Value::as_str),
    };
    id.map(|c| Some(c.to_owned())).ok_or_else(|| {
        Problem::bad_request(format!(
            "`{field}` must be a checkpoint id, `{{\"checkpoint_id\": …}}` or a config \
             `{{\"configurable\": {{\"checkpoint_id\": …}}}}`, not `{v}`"
        ))
    })
}

/// The state of `caller`'s thread `id` at `checkpoint_id`, or 404.
async fn state_at(
    s: &AppState,
    caller: &Caller,
    id: &str,
    checkpoint_id: &str,
) -> ApiResult<super::Json<ThreadState>> {
    let scope = caller.scope();
    let t = unprefixed(&scope, thread_in(s, &scope, id).await)?;
    states(s, &scope, &t)
        .await?
        .into_iter()
        .find(|st| st.checkpoint["checkpoint_id"] == checkpoint_id)
        .map(super::Json)
        .ok_or_else(|| {
            Problem::not_found(format!(
                "thread {id} has no checkpoint `{}`; its history lists them",
                checkpoint_id.escape_debug()
            ))
        })
}

/// Which states of a thread to list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct HistoryRequest {
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only states before this checkpoint (an id, `{"checkpoint_id": …}`, or a config
    /// `{"configurable": {"checkpoint_id": …}}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// Only states whose metadata has each of these keys with that value.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
}

/// The states before `before` (a checkpoint id, object or config) whose metadata has each
/// key of `metadata` with that value, newest first, at most `limit`.
pub(crate) async fn history_page(
    s: &AppState,
    scope: &Scope,
    id: &str,
    limit: usize,
    before: Option<&Value>,
    metadata: Option<&Map<String, Value>>,
) -> ApiResult<Vec<ThreadState>> {
    let t = unprefixed(scope, thread_in(s, scope, id).await)?;
    let before = match before {
        None => None,
        Some(v) => checkpoint_id_of("before", v)?,
    };
    let before = match before {
        None => None,
        Some(c) => Some(c.parse::<usize>().map_err(|_| {
            Problem::bad_request(format!(
                "`before` must be a checkpoint id from this thread's history, not `{}`",
                c.escape_debug()
            ))
        })?),
    };
    Ok(states(s, scope, &t)
        .await?
        .into_iter()
        .filter(|st| {
            before.is_none_or(|b| {
                st.checkpoint["checkpoint_id"]
                    .as_str()
                    .and_then(|c| c.parse::<usize>().ok())
                    .is_some_and(|n| n < b)
            })
        })
        .filter(|st| metadata.is_none_or(|m| m.iter().all(|(k, v)| st.metadata.get(k) == Some(v))))
        .take(limit)
        .collect())
}

/// A thread's states after each turn, newest first.
#[utoipa::path(post, path = "/threads/{thread_id}/history", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")), request_body = HistoryRequest,
    responses((status = 200, body = [ThreadState]), (status = 404, body = Problem)))]
pub async fn thread_history(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<Vec<ThreadState>>> {
    let req: HistoryRequest = optional_json(&body)?;
    if req.checkpoint.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(unsupported(
            "history from a `checkpoint` (subgraph namespaces) is not supported yet; use \
             `before`",
        ));
    }
    let limit = req.limit.unwrap_or(10).min(1000);
    Ok(super::Json(
        history_page(
            &s,
            &caller.scope(),
            &id,
            limit,
            req.before.as_ref(),
            req.metadata.as_ref(),
        )
        .await?,
    ))
}

/// Copy a thread: a new thread with the same metadata and conversation.
#[utoipa::path(post, path = "/threads/{thread_id}/copy", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")),
    responses((status = 200, body = LgThread), (status = 404, body = Problem)))]
pub async fn copy_thread(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<super::Json<LgThread>> {
    let scope = caller.scope();
    unprefixed(
        &scope,
        async {
            let t = s.platform.threads().copy(&thread_key(&scope, &id)?).await?;
            let view = thread_view(&s, &scope, t).await?;
            audit_thread(
                &s,
                &caller,
                "threads.copy",
                &view.thread_id,
                json!({"from": id}),
            )
            .await?;
            Ok(super::Json(view))
        }
        .await,
    )
}

// --- runs ----------------------------------------------------------------------------------

/// A run as LangGraph (and Agent Protocol) clients read it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct LgRun {
    /// The run id.
    pub run_id: String,
    /// The thread it runs on (none for a stateless run).
    pub thread_id: Option<String>,
    /// The agent's name.
    pub assistant_id: String,
    /// The agent's name (Agent Protocol).
    pub agent_id: String,
    /// When it was created (ISO 8601).
    pub created_at: String,
    /// When it last changed (ISO 8601).
    pub updated_at: String,
    /// `pending`, `running`, `error`, `success`, `timeout` or `interrupted`.
    pub status: String,
    /// The metadata the client started it with.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// `reject` or `interrupt`.
    pub multitask_strategy: String,
    /// `{"input": …}`: what the agent was given.
    #[schema(value_type = Object)]
    pub kwargs: Value,
    /// Why it was cancelled or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
}

/// The run as `scope`'s workspace sees it in LangGraph's shape.
pub(crate) async fn run_view(s: &AppState, scope: &Scope, r: RunRecord) -> ApiResult<LgRun> {
    let meta = s
        .platform
        .runtime()
        .store()
        .doc_get(RUN_META, &r.id)
        .await?
        .map(|d| d.value)
        .unwrap_or_default();
    let strategy = meta
        .get("multitask_strategy")
        .and_then(Value::as_str)
        .map_or_else(
            || match s.platform.policy {
                ThreadPolicy::Interrupt => "interrupt".to_owned(),
                ThreadPolicy::Enqueue => "enqueue".to_owned(),
                _ => "reject".to_owned(),
            },
            str::to_owned,
        );
    let status = run_status(&r).to_owned();
    let cancel_reason = if r.status == RunStatus::Cancelled {
        r.error.clone()
    } else {
        None
    };
    let thread_id = thread_out(scope, &r);
    let mut input = r.input;
    if let Some(t) = &thread_id {
        input["thread"] = Value::String(t.clone());
    }
    let agent = scope.external(&r.target).unwrap_or(&r.target).to_owned();
    Ok(LgRun {
        thread_id,
        assistant_id: agent.clone(),
        agent_id: agent,
        created_at: iso(r.created_at),
        updated_at: iso(r.updated_at),
        status,
        metadata: meta.get("metadata").cloned().unwrap_or_else(|| json!({})),
        multitask_strategy: strategy,
        kwargs: json!({ "input": input }),
        cancel_reason,
        run_id: r.id,
    })
}

/// A run to start (the body of every run-creating route). Fields LangGraph clients send
/// that agentkit has no use for (`stream_subgraphs`, `durability`, …) are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct RunCreate {
    /// The agent's name (also accepted as a graph id).
    #[serde(default)]
    pub assistant_id: Option<String>,
    /// The agent's name (Agent Protocol).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The thread (Agent Protocol's `/runs`; LangGraph puts it in the path).
    #[serde(default)]
    pub thread_id: Option<String>,
    /// `{"messages": [...]}` (the last user message is the run's input), `{"message": …}`
    /// or a string.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Input messages (Agent Protocol).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub messages: Option<Vec<Value>>,
    /// Kept with the run.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// `values` (default), `updates`, or a list; other modes send nothing.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub stream_mode: Option<Value>,
    /// `reject`, `interrupt` or `enqueue` (`rollback` is not supported yet).
    #[serde(default)]
    pub multitask_strategy: Option<String>,
    /// `reject` (default: 404 for a missing thread) or `create`.
    #[serde(default)]
    pub if_not_exists: Option<String>,
    /// Stateless runs: `delete` or `keep`; agentkit keeps no thread for them either way.
    #[serde(default)]
    pub on_completion: Option<String>,
    /// Streamed and waited-for runs: `cancel` cancels the run when the client goes away
    /// before it ends; `continue` (default) lets it finish.
    #[serde(default)]
    pub on_disconnect: Option<String>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub command: Option<Value>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
    /// Not supported (422).
    #[serde(default)]
    pub checkpoint_id: Option<String>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub interrupt_before: Option<Value>,
    /// Not supported (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub interrupt_after: Option<Value>,
    /// Not supported (422).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Not supported (422) unless 0.
    #[serde(default)]
    pub after_seconds: Option<f64>,
}

impl RunCreate {
    fn agent(&self) -> Result<&str, Problem> {
        self.assistant_id
            .as_deref()
            .or(self.agent_id.as_deref())
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "the body needs `assistant_id` (or `agent_id`): the name of the agent to run",
                )
            })
    }

    /// Whether the client speaks Agent Protocol (it names the agent `agent_id`).
    pub(crate) fn is_agent_protocol(&self) -> bool {
        self.assistant_id.is_none() && self.agent_id.is_some()
    }

    fn check_supported(&self) -> Result<(), Problem> {
        let set = |v: &Option<Value>| {
            v.as_ref()
                .is_some_and(|v| !v.is_null() && v != &json!([]) && v != &json!({}))
        };
        if set(&self.command) {
            return Err(unsupported(
                "`command` (resuming an interrupted graph) is not supported yet; approve or \
                 signal a waiting run with `/v1/runs/{run_id}/approve` or `/signal`",
            ));
        }
        if set(&self.checkpoint) || self.checkpoint_id.is_some() {
            return Err(unsupported(
                "running from a `checkpoint` is not supported yet; copy the thread instead",
            ));
        }
        if set(&self.interrupt_before) || set(&self.interrupt_after) {
            return Err(unsupported(
                "`interrupt_before` / `interrupt_after` are not supported yet; agentkit agents \
                 wait for approval of the tools their spec marks",
            ));
        }
        if self.webhook.is_some() {
            return Err(unsupported("run `webhook`s are not supported yet"));
        }
        if self.after_seconds.is_some_and(|s| s > 0.0) {
            return Err(unsupported(
                "delayed runs (`after_seconds`) are not supported yet",
            ));
        }
        self.cancels_on_disconnect()?;
        Modes::check(self.stream_mode.as_ref())
    }

    fn policy(&self) -> Result<Option<ThreadPolicy>, Problem> {
        match self.multitask_strategy.as_deref() {
            None => Ok(None),
            Some("reject") => Ok(Some(ThreadPolicy::Reject)),
            Some("interrupt") => Ok(Some(ThreadPolicy::Interrupt)),
            Some("enqueue") => Ok(Some(ThreadPolicy::Enqueue)),
            Some("rollback") => Err(unsupported(
                "`multitask_strategy: rollback` is not supported yet; use `reject`, `interrupt` \
                 or `enqueue`",
            )),
            Some(other) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!(
                    "`multitask_strategy` must be reject, interrupt, rollback or enqueue, not \
                     `{}`",
                    other.escape_debug()
                ),
            )),
        }
    }

    /// Whether the run is to be cancelled when its client goes away (`on_disconnect:
    /// cancel`), or a 422 problem for a value that is neither `cancel` nor `continue`.
    pub(crate) fn cancels_on_disconnect(&self) -> Result<bool, Problem> {
        match self.on_disconnect.as_deref() {
            None | Some("continue") => Ok(false),
            Some("cancel") => Ok(true),
            Some(other) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!(
                    "`on_disconnect` must be `cancel` or `continue`, not `{}`",
                    other.escape_debug()
                ),
            )),
        }
    }

    /// The stream modes asked for (default `values`).
    pub(crate) fn modes(&self) -> Modes {
        Modes::from_value(self.stream_mode.as_ref())
    }
}

/// The text of a message's `content`: a string, or the text of its text parts.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let text: Vec<&str> = parts
                .iter()
                .filter_map(|p| match p {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("text") => {
                        o.get("text").and_then(Value::as_str)
                    }
                    _ => None,
                })
                .collect();
            (!text.is_empty()).then(|| text.join(""))
        }
        _ => None,
    }
}

/// The last user message of `messages`.
fn last_user_message(messages: &[Value]) -> Option<String> {
    messages.iter().rev().find_map(|m| {
        let role = m
            .get("role")
            .or_else(|| m.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("user");
        matches!(role, "user" | "human")
            .then(|| m.get("content").and_then(content_text))
            .flatten()
    })
}

/// The run's user message, from LangGraph's `input` or Agent Protocol's `messages`.
pub(crate) fn user_message(req: &RunCreate) -> Result<String, Problem> {
    let found = match (&req.input, &req.messages) {
        (Some(Value::String(s)), _) => Some(s.clone()),
        (Some(Value::Object(o)), _) if o.get("message").is_some_and(Value::is_string) => {
            o.get("message").and_then(Value::as_str).map(str::to_owned)
        }
        (Some(Value::Object(o)), _) if o.get("messages").is_some_and(Value::is_array) => o
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| last_user_message(m)),
        (Some(Value::Array(m)), _) => last_user_message(m),
        (_, Some(m)) => last_user_message(m),
        _ => None,
    };
    found.ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "the run needs a user message: send `input: {\"messages\": [{\"role\": \"user\", \
             \"content\": \"…\"}]}` (the last user message is what the agent answers; the \
             thread keeps the conversation)",
        )
    })
}

/// Start the run `req` asks for as `caller` (in its workspace, carrying its principal), on
/// the caller's `thread` (if any).
pub(crate) async fn start(
    s: &AppState,
    caller: &Caller,
    thread: Option<&str>,
    req: &RunCreate,
) -> ApiResult<RunRecord> {
    let scope = caller.scope();
    unprefixed(&scope, start_in(s, caller, &scope, thread, req).await)
}

/// The caller's thread `id` that a run (or a cron's runs) will continue: 404 when it does not
/// exist, unless `req` says `if_not_exists: create`, which creates it.
async fn thread_for_run(
    s: &AppState,
    scope: &Scope,
    id: &str,
    req: &RunCreate,
) -> ApiResult<Thread> {
    match req.if_not_exists.as_deref() {
        None | Some("reject") => thread_in(s, scope, id).await,
        // Create-or-get in the caller's workspace: another workspace's thread of the same id
        // is a different thread, never this one.
        Some("create") => Ok(s
            .platform
            .threads()
            .create_in(scope, Some(id.to_owned()), Map::new(), true)
            .await?),
        Some(other) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            format!(
                "`if_not_exists` must be `reject` or `create`, not `{}`",
                other.escape_debug()
            ),
        )),
    }
}

async fn start_in(
    s: &AppState,
    caller: &Caller,
    scope: &Scope,
    thread: Option<&str>,
    req: &RunCreate,
) -> ApiResult<RunRecord> {
    req.check_supported()?;
    let agent = req.agent()?.to_owned();
    entry_of(s, scope, &agent).await?;
    let message = user_message(req)?;
    let policy = req.policy()?;
    if let Some(t) = thread {
        thread_for_run(s, scope, t, req).await?;
    }
    let mut start = StartRun::new(agent, message).by(caller.principal());
    start.thread_id = thread.map(str::to_owned);
    start.if_busy = policy;
    let run = s.platform.start(start).await?;
    let mut meta = json!({"metadata": req.metadata.clone().unwrap_or_default()});
    if let Some(m) = &req.multitask_strategy {
        meta["multitask_strategy"] = Value::String(m.clone());
    }
    if let Some(m) = &req.stream_mode {
        meta["stream_mode"] = m.clone();
    }
    s.platform
        .runtime()
        .store()
        .doc_put(RUN_META, &run.id, meta, Expect::Any)
        .await?;
    Ok(run)
}

/// The values a run leaves: its thread's messages, or for a stateless run its input and
/// answer.
pub(crate) async fn run_values(s: &AppState, r: &RunRecord) -> ApiResult<Value> {
    if let Some(t) = thread_of(r)
        && s.platform.threads().find(t).await?.is_some()
    {
        return Ok(s.platform.threads().values(t).await?);
    }
    let mut messages = Vec::new();
    if let Some(m) = r.input.get("message").and_then(Value::as_str) {
        messages.push(json!({"type": "human", "content": m}));
    }
    if let Some(text) = r
        .output
        .as_ref()
        .and_then(|o| o.get("text").or(Some(o)))
        .and_then(|t| t.as_str().map(str::to_owned))
    {
        messages.push(json!({"type": "ai", "content": text}));
    }
    Ok(json!({ "messages": messages }))
}

/// The answer of a wait or join: the values, with `__error__` when the run failed or was
/// cancelled (the SDK raises it) and `__interrupt__` when it waits for a human (approve or
/// signal it with `/v1/runs/{run_id}/approve|reject|signal`).
pub(crate) async fn wait_values(s: &AppState, r: &RunRecord) -> ApiResult<Value> {
    let mut values = run_values(s, r).await?;
    let error = match r.status {
        RunStatus::Failed => Some("RunError"),
        RunStatus::Cancelled => Some("Cancelled"),
        _ => None,
    };
    if let (Some(kind), Some(obj)) = (error, values.as_object_mut()) {
        obj.insert(
            "__error__".into(),
            json!({"error": kind, "message": r.error.clone().unwrap_or_default()}),
        );
    }
    if matches!(
        r.status,
        RunStatus::WaitingInput | RunStatus::WaitingApproval
    ) && let Some(obj) = values.as_object_mut()
    {
        obj.insert(
            "__interrupt__".into(),
            json!([{"id": r.id, "value": {"run_id": r.id, "waiting_for": r.status.as_str()}}]),
        );
    }
    Ok(values)
}

fn content_location(scope: &Scope, r: &RunRecord) -> Option<HeaderValue> {
    let path = match thread_out(scope, r) {
        Some(t) => format!("/threads/{t}/runs/{}", r.id),
        None => format!("/runs/{}", r.id),
    };
    HeaderValue::from_str(&path).ok()
}

fn with_location(scope: &Scope, r: &RunRecord, mut res: Response) -> Response {
    if let Some(v) = content_location(scope, r) {
        res.headers_mut().insert(http::header::CONTENT_LOCATION, v);
    }
    res
}

/// The run, if it is on the caller's `thread` (another workspace's run or thread is not
/// found, exactly like one that does not exist).
async fn run_on(s: &AppState, scope: &Scope, thread: &str, run_id: &str) -> ApiResult<RunRecord> {
    unprefixed(scope, run_on_in(s, scope, thread, run_id).await)
}

async fn run_on_in(
    s: &AppState,
    scope: &Scope,
    thread: &str,
    run_id: &str,
) -> ApiResult<RunRecord> {
    let key = thread_in(s, scope, thread).await?.thread_id;
    let r = s.platform.run_in(scope, run_id).await?;
    if thread_of(&r) != Some(key.as_str()) {
        return Err(Problem::not_found(format!(
            "thread {thread} has no run {run_id}"
        )));
    }
    Ok(r)
}

/// Start a run on a thread in the background.
#[utoipa::path(post, path = "/threads/{thread_id}/runs", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")), request_body = RunCreate,
    responses((status = 200, body = LgRun), (status = 404, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create_thread_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(thread): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: RunCreate = optional_json(&body)?;
    let scope = caller.scope();
    let run = start(&s, &caller, Some(&thread), &req).await?;
    let view = run_view(&s, &scope, run.clone()).await?;
    Ok(with_location(
        &scope,
        &run,
        super::Json(view).into_response(),
    ))
}

/// Which runs of a thread to list. `select` (only these fields of each run) is read from the
/// query string as the SDKs send it: repeated (`select=run_id&select=status`, Python) or a
/// JSON list (`select=["run_id","status"]`, JavaScript).
#[derive(Debug, Deserialize, IntoParams)]
#[non_exhaustive]
pub struct RunList {
    /// At most this many (default 10).
    pub limit: Option<usize>,
    /// Skip this many.
    pub offset: Option<usize>,
    /// Only runs in this LangGraph status.
    pub status: Option<String>,
}

/// The fields of an [`LgRun`], for `select`.
const RUN_FIELDS: &[&str] = &[
    "run_id",
    "thread_id",
    "assistant_id",
    "agent_id",
    "created_at",
    "updated_at",
    "status",
    "metadata",
    "multitask_strategy",
    "kwargs",
    "cancel_reason",
];

/// The values of query parameter `key` as the SDKs send a list: the parameter repeated (the
/// Python SDK), a JSON list (the JavaScript SDK), or both; a 400 problem for a query string
/// that is not one.
pub(crate) fn query_list(query: Option<&str>, key: &str) -> ApiResult<Vec<String>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| Problem::bad_request(format!("the query string is not valid: {e}")))?;
    let mut out = Vec::new();
    for (_, v) in pairs.into_iter().filter(|(k, _)| k == key) {
        match serde_json::from_str::<Vec<String>>(&v) {
            Ok(list) => out.extend(list),
            Err(_) => out.push(v),
        }
    }
    Ok(out)
}

/// How many of a thread's newest runs a run list or search considers: its status filter,
/// metadata filter and `offset` apply within them (a list limit, so one request reads a
/// bounded number of runs; older runs are reached through `GET /v1/runs`).
pub(crate) const RUNS_CONSIDERED: usize = 10_000;

/// A thread's runs, newest first (its 10,000 newest runs are considered: the status filter
/// and `offset` apply within them); with `select`, only those fields of each (a name that is
/// not a field is a 422 listing them).
#[utoipa::path(get, path = "/threads/{thread_id}/runs", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"), RunList,
           ("select" = Option<Vec<String>>, Query,
            description = "only these fields of each run: the parameter repeated, or a JSON list")),
    responses((status = 200, body = [LgRun]), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list_thread_runs(
    State(s): State<AppState>,
    caller: Caller,
    Path(thread): Path<String>,
    Query(q): Query<RunList>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult<super::Json<Vec<Value>>> {
    let scope = caller.scope();
    let limit = q.limit.unwrap_or(10).min(1000);
    let offset = q.offset.unwrap_or(0);
    let statuses = q.status.as_deref().map(statuses_of).transpose()?;
    let select = query_list(query.as_deref(), "select")?;
    let select = (!select.is_empty()).then_some(select);
    // A bad name is refused before any run is read.
    select_fields(Vec::<LgRun>::new(), select.as_deref(), RUN_FIELDS)?;
    let key = thread_key(&scope, &thread)?;
    let runs = s
        .platform
        .thread_runs(&key, RUNS_CONSIDERED)
        .await
        .map_err(super::v1::scoped(&scope))?;
    let mut out = Vec::new();
    for r in runs
        .into_iter()
        .filter(|r| {
            statuses.as_ref().is_none_or(|st| st.contains(&r.status))
                && q.status.as_deref().is_none_or(|want| run_status(r) == want)
        })
        .skip(offset)
        .take(limit)
    {
        out.push(run_view(&s, &scope, r).await?);
    }
    Ok(super::Json(select_fields(
        out,
        select.as_deref(),
        RUN_FIELDS,
    )?))
}

/// Start a run on a thread and answer with the thread's values once it finishes.
#[utoipa::path(post, path = "/threads/{thread_id}/runs/wait", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")), request_body = RunCreate,
    responses((status = 200, body = Object, description = "the thread's values (`__error__` if the run failed)"),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn wait_thread_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(thread): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: RunCreate = optional_json(&body)?;
    let run = start(&s, &caller, Some(&thread), &req).await?;
    wait_run(&s, &caller, &run, &req).await
}

/// Wait for `run`, started from `req`, and answer ([`wait_answer`]); with `on_disconnect:
/// cancel`, a client that goes away before the run ends cancels it.
async fn wait_run(
    s: &AppState,
    caller: &Caller,
    run: &RunRecord,
    req: &RunCreate,
) -> ApiResult<Response> {
    let mut guard = CancelOnDisconnect::new(req.cancels_on_disconnect()?, s, caller, &run.id);
    let answer = wait_answer(s, &caller.scope(), run, req.is_agent_protocol()).await;
    guard.disarm();
    answer
}

/// Wait for `run` and answer: LangGraph clients get the values; Agent Protocol clients
/// `{"run", "values", "messages"}`.
pub(crate) async fn wait_answer(
    s: &AppState,
    scope: &Scope,
    run: &RunRecord,
    agent_protocol: bool,
) -> ApiResult<Response> {
    let done = s.platform.wait(&run.id).await?;
    let values = wait_values(s, &done).await?;
    let body = if agent_protocol {
        let messages = values.get("messages").cloned().unwrap_or(json!([]));
        json!({"run": run_view(s, scope, done.clone()).await?, "values": values, "messages": messages})
    } else {
        values
    };
    Ok(with_location(scope, run, super::Json(body).into_response()))
}

/// One run of a thread.
#[utoipa::path(get, path = "/threads/{thread_id}/runs/{run_id}", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"), ("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = LgRun), (status = 404, body = Problem)))]
pub async fn get_thread_run(
    State(s): State<AppState>,
    caller: Caller,
    Path((thread, run_id)): Path<(String, String)>,
) -> ApiResult<super::Json<LgRun>> {
    let scope = caller.scope();
    let r = run_on(&s, &scope, &thread, &run_id).await?;
    Ok(super::Json(run_view(&s, &scope, r).await?))
}

/// Wait for a run of a thread to finish and answer with the thread's values.
#[utoipa::path(get, path = "/threads/{thread_id}/runs/{run_id}/join", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"), ("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = Object, description = "the thread's values"), (status = 404, body = Problem)))]
pub async fn join_run(
    State(s): State<AppState>,
    caller: Caller,
    Path((thread, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let scope = caller.scope();
    let r = run_on(&s, &scope, &thread, &run_id).await?;
    wait_answer(&s, &scope, &r, false).await
}

/// How to cancel a run.
#[derive(Debug, Deserialize, IntoParams)]
#[non_exhaustive]
pub struct CancelQuery {
    /// `1`/`true`: answer once the run has stopped, with the run.
    pub wait: Option<String>,
    /// `interrupt` (default); `rollback` is not supported yet.
    pub action: Option<String>,
}

/// Cancel `r` (a run of `caller`'s workspace) as `q` asks, and record it in the workspace's
/// audit log (`runs.cancel`) before answering: 202 with no body, or the run once stopped
/// when `wait`.
pub(crate) async fn cancel(
    s: &AppState,
    caller: &Caller,
    r: &RunRecord,
    q: &CancelQuery,
) -> ApiResult<Response> {
    let scope = &caller.scope();
    match q.action.as_deref() {
        None | Some("interrupt") => {}
        Some("rollback") => {
            return Err(unsupported(
                "`action: rollback` is not supported yet (runs are kept); use `interrupt`",
            ));
        }
        Some(other) => {
            return Err(Problem::bad_request(format!(
                "`action` must be `interrupt` or `rollback`, not `{}`",
                other.escape_debug()
            )));
        }
    }
    s.platform
        .runtime()
        .cancel_with_reason(&r.id, "cancelled: cancelled by request")
        .await
        .map_err(super::v1::scoped(scope))?;
    s.audit_change(
        caller,
        &caller.workspace,
        "runs.cancel",
        &r.id,
        json!({"reason": "cancelled by request"}),
    )
    .await?;
    let wait = q
        .wait
        .as_deref()
        .is_some_and(|w| matches!(w, "1" | "true" | "True"));
    if wait {
        let done = s.platform.wait(&r.id).await?;
        return Ok(super::Json(run_view(s, scope, done).await?).into_response());
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Cancel a run of a thread (409 if it already finished).
#[utoipa::path(post, path = "/threads/{thread_id}/runs/{run_id}/cancel", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"), ("run_id" = String, Path, description = "run id"),
           CancelQuery),
    responses((status = 202), (status = 200, body = LgRun), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_thread_run(
    State(s): State<AppState>,
    caller: Caller,
    Path((thread, run_id)): Path<(String, String)>,
    Query(q): Query<CancelQuery>,
) -> ApiResult<Response> {
    let r = run_on(&s, &caller.scope(), &thread, &run_id).await?;
    cancel(&s, &caller, &r, &q).await
}

/// Delete a finished run of a thread (succeeded, failed or cancelled): its record, its
/// journal (so its events, in every stream and in `GET /v1/runs`) and its place among the
/// thread's runs, the way retention deletes finished runs
/// ([`delete_finished_run`](crate::platform::Platform::delete_finished_run)); recorded in the
/// workspace's audit log as `runs.delete`. The thread keeps its conversation. A run that has not finished (pending,
/// running, or waiting for a human) is a 409: cancel it first (`POST
/// /threads/{thread_id}/runs/{run_id}/cancel?wait=1`). Another workspace's run, or one on
/// another thread, is a 404 and stays.
#[utoipa::path(delete, path = "/threads/{thread_id}/runs/{run_id}", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"), ("run_id" = String, Path, description = "run id")),
    responses((status = 204, description = "deleted"), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete_thread_run(
    State(s): State<AppState>,
    caller: Caller,
    Path((thread, run_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let scope = caller.scope();
    let r = run_on(&s, &scope, &thread, &run_id).await?;
    if !r.status.is_terminal() {
        return Err(Problem::conflict(format!(
            "run {run_id} has not finished (its status is `{}`), so it cannot be deleted; cancel \
             it first (`POST /threads/{thread}/runs/{run_id}/cancel?wait=1`), then delete it",
            r.status.as_str()
        )));
    }
    let deleted = s
        .platform
        .delete_finished_run(&r)
        .await
        .map_err(super::v1::scoped(&scope))?;
    if !deleted {
        // Deleted meanwhile, by another request or by retention.
        return Err(Problem::not_found(format!(
            "thread {thread} has no run {run_id}"
        )));
    }
    s.audit_change(
        &caller,
        &caller.workspace,
        "runs.delete",
        &r.id,
        json!({"thread_id": thread}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start a stateless run (no thread; Agent Protocol may name one as `thread_id`) in the
/// background.
#[utoipa::path(post, path = "/runs", tag = "langgraph", request_body = RunCreate,
    responses((status = 200, body = LgRun), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn create_stateless_run(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: RunCreate = optional_json(&body)?;
    let scope = caller.scope();
    let run = start(&s, &caller, req.thread_id.as_deref(), &req).await?;
    let view = run_view(&s, &scope, run.clone()).await?;
    Ok(with_location(
        &scope,
        &run,
        super::Json(view).into_response(),
    ))
}

/// Start a stateless run and answer with its values (its input and answer) once it
/// finishes; Agent Protocol clients (`agent_id`) get `{"run", "values", "messages"}`.
#[utoipa::path(post, path = "/runs/wait", tag = "langgraph", request_body = RunCreate,
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn wait_stateless_run(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: RunCreate = optional_json(&body)?;
    let run = start(&s, &caller, req.thread_id.as_deref(), &req).await?;
    wait_run(&s, &caller, &run, &req).await
}

// --- streaming -----------------------------------------------------------------------------

/// The stream modes a client asked for; agentkit sends `values`, `updates`, `messages-tuple`
/// and `messages` (whole model answers: there are no token chunks); other modes send nothing
/// besides `metadata`, `error` and `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Modes {
    /// Send the thread's values at the start and end.
    pub values: bool,
    /// Send each model answer and tool result as it is recorded.
    pub updates: bool,
    /// `messages-tuple`: send each model answer as `messages` `[message, metadata]`.
    pub messages_tuple: bool,
    /// `messages`: send each model answer as `messages/complete` `[message]`.
    pub messages: bool,
}

/// The stream modes of LangGraph's API: a `stream_mode` naming another is refused (422). Those
/// agentkit does not stream (see [`Modes`]) are accepted and send nothing.
const KNOWN_MODES: &[&str] = &[
    "values",
    "messages",
    "messages-tuple",
    "updates",
    "events",
    "debug",
    "custom",
    "tasks",
    "checkpoints",
];

impl Modes {
    /// Check a `stream_mode`: absent, or a known mode, or a list of them; otherwise a 422
    /// problem saying what is accepted.
    pub(crate) fn check(v: Option<&Value>) -> Result<(), Problem> {
        let invalid =
            |detail: String| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-body", detail);
        let names: Vec<&Value> = match v {
            None | Some(Value::Null) => return Ok(()),
            Some(s @ Value::String(_)) => vec![s],
            Some(Value::Array(a)) => a.iter().collect(),
            Some(other) => {
                return Err(invalid(format!(
                    "`stream_mode` must be a stream mode or a list of them, not `{other}`"
                )));
            }
        };
        for name in names {
            if !name.as_str().is_some_and(|n| KNOWN_MODES.contains(&n)) {
                return Err(invalid(format!(
                    "`{name}` is not a stream mode; use one of {}",
                    KNOWN_MODES.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// From a `stream_mode` (a string, a list, or absent: `values`).
    #[must_use]
    pub fn from_value(v: Option<&Value>) -> Self {
        let names: BTreeSet<&str> = match v {
            None | Some(Value::Null) => std::iter::once("values").collect(),
            Some(Value::String(s)) => std::iter::once(s.as_str()).collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(_) => BTreeSet::new(),
        };
        Self {
            values: names.contains("values"),
            updates: names.contains("updates"),
            messages_tuple: names.contains("messages-tuple"),
            messages: names.contains("messages"),
        }
    }
}

fn event(name: &str, data: &Value) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("error").data("encoding failed"))
}

/// The id of an event of a LangGraph stream, `{seq}-{slot}` (the shape of the Redis stream
/// ids LangGraph's own server sends): `seq` is the journal entry the event was made from and
/// `slot` its place among the events made from that entry, so ids increase along a stream,
/// whatever its modes, and resuming after any of them sends every later event exactly once.
/// Slots: before entry 0, `0` for `metadata` and `1` for the input `values`; for an entry,
/// `2` `updates`, `3` `messages` (`messages-tuple`), `4` `messages/complete`; after the run's
/// last entry, `8` its final `values` and `9` `end` or `error`. A bare `{seq}` (a `/v1` event
/// id of the run) stands for the events made from entry `seq` (`{seq}-4`), not the final
/// ones after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EventId {
    seq: u64,
    slot: u64,
}

impl EventId {
    const METADATA: u64 = 0;
    const INPUT: u64 = 1;
    const UPDATES: u64 = 2;
    const MESSAGES: u64 = 3;
    const COMPLETE: u64 = 4;
    const VALUES: u64 = 8;
    const END: u64 = 9;

    fn new(seq: u64, slot: u64) -> Self {
        Self { seq, slot }
    }

    /// Read an id a client sends back: `{seq}-{slot}` or `{seq}`, each part ASCII digits.
    fn parse(s: &str) -> Option<Self> {
        fn number(s: &str) -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        }
        match s.split_once('-') {
            Some((seq, slot)) => Some(Self::new(number(seq)?, number(slot)?)),
            None => Some(Self::new(number(s)?, Self::COMPLETE)),
        }
    }

    /// The `Last-Event-ID` a reconnecting client sent, or a 400 problem.
    pub(crate) fn last(headers: &HeaderMap) -> Result<Option<Self>, Problem> {
        sse::last_event_id_as(headers, "`{seq}-{slot}`, as `12-2`", Self::parse)
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.seq, self.slot)
    }
}

#[cfg(test)]
mod event_id_tests {
    use super::EventId;

    #[test]
    fn an_event_id_is_seq_dash_slot_or_a_bare_seq() {
        assert_eq!(EventId::parse("12-2"), Some(EventId::new(12, 2)));
        assert_eq!(EventId::parse("0-0"), Some(EventId::new(0, 0)));
        // A `/v1` id: the events made from that entry are had, the final ones are not.
        assert_eq!(
            EventId::parse("7"),
            Some(EventId::new(7, EventId::COMPLETE))
        );
        assert!(EventId::parse("7").unwrap() < EventId::new(7, EventId::VALUES));
        for bad in [
            "", "-", "1-", "-1", "+1", "1-+2", "1-2-3", "a", "1 -2", "１",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ids_round_trip_and_sort_as_their_numbers(a in (0u64.., 0u64..), b in (0u64.., 0u64..)) {
            let (x, y) = (EventId::new(a.0, a.1), EventId::new(b.0, b.1));
            proptest::prop_assert_eq!(EventId::parse(&x.to_string()), Some(x));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }

        #[test]
        fn any_text_is_read_or_refused_without_panic(s in "\\PC{0,24}") {
            if let Some(id) = EventId::parse(&s) {
                let (seq, slot) = s.split_once('-').unwrap_or((&s, ""));
                proptest::prop_assert!(seq.bytes().all(|b| b.is_ascii_digit()));
                proptest::prop_assert!(slot.bytes().all(|b| b.is_ascii_digit()));
                proptest::prop_assert_eq!(seq.parse::<u64>().ok(), Some(id.seq));
            }
        }
    }
}

/// The last events of a run's stream, by slot (see [`EventId`]): `error` if it failed; else
/// its values (when streamed) and `end`.
async fn finish(s: &AppState, scope: &Scope, run_id: &str, modes: Modes) -> Vec<(u64, Event)> {
    let r = match s.platform.run_in(scope, run_id).await {
        Ok(r) => r,
        Err(e) => {
            return vec![(
                EventId::END,
                event(
                    "error",
                    &json!({"error": "StoreError", "message": e.to_string()}),
                ),
            )];
        }
    };
    if r.status == RunStatus::Failed {
        return vec![(
            EventId::END,
            event(
                "error",
                &json!({"error": "RunError", "message": r.error.unwrap_or_default()}),
            ),
        )];
    }
    let mut out = Vec::new();
    if modes.values {
        match wait_values(s, &r).await {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("__error__");
                }
                out.push((EventId::VALUES, event("values", &v)));
            }
            Err(p) => out.push((
                EventId::VALUES,
                event(
                    "error",
                    &json!({"error": "StoreError", "message": p.detail}),
                ),
            )),
        }
    }
    out.push((EventId::END, event("end", &Value::Null)));
    out
}

/// A tool call of a journaled model answer (`{"type": "tool_call", "id", "name",
/// "arguments"}`) as LangGraph clients read it: `{"id", "name", "args", "type": "tool_call"}`.
fn lg_tool_call(call: &Value) -> Value {
    json!({
        "id": call.get("id").cloned().unwrap_or(Value::Null),
        "name": call.get("name").cloned().unwrap_or(Value::Null),
        "args": call.get("arguments").cloned().unwrap_or_else(|| json!({})),
        "type": "tool_call",
    })
}

/// A journaled tool result (key `…/tool/{step}/{call_id}`, value `{"content": [parts],
/// "is_error"}`) as the `tool` message LangGraph clients read: the text of the result and the
/// `tool_call_id` it answers (`status: error` if it failed). A value of another shape is sent
/// as its JSON text.
fn lg_tool_message(key: &str, data: &Value) -> Value {
    let call_id = key
        .rsplit_once("/tool/")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, id)| id);
    let content = match data.get("content").and_then(Value::as_array) {
        Some(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        None => match data {
            Value::String(t) => t.clone(),
            other => other.to_string(),
        },
    };
    let mut message = json!({"type": "tool", "content": content, "tool_call_id": call_id});
    if data.get("is_error").and_then(Value::as_bool) == Some(true) {
        message["status"] = json!("error");
    }
    message
}

/// Cancels a run when it is dropped armed: the response (a stream, or a wait) of a client that
/// asked for that (`on_disconnect: cancel`, `cancel_on_disconnect=1`) was dropped before the run
/// ended, which is when the client went away. The cancel is audited as `runs.cancel` of the
/// caller; a run that ended meanwhile is left as it is, and so is every run when the server
/// is shutting down (it ends the streams itself).
pub(crate) struct CancelOnDisconnect {
    armed: Option<(AppState, Caller, String)>,
}

impl CancelOnDisconnect {
    /// A guard that cancels `run_id` for `caller` when dropped, if `cancel`; else one that
    /// does nothing.
    pub(crate) fn new(cancel: bool, s: &AppState, caller: &Caller, run_id: &str) -> Self {
        Self {
            armed: cancel.then(|| (s.clone(), caller.clone(), run_id.to_owned())),
        }
    }

    /// The response was sent whole: leave the run be.
    pub(crate) fn disarm(&mut self) {
        self.armed = None;
    }
}

impl Drop for CancelOnDisconnect {
    fn drop(&mut self) {
        let Some((s, caller, run_id)) = self.armed.take() else {
            return;
        };
        // The server is stopping (it ends every stream and, after its drain, every request):
        // that is not the client leaving, and the run is left to resume after the restart.
        if s.platform.stopping.is_cancelled() {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let reason = "cancelled: the client disconnected";
            if s
                .platform
                .runtime()
                .cancel_with_reason(&run_id, reason)
                .await
                .is_err()
            {
                return;
            }
            let details = json!({"reason": "the client disconnected"});
            if let Err(p) = s
                .audit_change(&caller, &caller.workspace, "runs.cancel", &run_id, details)
                .await
            {
                tracing::warn!(run_id, error = %p.detail, "could not audit the cancel of a run whose client disconnected");
            }
        });
    }
}

/// The run's events as LangGraph streams them: `metadata` (`run_id`), `values` (first
/// `initial`, if given, and the final values), `updates` (each model answer and tool result),
/// then `error` (failed) or `end` (finished, cancelled, or waiting for a human: then the
/// final values carry `__interrupt__`). Each event has an [`EventId`]; with `after` (the
/// client's `Last-Event-ID`) the stream sends only the events after it, read from the store.
/// An `error` event for a failed store read has no id: it is not part of the run, so a
/// client reconnecting after it resumes where it was. `on_disconnect` cancels the run if the
/// stream is dropped before its last event.
pub(crate) fn lg_stream(
    s: AppState,
    scope: Scope,
    run: &RunRecord,
    modes: Modes,
    initial: Option<Value>,
    after: Option<EventId>,
    on_disconnect: CancelOnDisconnect,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    let stream = lg_events(s, scope, run, modes, initial, after, on_disconnect).map(|(id, e)| {
        Ok(match id {
            Some(id) => e.id(id.to_string()),
            None => e,
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The events of [`lg_stream`], each with its [`EventId`] (none for a failed store read) not
/// set on it yet: a run's stream sends it as it is, a thread's stream with the run's id.
fn lg_events(
    s: AppState,
    scope: Scope,
    run: &RunRecord,
    modes: Modes,
    initial: Option<Value>,
    after: Option<EventId>,
    on_disconnect: CancelOnDisconnect,
) -> impl Stream<Item = (Option<EventId>, Event)> + Send + 'static {
    let agent = scope
        .external(&run.target)
        .unwrap_or(&run.target)
        .to_owned();
    let mut head = vec![(
        EventId::new(0, EventId::METADATA),
        event(
            "metadata",
            &json!({"run_id": run.id, "thread_id": thread_out(&scope, run), "attempt": 1}),
        ),
    )];
    if modes.values
        && let Some(v) = initial
    {
        head.push((EventId::new(0, EventId::INPUT), event("values", &v)));
    }
    let run_id = run.id.clone();
    // Entry `after.seq` may have events left after `after`'s slot: read from that entry on.
    let from = after.and_then(|a| a.seq.checked_sub(1));
    // The last journal entry seen so far: the final events are slots after it.
    let items = sse::run_items(s.platform.clone(), run.id.clone(), from).scan(
        after.map_or(0, |a| a.seq),
        |last, item| {
            if let sse::StreamItem::Event(e) = &item {
                *last = (*last).max(e.id);
            }
            futures::future::ready(Some((item, *last)))
        },
    );
    let items = items.then(move |(item, last)| {
        let s = s.clone();
        let scope = scope.clone();
        let agent = agent.clone();
        let run_id = run_id.clone();
        async move {
            let ended = |events: Vec<(u64, Event)>| {
                events
                    .into_iter()
                    .map(|(slot, e)| (Some(EventId::new(last, slot)), e))
                    .collect::<Vec<_>>()
            };
            let events = match item {
                sse::StreamItem::Event(e)
                    if e.event == "model"
                        && (modes.updates || modes.messages || modes.messages_tuple) =>
                {
                    let mut ai = json!({
                        "type": "ai",
                        "id": format!("{run_id}:{}", e.id),
                        "content": e.data.get("text").cloned().unwrap_or(json!("")),
                    });
                    if let Some(calls) = e.data.get("tool_calls").and_then(Value::as_array)
                        && !calls.is_empty()
                    {
                        ai["tool_calls"] = calls.iter().map(lg_tool_call).collect();
                    }
                    let id = |slot| Some(EventId::new(e.id, slot));
                    let mut out = Vec::new();
                    if modes.updates {
                        let mut update = Map::new();
                        update.insert(agent.clone(), json!({"messages": [ai]}));
                        out.push((
                            id(EventId::UPDATES),
                            event("updates", &Value::Object(update)),
                        ));
                    }
                    if modes.messages_tuple {
                        let meta = json!({"langgraph_node": agent, "run_id": run_id});
                        out.push((id(EventId::MESSAGES), event("messages", &json!([ai, meta]))));
                    }
                    if modes.messages {
                        out.push((
                            id(EventId::COMPLETE),
                            event("messages/complete", &json!([ai])),
                        ));
                    }
                    out
                }
                sse::StreamItem::Event(e) if modes.updates && e.event == "tool_result" => {
                    vec![(
                        Some(EventId::new(e.id, EventId::UPDATES)),
                        event(
                            "updates",
                            &json!({"tools": {"messages": [lg_tool_message(&e.key, &e.data)]}}),
                        ),
                    )]
                }
                sse::StreamItem::Status(view)
                    if matches!(
                        view.status,
                        RunStatus::WaitingInput | RunStatus::WaitingApproval
                    ) =>
                {
                    // The run waits for a human: for LangGraph clients it is interrupted, and
                    // its stream ends (a new run or `/v1` approve/signal continues it).
                    return (ended(finish(&s, &scope, &view.run_id, modes).await), true);
                }
                sse::StreamItem::Event(_) | sse::StreamItem::Status(_) => Vec::new(),
                sse::StreamItem::End(view) => {
                    return (ended(finish(&s, &scope, &view.run_id, modes).await), true);
                }
                sse::StreamItem::Error(m) => {
                    return (
                        vec![(
                            None,
                            event("error", &json!({"error": "StoreError", "message": m})),
                        )],
                        true,
                    );
                }
            };
            (events, false)
        }
    });
    let items = items.scan((false, on_disconnect), |(done, guard), (events, last)| {
        let next = if *done {
            None
        } else {
            *done = last;
            if last {
                guard.disarm();
            }
            Some(events)
        };
        futures::future::ready(next)
    });
    let head = head.into_iter().map(|(id, e)| (Some(id), e)).collect();
    futures::stream::once(futures::future::ready(head))
        .chain(items)
        .flat_map(futures::stream::iter)
        .filter(move |(id, _)| {
            futures::future::ready(!id.is_some_and(|id| after.is_some_and(|a| id <= a)))
        })
}

/// The values a client sees as a run starts: the thread's messages plus the new one.
async fn initial_values(
    s: &AppState,
    scope: &Scope,
    thread: Option<&str>,
    req: &RunCreate,
) -> ApiResult<Value> {
    let key = thread.map(|t| thread_key(scope, t)).transpose()?;
    let mut messages = match key.as_deref() {
        Some(t) if s.platform.threads().find(t).await?.is_some() => s
            .platform
            .threads()
            .values(t)
            .await?
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    messages.push(json!({"type": "human", "content": user_message(req)?}));
    Ok(json!({ "messages": messages }))
}

async fn stream_run(
    s: AppState,
    caller: &Caller,
    thread: Option<String>,
    body: &[u8],
) -> ApiResult<Response> {
    let req: RunCreate = optional_json(body)?;
    let scope = caller.scope();
    let initial = unprefixed(
        &scope,
        initial_values(&s, &scope, thread.as_deref(), &req).await,
    )?;
    let run = start(&s, caller, thread.as_deref(), &req).await?;
    let guard = CancelOnDisconnect::new(req.cancels_on_disconnect()?, &s, caller, &run.id);
    let sse = lg_stream(
        s,
        scope.clone(),
        &run,
        req.modes(),
        Some(initial),
        None,
        guard,
    );
    let mut res = with_location(&scope, &run, sse.into_response());
    // Where the SDKs reconnect (with `Last-Event-ID`) when the stream drops: the join stream
    // of the run, which streams the modes the run was started with.
    if let Some(v) = stream_location(&scope, &run) {
        res.headers_mut().insert(http::header::LOCATION, v);
    }
    Ok(res)
}

/// The path of the run's join stream: on its thread, or the Agent Protocol's for a run
/// without one.
fn stream_location(scope: &Scope, r: &RunRecord) -> Option<HeaderValue> {
    let path = match thread_out(scope, r) {
        Some(t) => format!("/threads/{t}/runs/{}/stream", r.id),
        None => format!("/runs/{}/stream", r.id),
    };
    HeaderValue::from_str(&path).ok()
}

/// The modes a join stream sends: its `stream_mode` query parameters (a mode, repeated for
/// several as the Python SDK sends them, or a JSON list of modes as the JavaScript SDK sends
/// them), or else those the run was started with (default `values`).
pub(crate) async fn join_modes(
    s: &AppState,
    r: &RunRecord,
    query: Option<&str>,
) -> ApiResult<Modes> {
    let mut asked: Vec<Value> = query_list(query, "stream_mode")?
        .into_iter()
        .map(Value::String)
        .collect();
    let mode = match asked.len() {
        0 => s
            .platform
            .runtime()
            .store()
            .doc_get(RUN_META, &r.id)
            .await?
            .and_then(|d| d.value.get("stream_mode").cloned()),
        1 => asked.pop(),
        _ => Some(Value::Array(asked)),
    };
    Modes::check(mode.as_ref())?;
    Ok(Modes::from_value(mode.as_ref()))
}

/// Start a run on a thread and stream it (SSE: `metadata`, `values`, `updates`, `end`).
#[utoipa::path(post, path = "/threads/{thread_id}/runs/stream", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")), request_body = RunCreate,
    responses((status = 200, description = "text/event-stream"), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn stream_thread_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(thread): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    stream_run(s, &caller, Some(thread), &body).await
}

/// Start a stateless run and stream it (SSE: `metadata`, `values`, `updates`, `end`).
#[utoipa::path(post, path = "/runs/stream", tag = "langgraph", request_body = RunCreate,
    responses((status = 200, description = "text/event-stream"), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub async fn stream_stateless_run(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: RunCreate = optional_json(&body)?;
    stream_run(s, &caller, req.thread_id, &body).await
}

/// Whether a join stream's query asks to cancel the run when the client goes away
/// (`cancel_on_disconnect=1`, as the JavaScript SDK sends it, or `true`), or a 400 problem.
pub(crate) fn cancel_on_disconnect(query: Option<&str>) -> ApiResult<bool> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or_default())
        .map_err(|e| Problem::bad_request(format!("the query string is not valid: {e}")))?;
    let mut cancel = false;
    for (_, v) in pairs.iter().filter(|(k, _)| k == "cancel_on_disconnect") {
        cancel = match v.as_str() {
            "1" | "true" | "True" => true,
            "0" | "false" | "False" => false,
            other => {
                return Err(Problem::bad_request(format!(
                    "`cancel_on_disconnect` must be 1/true or 0/false, not `{}`",
                    other.escape_debug()
                )));
            }
        };
    }
    Ok(cancel)
}

/// Which stream modes a join wants.
#[derive(Debug, Deserialize, IntoParams)]
#[non_exhaustive]
pub struct JoinStreamQuery {
    /// A stream mode (repeat the parameter for several), or a JSON list of them
    /// (`["values","updates"]`). Default: the modes the run was started with, or `values`.
    pub stream_mode: Option<String>,
    /// `1`/`true`: cancel the run when the client goes away before it ends.
    pub cancel_on_disconnect: Option<String>,
}

/// Stream a run of a thread that is already going (or finished), from the start or, with
/// `Last-Event-ID`, after that event: every later event exactly once, read from the store.
#[utoipa::path(get, path = "/threads/{thread_id}/runs/{run_id}/stream", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"), ("run_id" = String, Path, description = "run id"),
           JoinStreamQuery,
           ("Last-Event-ID" = Option<String>, Header, description = "the `id` of the last event the client has (`{seq}-{slot}`)")),
    responses((status = 200, description = "text/event-stream"), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
pub async fn join_stream(
    State(s): State<AppState>,
    caller: Caller,
    Path((thread, run_id)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let after = EventId::last(&headers)?;
    let scope = caller.scope();
    let r = run_on(&s, &scope, &thread, &run_id).await?;
    let modes = join_modes(&s, &r, query.as_deref()).await?;
    let guard =
        CancelOnDisconnect::new(cancel_on_disconnect(query.as_deref())?, &s, &caller, &r.id);
    Ok(lg_stream(s, scope, &r, modes, None, after, guard).into_response())
}

// --- a thread's stream ---------------------------------------------------------------------

/// The id of an event of a thread's stream, `{run_id}:{seq}-{slot}`: the run the event is
/// from and its [`EventId`] in that run's stream. Run ids are time-ordered (UUIDv7), so ids
/// say where in the thread's sequence of runs a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadEventId {
    run: String,
    event: EventId,
}

impl ThreadEventId {
    /// Read an id a client sends back: a run id (letters, digits and `-`), `:`, an
    /// [`EventId`].
    fn parse(s: &str) -> Option<Self> {
        let (run, event) = s.split_once(':')?;
        if run.is_empty() || !run.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return None;
        }
        Some(Self {
            run: run.to_owned(),
            event: EventId::parse(event)?,
        })
    }
}

/// How often a thread's stream looks for the thread's next run while none is going.
const THREAD_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Check a thread stream's `stream_mode` parameters: `run_modes` (the default: each run's
/// events in the modes it was started with) is what agentkit streams; `lifecycle` and
/// `state_update` are LangGraph modes agentkit does not have yet (422), anything else is not a
/// thread stream mode (422).
fn check_thread_modes(query: Option<&str>) -> ApiResult<()> {
    for mode in query_list(query, "stream_mode")? {
        match mode.as_str() {
            "run_modes" => {}
            "lifecycle" | "state_update" => {
                return Err(unsupported(format!(
                    "thread stream mode `{mode}` is not supported yet; use `run_modes` (each \
                     run's events in the modes it was started with)"
                )));
            }
            other => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    format!(
                        "`{}` is not a thread stream mode; use `run_modes`",
                        other.escape_debug()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// What a thread's stream does next.
enum ThreadStep {
    /// Stream this run.
    Run(Box<RunRecord>),
    /// No later run yet: look again after [`THREAD_POLL`].
    Idle,
    /// The thread was deleted: the stream ends.
    Gone,
}

/// The events of one run's stream, with their ids (see [`lg_events`]).
type RunEvents = futures::stream::BoxStream<'static, (Option<EventId>, Event)>;

/// A thread's stream: the run it is streaming, and where in the thread's runs it is.
struct ThreadFeed {
    s: AppState,
    caller: Caller,
    scope: Scope,
    /// The thread's stored id.
    key: String,
    /// The run being streamed, and its events.
    current: Option<(String, RunEvents)>,
    /// The last run streamed (or skipped): the next is the first run of the thread's index
    /// after it (all of them when `None`).
    cursor: Option<String>,
    /// A store read failed: the stream ends.
    failed: bool,
}

impl ThreadFeed {
    /// The thread's first run after the cursor, if there is one yet.
    async fn next_run(&mut self) -> ApiResult<ThreadStep> {
        let store = self.s.platform.runtime().store();
        let prefix = format!("{}/", self.key);
        loop {
            let after = self.cursor.as_ref().map(|c| format!("{prefix}{c}"));
            let docs = store
                .doc_list(crate::platform::THREAD_RUNS, &prefix, after.as_deref(), 16)
                .await?;
            if docs.is_empty() {
                return Ok(match self.s.platform.threads().find(&self.key).await? {
                    Some(_) => ThreadStep::Idle,
                    None => ThreadStep::Gone,
                });
            }
            for d in docs {
                let id = d.id.rsplit('/').next().unwrap_or_default().to_owned();
                match store.get_run(&id).await? {
                    Some(r) => return Ok(ThreadStep::Run(Box::new(r))),
                    // Deleted since it was indexed: skip it.
                    None => self.cursor = Some(id),
                }
            }
        }
    }

    /// Stream run `r` (after `after`, when resuming in it) in the modes it was started with.
    async fn start(&mut self, r: &RunRecord, after: Option<EventId>) -> ApiResult<()> {
        let modes = join_modes(&self.s, r, None).await?;
        let guard = CancelOnDisconnect::new(false, &self.s, &self.caller, &r.id);
        let events = lg_events(
            self.s.clone(),
            self.scope.clone(),
            r,
            modes,
            None,
            after,
            guard,
        );
        self.cursor = Some(r.id.clone());
        self.current = Some((r.id.clone(), events.boxed()));
        Ok(())
    }

    /// The next event of the thread's stream, its id `{run_id}:{seq}-{slot}`; `None` once the
    /// thread is gone, a store read failed, or the server is stopping.
    async fn next_event(&mut self) -> Option<Event> {
        let stopping = self.s.platform.stopping.clone();
        loop {
            if self.failed || stopping.is_cancelled() {
                return None;
            }
            if let Some((run_id, events)) = &mut self.current {
                match events.next().await {
                    Some((Some(id), e)) => return Some(e.id(format!("{run_id}:{id}"))),
                    Some((None, e)) => return Some(e),
                    None => {
                        self.current = None;
                        continue;
                    }
                }
            }
            let step = match self.next_run().await {
                Ok(step) => step,
                Err(p) => {
                    self.failed = true;
                    return Some(event(
                        "error",
                        &json!({"error": "StoreError", "message": p.detail}),
                    ));
                }
            };
            match step {
                ThreadStep::Run(r) => {
                    if let Err(p) = self.start(&r, None).await {
                        self.failed = true;
                        return Some(event(
                            "error",
                            &json!({"error": "StoreError", "message": p.detail}),
                        ));
                    }
                }
                ThreadStep::Idle => {
                    tokio::select! {
                        () = tokio::time::sleep(THREAD_POLL) => {}
                        () = stopping.cancelled() => return None,
                    }
                }
                ThreadStep::Gone => return None,
            }
        }
    }
}

/// Stream a thread: every run on it as it happens, one after the other, each with the events
/// of its own stream (`metadata` … `end` or `error`) in the modes it was started with
/// (`stream_mode=run_modes`, the default; `lifecycle` and `state_update` are not supported
/// yet), read from the store, so any server process can serve it. Without `Last-Event-ID` the
/// stream starts with the thread's runs that have not ended (each from its start); with it
/// (`{run_id}:{seq}-{slot}`, an `id` of this stream) it sends every later event exactly once:
/// the rest of that run, then the runs after it. It stays open, waiting for the thread's next
/// run, until the client leaves, the thread is deleted or the server stops.
#[utoipa::path(get, path = "/threads/{thread_id}/stream", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id"),
           ("stream_mode" = Option<String>, Query, description = "`run_modes` (default)"),
           ("Last-Event-ID" = Option<String>, Header, description = "the `id` of the last event the client has (`{run_id}:{seq}-{slot}`)")),
    responses((status = 200, description = "text/event-stream"), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn join_thread_stream(
    State(s): State<AppState>,
    caller: Caller,
    Path(thread): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let after = sse::last_event_id_as(
        &headers,
        "`{run_id}:{seq}-{slot}`, as `<run id>:12-2`",
        ThreadEventId::parse,
    )?;
    check_thread_modes(query.as_deref())?;
    let scope = caller.scope();
    let key = unprefixed(&scope, thread_in(&s, &scope, &thread).await)?.thread_id;
    let mut feed = ThreadFeed {
        s: s.clone(),
        caller: caller.clone(),
        scope: scope.clone(),
        key: key.clone(),
        current: None,
        cursor: None,
        failed: false,
    };
    match after {
        Some(a) => {
            // The run of the id: go on in it (if it is still there), then after it.
            match s.platform.runtime().store().get_run(&a.run).await? {
                Some(r) if scope.contains(&r.target) && thread_of(&r) == Some(key.as_str()) => {
                    feed.start(&r, Some(a.event)).await?;
                }
                // The workspace's run of another thread (another workspace's run is taken as
                // one that does not exist: its existence is not the caller's to learn).
                Some(r) if scope.contains(&r.target) => {
                    return Err(Problem::bad_request(format!(
                        "`Last-Event-ID` names run {}, which is not a run of thread {thread}; \
                         send the `id` of an event of this stream",
                        a.run
                    )));
                }
                // Deleted (or never this workspace's): go on after it.
                _ => feed.cursor = Some(a.run),
            }
        }
        None => {
            // The newest runs that have not ended, from the oldest of them; else only the
            // runs to come.
            let runs = s
                .platform
                .thread_runs(&key, 64)
                .await
                .map_err(super::v1::scoped(&scope))?;
            let going = runs.iter().take_while(|r| !r.status.is_terminal()).count();
            let before = if going == 0 {
                runs.first()
            } else {
                runs.get(going)
            };
            feed.cursor = before.map(|r| r.id.clone());
        }
    }
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        feed.next_event()
            .await
            .map(|e| (Ok::<_, Infallible>(e), feed))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

// --- store items ---------------------------------------------------------------------------

/// An item of the store.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct Item {
    /// Its namespace (a path of labels).
    pub namespace: Vec<String>,
    /// Its key in the namespace.
    pub key: String,
    /// Its value (an object).
    #[schema(value_type = Object)]
    pub value: Value,
    /// When it was created (ISO 8601).
    pub created_at: String,
    /// When it was last written (ISO 8601).
    pub updated_at: String,
}

fn check_namespace(ns: &[String]) -> Result<(), Problem> {
    if ns.is_empty() {
        return Err(Problem::bad_request(
            "`namespace` must have at least one label",
        ));
    }
    for label in ns {
        if label.is_empty()
            || label.contains('.')
            || label.contains('\u{1f}')
            || label.contains(crate::tenancy::SEP)
        {
            return Err(Problem::bad_request(format!(
                "namespace label `{}` is not valid: labels are non-empty and contain no `.` \
                 or `~`",
                label.escape_debug()
            )));
        }
    }
    Ok(())
}

/// The stored id of item `key` in the namespace `ns` of `scope`'s workspace.
fn item_id(scope: &Scope, ns: &[String], key: &str) -> Result<String, Problem> {
    check_namespace(ns)?;
    if key.is_empty() || key.contains('\u{1f}') {
        return Err(Problem::bad_request("`key` must be a non-empty string"));
    }
    Ok(format!("{}{}\u{1f}{key}", scope.prefix(), ns.join(".")))
}

/// Whether the stored item id is an item of `scope`'s workspace: its namespace part is
/// the workspace's prefix and labels without `~`.
fn item_in(scope: &Scope, id: &str) -> bool {
    id.split('\u{1f}')
        .next()
        .is_some_and(|ns| scope.contains(ns))
}

fn item_of(doc: agentkit_runtime::Doc) -> Option<Item> {
    let namespace = doc
        .value
        .get("namespace")?
        .as_array()?
        .iter()
        .map(|l| l.as_str().map(str::to_owned))
        .collect::<Option<Vec<_>>>()?;
    Some(Item {
        namespace,
        key: doc.value.get("key")?.as_str()?.to_owned(),
        value: doc.value.get("value").cloned().unwrap_or(json!({})),
        created_at: iso(doc.created_at),
        updated_at: iso(doc.updated_at),
    })
}

/// An item to store.
#[derive(Debug, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct PutItem {
    /// Its namespace.
    pub namespace: Vec<String>,
    /// Its key.
    pub key: String,
    /// Its value (an object).
    #[schema(value_type = Object)]
    pub value: Map<String, Value>,
    /// Not supported unless `false` or absent (422).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub index: Option<Value>,
    /// Not supported (422).
    #[serde(default)]
    pub ttl: Option<f64>,
}

/// Store an item (replacing the one under the same namespace and key).
#[utoipa::path(put, path = "/store/items", tag = "store", request_body = PutItem,
    responses((status = 204), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub async fn put_item(
    State(s): State<AppState>,
    caller: Caller,
    super::Json(req): super::Json<PutItem>,
) -> ApiResult<StatusCode> {
    if req
        .index
        .as_ref()
        .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
    {
        return Err(unsupported(
            "semantic `index`ing of store items is not supported yet; send `index: false`",
        ));
    }
    if req.ttl.is_some() {
        return Err(unsupported("store item `ttl` is not supported yet"));
    }
    let id = item_id(&caller.scope(), &req.namespace, &req.key)?;
    s.platform
        .runtime()
        .store()
        .doc_put(
            STORE_ITEMS,
            &id,
            json!({"namespace": req.namespace, "key": req.key, "value": req.value}),
            Expect::Any,
        )
        .await?;
    audit_item(&s, &caller, "store.put", &req.namespace, &req.key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Record a change of the caller's store item `key` in `namespace` in its workspace's audit
/// log (resource `<namespace>/<key>`): never its value.
async fn audit_item(
    s: &AppState,
    caller: &Caller,
    action: &str,
    namespace: &[String],
    key: &str,
) -> ApiResult<()> {
    s.audit_change(
        caller,
        &caller.workspace,
        action,
        &format!("{}/{key}", namespace.join(".")),
        json!({"namespace": namespace, "key": key}),
    )
    .await
}

/// Which item to read.
#[derive(Debug, Deserialize, IntoParams)]
#[non_exhaustive]
pub struct ItemQuery {
    /// The namespace, its labels joined with `.`.
    pub namespace: Option<String>,
    /// The key.
    pub key: String,
}

/// One item.
#[utoipa::path(get, path = "/store/items", tag = "store", params(ItemQuery),
    responses((status = 200, body = Item), (status = 404, body = Problem)))]
pub async fn get_item(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ItemQuery>,
) -> ApiResult<super::Json<Item>> {
    let ns: Vec<String> = q
        .namespace
        .as_deref()
        .unwrap_or("")
        .split('.')
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let id = item_id(&caller.scope(), &ns, &q.key)?;
    s.platform
        .runtime()
        .store()
        .doc_get(STORE_ITEMS, &id)
        .await?
        .and_then(item_of)
        .map(super::Json)
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no item `{}` in namespace `{}`",
                q.key.escape_debug(),
                ns.join(".")
            ))
        })
}

/// Which item to delete.
#[derive(Debug, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct DeleteItem {
    /// Its namespace.
    pub namespace: Vec<String>,
    /// Its key.
    pub key: String,
}

/// Delete an item (204 whether or not it existed).
#[utoipa::path(delete, path = "/store/items", tag = "store", request_body = DeleteItem,
    responses((status = 204), (status = 400, body = Problem)))]
pub async fn delete_item(
    State(s): State<AppState>,
    caller: Caller,
    super::Json(req): super::Json<DeleteItem>,
) -> ApiResult<StatusCode> {
    let id = item_id(&caller.scope(), &req.namespace, &req.key)?;
    let deleted = s
        .platform
        .runtime()
        .store()
        .doc_delete(STORE_ITEMS, &id, Expect::Any)
        .await?;
    // Deleting what is not there changes nothing.
    if deleted {
        audit_item(&s, &caller, "store.delete", &req.namespace, &req.key).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Every item of `scope`'s workspace under a namespace prefix (at most 10,000 scanned), in
/// key order.
async fn items_under(s: &AppState, scope: &Scope, prefix: &[String]) -> ApiResult<Vec<Item>> {
    if !prefix.is_empty() {
        check_namespace(prefix)?;
    }
    let store = s.platform.runtime().store();
    let id_prefix = format!("{}{}", scope.prefix(), prefix.join("."));
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let mut scanned = 0usize;
    while scanned < 10_000 {
        let page = store
            .doc_list(STORE_ITEMS, &id_prefix, after.as_deref(), 500)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        scanned += page.len();
        out.extend(
            page.into_iter()
                .filter(|d| item_in(scope, &d.id))
                .filter_map(item_of)
                .filter(|i| i.namespace.starts_with(prefix)),
        );
    }
    Ok(out)
}

/// Which items to find.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct SearchItems {
    /// Items whose namespace starts with these labels.
    #[serde(default)]
    pub namespace_prefix: Vec<String>,
    /// Only items whose value has these keys and values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Map<String, Value>>,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Not supported (422): semantic search.
    #[serde(default)]
    pub query: Option<String>,
}

/// `{"items": [...]}`.
#[derive(Debug, Serialize, ToSchema)]
#[non_exhaustive]
pub struct ItemsPage {
    /// The items.
    pub items: Vec<Item>,
}

/// Find items by namespace prefix and value filter.
#[utoipa::path(post, path = "/store/items/search", tag = "store", request_body = SearchItems,
    responses((status = 200, body = ItemsPage), (status = 422, body = Problem)))]
pub async fn search_items(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<ItemsPage>> {
    let q: SearchItems = optional_json(&body)?;
    if q.query.as_deref().is_some_and(|t| !t.is_empty()) {
        return Err(unsupported(
            "semantic `query` search of store items is not supported yet; use `filter`",
        ));
    }
    let filter = q.filter.unwrap_or_default();
    let items = items_under(&s, &caller.scope(), &q.namespace_prefix)
        .await?
        .into_iter()
        .filter(|i| filter.iter().all(|(k, v)| i.value.get(k) == Some(v)))
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(10).min(1000))
        .collect();
    Ok(super::Json(ItemsPage { items }))
}

/// Which namespaces to list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct ListNamespaces {
    /// Namespaces starting with these labels.
    #[serde(default)]
    pub prefix: Vec<String>,
    /// Namespaces ending with these labels.
    #[serde(default)]
    pub suffix: Vec<String>,
    /// Cut namespaces to this many labels.
    #[serde(default)]
    pub max_depth: Option<usize>,
    /// At most this many (default 100).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<usize>,
}

/// `{"namespaces": [[...], ...]}`.
#[derive(Debug, Serialize, ToSchema)]
#[non_exhaustive]
pub struct NamespacesPage {
    /// The namespaces, sorted.
    pub namespaces: Vec<Vec<String>>,
}

/// The namespaces that hold items.
#[utoipa::path(post, path = "/store/namespaces", tag = "store", request_body = ListNamespaces,
    responses((status = 200, body = NamespacesPage)))]
pub async fn list_namespaces(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<NamespacesPage>> {
    let q: ListNamespaces = optional_json(&body)?;
    let mut set = BTreeSet::new();
    for i in items_under(&s, &caller.scope(), &q.prefix).await? {
        if !i.namespace.ends_with(&q.suffix) {
            continue;
        }
        let mut ns = i.namespace;
        if let Some(d) = q.max_depth {
            ns.truncate(d);
        }
        set.insert(ns);
    }
    Ok(super::Json(NamespacesPage {
        namespaces: set
            .into_iter()
            .skip(q.offset.unwrap_or(0))
            .take(q.limit.unwrap_or(100).min(1000))
            .collect(),
    }))
}

// --- crons ---------------------------------------------------------------------------------

/// A cron as LangGraph clients read it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct CronView {
    /// The cron id.
    pub cron_id: String,
    /// The agent's name.
    pub assistant_id: String,
    /// The thread its runs continue (none: stateless runs).
    pub thread_id: Option<String>,
    /// Always none: agentkit keeps no thread for stateless runs.
    pub on_run_completed: Option<String>,
    /// No fires after this time (ISO 8601).
    pub end_time: Option<String>,
    /// The cron expression (5 fields, or 6 with seconds).
    pub schedule: String,
    /// The IANA time zone the expression is read in.
    pub timezone: Option<String>,
    /// When it was created (ISO 8601).
    pub created_at: String,
    /// When it last changed (ISO 8601).
    pub updated_at: String,
    /// The request it was created from.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Always none.
    pub user_id: Option<String>,
    /// Its next fire (ISO 8601), if enabled.
    pub next_run_date: Option<String>,
    /// The client's metadata.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Whether it fires.
    pub enabled: bool,
}

impl CronView {
    /// The cron as `scope`'s workspace sees it (its agent and thread named as it names
    /// them).
    #[must_use]
    pub fn in_scope(c: Cron, scope: &Scope) -> Self {
        let next = c.next_run(agentkit_runtime::model::now_ms());
        let external = |n: &str| scope.external(n).unwrap_or(n).to_owned();
        Self {
            next_run_date: next.map(iso),
            assistant_id: external(&c.agent),
            thread_id: c.thread_id.as_deref().map(external),
            cron_id: c.cron_id,
            on_run_completed: None,
            end_time: c.end_time.map(iso),
            schedule: c.schedule,
            timezone: Some(c.timezone),
            created_at: iso(c.created_at),
            updated_at: iso(c.updated_at),
            payload: c.payload,
            user_id: None,
            metadata: c.metadata,
            enabled: c.enabled,
        }
    }
}

/// The cron fields of a cron request (the run fields are those of [`RunCreate`]).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct CronFields {
    /// A cron expression (5 fields, or 6 with seconds); required to create.
    #[serde(default)]
    pub schedule: Option<String>,
    /// No fires after this time (ISO 8601; `null` clears it).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub end_time: Option<Value>,
    /// Whether it fires (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The IANA time zone the expression is read in (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The agent's name.
    #[serde(default)]
    pub assistant_id: Option<String>,
    /// `{"messages": [...]}`: the user message of each run.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Kept with the cron.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// `reject` or `interrupt`: what a fire does when the thread is busy.
    #[serde(default)]
    pub multitask_strategy: Option<String>,
}

/// An ISO 8601 time (with an offset, or UTC without one) as ms since the epoch.
fn parse_time(v: &Value) -> Result<Option<i64>, Problem> {
    let Some(s) = v.as_str() else {
        return if v.is_null() {
            Ok(None)
        } else {
            Err(Problem::bad_request(
                "`end_time` must be an ISO 8601 time or null",
            ))
        };
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.timestamp_millis()));
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|t| Some(t.and_utc().timestamp_millis()))
        .map_err(|_| {
            Problem::bad_request(format!(
                "`end_time` `{}` is not an ISO 8601 time",
                s.escape_debug()
            ))
        })
}

fn crons(s: &AppState) -> Crons {
    Crons::new(std::sync::Arc::clone(s.platform.runtime().store()))
}

async fn create_cron_on(
    s: &AppState,
    caller: &Caller,
    thread: Option<String>,
    body: &[u8],
) -> ApiResult<super::Json<CronView>> {
    let scope = caller.scope();
    unprefixed(
        &scope,
        create_cron_in(s, caller, &scope, thread, body).await,
    )
}

async fn create_cron_in(
    s: &AppState,
    caller: &Caller,
    scope: &Scope,
    thread: Option<String>,
    body: &[u8],
) -> ApiResult<super::Json<CronView>> {
    let req: RunCreate = optional_json(body)?;
    let fields: CronFields = optional_json(body)?;
    req.check_supported()?;
    let agent = req.agent()?.to_owned();
    entry_of(s, scope, &agent).await?;
    let agent = scope
        .internal(&agent)
        .ok_or_else(|| Problem::not_found(format!("no assistant `{}`", agent.escape_debug())))?;
    let message = user_message(&req)?;
    let policy = req.policy()?;
    let thread = match &thread {
        Some(t) => Some(thread_for_run(s, scope, t, &req).await?.thread_id),
        None => None,
    };
    let schedule = fields.schedule.ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "a cron needs `schedule`: a cron expression such as `0 9 * * *`",
        )
    })?;
    let mut cron = Cron::new(agent, schedule, message)?;
    cron.thread_id = thread;
    cron.timezone = fields.timezone.unwrap_or_else(|| "UTC".into());
    cron.end_time = match &fields.end_time {
        Some(v) => parse_time(v)?,
        None => None,
    };
    cron.enabled = fields.enabled.unwrap_or(true);
    cron.if_busy = policy;
    cron.metadata = req.metadata.clone().unwrap_or_default();
    cron.payload = serde_json::from_slice(body).unwrap_or(Value::Null);
    cron.principal = Some(caller.principal());
    let created = CronView::in_scope(crons(s).create(cron).await?, scope);
    audit_cron(s, caller, "crons.create", &created).await?;
    Ok(super::Json(created))
}

/// Create a cron that runs an agent on a thread.
#[utoipa::path(post, path = "/threads/{thread_id}/runs/crons", tag = "langgraph",
    params(("thread_id" = String, Path, description = "thread id")), request_body = CronFields,
    responses((status = 200, body = CronView), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create_thread_cron(
    State(s): State<AppState>,
    caller: Caller,
    Path(thread): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<CronView>> {
    create_cron_on(&s, &caller, Some(thread), &body).await
}

/// Create a cron of stateless runs.
#[utoipa::path(post, path = "/runs/crons", tag = "langgraph", request_body = CronFields,
    responses((status = 200, body = CronView), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub async fn create_cron(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<CronView>> {
    create_cron_on(&s, &caller, None, &body).await
}

/// Change a cron: its schedule, time zone, end time, enabled flag, message or metadata
/// (merged). Fires are evaluated from now on.
#[utoipa::path(patch, path = "/runs/crons/{cron_id}", tag = "langgraph",
    params(("cron_id" = String, Path, description = "cron id")), request_body = CronFields,
    responses((status = 200, body = CronView), (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub async fn update_cron(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<CronView>> {
    let scope = caller.scope();
    let req: RunCreate = optional_json(&body)?;
    let fields: CronFields = optional_json(&body)?;
    let raw: Map<String, Value> = optional_json(&body)?;
    req.check_supported()?;
    let message = match &req.input {
        Some(v) if !v.is_null() => Some(user_message(&req)?),
        _ => None,
    };
    let end_time = match raw.get("end_time") {
        Some(v) => Some(parse_time(v)?),
        None => None,
    };
    let updated = crons(&s)
        .update_in(&scope, &id, |c| {
            if let Some(sc) = &fields.schedule {
                c.schedule.clone_from(sc);
            }
            if let Some(tz) = &fields.timezone {
                c.timezone.clone_from(tz);
            }
            if let Some(e) = end_time {
                c.end_time = e;
            }
            if let Some(en) = fields.enabled {
                c.enabled = en;
            }
            if let Some(m) = &message {
                c.message.clone_from(m);
            }
            if let Some(md) = &req.metadata {
                c.metadata.extend(md.clone());
            }
            Ok(())
        })
        .await
        .map_err(super::v1::scoped(&scope))?;
    let updated = CronView::in_scope(updated, &scope);
    audit_cron(&s, &caller, "crons.update", &updated).await?;
    Ok(super::Json(updated))
}

/// Record a change of cron `c` (as the caller sees it) in the caller's audit log.
async fn audit_cron(s: &AppState, caller: &Caller, action: &str, c: &CronView) -> ApiResult<()> {
    s.audit_change(
        caller,
        &caller.workspace,
        action,
        &c.cron_id,
        json!({"assistant_id": c.assistant_id, "thread_id": c.thread_id, "schedule": c.schedule}),
    )
    .await
}

/// Delete a cron (its runs stay).
#[utoipa::path(delete, path = "/runs/crons/{cron_id}", tag = "langgraph",
    params(("cron_id" = String, Path, description = "cron id")),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_cron(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    crons(&s).delete_in(&caller.scope(), &id).await?;
    s.audit_change(&caller, &caller.workspace, "crons.delete", &id, json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which crons to list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct CronSearch {
    /// Only crons of this agent.
    #[serde(default)]
    pub assistant_id: Option<String>,
    /// Only crons on this thread.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Only enabled (or disabled) crons.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Only crons whose metadata contains these keys and values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Only these fields of each result (LangGraph's `select`; unset: all). A name that is
    /// not a field is a 422 listing them.
    #[serde(default)]
    pub select: Option<Vec<String>>,
}

/// The fields of a [`CronView`], for `select`.
const CRON_FIELDS: &[&str] = &[
    "cron_id",
    "assistant_id",
    "thread_id",
    "on_run_completed",
    "end_time",
    "schedule",
    "timezone",
    "created_at",
    "updated_at",
    "payload",
    "user_id",
    "next_run_date",
    "metadata",
    "enabled",
];

async fn matching_crons(s: &AppState, scope: &Scope, q: &CronSearch) -> ApiResult<Vec<Cron>> {
    let metadata = q.metadata.clone().unwrap_or_default();
    // Names as stored; a name that cannot be the caller's matches nothing.
    let agent = q.assistant_id.as_deref().map(|a| scope.internal(a));
    let thread = q.thread_id.as_deref().map(|t| scope.internal(t));
    Ok(crons(s)
        .list_in(scope)
        .await?
        .into_iter()
        .filter(|c| agent.as_ref().is_none_or(|a| a.as_ref() == Some(&c.agent)))
        .filter(|c| {
            thread
                .as_ref()
                .is_none_or(|t| t.is_some() && c.thread_id == *t)
        })
        .filter(|c| q.enabled.is_none_or(|e| e == c.enabled))
        .filter(|c| metadata.iter().all(|(k, v)| c.metadata.get(k) == Some(v)))
        .collect())
}

/// Search crons (oldest first).
#[utoipa::path(post, path = "/runs/crons/search", tag = "langgraph", request_body = CronSearch,
    responses((status = 200, body = [CronView])))]
pub async fn search_crons(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<Vec<Value>>> {
    let q: CronSearch = optional_json(&body)?;
    let scope = caller.scope();
    let page = matching_crons(&s, &scope, &q)
        .await?
        .into_iter()
        .skip(q.offset.unwrap_or(0))
        .take(q.limit.unwrap_or(10).min(1000))
        .map(|c| CronView::in_scope(c, &scope))
        .collect();
    Ok(super::Json(select_fields(
        page,
        q.select.as_deref(),
        CRON_FIELDS,
    )?))
}

/// Count crons matching a search.
#[utoipa::path(post, path = "/runs/crons/count", tag = "langgraph", request_body = CronSearch,
    responses((status = 200, body = usize)))]
pub async fn count_crons(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<super::Json<usize>> {
    let q: CronSearch = optional_json(&body)?;
    Ok(super::Json(
        matching_crons(&s, &caller.scope(), &q).await?.len(),
    ))
}
