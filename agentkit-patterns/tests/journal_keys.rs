#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Journal keys of composed runs depend on the run's structure, never on timing: a run
//! replayed from its journal, with every branch now finishing in another order, gets each
//! branch's own recorded results back and calls no model and no tool.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlmExt, CompletionRequest, CompletionResponse, Content, FnTool,
    MemoryJournal, Message, Role, RunContext, ScriptedProvider, StopReason, Usage,
};
use agentkit_patterns::Parallel;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, schemars::JsonSchema)]
struct Note {
    agent: String,
    n: u32,
}

/// A model that calls `note` twice, then answers with what the tool returned.
fn model(agent: &'static str) -> ScriptedProvider {
    ScriptedProvider::from_fn(move |req: &CompletionRequest| {
        let results: Vec<String> = req
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .flat_map(|m| m.content.iter())
            .filter_map(|c| match c {
                Content::ToolResult { content, .. } => {
                    Some(agentkit_core::message::join_text(content))
                }
                _ => None,
            })
            .collect();
        let message = if results.len() < 2 {
            Message::new(
                Role::Assistant,
                vec![Content::tool_call(
                    format!("call_{}", results.len()),
                    "note",
                    json!({"agent": agent, "n": results.len()}),
                )],
            )
        } else {
            Message::assistant(format!("{agent}: {}", results.join(", ")))
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(1, 1),
            StopReason::EndTurn,
            "m",
        ))
    })
}

/// Four agents in parallel; each tool call sleeps a time that depends on `order`, so the
/// branches interleave differently from one run to the next.
fn parallel(order: u64, executed: Arc<AtomicU32>) -> Parallel {
    let mut builder = Parallel::builder("team");
    for (i, name) in ["ana", "ben", "cy", "dee"].into_iter().enumerate() {
        let executed = executed.clone();
        let note = FnTool::new("note", "Write a note", move |n: Note| {
            let executed = executed.clone();
            let delay = (i as u64 * 7 + u64::from(n.n) * 3 + order * 5) % 13;
            async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                executed.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(format!("{}#{}", n.agent, n.n))
            }
        });
        builder = builder.with_branch(AgentLlm::new(
            Agent::new(name, "Take notes.").with_tool(note),
            model(name),
        ));
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn a_parallel_run_replays_each_branch_from_its_own_keys() {
    let executed = Arc::new(AtomicU32::new(0));
    let journal = Arc::new(MemoryJournal::new());
    let first = parallel(0, executed.clone())
        .generate_str("go", &RunContext::new().with_journal(journal.clone()))
        .await
        .unwrap();
    assert_eq!(executed.load(Ordering::SeqCst), 8);
    for agent in ["ana", "ben", "cy", "dee"] {
        assert!(
            first.contains(&format!("{agent}: {agent}#0, {agent}#1")),
            "{first}"
        );
    }
    let keys: Vec<String> = journal.entries().into_iter().map(|(k, _)| k).collect();
    assert!(
        keys.iter().any(|k| k.starts_with("team[2]#2/cy/tool/")),
        "{keys:?}"
    );

    // Replay with other timings: every branch gets its own results, nothing runs again.
    for order in 1..4 {
        let replay = Arc::new(MemoryJournal::from_entries(journal.entries()));
        let again = parallel(order, executed.clone())
            .generate_str("go", &RunContext::new().with_journal(replay.clone()))
            .await
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(executed.load(Ordering::SeqCst), 8, "no tool ran again");
        assert!(
            replay.divergences().is_empty(),
            "{:?}",
            replay.divergences()
        );
    }
}

#[tokio::test]
async fn agents_called_as_tools_in_parallel_journal_under_their_call() {
    // A parent calls two sub-agents at once; each makes its own model and tool calls.
    let executed = Arc::new(AtomicU32::new(0));
    let run = |order: u64, journal: Arc<MemoryJournal>| {
        let sub = |name: &'static str, i: u64| {
            let executed = executed.clone();
            let note = FnTool::new("note", "Write a note", move |n: Note| {
                let executed = executed.clone();
                let delay = (i * 7 + u64::from(n.n) * 3 + order * 5) % 13;
                async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    executed.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(format!("{}#{}", n.agent, n.n))
                }
            });
            AgentLlm::new(Agent::new(name, "Take notes.").with_tool(note), model(name)).as_tool()
        };
        let parent_model = ScriptedProvider::from_fn(|req: &CompletionRequest| {
            let done = req.messages.iter().any(|m| m.role == Role::Tool);
            let message = if done {
                let texts: Vec<String> = req
                    .messages
                    .last()
                    .unwrap()
                    .content
                    .iter()
                    .filter_map(|c| match c {
                        Content::ToolResult { content, .. } => {
                            Some(agentkit_core::message::join_text(content))
                        }
                        _ => None,
                    })
                    .collect();
                Message::assistant(texts.join(" | "))
            } else {
                Message::new(
                    Role::Assistant,
                    vec![
                        Content::tool_call("a", "ana", json!({"message": "go"})),
                        Content::tool_call("b", "ben", json!({"message": "go"})),
                    ],
                )
            };
            Ok(CompletionResponse::new(
                message,
                Usage::new(1, 1),
                StopReason::EndTurn,
                "m",
            ))
        });
        let parent = AgentLlm::new(
            Agent::new("lead", "Delegate.")
                .with_tool(sub("ana", 0))
                .with_tool(sub("ben", 1)),
            parent_model,
        );
        async move {
            parent
                .generate_str("go", &RunContext::new().with_journal(journal))
                .await
                .unwrap()
        }
    };
    let journal = Arc::new(MemoryJournal::new());
    let first = run(0, journal.clone()).await;
    assert_eq!(executed.load(Ordering::SeqCst), 4);
    assert!(
        first.contains("ana: ana#0, ana#1") && first.contains("ben: ben#0, ben#1"),
        "{first}"
    );
    // A crash while both sub-agents were working: the parent's tool results and its final
    // answer were never journaled, only what the sub-agents did inside their calls.
    let inside: Vec<(String, serde_json::Value)> = journal
        .entries()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("lead/") || k.matches('/').count() > 3)
        .collect();
    assert!(
        inside.iter().any(|(k, _)| k.contains("/ana/tool/")),
        "{inside:?}"
    );
    for order in 1..4 {
        let replay = Arc::new(MemoryJournal::from_entries(
            std::iter::once(("lead/llm/0".to_owned(), journal.entries()[0].1.clone()))
                .chain(inside.clone()),
        ));
        assert_eq!(run(order, replay).await, first);
        assert_eq!(executed.load(Ordering::SeqCst), 4, "no tool ran again");
    }
}
