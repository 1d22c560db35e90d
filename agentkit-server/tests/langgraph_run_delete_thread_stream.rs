//! Two LangGraph routes over real HTTP: `DELETE /threads/{thread_id}/runs/{run_id}` (a finished
//! run goes from the store, the run lists, `/v1/runs` and its events, and the audit log says
//! so; a run still going is a 409; another workspace's run or thread, a run of another
//! thread, an unknown id are 404 and delete nothing; a key below `operator` is refused) and
//! `GET /threads/{thread_id}/stream` (every run of the thread as it happens, resumable after
//! any of its event ids, open until the thread is deleted; bad ids and modes refused).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "test-key";

struct Running {
    base: String,
    _dir: tempfile::TempDir,
    _served: inproc::InProcess,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::echo_server(dir.path(), ADMIN)
        .await
        .agent_llm("holder", Arc::new(inproc::holder()), "Holds when told")
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

async fn call_as(
    r: &Running,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    inproc::call_with_api_key(&r.base, key, method, path, body).await
}

async fn call(r: &Running, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(r, ADMIN, method, path, body).await
}

fn said(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

async fn new_thread(r: &Running) -> String {
    let (s, t) = call(r, Method::POST, "/threads", Some(json!({}))).await;
    assert_eq!(s, 200, "{t}");
    t["thread_id"].as_str().unwrap().to_owned()
}

/// Run `agent` on `thread` with `text` to its end.
async fn run_to_end(r: &Running, thread: &str, agent: &str, text: &str) -> String {
    let (s, run) = call(
        r,
        Method::POST,
        &format!("/threads/{thread}/runs"),
        Some(json!({"assistant_id": agent, "input": said(text)})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let rid = run["run_id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        r,
        Method::GET,
        &format!("/threads/{thread}/runs/{rid}/join"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    rid
}

/// Start `holder` told "hold" on `thread` (it runs until cancelled), streaming `modes`.
async fn hold(r: &Running, thread: &str, modes: Value) -> String {
    let body = json!({"assistant_id": "holder", "input": said("hold"), "stream_mode": modes});
    let (s, run) = call(
        r,
        Method::POST,
        &format!("/threads/{thread}/runs"),
        Some(body),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    run["run_id"].as_str().unwrap().to_owned()
}

async fn cancel(r: &Running, thread: &str, run: &str) {
    let path = format!("/threads/{thread}/runs/{run}/cancel?wait=1");
    let (s, b) = call(r, Method::POST, &path, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "interrupted", "{b}");
}

#[tokio::test]
async fn deleting_a_finished_run_removes_it_everywhere_and_nothing_else() {
    let r = start().await;
    let tid = new_thread(&r).await;
    let one = run_to_end(&r, &tid, "echo", "one").await;
    let two = run_to_end(&r, &tid, "echo", "two").await;
    let other_thread = new_thread(&r).await;
    let (s, events) = call(&r, Method::GET, &format!("/v1/runs/{one}/events"), None).await;
    assert_eq!(s, 200);
    assert!(!events.as_array().unwrap().is_empty(), "{events}");

    // Another workspace's key, even an operator's: 404, as for an id that does not exist,
    // and nothing is deleted.
    let other = inproc::workspace_key(&r.base, ADMIN, "acme", "other", "operator", "o").await;
    let path = format!("/threads/{tid}/runs/{one}");
    let (s, p) = call_as(&r, &other, Method::DELETE, &path, None).await;
    assert_eq!(s, 404, "{p}");
    assert_eq!(p["status"], 404, "a problem: {p}");
    // A run of another thread, an unknown run, an unknown thread: 404.
    for bad in [
        format!("/threads/{other_thread}/runs/{one}"),
        format!("/threads/{tid}/runs/no-such-run"),
        format!("/threads/no-such-thread/runs/{one}"),
    ] {
        let (s, p) = call(&r, Method::DELETE, &bad, None).await;
        assert_eq!(s, 404, "{bad}: {p}");
    }
    // A key that may start runs but not control them is refused.
    let (invoker, _) = inproc::create_key(&r.base, ADMIN, json!({"role": "invoker"})).await;
    let (s, p) = call_as(&r, &invoker, Method::DELETE, &path, None).await;
    assert_eq!(s, 403, "{p}");
    let (s, _) = call(&r, Method::GET, &path, None).await;
    assert_eq!(s, 200, "still there");

    // Deleted: gone from the run, its thread's runs, `/v1/runs` and its events.
    let (s, body) = call(&r, Method::DELETE, &path, None).await;
    assert_eq!(s, 204, "{body}");
    let (s, _) = call(&r, Method::GET, &path, None).await;
    assert_eq!(s, 404);
    let (s, runs) = call(&r, Method::GET, &format!("/threads/{tid}/runs"), None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [two.as_str()], "{runs}");
    let (s, _) = call(&r, Method::GET, &format!("/v1/runs/{one}"), None).await;
    assert_eq!(s, 404);
    let (_, all) = call(&r, Method::GET, "/v1/runs?limit=1000", None).await;
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|r| r["run_id"] != one.as_str()),
        "{all}"
    );
    let (s, _) = call(&r, Method::GET, &format!("/v1/runs/{one}/events"), None).await;
    assert_eq!(s, 404);
    // The other run and the thread's conversation stay.
    let (s, _) = call(&r, Method::GET, &format!("/v1/runs/{two}/events"), None).await;
    assert_eq!(s, 200);
    let (_, state) = call(&r, Method::GET, &format!("/threads/{tid}/state"), None).await;
    let messages = state["values"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{state}");
    // Recorded as a change, by the key that made it.
    let entries = inproc::audit_entries(&r.base, ADMIN, "?limit=10000").await;
    let deleted: Vec<&Value> = entries
        .iter()
        .filter(|e| e["event"]["tool"] == "runs.delete")
        .collect();
    assert_eq!(deleted.len(), 1, "{entries:?}");
    assert_eq!(deleted[0]["event"]["call_id"], one.as_str());
    assert_eq!(deleted[0]["event"]["outcome"], "changed");
    // Deleting it again: 404, and no second entry; two callers deleting the other run at
    // once: one deletes it, the other is told it is not there, one entry.
    let (s, _) = call(&r, Method::DELETE, &path, None).await;
    assert_eq!(s, 404);
    let path_two = format!("/threads/{tid}/runs/{two}");
    let (a, b) = tokio::join!(
        call(&r, Method::DELETE, &path_two, None),
        call(&r, Method::DELETE, &path_two, None)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 404], "{a:?} {b:?}");
    let entries = inproc::audit_entries(&r.base, ADMIN, "?limit=10000").await;
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["event"]["tool"] == "runs.delete")
            .count(),
        2
    );

    // A run still going is a 409 that says what to do, and stays; once cancelled it goes.
    let busy = new_thread(&r).await;
    let held = hold(&r, &busy, json!("values")).await;
    let path = format!("/threads/{busy}/runs/{held}");
    let (s, p) = call(&r, Method::DELETE, &path, None).await;
    assert_eq!(s, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("cancel"), "{p}");
    let (_, got) = call(&r, Method::GET, &path, None).await;
    assert!(
        matches!(got["status"].as_str().unwrap(), "pending" | "running"),
        "{got}"
    );
    cancel(&r, &busy, &held).await;
    let (s, _) = call(&r, Method::DELETE, &path, None).await;
    assert_eq!(s, 204);
    // It was the thread's last run: the thread is idle and takes the next run at once (it
    // does not take the missing run for one starting).
    let (_, t) = call(&r, Method::GET, &format!("/threads/{busy}"), None).await;
    assert_eq!(t["status"], "idle", "{t}");
    let body =
        json!({"assistant_id": "echo", "input": said("again"), "multitask_strategy": "reject"});
    let (s, b) = call(
        &r,
        Method::POST,
        &format!("/threads/{busy}/runs/wait"),
        Some(body),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// A thread stream read as it comes: the response, and the text read so far.
struct Reader {
    res: reqwest::Response,
    text: String,
}

impl Reader {
    /// `GET /threads/{thread}/stream`, with `Last-Event-ID: after`; must answer 200.
    async fn open(r: &Running, thread: &str, after: Option<&str>) -> Self {
        let mut req = reqwest::Client::new()
            .get(format!("{}/threads/{thread}/stream", r.base))
            .header("x-api-key", ADMIN);
        if let Some(a) = after {
            req = req.header("last-event-id", a);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        Self {
            res,
            text: String::new(),
        }
    }

    /// Read until the events read so far include `n` `end` events; those events.
    async fn until_ends(&mut self, n: usize) -> Vec<(Option<String>, String, Value)> {
        loop {
            let events = sse_events(&self.text);
            if events.iter().filter(|e| e.1 == "end").count() >= n {
                return events;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.res.chunk())
                .await
                .expect("the thread stream sent nothing for 30 s")
                .unwrap()
                .unwrap_or_else(|| panic!("the stream ended: {}", self.text));
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Read until `pred` holds for the events read so far.
    async fn until(
        &mut self,
        pred: impl Fn(&[(Option<String>, String, Value)]) -> bool,
    ) -> Vec<(Option<String>, String, Value)> {
        loop {
            let events = sse_events(&self.text);
            if pred(&events) {
                return events;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.res.chunk())
                .await
                .expect("the thread stream sent nothing for 30 s")
                .unwrap()
                .unwrap_or_else(|| panic!("the stream ended: {}", self.text));
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// The whole events of an SSE text (a last block not ended by a blank line is left out):
/// (`id`, `event`, `data`).
fn sse_events(text: &str) -> Vec<(Option<String>, String, Value)> {
    let whole = text.rfind("\n\n").map_or("", |end| &text[..end]);
    whole
        .split("\n\n")
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

/// The run of a thread stream event id `{run_id}:{seq}-{slot}`.
fn run_of(id: &Option<String>) -> &str {
    let id = id
        .as_deref()
        .unwrap_or_else(|| panic!("an event without id"));
    id.split_once(':').unwrap_or_else(|| panic!("id {id}")).0
}

#[tokio::test]
async fn a_thread_stream_sends_each_run_as_it_happens_and_resumes_after_any_event() {
    let r = start().await;
    let tid = new_thread(&r).await;
    // A finished run before the stream is opened: not sent (the stream is of what happens).
    let before = run_to_end(&r, &tid, "echo", "before").await;
    let held = hold(&r, &tid, json!(["values", "updates"])).await;

    // The run going on is sent from its start; cancelled, it ends; the next run follows.
    let mut stream = Reader::open(&r, &tid, None).await;
    stream
        .until(|events| events.iter().any(|e| e.1 == "updates"))
        .await;
    cancel(&r, &tid, &held).await;
    stream.until_ends(1).await;
    let after = run_to_end(&r, &tid, "echo", "after").await;
    let full = stream.until_ends(2).await;
    let runs: Vec<&str> = full.iter().map(|e| run_of(&e.0)).collect();
    let split = runs.iter().position(|r| *r != held).unwrap();
    assert!(runs[..split].iter().all(|r| *r == held), "{full:?}");
    assert!(runs[split..].iter().all(|r| *r == after), "{full:?}");
    assert!(!runs.contains(&before.as_str()));
    for (run, part) in [(&held, &full[..split]), (&after, &full[split..])] {
        assert_eq!(part[0].1, "metadata", "{part:?}");
        assert_eq!(part[0].2["run_id"], run.as_str());
        assert_eq!(part.last().unwrap().1, "end", "{part:?}");
    }
    // Each run in the modes it was started with: the held run's tool call as an update.
    assert!(full[..split].iter().any(|e| e.1 == "updates"), "{full:?}");
    assert!(full[split..].iter().all(|e| e.1 != "updates"), "{full:?}");
    let mut ids: Vec<&str> = full.iter().map(|e| e.0.as_deref().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), full.len(), "{ids:?}");

    // Resumed after each of its events: exactly the rest, across the runs.
    for (at, event) in full.iter().enumerate() {
        let id = event.0.as_deref().unwrap();
        let ends = full[at + 1..].iter().filter(|e| e.1 == "end").count();
        if ends == 0 {
            continue;
        }
        let mut resumed = Reader::open(&r, &tid, Some(id)).await;
        let got = resumed.until_ends(ends).await;
        // The held run's final values are the thread's as they are now (it has the later
        // run's messages): compare names and ids there, everything elsewhere.
        let want = &full[at + 1..];
        assert_eq!(got.len(), want.len(), "after {id}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((&g.0, &g.1), (&w.0, &w.1), "after {id}");
            if !(g.1 == "values" && run_of(&g.0) == held) {
                assert_eq!(g.2, w.2, "after {id}");
            }
        }
    }

    // After the last event: nothing until the thread's next run, then that run.
    let last = full.last().unwrap().0.clone().unwrap();
    let mut waiting = Reader::open(&r, &tid, Some(&last)).await;
    let next = run_to_end(&r, &tid, "echo", "next").await;
    let got = waiting.until_ends(1).await;
    assert!(got.iter().all(|e| run_of(&e.0) == next), "{got:?}");
    assert_eq!(got[0].1, "metadata");

    // A deleted run's events are not sent again; the stream goes on after it.
    let (s, _) = call(
        &r,
        Method::DELETE,
        &format!("/threads/{tid}/runs/{after}"),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let in_deleted = full[split].0.clone().unwrap();
    let mut resumed = Reader::open(&r, &tid, Some(&in_deleted)).await;
    let got = resumed.until_ends(1).await;
    assert!(got.iter().all(|e| run_of(&e.0) == next), "{got:?}");
}

#[tokio::test]
async fn a_thread_stream_ends_when_its_thread_is_deleted() {
    let r = start().await;
    let tid = new_thread(&r).await;
    let res = reqwest::Client::new()
        .get(format!("{}/threads/{tid}/stream", r.base))
        .header("x-api-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (s, _) = call(&r, Method::DELETE, &format!("/threads/{tid}"), None).await;
    assert_eq!(s, 204);
    let body = tokio::time::timeout(Duration::from_secs(30), res.text())
        .await
        .expect("the stream of a deleted thread did not end within 30 s")
        .unwrap();
    assert!(!body.contains("event: "), "{body}");
}

#[tokio::test]
async fn a_thread_stream_refuses_what_it_cannot_serve() {
    let r = start().await;
    let tid = new_thread(&r).await;
    let mine = run_to_end(&r, &tid, "echo", "one").await;
    let elsewhere = new_thread(&r).await;
    let theirs = run_to_end(&r, &elsewhere, "echo", "two").await;
    let other = inproc::workspace_key(&r.base, ADMIN, "acme", "other", "viewer", "o").await;
    let get = |key: &str, path: String, after: Option<&str>| {
        let mut req = reqwest::Client::new()
            .get(format!("{}{path}", r.base))
            .header("x-api-key", key);
        if let Some(a) = after {
            req = req.header("last-event-id", a);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap();
            (status, body)
        }
    };
    // Unknown thread, another workspace's thread: 404.
    let (s, p) = get(ADMIN, "/threads/nope/stream".into(), None).await;
    assert_eq!(s, 404, "{p}");
    let (s, p) = get(&other, format!("/threads/{tid}/stream"), None).await;
    assert_eq!(s, 404, "{p}");
    // An id that is not one of a thread stream, or names a run of another thread: 400.
    for bad in ["x", "12-2", &format!("{mine}:x"), &format!("{theirs}:0-0")] {
        let (s, p) = get(ADMIN, format!("/threads/{tid}/stream"), Some(bad)).await;
        assert_eq!(s, 400, "{bad}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("Last-Event-ID"),
            "{p}"
        );
    }
    // Thread stream modes agentkit does not have, and a run mode: 422.
    for mode in [
        "lifecycle",
        "state_update",
        "values",
        "%5B%22run_modes%22%2C%22lifecycle%22%5D",
    ] {
        let (s, p) = get(
            ADMIN,
            format!("/threads/{tid}/stream?stream_mode={mode}"),
            None,
        )
        .await;
        assert_eq!(s, 422, "{mode}: {p}");
        assert!(p["detail"].as_str().unwrap().contains("run_modes"), "{p}");
    }
}
