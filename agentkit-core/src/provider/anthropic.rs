//! Anthropic Messages API provider (feature `anthropic`).
//!
//! [`AnthropicProvider`] speaks `POST {base_url}/v1/messages`, plain and streamed (server-sent
//! events). It translates agentkit's one message model into the Messages API:
//!
//! - the system prompt and any [`Role::System`] messages become the top-level `system` field;
//! - [`Role::Tool`] messages become `user` turns of `tool_result` blocks, and consecutive
//!   messages of the same role are merged, because the API wants user and assistant turns to
//!   alternate;
//! - [`ResponseFormat`] (structured output) becomes a tool whose input schema is the wanted
//!   schema; the model is made to call it and the call's input comes back as the answer's text,
//!   so [`AugmentedLlmExt::generate_structured`](crate::AugmentedLlmExt::generate_structured)
//!   works as it does with every other provider.
//!
//! Failures map to [`Error::Provider`] with the matching [`ProviderErrorKind`]: HTTP 429 is
//! `RateLimited` (with the server's `retry-after`), 529 and an in-stream `overloaded_error` are
//! `Overloaded`, 401 is `Auth`, a body that is not the Messages API format is `Decode`, and a
//! stream that ends before `message_stop` is `Stream`. Wrap the provider in a
//! [`ProviderBuilder`](crate::ProviderBuilder) to retry the retryable ones.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::http;
use super::{
    ChunkStream, CompletionChunk, CompletionRequest, CompletionResponse, LlmProvider,
    ResponseFormat, ToolChoice,
};
use crate::config::AnthropicSettings;
use crate::error::{Error, ProviderErrorKind, Result};
use crate::message::{Content, ImageData, Message, Role};
use crate::usage::{StopReason, Usage};

const PROVIDER: &str = "anthropic";

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

const API_KEY_VAR: &str = "ANTHROPIC_API_KEY";
const BASE_URL_VAR: &str = "ANTHROPIC_BASE_URL";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Per-request timeout: until the whole answer is read for plain requests, until the
    /// response starts for streams. Default [`DEFAULT_TIMEOUT`]; `None` waits forever.
    pub timeout: Option<Duration>,
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
        }
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

    /// Build a configuration from settings, filling gaps from the environment through `lookup`.
    fn from_lookup(
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
            let timeout = Duration::try_from_secs_f64(secs).map_err(|e| Error::Config {
                file: None,
                key: "anthropic.timeout_seconds".to_owned(),
                message: format!("expected a non-negative number of seconds, got {secs}: {e}"),
            })?;
            config.timeout = Some(timeout);
        }
        Ok(config)
    }
}

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
    endpoint: String,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("config", &self.config)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    /// A provider with this configuration. Fails with [`Error::Config`] when a header name or
    /// value (including the API key) cannot be sent over HTTP.
    pub fn new(config: AnthropicConfig) -> Result<Self> {
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
        let endpoint = format!("{}/v1/messages", config.base_url.trim_end_matches('/'));
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
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .json(body);
        if streaming {
            request = request.header(reqwest::header::ACCEPT, "text/event-stream");
        } else if let Some(t) = self.config.timeout {
            request = request.timeout(t);
        }
        let sent = request.send();
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
        let parsed: WireResponse = serde_json::from_slice(&bytes).map_err(|e| {
            http::decode_error(
                PROVIDER,
                "the response body is not a Messages API message",
                e,
            )
        })?;
        Ok(parsed.into_response(wire.structured.as_deref()))
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream> {
        let wire = build_body(&self.config, &request, true);
        tracing::debug!(model = %wire.body["model"], "anthropic: opening message stream");
        let response = self.send(&wire.body, true).await?;
        let events = Box::pin(http::sse_events(PROVIDER, response));
        let state = StreamState::new(wire.structured);
        let chunks = futures::stream::unfold(Some((events, state)), |st| async move {
            let (mut events, mut state) = st?;
            loop {
                match events.next().await {
                    Some(Ok((event, data))) => match state.on_event(&event, &data) {
                        Ok(chunks) if chunks.is_empty() && !state.finished => continue,
                        Ok(chunks) => {
                            let next = (!state.finished).then_some((events, state));
                            return Some((chunks.into_iter().map(Ok).collect::<Vec<_>>(), next));
                        }
                        Err(e) => return Some((vec![Err(e)], None)),
                    },
                    Some(Err(e)) => return Some((vec![Err(e)], None)),
                    None => {
                        return Some((
                            vec![Err(Error::provider(
                                PROVIDER,
                                ProviderErrorKind::Stream,
                                "the event stream ended before `message_stop`; the answer is \
                                 incomplete (retry the request)",
                            ))],
                            None,
                        ));
                    }
                }
            }
        });
        Ok(chunks.flat_map(futures::stream::iter).boxed())
    }
}

// ---------------------------------------------------------------------------------------------
// Request

/// A request body and, when structured output was asked for, the name of the answer tool.
struct WireRequest {
    body: Value,
    structured: Option<String>,
}

fn build_body(config: &AnthropicConfig, req: &CompletionRequest, stream: bool) -> WireRequest {
    let mut body = Map::new();
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| config.default_model.clone());
    body.insert("model".into(), Value::String(model));
    body.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(config.default_max_tokens)),
    );

    let mut system: Vec<String> = req
        .system
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    let messages = convert_messages(&req.messages, &mut system);
    if !system.is_empty() {
        body.insert("system".into(), Value::String(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages));

    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut tool = Map::new();
            tool.insert("name".into(), Value::String(t.name.clone()));
            if !t.description.is_empty() {
                tool.insert("description".into(), Value::String(t.description.clone()));
            }
            tool.insert("input_schema".into(), object_schema(&t.input_schema));
            Value::Object(tool)
        })
        .collect();
    let structured = req.response_format.as_ref().map(|f| f.name.clone());
    let choice = tool_choice(req, !tools.is_empty());
    if let Some(format) = &req.response_format {
        tools.push(answer_tool(format));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(t) = req.temperature {
        // Through the shortest decimal form, so 0.2f32 is sent as 0.2, not 0.200000003.
        let t = t.to_string().parse::<f64>().unwrap_or(f64::from(t));
        body.insert("temperature".into(), json!(t));
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    for (k, v) in &req.extra {
        body.insert(k.clone(), v.clone());
    }
    WireRequest {
        body: Value::Object(body),
        structured,
    }
}

/// The `tool_choice` field, or `None` to leave it out.
///
/// With structured output the answer tool is forced (`{"type":"tool"}`), unless the request
/// also offers other tools the model may still need: then any tool may be called
/// (`{"type":"any"}`) and the tool loop goes on until the model calls the answer tool.
fn tool_choice(req: &CompletionRequest, has_tools: bool) -> Option<Value> {
    let mut choice = match (&req.response_format, &req.tool_choice) {
        (_, ToolChoice::Tool(name)) => json!({"type": "tool", "name": name}),
        (Some(_), ToolChoice::Auto | ToolChoice::Required) if has_tools => json!({"type": "any"}),
        (Some(format), _) => json!({"type": "tool", "name": format.name}),
        (None, _) if !has_tools => return None,
        (None, ToolChoice::Auto) => json!({"type": "auto"}),
        (None, ToolChoice::Required) => json!({"type": "any"}),
        (None, ToolChoice::None) => return Some(json!({"type": "none"})),
    };
    if req.parallel_tool_calls == Some(false)
        && let Value::Object(map) = &mut choice
    {
        map.insert("disable_parallel_tool_use".into(), Value::Bool(true));
    }
    Some(choice)
}

fn answer_tool(format: &ResponseFormat) -> Value {
    json!({
        "name": format.name,
        "description": "Give your final answer by calling this tool. Its input is the answer: \
                        a JSON document matching the input schema.",
        "input_schema": object_schema(&format.schema),
    })
}

/// The API wants every `input_schema` to be a JSON object schema.
fn object_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) if !map.is_empty() => schema.clone(),
        _ => json!({"type": "object", "properties": {}}),
    }
}

/// Translate the conversation: system messages go to `system`, tool messages become user
/// turns, consecutive turns of one role are merged, and `tool_result` blocks lead their turn.
fn convert_messages(messages: &[Message], system: &mut Vec<String>) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages {
        let role = match m.role {
            Role::System => {
                let text = m.text();
                if !text.trim().is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Value> = m.content.iter().filter_map(content_block).collect();
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, blocks)| {
            let (mut results, rest): (Vec<Value>, Vec<Value>) =
                blocks.into_iter().partition(|b| b["type"] == "tool_result");
            results.extend(rest);
            json!({"role": role, "content": results})
        })
        .collect()
}

fn content_block(content: &Content) -> Option<Value> {
    match content {
        Content::Text { text } => {
            (!text.trim().is_empty()).then(|| json!({"type": "text", "text": text}))
        }
        Content::Image { mime_type, data } => Some(image_block(mime_type, data)),
        Content::ToolCall {
            id,
            name,
            arguments,
        } => {
            let input = if arguments.is_object() {
                arguments.clone()
            } else {
                json!({})
            };
            Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
        }
        Content::ToolResult {
            call_id,
            content,
            is_error,
        } => {
            let inner: Vec<Value> = content
                .iter()
                .filter(|c| !matches!(c, Content::ToolCall { .. } | Content::ToolResult { .. }))
                .filter_map(content_block)
                .collect();
            let mut block =
                json!({"type": "tool_result", "tool_use_id": call_id, "is_error": is_error});
            if !inner.is_empty() {
                block["content"] = Value::Array(inner);
            }
            Some(block)
        }
        Content::Resource {
            uri,
            mime_type,
            text,
            blob,
        } => match (text, blob, mime_type.as_deref()) {
            (Some(text), _, _) => content_block(&Content::text(text.clone())),
            (None, Some(blob), Some(mime)) if mime.starts_with("image/") => {
                Some(image_block(mime, &ImageData::Base64(blob.clone())))
            }
            (None, Some(blob), Some("application/pdf")) => Some(json!({
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": blob},
            })),
            _ => Some(json!({
                "type": "text",
                "text": format!(
                    "[resource {uri}{}: binary content not shown]",
                    mime_type.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
                ),
            })),
        },
    }
}

fn image_block(mime_type: &str, data: &ImageData) -> Value {
    let source = match data {
        ImageData::Base64(b64) => json!({"type": "base64", "media_type": mime_type, "data": b64}),
        ImageData::Url(url) => json!({"type": "url", "url": url}),
    };
    json!({"type": "image", "source": source})
}

// ---------------------------------------------------------------------------------------------
// Response

#[derive(Debug, Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: String,
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Thinking, server tool results and other blocks agentkit does not model.
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Overwrite the counts this one carries.
    fn apply(&self, usage: &mut Usage) {
        if let Some(n) = self.input_tokens {
            usage.input_tokens = n;
        }
        if let Some(n) = self.output_tokens {
            usage.output_tokens = n;
        }
        if let Some(n) = self.cache_read_input_tokens {
            usage.cache_read_tokens = n;
        }
        if let Some(n) = self.cache_creation_input_tokens {
            usage.cache_write_tokens = n;
        }
    }
}

fn stop_reason(reason: Option<&str>) -> StopReason {
    match reason {
        None | Some("end_turn") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("refusal") => StopReason::Refusal,
        Some(other) => StopReason::Other(other.to_owned()),
    }
}

impl WireResponse {
    fn into_response(self, structured: Option<&str>) -> CompletionResponse {
        let mut usage = Usage::default();
        self.usage.apply(&mut usage);
        let mut stop = stop_reason(self.stop_reason.as_deref());
        let mut answer: Option<String> = None;
        let mut text = Vec::new();
        let mut calls = Vec::new();
        for block in self.content {
            match block {
                WireBlock::Text { text: t } => text.push(Content::text(t)),
                WireBlock::ToolUse { name, input, .. }
                    if answer.is_none() && structured == Some(name.as_str()) =>
                {
                    answer = Some(input.to_string());
                }
                WireBlock::ToolUse { id, name, input } => {
                    calls.push(Content::tool_call(id, name, input));
                }
                WireBlock::Other => {}
            }
        }
        let content = match answer {
            // The answer tool's input is the answer; any prose around it is not.
            Some(json) => {
                if calls.is_empty() {
                    stop = StopReason::EndTurn;
                }
                std::iter::once(Content::text(json)).chain(calls).collect()
            }
            None => text.into_iter().chain(calls).collect(),
        };
        let response = CompletionResponse::new(
            Message::new(Role::Assistant, content),
            usage,
            stop,
            self.model,
        );
        match self.id {
            Some(id) => response.with_id(id),
            None => response,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: Delta,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: WireUsage,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping`, `content_block_stop` and events added after this was written.
    #[serde(other)]
    Ignored,
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // the names are the wire's
enum Delta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking, signature and citation deltas.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

fn kind_for_error_type(kind: &str) -> ProviderErrorKind {
    match kind {
        "authentication_error" | "permission_error" => ProviderErrorKind::Auth,
        "rate_limit_error" => ProviderErrorKind::RateLimited,
        "overloaded_error" => ProviderErrorKind::Overloaded,
        "timeout_error" => ProviderErrorKind::Timeout,
        "api_error" => ProviderErrorKind::Server,
        _ => ProviderErrorKind::BadRequest,
    }
}

/// What a content block of the stream (by the API's block index) turned out to be.
#[derive(Debug, Clone, Copy)]
enum Block {
    Text,
    /// A tool call; the value is its index among the message's tool calls.
    Tool(usize),
    /// The structured-output answer tool: its input is streamed as text.
    Answer,
    Other,
}

/// Turns Messages API stream events into [`CompletionChunk`]s.
struct StreamState {
    structured: Option<String>,
    model: String,
    usage: Usage,
    stop: Option<StopReason>,
    blocks: HashMap<usize, Block>,
    tool_calls: usize,
    answered: bool,
    /// With structured output, prose is held back until we know the answer tool is not used.
    held_text: String,
    finished: bool,
}

impl StreamState {
    fn new(structured: Option<String>) -> Self {
        Self {
            structured,
            model: String::new(),
            usage: Usage::default(),
            stop: None,
            blocks: HashMap::new(),
            tool_calls: 0,
            answered: false,
            held_text: String::new(),
            finished: false,
        }
    }

    fn text(&mut self, text: String, out: &mut Vec<CompletionChunk>) {
        if text.is_empty() {
            return;
        }
        if self.structured.is_none() {
            out.push(CompletionChunk::TextDelta { text });
        } else if !self.answered {
            self.held_text.push_str(&text);
        }
    }

    fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<CompletionChunk>> {
        if data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let parsed: StreamEvent = serde_json::from_str(data).map_err(|e| {
            http::decode_error(
                PROVIDER,
                &format!("the `{event}` stream event is not in the Messages API format"),
                e,
            )
        })?;
        let mut out = Vec::new();
        match parsed {
            StreamEvent::MessageStart { message } => {
                self.model = message.model;
                message.usage.apply(&mut self.usage);
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                WireBlock::Text { text } => {
                    self.blocks.insert(index, Block::Text);
                    self.text(text, &mut out);
                }
                WireBlock::ToolUse { name, .. }
                    if !self.answered && self.structured.as_deref() == Some(name.as_str()) =>
                {
                    self.blocks.insert(index, Block::Answer);
                    self.answered = true;
                    self.held_text.clear();
                }
                WireBlock::ToolUse { id, name, .. } => {
                    let call = self.tool_calls;
                    self.tool_calls += 1;
                    self.blocks.insert(index, Block::Tool(call));
                    out.push(CompletionChunk::ToolCallDelta {
                        index: call,
                        id: Some(id),
                        name: Some(name),
                        arguments: String::new(),
                    });
                }
                WireBlock::Other => {
                    self.blocks.insert(index, Block::Other);
                }
            },
            StreamEvent::ContentBlockDelta { index, delta } => {
                let block = self.blocks.get(&index).copied().unwrap_or(Block::Other);
                match (block, delta) {
                    (Block::Text, Delta::TextDelta { text }) => self.text(text, &mut out),
                    (Block::Tool(call), Delta::InputJsonDelta { partial_json })
                        if !partial_json.is_empty() =>
                    {
                        out.push(CompletionChunk::ToolCallDelta {
                            index: call,
                            id: None,
                            name: None,
                            arguments: partial_json,
                        });
                    }
                    (Block::Answer, Delta::InputJsonDelta { partial_json })
                        if !partial_json.is_empty() =>
                    {
                        out.push(CompletionChunk::TextDelta { text: partial_json });
                    }
                    _ => {}
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop = Some(stop_reason(delta.stop_reason.as_deref()));
                }
                usage.apply(&mut self.usage);
            }
            StreamEvent::MessageStop => {
                if !self.held_text.is_empty() {
                    out.push(CompletionChunk::TextDelta {
                        text: std::mem::take(&mut self.held_text),
                    });
                }
                let stop = if self.answered && self.tool_calls == 0 {
                    StopReason::EndTurn
                } else {
                    self.stop.clone().unwrap_or_default()
                };
                out.push(CompletionChunk::Finish {
                    usage: self.usage,
                    stop_reason: stop,
                    model: std::mem::take(&mut self.model),
                });
                self.finished = true;
            }
            StreamEvent::Error { error } => {
                let kind = kind_for_error_type(&error.kind);
                let what = if error.message.is_empty() {
                    error.kind.clone()
                } else {
                    format!("{} ({})", error.message, error.kind)
                };
                return Err(Error::provider(
                    PROVIDER,
                    kind,
                    format!("the stream reported an error: {what}"),
                ));
            }
            StreamEvent::Ignored => {}
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::ToolSpec;

    fn config() -> AnthropicConfig {
        AnthropicConfig::new("k")
    }

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

    #[test]
    fn a_key_with_a_newline_is_a_config_error_not_a_panic() {
        let err = AnthropicProvider::new(AnthropicConfig::new("bad\nkey")).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err}");
        assert!(!format!("{:?}", config()).contains("\"k\""));
    }

    #[test]
    fn no_tools_means_no_tool_choice_and_temperature_is_exact() {
        let req = CompletionRequest::new(vec![Message::user("hi")]).with_temperature(0.2);
        let body = build_body(&config(), &req, false).body;
        assert!(body.get("tool_choice").is_none());
        assert!(body.get("tools").is_none());
        assert_eq!(body["temperature"], json!(0.2));
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["model"], DEFAULT_MODEL);
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn structured_output_with_other_tools_lets_the_model_use_them() {
        let req = CompletionRequest::new(vec![Message::user("hi")])
            .with_tools(vec![ToolSpec::new("search", "", json!({"type": "object"}))])
            .with_response_format(ResponseFormat::new("Answer", json!({"type": "object"})));
        let body = build_body(&config(), &req, true).body;
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
        assert_eq!(body["tools"][1]["name"], "Answer");
        assert_eq!(body["stream"], true);
        let req = req.with_tool_choice(ToolChoice::None);
        let body = build_body(&config(), &req, false).body;
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "Answer"})
        );
    }

    #[test]
    fn tool_results_lead_a_merged_user_turn_and_empty_text_is_dropped() {
        let mut system = Vec::new();
        let msgs = convert_messages(
            &[
                Message::user("first"),
                Message::tool_results(vec![Content::tool_result(
                    "t1",
                    vec![Content::text("ok")],
                    false,
                )]),
                Message::assistant("  "),
                Message::system("be brief"),
            ],
            &mut system,
        );
        assert_eq!(system, vec!["be brief".to_owned()]);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[0]["content"][1]["text"], "first");
    }

    #[test]
    fn the_answer_tool_replaces_prose_but_keeps_real_tool_calls() {
        let wire: WireResponse = serde_json::from_value(json!({
            "id": "msg_1", "model": "m", "stop_reason": "tool_use",
            "content": [
                {"type": "text", "text": "Here you go:"},
                {"type": "tool_use", "id": "t1", "name": "Answer", "input": {"x": 1}},
            ],
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }))
        .unwrap();
        let r = wire.into_response(Some("Answer"));
        assert_eq!(r.message.content, vec![Content::text(r#"{"x":1}"#)]);
        assert_eq!(r.stop_reason, StopReason::EndTurn);

        let wire: WireResponse = serde_json::from_value(json!({
            "model": "m", "stop_reason": "tool_use",
            "content": [
                {"type": "tool_use", "id": "t0", "name": "search", "input": {}},
                {"type": "tool_use", "id": "t1", "name": "Answer", "input": {"x": 1}},
            ],
        }))
        .unwrap();
        let r = wire.into_response(Some("Answer"));
        assert_eq!(
            r.stop_reason,
            StopReason::ToolUse,
            "the search still has to run"
        );
        assert_eq!(r.message.tool_calls().count(), 1);
    }

    #[test]
    fn held_prose_is_released_when_the_answer_tool_is_not_used() {
        let mut s = StreamState::new(Some("Answer".into()));
        let mut chunks = Vec::new();
        for data in [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"I cannot."}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"refusal"},"usage":{"output_tokens":3}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            chunks.extend(s.on_event("e", data).unwrap());
        }
        assert_eq!(
            chunks[0],
            CompletionChunk::TextDelta {
                text: "I cannot.".into()
            }
        );
        assert!(matches!(
            &chunks[1],
            CompletionChunk::Finish {
                stop_reason: StopReason::Refusal,
                ..
            }
        ));
        assert!(s.finished);
    }

    #[test]
    fn unknown_stream_events_and_blocks_are_ignored() {
        let mut s = StreamState::new(None);
        assert!(s.on_event("ping", r#"{"type":"ping"}"#).unwrap().is_empty());
        assert!(
            s.on_event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#
            )
            .unwrap()
            .is_empty()
        );
        assert!(
            s.on_event(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#
            )
            .unwrap()
            .is_empty()
        );
        let err = s.on_event("message_start", "{not json").unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    }
}
