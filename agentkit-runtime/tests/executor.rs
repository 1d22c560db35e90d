//! The executor: agents and workflows, idempotency, bad input, retries, concurrency,
//! cancellation, signals across a restart, shutdown and redaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionResponse, Content, Error, FnTool, Message,
    ProviderErrorKind, Result, Role, RunStatus, ScriptedProvider, StartOptions, StopReason, Usage,
    WorkflowHost,
};
use agentkit_runtime::model::ALL_STATUSES;
use agentkit_runtime::{
    EntryKind, JournalStore, KvStore, LeaseStore, MemoryStore, RetryPolicy, RunStore, Runtime,
    SignalStore, SqliteStore, Store, TargetOptions, Workflow, WorkflowContext,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, JsonSchema)]
struct City {
    name: String,
}

fn reply(tool_call: Option<(&str, Value)>, text: &str) -> CompletionResponse {
    match tool_call {
        Some((name, args)) => CompletionResponse::new(
            Message::new(
                Role::Assistant,
                vec![Content::tool_call("call_1", name, args)],
            ),
            Usage::new(10, 5),
            StopReason::ToolUse,
            "scripted",
        ),
        None => CompletionResponse::new(
            Message::assistant(text),
            Usage::new(20, 7),
            StopReason::EndTurn,
            "scripted",
        ),
    }
}

/// An agent that calls `weather` once, then answers; counts its model and tool calls.
fn weather_agent(tool_calls: Arc<AtomicU32>, model_calls: Arc<AtomicU32>) -> Arc<dyn AugmentedLlm> {
    weather_agent_with("You answer weather questions.", tool_calls, model_calls)
}

fn weather_agent_with(
    instruction: &str,
    tool_calls: Arc<AtomicU32>,
    model_calls: Arc<AtomicU32>,
) -> Arc<dyn AugmentedLlm> {
    let weather = FnTool::new("weather", "Weather of a city", move |c: City| {
        let tool_calls = Arc::clone(&tool_calls);
        async move {
            tool_calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(format!("18°C in {}", c.name))
        }
    });
    let model = ScriptedProvider::from_fn(move |req| {
        model_calls.fetch_add(1, Ordering::SeqCst);
        let has_result = req.messages.iter().any(|m| m.role == Role::Tool);
        Ok(if has_result {
            reply(None, "It is 18°C in Lisbon.")
        } else {
            reply(Some(("weather", json!({"name": "Lisbon"}))), "")
        })
    });
    Arc::new(AgentLlm::new(
        Agent::new("weather", instruction).with_tool(weather),
        model,
    ))
}

struct Counters {
    tools: Arc<AtomicU32>,
    models: Arc<AtomicU32>,
}

fn runtime_with_agent(store: Arc<dyn Store>) -> (Runtime, Counters) {
    let rt = Runtime::new(store);
    let c = Counters {
        tools: Arc::default(),
        models: Arc::default(),
    };
    let (t, m) = (Arc::clone(&c.tools), Arc::clone(&c.models));
    rt.register_agent(
        "weather",
        move || weather_agent(Arc::clone(&t), Arc::clone(&m)),
        TargetOptions::new().with_description("Answers weather questions"),
    );
    (rt, c)
}

#[tokio::test]
async fn an_agent_run_is_stored_journaled_and_priced() {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let (rt, c) = runtime_with_agent(store.clone());
    let run = rt
        .run_sync(
            "weather",
            json!({"message": "Weather in Lisbon?"}),
            StartOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.output, Some(json!({"text": "It is 18°C in Lisbon."})));
    assert_eq!(run.attempts, 1);
    assert_eq!(run.usage, Usage::new(30, 12));
    let journal = rt.journal(&run.id).await.unwrap();
    let kinds: Vec<_> = journal.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EntryKind::Llm, EntryKind::Tool, EntryKind::Llm]);
    assert_eq!(
        journal.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(journal[0].usage, Usage::new(10, 5));
    assert!(journal[1].value.to_string().contains("18°C in Lisbon"));
    assert_eq!(c.models.load(Ordering::SeqCst), 2);
    assert_eq!(c.tools.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn same_idempotency_key_same_run_no_second_execution() {
    let (rt, c) = runtime_with_agent(Arc::new(MemoryStore::new()));
    let opts = StartOptions::new().with_idempotency_key("order-42");
    let a = rt
        .run_sync("weather", json!("Weather?"), opts.clone())
        .await
        .unwrap();
    let b = rt
        .start_run("weather", json!("Weather?"), opts)
        .await
        .unwrap();
    assert_eq!(a.id, b);
    assert_eq!(rt.wait(&b).await.unwrap().status, RunStatus::Succeeded);
    assert_eq!(c.tools.load(Ordering::SeqCst), 1);
    assert_eq!(c.models.load(Ordering::SeqCst), 2);
    assert_eq!(
        rt.store().list_runs(&ALL_STATUSES, 10).await.unwrap().len(),
        1
    );
}

#[derive(Deserialize, JsonSchema)]
struct Order {
    id: u32,
    items: Vec<String>,
}

/// Steps: `reserve` (counted), then waits for `approve`, then `ship` (counted).
struct Fulfil {
    reserved: Arc<AtomicU32>,
    shipped: Arc<AtomicU32>,
}

#[async_trait]
impl Workflow for Fulfil {
    type Input = Order;
    type Output = Value;
    fn name(&self) -> &str {
        "fulfil"
    }
    fn description(&self) -> &str {
        "Reserve, wait for approval, ship"
    }
    async fn run(&self, ctx: &WorkflowContext, order: Order) -> Result<Value> {
        let reserved = Arc::clone(&self.reserved);
        let n = order.items.len();
        let slot: String = ctx
            .step("reserve", async move {
                reserved.fetch_add(1, Ordering::SeqCst);
                Ok(format!("slot-{n}"))
            })
            .await?;
        let approval: Value = ctx.wait_for_signal("approve").await?;
        let shipped = Arc::clone(&self.shipped);
        let tracking: String = ctx
            .step("ship", async move {
                shipped.fetch_add(1, Ordering::SeqCst);
                Ok("TRACK-1".to_owned())
            })
            .await?;
        Ok(
            json!({"order": order.id, "slot": slot, "approved_by": approval["by"], "tracking": tracking}),
        )
    }
}

fn fulfil_runtime(
    store: Arc<dyn Store>,
    reserved: &Arc<AtomicU32>,
    shipped: &Arc<AtomicU32>,
) -> Runtime {
    let rt = Runtime::new(store);
    rt.register_workflow(
        Fulfil {
            reserved: Arc::clone(reserved),
            shipped: Arc::clone(shipped),
        },
        TargetOptions::new(),
    );
    rt
}

#[tokio::test]
async fn a_waiting_run_survives_a_restart_and_resumes_on_signal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    let reserved = Arc::new(AtomicU32::new(0));
    let shipped = Arc::new(AtomicU32::new(0));

    let store = SqliteStore::open(&path).await.unwrap();
    let rt = fulfil_runtime(Arc::new(store.clone()), &reserved, &shipped);
    let id = rt
        .start_run(
            "fulfil",
            json!({"id": 7, "items": ["a", "b"]}),
            StartOptions::new(),
        )
        .await
        .unwrap();
    let waiting = rt
        .wait_for_status(&id, &[RunStatus::WaitingInput])
        .await
        .unwrap();
    assert_eq!(waiting.status, RunStatus::WaitingInput);
    rt.shutdown(Duration::from_secs(5)).await;
    store.close().await;
    drop(rt);

    // A new process: the run is still waiting; recovery replays `reserve`, waits again.
    let store = SqliteStore::open(&path).await.unwrap();
    let rt = fulfil_runtime(Arc::new(store), &reserved, &shipped);
    assert_eq!(rt.get(&id).await.unwrap().status, RunStatus::WaitingInput);
    rt.recover().await.unwrap();
    rt.wait_for_status(&id, &[RunStatus::WaitingInput])
        .await
        .unwrap();
    rt.signal(&id, "approve", json!({"by": "ana"}))
        .await
        .unwrap();
    let done = rt.wait(&id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(
        done.output,
        Some(json!({"order": 7, "slot": "slot-2", "approved_by": "ana", "tracking": "TRACK-1"}))
    );
    assert_eq!(
        reserved.load(Ordering::SeqCst),
        1,
        "reserve must not run twice"
    );
    assert_eq!(shipped.load(Ordering::SeqCst), 1);
    let keys: Vec<_> = rt
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, vec!["step/reserve", "signal/approve", "step/ship"]);
    // A finished run takes no more signals.
    assert!(rt.signal(&id, "approve", json!({})).await.is_err());
}

#[tokio::test]
async fn a_signal_sent_before_the_wait_is_delivered_without_waiting() {
    let reserved = Arc::new(AtomicU32::new(0));
    let shipped = Arc::new(AtomicU32::new(0));
    let rt = fulfil_runtime(Arc::new(MemoryStore::new()), &reserved, &shipped);
    let id = rt
        .start_run("fulfil", json!({"id": 1, "items": []}), StartOptions::new())
        .await
        .unwrap();
    rt.signal(&id, "approve", json!({"by": "bo"}))
        .await
        .unwrap();
    let done = rt.wait(&id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.output.unwrap()["approved_by"], "bo");
}

#[tokio::test]
async fn bad_input_is_rejected_and_nothing_is_stored() {
    let reserved = Arc::new(AtomicU32::new(0));
    let shipped = Arc::new(AtomicU32::new(0));
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let rt = fulfil_runtime(store.clone(), &reserved, &shipped);
    let err = rt
        .start_run("fulfill", json!({}), StartOptions::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`fulfill`") && msg.contains("registered: fulfil"),
        "{msg}"
    );

    let err = rt
        .start_run(
            "fulfil",
            json!({"id": "seven", "items": []}),
            StartOptions::new(),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("workflow `fulfil`") && msg.contains("id"),
        "{msg}"
    );
    let err = rt
        .start_run("fulfil", json!({"id": 1}), StartOptions::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("items"), "{err}");

    assert!(store.list_runs(&ALL_STATUSES, 10).await.unwrap().is_empty());
    assert_eq!(reserved.load(Ordering::SeqCst), 0);
    assert!(
        rt.signal("no-such-run", "approve", json!({}))
            .await
            .is_err()
    );
    assert!(rt.cancel("no-such-run").await.is_err());
}

/// Calls its `flaky` step until it has failed `fail_times` times with `error`.
struct Flaky {
    calls: Arc<AtomicU32>,
    fail_times: u32,
    retryable: bool,
}

#[async_trait]
impl Workflow for Flaky {
    type Input = Value;
    type Output = u32;
    fn name(&self) -> &str {
        "flaky"
    }
    async fn run(&self, ctx: &WorkflowContext, _input: Value) -> Result<u32> {
        let before: u32 = ctx.step("before", async { Ok(1) }).await?;
        let calls = Arc::clone(&self.calls);
        let (fail_times, retryable) = (self.fail_times, self.retryable);
        let n = ctx
            .step("flaky", async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n <= fail_times {
                    let kind = if retryable {
                        ProviderErrorKind::Overloaded
                    } else {
                        ProviderErrorKind::BadRequest
                    };
                    return Err(Error::provider("test", kind, format!("failure {n}")));
                }
                Ok(n)
            })
            .await?;
        Ok(before + n)
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_retried_with_backoff_and_others_fail_at_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let rt = Runtime::new(Arc::new(MemoryStore::new()));
    rt.register_workflow(
        Flaky {
            calls: Arc::clone(&calls),
            fail_times: 2,
            retryable: true,
        },
        TargetOptions::new().with_retry(
            RetryPolicy::new()
                .with_max_attempts(4)
                .with_backoff(Duration::from_secs(1), Duration::from_secs(60)),
        ),
    );
    let started = tokio::time::Instant::now();
    let run = rt
        .run_sync("flaky", json!(null), StartOptions::new())
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.output, Some(json!(4)));
    assert_eq!(run.attempts, 3);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "1 s then 2 s of backoff"
    );
    // `before` ran once and was replayed on the retries.
    assert_eq!(rt.journal(&run.id).await.unwrap().len(), 2);

    let calls = Arc::new(AtomicU32::new(0));
    let rt = Runtime::new(Arc::new(MemoryStore::new()));
    rt.register_workflow(
        Flaky {
            calls: Arc::clone(&calls),
            fail_times: 5,
            retryable: false,
        },
        TargetOptions::new(),
    );
    let run = rt
        .run_sync("flaky", json!(null), StartOptions::new())
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.attempts, 1);
    assert!(run.error.unwrap().contains("failure 1"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Does `steps` slow steps, counting executions and the highest concurrency seen.
struct Slow {
    steps: u32,
    executed: Arc<AtomicU32>,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

#[async_trait]
impl Workflow for Slow {
    type Input = Value;
    type Output = u32;
    fn name(&self) -> &str {
        "slow"
    }
    async fn run(&self, ctx: &WorkflowContext, _input: Value) -> Result<u32> {
        let now = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let mut result: Result<()> = Ok(());
        for i in 0..self.steps {
            let executed = Arc::clone(&self.executed);
            let r = ctx
                .step(&format!("s{i}"), async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    executed.fetch_add(1, Ordering::SeqCst);
                    Ok(i)
                })
                .await;
            if let Err(e) = r {
                result = Err(e);
                break;
            }
        }
        self.live.fetch_sub(1, Ordering::SeqCst);
        result.map(|()| self.steps)
    }
}

fn slow_runtime(
    store: Arc<dyn Store>,
    steps: u32,
    options: TargetOptions,
) -> (Runtime, Arc<AtomicU32>, Arc<AtomicUsize>) {
    let rt = Runtime::new(store);
    let executed = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    rt.register_workflow(
        Slow {
            steps,
            executed: Arc::clone(&executed),
            live: Arc::default(),
            peak: Arc::clone(&peak),
        },
        options,
    );
    (rt, executed, peak)
}

#[tokio::test(start_paused = true)]
async fn the_per_target_concurrency_limit_holds() {
    let (rt, executed, peak) = slow_runtime(
        Arc::new(MemoryStore::new()),
        2,
        TargetOptions::new().with_max_concurrency(2),
    );
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            rt.start_run("slow", json!(i), StartOptions::new())
                .await
                .unwrap(),
        );
    }
    for id in &ids {
        assert_eq!(rt.wait(id).await.unwrap().status, RunStatus::Succeeded);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(executed.load(Ordering::SeqCst), 12);
}

/// Step `before`, then step `blocked` (which tells the test it started and waits for the
/// test's gate), then step `after`. The test sees what ran and when the run is inside
/// `blocked`, with no clock involved.
#[derive(Clone)]
struct Gated {
    before: Arc<AtomicU32>,
    blocked_done: Arc<AtomicU32>,
    after: Arc<AtomicU32>,
    /// Notified each time `blocked` starts.
    entered: Arc<tokio::sync::Notify>,
    /// Notified each time a `blocked` step that had not finished is dropped (the execution
    /// stopped inside it).
    abandoned: Arc<tokio::sync::Notify>,
    /// One permit lets one `blocked` step finish.
    gate: Arc<tokio::sync::Semaphore>,
}

/// Notifies when dropped unless disarmed.
struct OnDrop(Option<Arc<tokio::sync::Notify>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.notify_one();
        }
    }
}

impl Gated {
    fn new() -> Self {
        Self {
            before: Arc::default(),
            blocked_done: Arc::default(),
            after: Arc::default(),
            entered: Arc::default(),
            abandoned: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }

    fn counts(&self) -> [u32; 3] {
        [
            self.before.load(Ordering::SeqCst),
            self.blocked_done.load(Ordering::SeqCst),
            self.after.load(Ordering::SeqCst),
        ]
    }

    fn runtime(&self) -> Runtime {
        let rt = Runtime::new(Arc::new(MemoryStore::new()));
        rt.register_workflow(self.clone(), TargetOptions::new());
        rt
    }
}

#[async_trait]
impl Workflow for Gated {
    type Input = Value;
    type Output = bool;
    fn name(&self) -> &str {
        "gated"
    }
    async fn run(&self, ctx: &WorkflowContext, _input: Value) -> Result<bool> {
        let before = Arc::clone(&self.before);
        ctx.step("before", async move {
            before.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        let this = self.clone();
        ctx.step("blocked", async move {
            let mut guard = OnDrop(Some(Arc::clone(&this.abandoned)));
            this.entered.notify_one();
            this.gate.acquire().await.unwrap().forget();
            guard.0 = None;
            this.blocked_done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        let after = Arc::clone(&self.after);
        ctx.step("after", async move {
            after.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        Ok(true)
    }
}

/// Wait for `what` (virtual time: fails at once when nothing else can happen).
async fn soon(what: &str, n: &tokio::sync::Notify) {
    tokio::time::timeout(Duration::from_secs(60), n.notified())
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen"));
}

fn keys(journal: &[agentkit_runtime::JournalEntry]) -> Vec<&str> {
    journal.iter().map(|e| e.key.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_run_stops_calling_steps() {
    let wf = Gated::new();
    let rt = wf.runtime();
    let id = rt
        .start_run("gated", json!(0), StartOptions::new())
        .await
        .unwrap();
    soon("the run entering `blocked`", &wf.entered).await;
    rt.cancel(&id).await.unwrap();
    soon("the execution stopping inside `blocked`", &wf.abandoned).await;
    let run = rt.wait(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.error.as_deref(), Some("cancelled by request"));
    // Opening the gate now changes nothing: nothing is left to run.
    wf.gate.add_permits(1);
    rt.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        wf.counts(),
        [1, 0, 0],
        "before once, blocked and after never"
    );
    let journal = rt.journal(&id).await.unwrap();
    assert_eq!(keys(&journal), ["step/before"]);
    assert_eq!(rt.get(&id).await.unwrap().status, RunStatus::Cancelled);
    assert!(
        rt.cancel(&id)
            .await
            .unwrap_err()
            .to_string()
            .contains("already cancelled")
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_unfinished_runs_and_a_new_runtime_finishes_them() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (rt, executed, _) = slow_runtime(Arc::clone(&store), 10, TargetOptions::new());
    let id = rt
        .start_run("slow", json!(0), StartOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(70)).await;
    rt.shutdown(Duration::from_millis(10)).await;
    assert_eq!(rt.get(&id).await.unwrap().status, RunStatus::Queued);
    assert!(
        rt.start_run("slow", json!(1), StartOptions::new())
            .await
            .is_err()
    );
    let done_before = executed.load(Ordering::SeqCst);
    assert!((1..10).contains(&done_before), "{done_before}");

    let (rt2, executed2, _) = slow_runtime(store, 10, TargetOptions::new());
    assert_eq!(rt2.recover().await.unwrap(), 1);
    let run = rt2.wait(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.attempts, 2);
    // Steps journaled before the shutdown were replayed, not executed again.
    assert_eq!(executed2.load(Ordering::SeqCst) + done_before, 10);
}

/// Returns a secret from a step.
struct Leaky;

#[async_trait]
impl Workflow for Leaky {
    type Input = Value;
    type Output = String;
    fn name(&self) -> &str {
        "leaky"
    }
    async fn run(&self, ctx: &WorkflowContext, _input: Value) -> Result<String> {
        ctx.step("fetch", async {
            Ok("key=sk-live0123456789abcdefghij for ops@example.com".to_owned())
        })
        .await
    }
}

#[tokio::test]
async fn secrets_are_redacted_before_they_are_journaled() {
    let rt = Runtime::new(Arc::new(MemoryStore::new()));
    rt.register_workflow(Leaky, TargetOptions::new());
    let run = rt
        .run_sync("leaky", json!(null), StartOptions::new())
        .await
        .unwrap();
    // The run itself saw the real value on first execution...
    assert!(
        run.output
            .unwrap()
            .as_str()
            .unwrap()
            .contains("sk-live0123456789abcdefghij")
    );
    // ...but the journal never holds it.
    let journal = rt.journal(&run.id).await.unwrap();
    let stored = journal[0].value.as_str().unwrap();
    assert!(
        !stored.contains("sk-live") && !stored.contains("ops@example.com"),
        "{stored}"
    );
    assert!(stored.contains("[REDACTED"), "{stored}");
}

#[tokio::test]
async fn the_runtime_is_a_workflow_host() {
    let reserved = Arc::new(AtomicU32::new(0));
    let shipped = Arc::new(AtomicU32::new(0));
    let rt = fulfil_runtime(Arc::new(MemoryStore::new()), &reserved, &shipped);
    let host: Arc<dyn WorkflowHost> = Arc::new(rt.clone());
    let list = host.list_workflows().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "fulfil");
    assert_eq!(list[0].description, "Reserve, wait for approval, ship");
    assert!(list[0].input_schema.to_string().contains("items"));
    let id = host
        .start(
            "fulfil",
            json!({"id": 3, "items": ["x"]}),
            StartOptions::new(),
        )
        .await
        .unwrap();
    rt.wait_for_status(&id, &[RunStatus::WaitingInput])
        .await
        .unwrap();
    assert_eq!(
        host.status(&id).await.unwrap().status,
        RunStatus::WaitingInput
    );
    host.signal(&id, "approve", json!({"by": "mcp"}))
        .await
        .unwrap();
    rt.wait(&id).await.unwrap();
    let info = host.status(&id).await.unwrap();
    assert_eq!(info.status, RunStatus::Succeeded);
    assert_eq!(info.output.unwrap()["approved_by"], "mcp");
    assert!(host.cancel(&id).await.is_err());
}

/// An agent that asks the human for a city, then answers with it.
fn asking_agent(model_calls: Arc<AtomicU32>) -> Arc<dyn AugmentedLlm> {
    let model = ScriptedProvider::from_fn(move |req| {
        model_calls.fetch_add(1, Ordering::SeqCst);
        let answer = req
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .find_map(|c| match c {
                Content::ToolResult { content, .. } => Some(
                    content
                        .iter()
                        .filter_map(|x| match x {
                            Content::Text { text } => Some(text.clone()),
                            _ => None,
                        })
                        .collect::<String>(),
                ),
                _ => None,
            });
        Ok(match answer {
            None => reply(
                Some((
                    agentkit_core::agent::HUMAN_INPUT_TOOL,
                    json!({"prompt": "Which city?"}),
                )),
                "",
            ),
            Some(text) => reply(None, &format!("You said: {text}")),
        })
    });
    Arc::new(AgentLlm::new(
        Agent::new("asker", "Ask which city.").with_human_input(true),
        model,
    ))
}

#[tokio::test]
async fn human_input_in_the_agent_loop_waits_durably_for_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.db");
    let model_calls = Arc::new(AtomicU32::new(0));
    let make = |store: SqliteStore| {
        let rt = Runtime::new(Arc::new(store));
        let m = Arc::clone(&model_calls);
        rt.register_agent(
            "asker",
            move || asking_agent(Arc::clone(&m)),
            TargetOptions::new(),
        );
        rt
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let rt = make(store.clone());
    let id = rt
        .start_run("asker", json!("Weather?"), StartOptions::new())
        .await
        .unwrap();
    let waiting = rt
        .wait_for_status(&id, &[RunStatus::WaitingInput])
        .await
        .unwrap();
    assert_eq!(waiting.status, RunStatus::WaitingInput);
    // Only the model's question is journaled, not a half-done human-input tool call.
    let keys: Vec<_> = rt
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, vec!["asker/llm/0"]);
    rt.shutdown(Duration::from_secs(5)).await;
    store.close().await;

    let rt = make(SqliteStore::open(&path).await.unwrap());
    rt.recover().await.unwrap();
    rt.signal(&id, agentkit_runtime::HUMAN_INPUT_SIGNAL, json!("Porto"))
        .await
        .unwrap();
    let run = rt.wait(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.output, Some(json!({"text": "You said: Porto"})));
    // The first model call was replayed on every resume: 1 question + 1 answer in total.
    assert_eq!(model_calls.load(Ordering::SeqCst), 2);
    let kinds: Vec<_> = rt
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EntryKind::Llm,
            EntryKind::Signal,
            EntryKind::Tool,
            EntryKind::Llm
        ]
    );
}

/// Sleeps 1 s durably, then finishes.
struct Nap;

#[async_trait]
impl Workflow for Nap {
    type Input = Value;
    type Output = bool;
    fn name(&self) -> &str {
        "nap"
    }
    async fn run(&self, ctx: &WorkflowContext, _input: Value) -> Result<bool> {
        ctx.sleep(Duration::from_millis(1000)).await?;
        Ok(true)
    }
}

// Wall clock on purpose: a durable timer's wake-up time is stored as wall-clock time (it must
// survive a restart), so tokio's paused clock cannot stand in for it.
#[tokio::test]
async fn a_durable_sleep_resumes_with_only_the_time_left() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = Runtime::new(Arc::clone(&store));
    rt.register_workflow(Nap, TargetOptions::new());
    let started = std::time::Instant::now();
    let id = rt
        .start_run("nap", json!(null), StartOptions::new())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    rt.shutdown(Duration::ZERO).await;
    assert_eq!(rt.get(&id).await.unwrap().status, RunStatus::Queued);

    let rt = Runtime::new(store);
    rt.register_workflow(Nap, TargetOptions::new());
    rt.recover().await.unwrap();
    let run = rt.wait(&id).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert!(elapsed >= Duration::from_millis(1000), "{elapsed:?}");
    // A timer that restarted from zero would end at 1.5 s.
    assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
    assert_eq!(rt.journal(&id).await.unwrap()[0].kind, EntryKind::Timer);
}

#[tokio::test(start_paused = true)]
async fn a_paused_run_stops_and_a_resumed_run_finishes_without_repeating_steps() {
    let wf = Gated::new();
    let rt = wf.runtime();
    let id = rt
        .start_run("gated", json!(0), StartOptions::new())
        .await
        .unwrap();
    soon("the run entering `blocked`", &wf.entered).await;
    rt.pause(&id).await.unwrap();
    soon("the execution stopping inside `blocked`", &wf.abandoned).await;
    assert_eq!(rt.get(&id).await.unwrap().status, RunStatus::Paused);
    assert_eq!(wf.counts(), [1, 0, 0]);
    assert_eq!(keys(&rt.journal(&id).await.unwrap()), ["step/before"]);
    assert!(
        rt.pause(&id)
            .await
            .unwrap_err()
            .to_string()
            .contains("already paused")
    );

    rt.resume(&id).await.unwrap();
    // Re-executed from the journal: `before` is replayed, `blocked` starts again.
    soon("the resumed run entering `blocked`", &wf.entered).await;
    wf.gate.add_permits(1);
    let run = rt.wait(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.output, Some(json!(true)));
    assert_eq!(wf.counts(), [1, 1, 1], "each step ran exactly once");
    assert_eq!(
        keys(&rt.journal(&id).await.unwrap()),
        ["step/before", "step/blocked", "step/after"]
    );
    assert!(
        rt.resume(&id)
            .await
            .unwrap_err()
            .to_string()
            .contains("not paused")
    );
    assert!(
        rt.pause(&id)
            .await
            .unwrap_err()
            .to_string()
            .contains("succeeded")
    );
}

#[tokio::test]
async fn emitted_events_start_subscribed_runs_once_per_event_id() {
    let reserved = Arc::new(AtomicU32::new(0));
    let shipped = Arc::new(AtomicU32::new(0));
    let rt = fulfil_runtime(Arc::new(MemoryStore::new()), &reserved, &shipped);
    assert!(rt.on_event("order.created", "nope").is_err());
    rt.on_event("order.created", "fulfil").unwrap();
    let order = json!({"id": 9, "items": ["a"]});
    let ids = rt
        .emit("order.created", order.clone(), Some("evt-1"))
        .await
        .unwrap();
    assert_eq!(ids.len(), 1);
    let again = rt
        .emit("order.created", order, Some("evt-1"))
        .await
        .unwrap();
    assert_eq!(again, ids, "a retried webhook starts nothing new");
    rt.wait_for_status(&ids[0], &[RunStatus::WaitingInput])
        .await
        .unwrap();
    assert_eq!(reserved.load(Ordering::SeqCst), 1);
    // A payload the subscriber rejects starts nothing; an event nobody listens to, neither.
    assert!(
        rt.emit("order.created", json!({"id": "x"}), None)
            .await
            .is_err()
    );
    assert!(rt.emit("other", json!({}), None).await.unwrap().is_empty());
    assert_eq!(
        rt.store().list_runs(&ALL_STATUSES, 10).await.unwrap().len(),
        1
    );
}

/// `fulfil` with its first step renamed: a code change the replay must report.
struct FulfilV2;

#[async_trait]
impl Workflow for FulfilV2 {
    type Input = Order;
    type Output = Value;
    fn name(&self) -> &str {
        "fulfil"
    }
    async fn run(&self, ctx: &WorkflowContext, order: Order) -> Result<Value> {
        let slot: String = ctx
            .step("reserve-v2", async { Ok("slot-x".to_owned()) })
            .await?;
        Ok(json!({"order": order.id, "slot": slot}))
    }
}

#[tokio::test]
async fn replay_needs_no_provider_and_reports_divergences() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    // Record an agent run and a workflow run.
    let (rt, c) = runtime_with_agent(Arc::clone(&store));
    let agent_run = rt
        .run_sync("weather", json!("Weather?"), StartOptions::new())
        .await
        .unwrap();
    let reserved = Arc::new(AtomicU32::new(0));
    let shipped = Arc::new(AtomicU32::new(0));
    let frt = fulfil_runtime(Arc::clone(&store), &reserved, &shipped);
    let wf = frt
        .start_run(
            "fulfil",
            json!({"id": 5, "items": ["a"]}),
            StartOptions::new(),
        )
        .await
        .unwrap();
    frt.wait_for_status(&wf, &[RunStatus::WaitingInput])
        .await
        .unwrap();
    frt.signal(&wf, "approve", json!({"by": "eve"}))
        .await
        .unwrap();
    assert_eq!(frt.wait(&wf).await.unwrap().status, RunStatus::Succeeded);
    let journal_before = store.journal(&wf).await.unwrap();

    // Same code: faithful, and the model and tool are not called again.
    let (models, tools) = (
        c.models.load(Ordering::SeqCst),
        c.tools.load(Ordering::SeqCst),
    );
    let report = rt.replay(&agent_run.id).await.unwrap();
    assert!(report.is_faithful(), "{:?}", report.divergences);
    assert_eq!(report.output, agent_run.output);
    assert_eq!(report.replayed.len(), 3);
    assert_eq!(
        c.models.load(Ordering::SeqCst),
        models,
        "no provider call on replay"
    );
    assert_eq!(
        c.tools.load(Ordering::SeqCst),
        tools,
        "no tool call on replay"
    );
    let report = frt.replay(&wf).await.unwrap();
    assert!(report.is_faithful(), "{:?}", report.divergences);
    assert_eq!(reserved.load(Ordering::SeqCst), 1);

    // Changed agent instructions: the recording still answers, and the change is reported.
    let changed = Runtime::new(Arc::clone(&store));
    let (t, m) = (Arc::clone(&c.tools), Arc::clone(&c.models));
    changed.register_agent(
        "weather",
        move || {
            weather_agent_with(
                "You answer weather questions, in French.",
                Arc::clone(&t),
                Arc::clone(&m),
            )
        },
        TargetOptions::new(),
    );
    let report = changed.replay(&agent_run.id).await.unwrap();
    assert!(!report.is_faithful());
    let all = report.divergences.join("\n");
    assert!(all.contains("different model request"), "{all}");
    assert_eq!(
        c.models.load(Ordering::SeqCst),
        models,
        "no provider call on replay"
    );

    // Changed code: the divergence is reported, nothing runs, nothing is stored.
    let v2 = Runtime::new(Arc::clone(&store));
    v2.register_workflow(FulfilV2, TargetOptions::new());
    let report = v2.replay(&wf).await.unwrap();
    assert!(!report.is_faithful());
    let all = report.divergences.join("\n");
    assert!(
        all.contains("step `step/reserve-v2` is not in the recording"),
        "{all}"
    );
    assert!(
        all.contains("recorded step `step/reserve` was not taken"),
        "{all}"
    );
    assert!(report.output.is_none());
    assert_eq!(store.journal(&wf).await.unwrap(), journal_before);
    assert_eq!(store.list_runs(&ALL_STATUSES, 10).await.unwrap().len(), 2);
}

/// Counts the store calls the executor makes, by method.
struct Counting {
    inner: Arc<dyn Store>,
    calls: std::sync::Mutex<std::collections::BTreeMap<&'static str, u32>>,
}

impl Counting {
    fn hit(&self, what: &'static str) {
        *self.calls.lock().unwrap().entry(what).or_default() += 1;
    }
}

#[async_trait]
impl RunStore for Counting {
    async fn create_run(&self, run: agentkit_runtime::NewRun) -> Result<agentkit_runtime::Created> {
        self.hit("create_run");
        self.inner.create_run(run).await
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<agentkit_runtime::RunRecord>> {
        self.hit("get_run");
        self.inner.get_run(run_id).await
    }

    async fn latest_run_with_key_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<agentkit_runtime::RunRecord>> {
        self.hit("latest_run_with_key_prefix");
        self.inner.latest_run_with_key_prefix(prefix).await
    }

    async fn list_runs(
        &self,
        statuses: &[RunStatus],
        limit: usize,
    ) -> Result<Vec<agentkit_runtime::RunRecord>> {
        self.hit("list_runs");
        self.inner.list_runs(statuses, limit).await
    }

    async fn count_runs(&self, statuses: &[RunStatus]) -> Result<Vec<(RunStatus, u64)>> {
        self.hit("count_runs");
        self.inner.count_runs(statuses).await
    }

    async fn search_runs(
        &self,
        query: &agentkit_runtime::RunQuery,
    ) -> Result<Vec<agentkit_runtime::RunRecord>> {
        self.hit("search_runs");
        self.inner.search_runs(query).await
    }

    async fn delete_finished_runs(&self, before: i64, limit: usize) -> Result<Vec<String>> {
        self.hit("delete_finished_runs");
        self.inner.delete_finished_runs(before, limit).await
    }

    async fn delete_finished_run(&self, run_id: &str) -> Result<bool> {
        self.hit("delete_finished_run");
        self.inner.delete_finished_run(run_id).await
    }

    async fn transition(
        &self,
        run_id: &str,
        from: &[RunStatus],
        update: agentkit_runtime::RunUpdate,
    ) -> Result<Option<agentkit_runtime::RunRecord>> {
        self.hit("transition");
        self.inner.transition(run_id, from, update).await
    }
}

#[async_trait]
impl JournalStore for Counting {
    async fn append(&self, entries: &[agentkit_runtime::JournalEntry]) -> Result<()> {
        self.hit("append");
        self.inner.append(entries).await
    }

    async fn append_fenced(
        &self,
        entries: &[agentkit_runtime::JournalEntry],
        owner: &str,
    ) -> Result<bool> {
        self.hit("append_fenced");
        self.inner.append_fenced(entries, owner).await
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<agentkit_runtime::JournalEntry>> {
        self.hit("journal");
        self.inner.journal(run_id).await
    }
}

#[async_trait]
impl SignalStore for Counting {
    async fn send_signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()> {
        self.hit("send_signal");
        self.inner.send_signal(run_id, name, payload).await
    }

    async fn has_signal(&self, run_id: &str, name: &str) -> Result<bool> {
        self.hit("has_signal");
        self.inner.has_signal(run_id, name).await
    }

    async fn has_any_signal(&self, run_id: &str, names: &[String]) -> Result<bool> {
        self.hit("has_any_signal");
        self.inner.has_any_signal(run_id, names).await
    }

    async fn take_signal(
        &self,
        run_id: &str,
        name: &str,
        entry: agentkit_runtime::JournalEntry,
    ) -> Result<Option<Value>> {
        self.hit("take_signal");
        self.inner.take_signal(run_id, name, entry).await
    }

    async fn take_signal_fenced(
        &self,
        run_id: &str,
        name: &str,
        entry: agentkit_runtime::JournalEntry,
        owner: &str,
    ) -> Result<Option<Value>> {
        self.hit("take_signal");
        self.inner
            .take_signal_fenced(run_id, name, entry, owner)
            .await
    }

    async fn fence_replayed_signal(&self, run_id: &str, owner: &str) -> Result<()> {
        self.hit("fence_replayed_signal");
        self.inner.fence_replayed_signal(run_id, owner).await
    }
}

#[async_trait]
impl LeaseStore for Counting {
    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<agentkit_runtime::RunRecord>> {
        self.hit("claim");
        self.inner.claim(run_id, owner, lease_until).await
    }

    async fn claim_next(
        &self,
        owner: &str,
        targets: &[String],
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<agentkit_runtime::RunRecord>> {
        self.hit("claim_next");
        self.inner
            .claim_next(owner, targets, lease_until, limit)
            .await
    }

    async fn renew_leases(&self, owner: &str, run_ids: &[String], lease_until: i64) -> Result<u64> {
        self.hit("renew_leases");
        self.inner.renew_leases(owner, run_ids, lease_until).await
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
}

#[async_trait]
impl KvStore for Counting {
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.inner.kv_put(namespace, key, value, ttl).await
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        self.inner.kv_get(namespace, key).await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        self.inner.kv_delete(namespace, key).await
    }
}

#[async_trait]
impl agentkit_runtime::DocStore for Counting {
    async fn doc_put(
        &self,
        collection: &str,
        id: &str,
        value: Value,
        expect: agentkit_runtime::Expect,
    ) -> Result<Option<agentkit_runtime::Doc>> {
        self.inner.doc_put(collection, id, value, expect).await
    }

    async fn doc_get(&self, collection: &str, id: &str) -> Result<Option<agentkit_runtime::Doc>> {
        self.inner.doc_get(collection, id).await
    }

    async fn doc_delete(
        &self,
        collection: &str,
        id: &str,
        expect: agentkit_runtime::Expect,
    ) -> Result<bool> {
        self.inner.doc_delete(collection, id, expect).await
    }

    async fn doc_list(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<agentkit_runtime::Doc>> {
        self.inner.doc_list(collection, prefix, after, limit).await
    }
}

/// The executor's per-run cost: a run that can start at once is stored already claimed, each
/// model or tool call is one append, the finish is one update, and `run_sync` gets the finished
/// record from that update: 3 + (calls) store round trips, no reads.
#[tokio::test]
async fn a_run_costs_one_create_one_append_per_call_and_one_finish() {
    let counting = Arc::new(Counting {
        inner: Arc::new(SqliteStore::in_memory().await.unwrap()),
        calls: Default::default(),
    });
    let (rt, _) = runtime_with_agent(counting.clone());
    let run = rt
        .run_sync("weather", json!("Weather in Lisbon?"), StartOptions::new())
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output, Some(json!({"text": "It is 18°C in Lisbon."})));
    assert_eq!(run.attempts, 1);
    let calls = counting.calls.lock().unwrap().clone();
    assert_eq!(
        calls.into_iter().collect::<Vec<_>>(),
        vec![("append", 3), ("create_run", 1), ("transition", 1)],
        "model, tool, model: 3 appends"
    );
    // What run_sync returned is what is stored.
    assert_eq!(rt.get(&run.id).await.unwrap(), run);
}

/// A wait for a run this process executes reads nothing from the store: the execution hands
/// its final record to the waiters.
#[tokio::test]
async fn waiting_for_a_run_executing_here_reads_nothing() {
    let counting = Arc::new(Counting {
        inner: Arc::new(SqliteStore::in_memory().await.unwrap()),
        calls: Default::default(),
    });
    let (rt, executed, _) = slow_runtime(counting.clone(), 5, TargetOptions::new());
    let id = rt
        .start_run("slow", json!(null), StartOptions::new())
        .await
        .unwrap();
    while executed.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run = rt.wait(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.output, Some(json!(5)));
    let calls = counting.calls.lock().unwrap().clone();
    assert_eq!(calls.get("get_run"), None, "{calls:?}");
    assert_eq!(
        rt.get(&id).await.unwrap(),
        run,
        "what the wait returned is stored"
    );
}

/// Waits for an approval and a `go` signal and makes one journaled step, in the order its
/// input says: `true`, the step right after the approval; `false`, after `go`.
struct Approved;

#[async_trait]
impl Workflow for Approved {
    type Input = bool;
    type Output = String;
    fn name(&self) -> &str {
        "approved"
    }
    async fn run(&self, ctx: &WorkflowContext, step_first: bool) -> Result<String> {
        let decision = ctx.wait_for_approval().await?;
        let step = || ctx.step("send", async { Ok(()) });
        if step_first {
            step().await?;
        }
        let _: Value = ctx.wait_for_signal("go").await?;
        if !step_first {
            step().await?;
        }
        Ok(format!("{decision:?}"))
    }
}

/// A decision replayed from the journal is checked against the store again only when what it
/// released has not been journaled: an approval whose step is journaled, and a denial, replay
/// with no store call; an approval whose step is still to come costs one check.
#[tokio::test]
async fn a_replayed_approval_is_checked_again_only_before_its_unjournaled_effect() {
    for (step_first, decision, checks) in [
        (true, json!({"decision": "approved"}), 0),
        (false, json!({"decision": "denied", "reason": "no"}), 0),
        (false, json!({"decision": "approved"}), 1),
    ] {
        let counting = Arc::new(Counting {
            inner: Arc::new(SqliteStore::in_memory().await.unwrap()),
            calls: Default::default(),
        });
        let rt = Runtime::new(counting.clone());
        rt.register_workflow(Approved, TargetOptions::new());
        let id = rt
            .start_run("approved", json!(step_first), StartOptions::new())
            .await
            .unwrap();
        rt.wait_for_status(&id, &[RunStatus::WaitingApproval])
            .await
            .unwrap();
        rt.signal(&id, agentkit_runtime::APPROVAL_SIGNAL, decision.clone())
            .await
            .unwrap();
        rt.wait_for_status(&id, &[RunStatus::WaitingInput])
            .await
            .unwrap();
        // The run re-executes for `go`, replaying the decision.
        rt.signal(&id, "go", json!(null)).await.unwrap();
        let run = rt.wait(&id).await.unwrap();
        assert_eq!(
            run.status,
            RunStatus::Succeeded,
            "{decision}: {:?}",
            run.error
        );
        let calls = counting.calls.lock().unwrap().clone();
        assert_eq!(
            calls.get("fence_replayed_signal").copied().unwrap_or(0),
            checks,
            "step first: {step_first}, {decision}: {calls:?}"
        );
    }
}

#[cfg(feature = "postgres")]
mod common;

/// On a shared store (PostgreSQL) each step's result is appended with a fenced insert: a run
/// costs the same round trips as on SQLite, no owner reads.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn on_postgres_a_run_costs_one_create_one_fenced_append_per_call_and_one_finish() {
    let pg = common::Pg::start();
    let url = pg.fresh_db("executor_costs").await;
    let counting = Arc::new(Counting {
        inner: Arc::new(
            agentkit_runtime::PostgresStore::connect(&url)
                .await
                .unwrap(),
        ),
        calls: Default::default(),
    });
    let (rt, _) = runtime_with_agent(counting.clone());
    let run = rt
        .run_sync("weather", json!("Weather in Lisbon?"), StartOptions::new())
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let calls = counting.calls.lock().unwrap().clone();
    assert_eq!(
        calls.into_iter().collect::<Vec<_>>(),
        vec![("append_fenced", 3), ("create_run", 1), ("transition", 1)],
        "model, tool, model: 3 fenced appends, no owner reads"
    );
    assert_eq!(rt.journal(&run.id).await.unwrap().len(), 3);
}

/// A run paused by another node while this one executes it: this node's next fenced append
/// fails, so its execution stops (at most the step in flight ran, unrecorded); resumed, the
/// other node finishes it with every step recorded once.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_executor_fenced_out_by_another_nodes_pause_stops() {
    let pg = common::Pg::start();
    let url = pg.fresh_db("executor_fenced").await;
    let connect = || async {
        Arc::new(
            agentkit_runtime::PostgresStore::connect(&url)
                .await
                .unwrap(),
        )
    };
    let (a, on_a, _) = slow_runtime(connect().await, 30, TargetOptions::new());
    let (b, on_b, _) = slow_runtime(connect().await, 30, TargetOptions::new());
    let id = a
        .start_run("slow", json!(null), StartOptions::new())
        .await
        .unwrap();
    while on_a.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    b.pause(&id).await.unwrap();
    let at_pause = on_a.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = on_a.load(Ordering::SeqCst);
    assert!(
        stopped <= at_pause + 1,
        "A went on after the pause: {at_pause} then {stopped}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(on_a.load(Ordering::SeqCst), stopped, "A stopped");
    let paused = b.get(&id).await.unwrap();
    assert_eq!(paused.status, RunStatus::Paused);
    let recorded = b.journal(&id).await.unwrap().len();
    assert!(
        recorded as u32 <= stopped,
        "{recorded} recorded, {stopped} ran"
    );

    b.resume(&id).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), b.wait(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.output, Some(json!(30)));
    let keys: Vec<String> = b
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        (0..30).map(|i| format!("step/s{i}")).collect::<Vec<_>>()
    );
    let ran = on_a.load(Ordering::SeqCst) + on_b.load(Ordering::SeqCst);
    assert!(
        ran <= 31,
        "every step ran once, but the one in flight at the pause: {ran}"
    );
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}
