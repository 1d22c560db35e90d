//! A credential passed to a tool as an argument, and one a tool hands back, reach the tool and
//! the model (or the client) as they are, but never the database file, the server's logs
//! (`RUST_LOG=trace`) or the exported traces: the test searches their bytes.
//!
//! The real `agentkit serve` binary runs on SQLite with OpenTelemetry export to an OTLP/HTTP
//! receiver in this test; its agent reads a token through a real stdio MCP server (the
//! official Python SDK) and posts a message carrying an API key, and an MCP client on a
//! legacy `/mcp` session (rmcp) calls the same tools through the gateway.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_mcp::rmcp::model::CallToolRequestParams;
use axum::body::Bytes;
use axum::extract::State;
use common::tools::{ToolModel, peers, tool_calls};
use common::{Serve, free_port, wait_status};
use reqwest::Method;
use serde_json::json;

/// A key the model puts in a tool's arguments.
const ARG_SECRET: &str = "sk-live-4c9e1a7b3d5f60828a1c3e5f7b9d";
/// A token the tool answers with.
const RESULT_SECRET: &str = "ghp_R7t2Kx9Lm4Qw8Zp1Vb6Nc3Hd5Jf0Gs2Ay7Ue";

/// An OTLP/HTTP receiver: every request body it got, raw.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<u8>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .fallback(axum::routing::post(
            |State(got): State<Arc<Mutex<Vec<u8>>>>, body: Bytes| async move {
                got.lock().unwrap().extend_from_slice(&body);
                ""
            },
        ))
        .with_state(Arc::clone(&got));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_tool_arguments_and_results_never_reach_the_database_logs_or_traces() {
    let (otlp, exported) = otlp_receiver().await;
    let model = ToolModel::start_with(
        Duration::from_millis(10),
        "/home/ci/.github/token",
        &format!("deploy with {ARG_SECRET}"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let tool_log = dir.path().join("tools.log");
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(
        &config,
        format!(
            r#"openai:
  base_url: {base}
  api_key: test
otel:
  enabled: true
  endpoint: {otlp}
mcp:
  servers:
    ops:
      command: {python}
      args: [{script}]
      env: {{TOOL_LOG: {log}, TOOL_SECRET: {RESULT_SECRET}}}
agents:
  poster:
    model: openai:gpt-4o-mini
    instructions: Read the token, then post.
    servers: [ops]
"#,
            base = model.base_url,
            python = peers().join(".venv/bin/python").display(),
            script = peers().join("tool_log_server.py").display(),
            log = tool_log.display(),
        ),
    )
    .unwrap();
    let database = dir.path().join("agentkit.db");
    let log = dir.path().join("serve.log");
    let serve = Serve::start_with_env(
        &config,
        database.to_str().unwrap(),
        free_port(),
        &log,
        &[("RUST_LOG", "trace")],
    )
    .await;

    let (s, run) = serve
        .call(
            Method::POST,
            "/v1/agents/poster/runs",
            Some(json!({"message": "go"})),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let run = run["run_id"].as_str().unwrap().to_owned();
    let done = wait_status(&serve, &run, &["succeeded", "failed"]).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", serve.log_text());

    // The tool got the real argument; the model got the real token (it asked with it).
    assert_eq!(
        tool_calls(&tool_log),
        [
            "read /home/ci/.github/token".to_owned(),
            format!("send deploy with {ARG_SECRET}")
        ]
    );
    // What the API shows of the run is masked.
    let (_, events) = serve
        .call(Method::GET, &format!("/v1/runs/{run}/events"), None)
        .await;
    let events = events.to_string();
    assert!(events.contains("[REDACTED"), "{events}");
    for secret in [ARG_SECRET, RESULT_SECRET] {
        assert!(!events.contains(secret), "the events show {secret}");
    }

    // An MCP client on a legacy session (whose messages rmcp would log whole) calls the same
    // tools through the gateway, and gets the real values.
    let client = inproc::mcp_session(&serve.base, common::KEY, &[]).await;
    let read = client
        .call_tool(
            CallToolRequestParams::new("ops__read_file")
                .with_arguments(json!({"path": "/srv/token"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&read)
            .unwrap()
            .contains(RESULT_SECRET),
        "{read:?}"
    );
    client
        .call_tool(
            CallToolRequestParams::new("ops__send_message").with_arguments(
                json!({"text": format!("legacy {ARG_SECRET}")})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    client.cancel().await.unwrap();
    assert!(
        tool_calls(&tool_log).contains(&format!("send legacy {ARG_SECRET}")),
        "{:?}",
        tool_calls(&tool_log)
    );

    // Let the exporter send its batch, then stop the server (which flushes it).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !contains(&exported.lock().unwrap(), "execute_tool") {
        assert!(
            std::time::Instant::now() < deadline,
            "no tool span was exported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = serve.log_text();
    drop(serve);
    assert!(
        logs.contains("DEBUG"),
        "the server logged at debug level: {logs}"
    );

    let exported = exported.lock().unwrap().clone();
    for secret in [ARG_SECRET, RESULT_SECRET] {
        let leaks: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "the logs hold {secret}:\n{}",
            leaks.join("\n")
        );
        assert!(!contains(&exported, secret), "the traces hold {secret}");
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path == tool_log || path == config {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !contains(&bytes, secret),
                "{} holds {secret}",
                path.display()
            );
        }
    }
}
