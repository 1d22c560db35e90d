//! Gateway calls as durable runs: calls that need an approval, and federated `/mcp` calls
//! from MCP Tasks clients.
//!
//! A gateway call (`/v1/execute`, its stream, the WebSocket, `POST /v1/servers/{name}/call_tool`,
//! a federated `server__tool` over `/mcp`) has no durable run of its own, so it cannot wait for a
//! human. When the policy stack answers `require_approval` for one (a policy's
//! `require_approval` glob or chain rule, a platform's `require_approval_for`, a safety check
//! with action `require_approval`), the gateway does not ask; it hands the call to a durable run
//! of the built-in workflow [`GATEWAY_CALL`] in the caller's workspace, started by the caller
//! (the run carries its principal), and answers `pending_approval` with the run id at once.
//!
//! The run's one journaled step is the same call through the same gateway call
//! path — the same policies, platform rules, safety checks and audit log — now with the
//! runtime's approval handler: the policy asks again (its verdict journaled), the call enters
//! the approval queue (`GET /v1/approvals`, `agentkit approvals`, `agentkit_approvals_*` over
//! `/mcp`) under the run's id and the client's call id, and the run persists as
//! `waiting_approval`. Approved on any node, the run re-executes from its journal and makes
//! the call with the same arguments, once; its output is the call's [`CallResult`]. Rejected
//! (or expired), the run fails with the reason. Everything survives a restart: the run, its
//! journal and the queue are in the store, and every process registers the workflow for the
//! workspaces that used it (the `agentkit.gateway_targets` documents) before it recovers runs.
//!
//! The same workflow runs a federated `server__tool` call over `/mcp` from a client that
//! declared MCP Tasks, when its policies allow it: the run is started at once and the client
//! gets it as a task (for the gateway, status [`CallStatus::Running`] with the run id). Its
//! step is the same call through the same path; the policy allows it again (audited under the
//! run's id) and no approval is asked. Cancelling the run (`tasks/cancel`,
//! `POST /v1/runs/{run_id}/cancel`) cancels the call in flight: the connection sends the
//! server `notifications/cancelled`, and the run ends `cancelled` without a result. What only
//! the call itself can tell — a safety check of its arguments, a rate limit — is decided in
//! the run: an approval is waited for as above, a refusal fails the run with the reason. A
//! call a policy denies, or one that needs an approval, is not started this way: the denial is
//! answered at once (audited, no run), the approval waits in its run as above.
//!
//! The run's input holds what the run needs to make the exact call, and no more in clear:
//! with a master key (the vault), the call's arguments are sealed with it (XChaCha20-Poly1305,
//! bound to the call's trace and id), so a credential passed as an argument is not in the
//! database while the call waits; without one they are stored as given. It also holds the
//! tools of the caller's earlier successful calls (the history its chain rules were decided
//! on: the caller's key's earlier gateway calls), so the run decides the call as the gateway
//! did.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use agentkit_core::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, Error, Result, RunContext, RunStatus,
    StartOptions,
};
use agentkit_runtime::{Expect, RetryPolicy, TargetOptions, Workflow, WorkflowContext};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Call, CallEnv, CallResult, CallStatus, GatewayOps, Made, millis, tool_name};
use crate::platform::Platform;
use crate::servers::McpFailure;
use crate::tenancy::{Caller, SEP, WorkspaceId};

/// The name of the built-in workflow a gateway call that needs an approval runs as (in a
/// workspace: `<org>~<workspace>~agentkit.gateway_call`; no agent can have this name, since
/// agent names have no `.`).
pub const GATEWAY_CALL: &str = "agentkit.gateway_call";

/// Documents (id = the stored target name) of the workspaces whose gateway calls became
/// durable runs: every process registers [`GATEWAY_CALL`] for them.
const GATEWAY_TARGETS: &str = "agentkit.gateway_targets";

/// The journal key of the call's step (and the tool call key its verdict and approval are
/// journaled under).
const STEP: &str = "gateway_call";

/// Whether `target` (a stored target name) is a workspace's [`GATEWAY_CALL`].
pub(crate) fn is_gateway_target(target: &str) -> bool {
    target.rsplit(SEP).next() == Some(GATEWAY_CALL)
}

/// The approval handler of a gateway call outside a run: it answers nobody, so the policy
/// layer stops, and the gateway hands the call to a durable run (its audit sink noted the
/// request and kept it out of the queue).
pub(crate) struct Handoff;

#[async_trait]
impl ApprovalHandler for Handoff {
    async fn approve(&self, request: ApprovalRequest, _: &RunContext) -> Result<ApprovalDecision> {
        Err(Error::Workflow(format!(
            "the call of `{}` needs an approval; it is handed to a durable run",
            request.tool
        )))
    }
}

/// The input of a [`GATEWAY_CALL`] run (beside the `principal` the server adds).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub(crate) struct GatewayCallInput {
    /// The client's id of the call (its id in the approval queue).
    pub(crate) call_id: String,
    /// The outbound MCP server.
    pub(crate) server: String,
    /// The tool.
    pub(crate) tool: String,
    /// Its arguments (empty when they are sealed in `sealed_arguments`).
    #[serde(default)]
    pub(crate) arguments: Map<String, Value>,
    /// Its arguments as JSON text sealed by the vault for [`arguments_slot`], when the server
    /// has a master key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sealed_arguments: Option<Value>,
    /// The tools of the caller's earlier successful gateway calls, oldest first: the history
    /// its chain rules were decided on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) earlier_calls: Vec<String>,
    /// The call's timeout once approved.
    pub(crate) timeout_ms: u64,
    /// The trace of the request that made it.
    pub(crate) trace_id: String,
    /// The registered platform the client called through (`x-agentkit-platform`), if any.
    #[serde(default)]
    pub(crate) platform: Option<String>,
}

/// The built-in workflow of one workspace: make one gateway call in a durable run.
struct GatewayCall {
    name: String,
    platform: Weak<Platform>,
    ops: Arc<GatewayOps>,
}

#[async_trait]
impl Workflow for GatewayCall {
    type Input = GatewayCallInput;
    type Output = Value;

    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        "A gateway tool call made in a durable run: one that needs an approval waits in the \
         approval queue first; the call is made once, and the output is its result."
    }

    async fn run(&self, wctx: &WorkflowContext, input: GatewayCallInput) -> Result<Value> {
        let platform = self.platform.upgrade().ok_or_else(|| Error::Unavailable {
            what: "the server".into(),
            message: "it is stopping; the run resumes on the next start".into(),
        })?;
        let run_ctx = wctx.run_context().clone();
        let workspace = run_ctx
            .principal()
            .and_then(|p| Some(WorkspaceId::new(p.tenant.clone()?, p.workspace.clone()?)))
            .unwrap_or_else(WorkspaceId::default_workspace);
        let compiled = match &input.platform {
            None => None,
            Some(name) => Some(self.ops.platform(name).ok_or_else(|| {
                Error::invalid_state(
                    format!("gateway call {} of run {}", input.call_id, wctx.run_id()),
                    format!(
                        "it was made through platform `{name}`, which is no longer registered \
                         (gateway.platforms); the call was not made"
                    ),
                )
            })?),
        };
        let env = CallEnv {
            platform: compiled,
            ..CallEnv::new(input.trace_id.clone())
        };
        let name = tool_name(&input.server, &input.tool);
        let label = name.clone();
        let arguments = match &input.sealed_arguments {
            None => input.arguments,
            Some(sealed) => open_arguments(&self.ops, &input.trace_id, &input.call_id, sealed)?,
        };
        let call = Call {
            id: input.call_id.clone(),
            server: input.server,
            tool: input.tool,
            arguments,
            timeout: Duration::from_millis(input.timeout_ms.max(1)),
            cut: None,
        };
        // The history the gateway decided the call on (chain rules see the same here).
        for tool in &input.earlier_calls {
            run_ctx.record_tool_result(tool, false);
        }
        let caller = super::history::caller_key(
            &workspace,
            run_ctx.principal().and_then(|p| p.key_id.as_deref()),
        );
        let ctx = run_ctx.clone().with_tool_call_key(STEP);
        let ops = Arc::clone(&self.ops);
        let run_id = wctx.run_id().to_owned();
        let result: CallResult = run_ctx
            .step(STEP, async move {
                let cancelled = ctx.cancellation().clone();
                match ops
                    .call_in(&platform, &workspace, call, &env, ctx, false)
                    .await
                {
                    // The run was cancelled (or paused) while the call was in flight: the
                    // connection told the server to cancel it. Nothing is journaled, so a
                    // resumed run makes the call again.
                    Ok(Made::Done(r))
                        if r.status == CallStatus::Cancelled && cancelled.is_cancelled() =>
                    {
                        Err(Error::Cancelled { run_id })
                    }
                    Ok(Made::Done(r)) => Ok(r),
                    Ok(Made::NeedsApproval(why)) => Err(Error::invalid_state(
                        format!("gateway call `{name}`"),
                        format!("it needs an approval ({why}), but no one was asked"),
                    )),
                    // Also the run's own stop: it waits for the approval.
                    Err(McpFailure::Upstream { source, .. }) => Err(source),
                    Err(McpFailure::NotFound(m)) => Err(Error::InvalidRequest(m)),
                }
            })
            .await?;
        self.ops.note_call(&caller, &label, result.status);
        if matches!(result.status, CallStatus::Denied | CallStatus::RateLimited) {
            // Rejected, expired, denied by a policy changed since, or over a rate limit: the
            // run ends with why.
            return Err(Error::Tool {
                tool: label,
                message: result.error.unwrap_or_default(),
                source: None,
            });
        }
        // The output is stored with the run: masked as the journal keeps the result (a
        // credential a tool answers with is not stored in clear).
        let mut output = serde_json::to_value(result)
            .map_err(|e| Error::json("encoding a gateway call's result", e))?;
        agentkit_runtime::Redactor::default().apply(&mut output);
        Ok(output)
    }
}

impl Platform {
    /// Make sure the runtime executes [`GATEWAY_CALL`] runs of target `target` (a workspace's
    /// stored name of it), and that every process will: the first time, the workspace is
    /// recorded in the store.
    pub(crate) async fn ensure_gateway_target(&self, target: &str) -> Result<()> {
        if self.is_registered(target) {
            return Ok(());
        }
        self.runtime()
            .store()
            .doc_put(
                GATEWAY_TARGETS,
                target,
                json!({"target": target}),
                Expect::Any,
            )
            .await?;
        self.register_gateway_target(target)
    }

    /// Register [`GATEWAY_CALL`] runs of `target` with this process's runtime (recorded in the
    /// store already).
    fn register_gateway_target(&self, target: &str) -> Result<()> {
        let ops = self
            .gatewayops
            .get()
            .cloned()
            .ok_or_else(|| Error::Unavailable {
                what: format!("run target `{target}`"),
                message: "this server has no gateway".into(),
            })?;
        self.runtime().register_workflow(
            GatewayCall {
                name: target.to_owned(),
                platform: self.this.get().cloned().unwrap_or_default(),
                ops,
            },
            // An approved call whose server cannot be reached (a stdio server still starting,
            // a restart) is tried again from the journal, its approval replayed; a rejection
            // or a tool's answer is final.
            TargetOptions::new()
                .with_retry(
                    RetryPolicy::new()
                        .with_max_attempts(5)
                        .with_backoff(Duration::from_millis(500), Duration::from_secs(10)),
                )
                .with_description("a gateway call in a durable run"),
        );
        self.mark_registered(target);
        Ok(())
    }

    /// Register [`GATEWAY_CALL`] for every workspace whose gateway calls became runs (at start,
    /// before recovery, and periodically for workspaces another process recorded).
    pub(crate) async fn sync_gateway_targets(&self) -> Result<()> {
        if self.gatewayops.get().is_none() {
            return Ok(());
        }
        // Every workspace's: one left out would keep its deferred calls from running here.
        let mut pages = crate::pages::DocPages::new(&**self.runtime().store(), GATEWAY_TARGETS, "");
        while let Some(page) = pages.next().await? {
            for d in page {
                if is_gateway_target(&d.id) && !self.is_registered(&d.id) {
                    self.register_gateway_target(&d.id)?;
                }
            }
        }
        Ok(())
    }
}

/// Start a durable run of [`GATEWAY_CALL`] in `caller`'s workspace, with the caller's
/// principal, that makes `call` (in `env`'s trace, through `env`'s platform): the run.
async fn start(
    platform: &Platform,
    caller: &Caller,
    call: &Call,
    env: &CallEnv,
    earlier_calls: Vec<String>,
) -> std::result::Result<agentkit_runtime::RunRecord, McpFailure> {
    let upstream = |source: Error| McpFailure::Upstream {
        server: call.server.clone(),
        source,
    };
    let target = format!("{}{GATEWAY_CALL}", caller.scope().prefix());
    platform
        .ensure_gateway_target(&target)
        .await
        .map_err(upstream)?;
    let sealer = platform.gatewayops.get().and_then(|ops| ops.sealer());
    let (arguments, sealed_arguments) = if let Some(vault) = sealer {
        let text = serde_json::to_string(&call.arguments)
            .map_err(|e| upstream(Error::json("encoding a call's arguments", e)))?;
        let sealed = vault
            .seal_data(&arguments_slot(&env.trace_id, &call.id), &text)
            .map_err(upstream)?;
        (Map::new(), Some(sealed))
    } else {
        (call.arguments.clone(), None)
    };
    let input = GatewayCallInput {
        call_id: call.id.clone(),
        server: call.server.clone(),
        tool: call.tool.clone(),
        arguments,
        sealed_arguments,
        earlier_calls,
        timeout_ms: millis(call.asked_timeout()),
        trace_id: env.trace_id.clone(),
        platform: env.platform.as_ref().map(|p| p.name.clone()),
    };
    let mut input =
        serde_json::to_value(input).map_err(|e| upstream(Error::json("encoding a call", e)))?;
    input["principal"] = serde_json::to_value(caller.principal())
        .map_err(|e| upstream(Error::json("encoding the caller", e)))?;
    if let Some(tp) = agentkit_core::trace::current_traceparent() {
        input["traceparent"] = Value::String(tp);
    }
    platform
        .runtime()
        .start_run_record(&target, input, StartOptions::new())
        .await
        .map_err(upstream)
}

/// Hand `call`, which its policies allow, to a durable run in `caller`'s workspace and answer
/// at once: [`CallStatus::Running`] with the run's id (the MCP task of a client that declared
/// MCP Tasks). The run makes the call once; its output is the call's result.
pub(crate) async fn run_as_task(
    platform: &Platform,
    caller: &Caller,
    call: Call,
    env: &CallEnv,
    earlier_calls: Vec<String>,
) -> std::result::Result<CallResult, McpFailure> {
    let started = Instant::now();
    let run = start(platform, caller, &call, env, earlier_calls).await?;
    let name = tool_name(&call.server, &call.tool);
    let mut result = CallResult::failed(
        &call.id,
        CallStatus::Running,
        format!(
            "the call of `{name}` runs as run {} (call `{}`); its result is the run's output: \
             read it with GET /v1/runs/{} (or the MCP tool agentkit_runs_get), or cancel it with \
             POST /v1/runs/{}/cancel",
            run.id, call.id, run.id, run.id
        ),
        started.elapsed(),
    );
    result.run_id = Some(run.id);
    result.call_id = Some(call.id);
    Ok(result)
}

/// Hand `call`, which needs an approval (`why`), to a durable run in `caller`'s workspace and
/// answer `pending_approval` (or, if the run ended within the call's timeout — a policy that
/// no longer asks — its result).
pub(crate) async fn defer(
    platform: &Platform,
    caller: &Caller,
    call: Call,
    env: &CallEnv,
    why: &str,
    earlier_calls: Vec<String>,
) -> std::result::Result<CallResult, McpFailure> {
    let started = Instant::now();
    let name = tool_name(&call.server, &call.tool);
    let run = start(platform, caller, &call, env, earlier_calls).await?;
    // Answer once the call is in the approval queue (or the run ended): at most the call's
    // timeout.
    let seen = tokio::select! {
        r = tokio::time::timeout(call.timeout, platform.wait(&run.id)) => r.ok().and_then(Result::ok),
        () = env.cancel.cancelled() => None,
    };
    let took = started.elapsed();
    let mut result = match seen {
        Some(r) if r.status == RunStatus::Succeeded => r
            .output
            .and_then(|o| serde_json::from_value::<CallResult>(o).ok())
            .unwrap_or_else(|| {
                CallResult::failed(
                    &call.id,
                    CallStatus::Error,
                    format!("run {} of `{name}` succeeded without a result", run.id),
                    took,
                )
            }),
        Some(r) if r.status.is_terminal() => CallResult::failed(
            &call.id,
            CallStatus::Error,
            format!(
                "run {} of `{name}` {}: {}",
                run.id,
                r.status,
                r.error.as_deref().unwrap_or("no reason recorded")
            ),
            took,
        ),
        _ => CallResult::failed(
            &call.id,
            CallStatus::PendingApproval,
            pending_message(&name, why, &run.id, &call.id),
            took,
        ),
    };
    result.run_id = Some(run.id.clone());
    result.call_id = Some(call.id.clone());
    Ok(result)
}

/// The vault slot a gateway call's sealed arguments are bound to: its trace and its id.
fn arguments_slot(trace_id: &str, call_id: &str) -> String {
    format!("gateway_call/{trace_id}/{call_id}")
}

/// Open the sealed arguments of call `call_id` of trace `trace_id`.
fn open_arguments(
    ops: &GatewayOps,
    trace_id: &str,
    call_id: &str,
    sealed: &Value,
) -> Result<Map<String, Value>> {
    let what = format!("the arguments of gateway call {call_id}");
    let vault = ops.sealer().ok_or_else(|| {
        Error::invalid_state(
            what.clone(),
            "they were sealed with the vault's master key, and this server has none; start \
             it with the master key it had when the call was made (AGENTKIT_MASTER_KEY)",
        )
    })?;
    let text = vault
        .open_sealed(&what, &arguments_slot(trace_id, call_id), sealed.clone())
        .map_err(|e| {
            Error::invalid_state(
                what.clone(),
                format!(
                    "they were sealed with the vault's master key and cannot be opened ({e}); \
                     start the server with the master key it had when the call was made \
                     (AGENTKIT_MASTER_KEY, or AGENTKIT_MASTER_KEY_PREVIOUS after a rotation)"
                ),
            )
        })?;
    serde_json::from_str(&text).map_err(|e| Error::json(what, e))
}

/// What a client reads about a call waiting for approval.
pub(crate) fn pending_message(name: &str, why: &str, run_id: &str, call_id: &str) -> String {
    format!(
        "the call of `{name}` needs an approval: {why}. It waits in the approval queue as run \
         {run_id} (call `{call_id}`); once approved it is made and the run's output is its \
         result: read it with GET /v1/runs/{run_id} (or the MCP tool agentkit_runs_get). An \
         operator decides it with POST /v1/approvals/{run_id}/{call_id}/approve (or /reject), \
         `agentkit approvals`, or agentkit_approvals_decide"
    )
}

/// The MCP task of a gateway call's run, as `tasks/get` answers it: `working` while it waits
/// for the approval (the client cannot answer it: an operator decides it in the approval
/// queue), `completed` with the tool's own result (its content blocks, `isError` when the tool
/// reported an error), `failed` with the reason when it was rejected.
pub(crate) fn gateway_task(
    task: agentkit_mcp::rmcp::model::DetailedTask,
) -> agentkit_mcp::rmcp::model::DetailedTask {
    use agentkit_mcp::rmcp::model::{DetailedTask, TaskPayload};
    let id = task.task.task_id.clone();
    match task.payload {
        TaskPayload::InputRequired { .. } => {
            let mut t = task.task;
            t.status_message = Some(format!(
                "run {id} waits for an approval in the approval queue (GET /v1/approvals); once \
                 an operator approves it, the call is made and this task completes with its \
                 result"
            ));
            DetailedTask::new(t, TaskPayload::Working)
        }
        TaskPayload::Completed { result } => {
            let call = result
                .get("structuredContent")
                .cloned()
                .and_then(|v| serde_json::from_value::<CallResult>(v).ok());
            let Some(call) = call else {
                return DetailedTask::new(task.task, TaskPayload::Completed { result });
            };
            let name = format!("call {}", call.id);
            let out = crate::gateway::tools::tool_result(&call, &name);
            match serde_json::to_value(out) {
                Ok(Value::Object(result)) => {
                    DetailedTask::new(task.task, TaskPayload::Completed { result })
                }
                _ => DetailedTask::new(task.task, TaskPayload::Completed { result }),
            }
        }
        payload => DetailedTask::new(task.task, payload),
    }
}
