//! Policies by workspace and by API key over real HTTP: a key created with a read-only
//! policy gets a tool error for a write tool the agent's own policy allows, while the same
//! agent called with another key writes; the gateway (`/v1/execute`) denies the write for
//! that key and for a workspace with a no-write policy, and the audit names the deciding
//! policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use inproc::call_as;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::policy::{Policy, PolicyLayer};
use agentkit_core::{Agent, AgentLlm, Config, ScriptedProvider};
use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use agentkit_server::Server;
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::policy::{PrincipalPolicies, StoreAudit};
use agentkit_server::tenancy::WorkspaceId;
use common::upstream::Upstream;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "test-key";

const YAML: &str = r#"
policies:
  open:
    tools:
      allow: ["fs__*"]
  read-only:
    tools:
      allow: ["*__read_*"]
  no-write:
    tools:
      deny: ["*__write_*"]
server:
  workspace_policies:
    acme/prod: no-write
"#;

/// An MCP server on 127.0.0.1 with `read_file` and `write_file`.
async fn fs_server() -> Upstream {
    let server = agentkit_mcp::McpServerBuilder::new("fs", "1.0.0")
        .tool_fn(
            "read_file",
            "Reads a file",
            json!({"type": "object"}),
            |_, _| async move { Ok(CallToolResult::success(vec![ContentBlock::text("hello")])) },
        )
        .tool_fn(
            "write_file",
            "Writes a file",
            json!({"type": "object"}),
            |_, _| async move { Ok(CallToolResult::success(vec![ContentBlock::text("written")])) },
        )
        .build();
    Upstream::serve(server).await
}

async fn key(base: &str, body: Value) -> String {
    inproc::create_key(base, ADMIN, body).await.0
}

async fn run_to_end(base: &str, key: &str) -> Value {
    let (st, run) = call_as(
        base,
        key,
        Method::POST,
        "/v1/agents/writer/runs",
        Some(json!({"message": "write the file"})),
    )
    .await;
    assert!(st == 200 || st == 202, "{st} {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        let (_, r) = call_as(
            base,
            ADMIN,
            Method::GET,
            &format!("/v1/runs/{run_id}"),
            None,
        )
        .await;
        if r["status"] == "succeeded" || r["status"] == "failed" {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run_id} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_and_key_policies_apply_on_top_of_the_agents_and_the_gateways() {
    let config = Config::from_yaml_str(YAML, None).unwrap();
    let scoped = PrincipalPolicies::from_config(&config).unwrap();
    let fs = fs_server().await;
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let audit = Arc::new(StoreAudit::new(Arc::clone(&store)));

    let writes = Arc::new(AtomicU32::new(0));
    let write = inproc::counted_tool("fs__write_file", "Write a file", "written", &writes);
    let model = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("fs__write_file", json!({"path": "/a.md"}))
            .then_text("first")
            .then_tool_call("fs__write_file", json!({"path": "/b.md"}))
            .then_text("second"),
    );
    let open = Policy::compile("open", &config.policies["open"]).unwrap();
    let agent = AgentLlm::shared(
        Agent::new("writer", "Write files.").with_tool(write),
        model.clone(),
    )
    .with_memory(Server::memory_for(Arc::clone(&store)))
    .with_tool_layer(
        PolicyLayer::new(open)
            .with_scope(Arc::new(scoped.clone()))
            .with_audit(audit),
    );
    let gateway = GatewayConfig::new()
        .with_principal_policies(scoped)
        .with_server_workspaces(
            "fs",
            [
                WorkspaceId::default_workspace(),
                WorkspaceId::new("acme", "prod"),
            ],
        );
    let server = inproc::gateway_builder(Arc::clone(&store), ADMIN, &[("fs", &fs.url)], gateway)
        .agent_llm("writer", Arc::new(agent), "Writes files")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();

    // A key's policy must exist.
    let (st, body) = call_as(
        &base,
        ADMIN,
        Method::POST,
        "/v1/keys",
        Some(json!({"role": "invoker", "policy": "nope"})),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let reader = key(
        &base,
        json!({"role": "invoker", "name": "reader", "policy": "read-only"}),
    )
    .await;
    let plain = key(&base, json!({"role": "invoker", "name": "plain"})).await;
    let (_, keys) = call_as(&base, ADMIN, Method::GET, "/v1/keys", None).await;
    let listed = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "reader")
        .unwrap()
        .clone();
    assert_eq!(listed["policy"], "read-only", "{keys}");

    // With the read-only key, the agent's write is denied by the key's policy (the agent's
    // own policy allows it); the model reads why.
    let done = run_to_end(&base, &reader).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(writes.load(Ordering::SeqCst), 0, "the write never ran");
    let seen = serde_json::to_string(&model.requests().last().unwrap().messages).unwrap();
    assert!(seen.contains("denied by policy `read-only`"), "{seen}");
    // With another key the same agent writes.
    let done = run_to_end(&base, &plain).await;
    assert_eq!(done["output"]["text"], "second", "{done}");
    assert_eq!(writes.load(Ordering::SeqCst), 1);

    // The audit names the deciding policy.
    let entries = inproc::audit_entries(&base, ADMIN, "").await;
    let decisions: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["event"]["outcome"].as_str().unwrap_or("").to_owned(),
                e["event"]["policy"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        decisions.contains(&("denied".into(), "read-only".into())),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&("allowed".into(), "open".into())),
        "{decisions:?}"
    );

    // The gateway: the read-only key may read but not write; another key writes.
    let batch = json!({"calls": [
        {"id": "r", "server": "fs", "tool": "read_file"},
        {"id": "w", "server": "fs", "tool": "write_file"},
    ]});
    let status_of = |b: &Value, id: &str| -> String {
        b["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (st, b) = call_as(
        &base,
        &reader,
        Method::POST,
        "/v1/execute",
        Some(batch.clone()),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(status_of(&b, "r"), "success", "{b}");
    assert_eq!(status_of(&b, "w"), "denied", "{b}");
    assert!(b.to_string().contains("read-only"), "{b}");
    let (st, b) = call_as(
        &base,
        &plain,
        Method::POST,
        "/v1/execute",
        Some(batch.clone()),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(status_of(&b, "w"), "success", "{b}");

    // The workspace acme/prod carries `no-write`: its keys cannot write through the gateway.
    let (st, b) = call_as(
        &base,
        ADMIN,
        Method::POST,
        "/v1/workspaces",
        Some(json!({"org": "acme", "workspace": "prod"})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let prod = key(&base, json!({"role": "invoker", "workspace": "acme/prod"})).await;
    let (st, b) = call_as(&base, &prod, Method::POST, "/v1/execute", Some(batch)).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(status_of(&b, "r"), "success", "{b}");
    assert_eq!(status_of(&b, "w"), "denied", "{b}");
    assert!(b.to_string().contains("no-write"), "{b}");
    fs.stop();
    drop(served);
}

/// The README's workspace and key policy example loads and means what it says.
#[test]
fn the_readme_workspace_policy_example_works() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = &readme[readme
        .find("**Policies per workspace and per API key**")
        .unwrap()..];
    let start = block.find("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml: String = block[start..start + block[start..].find("```").unwrap()]
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_yaml_str(&yaml, None).unwrap();
    let scoped = PrincipalPolicies::from_config(&config).unwrap();
    assert!(scoped.knows("read-only"));
    use agentkit_core::policy::{PolicyScope, Verdict};
    let ctx = agentkit_core::RunContext::new()
        .with_principal(agentkit_core::Principal::new("acme", "prod").with_policy("read-only"));
    let applied = scoped.policies(&ctx);
    let names: Vec<&str> = applied.iter().map(Policy::name).collect();
    assert_eq!(names, ["no-delete", "read-only"]);
    let verdict = |tool: &str| {
        applied
            .iter()
            .map(|p| p.decide(tool, &json!({}), &[]).verdict)
            .max_by_key(|v| v.severity())
            .unwrap()
    };
    assert_eq!(verdict("crm__delete_contact"), Verdict::Deny);
    assert_eq!(verdict("crm__write_contact"), Verdict::Deny);
    assert_eq!(verdict("crm__read_contact"), Verdict::Allow);
}
