//! Webhooks declared per workspace over real HTTP on SQLite: a developer key creates, lists,
//! reads, rotates and deletes its workspace's hooks; the secret is shown once and is not in
//! the database file; signed deliveries to `/v1/hooks/{org}/{workspace}/{name}` start runs in
//! that workspace as `webhook:<name>`; replays, wrong secrets and unknown hooks are refused
//! alike; another workspace sees none of it; `agentkit.yaml` hooks keep working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use inproc::call_as;
use std::sync::Arc;

use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::Server;
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use agentkit_server::vault::MasterKey;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "hooks-admin-key";

struct Running {
    base: String,
    dir: tempfile::TempDir,
    server: Server,
    _served: inproc::InProcess,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::declarative(dir.path(), ADMIN)
        .await
        .master_key(MasterKey::generate().unwrap())
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server.clone()).await;
    Running {
        base: served.base.clone(),
        dir,
        server,
        _served: served,
    }
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn now_secs() -> i64 {
    agentkit_runtime::model::now_ms() / 1000
}

fn signed(secret: &str, body: &str) -> Vec<(&'static str, String)> {
    let ts = now_secs();
    vec![
        ("x-agentkit-timestamp", ts.to_string()),
        (
            "x-agentkit-signature",
            hmac_hex(secret, &[ts.to_string().as_bytes(), b".", body.as_bytes()]),
        ),
    ]
}

/// POST `body` to `path` with `headers` and no API key.
async fn deliver(r: &Running, path: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", r.base))
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_workspace_declares_signed_webhooks_that_start_its_own_runs() {
    let r = start().await;
    let dev = inproc::workspace_key(&r.base, ADMIN, "acme", "prod", "developer", "k").await;
    inproc::deploy_scripted(&r.base, &dev, "triage").await;

    // Created with a generated secret, shown once.
    let (s, hook) = call_as(
        &r.base,
        &dev,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "issues", "target": "triage", "message_pointer": "/issue/title"})),
    )
    .await;
    assert_eq!(s, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64, "256 bits as hex: {secret}");
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(hook["url"], "/v1/hooks/acme/prod/issues");
    assert_eq!(hook["target"], "triage");
    assert!(hook["created_by"].is_string(), "{hook}");

    // Listed and read without the secret.
    let (s, list) = call_as(&r.base, &dev, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "issues");
    assert!(!list.to_string().contains(&secret), "{list}");
    let (s, one) = call_as(&r.base, &dev, Method::GET, "/v1/webhooks/issues", None).await;
    assert_eq!(
        (s, &one["message_pointer"]),
        (200, &json!("/issue/title")),
        "{one}"
    );
    assert!(one.get("secret").is_none());

    // The same name again: 409. A target that is not deployed here: 400. A bad name: 400.
    let (s, p) = call_as(
        &r.base,
        &dev,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "issues", "target": "triage"})),
    )
    .await;
    assert_eq!(s, 409, "{p}");
    let (s, p) = call_as(
        &r.base,
        &dev,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "x", "target": "nope"})),
    )
    .await;
    assert_eq!(s, 400, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("deploy it in this workspace"),
        "{p}"
    );
    let (s, _) = call_as(
        &r.base,
        &dev,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "a/b", "target": "triage"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call_as(
        &r.base,
        &dev,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "p", "target": "triage", "message_pointer": "issue"})),
    )
    .await;
    assert_eq!(s, 400);

    // A signed delivery starts a run of the workspace's agent, as the hook, in the workspace.
    let body = r#"{"issue": {"title": "Login is broken"}}"#;
    let headers = signed(&secret, body);
    let (s, run) = deliver(&r, "/v1/hooks/acme/prod/issues", body, &headers).await;
    assert_eq!(s, 202, "{run}");
    assert_eq!(run["agent"], "triage", "the workspace's own name: {run}");
    let principal = &run["input"]["principal"];
    assert_eq!(
        (
            principal["tenant"].as_str(),
            principal["workspace"].as_str()
        ),
        (Some("acme"), Some("prod")),
        "{run}"
    );
    assert_eq!(principal["key_id"], "webhook:issues", "{run}");
    assert_eq!(principal["roles"], json!(["invoker"]), "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let done = r.server.platform().wait(&run_id).await.unwrap();
    assert!(
        done.output.unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("Login is broken")
    );
    // The workspace sees the run; the default workspace does not.
    let (s, _) = call_as(
        &r.base,
        &dev,
        Method::GET,
        &format!("/v1/runs/{run_id}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call_as(
        &r.base,
        ADMIN,
        Method::GET,
        &format!("/v1/runs/{run_id}"),
        None,
    )
    .await;
    assert_eq!(s, 404, "a run of acme/prod is not default/default's");

    // The same delivery again: a replay (409).
    let (s, p) = deliver(&r, "/v1/hooks/acme/prod/issues", body, &headers).await;
    assert_eq!(s, 409, "{p}");
    // A wrong secret and an unknown hook are refused alike (401, same words).
    let (s, wrong) = deliver(
        &r,
        "/v1/hooks/acme/prod/issues",
        body,
        &signed("0".repeat(64).as_str(), body),
    )
    .await;
    assert_eq!(s, 401, "{wrong}");
    let (s, unknown) = deliver(&r, "/v1/hooks/acme/prod/nope", body, &signed(&secret, body)).await;
    assert_eq!(s, 401, "{unknown}");
    assert_eq!(wrong["detail"], unknown["detail"]);
    let (s, other_ws) = deliver(
        &r,
        "/v1/hooks/acme/dev/issues",
        body,
        &signed(&secret, body),
    )
    .await;
    assert_eq!((s, &other_ws["detail"]), (401, &wrong["detail"]));
    // Unsigned: says how to sign, for known and unknown hooks alike.
    let (s, a) = deliver(&r, "/v1/hooks/acme/prod/issues", body, &[]).await;
    let (t, b) = deliver(&r, "/v1/hooks/acme/prod/nope", body, &[]).await;
    assert_eq!((s, t), (401, 401));
    assert_eq!(a["detail"], b["detail"]);
    assert!(
        a["detail"]
            .as_str()
            .unwrap()
            .contains("X-Agentkit-Signature")
    );
    // A body without the message: 400.
    let (s, p) = deliver(
        &r,
        "/v1/hooks/acme/prod/issues",
        "{}",
        &signed(&secret, "{}"),
    )
    .await;
    assert_eq!(s, 400, "{p}");

    // GitHub's scheme works too.
    let gh = hmac_hex(&secret, &[br#"{"issue": {"title": "From GitHub"}}"#]);
    let (s, run) = deliver(
        &r,
        "/v1/hooks/acme/prod/issues",
        r#"{"issue": {"title": "From GitHub"}}"#,
        &[
            ("x-hub-signature-256", gh),
            ("x-github-delivery", "gh~1".into()),
        ],
    )
    .await;
    assert_eq!(s, 202, "{run}");

    // Rotated: the old secret stops verifying, the new one (shown once) works.
    let (s, rotated) = call_as(
        &r.base,
        &dev,
        Method::POST,
        "/v1/webhooks/issues/rotate",
        None,
    )
    .await;
    assert_eq!(s, 200, "{rotated}");
    let fresh = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(fresh, secret);
    let body = r#"{"issue": {"title": "after rotation"}}"#;
    let (s, _) = deliver(
        &r,
        "/v1/hooks/acme/prod/issues",
        body,
        &signed(&secret, body),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = deliver(
        &r,
        "/v1/hooks/acme/prod/issues",
        body,
        &signed(&fresh, body),
    )
    .await;
    assert_eq!(s, 202);

    // Neither secret is in the database files: it is sealed with the vault.
    for entry in std::fs::read_dir(r.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for s in [&secret, &fresh] {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a hook secret is in the database"
            );
        }
    }

    // Roles: an operator may not see or declare hooks; a viewer neither.
    let op = inproc::workspace_key(&r.base, ADMIN, "acme", "prod", "operator", "k").await;
    let (s, _) = call_as(&r.base, &op, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(s, 403);
    let (s, _) = call_as(
        &r.base,
        &op,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "x", "target": "triage"})),
    )
    .await;
    assert_eq!(s, 403);

    // Deleted: gone from the list, deliveries refused.
    let (s, _) = call_as(&r.base, &dev, Method::DELETE, "/v1/webhooks/issues", None).await;
    assert_eq!(s, 204);
    let (s, _) = call_as(&r.base, &dev, Method::DELETE, "/v1/webhooks/issues", None).await;
    assert_eq!(s, 404);
    let (s, list) = call_as(&r.base, &dev, Method::GET, "/v1/webhooks", None).await;
    assert_eq!((s, list), (200, json!([])));
    let body = r#"{"issue": {"title": "after delete"}}"#;
    let (s, _) = deliver(
        &r,
        "/v1/hooks/acme/prod/issues",
        body,
        &signed(&fresh, body),
    )
    .await;
    assert_eq!(s, 401);

    // The routes are documented.
    let (_, doc) = call_as(&r.base, ADMIN, Method::GET, "/openapi.json", None).await;
    for path in [
        "/v1/webhooks",
        "/v1/webhooks/{name}",
        "/v1/webhooks/{name}/rotate",
        "/v1/hooks/{org}/{workspace}/{name}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} is not in /openapi.json"
        );
    }
}

#[tokio::test]
async fn another_workspace_sees_none_of_a_workspaces_hooks_and_names_do_not_collide() {
    let r = start().await;
    let a = inproc::workspace_key(&r.base, ADMIN, "acme", "prod", "developer", "k").await;
    let b = inproc::workspace_key(&r.base, ADMIN, "beta", "prod", "admin", "k").await;
    inproc::deploy_scripted(&r.base, &a, "bot").await;
    inproc::deploy_scripted(&r.base, &b, "bot").await;
    let (s, ha) = call_as(
        &r.base,
        &a,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "ci", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 201, "{ha}");
    // The same name in another workspace is another hook, with its own URL and secret.
    let (s, hb) = call_as(
        &r.base,
        &b,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "ci", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 201, "{hb}");
    assert_eq!(hb["url"], "/v1/hooks/beta/prod/ci");
    assert_ne!(ha["secret"], hb["secret"]);
    let (s, only) = call_as(
        &r.base,
        &a,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "mine", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 201, "{only}");

    // B sees nothing of A's: not in its list, 404 on get, rotate and delete.
    let (_, list) = call_as(&r.base, &b, Method::GET, "/v1/webhooks", None).await;
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("ci")]);
    assert!(!list.to_string().contains("acme"), "{list}");
    for (m, path) in [
        (Method::GET, "/v1/webhooks/mine"),
        (Method::POST, "/v1/webhooks/mine/rotate"),
        (Method::DELETE, "/v1/webhooks/mine"),
    ] {
        let (s, p) = call_as(&r.base, &b, m.clone(), path, None).await;
        assert_eq!(s, 404, "{m} {path}: {p}");
        assert!(!p.to_string().contains("acme"), "{p}");
    }
    let (s, _) = call_as(
        &r.base,
        &b,
        Method::GET,
        "/v1/webhooks/acme~prod~mine",
        None,
    )
    .await;
    assert_eq!(s, 404, "a stored name does not reach another workspace");
    // A's hook still works after B's attempts.
    let (s, _) = call_as(&r.base, &a, Method::GET, "/v1/webhooks/mine", None).await;
    assert_eq!(s, 200);

    // A delivery signed with A's secret to B's URL starts nothing (401); B's own secret
    // starts a run in B.
    let body = "hello";
    let (s, _) = deliver(
        &r,
        "/v1/hooks/beta/prod/ci",
        body,
        &signed(ha["secret"].as_str().unwrap(), body),
    )
    .await;
    assert_eq!(s, 401);
    let (s, run) = deliver(
        &r,
        "/v1/hooks/beta/prod/ci",
        body,
        &signed(hb["secret"].as_str().unwrap(), body),
    )
    .await;
    assert_eq!(s, 202, "{run}");
    assert_eq!(run["input"]["principal"]["tenant"], "beta", "{run}");
    let (s, _) = call_as(
        &r.base,
        &a,
        Method::GET,
        &format!("/v1/runs/{}", run["run_id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(s, 404, "B's run is not A's");
}

#[tokio::test]
async fn yaml_hooks_keep_their_url_and_default_workspace_hooks_cannot_shadow_them() {
    let dir = tempfile::tempdir().unwrap();
    let echo = agentkit_core::AgentLlm::new(
        agentkit_core::Agent::new("echo", "Repeat."),
        agentkit_core::ScriptedProvider::echo(),
    );
    let server = inproc::declarative(dir.path(), ADMIN)
        .await
        .agent_llm("echo", Arc::new(echo), "Repeats")
        .master_key(MasterKey::generate().unwrap())
        .webhook("deploys", "echo", "yaml-secret", None)
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server.clone()).await;
    let r = Running {
        base: served.base.clone(),
        dir,
        server,
        _served: served,
    };
    let (s, run) = deliver(
        &r,
        "/v1/hooks/deploys",
        "v1.2",
        &signed("yaml-secret", "v1.2"),
    )
    .await;
    assert_eq!(s, 202, "{run}");
    assert_eq!(run["input"]["principal"]["key_id"], "webhook:deploys");
    let (s, p) = call_as(
        &r.base,
        ADMIN,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "deploys", "target": "echo"})),
    )
    .await;
    assert_eq!(s, 409, "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("agentkit.yaml"),
        "{p}"
    );
    // The admin key declares default/default hooks like any workspace.
    let (s, h) = call_as(
        &r.base,
        ADMIN,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "builds", "target": "echo"})),
    )
    .await;
    assert_eq!(s, 201, "{h}");
    assert_eq!(h["url"], "/v1/hooks/default/default/builds");
    let (s, run) = deliver(
        &r,
        "/v1/hooks/default/default/builds",
        "b7",
        &signed(h["secret"].as_str().unwrap(), "b7"),
    )
    .await;
    assert_eq!(s, 202, "{run}");
    assert_eq!(run["agent"], "echo");
}

#[tokio::test]
async fn without_a_master_key_a_webhook_cannot_be_declared_and_the_error_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = inproc::declarative(dir.path(), ADMIN)
        .await
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server.clone()).await;
    let r = Running {
        base: served.base.clone(),
        dir,
        server,
        _served: served,
    };
    inproc::deploy_scripted(&r.base, ADMIN, "bot").await;
    let (s, p) = call_as(
        &r.base,
        ADMIN,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"name": "ci", "target": "bot"})),
    )
    .await;
    assert_eq!(s, 503, "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("AGENTKIT_MASTER_KEY"),
        "{p}"
    );
    let (_, list) = call_as(&r.base, ADMIN, Method::GET, "/v1/webhooks", None).await;
    assert_eq!(list, json!([]), "nothing half-created");
}

/// A server on the SQLite file in `dir` sealing with `key` (and opening with `previous`).
async fn start_on(
    dir: &std::path::Path,
    key: &MasterKey,
    previous: Vec<MasterKey>,
) -> inproc::InProcess {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.join("a.db")).await.unwrap());
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), ModelFactory::offline());
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .spec_builder(Arc::new(builder))
        .master_key(key.clone())
        .previous_master_keys(previous)
        .build()
        .await
        .unwrap();
    inproc::serve(server).await
}

async fn post_signed(base: &str, path: &str, secret: &str, body: &str) -> u16 {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body.to_owned());
    for (k, v) in signed(secret, body) {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn hook_secrets_are_resealed_when_the_master_key_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        MasterKey::generate().unwrap(),
        MasterKey::generate().unwrap(),
    );
    let secret = {
        let served = start_on(dir.path(), &old, Vec::new()).await;
        let r = |m, p: &str, b| {
            let base = served.base.clone();
            let p = p.to_owned();
            async move {
                let mut req = reqwest::Client::new()
                    .request(m, format!("{base}{p}"))
                    .bearer_auth(ADMIN);
                if let Some(b) = b {
                    req = req.json(&b);
                }
                req.send().await.unwrap().json::<Value>().await.unwrap()
            }
        };
        r(Method::POST, "/v1/agents", Some(json!({"name": "bot", "kind": "agent", "spec": {"model": "scripted", "instructions": "Repeat."}}))).await;
        let h = r(
            Method::POST,
            "/v1/webhooks",
            Some(json!({"name": "ci", "target": "bot"})),
        )
        .await;
        assert_eq!(
            post_signed(
                &served.base,
                "/v1/hooks/default/default/ci",
                h["secret"].as_str().unwrap(),
                "one"
            )
            .await,
            202
        );
        h["secret"].as_str().unwrap().to_owned()
    };
    // A new master key without the old one: the hook's secret does not open (an error, not a
    // silent accept).
    {
        let served = start_on(dir.path(), &new, Vec::new()).await;
        let status =
            post_signed(&served.base, "/v1/hooks/default/default/ci", &secret, "two").await;
        assert!(status >= 500, "{status}");
    }
    // With the old key as previous, the server re-seals under the new key on start...
    {
        let served = start_on(dir.path(), &new, vec![old.clone()]).await;
        assert_eq!(
            post_signed(
                &served.base,
                "/v1/hooks/default/default/ci",
                &secret,
                "three"
            )
            .await,
            202
        );
    }
    // ...so the old key can then be dropped.
    let served = start_on(dir.path(), &new, Vec::new()).await;
    assert_eq!(
        post_signed(
            &served.base,
            "/v1/hooks/default/default/ci",
            &secret,
            "four"
        )
        .await,
        202
    );
}
