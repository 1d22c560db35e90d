//! An upstream MCP server for the tests that put agentkit in front of one: an
//! [`McpServer`](agentkit_mcp::McpServer) (built with `agentkit_mcp::McpServerBuilder`) served
//! over streamable HTTP at `http://127.0.0.1:<port>/mcp`, stopped when dropped; and the tools
//! several tests give it.

use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use agentkit_mcp::{HttpOptions, McpServer, McpServerBuilder};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A served upstream MCP server; dropping it (or [`stop`](Self::stop)) stops it.
pub struct Upstream {
    /// `http://127.0.0.1:<port>/mcp`.
    pub url: String,
    stop: CancellationToken,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Upstream {
    /// Serve `server` at `/mcp` on a free 127.0.0.1 port.
    pub async fn serve(server: McpServer) -> Self {
        Self::serve_with(server, |app| app).await
    }

    /// [`serve`](Self::serve), the router (with `/mcp` nested) changed by `app` first: a
    /// middleware layer in front of the server, say.
    pub async fn serve_with(
        server: McpServer,
        app: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Self {
        let ct = CancellationToken::new();
        let svc = server.into_http_service(HttpOptions::new().with_cancellation(ct.child_token()));
        let app = app(axum::Router::new().nest_service("/mcp", svc));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = ct.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}/mcp"),
            stop: ct,
        }
    }

    /// Stop serving now (connections to it fail from here on).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// The number argument `k` of a tool call (0 when absent or not a number).
pub fn num(args: &serde_json::Map<String, Value>, k: &str) -> f64 {
    args.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `server` with tool `add`: "Adds a and b", answering their sum as text.
pub fn with_add(server: McpServerBuilder) -> McpServerBuilder {
    server.tool_fn(
        "add",
        "Adds a and b",
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
        |args, _| async move {
            Ok(CallToolResult::success(vec![ContentBlock::text(
                (num(&args, "a") + num(&args, "b")).to_string(),
            )]))
        },
    )
}

/// `server` with tool `echo`: "Echoes text", answering its `text` argument.
pub fn with_echo(server: McpServerBuilder) -> McpServerBuilder {
    server.tool_fn(
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
}

/// `server` with tool `delete_all`: "Deletes everything", answering `deleted`.
pub fn with_delete_all(server: McpServerBuilder) -> McpServerBuilder {
    server.tool_fn(
        "delete_all",
        "Deletes everything",
        json!({"type": "object"}),
        |_, _| async move { Ok(CallToolResult::success(vec![ContentBlock::text("deleted")])) },
    )
}

/// `server` with tool `send`: "Sends a message", answering `sent: <text>` and counting in
/// `sends` the calls it really ran.
pub fn with_send(
    server: McpServerBuilder,
    sends: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> McpServerBuilder {
    server.tool_fn(
        "send",
        "Sends a message",
        json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        move |args, _| {
            let sends = std::sync::Arc::clone(&sends);
            async move {
                sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let t = args.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                    "sent: {t}"
                ))]))
            }
        },
    )
}
