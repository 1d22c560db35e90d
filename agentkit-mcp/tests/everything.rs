//! agentkit-mcp against the official `@modelcontextprotocol/server-everything`, over stdio and
//! over streamable HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{
    CollectingSink, HumanInputHandler, HumanInputRequest, HumanInputResponse, RunContext, RunEvent,
    ScriptedProvider, ToolSource,
};
use agentkit_mcp::{ConnectionManager, McpAggregator, ServerConfig};
use async_trait::async_trait;
use serde_json::json;

fn obj(v: serde_json::Value) -> agentkit_mcp::rmcp::model::JsonObject {
    v.as_object().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_list_call_prompts_resources_and_clean_shutdown() {
    let manager = ConnectionManager::new([common::everything_stdio("everything")]);
    let tools = McpAggregator::new(manager.clone(), ["everything"]);
    let ctx = RunContext::new();

    let specs = tools.list_tools().await.unwrap();
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"everything__echo"), "{names:?}");
    assert!(names.contains(&"everything__get-sum"), "{names:?}");
    assert!(names.iter().all(|n| n.len() <= 64));

    let out = tools
        .call_tool("everything__echo", json!({"message": "hi"}), &ctx)
        .await
        .unwrap();
    assert_eq!(out.text_content(), "Echo: hi");
    // Unprefixed lookup works when only one server has the tool.
    let out = tools
        .call_tool("get-sum", json!({"a": 2, "b": 3}), &ctx)
        .await
        .unwrap();
    assert!(out.text_content().contains('5'), "{}", out.text_content());
    assert!(!out.is_error);

    // Bad arguments: the tool ran and failed, the model can read why.
    let bad = tools
        .call_tool("everything__get-sum", json!({"a": "x"}), &ctx)
        .await
        .unwrap();
    assert!(bad.is_error);
    // Unknown tool: the call could not be made.
    let err = tools.call_tool("nope", json!({}), &ctx).await.unwrap_err();
    assert!(err.to_string().contains("everything__echo"), "{err}");

    let prompts = tools.list_prompts().await.unwrap();
    assert!(
        prompts["everything"]
            .iter()
            .any(|p| p.name == "simple-prompt")
    );
    let prompt = tools
        .get_prompt("everything", "simple-prompt", Default::default())
        .await
        .unwrap();
    assert!(!prompt.messages.is_empty());

    let resources = tools.list_resources().await.unwrap();
    let first = resources["everything"].first().expect("resources");
    let read = tools.read_resource("everything", &first.uri).await.unwrap();
    assert!(!read.contents.is_empty());

    let pid = manager
        .existing_connection("everything")
        .unwrap()
        .process_id()
        .unwrap();
    assert!(common::alive(pid));
    manager.shutdown().await;
    common::assert_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notifications_become_run_events() {
    let manager = ConnectionManager::new([common::everything_stdio("everything")]);
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = manager
        .call_tool(
            "everything",
            "trigger-long-running-operation",
            obj(json!({"duration": 0.6, "steps": 3})),
            &ctx,
        )
        .await
        .unwrap();
    assert!(out.is_error != Some(true));
    let progress: Vec<(f64, Option<f64>)> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::Progress {
                progress, total, ..
            } => Some((progress, total)),
            _ => None,
        })
        .collect();
    assert_eq!(
        progress,
        vec![(1.0, Some(3.0)), (2.0, Some(3.0)), (3.0, Some(3.0))]
    );
    let pid = manager
        .existing_connection("everything")
        .unwrap()
        .process_id()
        .unwrap();
    manager.shutdown().await;
    common::assert_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_run_cancels_the_mcp_request() {
    let manager = ConnectionManager::new([common::everything_stdio("everything")]);
    let ctx = RunContext::new();
    let c2 = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c2.cancel();
    });
    let started = std::time::Instant::now();
    let err = manager
        .call_tool(
            "everything",
            "trigger-long-running-operation",
            obj(json!({"duration": 10, "steps": 10})),
            &ctx,
        )
        .await
        .unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The connection stays usable.
    let ok = manager
        .call_tool(
            "everything",
            "echo",
            obj(json!({"message": "still here"})),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        agentkit_mcp::to_tool_output(ok).text_content(),
        "Echo: still here"
    );
    manager.shutdown().await;
}

struct Human;

#[async_trait]
impl HumanInputHandler for Human {
    async fn ask(
        &self,
        request: HumanInputRequest,
        _ctx: &RunContext,
    ) -> agentkit_core::Result<HumanInputResponse> {
        assert!(request.schema.is_some(), "elicitation carries its schema");
        Ok(HumanInputResponse::Answer {
            text: String::new(),
            data: Some(
                json!({"name": "Ada Lovelace", "check": true, "email": "ada@example.com", "integer": 7}),
            ),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_uses_the_provider_and_elicitation_the_runs_human() {
    let model = ScriptedProvider::new().then_text("a sampled haiku");
    let manager =
        ConnectionManager::builder([common::everything_stdio("everything")
            .with_root("file:///workspace", Some("ws".into()))])
        .with_sampling(Arc::new(model))
        .build();
    // Sampling, elicitation and roots tools are registered once the server has seen our
    // capabilities; wait until they show up.
    let conn = manager.connection("everything").await.unwrap();
    for _ in 0..50 {
        let tools = conn.list_tools().await.unwrap();
        if tools.iter().any(|t| t.name == "trigger-sampling-request") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new()
        .with_events(sink.clone())
        .with_human_input(Arc::new(Human));

    let sampled = manager
        .call_tool(
            "everything",
            "trigger-sampling-request",
            obj(json!({"prompt": "write a haiku", "maxTokens": 50})),
            &ctx,
        )
        .await
        .unwrap();
    let text = agentkit_mcp::to_tool_output(sampled).text_content();
    assert!(text.contains("a sampled haiku"), "{text}");

    let elicited = manager
        .call_tool(
            "everything",
            "trigger-elicitation-request",
            obj(json!({})),
            &ctx,
        )
        .await
        .unwrap();
    let text = agentkit_mcp::to_tool_output(elicited).text_content();
    assert!(text.contains("Ada Lovelace"), "{text}");
    assert!(
        sink.events()
            .iter()
            .any(|e| matches!(e, RunEvent::HumanInputRequested { .. }))
    );

    let roots = manager
        .call_tool("everything", "get-roots-list", obj(json!({})), &ctx)
        .await
        .unwrap();
    let text = agentkit_mcp::to_tool_output(roots).text_content();
    assert!(text.contains("file:///workspace"), "{text}");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_stdio_server_is_restarted_on_the_next_call() {
    let manager = ConnectionManager::new([common::everything_stdio("everything")]);
    let ctx = RunContext::new();
    let conn = manager.connection("everything").await.unwrap();
    let pid = conn.process_id().unwrap();
    drop(conn);

    // Kill the server while a call is in flight: that call fails naming the server.
    let m2 = manager.clone();
    let inflight = tokio::spawn(async move {
        m2.call_tool(
            "everything",
            "trigger-long-running-operation",
            obj(json!({"duration": 5, "steps": 5})),
            &RunContext::new(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let err = inflight.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("`everything`"), "{err}");
    common::assert_gone(pid).await;

    // The next call works on a new process.
    let out = manager
        .call_tool("everything", "echo", obj(json!({"message": "back"})), &ctx)
        .await
        .unwrap();
    assert_eq!(
        agentkit_mcp::to_tool_output(out).text_content(),
        "Echo: back"
    );
    assert_eq!(manager.connect_count("everything").unwrap(), 2);
    let new_pid = manager
        .existing_connection("everything")
        .unwrap()
        .process_id()
        .unwrap();
    assert_ne!(new_pid, pid);
    manager.shutdown().await;
    common::assert_gone(new_pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_list_call_and_recover_after_server_restart() {
    let port = common::free_port();
    let peer = common::HttpPeer::start(port).await;
    let manager = ConnectionManager::new([ServerConfig::http("everything", peer.url.clone())]);
    let tools = McpAggregator::new(manager.clone(), ["everything"]);
    let ctx = RunContext::new();

    let specs = tools.list_tools().await.unwrap();
    assert!(specs.iter().any(|s| s.name == "everything__echo"));
    let out = tools
        .call_tool("everything__echo", json!({"message": "over http"}), &ctx)
        .await
        .unwrap();
    assert_eq!(out.text_content(), "Echo: over http");
    let sum = tools
        .call_tool("everything__get-sum", json!({"a": 40, "b": 2}), &ctx)
        .await
        .unwrap();
    assert!(sum.text_content().contains("42"));

    // The server goes away (its session with it) and comes back.
    peer.stop().await;
    let down = tools
        .call_tool("everything__echo", json!({"message": "x"}), &ctx)
        .await;
    assert!(down.is_err());
    assert!(down.unwrap_err().to_string().contains("everything"));
    let peer = common::HttpPeer::start(port).await;
    let mut last = None;
    for _ in 0..20 {
        match tools
            .call_tool("everything__echo", json!({"message": "again"}), &ctx)
            .await
        {
            Ok(out) => {
                last = Some(out.text_content());
                break;
            }
            Err(e) => {
                last = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    assert_eq!(last.as_deref(), Some("Echo: again"));
    manager.shutdown().await;
    peer.stop().await;
}
