//! The real LangGraph SDK (`langgraph-sdk` from PyPI, installed into `tests/peers/.venv` by
//! `scripts/install-python-clients.sh`) drives an agentkit server: assistants, threads, runs
//! on a thread (wait, create + join, stream, list, get, cancel), stateless runs, state,
//! history, copy, crons, store items; a thread's stream (`threads.join_stream`, resumed with
//! `last_event_id`), `runs.list` with `select` and `runs.delete` (`tests/langgraph/sdk_thread.py`). The Python side is `tests/langgraph/sdk_client.py`.
//! With workspace keys (`tests/langgraph/sdk_workspace.py`), each workspace's threads, runs
//! and store items are its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_runtime::Store;
use agentkit_server::Server;
use common::peers::{self, last_ai};
use serde_json::Value;

/// Run the SDK script `name` (in `tests/langgraph/`) with the venv's `python` and `args`.
async fn run_script(python: &std::path::Path, name: &str, args: &[&str]) -> (Value, String) {
    let script = peers::manifest_dir().join("tests/langgraph").join(name);
    peers::run_script(python, &script, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_langgraph_python_sdk_drives_an_agentkit_agent() {
    let Some(python) = peers::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::echo_server(dir.path(), "sdk-key")
        .await
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let url = served.base.clone();

    let (out, _) = run_script(&python, "sdk_client.py", &[&url, "sdk-key"]).await;
    drop(served);

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

/// `POST`/`GET` as `key`: (status, JSON body).
async fn admin_call(base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_langgraph_python_sdk_works_in_a_workspace_and_sees_only_its_own() {
    let Some(python) = peers::python() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
    let builder = agentkit_server::spec::DeclarativeBuilder::new(
        &agentkit_core::Config::new(),
        agentkit_server::spec::ModelFactory::offline(),
    );
    let server = Server::builder(store)
        .admin_key("sdk-admin")
        .spec_builder(Arc::new(builder))
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let url = served.base.clone();
    let mut keys = Vec::new();
    for ws in ["a", "b"] {
        let (s, b) = admin_call(
            &url,
            "sdk-admin",
            "/v1/workspaces",
            serde_json::json!({"org": "acme", "workspace": ws}),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = admin_call(
            &url,
            "sdk-admin",
            "/v1/keys",
            serde_json::json!({"role": "developer", "workspace": format!("acme/{ws}")}),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        let key = b["key"].as_str().unwrap().to_owned();
        let (s, b) = admin_call(
            &url,
            &key,
            "/v1/agents",
            serde_json::json!({"name": "bot", "kind": "agent",
                               "spec": {"model": "scripted", "instructions": ws}}),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        keys.push(key);
    }

    let (out, _) = run_script(&python, "sdk_workspace.py", &[&url, &keys[0], &keys[1]]).await;
    drop(served);

    // Workspace A uses the SDK as on a single-tenant server, with its own names.
    let assistants = out["a_assistants"].as_array().unwrap();
    assert_eq!(assistants.len(), 1, "{out}");
    assert_eq!(assistants[0]["assistant_id"], "bot");
    let tid = out["a_thread"]["thread_id"].as_str().unwrap();
    assert!(!tid.contains('~'), "{tid}");
    assert_eq!(last_ai(&out["a_wait2"]), "one | two", "{out}");
    assert_eq!(last_ai(&out["a_joined"]), "one | two | three", "{out}");
    assert_eq!(out["a_run"]["thread_id"], tid);
    assert_eq!(out["a_run"]["assistant_id"], "bot");
    assert_eq!(out["a_run"]["kwargs"]["input"]["thread"], tid);
    assert_eq!(out["a_run"]["status"], "success");
    assert_eq!(out["a_runs"].as_array().unwrap().len(), 3);
    assert_eq!(out["a_state"]["checkpoint"]["thread_id"], tid);
    // A copy is A's too, with the conversation.
    let copy = out["a_copy"]["thread_id"].as_str().unwrap();
    assert!(copy != tid && !copy.contains('~'), "{copy}");
    assert_eq!(out["a_copy_state"]["checkpoint"]["thread_id"], copy);
    assert_eq!(last_ai(&out["a_copy_state"]["values"]), "one | two | three");
    let mut found: Vec<&str> = out["a_search"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["thread_id"].as_str().unwrap())
        .collect();
    found.sort_unstable();
    let mut want = vec![tid, copy];
    want.sort_unstable();
    assert_eq!(found, want, "{out}");
    assert_eq!(out["a_item"]["value"]["value"], "blue");
    // A stream names A's thread and agent, and ends with the final values.
    let parts = out["a_stream"].as_array().unwrap();
    assert_eq!(parts[0]["event"], "metadata", "{parts:?}");
    assert_eq!(parts[0]["data"]["thread_id"], tid, "{parts:?}");
    assert!(
        parts
            .iter()
            .any(|p| p["event"] == "updates" && p["data"]["bot"].is_object()),
        "{parts:?}"
    );
    let last_values = parts.iter().rev().find(|p| p["event"] == "values").unwrap();
    assert_eq!(
        last_ai(&last_values["data"]),
        "one | two | three | four",
        "{parts:?}"
    );
    assert_eq!(parts.last().unwrap()["event"], "end", "{parts:?}");

    // Workspace B cannot see, use or change A's thread, run or item: each is 404 with the
    // problem a thread that does not exist gets.
    let missing = "00000000-0000-7000-8000-000000000000";
    assert_eq!(out["b_get"]["status"], 404, "{out}");
    assert_eq!(
        out["b_get"]["detail"].as_str().unwrap().replace(tid, "ID"),
        out["b_get_missing"]["detail"]
            .as_str()
            .unwrap()
            .replace(missing, "ID"),
    );
    for call in [
        "b_state",
        "b_history",
        "b_wait",
        "b_run",
        "b_runs",
        "b_copy",
        "b_update",
        "b_delete",
        "b_item",
    ] {
        assert_eq!(out[call]["status"], 404, "{call}: {out}");
    }
    assert_eq!(out["b_search"], serde_json::json!([]), "{out}");
    assert_eq!(out["b_items"]["items"], serde_json::json!([]), "{out}");
    // B's thread of the same id is B's own conversation.
    assert_eq!(out["b_same_id"]["thread_id"], tid);
    assert_eq!(out["b_same_id"]["metadata"]["owner"], "b");
    assert_eq!(last_ai(&out["b_same_id_wait"]), "mine", "{out}");
    // A's thread is as A left it.
    assert_eq!(out["a_after"]["metadata"]["owner"], "a");
    assert_eq!(
        out["a_after"]["values"]["messages"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
}

/// A TCP proxy to `upstream` on a free port that cuts its first connection (both ways) once
/// it has relayed the first `updates` event of the response, and relays later connections
/// whole. Returns its URL, and the requests of the connections after the cut, as text.
async fn cutting_proxy(upstream: &str) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let later = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&later);
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let cut = std::mem::replace(&mut first, false);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    if !cut {
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut response = Vec::new();
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if cut {
                        let at = response.len();
                        response.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&response).into_owned();
                        if let Some(u) = text.find("event: updates")
                            && let Some(end) = text[u..].find("\n\n")
                        {
                            // Relay up to the end of that event, then drop the connection.
                            let upto = (u + end + 2).saturating_sub(at).min(n);
                            let _ = cw.write_all(&buf[..upto]).await;
                            return;
                        }
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, later)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_langgraph_python_sdk_resumes_a_stream_after_its_last_event_id() {
    let Some(python) = peers::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Two tool calls, then an answer; the tool takes a moment, so the client leaves (and the
    // proxy cuts) while the run still goes.
    let step = agentkit_core::FnTool::new("step", "Takes a step", |_: Value| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, String>("stepped")
    });
    let script = agentkit_core::ScriptedProvider::new();
    let script = (0..2).fold(script, |s, _| {
        s.then_tool_call("step", serde_json::json!({}))
            .then_tool_call("step", serde_json::json!({}))
            .then_text("arrived")
    });
    let stepper = agentkit_core::AgentLlm::new(
        agentkit_core::Agent::new("stepper", "Step.").with_tool(step),
        script,
    );
    let server = inproc::echo_server(dir.path(), "sdk-key")
        .await
        .agent_llm("stepper", Arc::new(stepper), "Steps")
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let (proxy, reconnects) = cutting_proxy(&served.base).await;

    let (out, stderr) =
        run_script(&python, "sdk_resume.py", &[&served.base, "sdk-key", &proxy]).await;
    drop(served);
    let parts = |k: &str| out[k].as_array().unwrap().clone();
    let id = |p: &Value| {
        p["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id: {p}"))
            .to_owned()
    };

    // The first parts, then the rest joined after the last of them: each event of the run's
    // full stream exactly once (the full join has no input values: those are the streamed
    // request's own).
    let (first, rest, full) = (parts("first"), parts("rest"), parts("full"));
    assert_eq!(first[0]["event"], "metadata", "{first:?}");
    assert_eq!(first[1]["id"], "0-1", "the input values: {first:?}");
    assert!(
        rest.iter().any(|p| p["event"] == "updates"),
        "the rest has the run's steps: {rest:?}"
    );
    let mut resumed: Vec<Value> = first.iter().chain(&rest).cloned().collect();
    resumed.retain(|p| p["id"] != "0-1");
    assert_eq!(resumed, full);
    assert_eq!(full.last().unwrap()["event"], "end", "{full:?}");
    let mut ids: Vec<String> = full.iter().map(id).collect();
    ids.dedup();
    assert_eq!(ids.len(), full.len(), "{ids:?}");

    // The stream the proxy cut once: the SDK reconnected to its `Location` with the id of the
    // last event it had, and its caller got every event exactly once.
    let requests = reconnects.lock().unwrap().join("");
    let rid = out["dropped"][0]["data"]["run_id"].as_str().unwrap();
    assert!(
        requests.contains(&format!("/runs/{rid}/stream")),
        "the SDK reconnected to the run's stream: {requests}"
    );
    let cut_after = parts("dropped_full")
        .iter()
        .find(|p| p["event"] == "updates")
        .map(id)
        .unwrap();
    assert!(
        requests
            .to_lowercase()
            .contains(&format!("last-event-id: {cut_after}\r\n")),
        "with the id of the `updates` event it had ({cut_after}): {requests}"
    );
    let mut dropped = parts("dropped");
    assert_eq!(
        dropped.iter().filter(|p| p["id"] == "0-1").count(),
        1,
        "{dropped:?}"
    );
    dropped.retain(|p| p["id"] != "0-1");
    assert_eq!(dropped, parts("dropped_full"));
    assert!(
        !stderr.contains("without a Last-Event-ID"),
        "the SDK had an id to resume from:\n{stderr}"
    );
}

/// `threads.join_stream` (whole, then with `last_event_id` across two runs: exactly the rest),
/// `runs.list` with `select`, and `runs.delete` (gone, again a 404, a run going a 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_langgraph_python_sdk_joins_a_thread_stream_and_deletes_runs() {
    let Some(python) = peers::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::echo_server(dir.path(), "sdk-key")
        .await
        .agent_llm("holder", Arc::new(inproc::holder()), "Holds when told")
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let (out, _) = run_script(&python, "sdk_thread.py", &[&served.base, "sdk-key"]).await;
    drop(served);

    let (held, next) = (out["held"].as_str().unwrap(), out["next"].as_str().unwrap());
    let parts = out["stream"].as_array().unwrap();
    let run_of = |p: &Value| {
        let id = p["id"].as_str().unwrap_or_else(|| panic!("no id: {p}"));
        id.split_once(':').unwrap().0.to_owned()
    };
    let split = parts.iter().position(|p| run_of(p) != held).unwrap();
    assert!(
        parts[split..].iter().all(|p| run_of(p) == next),
        "{parts:?}"
    );
    for (run, part) in [(held, &parts[..split]), (next, &parts[split..])] {
        assert_eq!(part[0]["event"], "metadata", "{part:?}");
        assert_eq!(part[0]["data"]["run_id"], run);
        assert_eq!(part.last().unwrap()["event"], "end", "{part:?}");
    }
    let at = parts
        .iter()
        .position(|p| p["id"] == out["after_id"])
        .unwrap();
    assert!(at < split, "an event of the held run");
    assert_eq!(out["resumed"].as_array().unwrap(), &parts[at + 1..]);

    assert_eq!(
        out["listed"],
        serde_json::json!([{"run_id": next, "status": "success"},
                           {"run_id": held, "status": "interrupted"}])
    );
    assert!(out["deleted"].is_null(), "{out}");
    assert_eq!(out["deleted_get"]["status"], 404, "{out}");
    assert_eq!(out["deleted_again"]["status"], 404, "{out}");
    assert_eq!(out["listed_after"], serde_json::json!([{"run_id": held}]));
    assert_eq!(out["delete_going"]["status"], 409, "{out}");
    assert_eq!(out["going_after"]["status"], "interrupted", "{out}");
}
