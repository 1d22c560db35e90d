//! [`InProcessServer`]: an MCP server that runs in this process, reached without a socket, a
//! child process or JSON encoding.
//!
//! The client and the server exchange JSON-RPC messages as values over two in-memory
//! channels, so a call costs what the handler does plus two channel hops. Everything else is
//! the same as with any other server: the [`ConnectionManager`](crate::ConnectionManager)
//! connects lazily, runs the lifecycle handshake, multiplexes concurrent calls, routes
//! progress, sampling and elicitation, and reconnects (starting a new server-side session)
//! after the connection was lost.
//!
//! A handler that panics (a tool's, or any other request's) does not leave its call waiting
//! for the request timeout: the call is answered at once with a JSON-RPC internal error
//! (-32603) saying which tool's handler panicked and with what message, and the server keeps
//! serving the connection's other and later calls. Every transport agentkit serves on does
//! the same (stdio, streamable HTTP, any byte stream: see [`CatchPanics`]).
//!
//! ```
//! use agentkit_mcp::{ConnectionManager, McpServerBuilder, ServerConfig};
//! use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> agentkit_core::Result<()> {
//! let server = McpServerBuilder::new("notes", "1.0.0")
//!     .tool_fn("count", "Counts words", serde_json::json!({"type": "object"}), |args, _| async move {
//!         let text = args.get("text").and_then(|t| t.as_str()).unwrap_or("");
//!         let n = text.split_whitespace().count();
//!         Ok(CallToolResult::success(vec![ContentBlock::text(n.to_string())]))
//!     })
//!     .build();
//! let manager = ConnectionManager::new([ServerConfig::in_process("notes", server)]);
//! let args = serde_json::json!({"text": "one two three"}).as_object().cloned().unwrap_or_default();
//! let out = manager
//!     .call_tool("notes", "count", args, &agentkit_core::RunContext::new())
//!     .await?;
//! assert_eq!(out.content[0].as_text().map(|t| t.text.as_str()), Some("3"));
//! manager.shutdown().await;
//! # Ok(()) }
//! ```

#[cfg(feature = "server")]
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use futures::channel::mpsc;
use rmcp::model::{ClientJsonRpcMessage, JsonRpcMessage, NumberOrString, ServerJsonRpcMessage};
use tokio_util::sync::CancellationToken;

#[cfg(feature = "server")]
use crate::CatchPanics;

/// How many messages each direction of a connection buffers before the sender waits.
const BUFFER: usize = 256;

/// The client's end of one in-process connection: what it sends, what it receives.
pub(crate) type ClientEnd = (
    mpsc::Sender<ClientJsonRpcMessage>,
    mpsc::Receiver<ServerJsonRpcMessage>,
);

/// The server's end of one in-process connection (an rmcp transport: a sink of the server's
/// messages and a stream of the client's).
pub(crate) type ServerEnd = (mpsc::Sender<ServerJsonRpcMessage>, Inbox);

/// The two ends of a new connection.
pub(crate) fn pair() -> (ClientEnd, ServerEnd) {
    let (to_server, from_client) = mpsc::channel(BUFFER);
    let (to_client, from_server) = mpsc::channel(BUFFER);
    let inbox = Inbox {
        rx: from_client,
        stop: None,
        reads: Arc::new(InboxReads {
            read: AtomicI64::new(-1),
            closed: AtomicBool::new(false),
        }),
    };
    ((to_server, from_server), (to_client, inbox))
}

/// The client's messages as the server reads them: notes the requests it read, so the
/// client can tell a request the server never read (safe to send again on a new connection)
/// from one it may have handled. Ends once the server is stopped: the stop is looked at
/// before each read, so no request read after [`InProcessServer::stop`] returned is served
/// (the session's own loop would notice the stop only later).
pub(crate) struct Inbox {
    rx: mpsc::Receiver<ClientJsonRpcMessage>,
    /// The server's stop (set when a session starts on this inbox). Only looked at: the
    /// session's task ends the session when it is cancelled; this keeps it from reading on
    /// in between.
    stop: Option<CancellationToken>,
    reads: Arc<InboxReads>,
}

impl Inbox {
    /// What this inbox read, readable from the client's side.
    pub(crate) fn reads(&self) -> Arc<InboxReads> {
        Arc::clone(&self.reads)
    }
}

impl Stream for Inbox {
    type Item = ClientJsonRpcMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self
            .stop
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut self.rx).poll_next(cx);
        if let Poll::Ready(Some(JsonRpcMessage::Request(r))) = &next
            && let NumberOrString::Number(id) = r.id
        {
            self.reads.read.fetch_max(id, Ordering::SeqCst);
        }
        next
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.reads.closed.store(true, Ordering::SeqCst);
    }
}

/// What the server's side of one in-process connection read of the client's requests.
#[derive(Debug)]
pub(crate) struct InboxReads {
    /// The highest numeric request id the server read (-1: none).
    read: AtomicI64,
    /// The server dropped its inbox: it reads nothing more.
    closed: AtomicBool,
}

impl InboxReads {
    /// Whether the request `id` provably never reached the server: the server stopped
    /// reading, and every request it read had a lower id. (A request with a lower id than one
    /// read may still not have been read; it counts as reached.)
    pub(crate) fn never_read(&self, id: i64) -> bool {
        self.closed.load(Ordering::SeqCst) && id > self.read.load(Ordering::SeqCst)
    }
}

type Start = dyn Fn(ServerEnd, CancellationToken) -> Result<(), String> + Send + Sync;

/// An MCP server run inside this process: any rmcp
/// [`ServerHandler`](rmcp::ServerHandler) (an [`McpServer`](crate::McpServer) built with
/// [`McpServerBuilder`](crate::McpServerBuilder), an agent exposed with
/// [`expose_as_mcp_server`](crate::expose_as_mcp_server), or a handler of your own).
/// Attach it with [`ServerConfig::in_process`](crate::ServerConfig::in_process).
///
/// Each connection serves a clone of the handler (a new session of an `McpServer`). Cheap to
/// clone; clones are the same server (equal, and stopped together).
///
/// A request whose handler panics is answered at once with a JSON-RPC internal error
/// (-32603, "the handler of tool `…` panicked: …"); the connection and the server stay
/// usable, as over every other transport agentkit serves on (see
/// [`CatchPanics`]).
#[derive(Clone)]
pub struct InProcessServer {
    start: Arc<Start>,
    stop: CancellationToken,
}

impl std::fmt::Debug for InProcessServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessServer")
            .field("stopped", &self.is_stopped())
            .finish_non_exhaustive()
    }
}

impl PartialEq for InProcessServer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.start, &other.start)
    }
}

impl Eq for InProcessServer {}

impl InProcessServer {
    /// Serve any rmcp server handler: each connection gets a clone of `handler`. A request
    /// whose handler panics is answered with a JSON-RPC internal error naming the request
    /// (the tool, for `tools/call`) and the panic's message.
    #[cfg(feature = "server")]
    #[must_use]
    pub fn new<H>(handler: H) -> Self
    where
        H: rmcp::ServerHandler + Clone,
    {
        Self::from_serve(move |end: ServerEnd| {
            let handler = CatchPanics::new(handler.clone());
            async move {
                rmcp::ServiceExt::serve(handler, end)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
    }

    /// A server whose connections are served by `serve` (it runs the handshake and returns
    /// the running service); each runs on its own task until the client disconnects or the
    /// server is stopped.
    #[cfg(feature = "server")]
    fn from_serve<F, Fut, S>(serve: F) -> Self
    where
        F: Fn(ServerEnd) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<rmcp::service::RunningService<rmcp::RoleServer, S>, String>>
            + Send
            + 'static,
        S: rmcp::Service<rmcp::RoleServer>,
    {
        let start = move |end: ServerEnd, stop: CancellationToken| {
            let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                "an in-process MCP server needs a Tokio runtime to run on".to_owned()
            })?;
            let serving = serve(end);
            handle.spawn(async move {
                let running = tokio::select! {
                    r = serving => match r {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(error = %e, "an in-process MCP server refused a connection");
                            return;
                        }
                    },
                    () = stop.cancelled() => return,
                };
                let cancel = running.cancellation_token();
                let waiting = running.waiting();
                tokio::pin!(waiting);
                tokio::select! {
                    _ = &mut waiting => {}
                    () = stop.cancelled() => {
                        cancel.cancel();
                        let _ = waiting.await;
                    }
                }
            });
            Ok(())
        };
        Self {
            start: Arc::new(start),
            stop: CancellationToken::new(),
        }
    }

    /// Stop the server when `token` is cancelled: its open connections close (their calls in
    /// flight fail with an error naming the server) and new connections are refused.
    #[must_use]
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// Stop the server now (see [`with_cancellation`](Self::with_cancellation)): no request
    /// its sessions read after this returns is served; the calls in flight fail with an
    /// error naming the server, and the next call is told it was stopped.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Whether the server was stopped.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Start serving one connection on `end`.
    pub(crate) fn start(&self, end: ServerEnd) -> Result<(), String> {
        if self.is_stopped() {
            return Err(
                "the in-process server was stopped (its cancellation token is cancelled); \
                 attach a new one with `ConnectionManager::add_server`"
                    .to_owned(),
            );
        }
        let (to_client, mut inbox) = end;
        inbox.stop = Some(self.stop.clone());
        (self.start)((to_client, inbox), self.stop.clone())
    }
}

#[cfg(feature = "server")]
impl From<crate::McpServer> for InProcessServer {
    /// Each connection is a session of `server` (as with [`McpServer::serve`](crate::McpServer::serve)):
    /// tools added at runtime reach it, with a `list_changed` notification. A tool whose
    /// handler panics answers its call with a JSON-RPC internal error at once (see
    /// [`InProcessServer`]).
    fn from(server: crate::McpServer) -> Self {
        Self::from_serve(move |end: ServerEnd| {
            let (session, end) =
                server.clone().into_session(
                    rmcp::transport::IntoTransport::<rmcp::RoleServer, _, _>::into_transport(end),
                );
            async move {
                rmcp::ServiceExt::serve(CatchPanics::new(session), end)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
    }
}
