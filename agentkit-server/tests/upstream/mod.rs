//! What the governance tests share (`mod upstream;` in a test file): an outbound MCP server
//! on 127.0.0.1 that counts the calls it really runs, and workspace keys made with the
//! server's admin key.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use reqwest::Method;
use serde_json::{Value, json};

/// MCP server `crm` over streamable HTTP: each of `tools` takes `{text}` and answers
/// `<tool> #<n>: <text>`, `n` counting every call of any of its tools in `calls`. Returns
/// its URL and the token that stops it.
pub async fn crm(
    tools: &[&'static str],
    calls: Arc<AtomicU32>,
) -> (String, tokio_util::sync::CancellationToken) {
    let mut b = agentkit_mcp::McpServerBuilder::new("crm", "1.0.0");
    for &tool in tools {
        let calls = Arc::clone(&calls);
        b = b.tool_fn(
            tool,
            "Sends a message",
            json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            move |args, _| {
                let calls = Arc::clone(&calls);
                async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let t = args.get("text").and_then(Value::as_str).unwrap_or("");
                    Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                        "{tool} #{n}: {t}"
                    ))]))
                }
            },
        );
    }
    let ct = tokio_util::sync::CancellationToken::new();
    let svc = b
        .build()
        .into_http_service(agentkit_mcp::HttpOptions::new().with_cancellation(ct.child_token()));
    let app = axum::Router::new().nest_service("/mcp", svc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = ct.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    (format!("http://{addr}/mcp"), ct)
}

/// Workspace `org/prod` (created unless it exists) and a new key of it with `role`, made
/// with `admin` on the server at `base`: the key and its id.
pub async fn workspace_key(base: &str, admin: &str, org: &str, role: &str) -> (String, String) {
    let call = |method: Method, path: &'static str, body: Value| async move {
        let res = reqwest::Client::new()
            .request(method, format!("{base}{path}"))
            .bearer_auth(admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap())
    };
    let (s, b) = call(
        Method::POST,
        "/v1/workspaces",
        json!({"org": org, "workspace": "prod"}),
    )
    .await;
    assert!(s == 201 || s == 409, "{b}");
    let (s, b) = call(
        Method::POST,
        "/v1/keys",
        json!({"name": role, "role": role, "workspace": format!("{org}/prod")}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    (
        b["key"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    )
}
