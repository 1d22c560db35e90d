//! Idempotency keys for gateway calls over real HTTP against a real MCP upstream (rmcp over
//! streamable HTTP on 127.0.0.1, counting every call it really runs): a retried
//! `/v1/execute` (or `/v1/execute/stream`) with the same `Idempotency-Key` or per-call
//! `idempotency_key` gets the first attempt's result and the upstream sees one call, also
//! when the retry reaches another server process on the same store and when two attempts
//! race; a call waiting for an approval answers the same pending run and opens no second
//! approval; the same key with other arguments is a 422; another workspace's same key is
//! its own call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;
mod upstream;

use inproc::call_as;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agentkit_runtime::{SqliteStore, Store};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "idem-admin-key";

async fn server(store: &Arc<dyn Store>, crm: &str) -> inproc::InProcess {
    upstream::approval_gateway(store, crm, ADMIN).await
}

/// `POST /v1/execute` (see [`post`]).
async fn exec(base: &str, key: &str, idem: Option<&str>, body: Value) -> (u16, Value) {
    upstream::post_keyed(base, key, "/v1/execute", idem, body).await
}

fn one(id: &str, tool: &str, text: &str) -> Value {
    json!({"calls": [{"id": id, "server": "crm", "tool": tool, "arguments": {"text": text}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_call_is_made_once_per_key_and_workspace() {
    let calls = Arc::new(AtomicU32::new(0));
    let (crm, stop) = upstream::crm(&["send", "post"], Arc::clone(&calls)).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("i.db")).await.unwrap());
    let a = server(&store, &crm).await;
    let (acme, _) = upstream::workspace_key(&a.base, ADMIN, "acme", "operator").await;
    let (globex, _) = upstream::workspace_key(&a.base, ADMIN, "globex", "invoker").await;

    // The first attempt calls the tool; the retry gets its result and calls nothing.
    let (s, first) = exec(&a.base, &acme, Some("order-1"), one("a", "send", "hi")).await;
    assert_eq!(s, 200, "{first}");
    let first = first["results"][0].clone();
    assert_eq!(first["status"], "success", "{first}");
    assert_eq!(first["content"][0]["text"], "send #1: hi", "{first}");
    let (s, again) = exec(&a.base, &acme, Some("order-1"), one("a", "send", "hi")).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["results"][0], first, "the first attempt's result");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The stream variant with the same key: the same result, no call.
    let res = reqwest::Client::new()
        .post(format!("{}/v1/execute/stream", a.base))
        .bearer_auth(&acme)
        .header("Idempotency-Key", "order-1")
        .json(&one("a", "send", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let events = res.text().await.unwrap();
    assert!(events.contains("send #1: hi"), "{events}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another server process on the same store (or this one after a restart) remembers it.
    let b = server(&store, &crm).await;
    let (s, there) = exec(&b.base, &acme, Some("order-1"), one("a", "send", "hi")).await;
    assert_eq!(s, 200, "{there}");
    assert_eq!(there["results"][0], first);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The same key with other arguments is refused whole, before anything runs.
    let (s, p) = exec(&a.base, &acme, Some("order-1"), one("a", "send", "bye")).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["status"], 422, "a problem detail: {p}");
    assert!(
        p["detail"].as_str().unwrap().contains("idempotency key"),
        "{p}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another workspace's same key is its own call.
    let (s, theirs) = exec(&a.base, &globex, Some("order-1"), one("a", "send", "hi")).await;
    assert_eq!(s, 200, "{theirs}");
    assert_eq!(
        theirs["results"][0]["content"][0]["text"], "send #2: hi",
        "{theirs}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A per-call key, and two attempts racing on two processes: one call.
    let body = json!({"calls": [{"id": "x", "server": "crm", "tool": "send",
                                 "arguments": {"text": "race"}, "idempotency_key": "race-1"}]});
    let (r1, r2) = tokio::join!(
        exec(&a.base, &acme, None, body.clone()),
        exec(&b.base, &acme, None, body.clone()),
    );
    assert_eq!((r1.0, r2.0), (200, 200), "{r1:?} {r2:?}");
    assert_eq!(r1.1["results"][0], r2.1["results"][0]);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the race made one call");
    // Without a key every attempt is a call.
    exec(&a.base, &acme, None, one("a", "send", "hi")).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // A call that needs an approval: the retry answers the same pending run; one approval.
    let (s, p1) = exec(&a.base, &acme, Some("post-1"), one("p", "post", "news")).await;
    assert_eq!(s, 200, "{p1}");
    assert_eq!(p1["results"][0]["status"], "pending_approval", "{p1}");
    let run = p1["results"][0]["run_id"].as_str().unwrap().to_owned();
    let (s, p2) = exec(&b.base, &acme, Some("post-1"), one("p", "post", "news")).await;
    assert_eq!(s, 200, "{p2}");
    assert_eq!(p2["results"][0]["status"], "pending_approval", "{p2}");
    assert_eq!(p2["results"][0]["run_id"], run.as_str(), "{p2}");
    let (_, pending) = call_as(&a.base, &acme, Method::GET, "/v1/approvals", None).await;
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "nothing posted before the approval"
    );

    // A bad key is a 400.
    let (s, p) = exec(&a.base, &acme, Some("tab\there"), one("a", "send", "hi")).await;
    assert_eq!(s, 400, "{p}");
    stop.stop();
}
