//! Both MCP lifecycles against agentkit's own streamable HTTP server (McpServerBuilder mounted
//! in axum on 127.0.0.1): protocol negotiation, tools added at runtime reaching the
//! aggregator (legacy `notifications/tools/list_changed`, 2026-07-28 `subscriptions/listen`),
//! and a tool that asks the user for input (legacy `elicitation/create`, 2026-07-28
//! input-required rounds) answered by the run's human-input handler.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_core::{
    CollectingSink, HumanInputHandler, HumanInputRequest, HumanInputResponse, RunContext, RunEvent,
    ToolSource,
};
use agentkit_mcp::rmcp::ErrorData;
use agentkit_mcp::rmcp::model::{
    CallToolResult, ContentBlock, ElicitationAction, ElicitationSchema, ProtocolVersion,
};
use agentkit_mcp::{
    ConnectionManager, ConnectionManagerBuilder, Lifecycle, McpAggregator, McpServer,
    McpServerBuilder, ServerConfig,
};
use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Serve on `addr` again (after a restart), retrying while the port is still being released.
async fn serve_http_at(server: McpServer, addr: std::net::SocketAddr) -> CancellationToken {
    for _ in 0..100 {
        if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
            return common::serve_on(server, listener).1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not bind {addr} again");
}

fn echo_server() -> McpServer {
    McpServerBuilder::new("lifecycle", "1.0.0")
        .tool_fn(
            "echo",
            "Echo `text`",
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            |a, _c| async move {
                let text = a.get("text").and_then(|v| v.as_str()).unwrap_or_default();
                Ok(CallToolResult::success(vec![ContentBlock::text(format!("echo: {text}"))]))
            },
        )
        .build()
}

fn manager(url: String, lifecycle: Lifecycle) -> ConnectionManagerBuilder {
    ConnectionManager::builder([ServerConfig::http("s", url)]).with_lifecycle(lifecycle)
}

async fn names(tools: &McpAggregator) -> Vec<String> {
    tools
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect()
}

/// Wait (up to 10 s) until the manager's list epoch for `s` moves past `from`.
async fn epoch_moves(manager: &ConnectionManager, from: u64) {
    for _ in 0..200 {
        if manager.lists_epoch("s").unwrap() != from {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no list_changed reached the client within 10 s");
}

async fn negotiates_and_calls(lifecycle: Lifecycle, expected: ProtocolVersion) {
    let (url, ct) = common::serve_http(echo_server()).await;
    let manager = manager(url, lifecycle).build();
    let conn = manager.connection("s").await.unwrap();
    assert_eq!(conn.protocol_version(), Some(expected));
    let tools = McpAggregator::new(manager.clone(), ["s"]);
    assert_eq!(names(&tools).await, ["s__echo"]);
    let out = tools
        .call_tool("s__echo", json!({"text": "hi"}), &RunContext::new())
        .await
        .unwrap();
    assert!(!out.is_error);
    assert_eq!(out.text_content(), "echo: hi");
    assert_eq!(manager.connect_count("s").unwrap(), 1);
    manager.shutdown().await;
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_lifecycle_negotiates_2026_07_28_and_calls_a_tool() {
    negotiates_and_calls(Lifecycle::Auto, ProtocolVersion::V_2026_07_28).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_lifecycle_negotiates_2025_11_25_and_calls_a_tool() {
    negotiates_and_calls(Lifecycle::Initialize, ProtocolVersion::V_2025_11_25).await;
}

async fn runtime_tool_reaches_the_aggregator(lifecycle: Lifecycle, expected: ProtocolVersion) {
    let server = echo_server();
    let (url, ct) = common::serve_http(server.clone()).await;
    let manager = manager(url, lifecycle).build();
    let tools = McpAggregator::new(manager.clone(), ["s"]);
    assert_eq!(names(&tools).await, ["s__echo"]);
    assert_eq!(
        manager.existing_connection("s").unwrap().protocol_version(),
        Some(expected)
    );
    // Cached: no list_changed yet, so the same list without asking the server.
    assert_eq!(names(&tools).await, ["s__echo"]);

    let epoch = manager.lists_epoch("s").unwrap();
    server
        .add_tool_fn(
            "shout",
            "Upper-case `text`",
            json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            |a, _c| async move {
                let text = a.get("text").and_then(|v| v.as_str()).unwrap_or_default();
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    text.to_uppercase(),
                )]))
            },
        )
        .await;
    epoch_moves(&manager, epoch).await;
    assert_eq!(names(&tools).await, ["s__echo", "s__shout"]);
    let out = tools
        .call_tool("shout", json!({"text": "hi"}), &RunContext::new())
        .await
        .unwrap();
    assert_eq!(out.text_content(), "HI");

    let epoch = manager.lists_epoch("s").unwrap();
    assert!(server.remove_tool("echo").await);
    epoch_moves(&manager, epoch).await;
    assert_eq!(names(&tools).await, ["s__shout"]);

    // All of it over the first connection: refreshed, not reconnected.
    assert_eq!(manager.connect_count("s").unwrap(), 1);
    manager.shutdown().await;
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_tool_reaches_the_aggregator_over_subscriptions_listen_on_2026_07_28() {
    runtime_tool_reaches_the_aggregator(Lifecycle::Auto, ProtocolVersion::V_2026_07_28).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_tool_reaches_the_aggregator_over_list_changed_on_2025_11_25() {
    runtime_tool_reaches_the_aggregator(Lifecycle::Initialize, ProtocolVersion::V_2025_11_25).await;
}

/// Answers every question with `{"confirm": true, "name": "Ada"}` and remembers the questions.
#[derive(Default)]
struct Answers {
    asked: Mutex<Vec<HumanInputRequest>>,
}

#[async_trait]
impl HumanInputHandler for Answers {
    async fn ask(
        &self,
        r: HumanInputRequest,
        _: &RunContext,
    ) -> agentkit_core::Result<HumanInputResponse> {
        self.asked.lock().unwrap().push(r);
        Ok(HumanInputResponse::Answer {
            text: String::new(),
            data: Some(json!({"confirm": true, "name": "Ada"})),
        })
    }
}

fn schema(v: serde_json::Value) -> Result<ElicitationSchema, ErrorData> {
    serde_json::from_value(v).map_err(|e| ErrorData::internal_error(e.to_string(), None))
}

/// A tool that asks two questions in a row, then reports both answers.
fn asking_server() -> McpServer {
    McpServerBuilder::new("asking", "1.0.0")
        .tool_fn("deploy", "Deploy after confirmation", json!({"type": "object"}), |_a, c| async move {
            let confirm = c
                .elicit(
                    "Deploy to production?",
                    schema(json!({"type": "object", "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}))?,
                )
                .await?;
            if confirm.action != ElicitationAction::Accept {
                return Ok(CallToolResult::error(vec![ContentBlock::text("not confirmed")]));
            }
            let who = c
                .elicit(
                    "Who approves?",
                    schema(json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}))?,
                )
                .await?;
            let stateless = c.is_stateless_protocol();
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "deployed: confirm={} by={} stateless={stateless}",
                confirm.content.unwrap_or_default()["confirm"],
                who.content.unwrap_or_default()["name"],
            ))]))
        })
        .build()
}

async fn elicitation_is_answered_by_the_human_input_handler(
    lifecycle: Lifecycle,
    expected: ProtocolVersion,
) {
    let (url, ct) = common::serve_http(asking_server()).await;
    let answers = Arc::new(Answers::default());
    let manager = manager(url, lifecycle)
        .with_human_input(answers.clone())
        .build();
    let conn = manager.connection("s").await.unwrap();
    assert_eq!(conn.protocol_version(), Some(expected.clone()));
    let tools = McpAggregator::new(manager.clone(), ["s"]);
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = tools.call_tool("deploy", json!({}), &ctx).await.unwrap();
    assert!(!out.is_error, "{}", out.text_content());
    let stateless = expected >= ProtocolVersion::V_2026_07_28;
    assert_eq!(
        out.text_content(),
        format!("deployed: confirm=true by=\"Ada\" stateless={stateless}")
    );
    let asked: Vec<String> = answers
        .asked
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.prompt.clone())
        .collect();
    assert_eq!(asked, ["Deploy to production?", "Who approves?"]);
    let first = answers.asked.lock().unwrap()[0].clone();
    assert_eq!(
        first.schema.unwrap()["properties"]["confirm"]["type"],
        "boolean"
    );
    let requested = sink
        .events()
        .into_iter()
        .filter(|e| matches!(e, RunEvent::HumanInputRequested { .. }))
        .count();
    assert_eq!(requested, 2);
    manager.shutdown().await;
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_required_rounds_are_answered_by_the_human_input_handler_on_2026_07_28() {
    elicitation_is_answered_by_the_human_input_handler(
        Lifecycle::Auto,
        ProtocolVersion::V_2026_07_28,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elicitation_requests_are_answered_by_the_human_input_handler_on_2025_11_25() {
    elicitation_is_answered_by_the_human_input_handler(
        Lifecycle::Initialize,
        ProtocolVersion::V_2025_11_25,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_own_human_input_handler_wins_over_the_managers() {
    let (url, ct) = common::serve_http(asking_server()).await;
    let fallback = Arc::new(Answers::default());
    let own = Arc::new(Answers::default());
    let manager = manager(url, Lifecycle::Auto)
        .with_human_input(fallback.clone())
        .build();
    let tools = McpAggregator::new(manager.clone(), ["s"]);
    let ctx = RunContext::new().with_human_input(own.clone());
    let out = tools.call_tool("deploy", json!({}), &ctx).await.unwrap();
    assert!(!out.is_error, "{}", out.text_content());
    assert_eq!(own.asked.lock().unwrap().len(), 2);
    assert!(fallback.asked.lock().unwrap().is_empty());
    manager.shutdown().await;
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_stream_is_reopened_after_the_server_restarts_on_2026_07_28() {
    let server = echo_server();
    let (url, ct) = common::serve_http(server.clone()).await;
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .parse()
        .unwrap();
    let manager = manager(url, Lifecycle::Auto).build();
    let tools = McpAggregator::new(manager.clone(), ["s"]);
    assert_eq!(names(&tools).await, ["s__echo"]);
    let epoch = manager.lists_epoch("s").unwrap();

    // The server goes away (its listen stream ends); a tool appears while nobody listens.
    ct.cancel();
    server
        .add_tool_fn(
            "late",
            "Added during the restart",
            json!({"type": "object"}),
            |_a, _c| async { Ok(CallToolResult::success(vec![ContentBlock::text("late")])) },
        )
        .await;
    let ct = serve_http_at(server, addr).await;

    // The client opens the stream again and, having possibly missed changes, refreshes.
    epoch_moves(&manager, epoch).await;
    assert_eq!(names(&tools).await, ["s__echo", "s__late"]);
    assert_eq!(manager.connect_count("s").unwrap(), 1);
    manager.shutdown().await;
    ct.cancel();
}

#[allow(deprecated)] // sampling is SEP-2577-deprecated but still part of MCP
async fn sampling_is_answered_by_the_managers_provider(lifecycle: Lifecycle, stateless: bool) {
    use agentkit_mcp::rmcp::model::{CreateMessageRequestParams, SamplingMessage};
    let server = McpServerBuilder::new("sampling", "1.0.0")
        .tool_fn(
            "summarize",
            "Summarize with the client's model",
            json!({"type": "object"}),
            |_a, c| async move {
                let req = CreateMessageRequestParams::new(
                    vec![SamplingMessage::user_text(
                        "Summarize: MCP has two lifecycles.",
                    )],
                    50,
                );
                let r = c.sample(req).await?;
                let text = serde_json::to_value(&r.message.content).unwrap();
                Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                    "{} stateless={}",
                    text["text"].as_str().unwrap_or_default(),
                    c.is_stateless_protocol()
                ))]))
            },
        )
        .build();
    let (url, ct) = common::serve_http(server).await;
    let provider = agentkit_core::ScriptedProvider::new().then_text("Two lifecycles.");
    let manager = manager(url, lifecycle)
        .with_sampling(Arc::new(provider))
        .build();
    let out = manager
        .call_tool("s", "summarize", Default::default(), &RunContext::new())
        .await
        .unwrap();
    assert_ne!(out.is_error, Some(true), "{:?}", out.content);
    assert_eq!(
        out.content[0].as_text().unwrap().text,
        format!("Two lifecycles. stateless={stateless}")
    );
    manager.shutdown().await;
    ct.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_input_rounds_are_answered_by_the_managers_provider_on_2026_07_28() {
    sampling_is_answered_by_the_managers_provider(Lifecycle::Auto, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_requests_are_answered_by_the_managers_provider_on_2025_11_25() {
    sampling_is_answered_by_the_managers_provider(Lifecycle::Initialize, false).await;
}
