//! This node's identity, run leases and the heartbeat that renews them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Runtime;

impl Runtime {
    /// Name this runtime node (default: a fresh UUID). Leases are held in this name.
    #[must_use]
    pub fn with_node_id(self, id: impl Into<String>) -> Self {
        if let Ok(mut n) = self.inner.node_id.write() {
            *n = id.into();
        }
        self
    }

    /// How long a claimed run stays claimed without a heartbeat (default 30 s). The heartbeat
    /// renews leases every third of this; a node that dies loses its runs after at most this.
    #[must_use]
    pub fn with_lease(self, lease: Duration) -> Self {
        if let Ok(mut l) = self.inner.lease.write() {
            *l = lease.max(Duration::from_millis(30));
        }
        self
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> String {
        self.inner
            .node_id
            .read()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    pub(super) fn lease(&self) -> Duration {
        self.inner
            .lease
            .read()
            .map(|l| *l)
            .unwrap_or(Duration::from_secs(30))
    }

    pub(super) fn lease_until(&self) -> i64 {
        let ms = i64::try_from(self.lease().as_millis()).unwrap_or(i64::MAX);
        crate::model::now_ms().saturating_add(ms)
    }

    pub(super) fn start_heartbeat(&self) {
        if self.inner.heartbeat.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let stop = self.inner.background.clone();
        let every = self.lease() / 3;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => break,
                }
                let Some(inner) = inner.upgrade() else { break };
                let this = Runtime { inner };
                let ids: Vec<String> = this
                    .inner
                    .inflight
                    .lock()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                if ids.is_empty() {
                    continue;
                }
                if let Err(e) = this
                    .inner
                    .store
                    .renew_leases(&this.node_id(), &ids, this.lease_until())
                    .await
                {
                    tracing::warn!(error = %e, "renewing run leases failed");
                }
            }
        });
    }
}
