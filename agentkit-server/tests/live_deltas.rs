//! Live `delta` SSE events: a client following a run executing in this server gets the
//! answer's text as the model writes it, before the model step's journal event, while journal
//! events keep their ids and exactly-once resume.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Agent, AgentLlm, ScriptedProvider};
use agentkit_server::Server;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

struct Frame {
    id: Option<u64>,
    event: String,
    data: Value,
}

#[tokio::test]
async fn a_client_gets_delta_events_before_the_model_steps_journal_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let gate = Arc::new(Semaphore::new(0));
    let teller = inproc::Gated::new(
        AgentLlm::new(
            Agent::new("teller", "Tell short stories."),
            ScriptedProvider::new().then_text("Once upon a time, the end."),
        ),
        Arc::clone(&gate),
    );
    let server = Server::builder(store)
        .admin_key("test-key")
        .agent_llm("teller", Arc::new(teller), "Tells stories")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let client = reqwest::Client::new();

    let run: Value = client
        .post(format!("{base}/v1/agents/teller/runs"))
        .bearer_auth("test-key")
        .json(&json!({"message": "a story"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["run_id"].as_str().unwrap().to_owned();
    let res = client
        .get(format!("{base}/v1/runs/{id}/events"))
        .bearer_auth("test-key")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let mut body = res.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut frames: Vec<Frame> = Vec::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.unwrap());
            while let Some(i) = buf.windows(2).position(|w| w == b"\n\n") {
                let raw = String::from_utf8(buf.drain(..i + 2).collect()).unwrap();
                let (mut fid, mut event, mut data) = (None, None, String::new());
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        fid = Some(v.trim().parse::<u64>().unwrap());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                let Some(event) = event else { continue };
                // The stream is attached: let the agent start.
                if frames.is_empty() {
                    gate.add_permits(1);
                }
                let end = event == "end";
                frames.push(Frame {
                    id: fid,
                    event,
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                });
                if end {
                    return;
                }
            }
        }
        panic!("the stream closed before its end event");
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the run's stream never ended");

    let deltas: Vec<(usize, &Frame)> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.event == "delta")
        .collect();
    assert!(deltas.len() > 1, "streamed word by word");
    assert!(
        deltas.iter().all(|(_, f)| f.id.is_none()),
        "deltas carry no id"
    );
    assert!(deltas.iter().all(|(_, f)| f.data["agent"] == "teller"));
    let text: String = deltas
        .iter()
        .map(|(_, f)| f.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Once upon a time, the end.");
    // Every delta comes before the model step's journal event, which has the whole text.
    let model = frames.iter().position(|f| f.event == "model").unwrap();
    assert!(deltas.iter().all(|(i, _)| *i < model));
    assert_eq!(
        frames[model].data["data"]["text"],
        "Once upon a time, the end."
    );
    // Journal events keep their ids, each once and in order.
    let ids: Vec<u64> = frames.iter().filter_map(|f| f.id).collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        frames.last().unwrap().data["output"]["text"],
        "Once upon a time, the end."
    );

    // Reconnecting after the run sends the journal again, and no delta.
    let again = client
        .get(format!("{base}/v1/runs/{id}/events"))
        .bearer_auth("test-key")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains("event: model"), "{again}");
    assert!(!again.contains("event: delta"), "{again}");
    drop(served);
}
