//! The GatewayOps routes: `/v1/execute` (batch), `/v1/execute/stream` (SSE),
//! `/v1/agents/connect` + the WebSocket at `/v1/agents/{connection_id}`, `/v1/mcp/tools`
//! (OpenAI function format) and `/v1/safety/analyze`. See [`crate::gatewayops`].

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::{ApiResult, AppState, Json, Path, Problem};
use crate::gatewayops::platforms::{Compiled, PLATFORM_HEADER};
use crate::gatewayops::safety::Analysis;
use crate::gatewayops::{
    Call, CallEnv, CallProgress, CallResult, CallStatus, Cut, GatewayOps, ProgressFn, call_timeout,
    idempotency, tool_name, trace_id,
};
use crate::platform::Platform;
use crate::servers::McpFailure;
use crate::tenancy::{Caller, Role};

/// The gateway routes, authenticated, with CORS for the registered platforms' origins.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let router = Router::new()
        .route("/v1/execute", post(execute))
        .route("/v1/execute/stream", post(execute_stream))
        .route("/v1/agents/connect", post(connect))
        .route("/v1/mcp/tools", get(list_tools))
        .route("/v1/safety/analyze", post(analyze))
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(super::auth::AuthLayer::new(state.clone()))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    platform_limit,
                )),
        );
    let origins: Vec<http::HeaderValue> = state
        .gatewayops
        .platforms()
        .iter()
        .flat_map(|p| p.origins.iter())
        .filter_map(|o| http::HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return router;
    }
    router.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([http::Method::GET, http::Method::POST])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                http::HeaderName::from_static("x-api-key"),
                http::HeaderName::from_static(PLATFORM_HEADER),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The caller's registered platform (`x-agentkit-platform`); 400 for an unknown one.
fn platform_of(ops: &GatewayOps, headers: &HeaderMap) -> ApiResult<Option<Arc<Compiled>>> {
    let Some(v) = headers.get(PLATFORM_HEADER) else {
        return Ok(None);
    };
    let name = v.to_str().unwrap_or("").trim();
    let Some(p) = ops.platform(name) else {
        return Err(Problem::bad_request(format!(
            "no registered platform `{}` (header {PLATFORM_HEADER}); the platforms are \
             `gateway.platforms` in agentkit.yaml",
            name.escape_debug()
        )));
    };
    Ok(Some(p))
}

/// 429 with `Retry-After` for a platform over its rate limit (after authentication, so only
/// keys of this server use up a platform's allowance).
async fn platform_limit(State(s): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(res) = over_limit(&s.gatewayops, request.headers()) {
        return res;
    }
    next.run(request).await
}

fn over_limit(ops: &GatewayOps, headers: &HeaderMap) -> Option<Response> {
    let p = platform_of(ops, headers).ok()??;
    let wait = p.admit().err()?;
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut res = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!(
            "platform `{}` is over its rate limit (gateway.platforms[].rate_limit); retry after \
             {secs} s (Retry-After)",
            p.name
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    Some(res)
}

/// How the calls of a batch run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    /// All at once (up to `gateway.max_parallel`).
    #[default]
    Parallel,
    /// One after another, in order.
    Sequential,
}

/// One call of a batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// Your id for it (unique in the batch); results carry it.
    pub id: String,
    /// The outbound MCP server.
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
    /// Its arguments (an object).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Map<String, Value>,
    /// This call's own timeout (default: the batch's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Its idempotency key (1 to 255 printable ASCII characters; default: the batch's
    /// `Idempotency-Key` header with this call's `id`): a retry with the same key within
    /// `gateway.idempotency_window_ms` gets the first attempt's result and calls nothing;
    /// the same key with another server, tool or arguments is a 422. Keys are per
    /// workspace.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A batch of tool calls.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    /// The calls (at least one, at most `gateway.max_calls`).
    pub calls: Vec<CallRequest>,
    /// `parallel` (default) or `sequential`.
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    /// The batch's timeout: every call's default, and the deadline of the whole batch (calls
    /// not started by then end as `timeout`). Default `gateway.default_timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The results of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExecuteResponse {
    /// The batch's trace id (the audit log's run id of its calls; the trace id of the
    /// `traceparent` sent to the MCP servers).
    pub trace_id: String,
    /// One result per call, in the order sent.
    pub results: Vec<CallResult>,
    /// The sum of the calls' costs, USD.
    pub total_cost: f64,
    /// How long the batch took.
    pub duration_ms: u64,
}

fn ms(ops: &GatewayOps, what: &str, v: Option<u64>) -> ApiResult<Duration> {
    let c = ops.config();
    let Some(v) = v else {
        return Ok(c.default_timeout);
    };
    let d = Duration::from_millis(v);
    if v == 0 || d > c.max_timeout {
        return Err(Problem::bad_request(format!(
            "`{what}` must be between 1 and {} (gateway.max_timeout_ms), got {v}",
            c.max_timeout.as_millis()
        )));
    }
    Ok(d)
}

/// A checked batch: every call addressed to a server and tool the caller may use.
struct Batch {
    calls: Vec<Call>,
    /// Each call's idempotency key, if it has one.
    keys: Vec<Option<String>>,
    mode: ExecutionMode,
    timeout: Duration,
}

/// The request's `Idempotency-Key` header, if any; 400 for one that cannot be a key.
pub(crate) fn idempotency_header(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if idempotency::valid_key(k.trim()) => Ok(Some(k.trim().to_owned())),
        _ => Err(Problem::bad_request(format!(
            "`Idempotency-Key` must be 1 to {} printable ASCII characters",
            idempotency::MAX_KEY_BYTES
        ))),
    }
}

async fn check_batch(
    ops: &GatewayOps,
    platform: &Platform,
    caller: &Caller,
    req: ExecuteRequest,
    headers: &HeaderMap,
) -> ApiResult<Batch> {
    let header_key = idempotency_header(headers)?;
    let max = ops.config().max_calls;
    if req.calls.is_empty() {
        return Err(Problem::bad_request(
            "`calls` is empty; send at least one {id, server, tool, arguments}",
        ));
    }
    if req.calls.len() > max {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-calls",
            format!(
                "the batch has {} calls; at most {max} are allowed (gateway.max_calls): split it",
                req.calls.len()
            ),
        ));
    }
    let timeout = ms(ops, "timeout_ms", req.timeout_ms)?;
    let mut ids = HashSet::new();
    let mut calls = Vec::with_capacity(req.calls.len());
    let mut keys = Vec::with_capacity(req.calls.len());
    for (i, c) in req.calls.into_iter().enumerate() {
        if let Some(k) = &c.idempotency_key
            && !idempotency::valid_key(k)
        {
            return Err(Problem::bad_request(format!(
                "calls[{i}].idempotency_key must be 1 to {} printable ASCII characters",
                idempotency::MAX_KEY_BYTES
            )));
        }
        keys.push(idempotency::key_of(
            c.idempotency_key.as_deref(),
            header_key.as_deref(),
            &c.id,
        ));
        if c.id.is_empty() || c.id.len() > 200 {
            return Err(Problem::bad_request(format!(
                "calls[{i}].id must be 1 to 200 characters"
            )));
        }
        if !ids.insert(c.id.clone()) {
            return Err(Problem::bad_request(format!(
                "calls[{i}].id `{}` is used twice; ids must be unique in a batch",
                c.id.escape_debug()
            )));
        }
        ops.check_tool(platform, caller, &c.server, &c.tool)
            .await
            .map_err(|e| {
                let mut p = Problem::from(e);
                p.detail = format!("calls[{i}]: {}", p.detail);
                p
            })?;
        let own = match c.timeout_ms {
            Some(_) => ms(ops, &format!("calls[{i}].timeout_ms"), c.timeout_ms)?,
            None => timeout,
        };
        calls.push(Call {
            id: c.id,
            server: c.server,
            tool: c.tool,
            arguments: c.arguments,
            timeout: own,
            cut: None,
        });
    }
    let batch = Batch {
        calls,
        keys,
        mode: req.execution_mode,
        timeout,
    };
    refuse_reused_keys(ops, platform, caller, &batch).await?;
    Ok(batch)
}

/// 422 when a call's idempotency key was used (within the window) for another call: a
/// batch is refused whole before any of its calls is made.
async fn refuse_reused_keys(
    ops: &GatewayOps,
    platform: &Platform,
    caller: &Caller,
    batch: &Batch,
) -> ApiResult<()> {
    let keys = keys_of(ops, platform);
    let now = agentkit_runtime::model::now_ms();
    for (i, (call, key)) in batch.calls.iter().zip(&batch.keys).enumerate() {
        let Some(key) = key else { continue };
        if let Some(idempotency::Claim::Conflict) =
            keys.peek(&caller.workspace, key, call, now).await?
        {
            return Err(reused_key(i));
        }
    }
    Ok(())
}

fn reused_key(i: usize) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        format!(
            "calls[{i}]: its idempotency key was used for a call with another server, tool \
             or arguments; send a new key for a new call"
        ),
    )
}

/// Make `call` for `caller`; with an idempotency `key`, at most once per key in the caller's
/// workspace (see [`idempotency`]): a retry gets the first attempt's result.
///
/// # Errors
///
/// [`idempotency::Refused`] when the key belongs to another call, an earlier attempt is still
/// being made, or the key could not be checked.
pub(crate) async fn call_keyed(
    s: &AppState,
    caller: &Caller,
    call: Call,
    key: Option<&str>,
    env: &CallEnv,
) -> Result<Result<CallResult, McpFailure>, idempotency::Refused> {
    call_keyed_as(s, caller, call, key, env, false).await
}

/// [`call_keyed`], or with `as_task` for a client that takes MCP Tasks (see
/// `GatewayOps::call_as_task`): a call its policies allow is answered `running` in a durable
/// run at once. With a `key`, a retry gets the first attempt's answer: the same run (or, if
/// the first attempt was a plain call, its result).
///
/// # Errors
///
/// As [`call_keyed`].
pub(crate) async fn call_keyed_as(
    s: &AppState,
    caller: &Caller,
    call: Call,
    key: Option<&str>,
    env: &CallEnv,
    as_task: bool,
) -> Result<Result<CallResult, McpFailure>, idempotency::Refused> {
    let make = |call: Call| async move {
        if as_task {
            s.gatewayops
                .call_as_task(&s.platform, caller, call, env)
                .await
        } else {
            s.gatewayops.call(&s.platform, caller, call, env).await
        }
    };
    let Some(key) = key else {
        return Ok(make(call).await);
    };
    let keyed = keys_of(&s.gatewayops, &s.platform)
        .once(&caller.workspace, key, call, make)
        .await?;
    Ok(match keyed {
        idempotency::Keyed::Made(r) => r,
        idempotency::Keyed::Replayed(r) => Ok(*r),
    })
}

fn keys_of(ops: &GatewayOps, platform: &Platform) -> idempotency::Keys {
    idempotency::Keys::new(
        Arc::clone(platform.runtime().store()),
        ops.config().idempotency_window,
    )
}

/// What a running batch reports as it goes.
enum BatchEvent {
    Started(String, String),
    Progress(CallProgress),
    Done(CallResult),
}

/// When a batch ends (calls not started by then end as `timeout`), and its timeout.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

/// A call's result saying why it was not made.
fn not_made(id: &str, status: CallStatus, error: String) -> CallResult {
    CallResult {
        id: id.to_owned(),
        status,
        content: Vec::new(),
        structured_content: None,
        flags: Vec::new(),
        error: Some(error),
        duration_ms: 0,
        cost: 0.0,
        run_id: None,
        call_id: None,
        retry_after_ms: None,
    }
}

/// Run one call of a batch, reporting its start and end; with an idempotency `key`, at
/// most once per key (see [`idempotency`]).
#[allow(clippy::too_many_arguments)]
async fn run_one(
    ops: &GatewayOps,
    platform: &Platform,
    caller: &Caller,
    call: Call,
    key: Option<String>,
    env: &CallEnv,
    deadline: Deadline,
    events: Option<&mpsc::UnboundedSender<BatchEvent>>,
) -> CallResult {
    let Some(key) = key else {
        return run_unkeyed(ops, platform, caller, call, env, deadline, events).await;
    };
    let (id, name) = (call.id.clone(), tool_name(&call.server, &call.tool));
    let keyed = keys_of(ops, platform)
        .once(&caller.workspace, &key, call, |call| async move {
            Ok::<_, Infallible>(
                run_unkeyed(ops, platform, caller, call, env, deadline, events).await,
            )
        })
        .await;
    match keyed {
        Ok(idempotency::Keyed::Made(Ok(r))) => r,
        Ok(idempotency::Keyed::Made(Err(never))) => match never {},
        Ok(idempotency::Keyed::Replayed(r)) => {
            if let Some(tx) = events {
                let _ = tx.send(BatchEvent::Started(id, name));
                let _ = tx.send(BatchEvent::Done((*r).clone()));
            }
            *r
        }
        Err(refused) => {
            let r = not_made(&id, CallStatus::Error, refused.to_string());
            if let Some(tx) = events {
                let _ = tx.send(BatchEvent::Done(r.clone()));
            }
            r
        }
    }
}

/// Run one call of a batch, reporting its start and end.
async fn run_unkeyed(
    ops: &GatewayOps,
    platform: &Platform,
    caller: &Caller,
    call: Call,
    env: &CallEnv,
    deadline: Deadline,
    events: Option<&mpsc::UnboundedSender<BatchEvent>>,
) -> CallResult {
    let id = call.id.clone();
    let Some(timeout) = call_timeout(call.timeout, deadline.at) else {
        let r = not_made(
            &id,
            CallStatus::Timeout,
            "the batch's timeout passed before this call could start".into(),
        );
        if let Some(tx) = events {
            let _ = tx.send(BatchEvent::Done(r.clone()));
        }
        return r;
    };
    if let Some(tx) = events {
        let _ = tx.send(BatchEvent::Started(
            id.clone(),
            tool_name(&call.server, &call.tool),
        ));
    }
    // Less time left in the batch than the call's own timeout: the batch's applies.
    let cut = (timeout < call.timeout).then_some(Cut {
        own: call.timeout,
        batch: deadline.timeout,
    });
    let r = match ops
        .call(
            platform,
            caller,
            Call {
                timeout,
                cut,
                ..call
            },
            env,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => not_made(&id, CallStatus::Error, e.to_string()),
    };
    if let Some(tx) = events {
        let _ = tx.send(BatchEvent::Done(r.clone()));
    }
    r
}

async fn run_batch(
    state: AppState,
    caller: Caller,
    batch: Batch,
    env: CallEnv,
    events: Option<mpsc::UnboundedSender<BatchEvent>>,
) -> ExecuteResponse {
    let started = Instant::now();
    let deadline = Deadline {
        at: started + batch.timeout,
        timeout: batch.timeout,
    };
    let ops = &state.gatewayops;
    let platform = &state.platform;
    // Progress notifications of the MCP servers, forwarded as batch events.
    let env = CallEnv {
        progress: events.clone().map(|tx| -> ProgressFn {
            Arc::new(move |p| {
                let _ = tx.send(BatchEvent::Progress(p));
            })
        }),
        ..env
    };
    let results = match batch.mode {
        ExecutionMode::Sequential => {
            let mut out = Vec::with_capacity(batch.calls.len());
            for (call, key) in batch.calls.into_iter().zip(batch.keys) {
                out.push(
                    run_one(
                        ops,
                        platform,
                        &caller,
                        call,
                        key,
                        &env,
                        deadline,
                        events.as_ref(),
                    )
                    .await,
                );
            }
            out
        }
        ExecutionMode::Parallel => {
            let n = ops.config().max_parallel;
            let mut indexed: Vec<(usize, CallResult)> =
                futures::stream::iter(batch.calls.into_iter().zip(batch.keys).enumerate())
                    .map(|(i, (call, key))| {
                        let (env, caller, events) = (&env, &caller, events.as_ref());
                        async move {
                            (
                                i,
                                run_one(ops, platform, caller, call, key, env, deadline, events)
                                    .await,
                            )
                        }
                    })
                    .buffer_unordered(n)
                    .collect()
                    .await;
            indexed.sort_by_key(|(i, _)| *i);
            indexed.into_iter().map(|(_, r)| r).collect()
        }
    };
    ExecuteResponse {
        total_cost: results.iter().map(|r| r.cost).sum(),
        trace_id: env.trace_id.clone(),
        results,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Run a batch of tool calls on the workspace's MCP servers, each through the gateway's
/// policy and audit log. Per call: `success`, `error` (the tool's or its server's), `timeout`,
/// `denied` (with the policy's reason) or `rate_limited` (with `retry_after_ms`). A bad batch
/// (empty, too large, unknown server or tool, bad timeout) is refused whole before anything
/// runs; a batch none of whose calls was made because each was over a tool rate limit is a
/// 429 with `Retry-After`.
#[utoipa::path(post, path = "/v1/execute", tag = "gateway",
    params(("x-agentkit-platform" = Option<String>, Header, description = "a registered platform")),
    request_body = ExecuteRequest,
    responses((status = 200, body = ExecuteResponse), (status = 400, body = Problem),
              (status = 404, body = Problem), (status = 413, body = Problem),
              (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn execute(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<ExecuteRequest>,
) -> ApiResult<Json<ExecuteResponse>> {
    let platform = platform_of(&s.gatewayops, &headers)?;
    let batch = check_batch(&s.gatewayops, &s.platform, &caller, req, &headers).await?;
    let mut env = CallEnv::new(trace_id());
    env.platform = platform;
    let r = run_batch(s.clone(), caller, batch, env, None).await;
    if let Some(p) = all_rate_limited(&r) {
        return Err(p);
    }
    Ok(Json(r))
}

/// 429 with `Retry-After` (the longest wait of its calls) for a batch none of whose calls was
/// made because each was over a tool rate limit; `None` when any call got further.
fn all_rate_limited(r: &ExecuteResponse) -> Option<Problem> {
    if r.results.is_empty()
        || r.results
            .iter()
            .any(|c| c.status != CallStatus::RateLimited)
    {
        return None;
    }
    let wait = r.results.iter().filter_map(|c| c.retry_after_ms).max();
    let secs = crate::api::servers::retry_after_secs(wait);
    let first = r.results[0].error.as_deref().unwrap_or_default();
    let mut p = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "tool-rate-limited",
        format!(
            "no call of the batch was made: each was over a tool rate limit ({first}); retry \
             after {secs} s (Retry-After), or send fewer calls (trace {})",
            r.trace_id
        ),
    );
    p.retry_after = Some(secs);
    Some(p)
}

fn sse(name: &str, data: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

/// The same batch as `/v1/execute`, as Server-Sent Events: `start` (`trace_id`, `calls`,
/// `execution_mode`), per call `progress` (`{id, tool, state: "started"}`, then the MCP
/// server's progress notifications `{id, progress, total, message}`), `chunk` (each content
/// block: `{id, index, content}`), `complete` (the result without its content), and `done`
/// (`trace_id`, `total_cost`, `duration_ms`, counts per status). Closing the stream cancels
/// the calls still running. When the server stops first, the calls still running are
/// cancelled and the stream ends with `error` instead of `done`: `{"error":
/// "server_stopping", message, trace_id, cancelled}`, `cancelled` the ids of the calls that
/// did not finish (send them again, with their idempotency keys to have each run at most
/// once).
#[utoipa::path(post, path = "/v1/execute/stream", tag = "gateway",
    params(("x-agentkit-platform" = Option<String>, Header, description = "a registered platform")),
    request_body = ExecuteRequest,
    responses((status = 200, content_type = "text/event-stream", description = "the events"),
              (status = 400, body = Problem), (status = 404, body = Problem),
              (status = 413, body = Problem), (status = 422, body = Problem)))]
pub async fn execute_stream(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<ExecuteRequest>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static>> {
    let platform = platform_of(&s.gatewayops, &headers)?;
    let batch = check_batch(&s.gatewayops, &s.platform, &caller, req, &headers).await?;
    let mut env = CallEnv::new(trace_id());
    env.platform = platform;
    let cancel = env.cancel.clone();
    let start = json!({
        "trace_id": env.trace_id,
        "calls": batch.calls.len(),
        "execution_mode": batch.mode,
    });
    let stopped = Stopped {
        trace_id: env.trace_id.clone(),
        calls: batch.calls.iter().map(|c| c.id.clone()).collect(),
        finished: HashSet::new(),
    };
    let stopping = s.platform.stopping.clone();
    let (tx, rx) = mpsc::unbounded_channel::<BatchEvent>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<ExecuteResponse>();
    tokio::spawn(async move {
        let r = run_batch(s, caller, batch, env, Some(tx)).await;
        let _ = done_tx.send(r);
    });
    // Dropping the stream (the client went away) cancels what still runs.
    let guard = cancel.clone().drop_guard();
    let head = futures::stream::once(async move { sse("start", &start) });
    let body = futures::stream::unfold(
        (rx, Some(done_rx), stopped, guard),
        move |(mut rx, done, mut stopped, guard)| {
            let (stopping, cancel) = (stopping.clone(), cancel.clone());
            async move {
                let mut done = done?;
                // Every call's events are sent before the batch's result, so once the result
                // is in, what is left in the channel is drained and the stream ends.
                let finished = tokio::select! {
                    biased;
                    // The server is stopping: the calls still running are cancelled, and the
                    // client is told which to send again (this stream would otherwise hold
                    // the shutdown until the drain's deadline closed its connection).
                    () = stopping.cancelled() => {
                        cancel.cancel();
                        // A batch that ended sent all its events first.
                        let finished = done.try_recv().ok();
                        let mut out = Vec::new();
                        while let Ok(p) = rx.try_recv() {
                            stopped.saw(&p);
                            out.extend(batch_events(p));
                        }
                        out.push(finished.map_or_else(|| stopped.event(), |r| done_event(&r)));
                        return Some((futures::stream::iter(out), (rx, None, stopped, guard)));
                    }
                    Some(p) = rx.recv() => {
                        stopped.saw(&p);
                        let events = futures::stream::iter(batch_events(p));
                        return Some((events, (rx, Some(done), stopped, guard)));
                    }
                    r = &mut done => r.ok(),
                };
                let mut out = Vec::new();
                while let Ok(p) = rx.try_recv() {
                    out.extend(batch_events(p));
                }
                if let Some(r) = finished {
                    out.push(done_event(&r));
                }
                Some((futures::stream::iter(out), (rx, None, stopped, guard)))
            }
        },
    )
    .flatten();
    Ok(Sse::new(head.chain(body)).keep_alive(KeepAlive::default()))
}

/// What a streamed batch tells its client when the server stops before the batch ends.
struct Stopped {
    trace_id: String,
    /// The batch's call ids, in order.
    calls: Vec<String>,
    /// The calls whose result was sent, but for those cancelled.
    finished: HashSet<String>,
}

impl Stopped {
    fn saw(&mut self, p: &BatchEvent) {
        if let BatchEvent::Done(r) = p
            && r.status != CallStatus::Cancelled
        {
            self.finished.insert(r.id.clone());
        }
    }

    /// The last event: `error` `server_stopping`, with the calls to send again.
    fn event(&self) -> Result<Event, Infallible> {
        let cancelled: Vec<&String> = self
            .calls
            .iter()
            .filter(|id| !self.finished.contains(*id))
            .collect();
        sse(
            "error",
            &json!({
                "error": "server_stopping",
                "message": "the server is shutting down: the calls still running were \
                            cancelled; send those in `cancelled` again (to this server once it \
                            is back, or to another), with their idempotency keys to have each \
                            run at most once",
                "trace_id": self.trace_id,
                "cancelled": cancelled,
            }),
        )
    }
}

fn batch_events(p: BatchEvent) -> Vec<Result<Event, Infallible>> {
    match p {
        BatchEvent::Started(id, tool) => vec![sse(
            "progress",
            &json!({"id": id, "tool": tool, "state": "started"}),
        )],
        BatchEvent::Progress(p) => vec![sse("progress", &json!(p))],
        BatchEvent::Done(r) => {
            let mut out: Vec<_> = r
                .content
                .iter()
                .enumerate()
                .map(|(i, c)| sse("chunk", &json!({"id": r.id, "index": i, "content": c})))
                .collect();
            let mut summary = json!(r);
            if let Some(o) = summary.as_object_mut() {
                o.remove("content");
            }
            out.push(sse("complete", &summary));
            out
        }
    }
}

fn done_event(r: &ExecuteResponse) -> Result<Event, Infallible> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for x in &r.results {
        let k = serde_json::to_value(x.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry(k).or_default() += 1;
    }
    sse(
        "done",
        &json!({
            "trace_id": r.trace_id,
            "total_cost": r.total_cost,
            "duration_ms": r.duration_ms,
            "statuses": counts,
        }),
    )
}

/// A WebSocket connection to open.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConnectResponse {
    /// The connection id: single use, for the key that asked for it, valid for
    /// `gateway.connect_ttl` (60 s by default).
    pub connection_id: String,
    /// Where to open the WebSocket (with the same API key).
    pub websocket_url: String,
    /// When the id expires, seconds from now.
    pub expires_in_s: u64,
}

/// Ask for a WebSocket connection id. Open `GET /v1/agents/{connection_id}` with the same key
/// (once) to call tools over it: see `/v1/agents/{connection_id}`.
#[utoipa::path(post, path = "/v1/agents/connect", tag = "gateway",
    responses((status = 200, body = ConnectResponse)))]
pub async fn connect(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Json<ConnectResponse>> {
    platform_of(&s.gatewayops, &headers)?;
    let id = s.gatewayops.connect(&caller);
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    // Behind a TLS-terminating proxy the socket is `wss`.
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "wss",
        _ => "ws",
    };
    Ok(Json(ConnectResponse {
        websocket_url: format!("{scheme}://{host}/v1/agents/{id}"),
        connection_id: id,
        expires_in_s: s.gatewayops.config().connect_ttl.as_secs(),
    }))
}

/// `GET /v1/agents/{name}`: the WebSocket of a connection id (a request upgrading to a
/// WebSocket with a `conn_…` id), else the agent of that name.
///
/// The agent WebSocket: send `tool_call {id, server, tool, arguments, timeout_ms?,
/// idempotency_key?}`, `cancel {id}` and `ping`; receive `tool_result {id, status, content,
/// error?, duration_ms, cost}`, `progress {id, progress, total?, message?}`, `error {id?,
/// code, message}` and `pong`. Malformed JSON, unknown types and oversized messages are
/// answered with an `error` message (with the message's `id` when it is a JSON object with
/// a string or number `id`, echoed as sent); the connection stays open. Only a message over
/// 16 MiB (or 4× `gateway.max_message_bytes` when that is more) cannot be read: it closes
/// the connection with code 1009. When the server shuts down, it closes the connection with
/// code 1001 (going away) and cancels the calls still in flight: connect again, to this
/// server once it is back or to another (a call sent again with its idempotency key is made
/// at most once).
///
/// A `tool_call` with an `idempotency_key` (1 to 255 printable ASCII characters) is made at
/// most once per key in the caller's workspace within `gateway.idempotency_window_ms`
/// (24 h), as with `/v1/execute`: a retry (on this connection or another, on any server
/// process) gets the first attempt's `tool_result` (a call waiting for an approval: the same
/// `pending_approval` and `run_id`) under the retry's `id`, and calls nothing. The same key
/// with another server, tool or arguments is answered `error {code:
/// "idempotency_key_reused"}`; a retry while the first attempt is still being made waits for
/// it up to its timeout, then gets `error {code: "idempotency_key_in_flight"}`.
///
/// In the OpenAPI document this is the `101` answer of `GET /v1/agents/{name}`: a connection
/// id and an agent's name share that template (OpenAPI allows one path per template).
pub(crate) async fn agent_or_socket(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let upgrading = request
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrading {
        return super::v1::get_agent(State(s), caller, Path(name))
            .await
            .into_response();
    }
    let (mut parts, _) = request.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &s).await {
        Ok(ws) => ws,
        Err(e) => {
            return Problem::bad_request(format!("bad WebSocket upgrade: {e}")).into_response();
        }
    };
    if let Some(res) = over_limit(&s.gatewayops, &parts.headers) {
        return res;
    }
    let platform = match platform_of(&s.gatewayops, &parts.headers) {
        Ok(p) => p,
        Err(p) => return p.into_response(),
    };
    match socket(s, caller, name, ws, platform) {
        Ok(r) => r,
        Err(p) => p.into_response(),
    }
}

fn socket(
    s: AppState,
    caller: Caller,
    id: String,
    ws: WebSocketUpgrade,
    platform: Option<Arc<Compiled>>,
) -> ApiResult<Response> {
    caller.require(Role::Invoker)?;
    if !GatewayOps::is_connection_id(&id) || !s.gatewayops.claim(&id, &caller) {
        return Err(Problem::not_found(format!(
            "no connection `{}` (connection ids are single use, expire, and work only with the \
             key that asked for them: POST /v1/agents/connect)",
            id.escape_debug()
        )));
    }
    let readable = readable_bytes(s.gatewayops.config().max_message_bytes);
    // Messages up to `readable` are read and answered (one over `max_message_bytes` with a
    // `too_large` error); a larger one cannot be read and ends the connection with close
    // code 1009 (message too big).
    Ok(ws
        .max_message_size(readable)
        .max_frame_size(readable)
        .on_upgrade(move |socket| serve_socket(s, caller, socket, id, platform)))
}

/// The largest WebSocket message read (and, over `gateway.max_message_bytes`, answered
/// with a `too_large` error) before the connection is closed: a message is buffered whole
/// before it can be answered, so this bounds the memory a connection may take.
const READABLE_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How large a message an agent WebSocket reads: [`READABLE_MESSAGE_BYTES`], or 4×
/// `max_message_bytes` when that is more.
fn readable_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(4)
        .max(READABLE_MESSAGE_BYTES)
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Incoming {
    ToolCall {
        id: String,
        server: String,
        tool: String,
        #[serde(default)]
        arguments: Map<String, Value>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    Cancel {
        id: String,
    },
    Ping {
        #[serde(default)]
        data: Option<Value>,
    },
}

/// `error` with the `id` of the message it answers when that message is a JSON object
/// whose `id` is a string or a number (echoed as sent), so the client knows which call
/// failed even when the rest of the message could not be read.
fn with_id_of(message: Option<&Value>, mut error: Value) -> Value {
    let id = message
        .and_then(|m| m.get("id"))
        .filter(|id| id.is_string() || id.is_number());
    if let (Some(id), Some(o)) = (id, error.as_object_mut()) {
        o.insert("id".into(), id.clone());
    }
    error
}

fn ws_error(id: Option<&str>, code: &str, message: impl Into<String>) -> Value {
    let mut v = json!({"type": "error", "code": code, "message": message.into()});
    if let (Some(id), Some(o)) = (id, v.as_object_mut()) {
        o.insert("id".into(), json!(id));
    }
    v
}

async fn serve_socket(
    s: AppState,
    caller: Caller,
    socket: WebSocket,
    conn: String,
    platform: Option<Arc<Compiled>>,
) {
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });
    let send = |v: Value| {
        let _ = out_tx.send(Message::Text(v.to_string().into()));
    };
    let max = s.gatewayops.config().max_message_bytes;
    let max_inflight = s.gatewayops.config().max_parallel;
    let trace = trace_id();
    let running: Arc<std::sync::Mutex<HashMap<String, tokio_util::sync::CancellationToken>>> =
        Arc::default();
    let all = tokio_util::sync::CancellationToken::new();
    tracing::debug!(connection = %conn, trace = %trace, "agent WebSocket open");
    let stopping = s.platform.stopping.clone();
    loop {
        let msg = tokio::select! {
            m = stream.next() => match m {
                Some(m) => m,
                None => break,
            },
            // The server is stopping: the client is told to connect again (to this server
            // once it is back, or to another); calls in flight are cancelled below (a retry
            // with the same idempotency key is safe).
            () = stopping.cancelled() => {
                let _ = out_tx.send(Message::Close(Some(CloseFrame {
                    code: 1001,
                    reason: "the server is shutting down; connect again (POST /v1/agents/connect)"
                        .into(),
                })));
                break;
            }
        };
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                send(ws_error(
                    None,
                    "unsupported",
                    "binary messages are not supported; send JSON text messages",
                ));
                continue;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => break,
            Err(e) => {
                let _ = out_tx.send(Message::Close(Some(CloseFrame {
                    code: 1009,
                    reason: format!(
                        "unreadable message ({e}); messages are limited to {max} bytes"
                    )
                    .chars()
                    .take(120)
                    .collect::<String>()
                    .into(),
                })));
                break;
            }
        };
        if text.len() > max {
            send(ws_error(
                None,
                "too_large",
                format!(
                    "the message is {} bytes; at most {max} are accepted (gateway.max_message_bytes)",
                    text.len()
                ),
            ));
            continue;
        }
        let incoming: Incoming = match serde_json::from_str(text.as_str()) {
            Ok(m) => m,
            Err(e) => {
                let parsed = serde_json::from_str::<Value>(text.as_str()).ok();
                let code = if parsed.is_some() {
                    "invalid_message"
                } else {
                    "invalid_json"
                };
                send(with_id_of(
                    parsed.as_ref(),
                    ws_error(
                        None,
                        code,
                        format!(
                            "{e}; send {{\"type\": \"tool_call\", \"id\", \"server\", \"tool\", \
                         \"arguments\"}}, {{\"type\": \"cancel\", \"id\"}} or {{\"type\": \"ping\"}}"
                        ),
                    ),
                ));
                continue;
            }
        };
        match incoming {
            Incoming::Ping { data } => {
                let mut pong = json!({"type": "pong"});
                if let (Some(d), Some(o)) = (data, pong.as_object_mut()) {
                    o.insert("data".into(), d);
                }
                send(pong);
            }
            Incoming::Cancel { id } => {
                let token = agentkit_core::sync::lock(&running).get(&id).cloned();
                match token {
                    Some(t) => t.cancel(),
                    None => send(ws_error(
                        Some(&id),
                        "unknown_call",
                        format!("no running call `{}` to cancel", id.escape_debug()),
                    )),
                }
            }
            Incoming::ToolCall {
                id,
                server,
                tool,
                arguments,
                timeout_ms,
                idempotency_key,
            } => {
                if id.is_empty() || id.len() > 200 {
                    send(ws_error(
                        Some(&id),
                        "invalid_message",
                        "`id` must be 1 to 200 characters",
                    ));
                    continue;
                }
                if let Some(k) = &idempotency_key
                    && !idempotency::valid_key(k)
                {
                    send(ws_error(
                        Some(&id),
                        "invalid_message",
                        format!(
                            "`idempotency_key` must be 1 to {} printable ASCII characters",
                            idempotency::MAX_KEY_BYTES
                        ),
                    ));
                    continue;
                }
                let timeout = match ms(&s.gatewayops, "timeout_ms", timeout_ms) {
                    Ok(t) => t,
                    Err(p) => {
                        send(ws_error(Some(&id), "invalid_message", p.detail));
                        continue;
                    }
                };
                if let Err(e) = s
                    .gatewayops
                    .check_tool(&s.platform, &caller, &server, &tool)
                    .await
                {
                    send(ws_error(Some(&id), "not_found", e.to_string()));
                    continue;
                }
                let token = all.child_token();
                {
                    let mut r = agentkit_core::sync::lock(&running);
                    if r.contains_key(&id) {
                        send(ws_error(
                            Some(&id),
                            "duplicate_id",
                            format!(
                                "call `{}` is still running; use a new id",
                                id.escape_debug()
                            ),
                        ));
                        continue;
                    }
                    if r.len() >= max_inflight {
                        send(ws_error(
                            Some(&id),
                            "too_many_calls",
                            format!(
                                "{max_inflight} calls are already running on this connection \
                                 (gateway.max_parallel); wait for a result"
                            ),
                        ));
                        continue;
                    }
                    r.insert(id.clone(), token.clone());
                }
                let (s, caller, out_tx, running, trace, platform) = (
                    s.clone(),
                    caller.clone(),
                    out_tx.clone(),
                    Arc::clone(&running),
                    trace.clone(),
                    platform.clone(),
                );
                tokio::spawn(async move {
                    let progress: ProgressFn = {
                        let out_tx = out_tx.clone();
                        Arc::new(move |p: CallProgress| {
                            let mut v = json!(p);
                            if let Some(o) = v.as_object_mut() {
                                o.insert("type".into(), json!("progress"));
                            }
                            let _ = out_tx.send(Message::Text(v.to_string().into()));
                        })
                    };
                    let env = CallEnv {
                        cancel: token,
                        progress: Some(progress),
                        platform,
                        ..CallEnv::new(trace)
                    };
                    let call = Call {
                        id: id.clone(),
                        server: server.clone(),
                        tool,
                        arguments,
                        timeout,
                        cut: None,
                    };
                    let result =
                        match call_keyed(&s, &caller, call, idempotency_key.as_deref(), &env).await
                        {
                            Ok(Ok(r)) => json!(r),
                            Ok(Err(e)) => json!(not_made(&id, CallStatus::Error, e.to_string())),
                            Err(refused) => {
                                agentkit_core::sync::lock(&running).remove(&id);
                                let e = ws_error(Some(&id), refused.code(), refused.to_string());
                                let _ = out_tx.send(Message::Text(e.to_string().into()));
                                return;
                            }
                        };
                    agentkit_core::sync::lock(&running).remove(&id);
                    let mut v = result;
                    if let Some(o) = v.as_object_mut() {
                        o.insert("type".into(), json!("tool_result"));
                    }
                    let _ = out_tx.send(Message::Text(v.to_string().into()));
                });
            }
        }
    }
    // The client went away (or the server is stopping): cancel its calls, and stop the
    // writer (calls that end now may still hold a sender).
    all.cancel();
    let _ = out_tx.send(Message::Close(None));
    let _ = writer.await;
    tracing::debug!(connection = %conn, "agent WebSocket closed");
}

/// A tool in OpenAI function-calling format.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiTool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: OpenAiFunction,
}

/// An OpenAI function.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OpenAiFunction {
    /// `server__tool`.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema of its arguments.
    #[schema(value_type = Object)]
    pub parameters: Value,
}

/// A server whose tools could not be listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UnavailableServer {
    /// The server.
    pub server: String,
    /// Why.
    pub detail: String,
}

/// The tools the caller may call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ToolList {
    /// In OpenAI function format, named `server__tool`.
    pub tools: Vec<OpenAiTool>,
    /// Servers that could not be reached (their tools are missing from `tools`).
    pub unavailable: Vec<UnavailableServer>,
}

/// Every tool the caller may call, in OpenAI function format (`server__tool`): the servers
/// its workspace sees (a registered platform's `default_servers` only), without the tools
/// the gateway policy or the platform's `block_patterns` deny. Calling needs `invoker`: a
/// `viewer` key gets an empty list (as its `/mcp` lists no federated tools).
#[utoipa::path(get, path = "/v1/mcp/tools", tag = "gateway",
    params(("x-agentkit-platform" = Option<String>, Header, description = "a registered platform")),
    responses((status = 200, body = ToolList), (status = 400, body = Problem)))]
pub async fn list_tools(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Json<ToolList>> {
    let platform = platform_of(&s.gatewayops, &headers)?;
    if !caller.role.allows(Role::Invoker) {
        return Ok(Json(ToolList {
            tools: Vec::new(),
            unavailable: Vec::new(),
        }));
    }
    let mut servers = s.gatewayops.servers(&s.platform, &caller);
    if let Some(p) = platform.as_ref().filter(|p| !p.default_servers.is_empty()) {
        servers.retain(|n| p.default_servers.contains(n));
    }
    let listed = futures::future::join_all(servers.iter().map(|n| s.platform.mcp_tools(n))).await;
    let mut out = ToolList {
        tools: Vec::new(),
        unavailable: Vec::new(),
    };
    for (server, tools) in servers.iter().zip(listed) {
        match tools {
            Ok(tools) => {
                for t in tools {
                    let name = tool_name(server, &t.name);
                    if !s.gatewayops.lists(&name, platform.as_deref()) {
                        continue;
                    }
                    out.tools.push(OpenAiTool {
                        kind: "function".into(),
                        function: OpenAiFunction {
                            name,
                            description: t.description,
                            parameters: t.input_schema,
                        },
                    });
                }
            }
            Err(e) => out.unavailable.push(UnavailableServer {
                server: server.clone(),
                detail: e.to_string(),
            }),
        }
    }
    Ok(Json(out))
}

/// Text to check for prompt injections.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    /// The text (a tool result, a document, a message).
    pub content: String,
    /// Also return the text with hidden characters removed and exfiltration URLs defused.
    #[serde(default)]
    pub sanitize: bool,
}

/// Check text for prompt injections: instruction overrides, exfiltration URLs, hidden
/// Unicode, role play and system-prompt extraction. Each detection has a `type`,
/// `severity`, the matched `pattern`, a `confidence` and a `recommendation`.
#[utoipa::path(post, path = "/v1/safety/analyze", tag = "gateway",
    request_body = AnalyzeRequest,
    responses((status = 200, body = Analysis), (status = 400, body = Problem),
              (status = 422, body = Problem)))]
pub async fn analyze(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<AnalyzeRequest>,
) -> ApiResult<Json<Analysis>> {
    platform_of(&s.gatewayops, &headers)?;
    Ok(Json(
        s.gatewayops
            .config()
            .analyzer
            .analyze(&req.content, req.sanitize),
    ))
}
