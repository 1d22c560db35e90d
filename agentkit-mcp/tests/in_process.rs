//! MCP servers attached in-process (`ServerConfig::in_process`): listed and called through
//! the connection manager and the aggregator with both lifecycles, progress reaching the run,
//! any rmcp `ServerHandler` accepted, and a server that fails or is stopped giving errors that
//! name it (never a panic or a hang). A call made just after the server stopped, before the
//! connection noticed, is told the server stopped (it never reached the server, so it is sent
//! again on a new connection), while a call the server was running is not sent again. A tool
//! handler that panics answers its call at once with an error saying so (not at the request
//! timeout) and the server keeps serving, for an `McpServerBuilder` server and a hand-written
//! handler alike, and over a byte stream too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentkit_core::{CollectingSink, RunContext, RunEvent, ToolSource};
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig as RmcpServerConfig, Tool,
};
use agentkit_mcp::rmcp::service::RequestContext;
use agentkit_mcp::rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use agentkit_mcp::{
    ConnectionManager, InProcessServer, Lifecycle, McpAggregator, McpServer, McpServerBuilder,
    ServerConfig,
};
use serde_json::{Value, json};

fn args(v: Value) -> agentkit_mcp::rmcp::model::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// `echo` (with a progress notification), `fail` (a protocol error) and `slow` (answers
/// after 30 s).
fn server() -> McpServer {
    McpServerBuilder::new("up", "1.0.0")
        .tool_fn(
            "echo",
            "Echoes text",
            json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            |args, call| async move {
                call.progress(1.0, Some(1.0), Some("echoing".into())).await;
                let t = args.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    t.to_owned(),
                )]))
            },
        )
        .tool_fn(
            "fail",
            "Fails",
            json!({"type": "object"}),
            |_, _| async move { Err(ErrorData::internal_error("the disk is full", None)) },
        )
        .tool_fn(
            "slow",
            "Waits",
            json!({"type": "object"}),
            |_, _| async move {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(CallToolResult::success(vec![ContentBlock::text("late")]))
            },
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_server_is_listed_and_called_with_both_lifecycles() {
    for lifecycle in [Lifecycle::Initialize, Lifecycle::Auto] {
        let manager = ConnectionManager::builder([ServerConfig::in_process("up", server())])
            .with_lifecycle(lifecycle)
            .build();
        let tools = McpAggregator::new(manager.clone(), ["up"]);
        let mut names: Vec<String> = tools
            .list_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        names.sort();
        assert_eq!(names, ["up__echo", "up__fail", "up__slow"], "{lifecycle:?}");

        let sink = Arc::new(CollectingSink::new());
        let ctx = RunContext::new().with_events(sink.clone());
        let out = tools
            .call_tool("up__echo", json!({"text": "hello"}), &ctx)
            .await
            .unwrap();
        assert_eq!(out.text_content(), "hello", "{lifecycle:?}");
        let mut progressed = false;
        for _ in 0..100 {
            progressed = sink.events().iter().any(
                |e| matches!(e, RunEvent::Progress { message: Some(m), .. } if m == "echoing"),
            );
            if progressed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(progressed, "no progress reached the run ({lifecycle:?})");

        // Many calls at once share the one connection.
        let calls = (0..50).map(|i| {
            let m = manager.clone();
            async move {
                let r = m
                    .call_tool(
                        "up",
                        "echo",
                        args(json!({"text": format!("n{i}")})),
                        &RunContext::new(),
                    )
                    .await
                    .unwrap();
                assert_eq!(text(&r), format!("n{i}"));
            }
        });
        futures::future::join_all(calls).await;
        assert_eq!(manager.connect_count("up").unwrap(), 1);
        let conn = manager.connection("up").await.unwrap();
        assert_eq!(conn.process_id(), None);
        assert!(conn.protocol_version().is_some());
        manager.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_stopped_in_process_server_gives_errors_naming_it() {
    let up: InProcessServer = server().into();
    let manager = ConnectionManager::new([ServerConfig::in_process("up", up.clone())]);
    let ctx = RunContext::new();

    // A handler's protocol error is an error naming the server and the tool.
    let e = manager
        .call_tool("up", "fail", args(json!({})), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("up") && e.contains("the disk is full"), "{e}");
    // An unknown tool too.
    let e = manager
        .call_tool("up", "nope", args(json!({})), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("up"), "{e}");

    // Stopping the server fails the call in flight promptly.
    let slow = {
        let m = manager.clone();
        tokio::spawn(async move {
            m.call_tool("up", "slow", args(json!({})), &RunContext::new())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    up.stop();
    assert!(up.is_stopped());
    let r = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("the call in flight must end when the server stops")
        .unwrap();
    let e = r.unwrap_err().to_string();
    assert!(e.contains("up"), "{e}");

    // The next call cannot reconnect and says why.
    let e = manager
        .call_tool("up", "echo", args(json!({"text": "x"})), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("in-process MCP server `up`") && e.contains("stopped"),
        "{e}"
    );

    // A new server attached under the same name serves again.
    manager
        .add_server(ServerConfig::in_process("up", server()))
        .await;
    let r = manager
        .call_tool("up", "echo", args(json!({"text": "back"})), &ctx)
        .await
        .unwrap();
    assert_eq!(text(&r), "back");
    manager.shutdown().await;
}

/// `echo` answers its text (no progress: a stopping server could not send it); `count`
/// counts its runs in `runs`, then waits 30 s.
fn counting(runs: Arc<AtomicUsize>) -> McpServer {
    McpServerBuilder::new("up", "1.0.0")
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
        .tool_fn("count", "Counts its runs", json!({"type": "object"}), {
            move |_, _| {
                let runs = Arc::clone(&runs);
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(CallToolResult::success(vec![ContentBlock::text("counted")]))
                }
            }
        })
        .build()
}

/// A call made right after the server stopped, before the connection noticed, never reached
/// the server (its session reads nothing after the stop): it is sent again on a new
/// connection, which tells it the server stopped (never "the connection was lost", never an
/// answer from the stopped server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_right_after_the_server_stopped_is_told_it_stopped() {
    let ctx = RunContext::new();
    for round in 0..50 {
        let up: InProcessServer = counting(Arc::default()).into();
        let manager = ConnectionManager::new([ServerConfig::in_process("up", up.clone())]);
        let r = manager
            .call_tool("up", "echo", args(json!({"text": "hi"})), &ctx)
            .await
            .unwrap();
        assert_eq!(text(&r), "hi");

        up.stop();
        let e = tokio::time::timeout(
            Duration::from_secs(10),
            manager.call_tool("up", "echo", args(json!({"text": "x"})), &ctx),
        )
        .await
        .expect("a call to a stopped server ends")
        .expect_err("a stopped server serves nothing")
        .to_string();
        assert!(
            e.contains("in-process MCP server `up`") && e.contains("stopped"),
            "round {round}: {e}"
        );
        manager.shutdown().await;
    }
}

/// A call the server was running when it stopped is not sent again (its tool ran): it fails
/// with the server's answer (the stop cuts the call short) or saying the connection was lost,
/// never that the server is stopped (which a new connection would say), and the tool ran
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_the_server_stops_runs_once_and_fails() {
    let runs = Arc::new(AtomicUsize::new(0));
    let up: InProcessServer = counting(Arc::clone(&runs)).into();
    let manager = ConnectionManager::new([ServerConfig::in_process("up", up.clone())]);
    let inflight = {
        let m = manager.clone();
        tokio::spawn(async move {
            m.call_tool("up", "count", args(json!({})), &RunContext::new())
                .await
        })
    };
    for _ in 0..1000 {
        if runs.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the tool did not start");
    up.stop();
    let e = tokio::time::timeout(Duration::from_secs(10), inflight)
        .await
        .expect("the call in flight ends when the server stops")
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MCP server `up` answered with error -32603: cancelled")
            || e.contains("the connection to MCP server `up` was lost"),
        "{e}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    manager.shutdown().await;
}

/// A hand-written rmcp handler (not built with `McpServerBuilder`): `upper` upper-cases its
/// `text`, and panics when it is `panic`.
#[derive(Clone)]
struct Upper;

impl ServerHandler for Upper {
    fn get_info(&self) -> RmcpServerConfig {
        RmcpServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object", "properties": {"text": {"type": "string"}}});
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "upper",
            "Upper-cases text",
            Arc::new(schema.as_object().cloned().unwrap_or_default()),
        )]))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let t = req
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(Value::as_str)
            .unwrap_or("");
        assert!(t != "panic", "asked to panic");
        Ok(CallToolResult::success(vec![ContentBlock::text(t.to_uppercase())]).into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_rmcp_server_handler_can_be_attached() {
    let manager = ConnectionManager::new([ServerConfig::in_process(
        "caps",
        InProcessServer::new(Upper),
    )]);
    let r = manager
        .call_tool(
            "caps",
            "upper",
            args(json!({"text": "abc"})),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(text(&r), "ABC");
    // Closing the connection and calling again starts a new session of the same handler.
    manager.connection("caps").await.unwrap().close().await;
    let r = manager
        .call_tool(
            "caps",
            "upper",
            args(json!({"text": "d"})),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(text(&r), "D");
    manager.shutdown().await;
}

/// The request timeout of the connections under test: long, so an answer that waited for it
/// is told apart from one that came at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// `boom` panics with a message naming its `n` (or, with `{"plain": true}`, with a payload
/// that is not a string); `echo` echoes.
fn fragile() -> McpServer {
    common::fragile().build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tool_answers_at_once_and_the_server_keeps_serving() {
    let manager = ConnectionManager::new([
        ServerConfig::in_process("fragile", fragile()).with_request_timeout(REQUEST_TIMEOUT)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_handler_that_panics_answers_at_once_too() {
    let manager = ConnectionManager::new([ServerConfig::in_process(
        "own",
        InProcessServer::new(Upper),
    )
    .with_request_timeout(REQUEST_TIMEOUT)]);
    let ctx = RunContext::new();
    let started = Instant::now();
    let e = manager
        .call_tool("own", "upper", args(json!({"text": "panic"})), &ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        e.contains("tool `upper`") && e.contains("asked to panic"),
        "{e}"
    );
    let r = manager
        .call_tool("own", "upper", args(json!({"text": "calm"})), &ctx)
        .await
        .unwrap();
    assert_eq!(text(&r), "CALM");
    manager.shutdown().await;
}

/// The same server over a byte stream (`McpServer::serve`) answers a panicking call at once
/// too, with the same error, and keeps serving the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_byte_stream_a_panicking_call_is_answered_at_once() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = fragile().serve(a).await.unwrap();
        let _ = running.waiting().await;
    });
    let client = ().serve(b).await.unwrap();
    let message = common::panicked_at_once(
        client.call_tool(CallToolRequestParams::new("boom").with_arguments(args(json!({"n": 1})))),
    )
    .await;
    assert!(
        message.starts_with("the handler of tool `boom` panicked: index 1 out of range;"),
        "{message}"
    );
    let r = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args(json!({"text": "on"}))))
        .await
        .unwrap();
    assert_eq!(text(&r), "on");
    client.cancel().await.unwrap();
}

/// What a call in flight holds of the client: its future is small, whatever the build (the
/// connect path and the request's own future are boxed where they are awaited). Before, a
/// `ConnectionManager::call_tool` future was 10,736 bytes (debug and release builds alike),
/// carried by every caller's future and copied at each await.
#[tokio::test]
async fn a_call_in_flight_holds_a_small_future() {
    let manager = ConnectionManager::new([ServerConfig::in_process("up", server())]);
    let ctx = RunContext::new();
    let call = manager.call_tool("up", "echo", args(json!({"text": "x"})), &ctx);
    let size = std::mem::size_of_val(&call);
    eprintln!("ConnectionManager::call_tool future: {size} bytes");
    assert!(size <= 4096, "a call's future is {size} bytes");
    assert_eq!(text(&call.await.unwrap()), "x");
    let conn = manager.connection("up").await.unwrap();
    let call = conn.call_tool("echo", args(json!({"text": "y"})), &ctx, None);
    let size = std::mem::size_of_val(&call);
    eprintln!("Connection::call_tool future: {size} bytes");
    assert!(size <= 4096, "a call's future is {size} bytes");
    assert_eq!(text(&call.await.unwrap()), "y");
    manager.shutdown().await;
}
