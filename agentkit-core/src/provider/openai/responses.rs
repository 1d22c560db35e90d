//! The Responses API (`POST {base_url}/responses`): request body, answer and stream events.
//!
//! Both a whole answer and a stream go through one [`ResponsesState`], which turns output
//! items and events into [`CompletionChunk`]s; a whole answer is then assembled with the
//! [`StreamAccumulator`](crate::provider::StreamAccumulator) like a stream.

use std::collections::{HashMap, HashSet, VecDeque};

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::config::OpenAiConfig;
use super::response::{WireError, decode};
use crate::error::{Error, ProviderErrorKind, Result};
use crate::message::{Content, ImageData, Message, Role, join_text};
use crate::provider::{ChunkStream, CompletionChunk, CompletionRequest, ToolChoice};
use crate::usage::{StopReason, Usage};

/// The [`Content::ProviderData`] format of Responses API items kept across turns (reasoning
/// items).
pub const DATA_FORMAT: &str = "openai.responses";

/// The Responses API request body for `request`.
pub(super) fn body(
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
    let reasoning = is_reasoning_model(&model);
    body.insert("model".into(), Value::String(model));
    if let Some(system) = request.system.as_deref().filter(|s| !s.trim().is_empty()) {
        body.insert("instructions".into(), Value::String(system.to_owned()));
    }
    body.insert(
        "input".into(),
        Value::Array(input_items(&request.messages, config.store)),
    );
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let parameters = match &*t.input_schema {
                    Value::Object(o) if !o.is_empty() => (*t.input_schema).clone(),
                    _ => json!({"type": "object", "properties": {}}),
                };
                let mut tool = Map::new();
                tool.insert("type".into(), json!("function"));
                tool.insert("name".into(), json!(t.name));
                if !t.description.is_empty() {
                    tool.insert("description".into(), json!(t.description));
                }
                tool.insert("parameters".into(), parameters);
                // Functions are strict by default in this API; MCP tool schemas rarely meet
                // strict mode's rules (every property required, no additional properties).
                tool.insert("strict".into(), Value::Bool(false));
                Value::Object(tool)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let choice = match &request.tool_choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
        };
        body.insert("tool_choice".into(), choice);
        if let Some(parallel) = request.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), Value::Bool(parallel));
        }
    }
    if let Some(t) = request.temperature {
        let t: f64 = t.to_string().parse().unwrap_or(f64::from(t));
        body.insert("temperature".into(), json!(t));
    }
    if let Some(n) = request.max_tokens {
        body.insert("max_output_tokens".into(), json!(n));
    }
    if !request.stop.is_empty() {
        tracing::debug!("the Responses API has no stop sequences; `stop` is not sent");
    }
    if let Some(format) = &request.response_format {
        body.insert(
            "text".into(),
            json!({"format": {
                "type": "json_schema",
                "name": format.name,
                "schema": format.schema,
                "strict": format.strict,
            }}),
        );
    }
    body.insert("store".into(), Value::Bool(config.store));
    // Nothing is stored, so a reasoning item can only go back whole: ask for its encrypted
    // content. Only reasoning models accept the include ("Encrypted content is not supported
    // with this model"); `extra["include"]` overrides the guess.
    if !config.store && reasoning {
        body.insert("include".into(), json!(["reasoning.encrypted_content"]));
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    for (k, v) in &request.extra {
        if k == "stream" {
            tracing::debug!("ignoring `stream` in CompletionRequest::extra");
            continue;
        }
        body.insert(k.clone(), v.clone());
    }
    body
}

/// Whether `model` is an OpenAI reasoning model (o-series, GPT-5 except its chat variants,
/// Codex), whose reasoning items can come with encrypted content.
fn is_reasoning_model(model: &str) -> bool {
    let m = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let family =
        ["o1", "o3", "o4", "gpt-5"].iter().any(|p| m.starts_with(p)) || m.contains("codex");
    family && !m.contains("chat")
}

/// The conversation as Responses API input items: messages, `function_call`,
/// `function_call_output`, and the reasoning items kept from earlier answers. Without
/// `store`, a reasoning item without `encrypted_content` cannot be resolved by OpenAI and is
/// left out.
fn input_items(messages: &[Message], store: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for message in messages {
        let role = match message.role {
            Role::System => "system",
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        // Parts of a message item being built (text and images), flushed before any item
        // that is not part of it, so the order of the conversation is kept.
        let mut parts: Vec<&Content> = Vec::new();
        let mut tool_images: Vec<Value> = Vec::new();
        for content in &message.content {
            match content {
                Content::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    flush(role, &mut parts, &mut out);
                    out.push(json!({
                        "type": "function_call",
                        "call_id": id,
                        "name": name,
                        "arguments": arguments.to_string(),
                    }));
                }
                Content::ToolResult {
                    call_id, content, ..
                } => {
                    flush(role, &mut parts, &mut out);
                    out.push(json!({
                        "type": "function_call_output",
                        "call_id": call_id,
                        "output": join_text(content),
                    }));
                    tool_images.extend(content.iter().filter_map(input_image));
                }
                Content::ProviderData { format, data } if format.as_str() == DATA_FORMAT => {
                    let unresolvable = !store
                        && data.get("type").and_then(Value::as_str) == Some("reasoning")
                        && data.get("encrypted_content").is_none_or(Value::is_null);
                    if unresolvable {
                        tracing::debug!("leaving out a reasoning item without encrypted content");
                        continue;
                    }
                    flush(role, &mut parts, &mut out);
                    out.push(data.clone());
                }
                Content::ProviderData { .. } => {}
                other => parts.push(other),
            }
        }
        flush(role, &mut parts, &mut out);
        if !tool_images.is_empty() {
            out.push(json!({"role": "user", "content": tool_images}));
        }
    }
    out
}

/// Push the message item of `parts` (if it has any text or image) and empty them.
fn flush(role: &str, parts: &mut Vec<&Content>, out: &mut Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    let owned: Vec<Content> = parts.drain(..).cloned().collect();
    let images: Vec<Value> = if role == "assistant" {
        Vec::new()
    } else {
        owned.iter().filter_map(input_image).collect()
    };
    let text = join_text(&owned);
    if images.is_empty() {
        if !text.trim().is_empty() {
            out.push(json!({"role": role, "content": text}));
        }
        return;
    }
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(json!({"type": "input_text", "text": text}));
    }
    content.extend(images);
    out.push(json!({"role": role, "content": content}));
}

fn input_image(content: &Content) -> Option<Value> {
    let url = match content {
        Content::Image { mime_type, data } => match data {
            ImageData::Base64(b64) => format!("data:{mime_type};base64,{b64}"),
            ImageData::Url(url) => url.clone(),
        },
        Content::Resource {
            mime_type: Some(mime),
            blob: Some(b64),
            ..
        } if mime.starts_with("image/") => format!("data:{mime};base64,{b64}"),
        _ => return None,
    };
    Some(json!({"type": "input_image", "image_url": url}))
}

// ---------------------------------------------------------------------------------------------
// Answers.

/// A response object: the whole answer, or the `response` of a stream's lifecycle event.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WireResponse {
    #[serde(default)]
    pub(super) id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    output: Vec<Value>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    fn to_usage(&self) -> Usage {
        let input = self.input_tokens.unwrap_or(0);
        let cached = self
            .input_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(input);
        let output = self.output_tokens.unwrap_or(0);
        let reasoning = self
            .output_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
            .min(output);
        Usage::new(input - cached, output)
            .with_cache(cached, 0)
            .with_reasoning(reasoning)
    }
}

/// One output item, as far as agentkit reads it.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputItem {
    Message {
        #[serde(default)]
        content: Vec<OutputContent>,
    },
    FunctionCall {
        call_id: String,
        name: String,
        #[serde(default)]
        arguments: Option<String>,
    },
    Reasoning {},
    /// Built-in tool calls and items added after this was written.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputContent {
    OutputText {
        #[serde(default)]
        text: String,
    },
    Refusal {
        #[serde(default)]
        refusal: String,
    },
    #[serde(other)]
    Other,
}

/// The fields of a reasoning item that go back as input (the rest, such as `status`, is
/// output-only).
fn reasoning_input(item: &Value) -> Value {
    let mut keep = Map::new();
    if let Value::Object(map) = item {
        for key in ["type", "id", "summary", "encrypted_content", "content"] {
            if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                keep.insert(key.to_owned(), v.clone());
            }
        }
    }
    keep.entry("summary").or_insert_with(|| json!([]));
    Value::Object(keep)
}

/// One stream event, as far as agentkit reads it.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Event {
    #[serde(rename = "response.created", alias = "response.in_progress")]
    Started { response: WireResponse },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        #[serde(default)]
        output_index: Option<u64>,
        item: Value,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        #[serde(default)]
        output_index: Option<u64>,
        item: Value,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta { delta: String },
    #[serde(rename = "response.refusal.delta")]
    RefusalDelta { delta: String },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgumentsDelta {
        #[serde(default)]
        output_index: Option<u64>,
        delta: String,
    },
    #[serde(rename = "response.completed", alias = "response.incomplete")]
    Completed { response: WireResponse },
    #[serde(rename = "response.failed")]
    Failed { response: WireResponse },
    #[serde(rename = "error")]
    Error {
        #[serde(flatten)]
        error: WireError,
    },
    #[serde(other)]
    Ignored,
}

/// Turns Responses API items and events into [`CompletionChunk`]s.
pub(super) struct ResponsesState {
    provider: String,
    model: String,
    /// A stream: message text arrives as deltas, so finished message items are not read again.
    streaming: bool,
    /// Our tool-call index by the output index of its item.
    calls: HashMap<u64, usize>,
    /// Calls whose arguments have arrived (as deltas or whole).
    with_arguments: HashSet<usize>,
    refusal: bool,
    finished: bool,
}

impl ResponsesState {
    pub(super) fn new(provider: &str, model: String, streaming: bool) -> Self {
        Self {
            provider: provider.to_owned(),
            model,
            streaming,
            calls: HashMap::new(),
            with_arguments: HashSet::new(),
            refusal: false,
            finished: false,
        }
    }

    fn decode_error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        crate::provider::http::decode_error(
            &self.provider,
            &format!("{what} is not in the Responses API format"),
            e,
        )
    }

    /// The chunks of a whole answer, ending with its finish.
    pub(super) fn on_response(&mut self, mut wire: WireResponse) -> Result<Vec<CompletionChunk>> {
        if wire.status.as_deref() == Some("failed") || wire.error.is_some() {
            return Err(self.failure(wire));
        }
        let mut out = Vec::new();
        let output = std::mem::take(&mut wire.output);
        for (i, item) in output.iter().enumerate() {
            self.on_item(i as u64, item, true, &mut out)?;
        }
        out.push(self.finish(wire));
        Ok(out)
    }

    /// An output item: whole (`done`, or in a whole answer) or just started (`added`).
    fn on_item(
        &mut self,
        output_index: u64,
        item: &Value,
        done: bool,
        out: &mut Vec<CompletionChunk>,
    ) -> Result<()> {
        let parsed: OutputItem = serde_json::from_value(item.clone())
            .map_err(|e| self.decode_error(&format!("output item {output_index}"), e))?;
        match parsed {
            OutputItem::Message { content } if done && !self.streaming => {
                for c in content {
                    match c {
                        OutputContent::OutputText { text } if !text.is_empty() => {
                            out.push(CompletionChunk::TextDelta { text });
                        }
                        OutputContent::Refusal { refusal } => {
                            self.refusal = true;
                            out.push(CompletionChunk::TextDelta { text: refusal });
                        }
                        _ => {}
                    }
                }
            }
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
            } => {
                let index = match self.calls.get(&output_index) {
                    Some(index) => *index,
                    None => {
                        let index = self.calls.len();
                        self.calls.insert(output_index, index);
                        out.push(CompletionChunk::ToolCallDelta {
                            index,
                            id: Some(call_id),
                            name: Some(name),
                            arguments: String::new(),
                        });
                        index
                    }
                };
                let arguments = arguments.unwrap_or_default();
                // Arguments come once: whole in an item, or as deltas (then the finished
                // item repeats them and is not read).
                if !arguments.is_empty() && self.with_arguments.insert(index) {
                    out.push(CompletionChunk::ToolCallDelta {
                        index,
                        id: None,
                        name: None,
                        arguments,
                    });
                }
            }
            OutputItem::Reasoning {} if done => out.push(CompletionChunk::ProviderData {
                format: DATA_FORMAT.to_owned(),
                data: reasoning_input(item),
            }),
            _ => {}
        }
        Ok(())
    }

    /// The final chunk, from the finished response object.
    fn finish(&mut self, wire: WireResponse) -> CompletionChunk {
        self.finished = true;
        if let Some(model) = wire.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        let usage = wire.usage.map(|u| u.to_usage()).unwrap_or_default();
        let reason = wire.incomplete_details.and_then(|d| d.reason);
        let stop_reason = match (wire.status.as_deref(), reason.as_deref()) {
            _ if self.refusal => StopReason::Refusal,
            (_, Some("max_output_tokens")) => StopReason::MaxTokens,
            (_, Some("content_filter")) => StopReason::ContentFilter,
            (Some("incomplete"), Some(other)) => StopReason::Other(other.to_owned()),
            _ if !self.calls.is_empty() => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        };
        CompletionChunk::Finish {
            usage,
            stop_reason,
            model: std::mem::take(&mut self.model),
        }
    }

    fn failure(&mut self, wire: WireResponse) -> Error {
        self.finished = true;
        match wire.error {
            Some(e) => e.into_error(&self.provider, ProviderErrorKind::Server),
            None => Error::provider(
                self.provider.clone(),
                ProviderErrorKind::Server,
                "the response failed without saying why",
            ),
        }
    }

    /// The chunks of one stream event.
    fn on_event(&mut self, data: &str) -> Result<Vec<CompletionChunk>> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let event: Event = decode(
            &self.provider,
            "a Responses API stream event",
            data.as_bytes(),
        )?;
        let mut out = Vec::new();
        match event {
            Event::Started { response } => {
                if let Some(model) = response.model.filter(|m| !m.is_empty()) {
                    self.model = model;
                }
            }
            Event::ItemAdded { output_index, item } => {
                self.on_item(output_index.unwrap_or(0), &item, false, &mut out)?;
            }
            Event::ItemDone { output_index, item } => {
                self.on_item(output_index.unwrap_or(0), &item, true, &mut out)?;
            }
            Event::TextDelta { delta } => {
                if !delta.is_empty() {
                    out.push(CompletionChunk::TextDelta { text: delta });
                }
            }
            Event::RefusalDelta { delta } => {
                self.refusal = true;
                if !delta.is_empty() {
                    out.push(CompletionChunk::TextDelta { text: delta });
                }
            }
            Event::ArgumentsDelta {
                output_index,
                delta,
            } => {
                let index = self.calls.get(&output_index.unwrap_or(0)).copied();
                match index {
                    Some(index) if !delta.is_empty() => {
                        self.with_arguments.insert(index);
                        out.push(CompletionChunk::ToolCallDelta {
                            index,
                            id: None,
                            name: None,
                            arguments: delta,
                        });
                    }
                    Some(_) => {}
                    None => {
                        return Err(self.decode_error(
                            "a `response.function_call_arguments.delta` event",
                            "it names an output item that is not a function call",
                        ));
                    }
                }
            }
            Event::Completed { response } => {
                if response.status.as_deref() == Some("failed") {
                    return Err(self.failure(response));
                }
                out.push(self.finish(response));
            }
            Event::Failed { response } => return Err(self.failure(response)),
            Event::Error { error } => {
                self.finished = true;
                let e = error.into_error(&self.provider, ProviderErrorKind::Server);
                return Err(Error::provider(
                    self.provider.clone(),
                    e.provider_kind().unwrap_or(ProviderErrorKind::Server),
                    format!("the stream reported an error: {}", error_message(&e)),
                ));
            }
            Event::Ignored => {}
        }
        Ok(out)
    }

    /// The chunks of a streamed answer, from its server-sent events.
    pub(super) fn into_stream(
        self,
        events: BoxStream<'static, Result<(String, String)>>,
    ) -> ChunkStream {
        futures::stream::unfold(Some((events, self)), |st| async move {
            let (mut events, mut state) = st?;
            loop {
                match events.next().await {
                    Some(Ok((_event, data))) => match state.on_event(&data) {
                        Ok(chunks) if chunks.is_empty() && !state.finished => continue,
                        Ok(chunks) => {
                            let next = (!state.finished).then_some((events, state));
                            let items: VecDeque<Result<CompletionChunk>> =
                                chunks.into_iter().map(Ok).collect();
                            return Some((items, next));
                        }
                        Err(e) => return Some((VecDeque::from([Err(e)]), None)),
                    },
                    Some(Err(e)) => return Some((VecDeque::from([Err(e)]), None)),
                    None => {
                        let e = Error::provider(
                            state.provider.clone(),
                            ProviderErrorKind::Stream,
                            "the event stream ended before `response.completed`; the answer is \
                             incomplete (retry the request)",
                        );
                        return Some((VecDeque::from([Err(e)]), None));
                    }
                }
            }
        })
        .flat_map(futures::stream::iter)
        .boxed()
    }
}

/// The message of a provider error, without the provider and kind prefix.
fn error_message(e: &Error) -> String {
    match e {
        Error::Provider { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::testing::{
        any_json, byte_stream, check_assembles, check_response, check_stream_ends_well,
        collect_all, json_leaf, object, or_any, split, sse_frames,
    };
    use crate::provider::{CompletionResponse, StreamAccumulator, collect_stream, http};
    use proptest::prelude::*;

    fn parse(bytes: &[u8]) -> Result<CompletionResponse> {
        let wire: WireResponse = decode("openai", "the body", bytes)?;
        let mut state = ResponsesState::new("openai", "m".into(), false);
        let mut acc = StreamAccumulator::new("openai");
        for c in state.on_response(wire)? {
            acc.push(c);
        }
        acc.finish()
    }

    fn decode_stream(pieces: Vec<Vec<u8>>) -> Vec<Result<CompletionChunk>> {
        let events = http::sse_events("openai", byte_stream(pieces)).boxed();
        collect_all(ResponsesState::new("openai", "m".into(), true).into_stream(events))
    }

    #[test]
    fn input_keeps_order_and_reasoning_items() {
        assert!(is_reasoning_model("gpt-5-mini") && is_reasoning_model("o4-mini-2025-04-16"));
        assert!(is_reasoning_model("openai/gpt-5.1-codex"));
        assert!(!is_reasoning_model("gpt-4.1") && !is_reasoning_model("gpt-5-chat-latest"));
        let items = input_items(
            &[
                Message::user("hi"),
                Message::new(
                    Role::Assistant,
                    vec![
                        Content::provider_data(
                            DATA_FORMAT,
                            json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e"}),
                        ),
                        // Without `store` and without encrypted content OpenAI cannot resolve it.
                        Content::provider_data(
                            DATA_FORMAT,
                            json!({"type": "reasoning", "id": "rs_0", "summary": []}),
                        ),
                        Content::provider_data("gemini", json!({"thoughtSignature": "x"})),
                        Content::text("Checking."),
                        Content::tool_call("call_1", "f", json!({"a": 1})),
                    ],
                ),
                Message::tool_results(vec![Content::tool_result(
                    "call_1",
                    vec![Content::text("ok")],
                    false,
                )]),
            ],
            false,
        );
        assert_eq!(
            Value::Array(items),
            json!([
                {"role": "user", "content": "hi"},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "e"},
                {"role": "assistant", "content": "Checking."},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
            ])
        );
    }

    #[test]
    fn incomplete_and_refused_answers_say_why() {
        let r = parse(
            json!({"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
            "output": [{"type": "message", "content": [{"type": "output_text", "text": "Par"}]}]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.stop_reason, StopReason::MaxTokens);
        let r = parse(json!({"status": "completed",
            "output": [{"type": "message", "content": [{"type": "refusal", "refusal": "I can't help."}]}]})
            .to_string().as_bytes()).unwrap();
        assert_eq!(r.stop_reason, StopReason::Refusal);
        assert_eq!(r.text(), "I can't help.");
        let err = parse(
            json!({"status": "failed", "error": {"code": "server_error", "message": "boom"}})
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Server));
    }

    fn shaped_item() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                Just("message"),
                Just("function_call"),
                Just("reasoning"),
                Just("web_search_call")
            ],
            or_any(json_leaf()),
            or_any(json_leaf()),
            or_any(json_leaf()),
        )
            .prop_map(|(kind, text, name, args)| {
                json!({"type": kind, "id": "x", "call_id": "c", "name": name, "arguments": args,
                       "content": [{"type": "output_text", "text": text}], "summary": [],
                       "encrypted_content": text})
            })
    }

    fn shaped_event() -> impl Strategy<Value = Value> {
        (
            prop_oneof![
                Just("response.created"),
                Just("response.output_item.added"),
                Just("response.output_item.done"),
                Just("response.output_text.delta"),
                Just("response.function_call_arguments.delta"),
                Just("response.completed"),
                Just("response.incomplete"),
                Just("response.failed"),
                Just("error"),
                Just("response.reasoning_summary_text.delta"),
            ],
            or_any(json_leaf()),
            shaped_item(),
            or_any(json_leaf()),
        )
            .prop_map(|(kind, index, item, tokens)| {
                object(vec![
                    ("type", Some(json!(kind))),
                    ("output_index", Some(index)),
                    ("item", Some(item)),
                    ("delta", Some(json!("{\"n\":"))),
                    ("code", Some(json!("rate_limit_exceeded"))),
                    ("message", Some(json!("slow down"))),
                    (
                        "response",
                        Some(json!({"status": "completed", "model": "gpt-5",
                        "usage": {"input_tokens": tokens, "output_tokens": tokens,
                                  "input_tokens_details": {"cached_tokens": tokens},
                                  "output_tokens_details": {"reasoning_tokens": tokens}}})),
                    ),
                ])
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_body_is_a_response_or_a_clear_error(value in prop_oneof![
            any_json(),
            prop::collection::vec(shaped_item(), 0..4).prop_map(|output| json!({"status": "completed", "output": output})),
        ]) {
            if let Err(e) = parse(value.to_string().as_bytes()) {
                prop_assert!(e.provider_kind().is_some(), "{e:?}");
            }
        }

        #[test]
        fn any_bytes_in_any_pieces_end_the_stream_cleanly(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            check_stream_ends_well(&decode_stream(pieces));
        }

        #[test]
        fn any_json_events_end_the_stream_cleanly(
            events in prop::collection::vec(prop_oneof![any_json(), shaped_event()], 0..8),
        ) {
            let payloads: Vec<String> = events.iter().map(Value::to_string).collect();
            let items = decode_stream(vec![sse_frames(&payloads, false, false)]);
            check_stream_ends_well(&items);
            check_assembles("openai", items);
        }

        #[test]
        fn a_valid_stream_decodes_the_same_however_it_is_cut(
            (texts, args, pieces) in (
                prop::collection::vec(".{0,8}", 0..5),
                prop::collection::vec(any::<u32>(), 0..3),
                any::<bool>(),
            ).prop_flat_map(|(texts, args, crlf)| {
                let mut events = vec![
                    json!({"type": "response.created", "response": {"model": "gpt-5", "status": "in_progress", "output": []}}),
                    json!({"type": "response.output_item.done", "output_index": 0,
                           "item": {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"}}),
                    json!({"type": "response.output_item.added", "output_index": 1,
                           "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
                ];
                for t in &texts {
                    events.push(json!({"type": "response.output_text.delta", "output_index": 1, "delta": t}));
                }
                for (i, a) in args.iter().enumerate() {
                    let index = i + 2;
                    let arguments = json!({"n": a}).to_string();
                    let (head, tail) = arguments.split_at(3);
                    events.push(json!({"type": "response.output_item.added", "output_index": index,
                        "item": {"type": "function_call", "id": format!("fc_{i}"), "call_id": format!("call_{i}"), "name": "f", "arguments": ""}}));
                    events.push(json!({"type": "response.function_call_arguments.delta", "output_index": index, "delta": head}));
                    events.push(json!({"type": "response.function_call_arguments.delta", "output_index": index, "delta": tail}));
                    events.push(json!({"type": "response.output_item.done", "output_index": index,
                        "item": {"type": "function_call", "id": format!("fc_{i}"), "call_id": format!("call_{i}"), "name": "f", "arguments": arguments}}));
                }
                events.push(json!({"type": "response.completed", "response": {"model": "gpt-5", "status": "completed",
                    "usage": {"input_tokens": 10, "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 2}}}}));
                let payloads: Vec<String> = events.iter().map(Value::to_string).collect();
                (Just(texts), Just(args), split(sse_frames(&payloads, crlf, false)))
            }),
        ) {
            let events = http::sse_events("openai", byte_stream(pieces)).boxed();
            let stream = ResponsesState::new("openai", "m".into(), true).into_stream(events);
            let response = crate::provider::testing::block_on(collect_stream("openai", stream))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_response(&response, &texts, &args, 4)?;
            prop_assert_eq!(response.usage.reasoning_tokens, 2);
            prop_assert_eq!(&response.message.content[0],
                &Content::provider_data(DATA_FORMAT, json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "enc"})));
        }
    }
}
