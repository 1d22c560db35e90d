//! Anthropic Messages API provider (feature `anthropic`).
//!
//! [`AnthropicProvider`] speaks `POST {base_url}/v1/messages`, plain and streamed (server-sent
//! events). It translates agentkit's one message model into the Messages API:
//!
//! - the system prompt and any [`Role::System`](crate::Role::System) messages become the top-level `system` field;
//! - [`Role::Tool`](crate::Role::Tool) messages become `user` turns of `tool_result` blocks, and consecutive
//!   messages of the same role are merged, because the API wants user and assistant turns to
//!   alternate;
//! - [`ResponseFormat`](crate::ResponseFormat) (structured output) becomes a tool whose input schema is the wanted
//!   schema; the model is made to call it and the call's input comes back as the answer's text,
//!   so [`AugmentedLlmExt::generate_structured`](crate::AugmentedLlmExt::generate_structured)
//!   works as it does with every other provider.
//!
//! Failures map to [`Error::Provider`] with the matching [`ProviderErrorKind`]: HTTP 429 is
//! `RateLimited` (with the server's `retry-after`), 529 and an in-stream `overloaded_error` are
//! `Overloaded`, 401 is `Auth`, a body that is not the Messages API format is `Decode`, and a
//! stream that ends before `message_stop` is `Stream`. Wrap the provider in a
//! [`ProviderBuilder`](crate::ProviderBuilder) to retry the retryable ones.

// One job per module: `config` (what to reach and how: code, settings, environment),
// `request` (a CompletionRequest as a wire body), `response` (a wire answer as a
// CompletionResponse), `stream` (server-sent events as CompletionChunks). This file holds the
// provider: headers, the HTTP call and the LlmProvider impl.
mod config;
mod request;
mod response;
mod stream;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::http;
use super::{ChunkStream, CompletionRequest, CompletionResponse, LlmProvider};
use crate::config::AnthropicSettings;
use crate::error::{Error, ProviderErrorKind, Result};

pub use config::{
    AnthropicConfig, DEFAULT_BASE_URL, DEFAULT_MAX_TOKENS, DEFAULT_MODEL, DEFAULT_TIMEOUT,
    DEFAULT_VERSION,
};

use config::API_KEY_VAR;
use request::build_body;
use response::WireResponse;

pub(super) const PROVIDER: &str = "anthropic";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An [`LlmProvider`] over the Anthropic Messages API.
///
/// ```no_run
/// use agentkit_core::provider::anthropic::AnthropicProvider;
/// use agentkit_core::{CompletionRequest, LlmProvider, Message};
///
/// # async fn demo() -> agentkit_core::Result<()> {
/// // Reads ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL, if set).
/// let claude = AnthropicProvider::from_env()?;
/// let answer = claude
///     .complete(
///         CompletionRequest::new(vec![Message::user("Name one prime number.")])
///             .with_system("Answer in one word.")
///             .with_max_tokens(16),
///     )
///     .await?;
/// println!("{} ({} output tokens)", answer.text(), answer.usage.output_tokens);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AnthropicProvider {
    config: AnthropicConfig,
    endpoint: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("config", &self.config)
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    /// A provider with this configuration. Fails with [`Error::Config`] when the base URL is
    /// not an absolute http(s) URL, or a header name or value (including the API key) cannot
    /// be sent over HTTP.
    pub fn new(config: AnthropicConfig) -> Result<Self> {
        http::check_timeout("anthropic", config.timeout)?;
        let mut headers = HeaderMap::new();
        let header_error = |name: &str, e: &dyn fmt::Display| Error::Config {
            file: None,
            key: format!("anthropic.headers.{name}"),
            message: format!("cannot be sent as an HTTP header: {e}"),
        };
        let mut key = HeaderValue::from_str(&config.api_key).map_err(|e| Error::Config {
            file: None,
            key: "anthropic.api_key".to_owned(),
            message: format!("the API key cannot be sent as an HTTP header: {e}"),
        })?;
        key.set_sensitive(true);
        headers.insert("x-api-key", key);
        headers.insert(
            "anthropic-version",
            HeaderValue::from_str(&config.version)
                .map_err(|e| header_error("anthropic-version", &e))?,
        );
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| header_error(name, &e))?;
            let v = HeaderValue::from_str(value).map_err(|e| header_error(name, &e))?;
            headers.insert(n, v);
        }
        let mut endpoint = http::base_url("anthropic", &config.base_url, DEFAULT_BASE_URL)?;
        if let Ok(mut segments) = endpoint.path_segments_mut() {
            segments.pop_if_empty().extend(["v1", "messages"]);
        }
        let client = http::client(CONNECT_TIMEOUT)?;
        Ok(Self {
            config,
            endpoint,
            headers,
            client,
        })
    }

    /// A provider for the public API (or `ANTHROPIC_BASE_URL`) with the key in
    /// `ANTHROPIC_API_KEY`. A missing key is an [`Error::Config`] naming the variable.
    pub fn from_env() -> Result<Self> {
        Self::from_settings(&AnthropicSettings::default())
    }

    /// A provider from the `anthropic` section of the configuration. Settings win; the
    /// `ANTHROPIC_API_KEY` and `ANTHROPIC_BASE_URL` environment variables fill what they leave
    /// unset. (`max_retries` is not applied here: wrap the provider in a
    /// [`ProviderBuilder`](crate::ProviderBuilder) to retry.)
    pub fn from_settings(settings: &AnthropicSettings) -> Result<Self> {
        Self::new(AnthropicConfig::from_lookup(settings, |k| {
            std::env::var(k).ok()
        })?)
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &AnthropicConfig {
        &self.config
    }

    async fn send(&self, body: &Value, streaming: bool) -> Result<reqwest::Response> {
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .json(body);
        if streaming {
            request = request.header(reqwest::header::ACCEPT, "text/event-stream");
        } else if let Some(t) = self.config.timeout {
            request = request.timeout(t);
        }
        let sent = http::with_traceparent(request).send();
        let result = match (streaming, self.config.timeout) {
            (true, Some(t)) => match tokio::time::timeout(t, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(Error::provider(
                        PROVIDER,
                        ProviderErrorKind::Timeout,
                        format!("the stream did not start within {t:?}"),
                    ));
                }
            },
            _ => sent.await,
        };
        let response = result.map_err(|e| http::transport_error(PROVIDER, e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(explain(http::status_error(PROVIDER, response).await))
        }
    }
}

/// Say which key to check when the API rejects the credentials.
fn explain(mut error: Error) -> Error {
    if let Error::Provider {
        kind: ProviderErrorKind::Auth,
        message,
        ..
    } = &mut error
    {
        let said = message
            .strip_suffix(" (check the API key)")
            .unwrap_or(message)
            .to_owned();
        *message = format!(
            "{said} (check the API key: the {API_KEY_VAR} environment variable or \
             `anthropic.api_key` in the configuration)"
        );
    }
    error
}

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.config.default_model)
    }

    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let wire = build_body(&self.config, &request, false);
        tracing::debug!(model = %wire.body["model"], "anthropic: sending messages request");
        let response = self.send(&wire.body, false).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| http::transport_error(PROVIDER, e))?;
        let parsed: WireResponse =
            http::decode_json(PROVIDER, "Messages API", "the response body", &bytes)?;
        Ok(parsed.into_response(wire.structured.as_deref()))
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream> {
        let wire = build_body(&self.config, &request, true);
        tracing::debug!(model = %wire.body["model"], "anthropic: opening message stream");
        let response = self.send(&wire.body, true).await?;
        Ok(stream::chunk_stream(
            http::idle_timeout(
                PROVIDER,
                http::response_events(PROVIDER, response),
                self.config.timeout,
            ),
            wire.structured,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_a_newline_is_a_config_error_not_a_panic() {
        let err = AnthropicProvider::new(AnthropicConfig::new("bad\nkey")).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(!format!("{:?}", AnthropicConfig::new("k")).contains("\"k\""));
    }

    #[test]
    fn base_urls_are_checked_and_keep_their_path() {
        let err = AnthropicProvider::new(AnthropicConfig::new("k").with_base_url("localhost:8080"))
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(err.to_string().contains("anthropic.base_url"), "{err}");
        let p = AnthropicProvider::new(
            AnthropicConfig::new("k").with_base_url("https://gateway.local/anthropic/"),
        )
        .unwrap();
        assert_eq!(
            p.endpoint.as_str(),
            "https://gateway.local/anthropic/v1/messages"
        );
    }
}
