//! `/mcp`: the platform as an MCP server (streamable HTTP, both lifecycles: `initialize`
//! sessions on 2025-11-25 and stateless 2026-07-28 requests).
//!
//! Every deployed agent and workflow is a tool of the same name (characters outside
//! `[a-zA-Z0-9_-]` replaced) whose call is a durable run:
//!
//! | argument | |
//! |---|---|
//! | `message` (required) | what to ask |
//! | `thread_id` | continue this thread's conversation (create it with `POST /v1/threads`) |
//! | `version` | a label (`prod`) or a version number; default `latest` |
//! | `idempotency_key` | same key, same run (per workspace and agent; the same key with another `message` or `thread_id` is an error result) |
//!
//! A plain `tools/call` waits for the run and answers with its text (structured content:
//! `run_id`, `status`, `version`, `output`); the client's `notifications/cancelled` cancels the
//! run, and each step of the run is sent as a progress notification when the client asked for
//! progress. A run that stops to wait for input or an approval answers with its run id and
//! what to do. A client that declares the MCP Tasks extension gets a task whose id is the run
//! id instead (`tasks/get` polls it from the store, so any node answers; `tasks/cancel`
//! cancels the run; `tasks/update` signals a waiting run): see
//! [`agentkit_mcp::WorkflowTasks`] for the status mapping.
//!
//! The tool list follows the registry: an agent deployed on any node appears within the
//! server's sync period (2 s), and sessions are told that the list changed. Requests need an
//! API key like every other route, and each workspace has its own endpoint behind the same
//! path: a key sees and calls its workspace's agents only, and MCP Tasks are its workspace's
//! runs (another workspace's run id is an unknown task). The `Host` header is not
//! restricted (the key is the protection), browser `Origin`s must be loopback ones.
//!
//! Beside the agents, the endpoint serves (see [`tools`]):
//!
//! - the workspace's outbound MCP servers (those `gateway.servers` gives it), each tool as
//!   `server__tool`, called through the gateway's governed path: the gateway policy, the
//!   safety checks, the audit log and the workspace's vault credentials, exactly like
//!   `POST /v1/servers/{name}/call_tool`. `tools/list` leaves out what the policy denies. A
//!   call that needs an approval waits durably as a run (see
//!   [`gatewayops::durable`](crate::gatewayops::durable)): a client that declared MCP Tasks
//!   gets that run as a task (`working` while it waits, `completed` with the tool's own
//!   result), others a tool error naming the run. A client that declared MCP Tasks gets
//!   every call its policies allow as a task too: the call runs in a durable run of the same
//!   workflow (`working`, then `completed` with the tool's own result; `tasks/cancel`
//!   cancels the run and the call in flight upstream). A denied call is a tool error for
//!   every client, with no run. Other clients' calls are answered when they end, as before.
//! - the platform's operations (`agentkit_runs_list`, `agentkit_runs_get`,
//!   `agentkit_agents_list`, `agentkit_agents_promote`, `agentkit_approvals_list`,
//!   `agentkit_approvals_decide`), each needing the role of its HTTP route and scoped to the
//!   caller's workspace; `gateway.platform_tools: false` turns them off.
//!
//! What a key sees follows its role: `viewer` the read-only operations, `invoker` also the
//! agents and the federated tools, `operator` also approval decisions, `developer` also
//! promotion.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};

use agentkit_core::{RunStatus, sync};
use agentkit_mcp::rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, InputResponses,
    JsonObject,
};
use agentkit_mcp::rmcp::service::RequestContext;
use agentkit_mcp::rmcp::{ErrorData, RoleServer};
use agentkit_mcp::{CallContext, HttpOptions, McpServer, McpServerBuilder, TaskBackend};
use agentkit_mcp::{McpHttpService, WorkflowTasks};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::platform::{KeyedStart, Platform, StartRun};
use crate::tenancy::{Role, Scope};

pub(crate) mod tools;

/// The principal of runs started through a workspace's `/mcp` (its organisation and
/// workspace; the stored prefix is `<org>~<workspace>~`).
fn scope_principal(scope: &Scope) -> Option<agentkit_core::Principal> {
    let mut parts = scope.prefix().split(crate::tenancy::SEP);
    let (org, ws) = (parts.next()?, parts.next()?);
    (!org.is_empty()).then(|| agentkit_core::Principal::new(org, ws))
}

/// The arguments of an agent's tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentCall {
    message: String,
    #[serde(default)]
    thread_id: Option<String>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

impl AgentCall {
    fn parse(tool: &str, args: JsonObject) -> Result<Self, String> {
        serde_json::from_value(Value::Object(args)).map_err(|e| {
            format!(
                "bad arguments for `{tool}`: {e}; send {{\"message\": \"…\"}} and optionally \
                 `thread_id`, `version` (a label or number) and `idempotency_key`"
            )
        })
    }

    fn into_start(self, agent: &str, scope: &Scope) -> Result<StartRun, String> {
        let mut req = StartRun::new(agent, self.message);
        req.principal = scope_principal(scope);
        req.thread_id = self.thread_id;
        req.idempotency_key = self.idempotency_key;
        req.reference = match self.version {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(format!(
                    "`version` must be a label or a version number, got {other}"
                ));
            }
        };
        Ok(req)
    }
}

fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "What to ask."},
            "thread_id": {"type": "string", "description": "Continue this thread's conversation."},
            "version": {
                "type": ["string", "integer"],
                "description": "A label (e.g. `prod`) or a version number; default `latest`."
            },
            "idempotency_key": {"type": "string", "description": "Same key, same run."}
        },
        "required": ["message"],
        "additionalProperties": false
    })
}

/// Tool name → agent name, shared by the tool handlers and the task backend.
type ToolMap = Arc<RwLock<BTreeMap<String, String>>>;

/// The `/mcp` endpoint of a [`Platform`].
#[derive(Clone)]
pub(crate) struct Gateway {
    server: McpServer,
    tools: ToolMap,
    /// Tool → (agent, description) as last served (a new description re-adds the tool).
    served: Arc<std::sync::Mutex<BTreeMap<String, (String, String)>>>,
    platform: Weak<Platform>,
    /// The workspace it serves.
    scope: Scope,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("tools", &*sync::read(&self.tools))
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `platform` (held weakly: the platform owns the gateway) serving the
    /// workspace of `scope`.
    pub(crate) fn new(platform: Weak<Platform>, scope: Scope) -> Self {
        let tools = ToolMap::default();
        let tasks = PlatformTasks {
            platform: platform.clone(),
            tools: Arc::clone(&tools),
            scope: scope.clone(),
        };
        let server = McpServerBuilder::new("agentkit", env!("CARGO_PKG_VERSION"))
            .instructions(
                "Tools with plain names are agents or workflows of this agentkit server; a \
                 call is a durable run (pass `thread_id` to continue a conversation). \
                 `server__tool` tools are the workspace's MCP servers, called under its \
                 policy and audit log; `agentkit_*` tools operate the platform (runs, \
                 agents, approvals).",
            )
            .tasks(Arc::new(tasks))
            .request_tools(Arc::new(tools::CallerTools {
                scope: scope.clone(),
            }))
            .build();
        Self {
            server,
            tools,
            served: Arc::default(),
            platform,
            scope,
        }
    }

    /// Tell this endpoint's clients that its tool list changed (legacy sessions get
    /// `notifications/tools/list_changed`; 2026-07-28 listeners get it on their stream).
    pub(crate) async fn tools_changed(&self) {
        self.server.notify_tool_list_changed().await;
    }

    /// The streamable HTTP service to mount at `/mcp`. A stateless (2026-07-28) request
    /// whose handler sends nothing before its result is answered with plain JSON; one that
    /// sends progress first gets an SSE stream (legacy sessions always do). Its sessions and
    /// streams end when the server starts shutting down.
    pub(crate) fn service(&self) -> McpHttpService {
        let stopping = self
            .platform
            .upgrade()
            .map(|p| p.stopping.child_token())
            .unwrap_or_default();
        self.server.clone().into_http_service(
            HttpOptions::new()
                .with_allowed_hosts(std::iter::empty::<String>())
                .with_json_response(true)
                .with_cancellation(stopping),
        )
    }

    /// Make the tool list match `entries` (stored agent names and descriptions, of every
    /// workspace): add this workspace's new ones, remove the gone.
    pub(crate) async fn sync(&self, entries: &[(String, String)]) {
        let mut wanted = BTreeMap::new();
        for (name, description) in entries {
            let Some(name) = self.scope.external(name) else {
                continue;
            };
            let name = &name.to_owned();
            let tool = agentkit_mcp::names::sanitize(name);
            if tools::reserved(&tool) {
                tracing::warn!(agent = %name, %tool, "an agent's MCP tool name has the shape of a federated tool (`__`) or a platform operation; it is not served on /mcp (rename the agent)");
                continue;
            }
            if wanted.contains_key(&tool) {
                tracing::warn!(agent = %name, %tool, "two agents map to one MCP tool name; the first is served");
                continue;
            }
            wanted.insert(tool, (name.clone(), description.clone()));
        }
        let current = sync::lock(&self.served).clone();
        for tool in current.keys().filter(|t| !wanted.contains_key(*t)) {
            sync::write(&self.tools).remove(tool);
            sync::lock(&self.served).remove(tool);
            self.server.remove_tool(tool).await;
        }
        for (tool, (agent, description)) in wanted {
            let entry = (agent.clone(), description.clone());
            if current.get(&tool) == Some(&entry) {
                continue;
            }
            sync::write(&self.tools).insert(tool.clone(), agent.clone());
            sync::lock(&self.served).insert(tool.clone(), entry);
            let weak = self.platform.clone();
            let scope = self.scope.clone();
            let name = tool.clone();
            let description = if description.is_empty() {
                format!("Run agent `{agent}` (a durable run).")
            } else {
                format!("{description} (agent `{agent}`; a durable run)")
            };
            self.server
                .add_tool_fn(tool, description, input_schema(), move |args, call| {
                    let weak = weak.clone();
                    let agent = agent.clone();
                    let name = name.clone();
                    let scope = scope.clone();
                    async move {
                        let Some(platform) = weak.upgrade() else {
                            return Err(ErrorData::internal_error("the server is stopping", None));
                        };
                        Ok(call_agent(&platform, &scope, &name, &agent, args, call).await)
                    }
                })
                .await;
        }
    }
}

fn error_result(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A plain `tools/call`: start the run, forward its steps as progress, wait for it.
async fn call_agent(
    platform: &Arc<Platform>,
    scope: &Scope,
    tool: &str,
    agent: &str,
    args: JsonObject,
    call: CallContext,
) -> CallToolResult {
    let start = match AgentCall::parse(tool, args).and_then(|a| a.into_start(agent, scope)) {
        Ok(s) => s,
        Err(e) => return error_result(e),
    };
    let keyed = KeyedStart::of(&start);
    let run = match platform.start(start).await {
        Ok(r) => r,
        Err(e) => return error_result(format!("starting agent `{agent}` failed: {e}")),
    };
    if let Some(Err(e)) = keyed.map(|k| k.check(scope, &run)) {
        return error_result(e);
    }
    let run_id = run.id.clone();
    let cancel = call.cancellation();
    let wants_progress = call.request().meta.get_progress_token().is_some();
    let progress = {
        let platform = Arc::clone(platform);
        let run_id = run_id.clone();
        async move {
            if !wants_progress {
                return std::future::pending().await;
            }
            let mut after = None;
            let mut n = 0.0;
            loop {
                if let Ok(events) = platform.events(&run_id, after, 100).await {
                    for e in events {
                        after = Some(e.id);
                        n += 1.0;
                        let what = match e.event.as_str() {
                            "model" => "model answered".to_owned(),
                            "tool_result" => format!("tool result {}", e.key),
                            other => format!("{other} {}", e.key),
                        };
                        call.progress(n, None, Some(what)).await;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    };
    let finished = tokio::select! {
        r = platform.wait(&run_id) => r,
        _ = progress => unreachable_progress(),
        () = cancel.cancelled() => {
            if let Err(e) = platform
                .runtime()
                .cancel_with_reason(&run_id, "cancelled by the MCP client")
                .await
            {
                tracing::warn!(run = %run_id, error = %e, "cancelling a run for its MCP client failed");
            }
            return error_result(format!("run {run_id} was cancelled"));
        }
    };
    let run = match finished {
        Ok(r) => r,
        Err(e) => return error_result(format!("waiting for run {run_id} failed: {e}")),
    };
    let structured = json!({
        "run_id": run.id,
        "status": run.status,
        "version": run.version,
        "output": run.output,
    });
    let mut result = match run.status {
        RunStatus::Succeeded => {
            let text = match run.output.as_ref().and_then(|o| o.get("text")) {
                Some(Value::String(s)) => s.clone(),
                _ => run.output.clone().unwrap_or(Value::Null).to_string(),
            };
            CallToolResult::success(vec![ContentBlock::text(text)])
        }
        RunStatus::WaitingInput | RunStatus::WaitingApproval | RunStatus::Paused => {
            CallToolResult::success(vec![ContentBlock::text(format!(
                "run {} is {}: continue it with POST /v1/runs/{}/signal (or approve), then \
                 read it with GET /v1/runs/{}",
                run.id, run.status, run.id, run.id
            ))])
        }
        _ => error_result(format!(
            "run {} {}: {}",
            run.id,
            run.status,
            run.error.as_deref().unwrap_or("no reason recorded")
        )),
    };
    result.structured_content = Some(structured);
    result
}

/// The progress loop never ends on its own.
fn unreachable_progress() -> agentkit_core::Result<agentkit_runtime::RunRecord> {
    Err(agentkit_core::Error::Unavailable {
        what: "progress".into(),
        message: "the progress loop stopped".into(),
    })
}

/// Whether the caller may drive a task (answer or cancel it): `invoker`, who may start runs.
fn may_control(request: &RequestContext<RoleServer>) -> Result<(), ErrorData> {
    match tools::caller_of(request) {
        Some(c) if c.role.allows(Role::Invoker) => Ok(()),
        Some(c) => Err(ErrorData::invalid_request(
            format!(
                "answering or cancelling a task needs the `invoker` role (or higher); this key \
                 has `{}`",
                c.role
            ),
            None,
        )),
        // Not served over the authenticated HTTP route (an in-process server): no roles.
        None => Ok(()),
    }
}

/// Agent calls as MCP Tasks: the task id is the run id; reads go to the store.
struct PlatformTasks {
    platform: Weak<Platform>,
    tools: ToolMap,
    scope: Scope,
}

impl PlatformTasks {
    fn platform(&self) -> Result<Arc<Platform>, ErrorData> {
        self.platform
            .upgrade()
            .ok_or_else(|| ErrorData::internal_error("the server is stopping", None))
    }

    fn runs(&self) -> Result<WorkflowTasks, ErrorData> {
        let runtime = self.platform()?.runtime().clone();
        Ok(WorkflowTasks::new(Arc::new(runtime)))
    }

    /// `task_id` if it is a run of this workspace; otherwise the error of a task that does
    /// not exist.
    async fn check(&self, task_id: &str) -> Result<agentkit_runtime::RunRecord, ErrorData> {
        match self.platform()?.run_in(&self.scope, task_id).await {
            Ok(r) => Ok(r),
            Err(e) if e.is_not_found() => Err(ErrorData::invalid_params(
                format!("no task `{task_id}` (task ids are the run ids tools/call returned)"),
                None,
            )),
            Err(e) => Err(ErrorData::internal_error(
                format!("reading run `{task_id}` failed: {e}; try again"),
                None,
            )),
        }
    }
}

#[async_trait]
impl TaskBackend for PlatformTasks {
    fn runs_as_task(&self, tool: &str) -> bool {
        sync::read(&self.tools).contains_key(tool)
    }

    async fn start(
        &self,
        tool: &str,
        arguments: JsonObject,
        request: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(agent) = sync::read(&self.tools).get(tool).cloned() else {
            return Err(ErrorData::invalid_params(
                format!("no agent is served as tool `{tool}`; list the tools again"),
                None,
            ));
        };
        let start = match AgentCall::parse(tool, arguments)
            .and_then(|a| a.into_start(&agent, &self.scope))
        {
            Ok(s) => s,
            Err(e) => return Ok(error_result(e).into()),
        };
        let keyed = KeyedStart::of(&start);
        let run = match self.platform()?.start(start).await {
            Ok(r) => r,
            Err(e) => {
                return Ok(error_result(format!("starting agent `{agent}` failed: {e}")).into());
            }
        };
        if let Some(Err(e)) = keyed.map(|k| k.check(&self.scope, &run)) {
            return Ok(error_result(e).into());
        }
        let task = self.runs()?.get(&run.id, request).await?.task;
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get(
        &self,
        task_id: &str,
        request: &RequestContext<RoleServer>,
    ) -> Result<DetailedTask, ErrorData> {
        let run = self.check(task_id).await?;
        let task = self.runs()?.get(task_id, request).await?;
        if crate::gatewayops::durable::is_gateway_target(&run.target) {
            // A gateway call (running as a task, or waiting for an approval): its result is
            // the tool's.
            return Ok(crate::gatewayops::durable::gateway_task(task));
        }
        Ok(task)
    }

    async fn update(
        &self,
        task_id: &str,
        responses: InputResponses,
        request: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        may_control(request)?;
        let run = self.check(task_id).await?;
        if crate::gatewayops::durable::is_gateway_target(&run.target) {
            // It takes no input; its approval, if it needs one, is an operator's, in the
            // approval queue (who decided, why).
            return Err(ErrorData::invalid_request(
                format!(
                    "task `{task_id}` is a gateway call, which takes no input; if it waits for \
                     an approval, an operator decides it in the approval queue (POST \
                     /v1/approvals/{task_id}/{{call_id}}/approve or /reject, \
                     agentkit_approvals_decide), not tasks/update"
                ),
                None,
            ));
        }
        self.runs()?.update(task_id, responses, request).await
    }

    async fn cancel(
        &self,
        task_id: &str,
        request: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        may_control(request)?;
        self.check(task_id).await?;
        let platform = self.platform()?;
        const REASON: &str = "cancelled by the MCP client (tasks/cancel)";
        match platform.runtime().cancel_with_reason(task_id, REASON).await {
            // A cancel made is audited (`runs.cancel`) before the answer, as on the HTTP
            // routes; an already-ended run changed nothing.
            Ok(()) => match tools::caller_and_state(request) {
                Some((caller, state)) => state
                    .audit_change(
                        &caller,
                        &caller.workspace,
                        "runs.cancel",
                        task_id,
                        serde_json::json!({ "reason": REASON }),
                    )
                    .await
                    .map_err(|p| ErrorData::internal_error(p.detail, None)),
                None => Ok(()),
            },
            Err(agentkit_core::Error::InvalidState { .. }) => Ok(()),
            Err(e) if e.is_not_found() => Err(ErrorData::invalid_params(
                format!("no task `{task_id}` (task ids are the run ids tools/call returned)"),
                None,
            )),
            Err(e) => Err(ErrorData::internal_error(
                format!("cancelling run `{task_id}` failed: {e}; try again"),
                None,
            )),
        }
    }
}
