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

use agentkit_server::spec::ModelFactory;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "audit-controls-admin";

/// The API as one key of `acme/prod`, and the audit log it writes to.
struct Api {
    base: String,
    key: String,
    key_id: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        inproc::call_as(&self.base, &self.key, method, path, body).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(Method::POST, path, body).await
    }

    /// A run of `stuck` started in the background with `path` and `body`: its id.
    async fn start(&self, path: &str, body: Value) -> String {
        let (s, b) = self.post(path, Some(body)).await;
        assert!(s == 200 || s == 202, "{s} {b}");
        b["run_id"].as_str().unwrap().to_owned()
    }

    /// Every audit entry of `acme/prod` (CSV and JSON), read at once (no waiting).
    async fn audit(&self) -> (String, Vec<Value>) {
        inproc::audit_exports(&self.base, ADMIN, "acme/prod").await
    }

    /// The last entry is the change `action` of `resource` by this key; its event.
    async fn assert_last(&self, action: &str, resource: &str) -> Value {
        let e = self.audit().await.1.pop().unwrap();
        let ev = &e["event"];
        assert_eq!(ev["outcome"], "changed", "{e}");
        assert_eq!(ev["tool"], action, "{e}");
        assert_eq!(ev["call_id"], resource, "{e}");
        assert_eq!(ev["actor"], self.key_id.as_str(), "{e}");
        assert_eq!(ev["key_id"], self.key_id.as_str(), "{e}");
        assert_eq!(ev["tenant"], "acme", "{e}");
        assert_eq!(ev["workspace"], "prod", "{e}");
        ev.clone()
    }

    /// `method path` answers `status` and adds no audit entry (it changed nothing).
    async fn assert_unrecorded(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) {
        let before = self.audit().await.1.len();
        let (s, b) = self.call(method, path, body).await;
        assert_eq!(s, status, "{b}");
        assert_eq!(self.audit().await.1.len(), before, "{path} was recorded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_threads_items_and_emits_are_in_the_audit_log_before_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let models = ModelFactory::offline().with_provider("scripted:stuck", Arc::new(inproc::Stuck));
    let server = inproc::declarative_on(dir.path(), ADMIN, models)
        .await
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
    let api = Api {
        base,
        key: dev,
        key_id: dev_id,
    };
    let agent = json!({"name": "stuck", "kind": "agent",
                       "spec": {"model": "scripted:stuck", "instructions": "Think."}});
    let (s, b) = api.post("/v1/agents", Some(agent)).await;
    assert!(s == 201 || s == 200, "{s} {b}");
    // What must never reach the audit log.
    let secrets = [
        "signal-payload-5b1e9c",
        "thread-metadata-value-77aa01",
        "item-value-c0ffee42",
        "event-payload-9d3f11",
        "message-text-4e8a2b",
    ];
    let messages = json!({"messages": [{"role": "user", "content": secrets[4]}]});

    // v1 controls: pause, signal (while paused), resume, cancel with a reason.
    let run = api
        .start("/v1/agents/stuck/runs", json!({"message": secrets[4]}))
        .await;
    let (s, b) = api.post(&format!("/v1/runs/{run}/pause"), None).await;
    assert_eq!((s, &b["status"]), (200, &json!("paused")), "{b}");
    api.assert_last("runs.pause", &run).await;
    let signal = json!({"name": "nudge", "payload": {"note": secrets[0]}});
    let (s, b) = api
        .post(&format!("/v1/runs/{run}/signal"), Some(signal))
        .await;
    assert_eq!(s, 200, "{b}");
    let ev = api.assert_last("runs.signal", &run).await;
    assert_eq!(ev["arguments"]["signal"], "nudge", "{ev}");
    let (s, b) = api.post(&format!("/v1/runs/{run}/resume"), None).await;
    assert_eq!(s, 200, "{b}");
    api.assert_last("runs.resume", &run).await;
    let reason = json!({"reason": "wrong customer"});
    let (s, b) = api
        .post(&format!("/v1/runs/{run}/cancel"), Some(reason))
        .await;
    assert_eq!((s, &b["status"]), (200, &json!("cancelled")), "{b}");
    let ev = api.assert_last("runs.cancel", &run).await;
    assert_eq!(ev["arguments"]["reason"], "wrong customer", "{ev}");
    // A refused control (the run ended) is not recorded as made.
    api.assert_unrecorded(Method::POST, &format!("/v1/runs/{run}/pause"), None, 409)
        .await;

    // The Agent Protocol cancel of a stateless run.
    let ap = api
        .start("/runs", json!({"agent_id": "stuck", "input": messages}))
        .await;
    let (s, b) = api.post(&format!("/runs/{ap}/cancel"), None).await;
    assert_eq!(s, 202, "{b}");
    let ev = api.assert_last("runs.cancel", &ap).await;
    assert_eq!(ev["arguments"]["reason"], "cancelled by request", "{ev}");

    // LangGraph threads: created, patched, a run on it cancelled, copied, deleted.
    let thread = json!({"thread_id": "t-1", "metadata": {"customer": secrets[1]}});
    let (s, t) = api.post("/threads", Some(thread)).await;
    assert_eq!(s, 200, "{t}");
    api.assert_last("threads.create", "t-1").await;
    // Asking again with `do_nothing` changes nothing, so it is not recorded.
    let again = json!({"thread_id": "t-1", "if_exists": "do_nothing"});
    api.assert_unrecorded(Method::POST, "/threads", Some(again), 200)
        .await;
    let patch = json!({"metadata": {"stage": secrets[1]}});
    let (s, b) = api.call(Method::PATCH, "/threads/t-1", Some(patch)).await;
    assert_eq!(s, 200, "{b}");
    let ev = api.assert_last("threads.patch", "t-1").await;
    assert_eq!(ev["arguments"]["metadata_keys"], json!(["stage"]), "{ev}");
    let lg = api
        .start(
            "/threads/t-1/runs",
            json!({"assistant_id": "stuck", "input": messages}),
        )
        .await;
    let cancel = format!("/threads/t-1/runs/{lg}/cancel?wait=true");
    let (s, b) = api.post(&cancel, None).await;
    assert_eq!(s, 200, "{b}");
    api.assert_last("runs.cancel", &lg).await;
    let (s, copy) = api.post("/threads/t-1/copy", None).await;
    assert_eq!(s, 200, "{copy}");
    let ev = api
        .assert_last("threads.copy", copy["thread_id"].as_str().unwrap())
        .await;
    assert_eq!(ev["arguments"]["from"], "t-1", "{ev}");
    let (s, _) = api.call(Method::DELETE, "/threads/t-1", None).await;
    assert_eq!(s, 204);
    api.assert_last("threads.delete", "t-1").await;
    // Deleting it again is a 404 and records nothing.
    api.assert_unrecorded(Method::DELETE, "/threads/t-1", None, 404)
        .await;

    // Store items: put and delete (the namespace and key, never the value).
    let item = json!({"namespace": ["prefs", "u1"], "key": "theme"});
    let mut put = item.clone();
    put["value"] = json!({"colour": secrets[2]});
    let (s, b) = api.call(Method::PUT, "/store/items", Some(put)).await;
    assert_eq!(s, 204, "{b}");
    let ev = api.assert_last("store.put", "prefs.u1/theme").await;
    assert_eq!(ev["arguments"]["key"], "theme", "{ev}");
    let (s, b) = api
        .call(Method::DELETE, "/store/items", Some(item.clone()))
        .await;
    assert_eq!(s, 204, "{b}");
    api.assert_last("store.delete", "prefs.u1/theme").await;
    // Deleting what is not there changes nothing: 204, no entry.
    api.assert_unrecorded(Method::DELETE, "/store/items", Some(item), 204)
        .await;

    // An event emit: the event and the runs it started.
    let trigger = json!({"name": "on-ticket", "event": "ticket", "target": "stuck"});
    let (s, b) = api.post("/v1/triggers", Some(trigger)).await;
    assert_eq!(s, 201, "{b}");
    let payload = json!({"message": secrets[3]});
    let (s, b) = api.post("/v1/events/ticket", Some(payload)).await;
    assert_eq!(s, 202, "{b}");
    let started = b["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let ev = api.assert_last("events.emit", "ticket").await;
    assert_eq!(ev["arguments"]["runs"], json!([started]), "{ev}");
    let (s, _) = api.post(&format!("/v1/runs/{started}/cancel"), None).await;
    assert_eq!(s, 200);

    // The exports hold none of the payloads, and the chain verifies.
    let (csv, entries) = api.audit().await;
    let json_export = Value::Array(entries).to_string();
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
    inproc::assert_audit_verifies(&api.base, ADMIN, "acme/prod").await;
}
