//! Scale-out: two `agentkit serve` processes on one PostgreSQL database. A run started on one
//! is streamed (resuming from the other with `Last-Event-ID`, on `/v1` and on LangGraph's
//! join stream), cancelled, paused and resumed
//! through the other; a run waiting on A for a person's answer (an agent with `human_input`)
//! gets it as a signal sent through B and finishes with it.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::Pg;
use common::{Received, Serve, SlowModel, follow, follow_for, free_port, wait_status};
use futures::StreamExt;
use serde_json::{Value, json};

async fn start_run(on: &Serve, message: &str) -> String {
    let (s, run) = on
        .call(
            reqwest::Method::POST,
            "/v1/agents/slow/runs",
            Some(json!({"message": message})),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    run["run_id"].as_str().unwrap().to_owned()
}

/// The run's journal events (JSON), read through `on`.
async fn events(on: &Serve, run_id: &str) -> Vec<Value> {
    let (s, e) = on
        .call(
            reqwest::Method::GET,
            &format!("/v1/runs/{run_id}/events"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{e}");
    e.as_array().unwrap().clone()
}

/// Wait until the run has at least `n` journal events, read through `on`.
async fn wait_events(on: &Serve, run_id: &str, n: usize) {
    for _ in 0..2400 {
        if events(on, run_id).await.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} never had {n} events");
}

/// The events of an SSE body: (`id`, `event`, `data`).
fn sse_events(text: &str) -> Vec<(String, String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let id = block.lines().find_map(|l| l.strip_prefix("id: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((
                id.to_owned(),
                name.to_owned(),
                serde_json::from_str(data).unwrap(),
            ))
        })
        .collect()
}

fn models(events: &[Value]) -> usize {
    events.iter().filter(|e| e["event"] == "model").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_postgres_start_on_one_stream_cancel_pause_and_resume_on_the_other() {
    let pg = Pg::start();
    let model = SlowModel::start(Duration::from_millis(400)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(&config, model.config()).unwrap();
    // Both start at once on the fresh database, each deploying the config's agents.
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (a, b) = tokio::join!(
        Serve::start(&config, &pg.url, free_port(), &a_log),
        Serve::start(&config, &pg.url, free_port(), &b_log),
    );
    let (_, on_a) = a.call(reqwest::Method::GET, "/v1/agents", None).await;
    let (_, on_b) = b.call(reqwest::Method::GET, "/v1/agents", None).await;
    assert_eq!(on_a, on_b, "both processes share one registry");
    assert_eq!(on_a.as_array().unwrap().len(), 4, "{on_a}");

    // Start on A, stream its first event from A, disconnect, and resume on B with
    // `Last-Event-ID` to the end: every event once, in order, then `end`.
    let streamed = start_run(&a, "job stream").await;
    let got = Arc::new(Mutex::new(Received::default()));
    assert!(!follow_for(&a.base, &streamed, None, Arc::clone(&got), 1).await);
    let last = got.lock().unwrap().last_id();
    assert_eq!(last, Some(0));
    assert!(follow(&b.base, &streamed, last, Arc::clone(&got)).await);
    let got = got.lock().unwrap().clone();
    let end = got.end.as_ref().unwrap();
    assert_eq!(end["status"], "succeeded", "{end}");
    assert_eq!(end["output"]["text"], "job stream | one | two | three");
    let max = *got.ids.iter().max().unwrap();
    assert_eq!(got.ids, (0..=max).collect::<Vec<u64>>());
    assert_eq!(got.events.iter().filter(|e| *e == "model").count(), 3);
    let on_a: Vec<u64> = events(&a, &streamed)
        .await
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got.ids, on_a, "A and B read the same journal");

    // The same across nodes for a LangGraph stream: read on A up to its first update, then
    // joined on B after that event's id: the rest, each event once.
    let (_, thread) = a
        .call(reqwest::Method::POST, "/threads", Some(json!({})))
        .await;
    let tid = thread["thread_id"].as_str().unwrap().to_owned();
    let res = a
        .request(
            reqwest::Method::POST,
            &format!("/threads/{tid}/runs/stream"),
        )
        .json(
            &json!({"assistant_id": "slow", "stream_mode": ["values", "updates"],
                      "input": {"messages": [{"role": "user", "content": "job lg"}]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let join = res.headers()["location"].to_str().unwrap().to_owned();
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let mut first = Vec::new();
    while !first
        .iter()
        .any(|(_, n, _): &(String, String, Value)| n == "updates")
    {
        let chunk = body.next().await.expect("the stream goes on").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            first.extend(sse_events(&text[..end + 2]));
            text.drain(..end + 2);
        }
    }
    drop(body);
    let last = first.last().unwrap().0.clone();
    let rest = b
        .request(reqwest::Method::GET, &join)
        .header("last-event-id", &last)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rest = sse_events(&rest);
    assert_eq!(rest.last().unwrap().1, "end", "{rest:?}");
    let full = a.request(reqwest::Method::GET, &join).send().await.unwrap();
    let full = sse_events(&full.text().await.unwrap());
    let mut resumed: Vec<_> = first.into_iter().chain(rest).collect();
    resumed.retain(|(id, _, _)| id != "0-1");
    assert_eq!(
        resumed, full,
        "the input values are the streamed request's own"
    );
    assert_eq!(
        full.iter().filter(|(_, n, _)| n == "updates").count(),
        3,
        "{full:?}"
    );

    // Start on A, cancel through B mid-way: cancelled with the reason, on both.
    let cancelled = start_run(&a, "job cancel").await;
    wait_events(&b, &cancelled, 1).await;
    let (s, run) = b
        .call(
            reqwest::Method::POST,
            &format!("/v1/runs/{cancelled}/cancel"),
            Some(json!({"reason": "the customer hung up"})),
        )
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "cancelled");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("the customer hung up"),
        "{run}"
    );

    // Start on A, pause through B mid-way, resume through B: it finishes from its journal.
    let paused = start_run(&a, "job pause").await;
    wait_events(&b, &paused, 1).await;
    let (s, run) = b
        .call(
            reqwest::Method::POST,
            &format!("/v1/runs/{paused}/pause"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "paused");
    let (_, on_a) = a
        .call(reqwest::Method::GET, &format!("/v1/runs/{paused}"), None)
        .await;
    assert_eq!(on_a["status"], "paused", "A sees B's pause");
    let (s, run) = b
        .call(
            reqwest::Method::POST,
            &format!("/v1/runs/{paused}/resume"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{run}");
    let done = wait_status(&a, &paused, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["text"], "job pause | one | two | three");
    assert_eq!(
        models(&events(&a, &paused).await),
        3,
        "one model answer per step: journaled steps were replayed, not repeated"
    );

    // The cancelled run stayed cancelled (its executor did not finish it after all), with
    // fewer than all its steps.
    let (_, run) = a
        .call(reqwest::Method::GET, &format!("/v1/runs/{cancelled}"), None)
        .await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("the customer hung up")
    );
    assert!(
        models(&events(&b, &cancelled).await) < 3,
        "a cancelled run stops between steps: {:?}",
        events(&b, &cancelled).await
    );
    drop((a, b));
}

/// An approval asked on one node is decided through the other after the first one died: the
/// surviving node resumes the exact call, and the tool runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_asked_on_one_node_is_decided_and_resumed_on_the_other() {
    use common::tools::{ToolModel, tool_calls, yaml};
    let pg = Pg::start();
    let model = ToolModel::start(Duration::from_millis(50)).await;
    let dir = tempfile::tempdir().unwrap();
    let tool_log = dir.path().join("tools.log");
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(&config, yaml(&model, &tool_log)).unwrap();
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let mut a = Serve::start(&config, &pg.url, free_port(), &a_log).await;
    let b = Serve::start(&config, &pg.url, free_port(), &b_log).await;

    let (s, run) = a
        .call(
            reqwest::Method::POST,
            "/v1/agents/poster/runs",
            Some(json!({"message": "share the docs"})),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let run = run["run_id"].as_str().unwrap().to_owned();
    // B sees the run wait and the call in the queue.
    wait_status(&b, &run, &["waiting_approval"]).await;
    let (_, pending) = b.call(reqwest::Method::GET, "/v1/approvals", None).await;
    let pending = pending.as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["tool"], "ops__send_message");
    assert_eq!(tool_calls(&tool_log), ["read /docs/readme.md"]);

    // A dies; B decides, and B executes the rest.
    a.kill();
    let (s, body) = b
        .call(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/approve"),
            Some(json!({"reason": "fine"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let done = wait_status(&b, &run, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(done["status"], "succeeded", "{done}\n{}", b.log_text());
    assert_eq!(done["output"]["text"], "posted");
    assert_eq!(
        tool_calls(&tool_log),
        ["read /docs/readme.md", "send the docs say hello"],
        "each tool ran once, the post on the surviving node"
    );
}

/// An OpenAI-compatible model that asks a person which city (the `__human_input` tool), then
/// answers `going to <the answer>`.
async fn asking_model() -> (String, tokio::task::JoinHandle<()>) {
    async fn complete(body: axum::body::Bytes) -> axum::response::Response {
        use axum::response::IntoResponse;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if body["stream"] == true {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                "this test model does not stream",
            )
                .into_response();
        }
        let answer = body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or_default().to_owned());
        let (message, finish) = match answer {
            None => (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": "call_ask", "type": "function", "function": {
                        "name": "__human_input",
                        "arguments": "{\"prompt\": \"Which city?\"}"}}]}),
                "tool_calls",
            ),
            Some(city) => (
                json!({"role": "assistant", "content": format!("going to {city}")}),
                "stop",
            ),
        };
        axum::Json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }))
        .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(axum::routing::post(complete));
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, task)
}

/// A run waiting on A for a person's answer gets it through B (`POST /v1/runs/{id}/signal`),
/// wherever it then resumes, and finishes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_waiting_on_one_node_for_a_signal_gets_it_through_the_other() {
    let pg = Pg::start();
    let (model, model_task) = asking_model().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(
        &config,
        format!(
            "openai:\n  base_url: {model}\n  api_key: test\n\
             agents:\n  asker:\n    model: openai:gpt-4o-mini\n    \
             instructions: Ask which city.\n    human_input: true\n"
        ),
    )
    .unwrap();
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    // Only A runs while the run starts, so A is the node that executes it up to its wait.
    let a = Serve::start(&config, &pg.url, free_port(), &a_log).await;
    let (s, run) = a
        .call(
            reqwest::Method::POST,
            "/v1/agents/asker/runs",
            Some(json!({"message": "book me a trip"})),
        )
        .await;
    assert_eq!(s, 202, "{run}");
    let run = run["run_id"].as_str().unwrap().to_owned();
    let waiting = wait_status(&a, &run, &["waiting_input", "succeeded", "failed"]).await;
    assert_eq!(
        waiting["status"],
        "waiting_input",
        "{waiting}\n{}",
        a.log_text()
    );

    let b = Serve::start(&config, &pg.url, free_port(), &b_log).await;
    let (_, on_b) = b
        .call(reqwest::Method::GET, &format!("/v1/runs/{run}"), None)
        .await;
    assert_eq!(on_b["status"], "waiting_input", "B sees the wait: {on_b}");
    let (s, body) = b
        .call(
            reqwest::Method::POST,
            &format!("/v1/runs/{run}/signal"),
            Some(json!({"name": "human_input", "payload": "Lisbon"})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let done = wait_status(&b, &run, &["succeeded", "failed", "cancelled"]).await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\nA:\n{}\nB:\n{}",
        a.log_text(),
        b.log_text()
    );
    assert_eq!(done["output"]["text"], "going to Lisbon", "{done}");
    // Both nodes read the same journal: the question, the answer as the tool's result, and
    // the final answer, each once.
    let journal = events(&a, &run).await;
    assert_eq!(journal, events(&b, &run).await);
    assert_eq!(models(&journal), 2, "{journal:?}");
    assert!(
        journal
            .iter()
            .any(|e| e["event"] == "tool_result" && e.to_string().contains("Lisbon")),
        "{journal:?}"
    );
    drop((a, b));
    model_task.abort();
}
