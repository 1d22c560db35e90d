//! Federated `/mcp` calls that need no approval as MCP Tasks, over real HTTP on SQLite, driven
//! by the official Rust SDK (rmcp) against a real MCP upstream on 127.0.0.1 whose `slow` tool
//! is held open by the test and counts the calls it really runs and the cancellations it sees.
//!
//! A client that declared MCP Tasks gets a call its policies allow as a task at once (a
//! durable `agentkit.gateway_call` run of the caller's workspace, started by the caller):
//! `working` while the upstream call is held, `completed` with the tool's own result once it
//! answers, the tool run once. `tasks/cancel` cancels the run and the call in flight (the
//! upstream sees the cancellation; the result is never delivered) and is audited; pausing
//! the run cancels the call too, and resuming it makes the call again. Another
//! workspace's key does not know the task. A denied call is a tool error, as for every
//! client, and leaves no run; plain clients' calls are answered synchronously as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::Policy;
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    GetTaskParams, TaskPayload, TaskStatus,
};
use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::tenancy::WorkspaceId;
use common::upstream::{Upstream, with_delete_all};
use inproc::{call_as, call_as_task, tasks_client, wait_terminal};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

const ADMIN: &str = "test-key";

/// What the upstream's `slow` tool counts.
#[derive(Default)]
struct Counts {
    /// Calls that started running.
    runs: AtomicU32,
    /// Calls that ended because the client (agentkit) cancelled them.
    cancelled: AtomicU32,
    /// Calls that answered.
    answered: AtomicU32,
}

/// Counts a `slow` call that ends unanswered with its request cancelled.
struct Unanswered {
    counts: Arc<Counts>,
    ct: tokio_util::sync::CancellationToken,
    answered: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.answered && self.ct.is_cancelled() {
            self.counts.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The expected answer of `slow` for `text`.
fn slow_answer(text: &str) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(format!("slow: {text}"))]);
    r.structured_content = Some(json!({"echo": text}));
    r
}

/// The upstream `crm`: `slow(text)` waits until the gate opens, then answers
/// [`slow_answer`]; `delete_all`, which the gateway policy denies.
async fn upstream(counts: Arc<Counts>, gate: Arc<Semaphore>) -> Upstream {
    let server = agentkit_mcp::McpServerBuilder::new("crm", "1.0.0").tool_fn(
        "slow",
        "Answers once the test lets it",
        json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        move |args, call| {
            let (counts, gate) = (Arc::clone(&counts), Arc::clone(&gate));
            async move {
                counts.runs.fetch_add(1, Ordering::SeqCst);
                let mut guard = Unanswered {
                    counts: Arc::clone(&counts),
                    ct: call.cancellation(),
                    answered: false,
                };
                let permit = gate.acquire().await.unwrap();
                drop(permit);
                guard.answered = true;
                counts.answered.fetch_add(1, Ordering::SeqCst);
                let text = args.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(slow_answer(text))
            }
        },
    );
    Upstream::serve(with_delete_all(server).build()).await
}

struct Running {
    base: String,
    counts: Arc<Counts>,
    /// Closed until [`open`](Self::open).
    gate: Arc<Semaphore>,
    /// An invoker of acme/prod, and its key id.
    invoker: String,
    invoker_id: String,
    /// An invoker of globex/prod (which sees `crm` too).
    other: String,
    _served: inproc::InProcess,
    _dir: tempfile::TempDir,
    _crm: Upstream,
}

impl Running {
    /// Let every held and later `slow` call answer.
    fn open(&self) {
        self.gate.add_permits(1_000);
    }
}

/// `crm` is seen by acme/prod and globex/prod; the gateway policy denies `crm__delete_*`
/// and allows the rest without an approval.
async fn start() -> Running {
    start_with(|g| g).await
}

/// [`start`], with the gateway configured by `f` too.
async fn start_with(f: impl FnOnce(GatewayConfig) -> GatewayConfig) -> Running {
    let counts = Arc::new(Counts::default());
    let gate = Arc::new(Semaphore::new(0));
    let crm = upstream(Arc::clone(&counts), Arc::clone(&gate)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("g.db")).await.unwrap());
    let policy = Policy::compile(
        "gateway",
        &PolicySpec::new().with_denied_tools(["crm__delete_*"]),
    )
    .unwrap();
    let gateway = GatewayConfig::new()
        .with_policy(policy)
        .with_server_workspaces(
            "crm",
            [
                WorkspaceId::new("acme", "prod"),
                WorkspaceId::new("globex", "prod"),
            ],
        );
    let server = inproc::gateway_builder(store, ADMIN, &[("crm", &crm.url)], f(gateway))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let (invoker, invoker_id) =
        inproc::workspace_key_and_id(&base, ADMIN, "acme", "prod", "invoker", "acme-invoker").await;
    let other = inproc::workspace_key(&base, ADMIN, "globex", "prod", "invoker", "globex").await;
    Running {
        base,
        counts,
        gate,
        invoker,
        invoker_id,
        other,
        _served: served,
        _dir: dir,
        _crm: crm,
    }
}

fn slow(text: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("crm__slow")
        .with_arguments(json!({"text": text}).as_object().unwrap().clone())
}

/// Poll until `read` is true, for up to 30 s.
async fn eventually(what: &str, mut read: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// This workspace's runs of the built-in gateway-call workflow, as `key` lists them.
async fn gateway_runs(r: &Running, key: &str) -> Vec<Value> {
    let (s, runs) = call_as(&r.base, key, Method::GET, "/v1/runs?limit=100", None).await;
    assert_eq!(s, 200, "{runs}");
    runs.as_array()
        .unwrap_or_else(|| panic!("a list of runs: {runs}"))
        .iter()
        .filter(|run| run["agent"] == "agentkit.gateway_call")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_federated_call_is_a_task_that_completes_with_the_tools_own_result() {
    let r = start().await;
    let client = tasks_client(&r.base, &r.invoker, &[]).await;

    // Answered with a task while the upstream still holds the call.
    let task = call_as_task(&client, slow("as a task")).await;
    let task_id = task.task_id.clone();
    eventually("the upstream call is in flight", || {
        r.counts.runs.load(Ordering::SeqCst) == 1
    })
    .await;
    let now = client
        .get_task(GetTaskParams::new(&task_id))
        .await
        .unwrap()
        .task;
    assert_eq!(now.status(), TaskStatus::Working, "{now:?}");
    assert_eq!(r.counts.answered.load(Ordering::SeqCst), 0);

    // The task is a durable gateway-call run of the caller's workspace, started by the caller.
    let (s, run) = call_as(
        &r.base,
        &r.invoker,
        Method::GET,
        &format!("/v1/runs/{task_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "the task id is the run id: {run}");
    assert_eq!(run["agent"], "agentkit.gateway_call", "{run}");
    assert_eq!(run["status"], "running", "{run}");
    let principal = &run["input"]["principal"];
    assert_eq!(principal["tenant"], "acme", "{run}");
    assert_eq!(principal["workspace"], "prod", "{run}");
    assert_eq!(principal["key_id"], r.invoker_id.as_str(), "{run}");

    // Released: completed, with exactly the tool's result.
    r.open();
    let done = wait_terminal(&client, &task_id, String::new).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("the task completes: {done:?}");
    };
    assert_eq!(
        Value::Object(result),
        serde_json::to_value(slow_answer("as a task")).unwrap(),
        "the task's result is the tool's own"
    );
    assert_eq!(r.counts.runs.load(Ordering::SeqCst), 1, "the tool ran once");
    assert_eq!(r.counts.answered.load(Ordering::SeqCst), 1);
    assert_eq!(r.counts.cancelled.load(Ordering::SeqCst), 0);

    // The call went through the gateway's policy and audit log, under the run.
    let entries = inproc::audit_entries(&r.base, ADMIN, "?workspace=acme/prod&limit=10000").await;
    let outcomes: Vec<&Value> = entries
        .iter()
        .map(|e| &e["event"])
        .filter(|ev| ev["tool"] == "crm__slow")
        .map(|ev| &ev["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("allowed")], "{entries:?}");
    let allowed = entries
        .iter()
        .map(|e| &e["event"])
        .find(|ev| ev["tool"] == "crm__slow")
        .unwrap();
    assert_eq!(allowed["run_id"], task_id.as_str(), "{allowed}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_task_cancels_the_run_and_the_call_in_flight_upstream() {
    let r = start().await;
    let client = tasks_client(&r.base, &r.invoker, &[]).await;
    let task_id = call_as_task(&client, slow("never")).await.task_id;
    eventually("the upstream call is in flight", || {
        r.counts.runs.load(Ordering::SeqCst) == 1
    })
    .await;

    client
        .cancel_task(CancelTaskParams::new(&task_id))
        .await
        .unwrap();
    let ended = wait_terminal(&client, &task_id, String::new).await;
    assert_eq!(ended.status(), TaskStatus::Cancelled, "{ended:?}");
    // The upstream was told (MCP notifications/cancelled) and dropped the call.
    eventually("the upstream sees the cancellation", || {
        r.counts.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    let run = inproc::wait_run(&r.base, &r.invoker, &task_id, "cancelled").await;
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("tasks/cancel")),
        "{run}"
    );

    // Letting the upstream answer now delivers nothing: the task stays cancelled.
    r.open();
    let after = client
        .get_task(GetTaskParams::new(&task_id))
        .await
        .unwrap()
        .task;
    assert_eq!(after.status(), TaskStatus::Cancelled, "{after:?}");
    assert_eq!(r.counts.answered.load(Ordering::SeqCst), 0);
    assert_eq!(r.counts.runs.load(Ordering::SeqCst), 1);
    let run = inproc::wait_run(&r.base, &r.invoker, &task_id, "cancelled").await;
    assert!(run.get("output").is_none_or(Value::is_null), "{run}");

    // The cancel is audited, with the key that made it.
    let entries = inproc::audit_entries(&r.base, ADMIN, "?workspace=acme/prod&limit=10000").await;
    let cancel = entries
        .iter()
        .map(|e| &e["event"])
        .find(|ev| ev["tool"] == "runs.cancel" && ev["call_id"] == task_id.as_str())
        .unwrap_or_else(|| panic!("no runs.cancel entry for task {task_id}: {entries:?}"));
    assert_eq!(cancel["outcome"], "changed", "{cancel}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_task_cancels_the_call_upstream_and_makes_it_again_when_resumed() {
    let r = start().await;
    let operator = inproc::workspace_key(&r.base, ADMIN, "acme", "prod", "operator", "ops").await;
    let client = tasks_client(&r.base, &r.invoker, &[]).await;
    let task_id = call_as_task(&client, slow("paused")).await.task_id;
    eventually("the upstream call is in flight", || {
        r.counts.runs.load(Ordering::SeqCst) == 1
    })
    .await;

    let control = |verb: &'static str| {
        let (base, key, path) = (
            r.base.clone(),
            operator.clone(),
            format!("/v1/runs/{task_id}/{verb}"),
        );
        async move {
            let (s, b) = call_as(&base, &key, Method::POST, &path, Some(json!({}))).await;
            assert_eq!(s, 200, "{verb}: {b}");
        }
    };
    control("pause").await;
    inproc::wait_run(&r.base, &r.invoker, &task_id, "paused").await;
    eventually("the upstream sees the cancellation", || {
        r.counts.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    let paused = client
        .get_task(GetTaskParams::new(&task_id))
        .await
        .unwrap()
        .task;
    assert_eq!(paused.status(), TaskStatus::Working, "{paused:?}");

    // Resumed, the call that was cancelled is made again and its answer is the task's.
    r.open();
    control("resume").await;
    let done = wait_terminal(&client, &task_id, String::new).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("the resumed task completes: {done:?}");
    };
    assert_eq!(
        Value::Object(result),
        serde_json::to_value(slow_answer("paused")).unwrap()
    );
    assert_eq!(r.counts.runs.load(Ordering::SeqCst), 2);
    assert_eq!(r.counts.answered.load(Ordering::SeqCst), 1);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_upstream_never_answers_ends_at_the_longest_timeout() {
    // A task (a client's way to ask for a long call) may run for the longest timeout a
    // request may ask for, not the default a plain call gets.
    let r = start_with(|g| {
        g.with_default_timeout(Duration::from_millis(300))
            .with_max_timeout(Duration::from_millis(800))
    })
    .await;
    let client = tasks_client(&r.base, &r.invoker, &[]).await;
    let task_id = call_as_task(&client, slow("forever")).await.task_id;
    let done = wait_terminal(&client, &task_id, String::new).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("a timed-out call completes with a tool error, as a plain call answers: {done:?}");
    };
    assert_eq!(result.get("isError"), Some(&json!(true)), "{result:?}");
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("did not answer within 800 ms"), "{result:?}");
    // The upstream was told to stop, and the call was made once (a timeout is not retried).
    eventually("the upstream sees the cancellation", || {
        r.counts.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(r.counts.runs.load(Ordering::SeqCst), 1);
    let run = inproc::wait_run(&r.base, &r.invoker, &task_id, "succeeded").await;
    assert_eq!(run["output"]["status"], "timeout", "{run}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workspace_does_not_know_the_task() {
    let r = start().await;
    let client = tasks_client(&r.base, &r.invoker, &[]).await;
    let task_id = call_as_task(&client, slow("mine")).await.task_id;
    eventually("the upstream call is in flight", || {
        r.counts.runs.load(Ordering::SeqCst) == 1
    })
    .await;

    let theirs = tasks_client(&r.base, &r.other, &[]).await;
    let got = theirs.get_task(GetTaskParams::new(&task_id)).await;
    let e = got
        .expect_err("another workspace cannot read the task")
        .to_string();
    assert!(e.contains("no task"), "{e}");
    let cancelled = theirs.cancel_task(CancelTaskParams::new(&task_id)).await;
    let e = cancelled
        .expect_err("another workspace cannot cancel the task")
        .to_string();
    assert!(e.contains("no task"), "{e}");
    let (s, _) = call_as(
        &r.base,
        &r.other,
        Method::GET,
        &format!("/v1/runs/{task_id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);

    // The owner's task went on untouched, and its result is only the owner's.
    r.open();
    let done = wait_terminal(&client, &task_id, String::new).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    let after = theirs.get_task(GetTaskParams::new(&task_id)).await;
    assert!(after.is_err(), "{after:?}");
    assert_eq!(r.counts.cancelled.load(Ordering::SeqCst), 0);
    theirs.cancel().await.unwrap();
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_call_is_a_tool_error_with_no_run_while_an_allowed_one_is_a_task() {
    let r = start().await;
    let client = tasks_client(&r.base, &r.invoker, &[]).await;
    // An allowed call is a task ...
    let task_id = call_as_task(&client, slow("allowed")).await.task_id;
    assert_eq!(gateway_runs(&r, &r.invoker).await.len(), 1);

    // ... a denied one is answered as to any client: a tool error naming the policy, audited,
    // and no run is left behind.
    let denied = client
        .call_tool_once(CallToolRequestParams::new("crm__delete_all"))
        .await
        .unwrap();
    let CallToolResponse::Complete(out) = denied else {
        panic!("a denied call is not a task: {denied:?}");
    };
    assert_eq!(out.is_error, Some(true), "{out:?}");
    let text: String = out
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert!(
        text.contains("denied") && text.contains("gateway"),
        "{text}"
    );
    let runs = gateway_runs(&r, &r.invoker).await;
    assert_eq!(runs.len(), 1, "only the allowed call's run: {runs:?}");
    assert_eq!(runs[0]["run_id"], task_id.as_str());
    let entries = inproc::audit_entries(&r.base, ADMIN, "?workspace=acme/prod&limit=10000").await;
    assert!(
        entries
            .iter()
            .any(|e| e["event"]["tool"] == "crm__delete_all" && e["event"]["outcome"] == "denied"),
        "{entries:?}"
    );
    r.open();
    assert_eq!(
        wait_terminal(&client, &task_id, String::new).await.status(),
        TaskStatus::Completed
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_are_answered_synchronously_while_a_tasks_client_gets_a_task() {
    let r = start().await;
    r.open();
    // A tasks client's call is a task (a run) ...
    let client = tasks_client(&r.base, &r.invoker, &[]).await;
    let task_id = call_as_task(&client, slow("same")).await.task_id;
    let done = wait_terminal(&client, &task_id, String::new).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!("the task completes: {done:?}");
    };

    // ... a legacy session's plain call is the tool's result itself, the same as the task's,
    // and starts no run.
    let session = inproc::mcp_session(&r.base, &r.invoker, &[]).await;
    let plain = session.call_tool(slow("same")).await.unwrap();
    // Compared without `resultType`, the 2026-07-28 envelope's marker of a complete answer,
    // which this legacy (2025-11-25) session's answer does not carry.
    let without_marker = |mut v: Value| {
        v.as_object_mut().unwrap().remove("resultType");
        v
    };
    assert_eq!(
        without_marker(serde_json::to_value(&plain).unwrap()),
        without_marker(Value::Object(result)),
        "a plain call answers what the task completed with"
    );
    session.cancel().await.unwrap();

    // ... and so is a stateless 2026-07-28 POST that declares no tasks.
    let (s, body) = inproc::mcp_post(
        &r.base,
        &r.invoker,
        "crm__slow",
        json!({"text": "same"}),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["result"]["content"],
        json!([{"type": "text", "text": "slow: same"}]),
        "{body}"
    );
    assert_eq!(body["result"]["structuredContent"], json!({"echo": "same"}));

    let runs = gateway_runs(&r, &r.invoker).await;
    assert_eq!(runs.len(), 1, "only the task is a run: {runs:?}");
    assert_eq!(runs[0]["run_id"], task_id.as_str());
    assert_eq!(r.counts.runs.load(Ordering::SeqCst), 3);
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_is_the_same_task_and_one_call() {
    let r = start().await;
    let client = tasks_client(&r.base, &r.invoker, &[("idempotency-key", "order-42")]).await;
    let first = call_as_task(&client, slow("once")).await.task_id;
    let again = call_as_task(&client, slow("once")).await.task_id;
    assert_eq!(first, again, "same key, same task");
    // The same key with other arguments is refused.
    let refused = client.call_tool_once(slow("other")).await;
    let e = refused.expect_err("a reused key is refused").to_string();
    assert!(e.contains("idempotency key"), "{e}");

    r.open();
    let done = wait_terminal(&client, &first, String::new).await;
    assert_eq!(done.status(), TaskStatus::Completed, "{done:?}");
    assert_eq!(gateway_runs(&r, &r.invoker).await.len(), 1);
    assert_eq!(r.counts.runs.load(Ordering::SeqCst), 1, "the tool ran once");
    client.cancel().await.unwrap();
}
