//! `/mcp`: every agent is an MCP tool backed by a durable run, driven by the official Rust MCP
//! SDK (rmcp) over streamable HTTP, both lifecycles, with and without MCP Tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Agent, AgentLlm};
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    GetTaskParams, Implementation, ProtocolVersion, TaskPayload, TaskStatus,
};
use agentkit_mcp::rmcp::service::RunningService;
use agentkit_mcp::rmcp::transport::StreamableHttpClientTransport;
use agentkit_mcp::rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use serde_json::{Value, json};

const KEY: &str = "mcp-test-key";

struct Running {
    base: String,
    _dir: tempfile::TempDir,
    _served: inproc::InProcess,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let stuck = AgentLlm::new(Agent::new("stuck", "Think."), inproc::Stuck);
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), ModelFactory::offline());
    let server = inproc::echo_server(dir.path(), KEY)
        .await
        .agent_llm("stuck", Arc::new(stuck), "Never answers")
        .spec_builder(Arc::new(builder))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Running {
        base: served.base.clone(),
        _dir: dir,
        _served: served,
    }
}

type Client = RunningService<RoleClient, ClientConfig>;

fn transport(r: &Running, key: Option<&str>) -> StreamableHttpClientTransport<reqwest::Client> {
    inproc::mcp_transport(&r.base, key, &[])
}

async fn legacy(r: &Running) -> Client {
    ClientConfig::default()
        .serve(transport(r, Some(KEY)))
        .await
        .unwrap()
}

async fn modern_with_tasks(r: &Running) -> Client {
    ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("tasks-test", "0.0.0"),
    )
    .serve_with_lifecycle(
        transport(r, Some(KEY)),
        ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
    )
    .await
    .unwrap()
}

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn text(result: &agentkit_mcp::rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

async fn api(r: &Running, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", r.base))
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_tools_and_a_call_is_a_stored_run() {
    let r = start().await;

    // Without the key: refused, and the client is told authorization is required.
    let err = ClientConfig::default()
        .serve(transport(&r, None))
        .await
        .map(|_| ())
        .expect_err("no key, no session");
    assert!(err.is_authorization_required(), "{err:?}");
    let err = ClientConfig::default()
        .serve(transport(&r, Some("wrong")))
        .await
        .map(|_| ())
        .expect_err("wrong key, no session");
    assert!(err.is_authorization_required(), "{err:?}");

    let client = legacy(&r).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"echo") && names.contains(&"stuck"),
        "{names:?}"
    );
    let echo = tools.iter().find(|t| t.name == "echo").unwrap();
    assert!(echo.description.as_deref().unwrap().contains("Repeats"));
    assert_eq!(echo.input_schema["required"], json!(["message"]));

    let out = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"message": "hello over mcp"}))),
        )
        .await
        .unwrap();
    assert_ne!(out.is_error, Some(true), "{out:?}");
    assert!(text(&out).contains("hello over mcp"), "{out:?}");
    let meta = out.structured_content.clone().unwrap();
    assert_eq!(meta["status"], "succeeded");
    let run_id = meta["run_id"].as_str().unwrap().to_owned();
    // The call is a run of the platform, visible through the HTTP API.
    let run = api(
        &r,
        reqwest::Method::GET,
        &format!("/v1/runs/{run_id}"),
        None,
    )
    .await;
    assert_eq!(run["agent"], "echo");
    assert_eq!(run["status"], "succeeded");

    // Bad arguments and unknown versions: tool errors that say what to send.
    let out = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args(json!({"msg": "x"}))))
        .await
        .unwrap();
    assert_eq!(out.is_error, Some(true));
    assert!(text(&out).contains("message"), "{}", text(&out));
    let out = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"message": "x", "version": "no-such-label"}))),
        )
        .await
        .unwrap();
    assert_eq!(out.is_error, Some(true));
    assert!(text(&out).contains("no-such-label"), "{}", text(&out));

    // A conversation continues on a thread.
    let thread = api(&r, reqwest::Method::POST, "/threads", Some(json!({}))).await;
    let thread_id = thread["thread_id"].as_str().unwrap();
    for m in ["first", "second"] {
        let out = client
            .call_tool(
                CallToolRequestParams::new("echo")
                    .with_arguments(args(json!({"message": m, "thread_id": thread_id}))),
            )
            .await
            .unwrap();
        assert_ne!(out.is_error, Some(true), "{out:?}");
    }
    let runs = api(
        &r,
        reqwest::Method::GET,
        &format!("/threads/{thread_id}/runs"),
        None,
    )
    .await;
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");

    // An agent deployed through the API is a tool at once.
    let deployed = api(
        &r,
        reqwest::Method::POST,
        "/v1/agents",
        Some(json!({
            "name": "support",
            "kind": "agent",
            "spec": {"model": "scripted", "instructions": "Help.", "description": "Helps customers"},
        })),
    )
    .await;
    assert_eq!(deployed["version"], 1, "{deployed}");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "support"), "{tools:?}");
    let out = client
        .call_tool(
            CallToolRequestParams::new("support").with_arguments(args(json!({"message": "hi"}))),
        )
        .await
        .unwrap();
    assert_ne!(out.is_error, Some(true), "{out:?}");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_clients_get_runs_as_tasks_and_cancel_them() {
    let r = start().await;
    let client = modern_with_tasks(&r).await;

    let response = client
        .call_tool_once(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"message": "as a task"}))),
        )
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("a tasks client gets a task, got {response:?}");
    };
    let id = created.task.task_id.clone();
    let mut done = None;
    for _ in 0..400 {
        let task = client.get_task(GetTaskParams::new(&id)).await.unwrap().task;
        if task.status() == TaskStatus::Completed {
            done = Some(task);
            break;
        }
        assert!(!task.status().is_terminal(), "{:?}", task.payload);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let TaskPayload::Completed { result } = done.expect("the task completes").payload else {
        panic!("completed tasks carry the result");
    };
    assert!(
        result["structuredContent"]["text"]
            .as_str()
            .unwrap()
            .contains("as a task"),
        "{result:?}"
    );
    // The task id is the run id.
    let run = api(&r, reqwest::Method::GET, &format!("/v1/runs/{id}"), None).await;
    assert_eq!(run["status"], "succeeded");

    // tasks/cancel cancels the run, with the reason recorded.
    let response = client
        .call_tool_once(
            CallToolRequestParams::new("stuck").with_arguments(args(json!({"message": "think"}))),
        )
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("a tasks client gets a task, got {response:?}");
    };
    let id = created.task.task_id.clone();
    client
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .unwrap();
    let mut status = TaskStatus::Working;
    for _ in 0..400 {
        status = client
            .get_task(GetTaskParams::new(&id))
            .await
            .unwrap()
            .task
            .status();
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, TaskStatus::Cancelled);
    let run = api(&r, reqwest::Method::GET, &format!("/v1/runs/{id}"), None).await;
    assert_eq!(run["status"], "cancelled");
    assert!(
        run["error"].as_str().unwrap().contains("MCP client"),
        "{run}"
    );
    // Someone else's (unknown) task id: an error, not a crash.
    let err = client
        .get_task(GetTaskParams::new("00000000-0000-0000-0000-000000000000"))
        .await;
    assert!(err.is_err());
    client.cancel().await.unwrap();
}
