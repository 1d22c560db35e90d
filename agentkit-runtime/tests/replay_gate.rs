//! The cancel gate for an approval replayed from the journal, on every store. An approval
//! delivered to one execution of a run is journaled; when that execution ends before the call
//! it approved runs (a crash, a shutdown, a lease takeover) the run re-executes and replays the
//! decision. The call it releases must pass the same gate as a fresh delivery: if a cancel was
//! answered after the new execution claimed the run, the call never runs and the run ends
//! cancelled.
//!
//! Node `b1` executes the run until the approval is journaled and stops right there (before
//! the approved call); it is shut down, which releases the run. Node `b2` (which follows no
//! store notices, so only the store can tell it of a cancel) claims it and re-executes it;
//! right after the claim, node `a`, another runtime on the same store, cancels it. Both places
//! an approval waits are covered: a workflow's own `wait_for_approval` before a step, and a
//! tool call of an agent behind an [`ApprovalLayer`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_core::tower::{self, ServiceExt as _};
use agentkit_core::{
    Agent, AgentLlm, ApprovalDecision, ApprovalLayer, AugmentedLlm, CompletionResponse, Content,
    FnTool, Message, Result, Role, RunContext, RunStatus, ScriptedProvider, StartOptions,
    StopReason, ToolRequest, ToolService, Usage,
};
use agentkit_runtime::{
    APPROVAL_SIGNAL, MemoryStore, RunRecord, Runtime, SqliteStore, Store, TargetOptions, Workflow,
    WorkflowContext,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

/// Where the run's approval waits.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// `ctx.wait_for_approval()` in the workflow, then a step `send_message`.
    Workflow,
    /// An agent's call of the tool `send_message` behind an approval layer.
    ToolCall,
}

/// What the scenario's nodes share with the run's code.
struct Scene {
    store: Arc<dyn Store>,
    /// Node `a`, which cancels.
    a: Runtime,
    /// Whether `a` cancels the run as soon as its second execution has claimed it.
    cancel: bool,
    executions: AtomicU32,
    /// What `a`'s cancel answered.
    cancelled: Mutex<Option<Result<()>>>,
    /// Calls of `send_message` (the effect the approval releases).
    sends: Arc<AtomicU32>,
    /// Set once the first execution stopped at its crash point.
    crashed: AtomicBool,
    at_crash: Notify,
}

impl Scene {
    /// The first time: stop here, after the approval was journaled and before the call it
    /// released, until the node shuts down (the execution ends as in a crash).
    async fn crash_point(&self, ctx: &RunContext) -> Result<()> {
        if self.crashed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.at_crash.notify_one();
        ctx.guard("the crash point", std::future::pending::<Result<()>>())
            .await
    }
}

#[derive(Deserialize, JsonSchema)]
struct Text {
    text: String,
}

/// An agent that sends one message (`send_message` needs approval; the scene's crash point
/// sits between the approval and the tool), then answers `done`.
fn sender(scene: &Arc<Scene>) -> Arc<dyn AugmentedLlm> {
    let sends = Arc::clone(&scene.sends);
    let send = FnTool::new("send_message", "Send a message", move |t: Text| {
        let sends = Arc::clone(&sends);
        async move {
            sends.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(format!("sent {}", t.text))
        }
    });
    let model = ScriptedProvider::from_fn(|req| {
        let answered = req
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .any(|c| matches!(c, Content::ToolResult { .. }));
        Ok(if answered {
            CompletionResponse::new(
                Message::assistant("done"),
                Usage::new(20, 2),
                StopReason::EndTurn,
                "scripted",
            )
        } else {
            CompletionResponse::new(
                Message::new(
                    Role::Assistant,
                    vec![Content::tool_call(
                        "call_1",
                        "send_message",
                        json!({"text": "refund issued"}),
                    )],
                ),
                Usage::new(10, 5),
                StopReason::ToolUse,
                "scripted",
            )
        })
    });
    let crash = {
        let scene = Arc::clone(scene);
        tower::layer::layer_fn(move |inner: ToolService| {
            let scene = Arc::clone(&scene);
            tower::service_fn(move |req: ToolRequest| {
                let (scene, inner) = (Arc::clone(&scene), inner.clone());
                async move {
                    scene.crash_point(&req.ctx).await?;
                    inner.oneshot(req).await
                }
            })
        })
    };
    // The first layer is the innermost: the crash point runs after the approval.
    Arc::new(
        AgentLlm::new(
            Agent::new("sender", "You send messages.").with_tool(send),
            model,
        )
        .with_tool_layer(crash)
        .with_tool_layer(ApprovalLayer::tools(["send_message"])),
    )
}

struct Gated {
    scene: Arc<Scene>,
    wait: Wait,
}

#[async_trait]
impl Workflow for Gated {
    type Input = ();
    type Output = String;
    fn name(&self) -> &str {
        "gated"
    }
    async fn run(&self, ctx: &WorkflowContext, (): ()) -> Result<String> {
        let scene = &self.scene;
        let run_id = ctx.run_id().to_owned();
        if scene.executions.fetch_add(1, Ordering::SeqCst) == 0 {
            // The approver's decision, queued before the run asks.
            scene
                .store
                .send_signal(&run_id, APPROVAL_SIGNAL, json!({"decision": "approved"}))
                .await
                .unwrap();
        } else if scene.cancel {
            // This execution has claimed the run; the cancel is answered before it goes on.
            let answer = scene
                .a
                .cancel_with_reason(&run_id, "the customer hung up")
                .await;
            *scene.cancelled.lock().unwrap() = Some(answer);
        }
        match self.wait {
            Wait::Workflow => {
                let decision = ctx.wait_for_approval().await?;
                scene.crash_point(ctx.run_context()).await?;
                if decision != ApprovalDecision::Approved {
                    return Ok("denied".into());
                }
                let sends = Arc::clone(&scene.sends);
                ctx.step("send_message", async move {
                    sends.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await?;
                Ok("sent".into())
            }
            Wait::ToolCall => Ok(sender(scene)
                .generate("refund the customer".into(), ctx.run_context())
                .await?
                .text()),
        }
    }
}

/// What one scenario saw.
struct Seen {
    run: RunRecord,
    /// What node `a`'s cancel answered (`None`: it did not cancel).
    cancelled: Option<Result<()>>,
    sends: u32,
    executions: u32,
    /// The journal's keys when the first execution stopped, and at the end.
    keys_at_crash: Vec<String>,
    keys: Vec<String>,
}

/// Run `gated` on `store` through a crash after its approval was journaled and a
/// re-execution on another node, with node `a` cancelling it right after that node's claim
/// when `cancel`.
async fn scenario(store: Arc<dyn Store>, wait: Wait, cancel: bool) -> Seen {
    let scene = Arc::new(Scene {
        a: Runtime::builder(Arc::clone(&store))
            .with_node_id("a")
            .build(),
        store: Arc::clone(&store),
        cancel,
        executions: AtomicU32::new(0),
        cancelled: Mutex::new(None),
        sends: Arc::default(),
        crashed: AtomicBool::new(false),
        at_crash: Notify::new(),
    });
    let node = |id: &str| {
        let rt = Runtime::builder(Arc::clone(&store))
            .with_node_id(id)
            .with_store_notices(false)
            .build();
        rt.register_workflow(
            Gated {
                scene: Arc::clone(&scene),
                wait,
            },
            TargetOptions::new(),
        );
        rt
    };

    let b1 = node("b1");
    let id = b1
        .start_run("gated", json!(null), StartOptions::new())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), scene.at_crash.notified())
        .await
        .expect("the run never reached its crash point");
    b1.shutdown(Duration::from_millis(50)).await;
    let released = store.get_run(&id).await.unwrap().unwrap();
    assert_eq!(released.status, RunStatus::Queued, "{released:?}");
    let keys_at_crash = journal_keys(store.as_ref(), &id).await;
    assert!(
        keys_at_crash
            .last()
            .is_some_and(|k| k.starts_with("signal/approval")),
        "the approval was journaled last before the crash: {keys_at_crash:?}"
    );
    assert_eq!(scene.sends.load(Ordering::SeqCst), 0, "{keys_at_crash:?}");

    let b2 = node("b2");
    assert_eq!(b2.recover().await.unwrap(), 1);
    let run = tokio::time::timeout(Duration::from_secs(30), b2.wait(&id))
        .await
        .expect("the run never ended")
        .unwrap();
    b2.shutdown(Duration::from_secs(5)).await;
    let cancelled = scene.cancelled.lock().unwrap().take();
    Seen {
        run,
        cancelled,
        sends: scene.sends.load(Ordering::SeqCst),
        executions: scene.executions.load(Ordering::SeqCst),
        keys_at_crash,
        keys: journal_keys(store.as_ref(), &id).await,
    }
}

async fn journal_keys(store: &dyn Store, id: &str) -> Vec<String> {
    store
        .journal(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

/// A cancel answered after the re-execution claimed the run and before the replayed approval
/// released its call: the call never runs, the run ends cancelled with the cancel's reason.
async fn a_cancel_stops_the_replayed_approval(stores: Stores) {
    for wait in [Wait::Workflow, Wait::ToolCall] {
        let seen = scenario(stores().await, wait, true).await;
        assert_eq!(seen.executions, 2, "{wait:?}");
        let cancelled = seen.cancelled.expect("node a never cancelled");
        assert!(cancelled.is_ok(), "{wait:?}: {cancelled:?}");
        assert_eq!(
            seen.sends, 0,
            "{wait:?}: the approved call ran after the cancel was answered; journal {:?}",
            seen.keys
        );
        assert_eq!(
            seen.run.status,
            RunStatus::Cancelled,
            "{wait:?}: {:?}",
            seen.run
        );
        assert_eq!(
            seen.run.error.as_deref(),
            Some("the customer hung up"),
            "{wait:?}: the cancel's reason stands: {:?}",
            seen.run
        );
        assert_eq!(
            seen.keys, seen.keys_at_crash,
            "{wait:?}: nothing journaled after the cancel (no result of the call)"
        );
    }
}

/// Without a cancel the replayed approval passes the gate: the call runs once, the run
/// succeeds.
async fn a_live_run_makes_the_replayed_call(stores: Stores) {
    for (wait, output) in [(Wait::Workflow, "sent"), (Wait::ToolCall, "done")] {
        let seen = scenario(stores().await, wait, false).await;
        assert_eq!(seen.executions, 2, "{wait:?}");
        assert!(seen.cancelled.is_none());
        assert_eq!(
            seen.run.status,
            RunStatus::Succeeded,
            "{wait:?}: {:?}",
            seen.run
        );
        assert_eq!(seen.run.output, Some(json!(output)), "{wait:?}");
        assert_eq!(seen.sends, 1, "{wait:?}: the approved call ran once");
    }
}

/// A fresh store for each scenario.
type Stores = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>>>>>;

fn sqlite(dir: &tempfile::TempDir) -> Stores {
    let n = Arc::new(AtomicU32::new(0));
    let root = dir.path().to_owned();
    Box::new(move || {
        let path = root.join(format!("gate{}.db", n.fetch_add(1, Ordering::SeqCst)));
        Box::pin(async move { Arc::new(SqliteStore::open(&path).await.unwrap()) as Arc<dyn Store> })
    })
}

fn memory() -> Stores {
    Box::new(|| Box::pin(async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }))
}

#[tokio::test]
async fn sqlite_a_cancel_stops_the_replayed_approval() {
    let dir = tempfile::tempdir().unwrap();
    a_cancel_stops_the_replayed_approval(sqlite(&dir)).await;
}

#[tokio::test]
async fn sqlite_a_live_run_makes_the_replayed_call() {
    let dir = tempfile::tempdir().unwrap();
    a_live_run_makes_the_replayed_call(sqlite(&dir)).await;
}

#[tokio::test]
async fn memory_a_cancel_stops_the_replayed_approval() {
    a_cancel_stops_the_replayed_approval(memory()).await;
}

#[tokio::test]
async fn memory_a_live_run_makes_the_replayed_call() {
    a_live_run_makes_the_replayed_call(memory()).await;
}

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_the_replayed_approval_passes_the_gate() {
    use agentkit_runtime::PostgresStore;
    let server = common::Pg::start();
    let url = server.fresh_db("replay_gate").await;
    // A store per scenario (one pool each) on one database.
    let stores = || -> Stores {
        let url = url.clone();
        Box::new(move || {
            let url = url.clone();
            Box::pin(async move {
                Arc::new(PostgresStore::connect(&url).await.unwrap()) as Arc<dyn Store>
            })
        })
    };
    a_cancel_stops_the_replayed_approval(stores()).await;
    a_live_run_makes_the_replayed_call(stores()).await;
}
