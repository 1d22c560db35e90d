//! `/mcp` federating an MCP server that runs in the server's own process
//! (`ServerConfig::in_process`): its tools are listed and called as `server__tool` under the
//! gateway policy, a plain 2026-07-28 `tools/call` is answered with JSON (no SSE stream) and
//! a progress notification switches the answer to SSE, and a stopped upstream is a tool
//! error naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::Policy;
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ContentBlock,
};
use agentkit_mcp::rmcp::transport::StreamableHttpClientTransport;
use agentkit_mcp::rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use agentkit_mcp::rmcp::ServiceExt;
use agentkit_mcp::{ConnectionManager, InProcessServer, McpServerBuilder, ServerConfig};
use agentkit_runtime::{MemoryStore, Store};
use agentkit_server::Server;
use agentkit_server::gatewayops::GatewayConfig;
use serde_json::{Value, json};

const ADMIN: &str = "test-key";

/// `echo`, `delete_all` (denied by the gateway policy) and `count` (reports progress).
fn upstream() -> InProcessServer {
    McpServerBuilder::new("up", "1.0.0")
        .tool_fn(
            "echo",
            "Echoes text",
            json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            |args, _| async move {
                let t = args.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(CallToolResult::success(vec![ContentBlock::text(t.to_owned())]))
            },
        )
        .tool_fn("delete_all", "Deletes everything", json!({"type": "object"}), |_, _| async move {
            Ok(CallToolResult::success(vec![ContentBlock::text("deleted")]))
        })
        .tool_fn("count", "Counts to two", json!({"type": "object"}), |_, call| async move {
            call.progress(1.0, Some(2.0), Some("one".into())).await;
            call.progress(2.0, Some(2.0), Some("two".into())).await;
            Ok(CallToolResult::success(vec![ContentBlock::text("counted")]))
        })
        .build()
        .into()
}

async fn start(up: InProcessServer) -> inproc::InProcess {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let policy = Policy::compile(
        "gateway",
        &PolicySpec::new().with_denied_tools(["*__delete_*"]),
    )
    .unwrap();
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .mcp_servers(ConnectionManager::new([ServerConfig::in_process("up", up)]))
        .gateway(GatewayConfig::new().with_policy(policy))
        .build()
        .await
        .unwrap();
    inproc::serve(server).await
}

/// A stateless 2026-07-28 POST to `/mcp`: the status, the content type and the JSON-RPC
/// messages of the answer (one for a JSON answer, every `data:` line of an SSE one).
async fn post(base: &str, id: u64, method: &str, params: Value) -> (u16, String, Vec<Value>) {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let mut req = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        req = req.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let res = req.body(body.to_string()).send().await.unwrap();
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = res.text().await.unwrap();
    let messages = if kind.starts_with("text/event-stream") {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap_or(Value::String(text))]
    };
    (status, kind, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_server_is_federated_with_json_answers() {
    let served = start(upstream()).await;
    let base = &served.base;

    let (status, kind, m) = post(base, 1, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{m:?}");
    assert!(kind.starts_with("application/json"), "{kind}");
    let names: Vec<&str> = m[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"up__echo") && names.contains(&"up__count"), "{names:?}");
    assert!(!names.contains(&"up__delete_all"), "the policy denies it: {names:?}");

    let (status, kind, m) = post(
        base,
        2,
        "tools/call",
        json!({"name": "up__echo", "arguments": {"text": "hi"}}),
    )
    .await;
    assert_eq!(status, 200, "{m:?}");
    assert!(kind.starts_with("application/json"), "{kind}: {m:?}");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["id"], 2);
    assert_eq!(m[0]["result"]["isError"], false, "{m:?}");
    assert_eq!(m[0]["result"]["content"][0]["text"], "hi");

    let (_, _, m) = post(base, 3, "tools/call", json!({"name": "up__delete_all", "arguments": {}}))
        .await;
    assert_eq!(m[0]["result"]["isError"], true, "{m:?}");

    // A client asking for progress gets it: the answer becomes an SSE stream.
    let (status, kind, m) = post(
        base,
        4,
        "tools/call",
        json!({"name": "up__count", "arguments": {}}),
    )
    .await;
    assert_eq!(status, 200, "{m:?}");
    assert!(kind.starts_with("application/json"), "no progress asked: {kind}");
    let (status, kind, m) =
        post_with_progress(base, 5, json!({"name": "up__count", "arguments": {}})).await;
    assert_eq!(status, 200, "{m:?}");
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let progress: Vec<&str> = m
        .iter()
        .filter(|v| v["method"] == "notifications/progress")
        .filter_map(|v| v["params"]["message"].as_str())
        .collect();
    assert_eq!(progress, ["one", "two"], "{m:?}");
    let last = m.last().unwrap();
    assert_eq!(last["id"], 5);
    assert_eq!(last["result"]["content"][0]["text"], "counted", "{m:?}");
}

/// Like [`post`], with a progress token in `_meta`.
async fn post_with_progress(base: &str, id: u64, params: Value) -> (u16, String, Vec<Value>) {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "progressToken": "p-1"
    });
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": params["name"], "arguments": params["arguments"], "_meta": meta}});
    let res = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", params["name"].as_str().unwrap_or(""))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = res.text().await.unwrap();
    let messages = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    (status, kind, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_in_process_server_is_a_tool_error_naming_it() {
    let up = upstream();
    let served = start(up.clone()).await;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", served.base))
        .auth_header(ADMIN);
    let client = ClientConfig::default()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    let call = |text: &str| {
        CallToolRequestParams::new("up__echo")
            .with_arguments(json!({"text": text}).as_object().unwrap().clone())
    };
    let r = client.call_tool(call("before")).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");

    up.stop();
    // The first call may still find the connection open (it fails as closed); the next one
    // cannot reconnect and says why.
    let mut text = String::new();
    for _ in 0..2 {
        let r = client.call_tool(call("after")).await.unwrap();
        assert_eq!(r.is_error, Some(true), "{r:?}");
        text = r
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        assert!(text.contains("`up`"), "{text}");
    }
    assert!(text.contains("stopped"), "{text}");
    client.cancel().await.unwrap();
}
