//! OpenAI Chat Completions provider, and every endpoint that speaks the same wire format
//! (Azure OpenAI, Ollama, vLLM, LM Studio, OpenRouter, llama.cpp server, ...), plus
//! [`OpenAiEmbedder`] for the embeddings endpoint.
//!
//! With [`OpenAiApi::Responses`] (`api: responses` in the `openai:` section, or
//! [`OpenAiConfig::with_api`]) the same provider speaks the Responses API
//! (`POST {base_url}/responses`) instead: messages, `function_call` and
//! `function_call_output` input items, function tools (sent with `strict: false`),
//! `text.format` for structured output, and its stream events (`response.output_text.delta`,
//! `response.function_call_arguments.delta`, `response.completed`, `response.failed`,
//! `error`). Reasoning items the model returns are kept in the assistant message as
//! [`Content::ProviderData`](crate::Content::ProviderData) blocks of format
//! [`RESPONSES_DATA_FORMAT`] and sent back, in place, on the next turn of the agent loop; by
//! default the provider sends `store: false` and, to reasoning models (o-series, GPT-5 but
//! not its chat variants, Codex), `include: ["reasoning.encrypted_content"]`, so no state is
//! kept at OpenAI ([`OpenAiConfig::with_store`] changes that; `include` in
//! [`CompletionRequest::extra`](crate::CompletionRequest::extra) overrides the guess). A
//! reasoning item without encrypted content is not sent back when nothing is stored. The
//! Responses API has no stop sequences: `stop` is not sent.
//!
//! ```
//! use agentkit_core::LlmProvider;
//! use agentkit_core::provider::openai::{OpenAiConfig, OpenAiProvider};
//!
//! // A local Ollama server: no API key needed. The name makes events and errors say "ollama".
//! let ollama = OpenAiProvider::new(
//!     OpenAiConfig::compatible("http://localhost:11434/v1", "").with_default_model("llama3.2"),
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

// One job per module: `config` (what to reach and how: code, settings, environment),
// `endpoint` (HTTP: client, headers, URLs, POST), `request` (a CompletionRequest as a wire
// body), `response` (a wire answer as a CompletionResponse), `stream` (server-sent events as
// CompletionChunks), `embedding` (the embeddings endpoint). This file wires them together.
mod config;
mod embedding;
mod endpoint;
mod request;
mod response;
mod responses;
mod stream;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::http;
use super::{ChunkStream, CompletionRequest, CompletionResponse, LlmProvider};
use crate::config::OpenAiSettings;
use crate::error::Result;

pub use crate::config::OpenAiApi;
pub use config::{DEFAULT_BASE_URL, DEFAULT_MODEL, DEFAULT_TIMEOUT, OpenAiConfig};
pub use embedding::{DEFAULT_EMBEDDING_BATCH, DEFAULT_EMBEDDING_MODEL, OpenAiEmbedder};
pub use responses::DATA_FORMAT as RESPONSES_DATA_FORMAT;

use crate::provider::StreamAccumulator;
use endpoint::Endpoint;
use response::WireResponse;
use stream::StreamState;

const PROVIDER_NAME: &str = "openai";

/// A chat model over the OpenAI Chat Completions API (`POST {base_url}/chat/completions`).
///
/// Honours every [`CompletionRequest`] field, streams with usage, and maps HTTP failures to
/// [`ProviderErrorKind`](crate::ProviderErrorKind)s so [`ProviderBuilder`](crate::ProviderBuilder) can retry them. Cheap
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
    /// [`Error::Config`](crate::Error::Config) when the base URL, a header or the key cannot be used.
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
    /// [`Error::Config`](crate::Error::Config) when `OPENAI_API_KEY` is missing for api.openai.com, or the base URL
    /// is not a URL.
    pub fn from_env() -> Result<Self> {
        Self::new(OpenAiConfig::from_env()?)
    }

    /// A provider configured from `agentkit.yaml` settings, the environment filling the gaps;
    /// see [`OpenAiConfig::from_settings`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) when the settings cannot be used.
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
        OpenAiEmbedder::on(&self.name, Arc::clone(&self.endpoint))
    }

    fn body(&self, request: &CompletionRequest, stream: bool) -> Map<String, Value> {
        request::chat_body(&self.config, request, stream)
    }

    async fn complete_responses(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let body = Value::Object(responses::body(&self.config, &request, false));
        tracing::debug!(provider = %self.name, url = %self.endpoint.responses_url, "response");
        let wire: responses::WireResponse = self
            .endpoint
            .post_json(
                &self.name,
                &self.endpoint.responses_url,
                &body,
                "the response",
            )
            .await?;
        let id = wire.id.clone();
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let mut state = responses::ResponsesState::new(&self.name, model, false);
        let mut acc = StreamAccumulator::new(&self.name);
        for chunk in state.on_response(wire)? {
            acc.push(chunk);
        }
        let response = acc.finish()?;
        Ok(match id {
            Some(id) => response.with_id(id),
            None => response,
        })
    }

    async fn stream_responses(&self, request: CompletionRequest) -> Result<ChunkStream> {
        let body = Value::Object(responses::body(&self.config, &request, true));
        tracing::debug!(provider = %self.name, url = %self.endpoint.responses_url, "streamed response");
        let response = self
            .endpoint
            .post(&self.name, &self.endpoint.responses_url, &body, false)
            .await?;
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let events = http::idle_timeout(
            &self.name,
            http::response_events(&self.name, response),
            self.endpoint.timeout,
        );
        Ok(responses::ResponsesState::new(&self.name, model, true).into_stream(events))
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
        if self.config.api == OpenAiApi::Responses {
            return self.complete_responses(request).await;
        }
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
        if self.config.api == OpenAiApi::Responses {
            return self.stream_responses(request).await;
        }
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
        let state = StreamState::new(
            &self.name,
            http::idle_timeout(
                &self.name,
                http::response_events(&self.name, response),
                self.endpoint.timeout,
            ),
            model,
        );
        Ok(state.into_stream())
    }
}
