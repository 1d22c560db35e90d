//! OpenAI Chat Completions provider, and every endpoint that speaks the same wire format
//! (Azure OpenAI, Ollama, vLLM, LM Studio, OpenRouter, llama.cpp server, ...), plus
//! [`OpenAiEmbedder`] for the embeddings endpoint.
//!
//! ```
//! use agentkit_core::LlmProvider;
//! use agentkit_core::provider::openai::{OpenAiConfig, OpenAiProvider};
//!
//! // A local Ollama server: no API key needed. The name makes events and errors say "ollama".
//! let ollama = OpenAiProvider::new(
//!     OpenAiConfig::default()
//!         .with_base_url("http://localhost:11434/v1")
//!         .with_default_model("llama3.2"),
//! )?
//! .with_name("ollama");
//! assert_eq!(ollama.name(), "ollama");
//! assert_eq!(ollama.default_model(), Some("llama3.2"));
//! # Ok::<_, agentkit_core::Error>(())
//! ```
//!
//! Against api.openai.com, with the key from `OPENAI_API_KEY`:
//!
//! ```no_run
//! use agentkit_core::{CompletionRequest, LlmProvider, Message};
//! use agentkit_core::provider::openai::OpenAiProvider;
//!
//! # async fn run() -> agentkit_core::Result<()> {
//! let openai = OpenAiProvider::from_env()?;
//! let answer = openai
//!     .complete(CompletionRequest::new(vec![Message::user("Say hello")]).with_max_tokens(50))
//!     .await?;
//! println!("{} ({} output tokens)", answer.text(), answer.usage.output_tokens);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::http;
use super::{
    ChunkStream, CompletionChunk, CompletionRequest, CompletionResponse, LlmProvider, ToolChoice,
};
use crate::config::OpenAiSettings;
use crate::embedding::Embedder;
use crate::error::{Error, ProviderErrorKind, Result};
use crate::message::{Content, ImageData, Message, Role, join_text};
use crate::usage::{StopReason, Usage};

/// The base URL of the OpenAI API.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The chat model used when neither the request nor the configuration names one.
pub const DEFAULT_MODEL: &str = "gpt-4.1-mini";
/// The embedding model [`OpenAiEmbedder`] uses unless told otherwise.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// The default per-request timeout (the official SDKs use the same).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

const ENV_API_KEY: &str = "OPENAI_API_KEY";
const ENV_BASE_URL: &str = "OPENAI_BASE_URL";
const ENV_ORGANIZATION: &str = "OPENAI_ORG_ID";
const ENV_PROJECT: &str = "OPENAI_PROJECT_ID";
const OPENAI_HOST: &str = "api.openai.com";
const PROVIDER_NAME: &str = "openai";

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
            Some(secs) => Some(
                Duration::try_from_secs_f64(secs)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| Error::Config {
                        file: None,
                        key: "openai.timeout_seconds".to_owned(),
                        message: format!("expected a positive number of seconds, got {secs}"),
                    })?,
            ),
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

/// The HTTP side shared by [`OpenAiProvider`] and [`OpenAiEmbedder`]: client, headers, URLs.
struct Endpoint {
    client: reqwest::Client,
    headers: HeaderMap,
    chat_url: Url,
    embeddings_url: Url,
    timeout: Option<Duration>,
    has_key: bool,
}

impl Endpoint {
    fn new(config: &OpenAiConfig) -> Result<Self> {
        let config_error = |key: &str, message: String| Error::Config {
            file: None,
            key: format!("openai.{key}"),
            message,
        };
        let base = config.base_url.trim();
        let base_url = Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| {
                config_error(
                    "base_url",
                    format!(
                        "`{base}` is not an http(s) URL; use e.g. {DEFAULT_BASE_URL} or \
                         http://localhost:11434/v1"
                    ),
                )
            })?;
        let join = |path: &[&str]| -> Result<Url> {
            let mut url = base_url.clone();
            {
                let mut segments = url.path_segments_mut().map_err(|()| {
                    config_error("base_url", format!("`{base}` cannot be a base URL"))
                })?;
                segments.pop_if_empty().extend(path);
            }
            if !config.query.is_empty() {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in &config.query {
                    pairs.append_pair(k, v);
                }
            }
            Ok(url)
        };
        let chat_url = join(&["chat", "completions"])?;
        let embeddings_url = join(&["embeddings"])?;

        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("agentkit/", env!("CARGO_PKG_VERSION"))),
        );
        let value = |what: &str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                config_error(
                    what,
                    "contains characters that cannot be sent in an HTTP header".to_owned(),
                )
            })
        };
        if let Some(key) = &config.api_key {
            let mut v = value("api_key", &format!("Bearer {}", key.trim()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Some(org) = &config.organization {
            headers.insert("openai-organization", value("organization", org)?);
        }
        if let Some(project) = &config.project {
            headers.insert("openai-project", value("project", project)?);
        }
        for (name, v) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                config_error(
                    &format!("headers.{name}"),
                    "is not a valid HTTP header name".to_owned(),
                )
            })?;
            let mut v = value(&format!("headers.{name}"), v)?;
            v.set_sensitive(true);
            headers.insert(header, v);
        }

        let connect_timeout = config
            .timeout
            .unwrap_or(Duration::from_secs(30))
            .min(Duration::from_secs(30));
        Ok(Self {
            client: http::client(connect_timeout)?,
            headers,
            chat_url,
            embeddings_url,
            timeout: config.timeout,
            has_key: config.api_key.is_some(),
        })
    }

    /// POST `body` to `url` and return the response if its status is a success.
    ///
    /// With `whole_timeout` the timeout bounds the whole exchange, body included; otherwise only
    /// the wait for the response head (streams bound the gap between events themselves).
    async fn post(
        &self,
        provider: &str,
        url: &Url,
        body: &Value,
        whole_timeout: bool,
    ) -> Result<reqwest::Response> {
        let mut builder = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .json(body);
        if whole_timeout && let Some(t) = self.timeout {
            builder = builder.timeout(t);
        }
        let sent = match (whole_timeout, self.timeout) {
            (false, Some(t)) => tokio::time::timeout(t, builder.send()).await.map_err(|_| {
                Error::provider(
                    provider,
                    ProviderErrorKind::Timeout,
                    format!("no response from {url} within {t:?}"),
                )
            })?,
            _ => builder.send().await,
        };
        let response = sent.map_err(|e| http::transport_error(provider, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let mut error = http::status_error(provider, response).await;
        if let Error::Provider {
            kind: ProviderErrorKind::Auth,
            message,
            ..
        } = &mut error
            && !self.has_key
        {
            message.push_str(&format!(
                "; no API key is configured: set {ENV_API_KEY} or use OpenAiConfig::new(key)"
            ));
        }
        Err(error)
    }

    /// POST and decode a JSON answer.
    async fn post_json<T: DeserializeOwned>(
        &self,
        provider: &str,
        url: &Url,
        body: &Value,
        what: &str,
    ) -> Result<T> {
        let response = self.post(provider, url, body, true).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| http::transport_error(provider, e))?;
        decode(provider, what, &bytes)
    }
}

/// Decode JSON with the path of the offending field in the error.
fn decode<T: DeserializeOwned>(provider: &str, what: &str, bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut snippet: String = String::from_utf8_lossy(bytes).chars().take(200).collect();
        if bytes.len() > 200 {
            snippet.push('…');
        }
        let at = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        http::decode_error(
            provider,
            &format!("{what} is not in the OpenAI format{at}"),
            format!("{inner} (body starts with: {snippet})"),
        )
    })
}

/// A chat model over the OpenAI Chat Completions API (`POST {base_url}/chat/completions`).
///
/// Honours every [`CompletionRequest`] field, streams with usage, and maps HTTP failures to
/// [`ProviderErrorKind`]s so [`ProviderBuilder`](crate::ProviderBuilder) can retry them. Cheap
/// to clone.
///
/// ```no_run
/// use agentkit_core::{Agent, AgentLlm, AugmentedLlmExt, ProviderBuilder, RetryConfig, RunContext};
/// use agentkit_core::provider::openai::OpenAiProvider;
///
/// # async fn run() -> agentkit_core::Result<()> {
/// let model = ProviderBuilder::new(OpenAiProvider::from_env()?)
///     .retry(RetryConfig::new())
///     .build();
/// let agent = AgentLlm::new(Agent::new("poet", "You write haiku."), model);
/// println!("{}", agent.generate_str("A haiku about Rust", &RunContext::new()).await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiProvider {
    name: String,
    config: Arc<OpenAiConfig>,
    endpoint: Arc<Endpoint>,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    /// A provider for this configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the base URL, a header or the key cannot be used.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        let endpoint = Endpoint::new(&config)?;
        Ok(Self {
            name: PROVIDER_NAME.to_owned(),
            config: Arc::new(config),
            endpoint: Arc::new(endpoint),
        })
    }

    /// A provider configured from the environment; see [`OpenAiConfig::from_env`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `OPENAI_API_KEY` is missing for api.openai.com, or the base URL
    /// is not a URL.
    pub fn from_env() -> Result<Self> {
        Self::new(OpenAiConfig::from_env()?)
    }

    /// A provider configured from `agentkit.yaml` settings, the environment filling the gaps;
    /// see [`OpenAiConfig::from_settings`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the settings cannot be used.
    pub fn from_settings(settings: &OpenAiSettings) -> Result<Self> {
        Self::new(OpenAiConfig::from_settings(settings)?)
    }

    /// Rename the provider (default `openai`), e.g. `ollama` or `openrouter`. The name shows
    /// in errors, events and traces; prices still match by model id.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// An embedder on the same endpoint and connection pool, with the default embedding model.
    #[must_use]
    pub fn embedder(&self) -> OpenAiEmbedder {
        OpenAiEmbedder {
            name: self.name.clone(),
            model: DEFAULT_EMBEDDING_MODEL.to_owned(),
            dimensions: None,
            batch_size: DEFAULT_EMBEDDING_BATCH,
            endpoint: Arc::clone(&self.endpoint),
        }
    }

    fn body(&self, request: &CompletionRequest, stream: bool) -> Map<String, Value> {
        chat_body(&self.config, request, stream)
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.config.default_model)
    }

    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let body = Value::Object(self.body(&request, false));
        tracing::debug!(provider = %self.name, url = %self.endpoint.chat_url, "chat completion");
        let wire: WireResponse = self
            .endpoint
            .post_json(
                &self.name,
                &self.endpoint.chat_url,
                &body,
                "the chat completion",
            )
            .await?;
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        wire.into_response(&self.name, model)
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream> {
        let body = Value::Object(self.body(&request, true));
        tracing::debug!(provider = %self.name, url = %self.endpoint.chat_url, "streamed chat completion");
        let response = self
            .endpoint
            .post(&self.name, &self.endpoint.chat_url, &body, false)
            .await?;
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let state = StreamState {
            provider: self.name.clone(),
            events: http::sse_events(&self.name, response).boxed(),
            idle: self.endpoint.timeout,
            pending: VecDeque::new(),
            finished: false,
            model,
            usage: Usage::default(),
            finish_reason: None,
            refusal: false,
            by_wire_index: HashMap::new(),
            call_ids: Vec::new(),
        };
        Ok(state.into_stream())
    }
}

// ---------------------------------------------------------------------------------------------
// Request

/// The Chat Completions request body for `request`.
fn chat_body(
    config: &OpenAiConfig,
    request: &CompletionRequest,
    stream: bool,
) -> Map<String, Value> {
    let mut body = Map::new();
    let model = request
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| config.default_model.clone());
    body.insert("model".into(), Value::String(model));
    body.insert(
        "messages".into(),
        Value::Array(wire_messages(request.system.as_deref(), &request.messages)),
    );
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let mut function = Map::new();
                function.insert("name".into(), Value::String(t.name.clone()));
                if !t.description.is_empty() {
                    function.insert("description".into(), Value::String(t.description.clone()));
                }
                let parameters = match &*t.input_schema {
                    Value::Object(o) if !o.is_empty() => (*t.input_schema).clone(),
                    _ => json!({"type": "object", "properties": {}}),
                };
                function.insert("parameters".into(), parameters);
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let choice = match &request.tool_choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
        if let Some(parallel) = request.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), Value::Bool(parallel));
        }
    }
    if let Some(t) = request.temperature {
        // Through f64's shortest decimal form so 0.2 goes out as 0.2, not 0.20000000298...
        let t: f64 = t.to_string().parse().unwrap_or(f64::from(t));
        body.insert("temperature".into(), json!(t));
    }
    if let Some(n) = request.max_tokens {
        let field = if config.legacy_max_tokens {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        body.insert(field.into(), json!(n));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    if let Some(format) = &request.response_format {
        body.insert(
            "response_format".into(),
            json!({
                "type": "json_schema",
                "json_schema": {
                    "name": format.name,
                    "schema": format.schema,
                    "strict": format.strict,
                }
            }),
        );
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (k, v) in &request.extra {
        // `stream` decides how the answer is parsed; it follows complete() vs stream().
        if k == "stream" {
            tracing::debug!("ignoring `stream` in CompletionRequest::extra");
            continue;
        }
        body.insert(k.clone(), v.clone());
    }
    body
}

/// Translate the system prompt and messages into Chat Completions messages.
fn wire_messages(system: Option<&str>, messages: &[Message]) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(system) = system.filter(|s| !s.is_empty()) {
        out.push(json!({"role": "system", "content": system}));
    }
    for message in messages {
        // Tool results become `role: tool` messages of their own, in order, ahead of whatever
        // else the message carries (tool messages must directly follow the assistant's calls).
        // Tool messages carry text only, so images a tool returned follow in a user message.
        let mut rest = Vec::new();
        let mut tool_images = Vec::new();
        for content in &message.content {
            match content {
                Content::ToolResult {
                    call_id, content, ..
                } => {
                    let images: Vec<String> = content.iter().filter_map(image_url).collect();
                    let mut text = join_text(content);
                    if !images.is_empty() {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&format!(
                            "({} image(s) returned; they follow in the next message)",
                            images.len()
                        ));
                        tool_images.push(json!({
                            "type": "text",
                            "text": format!("Images returned by tool call {call_id}:"),
                        }));
                        tool_images.extend(
                            images
                                .into_iter()
                                .map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
                        );
                    }
                    out.push(json!({
                        "role": "tool",
                        "tool_call_id": call_id,
                        "content": text,
                    }));
                }
                other => rest.push(other),
            }
        }
        if !tool_images.is_empty() {
            out.push(json!({"role": "user", "content": tool_images}));
        }
        if rest.is_empty() {
            continue;
        }
        match message.role {
            Role::System => {
                let text = join_refs(&rest);
                out.push(json!({"role": "system", "content": text}));
            }
            Role::User | Role::Tool => out.push(json!({
                "role": "user",
                "content": user_content(&rest),
            })),
            Role::Assistant => out.push(assistant_message(&rest)),
        }
    }
    out
}

fn join_refs(content: &[&Content]) -> String {
    let owned: Vec<Content> = content.iter().map(|c| (*c).clone()).collect();
    join_text(&owned)
}

/// User content: a plain string when it is all text, else an array of text and image parts.
fn user_content(content: &[&Content]) -> Value {
    let has_image = content.iter().any(|c| image_url(c).is_some());
    if !has_image {
        return Value::String(join_refs(content));
    }
    let mut parts = Vec::new();
    for c in content {
        if let Some(url) = image_url(c) {
            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            continue;
        }
        let text = match c {
            Content::Text { text } => Some(text),
            Content::Resource {
                text: Some(text), ..
            } => Some(text),
            _ => None,
        };
        if let Some(text) = text {
            parts.push(json!({"type": "text", "text": text}));
        }
    }
    Value::Array(parts)
}

/// The `image_url.url` of an image block (a `data:` URL for inline bytes).
fn image_url(content: &Content) -> Option<String> {
    match content {
        Content::Image { mime_type, data } => Some(match data {
            ImageData::Base64(b64) => format!("data:{mime_type};base64,{b64}"),
            ImageData::Url(url) => url.clone(),
        }),
        Content::Resource {
            mime_type: Some(mime),
            blob: Some(b64),
            ..
        } if mime.starts_with("image/") => Some(format!("data:{mime};base64,{b64}")),
        _ => None,
    }
}

fn assistant_message(content: &[&Content]) -> Value {
    let text = join_refs(content);
    let calls: Vec<Value> = content
        .iter()
        .filter_map(|c| match c {
            Content::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()},
            })),
            _ => None,
        })
        .collect();
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    if calls.is_empty() {
        m.insert("content".into(), Value::String(text));
    } else {
        m.insert(
            "content".into(),
            if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            },
        );
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// Response

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: Option<u32>,
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize, Default)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

impl WireUsage {
    fn to_usage(&self) -> Usage {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(prompt);
        Usage::new(prompt - cached, self.completion_tokens.unwrap_or(0)).with_cache(cached, 0)
    }
}

impl WireError {
    fn into_error(self, provider: &str, default: ProviderErrorKind) -> Error {
        let code = match &self.code {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let kind_text = self.kind.clone().unwrap_or_default();
        let class = format!("{kind_text} {code}");
        let kind = if class.contains("rate_limit") {
            ProviderErrorKind::RateLimited
        } else if class.contains("overloaded") || code == "503" {
            ProviderErrorKind::Overloaded
        } else if class.contains("server_error") || class.contains("internal") || code == "500" {
            ProviderErrorKind::Server
        } else if class.contains("invalid_api_key") || class.contains("authentication") {
            ProviderErrorKind::Auth
        } else if class.contains("invalid_request") || class.contains("insufficient_quota") {
            ProviderErrorKind::BadRequest
        } else {
            default
        };
        let mut message = self
            .message
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "the provider reported an error without a message".to_owned());
        let label = [kind_text.as_str(), code.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        if !label.is_empty() {
            message.push_str(&format!(" [{label}]"));
        }
        Error::provider(provider, kind, message)
    }
}

/// Text of a message `content`: a string, or an array of `{type: text, text}` parts.
fn content_text(content: Option<Value>) -> String {
    match content {
        Some(Value::String(s)) => s,
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Parse a tool call's arguments (a JSON string on the wire; some servers send an object).
fn parse_arguments(
    provider: &str,
    name: &str,
    id: &str,
    arguments: Option<Value>,
) -> Result<Value> {
    match arguments {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Value::Object(Map::new())),
        Some(Value::String(s)) => serde_json::from_str(&s).map_err(|e| {
            let snippet: String = s.chars().take(200).collect();
            Error::provider(
                provider,
                ProviderErrorKind::Decode,
                format!(
                    "the arguments of the call to tool `{name}` (id {id}) are not valid JSON: \
                     {e}; the model sent: {snippet}"
                ),
            )
        }),
        Some(other) => Ok(other),
    }
}

fn stop_reason(reason: Option<&str>, has_tool_calls: bool, refusal: bool) -> StopReason {
    if refusal {
        return StopReason::Refusal;
    }
    match reason {
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("length") => StopReason::MaxTokens,
        Some("content_filter") => StopReason::ContentFilter,
        // Some compatible servers say "stop" (or nothing) when they ask for tools.
        Some("stop" | "") | None if has_tool_calls => StopReason::ToolUse,
        Some("stop" | "") | None => StopReason::EndTurn,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

impl WireResponse {
    fn into_response(self, provider: &str, requested_model: &str) -> Result<CompletionResponse> {
        if let Some(error) = self.error {
            return Err(error.into_error(provider, ProviderErrorKind::BadRequest));
        }
        let choice = self
            .choices
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0)
            .ok_or_else(|| {
                http::decode_error(provider, "the chat completion", "it has no choices")
            })?;
        let refusal = choice.message.refusal.filter(|r| !r.is_empty());
        let mut content = Vec::new();
        let text = content_text(choice.message.content);
        if let Some(refusal) = &refusal {
            content.push(Content::text(refusal.clone()));
        } else if !text.is_empty() {
            content.push(Content::text(text));
        }
        for (i, call) in choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let id = call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| format!("call_{i}"));
            let arguments =
                parse_arguments(provider, &call.function.name, &id, call.function.arguments)?;
            content.push(Content::ToolCall {
                id,
                name: call.function.name,
                arguments,
            });
        }
        let has_calls = content
            .iter()
            .any(|c| matches!(c, Content::ToolCall { .. }));
        let stop = stop_reason(
            choice.finish_reason.as_deref(),
            has_calls,
            refusal.is_some(),
        );
        let usage = self.usage.unwrap_or_default().to_usage();
        let model = self
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| requested_model.to_owned());
        let mut response =
            CompletionResponse::new(Message::new(Role::Assistant, content), usage, stop, model);
        if let Some(id) = self.id {
            response = response.with_id(id);
        }
        Ok(response)
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Turns the SSE events of a streamed chat completion into [`CompletionChunk`]s.
struct StreamState {
    provider: String,
    events: BoxStream<'static, Result<(String, String)>>,
    idle: Option<Duration>,
    pending: VecDeque<Result<CompletionChunk>>,
    finished: bool,
    model: String,
    usage: Usage,
    finish_reason: Option<String>,
    refusal: bool,
    /// The wire `index` of a tool call → its index in our message.
    by_wire_index: HashMap<usize, usize>,
    /// The id of each tool call so far, by our index.
    call_ids: Vec<Option<String>>,
}

impl StreamState {
    fn into_stream(self) -> ChunkStream {
        futures::stream::unfold(self, |mut st| async move {
            loop {
                if let Some(item) = st.pending.pop_front() {
                    return Some((item, st));
                }
                if st.finished {
                    return None;
                }
                let next = match st.idle {
                    Some(limit) => match tokio::time::timeout(limit, st.events.next()).await {
                        Ok(next) => next,
                        Err(_) => Some(Err(Error::provider(
                            st.provider.clone(),
                            ProviderErrorKind::Timeout,
                            format!("the stream sent nothing for {limit:?}"),
                        ))),
                    },
                    None => st.events.next().await,
                };
                match next {
                    Some(Ok((_event, data))) => st.handle(&data),
                    Some(Err(e)) => st.fail(e),
                    None => {
                        let e = Error::provider(
                            st.provider.clone(),
                            ProviderErrorKind::Stream,
                            "the stream ended before `data: [DONE]`; the answer is incomplete",
                        );
                        st.fail(e);
                    }
                }
            }
        })
        .boxed()
    }

    fn fail(&mut self, error: Error) {
        self.pending.push_back(Err(error));
        self.finished = true;
    }

    fn handle(&mut self, data: &str) {
        let data = data.trim();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            let stop = stop_reason(
                self.finish_reason.as_deref(),
                !self.call_ids.is_empty(),
                self.refusal,
            );
            self.pending.push_back(Ok(CompletionChunk::Finish {
                usage: self.usage,
                stop_reason: stop,
                model: self.model.clone(),
            }));
            self.finished = true;
            return;
        }
        let chunk: WireChunk = match decode(&self.provider, "a stream event", data.as_bytes()) {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        if let Some(error) = chunk.error {
            let e = error.into_error(&self.provider, ProviderErrorKind::Server);
            return self.fail(e);
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        if let Some(usage) = &chunk.usage {
            self.usage = usage.to_usage();
        }
        for choice in chunk.choices {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(refusal) = delta.refusal.filter(|r| !r.is_empty()) {
                self.refusal = true;
                self.pending
                    .push_back(Ok(CompletionChunk::TextDelta { text: refusal }));
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.pending
                    .push_back(Ok(CompletionChunk::TextDelta { text }));
            }
            for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let wire = call.index.unwrap_or(position);
                let id = call.id.filter(|id| !id.is_empty());
                let index = self.call_index(wire, id.as_deref());
                let (name, arguments) = match call.function {
                    Some(f) => (f.name.filter(|n| !n.is_empty()), f.arguments),
                    None => (None, None),
                };
                self.pending.push_back(Ok(CompletionChunk::ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments: arguments.unwrap_or_default(),
                }));
            }
        }
    }

    /// Our index for a tool-call delta. A new id at a wire index already in use starts a new
    /// call (some compatible servers send every call at index 0).
    fn call_index(&mut self, wire: usize, id: Option<&str>) -> usize {
        if let Some(&index) = self.by_wire_index.get(&wire) {
            let known = self.call_ids.get(index).and_then(|i| i.as_deref());
            match (known, id) {
                (Some(known), Some(id)) if known != id => {}
                (None, Some(id)) => {
                    if let Some(slot) = self.call_ids.get_mut(index) {
                        *slot = Some(id.to_owned());
                    }
                    return index;
                }
                _ => return index,
            }
        }
        let index = self.call_ids.len();
        self.call_ids.push(id.map(str::to_owned));
        self.by_wire_index.insert(wire, index);
        index
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings

/// How many texts one embeddings request carries at most (OpenAI's limit per request).
pub const DEFAULT_EMBEDDING_BATCH: usize = 2048;

/// Text embeddings over `POST {base_url}/embeddings` (OpenAI and compatible servers).
///
/// Texts are sent in batches of at most [`with_batch_size`](Self::with_batch_size) inputs;
/// vectors come back in the order of the texts.
///
/// ```no_run
/// use agentkit_core::Embedder;
/// use agentkit_core::provider::openai::{OpenAiConfig, OpenAiEmbedder};
///
/// # async fn run() -> agentkit_core::Result<()> {
/// let embedder = OpenAiEmbedder::new(OpenAiConfig::from_env()?)?.with_dimensions(256);
/// let vectors = embedder.embed(&["refund policy".into(), "shipping times".into()]).await?;
/// assert_eq!(vectors.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiEmbedder {
    name: String,
    model: String,
    dimensions: Option<u32>,
    batch_size: usize,
    endpoint: Arc<Endpoint>,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size)
            .field("url", &self.endpoint.embeddings_url.as_str())
            .finish()
    }
}

impl OpenAiEmbedder {
    /// An embedder for this configuration, with model `text-embedding-3-small`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the base URL, a header or the key cannot be used.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        Ok(OpenAiProvider::new(config)?.embedder())
    }

    /// An embedder configured from the environment; see [`OpenAiConfig::from_env`].
    ///
    /// # Errors
    ///
    /// As [`OpenAiConfig::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(OpenAiConfig::from_env()?)
    }

    /// Use this embedding model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Ask for vectors of this size (`text-embedding-3-*` models only).
    #[must_use]
    pub fn with_dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// Send at most this many texts per request (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Rename the provider in errors (default `openai`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The embedding model.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut body = json!({
            "model": self.model,
            "input": texts,
            "encoding_format": "float",
        });
        if let Some(d) = self.dimensions {
            body["dimensions"] = json!(d);
        }
        let wire: WireEmbeddings = self
            .endpoint
            .post_json(
                &self.name,
                &self.endpoint.embeddings_url,
                &body,
                "the embeddings response",
            )
            .await?;
        if let Some(error) = wire.error {
            return Err(error.into_error(&self.name, ProviderErrorKind::BadRequest));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for item in wire.data {
            let slot = slots.get_mut(item.index).ok_or_else(|| {
                http::decode_error(
                    &self.name,
                    "the embeddings response",
                    format!(
                        "it has index {} but only {} texts were sent",
                        item.index,
                        texts.len()
                    ),
                )
            })?;
            *slot = Some(item.embedding);
        }
        slots
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| {
                    http::decode_error(
                        &self.name,
                        "the embeddings response",
                        format!("it has no vector for input {i}"),
                    )
                })
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct WireEmbeddings {
    #[serde(default)]
    data: Vec<WireEmbedding>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size.max(1)) {
            out.extend(self.embed_batch(batch).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::ToolSpec;

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
    fn bad_base_urls_and_headers_are_config_errors() {
        let err = OpenAiProvider::new(OpenAiConfig::new("k").with_base_url("localhost:8080"))
            .unwrap_err();
        assert!(err.to_string().contains("base_url"), "{err}");
        let err =
            OpenAiProvider::new(OpenAiConfig::new("k").with_header("bad header", "x")).unwrap_err();
        assert!(err.to_string().contains("bad header"), "{err}");
    }

    #[test]
    fn urls_keep_the_base_path_and_add_the_query() {
        let p = OpenAiProvider::new(
            OpenAiConfig::new("k")
                .with_base_url("https://r.openai.azure.com/openai/deployments/d/")
                .with_query("api-version", "2024-10-21"),
        )
        .unwrap();
        assert_eq!(
            p.endpoint.chat_url.as_str(),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            p.endpoint.embeddings_url.as_str(),
            "https://r.openai.azure.com/openai/deployments/d/embeddings?api-version=2024-10-21"
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let cfg = OpenAiConfig::new("sk-secret").with_header("api-key", "azure-secret");
        let shown = format!("{cfg:?} {:?}", OpenAiProvider::new(cfg.clone()).unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn tool_choice_and_parallel_are_only_sent_with_tools() {
        let cfg = OpenAiConfig::new("k");
        let req = CompletionRequest::new(vec![Message::user("hi")])
            .with_tool_choice(ToolChoice::Required)
            .with_parallel_tool_calls(false);
        let body = chat_body(&cfg, &req, false);
        assert!(!body.contains_key("tools"));
        assert!(!body.contains_key("tool_choice"));
        assert!(!body.contains_key("parallel_tool_calls"));
        assert!(!body.contains_key("stream"));

        let req = req.with_tools(vec![ToolSpec::new("t", "", json!({}))]);
        let body = chat_body(&cfg, &req, false);
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn images_returned_by_tools_follow_in_a_user_message() {
        let messages = vec![Message::tool_results(vec![Content::tool_result(
            "call_1",
            vec![
                Content::text("a chart"),
                Content::image_base64("image/png", "AAAA"),
            ],
            false,
        )])];
        let wire = wire_messages(None, &messages);
        assert_eq!(wire.len(), 2);
        assert_eq!(wire[0]["role"], "tool");
        assert!(
            wire[0]["content"]
                .as_str()
                .unwrap()
                .starts_with("a chart\n(1 image(s) returned")
        );
        assert_eq!(wire[1]["role"], "user");
        assert_eq!(
            wire[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        assert_eq!(stop_reason(Some("stop"), false, false), StopReason::EndTurn);
        assert_eq!(stop_reason(Some("stop"), true, false), StopReason::ToolUse);
        assert_eq!(
            stop_reason(Some("tool_calls"), true, false),
            StopReason::ToolUse
        );
        assert_eq!(
            stop_reason(Some("function_call"), true, false),
            StopReason::ToolUse
        );
        assert_eq!(
            stop_reason(Some("length"), false, false),
            StopReason::MaxTokens
        );
        assert_eq!(
            stop_reason(Some("content_filter"), false, false),
            StopReason::ContentFilter
        );
        assert_eq!(stop_reason(Some("stop"), false, true), StopReason::Refusal);
        assert_eq!(
            stop_reason(Some("eos"), false, false),
            StopReason::Other("eos".into())
        );
    }

    #[test]
    fn repeated_wire_indexes_with_new_ids_become_separate_calls() {
        let mut st = StreamState {
            provider: "p".into(),
            events: futures::stream::empty().boxed(),
            idle: None,
            pending: VecDeque::new(),
            finished: false,
            model: "m".into(),
            usage: Usage::default(),
            finish_reason: None,
            refusal: false,
            by_wire_index: HashMap::new(),
            call_ids: Vec::new(),
        };
        assert_eq!(st.call_index(0, Some("a")), 0);
        assert_eq!(st.call_index(0, None), 0);
        assert_eq!(st.call_index(0, Some("b")), 1);
        assert_eq!(st.call_index(0, None), 1);
        assert_eq!(st.call_index(1, Some("c")), 2);
    }
}
