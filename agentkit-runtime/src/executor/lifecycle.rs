//! A run's life: start, run to completion, wait, cancel, pause, resume and signal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agentkit_core::{Error, Result, RunStatus, StartOptions};
use serde_json::Value;
use tokio::sync::oneshot;

use super::dispatch::Hint;
use super::registry::Target;
use super::{Runtime, Watched};
use crate::model::{Created, NewRun, RunRecord, RunUpdate};
use crate::sync::lock;
use crate::workflow::decode_approval;

/// How often a wait re-reads a run another process executes (or nobody does yet).
const OTHERS_POLL: Duration = Duration::from_millis(250);
/// How often a wait re-reads a run this process executes (a safety net: the execution wakes
/// its waiters).
const EXECUTING_POLL: Duration = Duration::from_secs(2);

impl Runtime {
    /// Start a run and return its id at once. The target must be registered and the input
    /// must match it; otherwise nothing is stored. With an idempotency key that was used
    /// before, the earlier run's id is returned and nothing new executes.
    pub async fn start_run(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<String> {
        let (t, run) = self.prepare_run(target, input, options)?;
        let created = self.create_and_dispatch(&t, run, None).await?;
        Ok(created.run().id.clone())
    }

    /// Check a new run before anything is stored: the target is registered, the input matches
    /// it, and the runtime still accepts runs.
    pub(super) fn prepare_run(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<(Arc<Target>, NewRun)> {
        let t = self
            .target(target)
            .ok_or_else(|| self.unknown_target(target))?;
        t.validate(&input)?;
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                what: "the runtime".into(),
                message: "it is shutting down and accepts no new runs; start the run on another \
                          node or after the restart"
                    .into(),
            });
        }
        let mut run =
            NewRun::new(target, input).with_version(options.version.unwrap_or(t.options.version));
        if let Some(key) = options.idempotency_key {
            run = run.with_idempotency_key(key);
        }
        if let Some(id) = options.run_id {
            run = run.with_id(id);
        }
        if options.held {
            run = run.with_wake_at(crate::model::HELD);
        }
        Ok((t, run))
    }

    /// Store a new run and dispatch it. When the target has a free concurrency slot, the run
    /// is stored already claimed by this node (one store round trip instead of two).
    /// `waiter` gets the finished record if this execution finishes it.
    pub(super) async fn create_and_dispatch(
        &self,
        t: &Target,
        mut run: NewRun,
        waiter: Option<oneshot::Sender<RunRecord>>,
    ) -> Result<Created> {
        // Counted as in-flight work, so a concurrent `shutdown` waits for the run stored here
        // to be dispatched (executed, or released if the runtime is stopping).
        let _in_flight = self.inner.tasks.token();
        if run.wake_at.is_some() {
            // Parked: stored queued, dispatched when it is due or released.
            let created = self.inner.store.create_run(run).await?;
            if let Created::New(run) = &created
                && let Some(w) = waiter
            {
                lock(&self.inner.waiters).insert(run.id.clone(), w);
            }
            return Ok(created);
        }
        let permit = Arc::clone(&t.permits).try_acquire_owned().ok();
        if permit.is_some() {
            run = run.with_claim(self.node_id(), self.lease_until());
        }
        let created = self.inner.store.create_run(run).await?;
        if let Created::New(run) = &created {
            if let Some(w) = waiter {
                lock(&self.inner.waiters).insert(run.id.clone(), w);
            }
            let hint = match permit {
                Some(p) => Hint::Owned(run.clone(), p),
                None => Hint::Known(run.clone()),
            };
            self.dispatch_run(run.id.clone(), hint);
        }
        Ok(created)
    }

    /// Start a run and wait until it finishes.
    pub async fn run_sync(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<RunRecord> {
        self.run_until(
            target,
            input,
            options,
            &[
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Cancelled,
            ],
        )
        .await
    }

    /// Start a run and wait until it has one of `statuses` (which should include the
    /// terminal ones). When this process executes the run to its end, the record comes
    /// straight from the final update, without reading the store again.
    pub async fn run_until(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
        statuses: &[RunStatus],
    ) -> Result<RunRecord> {
        let (t, run) = self.prepare_run(target, input, options)?;
        let (tx, rx) = oneshot::channel();
        let created = self.create_and_dispatch(&t, run, Some(tx)).await?;
        if created.is_new() {
            // Finished by this execution: its record comes straight from the final update.
            // Otherwise (it waits for a signal, was cancelled, runs on another node...) the
            // sender is dropped and the store tells.
            if let Ok(run) = rx.await
                && statuses.contains(&run.status)
            {
                return Ok(run);
            }
        }
        self.wait_for_status(&created.run().id, statuses).await
    }

    /// Start a run and return its record as stored (`queued`, or `running` when this node
    /// claimed it at once; an idempotent start returns the existing run).
    pub async fn start_run_record(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<RunRecord> {
        let (t, run) = self.prepare_run(target, input, options)?;
        let created = self.create_and_dispatch(&t, run, None).await?;
        Ok(created.into_run())
    }

    /// The stored run.
    pub async fn get(&self, run_id: &str) -> Result<RunRecord> {
        self.inner
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| Error::not_found("run", run_id, "check the run id"))
    }

    /// Wait until the run has one of `statuses`.
    ///
    /// Changes made through this runtime wake the wait at once; changes made by another
    /// process on the same store are seen within 250 ms (within 2 s while this process
    /// executes the run, whose execution ends and wakes the wait when another process
    /// cancels it). A cancel or pause made elsewhere wakes it at once when the store announces
    /// them ([`LeaseStore::stop_notices`](crate::LeaseStore::stop_notices): PostgreSQL).
    ///
    /// A wait for a run this process is executing, for statuses other than `running`, reads
    /// nothing until the execution ends (it leaves its final record to its waiters).
    pub async fn wait_for_status(&self, run_id: &str, statuses: &[RunStatus]) -> Result<RunRecord> {
        self.follow_stop_notices();
        let watch = Watch::new(self, run_id);
        let mut known: Option<RunRecord> = None;
        let mut first = true;
        loop {
            // Registered before the read, so a change between the read and the wait wakes it.
            let changed = watch.notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if std::mem::take(&mut first)
                && known.is_none()
                && !statuses.contains(&RunStatus::Running)
                && lock(&self.inner.inflight).contains_key(run_id)
            {
                // Executing here: it stays `running` until the execution ends, which wakes
                // this wait (registered above) with its final record, or changes it elsewhere
                // (another process), which the safety poll reads.
                if tokio::time::timeout(EXECUTING_POLL, changed).await.is_ok() {
                    known = watch.last();
                }
                continue;
            }
            let run = match known.take() {
                Some(r) => r,
                None => self.get(run_id).await?,
            };
            if statuses.contains(&run.status) {
                return Ok(run);
            }
            // Also poll, for changes made by other handles on the same store (another
            // process, another runtime). A run this process executes changes here: its
            // execution wakes the waiters whenever it ends (finished, waiting, failed,
            // stopped), and another node's cancel ends it at its next step, so a
            // slow safety read is enough. With 10,000 runs awaited at once, polling each every
            // 250 ms was 40,000 store reads a second.
            let every = if lock(&self.inner.inflight).contains_key(run_id) {
                EXECUTING_POLL
            } else {
                OTHERS_POLL
            };
            if tokio::time::timeout(every, changed).await.is_ok() {
                // Woken: an execution of this process that finished the run left its final
                // record, so there is nothing to read back.
                known = watch.last();
            }
        }
    }

    /// Wait until the run has finished (succeeded, failed or cancelled).
    pub async fn wait(&self, run_id: &str) -> Result<RunRecord> {
        self.wait_for_status(
            run_id,
            &[
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Cancelled,
            ],
        )
        .await
    }

    /// Cancel a run: it is stored as cancelled at once and, if it is executing, its context is
    /// cancelled so it stops calling models and tools (on another node too, at once when the
    /// store announces cancels, as PostgreSQL does; otherwise at that execution's next step). Cancelling a finished run is an error.
    pub async fn cancel(&self, run_id: &str) -> Result<()> {
        self.cancel_with_reason(run_id, "cancelled by request")
            .await
    }

    /// Cancel a run and record `reason` as its error (who cancelled it and why).
    pub async fn cancel_with_reason(&self, run_id: &str, reason: &str) -> Result<()> {
        let live = [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::WaitingInput,
            RunStatus::WaitingApproval,
            RunStatus::Paused,
        ];
        let update = RunUpdate::new(RunStatus::Cancelled).with_error(reason);
        self.stop_run(run_id, &live, update, "cancelled").await
    }

    /// Pause a run: it is stored as `paused` and, if it is executing, its context is cancelled
    /// so it stops between steps. Completed steps stay journaled; [`resume`](Self::resume)
    /// re-executes it and replays them.
    pub async fn pause(&self, run_id: &str) -> Result<()> {
        let live = [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::WaitingInput,
            RunStatus::WaitingApproval,
        ];
        self.stop_run(run_id, &live, RunUpdate::new(RunStatus::Paused), "paused")
            .await
    }

    /// Store `update` if the run's status is one of `from`, then cancel its execution on this
    /// node (if any) so it stops between steps. `verb` names the change in the error.
    pub(super) async fn stop_run(
        &self,
        run_id: &str,
        from: &[RunStatus],
        update: RunUpdate,
        verb: &str,
    ) -> Result<()> {
        let Some(stopped) = self.inner.store.transition(run_id, from, update).await? else {
            let run = self.get(run_id).await?;
            return Err(Error::invalid_state(
                format!("run {run_id}"),
                format!("cannot be {verb}: it is already {}", run.status),
            ));
        };
        if stopped.status.is_terminal() {
            self.observe_end(Some(&stopped));
        }
        let token = lock(&self.inner.inflight).get(run_id).cloned();
        if let Some(t) = token {
            t.cancel();
        }
        self.notify(run_id);
        Ok(())
    }

    /// Release a held run (started with [`StartOptions::held`]): it becomes claimable and is
    /// dispatched. Whether it was released: `false` when the run is no longer queued
    /// (cancelled while it waited, or already released and claimed).
    pub async fn release(&self, run_id: &str) -> Result<bool> {
        let released = self
            .inner
            .store
            .transition(
                run_id,
                &[RunStatus::Queued],
                RunUpdate::new(RunStatus::Queued),
            )
            .await?
            .is_some();
        if released {
            self.dispatch(run_id.to_owned());
        }
        Ok(released)
    }

    /// Resume a paused run: it is queued again and re-executes from its journal.
    pub async fn resume(&self, run_id: &str) -> Result<()> {
        if self
            .inner
            .store
            .transition(
                run_id,
                &[RunStatus::Paused],
                RunUpdate::new(RunStatus::Queued),
            )
            .await?
            .is_none()
        {
            let run = self.get(run_id).await?;
            return Err(Error::invalid_state(
                format!("run {run_id}"),
                format!("cannot be resumed: it is {}, not paused", run.status),
            ));
        }
        self.dispatch(run_id.to_owned());
        Ok(())
    }

    /// Deliver a signal: it is stored (redacted), and a run waiting for signals is queued
    /// again and resumes from its journal. Works for a run that waited in a process that has
    /// since exited.
    pub async fn signal(&self, run_id: &str, name: &str, mut payload: Value) -> Result<()> {
        let run = self.get(run_id).await?;
        if run.status.is_terminal() {
            return Err(Error::invalid_state(
                format!("run {run_id}"),
                format!("cannot take signal `{name}`: it is already {}", run.status),
            ));
        }
        if crate::workflow::is_approval_signal(name) {
            // A malformed decision is refused here, before anything is stored.
            decode_approval(run_id, payload.clone())?;
        }
        self.inner.redactor.apply(&mut payload);
        self.inner.store.send_signal(run_id, name, payload).await?;
        let resumed = self
            .inner
            .store
            .transition(
                run_id,
                &[RunStatus::WaitingInput, RunStatus::WaitingApproval],
                RunUpdate::new(RunStatus::Queued),
            )
            .await?;
        if resumed.is_some() {
            self.dispatch(run_id.to_owned());
        }
        Ok(())
    }
}

/// A waiter's registration for the changes of one run (removed when the last waiter of the
/// run is dropped, also when its future is).
struct Watch<'a> {
    runtime: &'a Runtime,
    run_id: &'a str,
    notify: Arc<tokio::sync::Notify>,
}

impl<'a> Watch<'a> {
    fn new(runtime: &'a Runtime, run_id: &'a str) -> Self {
        let mut watchers = lock(&runtime.inner.watchers);
        let entry = watchers
            .entry(run_id.to_owned())
            .or_insert_with(|| Watched {
                notify: Arc::default(),
                count: 0,
                last: None,
            });
        entry.count += 1;
        let notify = Arc::clone(&entry.notify);
        drop(watchers);
        Self {
            runtime,
            run_id,
            notify,
        }
    }

    /// The record an execution of this process finished the run with, if one did: taken
    /// when this is the run's only waiter (nobody else reads it), else copied.
    fn last(&self) -> Option<RunRecord> {
        let mut watchers = lock(&self.runtime.inner.watchers);
        let w = watchers.get_mut(self.run_id)?;
        if w.count == 1 {
            w.last.take()
        } else {
            w.last.clone()
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut watchers = lock(&self.runtime.inner.watchers);
        if let Some(entry) = watchers.get_mut(self.run_id) {
            entry.count -= 1;
            if entry.count == 0 {
                watchers.remove(self.run_id);
            }
        }
    }
}
