//! The HTTP API end to end over real sockets: authentication, runs on threads, SSE resume,
//! the registry, bad input and the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use inproc::call_as;

use agentkit_server::Server;
use serde_json::{Value, json};

struct Running {
    base: String,
    key: String,
    server: Server,
    _dir: tempfile::TempDir,
    _served: inproc::InProcess,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::echo_server(dir.path(), "test-key")
        .await
        .max_body_bytes(64 * 1024)
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server.clone()).await;
    Running {
        base: served.base.clone(),
        key: "test-key".into(),
        server,
        _dir: dir,
        _served: served,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn requests_without_the_key_are_401_problems_and_health_is_open() {
    let r = start().await;
    let res = client()
        .get(format!("{}/v1/agents", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    let wrong = client()
        .get(format!("{}/v1/agents", r.base))
        .header("x-api-key", "test-kez")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = client()
        .get(format!("{}/v1/agents", r.base))
        .header("x-api-key", "test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        let res = client()
            .get(format!("{}{open}", r.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn a_run_on_a_thread_continues_its_conversation_and_threads_are_isolated() {
    let r = start().await;
    let threads = r.server.platform().threads();
    let a = threads
        .create(None, Default::default(), false)
        .await
        .unwrap();
    let b = threads
        .create(None, Default::default(), false)
        .await
        .unwrap();
    let run = |t: String, m: &'static str| {
        let r = &r;
        async move {
            call_as(
                &r.base,
                &r.key,
                reqwest::Method::POST,
                "/v1/agents/echo/runs",
                Some(json!({"message": m, "thread_id": t, "wait": true})),
            )
            .await
        }
    };
    let (s, one) = run(a.thread_id.clone(), "one").await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one["output"]["text"], "one");
    assert_eq!(one["version"], 1);
    let (_, two) = run(a.thread_id.clone(), "two").await;
    assert_eq!(two["output"]["text"], "one | two");
    let (_, other) = run(b.thread_id.clone(), "alone").await;
    assert_eq!(
        other["output"]["text"], "alone",
        "thread b must not see thread a"
    );
    // Without a thread, a run stands alone.
    let (_, lone) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "solo", "wait": true})),
    )
    .await;
    assert_eq!(lone["output"]["text"], "solo");
    let (_, listed) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::GET,
        "/v1/runs?agent=echo&status=succeeded",
        None,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 4);
    assert_eq!(listed[0]["run_id"], lone["run_id"], "newest first");
}

#[tokio::test]
async fn sse_resumes_after_last_event_id_without_loss_or_repeats() {
    let r = start().await;
    let (s, run) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "hello", "wait": true})),
    )
    .await;
    assert_eq!(s, 200);
    let id = run["run_id"].as_str().unwrap();
    let read = |last: Option<&str>| {
        let mut req = client()
            .get(format!("{}/v1/runs/{id}/events", r.base))
            .bearer_auth(&r.key)
            .header("accept", "text/event-stream");
        if let Some(l) = last {
            req = req.header("last-event-id", l);
        }
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let full = read(None).await;
    assert!(full.contains("event: model"), "{full}");
    assert!(full.contains("id: 0"), "{full}");
    assert!(full.contains("event: end"), "{full}");
    assert!(full.contains("\"text\":\"hello\""), "{full}");
    let after = read(Some("0")).await;
    assert!(
        !after.contains("id: 0\n"),
        "event 0 must not be sent again: {after}"
    );
    assert!(after.contains("event: end"));
    let bad = client()
        .get(format!("{}/v1/runs/{id}/events", r.base))
        .bearer_auth(&r.key)
        .header("accept", "text/event-stream")
        .header("last-event-id", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let (_, json_events) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::GET,
        &format!("/v1/runs/{id}/events"),
        None,
    )
    .await;
    assert_eq!(json_events[0]["event"], "model");
    assert_eq!(json_events[0]["data"]["text"], "hello");
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem_and_stores_nothing() {
    let r = start().await;
    let url = format!("{}/v1/agents/echo/runs", r.base);
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            client()
                .post(&url)
                .header("content-type", "application/json")
                .body("{not json"),
            400,
        ),
        (client().post(&url).json(&json!({"message": 5})), 422),
        (
            client()
                .post(&url)
                .json(&json!({"message": "x", "surprise": 1})),
            422,
        ),
        (client().post(&url).body("{}"), 415),
        (
            client()
                .post(&url)
                .json(&json!({"message": "x".repeat(100 * 1024)})),
            413,
        ),
        (
            client()
                .post(format!("{}/v1/agents/nope/runs", r.base))
                .json(&json!({"message": "x"})),
            404,
        ),
        (
            client()
                .post(&url)
                .json(&json!({"message": "x", "thread_id": "no-such-thread"})),
            404,
        ),
        (
            client()
                .post(&url)
                .json(&json!({"message": "x", "thread_id": "../../etc"})),
            400,
        ),
        (
            client()
                .post(&url)
                .json(&json!({"message": "x", "version": "v99"})),
            404,
        ),
        (client().get(format!("{}/v1/runs/unknown", r.base)), 404),
        (
            client().get(format!("{}/v1/runs?status=bogus", r.base)),
            400,
        ),
        (client().get(format!("{}/v1/runs?limit=-1", r.base)), 400),
        (
            client().post(format!("{}/v1/runs/unknown/cancel", r.base)),
            404,
        ),
        (client().get(format!("{}/v1/nowhere", r.base)), 404),
        (
            client()
                .put(format!("{}/v1/agents/echo/labels/prod", r.base))
                .json(&json!({"version": 7})),
            404,
        ),
        (
            client()
                .put(format!("{}/v1/agents/echo/labels/bad%20label", r.base))
                .json(&json!({"version": 1})),
            400,
        ),
        (
            client()
                .post(format!("{}/v1/agents/echo/rollback", r.base))
                .json(&json!({"label": "prod"})),
            404,
        ),
        (
            client()
                .post(format!("{}/v1/agents", r.base))
                .json(&json!({"name": "x", "kind": "agent", "spec": {}})),
            400,
        ),
    ];
    // Routes that read their body as raw bytes (LangGraph, Agent Protocol, webhooks, run
    // actions) answer a body over the limit with a problem detail too.
    let big = json!({"message": "x".repeat(100 * 1024)});
    let cases = cases.into_iter().chain(
        [
            "/threads",
            "/agents/search",
            "/v1/hooks/nope",
            "/v1/runs/unknown/cancel",
        ]
        .map(|path| (client().post(format!("{}{path}", r.base)).json(&big), 413)),
    );
    for (i, (req, want)) in cases.enumerate() {
        let res = req.bearer_auth(&r.key).send().await.unwrap();
        let status = res.status().as_u16();
        let ct = res.headers().get("content-type").cloned();
        let body = res.text().await.unwrap();
        assert_eq!(status, want, "case {i}: {body}");
        assert_eq!(ct.unwrap(), "application/problem+json", "case {i}");
        let p: Value = serde_json::from_str(&body).unwrap();
        assert!(!p["detail"].as_str().unwrap().is_empty(), "case {i}");
    }
    let (_, runs) = call_as(&r.base, &r.key, reqwest::Method::GET, "/v1/runs", None).await;
    assert_eq!(runs, json!([]), "no bad request stored a run");
    // A finished run cannot be cancelled: 409 that says its status.
    let (_, run) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "x", "wait": true})),
    )
    .await;
    let (s, p) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        &format!("/v1/runs/{}/cancel", run["run_id"].as_str().unwrap()),
        Some(json!({"reason": "late"})),
    )
    .await;
    assert_eq!(s, 409);
    assert!(p["detail"].as_str().unwrap().contains("succeeded"), "{p}");
}

#[tokio::test]
async fn labels_move_with_compare_and_swap_and_roll_back() {
    let r = start().await;
    let (s, e) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::PUT,
        "/v1/agents/echo/labels/prod",
        Some(json!({"version": 1, "expected_version": 0})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["labels"]["prod"], 1);
    let (s, p) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::PUT,
        "/v1/agents/echo/labels/prod",
        Some(json!({"version": 1, "expected_version": 0})),
    )
    .await;
    assert_eq!(s, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("points at v1"));
    let (s, e) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        "/v1/agents/echo/promote",
        Some(json!({"from": "prod", "to": "stage"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(e["labels"]["stage"], 1);
    let (s, run) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "p", "version": "prod", "wait": true})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(run["version"], 1);
    // Rolling back a label that does not exist is a 404 naming the labels there are (not a
    // 409 about its history).
    let (s, p) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        "/v1/agents/echo/rollback",
        Some(json!({"label": "canary"})),
    )
    .await;
    assert_eq!(s, 404, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("prod"), "{p}");
    // A page of runs has a bound.
    let (s, p) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::GET,
        "/v1/runs?limit=5000",
        None,
    )
    .await;
    assert_eq!(s, 400, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("at most 1000"),
        "{p}"
    );
}

#[test]
fn every_route_is_in_the_openapi_document() {
    let doc = serde_json::to_value(agentkit_server::api::openapi::document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut routes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in text.split(".route(\"").skip(1) {
            routes.push(part.split('"').next().unwrap().to_owned());
        }
    }
    assert!(routes.len() > 20, "{routes:?}");
    for r in &routes {
        assert!(
            paths.contains_key(r),
            "route {r} is missing from /openapi.json"
        );
    }
    // `/mcp` (routed as a service, not with `.route("`) is in it too.
    for method in ["post", "get", "delete"] {
        assert!(paths["/mcp"].get(method).is_some(), "{method} /mcp");
    }
    // No two paths are the same template with other parameter names (OpenAPI forbids it).
    let mut templates = std::collections::BTreeMap::new();
    for path in paths.keys() {
        let mut template = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    template.push_str("{}");
                }
                '}' => in_param = false,
                c if !in_param => template.push(c),
                _ => {}
            }
        }
        if let Some(other) = templates.insert(template, path.clone()) {
            panic!("{path} and {other} are one template");
        }
    }
}

#[tokio::test]
async fn concurrent_subscribers_of_one_run_each_get_the_whole_stream() {
    let r = start().await;
    let (s, run) = call_as(
        &r.base,
        &r.key,
        reqwest::Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "fan out"})),
    )
    .await;
    assert_eq!(s, 202, "{run}");
    let id = run["run_id"].as_str().unwrap().to_owned();
    // Journal events (`id:` lines) and the final `end` of one stream.
    let read = |last: Option<&'static str>| {
        let url = format!("{}/v1/runs/{id}/events", r.base);
        let key = r.key.clone();
        async move {
            let mut req = client()
                .get(url)
                .bearer_auth(key)
                .header("accept", "text/event-stream");
            if let Some(l) = last {
                req = req.header("last-event-id", l);
            }
            let text = req.send().await.unwrap().text().await.unwrap();
            text.split("\n\n")
                .filter(|f| f.contains("id: ") || f.contains("event: end"))
                .map(|f| {
                    f.lines()
                        .filter(|l| l.starts_with("id: ") || l.starts_with("event: "))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
        }
    };
    let streams = futures::future::join_all((0..20).map(|_| read(None))).await;
    let resumed = read(Some("0")).await;
    assert!(
        streams[0].iter().any(|e| e.contains("event: model")),
        "{:?}",
        streams[0]
    );
    assert!(
        streams[0].last().unwrap().contains("event: end"),
        "{:?}",
        streams[0]
    );
    for s in &streams {
        assert_eq!(s, &streams[0], "every subscriber sees the same events");
    }
    assert_eq!(
        resumed,
        streams[0][1..].to_vec(),
        "a subscriber after event 0 gets the rest"
    );
}
