//! The PostgreSQL [`Store`](super::Store): migrations embedded and run on connect (under an advisory lock,
//! so several nodes may start at once), runtime-checked queries.

use agentkit_core::{Error, Result, RunStatus};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, Row, Transaction};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

use super::migrate;
use super::rows::{self, CHUNK, append_error};
use super::{
    DocStore, JournalStore, KvStore, LeaseStore, RunStore, SignalStore, oldest_first, store_error,
};
use crate::model::{
    Created, Doc, DocWrite, Expect, JournalEntry, NewRun, RunQuery, RunRecord, RunUpdate, now_ms,
};

/// The advisory lock the earlier migration runner took (transaction-scoped).
const LEGACY_LOCK: i64 = 7_355_608;

const RUN_COLUMNS: &str = "id, target, version, input::text AS input, status, attempts, \
    idempotency_key, created_at, updated_at, output::text AS output, error, usage::text AS usage, \
    cost_usd, owner, lease_until, wake_at, waiting_for::text AS waiting_for";

/// A [`Store`](super::Store) in PostgreSQL (tables prefixed `agentkit_`).
///
/// Several runtime processes may share one database: runs are claimed under a lease (polling
/// nodes use `FOR UPDATE SKIP LOCKED`), a heartbeat extends it, and when a process dies its
/// runs are claimed by another node once their leases expire.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The feed of [`LeaseStore::stop_notices`], started by its first call.
    notices: Arc<OnceLock<broadcast::Sender<String>>>,
}

/// The channel cancels and pauses are announced on (the payload is the run id).
const STOP_CHANNEL: &str = "agentkit_run_stopped";

fn db(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| store_error("postgres", what, e)
}

fn to_json(v: &impl serde::Serialize, what: &str) -> Result<String> {
    rows::to_json("postgres", v, what)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    rows::from_json("postgres", s, what)
}

/// Forward the run ids announced on [`STOP_CHANNEL`] to `sender` until the pool is closed.
/// A lost connection is reopened (what was announced meanwhile is missed: listeners poll
/// too).
async fn listen(pool: PgPool, sender: broadcast::Sender<String>) {
    let mut listener = loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(STOP_CHANNEL).await {
                Ok(()) => break l,
                Err(e) => {
                    tracing::warn!(error = %e, "postgres store: listening for cancels failed; retrying in 1 s");
                }
            },
            Err(_) if pool.is_closed() => return,
            Err(e) => {
                tracing::warn!(error = %e, "postgres store: connecting to listen for cancels failed; retrying in 1 s");
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    loop {
        match listener.recv().await {
            Ok(n) => {
                // No receiver now is fine: a runtime subscribes when it starts waiting.
                let _ = sender.send(n.payload().to_owned());
            }
            Err(_) if pool.is_closed() => return,
            Err(e) => {
                tracing::warn!(error = %e, "postgres store: listening for cancels failed; reconnecting in 1 s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

fn status_names(statuses: &[RunStatus]) -> Vec<String> {
    statuses.iter().map(|s| s.as_str().to_owned()).collect()
}

impl PostgresStore {
    /// Connect to `url` (`postgres://user:pass@host:port/db`) and run the embedded migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        // One direct connection first: a wrong URL or a server that is down fails at once
        // instead of after the pool's acquire timeout.
        let probe = sqlx::postgres::PgConnection::connect(url)
            .await
            .map_err(|e| {
                store_error(
                    "postgres",
                    "connecting (check the URL, that the server runs and accepts the user)",
                    e,
                )
            })?;
        probe
            .close()
            .await
            .map_err(db("closing the probe connection"))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| {
                store_error(
                    "postgres",
                    "connecting (check the URL, that the server runs and accepts the user)",
                    e,
                )
            })?;
        let store = Self {
            pool,
            notices: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool, for inspection and custom queries.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Apply the embedded migrations (`migrations/postgres`). sqlx's migrator holds a
    /// session advisory lock while it runs, so nodes starting at once apply each migration
    /// once. Adopting a database created by the earlier runner happens first, in one
    /// transaction under that runner's advisory lock (so it also waits for an old node that is
    /// migrating).
    async fn migrate(&self) -> Result<()> {
        let migrator = migrate::named(sqlx::migrate!("migrations/postgres"));
        let mut tx = self.pool.begin().await.map_err(db("starting migrations"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LEGACY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db("locking for migrations"))?;
        let exists = |name: &'static str| {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL").bind(name)
        };
        let legacy = exists(migrate::LEGACY_TABLE)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("looking up the earlier migration bookkeeping"))?;
        let adopted = exists(migrate::TABLE)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("looking up the migrations table"))?;
        if legacy && !adopted {
            let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT version FROM {}",
                migrate::LEGACY_TABLE
            )))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading the earlier migration bookkeeping"))?;
            migrate::adopt_legacy("postgres", &mut *tx, &migrator, &versions).await?;
        }
        tx.commit()
            .await
            .map_err(db("committing the adopted migrations"))?;
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| migrate::migrate_error("postgres", e))
    }
}

fn run_from_row(row: &PgRow) -> Result<RunRecord> {
    rows::run_from_columns("postgres", &rows::SqlxRow(row))
}

fn entry_from_row(row: &PgRow) -> Result<JournalEntry> {
    rows::entry_from_columns("postgres", &rows::SqlxRow(row))
}

/// One multi-row `INSERT` for up to [`CHUNK`] journal entries.
fn insert_query(chunk: &[JournalEntry]) -> Result<sqlx::QueryBuilder<Postgres>> {
    fenced_insert_query(chunk, None)
}

/// [`insert_query`]; with a `fence` (`(run id, owner)`), it inserts nothing unless that run is
/// executed by that owner ([`FENCE_STATUSES`](rows::FENCE_STATUSES)).
fn fenced_insert_query(
    chunk: &[JournalEntry],
    fence: Option<(&str, &str)>,
) -> Result<sqlx::QueryBuilder<Postgres>> {
    let mut rows = Vec::with_capacity(chunk.len());
    for e in chunk {
        rows.push((
            e,
            to_json(&e.value, "a journal value")?,
            to_json(&e.usage, "journal usage")?,
        ));
    }
    let mut q = sqlx::QueryBuilder::<Postgres>::new(
        "INSERT INTO agentkit_journal (run_id, seq, key, kind, value, latency_ms, usage, cost_usd, created_at) ",
    );
    if fence.is_some() {
        q.push("SELECT * FROM (");
    }
    q.push_values(rows, |mut b, (e, value, usage)| {
        b.push_bind(e.run_id.clone())
            .push_bind(i64::try_from(e.seq).unwrap_or(i64::MAX))
            .push_bind(e.key.clone())
            .push_bind(e.kind.as_str())
            .push_bind(value)
            .push_unseparated("::jsonb")
            .push_bind(i64::try_from(e.latency_ms).unwrap_or(i64::MAX))
            .push_bind(usage)
            .push_unseparated("::jsonb")
            .push_bind(e.cost_usd)
            .push_bind(e.created_at);
    });
    if let Some((run, owner)) = fence {
        q.push(") AS v WHERE EXISTS (SELECT 1 FROM agentkit_runs WHERE id = ")
            .push_bind(run.to_owned())
            .push(" AND owner = ")
            .push_bind(owner.to_owned())
            .push(" AND status IN ")
            .push(rows::FENCE_STATUSES)
            // Serialised against a cancel in flight, as `take_signal_fenced` is: an entry
            // is appended before the cancel commits, or not at all.
            .push(" FOR SHARE)");
    }
    Ok(q)
}

/// Insert journal entries inside a transaction, [`CHUNK`] rows per statement.
async fn insert_entries(
    tx: &mut Transaction<'static, Postgres>,
    entries: &[JournalEntry],
) -> Result<()> {
    for chunk in entries.chunks(CHUNK) {
        insert_query(chunk)?
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| append_error(chunk, e))?;
    }
    Ok(())
}

/// Delete runs `ids` with their journals and signals in `tx` (what retention and the deletion
/// of one finished run both do).
async fn delete_runs(tx: &mut Transaction<'_, Postgres>, ids: &[String]) -> Result<()> {
    for table in ["agentkit_journal", "agentkit_signals"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE run_id = ANY($1)"
        )))
        .bind(ids)
        .execute(&mut **tx)
        .await
        .map_err(db("deleting finished runs' journals and signals"))?;
    }
    sqlx::query("DELETE FROM agentkit_runs WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await
        .map_err(db("deleting finished runs"))?;
    Ok(())
}

#[async_trait]
impl RunStore for PostgresStore {
    async fn create_run(&self, run: NewRun) -> Result<Created> {
        let rec = RunRecord::new(run);
        let inserted = sqlx::query(
            "INSERT INTO agentkit_runs (id, target, version, input, status, attempts,
                idempotency_key, created_at, updated_at, output, error, usage, cost_usd, owner,
                lease_until, wake_at)
             VALUES ($1, $2, $3, $4::jsonb, $5, $10, $6, $7, $8, NULL, NULL, $9::jsonb, 0, $11,
                $12, $13)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&rec.id)
        .bind(&rec.target)
        .bind(i64::from(rec.version))
        .bind(to_json(&rec.input, "a run input")?)
        .bind(rec.status.as_str())
        .bind(&rec.idempotency_key)
        .bind(rec.created_at)
        .bind(rec.updated_at)
        .bind(to_json(&rec.usage, "run usage")?)
        .bind(i64::from(rec.attempts))
        .bind(&rec.owner)
        .bind(rec.lease_until)
        .bind(rec.wake_at)
        .execute(&self.pool)
        .await
        .map_err(|e| store_error("postgres", &format!("storing run {}", rec.id), e))?
        .rows_affected();
        if inserted == 1 {
            return Ok(Created::New(rec));
        }
        let sql = format!("SELECT {RUN_COLUMNS} FROM agentkit_runs WHERE idempotency_key = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&rec.idempotency_key)
            .fetch_one(&self.pool)
            .await
            .map_err(db("looking up an idempotency key"))?;
        Ok(Created::Existing(run_from_row(&row)?))
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM agentkit_runs WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a run"))?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn latest_run_with_key_prefix(&self, prefix: &str) -> Result<Option<RunRecord>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM agentkit_runs WHERE starts_with(idempotency_key, $1)
             ORDER BY created_at DESC, id DESC LIMIT 1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("finding the latest run of an idempotency-key prefix"))?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn list_runs(&self, statuses: &[RunStatus], limit: usize) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM agentkit_runs WHERE status = ANY($1)
             ORDER BY created_at, id LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status_names(statuses))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing runs"))?
            .iter()
            .map(run_from_row)
            .collect()
    }

    async fn count_runs(&self, statuses: &[RunStatus]) -> Result<Vec<(RunStatus, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status, COUNT(*) FROM agentkit_runs WHERE status = ANY($1) GROUP BY status",
        )
        .bind(status_names(statuses))
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting runs"))?;
        Ok(super::counted(rows))
    }

    async fn search_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut q = sqlx::QueryBuilder::<Postgres>::new(format!(
            "SELECT {RUN_COLUMNS} FROM agentkit_runs WHERE TRUE"
        ));
        if !query.targets.is_empty() {
            q.push(" AND target = ANY(")
                .push_bind(query.targets.clone())
                .push(")");
        }
        if !query.statuses.is_empty() {
            q.push(" AND status = ANY(")
                .push_bind(status_names(&query.statuses))
                .push(")");
        }
        if let Some(t) = query.created_after {
            q.push(" AND created_at >= ").push_bind(t);
        }
        if let Some(t) = query.created_before {
            q.push(" AND created_at < ").push_bind(t);
        }
        if let Some(p) = &query.idempotency_key_prefix {
            q.push(" AND starts_with(idempotency_key, ")
                .push_bind(p.clone())
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::try_from(query.page_size()).unwrap_or(i64::MAX))
            .push(" OFFSET ")
            .push_bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("searching runs"))?
            .iter()
            .map(run_from_row)
            .collect()
    }

    async fn delete_finished_runs(&self, before: i64, limit: usize) -> Result<Vec<String>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM agentkit_runs WHERE status IN ('succeeded', 'failed', 'cancelled')
                AND updated_at < $1 ORDER BY updated_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db("finding finished runs to delete"))?;
        if ids.is_empty() {
            return Ok(ids);
        }
        delete_runs(&mut tx, &ids).await?;
        tx.commit()
            .await
            .map_err(db("committing the deletion of finished runs"))?;
        Ok(ids)
    }

    async fn delete_finished_run(&self, run_id: &str) -> Result<bool> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM agentkit_runs WHERE id = $1
                AND status IN ('succeeded', 'failed', 'cancelled') FOR UPDATE",
        )
        .bind(run_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("finding a finished run to delete"))?;
        if ids.is_empty() {
            return Ok(false);
        }
        delete_runs(&mut tx, &ids).await?;
        tx.commit()
            .await
            .map_err(db("committing the deletion of a finished run"))?;
        Ok(true)
    }

    async fn transition(
        &self,
        run_id: &str,
        from: &[RunStatus],
        update: RunUpdate,
    ) -> Result<Option<RunRecord>> {
        let output = update
            .output
            .as_ref()
            .map(|o| to_json(o, "a run output"))
            .transpose()?;
        let usage = update
            .usage
            .as_ref()
            .map(|u| to_json(u, "run usage"))
            .transpose()?;
        let waiting_for = update
            .waiting_for
            .as_ref()
            .map(|w| to_json(w, "the signals a run waits for"))
            .transpose()?;
        let sql = format!(
            "UPDATE agentkit_runs SET status = $1, attempts = attempts + $2,
                output = COALESCE($3::jsonb, output), error = COALESCE($4, error),
                usage = COALESCE($5::jsonb, usage), cost_usd = COALESCE($6, cost_usd),
                updated_at = $7, wake_at = $11, waiting_for = $12::jsonb
             WHERE id = $8 AND status = ANY($9) AND ($10::text IS NULL OR owner = $10)
             RETURNING {RUN_COLUMNS}"
        );
        // A cancel or a pause is announced (at commit, in the same statement) to the nodes
        // that listen: the one executing the run stops it at once.
        let sql = if matches!(update.status, RunStatus::Cancelled | RunStatus::Paused) {
            format!(
                "WITH changed AS ({sql}) SELECT changed.*,
                    pg_notify('{STOP_CHANNEL}', changed.id)::text AS notified FROM changed"
            )
        } else {
            sql
        };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(update.status.as_str())
            .bind(i64::from(update.increment_attempts))
            .bind(output)
            .bind(&update.error)
            .bind(usage)
            .bind(update.cost_usd)
            .bind(now_ms())
            .bind(run_id)
            .bind(status_names(from))
            .bind(&update.owner_fence)
            .bind(update.wake_at)
            .bind(waiting_for)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error("postgres", &format!("updating run {run_id}"), e))?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }
}

#[async_trait]
impl JournalStore for PostgresStore {
    async fn append(&self, entries: &[JournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        if entries.len() <= CHUNK {
            // One statement is atomic on its own: no transaction round trips.
            return insert_query(entries)?
                .build()
                .execute(&self.pool)
                .await
                .map(|_| ())
                .map_err(|e| append_error(entries, e));
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        insert_entries(&mut tx, entries).await?;
        tx.commit().await.map_err(db("committing journal entries"))
    }

    async fn append_fenced(&self, entries: &[JournalEntry], owner: &str) -> Result<bool> {
        let Some(run_id) = rows::one_run(entries)? else {
            return Ok(true);
        };
        let fence = Some((run_id, owner));
        if entries.len() <= CHUNK {
            // One statement: the check and the insert are atomic, no transaction round trips.
            let n = fenced_insert_query(entries, fence)?
                .build()
                .execute(&self.pool)
                .await
                .map_err(|e| append_error(entries, e))?
                .rows_affected();
            return Ok(n > 0);
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        for chunk in entries.chunks(CHUNK) {
            let n = fenced_insert_query(chunk, fence)?
                .build()
                .execute(&mut *tx)
                .await
                .map_err(|e| append_error(chunk, e))?
                .rows_affected();
            if n == 0 {
                // Fenced out: dropping the transaction rolls back earlier chunks.
                return Ok(false);
            }
        }
        tx.commit()
            .await
            .map_err(db("committing journal entries"))
            .map(|()| true)
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>> {
        sqlx::query(
            "SELECT run_id, seq, key, kind, value::text AS value, latency_ms, usage::text AS usage,
                cost_usd, created_at
             FROM agentkit_journal WHERE run_id = $1 ORDER BY seq",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading a journal"))?
        .iter()
        .map(entry_from_row)
        .collect()
    }

    async fn journal_after(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<JournalEntry>> {
        sqlx::query(
            "SELECT run_id, seq, key, kind, value::text AS value, latency_ms, usage::text AS usage,
                cost_usd, created_at
             FROM agentkit_journal WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(run_id)
        .bind(after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading a journal"))?
        .iter()
        .map(entry_from_row)
        .collect()
    }
}

#[async_trait]
impl SignalStore for PostgresStore {
    async fn send_signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()> {
        let inserted = sqlx::query(
            "INSERT INTO agentkit_signals (run_id, name, payload, created_at)
             SELECT id, $2, $3::jsonb, $4 FROM agentkit_runs WHERE id = $1",
        )
        .bind(run_id)
        .bind(name)
        .bind(to_json(&payload, "a signal payload")?)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db("storing a signal"))?
        .rows_affected();
        if inserted == 0 {
            return Err(Error::Workflow(format!(
                "cannot signal run {run_id}: no such run"
            )));
        }
        Ok(())
    }

    async fn has_any_signal(&self, run_id: &str, names: &[String]) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM agentkit_signals
             WHERE run_id = $1 AND name = ANY($2) AND NOT delivered LIMIT 1",
        )
        .bind(run_id)
        .bind(names)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("looking up signals"))?
        .is_some())
    }

    async fn has_signal(&self, run_id: &str, name: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM agentkit_signals
             WHERE run_id = $1 AND name = $2 AND NOT delivered LIMIT 1",
        )
        .bind(run_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("looking up signals"))?
        .is_some())
    }

    async fn take_signal(
        &self,
        run_id: &str,
        name: &str,
        entry: JournalEntry,
    ) -> Result<Option<Value>> {
        self.deliver_signal(run_id, name, entry, None).await
    }

    async fn take_signal_fenced(
        &self,
        run_id: &str,
        name: &str,
        entry: JournalEntry,
        owner: &str,
    ) -> Result<Option<Value>> {
        self.deliver_signal(run_id, name, entry, Some(owner)).await
    }

    async fn fence_replayed_signal(&self, run_id: &str, owner: &str) -> Result<()> {
        // One statement: its row lock is held until it ends, as the fenced take's is until
        // the delivery commits.
        live_under(
            &self.pool,
            run_id,
            owner,
            "checking the run before a replayed signal",
        )
        .await
    }
}

/// `Ok` if run `run_id` is executed by `owner` ([`FENCE_STATUSES`](rows::FENCE_STATUSES)),
/// else [`rows::fenced_out`]. `what`: what the read is for.
///
/// `FOR SHARE` conflicts with the row lock of an `UPDATE` of the run (a cancel, a pause): one
/// in flight is waited for and its committed status read; one that comes later waits until
/// the statement (or the transaction it runs in) ends.
async fn live_under<'c>(
    conn: impl sqlx::Executor<'c, Database = Postgres>,
    run_id: &str,
    owner: &str,
    what: &'static str,
) -> Result<()> {
    let sql = format!(
        "SELECT 1 FROM agentkit_runs
         WHERE id = $1 AND owner = $2 AND status IN {}
         FOR SHARE",
        rows::FENCE_STATUSES
    );
    let live = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .bind(owner)
        .fetch_optional(conn)
        .await
        .map_err(db(what))?;
    match live {
        Some(_) => Ok(()),
        None => Err(rows::fenced_out(run_id)),
    }
}

impl PostgresStore {
    /// [`SignalStore::take_signal`], and with `owner` [`SignalStore::take_signal_fenced`].
    async fn deliver_signal(
        &self,
        run_id: &str,
        name: &str,
        mut entry: JournalEntry,
        owner: Option<&str>,
    ) -> Result<Option<Value>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        if let Some(owner) = owner {
            // Its row lock holds a cancel that comes later until the signal is delivered.
            live_under(
                &mut *tx,
                run_id,
                owner,
                "checking the run before delivering a signal",
            )
            .await?;
        }
        let row = sqlx::query(
            "UPDATE agentkit_signals SET delivered = TRUE WHERE id = (
                SELECT id FROM agentkit_signals
                WHERE run_id = $1 AND name = $2 AND NOT delivered
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING payload::text AS payload",
        )
        .bind(run_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("delivering a signal"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let payload: String = row
            .try_get("payload")
            .map_err(db("reading a signal payload"))?;
        let payload: Value = from_json(&payload, "a signal payload")?;
        entry.value = payload.clone();
        insert_entries(&mut tx, std::slice::from_ref(&entry)).await?;
        tx.commit()
            .await
            .map_err(db("committing a delivered signal"))?;
        Ok(Some(payload))
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<RunRecord>> {
        let sql = format!(
            "UPDATE agentkit_runs SET status = 'running', attempts = attempts + 1, owner = $1,
                lease_until = $2, updated_at = $3, wake_at = NULL
             WHERE id = $4 AND ((status = 'queued' AND (wake_at IS NULL OR wake_at <= $3))
                OR (status = 'running'
                AND (lease_until IS NULL OR lease_until < $3)))
             RETURNING {RUN_COLUMNS}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_until)
            .bind(now_ms())
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| store_error("postgres", &format!("claiming run {run_id}"), e))?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn claim_next(
        &self,
        owner: &str,
        targets: &[String],
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "UPDATE agentkit_runs SET status = 'running', attempts = attempts + 1, owner = $1,
                lease_until = $2, updated_at = $3, wake_at = NULL
             WHERE id IN (SELECT id FROM agentkit_runs
                WHERE target = ANY($4)
                  AND ((status = 'queued' AND (wake_at IS NULL OR wake_at <= $3))
                       OR (status = 'running'
                       AND (lease_until IS NULL OR lease_until < $3)))
                ORDER BY created_at, id LIMIT $5
                FOR UPDATE SKIP LOCKED)
             RETURNING {RUN_COLUMNS}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_until)
            .bind(now_ms())
            .bind(targets)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db("claiming runs"))?
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<_>>>()
            .map(oldest_first)
    }

    async fn renew_leases(&self, owner: &str, run_ids: &[String], lease_until: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE agentkit_runs SET lease_until = $1
             WHERE owner = $2 AND status = 'running' AND id = ANY($3)",
        )
        .bind(lease_until)
        .bind(owner)
        .bind(run_ids)
        .execute(&self.pool)
        .await
        .map_err(db("renewing leases"))?
        .rows_affected())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn stop_notices(&self) -> Option<broadcast::Receiver<String>> {
        let sender = self.notices.get_or_init(|| {
            let (sender, _) = broadcast::channel(1024);
            tokio::spawn(listen(self.pool.clone(), sender.clone()));
            sender
        });
        Some(sender.subscribe())
    }
}

#[async_trait]
impl KvStore for PostgresStore {
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        ttl: Option<std::time::Duration>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO agentkit_kv (namespace, key, value, expires_at) VALUES ($1, $2, $3::jsonb, $4)
             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                expires_at = excluded.expires_at")
        .bind(namespace)
        .bind(key)
        .bind(to_json(&value, "a context value")?)
        .bind(super::expires_at(ttl))
        .execute(&self.pool)
        .await
        .map_err(db("storing a context value"))?;
        Ok(())
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        let row = sqlx::query(
            "SELECT value::text AS value FROM agentkit_kv WHERE namespace = $1 AND key = $2
             AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(namespace)
        .bind(key)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a context value"))?;
        match row {
            None => Ok(None),
            Some(row) => {
                let v: String = row
                    .try_get("value")
                    .map_err(db("reading a context value"))?;
                from_json(&v, "a context value").map(Some)
            }
        }
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let row = sqlx::query(
            "DELETE FROM agentkit_kv WHERE namespace = $1 AND key = $2
             RETURNING (expires_at IS NULL OR expires_at > $3) AS live",
        )
        .bind(namespace)
        .bind(key)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("deleting a context value"))?;
        match row {
            None => Ok(false),
            Some(row) => row
                .try_get::<bool, _>("live")
                .map_err(db("deleting a context value")),
        }
    }
}

const DOC_COLUMNS: &str = "id, value::text AS value, revision, created_at, updated_at";

/// One document write on `c`; `None` when `expect` did not hold (nothing written).
async fn put_doc(
    c: &mut sqlx::PgConnection,
    collection: &str,
    id: &str,
    value: String,
    expect: Expect,
    now: i64,
) -> Result<Option<Doc>> {
    let sql = match expect {
        Expect::Any => format!(
            "INSERT INTO agentkit_docs (collection, id, value, revision, created_at, updated_at)
             VALUES ($1, $2, $3::jsonb, 1, $4, $4)
             ON CONFLICT (collection, id) DO UPDATE SET value = excluded.value,
                revision = agentkit_docs.revision + 1, updated_at = excluded.updated_at
             RETURNING {DOC_COLUMNS}"
        ),
        Expect::Absent => format!(
            "INSERT INTO agentkit_docs (collection, id, value, revision, created_at, updated_at)
             VALUES ($1, $2, $3::jsonb, 1, $4, $4)
             ON CONFLICT (collection, id) DO NOTHING
             RETURNING {DOC_COLUMNS}"
        ),
        Expect::Revision(_) => format!(
            "UPDATE agentkit_docs SET value = $3::jsonb, revision = revision + 1, updated_at = $4
             WHERE collection = $1 AND id = $2 AND revision = $5
             RETURNING {DOC_COLUMNS}"
        ),
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(collection)
        .bind(id)
        .bind(value)
        .bind(now);
    if let Expect::Revision(r) = expect {
        q = q.bind(i64::try_from(r).unwrap_or(i64::MAX));
    }
    q.fetch_optional(c)
        .await
        .map_err(db("writing a document"))?
        .map(|row| rows::doc_from_columns("postgres", &rows::SqlxRow(&row), collection))
        .transpose()
}

#[async_trait]
impl DocStore for PostgresStore {
    async fn doc_put(
        &self,
        collection: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<Option<Doc>> {
        let value = to_json(&value, "a document")?;
        let mut c = self
            .pool
            .acquire()
            .await
            .map_err(db("writing a document"))?;
        put_doc(&mut c, collection, id, value, expect, now_ms()).await
    }

    async fn doc_put_many(&self, writes: Vec<DocWrite>) -> Result<Vec<Doc>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        let now = now_ms();
        let mut done = Vec::with_capacity(writes.len());
        for w in writes {
            let value = to_json(&w.value, "a document")?;
            match put_doc(&mut tx, &w.collection, &w.id, value, w.expect, now).await? {
                Some(doc) => done.push(doc),
                None => break,
            }
        }
        tx.commit()
            .await
            .map_err(db("committing document writes"))?;
        Ok(done)
    }

    async fn doc_get(&self, collection: &str, id: &str) -> Result<Option<Doc>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOC_COLUMNS} FROM agentkit_docs WHERE collection = $1 AND id = $2"
        )))
        .bind(collection)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a document"))?
        .map(|row| rows::doc_from_columns("postgres", &rows::SqlxRow(&row), collection))
        .transpose()
    }

    async fn doc_delete(&self, collection: &str, id: &str, expect: Expect) -> Result<bool> {
        let revision = match expect {
            Expect::Absent => return Ok(false),
            Expect::Any => None,
            Expect::Revision(r) => Some(i64::try_from(r).unwrap_or(i64::MAX)),
        };
        Ok(sqlx::query(
            "DELETE FROM agentkit_docs WHERE collection = $1 AND id = $2
                AND ($3::bigint IS NULL OR revision = $3)",
        )
        .bind(collection)
        .bind(id)
        .bind(revision)
        .execute(&self.pool)
        .await
        .map_err(db("deleting a document"))?
        .rows_affected()
            > 0)
    }

    async fn doc_list(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Doc>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOC_COLUMNS} FROM agentkit_docs WHERE collection = $1
                AND starts_with(id, $2) AND ($3::text IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        )))
        .bind(collection)
        .bind(prefix)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing documents"))?
        .iter()
        .map(|row| rows::doc_from_columns("postgres", &rows::SqlxRow(row), collection))
        .collect()
    }
}
