//! Retention: finished runs older than `server.retention.runs_days` and threads idle for
//! `server.retention.thread_ttl_days` are deleted by [`Platform::prune`], which the server
//! calls every minute (every process may; deletions are idempotent). A finished run deleted on
//! request (LangGraph's `DELETE /threads/{id}/runs/{run_id}`) goes the same way
//! ([`Platform::delete_finished_run`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agentkit_core::{Memory, Result, RunStatus};
use agentkit_runtime::{Expect, RunQuery};
use serde::Serialize;
use serde_json::Value;

use crate::platform::{Platform, RUN_META, THREAD_RUNS};
use crate::webhooks::DELIVERIES;

/// How long accepted webhook deliveries are remembered (replays older than this are not
/// recognised; agentkit-signed deliveries are refused after 5 minutes anyway).
pub const DELIVERY_TTL: Duration = Duration::from_secs(7 * 86_400);

/// How often the server prunes.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What to keep, and for how long (unset: forever).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Delete finished (succeeded, failed, cancelled) runs this long after they ended.
    pub runs: Option<Duration>,
    /// Delete threads not updated for this long (their records and conversations).
    pub threads: Option<Duration>,
}

impl Retention {
    /// Keep everything.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `server.retention` of an `agentkit.yaml` (days).
    #[must_use]
    pub fn from_days(runs_days: Option<u32>, thread_ttl_days: Option<u32>) -> Self {
        let days = |d: u32| Duration::from_secs(u64::from(d) * 86_400);
        Self {
            runs: runs_days.map(days),
            threads: thread_ttl_days.map(days),
        }
    }

    /// Delete finished runs `age` after they ended.
    #[must_use]
    pub fn with_runs(mut self, age: Duration) -> Self {
        self.runs = Some(age);
        self
    }

    /// Delete threads idle for `ttl`.
    #[must_use]
    pub fn with_threads(mut self, ttl: Duration) -> Self {
        self.threads = Some(ttl);
        self
    }
}

/// What one [`Platform::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PruneReport {
    /// Finished runs (with their journals and signals).
    pub runs: usize,
    /// Links from threads to those runs.
    pub thread_runs: usize,
    /// Idle threads and threads whose own time to live ended (records and conversations).
    pub threads: usize,
    /// Remembered webhook deliveries older than [`DELIVERY_TTL`].
    pub deliveries: usize,
    /// Idempotency keys of gateway calls whose window has passed
    /// (`gateway.idempotency_window_ms`).
    pub idempotency_keys: usize,
}

fn before(now: i64, age: Duration) -> i64 {
    now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

const PAGE: usize = 500;

impl Platform {
    /// The retention this server applies.
    #[must_use]
    pub fn retention(&self) -> Retention {
        *agentkit_core::sync::read(&self.ops.retention)
    }

    pub(crate) fn set_retention(&self, r: Retention) {
        *agentkit_core::sync::write(&self.ops.retention) = r;
    }

    /// Apply the retention as of `now` (ms since epoch): delete finished runs that ended
    /// before `now - runs` (and their thread links), threads not updated since
    /// `now - threads` whose last run is finished, webhook deliveries older than
    /// [`DELIVERY_TTL`], and gateway idempotency keys whose window has passed.
    pub async fn prune(&self, now: i64) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let retention = self.retention();
        if let Some(age) = retention.runs {
            self.prune_runs(before(now, age), &mut report).await?;
        }
        if let Some(ttl) = retention.threads {
            self.prune_threads(before(now, ttl), &mut report).await?;
        }
        self.prune_expired_threads(now, &mut report).await?;
        report.deliveries = self
            .prune_docs(DELIVERIES, before(now, DELIVERY_TTL), |v| {
                v.get("at").and_then(Value::as_i64)
            })
            .await?;
        report.idempotency_keys = self
            .prune_docs(crate::gatewayops::idempotency::COLLECTION, now, |v| {
                v.get("expires_at").and_then(Value::as_i64)
            })
            .await?;
        Ok(report)
    }

    async fn prune_runs(&self, cutoff: i64, report: &mut PruneReport) -> Result<()> {
        let store = self.runtime.store();
        // The threads of the runs about to go (a run ends after it is created, so every run
        // that ended before the cutoff was created before it).
        let mut threads: HashMap<String, String> = HashMap::new();
        let finished = [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ];
        let mut offset = 0;
        loop {
            let mut q = RunQuery::new()
                .with_created(None, Some(cutoff))
                .with_page(PAGE, offset);
            for s in finished {
                q = q.with_status(s);
            }
            let page = store.search_runs(&q).await?;
            for r in &page {
                if let Some(t) = r.input.get("thread").and_then(Value::as_str) {
                    threads.insert(r.id.clone(), t.to_owned());
                }
            }
            offset += page.len();
            if page.len() < PAGE {
                break;
            }
        }
        let mut unlinked = HashSet::new();
        loop {
            let deleted = store.delete_finished_runs(cutoff, PAGE).await?;
            report.runs += deleted.len();
            for id in &deleted {
                store.doc_delete(RUN_META, id, Expect::Any).await?;
                match threads.get(id) {
                    Some(t) => {
                        if self.unlink_thread_run(t, id).await? {
                            report.thread_runs += 1;
                        }
                    }
                    // Finished after the search (a race): found by a scan below.
                    None => {
                        unlinked.insert(id.clone());
                    }
                }
            }
            if deleted.len() < PAGE {
                break;
            }
        }
        if !unlinked.is_empty() {
            report.thread_runs += self
                .prune_docs(THREAD_RUNS, i64::MAX, |v| {
                    v.get("run_id")
                        .and_then(Value::as_str)
                        .filter(|r| unlinked.contains(*r))
                        .map(|_| 0)
                })
                .await?;
        }
        Ok(())
    }

    /// Delete finished (succeeded, failed or cancelled) run `run` the way retention deletes
    /// runs: its thread's link to it and its LangGraph facts ([`RUN_META`]), then its record,
    /// journal and signals. Whether it was deleted (`false`: it is gone already, or has not
    /// finished; a run that has not finished keeps its link and facts).
    ///
    /// The record goes last, so a deletion cut short (a crash, a store error) leaves the run
    /// findable and the same request again finishes it; the other way round, a retry would
    /// find no run and the link and facts would stay behind.
    pub async fn delete_finished_run(&self, run: &agentkit_runtime::RunRecord) -> Result<bool> {
        if !run.status.is_terminal() {
            return Ok(false);
        }
        let store = self.runtime.store();
        if let Some(t) = run.input.get("thread").and_then(Value::as_str) {
            self.unlink_thread_run(t, &run.id).await?;
        }
        store.doc_delete(RUN_META, &run.id, Expect::Any).await?;
        store.delete_finished_run(&run.id).await
    }

    /// Remove deleted run `run_id` from thread `thread`: from its run index (whether it was
    /// there is the answer) and, when it is the thread's last run, from its record, which
    /// would otherwise take the missing run for one starting and refuse new runs for a while.
    async fn unlink_thread_run(&self, thread: &str, run_id: &str) -> Result<bool> {
        let linked = self
            .runtime
            .store()
            .doc_delete(THREAD_RUNS, &format!("{thread}/{run_id}"), Expect::Any)
            .await?;
        let is_last = |t: &crate::threads::Thread| t.last_run.as_deref() == Some(run_id);
        if self
            .threads
            .find(thread)
            .await?
            .is_some_and(|t| is_last(&t))
        {
            let cleared = self
                .threads
                .update(thread, |t| {
                    if is_last(t) {
                        t.last_run = None;
                    }
                    Ok(())
                })
                .await;
            match cleared {
                // Deleted meanwhile: nothing to clear.
                Err(e) if e.is_not_found() => {}
                other => {
                    other?;
                }
            }
        }
        Ok(linked)
    }

    async fn prune_threads(&self, cutoff: i64, report: &mut PruneReport) -> Result<()> {
        let store = self.runtime.store();
        let mut pages = crate::pages::DocPages::new(&**store, crate::threads::COLLECTION, "");
        while let Some(page) = pages.next().await? {
            for doc in &page {
                let updated = doc.value.get("updated_at").and_then(Value::as_i64);
                if updated.is_none_or(|u| u >= cutoff) {
                    continue;
                }
                self.delete_idle_thread(doc, report).await?;
            }
        }
        Ok(())
    }

    /// Delete the threads whose own time to live (`ttl` when created or patched) ended by
    /// `now` and whose last run has ended, reading only the due entries of the expiry index.
    async fn prune_expired_threads(&self, now: i64, report: &mut PruneReport) -> Result<()> {
        let store = self.runtime.store();
        let mut pages = crate::pages::DocPages::new(&**store, crate::threads::EXPIRY, "");
        while let Some(page) = pages.next().await? {
            for entry in page {
                let at = entry.value.get("expires_at").and_then(Value::as_i64);
                if at.is_some_and(|at| at > now) {
                    // Entries are in expiry order: nothing after this one is due.
                    return Ok(());
                }
                let id = entry.value.get("thread_id").and_then(Value::as_str);
                let thread = match id {
                    Some(id) => store.doc_get(crate::threads::COLLECTION, id).await?,
                    None => None,
                };
                // The thread this entry is for, still expiring at its time: else the entry is
                // stale (the thread is gone, or its time to live moved) and goes.
                let due = thread.filter(|d| {
                    at.is_some() && d.value.get("expires_at").and_then(Value::as_i64) == at
                });
                // A run going on it, or changed since it was read (a run started, its ttl
                // moved): the entry stays and the next sweep looks again.
                if let Some(doc) = due
                    && !self.delete_idle_thread(&doc, report).await?
                {
                    continue;
                }
                store
                    .doc_delete(crate::threads::EXPIRY, &entry.id, Expect::Any)
                    .await?;
            }
        }
        Ok(())
    }

    /// Delete thread record `doc` with its conversation and its runs' index, unless its last
    /// run has not ended or the record changed since it was read (only that revision is
    /// deleted); counted in `report`. Whether it was deleted.
    async fn delete_idle_thread(
        &self,
        doc: &agentkit_runtime::Doc,
        report: &mut PruneReport,
    ) -> Result<bool> {
        if self.thread_busy(doc).await? {
            return Ok(false);
        }
        let id = &doc.id;
        if !self
            .runtime
            .store()
            .doc_delete(
                crate::threads::COLLECTION,
                id,
                Expect::Revision(doc.revision),
            )
            .await?
        {
            return Ok(false);
        }
        self.threads.memory().clear(id).await?;
        report.threads += 1;
        report.thread_runs += self.prune_prefix(THREAD_RUNS, &format!("{id}/")).await?;
        Ok(true)
    }

    /// Whether the last run of thread record `doc` has not ended yet.
    async fn thread_busy(&self, doc: &agentkit_runtime::Doc) -> Result<bool> {
        let Some(last) = doc.value.get("last_run").and_then(Value::as_str) else {
            return Ok(false);
        };
        Ok(self
            .runtime
            .store()
            .get_run(last)
            .await?
            .is_some_and(|r| !r.status.is_terminal()))
    }

    /// Delete every document of `collection` under `prefix`.
    async fn prune_prefix(&self, collection: &str, prefix: &str) -> Result<usize> {
        let store = self.runtime.store();
        let mut n = 0;
        loop {
            let page = store.doc_list(collection, prefix, None, PAGE).await?;
            for d in &page {
                if store.doc_delete(collection, &d.id, Expect::Any).await? {
                    n += 1;
                }
            }
            if page.len() < PAGE {
                return Ok(n);
            }
        }
    }

    /// Delete the documents of `collection` whose `time` is before `cutoff`.
    async fn prune_docs(
        &self,
        collection: &str,
        cutoff: i64,
        time: impl Fn(&Value) -> Option<i64>,
    ) -> Result<usize> {
        let store = self.runtime.store();
        let mut n = 0;
        let mut pages = crate::pages::DocPages::new(&**store, collection, "");
        while let Some(page) = pages.next().await? {
            for d in &page {
                if time(&d.value).is_some_and(|t| t < cutoff)
                    && store.doc_delete(collection, &d.id, Expect::Any).await?
                {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
