//! `/mcp`'s `Idempotency-Key` across workspaces, against a real MCP upstream (rmcp over
//! streamable HTTP on 127.0.0.1, counting every call it really runs): two workspaces that
//! send the same key for the same federated `tools/call` each make their own call and get
//! their own answer; a retry within one workspace answers its first result without calling
//! the upstream again. The same on both lifecycles: a stateless 2026-07-28 POST (answered
//! directly) and a legacy 2025-11-25 session (through rmcp), which share the keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agentkit_mcp::rmcp::model::CallToolRequestParams;
use agentkit_runtime::{MemoryStore, Store};
use serde_json::{Value, json};

const ADMIN: &str = "mcp-idem-admin";

struct Running {
    base: String,
    /// The calls the upstream really ran.
    calls: Arc<AtomicU32>,
    /// Invoker keys of acme/prod and globex/prod, which both see `crm`.
    acme: String,
    globex: String,
    _served: inproc::InProcess,
    _crm: upstream::Upstream,
}

async fn start() -> Running {
    let calls = Arc::new(AtomicU32::new(0));
    let (url, crm) = upstream::crm(&["send"], Arc::clone(&calls)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let served = upstream::approval_gateway(&store, &url, ADMIN).await;
    let base = served.base.clone();
    let (acme, _) = upstream::workspace_key(&base, ADMIN, "acme", "invoker").await;
    let (globex, _) = upstream::workspace_key(&base, ADMIN, "globex", "invoker").await;
    Running {
        base,
        calls,
        acme,
        globex,
        _served: served,
        _crm: crm,
    }
}

/// The text of a `tools/call` result (as JSON).
fn text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

/// `crm__send {text}` as a stateless POST with `Idempotency-Key: idem`: the result.
async fn post(r: &Running, key: &str, idem: &str, text: &str) -> Value {
    let (s, body) = inproc::mcp_post(
        &r.base,
        key,
        "crm__send",
        json!({"text": text}),
        &[("idempotency-key", idem)],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["result"]["isError"], false, "{body}");
    body["result"].clone()
}

/// `crm__send {text}` on the legacy session `c`: the result.
async fn on_session(c: &inproc::McpClient, text: &str) -> Value {
    let call = CallToolRequestParams::new("crm__send")
        .with_arguments(json!({"text": text}).as_object().unwrap().clone());
    let r = c.call_tool(call).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{r:?}");
    serde_json::to_value(r).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_post_keys_are_per_workspace() {
    let r = start().await;
    let acme = post(&r, &r.acme, "order-42", "hello").await;
    assert_eq!(text(&acme), "send #1: hello", "{acme}");
    // The same key, tool and arguments in another workspace: its own call, its own answer.
    let globex = post(&r, &r.globex, "order-42", "hello").await;
    assert_eq!(text(&globex), "send #2: hello", "{globex}");
    assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    // Retries answer each workspace's first result; nothing is called again.
    for _ in 0..2 {
        assert_eq!(post(&r, &r.acme, "order-42", "hello").await, acme);
        assert_eq!(post(&r, &r.globex, "order-42", "hello").await, globex);
    }
    assert_eq!(
        r.calls.load(Ordering::SeqCst),
        2,
        "a retry made the call again"
    );
    // A retry on a session (the other lifecycle) with the same key answers the same result.
    let session = inproc::mcp_session(&r.base, &r.globex, &[("idempotency-key", "order-42")]).await;
    assert_eq!(text(&on_session(&session, "hello").await), "send #2: hello");
    assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    session.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keys_are_per_workspace() {
    let r = start().await;
    let keyed = [("idempotency-key", "order-7")];
    let acme = inproc::mcp_session(&r.base, &r.acme, &keyed).await;
    let globex = inproc::mcp_session(&r.base, &r.globex, &keyed).await;
    assert_eq!(text(&on_session(&acme, "hi").await), "send #1: hi");
    assert_eq!(text(&on_session(&globex, "hi").await), "send #2: hi");
    assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    // A retry on the same session, and on a new session of the same workspace, answers the
    // first result.
    assert_eq!(text(&on_session(&acme, "hi").await), "send #1: hi");
    let acme_again = inproc::mcp_session(&r.base, &r.acme, &keyed).await;
    assert_eq!(text(&on_session(&acme_again, "hi").await), "send #1: hi");
    assert_eq!(text(&on_session(&globex, "hi").await), "send #2: hi");
    assert_eq!(
        r.calls.load(Ordering::SeqCst),
        2,
        "a retry made the call again"
    );
    // And a stateless POST with that key too.
    assert_eq!(
        text(&post(&r, &r.acme, "order-7", "hi").await),
        "send #1: hi"
    );
    assert_eq!(r.calls.load(Ordering::SeqCst), 2);
    // Without the header, a session's every call is made.
    let plain = inproc::mcp_session(&r.base, &r.acme, &[]).await;
    assert_eq!(text(&on_session(&plain, "hi").await), "send #3: hi");
    assert_eq!(text(&on_session(&plain, "hi").await), "send #4: hi");
    for c in [acme, globex, acme_again, plain] {
        c.cancel().await.unwrap();
    }
}
