//! [`CatchPanics`]: a request whose handler panics is answered at once with a JSON-RPC
//! internal error, over every transport.
//!
//! rmcp runs each request on a task of its own; a panic ends that task without a response,
//! so the client waits for its request timeout. Every place agentkit serves an MCP server
//! ([`McpServer::serve`](super::McpServer::serve), [`serve_stdio`](super::McpServer::serve_stdio),
//! [`into_http_service`](super::McpServer::into_http_service),
//! [`InProcessServer`](crate::InProcessServer)) serves it wrapped in [`CatchPanics`].

#![allow(deprecated)] // logging and subscriptions are SEP-2577-deprecated in rmcp but still part of MCP 2025-11-25.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CancelledNotificationParam,
    CompleteRequestParams, CompleteResult, CustomNotification, CustomRequest, CustomResult,
    DiscoverResult, GetPromptRequestParams, GetPromptResponse, GetSkillRequestParams,
    GetSkillResult, GetTaskParams, GetTaskResult, InitializeRequestParams, InitializeResult,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListSkillsResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
    ReadResourceDirectoryRequestParams, ReadResourceDirectoryResult, ReadResourceRequestParams,
    ReadResourceResponse, ServerConfig, SetLevelRequestParams, SubscribeRequestParams,
    SubscriptionFilter, Tool, UnsubscribeRequestParams, UpdateTaskParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};

/// Serves the rmcp [`ServerHandler`] `S`, answering a request whose handler panicked with a
/// JSON-RPC internal error (-32603, "the handler of tool `x` panicked: `<message>`; …") at
/// once instead of leaving it unanswered, and keeping on serving the connection's other
/// and later requests. A panicking notification handler is logged.
///
/// Every MCP server agentkit serves is wrapped in it; wrap a handler of your own to serve it
/// with rmcp directly:
///
/// ```no_run
/// use agentkit_mcp::CatchPanics;
/// use agentkit_mcp::rmcp::{ServerHandler, ServiceExt};
///
/// #[derive(Clone)]
/// struct Mine;
/// impl ServerHandler for Mine {}
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let running = CatchPanics::new(Mine).serve(agentkit_mcp::rmcp::transport::stdio()).await?;
/// running.waiting().await?;
/// # Ok(()) }
/// ```
///
/// Its cost on a request that does not panic is a `catch_unwind` around the handler's
/// future and, for `tools/call`, a copy of the tool's name into a buffer on the stack (no
/// allocation): the error's text is written only after a panic.
#[derive(Clone, Debug, Default)]
pub struct CatchPanics<S>(S);

impl<S> CatchPanics<S> {
    /// Serve `handler` with panics answered.
    #[must_use]
    pub fn new(handler: S) -> Self {
        Self(handler)
    }

    /// The wrapped handler.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.0
    }

    /// The wrapped handler, unwrapped.
    #[must_use]
    pub fn into_inner(self) -> S {
        self.0
    }
}

/// The longest name kept for the error of a panic, in bytes (the MCP spec's limit for a tool
/// name is 128 characters; a longer name is cut and ends in `…`).
const NAME_BYTES: usize = 128;

/// A tool's (or a custom request's) name, copied onto the stack when the request arrives,
/// for the error of a panic (the request, and so its name, is moved into the handler).
struct Name {
    bytes: [u8; NAME_BYTES],
    len: usize,
    cut: bool,
}

impl Name {
    fn new(name: &str) -> Self {
        let mut len = name.len().min(NAME_BYTES);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; NAME_BYTES];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            bytes,
            len,
            cut: len < name.len(),
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Cut on a character boundary, so always UTF-8.
        let name = std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default();
        f.write_str(name)?;
        if self.cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// What a handler was handling, as the error of its panic names it.
enum What {
    /// A `tools/call`.
    Tool(Name),
    /// A request of a method rmcp does not know, by method.
    Custom(Name),
    /// Another request, by method.
    Request(&'static str),
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tool(name) => write!(f, "tool `{name}`"),
            Self::Custom(method) => write!(f, "request `{method}`"),
            Self::Request(method) => write!(f, "request `{method}`"),
        }
    }
}

/// The message of a panic's payload.
fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// The error answering a request (`what`: "tool `x`", "request `prompts/get`") whose
/// handler panicked with `payload`; the panic is logged.
pub(crate) fn panicked(what: &dyn fmt::Display, payload: &(dyn std::any::Any + Send)) -> ErrorData {
    let message = message(payload);
    tracing::error!(request = %what, panic = %message, "an MCP handler panicked");
    ErrorData::internal_error(
        format!(
            "the handler of {what} panicked: {message}; the server keeps serving other \
             calls (this is a bug in the handler: fix it, or retry if it is transient)"
        ),
        None,
    )
}

/// `answer`, or the error of its panic.
async fn guarded<T>(
    answer: impl Future<Output = Result<T, ErrorData>>,
    what: What,
) -> Result<T, ErrorData> {
    match AssertUnwindSafe(answer).catch_unwind().await {
        Ok(answer) => answer,
        Err(payload) => Err(panicked(&what, payload.as_ref())),
    }
}

/// `handled`, a panic in it logged (a notification has no answer).
async fn logged(handled: impl Future<Output = ()>, notification: &'static str) {
    if let Err(payload) = AssertUnwindSafe(handled).catch_unwind().await {
        tracing::error!(
            notification,
            panic = %message(payload.as_ref()),
            "an MCP notification handler panicked; the server keeps serving"
        );
    }
}

/// Request handlers forwarded to `self.0`, each guarded, named by its method.
macro_rules! guarded_requests {
    ($($method:literal fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(
            async fn $name(&self, $($arg: $ty),*) -> Result<$out, ErrorData> {
                guarded(self.0.$name($($arg),*), What::Request($method)).await
            }
        )*
    };
}

/// Notification handlers forwarded to `self.0`, each with its panic logged.
macro_rules! logged_notifications {
    ($($method:literal fn $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            async fn $name(&self, $($arg: $ty),*) {
                logged(self.0.$name($($arg),*), $method).await
            }
        )*
    };
}

type Ctx = RequestContext<RoleServer>;
type Page = Option<PaginatedRequestParams>;

impl<S: ServerHandler> ServerHandler for CatchPanics<S> {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: Ctx,
    ) -> Result<CallToolResponse, ErrorData> {
        let what = What::Tool(Name::new(&request.name));
        guarded(self.0.call_tool(request, context), what).await
    }

    guarded_requests! {
        "ping" fn ping(context: Ctx) -> ();
        "initialize" fn initialize(request: InitializeRequestParams, context: Ctx) -> InitializeResult;
        "server/discover" fn discover(context: Ctx) -> DiscoverResult;
        "completion/complete" fn complete(request: CompleteRequestParams, context: Ctx) -> CompleteResult;
        "logging/setLevel" fn set_level(request: SetLevelRequestParams, context: Ctx) -> ();
        "prompts/get" fn get_prompt(request: GetPromptRequestParams, context: Ctx) -> GetPromptResponse;
        "prompts/list" fn list_prompts(request: Page, context: Ctx) -> ListPromptsResult;
        "resources/list" fn list_resources(request: Page, context: Ctx) -> ListResourcesResult;
        "resources/templates/list" fn list_resource_templates(request: Page, context: Ctx) -> ListResourceTemplatesResult;
        "resources/read" fn read_resource(request: ReadResourceRequestParams, context: Ctx) -> ReadResourceResponse;
        "subscriptions/listen" fn listen(context: SubscriptionContext) -> ();
        "resources/subscribe" fn subscribe(request: SubscribeRequestParams, context: Ctx) -> ();
        "resources/unsubscribe" fn unsubscribe(request: UnsubscribeRequestParams, context: Ctx) -> ();
        "tools/list" fn list_tools(request: Page, context: Ctx) -> ListToolsResult;
        "tasks/get" fn get_task(request: GetTaskParams, context: Ctx) -> GetTaskResult;
        "tasks/update" fn update_task(request: UpdateTaskParams, context: Ctx) -> ();
        "tasks/cancel" fn cancel_task(request: CancelTaskParams, context: Ctx) -> ();
        "skills/list" fn list_skills(request: Page, context: Ctx) -> ListSkillsResult;
        "skills/get" fn get_skill(request: GetSkillRequestParams, context: Ctx) -> GetSkillResult;
        "resources/directory/read" fn read_resource_directory(request: ReadResourceDirectoryRequestParams, context: Ctx) -> ReadResourceDirectoryResult;
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: Ctx,
    ) -> Result<CustomResult, ErrorData> {
        let what = What::Custom(Name::new(&request.method));
        guarded(self.0.on_custom_request(request, context), what).await
    }

    logged_notifications! {
        "notifications/cancelled" fn on_cancelled(notification: CancelledNotificationParam, context: NotificationContext<RoleServer>);
        "notifications/progress" fn on_progress(notification: ProgressNotificationParam, context: NotificationContext<RoleServer>);
        "notifications/initialized" fn on_initialized(context: NotificationContext<RoleServer>);
        "notifications/roots/list_changed" fn on_roots_list_changed(context: NotificationContext<RoleServer>);
        "a custom notification" fn on_custom_notification(notification: CustomNotification, context: NotificationContext<RoleServer>);
    }

    fn negotiate_initialize(
        &self,
        request: &InitializeRequestParams,
    ) -> Result<InitializeResult, ErrorData> {
        self.0.negotiate_initialize(request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.0.supported_protocol_versions()
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        self.0.accepted_subscription_filter(requested)
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.0.get_tool(name)
    }

    fn get_info(&self) -> ServerConfig {
        self.0.get_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_name_is_kept_whole_or_cut_on_a_character_boundary() {
        let tool = |name: &str| What::Tool(Name::new(name)).to_string();
        assert_eq!(tool("crm__send"), "tool `crm__send`");
        let long = "é".repeat(100); // 200 bytes
        assert_eq!(tool(&long), format!("tool `{}…`", "é".repeat(64)));
        assert_eq!(tool(""), "tool ``");
        assert_eq!(
            What::Custom(Name::new("x/ping")).to_string(),
            "request `x/ping`"
        );
    }

    #[test]
    fn the_error_names_the_request_and_the_panic() {
        let e = panicked(&What::Request("prompts/get"), &"boom");
        assert_eq!(e.code, rmcp::model::ErrorCode::INTERNAL_ERROR);
        assert!(
            e.message
                .starts_with("the handler of request `prompts/get` panicked: boom;")
        );
        let e = panicked(&What::Tool(Name::new("x")), &String::from("owned"));
        assert!(
            e.message
                .starts_with("the handler of tool `x` panicked: owned;")
        );
        let e = panicked(&What::Request("ping"), &7_u8);
        assert!(e.message.contains("a panic without a message"));
    }
}
