//! SIGTERM stops a real `agentkit serve` in bounded time, whatever its clients hold open: an
//! SSE client following a run that waits for an approval, a legacy `/mcp` session with its
//! standalone `GET /mcp` stream open, and a request whose body never finishes arriving. Both
//! streams end cleanly, the process exits with success,
//! and after a restart on the same SQLite file the run is still there and the SSE client
//! resumes with `Last-Event-ID`, missing nothing and getting nothing twice. A
//! `/v1/execute/stream` batch whose call is in flight on a real stdio MCP upstream ends with a
//! `server_stopping` event naming the call to send again, the call is cancelled upstream, and
//! the process does not wait for the drain's deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use common::tools::{peer_python, peers, tool_calls};
use common::{KEY, Received, Serve, follow, free_port, wait_status};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// One `ops__send_message` call (held for approval by the policy), then the answer `done`;
/// streamed when asked (a run with live listeners).
async fn complete(body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answered = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["role"] == "tool");
    let (message, finish) = if answered {
        (json!({"role": "assistant", "content": "done"}), "stop")
    } else {
        (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_a", "type": "function", "function": {
                    "name": "ops__send_message", "arguments": "{\"to\": \"ann\"}"}}]}),
            "tool_calls",
        )
    };
    if body["stream"] == true {
        let mut delta = message;
        if let Some(calls) = delta["tool_calls"].as_array_mut() {
            for (i, c) in calls.iter_mut().enumerate() {
                c["index"] = json!(i);
            }
        }
        let frames: String = [
            json!([{"index": 0, "delta": delta, "finish_reason": null}]),
            json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        ]
        .iter()
        .map(|choices| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0,
                       "model": "gpt-4o-mini", "choices": choices})
            )
        })
        .chain(["data: [DONE]\n\n".to_owned()])
        .collect();
        return ([("content-type", "text/event-stream")], frames).into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
    .into_response()
}

/// Open a legacy (2025-06-18) session on `/mcp` and its standalone `GET /mcp` SSE stream:
/// the stream's task ends with `true` when the server ends the stream cleanly.
async fn legacy_mcp_stream(base: &str) -> tokio::task::JoinHandle<bool> {
    let http = reqwest::Client::new();
    let init = http
        .post(format!("{base}/mcp"))
        .bearer_auth(KEY)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "shutdown-test", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = init.text().await.unwrap();
    assert!(body.contains("protocolVersion"), "{body}");
    let initialized = http
        .post(format!("{base}/mcp"))
        .bearer_auth(KEY)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(initialized.status(), 202);
    let stream = http
        .get(format!("{base}/mcp"))
        .bearer_auth(KEY)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    ends_cleanly(stream)
}

/// Read `response`'s body to its end: the task ends with `true` when the server ends it
/// cleanly, `false` when the connection breaks.
fn ends_cleanly(response: reqwest::Response) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                return false;
            }
        }
        true
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_exits_and_the_run_resumes_after_the_restart() {
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
            "openai:\n  base_url: http://{addr}/v1\n  api_key: test\n\
             policies:\n  guarded:\n    require_approval: [\"ops__send_message\"]\n\
             agents:\n  mailer:\n    model: openai:gpt-4o-mini\n    \
             instructions: Send the message.\n    policy: guarded\n"
        ),
    )
    .unwrap();
    let database = dir.path().join("agentkit.db").to_str().unwrap().to_owned();
    let log = dir.path().join("serve.log");
    let port = free_port();

    let mut serve = Serve::start(&config, &database, port, &log).await;
    let (st, run) = serve
        .call(
            Method::POST,
            "/v1/agents/mailer/runs",
            Some(json!({"message": "message ann"})),
        )
        .await;
    assert_eq!(st, 202, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_status(&serve, &run_id, &["waiting_approval"]).await;

    // An SSE client follows the waiting run; it has the events so far.
    let received = Arc::new(Mutex::new(Received::default()));
    let follower = {
        let (base, run_id, into) = (serve.base.clone(), run_id.clone(), Arc::clone(&received));
        tokio::spawn(async move { follow(&base, &run_id, None, into).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !received
        .lock()
        .unwrap()
        .events
        .iter()
        .any(|e| e == "status")
    {
        assert!(std::time::Instant::now() < deadline, "no events came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second SSE client of the run, read to the end of its body.
    let events = serve
        .request(Method::GET, &format!("/v1/runs/{run_id}/events"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let events = ends_cleanly(events);
    let mcp = legacy_mcp_stream(&serve.base).await;
    // A client that never finishes sending its body: its request is in progress for ever,
    // and the drain's deadline is what ends it.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stalled
        .write_all(
            format!(
                "POST /v1/agents/mailer/runs HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                 authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n\
                 content-length: 1000\r\n\r\n{{\"message\": "
            )
            .as_bytes(),
        )
        .await
        .unwrap();

    serve.terminate();
    let status = serve.wait_exit(Duration::from_secs(30)).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status
        .unwrap_or_else(|| panic!("agentkit serve still runs 30 s after SIGTERM:\n{log_text}"));
    assert!(status.success(), "exit status {status}:\n{log_text}");
    drop(stalled);
    // Both streams ended cleanly (no `end`: the run is not over).
    assert!(
        !follower.await.unwrap(),
        "the run's stream ended without an `end` event"
    );
    assert!(
        events.await.unwrap(),
        "the run's event stream ended cleanly"
    );
    assert!(mcp.await.unwrap(), "the /mcp stream ended cleanly");
    let before = received.lock().unwrap().clone();
    assert!(before.end.is_none(), "{before:?}");
    let last = before.last_id().expect("the client had journal events");

    // Restarted on the same database: the run still waits for its approval, and the client
    // resumes where it was.
    let serve = Serve::start(&config, &database, port, &log).await;
    wait_status(&serve, &run_id, &["waiting_approval"]).await;
    let resumed = {
        let (base, run_id, into) = (serve.base.clone(), run_id.clone(), Arc::clone(&received));
        tokio::spawn(async move { follow(&base, &run_id, Some(last), into).await })
    };
    let (st, pending) = serve.call(Method::GET, "/v1/approvals", None).await;
    assert_eq!(st, 200, "{pending}");
    let call_id = pending[0]["call_id"].as_str().unwrap().to_owned();
    let (st, approved) = serve
        .call(
            Method::POST,
            &format!("/v1/approvals/{run_id}/{call_id}/approve"),
            Some(json!({"reason": "ann expects it"})),
        )
        .await;
    assert_eq!(st, 200, "{approved}");
    assert!(resumed.await.unwrap(), "the resumed stream reached `end`");
    let r = received.lock().unwrap().clone();
    assert_eq!(r.end.as_ref().unwrap()["status"], "succeeded", "{r:?}");
    assert!(
        r.ids.windows(2).all(|w| w[0] < w[1]),
        "every event once, in order, across the restart: {:?}",
        r.ids
    );
    assert!(r.ids.len() > before.ids.len(), "{r:?}");
    let (st, events) = serve
        .call(Method::GET, &format!("/v1/runs/{run_id}/events"), None)
        .await;
    assert_eq!(st, 200, "{events}");
    let stored: Vec<u64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(r.ids, stored, "the client got every stored event");
    model.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_an_execute_stream_with_its_calls_cancelled_and_says_to_send_them_again() {
    let dir = tempfile::tempdir().unwrap();
    // The held tool server: its `hold` call never answers (the release file is never made).
    let (tool_log, release) = (dir.path().join("tools.log"), dir.path().join("release"));
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(
        &config,
        format!(
            "mcp:\n  servers:\n    ops:\n      command: {python}\n      args: [{script}]\n      \
             env: {{TOOL_LOG: {log}, TOOL_RELEASE: {release}}}\n",
            python = peer_python().display(),
            script = peers().join("held_tool_server.py").display(),
            log = tool_log.display(),
            release = release.display(),
        ),
    )
    .unwrap();
    let database = dir.path().join("agentkit.db").to_str().unwrap().to_owned();
    let log = dir.path().join("serve.log");
    let mut serve = Serve::start(&config, &database, free_port(), &log).await;

    let res = serve
        .request(Method::POST, "/v1/execute/stream")
        .json(&json!({"calls": [
            {"id": "held", "server": "ops", "tool": "hold", "arguments": {"text": "stuck"}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !tool_calls(&tool_log)
        .iter()
        .any(|l| l.starts_with("start stuck"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream never ran the call; stream so far:\n{text}"
        );
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(50), body.next()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }

    serve.terminate();
    // The stream ends cleanly, with the stop event, before the process is gone.
    let mut clean = true;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Err(_) => {
                clean = false;
                break;
            }
        }
    }
    let status = serve.wait_exit(Duration::from_secs(30)).await;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status
        .unwrap_or_else(|| panic!("agentkit serve still runs 30 s after SIGTERM:\n{log_text}"));
    assert!(status.success(), "exit status {status}:\n{log_text}");
    assert!(clean, "the stream broke instead of ending:\n{text}");
    let events: Vec<(&str, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name, serde_json::from_str(data).unwrap()))
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.first(), Some(&"start"), "{text}");
    assert!(!names.contains(&"done"), "the batch did not finish: {text}");
    let (last, stop) = events.last().unwrap();
    assert_eq!(*last, "error", "{text}");
    assert_eq!(stop["error"], "server_stopping", "{stop}");
    assert_eq!(stop["cancelled"], json!(["held"]), "{stop}");
    assert_eq!(stop["trace_id"], events[0].1["trace_id"], "{stop}");
    assert!(
        stop["message"].as_str().unwrap().contains("send those"),
        "{stop}"
    );
    // The stream ended by itself: the drain did not have to close its connection.
    assert!(
        !log_text.contains("requests still in progress"),
        "the drain's deadline closed the stream:\n{log_text}"
    );
    // The call was cancelled upstream, never answered.
    let upstream = tool_calls(&tool_log);
    assert!(
        upstream.iter().any(|l| l.starts_with("cancelled stuck")),
        "{upstream:?}"
    );
    assert!(
        !upstream.iter().any(|l| l.starts_with("done")),
        "{upstream:?}"
    );
}
