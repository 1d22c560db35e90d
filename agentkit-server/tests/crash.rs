//! SIGKILL a server process while runs are in flight and SSE clients are attached: after a
//! restart on the same database every run finishes, and each reconnecting client (sending the
//! `Last-Event-ID` it saw last) receives every event of its run exactly once.
//!
//! The real `agentkit serve` binary runs as a child process over SQLite; its agents are a chain
//! of three agents on an OpenAI-compatible model server in the test that answers slowly, so the
//! runs are mid-way (some steps journaled, one in flight) when the process dies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Received, Serve, SlowModel, follow, free_port};
use serde_json::json;

const RUNS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_run_then_restart_finishes_every_run_and_clients_get_each_event_once() {
    let model = SlowModel::start(Duration::from_millis(600)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(&config, model.config()).unwrap();
    let database = dir.path().join("agentkit.db").to_str().unwrap().to_owned();
    let log = dir.path().join("serve.log");
    let port = free_port();
    let mut serve = Serve::start(&config, &database, port, &log).await;

    // N runs of the three-step chain, and an SSE client on each.
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let (s, run) = serve
            .call(
                reqwest::Method::POST,
                "/v1/agents/slow/runs",
                Some(json!({"message": format!("job {i}")})),
            )
            .await;
        assert_eq!(s, 202, "{run}");
        runs.push(run["run_id"].as_str().unwrap().to_owned());
    }
    let received: Vec<Arc<Mutex<Received>>> = runs.iter().map(|_| Arc::default()).collect();
    let clients: Vec<_> = runs
        .iter()
        .zip(&received)
        .map(|(id, r)| {
            let (base, id, r) = (serve.base.clone(), id.clone(), Arc::clone(r));
            tokio::spawn(async move { follow(&base, &id, None, r).await })
        })
        .collect();

    // Kill the process once a client has events of a run that has not finished.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no client saw a run mid-way:\n{}",
            serve.log_text()
        );
        let mid_run = received.iter().any(|r| {
            let r = r.lock().unwrap();
            !r.ids.is_empty() && r.end.is_none()
        });
        if mid_run {
            break;
        }
        assert!(
            received.iter().all(|r| r.lock().unwrap().end.is_none()),
            "a run finished before any client saw it mid-way; the model must answer slower"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    serve.kill();
    let mut ended_before = 0;
    for c in clients {
        if c.await.unwrap() {
            ended_before += 1;
        }
    }
    assert!(
        ended_before < RUNS,
        "every stream ended before the kill: nothing was in flight"
    );
    let before: Vec<Received> = received.iter().map(|r| r.lock().unwrap().clone()).collect();
    assert!(before.iter().any(|r| !r.ids.is_empty()));

    // Restart on the same database and port; every client reconnects after what it saw.
    let serve = Serve::start(&config, &database, port, &log).await;
    let clients: Vec<_> = runs
        .iter()
        .zip(&received)
        .map(|(id, r)| {
            let (last, done) = {
                let g = r.lock().unwrap();
                (g.last_id(), g.end.is_some())
            };
            let base = serve.base.clone();
            let (id, r) = (id.clone(), Arc::clone(r));
            tokio::spawn(async move { done || follow(&base, &id, last, r).await })
        })
        .collect();
    for c in clients {
        assert!(
            c.await.unwrap(),
            "a reconnected stream did not reach its end event:\n{}",
            serve.log_text()
        );
    }

    for (i, (id, r)) in runs.iter().zip(&received).enumerate() {
        let r = r.lock().unwrap().clone();
        let end = r.end.as_ref().unwrap();
        assert_eq!(end["status"], "succeeded", "run {id}: {end}");
        assert_eq!(
            end["output"]["text"],
            format!("job {i} | one | two | three")
        );
        assert_eq!(r.events.last().map(String::as_str), Some("end"));
        // Every id once, none missing: exactly 0..=max, in order.
        let max = *r.ids.iter().max().unwrap();
        let want: Vec<u64> = (0..=max).collect();
        assert_eq!(r.ids, want, "run {id}: ids received {:?}", r.ids);
        let unique: BTreeSet<u64> = r.ids.iter().copied().collect();
        assert_eq!(unique.len(), r.ids.len());
        // And they are the run's whole journal, one model answer per agent of the chain.
        let (_, journal) = serve
            .call(reqwest::Method::GET, &format!("/v1/runs/{id}/events"), None)
            .await;
        let stored: Vec<u64> = journal
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect();
        assert_eq!(r.ids, stored, "run {id}");
        let models = r.events.iter().filter(|e| *e == "model").count();
        assert_eq!(models, 3, "run {id}: {:?}", r.events);
        let (_, run) = serve
            .call(reqwest::Method::GET, &format!("/v1/runs/{id}"), None)
            .await;
        assert_eq!(run["status"], "succeeded");
    }
    // Steps journaled before the kill were replayed, not asked again: at most the call in
    // flight of each run was repeated.
    assert!(
        model.calls() <= RUNS * 3 + RUNS,
        "{} model calls for {RUNS} runs of 3 steps",
        model.calls()
    );
}
