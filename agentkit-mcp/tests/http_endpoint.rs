#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The inbound `/mcp` endpoint over real HTTP, as a client or an attacker meets it: Origin
//! validation, JSON-RPC errors for malformed messages, the session cap, and session ids with
//! an end hook.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use agentkit_mcp::{HttpOptions, McpServer, McpServerBuilder};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn whoami(ended: Arc<Mutex<Vec<String>>>) -> McpServer {
    McpServerBuilder::new("who", "1.0.0")
        .tool_fn(
            "whoami",
            "The caller's MCP session id",
            json!({"type": "object"}),
            |_args, ctx| async move {
                let id = ctx.session_id().unwrap_or("none").to_owned();
                Ok(CallToolResult::success(vec![ContentBlock::text(id)]))
            },
        )
        .on_session_end(move |id| ended.lock().unwrap().push(id.to_owned()))
        .build()
}

async fn serve(server: McpServer, options: HttpOptions) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    common::serve_on_with(server, listener, options)
}

fn post(url: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
}

fn initialize() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}})
    .to_string()
}

/// The JSON-RPC message of a JSON or SSE response body.
fn message(body: &str) -> Value {
    let text = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .unwrap_or(body);
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Open a legacy session; returns its id.
async fn open_session(url: &str) -> reqwest::Response {
    post(url, initialize()).send().await.unwrap()
}

async fn initialized(url: &str, session: &str) {
    let r = post(
        url,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    )
    .header("mcp-session-id", session)
    .header("mcp-protocol-version", "2025-11-25")
    .send()
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// The status of an `initialize` sent from a browser page at `origin`.
async fn initialize_from(url: &str, origin: &str) -> u16 {
    let r = post(url, initialize())
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_and_a_loopback_one_accepted() {
    let (url, ct) = serve(whoami(Arc::default()), HttpOptions::new()).await;
    assert_eq!(initialize_from(&url, "https://evil.example").await, 403);
    assert_eq!(initialize_from(&url, "http://localhost:5173").await, 200);
    // Configured origins replace the loopback default.
    let (url, ct2) = serve(
        whoami(Arc::default()),
        HttpOptions::new().with_allowed_origins(["https://app.example.com:443"]),
    )
    .await;
    assert_eq!(initialize_from(&url, "https://app.example.com").await, 200);
    assert_eq!(initialize_from(&url, "http://localhost:5173").await, 403);
    ct.cancel();
    ct2.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_rpc_gets_json_rpc_errors() {
    let (url, ct) = serve(whoami(Arc::default()), HttpOptions::new()).await;
    for (body, status, code) in [
        ("{\"jsonrpc\": \"2.0\", \"id\": 1, ", 400, -32700),
        ("[]", 400, -32600),
        (
            r#"{"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}"#,
            400,
            -32600,
        ),
        (r#"{"id": 1, "method": "ping"}"#, 400, -32600),
        (
            r#"{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "whoami", "arguments": "oops"}}"#,
            200,
            -32602,
        ),
    ] {
        let r = post(&url, body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{body}"
        );
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["error"]["code"], code, "{body}: {m}");
        if code == -32602 {
            assert_eq!(m["id"], 7);
            assert!(
                m["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("arguments"),
                "{m}"
            );
        }
    }
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_and_a_closed_one_frees_its_place() {
    let ended = Arc::new(Mutex::new(Vec::new()));
    let (url, ct) = serve(
        whoami(Arc::clone(&ended)),
        HttpOptions::new().with_max_sessions(Some(3)),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = open_session(&url).await;
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["mcp-session-id"].to_str().unwrap().to_owned());
    }
    let refused = open_session(&url).await;
    assert_eq!(refused.status(), 503);
    let m: Value = refused.json().await.unwrap();
    assert!(
        m["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3 open MCP sessions"),
        "{m}"
    );
    // The session id is stable and seen by handlers.
    initialized(&url, &ids[0]).await;
    let r = post(
        &url,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "whoami", "arguments": {}}})
        .to_string(),
    )
    .header("mcp-session-id", &ids[0])
    .header("mcp-protocol-version", "2025-11-25")
    .send()
    .await
    .unwrap();
    let m = message(&r.text().await.unwrap());
    assert_eq!(m["result"]["content"][0]["text"], ids[0]);
    // Closing a session frees its place and tells the server owner.
    let r = reqwest::Client::new()
        .delete(&url)
        .header("mcp-session-id", &ids[0])
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !ended.lock().unwrap().contains(&ids[0]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no end hook for the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open_session(&url).await.status(), 200);
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_served_over_any_transport_is_one_session() {
    use agentkit_mcp::rmcp::ServiceExt;
    use agentkit_mcp::rmcp::model::CallToolRequestParams;

    let ended = Arc::new(Mutex::new(Vec::new()));
    let server = whoami(Arc::clone(&ended));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let s = server.clone();
        tokio::spawn(async move {
            if let Ok(running) = s.serve(a).await {
                let _ = running.waiting().await;
            }
        });
        let client = ().serve(b).await.unwrap();
        let id = |r: CallToolResult| r.content[0].as_text().unwrap().text.clone();
        let first = id(client
            .call_tool(CallToolRequestParams::new("whoami"))
            .await
            .unwrap());
        let second = id(client
            .call_tool(CallToolRequestParams::new("whoami"))
            .await
            .unwrap());
        assert_eq!(first, second);
        assert_ne!(first, "none");
        client.cancel().await.unwrap();
        seen.push(first);
    }
    assert_ne!(seen[0], seen[1]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ended.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            ended.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*ended.lock().unwrap(), seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_discover_lists_only_versions_a_discover_client_can_use() {
    let (url, ct) = serve(whoami(Arc::default()), HttpOptions::new()).await;
    let r = post(
        &url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}})
        .to_string(),
    )
    .header("mcp-protocol-version", "2026-07-28")
    .header("mcp-method", "server/discover")
    .send()
    .await
    .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let m = message(&body);
    let versions = m["result"]["supportedVersions"]
        .as_array()
        .unwrap_or_else(|| panic!("{m}"));
    assert_eq!(versions, &[json!("2026-07-28")], "{m}");
    ct.cancel();
}
