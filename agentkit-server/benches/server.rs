//! agentkit-server: what one run costs through the server, split by layer, with the baseline in
//! the same run.
//!
//! One echo agent (a scripted model that answers at once), four ways:
//!
//! - `agent_direct`: `AgentLlm::generate` in process with a `RunContext`, no runtime (the
//!   baseline);
//! - `runtime_run_sync_sqlite`: `Runtime::run_sync` on the server's runtime (a durable run on
//!   SQLite, no HTTP);
//! - `platform_start_wait_sqlite`: `Platform::start_and_wait`, what the HTTP handler does
//!   (version resolution, the thread and queue checks), no HTTP;
//! - `http_wait_sqlite`: `POST /v1/agents/echo/runs` with `{"wait": true}` over real HTTP on
//!   127.0.0.1 (one keep-alive reqwest client).
//!
//! `http − platform` is the HTTP layer's cost, `platform − runtime` the platform's, and
//! `runtime − direct` the durable run's (storing the run, claiming it, the final update).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Agent, AgentLlm, AugmentedLlmExt, RunContext, ScriptedProvider};
use agentkit_runtime::{SqliteStore, StartOptions, Store};
use agentkit_server::{Server, StartRun};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn echo() -> AgentLlm {
    AgentLlm::new(
        Agent::new("echo", "Repeat."),
        ScriptedProvider::echo().without_recording(),
    )
}

struct Running {
    base: String,
    server: Server,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A server on SQLite in a temporary directory with the echo agent, serving on 127.0.0.1.
async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("bench.db"))
            .await
            .unwrap(),
    );
    let server = Server::builder(store)
        .admin_key("bench-key")
        .agent_llm("echo", Arc::new(echo()), "Repeats what it was told")
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

fn run_overhead(c: &mut Criterion) {
    let rt = rt();
    let running = rt.block_on(start());
    let client = reqwest::Client::new();
    let url = format!("{}/v1/agents/echo/runs", running.base);
    let platform = Arc::clone(running.server.platform());
    let agent = echo();

    let mut g = c.benchmark_group("server_run");
    g.bench_function("agent_direct", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                agent
                    .generate_str("hello", &RunContext::new())
                    .await
                    .unwrap(),
            )
        });
    });
    g.bench_function("runtime_run_sync_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            let run = platform
                .runtime()
                .run_sync(
                    "echo",
                    json!({"message": "hello"}),
                    StartOptions::new().with_version(1),
                )
                .await
                .unwrap();
            assert_eq!(run.output.as_ref().unwrap()["text"], "hello");
            black_box(run.output)
        });
    });
    g.bench_function("platform_start_wait_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            let done = platform
                .start_and_wait(StartRun::new("echo", "hello"))
                .await
                .unwrap();
            assert_eq!(done.output.as_ref().unwrap()["text"], "hello");
            black_box(done.output)
        });
    });
    g.bench_function("http_wait_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            let res = client
                .post(&url)
                .bearer_auth("bench-key")
                .json(&json!({"message": "hello", "wait": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["output"]["text"], "hello");
            black_box(body)
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = run_overhead
}
criterion_main!(benches);
