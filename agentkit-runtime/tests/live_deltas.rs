#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Live deltas of durable agent runs: a listener gets the text as the model writes it; a run
//! killed mid-way and resumed streams its journaled model step's text at once, as one delta,
//! without calling the model again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionResponse, Content, FnTool, Message, Role,
    ScriptedProvider, ScriptedReply, StartOptions, StopReason, Usage,
};
use agentkit_runtime::{LiveDelta, MemoryStore, Runtime, Store, TargetOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

#[derive(Deserialize, JsonSchema)]
struct Query {
    item: String,
}

fn finder(model: Arc<ScriptedProvider>, hang: Arc<AtomicBool>) -> Arc<dyn AugmentedLlm> {
    let lookup = FnTool::new("lookup", "Find an item", move |q: Query| {
        let hang = Arc::clone(&hang);
        async move {
            if hang.load(Ordering::SeqCst) {
                // The process dies while this tool runs.
                std::future::pending::<()>().await;
            }
            Ok::<_, std::convert::Infallible>(format!("{} found", q.item))
        }
    });
    Arc::new(AgentLlm::shared(
        Agent::new("finder", "Find things.").with_tool(lookup),
        model,
    ))
}

fn runtime(
    store: Arc<dyn Store>,
    model: &Arc<ScriptedProvider>,
    hang: &Arc<AtomicBool>,
) -> Runtime {
    let rt = Runtime::new(store);
    let (m, h) = (Arc::clone(model), Arc::clone(hang));
    rt.register_agent(
        "finder",
        move || finder(Arc::clone(&m), Arc::clone(&h)),
        TargetOptions::new(),
    );
    rt
}

async fn next(rx: &mut broadcast::Receiver<LiveDelta>) -> String {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("no delta came")
        .unwrap()
        .text
}

#[tokio::test]
async fn a_killed_run_resumes_with_its_recorded_text_as_one_delta_and_no_model_call() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let model = Arc::new(
        ScriptedProvider::new()
            .then(ScriptedReply::Response(CompletionResponse::new(
                Message::new(
                    Role::Assistant,
                    vec![
                        Content::text("Let me look that up. "),
                        Content::tool_call("call_1", "lookup", json!({"item": "keys"})),
                    ],
                ),
                Usage::new(10, 5),
                StopReason::ToolUse,
                "scripted",
            )))
            .then_text("Your keys are in the drawer."),
    );
    let hang = Arc::new(AtomicBool::new(true));

    // First process: a listener sees the first turn word by word; the tool hangs; killed.
    let rt = runtime(Arc::clone(&store), &model, &hang);
    let mut rx = rt.live_deltas().subscribe("run-1");
    rt.start_run(
        "finder",
        json!("where are my keys?"),
        StartOptions::new().with_run_id("run-1"),
    )
    .await
    .unwrap();
    let mut first = Vec::new();
    while first.concat() != "Let me look that up. " {
        first.push(next(&mut rx).await);
    }
    assert_eq!(first.len(), 5, "streamed word by word: {first:?}");
    // The model step is journaled before its tool runs.
    while rt.journal("run-1").await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rt.shutdown(Duration::ZERO).await;
    drop(rt);
    assert_eq!(model.call_count(), 1);

    // Second process over the same store: the run resumes from its journal.
    hang.store(false, Ordering::SeqCst);
    let rt = runtime(Arc::clone(&store), &model, &hang);
    let mut rx = rt.live_deltas().subscribe("run-1");
    rt.recover().await.unwrap();
    let run = tokio::time::timeout(Duration::from_secs(30), rt.wait("run-1"))
        .await
        .expect("the resumed run never finished")
        .unwrap();
    assert_eq!(run.output.unwrap()["text"], "Your keys are in the drawer.");
    // Only the second turn called the model.
    assert_eq!(model.call_count(), 2);
    let mut second = Vec::new();
    while let Ok(d) = rx.try_recv() {
        second.push(d.text);
    }
    assert_eq!(
        second,
        [
            "Let me look that up. ",
            "Your ",
            "keys ",
            "are ",
            "in ",
            "the ",
            "drawer."
        ],
        "the replayed turn comes whole, the new one word by word"
    );
    // The journal holds each model step once.
    let keys: Vec<String> = rt
        .journal("run-1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        ["finder/llm/0", "finder/tool/1/call_1", "finder/llm/2"]
    );
    rt.shutdown(Duration::from_secs(5)).await;
}
