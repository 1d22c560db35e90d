//! [`McpServer`]: serving the registry over stdio, any byte stream, or streamable HTTP.

#![allow(deprecated)] // logging and subscriptions are SEP-2577-deprecated in rmcp but still part of MCP 2025-11-25.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::CatchPanics;
use super::builder::{Registry, TemplateHandler, ToolHandler, object_schema};
use super::context::{CallContext, InputRounds};
use super::handler::match_uri_template;
use rmcp::model::{CallToolResult, JsonObject, Tool};
use rmcp::service::{RequestContext, RunningService};
use rmcp::{ErrorData, Peer, RoleServer, ServiceExt};
use serde_json::Value;
#[cfg(feature = "server-http")]
use tokio_util::sync::CancellationToken;

/// A built server: an rmcp [`ServerHandler`](rmcp::ServerHandler). Cheap to clone (`Arc`s).
#[derive(Clone)]
pub struct McpServer {
    pub(super) reg: Arc<Registry>,
    /// The open sessions of every transport this server is served on.
    pub(super) sessions: crate::session::Sessions,
    /// The session of a connection served with [`McpServer::serve`].
    pub(super) session: Option<Arc<str>>,
}

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("tools", &self.tool_names())
            .finish_non_exhaustive()
    }
}

impl McpServer {
    pub(super) fn ctx(&self, request: RequestContext<RoleServer>) -> CallContext {
        self.call_context(request, Arc::default())
    }

    pub(super) fn call_context(
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
    /// an async closure (see [`McpServerBuilder::tool_fn`](super::McpServerBuilder::tool_fn)).
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
    /// stream, `rmcp::transport::stdio()`). A request whose handler panics is answered at
    /// once with a JSON-RPC internal error, and the connection keeps serving (see
    /// [`CatchPanics`]; the running service's [`service()`](RunningService::service) is
    /// this server, wrapped).
    pub async fn serve<T, E, A>(
        self,
        transport: T,
    ) -> agentkit_core::Result<RunningService<RoleServer, CatchPanics<Self>>>
    where
        T: rmcp::transport::IntoTransport<RoleServer, E, A>,
        E: std::error::Error + Send + Sync + 'static,
    {
        let (this, transport) = self.into_session(transport.into_transport());
        ServiceExt::serve(CatchPanics::new(this), transport)
            .await
            .map_err(|e| agentkit_core::Error::other("serving MCP", e))
    }

    /// This server as one new session on `transport` (a fresh session id, counted and ended
    /// with the transport): what [`serve`](Self::serve) serves.
    pub(crate) fn into_session<T>(mut self, transport: T) -> (Self, crate::session::Tracked<T>) {
        let id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let transport = self.sessions.track(Arc::clone(&id), transport);
        self.session = Some(id);
        (self, transport)
    }

    /// Serve over this process's stdin/stdout until the client disconnects. Log to stderr
    /// only. A panicking handler's request is answered at once, as with [`serve`](Self::serve).
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
    /// and at most [`DEFAULT_MAX_SESSIONS`] legacy sessions are open at once. A request whose
    /// handler panics is answered at once with a JSON-RPC internal error (see
    /// [`CatchPanics`]), on a session and on a stateless request alike.
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

    /// The request tools that answer a stateless `tools/call` of `name` directly (see
    /// [`RequestTools::calls_directly`](super::RequestTools::calls_directly)), unless a
    /// registered tool has that name (its schema takes part in rmcp's header checks).
    #[cfg(feature = "server-http")]
    pub(crate) fn direct_tools(&self, name: &str) -> Option<Arc<dyn super::RequestTools>> {
        let extra = self.reg.request_tools.as_ref()?;
        (extra.owns(name) && extra.calls_directly(name) && !self.reg.tools().contains_key(name))
            .then(|| Arc::clone(extra))
    }

    pub(super) fn task_backend(&self) -> Result<&Arc<dyn crate::tasks::TaskBackend>, ErrorData> {
        self.reg.tasks.as_ref().ok_or_else(|| {
            ErrorData::invalid_request(
                "this server offers no MCP Tasks; call its tools without the tasks extension",
                None,
            )
        })
    }

    pub(super) fn match_template(
        &self,
        uri: &str,
    ) -> Option<(TemplateHandler, BTreeMap<String, String>)> {
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
