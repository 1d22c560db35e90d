//! The real LangGraph SDK (`langgraph-sdk` from PyPI, installed into `tests/peers/.venv` by
//! `scripts/install-python-clients.sh`) drives an agentkit server: assistants, threads, runs
//! on a thread (wait, create + join, stream, list, get, cancel), stateless runs, state,
//! history, copy, crons, store items. The Python side is `tests/langgraph/sdk_client.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Agent, AgentLlm, ScriptedProvider};
use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::Server;
use serde_json::Value;

/// The crate directory of the checkout the test runs in (cargo sets it at run time too).
fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}

/// The venv's python, or `None` (the test is skipped) when the venv is missing outside CI.
/// Under CI a missing venv fails the test.
fn python() -> Option<PathBuf> {
    let py = manifest_dir().join("../tests/peers/.venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !ci,
        "the LangGraph SDK venv is missing at {} (CI is set, so this fails): run \
         scripts/install-python-clients.sh",
        py.display()
    );
    eprintln!(
        "SKIPPED langgraph_sdk: no venv at {}; run scripts/install-python-clients.sh to test \
         against the real langgraph-sdk",
        py.display()
    );
    None
}

fn last_ai(values: &Value) -> &str {
    let msgs = values["messages"].as_array().expect("messages");
    let last = msgs.last().expect("a message");
    assert_eq!(last["type"], "ai", "{values}");
    last["content"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_langgraph_python_sdk_drives_an_agentkit_agent() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("a.db")).await.unwrap());
    let memory = Server::memory_for(Arc::clone(&store));
    let echo =
        AgentLlm::new(Agent::new("echo", "Repeat."), ScriptedProvider::echo()).with_memory(memory);
    let server = Server::builder(store)
        .admin_key("sdk-key")
        .agent_llm("echo", Arc::new(echo), "Repeats what it was told")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });

    let script = manifest_dir().join("tests/langgraph/sdk_client.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&url)
        .arg("sdk-key")
        .env_remove("LANGGRAPH_API_KEY")
        .env_remove("LANGSMITH_API_KEY")
        .env_remove("LANGCHAIN_API_KEY")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the SDK script finishes within 120 s")
        .unwrap();
    let _ = stop.send(());
    serving.await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sdk_client.py failed:\n{stderr}");
    let out: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("sdk_client.py printed no JSON ({e}); stderr:\n{stderr}"));

    // Assistants are registry entries.
    assert_eq!(out["assistants"][0]["assistant_id"], "echo", "{out}");
    assert_eq!(out["assistant"]["graph_id"], "echo");
    assert_eq!(out["schemas"]["input_schema"]["required"][0], "messages");

    // Thread continuity across runs.wait.
    let tid = out["thread"]["thread_id"].as_str().unwrap();
    assert_eq!(out["thread"]["status"], "idle");
    assert_eq!(last_ai(&out["wait1"]), "one");
    assert_eq!(last_ai(&out["wait2"]), "one | two");

    // runs.create + join + get.
    assert_eq!(out["created"]["thread_id"], tid);
    assert_eq!(out["created"]["assistant_id"], "echo");
    assert_eq!(last_ai(&out["joined"]), "one | two | three");
    assert_eq!(out["run"]["status"], "success");
    assert_eq!(out["run"]["metadata"]["source"], "sdk");

    // runs.stream: metadata first, the input and final values, updates, end.
    let parts = out["stream"].as_array().unwrap();
    assert_eq!(parts[0]["event"], "metadata", "{parts:?}");
    assert!(parts[0]["data"]["run_id"].is_string());
    assert!(parts.iter().any(|p| p["event"] == "updates"), "{parts:?}");
    let values: Vec<&Value> = parts
        .iter()
        .filter(|p| p["event"] == "values")
        .map(|p| &p["data"])
        .collect();
    assert_eq!(values.len(), 2, "{parts:?}");
    assert_eq!(last_ai(values[1]), "one | two | three | four");
    assert_eq!(parts.last().unwrap()["event"], "end");

    // Stateless runs.
    assert_eq!(last_ai(&out["stateless_wait"]), "solo");
    let sparts = out["stateless_stream"].as_array().unwrap();
    assert_eq!(sparts[0]["event"], "metadata");
    let last_values = sparts
        .iter()
        .rev()
        .find(|p| p["event"] == "values")
        .unwrap();
    assert_eq!(last_ai(&last_values["data"]), "alone");

    let tuples = out["messages_stream"].as_array().unwrap();
    let message = tuples.iter().find(|p| p["event"] == "messages").unwrap();
    assert_eq!(message["data"][0]["content"], "chunks", "{tuples:?}");
    assert_eq!(message["data"][1]["langgraph_node"], "echo");

    // runs.list: the thread's four runs, newest first.
    let runs = out["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "success"));
    assert_ne!(runs[0]["run_id"], out["created"]["run_id"]);

    // State, history, get, search, update, copy.
    assert_eq!(last_ai(&out["state"]["values"]), "one | two | three | four");
    assert_eq!(out["state"]["next"].as_array().unwrap().len(), 0);
    let history = out["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(last_ai(&history[1]["values"]), "one | two | three");
    assert_eq!(out["thread_after"]["status"], "idle");
    assert_eq!(
        out["thread_after"]["values"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert_eq!(out["search"][0]["thread_id"], tid);
    assert_eq!(out["updated"]["metadata"]["plan"], "pro");
    assert_eq!(out["updated"]["metadata"]["user"], "sdk");
    assert_ne!(out["copy"]["thread_id"], tid);

    // Errors the SDK raises.
    assert_eq!(out["cancel_finished"]["error"], "ConflictError", "{out}");
    assert_eq!(out["cancel_finished"]["status"], 409);
    assert_eq!(out["rollback"]["status"], 422, "{out}");
    // `enqueue`: the second run waits for the first, then both succeed.
    assert_eq!(out["enqueued"][0]["status"], "success", "{out}");
    assert_eq!(out["enqueued"][1]["status"], "success", "{out}");
    assert_eq!(out["enqueued"][1]["multitask_strategy"], "enqueue", "{out}");

    // Crons.
    assert_eq!(out["cron"]["thread_id"], tid);
    assert_eq!(out["cron"]["timezone"], "Europe/Lisbon");
    assert!(out["cron"]["next_run_date"].is_string(), "{out}");
    assert_eq!(out["crons"][0]["cron_id"], out["cron"]["cron_id"]);
    assert_eq!(out["cron_updated"]["enabled"], false);
    assert_eq!(out["crons_left"], 0);

    // Store items.
    assert_eq!(out["item"]["value"]["color"], "blue");
    assert_eq!(out["items"]["items"][0]["key"], "prefs");
    assert_eq!(out["namespaces"]["namespaces"][0][0], "users");
    assert_eq!(out["item_deleted"]["status"], 404);

    // threads.delete.
    assert_eq!(out["deleted"]["error"], "NotFoundError");
}
