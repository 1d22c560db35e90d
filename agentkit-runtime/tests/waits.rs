//! A run waiting for a signal across a restart: `recover` leaves it waiting (its code does not
//! run again, its record does not change), a signal sent afterwards resumes it exactly once, a
//! signal queued while no process held it resumes it at recovery, and a waiting run stored
//! before agentkit recorded what it waits for is recovered as before. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::{Result, RunStatus, StartOptions};
use agentkit_runtime::{
    RunRecord, RunUpdate, Runtime, SqliteStore, Store, TargetOptions, Workflow, WorkflowContext,
};
use async_trait::async_trait;
use serde_json::json;

type StoreFactory = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>>>>>;

/// How often the workflow's code ran, and its steps executed.
#[derive(Default)]
struct Counts {
    entered: AtomicU32,
    before: AtomicU32,
    after: AtomicU32,
}

/// A counted step, a wait for the signal `answer`, a counted step; returns the answer.
struct Ask(Arc<Counts>);

#[async_trait]
impl Workflow for Ask {
    type Input = String;
    type Output = String;
    fn name(&self) -> &str {
        "ask"
    }
    async fn run(&self, ctx: &WorkflowContext, question: String) -> Result<String> {
        let c = &self.0;
        c.entered.fetch_add(1, Ordering::SeqCst);
        ctx.step("before", async {
            c.before.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        let answer: String = ctx.wait_for_signal("answer").await?;
        ctx.step("after", async {
            c.after.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        Ok(format!("{question} {answer}"))
    }
}

fn runtime(store: Arc<dyn Store>, counts: &Arc<Counts>) -> Runtime {
    let rt = Runtime::new(store);
    rt.register_workflow(Ask(Arc::clone(counts)), TargetOptions::new());
    rt
}

async fn reach(rt: &Runtime, id: &str, status: RunStatus) -> RunRecord {
    tokio::time::timeout(Duration::from_secs(30), rt.wait_for_status(id, &[status]))
        .await
        .unwrap_or_else(|_| panic!("run {id} never reached {status}"))
        .unwrap()
}

/// Start a run of `ask` and wait until it waits for its signal; stop that process.
async fn waiting_run(stores: &StoreFactory, counts: &Arc<Counts>) -> RunRecord {
    let rt = runtime(stores().await, counts);
    let id = rt
        .start_run("ask", json!("why?"), StartOptions::new())
        .await
        .unwrap();
    let run = reach(&rt, &id, RunStatus::WaitingInput).await;
    assert_eq!(run.waiting_for, Some(vec!["answer".to_owned()]));
    rt.shutdown(Duration::from_secs(5)).await;
    assert_eq!(counts.entered.load(Ordering::SeqCst), 1);
    run
}

/// Watch the run's stored record every 5 ms until `stop`: every record seen.
fn watch(
    store: Arc<dyn Store>,
    id: String,
) -> (
    tokio::task::JoinHandle<Vec<RunRecord>>,
    Arc<tokio::sync::Notify>,
) {
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            seen.push(store.get_run(&id).await.unwrap().unwrap());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
                () = stopped.notified() => return seen,
            }
        }
    });
    (task, stop)
}

/// Across a restart the waiting run is not executed (its code does not run, its record does
/// not change: never `running`, same attempts, same `updated_at`); a signal for another name
/// does not wake it; the signal it waits for, sent afterwards, resumes it exactly once.
async fn a_waiting_run_is_left_alone_at_restart(stores: StoreFactory) {
    let counts = Arc::new(Counts::default());
    let waiting = waiting_run(&stores, &counts).await;
    let store = stores().await;
    // A signal it does not wait for, stored while no process runs.
    store
        .send_signal(&waiting.id, "unrelated", json!(1))
        .await
        .unwrap();

    let rt = runtime(Arc::clone(&store), &counts);
    let (watcher, stop) = watch(Arc::clone(&store), waiting.id.clone());
    assert_eq!(rt.recover().await.unwrap(), 0, "nothing to dispatch");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.notify_one();
    let seen = watcher.await.unwrap();
    assert!(seen.len() > 10, "watched {} times", seen.len());
    for run in &seen {
        assert_eq!(run.status, RunStatus::WaitingInput, "{run:?}");
        assert_eq!(run.attempts, waiting.attempts);
        assert_eq!(run.updated_at, waiting.updated_at, "the run was changed");
    }
    assert_eq!(
        counts.entered.load(Ordering::SeqCst),
        1,
        "the workflow did not run again"
    );

    rt.signal(&waiting.id, "answer", json!("because"))
        .await
        .unwrap();
    let done = reach(&rt, &waiting.id, RunStatus::Succeeded).await;
    assert_eq!(done.output, Some(json!("why? because")));
    assert_eq!(done.waiting_for, None);
    assert_eq!(done.attempts, waiting.attempts + 1, "resumed once");
    assert_eq!(counts.entered.load(Ordering::SeqCst), 2);
    assert_eq!(counts.before.load(Ordering::SeqCst), 1);
    assert_eq!(counts.after.load(Ordering::SeqCst), 1);
    let keys: Vec<String> = rt
        .journal(&waiting.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["step/before", "signal/answer", "step/after"]);
    rt.shutdown(Duration::from_secs(5)).await;
}

/// A signal stored while no process held the run (its sender died before resuming it, or
/// wrote to the store directly) resumes it at recovery.
async fn a_signal_queued_meanwhile_resumes_it_at_recovery(stores: StoreFactory) {
    let counts = Arc::new(Counts::default());
    let waiting = waiting_run(&stores, &counts).await;
    let store = stores().await;
    store
        .send_signal(&waiting.id, "answer", json!("meanwhile"))
        .await
        .unwrap();

    let rt = runtime(store, &counts);
    assert_eq!(rt.recover().await.unwrap(), 1);
    let done = reach(&rt, &waiting.id, RunStatus::Succeeded).await;
    assert_eq!(done.output, Some(json!("why? meanwhile")));
    assert_eq!(done.attempts, waiting.attempts + 1);
    assert_eq!(counts.before.load(Ordering::SeqCst), 1);
    assert_eq!(counts.after.load(Ordering::SeqCst), 1);
    rt.shutdown(Duration::from_secs(5)).await;
}

/// A waiting run stored without what it waits for (as every waiting run was before the
/// `waiting_for` column) is re-executed at recovery as before: it replays, waits again (now
/// recorded), and a later signal resumes it.
async fn an_old_waiting_run_is_recovered_as_before(stores: StoreFactory) {
    let counts = Arc::new(Counts::default());
    let waiting = waiting_run(&stores, &counts).await;
    let store = stores().await;
    // What a row written before the migration looks like: waiting, nothing recorded.
    let old = store
        .transition(
            &waiting.id,
            &[RunStatus::WaitingInput],
            RunUpdate::new(RunStatus::WaitingInput),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.waiting_for, None);

    let rt = runtime(Arc::clone(&store), &counts);
    assert_eq!(rt.recover().await.unwrap(), 1);
    let started = std::time::Instant::now();
    let again = loop {
        let run = rt.get(&waiting.id).await.unwrap();
        if run.status == RunStatus::WaitingInput && run.waiting_for.is_some() {
            break run;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never waited again: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(again.waiting_for, Some(vec!["answer".to_owned()]));
    assert_eq!(again.attempts, waiting.attempts + 1, "re-executed once");
    assert_eq!(counts.entered.load(Ordering::SeqCst), 2);
    assert_eq!(counts.before.load(Ordering::SeqCst), 1, "replayed, not run");

    rt.signal(&waiting.id, "answer", json!("late"))
        .await
        .unwrap();
    let done = reach(&rt, &waiting.id, RunStatus::Succeeded).await;
    assert_eq!(done.output, Some(json!("why? late")));
    assert_eq!(counts.after.load(Ordering::SeqCst), 1);
    rt.shutdown(Duration::from_secs(5)).await;
}

fn sqlite(dir: &tempfile::TempDir) -> StoreFactory {
    let path = dir.path().join("rt.db");
    Box::new(move || {
        let path = path.clone();
        Box::pin(async move { Arc::new(SqliteStore::open(&path).await.unwrap()) as Arc<dyn Store> })
    })
}

#[tokio::test]
async fn sqlite_a_waiting_run_is_left_alone_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    a_waiting_run_is_left_alone_at_restart(sqlite(&dir)).await;
}

#[tokio::test]
async fn sqlite_a_signal_queued_meanwhile_resumes_it_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    a_signal_queued_meanwhile_resumes_it_at_recovery(sqlite(&dir)).await;
}

#[tokio::test]
async fn sqlite_an_old_waiting_run_is_recovered_as_before() {
    let dir = tempfile::tempdir().unwrap();
    an_old_waiting_run_is_recovered_as_before(sqlite(&dir)).await;
}

#[tokio::test]
async fn memory_a_waiting_run_is_left_alone_at_restart() {
    // One store shared by both runtimes (what a restart over a persistent store looks like).
    let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
    a_waiting_run_is_left_alone_at_restart(Box::new(move || {
        let store = Arc::clone(&store);
        Box::pin(async move { store })
    }))
    .await;
}

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use agentkit_runtime::PostgresStore;

    fn pg(url: String) -> StoreFactory {
        Box::new(move || {
            let url = url.clone();
            Box::pin(async move {
                Arc::new(PostgresStore::connect(&url).await.unwrap()) as Arc<dyn Store>
            })
        })
    }

    #[tokio::test]
    async fn postgres_waits_across_restarts() {
        let server = super::common::Pg::start();
        let url = server.fresh_db("waits").await;
        a_waiting_run_is_left_alone_at_restart(pg(url.clone())).await;
        a_signal_queued_meanwhile_resumes_it_at_recovery(pg(url.clone())).await;
        an_old_waiting_run_is_recovered_as_before(pg(url)).await;
    }
}
