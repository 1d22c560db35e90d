//! Connecting: a stdio child process or streamable HTTP, and the lifecycle handshake.

use super::*;

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

pub(super) async fn connect(
    cfg: &ServerConfig,
    shared: Arc<ClientShared>,
    lists_epoch: Arc<AtomicU64>,
    lifecycle: Lifecycle,
) -> Result<Connection> {
    // rmcp's connection tasks live in the span current when they start. A root span of the
    // connection's own keeps them out of whichever run's span happened to connect first
    // (which would otherwise stay open, and unexported, for the connection's lifetime).
    let span = tracing::info_span!(
        parent: None,
        "mcp_connection",
        otel.name = %format!("mcp connection {}", cfg.name),
        agentkit.mcp.server = %cfg.name,
    );
    tracing::Instrument::instrument(connect_in_span(cfg, shared, lists_epoch, lifecycle), span)
        .await
}

async fn connect_in_span(
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
                inherit_env,
                limits,
                cwd,
            } => {
                let spec = crate::stdio_env::SpawnSpec {
                    command,
                    args,
                    env,
                    inherit_env,
                    limits: *limits,
                    cwd: cwd.as_deref(),
                };
                connect_stdio(cfg, spec, client, lifecycle).await
            }
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
            ServerTransport::Sse {
                url,
                headers,
                bearer_token,
            } => {
                connect_sse(
                    cfg,
                    url,
                    headers,
                    bearer_token.as_deref(),
                    client,
                    lifecycle,
                )
                .await
            }
            ServerTransport::InProcess(server) => {
                connect_in_process(cfg, server, client, lifecycle).await
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

pub(super) fn client_mode(lifecycle: Lifecycle) -> ClientLifecycleMode {
    match lifecycle {
        Lifecycle::Initialize => ClientLifecycleMode::Initialize,
        Lifecycle::Auto => ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
    }
}

pub(super) fn init_error(server: &str, e: impl std::fmt::Display) -> Error {
    Error::tool(
        server,
        format!("could not initialise MCP server `{server}`: {e}"),
    )
}

/// Connect to a server in this process: start one of its sessions on a fresh pair of
/// channels and run the handshake over them.
pub(super) async fn connect_in_process(
    cfg: &ServerConfig,
    server: &crate::inprocess::InProcessServer,
    client: AgentkitClient,
    lifecycle: Lifecycle,
) -> Result<Connection> {
    let (client_end, server_end) = crate::inprocess::pair();
    let wire = Wire::new(Some(server_end.1.reads()));
    server.start(server_end).map_err(|why| {
        Error::tool(
            &cfg.name,
            format!(
                "could not start in-process MCP server `{}`: {why}",
                cfg.name
            ),
        )
    })?;
    let transport = Watched::new(
        rmcp::transport::sink_stream::SinkStreamTransport::new(client_end.0, client_end.1),
        &wire,
        in_process_undelivered,
    );
    let handler = client.clone();
    let running = handler
        .serve_with_lifecycle(transport, client_mode(lifecycle))
        .await
        .map_err(|e| init_error(&cfg.name, format!("{e} (in-process server)")))?;
    Ok(Connection {
        server: cfg.name.clone(),
        peer: running.peer().clone(),
        client,
        pid: None,
        network: "inproc",
        wire,
        retired: AtomicBool::new(false),
        running: AsyncMutex::new(Some(running)),
        stop: CancellationToken::new(),
        #[cfg(feature = "client-stdio")]
        child: AsyncMutex::new(None),
        #[cfg(feature = "client-stdio")]
        oversize: None,
        shutdown_grace: cfg.shutdown_grace,
    })
}

#[cfg(feature = "client-stdio")]
pub(super) async fn connect_stdio(
    cfg: &ServerConfig,
    spec: crate::stdio_env::SpawnSpec<'_>,
    client: AgentkitClient,
    lifecycle: Lifecycle,
) -> Result<Connection> {
    let spawned = crate::stdio::spawn(&cfg.name, &spec)?;
    let mut child = spawned.child;
    let pid = child.id();
    let wire = Wire::new(None);
    let transport = Watched::new(spawned.transport, &wire, stdio_undelivered);
    let handler = client.clone();
    let running = match handler
        .serve_with_lifecycle(transport, client_mode(lifecycle))
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
        network: "pipe",
        wire,
        retired: AtomicBool::new(false),
        running: AsyncMutex::new(Some(running)),
        stop: CancellationToken::new(),
        child: AsyncMutex::new(Some(child)),
        oversize: Some(spawned.oversize),
        shutdown_grace: cfg.shutdown_grace,
    })
}

#[cfg(not(feature = "client-stdio"))]
pub(super) async fn connect_stdio(
    cfg: &ServerConfig,
    _spec: crate::stdio_env::SpawnSpec<'_>,
    _client: AgentkitClient,
    _lifecycle: Lifecycle,
) -> Result<Connection> {
    Err(Error::tool(
        &cfg.name,
        "stdio MCP servers need agentkit-mcp's `client-stdio` feature",
    ))
}

#[cfg(feature = "client-http")]
pub(super) async fn connect_http(
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
    let unauthorized = |e: &rmcp::service::ClientInitializeError| {
        Error::tool(
            &cfg.name,
            format!(
                "MCP server `{}` at {url} requires authorization ({}); set `bearer_token`, an `Authorization` header, or `auth: {{oauth: {{}}}}`",
                cfg.name,
                e.auth_challenge().unwrap_or("no challenge")
            ),
        )
    };
    let failed = |e: rmcp::service::ClientInitializeError| {
        if e.is_authorization_required() {
            unauthorized(&e)
        } else {
            init_error(&cfg.name, format!("{e} (url {url})"))
        }
    };
    #[cfg(feature = "oauth")]
    if let Some(settings) = &cfg.oauth {
        let options = client.shared.oauth.clone();
        let http = crate::oauth::OAuthHttpClient::new(&cfg.name, url, settings, &options).await?;
        let wire = Wire::new(None);
        let running = client
            .clone()
            .serve_with_lifecycle(
                Watched::new(
                    StreamableHttpClientTransport::with_client(http, config),
                    &wire,
                    http_undelivered,
                ),
                client_mode(lifecycle),
            )
            .await
            .map_err(|e| {
                if e.is_authorization_required() {
                    Error::tool(
                        &cfg.name,
                        format!(
                            "MCP server `{}` at {url} still refuses the token it just authorized (challenge: {}); check the scopes and the server's audience",
                            cfg.name,
                            e.auth_challenge().unwrap_or("none")
                        ),
                    )
                } else {
                    failed(e)
                }
            })?;
        return Ok(http_connection(cfg, running, client, wire));
    }
    #[cfg(not(feature = "oauth"))]
    if cfg.oauth.is_some() {
        return Err(Error::tool(
            &cfg.name,
            format!(
                "MCP server `{}` is configured with `auth: {{oauth: ...}}`, which needs agentkit-mcp's `oauth` feature",
                cfg.name
            ),
        ));
    }
    if let Some(token) = bearer {
        config = config.auth_header(token.to_owned());
    }
    // rmcp's default client: a new TCP connection per POST. Keeping idle connections was
    // measured (benches/mcp_gateway.rs) to stall each call ~40 ms against an upstream that
    // does not set TCP_NODELAY (a plain `axum::serve`): its SSE answer goes out in several
    // small writes, Nagle holds back the second until the first is acknowledged, and our side
    // delays that ACK once the connection has left quick-ACK mode. A fresh connection is
    // still in quick-ACK mode, so it does not stall.
    let wire = Wire::new(None);
    let transport = Watched::new(
        StreamableHttpClientTransport::from_config(config),
        &wire,
        http_undelivered,
    );
    let handler = client.clone();
    let running = handler
        .serve_with_lifecycle(transport, client_mode(lifecycle))
        .await
        .map_err(failed)?;
    Ok(http_connection(cfg, running, client, wire))
}

#[cfg(any(feature = "client-http", feature = "client-sse"))]
fn http_connection(
    cfg: &ServerConfig,
    running: RunningService<RoleClient, AgentkitClient>,
    client: AgentkitClient,
    wire: Arc<Wire>,
) -> Connection {
    Connection {
        server: cfg.name.clone(),
        peer: running.peer().clone(),
        client,
        pid: None,
        network: "tcp",
        wire,
        retired: AtomicBool::new(false),
        running: AsyncMutex::new(Some(running)),
        stop: CancellationToken::new(),
        #[cfg(feature = "client-stdio")]
        child: AsyncMutex::new(None),
        #[cfg(feature = "client-stdio")]
        oversize: None,
        shutdown_grace: cfg.shutdown_grace,
    }
}

#[cfg(not(feature = "client-http"))]
pub(super) async fn connect_http(
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

#[cfg(feature = "client-sse")]
pub(super) async fn connect_sse(
    cfg: &ServerConfig,
    url: &str,
    headers: &BTreeMap<String, String>,
    bearer: Option<&str>,
    client: AgentkitClient,
    lifecycle: Lifecycle,
) -> Result<Connection> {
    use crate::sse::{SseClientConfig, SseClientTransport};

    let mut config = SseClientConfig::new(url)
        .with_endpoint_timeout(cfg.connect_timeout)
        .with_post_timeout(
            cfg.request_timeout
                .unwrap_or(crate::sse::DEFAULT_POST_TIMEOUT),
        );
    config.headers = headers.clone();
    config.bearer_token = bearer.map(str::to_owned);
    let transport = SseClientTransport::connect(config).await.map_err(|e| {
        if e.is_authorization_required() {
            Error::tool(
                &cfg.name,
                format!(
                    "MCP server `{}` requires authorization ({e}); set `bearer_token` or an `Authorization` header",
                    cfg.name
                ),
            )
        } else {
            Error::tool(&cfg.name, format!("could not connect to MCP server `{}`: {e}", cfg.name))
        }
    })?;
    // 2024-11-05 servers know no `server/discover`: the legacy handshake is the only one.
    let _ = lifecycle;
    let wire = Wire::new(None);
    let transport = Watched::new(transport, &wire, http_undelivered);
    let handler = client.clone();
    let running = handler
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .map_err(|e| init_error(&cfg.name, format!("{e} (SSE url {url})")))?;
    Ok(http_connection(cfg, running, client, wire))
}

#[cfg(not(feature = "client-sse"))]
pub(super) async fn connect_sse(
    cfg: &ServerConfig,
    _url: &str,
    _headers: &BTreeMap<String, String>,
    _bearer: Option<&str>,
    _client: AgentkitClient,
    _lifecycle: Lifecycle,
) -> Result<Connection> {
    Err(Error::tool(
        &cfg.name,
        "HTTP+SSE MCP servers need agentkit-mcp's `client-sse` feature",
    ))
}

/// How long a connection whose server side ended waits, before closing its transport, for
/// the requests it was sending to finish failing (so each one's fate is known).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one connection's transport did with the requests it was handed: tells a request that
/// provably never reached the server (safe to send again on a new connection) from one that
/// may have (its tool may have run, and tools are not idempotent).
///
/// Request ids are rmcp's: numbers counting up from 0 per connection. A string id (or a
/// number that wrapped after 2^32 requests) only ever counts as "may have reached".
pub(super) struct Wire {
    /// The highest numeric request id handed to the transport (-1: none). Only rmcp's service
    /// loop hands requests over; once that loop has ended, a request with a higher id was
    /// never handed over.
    handed: AtomicI64,
    /// Requests whose send failed in a way that proves nothing of them reached the server.
    undelivered: std::sync::Mutex<Vec<i64>>,
    /// Requests being sent (handed over, the transport's send not finished).
    sending: AtomicUsize,
    /// Wakes [`settle`](Self::settle) when `sending` drops to zero.
    sent: tokio::sync::Notify,
    /// The server's side ended: the transport's stream closed (the process exited, the
    /// in-process server stopped, the HTTP session ended).
    ended: AtomicBool,
    /// Cancelled when the transport is dropped: rmcp's service loop ended. A request rmcp
    /// queued just as its loop ended can stay in its queue unanswered; this ends the wait.
    pub(super) gone: CancellationToken,
    /// For an in-process server: which requests its side read.
    inbox: Option<Arc<crate::inprocess::InboxReads>>,
}

impl Wire {
    pub(super) fn new(inbox: Option<Arc<crate::inprocess::InboxReads>>) -> Arc<Self> {
        Arc::new(Self {
            handed: AtomicI64::new(-1),
            undelivered: std::sync::Mutex::default(),
            sending: AtomicUsize::new(0),
            sent: tokio::sync::Notify::new(),
            ended: AtomicBool::new(false),
            gone: CancellationToken::new(),
            inbox,
        })
    }

    /// Whether the server's side of the transport ended.
    pub(super) fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Whether the request `id`, which failed with `TransportClosed` or `TransportSend`,
    /// provably never reached the server. Sound only once rmcp answered the request (that
    /// error), which it does after its service loop handed the request to the transport and
    /// the send failed, or after the loop ended (a request never handed over is dropped then).
    pub(super) fn never_reached(&self, id: &rmcp::model::RequestId) -> bool {
        let rmcp::model::NumberOrString::Number(id) = *id else {
            return false;
        };
        if id > self.handed.load(Ordering::SeqCst) {
            return true;
        }
        if self.inbox.as_ref().is_some_and(|i| i.never_read(id)) {
            return true;
        }
        let mut undelivered = self
            .undelivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match undelivered.iter().position(|u| *u == id) {
            Some(at) => {
                undelivered.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Wait (up to `within`) until no request is being sent.
    async fn settle(&self, within: Duration) {
        let settled = async {
            loop {
                let notified = self.sent.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.sending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(within, settled).await;
    }
}

/// One request being sent; counts in [`Wire::sending`] until dropped.
struct Sending(Arc<Wire>);

impl Drop for Sending {
    fn drop(&mut self) {
        if self.0.sending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.sent.notify_waiters();
        }
    }
}

/// A transport that records in a [`Wire`] what happened to the requests it sends.
pub(super) struct Watched<T: rmcp::transport::Transport<RoleClient>> {
    inner: T,
    wire: Arc<Wire>,
    /// Whether a send error proves that nothing of the message reached the server.
    undelivered: fn(&T::Error) -> bool,
}

impl<T: rmcp::transport::Transport<RoleClient>> Watched<T> {
    pub(super) fn new(inner: T, wire: &Arc<Wire>, undelivered: fn(&T::Error) -> bool) -> Self {
        Self {
            inner,
            wire: Arc::clone(wire),
            undelivered,
        }
    }
}

impl<T: rmcp::transport::Transport<RoleClient>> Drop for Watched<T> {
    fn drop(&mut self) {
        self.wire.gone.cancel();
    }
}

impl<T: rmcp::transport::Transport<RoleClient>> rmcp::transport::Transport<RoleClient>
    for Watched<T>
{
    type Error = T::Error;

    fn name() -> std::borrow::Cow<'static, str> {
        T::name()
    }

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = std::result::Result<(), Self::Error>> + Send + 'static {
        let request = match &item {
            rmcp::model::JsonRpcMessage::Request(r) => match r.id {
                rmcp::model::NumberOrString::Number(id) => Some(id),
                rmcp::model::NumberOrString::String(_) => None,
            },
            _ => None,
        };
        let sending = request.map(|id| {
            self.wire.handed.fetch_max(id, Ordering::SeqCst);
            self.wire.sending.fetch_add(1, Ordering::SeqCst);
            (id, Sending(Arc::clone(&self.wire)))
        });
        let undelivered = self.undelivered;
        let send = self.inner.send(item);
        async move {
            let out = send.await;
            if let (Err(e), Some((id, sending))) = (&out, &sending)
                && undelivered(e)
            {
                sending
                    .0
                    .undelivered
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(*id);
            }
            drop(sending);
            out
        }
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await;
        if message.is_none() {
            self.wire.ended.store(true, Ordering::SeqCst);
        }
        message
    }

    async fn close(&mut self) -> std::result::Result<(), Self::Error> {
        // The server's side is gone: the sends still running fail at once; let them, so that
        // a request whose send failed without reaching the server is known as such when rmcp
        // drops it (and the call is retried on a new connection).
        if self.wire.ended() {
            self.wire.settle(SETTLE_TIMEOUT).await;
        }
        self.inner.close().await
    }
}

/// A write to a child's stdin that failed with a broken pipe (the child's end is closed) or
/// after the transport closed its writer left no whole line with the server: a stdio server
/// reads line-delimited messages and acts on a request only once it has read its newline,
/// which is the last byte written.
#[cfg(feature = "client-stdio")]
fn stdio_undelivered(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::NotConnected
    )
}

/// A message sent to an in-process server whose inbox is gone was not queued.
fn in_process_undelivered(e: &futures::channel::mpsc::SendError) -> bool {
    e.is_disconnected()
}

/// Over HTTP a failed POST may still have reached the server: never proof.
#[cfg(any(feature = "client-http", feature = "client-sse"))]
fn http_undelivered<E>(_: &E) -> bool {
    false
}
