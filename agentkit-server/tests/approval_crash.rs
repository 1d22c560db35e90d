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

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use common::{Serve, free_port};
use reqwest::Method;
use serde_json::{Value, json};

/// An OpenAI-compatible model that calls `ops__read_file`, then `ops__send_message`, then
/// answers `posted` (by how many tool results the conversation has), each after `delay`.
struct ToolModel {
    base_url: String,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ToolModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct ModelState {
    delay: Duration,
    calls: Arc<AtomicUsize>,
}

async fn complete(State(s): State<ModelState>, body: Bytes) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body["stream"] == true {
        // Nobody listens to these runs' deltas, so the runtime never streams them.
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "this test model does not stream",
        )
            .into_response();
    }
    let results = body["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
    tokio::time::sleep(s.delay).await;
    let call = |name: &str, args: Value| {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_{results}"), "type": "function",
            "function": {"name": name, "arguments": args.to_string()}}]})
    };
    let (message, finish) = match results {
        0 => (
            call("ops__read_file", json!({"path": "/docs/readme.md"})),
            "tool_calls",
        ),
        1 => (
            call("ops__send_message", json!({"text": "the docs say hello"})),
            "tool_calls",
        ),
        _ => (json!({"role": "assistant", "content": "posted"}), "stop"),
    };
    axum::Json(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
    .into_response()
}

impl ToolModel {
    async fn start(delay: Duration) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .fallback(axum::routing::post(complete))
            .with_state(ModelState {
                delay,
                calls: Arc::clone(&calls),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base_url: format!("http://{addr}/v1"),
            calls,
            task,
        }
    }
}

fn peers() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers")
}

fn yaml(model: &ToolModel, tool_log: &Path) -> String {
    let python = peers().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-clients.sh",
        python.display()
    );
    format!(
        r#"openai:
  base_url: {base}
  api_key: test
mcp:
  servers:
    ops:
      command: {python}
      args: [{script}]
      env: {{TOOL_LOG: {log}}}
policies:
  guarded:
    chains:
      - pattern: ["ops__read_*", "ops__send_message"]
        action: require_approval
        reason: a post after a read may leak what was read
agents:
  poster:
    model: openai:gpt-4o-mini
    instructions: Read the docs, then post what they say.
    servers: [ops]
    policy: guarded
"#,
        base = model.base_url,
        python = python.display(),
        script = peers().join("tool_log_server.py").display(),
        log = tool_log.display(),
    )
}

/// The lines of the tools' log (one per call the MCP server really ran).
fn tool_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

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

async fn run_status(serve: &Serve, run: &str) -> Value {
    serve
        .call(Method::GET, &format!("/v1/runs/{run}"), None)
        .await
        .1
}

async fn wait_status(serve: &Serve, run: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = run_status(serve, run).await;
        if r["status"] == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "run {run} never became {status}: {r}\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    let waiting = wait_status(&serve, &run, "waiting_approval").await;
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
    wait_status(&serve, &run, "waiting_approval").await;
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
    let done = wait_status(&serve, &run, "succeeded").await;
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
