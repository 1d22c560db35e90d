//! Durable workflows of `agentkit-runtime` exposed as MCP tools by `agentkit-mcp`
//! (`workflows-list`, `workflows-<name>-run`, `workflows-get_status`, `workflows-resume`,
//! `workflows-cancel`), served over streamable HTTP and called by agentkit's MCP client.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use agentkit::core::{RunContext, ToolSource, WorkflowHost};
use agentkit::mcp::{
    ConnectionManager, HttpOptions, McpAggregator, McpServerBuilder, ServerConfig, expose_workflows,
};
use agentkit::runtime::{MemoryStore, Runtime, TargetOptions, Workflow, WorkflowContext};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize, JsonSchema)]
struct Order {
    id: u32,
}

/// Reserves, waits for the `approve` signal, ships.
struct Fulfil;

#[async_trait]
impl Workflow for Fulfil {
    type Input = Order;
    type Output = Value;
    fn name(&self) -> &str {
        "fulfil"
    }
    fn description(&self) -> &str {
        "Reserve, wait for approval, ship"
    }
    async fn run(&self, ctx: &WorkflowContext, order: Order) -> agentkit::core::Result<Value> {
        let slot: String = ctx
            .step("reserve", async { Ok("slot-7".to_owned()) })
            .await?;
        let approval: Value = ctx.wait_for_signal("approve").await?;
        Ok(json!({"order": order.id, "slot": slot, "approved_by": approval["by"]}))
    }
}

async fn call(tools: &McpAggregator, name: &str, args: Value) -> Value {
    let out = tools
        .call_tool(name, args, &RunContext::new())
        .await
        .unwrap();
    assert!(!out.is_error, "{name}: {}", out.text_content());
    serde_json::from_str(&out.text_content()).unwrap()
}

async fn status_until(tools: &McpAggregator, run_id: &str, want: &str) -> Value {
    for _ in 0..200 {
        let s = call(tools, "wf__workflows-get_status", json!({"run_id": run_id})).await;
        if s["status"] == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {run_id} never reached {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_started_observed_resumed_and_cancelled_over_mcp() {
    let runtime = Runtime::new(Arc::new(MemoryStore::new()));
    runtime.register_workflow(Fulfil, TargetOptions::new());
    let host: Arc<dyn WorkflowHost> = Arc::new(runtime.clone());
    let server = expose_workflows(McpServerBuilder::new("workflows", "1.0.0"), host)
        .await
        .unwrap()
        .build();

    let ct = CancellationToken::new();
    let svc = server.into_http_service(HttpOptions::new().with_cancellation(ct.child_token()));
    let app = axum::Router::new().nest_service("/mcp", svc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let stop = ct.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });

    let client = ConnectionManager::new([ServerConfig::http("wf", url)]);
    let tools = McpAggregator::new(client.clone(), ["wf"]);

    let list = call(&tools, "wf__workflows-list", json!({})).await;
    assert_eq!(list["workflows"][0]["name"], "fulfil");
    let run_tool = tools
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "wf__workflows-fulfil-run")
        .expect("a run tool per workflow");
    assert_eq!(run_tool.input_schema["required"], json!(["input"]));

    // Start: the run id comes back at once; the run persists as waiting for its signal.
    let started = call(
        &tools,
        "wf__workflows-fulfil-run",
        json!({"input": {"id": 42}}),
    )
    .await;
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    status_until(&tools, &run_id, "waiting_input").await;

    // Resume with the signal: the run finishes with the signal's payload in its output.
    call(
        &tools,
        "wf__workflows-resume",
        json!({"run_id": run_id, "signal": "approve", "payload": {"by": "ana"}}),
    )
    .await;
    let done = status_until(&tools, &run_id, "succeeded").await;
    assert_eq!(
        done["output"],
        json!({"order": 42, "slot": "slot-7", "approved_by": "ana"})
    );

    // The same idempotency key gives the same run.
    let a = call(
        &tools,
        "wf__workflows-fulfil-run",
        json!({"input": {"id": 1}, "idempotency_key": "k1"}),
    )
    .await;
    let b = call(
        &tools,
        "wf__workflows-fulfil-run",
        json!({"input": {"id": 1}, "idempotency_key": "k1"}),
    )
    .await;
    assert_eq!(a["run_id"], b["run_id"]);

    // Cancel a waiting run.
    let other = a["run_id"].as_str().unwrap().to_owned();
    status_until(&tools, &other, "waiting_input").await;
    call(&tools, "wf__workflows-cancel", json!({"run_id": other})).await;
    status_until(&tools, &other, "cancelled").await;

    // Bad input is a tool error the caller can read, and starts nothing.
    let bad = tools
        .call_tool(
            "wf__workflows-fulfil-run",
            json!({"input": {"id": "x"}}),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert!(bad.is_error, "{}", bad.text_content());

    client.shutdown().await;
    ct.cancel();
}
