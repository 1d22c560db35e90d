//! MCP sessions of a served [`McpServer`](crate::McpServer): a stable id per session and a
//! hook that fires when a session ends, for stdio connections and legacy streamable HTTP
//! sessions alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;

/// Called with a session's id when the session ends (the client closed it, it expired, or the
/// connection dropped).
pub type SessionEndHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The live sessions of one server and what to do when one ends.
#[derive(Clone, Default)]
pub(crate) struct Sessions {
    live: Arc<AtomicUsize>,
    on_end: Option<SessionEndHook>,
}

impl Sessions {
    pub(crate) fn new(on_end: Option<SessionEndHook>) -> Self {
        Self {
            live: Arc::default(),
            on_end,
        }
    }

    /// How many sessions are open now.
    #[cfg_attr(not(feature = "server-http"), allow(dead_code))]
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Count `transport` as the session `id` until it is dropped.
    pub(crate) fn track<T>(&self, id: Arc<str>, transport: T) -> Tracked<T> {
        self.live.fetch_add(1, Ordering::SeqCst);
        Tracked {
            inner: transport,
            end: SessionEnd {
                id,
                sessions: self.clone(),
                extra: None,
            },
        }
    }
}

/// Ends a session when dropped.
pub(crate) struct SessionEnd {
    id: Arc<str>,
    sessions: Sessions,
    /// More cleanup (e.g. forgetting the session in a session manager).
    pub(crate) extra: Option<Box<dyn FnOnce(Arc<str>) + Send>>,
}

impl Drop for SessionEnd {
    fn drop(&mut self) {
        self.sessions.live.fetch_sub(1, Ordering::SeqCst);
        tracing::debug!(session = %self.id, "MCP session ended");
        if let Some(f) = &self.sessions.on_end {
            f(&self.id);
        }
        if let Some(extra) = self.extra.take() {
            extra(Arc::clone(&self.id));
        }
    }
}

/// A session's transport: counts the session while it lives.
pub(crate) struct Tracked<T> {
    pub(crate) inner: T,
    /// Ends the session when the transport is dropped.
    #[cfg_attr(not(feature = "server-http"), allow(dead_code))]
    pub(crate) end: SessionEnd,
}

impl<T: Transport<RoleServer>> Transport<RoleServer> for Tracked<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        self.inner.receive()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}
