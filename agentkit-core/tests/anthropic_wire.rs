//! `AnthropicProvider` against a local server that speaks the Messages API wire format.
#![cfg(feature = "anthropic")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use agentkit_core::provider::anthropic::{AnthropicConfig, AnthropicProvider};
use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CompletionRequest, Content, FnTool,
    LlmProvider, Message, ProviderBuilder, ProviderErrorKind, ResponseFormat, RetryConfig, Role,
    RunContext, StopReason, ToolChoice, ToolSpec, Usage, collect_stream,
};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// A tiny Messages API server: answers queued replies in order and records what it was sent.

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Deliver the body in small pieces, as a network would, so events straddle reads.
    chunked: bool,
}

impl Reply {
    fn json(body: Value) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            chunked: false,
        }
    }

    fn error(status: u16, kind: &str, message: &str) -> Self {
        Self {
            status,
            ..Self::json(json!({"type": "error", "error": {"type": kind, "message": message}}))
        }
    }

    /// An event stream exactly as Anthropic frames it: `event:` line, `data:` line, blank line.
    fn sse(events: &[Value]) -> Self {
        let body: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {}\n\n", e["type"].as_str().unwrap(), e))
            .collect();
        Self {
            status: 200,
            headers: vec![
                ("content-type", "text/event-stream; charset=utf-8".into()),
                ("cache-control", "no-cache".into()),
            ],
            body,
            chunked: true,
        }
    }

    fn raw(status: u16, content_type: &str, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", content_type.into())],
            body: body.into(),
            chunked: false,
        }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = if self.chunked {
            common::sse_response(vec![self.body], Some(17))
        } else {
            Response::new(Body::from(self.body))
        };
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap();
        for (name, value) in self.headers {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_str(&value).unwrap());
        }
        response
    }
}

mod common;
use common::MockServer;

/// The shared local server, answering queued replies in order, pointed at by an Anthropic
/// configuration.
struct MockAnthropic(MockServer);

impl std::ops::Deref for MockAnthropic {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.0
    }
}

impl MockAnthropic {
    async fn start(replies: Vec<Reply>) -> Self {
        Self(MockServer::queued(replies).await)
    }

    fn provider(&self) -> AnthropicProvider {
        AnthropicProvider::new(self.config()).unwrap()
    }

    fn config(&self) -> AnthropicConfig {
        AnthropicConfig::compatible(&self.url, "sk-ant-test-key")
            .with_timeout(Duration::from_secs(10))
    }
}

// ---------------------------------------------------------------------------------------------
// Realistic bodies.

fn message(content: Value, stop_reason: &str, usage: Value) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage,
    })
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output,
        "service_tier": "standard",
    })
}

fn text_reply(text: &str) -> Reply {
    Reply::json(message(
        json!([{"type": "text", "text": text}]),
        "end_turn",
        usage(20, 8),
    ))
}

fn message_start(input: u64, cache_read: u64) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
        "usage": {
            "input_tokens": input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cache_read,
            "output_tokens": 1,
        },
    }})
}

fn block_start(index: usize, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn text_delta(index: usize, text: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
           "delta": {"type": "text_delta", "text": text}})
}

fn json_delta(index: usize, partial: &str) -> Value {
    json!({"type": "content_block_delta", "index": index,
           "delta": {"type": "input_json_delta", "partial_json": partial}})
}

fn block_stop(index: usize) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_delta(stop_reason: &str, output: u64) -> Value {
    json!({"type": "message_delta",
           "delta": {"stop_reason": stop_reason, "stop_sequence": null},
           "usage": {"output_tokens": output}})
}

fn message_stop() -> Value {
    json!({"type": "message_stop"})
}

fn ping() -> Value {
    json!({"type": "ping"})
}

fn weather_spec() -> ToolSpec {
    ToolSpec::new(
        "get_weather",
        "Current weather of a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    )
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[tokio::test]
async fn request_carries_auth_system_alternating_turns_tools_and_choice() {
    let server = MockAnthropic::start(vec![text_reply("Il fait beau.")]).await;
    let provider = AnthropicProvider::new(
        server
            .config()
            .with_header("anthropic-beta", "token-efficient-tools-2025-02-19"),
    )
    .unwrap();
    let request = CompletionRequest::new(vec![
        Message::user("Weather in Paris and Rome?")
            .with_content(Content::image_base64("image/png", "iVBORw0KGgo=")),
        Message::new(
            Role::Assistant,
            vec![
                Content::text("Let me check both."),
                Content::tool_call("toolu_01A", "get_weather", json!({"city": "Paris"})),
                Content::tool_call("toolu_01B", "get_weather", json!({"city": "Rome"})),
            ],
        ),
        Message::tool_results(vec![
            Content::tool_result("toolu_01A", vec![Content::text("18°C, sunny")], false),
            Content::tool_result("toolu_01B", vec![Content::text("station offline")], true),
        ]),
        Message::system("Answer in French."),
        Message::user("Summarize."),
    ])
    .with_system("You are terse.")
    .with_tools(vec![weather_spec()])
    .with_tool_choice(ToolChoice::Required)
    .with_parallel_tool_calls(false)
    .with_stop(vec!["\n\nHuman:".into()])
    .with_temperature(0.3)
    .with_extra("top_k", json!(5));

    let answer = provider.complete(request).await.unwrap();
    assert_eq!(answer.text(), "Il fait beau.");

    assert_eq!(server.seen()[0].path, "/v1/messages");
    assert_eq!(
        server.header(0, "x-api-key").as_deref(),
        Some("sk-ant-test-key")
    );
    assert_eq!(
        server.header(0, "anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(
        server.header(0, "anthropic-beta").as_deref(),
        Some("token-efficient-tools-2025-02-19")
    );
    assert!(
        server
            .header(0, "content-type")
            .unwrap()
            .starts_with("application/json")
    );

    let body = server.body(0);
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], 4096, "the API requires max_tokens");
    assert_eq!(body["system"], "You are terse.\n\nAnswer in French.");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "is_error": false,
                 "content": [{"type": "text", "text": "18°C, sunny"}]},
                {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": true,
                 "content": [{"type": "text", "text": "station offline"}]},
                {"type": "text", "text": "Summarize."},
            ]},
        ])
    );
    assert_eq!(
        body["tools"],
        json!([{
            "name": "get_weather",
            "description": "Current weather of a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(body["stop_sequences"], json!(["\n\nHuman:"]));
    assert_eq!(body["temperature"], json!(0.3));
    assert_eq!(body["top_k"], 5);
    assert!(body.get("stream").is_none());
}

#[tokio::test]
async fn prompt_caching_marks_system_and_last_tool_and_prices_cache_tokens() {
    let cached_usage = json!({
        "input_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2048,
        "output_tokens": 30,
    });
    let server = MockAnthropic::start(vec![
        Reply::json(message(
            json!([{"type": "text", "text": "first"}]),
            "end_turn",
            json!({"input_tokens": 12, "cache_creation_input_tokens": 2048,
                   "cache_read_input_tokens": 0, "output_tokens": 30}),
        )),
        Reply::json(message(
            json!([{"type": "text", "text": "second"}]),
            "end_turn",
            cached_usage,
        )),
        text_reply("uncached"),
    ])
    .await;
    let provider = AnthropicProvider::new(server.config().with_prompt_caching(true)).unwrap();
    let time = ToolSpec::new("get_time", "Current time", json!({"type": "object"}));
    let request = CompletionRequest::new(vec![Message::user("Weather in Oslo?")])
        .with_system("You are a long, stable system prompt.")
        .with_tools(vec![weather_spec(), time]);
    let first = provider.complete(request.clone()).await.unwrap();
    let second = provider.complete(request.clone()).await.unwrap();
    assert_eq!(first.usage, Usage::new(12, 30).with_cache(0, 2048));
    assert_eq!(second.usage, Usage::new(12, 30).with_cache(2048, 0));

    let body = server.body(0);
    assert_eq!(
        body["system"],
        json!([{"type": "text", "text": "You are a long, stable system prompt.",
                "cache_control": {"type": "ephemeral"}}])
    );
    assert!(body["tools"][0].get("cache_control").is_none());
    assert_eq!(
        body["tools"][1],
        json!({"name": "get_time", "description": "Current time",
               "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}})
    );
    assert_eq!(server.body(1), body, "the same prefix is sent again");

    // Cache writes cost 1.25x and reads 0.1x the input price of claude-sonnet-4-5 ($3/Mtok).
    let prices = agentkit_core::PriceTable::default();
    let write_cost = prices.cost(&first.model, &first.usage);
    let read_cost = prices.cost(&second.model, &second.usage);
    let base = (12.0 * 3.0 + 30.0 * 15.0) / 1e6;
    assert!(
        (write_cost - (base + 2048.0 * 3.75 / 1e6)).abs() < 1e-12,
        "{write_cost}"
    );
    assert!(
        (read_cost - (base + 2048.0 * 0.30 / 1e6)).abs() < 1e-12,
        "{read_cost}"
    );

    // Off (the default): plain system string, no markers.
    server.provider().complete(request).await.unwrap();
    let plain = server.body(2);
    assert_eq!(plain["system"], "You are a long, stable system prompt.");
    assert!(plain["tools"][1].get("cache_control").is_none());
}

#[tokio::test]
async fn every_tool_choice_has_its_wire_form_and_max_tokens_is_honoured() {
    let cases = [
        (ToolChoice::Auto, json!({"type": "auto"})),
        (ToolChoice::None, json!({"type": "none"})),
        (
            ToolChoice::Tool("get_weather".into()),
            json!({"type": "tool", "name": "get_weather"}),
        ),
    ];
    let server =
        MockAnthropic::start(cases.iter().map(|_| text_reply("ok")).collect::<Vec<_>>()).await;
    let provider = server.provider();
    for (i, (choice, wire)) in cases.into_iter().enumerate() {
        provider
            .complete(
                CompletionRequest::new(vec![Message::user("hi")])
                    .with_model("claude-haiku-4-5")
                    .with_max_tokens(256)
                    .with_tools(vec![weather_spec()])
                    .with_tool_choice(choice),
            )
            .await
            .unwrap();
        let body = server.body(i);
        assert_eq!(body["tool_choice"], wire);
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["model"], "claude-haiku-4-5");
    }
}

// ---------------------------------------------------------------------------------------------
// Answers.

#[tokio::test]
async fn text_answer_reports_model_id_stop_reason_and_cache_usage() {
    let server = MockAnthropic::start(vec![Reply::json(message(
        json!([{"type": "text", "text": "Paris is the capital of France."}]),
        "end_turn",
        json!({
            "input_tokens": 21,
            "cache_creation_input_tokens": 1200,
            "cache_read_input_tokens": 3400,
            "output_tokens": 9,
        }),
    ))])
    .await;
    let r = server
        .provider()
        .complete(CompletionRequest::new(vec![Message::user(
            "Capital of France?",
        )]))
        .await
        .unwrap();
    assert_eq!(r.text(), "Paris is the capital of France.");
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(r.id.as_deref(), Some("msg_01XFDUDYJgAACzvnptvVoYEL"));
    assert_eq!(r.usage, Usage::new(21, 9).with_cache(3400, 1200));
}

#[tokio::test]
async fn two_tool_use_blocks_become_two_tool_calls() {
    let server = MockAnthropic::start(vec![Reply::json(message(
        json!([
            {"type": "text", "text": "I'll check both cities."},
            {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01VzvzsZsB9yZ6Lh1S2o7KXz", "name": "get_weather", "input": {"city": "Rome"}},
        ]),
        "tool_use",
        usage(380, 110),
    ))])
    .await;
    let r = server
        .provider()
        .complete(
            CompletionRequest::new(vec![Message::user("Paris and Rome?")])
                .with_tools(vec![weather_spec()]),
        )
        .await
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.text(), "I'll check both cities.");
    let calls: Vec<_> = r.message.tool_calls().collect();
    assert_eq!(
        calls,
        vec![
            (
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                &json!({"city": "Paris"})
            ),
            (
                "toolu_01VzvzsZsB9yZ6Lh1S2o7KXz",
                "get_weather",
                &json!({"city": "Rome"})
            ),
        ]
    );
}

#[tokio::test]
async fn every_stop_reason_is_mapped() {
    let reasons = [
        ("max_tokens", StopReason::MaxTokens),
        ("stop_sequence", StopReason::StopSequence),
        ("refusal", StopReason::Refusal),
        ("pause_turn", StopReason::Other("pause_turn".into())),
    ];
    let server = MockAnthropic::start(
        reasons
            .iter()
            .map(|(r, _)| {
                Reply::json(message(
                    json!([{"type": "text", "text": "…"}]),
                    r,
                    usage(1, 1),
                ))
            })
            .collect(),
    )
    .await;
    let provider = server.provider();
    for (wire, expected) in reasons {
        let r = provider
            .complete(CompletionRequest::new(vec![Message::user("go")]))
            .await
            .unwrap();
        assert_eq!(r.stop_reason, expected, "stop_reason {wire}");
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming.

#[tokio::test]
async fn streamed_text_and_tool_use_are_reassembled() {
    let server = MockAnthropic::start(vec![Reply::sse(&[
        message_start(472, 2048),
        block_start(0, json!({"type": "text", "text": ""})),
        ping(),
        text_delta(0, "Okay, let me check"),
        text_delta(0, " the weather in San Francisco."),
        block_stop(0),
        block_start(
            1,
            json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}),
        ),
        json_delta(1, ""),
        json_delta(1, "{\"city\": \"San"),
        json_delta(1, " Francisco\", \"unit\": \"fahrenheit\"}"),
        block_stop(1),
        block_start(
            2,
            json!({"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
        ),
        json_delta(2, "{\"tz\": \"America/Los_Angeles\"}"),
        block_stop(2),
        message_delta("tool_use", 89),
        message_stop(),
    ])])
    .await;
    let provider = server.provider();
    let stream = provider
        .stream(
            CompletionRequest::new(vec![Message::user("Weather and time in SF?")])
                .with_tools(vec![weather_spec()]),
        )
        .await
        .unwrap();
    let r = collect_stream("anthropic", stream).await.unwrap();
    assert_eq!(server.body(0)["stream"], true);
    assert_eq!(r.text(), "Okay, let me check the weather in San Francisco.");
    let calls: Vec<_> = r.message.tool_calls().collect();
    assert_eq!(
        calls,
        vec![
            (
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "get_weather",
                &json!({"city": "San Francisco", "unit": "fahrenheit"})
            ),
            (
                "toolu_02",
                "get_time",
                &json!({"tz": "America/Los_Angeles"})
            ),
        ]
    );
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(r.usage, Usage::new(472, 89).with_cache(2048, 0));
}

#[tokio::test]
async fn a_stream_cut_before_message_stop_is_a_stream_error() {
    let server = MockAnthropic::start(vec![Reply::sse(&[
        message_start(10, 0),
        block_start(0, json!({"type": "text", "text": ""})),
        text_delta(0, "The answer is"),
    ])])
    .await;
    let stream = server
        .provider()
        .stream(CompletionRequest::new(vec![Message::user("?")]))
        .await
        .unwrap();
    let err = collect_stream("anthropic", stream).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Stream));
    assert!(err.to_string().contains("message_stop"), "{err}");
}

#[tokio::test]
async fn an_error_event_in_the_stream_is_a_provider_error_of_its_kind() {
    let server = MockAnthropic::start(vec![Reply::sse(&[
        message_start(10, 0),
        block_start(0, json!({"type": "text", "text": ""})),
        text_delta(0, "Hel"),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ])])
    .await;
    let stream = server
        .provider()
        .stream(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    let err = collect_stream("anthropic", stream).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Overloaded));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("Overloaded"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The agent loop and structured output over HTTP.

#[derive(Deserialize, JsonSchema)]
struct City {
    city: String,
}

#[tokio::test]
async fn agent_tool_round_trip_over_http() {
    let server = MockAnthropic::start(vec![
        Reply::json(message(
            json!([{"type": "tool_use", "id": "toolu_01Lisbon", "name": "weather", "input": {"city": "Lisbon"}}]),
            "tool_use",
            usage(300, 40),
        )),
        text_reply("It is 18°C and sunny in Lisbon."),
    ])
    .await;
    let weather = FnTool::new(
        "weather",
        "Current weather of a city",
        |c: City| async move { Ok::<_, String>(format!("18°C and sunny in {}", c.city)) },
    );
    let agent = AgentLlm::new(
        Agent::new("assistant", "You answer weather questions.").with_tool(weather),
        server.provider(),
    );
    let g = agent
        .generate("Weather in Lisbon?".into(), &RunContext::new())
        .await
        .unwrap();
    assert_eq!(g.text(), "It is 18°C and sunny in Lisbon.");
    assert_eq!(g.usage.input_tokens, 320);
    assert_eq!(g.usage.output_tokens, 48);
    assert_eq!(server.requests(), 2);

    let first = server.body(0);
    assert_eq!(first["system"], "You answer weather questions.");
    assert_eq!(first["tools"][0]["name"], "weather");
    assert_eq!(
        first["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    let second = server.body(1);
    assert_eq!(
        second["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Lisbon?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01Lisbon", "name": "weather", "input": {"city": "Lisbon"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01Lisbon", "is_error": false,
                 "content": [{"type": "text", "text": "18°C and sunny in Lisbon"}]},
            ]},
        ])
    );
}

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Forecast {
    city: String,
    celsius: i32,
    sunny: bool,
}

#[tokio::test]
async fn generate_structured_sends_a_forced_tool_and_parses_its_input() {
    let server = MockAnthropic::start(vec![Reply::json(message(
        json!([{"type": "tool_use", "id": "toolu_01F", "name": "Forecast",
                "input": {"city": "Lisbon", "celsius": 18, "sunny": true}}]),
        "tool_use",
        usage(120, 30),
    ))])
    .await;
    let agent = AgentLlm::new(
        Agent::new("forecaster", "You produce forecasts."),
        server.provider(),
    );
    let forecast: Forecast = agent
        .generate_structured("Forecast for Lisbon", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(
        forecast,
        Forecast {
            city: "Lisbon".into(),
            celsius: 18,
            sunny: true
        }
    );
    assert_eq!(server.requests(), 1, "no repair round was needed");
    let body = server.body(0);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "Forecast"})
    );
    let tool = &body["tools"][0];
    assert_eq!(tool["name"], "Forecast");
    assert_eq!(tool["input_schema"]["type"], "object");
    assert_eq!(
        tool["input_schema"]["properties"]["celsius"]["type"],
        "integer"
    );
}

#[tokio::test]
async fn structured_output_streams_as_json_text() {
    let server = MockAnthropic::start(vec![Reply::sse(&[
        message_start(50, 0),
        block_start(
            0,
            json!({"type": "tool_use", "id": "toolu_01F", "name": "Forecast", "input": {}}),
        ),
        json_delta(0, ""),
        json_delta(0, "{\"city\": \"Lis"),
        json_delta(0, "bon\", \"celsius\": 18, \"sunny\": true}"),
        block_stop(0),
        message_delta("tool_use", 25),
        message_stop(),
    ])])
    .await;
    let request = CompletionRequest::new(vec![Message::user("Forecast for Lisbon")])
        .with_response_format(ResponseFormat::new(
            "Forecast",
            agentkit_core::schema::schema_value::<Forecast>(),
        ));
    let stream = server.provider().stream(request).await.unwrap();
    let r = collect_stream("anthropic", stream).await.unwrap();
    assert!(!r.message.has_tool_calls());
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    let parsed: Forecast = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(parsed.city, "Lisbon");
    assert_eq!(
        server.body(0)["tool_choice"],
        json!({"type": "tool", "name": "Forecast"})
    );
}

// ---------------------------------------------------------------------------------------------
// Errors and retries.

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_succeeds() {
    let server = MockAnthropic::start(vec![
        Reply::error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        )
        .with_header("retry-after", "0.3"),
        text_reply("made it"),
    ])
    .await;
    // A long backoff: only the server's retry-after can make this finish quickly.
    let provider = ProviderBuilder::new(server.provider())
        .retry(
            RetryConfig::new()
                .with_max_retries(2)
                .with_initial_backoff(Duration::from_secs(20)),
        )
        .build();
    let started = Instant::now();
    let r = provider
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(r.text(), "made it");
    assert_eq!(server.requests(), 2);
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
}

#[tokio::test]
async fn a_negative_retry_after_is_ignored_and_the_backoff_applies() {
    let server = MockAnthropic::start(vec![
        Reply::error(429, "rate_limit_error", "slow down").with_header("retry-after", "-5"),
        Reply::json(message(
            json!([{"type": "text", "text": "ok"}]),
            "end_turn",
            usage(1, 1),
        )),
    ])
    .await;
    let err = server.provider().complete(common::hi()).await.unwrap_err();
    assert_eq!(err.retry_after(), None, "-5 is not a wait");
    let retrying = common::retrying(server.provider());
    let answer = retrying.complete(common::hi()).await.unwrap();
    assert_eq!(answer.text(), "ok");
}

#[tokio::test]
async fn rate_limit_error_carries_retry_after() {
    let server = MockAnthropic::start(vec![
        Reply::error(429, "rate_limit_error", "slow down").with_header("retry-after", "1"),
    ])
    .await;
    let err = server
        .provider()
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::RateLimited));
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert!(err.to_string().contains("slow down"), "{err}");
}

#[tokio::test]
async fn overloaded_529_is_overloaded_and_retried() {
    let server = MockAnthropic::start(vec![
        Reply::error(529, "overloaded_error", "Overloaded"),
        Reply::error(529, "overloaded_error", "Overloaded"),
        text_reply("back"),
    ])
    .await;
    let bare = server.provider();
    let err = bare
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Overloaded));
    assert_eq!(err.status(), Some(529));

    let retried = ProviderBuilder::new(bare)
        .retry(RetryConfig::new().with_initial_backoff(Duration::from_millis(10)))
        .build();
    let r = retried
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(r.text(), "back");
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_and_not_retried() {
    let server = MockAnthropic::start(vec![
        Reply::raw(
            200,
            "application/json",
            r#"{"id": "msg_1", "type": "message", "content": [{"type": "te"#,
        ),
        text_reply("never sent"),
    ])
    .await;
    let provider = common::retrying(server.provider());
    let err = provider
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn unauthorized_is_an_auth_error_that_mentions_the_api_key() {
    let server = MockAnthropic::start(vec![
        Reply::error(401, "authentication_error", "invalid x-api-key"),
        Reply::error(401, "authentication_error", "invalid x-api-key"),
    ])
    .await;
    let provider = server.provider();
    let err = provider
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Auth));
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("invalid x-api-key"), "{text}");
    assert!(text.contains("ANTHROPIC_API_KEY"), "{text}");

    // A stream that cannot open fails the same way, before any chunk.
    let err = provider
        .stream(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .err()
        .unwrap();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Auth));
}

#[tokio::test]
async fn an_unreachable_server_is_a_connect_error() {
    let server = MockAnthropic::start(vec![]).await;
    let config = server.config();
    drop(server);
    // Give the aborted server task a moment to release the port.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = AnthropicProvider::new(config)
        .unwrap()
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Connect));
    assert!(err.is_retryable());
}
