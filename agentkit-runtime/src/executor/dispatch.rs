//! Dispatching runs: polling and claiming, driving one execution with its retries, and
//! shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agentkit_core::{Result, RunContext, RunStatus};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::journal::DurableJournal;
use crate::model::{RunRecord, RunUpdate};
use crate::sync::{lock, read};
use crate::workflow::WorkflowContext;
use tracing::Instrument;

use super::registry::Target;

/// The remote parent of a run's span: the span that dispatched it in this process (the
/// request that started or resumed it), else the `traceparent` a hosting server stored in the
/// run's input when it started the run (a run executed on another node or after a restart).
fn run_parent<'a>(run: &'a RunRecord, dispatched_by: Option<&'a str>) -> Option<&'a str> {
    dispatched_by.or_else(|| {
        run.input
            .get("traceparent")
            .and_then(serde_json::Value::as_str)
    })
}

/// The span of one execution of a run (`run {target}`): a root span, or the child of the
/// remote span `traceparent` (see [`run_parent`]). Its status, cost and tokens are recorded
/// when the run ends ([`Runtime::observe_end`]).
fn run_span(run: &RunRecord, traceparent: Option<&str>) -> tracing::Span {
    let workspace = run
        .input
        .get("principal")
        .and_then(|p| p.get("workspace"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let span = tracing::info_span!(
        parent: None,
        "run",
        otel.name = %format!("run {}", run.target),
        agentkit.run.id = %run.id,
        agentkit.run.target = %run.target,
        agentkit.agent.version = run.version,
        agentkit.run.attempt = run.attempts,
        agentkit.workspace = %workspace,
        agentkit.run.status = tracing::field::Empty,
        agentkit.cost_usd = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(tp) = run_parent(run, traceparent) {
        agentkit_core::trace::set_remote_parent(&span, tp);
    }
    span
}

/// What the dispatcher already knows about a run.
pub(super) enum Hint {
    /// Nothing: read it from the store.
    None,
    /// Its record (just created): no need to read it.
    Known(RunRecord),
    /// Claimed for this node by `claim_next`.
    Claimed(RunRecord),
    /// Created already claimed by this node, holding a concurrency permit of its target.
    Owned(RunRecord, OwnedSemaphorePermit),
}

/// What one execution ended with.
pub(super) enum Outcome {
    Done,
    Requeue,
}

impl Runtime {
    /// Poll the store every `interval` for runs this node can execute: queued runs (started
    /// by any node) and runs whose lease expired (their node died). Needed when several
    /// processes share a PostgreSQL store; stops at [`shutdown`](Self::shutdown).
    pub fn start_polling(&self, interval: Duration) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                if this.inner.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let targets: Vec<String> = read(&this.inner.targets).keys().cloned().collect();
                match this
                    .inner
                    .store
                    .claim_next(this.node_id(), &targets, this.lease_until(), 16)
                    .await
                {
                    Ok(runs) => {
                        for run in runs {
                            this.dispatch_run(run.id.clone(), Hint::Claimed(run));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "polling for runs failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = this.inner.polling.cancelled() => break,
                }
            }
        });
    }

    /// Stop claiming runs, wait up to `grace` for executing runs to finish, then cancel the
    /// rest and release them (stored as `queued` again, so the next start resumes them).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.tasks.close();
        // Stop polling at once; the heartbeat goes on until the runs are finished or released.
        self.inner.polling.cancel();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            self.inner.abort.cancel();
            self.inner.tasks.wait().await;
        }
        self.inner.background.cancel();
    }

    /// Run `run_id` changed in this process (an execution ended, or it was stopped): wake
    /// its waiters and the scheduler.
    pub(super) fn notify(&self, run_id: &str) {
        if let Some(w) = lock(&self.inner.watchers).get(run_id) {
            w.notify.notify_waiters();
        }
        self.inner.finished.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(super) fn dispatch(&self, run_id: String) {
        self.dispatch_run(run_id, Hint::None);
    }

    /// Hand the finished record to a `run_sync` waiting for it; with `None`, let the waiter
    /// fall back to reading the store.
    pub(super) fn settle(&self, run_id: &str, record: Option<RunRecord>) {
        let waiter = lock(&self.inner.waiters).remove(run_id);
        let Some(record) = record else {
            return;
        };
        // `wait_for_status` callers take it when `notify` wakes them; the record is copied
        // only when a `run_sync` waiter wants it too.
        let record = match lock(&self.inner.watchers).get_mut(run_id) {
            Some(w) if waiter.is_some() => {
                w.last = Some(record.clone());
                record
            }
            Some(w) => {
                w.last = Some(record);
                return;
            }
            None => record,
        };
        if let Some(w) = waiter {
            let _ = w.send(record);
        }
    }

    pub(super) fn dispatch_run(&self, run_id: String, hint: Hint) {
        if self.inner.stopping.load(Ordering::SeqCst) {
            if let Hint::Owned(run, _) | Hint::Claimed(run) = hint {
                // Stored claimed by this node but never started: release it for the next
                // process (tracked, so `shutdown` waits for the release).
                let this = self.clone();
                self.inner.tasks.spawn(async move {
                    let fence = run.owner.clone().unwrap_or_default();
                    let update = RunUpdate::new(RunStatus::Queued).with_owner_fence(fence);
                    if let Err(e) = this
                        .inner
                        .store
                        .transition(&run_id, &[RunStatus::Running], update)
                        .await
                    {
                        tracing::warn!(run_id = %run_id, error = %e, "releasing a run at shutdown failed; its lease will expire");
                    }
                    this.settle(&run_id, None);
                });
                return;
            }
            self.settle(&run_id, None);
            return;
        }
        self.start_heartbeat();
        // The run's span continues the trace of whoever dispatched it (the HTTP request that
        // started or resumed it), though it executes in a task of its own.
        let mut traceparent = agentkit_core::trace::current_traceparent();
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let mut hint = hint;
            loop {
                let outcome = this
                    .drive(
                        &run_id,
                        std::mem::replace(&mut hint, Hint::None),
                        traceparent.take(),
                    )
                    .await;
                this.notify(&run_id);
                match outcome {
                    Ok(Outcome::Requeue) => {
                        if this.inner.stopping.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    Ok(Outcome::Done) => break,
                    Err(e) => {
                        tracing::error!(run_id = %run_id, error = %e, "run execution failed in the store");
                        break;
                    }
                }
            }
            this.settle(&run_id, None);
        });
    }

    pub(super) async fn drive(
        &self,
        run_id: &str,
        hint: Hint,
        traceparent: Option<String>,
    ) -> Result<Outcome> {
        let token = {
            let mut m = lock(&self.inner.inflight);
            if m.contains_key(run_id) {
                lock(&self.inner.rerun).insert(run_id.to_owned());
                return Ok(Outcome::Done);
            }
            let t = self.inner.abort.child_token();
            m.insert(run_id.to_owned(), t.clone());
            t
        };
        let result = self.execute(run_id, hint, &token, traceparent).await;
        lock(&self.inner.inflight).remove(run_id);
        let again = lock(&self.inner.rerun).remove(run_id);
        match result {
            Ok(Outcome::Done) if again => Ok(Outcome::Requeue),
            other => other,
        }
    }

    pub(super) async fn execute(
        &self,
        run_id: &str,
        hint: Hint,
        token: &CancellationToken,
        traceparent: Option<String>,
    ) -> Result<Outcome> {
        let store = &self.inner.store;
        // `claimed`: the run is stored claimed by this node (`run` is that record, not a
        // copy of it: the record is only read until the claim is settled below).
        let (run, claimed, permit) = match hint {
            Hint::Owned(run, permit) => (run, true, Some(permit)),
            Hint::Claimed(run) => (run, true, None),
            Hint::Known(run) => (run, false, None),
            Hint::None => match store.get_run(run_id).await? {
                Some(run) => (run, false, None),
                None => return Ok(Outcome::Done),
            },
        };
        let Some(target) = self.target(&run.target) else {
            let err = self.unknown_target(&run.target).to_string();
            store
                .transition(
                    run_id,
                    &[RunStatus::Queued, RunStatus::Running],
                    RunUpdate::new(RunStatus::Failed).with_error(err),
                )
                .await?;
            return Ok(Outcome::Done);
        };
        let _permit = match permit {
            Some(p) => p,
            None => {
                let permits = Arc::clone(&target.permits);
                tokio::select! {
                    p = permits.acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return Ok(Outcome::Done),
                    },
                    () = token.cancelled() => return Ok(Outcome::Done),
                }
            }
        };
        if self.inner.stopping.load(Ordering::SeqCst) && self.inner.abort.is_cancelled() {
            if claimed {
                // Claimed but not started: release it for the next process.
                store
                    .transition(
                        run_id,
                        &[RunStatus::Running],
                        RunUpdate::new(RunStatus::Queued)
                            .with_owner_fence(run.owner.clone().unwrap_or_default()),
                    )
                    .await?;
            }
            return Ok(Outcome::Done);
        }
        let claimed = if claimed {
            Some(run)
        } else {
            match store
                .claim(run_id, self.node_id(), self.lease_until())
                .await?
            {
                Some(run) => Some(run),
                // Already claimed for this node: by polling's `claim_next` racing this dispatch
                // (e.g. `recover` requeued it and dispatched it, and the poller claimed it
                // first). That claim's dispatch found this execution in flight and left the run
                // to it (see `drive`), so it is ours to execute; the in-flight guard means no
                // other execution of it runs in this process. Without this the run stayed
                // `running`, unexecuted, until its lease expired.
                None => store.get_run(run_id).await?.filter(|r| {
                    r.status == RunStatus::Running && r.owner.as_deref() == Some(self.node_id())
                }),
            }
        };
        let Some(run) = claimed else {
            return Ok(Outcome::Done);
        };
        let span = run_span(&run, traceparent.as_deref());
        self.attempts(run_id, run, &target, token)
            .instrument(span)
            .await
    }

    /// Execute a claimed run, with its retries, inside the run's span.
    async fn attempts(
        &self,
        run_id: &str,
        mut run: RunRecord,
        target: &Target,
        token: &CancellationToken,
    ) -> Result<Outcome> {
        let store = &self.inner.store;
        let node = run
            .owner
            .clone()
            .unwrap_or_else(|| self.node_id().to_owned());
        let redactor = self.inner.redactor.clone();
        let prices = Arc::clone(&self.inner.prices);
        // Journal entries are only written while a run executes, so a first attempt has none.
        let journal = if run.attempts <= 1 {
            DurableJournal::empty(Arc::clone(store), run_id, redactor, Arc::clone(&prices))
        } else {
            DurableJournal::load(Arc::clone(store), run_id, redactor, Arc::clone(&prices)).await?
        };
        // Other processes may pause or cancel it (and another node resume it) meanwhile.
        let journal = Arc::new(if store.is_shared() {
            journal.with_owner(&node)
        } else {
            journal
        });
        let policy = &target.options.retry;
        let mut waits = policy.backoffs();
        let mut attempt = 1u32;
        loop {
            let mut ctx = RunContext::new()
                .with_run_id(run_id)
                .with_cancellation(token.clone())
                .with_journal(journal.clone())
                .with_prices(Arc::clone(&prices));
            if let Some(sink) = &self.inner.events {
                ctx = ctx.with_events(Arc::clone(sink));
            }
            if let Some(t) = target.options.timeout {
                ctx = ctx.with_timeout(t);
            }
            if let Some(b) = target.options.budget {
                ctx = ctx.with_budget(b);
            }
            if let Some(g) = &self.inner.spend_guard {
                ctx = ctx.with_spend_guard(Arc::clone(g));
            }
            // Who started the run (a hosting server records it in the input), for governance.
            if let Some(p) = run
                .input
                .get("principal")
                .and_then(|p| <agentkit_core::Principal as serde::Deserialize>::deserialize(p).ok())
            {
                ctx = ctx.with_principal(p);
            }
            let wctx = WorkflowContext::new(ctx.clone(), journal.clone(), Arc::clone(store), &node);
            // The last attempt the policy allows takes the input itself, not a copy.
            let input = if attempt < policy.max_attempts {
                run.input.clone()
            } else {
                std::mem::take(&mut run.input)
            };
            let result = target
                .execute(&wctx, input, run.version, Some(&self.inner.live))
                .await;
            let totals = ctx.totals();
            let err = match result {
                Ok(output) => {
                    let done = store
                        .transition(
                            run_id,
                            &[RunStatus::Running],
                            RunUpdate::new(RunStatus::Succeeded)
                                .with_owner_fence(&node)
                                .with_output(output)
                                .with_usage(totals.usage, totals.cost_usd),
                        )
                        .await?;
                    self.observe_end(done.as_ref());
                    self.settle(run_id, done);
                    return Ok(Outcome::Done);
                }
                Err(e) => e,
            };
            if let Some(wake_at) = wctx.parked_until() {
                // A long durable sleep: the run is stored queued until `wake_at`; free the task
                // and its concurrency slot, and come back then.
                self.wake_later(run_id.to_owned(), wake_at);
                return Ok(Outcome::Done);
            }
            let waiting = wctx.waiting_on();
            if !waiting.is_empty() {
                if let Some((status, stored)) = wctx.stored_wait()
                    && stored != waiting
                {
                    // Tool calls that waited beside the first added signals: store them all,
                    // so recovery knows every signal that resumes the run.
                    store
                        .transition(
                            run_id,
                            &[status],
                            RunUpdate::new(status)
                                .with_owner_fence(&node)
                                .with_waiting_for(waiting.iter().cloned()),
                        )
                        .await?;
                }
                // A signal may have arrived between our check and the status change.
                if self.any_signal_queued(run_id, &waiting).await?
                    && store
                        .transition(
                            run_id,
                            &[RunStatus::WaitingInput, RunStatus::WaitingApproval],
                            RunUpdate::new(RunStatus::Queued),
                        )
                        .await?
                        .is_some()
                {
                    return Ok(Outcome::Requeue);
                }
                return Ok(Outcome::Done);
            }
            if token.is_cancelled() {
                if self.inner.abort.is_cancelled() {
                    // Shutdown: release the run for the next process.
                    store
                        .transition(
                            run_id,
                            &[RunStatus::Running],
                            RunUpdate::new(RunStatus::Queued).with_owner_fence(&node),
                        )
                        .await?;
                }
                return Ok(Outcome::Done);
            }
            if attempt < policy.max_attempts && (policy.retry_if)(&err) {
                let wait = waits.next().unwrap_or(policy.max_backoff);
                tracing::warn!(run_id, attempt, error = %err, ?wait, "run attempt failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = token.cancelled() => continue,
                }
                attempt += 1;
                if store
                    .transition(
                        run_id,
                        &[RunStatus::Running],
                        RunUpdate::new(RunStatus::Running)
                            .with_attempt()
                            .with_owner_fence(&node),
                    )
                    .await?
                    .is_none()
                {
                    return Ok(Outcome::Done);
                }
                continue;
            }
            let done = store
                .transition(
                    run_id,
                    &[RunStatus::Running],
                    RunUpdate::new(RunStatus::Failed)
                        .with_owner_fence(&node)
                        .with_error(err.to_string())
                        .with_usage(totals.usage, totals.cost_usd),
                )
                .await?;
            self.observe_end(done.as_ref());
            self.settle(run_id, done);
            return Ok(Outcome::Done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewRun;

    #[test]
    fn a_runs_parent_is_its_dispatcher_else_the_stored_traceparent() {
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let resumed = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
        let with = RunRecord::new(NewRun::new(
            "a",
            serde_json::json!({"message": "hi", "traceparent": stored}),
        ));
        let without = RunRecord::new(NewRun::new("a", serde_json::json!({"message": "hi"})));
        assert_eq!(run_parent(&with, None), Some(stored));
        assert_eq!(run_parent(&with, Some(resumed)), Some(resumed));
        assert_eq!(run_parent(&without, None), None);
    }
}
