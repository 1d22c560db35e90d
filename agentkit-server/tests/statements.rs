//! How many SQL statements one agent run costs on SQLite, started over HTTP the way the load
//! benchmark starts them (`POST /v1/agents/{name}/runs`, then `Platform::wait`) and with
//! `{"wait": true}`: counted from the statement logs, sqlx's for reads (`sqlx::query`) and the
//! store's writer's for writes (`agentkit_runtime::store::sqlite::write`). A regression guard:
//! statements are the bulk of the server's CPU per run (a read is also a hand-off to a sqlx
//! connection's thread).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::{Arc, Mutex};

use agentkit_core::{
    Agent, AgentLlm, CompletionRequest, CompletionResponse, Content, FnTool, Message, Role,
    ScriptedProvider, StopReason, Usage,
};
use agentkit_runtime::{RunStatus, SqliteStore, Store};
use agentkit_server::Server;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

/// The statements logged (whitespace collapsed), in order.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

impl Statements {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Summary(String);

impl tracing::field::Visit for Summary {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "db.statement" && self.0.is_empty() {
            self.0 = value.to_owned();
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "db.statement" && self.0.is_empty() {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !logs_statements(event.metadata().target()) {
            return;
        }
        let mut s = Summary(String::new());
        event.record(&mut s);
        let sql = s.0.split_whitespace().collect::<Vec<_>>().join(" ");
        self.0.lock().unwrap().push(sql);
    }

    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        metadata.target().starts_with("sqlx") || logs_statements(metadata.target())
    }
}

/// The targets statements are logged under: sqlx's (reads) and the SQLite writer's.
fn logs_statements(target: &str) -> bool {
    target == "sqlx::query" || target == "agentkit_runtime::store::sqlite::write"
}

#[derive(Deserialize, JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

/// Calls `add` once, then answers: two model calls and one tool call, like the load bench.
fn agent() -> AgentLlm {
    let model = ScriptedProvider::from_fn(|req: &CompletionRequest| {
        let (message, stop) = if req.messages.iter().any(|m| m.role == Role::Tool) {
            (Message::assistant("done"), StopReason::EndTurn)
        } else {
            (
                Message::new(
                    Role::Assistant,
                    vec![Content::tool_call("call_0", "add", json!({"a": 2, "b": 3}))],
                ),
                StopReason::ToolUse,
            )
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(20, 5),
            stop,
            "scripted-model",
        ))
    });
    // The tool takes a while (as the bench's model does), so the run still executes when its
    // waiter starts waiting.
    let add = FnTool::new("add", "Add two integers", |x: Add| async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Ok::<_, std::convert::Infallible>(x.a + x.b)
    });
    AgentLlm::new(
        Agent::new("worker", "Add, then answer.").with_tool(add),
        model,
    )
}

#[tokio::test]
async fn a_run_over_http_on_sqlite_costs_five_statements() {
    let statements = Statements::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(statements.clone()),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("s.db")).await.unwrap());
    let server = Server::builder(store)
        .admin_key("key")
        .agent_llm("worker", Arc::new(agent()), "Adds, then answers")
        .build()
        .await
        .unwrap();
    let platform = Arc::clone(server.platform());
    let served = inproc::serve(server).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/agents/worker/runs", served.base);
    let start = |body: serde_json::Value| {
        let req = client.post(&url).bearer_auth("key").json(&body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let body: serde_json::Value = res.json().await.unwrap();
            assert!(status.is_success(), "{status} {body}");
            body
        }
    };
    // A first run warms what is read once (the agent's registration).
    let first = start(json!({"message": "go"})).await;
    platform
        .wait(first["run_id"].as_str().unwrap())
        .await
        .unwrap();
    statements.take();

    let mut per_run = Vec::new();
    for _ in 0..3 {
        let run = start(json!({"message": "go"})).await;
        let done = platform
            .wait(run["run_id"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
        per_run.push(statements.take());
    }
    for _ in 0..3 {
        let run = start(json!({"message": "go", "wait": true})).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        per_run.push(statements.take());
    }
    // What the server does on its own, whatever the runs: polling for queued runs (it
    // claims none here) and renewing leases.
    let background = |sql: &str| {
        sql.contains("WHERE id IN (SELECT id FROM runs WHERE target IN")
            || sql.starts_with("UPDATE runs SET lease_until")
    };
    for (i, s) in per_run.iter().enumerate() {
        let work: Vec<&String> = s.iter().filter(|sql| !background(sql)).collect();
        println!("run {i}: {} statements", work.len());
        for sql in &work {
            println!("  {}", sql.chars().take(70).collect::<String>());
        }
        // Per run: the run insert (stored claimed), three journal appends (model, tool,
        // model), the final update. The agent's registry entry is kept by the registry (the
        // store is not shared), so resolving the version reads nothing; the waiter reads
        // nothing either: the execution hands it the final record. (The writer's
        // BEGIN/COMMIT, shared by the writes that queue up together, are not logged.)
        assert_eq!(work.len(), 5, "run {i}: {work:#?}");
        assert!(work[0].starts_with("INSERT INTO runs"), "{work:#?}");
        assert!(
            work[1..4]
                .iter()
                .all(|s| s.starts_with("INSERT INTO journal")),
            "{work:#?}"
        );
        assert!(work[4].starts_with("UPDATE runs SET status"), "{work:#?}");
    }
}
