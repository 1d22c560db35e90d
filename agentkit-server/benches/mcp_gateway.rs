//! `tools/call` through the `/mcp` gateway against the same upstream MCP server called
//! directly, in one run. Nothing is asserted by time: it prints a table.
//!
//! The upstream is an in-process rmcp server (`echo`) on 127.0.0.1 over streamable HTTP.
//! `direct` is N rmcp clients calling it; `gateway` is N rmcp clients calling `up__echo`
//! on the agentkit server's `/mcp` with a workspace API key, under a gateway policy with
//! tool scopes, argument globs and a chain rule, redaction and the hash-chained audit log
//! on (one audit entry per call), in the store named in the row (`memory` or `sqlite`). Both
//! use the legacy lifecycle (one `initialize` per client, then calls on the session).
//!
//! Each client makes its calls one after another; the latency of each call is measured at
//! the client. "added" is the gateway's percentile minus direct's.
//!
//! Sizes: `AGENTKIT_BENCH_CALLS` (per case, default 20000), `AGENTKIT_BENCH_CLIENTS`
//! (comma-separated, default `16,64`), `AGENTKIT_BENCH_STORES` (default `memory,sqlite`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The allocator the `agentkit` binary uses (feature `mimalloc`, on by default): with glibc's
/// malloc a third of this benchmark's CPU went to malloc and its arena locks.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::Config;
use agentkit_core::policy::Policy;
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ContentBlock,
};
use agentkit_mcp::rmcp::service::RunningService;
use agentkit_mcp::rmcp::transport::StreamableHttpClientTransport;
use agentkit_mcp::rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use agentkit_mcp::rmcp::{RoleClient, ServiceExt};
use agentkit_mcp::{ConnectionManager, ServerConfig};
use agentkit_runtime::{MemoryStore, SqliteStore, Store};
use agentkit_server::Server;
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::tenancy::WorkspaceId;
use serde_json::{Value, json};

const ADMIN: &str = "bench-admin-key";

const POLICY: &str = r#"
policies:
  gateway:
    tools:
      allow: ["up__*"]
      deny: ["up__delete_*"]
    arguments:
      "up__echo":
        text: {allow: ["*"], deny: ["*BEGIN PRIVATE KEY*"]}
    chains:
      - pattern: ["up__read_*", "up__send_*"]
        action: block
        reason: no posting after reading
"#;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn calls() -> usize {
    std::env::var("AGENTKIT_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

async fn upstream() -> String {
    let server = agentkit_mcp::McpServerBuilder::new("up", "1.0.0")
        .tool_fn(
            "echo",
            "Echoes text",
            json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            |args, _| async move {
                let t = args.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    t.to_owned(),
                )]))
            },
        )
        .build();
    let svc = server.into_http_service(agentkit_mcp::HttpOptions::new());
    let app = axum::Router::new().nest_service("/mcp", svc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/mcp")
}

async fn gateway(store: Arc<dyn Store>, upstream: &str) -> (String, String) {
    let config = Config::from_yaml_str(POLICY, None).unwrap();
    let policy = Policy::compile("gateway", &config.policies["gateway"]).unwrap();
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .mcp_servers(ConnectionManager::new([ServerConfig::http("up", upstream)]))
        .gateway(
            GatewayConfig::new()
                .with_policy(policy)
                .with_server_workspaces("up", [WorkspaceId::new("acme", "prod")]),
        )
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        server
            .serve(listener, std::future::pending())
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let r = post(
        "/v1/workspaces",
        json!({"org": "acme", "workspace": "prod"}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = post(
        "/v1/keys",
        json!({"name": "bench", "role": "invoker", "workspace": "acme/prod"}),
    )
    .await
    .unwrap();
    let key: Value = r.json().await.unwrap();
    (
        format!("{base}/mcp"),
        key["key"].as_str().unwrap().to_owned(),
    )
}

type Client = RunningService<RoleClient, ClientConfig>;

async fn client(url: &str, key: Option<&str>) -> Client {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(k) = key {
        config = config.auth_header(k.to_owned());
    }
    ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap()
}

struct Measured {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// `total` calls of `tool` spread over `n` clients, each one call at a time.
async fn measure(url: &str, key: Option<&str>, tool: &str, n: usize, total: usize) -> Measured {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(Arc::new(client(url, key).await));
    }
    let args = json!({"text": "hello; my token is sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"})
        .as_object()
        .unwrap()
        .clone();
    let tool = tool.to_owned();
    let call = move |c: Arc<Client>| {
        let params = CallToolRequestParams::new(tool.clone()).with_arguments(args.clone());
        async move {
            let r = c.call_tool(params).await.unwrap();
            assert_eq!(r.is_error, Some(false), "{r:?}");
        }
    };
    // Warm up: connections, caches.
    for c in &clients {
        for _ in 0..20 {
            call(Arc::clone(c)).await;
        }
    }
    let per = total / n;
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let c = Arc::clone(c);
            let call = call.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    call(Arc::clone(&c)).await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(per * n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            let _ = c.cancel().await;
        }
    }
    Measured {
        per_sec: all.len() as f64 / took.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn added(a: Duration, b: Duration) -> String {
    let d = a.as_secs_f64() - b.as_secs_f64();
    format!("{:+.0} µs", d * 1e6)
}

#[tokio::main]
async fn main() {
    let total = calls();
    let clients: Vec<usize> = env_list("AGENTKIT_BENCH_CLIENTS", "16,64")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let stores = env_list("AGENTKIT_BENCH_STORES", "memory,sqlite");
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    println!(
        "tools/call, {total} calls per case, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| case | store | clients | calls/s | p50 | p99 | added p50 | added p99 |\n|---|---|---|---|---|---|---|---|"
    );
    for store_name in &stores {
        let store: Arc<dyn Store> = match store_name.as_str() {
            "sqlite" => Arc::new(
                SqliteStore::open(dir.path().join("bench.db"))
                    .await
                    .unwrap(),
            ),
            _ => Arc::new(MemoryStore::new()),
        };
        let (url, key) = gateway(store, &up).await;
        for &n in &clients {
            let direct = measure(&up, None, "echo", n, total).await;
            let gw = measure(&url, Some(&key), "up__echo", n, total).await;
            println!(
                "| direct | – | {n} | {:.0} | {} | {} | | |",
                direct.per_sec,
                us(direct.p50),
                us(direct.p99)
            );
            println!(
                "| gateway | {store_name} | {n} | {:.0} | {} | {} | {} | {} |",
                gw.per_sec,
                us(gw.p50),
                us(gw.p99),
                added(gw.p50, direct.p50),
                added(gw.p99, direct.p99)
            );
        }
    }
}
