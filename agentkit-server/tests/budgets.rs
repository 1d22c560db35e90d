//! Budgets per period over real HTTP: runs spend until a budget is spent, then the next run
//! is refused (429, `Retry-After` to the period end) or stops before its next model call with
//! a clear error; other agents and workspaces are unaffected; a workspace budget is shared by
//! its agents; a new period starts over; racing runs never pass the budget (each model call's
//! estimate is held before it is made); the ledger survives a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

mod inproc;

use agentkit_core::config::{BudgetPeriod, BudgetSettings, PeriodBudget};
use agentkit_core::{
    Agent, AgentLlm, CompletionResponse, Content, FnTool, Message, Role, ScriptedProvider,
    StopReason, Usage,
};
use agentkit_runtime::{BudgetRules, SpendLedger, SqliteStore, Store};
use agentkit_server::Server;
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADMIN: &str = "budget-admin-key";
/// 4,000 input tokens of `gpt-4o` ($2.50 per million): one cent per model call.
const CALL_USD: f64 = 0.01;
/// 2026-12-06T18:00:00Z.
const T0: i64 = 1_796_580_000_000;
const DAY_MS: i64 = 86_400_000;

/// A model answering every request with one cent of usage.
fn priced() -> ScriptedProvider {
    ScriptedProvider::from_fn(|_| {
        Ok(CompletionResponse::new(
            Message::assistant("done"),
            Usage::new(4000, 0),
            StopReason::EndTurn,
            "gpt-4o",
        ))
    })
}

/// A model that keeps calling the `noop` tool (one cent per call) until the loop ends.
fn looping() -> ScriptedProvider {
    ScriptedProvider::from_fn(|req| {
        let n = req.messages.len();
        Ok(CompletionResponse::new(
            Message::new(
                Role::Assistant,
                vec![Content::tool_call(format!("c{n}"), "noop", json!({}))],
            ),
            Usage::new(4000, 0),
            StopReason::ToolUse,
            "gpt-4o",
        ))
    })
}

struct Running {
    base: String,
    clock: Arc<AtomicI64>,
    _served: inproc::InProcess,
}

async fn start(store: Arc<dyn Store>, rules: BudgetRules, clock: Arc<AtomicI64>) -> Running {
    let models = ModelFactory::offline().with_provider("scripted:priced", Arc::new(priced()));
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), models);
    let now = Arc::clone(&clock);
    let ledger =
        SpendLedger::new(Arc::clone(&store), rules).with_clock(move || now.load(Ordering::SeqCst));
    let looper = AgentLlm::new(
        Agent::new("looper", "Loop.").with_tool(FnTool::new(
            "noop",
            "Does nothing",
            |_: serde_json::Map<String, Value>| async move {
                Ok::<_, std::convert::Infallible>("ok".to_owned())
            },
        )),
        looping(),
    );
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .spec_builder(Arc::new(builder))
        .agent_llm("looper", Arc::new(looper), "Loops on a tool")
        .budgets(ledger)
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Running {
        base: served.base.clone(),
        clock,
        _served: served,
    }
}

impl Running {
    async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let auth = format!("Bearer {key}");
        let (status, headers, body) =
            inproc::request(&self.base, method, path, body, &[("authorization", &auth)]).await;
        (StatusCode::from_u16(status).unwrap(), headers, body)
    }

    async fn deploy(&self, key: &str, name: &str) {
        let (s, _, b) = self
            .call(
                key,
                Method::POST,
                "/v1/agents",
                Some(json!({"name": name, "kind": "agent",
                            "spec": {"model": "scripted:priced", "instructions": "Answer."}})),
            )
            .await;
        assert!(s.is_success(), "{s} {b}");
    }

    /// Start a run of `agent` and wait for it: (status, body).
    async fn run(&self, key: &str, agent: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        self.call(
            key,
            Method::POST,
            &format!("/v1/agents/{agent}/runs"),
            Some(json!({"message": "go", "wait": true})),
        )
        .await
    }

    async fn get_run(&self, id: &str) -> Value {
        self.call(ADMIN, Method::GET, &format!("/v1/runs/{id}"), None)
            .await
            .2
    }

    async fn budgets(&self, key: &str) -> Value {
        let (s, _, b) = self.call(key, Method::GET, "/v1/budgets", None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    /// A new workspace `org/ws` and a key of it with `role`.
    async fn workspace_key(&self, org: &str, ws: &str, role: &str) -> String {
        let (s, b) = inproc::create_workspace(&self.base, ADMIN, org, ws).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let body = json!({"name": "k", "role": role, "workspace": format!("{org}/{ws}")});
        inproc::create_key(&self.base, ADMIN, body).await.0
    }
}

fn budget_of<'a>(view: &'a Value, agent: Option<&str>) -> &'a Value {
    view["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["agent"].as_str() == agent)
        .unwrap_or_else(|| panic!("no budget for {agent:?} in {view}"))
}

fn memory_clock() -> Arc<AtomicI64> {
    Arc::new(AtomicI64::new(T0))
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open(dir.path().join("budgets.db"))
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn an_agent_budget_refuses_runs_once_spent_and_others_are_not_affected() {
    let dir = tempfile::tempdir().unwrap();
    let rules =
        BudgetRules::new().with_agent("writer", PeriodBudget::new(0.025, BudgetPeriod::Day));
    let r = start(sqlite(&dir).await, rules, memory_clock()).await;
    r.deploy(ADMIN, "writer").await;
    r.deploy(ADMIN, "reader").await;

    // Two runs of one cent each; a third would pass the 2.5-cent budget (its call is
    // expected to cost a cent, like the last ones).
    for _ in 0..2 {
        let (s, _, run) = r.run(ADMIN, "writer").await;
        assert_eq!(s, StatusCode::OK, "{run}");
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let view = r.budgets(ADMIN).await;
    let w = budget_of(&view, Some("writer"));
    assert_eq!(w["scope"], "agent");
    assert!(
        (w["spent_usd"].as_f64().unwrap() - 2.0 * CALL_USD).abs() < 1e-9,
        "{w}"
    );
    assert_eq!(w["calls"], 2);
    assert!(
        (w["remaining_usd"].as_f64().unwrap() - 0.005).abs() < 1e-9,
        "{w}"
    );
    assert_eq!(w["next_call_usd"], CALL_USD);
    assert_eq!(w["reserved_usd"], 0.0);
    assert_eq!(w["exhausted"], true);
    assert_eq!(w["period"], "day");
    assert_eq!(w["period_start"], "2026-12-06T00:00:00Z");
    assert_eq!(w["period_end"], "2026-12-07T00:00:00Z");

    // The third is refused: 429 until the end of the UTC day, saying why and what to do.
    let (s, headers, problem) = r.run(ADMIN, "writer").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    let retry: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry, 6 * 3600, "the day ends 6 h after 18:00");
    let detail = problem["detail"].as_str().unwrap();
    for part in [
        "agent `writer`",
        "too little left for the next model call",
        "$0.0200 spent of $0.0250 this day",
        "expected to cost $0.0100",
        "2026-12-07T00:00:00Z",
        "agents.writer.limits.budget.max_spend_usd",
    ] {
        assert!(detail.contains(part), "`{part}` missing from: {detail}");
    }
    assert_eq!(problem["type"], "urn:agentkit:problem:limit-reached");

    // Another agent of the workspace is not affected.
    let (s, _, run) = r.run(ADMIN, "reader").await;
    assert_eq!(
        (s, &run["status"]),
        (StatusCode::OK, &json!("succeeded")),
        "{run}"
    );

    // Another workspace has its own ledger for the same agent.
    let key = r.workspace_key("acme", "prod", "developer").await;
    r.deploy(&key, "writer").await;
    let (s, _, run) = r.run(&key, "writer").await;
    assert_eq!(
        (s, &run["status"]),
        (StatusCode::OK, &json!("succeeded")),
        "{run}"
    );
    let theirs = r.budgets(&key).await;
    assert_eq!(theirs["workspace"], "acme/prod");
    assert_eq!(budget_of(&theirs, Some("writer"))["calls"], 1);

    // A viewer may read the budgets; the route is in the OpenAPI document.
    let viewer = r.workspace_key("acme", "ops", "viewer").await;
    assert_eq!(r.budgets(&viewer).await["workspace"], "acme/ops");
    let (_, _, doc) = r.call(ADMIN, Method::GET, "/openapi.json", None).await;
    assert!(
        doc["paths"]["/v1/budgets"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
}

#[tokio::test]
async fn a_workspace_budget_is_shared_by_its_agents_and_starts_over_next_period() {
    let dir = tempfile::tempdir().unwrap();
    let rules = BudgetRules::new().with_workspaces(
        BudgetSettings::default().with_workspace(PeriodBudget::new(0.015, BudgetPeriod::Day)),
    );
    let clock = memory_clock();
    let r = start(sqlite(&dir).await, rules, Arc::clone(&clock)).await;
    r.deploy(ADMIN, "a").await;
    r.deploy(ADMIN, "b").await;
    assert_eq!(r.run(ADMIN, "a").await.2["status"], "succeeded");
    assert_eq!(r.run(ADMIN, "b").await.2["status"], "succeeded");
    // Two cents spent by two agents: the 1.5-cent workspace budget refuses both.
    for agent in ["a", "b"] {
        let (s, _, p) = r.run(ADMIN, agent).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{p}");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("workspace `default/default`")
                && detail.contains("budgets.workspace.max_spend_usd"),
            "{detail}"
        );
    }
    let w = budget_of(&r.budgets(ADMIN).await, None).clone();
    assert_eq!(
        (w["scope"].as_str(), w["calls"].as_u64()),
        (Some("workspace"), Some(2))
    );

    // The next UTC day starts over.
    r.clock.fetch_add(DAY_MS, Ordering::SeqCst);
    let w = budget_of(&r.budgets(ADMIN).await, None).clone();
    assert_eq!(w["period_start"], "2026-12-07T00:00:00Z");
    assert_eq!(
        (w["calls"].as_u64(), w["exhausted"].as_bool()),
        (Some(0), Some(false))
    );
    // The estimates carry over: a call is still expected to cost a cent.
    assert_eq!(w["next_call_usd"], CALL_USD);
    assert_eq!(r.run(ADMIN, "a").await.2["status"], "succeeded");
    let w = budget_of(&r.budgets(ADMIN).await, None).clone();
    assert_eq!(w["calls"], 1);
}

#[tokio::test]
async fn a_run_stops_before_the_model_call_that_would_pass_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    // The looper calls the model until its loop ends (10 rounds); the budget allows 3.5
    // cents: three calls, as a fourth one-cent call would pass it.
    let rules =
        BudgetRules::new().with_agent("looper", PeriodBudget::new(0.035, BudgetPeriod::Hour));
    let r = start(sqlite(&dir).await, rules, memory_clock()).await;
    let (s, _, run) = r.run(ADMIN, "looper").await;
    assert_eq!(s, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("exceeded its budget") && error.contains("agent `looper`"),
        "{error}"
    );
    let b = budget_of(&r.budgets(ADMIN).await, Some("looper")).clone();
    assert_eq!(b["calls"], 3, "{b}");
}

#[tokio::test]
async fn racing_runs_never_pass_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    // `call_estimate_usd`: the first call of each run is held at a cent too (without it, a
    // first call made before any cost is known is held at $0 and may pass the budget by its
    // cost: the documented residual).
    let rules = BudgetRules::new()
        .with_agent("looper", PeriodBudget::new(0.05, BudgetPeriod::Day))
        .with_call_estimate(CALL_USD);
    let r = Arc::new(start(sqlite(&dir).await, rules, memory_clock()).await);
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let r = Arc::clone(&r);
            tokio::spawn(async move { r.run(ADMIN, "looper").await })
        })
        .collect();
    for run in runs {
        let (_, _, body) = run.await.unwrap();
        // Each run stops on the budget (at its start or before a model call).
        let text = body.to_string();
        assert!(
            text.contains("budget of agent `looper`"),
            "a run ended without the budget stopping it: {text}"
        );
    }
    let b = budget_of(&r.budgets(ADMIN).await, Some("looper")).clone();
    let spent = b["spent_usd"].as_f64().unwrap();
    // Each call's estimate (a cent, like the last) is held before it is made, so the racing
    // runs use the budget up without passing it.
    assert!(spent >= 0.05 - CALL_USD - 1e-9, "{b}");
    assert!(spent <= 0.05 + 1e-9, "{b}");
    assert_eq!(b["reserved_usd"], 0.0, "every hold was settled: {b}");
}

#[tokio::test]
async fn the_ledger_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules =
        || BudgetRules::new().with_agent("writer", PeriodBudget::new(0.02, BudgetPeriod::Month));
    {
        let r = start(sqlite(&dir).await, rules(), memory_clock()).await;
        r.deploy(ADMIN, "writer").await;
        assert_eq!(r.run(ADMIN, "writer").await.2["status"], "succeeded");
        assert_eq!(r.run(ADMIN, "writer").await.2["status"], "succeeded");
    }
    let r = start(sqlite(&dir).await, rules(), memory_clock()).await;
    let b = budget_of(&r.budgets(ADMIN).await, Some("writer")).clone();
    assert_eq!(
        (b["calls"].as_u64(), b["exhausted"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(b["period_end"], "2027-01-01T00:00:00Z");
    let (s, _, p) = r.run(ADMIN, "writer").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{p}");
}

fn n(v: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(v).unwrap()
}

#[tokio::test]
async fn an_agent_over_its_run_start_rate_gets_429_and_others_are_not_affected() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let models = ModelFactory::offline().with_provider("scripted:priced", Arc::new(priced()));
    let builder = DeclarativeBuilder::new(&agentkit_core::Config::new(), models);
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .spec_builder(Arc::new(builder))
        .run_rate_limits(
            agentkit_server::RunRateLimits::new()
                .agent("writer", agentkit_core::config::Rate::new(n(1), n(2))),
        )
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let r = Running {
        base: served.base.clone(),
        clock: memory_clock(),
        _served: served,
    };
    r.deploy(ADMIN, "writer").await;
    r.deploy(ADMIN, "reader").await;
    let start = |agent: &'static str| {
        let r = &r;
        async move {
            let path = format!("/v1/agents/{agent}/runs");
            r.call(ADMIN, Method::POST, &path, Some(json!({"message": "go"})))
                .await
        }
    };
    // A burst of two, then 429 with the wait.
    assert_eq!(start("writer").await.0, StatusCode::ACCEPTED);
    assert_eq!(start("writer").await.0, StatusCode::ACCEPTED);
    let (s, headers, p) = start("writer").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{p}");
    assert_eq!(headers["retry-after"], "1");
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("agent `writer` may start 1 runs per second (bursts of 2)")
            && detail.contains("agents.writer.limits.rate_limit"),
        "{detail}"
    );
    // Another agent is not affected.
    assert_eq!(start("reader").await.0, StatusCode::ACCEPTED);
    // Once the wait is over, the agent starts again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(start("writer").await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_tool_over_its_policy_rate_limit_is_an_error_the_model_reads_and_an_audit_entry() {
    use agentkit_core::config::{PolicySpec, Rate};
    use agentkit_core::policy::{Policy, PolicyLayer};
    use std::sync::atomic::AtomicU32;

    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let counted = |name: &'static str, calls: Arc<AtomicU32>| {
        FnTool::new(name, "t", move |_: serde_json::Map<String, Value>| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(format!("{name} done"))
            }
        })
    };
    let searches = Arc::new(AtomicU32::new(0));
    let sends = Arc::new(AtomicU32::new(0));
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("github__search", json!({"q": "a"}))
            .then_tool_call("github__search", json!({"q": "b"}))
            .then_tool_call("github__search", json!({"q": "c"}))
            .then_tool_call("slack__send", json!({"text": "hi"}))
            .then_text("done"),
    );
    let policy = Policy::compile(
        "github-calm",
        &PolicySpec::new().with_rate_limit("github__*", Rate::new(n(1), n(2))),
    )
    .unwrap();
    let audit = Arc::new(agentkit_server::policy::StoreAudit::new(Arc::clone(&store)));
    let agent = AgentLlm::shared(
        Agent::new("searcher", "Search.")
            .with_tool(counted("github__search", Arc::clone(&searches)))
            .with_tool(counted("slack__send", Arc::clone(&sends))),
        provider.clone(),
    )
    .with_tool_layer(PolicyLayer::new(policy).with_audit(audit));
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .agent_llm("searcher", Arc::new(agent), "Searches")
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let r = Running {
        base: served.base.clone(),
        clock: memory_clock(),
        _served: served,
    };
    let (s, _, run) = r.run(ADMIN, "searcher").await;
    assert_eq!(
        (s, &run["status"]),
        (StatusCode::OK, &json!("succeeded")),
        "{run}"
    );
    // The burst of two ran, the third search was not made, the other tool ran.
    assert_eq!(searches.load(Ordering::SeqCst), 2);
    assert_eq!(sends.load(Ordering::SeqCst), 1);
    // The model read the tool error with the retry time.
    let seen = serde_json::to_string(&provider.requests()[3].messages).unwrap();
    assert!(
        seen.contains("over the rate limit `github__*` (1 per second, bursts of 2); retry in"),
        "{seen}"
    );
    // And the audit log has the refusal.
    let (s, _, page) = r.call(ADMIN, Method::GET, "/v1/audit", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let denied: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 1, "{page}");
    assert_eq!(denied[0]["event"]["rule"], "rate_limits.github__*");
    assert_eq!(denied[0]["event"]["tool"], "github__search");
}

#[tokio::test]
async fn budgets_and_run_rate_limits_come_from_agentkit_yaml() {
    let yaml = "\
budgets:
  workspace: {max_spend_usd: 20, period: day}
agents:
  writer:
    model: scripted
    instructions: Write.
    limits:
      budget: {max_spend_usd: 5, period: week}
      rate_limit: {per_second: 1, burst: 1}
";
    let config = agentkit_core::Config::from_yaml_str_with_env(yaml, None, &|_| None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let builder = Server::builder(sqlite(&dir).await)
        .admin_key(ADMIN)
        .poll_interval(Duration::from_millis(50));
    let server = agentkit_server::spec::server_builder(builder, &config)
        .unwrap()
        .0
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let r = Running {
        base: served.base.clone(),
        clock: memory_clock(),
        _served: served,
    };
    let view = r.budgets(ADMIN).await;
    let ws = budget_of(&view, None);
    assert_eq!(
        (ws["max_spend_usd"].as_f64(), ws["period"].as_str()),
        (Some(20.0), Some("day"))
    );
    let agent = budget_of(&view, Some("writer"));
    assert_eq!(
        (agent["max_spend_usd"].as_f64(), agent["period"].as_str()),
        (Some(5.0), Some("week"))
    );
    // Two starts at once (without waiting for the run, so well within the second): the
    // second is over the rate.
    let body = || Some(json!({"message": "go"}));
    let (s, _, run) = r
        .call(ADMIN, Method::POST, "/v1/agents/writer/runs", body())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    let (s, headers, p) = r
        .call(ADMIN, Method::POST, "/v1/agents/writer/runs", body())
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{p}");
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_key_reads_only_its_own_workspace_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let rules = BudgetRules::new().with_workspaces(
        BudgetSettings::default()
            .with_workspace_budget("acme/prod", PeriodBudget::new(7.0, BudgetPeriod::Week)),
    );
    let r = start(sqlite(&dir).await, rules, memory_clock()).await;
    let prod = r.workspace_key("acme", "prod", "viewer").await;
    let dev = r.workspace_key("acme", "dev", "viewer").await;
    let mine = r.budgets(&prod).await;
    assert_eq!(budget_of(&mine, None)["max_spend_usd"], 7.0);
    // acme/dev has no budget of its own and there is no default.
    assert_eq!(r.budgets(&dev).await["budgets"], json!([]));
    // Another workspace's budgets are not found; the admin key may name any workspace.
    let (s, _, _) = r
        .call(&dev, Method::GET, "/v1/budgets?workspace=acme/prod", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, theirs) = r
        .call(ADMIN, Method::GET, "/v1/budgets?workspace=acme/prod", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(budget_of(&theirs, None)["period"], "week");
    // Without a key: 401.
    let res = reqwest::get(format!("{}/v1/budgets", r.base))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_resumed_run_is_not_charged_again_for_its_journaled_model_calls() {
    use agentkit_core::config::PolicySpec;
    use agentkit_core::policy::{Policy, PolicyLayer};

    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    // Asks for `send` until it has a tool result, then answers: one cent per call.
    let model = Arc::new(ScriptedProvider::from_fn(|req| {
        let answered = req.messages.iter().any(|m| {
            m.content
                .iter()
                .any(|c| matches!(c, Content::ToolResult { .. }))
        });
        Ok(if answered {
            CompletionResponse::new(
                Message::assistant("sent"),
                Usage::new(4000, 0),
                StopReason::EndTurn,
                "gpt-4o",
            )
        } else {
            CompletionResponse::new(
                Message::new(
                    Role::Assistant,
                    vec![Content::tool_call("c1", "send", json!({}))],
                ),
                Usage::new(4000, 0),
                StopReason::ToolUse,
                "gpt-4o",
            )
        })
    }));
    let policy = Policy::compile("p", &PolicySpec::new().with_require_approval(["send"])).unwrap();
    let agent = AgentLlm::shared(
        Agent::new("asker", "Send.").with_tool(FnTool::new(
            "send",
            "Sends",
            |_: serde_json::Map<String, Value>| async move {
                Ok::<_, std::convert::Infallible>("ok".to_owned())
            },
        )),
        model.clone(),
    )
    .with_tool_layer(PolicyLayer::new(policy).with_audit(Arc::new(
        agentkit_server::policy::StoreAudit::new(Arc::clone(&store)),
    )));
    let ledger = SpendLedger::new(
        Arc::clone(&store),
        BudgetRules::new().with_agent("asker", PeriodBudget::new(1.0, BudgetPeriod::Day)),
    );
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .agent_llm("asker", Arc::new(agent), "Asks before sending")
        .budgets(ledger)
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let r = Running {
        base: served.base.clone(),
        clock: memory_clock(),
        _served: served,
    };
    let (s, _, run) = r
        .call(
            ADMIN,
            Method::POST,
            "/v1/agents/asker/runs",
            Some(json!({"message": "go"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{run}");
    let id = run["run_id"].as_str().unwrap().to_owned();

    let mut waiting = false;
    for _ in 0..200 {
        if r.get_run(&id).await["status"] == "waiting_approval" {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(waiting, "the run never waited for approval");
    let calls = |v: Value| budget_of(&v, Some("asker"))["calls"].as_u64().unwrap();
    assert_eq!(calls(r.budgets(ADMIN).await), 1);

    // Approval re-executes the run: its first model call comes from the journal.
    let (s, _, b) = r
        .call(
            ADMIN,
            Method::POST,
            &format!("/v1/runs/{id}/approve"),
            Some(json!({})),
        )
        .await;
    assert!(s.is_success(), "{s} {b}");
    let mut done = Value::Null;
    for _ in 0..200 {
        done = r.get_run(&id).await;
        if done["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(model.call_count(), 2, "two real model calls");
    let v = r.budgets(ADMIN).await;
    assert_eq!(calls(v.clone()), 2, "charged once per real call: {v}");
    let spent = budget_of(&v, Some("asker"))["spent_usd"].as_f64().unwrap();
    assert!((spent - 2.0 * CALL_USD).abs() < 1e-9, "{v}");
}
