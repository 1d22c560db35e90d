//! A gateway call waiting for an approval survives SIGKILL of a real `agentkit serve`
//! process, and once approved runs exactly once.
//!
//! The upstream is a real stdio MCP server (the official Python SDK,
//! `tests/peers/tool_log_server.py`) that logs every call it really runs. The gateway policy
//! asks for approval of `ops__send_message`. A `POST /v1/execute` call of it is answered
//! `pending_approval` with its durable run; the server is killed while it waits; after the
//! restart the call is still pending in the approval queue (and nothing ran); approved, the
//! tool runs once and the run's output is its answer; after one more kill and restart
//! nothing runs again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::tools::{peer_python, peers, tool_calls};
use common::{Serve, free_port, wait_status};
use reqwest::Method;
use serde_json::json;

fn yaml(tool_log: &std::path::Path) -> String {
    let python = peer_python();
    format!(
        r#"mcp:
  servers:
    ops:
      command: {python}
      args: [{script}]
      env: {{TOOL_LOG: {log}}}
policies:
  gw:
    require_approval: ["ops__send_message"]
gateway:
  policy: gw
"#,
        python = python.display(),
        script = peers().join("tool_log_server.py").display(),
        log = tool_log.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_gateway_approval_survives_sigkill_and_the_tool_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let tool_log = dir.path().join("tools.log");
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(&config, yaml(&tool_log)).unwrap();
    let database = dir.path().join("agentkit.db").to_str().unwrap().to_owned();
    let log = dir.path().join("serve.log");
    let port = free_port();

    let mut serve = Serve::start(&config, &database, port, &log).await;
    let (st, b) = serve
        .call(
            Method::POST,
            "/v1/execute",
            Some(json!({"calls": [
                {"id": "post", "server": "ops", "tool": "send_message",
                 "arguments": {"text": "after the crash"}},
                {"id": "read", "server": "ops", "tool": "read_file",
                 "arguments": {"path": "/docs/readme.md"}},
            ]})),
        )
        .await;
    assert_eq!(st, 200, "{b}\n{}", serve.log_text());
    let results = b["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "pending_approval", "{b}");
    assert_eq!(results[1]["status"], "success", "{b}");
    let run = results[0]["run_id"].as_str().unwrap().to_owned();
    wait_status(&serve, &run, &["waiting_approval"]).await;
    assert_eq!(tool_calls(&tool_log), ["read /docs/readme.md"]);

    serve.kill();
    let mut serve = Serve::start(&config, &database, port, &log).await;
    // Recovery replays the run up to its wait: nothing runs.
    let waiting = wait_status(&serve, &run, &["waiting_approval", "failed", "succeeded"]).await;
    assert_eq!(
        waiting["status"],
        "waiting_approval",
        "{waiting}\n{}",
        serve.log_text()
    );
    assert_eq!(waiting["agent"], "agentkit.gateway_call", "{waiting}");
    let (st, pending) = serve.call(Method::GET, "/v1/approvals", None).await;
    assert_eq!(st, 200, "{pending}");
    let pending = pending.as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["run_id"], run.as_str());
    assert_eq!(pending[0]["call_id"], "post");
    assert_eq!(pending[0]["tool"], "ops__send_message");
    assert_eq!(pending[0]["status"], "pending");
    assert_eq!(tool_calls(&tool_log), ["read /docs/readme.md"]);

    let (st, b) = serve
        .call(
            Method::POST,
            &format!("/v1/approvals/{run}/post/approve"),
            Some(json!({"reason": "checked"})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let done = wait_status(&serve, &run, &["succeeded", "failed"]).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", serve.log_text());
    assert_eq!(done["output"]["status"], "success", "{done}");
    assert_eq!(
        done["output"]["content"][0]["text"], "sent",
        "the run's output is the tool's answer: {done}"
    );
    assert_eq!(
        tool_calls(&tool_log),
        ["read /docs/readme.md", "send after the crash"],
        "the approved call ran exactly once, with its arguments"
    );

    // Once more: a restart runs nothing again.
    serve.kill();
    let serve = Serve::start(&config, &database, port, &log).await;
    let again = wait_status(&serve, &run, &["succeeded"]).await;
    assert_eq!(again["output"], done["output"]);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        tool_calls(&tool_log),
        ["read /docs/readme.md", "send after the crash"]
    );
    let (_, decided) = serve
        .call(Method::GET, "/v1/approvals?status=approved", None)
        .await;
    assert_eq!(decided.as_array().unwrap().len(), 1, "{decided}");
}
