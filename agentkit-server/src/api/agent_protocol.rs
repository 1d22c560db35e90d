//! The Agent Protocol (`langchain-ai/agent-protocol`) routes whose paths differ from the
//! LangGraph API's: agents (search, get, schemas), top-level runs (`/runs/search`,
//! `/runs/{run_id}`, its `wait`, `stream` and `cancel`) and `GET /threads/{id}/history`.
//! Threads, `/runs`, `/runs/wait`, `/runs/stream` and store items are shared with
//! [`super::langgraph`]; a run body that names its agent `agent_id` (not `assistant_id`)
//! gets Agent Protocol answers (`{"run", "values", "messages"}` from `/runs/wait`).
//!
//! Like the LangGraph routes, every route serves the caller's workspace: its agents, its
//! runs and threads; another workspace's run id answers 404 like one that does not exist.

use agentkit_runtime::RunQuery;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::langgraph::{
    self, CancelQuery, LgRun, ThreadState, entry_of, messages_schema, run_view,
};
use super::v1::optional_json;
use super::{ApiResult, AppState, Json, Path, Problem, Query};
use crate::registry::Entry;
use crate::tenancy::Caller;

/// The authenticated Agent Protocol routes not shared with the LangGraph API.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/agents/search", post(search_agents))
        .route("/agents/{agent_id}", get(get_agent))
        .route("/agents/{agent_id}/schemas", get(agent_schemas))
        .route("/runs/search", post(search_runs))
        .route("/runs/{run_id}", get(get_run))
        .route("/runs/{run_id}/wait", get(wait_run))
        .route("/runs/{run_id}/stream", get(stream_run))
        .route("/runs/{run_id}/cancel", post(cancel_run))
}

/// An agent (a registry entry) as the Agent Protocol describes it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[non_exhaustive]
pub struct Agent {
    /// The agent's name.
    pub agent_id: String,
    /// The agent's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// `kind`, `version` (latest) and `labels`.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// `ap.io.messages` and `ap.io.streaming`: true.
    #[schema(value_type = Object)]
    pub capabilities: Value,
}

impl From<Entry> for Agent {
    fn from(e: Entry) -> Self {
        Self {
            agent_id: e.name.clone(),
            metadata: json!({"kind": e.kind, "version": e.latest, "labels": e.labels}),
            name: e.name,
            description: e.description,
            capabilities: json!({"ap.io.messages": true, "ap.io.streaming": true}),
        }
    }
}

/// Which agents to list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct AgentSearch {
    /// Only this name.
    #[serde(default)]
    pub name: Option<String>,
    /// Only agents whose metadata contains these keys and values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<usize>,
}

/// Search agents.
#[utoipa::path(post, path = "/agents/search", tag = "agent-protocol", request_body = AgentSearch,
    responses((status = 200, body = [Agent]), (status = 422, body = Problem)))]
pub async fn search_agents(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<Json<Vec<Agent>>> {
    let q: AgentSearch = optional_json(&body)?;
    let metadata = q.metadata.unwrap_or_default();
    Ok(Json(
        langgraph::entries_in(&s, &caller.scope())
            .await?
            .into_iter()
            .map(Agent::from)
            .filter(|a| q.name.as_ref().is_none_or(|n| *n == a.name))
            .filter(|a| metadata.iter().all(|(k, v)| a.metadata.get(k) == Some(v)))
            .skip(q.offset.unwrap_or(0))
            .take(q.limit.unwrap_or(10).min(1000))
            .collect(),
    ))
}

/// One agent.
#[utoipa::path(get, path = "/agents/{agent_id}", tag = "agent-protocol",
    params(("agent_id" = String, Path, description = "the agent's name")),
    responses((status = 200, body = Agent), (status = 404, body = Problem)))]
pub async fn get_agent(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(entry_of(&s, &caller.scope(), &id).await?.into()))
}

/// An agent's schemas.
#[derive(Debug, Serialize, ToSchema)]
#[non_exhaustive]
pub struct AgentSchema {
    /// The agent's name.
    pub agent_id: String,
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
}

/// The input, output and state schemas of an agent (messages in, messages kept).
#[utoipa::path(get, path = "/agents/{agent_id}/schemas", tag = "agent-protocol",
    params(("agent_id" = String, Path, description = "the agent's name")),
    responses((status = 200, body = AgentSchema), (status = 404, body = Problem)))]
pub async fn agent_schemas(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentSchema>> {
    let e = entry_of(&s, &caller.scope(), &id).await?;
    Ok(Json(AgentSchema {
        agent_id: e.name,
        input_schema: messages_schema(),
        output_schema: messages_schema(),
        state_schema: messages_schema(),
        config_schema: None,
    }))
}

/// Which states of a thread to list.
#[derive(Debug, Deserialize, IntoParams)]
#[non_exhaustive]
pub struct HistoryQuery {
    /// At most this many (default 10).
    pub limit: Option<usize>,
    /// Only states before this checkpoint id.
    pub before: Option<String>,
}

/// A thread's states after each turn, newest first.
#[utoipa::path(get, path = "/threads/{thread_id}/history", tag = "agent-protocol",
    params(("thread_id" = String, Path, description = "thread id"), HistoryQuery),
    responses((status = 200, body = [ThreadState]), (status = 404, body = Problem)))]
pub async fn thread_history(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<Vec<ThreadState>>> {
    let before = q.before.map(Value::String);
    Ok(Json(
        langgraph::history_page(
            &s,
            &caller.scope(),
            &id,
            q.limit.unwrap_or(10).min(1000),
            before.as_ref(),
            None,
        )
        .await?,
    ))
}

/// Which runs to list.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[non_exhaustive]
pub struct RunSearch {
    /// Only runs on this thread.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Only runs of this agent.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Only runs in this status (`pending`, `running`, `error`, `success`, `timeout`,
    /// `interrupted`).
    #[serde(default)]
    pub status: Option<String>,
    /// Only runs whose metadata contains these keys and values.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// At most this many (default 10).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Skip this many.
    #[serde(default)]
    pub offset: Option<usize>,
}

/// Search runs, newest first (the 10,000 newest runs of the thread, or of the workspace, are
/// considered: the filters and `offset` apply within them).
#[utoipa::path(post, path = "/runs/search", tag = "agent-protocol", request_body = RunSearch,
    responses((status = 200, body = [LgRun]), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub async fn search_runs(
    State(s): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<Json<Vec<LgRun>>> {
    let q: RunSearch = optional_json(&body)?;
    let scope = caller.scope();
    let limit = q.limit.unwrap_or(10).min(1000);
    let offset = q.offset.unwrap_or(0);
    let runs = match &q.thread_id {
        Some(t) => {
            let key = langgraph::thread_key(&scope, t)?;
            s.platform
                .thread_runs(&key, langgraph::RUNS_CONSIDERED)
                .await
                .map_err(super::v1::scoped(&scope))?
        }
        None => {
            let mut rq = RunQuery::new().with_page(langgraph::RUNS_CONSIDERED, 0);
            if let Some(a) = &q.agent_id {
                rq = rq.with_target(a.clone());
            }
            s.platform.runs_in(&scope, &rq).await?
        }
    };
    let metadata = q.metadata.unwrap_or_default();
    let mut out = Vec::new();
    let mut skipped = 0usize;
    for r in runs {
        if out.len() >= limit {
            break;
        }
        if q.agent_id
            .as_deref()
            .is_some_and(|a| scope.external(&r.target) != Some(a))
            || q.status
                .as_deref()
                .is_some_and(|st| langgraph::run_status(&r) != st)
        {
            continue;
        }
        let view = run_view(&s, &scope, r).await?;
        if !metadata
            .iter()
            .all(|(k, v)| view.metadata.get(k) == Some(v))
        {
            continue;
        }
        if skipped < offset {
            skipped += 1;
            continue;
        }
        out.push(view);
    }
    Ok(Json(out))
}

/// One run.
#[utoipa::path(get, path = "/runs/{run_id}", tag = "agent-protocol",
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = LgRun), (status = 404, body = Problem)))]
pub async fn get_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Json<LgRun>> {
    let scope = caller.scope();
    let r = s.platform.run_in(&scope, &run_id).await?;
    Ok(Json(run_view(&s, &scope, r).await?))
}

/// Wait for a run to finish: `{"run", "values", "messages"}`.
#[utoipa::path(get, path = "/runs/{run_id}/wait", tag = "agent-protocol",
    params(("run_id" = String, Path, description = "run id")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
pub async fn wait_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
) -> ApiResult<Response> {
    let scope = caller.scope();
    let r = s.platform.run_in(&scope, &run_id).await?;
    langgraph::wait_answer(&s, &scope, &r, true).await
}

/// Which stream modes to send.
#[derive(Debug, Deserialize, IntoParams)]
#[non_exhaustive]
pub struct StreamQuery {
    /// A stream mode; repeat the parameter for several. Default: the modes the run was
    /// started with, or `values`.
    pub stream_mode: Option<String>,
}

/// Stream a run that is already going (or finished), from the start or, with
/// `Last-Event-ID`, after that event (see the LangGraph join stream).
#[utoipa::path(get, path = "/runs/{run_id}/stream", tag = "agent-protocol",
    params(("run_id" = String, Path, description = "run id"), StreamQuery,
           ("Last-Event-ID" = Option<String>, Header, description = "the `id` of the last event the client has (`{seq}-{slot}`)")),
    responses((status = 200, description = "text/event-stream"), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
pub async fn stream_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let after = langgraph::EventId::last(&headers)?;
    let scope = caller.scope();
    let r = s.platform.run_in(&scope, &run_id).await?;
    let modes = langgraph::join_modes(&s, &r, query.as_deref()).await?;
    let cancel = langgraph::cancel_on_disconnect(query.as_deref())?;
    let guard = langgraph::CancelOnDisconnect::new(cancel, &s, &caller, &r.id);
    Ok(langgraph::lg_stream(s, scope, &r, modes, None, after, guard).into_response())
}

/// Cancel a run (409 if it already finished).
#[utoipa::path(post, path = "/runs/{run_id}/cancel", tag = "agent-protocol",
    params(("run_id" = String, Path, description = "run id"), CancelQuery),
    responses((status = 202), (status = 200, body = LgRun), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn cancel_run(
    State(s): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    Query(q): Query<CancelQuery>,
) -> ApiResult<Response> {
    let r = s.platform.run_in(&caller.scope(), &run_id).await?;
    langgraph::cancel(&s, &caller, &r, &q).await
}
