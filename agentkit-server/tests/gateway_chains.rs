//! Chain rules at the gateway: a gateway client has no run, so the tool history a chain rule
//! looks at is its key's own earlier calls (`gatewayops::history`), across its requests and
//! the ways it calls (`/v1/execute`, `/mcp`). A call a chain rule sends for approval waits in
//! a durable run that decides it on the same history, so the run cannot let it through
//! unasked; and its arguments are sealed by the vault while it waits (a credential in them is
//! not in the database file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use agentkit_core::config::{ChainAction, ChainRule, PolicySpec};
use agentkit_core::policy::Policy;
use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::tenancy::WorkspaceId;
use common::upstream::{Upstream, with_add, with_send};
use inproc::{call_as, result_by_id as by_id};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "test-key";

/// A credential a client passes in a call's arguments.
const SECRET: &str = "sk-live-9f8e7d6c5b4a39281706f5e4d3c2b1a0";

struct Running {
    base: String,
    sends: Arc<AtomicU32>,
    /// Two invoker keys of acme/prod, and an operator.
    first: String,
    second: String,
    operator: String,
    dir: tempfile::TempDir,
    action: ChainAction,
    master: agentkit_server::vault::MasterKey,
    served: inproc::InProcess,
    crm: Upstream,
}

impl Running {
    /// Stop the server and start another (a new process's state: no history in memory) on
    /// the same database file; its keys are the same.
    async fn restart(&mut self) {
        self.served = serve(self.dir.path(), &self.crm.url, self.action, &self.master).await;
        self.base = self.served.base.clone();
    }
}

/// A server on the SQLite file `g.db` of `dir` (see [`start`]).
async fn serve(
    dir: &std::path::Path,
    crm: &str,
    action: ChainAction,
    master: &agentkit_server::vault::MasterKey,
) -> inproc::InProcess {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("g.db")).await.unwrap());
    serve_on(store, crm, action, master).await
}

/// A server on `store` (see [`start`]).
async fn serve_on(
    store: Arc<dyn Store>,
    crm: &str,
    action: ChainAction,
    master: &agentkit_server::vault::MasterKey,
) -> inproc::InProcess {
    let policy = Policy::compile(
        "gateway",
        &PolicySpec::new().with_chain(
            ChainRule::new(["crm__add", "crm__send"], action)
                .with_reason("a sum is not to be sent"),
        ),
    )
    .unwrap();
    let gateway = GatewayConfig::new()
        .with_policy(policy)
        .with_server_workspaces("crm", [WorkspaceId::new("acme", "prod")]);
    let server = inproc::gateway_builder(store, ADMIN, &[("crm", crm)], gateway)
        .master_key(master.clone())
        .build()
        .await
        .unwrap();
    inproc::serve(server).await
}

/// `crm` (`add`, `send`) seen by acme/prod; the gateway policy's chain rule: `crm__add` then
/// `crm__send` → `action`. The store is a SQLite file in `dir`, the vault has a master key.
async fn start(action: ChainAction) -> Running {
    let sends = Arc::new(AtomicU32::new(0));
    let crm = Upstream::serve(
        with_add(with_send(
            agentkit_mcp::McpServerBuilder::new("crm", "1.0.0"),
            Arc::clone(&sends),
        ))
        .build(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let master = agentkit_server::vault::MasterKey::generate().unwrap();
    let served = serve(dir.path(), &crm.url, action, &master).await;
    let base = served.base.clone();
    let key = |role: &'static str, name: &'static str| {
        let base = base.clone();
        async move { inproc::workspace_key(&base, ADMIN, "acme", "prod", role, name).await }
    };
    Running {
        first: key("invoker", "first").await,
        second: key("invoker", "second").await,
        operator: key("operator", "ops").await,
        base,
        sends,
        dir,
        action,
        master,
        served,
        crm,
    }
}

/// One `/v1/execute` call of `crm__<tool>` as `key`: its result.
async fn execute(r: &Running, key: &str, tool: &str, arguments: Value) -> Value {
    execute_at(&r.base, key, tool, arguments).await
}

/// [`execute`] through the server at `base`.
async fn execute_at(base: &str, key: &str, tool: &str, arguments: Value) -> Value {
    let body =
        json!({"calls": [{"id": "c", "server": "crm", "tool": tool, "arguments": arguments}]});
    let (s, b) = call_as(base, key, Method::POST, "/v1/execute", Some(body)).await;
    assert_eq!(s, 200, "{b}");
    by_id(&b, "c").clone()
}

/// `key`'s send through the server at `base` is refused by the chain rule, on `/v1/execute`
/// and on `/mcp`.
async fn assert_send_refused(base: &str, key: &str) {
    let refused = execute_at(base, key, "send", json!({"text": "3"})).await;
    assert_eq!(refused["status"], "denied", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("a sum is not to be sent"),
        "{refused}"
    );
    let (_, answer) = inproc::mcp_post(base, key, "crm__send", json!({"text": "3"}), &[]).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");
}

/// Whether any file of the store's directory holds `needle`.
fn stored_anywhere(dir: &std::path::Path, needle: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
                .then(|| path.display().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rule_looks_at_the_callers_earlier_gateway_calls() {
    let r = start(ChainAction::Block).await;
    // Nothing before it: a send goes through.
    let sent = execute(&r, &r.first, "send", json!({"text": "hello"})).await;
    assert_eq!(sent["status"], "success", "{sent}");
    // A sum, in one request; a send, in the next: the chain is the key's, not the request's.
    let sum = execute(&r, &r.first, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(sum["status"], "success", "{sum}");
    let refused = execute(&r, &r.first, "send", json!({"text": "5"})).await;
    assert_eq!(refused["status"], "denied", "{refused}");
    let why = refused["error"].as_str().unwrap_or_default();
    assert!(why.contains("a sum is not to be sent"), "{refused}");
    assert_eq!(
        r.sends.load(Ordering::SeqCst),
        1,
        "the refused send never ran"
    );

    // The same key over `/mcp` (another way in, same caller): refused too, as a tool error.
    let (s, answer) =
        inproc::mcp_post(&r.base, &r.first, "crm__send", json!({"text": "5"}), &[]).await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert_eq!(r.sends.load(Ordering::SeqCst), 1);

    // Another key of the same workspace has its own history: its send goes through, until it
    // makes the chain itself (over `/mcp` this time).
    let theirs = execute(&r, &r.second, "send", json!({"text": "hi"})).await;
    assert_eq!(theirs["status"], "success", "{theirs}");
    assert_eq!(r.sends.load(Ordering::SeqCst), 2);
    let (_, sum) =
        inproc::mcp_post(&r.base, &r.second, "crm__add", json!({"a": 1, "b": 1}), &[]).await;
    assert_eq!(sum["result"]["isError"], false, "{sum}");
    let refused = execute(&r, &r.second, "send", json!({"text": "2"})).await;
    assert_eq!(refused["status"], "denied", "{refused}");
    assert_eq!(r.sends.load(Ordering::SeqCst), 2);
    inproc::assert_audit_verifies(&r.base, ADMIN, "acme/prod").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rule_approval_is_asked_in_the_durable_run_with_the_arguments_sealed() {
    let r = start(ChainAction::RequireApproval).await;
    let sum = execute(&r, &r.first, "add", json!({"a": 2, "b": 3})).await;
    assert_eq!(sum["status"], "success", "{sum}");
    let text = format!("the key is {SECRET}");
    let pending = execute(&r, &r.first, "send", json!({"text": text})).await;
    assert_eq!(pending["status"], "pending_approval", "{pending}");
    let run_id = pending["run_id"].as_str().unwrap().to_owned();

    // The run decides the call on the history the gateway decided it on: it waits for the
    // approval rather than making the call.
    inproc::wait_run(&r.base, &r.first, &run_id, "waiting_approval").await;
    assert_eq!(
        r.sends.load(Ordering::SeqCst),
        0,
        "nothing was sent before the approval"
    );
    let (_, queue) = call_as(&r.base, &r.operator, Method::GET, "/v1/approvals", None).await;
    let queue = queue.as_array().unwrap();
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0]["run_id"], run_id.as_str());

    // While it waits, the credential in its arguments is nowhere in the database's files.
    let leaks = stored_anywhere(r.dir.path(), SECRET);
    assert!(leaks.is_empty(), "{SECRET} is stored in clear in {leaks:?}");
    // What the run shows of its input says the arguments are sealed.
    let (_, run) = call_as(
        &r.base,
        &r.first,
        Method::GET,
        &format!("/v1/runs/{run_id}"),
        None,
    )
    .await;
    assert!(!run.to_string().contains(SECRET), "{run}");

    // Approved: the exact call is made once, with the arguments as given.
    let (s, b) = call_as(
        &r.base,
        &r.operator,
        Method::POST,
        &format!("/v1/approvals/{run_id}/c/approve"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let done = inproc::wait_run(&r.base, &r.first, &run_id, "succeeded").await;
    assert_eq!(r.sends.load(Ordering::SeqCst), 1, "{done}");
    let content = done["output"]["content"].to_string();
    assert!(content.contains("sent: the key is"), "{done}");
    // The tool's answer (which repeats it) is stored masked, as every journaled result is.
    let leaks = stored_anywhere(r.dir.path(), SECRET);
    assert!(leaks.is_empty(), "{SECRET} is stored in clear in {leaks:?}");
}

/// A chain rule holds across a restart at the gateway too: the new process reads the caller's
/// earlier gateway calls from the audit log on its first call, so a read made before the
/// restart still blocks a send after it; another key's history is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rule_holds_across_a_restart() {
    let mut r = start(ChainAction::Block).await;
    let sum = execute(&r, &r.first, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(sum["status"], "success", "{sum}");
    r.restart().await;
    // On `/v1/execute`, then `/mcp` (the same caller, the history already read).
    assert_send_refused(&r.base, &r.first).await;
    assert_eq!(
        r.sends.load(Ordering::SeqCst),
        0,
        "the refused sends never ran"
    );
    // The other key made no sum: its send goes.
    let theirs = execute(&r, &r.second, "send", json!({"text": "hi"})).await;
    assert_eq!(theirs["status"], "success", "{theirs}");
    assert_eq!(r.sends.load(Ordering::SeqCst), 1);
    // The audit log says which calls came through the gateway.
    let entries = inproc::audit_entries(&r.base, ADMIN, "?workspace=acme/prod").await;
    assert!(
        entries
            .iter()
            .filter(|e| e["event"]["tool"] == "crm__add")
            .all(|e| e["event"]["via"] == "gateway"),
        "{entries:?}"
    );
    // The CSV export says so too (its `via` column).
    let (s, _, csv) = inproc::request(
        &r.base,
        Method::GET,
        "/v1/audit?workspace=acme/prod&format=csv&limit=10000",
        None,
        &[("x-api-key", ADMIN)],
    )
    .await;
    assert_eq!(s, 200);
    let csv = csv.as_str().unwrap().to_owned();
    let adds: Vec<&str> = csv.lines().filter(|l| l.contains(",crm__add,")).collect();
    assert!(!adds.is_empty(), "{csv}");
    // … `via`, `history`, `node`: a gateway call, no chain, the node that decided it.
    assert!(
        adds.iter().all(|l| {
            let last: Vec<&str> = l.rsplitn(3, ',').collect();
            !last[0].is_empty() && last[1].is_empty() && last[2].ends_with(",gateway")
        }),
        "{csv}"
    );
    inproc::assert_audit_verifies(&r.base, ADMIN, "acme/prod").await;
}

/// Two servers on one PostgreSQL database (two nodes): a sum made through one makes the
/// send through the other refused, although the caller had used the other node before the
/// sum (its history there was read already); another key's send goes; the audit entries
/// name the node that decided each call.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rule_holds_across_nodes() {
    let pg = common::pg::Pg::start();
    let store = |url: String| async move {
        Arc::new(
            agentkit_runtime::PostgresStore::connect(&url)
                .await
                .unwrap(),
        ) as Arc<dyn Store>
    };
    let mut r = start(ChainAction::Block).await;
    let master = r.master.clone();
    // Both nodes on PostgreSQL; the keys are made on node A.
    r.served = serve_on(store(pg.url.clone()).await, &r.crm.url, r.action, &master).await;
    r.base = r.served.base.clone();
    let key = |role: &'static str, name: &'static str| {
        let base = r.base.clone();
        async move { inproc::workspace_key(&base, ADMIN, "acme", "prod", role, name).await }
    };
    let (first, second) = (
        key("invoker", "first").await,
        key("invoker", "second").await,
    );
    let b = serve_on(store(pg.url.clone()).await, &r.crm.url, r.action, &master).await;
    // The caller sends through B first: nothing to refuse, and B now knows its history.
    let sent = execute_at(&b.base, &first, "send", json!({"text": "hello"})).await;
    assert_eq!(sent["status"], "success", "{sent}");
    // A sum through A, then a send through B: refused by the chain rule.
    let sum = execute_at(&r.base, &first, "add", json!({"a": 1, "b": 2})).await;
    assert_eq!(sum["status"], "success", "{sum}");
    // On B's `/v1/execute` and `/mcp`.
    assert_send_refused(&b.base, &first).await;
    // The other key made no sum: its send through B goes, and through A.
    for base in [&b.base, &r.base] {
        let theirs = execute_at(base, &second, "send", json!({"text": "hi"})).await;
        assert_eq!(theirs["status"], "success", "{theirs}");
    }
    assert_eq!(
        r.sends.load(Ordering::SeqCst),
        3,
        "the refused sends never ran"
    );

    // Each gateway entry names the node that decided it: two nodes, and the sum is A's.
    let entries = inproc::audit_entries(&r.base, ADMIN, "?workspace=acme/prod").await;
    let gateway: Vec<&Value> = entries
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["via"] == "gateway")
        .collect();
    let nodes: std::collections::BTreeSet<&str> = gateway
        .iter()
        .map(|e| e["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "{gateway:?}");
    let add_node = gateway.iter().find(|e| e["tool"] == "crm__add").unwrap()["node"]
        .as_str()
        .unwrap();
    let denied: Vec<&&Value> = gateway
        .iter()
        .filter(|e| e["tool"] == "crm__send" && e["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 2, "{gateway:?}");
    assert!(
        denied.iter().all(|e| e["node"] != add_node),
        "the refusals were B's: {gateway:?}"
    );
    inproc::assert_audit_verifies(&r.base, ADMIN, "acme/prod").await;
    drop(b);
}
