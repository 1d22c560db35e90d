//! `/mcp` federating an MCP server that runs in the server's own process
//! (`ServerConfig::in_process`): its tools are listed and called as `server__tool` under the
//! gateway policy, a plain 2026-07-28 `tools/call` is answered with JSON (no SSE stream)
//! while an agent's run reporting progress is answered with SSE, and a stopped upstream is
//! a tool error naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::Policy;
use agentkit_core::{Agent, AgentLlm, FnTool, ScriptedProvider};
use agentkit_mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use agentkit_mcp::{ConnectionManager, InProcessServer, McpServerBuilder, ServerConfig};
use agentkit_runtime::{MemoryStore, Store};
use agentkit_server::Server;
use agentkit_server::gatewayops::GatewayConfig;
use serde_json::{Value, json};

const ADMIN: &str = "test-key";

/// `echo` and `delete_all` (denied by the gateway policy).
fn upstream() -> InProcessServer {
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
        .tool_fn(
            "delete_all",
            "Deletes everything",
            json!({"type": "object"}),
            |_, _| async move { Ok(CallToolResult::success(vec![ContentBlock::text("deleted")])) },
        )
        .build()
        .into()
}

async fn start(up: InProcessServer) -> inproc::InProcess {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let policy = Policy::compile(
        "gateway",
        &PolicySpec::new().with_denied_tools(["*__delete_*"]),
    )
    .unwrap();
    // `waiter`: a tool call that takes 600 ms (the run reports its steps meanwhile), then
    // "done".
    let wait = FnTool::new("wait", "Waits", |_: Value| async move {
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        Ok::<_, String>("waited")
    });
    let model = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("wait", json!({}))
            .then_text("done")
            .then_tool_call("wait", json!({}))
            .then_text("done"),
    );
    let agent = AgentLlm::shared(Agent::new("waiter", "Wait.").with_tool(wait), model)
        .with_memory(Server::memory_for(Arc::clone(&store)));
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .agent_llm("waiter", Arc::new(agent), "Waits")
        .poll_interval(std::time::Duration::from_millis(50))
        .mcp_servers(ConnectionManager::new([ServerConfig::in_process("up", up)]))
        .gateway(GatewayConfig::new().with_policy(policy))
        .build()
        .await
        .unwrap();
    inproc::serve(server).await
}

/// A stateless 2026-07-28 POST to `/mcp`: the status, the content type and the JSON-RPC
/// messages of the answer (one for a JSON answer, every `data:` line of an SSE one).
async fn post(base: &str, id: u64, method: &str, params: Value) -> (u16, String, Vec<Value>) {
    send(base, id, method, params, None).await
}

/// A `tools/call` like [`post`], asking for progress with `token`.
async fn post_with_progress(
    base: &str,
    id: u64,
    params: Value,
    token: &str,
) -> (u16, String, Vec<Value>) {
    send(base, id, "tools/call", params, Some(token)).await
}

async fn send(
    base: &str,
    id: u64,
    method: &str,
    params: Value,
    progress: Option<&str>,
) -> (u16, String, Vec<Value>) {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    if let Some(token) = progress {
        params["_meta"]["progressToken"] = json!(token);
    }
    let mut req = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = params["name"].as_str() {
        req = req.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    let res = req.body(body.to_string()).send().await.unwrap();
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = res.text().await.unwrap();
    let messages = if kind.starts_with("text/event-stream") {
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d.trim()).unwrap())
            .collect()
    } else {
        vec![serde_json::from_str(&text).unwrap_or(Value::String(text))]
    };
    (status, kind, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_server_is_federated_with_json_answers() {
    let served = start(upstream()).await;
    let base = &served.base;

    // The agent is served once the endpoint has synced with the registry.
    let mut names: Vec<String> = Vec::new();
    for _ in 0..100 {
        let (status, kind, m) = post(base, 1, "tools/list", json!({})).await;
        assert_eq!(status, 200, "{m:?}");
        assert!(kind.starts_with("application/json"), "{kind}");
        names = m[0]["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        if names.iter().any(|n| n == "waiter") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        names.iter().any(|n| n == "up__echo") && names.iter().any(|n| n == "waiter"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "up__delete_all"),
        "the policy denies it: {names:?}"
    );

    let (status, kind, m) = post(
        base,
        2,
        "tools/call",
        json!({"name": "up__echo", "arguments": {"text": "hi"}}),
    )
    .await;
    assert_eq!(status, 200, "{m:?}");
    assert!(kind.starts_with("application/json"), "{kind}: {m:?}");
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["id"], 2);
    assert_eq!(m[0]["result"]["isError"], false, "{m:?}");
    assert_eq!(m[0]["result"]["content"][0]["text"], "hi");

    let (_, _, m) = post(
        base,
        3,
        "tools/call",
        json!({"name": "up__delete_all", "arguments": {}}),
    )
    .await;
    assert_eq!(m[0]["result"]["isError"], true, "{m:?}");

    // An agent's run reports its steps as progress to a client that asks: that answer is an
    // SSE stream (the progress, then the result); without a progress token it is JSON.
    let (status, kind, m) = post(
        base,
        4,
        "tools/call",
        json!({"name": "waiter", "arguments": {"message": "go"}}),
    )
    .await;
    assert_eq!(status, 200, "{m:?}");
    assert!(kind.starts_with("application/json"), "{kind}: {m:?}");
    assert_eq!(m[0]["result"]["content"][0]["text"], "done", "{m:?}");
    let (status, kind, m) = post_with_progress(
        base,
        5,
        json!({"name": "waiter", "arguments": {"message": "go"}}),
        "p-1",
    )
    .await;
    assert_eq!(status, 200, "{m:?}");
    assert!(kind.starts_with("text/event-stream"), "{kind}: {m:?}");
    assert!(
        m.iter().any(|v| v["method"] == "notifications/progress"),
        "{m:?}"
    );
    let last = m.last().unwrap();
    assert_eq!(last["id"], 5);
    assert_eq!(last["result"]["content"][0]["text"], "done", "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_in_process_server_is_a_tool_error_naming_it() {
    let up = upstream();
    let served = start(up.clone()).await;
    let client = inproc::mcp_session(&served.base, ADMIN, &[]).await;
    let call = |text: &str| {
        CallToolRequestParams::new("up__echo")
            .with_arguments(json!({"text": text}).as_object().unwrap().clone())
    };
    let r = client.call_tool(call("before")).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");

    up.stop();
    // The first call may still find the connection open (it fails as closed); the next one
    // cannot reconnect and says why.
    let mut text = String::new();
    for _ in 0..2 {
        let r = client.call_tool(call("after")).await.unwrap();
        assert_eq!(r.is_error, Some(true), "{r:?}");
        text = r
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect();
        assert!(text.contains("`up`"), "{text}");
    }
    assert!(text.contains("stopped"), "{text}");
    client.cancel().await.unwrap();
}
