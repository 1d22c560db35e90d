//! The SQLite [`Store`](super::Store): one file, WAL, migrations embedded and run on open.

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
use sqlx::{Row, Sqlite, Transaction};

use super::migrate;
use super::rows::{self, CHUNK, append_error};
use super::{
    DocStore, JournalStore, KvStore, LeaseStore, RunStore, SignalStore, oldest_first, store_error,
};
use crate::model::{
    Created, Doc, Expect, JournalEntry, NewRun, RunQuery, RunRecord, RunUpdate, now_ms,
};

/// A [`Store`](super::Store) in one SQLite file (WAL mode, `synchronous = NORMAL`).
///
/// One runtime process per file: SQLite has no leases, so a process that opens the file treats
/// runs left `running` as orphaned by a dead process and resumes them. Several processes sharing
/// work need the PostgreSQL store (not yet implemented).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Switching a fresh file to WAL answers SQLITE_BUSY at once (no busy handler) when
        // another process is creating the same file: retry that, briefly, with jitter.
        let busy = |e: &sqlx::Error| {
            e.as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| c == "5" || c == "6")
        };
        let connect = || {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.clone())
        };
        let pool = backon::Retryable::retry(
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
        .map_err(|e| {
            store_error(
                "sqlite",
                &format!(
                    "opening {} (check that the directory exists and is writable)",
                    path.display()
                ),
                e,
            )
        })?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A private in-memory database (one connection; for tests).
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db("parsing the in-memory URL"))?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db("opening an in-memory database"))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool, for inspection and custom queries.
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
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db("starting a transaction"))
    }
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

/// One multi-row `INSERT` for up to [`CHUNK`] journal entries.
fn insert_query(chunk: &[JournalEntry]) -> Result<sqlx::QueryBuilder<Sqlite>> {
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
    Ok(q)
}

/// Insert journal entries inside a transaction, [`CHUNK`] rows per statement.
async fn insert_entries(
    tx: &mut Transaction<'static, Sqlite>,
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

#[async_trait]
impl RunStore for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<Created> {
        let rec = RunRecord::new(run);
        let inserted = sqlx::query(
            "INSERT INTO runs (id, target, version, input, status, attempts, idempotency_key,
                created_at, updated_at, output, error, usage, cost_usd, owner, lease_until,
                wake_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, 0, ?, ?, ?)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&rec.id)
        .bind(&rec.target)
        .bind(i64::from(rec.version))
        .bind(to_json(&rec.input, "a run input")?)
        .bind(rec.status.as_str())
        .bind(i64::from(rec.attempts))
        .bind(&rec.idempotency_key)
        .bind(rec.created_at)
        .bind(rec.updated_at)
        .bind(to_json(&rec.usage, "run usage")?)
        .bind(&rec.owner)
        .bind(rec.lease_until)
        .bind(rec.wake_at)
        .execute(&self.pool)
        .await
        .map_err(|e| store_error("sqlite", &format!("storing run {}", rec.id), e))?
        .rows_affected();
        if inserted == 1 {
            return Ok(Created::New(rec));
        }
        let row = sqlx::query("SELECT * FROM runs WHERE idempotency_key = ?")
            .bind(&rec.idempotency_key)
            .fetch_one(&self.pool)
            .await
            .map_err(db("looking up an idempotency key"))?;
        Ok(Created::Existing(run_from_row(&row)?))
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
        let mut tx = self.immediate().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'cancelled')
                AND updated_at < ? ORDER BY updated_at, id LIMIT ?",
        )
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
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
            .execute(&mut *tx)
            .await
            .map_err(db("deleting finished runs' journals and signals"))?;
        }
        sqlx::query("DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))")
            .bind(&list)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting finished runs"))?;
        tx.commit()
            .await
            .map_err(db("committing the deletion of finished runs"))?;
        Ok(ids)
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
        sqlx::query(
            "UPDATE runs SET status = ?, attempts = attempts + ?,
                output = COALESCE(?, output), error = COALESCE(?, error),
                usage = COALESCE(?, usage), cost_usd = COALESCE(?, cost_usd), updated_at = ?,
                wake_at = ?
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
        .bind(run_id)
        .bind(statuses_json(from)?)
        .bind(&update.owner_fence)
        .bind(&update.owner_fence)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| store_error("sqlite", &format!("updating run {run_id}"), e))?
        .as_ref()
        .map(run_from_row)
        .transpose()
    }
}

#[async_trait]
impl JournalStore for SqliteStore {
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
        let mut tx = self.immediate().await?;
        insert_entries(&mut tx, entries).await?;
        tx.commit().await.map_err(db("committing journal entries"))
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
        let mut tx = self.immediate().await?;
        let exists = sqlx::query("SELECT 1 FROM runs WHERE id = ?")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("looking up a run"))?
            .is_some();
        if !exists {
            return Err(Error::Workflow(format!(
                "cannot signal run {run_id}: no such run"
            )));
        }
        sqlx::query("INSERT INTO signals (run_id, name, payload, created_at) VALUES (?, ?, ?, ?)")
            .bind(run_id)
            .bind(name)
            .bind(to_json(&payload, "a signal payload")?)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db("storing a signal"))?;
        tx.commit().await.map_err(db("committing a signal"))
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

    async fn take_signal(
        &self,
        run_id: &str,
        name: &str,
        mut entry: JournalEntry,
    ) -> Result<Option<Value>> {
        let mut tx = self.immediate().await?;
        let row = sqlx::query(
            "UPDATE signals SET delivered = 1 WHERE id = (
                SELECT id FROM signals WHERE run_id = ? AND name = ? AND delivered = 0
                ORDER BY id LIMIT 1)
             RETURNING payload",
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
impl LeaseStore for SqliteStore {
    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<RunRecord>> {
        let now = now_ms();
        sqlx::query(
            "UPDATE runs SET status = 'running', attempts = attempts + 1, owner = ?,
                lease_until = ?, updated_at = ?, wake_at = NULL
             WHERE id = ? AND ((status = 'queued' AND (wake_at IS NULL OR wake_at <= ?))
                OR (status = 'running'
                AND (lease_until IS NULL OR lease_until < ?)))
             RETURNING *",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(run_id)
        .bind(now)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| store_error("sqlite", &format!("claiming run {run_id}"), e))?
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
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(to_json(&targets, "targets")?)
        .bind(now)
        .bind(now)
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
            "UPDATE runs SET lease_until = ?
             WHERE owner = ? AND status = 'running' AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(lease_until)
        .bind(owner)
        .bind(to_json(&run_ids, "run ids")?)
        .execute(&self.pool)
        .await
        .map_err(db("renewing leases"))?
        .rows_affected())
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
        sqlx::query(
            "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value,
                expires_at = excluded.expires_at",
        )
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
        let row = sqlx::query(
            "DELETE FROM kv WHERE namespace = ? AND key = ?
             RETURNING (expires_at IS NULL OR expires_at > ?) AS live",
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

const DOC_COLUMNS: &str = "id, value, revision, created_at, updated_at";

#[async_trait]
impl DocStore for SqliteStore {
    async fn doc_put(
        &self,
        collection: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<Option<Doc>> {
        let value = to_json(&value, "a document")?;
        let now = now_ms();
        let sql = match expect {
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
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(collection)
            .bind(id)
            .bind(value)
            .bind(now);
        if let Expect::Revision(r) = expect {
            q = q.bind(i64::try_from(r).unwrap_or(i64::MAX));
        }
        q.fetch_optional(&self.pool)
            .await
            .map_err(db("writing a document"))?
            .map(|row| rows::doc_from_row("sqlite", &row, collection))
            .transpose()
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
        Ok(sqlx::query(
            "DELETE FROM docs WHERE collection = ?1 AND id = ?2 AND (?3 IS NULL OR revision = ?3)",
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
