//! An agent whose tools really run somewhere the test can count: a scripted
//! OpenAI-compatible model that reads, then posts, then answers, and a stdio MCP server of the
//! official Python SDK (`tests/peers/tool_log_server.py`) that logs every call it runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An OpenAI-compatible model that calls `ops__read_file`, then `ops__send_message`, then
/// answers `posted` (by how many tool results the conversation has), each after `delay`.
pub struct ToolModel {
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
    /// How many completions were asked for.
    pub calls: Arc<AtomicUsize>,
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
    read_path: String,
    post_text: String,
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
            call("ops__read_file", json!({"path": s.read_path})),
            "tool_calls",
        ),
        1 => (
            call("ops__send_message", json!({"text": s.post_text})),
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
    /// Serve on a free port; each answer takes `delay`. It reads `/docs/readme.md` and posts
    /// `the docs say hello`.
    pub async fn start(delay: Duration) -> Self {
        Self::start_with(delay, "/docs/readme.md", "the docs say hello").await
    }

    /// [`start`](Self::start), reading `read_path` and posting `post_text`.
    pub async fn start_with(delay: Duration, read_path: &str, post_text: &str) -> Self {
        let calls = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .fallback(axum::routing::post(complete))
            .with_state(ModelState {
                delay,
                calls: Arc::clone(&calls),
                read_path: read_path.to_owned(),
                post_text: post_text.to_owned(),
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

/// `tests/peers` (the Python venv and the tool server).
pub fn peers() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers")
}

/// The Python of `tests/peers`' venv (the official MCP Python SDK is installed in it).
pub fn peer_python() -> std::path::PathBuf {
    let python = peers().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-python-clients.sh",
        python.display()
    );
    python
}

/// An `agentkit.yaml`: agent `poster` on `model` with the `ops` MCP server (its calls logged
/// to `tool_log`) under policy `guarded`, whose chain rule asks for approval of a post after a
/// read.
pub fn yaml(model: &ToolModel, tool_log: &Path) -> String {
    let python = peer_python();
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
pub fn tool_calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
