//! [`McpServerBuilder`] and the registry of handlers it fills.

#![allow(deprecated)] // logging and subscriptions are SEP-2577-deprecated in rmcp but still part of MCP 2025-11-25.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::context::CallContext;
use super::serve::McpServer;
use futures::future::BoxFuture;
use rmcp::model::{
    CallToolResult, CompleteRequestParams, CompleteResult, GetPromptResult, Implementation,
    JsonObject, Prompt, ReadResourceResult, Resource, ResourceTemplate, Tool,
};
use rmcp::{ErrorData, Peer, RoleServer};
use serde_json::Value;
use tokio::sync::broadcast;

/// A tool's implementation.
pub type ToolHandler = Arc<
    dyn Fn(JsonObject, CallContext) -> BoxFuture<'static, Result<CallToolResult, ErrorData>>
        + Send
        + Sync,
>;
/// A resource reader: given the URI, its contents.
pub type ResourceHandler = Arc<
    dyn Fn(String, CallContext) -> BoxFuture<'static, Result<ReadResourceResult, ErrorData>>
        + Send
        + Sync,
>;
/// A resource-template reader: given the URI and the template variables, its contents.
pub type TemplateHandler = Arc<
    dyn Fn(
            String,
            BTreeMap<String, String>,
            CallContext,
        ) -> BoxFuture<'static, Result<ReadResourceResult, ErrorData>>
        + Send
        + Sync,
>;
/// A prompt: given its arguments, its messages.
pub type PromptHandler = Arc<
    dyn Fn(JsonObject, CallContext) -> BoxFuture<'static, Result<GetPromptResult, ErrorData>>
        + Send
        + Sync,
>;
/// Completion of prompt and resource-template arguments.
pub type CompletionHandler = Arc<
    dyn Fn(CompleteRequestParams) -> BoxFuture<'static, Result<CompleteResult, ErrorData>>
        + Send
        + Sync,
>;

pub(super) struct Registry {
    pub(super) info: Option<Implementation>,
    pub(super) instructions: Option<String>,
    pub(super) tools: RwLock<BTreeMap<String, (Tool, ToolHandler)>>,
    pub(super) resources: BTreeMap<String, (Resource, ResourceHandler)>,
    pub(super) templates: Vec<(ResourceTemplate, TemplateHandler)>,
    pub(super) prompts: BTreeMap<String, (Prompt, PromptHandler)>,
    pub(super) completion: Option<CompletionHandler>,
    pub(super) logging: bool,
    pub(super) subscriptions: bool,
    /// Fires when the tool list changes; feeds 2026-07-28 `subscriptions/listen` streams.
    pub(super) tools_changed: broadcast::Sender<()>,
    /// Legacy sessions, told about tool-list changes with `notifications/tools/list_changed`.
    pub(super) legacy_peers: Mutex<Vec<Peer<RoleServer>>>,
    /// MCP Tasks (SEP-2663); see [`McpServerBuilder::tasks`].
    pub(super) tasks: Option<Arc<dyn crate::tasks::TaskBackend>>,
    /// Called when a session ends; see [`McpServerBuilder::on_session_end`](super::McpServerBuilder::on_session_end).
    pub(super) on_session_end: Option<crate::session::SessionEndHook>,
    /// Tools per request; see [`McpServerBuilder::request_tools`].
    pub(super) request_tools: Option<Arc<dyn super::RequestTools>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            info: None,
            instructions: None,
            tools: RwLock::default(),
            resources: BTreeMap::new(),
            templates: Vec::new(),
            prompts: BTreeMap::new(),
            completion: None,
            logging: false,
            subscriptions: false,
            tools_changed: broadcast::channel(16).0,
            legacy_peers: Mutex::default(),
            tasks: None,
            on_session_end: None,
            request_tools: None,
        }
    }
}

impl Registry {
    pub(super) fn tools(&self) -> RwLockReadGuard<'_, BTreeMap<String, (Tool, ToolHandler)>> {
        self.tools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn tools_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, (Tool, ToolHandler)>> {
        self.tools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Builds an [`McpServer`] from tools, resources, prompts and completions defined at runtime.
///
/// ```
/// use agentkit_mcp::server::McpServerBuilder;
/// use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
///
/// let server = McpServerBuilder::new("calc", "1.0.0")
///     .tool_fn(
///         "add",
///         "Add two numbers",
///         serde_json::json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
///         |args, _ctx| async move {
///             let a = args.get("a").and_then(|v| v.as_f64()).unwrap_or(0.0);
///             let b = args.get("b").and_then(|v| v.as_f64()).unwrap_or(0.0);
///             Ok(CallToolResult::success(vec![ContentBlock::text((a + b).to_string())]))
///         },
///     )
///     .build();
/// assert_eq!(server.tool_names(), ["add"]);
/// ```
#[derive(Default)]
pub struct McpServerBuilder {
    pub(super) reg: Registry,
}

impl std::fmt::Debug for McpServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServerBuilder")
            .field(
                "tools",
                &self.reg.tools().keys().cloned().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl McpServerBuilder {
    /// A server named `name` at `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            reg: Registry {
                info: Some(Implementation::new(name.into(), version.into())),
                ..Registry::default()
            },
        }
    }

    /// Instructions for clients.
    #[must_use]
    pub fn instructions(mut self, text: impl Into<String>) -> Self {
        self.reg.instructions = Some(text.into());
        self
    }

    /// Add a tool.
    #[must_use]
    pub fn tool(self, tool: Tool, handler: ToolHandler) -> Self {
        self.reg
            .tools_mut()
            .insert(tool.name.to_string(), (tool, handler));
        self
    }

    /// Add a tool from a name, a description, a JSON-schema object and an async closure.
    /// A schema that is not a JSON object is replaced by `{"type": "object"}`.
    #[must_use]
    pub fn tool_fn<F, Fut>(
        self,
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
        f: F,
    ) -> Self
    where
        F: Fn(JsonObject, CallContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<CallToolResult, ErrorData>> + Send + 'static,
    {
        let tool = Tool::new(
            name.into(),
            description.into(),
            Arc::new(object_schema(input_schema)),
        );
        let handler: ToolHandler = Arc::new(move |a, c| Box::pin(f(a, c)));
        self.tool(tool, handler)
    }

    /// Add a resource.
    #[must_use]
    pub fn resource(mut self, resource: Resource, handler: ResourceHandler) -> Self {
        self.reg
            .resources
            .insert(resource.uri.clone(), (resource, handler));
        self
    }

    /// Add a resource template (`test://items/{id}`); `{var}` segments are matched and passed
    /// to the handler.
    #[must_use]
    pub fn resource_template(
        mut self,
        template: ResourceTemplate,
        handler: TemplateHandler,
    ) -> Self {
        self.reg.templates.push((template, handler));
        self
    }

    /// Add a prompt.
    #[must_use]
    pub fn prompt(mut self, prompt: Prompt, handler: PromptHandler) -> Self {
        self.reg
            .prompts
            .insert(prompt.name.clone(), (prompt, handler));
        self
    }

    /// Answer `completion/complete`.
    #[must_use]
    pub fn completion(mut self, handler: CompletionHandler) -> Self {
        self.reg.completion = Some(handler);
        self
    }

    /// Advertise logging (`logging/setLevel` is accepted).
    #[must_use]
    pub fn logging(mut self) -> Self {
        self.reg.logging = true;
        self
    }

    /// Advertise resource subscriptions (`resources/subscribe` is accepted).
    #[must_use]
    pub fn resource_subscriptions(mut self) -> Self {
        self.reg.subscriptions = true;
        self
    }

    /// Offer MCP Tasks (SEP-2663): advertise the `io.modelcontextprotocol/tasks` extension,
    /// run the tools `backend` claims as tasks for clients that declare the extension, and
    /// answer `tasks/get`, `tasks/update` and `tasks/cancel` with it. Other clients and tools
    /// are unaffected. [`expose_workflows`](crate::expose_workflows) installs one.
    #[must_use]
    pub fn tasks(mut self, backend: Arc<dyn crate::tasks::TaskBackend>) -> Self {
        self.reg.tasks = Some(backend);
        self
    }

    /// List and call tools per request with `tools` (see [`RequestTools`](super::RequestTools)):
    /// what a client sees can depend on its credentials.
    #[must_use]
    pub fn request_tools(mut self, tools: Arc<dyn super::RequestTools>) -> Self {
        self.reg.request_tools = Some(tools);
        self
    }

    /// Be told the id of every session that ends (see [`CallContext::session_id`]): a stdio
    /// connection that closed, a legacy HTTP session the client deleted or that expired. Use
    /// it to drop per-session state. The hook runs on the task that ends the session: keep it
    /// short and non-blocking.
    #[must_use]
    pub fn on_session_end(mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> Self {
        // Hooks add up: `expose_as_mcp_server` installs one and the owner may add more.
        self.reg.on_session_end = Some(match self.reg.on_session_end.take() {
            None => Arc::new(hook),
            Some(earlier) => Arc::new(move |session: &str| {
                earlier(session);
                hook(session);
            }),
        });
        self
    }

    /// The server.
    #[must_use]
    pub fn build(self) -> McpServer {
        let sessions = crate::session::Sessions::new(self.reg.on_session_end.clone());
        McpServer {
            reg: Arc::new(self.reg),
            sessions,
            session: None,
        }
    }
}

pub(crate) fn object_schema(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        _ => {
            let mut o = JsonObject::new();
            o.insert("type".into(), "object".into());
            o
        }
    }
}
