//! agentkit-mcp against the official `@modelcontextprotocol/server-filesystem` over stdio,
//! configured the way Claude Desktop's `mcpServers` JSON does it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agentkit_core::{RunContext, ToolSource};
use agentkit_mcp::{ConnectionManager, McpAggregator, ServerSet};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_file_through_the_aggregator_with_a_tool_filter() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "the answer is 42\n").unwrap();
    let config = json!({
        "mcpServers": {
            "fs": {
                "command": common::node(),
                "args": [common::filesystem_js(), dir.path()],
                "denied_tools": ["write_file"]
            }
        }
    });
    let set = ServerSet::from_mcp_servers_json(&config.to_string()).unwrap();
    let manager = ConnectionManager::from_set(&set);
    let tools = McpAggregator::all(manager.clone());

    let names: Vec<String> = tools
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(
        names.contains(&"fs__read_text_file".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"fs__write_file".to_owned()),
        "denied tool offered: {names:?}"
    );

    let path = dir.path().join("notes.txt");
    let out = tools
        .call_tool(
            "fs__read_text_file",
            json!({"path": path}),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert!(
        out.text_content().contains("the answer is 42"),
        "{}",
        out.text_content()
    );
    // Outside the allowed directory: the tool runs and reports the error.
    let denied = tools
        .call_tool(
            "fs__read_text_file",
            json!({"path": "/etc/hostname"}),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert!(denied.is_error, "{}", denied.text_content());

    let pid = manager
        .existing_connection("fs")
        .unwrap()
        .process_id()
        .unwrap();
    manager.shutdown().await;
    common::assert_gone(pid).await;
}
