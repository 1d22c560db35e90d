//! Idempotency keys beyond `/v1/execute`, over real HTTP and a real WebSocket against a real
//! MCP upstream (rmcp over streamable HTTP on 127.0.0.1, counting every call it really runs):
//! a WebSocket `tool_call` with an `idempotency_key` and a `POST /v1/servers/{name}/call_tool`
//! with an `Idempotency-Key` header are made once per key and workspace; a retry (on another
//! connection, through another route) gets the first answer, a call waiting for an approval
//! answers the same run; the same key with other arguments is refused with an error that says
//! what to do; another workspace's same key is its own call. A run started with an
//! `idempotency_key` is one per key, workspace and agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_runtime::{SqliteStore, Store};
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "idem-routes-admin";

use inproc::Socket;

async fn server(store: &Arc<dyn Store>, crm: &str) -> inproc::InProcess {
    upstream::approval_gateway(store, crm, ADMIN).await
}

/// `POST /v1/servers/crm/call_tool` as `key` with `Idempotency-Key: idem`, if given.
async fn call_tool(base: &str, key: &str, idem: Option<&str>, body: Value) -> (u16, Value) {
    upstream::post_keyed(base, key, "/v1/servers/crm/call_tool", idem, body).await
}

fn send(text: &str) -> Value {
    json!({"name": "send", "arguments": {"text": text}})
}

/// A new WebSocket of `key` (through `POST /v1/agents/connect`).
async fn socket(base: &str, key: &str) -> Socket {
    inproc::connect_socket(base, key).await
}

/// Send `msg` and read messages until the `tool_result` or `error` of call `id`.
async fn ask(ws: &mut Socket, msg: Value) -> Value {
    let id = msg["id"].clone();
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("the connection is open")
            .unwrap();
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["id"] == id && (v["type"] == "tool_result" || v["type"] == "error") {
            return v;
        }
    }
}

fn tool_call(id: &str, tool: &str, text: &str, key: Option<&str>) -> Value {
    let mut m = json!({"type": "tool_call", "id": id, "server": "crm", "tool": tool,
                       "arguments": {"text": text}});
    if let Some(k) = key {
        m["idempotency_key"] = json!(k);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_tool_with_an_idempotency_key_is_made_once_per_key_and_workspace() {
    let calls = Arc::new(AtomicU32::new(0));
    let (crm, stop) = upstream::crm(&["send", "post"], Arc::clone(&calls)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("r.db")).await.unwrap());
    let a = server(&store, &crm).await;
    let (acme, _) = upstream::workspace_key(&a.base, ADMIN, "acme", "operator").await;
    let (globex, _) = upstream::workspace_key(&a.base, ADMIN, "globex", "operator").await;

    let (s, first) = call_tool(&a.base, &acme, Some("ct-1"), send("hi")).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["content"][0]["text"], "send #1: hi", "{first}");
    let (s, again) = call_tool(&a.base, &acme, Some("ct-1"), send("hi")).await;
    assert_eq!((s, &again), (200, &first), "the first answer");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Another server process on the same store remembers it.
    let b = server(&store, &crm).await;
    let (s, there) = call_tool(&b.base, &acme, Some("ct-1"), send("hi")).await;
    assert_eq!((s, &there), (200, &first));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The same key with other arguments: 422, saying what to do; nothing is called.
    let (s, p) = call_tool(&a.base, &acme, Some("ct-1"), send("bye")).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(
        p["type"]
            .as_str()
            .map(|t| t.ends_with("idempotency-key-reused")),
        Some(true),
        "{p}"
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("idempotency key") && detail.contains("new key"),
        "{p}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another workspace's same key is its own call; without a key every request is a call.
    let (s, theirs) = call_tool(&a.base, &globex, Some("ct-1"), send("hi")).await;
    assert_eq!(s, 200, "{theirs}");
    assert_eq!(theirs["content"][0]["text"], "send #2: hi", "{theirs}");
    call_tool(&a.base, &acme, None, send("hi")).await;
    call_tool(&a.base, &acme, None, send("hi")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // A call waiting for an approval: the retry answers the same run; one approval.
    let post = json!({"name": "post", "arguments": {"text": "news"}});
    let (s, p1) = call_tool(&a.base, &acme, Some("post-1"), post.clone()).await;
    assert_eq!(s, 200, "{p1}");
    let run = p1["run_id"].as_str().unwrap().to_owned();
    let (_, p2) = call_tool(&b.base, &acme, Some("post-1"), post).await;
    assert_eq!(p2["run_id"], run.as_str(), "{p2}");
    let (_, pending) = inproc::call_as(&a.base, &acme, Method::GET, "/v1/approvals", None).await;
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "nothing posted before the approval"
    );

    // A key that cannot be one is a 400 naming the header.
    let (s, p) = call_tool(&a.base, &acme, Some("tab\there"), send("hi")).await;
    assert_eq!(s, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("Idempotency-Key"),
        "{p}"
    );
    stop.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_tool_call_with_an_idempotency_key_is_made_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let (crm, stop) = upstream::crm(&["send", "post"], Arc::clone(&calls)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("w.db")).await.unwrap());
    let a = server(&store, &crm).await;
    let (acme, _) = upstream::workspace_key(&a.base, ADMIN, "acme", "operator").await;
    let (globex, _) = upstream::workspace_key(&a.base, ADMIN, "globex", "invoker").await;

    let mut ws = socket(&a.base, &acme).await;
    let first = ask(&mut ws, tool_call("a", "send", "hi", Some("ws-1"))).await;
    assert_eq!(first["type"], "tool_result", "{first}");
    assert_eq!(first["content"][0]["text"], "send #1: hi", "{first}");
    // The retry under another id gets the first result under its own id.
    let again = ask(&mut ws, tool_call("b", "send", "hi", Some("ws-1"))).await;
    assert_eq!(again["type"], "tool_result", "{again}");
    assert_eq!(again["id"], "b");
    assert_eq!(again["content"], first["content"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // On another connection, and on another server process on the same store.
    let b = server(&store, &crm).await;
    let mut other = socket(&b.base, &acme).await;
    let there = ask(&mut other, tool_call("c", "send", "hi", Some("ws-1"))).await;
    assert_eq!(there["content"], first["content"], "{there}");
    // Through `call_tool` with the same key and call: the same answer.
    let (s, via) = call_tool(&a.base, &acme, Some("ws-1"), send("hi")).await;
    assert_eq!(s, 200, "{via}");
    assert_eq!(via["content"], first["content"], "{via}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The same key with other arguments: an error saying what to do; nothing is called.
    let e = ask(&mut ws, tool_call("d", "send", "bye", Some("ws-1"))).await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "idempotency_key_reused", "{e}");
    assert!(e["message"].as_str().unwrap().contains("new key"), "{e}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The connection still works, and ids may be used again once their call ended.
    let fresh = ask(&mut ws, tool_call("d", "send", "new", None)).await;
    assert_eq!(fresh["content"][0]["text"], "send #2: new", "{fresh}");

    // Another workspace's same key is its own call.
    let mut theirs = socket(&a.base, &globex).await;
    let t = ask(&mut theirs, tool_call("a", "send", "hi", Some("ws-1"))).await;
    assert_eq!(t["content"][0]["text"], "send #3: hi", "{t}");

    // A call waiting for an approval: the retry answers the same pending run.
    let p1 = ask(&mut ws, tool_call("p", "post", "news", Some("post-ws"))).await;
    assert_eq!(p1["status"], "pending_approval", "{p1}");
    let p2 = ask(&mut other, tool_call("q", "post", "news", Some("post-ws"))).await;
    assert_eq!(p2["status"], "pending_approval", "{p2}");
    assert_eq!(p2["run_id"], p1["run_id"], "{p2}");
    let (_, pending) = inproc::call_as(&a.base, &acme, Method::GET, "/v1/approvals", None).await;
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");

    // A key that cannot be one is an `invalid_message` error naming the field.
    let e = ask(&mut ws, tool_call("z", "send", "hi", Some(""))).await;
    assert_eq!(e["code"], "invalid_message", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("idempotency_key"),
        "{e}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    stop.stop();
}

/// `POST /v1/agents/{name}/runs` with an `idempotency_key`: a retry gets the same run (also
/// with `wait`), another agent's same key is its own run, the same key with another message
/// is a 422 problem that says to send a new key, and an empty key is a 400; the agent's `/mcp`
/// tool keeps the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_idempotency_keys_are_per_agent_and_refuse_other_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::declarative(dir.path(), ADMIN)
        .await
        .build()
        .await
        .unwrap();
    let s = inproc::serve(server).await;
    for agent in ["support", "summarizer"] {
        inproc::deploy_scripted(&s.base, ADMIN, agent).await;
    }
    let start = |agent: &str, body: Value| {
        let (base, path) = (s.base.clone(), format!("/v1/agents/{agent}/runs"));
        async move { inproc::call_as(&base, ADMIN, Method::POST, &path, Some(body)).await }
    };

    let (st, first) = start(
        "support",
        json!({"message": "help me", "idempotency_key": "k"}),
    )
    .await;
    assert_eq!(st, 202, "{first}");
    let (st, again) = start(
        "support",
        json!({"message": "help me", "idempotency_key": "k"}),
    )
    .await;
    assert_eq!(st, 202, "{again}");
    assert_eq!(again["run_id"], first["run_id"], "a retry is the same run");

    // Another agent, the same key: a run of that agent, with its own message.
    let (st, other) = start(
        "summarizer",
        json!({"message": "zzz", "idempotency_key": "k"}),
    )
    .await;
    assert_eq!(st, 202, "{other}");
    assert_ne!(other["run_id"], first["run_id"], "{other}");
    assert_eq!(other["agent"], "summarizer", "{other}");
    assert_eq!(other["input"]["message"], "zzz", "{other}");
    let (st, waited) = start(
        "summarizer",
        json!({"message": "zzz", "idempotency_key": "k", "wait": true}),
    )
    .await;
    assert_eq!(st, 200, "{waited}");
    assert_eq!(waited["run_id"], other["run_id"]);
    assert_eq!(waited["status"], "succeeded", "{waited}");

    // The same key with another message (waiting or not): refused, nothing started.
    for wait in [false, true] {
        let (st, p) = start(
            "support",
            json!({"message": "something else", "idempotency_key": "k", "wait": wait}),
        )
        .await;
        assert_eq!(st, 422, "{p}");
        assert_eq!(
            p["type"], "urn:agentkit:problem:idempotency-key-reused",
            "{p}"
        );
        assert!(p["detail"].as_str().unwrap().contains("new key"), "{p}");
    }
    // An empty key is no key.
    let (st, p) = start(
        "support",
        json!({"message": "help me", "idempotency_key": ""}),
    )
    .await;
    assert_eq!(st, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("empty"), "{p}");

    // The agent's `/mcp` tool takes the same keys: a retry is the same run, another message
    // an error result that says to send a new key.
    let (st, same) = inproc::mcp_post(
        &s.base,
        ADMIN,
        "support",
        json!({"message": "help me", "idempotency_key": "k"}),
        &[],
    )
    .await;
    assert_eq!(st, 200, "{same}");
    assert_eq!(
        same["result"]["structuredContent"]["run_id"], first["run_id"],
        "{same}"
    );
    let (st, reused) = inproc::mcp_post(
        &s.base,
        ADMIN,
        "support",
        json!({"message": "something else", "idempotency_key": "k"}),
        &[],
    )
    .await;
    assert_eq!(st, 200, "{reused}");
    assert_eq!(reused["result"]["isError"], true, "{reused}");
    assert!(reused.to_string().contains("new key"), "{reused}");

    let (st, runs) = inproc::call_as(&s.base, ADMIN, Method::GET, "/v1/runs", None).await;
    assert_eq!(st, 200, "{runs}");
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
}
