//! [`GeminiConfig`]: how to reach the Gemini API, from code, settings or the environment.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::config::GoogleSettings;
use crate::error::{Error, Result};
use crate::provider::http;

/// The public Gemini API (Google AI Studio keys), version `v1beta`.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";
/// The model used when neither the request nor the configuration names one.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";
/// The per-request timeout unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The environment variables read for the key, in order.
pub(super) const API_KEY_VARS: [&str; 2] = ["GEMINI_API_KEY", "GOOGLE_API_KEY"];

/// How to reach the Gemini API.
///
/// ```
/// use agentkit_core::provider::gemini::GeminiConfig;
/// use std::time::Duration;
///
/// let config = GeminiConfig::new("AIza...")
///     .with_default_model("gemini-2.5-pro")
///     .with_timeout(Duration::from_secs(120));
/// assert_eq!(config.base_url, "https://generativelanguage.googleapis.com/v1beta");
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct GeminiConfig {
    /// API key, sent as the `x-goog-api-key` header.
    pub api_key: String,
    /// Base URL including the API version; `/models/{model}:generateContent` is appended.
    /// Default [`DEFAULT_BASE_URL`].
    pub base_url: String,
    /// Model used when a request names none, default [`DEFAULT_MODEL`].
    pub default_model: String,
    /// Extra HTTP headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout: until the whole answer is read for plain requests; for streams,
    /// until the response starts and then between two events. `None` waits forever.
    pub timeout: Option<Duration>,
}

impl fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("default_model", &self.default_model)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl GeminiConfig {
    /// A configuration for the public API with this key and every other setting default.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            default_model: DEFAULT_MODEL.to_owned(),
            headers: BTreeMap::new(),
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// A configuration for another endpoint that speaks the Gemini API (a gateway, a proxy,
    /// a local test server) at `base_url` (with the version, e.g. `.../v1beta`).
    pub fn compatible(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self::new(api_key).with_base_url(base_url)
    }

    /// Use another endpoint.
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

    /// Add a header sent with every request.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Set the per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Build a configuration from settings, the key falling back to `GEMINI_API_KEY`, then
    /// `GOOGLE_API_KEY`, read through `lookup`.
    pub(super) fn from_lookup(
        settings: &GoogleSettings,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let api_key = non_empty(settings.api_key.clone())
            .or_else(|| API_KEY_VARS.iter().find_map(|v| non_empty(lookup(v))))
            .ok_or_else(|| Error::Config {
                file: None,
                key: "google.api_key".to_owned(),
                message: format!(
                    "no Gemini API key: set the {} (or {}) environment variable or \
                     `google.api_key` in the configuration",
                    API_KEY_VARS[0], API_KEY_VARS[1]
                ),
            })?;
        let mut config = Self::new(api_key.trim());
        if let Some(url) = non_empty(settings.base_url.clone()) {
            config.base_url = url;
        }
        if let Some(model) = non_empty(settings.default_model.clone()) {
            config.default_model = model;
        }
        config.headers.extend(settings.headers.clone());
        if let Some(secs) = settings.timeout_seconds {
            config.timeout = Some(http::timeout_seconds("google", secs)?);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_key_names_both_variables() {
        let err = GeminiConfig::from_lookup(&GoogleSettings::default(), |_| None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("GEMINI_API_KEY") && text.contains("GOOGLE_API_KEY"),
            "{text}"
        );
    }

    #[test]
    fn settings_win_then_gemini_then_google_variable() {
        let env = |k: &str| match k {
            "GOOGLE_API_KEY" => Some("google-key".to_owned()),
            _ => None,
        };
        let c = GeminiConfig::from_lookup(&GoogleSettings::default(), env).unwrap();
        assert_eq!(c.api_key, "google-key");
        let env2 = |k: &str| Some(format!("{k}-value"));
        let c = GeminiConfig::from_lookup(&GoogleSettings::default(), env2).unwrap();
        assert_eq!(c.api_key, "GEMINI_API_KEY-value");
        let settings = GoogleSettings {
            api_key: Some("file-key".into()),
            default_model: Some("gemini-2.5-pro".into()),
            timeout_seconds: Some(1.5),
            ..GoogleSettings::default()
        };
        let c = GeminiConfig::from_lookup(&settings, env2).unwrap();
        assert_eq!(c.api_key, "file-key");
        assert_eq!(c.default_model, "gemini-2.5-pro");
        assert_eq!(c.timeout, Some(Duration::from_millis(1500)));
        assert!(!format!("{c:?}").contains("file-key"));
    }
}
