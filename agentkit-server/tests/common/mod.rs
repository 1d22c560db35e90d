//! What the process-level tests share: a slow OpenAI-compatible model server on 127.0.0.1,
//! `agentkit serve` as a child process (killed on drop), and an SSE client that records the
//! `id` of every run event it receives.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    unreachable_pub,
    missing_docs
)]

pub mod peers;
#[path = "../../../agentkit-runtime/tests/common/pg.rs"]
pub mod pg;
pub mod tools;
pub mod upstream;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

#[allow(unused_imports)] // Not every test that includes `common` takes a port.
pub use pg::free_port;

/// The admin key every test server is started with.
pub const KEY: &str = "process-test-key";

/// An OpenAI-compatible Chat Completions server (streamed when asked) that answers every request after `delay`
/// with `"<last user message> | <system prompt>"`, so a chain of agents whose instructions
/// are `one`, `two`, `three` answers `"<input> | one | two | three"`. Stops when dropped.
pub struct SlowModel {
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SlowModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct ModelState {
    delay: Duration,
    calls: Arc<AtomicUsize>,
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

async fn complete(State(s): State<ModelState>, body: Bytes) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let system = messages
        .iter()
        .find(|m| m["role"] == "system" || m["role"] == "developer")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    let user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    tokio::time::sleep(s.delay).await;
    let answer = format!("{user} | {system}");
    if body["stream"] == true {
        // Streamed (a run with live listeners): the same answer as `chat.completion.chunk`s.
        let chunk = |delta: Value, finish: Value, usage: Value| {
            let choices = if usage.is_null() {
                json!([{"index": 0, "delta": delta, "finish_reason": finish}])
            } else {
                json!([])
            };
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
                       "model": "gpt-4o-mini", "choices": choices, "usage": usage})
            )
        };
        let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
        let frames = [
            chunk(
                json!({"role": "assistant", "content": answer}),
                Value::Null,
                Value::Null,
            ),
            chunk(json!({}), json!("stop"), Value::Null),
            chunk(Value::Null, Value::Null, usage),
            "data: [DONE]\n\n".to_owned(),
        ];
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from(frames.concat()))
            .unwrap();
    }
    axum::Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
    .into_response()
}

impl SlowModel {
    /// Serve on a free port; each answer takes `delay`.
    pub async fn start(delay: Duration) -> Self {
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

    /// How many completions were asked for.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// An `agentkit.yaml` on this server: agents `one`, `two`, `three` and the workflow
    /// `slow` chaining them.
    pub fn config(&self) -> String {
        format!(
            "openai:\n  base_url: {}\n  api_key: test\n\
             agents:\n  \
               one: {{model: 'openai:gpt-4o-mini', instructions: one}}\n  \
               two: {{model: 'openai:gpt-4o-mini', instructions: two}}\n  \
               three: {{model: 'openai:gpt-4o-mini', instructions: three}}\n\
             workflows:\n  \
               slow: {{type: chain, steps: [one, two, three]}}\n",
            self.base_url
        )
    }
}

/// `agentkit serve` as a child process; SIGKILLed when dropped.
pub struct Serve {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Serve {
    /// Start `agentkit serve --config <config> --database <database> --bind 127.0.0.1:<port>`
    /// with [`KEY`], its output appended to `log`, and wait until it answers `/healthz`.
    pub async fn start(config: &Path, database: &str, port: u16, log: &Path) -> Self {
        Self::start_with_env(config, database, port, log, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables.
    pub async fn start_with_env(
        config: &Path,
        database: &str,
        port: u16,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let out = File::options().create(true).append(true).open(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_agentkit"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(["--database", database])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env_remove("GOOGLE_API_KEY")
            .env_remove("AGENTKIT_DATABASE")
            .env_remove("AGENTKIT_MASTER_KEY")
            .env_remove("AGENTKIT_MASTER_KEY_FILE")
            .env_remove("AGENTKIT_MASTER_KEY_PREVIOUS")
            .env_remove("AGENTKIT_MASTER_KEY_PREVIOUS_FILE")
            .env("AGENTKIT_ADMIN_KEY", KEY)
            .env(
                "RUST_LOG",
                std::env::var("AGENTKIT_TEST_LOG").unwrap_or_else(|_| "warn,agentkit=info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let mut serve = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_owned(),
        };
        serve.wait_ready().await;
        serve
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", self.base)).await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("agentkit serve exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "agentkit serve did not come up:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL the process and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send the process SIGTERM (what a service manager sends to stop it).
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("the process runs").id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Wait up to `within` for the process to exit and reap it: its exit status, or `None`
    /// while it still runs.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request with the key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY)
    }

    /// Send a request; its status and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// What one SSE client received from a run's stream, across reconnects.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// The `id` of every event received, in order (duplicates kept, to be caught).
    pub ids: Vec<u64>,
    /// The event names received (journal events, `status`, `end`).
    pub events: Vec<String>,
    /// The `end` event's run, once it came.
    pub end: Option<Value>,
}

impl Received {
    /// The last id received.
    pub fn last_id(&self) -> Option<u64> {
        self.ids.last().copied()
    }
}

/// Follow `run_id`'s event stream on `base` (resuming after `last`, sent as `Last-Event-ID`),
/// recording into `into` as frames arrive. True when the `end` event came; false when the
/// connection failed or closed before it.
pub async fn follow(
    base: &str,
    run_id: &str,
    last: Option<u64>,
    into: Arc<Mutex<Received>>,
) -> bool {
    follow_for(base, run_id, last, into, usize::MAX).await
}

/// [`follow`], disconnecting after `journal_events` events with an `id` (false then, unless
/// the `end` came first).
pub async fn follow_for(
    base: &str,
    run_id: &str,
    last: Option<u64>,
    into: Arc<Mutex<Received>>,
    journal_events: usize,
) -> bool {
    let mut seen = 0;
    let mut req = reqwest::Client::new()
        .get(format!("{base}/v1/runs/{run_id}/events"))
        .bearer_auth(KEY)
        .header("accept", "text/event-stream");
    if let Some(l) = last {
        req = req.header("last-event-id", l.to_string());
    }
    let Ok(res) = req.send().await else {
        return false;
    };
    assert_eq!(res.status(), 200, "the event stream of {run_id}");
    let mut stream = res.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return false };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..i + 2).collect();
            let frame = String::from_utf8(frame).unwrap();
            let (mut id, mut event, mut data) = (None, None, String::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<u64>().unwrap());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            let Some(event) = event else { continue }; // a keep-alive comment
            let mut r = into.lock().unwrap();
            r.events.push(event.clone());
            if event == "end" {
                r.end = Some(serde_json::from_str(&data).unwrap());
                return true;
            }
            if let Some(id) = id {
                r.ids.push(id);
                seen += 1;
                if seen >= journal_events {
                    return false;
                }
            }
        }
    }
    false
}

/// Poll until `run_id` on `serve` is in one of `statuses` (the run as the API shows it).
pub async fn wait_status(serve: &Serve, run_id: &str, statuses: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (s, run) = serve
            .call(reqwest::Method::GET, &format!("/v1/runs/{run_id}"), None)
            .await;
        assert_eq!(s, 200, "{run}");
        if statuses.iter().any(|st| run["status"] == *st) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} never reached {statuses:?}: {run}\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
