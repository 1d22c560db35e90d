//! The gate between a cancel and the effect an approval releases, on every store: the
//! approval is delivered to the run (and the call it decides released) only in one atomic
//! step with a check that the run is still live under the node executing it, serialised
//! against the cancel's status change. Node `b` executes the run; node `a`, another runtime
//! on the same store, cancels it (so `b`'s execution learns of the cancel only through the
//! store, as on another process).
//!
//! - A cancel answered before the gate: the approved call never starts, the approval stays
//!   undelivered, the run ends cancelled.
//! - A cancel answered after the gate: the cancel answers as always (the run is cancelled)
//!   and the call, released before it, runs once.
//! - PostgreSQL: a cancel still in flight (its `UPDATE` not committed) when the gate runs
//!   makes the gate wait for it and then refuse; a plain read would have let the call go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::{ApprovalDecision, Error, Result, RunStatus, StartOptions};
use agentkit_runtime::{
    APPROVAL_SIGNAL, JournalEntry, NewRun, RunRecord, Runtime, SqliteStore, Store, TargetOptions,
    Workflow, WorkflowContext,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::json;

/// Where the test's node `a` acts in the run's code: before it waits for its approval, or
/// right after the approval was delivered (past the gate), before the call it released.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum At {
    BeforeGate,
    AfterGate,
}

type Hook = Arc<dyn Fn(String, At) -> BoxFuture<'static, ()> + Send + Sync>;

/// Waits for an approval, then makes the call it approves (counted).
struct Guarded {
    hook: Hook,
    sends: Arc<AtomicU32>,
}

#[async_trait]
impl Workflow for Guarded {
    type Input = ();
    type Output = String;
    fn name(&self) -> &str {
        "guarded"
    }
    async fn run(&self, ctx: &WorkflowContext, (): ()) -> Result<String> {
        (self.hook)(ctx.run_id().to_owned(), At::BeforeGate).await;
        let decision = ctx.wait_for_approval().await?;
        (self.hook)(ctx.run_id().to_owned(), At::AfterGate).await;
        if decision != ApprovalDecision::Approved {
            return Ok("denied".into());
        }
        let sends = Arc::clone(&self.sends);
        ctx.step("send_message", async move {
            sends.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        Ok("sent".into())
    }
}

/// What one scenario saw.
struct Seen {
    run: RunRecord,
    /// What node `a`'s cancel answered.
    cancel: Result<()>,
    sends: u32,
    /// Whether the approval is still queued (never delivered).
    approval_queued: bool,
    keys: Vec<String>,
}

/// Run `guarded` on node `b` of `store` with its approval queued before the gate, node `a`
/// cancelling the run at `cancel_at`.
async fn scenario(store: Arc<dyn Store>, cancel_at: At) -> Seen {
    let a = Arc::new(
        Runtime::builder(Arc::clone(&store))
            .with_node_id("a")
            .build(),
    );
    let b = Runtime::builder(Arc::clone(&store))
        .with_node_id("b")
        .build();
    let cancel = Arc::new(std::sync::Mutex::new(None));
    let hook: Hook = {
        let (a, store, cancel) = (Arc::clone(&a), Arc::clone(&store), Arc::clone(&cancel));
        Arc::new(move |run_id: String, at: At| {
            let (a, store, cancel) = (Arc::clone(&a), Arc::clone(&store), Arc::clone(&cancel));
            Box::pin(async move {
                if at == At::BeforeGate {
                    // The approver's decision, queued (as node `a`'s approval route does).
                    store
                        .send_signal(&run_id, APPROVAL_SIGNAL, json!({"decision": "approved"}))
                        .await
                        .unwrap();
                }
                if at == cancel_at {
                    // Answered (returned) before the run's code goes on.
                    let answer = a.cancel_with_reason(&run_id, "the customer hung up").await;
                    *cancel.lock().unwrap() = Some(answer);
                }
            }) as BoxFuture<'static, ()>
        })
    };
    let sends = Arc::new(AtomicU32::new(0));
    b.register_workflow(
        Guarded {
            hook,
            sends: Arc::clone(&sends),
        },
        TargetOptions::new(),
    );
    let id = b
        .start_run("guarded", json!(null), StartOptions::new())
        .await
        .unwrap();
    let run = tokio::time::timeout(Duration::from_secs(30), b.wait(&id))
        .await
        .expect("the run never ended")
        .unwrap();
    b.shutdown(Duration::from_secs(5)).await;
    let keys = store
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let cancel = cancel
        .lock()
        .unwrap()
        .take()
        .expect("node a never cancelled");
    Seen {
        approval_queued: store.has_signal(&id, APPROVAL_SIGNAL).await.unwrap(),
        run,
        cancel,
        sends: sends.load(Ordering::SeqCst),
        keys,
    }
}

/// A cancel answered before the gate: nothing released, nothing delivered, run cancelled.
async fn a_cancel_before_the_gate_stops_the_call(store: Arc<dyn Store>) {
    let seen = scenario(store, At::BeforeGate).await;
    assert!(seen.cancel.is_ok(), "{:?}", seen.cancel);
    assert_eq!(seen.run.status, RunStatus::Cancelled, "{:?}", seen.run);
    assert_eq!(
        seen.run.error.as_deref(),
        Some("the customer hung up"),
        "the cancel's reason stands: {:?}",
        seen.run
    );
    assert_eq!(seen.sends, 0, "the approved call never started");
    assert!(
        seen.approval_queued,
        "the approval was not delivered to a cancelled run"
    );
    assert!(
        !seen.keys.iter().any(|k| k.starts_with("signal/")),
        "nothing journaled for the approval: {:?}",
        seen.keys
    );
}

/// A cancel answered after the gate: answered as always, the released call runs once.
async fn a_cancel_after_the_gate_finds_the_call_released(store: Arc<dyn Store>) {
    let seen = scenario(store, At::AfterGate).await;
    assert!(seen.cancel.is_ok(), "{:?}", seen.cancel);
    assert_eq!(seen.run.status, RunStatus::Cancelled, "{:?}", seen.run);
    assert_eq!(
        seen.sends, 1,
        "the call released before the cancel ran once"
    );
    assert!(!seen.approval_queued, "the approval was delivered");
    assert_eq!(
        seen.keys.first().map(String::as_str),
        Some("signal/approval"),
        "{:?}",
        seen.keys
    );
}

fn sqlite_store(dir: &tempfile::TempDir) -> impl Future<Output = Arc<dyn Store>> {
    let path = dir.path().join("gate.db");
    async move { Arc::new(SqliteStore::open(&path).await.unwrap()) as Arc<dyn Store> }
}

#[tokio::test]
async fn sqlite_a_cancel_before_the_gate_stops_the_approved_call() {
    let dir = tempfile::tempdir().unwrap();
    a_cancel_before_the_gate_stops_the_call(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn sqlite_a_cancel_after_the_gate_finds_the_call_released() {
    let dir = tempfile::tempdir().unwrap();
    a_cancel_after_the_gate_finds_the_call_released(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn memory_the_gate_orders_cancel_and_call() {
    a_cancel_before_the_gate_stops_the_call(Arc::new(agentkit_runtime::MemoryStore::new())).await;
    a_cancel_after_the_gate_finds_the_call_released(Arc::new(agentkit_runtime::MemoryStore::new()))
        .await;
}

/// A run stored claimed by node `b`, with an approval queued for it.
async fn claimed_with_approval(store: &dyn Store) -> RunRecord {
    let run = store
        .create_run(NewRun::new("guarded", json!(null)).with_claim("b", i64::MAX))
        .await
        .unwrap()
        .run()
        .clone();
    store
        .send_signal(&run.id, APPROVAL_SIGNAL, json!({"decision": "approved"}))
        .await
        .unwrap();
    run
}

/// At store level: a run claimed by `b` with an approval queued; the fenced take (and the gate
/// of a replayed decision) refuses once the run is cancelled (and delivers nothing), delivers
/// (passes) while it is live.
async fn the_fenced_take_checks_the_run(store: Arc<dyn Store>) {
    for cancelled in [true, false] {
        let run = claimed_with_approval(store.as_ref()).await;
        if cancelled {
            store
                .transition(
                    &run.id,
                    &[RunStatus::Running],
                    agentkit_runtime::RunUpdate::new(RunStatus::Cancelled),
                )
                .await
                .unwrap()
                .unwrap();
        }
        let entry = JournalEntry::new(&run.id, 0, "signal/approval", json!(null));
        // Another node does not pass the gate of a run it does not hold.
        let other = store
            .take_signal_fenced(&run.id, APPROVAL_SIGNAL, entry.clone(), "a")
            .await;
        assert!(matches!(other, Err(Error::Cancelled { .. })), "{other:?}");
        let other = store.fence_replayed_signal(&run.id, "a").await;
        assert!(matches!(other, Err(Error::Cancelled { .. })), "{other:?}");
        // The gate of a replayed decision: passed only while the run is live under `b`.
        let replayed = store.fence_replayed_signal(&run.id, "b").await;
        if cancelled {
            assert!(
                matches!(replayed, Err(Error::Cancelled { .. })),
                "{replayed:?}"
            );
        } else {
            assert!(replayed.is_ok(), "{replayed:?}");
        }
        let taken = store
            .take_signal_fenced(&run.id, APPROVAL_SIGNAL, entry, "b")
            .await;
        if cancelled {
            assert!(matches!(taken, Err(Error::Cancelled { .. })), "{taken:?}");
            assert!(store.has_signal(&run.id, APPROVAL_SIGNAL).await.unwrap());
            assert!(store.journal(&run.id).await.unwrap().is_empty());
        } else {
            assert_eq!(taken.unwrap(), Some(json!({"decision": "approved"})));
            assert!(!store.has_signal(&run.id, APPROVAL_SIGNAL).await.unwrap());
            assert_eq!(store.journal(&run.id).await.unwrap().len(), 1);
        }
    }
}

#[tokio::test]
async fn sqlite_the_fenced_take_checks_the_run() {
    let dir = tempfile::tempdir().unwrap();
    the_fenced_take_checks_the_run(sqlite_store(&dir).await).await;
}

#[tokio::test]
async fn memory_the_fenced_take_checks_the_run() {
    the_fenced_take_checks_the_run(Arc::new(agentkit_runtime::MemoryStore::new())).await;
}

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use agentkit_runtime::{JournalStore as _, PostgresStore, RunStore as _, SignalStore as _};
    use sqlx::Connection;

    async fn pg_store(url: &str) -> Arc<dyn Store> {
        Arc::new(PostgresStore::connect(url).await.unwrap())
    }

    #[tokio::test]
    async fn postgres_the_gate_orders_cancel_and_call() {
        let server = super::common::Pg::start();
        let url = server.fresh_db("cancel_gate").await;
        a_cancel_before_the_gate_stops_the_call(pg_store(&url).await).await;
        a_cancel_after_the_gate_finds_the_call_released(pg_store(&url).await).await;
        the_fenced_take_checks_the_run(pg_store(&url).await).await;
        a_cancel_in_flight_is_waited_for(&url).await;
    }

    /// Whether a backend of the database waits for a row lock.
    async fn lock_waiters(store: &PostgresStore) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    }

    /// `gate` (the fenced take, or a fenced append) started while a cancel's `UPDATE` of the
    /// run is not committed yet: it waits for the cancel (a backend waits for the row lock),
    /// and once the cancel commits it refuses, with nothing delivered or appended.
    async fn gate_waits_for(
        url: &str,
        store: &Arc<PostgresStore>,
        gate: impl Future<Output = bool> + Send + 'static,
        run_id: &str,
    ) {
        // The cancel, begun on its own connection and left uncommitted.
        let mut cancel = sqlx::PgConnection::connect(url).await.unwrap();
        let mut tx = cancel.begin().await.unwrap();
        let n = sqlx::query(
            "UPDATE agentkit_runs SET status = 'cancelled', error = 'in flight' WHERE id = $1",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 1);
        let gate = tokio::spawn(gate);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock_waiters(store).await == 0 {
            if gate.is_finished() {
                let passed = gate.await;
                panic!("the gate did not wait for a cancel in flight: it answered {passed:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gate neither waited nor finished"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!gate.is_finished());
        tx.commit().await.unwrap();
        let passed = tokio::time::timeout(Duration::from_secs(10), gate)
            .await
            .expect("the gate stayed blocked after the cancel committed")
            .unwrap();
        assert!(!passed, "the gate let the call go past a committed cancel");
    }

    /// The gates of `a_cancel_in_flight_is_waited_for`.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Gate {
        /// The fenced take of a signal.
        Take,
        /// A fenced append of a step's result.
        Append,
        /// The gate of a decision replayed from the journal.
        Replayed,
    }

    /// The serialisation itself: a cancel in flight when the gate runs is waited for, and
    /// then stops the call (delivering nothing); likewise a fenced append of a step's result
    /// and the gate of a replayed decision.
    async fn a_cancel_in_flight_is_waited_for(url: &str) {
        let store = Arc::new(PostgresStore::connect(url).await.unwrap());
        for gate in [Gate::Take, Gate::Append, Gate::Replayed] {
            let run = claimed_with_approval(store.as_ref()).await;
            let (s, id) = (Arc::clone(&store), run.id.clone());
            if gate == Gate::Replayed {
                let gate = async move { s.fence_replayed_signal(&id, "b").await.is_ok() };
                gate_waits_for(url, &store, gate, &run.id).await;
            } else if gate == Gate::Append {
                let gate = async move {
                    let entry = JournalEntry::new(&id, 0, "step/send_message", json!(null));
                    s.append_fenced(&[entry], "b").await.unwrap()
                };
                gate_waits_for(url, &store, gate, &run.id).await;
            } else {
                let gate = async move {
                    let entry = JournalEntry::new(&id, 0, "signal/approval", json!(null));
                    match s.take_signal_fenced(&id, APPROVAL_SIGNAL, entry, "b").await {
                        Ok(taken) => taken.is_some(),
                        Err(Error::Cancelled { .. }) => false,
                        Err(e) => panic!("{e}"),
                    }
                };
                gate_waits_for(url, &store, gate, &run.id).await;
                assert!(
                    store.has_signal(&run.id, APPROVAL_SIGNAL).await.unwrap(),
                    "the approval stays undelivered"
                );
            }
            assert!(store.journal(&run.id).await.unwrap().is_empty());
            let stored = store.get_run(&run.id).await.unwrap().unwrap();
            assert_eq!(stored.status, RunStatus::Cancelled);
        }
    }
}
