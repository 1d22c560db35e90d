//! Resuming what a previous process left: orphaned, queued, parked and waiting runs.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Result, RunStatus};

use super::Runtime;
use crate::model::RunUpdate;

impl Runtime {
    /// Resume what a previous process left: runs `queued` or `running` (orphaned by a crash)
    /// re-execute, replaying their journals; runs parked by a durable sleep re-execute when
    /// their wake-up time comes. A run waiting for a signal (`waiting_input`,
    /// `waiting_approval`) is left as it is, not executed, unless a signal it waits for
    /// ([`RunRecord::waiting_for`](crate::RunRecord::waiting_for)) was queued while no process
    /// held it: then it re-executes and takes it. (A waiting run stored before agentkit
    /// recorded what it waits for re-executes, replays its journal and waits again.) Signals
    /// delivered later resume it through [`signal`](Self::signal), as always.
    /// Returns how many runs were dispatched (parked runs included). Call once after registering targets.
    ///
    /// On a store of one process (memory, SQLite) every `running` run is orphaned and is
    /// resumed at once. On a shared store (PostgreSQL) a `running` run is resumed only once
    /// its lease has expired; use [`start_polling`](Self::start_polling) to pick those up.
    pub async fn recover(&self) -> Result<usize> {
        if !self.inner.store.is_shared() {
            // One process per store: whatever is `running` was left by a dead process.
            for run in self
                .inner
                .store
                .list_runs(&[RunStatus::Running], usize::MAX >> 1)
                .await?
            {
                self.inner
                    .store
                    .transition(
                        &run.id,
                        &[RunStatus::Running],
                        RunUpdate::new(RunStatus::Queued),
                    )
                    .await?;
            }
        }
        let runs = self
            .inner
            .store
            .list_runs(
                &[
                    RunStatus::Running,
                    RunStatus::Queued,
                    RunStatus::WaitingInput,
                    RunStatus::WaitingApproval,
                ],
                usize::MAX >> 1,
            )
            .await?;
        let mut n = 0;
        let now = crate::model::now_ms();
        for run in runs {
            if run.status == RunStatus::Queued && run.wake_at == Some(crate::model::HELD) {
                // Held until its host releases it (`Runtime::release`).
                continue;
            }
            if run.status == RunStatus::Queued
                && let Some(wake_at) = run.wake_at.filter(|w| *w > now)
            {
                // Parked by a durable sleep: resumed when it is due.
                self.wake_later(run.id, wake_at);
                n += 1;
                continue;
            }
            if matches!(
                run.status,
                RunStatus::WaitingInput | RunStatus::WaitingApproval
            ) {
                if let Some(names) = run.waiting_for.as_ref().filter(|n| !n.is_empty())
                    && !self.any_signal_queued(&run.id, names).await?
                {
                    // It waits for signals none of which is queued: nothing to do until one
                    // is delivered (`Runtime::signal` resumes it then, on any node).
                    continue;
                }
                // A signal it waits for was delivered while no process held it, or the run
                // started waiting before agentkit stored what it waits for: re-execute it,
                // replaying its journal (it takes the signal, or waits again).
                let requeued = self
                    .inner
                    .store
                    .transition(&run.id, &[run.status], RunUpdate::new(RunStatus::Queued))
                    .await?;
                if requeued.is_none() {
                    continue;
                }
            }
            self.dispatch(run.id);
            n += 1;
        }
        Ok(n)
    }

    /// Whether a signal named one of `names` is queued (undelivered) for the run.
    pub(super) async fn any_signal_queued(&self, run_id: &str, names: &[String]) -> Result<bool> {
        self.inner.store.has_any_signal(run_id, names).await
    }

    /// Dispatch a run parked by a durable sleep once its wake-up time has come (unless it
    /// changed meanwhile: cancelled, paused, claimed by another node).
    pub(super) fn wake_later(&self, run_id: String, wake_at: i64) {
        let inner = Arc::downgrade(&self.inner);
        let stop = self.inner.polling.clone();
        tokio::spawn(async move {
            let mut wake_at = wake_at;
            loop {
                let left = u64::try_from(wake_at.saturating_sub(crate::model::now_ms()))
                    .unwrap_or(0)
                    .saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(left)) => {}
                    () = stop.cancelled() => return,
                }
                let Some(inner) = inner.upgrade() else { return };
                let this = Runtime { inner };
                match this.inner.store.get_run(&run_id).await {
                    Ok(Some(run)) if run.status == RunStatus::Queued => match run.wake_at {
                        Some(w) if w > crate::model::now_ms() => wake_at = w,
                        _ => {
                            this.dispatch(run_id);
                            return;
                        }
                    },
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(run_id = %run_id, error = %e, "waking a sleeping run failed; polling or recovery will pick it up");
                        return;
                    }
                }
            }
        });
    }
}
