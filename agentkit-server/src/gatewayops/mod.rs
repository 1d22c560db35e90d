//! GatewayOps: outside agents call the workspace's outbound MCP tools through the server —
//! in batches (`POST /v1/execute`, parallel or sequential, with timeouts), as an SSE stream
//! (`POST /v1/execute/stream`), over a WebSocket (`POST /v1/agents/connect`), list them in
//! OpenAI function format (`GET /v1/mcp/tools`) and check text for prompt injections
//! (`POST /v1/safety/analyze`, see [`safety`]).
//!
//! Every call goes through one path ([`GatewayOps`]'s call, also behind
//! `POST /v1/servers/{name}/call_tool`): the server must be visible to the caller's workspace
//! (another workspace's server is an unknown server), the tool must pass the server's tool
//! filter, and the call runs through the same [`PolicyLayer`] an agent's tool calls do, named
//! `server__tool`, with every decision written to the workspace's hash-chained audit log. A
//! denied call is answered with status `denied` and the policy's reason. A call that needs an
//! approval (a policy, a platform's `require_approval_for`, a safety check) becomes a durable
//! run of the built-in workflow [`durable::GATEWAY_CALL`] in the caller's workspace and is
//! answered at once with status `pending_approval`, its `run_id` and `call_id`: it waits in the
//! same approval queue as agents' calls, and once approved (on any node, after a restart too)
//! it is made exactly once and the run's output is its result. See [`durable`].
//!
//! ```
//! use std::time::Duration;
//! use agentkit_server::gatewayops::GatewayConfig;
//! use agentkit_server::tenancy::WorkspaceId;
//!
//! let config = GatewayConfig::new()
//!     .with_max_calls(20)
//!     .with_default_timeout(Duration::from_secs(10))
//!     // Only workspace acme/prod sees the `crm` server (unlisted servers: default/default).
//!     .with_server_workspaces("crm", [WorkspaceId::new("acme", "prod")])
//!     .with_tool_cost("crm__*", 0.002)?;
//! assert_eq!(config.max_calls, 20);
//! # Ok::<_, agentkit_core::Error>(())
//! ```

pub mod durable;
pub(crate) mod history;
pub(crate) mod idempotency;
pub mod platforms;
pub mod safety;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkit_core::config::PolicySpec;
use agentkit_core::policy::{AuditEvent, AuditOutcome, AuditSink, Policy, PolicyLayer};
use agentkit_core::{Error, Result, RunContext, RunEvent, ToolOutput, ToolRequest, ToolService};
use agentkit_mcp::rmcp::model::CallToolResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceExt};

use crate::platform::Platform;
use crate::servers::McpFailure;
use crate::tenancy::{Caller, WorkspaceId};

pub use platforms::PlatformRegistration;
pub use safety::{Analyzer, Detection, Detector};

/// How the gateway API behaves (`gateway:` in `agentkit.yaml`; [`ServerBuilder::gateway`](crate::ServerBuilder::gateway)).
#[derive(Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// The most calls one `/v1/execute` batch may carry (default 50).
    pub max_calls: usize,
    /// How many calls of a batch (or of one WebSocket) run at once (default 16).
    pub max_parallel: usize,
    /// A call's timeout when the request gives none (default 30 s).
    pub default_timeout: Duration,
    /// The longest timeout a request may ask for (default 5 min); also the timeout of a
    /// federated `/mcp` call made as an MCP task (a client's way to ask for a long call).
    pub max_timeout: Duration,
    /// The policy every gateway call runs under (default: one that allows every tool, so
    /// calls are still audited).
    pub policy: Option<Policy>,
    /// Which workspaces see which outbound server; a server not listed is seen by
    /// `default/default` only.
    pub server_workspaces: BTreeMap<String, Vec<WorkspaceId>>,
    /// The price of one call of the tools matching a glob over `server__tool` (first match).
    pub tool_costs: Vec<(String, f64)>,
    /// The injection detectors of `/v1/safety/analyze`.
    pub analyzer: Analyzer,
    /// How long a `POST /v1/agents/connect` id stays valid (default 60 s).
    pub connect_ttl: Duration,
    /// The largest WebSocket message accepted (default 1 MiB; larger ones get an `error`).
    pub max_message_bytes: usize,
    /// Registered client platforms: CORS origins, default servers, block and approval globs.
    pub platforms: Vec<PlatformRegistration>,
    /// Injection checks on every call's arguments and answer (default: none).
    pub safety: safety::SafetyLayer,
    /// Whether `/mcp` serves the platform's operations as tools (default true;
    /// `gateway.platform_tools`).
    pub platform_tools: bool,
    /// The policies of workspaces and API keys (`server.workspace_policies`, a key's
    /// `policy`), applied to every call on top of [`policy`](Self::policy) (default: none).
    pub principal_policies: Arc<crate::policy::PrincipalPolicies>,
    /// How long an idempotency key of a `/v1/execute` call is remembered (default 24 h;
    /// `gateway.idempotency_window_ms`): a retry with the same key within it gets the first
    /// attempt's result instead of calling the tool again.
    pub idempotency_window: Duration,
    /// How long a gateway call stays in its caller's tool history, the one chain rules look
    /// at outside a run: the calls the same key made within it (default 1 h;
    /// `gateway.chain_window_ms`).
    pub chain_window: Duration,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("max_calls", &self.max_calls)
            .field("max_parallel", &self.max_parallel)
            .field("default_timeout", &self.default_timeout)
            .field("max_timeout", &self.max_timeout)
            .field("policy", &self.policy.as_ref().map(Policy::name))
            .field("server_workspaces", &self.server_workspaces)
            .field("platforms", &self.platforms)
            .field("platform_tools", &self.platform_tools)
            .finish_non_exhaustive()
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_calls: 50,
            max_parallel: 16,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(300),
            policy: None,
            server_workspaces: BTreeMap::new(),
            tool_costs: Vec::new(),
            analyzer: Analyzer::new(),
            connect_ttl: Duration::from_secs(60),
            max_message_bytes: 1024 * 1024,
            platforms: Vec::new(),
            safety: safety::SafetyLayer::new(),
            platform_tools: true,
            principal_policies: Arc::default(),
            idempotency_window: idempotency::DEFAULT_WINDOW,
            chain_window: history::DEFAULT_WINDOW,
        }
    }
}

impl GatewayConfig {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// At most `n` calls per batch (at least 1).
    #[must_use]
    pub fn with_max_calls(mut self, n: usize) -> Self {
        self.max_calls = n.max(1);
        self
    }

    /// At most `n` calls at once per batch or WebSocket (at least 1).
    #[must_use]
    pub fn with_max_parallel(mut self, n: usize) -> Self {
        self.max_parallel = n.max(1);
        self
    }

    /// A call's timeout when the request names none.
    #[must_use]
    pub fn with_default_timeout(mut self, d: Duration) -> Self {
        self.default_timeout = d;
        self
    }

    /// The longest timeout a request may ask for.
    #[must_use]
    pub fn with_max_timeout(mut self, d: Duration) -> Self {
        self.max_timeout = d;
        self
    }

    /// Remember the idempotency keys of `/v1/execute` calls for `d` (at least 1 s).
    #[must_use]
    pub fn with_idempotency_window(mut self, d: Duration) -> Self {
        self.idempotency_window = d.max(Duration::from_secs(1));
        self
    }

    /// Keep a gateway call in its caller's tool history (what chain rules see outside a run)
    /// for `d` (at least 1 s).
    #[must_use]
    pub fn with_chain_window(mut self, d: Duration) -> Self {
        self.chain_window = d.max(Duration::from_secs(1));
        self
    }

    /// Run every gateway call under `policy`.
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Apply the policies of workspaces and API keys `policies` too.
    #[must_use]
    pub fn with_principal_policies(mut self, policies: crate::policy::PrincipalPolicies) -> Self {
        self.principal_policies = Arc::new(policies);
        self
    }

    /// Server `server` is seen by exactly these workspaces.
    #[must_use]
    pub fn with_server_workspaces(
        mut self,
        server: impl Into<String>,
        workspaces: impl IntoIterator<Item = WorkspaceId>,
    ) -> Self {
        self.server_workspaces
            .insert(server.into(), workspaces.into_iter().collect());
        self
    }

    /// One call of a tool matching `glob` (over `server__tool`) costs `usd`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the glob does not compile.
    pub fn with_tool_cost(mut self, glob: impl Into<String>, usd: f64) -> Result<Self> {
        let glob = glob.into();
        compile_glob(&glob, "gateway.tool_costs")?;
        self.tool_costs.push((glob, usd));
        Ok(self)
    }

    /// Use `analyzer` for `/v1/safety/analyze`.
    #[must_use]
    pub fn with_analyzer(mut self, analyzer: Analyzer) -> Self {
        self.analyzer = analyzer;
        self
    }

    /// Connection ids of `POST /v1/agents/connect` expire after `d`.
    #[must_use]
    pub fn with_connect_ttl(mut self, d: Duration) -> Self {
        self.connect_ttl = d;
        self
    }

    /// WebSocket messages larger than `n` bytes are refused with an `error` message.
    #[must_use]
    pub fn with_max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n.max(64);
        self
    }

    /// Check every call's arguments and answers for prompt injections (see
    /// [`SafetyLayer`](safety::SafetyLayer)); its decisions go to the gateway's audit log.
    #[must_use]
    pub fn with_safety(mut self, layer: safety::SafetyLayer) -> Self {
        self.safety = layer;
        self
    }

    /// Serve (or not) the platform's operations as `/mcp` tools (`agentkit_runs_list`, …).
    #[must_use]
    pub fn with_platform_tools(mut self, on: bool) -> Self {
        self.platform_tools = on;
        self
    }

    /// Register a client platform.
    #[must_use]
    pub fn with_platform(mut self, platform: PlatformRegistration) -> Self {
        self.platforms.push(platform);
        self
    }
}

fn config_error(key: String, message: String) -> Error {
    Error::Config {
        file: None,
        key,
        message,
    }
}

impl GatewayConfig {
    /// The `gateway:` section of `config` (with its `policies:` and `mcp.servers`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key that is wrong: an unknown policy or server, a
    /// workspace that is not `org/workspace`, a glob that does not compile, a bad origin.
    pub fn from_config(config: &agentkit_core::Config) -> Result<Self> {
        let g = &config.gateway;
        let mut out = Self::new();
        if let Some(n) = g.max_calls {
            if n == 0 {
                return Err(config_error(
                    "gateway.max_calls".into(),
                    "must be at least 1".into(),
                ));
            }
            out = out.with_max_calls(n);
        }
        if let Some(n) = g.max_parallel {
            if n == 0 {
                return Err(config_error(
                    "gateway.max_parallel".into(),
                    "must be at least 1".into(),
                ));
            }
            out = out.with_max_parallel(n);
        }
        for (key, v, set) in [
            ("default_timeout_ms", g.default_timeout_ms, 0),
            ("max_timeout_ms", g.max_timeout_ms, 1),
        ] {
            let Some(ms) = v else { continue };
            if ms == 0 {
                return Err(config_error(
                    format!("gateway.{key}"),
                    "must be at least 1".into(),
                ));
            }
            let d = Duration::from_millis(ms);
            out = if set == 0 {
                out.with_default_timeout(d)
            } else {
                out.with_max_timeout(d)
            };
        }
        if out.default_timeout > out.max_timeout {
            return Err(config_error(
                "gateway.default_timeout_ms".into(),
                format!(
                    "{} ms is longer than gateway.max_timeout_ms ({} ms)",
                    out.default_timeout.as_millis(),
                    out.max_timeout.as_millis()
                ),
            ));
        }
        let layer = safety::SafetyLayer::from_settings(&g.safety);
        out = out.with_safety(layer);
        if let Some(on) = g.platform_tools {
            out = out.with_platform_tools(on);
        }
        if let Some(n) = g.max_message_bytes {
            out = out.with_max_message_bytes(n);
        }
        if let Some(ms) = g.idempotency_window_ms {
            if ms < 1000 {
                return Err(config_error(
                    "gateway.idempotency_window_ms".into(),
                    "must be at least 1000 (1 s)".into(),
                ));
            }
            out = out.with_idempotency_window(Duration::from_millis(ms));
        }
        if let Some(ms) = g.chain_window_ms {
            if ms < 1000 {
                return Err(config_error(
                    "gateway.chain_window_ms".into(),
                    "must be at least 1000 (1 s)".into(),
                ));
            }
            out = out.with_chain_window(Duration::from_millis(ms));
        }
        out = out.with_principal_policies(crate::policy::PrincipalPolicies::from_config(config)?);
        if let Some(p) = &g.policy {
            let Some(spec) = config.policies.get(p) else {
                let known: Vec<&str> = config.policies.keys().map(String::as_str).collect();
                return Err(config_error(
                    "gateway.policy".into(),
                    format!(
                        "no policy named `{p}` in `policies:` (declared: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            let policy = Policy::compile(p.clone(), spec).map_err(|e| match e {
                Error::Config { key, message, .. } => {
                    config_error(format!("policies.{p}.{key}"), message)
                }
                other => other,
            })?;
            out = out.with_policy(policy);
        }
        for (server, workspaces) in &g.servers {
            if !config.mcp.servers.contains_key(server) {
                return Err(config_error(
                    format!("gateway.servers.{server}"),
                    format!("no MCP server `{server}` in `mcp.servers`"),
                ));
            }
            let mut ids = Vec::new();
            for (i, w) in workspaces.iter().enumerate() {
                let id = WorkspaceId::parse(w, crate::tenancy::DEFAULT_ORG).map_err(|e| {
                    config_error(
                        format!("gateway.servers.{server}[{i}]"),
                        format!("`{w}` is not a workspace (`org/workspace`): {e}"),
                    )
                })?;
                ids.push(id);
            }
            out = out.with_server_workspaces(server.clone(), ids);
        }
        for (i, c) in g.tool_costs.iter().enumerate() {
            if !c.usd.is_finite() || c.usd < 0.0 {
                return Err(config_error(
                    format!("gateway.tool_costs[{i}].usd"),
                    format!("a price must be a number ≥ 0, got {}", c.usd),
                ));
            }
            out = out
                .with_tool_cost(c.tool.clone(), c.usd)
                .map_err(|e| match e {
                    Error::Config { message, .. } => {
                        config_error(format!("gateway.tool_costs[{i}].tool"), message)
                    }
                    other => other,
                })?;
        }
        let base = match &out.policy {
            Some(p) => p.clone(),
            None => Policy::compile("gateway", &PolicySpec::new())?,
        };
        for (i, p) in g.platforms.iter().enumerate() {
            platforms::Compiled::new(p, i, &base)?;
            for (j, s) in p.default_servers.iter().enumerate() {
                if !config.mcp.servers.contains_key(s) {
                    return Err(config_error(
                        format!("gateway.platforms[{i}].default_servers[{j}]"),
                        format!("no MCP server `{s}` in `mcp.servers`"),
                    ));
                }
            }
            if g.platforms[..i].iter().any(|q| q.name == p.name) {
                return Err(config_error(
                    format!("gateway.platforms[{i}].name"),
                    format!("platform `{}` is registered twice", p.name),
                ));
            }
            out = out.with_platform(p.clone());
        }
        Ok(out)
    }
}

fn compile_glob(glob: &str, key: &str) -> Result<globset::GlobMatcher> {
    globset::Glob::new(glob)
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::Config {
            file: None,
            key: key.to_owned(),
            message: format!("invalid tool glob `{glob}`: {}", e.kind()),
        })
}

/// How one call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CallStatus {
    /// The tool ran and answered.
    Success,
    /// The tool ran and reported an error, or its server could not be reached.
    Error,
    /// The call did not finish within its timeout (the server was told to cancel it).
    Timeout,
    /// A policy refused the call; `error` says which rule and why.
    Denied,
    /// The call was not made because it was over a tool rate limit (a policy's
    /// `rate_limits`); `error` names the rule and `retry_after_ms` says when a retry may pass.
    RateLimited,
    /// The client cancelled it (WebSocket `cancel`, or a closed stream).
    Cancelled,
    /// A policy (or a platform's `require_approval_for`, or a safety check) requires a
    /// human's approval: the call waits in the approval queue as durable run `run_id` (call
    /// `call_id`); once approved it is made exactly once and the run's output is its result
    /// (`GET /v1/runs/{run_id}`). See [the module docs](self).
    PendingApproval,
    /// The call runs in durable run `run_id` (call `call_id`) and was answered before it
    /// ended: a federated `/mcp` call from a client that declared MCP Tasks, whose task is
    /// that run. Its outcome is the run's output (`GET /v1/runs/{run_id}`).
    Running,
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct CallResult {
    /// The call's id, as sent.
    pub id: String,
    /// How it ended.
    pub status: CallStatus,
    /// The MCP content blocks the tool answered (`[]` when it did not run).
    #[schema(value_type = Vec<Object>)]
    pub content: Vec<Value>,
    /// Its structured result, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub structured_content: Option<Value>,
    /// Why it did not succeed (denials name the policy and the rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the safety checks flagged in its arguments or answer (`gateway.safety`, action
    /// `flag`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// How long it took.
    pub duration_ms: u64,
    /// What it cost in USD (`gateway.tool_costs`; 0 unless priced).
    pub cost: f64,
    /// The durable run the call waits in (status `pending_approval`), or ran in (a call that
    /// needed an approval): read its outcome with `GET /v1/runs/{run_id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The call's id in the approval queue (with `run_id`): decide it with
    /// `POST /v1/approvals/{run_id}/{call_id}/approve` (or `/reject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// With status `rate_limited`: how long until a retry may pass, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl CallResult {
    /// A result without content: the call did not run (or did not finish).
    pub(crate) fn failed(id: &str, status: CallStatus, error: String, took: Duration) -> Self {
        Self {
            id: id.to_owned(),
            status,
            content: Vec::new(),
            structured_content: None,
            error: Some(error),
            flags: Vec::new(),
            duration_ms: millis(took),
            cost: 0.0,
            run_id: None,
            call_id: None,
            retry_after_ms: None,
        }
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A progress notification of a running call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct CallProgress {
    /// The call's id.
    pub id: String,
    /// Progress so far.
    pub progress: f64,
    /// The total, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// A message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One call to make: `tool` of `server` with `arguments`.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) id: String,
    pub(crate) server: String,
    pub(crate) tool: String,
    pub(crate) arguments: Map<String, Value>,
    /// How long it may take: its own timeout, or what is left of its batch's when that is
    /// shorter.
    pub(crate) timeout: Duration,
    /// Set when its batch's deadline left it less than its own timeout.
    pub(crate) cut: Option<Cut>,
}

/// The timeouts a client asked for, when the batch's deadline leaves a call less time than
/// its own timeout (its `timeout` is then what is left of the batch's).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cut {
    /// The call's own timeout (its `timeout_ms`, else the batch's).
    pub(crate) own: Duration,
    /// The batch's timeout (its `timeout_ms`, else `gateway.default_timeout_ms`).
    pub(crate) batch: Duration,
}

impl Call {
    /// The timeout the client asked for this call (not what is left of its batch's).
    pub(crate) fn asked_timeout(&self) -> Duration {
        self.cut.map_or(self.timeout, |c| c.own)
    }
}

/// What making a call came to.
pub(crate) enum Made {
    /// It ended (ran, failed, was denied, timed out, was cancelled).
    Done(CallResult),
    /// It needs a human's approval (outside a durable run): hand it to one. The policy's
    /// reason.
    NeedsApproval(String),
}

/// Receives the progress notifications of running calls. (The MCP client keeps a finished
/// call's context, and so this, for a short while to route late notifications: do not wait
/// for it to be dropped.)
pub(crate) type ProgressFn = Arc<dyn Fn(CallProgress) + Send + Sync>;

/// Where a call runs: its trace (the audit's run id), cancellation and progress listener.
#[derive(Clone)]
pub(crate) struct CallEnv {
    pub(crate) trace_id: String,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Option<ProgressFn>,
    /// Extra deny / approval globs of the caller's registered platform.
    pub(crate) platform: Option<Arc<platforms::Compiled>>,
}

impl CallEnv {
    pub(crate) fn new(trace_id: impl Into<String>) -> Self {
        Self {
            trace_id: trace_id.into(),
            cancel: CancellationToken::new(),
            progress: None,
            platform: None,
        }
    }
}

/// The tools of the successful calls in `history`, oldest first (what a durable run of a
/// gateway call keeps of it: chain rules look at nothing else).
fn earlier_calls(history: &agentkit_core::SharedToolHistory) -> Vec<String> {
    history
        .to_vec()
        .into_iter()
        .filter(|c| !c.is_error)
        .map(|c| c.tool)
        .collect()
}

/// A fresh trace id (a UUIDv7: the MCP `traceparent` sent upstream carries it).
pub(crate) fn trace_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The audit sink of one call: writes through to the workspace's log and remembers the last
/// outcome, so the caller can tell a denial from a tool error.
struct Capture {
    inner: Arc<dyn AuditSink>,
    last: Mutex<Option<AuditOutcome>>,
    flags: Mutex<Vec<String>>,
    /// Outside a durable run: a request for approval is not written (the durable run the
    /// call is handed to asks again, under its own run id) but noted here, with its reason.
    defer: bool,
    asked: Mutex<Option<String>>,
    /// This process's node id, written on the entry.
    node: Option<String>,
}

#[async_trait]
impl AuditSink for Capture {
    async fn record(&self, event: AuditEvent) -> Result<()> {
        if self.defer && event.outcome == AuditOutcome::ApprovalRequested {
            let why = format!(
                "{} (policy `{}`, rule `{}`)",
                event.reason,
                event.policy,
                event.rule.as_deref().unwrap_or("-")
            );
            *agentkit_core::sync::lock(&self.asked) = Some(why);
            return Ok(());
        }
        *agentkit_core::sync::lock(&self.last) = Some(event.outcome);
        let mut event = event;
        if event.via.is_none() {
            event.via = Some(crate::policy::GATEWAY_VIA.to_owned());
            event.node.clone_from(&self.node);
        }
        if event.policy == "safety"
            && let Some(f) = event.reason.strip_prefix("flagged: ")
        {
            let rule = event.rule.clone().unwrap_or_default();
            agentkit_core::sync::lock(&self.flags).push(format!("{rule}: {f}"));
        }
        self.inner.record(event).await
    }
}

/// A connection id handed out by `POST /v1/agents/connect`, not yet used.
#[derive(Debug)]
struct Pending {
    workspace: WorkspaceId,
    key_id: Option<String>,
    expires: Instant,
}

/// The gateway API's state: its configuration, policy, audit log and pending WebSocket
/// connections.
pub struct GatewayOps {
    config: GatewayConfig,
    policy: Policy,
    /// The tool-level part of `policy` (which tools at all), for listings.
    listing: Policy,
    costs: Vec<(globset::GlobMatcher, f64)>,
    audit: Arc<dyn AuditSink>,
    pending: Mutex<HashMap<String, Pending>>,
    platforms: Vec<Arc<platforms::Compiled>>,
    /// Server → its tools, as last listed (to refuse an unknown tool before a batch runs, and
    /// to list the tools `/mcp` federates).
    /// Per server, its tools as last listed.
    tools: Mutex<HashMap<String, Listed>>,
    /// Each caller's recent calls: the tool history chain rules see at the gateway.
    histories: history::Histories,
    /// The server's vault, which seals the arguments of calls handed to durable runs (set
    /// once the server is built).
    vault: std::sync::OnceLock<crate::vault::Vault>,
    /// The server's audit log, where a caller's gateway calls from before this process
    /// started are read (set by the server's builder).
    audit_log: std::sync::OnceLock<crate::policy::StoreAudit>,
    /// This process's node id, written on its audit entries so other processes tell its
    /// calls from theirs (set by the server's builder).
    node: std::sync::OnceLock<String>,
    /// Every policy a gateway call can be decided by (the gateway's, the platforms', the
    /// workspaces' and keys'): a call's history from other processes is read only when one
    /// of them has a chain rule the call can end.
    chain_policies: Vec<Policy>,
}

/// A server's tools, as listed.
#[derive(Debug)]
pub(crate) struct ServerTools {
    /// Their names.
    pub(crate) names: std::collections::HashSet<String>,
    /// The tools, in the server's order.
    pub(crate) tools: Vec<crate::servers::McpToolView>,
}

/// A server's tools as listed, and when.
struct Listed {
    /// When they were listed.
    at: Instant,
    /// The connection manager's list epoch of the server then (a `tools/list_changed` from
    /// the server moves it).
    epoch: u64,
    /// The tools.
    tools: Arc<ServerTools>,
}

/// How long a server's listed tool names are trusted.
const TOOLS_TTL: Duration = Duration::from_secs(30);

impl std::fmt::Debug for GatewayOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayOps")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The tool name policies see: `server__tool`, as agents see MCP tools.
#[must_use]
pub fn tool_name(server: &str, tool: &str) -> String {
    format!("{server}__{tool}")
}

impl GatewayOps {
    /// The policies of workspaces and API keys (to check a key's `policy` when it is made).
    pub(crate) fn scoped_policies(&self) -> &crate::policy::PrincipalPolicies {
        &self.config.principal_policies
    }

    /// The gateway of `config`, auditing into `audit`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a glob of the config does not compile.
    pub fn new(config: GatewayConfig, audit: Arc<dyn AuditSink>) -> Result<Self> {
        let policy = match &config.policy {
            Some(p) => p.clone(),
            None => Policy::compile("gateway", &PolicySpec::new())?,
        };
        let spec = policy.spec();
        let listing = Policy::compile(
            policy.name().to_owned(),
            &PolicySpec::new()
                .with_allowed_tools(spec.tools.allow.clone())
                .with_denied_tools(spec.tools.deny.clone()),
        )?;
        let costs = config
            .tool_costs
            .iter()
            .map(|(g, usd)| compile_glob(g, "gateway.tool_costs").map(|m| (m, *usd)))
            .collect::<Result<Vec<_>>>()?;
        let platforms = config
            .platforms
            .iter()
            .enumerate()
            .map(|(i, p)| platforms::Compiled::new(p, i, &policy).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let config_chain_window = config.chain_window;
        let chain_policies = std::iter::once(&policy)
            .cloned()
            .chain(platforms.iter().map(|p| p.policy()))
            .chain(config.principal_policies.all().cloned())
            .filter(|p| !p.spec().chains.is_empty())
            .collect();
        Ok(Self {
            config,
            policy,
            listing,
            costs,
            audit,
            pending: Mutex::new(HashMap::new()),
            platforms,
            tools: Mutex::new(HashMap::new()),
            histories: history::Histories::new(config_chain_window),
            vault: std::sync::OnceLock::new(),
            audit_log: std::sync::OnceLock::new(),
            node: std::sync::OnceLock::new(),
            chain_policies,
        })
    }

    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The registered platform named `name`.
    pub(crate) fn platform(&self, name: &str) -> Option<Arc<platforms::Compiled>> {
        self.platforms.iter().find(|p| p.name == name).cloned()
    }

    /// Every registered platform.
    pub(crate) fn platforms(&self) -> &[Arc<platforms::Compiled>] {
        &self.platforms
    }

    /// Whether `workspace` sees outbound server `server`.
    #[must_use]
    pub fn sees(&self, workspace: &WorkspaceId, server: &str) -> bool {
        match self.config.server_workspaces.get(server) {
            Some(list) => list.contains(workspace),
            None => workspace.is_default(),
        }
    }

    fn unknown(server: &str) -> McpFailure {
        McpFailure::NotFound(format!(
            "no MCP server `{}`; list them with GET /v1/servers (agentkit.yaml `mcp.servers`)",
            server.escape_debug()
        ))
    }

    /// The servers `caller` sees, by name.
    pub(crate) fn servers(&self, platform: &Platform, caller: &Caller) -> Vec<String> {
        platform
            .mcp_servers()
            .into_iter()
            .map(|s| s.name)
            .filter(|n| self.sees(&caller.workspace, n))
            .collect()
    }

    /// Check that `caller` may address `tool` of `server` at all (a visible server whose
    /// tool filter offers it): the 404 of bad input, before anything runs.
    pub(crate) fn check(
        &self,
        platform: &Platform,
        caller: &Caller,
        server: &str,
        tool: &str,
    ) -> std::result::Result<(), McpFailure> {
        if !self.sees(&caller.workspace, server) {
            return Err(Self::unknown(server));
        }
        let (_, config) = platform.mcp_server(server)?;
        if !config.offers_tool(tool) {
            return Err(McpFailure::NotFound(format!(
                "MCP server `{server}` does not offer tool `{}` (its tool filter in agentkit.yaml)",
                tool.escape_debug()
            )));
        }
        Ok(())
    }

    /// The tools server `server` offers (its tool filter applied), as last listed: kept for
    /// 30 s, listed again when `fresh`, older, or when the server said its tools changed
    /// (`notifications/tools/list_changed`, which moves the connection manager's list epoch).
    pub(crate) async fn server_tools(
        &self,
        platform: &Platform,
        server: &str,
        fresh: bool,
    ) -> std::result::Result<Arc<ServerTools>, McpFailure> {
        let epoch = platform
            .mcp()
            .and_then(|m| m.lists_epoch(server).ok())
            .unwrap_or(0);
        if !fresh
            && let Some(t) = agentkit_core::sync::lock(&self.tools)
                .get(server)
                .filter(|l| l.epoch == epoch && l.at.elapsed() < TOOLS_TTL)
                .map(|l| Arc::clone(&l.tools))
        {
            return Ok(t);
        }
        let listed = platform.mcp_tools(server).await?;
        let tools = Arc::new(ServerTools {
            names: listed.iter().map(|t| t.name.clone()).collect(),
            tools: listed,
        });
        agentkit_core::sync::lock(&self.tools).insert(
            server.to_owned(),
            Listed {
                at: Instant::now(),
                epoch,
                tools: Arc::clone(&tools),
            },
        );
        Ok(tools)
    }

    /// Like [`check`](Self::check), and the server has `tool`: an unknown tool is refused
    /// before anything runs. The server's tool names are cached for 30 s and listed again when
    /// a name is missing (a tool added since); a server that cannot be listed is not checked
    /// (its calls will say why they fail).
    pub(crate) async fn check_tool(
        &self,
        platform: &Platform,
        caller: &Caller,
        server: &str,
        tool: &str,
    ) -> std::result::Result<(), McpFailure> {
        self.check(platform, caller, server, tool)?;
        for fresh in [false, true] {
            let Ok(listed) = self.server_tools(platform, server, fresh).await else {
                return Ok(());
            };
            if listed.names.contains(tool) {
                return Ok(());
            }
            if fresh {
                let mut known: Vec<&str> = listed.names.iter().map(String::as_str).collect();
                known.sort_unstable();
                return Err(McpFailure::NotFound(format!(
                    "MCP server `{server}` has no tool `{}`; its tools: {}",
                    tool.escape_debug(),
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether `caller` may list tool `server__tool` (the policy's tool globs and the
    /// platform's block patterns).
    pub(crate) fn lists(&self, name: &str, platform: Option<&platforms::Compiled>) -> bool {
        use agentkit_core::policy::Verdict;
        self.listing
            .decide(name, &Value::Object(Map::new()), &[])
            .verdict
            != Verdict::Deny
            && platform.is_none_or(|p| !p.blocks(name))
    }

    fn cost_of(&self, name: &str) -> f64 {
        self.costs
            .iter()
            .find(|(m, _)| m.is_match(name))
            .map_or(0.0, |(_, usd)| *usd)
    }

    /// Make one call: visibility, tool filter, policy, audit, timeout. A call that could not
    /// be addressed (unknown server or tool) is an `Err`; everything after that — denials,
    /// tool errors, unreachable servers, timeouts — is a [`CallResult`]. A call that needs an
    /// approval becomes a durable run (see [`durable`]) and is answered `pending_approval`.
    pub(crate) async fn call(
        &self,
        platform: &Platform,
        caller: &Caller,
        call: Call,
        env: &CallEnv,
    ) -> std::result::Result<CallResult, McpFailure> {
        let key = history::caller_key(&caller.workspace, caller.key_id.as_deref());
        let history = self
            .history_of(caller, &key, &tool_name(&call.server, &call.tool))
            .await;
        self.call_after(platform, caller, call, env, &key, history)
            .await
    }

    /// [`call`](Self::call) with the caller's history key and history already looked up.
    async fn call_after(
        &self,
        platform: &Platform,
        caller: &Caller,
        call: Call,
        env: &CallEnv,
        key: &str,
        history: agentkit_core::SharedToolHistory,
    ) -> std::result::Result<CallResult, McpFailure> {
        let ctx = RunContext::new()
            .with_run_id(env.trace_id.clone())
            .with_principal(caller.principal())
            .with_cancellation(env.cancel.child_token())
            .with_approvals(Arc::new(durable::Handoff))
            .with_shared_tool_history(history.clone());
        let name = tool_name(&call.server, &call.tool);
        match self
            .call_in(platform, &caller.workspace, call.clone(), env, ctx, true)
            .await?
        {
            Made::Done(r) => {
                self.note_call(key, &name, r.status);
                Ok(r)
            }
            Made::NeedsApproval(why) => {
                durable::defer(platform, caller, call, env, &why, earlier_calls(&history)).await
            }
        }
    }

    /// Seal the arguments of calls handed to durable runs with `vault` (when it has a master
    /// key). Set once, by the server's builder.
    pub(crate) fn set_vault(&self, vault: crate::vault::Vault) {
        let _ = self.vault.set(vault);
    }

    /// Read callers' gateway calls from before this process started from `log` (see
    /// [`history`]). Set once, by the server's builder.
    pub(crate) fn set_audit_log(&self, log: crate::policy::StoreAudit) {
        let _ = self.audit_log.set(log);
    }

    /// This process's node id, written on its gateway calls' audit entries. Set once, by
    /// the server's builder.
    pub(crate) fn set_node(&self, node: &str) {
        let _ = self.node.set(node.to_owned());
    }

    /// Whether a call of `tool` can end a chain rule of a policy that may decide it.
    fn may_end_chain(&self, tool: &str) -> bool {
        self.chain_policies.iter().any(|p| p.may_end_chain(tool))
    }

    /// Before a call that can end a chain rule: read `workspace`'s audit entries not read
    /// yet for the gateway calls other processes made since this one started, into their
    /// callers' histories (see [`history`]). A log that cannot be read is logged and tried
    /// again on the next such call.
    async fn learn_other_nodes(&self, workspace: &WorkspaceId) {
        let (Some(log), Some(node)) = (self.audit_log.get(), self.node.get()) else {
            return;
        };
        let ws = workspace.to_string();
        let (after, since) = self.histories.read_up_to(&ws);
        match log
            .gateway_calls_after(&ws, after, node, since, history::SEED_SCAN)
            .await
        {
            Ok((last, calls)) => {
                let calls = calls
                    .into_iter()
                    .map(|(seq, key_id, tool, at_ms)| history::Learnt {
                        seq,
                        caller: history::caller_key(workspace, key_id.as_deref()),
                        tool,
                        at_ms,
                    })
                    .collect();
                self.histories.learn(&ws, last, calls);
            }
            Err(e) => tracing::warn!(
                workspace = %ws,
                "could not read the audit log for gateway calls through other processes \
                 (chain rules see only this process's): {e}"
            ),
        }
    }

    /// `caller`'s history (under `key`) for a call of `tool`: its calls from before this
    /// process started read from the audit log on its first call here, and, when `tool`
    /// can end a chain rule, those made through other processes since. A log that cannot
    /// be read is tried again on the next call (the call itself then fails on its audit
    /// entry, or goes on with what this process knows).
    async fn history_of(
        &self,
        caller: &Caller,
        key: &str,
        tool: &str,
    ) -> agentkit_core::SharedToolHistory {
        if self.may_end_chain(tool) {
            self.learn_other_nodes(&caller.workspace).await;
        }
        if let Some(log) = self.audit_log.get()
            && let Some((from, until)) = self.histories.to_seed(key)
        {
            let workspace = caller.workspace.to_string();
            match log
                .gateway_calls(
                    &workspace,
                    caller.key_id.as_deref(),
                    from,
                    until,
                    history::SEED_SCAN,
                )
                .await
            {
                Ok(calls) => self.histories.seed(key, calls),
                Err(e) => tracing::warn!(
                    workspace = %workspace,
                    "could not read the audit log for a caller's earlier gateway calls \
                     (chain rules see only this process's): {e}"
                ),
            }
        }
        self.histories.of(key)
    }

    /// The vault that seals the arguments of calls handed to durable runs: `None` without a
    /// master key.
    pub(crate) fn sealer(&self) -> Option<&crate::vault::Vault> {
        self.vault.get().filter(|v| v.is_configured())
    }

    /// Add a gateway call of `tool` by caller `key` that ended with `status` to the caller's
    /// tool history (see [`history`]): one that was made or refused; not one still running,
    /// waiting for an approval or cancelled.
    pub(crate) fn note_call(&self, key: &str, tool: &str, status: CallStatus) {
        let is_error = match status {
            CallStatus::Success => false,
            CallStatus::Error
            | CallStatus::Denied
            | CallStatus::RateLimited
            | CallStatus::Timeout => true,
            _ => return,
        };
        self.histories.record(key, tool, is_error);
    }

    /// Make one call as an MCP task (a federated `/mcp` call from a client that declared MCP
    /// Tasks): a call its policies allow is handed at once to a durable run of
    /// [`durable::GATEWAY_CALL`] in `caller`'s workspace, which makes it through the same path
    /// as [`call`](Self::call) (policy, safety, audit, credentials), and is answered
    /// [`CallStatus::Running`] with the run's id. A call a policy denies, or one that needs an
    /// approval, is made as [`call`](Self::call) makes it: a denial answered now (audited, no
    /// run), an approval waited for in its own durable run.
    pub(crate) async fn call_as_task(
        &self,
        platform: &Platform,
        caller: &Caller,
        call: Call,
        env: &CallEnv,
    ) -> std::result::Result<CallResult, McpFailure> {
        // An unknown server or tool is refused before a run is started for it.
        self.check_tool(platform, caller, &call.server, &call.tool)
            .await?;
        let key = history::caller_key(&caller.workspace, caller.key_id.as_deref());
        let history = self
            .history_of(caller, &key, &tool_name(&call.server, &call.tool))
            .await;
        if self.verdict(caller, &call, env, &history) != agentkit_core::policy::Verdict::Allow {
            return self
                .call_after(platform, caller, call, env, &key, history)
                .await;
        }
        durable::run_as_task(platform, caller, call, env, earlier_calls(&history)).await
    }

    /// What the policies that apply to `call` by `caller` decide about it (see
    /// [`policy_layer`](Self::policy_layer)), as the layer would outside a run, with nothing
    /// audited or counted: the call's own pass through the layer does that.
    fn verdict(
        &self,
        caller: &Caller,
        call: &Call,
        env: &CallEnv,
        history: &agentkit_core::SharedToolHistory,
    ) -> agentkit_core::policy::Verdict {
        let req = ToolRequest::new(
            call.id.clone(),
            tool_name(&call.server, &call.tool),
            Value::Object(call.arguments.clone()),
            RunContext::new()
                .with_principal(caller.principal())
                .with_shared_tool_history(history.clone()),
        );
        self.policy_layer(env)
            .decide(&req)
            .map_or(agentkit_core::policy::Verdict::Allow, |d| d.verdict)
    }

    /// The policies a call through `env` passes: the gateway's (or the caller's platform's),
    /// and the caller's workspace's and key's; the most restrictive verdict wins.
    fn policy_layer(&self, env: &CallEnv) -> PolicyLayer {
        let policy = match &env.platform {
            Some(p) => p.policy(),
            None => self.policy.clone(),
        };
        let layer = PolicyLayer::new(policy);
        if self.config.principal_policies.is_empty() {
            layer
        } else {
            layer.with_scope(Arc::clone(&self.config.principal_policies)
                as Arc<dyn agentkit_core::policy::PolicyScope>)
        }
    }

    /// Make one call in `ctx` (a gateway call's, or a durable run's): `defer` outside a run,
    /// where a request for approval is not asked but answered [`Made::NeedsApproval`].
    pub(crate) async fn call_in(
        &self,
        platform: &Platform,
        workspace: &WorkspaceId,
        call: Call,
        env: &CallEnv,
        ctx: RunContext,
        defer: bool,
    ) -> std::result::Result<Made, McpFailure> {
        if !self.sees(workspace, &call.server) {
            return Err(Self::unknown(&call.server));
        }
        let (manager, config) = platform.mcp_server(&call.server)?;
        if !config.offers_tool(&call.tool) {
            return Err(McpFailure::NotFound(format!(
                "MCP server `{}` does not offer tool `{}` (its tool filter in agentkit.yaml)",
                call.server,
                call.tool.escape_debug()
            )));
        }
        let started = Instant::now();
        let name = tool_name(&call.server, &call.tool);
        let answer: Arc<Mutex<Option<CallToolResult>>> = Arc::default();
        let inner = {
            let (server, tool, answer) = (call.server.clone(), call.tool.clone(), answer.clone());
            ToolService::new(tower::service_fn(move |req: ToolRequest| {
                let (manager, server, tool, answer) = (
                    manager.clone(),
                    server.clone(),
                    tool.clone(),
                    answer.clone(),
                );
                async move {
                    let args = match req.arguments {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    let r = manager.call_tool(&server, &tool, args, &req.ctx).await?;
                    // The text, for the safety layer; the caller gets the MCP blocks.
                    let text: Vec<&str> = r
                        .content
                        .iter()
                        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
                        .collect();
                    let text = text.join("\n");
                    let out = if r.is_error.unwrap_or(false) {
                        ToolOutput::error(text)
                    } else {
                        ToolOutput::text(text)
                    };
                    *agentkit_core::sync::lock(&answer) = Some(r);
                    Ok::<_, Error>(out)
                }
            }))
        };
        let capture = Arc::new(Capture {
            inner: Arc::clone(&self.audit),
            last: Mutex::new(None),
            flags: Mutex::new(Vec::new()),
            defer,
            asked: Mutex::new(None),
            node: self.node.get().cloned(),
        });
        let inner = if self.config.safety.is_active() {
            ToolService::new(
                self.config
                    .safety
                    .clone()
                    .with_audit(capture.clone() as Arc<dyn AuditSink>)
                    .layer(inner),
            )
        } else {
            inner
        };
        let svc = self
            .policy_layer(env)
            .with_audit(capture.clone() as Arc<dyn AuditSink>)
            .layer(inner);
        let mut ctx = ctx.with_timeout(call.timeout);
        if let Some(f) = &env.progress {
            let (f, id) = (Arc::clone(f), call.id.clone());
            ctx = ctx.with_events(Arc::new(agentkit_core::FnSink::new(
                move |_: &str, e: &RunEvent| {
                    if let RunEvent::Progress {
                        progress,
                        total,
                        message,
                    } = e
                    {
                        f(CallProgress {
                            id: id.clone(),
                            progress: *progress,
                            total: *total,
                            message: message.clone(),
                        });
                    }
                },
            )));
        }
        let request = ToolRequest::new(
            call.id.clone(),
            name.clone(),
            Value::Object(call.arguments),
            ctx,
        );
        // The context's deadline makes the connection cancel the call upstream; this one
        // only guards a connection attempt that ignores it.
        let backstop = call.timeout + Duration::from_millis(200);
        let outcome = tokio::select! {
            r = tokio::time::timeout(backstop, svc.oneshot(request)) => r,
            () = env.cancel.cancelled() => {
                return Ok(Made::Done(CallResult::failed(&call.id, CallStatus::Cancelled,
                    "the client cancelled the call".into(), started.elapsed())));
            }
        };
        if let Some(why) = agentkit_core::sync::lock(&capture.asked).take() {
            return Ok(Made::NeedsApproval(why));
        }
        let took = started.elapsed();
        let output = match outcome {
            Err(_) => Err(Error::Timeout {
                what: format!("MCP call `{name}`"),
                after: call.timeout,
            }),
            Ok(r) => r,
        };
        let output = match output {
            Ok(o) => o,
            Err(e) if e.is_timeout() => {
                return Ok(Made::Done(CallResult::failed(
                    &call.id,
                    CallStatus::Timeout,
                    match call.cut {
                        None => format!(
                            "`{name}` did not answer within {} ms (its timeout); the server was \
                             asked to cancel it",
                            millis(call.timeout)
                        ),
                        Some(cut) => format!(
                            "`{name}` did not answer within {} ms (the batch's timeout{}); the \
                             server was asked to cancel it",
                            millis(cut.batch),
                            if cut.own == cut.batch {
                                String::new()
                            } else {
                                format!(", shorter than the call's own {} ms", millis(cut.own))
                            }
                        ),
                    },
                    took,
                )));
            }
            Err(e) if e.is_cancelled() => {
                return Ok(Made::Done(CallResult::failed(
                    &call.id,
                    CallStatus::Cancelled,
                    "the client cancelled the call".into(),
                    took,
                )));
            }
            Err(source) => {
                return Err(McpFailure::Upstream {
                    server: call.server,
                    source,
                });
            }
        };
        let decided = *agentkit_core::sync::lock(&capture.last);
        if matches!(decided, Some(AuditOutcome::Denied | AuditOutcome::Rejected)) {
            let mut result = CallResult::failed(
                &call.id,
                if output.retry_after_ms.is_some() {
                    CallStatus::RateLimited
                } else {
                    CallStatus::Denied
                },
                output.text_content(),
                took,
            );
            result.retry_after_ms = output.retry_after_ms;
            return Ok(Made::Done(result));
        }
        let Some(answer) = agentkit_core::sync::lock(&answer).take() else {
            return Ok(Made::Done(CallResult::failed(
                &call.id,
                CallStatus::Error,
                format!("`{name}` was not called: {}", output.text_content()),
                took,
            )));
        };
        let is_error = answer.is_error.unwrap_or(false);
        Ok(Made::Done(CallResult {
            id: call.id,
            status: if is_error {
                CallStatus::Error
            } else {
                CallStatus::Success
            },
            content: answer
                .content
                .iter()
                .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
                .collect(),
            structured_content: answer.structured_content,
            error: is_error.then(|| "the tool reported an error (see content)".to_owned()),
            flags: std::mem::take(&mut *agentkit_core::sync::lock(&capture.flags)),
            duration_ms: millis(took),
            cost: self.cost_of(&name),
            run_id: None,
            call_id: None,
            retry_after_ms: None,
        }))
    }

    /// A single-use WebSocket connection id for `caller`, valid for `connect_ttl`.
    pub(crate) fn connect(&self, caller: &Caller) -> String {
        let now = Instant::now();
        let id = format!("conn_{}", uuid::Uuid::new_v4().simple());
        let mut pending = agentkit_core::sync::lock(&self.pending);
        pending.retain(|_, p| p.expires > now);
        pending.insert(
            id.clone(),
            Pending {
                workspace: caller.workspace.clone(),
                key_id: caller.key_id.clone(),
                expires: now + self.config.connect_ttl,
            },
        );
        id
    }

    /// Use connection id `id` (once): whether it exists, is unexpired and belongs to
    /// `caller`. Another caller's id is left alone (and looks like an unknown one).
    pub(crate) fn claim(&self, id: &str, caller: &Caller) -> bool {
        let now = Instant::now();
        let mut pending = agentkit_core::sync::lock(&self.pending);
        let Some(p) = pending.get(id) else {
            return false;
        };
        if p.expires <= now {
            pending.remove(id);
            return false;
        }
        if p.workspace != caller.workspace || p.key_id != caller.key_id {
            return false;
        }
        pending.remove(id);
        true
    }

    /// Whether `id` has the shape of a connection id (a WebSocket request, not an agent).
    #[must_use]
    pub(crate) fn is_connection_id(id: &str) -> bool {
        id.strip_prefix("conn_")
            .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// The batch's timeouts: each call's own and the batch's overall deadline.
pub(crate) fn call_timeout(own: Duration, deadline: Instant) -> Option<Duration> {
    let left = deadline.checked_duration_since(Instant::now())?;
    (!left.is_zero()).then(|| own.min(left))
}
