//! What happens to an approval when its run ends first, over real HTTP on SQLite: whichever
//! way the run is cancelled (`POST /v1/runs/{id}/cancel`, the Agent Protocol's
//! `POST /runs/{id}/cancel`, the LangGraph thread run cancel, deleting the thread, a newer run
//! on the thread with `if_busy: interrupt`), and also when the process that ended it stopped
//! before withdrawing it, its pending approvals leave the queue as `cancelled` (decided by
//! `run`, with how the run ended), and deciding one afterwards is a clear 409, never a 500.
//! The same holds for a gateway call (`/v1/execute`, or a federated `/mcp` call cancelled
//! with MCP `tasks/cancel`) waiting for an approval; a gateway call id with `/` is decided
//! per call through a percent-encoded path segment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;
mod upstream;

use inproc::call_as;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::{Policy, PolicyLayer};
use agentkit_core::{Agent, AgentLlm, RunStatus, ScriptedProvider};
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    Implementation, ProtocolVersion,
};
use agentkit_mcp::rmcp::{ClientLifecycleMode, ClientServiceExt};
use agentkit_runtime::Store;
use agentkit_runtime::model::RunUpdate;
use agentkit_server::Server;
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::policy::StoreAudit;
use agentkit_server::tenancy::WorkspaceId;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "lifecycle-admin-key";

struct Mailer {
    base: String,
    store: Arc<dyn Store>,
    sent: Arc<AtomicU32>,
    _served: inproc::InProcess,
    _dir: tempfile::TempDir,
}

/// A `mailer` agent whose every `mail__send` needs an approval; its model asks for one
/// send per run, `runs` times.
async fn mailer(runs: usize) -> Mailer {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let policy = Policy::compile(
        "mail",
        &PolicySpec::new().with_require_approval(["mail__send"]),
    )
    .unwrap();
    let audit = Arc::new(StoreAudit::new(Arc::clone(&store)));
    let sent = Arc::new(AtomicU32::new(0));
    let send = inproc::counted_tool("mail__send", "Send a mail", "sent", &sent);
    let mut model = ScriptedProvider::new();
    for i in 0..runs {
        model = model.then_tool_call("mail__send", json!({"to": format!("user{i}")}));
    }
    let agent = AgentLlm::shared(
        Agent::new("mailer", "Send mails.").with_tool(send),
        Arc::new(model),
    )
    .with_memory(Server::memory_for(Arc::clone(&store)))
    .with_tool_layer(PolicyLayer::new(policy).with_audit(audit));
    let server = Server::builder(Arc::clone(&store))
        .admin_key(ADMIN)
        .agent_llm("mailer", Arc::new(agent), "Sends mails")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Mailer {
        base: served.base.clone(),
        store,
        sent,
        _served: served,
        _dir: dir,
    }
}

async fn wait_status(base: &str, key: &str, run_id: &str, status: &str) -> Value {
    inproc::wait_run(base, key, run_id, status).await
}

/// The approvals of `run_id` with `status`, as `key` lists them.
async fn approvals(base: &str, key: &str, run_id: &str, status: &str) -> Vec<Value> {
    let (s, all) = call_as(
        base,
        key,
        Method::GET,
        &format!("/v1/approvals?status={status}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{all}");
    all.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["run_id"] == run_id)
        .cloned()
        .collect()
}

/// Start a mailer run (on `thread`, with `if_busy`) and wait until its call is pending;
/// returns the run and the call.
async fn waiting_run(m: &Mailer, thread: Option<&str>, if_busy: Option<&str>) -> (String, String) {
    let mut body = json!({"message": "send the mail"});
    if let Some(t) = thread {
        body["thread_id"] = json!(t);
    }
    if let Some(b) = if_busy {
        body["if_busy"] = json!(b);
    }
    let (s, run) = call_as(
        &m.base,
        ADMIN,
        Method::POST,
        "/v1/agents/mailer/runs",
        Some(body),
    )
    .await;
    assert!(s == 200 || s == 202, "{s} {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_status(&m.base, ADMIN, &run_id, "waiting_approval").await;
    let pending = approvals(&m.base, ADMIN, &run_id, "pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    (run_id, pending[0]["call_id"].as_str().unwrap().to_owned())
}

/// The run's approval left the queue as `cancelled`, saying how the run ended, and deciding
/// it (per call or per run) is a 409 that says why.
async fn assert_withdrawn(base: &str, key: &str, run_id: &str, call_id: &str, how: &str) {
    assert!(
        approvals(base, key, run_id, "pending").await.is_empty(),
        "run {run_id} still has a pending approval"
    );
    let gone = approvals(base, key, run_id, "cancelled").await;
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0]["call_id"], call_id, "{gone:?}");
    assert_eq!(gone[0]["decided_by"], "run", "{gone:?}");
    let reason = gone[0]["decision_reason"].as_str().unwrap();
    assert!(
        reason.contains("cancelled") && reason.contains(how),
        "{reason}"
    );
    for verb in ["approve", "reject"] {
        let (s, b) = decide(
            base,
            key,
            run_id,
            call_id,
            verb,
            Some(json!({"reason": "late"})),
        )
        .await;
        assert_eq!(s, 409, "{verb} after the run ended: {b}");
        assert_eq!(b["status"], 409, "a problem detail: {b}");
        assert!(
            b["detail"].as_str().unwrap().contains("cancelled"),
            "the answer says why: {b}"
        );
        let (s, b) = call_as(
            base,
            key,
            Method::POST,
            &format!("/v1/runs/{run_id}/{verb}"),
            Some(json!({})),
        )
        .await;
        assert_eq!(s, 409, "run-level {verb} after the run ended: {b}");
    }
    let (s, b) = decide(base, key, run_id, call_id, "claim", None).await;
    assert_eq!(s, 409, "claim after the run ended: {b}");
}

/// End waiting run `run` in the store directly, as a process that stopped before
/// withdrawing its approvals would have left it.
async fn end_behind_the_servers_back(m: &Mailer, run: &str, status: RunStatus, error: &str) {
    m.store
        .transition(
            run,
            &[RunStatus::WaitingApproval],
            RunUpdate::new(status).with_error(error),
        )
        .await
        .unwrap()
        .unwrap();
}

/// `POST /v1/approvals/{run_id}/{call_id}/{verb}` (`approve`, `reject` or `claim`) as `key`,
/// the call id sent percent-encoded as one path segment (`batch/2` as `batch%2F2`).
async fn decide(
    base: &str,
    key: &str,
    run_id: &str,
    call_id: &str,
    verb: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let path = format!("/v1/approvals/{run_id}/{}/{verb}", encode(call_id));
    call_as(base, key, Method::POST, &path, body).await
}

/// `id` as one path segment.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_of_cancelling_a_run_withdraws_its_pending_approval() {
    let m = mailer(8).await;

    // POST /v1/runs/{id}/cancel, with a reason.
    let (run, call_id) = waiting_run(&m, None, None).await;
    let (s, b) = call_as(
        &m.base,
        ADMIN,
        Method::POST,
        &format!("/v1/runs/{run}/cancel"),
        Some(json!({"reason": "wrong recipient"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_withdrawn(&m.base, ADMIN, &run, &call_id, "wrong recipient").await;

    // The Agent Protocol's POST /runs/{id}/cancel.
    let (run, call_id) = waiting_run(&m, None, None).await;
    let (s, b) = call_as(
        &m.base,
        ADMIN,
        Method::POST,
        &format!("/runs/{run}/cancel"),
        None,
    )
    .await;
    assert!(s == 200 || s == 202 || s == 204, "{s} {b}");
    assert_withdrawn(&m.base, ADMIN, &run, &call_id, "cancelled by request").await;

    // The LangGraph thread run cancel, and deleting the thread.
    let (s, t) = call_as(&m.base, ADMIN, Method::POST, "/threads", Some(json!({}))).await;
    assert_eq!(s, 200, "{t}");
    let thread = t["thread_id"].as_str().unwrap().to_owned();
    let (run, call_id) = waiting_run(&m, Some(&thread), None).await;
    let (s, b) = call_as(
        &m.base,
        ADMIN,
        Method::POST,
        &format!("/threads/{thread}/runs/{run}/cancel"),
        None,
    )
    .await;
    assert!(s == 200 || s == 202 || s == 204, "{s} {b}");
    assert_withdrawn(&m.base, ADMIN, &run, &call_id, "cancelled by request").await;

    // A newer run on the thread that interrupts the waiting one.
    let (first, first_call) = waiting_run(&m, Some(&thread), None).await;
    let (second, second_call) = waiting_run(&m, Some(&thread), Some("interrupt")).await;
    wait_status(&m.base, ADMIN, &first, "cancelled").await;
    assert_withdrawn(&m.base, ADMIN, &first, &first_call, "interrupted by run").await;

    // Deleting the thread cancels its waiting run.
    let (s, b) = call_as(
        &m.base,
        ADMIN,
        Method::DELETE,
        &format!("/threads/{thread}"),
        None,
    )
    .await;
    assert!(s == 200 || s == 204, "{s} {b}");
    wait_status(&m.base, ADMIN, &second, "cancelled").await;
    assert_withdrawn(&m.base, ADMIN, &second, &second_call, "was deleted").await;

    // A run ended by a process that stopped before withdrawing its approval (here: the
    // store changed behind the server's back): listing the queue withdraws it.
    let (run, call_id) = waiting_run(&m, None, None).await;
    end_behind_the_servers_back(&m, &run, RunStatus::Cancelled, "cancelled: by another node").await;
    // Deciding it withdraws it and says so.
    let (s, b) = decide(&m.base, ADMIN, &run, &call_id, "approve", None).await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("approvals were withdrawn"),
        "{b}"
    );
    assert_withdrawn(&m.base, ADMIN, &run, &call_id, "by another node").await;
    // And one more ended that way is withdrawn by listing the queue.
    let (run, call_id) = waiting_run(&m, None, None).await;
    end_behind_the_servers_back(&m, &run, RunStatus::Failed, "the node lost its lease").await;
    assert!(approvals(&m.base, ADMIN, &run, "pending").await.is_empty());
    let gone = approvals(&m.base, ADMIN, &run, "cancelled").await;
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(gone[0]["call_id"], call_id.as_str());
    assert!(
        gone[0]["decision_reason"]
            .as_str()
            .unwrap()
            .contains("failed: the node lost its lease"),
        "{gone:?}"
    );

    // Nothing was ever sent; the audit log says each withdrawn call was not made, and
    // verifies.
    assert_eq!(m.sent.load(Ordering::SeqCst), 0);
    let entries = inproc::audit_entries(&m.base, ADMIN, "?limit=10000").await;
    let withdrawn = entries
        .iter()
        .filter(|e| e["event"]["outcome"] == "rejected" && e["event"]["actor"] == "run")
        .count();
    assert_eq!(withdrawn, 7, "{entries:?}");
    let (_, v) = call_as(&m.base, ADMIN, Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_calls_approval_is_withdrawn_with_its_run_and_a_slashed_call_id_is_decidable() {
    let sends = Arc::new(AtomicU32::new(0));
    let (crm, stop) = upstream::crm(&["send"], Arc::clone(&sends)).await;
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let gateway = GatewayConfig::new()
        .with_policy(
            Policy::compile(
                "gateway",
                &PolicySpec::new().with_require_approval(["crm__send"]),
            )
            .unwrap(),
        )
        .with_server_workspaces("crm", [WorkspaceId::new("acme", "prod")]);
    let served = inproc::serve_gateway(store, ADMIN, &[("crm", &crm)], gateway).await;
    let base = served.base.clone();
    let (ops, _) = upstream::workspace_key(&base, ADMIN, "acme", "operator").await;

    let execute = |id: &'static str| {
        let (base, ops) = (base.clone(), ops.clone());
        async move {
            let (s, b) = call_as(
                &base,
                &ops,
                Method::POST,
                "/v1/execute",
                Some(json!({"calls": [
                    {"id": id, "server": "crm", "tool": "send", "arguments": {"text": id}},
                ]})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
            let r = &b["results"][0];
            assert_eq!(r["status"], "pending_approval", "{b}");
            let run_id = r["run_id"].as_str().unwrap().to_owned();
            wait_status(&base, &ops, &run_id, "waiting_approval").await;
            run_id
        }
    };

    // Cancelled while it waits: withdrawn, and deciding it is a 409; nothing is sent.
    let run = execute("batch/1").await;
    let (s, b) = call_as(
        &base,
        &ops,
        Method::POST,
        &format!("/v1/runs/{run}/cancel"),
        Some(json!({"reason": "not needed"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_withdrawn(&base, &ops, &run, "batch/1", "not needed").await;

    // A call id with `/`, decided per call with the id percent-encoded: it runs once.
    let run = execute("batch/2").await;
    let (s, b) = decide(
        &base,
        &ops,
        &run,
        "batch/2",
        "approve",
        Some(json!({"reason": "fine"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    // The decision is in the audit log the moment the answer arrives (before the run has
    // resumed), once: the resumed run does not write it again.
    let approved = async || -> Vec<Value> {
        inproc::audit_entries(&base, ADMIN, "?workspace=acme/prod&limit=10000")
            .await
            .into_iter()
            .filter(|e| e["event"]["run_id"] == run.as_str() && e["event"]["outcome"] == "approved")
            .collect()
    };
    let entries = approved().await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["event"]["call_id"], "batch/2");
    assert!(
        entries[0]["event"]["actor"]
            .as_str()
            .is_some_and(|a| !a.is_empty() && a != "admin")
    );
    let done = wait_status(&base, &ops, &run, "succeeded").await;
    let again = approved().await;
    assert_eq!(again.len(), 1, "written once: {again:?}");
    assert_eq!(
        done["output"]["content"],
        json!([{"type": "text", "text": "send #1: batch/2"}]),
        "{done}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        sends.load(Ordering::SeqCst),
        1,
        "only the approved call ran, once"
    );

    // Over `/mcp`, a federated call that waits is a task (its run); MCP `tasks/cancel`
    // cancels the run and withdraws the approval.
    let client = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("governance-lifecycle-test", "0.0.0"),
    )
    .serve_with_lifecycle(
        inproc::mcp_transport(&base, Some(&ops), &[]),
        ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            legacy_version: None,
        },
    )
    .await
    .unwrap();
    let response = client
        .call_tool_once(
            CallToolRequestParams::new("crm__send")
                .with_arguments(json!({"text": "as a task"}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    let CallToolResponse::Task(created) = response else {
        panic!("a tasks client gets a task, got {response:?}");
    };
    let task = created.task.task_id.clone();
    wait_status(&base, &ops, &task, "waiting_approval").await;
    let waiting = approvals(&base, &ops, &task, "pending").await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let task_call = waiting[0]["call_id"].as_str().unwrap().to_owned();
    client
        .cancel_task(CancelTaskParams::new(&task))
        .await
        .unwrap();
    wait_status(&base, &ops, &task, "cancelled").await;
    assert_withdrawn(&base, &ops, &task, &task_call, "cancelled").await;
    // The cancel is in the audit log like the HTTP routes' (`runs.cancel`, with the reason).
    let audit = inproc::audit_entries(&base, ADMIN, "?workspace=acme/prod&limit=10000").await;
    let cancel = audit
        .iter()
        .map(|e| &e["event"])
        .find(|ev| ev["tool"] == "runs.cancel" && ev["call_id"] == task.as_str())
        .unwrap_or_else(|| panic!("no runs.cancel entry for task {task}: {audit:?}"));
    assert_eq!(cancel["outcome"], "changed", "{cancel}");
    assert!(
        cancel["arguments"]["reason"]
            .as_str()
            .unwrap()
            .contains("tasks/cancel"),
        "{cancel}"
    );
    client.cancel().await.unwrap();
    assert_eq!(
        sends.load(Ordering::SeqCst),
        1,
        "the cancelled task's call was never made"
    );
    let decided = approvals(&base, &ops, &run, "approved").await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0]["call_id"], "batch/2");
    // Deciding it again after its run finished names its status, not a withdrawal.
    let (s, b) = decide(
        &base,
        &ops,
        &run,
        "batch/2",
        "reject",
        Some(json!({"reason": "too late"})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["detail"].as_str().unwrap().contains("approved already"),
        "{b}"
    );
    stop.stop();
}
