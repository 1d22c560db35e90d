//! The tools of `/mcp` that depend on the caller: the workspace's outbound MCP servers
//! federated as `server__tool`, and the platform's own operations (`agentkit_*`).
//!
//! Both read the caller from the HTTP request: the API layer authenticates it into a
//! [`Caller`] and puts it, with the [`AppState`] the HTTP routes use, in the request's
//! extensions.
//!
//! Names: agents and workflows keep their plain names; a federated tool is
//! `<server>__<tool>` (split at the first `__`); platform operations start with
//! `agentkit_`. A name with `__` or an operation's name always means the federated tool or
//! the operation, so an agent whose tool name has one of these shapes is not served as a
//! tool (the server logs it; rename the agent).

use std::sync::Arc;

use agentkit_mcp::rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, CreateTaskResult, JsonObject, Tool,
};
use agentkit_mcp::rmcp::service::RequestContext;
use agentkit_mcp::rmcp::{ErrorData, RoleServer};
use agentkit_mcp::{CallContext, DirectCall};
use async_trait::async_trait;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiResult, AppState, Json, Path, Query};
use crate::gatewayops::platforms::{Compiled, PLATFORM_HEADER};
use crate::gatewayops::{Call, CallEnv, CallResult, CallStatus, tool_name, trace_id};
use crate::servers::McpFailure;
use crate::tenancy::{Caller, Role, Scope, required_role};

/// A platform operation served as a tool: the HTTP route whose role it needs.
struct Op {
    name: &'static str,
    method: http::Method,
    route: &'static str,
    description: &'static str,
    schema: fn() -> Value,
}

impl Op {
    /// The least role that may call it: the role of its HTTP route.
    fn role(&self) -> Role {
        required_role(&self.method, self.route).unwrap_or(Role::Admin)
    }

    fn tool(&self) -> Tool {
        let schema = match (self.schema)() {
            Value::Object(o) => o,
            _ => JsonObject::new(),
        };
        Tool::new(self.name, self.description, Arc::new(schema))
    }
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

fn runs_list_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "agent": {"type": "string", "description": "Only runs of this agent or workflow."},
            "status": {"type": "string", "description": "Only runs in this status (queued, running, waiting_input, waiting_approval, paused, succeeded, failed, cancelled)."},
            "since": {"type": "integer", "description": "Only runs created at or after this time (ms since epoch)."},
            "until": {"type": "integer", "description": "Only runs created before this time (ms since epoch)."},
            "limit": {"type": "integer", "minimum": 0, "description": "At most this many (default 100)."},
            "offset": {"type": "integer", "minimum": 0, "description": "Skip this many."}
        },
        "additionalProperties": false
    })
}

fn run_id_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"run_id": {"type": "string", "description": "The run's id."}},
        "required": ["run_id"],
        "additionalProperties": false
    })
}

fn promote_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "The agent or workflow."},
            "from": {"type": "string", "description": "The label to copy (e.g. `stage`)."},
            "to": {"type": "string", "description": "The label to move (e.g. `prod`)."}
        },
        "required": ["name", "from", "to"],
        "additionalProperties": false
    })
}

fn approvals_list_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "status": {"type": "string", "enum": ["pending", "approved", "rejected", "all"], "description": "Default `pending`."}
        },
        "additionalProperties": false
    })
}

fn decide_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "run_id": {"type": "string", "description": "The run waiting for the approval."},
            "call_id": {"type": "string", "description": "The tool call to decide (`call_id` in agentkit_approvals_list); without it, every pending call of the run."},
            "decision": {"type": "string", "enum": ["approve", "reject"]},
            "reason": {"type": "string", "description": "Recorded with the decision; a rejection's reason is what the model reads."}
        },
        "required": ["run_id", "decision"],
        "additionalProperties": false
    })
}

/// The platform operations, in listing order.
fn ops() -> &'static [Op] {
    use std::sync::OnceLock;
    static OPS: OnceLock<Vec<Op>> = OnceLock::new();
    OPS.get_or_init(|| {
        vec![
            Op {
                name: "agentkit_runs_list",
                method: http::Method::GET,
                route: "/v1/runs",
                description: "List this workspace's runs, newest first (as GET /v1/runs).",
                schema: runs_list_schema,
            },
            Op {
                name: "agentkit_runs_get",
                method: http::Method::GET,
                route: "/v1/runs/{run_id}",
                description: "One run of this workspace: status, output, error (as GET /v1/runs/{run_id}).",
                schema: run_id_schema,
            },
            Op {
                name: "agentkit_agents_list",
                method: http::Method::GET,
                route: "/v1/agents",
                description: "List this workspace's agents and workflows with their versions and labels (as GET /v1/agents).",
                schema: no_args,
            },
            Op {
                name: "agentkit_agents_promote",
                method: http::Method::POST,
                route: "/v1/agents/{name}/promote",
                description: "Point label `to` at the version label `from` points at (as POST /v1/agents/{name}/promote).",
                schema: promote_schema,
            },
            Op {
                name: "agentkit_approvals_list",
                method: http::Method::GET,
                route: "/v1/approvals",
                description: "Tool calls of this workspace waiting for a human (or decided), with the tool history that triggered the rule (as GET /v1/approvals).",
                schema: approvals_list_schema,
            },
            Op {
                name: "agentkit_approvals_decide",
                method: http::Method::POST,
                route: "/v1/runs/{run_id}/approve",
                description: "Approve or reject the tool call a run waits on, with a reason; an approved run resumes (as POST /v1/runs/{run_id}/approve and /reject).",
                schema: decide_schema,
            },
        ]
    })
}

fn op(name: &str) -> Option<&'static Op> {
    ops().iter().find(|o| o.name == name)
}

/// Whether `tool` is a name `/mcp` keeps for federated tools and operations (an agent
/// with such a tool name is not served).
pub(crate) fn reserved(tool: &str) -> bool {
    tool.contains("__") || op(tool).is_some()
}

fn error_result(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A gateway call's result as an MCP tool result: the tool's own answer, or a tool error
/// saying why there is none (denied, timed out; waiting for an approval or running as a
/// task: with `run_id`, `call_id` and `status` as structured content).
pub(crate) fn tool_result(r: &CallResult, name: &str) -> CallToolResult {
    let blocks = || -> Vec<ContentBlock> {
        r.content
            .iter()
            .filter_map(|c| serde_json::from_value(c.clone()).ok())
            .collect()
    };
    match r.status {
        CallStatus::Success => {
            let mut out = CallToolResult::success(blocks());
            out.structured_content = r.structured_content.clone();
            out
        }
        CallStatus::Error if !r.content.is_empty() => {
            let mut out = CallToolResult::error(blocks());
            out.structured_content = r.structured_content.clone();
            out
        }
        CallStatus::RateLimited => {
            let mut out = error_result(r.error.clone().unwrap_or_default());
            out.structured_content = Some(json!({
                "status": r.status,
                "retry_after_ms": r.retry_after_ms,
            }));
            out
        }
        CallStatus::PendingApproval | CallStatus::Running => {
            let mut out = error_result(r.error.clone().unwrap_or_default());
            out.structured_content = Some(json!({
                "status": r.status,
                "run_id": r.run_id,
                "call_id": r.call_id,
            }));
            out
        }
        _ => error_result(
            r.error
                .clone()
                .unwrap_or_else(|| format!("`{name}` did not complete ({:?})", r.status)),
        ),
    }
}

/// The caller and the API state of an HTTP request (the API layer sets both).
fn who(parts: Option<&http::request::Parts>) -> Option<(Caller, AppState)> {
    let parts = parts?;
    let caller = parts.extensions.get::<Caller>()?.clone();
    let state = parts.extensions.get::<AppState>()?;
    Some((caller, state.clone()))
}

/// The caller of `request` and the server's state, when it came over the authenticated HTTP
/// route.
pub(crate) fn caller_and_state(request: &RequestContext<RoleServer>) -> Option<(Caller, AppState)> {
    who(parts_of(request))
}

/// The HTTP request of `request`, when it came over HTTP.
fn parts_of(request: &RequestContext<RoleServer>) -> Option<&http::request::Parts> {
    request.extensions.get::<http::request::Parts>()
}

/// The caller of `request`, if it was authenticated.
pub(crate) fn caller_of(request: &RequestContext<RoleServer>) -> Option<Caller> {
    request
        .extensions
        .get::<http::request::Parts>()?
        .extensions
        .get::<Caller>()
        .cloned()
}

fn unauthenticated() -> ErrorData {
    ErrorData::invalid_request(
        "this request was not authenticated; send an API key as `Authorization: Bearer <key>`",
        None,
    )
}

fn forbidden(caller: &Caller, needed: Role, tool: &str) -> CallToolResult {
    error_result(format!(
        "`{tool}` needs the `{needed}` role (or higher); this key has `{}`. Ask an admin of \
         workspace {} for a key with that role (`agentkit keys create --role {needed}`)",
        caller.role, caller.workspace
    ))
}

/// The registered platform named by the request's `x-agentkit-platform` header.
fn platform_of(
    state: &AppState,
    parts: Option<&http::request::Parts>,
) -> Result<Option<Arc<Compiled>>, ErrorData> {
    let Some(v) = parts.and_then(|p| p.headers.get(PLATFORM_HEADER)) else {
        return Ok(None);
    };
    let name = v.to_str().unwrap_or("").trim();
    state.gatewayops.platform(name).map(Some).ok_or_else(|| {
        ErrorData::invalid_request(
            format!(
                "no registered platform `{}` (header {PLATFORM_HEADER}); the platforms are \
                 `gateway.platforms` in agentkit.yaml",
                name.escape_debug()
            ),
            None,
        )
    })
}

/// The caller-dependent tools of one workspace's `/mcp`.
pub(crate) struct CallerTools {
    /// The workspace the endpoint serves (a caller of another one sees nothing).
    pub(crate) scope: Scope,
}

impl CallerTools {
    /// The caller and state of an HTTP request, if it acts in this endpoint's workspace.
    fn caller(&self, parts: Option<&http::request::Parts>) -> Option<(Caller, AppState)> {
        who(parts).filter(|(c, _)| c.scope() == self.scope)
    }

    async fn federated(
        &self,
        caller: &Caller,
        state: &AppState,
        request: &RequestContext<RoleServer>,
    ) -> Result<Vec<Tool>, ErrorData> {
        if !caller.role.allows(Role::Invoker) {
            return Ok(Vec::new());
        }
        let platform = platform_of(state, parts_of(request))?;
        let ops = &state.gatewayops;
        let mut servers = ops.servers(&state.platform, caller);
        if let Some(p) = platform.as_ref().filter(|p| !p.default_servers.is_empty()) {
            servers.retain(|n| p.default_servers.contains(n));
        }
        let listed = futures::future::join_all(
            servers
                .iter()
                .map(|s| ops.server_tools(&state.platform, s, false)),
        )
        .await;
        let mut out = Vec::new();
        for (server, tools) in servers.iter().zip(listed) {
            let tools = match tools {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%server, error = %e, "an MCP server's tools could not be listed for /mcp");
                    continue;
                }
            };
            for t in &tools.tools {
                let name = tool_name(server, &t.name);
                if !ops.lists(&name, platform.as_deref()) {
                    continue;
                }
                let schema = match &t.input_schema {
                    Value::Object(o) => o.clone(),
                    _ => JsonObject::new(),
                };
                let description = t
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("Tool `{}` of MCP server `{server}`.", t.name));
                out.push(Tool::new(name, description, Arc::new(schema)));
            }
        }
        Ok(out)
    }

    /// A call of `server__tool` through the gateway's governed path (visibility, policy,
    /// safety, audit, credentials), as `POST /v1/servers/{name}/call_tool` makes it: the
    /// gateway's result, or the tool error that stands for it (`Err` inside: the call was
    /// not made), or the JSON-RPC error of a name that is not a tool. `as_task` (a client
    /// that declared MCP Tasks): a call its policies allow runs in a durable run and is
    /// answered `running` at once (see `GatewayOps::call_as_task`).
    #[allow(clippy::too_many_arguments)]
    async fn run_federated(
        &self,
        caller: &Caller,
        state: &AppState,
        name: &str,
        arguments: JsonObject,
        parts: Option<&http::request::Parts>,
        cancel: CancellationToken,
        as_task: bool,
    ) -> Result<Result<CallResult, CallToolResult>, ErrorData> {
        let Some((server, tool)) = name.split_once("__") else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`; list the tools with tools/list"),
                None,
            ));
        };
        if !caller.role.allows(Role::Invoker) {
            return Ok(Err(forbidden(caller, Role::Invoker, name)));
        }
        let ops = &state.gatewayops;
        // An `Idempotency-Key` header makes a retried POST answer the first call's result
        // (per workspace, as `/v1/execute` and `call_tool` do).
        let key = match parts.map(|p| crate::api::gatewayops::idempotency_header(&p.headers)) {
            Some(Err(p)) => return Err(ErrorData::invalid_params(p.detail, None)),
            Some(Ok(k)) => k,
            None => None,
        };
        let mut env = CallEnv::new(trace_id());
        env.cancel = cancel;
        env.platform = platform_of(state, parts)?;
        let request = Call {
            id: format!("mcp-{}", uuid::Uuid::now_v7().simple()),
            server: server.to_owned(),
            tool: tool.to_owned(),
            arguments,
            // A task is how a client asks for a long call: it may take the longest timeout
            // a request may ask for; a plain call waits the default.
            timeout: if as_task {
                ops.config().max_timeout
            } else {
                ops.config().default_timeout
            },
            cut: None,
        };
        let made = crate::api::gatewayops::call_keyed_as(
            state,
            caller,
            request,
            key.as_deref(),
            &env,
            as_task,
        )
        .await;
        let made = made.map_err(|refused| match refused {
            crate::gatewayops::idempotency::Refused::Unchecked(e) => ErrorData::internal_error(
                format!(
                    "tool call `{name}`: its Idempotency-Key could not be checked \
                                 ({e}); retry with the same key"
                ),
                None,
            ),
            other => ErrorData::invalid_request(format!("tool call `{name}`: {other}"), None),
        })?;
        match made {
            Ok(r) => Ok(Ok(r)),
            Err(McpFailure::NotFound(m)) => Err(ErrorData::invalid_params(
                format!("unknown tool `{name}`: {m}"),
                None,
            )),
            Err(e @ McpFailure::Upstream { .. }) => Ok(Err(error_result(e.to_string()))),
        }
    }

    /// [`run_federated`](Self::run_federated) as an MCP answer. For a client that declared
    /// MCP Tasks (`tasks`), a call that runs in a durable run — one its policies allow, or
    /// one that waits for an approval — is a task (the run's); for others a call that waits
    /// for an approval is a tool error saying which run to read.
    async fn call_federated(
        &self,
        caller: &Caller,
        state: &AppState,
        name: &str,
        arguments: JsonObject,
        call: &CallContext,
        tasks: bool,
    ) -> Result<CallToolResponse, ErrorData> {
        let parts = parts_of(call.request());
        let r = match self
            .run_federated(
                caller,
                state,
                name,
                arguments,
                parts,
                call.cancellation(),
                tasks,
            )
            .await?
        {
            Ok(r) => r,
            Err(refused) => return Ok(refused.into()),
        };
        if matches!(r.status, CallStatus::PendingApproval | CallStatus::Running)
            && let Some(run_id) = &r.run_id
            && tasks
        {
            let host = Arc::new(state.platform.runtime().clone());
            let task = agentkit_mcp::TaskBackend::get(
                &agentkit_mcp::WorkflowTasks::new(host),
                run_id,
                call.request(),
            )
            .await?;
            let task = crate::gatewayops::durable::gateway_task(task);
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task.task)));
        }
        Ok(tool_result(&r, name).into())
    }

    /// Call an operation or a federated tool; `tasks`: the client takes MCP Tasks.
    async fn answer(
        &self,
        name: &str,
        arguments: JsonObject,
        call: CallContext,
        tasks: bool,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some((caller, state)) = self.caller(parts_of(call.request())) else {
            return Err(unauthenticated());
        };
        if let Some(op) = op(name) {
            if !state.gatewayops.config().platform_tools {
                return Err(ErrorData::invalid_params(
                    format!(
                        "unknown tool `{name}`: the platform operations are turned off \
                         (`gateway.platform_tools: false`)"
                    ),
                    None,
                ));
            }
            return Ok(self
                .call_op(caller, AppState::clone(&state), op, arguments)
                .await
                .into());
        }
        self.call_federated(&caller, &state, name, arguments, &call, tasks)
            .await
    }

    async fn call_op(
        &self,
        caller: Caller,
        state: AppState,
        op: &Op,
        arguments: JsonObject,
    ) -> CallToolResult {
        if !caller.role.allows(op.role()) {
            return forbidden(&caller, op.role(), op.name);
        }
        let args = Value::Object(arguments);
        match op.name {
            "agentkit_runs_list" => match parse(op, args) {
                Ok(f) => answer(
                    "runs",
                    crate::api::v1::list_runs(axum::extract::State(state), caller, Query(f)).await,
                ),
                Err(e) => e,
            },
            "agentkit_runs_get" => match parse::<RunId>(op, args) {
                Ok(a) => answer(
                    "run",
                    crate::api::v1::get_run(axum::extract::State(state), caller, Path(a.run_id))
                        .await,
                ),
                Err(e) => e,
            },
            "agentkit_agents_list" => match parse::<NoArgs>(op, args) {
                Ok(NoArgs {}) => answer(
                    "agents",
                    crate::api::v1::list_agents(axum::extract::State(state), caller).await,
                ),
                Err(e) => e,
            },
            "agentkit_agents_promote" => match parse::<Promote>(op, args) {
                Ok(a) => {
                    let body = crate::api::v1::PromoteRequest {
                        from: a.from,
                        to: a.to,
                    };
                    answer(
                        "agent",
                        crate::api::v1::promote(
                            axum::extract::State(state),
                            caller,
                            Path(a.name),
                            Json(body),
                        )
                        .await,
                    )
                }
                Err(e) => e,
            },
            "agentkit_approvals_list" => match parse::<ApprovalsArgs>(op, args) {
                Ok(a) => {
                    // Always the caller's own workspace (the admin key included).
                    let q = crate::api::governance::ApprovalsQuery {
                        status: a.status,
                        workspace: Some(caller.workspace.to_string()),
                    };
                    answer(
                        "approvals",
                        crate::api::governance::list_approvals(
                            axum::extract::State(state),
                            caller,
                            Query(q),
                        )
                        .await,
                    )
                }
                Err(e) => e,
            },
            "agentkit_approvals_decide" => match parse::<Decide>(op, args) {
                Ok(a) => {
                    let by = crate::api::v1::decider(&caller);
                    let r = crate::api::v1::decide_call(
                        &state,
                        &caller,
                        &a.run_id,
                        a.call_id.as_deref(),
                        matches!(a.decision, Decision::Approve),
                        a.reason,
                        &by,
                    )
                    .await;
                    answer("run", r)
                }
                Err(e) => e,
            },
            other => error_result(format!("unknown operation `{other}`")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunId {
    run_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Promote {
    name: String,
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsArgs {
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Approve,
    Reject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decide {
    run_id: String,
    #[serde(default)]
    call_id: Option<String>,
    decision: Decision,
    #[serde(default)]
    reason: Option<String>,
}

/// The arguments of `op`, or the tool error saying what is wrong with them.
fn parse<T: DeserializeOwned>(op: &Op, args: Value) -> Result<T, CallToolResult> {
    serde_json::from_value(args).map_err(|e| {
        error_result(format!(
            "bad arguments for `{}`: {e}; its input schema lists what it takes",
            op.name
        ))
    })
}

/// A route's answer as a tool result: the JSON as text and as structured content (`{key:
/// value}`), or the problem's detail as a tool error.
fn answer<T: serde::Serialize>(key: &str, r: ApiResult<Json<T>>) -> CallToolResult {
    match r {
        Ok(Json(v)) => {
            let v = serde_json::to_value(v).unwrap_or(Value::Null);
            let mut out = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
            out.structured_content = Some(json!({ key: v }));
            out
        }
        Err(p) => error_result(format!("{} ({}): {}", p.title, p.status, p.detail)),
    }
}

#[async_trait]
impl agentkit_mcp::RequestTools for CallerTools {
    async fn list(&self, request: &RequestContext<RoleServer>) -> Result<Vec<Tool>, ErrorData> {
        let Some((caller, state)) = self.caller(parts_of(request)) else {
            return Ok(Vec::new());
        };
        let mut tools = self.federated(&caller, &state, request).await?;
        if state.gatewayops.config().platform_tools {
            tools.extend(
                ops()
                    .iter()
                    .filter(|o| caller.role.allows(o.role()))
                    .map(Op::tool),
            );
        }
        Ok(tools)
    }

    fn owns(&self, name: &str) -> bool {
        reserved(name)
    }

    async fn call(
        &self,
        name: &str,
        arguments: JsonObject,
        call: CallContext,
    ) -> Result<CallToolResult, ErrorData> {
        match self.answer(name, arguments, call, false).await? {
            CallToolResponse::Complete(r) => Ok(r),
            // Not asked for (tasks off).
            _ => Err(ErrorData::internal_error(
                format!("`{name}` answered a task where a tool result was expected"),
                None,
            )),
        }
    }

    async fn call_response(
        &self,
        name: &str,
        arguments: JsonObject,
        call: CallContext,
    ) -> Result<CallToolResponse, ErrorData> {
        let tasks = call
            .request()
            .client_capabilities()
            .is_some_and(|caps| caps.supports_tasks());
        self.answer(name, arguments, call, tasks).await
    }

    /// Federated tools: their gateway call sends nothing to the client before its result,
    /// and answers a task only to a client that declared MCP Tasks (which the HTTP front
    /// does not send here).
    fn calls_directly(&self, name: &str) -> bool {
        name.contains("__") && op(name).is_none()
    }

    async fn call_direct(
        &self,
        name: &str,
        arguments: JsonObject,
        call: DirectCall,
    ) -> Result<CallToolResult, ErrorData> {
        let Some((caller, state)) = self.caller(Some(&call.parts)) else {
            return Err(unauthenticated());
        };
        let r = self
            .run_federated(
                &caller,
                &state,
                name,
                arguments,
                Some(&call.parts),
                call.cancel,
                false,
            )
            .await?;
        Ok(match r {
            Ok(r) => tool_result(&r, name),
            Err(refused) => refused,
        })
    }

    fn shows(&self, name: &str, request: &RequestContext<RoleServer>) -> bool {
        // The registered tools are the agents: calling one starts a run (`invoker`).
        let _ = name;
        caller_of(request).is_some_and(|c| c.scope() == self.scope && c.role.allows(Role::Invoker))
    }
}
