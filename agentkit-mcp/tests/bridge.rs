//! The stdio→streamable-HTTP bridge, against the official `server-everything` over stdio,
//! called over HTTP with agentkit's own client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agentkit_core::{RunContext, ToolSource};
use agentkit_mcp::bridge::bridge_server;
use agentkit_mcp::{ConnectionManager, McpAggregator, ServerConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_is_served_over_streamable_http() {
    let stdio = ConnectionManager::new([common::everything_stdio("everything")]);
    let server = bridge_server(&stdio, "everything").await.unwrap().build();
    let mirrored = server.tool_names();
    assert!(mirrored.iter().any(|t| t == "echo"), "{mirrored:?}");

    let (url, ct) = common::serve_http(server).await;

    // A client on the HTTP side sees the same tools and gets real answers from the child.
    let http = ConnectionManager::new([ServerConfig::http("bridged", url)]);
    let tools = McpAggregator::new(http.clone(), ["bridged"]);
    let listed: Vec<String> = tools
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(listed.len(), mirrored.len(), "{listed:?}");
    let out = tools
        .call_tool(
            "bridged__echo",
            json!({"message": "through the bridge"}),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert!(!out.is_error);
    assert!(
        out.text_content().contains("through the bridge"),
        "{}",
        out.text_content()
    );
    let sum = tools
        .call_tool(
            "bridged__get-sum",
            json!({"a": 2, "b": 40}),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert!(sum.text_content().contains("42"), "{}", sum.text_content());

    // Resources and prompts are mirrored too.
    let resources = tools.list_resources().await.unwrap();
    let first = resources["bridged"].first().expect("mirrored resources");
    let read = tools.read_resource("bridged", &first.uri).await.unwrap();
    assert!(!read.contents.is_empty());
    let prompts = tools.list_prompts().await.unwrap();
    assert!(prompts["bridged"].iter().any(|p| p.name == "simple-prompt"));

    let pid = stdio
        .existing_connection("everything")
        .unwrap()
        .process_id()
        .unwrap();
    http.shutdown().await;
    ct.cancel();
    stdio.shutdown().await;
    common::assert_gone(pid).await;
}
