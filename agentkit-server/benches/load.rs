//! agentkit-server under load, with the baseline in the same run. Nothing is asserted by time:
//! it prints tables.
//!
//! **Runs.** 10,000 concurrent runs of one agent whose scripted model takes 100 ms per call
//! and calls one `FnTool` before it answers (two model calls per run):
//!
//! - `direct`: the same 10,000 `AgentLlm::generate` calls, spawned at once, no runtime (the
//!   baseline: bounded by model latency only);
//! - `http+memory`, `http+sqlite`: started over real HTTP (`POST /v1/agents/worker/runs`,
//!   answered 202, through one keep-alive client with at most 256 requests in flight: 10,000
//!   open sockets on both ends would pass this machine's 20,000-descriptor limit), all of them
//!   executing at once, each awaited with `Platform::wait` (what `{"wait": true}` does).
//!
//! **SSE fan-out.** One run of a slow agent (30 tool rounds at 100 ms per model call) streamed
//! to 1 and to 1,000 concurrent `GET /v1/runs/{id}/events` clients: time until every client
//! got `end`, events per client (they must be identical), CPU and RSS.
//!
//! `in flight` is the most runs started and not finished yet at once. Peak RSS follows it
//! (≈ 40 KiB a run with SQLite): a server that starts runs faster than they finish holds more
//! of them at once, so compare RSS between runs with similar counts, or set
//! `AGENTKIT_LOAD_LATENCY_MS` high enough (≈ 4,000) that all of them are in flight at once.
//!
//! Each case runs in a child process of its own (this binary, re-executed with
//! `AGENTKIT_LOAD_CASE`) so its peak RSS (`VmHWM`) and CPU time are its own. Sizes can be
//! changed with `AGENTKIT_LOAD_RUNS`, `AGENTKIT_LOAD_LATENCY_MS` and
//! `AGENTKIT_LOAD_SUBSCRIBERS`; `AGENTKIT_LOAD_ONLY=<case>` runs one case.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlmExt, CompletionRequest, CompletionResponse, Content, FnTool,
    LlmProvider, Message, RequestParams, Role, RunContext, ScriptedProvider, StopReason, Usage,
};
use agentkit_runtime::{MemoryStore, RunStatus, SqliteStore, Store};
use agentkit_server::Server;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// The allocator the `agentkit` binary uses (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CASE_ENV: &str = "AGENTKIT_LOAD_CASE";
const KEY: &str = "load-key";
/// Requests in flight at once when starting runs over HTTP (see the module docs).
const HTTP_IN_FLIGHT: usize = 256;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runs() -> u64 {
    env_num("AGENTKIT_LOAD_RUNS", 10_000)
}

fn latency() -> Duration {
    Duration::from_millis(env_num("AGENTKIT_LOAD_LATENCY_MS", 100))
}

fn subscribers() -> u64 {
    env_num("AGENTKIT_LOAD_SUBSCRIBERS", 1_000)
}

/// Peak resident set size of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// CPU time (user + system) this process used so far, in seconds (`/proc` counts in
/// USER_HZ = 100 ticks a second on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

#[derive(Deserialize, JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

fn add_tool() -> FnTool {
    FnTool::new("add", "Add two integers", |x: Add| async move {
        Ok::<_, std::convert::Infallible>(x.a + x.b)
    })
}

/// A scripted model that calls `add` until it has seen `rounds` tool results, then answers;
/// stateless, so one instance serves any number of concurrent runs.
fn script(rounds: usize) -> ScriptedProvider {
    ScriptedProvider::from_fn(move |req: &CompletionRequest| {
        let results = req.messages.iter().filter(|m| m.role == Role::Tool).count();
        let (message, stop) = if results < rounds {
            (
                Message::new(
                    Role::Assistant,
                    vec![Content::tool_call(
                        format!("call_{results}"),
                        "add",
                        json!({"a": 2, "b": results}),
                    )],
                ),
                StopReason::ToolUse,
            )
        } else {
            (Message::assistant("done"), StopReason::EndTurn)
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(20, 5),
            stop,
            "scripted-model",
        ))
    })
    .without_recording()
}

/// A provider that takes `latency` per call (a remote model's), then answers from `inner`.
struct Slow {
    inner: ScriptedProvider,
    latency: Duration,
    calls: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl LlmProvider for Slow {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn default_model(&self) -> Option<&str> {
        self.inner.default_model()
    }

    async fn complete(
        &self,
        request: CompletionRequest,
    ) -> agentkit_core::Result<CompletionResponse> {
        tokio::time::sleep(self.latency).await;
        let r = self.inner.complete(request).await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        r
    }
}

fn agent(rounds: usize, calls: Arc<AtomicU64>) -> AgentLlm {
    let model = Slow {
        inner: script(rounds),
        latency: latency(),
        calls,
    };
    AgentLlm::new(
        Agent::new("worker", "Add with the tool, then answer.").with_tool(add_tool()),
        model,
    )
    // No conversation memory: a server run without a thread stands alone (it neither reads
    // nor appends a history), so the direct baseline does the same work. (With history on
    // and no thread, the 10,000 direct calls would share one default conversation: each
    // reading the others' messages, some answering without calling the tool.)
    .with_defaults(
        RequestParams::new()
            .with_max_iterations(rounds as u32 + 1)
            .with_use_history(false),
    )
}

struct Running {
    base: String,
    server: Server,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(store_kind: &str, agent: AgentLlm) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = match store_kind {
        "sqlite" => Arc::new(SqliteStore::open(dir.path().join("load.db")).await.unwrap()),
        _ => Arc::new(MemoryStore::new()),
    };
    let server = Server::builder(store)
        .admin_key(KEY)
        .agent_llm("worker", Arc::new(agent), "Adds, then answers")
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    tokio::spawn(async move {
        s.serve(listener, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Running {
        base,
        server,
        _dir: dir,
        _stop: tx,
    }
}

/// Print the model calls and finished runs every second (on stderr), to see where time goes.
fn progress(
    label: &'static str,
    calls: Arc<AtomicU64>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprintln!(
                "  [{label} {:>5.1}s] model calls {:>6}, runs finished {:>6}, cpu {:.1}s",
                t0.elapsed().as_secs_f64(),
                calls.load(Ordering::Relaxed),
                done.load(Ordering::Relaxed),
                cpu_seconds()
            );
        }
    })
}

/// The baseline: every agent call spawned at once, no runtime.
async fn case_direct() -> Value {
    let n = runs();
    let calls = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let agent = Arc::new(agent(1, Arc::clone(&calls)));
    let p = progress("direct", Arc::clone(&calls), Arc::clone(&done));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let agent = Arc::clone(&agent);
        let done = Arc::clone(&done);
        set.spawn(async move {
            let text = agent.generate_str("go", &RunContext::new()).await.unwrap();
            assert_eq!(text, "done");
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let wall = t0.elapsed().as_secs_f64();
    p.abort();
    json!({"wall_s": wall, "started_s": 0.0, "runs": n, "peak_in_flight": n,
           "model_calls": calls.load(Ordering::Relaxed),
           "cpu_s": cpu_seconds() - cpu0, "peak_rss_mib": peak_rss_mib()})
}

/// Runs started over HTTP (202), all executing at once, each awaited with `Platform::wait`.
async fn case_http(store_kind: &'static str) -> Value {
    let n = runs();
    let calls = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let running = serve(store_kind, agent(1, Arc::clone(&calls))).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(HTTP_IN_FLIGHT)
        .build()
        .unwrap();
    let url = format!("{}/v1/agents/worker/runs", running.base);
    let gate = Arc::new(tokio::sync::Semaphore::new(HTTP_IN_FLIGHT));
    let started = Arc::new(AtomicU64::new(0));
    let last_start = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let peak_in_flight = Arc::new(AtomicU64::new(0));
    let p = progress(store_kind, Arc::clone(&calls), Arc::clone(&done));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url, gate) = (client.clone(), url.clone(), Arc::clone(&gate));
        let platform = Arc::clone(running.server.platform());
        let (done, started, last_start, peak_in_flight) = (
            Arc::clone(&done),
            Arc::clone(&started),
            Arc::clone(&last_start),
            Arc::clone(&peak_in_flight),
        );
        set.spawn(async move {
            let id = {
                let _permit = gate.acquire().await.unwrap();
                let res = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .json(&json!({"message": "go"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202);
                let body: Value = res.json().await.unwrap();
                body["run_id"].as_str().unwrap().to_owned()
            };
            let now_started = started.fetch_add(1, Ordering::Relaxed) + 1;
            if now_started == n {
                *last_start.lock().unwrap() = t0.elapsed();
            }
            let in_flight = now_started.saturating_sub(done.load(Ordering::Relaxed));
            peak_in_flight.fetch_max(in_flight, Ordering::Relaxed);
            let run = platform.wait(&id).await.unwrap();
            assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
            assert_eq!(run.output.unwrap()["text"], "done");
            done.fetch_add(1, Ordering::Relaxed);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let wall = t0.elapsed().as_secs_f64();
    p.abort();
    let started_s = last_start.lock().unwrap().as_secs_f64();
    json!({"wall_s": wall, "started_s": started_s, "runs": n,
           "peak_in_flight": peak_in_flight.load(Ordering::Relaxed),
           "model_calls": calls.load(Ordering::Relaxed),
           "cpu_s": cpu_seconds() - cpu0, "peak_rss_mib": peak_rss_mib()})
}

/// One subscriber's stream: the `(event, id)` of every SSE event until `end`.
async fn subscribe(
    client: reqwest::Client,
    url: String,
    connected: Arc<std::sync::Mutex<Instant>>,
) -> (Vec<(String, String)>, Instant) {
    let res = client
        .get(&url)
        .bearer_auth(KEY)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    {
        let mut c = connected.lock().unwrap();
        *c = (*c).max(Instant::now());
    }
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut seen = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut event, mut id) = (String::new(), String::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                }
            }
            if event.is_empty() {
                continue; // a keep-alive comment
            }
            let last = event == "end";
            seen.push((event, id));
            if last {
                return (seen, Instant::now());
            }
        }
    }
    panic!("the stream closed before `end`: {seen:?}");
}

/// One run of a slow agent streamed to `n` subscribers at once.
async fn case_sse(store_kind: &'static str, n: u64) -> Value {
    const ROUNDS: usize = 30;
    let calls = Arc::new(AtomicU64::new(0));
    let running = serve(store_kind, agent(ROUNDS, Arc::clone(&calls))).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let res = client
        .post(format!("{}/v1/agents/worker/runs", running.base))
        .bearer_auth(KEY)
        .json(&json!({"message": "go"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let run: Value = res.json().await.unwrap();
    let id = run["run_id"].as_str().unwrap().to_owned();
    let platform = Arc::clone(running.server.platform());
    let finished = {
        let id = id.clone();
        tokio::spawn(async move {
            let run = platform.wait(&id).await.unwrap();
            assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
            assert_eq!(run.output.unwrap()["text"], "done");
            Instant::now()
        })
    };
    let url = format!("{}/v1/runs/{id}/events", running.base);
    let connected = Arc::new(std::sync::Mutex::new(t0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(subscribe(
            client.clone(),
            url.clone(),
            Arc::clone(&connected),
        ));
    }
    let mut streams = Vec::new();
    while let Some(r) = set.join_next().await {
        streams.push(r.unwrap());
    }
    let run_done = finished.await.unwrap();
    let all_end = streams.iter().map(|(_, at)| *at).max().unwrap();
    let first = &streams[0].0;
    let identical = streams.iter().all(|(s, _)| s == first);
    let journal = |s: &[(String, String)]| -> Vec<String> {
        s.iter()
            .filter(|(_, id)| !id.is_empty())
            .map(|(_, id)| id.clone())
            .collect()
    };
    let journal_identical = streams.iter().all(|(s, _)| journal(s) == journal(first));
    let counts: Vec<usize> = streams.iter().map(|(s, _)| s.len()).collect();
    json!({
        "subscribers": n,
        "connected_s": (*connected.lock().unwrap() - t0).as_secs_f64(),
        "run_s": (run_done - t0).as_secs_f64(),
        "all_end_s": (all_end - t0).as_secs_f64(),
        "lag_after_run_ms": all_end.saturating_duration_since(run_done).as_secs_f64() * 1000.0,
        "events_min": counts.iter().min(), "events_max": counts.iter().max(),
        "journal_events": journal(first).len(),
        "identical": identical, "journal_identical": journal_identical,
        "cpu_s": cpu_seconds() - cpu0, "peak_rss_mib": peak_rss_mib(),
    })
}

fn child(case: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        match case {
            "direct" => case_direct().await,
            "http+memory" => case_http("memory").await,
            "http+sqlite" => case_http("sqlite").await,
            "sse1+sqlite" => case_sse("sqlite", 1).await,
            "sseN+sqlite" => case_sse("sqlite", subscribers()).await,
            "sseN+memory" => case_sse("memory", subscribers()).await,
            other => panic!("unknown case {other}"),
        }
    });
    println!("RESULT {result}");
}

fn run_case(case: &str) -> Option<Value> {
    eprintln!("running {case} ...");
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CASE_ENV, case)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    match line {
        Some(l) if out.status.success() => serde_json::from_str(l).ok(),
        _ => {
            eprintln!("case {case} failed ({}): {stdout}", out.status);
            None
        }
    }
}

fn main() {
    if let Ok(case) = std::env::var(CASE_ENV) {
        child(&case);
        return;
    }
    let only = std::env::var("AGENTKIT_LOAD_ONLY").ok();
    let wanted = |c: &str| only.as_deref().is_none_or(|o| o == c);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);

    println!(
        "\n{} concurrent runs, 2 model calls each at {} ms, one tool call",
        runs(),
        latency().as_millis()
    );
    println!(
        "{:<13} {:>9} {:>11} {:>9} {:>8} {:>13} {:>10}",
        "case", "wall s", "started s", "runs/s", "cpu s", "peak RSS MiB", "in flight"
    );
    for case in ["direct", "http+memory", "http+sqlite"] {
        if !wanted(case) {
            continue;
        }
        if let Some(v) = run_case(case) {
            println!(
                "{:<13} {:>9.2} {:>11.2} {:>9.0} {:>8.1} {:>13.0} {:>10}",
                case,
                f(&v, "wall_s"),
                f(&v, "started_s"),
                f(&v, "runs") / f(&v, "wall_s"),
                f(&v, "cpu_s"),
                f(&v, "peak_rss_mib"),
                v["peak_in_flight"],
            );
        }
    }

    println!(
        "\none run (30 tool rounds, {} ms per model call) streamed over SSE",
        latency().as_millis()
    );
    println!(
        "{:<13} {:>6} {:>11} {:>7} {:>10} {:>7} {:>7} {:>11} {:>7} {:>13}",
        "case",
        "subs",
        "connected s",
        "run s",
        "all end s",
        "lag ms",
        "events",
        "same events",
        "cpu s",
        "peak RSS MiB"
    );
    for case in ["sse1+sqlite", "sseN+sqlite", "sseN+memory"] {
        if !wanted(case) {
            continue;
        }
        if let Some(v) = run_case(case) {
            let events = if v["events_min"] == v["events_max"] {
                v["events_min"].to_string()
            } else {
                format!("{}-{}", v["events_min"], v["events_max"])
            };
            // The journal events (those with ids) must be the same for every subscriber;
            // `status` events may sit elsewhere (a subscriber sees a status when it polls),
            // and a subscriber that connects after the run finished sees no `status` at all.
            println!(
                "{:<13} {:>6} {:>11.2} {:>7.2} {:>10.2} {:>7.0} {:>7} {:>11} {:>7.1} {:>13.0}",
                case,
                v["subscribers"],
                f(&v, "connected_s"),
                f(&v, "run_s"),
                f(&v, "all_end_s"),
                f(&v, "lag_after_run_ms"),
                events,
                v["journal_identical"],
                f(&v, "cpu_s"),
                f(&v, "peak_rss_mib"),
            );
        }
    }
}
