//! The inbound streamable HTTP endpoint of an [`McpServer`]: rmcp's service behind a front
//! that checks `Origin`, answers malformed JSON-RPC with JSON-RPC errors, caps the number of
//! sessions and tells the server owner when a session ends.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use rmcp::model::{
    CallToolResponse, ClientJsonRpcMessage, ClientRequest, ErrorCode, GetMeta, ProtocolVersion,
    ServerJsonRpcMessage, ServerResult,
};
use rmcp::transport::WorkerTransport;
use rmcp::transport::streamable_http_server::session::ServerSseMessage;
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError, LocalSessionWorker,
};
use rmcp::transport::streamable_http_server::{
    RestoreOutcome, SessionId, SessionManager, StreamableHttpService,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::server::{CatchPanics, DirectCall, McpServer};
use crate::session::{Sessions, Tracked};

/// The largest request body accepted (rmcp's default).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A response of the endpoint.
pub type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

/// The streamable HTTP endpoint of an [`McpServer`], a tower `Service` (mount it with
/// `axum::Router::nest_service("/mcp", ..)`); made by
/// [`McpServer::into_http_service`](crate::McpServer::into_http_service).
#[derive(Clone)]
pub struct McpHttpService {
    /// Everything, behind one `Arc`: a request clones the service once (one reference count).
    shared: Arc<Shared>,
}

/// The parts of an [`McpHttpService`].
struct Shared {
    inner: StreamableHttpService<CatchPanics<McpServer>, SessionTracker>,
    /// The server, for the `tools/call`s answered without rmcp's per-request service.
    server: McpServer,
    /// The server's cancellation (ends every answer in progress).
    cancel: CancellationToken,
    /// Whether every `Host` is accepted (else rmcp checks it: no direct answers).
    any_host: bool,
    sessions: Sessions,
    max_sessions: Option<usize>,
}

impl std::fmt::Debug for McpHttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpHttpService")
            .field("sessions", &self.shared.sessions.live())
            .field("max_sessions", &self.shared.max_sessions)
            .finish_non_exhaustive()
    }
}

impl McpHttpService {
    pub(crate) fn new(
        server: McpServer,
        config: rmcp::transport::StreamableHttpServerConfig,
        sessions: Sessions,
        max_sessions: Option<usize>,
    ) -> Self {
        let tracker = SessionTracker {
            inner: Arc::new(LocalSessionManager::default()),
            sessions: sessions.clone(),
            max: max_sessions,
        };
        let cancel = config.cancellation_token.clone();
        let any_host = config.allowed_hosts.is_empty();
        let factory = server.clone();
        Self {
            shared: Arc::new(Shared {
                inner: StreamableHttpService::new(
                    move || Ok(CatchPanics::new(factory.clone())),
                    Arc::new(tracker),
                    config,
                ),
                server,
                cancel,
                any_host,
                sessions,
                max_sessions,
            }),
        }
    }

    /// How many legacy (`initialize`) sessions are open now.
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.shared.sessions.live()
    }

    async fn handle<B>(self, request: Request<B>) -> HttpResponse
    where
        B: http_body::Body + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let body = match read_body(body).await {
            Ok(b) => b,
            Err(response) => return response,
        };
        let is_json = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case("application/json"))
            });
        if parts.method == http::Method::POST && is_json {
            // A `tools/call` is read as that alone; any other message as every kind rmcp knows.
            let checked = match call_message(&parts.headers, &body) {
                Some(call) => Ok(Checked::Other(Box::new(Some(call)))),
                None => check_message(&body),
            };
            match checked {
                Err(response) => return response,
                Ok(Checked::Other(message)) => {
                    if let Some(direct) = self.direct(&parts, *message) {
                        return direct.answer(parts, &self.shared.cancel).await;
                    }
                }
                Ok(Checked::Initialize)
                    if !parts.headers.contains_key("mcp-session-id")
                        && self
                            .shared
                            .max_sessions
                            .is_some_and(|max| self.shared.sessions.live() >= max) =>
                {
                    let max = self.shared.max_sessions.unwrap_or_default();
                    return rpc_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        -32000,
                        format!(
                            "this server has reached its limit of {max} open MCP sessions; \
                             try again later, or use the stateless 2026-07-28 protocol \
                             (`server/discover`), which needs no session"
                        ),
                    );
                }
                Ok(_) => {}
            }
        }
        let request = Request::from_parts(parts, Full::new(body));
        match tower::ServiceExt::oneshot(self.shared.inner.clone(), request).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }
}

impl McpHttpService {
    /// `message` as a [`Direct`] call: a stateless 2026-07-28 `tools/call` of a tool the
    /// server's [`RequestTools`](crate::RequestTools) answer directly, which every check of
    /// rmcp's stateless path accepts (per-request `_meta` with the protocol version, the
    /// same version in `MCP-Protocol-Version`, SEP-2243 `Mcp-Method`/`Mcp-Name` naming the
    /// call, `Accept` listing JSON and SSE, no session, no tasks extension, a well-formed
    /// `Host` where every host is allowed, no `Origin`). Anything else,
    /// including every request rmcp would refuse, is `None` and goes through rmcp.
    fn direct(
        &self,
        parts: &http::request::Parts,
        message: Option<ClientJsonRpcMessage>,
    ) -> Option<Direct> {
        let ClientJsonRpcMessage::Request(request) = message? else {
            return None;
        };
        let meta = request.request.get_meta();
        let version = ProtocolVersion::V_2026_07_28;
        if meta.protocol_version().as_ref() != Some(&version)
            || !meta.missing_required_keys(&version).is_empty()
            || meta
                .client_capabilities()
                .is_some_and(|caps| caps.supports_tasks())
        {
            return None;
        }
        let ClientRequest::CallToolRequest(call) = request.request else {
            return None;
        };
        let headers = &parts.headers;
        let name = call.params.name.as_ref();
        // rmcp's DNS-rebinding checks pass: any host is allowed and this one is well
        // formed, and no browser `Origin` to check.
        let host_ok = self.shared.any_host
            && headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .is_some_and(|h| http::uri::Authority::try_from(h).is_ok());
        if !host_ok
            || headers.contains_key(http::header::ORIGIN)
            || headers.contains_key("mcp-session-id")
            || sole_header(headers, "mcp-protocol-version") != Some(version.as_str())
            || sole_header(headers, "mcp-method") != Some("tools/call")
            || sole_header(headers, "mcp-name") != Some(name)
            || name.starts_with("=?")
            || !accepts_json_and_sse(headers)
        {
            return None;
        }
        let tools = self.shared.server.direct_tools(name)?;
        Some(Direct {
            tools,
            id: request.id,
            name: call.params.name.into_owned(),
            arguments: call.params.arguments.unwrap_or_default(),
        })
    }
}

/// A stateless `tools/call` answered by [`RequestTools::call_direct`](crate::RequestTools::call_direct):
/// the body was read once, the answer is written once, no task and no transport per request.
struct Direct {
    tools: Arc<dyn crate::RequestTools>,
    id: rmcp::model::RequestId,
    name: String,
    arguments: rmcp::model::JsonObject,
}

impl Direct {
    /// The call's JSON answer, as rmcp's stateless path with JSON responses writes it: the
    /// result or the JSON-RPC error (HTTP 200, or the status rmcp gives the error's code).
    async fn answer(self, parts: http::request::Parts, server: &CancellationToken) -> HttpResponse {
        // Dropped with this future when the client goes away: the call sees it cancelled.
        let cancel = CancellationToken::new();
        let _dropped = cancel.clone().drop_guard();
        let call = DirectCall::new(parts, cancel.clone());
        // A panicking handler is answered as on rmcp's path (see `CatchPanics`).
        let called = AssertUnwindSafe(self.tools.call_direct(&self.name, self.arguments, call))
            .catch_unwind();
        let result = tokio::select! {
            r = called => r.unwrap_or_else(|payload| {
                Err(crate::server::panicked(&format_args!("tool `{}`", self.name), payload.as_ref()))
            }),
            () = server.cancelled() => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Encounter an error when empty response: no response message received from handler".into(),
                );
            }
        };
        let message = match result {
            Ok(r) => ServerJsonRpcMessage::response(
                ServerResult::from(CallToolResponse::Complete(r)),
                self.id,
            ),
            // As is: rmcp maps no error code of a `tools/call` handler.
            Err(e) => ServerJsonRpcMessage::error(e, Some(self.id)),
        };
        let status = match &message {
            ServerJsonRpcMessage::Error(e) => match e.error.code {
                ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
                | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
                | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
                ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
                _ => StatusCode::OK,
            },
            _ => StatusCode::OK,
        };
        match serde_json::to_vec(&message) {
            Ok(body) => Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)).boxed())
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())),
            Err(e) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Encounter an error when serialize json response: {e}"),
            ),
        }
    }
}

/// The one value of header `name`, if it has exactly one and it is text.
fn sole_header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Whether `Accept` plainly lists both `application/json` and `text/event-stream` (no
/// quality weights, no quoting: anything less plain is left to rmcp's reading).
fn accepts_json_and_sse(headers: &http::HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(http::header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.contains(['"', ';']) {
            return false;
        }
        for essence in value.split(',').map(str::trim) {
            json |= essence.eq_ignore_ascii_case("application/json");
            sse |= essence.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

impl<B> tower::Service<Request<B>> for McpHttpService
where
    B: http_body::Body + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        let delete = request.method() == http::Method::DELETE;
        Box::pin(async move {
            let mut res = this.handle(request).await;
            // ended a session: 204, which every SDK expects (the Python SDK warns on rmcp's 202).
            if delete && res.status() == StatusCode::ACCEPTED {
                *res.status_mut() = StatusCode::NO_CONTENT;
            }
            Ok(res)
        })
    }
}

/// The whole body, at most [`MAX_BODY`] bytes.
async fn read_body<B>(body: B) -> Result<Bytes, HttpResponse>
where
    B: http_body::Body + Send + 'static,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            plain(
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            )
        })?;
        if let Ok(mut data) = frame.into_data() {
            if data.remaining() > MAX_BODY.saturating_sub(out.len()) {
                return Err(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body exceeds {MAX_BODY} bytes"),
                ));
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                let n = chunk.len();
                out.extend_from_slice(chunk);
                data.advance(n);
            }
        }
    }
    Ok(out.freeze())
}

/// A body read as a stateless `tools/call` and nothing else: what [`McpHttpService::direct`]
/// needs, without reading it as every message rmcp knows first (that tries each request type
/// in turn, and builds an error for each one that does not match).
///
/// `None` when the headers do not name a `tools/call` (`Mcp-Method`), or when the body is not
/// plainly one: not a request (rmcp's shape check: `method` and `id`, no `result` or
/// `error`), or not a `tools/call` its types read. Such a body is read the general way.
fn call_message(headers: &http::HeaderMap, body: &[u8]) -> Option<ClientJsonRpcMessage> {
    if sole_header(headers, "mcp-method") != Some("tools/call") || !plain_request(body) {
        return None;
    }
    let request: rmcp::model::JsonRpcRequest<rmcp::model::CallToolRequest> =
        serde_json::from_slice(body).ok()?;
    Some(ClientJsonRpcMessage::Request(rmcp::model::JsonRpcRequest {
        jsonrpc: request.jsonrpc,
        id: request.id,
        request: ClientRequest::CallToolRequest(request.request),
    }))
}

/// Whether `body` is a JSON object with `method` and `id` and neither `result` nor `error`
/// (the shape rmcp reads as a request).
fn plain_request(body: &[u8]) -> bool {
    /// A key of the message, read without copying it.
    enum Key {
        Method,
        Id,
        Answer,
        Other,
    }
    impl<'de> serde::Deserialize<'de> for Key {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Name;
            impl serde::de::Visitor<'_> for Name {
                type Value = Key;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a key")
                }

                fn visit_str<E>(self, key: &str) -> Result<Key, E> {
                    Ok(match key {
                        "method" => Key::Method,
                        "id" => Key::Id,
                        "result" | "error" => Key::Answer,
                        _ => Key::Other,
                    })
                }
            }
            d.deserialize_str(Name)
        }
    }
    struct Shape;
    impl<'de> serde::de::Visitor<'de> for Shape {
        type Value = bool;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON-RPC request")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let (mut method, mut id, mut answer) = (false, false, false);
            while let Some(key) = map.next_key::<Key>()? {
                match key {
                    Key::Method => method = true,
                    Key::Id => id = true,
                    Key::Answer => answer = true,
                    Key::Other => {}
                }
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(method && id && !answer)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde::Deserializer::deserialize_map(&mut de, Shape).is_ok_and(|plain| plain)
        && de.end().is_ok()
}

/// What [`check_message`] learned about a well-formed message.
enum Checked {
    Initialize,
    /// Any other message, as read when it was well-formed on the first parse.
    Other(Box<Option<ClientJsonRpcMessage>>),
}

/// Checks a POSTed JSON-RPC message before rmcp sees it; a bad one gets the JSON-RPC error the
/// spec names instead of rmcp's plain-text HTTP 415.
#[allow(clippy::result_large_err)]
fn check_message(body: &[u8]) -> Result<Checked, HttpResponse> {
    // A well-formed message (nearly every one) is read once, as the typed message; the
    // checks below only run to say what is wrong with one that is not.
    // (A request rmcp does not know, or a known method with params it cannot read, such
    // as `tools/call` with string `arguments`, parses as a custom request: checked below.)
    if let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(body)
        && !matches!(
            &message,
            ClientJsonRpcMessage::Request(r)
                if matches!(r.request, rmcp::model::ClientRequest::CustomRequest(_))
        )
    {
        let initialize = matches!(
            &message,
            ClientJsonRpcMessage::Request(r)
                if matches!(r.request, rmcp::model::ClientRequest::InitializeRequest(_))
        );
        return Ok(if initialize {
            Checked::Initialize
        } else {
            Checked::Other(Box::new(Some(message)))
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            -32700,
            format!("parse error: the body is not valid JSON ({e})"),
        )
    })?;
    let invalid = |id: Option<Value>, why: String| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            -32600,
            format!("invalid request: {why}"),
        )
    };
    let Value::Object(obj) = &value else {
        return Err(invalid(
            None,
            "expected one JSON-RPC 2.0 message (a JSON object); batches are not supported".into(),
        ));
    };
    let id = obj.get("id").cloned();
    if let Some(bad) = id
        .as_ref()
        .filter(|i| !(i.is_string() || i.is_i64() || i.is_u64()))
    {
        return Err(invalid(
            None,
            format!("`id` must be a string or an integer, found {bad}"),
        ));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid(id, "`jsonrpc` must be \"2.0\"".into()));
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => Some(m.as_str()),
        Some(other) => {
            return Err(invalid(
                id,
                format!("`method` must be a string, found {other}"),
            ));
        }
        None => None,
    };
    if method == Some("tools/call") {
        let params = obj.get("params");
        let why = match params {
            Some(Value::Object(p)) => match (p.get("name"), p.get("arguments")) {
                (Some(Value::String(_)), None | Some(Value::Null | Value::Object(_))) => None,
                (Some(Value::String(_)), Some(a)) => Some(format!(
                    "`params.arguments` must be an object mapping argument names to values, found {a}"
                )),
                _ => Some("`params.name` must be the tool's name (a string)".to_owned()),
            },
            _ => Some("`params` must be an object with the tool's `name` and `arguments`".into()),
        };
        if let Some(why) = why {
            return Err(rpc_error(
                StatusCode::OK,
                id,
                -32602,
                format!("invalid params: {why}"),
            ));
        }
    }
    let initialize = method == Some("initialize");
    if let Err(e) = serde_json::from_value::<ClientJsonRpcMessage>(value) {
        return Err(invalid(id, format!("not a valid MCP client message: {e}")));
    }
    Ok(if initialize {
        Checked::Initialize
    } else {
        Checked::Other(Box::new(None))
    })
}

fn rpc_error(status: StatusCode, id: Option<Value>, code: i64, message: String) -> HttpResponse {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    });
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn plain(status: StatusCode, message: String) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(message)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// rmcp's in-memory session manager, counting live sessions (a session lives until its
/// transport is dropped: closed by the client, expired, or the server shut down), refusing
/// new ones over the cap, and forgetting ended ones (rmcp keeps expired sessions' handles).
pub(crate) struct SessionTracker {
    inner: Arc<LocalSessionManager>,
    sessions: Sessions,
    max: Option<usize>,
}

/// Why the session manager refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// From rmcp's manager.
    #[error(transparent)]
    Inner(#[from] LocalSessionManagerError),
    /// The cap is reached.
    #[error("the limit of {0} open MCP sessions is reached")]
    Full(usize),
}

impl SessionTracker {
    fn track(
        &self,
        id: SessionId,
        transport: WorkerTransport<LocalSessionWorker>,
    ) -> Tracked<WorkerTransport<LocalSessionWorker>> {
        let mut tracked = self.sessions.track(Arc::clone(&id), transport);
        let manager = Arc::downgrade(&self.inner);
        tracked.end.extra = Some(Box::new(move |id: Arc<str>| {
            if let (Some(m), Ok(rt)) = (manager.upgrade(), tokio::runtime::Handle::try_current()) {
                rt.spawn(async move {
                    m.sessions.write().await.remove(&id);
                });
            }
        }));
        tracked
    }
}

impl SessionManager for SessionTracker {
    type Error = SessionError;
    type Transport = Tracked<WorkerTransport<LocalSessionWorker>>;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        if let Some(max) = self.max
            && self.sessions.live() >= max
        {
            return Err(SessionError::Full(max));
        }
        let (id, transport) = self.inner.create_session().await?;
        let tracked = self.track(Arc::clone(&id), transport);
        Ok((id, tracked))
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error>
    {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error>
    {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error>
    {
        Ok(self.inner.resume(id, last_event_id).await?)
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        Ok(match self.inner.restore_session(Arc::clone(&id)).await? {
            RestoreOutcome::Restored(t) => RestoreOutcome::Restored(self.track(id, t)),
            RestoreOutcome::AlreadyPresent => RestoreOutcome::AlreadyPresent,
            _ => RestoreOutcome::NotSupported,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<Checked, HttpResponse>) -> Option<(StatusCode, i64)> {
        let r = r.err()?;
        let status = r.status();
        let body = futures::executor::block_on(r.into_body().collect())
            .ok()?
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).ok()?;
        Some((status, v["error"]["code"].as_i64()?))
    }

    #[test]
    fn malformed_messages_get_json_rpc_errors() {
        assert_eq!(
            code(check_message(b"{nope")),
            Some((StatusCode::BAD_REQUEST, -32700))
        );
        assert_eq!(
            code(check_message(b"[1]")),
            Some((StatusCode::BAD_REQUEST, -32600))
        );
        assert_eq!(
            code(check_message(
                br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#
            )),
            Some((StatusCode::BAD_REQUEST, -32600))
        );
        assert_eq!(
            code(check_message(
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":"s"}}"#
            )),
            Some((StatusCode::OK, -32602))
        );
        assert!(check_message(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_ok());
    }
}
