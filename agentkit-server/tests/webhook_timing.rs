//! Figures (ignored by default; `cargo test -p agentkit-server --test webhook_timing --
//! --ignored --nocapture`): how long a delivery to an unknown workspace webhook takes next
//! to one to a known hook with a wrong signature, interleaved over real HTTP on SQLite.
//! Both answer 401 with the same body; their medians should be within noise of each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use inproc::call_as;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::Server;
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use agentkit_server::vault::MasterKey;
use reqwest::Method;
use serde_json::json;

const ADMIN: &str = "timing-admin-key";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures"]
async fn webhook_timing_figures() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap());
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), ModelFactory::offline());
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .spec_builder(Arc::new(builder))
        .master_key(MasterKey::generate().unwrap())
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let (s, b) = call_as(
        &base,
        ADMIN,
        Method::POST,
        "/v1/agents",
        Some(json!({"name": "triage", "kind": "agent",
                    "spec": {"model": "scripted", "instructions": "Repeat."}})),
    )
    .await;
    assert!(s == 201 || s == 200, "{b}");
    let (s, b) = call_as(
        &base,
        ADMIN,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "github", "target": "triage"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let client = reqwest::Client::new();
    let deliver = |name: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let ts = agentkit_runtime::model::now_ms() / 1000;
            let started = Instant::now();
            let res = client
                .post(format!("{base}/v1/hooks/default/default/{name}"))
                .header("x-agentkit-timestamp", ts.to_string())
                .header(
                    "x-agentkit-signature",
                    format!("sha256={}", "ab".repeat(32)),
                )
                .body(r#"{"issue": {"title": "x"}}"#)
                .send()
                .await
                .unwrap();
            let status = res.status().as_u16();
            let body = res.text().await.unwrap();
            (started.elapsed(), status, body)
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..600 {
        let (a, b) = if i % 2 == 0 {
            let a = deliver("github").await;
            (a, deliver("nosuchhook").await)
        } else {
            let b = deliver("nosuchhook").await;
            (deliver("github").await, b)
        };
        assert_eq!((a.1, &a.2), (b.1, &b.2), "same status and body");
        if i >= 100 {
            known.push(a.0);
            unknown.push(b.0);
        }
    }
    println!(
        "webhook delivery, median of 500 each: known hook + wrong signature {:?}, unknown hook {:?}",
        median(known),
        median(unknown)
    );
}
