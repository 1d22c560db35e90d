//! `GET /metrics` over real HTTP: what an operator's Prometheus scrapes after runs, model
//! calls and tool calls went through the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Agent, AgentLlm, FnTool, ProviderErrorKind, ScriptedProvider};
use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::Server;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, JsonSchema)]
struct Path {
    path: String,
}

/// The value of the sample `series` (exact name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn metrics_count_runs_model_calls_tool_calls_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("m.db")).await.unwrap());
    let reader = AgentLlm::new(
        Agent::new("reader", "Read files.").with_tool(FnTool::new(
            "fs__read_file",
            "Read a file",
            |p: Path| async move {
                Ok::<_, std::convert::Infallible>(format!("contents of {}", p.path))
            },
        )),
        ScriptedProvider::new()
            .with_model("gpt-4o")
            .then_tool_call("fs__read_file", json!({"path": "/notes.md"}))
            .then_text("The notes say hello."),
    );
    let broken = AgentLlm::new(
        Agent::new("broken", "Fail."),
        ScriptedProvider::new()
            .with_model("gpt-4o")
            .then_error(ProviderErrorKind::Auth, "bad key"),
    );
    let server = Server::builder(store)
        .admin_key("test-key")
        .agent_llm("reader", Arc::new(reader), "Reads files")
        .agent_llm("broken", Arc::new(broken), "Always fails")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let client = reqwest::Client::new();

    // Without the key: 401, like every other authenticated route.
    let res = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 401);

    let mut run_ids = Vec::new();
    for (agent, status) in [("reader", "succeeded"), ("broken", "failed")] {
        let run: Value = client
            .post(format!("{base}/v1/agents/{agent}/runs"))
            .bearer_auth("test-key")
            .json(&json!({"message": "go", "wait": true}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(run["status"], status, "{run}");
        run_ids.push(run["run_id"].as_str().unwrap().to_owned());
    }
    let res = client
        .get(format!("{base}/v1/runs/no-such-run"))
        .bearer_auth("test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = client
        .get(format!("{base}/no/such/route"))
        .bearer_auth("test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let res = client
        .get(format!("{base}/metrics"))
        .header("x-api-key", "test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();

    let get =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        get(r#"agentkit_runs_finished_total{agent="reader",version="1",status="succeeded"}"#),
        1.0
    );
    assert_eq!(
        get(r#"agentkit_runs_finished_total{agent="broken",version="1",status="failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"agentkit_run_duration_seconds_count{agent="reader",status="succeeded"}"#),
        1.0
    );
    // Two model calls of the reader (tool call, answer); the failed call is not an answer.
    assert_eq!(
        get(r#"agentkit_model_calls_total{provider="scripted",model="gpt-4o"}"#),
        2.0
    );
    assert!(
        get(r#"agentkit_model_tokens_total{provider="scripted",model="gpt-4o",kind="input"}"#)
            > 0.0
    );
    assert!(get(r#"agentkit_model_cost_usd_total{provider="scripted",model="gpt-4o"}"#) > 0.0);
    assert_eq!(
        get(r#"agentkit_tool_calls_total{server="fs",tool="read_file",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        get(r#"agentkit_http_requests_total{method="POST",route="/v1/agents/{name}/runs",status="200"}"#)
            + sample(&text, r#"agentkit_http_requests_total{method="POST",route="/v1/agents/{name}/runs",status="201"}"#).unwrap_or(0.0),
        2.0,
        "{text}"
    );
    assert_eq!(
        get(r#"agentkit_http_requests_total{method="GET",route="/v1/runs/{run_id}",status="404"}"#),
        1.0
    );
    assert_eq!(
        get(r#"agentkit_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        get(r#"agentkit_http_requests_total{method="GET",route="/metrics",status="401"}"#),
        1.0
    );
    assert_eq!(get(r#"agentkit_runs{status="running"}"#), 0.0);
    assert_eq!(get("agentkit_approvals_pending"), 0.0);
    // No run ids anywhere in the labels.
    for id in &run_ids {
        assert!(!text.contains(id.as_str()), "run id {id} in the metrics");
    }

    drop(served);
}
