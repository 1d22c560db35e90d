//! `/mcp` driven by the official MCP SDKs with bearer keys: the TypeScript SDK
//! (`@modelcontextprotocol/sdk`, installed by `scripts/install-mcp-peers.sh`) and the Python
//! SDK 2.x (`mcp` from PyPI, installed by `scripts/install-python-clients.sh`). Each key sees
//! and calls only its own workspace's agents; a missing or wrong key is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentkit_server::Server;
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use serde_json::{Value, json};

const ADMIN: &str = "sdk-admin-key";

fn peers() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../tests/peers")
}

/// Run one SDK client; its JSON line.
async fn sdk(kind: &str, url: &str, key: &str, tool: &str, message: &str) -> Value {
    let peers = peers();
    let (program, script) = match kind {
        "ts" => (
            peers.join("node_modules/.bin/node"),
            peers.join("sdk_client.mjs"),
        ),
        _ => (peers.join(".venv/bin/python"), peers.join("sdk_client.py")),
    };
    assert!(
        program.exists(),
        "{} is missing: run scripts/install-mcp-peers.sh and scripts/install-python-clients.sh",
        program.display()
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(&program)
            .arg(&script)
            .args([url, key, tool, message])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the SDK client finished")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "{kind} client printed no JSON:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

async fn api(base: &str, key: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let res = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_typescript_and_python_sdks_call_their_workspace_agents() {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), ModelFactory::offline());
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .spec_builder(Arc::new(builder))
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    let post = reqwest::Method::POST;
    let mut keys = Vec::new();
    for (ws, agent) in [("acme/prod", "support"), ("globex/prod", "billing")] {
        let (org, w) = ws.split_once('/').unwrap();
        api(
            &base,
            ADMIN,
            post.clone(),
            "/v1/workspaces",
            json!({"org": org, "workspace": w}),
        )
        .await;
        let k = api(
            &base,
            ADMIN,
            post.clone(),
            "/v1/keys",
            json!({"workspace": ws, "role": "developer"}),
        )
        .await;
        let key = k["key"].as_str().unwrap().to_owned();
        api(
            &base,
            &key,
            post.clone(),
            "/v1/agents",
            json!({"name": agent, "kind": "agent",
                   "spec": {"model": "scripted", "instructions": "Help.", "description": format!("{agent} desk")}}),
        )
        .await;
        keys.push((key, agent));
    }
    let url = format!("{base}/mcp");
    for kind in ["ts", "py"] {
        for (i, (key, agent)) in keys.iter().enumerate() {
            let other = keys[1 - i].1;
            let message = format!("hello from the {kind} sdk");
            let got = sdk(kind, &url, key, agent, &message).await;
            assert!(got.get("error").is_none(), "{kind}: {got}");
            let tools: Vec<&str> = got["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect();
            assert!(tools.contains(agent), "{kind}: {tools:?}");
            assert!(
                !tools.contains(&other),
                "{kind} sees another workspace's agent: {tools:?}"
            );
            assert_eq!(got["is_error"], false, "{kind}: {got}");
            assert!(
                got["text"].as_str().unwrap().contains(&message),
                "{kind}: {got}"
            );
            // Another workspace's agent is not a tool of this one.
            let got = sdk(kind, &url, key, other, "x").await;
            let refused = got.get("error").is_some() || got["is_error"] == true;
            assert!(refused, "{kind} called another workspace's agent: {got}");
        }
        // No valid key: the SDK's connect fails (the TypeScript SDK shows the 401 problem).
        let got = sdk(kind, &url, "ak_0000_wrong", "support", "x").await;
        let err = got["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            !err.is_empty() && got.get("tools").is_none(),
            "{kind}: {got}"
        );
        if kind == "ts" {
            assert!(
                err.contains("401") && err.contains("not a valid API key"),
                "{got}"
            );
        }
    }
}
