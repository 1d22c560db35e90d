//! `GET /v1/metrics/realtime` over real HTTP: what an operator's console polls while runs,
//! tool calls and streams go through the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Agent, AgentLlm, FnTool, ScriptedProvider};
use agentkit_runtime::{MemoryStore, Store};
use agentkit_server::Server;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

const ADMIN: &str = "realtime-admin-key";

#[derive(Deserialize, JsonSchema)]
struct Path {
    path: String,
}

async fn get(base: &str, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Open a run's SSE event stream; it stays open until the run ends.
async fn follow(base: &str, key: &str, run_id: &str) -> reqwest::Response {
    let res = reqwest::Client::new()
        .get(format!("{base}/v1/runs/{run_id}/events"))
        .header("x-api-key", key)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_shows_open_streams_rates_latency_and_top_tools() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // The tool takes a while, so the run (and the streams that follow it) stay open.
    let reader = AgentLlm::new(
        Agent::new("reader", "Read files.").with_tool(FnTool::new(
            "fs__read_file",
            "Read a file",
            |p: Path| async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok::<_, std::convert::Infallible>(format!("contents of {}", p.path))
            },
        )),
        ScriptedProvider::new()
            .with_model("gpt-4o")
            .then_tool_call("fs__read_file", json!({"path": "/notes.md"}))
            .then_text("The notes say hello."),
    );
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .agent_llm("reader", Arc::new(reader), "Reads files")
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();

    // Like /metrics: a key is needed, and an admin's.
    let (status, _) = get(&base, None, "/v1/metrics/realtime").await;
    assert_eq!(status, 401);
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/keys"))
        .header("x-api-key", ADMIN)
        .json(&json!({"name": "console", "role": "viewer", "workspace": "default/default"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let viewer = res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = get(&base, Some(&viewer), "/v1/metrics/realtime").await;
    assert_eq!(status, 403, "{body}");

    // Some traffic: a 404, and a run followed by two streams (one per caller).
    let (status, _) = get(&base, Some(ADMIN), "/v1/runs/no-such-run").await;
    assert_eq!(status, 404);
    let run: Value = reqwest::Client::new()
        .post(format!("{base}/v1/agents/reader/runs"))
        .header("x-api-key", ADMIN)
        .json(&json!({"message": "go"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let admin_stream = follow(&base, ADMIN, &run_id).await;
    let viewer_stream = follow(&base, &viewer, &run_id).await;

    let (status, live) = get(&base, Some(ADMIN), "/v1/metrics/realtime").await;
    assert_eq!(status, 200, "{live}");
    // The two streams and this request itself.
    assert_eq!(live["active_connections"]["total"], 3, "{live}");
    assert_eq!(
        live["active_connections"]["by_platform"]["admin"], 2,
        "{live}"
    );
    assert_eq!(
        live["active_connections"]["by_platform"]["default/default"], 1,
        "{live}"
    );

    // The streams end with the run.
    for stream in [admin_stream, viewer_stream] {
        let mut body = stream.bytes_stream();
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    }
    let (_, done) = get(&base, Some(ADMIN), &format!("/v1/runs/{run_id}")).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    let (status, snap) = get(&base, Some(ADMIN), "/v1/metrics/realtime").await;
    assert_eq!(status, 200);
    assert_eq!(
        snap["active_connections"]["total"], 1,
        "only this request: {snap}"
    );
    assert_eq!(
        snap["active_connections"]["by_platform"],
        json!({"admin": 1}),
        "{snap}"
    );
    let window = snap["window_seconds"].as_f64().unwrap();
    assert!((1.0..=60.0).contains(&window), "{snap}");
    // 401, 201, 403, 404, 201 (run), 2 streams, 1 realtime, run status = 9 answered before.
    let rps = snap["requests_per_second"].as_f64().unwrap();
    assert!(
        (rps * window - 9.0).abs() < 0.5,
        "9 requests over {window} s: {snap}"
    );
    assert_eq!(
        snap["error_rate"], 0.0,
        "4xx are the callers' errors: {snap}"
    );
    let (p50, p99) = (
        snap["latency_ms"]["p50"].as_f64().unwrap(),
        snap["latency_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p99 >= p50, "{snap}");
    let per_minute = snap["tool_calls_per_minute"].as_f64().unwrap();
    assert!(
        (per_minute * window / 60.0 - 1.0).abs() < 1e-9,
        "one tool call in the window: {snap}"
    );
    assert_eq!(
        snap["top_tools"],
        json!([{"name": "fs__read_file", "calls": 1, "errors": 0}])
    );

    // In the OpenAPI document.
    let (_, doc) = get(&base, None, "/openapi.json").await;
    assert!(doc["paths"]["/v1/metrics/realtime"]["get"].is_object());
    drop(served);
}
