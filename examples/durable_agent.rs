//! A durable multi-step agent on SQLite that survives a crash.
//!
//! ```text
//! cargo run --example durable_agent --features runtime -- --crash-mid-run   # aborts half-way
//! cargo run --example durable_agent --features runtime                      # resumes, finishes
//! ```
//!
//! The database (`durable_agent.db`) is kept in the current directory. The agent looks up
//! four topics with a tool, one model call per step, then writes a summary. With
//! `--crash-mid-run` the process aborts (`std::process::abort()`, no unwinding, no cleanup)
//! while the third lookup runs. Run again without the flag: the unfinished run is found,
//! completed from its journal, and the steps that were replayed (not executed again) and
//! those executed now are listed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agentkit::core::{
    Agent, AgentLlm, AugmentedLlm, CompletionRequest, CompletionResponse, Content, FnTool, Message,
    Role, RunStatus, ScriptedProvider, StartOptions, StopReason, Usage,
};
use agentkit::runtime::{JournalStore, RunStore, Runtime, SqliteStore, TargetOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

const TOPICS: [&str; 4] = ["tides", "winds", "currents", "reefs"];
const UNFINISHED: [RunStatus; 4] = [
    RunStatus::Queued,
    RunStatus::Running,
    RunStatus::WaitingInput,
    RunStatus::WaitingApproval,
];

static CRASH: AtomicBool = AtomicBool::new(false);

#[derive(Deserialize, JsonSchema)]
struct Topic {
    topic: String,
}

/// Looks a topic up, one per model turn, then summarises.
fn model() -> ScriptedProvider {
    ScriptedProvider::from_fn(|req: &CompletionRequest| {
        let done = req.messages.iter().filter(|m| m.role == Role::Tool).count();
        let (message, stop) = match TOPICS.get(done) {
            Some(topic) => (
                Message::new(
                    Role::Assistant,
                    vec![Content::tool_call(
                        format!("call_{done}"),
                        "lookup",
                        json!({ "topic": topic }),
                    )],
                ),
                StopReason::ToolUse,
            ),
            None => (
                Message::assistant(format!("Summary of {} topics: all calm.", TOPICS.len())),
                StopReason::EndTurn,
            ),
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(50, 10),
            stop,
            "scripted",
        ))
    })
}

fn agent() -> Arc<dyn AugmentedLlm> {
    let lookup = FnTool::new("lookup", "Look a topic up", |t: Topic| async move {
        println!("  executing tool lookup({})", t.topic);
        if CRASH.load(Ordering::SeqCst) && t.topic == TOPICS[2] {
            println!("  --crash-mid-run: aborting the process now");
            std::process::abort();
        }
        Ok::<_, std::convert::Infallible>(format!("notes on {}", t.topic))
    });
    Arc::new(AgentLlm::new(
        Agent::new("researcher", "Look up each topic, then summarise.").with_tool(lookup),
        model(),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crash = std::env::args().any(|a| a == "--crash-mid-run");
    CRASH.store(crash, Ordering::SeqCst);
    let path = std::env::current_dir()?.join("durable_agent.db");
    let store = Arc::new(SqliteStore::open(&path).await?);
    let runtime = Runtime::new(store.clone());
    runtime.register_agent("researcher", agent, TargetOptions::new());
    println!("database: {}", path.display());

    let unfinished = store.list_runs(&UNFINISHED, 100).await?;
    if !crash && let Some(run) = unfinished.first() {
        println!(
            "found unfinished run {} ({}, {} attempt(s) so far); resuming it",
            run.id, run.status, run.attempts
        );
        let before: Vec<String> = store
            .journal(&run.id)
            .await?
            .into_iter()
            .map(|e| e.key)
            .collect();
        runtime.recover().await?;
        let done = runtime.wait(&run.id).await?;
        let after = store.journal(&run.id).await?;
        println!("replayed from the journal (not executed again):");
        for key in &before {
            println!("  {key}");
        }
        println!("executed now:");
        for e in after.iter().filter(|e| !before.contains(&e.key)) {
            println!("  {}", e.key);
        }
        report(&done);
        return Ok(());
    }

    println!(
        "starting a new run{}",
        if crash { " (will crash mid-run)" } else { "" }
    );
    let run = runtime
        .run_sync(
            "researcher",
            json!("Research the sea."),
            StartOptions::new(),
        )
        .await?;
    println!("executed:");
    for e in store.journal(&run.id).await? {
        println!("  {}", e.key);
    }
    report(&run);
    Ok(())
}

fn report(run: &agentkit::runtime::RunRecord) {
    println!(
        "run {}: {} after {} attempt(s), {} tokens",
        run.id,
        run.status,
        run.attempts,
        run.usage.total_tokens()
    );
    if let Some(out) = &run.output {
        println!("output: {}", out["text"]);
    }
    if let Some(err) = &run.error {
        println!("error: {err}");
    }
}
