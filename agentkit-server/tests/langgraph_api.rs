//! The LangGraph Agent Server API subset and the Agent Protocol routes over real HTTP:
//! assistants, threads, runs on threads (background, wait, join, stream, cancel, list),
//! stateless runs, state and history, store items, and the 422 problems for what agentkit
//! does not support yet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

struct Running {
    base: String,
    _dir: tempfile::TempDir,
    _served: inproc::InProcess,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::echo_server(dir.path(), "test-key")
        .await
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Running {
        base: served.base.clone(),
        _dir: dir,
        _served: served,
    }
}

async fn call(r: &Running, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    inproc::call_with_api_key(&r.base, "test-key", method, path, body).await
}

fn said(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

fn last_ai(values: &Value) -> String {
    let msgs = values["messages"].as_array().unwrap();
    let last = msgs.last().unwrap();
    assert_eq!(last["type"], "ai", "{values}");
    last["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn assistants_are_registry_entries() {
    let r = start().await;
    let (s, found) = call(&r, Method::POST, "/assistants/search", Some(json!({}))).await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found[0]["assistant_id"], "echo");
    assert_eq!(found[0]["graph_id"], "echo");
    assert!(
        found[0]["created_at"].as_str().unwrap().ends_with('Z'),
        "ISO 8601: {found}"
    );
    let (s, one) = call(&r, Method::GET, "/assistants/echo", None).await;
    assert_eq!(s, 200);
    assert_eq!(one["description"], "Repeats what it was told");
    let (s, schemas) = call(&r, Method::GET, "/assistants/echo/schemas", None).await;
    assert_eq!(s, 200);
    assert_eq!(schemas["input_schema"]["required"][0], "messages");
    let (s, missing) = call(&r, Method::GET, "/assistants/nope", None).await;
    assert_eq!(s, 404);
    assert!(missing["detail"].as_str().unwrap().contains("agent names"));
    let (_, n) = call(&r, Method::POST, "/assistants/count", Some(json!({}))).await;
    assert_eq!(n, 1);
    // Agent Protocol names the same entries agents.
    let (s, agents) = call(&r, Method::POST, "/agents/search", Some(json!({}))).await;
    assert_eq!(s, 200);
    assert_eq!(agents[0]["agent_id"], "echo");
    assert_eq!(agents[0]["capabilities"]["ap.io.messages"], true);
    let (s, _) = call(&r, Method::GET, "/agents/echo/schemas", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn runs_on_a_thread_wait_join_list_and_cancel() {
    let r = start().await;
    let (s, t) = call(
        &r,
        Method::POST,
        "/threads",
        Some(json!({"metadata": {"user": "ada"}})),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["status"], "idle");
    let tid = t["thread_id"].as_str().unwrap().to_owned();
    let body = |text: &str| json!({"assistant_id": "echo", "input": said(text)});

    let (s, one) = call(
        &r,
        Method::POST,
        &format!("/threads/{tid}/runs/wait"),
        Some(body("one")),
    )
    .await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(last_ai(&one), "one");
    let (_, two) = call(
        &r,
        Method::POST,
        &format!("/threads/{tid}/runs/wait"),
        Some(body("two")),
    )
    .await;
    assert_eq!(last_ai(&two), "one | two");
    assert_eq!(two["messages"].as_array().unwrap().len(), 4);

    let (s, run) = call(
        &r,
        Method::POST,
        &format!("/threads/{tid}/runs"),
        Some(json!({"assistant_id": "echo", "input": said("three"), "metadata": {"k": "v"}})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let rid = run["run_id"].as_str().unwrap().to_owned();
    assert_eq!(run["thread_id"], tid.as_str());
    assert!(matches!(
        run["status"].as_str().unwrap(),
        "pending" | "running" | "success"
    ));
    let (s, joined) = call(
        &r,
        Method::GET,
        &format!("/threads/{tid}/runs/{rid}/join"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(last_ai(&joined), "one | two | three");
    let (_, got) = call(&r, Method::GET, &format!("/threads/{tid}/runs/{rid}"), None).await;
    assert_eq!(got["status"], "success");
    assert_eq!(got["metadata"]["k"], "v");
    assert_eq!(got["assistant_id"], "echo");

    let (_, list) = call(&r, Method::GET, &format!("/threads/{tid}/runs"), None).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["run_id"], rid.as_str(), "newest first");
    let (_, only) = call(
        &r,
        Method::GET,
        &format!("/threads/{tid}/runs?limit=1&offset=1&status=success"),
        None,
    )
    .await;
    assert_eq!(only.as_array().unwrap().len(), 1);

    // Cancelling a finished run is a conflict.
    let (s, p) = call(
        &r,
        Method::POST,
        &format!("/threads/{tid}/runs/{rid}/cancel"),
        None,
    )
    .await;
    assert_eq!(s, 409, "{p}");

    // State, history, search, patch, copy.
    let (_, state) = call(&r, Method::GET, &format!("/threads/{tid}/state"), None).await;
    assert_eq!(last_ai(&state["values"]), "one | two | three");
    assert_eq!(state["checkpoint"]["checkpoint_id"], "6");
    assert_eq!(state["next"], json!([]));
    let (_, hist) = call(
        &r,
        Method::POST,
        &format!("/threads/{tid}/history"),
        Some(json!({"limit": 2})),
    )
    .await;
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 2);
    assert_eq!(last_ai(&hist[1]["values"]), "one | two");
    let (_, before) = call(
        &r,
        Method::GET,
        &format!("/threads/{tid}/history?before=4"),
        None,
    )
    .await;
    assert_eq!(before.as_array().unwrap().len(), 1);
    let (_, at) = call(&r, Method::GET, &format!("/threads/{tid}/state/2"), None).await;
    assert_eq!(last_ai(&at["values"]), "one");
    let (_, found) = call(
        &r,
        Method::POST,
        "/threads/search",
        Some(json!({"metadata": {"user": "ada"}, "status": "idle"})),
    )
    .await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["thread_id"], tid.as_str());
    let (_, later) = call(
        &r,
        Method::POST,
        "/threads",
        Some(json!({"metadata": {"user": "ada"}})),
    )
    .await;
    let (_, newest) = call(
        &r,
        Method::POST,
        "/threads/search",
        Some(json!({"metadata": {"user": "ada"}})),
    )
    .await;
    assert_eq!(
        newest[0]["thread_id"], later["thread_id"],
        "newest first by default"
    );
    let (_, oldest) = call(
        &r,
        Method::POST,
        "/threads/search",
        Some(json!({"metadata": {"user": "ada"}, "sort_order": "asc", "limit": 1})),
    )
    .await;
    assert_eq!(oldest.as_array().unwrap().len(), 1);
    assert_eq!(oldest[0]["thread_id"], tid.as_str());
    let (_, n) = call(
        &r,
        Method::POST,
        "/threads/count",
        Some(json!({"metadata": {"user": "ada"}})),
    )
    .await;
    assert_eq!(n, 2);
    let (s, _) = call(
        &r,
        Method::POST,
        "/threads/search",
        Some(json!({"sort_by": "values"})),
    )
    .await;
    assert_eq!(s, 422);
    let (s, patched) = call(
        &r,
        Method::PATCH,
        &format!("/threads/{tid}"),
        Some(json!({"metadata": {"plan": "pro"}})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(patched["metadata"], json!({"user": "ada", "plan": "pro"}));
    let (s, copy) = call(&r, Method::POST, &format!("/threads/{tid}/copy"), None).await;
    assert_eq!(s, 200, "{copy}");
    assert_ne!(copy["thread_id"], tid.as_str());
    assert_eq!(last_ai(&copy["values"]), "one | two | three");

    let (s, _) = call(&r, Method::DELETE, &format!("/threads/{tid}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&r, Method::GET, &format!("/threads/{tid}"), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn stateless_runs_and_agent_protocol_answers() {
    let r = start().await;
    let (s, v) = call(
        &r,
        Method::POST,
        "/runs/wait",
        Some(json!({"assistant_id": "echo", "input": said("solo")})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(last_ai(&v), "solo");
    assert_eq!(v["messages"][0]["type"], "human");
    // Agent Protocol: `agent_id` and `messages`, answered with the run.
    let (s, ap) = call(
        &r,
        Method::POST,
        "/runs/wait",
        Some(json!({"agent_id": "echo", "messages": [{"role": "user", "content": [{"type": "text", "text": "ap"}]}]})),
    )
    .await;
    assert_eq!(s, 200, "{ap}");
    assert_eq!(ap["run"]["status"], "success");
    assert_eq!(last_ai(&ap["values"]), "ap");
    let rid = ap["run"]["run_id"].as_str().unwrap();
    let (_, got) = call(&r, Method::GET, &format!("/runs/{rid}"), None).await;
    assert_eq!(got["agent_id"], "echo");
    let (_, waited) = call(&r, Method::GET, &format!("/runs/{rid}/wait"), None).await;
    assert_eq!(last_ai(&waited["values"]), "ap");
    let (_, searched) = call(
        &r,
        Method::POST,
        "/runs/search",
        Some(json!({"agent_id": "echo", "status": "success", "limit": 5})),
    )
    .await;
    assert_eq!(searched.as_array().unwrap().len(), 2);
    let (s, _) = call(&r, Method::POST, &format!("/runs/{rid}/cancel"), None).await;
    assert_eq!(s, 409);
    // Background stateless run.
    let (s, bg) = call(
        &r,
        Method::POST,
        "/runs",
        Some(json!({"assistant_id": "echo", "input": "plain"})),
    )
    .await;
    assert_eq!(s, 200, "{bg}");
    assert!(bg["thread_id"].is_null());
}

#[tokio::test]
async fn unsupported_features_and_bad_input_are_problems() {
    let r = start().await;
    let (_, t) = call(&r, Method::POST, "/threads", None).await;
    let tid = t["thread_id"].as_str().unwrap().to_owned();
    for (body, slug) in [
        (
            json!({"assistant_id": "echo", "input": said("x"), "multitask_strategy": "rollback"}),
            "not-supported",
        ),
        (
            json!({"assistant_id": "echo", "command": {"resume": "ok"}}),
            "not-supported",
        ),
        (
            json!({"assistant_id": "echo", "input": said("x"), "interrupt_before": ["tools"]}),
            "not-supported",
        ),
        (
            json!({"assistant_id": "echo", "input": {"foo": 1}}),
            "invalid-body",
        ),
        (json!({"input": said("x")}), "invalid-body"),
        (
            json!({"assistant_id": "echo", "input": said("x"), "stream_mode": 5}),
            "invalid-body",
        ),
        (
            json!({"assistant_id": "echo", "input": said("x"), "stream_mode": ["values", "bogus"]}),
            "invalid-body",
        ),
    ] {
        let (s, p) = call(
            &r,
            Method::POST,
            &format!("/threads/{tid}/runs/wait"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 422, "{body} -> {p}");
        assert_eq!(p["type"], format!("urn:agentkit:problem:{slug}"), "{p}");
    }
    // None of them started a run on the thread.
    let (s, runs) = call(&r, Method::GET, &format!("/threads/{tid}/runs"), None).await;
    assert_eq!(s, 200, "{runs}");
    assert_eq!(runs, json!([]), "a refused request stores no run");
    let (s, p) = call(
        &r,
        Method::POST,
        "/runs/stream",
        Some(json!({"assistant_id": "echo", "input": said("x"), "stream_mode": "bogus"})),
    )
    .await;
    assert_eq!(s, 422, "{p}");
    let (s, _) = call(
        &r,
        Method::POST,
        "/threads/missing/runs/wait",
        Some(json!({"assistant_id": "echo", "input": said("x")})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = call(
        &r,
        Method::POST,
        "/threads/made-on-demand/runs/wait",
        Some(json!({"assistant_id": "echo", "input": said("x"), "if_not_exists": "create"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(last_ai(&v), "x");
    let (s, _) = call(
        &r,
        Method::POST,
        "/threads",
        Some(json!({"thread_id": tid})),
    )
    .await;
    assert_eq!(s, 409);
    let (s, _) = call(
        &r,
        Method::POST,
        "/threads",
        Some(json!({"thread_id": tid, "if_exists": "do_nothing"})),
    )
    .await;
    assert_eq!(s, 200);
    let res = reqwest::Client::new()
        .post(format!("{}/threads/search", r.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the LangGraph routes need the key too");
}

#[tokio::test]
async fn runs_stream_sends_metadata_values_updates_and_end() {
    let r = start().await;
    let (_, t) = call(&r, Method::POST, "/threads", Some(json!({}))).await;
    let tid = t["thread_id"].as_str().unwrap().to_owned();
    call(
        &r,
        Method::POST,
        &format!("/threads/{tid}/runs/wait"),
        Some(json!({"assistant_id": "echo", "input": said("one")})),
    )
    .await;
    let res = reqwest::Client::new()
        .post(format!("{}/threads/{tid}/runs/stream", r.base))
        .header("x-api-key", "test-key")
        .header("accept", "text/event-stream")
        .json(&json!({"assistant_id": "echo", "input": said("two"), "stream_mode": ["values", "updates"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-location"]
            .to_str()
            .unwrap()
            .starts_with(&format!("/threads/{tid}/runs/"))
    );
    let text = tokio::time::timeout(Duration::from_secs(20), res.text())
        .await
        .unwrap()
        .unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            Some((name.to_owned(), serde_json::from_str(data).unwrap()))
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"metadata"), "{text}");
    assert_eq!(names.last(), Some(&"end"), "{text}");
    assert!(names.contains(&"updates"), "{text}");
    let values: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "values")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values.len(), 2, "{text}");
    assert_eq!(
        values[0]["messages"].as_array().unwrap().len(),
        3,
        "the input first"
    );
    assert_eq!(last_ai(values[1]), "one | two");
    let rid = events[0].1["run_id"].as_str().unwrap();
    // Joining the finished run's stream replays its end.
    let joined = reqwest::Client::new()
        .get(format!("{}/threads/{tid}/runs/{rid}/stream", r.base))
        .header("x-api-key", "test-key")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(joined.contains("event: values"), "{joined}");
    assert!(joined.contains("one | two"), "{joined}");
    // Stateless stream.
    let text = reqwest::Client::new()
        .post(format!("{}/runs/stream", r.base))
        .header("x-api-key", "test-key")
        .json(&json!({"assistant_id": "echo", "input": said("alone")}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("event: metadata"), "{text}");
    assert!(text.contains("\"alone\""), "{text}");
    assert!(text.contains("event: end"), "{text}");
    // messages-tuple: each model answer as [message, metadata].
    let text = reqwest::Client::new()
        .post(format!("{}/runs/stream", r.base))
        .header("x-api-key", "test-key")
        .json(&json!({"assistant_id": "echo", "input": said("tuple"), "stream_mode": "messages-tuple"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = text
        .split("\n\n")
        .find(|b| b.contains("event: messages\n"))
        .and_then(|b| b.lines().find_map(|l| l.strip_prefix("data: ")))
        .unwrap_or_else(|| panic!("no messages event: {text}"));
    let tuple: Value = serde_json::from_str(data).unwrap();
    assert_eq!(tuple[0]["content"], "tuple");
    assert_eq!(tuple[1]["langgraph_node"], "echo");
    assert!(
        !text.contains("event: values"),
        "values were not asked for: {text}"
    );
}

/// The events of an SSE body: (`id`, `event`, `data`).
fn sse_events(text: &str) -> Vec<(Option<String>, String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            Some((
                id.map(str::to_owned),
                name.to_owned(),
                serde_json::from_str(data).unwrap(),
            ))
        })
        .collect()
}

/// An id `{seq}-{slot}` as numbers, to compare.
fn id_key(id: &str) -> (u64, u64) {
    let (seq, slot) = id.split_once('-').unwrap_or_else(|| panic!("id {id}"));
    (seq.parse().unwrap(), slot.parse().unwrap())
}

/// `GET` a join stream as the test key with `Last-Event-ID: after`: (status, body).
async fn join(r: &Running, path: &str, after: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", r.base))
        .header("x-api-key", "test-key");
    if let Some(a) = after {
        req = req.header("last-event-id", a);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(20), res.text())
        .await
        .unwrap()
        .unwrap();
    (status, body)
}

#[tokio::test]
async fn stream_events_have_ids_and_a_join_resumes_after_any_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    // Two tool calls, then an answer: model answers and tool results, each made into several
    // events by the modes below.
    let stepper = agentkit_core::AgentLlm::new(
        agentkit_core::Agent::new("stepper", "Step.").with_tool(inproc::counted_tool(
            "step",
            "Takes a step",
            "stepped",
            &calls,
        )),
        agentkit_core::ScriptedProvider::new()
            .then_tool_call("step", json!({}))
            .then_tool_call("step", json!({}))
            .then_text("arrived"),
    );
    let server = inproc::echo_server(dir.path(), "test-key")
        .await
        .agent_llm("stepper", std::sync::Arc::new(stepper), "Steps")
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let r = Running {
        base: served.base.clone(),
        _dir: dir,
        _served: served,
    };
    let (_, t) = call(&r, Method::POST, "/threads", Some(json!({}))).await;
    let tid = t["thread_id"].as_str().unwrap().to_owned();
    let modes = json!(["values", "updates", "messages-tuple", "messages"]);
    let res = reqwest::Client::new()
        .post(format!("{}/threads/{tid}/runs/stream", r.base))
        .header("x-api-key", "test-key")
        .json(&json!({"assistant_id": "stepper", "input": said("go"), "stream_mode": modes}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let text = tokio::time::timeout(Duration::from_secs(20), res.text())
        .await
        .unwrap()
        .unwrap();
    let streamed = sse_events(&text);
    let rid = streamed[0].2["run_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/threads/{tid}/runs/{rid}/stream"));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Every event has an id, and they increase.
    let ids: Vec<&str> = streamed
        .iter()
        .map(|(id, name, _)| {
            id.as_deref()
                .unwrap_or_else(|| panic!("`{name}` has no id: {text}"))
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| id_key(w[0]) < id_key(w[1])),
        "{ids:?}"
    );
    let names: Vec<&str> = streamed.iter().map(|(_, n, _)| n.as_str()).collect();
    for name in ["updates", "messages", "messages/complete"] {
        assert!(
            names.iter().filter(|n| **n == name).count() >= 2,
            "{name}: {names:?}"
        );
    }
    assert_eq!(names.last(), Some(&"end"), "{names:?}");

    // A join without modes streams the run's, from the store: the same events with the same
    // ids, but for the input values of the streamed request.
    let (status, joined) = join(&r, &location, None).await;
    assert_eq!(status, 200, "{joined}");
    let joined = sse_events(&joined);
    let without_input: Vec<_> = streamed
        .iter()
        .filter(|(id, _, _)| id.as_deref() != Some("0-1"))
        .cloned()
        .collect();
    assert_eq!(joined, without_input);

    // Resuming after any id sends exactly the events after it.
    for (k, (id, _, _)) in streamed.iter().enumerate() {
        let (status, rest) = join(&r, &location, id.as_deref()).await;
        assert_eq!(status, 200, "{rest}");
        let want: Vec<_> = joined
            .iter()
            .filter(|(j, _, _)| id_key(j.as_deref().unwrap()) > id_key(id.as_deref().unwrap()))
            .cloned()
            .collect();
        assert_eq!(sse_events(&rest), want, "after {id:?}");
        assert_eq!(
            want.len(),
            streamed.len() - k - 1 - usize::from(k == 0),
            "after {id:?}: every later event but the input values"
        );
    }

    // Modes asked for by repeating `stream_mode`: only those, with the same ids.
    let (status, updates) = join(
        &r,
        &format!("{location}?stream_mode=updates&stream_mode=values"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{updates}");
    let want: Vec<_> = joined
        .iter()
        .filter(|(_, n, _)| ["metadata", "updates", "values", "end"].contains(&n.as_str()))
        .cloned()
        .collect();
    assert_eq!(sse_events(&updates), want);

    // The Agent Protocol's run stream resumes the same way.
    let last_update = joined
        .iter()
        .rev()
        .find(|(_, n, _)| n == "updates")
        .unwrap();
    let (status, rest) = join(&r, &format!("/runs/{rid}/stream"), last_update.0.as_deref()).await;
    assert_eq!(status, 200, "{rest}");
    let rest = sse_events(&rest);
    assert_eq!(rest, joined[joined.len() - rest.len()..].to_vec());
    assert!(rest.iter().all(|(_, n, _)| n != "updates"), "{rest:?}");

    // An id this stream never sent is refused with a problem saying what an id is.
    for bad in ["abc", "3-x", "-1", "1-2-3", "+4"] {
        for path in [location.clone(), format!("/runs/{rid}/stream")] {
            let res = reqwest::Client::new()
                .get(format!("{}{path}", r.base))
                .header("x-api-key", "test-key")
                .header("last-event-id", bad)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{bad}");
            assert_eq!(
                res.headers()["content-type"],
                "application/problem+json",
                "{bad}"
            );
            let problem: Value = res.json().await.unwrap();
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains("Last-Event-ID") && detail.contains(bad),
                "{problem}"
            );
        }
    }
}

#[tokio::test]
async fn store_items_put_get_search_namespaces_delete() {
    let r = start().await;
    let (s, p) = call(
        &r,
        Method::PUT,
        "/store/items",
        Some(json!({"namespace": ["users", "u1"], "key": "prefs", "value": {"color": "blue"}})),
    )
    .await;
    assert_eq!(s, 204, "{p}");
    call(
        &r,
        Method::PUT,
        "/store/items",
        Some(json!({"namespace": ["users", "u2"], "key": "prefs", "value": {"color": "red"}})),
    )
    .await;
    let (s, item) = call(
        &r,
        Method::GET,
        "/store/items?namespace=users.u1&key=prefs",
        None,
    )
    .await;
    assert_eq!(s, 200, "{item}");
    assert_eq!(item["value"]["color"], "blue");
    assert_eq!(item["namespace"], json!(["users", "u1"]));
    let (_, found) = call(
        &r,
        Method::POST,
        "/store/items/search",
        Some(json!({"namespace_prefix": ["users"], "filter": {"color": "red"}})),
    )
    .await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["namespace"], json!(["users", "u2"]));
    let (_, ns) = call(
        &r,
        Method::POST,
        "/store/namespaces",
        Some(json!({"max_depth": 1})),
    )
    .await;
    assert_eq!(ns["namespaces"], json!([["users"]]));
    let (s, _) = call(
        &r,
        Method::DELETE,
        "/store/items",
        Some(json!({"namespace": ["users", "u1"], "key": "prefs"})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        &r,
        Method::GET,
        "/store/items?namespace=users.u1&key=prefs",
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &r,
        Method::POST,
        "/store/items/search",
        Some(json!({"namespace_prefix": ["users"], "query": "blue things"})),
    )
    .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn crons_start_runs_on_their_thread_until_disabled_or_deleted() {
    let r = start().await;
    let (_, t) = call(&r, Method::POST, "/threads", Some(json!({}))).await;
    let tid = t["thread_id"].as_str().unwrap().to_owned();
    let (s, cron) = call(
        &r,
        Method::POST,
        &format!("/threads/{tid}/runs/crons"),
        Some(
            json!({"assistant_id": "echo", "schedule": "* * * * * *", "input": said("tick"),
                    "metadata": {"team": "ops"}}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{cron}");
    let cid = cron["cron_id"].as_str().unwrap().to_owned();
    assert_eq!(cron["thread_id"], tid.as_str());
    assert!(cron["next_run_date"].is_string(), "{cron}");
    // The server evaluates crons every two seconds: a run appears on the thread.
    let mut runs = Vec::new();
    for _ in 0..100 {
        let (_, list) = call(&r, Method::GET, &format!("/threads/{tid}/runs"), None).await;
        runs = list.as_array().unwrap().clone();
        if runs.iter().any(|r| r["status"] == "success") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        runs.iter().any(|r| r["status"] == "success"),
        "no cron run: {runs:?}"
    );
    let (_, state) = call(&r, Method::GET, &format!("/threads/{tid}/state"), None).await;
    assert!(last_ai(&state["values"]).starts_with("tick"), "{state}");

    let (_, found) = call(
        &r,
        Method::POST,
        "/runs/crons/search",
        Some(json!({"metadata": {"team": "ops"}})),
    )
    .await;
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let (s, off) = call(
        &r,
        Method::PATCH,
        &format!("/runs/crons/{cid}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, 200, "{off}");
    assert_eq!(off["enabled"], false);
    assert!(off["next_run_date"].is_null());
    // Disabled: no more runs.
    let (_, before) = call(&r, Method::GET, &format!("/threads/{tid}/runs"), None).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (_, after) = call(&r, Method::GET, &format!("/threads/{tid}/runs"), None).await;
    assert_eq!(
        before.as_array().unwrap().len(),
        after.as_array().unwrap().len()
    );

    // Stateless crons, bad schedules, delete.
    let (s, solo) = call(
        &r,
        Method::POST,
        "/runs/crons",
        Some(
            json!({"assistant_id": "echo", "schedule": "0 9 * * 1", "timezone": "Europe/Lisbon",
                    "input": said("weekly"), "end_time": "2099-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{solo}");
    assert!(solo["thread_id"].is_null());
    assert_eq!(solo["end_time"], "2099-01-01T00:00:00.000Z");
    let (_, n) = call(&r, Method::POST, "/runs/crons/count", Some(json!({}))).await;
    assert_eq!(n, 2);
    let (s, p) = call(
        &r,
        Method::POST,
        "/runs/crons",
        Some(json!({"assistant_id": "echo", "schedule": "whenever", "input": said("x")})),
    )
    .await;
    assert_eq!(s, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("cron expression"));
    let (s, _) = call(&r, Method::DELETE, &format!("/runs/crons/{cid}"), None).await;
    assert_eq!(s, 204);
    let (_, n) = call(&r, Method::POST, "/runs/crons/count", Some(json!({}))).await;
    assert_eq!(n, 1);
    let (s, _) = call(&r, Method::DELETE, &format!("/runs/crons/{cid}"), None).await;
    assert_eq!(s, 404);
}

/// `select` on the assistant, thread and cron searches (what the SDKs send): only the named
/// fields; every field a result has can be selected; a name that is not a field is a 422
/// listing them.
#[tokio::test]
async fn searches_return_only_the_selected_fields() {
    let r = start().await;
    let (s, t) = call(
        &r,
        Method::POST,
        "/threads",
        Some(json!({"metadata": {"team": "a"}})),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let body = json!({"assistant_id": "echo", "schedule": "0 3 * * *", "input": said("nightly")});
    let (s, c) = call(&r, Method::POST, "/runs/crons", Some(body)).await;
    assert_eq!(s, 200, "{c}");
    for (path, some) in [
        ("/assistants/search", ["assistant_id", "name"]),
        ("/threads/search", ["thread_id", "status"]),
        ("/runs/crons/search", ["cron_id", "schedule"]),
    ] {
        let (s, all) = call(&r, Method::POST, path, Some(json!({}))).await;
        assert_eq!(s, 200, "{path}: {all}");
        let all = all.as_array().unwrap().clone();
        assert!(!all.is_empty(), "{path}");
        // Every field of a result is selectable, and selecting them all changes nothing.
        let every: Vec<&String> = all[0].as_object().unwrap().keys().collect();
        let (s, same) = call(&r, Method::POST, path, Some(json!({"select": every}))).await;
        assert_eq!(s, 200, "{path}: {same}");
        assert_eq!(same, Value::Array(all.clone()), "{path}");
        // Some: only those.
        let (s, got) = call(&r, Method::POST, path, Some(json!({"select": some}))).await;
        assert_eq!(s, 200, "{path}: {got}");
        for item in got.as_array().unwrap() {
            let keys: Vec<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys.len(), 2, "{path}: {item}");
            assert!(some.iter().all(|k| keys.contains(k)), "{path}: {item}");
        }
        assert_eq!(got.as_array().unwrap().len(), all.len(), "{path}");
        // A name that is not a field.
        let (s, p) = call(&r, Method::POST, path, Some(json!({"select": ["nope"]}))).await;
        assert_eq!(s, 422, "{path}: {p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("`nope`") && detail.contains(some[0]),
            "{detail}"
        );
    }
}

/// `select` on a thread's run list, as both SDKs send it (the parameter repeated, and a JSON
/// list): only the named fields; every field a run has can be selected; a name that is not a
/// field is a 422 listing them.
#[tokio::test]
async fn runs_list_returns_only_the_selected_fields() {
    let r = start().await;
    let (_, t) = call(&r, Method::POST, "/threads", Some(json!({}))).await;
    let tid = t["thread_id"].as_str().unwrap().to_owned();
    for text in ["one", "two"] {
        let body = json!({"assistant_id": "echo", "input": said(text)});
        let (s, _) = call(
            &r,
            Method::POST,
            &format!("/threads/{tid}/runs/wait"),
            Some(body),
        )
        .await;
        assert_eq!(s, 200);
    }
    let path = format!("/threads/{tid}/runs");
    let (s, all) = call(&r, Method::GET, &path, None).await;
    assert_eq!(s, 200, "{all}");
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 2);
    let every: Vec<String> = all[0].as_object().unwrap().keys().cloned().collect();
    let repeated: Vec<String> = every.iter().map(|f| format!("select={f}")).collect();
    let (s, same) = call(
        &r,
        Method::GET,
        &format!("{path}?{}", repeated.join("&")),
        None,
    )
    .await;
    assert_eq!(s, 200, "{same}");
    assert_eq!(same, Value::Array(all.clone()));
    // Two fields, each way the SDKs send them: two fields.
    let list = "%5B%22run_id%22%2C%22status%22%5D";
    for query in ["select=run_id&select=status", &format!("select={list}")] {
        let (s, got) = call(&r, Method::GET, &format!("{path}?{query}"), None).await;
        assert_eq!(s, 200, "{query}: {got}");
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), 2, "{query}");
        for (run, full) in got.iter().zip(&all) {
            assert_eq!(
                run,
                &json!({"run_id": full["run_id"], "status": full["status"]}),
                "{query}"
            );
        }
    }
    // A name that is not a field: 422, naming it and the fields.
    let (s, p) = call(
        &r,
        Method::GET,
        &format!("{path}?select=run_id&select=nope"),
        None,
    )
    .await;
    assert_eq!(s, 422, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("`nope`") && detail.contains("cancel_reason"),
        "{detail}"
    );
}
