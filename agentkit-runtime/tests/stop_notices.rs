//! PostgreSQL `LISTEN`/`NOTIFY` between nodes: a run executing on node A, cancelled through
//! node B, a third node C waiting for it to end. With the store's stop notices (the default)
//! A's execution stops at once, in the middle of a long step, and C's wait returns at once;
//! without them (`with_store_notices(false)`, how it was before) A goes on until its step
//! ends and C sees the cancel at its next poll (every 250 ms). Rounds alternate between the
//! two; the figures are printed.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkit_core::{Result, RunStatus, StartOptions};
use agentkit_runtime::{PostgresStore, Runtime, Store, TargetOptions, Workflow, WorkflowContext};
use async_trait::async_trait;
use serde_json::json;

/// How long the step of `long` takes when nothing stops it.
const STEP: Duration = Duration::from_secs(5);

/// When the step started and when it ended (finished or dropped when its run was cancelled).
#[derive(Default)]
struct Span {
    started: Option<Instant>,
    ended: Option<Instant>,
}

struct EndsOnDrop(Arc<Mutex<Span>>);

impl Drop for EndsOnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap().ended = Some(Instant::now());
    }
}

/// One step that takes [`STEP`].
struct Long(Arc<Mutex<Span>>);

#[async_trait]
impl Workflow for Long {
    type Input = ();
    type Output = ();
    fn name(&self) -> &str {
        "long"
    }
    async fn run(&self, ctx: &WorkflowContext, (): ()) -> Result<()> {
        let span = Arc::clone(&self.0);
        ctx.step("work", async move {
            span.lock().unwrap().started = Some(Instant::now());
            let _end = EndsOnDrop(Arc::clone(&span));
            tokio::time::sleep(STEP).await;
            Ok(())
        })
        .await
    }
}

async fn node(url: &str, name: &str, notices: bool) -> Runtime {
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(url).await.unwrap());
    Runtime::builder(store)
        .with_node_id(name)
        .with_store_notices(notices)
        .build()
}

/// One round: how long after B's cancel answered A's step ended, and C's wait returned.
async fn round(url: &str, notices: bool) -> (Duration, Duration) {
    let span = Arc::new(Mutex::new(Span::default()));
    let a = node(url, "a", notices).await;
    a.register_workflow(Long(Arc::clone(&span)), TargetOptions::new());
    let (b, c) = (node(url, "b", notices).await, node(url, "c", notices).await);
    let id = a
        .start_run("long", json!(null), StartOptions::new())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while span.lock().unwrap().started.is_none() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = {
        let (c, id) = (c.clone(), id.clone());
        tokio::spawn(async move {
            let run = c.wait(&id).await.unwrap();
            (run, Instant::now())
        })
    };
    // C's wait has read the run (running) and waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.cancel(&id).await.unwrap();
    let answered = Instant::now();
    let (run, seen) = waiting.await.unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    let deadline = Instant::now() + STEP * 3;
    let ended = loop {
        if let Some(t) = span.lock().unwrap().ended {
            break t;
        }
        assert!(Instant::now() < deadline, "the step never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for rt in [a, b, c] {
        rt.shutdown(Duration::from_secs(10)).await;
    }
    (
        ended.saturating_duration_since(answered),
        seen.saturating_duration_since(answered),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_on_one_node_stops_the_run_on_another_at_once() {
    let server = common::Pg::start();
    let url = server.fresh_db("stop_notices").await;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let notices = i % 2 == 0;
        let r = round(&url, notices).await;
        println!(
            "round {i} (notices {}): A's step stopped {:?} and C saw the cancel {:?} after B's cancel answered",
            if notices { "on" } else { "off" },
            r.0,
            r.1
        );
        if notices { &mut with } else { &mut without }.push(r);
    }
    let stats = |rs: &[(Duration, Duration)]| {
        (
            median(rs.iter().map(|r| r.0).collect()),
            median(rs.iter().map(|r| r.1).collect()),
            rs.iter().map(|r| r.0).max().unwrap(),
        )
    };
    let (on, off) = (stats(&with), stats(&without));
    println!(
        "median over 5 rounds each: the executing node stops {:?} (notices on) vs {:?} (off); \
         a waiting node sees the cancel {:?} vs {:?}",
        on.0, off.0, on.1, off.1
    );
    // With notices the execution stops long before its step would have ended; without, the
    // step runs to its end (the cancel reaches it only at the step boundary).
    assert!(
        on.2 < STEP / 5,
        "with notices the execution stopped only after {:?}",
        on.2
    );
    assert!(
        off.0 > STEP / 2,
        "without notices it stopped after {:?}",
        off.0
    );
}
