//! [`McpServerBuilder`]: an MCP server whose tools, resources, prompts and completions are
//! defined at runtime (no macros), served over stdio, any async byte stream, or streamable HTTP
//! as a tower service (feature `server-http`).

#![allow(deprecated)] // logging and subscriptions are SEP-2577-deprecated in rmcp but still part of MCP 2025-11-25.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult,
    CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequest,
    ElicitRequestParams, ElicitResult, ElicitationSchema, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, InputRequest, InputRequests,
    InputRequiredResult, InputResponses, JsonObject, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam, Prompt,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceTemplate, ServerCapabilities, ServerConfig, SetLevelRequestParams,
    SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService, SubscriptionContext};
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What a handler gets besides its arguments: cancellation, progress, logging, the peer, and
/// questions to the client ([`elicit`](Self::elicit), [`sample`](Self::sample)) in either
/// lifecycle.
#[derive(Clone)]
pub struct CallContext {
    request: RequestContext<RoleServer>,
    input: Arc<InputRounds>,
    session: Option<Arc<str>>,
}

/// The input-required rounds (MRTR) of one `tools/call` on a 2026-07-28 connection: the
/// client's answers so far, and the questions the handler asked that have no answer yet.
#[derive(Default)]
struct InputRounds {
    answers: InputResponses,
    asked: AtomicUsize,
    pending: Mutex<InputRequests>,
}

impl InputRounds {
    /// The answers of earlier rounds (carried in `requestState`) plus this round's.
    fn from_request(req: &CallToolRequestParams) -> Self {
        let mut answers: InputResponses = req
            .request_state
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        if let Some(r) = &req.input_responses {
            answers.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Self {
            answers,
            ..Self::default()
        }
    }

    fn take_pending(&self) -> InputRequests {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("id", &self.request.id)
            .finish_non_exhaustive()
    }
}

impl CallContext {
    /// Fires when the client cancels the request (or the connection ends).
    #[must_use]
    pub fn cancellation(&self) -> CancellationToken {
        self.request.ct.clone()
    }

    /// The connected client.
    #[must_use]
    pub fn peer(&self) -> &Peer<RoleServer> {
        &self.request.peer
    }

    /// The MCP session this request belongs to: the `Mcp-Session-Id` of a legacy streamable
    /// HTTP session (absent on its `initialize` request), one id per stdio (or other
    /// transport) connection, and `None` for stateless 2026-07-28 HTTP requests. Stable for
    /// the session's life; [`McpServerBuilder::on_session_end`] is told when it ends.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The raw rmcp request context (meta, extensions such as `http::request::Parts`).
    #[must_use]
    pub fn request(&self) -> &RequestContext<RoleServer> {
        &self.request
    }

    /// The request's `_meta` value under `key`, if any.
    #[must_use]
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.request.meta.get(key)
    }

    /// Send a progress notification, when the client asked for progress.
    pub async fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        if let Some(token) = self.request.meta.get_progress_token() {
            let mut p = ProgressNotificationParam::new(token, progress);
            if let Some(t) = total {
                p = p.with_total(t);
            }
            if let Some(m) = message {
                p = p.with_message(m);
            }
            let _ = self.request.peer.notify_progress(p).await;
        }
    }

    /// Whether this request arrived on a 2026-07-28 (or later) connection, where the server
    /// may not send requests to the client and asks through input-required results instead.
    #[must_use]
    pub fn is_stateless_protocol(&self) -> bool {
        self.request
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
    }

    /// Ask the client's user for input (an elicitation) while a tool runs; works in both
    /// lifecycles:
    ///
    /// - legacy sessions (up to 2025-11-25): sends `elicitation/create` and waits for the answer;
    /// - 2026-07-28: the first time, records the question and returns an error; propagate it
    ///   with `?`. The server then answers `tools/call` with an `InputRequiredResult` carrying
    ///   the question (whatever the handler returned), the client retries with the answer, and
    ///   the handler runs again from the start, this time getting the answer here.
    ///
    /// So on 2026-07-28 a handler runs once per round: ask before acting, and keep the order
    /// of questions stable (answers are matched to questions by their position). The answers
    /// of earlier rounds travel in `requestState`; they come from the client either way, so a
    /// client that edits them only changes its own answers.
    ///
    /// ```no_run
    /// # use agentkit_mcp::server::CallContext;
    /// # use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock, ElicitationAction, ElicitationSchema};
    /// # async fn tool(ctx: CallContext) -> Result<CallToolResult, agentkit_mcp::rmcp::ErrorData> {
    /// let schema: ElicitationSchema = serde_json::from_value(serde_json::json!({
    ///     "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]
    /// })).map_err(|e| agentkit_mcp::rmcp::ErrorData::internal_error(e.to_string(), None))?;
    /// let answer = ctx.elicit("Proceed?", schema).await?;
    /// let text = format!("{:?} {:?}", answer.action, answer.content);
    /// Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    /// # }
    /// ```
    pub async fn elicit(
        &self,
        message: impl Into<String>,
        schema: ElicitationSchema,
    ) -> Result<ElicitResult, ErrorData> {
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.into(),
            requested_schema: schema,
        };
        if !self.is_stateless_protocol() {
            return self
                .request
                .peer
                .create_elicitation(params)
                .await
                .map_err(|e| ErrorData::internal_error(format!("elicitation failed: {e}"), None));
        }
        self.ask(InputRequest::Elicitation(ElicitRequest::new(params)))
    }

    /// Ask the client's model for a completion (sampling) while a tool runs, in either
    /// lifecycle; see [`elicit`](Self::elicit) for how 2026-07-28 rounds work.
    pub async fn sample(
        &self,
        params: CreateMessageRequestParams,
    ) -> Result<CreateMessageResult, ErrorData> {
        if !self.is_stateless_protocol() {
            return self
                .request
                .peer
                .create_message(params)
                .await
                .map_err(|e| ErrorData::internal_error(format!("sampling failed: {e}"), None));
        }
        self.ask(InputRequest::CreateMessage(CreateMessageRequest::new(
            params,
        )))
    }

    /// The answer to the next question of this handler run, or record the question.
    fn ask<T: serde::de::DeserializeOwned>(&self, question: InputRequest) -> Result<T, ErrorData> {
        let n = self.input.asked.fetch_add(1, Ordering::SeqCst);
        let key = format!("q{n}");
        if let Some(answer) = self.input.answers.get(&key) {
            return serde_json::from_value(answer.clone()).map_err(|e| {
                ErrorData::invalid_params(
                    format!("malformed answer to input request `{key}`: {e}"),
                    None,
                )
            });
        }
        if let Ok(mut p) = self.input.pending.lock() {
            p.insert(key.clone(), question);
        }
        Err(ErrorData::internal_error(
            format!("input request `{key}` has no answer yet; the client is asked for it"),
            None,
        ))
    }

    /// Send a log message notification to the client.
    pub async fn log(&self, level: LoggingLevel, data: Value) {
        #[allow(deprecated)]
        let p = LoggingMessageNotificationParam::new(level, data);
        #[allow(deprecated)]
        let _ = self.request.peer.notify_logging_message(p).await;
    }
}

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

struct Registry {
    info: Option<Implementation>,
    instructions: Option<String>,
    tools: RwLock<BTreeMap<String, (Tool, ToolHandler)>>,
    resources: BTreeMap<String, (Resource, ResourceHandler)>,
    templates: Vec<(ResourceTemplate, TemplateHandler)>,
    prompts: BTreeMap<String, (Prompt, PromptHandler)>,
    completion: Option<CompletionHandler>,
    logging: bool,
    subscriptions: bool,
    /// Fires when the tool list changes; feeds 2026-07-28 `subscriptions/listen` streams.
    tools_changed: broadcast::Sender<()>,
    /// Legacy sessions, told about tool-list changes with `notifications/tools/list_changed`.
    legacy_peers: Mutex<Vec<Peer<RoleServer>>>,
    /// MCP Tasks (SEP-2663); see [`McpServerBuilder::tasks`].
    tasks: Option<Arc<dyn crate::tasks::TaskBackend>>,
    /// Called when a session ends; see [`McpServerBuilder::on_session_end`].
    on_session_end: Option<crate::session::SessionEndHook>,
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
        }
    }
}

impl Registry {
    fn tools(&self) -> RwLockReadGuard<'_, BTreeMap<String, (Tool, ToolHandler)>> {
        self.tools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tools_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, (Tool, ToolHandler)>> {
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
    reg: Registry,
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

/// A built server: an rmcp [`ServerHandler`]. Cheap to clone (`Arc`s).
#[derive(Clone)]
pub struct McpServer {
    reg: Arc<Registry>,
    /// The open sessions of every transport this server is served on.
    sessions: crate::session::Sessions,
    /// The session of a connection served with [`McpServer::serve`].
    session: Option<Arc<str>>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("tools", &self.tool_names())
            .finish_non_exhaustive()
    }
}

impl McpServer {
    fn ctx(&self, request: RequestContext<RoleServer>) -> CallContext {
        self.call_context(request, Arc::default())
    }

    fn call_context(
        &self,
        request: RequestContext<RoleServer>,
        input: Arc<InputRounds>,
    ) -> CallContext {
        let http_session = request
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(Arc::from);
        CallContext {
            request,
            input,
            session: http_session.or_else(|| self.session.clone()),
        }
    }

    /// The tool names.
    #[must_use]
    pub fn tool_names(&self) -> Vec<String> {
        self.reg.tools().keys().cloned().collect()
    }

    /// Add (or replace) a tool while the server runs. Every clone of this server (and so every
    /// session of [`into_http_service`](Self::into_http_service)) sees it at once, and clients
    /// are told that the tool list changed: legacy sessions by `notifications/tools/list_changed`,
    /// 2026-07-28 clients on their `subscriptions/listen` stream.
    pub async fn add_tool(&self, tool: Tool, handler: ToolHandler) {
        self.reg
            .tools_mut()
            .insert(tool.name.to_string(), (tool, handler));
        self.notify_tool_list_changed().await;
    }

    /// Like [`add_tool`](Self::add_tool), from a name, a description, a JSON-schema object and
    /// an async closure (see [`McpServerBuilder::tool_fn`]).
    pub async fn add_tool_fn<F, Fut>(
        &self,
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: Value,
        f: F,
    ) where
        F: Fn(JsonObject, CallContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<CallToolResult, ErrorData>> + Send + 'static,
    {
        let tool = Tool::new(
            name.into(),
            description.into(),
            Arc::new(object_schema(input_schema)),
        );
        let handler: ToolHandler = Arc::new(move |a, c| Box::pin(f(a, c)));
        self.add_tool(tool, handler).await;
    }

    /// Remove a tool while the server runs (clients are told, as with
    /// [`add_tool`](Self::add_tool)). Whether there was such a tool.
    pub async fn remove_tool(&self, name: &str) -> bool {
        let removed = self.reg.tools_mut().remove(name).is_some();
        if removed {
            self.notify_tool_list_changed().await;
        }
        removed
    }

    /// Tell every connected client that the tool list changed.
    pub async fn notify_tool_list_changed(&self) {
        let _ = self.reg.tools_changed.send(());
        let peers: Vec<Peer<RoleServer>> = self
            .reg
            .legacy_peers
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        for p in peers.iter().filter(|p| !p.is_transport_closed()) {
            let _ = p.notify_tool_list_changed().await;
        }
        if let Ok(mut list) = self.reg.legacy_peers.lock() {
            list.retain(|p| !p.is_transport_closed());
        }
    }

    /// Serve one client over any transport rmcp accepts (e.g. `tokio::io::duplex`, a TCP
    /// stream, `rmcp::transport::stdio()`).
    pub async fn serve<T, E, A>(
        self,
        transport: T,
    ) -> agentkit_core::Result<RunningService<RoleServer, Self>>
    where
        T: rmcp::transport::IntoTransport<RoleServer, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let transport = self
            .sessions
            .track(Arc::clone(&id), transport.into_transport());
        let mut this = self;
        this.session = Some(id);
        ServiceExt::serve(this, transport)
            .await
            .map_err(|e| agentkit_core::Error::other("serving MCP", e))
    }

    /// Serve over this process's stdin/stdout until the client disconnects. Log to stderr only.
    pub async fn serve_stdio(self) -> agentkit_core::Result<()> {
        let running = self.serve(rmcp::transport::stdio()).await?;
        running
            .waiting()
            .await
            .map_err(|e| agentkit_core::Error::other("MCP stdio server", e))?;
        Ok(())
    }

    /// The streamable HTTP endpoint, a tower service (mount it with
    /// `axum::Router::nest_service("/mcp", ..)`). Protections are on by default: only
    /// loopback `Host` values are accepted (DNS rebinding), a request with a browser `Origin`
    /// must come from a loopback origin unless [`HttpOptions::with_allowed_origins`] says
    /// otherwise (403), malformed JSON-RPC gets a JSON-RPC error (-32700, -32600, -32602),
    /// and at most [`DEFAULT_MAX_SESSIONS`] legacy sessions are open at once.
    #[cfg(feature = "server-http")]
    #[must_use]
    pub fn into_http_service(self, options: HttpOptions) -> crate::http::McpHttpService {
        use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
        let mut config =
            StreamableHttpServerConfig::default().with_cancellation_token(options.cancel.clone());
        if let Some(hosts) = options.allowed_hosts {
            config = config.with_allowed_hosts(hosts);
        }
        let origins = options
            .allowed_origins
            .unwrap_or_else(|| LOOPBACK_ORIGINS.iter().map(|o| (*o).to_owned()).collect());
        config = if origins.is_empty() {
            config.enforce_origin_validation()
        } else {
            config.with_allowed_origins(origins)
        };
        config = config.with_json_response(options.json_response);
        let sessions = self.sessions.clone();
        crate::http::McpHttpService::new(self, config, sessions, options.max_sessions)
    }

    fn task_backend(&self) -> Result<&Arc<dyn crate::tasks::TaskBackend>, ErrorData> {
        self.reg.tasks.as_ref().ok_or_else(|| {
            ErrorData::invalid_request(
                "this server offers no MCP Tasks; call its tools without the tasks extension",
                None,
            )
        })
    }

    fn match_template(&self, uri: &str) -> Option<(TemplateHandler, BTreeMap<String, String>)> {
        self.reg.templates.iter().find_map(|(t, h)| {
            match_uri_template(&t.uri_template, uri).map(|vars| (Arc::clone(h), vars))
        })
    }
}

/// Browser origins accepted by default: the loopback ones, on any port.
#[cfg(feature = "server-http")]
const LOOPBACK_ORIGINS: &[&str] = &[
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://[::1]:*",
    "https://[::1]:*",
];

/// Default cap on open legacy HTTP sessions (each holds memory until it is closed or expires
/// after 5 idle minutes).
#[cfg(feature = "server-http")]
pub const DEFAULT_MAX_SESSIONS: usize = 1024;

/// Options of [`McpServer::into_http_service`].
#[cfg(feature = "server-http")]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpOptions {
    /// `Host` values accepted (default: loopback only, which blocks DNS rebinding).
    pub allowed_hosts: Option<Vec<String>>,
    /// `Origin` values accepted from browsers, e.g. `https://app.example.com:443` or
    /// `http://localhost:*` (default: loopback origins; an empty list rejects every request
    /// that carries an `Origin`). Requests without `Origin` (non-browser clients) pass.
    pub allowed_origins: Option<Vec<String>>,
    /// At most this many legacy (`initialize`) sessions open at once; a new one past it gets
    /// HTTP 503 with a JSON-RPC error. `None`: no cap. Default [`DEFAULT_MAX_SESSIONS`].
    pub max_sessions: Option<usize>,
    /// Answer with plain JSON instead of SSE streams where possible.
    pub json_response: bool,
    /// Cancelling it ends every session.
    pub cancel: CancellationToken,
}

#[cfg(feature = "server-http")]
impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            allowed_hosts: None,
            allowed_origins: None,
            max_sessions: Some(DEFAULT_MAX_SESSIONS),
            json_response: false,
            cancel: CancellationToken::new(),
        }
    }
}

#[cfg(feature = "server-http")]
impl HttpOptions {
    /// Defaults: loopback hosts and origins only, SSE responses, at most
    /// [`DEFAULT_MAX_SESSIONS`] sessions.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Cap the open legacy sessions (`None`: no cap).
    #[must_use]
    pub fn with_max_sessions(mut self, max: Option<usize>) -> Self {
        self.max_sessions = max;
        self
    }

    /// Accept these `Host` values (for a public deployment).
    #[must_use]
    pub fn with_allowed_hosts<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        hosts: I,
    ) -> Self {
        self.allowed_hosts = Some(hosts.into_iter().map(Into::into).collect());
        self
    }

    /// Accept these `Origin` values.
    #[must_use]
    pub fn with_allowed_origins<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        origins: I,
    ) -> Self {
        self.allowed_origins = Some(origins.into_iter().map(Into::into).collect());
        self
    }

    /// Answer with JSON rather than SSE.
    #[must_use]
    pub fn with_json_response(mut self, json: bool) -> Self {
        self.json_response = json;
        self
    }

    /// End every session when this token is cancelled.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }
}

/// Match `uri` against an RFC 6570 level-1 template (`scheme://a/{x}/b`).
fn match_uri_template(template: &str, uri: &str) -> Option<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    let mut rest = uri;
    let mut t = template;
    while !t.is_empty() {
        match t.find('{') {
            None => return (rest == t).then_some(vars),
            Some(open) => {
                let literal = &t[..open];
                rest = rest.strip_prefix(literal)?;
                let close = t[open..].find('}')? + open;
                let name = &t[open + 1..close];
                t = &t[close + 1..];
                let next_literal_end = t.find('{').unwrap_or(t.len());
                let next_literal = &t[..next_literal_end];
                let end = if next_literal.is_empty() {
                    rest.len()
                } else {
                    rest.find(next_literal)?
                };
                let value = &rest[..end];
                if value.is_empty()
                    || (next_literal.is_empty() && value.contains('/')) && !t.is_empty()
                {
                    return None;
                }
                vars.insert(name.to_owned(), value.to_owned());
                rest = &rest[end..];
            }
        }
    }
    rest.is_empty().then_some(vars)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        // Tools are always advertised, with `listChanged`: they can be added at runtime.
        let mut b = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        if !self.reg.resources.is_empty() || !self.reg.templates.is_empty() {
            let mut r = rmcp::model::ResourcesCapability::default();
            if self.reg.subscriptions {
                r.subscribe = Some(true);
            }
            b.resources = Some(r);
        }
        if !self.reg.prompts.is_empty() {
            b.prompts = Some(rmcp::model::PromptsCapability::default());
        }
        if self.reg.completion.is_some() {
            b.completions = Some(Default::default());
        }
        if self.reg.logging {
            b.logging = Some(Default::default());
        }
        if self.reg.tasks.is_some() {
            b.extensions.get_or_insert_with(Default::default).insert(
                rmcp::model::TASKS_EXTENSION_ID.to_owned(),
                JsonObject::new(),
            );
        }
        let mut cfg = ServerConfig::new(b);
        if let Some(info) = &self.reg.info {
            cfg = cfg.with_server_info(info.clone());
        }
        if let Some(i) = &self.reg.instructions {
            cfg = cfg.with_instructions(i.clone());
        }
        cfg
    }

    async fn list_tools(
        &self,
        _p: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.reg.tools().values().map(|(t, _)| t.clone()).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.reg.tools().get(name).map(|(t, _)| t.clone())
    }

    async fn on_initialized(&self, c: NotificationContext<RoleServer>) {
        // A legacy session: it hears about tool-list changes by notification.
        if let Ok(mut peers) = self.reg.legacy_peers.lock() {
            peers.retain(|p| !p.is_transport_closed());
            peers.push(c.peer);
        }
    }

    /// `server/discover` is how a 2026-07-28 client starts; the versions before it only work
    /// with `initialize`, so only the discover-era ones are listed (`initialize` still
    /// negotiates every version rmcp knows).
    async fn discover(
        &self,
        _c: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::DiscoverResult, ErrorData> {
        let versions = self
            .supported_protocol_versions()
            .iter()
            .filter(|v| **v >= ProtocolVersion::V_2026_07_28)
            .cloned()
            .collect();
        Ok(rmcp::model::DiscoverResult::from_server_info(
            versions,
            self.get_info(),
        ))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, c: SubscriptionContext) -> Result<(), ErrorData> {
        // 2026-07-28: tool-list changes flow on the client's `subscriptions/listen` stream.
        let mut changed = self.reg.tools_changed.subscribe();
        loop {
            tokio::select! {
                () = c.cancelled() => return Ok(()),
                r = changed.recv() => match r {
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    _ => {
                        let _ = c.sink().notify_tool_list_changed().await;
                    }
                },
            }
        }
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        c: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let handler = self
            .reg
            .tools()
            .get(req.name.as_ref())
            .map(|(_, f)| Arc::clone(f));
        let Some(f) = handler else {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; available: {}",
                    req.name,
                    self.tool_names().join(", ")
                ),
                None,
            ));
        };
        if let Some(tasks) = &self.reg.tasks
            && tasks.runs_as_task(&req.name)
            && c.client_capabilities()
                .is_some_and(|caps| caps.supports_tasks())
        {
            return tasks
                .start(&req.name, req.arguments.unwrap_or_default(), &c)
                .await;
        }
        let ct = c.ct.clone();
        let input = Arc::new(InputRounds::from_request(&req));
        let call = self.call_context(c, Arc::clone(&input));
        let out = tokio::select! {
            r = f(req.arguments.clone().unwrap_or_default(), call) => r,
            () = ct.cancelled() => return Err(ErrorData::internal_error("cancelled by the client", None)),
        };
        // 2026-07-28: the handler asked questions without answers; ask the client (MRTR).
        let asked = input.take_pending();
        if !asked.is_empty() {
            let state = (!input.answers.is_empty())
                .then(|| serde_json::to_string(&input.answers).ok())
                .flatten();
            return Ok(InputRequiredResult::new(Some(asked), state).into());
        }
        out.map(Into::into)
    }

    async fn get_task(
        &self,
        req: rmcp::model::GetTaskParams,
        c: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        let task = self.task_backend()?.get(&req.task_id, &c).await?;
        Ok(rmcp::model::GetTaskResult::new(task))
    }

    async fn update_task(
        &self,
        req: rmcp::model::UpdateTaskParams,
        c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.task_backend()?
            .update(&req.task_id, req.input_responses, &c)
            .await
    }

    async fn cancel_task(
        &self,
        req: rmcp::model::CancelTaskParams,
        c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.task_backend()?.cancel(&req.task_id, &c).await
    }

    async fn list_resources(
        &self,
        _p: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(
            self.reg
                .resources
                .values()
                .map(|(r, _)| r.clone())
                .collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _p: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            self.reg.templates.iter().map(|(t, _)| t.clone()).collect(),
        ))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        c: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if let Some((_, f)) = self.reg.resources.get(&req.uri) {
            return f(req.uri.clone(), self.ctx(c)).await.map(Into::into);
        }
        if let Some((f, vars)) = self.match_template(&req.uri) {
            return f(req.uri.clone(), vars, self.ctx(c)).await.map(Into::into);
        }
        Err(ErrorData::resource_not_found(
            format!("no resource `{}`", req.uri),
            None,
        ))
    }

    async fn list_prompts(
        &self,
        _p: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(
            self.reg.prompts.values().map(|(p, _)| p.clone()).collect(),
        ))
    }

    async fn get_prompt(
        &self,
        req: GetPromptRequestParams,
        c: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let Some((_, f)) = self.reg.prompts.get(&req.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt `{}`", req.name),
                None,
            ));
        };
        let args: JsonObject = req
            .arguments
            .clone()
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        f(args, self.ctx(c)).await.map(Into::into)
    }

    async fn complete(
        &self,
        req: CompleteRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        match &self.reg.completion {
            Some(f) => f(req).await,
            None => Ok(CompleteResult::default()),
        }
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        _req: SetLevelRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        _req: SubscribeRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        _req: UnsubscribeRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uri_templates_match_variables() {
        let v =
            match_uri_template("test://template/{id}/data", "test://template/123/data").unwrap();
        assert_eq!(v["id"], "123");
        assert!(match_uri_template("test://template/{id}/data", "test://other/1/data").is_none());
        let v = match_uri_template("file:///{path}", "file:///a").unwrap();
        assert_eq!(v["path"], "a");
    }
}
