#![doc = include_str!("../docs/config.md")]

mod budget;
mod builders;
#[cfg(feature = "config")]
mod compat;
#[cfg(feature = "config")]
mod env;
mod gateway;
mod keypath;
#[cfg(feature = "config")]
mod loader;
#[cfg(feature = "config")]
mod locate;
mod policy;
mod resolve;
mod spec;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cost::ModelInfo;

pub use budget::{BudgetPeriod, BudgetSettings, PeriodBudget};
pub use gateway::{
    DetectorAction, DetectorSeverity, GatewaySettings, PlatformRegistration, SafetySettings,
    ToolCost,
};
#[cfg(feature = "config")]
pub use loader::{ConfigFormat, ConfigLoader, locate_key};
pub use policy::{ArgumentRule, ChainAction, ChainRule, PolicyRef, PolicySpec};
pub use resolve::{MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS};
pub use spec::{
    AgentLimits, AgentSpec, ApprovalSettings, CatchUpPolicy, ChainInputKind, ChainSpec,
    EvaluatorOptimizerSpec, EventTrigger, HumanDuration, JwtClaimNames, JwtSettings, MAX_DURATION,
    MAX_NAME_LEN, MIN_INTERVAL, MinRating, OnFailure, OrchestratorSpec, OverlapPolicy,
    ParallelSpec, PlanModeKind, ProviderKind, Rate, RateLimitSettings, RetentionSettings,
    RouterSpec, ScheduleSpec, ServerSettings, SwarmSpec, ThreadConcurrency, ToolGlobs, TriggerSpec,
    WebhookTrigger, WorkflowLimits, WorkflowSpec, is_valid_name,
};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// OpenAI (and compatible endpoints) settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAiSettings>,
    /// Anthropic settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<AnthropicSettings>,
    /// Google Gemini settings (`google:`, or `gemini:`).
    #[serde(alias = "gemini", skip_serializing_if = "Option::is_none")]
    pub google: Option<GoogleSettings>,
    /// MCP servers and roles.
    pub mcp: McpSettings,
    /// Logging.
    #[serde(alias = "logging")]
    pub logger: LoggerSettings,
    /// OpenTelemetry export.
    pub otel: OtelSettings,
    /// Where runs are stored.
    pub storage: StorageSettings,
    /// Extra or overriding model prices.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<ModelInfo>,
    /// Declared agents by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, AgentSpec>,
    /// Workflows (agents composed with a pattern) by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub workflows: BTreeMap<String, WorkflowSpec>,
    /// Schedules by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
    /// Webhook and event triggers by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub triggers: BTreeMap<String, TriggerSpec>,
    /// Tool-call policies by name, referenced by agents (`policy: <name>`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, PolicySpec>,
    /// What each workspace may spend per period (agents' own budgets are in their `limits`).
    #[serde(skip_serializing_if = "BudgetSettings::is_empty")]
    pub budgets: BudgetSettings,
    /// How `agentkit serve` runs.
    #[serde(skip_serializing_if = "ServerSettings::is_default")]
    pub server: ServerSettings,
    /// The GatewayOps API: limits, policy, server visibility, platforms.
    #[serde(skip_serializing_if = "GatewaySettings::is_default")]
    pub gateway: GatewaySettings,
}

/// OpenAI settings. Unset fields fall back to `OPENAI_API_KEY` / `OPENAI_BASE_URL`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OpenAiSettings {
    /// API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Base URL, default `https://api.openai.com/v1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Model used when a request names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// `OpenAI-Organization` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Extra HTTP headers (e.g. `api-key` for Azure, `HTTP-Referer` for OpenRouter).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Extra query parameters (e.g. `api-version` for Azure).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Per-attempt timeout in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Retries of retryable failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Which OpenAI API to speak: `chat_completions` (the default, and what compatible
    /// servers speak) or `responses`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<OpenAiApi>,
    /// Responses API only: let OpenAI store responses (`store: true`). Unset or false sends
    /// `store: false` and asks reasoning models for reasoning items with their
    /// `encrypted_content`, which the agent loop sends back on the next turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
}

/// Which OpenAI API a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OpenAiApi {
    /// Chat Completions (`POST {base_url}/chat/completions`), which every OpenAI-compatible
    /// server speaks.
    #[default]
    #[serde(alias = "chat", alias = "chat-completions")]
    ChatCompletions,
    /// The Responses API (`POST {base_url}/responses`): reasoning items are kept across turns.
    Responses,
}

/// Anthropic settings. Unset fields fall back to `ANTHROPIC_API_KEY` / `ANTHROPIC_BASE_URL`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AnthropicSettings {
    /// API key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Base URL, default `https://api.anthropic.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Model used when a request names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// `anthropic-version` header, default `2023-06-01`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Extra HTTP headers (e.g. `anthropic-beta`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Retries of retryable failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Mark the system prompt and the tool definitions as cacheable
    /// (`cache_control: {type: ephemeral}`), so later calls with the same prefix read it from
    /// Anthropic's prompt cache. Off unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_caching: Option<bool>,
}

/// Google Gemini settings. An unset key falls back to `GEMINI_API_KEY`, then `GOOGLE_API_KEY`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GoogleSettings {
    /// API key (a Google AI Studio key), sent as `x-goog-api-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Base URL with the API version, default
    /// `https://generativelanguage.googleapis.com/v1beta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Model used when a request names none (default `gemini-2.5-flash`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Extra HTTP headers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Per-attempt timeout in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Retries of retryable failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

/// MCP servers and role-based server sets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct McpSettings {
    /// Servers by name.
    pub servers: BTreeMap<String, McpServerConfig>,
    /// Named sets of servers: `roles: {dev: [core, issues]}`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, Vec<String>>,
}

/// How to reach an MCP server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum McpTransport {
    /// A child process speaking over stdin/stdout.
    #[default]
    Stdio,
    /// Streamable HTTP.
    #[serde(alias = "http", alias = "streamable-http")]
    StreamableHttp,
    /// Legacy HTTP+SSE.
    Sse,
}

/// A filesystem root offered to an MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct McpRoot {
    /// `file://` URI.
    pub uri: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The URI shown to the server instead of `uri` (mcp-agent's `server_uri_alias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_uri_alias: Option<String>,
}

/// One MCP server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct McpServerConfig {
    /// Transport; inferred from `command` (stdio) or `url` (streamable HTTP) when a file
    /// omits it. `type` is accepted as an alias.
    #[serde(alias = "type")]
    pub transport: McpTransport,
    /// What the server is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Command to start (stdio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables of the child. A stdio server starts with a scrubbed
    /// environment: these, the variables named in `inherit_env`, and the few every program
    /// needs (`HOME`, `LOGNAME`, `PATH`, `SHELL`, `TERM`, `USER`, as the official MCP SDKs
    /// pass) — never the server's own secrets, such as provider keys.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Variables of agentkit's own environment a stdio server also gets, by name (`LANG`) or
    /// prefix (`LC_*`; `*` passes everything, the unsafe old behaviour).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// Resource limits of a stdio server's process (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<McpProcessLimits>,
    /// Working directory of the child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Endpoint URL (HTTP transports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra HTTP headers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Bearer token sent as `Authorization: Bearer ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// Time allowed to connect and initialise, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_seconds: Option<f64>,
    /// Time allowed for one request, in seconds.
    #[serde(
        skip_serializing_if = "Option::is_none",
        alias = "read_timeout_seconds"
    )]
    pub request_timeout_seconds: Option<f64>,
    /// Roots offered to the server.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roots: Vec<McpRoot>,
    /// Only these tools are offered (all when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<Vec<String>>,
    /// These tools are never offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub denied_tools: Vec<String>,
    /// At most this many concurrent requests to the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Authorization of an HTTP server: `auth: {oauth: {...}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<McpAuth>,
}

/// Resource limits of a stdio MCP server's process (`limits:` of a server entry), set with
/// `ulimit` by `/bin/sh` before the server's program replaces it, so the program and
/// everything it starts run under them from their first instruction.
///
/// ```yaml
/// mcp:
///   servers:
///     fetch:
///       command: uvx
///       args: [mcp-server-fetch]
///       limits: {memory_mb: 512, cpu_seconds: 600, open_files: 256}
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct McpProcessLimits {
    /// Data segment size in MiB (`RLIMIT_DATA`: heap and private writable mappings; address
    /// space a runtime only reserves, as V8 does, is not counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<std::num::NonZeroU64>,
    /// CPU time in seconds (`RLIMIT_CPU`); the process is killed (SIGXCPU) past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<std::num::NonZeroU64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_files: Option<std::num::NonZeroU64>,
}

impl McpProcessLimits {
    /// Whether no limit is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// How agentkit authorizes itself to an MCP server (`auth:` of a server entry). A static
/// token goes in `bearer_token` (or a header) instead.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct McpAuth {
    /// OAuth 2.1 as the MCP authorization specification describes (streamable HTTP servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth: Option<McpOAuth>,
}

/// OAuth 2.1 settings of one MCP server (`auth: {oauth: {...}}`). Everything is optional:
/// with no `client_id`, agentkit registers itself (dynamic client registration) with the
/// authorization server it discovers from the server's protected-resource metadata.
///
/// ```yaml
/// mcp:
///   servers:
///     issues:
///       url: https://mcp.example.com/mcp
///       auth:
///         oauth:
///           scopes: [issues.read]
///           redirect_port: 8765        # local redirect listener; any free port when unset
///     reports:
///       url: https://reports.example.com/mcp
///       auth:
///         oauth: {client_credentials: true, client_id: agentkit, client_secret: "${REPORTS_SECRET}"}
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct McpOAuth {
    /// A client id registered with the authorization server beforehand (no dynamic
    /// registration then). With `client_credentials`, required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The secret of a pre-registered confidential client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Scopes to ask for; when empty, those the server's challenge or metadata name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Port of the local `http://127.0.0.1:<port>/callback` redirect listener of the
    /// authorization-code flow (any free port when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_port: Option<u16>,
    /// Use the client-credentials grant (machine to machine, no user) instead of the
    /// authorization code flow.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub client_credentials: bool,
    /// The client name sent with dynamic client registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// An HTTPS URL of this client's metadata document (Client ID Metadata Documents), used
    /// as the client id when the authorization server supports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_metadata_url: Option<String>,
    /// With `client_credentials`: authenticate with a JWT signed by this PEM private key
    /// (`private_key_jwt`, RFC 7523) instead of `client_secret`; e.g. `"${MCP_KEY}"`. Needs
    /// agentkit-mcp's `oauth-jwt` feature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// Like `private_key`, read from this PEM file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// The JWT signing algorithm of `private_key`: RS256 (default), RS384, RS512, ES256 or
    /// ES384.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_algorithm: Option<String>,
}

impl std::fmt::Debug for McpOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpOAuth")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("scopes", &self.scopes)
            .field("redirect_port", &self.redirect_port)
            .field("client_credentials", &self.client_credentials)
            .field("client_name", &self.client_name)
            .field("client_metadata_url", &self.client_metadata_url)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .field("private_key_file", &self.private_key_file)
            .field("signing_algorithm", &self.signing_algorithm)
            .finish()
    }
}

impl McpOAuth {
    /// OAuth with defaults (dynamic registration, authorization code + PKCE).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A pre-registered client id.
    #[must_use]
    pub fn with_client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The secret of a pre-registered confidential client.
    #[must_use]
    pub fn with_client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// Scopes to ask for.
    #[must_use]
    pub fn with_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Port of the local redirect listener.
    #[must_use]
    pub fn with_redirect_port(mut self, port: u16) -> Self {
        self.redirect_port = Some(port);
        self
    }

    /// Use the client-credentials grant.
    #[must_use]
    pub fn with_client_credentials(mut self) -> Self {
        self.client_credentials = true;
        self
    }
}

/// Logging settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LoggerSettings {
    /// `tracing` filter, e.g. `info` or `agentkit=debug`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// `text` or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// OpenTelemetry trace export settings (`otel:`), used by agentkit-server's `otel` feature.
///
/// Every key stated here wins over the matching standard `OTEL_*` environment variable; a key
/// left out falls back to the variable (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`,
/// `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`).
///
/// ```yaml
/// otel:
///   enabled: true
///   endpoint: http://localhost:4318     # OTLP/HTTP base URL; traces go to <endpoint>/v1/traces
///   service_name: agentkit-prod
///   sample_ratio: 0.25                  # of new traces; a caller's sampled traceparent is kept
///   headers: {authorization: "Bearer ${OTLP_TOKEN}"}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OtelSettings {
    /// Export traces (also on when `endpoint` is set here or in `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub enabled: bool,
    /// OTLP/HTTP base URL (`http://localhost:4318`); traces are sent to `<endpoint>/v1/traces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `service.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The share of new traces to record, from 0 to 1 (traces continued from a caller's
    /// `traceparent` follow the caller's sampling decision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
    /// Headers sent with every export request (e.g. an `authorization` token).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Run storage settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StorageSettings {
    /// `sqlite://path.db`, `postgres://...` or `memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
