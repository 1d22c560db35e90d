//! [`expose_as_mcp_server`]: agents (any [`AugmentedLlm`]) and workflows (a [`WorkflowHost`])
//! as MCP tools.

use std::sync::Arc;

use agentkit_core::{
    AugmentedLlm, EventSink, GenerateRequest, Message, RunContext, RunEvent, StartOptions,
    WorkflowHost,
};
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::server::{CallContext, McpServerBuilder};

mod workflow_tasks;
pub use workflow_tasks::{DEFAULT_POLL_INTERVAL_MS, SIGNAL_INPUT_KEY, WorkflowTasks};

/// Forwards a run's events as MCP progress notifications.
struct ProgressSink {
    tx: mpsc::UnboundedSender<String>,
}

impl EventSink for ProgressSink {
    fn emit(&self, _run_id: &str, event: &RunEvent) {
        let msg = match event {
            RunEvent::LlmResponse { model, .. } => format!("model {model} answered"),
            RunEvent::ToolCallStarted { tool, .. } => format!("calling tool {tool}"),
            RunEvent::ToolCallFinished { tool, .. } => format!("tool {tool} finished"),
            RunEvent::PatternStep { pattern, step, .. } => format!("{pattern}: {step}"),
            RunEvent::Progress {
                message: Some(m), ..
            } => m.clone(),
            _ => return,
        };
        let _ = self.tx.send(msg);
    }
}

/// The arguments of an exposed agent's tool.
#[derive(Debug, Deserialize, JsonSchema)]
struct AgentArgs {
    /// What to ask the agent.
    message: String,
}

/// The arguments of `workflows-get_status` and `workflows-cancel`.
#[derive(Debug, Deserialize, JsonSchema)]
struct RunIdArgs {
    /// The run id returned by `workflows-<name>-run`.
    run_id: String,
}

/// The arguments of `workflows-resume`.
#[derive(Debug, Deserialize, JsonSchema)]
struct ResumeArgs {
    /// The run id returned by `workflows-<name>-run`.
    run_id: String,
    /// The signal to deliver (default `resume`).
    #[serde(default = "default_signal")]
    signal: String,
    /// The signal's payload.
    #[serde(default)]
    payload: Value,
}

fn default_signal() -> String {
    "resume".to_owned()
}

/// The arguments of `workflows-list`: none.
#[derive(Debug, Deserialize, JsonSchema)]
struct NoArgs {}

/// The arguments of `workflows-<name>-run` (whose `input` schema is the workflow's own).
#[derive(Debug, Default, Deserialize)]
struct RunArgs {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The input schema of a tool whose arguments are `T` (without the Rust type's name as title).
fn args_schema<T: JsonSchema>() -> Value {
    let mut schema = agentkit_core::schema::schema_value::<T>();
    if let Value::Object(map) = &mut schema {
        map.remove("title");
    }
    schema
}

/// Parse a tool's arguments, or the tool error that says what is wrong with them.
fn parse_args<T: DeserializeOwned>(args: JsonObject) -> Result<T, CallToolResult> {
    serde_json::from_value(Value::Object(args)).map_err(|e| {
        CallToolResult::error(vec![ContentBlock::text(format!("invalid arguments: {e}"))])
    })
}

/// Whether an exposed agent remembers earlier calls of the same MCP session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionHistory {
    /// Each MCP session is its own conversation thread (`mcp-session:<id>`): a call continues
    /// the conversation of the earlier calls of its session, and never sees another session's
    /// messages. The thread is forgotten when the session ends. Stateless requests (the
    /// 2026-07-28 lifecycle has no session) get no history.
    #[default]
    PerSession,
    /// Every call is independent: no history is read or kept.
    Off,
}

/// The conversation thread of an MCP session.
fn session_thread(session: &str) -> String {
    format!("mcp-session:{session}")
}

async fn run_agent(
    agent: Arc<dyn AugmentedLlm>,
    history: SessionHistory,
    args: JsonObject,
    call: CallContext,
) -> Result<CallToolResult, ErrorData> {
    let message = match parse_args::<AgentArgs>(args) {
        Ok(a) => a.message,
        Err(e) => return Ok(e),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut ctx = RunContext::new()
        .with_cancellation(call.cancellation().child_token())
        .with_events(Arc::new(ProgressSink { tx }));
    if let Some(run) = call.meta("agentkit/runId").and_then(Value::as_str) {
        ctx = ctx.with_run_id(run);
    }
    let progress = {
        let call = call.clone();
        tokio::spawn(async move {
            let mut n = 0.0;
            while let Some(m) = rx.recv().await {
                n += 1.0;
                call.progress(n, None, Some(m)).await;
            }
        })
    };
    let mut request = GenerateRequest::new(vec![Message::user(message)]);
    match (history, call.session_id()) {
        (SessionHistory::PerSession, Some(session)) => {
            ctx = ctx.with_thread(session_thread(session))
        }
        _ => request.params.use_history = Some(false),
    }
    let result = agent.generate(request, &ctx).await;
    drop(ctx);
    let _ = progress.await;
    Ok(match result {
        Ok(g) => {
            let text = g.text();
            let mut r = CallToolResult::success(vec![ContentBlock::text(text.clone())]);
            r.structured_content = Some(json!({
                "text": text,
                "model": g.model,
                "usage": g.usage,
                "cost_usd": g.cost_usd,
            }));
            r
        }
        Err(e) if e.is_cancelled() => {
            return Err(ErrorData::internal_error(
                format!("agent `{}` was cancelled", agent.name()),
                None,
            ));
        }
        Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
            "agent `{}` failed: {e}",
            agent.name()
        ))]),
    })
}

/// Offer each agent as an MCP tool named after it: input `{message}`, output the answer as
/// text plus structured content (`text`, `model`, `usage`, `cost_usd`). The agent's events are
/// sent as progress notifications while it works, and cancelling the request cancels the run.
///
/// Each MCP session is its own conversation ([`SessionHistory::PerSession`]): two clients of
/// the server never see each other's messages, and a session's thread is forgotten when it
/// ends. Use [`expose_as_mcp_server_with`] to make every call independent.
///
/// ```
/// use std::sync::Arc;
/// use agentkit_core::{Agent, AgentLlm, AugmentedLlm, ScriptedProvider};
/// use agentkit_mcp::expose_as_mcp_server;
///
/// let helper: Arc<dyn AugmentedLlm> = Arc::new(AgentLlm::new(
///     Agent::new("helper", "You help."),
///     ScriptedProvider::new().then_text("hi"),
/// ));
/// let server = expose_as_mcp_server("my-agents", [helper]).build();
/// assert_eq!(server.tool_names(), ["helper"]);
/// ```
pub fn expose_as_mcp_server(
    name: impl Into<String>,
    agents: impl IntoIterator<Item = Arc<dyn AugmentedLlm>>,
) -> McpServerBuilder {
    expose_as_mcp_server_with(name, agents, SessionHistory::PerSession)
}

/// [`expose_as_mcp_server`] with the given [`SessionHistory`].
pub fn expose_as_mcp_server_with(
    name: impl Into<String>,
    agents: impl IntoIterator<Item = Arc<dyn AugmentedLlm>>,
    history: SessionHistory,
) -> McpServerBuilder {
    let mut b = McpServerBuilder::new(name, env!("CARGO_PKG_VERSION"));
    let agents: Vec<Arc<dyn AugmentedLlm>> = agents.into_iter().collect();
    for agent in &agents {
        let tool_name = crate::names::sanitize(agent.name());
        let description = if agent.description().is_empty() {
            format!("Ask the agent `{}`.", agent.name())
        } else {
            agent.description().to_owned()
        };
        let agent = Arc::clone(agent);
        b = b.tool_fn(
            tool_name,
            description,
            args_schema::<AgentArgs>(),
            move |args, call| run_agent(Arc::clone(&agent), history, args, call),
        );
    }
    if history == SessionHistory::PerSession {
        b = b.on_session_end(move |session| {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let agents = agents.clone();
            let thread = session_thread(session);
            rt.spawn(async move {
                for agent in agents {
                    if let Err(e) = agent.end_thread(&thread).await {
                        tracing::warn!(agent = agent.name(), %thread, error = %e, "could not forget the conversation of an ended MCP session");
                    }
                }
            });
        });
    }
    b
}

fn text_json(v: Value) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
    r.structured_content = Some(v);
    r
}

fn fail(e: agentkit_core::Error) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(e.to_string())])
}

/// The input and start options of a `workflows-<name>-run` call.
pub(crate) fn run_request(args: &JsonObject) -> (Value, StartOptions) {
    // A malformed `idempotency_key` is ignored, as before; the host validates `input`.
    let args: RunArgs = serde_json::from_value(Value::Object(args.clone())).unwrap_or(RunArgs {
        input: args.get("input").cloned().unwrap_or(Value::Null),
        idempotency_key: None,
    });
    let mut opts = StartOptions::new();
    if let Some(k) = args.idempotency_key {
        opts = opts.with_idempotency_key(k);
    }
    (args.input, opts)
}

/// Add a [`WorkflowHost`]'s workflows: `workflows-list`, `workflows-<name>-run` (returns the run
/// id), `workflows-get_status`, `workflows-resume` (delivers a signal) and `workflows-cancel`.
///
/// Long runs are also offered as **MCP Tasks** (SEP-2663, the `io.modelcontextprotocol/tasks`
/// extension as rmcp 3.11 implements it): the server advertises the extension, and a client
/// that declares it (at `initialize`, or per request on 2026-07-28) gets a task handle
/// ([`CallToolResponse::Task`](rmcp::model::CallToolResponse::Task)) from
/// `workflows-<name>-run` instead of the run id. The task id is the run id. `tasks/get` reports
/// the run's status (`queued`/`running`/`paused` → `working`, `waiting_input`/`waiting_approval`
/// → `input_required`, `succeeded` → `completed` with the run's output as the tool result's
/// structured content, `failed` → `failed`, `cancelled` → `cancelled`); `tasks/update` delivers
/// a signal to a waiting run (answer its `agentkit/signal` input request with `signal` and
/// `payload`); `tasks/cancel` cancels the run through the host. Nothing about a task is kept in
/// the server: every answer is read from the host, so with a durable host (agentkit-runtime on
/// SQLite or Postgres) tasks survive a server restart. Clients without the extension keep
/// getting `{"run_id": ..}`. See [`WorkflowTasks`] for the details.
///
/// # Errors
///
/// When the host cannot list its workflows.
pub async fn expose_workflows(
    builder: McpServerBuilder,
    host: Arc<dyn WorkflowHost>,
) -> agentkit_core::Result<McpServerBuilder> {
    let workflows = host.list_workflows().await?;
    let h = Arc::clone(&host);
    let mut b = builder.tool_fn(
        "workflows-list",
        "List the workflows that can be run.",
        args_schema::<NoArgs>(),
        move |_args, _call| {
            let h = Arc::clone(&h);
            async move {
                Ok(match h.list_workflows().await {
                    Ok(w) => text_json(json!({ "workflows": w })),
                    Err(e) => fail(e),
                })
            }
        },
    );
    let mut tasks = WorkflowTasks::new(Arc::clone(&host));
    for w in workflows {
        let h = Arc::clone(&host);
        let name = w.name.clone();
        let tool_name = crate::names::sanitize(&format!("workflows-{}-run", w.name));
        tasks = tasks.with_tool(tool_name.clone(), w.name.clone());
        let mut schema = crate::server::object_schema(json!({
            "type": "object",
            "properties": {
                "input": w.input_schema,
                "idempotency_key": {"type": "string", "description": "Same key, same run"}
            },
        }));
        schema.insert("required".into(), json!(["input"]));
        b = b.tool_fn(
            tool_name,
            format!(
                "Start workflow `{}`: {}. Returns the run id (or, to clients that support MCP \
                 Tasks, a task whose id is the run id).",
                w.name, w.description
            ),
            Value::Object(schema),
            move |args, _call| {
                let h = Arc::clone(&h);
                let name = name.clone();
                async move {
                    let (input, opts) = run_request(&args);
                    Ok(match h.start(&name, input, opts).await {
                        Ok(run_id) => text_json(json!({ "run_id": run_id })),
                        Err(e) => fail(e),
                    })
                }
            },
        );
    }
    let run_id_schema = args_schema::<RunIdArgs>();
    let h = Arc::clone(&host);
    b = b.tool_fn(
        "workflows-get_status",
        "Status (and output or error) of a workflow run.",
        run_id_schema.clone(),
        move |args, _call| {
            let h = Arc::clone(&h);
            async move {
                let run = match parse_args::<RunIdArgs>(args) {
                    Ok(a) => a.run_id,
                    Err(e) => return Ok(e),
                };
                Ok(match h.status(&run).await {
                    Ok(info) => text_json(serde_json::to_value(info).unwrap_or_default()),
                    Err(e) => fail(e),
                })
            }
        },
    );
    let h = Arc::clone(&host);
    b = b.tool_fn(
        "workflows-resume",
        "Resume a waiting run by delivering a signal (default name `resume`) with a payload.",
        args_schema::<ResumeArgs>(),
        move |args, _call| {
            let h = Arc::clone(&h);
            async move {
                let ResumeArgs {
                    run_id: run,
                    signal,
                    payload,
                } = match parse_args::<ResumeArgs>(args) {
                    Ok(a) => a,
                    Err(e) => return Ok(e),
                };
                Ok(match h.signal(&run, &signal, payload).await {
                    Ok(()) => {
                        text_json(json!({ "run_id": run, "signal": signal, "delivered": true }))
                    }
                    Err(e) => fail(e),
                })
            }
        },
    );
    let h = Arc::clone(&host);
    b = b.tool_fn(
        "workflows-cancel",
        "Cancel a workflow run.",
        run_id_schema,
        move |args, _call| {
            let h = Arc::clone(&h);
            async move {
                let run = match parse_args::<RunIdArgs>(args) {
                    Ok(a) => a.run_id,
                    Err(e) => return Ok(e),
                };
                Ok(match h.cancel(&run).await {
                    Ok(()) => text_json(json!({ "run_id": run, "cancelled": true })),
                    Err(e) => fail(e),
                })
            }
        },
    );
    Ok(b.tasks(Arc::new(tasks)))
}
