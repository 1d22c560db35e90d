//! `OpenAiProvider` with `api: responses` against a local server that speaks the Responses API
//! wire format.
#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use agentkit_core::config::OpenAiApi;
use agentkit_core::provider::openai::{OpenAiConfig, OpenAiProvider};
use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CompletionRequest, Content, FnTool,
    LlmProvider, Message, ProviderBuilder, ProviderErrorKind, ResponseFormat, RetryConfig, Role,
    RunContext, StopReason, ToolChoice, ToolSpec, Usage, collect_stream,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

mod common;
use common::MockServer;

#[derive(Clone)]
enum Reply {
    Json(u16, Value, Vec<(&'static str, String)>),
    /// `event:` + `data:` frames as OpenAI sends them, in 11-byte pieces.
    Sse(Vec<String>),
    Raw(u16, &'static str),
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self::Json(200, body, Vec::new())
    }

    fn error(status: u16, kind: &str, code: &str, message: &str) -> Self {
        Self::Json(
            status,
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
            Vec::new(),
        )
    }

    fn sse(events: &[Value]) -> Self {
        Self::Sse(
            events
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut e = e.clone();
                    e["sequence_number"] = json!(i);
                    format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())
                })
                .collect(),
        )
    }

    fn with_header(self, name: &'static str, value: &str) -> Self {
        match self {
            Self::Json(s, b, mut h) => {
                h.push((name, value.to_owned()));
                Self::Json(s, b, h)
            }
            other => other,
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Self::Json(status, body, headers) => {
                let mut r = common::json_reply(StatusCode::from_u16(status).unwrap(), body);
                for (n, v) in headers {
                    r.headers_mut().insert(n, v.parse().unwrap());
                }
                r
            }
            Self::Sse(frames) => common::sse_response(frames, Some(11)),
            Self::Raw(status, body) => {
                (StatusCode::from_u16(status).unwrap(), body).into_response()
            }
        }
    }
}

struct Mock(MockServer);

impl std::ops::Deref for Mock {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.0
    }
}

impl Mock {
    async fn start(replies: Vec<Reply>) -> Self {
        Self(MockServer::queued(replies).await)
    }

    fn provider(&self) -> OpenAiProvider {
        OpenAiProvider::new(
            OpenAiConfig::compatible(format!("{}/v1", self.url), "sk-test")
                .with_api(OpenAiApi::Responses)
                .with_default_model("gpt-5-mini")
                .with_timeout(Duration::from_secs(10)),
        )
        .unwrap()
    }
}

fn usage(input: u64, cached: u64, output: u64, reasoning: u64) -> Value {
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
           "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
           "total_tokens": input + output})
}

fn response(output: Value, usage: Value) -> Value {
    json!({
        "id": "resp_67ccd2bed1ec8190b14f964abc054267",
        "object": "response",
        "created_at": 1741476542,
        "status": "completed",
        "error": null,
        "incomplete_details": null,
        "model": "gpt-5-mini-2025-08-07",
        "output": output,
        "parallel_tool_calls": true,
        "store": false,
        "usage": usage,
    })
}

fn message(text: &str) -> Value {
    json!({"type": "message", "id": "msg_67ccd2bf17f0", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn reasoning(id: &str, enc: &str) -> Value {
    json!({"type": "reasoning", "id": id, "status": "completed",
           "summary": [{"type": "summary_text", "text": "Need the weather."}],
           "encrypted_content": enc})
}

fn function_call(call_id: &str, name: &str, args: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
           "name": name, "arguments": args, "status": "completed"})
}

fn text_reply(text: &str) -> Reply {
    Reply::ok(response(json!([message(text)]), usage(20, 0, 8, 0)))
}

fn weather_spec() -> ToolSpec {
    ToolSpec::new(
        "get_weather",
        "Current weather of a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    )
}

#[tokio::test]
async fn request_carries_instructions_input_items_tools_and_options() {
    let server = Mock::start(vec![text_reply("Il fait beau.")]).await;
    let request = CompletionRequest::new(vec![
        Message::user("Weather in Paris and Rome?")
            .with_content(Content::image_url("image/png", "https://example.com/map.png")),
        Message::new(
            Role::Assistant,
            vec![
                Content::provider_data(
                    "openai.responses",
                    json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB"}),
                ),
                Content::text("Let me check both."),
                Content::tool_call("call_A", "get_weather", json!({"city": "Paris"})),
                Content::tool_call("call_B", "get_weather", json!({"city": "Rome"})),
            ],
        ),
        Message::tool_results(vec![
            Content::tool_result("call_A", vec![Content::text("18°C, sunny")], false),
            Content::tool_result("call_B", vec![Content::text("station offline")], true),
        ]),
        Message::user("Summarize."),
    ])
    .with_system("You are terse.")
    .with_tools(vec![weather_spec()])
    .with_tool_choice(ToolChoice::Tool("get_weather".into()))
    .with_parallel_tool_calls(false)
    .with_temperature(0.2)
    .with_max_tokens(300)
    .with_stop(vec!["END".into()])
    .with_extra("reasoning", json!({"effort": "low"}));

    let r = server.provider().complete(request).await.unwrap();
    assert_eq!(r.text(), "Il fait beau.");
    assert_eq!(server.seen()[0].path, "/v1/responses");
    assert_eq!(
        server.header(0, "authorization").as_deref(),
        Some("Bearer sk-test")
    );
    assert_eq!(
        server.body(0),
        json!({
            "model": "gpt-5-mini",
            "instructions": "You are terse.",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "Weather in Paris and Rome?"},
                    {"type": "input_image", "image_url": "https://example.com/map.png"},
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB"},
                {"role": "assistant", "content": "Let me check both."},
                {"type": "function_call", "call_id": "call_A", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_B", "name": "get_weather", "arguments": "{\"city\":\"Rome\"}"},
                {"type": "function_call_output", "call_id": "call_A", "output": "18°C, sunny"},
                {"type": "function_call_output", "call_id": "call_B", "output": "station offline"},
                {"role": "user", "content": "Summarize."},
            ],
            "tools": [{"type": "function", "name": "get_weather", "description": "Current weather of a city",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                       "strict": false}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": false,
            "temperature": 0.2,
            "max_output_tokens": 300,
            "store": false,
            "include": ["reasoning.encrypted_content"],
            "reasoning": {"effort": "low"},
        })
    );
}

#[tokio::test]
async fn answer_with_reasoning_and_calls_reports_usage_and_keeps_the_reasoning_item() {
    let server = Mock::start(vec![Reply::ok(response(
        json!([
            reasoning("rs_abc", "gAAAAABoISQ24OyVRYbkYfukuA"),
            function_call("call_P", "get_weather", "{\"city\":\"Paris\"}"),
            function_call("call_R", "get_weather", "{\"city\":\"Rome\"}"),
        ]),
        usage(2000, 1536, 300, 256),
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
    assert_eq!(r.model, "gpt-5-mini-2025-08-07");
    assert_eq!(
        r.id.as_deref(),
        Some("resp_67ccd2bed1ec8190b14f964abc054267")
    );
    assert_eq!(
        r.usage,
        Usage::new(464, 300).with_cache(1536, 0).with_reasoning(256)
    );
    assert_eq!(
        r.message.content[0],
        Content::provider_data(
            "openai.responses",
            json!({"type": "reasoning", "id": "rs_abc",
                   "summary": [{"type": "summary_text", "text": "Need the weather."}],
                   "encrypted_content": "gAAAAABoISQ24OyVRYbkYfukuA"})
        ),
        "kept without its output-only `status`"
    );
    let calls: Vec<_> = r
        .message
        .tool_calls()
        .map(|(id, _, a)| (id, a.clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("call_P", json!({"city": "Paris"})),
            ("call_R", json!({"city": "Rome"}))
        ]
    );
    // Cached input at gpt-5-mini's cached rate.
    let cost = agentkit_core::PriceTable::default().cost(&r.model, &r.usage);
    let expected = (464.0 * 0.25 + 1536.0 * 0.025 + 300.0 * 2.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
}

#[tokio::test]
async fn streamed_events_are_reassembled() {
    let server = Mock::start(vec![Reply::sse(&[
        json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "model": "gpt-5-mini-2025-08-07", "output": []}}),
        json!({"type": "response.in_progress", "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": reasoning("rs_1", "ENC1")}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "Let me"}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": " check."}),
        json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 1, "content_index": 0, "text": "Let me check."}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": message("Let me check.")}),
        json!({"type": "response.output_item.added", "output_index": 2, "item": {"type": "function_call", "id": "fc_1", "call_id": "call_O", "name": "get_weather", "arguments": "", "status": "in_progress"}}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": "{\"city\":"}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 2, "delta": "\"Oslo\"}"}),
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 2, "arguments": "{\"city\":\"Oslo\"}"}),
        json!({"type": "response.output_item.done", "output_index": 2, "item": function_call("call_O", "get_weather", "{\"city\":\"Oslo\"}")}),
        json!({"type": "response.completed", "response": response(json!([]), usage(100, 0, 40, 16))}),
    ])])
    .await;
    let stream = server
        .provider()
        .stream(
            CompletionRequest::new(vec![Message::user("Oslo?")]).with_tools(vec![weather_spec()]),
        )
        .await
        .unwrap();
    let r = collect_stream("openai", stream).await.unwrap();
    assert_eq!(server.body(0)["stream"], true);
    assert_eq!(r.text(), "Let me check.");
    assert_eq!(
        r.message.tool_calls().collect::<Vec<_>>(),
        vec![("call_O", "get_weather", &json!({"city": "Oslo"}))]
    );
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.usage, Usage::new(100, 40).with_reasoning(16));
    assert_eq!(r.model, "gpt-5-mini-2025-08-07");
    assert!(
        matches!(&r.message.content[0], Content::ProviderData { data, .. } if data["encrypted_content"] == "ENC1")
    );
}

#[tokio::test]
async fn failed_error_and_truncated_streams_are_errors() {
    let server = Mock::start(vec![
        Reply::sse(&[
            json!({"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}}),
            json!({"type": "response.output_text.delta", "output_index": 0, "delta": "Hel"}),
        ]),
        Reply::sse(&[
            json!({"type": "response.created", "response": {"id": "r", "status": "in_progress", "output": []}}),
            json!({"type": "response.failed", "response": {"id": "r", "status": "failed", "output": [],
                   "error": {"code": "server_error", "message": "The model failed to generate a response."}}}),
        ]),
        Reply::sse(&[json!({"type": "error", "code": "rate_limit_exceeded", "message": "Rate limit reached for gpt-5-mini.", "param": null})]),
        Reply::Sse(vec!["event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"del".into()]),
    ])
    .await;
    let p = server.provider();
    let err = collect_stream("openai", p.stream(common::hi()).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Stream));
    assert!(err.to_string().contains("response.completed"), "{err}");

    let err = collect_stream("openai", p.stream(common::hi()).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Server));
    assert!(err.to_string().contains("failed to generate"), "{err}");

    let err = collect_stream("openai", p.stream(common::hi()).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::RateLimited));
    assert!(err.is_retryable());

    let err = collect_stream("openai", p.stream(common::hi()).await.unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.provider_kind(),
            Some(ProviderErrorKind::Stream | ProviderErrorKind::Decode)
        ),
        "{err}"
    );
}

#[derive(Deserialize, JsonSchema)]
struct City {
    city: String,
}

#[tokio::test]
async fn agent_loop_sends_the_reasoning_item_back_with_the_tool_output() {
    let server = Mock::start(vec![
        Reply::ok(response(
            json!([
                reasoning("rs_loop", "ENCRYPTED"),
                function_call("call_L", "weather", "{\"city\":\"Lisbon\"}")
            ]),
            usage(300, 0, 40, 32),
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
    assert_eq!(server.requests(), 2);
    assert_eq!(
        server.body(1)["input"],
        json!([
            {"role": "user", "content": "Weather in Lisbon?"},
            {"type": "reasoning", "id": "rs_loop",
             "summary": [{"type": "summary_text", "text": "Need the weather."}], "encrypted_content": "ENCRYPTED"},
            {"type": "function_call", "call_id": "call_L", "name": "weather", "arguments": "{\"city\":\"Lisbon\"}"},
            {"type": "function_call_output", "call_id": "call_L", "output": "18°C and sunny in Lisbon"},
        ])
    );
    assert_eq!(
        server.body(1)["instructions"],
        "You answer weather questions."
    );
}

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Forecast {
    city: String,
    celsius: i32,
}

#[tokio::test]
async fn generate_structured_sends_text_format_json_schema() {
    let server = Mock::start(vec![text_reply("{\"city\":\"Lisbon\",\"celsius\":18}")]).await;
    let agent = AgentLlm::new(
        Agent::new("forecaster", "You produce forecasts."),
        server.provider(),
    );
    let f: Forecast = agent
        .generate_structured("Forecast for Lisbon", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(
        f,
        Forecast {
            city: "Lisbon".into(),
            celsius: 18
        }
    );
    let format = &server.body(0)["text"]["format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["name"], "Forecast");
    assert_eq!(format["schema"]["properties"]["celsius"]["type"], "integer");

    let server = Mock::start(vec![text_reply("{}")]).await;
    let request = common::hi().with_response_format(
        ResponseFormat::new(
            "Answer",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        )
        .with_strict(true),
    );
    server.provider().complete(request).await.unwrap();
    assert_eq!(
        server.body(0)["text"],
        json!({"format": {"type": "json_schema", "name": "Answer", "strict": true,
                          "schema": {"type": "object", "properties": {}, "additionalProperties": false}}})
    );
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_succeeds_and_bad_bodies_fail_clearly() {
    let server = Mock::start(vec![
        Reply::error(429, "requests", "rate_limit_exceeded", "Rate limit reached for gpt-5-mini")
            .with_header("retry-after", "0.3"),
        text_reply("made it"),
        Reply::Raw(200, "{\"id\": \"resp_1\", \"output\": [{\"type\": \"mess"),
        Reply::ok(json!({"id": "r", "status": "completed", "output": [{"type": "function_call", "name": 7}]})),
    ])
    .await;
    let provider = ProviderBuilder::new(server.provider())
        .retry(
            RetryConfig::new()
                .with_max_retries(2)
                .with_initial_backoff(Duration::from_secs(600)),
        )
        .build();
    let started = Instant::now();
    assert_eq!(
        provider.complete(common::hi()).await.unwrap().text(),
        "made it"
    );
    assert_eq!(server.requests(), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let err = provider.complete(common::hi()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    let err = provider.complete(common::hi()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    assert!(err.to_string().contains("output item 0"), "{err}");
    assert_eq!(server.requests(), 4, "decode errors are not retried");
}

#[tokio::test]
async fn non_reasoning_models_are_not_asked_for_encrypted_content() {
    let server = Mock::start(vec![text_reply("hi"), text_reply("hi"), text_reply("hi")]).await;
    let p = server.provider();
    p.complete(common::hi().with_model("gpt-4.1"))
        .await
        .unwrap();
    assert_eq!(server.body(0)["store"], false);
    assert!(server.body(0).get("include").is_none());
    p.complete(common::hi().with_model("o4-mini"))
        .await
        .unwrap();
    assert_eq!(
        server.body(1)["include"],
        json!(["reasoning.encrypted_content"])
    );
    // `extra` overrides the guess.
    p.complete(common::hi().with_extra("include", json!([])))
        .await
        .unwrap();
    assert_eq!(server.body(2)["include"], json!([]));
}

#[test]
fn api_responses_in_the_config_selects_the_responses_api() {
    let yaml = "openai:\n  api_key: k\n  api: responses\n  base_url: http://127.0.0.1:9/v1\n";
    let config = agentkit_core::Config::from_yaml_str(yaml, None).unwrap();
    assert_eq!(
        config.openai.as_ref().unwrap().api,
        Some(OpenAiApi::Responses)
    );
    let p = OpenAiProvider::from_settings(&config.openai_settings()).unwrap();
    assert_eq!(p.config().api, OpenAiApi::Responses);
    assert!(!p.config().store);
    let err =
        agentkit_core::Config::from_yaml_str("openai:\n  api: assistants\n", None).unwrap_err();
    assert!(err.to_string().contains("api"), "{err}");
}
