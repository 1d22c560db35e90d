//! `GeminiProvider` against a local server that speaks the Gemini API wire format.
#![cfg(feature = "gemini")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use agentkit_core::provider::gemini::{GeminiConfig, GeminiProvider};
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

// ---------------------------------------------------------------------------------------------
// Replies as the Gemini API sends them.

#[derive(Clone)]
enum Reply {
    Json(u16, Value, Vec<(&'static str, String)>),
    /// `data:` events, delivered in 13-byte pieces so events straddle reads.
    Sse(Vec<String>),
    Raw(u16, &'static str),
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self::Json(200, body, Vec::new())
    }

    fn error(code: u16, status: &str, message: &str) -> Self {
        Self::Json(
            code,
            json!({"error": {"code": code, "message": message, "status": status}}),
            Vec::new(),
        )
    }

    fn sse(events: &[Value]) -> Self {
        Self::Sse(
            events
                .iter()
                .map(|e| format!("data: {e}\r\n\r\n"))
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
            Self::Sse(frames) => common::sse_response(frames, Some(13)),
            Self::Raw(status, body) => {
                (StatusCode::from_u16(status).unwrap(), body).into_response()
            }
        }
    }
}

struct MockGemini(MockServer);

impl std::ops::Deref for MockGemini {
    type Target = MockServer;
    fn deref(&self) -> &MockServer {
        &self.0
    }
}

impl MockGemini {
    async fn start(replies: Vec<Reply>) -> Self {
        Self(MockServer::queued(replies).await)
    }

    fn config(&self) -> GeminiConfig {
        GeminiConfig::compatible(format!("{}/v1beta", self.url), "AIza-test-key")
            .with_timeout(Duration::from_secs(10))
    }

    fn provider(&self) -> GeminiProvider {
        GeminiProvider::new(self.config()).unwrap()
    }
}

fn usage(prompt: u64, candidates: u64) -> Value {
    json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates,
           "totalTokenCount": prompt + candidates,
           "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]})
}

fn answer(parts: Value, finish: &str, usage: Value) -> Value {
    json!({
        "candidates": [{
            "content": {"parts": parts, "role": "model"},
            "finishReason": finish,
            "index": 0,
        }],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "mJ1yaKzQBcXrz7IPlbz5qQ4",
    })
}

fn text_reply(text: &str) -> Reply {
    Reply::ok(answer(json!([{"text": text}]), "STOP", usage(20, 8)))
}

fn weather_spec() -> ToolSpec {
    ToolSpec::new(
        "get_weather",
        "Current weather of a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
               "additionalProperties": false}),
    )
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[tokio::test]
async fn request_carries_key_system_contents_tools_and_generation_config() {
    let server = MockGemini::start(vec![text_reply("Il fait beau.")]).await;
    let request = CompletionRequest::new(vec![
        Message::user("Weather in Paris and Rome?")
            .with_content(Content::image_base64("image/png", "iVBORw0KGgo=")),
        Message::new(
            Role::Assistant,
            vec![
                Content::provider_data(
                    "gemini",
                    json!({"thoughtSignature": "CiQBVKhc7sig", "part": "functionCall"}),
                ),
                Content::text("Let me check both."),
                Content::tool_call("call-paris", "get_weather", json!({"city": "Paris"})),
                Content::tool_call("gemini-call-x", "get_weather", json!({"city": "Rome"})),
            ],
        ),
        Message::tool_results(vec![
            Content::tool_result("call-paris", vec![Content::text("18°C, sunny")], false),
            Content::tool_result(
                "gemini-call-x",
                vec![Content::text("station offline")],
                true,
            ),
        ]),
        Message::system("Answer in French."),
        Message::user("Summarize."),
    ])
    .with_model("gemini-2.5-pro")
    .with_system("You are terse.")
    .with_tools(vec![weather_spec()])
    .with_tool_choice(ToolChoice::Required)
    .with_stop(vec!["END".into()])
    .with_temperature(0.3)
    .with_max_tokens(512)
    .with_extra("thinkingConfig", json!({"thinkingBudget": 1024}))
    .with_extra(
        "safetySettings",
        json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]),
    );

    let r = server.provider().complete(request).await.unwrap();
    assert_eq!(r.text(), "Il fait beau.");

    let seen = &server.seen()[0];
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(seen.query, None);
    assert_eq!(
        server.header(0, "x-goog-api-key").as_deref(),
        Some("AIza-test-key")
    );
    assert!(
        server.header(0, "authorization").is_none(),
        "the key is never in a bearer header"
    );
    assert_eq!(
        server.body(0),
        json!({
            "systemInstruction": {"parts": [{"text": "You are terse.\n\nAnswer in French."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Paris and Rome?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                ]},
                {"role": "model", "parts": [
                    {"text": "Let me check both."},
                    {"functionCall": {"id": "call-paris", "name": "get_weather", "args": {"city": "Paris"}},
                     "thoughtSignature": "CiQBVKhc7sig"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"id": "call-paris", "name": "get_weather",
                                          "response": {"output": "18°C, sunny"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"error": "station offline"}}},
                    {"text": "Summarize."},
                ]},
            ],
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Current weather of a city",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
            }]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {
                "temperature": 0.3,
                "maxOutputTokens": 512,
                "stopSequences": ["END"],
                "thinkingConfig": {"thinkingBudget": 1024},
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Answers.

#[tokio::test]
async fn text_answer_reports_model_id_usage_and_finish_reasons() {
    let server = MockGemini::start(vec![
        Reply::ok(answer(
            json!([{"text": "Paris."}]),
            "STOP",
            json!({"promptTokenCount": 1000, "cachedContentTokenCount": 800,
                   "candidatesTokenCount": 3, "thoughtsTokenCount": 40, "totalTokenCount": 1043}),
        )),
        Reply::ok(answer(json!([{"text": "Par"}]), "MAX_TOKENS", usage(5, 1))),
        Reply::ok(answer(json!([]), "SAFETY", usage(5, 0))),
        Reply::ok(answer(json!([]), "MALFORMED_FUNCTION_CALL", usage(5, 0))),
        Reply::ok(
            json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                         "usageMetadata": usage(5, 0), "modelVersion": "gemini-2.5-flash"}),
        ),
    ])
    .await;
    let p = server.provider();
    let r = p.complete(common::hi()).await.unwrap();
    assert_eq!(r.text(), "Paris.");
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(r.model, "gemini-2.5-flash");
    assert_eq!(r.id.as_deref(), Some("mJ1yaKzQBcXrz7IPlbz5qQ4"));
    assert_eq!(
        r.usage,
        Usage::new(200, 43).with_cache(800, 0).with_reasoning(40)
    );
    // Cached input at a tenth of gemini-2.5-flash's $0.30/Mtok; thoughts at the output price.
    let cost = agentkit_core::PriceTable::default().cost(&r.model, &r.usage);
    let expected = (200.0 * 0.30 + 800.0 * 0.03 + 43.0 * 2.50) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");

    let reasons = [
        StopReason::MaxTokens,
        StopReason::ContentFilter,
        StopReason::Other("malformed_function_call".into()),
        StopReason::ContentFilter,
    ];
    for expected in reasons {
        assert_eq!(
            p.complete(common::hi()).await.unwrap().stop_reason,
            expected
        );
    }
}

#[tokio::test]
async fn parallel_function_calls_come_back_as_tool_calls_with_their_signature() {
    let server = MockGemini::start(vec![Reply::ok(answer(
        json!([
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sigP"},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
        ]),
        "STOP",
        usage(80, 20),
    ))])
    .await;
    let r = server
        .provider()
        .complete(common::hi().with_tools(vec![weather_spec()]))
        .await
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    let calls: Vec<_> = r
        .message
        .tool_calls()
        .map(|(_, n, a)| (n, a.clone()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("get_weather", json!({"city": "Paris"})),
            ("get_weather", json!({"city": "Rome"})),
        ]
    );
    let ids: Vec<&str> = r.message.tool_calls().map(|c| c.0).collect();
    assert_ne!(ids[0], ids[1], "made-up ids are distinct");
    assert!(
        matches!(&r.message.content[0], Content::ProviderData { format, data }
        if format == "gemini" && data["thoughtSignature"] == "sigP")
    );
}

// ---------------------------------------------------------------------------------------------
// Streaming.

#[tokio::test]
async fn streamed_text_and_calls_are_reassembled() {
    let server = MockGemini::start(vec![Reply::sse(&[
        json!({"candidates": [{"content": {"parts": [{"text": "Let me"}], "role": "model"}, "index": 0}],
               "usageMetadata": usage(50, 2), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
        json!({"candidates": [{"content": {"parts": [{"text": " check."}], "role": "model"}, "index": 0}],
               "usageMetadata": usage(50, 4), "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
        json!({"candidates": [{"content": {"parts": [
                  {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "sigO"},
                  {"functionCall": {"name": "get_weather", "args": {"city": "Bergen"}}}],
               "role": "model"}, "finishReason": "STOP", "index": 0}],
               "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 30, "thoughtsTokenCount": 12,
                                 "totalTokenCount": 92},
               "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
    ])])
    .await;
    let stream = server
        .provider()
        .stream(common::hi().with_tools(vec![weather_spec()]))
        .await
        .unwrap();
    let r = collect_stream("google", stream).await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(
        seen.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(seen.query.as_deref(), Some("alt=sse"));
    assert_eq!(
        server.header(0, "accept").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(r.text(), "Let me check.");
    assert_eq!(r.message.tool_calls().count(), 2);
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.usage, Usage::new(50, 42).with_reasoning(12));
    assert_eq!(
        r.message.content[0],
        Content::provider_data(
            "gemini",
            json!({"thoughtSignature": "sigO", "part": "functionCall"})
        )
    );
}

#[tokio::test]
async fn a_stream_cut_before_a_finish_reason_is_a_stream_error() {
    let server = MockGemini::start(vec![
        Reply::sse(&[json!({"candidates": [{"content": {"parts": [{"text": "The answer is"}], "role": "model"}, "index": 0}]})]),
        Reply::Sse(vec!["data: {\"candidates\": [{\"content\": {\"parts\": [{\"te".into()]),
        Reply::sse(&[
            json!({"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}]}),
            json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
        ]),
    ])
    .await;
    let p = server.provider();
    let err = collect_stream("google", p.stream(common::hi()).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Stream));
    assert!(err.to_string().contains("finishReason"), "{err}");

    let err = collect_stream("google", p.stream(common::hi()).await.unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.provider_kind(),
            Some(ProviderErrorKind::Stream | ProviderErrorKind::Decode)
        ),
        "{err}"
    );

    let err = collect_stream("google", p.stream(common::hi()).await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Overloaded));
    assert!(err.is_retryable());
    assert!(err.to_string().contains("overloaded"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The agent loop and structured output over HTTP.

#[derive(Deserialize, JsonSchema)]
struct City {
    city: String,
}

#[tokio::test]
async fn agent_tool_round_trip_sends_the_signature_back() {
    let server = MockGemini::start(vec![
        Reply::ok(answer(
            json!([{"functionCall": {"name": "weather", "args": {"city": "Lisbon"}},
                    "thoughtSignature": "EtQBCtEBAdHtim9sig"}]),
            "STOP",
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
    assert_eq!(server.requests(), 2);
    let first = server.body(0);
    assert_eq!(
        first["systemInstruction"]["parts"][0]["text"],
        "You answer weather questions."
    );
    assert_eq!(
        first["tools"][0]["functionDeclarations"][0]["parameters"]["properties"]["city"]["type"],
        "STRING"
    );
    assert_eq!(
        server.body(1)["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Lisbon?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Lisbon"}},
                 "thoughtSignature": "EtQBCtEBAdHtim9sig"},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "weather", "response": {"output": "18°C and sunny in Lisbon"}}},
            ]},
        ])
    );
}

#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Forecast {
    city: String,
    celsius: i32,
    sunny: bool,
    note: Option<String>,
}

#[tokio::test]
async fn generate_structured_sends_a_response_schema() {
    let server = MockGemini::start(vec![Reply::ok(answer(
        json!([{"text": "{\"city\": \"Lisbon\", \"celsius\": 18, \"sunny\": true, \"note\": null}"}]),
        "STOP",
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
            sunny: true,
            note: None
        }
    );
    let body = server.body(0);
    let config = &body["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert_eq!(
        config["responseSchema"],
        json!({
            "title": "Forecast",
            "type": "OBJECT",
            "properties": {
                "city": {"type": "STRING"},
                "celsius": {"type": "INTEGER", "format": "int32"},
                "sunny": {"type": "BOOLEAN"},
                "note": {"type": "STRING", "nullable": true},
            },
            "required": ["city", "celsius", "sunny"],
        })
    );
    assert!(body.get("tools").is_none());
}

#[tokio::test]
async fn structured_output_streams_as_json_text() {
    let server = MockGemini::start(vec![Reply::sse(&[
        json!({"candidates": [{"content": {"parts": [{"text": "{\"city\": \"Lis"}], "role": "model"}, "index": 0}]}),
        json!({"candidates": [{"content": {"parts": [{"text": "bon\", \"celsius\": 18, \"sunny\": true}"}], "role": "model"},
               "finishReason": "STOP", "index": 0}], "usageMetadata": usage(40, 12)}),
    ])])
    .await;
    let request = common::hi().with_response_format(ResponseFormat::new(
        "Forecast",
        agentkit_core::schema::schema_value::<Forecast>(),
    ));
    let r = collect_stream("google", server.provider().stream(request).await.unwrap())
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(v["city"], "Lisbon");
    assert_eq!(
        server.body(0)["generationConfig"]["responseMimeType"],
        "application/json"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors and retries.

#[tokio::test]
async fn rate_limit_waits_for_retry_after_then_succeeds() {
    let server = MockGemini::start(vec![
        Reply::error(
            429,
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        )
        .with_header("retry-after", "0.3"),
        text_reply("made it"),
    ])
    .await;
    // A long backoff: only the server's Retry-After can make the retry come this soon.
    let provider = ProviderBuilder::new(server.provider())
        .retry(
            RetryConfig::new()
                .with_max_retries(2)
                .with_initial_backoff(Duration::from_secs(600)),
        )
        .build();
    let started = Instant::now();
    let r = provider.complete(common::hi()).await.unwrap();
    assert_eq!(r.text(), "made it");
    assert_eq!(server.requests(), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn rate_limit_without_header_reads_retry_info() {
    let server = MockGemini::start(vec![Reply::Json(
        429,
        json!({"error": {"code": 429, "message": "You exceeded your current quota.",
            "status": "RESOURCE_EXHAUSTED", "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "39s"}]}}),
        Vec::new(),
    )])
    .await;
    let err = server.provider().complete(common::hi()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::RateLimited));
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(39)));
    assert!(
        err.to_string().contains("exceeded your current quota"),
        "{err}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_bad_requests_are_not() {
    let server = MockGemini::start(vec![
        Reply::error(
            503,
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        Reply::error(500, "INTERNAL", "An internal error has occurred."),
        text_reply("back"),
        Reply::error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."),
        Reply::error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
        ),
        Reply::error(
            404,
            "NOT_FOUND",
            "models/gemini-9 is not found for API version v1beta",
        ),
    ])
    .await;
    let retrying = common::retrying(server.provider());
    assert_eq!(
        retrying.complete(common::hi()).await.unwrap().text(),
        "back"
    );
    assert_eq!(server.requests(), 3);

    let err = retrying.complete(common::hi()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::BadRequest));
    assert_eq!(server.requests(), 4, "not retried");

    let err = retrying.complete(common::hi()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Auth));
    assert!(err.to_string().contains("GEMINI_API_KEY"), "{err}");

    let err = retrying
        .complete(common::hi().with_model("gemini-9"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("model name"), "{err}");
}

#[tokio::test]
async fn malformed_json_is_a_decode_error() {
    let server = MockGemini::start(vec![Reply::Raw(200, r#"{"candidates": [{"content": "#)]).await;
    let err = server.provider().complete(common::hi()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    assert!(err.to_string().contains("Gemini"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[test]
fn a_google_or_gemini_section_builds_the_gemini_provider() {
    for yaml in [
        "google:\n  api_key: k\n  default_model: gemini-2.5-pro\n",
        "gemini:\n  api_key: k\n  default_model: gemini-2.5-pro\n",
    ] {
        let config = agentkit_core::Config::from_yaml_str(yaml, None).unwrap();
        let p = agentkit_core::provider::from_config(&config)
            .unwrap()
            .unwrap();
        assert_eq!(p.name(), "google");
        assert_eq!(p.default_model(), Some("gemini-2.5-pro"));
    }
    use agentkit_core::config::ProviderKind;
    assert_eq!(
        ProviderKind::from_prefix("gemini"),
        Some(ProviderKind::Google)
    );
    assert_eq!(
        ProviderKind::from_prefix("google"),
        Some(ProviderKind::Google)
    );
    let kind: ProviderKind = serde_json::from_value(json!("gemini")).unwrap();
    assert_eq!(kind, ProviderKind::Google);
}
