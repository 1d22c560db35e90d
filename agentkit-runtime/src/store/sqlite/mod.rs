//! The SQLite [`Store`](super::Store): one file, WAL, migrations embedded and run on open,
//! reads on a pool of connections, writes group-committed by one writer task ([`writer`]).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use agentkit_core::{Error, Result, RunStatus};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};

use super::migrate;
use super::rows::{self, CHUNK, append_error_of};
use super::{
    DocStore, JournalStore, KvStore, LeaseStore, RunStore, SignalStore, counted, oldest_first,
    store_error,
};
use crate::model::{
    Created, Doc, DocWrite, Expect, JournalEntry, NewRun, RunQuery, RunRecord, RunUpdate, now_ms,
};

mod writer;
use writer::{Statements, Writer};

/// A [`Store`](super::Store) in one SQLite file (WAL mode, `synchronous = NORMAL`).
///
/// Reads run on a pool of connections, concurrently (WAL readers never wait for the writer).
/// Writes go through one writer task with a connection of its own, which *group-commits*: the
/// writes of concurrent callers that queue up while a transaction commits share the next one
/// (each in a savepoint of its own when it has several statements, so one failing write does
/// not fail the others). A caller is answered only after the `COMMIT` that holds its write,
/// so a write that returned `Ok` is stored, exactly as with one transaction per write.
///
/// One runtime process per file: SQLite has no leases, so a process that opens the file treats
/// runs left `running` as orphaned by a dead process and resumes them. Several processes sharing
/// work need the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (and [`pool`](Self::pool) for callers).
    pool: SqlitePool,
    /// The writer task's connection (the same pool as `pool` for an in-memory database).
    write_pool: SqlitePool,
    writer: Writer,
}

fn db(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |e| store_error("sqlite", what, e)
}

fn to_json(v: &impl serde::Serialize, what: &str) -> Result<String> {
    rows::to_json("sqlite", v, what)
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    rows::from_json("sqlite", s, what)
}

fn statuses_json(statuses: &[RunStatus]) -> Result<String> {
    to_json(
        &statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "statuses",
    )
}

impl SqliteStore {
    /// Open (or create) the database file at `path` and run the embedded migrations.
    ///
    /// Starts the store's writer task on the current tokio runtime: use the store on that
    /// runtime (or one that outlives it).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let opening = |e: sqlx::Error| {
            store_error(
                "sqlite",
                &format!(
                    "opening {} (check that the directory exists and is writable)",
                    path.display()
                ),
                e,
            )
        };
        // The writer's connection first: it creates the file and switches it to WAL.
        let write_pool = connect(&options, 1).await.map_err(opening)?;
        let pool = connect(&options, READERS).await.map_err(opening)?;
        let store = Self {
            writer: Writer::start(write_pool.clone(), true),
            pool,
            write_pool,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A private in-memory database (one connection, shared by reads and the writer task;
    /// for tests).
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db("parsing the in-memory URL"))?
            .foreign_keys(true);
        // The database lives as long as its one connection: never let the pool retire it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db("opening an in-memory database"))?;
        let store = Self {
            writer: Writer::start(pool.clone(), false),
            write_pool: pool.clone(),
            pool,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Close the store's connections, waiting for the writes in progress; writes that were
    /// not started yet fail, and so does every use of the store afterwards.
    pub async fn close(&self) {
        self.write_pool.close().await;
        self.pool.close().await;
    }

    /// The pool reads run on, for inspection and custom queries. Writes made through it do
    /// not go through the store's writer: they take SQLite's write lock on their own.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Apply the embedded migrations (`migrations/sqlite`), adopting a database created by
    /// the earlier migration runner first. Everything happens in one `BEGIN IMMEDIATE`
    /// transaction (sqlx runs each migration in a savepoint inside it), so processes that open
    /// a fresh file at once take turns instead of racing to create the same tables.
    async fn migrate(&self) -> Result<()> {
        let migrator = migrate::named(sqlx::migrate!("migrations/sqlite"));
        let mut tx = self.immediate().await?;
        if table_exists(&mut tx, migrate::LEGACY_TABLE).await?
            && !table_exists(&mut tx, migrate::TABLE).await?
        {
            let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT version FROM {}",
                migrate::LEGACY_TABLE
            )))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("reading the earlier migration bookkeeping"))?;
            migrate::adopt_legacy("sqlite", &mut *tx, &migrator, &versions).await?;
        }
        migrator
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(|e| migrate::migrate_error("sqlite", e))?;
        tx.commit().await.map_err(db("committing the migrations"))
    }

    async fn immediate(&self) -> Result<Transaction<'static, Sqlite>> {
        self.write_pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("starting a transaction"))
    }
}

/// Connections each [`SqliteStore::open`] keeps for reads.
const READERS: u32 = 4;

/// A pool of at most `max` connections to the file of `options`.
async fn connect(options: &SqliteConnectOptions, max: u32) -> sqlx::Result<SqlitePool> {
    // Switching a fresh file to WAL answers SQLITE_BUSY at once (no busy handler) when
    // another process is creating the same file: retry that, briefly, with jitter.
    let busy = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "5" || c == "6")
    };
    let connect = || {
        SqlitePoolOptions::new()
            .max_connections(max)
            // No ping before each use: for the writer, that round trip would come on top of
            // every batch; a broken connection shows in the statement's error anyway.
            .test_before_acquire(false)
            .connect_with(options.clone())
    };
    backon::Retryable::retry(
        connect,
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(20)
            .with_jitter(),
    )
    .sleep(tokio::time::sleep)
    .when(busy)
    .await
}

async fn table_exists(tx: &mut Transaction<'static, Sqlite>, name: &str) -> Result<bool> {
    Ok(
        sqlx::query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db("looking up a table"))?
            .is_some(),
    )
}

fn run_from_row(row: &SqliteRow) -> Result<RunRecord> {
    rows::run_from_row("sqlite", row)
}

fn entry_from_row(row: &SqliteRow) -> Result<JournalEntry> {
    rows::entry_from_row("sqlite", row)
}

/// One multi-row `INSERT` for up to [`CHUNK`] journal entries, ready to run anywhere: with
/// what its error names (the first key, the run, how many entries).
struct Insert {
    query: sqlx::QueryBuilder<Sqlite>,
    key: String,
    run_id: String,
    len: usize,
}

impl Insert {
    /// The insert of `chunk`; with a `fence` (`(run id, owner)`), it inserts nothing unless
    /// that run is executed by that owner ([`FENCE_STATUSES`](rows::FENCE_STATUSES)).
    fn new(chunk: &[JournalEntry], fence: Option<(&str, &str)>) -> Result<Self> {
        let mut rows = Vec::with_capacity(chunk.len());
        for e in chunk {
            rows.push((
                e,
                to_json(&e.value, "a journal value")?,
                to_json(&e.usage, "journal usage")?,
            ));
        }
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO journal (run_id, seq, key, kind, value, latency_ms, usage, cost_usd, created_at) ",
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
                .push_bind(i64::try_from(e.latency_ms).unwrap_or(i64::MAX))
                .push_bind(usage)
                .push_bind(e.cost_usd)
                .push_bind(e.created_at);
        });
        if let Some((run, owner)) = fence {
            q.push(") AS v WHERE EXISTS (SELECT 1 FROM runs WHERE id = ")
                .push_bind(run.to_owned())
                .push(" AND owner = ")
                .push_bind(owner.to_owned())
                .push(" AND status IN ")
                .push(rows::FENCE_STATUSES)
                .push(")");
        }
        let (key, run_id) = chunk
            .first()
            .map(|e| (e.key.clone(), e.run_id.clone()))
            .unwrap_or_default();
        Ok(Self {
            query: q,
            key,
            run_id,
            len: chunk.len(),
        })
    }

    /// The inserts for `entries`, [`CHUNK`] rows each (fenced like [`new`](Self::new)).
    fn all(entries: &[JournalEntry], fence: Option<(&str, &str)>) -> Result<Vec<Self>> {
        entries.chunks(CHUNK).map(|c| Self::new(c, fence)).collect()
    }

    /// Run the insert; how many rows it inserted.
    async fn run(mut self, conn: &mut SqliteConnection) -> Result<u64> {
        self.query
            .build()
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| append_error_of(self.key, &self.run_id, self.len, e))
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<Created> {
        let rec = RunRecord::new(run);
        let input = to_json(&rec.input, "a run input")?;
        let usage = to_json(&rec.usage, "run usage")?;
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    let inserted = sqlx::query(
                        "INSERT INTO runs (id, target, version, input, status, attempts,
                            idempotency_key, created_at, updated_at, output, error, usage,
                            cost_usd, owner, lease_until, wake_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, 0, ?, ?, ?)
                         ON CONFLICT (idempotency_key) DO NOTHING",
                    )
                    .bind(&rec.id)
                    .bind(&rec.target)
                    .bind(i64::from(rec.version))
                    .bind(input)
                    .bind(rec.status.as_str())
                    .bind(i64::from(rec.attempts))
                    .bind(&rec.idempotency_key)
                    .bind(rec.created_at)
                    .bind(rec.updated_at)
                    .bind(usage)
                    .bind(&rec.owner)
                    .bind(rec.lease_until)
                    .bind(rec.wake_at)
                    .execute(&mut *c)
                    .await
                    .map_err(|e| store_error("sqlite", &format!("storing run {}", rec.id), e))?
                    .rows_affected();
                    if inserted == 1 {
                        return Ok(Created::New(rec));
                    }
                    let row = sqlx::query("SELECT * FROM runs WHERE idempotency_key = ?")
                        .bind(&rec.idempotency_key)
                        .fetch_one(&mut *c)
                        .await
                        .map_err(db("looking up an idempotency key"))?;
                    Ok(Created::Existing(run_from_row(&row)?))
                })
            })
            .await
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading a run"))?
            .as_ref()
            .map(run_from_row)
            .transpose()
    }

    async fn latest_run_with_key_prefix(&self, prefix: &str) -> Result<Option<RunRecord>> {
        // `substr` rather than LIKE: LIKE is case-insensitive in SQLite and treats `%`/`_`.
        sqlx::query(
            "SELECT * FROM runs WHERE substr(idempotency_key, 1, length(?1)) = ?1
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("finding the latest run of an idempotency-key prefix"))?
        .as_ref()
        .map(run_from_row)
        .transpose()
    }

    async fn list_runs(&self, statuses: &[RunStatus], limit: usize) -> Result<Vec<RunRecord>> {
        sqlx::query(
            "SELECT * FROM runs WHERE status IN (SELECT value FROM json_each(?))
             ORDER BY created_at, id LIMIT ?",
        )
        .bind(statuses_json(statuses)?)
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
            "SELECT status, COUNT(*) FROM runs WHERE status IN (SELECT value FROM json_each(?))
             GROUP BY status",
        )
        .bind(statuses_json(statuses)?)
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting runs"))?;
        Ok(counted(rows))
    }

    async fn search_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new("SELECT * FROM runs WHERE 1 = 1");
        if !query.targets.is_empty() {
            q.push(" AND target IN (SELECT value FROM json_each(")
                .push_bind(to_json(&query.targets, "targets")?)
                .push("))");
        }
        if !query.statuses.is_empty() {
            q.push(" AND status IN (SELECT value FROM json_each(")
                .push_bind(statuses_json(&query.statuses)?)
                .push("))");
        }
        if let Some(t) = query.created_after {
            q.push(" AND created_at >= ").push_bind(t);
        }
        if let Some(t) = query.created_before {
            q.push(" AND created_at < ").push_bind(t);
        }
        if let Some(p) = &query.idempotency_key_prefix {
            // `substr` rather than LIKE: LIKE is case-insensitive in SQLite and treats `%`/`_`.
            q.push(" AND substr(idempotency_key, 1, length(")
                .push_bind(p.clone())
                .push(")) = ")
                .push_bind(p.clone());
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.writer
            .write(Statements::Several, move |c| {
                Box::pin(async move {
                    let ids: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')
                            AND updated_at < ? ORDER BY updated_at, id LIMIT ?",
                    )
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(db("finding finished runs to delete"))?;
                    if ids.is_empty() {
                        return Ok(ids);
                    }
                    let list = to_json(&ids, "run ids")?;
                    for table in ["journal", "signals"] {
                        sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DELETE FROM {table} WHERE run_id IN (SELECT value FROM json_each(?))"
                        )))
                        .bind(&list)
                        .execute(&mut *c)
                        .await
                        .map_err(db("deleting finished runs' journals and signals"))?;
                    }
                    sqlx::query("DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))")
                        .bind(&list)
                        .execute(&mut *c)
                        .await
                        .map_err(db("deleting finished runs"))?;
                    Ok(ids)
                })
            })
            .await
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
        let from = statuses_json(from)?;
        let run_id = run_id.to_owned();
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE runs SET status = ?, attempts = attempts + ?,
                            output = COALESCE(?, output), error = COALESCE(?, error),
                            usage = COALESCE(?, usage), cost_usd = COALESCE(?, cost_usd),
                            updated_at = ?, wake_at = ?, waiting_for = ?
                         WHERE id = ? AND status IN (SELECT value FROM json_each(?))
                            AND (? IS NULL OR owner = ?)
                         RETURNING *",
                    )
                    .bind(update.status.as_str())
                    .bind(i64::from(update.increment_attempts))
                    .bind(output)
                    .bind(&update.error)
                    .bind(usage)
                    .bind(update.cost_usd)
                    .bind(now_ms())
                    .bind(update.wake_at)
                    .bind(waiting_for)
                    .bind(&run_id)
                    .bind(from)
                    .bind(&update.owner_fence)
                    .bind(&update.owner_fence)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(|e| store_error("sqlite", &format!("updating run {run_id}"), e))?
                    .as_ref()
                    .map(run_from_row)
                    .transpose()
                })
            })
            .await
    }
}

#[async_trait]
impl JournalStore for SqliteStore {
    async fn append(&self, entries: &[JournalEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let inserts = Insert::all(entries, None)?;
        // One statement is atomic on its own; more run in a savepoint (all or nothing).
        let statements = if inserts.len() == 1 {
            Statements::One
        } else {
            Statements::Several
        };
        self.writer
            .write(statements, move |c| {
                Box::pin(async move {
                    for insert in inserts {
                        insert.run(&mut *c).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn append_fenced(&self, entries: &[JournalEntry], owner: &str) -> Result<bool> {
        let Some(run_id) = rows::one_run(entries)? else {
            return Ok(true);
        };
        let inserts = Insert::all(entries, Some((run_id, owner)))?;
        let statements = if inserts.len() == 1 {
            Statements::One
        } else {
            Statements::Several
        };
        let run_id = run_id.to_owned();
        self.writer
            .write(statements, move |c| {
                Box::pin(async move {
                    for insert in inserts {
                        let want = u64::try_from(insert.len).unwrap_or(u64::MAX);
                        if insert.run(&mut *c).await? != want {
                            // Fenced out: fail the job so its savepoint rolls back what an
                            // earlier chunk inserted.
                            return Err(rows::fenced_out(&run_id));
                        }
                    }
                    Ok(())
                })
            })
            .await
            .map(|()| true)
            .or_else(|e| {
                if rows::is_fenced_out(&e) {
                    Ok(false)
                } else {
                    Err(e)
                }
            })
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>> {
        sqlx::query("SELECT * FROM journal WHERE run_id = ? ORDER BY seq")
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
        sqlx::query("SELECT * FROM journal WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?")
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
impl SignalStore for SqliteStore {
    async fn send_signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()> {
        let payload = to_json(&payload, "a signal payload")?;
        let (run_id, name) = (run_id.to_owned(), name.to_owned());
        // One statement: the insert selects the run, so an unknown run inserts nothing.
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    let inserted = sqlx::query(
                        "INSERT INTO signals (run_id, name, payload, created_at)
                         SELECT id, ?, ?, ? FROM runs WHERE id = ?",
                    )
                    .bind(&name)
                    .bind(payload)
                    .bind(now_ms())
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await
                    .map_err(db("storing a signal"))?
                    .rows_affected();
                    if inserted == 0 {
                        return Err(Error::Workflow(format!(
                            "cannot signal run {run_id}: no such run"
                        )));
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn has_signal(&self, run_id: &str, name: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM signals WHERE run_id = ? AND name = ? AND delivered = 0 LIMIT 1",
        )
        .bind(run_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("looking up signals"))?
        .is_some())
    }

    async fn has_any_signal(&self, run_id: &str, names: &[String]) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM signals WHERE run_id = ? AND delivered = 0
                AND name IN (SELECT value FROM json_each(?)) LIMIT 1",
        )
        .bind(run_id)
        .bind(to_json(&names, "signal names")?)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("looking up signals"))?
        .is_some())
    }

    async fn take_signal(
        &self,
        run_id: &str,
        name: &str,
        mut entry: JournalEntry,
    ) -> Result<Option<Value>> {
        let (run_id, name) = (run_id.to_owned(), name.to_owned());
        self.writer
            .write(Statements::Several, move |c| {
                Box::pin(async move {
                    let row = sqlx::query(
                        "UPDATE signals SET delivered = 1 WHERE id = (
                            SELECT id FROM signals WHERE run_id = ? AND name = ? AND delivered = 0
                            ORDER BY id LIMIT 1)
                         RETURNING payload",
                    )
                    .bind(&run_id)
                    .bind(&name)
                    .fetch_optional(&mut *c)
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
                    Insert::new(std::slice::from_ref(&entry), None)?
                        .run(&mut *c)
                        .await?;
                    Ok(Some(payload))
                })
            })
            .await
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<RunRecord>> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    let now = now_ms();
                    sqlx::query(
                        "UPDATE runs SET status = 'running', attempts = attempts + 1, owner = ?,
                            lease_until = ?, updated_at = ?, wake_at = NULL
                         WHERE id = ? AND ((status = 'queued' AND (wake_at IS NULL OR wake_at <= ?))
                            OR (status = 'running'
                            AND (lease_until IS NULL OR lease_until < ?)))
                         RETURNING *",
                    )
                    .bind(&owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(&run_id)
                    .bind(now)
                    .bind(now)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(|e| store_error("sqlite", &format!("claiming run {run_id}"), e))?
                    .as_ref()
                    .map(run_from_row)
                    .transpose()
                })
            })
            .await
    }

    async fn claim_next(
        &self,
        owner: &str,
        targets: &[String],
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let targets = to_json(&targets, "targets")?;
        let owner = owner.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    let now = now_ms();
                    sqlx::query(
                        "UPDATE runs SET status = 'running', attempts = attempts + 1, owner = ?,
                            lease_until = ?, updated_at = ?, wake_at = NULL
                         WHERE id IN (SELECT id FROM runs
                            WHERE target IN (SELECT value FROM json_each(?))
                              AND ((status = 'queued' AND (wake_at IS NULL OR wake_at <= ?))
                                   OR (status = 'running'
                                   AND (lease_until IS NULL OR lease_until < ?)))
                            ORDER BY created_at, id LIMIT ?)
                         RETURNING *",
                    )
                    .bind(&owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(targets)
                    .bind(now)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await
                    .map_err(db("claiming runs"))?
                    .iter()
                    .map(run_from_row)
                    .collect::<Result<Vec<_>>>()
                    .map(oldest_first)
                })
            })
            .await
    }

    async fn renew_leases(&self, owner: &str, run_ids: &[String], lease_until: i64) -> Result<u64> {
        let run_ids = to_json(&run_ids, "run ids")?;
        let owner = owner.to_owned();
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    Ok(sqlx::query(
                        "UPDATE runs SET lease_until = ?
                         WHERE owner = ? AND status = 'running'
                            AND id IN (SELECT value FROM json_each(?))",
                    )
                    .bind(lease_until)
                    .bind(&owner)
                    .bind(run_ids)
                    .execute(&mut *c)
                    .await
                    .map_err(db("renewing leases"))?
                    .rows_affected())
                })
            })
            .await
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        ttl: Option<std::time::Duration>,
    ) -> Result<()> {
        let value = to_json(&value, "a context value")?;
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        let expires_at = super::expires_at(ttl);
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)
                         ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                            expires_at = excluded.expires_at",
                    )
                    .bind(&namespace)
                    .bind(&key)
                    .bind(value)
                    .bind(expires_at)
                    .execute(&mut *c)
                    .await
                    .map_err(db("storing a context value"))?;
                    Ok(())
                })
            })
            .await
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        let row = sqlx::query(
            "SELECT value FROM kv WHERE namespace = ? AND key = ?
             AND (expires_at IS NULL OR expires_at > ?)",
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
        let (namespace, key) = (namespace.to_owned(), key.to_owned());
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    let row = sqlx::query(
                        "DELETE FROM kv WHERE namespace = ? AND key = ?
                         RETURNING (expires_at IS NULL OR expires_at > ?) AS live",
                    )
                    .bind(&namespace)
                    .bind(&key)
                    .bind(now_ms())
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db("deleting a context value"))?;
                    match row {
                        None => Ok(false),
                        Some(row) => row
                            .try_get::<bool, _>("live")
                            .map_err(db("deleting a context value")),
                    }
                })
            })
            .await
    }
}

const DOC_COLUMNS: &str = "id, value, revision, created_at, updated_at";

/// A document write with its value encoded, ready for the writer task.
struct PreparedDoc {
    collection: String,
    id: String,
    value: String,
    expect: Expect,
}

impl PreparedDoc {
    /// Makes the write on `c` (inside the writer's transaction); `None` when `expect` did
    /// not hold (nothing written).
    async fn run(&self, c: &mut SqliteConnection, now: i64) -> Result<Option<Doc>> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(doc_put_sql(self.expect)))
            .bind(&self.collection)
            .bind(&self.id)
            .bind(&self.value)
            .bind(now);
        if let Expect::Revision(r) = self.expect {
            q = q.bind(i64::try_from(r).unwrap_or(i64::MAX));
        }
        q.fetch_optional(c)
            .await
            .map_err(db("writing a document"))?
            .map(|row| rows::doc_from_row("sqlite", &row, &self.collection))
            .transpose()
    }
}

/// The statement of a document write expecting `expect`: binds collection, id, value, now
/// (and the revision).
fn doc_put_sql(expect: Expect) -> String {
    match expect {
        Expect::Any => format!(
            "INSERT INTO docs (collection, id, value, revision, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)
             ON CONFLICT (collection, id) DO UPDATE SET value = excluded.value,
                revision = docs.revision + 1, updated_at = excluded.updated_at
             RETURNING {DOC_COLUMNS}"
        ),
        Expect::Absent => format!(
            "INSERT INTO docs (collection, id, value, revision, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)
             ON CONFLICT (collection, id) DO NOTHING
             RETURNING {DOC_COLUMNS}"
        ),
        Expect::Revision(_) => format!(
            "UPDATE docs SET value = ?3, revision = revision + 1, updated_at = ?4
             WHERE collection = ?1 AND id = ?2 AND revision = ?5
             RETURNING {DOC_COLUMNS}"
        ),
    }
}

#[async_trait]
impl DocStore for SqliteStore {
    async fn doc_put(
        &self,
        collection: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<Option<Doc>> {
        let write = PreparedDoc {
            collection: collection.to_owned(),
            id: id.to_owned(),
            value: to_json(&value, "a document")?,
            expect,
        };
        let now = now_ms();
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move { write.run(c, now).await })
            })
            .await
    }

    async fn doc_put_many(&self, writes: Vec<DocWrite>) -> Result<Vec<Doc>> {
        let writes = writes
            .into_iter()
            .map(|w| {
                Ok(PreparedDoc {
                    value: to_json(&w.value, "a document")?,
                    collection: w.collection,
                    id: w.id,
                    expect: w.expect,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let statements = if writes.len() == 1 {
            Statements::One
        } else {
            Statements::Several
        };
        let now = now_ms();
        self.writer
            .write(statements, move |c| {
                Box::pin(async move {
                    let mut done = Vec::with_capacity(writes.len());
                    for w in &writes {
                        match w.run(&mut *c, now).await? {
                            Some(doc) => done.push(doc),
                            None => break,
                        }
                    }
                    Ok(done)
                })
            })
            .await
    }

    async fn doc_get(&self, collection: &str, id: &str) -> Result<Option<Doc>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOC_COLUMNS} FROM docs WHERE collection = ? AND id = ?"
        )))
        .bind(collection)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a document"))?
        .map(|row| rows::doc_from_row("sqlite", &row, collection))
        .transpose()
    }

    async fn doc_delete(&self, collection: &str, id: &str, expect: Expect) -> Result<bool> {
        let revision = match expect {
            Expect::Absent => return Ok(false),
            Expect::Any => None,
            Expect::Revision(r) => Some(i64::try_from(r).unwrap_or(i64::MAX)),
        };
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.writer
            .write(Statements::One, move |c| {
                Box::pin(async move {
                    Ok(sqlx::query(
                        "DELETE FROM docs WHERE collection = ?1 AND id = ?2
                            AND (?3 IS NULL OR revision = ?3)",
                    )
                    .bind(&collection)
                    .bind(&id)
                    .bind(revision)
                    .execute(&mut *c)
                    .await
                    .map_err(db("deleting a document"))?
                    .rows_affected()
                        > 0)
                })
            })
            .await
    }

    async fn doc_list(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Doc>> {
        // `substr` rather than LIKE: LIKE is case-insensitive in SQLite and treats `%`/`_`.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOC_COLUMNS} FROM docs WHERE collection = ?1
                AND substr(id, 1, length(?2)) = ?2 AND (?3 IS NULL OR id > ?3)
             ORDER BY id LIMIT ?4"
        )))
        .bind(collection)
        .bind(prefix)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing documents"))?
        .iter()
        .map(|row| rows::doc_from_row("sqlite", row, collection))
        .collect()
    }
}
