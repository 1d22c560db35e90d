#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Durable agent runs on conversation threads: a run on a thread continues it, other threads
//! and thread-less runs never see it, and threads kept in the store survive a restart.

use std::sync::Arc;

use agentkit_core::{Agent, AgentLlm, AugmentedLlm, RunStatus, ScriptedProvider, StartOptions};
use agentkit_runtime::{Runtime, SqliteStore, Store, StoreMemory, TargetOptions};
use serde_json::json;

/// Answers with the texts of every user message it was sent, so a test reads the history.
fn echo_history() -> Arc<ScriptedProvider> {
    Arc::new(ScriptedProvider::echo())
}

async fn runtime(store: Arc<dyn Store>) -> Runtime {
    let rt = Runtime::new(Arc::clone(&store));
    let agent: Arc<dyn AugmentedLlm> = Arc::new(
        AgentLlm::shared(Agent::new("chat", "Chat."), echo_history())
            .with_memory(Arc::new(StoreMemory::new(store))),
    );
    rt.register_agent("chat", move || agent.clone(), TargetOptions::new());
    rt
}

async fn say(rt: &Runtime, input: serde_json::Value) -> String {
    let id = rt
        .start_run("chat", input, StartOptions::new())
        .await
        .unwrap();
    let run = rt.wait(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    run.output.unwrap()["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn runs_on_a_thread_continue_it_and_nothing_else_sees_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("threads.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let rt = runtime(Arc::clone(&store)).await;

    assert_eq!(
        say(&rt, json!({"message": "I am Ana", "thread": "ana"})).await,
        "I am Ana"
    );
    assert_eq!(
        say(&rt, json!({"message": "Who am I?", "thread": "ana"})).await,
        "I am Ana | Who am I?"
    );
    // Another thread, and a run on no thread, start empty.
    assert_eq!(
        say(&rt, json!({"message": "I am Ben", "thread": "ben"})).await,
        "I am Ben"
    );
    assert_eq!(say(&rt, json!("Who am I?")).await, "Who am I?");
    assert_eq!(say(&rt, json!({"message": "Who am I?"})).await, "Who am I?");
    rt.shutdown(std::time::Duration::from_secs(1)).await;

    // A new process on the same database: the thread is still there.
    drop(rt);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let rt = runtime(store).await;
    assert_eq!(
        say(&rt, json!({"message": "Again?", "thread": "ana"})).await,
        "I am Ana | Who am I? | Again?"
    );
    assert_eq!(
        say(&rt, json!({"message": "Me?", "thread": "ben"})).await,
        "I am Ben | Me?"
    );
}

#[tokio::test]
async fn a_bad_thread_is_refused_before_anything_is_stored() {
    let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
    let rt = runtime(store).await;
    for bad in [
        json!({"message": "hi", "thread": 7}),
        json!({"message": "hi", "thread": ""}),
    ] {
        let err = rt
            .start_run("chat", bad, StartOptions::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"thread\"?: string"), "{err}");
    }
}
