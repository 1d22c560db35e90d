//! Server-sent events of a streamed message → [`CompletionChunk`]s.

use std::collections::HashMap;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use super::PROVIDER;
use super::response::{WireBlock, WireUsage, stop_reason};
use crate::error::{Error, ProviderErrorKind, Result};
use crate::provider::http;
use crate::provider::{ChunkStream, CompletionChunk};
use crate::usage::{StopReason, Usage};

/// The chunks of a streamed message, from its server-sent events.
pub(super) fn chunk_stream(
    events: BoxStream<'static, Result<(String, String)>>,
    structured: Option<String>,
) -> ChunkStream {
    let state = StreamState::new(structured);
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
    chunks.flat_map(futures::stream::iter).boxed()
}

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

    use crate::provider::collect_stream;
    use crate::provider::testing::{
        any_json, byte_stream, check_assembles, check_response, check_stream_ends_well,
        collect_all, index_like, json_leaf, object, or_any, split, sse_frames,
    };
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The chunks the Anthropic stream decoder makes of these bytes, delivered in these pieces.
    fn decode(pieces: Vec<Vec<u8>>, structured: Option<&str>) -> Vec<Result<CompletionChunk>> {
        let events = http::sse_events(PROVIDER, byte_stream(pieces)).boxed();
        collect_all(chunk_stream(events, structured.map(str::to_owned)))
    }

    /// A Messages API stream event shaped like the real thing, any field possibly of a wrong
    /// type or an absurd value.
    fn shaped_event() -> impl Strategy<Value = Value> {
        let kind = prop_oneof![
            Just("message_start"),
            Just("content_block_start"),
            Just("content_block_delta"),
            Just("content_block_stop"),
            Just("message_delta"),
            Just("message_stop"),
            Just("error"),
            Just("ping"),
        ];
        let block_type = prop_oneof![Just("text"), Just("tool_use"), Just("thinking")];
        let delta_type = prop_oneof![Just("text_delta"), Just("input_json_delta")];
        (
            kind,
            index_like(),
            (block_type, or_any(json_leaf()), or_any(json_leaf())),
            (delta_type, or_any(json_leaf()), or_any(json_leaf())),
            or_any(json_leaf()),
        )
            .prop_map(|(kind, index, (bt, name, input), (dt, text, stop), tokens)| {
                let usage = json!({"input_tokens": tokens, "output_tokens": tokens,
                                   "cache_read_input_tokens": tokens});
                object(vec![
                    ("type", Some(json!(kind))),
                    ("index", Some(index)),
                    (
                        "content_block",
                        Some(json!({"type": bt, "id": "t", "name": name, "input": input, "text": text})),
                    ),
                    (
                        "delta",
                        Some(json!({"type": dt, "text": text, "partial_json": text, "stop_reason": stop})),
                    ),
                    ("message", Some(json!({"model": name, "usage": usage}))),
                    ("usage", Some(usage)),
                    ("error", Some(json!({"type": text, "message": name}))),
                ])
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_in_any_pieces_end_the_stream_cleanly(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
            structured in any::<bool>(),
        ) {
            check_stream_ends_well(&decode(pieces, structured.then_some("Answer")));
        }

        #[test]
        fn any_json_events_end_the_stream_cleanly(
            events in prop::collection::vec(prop_oneof![any_json(), shaped_event()], 0..8),
            structured in any::<bool>(),
        ) {
            let payloads: Vec<String> = events.iter().map(Value::to_string).collect();
            let items = decode(vec![sse_frames(&payloads, false, false)], structured.then_some("f"));
            check_stream_ends_well(&items);
            check_assembles(PROVIDER, items);
        }

        #[test]
        fn a_valid_stream_decodes_the_same_however_it_is_cut(
            (texts, args, pieces) in (
                prop::collection::vec(".{0,8}", 0..5),
                prop::collection::vec(any::<u32>(), 0..3),
                any::<bool>(),
                any::<bool>(),
            ).prop_flat_map(|(texts, args, crlf, bom)| {
                let mut events = vec![
                    json!({"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 3}}}),
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ];
                for t in &texts {
                    events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}));
                }
                for (i, a) in args.iter().enumerate() {
                    let input = json!({"n": a}).to_string();
                    let (head, tail) = input.split_at(3);
                    events.push(json!({"type": "content_block_start", "index": i + 1,
                        "content_block": {"type": "tool_use", "id": format!("t{i}"), "name": "f", "input": {}}}));
                    events.push(json!({"type": "content_block_delta", "index": i + 1, "delta": {"type": "input_json_delta", "partial_json": head}}));
                    events.push(json!({"type": "ping"}));
                    events.push(json!({"type": "content_block_delta", "index": i + 1, "delta": {"type": "input_json_delta", "partial_json": tail}}));
                }
                events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}}));
                events.push(json!({"type": "message_stop"}));
                let payloads: Vec<String> = events.iter().map(Value::to_string).collect();
                (Just(texts), Just(args), split(sse_frames(&payloads, crlf, bom)))
            }),
        ) {
            let events = http::sse_events(PROVIDER, byte_stream(pieces)).boxed();
            let response = crate::provider::testing::block_on(collect_stream(PROVIDER, chunk_stream(events, None)))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_response(&response, &texts, &args, 4)?;
            prop_assert_eq!(response.model.as_str(), "claude");
        }
    }
}
