//! Checks and derived values: server sets from roles, provider settings with environment
//! fallbacks, the price table.

use std::time::Duration;

use crate::cost::PriceTable;
use crate::error::{Error, Result};

use super::keypath::KeyPath;
use super::{
    AnthropicSettings, Config, GoogleSettings, McpServerConfig, McpTransport, OpenAiSettings,
};

/// The longest timeout a config may set: 10 years, far beyond any use, and safely inside
/// what [`Duration`] and `tokio::time` can represent.
pub const MAX_TIMEOUT_SECONDS: f64 = 315_360_000.0;

/// The shortest timeout a config may set: 1 ms (a shorter one rounds to nothing).
pub const MIN_TIMEOUT_SECONDS: f64 = 0.001;

/// Reads a number of seconds: finite, from [`MIN_TIMEOUT_SECONDS`] to [`MAX_TIMEOUT_SECONDS`].
pub(crate) fn seconds(value: f64) -> std::result::Result<Duration, String> {
    if !(MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&value) {
        return Err(format!(
            "expected a number of seconds greater than 0 (from {MIN_TIMEOUT_SECONDS} to \
             {MAX_TIMEOUT_SECONDS}, 10 years), found {value}; leave the key out for the default"
        ));
    }
    Duration::try_from_secs_f64(value).map_err(|e| format!("{value} seconds: {e}"))
}

fn timeout_of(value: Option<f64>, key: &str) -> Result<Option<Duration>> {
    value
        .map(seconds)
        .transpose()
        .map_err(|message| Error::Config {
            file: None,
            key: key.to_owned(),
            message,
        })
}

impl McpServerConfig {
    /// `connect_timeout_seconds` as a [`Duration`]; an error when it is not a positive, finite
    /// number of seconds of at most [`MAX_TIMEOUT_SECONDS`].
    ///
    /// ```
    /// use agentkit_core::McpServerConfig;
    ///
    /// let ok = McpServerConfig::stdio("srv").with_connect_timeout_seconds(2.5);
    /// assert_eq!(ok.connect_timeout()?, Some(std::time::Duration::from_millis(2500)));
    /// assert!(McpServerConfig::stdio("srv").with_connect_timeout_seconds(1e20).connect_timeout().is_err());
    /// assert!(McpServerConfig::stdio("srv").with_connect_timeout_seconds(0.0).connect_timeout().is_err());
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    pub fn connect_timeout(&self) -> Result<Option<Duration>> {
        timeout_of(self.connect_timeout_seconds, "connect_timeout_seconds")
    }

    /// `request_timeout_seconds` as a [`Duration`], checked like
    /// [`connect_timeout`](Self::connect_timeout).
    pub fn request_timeout(&self) -> Result<Option<Duration>> {
        timeout_of(self.request_timeout_seconds, "request_timeout_seconds")
    }
}

fn known(names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{}`", n.as_ref())).collect();
    if names.is_empty() {
        "none are configured".to_owned()
    } else {
        names.join(", ")
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Config {
    /// Checks that every server has what its transport needs (`command` for stdio, `url` for
    /// HTTP) and that roles name only configured servers. Loading runs this; call it for a
    /// configuration built in code.
    ///
    /// ```
    /// use agentkit_core::config::{Config, McpServerConfig, McpTransport};
    ///
    /// let config = Config::new().with_server("api", McpServerConfig::new(McpTransport::StreamableHttp));
    /// let err = config.validate().unwrap_err();
    /// assert!(err.to_string().contains("needs a `url`"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|(key, message)| Error::Config {
            file: None,
            key: key.to_string(),
            message,
        })
    }

    /// `otel:`: a sampling ratio within 0..=1, an `http(s)` endpoint, valid header names.
    fn check_otel(&self) -> Result<(), (KeyPath, String)> {
        let otel = &self.otel;
        if let Some(r) = otel.sample_ratio
            && !(r.is_finite() && (0.0..=1.0).contains(&r))
        {
            return Err((
                KeyPath::keys(["otel", "sample_ratio"]),
                format!(
                    "expected a share of traces from 0 to 1 (e.g. 0.1 for one in ten), found {r}"
                ),
            ));
        }
        if let Some(e) = &otel.endpoint {
            let e = e.trim();
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err((
                    KeyPath::keys(["otel", "endpoint"]),
                    format!(
                        "expected the OTLP/HTTP base URL of a collector, e.g.                          http://localhost:4318, found `{}`",
                        e.escape_debug()
                    ),
                ));
            }
        }
        for (name, value) in &otel.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                return Err((
                    KeyPath::keys(["otel", "headers", name.as_str()]),
                    format!(
                        "`{}` is not a valid HTTP header name (letters, digits and                          !#$%&'*+-.^_`|~ only)",
                        name.escape_debug()
                    ),
                ));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err((
                    KeyPath::keys(["otel", "headers", name.as_str()]),
                    "a header value may not contain line breaks or NUL".to_owned(),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn check(&self) -> Result<(), (KeyPath, String)> {
        if let Some(label) = &self.server.schedules_label
            && !super::spec::is_valid_name(label)
        {
            return Err((
                KeyPath::keys(["server", "schedules_label"]),
                format!(
                    "expected a label name (1 to 64 letters, digits, `-` or `_`), found `{}`",
                    label.escape_debug()
                ),
            ));
        }
        for (section, t) in [
            (
                "openai",
                self.openai.as_ref().and_then(|o| o.timeout_seconds),
            ),
            (
                "anthropic",
                self.anthropic.as_ref().and_then(|a| a.timeout_seconds),
            ),
            (
                "google",
                self.google.as_ref().and_then(|g| g.timeout_seconds),
            ),
        ] {
            if let Some(t) = t {
                seconds(t).map_err(|m| (KeyPath::keys([section, "timeout_seconds"]), m))?;
            }
        }
        let base = KeyPath::keys(["mcp", "servers"]);
        for (name, server) in &self.mcp.servers {
            let p = base.key(name.as_str());
            for r in [server.connect_timeout(), server.request_timeout()] {
                if let Err(Error::Config { key, message, .. }) = r {
                    return Err((p.key(key), message));
                }
            }
            if server.max_concurrency == Some(0) {
                return Err((
                    p.key("max_concurrency"),
                    "expected at least 1 concurrent request; leave the key out for no limit"
                        .to_owned(),
                ));
            }
            match server.transport {
                McpTransport::Stdio => {
                    if server
                        .command
                        .as_deref()
                        .is_none_or(|c| c.trim().is_empty())
                    {
                        return Err((
                            p,
                            format!(
                                "stdio MCP server `{name}` needs a `command` to start (or a \
                                 `url` and an HTTP `transport`)"
                            ),
                        ));
                    }
                }
                McpTransport::StreamableHttp | McpTransport::Sse => {
                    if server.url.as_deref().is_none_or(|u| u.trim().is_empty()) {
                        return Err((
                            p,
                            format!("HTTP MCP server `{name}` needs a `url` to connect to"),
                        ));
                    }
                }
            }
        }
        self.check_otel()?;
        for (role, servers) in &self.mcp.roles {
            for (i, server) in servers.iter().enumerate() {
                if !self.mcp.servers.contains_key(server) {
                    return Err((
                        KeyPath::keys(["mcp", "roles", role.as_str()]).index(i),
                        format!(
                            "role `{role}` names unknown MCP server `{server}`; configured \
                             servers: {}",
                            known(self.mcp.servers.keys())
                        ),
                    ));
                }
            }
        }
        self.check_specs()
    }

    /// The servers an agent gets: the union of the `roles`' server lists and the explicit
    /// `servers`, in that order, without duplicates. An unknown role or server is an error
    /// listing the known ones.
    ///
    /// ```
    /// use agentkit_core::config::{Config, McpServerConfig};
    ///
    /// let config = Config::new()
    ///     .with_server("core", McpServerConfig::stdio("core-mcp"))
    ///     .with_server("issues", McpServerConfig::stdio("issues-mcp"))
    ///     .with_server("docs", McpServerConfig::streamable_http("http://127.0.0.1:8080/mcp"))
    ///     .with_role("dev", ["core", "issues"])
    ///     .with_role("writer", ["docs", "core"]);
    /// let servers = config.resolve_servers(&["dev", "writer"], &["issues"])?;
    /// assert_eq!(servers, ["core", "issues", "docs"]);
    /// assert!(config.resolve_servers(&["ops"], &[]).is_err());
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    pub fn resolve_servers(&self, roles: &[&str], servers: &[&str]) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |name: &str, key: String| -> Result<()> {
            if !self.mcp.servers.contains_key(name) {
                return Err(Error::Config {
                    file: None,
                    key,
                    message: format!(
                        "unknown MCP server `{name}`; configured servers: {}",
                        known(self.mcp.servers.keys())
                    ),
                });
            }
            if !out.iter().any(|s| s == name) {
                out.push(name.to_owned());
            }
            Ok(())
        };
        for role in roles {
            let members = self.mcp.roles.get(*role).ok_or_else(|| Error::Config {
                file: None,
                key: format!("mcp.roles.{role}"),
                message: format!(
                    "unknown role `{role}`; configured roles: {}",
                    known(self.mcp.roles.keys())
                ),
            })?;
            for (i, name) in members.iter().enumerate() {
                add(name, format!("mcp.roles.{role}[{i}]"))?;
            }
        }
        for name in servers {
            add(name, format!("mcp.servers.{name}"))?;
        }
        Ok(out)
    }

    /// The OpenAI settings with environment fallbacks applied: `api_key` from
    /// `OPENAI_API_KEY` and `base_url` from `OPENAI_BASE_URL` when the config sets none.
    #[must_use]
    pub fn openai_settings(&self) -> OpenAiSettings {
        self.openai_settings_with_env(&process_env)
    }

    /// [`Config::openai_settings`] reading the environment through `env`.
    ///
    /// ```
    /// use agentkit_core::config::{Config, OpenAiSettings};
    ///
    /// let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-env".to_owned());
    /// let settings = Config::new().openai_settings_with_env(&env);
    /// assert_eq!(settings.api_key.as_deref(), Some("sk-env"));
    /// let config = Config::new().with_openai(OpenAiSettings::new().with_api_key("sk-file"));
    /// assert_eq!(config.openai_settings_with_env(&env).api_key.as_deref(), Some("sk-file"));
    /// ```
    #[must_use]
    pub fn openai_settings_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> OpenAiSettings {
        let mut s = self.openai.clone().unwrap_or_default();
        fallback(&mut s.api_key, env, "OPENAI_API_KEY");
        fallback(&mut s.base_url, env, "OPENAI_BASE_URL");
        s
    }

    /// The Anthropic settings with environment fallbacks applied: `api_key` from
    /// `ANTHROPIC_API_KEY` and `base_url` from `ANTHROPIC_BASE_URL` when the config sets none.
    #[must_use]
    pub fn anthropic_settings(&self) -> AnthropicSettings {
        self.anthropic_settings_with_env(&process_env)
    }

    /// [`Config::anthropic_settings`] reading the environment through `env`.
    #[must_use]
    pub fn anthropic_settings_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> AnthropicSettings {
        let mut s = self.anthropic.clone().unwrap_or_default();
        fallback(&mut s.api_key, env, "ANTHROPIC_API_KEY");
        fallback(&mut s.base_url, env, "ANTHROPIC_BASE_URL");
        s
    }

    /// The Google Gemini settings with environment fallbacks applied: `api_key` from
    /// `GEMINI_API_KEY`, else `GOOGLE_API_KEY`, when the config sets none.
    #[must_use]
    pub fn google_settings(&self) -> GoogleSettings {
        self.google_settings_with_env(&process_env)
    }

    /// [`Config::google_settings`] reading the environment through `env`.
    #[must_use]
    pub fn google_settings_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> GoogleSettings {
        let mut s = self.google.clone().unwrap_or_default();
        fallback(&mut s.api_key, env, "GEMINI_API_KEY");
        fallback(&mut s.api_key, env, "GOOGLE_API_KEY");
        s
    }

    /// The built-in [`PriceTable`] with this config's `prices` added (same id replaces).
    ///
    /// ```
    /// use agentkit_core::{Config, ModelInfo, Usage};
    ///
    /// let config = Config::new().with_price(ModelInfo::new("my-llama", "openai", 0.1, 0.2));
    /// let table = config.price_table();
    /// assert!(table.get("my-llama").is_some());
    /// assert!(table.get("gpt-5").is_some());
    /// ```
    #[must_use]
    pub fn price_table(&self) -> PriceTable {
        self.prices
            .iter()
            .cloned()
            .fold(PriceTable::default(), PriceTable::with_model)
    }
}

fn fallback(slot: &mut Option<String>, env: &dyn Fn(&str) -> Option<String>, var: &str) {
    if slot.as_deref().is_none_or(str::is_empty)
        && let Some(v) = env(var).filter(|v| !v.is_empty())
    {
        *slot = Some(v);
    }
}
