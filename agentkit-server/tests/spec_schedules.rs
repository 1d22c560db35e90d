//! Schedules declared in an agent's spec follow its versions: deploy, promote, rollback and
//! a changed or removed schedule, over real HTTP, on SQLite and on PostgreSQL (two servers
//! on one database converge on the same schedules and fire once).
//!
//! Fires are not waited for: each schedule that should fire catches up the last hour
//! (`every: 1h`, `catch_up: {within: 1h}`), so the fire of the last full hour is due the
//! moment it is registered and `fire_due` (or the server's own scheduler tick) starts it;
//! "trigger now" fires the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::sync::Arc;
use std::time::Duration;

use agentkit_runtime::Store;
use agentkit_server::Server;
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "spec-schedules-admin";

/// A server on `store` running declarative specs on the offline models.
async fn server(store: Arc<dyn Store>) -> Server {
    builder(store).build().await.unwrap()
}

fn builder(store: Arc<dyn Store>) -> agentkit_server::ServerBuilder {
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), ModelFactory::offline());
    Server::builder(store)
        .admin_key(ADMIN)
        .spec_builder(Arc::new(builder))
        .poll_interval(Duration::from_millis(50))
}

async fn call(
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    inproc::call_as(base, key, method, path, body).await
}

/// Deploy agent `support` with `schedules` (as `key`); the version.
async fn deploy(base: &str, key: &str, instructions: &str, schedules: Value) -> u64 {
    let body = json!({"name": "support", "kind": "agent", "spec": {
        "model": "scripted", "instructions": instructions, "schedules": schedules}});
    let (s, b) = call(base, key, Method::POST, "/v1/agents", Some(body)).await;
    assert_eq!(s, 201, "{b}");
    b["version"].as_u64().unwrap()
}

async fn promote(base: &str) {
    let body = json!({"from": "latest", "to": "prod"});
    let (s, b) = call(
        base,
        ADMIN,
        Method::POST,
        "/v1/agents/support/promote",
        Some(body),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// The schedules `key` lists, by name.
async fn listed(base: &str, key: &str) -> Vec<Value> {
    let (s, b) = call(base, key, Method::GET, "/v1/schedules", None).await;
    assert_eq!(s, 200, "{b}");
    b.as_array().unwrap().clone()
}

fn names(list: &[Value]) -> Vec<&str> {
    list.iter().map(|v| v["name"].as_str().unwrap()).collect()
}

async fn schedule(base: &str, key: &str, name: &str) -> (u16, Value) {
    call(
        base,
        key,
        Method::GET,
        &format!("/v1/schedules/{name}"),
        None,
    )
    .await
}

/// The runs of the schedule's history: (scheduled, not manual) and the version each ran.
async fn history(base: &str, name: &str) -> Vec<(bool, u64)> {
    let path = format!("/v1/schedules/{name}/history");
    let (s, b) = call(base, ADMIN, Method::GET, &path, None).await;
    assert_eq!(s, 200, "{b}");
    b.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                !r["manual"].as_bool().unwrap(),
                r["run"]["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Trigger `name` now as `key`: the version its run runs.
async fn trigger(base: &str, key: &str, name: &str) -> Value {
    let path = format!("/v1/schedules/{name}/trigger");
    let (s, b) = call(base, key, Method::POST, &path, None).await;
    assert_eq!(s, 202, "{b}");
    b
}

fn hourly_catching_up(message: &str) -> Value {
    json!({"every": "1h", "catch_up": {"within": "1h"}, "input": {"message": message}})
}

/// The whole life of a spec's schedules on one server over `store`.
async fn lifecycle(store: Arc<dyn Store>) {
    let server = server(store).await;
    let served = inproc::serve(server.clone()).await;
    let base = served.base.as_str();
    let fire_due = || async { server.platform().runtime().fire_due().await };

    // v1 declares two schedules; with no `prod` label, `latest` drives them.
    let v1 = json!({
        "nightly": hourly_catching_up("nightly report"),
        "cleanup": {"cron": "0 4 * * *", "timezone": "Europe/Lisbon"},
    });
    assert_eq!(deploy(base, ADMIN, "v1", v1.clone()).await, 1);
    let list = listed(base, ADMIN).await;
    assert_eq!(
        names(&list),
        ["support.cleanup", "support.nightly"],
        "{list:?}"
    );
    assert_eq!(list[1]["source"], "spec");
    assert_eq!(list[1]["target"], "support");
    assert_eq!(
        list[1]["owner"],
        json!({"agent": "support", "version": 1, "label": "latest", "schedule": "nightly"})
    );

    // Promoted to prod: prod drives them now; the due fire runs v1.
    promote(base).await;
    fire_due().await;
    assert_eq!(history(base, "support.nightly").await, [(true, 1)]);
    let (_, nightly) = schedule(base, ADMIN, "support.nightly").await;
    assert_eq!(nightly["owner"]["label"], "prod");

    // v2 changes `nightly`, drops `cleanup`, adds `weekly`: a new version that diff shows,
    // and nothing changes while prod stays at v1.
    let v2 = json!({
        "nightly": {"cron": "30 2 * * *", "timezone": "UTC", "input": {"message": "nightly v2"}},
        "weekly": {"cron": "0 9 * * 1"},
    });
    assert_eq!(deploy(base, ADMIN, "v1", v2).await, 2);
    let (s, diff) = call(
        base,
        ADMIN,
        Method::GET,
        "/v1/agents/support/diff?from=1&to=2",
        None,
    )
    .await;
    assert_eq!(s, 200, "{diff}");
    let paths: Vec<&str> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/spec/schedules/cleanup"), "{paths:?}");
    assert!(paths.contains(&"/spec/schedules/nightly/cron"), "{paths:?}");
    assert!(paths.contains(&"/spec/schedules/weekly"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.starts_with("/spec/instructions")),
        "{paths:?}"
    );
    assert_eq!(
        names(&listed(base, ADMIN).await),
        ["support.cleanup", "support.nightly"]
    );
    assert_eq!(trigger(base, ADMIN, "support.nightly").await["version"], 1);

    // Promoted: v2's schedules are the live ones, pinned to v2; `cleanup` stops.
    promote(base).await;
    let list = listed(base, ADMIN).await;
    assert_eq!(
        names(&list),
        ["support.nightly", "support.weekly"],
        "{list:?}"
    );
    assert_eq!(
        list[0]["trigger"],
        json!({"kind": "cron", "cron": "30 2 * * *", "timezone": "UTC"})
    );
    assert_eq!(list[0]["owner"]["version"], 2);
    let run = trigger(base, ADMIN, "support.nightly").await;
    assert_eq!(run["version"], 2, "{run}");
    assert_eq!(run["input"]["message"], "nightly v2");
    assert_eq!(schedule(base, ADMIN, "support.cleanup").await.0, 404);
    let (s, _) = call(
        base,
        ADMIN,
        Method::POST,
        "/v1/schedules/support.cleanup/trigger",
        None,
    )
    .await;
    assert_eq!(s, 404, "a removed schedule cannot fire");
    assert!(
        server
            .platform()
            .runtime()
            .schedule("support.cleanup")
            .is_err()
    );

    // Rolled back: v1's schedules again, `nightly` keeps its history and does not fire the
    // hour it fired already a second time.
    let body = json!({"label": "prod"});
    let (s, b) = call(
        base,
        ADMIN,
        Method::POST,
        "/v1/agents/support/rollback",
        Some(body),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let list = listed(base, ADMIN).await;
    assert_eq!(
        names(&list),
        ["support.cleanup", "support.nightly"],
        "{list:?}"
    );
    assert_eq!(
        list[1]["trigger"],
        json!({"kind": "every", "every_ms": 3_600_000})
    );
    assert_eq!(list[1]["owner"]["version"], 1);
    fire_due().await;
    assert_eq!(
        history(base, "support.nightly").await,
        [(false, 2), (false, 1), (true, 1)],
        "newest first: one scheduled fire, the manual ones on the version live then"
    );
    assert_eq!(trigger(base, ADMIN, "support.cleanup").await["version"], 1);

    // A spec's schedule is changed by deploying: not deleted or created over /v1/schedules.
    let (s, p) = call(
        base,
        ADMIN,
        Method::DELETE,
        "/v1/schedules/support.nightly",
        None,
    )
    .await;
    assert_eq!(s, 409, "{p}");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("declared in the spec of `support`"),
        "{detail}"
    );
    assert!(detail.contains("deploy a new version"), "{detail}");
    let body = json!({"name": "support.nightly", "target": "support", "every": "1h"});
    let (s, p) = call(base, ADMIN, Method::POST, "/v1/schedules", Some(body)).await;
    assert_eq!(s, 400, "{p}");
    assert_eq!(
        schedule(base, ADMIN, "support.nightly").await.1["owner"]["version"],
        1
    );
    // Pause and resume are fine.
    let (s, b) = call(
        base,
        ADMIN,
        Method::POST,
        "/v1/schedules/support.nightly/pause",
        None,
    )
    .await;
    assert_eq!((s, &b["paused"]), (200, &json!(true)), "{b}");
    let (s, b) = call(
        base,
        ADMIN,
        Method::POST,
        "/v1/schedules/support.nightly/resume",
        None,
    )
    .await;
    assert_eq!((s, &b["paused"]), (200, &json!(false)), "{b}");

    // A bad schedule in a spec is refused, located, and nothing is stored.
    for (schedules, at) in [
        (
            json!({"nightly": {"cron": "61 * * * *"}}),
            "schedules.nightly.cron",
        ),
        (
            json!({"nightly": {"every": "1h", "target": "billing"}}),
            "schedules.nightly.target",
        ),
        (
            json!({"nightly": {"every": "1h", "at": "2030-01-01T00:00:00Z"}}),
            "schedules.nightly.at",
        ),
    ] {
        let body = json!({"name": "support", "kind": "agent", "spec": {
            "model": "scripted", "instructions": "bad", "schedules": schedules}});
        let (s, p) = call(base, ADMIN, Method::POST, "/v1/agents", Some(body)).await;
        assert_eq!(s, 400, "{p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("at `{at}`")),
            "{p}"
        );
    }
    let (_, entry) = call(base, ADMIN, Method::GET, "/v1/agents/support", None).await;
    assert_eq!(entry["latest"], 2, "{entry}");

    // Workspaces: `acme/ops` deploys its own `support` with a `nightly`; each workspace sees
    // and fires its own, and another workspace sees none.
    let ops = inproc::workspace_key(base, ADMIN, "acme", "ops", "developer", "dev").await;
    let other = inproc::workspace_key(base, ADMIN, "acme", "other", "admin", "adm").await;
    assert_eq!(
        deploy(
            base,
            &ops,
            "ops v1",
            json!({"nightly": {"every": "1d", "input": {"message": "ops"}}})
        )
        .await,
        1
    );
    let list = listed(base, &ops).await;
    assert_eq!(names(&list), ["support.nightly"], "{list:?}");
    assert_eq!(list[0]["target"], "support");
    assert_eq!(list[0]["owner"]["agent"], "support");
    assert_eq!(list[0]["input"]["message"], "ops");
    let run = trigger(base, &ops, "support.nightly").await;
    assert_eq!(run["agent"], "support", "{run}");
    assert_eq!(run["input"]["principal"]["workspace"], "ops", "{run}");
    let (s, _) = call(
        base,
        &ops,
        Method::DELETE,
        "/v1/schedules/support.nightly",
        None,
    )
    .await;
    assert_eq!(s, 409);
    assert_eq!(
        names(&listed(base, ADMIN).await),
        ["support.cleanup", "support.nightly"]
    );
    assert_eq!(
        schedule(base, ADMIN, "support.nightly").await.1["input"]["message"],
        "nightly report"
    );
    assert!(listed(base, &other).await.is_empty());
    for path in [
        "/v1/schedules/support.nightly",
        "/v1/schedules/acme~ops~support.nightly",
    ] {
        let (s, _) = call(base, &other, Method::GET, path, None).await;
        assert_eq!(s, 404, "{path}");
        let (s, _) = call(base, &other, Method::POST, &format!("{path}/trigger"), None).await;
        assert_eq!(s, 404, "{path}");
    }
    let (s, _) = call(
        base,
        ADMIN,
        Method::GET,
        "/v1/schedules/acme~ops~support.nightly",
        None,
    )
    .await;
    assert_eq!(s, 404, "the default workspace names only its own schedules");

    // The OpenAPI document describes the owner.
    let (s, doc) = call(base, ADMIN, Method::GET, "/openapi.json", None).await;
    assert_eq!(s, 200);
    let schemas = &doc["components"]["schemas"];
    let owner = &schemas["ScheduleOwner"];
    assert!(owner["properties"]["version"].is_object(), "{owner}");
    assert!(schemas["ScheduleView"]["properties"]["owner"].is_object());
}

/// Move `label` of `support` to `version`.
async fn set_label(base: &str, label: &str, version: u64) {
    let path = format!("/v1/agents/support/labels/{label}");
    let body = json!({ "version": version });
    let (s, b) = call(base, ADMIN, Method::PUT, &path, Some(body)).await;
    assert_eq!(s, 200, "{b}");
}

/// The version and label that own `support.nightly`.
async fn nightly_owner(base: &str) -> (u64, String) {
    let (s, b) = schedule(base, ADMIN, "support.nightly").await;
    assert_eq!(s, 200, "{b}");
    let owner = &b["owner"];
    (
        owner["version"].as_u64().unwrap(),
        owner["label"].as_str().unwrap().to_owned(),
    )
}

/// With `schedules_label("live")`, `live` drives a spec's schedules and `prod` is an
/// ordinary label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_schedules_label_drives_the_specs_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let server = builder(store)
        .schedules_label("live")
        .build()
        .await
        .unwrap();
    assert_eq!(server.platform().schedules_label(), "live");
    let served = inproc::serve(server.clone()).await;
    let base = served.base.as_str();

    let nightly = |m: &str| json!({"nightly": {"every": "1d", "input": {"message": m}}});
    assert_eq!(deploy(base, ADMIN, "v1", nightly("v1")).await, 1);
    assert_eq!(nightly_owner(base).await, (1, "latest".to_owned()));
    set_label(base, "live", 1).await;
    assert_eq!(nightly_owner(base).await, (1, "live".to_owned()));

    // v2 deployed and promoted to prod: `live` still points at v1, so v1's schedule stays.
    assert_eq!(deploy(base, ADMIN, "v2", nightly("v2")).await, 2);
    promote(base).await;
    assert_eq!(nightly_owner(base).await, (1, "live".to_owned()));
    assert_eq!(trigger(base, ADMIN, "support.nightly").await["version"], 1);

    // `live` moved to v2: v2's schedule, pinned to v2.
    set_label(base, "live", 2).await;
    assert_eq!(nightly_owner(base).await, (2, "live".to_owned()));
    let run = trigger(base, ADMIN, "support.nightly").await;
    assert_eq!(
        (&run["version"], &run["input"]["message"]),
        (&json!(2), &json!("v2")),
        "{run}"
    );

    // A label that is not a name is refused when the server is built.
    let dir = tempfile::tempdir().unwrap();
    let err = builder(inproc::sqlite(dir.path()).await)
        .schedules_label("live now")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("schedules label `live now` is not a valid name"),
        "{err}"
    );
}

/// `server.schedules_label` in `agentkit.yaml`: set on the server, and located when bad.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedules_label_is_configured_from_agentkit_yaml() {
    let yaml = |label: &str| format!("server:\n  bind: 127.0.0.1:0\n  schedules_label: {label}\n");
    let dir = tempfile::tempdir().unwrap();
    let config =
        agentkit_core::Config::from_yaml_str_with_env(&yaml("live"), None, &|_| None).unwrap();
    let (b, _) = agentkit_server::spec::server_builder(
        Server::builder(inproc::sqlite(dir.path()).await).admin_key(ADMIN),
        &config,
    )
    .unwrap();
    assert_eq!(
        b.build().await.unwrap().platform().schedules_label(),
        "live"
    );

    let err = agentkit_core::Config::from_yaml_str_with_env(&yaml("'live/now'"), None, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at `server.schedules_label`: expected a label name"),
        "{err}"
    );
    assert!(err.contains("found `live/now` (line 3, column"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_specs_schedules_follow_its_versions_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    lifecycle(inproc::sqlite(dir.path()).await).await;
}

#[cfg(feature = "postgres")]
#[path = "../../agentkit-runtime/tests/common/pg.rs"]
#[allow(unreachable_pub, dead_code)]
mod pg;

#[cfg(feature = "postgres")]
async fn postgres(url: &str) -> Arc<dyn Store> {
    Arc::new(agentkit_runtime::PostgresStore::connect(url).await.unwrap())
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_specs_schedules_follow_its_versions_on_postgres() {
    let pg = pg::Pg::start();
    lifecycle(postgres(&pg.url).await).await;
}

/// Two servers on one PostgreSQL: labels moved through A apply on B at its next sync (or
/// start), both fire the due hour once between them, and a restarted node registers the
/// schedules of the version prod points at.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgres_converge_on_the_prod_versions_schedules_and_fire_once() {
    let pg = pg::Pg::start();
    let a = server(postgres(&pg.url).await).await;
    let b = server(postgres(&pg.url).await).await;
    let served = inproc::serve(a.clone()).await;
    let on_b = inproc::serve(b.clone()).await;
    let (base, base_b) = (served.base.as_str(), on_b.base.as_str());

    deploy(
        base,
        ADMIN,
        "v1",
        json!({"nightly": hourly_catching_up("v1")}),
    )
    .await;
    promote(base).await;
    deploy(
        base,
        ADMIN,
        "v2",
        json!({"hourly": hourly_catching_up("v2")}),
    )
    .await;
    // B learns of prod's version from the registry alone.
    b.platform().sync_owned_schedules().await.unwrap();
    for on in [base, base_b] {
        let list = listed(on, ADMIN).await;
        assert_eq!(names(&list), ["support.nightly"], "{list:?}");
        assert_eq!(list[0]["owner"]["version"], 1);
    }
    // Both fire the due hour: one run.
    tokio::join!(
        a.platform().runtime().fire_due(),
        b.platform().runtime().fire_due()
    );
    assert_eq!(history(base_b, "support.nightly").await, [(true, 1)]);

    // Promoted through A: B follows at its sync; a second sync changes nothing.
    promote(base).await;
    assert!(b.platform().sync_owned_schedules().await.unwrap() > 0);
    assert_eq!(
        b.platform().sync_owned_schedules().await.unwrap(),
        0,
        "idempotent"
    );
    for on in [base, base_b] {
        let list = listed(on, ADMIN).await;
        assert_eq!(names(&list), ["support.hourly"], "{list:?}");
        assert_eq!(list[0]["owner"]["version"], 2);
    }
    tokio::join!(
        a.platform().runtime().fire_due(),
        b.platform().runtime().fire_due()
    );
    assert_eq!(history(base, "support.hourly").await, [(true, 2)]);
    assert_eq!(trigger(base_b, ADMIN, "support.hourly").await["version"], 2);

    // Rolled back through B; a node that starts now registers v1's at start.
    let (s, body) = call(
        base_b,
        ADMIN,
        Method::POST,
        "/v1/agents/support/rollback",
        Some(json!({"label": "prod"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    drop(served);
    drop(a);
    let c = server(postgres(&pg.url).await).await;
    let on_c = inproc::serve(c.clone()).await;
    for on in [base_b, on_c.base.as_str()] {
        let list = listed(on, ADMIN).await;
        assert_eq!(names(&list), ["support.nightly"], "{list:?}");
        assert_eq!(list[0]["owner"]["version"], 1);
    }
    // Its due hour fired already (through A or B): not again.
    c.platform().runtime().fire_due().await;
    assert_eq!(history(base_b, "support.nightly").await, [(true, 1)]);
}
