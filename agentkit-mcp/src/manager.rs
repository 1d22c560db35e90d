//! [`ConnectionManager`]: one long-lived, lazily started, shared connection per MCP server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentkit_core::{Error, HumanInputHandler, LlmProvider, Result, RunContext};
#[cfg(any(feature = "client-stdio", feature = "client-http"))]
use rmcp::ClientServiceExt;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam,
    ClientRequest, GetPromptRequestParams, GetPromptResult, InputRequest, InputRequiredResult,
    InputResponses, JsonObject, Prompt, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResult, RequestMetaObject, Resource, ServerPeerInfo, ServerResult,
    SubscriptionFilter, Tool,
};
use rmcp::service::{ClientCacheConfig, PeerRequestOptions, RunningService, ServiceError};
use rmcp::{ClientLifecycleMode, Peer, RoleClient};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{AgentkitClient, ClientShared, Inflight, token_key};
use crate::config::{ServerConfig, ServerSet, ServerTransport};

/// Which MCP lifecycle a connection uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// The `initialize` handshake (every server speaks it; up to protocol 2025-11-25). Servers
    /// may send sampling, elicitation and roots requests during a call.
    #[default]
    Initialize,
    /// Probe with `server/discover` (protocol 2026-07-28, stateless, input-required rounds)
    /// and fall back to `initialize` for servers that do not know it.
    Auto,
}

const MAX_INPUT_ROUNDS: usize = 10;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(8);
const LISTEN_RETRY_BASE: Duration = Duration::from_millis(250);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(30);
const LISTEN_HEALTHY: Duration = Duration::from_secs(10);
const LISTEN_FIRST_WAIT: Duration = Duration::from_secs(5);

/// A live connection to one server. Cheap to clone (an `Arc`).
pub struct Connection {
    server: String,
    peer: Peer<RoleClient>,
    client: AgentkitClient,
    pid: Option<u32>,
    running: AsyncMutex<Option<RunningService<RoleClient, AgentkitClient>>>,
    /// Ends the connection's background tasks (the `subscriptions/listen` follower).
    stop: CancellationToken,
    /// The child process of a stdio server.
    #[cfg(feature = "client-stdio")]
    child: AsyncMutex<Option<crate::stdio::StdioChild>>,
    /// Messages of a stdio server discarded for being too large.
    #[cfg(feature = "client-stdio")]
    oversize: Option<Arc<crate::stdio::Oversize>>,
    /// How long a closing stdio server may take to exit on its own.
    shutdown_grace: Duration,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The server's name.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The rmcp peer, for requests agentkit does not wrap.
    #[must_use]
    pub fn peer(&self) -> &Peer<RoleClient> {
        &self.peer
    }

    /// What the server said about itself (version, capabilities, negotiated protocol).
    #[must_use]
    pub fn peer_info(&self) -> Option<Arc<ServerPeerInfo>> {
        self.peer.peer_info()
    }

    /// The negotiated protocol version.
    #[must_use]
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.peer_info().map(|i| i.protocol_version.clone())
    }

    /// The process id of a stdio server.
    #[must_use]
    pub fn process_id(&self) -> Option<u32> {
        self.pid
    }

    /// Whether the transport is closed (the server exited or the session dropped).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.peer.is_transport_closed()
    }

    /// Close the connection. For a stdio server: requests the server sent are answered
    /// first (up to the server's shutdown grace), stdin is closed, the server gets the grace
    /// period to exit, then SIGTERM, then SIGKILL after as long again.
    pub async fn close(&self) {
        self.stop.cancel();
        let running = self.running.lock().await.take();
        if let Some(mut r) = running {
            self.client.answering.wait_idle(self.shutdown_grace).await;
            let _ = r.close_with_timeout(CLOSE_TIMEOUT).await;
        }
        #[cfg(feature = "client-stdio")]
        if let Some(child) = self.child.lock().await.take() {
            child.shutdown(self.shutdown_grace).await;
        }
    }

    /// Every tool, following pagination.
    pub async fn list_tools(&self) -> Result<Vec<Tool>> {
        self.peer
            .list_all_tools()
            .await
            .map_err(|e| service_error(&self.server, "tools/list", e))
    }

    /// Every prompt, following pagination.
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>> {
        self.peer
            .list_all_prompts()
            .await
            .map_err(|e| service_error(&self.server, "prompts/list", e))
    }

    /// Every resource, following pagination.
    pub async fn list_resources(&self) -> Result<Vec<Resource>> {
        self.peer
            .list_all_resources()
            .await
            .map_err(|e| service_error(&self.server, "resources/list", e))
    }

    /// Read a resource.
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult> {
        self.peer
            .read_resource(ReadResourceRequestParams::new(uri.to_owned()))
            .await
            .map_err(|e| service_error(&self.server, &format!("resources/read {uri}"), e))
    }

    /// Get a prompt with arguments.
    pub async fn get_prompt(&self, name: &str, arguments: JsonObject) -> Result<GetPromptResult> {
        self.peer
            .get_prompt(GetPromptRequestParams::new(name.to_owned()).with_arguments(arguments))
            .await
            .map_err(|e| service_error(&self.server, &format!("prompts/get {name}"), e))
    }

    /// Call a tool for a run: `_meta` carries the run id, an idempotency key and a W3C
    /// `traceparent`; progress notifications become [`RunEvent::Progress`](agentkit_core::RunEvent)
    /// events of `ctx`; the server's sampling and elicitation requests are answered for `ctx`;
    /// cancelling `ctx` sends `notifications/cancelled`.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RunContext,
        timeout: Option<Duration>,
    ) -> Result<CallToolResult> {
        let what = format!("{}/{}", self.server, name);
        let mut params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
        let meta = request_meta(ctx);
        for _round in 0..MAX_INPUT_ROUNDS {
            ctx.check()?;
            let mut opts = PeerRequestOptions::no_options().with_meta(meta.clone());
            if let Some(t) = timeout {
                opts.timeout = Some(t);
                opts = opts.reset_timeout_on_progress();
            }
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()));
            let handle = self
                .peer
                .send_request_with_option(request, opts)
                .await
                .map_err(|e| service_error(&self.server, &format!("tools/call {name}"), e))?;
            let guard = self
                .client
                .inflight
                .insert(token_key(&handle.progress_token), ctx.clone());
            let id = handle.id.clone();
            let remaining = ctx.remaining();
            let mut too_large = self.oversize_watch(&id);
            let response = tokio::select! {
                r = handle.await_response() => r,
                len = too_large.matched() => {
                    return Err(result_too_large(&what, len));
                }
                () = ctx.cancellation().cancelled() => {
                    self.send_cancel(id, "the run was cancelled").await;
                    return Err(Error::Cancelled { run_id: ctx.run_id().to_owned() });
                }
                () = sleep_opt(remaining) => {
                    self.send_cancel(id, "the run's deadline passed").await;
                    return Err(Error::Timeout { what: format!("MCP call `{what}`"), after: remaining.unwrap_or_default() });
                }
            };
            match response {
                Ok(ServerResult::CallToolResult(r)) => {
                    guard.await_final_progress().await;
                    return Ok(r);
                }
                Ok(ServerResult::InputRequiredResult(ir)) => {
                    let (responses, state) = self.fulfill(ir, ctx).await?;
                    params.input_responses = responses;
                    params.request_state = state;
                }
                Ok(ServerResult::CreateTaskResult(_)) => {
                    return Err(Error::tool(
                        what,
                        "the server answered with a task; agentkit calls tools synchronously (do not advertise the tasks capability)",
                    ));
                }
                Ok(_) => {
                    return Err(Error::tool(
                        what,
                        "the server answered tools/call with an unexpected result type",
                    ));
                }
                Err(ServiceError::Timeout { .. }) if too_large.unmatched().is_some() => {
                    let len = too_large.unmatched().unwrap_or_default();
                    return Err(result_too_large(&what, len));
                }
                Err(e) => {
                    return Err(service_error(
                        &self.server,
                        &format!("tools/call {name}"),
                        e,
                    ));
                }
            }
        }
        Err(Error::tool(
            what,
            format!(
                "the server asked for input more than {MAX_INPUT_ROUNDS} times without answering"
            ),
        ))
    }

    /// Watches for the stdio transport discarding this request's response for its size.
    fn oversize_watch(&self, id: &rmcp::model::RequestId) -> OversizeWatch {
        #[cfg(feature = "client-stdio")]
        {
            OversizeWatch {
                rx: self.oversize.as_ref().map(|o| o.subscribe()),
                id: serde_json::to_string(id).unwrap_or_default(),
                unmatched: None,
            }
        }
        #[cfg(not(feature = "client-stdio"))]
        {
            let _ = id;
            OversizeWatch
        }
    }

    async fn send_cancel(&self, id: rmcp::model::RequestId, reason: &str) {
        let _ = self
            .peer
            .notify_cancelled(CancelledNotificationParam::new(
                Some(id),
                Some(reason.to_owned()),
            ))
            .await;
    }

    async fn fulfill(
        &self,
        ir: InputRequiredResult,
        ctx: &RunContext,
    ) -> Result<(Option<InputResponses>, Option<String>)> {
        let mut out = InputResponses::new();
        for (key, req) in ir.input_requests.unwrap_or_default() {
            let value = match req {
                InputRequest::CreateMessage(r) => {
                    let res = self.client.sample(r.params, Some(ctx.clone())).await;
                    res.map(|r| serde_json::to_value(r).unwrap_or_default())
                }
                InputRequest::Elicitation(r) => {
                    let res = self.client.elicit(r.params, Some(ctx.clone())).await;
                    res.map(|r| serde_json::to_value(r).unwrap_or_default())
                }
                InputRequest::ListRoots(_) => {
                    Ok(serde_json::to_value(self.client.roots()).unwrap_or_default())
                }
                _ => continue,
            };
            let value = value.map_err(|e| {
                Error::tool(
                    self.server.clone(),
                    format!(
                        "answering the server's input request `{key}` failed: {}",
                        e.message
                    ),
                )
            })?;
            out.insert(key, value);
        }
        Ok(((!out.is_empty()).then_some(out), ir.request_state))
    }
}

/// Which discarded oversize messages concern one request.
#[cfg(feature = "client-stdio")]
struct OversizeWatch {
    rx: Option<tokio::sync::broadcast::Receiver<(Option<String>, usize)>>,
    id: String,
    /// The size of a discarded message whose id could not be read.
    unmatched: Option<usize>,
}

#[cfg(feature = "client-stdio")]
impl OversizeWatch {
    /// Resolves with the size of the discarded message that was this request's response.
    async fn matched(&mut self) -> usize {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match rx.recv().await {
                Ok((Some(id), len)) if id == self.id => return len,
                Ok((None, len)) => self.unmatched = Some(len),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The size of a discarded message that may have been this request's response.
    fn unmatched(&mut self) -> Option<usize> {
        if let Some(rx) = self.rx.as_mut() {
            while let Ok((id, len)) = rx.try_recv() {
                if id.is_none() || id.as_deref() == Some(self.id.as_str()) {
                    self.unmatched = Some(len);
                }
            }
        }
        self.unmatched
    }
}

#[cfg(not(feature = "client-stdio"))]
struct OversizeWatch;

#[cfg(not(feature = "client-stdio"))]
impl OversizeWatch {
    async fn matched(&mut self) -> usize {
        std::future::pending().await
    }

    fn unmatched(&mut self) -> Option<usize> {
        None
    }
}

#[cfg_attr(not(feature = "client-stdio"), allow(dead_code))]
fn result_too_large(what: &str, len: usize) -> Error {
    Error::tool(
        what,
        format!(
            "the result is too large: the server sent a {:.1} MiB message, over the {} MiB \
             limit of one stdio message, and it was discarded; ask the tool for less (a page, \
             a filter, a smaller file)",
            len as f64 / (1024.0 * 1024.0),
            MAX_MESSAGE_BYTES / (1024 * 1024)
        ),
    )
}

/// The largest message a stdio server may send (rmcp's line limit).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Jittered exponential delays from `min` up to `max`, without end.
fn backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The `_meta` of a tool call made for a run: `agentkit/runId`, `agentkit/idempotencyKey`
/// (run id plus the tool loop's step and tool-call id) and a W3C `traceparent` whose trace id
/// is derived from the run id.
#[must_use]
pub fn request_meta(ctx: &RunContext) -> RequestMetaObject {
    let mut meta = RequestMetaObject::new();
    let run = ctx.run_id();
    meta.insert("agentkit/runId".into(), run.into());
    let key = match ctx.tool_call_key() {
        Some(k) => format!("{run}/{k}"),
        None => format!("{run}/{}", uuid::Uuid::now_v7()),
    };
    meta.insert("agentkit/idempotencyKey".into(), key.into());
    meta.set_traceparent(traceparent(run));
    meta
}

fn traceparent(run_id: &str) -> String {
    // The trace id is the run's UUID when it is one (UUIDv7 by default), else a hash of it.
    let trace = match uuid::Uuid::parse_str(run_id) {
        Ok(u) => u.simple().to_string(),
        Err(_) => {
            let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
            for b in run_id.bytes() {
                h ^= u128::from(b);
                h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
            }
            format!("{h:032x}")
        }
    };
    let span = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", &span[..16])
}

/// Turn an rmcp error into an agentkit error naming the server and what was attempted.
pub(crate) fn service_error(server: &str, what: &str, e: ServiceError) -> Error {
    match e {
        ServiceError::Timeout { timeout } => Error::Timeout {
            what: format!("MCP server `{server}`: {what}"),
            after: timeout,
        },
        ServiceError::McpError(d) => Error::tool(
            format!("{server}: {what}"),
            format!(
                "MCP server `{server}` answered with error {}: {}",
                d.code.0, d.message
            ),
        ),
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => Error::Tool {
            tool: format!("{server}: {what}"),
            message: format!(
                "the connection to MCP server `{server}` was lost (did it crash?); it is restarted on the next call"
            ),
            source: Some(Box::new(e)),
        },
        other => Error::Tool {
            tool: format!("{server}: {what}"),
            message: format!("MCP server `{server}`: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

fn is_connection_lost(e: &Error) -> bool {
    matches!(e, Error::Tool { message, .. } if message.contains("was lost"))
}

struct Slot {
    config: ServerConfig,
    current: RwLock<Option<Arc<Connection>>>,
    connecting: AsyncMutex<()>,
    limiter: Option<Arc<Semaphore>>,
    /// The delays before the next connect attempts, while connecting fails.
    backoff: std::sync::Mutex<Option<backon::ExponentialBackoff>>,
    retry_at: RwLock<Option<Instant>>,
    lists_epoch: Arc<AtomicU64>,
    connects: AtomicU64,
}

impl Slot {
    fn new(config: ServerConfig) -> Self {
        Self {
            limiter: config.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            config,
            current: RwLock::new(None),
            connecting: AsyncMutex::new(()),
            backoff: std::sync::Mutex::new(None),
            retry_at: RwLock::new(None),
            lists_epoch: Arc::new(AtomicU64::new(0)),
            connects: AtomicU64::new(0),
        }
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let c = self.current.read().ok()?.clone()?;
        (!c.is_closed()).then_some(c)
    }

    /// Drop `conn` if it is still the current connection; close it in the background.
    fn invalidate(&self, conn: &Arc<Connection>) {
        let mut dropped = None;
        if let Ok(mut cur) = self.current.write()
            && cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn))
        {
            dropped = cur.take();
        }
        if let Some(c) = dropped {
            tracing::warn!(server = %self.config.name, "MCP connection lost; it will be restarted on the next call");
            self.lists_epoch.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move { c.close().await });
        }
    }
}

struct Inner {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    shared: Arc<ClientShared>,
    lifecycle: Lifecycle,
}

/// One long-lived connection per MCP server, started on first use and shared by every agent.
///
/// - Lazily connects (stdio child process or streamable HTTP) and multiplexes concurrent calls
///   over the one connection, up to the server's `max_concurrency`.
/// - A child's stderr goes to `tracing` (target `agentkit_mcp::stderr`).
/// - After a crash or a dropped HTTP session, the call in flight fails with an error naming the
///   server, and the next call reconnects (with exponential backoff after failed attempts).
/// - [`shutdown`](Self::shutdown) closes every connection and leaves no child process behind.
///
/// Cheap to clone; clones share connections.
///
/// ```no_run
/// use agentkit_mcp::{ConnectionManager, ServerConfig};
/// # async fn demo() -> agentkit_core::Result<()> {
/// let manager = ConnectionManager::new([
///     ServerConfig::stdio("fs", "npx", ["-y", "@modelcontextprotocol/server-filesystem", "."]),
/// ]);
/// let tools = manager.connection("fs").await?.list_tools().await?;
/// println!("{} tools", tools.len());
/// manager.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectionManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ConnectionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManager")
            .field("servers", &self.server_names())
            .finish_non_exhaustive()
    }
}

/// Builds a [`ConnectionManager`]: who answers the servers' sampling and elicitation
/// requests, the client info sent, and the lifecycle. Settings are fixed once built, so a
/// clone of a manager never changes under another owner.
///
/// ```no_run
/// use agentkit_mcp::{ConnectionManager, Lifecycle, ServerConfig};
/// let manager = ConnectionManager::builder([ServerConfig::http("issues", "http://127.0.0.1:9000/mcp")])
///     .with_client_info("my-app", "1.2.0")
///     .with_lifecycle(Lifecycle::Auto)
///     .build();
/// ```
#[must_use]
pub struct ConnectionManagerBuilder {
    servers: Vec<ServerConfig>,
    shared: ClientShared,
    lifecycle: Lifecycle,
}

impl std::fmt::Debug for ConnectionManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionManagerBuilder")
            .field(
                "servers",
                &self.servers.iter().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl ConnectionManagerBuilder {
    /// Answer servers' sampling requests with this provider (connections advertise the
    /// sampling capability).
    pub fn with_sampling(mut self, provider: Arc<dyn LlmProvider>) -> Self {
        self.shared.sampling = Some(provider);
        self
    }

    /// The model used for sampling (the provider's default when unset).
    pub fn with_sampling_model(mut self, model: impl Into<String>) -> Self {
        self.shared.sampling_model = Some(model.into());
        self
    }

    /// Answer elicitations with this handler when the calling run has none.
    pub fn with_human_input(mut self, handler: Arc<dyn HumanInputHandler>) -> Self {
        self.shared.human_input = Some(handler);
        self
    }

    /// The client name and version sent to servers.
    pub fn with_client_info(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.shared.client_name = name.into();
        self.shared.client_version = version.into();
        self
    }

    /// Which lifecycle connections use.
    pub fn with_lifecycle(mut self, lifecycle: Lifecycle) -> Self {
        self.lifecycle = lifecycle;
        self
    }

    /// Add a server.
    pub fn with_server(mut self, server: ServerConfig) -> Self {
        self.servers.push(server);
        self
    }

    /// The manager. Nothing is started until first use.
    pub fn build(self) -> ConnectionManager {
        let slots = self
            .servers
            .into_iter()
            .map(|s| (s.name.clone(), Arc::new(Slot::new(s))))
            .collect();
        ConnectionManager {
            inner: Arc::new(Inner {
                slots: RwLock::new(slots),
                shared: Arc::new(self.shared),
                lifecycle: self.lifecycle,
            }),
        }
    }
}

impl ConnectionManager {
    /// A manager for these servers with default settings (see [`ConnectionManager::builder`]).
    /// Nothing is started until first use.
    pub fn new(servers: impl IntoIterator<Item = ServerConfig>) -> Self {
        Self::builder(servers).build()
    }

    /// Build a manager for these servers with sampling, elicitation, client info or
    /// lifecycle settings.
    pub fn builder(servers: impl IntoIterator<Item = ServerConfig>) -> ConnectionManagerBuilder {
        ConnectionManagerBuilder {
            servers: servers.into_iter().collect(),
            shared: ClientShared {
                client_name: "agentkit".into(),
                client_version: env!("CARGO_PKG_VERSION").into(),
                ..ClientShared::default()
            },
            lifecycle: Lifecycle::default(),
        }
    }

    /// A manager for every server of a [`ServerSet`].
    pub fn from_set(set: &ServerSet) -> Self {
        Self::new(set.servers.values().cloned())
    }

    /// Add (or replace) a server. A replaced server's live connection is closed.
    pub async fn add_server(&self, server: ServerConfig) {
        let old = self
            .inner
            .slots
            .write()
            .ok()
            .and_then(|mut s| s.insert(server.name.clone(), Arc::new(Slot::new(server))));
        if let Some(old) = old {
            let conn = old.current.write().ok().and_then(|mut c| c.take());
            if let Some(c) = conn {
                c.close().await;
            }
        }
    }

    /// The configured server names.
    #[must_use]
    pub fn server_names(&self) -> Vec<String> {
        self.inner
            .slots
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A server's configuration.
    #[must_use]
    pub fn server_config(&self, server: &str) -> Option<ServerConfig> {
        self.slot(server).ok().map(|s| s.config.clone())
    }

    fn slot(&self, server: &str) -> Result<Arc<Slot>> {
        let slots = self
            .inner
            .slots
            .read()
            .map_err(|_| Error::tool(server, "connection table poisoned"))?;
        slots.get(server).cloned().ok_or_else(|| Error::Config {
            file: None,
            key: "mcp.servers".into(),
            message: format!(
                "unknown MCP server `{server}`; configured servers: {}",
                slots.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// A counter that changes whenever the server's tool, prompt or resource lists may have
    /// changed (a `list_changed` notification or a reconnect). Caches compare it.
    pub fn lists_epoch(&self, server: &str) -> Result<u64> {
        Ok(self.slot(server)?.lists_epoch.load(Ordering::SeqCst))
    }

    /// How many times a connection to `server` has been established.
    pub fn connect_count(&self, server: &str) -> Result<u64> {
        Ok(self.slot(server)?.connects.load(Ordering::SeqCst))
    }

    /// The live connection to `server`, connecting (or reconnecting) first if needed.
    pub async fn connection(&self, server: &str) -> Result<Arc<Connection>> {
        let slot = self.slot(server)?;
        self.connection_for(&slot).await
    }

    /// The live connection, if there is one, without connecting.
    #[must_use]
    pub fn existing_connection(&self, server: &str) -> Option<Arc<Connection>> {
        self.slot(server).ok().and_then(|s| s.live())
    }

    async fn connection_for(&self, slot: &Arc<Slot>) -> Result<Arc<Connection>> {
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(c) = slot.live() {
            return Ok(c);
        }
        let retry_at = slot.retry_at.read().ok().and_then(|r| *r);
        if let Some(at) = retry_at {
            tokio::time::sleep_until(at).await;
        }
        let shared = Arc::clone(&self.inner.shared);
        let lifecycle = self.inner.lifecycle;
        match connect(
            &slot.config,
            shared,
            Arc::clone(&slot.lists_epoch),
            lifecycle,
        )
        .await
        {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *slot.backoff.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if let Ok(mut r) = slot.retry_at.write() {
                    *r = None;
                }
                let previous = slot
                    .current
                    .write()
                    .ok()
                    .and_then(|mut c| c.replace(Arc::clone(&conn)));
                if let Some(p) = previous {
                    tokio::spawn(async move { p.close().await });
                }
                if slot.connects.fetch_add(1, Ordering::SeqCst) > 0 {
                    slot.lists_epoch.fetch_add(1, Ordering::SeqCst);
                }
                Ok(conn)
            }
            Err(e) => {
                let delay = slot
                    .backoff
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| backoff(BACKOFF_BASE, BACKOFF_MAX))
                    .next()
                    .unwrap_or(BACKOFF_MAX);
                if let Ok(mut r) = slot.retry_at.write() {
                    *r = Some(Instant::now() + delay);
                }
                tracing::warn!(server = %slot.config.name, error = %e, retry_in = ?delay, "MCP connect failed");
                Err(e)
            }
        }
    }

    /// Call a tool of `server` for a run (see [`Connection::call_tool`]), within the server's
    /// concurrency limit and request timeout. When the connection is lost during the call, the
    /// call fails with an error naming the server and the next call reconnects.
    pub async fn call_tool(
        &self,
        server: &str,
        tool: &str,
        arguments: JsonObject,
        ctx: &RunContext,
    ) -> Result<CallToolResult> {
        let slot = self.slot(server)?;
        let _permit = match &slot.limiter {
            Some(l) => Some(
                Arc::clone(l)
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::tool(server, "the server's concurrency limiter closed"))?,
            ),
            None => None,
        };
        let conn = self.connection_for(&slot).await?;
        let out = conn
            .call_tool(tool, arguments, ctx, slot.config.request_timeout)
            .await;
        if let Err(e) = &out
            && (is_connection_lost(e) || conn.is_closed())
        {
            slot.invalidate(&conn);
        }
        out
    }

    /// Check that `server` answers (connecting if needed); returns the round-trip time.
    pub async fn health_check(&self, server: &str) -> Result<Duration> {
        let slot = self.slot(server)?;
        let conn = self.connection_for(&slot).await?;
        let started = std::time::Instant::now();
        let res = conn
            .peer
            .list_tools(None)
            .await
            .map_err(|e| service_error(server, "health check (tools/list)", e));
        match res {
            Ok(_) => Ok(started.elapsed()),
            Err(e) => {
                if is_connection_lost(&e) || conn.is_closed() {
                    slot.invalidate(&conn);
                }
                Err(e)
            }
        }
    }

    /// Close every connection and wait for stdio children to exit.
    pub async fn shutdown(&self) {
        let slots: Vec<Arc<Slot>> = self
            .inner
            .slots
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        let conns: Vec<Arc<Connection>> = slots
            .iter()
            .filter_map(|s| s.current.write().ok().and_then(|mut c| c.take()))
            .collect();
        futures::future::join_all(conns.iter().map(|c| c.close())).await;
    }
}

/// Connect once to a server, without a manager (no reconnect). Close it with
/// [`Connection::close`] when done.
pub async fn connect_once(server: ServerConfig) -> Result<Connection> {
    let shared = Arc::new(ClientShared {
        client_name: "agentkit".into(),
        client_version: env!("CARGO_PKG_VERSION").into(),
        ..ClientShared::default()
    });
    connect(&server, shared, Arc::default(), Lifecycle::Initialize).await
}

async fn connect(
    cfg: &ServerConfig,
    shared: Arc<ClientShared>,
    lists_epoch: Arc<AtomicU64>,
    lifecycle: Lifecycle,
) -> Result<Connection> {
    let client = AgentkitClient {
        server: cfg.name.clone(),
        roots: cfg.roots.clone(),
        shared,
        inflight: Arc::new(Inflight::default()),
        lists_epoch,
        answering: Arc::default(),
    };
    let timeout = cfg.connect_timeout;
    let fut = async {
        match &cfg.transport {
            ServerTransport::Stdio {
                command,
                args,
                env,
                cwd,
            } => connect_stdio(cfg, command, args, env, cwd.as_deref(), client, lifecycle).await,
            ServerTransport::StreamableHttp {
                url,
                headers,
                bearer_token,
            } => {
                connect_http(
                    cfg,
                    url,
                    headers,
                    bearer_token.as_deref(),
                    client,
                    lifecycle,
                )
                .await
            }
        }
    };
    let conn = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("connecting to MCP server `{}`", cfg.name),
            after: timeout,
        })??;
    conn.peer
        .set_response_cache_config(ClientCacheConfig::disabled())
        .await;
    if conn
        .protocol_version()
        .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
    {
        start_listener(&conn).await;
    }
    tracing::info!(server = %cfg.name, protocol = ?conn.protocol_version(), "MCP server connected");
    Ok(conn)
}

/// On 2026-07-28 connections list_changed notifications only flow on a `subscriptions/listen`
/// stream; turn them into epoch bumps like the legacy notifications. Only the lists whose
/// `listChanged` the server advertises are asked for. When the stream ends or breaks while the
/// connection lives on (a stateless HTTP server restarted, a proxy cut the stream), it is
/// opened again with backoff, and the epoch is bumped then, since changes may have been missed
/// in between. A server that refuses the subscription (a JSON-RPC error) is not asked again.
///
/// The first subscription is awaited (up to `LISTEN_FIRST_WAIT`) before the connection is
/// handed out, so that no change made after a first `tools/list` can be missed.
async fn start_listener(conn: &Connection) {
    let caps = conn.peer_info().map(|i| i.capabilities.clone());
    let mut filter = SubscriptionFilter::builder();
    let mut any = false;
    if let Some(caps) = &caps {
        if caps.tools.as_ref().and_then(|t| t.list_changed) == Some(true) {
            filter = filter.tools_list_changed();
            any = true;
        }
        if caps.prompts.as_ref().and_then(|p| p.list_changed) == Some(true) {
            filter = filter.prompts_list_changed();
            any = true;
        }
        if caps.resources.as_ref().and_then(|r| r.list_changed) == Some(true) {
            filter = filter.resources_list_changed();
            any = true;
        }
    }
    if !any {
        return;
    }
    let filter = filter.build();
    let peer = conn.peer.clone();
    let epoch = Arc::clone(&conn.client.lists_epoch);
    let stop = conn.stop.clone();
    let server = conn.server.clone();
    let first = match tokio::time::timeout(LISTEN_FIRST_WAIT, peer.listen(filter.clone())).await {
        Ok(Err(ServiceError::McpError(e))) => {
            tracing::info!(server = %server, error = %e.message, "MCP server refused subscriptions/listen; list changes are not followed");
            return;
        }
        Ok(r) => Some(r),
        Err(_) => None,
    };
    tokio::spawn(stop.clone().run_until_cancelled_owned(async move {
        let mut delays = backoff(LISTEN_RETRY_BASE, LISTEN_RETRY_MAX);
        let mut first = first;
        while !peer.is_transport_closed() {
            let attempt = match first.take() {
                Some(r) => r,
                None => {
                    let r = peer.listen(filter.clone()).await;
                    if r.is_ok() {
                        // Changes may have been missed while there was no stream.
                        epoch.fetch_add(1, Ordering::SeqCst);
                    }
                    r
                }
            };
            match attempt {
                Ok(mut sub) => {
                    let opened = Instant::now();
                    loop {
                        match sub.next().await {
                            Ok(Some(_)) => {
                                epoch.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(server = %server, error = %e, "MCP subscriptions/listen stream broke");
                                break;
                            }
                        }
                    }
                    // A stream that lived a while was healthy: retry soon. One that ends at
                    // once keeps backing off.
                    if opened.elapsed() >= LISTEN_HEALTHY {
                        delays = backoff(LISTEN_RETRY_BASE, LISTEN_RETRY_MAX);
                    }
                }
                Err(ServiceError::McpError(e)) => {
                    tracing::info!(server = %server, error = %e.message, "MCP server refused subscriptions/listen; list changes are not followed");
                    return;
                }
                Err(e) => {
                    tracing::debug!(server = %server, error = %e, "MCP subscriptions/listen failed");
                }
            }
            tokio::time::sleep(delays.next().unwrap_or(LISTEN_RETRY_MAX)).await;
        }
    }));
}

#[cfg_attr(
    not(any(feature = "client-stdio", feature = "client-http")),
    allow(dead_code)
)]
fn client_mode(lifecycle: Lifecycle) -> ClientLifecycleMode {
    match lifecycle {
        Lifecycle::Initialize => ClientLifecycleMode::Initialize,
        Lifecycle::Auto => ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
    }
}

#[cfg_attr(
    not(any(feature = "client-stdio", feature = "client-http")),
    allow(dead_code)
)]
fn init_error(server: &str, e: impl std::fmt::Display) -> Error {
    Error::tool(
        server,
        format!("could not initialise MCP server `{server}`: {e}"),
    )
}

#[cfg(feature = "client-stdio")]
async fn connect_stdio(
    cfg: &ServerConfig,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&std::path::Path>,
    client: AgentkitClient,
    lifecycle: Lifecycle,
) -> Result<Connection> {
    let spawned = crate::stdio::spawn(&cfg.name, command, args, env, cwd)?;
    let mut child = spawned.child;
    let pid = child.id();
    let handler = client.clone();
    let running = match handler
        .serve_with_lifecycle(spawned.transport, client_mode(lifecycle))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let report = child.failure_report().await;
            child.shutdown(cfg.shutdown_grace).await;
            return Err(init_error(&cfg.name, format!("{e}{report}")));
        }
    };
    Ok(Connection {
        server: cfg.name.clone(),
        peer: running.peer().clone(),
        client,
        pid,
        running: AsyncMutex::new(Some(running)),
        stop: CancellationToken::new(),
        child: AsyncMutex::new(Some(child)),
        oversize: Some(spawned.oversize),
        shutdown_grace: cfg.shutdown_grace,
    })
}

#[cfg(not(feature = "client-stdio"))]
async fn connect_stdio(
    cfg: &ServerConfig,
    _command: &str,
    _args: &[String],
    _env: &BTreeMap<String, String>,
    _cwd: Option<&std::path::Path>,
    _client: AgentkitClient,
    _lifecycle: Lifecycle,
) -> Result<Connection> {
    Err(Error::tool(
        &cfg.name,
        "stdio MCP servers need agentkit-mcp's `client-stdio` feature",
    ))
}

#[cfg(feature = "client-http")]
async fn connect_http(
    cfg: &ServerConfig,
    url: &str,
    headers: &BTreeMap<String, String>,
    bearer: Option<&str>,
    client: AgentkitClient,
    lifecycle: Lifecycle,
) -> Result<Connection> {
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let mut extra = std::collections::HashMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::try_from(k.as_str()).map_err(|e| Error::Config {
            file: None,
            key: format!("mcp.servers.{}.headers", cfg.name),
            message: format!("invalid header name `{k}`: {e}"),
        })?;
        let value = http::HeaderValue::try_from(v.as_str()).map_err(|e| Error::Config {
            file: None,
            key: format!("mcp.servers.{}.headers.{k}", cfg.name),
            message: format!("invalid header value: {e}"),
        })?;
        extra.insert(name, value);
    }
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
        .custom_headers(extra)
        .reinit_on_expired_session(true);
    if let Some(token) = bearer {
        config = config.auth_header(token.to_owned());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let handler = client.clone();
    let running = handler
        .serve_with_lifecycle(transport, client_mode(lifecycle))
        .await
        .map_err(|e| {
            if e.is_authorization_required() {
                Error::tool(
                    &cfg.name,
                    format!(
                        "MCP server `{}` at {url} requires authorization ({}); set `bearer_token` or an `Authorization` header",
                        cfg.name,
                        e.auth_challenge().unwrap_or("no challenge")
                    ),
                )
            } else {
                init_error(&cfg.name, format!("{e} (url {url})"))
            }
        })?;
    Ok(Connection {
        server: cfg.name.clone(),
        peer: running.peer().clone(),
        client,
        pid: None,
        running: AsyncMutex::new(Some(running)),
        stop: CancellationToken::new(),
        #[cfg(feature = "client-stdio")]
        child: AsyncMutex::new(None),
        #[cfg(feature = "client-stdio")]
        oversize: None,
        shutdown_grace: cfg.shutdown_grace,
    })
}

#[cfg(not(feature = "client-http"))]
async fn connect_http(
    cfg: &ServerConfig,
    _url: &str,
    _headers: &BTreeMap<String, String>,
    _bearer: Option<&str>,
    _client: AgentkitClient,
    _lifecycle: Lifecycle,
) -> Result<Connection> {
    Err(Error::tool(
        &cfg.name,
        "streamable HTTP MCP servers need agentkit-mcp's `client-http` feature",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn meta_carries_run_id_idempotency_key_and_traceparent() {
        let ctx = RunContext::new()
            .with_run_id("0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70")
            .with_tool_call_key("agent/tool/3/call_1");
        let meta = request_meta(&ctx);
        assert_eq!(
            meta["agentkit/runId"],
            "0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70"
        );
        assert_eq!(
            meta["agentkit/idempotencyKey"],
            "0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70/agent/tool/3/call_1"
        );
        let tp = meta.get_traceparent().unwrap();
        assert!(
            tp.starts_with("00-0190f0d28d3b7c4e9a1f2b3c4d5e6f70-"),
            "{tp}"
        );
        assert_eq!(tp.len(), 55);
    }
}
