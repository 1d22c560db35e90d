//! Parsing a Messages API answer.

use serde::Deserialize;
use serde_json::Value;

use crate::message::{Content, Message, Role};
use crate::provider::CompletionResponse;
use crate::usage::{StopReason, Usage};

#[derive(Debug, Deserialize)]
pub(super) struct WireResponse {
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
pub(super) enum WireBlock {
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
pub(super) struct WireUsage {
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
    pub(super) fn apply(&self, usage: &mut Usage) {
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

pub(super) fn stop_reason(reason: Option<&str>) -> StopReason {
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
    pub(super) fn into_response(self, structured: Option<&str>) -> CompletionResponse {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    use crate::error::Result;
    use crate::provider::http;
    use crate::provider::testing::{any_json, json_leaf, object, or_any};
    use proptest::prelude::*;

    /// Parse a message body as `complete` does.
    fn parse(bytes: &[u8], structured: Option<&str>) -> Result<CompletionResponse> {
        let wire: WireResponse = http::decode_json("anthropic", "Messages API", "the body", bytes)?;
        Ok(wire.into_response(structured))
    }

    /// A message shaped like the real thing, any field possibly of a wrong type or an absurd
    /// value.
    fn shaped_message() -> impl Strategy<Value = Value> {
        let block = (
            prop_oneof![
                Just("text".to_owned()),
                Just("tool_use".to_owned()),
                Just("thinking".to_owned()),
                ".{0,6}"
            ],
            or_any(json_leaf()),
            or_any(json_leaf()),
            or_any(json_leaf()),
        )
            .prop_map(|(kind, text, name, input)| {
                json!({"type": kind, "text": text, "id": "t1", "name": name, "input": input})
            });
        (
            prop::collection::vec(block, 0..4),
            or_any(json_leaf()),
            or_any(json_leaf()),
        )
            .prop_map(|(content, stop, tokens)| {
                object(vec![
                    ("id", Some(json!("msg_1"))),
                    ("model", Some(json!("claude"))),
                    ("content", Some(Value::Array(content))),
                    ("stop_reason", Some(stop)),
                    (
                        "usage",
                        Some(json!({"input_tokens": tokens, "output_tokens": tokens,
                                    "cache_creation_input_tokens": tokens})),
                    ),
                ])
            })
    }

    #[test]
    fn wrong_types_and_missing_fields_name_the_path() {
        let err = parse(br#"{"model": "m"}"#, None).unwrap_err();
        assert!(err.to_string().contains("missing field `content`"), "{err}");
        let err = parse(br#"{"content": [], "usage": {"output_tokens": 1.5}}"#, None).unwrap_err();
        assert!(err.to_string().contains("usage.output_tokens"), "{err}");
        let err = parse(br#"{"content": [{"type": "tool_use", "name": "f"}]}"#, None).unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_body_is_a_response_or_a_clear_error(
            value in prop_oneof![any_json(), shaped_message()],
            structured in any::<bool>(),
        ) {
            if let Err(e) = parse(value.to_string().as_bytes(), structured.then_some("f")) {
                prop_assert!(e.provider_kind().is_some(), "{e:?}");
                prop_assert!(e.to_string().contains("Messages API"), "{e}");
            }
        }

        #[test]
        fn any_bytes_body_is_a_response_or_a_clear_error(body in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = parse(&body, None) {
                prop_assert!(e.provider_kind().is_some(), "{e:?}");
            }
        }
    }
}
