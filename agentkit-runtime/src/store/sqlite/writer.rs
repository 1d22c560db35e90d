//! Group commit: every write of a [`SqliteStore`](super::SqliteStore) goes through one task
//! that owns the write connection.
//!
//! SQLite has one writer at a time, and what a write transaction costs is mostly its
//! `COMMIT` (the WAL append, the lock hand-over between connections; with several
//! connections writing at once, also the busy handler's sleeps). So the store does not let
//! callers write on their own connections: each write is a *job* sent to the writer task,
//! which takes every job queued (up to [`MAX_BATCH`]), runs them in one
//! `BEGIN IMMEDIATE … COMMIT` and only then answers their callers. Under load, many writes
//! share one commit; a lone write runs at once, as before.
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
//! like a statement already sent, it commits or not.

use std::collections::VecDeque;

use agentkit_core::{Error, Result};
use futures::future::BoxFuture;
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool};
use sqlx::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::store::store_error;

/// At most this many jobs share one transaction: enough to amortise the commit, few enough
/// that no caller waits long behind the others.
const MAX_BATCH: usize = 512;

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
type Run = Box<
    dyn for<'c> FnOnce(
            std::result::Result<&'c mut SqliteConnection, &'c Abort>,
        ) -> BoxFuture<'c, Ran>
        + Send,
>;

struct Job {
    statements: Statements,
    run: Run,
}

/// Pins down the higher-ranked signature of a job's closure (closures passed to `Box::new`
/// alone do not get it inferred).
fn run_fn<F>(f: F) -> F
where
    F: for<'c> FnOnce(
            std::result::Result<&'c mut SqliteConnection, &'c Abort>,
        ) -> BoxFuture<'c, Ran>
        + Send
        + 'static,
{
    f
}

fn stopped() -> Error {
    store_error(
        "sqlite",
        "writing",
        "the store's writer task has stopped (the tokio runtime the store was opened on shut \
         down); open the store again on a running runtime",
    )
}

/// The handle callers send their writes through; cheap to clone. The writer task ends when
/// the last handle is dropped, after answering every job already sent.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Writer {
    /// Start the writer task on the current tokio runtime, writing through `pool` (one
    /// connection per batch; the store's file gets a pool of its own with one connection).
    /// With `reconnect`, a connection left in an unknown state by a failed `COMMIT` or
    /// `ROLLBACK` is closed, so the pool opens a fresh one (not for a private in-memory
    /// database, whose data would go with its connection).
    pub(super) fn start(pool: SqlitePool, reconnect: bool) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer_loop(pool, reconnect, rx));
        Self { jobs }
    }

    /// Run `write` on the write connection, in a transaction it may share with other
    /// callers' writes, and return its result once that transaction is committed.
    /// `statements` says how many statements of `write` write.
    pub(super) async fn write<T, F>(&self, statements: Statements, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = run_fn(move |conn| {
            Box::pin(async move {
                let conn = match conn {
                    Ok(conn) => conn,
                    Err(abort) => {
                        let _ = tx.send(Err(abort.error()));
                        let answered: Answer = Box::new(|_| {});
                        return (None, answered);
                    }
                };
                let result = write(conn).await;
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
            })
        });
        self.jobs
            .send(Job {
                statements,
                run: Box::new(run),
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn writer_loop(pool: SqlitePool, reconnect: bool, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(job) => queue.push_back(job),
                None => return,
            }
        }
        while queue.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => break,
            }
        }
        let batch: Vec<Job> = queue.drain(..queue.len().min(MAX_BATCH)).collect();
        let not_run = run_batch(&pool, reconnect, batch).await;
        for job in not_run.into_iter().rev() {
            queue.push_front(job);
        }
    }
}

/// Answer jobs that cannot run with `abort`'s error.
async fn fail_all(jobs: Vec<Job>, abort: &Abort) {
    tracing::warn!(context = abort.context, error = %abort.message, jobs = jobs.len(), "sqlite store: writes failed before they ran");
    for job in jobs {
        let (_, answer) = (job.run)(Err(abort)).await;
        answer(Some(abort));
    }
}

/// Run one batch and answer its callers; returns the jobs that did not run because SQLite
/// rolled the transaction back under them (to run in the next batch).
async fn run_batch(pool: &SqlitePool, reconnect: bool, jobs: Vec<Job>) -> Vec<Job> {
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => {
            let abort = Abort::new(
                "getting the write connection (was the store closed?)",
                e.to_string(),
            );
            fail_all(jobs, &abort).await;
            return Vec::new();
        }
    };
    if let [job] = jobs.as_slice()
        && job.statements == Statements::One
    {
        // A lone one-statement write commits on its own: no transaction round trips.
        for job in jobs {
            let (_, answer) = (job.run)(Ok(&mut *conn)).await;
            answer(None);
        }
        return Vec::new();
    }
    let alone = jobs.len() == 1;
    tracing::trace!(
        writes = jobs.len(),
        "sqlite store: one transaction for a batch of writes"
    );
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            let abort = Abort::new("starting a write transaction", e.to_string());
            fail_all(jobs, &abort).await;
            return Vec::new();
        }
    };
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    let mut jobs = jobs.into_iter();
    let mut lone_failed = false;
    let mut lost: Option<(Abort, Option<Job>)> = None;
    for job in jobs.by_ref() {
        let savepoint = !alone && job.statements == Statements::Several;
        if savepoint && let Err(e) = exec(&mut tx, "SAVEPOINT agentkit_write").await {
            lost = Some((Abort::new("opening a savepoint for a write", e), Some(job)));
            break;
        }
        let (failed, answer) = (job.run)(Ok(&mut *tx)).await;
        answers.push(answer);
        let outcome = match failed {
            None if savepoint => exec(&mut tx, "RELEASE agentkit_write")
                .await
                .map_err(|e| Abort::new("releasing the savepoint of a write", e)),
            None => Ok(()),
            Some(_) if alone => {
                lone_failed = true;
                Ok(())
            }
            Some(failed) if savepoint => match exec(&mut tx, "ROLLBACK TO agentkit_write").await {
                Ok(()) => exec(&mut tx, "RELEASE agentkit_write")
                    .await
                    .map_err(|e| Abort::new("releasing the savepoint of a write", e)),
                Err(_) => Err(rolled_back(&failed)),
            },
            // `BEGIN` fails inside a transaction and changes nothing; when it succeeds, the
            // failed statement took the whole transaction with it.
            Some(failed) => match exec(&mut tx, "BEGIN").await {
                Err(_) => Ok(()),
                Ok(()) => Err(rolled_back(&failed)),
            },
        };
        if let Err(abort) = outcome {
            lost = Some((abort, None));
            break;
        }
    }
    if let Some((abort, unrun)) = lost {
        // Whatever SQLite kept of the transaction goes: the callers are told nothing was
        // stored. `BEGIN` first, so sqlx's `ROLLBACK` has a transaction to end either way.
        let _ = exec(&mut tx, "BEGIN").await;
        if tx.rollback().await.is_err() && reconnect {
            conn.close_on_drop();
        }
        for answer in answers {
            answer(Some(&abort));
        }
        let mut rest: Vec<Job> = unrun.into_iter().collect();
        rest.extend(jobs);
        return rest;
    }
    let settled = if lone_failed {
        tx.rollback()
            .await
            .map_err(|e| Abort::new("rolling back a failed write", e.to_string()))
    } else {
        tx.commit()
            .await
            .map_err(|e| Abort::new("committing a batch of writes", e.to_string()))
    };
    match settled {
        Ok(()) => answers.into_iter().for_each(|a| a(None)),
        Err(abort) => {
            if reconnect {
                conn.close_on_drop();
            }
            for answer in answers {
                answer(Some(&abort));
            }
        }
    }
    Vec::new()
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

async fn exec(
    tx: &mut Transaction<'_, Sqlite>,
    sql: &'static str,
) -> std::result::Result<(), String> {
    sqlx::query(sql)
        .execute(&mut **tx)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    use super::*;

    fn insert(writer: &Writer, x: i64) -> tokio::task::JoinHandle<Result<()>> {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer
                .write(Statements::One, move |c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO t (x) VALUES (?)")
                            .bind(x)
                            .execute(&mut *c)
                            .await
                            .map(|_| ())
                            .map_err(|e| store_error("sqlite", "inserting", e))
                    })
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

    /// What SQLite does on an I/O error, a full disk or out of memory: the failing statement
    /// takes the whole transaction with it. The writes that ran before it in the same
    /// transaction are answered with an error (they are not stored); the ones after it run in
    /// a new transaction and succeed.
    #[tokio::test]
    async fn a_write_that_loses_the_transaction_fails_the_writes_before_it_only() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let writer = Writer::start(write_pool, true);

        // Hold the write lock so that the next three writes share one transaction.
        let blocker = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let first = insert(&writer, 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = insert(&writer, 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let w = writer.clone();
        let breaker = tokio::spawn(async move {
            w.write(Statements::One, |c| {
                Box::pin(async move {
                    sqlx::query("ROLLBACK")
                        .execute(&mut *c)
                        .await
                        .map_err(|e| store_error("sqlite", "rolling back", e))?;
                    Err::<(), _>(Error::Workflow("simulated disk I/O error".into()))
                })
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
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        let writer = Writer::start(pool.clone(), false);
        let result = writer
            .write(Statements::Several, |c| {
                Box::pin(async move {
                    for x in [1, 2, 1] {
                        sqlx::query("INSERT INTO t (x) VALUES (?)")
                            .bind(x)
                            .execute(&mut *c)
                            .await
                            .map_err(|e| store_error("sqlite", "inserting", e))?;
                    }
                    Ok(())
                })
            })
            .await;
        assert!(result.is_err());
        assert!(!stored(&pool, 1).await && !stored(&pool, 2).await);
        insert(&writer, 4).await.unwrap().unwrap();
        assert!(stored(&pool, 4).await);
    }
}
