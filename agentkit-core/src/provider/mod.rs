//! The [`LlmProvider`] trait, its request and response types, and the providers.
//!
//! - [`ScriptedProvider`]: deterministic replies for tests and offline demos (always built).
//! - `openai::OpenAiProvider` (feature `openai`): Chat Completions and every compatible endpoint.
//! - `anthropic::AnthropicProvider` (feature `anthropic`): the Messages API.
//! - `gemini::GeminiProvider` (feature `gemini`): the Gemini API (`generateContent`).
//! - [`ProviderBuilder`]: retries, timeouts and a concurrency limit as tower layers around any
//!   provider.

use std::collections::BTreeMap;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ProviderErrorKind, Result};
use crate::message::{Content, Message, Role};
use crate::tool::ToolSpec;
use crate::usage::{StopReason, Usage};

mod layers;
mod scripted;

#[cfg(feature = "http-provider")]
mod http;
#[cfg(all(test, feature = "http-provider"))]
mod testing;

#[cfg(feature = "anthropic")]
pub mod anthropic;
#[cfg(feature = "gemini")]
pub mod gemini;
#[cfg(feature = "openai")]
pub mod openai;

pub use layers::{LayeredProvider, ProviderBuilder, RetryConfig, RetryPolicy};
pub use scripted::{ScriptedProvider, ScriptedReply};

/// How the model may use tools.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides (the default).
    #[default]
    Auto,
    /// The model must not call tools.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// Ask for output that matches a JSON schema.
///
/// OpenAI receives it as `response_format: {type: json_schema}`; Anthropic as a forced tool
/// whose input is the answer (the provider turns that tool call back into text). Either way the
/// response's text is the JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ResponseFormat {
    /// A name for the schema (`[a-zA-Z0-9_-]`, at most 64 chars).
    pub name: String,
    /// The JSON schema the output must match.
    pub schema: Value,
    /// Ask the provider for strict schema adherence where supported.
    #[serde(default)]
    pub strict: bool,
}

impl ResponseFormat {
    /// A response format with the given name and schema, not strict.
    pub fn new(name: impl Into<String>, schema: Value) -> Self {
        Self {
            name: name.into(),
            schema,
            strict: false,
        }
    }

    /// Ask for strict adherence (OpenAI structured outputs).
    #[must_use]
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

/// One request to a model.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompletionRequest {
    /// Model id. `None` uses the provider's default model.
    pub model: Option<String>,
    /// System prompt.
    pub system: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// How the model may use the tools.
    pub tool_choice: ToolChoice,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Maximum output tokens.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Whether the model may ask for several tool calls at once.
    pub parallel_tool_calls: Option<bool>,
    /// Structured output.
    pub response_format: Option<ResponseFormat>,
    /// Provider-specific fields merged into the request body as they are
    /// (e.g. `top_p`, `seed`, `metadata`, `reasoning_effort`).
    pub extra: BTreeMap<String, Value>,
}

impl CompletionRequest {
    /// A request with these messages and everything else default.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            ..Self::default()
        }
    }

    /// Set the model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Set the system prompt.
    #[must_use]
    pub fn with_system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Set the tools.
    #[must_use]
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// Set the tool choice.
    #[must_use]
    pub fn with_tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = choice;
        self
    }

    /// Set the temperature.
    #[must_use]
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Set max output tokens.
    #[must_use]
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Set stop sequences.
    #[must_use]
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// Allow or forbid parallel tool calls.
    #[must_use]
    pub fn with_parallel_tool_calls(mut self, parallel: bool) -> Self {
        self.parallel_tool_calls = Some(parallel);
        self
    }

    /// Ask for JSON matching a schema.
    #[must_use]
    pub fn with_response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(format);
        self
    }

    /// Add a provider-specific body field.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extra.insert(key.into(), value);
        self
    }
}

/// A model's complete answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompletionResponse {
    /// The assistant message (text and tool calls).
    pub message: Message,
    /// Tokens used.
    pub usage: Usage,
    /// Why the model stopped.
    pub stop_reason: StopReason,
    /// The model that answered, as the provider reports it.
    pub model: String,
    /// The provider's response id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl CompletionResponse {
    /// A response with this message.
    pub fn new(
        message: Message,
        usage: Usage,
        stop_reason: StopReason,
        model: impl Into<String>,
    ) -> Self {
        Self {
            message,
            usage,
            stop_reason,
            model: model.into(),
            id: None,
        }
    }

    /// Set the provider response id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The text of the message.
    #[must_use]
    pub fn text(&self) -> String {
        self.message.text()
    }
}

/// One event of a streamed completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CompletionChunk {
    /// More assistant text.
    TextDelta {
        /// The new text.
        text: String,
    },
    /// Part of a tool call. The first delta of a call carries its `id` and `name`; later ones
    /// append to `arguments` (a JSON text fragment).
    ToolCallDelta {
        /// Which tool call of the message (0-based, in order of appearance).
        index: usize,
        /// Call id (first delta only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Tool name (first delta only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// JSON fragment of the arguments.
        #[serde(default)]
        arguments: String,
    },
    /// Data only this wire format can read, to be kept in the assistant's message as a
    /// [`Content::ProviderData`] block (an OpenAI reasoning item, a Gemini thought signature).
    /// It stays before the text and before the tool call that follows it in the stream.
    ProviderData {
        /// The wire format that produced it.
        format: String,
        /// The data.
        data: Value,
    },
    /// The final event: usage and stop reason.
    Finish {
        /// Tokens used.
        usage: Usage,
        /// Why the model stopped.
        stop_reason: StopReason,
        /// The model that answered.
        model: String,
    },
}

/// A stream of completion chunks.
pub type ChunkStream = BoxStream<'static, Result<CompletionChunk>>;

/// A chat model: the one thing a provider implements.
///
/// Object safe; share it as `Arc<dyn LlmProvider>`. Implementations translate
/// [`CompletionRequest`] into their wire format, honour every field they support, and map
/// failures into [`Error::Provider`] with the right [`ProviderErrorKind`] so retry layers can
/// decide.
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// Short provider name, e.g. `openai`, used in errors, events and the price table.
    fn name(&self) -> &str;

    /// The model used when a request names none.
    fn default_model(&self) -> Option<&str> {
        None
    }

    /// Send a request and wait for the whole answer.
    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse>;

    /// Send a request and stream the answer. The stream ends with a
    /// [`CompletionChunk::Finish`]; a stream that ends without one is an error of kind
    /// [`ProviderErrorKind::Stream`].
    ///
    /// The default implementation calls [`complete`](Self::complete) and replays the answer as
    /// chunks.
    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream> {
        let response = self.complete(request).await?;
        Ok(futures::stream::iter(response_to_chunks(response).into_iter().map(Ok)).boxed())
    }
}

#[async_trait]
impl<P: LlmProvider + ?Sized> LlmProvider for std::sync::Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn default_model(&self) -> Option<&str> {
        (**self).default_model()
    }
    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        (**self).complete(request).await
    }
    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream> {
        (**self).stream(request).await
    }
}

/// Pick a provider from the environment: OpenAI when `OPENAI_API_KEY` is set (honouring
/// `OPENAI_BASE_URL`), else Anthropic when `ANTHROPIC_API_KEY` is set (honouring
/// `ANTHROPIC_BASE_URL`), else Gemini when `GEMINI_API_KEY` or `GOOGLE_API_KEY` is set;
/// `Ok(None)` when none is set or their features are off.
///
/// The provider comes wrapped in the default tower layers: 3 retries of retryable failures
/// (honouring a `Retry-After` of up to 60 s; a longer one returns the error) and at most 16
/// calls in flight.
///
/// ```
/// // With no key in the environment there is no provider, and that is not an error.
/// # if std::env::var_os("OPENAI_API_KEY").is_none() && std::env::var_os("ANTHROPIC_API_KEY").is_none() {
/// assert!(agentkit_core::provider::from_env()?.is_none());
/// # }
/// # Ok::<_, agentkit_core::Error>(())
/// ```
pub fn from_env() -> Result<Option<std::sync::Arc<dyn LlmProvider>>> {
    #[cfg(feature = "openai")]
    if std::env::var("OPENAI_API_KEY").is_ok_and(|k| !k.trim().is_empty()) {
        let p = openai::OpenAiProvider::from_env()?;
        return Ok(Some(std::sync::Arc::new(layered(p, None))));
    }
    #[cfg(feature = "anthropic")]
    if std::env::var("ANTHROPIC_API_KEY").is_ok_and(|k| !k.trim().is_empty()) {
        let p = anthropic::AnthropicProvider::from_env()?;
        return Ok(Some(std::sync::Arc::new(layered(p, None))));
    }
    #[cfg(feature = "gemini")]
    if ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|k| !k.trim().is_empty()))
    {
        let p = gemini::GeminiProvider::from_env()?;
        return Ok(Some(std::sync::Arc::new(layered(p, None))));
    }
    Ok(None)
}

/// Build the provider a [`Config`](crate::config::Config) describes: its `openai` section (or
/// `OPENAI_API_KEY`) first, else its `anthropic` section (or `ANTHROPIC_API_KEY`), else its
/// `google` section (or `GEMINI_API_KEY` / `GOOGLE_API_KEY`); `Ok(None)` when it describes
/// none. The provider is wrapped in retry (the section's `max_retries`,
/// default 3) and concurrency layers.
pub fn from_config(
    config: &crate::config::Config,
) -> Result<Option<std::sync::Arc<dyn LlmProvider>>> {
    #[cfg(feature = "openai")]
    {
        let s = config.openai_settings();
        if config.openai.is_some() || s.api_key.is_some() {
            let p = openai::OpenAiProvider::from_settings(&s)?;
            return Ok(Some(std::sync::Arc::new(layered(p, s.max_retries))));
        }
    }
    #[cfg(feature = "anthropic")]
    {
        let s = config.anthropic_settings();
        if config.anthropic.is_some() || s.api_key.is_some() {
            let p = anthropic::AnthropicProvider::from_settings(&s)?;
            return Ok(Some(std::sync::Arc::new(layered(p, s.max_retries))));
        }
    }
    #[cfg(feature = "gemini")]
    {
        let s = config.google_settings();
        if config.google.is_some() || s.api_key.is_some() {
            let p = gemini::GeminiProvider::from_settings(&s)?;
            return Ok(Some(std::sync::Arc::new(layered(p, s.max_retries))));
        }
    }
    let _ = config;
    Ok(None)
}

#[cfg(feature = "http-provider")]
fn layered(
    provider: impl LlmProvider + 'static,
    max_retries: Option<u32>,
) -> layers::LayeredProvider {
    let retry = match max_retries {
        Some(n) => RetryConfig::default().with_max_retries(n),
        None => RetryConfig::default(),
    };
    ProviderBuilder::new(provider)
        .retry(retry)
        .concurrency_limit(16)
        .build()
}

/// Wrap a provider in the default layers: 3 retries with a jittered backoff (honouring a
/// `Retry-After` of up to 60 s; a longer one returns the error) and at most 16 concurrent calls.
pub fn with_default_layers(provider: impl LlmProvider + 'static) -> layers::LayeredProvider {
    ProviderBuilder::new(provider)
        .retry(RetryConfig::default())
        .concurrency_limit(16)
        .build()
}

/// Split a complete response into the chunks a stream of it would carry.
#[must_use]
pub fn response_to_chunks(response: CompletionResponse) -> Vec<CompletionChunk> {
    let mut chunks = Vec::new();
    let mut index = 0;
    for c in response.message.content {
        match c {
            Content::ProviderData { format, data } => {
                chunks.push(CompletionChunk::ProviderData { format, data });
            }
            Content::Text { text } => chunks.push(CompletionChunk::TextDelta { text }),
            Content::ToolCall {
                id,
                name,
                arguments,
            } => {
                chunks.push(CompletionChunk::ToolCallDelta {
                    index,
                    id: Some(id),
                    name: Some(name),
                    arguments: arguments.to_string(),
                });
                index += 1;
            }
            _ => {}
        }
    }
    chunks.push(CompletionChunk::Finish {
        usage: response.usage,
        stop_reason: response.stop_reason,
        model: response.model,
    });
    chunks
}

/// Accumulates streamed chunks into a [`CompletionResponse`].
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    provider: String,
    text: String,
    /// Tool calls by their index: `(id, name, arguments)`. A map, so a stray huge index
    /// costs one entry, not a vector that long.
    calls: BTreeMap<usize, (String, String, String)>,
    /// Provider data and tool calls (by index) in the order they started.
    order: Vec<Slot>,
    finish: Option<(Usage, StopReason, String)>,
}

/// What came where in a stream, for [`StreamAccumulator`].
#[derive(Debug)]
enum Slot {
    Data(String, Value),
    Call(usize),
}

impl StreamAccumulator {
    /// An empty accumulator; `provider` names the provider in errors.
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            ..Self::default()
        }
    }

    /// Add one chunk.
    pub fn push(&mut self, chunk: CompletionChunk) {
        match chunk {
            CompletionChunk::TextDelta { text } => self.text.push_str(&text),
            CompletionChunk::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            } => {
                if !self.calls.contains_key(&index) {
                    self.order.push(Slot::Call(index));
                }
                let call = self.calls.entry(index).or_default();
                if let Some(id) = id {
                    call.0 = id;
                }
                if let Some(name) = name {
                    call.1.push_str(&name);
                }
                call.2.push_str(&arguments);
            }
            CompletionChunk::ProviderData { format, data } => {
                self.order.push(Slot::Data(format, data));
            }
            CompletionChunk::Finish {
                usage,
                stop_reason,
                model,
            } => self.finish = Some((usage, stop_reason, model)),
        }
    }

    /// The assembled response, or an error if the stream never finished or a tool call's
    /// arguments are not JSON.
    pub fn finish(self) -> Result<CompletionResponse> {
        let Some((usage, stop_reason, model)) = self.finish else {
            return Err(Error::provider(
                self.provider,
                ProviderErrorKind::Stream,
                "the stream ended before its final event; the answer is incomplete",
            ));
        };
        // Provider data that came before any tool call leads (it belongs to the text or to the
        // whole answer); the rest keeps its place before the call that followed it. Tool
        // calls are in index order.
        let mut content = Vec::new();
        let mut order = self.order.into_iter().peekable();
        while let Some(Slot::Data(..)) = order.peek() {
            if let Some(Slot::Data(format, data)) = order.next() {
                content.push(Content::ProviderData { format, data });
            }
        }
        if !self.text.is_empty() {
            content.push(Content::text(self.text));
        }
        let mut data_before: BTreeMap<usize, Vec<Content>> = BTreeMap::new();
        let mut pending = Vec::new();
        let mut trailing = Vec::new();
        for slot in order {
            match slot {
                Slot::Data(format, data) => pending.push(Content::ProviderData { format, data }),
                Slot::Call(index) => {
                    data_before.insert(index, std::mem::take(&mut pending));
                }
            }
        }
        trailing.extend(pending);
        for (index, (id, name, args)) in self.calls {
            content.extend(data_before.remove(&index).unwrap_or_default());
            let arguments = if args.trim().is_empty() {
                Value::Object(Default::default())
            } else {
                serde_json::from_str(&args).map_err(|e| {
                    Error::provider(
                        self.provider.clone(),
                        ProviderErrorKind::Decode,
                        format!("arguments of streamed tool call `{name}` are not JSON: {e}"),
                    )
                })?
            };
            content.push(Content::ToolCall {
                id,
                name,
                arguments,
            });
        }
        content.extend(trailing);
        Ok(CompletionResponse::new(
            Message::new(Role::Assistant, content),
            usage,
            stop_reason,
            model,
        ))
    }
}

/// Drain a chunk stream into a complete response.
pub async fn collect_stream(provider: &str, mut stream: ChunkStream) -> Result<CompletionResponse> {
    let mut acc = StreamAccumulator::new(provider);
    while let Some(chunk) = stream.next().await {
        acc.push(chunk?);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn chunks_round_trip_into_the_same_response() {
        let resp = CompletionResponse::new(
            Message::new(
                Role::Assistant,
                vec![
                    Content::text("let me add"),
                    Content::tool_call("c1", "add", json!({"a": 1, "b": 2})),
                ],
            ),
            Usage::new(5, 7),
            StopReason::ToolUse,
            "m",
        );
        let chunks = response_to_chunks(resp.clone());
        let stream = futures::stream::iter(chunks.into_iter().map(Ok)).boxed();
        let back = collect_stream("test", stream).await.unwrap();
        assert_eq!(back, resp);
    }

    #[cfg(feature = "openai")]
    #[test]
    fn config_with_an_openai_section_builds_an_openai_provider() {
        let yaml = "openai:\n  api_key: test-key\n  base_url: http://127.0.0.1:9/v1\n  default_model: gpt-4.1-nano\n";
        let config = crate::config::Config::from_yaml_str(yaml, None).unwrap();
        let p = from_config(&config).unwrap().unwrap();
        assert_eq!(p.name(), "openai");
        assert_eq!(p.default_model(), Some("gpt-4.1-nano"));
    }

    #[tokio::test]
    async fn a_stream_without_finish_is_an_error() {
        let stream =
            futures::stream::iter(vec![Ok(CompletionChunk::TextDelta { text: "x".into() })])
                .boxed();
        let err = collect_stream("test", stream).await.unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Stream));
    }

    fn any_chunk() -> impl proptest::strategy::Strategy<Value = CompletionChunk> {
        use proptest::prelude::*;
        prop_oneof![
            ".{0,6}".prop_map(|text| CompletionChunk::TextDelta { text }),
            (
                prop_oneof![0usize..3, any::<usize>()],
                proptest::option::of("[a-z0-9_]{0,4}"),
                proptest::option::of("[a-z]{0,4}"),
                prop_oneof![
                    Just(String::new()),
                    Just("{".to_owned()),
                    Just("}".to_owned()),
                    Just("\"a\":1".to_owned()),
                    ".{0,4}"
                ],
            )
                .prop_map(|(index, id, name, arguments)| {
                    CompletionChunk::ToolCallDelta {
                        index,
                        id,
                        name,
                        arguments,
                    }
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(i, o)| CompletionChunk::Finish {
                usage: Usage::new(i, o),
                stop_reason: StopReason::EndTurn,
                model: "m".into(),
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_chunks_assemble_into_a_response_or_a_clear_error(
            chunks in proptest::collection::vec(any_chunk(), 0..12),
        ) {
            let finished = chunks.iter().any(|c| matches!(c, CompletionChunk::Finish { .. }));
            let mut acc = StreamAccumulator::new("p");
            for chunk in chunks {
                acc.push(chunk);
            }
            match acc.finish() {
                Ok(r) => proptest::prop_assert!(finished && r.usage.total_tokens() >= r.usage.input_tokens),
                Err(e) => {
                    let text = e.to_string();
                    proptest::prop_assert!(
                        (!finished && e.provider_kind() == Some(ProviderErrorKind::Stream))
                            || (e.provider_kind() == Some(ProviderErrorKind::Decode)
                                && text.contains("streamed tool call")),
                        "{text}"
                    );
                }
            }
        }

        #[test]
        fn any_response_streams_back_into_itself(
            lead in proptest::option::of("[a-z]{0,4}"),
            text in ".{0,12}",
            calls in proptest::collection::vec((
                "[a-z]{1,4}",
                proptest::prelude::any::<i64>(),
                proptest::option::of("[a-z]{0,4}"),
            ), 0..3),
        ) {
            let mut content = Vec::new();
            if let Some(sig) = lead {
                content.push(Content::provider_data("gemini", json!({"thoughtSignature": sig})));
            }
            if !text.is_empty() {
                content.push(Content::text(text));
            }
            for (i, (name, n, data)) in calls.into_iter().enumerate() {
                if let Some(d) = data {
                    content.push(Content::provider_data("openai.responses", json!({"id": d})));
                }
                content.push(Content::tool_call(format!("c{i}"), name, json!({"n": n})));
            }
            // A stream cannot tell data that belongs to the text from data that belongs to the
            // first call: the canonical place of data before the first call is the front.
            let first_call = content.iter().position(|c| matches!(c, Content::ToolCall { .. })).unwrap_or(content.len());
            let (mut canonical, rest): (Vec<Content>, Vec<Content>) = content[..first_call]
                .iter()
                .cloned()
                .partition(|c| matches!(c, Content::ProviderData { .. }));
            canonical.extend(rest);
            canonical.extend(content[first_call..].iter().cloned());
            let content = canonical;
            let resp = CompletionResponse::new(
                Message::new(Role::Assistant, content),
                Usage::new(1, 2),
                StopReason::ToolUse,
                "m",
            );
            let mut acc = StreamAccumulator::new("p");
            for chunk in response_to_chunks(resp.clone()) {
                acc.push(chunk);
            }
            proptest::prop_assert_eq!(acc.finish().map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?, resp);
        }
    }
}
