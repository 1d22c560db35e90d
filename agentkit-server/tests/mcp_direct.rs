//! `/mcp`'s direct answers: a stateless 2026-07-28 `tools/call` of a federated tool (a
//! plain JSON-RPC POST, as the README's curl example sends it) is answered without rmcp's
//! per-request service, under the same governance as on an rmcp session: the caller's
//! workspace and role, the gateway policy, the audit log (one entry per call, redacted),
//! revoked keys refused at once; the answers are the session's answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::Policy;
use agentkit_mcp::rmcp::RoleClient;
use agentkit_mcp::rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use agentkit_mcp::rmcp::service::RunningService;
use agentkit_runtime::{MemoryStore, Store};
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::tenancy::WorkspaceId;
use common::upstream::{Upstream, with_add, with_delete_all, with_echo, with_send};
use serde_json::{Value, json};

const ADMIN: &str = "test-key";

/// The token redaction finds in an argument.
const SECRET: &str = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c";

struct Running {
    base: String,
    /// The `send` calls the upstreams really ran.
    sends: Arc<AtomicU32>,
    _served: inproc::InProcess,
    _upstreams: [Upstream; 2],
}

/// `crm` is seen by acme/prod only, `calc` by default/default; the gateway policy denies
/// `*__delete_*`.
async fn start() -> Running {
    let sends = Arc::new(AtomicU32::new(0));
    let up = |name: &str| {
        let server = with_echo(with_add(agentkit_mcp::McpServerBuilder::new(name, "1.0.0")));
        let server = with_send(server, Arc::clone(&sends));
        Upstream::serve(with_delete_all(server).build())
    };
    let (crm, calc) = (up("crm").await, up("calc").await);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let policy = Policy::compile(
        "gateway",
        &PolicySpec::new().with_denied_tools(["*__delete_*"]),
    )
    .unwrap();
    let gateway = GatewayConfig::new()
        .with_policy(policy)
        .with_server_workspaces("crm", [WorkspaceId::new("acme", "prod")]);
    let servers = [("crm", crm.url.as_str()), ("calc", calc.url.as_str())];
    let served = inproc::serve_gateway(store, ADMIN, &servers, gateway).await;
    let base = served.base.clone();
    let (s, b) = inproc::create_workspace(&base, ADMIN, "acme", "prod").await;
    assert_eq!(s, 201, "{b}");
    Running {
        base,
        sends,
        _served: served,
        _upstreams: [crm, calc],
    }
}

/// A stateless `tools/call` POST with every header a 2026-07-28 client sends: the HTTP
/// status and the JSON body.
async fn post(
    r: &Running,
    key: &str,
    tool: &str,
    args: Value,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    inproc::mcp_post(&r.base, key, tool, args, extra).await
}

type Client = RunningService<RoleClient, ClientConfig>;

/// A 2026-07-28 result as a legacy session gets it (without `resultType: "complete"`).
fn legacy_shape(result: &Value) -> Value {
    let mut r = result.clone();
    if let Some(o) = r.as_object_mut() {
        assert_eq!(o.remove("resultType"), Some(json!("complete")), "{result}");
    }
    r
}

/// An rmcp client on a legacy session (every call through rmcp's service).
async fn session(r: &Running, key: &str) -> Client {
    inproc::mcp_session(&r.base, key, &[]).await
}

async fn session_call(c: &Client, tool: &str, args: &Value) -> Result<Value, String> {
    c.call_tool(
        CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().unwrap().clone()),
    )
    .await
    .map(|r: CallToolResult| serde_json::to_value(r).unwrap())
    .map_err(|e| e.to_string())
}

/// The audit entries of acme/prod for `tool`: (outcome, arguments as logged).
async fn audited(r: &Running, tool: &str) -> Vec<(String, Value)> {
    let (s, page) = inproc::call_as(
        &r.base,
        ADMIN,
        reqwest::Method::GET,
        "/v1/audit?workspace=acme/prod&limit=1000",
        None,
    )
    .await;
    assert_eq!(s, 200, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["tool"] == tool)
        .map(|e| {
            (
                e["event"]["outcome"].as_str().unwrap_or("").to_owned(),
                e["event"]["arguments"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_post_is_governed_and_answered_as_on_a_session() {
    let r = start().await;
    let (invoker, _) = inproc::create_key(
        &r.base,
        ADMIN,
        json!({"name": "i", "role": "invoker", "workspace": "acme/prod"}),
    )
    .await;
    let (viewer, _) = inproc::create_key(
        &r.base,
        ADMIN,
        json!({"name": "v", "role": "viewer", "workspace": "acme/prod"}),
    )
    .await;
    let legacy = session(&r, &invoker).await;

    // Allowed: the tool's answer, as the session gets it; audited once, redacted.
    let args = json!({"text": format!("my token is {SECRET}")});
    let (s, direct) = post(&r, &invoker, "crm__echo", args.clone(), &[]).await;
    assert_eq!(s, 200, "{direct}");
    assert_eq!(direct["id"], 3, "{direct}");
    assert_eq!(direct["result"]["isError"], false, "{direct}");
    let on_session = session_call(&legacy, "crm__echo", &args).await.unwrap();
    assert_eq!(legacy_shape(&direct["result"]), on_session);
    let log = audited(&r, "crm__echo").await;
    assert_eq!(log.len(), 2, "one entry per call: {log:?}");
    assert!(log.iter().all(|(o, _)| o == "allowed"), "{log:?}");
    assert!(
        !log[0].1.to_string().contains(SECRET),
        "the audit log holds no secret: {log:?}"
    );

    // Denied by the gateway policy: the same tool error, audited as denied.
    let (s, direct) = post(&r, &invoker, "crm__delete_all", json!({}), &[]).await;
    assert_eq!(s, 200, "{direct}");
    assert_eq!(direct["result"]["isError"], true, "{direct}");
    let on_session = session_call(&legacy, "crm__delete_all", &json!({}))
        .await
        .unwrap();
    assert_eq!(legacy_shape(&direct["result"]), on_session);
    let log = audited(&r, "crm__delete_all").await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|(o, _)| o == "denied"), "{log:?}");

    // Another workspace's server: an unknown tool, the session's JSON-RPC error.
    let (s, direct) = post(&r, &invoker, "calc__add", json!({"a": 1, "b": 2}), &[]).await;
    assert_eq!(s, 200, "{direct}");
    assert_eq!(direct["error"]["code"], -32602, "{direct}");
    let message = direct["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown tool `calc__add`"), "{direct}");
    let on_session = session_call(&legacy, "calc__add", &json!({"a": 1, "b": 2}))
        .await
        .unwrap_err();
    assert!(on_session.contains(message), "{on_session} / {message}");

    // A viewer may not call: a tool error naming the role, as on a session.
    let (s, direct) = post(&r, &viewer, "crm__echo", json!({"text": "x"}), &[]).await;
    assert_eq!(s, 200, "{direct}");
    assert_eq!(direct["result"]["isError"], true, "{direct}");
    let viewer_session = session(&r, &viewer).await;
    let on_session = session_call(&viewer_session, "crm__echo", &json!({"text": "x"}))
        .await
        .unwrap();
    assert_eq!(legacy_shape(&direct["result"]), on_session);
    assert!(
        direct["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("`invoker` role"),
        "{direct}"
    );

    // An unknown platform header: the JSON-RPC error of the header.
    let (s, direct) = post(
        &r,
        &invoker,
        "crm__echo",
        json!({"text": "x"}),
        &[("x-agentkit-platform", "nosuch")],
    )
    .await;
    assert_eq!(s, 200, "{direct}");
    assert_eq!(direct["error"]["code"], -32600, "{direct}");
    assert!(
        direct["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no registered platform `nosuch`"),
        "{direct}"
    );
    legacy.cancel().await.unwrap();
    viewer_session.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_the_next_post() {
    let r = start().await;
    let (key, id) = inproc::create_key(
        &r.base,
        ADMIN,
        json!({"name": "i", "role": "invoker", "workspace": "acme/prod"}),
    )
    .await;
    let (s, body) = post(&r, &key, "crm__echo", json!({"text": "x"}), &[]).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = inproc::call_as(
        &r.base,
        ADMIN,
        reqwest::Method::DELETE,
        &format!("/v1/keys/{id}"),
        None,
    )
    .await;
    assert!(s == 200 || s == 204, "{s} {body}");
    let (s, body) = post(&r, &key, "crm__echo", json!({"text": "x"}), &[]).await;
    assert_eq!(s, 401, "{body}");
    assert_eq!(audited(&r, "crm__echo").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_a_retried_post_answer_the_first_call() {
    let r = start().await;
    let (key, _) = inproc::create_key(
        &r.base,
        ADMIN,
        json!({"name": "i", "role": "invoker", "workspace": "acme/prod"}),
    )
    .await;
    let keyed = [("idempotency-key", "order-42")];
    let (s, first) = post(&r, &key, "crm__send", json!({"text": "once"}), &keyed).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(
        first["result"]["content"][0]["text"], "sent: once",
        "{first}"
    );
    assert_eq!(r.sends.load(Ordering::SeqCst), 1);

    // The retry gets the first answer; the upstream is not called again.
    let (s, again) = post(&r, &key, "crm__send", json!({"text": "once"}), &keyed).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["result"], first["result"], "{again}");
    assert_eq!(
        r.sends.load(Ordering::SeqCst),
        1,
        "a retry made the call again"
    );

    // The same key for another call is refused, saying what to do.
    let (_, other) = post(&r, &key, "crm__send", json!({"text": "twice"}), &keyed).await;
    let message = other["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("send a new key"), "{other}");
    // A key that cannot be one is refused before anything is called.
    let long = "k".repeat(300);
    let (_, bad) = post(
        &r,
        &key,
        "crm__send",
        json!({"text": "x"}),
        &[("idempotency-key", &long)],
    )
    .await;
    let message = bad["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Idempotency-Key"), "{bad}");
    assert_eq!(r.sends.load(Ordering::SeqCst), 1);

    // Without a key every POST is a call; a new key is a new call.
    post(&r, &key, "crm__send", json!({"text": "once"}), &[]).await;
    post(
        &r,
        &key,
        "crm__send",
        json!({"text": "once"}),
        &[("idempotency-key", "order-43")],
    )
    .await;
    assert_eq!(r.sends.load(Ordering::SeqCst), 3);
}
