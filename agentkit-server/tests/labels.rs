//! Labels against runs in flight: a run is pinned to the version its label pointed at when it
//! started. Moving the label while the run is in flight changes the next run, not that one;
//! rolling the label back restores the old version for the runs after.
//!
//! The agent is a declarative spec deployed through `POST /v1/agents`; its model is a provider
//! the test controls, which answers with the agent's instructions (so the output says which
//! version ran) and holds its first call until the test releases it (so the run is provably in
//! flight while the label moves).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_core::{
    CompletionRequest, CompletionResponse, LlmProvider, Message, Result, StopReason, Usage,
};
use agentkit_server::spec::ModelFactory;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Answers "answered by: <system prompt>"; its first call tells the test it started and waits
/// for the test's release.
struct Gated {
    entered: Mutex<Option<oneshot::Sender<()>>>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl LlmProvider for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let entered = self.entered.lock().unwrap().take();
        if let Some(entered) = entered {
            let release = self.release.lock().unwrap().take().unwrap();
            let _ = entered.send(());
            let _ = release.await;
        }
        let system = request.system.unwrap_or_default();
        Ok(CompletionResponse::new(
            Message::assistant(format!("answered by: {system}")),
            Usage::new(1, 1),
            StopReason::EndTurn,
            "gated",
        ))
    }
}

struct Running {
    base: String,
    _dir: tempfile::TempDir,
    _served: inproc::InProcess,
}

const KEY: &str = "labels-key";

async fn start(provider: Arc<dyn LlmProvider>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let models = ModelFactory::offline().with_provider("scripted:gated", provider);
    let server = inproc::declarative_on(dir.path(), KEY, models)
        .await
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Running {
        base: served.base.clone(),
        _dir: dir,
        _served: served,
    }
}

async fn call(
    r: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    inproc::call_as(&r.base, KEY, method, path, body).await
}

async fn deploy(r: &Running, instructions: &str) -> u64 {
    let (s, d) = call(
        r,
        reqwest::Method::POST,
        "/v1/agents",
        Some(json!({
            "name": "support",
            "kind": "agent",
            "spec": {"model": "scripted:gated", "instructions": instructions},
        })),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    d["version"].as_u64().unwrap()
}

/// Run `support` at `prod` to the end; its (version, output text).
async fn run_prod(r: &Running) -> (u64, String) {
    let (s, run) = call(
        r,
        reqwest::Method::POST,
        "/v1/agents/support/runs",
        Some(json!({"message": "hello", "version": "prod", "wait": true})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    (
        run["version"].as_u64().unwrap(),
        run["output"]["text"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_label_moved_mid_run_changes_the_next_run_and_rollback_restores_the_old_version() {
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let gated = Arc::new(Gated {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let r = start(gated).await;

    assert_eq!(deploy(&r, "You are support v1.").await, 1);
    let (s, e) = call(
        &r,
        reqwest::Method::PUT,
        "/v1/agents/support/labels/prod",
        Some(json!({"version": 1, "expected_version": 0})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(deploy(&r, "You are support v2.").await, 2);
    let (_, entry) = call(&r, reqwest::Method::GET, "/v1/agents/support", None).await;
    assert_eq!(entry["labels"], json!({"latest": 2, "prod": 1}));

    // A run on prod starts on v1 and is held inside its model call.
    let (s, started) = call(
        &r,
        reqwest::Method::POST,
        "/v1/agents/support/runs",
        Some(json!({"message": "hello", "version": "prod"})),
    )
    .await;
    assert_eq!(s, 202, "{started}");
    assert_eq!(started["version"], 1);
    let in_flight = started["run_id"].as_str().unwrap().to_owned();
    tokio::time::timeout(Duration::from_secs(30), entered_rx)
        .await
        .expect("the run never reached its model")
        .unwrap();
    let (_, now) = call(
        &r,
        reqwest::Method::GET,
        &format!("/v1/runs/{in_flight}"),
        None,
    )
    .await;
    assert_eq!(now["status"], "running", "{now}");

    // prod moves to v2 (compare-and-swap from v1) while that run is in flight.
    let (s, e) = call(
        &r,
        reqwest::Method::PUT,
        "/v1/agents/support/labels/prod",
        Some(json!({"version": 2, "expected_version": 1})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["labels"]["prod"], 2);

    // Released, the in-flight run finishes on the version it started on.
    release_tx.send(()).unwrap();
    let (s, done) = call(
        &r,
        reqwest::Method::POST,
        "/v1/agents/support/runs",
        Some(json!({"message": "hello", "version": "prod", "wait": true})),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let next = (
        done["version"].as_u64().unwrap(),
        done["output"]["text"].clone(),
    );
    let first = loop {
        let (_, run) = call(
            &r,
            reqwest::Method::GET,
            &format!("/v1/runs/{in_flight}"),
            None,
        )
        .await;
        if run["status"] != "running" && run["status"] != "queued" {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["version"], 1, "the in-flight run keeps its version");
    assert_eq!(first["output"]["text"], "answered by: You are support v1.");

    // The next run on prod is v2.
    assert_eq!(next.0, 2);
    assert_eq!(next.1, "answered by: You are support v2.");

    // Rollback: prod points at v1 again, and runs on prod answer as v1.
    let (s, e) = call(
        &r,
        reqwest::Method::POST,
        "/v1/agents/support/rollback",
        Some(json!({"label": "prod"})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["labels"]["prod"], 1);
    assert_eq!(
        run_prod(&r).await,
        (1, "answered by: You are support v1.".to_owned())
    );
    // latest was never touched by any of it.
    let (_, entry) = call(&r, reqwest::Method::GET, "/v1/agents/support", None).await;
    assert_eq!(entry["labels"], json!({"latest": 2, "prod": 1}));
}

/// Two callers on one thread at once (the busy-thread policy, with the same gated model
/// holding the first run in flight): of eight concurrent starts exactly one is accepted and
/// the others are told the thread is busy; `if_busy: interrupt` cancels the live run with a
/// recorded reason and runs the new one.
#[tokio::test]
async fn concurrent_runs_on_one_thread_are_refused_or_interrupt_the_live_one() {
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let gated = Arc::new(Gated {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let r = start(gated).await;
    deploy(&r, "You are support.").await;
    let (s, thread) = call(&r, reqwest::Method::POST, "/threads", Some(json!({}))).await;
    assert_eq!(s, 200, "{thread}");
    let thread_id = thread["thread_id"].as_str().unwrap().to_owned();

    let starts = (0..8).map(|i| {
        let body = json!({"message": format!("m{i}"), "thread_id": thread_id});
        call(
            &r,
            reqwest::Method::POST,
            "/v1/agents/support/runs",
            Some(body),
        )
    });
    let answers = futures::future::join_all(starts).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    for (s, p) in answers.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(*s, 409, "{p}");
        assert!(
            p["detail"].as_str().unwrap().contains("is busy with run"),
            "{p}"
        );
    }
    let first = accepted[0]["run_id"].as_str().unwrap().to_owned();
    entered_rx.await.unwrap();

    let (s, second) = call(
        &r,
        reqwest::Method::POST,
        "/v1/agents/support/runs",
        Some(
            json!({"message": "now", "thread_id": thread_id, "if_busy": "interrupt", "wait": true}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["status"], "succeeded", "{second}");
    let _ = release_tx.send(());
    let (_, first) = call(&r, reqwest::Method::GET, &format!("/v1/runs/{first}"), None).await;
    assert_eq!(first["status"], "cancelled", "{first}");
    let reason = first["error"].as_str().unwrap();
    assert!(
        reason.contains(second["run_id"].as_str().unwrap()),
        "{reason}"
    );
}

/// Poll a run until it has ended.
async fn ended(r: &Running, id: &str) -> Value {
    for _ in 0..400 {
        let (_, run) = call(r, reqwest::Method::GET, &format!("/v1/runs/{id}"), None).await;
        if matches!(
            run["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} did not end");
}

/// The journal events of a run.
async fn events(r: &Running, id: &str) -> Vec<Value> {
    let (s, v) = call(
        r,
        reqwest::Method::GET,
        &format!("/v1/runs/{id}/events"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v.as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn enqueued_runs_wait_their_turn_on_a_thread_in_order() {
    let (entered_tx, entered_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    let gated = Arc::new(Gated {
        entered: Mutex::new(Some(entered_tx)),
        release: Mutex::new(Some(release_rx)),
    });
    let r = start(gated).await;
    deploy(&r, "You are support.").await;
    let (_, thread) = call(&r, reqwest::Method::POST, "/threads", Some(json!({}))).await;
    let thread_id = thread["thread_id"].as_str().unwrap().to_owned();
    let start_run = |message: &str, policy: &str| {
        let body = json!({"message": message, "thread_id": thread_id, "if_busy": policy});
        call(
            &r,
            reqwest::Method::POST,
            "/v1/agents/support/runs",
            Some(body),
        )
    };

    let (s, first) = start_run("first", "reject").await;
    assert_eq!(s, 202, "{first}");
    let first = first["run_id"].as_str().unwrap().to_owned();
    entered_rx.await.unwrap();

    // Behind the live run: stored, queued, not executed.
    let mut queued = Vec::new();
    for m in ["second", "third", "dropped"] {
        let (s, run) = start_run(m, "enqueue").await;
        assert_eq!(s, 202, "{run}");
        assert_eq!(run["status"], "queued", "{run}");
        queued.push(run["run_id"].as_str().unwrap().to_owned());
    }
    // A caller that refuses to wait is told the thread has runs waiting.
    let (s, p) = start_run("impatient", "reject").await;
    assert_eq!(s, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains(&queued[0]), "{p}");
    // A queued run can be cancelled before its turn; it never executes.
    let (s, c) = call(
        &r,
        reqwest::Method::POST,
        &format!("/v1/runs/{}/cancel", queued[2]),
        Some(json!({"reason": "changed my mind"})),
    )
    .await;
    assert!(s < 300, "{c}");
    let (_, second) = call(
        &r,
        reqwest::Method::GET,
        &format!("/v1/runs/{}", queued[0]),
        None,
    )
    .await;
    assert_eq!(second["status"], "queued", "{second}");

    let _ = release_tx.send(());
    for id in std::iter::once(&first).chain(&queued[..2]) {
        let run = ended(&r, id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let dropped = ended(&r, &queued[2]).await;
    assert_eq!(dropped["status"], "cancelled", "{dropped}");
    assert!(
        events(&r, &queued[2]).await.is_empty(),
        "a cancelled queued run never executed"
    );

    // One after the other, in the order they were started.
    let span = |ev: &[Value]| {
        let at: Vec<i64> = ev
            .iter()
            .map(|e| e["created_at"].as_i64().unwrap())
            .collect();
        (*at.iter().min().unwrap(), *at.iter().max().unwrap())
    };
    let (_, first_end) = span(&events(&r, &first).await);
    let (second_start, second_end) = span(&events(&r, &queued[0]).await);
    let (third_start, _) = span(&events(&r, &queued[1]).await);
    assert!(first_end <= second_start && second_end <= third_start);

    // The thread is free again: a run with the default policy starts at once.
    let (s, run) = start_run("fourth", "reject").await;
    assert_eq!(s, 202, "{run}");
    let run = ended(&r, run["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
}

#[tokio::test]
async fn a_spec_that_is_not_an_object_is_refused_and_nothing_is_stored() {
    let r = start(Arc::new(Gated {
        entered: Mutex::new(None),
        release: Mutex::new(None),
    }))
    .await;
    for spec in [json!([]), json!("an agent"), json!(5), json!(null)] {
        let (s, problem) = call(
            &r,
            reqwest::Method::POST,
            "/v1/agents",
            Some(json!({"name": "shapeless", "kind": "agent", "spec": spec})),
        )
        .await;
        assert_eq!(s, 400, "{spec}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("must be an object"), "{problem}");
    }
    let (s, _) = call(&r, reqwest::Method::GET, "/v1/agents/shapeless", None).await;
    assert_eq!(s, 404, "nothing was stored");
}

#[tokio::test]
async fn a_code_agent_is_a_new_version_when_its_instruction_or_model_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("code.db");
    // The same description each time; the behaviour changes.
    let start = |instruction: &'static str, model: &'static str| {
        let path = path.clone();
        async move {
            let store: Arc<dyn agentkit_runtime::Store> =
                Arc::new(agentkit_runtime::SqliteStore::open(&path).await.unwrap());
            let agent = agentkit_core::AgentLlm::new(
                agentkit_core::Agent::new("coder", instruction),
                agentkit_core::ScriptedProvider::echo(),
            )
            .with_defaults(agentkit_core::RequestParams::new().with_model(model));
            let server = agentkit_server::Server::builder(store)
                .admin_key(KEY)
                .agent_llm("coder", Arc::new(agent), "Writes code")
                .build()
                .await
                .unwrap();
            let served = inproc::serve(server).await;
            let (s, versions) = inproc::call_as(
                &served.base,
                KEY,
                reqwest::Method::GET,
                "/v1/agents/coder/versions",
                None,
            )
            .await;
            assert_eq!(s, 200, "{versions}");
            versions.as_array().unwrap().len()
        }
    };
    assert_eq!(start("Write Rust.", "m1").await, 1);
    assert_eq!(
        start("Write Rust.", "m1").await,
        1,
        "unchanged: the same version"
    );
    assert_eq!(start("Write Go.", "m1").await, 2, "a new instruction");
    assert_eq!(start("Write Go.", "m2").await, 3, "a new model");
}
