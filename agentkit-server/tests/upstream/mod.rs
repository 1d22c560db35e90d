//! What the governance tests share (`mod upstream;` beside `mod inproc;` in a test file): an
//! outbound MCP server `crm` on 127.0.0.1 that counts the calls it really runs, and workspace
//! keys made with the server's admin key.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

#[path = "../common/upstream.rs"]
mod served;

pub use served::Upstream;

/// MCP server `crm` over streamable HTTP: each of `tools` takes `{text}` and answers
/// `<tool> #<n>: <text>`, `n` counting every call of any of its tools in `calls`. Returns
/// its URL and the server (dropping it, or `stop()`, stops it).
pub async fn crm(tools: &[&'static str], calls: Arc<AtomicU32>) -> (String, Upstream) {
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
    let up = Upstream::serve(b.build()).await;
    (up.url.clone(), up)
}

/// Workspace `org/prod` (created unless it exists) and a new key of it with `role`, made
/// with `admin` on the server at `base`: the key and its id.
pub async fn workspace_key(base: &str, admin: &str, org: &str, role: &str) -> (String, String) {
    crate::inproc::workspace_key_and_id(base, admin, org, "prod", role, role).await
}

/// A server on `store` with admin key `admin` whose gateway reaches the MCP server `crm` at
/// URL `crm` from workspaces `acme/prod` and `globex/prod`, and asks for an approval before
/// every call of `crm__post`.
pub async fn approval_gateway(
    store: &Arc<dyn agentkit_runtime::Store>,
    crm: &str,
    admin: &str,
) -> crate::inproc::InProcess {
    use agentkit_server::tenancy::WorkspaceId;
    let policy = agentkit_core::policy::Policy::compile(
        "gateway",
        &agentkit_core::config::PolicySpec::new().with_require_approval(["crm__post"]),
    )
    .unwrap();
    let gateway = agentkit_server::gatewayops::GatewayConfig::new()
        .with_policy(policy)
        .with_server_workspaces(
            "crm",
            [
                WorkspaceId::new("acme", "prod"),
                WorkspaceId::new("globex", "prod"),
            ],
        );
    crate::inproc::serve_gateway(Arc::clone(store), admin, &[("crm", crm)], gateway).await
}

/// `POST path` with `body` as `key`, with an `Idempotency-Key` header when `idem` is given;
/// the status and the body (JSON, or the text as a JSON string).
pub async fn post_keyed(
    base: &str,
    key: &str,
    path: &str,
    idem: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
