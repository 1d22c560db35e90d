//! Durable workflows of `agentkit-runtime` exposed as MCP tools by `agentkit-mcp`
//! (`workflows-list`, `workflows-<name>-run`, `workflows-get_status`, `workflows-resume`,
//! `workflows-cancel`), served over streamable HTTP and called by agentkit's MCP client; and the
//! same runs as MCP Tasks (SEP-2663), driven by a raw rmcp client over a SQLite runtime.
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

// ---- MCP Tasks (SEP-2663) -------------------------------------------------------------------

use agentkit::mcp::McpServer;
use agentkit::mcp::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, DetailedTask, GetTaskParams, Implementation, InputRequest, ProtocolVersion,
    TaskPayload, TaskStatus, UpdateTaskParams,
};
use agentkit::mcp::rmcp::service::RunningService;
use agentkit::mcp::rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient};
use agentkit::runtime::{RunStatus, SqliteStore};

type Client = RunningService<RoleClient, ClientConfig>;

fn tasks_client() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("tasks-test", "0.0.0"),
    )
}

async fn sqlite_runtime(path: &std::path::Path) -> Runtime {
    let runtime = Runtime::new(Arc::new(SqliteStore::open(path).await.unwrap()));
    runtime.register_workflow(Fulfil, TargetOptions::new());
    runtime
}

async fn workflow_server(runtime: &Runtime) -> McpServer {
    let host: Arc<dyn WorkflowHost> = Arc::new(runtime.clone());
    expose_workflows(McpServerBuilder::new("workflows", "1.0.0"), host)
        .await
        .unwrap()
        .build()
}

/// Serve `server` over an in-process pipe and connect `config` to it with `lifecycle`.
async fn connect(
    server: McpServer,
    config: ClientConfig,
    lifecycle: ClientLifecycleMode,
) -> Client {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = server.serve(server_io).await.unwrap();
        let _ = running.waiting().await;
    });
    config
        .serve_with_lifecycle(client_io, lifecycle)
        .await
        .unwrap()
}

async fn start_task(client: &Client, order: u32) -> String {
    let args = json!({"input": {"id": order}});
    let response = client
        .call_tool_once(
            CallToolRequestParams::new("workflows-fulfil-run")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("a client with the tasks extension gets a task, got {response:?}");
    };
    // The run may already wait for its approval by the time the task is reported.
    assert!(
        matches!(
            created.task.status,
            TaskStatus::Working | TaskStatus::InputRequired
        ),
        "{:?}",
        created.task.status
    );
    assert!(created.task.poll_interval_ms.is_some());
    created.task.task_id
}

async fn get_task(client: &Client, id: &str) -> DetailedTask {
    client.get_task(GetTaskParams::new(id)).await.unwrap().task
}

/// Poll `tasks/get` until the task has `want`; returns it and every status seen on the way.
async fn task_until(
    client: &Client,
    id: &str,
    want: TaskStatus,
) -> (DetailedTask, Vec<TaskStatus>) {
    let mut seen = Vec::new();
    for _ in 0..400 {
        let task = get_task(client, id).await;
        if seen.last() != Some(&task.status()) {
            seen.push(task.status());
        }
        if task.status() == want {
            return (task, seen);
        }
        assert!(
            !task.status().is_terminal(),
            "task {id} ended as {:?}",
            task.payload
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("task {id} never reached {want:?}; saw {seen:?}");
}

fn completed_result(task: DetailedTask) -> CallToolResult {
    let TaskPayload::Completed { result } = task.payload else {
        panic!("completed task expected, got {:?}", task.payload);
    };
    serde_json::from_value(Value::Object(result)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_runs_are_mcp_tasks_that_complete_cancel_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let runtime = sqlite_runtime(&db).await;
    let server = workflow_server(&runtime).await;
    let client = connect(server, tasks_client(), ClientLifecycleMode::Initialize).await;
    let info = client.peer_info().unwrap();
    assert!(
        info.capabilities.supports_tasks(),
        "the tasks extension is advertised"
    );

    // A run started as a task: the task id is the run id; it works, then waits for a signal.
    let task_id = start_task(&client, 7).await;
    assert_eq!(runtime.status(&task_id).await.unwrap().workflow, "fulfil");
    let (waiting, seen) = task_until(&client, &task_id, TaskStatus::InputRequired).await;
    assert!(
        seen.iter()
            .all(|s| matches!(s, TaskStatus::Working | TaskStatus::InputRequired)),
        "{seen:?}"
    );
    let TaskPayload::InputRequired { input_requests } = waiting.payload else {
        unreachable!()
    };
    let (key, request) = input_requests.into_iter().next().unwrap();
    assert!(key.starts_with("agentkit/signal"), "{key}");
    assert!(matches!(request, InputRequest::Elicitation(_)));

    // Answering the input request delivers the signal; the task completes with the run's output.
    let mut answers = agentkit::mcp::rmcp::model::InputResponses::new();
    answers.insert(
        key,
        json!({"action": "accept", "content": {"signal": "approve", "payload": "{\"by\": \"ana\"}"}}),
    );
    client
        .update_task(UpdateTaskParams::new(task_id.clone(), answers))
        .await
        .unwrap();
    let (done, _) = task_until(&client, &task_id, TaskStatus::Completed).await;
    let output = json!({"order": 7, "slot": "slot-7", "approved_by": "ana"});
    let result = completed_result(done);
    assert_eq!(result.structured_content, Some(output.clone()));
    assert_eq!(
        runtime.status(&task_id).await.unwrap().output,
        Some(output.clone())
    );

    // Another task is cancelled: the run is cancelled in the store.
    let doomed = start_task(&client, 8).await;
    task_until(&client, &doomed, TaskStatus::InputRequired).await;
    client
        .cancel_task(CancelTaskParams::new(doomed.clone()))
        .await
        .unwrap();
    task_until(&client, &doomed, TaskStatus::Cancelled).await;
    assert_eq!(
        runtime.status(&doomed).await.unwrap().status,
        RunStatus::Cancelled
    );
    // The task's timestamps are the run's: creation stays put across polls.
    let (first, again) = (
        get_task(&client, &task_id).await,
        get_task(&client, &task_id).await,
    );
    assert_eq!(first.task.created_at, again.task.created_at);
    assert!(first.task.created_at <= first.task.last_updated_at);
    // Cancelling a finished task is acknowledged and changes nothing.
    client
        .cancel_task(CancelTaskParams::new(task_id.clone()))
        .await
        .unwrap();
    assert_eq!(
        get_task(&client, &task_id).await.status(),
        TaskStatus::Completed
    );

    // An unknown task id is an error that says what ids are.
    let err = client
        .get_task(GetTaskParams::new("no-such-run"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("run ids"), "{err}");

    // A client without the extension still gets the run id from the same tool.
    let plain = connect(
        workflow_server(&runtime).await,
        ClientConfig::default(),
        ClientLifecycleMode::Initialize,
    )
    .await;
    let out = plain
        .call_tool(
            CallToolRequestParams::new("workflows-fulfil-run")
                .with_arguments(json!({"input": {"id": 9}}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert!(out.structured_content.unwrap()["run_id"].is_string());
    plain.cancel().await.unwrap();

    // Restart: a new runtime and server over the same SQLite file still know both tasks
    // (the 2026-07-28 lifecycle this time: capabilities travel in each request's _meta).
    client.cancel().await.unwrap();
    let restarted = sqlite_runtime(&db).await;
    let modern = connect(
        workflow_server(&restarted).await,
        tasks_client(),
        ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
    )
    .await;
    assert_eq!(
        modern.peer_info().unwrap().protocol_version,
        ProtocolVersion::V_2026_07_28
    );
    assert_eq!(
        completed_result(get_task(&modern, &task_id).await).structured_content,
        Some(output)
    );
    assert_eq!(
        get_task(&modern, &doomed).await.status(),
        TaskStatus::Cancelled
    );
    modern.cancel().await.unwrap();
}
