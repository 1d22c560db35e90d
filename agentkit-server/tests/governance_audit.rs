//! Every change made through the API lands in the workspace's hash-chained audit log, over
//! real HTTP on SQLite: workspaces, keys (created, revoked), vault secrets, workspace
//! webhooks (created, rotated, deleted), agents (deployed, labels moved, promoted, rolled
//! back), schedules and LangGraph crons. Each entry names who (the key, or `admin`), what
//! (the action and the resource) and when, and is readable the moment the change's answer
//! arrives (the answer waits for the entry to be stored). No secret (an API key, a webhook
//! secret, a vault value) is in the export.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use agentkit_server::vault::MasterKey;
use inproc::call_as;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "audit-admin-key";

/// The last audit entry of `acme/prod`, read at once (no waiting).
async fn last_entry(base: &str) -> Value {
    let entries = inproc::audit_entries(base, ADMIN, "?workspace=acme/prod&limit=10000").await;
    entries.last().cloned().unwrap()
}

/// The last entry is the change `action` of `resource`, made by `actor` (and key `key_id`).
async fn assert_last(
    base: &str,
    action: &str,
    resource: &str,
    actor: &str,
    key_id: Option<&str>,
) -> Value {
    let e = last_entry(base).await;
    let ev = &e["event"];
    assert_eq!(ev["outcome"], "changed", "{e}");
    assert_eq!(ev["tool"], action, "{e}");
    assert_eq!(ev["call_id"], resource, "{e}");
    assert_eq!(ev["actor"], actor, "{e}");
    assert_eq!(ev["tenant"], "acme", "{e}");
    assert_eq!(ev["workspace"], "prod", "{e}");
    assert_eq!(ev["key_id"].as_str(), key_id, "{e}");
    let at = ev["at_ms"].as_i64().unwrap();
    let now = agentkit_runtime::model::now_ms();
    assert!(now - at < 60_000 && at <= now, "when: {e}");
    ev.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_through_the_api_is_in_the_audit_log_before_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::declarative(dir.path(), ADMIN)
        .await
        .master_key(MasterKey::generate().unwrap())
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let mut secrets: Vec<String> = Vec::new();

    // Workspaces and keys, by the server's admin key.
    let (s, b) = call_as(
        &base,
        ADMIN,
        Method::POST,
        "/v1/workspaces",
        Some(json!({"org": "acme", "workspace": "prod"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_last(&base, "workspaces.create", "acme/prod", "admin", None).await;
    let (s, b) = call_as(
        &base,
        ADMIN,
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "dev", "role": "admin", "workspace": "acme/prod"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let dev = b["key"].as_str().unwrap().to_owned();
    let dev_id = b["id"].as_str().unwrap().to_owned();
    secrets.push(dev.clone());
    let ev = assert_last(&base, "keys.create", &dev_id, "admin", None).await;
    assert_eq!(ev["arguments"]["role"], "admin", "{ev}");
    assert_eq!(ev["arguments"]["name"], "dev", "{ev}");

    // A key of the workspace creates another and revokes it.
    let (s, b) = call_as(
        &base,
        &dev,
        Method::POST,
        "/v1/keys",
        Some(json!({"name": "temp", "role": "viewer"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let temp_id = b["id"].as_str().unwrap().to_owned();
    secrets.push(b["key"].as_str().unwrap().to_owned());
    assert_last(&base, "keys.create", &temp_id, &dev_id, Some(&dev_id)).await;
    let (s, b) = call_as(
        &base,
        &dev,
        Method::DELETE,
        &format!("/v1/keys/{temp_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_last(&base, "keys.revoke", &temp_id, &dev_id, Some(&dev_id)).await;

    // Vault secrets: the name, never the value.
    let value = "vault-value-4f1d9a7c2e";
    secrets.push(value.to_owned());
    let (s, b) = call_as(
        &base,
        &dev,
        Method::PUT,
        "/v1/secrets/crm_token",
        Some(json!({"value": value})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_last(&base, "secrets.set", "crm_token", &dev_id, Some(&dev_id)).await;
    let (s, b) = call_as(&base, &dev, Method::DELETE, "/v1/secrets/crm_token", None).await;
    assert_eq!(s, 204, "{b}");
    assert_last(&base, "secrets.delete", "crm_token", &dev_id, Some(&dev_id)).await;

    // Agents: deployed, labelled, promoted, rolled back.
    for instructions in ["Repeat.", "Repeat twice."] {
        let (s, b) = call_as(
            &base,
            &dev,
            Method::POST,
            "/v1/agents",
            Some(json!({"name": "triage", "kind": "agent",
                        "spec": {"model": "scripted", "instructions": instructions}})),
        )
        .await;
        assert!(s == 201 || s == 200, "{s} {b}");
        assert_last(&base, "agents.deploy", "triage", &dev_id, Some(&dev_id)).await;
    }
    for (label, version) in [("stage", 1), ("stage", 2)] {
        let (s, b) = call_as(
            &base,
            &dev,
            Method::PUT,
            &format!("/v1/agents/triage/labels/{label}"),
            Some(json!({"version": version})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let ev = assert_last(&base, "agents.set_label", "triage", &dev_id, Some(&dev_id)).await;
        assert_eq!(ev["arguments"]["labels"][label], version, "{ev}");
    }
    let (s, b) = call_as(
        &base,
        &dev,
        Method::POST,
        "/v1/agents/triage/promote",
        Some(json!({"from": "stage", "to": "prod"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ev = assert_last(&base, "agents.promote", "triage", &dev_id, Some(&dev_id)).await;
    assert_eq!(ev["arguments"]["labels"]["prod"], 2, "{ev}");
    let (s, b) = call_as(
        &base,
        &dev,
        Method::POST,
        "/v1/agents/triage/rollback",
        Some(json!({"label": "stage"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ev = assert_last(&base, "agents.rollback", "triage", &dev_id, Some(&dev_id)).await;
    assert_eq!(ev["arguments"]["labels"]["stage"], 1, "{ev}");

    // Workspace webhooks: created, rotated, deleted; never their secrets.
    let (s, b) = call_as(
        &base,
        &dev,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "github", "target": "triage"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    secrets.push(b["secret"].as_str().unwrap().to_owned());
    let ev = assert_last(&base, "webhooks.create", "github", &dev_id, Some(&dev_id)).await;
    assert_eq!(ev["arguments"]["target"], "triage", "{ev}");
    let (s, b) = call_as(
        &base,
        &dev,
        Method::POST,
        "/v1/webhooks/github/rotate",
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    secrets.push(b["secret"].as_str().unwrap().to_owned());
    assert_last(&base, "webhooks.rotate", "github", &dev_id, Some(&dev_id)).await;
    let (s, b) = call_as(&base, &dev, Method::DELETE, "/v1/webhooks/github", None).await;
    assert_eq!(s, 204, "{b}");
    assert_last(&base, "webhooks.delete", "github", &dev_id, Some(&dev_id)).await;

    // Schedules: created, paused, resumed, deleted.
    let (s, b) = call_as(
        &base,
        &dev,
        Method::POST,
        "/v1/schedules",
        Some(json!({"name": "hourly", "target": "triage", "every": "1h"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_last(&base, "schedules.create", "hourly", &dev_id, Some(&dev_id)).await;
    for verb in ["pause", "resume"] {
        let (s, b) = call_as(
            &base,
            &dev,
            Method::POST,
            &format!("/v1/schedules/hourly/{verb}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_last(
            &base,
            &format!("schedules.{verb}"),
            "hourly",
            &dev_id,
            Some(&dev_id),
        )
        .await;
    }
    let (s, b) = call_as(&base, &dev, Method::DELETE, "/v1/schedules/hourly", None).await;
    assert_eq!(s, 204, "{b}");
    assert_last(&base, "schedules.delete", "hourly", &dev_id, Some(&dev_id)).await;

    // LangGraph crons: created, changed, deleted.
    let (s, b) = call_as(
        &base,
        &dev,
        Method::POST,
        "/runs/crons",
        Some(json!({"assistant_id": "triage", "schedule": "0 9 * * *",
                    "input": {"messages": [{"role": "user", "content": "hi"}]}})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let cron = b["cron_id"].as_str().unwrap().to_owned();
    let ev = assert_last(&base, "crons.create", &cron, &dev_id, Some(&dev_id)).await;
    assert_eq!(ev["arguments"]["assistant_id"], "triage", "{ev}");
    let (s, b) = call_as(
        &base,
        &dev,
        Method::PATCH,
        &format!("/runs/crons/{cron}"),
        Some(json!({"schedule": "0 10 * * *"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let ev = assert_last(&base, "crons.update", &cron, &dev_id, Some(&dev_id)).await;
    assert_eq!(ev["arguments"]["schedule"], "0 10 * * *", "{ev}");
    let (s, b) = call_as(
        &base,
        &dev,
        Method::DELETE,
        &format!("/runs/crons/{cron}"),
        None,
    )
    .await;
    assert_eq!(s, 204, "{b}");
    assert_last(&base, "crons.delete", &cron, &dev_id, Some(&dev_id)).await;

    // A refused change is not recorded as made.
    let before = last_entry(&base).await["seq"].clone();
    let (s, _) = call_as(&base, &dev, Method::DELETE, "/v1/webhooks/nope", None).await;
    assert_eq!(s, 404);
    assert_eq!(last_entry(&base).await["seq"], before);

    // The export holds no secret, and the chain verifies.
    let (csv, entries) = inproc::audit_exports(&base, ADMIN, "acme/prod").await;
    let json_export = Value::Array(entries).to_string();
    assert!(
        csv.contains(",changed,") && csv.contains("webhooks.rotate"),
        "{csv}"
    );
    for secret in &secrets {
        assert!(
            !csv.contains(secret.as_str()),
            "a secret is in the CSV export: {csv}"
        );
        assert!(
            !json_export.contains(secret.as_str()),
            "a secret is in the JSON export"
        );
    }
    inproc::assert_audit_verifies(&base, ADMIN, "acme/prod").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_role_is_in_the_audit_log_before_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::declarative(dir.path(), ADMIN)
        .await
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let (viewer, viewer_id) =
        inproc::workspace_key_and_id(&base, ADMIN, "acme", "prod", "viewer", "watcher").await;
    // A viewer may read, but not deploy or decide: each refusal is an entry of its workspace.
    let (s, p) = call_as(
        &base,
        &viewer,
        Method::POST,
        "/v1/agents",
        Some(json!({"name": "x", "kind": "agent", "spec": {}})),
    )
    .await;
    assert_eq!(s, 403, "{p}");
    let e = last_entry(&base).await;
    let ev = &e["event"];
    assert_eq!(ev["outcome"], "denied", "{e}");
    assert_eq!(ev["tool"], "http.forbidden", "{e}");
    assert_eq!(ev["call_id"], "POST /v1/agents", "{e}");
    assert_eq!(ev["key_id"].as_str(), Some(viewer_id.as_str()), "{e}");
    assert_eq!(
        ev["arguments"],
        json!({"needed": "developer", "role": "viewer"}),
        "{e}"
    );
    let (s, _) = call_as(
        &base,
        &viewer,
        Method::POST,
        "/v1/runs/nope/cancel",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 403);
    let e = last_entry(&base).await;
    assert_eq!(
        e["event"]["call_id"], "POST /v1/runs/{run_id}/cancel",
        "{e}"
    );
    // What it may do leaves no entry.
    let before = inproc::audit_entries(&base, ADMIN, "?workspace=acme/prod&limit=10000")
        .await
        .len();
    let (s, _) = call_as(&base, &viewer, Method::GET, "/v1/agents", None).await;
    assert_eq!(s, 200);
    let after = inproc::audit_entries(&base, ADMIN, "?workspace=acme/prod&limit=10000")
        .await
        .len();
    assert_eq!(before, after);
    inproc::assert_audit_verifies(&base, ADMIN, "acme/prod").await;
}
