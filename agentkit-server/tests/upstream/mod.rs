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
