//! Durable waits that free their task: tool approvals in the agent loop (waiting_approval,
//! decided by an `approval` signal or by one addressed to the call, across a restart) and long
//! sleeps (the run is parked with its wake-up time and picked up again when due), on SQLite
//! and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, ApprovalLayer, AugmentedLlm, CompletionRequest, CompletionResponse, Content,
    FnTool, Message, Result, Role, RunStatus, ScriptedProvider, StartOptions, StopReason, Usage,
};
use agentkit_runtime::{
    APPROVAL_SIGNAL, EntryKind, Runtime, SqliteStore, Store, TargetOptions, Workflow,
    WorkflowContext, approval_signal_for,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

type StoreFactory = Box<dyn Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Store>>>>>;

#[derive(Deserialize, JsonSchema)]
struct Payment {
    amount: u32,
}

fn texts(content: &[Content]) -> String {
    content
        .iter()
        .filter_map(|c| match c {
            Content::Text { text } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The text of every tool result the model has been shown so far.
fn tool_results(req: &CompletionRequest) -> Vec<String> {
    req.messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|c| match c {
            Content::ToolResult { content, .. } => Some(texts(content)),
            _ => None,
        })
        .collect()
}

/// An agent that pays 5, then 7 (each call of `pay` needs approval), then answers with what
/// the tool results said, joined by ` | `.
fn payer(paid: Arc<AtomicU32>, model_calls: Arc<AtomicU32>) -> Arc<dyn AugmentedLlm> {
    let pay = FnTool::new("pay", "Pay an amount", move |p: Payment| {
        let paid = Arc::clone(&paid);
        async move {
            paid.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(format!("paid {}", p.amount))
        }
    });
    let model = ScriptedProvider::from_fn(move |req| {
        model_calls.fetch_add(1, Ordering::SeqCst);
        let results = tool_results(req);
        let call = |n: usize, amount: u32| {
            CompletionResponse::new(
                Message::new(
                    Role::Assistant,
                    vec![Content::tool_call(
                        format!("call_{n}"),
                        "pay",
                        json!({"amount": amount}),
                    )],
                ),
                Usage::new(10, 5),
                StopReason::ToolUse,
                "scripted",
            )
        };
        Ok(match results.len() {
            0 => call(1, 5),
            1 => call(2, 7),
            _ => CompletionResponse::new(
                Message::assistant(results.join(" | ")),
                Usage::new(20, 7),
                StopReason::EndTurn,
                "scripted",
            ),
        })
    });
    Arc::new(
        AgentLlm::new(Agent::new("payer", "You pay.").with_tool(pay), model)
            .with_tool_layer(ApprovalLayer::tools(["pay"])),
    )
}

/// Wait for `status`, failing after 30 s instead of hanging.
async fn reach(rt: &Runtime, id: &str, status: RunStatus) -> agentkit_runtime::RunRecord {
    tokio::time::timeout(Duration::from_secs(30), rt.wait_for_status(id, &[status]))
        .await
        .unwrap_or_else(|_| panic!("run {id} never reached {status}"))
        .unwrap()
}

struct Counts {
    paid: Arc<AtomicU32>,
    models: Arc<AtomicU32>,
}

fn payer_runtime(store: Arc<dyn Store>, c: &Counts) -> Runtime {
    let rt = Runtime::new(store);
    let (p, m) = (Arc::clone(&c.paid), Arc::clone(&c.models));
    rt.register_agent(
        "payer",
        move || payer(Arc::clone(&p), Arc::clone(&m)),
        TargetOptions::new(),
    );
    rt
}

/// Approve the first payment after a restart, deny the second: the first tool runs exactly
/// once, the second never, and the model sees the denial's reason.
async fn approvals_survive_a_restart(stores: StoreFactory) {
    let c = Counts {
        paid: Arc::default(),
        models: Arc::default(),
    };
    let rt = payer_runtime(stores().await, &c);
    let id = rt
        .start_run("payer", json!("pay the bills"), StartOptions::new())
        .await
        .unwrap();
    let run = reach(&rt, &id, RunStatus::WaitingApproval).await;
    assert_eq!(run.status, RunStatus::WaitingApproval);
    assert_eq!(c.paid.load(Ordering::SeqCst), 0, "not approved yet");
    let keys: Vec<_> = rt
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        vec!["payer/llm/0"],
        "nothing of the waiting call is journaled"
    );
    // A malformed decision is refused and changes nothing.
    let e = rt
        .signal(&id, APPROVAL_SIGNAL, json!({"decision": "maybe"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("\"decision\": \"approved\""), "{e}");
    rt.shutdown(Duration::from_secs(5)).await;
    drop(rt);

    // A new process over the same store.
    let rt = payer_runtime(stores().await, &c);
    let before = rt.get(&id).await.unwrap();
    assert_eq!(before.status, RunStatus::WaitingApproval);
    assert_eq!(
        before.waiting_for,
        Some(vec![
            approval_signal_for("call_1"),
            APPROVAL_SIGNAL.to_owned()
        ])
    );
    // Nothing queued for it: recovery leaves it waiting, unexecuted and unchanged.
    assert_eq!(rt.recover().await.unwrap(), 0);
    let after = rt.get(&id).await.unwrap();
    assert_eq!(
        (after.status, after.attempts, after.updated_at),
        (before.status, before.attempts, before.updated_at)
    );
    rt.signal(&id, APPROVAL_SIGNAL, json!({"decision": "approved"}))
        .await
        .unwrap();
    // The model asks for the second payment: waiting again, for its own approval.
    let started = std::time::Instant::now();
    while c.paid.load(Ordering::SeqCst) < 1
        || rt.get(&id).await.unwrap().status != RunStatus::WaitingApproval
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "second approval never asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rt.signal(
        &id,
        APPROVAL_SIGNAL,
        json!({"decision": "denied", "reason": "over the limit"}),
    )
    .await
    .unwrap();
    let run = reach(&rt, &id, RunStatus::Succeeded).await;
    assert_eq!(
        run.output.unwrap()["text"],
        "paid 5 | the call of tool `pay` was denied: over the limit"
    );
    assert_eq!(
        c.paid.load(Ordering::SeqCst),
        1,
        "approved once, run once; denied never"
    );
    // 2 questions + 1 answer, each asked once (replays come from the journal).
    assert_eq!(c.models.load(Ordering::SeqCst), 3);
    let journal = rt.journal(&id).await.unwrap();
    let keys: Vec<_> = journal.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "payer/llm/0",
            "signal/approval/payer/tool/1/call_1",
            "payer/tool/1/call_1",
            "payer/llm/2",
            "signal/approval/payer/tool/3/call_2",
            "payer/tool/3/call_2",
            "payer/llm/4",
        ]
    );
    assert_eq!(journal[1].kind, EntryKind::Signal);
    assert_eq!(journal[1].value, json!({"decision": "approved"}));
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn sqlite_tool_approval_waits_durably_and_is_decided_by_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    approvals_survive_a_restart(Box::new(move || {
        let path = path.clone();
        Box::pin(async move { Arc::new(SqliteStore::open(&path).await.unwrap()) as Arc<dyn Store> })
    }))
    .await;
}

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_tool_approval_waits_durably_and_is_decided_by_a_signal() {
    use agentkit_runtime::PostgresStore;
    let pg = common::Pg::start();
    let url = pg.fresh_db("approval").await;
    approvals_survive_a_restart(Box::new(move || {
        let url = url.clone();
        Box::pin(
            async move { Arc::new(PostgresStore::connect(&url).await.unwrap()) as Arc<dyn Store> },
        )
    }))
    .await;
}

/// A workflow: a counted step, a durable sleep of `input` ms, a counted step.
struct Snooze {
    before: Arc<AtomicU32>,
    after: Arc<AtomicU32>,
}

#[async_trait]
impl Workflow for Snooze {
    type Input = u64;
    type Output = u64;
    fn name(&self) -> &str {
        "snooze"
    }
    async fn run(&self, ctx: &WorkflowContext, nap_ms: u64) -> Result<u64> {
        let before = Arc::clone(&self.before);
        ctx.step("before", async move {
            before.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        ctx.sleep(Duration::from_millis(nap_ms)).await?;
        let after = Arc::clone(&self.after);
        ctx.step("after", async move {
            after.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        Ok(nap_ms)
    }
}

struct Naps {
    before: Arc<AtomicU32>,
    after: Arc<AtomicU32>,
}

impl Naps {
    fn new() -> Self {
        Self {
            before: Arc::default(),
            after: Arc::default(),
        }
    }

    fn runtime(&self, store: Arc<dyn Store>, options: TargetOptions) -> Runtime {
        self.node(store, options, "")
    }

    /// A runtime named `node` (a fresh id when empty).
    fn node(&self, store: Arc<dyn Store>, options: TargetOptions, node: &str) -> Runtime {
        let mut builder = Runtime::builder(store);
        if !node.is_empty() {
            builder = builder.with_node_id(node);
        }
        let rt = builder.build();
        rt.register_workflow(
            Snooze {
                before: Arc::clone(&self.before),
                after: Arc::clone(&self.after),
            },
            options,
        );
        rt
    }
}

/// Wait until the run is parked by its sleep: queued with a wake-up time.
async fn parked(rt: &Runtime, id: &str) -> i64 {
    let started = std::time::Instant::now();
    loop {
        let run = rt.get(id).await.unwrap();
        if run.status == RunStatus::Queued
            && let Some(w) = run.wake_at
        {
            return w;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never parked: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_sleeping_run_frees_its_concurrency_slot() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("rt.db")).await.unwrap());
    let naps = Naps::new();
    let rt = naps.runtime(store, TargetOptions::new().with_max_concurrency(1));
    let started = std::time::Instant::now();
    let sleeper = rt
        .start_run("snooze", json!(2_000), StartOptions::new())
        .await
        .unwrap();
    let wake_at = parked(&rt, &sleeper).await;
    // The only slot is free: a second run executes and finishes while the first sleeps.
    let quick = rt
        .start_run("snooze", json!(0), StartOptions::new())
        .await
        .unwrap();
    let done = reach(&rt, &quick, RunStatus::Succeeded).await;
    assert_eq!(done.output, Some(json!(0)));
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rt.get(&sleeper).await.unwrap().status, RunStatus::Queued);
    // The sleeper wakes on time, without repeating its first step.
    let done = reach(&rt, &sleeper, RunStatus::Succeeded).await;
    assert!(agentkit_runtime::model::now_ms() >= wake_at);
    assert!(started.elapsed() >= Duration::from_millis(2_000));
    assert_eq!(done.output, Some(json!(2_000)));
    assert_eq!(naps.before.load(Ordering::SeqCst), 2, "once per run");
    assert_eq!(naps.after.load(Ordering::SeqCst), 2);
    assert_eq!(done.wake_at, None);
    rt.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_sleeping_run_survives_a_restart_and_wakes_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    let naps = Naps::new();
    let store = SqliteStore::open(&path).await.unwrap();
    let rt = naps.runtime(Arc::new(store.clone()), TargetOptions::new());
    let id = rt
        .start_run("snooze", json!(1_500), StartOptions::new())
        .await
        .unwrap();
    let wake_at = parked(&rt, &id).await;
    rt.shutdown(Duration::from_secs(5)).await;
    store.close().await;
    drop(rt);

    let rt = naps.runtime(
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        TargetOptions::new(),
    );
    assert_eq!(rt.recover().await.unwrap(), 1);
    let run = reach(&rt, &id, RunStatus::Succeeded).await;
    let finished = agentkit_runtime::model::now_ms();
    assert!(finished >= wake_at, "woke {} ms early", wake_at - finished);
    assert!(
        finished < wake_at + 1_000,
        "woke {} ms late",
        finished - wake_at
    );
    assert_eq!(
        naps.before.load(Ordering::SeqCst),
        1,
        "the pre-sleep step ran once"
    );
    assert_eq!(naps.after.load(Ordering::SeqCst), 1);
    let keys: Vec<_> = rt
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, vec!["step/before", "sleep/timer", "step/after"]);
    assert_eq!(run.output, Some(json!(1_500)));
}

/// On PostgreSQL the node that parked the run stops; another node's poller claims it when it
/// is due (not before).
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_a_parked_run_is_claimed_by_another_node_when_due() {
    use agentkit_runtime::PostgresStore;
    let pg = common::Pg::start();
    let url = pg.fresh_db("sleep").await;
    let naps = Naps::new();
    let a = naps.node(
        Arc::new(PostgresStore::connect(&url).await.unwrap()),
        TargetOptions::new(),
        "a",
    );
    let id = a
        .start_run("snooze", json!(1_200), StartOptions::new())
        .await
        .unwrap();
    let wake_at = parked(&a, &id).await;
    a.shutdown(Duration::from_secs(5)).await;

    let b = naps.node(
        Arc::new(PostgresStore::connect(&url).await.unwrap()),
        TargetOptions::new(),
        "b",
    );
    b.start_polling(Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let early = b.get(&id).await.unwrap();
    if agentkit_runtime::model::now_ms() < wake_at {
        assert_eq!(
            early.status,
            RunStatus::Queued,
            "claimed before its wake-up time"
        );
    }
    let run = reach(&b, &id, RunStatus::Succeeded).await;
    assert!(agentkit_runtime::model::now_ms() >= wake_at);
    assert_eq!(run.owner.as_deref(), Some("b"));
    assert_eq!(naps.before.load(Ordering::SeqCst), 1);
    assert_eq!(naps.after.load(Ordering::SeqCst), 1);
    b.shutdown(Duration::from_secs(5)).await;
}

/// One model turn asks for `pay` (needs approval) and `lookup` (does not) at once, then
/// answers with both results.
fn parallel_payer(paid: Arc<AtomicU32>, looked: Arc<AtomicU32>) -> Arc<dyn AugmentedLlm> {
    let pay = FnTool::new("pay", "Pay an amount", move |p: Payment| {
        let paid = Arc::clone(&paid);
        async move {
            paid.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(format!("paid {}", p.amount))
        }
    });
    let lookup = FnTool::new(
        "lookup",
        "Look up a balance",
        move |_: serde_json::Value| {
            let looked = Arc::clone(&looked);
            async move {
                looked.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>("balance 100")
            }
        },
    );
    let model = ScriptedProvider::from_fn(move |req| {
        let results = tool_results(req);
        Ok(if results.is_empty() {
            CompletionResponse::new(
                Message::new(
                    Role::Assistant,
                    vec![
                        Content::tool_call("call_pay", "pay", json!({"amount": 3})),
                        Content::tool_call("call_look", "lookup", json!({})),
                    ],
                ),
                Usage::new(10, 5),
                StopReason::ToolUse,
                "scripted",
            )
        } else {
            CompletionResponse::new(
                Message::assistant(results.join(" | ")),
                Usage::new(20, 7),
                StopReason::EndTurn,
                "scripted",
            )
        })
    });
    Arc::new(
        AgentLlm::new(
            Agent::new("payer", "You pay.")
                .with_tool(pay)
                .with_tool(lookup),
            model,
        )
        .with_tool_layer(ApprovalLayer::tools(["pay"])),
    )
}

/// A tool call that runs beside a call waiting for approval keeps its journaled result: it
/// does not run again when the run resumes.
#[tokio::test]
async fn a_tool_beside_a_waiting_approval_is_journaled_and_not_run_again() {
    let paid = Arc::new(AtomicU32::new(0));
    let looked = Arc::new(AtomicU32::new(0));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let rt = Runtime::new(store);
    let (p, l) = (Arc::clone(&paid), Arc::clone(&looked));
    rt.register_agent(
        "payer",
        move || parallel_payer(Arc::clone(&p), Arc::clone(&l)),
        TargetOptions::new(),
    );
    let id = rt
        .start_run("payer", json!("pay"), StartOptions::new())
        .await
        .unwrap();
    reach(&rt, &id, RunStatus::WaitingApproval).await;
    // The run is stored as waiting as soon as `pay` asks; `lookup` finishes beside it.
    let started = std::time::Instant::now();
    let keys = loop {
        let keys: Vec<_> = rt
            .journal(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        if keys.len() >= 2 || started.elapsed() > Duration::from_secs(5) {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(keys, vec!["payer/llm/0", "payer/tool/2/call_look"]);
    assert_eq!(looked.load(Ordering::SeqCst), 1);
    assert_eq!(paid.load(Ordering::SeqCst), 0);
    rt.signal(&id, APPROVAL_SIGNAL, json!({"decision": "approved"}))
        .await
        .unwrap();
    let run = reach(&rt, &id, RunStatus::Succeeded).await;
    assert_eq!(run.output.unwrap()["text"], "paid 3 | balance 100");
    assert_eq!(looked.load(Ordering::SeqCst), 1, "lookup ran once");
    assert_eq!(paid.load(Ordering::SeqCst), 1);
}

/// Waits for an approval in workflow code, then reports the decision.
struct Gate;

#[async_trait]
impl Workflow for Gate {
    type Input = serde_json::Value;
    type Output = String;
    fn name(&self) -> &str {
        "gate"
    }
    async fn run(&self, ctx: &WorkflowContext, _input: serde_json::Value) -> Result<String> {
        Ok(match ctx.wait_for_approval().await? {
            agentkit_core::ApprovalDecision::Approved => "go".to_owned(),
            agentkit_core::ApprovalDecision::Denied { reason } => format!("stop: {reason}"),
            _ => "unknown".to_owned(),
        })
    }
}

#[tokio::test]
async fn a_workflow_waits_for_approval_as_waiting_approval() {
    let rt = Runtime::new(Arc::new(agentkit_runtime::MemoryStore::new()));
    rt.register_workflow(Gate, TargetOptions::new());
    let id = rt
        .start_run("gate", json!(null), StartOptions::new())
        .await
        .unwrap();
    reach(&rt, &id, RunStatus::WaitingApproval).await;
    rt.signal(
        &id,
        APPROVAL_SIGNAL,
        json!({"decision": "denied", "reason": "budget"}),
    )
    .await
    .unwrap();
    let run = reach(&rt, &id, RunStatus::Succeeded).await;
    assert_eq!(run.output, Some(json!("stop: budget")));
}

/// An agent whose model asks two payments at once (`call_a` pays 5, `call_b` pays 7), each
/// needing approval, then answers with the tool results joined by ` | `.
fn pair_payer(paid: Arc<std::sync::Mutex<Vec<u32>>>) -> Arc<dyn AugmentedLlm> {
    let pay = FnTool::new("pay", "Pay an amount", move |p: Payment| {
        let paid = Arc::clone(&paid);
        async move {
            paid.lock().unwrap().push(p.amount);
            Ok::<_, String>(format!("paid {}", p.amount))
        }
    });
    let model = ScriptedProvider::from_fn(move |req| {
        let results = tool_results(req);
        Ok(if results.is_empty() {
            CompletionResponse::new(
                Message::new(
                    Role::Assistant,
                    vec![
                        Content::tool_call("call_a", "pay", json!({"amount": 5})),
                        Content::tool_call("call_b", "pay", json!({"amount": 7})),
                    ],
                ),
                Usage::new(10, 5),
                StopReason::ToolUse,
                "scripted",
            )
        } else {
            CompletionResponse::new(
                Message::assistant(results.join(" | ")),
                Usage::new(20, 7),
                StopReason::EndTurn,
                "scripted",
            )
        })
    });
    Arc::new(
        AgentLlm::new(Agent::new("pair", "You pay.").with_tool(pay), model)
            .with_tool_layer(ApprovalLayer::tools(["pay"])),
    )
}

/// Two calls wait at once; each takes only the decision addressed to it
/// (`approval/<call id>`), also across a restart, and runs at most once.
#[tokio::test]
async fn a_decision_addressed_to_one_of_two_waiting_calls_reaches_only_that_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    let paid: Arc<std::sync::Mutex<Vec<u32>>> = Arc::default();
    let runtime = |store: Arc<dyn Store>| {
        let rt = Runtime::new(store);
        let p = Arc::clone(&paid);
        rt.register_agent(
            "pair",
            move || pair_payer(Arc::clone(&p)),
            TargetOptions::new(),
        );
        rt
    };
    let rt = runtime(Arc::new(SqliteStore::open(&path).await.unwrap()));
    let id = rt
        .start_run("pair", json!("pay both"), StartOptions::new())
        .await
        .unwrap();
    reach(&rt, &id, RunStatus::WaitingApproval).await;
    // Both calls wait: the run records every signal that resumes it.
    let started = std::time::Instant::now();
    loop {
        let mut names = rt.get(&id).await.unwrap().waiting_for.unwrap_or_default();
        names.sort();
        if names
            == [
                APPROVAL_SIGNAL.to_owned(),
                approval_signal_for("call_a"),
                approval_signal_for("call_b"),
            ]
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not every waiting call is recorded: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Deny the second call only: the first keeps waiting, nothing is paid.
    rt.signal(
        &id,
        &approval_signal_for("call_b"),
        json!({"decision": "denied", "reason": "7 is too much"}),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    loop {
        let keys: Vec<String> = rt
            .journal(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        if keys
            .iter()
            .any(|k| k.ends_with("/call_b") && !k.starts_with("signal/"))
            && rt.get(&id).await.unwrap().status == RunStatus::WaitingApproval
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the denial never reached call_b: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(paid.lock().unwrap().is_empty(), "nothing approved yet");
    rt.shutdown(Duration::from_secs(5)).await;
    drop(rt);

    // A new process approves the first call.
    let rt = runtime(Arc::new(SqliteStore::open(&path).await.unwrap()));
    rt.recover().await.unwrap();
    reach(&rt, &id, RunStatus::WaitingApproval).await;
    rt.signal(
        &id,
        &approval_signal_for("call_a"),
        json!({"decision": "approved"}),
    )
    .await
    .unwrap();
    let run = reach(&rt, &id, RunStatus::Succeeded).await;
    assert_eq!(
        run.output.unwrap()["text"],
        "paid 5 | the call of tool `pay` was denied: 7 is too much"
    );
    assert_eq!(
        *paid.lock().unwrap(),
        [5],
        "approved once, run once; denied never"
    );
    let journal = rt.journal(&id).await.unwrap();
    let signals: Vec<(&str, &serde_json::Value)> = journal
        .iter()
        .filter(|e| e.kind == EntryKind::Signal)
        .map(|e| (e.key.as_str(), &e.value))
        .collect();
    assert_eq!(signals.len(), 2, "{signals:?}");
    assert!(
        signals
            .iter()
            .any(|(k, v)| k.ends_with("/call_a") && v["decision"] == "approved"),
        "{signals:?}"
    );
    assert!(
        signals
            .iter()
            .any(|(k, v)| k.ends_with("/call_b") && v["decision"] == "denied"),
        "{signals:?}"
    );
    rt.shutdown(Duration::from_secs(5)).await;
}
