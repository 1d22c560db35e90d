//! `agentkit approvals …` as a user runs it against a real `agentkit serve`: a model (an
//! OpenAI-compatible server on 127.0.0.1) asks two tool calls at once that a policy holds for
//! approval; the CLI lists them (a table, `--json`), claims one, approves one call, rejects
//! the other with a reason, and exits 3 / 4 for a missing / already decided call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use common::{KEY, Serve, free_port};
use serde_json::{Value, json};

/// Two `ops__send_message` calls at once, then (once both results are in) the answer `done`.
async fn complete(body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body["stream"] == true {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "this model does not stream",
        )
            .into_response();
    }
    let results: Vec<String> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].to_string())
        .collect();
    let message = if results.is_empty() {
        let call = |id: &str, to: &str| {
            json!({"id": id, "type": "function", "function": {
                "name": "ops__send_message",
                "arguments": json!({"to": to}).to_string()}})
        };
        json!({"role": "assistant", "content": null,
               "tool_calls": [call("call_a", "ann"), call("call_b", "ben")]})
    } else {
        json!({"role": "assistant", "content": format!("done: {}", results.join(" / "))})
    };
    let finish = if results.is_empty() {
        "tool_calls"
    } else {
        "stop"
    };
    axum::Json(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
    .into_response()
}

fn cli(serve: &Serve, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentkit"))
        .args(args)
        .args(["--server", &serve.base])
        .env_remove("AGENTKIT_URL")
        .env("AGENTKIT_API_KEY", KEY)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn wait_status(serve: &Serve, run: &str, status: &str) -> Value {
    for _ in 0..400 {
        let (_, v) = serve
            .call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None)
            .await;
        if v["status"] == status {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} never became {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_claims_approves_and_rejects_single_calls() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let model = tokio::spawn(async move {
        axum::serve(
            listener,
            Router::new().fallback(axum::routing::post(complete)),
        )
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(
        &config,
        format!(
            r#"openai:
  base_url: http://{addr}/v1
  api_key: test
policies:
  guarded:
    require_approval: ["ops__send_message"]
agents:
  mailer:
    model: openai:gpt-4o-mini
    instructions: Send the messages.
    policy: guarded
"#
        ),
    )
    .unwrap();
    let serve = Serve::start(&config, "memory", free_port(), &dir.path().join("log")).await;
    let (st, run) = serve
        .call(
            reqwest::Method::POST,
            "/v1/agents/mailer/runs",
            Some(json!({"message": "message ann and ben"})),
        )
        .await;
    assert!(st == 200 || st == 202, "{st} {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_status(&serve, &run_id, "waiting_approval").await;

    // For people: a table with both calls.
    let (code, out, err) = cli(&serve, &["approvals", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("call_a") && out.contains("call_b"), "{out}");
    assert!(
        out.contains("ops__send_message") && out.contains("pending"),
        "{out}"
    );
    // For programs: JSON.
    let (code, out, err) = cli(&serve, &["approvals", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    let (code, out, err) = cli(&serve, &["approvals", "claim", &run_id, "call_a"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("claimed call call_a"), "{out}");
    let (code, out, err) = cli(
        &serve,
        &[
            "approvals",
            "approve",
            &run_id,
            "call_a",
            "--reason",
            "ann expects it",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("approved call call_a"), "{out}");
    // Deciding it again is a conflict (exit 4) that says it is approved; a call that does not
    // exist is not found (exit 3).
    let (code, _, err) = cli(
        &serve,
        &["approvals", "reject", &run_id, "call_a", "--reason", "no"],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("approved already"), "{err}");
    let (code, _, err) = cli(&serve, &["approvals", "approve", &run_id, "call_zz"]);
    assert_eq!(code, 3, "{err}");
    // `reject` without a reason is refused by the CLI itself.
    let (code, _, _) = cli(&serve, &["approvals", "reject", &run_id, "call_b"]);
    assert_eq!(code, 2);

    wait_status(&serve, &run_id, "waiting_approval").await;
    let (code, out, err) = cli(
        &serve,
        &[
            "approvals",
            "reject",
            &run_id,
            "call_b",
            "--reason",
            "ben is on leave",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rejected call call_b"), "{out}");
    let done = wait_status(&serve, &run_id, "succeeded").await;
    let text = done["output"]["text"].as_str().unwrap();
    assert!(
        text.contains("ben is on leave"),
        "the model read the reason: {text}"
    );

    let (code, out, err) = cli(&serve, &["approvals", "list", "--status", "rejected"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("call_b") && out.contains("admin"), "{out}");
    assert!(!out.contains("call_a"), "{out}");
    let (code, out, _) = cli(
        &serve,
        &["approvals", "list", "--status", "approved", "--json"],
    );
    assert_eq!(code, 0);
    let approved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(approved[0]["call_id"], "call_a", "{approved}");
    assert_eq!(
        approved[0]["decision_reason"], "ann expects it",
        "{approved}"
    );
    model.abort();
}
