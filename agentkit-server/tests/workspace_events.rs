//! Event triggers per workspace over real HTTP on SQLite: a developer key declares its
//! workspace's triggers (`/v1/triggers`), an invoker key emits events
//! (`POST /v1/events/{event}`) that start only its own workspace's runs, carrying its
//! principal; another workspace's triggers answer 404 and are never started; bad input is a
//! 4xx problem that starts nothing; changes land in the workspace's audit log; the
//! `agentkit.yaml` event triggers of `default/default` keep working beside the API's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use inproc::call_as;
use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "events-admin-key";

struct Running {
    base: String,
    _dir: tempfile::TempDir,
    _served: inproc::InProcess,
}

/// A server on a SQLite file with the scripted `echo` agent in `default/default` and an
/// `agentkit.yaml`-style event trigger `deployed` → `echo`.
async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let echo = agentkit_core::AgentLlm::new(
        agentkit_core::Agent::new("echo", "Repeat."),
        agentkit_core::ScriptedProvider::echo(),
    );
    let server = inproc::declarative(dir.path(), ADMIN)
        .await
        .agent_llm("echo", Arc::new(echo), "Repeats")
        .event_trigger("deployed", "echo")
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

async fn emit(r: &Running, key: &str, event: &str, payload: Value) -> (u16, Value) {
    call_as(
        &r.base,
        key,
        Method::POST,
        &format!("/v1/events/{event}"),
        Some(payload),
    )
    .await
}

async fn run_ids(r: &Running, key: &str) -> Vec<String> {
    let (s, b) = call_as(&r.base, key, Method::GET, "/v1/runs", None).await;
    assert_eq!(s, 200, "{b}");
    let runs = b
        .as_array()
        .or_else(|| b["runs"].as_array())
        .unwrap()
        .clone();
    runs.iter()
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_start_only_the_emitting_workspaces_runs_as_its_caller() {
    let r = start().await;
    let (acme_dev, acme_dev_id) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "developer", "developer")
            .await;
    let (acme_inv, acme_inv_id) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "invoker", "invoker").await;
    let (globex_dev, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "globex", "prod", "developer", "developer")
            .await;
    let (globex_inv, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "globex", "prod", "invoker", "invoker").await;
    inproc::deploy_scripted(&r.base, &acme_dev, "bot").await;
    inproc::deploy_scripted(&r.base, &globex_dev, "bot").await;

    // Both workspaces listen to `deployed`, under the same trigger name.
    let (s, t) = call_as(
        &r.base,
        &acme_dev,
        Method::POST,
        "/v1/triggers",
        Some(
            json!({"name": "on-deploy", "event": "deployed", "target": "bot",
                    "message": "Deployed {/service} at {/version}"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["event"], "deployed");
    assert_eq!(t["target"], "bot");
    assert_eq!(t["created_by"], acme_dev_id.as_str());
    let (s, t) = call_as(
        &r.base,
        &globex_dev,
        Method::POST,
        "/v1/triggers",
        Some(json!({"name": "on-deploy", "event": "deployed", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let (s, _) = call_as(
        &r.base,
        &globex_dev,
        Method::POST,
        "/v1/triggers",
        Some(json!({"name": "globex-only", "event": "shipped", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 201);

    // acme's invoker emits: one run, acme's, with the templated message and its principal.
    let (s, out) = emit(
        &r,
        &acme_inv,
        "deployed",
        json!({"service": "api", "version": 7}),
    )
    .await;
    assert_eq!(s, 202, "{out}");
    let runs = out["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{out}");
    assert_eq!(runs[0]["agent"], "bot", "the workspace's own name: {out}");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let (s, run) = call_as(
        &r.base,
        &acme_inv,
        Method::GET,
        &format!("/v1/runs/{run_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["input"]["message"], "Deployed api at 7");
    let principal = &run["input"]["principal"];
    assert_eq!(principal["tenant"], "acme", "{run}");
    assert_eq!(principal["workspace"], "prod", "{run}");
    assert_eq!(principal["key_id"], acme_inv_id.as_str(), "{run}");
    assert_eq!(principal["roles"], json!(["invoker"]), "{run}");
    // globex saw nothing: no run, and acme's run is not found.
    assert!(run_ids(&r, &globex_inv).await.is_empty());
    let (s, _) = call_as(
        &r.base,
        &globex_inv,
        Method::GET,
        &format!("/v1/runs/{run_id}"),
        None,
    )
    .await;
    assert_eq!(s, 404);
    // The default workspace's yaml trigger on the same event did not fire either.
    assert!(run_ids(&r, ADMIN).await.is_empty());

    // globex's emit starts globex's run, with the payload's `message`.
    let (s, out) = emit(
        &r,
        &globex_inv,
        "deployed",
        json!({"message": "v2 is live"}),
    )
    .await;
    assert_eq!(s, 202, "{out}");
    assert_eq!(out["runs"].as_array().unwrap().len(), 1);
    assert_eq!(run_ids(&r, &acme_inv).await, vec![run_id.clone()]);
    assert_eq!(run_ids(&r, &globex_inv).await.len(), 1);

    // Another workspace's trigger is invisible: not listed, 404 to get and delete, and its
    // event is unknown here.
    let (s, list) = call_as(&r.base, &acme_dev, Method::GET, "/v1/triggers", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["on-deploy"]);
    for method in [Method::GET, Method::DELETE] {
        let (s, p) = call_as(&r.base, &acme_dev, method, "/v1/triggers/globex-only", None).await;
        assert_eq!(s, 404, "{p}");
        assert!(!p.to_string().contains("shipped"), "reveals nothing: {p}");
    }
    let (s, p) = emit(&r, &acme_inv, "shipped", json!({"message": "x"})).await;
    assert_eq!(s, 404, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("event trigger `shipped` not found; workspace acme/"),
        "names the event alone, then the workspace: {detail}"
    );
    assert!(
        detail.contains("POST /v1/triggers"),
        "says what to do: {detail}"
    );
    assert!(!detail.contains("globex"), "{detail}");
    let (s, _) = call_as(
        &r.base,
        &globex_dev,
        Method::GET,
        "/v1/triggers/globex-only",
        None,
    )
    .await;
    assert_eq!(s, 200, "still there for its owner");

    // The same Idempotency-Key gives the same runs.
    let emit_keyed = || async {
        let res = reqwest::Client::new()
            .post(format!("{}/v1/events/deployed", r.base))
            .bearer_auth(&globex_inv)
            .header("idempotency-key", "release-42")
            .json(&json!({"message": "once"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        res.json::<Value>().await.unwrap()["runs"][0]["run_id"].clone()
    };
    let first = emit_keyed().await;
    assert_eq!(emit_keyed().await, first);

    // Deleting the trigger stops its event.
    let (s, _) = call_as(
        &r.base,
        &acme_dev,
        Method::DELETE,
        "/v1/triggers/on-deploy",
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = emit(
        &r,
        &acme_inv,
        "deployed",
        json!({"service": "x", "version": 1}),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call_as(
        &r.base,
        &acme_dev,
        Method::GET,
        "/v1/triggers/on-deploy",
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn bad_input_is_a_problem_that_starts_nothing_and_roles_are_enforced() {
    let r = start().await;
    let (dev, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "developer", "developer")
            .await;
    let (inv, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "invoker", "invoker").await;
    let (viewer, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "viewer", "viewer").await;
    inproc::deploy_scripted(&r.base, &dev, "bot").await;
    let create = |body: Value| call_as(&r.base, &dev, Method::POST, "/v1/triggers", Some(body));

    for (body, want) in [
        (
            json!({"name": "a b", "event": "e", "target": "bot"}),
            "trigger name",
        ),
        (
            json!({"name": "t", "event": "a/b c", "target": "bot"}),
            "event name",
        ),
        (
            json!({"name": "t", "event": "e", "target": "nobody"}),
            "deploy it",
        ),
        (
            json!({"name": "t", "event": "e", "target": "bot", "message": "{service}"}),
            "template",
        ),
        (
            json!({"name": "t", "event": "e", "target": "bot", "message": "open {/a"}),
            "not closed",
        ),
        (
            json!({"name": "t", "event": "e", "target": "bot", "extra": 1}),
            "extra",
        ),
        (json!({"name": "t", "event": "e"}), "target"),
        (
            json!({"name": 5, "event": "e", "target": "bot"}),
            "expected a string",
        ),
    ] {
        let (s, p) = create(body.clone()).await;
        assert!((400..500).contains(&s), "{body}: {s} {p}");
        assert!(p["detail"].as_str().unwrap().contains(want), "{body}: {p}");
    }
    let res = reqwest::Client::new()
        .post(format!("{}/v1/triggers", r.base))
        .bearer_auth(&dev)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Nothing was stored by any of them.
    let (_, list) = call_as(&r.base, &dev, Method::GET, "/v1/triggers", None).await;
    assert_eq!(list, json!([]));

    let (s, _) = create(json!({"name": "t", "event": "e", "target": "bot"})).await;
    assert_eq!(s, 201);
    let (s, p) = create(json!({"name": "t", "event": "other", "target": "bot"})).await;
    assert_eq!(s, 409, "{p}");
    let (s, _) =
        create(json!({"name": "tpl", "event": "e", "target": "bot", "message": "Hi {/who}"})).await;
    assert_eq!(s, 201);

    // A payload one trigger cannot read starts no run of either.
    let (s, p) = emit(&r, &inv, "e", json!({"message": "hi"})).await;
    assert_eq!(s, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("/who"), "{p}");
    let (s, p) = emit(&r, &inv, "e", json!({"who": "Ann"})).await;
    assert_eq!(s, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("`message`"), "{p}");
    assert!(run_ids(&r, &inv).await.is_empty());
    let (s, out) = emit(&r, &inv, "e", json!({"who": "Ann", "message": "hi"})).await;
    assert_eq!(s, 202, "{out}");
    assert_eq!(out["runs"].as_array().unwrap().len(), 2);

    // Roles: an invoker emits but does not manage triggers; a viewer does neither.
    let (s, _) = call_as(&r.base, &inv, Method::GET, "/v1/triggers", None).await;
    assert_eq!(s, 403);
    let (s, _) = call_as(
        &r.base,
        &inv,
        Method::POST,
        "/v1/triggers",
        Some(json!({"name": "x", "event": "e", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, p) = emit(&r, &viewer, "e", json!({"who": "A", "message": "m"})).await;
    assert_eq!(s, 403, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("invoker"), "{p}");
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/v1/events/e", r.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test]
async fn changes_are_audited_and_default_workspace_keeps_its_yaml_triggers() {
    let r = start().await;
    let (admin, admin_id) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "admin", "admin").await;
    inproc::deploy_scripted(&r.base, &admin, "bot").await;
    let (s, _) = call_as(
        &r.base,
        &admin,
        Method::POST,
        "/v1/triggers",
        Some(json!({"name": "t", "event": "e", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call_as(&r.base, &admin, Method::DELETE, "/v1/triggers/t", None).await;
    assert_eq!(s, 204);
    let entries = inproc::audit_entries(&r.base, &admin, "").await;
    // (The agent's deploy is audited too.)
    let changes: Vec<(&str, &str, &str, &str)> = entries
        .iter()
        .map(|e| &e["event"])
        .filter(|e| e["tool"].as_str().unwrap().starts_with("triggers."))
        .map(|e| {
            (
                e["tool"].as_str().unwrap(),
                e["call_id"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["key_id"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("triggers.create", "t", "changed", admin_id.as_str()),
            ("triggers.delete", "t", "changed", admin_id.as_str())
        ],
        "{entries:?}"
    );
    let (s, v) = call_as(&r.base, &admin, Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(s, 200, "the chain verifies: {v}");

    // default/default: the yaml trigger and an API trigger on the same event both start.
    inproc::deploy_scripted(&r.base, ADMIN, "greeter").await;
    let (s, t) = call_as(
        &r.base,
        ADMIN,
        Method::POST,
        "/v1/triggers",
        Some(json!({"name": "greet", "event": "deployed", "target": "greeter"})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let (s, out) = emit(&r, ADMIN, "deployed", json!({"message": "v3"})).await;
    assert_eq!(s, 202, "{out}");
    let mut agents: Vec<&str> = out["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["agent"].as_str().unwrap())
        .collect();
    agents.sort_unstable();
    assert_eq!(agents, vec!["echo", "greeter"], "{out}");
    // A workspace key's emit of the yaml event starts none of default/default's runs.
    let (inv, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "invoker", "invoker").await;
    let (s, _) = emit(&r, &inv, "deployed", json!({"message": "x"})).await;
    assert_eq!(s, 404);
    let (s, p) = emit(&r, ADMIN, "unheard", json!({})).await;
    assert_eq!(s, 404);
    assert!(p["detail"].as_str().unwrap().contains("type: event"), "{p}");
}

#[tokio::test]
async fn the_openapi_document_has_the_trigger_routes() {
    let r = start().await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", r.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/v1/triggers", "get"),
        ("/v1/triggers", "post"),
        ("/v1/triggers/{name}", "get"),
        ("/v1/triggers/{name}", "delete"),
        ("/v1/events/{event}", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
}

/// Run the `agentkit` binary against `r` with `key`: exit code, stdout, stderr.
async fn cli(r: &Running, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentkit"))
        .args(args)
        .args(["--server", &r.base, "--key", key])
        .env_remove("AGENTKIT_URL")
        .env_remove("AGENTKIT_API_KEY")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_declares_triggers_and_emits_events() {
    let r = start().await;
    let (dev, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "developer", "developer")
            .await;
    let (inv, _) =
        inproc::workspace_key_and_id(&r.base, ADMIN, "acme", "prod", "invoker", "invoker").await;
    inproc::deploy_scripted(&r.base, &dev, "bot").await;
    let (code, out, err) = cli(
        &r,
        &dev,
        &[
            "triggers",
            "create",
            "on-deploy",
            "--event",
            "deployed",
            "--target",
            "bot",
            "--message",
            "Deployed {/service}",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("trigger on-deploy: event deployed starts bot"),
        "{out}"
    );
    let (code, out, _) = cli(&r, &dev, &["triggers", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("on-deploy") && out.contains("Deployed {/service}"),
        "{out}"
    );
    let (code, out, _) = cli(&r, &dev, &["triggers", "list", "--json"]).await;
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["event"], "deployed");

    let (code, out, err) = cli(
        &r,
        &inv,
        &["events", "emit", "deployed", r#"{"service": "api"}"#],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("event deployed started 1 run(s)") && out.contains("bot"),
        "{out}"
    );
    let keyed = [
        "events",
        "emit",
        "deployed",
        r#"{"service": "db"}"#,
        "--idempotency-key",
        "k-1",
        "--json",
    ];
    let (code, first, err) = cli(&r, &inv, &keyed).await;
    assert_eq!(code, 0, "{err}");
    let (_, again, _) = cli(&r, &inv, &keyed).await;
    let first: Value = serde_json::from_str(&first).unwrap();
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(first["runs"][0]["run_id"], again["runs"][0]["run_id"]);
    let (_, run) = call_as(
        &r.base,
        &inv,
        Method::GET,
        &format!("/v1/runs/{}", first["runs"][0]["run_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(run["input"]["message"], "Deployed db");

    let (code, _, err) = cli(&r, &inv, &["events", "emit", "deployed", "not json"]).await;
    assert_eq!(code, 2, "invalid input: {err}");
    assert!(err.contains("not JSON"), "{err}");
    let (code, _, err) = cli(&r, &inv, &["events", "emit", "unheard"]).await;
    assert_eq!(code, 3, "not found: {err}");
    assert!(err.contains("agentkit triggers create"), "{err}");
    let (code, _, _) = cli(&r, &inv, &["triggers", "list"]).await;
    assert_eq!(code, 5, "an invoker key may not manage triggers");
    let (code, out, _) = cli(&r, &dev, &["triggers", "delete", "on-deploy"]).await;
    assert_eq!((code, out.trim()), (0, "deleted trigger on-deploy"));
    let (code, _, err) = cli(&r, &dev, &["triggers", "delete", "on-deploy"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no trigger `on-deploy`"), "{err}");
}
