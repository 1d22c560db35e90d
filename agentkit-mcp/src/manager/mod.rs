//! [`ConnectionManager`]: one long-lived, lazily started, shared connection per MCP server.
//!
//! `connection` is one live connection, `transport` connects it, `listen` follows list
//! changes on 2026-07-28, `meta` is the `_meta` of a call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentkit_core::{Error, HumanInputHandler, LlmProvider, Result, RunContext};
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
/// How long an answer rmcp already has may take to come through after its service loop ended
/// (it is there at once; this only bounds the wait for a request stuck in rmcp's queue).
const GONE_GRACE: Duration = Duration::from_secs(1);
const LISTEN_RETRY_BASE: Duration = Duration::from_millis(250);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(30);
const LISTEN_HEALTHY: Duration = Duration::from_secs(10);
const LISTEN_FIRST_WAIT: Duration = Duration::from_secs(5);

mod connection;
mod listen;
mod meta;
mod transport;

pub use connection::Connection;
pub(crate) use connection::service_error;
use connection::{CallFailure, backoff, is_connection_lost};
use listen::start_listener;
pub use meta::request_meta;
use transport::Wire;
use transport::connect;
pub use transport::connect_once;

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

    /// Whether `e`, a failure of a request on `conn`, means the connection is lost (or it
    /// closed meanwhile); if so, drop it (see [`invalidate`](Self::invalidate)).
    fn invalidate_if_lost(&self, conn: &Arc<Connection>, e: &Error) -> bool {
        let lost = is_connection_lost(e) || conn.is_closed();
        if lost {
            self.invalidate(conn);
        }
        lost
    }
}

struct Inner {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    shared: Arc<ClientShared>,
    lifecycle: Lifecycle,
    resolver: Option<Arc<dyn ConfigResolver>>,
}

/// Completes a server's configuration just before each connect: fills in credentials kept
/// elsewhere (a vault), so the manager's stored configuration never holds them and a rotated
/// credential is used from the next connection on.
#[async_trait::async_trait]
pub trait ConfigResolver: Send + Sync {
    /// The configuration to connect with. An error fails the connect (and is retried with
    /// backoff, like a refused connection).
    async fn resolve(&self, config: &ServerConfig) -> Result<ServerConfig>;
}

/// One long-lived connection per MCP server, started on first use and shared by every agent.
///
/// - Lazily connects (stdio child process or streamable HTTP) and multiplexes concurrent calls
///   over the one connection, up to the server's `max_concurrency`.
/// - A child's stderr goes to `tracing` (target `agentkit_mcp::stderr`).
/// - After a crash or a dropped HTTP session, the next call reconnects (with exponential
///   backoff after failed attempts). A call that was sent to the lost server fails with an
///   error naming it (its tool may have run, so it is not sent again); a call that provably
///   never reached it (it was still queued, or writing it failed: a broken pipe to an exited
///   child, an in-process server that stopped before reading it) is sent again, once, on the
///   new connection, without an error. A read-only request (a list, a resource read, a
///   prompt, a health check: [`read_only`](Self::read_only)) is made again, once, on a new
///   connection whenever its connection turns out lost.
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
/// let tools = manager.read_only("fs", |c| async move { c.list_tools().await }).await?;
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
    resolver: Option<Arc<dyn ConfigResolver>>,
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

    /// Keep the OAuth credentials of servers with `auth: {oauth: ...}` in this store
    /// (default: a [`FileTokenStore`](crate::oauth::FileTokenStore) at its default directory).
    #[cfg(feature = "oauth")]
    pub fn with_token_store(mut self, store: Arc<dyn crate::oauth::TokenStore>) -> Self {
        self.shared.oauth.store = store;
        self
    }

    /// Send users to the authorization server with this handler (default:
    /// [`LogAuthorizationUrl`](crate::oauth::LogAuthorizationUrl) and the local redirect
    /// listener).
    #[cfg(feature = "oauth")]
    pub fn with_authorization_handler(
        mut self,
        handler: Arc<dyn crate::oauth::AuthorizationHandler>,
    ) -> Self {
        self.shared.oauth.handler = handler;
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

    /// Complete each server's configuration with `resolver` before every connect.
    pub fn with_config_resolver(mut self, resolver: Arc<dyn ConfigResolver>) -> Self {
        self.resolver = Some(resolver);
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
                resolver: self.resolver,
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
            resolver: None,
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
                c.retired.store(true, Ordering::SeqCst);
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
        let attempt = async {
            let resolved;
            let config = match &self.inner.resolver {
                Some(r) => {
                    resolved = r.resolve(&slot.config).await?;
                    &resolved
                }
                None => &slot.config,
            };
            connect(config, shared, Arc::clone(&slot.lists_epoch), lifecycle).await
        };
        // Boxed: connecting (a child process, an HTTP handshake, OAuth) is a large future
        // that runs rarely; in place it would make every call's future that large.
        match Box::pin(attempt).await {
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
    /// concurrency limit and request timeout.
    ///
    /// When the connection turns out to be lost (the server exited or stopped, its session
    /// dropped) before the request reached it, the call is sent again, once, on a new
    /// connection: the caller sees no error. A call that may have reached the server (its
    /// tool may have run) is never sent again: it fails with an error naming the server, and
    /// the next call reconnects.
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
        let timeout = slot.config.request_timeout;
        let conn = self.connection_for(&slot).await?;
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let (error, params) = match conn.call_tool_params(params, ctx, timeout).await {
            Ok(r) => return Ok(r),
            Err(CallFailure::Failed(e)) => {
                slot.invalidate_if_lost(&conn, &e);
                return Err(e);
            }
            Err(CallFailure::NotSent { error, params }) => (error, params),
        };
        slot.invalidate(&conn);
        if !self.may_resend(server, &slot, &conn) {
            return Err(error);
        }
        tracing::info!(
            server,
            tool,
            "MCP connection lost before the call reached it; sending the call on a new connection"
        );
        let conn = self.connection_for(&slot).await?;
        let out = conn
            .call_tool_params(params, ctx, timeout)
            .await
            .map_err(CallFailure::into_error);
        if let Err(e) = &out {
            slot.invalidate_if_lost(&conn, e);
        }
        out
    }

    /// Whether a request that failed on `conn`, a lost connection of `slot`, may be sent again
    /// on a new one: not when the connection was closed on purpose (shutdown) or the server
    /// was replaced or removed meanwhile (the call is not moved to another server).
    fn may_resend(&self, server: &str, slot: &Arc<Slot>, conn: &Connection) -> bool {
        !conn.retired.load(Ordering::SeqCst)
            && self.slot(server).is_ok_and(|s| Arc::ptr_eq(&s, slot))
    }

    /// Make a read-only request to `server` (connecting if needed): `request` gets the live
    /// connection and makes the request on it, e.g.
    /// `manager.read_only("fs", |c| async move { c.list_tools().await })`.
    ///
    /// When the connection turns out to be lost (the server exited or stopped, its session
    /// dropped), `request` is called again, once, with a new connection, even if the first
    /// request may have reached the server: the caller sees no error for a server that is
    /// back. So use it only for requests that change nothing on the server (`tools/list`,
    /// `prompts/list`, `resources/list`, `resources/read`, `prompts/get`); a tool call goes
    /// through [`call_tool`](Self::call_tool), which sends a call again only when it never
    /// reached the server. Not sent again: after [`shutdown`](Self::shutdown), or when the
    /// server was replaced or removed meanwhile. Any other error is returned as is.
    pub async fn read_only<T, F, Fut>(&self, server: &str, mut request: F) -> Result<T>
    where
        F: FnMut(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let slot = self.slot(server)?;
        let mut again = true;
        loop {
            let conn = self.connection_for(&slot).await?;
            match request(Arc::clone(&conn)).await {
                Ok(out) => return Ok(out),
                Err(e) => {
                    if !slot.invalidate_if_lost(&conn, &e)
                        || !std::mem::take(&mut again)
                        || !self.may_resend(server, &slot, &conn)
                    {
                        return Err(e);
                    }
                    tracing::info!(
                        server,
                        error = %e,
                        "MCP connection lost during a read-only request; making it again on a new connection"
                    );
                }
            }
        }
    }

    /// Check that `server` answers (connecting if needed); returns the round-trip time of a
    /// `tools/list` request.
    ///
    /// `tools/list` only reads, so when the connection turns out to be lost the check is made
    /// again, once, on a new connection, even if the request may have reached the server: the
    /// answer is about the server, not about a connection already gone (see
    /// [`read_only`](Self::read_only)).
    pub async fn health_check(&self, server: &str) -> Result<Duration> {
        self.read_only(server, |conn| async move {
            let started = std::time::Instant::now();
            conn.or_gone(conn.peer.list_tools(None))
                .await
                .map_err(|e| service_error(&conn.server, "health check (tools/list)", e))?;
            Ok(started.elapsed())
        })
        .await
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
        for c in &conns {
            c.retired.store(true, Ordering::SeqCst);
        }
        futures::future::join_all(conns.iter().map(|c| c.close())).await;
    }
}
