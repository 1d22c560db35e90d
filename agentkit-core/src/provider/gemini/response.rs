//! Parsing `generateContent` answers (whole or one streamed piece) into chunks, and Gemini's
//! error objects.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{DATA_FORMAT, PROVIDER, SYNTHETIC_ID_PREFIX};
use crate::error::{Error, ProviderErrorKind, Result};
use crate::provider::CompletionChunk;
use crate::provider::http;
use crate::usage::{StopReason, Usage};

/// One `GenerateContentResponse`: a whole answer, or one event of a stream.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    pub(super) response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<WirePromptFeedback>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    thought_signature: Option<String>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
}

#[derive(Debug, Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// Gemini's error object: `{"error": {"code", "message", "status", "details"}}`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct WireError {
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Option<Value>,
}

impl WireUsage {
    fn to_usage(&self) -> Usage {
        let prompt = self
            .prompt_token_count
            .unwrap_or(0)
            .saturating_add(self.tool_use_prompt_token_count.unwrap_or(0));
        let cached = self.cached_content_token_count.unwrap_or(0).min(prompt);
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Usage::new(
            prompt - cached,
            self.candidates_token_count
                .unwrap_or(0)
                .saturating_add(thoughts),
        )
        .with_cache(cached, 0)
        .with_reasoning(thoughts)
    }
}

impl WireError {
    /// The error this object describes; `status` is the HTTP status when there was one.
    pub(super) fn into_error(
        self,
        status: Option<u16>,
        retry_after: Option<std::time::Duration>,
    ) -> Error {
        let http_status = status.or_else(|| {
            self.code
                .as_ref()
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
        });
        let grpc = self.status.clone().unwrap_or_default();
        let message = self
            .message
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| "the Gemini API reported an error without a message".to_owned());
        let reasons = self
            .details
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        let kind = match grpc.as_str() {
            "UNAUTHENTICATED" | "PERMISSION_DENIED" => ProviderErrorKind::Auth,
            _ if reasons.contains("API_KEY_INVALID") || message.contains("API key not valid") => {
                ProviderErrorKind::Auth
            }
            "RESOURCE_EXHAUSTED" => ProviderErrorKind::RateLimited,
            "UNAVAILABLE" => ProviderErrorKind::Overloaded,
            "DEADLINE_EXCEEDED" => ProviderErrorKind::Timeout,
            "INTERNAL" | "UNKNOWN" => ProviderErrorKind::Server,
            _ => match http_status {
                Some(s) => http::kind_for_status(s),
                None => ProviderErrorKind::Server,
            },
        };
        let retry_after = retry_after.or_else(|| self.retry_delay());
        let hint = match kind {
            ProviderErrorKind::Auth => {
                " (check the API key: the GEMINI_API_KEY or GOOGLE_API_KEY environment variable, \
                 or `google.api_key` in the configuration)"
            }
            _ if http_status == Some(404) => " (check the base URL and the model name)",
            _ => "",
        };
        let label = if grpc.is_empty() {
            String::new()
        } else {
            format!(" [{grpc}]")
        };
        Error::Provider {
            provider: PROVIDER.to_owned(),
            kind,
            status,
            message: format!("{message}{label}{hint}"),
            retry_after,
            source: None,
        }
    }

    /// The wait a `google.rpc.RetryInfo` detail asks for (`"retryDelay": "30s"`).
    fn retry_delay(&self) -> Option<std::time::Duration> {
        let details = self.details.as_ref()?.as_array()?;
        details.iter().find_map(|d| {
            let delay = d.get("retryDelay")?.as_str()?;
            let secs = delay.trim().strip_suffix('s')?;
            http::parse_retry_after(secs, std::time::SystemTime::now()).ok()
        })
    }
}

/// Parse an error body (`{"error": {...}}`), if it is one.
pub(super) fn error_from_body(
    body: &[u8],
    status: u16,
    retry_after: Option<std::time::Duration>,
) -> Error {
    #[derive(Deserialize)]
    struct Envelope {
        error: WireError,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => e.error.into_error(Some(status), retry_after),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            WireError {
                message: Some(http::error_body_message(status, &text)),
                ..WireError::default()
            }
            .into_error(Some(status), retry_after)
        }
    }
}

/// The stop reason for a `finishReason`.
pub(super) fn stop_reason(reason: Option<&str>, has_calls: bool) -> StopReason {
    match reason {
        None | Some("STOP" | "FINISH_REASON_UNSPECIFIED") if has_calls => StopReason::ToolUse,
        None | Some("STOP" | "FINISH_REASON_UNSPECIFIED") => StopReason::EndTurn,
        Some("MAX_TOKENS") => StopReason::MaxTokens,
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION"
            | "LANGUAGE",
        ) => StopReason::ContentFilter,
        Some(other) => StopReason::Other(other.to_ascii_lowercase()),
    }
}

/// Turns `GenerateContentResponse`s (one whole answer, or the events of a stream) into
/// [`CompletionChunk`]s.
#[derive(Debug)]
pub(super) struct Turn {
    pub(super) model: String,
    usage: Usage,
    finish_reason: Option<String>,
    blocked: Option<String>,
    calls: usize,
}

impl Turn {
    pub(super) fn new(model: String) -> Self {
        Self {
            model,
            usage: Usage::default(),
            finish_reason: None,
            blocked: None,
            calls: 0,
        }
    }

    /// Whether the answer has ended (a finish reason, or a blocked prompt).
    pub(super) fn ended(&self) -> bool {
        self.finish_reason.is_some() || self.blocked.is_some()
    }

    /// The chunks of one response (whole or streamed piece).
    pub(super) fn on_response(&mut self, wire: WireResponse) -> Result<Vec<CompletionChunk>> {
        if let Some(error) = wire.error {
            return Err(error.into_error(None, None));
        }
        if let Some(model) = wire.model_version.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        if let Some(usage) = &wire.usage_metadata {
            // Streamed pieces carry the running totals; the last one wins.
            self.usage = usage.to_usage();
        }
        if let Some(reason) = wire.prompt_feedback.and_then(|f| f.block_reason) {
            self.blocked = Some(reason);
        }
        let mut out = Vec::new();
        let Some(candidate) = wire
            .candidates
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0)
        else {
            return Ok(out);
        };
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            // Thought summaries are not part of the answer.
            if part.thought == Some(true) {
                continue;
            }
            let kind = if part.function_call.is_some() {
                "functionCall"
            } else {
                "text"
            };
            if let Some(sig) = part.thought_signature.filter(|s| !s.is_empty()) {
                out.push(CompletionChunk::ProviderData {
                    format: DATA_FORMAT.to_owned(),
                    data: json!({"thoughtSignature": sig, "part": kind}),
                });
            }
            if let Some(call) = part.function_call {
                let id = call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| {
                    format!("{SYNTHETIC_ID_PREFIX}{}", uuid::Uuid::new_v4().simple())
                });
                let args = match call.args {
                    Some(v @ Value::Object(_)) => v.to_string(),
                    _ => "{}".to_owned(),
                };
                out.push(CompletionChunk::ToolCallDelta {
                    index: self.calls,
                    id: Some(id),
                    name: Some(call.name),
                    arguments: args,
                });
                self.calls += 1;
            } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                out.push(CompletionChunk::TextDelta { text });
            }
        }
        if let Some(reason) = candidate.finish_reason.filter(|r| !r.is_empty()) {
            self.finish_reason = Some(reason);
        }
        Ok(out)
    }

    /// The final chunk.
    pub(super) fn finish(&mut self) -> CompletionChunk {
        let stop_reason = if self.blocked.is_some() && self.finish_reason.is_none() {
            StopReason::ContentFilter
        } else {
            stop_reason(self.finish_reason.as_deref(), self.calls > 0)
        };
        CompletionChunk::Finish {
            usage: self.usage,
            stop_reason,
            model: std::mem::take(&mut self.model),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::provider::testing::{any_json, json_leaf, object, or_any};
    use crate::provider::{CompletionResponse, StreamAccumulator};
    use proptest::prelude::*;

    /// Parse a body as `complete` does.
    fn parse(bytes: &[u8]) -> Result<CompletionResponse> {
        let wire: WireResponse = http::decode_json(PROVIDER, "Gemini", "the body", bytes)?;
        let mut turn = Turn::new("m".into());
        let mut acc = StreamAccumulator::new(PROVIDER);
        for c in turn.on_response(wire)? {
            acc.push(c);
        }
        acc.push(turn.finish());
        acc.finish()
    }

    #[test]
    fn usage_splits_cache_and_thoughts() {
        let r = parse(
            json!({
                "candidates": [{"content": {"role": "model", "parts": [
                    {"text": "thinking…", "thought": true},
                    {"text": "Hi", "thoughtSignature": "c2ln"},
                ]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 100, "cachedContentTokenCount": 60,
                                  "candidatesTokenCount": 5, "thoughtsTokenCount": 20,
                                  "totalTokenCount": 125},
                "modelVersion": "gemini-2.5-flash",
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.text(), "Hi");
        assert_eq!(
            r.usage,
            Usage::new(40, 25).with_cache(60, 0).with_reasoning(20)
        );
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(
            r.message.content[0],
            crate::Content::provider_data(
                DATA_FORMAT,
                json!({"thoughtSignature": "c2ln", "part": "text"})
            )
        );
    }

    #[test]
    fn errors_map_by_grpc_status_and_read_retry_info() {
        let body = json!({"error": {"code": 429, "message": "Resource has been exhausted",
            "status": "RESOURCE_EXHAUSTED", "details": [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]}});
        let e = error_from_body(body.to_string().as_bytes(), 429, None);
        assert_eq!(e.provider_kind(), Some(ProviderErrorKind::RateLimited));
        assert_eq!(e.retry_after(), Some(std::time::Duration::from_secs(17)));
        let body = json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT"}});
        let e = error_from_body(body.to_string().as_bytes(), 400, None);
        assert_eq!(e.provider_kind(), Some(ProviderErrorKind::Auth));
        assert!(e.to_string().contains("GEMINI_API_KEY"), "{e}");
        let e = error_from_body(b"<html>bad gateway</html>", 502, None);
        assert_eq!(e.provider_kind(), Some(ProviderErrorKind::Server));
    }

    /// A response shaped like the real thing, any field possibly of a wrong type.
    pub(in crate::provider::gemini) fn shaped_response() -> impl Strategy<Value = Value> {
        let part = (
            or_any(json_leaf()),
            or_any(json_leaf()),
            or_any(json_leaf()),
            prop::option::of(or_any(json_leaf())),
            any::<bool>(),
        )
            .prop_map(|(text, sig, name, args, call)| {
                if call {
                    json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": sig})
                } else {
                    json!({"text": text, "thoughtSignature": sig})
                }
            });
        (
            prop::collection::vec(part, 0..4),
            or_any(json_leaf()),
            or_any(json_leaf()),
            prop::option::of(or_any(json_leaf())),
        )
            .prop_map(|(parts, finish, tokens, error)| {
                object(vec![
                    (
                        "candidates",
                        Some(json!([{"content": {"role": "model", "parts": parts},
                                     "finishReason": finish, "index": 0}])),
                    ),
                    (
                        "usageMetadata",
                        Some(json!({"promptTokenCount": tokens, "candidatesTokenCount": tokens,
                                    "cachedContentTokenCount": tokens, "thoughtsTokenCount": tokens})),
                    ),
                    ("modelVersion", Some(json!("gemini-2.5-flash"))),
                    ("error", error.map(|e| json!({"code": e, "message": e, "status": e}))),
                ])
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_body_is_a_response_or_a_clear_error(value in prop_oneof![any_json(), shaped_response()]) {
            if let Err(e) = parse(value.to_string().as_bytes()) {
                prop_assert!(e.provider_kind().is_some(), "{e:?}");
                prop_assert!(!e.to_string().trim().is_empty());
            }
        }

        #[test]
        fn any_bytes_body_is_a_response_or_a_clear_error(body in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Err(e) = parse(&body) {
                prop_assert!(e.provider_kind().is_some(), "{e:?}");
            }
        }

        #[test]
        fn any_error_body_is_a_provider_error(body in prop_oneof![
            any_json().prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..100),
        ], status in 400u16..600) {
            let e = error_from_body(&body, status, None);
            prop_assert!(e.provider_kind().is_some());
            prop_assert_eq!(e.status(), Some(status));
        }
    }
}
