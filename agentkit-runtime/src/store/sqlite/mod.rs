//! The SQLite [`Store`](super::Store): one file, WAL, migrations embedded and run on open,
//! reads on a pool of sqlx connections, writes group-committed by one writer thread
//! ([`writer`]) on a rusqlite connection of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{BoxError, Error, Result, RunStatus};
use async_trait::async_trait;
use rusqlite::Connection;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::migrate;
use super::rows::{self, CHUNK, Columns, SqlxRow, append_error_of};
use super::{
    DocStore, JournalStore, KvStore, LeaseStore, RunStore, SignalStore, counted, oldest_first,
    store_error,
};
use crate::model::{
    Created, Doc, DocWrite, Expect, JournalEntry, NewRun, RunQuery, RunRecord, RunUpdate, now_ms,
};

mod writer;
use writer::{Statements, Writer, prepare};

/// A [`Store`](super::Store) in one SQLite file (WAL mode, `synchronous = NORMAL`).
///
/// Reads run on a pool of connections, concurrently (WAL readers never wait for the writer).
/// Writes go through one writer thread with a connection of its own, which *group-commits*:
/// the writes of concurrent callers that queue up while a transaction commits share the next
/// one (each in a savepoint of its own when it has several statements, so one failing write
/// does not fail the others). A caller is answered only after the `COMMIT` that holds its
/// write, so a write that returned `Ok` is stored, exactly as with one transaction per write.
///
/// Reads log their statements as sqlx does (`tracing` target `sqlx::query`); the writer logs
/// each statement of a write at `DEBUG` under the target
/// `agentkit_runtime::store::sqlite::write`, the SQL in the field `db.statement`.
///
/// One runtime process per file: SQLite has no leases, so a process that opens the file treats
/// runs left `running` as orphaned by a dead process and resumes them. Several processes sharing
/// work need the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (and [`pool`](Self::pool) for callers).
    pool: SqlitePool,
    writer: Writer,
    /// The directory of an [`in_memory`](Self::in_memory) store's file, removed when the
    /// last clone of the store is dropped.
    _temp: Option<Arc<tempfile::TempDir>>,
}

fn db<E: Into<BoxError>>(what: &str) -> impl Fn(E) -> Error + '_ {
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
    /// Starts the store's writer thread, which ends when the last clone of the store is
    /// dropped (after committing the writes already sent).
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_file(path.as_ref(), None).await
    }

    /// A private database for one store (and its clones): a temporary file, removed when
    /// the last clone is dropped. For tests and throwaway servers.
    ///
    /// Not an SQLite `:memory:` database: reads (on sqlx connections) and writes (on the
    /// writer thread's rusqlite connection) need one database that several connections
    /// open. A shared-cache in-memory database would do that, but its table locks fail a
    /// read that meets the writer's transaction at once (`SQLITE_LOCKED`, which no busy
    /// timeout waits out), while a file in WAL mode lets reads go on beside the writer, as
    /// [`open`](Self::open) does. Nothing of it is synced to disk (`synchronous = OFF`): the
    /// data does not outlive the store anyway.
    pub async fn in_memory() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("agentkit-sqlite-")
            .tempdir()
            .map_err(db(
                "creating a temporary directory for an in-memory store (is the temporary \
                 directory, $TMPDIR, writable?)",
            ))?;
        let path = dir.path().join("store.db");
        Self::open_file(&path, Some(Arc::new(dir))).await
    }

    async fn open_file(path: &Path, temp: Option<Arc<tempfile::TempDir>>) -> Result<Self> {
        let (synchronous, pragma) = if temp.is_some() {
            (SqliteSynchronous::Off, "OFF")
        } else {
            (SqliteSynchronous::Normal, "NORMAL")
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let opening = |e: BoxError| {
            store_error(
                "sqlite",
                &format!(
                    "opening {} (check that the directory exists and is writable)",
                    path.display()
                ),
                e,
            )
        };
        // The pool's first connection creates the file and switches it to WAL; the
        // migrations run before the writer starts.
        let pool = connect(&options, READERS)
            .await
            .map_err(|e| opening(e.into()))?;
        migrate(&pool).await?;
        let file: PathBuf = path.to_owned();
        let open: writer::Open = Box::new(move || {
            let conn = Connection::open_with_flags(
                &file,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.pragma_update(None, "synchronous", pragma)?;
            Ok(conn)
        });
        let writer = Writer::start(open, temp.clone()).await.map_err(opening)?;
        Ok(Self {
            pool,
            writer,
            _temp: temp,
        })
    }

    /// Close the store's connections, waiting for the writes in progress; writes that were
    /// not started yet fail, and so does every use of the store afterwards.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// The pool reads run on, for inspection and custom queries. Writes made through it do
    /// not go through the store's writer: they take SQLite's write lock on their own.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Apply the embedded migrations (`migrations/sqlite`), adopting a database created by the
/// earlier migration runner first. Everything happens in one `BEGIN IMMEDIATE` transaction
/// (sqlx runs each migration in a savepoint inside it), so processes that open a fresh file
/// at once take turns instead of racing to create the same tables.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let migrator = migrate::named(sqlx::migrate!("migrations/sqlite"));
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db("starting a transaction"))?;
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

/// Connections each [`SqliteStore`] keeps for reads.
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
            // No ping before each use: a broken connection shows in the statement's error
            // anyway.
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
    rows::run_from_columns("sqlite", &SqlxRow(row))
}

fn entry_from_row(row: &SqliteRow) -> Result<JournalEntry> {
    rows::entry_from_columns("sqlite", &SqlxRow(row))
}

/// A row the writer read back (`RETURNING`, a lookup inside a write) as [`Columns`].
struct Written<'a, 'r>(&'a rusqlite::Row<'r>);

impl Written<'_, '_> {
    fn col<T: rusqlite::types::FromSql>(&self, what: &str, name: &str) -> Result<T> {
        self.0
            .get(name)
            .map_err(|e| rows::column_error("sqlite", what, name, e))
    }
}

impl Columns for Written<'_, '_> {
    fn text(&self, _: &str, what: &str, name: &str) -> Result<String> {
        self.col(what, name)
    }
    fn opt_text(&self, _: &str, what: &str, name: &str) -> Result<Option<String>> {
        self.col(what, name)
    }
    fn int(&self, _: &str, what: &str, name: &str) -> Result<i64> {
        self.col(what, name)
    }
    fn opt_int(&self, _: &str, what: &str, name: &str) -> Result<Option<i64>> {
        self.col(what, name)
    }
    fn real(&self, _: &str, what: &str, name: &str) -> Result<f64> {
        self.col(what, name)
    }
}

fn written_run(row: &rusqlite::Row<'_>) -> Result<RunRecord> {
    rows::run_from_columns("sqlite", &Written(row))
}

/// A run row the writer read back, its JSON not parsed yet (see [`rows::run_from_raw`]).
fn written_raw_run(row: &rusqlite::Row<'_>) -> Result<rows::RawRun> {
    rows::raw_run_from_columns("sqlite", &Written(row))
}

/// Run a write statement on the writer's connection: how many rows it changed.
fn execute(c: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<u64> {
    prepare(c, sql)?
        .execute(params)
        .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
}

/// Delete runs `ids` with their journals and signals, in the writer's transaction (what
/// retention and the deletion of one finished run both do).
fn delete_runs(c: &Connection, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = to_json(&ids, "run ids")?;
    for sql in [
        "DELETE FROM journal WHERE run_id IN (SELECT value FROM json_each(?))",
        "DELETE FROM signals WHERE run_id IN (SELECT value FROM json_each(?))",
    ] {
        execute(c, sql, [&list]).map_err(db("deleting finished runs' journals and signals"))?;
    }
    execute(
        c,
        "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))",
        [&list],
    )
    .map_err(db("deleting finished runs"))?;
    Ok(())
}

/// The rows of a statement on the writer's connection, each mapped by `map`; a statement
/// error goes through `err`.
fn query<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    err: impl Fn(rusqlite::Error) -> Error,
    mut map: impl FnMut(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = prepare(c, sql).map_err(&err)?;
    let mut rows = stmt.query(params).map_err(&err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(&err)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// The first row of a statement on the writer's connection, mapped by `map` (`RETURNING`
/// statements make all their changes at their first row).
fn query_first<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    err: impl Fn(rusqlite::Error) -> Error,
    map: impl FnOnce(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut stmt = prepare(c, sql).map_err(&err)?;
    let mut rows = stmt.query(params).map_err(&err)?;
    match rows.next().map_err(&err)? {
        Some(row) => map(row).map(Some),
        None => Ok(None),
    }
}

/// One multi-row `INSERT` for up to [`CHUNK`] journal entries, ready to run on the writer's
/// connection: with what its error names (the first key, the run, how many entries).
struct Insert {
    sql: String,
    params: Vec<rusqlite::types::Value>,
    key: String,
    run_id: String,
    len: usize,
}

impl Insert {
    /// The insert of `chunk`; with a `fence` (`(run id, owner)`), it inserts nothing unless
    /// that run is executed by that owner ([`FENCE_STATUSES`](rows::FENCE_STATUSES)).
    fn new(chunk: &[JournalEntry], fence: Option<(&str, &str)>) -> Result<Self> {
        use rusqlite::types::Value as V;
        let int = |n: u64| V::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        let mut params = Vec::with_capacity(chunk.len() * 9 + 2);
        let mut sql = String::from(
            "INSERT INTO journal (run_id, seq, key, kind, value, latency_ms, usage, cost_usd, created_at) ",
        );
        if fence.is_some() {
            sql.push_str("SELECT * FROM (");
        }
        sql.push_str("VALUES ");
        for (i, e) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?)");
            params.extend([
                V::Text(e.run_id.clone()),
                int(e.seq),
                V::Text(e.key.clone()),
                V::Text(e.kind.as_str().to_owned()),
                V::Text(to_json(&e.value, "a journal value")?),
                int(e.latency_ms),
                V::Text(to_json(&e.usage, "journal usage")?),
                V::Real(e.cost_usd),
                V::Integer(e.created_at),
            ]);
        }
        if let Some((run, owner)) = fence {
            sql.push_str(") AS v WHERE EXISTS (SELECT 1 FROM runs WHERE id = ? AND owner = ?");
            sql.push_str(" AND status IN ");
            sql.push_str(rows::FENCE_STATUSES);
            sql.push(')');
            params.extend([V::Text(run.to_owned()), V::Text(owner.to_owned())]);
        }
        let (key, run_id) = chunk
            .first()
            .map(|e| (e.key.clone(), e.run_id.clone()))
            .unwrap_or_default();
        Ok(Self {
            sql,
            params,
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
    fn run(self, c: &Connection) -> Result<u64> {
        execute(c, &self.sql, rusqlite::params_from_iter(&self.params))
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
                let inserted = execute(
                    c,
                    "INSERT INTO runs (id, target, version, input, status, attempts,
                        idempotency_key, created_at, updated_at, output, error, usage,
                        cost_usd, owner, lease_until, wake_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, 0, ?, ?, ?)
                     ON CONFLICT (idempotency_key) DO NOTHING",
                    rusqlite::params![
                        rec.id,
                        rec.target,
                        i64::from(rec.version),
                        input,
                        rec.status.as_str(),
                        i64::from(rec.attempts),
                        rec.idempotency_key,
                        rec.created_at,
                        rec.updated_at,
                        usage,
                        rec.owner,
                        rec.lease_until,
                        rec.wake_at,
                    ],
                )
                .map_err(|e| store_error("sqlite", &format!("storing run {}", rec.id), e))?;
                if inserted == 1 {
                    return Ok(Created::New(rec));
                }
                query_first(
                    c,
                    "SELECT * FROM runs WHERE idempotency_key = ?",
                    [&rec.idempotency_key],
                    db("looking up an idempotency key"),
                    written_run,
                )?
                .map(Created::Existing)
                .ok_or_else(|| {
                    store_error(
                        "sqlite",
                        "looking up an idempotency key",
                        format!(
                            "run {} was not stored and no run has its idempotency key",
                            rec.id
                        ),
                    )
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
                let ids: Vec<String> = query(
                    c,
                    "SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')
                        AND updated_at < ? ORDER BY updated_at, id LIMIT ?",
                    [before, limit],
                    db("finding finished runs to delete"),
                    |row| row.get(0).map_err(db("finding finished runs to delete")),
                )?;
                delete_runs(c, &ids)?;
                Ok(ids)
            })
            .await
    }

    async fn delete_finished_run(&self, run_id: &str) -> Result<bool> {
        let run_id = run_id.to_owned();
        self.writer
            .write(Statements::Several, move |c| {
                let ids: Vec<String> = query(
                    c,
                    "SELECT id FROM runs WHERE id = ?
                        AND status IN ('succeeded', 'failed', 'cancelled')",
                    [&run_id],
                    db("finding a finished run to delete"),
                    |row| row.get(0).map_err(db("finding a finished run to delete")),
                )?;
                delete_runs(c, &ids)?;
                Ok(!ids.is_empty())
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
                query_first(
                    c,
                    "UPDATE runs SET status = ?, attempts = attempts + ?,
                        output = COALESCE(?, output), error = COALESCE(?, error),
                        usage = COALESCE(?, usage), cost_usd = COALESCE(?, cost_usd),
                        updated_at = ?, wake_at = ?, waiting_for = ?
                     WHERE id = ? AND status IN (SELECT value FROM json_each(?))
                        AND (? IS NULL OR owner = ?)
                     RETURNING *",
                    rusqlite::params![
                        update.status.as_str(),
                        i64::from(update.increment_attempts),
                        output,
                        update.error,
                        usage,
                        update.cost_usd,
                        now_ms(),
                        update.wake_at,
                        waiting_for,
                        run_id,
                        from,
                        update.owner_fence,
                        update.owner_fence,
                    ],
                    |e| store_error("sqlite", &format!("updating run {run_id}"), e),
                    written_raw_run,
                )
            })
            .await?
            .map(|raw| rows::run_from_raw("sqlite", raw))
            .transpose()
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
                for insert in inserts {
                    insert.run(c)?;
                }
                Ok(())
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
                for insert in inserts {
                    let want = u64::try_from(insert.len).unwrap_or(u64::MAX);
                    if insert.run(c)? != want {
                        // Fenced out: fail the job so its savepoint rolls back what an
                        // earlier chunk inserted.
                        return Err(rows::fenced_out(&run_id));
                    }
                }
                Ok(())
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
                let inserted = execute(
                    c,
                    "INSERT INTO signals (run_id, name, payload, created_at)
                     SELECT id, ?, ?, ? FROM runs WHERE id = ?",
                    rusqlite::params![name, payload, now_ms(), run_id],
                )
                .map_err(db("storing a signal"))?;
                if inserted == 0 {
                    return Err(Error::Workflow(format!(
                        "cannot signal run {run_id}: no such run"
                    )));
                }
                Ok(())
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
        self.deliver_signal(run_id, name, entry, Some(owner.to_owned()))
            .await
    }

    async fn fence_replayed_signal(&self, run_id: &str, owner: &str) -> Result<()> {
        let (run_id, owner) = (run_id.to_owned(), owner.to_owned());
        // A job of the writer, which makes every status change: no change is in flight.
        self.writer
            .write(Statements::One, move |c| {
                live_under(
                    c,
                    &run_id,
                    &owner,
                    "checking the run before a replayed signal",
                )
            })
            .await
    }
}

/// `Ok` if run `run_id` is executed by `owner` ([`FENCE_STATUSES`](rows::FENCE_STATUSES)),
/// read on the writer's connection; else [`rows::fenced_out`]. `what`: what the read is for.
fn live_under(c: &Connection, run_id: &str, owner: &str, what: &'static str) -> Result<()> {
    let sql = format!(
        "SELECT 1 FROM runs WHERE id = ? AND owner = ? AND status IN {}",
        rows::FENCE_STATUSES
    );
    match query_first(c, &sql, [run_id, owner], db(what), |_| Ok(()))? {
        Some(()) => Ok(()),
        None => Err(rows::fenced_out(run_id)),
    }
}

impl SqliteStore {
    /// [`SignalStore::take_signal`], and with `owner` [`SignalStore::take_signal_fenced`]:
    /// one job of the writer, which also makes every status change, so the check and the
    /// delivery see no change between them.
    async fn deliver_signal(
        &self,
        run_id: &str,
        name: &str,
        mut entry: JournalEntry,
        owner: Option<String>,
    ) -> Result<Option<Value>> {
        let (run_id, name) = (run_id.to_owned(), name.to_owned());
        self.writer
            .write(Statements::Several, move |c| {
                if let Some(owner) = owner {
                    live_under(
                        c,
                        &run_id,
                        &owner,
                        "checking the run before delivering a signal",
                    )?;
                }
                let payload = query_first(
                    c,
                    "UPDATE signals SET delivered = 1 WHERE id = (
                        SELECT id FROM signals WHERE run_id = ? AND name = ? AND delivered = 0
                        ORDER BY id LIMIT 1)
                     RETURNING payload",
                    [&run_id, &name],
                    db("delivering a signal"),
                    |row| {
                        row.get::<_, String>("payload")
                            .map_err(db("reading a signal payload"))
                    },
                )?;
                let Some(payload) = payload else {
                    return Ok(None);
                };
                let payload: Value = from_json(&payload, "a signal payload")?;
                entry.value = payload.clone();
                Insert::new(std::slice::from_ref(&entry), None)?.run(c)?;
                Ok(Some(payload))
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
                let now = now_ms();
                query_first(
                    c,
                    "UPDATE runs SET status = 'running', attempts = attempts + 1, owner = ?,
                        lease_until = ?, updated_at = ?, wake_at = NULL
                     WHERE id = ? AND ((status = 'queued' AND (wake_at IS NULL OR wake_at <= ?))
                        OR (status = 'running'
                        AND (lease_until IS NULL OR lease_until < ?)))
                     RETURNING *",
                    rusqlite::params![owner, lease_until, now, run_id, now, now],
                    |e| store_error("sqlite", &format!("claiming run {run_id}"), e),
                    written_run,
                )
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
                let now = now_ms();
                query(
                    c,
                    "UPDATE runs SET status = 'running', attempts = attempts + 1, owner = ?,
                        lease_until = ?, updated_at = ?, wake_at = NULL
                     WHERE id IN (SELECT id FROM runs
                        WHERE target IN (SELECT value FROM json_each(?))
                          AND ((status = 'queued' AND (wake_at IS NULL OR wake_at <= ?))
                               OR (status = 'running'
                               AND (lease_until IS NULL OR lease_until < ?)))
                        ORDER BY created_at, id LIMIT ?)
                     RETURNING *",
                    rusqlite::params![owner, lease_until, now, targets, now, now, limit],
                    db("claiming runs"),
                    written_run,
                )
                .map(oldest_first)
            })
            .await
    }

    async fn renew_leases(&self, owner: &str, run_ids: &[String], lease_until: i64) -> Result<u64> {
        let run_ids = to_json(&run_ids, "run ids")?;
        let owner = owner.to_owned();
        self.writer
            .write(Statements::One, move |c| {
                execute(
                    c,
                    "UPDATE runs SET lease_until = ?
                     WHERE owner = ? AND status = 'running'
                        AND id IN (SELECT value FROM json_each(?))",
                    rusqlite::params![lease_until, owner, run_ids],
                )
                .map_err(db("renewing leases"))
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
                execute(
                    c,
                    "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                        expires_at = excluded.expires_at",
                    rusqlite::params![namespace, key, value, expires_at],
                )
                .map_err(db("storing a context value"))?;
                Ok(())
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
                Ok(query_first(
                    c,
                    "DELETE FROM kv WHERE namespace = ? AND key = ?
                     RETURNING (expires_at IS NULL OR expires_at > ?) AS live",
                    rusqlite::params![namespace, key, now_ms()],
                    db("deleting a context value"),
                    |row| {
                        row.get::<_, bool>("live")
                            .map_err(db("deleting a context value"))
                    },
                )?
                .unwrap_or(false))
            })
            .await
    }
}

const DOC_COLUMNS: &str = "id, value, revision, created_at, updated_at";

/// A document write with its value encoded, ready for the writer.
struct PreparedDoc {
    collection: String,
    id: String,
    /// The value as given: the written document's value (what is stored is its JSON text,
    /// so reading it back would give the same value).
    value: Value,
    json: String,
    expect: Expect,
}

impl PreparedDoc {
    fn new(collection: String, id: String, value: Value, expect: Expect) -> Result<Self> {
        Ok(Self {
            json: to_json(&value, "a document")?,
            collection,
            id,
            value,
            expect,
        })
    }

    /// Makes the write on `c` (inside the writer's transaction); `None` when `expect` did
    /// not hold (nothing written).
    fn run(self, c: &Connection, now: i64) -> Result<Option<Doc>> {
        let revision = match self.expect {
            Expect::Revision(r) => Some(i64::try_from(r).unwrap_or(i64::MAX)),
            Expect::Any | Expect::Absent => None,
        };
        let mut params: Vec<&dyn rusqlite::ToSql> =
            vec![&self.collection, &self.id, &self.json, &now];
        if let Some(r) = &revision {
            params.push(r);
        }
        if self.expect == Expect::Absent {
            // A create is revision 1 written now: nothing to read back.
            let inserted = execute(c, doc_put_sql(self.expect), params.as_slice())
                .map_err(db("writing a document"))?;
            return Ok((inserted == 1).then_some(Doc {
                id: self.id,
                value: self.value,
                revision: 1,
                created_at: now,
                updated_at: now,
            }));
        }
        let written = query_first(
            c,
            doc_put_sql(self.expect),
            params.as_slice(),
            db("writing a document"),
            |row| {
                let col = |i: usize, name: &str| {
                    row.get::<_, i64>(i).map_err(|e| {
                        rows::column_error(
                            "sqlite",
                            &format!("document `{}` of collection `{}`", self.id, self.collection),
                            name,
                            e,
                        )
                    })
                };
                Ok((
                    col(0, "revision")?,
                    col(1, "created_at")?,
                    col(2, "updated_at")?,
                ))
            },
        )?;
        let Some((revision, created_at, updated_at)) = written else {
            return Ok(None);
        };
        rows::written_doc(
            "sqlite",
            self.collection.as_str(),
            self.id,
            self.value,
            (revision, created_at, updated_at),
        )
        .map(Some)
    }
}

/// The statement of a document write expecting `expect`: binds collection, id, value, now
/// (and the revision). An update returns the written row's revision, created_at and
/// updated_at; a create (`Expect::Absent`) returns nothing, since what it stores is known
/// (and SQLite answers `RETURNING` through a temporary table per statement).
fn doc_put_sql(expect: Expect) -> &'static str {
    match expect {
        Expect::Any => {
            "INSERT INTO docs (collection, id, value, revision, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)
             ON CONFLICT (collection, id) DO UPDATE SET value = excluded.value,
                revision = docs.revision + 1, updated_at = excluded.updated_at
             RETURNING revision, created_at, updated_at"
        }
        Expect::Absent => {
            "INSERT INTO docs (collection, id, value, revision, created_at, updated_at)
             VALUES (?1, ?2, ?3, 1, ?4, ?4)
             ON CONFLICT (collection, id) DO NOTHING"
        }
        Expect::Revision(_) => {
            "UPDATE docs SET value = ?3, revision = revision + 1, updated_at = ?4
             WHERE collection = ?1 AND id = ?2 AND revision = ?5
             RETURNING revision, created_at, updated_at"
        }
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
        let write = PreparedDoc::new(collection.to_owned(), id.to_owned(), value, expect)?;
        let now = now_ms();
        self.writer
            .write(Statements::One, move |c| write.run(c, now))
            .await
    }

    async fn doc_put_many(&self, writes: Vec<DocWrite>) -> Result<Vec<Doc>> {
        let writes = writes
            .into_iter()
            .map(|w| PreparedDoc::new(w.collection, w.id, w.value, w.expect))
            .collect::<Result<Vec<_>>>()?;
        let statements = if writes.len() == 1 {
            Statements::One
        } else {
            Statements::Several
        };
        let now = now_ms();
        self.writer
            .write(statements, move |c| {
                let mut done = Vec::with_capacity(writes.len());
                for w in writes {
                    match w.run(c, now)? {
                        Some(doc) => done.push(doc),
                        None => break,
                    }
                }
                Ok(done)
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
        .map(|row| rows::doc_from_columns("sqlite", &SqlxRow(&row), collection))
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
                Ok(execute(
                    c,
                    "DELETE FROM docs WHERE collection = ?1 AND id = ?2
                        AND (?3 IS NULL OR revision = ?3)",
                    rusqlite::params![collection, id, revision],
                )
                .map_err(db("deleting a document"))?
                    > 0)
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
        .map(|row| rows::doc_from_columns("sqlite", &SqlxRow(row), collection))
        .collect()
    }
}
