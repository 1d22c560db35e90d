//! [`OpenAiConfig`]: how to reach an OpenAI-compatible endpoint, from code, settings or the
//! environment.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::config::{OpenAiApi, OpenAiSettings};
use crate::error::{Error, Result};
use crate::provider::http;

/// The base URL of the OpenAI API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The chat model used when neither the request nor the configuration names one.
pub const DEFAULT_MODEL: &str = "gpt-4.1-mini";
/// The default per-request timeout (the official SDKs use the same).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

pub(super) const ENV_API_KEY: &str = "OPENAI_API_KEY";
const ENV_BASE_URL: &str = "OPENAI_BASE_URL";
const ENV_ORGANIZATION: &str = "OPENAI_ORG_ID";
const ENV_PROJECT: &str = "OPENAI_PROJECT_ID";
const OPENAI_HOST: &str = "api.openai.com";

/// How to reach an OpenAI-compatible endpoint.
///
/// `OpenAiConfig::new(key)` targets api.openai.com; `OpenAiConfig::default()` has no key, for
/// local servers (Ollama, vLLM, LM Studio) that need none.
///
/// ```
/// use agentkit_core::provider::openai::OpenAiConfig;
/// use std::time::Duration;
///
/// // Azure OpenAI: the deployment is in the URL, the key goes in an `api-key` header.
/// let azure = OpenAiConfig::default()
///     .with_base_url("https://my-resource.openai.azure.com/openai/deployments/gpt-4o")
///     .with_header("api-key", "azure-key")
///     .with_query("api-version", "2024-10-21")
///     .with_timeout(Duration::from_secs(120));
/// assert_eq!(azure.query["api-version"], "2024-10-21");
/// assert!(azure.api_key.is_none());
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct OpenAiConfig {
    /// API key, sent as `Authorization: Bearer <key>`. `None` sends no `Authorization` header.
    pub api_key: Option<String>,
    /// Base URL; `/chat/completions` and `/embeddings` are appended to it.
    pub base_url: String,
    /// The model used when a request names none.
    pub default_model: String,
    /// `OpenAI-Organization` header.
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    pub project: Option<String>,
    /// Extra HTTP headers, sent with every request (they win over the ones above).
    pub headers: BTreeMap<String, String>,
    /// Extra query parameters, e.g. Azure's `api-version`.
    pub query: BTreeMap<String, String>,
    /// Per-request timeout. For a streamed answer it bounds the wait for the stream to open and
    /// the gap between two events, not the whole stream. `None` waits forever.
    pub timeout: Option<Duration>,
    /// Send the output-token limit as `max_tokens` (older compatible servers) instead of
    /// `max_completion_tokens`.
    pub legacy_max_tokens: bool,
    /// Which API to speak: Chat Completions (default) or Responses.
    pub api: OpenAiApi,
    /// Responses API only: `store: true` lets OpenAI keep responses. Off by default, which
    /// sends `store: false` and, to reasoning models (o-series, GPT-5, Codex),
    /// `include: ["reasoning.encrypted_content"]`, so reasoning items come back whole and go
    /// back with the next turn.
    pub store: bool,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_owned(),
            default_model: DEFAULT_MODEL.to_owned(),
            organization: None,
            project: None,
            headers: BTreeMap::new(),
            query: BTreeMap::new(),
            timeout: Some(DEFAULT_TIMEOUT),
            legacy_max_tokens: false,
            api: OpenAiApi::ChatCompletions,
            store: false,
        }
    }
}

impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets: the key and header values are redacted.
        let headers: Vec<&str> = self.headers.keys().map(String::as_str).collect();
        f.debug_struct("OpenAiConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("default_model", &self.default_model)
            .field("organization", &self.organization)
            .field("project", &self.project)
            .field("headers", &headers)
            .field("query", &self.query)
            .field("timeout", &self.timeout)
            .field("legacy_max_tokens", &self.legacy_max_tokens)
            .field("api", &self.api)
            .field("store", &self.store)
            .finish()
    }
}

impl OpenAiConfig {
    /// A configuration for api.openai.com with this API key.
    pub fn new(api_key: impl Into<String>) -> Self {
        let key = api_key.into();
        Self {
            api_key: (!key.trim().is_empty()).then_some(key),
            ..Self::default()
        }
    }

    /// A configuration for another OpenAI-compatible server (Ollama, vLLM, LM Studio,
    /// OpenRouter, a proxy) at `base_url`, with this API key; an empty key sends none.
    ///
    /// ```
    /// use agentkit_core::provider::openai::{OpenAiConfig, OpenAiProvider};
    ///
    /// let config = OpenAiConfig::compatible("http://localhost:11434/v1", "");
    /// assert_eq!(config.base_url, "http://localhost:11434/v1");
    /// assert!(config.api_key.is_none());
    /// // The same in builder style: OpenAiConfig::new(key).with_base_url(url).
    /// let openrouter = OpenAiConfig::new("sk-or-...").with_base_url("https://openrouter.ai/api/v1");
    /// assert!(OpenAiProvider::new(openrouter).is_ok());
    /// ```
    pub fn compatible(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self::new(api_key).with_base_url(base_url)
    }

    /// Read `OPENAI_API_KEY`, `OPENAI_BASE_URL` (default `https://api.openai.com/v1`),
    /// `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when no key is set and the base URL is api.openai.com. Other servers
    /// (Ollama, vLLM, LM Studio, ...) may go without a key.
    pub fn from_env() -> Result<Self> {
        Self::resolve(&OpenAiSettings::default(), &env_var)
    }

    /// Build from the `openai` section of `agentkit.yaml`: the settings' fields win, the
    /// environment (as in [`from_env`](Self::from_env)) fills the gaps. `max_retries` is not
    /// part of this type; apply it with [`ProviderBuilder`](crate::ProviderBuilder).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when no key is found for api.openai.com, or `timeout_seconds` is not
    /// a positive number.
    pub fn from_settings(settings: &OpenAiSettings) -> Result<Self> {
        Self::resolve(settings, &env_var)
    }

    fn resolve(settings: &OpenAiSettings, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let pick = |own: &Option<String>, var: &str| {
            own.clone()
                .filter(|v| !v.trim().is_empty())
                .or_else(|| env(var).filter(|v| !v.trim().is_empty()))
        };
        let base_url = pick(&settings.base_url, ENV_BASE_URL)
            .map(|u| u.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let api_key = pick(&settings.api_key, ENV_API_KEY).map(|k| k.trim().to_owned());
        if api_key.is_none() && is_openai_host(&base_url) {
            return Err(Error::Config {
                file: None,
                key: "openai.api_key".to_owned(),
                message: format!(
                    "no OpenAI API key: set the {ENV_API_KEY} environment variable (or \
                     `openai.api_key` in agentkit.yaml). A key is optional only for other \
                     OpenAI-compatible servers, chosen with {ENV_BASE_URL} or `openai.base_url`"
                ),
            });
        }
        let timeout = match settings.timeout_seconds {
            None => Some(DEFAULT_TIMEOUT),
            Some(secs) => Some(http::timeout_seconds("openai", secs)?),
        };
        Ok(Self {
            api_key,
            base_url,
            default_model: settings
                .default_model
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            organization: pick(&settings.organization, ENV_ORGANIZATION),
            project: pick(&settings.project, ENV_PROJECT),
            headers: settings.headers.clone(),
            query: settings.query.clone(),
            timeout,
            legacy_max_tokens: false,
            api: settings.api.unwrap_or_default(),
            store: settings.store.unwrap_or(false),
        })
    }

    /// Set the API key.
    #[must_use]
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Set the base URL (e.g. `http://localhost:11434/v1` for Ollama).
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

    /// Add an HTTP header sent with every request (e.g. `api-key` for Azure, `HTTP-Referer`
    /// for OpenRouter).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Add a query parameter sent with every request (e.g. Azure's `api-version`).
    #[must_use]
    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.insert(name.into(), value.into());
        self
    }

    /// Set the per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Speak this API: [`OpenAiApi::Responses`] for `POST /responses`.
    ///
    /// ```
    /// use agentkit_core::config::OpenAiApi;
    /// use agentkit_core::provider::openai::OpenAiConfig;
    ///
    /// let config = OpenAiConfig::new("sk-...").with_api(OpenAiApi::Responses);
    /// assert_eq!(config.api, OpenAiApi::Responses);
    /// ```
    #[must_use]
    pub fn with_api(mut self, api: OpenAiApi) -> Self {
        self.api = api;
        self
    }

    /// Responses API only: let OpenAI store responses (see [`store`](Self::store)).
    #[must_use]
    pub fn with_store(mut self, store: bool) -> Self {
        self.store = store;
        self
    }

    /// Send `max_tokens` instead of `max_completion_tokens`, for older compatible servers.
    #[must_use]
    pub fn with_legacy_max_tokens(mut self, legacy: bool) -> Self {
        self.legacy_max_tokens = legacy;
        self
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn is_openai_host(base_url: &str) -> bool {
    Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case(OPENAI_HOST)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::openai::OpenAiProvider;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn a_missing_key_for_api_openai_com_names_the_variable() {
        let err = OpenAiConfig::resolve(&OpenAiSettings::default(), &env_of(&[])).unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
    }

    #[test]
    fn local_servers_need_no_key() {
        let cfg = OpenAiConfig::resolve(
            &OpenAiSettings::default(),
            &env_of(&[("OPENAI_BASE_URL", "http://localhost:11434/v1")]),
        )
        .unwrap();
        assert_eq!(cfg.api_key, None);
        assert_eq!(cfg.base_url, "http://localhost:11434/v1");
        assert_eq!(cfg.default_model, DEFAULT_MODEL);
        assert!(OpenAiProvider::new(cfg).is_ok());
    }

    #[test]
    fn settings_win_and_the_environment_fills_gaps() {
        let mut settings = OpenAiSettings {
            api_key: Some("sk-settings".into()),
            default_model: Some("gpt-4o".into()),
            timeout_seconds: Some(2.5),
            ..OpenAiSettings::default()
        };
        let cfg = OpenAiConfig::resolve(
            &settings,
            &env_of(&[
                ("OPENAI_API_KEY", "sk-env"),
                ("OPENAI_ORG_ID", "org-1"),
                ("OPENAI_BASE_URL", "https://proxy.example/v1"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.api_key.as_deref(), Some("sk-settings"));
        assert_eq!(cfg.organization.as_deref(), Some("org-1"));
        assert_eq!(cfg.base_url, "https://proxy.example/v1");
        assert_eq!(cfg.default_model, "gpt-4o");
        assert_eq!(cfg.timeout, Some(Duration::from_millis(2500)));

        settings.timeout_seconds = Some(-1.0);
        let err = OpenAiConfig::resolve(&settings, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("timeout_seconds"), "{err}");
    }

    #[test]
    fn debug_output_hides_the_key() {
        let cfg = OpenAiConfig::new("sk-secret").with_header("api-key", "azure-secret");
        let shown = format!("{cfg:?} {:?}", OpenAiProvider::new(cfg.clone()).unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }
}
