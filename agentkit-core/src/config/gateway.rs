//! `gateway:` — the server's GatewayOps API (`/v1/execute`, its WebSocket, `/v1/mcp/tools`,
//! `/v1/safety/analyze`): limits, the policy every gateway call runs under, which workspaces
//! see which outbound MCP servers, per-call prices and registered client platforms.
//!
//! ```yaml
//! gateway:
//!   policy: gateway            # a policy of `policies:`
//!   max_calls: 50              # per /v1/execute batch
//!   default_timeout_ms: 30000
//!   idempotency_window_ms: 86400000   # how long /v1/execute idempotency keys are kept
//!   chain_window_ms: 3600000   # how long a call counts for chain rules (per key)
//!   servers:                   # server -> the workspaces that see it (unlisted: default/default)
//!     crm: [acme/prod]
//!   tool_costs:
//!     - {tool: "crm__*", usd: 0.002}
//!   platforms:
//!     - name: web
//!       allowed_origins: ["https://app.example.com"]
//!       rate_limit: 20
//!       default_servers: [crm]
//!       require_approval_for: ["crm__delete_*"]
//!       block_patterns: ["*__exec*"]
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `gateway:` in `agentkit.yaml`. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GatewaySettings {
    /// The policy (a name in `policies:`) every gateway call runs under (default: allow all,
    /// still audited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The most calls per `/v1/execute` batch (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<usize>,
    /// How many calls of a batch or WebSocket run at once (default 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// A call's timeout when the request names none (default 30000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_timeout_ms: Option<u64>,
    /// The longest timeout a request may ask for (default 300000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<u64>,
    /// Outbound server → the workspaces (`org/workspace`) that see it. Servers not listed
    /// are seen by `default/default` only.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, Vec<String>>,
    /// Prices of tool calls, first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_costs: Vec<ToolCost>,
    /// The largest WebSocket message accepted, bytes (default 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<usize>,
    /// Registered client platforms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PlatformRegistration>,
    /// Prompt-injection checks on every gateway call's arguments and answer.
    #[serde(skip_serializing_if = "SafetySettings::is_default")]
    pub safety: SafetySettings,
    /// Whether `/mcp` serves the platform's operations as tools (`agentkit_runs_list`, …;
    /// default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_tools: Option<bool>,
    /// How long an idempotency key of a `/v1/execute` call is remembered, ms (default
    /// 86400000: 24 h): a retry with the same key within it gets the first attempt's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_window_ms: Option<u64>,
    /// How long a gateway call stays in its caller's tool history, ms (default 3600000:
    /// 1 h): a chain rule at the gateway looks at the calls the same key made within it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_window_ms: Option<u64>,
}

/// `gateway.safety`: what to do when the injection detectors find something in a call's
/// arguments (`inputs`) or its answer (`outputs`).
///
/// ```yaml
/// gateway:
///   safety: {inputs: block, outputs: flag, min_severity: high}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SafetySettings {
    /// For arguments (unset: not checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<DetectorAction>,
    /// For answers (unset: not checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outputs: Option<DetectorAction>,
    /// Act on detections of this severity or worse (default `high`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<DetectorSeverity>,
}

impl SafetySettings {
    /// Whether nothing is set.
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What to do about a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DetectorAction {
    /// Let it through and audit it.
    Flag,
    /// Refuse it.
    Block,
    /// Ask for an approval (refused where nobody can approve).
    RequireApproval,
}

/// A detection's severity, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DetectorSeverity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl GatewaySettings {
    /// Whether nothing is set.
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The price of one call of the tools matching `tool` (a glob over `server__tool`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ToolCost {
    /// A glob over `server__tool`.
    pub tool: String,
    /// USD per call.
    pub usd: f64,
}

impl ToolCost {
    /// Calls of `tool` cost `usd`.
    #[must_use]
    pub fn new(tool: impl Into<String>, usd: f64) -> Self {
        Self {
            tool: tool.into(),
            usd,
        }
    }
}

/// One registered client platform (`gateway.platforms[]`): it names itself with the
/// `x-agentkit-platform` header and gets its CORS origins, its request rate limit, its default
/// servers (what `GET /v1/mcp/tools` lists for it) and extra policy rules over
/// `server__tool` names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PlatformRegistration {
    /// Its name (the value of the `x-agentkit-platform` header).
    pub name: String,
    /// Browser origins allowed to call the gateway routes (CORS), e.g. `https://app.example.com`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// At most this many gateway requests per second from this platform (all its keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// The servers `GET /v1/mcp/tools` lists for it (empty: every server the key sees).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_servers: Vec<String>,
    /// Tools (globs over `server__tool`) whose calls need an approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_approval_for: Vec<String>,
    /// Tools (globs over `server__tool`) it may never call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_patterns: Vec<String>,
}

impl PlatformRegistration {
    /// A platform named `name` with no rules.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Allow these browser origins.
    #[must_use]
    pub fn with_allowed_origins<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        o: I,
    ) -> Self {
        self.allowed_origins = o.into_iter().map(Into::into).collect();
        self
    }

    /// At most `per_second` requests per second.
    #[must_use]
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = Some(per_second);
        self
    }

    /// List these servers' tools.
    #[must_use]
    pub fn with_default_servers<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        s: I,
    ) -> Self {
        self.default_servers = s.into_iter().map(Into::into).collect();
        self
    }

    /// Tools needing approval.
    #[must_use]
    pub fn with_require_approval_for<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        g: I,
    ) -> Self {
        self.require_approval_for = g.into_iter().map(Into::into).collect();
        self
    }

    /// Tools never to be called.
    #[must_use]
    pub fn with_block_patterns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, g: I) -> Self {
        self.block_patterns = g.into_iter().map(Into::into).collect();
        self
    }
}
