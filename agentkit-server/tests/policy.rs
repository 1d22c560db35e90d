//! Policies end to end over real HTTP: a scripted model calls a tool a policy denies (the model
//! reads the error, the audit log has the entry), then trips a chain rule that needs approval
//! (the run waits; approving it runs the tool exactly once), and a tampered audit row is found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use inproc::call_as;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::policy::{Policy, PolicyLayer};
use agentkit_core::{Agent, AgentLlm, Config, ScriptedProvider};
use agentkit_runtime::{Expect, SqliteStore, Store};
use agentkit_server::Server;
use agentkit_server::policy::StoreAudit;
use serde_json::{Value, json};

const KEY: &str = "test-key";

const POLICY: &str = r#"
policies:
  docs:
    tools:
      allow: ["fs__*", "slack__*"]
    arguments:
      "fs__*":
        path: {allow: ["/**/*.md"], deny: ["/etc/**", "/**/.env"]}
    chains:
      - pattern: ["fs__read_*", "slack__send_message"]
        action: require_approval
        reason: posting after reading files may leak them
"#;

async fn wait_for(base: &str, run_id: &str, status: &str) -> Value {
    inproc::wait_run(base, KEY, run_id, status).await
}

/// A server with the `poster` agent: it reads `/etc/passwd` (denied), reads the docs, then
/// posts to Slack (a chain rule asks for approval), then answers `posted`.
struct Poster {
    base: String,
    store: Arc<dyn Store>,
    model: Arc<ScriptedProvider>,
    reads: Arc<AtomicU32>,
    sends: Arc<AtomicU32>,
    _served: inproc::InProcess,
    _dir: tempfile::TempDir,
}

async fn start_poster(expire_after: Option<Duration>) -> Poster {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let config = Config::from_yaml_str(POLICY, None).unwrap();
    let policy = Policy::compile("docs", &config.policies["docs"]).unwrap();
    let audit = Arc::new(StoreAudit::new(Arc::clone(&store)).with_approval_expiry(expire_after));

    let reads = Arc::new(AtomicU32::new(0));
    let sends = Arc::new(AtomicU32::new(0));
    let read = inproc::counted_tool("fs__read_file", "Read a file", "# Docs\nHello.", &reads);
    let send = inproc::counted_tool("slack__send_message", "Post to Slack", "sent", &sends);
    let model = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("fs__read_file", json!({"path": "/etc/passwd"}))
            .then_tool_call("fs__read_file", json!({"path": "/docs/readme.md"}))
            .then_tool_call("slack__send_message", json!({"text": "Docs say hello"}))
            .then_text("posted"),
    );
    let agent = AgentLlm::shared(
        Agent::new("poster", "Read docs and post them.")
            .with_tool(read)
            .with_tool(send),
        model.clone(),
    )
    .with_memory(Server::memory_for(Arc::clone(&store)))
    .with_tool_layer(PolicyLayer::new(policy).with_audit(audit.clone()));
    let server = Server::builder(Arc::clone(&store))
        .admin_key(KEY)
        .agent_llm("poster", Arc::new(agent), "Posts docs")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    Poster {
        base,
        store,
        model,
        reads,
        sends,
        _served: served,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_calls_chain_approvals_and_a_tamper_evident_audit_log() {
    let Poster {
        base,
        store,
        model,
        reads,
        sends,
        _served,
        _dir,
    } = start_poster(None).await;
    let (st, run) = call_as(
        &base,
        KEY,
        reqwest::Method::POST,
        "/v1/agents/poster/runs",
        Some(json!({"message": "post the docs"})),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_for(&base, &run_id, "waiting_approval").await;

    // The model read the denial, naming the policy and the rule.
    let second = &model.requests()[1];
    let seen = serde_json::to_string(&second.messages).unwrap();
    assert!(seen.contains("denied by policy `docs`"), "{seen}");
    assert!(seen.contains("arguments.fs__*.path.deny[0]"), "{seen}");
    assert_eq!(reads.load(Ordering::SeqCst), 1, "only the allowed read ran");
    assert_eq!(
        sends.load(Ordering::SeqCst),
        0,
        "the send waits for approval"
    );

    // The approval queue shows the call and the chain that triggered it.
    let (st, pending) = call_as(&base, KEY, reqwest::Method::GET, "/v1/approvals", None).await;
    assert_eq!(st, 200, "{pending}");
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["tool"], "slack__send_message");
    assert_eq!(pending[0]["rule"], "chains[0]");
    assert_eq!(pending[0]["history"], json!(["fs__read_file"]));

    let (st, _) = call_as(
        &base,
        KEY,
        reqwest::Method::POST,
        &format!("/v1/runs/{run_id}/approve"),
        Some(json!({"reason": "fine to share"})),
    )
    .await;
    assert_eq!(st, 200);
    let done = wait_for(&base, &run_id, "succeeded").await;
    assert_eq!(done["output"]["text"], "posted", "{done}");
    assert_eq!(
        sends.load(Ordering::SeqCst),
        1,
        "approved call ran exactly once"
    );
    assert_eq!(
        reads.load(Ordering::SeqCst),
        1,
        "the read was replayed, not run again"
    );

    // The audit log has every decision, in order, and verifies.
    let entries = inproc::audit_entries(&base, KEY, "").await;
    let outcomes: Vec<&str> = entries
        .iter()
        .map(|e| e["event"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["denied", "allowed", "approval_requested", "approved"]
    );
    assert_eq!(entries[0]["event"]["rule"], "arguments.fs__*.path.deny[0]");
    assert_eq!(entries[3]["event"]["actor"], "admin");
    let res = reqwest::Client::new()
        .get(format!("{base}/v1/audit?format=csv"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",prev_hash,hash,via,history,node"),
        "{csv}"
    );
    assert!(csv.lines().nth(1).unwrap().contains(",denied,"), "{csv}");
    let (_, v) = call_as(&base, KEY, reqwest::Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], 4);

    // Someone edits a stored row: verification names the entry.
    let mut doc = store
        .doc_get("audit", "default/default/00000000000000000001")
        .await
        .unwrap()
        .unwrap();
    doc.value["event"]["outcome"] = json!("allowed");
    store
        .doc_put("audit", &doc.id, doc.value, Expect::Any)
        .await
        .unwrap();
    let (_, v) = call_as(&base, KEY, reqwest::Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("altered at entry 1"),
        "{v}"
    );

    // The routes are in the OpenAPI document; bad input is a problem, not a panic.
    let (_, doc) = call_as(&base, KEY, reqwest::Method::GET, "/openapi.json", None).await;
    assert!(doc["paths"]["/v1/audit"].is_object());
    assert!(doc["paths"]["/v1/approvals"].is_object());
    let (st, p) = call_as(
        &base,
        KEY,
        reqwest::Method::GET,
        "/v1/audit?format=xml",
        None,
    )
    .await;
    assert_eq!(st, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("`json` or `csv`"),
        "{p}"
    );
    drop(_served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_keeps_other_deciders_out_and_an_undecided_approval_expires() {
    let p = start_poster(Some(Duration::from_secs(2))).await;
    let (st, run) = call_as(
        &p.base,
        KEY,
        reqwest::Method::POST,
        "/v1/agents/poster/runs",
        Some(json!({"message": "post the docs"})),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_for(&p.base, &run_id, "waiting_approval").await;
    let (_, pending) = call_as(&p.base, KEY, reqwest::Method::GET, "/v1/approvals", None).await;
    let call_id = pending[0]["call_id"].as_str().unwrap().to_owned();
    assert!(
        pending[0]["expires_at"].as_i64().unwrap() > pending[0]["requested_at"].as_i64().unwrap()
    );

    let mut keys = Vec::new();
    for name in ["alice", "bob"] {
        let (st, k) = call_as(
            &p.base,
            KEY,
            reqwest::Method::POST,
            "/v1/keys",
            Some(json!({"role": "operator", "name": name})),
        )
        .await;
        assert_eq!(st, 201, "{k}");
        keys.push((
            k["key"].as_str().unwrap().to_owned(),
            k["id"].as_str().unwrap().to_owned(),
        ));
    }
    let claim = format!("/v1/approvals/{run_id}/{call_id}/claim");
    let (st, claimed) = call_as(&p.base, &keys[0].0, reqwest::Method::POST, &claim, None).await;
    assert_eq!(st, 200, "{claimed}");
    assert_eq!(claimed["claimed_by"], keys[0].1.as_str());
    let (st, b) = call_as(&p.base, &keys[1].0, reqwest::Method::POST, &claim, None).await;
    assert_eq!(st, 409, "{b}");
    let (st, b) = call_as(
        &p.base,
        &keys[1].0,
        reqwest::Method::POST,
        &format!("/v1/runs/{run_id}/approve"),
        None,
    )
    .await;
    assert_eq!(st, 409, "bob may not decide alice's claim: {b}");
    assert!(b["detail"].as_str().unwrap().contains("claimed by"), "{b}");
    let (st, _) = call_as(
        &p.base,
        &keys[1].0,
        reqwest::Method::POST,
        &format!("/v1/approvals/{run_id}/nope/claim"),
        None,
    )
    .await;
    assert_eq!(st, 404);

    // Nobody decides: the approval expires, the run resumes with the rejection and the model
    // reads why; the tool never runs.
    let done = wait_for(&p.base, &run_id, "succeeded").await;
    assert_eq!(done["output"]["text"], "posted", "{done}");
    assert_eq!(
        p.sends.load(Ordering::SeqCst),
        0,
        "the expired call never ran"
    );
    let last = p.model.requests().last().cloned().unwrap();
    let seen = serde_json::to_string(&last.messages).unwrap();
    assert!(seen.contains("expired"), "{seen}");
    let (_, all) = call_as(
        &p.base,
        KEY,
        reqwest::Method::GET,
        "/v1/approvals?status=all",
        None,
    )
    .await;
    assert_eq!(all[0]["status"], "rejected", "{all}");
    assert_eq!(all[0]["decided_by"], "expiry", "{all}");
    let _ = (&p.store, &p.reads);
}

/// An audit event of `org/prod` for call `call_id`.
fn audit_event(org: &str, call_id: &str) -> agentkit_core::policy::AuditEvent {
    let ctx = agentkit_core::RunContext::new()
        .with_run_id(format!("{org}-run"))
        .with_principal(agentkit_core::Principal::new(org, "prod"));
    agentkit_core::policy::AuditEvent::new(
        agentkit_core::policy::AuditOutcome::Allowed,
        &ctx,
        call_id,
        "up__echo",
        json!({"text": "hi", "token": "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"}),
        "gateway",
    )
}

/// The call ids of `workspace`'s chain, in chain order, after checking it verifies and has
/// `n` entries at positions 1..=n.
async fn chained_calls(audit: &StoreAudit, workspace: &str, n: usize) -> Vec<String> {
    assert_eq!(
        audit.verify(workspace).await.unwrap(),
        n as u64,
        "{workspace}"
    );
    let entries = audit.entries(workspace, 0, n + 10).await.unwrap();
    assert_eq!(entries.len(), n);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert!(
            !e.event.arguments.to_string().contains("sk-live"),
            "stored unredacted: {}",
            e.event.arguments
        );
    }
    entries.into_iter().map(|e| e.event.call_id).collect()
}

/// 200 appends at once across 3 workspaces are gathered into few writes and still form one
/// valid chain per workspace holding every event once; altering an entry is still found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_form_one_valid_chain_per_workspace() {
    use agentkit_core::policy::AuditSink;
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<(&str, Arc<dyn Store>)> = vec![
        ("memory", Arc::new(agentkit_runtime::MemoryStore::new())),
        (
            "sqlite",
            Arc::new(SqliteStore::open(dir.path().join("a.db")).await.unwrap()),
        ),
    ];
    let orgs = ["acme", "globex", "initech"];
    for (name, store) in stores {
        let audit = StoreAudit::new(Arc::clone(&store));
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let audit = audit.clone();
                let org = orgs[i % 3];
                tokio::spawn(async move { audit.record(audit_event(org, &format!("c{i}"))).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for (k, org) in orgs.iter().enumerate() {
            let ws = format!("{org}/prod");
            let n = (0..200).filter(|i| i % 3 == k).count();
            let mut calls = chained_calls(&audit, &ws, n).await;
            calls.sort();
            let mut want: Vec<String> = (0..200)
                .filter(|i| i % 3 == k)
                .map(|i| format!("c{i}"))
                .collect();
            want.sort();
            assert_eq!(calls, want, "{name} {ws}: every event once");
            let head = store.doc_get("audit_head", &ws).await.unwrap().unwrap();
            assert_eq!(head.value["seq"], json!(n), "{name} {ws}");
            if name == "sqlite" {
                // Appends waiting together share a write: the head moved once per write.
                assert!(
                    (head.revision as usize) < n,
                    "{name} {ws}: {n} entries took {} head writes",
                    head.revision
                );
            }
        }
        // The chain still detects an altered entry.
        let id = "acme/prod/00000000000000000007";
        let mut doc = store.doc_get("audit", id).await.unwrap().unwrap();
        doc.value["event"]["tool"] = json!("up__delete_all");
        store
            .doc_put("audit", id, doc.value, Expect::Any)
            .await
            .unwrap()
            .unwrap();
        let err = audit.verify("acme/prod").await.unwrap_err().to_string();
        assert!(err.contains("entry 7"), "{name}: {err}");
        // Appends after the alteration go on at the end.
        audit.record(audit_event("globex", "late")).await.unwrap();
        let n = (0..200).filter(|i| i % 3 == 1).count();
        assert_eq!(audit.verify("globex/prod").await.unwrap(), n as u64 + 1);
    }
}

/// Two server processes on one SQLite file (two stores, two audit logs) appending to the same
/// workspace at once still make one valid chain with every entry once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_appending_to_one_sqlite_file_make_one_chain() {
    use agentkit_core::policy::AuditSink;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let (audit_a, audit_b) = (StoreAudit::new(a), StoreAudit::new(Arc::clone(&b)));
    let tasks: Vec<_> = (0..240)
        .map(|i| {
            let audit = if i % 2 == 0 {
                audit_a.clone()
            } else {
                audit_b.clone()
            };
            tokio::spawn(async move { audit.record(audit_event("acme", &format!("c{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut calls = chained_calls(&audit_b, "acme/prod", 240).await;
    calls.sort();
    let mut want: Vec<String> = (0..240).map(|i| format!("c{i}")).collect();
    want.sort();
    assert_eq!(calls, want);
    // A third process starting later appends after the end (its head may lag; it repairs).
    let c: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let audit_c = StoreAudit::new(c);
    audit_c.record(audit_event("acme", "late")).await.unwrap();
    audit_a.record(audit_event("acme", "later")).await.unwrap();
    let calls = chained_calls(&audit_c, "acme/prod", 242).await;
    assert_eq!(&calls[240..], ["late", "later"]);
}

/// Two processes appending to the same chain in waves of 64 concurrent appends, split
/// unevenly between them: every event is stored once and the chain verifies after every wave
/// (a writer whose positions the other took chains its events again after the real end).
async fn two_writers_in_waves_leave_no_gap(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    use agentkit_core::policy::AuditSink;
    // A chain of its own, also on a database other tests share.
    let org = format!("waves{}", uuid::Uuid::new_v4().simple());
    let ws = format!("{org}/prod");
    let (audit_a, audit_b) = (StoreAudit::new(a), StoreAudit::new(b));
    let mut total = 0;
    for wave in 0..20 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let audit = if (i + wave) % 3 == 0 {
                audit_b.clone()
            } else {
                audit_a.clone()
            };
            let (org, call) = (org.clone(), format!("w{wave}c{i}"));
            tasks.spawn(async move { audit.record(audit_event(&org, &call)).await });
            if i % 16 == 15 {
                // Let the writers start a batch, so the next appends meet one in flight.
                tokio::task::yield_now().await;
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        total += 64;
        assert_eq!(
            audit_a.verify(&ws).await.unwrap(),
            total as u64,
            "wave {wave}"
        );
    }
    let mut calls = chained_calls(&audit_b, &ws, total).await;
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), total, "every event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_appending_in_waves_leave_no_gap_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    two_writers_in_waves_leave_no_gap(a, b).await;
}

#[cfg(feature = "postgres")]
#[path = "../../agentkit-runtime/tests/common/pg.rs"]
#[allow(unreachable_pub, dead_code)]
mod pg;

/// The same on PostgreSQL.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_appending_in_waves_leave_no_gap_on_postgres() {
    let pg = pg::Pg::start();
    let a: Arc<dyn Store> = Arc::new(
        agentkit_runtime::PostgresStore::connect(&pg.url)
            .await
            .unwrap(),
    );
    let b: Arc<dyn Store> = Arc::new(
        agentkit_runtime::PostgresStore::connect(&pg.url)
            .await
            .unwrap(),
    );
    two_writers_in_waves_leave_no_gap(a, b).await;
}

/// Callers that stop waiting for their audit entries (their requests dropped) while a SQLite
/// write is in flight leave nothing half done: every other caller gets its entry, the chain
/// verifies, and every entry a caller got is in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appenders_that_stop_waiting_leave_the_chain_whole() {
    use agentkit_core::policy::AuditSink;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("a.db")).await.unwrap());
    let audit = StoreAudit::new(Arc::clone(&store));
    let mut answered = Vec::new();
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let audit = audit.clone();
            let call = format!("r{round}c{i}");
            let task = tokio::spawn({
                let call = call.clone();
                async move { audit.record(audit_event("acme", &call)).await }
            });
            tasks.push((call, task));
        }
        // Every third caller gives up at once, most of them while a write is in flight.
        tokio::task::yield_now().await;
        for (_, t) in tasks.iter().step_by(3) {
            t.abort();
        }
        for (call, t) in tasks {
            match t.await {
                Ok(r) => {
                    r.unwrap();
                    answered.push(call);
                }
                Err(e) => assert!(e.is_cancelled(), "{e}"),
            }
        }
    }
    // The chain is whole; entries of callers who gave up may or may not be in it.
    let n = audit.verify("acme/prod").await.unwrap();
    let calls = chained_calls(&audit, "acme/prod", n as usize).await;
    for call in &answered {
        assert!(
            calls.contains(call),
            "{call} was answered but is not in the chain"
        );
    }
    assert!(
        answered.len() >= 260,
        "only {} of 400 answered",
        answered.len()
    );
    // Appends after all that still go on at the end.
    audit.record(audit_event("acme", "after")).await.unwrap();
    assert_eq!(audit.verify("acme/prod").await.unwrap(), n + 1);
}
