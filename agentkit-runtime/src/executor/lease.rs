//! This node's identity, run leases and the heartbeat that renews them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Runtime;
use crate::sync::lock;

impl Runtime {
    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub(super) fn lease(&self) -> Duration {
        self.inner.lease
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
                let ids: Vec<String> = lock(&this.inner.inflight).keys().cloned().collect();
                if ids.is_empty() {
                    continue;
                }
                if let Err(e) = this
                    .inner
                    .store
                    .renew_leases(this.node_id(), &ids, this.lease_until())
                    .await
                {
                    tracing::warn!(error = %e, "renewing run leases failed");
                }
            }
        });
    }
}
