//! [`WorkflowHost`]: start, observe, signal and cancel named runs without depending on the
//! runtime that executes them (agentkit-mcp exposes it as MCP tools).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;

/// The status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Waiting for a worker.
    Queued,
    /// Executing.
    Running,
    /// Waiting for a human's input (a signal).
    WaitingInput,
    /// Waiting for a tool approval (a signal).
    WaitingApproval,
    /// Paused by an operator.
    Paused,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl RunStatus {
    /// Whether the run has finished (succeeded, failed or cancelled).
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The snake_case name, as stored and shown.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::WaitingInput => "waiting_input",
            Self::WaitingApproval => "waiting_approval",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workflow a host can start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowInfo {
    /// Name, used in `start`.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of its input.
    pub input_schema: Value,
}

impl WorkflowInfo {
    /// Workflow info.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema,
        }
    }
}

/// Options for starting a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StartOptions {
    /// Same key, same run: a second start with this key returns the first run's id.
    pub idempotency_key: Option<String>,
    /// Run this version of the target (a registry version) instead of the host's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Store the run under this id (a UUID the caller generated, e.g. to record it on a
    /// thread before the run starts); default: a fresh UUIDv7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Store the run `queued` but do not execute it until the host releases it (a run
    /// waiting its turn on a busy conversation thread, for example). Hosts that cannot hold
    /// runs refuse the start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

impl StartOptions {
    /// Default options.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set an idempotency key.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Pin the run to `version` of its target; the run keeps it when a label moves.
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Store the run under `id` (must be unique; a clash is an error and stores nothing).
    #[must_use]
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// Store the run queued and held until the host releases it (see [`held`](Self::held)).
    #[must_use]
    pub fn held(mut self) -> Self {
        self.held = true;
        self
    }
}

/// What a host knows about a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunInfo {
    /// Run id.
    pub run_id: String,
    /// Workflow name.
    pub workflow: String,
    /// Status.
    pub status: RunStatus,
    /// Output, when succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Error, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the run was created (ms since the Unix epoch), if the host records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at_ms: Option<i64>,
    /// When the run last changed (ms since the Unix epoch), if the host records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_ms: Option<i64>,
}

impl RunInfo {
    /// Run info.
    pub fn new(run_id: impl Into<String>, workflow: impl Into<String>, status: RunStatus) -> Self {
        Self {
            run_id: run_id.into(),
            workflow: workflow.into(),
            status,
            output: None,
            error: None,
            created_at_ms: None,
            updated_at_ms: None,
        }
    }

    /// Set the output.
    #[must_use]
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = Some(output);
        self
    }

    /// Set the error.
    #[must_use]
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Set when the run was created and last changed (ms since the Unix epoch). MCP Tasks
    /// report them as `createdAt` / `lastUpdatedAt`.
    #[must_use]
    pub fn with_timestamps(mut self, created_at_ms: i64, updated_at_ms: i64) -> Self {
        self.created_at_ms = Some(created_at_ms);
        self.updated_at_ms = Some(updated_at_ms);
        self
    }
}

/// Starts and manages named runs. Implemented by agentkit-runtime's executor.
#[async_trait]
pub trait WorkflowHost: Send + Sync {
    /// The workflows that can be started.
    async fn list_workflows(&self) -> Result<Vec<WorkflowInfo>>;
    /// Start a run; returns its id at once.
    async fn start(&self, workflow: &str, input: Value, options: StartOptions) -> Result<String>;
    /// The run's status.
    async fn status(&self, run_id: &str) -> Result<RunInfo>;
    /// Deliver a named signal (human input, approval, resume) to a waiting run.
    async fn signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()>;
    /// Cancel the run.
    async fn cancel(&self, run_id: &str) -> Result<()>;
}
