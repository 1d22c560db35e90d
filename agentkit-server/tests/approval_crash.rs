//! Approvals and chain rules survive SIGKILL of a real `agentkit serve` process.
//!
//! The agent reads a file and then posts a message through a real stdio MCP server (the
//! official Python SDK, `tests/peers/tool_log_server.py`, which logs every call it really
//! runs). A chain rule asks for approval of a post after a read. The test kills the server
//! twice:
//!
//! 1. after the read ran and while the model is deciding to post: after the restart the read
//!    is replayed from the journal (not run again) and the chain rule still sees it, so the
//!    post waits for approval;
//! 2. while that approval is pending and claimed by an operator: after the restart it is
//!    still pending, still claimed (another operator is refused), and once approved the post
//!    runs exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::tools::{ToolModel, tool_calls, yaml};
use common::{Serve, free_port, wait_status};
use reqwest::Method;
use serde_json::{Value, json};

async fn wait_until<F: Fn() -> bool>(what: &str, serve: &Serve, f: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn operator_key(serve: &Serve, name: &str) -> String {
    let (st, k) = serve
        .call(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": name, "role": "operator"})),
        )
        .await;
    assert_eq!(st, 201, "{k}");
    k["key"].as_str().unwrap().to_owned()
}

async fn as_key(serve: &Serve, key: &str, method: Method, path: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .request(method, format!("{}{path}", serve.base))
        .bearer_auth(key)
        .json(&json!({"reason": "checked the text"}))
        .send()
        .await
        .unwrap();
    let st = res.status().as_u16();
    (st, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rule_and_a_claimed_approval_survive_sigkill_and_the_tool_runs_once() {
    // Slow enough that the kill lands while the model decides to post.
    let model = ToolModel::start(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let tool_log = dir.path().join("tools.log");
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(&config, yaml(&model, &tool_log)).unwrap();
    let database = dir.path().join("agentkit.db").to_str().unwrap().to_owned();
    let log = dir.path().join("serve.log");
    let port = free_port();

    let mut serve = Serve::start(&config, &database, port, &log).await;
    let (alice, bob) = (
        operator_key(&serve, "alice").await,
        operator_key(&serve, "bob").await,
    );
    let (st, run) = serve
        .call(
            Method::POST,
            "/v1/agents/poster/runs",
            Some(json!({"message": "share the docs"})),
        )
        .await;
    assert_eq!(st, 202, "{run}");
    let run = run["run_id"].as_str().unwrap().to_owned();

    // 1. Kill once the read's result is journaled and the model is deciding to post (the
    //    second model call is asked only after the tool result is stored).
    wait_until("the second model call", &serve, || {
        model.calls.load(Ordering::SeqCst) >= 2
    })
    .await;
    serve.kill();
    assert_eq!(model.calls.load(Ordering::SeqCst), 2);
    assert_eq!(tool_calls(&tool_log), ["read /docs/readme.md"]);

    let mut serve = Serve::start(&config, &database, port, &log).await;
    let waiting = wait_status(&serve, &run, &["waiting_approval"]).await;
    assert_eq!(
        tool_calls(&tool_log),
        ["read /docs/readme.md"],
        "the read was replayed from the journal, not run again; the post waits: {waiting}"
    );
    let (st, pending) = serve.call(Method::GET, "/v1/approvals", None).await;
    assert_eq!(st, 200, "{pending}");
    let pending = pending.as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["tool"], "ops__send_message");
    assert_eq!(pending[0]["rule"], "chains[0]");
    assert_eq!(
        pending[0]["history"],
        json!(["ops__read_file"]),
        "the chain rule saw the read made before the crash"
    );
    let call_id = pending[0]["call_id"].as_str().unwrap().to_owned();

    // 2. Alice claims the approval; kill while it is pending and claimed.
    let (st, claimed) = as_key(
        &serve,
        &alice,
        Method::POST,
        &format!("/v1/approvals/{run}/{call_id}/claim"),
    )
    .await;
    assert_eq!(st, 200, "{claimed}");
    serve.kill();

    let serve = Serve::start(&config, &database, port, &log).await;
    // Recovery replays a waiting run up to its wait (a decision stored just before a crash
    // would otherwise never resume it): no model is asked, no tool runs.
    wait_status(&serve, &run, &["waiting_approval"]).await;
    assert_eq!(model.calls.load(Ordering::SeqCst), 3);
    let (_, pending) = serve.call(Method::GET, "/v1/approvals", None).await;
    let pending = pending.as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(pending[0]["call_id"], call_id.as_str());
    assert_eq!(pending[0]["claimed_by"], claimed["claimed_by"]);
    // The claim holds across the restart: Bob may not decide it.
    let (st, refused) = as_key(
        &serve,
        &bob,
        Method::POST,
        &format!("/v1/runs/{run}/approve"),
    )
    .await;
    assert_eq!(st, 409, "{refused}");
    assert_eq!(tool_calls(&tool_log), ["read /docs/readme.md"]);

    let (st, body) = as_key(
        &serve,
        &alice,
        Method::POST,
        &format!("/v1/runs/{run}/approve"),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let done = wait_status(&serve, &run, &["succeeded"]).await;
    assert_eq!(done["output"]["text"], "posted", "{done}");
    assert_eq!(
        tool_calls(&tool_log),
        ["read /docs/readme.md", "send the docs say hello"],
        "each tool ran exactly once across two crashes"
    );
    // read, post (asked twice: the kill cut the first answer), answer.
    assert_eq!(model.calls.load(Ordering::SeqCst), 4);
    let (_, decided) = serve
        .call(Method::GET, "/v1/approvals?status=approved", None)
        .await;
    let decided = decided.as_array().unwrap().clone();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["decided_by"], claimed["claimed_by"]);
}
