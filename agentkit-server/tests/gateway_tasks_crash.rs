//! Federated `/mcp` task calls in hostile cases, against real `agentkit serve` processes and a
//! real stdio MCP upstream (the official Python SDK, `tests/peers/held_tool_server.py`) whose
//! `hold` tool is held until the test creates a file, and which logs every call it really
//! starts (with the run id and idempotency key agentkit sent in `_meta`), every cancellation
//! it sees and every answer it gives.
//!
//! - SIGKILL of the server while a task's upstream call is in flight: after a restart on the
//!   same SQLite file the same task completes with the tool's result; the upstream saw the
//!   call at most twice, each time with the same run id and idempotency key (at least once,
//!   with a key the upstream can deduplicate on); another workspace does not know the task.
//! - (feature `postgres`) two processes on one PostgreSQL database: a task started through A
//!   and cancelled through B is cancelled on both, its call in flight on A is cancelled
//!   upstream, and the cancel is audited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::path::Path;
use std::time::{Duration, Instant};

use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, DetailedTask, GetTaskParams, TaskPayload, TaskStatus,
};
use common::tools::{peer_python, peers, tool_calls};
use common::{KEY, Serve, free_port};
use inproc::{McpClient, call_as_task, tasks_client, wait_terminal};
use serde_json::{Value, json};

/// An `agentkit.yaml` whose outbound server `ops` is the held tool server (its events logged
/// to `tool_log`, its calls released by creating `release`), seen by acme/prod and
/// globex/prod; no policy, so every call is allowed.
fn yaml(tool_log: &Path, release: &Path) -> String {
    let python = peer_python();
    format!(
        r#"mcp:
  servers:
    ops:
      command: {python}
      args: [{script}]
      env: {{TOOL_LOG: {log}, TOOL_RELEASE: {release}}}
gateway:
  servers:
    ops: [acme/prod, globex/prod]
"#,
        python = python.display(),
        script = peers().join("held_tool_server.py").display(),
        log = tool_log.display(),
        release = release.display(),
    )
}

/// A call the upstream really started: the `_meta` it carried.
#[derive(Debug, Clone, PartialEq)]
struct Started {
    text: String,
    run_id: String,
    idempotency_key: String,
}

/// The calls the upstream started, in order (`start <text> <run id> <key>` lines; the texts
/// these tests send have no spaces).
fn started(tool_log: &Path) -> Vec<Started> {
    tool_calls(tool_log)
        .iter()
        .filter_map(|l| {
            let mut f = l.strip_prefix("start ")?.split(' ');
            Some(Started {
                text: f.next()?.to_owned(),
                run_id: f.next()?.to_owned(),
                idempotency_key: f.next()?.to_owned(),
            })
        })
        .collect()
}

/// The log's lines starting with `event ` (`cancelled`, `done`).
fn events(tool_log: &Path, event: &str) -> Vec<String> {
    let prefix = format!("{event} ");
    tool_calls(tool_log)
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect()
}

fn hold(text: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("ops__hold")
        .with_arguments(json!({"text": text}).as_object().unwrap().clone())
}

/// Poll until `read` is true, for up to 30 s.
async fn eventually(what: &str, log: &Path, mut read: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read() {
        assert!(
            Instant::now() < deadline,
            "never: {what}; the upstream logged {:?}",
            tool_calls(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn get_task(client: &McpClient, task_id: &str) -> DetailedTask {
    client
        .get_task(GetTaskParams::new(task_id))
        .await
        .unwrap()
        .task
}

/// An invoker key of acme/prod (its secret and id) and one of globex/prod, made through
/// `serve` with the admin key.
async fn keys(serve: &Serve) -> (String, String, String) {
    let (invoker, invoker_id) =
        inproc::workspace_key_and_id(&serve.base, KEY, "acme", "prod", "invoker", "acme").await;
    let other =
        inproc::workspace_key(&serve.base, KEY, "globex", "prod", "invoker", "globex").await;
    (invoker, invoker_id, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_call_is_in_flight_survives_sigkill_and_completes_with_one_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    let (tool_log, release) = (dir.path().join("tools.log"), dir.path().join("release"));
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(&config, yaml(&tool_log, &release)).unwrap();
    let database = dir.path().join("agentkit.db").to_str().unwrap().to_owned();
    let log = dir.path().join("serve.log");
    let port = free_port();

    let mut serve = Serve::start(&config, &database, port, &log).await;
    let (invoker, _, other) = keys(&serve).await;
    let client = tasks_client(&serve.base, &invoker, &[]).await;
    let task_id = call_as_task(&client, hold("through-the-crash"))
        .await
        .task_id;
    eventually("the upstream runs the call", &tool_log, || {
        !started(&tool_log).is_empty()
    })
    .await;
    let working = get_task(&client, &task_id).await;
    assert_eq!(working.status(), TaskStatus::Working, "{working:?}");
    // Another workspace's key does not know the task while it runs ...
    let theirs = tasks_client(&serve.base, &other, &[]).await;
    let no_task = |got: Result<_, agentkit_mcp::rmcp::ServiceError>| {
        let e = got
            .expect_err("another workspace cannot read the task")
            .to_string();
        assert!(e.contains("no task"), "{e}");
    };
    no_task(theirs.get_task(GetTaskParams::new(&task_id)).await);

    // Killed while the upstream holds the call; restarted on the same database and port.
    serve.kill();
    let serve = Serve::start(&config, &database, port, &log).await;
    std::fs::write(&release, "").unwrap();

    // The same client's task completes through the restarted server (a 2026-07-28 client
    // keeps no session), with the tool's own result.
    let done = wait_terminal(&client, &task_id, || serve.log_text()).await;
    let TaskPayload::Completed { result } = done.payload else {
        panic!(
            "the task completes after the restart: {done:?}\n{}",
            serve.log_text()
        );
    };
    let result = Value::Object(result);
    assert_eq!(
        result["content"],
        json!([{"type": "text", "text": "held: through-the-crash"}]),
        "{result}"
    );
    assert_ne!(result["isError"], json!(true), "{result}");
    let run = inproc::wait_run(&serve.base, &invoker, &task_id, "succeeded").await;
    assert_eq!(run["agent"], "agentkit.gateway_call", "{run}");

    // At least once, at most twice, and every time with the same run id and idempotency key:
    // an upstream that deduplicates on the key runs it once.
    let calls = started(&tool_log);
    assert!(
        (1..=2).contains(&calls.len()),
        "the upstream saw the call {} times: {:?}",
        calls.len(),
        tool_calls(&tool_log)
    );
    let first = calls[0].clone();
    assert_eq!(first.text, "through-the-crash");
    assert_eq!(first.run_id, task_id, "the run id in _meta is the task's");
    assert!(
        first.idempotency_key.starts_with(&task_id) && first.idempotency_key != task_id,
        "an idempotency key of the run's call: {first:?}"
    );
    for again in &calls[1..] {
        assert_eq!(
            again,
            &first,
            "a call made again after the crash carries the same _meta: {:?}",
            tool_calls(&tool_log)
        );
    }
    let answered = format!("done through-the-crash {}", first.idempotency_key);
    assert!(
        events(&tool_log, "done").contains(&answered),
        "the call that answered carried that key: {:?}",
        tool_calls(&tool_log)
    );

    // ... nor after the restart, once it ended.
    no_task(theirs.get_task(GetTaskParams::new(&task_id)).await);
    theirs.cancel().await.unwrap();
    client.cancel().await.unwrap();
}

/// A task started through node A and cancelled through node B (one PostgreSQL database): B
/// answers it cancelled at once, A's call in flight is cancelled upstream (the upstream A
/// started logs the cancellation), A reports the task cancelled, and the cancel is audited.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_started_on_one_node_and_cancelled_through_the_other_cancels_the_call_upstream() {
    use agentkit_mcp::rmcp::model::CancelTaskParams;
    use common::pg::Pg;

    let pg = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    // Each node has its own upstream process and log: what A's logs is what A called.
    let (a_tools, b_tools) = (
        dir.path().join("a-tools.log"),
        dir.path().join("b-tools.log"),
    );
    let (a_config, b_config) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    std::fs::write(&a_config, yaml(&a_tools, &release)).unwrap();
    std::fs::write(&b_config, yaml(&b_tools, &release)).unwrap();
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = Serve::start(&a_config, &pg.url, free_port(), &a_log).await;
    let b = Serve::start(&b_config, &pg.url, free_port(), &b_log).await;
    let (invoker, invoker_id, _) = keys(&a).await;

    let on_a = tasks_client(&a.base, &invoker, &[]).await;
    let task_id = call_as_task(&on_a, hold("cancelled-elsewhere"))
        .await
        .task_id;
    eventually("A's upstream runs the call", &a_tools, || {
        !started(&a_tools).is_empty()
    })
    .await;
    let call = started(&a_tools)[0].clone();
    assert_eq!(call.run_id, task_id, "{call:?}");

    // Cancelled through B, with the same key: B answers it cancelled at once.
    let on_b = tasks_client(&b.base, &invoker, &[]).await;
    assert_eq!(
        get_task(&on_b, &task_id).await.status(),
        TaskStatus::Working
    );
    on_b.cancel_task(CancelTaskParams::new(&task_id))
        .await
        .unwrap();
    let on_b_now = get_task(&on_b, &task_id).await;
    assert_eq!(on_b_now.status(), TaskStatus::Cancelled, "{on_b_now:?}");

    // A's call in flight is cancelled upstream (MCP notifications/cancelled).
    let cancelled = format!("cancelled cancelled-elsewhere {}", call.idempotency_key);
    eventually("A's upstream sees the cancellation", &a_tools, || {
        events(&a_tools, "cancelled") == [cancelled.clone()]
    })
    .await;
    let ended = wait_terminal(&on_a, &task_id, || a.log_text()).await;
    assert_eq!(ended.status(), TaskStatus::Cancelled, "{ended:?}");
    let run = inproc::wait_run(&a.base, &invoker, &task_id, "cancelled").await;
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("tasks/cancel")),
        "{run}"
    );

    // Released now, nothing answers: the call is gone, the task stays cancelled.
    std::fs::write(&release, "").unwrap();
    assert_eq!(
        get_task(&on_a, &task_id).await.status(),
        TaskStatus::Cancelled
    );
    assert!(
        events(&a_tools, "done").is_empty(),
        "{:?}",
        tool_calls(&a_tools)
    );
    assert_eq!(started(&a_tools).len(), 1, "{:?}", tool_calls(&a_tools));
    assert!(started(&b_tools).is_empty(), "{:?}", tool_calls(&b_tools));

    // The cancel is audited (read through A), with the outcome `changed`.
    let entries = inproc::audit_entries(&a.base, KEY, "?workspace=acme/prod&limit=10000").await;
    let cancel = entries
        .iter()
        .map(|e| &e["event"])
        .find(|ev| ev["tool"] == "runs.cancel" && ev["call_id"] == task_id.as_str())
        .unwrap_or_else(|| panic!("no runs.cancel entry for task {task_id}: {entries:?}"));
    assert_eq!(cancel["outcome"], "changed", "{cancel}");
    assert_eq!(cancel["key_id"], invoker_id.as_str(), "{cancel}");
    // The call's own entry is A's decision to make it, under the run.
    let made: Vec<&Value> = entries
        .iter()
        .map(|e| &e["event"])
        .filter(|ev| ev["tool"] == "ops__hold")
        .collect();
    assert_eq!(made.len(), 1, "{entries:?}");
    assert_eq!(made[0]["outcome"], "allowed", "{entries:?}");
    assert_eq!(made[0]["run_id"], task_id.as_str(), "{entries:?}");
    // A and B appended to one audit chain, which still verifies.
    inproc::assert_audit_verifies(&b.base, KEY, "acme/prod").await;
    on_a.cancel().await.unwrap();
    on_b.cancel().await.unwrap();
    drop((a, b, pg));
}
