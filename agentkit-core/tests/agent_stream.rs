//! Streaming through the agent loop: `AgentLlm::generate_stream` against a local server that
//! streams the OpenAI Chat Completions wire format, and against the `ScriptedProvider`.
#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::provider::openai::{OpenAiConfig, OpenAiProvider};
use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, FnTool, Generation, GenerationEvent, Journal, MemoryJournal,
    RunContext, ScriptedProvider, StopReason, Usage,
};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

mod common;
use common::{MockServer as Mock, sse_response};

const MODEL: &str = "gpt-4.1-mini-2025-04-14";

fn chunk(delta: Value, finish_reason: Value) -> String {
    json!({
        "id": "chatcmpl-stream1", "object": "chat.completion.chunk", "created": 1_741_570_300,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null
    })
    .to_string()
}

fn usage_chunk(prompt: u64, completion: u64) -> String {
    json!({
        "id": "chatcmpl-stream1", "object": "chat.completion.chunk", "created": 1_741_570_300,
        "model": MODEL, "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    })
    .to_string()
}

fn frames(events: Vec<String>) -> Vec<String> {
    events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect()
}

fn text_events(parts: &[&str], prompt: u64, completion: u64) -> Vec<String> {
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for p in parts {
        events.push(chunk(json!({"content": p}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push(usage_chunk(prompt, completion));
    events.push("[DONE]".to_owned());
    frames(events)
}

fn tool_call_events(
    id: &str,
    name: &str,
    args: &[&str],
    prompt: u64,
    completion: u64,
) -> Vec<String> {
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}
        ]}),
        Value::Null,
    )];
    for a in args {
        events.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}),
            Value::Null,
        ));
    }
    events.push(chunk(json!({}), json!("tool_calls")));
    events.push(usage_chunk(prompt, completion));
    events.push("[DONE]".to_owned());
    frames(events)
}

fn provider(mock: &Mock) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig::compatible(
        format!("{}/v1", mock.url),
        "sk-test",
    ))
    .unwrap()
}

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

fn add_tool() -> FnTool {
    FnTool::new("add", "Add two integers", |x: AddArgs| async move {
        Ok::<_, Infallible>(x.a + x.b)
    })
}

/// Every event of a stream, which must end with `Done`.
async fn drain(
    agent: &dyn AugmentedLlm,
    input: &str,
    ctx: &RunContext,
) -> (Vec<GenerationEvent>, Generation) {
    let mut events: Vec<GenerationEvent> = agent
        .generate_stream(input.into(), ctx)
        .map(Result::unwrap)
        .collect()
        .await;
    match events.pop() {
        Some(GenerationEvent::Done(g)) => (events, g),
        other => panic!("the stream must end with Done, got {other:?}"),
    }
}

fn deltas(events: &[GenerationEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::TextDelta { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// A compact trace of the events: `text`, `tool+ add`, `tool- add`, `turn 0 (1 call)`.
fn trace(events: &[GenerationEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let item = match e {
            GenerationEvent::TextDelta { .. } => "text".to_owned(),
            GenerationEvent::ToolCallStarted { tool, .. } => format!("tool+ {tool}"),
            GenerationEvent::ToolCallFinished { tool, is_error, .. } => {
                format!("tool- {tool}{}", if *is_error { " (error)" } else { "" })
            }
            GenerationEvent::TurnFinished {
                iteration,
                tool_calls,
                ..
            } => format!("turn {iteration} ({tool_calls} calls)"),
            other => format!("{other:?}"),
        };
        if item == "text" && out.last().is_some_and(|l| l == "text") {
            continue;
        }
        out.push(item);
    }
    out
}

#[tokio::test]
async fn an_agent_streams_tokens_tool_calls_and_usage_over_the_openai_wire() {
    let mock = Mock::start(|n, _| {
        if n == 0 {
            sse_response(
                tool_call_events("call_1", "add", &["{\"a\":", "2,\"b\":3}"], 50, 12),
                None,
            )
        } else {
            sse_response(text_events(&["2 + 3", " = ", "5", "."], 70, 8), None)
        }
    })
    .await;
    let agent = AgentLlm::new(
        Agent::new("calc", "You add numbers with the add tool.").with_tool(add_tool()),
        provider(&mock),
    );
    let (events, generation) = drain(&agent, "What is 2 + 3?", &RunContext::new()).await;

    // Tokens arrive one by one and make up the final answer.
    let parts = deltas(&events);
    assert_eq!(parts, ["2 + 3", " = ", "5", "."]);
    assert_eq!(parts.concat(), generation.text());
    assert_eq!(
        trace(&events),
        [
            "turn 0 (1 calls)",
            "tool+ add",
            "tool- add",
            "text",
            "turn 1 (0 calls)"
        ]
    );
    let finished = events.iter().find_map(|e| match e {
        GenerationEvent::ToolCallFinished { output, .. } => Some(output.clone()),
        _ => None,
    });
    assert_eq!(finished.unwrap()[0].as_text(), Some("5"));
    // Usage of every turn, summed, is the generation's.
    let summed = events.iter().fold(Usage::default(), |acc, e| match e {
        GenerationEvent::TurnFinished { usage, .. } => acc + *usage,
        _ => acc,
    });
    assert_eq!(summed, Usage::new(120, 20));
    assert_eq!(generation.usage, summed);
    assert_eq!(generation.llm_calls, 2);
    assert_eq!(generation.stop_reason, StopReason::EndTurn);
    // The model was asked to stream, and saw the tool result.
    assert_eq!(mock.body(0)["stream"], true);
    let second = mock.body(1)["messages"].as_array().unwrap().clone();
    assert_eq!(
        second.last().unwrap(),
        &json!({"role": "tool", "tool_call_id": "call_1", "content": "5"})
    );
}

#[tokio::test]
async fn a_scripted_agent_streams_the_same_answer_generate_gives() {
    let script = || {
        ScriptedProvider::new()
            .then_tool_call("add", json!({"a": 1, "b": 1}))
            .then_tool_call("nope", json!({}))
            .then_text("1 + 1 = 2")
    };
    let agent = AgentLlm::new(Agent::new("calc", "Add.").with_tool(add_tool()), script());
    let (events, streamed) = drain(&agent, "1+1?", &RunContext::new()).await;
    assert_eq!(deltas(&events).concat(), "1 + 1 = 2");
    assert_eq!(
        trace(&events),
        [
            "turn 0 (1 calls)",
            "tool+ add",
            "tool- add",
            "turn 1 (1 calls)",
            "tool+ nope",
            "tool- nope (error)",
            "text",
            "turn 2 (0 calls)"
        ]
    );
    let agent = AgentLlm::new(Agent::new("calc", "Add.").with_tool(add_tool()), script());
    let whole = agent
        .generate("1+1?".into(), &RunContext::new())
        .await
        .unwrap();
    assert_eq!(streamed, whole);
}

#[tokio::test]
async fn a_streamed_run_is_journaled_as_generate_journals_it_and_replays_without_the_model() {
    let script = || {
        ScriptedProvider::new()
            .then_tool_call("add", json!({"a": 20, "b": 22}))
            .then_text("The answer is 42.")
    };
    let run = |provider: ScriptedProvider| {
        AgentLlm::new(Agent::new("calc", "Add.").with_tool(add_tool()), provider)
    };

    // The journal of a streamed run is the journal of a plain one.
    let plain = Arc::new(MemoryJournal::new());
    run(script())
        .generate("q".into(), &RunContext::new().with_journal(plain.clone()))
        .await
        .unwrap();
    let streamed = Arc::new(MemoryJournal::new());
    let ctx = RunContext::new().with_journal(streamed.clone());
    let (_, first) = drain(&run(script()), "q", &ctx).await;
    assert_eq!(streamed.entries(), plain.entries());

    // Replayed: the recorded text comes at once, as one delta, and the model is not called.
    let model = Arc::new(ScriptedProvider::new());
    let agent = AgentLlm::shared(
        Agent::new("calc", "Add.").with_tool(add_tool()),
        model.clone(),
    );
    let replay = Arc::new(MemoryJournal::from_entries(streamed.entries()));
    let ctx = RunContext::new().with_journal(replay.clone() as Arc<dyn Journal>);
    let (events, again) = drain(&agent, "q", &ctx).await;
    assert_eq!(model.call_count(), 0);
    assert_eq!(deltas(&events), ["The answer is 42."]);
    assert!(events.iter().all(|e| !matches!(
        e,
        GenerationEvent::TurnFinished {
            replayed: false,
            ..
        }
    )));
    assert_eq!(again.text(), first.text());
    assert_eq!(replay.replayed_keys().len(), 3);
}

/// Drops its oneshot when the response body is dropped, i.e. when the client goes away.
struct Hangup(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Hangup {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn dropping_the_stream_mid_answer_closes_the_model_request() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    let mock = Mock::start(move |_, _| {
        let hangup = Hangup(tx.lock().unwrap().take());
        let first: Vec<Result<Bytes, Infallible>> = frames(vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Once upon"}), Value::Null),
        ])
        .into_iter()
        .map(|f| Ok(Bytes::from(f)))
        .collect();
        // The rest of the answer never comes; the body lives until the client hangs up.
        let rest = futures::stream::once(async move {
            let _hangup = hangup;
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Bytes::new())
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(futures::stream::iter(first).chain(rest)))
            .unwrap()
    })
    .await;
    let agent = AgentLlm::new(Agent::new("teller", "Tell stories."), provider(&mock));
    let ctx = RunContext::new();
    let mut stream = agent.generate_stream("A story".into(), &ctx);
    match stream.next().await {
        Some(Ok(GenerationEvent::TextDelta { text, .. })) => assert_eq!(text, "Once upon"),
        other => panic!("expected the first delta, got {other:?}"),
    }
    drop(stream);
    // The server sees the connection close (the bound only keeps a broken build from hanging).
    tokio::time::timeout(Duration::from_secs(60), rx)
        .await
        .expect("the model request was not closed after the stream was dropped")
        .unwrap();
    assert_eq!(mock.requests(), 1);
    assert!(
        !ctx.is_cancelled(),
        "dropping a stream does not cancel the caller's context"
    );
}

#[tokio::test]
async fn without_demand_a_streamed_run_makes_plain_calls_and_yields_each_answer_whole() {
    let mock = Mock::start(|_, seen| {
        if seen.body["stream"] == true {
            sse_response(text_events(&["Hello", " there"], 5, 2), None)
        } else {
            common::json_reply(
                axum::http::StatusCode::OK,
                json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello there"}}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
                }),
            )
        }
    })
    .await;
    let agent = AgentLlm::new(Agent::new("a", "Greet."), provider(&mock));
    let wanted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let w = Arc::clone(&wanted);
    let ctx =
        RunContext::new().with_stream_demand(move || w.load(std::sync::atomic::Ordering::SeqCst));
    let (events, g) = drain(&agent, "hi", &ctx).await;
    assert_eq!(deltas(&events), ["Hello there"]);
    assert_eq!(g.text(), "Hello there");
    assert!(mock.body(0).get("stream").is_none(), "a plain call");

    wanted.store(true, std::sync::atomic::Ordering::SeqCst);
    let (events, _) = drain(&agent, "hi", &ctx).await;
    assert_eq!(deltas(&events), ["Hello", " there"]);
    assert_eq!(mock.body(1)["stream"], true);
}
