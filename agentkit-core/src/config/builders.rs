//! Constructors and `with_*` builders of the config types, for programmatic configuration.

use std::path::PathBuf;

use crate::cost::ModelInfo;

use super::{
    AnthropicSettings, Config, GoogleSettings, LoggerSettings, McpRoot, McpServerConfig,
    McpSettings, McpTransport, OpenAiApi, OpenAiSettings, OtelSettings, StorageSettings,
};

impl Config {
    /// An empty configuration (same as [`Config::default`]): no providers, no servers.
    ///
    /// ```
    /// use agentkit_core::config::{Config, McpServerConfig, OpenAiSettings};
    ///
    /// let config = Config::new()
    ///     .with_openai(OpenAiSettings::new().with_default_model("gpt-5-mini"))
    ///     .with_server(
    ///         "fetch",
    ///         McpServerConfig::stdio("uvx").with_args(["mcp-server-fetch"]),
    ///     )
    ///     .with_role("research", ["fetch"]);
    /// assert_eq!(config.resolve_servers(&["research"], &[])?, vec!["fetch"]);
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the OpenAI settings.
    #[must_use]
    pub fn with_openai(mut self, settings: OpenAiSettings) -> Self {
        self.openai = Some(settings);
        self
    }

    /// Set the Anthropic settings.
    #[must_use]
    pub fn with_anthropic(mut self, settings: AnthropicSettings) -> Self {
        self.anthropic = Some(settings);
        self
    }

    /// Set the Google Gemini settings.
    #[must_use]
    pub fn with_google(mut self, settings: GoogleSettings) -> Self {
        self.google = Some(settings);
        self
    }

    /// Replace the MCP settings (servers and roles).
    #[must_use]
    pub fn with_mcp(mut self, mcp: McpSettings) -> Self {
        self.mcp = mcp;
        self
    }

    /// Add or replace one MCP server.
    #[must_use]
    pub fn with_server(mut self, name: impl Into<String>, server: McpServerConfig) -> Self {
        self.mcp.servers.insert(name.into(), server);
        self
    }

    /// Add or replace a role: a named set of servers.
    #[must_use]
    pub fn with_role<I, S>(mut self, role: impl Into<String>, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.mcp
            .roles
            .insert(role.into(), servers.into_iter().map(Into::into).collect());
        self
    }

    /// Set the logger settings.
    #[must_use]
    pub fn with_logger(mut self, logger: LoggerSettings) -> Self {
        self.logger = logger;
        self
    }

    /// Set the OpenTelemetry settings.
    #[must_use]
    pub fn with_otel(mut self, otel: OtelSettings) -> Self {
        self.otel = otel;
        self
    }

    /// Set the storage settings.
    #[must_use]
    pub fn with_storage(mut self, storage: StorageSettings) -> Self {
        self.storage = storage;
        self
    }

    /// Add a model price (overrides the built-in entry of the same id).
    #[must_use]
    pub fn with_price(mut self, model: ModelInfo) -> Self {
        self.prices.retain(|m| m.id != model.id);
        self.prices.push(model);
        self
    }
}

impl OpenAiSettings {
    /// Empty settings: everything falls back to defaults and environment variables.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the API key.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Set the base URL (any Chat Completions compatible endpoint).
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Set the model used when a request names none.
    #[must_use]
    pub fn with_default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Choose the API: Chat Completions (default) or Responses.
    #[must_use]
    pub fn with_api(mut self, api: OpenAiApi) -> Self {
        self.api = Some(api);
        self
    }

    /// Set the `OpenAI-Organization` header.
    #[must_use]
    pub fn with_organization(mut self, organization: impl Into<String>) -> Self {
        self.organization = Some(organization.into());
        self
    }

    /// Set the `OpenAI-Project` header.
    #[must_use]
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// Add an extra HTTP header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Add an extra query parameter.
    #[must_use]
    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.insert(name.into(), value.into());
        self
    }

    /// Set the per-attempt timeout in seconds.
    #[must_use]
    pub fn with_timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Set how often retryable failures are retried.
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }
}

impl AnthropicSettings {
    /// Empty settings: everything falls back to defaults and environment variables.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the API key.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Set the base URL.
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Set the model used when a request names none.
    #[must_use]
    pub fn with_default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Set the `anthropic-version` header.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Add an extra HTTP header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Set the per-attempt timeout in seconds.
    #[must_use]
    pub fn with_timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Turn Anthropic prompt caching on or off (`prompt_caching`).
    #[must_use]
    pub fn with_prompt_caching(mut self, on: bool) -> Self {
        self.prompt_caching = Some(on);
        self
    }

    /// Set how often retryable failures are retried.
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }
}

impl McpSettings {
    /// No servers, no roles.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace one server.
    #[must_use]
    pub fn with_server(mut self, name: impl Into<String>, server: McpServerConfig) -> Self {
        self.servers.insert(name.into(), server);
        self
    }

    /// Add or replace a role: a named set of servers.
    #[must_use]
    pub fn with_role<I, S>(mut self, role: impl Into<String>, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles
            .insert(role.into(), servers.into_iter().map(Into::into).collect());
        self
    }
}

impl McpRoot {
    /// A root at a `file://` URI.
    #[must_use]
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            name: None,
            server_uri_alias: None,
        }
    }

    /// Set the display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Set the URI shown to the server instead of the real one.
    #[must_use]
    pub fn with_server_uri_alias(mut self, alias: impl Into<String>) -> Self {
        self.server_uri_alias = Some(alias.into());
        self
    }
}

impl McpServerConfig {
    /// A server reached over `transport`; set `command` or `url` with the builders.
    #[must_use]
    pub fn new(transport: McpTransport) -> Self {
        Self {
            transport,
            ..Self::default()
        }
    }

    /// A child process started with `command`, speaking MCP over stdin/stdout.
    #[must_use]
    pub fn stdio(command: impl Into<String>) -> Self {
        Self::new(McpTransport::Stdio).with_command(command)
    }

    /// A streamable HTTP server at `url`.
    #[must_use]
    pub fn streamable_http(url: impl Into<String>) -> Self {
        Self::new(McpTransport::StreamableHttp).with_url(url)
    }

    /// A legacy HTTP+SSE server at `url`.
    #[must_use]
    pub fn sse(url: impl Into<String>) -> Self {
        Self::new(McpTransport::Sse).with_url(url)
    }

    /// Set the transport.
    #[must_use]
    pub fn with_transport(mut self, transport: McpTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Set what the server is for.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Set the command to start (stdio).
    #[must_use]
    pub fn with_command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// Append arguments of the command.
    #[must_use]
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable of the child.
    #[must_use]
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Set the working directory of the child.
    #[must_use]
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Set the endpoint URL (HTTP transports).
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Add an HTTP header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Set the bearer token sent as `Authorization: Bearer ...`.
    #[must_use]
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Authorize with OAuth 2.1 (`auth: {oauth: ...}`).
    #[must_use]
    pub fn with_oauth(mut self, oauth: super::McpOAuth) -> Self {
        self.auth = Some(super::McpAuth { oauth: Some(oauth) });
        self
    }

    /// Set the time allowed to connect and initialise, in seconds.
    #[must_use]
    pub fn with_connect_timeout_seconds(mut self, seconds: f64) -> Self {
        self.connect_timeout_seconds = Some(seconds);
        self
    }

    /// Set the time allowed for one request, in seconds.
    #[must_use]
    pub fn with_request_timeout_seconds(mut self, seconds: f64) -> Self {
        self.request_timeout_seconds = Some(seconds);
        self
    }

    /// Add a root offered to the server.
    #[must_use]
    pub fn with_root(mut self, root: McpRoot) -> Self {
        self.roots.push(root);
        self
    }

    /// Offer only these tools.
    #[must_use]
    pub fn with_allowed_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// Never offer these tools.
    #[must_use]
    pub fn with_denied_tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.denied_tools = tools.into_iter().map(Into::into).collect();
        self
    }

    /// Allow at most this many concurrent requests to the server.
    #[must_use]
    pub fn with_max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = Some(max);
        self
    }
}

impl LoggerSettings {
    /// Default logging.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the `tracing` filter, e.g. `info` or `agentkit=debug`.
    #[must_use]
    pub fn with_level(mut self, level: impl Into<String>) -> Self {
        self.level = Some(level.into());
        self
    }

    /// Set the output format, `text` or `json`.
    #[must_use]
    pub fn with_format(mut self, format: impl Into<String>) -> Self {
        self.format = Some(format.into());
        self
    }
}

impl OtelSettings {
    /// Export disabled.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Enable or disable trace export.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Set the OTLP endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Set `service.name`.
    #[must_use]
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Set the share of new traces to record (0 to 1).
    #[must_use]
    pub fn with_sample_ratio(mut self, ratio: f64) -> Self {
        self.sample_ratio = Some(ratio);
        self
    }

    /// Add a header to every export request.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

impl StorageSettings {
    /// No storage URL (the runtime picks its default).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the storage URL: `sqlite://path.db`, `postgres://...` or `memory`.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }
}

impl GoogleSettings {
    /// Empty settings: everything falls back to defaults and environment variables.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the API key.
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Set the base URL (with the API version).
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Set the model used when a request names none.
    #[must_use]
    pub fn with_default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// Add an extra HTTP header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Set the per-attempt timeout in seconds.
    #[must_use]
    pub fn with_timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Set how often retryable failures are retried.
    #[must_use]
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }
}
