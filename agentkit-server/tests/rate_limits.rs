//! `server.rate_limit` over real HTTP: a key over its rate gets 429 with `Retry-After`, other
//! keys and workspaces are not affected, and the key is served again once the wait is over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

mod inproc;

use agentkit_runtime::{MemoryStore, Store};
use agentkit_server::{RateLimits, Server};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "admin-key";

struct Running {
    base: String,
    client: reqwest::Client,
    _served: inproc::InProcess,
}

async fn start(limits: RateLimits) -> Running {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .rate_limits(limits)
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Running {
        base: served.base.clone(),
        client: reqwest::Client::new(),
        _served: served,
    }
}

impl Running {
    async fn get(&self, key: &str, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> Value {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }
}

fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_are_not_affected() {
    // Workspace keys and the admin key are created before the limit starts to matter: the
    // admin's allowance is large enough for the setup.
    let r = start(RateLimits::new().per_key(n(1), n(3))).await;
    r.post(
        ADMIN,
        "/v1/workspaces",
        json!({"org": "acme", "workspace": "prod"}),
    )
    .await;
    let a = r
        .post(
            ADMIN,
            "/v1/keys",
            json!({"name": "a", "role": "viewer", "workspace": "acme/prod"}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = r
        .post(
            ADMIN,
            "/v1/keys",
            json!({"name": "b", "role": "viewer", "workspace": "acme/prod"}),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // A burst of 3 goes through; then requests are refused with a problem detail and
    // Retry-After (the loop allows for a token refilled on a slow machine).
    let mut served = 0;
    let (headers, body) = loop {
        let (s, headers, body) = r.get(&a, "/v1/agents").await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break (headers, body);
        }
        assert_eq!(s, StatusCode::OK, "{body}");
        served += 1;
        assert!(served < 20, "never limited");
    };
    assert!(served >= 3, "the burst of 3 was not served: {served}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After: {retry}");
    assert_eq!(body["status"], 429);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("rate limit") && detail.contains("Retry-After"),
        "{detail}"
    );
    // The refused request named the key by id, never by its secret.
    assert!(!detail.contains(&a), "{detail}");

    // Another key of the same workspace is not affected.
    let (s, _, _) = r.get(&b, "/v1/agents").await;
    assert_eq!(s, StatusCode::OK);

    // Once the wait is over the key is served again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (s, _, body) = r.get(&a, "/v1/agents").await;
    assert_eq!(s, StatusCode::OK, "{body}");

    // Unauthenticated requests are refused before the limiter (they do not use it up).
    for _ in 0..10 {
        let (s, _, _) = r.get("ak_not_a_key", "/v1/agents").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_workspace_limit_counts_all_of_its_keys() {
    // Burst 4: the admin's setup below (3 requests) and its last request fit its own
    // workspace's allowance.
    let r = start(RateLimits::new().per_workspace(n(1), n(4))).await;
    r.post(
        ADMIN,
        "/v1/workspaces",
        json!({"org": "acme", "workspace": "dev"}),
    )
    .await;
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        keys.push(
            r.post(
                ADMIN,
                "/v1/keys",
                json!({"name": name, "role": "viewer", "workspace": "acme/dev"}),
            )
            .await["key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Both keys draw on the workspace's burst of 4, then both are refused.
    let mut served = 0;
    let (headers, body) = loop {
        let (s, headers, body) = r.get(&keys[served % 2], "/v1/agents").await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            break (headers, body);
        }
        assert_eq!(s, StatusCode::OK);
        served += 1;
        assert!(served < 20, "never limited");
    };
    assert!(served >= 4, "the burst of 4 was not served: {served}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("workspace acme/dev"),
        "{body}"
    );
    // The default workspace (the admin key) has its own allowance.
    let (s, _, _) = r.get(ADMIN, "/v1/agents").await;
    assert_eq!(s, StatusCode::OK);
}
