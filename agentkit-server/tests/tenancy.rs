//! Tenants and keys end to end over real sockets: workspaces, hashed API keys (revoked and
//! expired keys refused), the role matrix, and tenant isolation as a property test — every
//! scoped route called with another workspace's ids and keys reveals nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::Policy;
use agentkit_mcp::rmcp::model::{CallToolRequestParams, ClientConfig};
use agentkit_mcp::{ConnectionManager, McpServerBuilder, ServerConfig};
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::tenancy::WorkspaceId;
use agentkit_server::{Server, ServerBuilder};
use common::upstream::{Upstream, with_add, with_send};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "tenancy-admin-key";

struct Running {
    base: String,
    dir: tempfile::TempDir,
    _served: inproc::InProcess,
    /// The upstream MCP server `crm` of [`start_with_crm`], with its `send` calls counted.
    crm: Option<(Upstream, Arc<AtomicU32>)>,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await.build().await.unwrap();
    let served = inproc::serve(server).await;
    Running {
        base: served.base.clone(),
        dir,
        _served: served,
        crm: None,
    }
}

/// [`start`], with the upstream MCP server `crm` (`send`, `add`) seen by every workspace
/// `tenants` names, whose `crm__send` waits for an approval (the gateway policy).
async fn start_with_crm(tenants: &[String]) -> Running {
    let sends = Arc::new(AtomicU32::new(0));
    let crm = with_send(McpServerBuilder::new("crm", "1.0.0"), Arc::clone(&sends));
    let crm = Upstream::serve(with_add(crm).build()).await;
    let policy = PolicySpec::new().with_require_approval(["crm__send"]);
    let gateway = GatewayConfig::new()
        .with_policy(Policy::compile("gateway", &policy).unwrap())
        .with_server_workspaces(
            "crm",
            tenants
                .iter()
                .map(|w| WorkspaceId::parse(w, "default").unwrap()),
        );
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir)
        .await
        .mcp_servers(ConnectionManager::new([ServerConfig::http(
            "crm", &crm.url,
        )]))
        .gateway(gateway)
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Running {
        base: served.base.clone(),
        dir,
        _served: served,
        crm: Some((crm, sends)),
    }
}

async fn server(dir: &tempfile::TempDir) -> ServerBuilder {
    inproc::declarative(dir.path(), ADMIN)
        .await
        .master_key(agentkit_server::vault::MasterKey::generate().unwrap())
}

async fn call(
    r: &Running,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    inproc::call_with_api_key(&r.base, key, method, path, body).await
}

async fn workspace(r: &Running, org: &str, ws: &str) {
    let (s, b) = inproc::create_workspace(&r.base, ADMIN, org, ws).await;
    assert_eq!(s, 201, "{b}");
}

/// A new key of `ws` with `role`: (secret, id).
async fn key(r: &Running, ws: &str, role: &str) -> (String, String) {
    let body = json!({"name": format!("{role} key"), "role": role, "workspace": ws});
    inproc::create_key(&r.base, ADMIN, body).await
}

async fn deploy(r: &Running, key: &str, name: &str, instructions: &str) {
    let (s, b) = call(
        r,
        key,
        Method::POST,
        "/v1/agents",
        Some(json!({"name": name, "kind": "agent",
                    "spec": {"model": "scripted", "instructions": instructions}})),
    )
    .await;
    assert!(s == 201 || s == 200, "{s} {b}");
}

#[tokio::test]
async fn keys_are_shown_once_stored_hashed_and_refused_once_revoked_or_expired() {
    let r = start().await;
    workspace(&r, "acme", "prod").await;
    let (s, b) = call(
        &r,
        ADMIN,
        Method::POST,
        "/v1/workspaces",
        Some(json!({"org": "acme", "workspace": "prod"})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = call(
        &r,
        ADMIN,
        Method::POST,
        "/v1/workspaces",
        Some(json!({"org": "Acme!", "workspace": "x"})),
    )
    .await;
    assert_eq!(s, 400, "{b}");

    let (secret, id) = key(&r, "acme/prod", "developer").await;
    assert!(secret.starts_with(&format!("ak_{id}_")), "{secret}");
    assert_eq!(secret.len(), 3 + 12 + 1 + 64);
    // The key works, as a bearer token too, and acts in its workspace (empty so far).
    let res = reqwest::Client::new()
        .get(format!("{}/v1/agents", r.base))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));

    // Listed without its secret or hash; last use recorded.
    let (s, list) = call(&r, ADMIN, Method::GET, "/v1/keys", None).await;
    assert_eq!(s, 200);
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["role"], "developer");
    assert_eq!(listed["org"], "acme");
    assert!(listed["last_used_at"].is_i64(), "{listed}");
    assert!(
        listed.get("key").is_none() && listed.get("hash").is_none(),
        "{listed}"
    );
    assert!(!list.to_string().contains(&secret[16..]));

    // The database file never holds the secret.
    let secret_part = secret[16..].to_owned();
    let mut found = false;
    for entry in std::fs::read_dir(r.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        found |= bytes
            .windows(secret_part.len())
            .any(|w| w == secret_part.as_bytes());
    }
    assert!(!found, "the key's secret is in the database files");

    // Revoked: 401 on the next request, saying so.
    let (s, b) = call(&r, ADMIN, Method::DELETE, &format!("/v1/keys/{id}"), None).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["revoked_at"].is_i64());
    let (s, b) = call(&r, &secret, Method::GET, "/v1/agents", None).await;
    assert_eq!(s, 401, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("revoked"), "{b}");

    // Expired: works until its time, then 401.
    let soon = chrono::Utc::now().timestamp_millis() + 1_500;
    let (s, b) = call(
        &r,
        ADMIN,
        Method::POST,
        "/v1/keys",
        Some(json!({"role": "viewer", "workspace": "acme/prod", "expires_at": soon})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let expiring = b["key"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&r, &expiring, Method::GET, "/v1/runs", None).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let (s, b) = call(&r, &expiring, Method::GET, "/v1/runs", None).await;
    assert_eq!(s, 401, "{b}");
    assert!(b["detail"].as_str().unwrap().contains("expired"), "{b}");

    // A well-formed key that was never issued, and a key for a workspace that does not exist.
    let forged = format!("ak_{id}_{}", "0".repeat(64));
    assert_eq!(
        call(&r, &forged, Method::GET, "/v1/runs", None).await.0,
        401
    );
    let (s, _) = call(
        &r,
        ADMIN,
        Method::POST,
        "/v1/keys",
        Some(json!({"role": "viewer", "workspace": "nope/nope"})),
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn every_role_gets_what_it_needs_and_403_above_it() {
    let r = start().await;
    workspace(&r, "acme", "prod").await;
    let (dev, _) = key(&r, "acme/prod", "developer").await;
    deploy(&r, &dev, "bot", "be brief").await;
    let (s, run) = call(
        &r,
        &dev,
        Method::POST,
        "/v1/agents/bot/runs",
        Some(json!({"message": "hi", "wait": true})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();

    let spec = json!({"name": "bot2", "kind": "agent", "spec": {"model": "scripted", "instructions": "x"}});
    // (method, path, body, least role)
    let routes: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::GET, "/v1/agents".into(), None, "viewer"),
        (Method::GET, format!("/v1/runs/{run_id}"), None, "viewer"),
        (
            Method::POST,
            "/v1/agents/bot/runs".into(),
            Some(json!({"message": "hi"})),
            "invoker",
        ),
        (
            Method::POST,
            format!("/v1/runs/{run_id}/cancel"),
            None,
            "operator",
        ),
        (Method::POST, "/v1/agents".into(), Some(spec), "developer"),
        (
            Method::PUT,
            "/v1/agents/bot/labels/prod".into(),
            Some(json!({"version": 1})),
            "developer",
        ),
        (Method::GET, "/v1/keys".into(), None, "admin"),
        (
            Method::POST,
            "/v1/keys".into(),
            Some(json!({"role": "viewer"})),
            "admin",
        ),
    ];
    let order = ["viewer", "invoker", "operator", "developer", "admin"];
    for role in order {
        let (k, _) = key(&r, "acme/prod", role).await;
        let rank = order.iter().position(|x| *x == role).unwrap();
        for (m, path, body, needed) in &routes {
            let need = order.iter().position(|x| x == needed).unwrap();
            let (s, b) = call(&r, &k, m.clone(), path, body.clone()).await;
            if rank < need {
                assert_eq!(s, 403, "{role} {m} {path}: {b}");
                assert_eq!(b["type"], "urn:agentkit:problem:forbidden");
                assert!(
                    b["detail"]
                        .as_str()
                        .unwrap()
                        .contains(&format!("`{needed}`")),
                    "{b}"
                );
            } else {
                assert!(s != 403 && s != 401, "{role} {m} {path}: {s} {b}");
            }
        }
    }
    // An admin key of a workspace cannot mint keys elsewhere, nor create workspaces.
    let (admin_ws, _) = key(&r, "acme/prod", "admin").await;
    let (s, _) = call(
        &r,
        &admin_ws,
        Method::POST,
        "/v1/keys",
        Some(json!({"role": "viewer", "workspace": "default/default"})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        &r,
        &admin_ws,
        Method::POST,
        "/v1/workspaces",
        Some(json!({"org": "acme", "workspace": "dev"})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, ws) = call(&r, &admin_ws, Method::GET, "/v1/workspaces", None).await;
    assert_eq!(s, 200);
    assert_eq!(ws.as_array().unwrap().len(), 1, "{ws}");
}

#[tokio::test]
async fn schedules_of_one_name_live_apart_in_each_workspace() {
    let r = start().await;
    let mut keys = vec![ADMIN.to_owned()];
    for ws in ["a", "b"] {
        workspace(&r, "org", ws).await;
        keys.push(key(&r, &format!("org/{ws}"), "admin").await.0);
    }
    for (i, k) in keys.iter().enumerate() {
        deploy(&r, k, "bot", &format!("workspace {i}")).await;
        let (s, b) = call(
            &r,
            k,
            Method::POST,
            "/v1/schedules",
            Some(json!({"name": "nightly", "target": "bot", "every": "1h"})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["name"], "nightly");
        assert_eq!(b["target"], "bot");
    }
    for (i, k) in keys.iter().enumerate() {
        let (_, list) = call(&r, k, Method::GET, "/v1/schedules", None).await;
        let list = list.as_array().unwrap().clone();
        assert_eq!(list.len(), 1, "workspace {i}: {list:?}");
        assert_eq!(list[0]["name"], "nightly");
        let (s, run) = call(&r, k, Method::POST, "/v1/schedules/nightly/trigger", None).await;
        assert_eq!(s, 202, "{run}");
        assert_eq!(run["agent"], "bot");
        let id = run["run_id"].as_str().unwrap().to_owned();
        // The run acts as the schedule's creator: in its workspace (for policy and audit).
        let (_, got) = call(&r, k, Method::GET, &format!("/v1/runs/{id}"), None).await;
        let ws = &got["input"]["principal"]["workspace"];
        if i == 0 {
            assert!(ws.is_null(), "{got}");
        } else {
            assert_eq!(ws, &json!(["a", "b"][i - 1]), "{got}");
            assert_eq!(got["input"]["principal"]["tenant"], "org", "{got}");
        }
        for (j, other) in keys.iter().enumerate() {
            let (s, _) = call(&r, other, Method::GET, &format!("/v1/runs/{id}"), None).await;
            assert_eq!(s, if i == j { 200 } else { 404 });
        }
        let (_, history) = call(&r, k, Method::GET, "/v1/schedules/nightly/history", None).await;
        let ids: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["run"]["run_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![id.as_str()], "workspace {i} history");
        // Pausing mine leaves the others' alone.
        if i == 1 {
            let (s, _) = call(&r, k, Method::POST, "/v1/schedules/nightly/pause", None).await;
            assert_eq!(s, 200);
        }
    }
    let paused: Vec<bool> = {
        let mut v = Vec::new();
        for k in &keys {
            let (_, b) = call(&r, k, Method::GET, "/v1/schedules/nightly", None).await;
            v.push(b["paused"] == true);
        }
        v
    };
    assert_eq!(paused, vec![false, true, false]);
    // Deleting mine leaves the others'; another workspace's stored name is nothing.
    let (s, _) = call(&r, &keys[2], Method::DELETE, "/v1/schedules/nightly", None).await;
    assert_eq!(s, 204);
    assert_eq!(
        call(&r, &keys[2], Method::GET, "/v1/schedules/nightly", None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&r, &keys[1], Method::GET, "/v1/schedules/nightly", None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&r, ADMIN, Method::GET, "/v1/schedules/org~a~nightly", None)
            .await
            .0,
        404
    );
    let (s, _) = call(
        &r,
        &keys[1],
        Method::POST,
        "/v1/schedules",
        Some(json!({"name": "x", "target": "org~b~bot", "every": "1h"})),
    )
    .await;
    assert_eq!(s, 400);
}

/// A code agent that answers with the principal its run's context carries.
struct WhoAmI;

#[async_trait::async_trait]
impl agentkit_core::AugmentedLlm for WhoAmI {
    fn name(&self) -> &str {
        "whoami"
    }

    async fn generate(
        &self,
        _: agentkit_core::GenerateRequest,
        ctx: &agentkit_core::RunContext,
    ) -> agentkit_core::Result<agentkit_core::Generation> {
        let p = ctx.principal().cloned().unwrap_or_default();
        Ok(agentkit_core::Generation::from_text(format!(
            "{}/{} key={} roles={}",
            p.tenant.unwrap_or_default(),
            p.workspace.unwrap_or_default(),
            p.key_id.unwrap_or_else(|| "-".into()),
            p.roles.join(",")
        )))
    }
}

#[tokio::test]
async fn runs_carry_their_callers_principal_on_the_run_context() {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .agent_llm("whoami", Arc::new(WhoAmI), "Says who called")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let r = Running {
        base: served.base.clone(),
        dir,
        _served: served,
        crm: None,
    };
    let (s, run) = call(
        &r,
        ADMIN,
        Method::POST,
        "/v1/agents/whoami/runs",
        Some(json!({"message": "?", "wait": true})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(
        run["output"]["text"], "default/default key=- roles=admin",
        "{run}"
    );
    let (invoker, id) = key(&r, "default/default", "invoker").await;
    let (s, run) = call(
        &r,
        &invoker,
        Method::POST,
        "/v1/agents/whoami/runs",
        Some(json!({"message": "?", "wait": true})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(
        run["output"]["text"],
        format!("default/default key={id} roles=invoker"),
        "{run}"
    );
}

/// One workspace of the isolation test: its key, agents and runs, and what it made over
/// the LangGraph API: threads (`shared` in every workspace, the others server-made),
/// `(thread, run)` pairs, crons and store item keys.
struct Tenant {
    key: String,
    key_id: Option<String>,
    agents: BTreeSet<String>,
    runs: BTreeSet<String>,
    threads: BTreeSet<String>,
    thread_runs: Vec<(String, String)>,
    crons: BTreeSet<String>,
    /// Webhooks (declared through the API) by name, with their secrets.
    hooks: BTreeMap<String, String>,
    /// `org/workspace`.
    ws: String,
    /// The run of its gateway call that waits for an approval (call `ask`).
    approval: String,
}

fn signed_delivery(secret: &str, body: &str) -> Vec<(&'static str, String)> {
    use hmac::Mac;
    let ts = (agentkit_runtime::model::now_ms() / 1000).to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    vec![
        ("x-agentkit-timestamp", ts),
        (
            "x-agentkit-signature",
            format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        ),
    ]
}

/// Deliver `body` to the webhook at `path`, signed with `secret`, without an API key.
async fn deliver(r: &Running, path: &str, secret: &str, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", r.base))
        .body(body.to_owned());
    for (k, v) in signed_delivery(secret, body) {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn user(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

/// Make LangGraph resources in workspace `i`: thread `shared` and `n` more, a run on each
/// (when it has an agent), a cron of stateless runs and one on `shared`, store items.
async fn lg_resources(r: &Running, t: &mut Tenant, i: usize, n: usize) {
    let owner = json!({"owner": i});
    let (s, b) = call(
        r,
        &t.key,
        Method::POST,
        "/threads",
        Some(json!({"thread_id": "shared", "metadata": owner})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["thread_id"], "shared");
    t.threads.insert("shared".into());
    for _ in 0..n {
        let (s, b) = call(
            r,
            &t.key,
            Method::POST,
            "/threads",
            Some(json!({"metadata": owner})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let id = b["thread_id"].as_str().unwrap();
        assert!(!id.contains('~'), "{b}");
        t.threads.insert(id.to_owned());
    }
    if let Some(agent) = t.agents.first().cloned() {
        for thread in t.threads.clone() {
            let (s, values) = call(
                r,
                &t.key,
                Method::POST,
                &format!("/threads/{thread}/runs/wait"),
                Some(json!({"assistant_id": agent, "input": user(&format!("from {i}"))})),
            )
            .await;
            assert_eq!(s, 200, "{values}");
            assert_eq!(values["messages"].as_array().unwrap().len(), 2, "{values}");
            let (s, runs) = call(
                r,
                &t.key,
                Method::GET,
                &format!("/threads/{thread}/runs"),
                None,
            )
            .await;
            assert_eq!(s, 200, "{runs}");
            let run = &runs[0];
            assert_eq!(run["thread_id"], thread.as_str(), "{run}");
            assert_eq!(run["assistant_id"], agent.as_str(), "{run}");
            assert_eq!(run["kwargs"]["input"]["thread"], thread.as_str(), "{run}");
            let id = run["run_id"].as_str().unwrap().to_owned();
            t.runs.insert(id.clone());
            t.thread_runs.push((thread, id));
        }
        for thread in [None, Some("shared")] {
            let path = match thread {
                Some(t) => format!("/threads/{t}/runs/crons"),
                None => "/runs/crons".to_owned(),
            };
            let (s, c) = call(
                r,
                &t.key,
                Method::POST,
                &path,
                Some(json!({"assistant_id": agent, "schedule": "0 0 1 1 *",
                            "input": user("yearly"), "metadata": owner})),
            )
            .await;
            assert_eq!(s, 200, "{c}");
            assert_eq!(c["assistant_id"], agent.as_str(), "{c}");
            assert_eq!(c["thread_id"], json!(thread), "{c}");
            t.crons.insert(c["cron_id"].as_str().unwrap().to_owned());
        }
    }
    for key in ["prefs".to_owned(), format!("k{i}")] {
        let (s, b) = call(
            r,
            &t.key,
            Method::PUT,
            "/store/items",
            Some(json!({"namespace": ["users", "u1"], "key": key, "value": owner})),
        )
        .await;
        assert_eq!(s, 204, "{b}");
    }
}

/// Ids found in `list` under `field`.
fn ids(list: &Value, field: &str) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|x| x[field].as_str().unwrap().to_owned())
        .collect()
}

/// `method template` with `foreign` (another workspace's id) answers exactly what it answers
/// with `missing` (an id nothing has): 404, the same problem but for the id. The id goes
/// where the path has `{}` and the body `@ID@`.
async fn same_as_missing(
    r: &Running,
    key: &str,
    method: Method,
    template: &str,
    body: Option<&Value>,
    foreign: &str,
    missing: &str,
) {
    let with = |id: &str| {
        (
            template.replace("{}", id),
            body.map(|b| {
                serde_json::from_str::<Value>(&b.to_string().replace("@ID@", id)).unwrap()
            }),
        )
    };
    let (path, b) = with(foreign);
    let (s, got) = call(r, key, method.clone(), &path, b).await;
    let (path_missing, b) = with(missing);
    let (s_missing, want) = call(r, key, method.clone(), &path_missing, b).await;
    assert_eq!(s, 404, "{method} {path}: {got}");
    assert_eq!(s_missing, 404, "{method} {path_missing}: {want}");
    assert_eq!(
        detail(&got).replace(foreign, "ID"),
        detail(&want).replace(missing, "ID"),
        "{method} {template}"
    );
    assert_eq!(got["type"], want["type"], "{method} {template}");
}

/// Workspace `i`'s view over the LangGraph and Agent Protocol routes: its lists hold exactly
/// its own; every other workspace's thread, run and cron id answers like a missing one, and
/// changes nothing.
async fn lg_isolation(r: &Running, tenants: &[Tenant], i: usize) {
    let me = &tenants[i];
    let k = me.key.as_str();
    let (s, threads) = call(
        r,
        k,
        Method::POST,
        "/threads/search",
        Some(json!({"limit": 1000})),
    )
    .await;
    assert_eq!(s, 200, "{threads}");
    assert_eq!(
        ids(&threads, "thread_id"),
        me.threads,
        "workspace {i} threads"
    );
    assert!(
        threads
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["metadata"]["owner"] == i),
        "{threads}"
    );
    let (_, n) = call(r, k, Method::POST, "/threads/count", Some(json!({}))).await;
    assert_eq!(n, json!(me.threads.len()));
    let (_, shared) = call(r, k, Method::GET, "/threads/shared", None).await;
    assert_eq!(shared["metadata"]["owner"], i, "{shared}");
    let (_, a) = call(
        r,
        k,
        Method::POST,
        "/assistants/search",
        Some(json!({"limit": 1000})),
    )
    .await;
    assert_eq!(
        ids(&a, "assistant_id"),
        me.agents,
        "workspace {i} assistants"
    );
    let (_, n) = call(r, k, Method::POST, "/assistants/count", Some(json!({}))).await;
    assert_eq!(n, json!(me.agents.len()));
    let (_, a) = call(
        r,
        k,
        Method::POST,
        "/agents/search",
        Some(json!({"limit": 1000})),
    )
    .await;
    assert_eq!(ids(&a, "agent_id"), me.agents, "workspace {i} agents");
    // The same runs as `/v1/runs` (mine, and the `/mcp` call's run made since).
    let (_, runs) = call(
        r,
        k,
        Method::POST,
        "/runs/search",
        Some(json!({"limit": 1000})),
    )
    .await;
    let (_, v1) = call(r, k, Method::GET, "/v1/runs?limit=1000", None).await;
    let found = ids(&runs, "run_id");
    assert_eq!(found, ids(&v1, "run_id"), "workspace {i} /runs/search");
    assert!(found.is_superset(&me.runs), "workspace {i} /runs/search");
    for other in tenants.iter().filter(|o| o.key != me.key) {
        assert!(found.is_disjoint(&other.runs), "workspace {i} /runs/search");
    }
    let (_, crons) = call(
        r,
        k,
        Method::POST,
        "/runs/crons/search",
        Some(json!({"limit": 1000})),
    )
    .await;
    assert_eq!(ids(&crons, "cron_id"), me.crons, "workspace {i} crons");
    let (_, n) = call(r, k, Method::POST, "/runs/crons/count", Some(json!({}))).await;
    assert_eq!(n, json!(me.crons.len()));
    let (_, items) = call(
        r,
        k,
        Method::POST,
        "/store/items/search",
        Some(json!({"namespace_prefix": ["users"], "limit": 100})),
    )
    .await;
    let keys: BTreeSet<String> = ids(&items["items"], "key");
    assert_eq!(
        keys,
        BTreeSet::from(["prefs".to_owned(), format!("k{i}")]),
        "{items}"
    );
    assert!(
        items["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["value"]["owner"] == i)
    );
    let (_, ns) = call(r, k, Method::POST, "/store/namespaces", Some(json!({}))).await;
    assert_eq!(ns["namespaces"], json!([["users", "u1"]]), "{ns}");
    let (s, item) = call(
        r,
        k,
        Method::GET,
        "/store/items?namespace=users.u1&key=prefs",
        None,
    )
    .await;
    assert_eq!((s, &item["value"]["owner"]), (200, &json!(i)), "{item}");

    let agent = me
        .agents
        .first()
        .cloned()
        .unwrap_or_else(|| "bot".to_owned());
    let run_body = json!({"assistant_id": agent, "input": user("intrude")});
    let ap_body = json!({"agent_id": agent, "thread_id": "@ID@", "input": user("intrude")});
    let cron_body = json!({"assistant_id": agent, "schedule": "0 0 1 1 *", "input": user("x")});
    let missing = uuid::Uuid::now_v7().to_string();
    for (j, other) in tenants.iter().enumerate() {
        if i == j {
            continue;
        }
        for t in other.threads.iter().filter(|t| *t != "shared") {
            for (m, path, body) in [
                (Method::GET, "/threads/{}", None),
                (
                    Method::PATCH,
                    "/threads/{}",
                    Some(json!({"metadata": {"x": 1}})),
                ),
                (Method::DELETE, "/threads/{}", None),
                (Method::GET, "/threads/{}/state", None),
                (Method::GET, "/threads/{}/state/1", None),
                (Method::POST, "/threads/{}/history", Some(json!({}))),
                (Method::GET, "/threads/{}/history", None),
                (Method::POST, "/threads/{}/copy", None),
                (Method::GET, "/threads/{}/runs", None),
                (Method::POST, "/threads/{}/runs", Some(run_body.clone())),
                (
                    Method::POST,
                    "/threads/{}/runs/wait",
                    Some(run_body.clone()),
                ),
                (
                    Method::POST,
                    "/threads/{}/runs/stream",
                    Some(run_body.clone()),
                ),
                (
                    Method::POST,
                    "/threads/{}/runs/crons",
                    Some(cron_body.clone()),
                ),
                (Method::POST, "/runs", Some(ap_body.clone())),
                (Method::POST, "/runs/wait", Some(ap_body.clone())),
                (
                    Method::POST,
                    "/runs/search",
                    Some(json!({"thread_id": "@ID@"})),
                ),
            ] {
                same_as_missing(r, k, m, path, body.as_ref(), t, &missing).await;
            }
            let (_, found) = call(
                r,
                k,
                Method::POST,
                "/threads/search",
                Some(json!({"ids": [t]})),
            )
            .await;
            assert_eq!(found, json!([]), "workspace {i} finds {j}'s thread {t}");
            let (_, found) = call(
                r,
                k,
                Method::POST,
                "/runs/crons/search",
                Some(json!({"thread_id": t})),
            )
            .await;
            assert_eq!(found, json!([]));
        }
        for (t, run) in &other.thread_runs {
            for (m, path) in [
                (Method::GET, format!("/threads/{t}/runs/{{}}")),
                (Method::GET, format!("/threads/{t}/runs/{{}}/join")),
                (Method::GET, format!("/threads/{t}/runs/{{}}/stream")),
                (Method::POST, format!("/threads/{t}/runs/{{}}/cancel")),
                (Method::GET, "/runs/{}".to_owned()),
                (Method::GET, "/runs/{}/wait".to_owned()),
                (Method::GET, "/runs/{}/stream".to_owned()),
                (Method::POST, "/runs/{}/cancel".to_owned()),
            ] {
                // On their thread (`shared` is mine too) and on the top-level routes.
                same_as_missing(r, k, m, &path, None, run, &missing).await;
            }
        }
        for c in &other.crons {
            for (m, body) in [
                (Method::PATCH, Some(json!({"enabled": false}))),
                (Method::DELETE, None),
            ] {
                same_as_missing(r, k, m, "/runs/crons/{}", body.as_ref(), c, &missing).await;
            }
        }
        let (s, b) = call(
            r,
            k,
            Method::GET,
            &format!("/store/items?namespace=users.u1&key=k{j}"),
            None,
        )
        .await;
        let (_, want) = call(
            r,
            k,
            Method::GET,
            "/store/items?namespace=users.u1&key=kmissing",
            None,
        )
        .await;
        assert_eq!(s, 404, "{b}");
        assert_eq!(
            detail(&b).replace(&format!("k{j}"), "K"),
            detail(&want).replace("kmissing", "K")
        );
    }
}

/// After every workspace tried: nothing of anyone's changed, and a create-or-get with
/// another workspace's thread id makes the caller's own thread.
async fn lg_untouched_then_create_or_get(r: &Running, tenants: &[Tenant]) {
    for (j, other) in tenants.iter().enumerate() {
        for t in &other.threads {
            let (s, b) = call(r, &other.key, Method::GET, &format!("/threads/{t}"), None).await;
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["metadata"], json!({"owner": j}), "{b}");
            let turns = usize::from(!other.agents.is_empty());
            assert_eq!(
                b["values"]["messages"].as_array().unwrap().len(),
                2 * turns,
                "{b}"
            );
        }
        let (_, crons) = call(
            r,
            &other.key,
            Method::POST,
            "/runs/crons/search",
            Some(json!({"limit": 1000})),
        )
        .await;
        assert!(
            crons
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["enabled"] == true),
            "{crons}"
        );
        assert_eq!(ids(&crons, "cron_id"), other.crons);
    }
    for (i, me) in tenants.iter().enumerate() {
        let Some((j, t)) = tenants
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .find_map(|(j, o)| {
                o.threads
                    .iter()
                    .find(|t| *t != "shared")
                    .map(|t| (j, t.clone()))
            })
        else {
            continue;
        };
        let (s, b) = call(
            r,
            &me.key,
            Method::POST,
            "/threads",
            Some(json!({"thread_id": t, "if_exists": "do_nothing", "metadata": {"owner": i}})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            b["metadata"],
            json!({"owner": i}),
            "workspace {i} got {j}'s thread: {b}"
        );
        assert_eq!(b["values"]["messages"], json!([]), "{b}");
        let (_, theirs) = call(
            r,
            &tenants[j].key,
            Method::GET,
            &format!("/threads/{t}"),
            None,
        )
        .await;
        assert_eq!(theirs["metadata"], json!({"owner": j}), "{theirs}");
    }
}

fn detail(b: &Value) -> String {
    b["detail"].as_str().unwrap_or_default().to_owned()
}

/// `org/workspace` of the isolation test's workspace `i`.
fn tenant_ws(i: usize) -> String {
    if i == 0 {
        "default/default".to_owned()
    } else {
        format!("org{}/ws{i}", i % 2)
    }
}

async fn isolation(layout: Vec<(BTreeMap<String, usize>, usize)>) {
    let r = start_with_crm(&(0..layout.len()).map(tenant_ws).collect::<Vec<_>>()).await;
    let mut tenants = Vec::new();
    for (i, (agents, n_threads)) in layout.iter().enumerate() {
        // Workspace 0 is `default/default`, acting with the server's admin key.
        let (key, key_id) = if i == 0 {
            (ADMIN.to_owned(), None)
        } else {
            let org = format!("org{}", i % 2);
            workspace(&r, &org, &format!("ws{i}")).await;
            let (k, id) = key(&r, &format!("{org}/ws{i}"), "admin").await;
            (k, Some(id))
        };
        let mut runs = BTreeSet::new();
        for (name, n) in agents {
            deploy(&r, &key, name, &format!("workspace {i}")).await;
            for _ in 0..*n {
                let (s, run) = call(
                    &r,
                    &key,
                    Method::POST,
                    &format!("/v1/agents/{name}/runs"),
                    Some(json!({"message": "hi", "wait": true})),
                )
                .await;
                assert_eq!(s, 200, "{run}");
                assert_eq!(run["status"], "succeeded", "{run}");
                assert_eq!(run["output"]["text"], "hi", "{run}");
                assert_eq!(run["agent"], name.as_str());
                let ws = if i == 0 {
                    "default".to_owned()
                } else {
                    format!("ws{i}")
                };
                assert_eq!(run["input"]["principal"]["workspace"], ws.as_str(), "{run}");
                runs.insert(run["run_id"].as_str().unwrap().to_owned());
            }
        }
        let mut tenant = Tenant {
            key,
            key_id,
            agents: agents.keys().cloned().collect(),
            runs,
            threads: BTreeSet::new(),
            thread_runs: Vec::new(),
            crons: BTreeSet::new(),
            hooks: BTreeMap::new(),
            ws: tenant_ws(i),
            approval: String::new(),
        };
        lg_resources(&r, &mut tenant, i, *n_threads).await;
        // A webhook per agent, named after it: workspaces often share hook names.
        for name in agents.keys() {
            let (s, h) = call(
                &r,
                &tenant.key,
                Method::POST,
                "/v1/webhooks",
                Some(json!({"name": name, "target": name})),
            )
            .await;
            assert_eq!(s, 201, "{h}");
            assert_eq!(h["url"], format!("/v1/hooks/{}/{name}", tenant.ws));
            tenant
                .hooks
                .insert(name.clone(), h["secret"].as_str().unwrap().to_owned());
        }
        // An event trigger per agent, named after it, on event `ev-<agent>`: workspaces often
        // share trigger and event names.
        for name in agents.keys() {
            let body = json!({"name": name, "event": format!("ev-{name}"), "target": name});
            let (s, t) = call(&r, &tenant.key, Method::POST, "/v1/triggers", Some(body)).await;
            assert_eq!(s, 201, "{t}");
        }
        tenants.push(tenant);
    }
    // A delivery signed with one workspace's hook secret, sent to another workspace's URL of
    // the same name (or any name), starts nothing; each workspace's own starts a run in it.
    for (i, me) in tenants.iter().enumerate() {
        for (j, other) in tenants.iter().enumerate() {
            if i == j {
                continue;
            }
            for (name, secret) in &other.hooks {
                let (s, b) = deliver(&r, &format!("/v1/hooks/{}/{name}", me.ws), secret, "x").await;
                assert_eq!(s, 401, "{j}'s secret opens {i}'s hook {name}: {b}");
            }
        }
    }
    for (i, me) in tenants.iter_mut().enumerate() {
        let Some((name, secret)) = me.hooks.iter().next() else {
            continue;
        };
        let path = format!("/v1/hooks/{}/{name}", me.ws);
        let (s, run) = deliver(&r, &path, secret, "hooked").await;
        assert_eq!(s, 202, "workspace {i}'s own delivery: {run}");
        assert_eq!(run["agent"], name.as_str(), "{run}");
        let ws = me.ws.split('/').nth(1).unwrap();
        assert_eq!(run["input"]["principal"]["workspace"], ws, "{run}");
        assert_eq!(
            run["input"]["principal"]["key_id"],
            format!("webhook:{name}")
        );
        let id = run["run_id"].as_str().unwrap().to_owned();
        for _ in 0..100 {
            let (_, got) = call(&r, &me.key, Method::GET, &format!("/v1/runs/{id}"), None).await;
            if got["status"] == "succeeded" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        me.runs.insert(id);
    }
    // An event emitted in one workspace starts runs of that workspace's triggers only; an
    // event only another workspace listens to is unknown here.
    for (i, me) in tenants.iter().enumerate() {
        for (j, other) in tenants.iter().enumerate() {
            for name in other.agents.difference(&me.agents) {
                let path = format!("/v1/events/ev-{name}");
                let (s, b) = call(
                    &r,
                    &me.key,
                    Method::POST,
                    &path,
                    Some(json!({"message": "x"})),
                )
                .await;
                assert_eq!(s, 404, "workspace {i} emits {j}'s event {name}: {b}");
            }
        }
    }
    for (i, me) in tenants.iter_mut().enumerate() {
        let Some(name) = me.agents.iter().next().cloned() else {
            continue;
        };
        let path = format!("/v1/events/ev-{name}");
        let (s, b) = call(
            &r,
            &me.key,
            Method::POST,
            &path,
            Some(json!({"message": "evt"})),
        )
        .await;
        assert_eq!(s, 202, "workspace {i}'s own event: {b}");
        let started = b["runs"].as_array().unwrap();
        assert_eq!(started.len(), 1, "{b}");
        let id = started[0]["run_id"].as_str().unwrap().to_owned();
        wait_status(&r, &me.key, &id, "succeeded").await;
        me.runs.insert(id);
    }
    // A gateway call of `crm__send` in each workspace waits for an approval there: a run of
    // the workspace, and call `ask` in its approval queue.
    for (i, me) in tenants.iter_mut().enumerate() {
        let body = json!({"calls": [{"id": "ask", "server": "crm", "tool": "send",
                                     "arguments": {"text": format!("from {i}")}}]});
        let (s, b) = call(&r, &me.key, Method::POST, "/v1/execute", Some(body)).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["results"][0]["status"], "pending_approval", "{b}");
        let id = b["results"][0]["run_id"].as_str().unwrap().to_owned();
        wait_status(&r, &me.key, &id, "waiting_approval").await;
        me.runs.insert(id.clone());
        me.approval = id;
    }
    let missing_run = uuid::Uuid::now_v7().to_string();
    for (i, me) in tenants.iter().enumerate() {
        // Lists hold exactly my agents and runs.
        let (_, agents) = call(&r, &me.key, Method::GET, "/v1/agents", None).await;
        let names: BTreeSet<String> = agents
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, me.agents, "workspace {i} agents");
        let (_, runs) = call(&r, &me.key, Method::GET, "/v1/runs?limit=1000", None).await;
        let ids: BTreeSet<String> = runs
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["run_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, me.runs, "workspace {i} runs");
        for name in &me.agents {
            let (s, e) = call(
                &r,
                &me.key,
                Method::GET,
                &format!("/v1/agents/{name}/versions/latest"),
                None,
            )
            .await;
            assert_eq!(s, 200);
            assert_eq!(e["spec"]["instructions"], format!("workspace {i}"));
            let (_, runs) = call(
                &r,
                &me.key,
                Method::GET,
                &format!("/v1/runs?agent={name}"),
                None,
            )
            .await;
            assert!(
                runs.as_array()
                    .unwrap()
                    .iter()
                    .all(|x| me.runs.contains(x["run_id"].as_str().unwrap()))
            );
        }
        let (_, nothing) = call(
            &r,
            &me.key,
            Method::GET,
            &format!("/v1/runs/{missing_run}"),
            None,
        )
        .await;
        let (_, keys) = call(&r, &me.key, Method::GET, "/v1/keys", None).await;
        // My approval queue holds my gateway call, and only it. (The server's admin key reads
        // the queue of every workspace unless it names one.)
        let path = match i {
            0 => "/v1/approvals?status=all&workspace=default/default",
            _ => "/v1/approvals?status=all",
        };
        let (_, queue) = call(&r, &me.key, Method::GET, path, None).await;
        assert_eq!(
            crate::ids(&queue, "run_id"),
            BTreeSet::from([me.approval.clone()]),
            "workspace {i} approvals"
        );
        // My webhooks, and only mine.
        let (_, hooks) = call(&r, &me.key, Method::GET, "/v1/webhooks", None).await;
        let listed: BTreeSet<String> = hooks
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            listed,
            me.hooks.keys().cloned().collect(),
            "workspace {i} hooks"
        );
        // My event triggers, and only mine.
        let (_, triggers) = call(&r, &me.key, Method::GET, "/v1/triggers", None).await;
        assert_eq!(
            crate::ids(&triggers, "name"),
            me.agents,
            "workspace {i} triggers"
        );
        for (j, other) in tenants.iter().enumerate() {
            if i == j {
                continue;
            }
            for name in other.agents.difference(&me.agents) {
                for m in [Method::GET, Method::DELETE] {
                    let path = format!("/v1/triggers/{name}");
                    let (s, b) = call(&r, &me.key, m, &path, None).await;
                    assert_eq!(s, 404, "workspace {i} reaches {j}'s trigger: {path} {b}");
                }
            }
            for name in other.hooks.keys() {
                if me.hooks.contains_key(name) {
                    continue;
                }
                for (m, path) in [
                    (Method::GET, format!("/v1/webhooks/{name}")),
                    (Method::POST, format!("/v1/webhooks/{name}/rotate")),
                    (Method::DELETE, format!("/v1/webhooks/{name}")),
                ] {
                    let (s, b) = call(&r, &me.key, m, &path, None).await;
                    assert_eq!(s, 404, "workspace {i} reaches {j}'s hook: {path} {b}");
                }
            }
            // (The server's admin key, workspace 0, sees and manages every key.)
            if let Some(id) = &other.key_id
                && i != 0
            {
                assert!(
                    !keys.to_string().contains(id.as_str()),
                    "workspace {i} sees key {id}"
                );
                let (s, _) =
                    call(&r, &me.key, Method::DELETE, &format!("/v1/keys/{id}"), None).await;
                assert_eq!(s, 404);
            }
            for run in &other.runs {
                let same = |b: &Value| {
                    assert_eq!(
                        detail(b).replace(run.as_str(), "ID"),
                        detail(&nothing).replace(&missing_run, "ID"),
                        "{b}"
                    );
                };
                for path in ["", "/events"] {
                    let (s, b) = call(
                        &r,
                        &me.key,
                        Method::GET,
                        &format!("/v1/runs/{run}{path}"),
                        None,
                    )
                    .await;
                    assert_eq!(s, 404, "workspace {i} reads run {run}{path}: {b}");
                    same(&b);
                }
                let sse = reqwest::Client::new()
                    .get(format!("{}/v1/runs/{run}/events", r.base))
                    .header("x-api-key", &me.key)
                    .header("accept", "text/event-stream")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(sse.status(), 404);
                for control in ["pause", "resume", "cancel", "approve", "reject", "replay"] {
                    let (s, b) = call(
                        &r,
                        &me.key,
                        Method::POST,
                        &format!("/v1/runs/{run}/{control}"),
                        None,
                    )
                    .await;
                    assert_eq!(s, 404, "workspace {i} {control}s run {run}: {b}");
                    same(&b);
                }
                let (s, _) = call(
                    &r,
                    &me.key,
                    Method::POST,
                    &format!("/v1/runs/{run}/signal"),
                    Some(json!({"name": "go"})),
                )
                .await;
                assert_eq!(s, 404);
            }
            for decision in ["approve", "reject"] {
                let path = format!("/v1/approvals/{{}}/ask/{decision}");
                let body = json!({"reason": "not yours"});
                same_as_missing(
                    &r,
                    &me.key,
                    Method::POST,
                    &path,
                    Some(&body),
                    &other.approval,
                    &missing_run,
                )
                .await;
            }
            for name in other.agents.difference(&me.agents) {
                for path in ["", "/versions", "/versions/latest", "/diff?from=1"] {
                    let (s, b) = call(
                        &r,
                        &me.key,
                        Method::GET,
                        &format!("/v1/agents/{name}{path}"),
                        None,
                    )
                    .await;
                    assert_eq!(s, 404, "workspace {i} reads agent {name}{path}: {b}");
                }
                let (s, _) = call(
                    &r,
                    &me.key,
                    Method::POST,
                    &format!("/v1/agents/{name}/runs"),
                    Some(json!({"message": "x"})),
                )
                .await;
                assert_eq!(s, 404);
                let (s, _) = call(
                    &r,
                    &me.key,
                    Method::POST,
                    &format!("/v1/agents/{name}/promote"),
                    Some(json!({"from": "latest", "to": "prod"})),
                )
                .await;
                assert_eq!(s, 404);
            }
        }
        // `/mcp` serves my agents as tools, and only mine; a call is a run of my workspace.
        let client = inproc::mcp_session(&r.base, &me.key, &[]).await;
        // The platform's operations (all of them, for an admin key), the federated tools of
        // the workspace's servers, and its agents: mine only.
        let (ops, rest): (BTreeSet<String>, BTreeSet<String>) = client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .partition(|n| n.starts_with("agentkit_"));
        let (federated, tools): (BTreeSet<String>, BTreeSet<String>) =
            rest.into_iter().partition(|n| n.contains("__"));
        assert_eq!(
            ops,
            BTreeSet::from(OPS.map(String::from)),
            "workspace {i} /mcp"
        );
        assert_eq!(
            federated,
            BTreeSet::from(["crm__add".to_owned(), "crm__send".to_owned()]),
            "workspace {i} /mcp"
        );
        assert_eq!(tools, me.agents, "workspace {i} /mcp tools");
        ops_isolation(&client, &tenants, i, &missing_run).await;
        for (j, other) in tenants.iter().enumerate() {
            for name in other.agents.difference(&me.agents) {
                let out = client
                    .call_tool(
                        CallToolRequestParams::new(name.clone())
                            .with_arguments(json!({"message": "x"}).as_object().unwrap().clone()),
                    )
                    .await;
                assert!(
                    out.is_err() || out.unwrap().is_error == Some(true),
                    "workspace {i} calls {j}'s {name}"
                );
            }
        }
        if let Some(name) = me.agents.first() {
            let out = client
                .call_tool(
                    CallToolRequestParams::new(name.clone())
                        .with_arguments(json!({"message": "via mcp"}).as_object().unwrap().clone()),
                )
                .await
                .unwrap();
            let meta = out.structured_content.clone().unwrap();
            assert_eq!(meta["status"], "succeeded", "{out:?}");
            let run = meta["run_id"].as_str().unwrap();
            for (j, other) in tenants.iter().enumerate() {
                let (s, _) = call(
                    &r,
                    &other.key,
                    Method::GET,
                    &format!("/v1/runs/{run}"),
                    None,
                )
                .await;
                assert_eq!(
                    s,
                    if i == j { 200 } else { 404 },
                    "workspace {j} reads {i}'s /mcp run"
                );
            }
        }
        client.cancel().await.unwrap();

        // The stored form of another workspace's names never resolves.
        if i == 0 {
            for (j, other) in tenants.iter().enumerate().skip(1) {
                for name in &other.agents {
                    let stored = format!("org{}~ws{j}~{name}", j % 2);
                    let (s, _) = call(
                        &r,
                        &me.key,
                        Method::GET,
                        &format!("/v1/agents/{stored}"),
                        None,
                    )
                    .await;
                    assert_eq!(s, 404);
                    let (s, _) = call(&r, &me.key, Method::POST, "/runs/wait", Some(json!({"assistant_id": stored, "input": {"messages": [{"role": "user", "content": "x"}]}}))).await;
                    assert_eq!(s, 404);
                    let encoded = format!("/v1/agents/org{}%7Ews{j}%7E{name}", j % 2);
                    let (s, _) = call(&r, &me.key, Method::GET, &encoded, None).await;
                    assert_eq!(s, 404);
                    let cron = json!({"assistant_id": stored, "schedule": "0 * * * *",
                                      "input": {"messages": [{"role": "user", "content": "x"}]}});
                    let (s, b) = call(&r, &me.key, Method::POST, "/runs/crons", Some(cron)).await;
                    assert_eq!(s, 404, "{b}");
                    let (s, _) = call(
                        &r,
                        &me.key,
                        Method::GET,
                        &format!("/assistants/{stored}"),
                        None,
                    )
                    .await;
                    assert_eq!(s, 404);
                }
            }
            // The LangGraph and Agent Protocol lists of the default workspace hold only its own.
            let (_, assistants) = call(
                &r,
                &me.key,
                Method::POST,
                "/assistants/search",
                Some(json!({"limit": 1000})),
            )
            .await;
            let text = assistants.to_string();
            assert!(!text.contains('~'), "{text}");
            let (_, runs) = call(
                &r,
                &me.key,
                Method::POST,
                "/runs/search",
                Some(json!({"limit": 1000})),
            )
            .await;
            for other in tenants.iter().skip(1) {
                for run in &other.runs {
                    assert!(!runs.to_string().contains(run.as_str()));
                }
            }
            // Another workspace's stored thread id is no thread of the default workspace's.
            for (j, other) in tenants.iter().enumerate().skip(1) {
                let stored = format!("org{}~ws{j}~shared", j % 2);
                let body = json!({"agent_id": "bot", "thread_id": stored, "input": user("x")});
                let (s, b) = call(&r, &me.key, Method::POST, "/runs", Some(body)).await;
                assert_eq!(s, 404, "{b}");
                let (_, found) = call(
                    &r,
                    &me.key,
                    Method::POST,
                    "/threads/search",
                    Some(json!({"ids": [stored]})),
                )
                .await;
                assert_eq!(found, json!([]));
                assert!(!other.threads.is_empty());
            }
        }
        lg_isolation(&r, &tenants, i).await;
    }
    lg_untouched_then_create_or_get(&r, &tenants).await;
    socket_and_task_isolation(&r, &tenants, &missing_run).await;
    // Nobody decided another workspace's approval: each still waits, and `send` never ran.
    for me in &tenants {
        wait_status(&r, &me.key, &me.approval, "waiting_approval").await;
    }
    let (_, sends) = r.crm.as_ref().unwrap();
    assert_eq!(sends.load(Ordering::SeqCst), 0, "an approval was decided");
}

/// The gateway's WebSocket and MCP Tasks between workspaces: another workspace's connection
/// id opens nothing (404, as an unknown one) and stays its owner's; another workspace's
/// approval run, read or cancelled as an MCP task, answers as a missing task does.
async fn socket_and_task_isolation(r: &Running, tenants: &[Tenant], missing_run: &str) {
    use agentkit_mcp::rmcp::model::{CancelTaskParams, GetTaskParams};
    for (i, me) in tenants.iter().enumerate() {
        let tasks = inproc::tasks_client(&r.base, &me.key, &[]).await;
        for (j, other) in tenants.iter().enumerate() {
            if i == j {
                continue;
            }
            // The WebSocket: j's connection id, tried by i, then used by j.
            let (s, c) = call(r, &other.key, Method::POST, "/v1/agents/connect", None).await;
            assert_eq!(s, 200, "{c}");
            let id = c["connection_id"].as_str().unwrap().to_owned();
            let mine = inproc::open_socket(&r.base, &me.key, &id).await;
            assert_eq!(mine.err(), Some(404), "workspace {i} opens {j}'s WebSocket");
            let theirs = inproc::open_socket(&r.base, &other.key, &id).await;
            assert!(theirs.is_ok(), "{j}'s own connection id still opens");
            drop(theirs);
            // MCP Tasks: j's approval run is no task of i's, to read or to cancel.
            for cancel in [false, true] {
                let answer = |id: String| {
                    let tasks = &tasks;
                    async move {
                        let e = if cancel {
                            tasks.cancel_task(CancelTaskParams::new(&id)).await.err()
                        } else {
                            tasks.get_task(GetTaskParams::new(&id)).await.err()
                        };
                        e.expect("refused").to_string().replace(&id, "ID")
                    }
                };
                assert_eq!(
                    answer(other.approval.clone()).await,
                    answer(missing_run.to_owned()).await,
                    "workspace {i} reads or cancels {j}'s task (cancel: {cancel})"
                );
            }
        }
        let _ = tasks.cancel().await;
    }
}

/// The platform's operations on `/mcp`, in listing order.
const OPS: [&str; 6] = [
    "agentkit_runs_list",
    "agentkit_runs_get",
    "agentkit_agents_list",
    "agentkit_agents_promote",
    "agentkit_approvals_list",
    "agentkit_approvals_decide",
];

type McpClient =
    agentkit_mcp::rmcp::service::RunningService<agentkit_mcp::rmcp::RoleClient, ClientConfig>;

/// Call `/mcp` tool `name` with `args`: whether it answered a tool error, its text, and its
/// structured content.
async fn op(client: &McpClient, name: &str, args: &Value) -> (bool, String, Value) {
    let params = CallToolRequestParams::new(name.to_owned())
        .with_arguments(args.as_object().unwrap().clone());
    let out = client.call_tool(params).await.unwrap();
    let text = out
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    (
        out.is_error == Some(true),
        text,
        out.structured_content.unwrap_or(Value::Null),
    )
}

/// `/mcp` operation `name` with `foreign` (another workspace's id) answers exactly what it
/// answers with `missing` (an id nothing has): a not-found tool error, the same text but for
/// the id. The id goes where `args` has `@ID@`.
async fn op_same_as_missing(
    client: &McpClient,
    name: &str,
    args: &Value,
    foreign: &str,
    missing: &str,
) {
    let with =
        |id: &str| serde_json::from_str::<Value>(&args.to_string().replace("@ID@", id)).unwrap();
    let (error, got, _) = op(client, name, &with(foreign)).await;
    let (error_missing, want, _) = op(client, name, &with(missing)).await;
    assert!(error, "{name} {foreign}: {got}");
    assert!(
        error_missing && want.contains("404"),
        "{name} {missing}: {want}"
    );
    assert_eq!(
        got.replace(foreign, "ID"),
        want.replace(missing, "ID"),
        "{name} {args}"
    );
}

/// Workspace `i`'s view over `/mcp`'s platform operations: the lists hold exactly its own
/// runs, agents and approvals; another workspace's run, approval and agent answer like
/// missing ones, and nothing is decided or promoted.
async fn ops_isolation(client: &McpClient, tenants: &[Tenant], i: usize, missing_run: &str) {
    let me = &tenants[i];
    let (error, text, runs) = op(client, "agentkit_runs_list", &json!({"limit": 1000})).await;
    assert!(!error, "{text}");
    assert_eq!(
        ids(&runs["runs"], "run_id"),
        me.runs,
        "workspace {i} agentkit_runs_list"
    );
    let (error, text, agents) = op(client, "agentkit_agents_list", &json!({})).await;
    assert!(!error, "{text}");
    assert_eq!(
        ids(&agents["agents"], "name"),
        me.agents,
        "workspace {i} agentkit_agents_list"
    );
    for status in ["pending", "all"] {
        let (error, text, queue) = op(
            client,
            "agentkit_approvals_list",
            &json!({"status": status}),
        )
        .await;
        assert!(!error, "{text}");
        assert_eq!(
            ids(&queue["approvals"], "run_id"),
            BTreeSet::from([me.approval.clone()]),
            "workspace {i} agentkit_approvals_list {status}"
        );
    }
    for (j, other) in tenants.iter().enumerate() {
        if i == j {
            continue;
        }
        for run in &other.runs {
            op_same_as_missing(
                client,
                "agentkit_runs_get",
                &json!({"run_id": "@ID@"}),
                run,
                missing_run,
            )
            .await;
        }
        for args in [
            json!({"run_id": "@ID@", "call_id": "ask", "decision": "approve", "reason": "mine now"}),
            json!({"run_id": "@ID@", "decision": "reject", "reason": "not yours"}),
        ] {
            op_same_as_missing(
                client,
                "agentkit_approvals_decide",
                &args,
                &other.approval,
                missing_run,
            )
            .await;
        }
        for name in other.agents.difference(&me.agents) {
            let promote = json!({"name": "@ID@", "from": "latest", "to": "prod"});
            op_same_as_missing(
                client,
                "agentkit_agents_promote",
                &promote,
                name,
                "no-such-agent",
            )
            .await;
            let (error, text, runs) =
                op(client, "agentkit_runs_list", &json!({"agent": name})).await;
            assert!(!error, "{text}");
            assert_eq!(
                runs["runs"],
                json!([]),
                "workspace {i} lists {j}'s runs of {name}"
            );
        }
    }
}

/// Poll until run `id` (read with `key`) is in `status`.
async fn wait_status(r: &Running, key: &str, id: &str, status: &str) {
    let mut run = Value::Null;
    for _ in 0..200 {
        run = call(r, key, Method::GET, &format!("/v1/runs/{id}"), None)
            .await
            .1;
        if run["status"] == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {id} never became {status}: {run}");
}

fn layouts() -> impl Strategy<Value = Vec<(BTreeMap<String, usize>, usize)>> {
    // Few names, so workspaces often share agent names.
    let agents = prop::collection::btree_map(
        prop::sample::select(vec![
            "bot".to_owned(),
            "support".to_owned(),
            "triage".to_owned(),
        ]),
        0usize..3,
        0..3,
    );
    prop::collection::vec((agents, 0usize..3), 2..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn no_workspace_sees_or_touches_another_workspaces_resources(layout in layouts()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(isolation(layout));
    }
}

#[tokio::test]
async fn audit_and_approvals_are_read_per_workspace() {
    let r = start().await;
    workspace(&r, "acme", "prod").await;
    let (admin, _) = key(&r, "acme/prod", "admin").await;
    let (viewer, _) = key(&r, "acme/prod", "viewer").await;
    let (default_admin, _) = key(&r, "default/default", "admin").await;

    // A workspace key reads its own workspace's log and queue.
    let (s, b) = call(&r, &admin, Method::GET, "/v1/audit", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["workspace"], "acme/prod");
    let (s, b) = call(&r, &admin, Method::GET, "/v1/audit/verify", None).await;
    assert_eq!((s, &b["workspace"]), (200, &json!("acme/prod")), "{b}");
    let (s, b) = call(&r, &viewer, Method::GET, "/v1/approvals", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!([]));
    // The audit log needs `admin`.
    let (s, _) = call(&r, &viewer, Method::GET, "/v1/audit", None).await;
    assert_eq!(s, 403);

    // Another workspace's log or queue is 404 to a workspace key, also to a default-workspace
    // admin that is not the server's admin key.
    for (k, other) in [(&admin, "default/default"), (&default_admin, "acme/prod")] {
        for path in ["/v1/audit", "/v1/audit/verify"] {
            let (s, b) = call(
                &r,
                k,
                Method::GET,
                &format!("{path}?workspace={other}"),
                None,
            )
            .await;
            assert_eq!(s, 404, "{path} {other}: {b}");
        }
        let (s, b) = call(
            &r,
            k,
            Method::GET,
            &format!("/v1/approvals?workspace={other}"),
            None,
        )
        .await;
        assert_eq!(s, 404, "{b}");
    }
    // The server's admin key may read any workspace's.
    let (s, b) = call(
        &r,
        ADMIN,
        Method::GET,
        "/v1/audit?workspace=acme/prod",
        None,
    )
    .await;
    assert_eq!((s, &b["workspace"]), (200, &json!("acme/prod")), "{b}");
}

#[tokio::test]
async fn a_workspaces_cron_fires_on_its_thread_as_its_creator() {
    let r = start().await;
    workspace(&r, "acme", "prod").await;
    let (op, op_id) = key(&r, "acme/prod", "admin").await;
    deploy(&r, &op, "bot", "be brief").await;
    // The default workspace has a thread and an agent of the same names: never used.
    deploy(&r, ADMIN, "bot", "default").await;
    for k in [ADMIN, op.as_str()] {
        let (s, b) = call(
            &r,
            k,
            Method::POST,
            "/threads",
            Some(json!({"thread_id": "t"})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, cron) = call(
        &r,
        &op,
        Method::POST,
        "/threads/t/runs/crons",
        Some(json!({"assistant_id": "bot", "schedule": "* * * * * *", "input": user("tick")})),
    )
    .await;
    assert_eq!(s, 200, "{cron}");
    let cron_id = cron["cron_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let run = loop {
        let (_, runs) = call(&r, &op, Method::GET, "/threads/t/runs", None).await;
        if let Some(run) = runs.as_array().and_then(|a| a.first()).cloned() {
            break run;
        }
        assert!(std::time::Instant::now() < deadline, "the cron never fired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (s, b) = call(
        &r,
        &op,
        Method::DELETE,
        &format!("/runs/crons/{cron_id}"),
        None,
    )
    .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(run["assistant_id"], "bot", "{run}");
    assert_eq!(run["thread_id"], "t", "{run}");
    let id = run["run_id"].as_str().unwrap();
    let (s, v1) = call(&r, &op, Method::GET, &format!("/v1/runs/{id}"), None).await;
    assert_eq!(s, 200, "{v1}");
    assert_eq!(v1["thread_id"], "t", "{v1}");
    assert_eq!(v1["input"]["principal"]["workspace"], "prod", "{v1}");
    assert_eq!(v1["input"]["principal"]["key_id"], op_id.as_str(), "{v1}");
    // Not the default workspace's run, nor on its thread `t`.
    let (s, _) = call(&r, ADMIN, Method::GET, &format!("/runs/{id}"), None).await;
    assert_eq!(s, 404);
    let (_, runs) = call(&r, ADMIN, Method::GET, "/threads/t/runs", None).await;
    assert_eq!(runs, json!([]));
}
