//! The W3C `traceparent` hook ([`agentkit_core::trace`]): with a propagation registered, every
//! HTTP provider sends the current span's `traceparent` with its request; without a current
//! span it sends none. Each provider talks to a local server speaking its wire format.
#![cfg(all(feature = "openai", feature = "anthropic", feature = "gemini"))]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::provider::anthropic::{AnthropicConfig, AnthropicProvider};
use agentkit_core::provider::gemini::{GeminiConfig, GeminiProvider};
use agentkit_core::trace::{self, TracePropagation};
use agentkit_core::{LlmProvider, OpenAiConfig, OpenAiProvider};
use axum::response::IntoResponse;
use common::{MockServer, hi};
use serde_json::{Value, json};
use tracing::Instrument;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A propagation whose current span's id is the `tracing` span id (what an OpenTelemetry
/// layer would give, minus the real trace id).
struct SpanIds;

impl TracePropagation for SpanIds {
    fn current_traceparent(&self) -> Option<String> {
        let id = tracing::Span::current().id()?;
        Some(format!("00-{TRACE}-{:016x}-01", id.into_u64()))
    }

    fn set_parent(&self, _span: &tracing::Span, _traceparent: &str) {}
}

fn openai_reply() -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                        "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
}

fn anthropic_reply() -> Value {
    json!({"id": "msg_1", "type": "message", "role": "assistant",
           "model": "claude-sonnet-4-5-20250929",
           "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
           "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}})
}

fn gemini_reply() -> Value {
    json!({"candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"},
                           "finishReason": "STOP", "index": 0}],
           "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1,
                             "totalTokenCount": 4},
           "modelVersion": "gemini-2.5-flash"})
}

/// Two completions of `provider`: outside any span, then inside `chat`; the headers sent
/// and the expected `traceparent` of the second.
async fn twice(
    provider: &dyn LlmProvider,
    server: &MockServer,
) -> (Option<String>, Option<String>, String) {
    provider.complete(hi()).await.unwrap();
    let span = tracing::info_span!("chat");
    let expected = format!("00-{TRACE}-{:016x}-01", span.id().unwrap().into_u64());
    provider.complete(hi()).instrument(span).await.unwrap();
    (
        server.header(0, "traceparent"),
        server.header(1, "traceparent"),
        expected,
    )
}

#[tokio::test]
async fn every_http_provider_sends_the_current_spans_traceparent() {
    // Spans need a subscriber to have ids.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    assert!(trace::set_propagation(Arc::new(SpanIds)));
    assert!(
        !trace::set_propagation(Arc::new(SpanIds)),
        "the first registration wins"
    );

    let openai = MockServer::start(|_, _| axum::Json(openai_reply()).into_response()).await;
    let provider = OpenAiProvider::new(
        OpenAiConfig::new("sk-test").with_base_url(format!("{}/v1", openai.url)),
    )
    .unwrap();
    let (outside, inside, expected) = twice(&provider, &openai).await;
    assert_eq!(outside, None, "no current span, no traceparent");
    assert_eq!(inside.as_deref(), Some(expected.as_str()));

    let anthropic = MockServer::start(|_, _| axum::Json(anthropic_reply()).into_response()).await;
    let provider = AnthropicProvider::new(
        AnthropicConfig::compatible(&anthropic.url, "sk-ant-test")
            .with_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let (outside, inside, expected) = twice(&provider, &anthropic).await;
    assert_eq!(outside, None);
    assert_eq!(inside.as_deref(), Some(expected.as_str()));

    let gemini = MockServer::start(|_, _| axum::Json(gemini_reply()).into_response()).await;
    let provider = GeminiProvider::new(
        GeminiConfig::compatible(format!("{}/v1beta", gemini.url), "AIza-test")
            .with_timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let (outside, inside, expected) = twice(&provider, &gemini).await;
    assert_eq!(outside, None);
    assert_eq!(inside.as_deref(), Some(expected.as_str()));
}
