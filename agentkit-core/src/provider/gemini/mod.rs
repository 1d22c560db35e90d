//! Google Gemini provider (feature `gemini`): `generateContent` and
//! `streamGenerateContent?alt=sse` of the Gemini API.
//!
//! [`GeminiProvider`] translates agentkit's message model into Gemini's:
//!
//! - the system prompt and any [`Role::System`](crate::Role::System) messages become
//!   `systemInstruction`;
//! - assistant turns are `model` contents; tool calls are `functionCall` parts and tool
//!   results `functionResponse` parts (`{"output": text}`, or `{"error": text}` when the tool
//!   failed) in a `user` content, answered by function name; consecutive contents of one role
//!   are merged;
//! - tools become one `functionDeclarations` tool, [`ToolChoice`](crate::ToolChoice) the
//!   `functionCallingConfig` mode (`AUTO`, `NONE`, `ANY`, `ANY` with `allowedFunctionNames`);
//!   `parallel_tool_calls` has no Gemini switch and is not sent;
//! - [`ResponseFormat`](crate::ResponseFormat) becomes `responseMimeType: application/json`
//!   with a `responseSchema` converted by [`to_gemini_schema`] (which says what Gemini's
//!   OpenAPI-subset schema cannot express). Gemini 2.x models refuse a JSON response type
//!   together with function declarations (Gemini 3 accepts both); send such a request to a
//!   Gemini 3 model, or ask for the structured answer once the tools are done;
//! - `temperature`, `max_tokens` and `stop` go to `generationConfig`; so do the
//!   [`CompletionRequest::extra`](crate::CompletionRequest::extra) keys that belong there
//!   (`topP`, `topK`, `seed`, `thinkingConfig`, ..., or a whole `generationConfig` object);
//!   other extra keys (`safetySettings`, `cachedContent`) go to the top of the body.
//!
//! Thinking models sign their turns: a part may carry a `thoughtSignature` that must come
//! back with the next request (Gemini 3 rejects a function call without it). The provider
//! keeps each one as a [`Content::ProviderData`](crate::Content::ProviderData) block of format
//! `gemini` in the assistant message, and puts it back on the part it came with. Thought
//! summaries (`thought: true` parts) are not part of the answer.
//!
//! Gemini does not always give function calls an id; the provider then makes one up
//! (`gemini-call-…`) and does not send it back. Usage maps `promptTokenCount` (less
//! `cachedContentTokenCount`, which is `cache_read_tokens`) to input tokens and
//! `candidatesTokenCount` + `thoughtsTokenCount` to output tokens, with the thoughts also in
//! `reasoning_tokens`.
//!
//! Failures map to [`Error::Provider`]: the gRPC status of Gemini's error object decides the
//! kind (`RESOURCE_EXHAUSTED` is `RateLimited`, with the wait of a `RetryInfo` detail when
//! there is no `Retry-After`; `UNAVAILABLE` is `Overloaded`; an invalid key is `Auth`), a body
//! that is not the Gemini format is `Decode`, and a stream that closes before a
//! `finishReason` is `Stream`.

mod config;
mod request;
mod response;
mod schema;
mod stream;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::http;
use super::{ChunkStream, CompletionRequest, CompletionResponse, LlmProvider, StreamAccumulator};
use crate::config::GoogleSettings;
use crate::error::{Error, ProviderErrorKind, Result};

pub use config::{DEFAULT_BASE_URL, DEFAULT_MODEL, DEFAULT_TIMEOUT, GeminiConfig};
pub use schema::to_gemini_schema;

use response::{Turn, WireResponse};

pub(super) const PROVIDER: &str = "google";
/// The [`Content::ProviderData`](crate::Content::ProviderData) format of thought signatures.
pub const DATA_FORMAT: &str = "gemini";
/// The prefix of tool-call ids the provider made up (Gemini gave none).
pub(super) const SYNTHETIC_ID_PREFIX: &str = "gemini-call-";
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An [`LlmProvider`] over the Gemini API. Its name is `google`. Cheap to clone.
///
/// ```no_run
/// use agentkit_core::provider::gemini::GeminiProvider;
/// use agentkit_core::{CompletionRequest, LlmProvider, Message};
///
/// # async fn demo() -> agentkit_core::Result<()> {
/// // Reads GEMINI_API_KEY (or GOOGLE_API_KEY).
/// let gemini = GeminiProvider::from_env()?;
/// let answer = gemini
///     .complete(CompletionRequest::new(vec![Message::user("Name one prime number.")]))
///     .await?;
/// println!("{} ({} output tokens)", answer.text(), answer.usage.output_tokens);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GeminiProvider {
    config: Arc<GeminiConfig>,
    base: Url,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl fmt::Debug for GeminiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeminiProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GeminiProvider {
    /// A provider with this configuration. Fails with [`Error::Config`] when the base URL is
    /// not an absolute http(s) URL or a header (the API key included) cannot be sent.
    pub fn new(config: GeminiConfig) -> Result<Self> {
        http::check_timeout("google", config.timeout)?;
        let header_error = |name: &str, e: &dyn fmt::Display| Error::Config {
            file: None,
            key: format!("google.headers.{name}"),
            message: format!("cannot be sent as an HTTP header: {e}"),
        };
        let mut headers = HeaderMap::new();
        let mut key = HeaderValue::from_str(config.api_key.trim()).map_err(|e| Error::Config {
            file: None,
            key: "google.api_key".to_owned(),
            message: format!("the API key cannot be sent as an HTTP header: {e}"),
        })?;
        key.set_sensitive(true);
        headers.insert("x-goog-api-key", key);
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_static(concat!("agentkit/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| header_error(name, &e))?;
            let mut v = HeaderValue::from_str(value).map_err(|e| header_error(name, &e))?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let base = http::base_url("google", &config.base_url, DEFAULT_BASE_URL)?;
        Ok(Self {
            config: Arc::new(config),
            base,
            headers,
            client: http::client(CONNECT_TIMEOUT)?,
        })
    }

    /// A provider for the public API with the key in `GEMINI_API_KEY` (or `GOOGLE_API_KEY`).
    /// A missing key is an [`Error::Config`] naming both variables.
    pub fn from_env() -> Result<Self> {
        Self::from_settings(&GoogleSettings::default())
    }

    /// A provider from the `google` section of the configuration; the environment fills the
    /// key when the settings leave it unset. (`max_retries` is not applied here: wrap the
    /// provider in a [`ProviderBuilder`](crate::ProviderBuilder) to retry.)
    pub fn from_settings(settings: &GoogleSettings) -> Result<Self> {
        Self::new(GeminiConfig::from_lookup(settings, |k| {
            std::env::var(k).ok()
        })?)
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &GeminiConfig {
        &self.config
    }

    /// The model a request asks for: its own, else the default (`models/` prefix removed).
    fn model(&self, request: &CompletionRequest) -> String {
        let model = request
            .model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(&self.config.default_model)
            .trim();
        model.strip_prefix("models/").unwrap_or(model).to_owned()
    }

    /// `{base}/models/{model}:{method}` (a tuned model's `tunedModels/x` path as it is).
    fn url(&self, model: &str, method: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            let mut parts: Vec<&str> = model.split('/').collect();
            if parts.len() == 1 {
                segments.push("models");
            }
            let last = parts.pop().unwrap_or_default();
            segments.extend(parts);
            segments.push(&format!("{last}:{method}"));
        }
        url
    }

    async fn send(&self, url: Url, body: &Value, streaming: bool) -> Result<reqwest::Response> {
        let mut request = self
            .client
            .post(url)
            .headers(self.headers.clone())
            .json(body);
        if streaming {
            request = request.header(reqwest::header::ACCEPT, "text/event-stream");
        } else if let Some(t) = self.config.timeout {
            request = request.timeout(t);
        }
        let sent = http::with_traceparent(request).send();
        let result = match (streaming, self.config.timeout) {
            (true, Some(t)) => tokio::time::timeout(t, sent).await.map_err(|_| {
                Error::provider(
                    PROVIDER,
                    ProviderErrorKind::Timeout,
                    format!("the stream did not start within {t:?}"),
                )
            })?,
            _ => sent.await,
        };
        let response = result.map_err(|e| http::transport_error(PROVIDER, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = http::retry_after(response.headers());
        let body = http::error_body(response).await;
        Err(response::error_from_body(&body, status, retry_after))
    }
}

#[async_trait]
impl LlmProvider for GeminiProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.config.default_model)
    }

    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let model = self.model(&request);
        let body = request::build_body(&request);
        let url = self.url(&model, "generateContent");
        tracing::debug!(%model, "gemini: generateContent");
        let response = self.send(url, &body, false).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        let wire: WireResponse =
            http::decode_json(PROVIDER, "Gemini", "the response body", &bytes)?;
        let id = wire.response_id.clone();
        let mut turn = Turn::new(model);
        let mut acc = StreamAccumulator::new(PROVIDER);
        for chunk in turn.on_response(wire)? {
            acc.push(chunk);
        }
        acc.push(turn.finish());
        let response = acc.finish()?;
        Ok(match id {
            Some(id) => response.with_id(id),
            None => response,
        })
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream> {
        let model = self.model(&request);
        let body = request::build_body(&request);
        let mut url = self.url(&model, "streamGenerateContent");
        url.query_pairs_mut().append_pair("alt", "sse");
        tracing::debug!(%model, "gemini: streamGenerateContent");
        let response = self.send(url, &body, true).await?;
        Ok(stream::chunk_stream(
            http::idle_timeout(
                PROVIDER,
                http::response_events(PROVIDER, response),
                self.config.timeout,
            ),
            model,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_model_and_method() {
        let p = GeminiProvider::new(GeminiConfig::compatible(
            "https://gw.local/gemini/v1beta/",
            "k",
        ))
        .unwrap();
        assert_eq!(
            p.url("gemini-2.5-flash", "generateContent").as_str(),
            "https://gw.local/gemini/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            p.url("tunedModels/my-model", "streamGenerateContent")
                .as_str(),
            "https://gw.local/gemini/v1beta/tunedModels/my-model:streamGenerateContent"
        );
        let req = CompletionRequest::default().with_model("models/gemini-2.5-pro");
        assert_eq!(p.model(&req), "gemini-2.5-pro");
    }

    #[test]
    fn bad_keys_and_urls_are_config_errors() {
        let err = GeminiProvider::new(GeminiConfig::new("bad\nkey")).unwrap_err();
        assert!(err.to_string().contains("google.api_key"), "{err}");
        let err = GeminiProvider::new(GeminiConfig::compatible("localhost:1", "k")).unwrap_err();
        assert!(err.to_string().contains("google.base_url"), "{err}");
    }
}
