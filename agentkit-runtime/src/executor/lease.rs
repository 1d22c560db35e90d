//! This node's identity, run leases and the heartbeat that renews them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agentkit_core::RunStatus;

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

    /// Follow the store's announcements of cancelled and paused runs (once; only when the
    /// store has them): an execution of this node whose run was stopped by another process
    /// is cancelled at once, and the run's waiters wake.
    pub(super) fn follow_stop_notices(&self) {
        if !self.inner.notices || self.inner.notices_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(mut notices) = self.inner.store.stop_notices() else {
            return;
        };
        let inner = Arc::downgrade(&self.inner);
        let stop = self.inner.background.clone();
        tokio::spawn(async move {
            loop {
                let notice = tokio::select! {
                    n = notices.recv() => n,
                    () = stop.cancelled() => break,
                };
                let Some(inner) = inner.upgrade() else { break };
                let this = Runtime { inner };
                match notice {
                    Ok(run_id) => this.stopped_elsewhere(&run_id).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Some were missed: every run executed or awaited here may be one.
                        let mut ids: Vec<String> =
                            lock(&this.inner.inflight).keys().cloned().collect();
                        ids.extend(lock(&this.inner.watchers).keys().cloned());
                        ids.sort();
                        ids.dedup();
                        for id in ids {
                            this.stopped_elsewhere(&id).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Run `run_id` was cancelled or paused, maybe by another process: if this node executes
    /// it and the store confirms it is no longer this node's to run, cancel the execution
    /// (the notice may be late: the run may have been resumed and claimed again since); wake
    /// its waiters either way.
    async fn stopped_elsewhere(&self, run_id: &str) {
        let token = lock(&self.inner.inflight).get(run_id).cloned();
        if let Some(token) = token {
            match self.inner.store.get_run(run_id).await {
                Ok(run) => {
                    let ours = run.is_some_and(|r| {
                        !matches!(r.status, RunStatus::Cancelled | RunStatus::Paused)
                            && r.owner.as_deref() == Some(self.node_id())
                    });
                    if !ours {
                        token.cancel();
                    }
                }
                Err(e) => {
                    tracing::warn!(run_id = %run_id, error = %e, "reading a run announced as stopped failed; its execution stops at its next step");
                }
            }
        }
        self.notify(run_id);
    }

    pub(super) fn start_heartbeat(&self) {
        self.follow_stop_notices();
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
