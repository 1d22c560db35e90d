//! Agents exposed over MCP give each session its own conversation: two clients never see each
//! other's messages (checked in the requests the model receives), a session's conversation is
//! forgotten when it ends, and memory stays flat over 10,000 calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionRequest, CompletionResponse, InMemoryMemory, Message,
    RunContext, ScriptedProvider, StopReason, ToolSource, Usage,
};
use agentkit_mcp::{
    ConnectionManager, McpAggregator, ServerConfig, SessionHistory, expose_as_mcp_server,
    expose_as_mcp_server_with,
};
use serde_json::json;

/// A model that answers with the user messages it was sent, so the answer shows the history.
fn echo(record: bool) -> Arc<ScriptedProvider> {
    let p = ScriptedProvider::echo();
    Arc::new(if record { p } else { p.without_recording() })
}

struct Client {
    manager: ConnectionManager,
    tools: McpAggregator,
}

impl Client {
    fn new(url: &str) -> Self {
        let manager = ConnectionManager::new([ServerConfig::http("agents", url)]);
        let tools = McpAggregator::new(manager.clone(), ["agents"]);
        Self { manager, tools }
    }

    async fn ask(&self, message: &str) -> String {
        let out = self
            .tools
            .call_tool(
                "agents__chat",
                json!({"message": message}),
                &RunContext::new(),
            )
            .await
            .unwrap();
        assert!(!out.is_error, "{out:?}");
        agentkit_core::message::join_text(&out.content)
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_never_see_each_others_messages() {
    let model = echo(true);
    let memory = Arc::new(InMemoryMemory::new());
    let agent: Arc<dyn AugmentedLlm> = Arc::new(
        AgentLlm::shared(Agent::new("chat", "Chat."), model.clone()).with_memory(memory.clone()),
    );
    let (url, _stop) = common::serve_http(expose_as_mcp_server("agents", [agent]).build()).await;
    let ana = Client::new(&url);
    let ben = Client::new(&url);

    assert_eq!(ana.ask("I am Ana").await, "I am Ana");
    assert_eq!(ben.ask("I am Ben").await, "I am Ben");
    assert_eq!(ana.ask("Who am I?").await, "I am Ana | Who am I?");
    assert_eq!(ben.ask("Who am I?").await, "I am Ben | Who am I?");

    // What the model received: Ben's requests hold nothing of Ana's and the reverse.
    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    for req in &requests {
        let text: String = req.messages.iter().map(Message::text).collect();
        assert!(
            !(text.contains("Ana") && text.contains("Ben")),
            "one request mixes two sessions: {text}"
        );
    }
    assert_eq!(memory.thread_count(), 2);

    // A session that ends is forgotten.
    ana.manager.shutdown().await;
    wait_until("the ended session's thread is dropped", || {
        memory.thread_count() == 1
    })
    .await;
    assert_eq!(
        ben.ask("Still me?").await,
        "I am Ben | Who am I? | Still me?"
    );
    ben.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_off_makes_every_call_independent() {
    let agent: Arc<dyn AugmentedLlm> =
        Arc::new(AgentLlm::shared(Agent::new("chat", "Chat."), echo(false)));
    let server = expose_as_mcp_server_with("agents", [agent], SessionHistory::Off).build();
    let (url, _stop) = common::serve_http(server).await;
    let client = Client::new(&url);
    assert_eq!(client.ask("one").await, "one");
    assert_eq!(client.ask("two").await, "two");
    // A wrong argument is a tool error that says what is wrong.
    let out = client
        .tools
        .call_tool("agents__chat", json!({"message": 5}), &RunContext::new())
        .await
        .unwrap();
    assert!(out.is_error);
    let text = agentkit_core::message::join_text(&out.content);
    assert!(
        text.contains("invalid arguments") && text.contains("string"),
        "{text}"
    );
    client.manager.shutdown().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// 10,000 calls of 2 KB messages, 500 per session over 20 sessions: memory does not grow
/// with the calls (each thread is bounded by its window and dropped when its session ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_flat_over_10_000_calls() {
    let memory = Arc::new(InMemoryMemory::new());
    // A model that answers briefly (the history still grows by the 2 KB question each call).
    let model = ScriptedProvider::from_fn(|req: &CompletionRequest| {
        Ok(CompletionResponse::new(
            Message::assistant(format!("seen {} messages", req.messages.len())),
            Usage::new(1, 1),
            StopReason::EndTurn,
            "brief",
        ))
    })
    .without_recording();
    let agent: Arc<dyn AugmentedLlm> =
        Arc::new(AgentLlm::new(Agent::new("chat", "Chat."), model).with_memory(memory.clone()));
    let (url, _stop) = common::serve_http(expose_as_mcp_server("agents", [agent]).build()).await;
    let message = "x".repeat(2_000);
    let mut warm = 0;
    for session in 0..20 {
        let client = Client::new(&url);
        for _ in 0..500 {
            client.ask(&message).await;
        }
        client.manager.shutdown().await;
        if session == 3 {
            warm = rss_kib();
        }
    }
    wait_until("every ended session's thread is dropped", || {
        memory.thread_count() == 0
    })
    .await;
    let end = rss_kib();
    eprintln!("RSS after 2,000 calls: {warm} KiB; after 10,000: {end} KiB");
    // Unbounded, the history alone would be 10,000 × 2 × 2 KB = 40 MB.
    assert!(
        end < warm + 8 * 1024,
        "RSS grew from {warm} KiB to {end} KiB over 8,000 calls"
    );
}
