//! The [`Store`] trait (the union of five role traits) and its backends.

use agentkit_core::{Result, RunStatus};
use async_trait::async_trait;
use serde_json::Value;

use crate::model::{
    Created, Doc, DocWrite, Expect, JournalEntry, NewRun, RunQuery, RunRecord, RunUpdate,
};

mod memory;
pub use memory::MemoryStore;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod migrate;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;

/// Where runs, their journals, signals, leases, key-value entries and documents live: the
/// union of the role traits [`RunStore`], [`JournalStore`], [`SignalStore`], [`LeaseStore`],
/// [`KvStore`] and [`DocStore`], implemented for every type that implements all six (a backend or a test
/// double is written in parts). Object safe: the runtime holds an `Arc<dyn Store>`.
///
/// Every backend passes the same suite (`tests/store_suite.rs`). Stores are serialisable per
/// run: [`transition`](RunStore::transition) is a compare-and-set on the status, so two callers
/// never both claim, finish or resume the same run.
pub trait Store: RunStore + JournalStore + SignalStore + LeaseStore + KvStore + DocStore {}

impl<T> Store for T where
    T: RunStore + JournalStore + SignalStore + LeaseStore + KvStore + DocStore + ?Sized
{
}

/// Runs: create (idempotently), read, list, and change status with a compare-and-set.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Store a new queued run. With an idempotency key that is already stored, store nothing
    /// and return the existing run.
    async fn create_run(&self, run: NewRun) -> Result<Created>;

    /// The run, if it exists.
    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>>;

    /// The most recently created run whose idempotency key starts with `prefix` (compared
    /// exactly, case-sensitive). Schedules find the run of their latest fire with
    /// `schedule:<name>:`, whichever node started it.
    async fn latest_run_with_key_prefix(&self, prefix: &str) -> Result<Option<RunRecord>>;

    /// Runs whose status is one of `statuses`, oldest first, at most `limit`.
    async fn list_runs(&self, statuses: &[RunStatus], limit: usize) -> Result<Vec<RunRecord>>;

    /// How many runs are in each of `statuses` (a status with none is left out): one
    /// aggregate query, for gauges read often (metrics scrapes).
    async fn count_runs(&self, statuses: &[RunStatus]) -> Result<Vec<(RunStatus, u64)>>;

    /// Runs that match `query`, newest first (`created_at`, then id, descending), one page.
    async fn search_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>>;

    /// Delete up to `limit` finished runs (succeeded, failed or cancelled) last updated before
    /// `before` (ms since epoch), with their journals and signals (retention). Returns the
    /// deleted runs' ids.
    async fn delete_finished_runs(&self, before: i64, limit: usize) -> Result<Vec<String>>;

    /// Delete run `run_id` with its journal and signals, the way
    /// [`delete_finished_runs`](Self::delete_finished_runs) deletes each run, if it is finished
    /// (succeeded, failed or cancelled): the check and the deletion are one transaction.
    /// Whether it was deleted (`false`: no such run, or it has not finished).
    async fn delete_finished_run(&self, run_id: &str) -> Result<bool>;

    /// Apply `update` if the run's status is one of `from`; returns the updated run, or `None`
    /// when the run does not exist or is in another status (nothing changed).
    async fn transition(
        &self,
        run_id: &str,
        from: &[RunStatus],
        update: RunUpdate,
    ) -> Result<Option<RunRecord>>;
}

/// Each run's append-only journal.
#[async_trait]
pub trait JournalStore: Send + Sync + 'static {
    /// Append entries to their runs' journals, all or nothing. An entry whose `(run_id, key)`
    /// or `(run_id, seq)` is already stored is an error (journals are append-only).
    async fn append(&self, entries: &[JournalEntry]) -> Result<()>;

    /// Append entries of one run like [`append`](Self::append), only while that run is
    /// executed by `owner`: its status is `running` (or `waiting_input` / `waiting_approval`,
    /// while the tool calls beside a waiting call finish) and its lease is held by `owner`. The
    /// check and the insert are one atomic statement (SQL: `INSERT … SELECT … WHERE EXISTS`).
    /// Returns `false`, appending nothing, when the run was paused, cancelled or taken over
    /// meanwhile (the executor then stops); an error when the entries belong to several runs.
    async fn append_fenced(&self, entries: &[JournalEntry], owner: &str) -> Result<bool>;

    /// A run's journal, in sequence order.
    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>>;

    /// At most `limit` entries of a run's journal with `seq > after` (all when `after` is
    /// `None`), in sequence order: what a stream that already has `after` reads next.
    async fn journal_after(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>> {
        Ok(self
            .journal(run_id)
            .await?
            .into_iter()
            .filter(|e| after.is_none_or(|a| e.seq > a))
            .take(limit)
            .collect())
    }
}

/// Signals queued for runs and delivered, each exactly once, into their journals.
#[async_trait]
pub trait SignalStore: Send + Sync + 'static {
    /// Queue a signal for a run (delivered in order, per name).
    async fn send_signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()>;

    /// Whether an undelivered signal named `name` is queued for the run.
    async fn has_signal(&self, run_id: &str, name: &str) -> Result<bool>;

    /// Whether an undelivered signal named any of `names` is queued for the run (the SQL
    /// stores ask once; the default asks [`has_signal`](Self::has_signal) name by name).
    async fn has_any_signal(&self, run_id: &str, names: &[String]) -> Result<bool> {
        for name in names {
            if self.has_signal(run_id, name).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deliver the oldest undelivered signal named `name`: in one transaction, mark it
    /// delivered and append `entry` with the signal's payload as its value. Returns the
    /// payload, or `None` (and appends nothing) when no signal is queued.
    async fn take_signal(
        &self,
        run_id: &str,
        name: &str,
        entry: JournalEntry,
    ) -> Result<Option<Value>>;

    /// [`take_signal`](Self::take_signal) only while the run is executed by `owner`: its
    /// status is `running` (or `waiting_input` / `waiting_approval`, while the tool calls
    /// beside a waiting call finish) and `owner` holds it. The check, the delivery and the
    /// append are one transaction, serialised against the run's status changes: a cancel (or
    /// pause) committed before it makes it fail and deliver nothing; one that commits after it
    /// finds the decision delivered (the effect it releases goes ahead). The runtime takes
    /// every signal with it, so a decision that releases an effect (an approval) never does
    /// so after a cancel of its run was answered, on any node.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`](agentkit_core::Error::Cancelled), with nothing delivered or
    /// appended, when the run is no longer live under `owner` (cancelled, paused, finished or
    /// taken over); otherwise the store's error.
    ///
    /// The default calls [`take_signal`](Self::take_signal) without the check, for stores
    /// written before this method: the only guard left is then the cancellation of the
    /// execution in the process that runs it, which another process cannot reach. Override
    /// it (this crate's three stores do).
    async fn take_signal_fenced(
        &self,
        run_id: &str,
        name: &str,
        entry: JournalEntry,
        owner: &str,
    ) -> Result<Option<Value>> {
        let _ = owner;
        self.take_signal(run_id, name, entry).await
    }

    /// The gate of [`take_signal_fenced`](Self::take_signal_fenced) for a decision delivered
    /// to an earlier execution of the run and replayed from its journal (after a crash, a
    /// lease takeover or a resume) while the effect it releases (an approved call) has not
    /// run yet: succeeds only while the run is executed by `owner`, checked serialised against
    /// the run's status changes the same way. A cancel (or pause) committed before it makes
    /// it fail; one that commits after it finds the effect released. Nothing is written.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`](agentkit_core::Error::Cancelled) when the run is no longer live
    /// under `owner` (cancelled, paused, finished or taken over); otherwise the store's error.
    ///
    /// The default checks nothing (like the default of
    /// [`take_signal_fenced`](Self::take_signal_fenced)), for stores written before this
    /// method. Override it (this crate's three stores do).
    async fn fence_replayed_signal(&self, run_id: &str, owner: &str) -> Result<()> {
        let _ = (run_id, owner);
        Ok(())
    }
}

/// Claiming runs under a lease, and the heartbeat that renews leases.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Claim one run for `owner` until `lease_until` (ms since epoch): only if it is queued,
    /// or running under an expired lease. The run becomes `running` with one more attempt.
    async fn claim(&self, run_id: &str, owner: &str, lease_until: i64)
    -> Result<Option<RunRecord>>;

    /// Claim up to `limit` claimable runs of `targets`, oldest first, for `owner` (PostgreSQL:
    /// `FOR UPDATE SKIP LOCKED`, so nodes polling at once get different runs).
    async fn claim_next(
        &self,
        owner: &str,
        targets: &[String],
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<RunRecord>>;

    /// Extend the leases `owner` holds on `run_ids` (the heartbeat). Returns how many it still
    /// held.
    async fn renew_leases(&self, owner: &str, run_ids: &[String], lease_until: i64) -> Result<u64>;

    /// Whether several runtime processes may share this store (PostgreSQL). When false (memory,
    /// SQLite), one process owns the store, and a process that starts treats runs left
    /// `running` as orphaned by a dead process at once instead of waiting for their leases.
    fn is_shared(&self) -> bool {
        false
    }

    /// The ids of runs as they are cancelled or paused, by any process on this store
    /// (PostgreSQL: `LISTEN`/`NOTIFY`), so that the process executing such a run stops it at
    /// once instead of at its next step, and waiters on every node wake. `None` (the default)
    /// when the store has no such feed; changes made by other processes are then seen by
    /// polling. Call it from within a Tokio runtime (PostgreSQL starts its listener then).
    fn stop_notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}

/// Namespaced key-value entries with an optional time to live (shared agent memory,
/// schedules' pause state).
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Store `value` under `key` in `namespace` (shared agent memory across runs), replacing
    /// what was there; with a `ttl` it expires after that long.
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        ttl: Option<std::time::Duration>,
    ) -> Result<()>;

    /// The value under `key` in `namespace`, unless absent or expired.
    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Value>>;

    /// Delete `key` from `namespace`; returns whether a live value was there.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool>;
}

/// JSON documents in named collections, each with a revision for compare-and-swap: the
/// server's registry (immutable versions, labels moved with CAS), threads and webhooks.
/// Collections and ids are plain strings; ids sort bytewise.
#[async_trait]
pub trait DocStore: Send + Sync + 'static {
    /// Write `value` as document `id` of `collection` if `expect` holds; returns the stored
    /// document, or `None` (and writes nothing) when it does not.
    async fn doc_put(
        &self,
        collection: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<Option<Doc>>;

    /// The document, if it exists.
    async fn doc_get(&self, collection: &str, id: &str) -> Result<Option<Doc>>;

    /// Delete the document if `expect` holds ([`Expect::Absent`] never deletes); returns
    /// whether one was deleted.
    async fn doc_delete(&self, collection: &str, id: &str, expect: Expect) -> Result<bool>;

    /// Several writes in order, stopping at the first whose [`Expect`] does not hold: that
    /// write and every one after it are not made. Returns the documents written (a prefix of
    /// `writes`, as long as `writes` when every expectation held).
    ///
    /// The stores of this crate make the writes in one transaction (SQLite: one job of its
    /// group commit; PostgreSQL: one transaction; memory: under one lock), so they cost one
    /// commit and other readers see the written prefix at once, or nothing of it. The
    /// default runs [`doc_put`](Self::doc_put) for each in turn (same result, one commit
    /// each, and a reader may see part of the prefix before the rest).
    ///
    /// # Errors
    ///
    /// The store's error; with the stores of this crate nothing of `writes` is stored then.
    async fn doc_put_many(&self, writes: Vec<DocWrite>) -> Result<Vec<Doc>> {
        let mut done = Vec::with_capacity(writes.len());
        for w in writes {
            match self
                .doc_put(&w.collection, &w.id, w.value, w.expect)
                .await?
            {
                Some(doc) => done.push(doc),
                None => break,
            }
        }
        Ok(done)
    }

    /// Up to `limit` documents of `collection` whose id starts with `prefix` and sorts after
    /// `after` (paging), in id order.
    async fn doc_list(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Doc>>;
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn store_error(
    backend: &str,
    what: &str,
    e: impl Into<agentkit_core::BoxError>,
) -> agentkit_core::Error {
    agentkit_core::Error::other(format!("{backend} store: {what}"), e)
}

/// `(status name, count)` rows of a `GROUP BY status` query as [`RunStore::count_runs`]
/// returns them (a name no status has is skipped; a negative count reads as 0).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn counted(rows: Vec<(String, i64)>) -> Vec<(RunStatus, u64)> {
    rows.into_iter()
        .filter_map(|(name, n)| {
            Some((
                crate::model::parse_status(&name)?,
                u64::try_from(n).unwrap_or(0),
            ))
        })
        .collect()
}

/// `UPDATE .. RETURNING` yields rows in no particular order: sort claimed runs oldest first.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn oldest_first(mut runs: Vec<RunRecord>) -> Vec<RunRecord> {
    runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    runs
}

/// A value read back from the store that agentkit cannot use: a corrupt row, or one written by
/// a newer agentkit or by hand. Reads return it (as the `error` of an
/// [`Error::Other`](agentkit_core::Error::Other)) instead of panicking or silently changing the
/// value; fix or delete the row it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}` {problem}")]
#[non_exhaustive]
pub struct InvalidStoredData {
    /// The backend (`sqlite`, `postgres`).
    pub backend: String,
    /// What was read, e.g. `run 0192…` or `journal entry 3 of run 0192…`.
    pub what: String,
    /// The column.
    pub column: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl InvalidStoredData {
    /// A value of `column` of `what` that cannot be used, and why.
    #[must_use]
    pub fn new(
        backend: &str,
        what: &str,
        column: &'static str,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            backend: backend.to_owned(),
            what: what.to_owned(),
            column,
            problem: problem.into(),
        }
    }
}

impl From<InvalidStoredData> for agentkit_core::Error {
    fn from(e: InvalidStoredData) -> Self {
        let context = format!("{} store: reading {}", e.backend, e.what);
        agentkit_core::Error::other(context, e)
    }
}

/// When a value put now with `ttl` expires (ms since epoch).
pub(crate) fn expires_at(ttl: Option<std::time::Duration>) -> Option<i64> {
    ttl.map(|t| {
        crate::model::now_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
    })
}
