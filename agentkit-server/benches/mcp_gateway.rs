//! `tools/call` through the `/mcp` gateway against the same upstream MCP server called
//! directly, in one run. Nothing is asserted by time: it prints a table.
//!
//! The upstream is an in-process MCP server (`echo`, an `McpServerBuilder` server attached
//! with `ServerConfig::in_process`: no socket). Cases, each with N concurrent clients making
//! calls one after another:
//!
//! - `direct`: `ConnectionManager::call_tool` on the upstream: the client path the gateway
//!   itself uses, without HTTP and without governance.
//! - `gateway (rmcp)`: rmcp clients calling `up__echo` on the agentkit server's `/mcp` on
//!   the legacy lifecycle (one `initialize` per client, then calls on the session); rmcp's
//!   HTTP client opens a new TCP connection per POST and gets SSE answers.
//! - `gateway (keep-alive)`: one pooled HTTP/1.1 client (hyper's, connections kept open) sending
//!   stateless 2026-07-28 `tools/call` POSTs.
//!
//! The gateway rows use a workspace API key, under a gateway policy with tool scopes,
//! argument globs and a chain rule, redaction and the hash-chained audit log on (one audit
//! entry per call), in the store named in the row (`memory` or `sqlite`). The latency of
//! each call is measured at the client; "added" is the gateway's percentile minus direct's.
//! "CPU per call" is the whole process's CPU time (clients, gateway and upstream, from
//! `/proc/self/stat`) while the case ran, divided by its calls.
//!
//! Sizes: `AGENTKIT_BENCH_CALLS` (per case, default 20000), `AGENTKIT_BENCH_CLIENTS`
//! (comma-separated, default `16,64`), `AGENTKIT_BENCH_STORES` (default `memory,sqlite`),
//! `AGENTKIT_BENCH_CASES` (default `direct,rmcp,keepalive`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

/// The allocator the `agentkit` binary uses (feature `mimalloc`, on by default): with glibc's
/// malloc a third of this benchmark's CPU went to malloc and its arena locks.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::policy::Policy;
use agentkit_core::{Config, RunContext};
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ContentBlock, JsonObject,
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

/// The argument of every call (redaction finds the token).
const TEXT: &str = "hello; my token is sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c";

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

fn args() -> JsonObject {
    json!({ "text": TEXT }).as_object().unwrap().clone()
}

/// The upstream: one in-process MCP server with `echo`.
fn upstream() -> ServerConfig {
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
    ServerConfig::in_process("up", server)
}

/// The gateway over `manager`: its `/mcp` URL and an invoker key of acme/prod.
async fn gateway(store: Arc<dyn Store>, manager: ConnectionManager) -> (String, String) {
    let config = Config::from_yaml_str(POLICY, None).unwrap();
    let policy = Policy::compile("gateway", &config.policies["gateway"]).unwrap();
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .mcp_servers(manager)
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

struct Measured {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time of the whole bench process (clients, gateway, upstream) per call, while the
    /// case ran; `None` where `/proc/self/stat` cannot be read.
    cpu: Option<Duration>,
}

/// CPU time used by this process so far (all threads, user and system), from
/// `/proc/self/stat` (Linux; in clock ticks of 10 ms, so read over a run of seconds).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime and
    // stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// `total` calls spread over `n` clients, each making its calls one after another with
/// `call(client index)`; 20 warm-up calls per client first.
async fn measure<F, Fut>(n: usize, total: usize, call: F) -> Measured
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    for i in 0..n {
        for _ in 0..20 {
            call(i).await;
        }
    }
    let per = total / n;
    let cpu_before = process_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    call(i).await;
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
    let cpu = process_cpu().zip(cpu_before).map(|(after, before)| {
        after.saturating_sub(before) / u32::try_from(all.len()).unwrap_or(u32::MAX)
    });
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Measured {
        per_sec: all.len() as f64 / took.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        cpu,
    }
}

/// `direct`: the connection manager's call, as the gateway makes it.
async fn direct(manager: &ConnectionManager, n: usize, total: usize) -> Measured {
    let manager = manager.clone();
    measure(n, total, move |_| {
        let manager = manager.clone();
        async move {
            let r = manager
                .call_tool("up", "echo", args(), &RunContext::new())
                .await
                .unwrap();
            assert_eq!(r.is_error, Some(false), "{r:?}");
        }
    })
    .await
}

type Client = RunningService<RoleClient, ClientConfig>;

/// `gateway (rmcp)`: one rmcp client (legacy session) per concurrent caller.
async fn rmcp_clients(url: &str, key: &str, n: usize, total: usize) -> Measured {
    let mut clients = Vec::new();
    for _ in 0..n {
        let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .auth_header(key.to_owned());
        let c: Client = ClientConfig::default()
            .serve(StreamableHttpClientTransport::from_config(config))
            .await
            .unwrap();
        clients.push(Arc::new(c));
    }
    let shared = Arc::new(clients.clone());
    let m = measure(n, total, move |i| {
        let c = Arc::clone(&shared[i]);
        async move {
            let params = CallToolRequestParams::new("up__echo").with_arguments(args());
            let r = c.call_tool(params).await.unwrap();
            assert_eq!(r.is_error, Some(false), "{r:?}");
        }
    })
    .await;
    for c in clients {
        if let Ok(c) = Arc::try_unwrap(c) {
            let _ = c.cancel().await;
        }
    }
    m
}

/// `gateway (keep-alive)`: stateless 2026-07-28 POSTs on one pooled HTTP/1.1 client
/// (hyper's, with connections kept open: the load generator shares the 2 cores with the
/// gateway, so it is kept lean).
async fn keepalive(url: &str, key: &str, n: usize, total: usize) -> Measured {
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Client<HttpConnector, axum::body::Body> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(n)
        .build(connector);
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "up__echo", "arguments": {"text": TEXT}, "_meta": meta}})
    .to_string();
    // 'static, so each request borrows it instead of copying it.
    let body: &'static str = Box::leak(body.into_boxed_str());
    let uri: http::Uri = url.parse().unwrap();
    let auth = http::HeaderValue::try_from(format!("Bearer {key}")).unwrap();
    measure(n, total, move |_| {
        let req = http::Request::post(uri.clone())
            .header("authorization", auth.clone())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "up__echo")
            .body(axum::body::Body::from(body))
            .unwrap();
        let http = http.clone();
        async move {
            let res = http.request(req).await.unwrap();
            let status = res.status();
            let bytes = axum::body::to_bytes(axum::body::Body::new(res.into_body()), 1 << 20)
                .await
                .unwrap();
            let text = std::str::from_utf8(&bytes).unwrap();
            assert_eq!(status, 200, "{text}");
            // A JSON answer, or the `data:` line of an SSE answer.
            let json = text
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .unwrap_or(text);
            let v: Value = serde_json::from_str(json.trim()).unwrap();
            assert_eq!(v["result"]["isError"], false, "{text}");
        }
    })
    .await
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn added(a: Duration, b: Duration) -> String {
    let d = a.as_secs_f64() - b.as_secs_f64();
    format!("{:+.0} µs", d * 1e6)
}

fn row(case: &str, store: &str, n: usize, m: &Measured, base: Option<&Measured>) {
    let (a50, a99) = base.map_or((String::new(), String::new()), |b| {
        (added(m.p50, b.p50), added(m.p99, b.p99))
    });
    let cpu = m.cpu.map_or_else(String::new, us);
    println!(
        "| {case} | {store} | {n} | {:.0} | {} | {} | {a50} | {a99} | {cpu} |",
        m.per_sec,
        us(m.p50),
        us(m.p99)
    );
}

#[tokio::main]
async fn main() {
    let total = calls();
    let clients: Vec<usize> = env_list("AGENTKIT_BENCH_CLIENTS", "16,64")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let stores = env_list("AGENTKIT_BENCH_STORES", "memory,sqlite");
    let cases = env_list("AGENTKIT_BENCH_CASES", "direct,rmcp,keepalive");
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
                SqliteStore::open(dir.path().join(format!("bench-{}.db", std::process::id())))
                    .await
                    .unwrap(),
            ),
            _ => Arc::new(MemoryStore::new()),
        };
        let manager = ConnectionManager::new([upstream()]);
        let (url, key) = gateway(store, manager.clone()).await;
        for &n in &clients {
            let base = direct(&manager, n, total).await;
            if cases.iter().any(|c| c == "direct") {
                row("direct", "–", n, &base, None);
            }
            if cases.iter().any(|c| c == "rmcp") {
                let m = rmcp_clients(&url, &key, n, total).await;
                row("gateway (rmcp)", store_name, n, &m, Some(&base));
            }
            if cases.iter().any(|c| c == "keepalive") {
                let m = keepalive(&url, &key, n, total).await;
                row("gateway (keep-alive)", store_name, n, &m, Some(&base));
            }
        }
    }
}
