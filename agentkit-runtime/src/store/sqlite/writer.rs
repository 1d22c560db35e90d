//! Group commit: every write of a [`SqliteStore`](super::SqliteStore) goes through one thread
//! that owns the write connection.
//!
//! SQLite has one writer at a time, and what a write transaction costs is mostly its
//! `COMMIT` (the WAL append, the lock hand-over between connections; with several
//! connections writing at once, also the busy handler's sleeps). So the store does not let
//! callers write on their own connections: each write is a *job* sent to the writer thread,
//! which takes every job queued (up to [`MAX_BATCH`]), runs them in one
//! `BEGIN IMMEDIATE … COMMIT` and only then answers their callers. Under load, many writes
//! share one commit; a lone write runs at once, as before.
//!
//! The writer is a thread of its own with a [`rusqlite::Connection`], not a task on a pool
//! connection of sqlx: sqlx runs each statement on its connection's worker thread and hands
//! the statement and its result across a channel, two thread wake-ups per statement. Here a
//! batch costs one wake-up of the writer (when it was idle) and one answer per caller, and
//! its statements run back to back, prepared once and kept ([`prepare`]).
//!
//! Each job still succeeds or fails on its own:
//!
//! - a job of one statement ([`Statements::One`]) needs nothing more: SQLite undoes a
//!   statement that fails (a constraint, a type error) and keeps the transaction;
//! - a job of several statements ([`Statements::Several`]) runs inside a `SAVEPOINT`, rolled
//!   back to when the job fails, so none of its statements stays;
//! - a failure that makes SQLite roll back the whole transaction (I/O errors, a full disk,
//!   out of memory) is noticed at once: the jobs that ran in it are answered with an error
//!   (nothing of them was stored) and the jobs not yet run go on in a new transaction.
//!
//! Durability is the same as one transaction per write: a caller is answered only after the
//! `COMMIT` that holds its write (or with an error when that `COMMIT` fails). A caller that
//! stops waiting (its future dropped) after its job was queued does not take the job back;
//! like a statement already sent, it commits or not. The thread ends when the last handle
//! ([`Writer`]) is dropped, after answering every job already sent.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use agentkit_core::{BoxError, Error, Result};
use rusqlite::{CachedStatement, Connection};
use tokio::sync::oneshot;

use crate::store::store_error;

/// At most this many jobs share one transaction: enough to amortise the commit, few enough
/// that no caller waits long behind the others.
const MAX_BATCH: usize = 512;

/// How long the checkpointer waits after a checkpoint before the next one: the commits in
/// between share the next one (under load, four checkpoints a second).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// With a [`Checkpointer`], the write connection checkpoints when the WAL holds this many
/// pages (SQLite's default is 1,000): what keeps the WAL from growing when writes never
/// pause long enough for it to start over.
const WRITER_CHECKPOINT_PAGES: i64 = 8_000;

/// How many prepared statements the write connection keeps (the writes' statements, the
/// journal inserts of a few sizes, the transaction statements).
const CACHED_STATEMENTS: usize = 64;

/// The `tracing` target the writer logs each statement of a write under (level `DEBUG`, the
/// SQL in field `db.statement`, as sqlx logs its statements under `sqlx::query`).
pub(super) const STATEMENT_TARGET: &str = "agentkit_runtime::store::sqlite::write";

/// How many statements of a job write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Statements {
    /// One (reads besides it are fine): SQLite undoes it on its own when it fails.
    One,
    /// Several: the job runs in a savepoint, so a failure part-way keeps none of them.
    Several,
}

/// Why the jobs of a transaction were not stored although they ran without error.
struct Abort {
    context: &'static str,
    message: String,
}

impl Abort {
    fn new(context: &'static str, message: impl Into<String>) -> Self {
        Self {
            context,
            message: message.into(),
        }
    }

    fn error(&self) -> Error {
        store_error("sqlite", self.context, self.message.clone())
    }
}

/// Sends a job's result to its caller: its own result, or the abort's error when it ran
/// without error but its transaction was not committed.
type Answer = Box<dyn FnOnce(Option<&Abort>) + Send>;

/// What running a job gives the writer: its error message when it failed, and its answer.
type Ran = (Option<String>, Answer);

/// Runs a job on the connection, or (given an abort) answers it with the abort's error
/// without running it.
type Run = Box<dyn FnOnce(std::result::Result<&Connection, &Abort>) -> Ran + Send>;

struct Job {
    statements: Statements,
    run: Run,
}

enum Message {
    Write(Job),
    /// Close the connection once the jobs sent before are answered; fail later ones.
    Close(oneshot::Sender<()>),
}

/// Opens the write connection: at start, and again when a failed `COMMIT` or `ROLLBACK` left
/// the connection in an unknown state.
pub(super) type Open = Box<dyn Fn() -> rusqlite::Result<Connection> + Send>;

fn stopped() -> Error {
    store_error(
        "sqlite",
        "writing",
        "the store's writer thread has stopped (it could not be started or it panicked); open \
         the store again",
    )
}

/// The handle callers send their writes through; cheap to clone. The writer thread ends when
/// the last handle is dropped, after answering every job already sent.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Message>,
}

impl Writer {
    /// Start the writer thread: it opens its connection with `open` (the error comes back
    /// here) and keeps `keep` until it ends (what must outlive the connection).
    pub(super) async fn start<K: Send + 'static>(
        open: Open,
        keep: K,
    ) -> std::result::Result<Self, BoxError> {
        let (jobs, rx) = mpsc::channel();
        let (opened, was_opened) = oneshot::channel();
        std::thread::Builder::new()
            .name("agentkit-sqlite-writer".into())
            .spawn(move || {
                let conn = match open().and_then(configure) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                let checkpointer = Checkpointer::start(&open, &conn);
                if opened.send(Ok(())).is_ok() {
                    writer_loop(conn, &open, &rx, checkpointer);
                }
                drop(keep);
            })?;
        match was_opened.await {
            Ok(Ok(())) => Ok(Self { jobs }),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(stopped().into()),
        }
    }

    /// Run `write` on the write connection, in a transaction it may share with other
    /// callers' writes, and return its result once that transaction is committed.
    /// `statements` says how many statements of `write` write.
    pub(super) async fn write<T, F>(&self, statements: Statements, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run: Run = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(abort) => {
                    let _ = tx.send(Err(abort.error()));
                    let answered: Answer = Box::new(|_| {});
                    return (None, answered);
                }
            };
            let result = write(conn);
            let failed = result.as_ref().err().map(ToString::to_string);
            let answer: Answer = Box::new(move |abort| {
                let result = match (result, abort) {
                    (Ok(_), Some(abort)) => Err(abort.error()),
                    (result, _) => result,
                };
                // The caller may have stopped waiting; its write is settled either way.
                let _ = tx.send(result);
            });
            (failed, answer)
        });
        self.jobs
            .send(Message::Write(Job { statements, run }))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Answer the writes sent so far, then close the write connection: later writes fail.
    pub(super) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Message::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What every write connection gets, however it was opened.
fn configure(conn: Connection) -> rusqlite::Result<Connection> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(CACHED_STATEMENTS);
    Ok(conn)
}

/// A prepared statement of the write connection, kept for the next write with the same SQL;
/// logs `sql` under [`STATEMENT_TARGET`].
pub(super) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
) -> rusqlite::Result<CachedStatement<'c>> {
    tracing::event!(target: STATEMENT_TARGET, tracing::Level::DEBUG, db.statement = sql);
    conn.prepare_cached(sql)
}

/// WAL checkpoints off the writer thread: a thread of its own, with its own connection, runs
/// a `PASSIVE` checkpoint after commits (at most one per [`CHECKPOINT_EVERY`]), and the write
/// connection checkpoints only when the WAL holds [`WRITER_CHECKPOINT_PAGES`].
///
/// A checkpoint copies the WAL's pages into the database file and syncs both. Done by the
/// committing connection (SQLite's default, every 1,000 pages), it stalled every write queued
/// behind that commit for milliseconds. A `PASSIVE` checkpoint takes no lock a writer needs,
/// so writes go on beside it. But the WAL starts over from its beginning only when a write
/// finds it wholly copied, which under a steady stream of writes a checkpoint beside them
/// rarely leaves it: so the writer still checkpoints, eight times less often, and then has
/// little left to copy.
struct Checkpointer {
    state: Arc<CheckpointState>,
    thread: std::thread::JoinHandle<()>,
}

/// What the writer tells the checkpointer, without waking it for every commit.
#[derive(Default)]
struct CheckpointState {
    /// A commit happened since the last checkpoint began.
    due: AtomicBool,
    /// Close the connection and end.
    stop: AtomicBool,
}

impl Checkpointer {
    /// Start the checkpointer for the writer's connection `writer`; `None` when it could not
    /// be started (its connection did not open): the write connection then checkpoints as
    /// before.
    fn start(open: &Open, writer: &Connection) -> Option<Self> {
        let conn = match open().and_then(configure) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "sqlite store: the checkpoint connection did not open; the writer checkpoints the WAL itself");
                return None;
            }
        };
        let state = Arc::new(CheckpointState::default());
        let shared = Arc::clone(&state);
        let thread = match std::thread::Builder::new()
            .name("agentkit-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &shared))
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "sqlite store: the checkpoint thread did not start; the writer checkpoints the WAL itself");
                return None;
            }
        };
        let this = Self { state, thread };
        if let Err(e) = fewer_autocheckpoints(writer) {
            tracing::warn!(error = %e, "sqlite store: the writer keeps checkpointing the WAL itself");
            this.stop();
            return None;
        }
        Some(this)
    }

    /// A transaction was committed: a checkpoint is due. Wakes the thread only for the first
    /// commit after a checkpoint began (the others find it due already).
    fn committed(&self) {
        if !self.state.due.swap(true, Ordering::AcqRel) {
            self.thread.thread().unpark();
        }
    }

    /// Stop the thread and wait until its connection is closed.
    fn stop(self) {
        self.state.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// The write connection leaves checkpoints to the [`Checkpointer`] up to
/// [`WRITER_CHECKPOINT_PAGES`].
fn fewer_autocheckpoints(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
}

fn checkpoint_loop(conn: &Connection, state: &CheckpointState) {
    let stopping = || state.stop.load(Ordering::Acquire);
    let mut last: Option<std::time::Instant> = None;
    loop {
        while !state.due.load(Ordering::Acquire) && !stopping() {
            std::thread::park();
        }
        // Commits in the next moments share this checkpoint.
        if let Some(deadline) = last.map(|t| t + CHECKPOINT_EVERY) {
            loop {
                let now = std::time::Instant::now();
                if now >= deadline || stopping() {
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
        if stopping() {
            return;
        }
        state.due.store(false, Ordering::Release);
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "sqlite store: a WAL checkpoint failed; the next commit tries again");
        }
        last = Some(std::time::Instant::now());
    }
}

fn writer_loop(
    conn: Connection,
    open: &Open,
    rx: &mpsc::Receiver<Message>,
    mut checkpointer: Option<Checkpointer>,
) {
    let mut conn = Some(conn);
    let mut closed = false;
    let mut queue: VecDeque<Message> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv() {
                Ok(message) => queue.push_back(message),
                Err(_) => {
                    if let Some(c) = checkpointer.take() {
                        c.stop();
                    }
                    return;
                }
            }
        }
        while queue.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(message) => queue.push_back(message),
                Err(_) => break,
            }
        }
        let mut batch = Vec::with_capacity(queue.len().min(MAX_BATCH));
        while batch.len() < MAX_BATCH {
            match queue.pop_front() {
                Some(Message::Write(job)) => batch.push(job),
                Some(close @ Message::Close(_)) => {
                    queue.push_front(close);
                    break;
                }
                None => break,
            }
        }
        if batch.is_empty() {
            if let Some(Message::Close(done)) = queue.pop_front() {
                if let Some(c) = checkpointer.take() {
                    c.stop();
                }
                conn = None;
                closed = true;
                let _ = done.send(());
            }
            continue;
        }
        if closed {
            let abort = Abort::new(
                "writing",
                "the store was closed (SqliteStore::close); open it again to write",
            );
            fail_all(batch, &abort);
            continue;
        }
        let c = match &conn {
            Some(c) => c,
            None => match open().and_then(configure).and_then(|c| {
                if checkpointer.is_some() {
                    fewer_autocheckpoints(&c)?;
                }
                Ok(c)
            }) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let abort = Abort::new("reopening the write connection", e.to_string());
                    fail_all(batch, &abort);
                    continue;
                }
            },
        };
        let (not_run, usable) = run_batch(c, batch);
        if let Some(c) = &checkpointer {
            c.committed();
        }
        if !usable {
            // Left in an unknown state (a failed `COMMIT` or `ROLLBACK`): the next batch
            // gets a fresh connection.
            conn = None;
        }
        for job in not_run.into_iter().rev() {
            queue.push_front(Message::Write(job));
        }
    }
}

/// Answer jobs that cannot run with `abort`'s error.
fn fail_all(jobs: Vec<Job>, abort: &Abort) {
    tracing::warn!(context = abort.context, error = %abort.message, jobs = jobs.len(), "sqlite store: writes failed before they ran");
    for job in jobs {
        let (_, answer) = (job.run)(Err(abort));
        answer(Some(abort));
    }
}

/// Run one batch and answer its callers; returns the jobs that did not run because SQLite
/// rolled the transaction back under them (to run in the next batch), and whether the
/// connection is still usable (no transaction left open).
fn run_batch(conn: &Connection, jobs: Vec<Job>) -> (Vec<Job>, bool) {
    if let [job] = jobs.as_slice()
        && job.statements == Statements::One
    {
        // A lone one-statement write commits on its own: no transaction round trips.
        for job in jobs {
            let (_, answer) = (job.run)(Ok(conn));
            answer(None);
        }
        return (Vec::new(), conn.is_autocommit());
    }
    let alone = jobs.len() == 1;
    tracing::trace!(
        writes = jobs.len(),
        "sqlite store: one transaction for a batch of writes"
    );
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let abort = Abort::new("starting a write transaction", e);
        fail_all(jobs, &abort);
        return (Vec::new(), conn.is_autocommit());
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    let mut lone_failed = false;
    let mut lost: Option<(Abort, Option<Job>)> = None;
    for job in jobs.by_ref() {
        let savepoint = !alone && job.statements == Statements::Several;
        if savepoint && let Err(e) = exec(conn, "SAVEPOINT agentkit_write") {
            lost = Some((Abort::new("opening a savepoint for a write", e), Some(job)));
            break;
        }
        let (failed, answer) = (job.run)(Ok(conn));
        answers.push(answer);
        let outcome = match failed {
            None if savepoint => exec(conn, "RELEASE agentkit_write")
                .map_err(|e| Abort::new("releasing the savepoint of a write", e)),
            None => Ok(()),
            Some(_) if alone => {
                lone_failed = true;
                Ok(())
            }
            // The failed statement took the whole transaction with it.
            Some(failed) if conn.is_autocommit() => Err(rolled_back(&failed)),
            Some(_) if savepoint => exec(conn, "ROLLBACK TO agentkit_write")
                .and_then(|()| exec(conn, "RELEASE agentkit_write"))
                .map_err(|e| Abort::new("rolling back the savepoint of a failed write", e)),
            Some(_) => Ok(()),
        };
        if let Err(abort) = outcome {
            lost = Some((abort, None));
            break;
        }
    }
    if let Some((abort, unrun)) = lost {
        // Whatever SQLite kept of the transaction goes: the callers are told nothing was
        // stored.
        let usable = conn.is_autocommit() || exec(conn, "ROLLBACK").is_ok();
        for answer in answers {
            answer(Some(&abort));
        }
        let mut rest: Vec<Job> = unrun.into_iter().collect();
        rest.extend(jobs);
        return (rest, usable);
    }
    let settled = if lone_failed {
        if conn.is_autocommit() {
            Ok(())
        } else {
            exec(conn, "ROLLBACK").map_err(|e| Abort::new("rolling back a failed write", e))
        }
    } else {
        exec(conn, "COMMIT").map_err(|e| Abort::new("committing a batch of writes", e))
    };
    let usable = match settled {
        Ok(()) => {
            answers.into_iter().for_each(|a| a(None));
            conn.is_autocommit()
        }
        Err(abort) => {
            let usable = conn.is_autocommit() || exec(conn, "ROLLBACK").is_ok();
            for answer in answers {
                answer(Some(&abort));
            }
            usable
        }
    };
    (Vec::new(), usable)
}

fn rolled_back(failed: &str) -> Abort {
    Abort::new(
        "a batch of writes",
        format!(
            "SQLite rolled back the transaction this write shared with others after one of \
             them failed ({failed}); nothing of this write was stored, retry it"
        ),
    )
}

/// Run a transaction-control statement (not logged: it is the writer's, not a write's).
fn exec(conn: &Connection, sql: &'static str) -> std::result::Result<(), String> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::{Path, PathBuf};

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

    use super::*;

    fn opener(path: &Path) -> Open {
        let path: PathBuf = path.to_owned();
        Box::new(move || Connection::open(&path))
    }

    fn insert(writer: &Writer, x: i64) -> tokio::task::JoinHandle<Result<()>> {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer
                .write(Statements::One, move |c| {
                    prepare(c, "INSERT INTO t (x) VALUES (?)")
                        .and_then(|mut s| s.execute([x]))
                        .map(|_| ())
                        .map_err(|e| store_error("sqlite", "inserting", e))
                })
                .await
        })
    }

    async fn stored(pool: &SqlitePool, x: i64) -> bool {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM t WHERE x = ?")
            .bind(x)
            .fetch_one(pool)
            .await
            .unwrap()
            == 1
    }

    /// A database with table `t (columns)` in a temporary directory, a pool of two
    /// connections to it and a writer.
    async fn database(columns: &str) -> (tempfile::TempDir, SqlitePool, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE t ({columns})")))
            .execute(&pool)
            .await
            .unwrap();
        let writer = Writer::start(opener(&path), ()).await.unwrap();
        (dir, pool, writer)
    }

    /// What SQLite does on an I/O error, a full disk or out of memory: the failing statement
    /// takes the whole transaction with it. The writes that ran before it in the same
    /// transaction are answered with an error (they are not stored); the ones after it run in
    /// a new transaction and succeed.
    #[tokio::test]
    async fn a_write_that_loses_the_transaction_fails_the_writes_before_it_only() {
        let (_dir, pool, writer) = database("x INTEGER").await;

        // Hold the write lock so that the next three writes share one transaction.
        let blocker = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let first = insert(&writer, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = insert(&writer, 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let w = writer.clone();
        let breaker = tokio::spawn(async move {
            w.write(Statements::One, |c| {
                c.execute_batch("ROLLBACK")
                    .map_err(|e| store_error("sqlite", "rolling back", e))?;
                Err::<(), _>(Error::Workflow("simulated disk I/O error".into()))
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let after = insert(&writer, 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        blocker.commit().await.unwrap();

        first.await.unwrap().unwrap();
        let err = before.await.unwrap().unwrap_err().to_string();
        assert!(
            err.contains("rolled back") && err.contains("simulated"),
            "{err}"
        );
        let err = breaker.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("simulated"), "{err}");
        after.await.unwrap().unwrap();
        assert!(stored(&pool, 0).await);
        assert!(
            !stored(&pool, 1).await,
            "a write answered with an error was stored"
        );
        assert!(stored(&pool, 2).await);
        // The writer's connection is usable again: the next batch commits.
        insert(&writer, 3).await.unwrap().unwrap();
        assert!(stored(&pool, 3).await);
    }

    /// A lone write of several statements that fails part-way keeps none of them.
    #[tokio::test]
    async fn a_lone_write_of_several_statements_is_all_or_nothing() {
        let (_dir, pool, writer) = database("x INTEGER UNIQUE").await;
        let result = writer
            .write(Statements::Several, |c| {
                for x in [1, 2, 1] {
                    prepare(c, "INSERT INTO t (x) VALUES (?)")
                        .and_then(|mut s| s.execute([x]))
                        .map_err(|e| store_error("sqlite", "inserting", e))?;
                }
                Ok(())
            })
            .await;
        assert!(result.is_err());
        assert!(!stored(&pool, 1).await && !stored(&pool, 2).await);
        insert(&writer, 4).await.unwrap().unwrap();
        assert!(stored(&pool, 4).await);
    }

    /// `close` answers the writes sent before it (committed); writes after it fail with an
    /// error that says so.
    #[tokio::test]
    async fn close_commits_the_writes_sent_before_it_and_fails_later_ones() {
        let (_dir, pool, writer) = database("x INTEGER").await;
        let blocker = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let queued: Vec<_> = (10..20).map(|x| insert(&writer, x)).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closing = {
            let writer = writer.clone();
            tokio::spawn(async move { writer.close().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        blocker.commit().await.unwrap();
        closing.await.unwrap();
        for q in queued {
            q.await.unwrap().unwrap();
        }
        for x in 10..20 {
            assert!(stored(&pool, x).await);
        }
        let err = insert(&writer, 99).await.unwrap().unwrap_err().to_string();
        assert!(err.contains("closed"), "{err}");
        assert!(!stored(&pool, 99).await);
    }
}
