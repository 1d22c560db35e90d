//! Parsing a Chat Completions answer (and the error objects OpenAI-compatible servers send).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, ProviderErrorKind, Result};
use crate::message::{Content, Message, Role};
use crate::provider::CompletionResponse;
use crate::provider::http;
use crate::usage::{StopReason, Usage};

/// Decode JSON in the OpenAI format, with the path of the offending field in the error.
pub(super) fn decode<T: DeserializeOwned>(provider: &str, what: &str, bytes: &[u8]) -> Result<T> {
    http::decode_json(provider, "OpenAI", what, bytes)
}

#[derive(Deserialize)]
pub(super) struct WireResponse {
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
pub(super) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<WireCompletionDetails>,
}

#[derive(Deserialize, Default)]
struct WireCompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct WireError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

impl WireUsage {
    pub(super) fn to_usage(&self) -> Usage {
        let prompt = self.prompt_tokens.unwrap_or(0);
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(prompt);
        let output = self.completion_tokens.unwrap_or(0);
        let reasoning = self
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0)
            .min(output);
        Usage::new(prompt - cached, output)
            .with_cache(cached, 0)
            .with_reasoning(reasoning)
    }
}

impl WireError {
    pub(super) fn into_error(self, provider: &str, default: ProviderErrorKind) -> Error {
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

pub(super) fn stop_reason(reason: Option<&str>, has_tool_calls: bool, refusal: bool) -> StopReason {
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
    pub(super) fn into_response(
        self,
        provider: &str,
        requested_model: &str,
    ) -> Result<CompletionResponse> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn reasoning_tokens_are_a_share_of_the_output() {
        let wire: WireUsage = serde_json::from_value(serde_json::json!({
            "prompt_tokens": 100, "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 30},
        }))
        .unwrap();
        assert_eq!(
            wire.to_usage(),
            Usage::new(60, 50).with_cache(40, 0).with_reasoning(30)
        );
    }

    use super::*;

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

    use crate::provider::testing::{any_json, object, openai_parts, openai_usage};
    use proptest::prelude::*;
    use serde_json::json;

    /// Parse a chat completion body as `complete` does.
    fn parse(bytes: &[u8]) -> Result<CompletionResponse> {
        decode::<WireResponse>("openai", "the chat completion", bytes)?.into_response("openai", "m")
    }

    /// A chat completion shaped like the real thing, any field possibly of a wrong type or an
    /// absurd value.
    fn shaped_response() -> impl Strategy<Value = Value> {
        openai_parts().prop_map(|(index, content, calls, finish, tokens, error)| {
            object(vec![
                ("id", Some(json!("chatcmpl-1"))),
                ("model", Some(json!("m"))),
                (
                    "choices",
                    Some(json!([{"index": index, "finish_reason": finish,
                                     "message": {"content": content, "tool_calls": calls}}])),
                ),
                ("usage", Some(openai_usage(tokens))),
                ("error", error),
            ])
        })
    }

    fn check(result: Result<CompletionResponse>) -> std::result::Result<(), TestCaseError> {
        match result {
            Ok(r) => prop_assert!(r.usage.input_tokens <= r.usage.total_tokens()),
            Err(e) => {
                prop_assert!(e.provider_kind().is_some(), "{e:?}");
                prop_assert!(!e.to_string().trim().is_empty());
            }
        }
        Ok(())
    }

    #[test]
    fn wrong_types_and_missing_fields_name_the_path() {
        let err = parse(
            br#"{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": -1}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("usage.prompt_tokens"), "{err}");
        let err = parse(br#"{"choices": [{"message": {"tool_calls": [{"function": {}}]}}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("missing field `name`"), "{err}");
        let err = parse(b"\xff\xfe not json").unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
        let ok = parse(br#"{"choices": [{"message": {"content": "hi"}}],
                           "usage": {"prompt_tokens": 18446744073709551615, "completion_tokens": 1,
                                     "prompt_tokens_details": {"cached_tokens": 18446744073709551615}}}"#)
            .unwrap();
        assert_eq!(ok.usage.cache_read_tokens, u64::MAX);
        assert_eq!(ok.usage.total_tokens(), u64::MAX);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_body_is_a_response_or_a_clear_error(
            value in prop_oneof![any_json(), shaped_response()],
        ) {
            check(parse(value.to_string().as_bytes()))?;
        }

        #[test]
        fn any_bytes_body_is_a_response_or_a_clear_error(body in prop::collection::vec(any::<u8>(), 0..200)) {
            check(parse(&body))?;
        }
    }
}
