//! [`RequestTools`]: tools that depend on who is asking.

use async_trait::async_trait;
use rmcp::model::{CallToolResponse, CallToolResult, JsonObject, Tool};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

use super::context::CallContext;

/// Tools listed and called per request, beside the registered ones: install with
/// [`McpServerBuilder::request_tools`](super::McpServerBuilder::request_tools).
///
/// Use it when what a client may see depends on the request (its credentials, a tenant, a
/// header): with HTTP, `request.extensions.get::<http::request::Parts>()` holds the HTTP
/// request, including the extensions an authentication layer put there.
///
/// - `tools/list` answers the registered tools that [`shows`](Self::shows) lets through
///   and that [`owns`](Self::owns) does not claim, then [`list`](Self::list)'s.
/// - `tools/call` of a name [`owns`](Self::owns) claims goes to [`call`](Self::call), even
///   if a registered tool has that name; a registered tool that [`shows`](Self::shows)
///   hides from the request is refused like an unknown tool.
#[async_trait]
pub trait RequestTools: Send + Sync {
    /// The tools `request` may see besides the registered ones.
    async fn list(&self, request: &RequestContext<RoleServer>) -> Result<Vec<Tool>, ErrorData>;

    /// Whether `name` is one of these tools (whoever asks: refuse callers it is not for in
    /// [`call`](Self::call), with a reason).
    fn owns(&self, name: &str) -> bool;

    /// Call tool `name` (one [`owns`](Self::owns) claims). `Ok` with `is_error` for a call
    /// that was made and failed or was refused (the model reads it); `Err` for a request that
    /// cannot be routed.
    async fn call(
        &self,
        name: &str,
        arguments: JsonObject,
        call: CallContext,
    ) -> Result<CallToolResult, ErrorData>;

    /// Call tool `name` like [`call`](Self::call), where the answer may also be an MCP Task
    /// ([`CallToolResponse::Task`]; for a client that declared the tasks extension, whose
    /// `tasks/*` requests the server's [`TaskBackend`](crate::TaskBackend) answers). The
    /// server calls this one; the default answers [`call`](Self::call)'s result.
    async fn call_response(
        &self,
        name: &str,
        arguments: JsonObject,
        call: CallContext,
    ) -> Result<CallToolResponse, ErrorData> {
        self.call(name, arguments, call).await.map(Into::into)
    }

    /// Whether the registered tool `name` is listed for and callable by `request` (default:
    /// every registered tool is).
    fn shows(&self, name: &str, request: &RequestContext<RoleServer>) -> bool {
        let _ = (name, request);
        true
    }
}
