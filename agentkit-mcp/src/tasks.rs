//! MCP Tasks (SEP-2663, the `io.modelcontextprotocol/tasks` extension as rmcp 3.11 implements
//! it) for [`McpServer`](crate::McpServer)s: the [`TaskBackend`] extension point. The
//! workflow adapter, [`WorkflowTasks`](crate::WorkflowTasks), lives with
//! [`expose_workflows`](crate::expose_workflows).
//!
//! How the protocol works: a client declares the tasks extension in its capabilities (at
//! `initialize`, or per request in `_meta` on 2026-07-28). When it calls a tool that runs as a
//! task, the server answers `tools/call` with a task handle (`resultType: "task"`,
//! [`CallToolResponse::Task`]) instead of the tool result. The client then polls `tasks/get`
//! (status, and the final result or error inline), answers input requests with `tasks/update`,
//! and may ask for cancellation with `tasks/cancel`. Clients that did not declare the extension
//! get the plain tool result, as before.
//!
//! A [`TaskBackend`] answers those requests. Install one with
//! [`McpServerBuilder::tasks`](crate::McpServerBuilder::tasks); the server then advertises the
//! extension and routes task-eligible `tools/call`s and `tasks/*` to it.
//! [`expose_workflows`](crate::expose_workflows) does this for you.

use async_trait::async_trait;
use rmcp::model::{CallToolResponse, DetailedTask, InputResponses, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

/// Answers MCP Tasks requests for an [`McpServer`](crate::McpServer).
///
/// The server asks [`runs_as_task`](Self::runs_as_task) for every `tools/call` from a client
/// that declared the tasks extension; when it says yes, [`start`](Self::start) replaces the
/// tool's plain handler. `tasks/get`, `tasks/update` and `tasks/cancel` go to
/// [`get`](Self::get), [`update`](Self::update) and [`cancel`](Self::cancel). Keep task state
/// where it survives the server (a database, a durable runtime): the server holds none.
#[async_trait]
pub trait TaskBackend: Send + Sync {
    /// Whether a call of `tool` runs as a task (for clients that support tasks).
    fn runs_as_task(&self, tool: &str) -> bool;

    /// Start `tool` as a task. Answer [`CallToolResponse::Task`] with the new task, or a plain
    /// tool result when no task was started (for example an error result for bad arguments).
    async fn start(
        &self,
        tool: &str,
        arguments: JsonObject,
        request: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData>;

    /// `tasks/get`: the task's current state, with its result or error once it is terminal.
    async fn get(
        &self,
        task_id: &str,
        request: &RequestContext<RoleServer>,
    ) -> Result<DetailedTask, ErrorData>;

    /// `tasks/update`: the client's answers to the task's `inputRequests`. Unknown keys are
    /// ignored, as the extension requires.
    async fn update(
        &self,
        task_id: &str,
        responses: InputResponses,
        request: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData>;

    /// `tasks/cancel`: ask for the task to stop. Cancellation is cooperative: acknowledge, and
    /// report the final status from [`get`](Self::get).
    async fn cancel(
        &self,
        task_id: &str,
        request: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData>;
}
