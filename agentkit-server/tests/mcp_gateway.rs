//! `/mcp` as the workspace's gateway, driven by the official Rust MCP SDK (rmcp) over real
//! HTTP: the workspace's outbound MCP servers federated as `server__tool` (policy-filtered
//! list, governed and audited calls, invisible to other workspaces), and the platform's
//! operations as `agentkit_*` tools behind the roles of their HTTP routes (a viewer reads,
//! an invoker cannot decide approvals, an operator's decision over MCP resumes the run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use inproc::call_as;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::{Policy, PolicyLayer};
use agentkit_core::{Agent, AgentLlm, Config, FnTool, ScriptedProvider};
use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, ContentBlock,
};
use agentkit_mcp::rmcp::service::RunningService;
use agentkit_mcp::rmcp::{RoleClient, ServiceExt};
use agentkit_runtime::{SqliteStore, Store};
use agentkit_server::Server;
use agentkit_server::gatewayops::GatewayConfig;
use agentkit_server::policy::StoreAudit;
use agentkit_server::tenancy::WorkspaceId;
use common::upstream::{Upstream, with_add, with_delete_all, with_echo};
use serde_json::{Value, json};

const ADMIN: &str = "test-key";

const POLICY: &str = r#"
policies:
  docs:
    tools:
      allow: ["fs__*", "slack__*"]
    chains:
      - pattern: ["fs__read_*", "slack__send_message"]
        action: require_approval
        reason: posting after reading files may leak them
"#;

/// An upstream MCP server on 127.0.0.1 with `add`, `echo` and `delete_all`.
async fn upstream(name: &str) -> Upstream {
    let server = with_echo(with_add(agentkit_mcp::McpServerBuilder::new(name, "1.0.0")));
    Upstream::serve(with_delete_all(server).build()).await
}

struct Running {
    base: String,
    sends: Arc<AtomicU32>,
    _served: inproc::InProcess,
    _dir: tempfile::TempDir,
    _upstreams: [Upstream; 2],
}

/// `crm` is seen by acme/prod only, `calc` (unlisted) by default/default; the gateway policy
/// denies `*__delete_*`. The `poster` agent (default/default) reads a file, then posts to
/// Slack, which a chain rule sends for approval.
async fn start() -> Running {
    let (crm, calc) = (upstream("crm").await, upstream("calc").await);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("g.db")).await.unwrap());
    let gateway_policy = Policy::compile(
        "gateway",
        &PolicySpec::new().with_denied_tools(["*__delete_*"]),
    )
    .unwrap();
    let gateway = GatewayConfig::new()
        .with_policy(gateway_policy)
        .with_server_workspaces("crm", [WorkspaceId::new("acme", "prod")]);

    let config = Config::from_yaml_str(POLICY, None).unwrap();
    let policy = Policy::compile("docs", &config.policies["docs"]).unwrap();
    let audit = Arc::new(StoreAudit::new(Arc::clone(&store)));
    let read = FnTool::new("fs__read_file", "Read a file", |_: Value| async move {
        Ok::<_, String>("# Docs")
    });
    let sends = Arc::new(AtomicU32::new(0));
    let send = inproc::counted_tool("slack__send_message", "Post to Slack", "sent", &sends);
    let model = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("fs__read_file", json!({"path": "/docs/readme.md"}))
            .then_tool_call("slack__send_message", json!({"text": "Docs"}))
            .then_text("posted"),
    );
    let agent = AgentLlm::shared(
        Agent::new("poster", "Read docs and post them.")
            .with_tool(read)
            .with_tool(send),
        model,
    )
    .with_memory(Server::memory_for(Arc::clone(&store)))
    .with_tool_layer(PolicyLayer::new(policy).with_audit(audit));
    let servers = [("crm", crm.url.as_str()), ("calc", calc.url.as_str())];
    let server = inproc::gateway_builder(Arc::clone(&store), ADMIN, &servers, gateway)
        .agent_llm("poster", Arc::new(agent), "Posts docs")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let base = served.base.clone();
    for ws in ["prod", "dev"] {
        let (s, b) = inproc::create_workspace(&base, ADMIN, "acme", ws).await;
        assert_eq!(s, 201, "{b}");
    }
    Running {
        base,
        sends,
        _served: served,
        _dir: dir,
        _upstreams: [crm, calc],
    }
}

async fn key(r: &Running, role: &str, workspace: &str) -> String {
    let body = json!({"name": role, "role": role, "workspace": workspace});
    inproc::create_key(&r.base, ADMIN, body).await.0
}

type Client = RunningService<RoleClient, ClientConfig>;

async fn client(r: &Running, key: &str) -> Client {
    inproc::mcp_session(&r.base, key, &[]).await
}

async fn names(c: &Client) -> Vec<String> {
    let mut n: Vec<String> = c
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    n.sort();
    n
}

async fn call(c: &Client, tool: &str, args: Value) -> Result<CallToolResult, String> {
    c.call_tool(
        CallToolRequestParams::new(tool.to_owned())
            .with_arguments(args.as_object().unwrap().clone()),
    )
    .await
    .map_err(|e| e.to_string())
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

const READ_OPS: [&str; 4] = [
    "agentkit_agents_list",
    "agentkit_approvals_list",
    "agentkit_runs_get",
    "agentkit_runs_list",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_sees_and_calls_its_servers_under_the_gateway_policy() {
    let r = start().await;
    let prod = client(&r, &key(&r, "invoker", "acme/prod").await).await;
    let listed = names(&prod).await;
    assert!(listed.contains(&"crm__add".to_owned()), "{listed:?}");
    assert!(listed.contains(&"crm__echo".to_owned()), "{listed:?}");
    assert!(
        !listed.contains(&"crm__delete_all".to_owned()),
        "the policy denies it, so it is not listed: {listed:?}"
    );
    assert!(
        !listed.iter().any(|n| n.starts_with("calc__")),
        "calc belongs to default/default: {listed:?}"
    );
    for op in READ_OPS {
        assert!(listed.contains(&op.to_owned()), "{op} missing: {listed:?}");
    }

    let sum = call(&prod, "crm__add", json!({"a": 2, "b": 40}))
        .await
        .unwrap();
    assert_eq!(sum.is_error, Some(false), "{sum:?}");
    assert_eq!(text(&sum), "42");

    // Called by name anyway, the denied tool is refused by the policy and does not run.
    let nuke = call(&prod, "crm__delete_all", json!({})).await.unwrap();
    assert_eq!(nuke.is_error, Some(true), "{nuke:?}");
    assert!(
        text(&nuke).contains("denied by policy `gateway`"),
        "{}",
        text(&nuke)
    );
    assert!(!text(&nuke).contains("deleted"));

    // Both decisions are in acme/prod's audit log.
    let entries = inproc::audit_entries(&r.base, ADMIN, "?workspace=acme/prod").await;
    let outcome = |tool: &str| {
        entries
            .iter()
            .find(|e| e["event"]["tool"] == tool)
            .map(|e| e["event"]["outcome"].clone())
    };
    assert_eq!(outcome("crm__add"), Some(json!("allowed")), "{entries:?}");
    assert_eq!(
        outcome("crm__delete_all"),
        Some(json!("denied")),
        "{entries:?}"
    );

    // Another workspace neither sees nor reaches acme/prod's server.
    let dev = client(&r, &key(&r, "invoker", "acme/dev").await).await;
    let listed = names(&dev).await;
    assert!(!listed.iter().any(|n| n.contains("__")), "{listed:?}");
    let err = call(&dev, "crm__add", json!({"a": 1, "b": 1}))
        .await
        .unwrap_err();
    assert!(err.contains("no MCP server `crm`"), "{err}");

    // The default workspace sees its own server, not acme's.
    let admin = client(&r, ADMIN).await;
    let listed = names(&admin).await;
    assert!(listed.contains(&"calc__add".to_owned()), "{listed:?}");
    assert!(!listed.iter().any(|n| n.starts_with("crm__")), "{listed:?}");
    assert!(listed.contains(&"poster".to_owned()), "{listed:?}");
    let sum = call(&admin, "calc__add", json!({"a": 1, "b": 2}))
        .await
        .unwrap();
    assert_eq!(text(&sum), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_follow_the_callers_role_and_workspace() {
    let r = start().await;
    // A run of default/default, to look for from acme/prod.
    let (s, run) = call_as(
        &r.base,
        ADMIN,
        reqwest::Method::POST,
        "/v1/agents/poster/runs",
        Some(json!({"message": "post"})),
    )
    .await;
    assert!(s == 200 || s == 202, "{s} {run}");
    let foreign_run = run["run_id"].as_str().unwrap().to_owned();

    let viewer = client(&r, &key(&r, "viewer", "acme/prod").await).await;
    let listed = names(&viewer).await;
    assert_eq!(
        listed,
        READ_OPS.map(str::to_owned).to_vec(),
        "a viewer reads only"
    );
    let runs = call(&viewer, "agentkit_runs_list", json!({}))
        .await
        .unwrap();
    assert_eq!(runs.is_error, Some(false), "{runs:?}");
    assert_eq!(
        runs.structured_content,
        Some(json!({"runs": []})),
        "acme/prod has no runs"
    );
    let other = call(&viewer, "agentkit_runs_get", json!({"run_id": foreign_run}))
        .await
        .unwrap();
    assert_eq!(other.is_error, Some(true), "{other:?}");
    assert!(text(&other).contains("404"), "{}", text(&other));
    let refused = call(
        &viewer,
        "agentkit_approvals_decide",
        json!({"run_id": foreign_run, "decision": "approve"}),
    )
    .await
    .unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text(&refused).contains("needs the `operator` role"),
        "{}",
        text(&refused)
    );
    let refused = call(&viewer, "crm__add", json!({"a": 1, "b": 1}))
        .await
        .unwrap();
    assert!(
        text(&refused).contains("needs the `invoker` role"),
        "{}",
        text(&refused)
    );
    let refused = call(&viewer, "agentkit_runs_list", json!({"bogus": 1}))
        .await
        .unwrap();
    assert!(
        text(&refused).contains("bad arguments"),
        "{}",
        text(&refused)
    );

    let developer = client(&r, &key(&r, "developer", "acme/prod").await).await;
    let listed = names(&developer).await;
    for op in ["agentkit_agents_promote", "agentkit_approvals_decide"] {
        assert!(listed.contains(&op.to_owned()), "{op}: {listed:?}");
    }
    // Promoting another workspace's agent: it does not exist here.
    let p = call(
        &developer,
        "agentkit_agents_promote",
        json!({"name": "poster", "from": "latest", "to": "prod"}),
    )
    .await
    .unwrap();
    assert_eq!(p.is_error, Some(true), "{p:?}");
    assert!(text(&p).contains("404"), "{}", text(&p));
}

async fn wait_for(r: &Running, run_id: &str, status: &str) -> Value {
    inproc::wait_run(&r.base, ADMIN, run_id, status).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_decided_over_mcp_resumes_the_run() {
    let r = start().await;
    let (s, run) = call_as(
        &r.base,
        ADMIN,
        reqwest::Method::POST,
        "/v1/agents/poster/runs",
        Some(json!({"message": "post the docs"})),
    )
    .await;
    assert!(s == 200 || s == 202, "{s} {run}");
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    wait_for(&r, &run_id, "waiting_approval").await;

    let invoker = client(&r, &key(&r, "invoker", "default/default").await).await;
    assert!(
        !names(&invoker)
            .await
            .contains(&"agentkit_approvals_decide".to_owned())
    );
    let refused = call(
        &invoker,
        "agentkit_approvals_decide",
        json!({"run_id": run_id, "decision": "approve"}),
    )
    .await
    .unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text(&refused).contains("needs the `operator` role"),
        "{}",
        text(&refused)
    );

    let operator = client(&r, &key(&r, "operator", "default/default").await).await;
    let pending = call(&operator, "agentkit_approvals_list", json!({}))
        .await
        .unwrap();
    let pending = pending.structured_content.unwrap();
    let pending = pending["approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["tool"], "slack__send_message");
    assert_eq!(r.sends.load(Ordering::SeqCst), 0);

    // A call id the run does not wait on decides nothing.
    let wrong = call(
        &operator,
        "agentkit_approvals_decide",
        json!({"run_id": run_id, "call_id": "no-such-call", "decision": "approve"}),
    )
    .await
    .unwrap();
    assert_eq!(wrong.is_error, Some(true), "{wrong:?}");
    assert_eq!(r.sends.load(Ordering::SeqCst), 0);
    let decided = call(
        &operator,
        "agentkit_approvals_decide",
        json!({"run_id": run_id, "call_id": pending[0]["call_id"], "decision": "approve",
               "reason": "fine to share"}),
    )
    .await
    .unwrap();
    assert_eq!(decided.is_error, Some(false), "{decided:?}");
    let done = wait_for(&r, &run_id, "succeeded").await;
    assert_eq!(done["output"]["text"], "posted", "{done}");
    assert_eq!(
        r.sends.load(Ordering::SeqCst),
        1,
        "the approved call ran once"
    );

    // The decision is recorded as the operator's, like one made over HTTP.
    let (_, decided) = call_as(
        &r.base,
        ADMIN,
        reqwest::Method::GET,
        "/v1/approvals?status=approved",
        None,
    )
    .await;
    let decided = decided.as_array().unwrap();
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(
        decided[0]["decision_reason"], "fine to share",
        "{decided:?}"
    );
    assert_ne!(decided[0]["decided_by"], "admin", "{decided:?}");
}

/// The README's raw JSON-RPC example (a stateless 2026-07-28 request with curl's headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_json_rpc_post_as_in_the_readme() {
    let r = start().await;
    let key = key(&r, "viewer", "acme/prod").await;
    let post = |body: Value| {
        let method = body["method"].as_str().unwrap().to_owned();
        let mut r = reqwest::Client::new()
            .post(format!("{}/mcp", r.base))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = body["params"]["name"].as_str() {
            r = r.header("mcp-name", name);
        }
        r.body(body.to_string()).send()
    };
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let res =
        post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}}))
            .await
            .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"agentkit_runs_list\""), "{body}");
    assert!(!body.contains("agentkit_approvals_decide"), "{body}");
    let res = post(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "agentkit_approvals_list", "arguments": {"status": "all"}, "_meta": meta}}),
    )
    .await
    .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"approvals\":[]"), "{body}");
}

/// A client of `/mcp` that counts `notifications/tools/list_changed`.
#[derive(Clone)]
struct ListWatcher(Arc<tokio::sync::Notify>);

impl agentkit_mcp::rmcp::ClientHandler for ListWatcher {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default()
    }

    async fn on_tool_list_changed(
        &self,
        _: agentkit_mcp::rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.0.notify_one();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_tool_added_later_is_listed_and_announced_at_once() {
    // The upstream is kept, to add a tool while the gateway's clients are connected.
    let up = with_echo(agentkit_mcp::McpServerBuilder::new("calc", "1.0.0")).build();
    let served_up = Upstream::serve(up.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("g.db")).await.unwrap());
    let servers = [("calc", served_up.url.as_str())];
    let served = inproc::serve_gateway(store, ADMIN, &servers, GatewayConfig::new()).await;

    let changed = Arc::new(tokio::sync::Notify::new());
    let c = ListWatcher(Arc::clone(&changed))
        .serve(inproc::mcp_transport(&served.base, Some(ADMIN), &[]))
        .await
        .unwrap();
    let listed = |c: &RunningService<RoleClient, ListWatcher>| {
        let peer = c.peer().clone();
        async move {
            let mut n: Vec<String> = peer
                .list_all_tools()
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.name.to_string())
                .filter(|n| n.starts_with("calc__"))
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(listed(&c).await, ["calc__echo"]);

    up.add_tool_fn(
        "add",
        "Adds a and b",
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
        |args, _| async move {
            let n = |k: &str| args.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            Ok(CallToolResult::success(vec![ContentBlock::text(
                (n("a") + n("b")).to_string(),
            )]))
        },
    )
    .await;
    // The gateway's client is told, within its 1 s watch (not the 30 s list cache) …
    tokio::time::timeout(Duration::from_secs(10), changed.notified())
        .await
        .expect("the /mcp client was not told that the tool list changed");
    // … and the new tool is listed and callable right away.
    assert_eq!(listed(&c).await, ["calc__add", "calc__echo"]);
    let r = c
        .peer()
        .call_tool(
            CallToolRequestParams::new("calc__add")
                .with_arguments(json!({"a": 2, "b": 3}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(text(&r), "5");
    c.cancel().await.unwrap();
}
