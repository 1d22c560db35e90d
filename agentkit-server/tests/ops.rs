//! Operations over real HTTP on SQLite: schedules (list, pause, resume, trigger, history,
//! create and delete, shared by two server processes), webhooks, events, retention and MCP
//! servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::path::Path;
use std::time::Duration;

use agentkit_runtime::Schedule;
use agentkit_server::{Server, ServerBuilder};
use common::upstream::{Upstream, num, with_add};
use serde_json::{Value, json};

struct Running {
    base: String,
    key: String,
    server: Server,
    _served: inproc::InProcess,
}

/// A server on the SQLite store in `dir` with an `echo` agent, configured by `f`.
async fn start_with(dir: &Path, f: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Running {
    start_on(inproc::sqlite(dir).await, f).await
}

/// [`start_with`] on `store`.
async fn start_on(
    store: std::sync::Arc<dyn agentkit_runtime::Store>,
    f: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Running {
    let builder = inproc::echo_server_on(store, "test-key");
    let server = f(builder).build().await.unwrap();
    let served = inproc::serve(server.clone()).await;
    Running {
        base: served.base.clone(),
        key: "test-key".into(),
        server,
        _served: served,
    }
}

async fn call(
    r: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", r.base))
        .bearer_auth(&r.key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let problem = res
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status >= 400 {
        assert!(problem, "{status} is a problem detail: {body}");
    }
    (status, body)
}

use reqwest::Method;

fn nightly() -> Schedule {
    Schedule::cron(
        "nightly",
        "echo",
        json!({"message": "nightly report"}),
        "0 3 * * *",
        "Europe/Lisbon",
    )
    .unwrap()
}

#[tokio::test]
async fn schedules_are_listed_paused_resumed_triggered_and_their_history_kept() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(dir.path(), |b| b.schedules(vec![nightly()])).await;

    let (status, list) = call(&r, Method::GET, "/v1/schedules", None).await;
    assert_eq!(status, 200);
    let s = &list.as_array().unwrap()[0];
    assert_eq!(s["name"], "nightly");
    assert_eq!(s["target"], "echo");
    assert_eq!(
        s["trigger"],
        json!({"kind": "cron", "cron": "0 3 * * *", "timezone": "Europe/Lisbon"})
    );
    assert_eq!(s["paused"], false);
    assert_eq!(s["source"], "config");
    assert!(s["next_fire_at"].as_i64().unwrap() > agentkit_runtime::model::now_ms());
    assert!(s.get("last_run").is_none(), "it never fired: {s}");

    let (status, paused) = call(&r, Method::POST, "/v1/schedules/nightly/pause", None).await;
    assert_eq!((status, &paused["paused"]), (200, &json!(true)));

    // A manual fire runs now, paused or not, with the schedule's input.
    let (status, run) = call(&r, Method::POST, "/v1/schedules/nightly/trigger", None).await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["agent"], "echo");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let done = r.server.platform().wait(&run_id).await.unwrap();
    assert_eq!(done.status, agentkit_core::RunStatus::Succeeded);
    assert!(
        done.output.unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("nightly report")
    );

    let (status, history) = call(&r, Method::GET, "/v1/schedules/nightly/history", None).await;
    assert_eq!(status, 200);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["manual"], true);
    assert_eq!(history[0]["run"]["run_id"], run_id.as_str());
    assert_eq!(history[0]["run"]["status"], "succeeded");
    // A run started with an ordinary idempotency key is not in the history.
    call(
        &r,
        Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "x", "idempotency_key": "schedule-ish"})),
    )
    .await;
    let (_, history) = call(&r, Method::GET, "/v1/schedules/nightly/history", None).await;
    assert_eq!(history.as_array().unwrap().len(), 1);

    let (status, resumed) = call(&r, Method::POST, "/v1/schedules/nightly/resume", None).await;
    assert_eq!(status, 200);
    assert_eq!(resumed["paused"], false);
    assert_eq!(resumed["last_run"]["run_id"], run_id.as_str());

    for path in [
        "/v1/schedules/nope/pause",
        "/v1/schedules/nope/resume",
        "/v1/schedules/nope/trigger",
    ] {
        let (status, p) = call(&r, Method::POST, path, None).await;
        assert_eq!(status, 404, "{path}: {p}");
    }
    let (status, _) = call(&r, Method::GET, "/v1/schedules/nope/history", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn schedules_created_over_the_api_are_stored_for_every_server_and_deletable() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_with(dir.path(), |b| b.schedules(vec![nightly()])).await;
    let (status, created) = call(
        &a,
        Method::POST,
        "/v1/schedules",
        Some(json!({"name": "hourly", "target": "echo", "every": "1h",
                    "input": {"message": "tick"}, "overlap": "buffer_one"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["source"], "api");
    assert_eq!(created["overlap"], "buffer_one");
    assert_eq!(
        created["trigger"],
        json!({"kind": "every", "every_ms": 3_600_000})
    );
    let next = created["next_fire_at"].as_i64().unwrap();
    assert_eq!(next % 3_600_000, 0, "intervals are epoch aligned");

    // Bad requests say what to fix, and store nothing.
    let bad = [
        (
            json!({"name": "hourly", "target": "echo", "every": "1h"}),
            409,
            "exists",
        ),
        (
            json!({"name": "nightly", "target": "echo", "every": "1h"}),
            409,
            "exists",
        ),
        (
            json!({"name": "x", "target": "echo", "cron": "61 * * * *"}),
            400,
            "cron",
        ),
        (
            json!({"name": "x", "target": "echo", "cron": "0 * * * *", "timezone": "Mars/Base"}),
            400,
            "time zone",
        ),
        (json!({"name": "x", "target": "echo"}), 400, "one of `cron`"),
        // A one-shot already past would never fire.
        (
            json!({"name": "x", "target": "echo", "at": "2001-01-01T00:00:00Z"}),
            400,
            "is in the past",
        ),
        (
            json!({"name": "x", "target": "ghost", "every": "1h"}),
            400,
            "deploy it first",
        ),
        (
            json!({"name": "x", "target": "echo", "every": "1h", "evry": 1}),
            422,
            "evry",
        ),
        (
            json!({"name": "a b", "target": "echo", "every": "1h"}),
            400,
            "not valid",
        ),
        (json!({"target": "echo", "every": "1h"}), 422, "name"),
        (json!(["x"]), 422, "JSON object"),
    ];
    for (body, want, says) in bad {
        let (status, p) = call(&a, Method::POST, "/v1/schedules", Some(body.clone())).await;
        assert_eq!(status, want, "{body}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(says), "{body}: {p}");
    }
    let (_, list) = call(&a, Method::GET, "/v1/schedules", None).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hourly", "nightly"]);

    // A second server process on the same store (or a restart) fires it too.
    let b = start_with(dir.path(), |b| b.schedules(vec![nightly()])).await;
    let (status, seen) = call(&b, Method::GET, "/v1/schedules/hourly", None).await;
    assert_eq!(status, 200);
    assert_eq!(seen["source"], "api");
    assert_eq!(seen["input"], json!({"message": "tick"}));

    // Configuration schedules are changed in the configuration.
    let (status, p) = call(&a, Method::DELETE, "/v1/schedules/nightly", None).await;
    assert_eq!(status, 409);
    assert!(p["detail"].as_str().unwrap().contains("agentkit.yaml"));

    let (status, _) = call(&a, Method::DELETE, "/v1/schedules/hourly", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&a, Method::GET, "/v1/schedules/hourly", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&a, Method::DELETE, "/v1/schedules/hourly", None).await;
    assert_eq!(status, 404);
    // The other process drops it at its next sync (every 2 s, or now).
    b.server.platform().sync_schedules().await.unwrap();
    let (status, _) = call(&b, Method::GET, "/v1/schedules/hourly", None).await;
    assert_eq!(status, 404);
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POST `body` to hook `name` with `headers` and no API key.
async fn deliver(r: &Running, name: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/v1/hooks/{name}", r.base))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").cloned();
    let body: Value = res.json().await.unwrap();
    if status >= 400 {
        assert_eq!(ct.unwrap(), "application/problem+json");
    }
    (status, body)
}

fn signed(secret: &str, ts: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-agentkit-timestamp", ts.to_string()),
        (
            "x-agentkit-signature",
            hmac_hex(secret, &[ts.to_string().as_bytes(), b".", body.as_bytes()]),
        ),
    ]
}

fn now_secs() -> i64 {
    agentkit_runtime::model::now_ms() / 1000
}

#[tokio::test]
async fn signed_webhooks_start_runs_and_bad_or_replayed_deliveries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(dir.path(), |b| {
        b.webhook("issues", "echo", "s3cret", Some("/issue/title".into()))
            .webhook("plain", "echo", "other", None)
    })
    .await;
    let body = r#"{"issue": {"title": "The app crashes on start"}}"#;
    let (status, run) = deliver(&r, "issues", body, &signed("s3cret", now_secs(), body)).await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["agent"], "echo");
    // The run acts as the hook, in the default workspace (for policy, audit, approvals).
    let principal = &run["input"]["principal"];
    assert_eq!(principal["workspace"], "default", "{run}");
    assert_eq!(principal["key_id"], "webhook:issues", "{run}");
    assert_eq!(principal["roles"], json!(["invoker"]), "{run}");
    let done = r
        .server
        .platform()
        .wait(run["run_id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        done.output.unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("The app crashes on start")
    );

    // The same delivery again (same signature): a replay.
    let ts = now_secs();
    let headers = signed("s3cret", ts, r#"{"issue": {"title": "again"}}"#);
    let (status, _) = deliver(&r, "issues", r#"{"issue": {"title": "again"}}"#, &headers).await;
    assert_eq!(status, 202);
    let (status, p) = deliver(&r, "issues", r#"{"issue": {"title": "again"}}"#, &headers).await;
    assert_eq!(status, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("accepted before"));

    // Wrong secret, tampered body, stale or future timestamps, no signature: 401.
    let (status, p) = deliver(&r, "issues", body, &signed("wrong", now_secs(), body)).await;
    assert_eq!(status, 401, "{p}");
    let (status, _) = deliver(&r, "issues", "{}", &signed("s3cret", now_secs(), body)).await;
    assert_eq!(status, 401);
    for ts in [now_secs() - 400, now_secs() + 400] {
        let (status, p) = deliver(&r, "issues", body, &signed("s3cret", ts, body)).await;
        assert_eq!(status, 401, "{p}");
        assert!(p["detail"].as_str().unwrap().contains("Timestamp"), "{p}");
    }
    let (status, p) = deliver(&r, "issues", body, &[]).await;
    assert_eq!(status, 401);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("X-Agentkit-Signature")
    );

    // A body without the message: 400, and it can be sent again once fixed.
    let (status, p) = deliver(&r, "issues", "{}", &signed("s3cret", now_secs(), "{}")).await;
    assert_eq!(status, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("/issue/title"));

    let (status, p) = deliver(&r, "nope", body, &signed("s3cret", now_secs(), body)).await;
    assert_eq!(status, 404, "{p}");

    // GitHub's scheme: the delivery id and the signature (the delivery id is not signed)
    // guard against replays.
    let gh = |body: &str, id: &str| {
        vec![
            ("x-hub-signature-256", hmac_hex("other", &[body.as_bytes()])),
            ("x-github-delivery", id.to_owned()),
        ]
    };
    let (status, run) = deliver(
        &r,
        "plain",
        "hello from GitHub",
        &gh("hello from GitHub", "d-1"),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(run["input"]["message"], "hello from GitHub");
    let (status, _) = deliver(&r, "plain", "changed", &gh("changed", "d-1")).await;
    assert_eq!(status, 409);
    let (status, _) = deliver(&r, "plain", "changed", &gh("changed", "d-2")).await;
    assert_eq!(status, 202);
    // The same signed body under new delivery ids: replays, and no run starts.
    let runs = || async {
        let (status, runs) = call(&r, Method::GET, "/v1/runs", None).await;
        assert_eq!(status, 200, "{runs}");
        runs.as_array().unwrap().len()
    };
    let runs_before = runs().await;
    for id in ["d-9", "d-10"] {
        let (status, p) = deliver(
            &r,
            "plain",
            "hello from GitHub",
            &gh("hello from GitHub", id),
        )
        .await;
        assert_eq!(status, 409, "{id}: {p}");
        assert!(p["detail"].as_str().unwrap().contains("accepted before"));
    }
    assert_eq!(runs().await, runs_before);

    // Another server process on the same store refuses the replays too.
    let other = start_with(dir.path(), |b| b.webhook("plain", "echo", "other", None)).await;
    let (status, _) = deliver(&other, "plain", "changed", &gh("changed", "d-2")).await;
    assert_eq!(status, 409);
    let (status, _) = deliver(&other, "plain", "changed", &gh("changed", "d-3")).await;
    assert_eq!(status, 409);
    let (status, _) = deliver(&other, "plain", "new", &gh("new", "d-3")).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn events_start_the_runs_of_their_triggers_once_per_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(dir.path(), |b| b.event_trigger("deployed", "echo")).await;
    let emit = |key: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/v1/events/deployed", r.base))
            .bearer_auth(&r.key)
            .header("idempotency-key", key)
            .json(&json!({"message": "v2 is live"}))
            .send()
    };
    let first: Value = emit("e-1").await.unwrap().json().await.unwrap();
    assert_eq!(first["event"], "deployed");
    let runs = first["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["agent"], "echo");
    // The run acts as the key that emitted the event.
    let (_, run) = call(
        &r,
        Method::GET,
        &format!("/v1/runs/{}", runs[0]["run_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(run["input"]["message"], "v2 is live", "{run}");
    assert_eq!(run["input"]["principal"]["workspace"], "default", "{run}");
    assert_eq!(
        run["input"]["principal"]["roles"],
        json!(["admin"]),
        "{run}"
    );
    let again = emit("e-1").await.unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["runs"][0]["run_id"], runs[0]["run_id"]);
    let other: Value = emit("e-2").await.unwrap().json().await.unwrap();
    assert_ne!(other["runs"][0]["run_id"], runs[0]["run_id"]);

    let (status, p) = call(&r, Method::POST, "/v1/events/unheard", Some(json!({}))).await;
    assert_eq!(status, 404);
    assert!(p["detail"].as_str().unwrap().contains("type: event"));
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/v1/events/deployed", r.base))
        .json(&json!({"message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

const DAY: i64 = 86_400_000;

#[tokio::test]
async fn retention_deletes_old_finished_runs_then_idle_threads_and_old_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(dir.path(), |b| {
        b.retention(
            agentkit_server::Retention::new()
                .with_runs(Duration::from_secs(86_400))
                .with_threads(Duration::from_secs(3 * 86_400)),
        )
        .webhook("plain", "echo", "s3cret", None)
    })
    .await;
    let p = r.server.platform();
    let thread = p
        .threads()
        .create(None, Default::default(), false)
        .await
        .unwrap();
    let (_, on_thread) = call(
        &r,
        Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "remember me", "thread_id": thread.thread_id, "wait": true})),
    )
    .await;
    let (_, plain) = call(
        &r,
        Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "hello", "wait": true})),
    )
    .await;
    assert_eq!(plain["status"], "succeeded");
    // A LangGraph run on the thread, whose LangGraph facts (metadata) are kept beside it.
    let (status, lg) = call(
        &r,
        Method::POST,
        &format!("/threads/{}/runs", thread.thread_id),
        Some(json!({"assistant_id": "echo", "metadata": {"k": "v"},
                    "input": {"messages": [{"role": "user", "content": "lg"}]}})),
    )
    .await;
    assert_eq!(status, 200, "{lg}");
    let lg = lg["run_id"].as_str().unwrap().to_owned();
    p.wait(&lg).await.unwrap();
    let facts = |p: &agentkit_server::Platform, id: String| {
        let store = std::sync::Arc::clone(p.runtime().store());
        async move {
            store
                .doc_get(agentkit_server::api::langgraph::RUN_META, &id)
                .await
                .unwrap()
        }
    };
    assert!(facts(p, lg.clone()).await.is_some());
    // One deleted on request (`DELETE /threads/{id}/runs/{run_id}`) goes the same way.
    let (_, gone) = call(
        &r,
        Method::POST,
        &format!("/threads/{}/runs/wait", thread.thread_id),
        Some(json!({"assistant_id": "echo", "metadata": {"k": "v"},
                    "input": {"messages": [{"role": "user", "content": "gone"}]}})),
    )
    .await;
    let (_, runs) = call(
        &r,
        Method::GET,
        &format!("/threads/{}/runs?limit=1", thread.thread_id),
        None,
    )
    .await;
    let gone_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert!(facts(p, gone_id.clone()).await.is_some(), "{gone}");
    let path = format!("/threads/{}/runs/{gone_id}", thread.thread_id);
    let (status, _) = call(&r, Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    assert!(facts(p, gone_id).await.is_none());
    let (status, hooked) = deliver(&r, "plain", "hi", &signed("s3cret", now_secs(), "hi")).await;
    assert_eq!(status, 202);
    let now = agentkit_runtime::model::now_ms();

    // Nothing is old yet.
    let report = p.prune(now).await.unwrap();
    assert_eq!(report, agentkit_server::PruneReport::default());
    let (status, _) = call(
        &r,
        Method::GET,
        &format!("/v1/runs/{}", plain["run_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Two days on: the finished runs are gone (journals and thread links too); the thread,
    // idle for less than its TTL, keeps its conversation.
    for id in [&on_thread["run_id"], &plain["run_id"], &hooked["run_id"]] {
        p.wait(id.as_str().unwrap()).await.unwrap();
    }
    let report = p.prune(now + 2 * DAY).await.unwrap();
    assert_eq!(report.runs, 4, "{report:?}");
    assert_eq!(report.thread_runs, 2, "{report:?}");
    assert_eq!(report.threads, 0);
    assert!(
        facts(p, lg).await.is_none(),
        "the run's LangGraph facts go with it"
    );
    let (status, _) = call(
        &r,
        Method::GET,
        &format!("/v1/runs/{}", plain["run_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, runs) = call(&r, Method::GET, "/v1/runs", None).await;
    assert_eq!(runs, json!([]));
    assert!(
        p.runtime()
            .journal(on_thread["run_id"].as_str().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let kept = p.threads().messages(&thread.thread_id).await.unwrap();
    assert!(!kept.is_empty());

    // Four days on: the idle thread and its conversation are gone.
    let report = p.prune(now + 4 * DAY).await.unwrap();
    assert_eq!(report.threads, 1, "{report:?}");
    assert!(p.threads().find(&thread.thread_id).await.unwrap().is_none());
    assert!(
        p.threads()
            .messages(&thread.thread_id)
            .await
            .unwrap()
            .is_empty()
    );

    // Eight days on: the remembered webhook delivery is forgotten.
    let report = p.prune(now + 8 * DAY).await.unwrap();
    assert_eq!(report.deliveries, 1, "{report:?}");
    assert_eq!(
        p.prune(now + 8 * DAY).await.unwrap(),
        agentkit_server::PruneReport::default()
    );
}

#[tokio::test]
async fn agentkit_yaml_triggers_and_retention_reach_the_server() {
    let yaml = r#"
agents:
  support:
    description: Answers.
    model: gpt-4o-mini
    instructions: Answer.
schedules:
  digest:
    target: support
    every: 1h
triggers:
  tickets:
    type: webhook
    target: support
    secret: s3cret
    message_pointer: /ticket/text
  deploys:
    type: event
    event: deployed
    target: support
server:
  retention: {runs_days: 30, thread_ttl_days: 90}
"#;
    let config = agentkit_core::Config::from_yaml_str_with_env(yaml, None, &|_| None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(dir.path(), |b| {
        agentkit_server::spec::server_builder(b, &config).unwrap().0
    })
    .await;
    let p = r.server.platform();
    assert_eq!(
        p.retention(),
        agentkit_server::Retention::from_days(Some(30), Some(90))
    );
    assert_eq!(p.retention().runs, Some(Duration::from_secs(30 * 86_400)));
    let hook = p.webhook("tickets").unwrap();
    assert_eq!(hook.target, "support");
    assert_eq!(hook.message_pointer.as_deref(), Some("/ticket/text"));
    let body = r#"{"ticket": {"text": "my order is late"}}"#;
    let (status, run) = deliver(&r, "tickets", body, &signed("s3cret", now_secs(), body)).await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["input"]["message"], "my order is late");
    let (status, emitted) = call(
        &r,
        Method::POST,
        "/v1/events/deployed",
        Some(json!({"message": "v2"})),
    )
    .await;
    assert_eq!(status, 202, "{emitted}");
    assert_eq!(emitted["runs"][0]["agent"], "support");
    let (_, list) = call(&r, Method::GET, "/v1/schedules", None).await;
    assert_eq!(list[0]["name"], "digest");
}

/// An MCP server over streamable HTTP on 127.0.0.1 (stopped when dropped): `add`, `divide`
/// (an error answer for a zero divisor) and `secret`.
async fn calc_server() -> Upstream {
    use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
    let schema =
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}});
    let server = with_add(agentkit_mcp::McpServerBuilder::new("calc", "1.0.0"))
        .tool_fn(
            "divide",
            "Divides a by b",
            schema,
            move |args, _| async move {
                let b = num(&args, "b");
                if b == 0.0 {
                    return Ok(CallToolResult::error(vec![ContentBlock::text(
                        "division by zero",
                    )]));
                }
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    (num(&args, "a") / b).to_string(),
                )]))
            },
        )
        .tool_fn(
            "secret",
            "Not offered",
            json!({"type": "object"}),
            |_, _| async move { Ok(CallToolResult::success(vec![ContentBlock::text("leaked")])) },
        )
        .build();
    Upstream::serve(server).await
}

#[tokio::test]
async fn mcp_servers_are_listed_and_their_tools_listed_and_called() {
    use agentkit_mcp::{ConnectionManager, ServerConfig};
    let calc = calc_server().await;
    // A port nothing listens on: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let manager = ConnectionManager::new([
        ServerConfig::http("calc", &calc.url)
            .with_description("Arithmetic")
            .with_tool_filter(agentkit_core::ToolFilter::deny(["secret"])),
        ServerConfig::http("down", format!("http://{closed}/mcp"))
            .with_connect_timeout(Duration::from_secs(5)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let r = start_with(dir.path(), |b| b.mcp_servers(manager)).await;

    let (status, servers) = call(&r, Method::GET, "/v1/servers", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        servers,
        json!([
            {"name": "calc", "transport": "http", "description": "Arithmetic", "connected": false},
            {"name": "down", "transport": "http", "connected": false},
        ])
    );

    let (status, tools) = call(&r, Method::GET, "/v1/servers/calc/tools", None).await;
    assert_eq!(status, 200, "{tools}");
    let names: Vec<&str> = tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "divide"], "the tool filter hides `secret`");
    assert_eq!(tools[0]["description"], "Adds a and b");
    assert_eq!(
        tools[0]["input_schema"]["properties"]["a"]["type"],
        "number"
    );

    let (status, sum) = call(
        &r,
        Method::POST,
        "/v1/servers/calc/call_tool",
        Some(json!({"name": "add", "arguments": {"a": 2, "b": 40}})),
    )
    .await;
    assert_eq!(status, 200, "{sum}");
    assert_eq!(sum["is_error"], false);
    assert_eq!(sum["content"][0]["text"], "42");

    // The tool's own failure is its answer.
    let (status, failed) = call(
        &r,
        Method::POST,
        "/v1/servers/calc/call_tool",
        Some(json!({"name": "divide", "arguments": {"a": 1, "b": 0}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(failed["is_error"], true);
    assert_eq!(failed["content"][0]["text"], "division by zero");

    let (_, servers) = call(&r, Method::GET, "/v1/servers", None).await;
    assert_eq!(servers[0]["connected"], true);

    let (status, p) = call(
        &r,
        Method::POST,
        "/v1/servers/calc/call_tool",
        Some(json!({"name": "secret"})),
    )
    .await;
    assert_eq!(status, 404, "{p}");
    let (status, _) = call(&r, Method::GET, "/v1/servers/nope/tools", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &r,
        Method::POST,
        "/v1/servers/nope/call_tool",
        Some(json!({"name": "add"})),
    )
    .await;
    assert_eq!(status, 404);
    let (status, p) = call(
        &r,
        Method::POST,
        "/v1/servers/calc/call_tool",
        Some(json!({"name": "add", "arguments": [1, 2]})),
    )
    .await;
    assert_eq!(status, 422, "{p}");

    // A server that cannot be reached: 502, naming it.
    let (status, p) = call(&r, Method::GET, "/v1/servers/down/tools", None).await;
    assert_eq!(status, 502, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("`down`"), "{p}");
    calc.stop();
}

#[tokio::test]
async fn a_thread_with_a_ttl_is_deleted_when_it_ends_and_not_before() {
    let dir = tempfile::tempdir().unwrap();
    // No server-wide thread retention: only the threads' own TTLs.
    threads_with_a_ttl_are_swept(start_with(dir.path(), |b| b).await).await;
}

/// The same on PostgreSQL (the expiry index is read in id order there too).
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_thread_with_a_ttl_is_deleted_when_it_ends_and_not_before_on_postgres() {
    let pg = common::pg::Pg::start();
    let store = std::sync::Arc::new(
        agentkit_runtime::PostgresStore::connect(&pg.url)
            .await
            .unwrap(),
    );
    threads_with_a_ttl_are_swept(start_on(store, |b| b).await).await;
}

async fn threads_with_a_ttl_are_swept(r: Running) {
    let p = r.server.platform();
    let create = |body: Value| {
        let r = &r;
        async move { call(r, Method::POST, "/threads", Some(body)).await }
    };
    // As LangGraph's SDKs send it: minutes, or {ttl, strategy: delete}.
    let (s, short) = create(json!({"ttl": {"ttl": 60, "strategy": "delete"}})).await;
    assert_eq!(s, 200, "{short}");
    let short = short["thread_id"].as_str().unwrap().to_owned();
    let (s, long) = create(json!({"ttl": 180})).await;
    assert_eq!(s, 200, "{long}");
    let long = long["thread_id"].as_str().unwrap().to_owned();
    let (s, forever) = create(json!({})).await;
    assert_eq!(s, 200);
    let forever = forever["thread_id"].as_str().unwrap().to_owned();
    // A conversation on the short one.
    let (s, run) = call(
        &r,
        Method::POST,
        "/v1/agents/echo/runs",
        Some(json!({"message": "remember me", "thread_id": short, "wait": true})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    // Bad TTLs are refused and create nothing.
    for bad in [
        json!({"ttl": -1}),
        json!({"ttl": 0}),
        json!({"ttl": "1h"}),
        json!({"ttl": {"ttl": 5, "strategy": "keep_latest"}}),
        json!({"ttl": {"minutes": 5}}),
    ] {
        let (s, problem) = create(bad.clone()).await;
        assert_eq!(s, 422, "{bad}: {problem}");
    }
    let now = agentkit_runtime::model::now_ms();
    const MINUTE: i64 = 60_000;

    let report = p.prune(now + 30 * MINUTE).await.unwrap();
    assert_eq!(report.threads, 0, "{report:?}");
    // An hour on: the short thread and its conversation are gone; the others stay.
    let report = p.prune(now + 61 * MINUTE).await.unwrap();
    assert_eq!(report.threads, 1, "{report:?}");
    assert_eq!(report.thread_runs, 1, "{report:?}");
    assert!(p.threads().find(&short).await.unwrap().is_none());
    assert!(p.threads().messages(&short).await.unwrap().is_empty());
    let (s, _) = call(&r, Method::GET, &format!("/threads/{short}"), None).await;
    assert_eq!(s, 404);
    // A patch gives the long one a new TTL from now (an hour): its old end no longer holds.
    let (s, patched) = call(
        &r,
        Method::PATCH,
        &format!("/threads/{long}"),
        Some(json!({"ttl": 240})),
    )
    .await;
    assert_eq!(s, 200, "{patched}");
    let report = p.prune(now + 181 * MINUTE).await.unwrap();
    assert_eq!(report.threads, 0, "the patched TTL holds: {report:?}");
    let report = p.prune(now + 242 * MINUTE).await.unwrap();
    assert_eq!(report.threads, 1, "{report:?}");
    assert!(p.threads().find(&long).await.unwrap().is_none());
    // The one without a TTL stays, and nothing is left to sweep.
    assert!(p.threads().find(&forever).await.unwrap().is_some());
    assert_eq!(
        p.prune(now + 10_000 * MINUTE).await.unwrap(),
        agentkit_server::PruneReport::default()
    );
}

/// A thread whose time to live ends while a run is still going on it is kept until the run
/// has ended; the sweep after that deletes it.
#[tokio::test]
async fn a_thread_with_a_run_going_outlives_its_ttl_until_the_run_ends() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = inproc::Gated::new(
        agentkit_core::AgentLlm::new(
            agentkit_core::Agent::new("held", "Answer when let go."),
            agentkit_core::ScriptedProvider::new().then_text("let go"),
        ),
        Arc::clone(&gate),
    );
    let r = start_with(dir.path(), |b| {
        b.agent_llm("held", Arc::new(held), "Held until the test lets it go")
    })
    .await;
    let p = r.server.platform();
    let (s, thread) = call(&r, Method::POST, "/threads", Some(json!({"ttl": 60}))).await;
    assert_eq!(s, 200, "{thread}");
    let thread = thread["thread_id"].as_str().unwrap().to_owned();
    let (s, run) = call(
        &r,
        Method::POST,
        "/v1/agents/held/runs",
        Some(json!({"message": "wait", "thread_id": thread})),
    )
    .await;
    assert!(s == 200 || s == 201 || s == 202, "{s}: {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    inproc::wait_run(&r.base, &r.key, &run_id, "running").await;

    let now = agentkit_runtime::model::now_ms();
    const MINUTE: i64 = 60_000;
    let report = p.prune(now + 61 * MINUTE).await.unwrap();
    assert_eq!(
        report.threads, 0,
        "a thread with a run going stays: {report:?}"
    );
    assert!(p.threads().find(&thread).await.unwrap().is_some());

    gate.add_permits(1);
    inproc::wait_run(&r.base, &r.key, &run_id, "succeeded").await;
    let report = p.prune(now + 62 * MINUTE).await.unwrap();
    assert_eq!(report.threads, 1, "{report:?}");
    assert!(p.threads().find(&thread).await.unwrap().is_none());
}
