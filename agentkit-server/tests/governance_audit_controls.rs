//! Run controls, thread and store-item writes and event emits land in the workspace's
//! hash-chained audit log before their answer, over real HTTP on SQLite: `/v1/runs/{id}`
//! pause, resume, cancel (with its reason) and signal (its name, never its payload), the
//! Agent Protocol and LangGraph cancels, LangGraph threads (create, patch, copy, delete),
//! store items (put, delete) and `POST /v1/events/{event}` (the event and the runs it
//! started, never its payload). Each entry names who and what; a refused change is not
//! recorded; neither the JSON nor the CSV export holds a payload, a metadata value or an item
//! value sent along, and the chain verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{
    CompletionRequest, CompletionResponse, LlmProvider, Message, StopReason, Usage,
};
use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::Server;
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "audit-controls-admin";

/// A model that never answers: its runs stay live until they are paused or cancelled.
struct Stuck;

#[async_trait::async_trait]
impl LlmProvider for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }
    async fn complete(&self, _: CompletionRequest) -> agentkit_core::Result<CompletionResponse> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(CompletionResponse::new(
            Message::assistant("late"),
            Usage::default(),
            StopReason::EndTurn,
            "stuck",
        ))
    }
}

async fn call(
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    inproc::call_as(base, key, method, path, body).await
}

/// Every audit entry of `acme/prod`, read at once (no waiting).
async fn entries(base: &str) -> Vec<Value> {
    let (s, page) = call(
        base,
        ADMIN,
        Method::GET,
        "/v1/audit?workspace=acme/prod&limit=10000",
        None,
    )
    .await;
    assert_eq!(s, 200, "{page}");
    page["entries"].as_array().unwrap().clone()
}

/// The last entry is the change `action` of `resource` by key `key_id`; its event.
async fn assert_last(base: &str, action: &str, resource: &str, key_id: &str) -> Value {
    let e = entries(base).await.pop().unwrap();
    let ev = &e["event"];
    assert_eq!(ev["outcome"], "changed", "{e}");
    assert_eq!(ev["tool"], action, "{e}");
    assert_eq!(ev["call_id"], resource, "{e}");
    assert_eq!(ev["actor"], key_id, "{e}");
    assert_eq!(ev["key_id"], key_id, "{e}");
    assert_eq!(
        (&ev["tenant"], &ev["workspace"]),
        (&json!("acme"), &json!("prod")),
        "{e}"
    );
    ev.clone()
}

/// A run of `stuck` started in the background with `path` and `body`: its id.
async fn start(base: &str, key: &str, path: &str, body: Value) -> String {
    let (s, b) = call(base, key, Method::POST, path, Some(body)).await;
    assert!(s == 200 || s == 202, "{s} {b}");
    b["run_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_threads_items_and_emits_are_in_the_audit_log_before_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("a.db")).await.unwrap());
    let models = ModelFactory::offline().with_provider("scripted:stuck", Arc::new(Stuck));
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), models);
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .spec_builder(Arc::new(builder))
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let (s, b) = inproc::create_workspace(&base, ADMIN, "acme", "prod").await;
    assert_eq!(s, 201, "{b}");
    let (dev, dev_id) = inproc::create_key(
        &base,
        ADMIN,
        json!({"name": "dev", "role": "developer", "workspace": "acme/prod"}),
    )
    .await;
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        "/v1/agents",
        Some(json!({"name": "stuck", "kind": "agent",
                    "spec": {"model": "scripted:stuck", "instructions": "Think."}})),
    )
    .await;
    assert!(s == 201 || s == 200, "{s} {b}");
    // What must never reach the audit log.
    let secrets = [
        "signal-payload-5b1e9c",
        "thread-metadata-value-77aa01",
        "item-value-c0ffee42",
        "event-payload-9d3f11",
        "message-text-4e8a2b",
    ];

    // v1 controls: pause, signal (while paused), resume, cancel with a reason.
    let run = start(
        &base,
        &dev,
        "/v1/agents/stuck/runs",
        json!({"message": secrets[4]}),
    )
    .await;
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/v1/runs/{run}/pause"),
        None,
    )
    .await;
    assert_eq!((s, &b["status"]), (200, &json!("paused")), "{b}");
    assert_last(&base, "runs.pause", &run, &dev_id).await;
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/v1/runs/{run}/signal"),
        Some(json!({"name": "nudge", "payload": {"note": secrets[0]}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ev = assert_last(&base, "runs.signal", &run, &dev_id).await;
    assert_eq!(ev["arguments"]["signal"], "nudge", "{ev}");
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/v1/runs/{run}/resume"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_last(&base, "runs.resume", &run, &dev_id).await;
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/v1/runs/{run}/cancel"),
        Some(json!({"reason": "wrong customer"})),
    )
    .await;
    assert_eq!((s, &b["status"]), (200, &json!("cancelled")), "{b}");
    let ev = assert_last(&base, "runs.cancel", &run, &dev_id).await;
    assert_eq!(ev["arguments"]["reason"], "wrong customer", "{ev}");

    // A refused control (the run already ended) is not recorded as made.
    let before = entries(&base).await.len();
    let (s, _) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/v1/runs/{run}/pause"),
        None,
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(entries(&base).await.len(), before);

    // The Agent Protocol cancel of a stateless run.
    let ap = start(
        &base,
        &dev,
        "/runs",
        json!({"agent_id": "stuck", "input": {"messages": [{"role": "user", "content": secrets[4]}]}}),
    )
    .await;
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/runs/{ap}/cancel"),
        None,
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let ev = assert_last(&base, "runs.cancel", &ap, &dev_id).await;
    assert_eq!(ev["arguments"]["reason"], "cancelled by request", "{ev}");

    // LangGraph threads: created, patched, a run on it cancelled, copied, deleted.
    let (s, t) = call(
        &base,
        &dev,
        Method::POST,
        "/threads",
        Some(json!({"thread_id": "t-1", "metadata": {"customer": secrets[1]}})),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_last(&base, "threads.create", "t-1", &dev_id).await;
    // Asking again with `do_nothing` changes nothing, so it is not recorded.
    let before = entries(&base).await.len();
    let (s, _) = call(
        &base,
        &dev,
        Method::POST,
        "/threads",
        Some(json!({"thread_id": "t-1", "if_exists": "do_nothing"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(entries(&base).await.len(), before);
    let (s, b) = call(
        &base,
        &dev,
        Method::PATCH,
        "/threads/t-1",
        Some(json!({"metadata": {"stage": secrets[1]}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ev = assert_last(&base, "threads.patch", "t-1", &dev_id).await;
    assert_eq!(ev["arguments"]["metadata_keys"], json!(["stage"]), "{ev}");
    let lg = start(
        &base,
        &dev,
        "/threads/t-1/runs",
        json!({"assistant_id": "stuck", "input": {"messages": [{"role": "user", "content": secrets[4]}]}}),
    )
    .await;
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/threads/t-1/runs/{lg}/cancel?wait=true"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_last(&base, "runs.cancel", &lg, &dev_id).await;
    let (s, copy) = call(&base, &dev, Method::POST, "/threads/t-1/copy", None).await;
    assert_eq!(s, 200, "{copy}");
    let copied = copy["thread_id"].as_str().unwrap();
    let ev = assert_last(&base, "threads.copy", copied, &dev_id).await;
    assert_eq!(ev["arguments"]["from"], "t-1", "{ev}");
    let (s, _) = call(&base, &dev, Method::DELETE, "/threads/t-1", None).await;
    assert_eq!(s, 204);
    assert_last(&base, "threads.delete", "t-1", &dev_id).await;
    // Deleting it again is a 404 and records nothing.
    let before = entries(&base).await.len();
    let (s, _) = call(&base, &dev, Method::DELETE, "/threads/t-1", None).await;
    assert_eq!(s, 404);
    assert_eq!(entries(&base).await.len(), before);

    // Store items: put and delete (the namespace and key, never the value).
    let item = json!({"namespace": ["prefs", "u1"], "key": "theme"});
    let mut put = item.clone();
    put["value"] = json!({"colour": secrets[2]});
    let (s, b) = call(&base, &dev, Method::PUT, "/store/items", Some(put)).await;
    assert_eq!(s, 204, "{b}");
    let ev = assert_last(&base, "store.put", "prefs.u1/theme", &dev_id).await;
    assert_eq!(ev["arguments"]["key"], "theme", "{ev}");
    let (s, b) = call(
        &base,
        &dev,
        Method::DELETE,
        "/store/items",
        Some(item.clone()),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    assert_last(&base, "store.delete", "prefs.u1/theme", &dev_id).await;
    // Deleting what is not there changes nothing: 204, no entry.
    let before = entries(&base).await.len();
    let (s, _) = call(&base, &dev, Method::DELETE, "/store/items", Some(item)).await;
    assert_eq!(s, 204);
    assert_eq!(entries(&base).await.len(), before);

    // An event emit: the event and the runs it started.
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        "/v1/triggers",
        Some(json!({"name": "on-ticket", "event": "ticket", "target": "stuck"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        &base,
        &dev,
        Method::POST,
        "/v1/events/ticket",
        Some(json!({"message": secrets[3]})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let started = b["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let ev = assert_last(&base, "events.emit", "ticket", &dev_id).await;
    assert_eq!(ev["arguments"]["runs"], json!([started]), "{ev}");
    let (s, _) = call(
        &base,
        &dev,
        Method::POST,
        &format!("/v1/runs/{started}/cancel"),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // The exports hold none of the payloads, and the chain verifies.
    let csv = reqwest::Client::new()
        .get(format!(
            "{base}/v1/audit?workspace=acme/prod&format=csv&limit=10000"
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let json_export = Value::Array(entries(&base).await).to_string();
    for action in [
        "runs.pause",
        "runs.resume",
        "runs.cancel",
        "runs.signal",
        "threads.create",
        "threads.patch",
        "threads.copy",
        "threads.delete",
        "store.put",
        "store.delete",
        "events.emit",
    ] {
        assert!(csv.contains(action), "{action} is not in the CSV: {csv}");
    }
    for secret in secrets {
        assert!(
            !csv.contains(secret),
            "{secret} is in the CSV export: {csv}"
        );
        assert!(
            !json_export.contains(secret),
            "{secret} is in the JSON export: {json_export}"
        );
    }
    let (s, v) = call(
        &base,
        ADMIN,
        Method::GET,
        "/v1/audit/verify?workspace=acme/prod",
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}
