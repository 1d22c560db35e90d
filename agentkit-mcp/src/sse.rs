//! The legacy HTTP+SSE transport of MCP protocol 2024-11-05, for the client role, as an rmcp
//! [`Transport`] (rmcp itself dropped it in 0.11).
//!
//! The client opens a `GET` to the SSE URL and waits for the server's `endpoint` event, whose
//! data is the URL (usually relative, with a session id in the query) to `POST` JSON-RPC
//! messages to. Every server message, responses included, arrives on the SSE stream as a
//! `message` event. The endpoint must be on the SSE URL's origin (scheme, host and port); any
//! other is refused, as the specification requires.
//!
//! The 2024-11-05 transport has no session resumption. When the stream drops, the transport
//! reconnects only if the server gave its events ids (standard SSE resumption with
//! `Last-Event-ID`), and only continues if the server keeps the same endpoint; otherwise it
//! ends, and a [`ConnectionManager`](crate::ConnectionManager) starts a fresh session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use agentkit_mcp::rmcp::{ServiceExt, model::ClientConfig};
//! use agentkit_mcp::sse::{SseClientConfig, SseClientTransport};
//!
//! let transport = SseClientTransport::connect(
//!     SseClientConfig::new("http://127.0.0.1:3001/sse").with_bearer_token("s3cret"),
//! )
//! .await?;
//! let client = ClientConfig::default().serve(transport).await?;
//! println!("{:?}", client.list_all_tools().await?);
//! client.cancel().await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderMap, HeaderName};
use reqwest::header::{HeaderValue, WWW_AUTHENTICATE};
use rmcp::RoleClient;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::Transport;
use sse_stream::{Sse, SseByteStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Default time allowed for the server's `endpoint` event after the stream opens.
pub const DEFAULT_ENDPOINT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time allowed for one `POST` of a message.
pub const DEFAULT_POST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of reconnect attempts of a dropped SSE stream (only for servers that give
/// their events ids).
pub const DEFAULT_MAX_RECONNECTS: u32 = 3;
/// Default largest accepted SSE event, in bytes of data.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 16 * 1024 * 1024;

const DEFAULT_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
const BODY_SNIPPET: usize = 512;

/// How to reach a server over HTTP+SSE.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SseClientConfig {
    /// The SSE URL, e.g. `http://127.0.0.1:3001/sse`.
    pub url: String,
    /// Extra HTTP headers, sent with the `GET` and every `POST`.
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Time allowed to open the stream and receive the `endpoint` event.
    pub endpoint_timeout: Duration,
    /// Time allowed for one `POST`.
    pub post_timeout: Duration,
    /// Reconnect attempts of a dropped stream whose events carried ids.
    pub max_reconnects: u32,
    /// Largest accepted event data, in bytes; larger events end the stream with an error.
    pub max_event_size: usize,
}

impl std::fmt::Debug for SseClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseClientConfig")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint_timeout", &self.endpoint_timeout)
            .field("post_timeout", &self.post_timeout)
            .field("max_reconnects", &self.max_reconnects)
            .field("max_event_size", &self.max_event_size)
            .finish()
    }
}

impl SseClientConfig {
    /// A server at this SSE URL, with default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: BTreeMap::new(),
            bearer_token: None,
            endpoint_timeout: DEFAULT_ENDPOINT_TIMEOUT,
            post_timeout: DEFAULT_POST_TIMEOUT,
            max_reconnects: DEFAULT_MAX_RECONNECTS,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
        }
    }

    /// Add an HTTP header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Send `Authorization: Bearer <token>`.
    #[must_use]
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Time allowed to open the stream and receive the `endpoint` event.
    #[must_use]
    pub fn with_endpoint_timeout(mut self, t: Duration) -> Self {
        self.endpoint_timeout = t;
        self
    }

    /// Time allowed for one `POST`.
    #[must_use]
    pub fn with_post_timeout(mut self, t: Duration) -> Self {
        self.post_timeout = t;
        self
    }

    /// Reconnect attempts of a dropped stream (0: never reconnect).
    #[must_use]
    pub fn with_max_reconnects(mut self, n: u32) -> Self {
        self.max_reconnects = n;
        self
    }

    /// Largest accepted event data, in bytes.
    #[must_use]
    pub fn with_max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes.max(1);
        self
    }
}

/// What went wrong on an HTTP+SSE connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SseTransportError {
    /// The configuration is unusable (bad URL or header).
    #[error("invalid SSE transport configuration: {0}")]
    Config(String),
    /// The HTTP request failed (connect, TLS, timeout, broken body).
    #[error("{what} {url} failed: {source}")]
    Http {
        /// `GET` or `POST`.
        what: &'static str,
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error(
        "{what} {url} answered HTTP {status}{}{}",
        www_authenticate.as_deref().map(|c| format!(" (authorization required: {c})")).unwrap_or_default(),
        if body.is_empty() { String::new() } else { format!(": {body}") }
    )]
    Status {
        /// `GET` or `POST`.
        what: &'static str,
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
        /// The `WWW-Authenticate` challenge of a 401.
        www_authenticate: Option<String>,
    },
    /// The SSE URL did not answer with an event stream.
    #[error(
        "GET {url} answered with content type `{found}`, not `text/event-stream`: is this the \
         server's SSE URL (often `/sse`)? A streamable HTTP server (often `/mcp`) needs \
         `transport: streamable_http`"
    )]
    ContentType {
        /// The URL.
        url: String,
        /// The content type it sent.
        found: String,
    },
    /// The stream did not announce where to post messages.
    #[error("the SSE stream at {url} sent no `endpoint` event: {reason}")]
    NoEndpoint {
        /// The SSE URL.
        url: String,
        /// What happened instead.
        reason: String,
    },
    /// The `endpoint` event was unusable (not a URL, or on another origin).
    #[error("the SSE stream at {url} sent an unusable `endpoint` event: {reason}")]
    Endpoint {
        /// The SSE URL.
        url: String,
        /// Why it was refused.
        reason: EndpointError,
    },
    /// A message could not be encoded.
    #[error("could not encode a JSON-RPC message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The transport is closed.
    #[error("the SSE transport is closed")]
    Closed,
}

impl SseTransportError {
    /// The `WWW-Authenticate` challenge when the server asked for authorization.
    #[must_use]
    pub fn auth_challenge(&self) -> Option<&str> {
        match self {
            Self::Status {
                www_authenticate, ..
            } => www_authenticate.as_deref(),
            _ => None,
        }
    }

    /// Whether the server answered 401.
    #[must_use]
    pub fn is_authorization_required(&self) -> bool {
        matches!(self, Self::Status { status: 401, .. })
    }
}

/// Why an `endpoint` event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Empty data.
    #[error("it is empty")]
    Empty,
    /// Not a URL, absolute or relative to the SSE URL.
    #[error("`{data}` is not a URL: {reason}")]
    NotAUrl {
        /// The event data.
        data: String,
        /// The parse error.
        reason: String,
    },
    /// Not `http` or `https`.
    #[error("`{0}` is not an http(s) URL")]
    Scheme(String),
    /// On another origin than the SSE URL: refused, since messages (and credentials) would
    /// go to a host the configuration did not name.
    #[error(
        "`{endpoint}` is on another origin than the SSE URL ({expected}); refusing to post \
         messages there"
    )]
    CrossOrigin {
        /// The resolved endpoint.
        endpoint: String,
        /// The SSE URL's origin.
        expected: String,
    },
}

/// Resolves the data of an `endpoint` event against the SSE URL, refusing URLs that are not
/// http(s) or are on another origin.
pub fn resolve_endpoint(sse_url: &Url, data: &str) -> Result<Url, EndpointError> {
    let data = data.trim();
    if data.is_empty() {
        return Err(EndpointError::Empty);
    }
    let url = sse_url.join(data).map_err(|e| EndpointError::NotAUrl {
        data: data.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(EndpointError::Scheme(url.to_string()));
    }
    if url.origin() != sse_url.origin() {
        return Err(EndpointError::CrossOrigin {
            endpoint: url.to_string(),
            expected: sse_url.origin().ascii_serialization(),
        });
    }
    Ok(url)
}

/// What one SSE event means on an HTTP+SSE stream.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SseItem {
    /// The `endpoint` event: its data (a URL, resolve it with [`resolve_endpoint`]).
    Endpoint(String),
    /// One or more server messages (a JSON-RPC batch yields several).
    Messages(Vec<ServerJsonRpcMessage>),
    /// A `message` event whose data is not a JSON-RPC message: the reason.
    Invalid(String),
    /// Nothing to act on: comments, keep-alives, metadata-only blocks, other event types.
    Ignore,
}

/// Classifies one decoded SSE event: `endpoint`, `message` (also the default type), or
/// something to ignore.
#[must_use]
pub fn classify_event(event: &Sse) -> SseItem {
    let kind = event.event.as_deref().unwrap_or("message");
    match kind {
        "endpoint" => match event.data.as_deref() {
            Some(d) => SseItem::Endpoint(d.to_owned()),
            None => SseItem::Invalid("an `endpoint` event without data".into()),
        },
        "message" => match event.data.as_deref() {
            None => SseItem::Ignore,
            Some(d) if d.trim().is_empty() => SseItem::Ignore,
            Some(d) => parse_messages(d),
        },
        _ => SseItem::Ignore,
    }
}

fn parse_messages(data: &str) -> SseItem {
    let value: serde_json::Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return SseItem::Invalid(format!("not JSON: {e}")),
    };
    let values = match value {
        serde_json::Value::Array(items) if !items.is_empty() => items,
        serde_json::Value::Array(_) => return SseItem::Invalid("an empty JSON-RPC batch".into()),
        v => vec![v],
    };
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        match serde_json::from_value::<ServerJsonRpcMessage>(v) {
            Ok(m) => out.push(m),
            Err(e) => return SseItem::Invalid(format!("not a JSON-RPC message: {e}")),
        }
    }
    SseItem::Messages(out)
}

/// Whether a `Content-Type` value is `text/event-stream` (parameters and case ignored).
#[must_use]
pub fn is_event_stream(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
}

type EventStream = futures::stream::BoxStream<'static, Result<Sse, sse_stream::Error>>;

/// An rmcp client [`Transport`] over HTTP+SSE (protocol 2024-11-05). Serve a
/// [`ClientHandler`](rmcp::ClientHandler) over it with `.serve(transport)`.
pub struct SseClientTransport {
    client: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
    post_timeout: Duration,
    rx: mpsc::Receiver<ServerJsonRpcMessage>,
    stop: CancellationToken,
    reader: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SseClientTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseClientTransport")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl Drop for SseClientTransport {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Reader {
    client: reqwest::Client,
    url: Url,
    endpoint: Url,
    headers: HeaderMap,
    max_reconnects: u32,
    max_event_size: usize,
    last_event_id: Option<String>,
    retry: Duration,
    tx: mpsc::Sender<ServerJsonRpcMessage>,
    stop: CancellationToken,
}

impl SseClientTransport {
    /// Opens the SSE stream and waits for the `endpoint` event (up to
    /// [`SseClientConfig::endpoint_timeout`]).
    pub async fn connect(config: SseClientConfig) -> Result<Self, SseTransportError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.endpoint_timeout)
            .redirect(same_origin_redirects())
            .build()
            .map_err(|e| SseTransportError::Config(format!("HTTP client: {e}")))?;
        Self::connect_with_client(client, config).await
    }

    /// [`SseClientTransport::connect`] with your own reqwest client (proxy, mTLS). Give it no
    /// total request timeout: the SSE stream stays open for the whole session.
    pub async fn connect_with_client(
        client: reqwest::Client,
        config: SseClientConfig,
    ) -> Result<Self, SseTransportError> {
        let url = Url::parse(&config.url)
            .map_err(|e| SseTransportError::Config(format!("SSE URL `{}`: {e}", config.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SseTransportError::Config(format!(
                "SSE URL `{url}` is not an http(s) URL"
            )));
        }
        let headers = header_map(&config)?;
        let opening = async {
            let mut stream =
                open_stream(&client, &url, &headers, None, config.max_event_size).await?;
            let mut early = Vec::new();
            let mut last_event_id = None;
            let mut retry = None;
            loop {
                let event = match stream.next().await {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => {
                        return Err(SseTransportError::NoEndpoint {
                            url: url.to_string(),
                            reason: format!("the stream broke: {e}"),
                        });
                    }
                    None => {
                        return Err(SseTransportError::NoEndpoint {
                            url: url.to_string(),
                            reason: "the stream ended first".into(),
                        });
                    }
                };
                if let Some(id) = &event.id {
                    last_event_id = Some(id.clone());
                }
                if let Some(r) = event.retry {
                    retry = Some(Duration::from_millis(r));
                }
                match classify_event(&event) {
                    SseItem::Endpoint(data) => {
                        let endpoint = resolve_endpoint(&url, &data).map_err(|reason| {
                            SseTransportError::Endpoint {
                                url: url.to_string(),
                                reason,
                            }
                        })?;
                        return Ok((stream, endpoint, early, last_event_id, retry));
                    }
                    SseItem::Messages(m) => early.extend(m),
                    SseItem::Invalid(reason) => {
                        tracing::warn!(url = %url, %reason, "ignoring an invalid SSE message")
                    }
                    SseItem::Ignore => {}
                }
            }
        };
        let (stream, endpoint, early, last_event_id, retry) =
            tokio::time::timeout(config.endpoint_timeout, opening)
                .await
                .map_err(|_| SseTransportError::NoEndpoint {
                    url: url.to_string(),
                    reason: format!(
                        "none within {:?} (is this an MCP HTTP+SSE server?)",
                        config.endpoint_timeout
                    ),
                })??;
        tracing::debug!(url = %url, endpoint = %endpoint, "MCP SSE stream open");
        let (tx, rx) = mpsc::channel(64);
        for m in early {
            // The channel is fresh and larger than any sane number of early messages; a
            // full channel only drops what the server sent before announcing its endpoint.
            let _ = tx.try_send(m);
        }
        let stop = CancellationToken::new();
        let reader = Reader {
            client: client.clone(),
            url,
            endpoint: endpoint.clone(),
            headers: headers.clone(),
            max_reconnects: config.max_reconnects,
            max_event_size: config.max_event_size,
            last_event_id,
            retry: retry.unwrap_or(DEFAULT_RETRY).min(MAX_RETRY),
            tx,
            stop: stop.clone(),
        };
        let reader = tokio::spawn(reader.run(stream));
        Ok(Self {
            client,
            endpoint,
            headers,
            post_timeout: config.post_timeout,
            rx,
            stop,
            reader: Some(reader),
        })
    }

    /// The URL messages are posted to (from the `endpoint` event).
    #[must_use]
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }
}

fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().map(Url::origin);
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if first.is_some_and(|o| o == attempt.url().origin()) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

fn header_map(config: &SseClientConfig) -> Result<HeaderMap, SseTransportError> {
    let mut map = HeaderMap::new();
    for (k, v) in &config.headers {
        let name = HeaderName::try_from(k.as_str())
            .map_err(|e| SseTransportError::Config(format!("header name `{k}`: {e}")))?;
        let value = HeaderValue::try_from(v.as_str())
            .map_err(|e| SseTransportError::Config(format!("value of header `{k}`: {e}")))?;
        map.insert(name, value);
    }
    if let Some(token) = &config.bearer_token {
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|e| SseTransportError::Config(format!("bearer token: {e}")))?;
        value.set_sensitive(true);
        map.insert(AUTHORIZATION, value);
    }
    Ok(map)
}

async fn status_error(what: &'static str, url: &Url, resp: reqwest::Response) -> SseTransportError {
    let status = resp.status().as_u16();
    let www_authenticate = resp
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.text().await.unwrap_or_default();
    let mut body: String = body.trim().chars().take(BODY_SNIPPET).collect();
    if body.len() >= BODY_SNIPPET {
        body.push('…');
    }
    SseTransportError::Status {
        what,
        url: url.to_string(),
        status,
        body,
        www_authenticate,
    }
}

async fn open_stream(
    client: &reqwest::Client,
    url: &Url,
    headers: &HeaderMap,
    last_event_id: Option<&str>,
    max_event_size: usize,
) -> Result<EventStream, SseTransportError> {
    let mut req = client
        .get(url.clone())
        .headers(headers.clone())
        .header(ACCEPT, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache");
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let resp = req.send().await.map_err(|source| SseTransportError::Http {
        what: "GET",
        url: url.to_string(),
        source,
    })?;
    if !resp.status().is_success() {
        return Err(status_error("GET", url, resp).await);
    }
    let found = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !is_event_stream(&found) {
        return Err(SseTransportError::ContentType {
            url: url.to_string(),
            found: if found.is_empty() {
                "(none)".into()
            } else {
                found
            },
        });
    }
    Ok(bounded(SseByteStream::new(resp.bytes_stream()), max_event_size).boxed())
}

/// Ends the stream with an error at the first event larger than `max` bytes of data.
fn bounded(
    stream: impl Stream<Item = Result<Sse, sse_stream::Error>> + Send + 'static,
    max: usize,
) -> impl Stream<Item = Result<Sse, sse_stream::Error>> + Send + 'static {
    let mut over = false;
    stream
        .map(move |item| match item {
            Ok(e) if e.data.as_ref().is_some_and(|d| d.len() > max) => Err(
                sse_stream::Error::Body(format!("an SSE event of more than {max} bytes").into()),
            ),
            other => other,
        })
        .take_while(move |item| {
            let keep = !over;
            over = over || item.is_err();
            futures::future::ready(keep)
        })
}

enum Pump {
    /// Stop for good (closed, receiver gone, or the session changed).
    Stop,
    /// The stream ended or broke; whether any event arrived on it.
    Ended(bool),
}

impl Reader {
    async fn run(mut self, mut stream: EventStream) {
        let mut attempts = 0u32;
        loop {
            match self.pump(&mut stream).await {
                Pump::Stop => return,
                Pump::Ended(true) => attempts = 0,
                Pump::Ended(false) => {}
            }
            if self.last_event_id.is_none() {
                tracing::info!(
                    url = %self.url,
                    "MCP SSE stream ended; the server gave no event ids to resume from, so the session is over"
                );
                return;
            }
            loop {
                if attempts >= self.max_reconnects {
                    tracing::warn!(url = %self.url, attempts, "MCP SSE stream ended; giving up reconnecting");
                    return;
                }
                attempts += 1;
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(self.retry.saturating_mul(attempts)) => {}
                }
                match open_stream(
                    &self.client,
                    &self.url,
                    &self.headers,
                    self.last_event_id.as_deref(),
                    self.max_event_size,
                )
                .await
                {
                    Ok(s) => {
                        tracing::info!(url = %self.url, "MCP SSE stream reconnected");
                        stream = s;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.url, error = %e, "MCP SSE reconnect failed")
                    }
                }
            }
        }
    }

    /// Forwards the stream's messages until it ends, breaks or must stop.
    async fn pump(&mut self, stream: &mut EventStream) -> Pump {
        let mut got = false;
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return Pump::Stop,
                n = stream.next() => n,
            };
            let event = match next {
                None => return Pump::Ended(got),
                Some(Err(e)) => {
                    tracing::warn!(url = %self.url, error = %e, "MCP SSE stream broke");
                    return Pump::Ended(got);
                }
                Some(Ok(e)) => e,
            };
            got = true;
            if let Some(id) = &event.id {
                self.last_event_id = Some(id.clone());
            }
            if let Some(r) = event.retry {
                self.retry = Duration::from_millis(r).min(MAX_RETRY);
            }
            match classify_event(&event) {
                SseItem::Endpoint(data) => match resolve_endpoint(&self.url, &data) {
                    Ok(e) if e == self.endpoint => {}
                    Ok(e) => {
                        tracing::warn!(url = %self.url, endpoint = %e, "the MCP SSE server started a new session; ending this one");
                        return Pump::Stop;
                    }
                    Err(reason) => {
                        tracing::warn!(url = %self.url, %reason, "the MCP SSE server sent an unusable endpoint; ending the session");
                        return Pump::Stop;
                    }
                },
                SseItem::Messages(messages) => {
                    for m in messages {
                        tokio::select! {
                            () = self.stop.cancelled() => return Pump::Stop,
                            sent = self.tx.send(m) => if sent.is_err() { return Pump::Stop },
                        }
                    }
                }
                SseItem::Invalid(reason) => {
                    tracing::warn!(url = %self.url, %reason, "ignoring an invalid MCP SSE message")
                }
                SseItem::Ignore => {}
            }
        }
    }
}

impl Transport<RoleClient> for SseClientTransport {
    type Error = SseTransportError;

    fn name() -> Cow<'static, str> {
        "SseClientTransport".into()
    }

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let client = self.client.clone();
        let url = self.endpoint.clone();
        let headers = self.headers.clone();
        let timeout = self.post_timeout;
        let stop = self.stop.clone();
        async move {
            if stop.is_cancelled() {
                return Err(SseTransportError::Closed);
            }
            let body = serde_json::to_vec(&item)?;
            let resp = client
                .post(url.clone())
                .headers(headers)
                .header(CONTENT_TYPE, "application/json")
                .timeout(timeout)
                .body(body)
                .send()
                .await
                .map_err(|source| SseTransportError::Http {
                    what: "POST",
                    url: url.to_string(),
                    source,
                })?;
            if resp.status().is_success() {
                return Ok(());
            }
            let err = status_error("POST", &url, resp).await;
            if matches!(err, SseTransportError::Status { status: 404, .. }) {
                // The server forgot the session: end the stream so the connection closes
                // and a manager starts a new one.
                tracing::warn!(endpoint = %url, "the MCP SSE server no longer knows this session");
                stop.cancel();
            }
            Err(err)
        }
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        self.rx.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.stop.cancel();
        self.rx.close();
        if let Some(reader) = self.reader.take() {
            let _ = reader.await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:3001/sse").unwrap()
    }

    #[test]
    fn relative_and_same_origin_endpoints_resolve() {
        let e = resolve_endpoint(&base(), "/message?sessionId=abc").unwrap();
        assert_eq!(e.as_str(), "http://127.0.0.1:3001/message?sessionId=abc");
        let e = resolve_endpoint(&base(), " messages/?session_id=1 \n").unwrap();
        assert_eq!(e.as_str(), "http://127.0.0.1:3001/messages/?session_id=1");
        let e = resolve_endpoint(&base(), "http://127.0.0.1:3001/m").unwrap();
        assert_eq!(e.path(), "/m");
    }

    #[test]
    fn other_origins_and_schemes_are_refused() {
        for bad in [
            "http://evil.example/message",
            "https://127.0.0.1:3001/message",
            "http://127.0.0.1:3002/message",
            "//evil.example/m",
        ] {
            assert!(
                matches!(
                    resolve_endpoint(&base(), bad),
                    Err(EndpointError::CrossOrigin { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            resolve_endpoint(&base(), "javascript:alert(1)"),
            Err(EndpointError::Scheme(_))
        ));
        assert_eq!(resolve_endpoint(&base(), "  "), Err(EndpointError::Empty));
    }

    #[test]
    fn events_are_classified() {
        let ep = Sse::default().event("endpoint").data("/m?s=1");
        assert!(matches!(classify_event(&ep), SseItem::Endpoint(d) if d == "/m?s=1"));
        let msg = Sse::default().data(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert!(matches!(classify_event(&msg), SseItem::Messages(m) if m.len() == 1));
        let named = Sse::default()
            .event("message")
            .data(r#"[{"jsonrpc":"2.0","method":"notifications/tools/list_changed"},{"jsonrpc":"2.0","id":"a","result":{}}]"#);
        assert!(matches!(classify_event(&named), SseItem::Messages(m) if m.len() == 2));
        assert!(matches!(
            classify_event(&Sse::default().data("nope")),
            SseItem::Invalid(_)
        ));
        assert!(matches!(
            classify_event(&Sse::default().data("[]")),
            SseItem::Invalid(_)
        ));
        assert!(matches!(
            classify_event(&Sse::default().event("ping").data("x")),
            SseItem::Ignore
        ));
        assert!(matches!(
            classify_event(&Sse::default().id("7")),
            SseItem::Ignore
        ));
    }

    #[test]
    fn content_types() {
        assert!(is_event_stream("text/event-stream"));
        assert!(is_event_stream("Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream("application/json"));
        assert!(!is_event_stream(""));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever an `endpoint` event says, the resolved URL is on the SSE URL's origin or
        /// is refused; resolving never panics.
        #[test]
        fn endpoint_is_same_origin_or_refused(data in ".{0,80}", path in "[a-z/?=&0-9]{0,20}") {
            let sse = base();
            for d in [data.clone(), format!("/{path}"), format!("http://127.0.0.1:3001/{path}"), format!("http://{data}/{path}")] {
                if let Ok(u) = resolve_endpoint(&sse, &d) {
                    prop_assert_eq!(u.origin(), sse.origin());
                    prop_assert!(matches!(u.scheme(), "http" | "https"));
                }
            }
        }

        /// Relative endpoints made of path and query characters always resolve on-origin.
        #[test]
        fn relative_paths_resolve(path in "[a-zA-Z0-9_\\-]{1,12}(/[a-zA-Z0-9_\\-]{1,12}){0,3}", q in "[a-zA-Z0-9]{0,16}") {
            let u = resolve_endpoint(&base(), &format!("/{path}?sessionId={q}")).unwrap();
            prop_assert_eq!(u.path(), format!("/{path}"));
            let want = format!("sessionId={q}");
            prop_assert_eq!(u.query(), Some(want.as_str()));
        }

        /// Classifying any event never panics, and `message` data that is a JSON-RPC
        /// response round-trips its id.
        #[test]
        fn classify_never_panics(kind in proptest::option::of("[a-z]{0,10}"), data in proptest::option::of(".{0,200}"), id in any::<i64>()) {
            let e = Sse { event: kind, data, ..Sse::default() };
            let _ = classify_event(&e);
            let ok = Sse::default().data(format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#));
            match classify_event(&ok) {
                SseItem::Messages(m) => {
                    let v = serde_json::to_value(&m[0]).unwrap();
                    prop_assert_eq!(v["id"].as_i64(), Some(id));
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        /// Arbitrary bytes through the SSE decoder and the classifier: no panic, and every
        /// classified message came from a `message`-typed (or untyped) event.
        #[test]
        fn decoder_and_classifier_on_arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let stream = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::io::Error>(bytes_of(c))));
                let events: Vec<_> = bounded(SseByteStream::new(stream), 1024).collect().await;
                for e in events.into_iter().flatten() {
                    if let SseItem::Messages(_) = classify_event(&e) {
                        assert!(matches!(e.event.as_deref(), None | Some("message")));
                    }
                }
            });
        }
    }

    fn bytes_of(v: Vec<u8>) -> std::io::Cursor<Vec<u8>> {
        std::io::Cursor::new(v)
    }
}
