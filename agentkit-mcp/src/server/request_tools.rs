//! [`RequestTools`]: tools that depend on who is asking.

use async_trait::async_trait;
use rmcp::model::{CallToolResponse, CallToolResult, JsonObject, Tool};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use tokio_util::sync::CancellationToken;

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
/// - Over streamable HTTP, a stateless (2026-07-28) `tools/call` of a name
///   [`calls_directly`](Self::calls_directly) accepts is answered by
///   [`call_direct`](Self::call_direct) without rmcp's per-request service (no
///   [`RequestContext`], so no peer: no progress, logging or questions to the client). The
///   answer must be the one [`call`](Self::call) would give.
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

    /// Whether a stateless HTTP `tools/call` of `name` (one [`owns`](Self::owns) claims)
    /// may be answered by [`call_direct`](Self::call_direct) (default: none is). Say yes
    /// only for tools whose call sends nothing to the client before its result and never
    /// answers an MCP Task to a client that did not declare the tasks extension.
    fn calls_directly(&self, name: &str) -> bool {
        let _ = name;
        false
    }

    /// Call tool `name` (one [`calls_directly`](Self::calls_directly) accepts) for a
    /// stateless HTTP request, with the same answer as [`call`](Self::call). The default
    /// refuses: implement it together with `calls_directly`.
    async fn call_direct(
        &self,
        name: &str,
        arguments: JsonObject,
        call: DirectCall,
    ) -> Result<CallToolResult, ErrorData> {
        let _ = (arguments, call);
        Err(ErrorData::internal_error(
            format!(
                "tool `{name}` has no direct call path (RequestTools::calls_directly accepted \
                 it, call_direct is not implemented)"
            ),
            None,
        ))
    }

    /// Whether the registered tool `name` is listed for and callable by `request` (default:
    /// every registered tool is).
    fn shows(&self, name: &str, request: &RequestContext<RoleServer>) -> bool {
        let _ = (name, request);
        true
    }
}

/// What [`RequestTools::call_direct`] gets besides the arguments: the HTTP request (with
/// the extensions an authentication layer put there) and the call's cancellation.
#[derive(Debug)]
#[non_exhaustive]
pub struct DirectCall {
    /// The HTTP request's head (method, URI, headers, extensions).
    pub parts: http::request::Parts,
    /// Fires when the client goes away before the answer.
    pub cancel: CancellationToken,
}

impl DirectCall {
    /// A direct call of the request `parts`, cancelled by `cancel`.
    #[must_use]
    pub fn new(parts: http::request::Parts, cancel: CancellationToken) -> Self {
        Self { parts, cancel }
    }
}
