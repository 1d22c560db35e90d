//! [`AnthropicConfig`]: how to reach the Messages API, from code, settings or the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::config::AnthropicSettings;
use crate::error::{Error, Result};
use crate::provider::http;

/// The public Anthropic API.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The model used when neither the request nor the configuration names one.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";
/// The `anthropic-version` header sent unless configured otherwise.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// The `max_tokens` sent when a request sets none (the API requires the field).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;
/// The per-request timeout unless configured otherwise (as Anthropic's own SDKs use).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) const API_KEY_VAR: &str = "ANTHROPIC_API_KEY";
const BASE_URL_VAR: &str = "ANTHROPIC_BASE_URL";

/// How to reach the Anthropic Messages API.
///
/// ```
/// use agentkit_core::provider::anthropic::AnthropicConfig;
/// use std::time::Duration;
///
/// let config = AnthropicConfig::new("sk-ant-...")
///     .with_default_model("claude-haiku-4-5")
///     .with_header("anthropic-beta", "prompt-caching-2024-07-31")
///     .with_default_max_tokens(1024)
///     .with_timeout(Duration::from_secs(120));
/// assert_eq!(config.base_url, "https://api.anthropic.com");
/// assert_eq!(config.version, "2023-06-01");
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct AnthropicConfig {
    /// API key, sent as `x-api-key`.
    pub api_key: String,
    /// Base URL without the `/v1/messages` path, default [`DEFAULT_BASE_URL`].
    pub base_url: String,
    /// Model used when a request names none, default [`DEFAULT_MODEL`].
    pub default_model: String,
    /// `anthropic-version` header, default [`DEFAULT_VERSION`].
    pub version: String,
    /// Extra HTTP headers sent with every request (e.g. `anthropic-beta`).
    pub headers: BTreeMap<String, String>,
    /// `max_tokens` when a request sets none, default [`DEFAULT_MAX_TOKENS`].
    pub default_max_tokens: u32,
    /// Per-request timeout: until the whole answer is read for plain requests; for streams,
    /// until the response starts and then between two events. Default [`DEFAULT_TIMEOUT`]; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Prompt caching: when on, the system prompt and the last tool definition carry
    /// `cache_control: {type: ephemeral}`, so Anthropic caches the prefix up to them (tools,
    /// then system) and later calls read it at a tenth of the input price. Off by default:
    /// a cache write costs 1.25× the input price, so it pays only when the prefix is reused.
    /// Cache reads and writes come back in [`Usage`](crate::Usage) as `cache_read_tokens`
    /// and `cache_write_tokens` and are priced at their own rates.
    pub prompt_caching: bool,
}

impl fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("default_model", &self.default_model)
            .field("version", &self.version)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("default_max_tokens", &self.default_max_tokens)
            .field("timeout", &self.timeout)
            .field("prompt_caching", &self.prompt_caching)
            .finish()
    }
}

impl AnthropicConfig {
    /// A configuration for the public API with this key and every other setting default.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            default_model: DEFAULT_MODEL.to_owned(),
            version: DEFAULT_VERSION.to_owned(),
            headers: BTreeMap::new(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            timeout: Some(DEFAULT_TIMEOUT),
            prompt_caching: false,
        }
    }

    /// A configuration for another endpoint that speaks the Messages API (a gateway, a proxy,
    /// a local test server) at `base_url` (without `/v1/messages`), with this API key.
    ///
    /// ```
    /// use agentkit_core::provider::anthropic::{AnthropicConfig, AnthropicProvider};
    ///
    /// let config = AnthropicConfig::compatible("http://127.0.0.1:8080", "test-key");
    /// assert_eq!(config.base_url, "http://127.0.0.1:8080");
    /// // The same in builder style: AnthropicConfig::new(key).with_base_url(url).
    /// assert_eq!(AnthropicConfig::new("test-key").with_base_url("http://127.0.0.1:8080"), config);
    /// assert!(AnthropicProvider::new(config).is_ok());
    /// ```
    pub fn compatible(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self::new(api_key).with_base_url(base_url)
    }

    /// Use another endpoint (a proxy, a gateway, a local test server).
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Set the model used when a request names none.
    #[must_use]
    pub fn with_default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = model.into();
        self
    }

    /// Set the `anthropic-version` header.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Add a header sent with every request, e.g. `anthropic-beta`.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Set the `max_tokens` sent when a request sets none.
    #[must_use]
    pub fn with_default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.default_max_tokens = max_tokens;
        self
    }

    /// Set the per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Turn prompt caching on or off; see [`prompt_caching`](Self::prompt_caching).
    #[must_use]
    pub fn with_prompt_caching(mut self, on: bool) -> Self {
        self.prompt_caching = on;
        self
    }

    /// Build a configuration from settings, filling gaps from the environment through `lookup`.
    pub(super) fn from_lookup(
        settings: &AnthropicSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let api_key = non_empty(settings.api_key.clone())
            .or_else(|| non_empty(lookup(API_KEY_VAR)))
            .ok_or_else(|| Error::Config {
                file: None,
                key: "anthropic.api_key".to_owned(),
                message: format!(
                    "no Anthropic API key: set the {API_KEY_VAR} environment variable or \
                     `anthropic.api_key` in the configuration"
                ),
            })?;
        let mut config = Self::new(api_key);
        if let Some(url) =
            non_empty(settings.base_url.clone()).or_else(|| non_empty(lookup(BASE_URL_VAR)))
        {
            config.base_url = url;
        }
        if let Some(model) = non_empty(settings.default_model.clone()) {
            config.default_model = model;
        }
        if let Some(version) = non_empty(settings.version.clone()) {
            config.version = version;
        }
        config.headers.extend(settings.headers.clone());
        if let Some(secs) = settings.timeout_seconds {
            config.timeout = Some(http::timeout_seconds("anthropic", secs)?);
        }
        config.prompt_caching = settings.prompt_caching.unwrap_or(false);
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_key_names_the_variable() {
        let err =
            AnthropicConfig::from_lookup(&AnthropicSettings::default(), |_| None).unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert!(err.to_string().contains("ANTHROPIC_API_KEY"), "{err}");
    }

    #[test]
    fn settings_win_and_environment_fills_gaps() {
        let mut settings = AnthropicSettings {
            default_model: Some("claude-haiku-4-5".into()),
            timeout_seconds: Some(2.5),
            headers: [("anthropic-beta".to_owned(), "x".to_owned())].into(),
            ..AnthropicSettings::default()
        };
        let env = |k: &str| match k {
            "ANTHROPIC_API_KEY" => Some("env-key".to_owned()),
            "ANTHROPIC_BASE_URL" => Some("http://proxy.local".to_owned()),
            _ => None,
        };
        let c = AnthropicConfig::from_lookup(&settings, env).unwrap();
        assert_eq!(c.api_key, "env-key");
        assert_eq!(c.base_url, "http://proxy.local");
        assert_eq!(c.default_model, "claude-haiku-4-5");
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.headers["anthropic-beta"], "x");

        settings.api_key = Some("file-key".into());
        settings.base_url = Some("http://gateway.local".into());
        let c = AnthropicConfig::from_lookup(&settings, env).unwrap();
        assert_eq!(c.api_key, "file-key");
        assert_eq!(c.base_url, "http://gateway.local");
    }
}
