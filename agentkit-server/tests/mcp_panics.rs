//! `/mcp` federating an upstream MCP server (an agentkit `McpServer` over streamable HTTP on
//! 127.0.0.1) whose tool panics: the upstream answers at once with its JSON-RPC internal
//! error, so the federated call is a tool error naming the panic within moments (not after
//! the upstream's 60 s request timeout), on a stateless 2026-07-28 POST and on a legacy
//! session alike, and the next call works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_mcp::McpServerBuilder;
use agentkit_mcp::rmcp::model::CallToolRequestParams;
use agentkit_runtime::{MemoryStore, Store};
use agentkit_server::gatewayops::GatewayConfig;
use common::upstream::{Upstream, with_echo};
use serde_json::{Value, json};

const ADMIN: &str = "mcp-panics-admin";

/// Answered well before the upstream's request timeout (60 s) would have fired.
const PROMPT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_upstream_tool_is_a_tool_error_at_once() {
    let up = with_echo(McpServerBuilder::new("fragile", "1.0.0"))
        .tool_fn(
            "boom",
            "Panics",
            json!({"type": "object"}),
            |args, _| async move {
                let n = args.get("n").and_then(Value::as_u64).unwrap_or(0);
                panic!("index {n} out of range");
            },
        )
        .build();
    let up = Upstream::serve(up).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let servers = [("up", up.url.as_str())];
    let served = inproc::serve_gateway(store, ADMIN, &servers, GatewayConfig::new()).await;
    let base = &served.base;

    // A stateless POST (answered directly).
    let started = Instant::now();
    let (s, body) = inproc::mcp_post(base, ADMIN, "up__boom", json!({"n": 1}), &[]).await;
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["result"]["isError"], true, "{body}");
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("the handler of tool `boom` panicked: index 1 out of range"),
        "{body}"
    );
    let (s, body) = inproc::mcp_post(base, ADMIN, "up__echo", json!({"text": "on"}), &[]).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "on", "{body}");

    // A legacy session (through rmcp).
    let c = inproc::mcp_session(base, ADMIN, &[]).await;
    let call = |tool: &str, args: Value| {
        CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().unwrap().clone())
    };
    let started = Instant::now();
    let r = c
        .call_tool(call("up__boom", json!({"n": 2})))
        .await
        .unwrap();
    assert!(started.elapsed() < PROMPT, "{:?}", started.elapsed());
    assert_eq!(r.is_error, Some(true), "{r:?}");
    let text = &r.content[0].as_text().unwrap().text;
    assert!(
        text.contains("the handler of tool `boom` panicked: index 2 out of range"),
        "{text}"
    );
    let r = c
        .call_tool(call("up__echo", json!({"text": "still"})))
        .await
        .unwrap();
    assert_eq!(r.content[0].as_text().unwrap().text, "still");
    c.cancel().await.unwrap();
}
