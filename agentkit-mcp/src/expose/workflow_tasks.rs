//! [`WorkflowTasks`]: the runs of a [`WorkflowHost`] as MCP Tasks (see [`crate::tasks`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use agentkit_core::{RunInfo, RunStatus, WorkflowHost};
use async_trait::async_trait;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, ElicitRequest,
    ElicitRequestParams, ElicitationSchema, InputRequest, InputRequests, InputResponses,
    JsonObject, StringSchema, Task, TaskPayload, TaskStatus,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};

use crate::tasks::TaskBackend;

/// Key prefix of the input request a waiting run's task carries (see [`WorkflowTasks`]).
pub const SIGNAL_INPUT_KEY: &str = "agentkit/signal";

/// Poll interval suggested to clients unless [`WorkflowTasks::with_poll_interval_ms`] says
/// otherwise.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1_000;

/// Workflow runs as MCP Tasks: the task id **is** the run id, and every answer is read from the
/// [`WorkflowHost`], so tasks live as long as the host keeps its runs (a durable runtime keeps
/// them across server restarts) and any server over the same host can answer for them.
///
/// | run status | task status |
/// |---|---|
/// | `queued`, `running`, `paused` | `working` |
/// | `waiting_input`, `waiting_approval` | `input_required` |
/// | `succeeded` | `completed`; the result is a tool result whose structured content (and text, as JSON) is the run's output |
/// | `failed` | `failed`; the error (`-32603`) carries the run's error message |
/// | `cancelled` | `cancelled` |
///
/// A waiting run's task asks for one form elicitation under a key starting with
/// [`SIGNAL_INPUT_KEY`], with the fields `signal` (the signal name; default `approval` for a run
/// waiting for a tool approval, `resume` otherwise; agentkit-runtime agents wait for
/// `human_input`) and
/// `payload` (JSON text; text that is not JSON is sent as a string, and a client may send any
/// JSON value instead). Accepting it with `tasks/update` delivers that signal to the run;
/// declining does nothing. The `workflows-resume` tool does the same without tasks.
/// `tasks/cancel` cancels the run through the host; it is a no-op for a finished run.
pub struct WorkflowTasks {
    host: Arc<dyn WorkflowHost>,
    tools: BTreeMap<String, String>,
    poll_interval_ms: u64,
}

impl std::fmt::Debug for WorkflowTasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowTasks")
            .field("tools", &self.tools)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .finish_non_exhaustive()
    }
}

impl WorkflowTasks {
    /// Tasks over `host`'s runs. No tool starts a task until [`with_tool`](Self::with_tool).
    #[must_use]
    pub fn new(host: Arc<dyn WorkflowHost>) -> Self {
        Self {
            host,
            tools: BTreeMap::new(),
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
        }
    }

    /// Calls of `tool` start `workflow` as a task. Arguments are those of the
    /// `workflows-<name>-run` tools: `input` and an optional `idempotency_key`.
    #[must_use]
    pub fn with_tool(mut self, tool: impl Into<String>, workflow: impl Into<String>) -> Self {
        self.tools.insert(tool.into(), workflow.into());
        self
    }

    /// Suggest this polling interval to clients (default [`DEFAULT_POLL_INTERVAL_MS`]).
    #[must_use]
    pub fn with_poll_interval_ms(mut self, ms: u64) -> Self {
        self.poll_interval_ms = ms;
        self
    }

    /// The task a run is, as `tasks/get` reports it (see the table on [`WorkflowTasks`]).
    #[must_use]
    pub fn task_of(&self, run: &RunInfo) -> DetailedTask {
        let created = run.created_at_ms.and_then(rfc3339);
        let updated = run.updated_at_ms.and_then(rfc3339);
        let now = || rfc3339(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        let created = created.unwrap_or_else(now);
        let updated = updated.unwrap_or_else(|| created.clone());
        let mut task = Task::new(run.run_id.clone(), TaskStatus::Working, created, updated);
        let payload = match run.status {
            RunStatus::WaitingInput | RunStatus::WaitingApproval => {
                task = task.with_status_message(format!(
                    "run {} of workflow `{}` is {}: accept the `{SIGNAL_INPUT_KEY}` input \
                     request with tasks/update (or call workflows-resume) to deliver a signal",
                    run.run_id, run.workflow, run.status
                ));
                TaskPayload::InputRequired {
                    input_requests: signal_request(run),
                }
            }
            RunStatus::Succeeded => {
                let output = run.output.clone().unwrap_or(Value::Null);
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text(output.to_string())]);
                result.structured_content = Some(output);
                match serde_json::to_value(result) {
                    Ok(Value::Object(result)) => TaskPayload::Completed { result },
                    _ => failed(format!(
                        "run {} succeeded but its output could not be encoded as a tool result",
                        run.run_id
                    )),
                }
            }
            RunStatus::Failed => {
                let why = run.error.as_deref().unwrap_or("no error recorded");
                task = task.with_status_message(why.to_owned());
                failed(format!(
                    "workflow run {} (`{}`) failed: {why}",
                    run.run_id, run.workflow
                ))
            }
            RunStatus::Cancelled => {
                if let Some(why) = &run.error {
                    task = task.with_status_message(why.clone());
                }
                TaskPayload::Cancelled
            }
            other => {
                task = task.with_status_message(format!(
                    "run {} of workflow `{}` is {other}",
                    run.run_id, run.workflow
                ));
                TaskPayload::Working
            }
        };
        if !run.status.is_terminal() {
            task = task.with_poll_interval_ms(self.poll_interval_ms);
        }
        DetailedTask::new(task, payload)
    }

    async fn run(&self, task_id: &str) -> Result<RunInfo, ErrorData> {
        self.host
            .status(task_id)
            .await
            .map_err(|e| host_error(task_id, "reading", &e))
    }
}

/// `ms` since the epoch as an RFC 3339 timestamp (UTC, milliseconds).
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn failed(message: String) -> TaskPayload {
    let error = ErrorData::internal_error(message, None);
    match serde_json::to_value(error) {
        Ok(Value::Object(error)) => TaskPayload::Failed { error },
        _ => TaskPayload::Failed {
            error: JsonObject::from_iter([
                ("code".to_owned(), json!(-32603)),
                ("message".to_owned(), json!("workflow run failed")),
            ]),
        },
    }
}

/// The form a waiting run's task asks the client to fill in. Its key changes each time the run
/// starts waiting (when the host records update times), so answered keys are never reused.
fn signal_request(run: &RunInfo) -> InputRequests {
    let key = match run.updated_at_ms {
        Some(ms) => format!("{SIGNAL_INPUT_KEY}/{ms}"),
        None => SIGNAL_INPUT_KEY.to_owned(),
    };
    let schema = ElicitationSchema::builder()
        .required_string_with("signal", |s: StringSchema| {
            s.description("Signal to deliver, e.g. `resume`, `human_input` or `approval`")
                .with_default(default_signal(run.status))
        })
        .optional_string_with("payload", |s: StringSchema| {
            s.description("Signal payload as JSON text; other text is sent as a string")
        })
        .build();
    let mut requests = InputRequests::new();
    if let Ok(schema) = schema {
        requests.insert(
            key,
            InputRequest::Elicitation(ElicitRequest::new(
                ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message: format!(
                        "Workflow run {} (`{}`) is waiting for a signal. Which signal, with \
                         which payload?",
                        run.run_id, run.workflow
                    ),
                    requested_schema: schema,
                },
            )),
        );
    }
    requests
}

/// The signal a run in `status` most likely waits for.
fn default_signal(status: RunStatus) -> &'static str {
    match status {
        RunStatus::WaitingApproval => "approval",
        _ => "resume",
    }
}

/// The signal an accepted answer to [`signal_request`] asks for (`default` when it names
/// none); `None` when declined.
fn signal_of(answer: &Value, default: &str) -> Result<Option<(String, Value)>, String> {
    if answer.get("action").and_then(Value::as_str) != Some("accept") {
        return Ok(None);
    }
    let content = answer.get("content").cloned().unwrap_or(Value::Null);
    let name = match content.get("signal") {
        None | Some(Value::Null) => default.to_owned(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(other) => {
            return Err(format!(
                "`signal` must be a non-empty signal name, got {other}"
            ));
        }
    };
    let payload = match content.get("payload") {
        None => Value::Null,
        Some(Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(v) => v.clone(),
    };
    Ok(Some((name, payload)))
}

fn host_error(task_id: &str, doing: &str, e: &agentkit_core::Error) -> ErrorData {
    match e {
        e if e.is_not_found() || e.is_invalid_request() => ErrorData::invalid_params(
            format!(
                "task `{task_id}`: {e} (task ids are the workflow run ids returned by tools/call)"
            ),
            None,
        ),
        agentkit_core::Error::Workflow(_) => ErrorData::invalid_params(
            format!(
                "task `{task_id}`: {e} (task ids are the workflow run ids returned by \
                     tools/call)"
            ),
            None,
        ),
        _ => ErrorData::internal_error(
            format!("{doing} workflow run `{task_id}` failed: {e}; try again later"),
            None,
        ),
    }
}

#[async_trait]
impl TaskBackend for WorkflowTasks {
    fn runs_as_task(&self, tool: &str) -> bool {
        self.tools.contains_key(tool)
    }

    async fn start(
        &self,
        tool: &str,
        arguments: JsonObject,
        _request: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(workflow) = self.tools.get(tool) else {
            return Err(ErrorData::invalid_params(
                format!("tool `{tool}` does not start a workflow"),
                None,
            ));
        };
        let (input, options) = super::run_request(&arguments);
        let run_id = match self.host.start(workflow, input, options).await {
            Ok(id) => id,
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(e.to_string())]).into());
            }
        };
        let run = self.run(&run_id).await?;
        let task = self.task_of(&run).task;
        Ok(CallToolResponse::Task(CreateTaskResult::new(task)))
    }

    async fn get(
        &self,
        task_id: &str,
        _request: &RequestContext<RoleServer>,
    ) -> Result<DetailedTask, ErrorData> {
        Ok(self.task_of(&self.run(task_id).await?))
    }

    async fn update(
        &self,
        task_id: &str,
        responses: InputResponses,
        _request: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let default = default_signal(self.run(task_id).await?.status);
        for (key, answer) in responses {
            if !key.starts_with(SIGNAL_INPUT_KEY) {
                continue;
            }
            let signal = signal_of(&answer, default).map_err(|why| {
                ErrorData::invalid_params(format!("task `{task_id}`, input `{key}`: {why}"), None)
            })?;
            if let Some((name, payload)) = signal {
                self.host
                    .signal(task_id, &name, payload)
                    .await
                    .map_err(|e| host_error(task_id, "signalling", &e))?;
            }
        }
        Ok(())
    }

    async fn cancel(
        &self,
        task_id: &str,
        _request: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if self.run(task_id).await?.status.is_terminal() {
            return Ok(());
        }
        self.host
            .cancel(task_id)
            .await
            .map_err(|e| host_error(task_id, "cancelling", &e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct NoHost;

    #[async_trait]
    impl WorkflowHost for NoHost {
        async fn list_workflows(&self) -> agentkit_core::Result<Vec<agentkit_core::WorkflowInfo>> {
            Ok(vec![])
        }
        async fn start(
            &self,
            _: &str,
            _: Value,
            _: agentkit_core::StartOptions,
        ) -> agentkit_core::Result<String> {
            Err(agentkit_core::Error::Workflow("no".into()))
        }
        async fn status(&self, id: &str) -> agentkit_core::Result<RunInfo> {
            Err(agentkit_core::Error::Workflow(format!(
                "no run with id {id}"
            )))
        }
        async fn signal(&self, _: &str, _: &str, _: Value) -> agentkit_core::Result<()> {
            Ok(())
        }
        async fn cancel(&self, _: &str) -> agentkit_core::Result<()> {
            Ok(())
        }
    }

    fn tasks() -> WorkflowTasks {
        WorkflowTasks::new(Arc::new(NoHost)).with_poll_interval_ms(10)
    }

    #[test]
    fn run_statuses_map_to_task_statuses() {
        let t = tasks();
        let at = |s| t.task_of(&RunInfo::new("r1", "w", s)).status();
        assert_eq!(at(RunStatus::Queued), TaskStatus::Working);
        assert_eq!(at(RunStatus::Running), TaskStatus::Working);
        assert_eq!(at(RunStatus::Paused), TaskStatus::Working);
        assert_eq!(at(RunStatus::WaitingInput), TaskStatus::InputRequired);
        assert_eq!(at(RunStatus::WaitingApproval), TaskStatus::InputRequired);
        assert_eq!(at(RunStatus::Succeeded), TaskStatus::Completed);
        assert_eq!(at(RunStatus::Failed), TaskStatus::Failed);
        assert_eq!(at(RunStatus::Cancelled), TaskStatus::Cancelled);
    }

    #[test]
    fn tasks_carry_the_run_output_error_and_timestamps() {
        let t = tasks();
        let done = RunInfo::new("r1", "w", RunStatus::Succeeded)
            .with_output(json!({"n": 1}))
            .with_timestamps(0, 1_500);
        let task = t.task_of(&done);
        assert_eq!(task.task.task_id, "r1");
        assert_eq!(task.task.created_at, "1970-01-01T00:00:00.000Z");
        assert_eq!(task.task.last_updated_at, "1970-01-01T00:00:01.500Z");
        assert_eq!(task.task.poll_interval_ms, None);
        let TaskPayload::Completed { result } = task.payload else {
            panic!("completed expected")
        };
        assert_eq!(result["structuredContent"], json!({"n": 1}));

        let bad = RunInfo::new("r2", "w", RunStatus::Failed).with_error("boom");
        let TaskPayload::Failed { error } = t.task_of(&bad).payload else {
            panic!("failed expected")
        };
        assert_eq!(error["code"], json!(-32603));
        assert!(error["message"].as_str().unwrap().contains("boom"));

        let waiting = t.task_of(&RunInfo::new("r3", "w", RunStatus::WaitingInput));
        assert_eq!(waiting.task.poll_interval_ms, Some(10));
        let TaskPayload::InputRequired { input_requests } = waiting.payload else {
            panic!("input_required expected")
        };
        assert!(input_requests.contains_key(SIGNAL_INPUT_KEY));
    }

    #[test]
    fn accepted_answers_become_signals() {
        let accept = |content| json!({"action": "accept", "content": content});
        assert_eq!(
            signal_of(
                &accept(json!({"signal": "approve", "payload": "{\"by\":\"ana\"}"})),
                "resume"
            )
            .unwrap(),
            Some(("approve".into(), json!({"by": "ana"})))
        );
        assert_eq!(
            signal_of(&accept(json!({"payload": "yes"})), "approval").unwrap(),
            Some(("approval".into(), json!("yes")))
        );
        assert_eq!(
            signal_of(&json!({"action": "decline"}), "resume").unwrap(),
            None
        );
        assert!(signal_of(&accept(json!({"signal": 3})), "resume").is_err());
    }

    #[test]
    fn unknown_runs_are_invalid_params() {
        let e = host_error(
            "nope",
            "reading",
            &agentkit_core::Error::Workflow("no run with id nope".into()),
        );
        assert_eq!(e.code, rmcp::model::ErrorCode::INVALID_PARAMS);
    }
}
