//! Per-call approvals over real HTTP: a scripted model asks two tool calls at once that both
//! need approval. One operator approves one call, another rejects the other: the approved tool
//! runs exactly once, the rejected call's reason reaches the model, and the queue shows who
//! decided each. A run-level decision decides every pending call of the run; a call that is
//! not pending is a 409 naming its status; another workspace's run is a 404.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use inproc::call_as;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_core::policy::{Policy, PolicyLayer};
use agentkit_core::{Agent, AgentLlm, Config, FnTool, ScriptedProvider};
use agentkit_server::Server;
use agentkit_server::policy::StoreAudit;
use serde_json::{Value, json};

const POLICY: &str = r#"
policies:
  mail:
    tools:
      allow: ["mail__*"]
    require_approval: ["mail__send"]
"#;

const ADMIN: &str = "test-key";

async fn run_status(base: &str, run_id: &str) -> Value {
    call_as(
        base,
        ADMIN,
        reqwest::Method::GET,
        &format!("/v1/runs/{run_id}"),
        None,
    )
    .await
    .1
}

/// The run's approvals with `status`, once there are `n` of them.
async fn approvals_of(base: &str, run_id: &str, status: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (_, all) = call_as(
            base,
            ADMIN,
            reqwest::Method::GET,
            &format!("/v1/approvals?status={status}"),
            None,
        )
        .await;
        let mine: Vec<Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["run_id"] == run_id)
            .cloned()
            .collect();
        if mine.len() == n {
            return mine;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} never had {n} {status} approvals");
}

async fn wait_until(base: &str, run_id: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let run = run_status(base, run_id).await;
        if ok(&run) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "run {run_id} never {what}: {}",
        run_status(base, run_id).await
    );
}

async fn operator_key(base: &str, name: &str, workspace: Option<&str>) -> (String, String) {
    let mut body = json!({"role": "operator", "name": name});
    if let Some(ws) = workspace {
        body["workspace"] = json!(ws);
    }
    inproc::create_key(base, ADMIN, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_two_parallel_calls_is_decided_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let config = Config::from_yaml_str(POLICY, None).unwrap();
    let policy = Policy::compile("mail", &config.policies["mail"]).unwrap();
    let audit = Arc::new(StoreAudit::new(Arc::clone(&store)));

    // How many times a mail went to each recipient.
    let sent: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let s = Arc::clone(&sent);
    let send = FnTool::new("mail__send", "Send a mail", move |args: Value| {
        let s = Arc::clone(&s);
        async move {
            let to = args["to"].as_str().unwrap_or("?").to_owned();
            *s.lock().unwrap().entry(to.clone()).or_insert(0) += 1;
            Ok::<_, String>(format!("sent to {to}"))
        }
    });
    let model = Arc::new(
        ScriptedProvider::new()
            .then_tool_calls(vec![
                ("mail__send".into(), json!({"to": "alice"})),
                ("mail__send".into(), json!({"to": "bob"})),
            ])
            .then_text("first done")
            .then_tool_calls(vec![
                ("mail__send".into(), json!({"to": "carol"})),
                ("mail__send".into(), json!({"to": "dave"})),
            ])
            .then_text("second done")
            .then_tool_call("mail__send", json!({"to": "erin"}))
            .then_text("third done"),
    );
    let agent = AgentLlm::shared(
        Agent::new("mailer", "Send mails.").with_tool(send),
        model.clone(),
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
    let base = served.base.clone();

    let (st, run) = call_as(
        &base,
        ADMIN,
        reqwest::Method::POST,
        "/v1/agents/mailer/runs",
        Some(json!({"message": "mail alice and bob"})),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let pending = approvals_of(&base, &run_id, "pending", 2).await;
    let call_to = |who: &str| -> String {
        pending
            .iter()
            .find(|a| a["arguments"]["to"] == who)
            .unwrap_or_else(|| panic!("no approval for {who}: {pending:?}"))["call_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (to_alice, to_bob) = (call_to("alice"), call_to("bob"));
    wait_until(&base, &run_id, "waited for approval", |r| {
        r["status"] == "waiting_approval"
    })
    .await;

    let (ann, ann_id) = operator_key(&base, "ann", None).await;
    let (ben, ben_id) = operator_key(&base, "ben", None).await;

    // Ann approves the mail to alice: only that call runs; the run waits again for bob's.
    let (st, body) = call_as(
        &base,
        &ann,
        reqwest::Method::POST,
        &format!("/v1/approvals/{run_id}/{to_alice}/approve"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    for _ in 0..200 {
        if sent.lock().unwrap().contains_key("alice") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(&base, &run_id, "waited again", |r| {
        r["status"] == "waiting_approval"
    })
    .await;
    assert_eq!(
        sent.lock().unwrap().clone(),
        HashMap::from([("alice".to_owned(), 1)]),
        "only the approved call ran"
    );
    let still = approvals_of(&base, &run_id, "pending", 1).await;
    assert_eq!(still[0]["call_id"], to_bob.as_str());

    // Deciding the approved call again is a 409 that says it is approved.
    let (st, body) = call_as(
        &base,
        &ben,
        reqwest::Method::POST,
        &format!("/v1/approvals/{run_id}/{to_alice}/reject"),
        Some(json!({"reason": "too late"})),
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("approved already"),
        "{body}"
    );
    // A call the run never made is a 404.
    let (st, body) = call_as(
        &base,
        &ben,
        reqwest::Method::POST,
        &format!("/v1/approvals/{run_id}/call_999/approve"),
        None,
    )
    .await;
    assert_eq!(st, 404, "{body}");
    // Another workspace's operator does not see the run.
    let (st, body) = inproc::create_workspace(&base, ADMIN, "acme", "prod").await;
    assert!(st == 200 || st == 201, "{body}");
    let (eve, _) = operator_key(&base, "eve", Some("acme/prod")).await;
    let (st, body) = call_as(
        &base,
        &eve,
        reqwest::Method::POST,
        &format!("/v1/approvals/{run_id}/{to_bob}/approve"),
        None,
    )
    .await;
    assert_eq!(st, 404, "{body}");

    // Ben rejects the mail to bob: the model reads his reason, the tool never runs for bob.
    let (st, body) = call_as(
        &base,
        &ben,
        reqwest::Method::POST,
        &format!("/v1/approvals/{run_id}/{to_bob}/reject"),
        Some(json!({"reason": "bob has left the company"})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let done = wait_until(&base, &run_id, "finished", |r| r["status"] == "succeeded").await;
    assert_eq!(done["output"]["text"], "first done", "{done}");
    assert_eq!(
        sent.lock().unwrap().clone(),
        HashMap::from([("alice".to_owned(), 1)]),
        "the approved call ran once, the rejected one never"
    );
    let last = model.requests().last().cloned().unwrap();
    let seen = serde_json::to_string(&last.messages).unwrap();
    assert!(seen.contains("bob has left the company"), "{seen}");
    assert!(seen.contains("sent to alice"), "{seen}");

    let approved = approvals_of(&base, &run_id, "approved", 1).await;
    assert_eq!(approved[0]["call_id"], to_alice.as_str());
    assert_eq!(approved[0]["decided_by"], ann_id.as_str());
    let rejected = approvals_of(&base, &run_id, "rejected", 1).await;
    assert_eq!(rejected[0]["call_id"], to_bob.as_str());
    assert_eq!(rejected[0]["decided_by"], ben_id.as_str());
    assert_eq!(rejected[0]["decision_reason"], "bob has left the company");

    // A run-level decision decides every call of the run that waits.
    let (_, run) = call_as(
        &base,
        ADMIN,
        reqwest::Method::POST,
        "/v1/agents/mailer/runs",
        Some(json!({"message": "mail carol and dave"})),
    )
    .await;
    let run2 = run["run_id"].as_str().unwrap().to_owned();
    approvals_of(&base, &run2, "pending", 2).await;
    wait_until(&base, &run2, "waited for approval", |r| {
        r["status"] == "waiting_approval"
    })
    .await;
    let (st, body) = call_as(
        &base,
        &ann,
        reqwest::Method::POST,
        &format!("/v1/runs/{run2}/approve"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let done = wait_until(&base, &run2, "finished", |r| r["status"] == "succeeded").await;
    assert_eq!(done["output"]["text"], "second done", "{done}");
    let so_far = sent.lock().unwrap().clone();
    assert_eq!(so_far.get("carol"), Some(&1), "{so_far:?}");
    assert_eq!(so_far.get("dave"), Some(&1), "{so_far:?}");
    let approved = approvals_of(&base, &run2, "approved", 2).await;
    assert!(approved.iter().all(|a| a["decided_by"] == ann_id.as_str()));
    // Deciding the run again: nothing of it is pending any more.
    let (st, body) = call_as(
        &base,
        &ann,
        reqwest::Method::POST,
        &format!("/v1/runs/{run2}/reject"),
        Some(json!({"reason": "late"})),
    )
    .await;
    assert_eq!(st, 409, "{body}");

    // An old client's run-wide `approval` signal still decides the call that waits.
    let (_, run) = call_as(
        &base,
        ADMIN,
        reqwest::Method::POST,
        "/v1/agents/mailer/runs",
        Some(json!({"message": "mail erin"})),
    )
    .await;
    let run3 = run["run_id"].as_str().unwrap().to_owned();
    wait_until(&base, &run3, "waited for approval", |r| {
        r["status"] == "waiting_approval"
    })
    .await;
    let (st, body) = call_as(
        &base,
        ADMIN,
        reqwest::Method::POST,
        &format!("/v1/runs/{run3}/signal"),
        Some(json!({"name": "approval", "payload": {"decision": "approved"}})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let done = wait_until(&base, &run3, "finished", |r| r["status"] == "succeeded").await;
    assert_eq!(done["output"]["text"], "third done", "{done}");
    assert_eq!(sent.lock().unwrap().get("erin"), Some(&1));
    drop(served);
}
