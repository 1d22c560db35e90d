//! A tool handler that panics in an in-process MCP server (`ServerConfig::in_process`): its
//! call is answered at once with an error saying the handler panicked (not at the request
//! timeout), the server stays usable for the next calls, for an `McpServerBuilder` server and
//! for a hand-written rmcp handler alike. Over a real transport (a byte stream) rmcp leaves
//! the request unanswered: the client waits for its timeout, and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::RunContext;
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig as RmcpServerConfig, Tool,
};
use agentkit_mcp::rmcp::service::RequestContext;
use agentkit_mcp::rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use agentkit_mcp::{ConnectionManager, InProcessServer, McpServer, McpServerBuilder, ServerConfig};
use serde_json::{Value, json};

/// The request timeout of the connections under test: long, so an answer that waited for it
/// is told apart from one that came at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

fn args(v: Value) -> agentkit_mcp::rmcp::model::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// `boom` panics with a message naming its `n` (or, with `{"plain": true}`, with a payload
/// that is not a string); `echo` echoes.
fn server() -> McpServer {
    McpServerBuilder::new("fragile", "1.0.0")
        .tool_fn(
            "boom",
            "Panics",
            json!({"type": "object"}),
            |args, _| async move {
                if args.get("plain").is_some() {
                    std::panic::panic_any(42_u32);
                }
                if let Some(n) = args.get("n").and_then(Value::as_u64) {
                    panic!("index {n} out of range");
                }
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    "no index",
                )]))
            },
        )
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
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tool_answers_at_once_and_the_server_keeps_serving() {
    let manager = ConnectionManager::new([
        ServerConfig::in_process("fragile", server()).with_request_timeout(REQUEST_TIMEOUT)
    ]);
    let ctx = RunContext::new();
    for round in 0..3_u64 {
        let started = Instant::now();
        let e = manager
            .call_tool("fragile", "boom", args(json!({"n": round})), &ctx)
            .await
            .expect_err("a panicking handler is an error")
            .to_string();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}, not at once",
            started.elapsed()
        );
        assert!(
            e.contains("fragile")
                && e.contains("tool `boom`")
                && e.contains("panicked")
                && e.contains(&format!("index {round} out of range")),
            "{e}"
        );
        // The same connection serves the next call.
        let r = manager
            .call_tool("fragile", "echo", args(json!({"text": "still here"})), &ctx)
            .await
            .unwrap();
        assert_eq!(text(&r), "still here");
    }
    // A panic whose payload is not a string still answers, saying so.
    let e = manager
        .call_tool("fragile", "boom", args(json!({"plain": true})), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("panicked") && e.contains("without a message"),
        "{e}"
    );

    // Concurrent calls: the panicking ones fail, the others succeed, none waits.
    let started = Instant::now();
    let calls = (0..8).map(|i| {
        let m = manager.clone();
        async move {
            let tool = if i % 2 == 0 { "boom" } else { "echo" };
            m.call_tool("fragile", tool, args(json!({"n": i})), &RunContext::new())
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i % 2 == 1, "call {i}: {r:?}");
    }
    manager.shutdown().await;
}

/// A hand-written rmcp handler whose one tool panics.
#[derive(Clone)]
struct Panicky;

impl ServerHandler for Panicky {
    fn get_info(&self) -> RmcpServerConfig {
        RmcpServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object"});
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "explode",
            "Panics unless told not to",
            Arc::new(schema.as_object().cloned().unwrap_or_default()),
        )]))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let calm = req
            .arguments
            .as_ref()
            .is_some_and(|a| a.contains_key("calm"));
        assert!(calm, "the handler was not calm");
        Ok(CallToolResult::success(vec![ContentBlock::text("calm")]).into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_handler_that_panics_answers_at_once_too() {
    let manager =
        ConnectionManager::new([
            ServerConfig::in_process("own", InProcessServer::new(Panicky))
                .with_request_timeout(REQUEST_TIMEOUT),
        ]);
    let ctx = RunContext::new();
    let started = Instant::now();
    let e = manager
        .call_tool("own", "explode", args(json!({})), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.contains("tool `explode`") && e.contains("the handler was not calm"),
        "{e}"
    );
    let r = manager
        .call_tool("own", "explode", args(json!({"calm": true})), &ctx)
        .await
        .unwrap();
    assert_eq!(text(&r), "calm");
    manager.shutdown().await;
}

/// What the in-process server improves on: the same server over a byte stream (rmcp's own
/// serving) leaves a panicking call unanswered until the client gives up, and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_byte_stream_a_panicking_call_waits_for_the_client_timeout() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = server().serve(a).await.unwrap();
        let _ = running.waiting().await;
    });
    let client = ().serve(b).await.unwrap();
    let unanswered = tokio::time::timeout(
        Duration::from_secs(2),
        client.call_tool(CallToolRequestParams::new("boom").with_arguments(args(json!({"n": 1})))),
    )
    .await;
    assert!(unanswered.is_err(), "answered: {unanswered:?}");
    let r = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "on"}))))
        .await
        .unwrap();
    assert_eq!(text(&r), "on");
    client.cancel().await.unwrap();
}
