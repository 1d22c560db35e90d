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
    server.start(server_end).map_err(|why| {
        Error::tool(
            &cfg.name,
            format!(
                "could not start in-process MCP server `{}`: {why}",
                cfg.name
            ),
        )
    })?;
    let handler = client.clone();
    let running = handler
        .serve_with_lifecycle(client_end, client_mode(lifecycle))
        .await
        .map_err(|e| init_error(&cfg.name, format!("{e} (in-process server)")))?;
    Ok(Connection {
        server: cfg.name.clone(),
        peer: running.peer().clone(),
        client,
        pid: None,
        network: "inproc",
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
        network: "pipe",
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
        let running = client
            .clone()
            .serve_with_lifecycle(
                StreamableHttpClientTransport::with_client(http, config),
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
        return Ok(http_connection(cfg, running, client));
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
    let transport = StreamableHttpClientTransport::from_config(config);
    let handler = client.clone();
    let running = handler
        .serve_with_lifecycle(transport, client_mode(lifecycle))
        .await
        .map_err(failed)?;
    Ok(http_connection(cfg, running, client))
}

#[cfg(any(feature = "client-http", feature = "client-sse"))]
fn http_connection(
    cfg: &ServerConfig,
    running: RunningService<RoleClient, AgentkitClient>,
    client: AgentkitClient,
) -> Connection {
    Connection {
        server: cfg.name.clone(),
        peer: running.peer().clone(),
        client,
        pid: None,
        network: "tcp",
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
    let handler = client.clone();
    let running = handler
        .serve_with_lifecycle(transport, ClientLifecycleMode::Initialize)
        .await
        .map_err(|e| init_error(&cfg.name, format!("{e} (SSE url {url})")))?;
    Ok(http_connection(cfg, running, client))
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
