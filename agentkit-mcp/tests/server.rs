//! The server builder and `expose_as_mcp_server`, served in-process over streamable HTTP (axum)
//! and over a duplex pipe, called with agentkit's ConnectionManager and a raw rmcp client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CollectingSink, FnTool, RunContext, RunEvent, ScriptedProvider,
    ToolSource,
};
use agentkit_mcp::rmcp::ServiceExt;
use agentkit_mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use agentkit_mcp::{
    ConnectionManager, McpAggregator, McpServerBuilder, ServerConfig, expose_as_mcp_server,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct City {
    name: String,
}

fn agents() -> Vec<Arc<dyn AugmentedLlm>> {
    let weather = FnTool::new("weather", "Weather of a city", |c: City| async move {
        Ok::<_, std::convert::Infallible>(format!("sunny in {}", c.name))
    });
    let forecaster = AgentLlm::new(
        Agent::new("forecaster", "You answer weather questions.").with_tool(weather),
        ScriptedProvider::new()
            .then_tool_call("weather", json!({"name": "Lisbon"}))
            .then_text("It is sunny in Lisbon."),
    );
    let greeter = AgentLlm::new(
        Agent::new("greeter", "You greet."),
        ScriptedProvider::new().then_text("Hello!"),
    );
    vec![Arc::new(forecaster), Arc::new(greeter)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_exposed_over_http_answer_with_progress() {
    let (url, ct) = common::serve_http(expose_as_mcp_server("agents", agents()).build()).await;
    let manager = ConnectionManager::new([ServerConfig::http("agents", url)]);
    let tools = McpAggregator::new(manager.clone(), ["agents"]);
    let names: Vec<String> = tools
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["agents__forecaster", "agents__greeter"]);

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = tools
        .call_tool("forecaster", json!({"message": "Weather in Lisbon?"}), &ctx)
        .await
        .unwrap();
    assert_eq!(out.text_content(), "It is sunny in Lisbon.");
    assert_eq!(
        out.structured.as_ref().unwrap()["text"],
        "It is sunny in Lisbon."
    );
    // Progress notifications are handled on their own tasks (as rmcp dispatches them), so the
    // last one may land a scheduling tick after the result: wait for it, briefly.
    let mut progress: Vec<String> = Vec::new();
    for _ in 0..100 {
        progress = sink
            .events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::Progress { message, .. } => message,
                _ => None,
            })
            .collect();
        if progress
            .iter()
            .any(|m| m.contains("weather") || m.contains("answered"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The tool's progress ("weather") comes before the model's last answer. rmcp handles each
    // notification on its own task, so on a loaded machine the later one can overtake it; the
    // client then drops the earlier one as stale (progress only increases), so "weather" may be
    // missing only when a later message arrived.
    assert!(
        progress
            .iter()
            .any(|m| m.contains("weather") || m.contains("answered")),
        "no progress reached the run: {progress:?}"
    );

    let bad = tools.call_tool("greeter", json!({}), &ctx).await.unwrap();
    assert!(bad.is_error);
    manager.shutdown().await;
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_carry_run_id_idempotency_key_and_traceparent_in_meta() {
    let server = McpServerBuilder::new("meta", "1")
        .tool_fn(
            "whoami",
            "Echo the request _meta",
            json!({"type": "object"}),
            |_a, call| async move {
                let meta = serde_json::to_value(&call.request().meta).unwrap();
                Ok(CallToolResult::structured(meta))
            },
        )
        .build();
    let (url, ct) = common::serve_http(server).await;
    let manager = ConnectionManager::new([ServerConfig::http("meta", url)]);
    let ctx = RunContext::new()
        .with_run_id("0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70")
        .with_tool_call_key("agent/tool/4/call_9");
    let out = manager
        .call_tool("meta", "whoami", Default::default(), &ctx)
        .await
        .unwrap();
    let meta = out.structured_content.unwrap();
    assert_eq!(
        meta["agentkit/runId"],
        "0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70"
    );
    assert_eq!(
        meta["agentkit/idempotencyKey"],
        "0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70/agent/tool/4/call_9"
    );
    assert!(
        meta["traceparent"]
            .as_str()
            .unwrap()
            .starts_with("00-0190f0d28d3b7c4e9a1f2b3c4d5e6f70-")
    );
    manager.shutdown().await;
    ct.cancel();
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_run_cancels_the_server_handler() {
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stopped);
    let server = McpServerBuilder::new("slow", "1")
        .tool_fn(
            "wait",
            "Waits until cancelled",
            json!({"type": "object"}),
            move |_a, call| {
                let flag = Arc::clone(&flag);
                async move {
                    // Set when the handler future is dropped, i.e. when the server stops it.
                    let _guard = SetOnDrop(flag);
                    call.cancellation().cancelled().await;
                    std::future::pending::<()>().await;
                    Ok(CallToolResult::success(vec![ContentBlock::text(
                        "unreachable",
                    )]))
                }
            },
        )
        .build();
    let (url, ct) = common::serve_http(server).await;
    let manager = ConnectionManager::new([ServerConfig::http("slow", url)]);
    let ctx = RunContext::new();
    let c2 = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c2.cancel();
    });
    let err = manager
        .call_tool("slow", "wait", Default::default(), &ctx)
        .await
        .unwrap_err();
    assert!(err.is_cancelled());
    for _ in 0..50 {
        if stopped.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        stopped.load(Ordering::SeqCst),
        "the server never saw the cancellation"
    );
    manager.shutdown().await;
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_rmcp_client_over_duplex_and_unknown_tool_is_a_protocol_error() {
    let server = expose_as_mcp_server("agents", agents()).build();
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = server.serve(a).await.unwrap();
        let _ = running.waiting().await;
    });
    let client = ().serve(b).await.unwrap();
    let r = client
        .call_tool(
            CallToolRequestParams::new("greeter")
                .with_arguments(json!({"message": "hi"}).as_object().cloned().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.content[0].as_text().unwrap().text, "Hello!");
    let err = client
        .call_tool(CallToolRequestParams::new("nope"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rejects_foreign_host_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (url, ct) = common::serve_http(expose_as_mcp_server("agents", agents()).build()).await;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_owned();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let status = resp.lines().next().unwrap_or_default().to_owned();
    assert!(
        status.contains(" 403") || status.contains(" 421") || status.contains(" 400"),
        "{status}"
    );
    ct.cancel();
}
