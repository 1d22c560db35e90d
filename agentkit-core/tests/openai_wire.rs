//! The OpenAI provider against a local HTTP server that speaks the Chat Completions and
//! Embeddings wire formats (bodies and `data:` lines as api.openai.com sends them).
#![cfg(feature = "openai")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::time::{Duration, Instant};

use agentkit_core::provider::openai::{OpenAiConfig, OpenAiEmbedder, OpenAiProvider};
use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CompletionChunk, CompletionRequest, Content,
    Embedder, FnTool, LlmProvider, Message, ProviderBuilder, ProviderErrorKind, ResponseFormat,
    RetryConfig, Role, RunContext, StopReason, ToolChoice, ToolSpec, Usage, collect_stream,
};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The shared local server, pointed at by an OpenAI configuration.

mod common;
use common::{MockServer as Mock, json_reply};

trait OpenAiMock {
    fn base(&self) -> String;
    fn config(&self) -> OpenAiConfig;
    fn provider(&self) -> OpenAiProvider;
}

impl OpenAiMock for Mock {
    fn base(&self) -> String {
        format!("{}/v1", self.url)
    }

    fn config(&self) -> OpenAiConfig {
        OpenAiConfig::compatible(self.base(), "sk-test")
    }

    fn provider(&self) -> OpenAiProvider {
        OpenAiProvider::new(self.config()).unwrap()
    }
}

/// An SSE body: each event as a `data:` line, as OpenAI writes them.
fn sse(events: Vec<String>) -> Response {
    common::sse_response(
        events
            .into_iter()
            .map(|e| format!("data: {e}\n\n"))
            .collect(),
        None,
    )
}

const MODEL: &str = "gpt-4.1-mini-2025-04-14";

/// A complete `chat.completion` object with this message and finish reason.
fn completion(message: Value, finish_reason: &str, usage: Value) -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1_741_570_283,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035"
    })
}

fn usage(prompt: u64, cached: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

fn text_message(text: &str) -> Value {
    json!({"role": "assistant", "content": text, "refusal": null, "annotations": []})
}

fn text_completion(text: &str) -> Value {
    completion(text_message(text), "stop", usage(20, 0, 5))
}

/// One `chat.completion.chunk` event with this delta.
fn chunk(delta: Value, finish_reason: Value) -> String {
    json!({
        "id": "chatcmpl-stream1",
        "object": "chat.completion.chunk",
        "created": 1_741_570_300,
        "model": MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null
    })
    .to_string()
}

/// The final usage-only chunk sent because of `stream_options.include_usage`.
fn usage_chunk(prompt: u64, cached: u64, completion: u64) -> String {
    json!({
        "id": "chatcmpl-stream1",
        "object": "chat.completion.chunk",
        "created": 1_741_570_300,
        "model": MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
        "choices": [],
        "usage": usage(prompt, cached, completion)
    })
    .to_string()
}

fn text_stream_events(parts: &[&str]) -> Vec<String> {
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for p in parts {
        events.push(chunk(json!({"content": p}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    events.push(usage_chunk(30, 10, parts.len() as u64));
    events.push("[DONE]".to_owned());
    events
}

fn weather_tool() -> ToolSpec {
    ToolSpec::new(
        "get_weather",
        "Current weather of a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    )
}

// ---------------------------------------------------------------------------------------------
// The request

#[tokio::test]
async fn request_carries_every_field_in_the_openai_shape() {
    let mock = Mock::start(|_, _| json_reply(StatusCode::OK, text_completion("ok"))).await;
    let provider = OpenAiProvider::new(
        mock.config()
            .with_organization("org-123")
            .with_project("proj_abc")
            .with_header("x-custom", "yes")
            .with_query("api-version", "2024-10-21"),
    )
    .unwrap();

    let conversation = vec![
        Message::new(
            Role::User,
            vec![
                Content::text("What is in this picture, and what's the weather in Paris?"),
                Content::image_base64("image/png", "iVBORw0KGgo="),
                Content::image_url("image/jpeg", "https://example.com/cat.jpg"),
            ],
        ),
        Message::new(
            Role::Assistant,
            vec![
                Content::text("Let me check."),
                Content::tool_call("call_1", "get_weather", json!({"city": "Paris"})),
                Content::tool_call("call_2", "get_weather", json!({"city": "Lyon"})),
            ],
        ),
        Message::tool_results(vec![
            Content::tool_result(
                "call_1",
                vec![Content::text("18°C"), Content::text("sunny")],
                false,
            ),
            Content::tool_result("call_2", vec![Content::text("no data")], true),
        ]),
    ];
    let request = CompletionRequest::new(conversation)
        .with_model("gpt-4o")
        .with_system("You are terse.")
        .with_tools(vec![weather_tool()])
        .with_tool_choice(ToolChoice::Tool("get_weather".into()))
        .with_temperature(0.2)
        .with_max_tokens(256)
        .with_stop(vec!["END".into()])
        .with_parallel_tool_calls(false)
        .with_response_format(
            ResponseFormat::new("answer", json!({"type": "object"})).with_strict(true),
        )
        .with_extra("seed", json!(7))
        .with_extra("metadata", json!({"run": "r1"}));
    provider.complete(request).await.unwrap();

    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(req.headers["authorization"], "Bearer sk-test");
    assert_eq!(req.headers["openai-organization"], "org-123");
    assert_eq!(req.headers["openai-project"], "proj_abc");
    assert_eq!(req.headers["x-custom"], "yes");
    assert!(
        req.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );

    let b = &req.body;
    assert_eq!(b["model"], "gpt-4o");
    assert_eq!(
        b["messages"],
        json!([
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and what's the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C\nsunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "no data"}
        ])
    );
    assert_eq!(
        b["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }}])
    );
    assert_eq!(
        b["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(b["temperature"], json!(0.2));
    assert_eq!(b["max_completion_tokens"], 256);
    assert!(b.get("max_tokens").is_none());
    assert_eq!(b["stop"], json!(["END"]));
    assert_eq!(b["parallel_tool_calls"], false);
    assert_eq!(
        b["response_format"],
        json!({"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}, "strict": true
        }})
    );
    assert_eq!(b["seed"], 7);
    assert_eq!(b["metadata"], json!({"run": "r1"}));
    assert!(b.get("stream").is_none());
    assert!(b.get("stream_options").is_none());
}

#[tokio::test]
async fn a_plain_request_sends_only_what_it_needs() {
    let mock = Mock::start(|_, _| json_reply(StatusCode::OK, text_completion("ok"))).await;
    // A keyless local server with an old `max_tokens` API and a configured default model.
    let provider = OpenAiProvider::new(
        OpenAiConfig::default()
            .with_base_url(mock.base())
            .with_default_model("llama3.2")
            .with_legacy_max_tokens(true),
    )
    .unwrap();
    provider
        .complete(
            CompletionRequest::new(vec![Message::user("hi")])
                .with_max_tokens(10)
                .with_parallel_tool_calls(true),
        )
        .await
        .unwrap();
    let req = &mock.seen()[0];
    assert!(req.headers.get("authorization").is_none());
    assert_eq!(
        req.body,
        json!({
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10
        })
    );
}

// ---------------------------------------------------------------------------------------------
// Non-streamed answers

#[tokio::test]
async fn text_answer_with_cached_usage_model_and_id() {
    let mock = Mock::start(|_, _| {
        json_reply(
            StatusCode::OK,
            completion(
                text_message("Paris is the capital of France."),
                "stop",
                usage(1117, 1024, 46),
            ),
        )
    })
    .await;
    let r = mock
        .provider()
        .complete(CompletionRequest::new(vec![Message::user(
            "Capital of France?",
        )]))
        .await
        .unwrap();
    assert_eq!(mock.seen()[0].body["model"], "gpt-4.1-mini");
    assert_eq!(r.text(), "Paris is the capital of France.");
    assert_eq!(r.message.role, Role::Assistant);
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert_eq!(r.usage, Usage::new(93, 46).with_cache(1024, 0));
    assert_eq!(r.model, MODEL);
    assert_eq!(
        r.id.as_deref(),
        Some("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG")
    );
}

#[tokio::test]
async fn parallel_tool_calls_in_one_response() {
    let mock = Mock::start(|_, _| {
        json_reply(
            StatusCode::OK,
            completion(
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [
                        {"id": "call_abc", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                        {"id": "call_def", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Tokyo\"}"}}
                    ],
                    "refusal": null,
                    "annotations": []
                }),
                "tool_calls",
                usage(80, 0, 40),
            ),
        )
    })
    .await;
    let r = mock
        .provider()
        .complete(
            CompletionRequest::new(vec![Message::user("Weather in Paris and Tokyo?")])
                .with_tools(vec![weather_tool()]),
        )
        .await
        .unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.text(), "");
    let calls: Vec<_> = r.message.tool_calls().collect();
    assert_eq!(
        calls,
        vec![
            ("call_abc", "get_weather", &json!({"city": "Paris"})),
            ("call_def", "get_weather", &json!({"city": "Tokyo"})),
        ]
    );
}

#[tokio::test]
async fn invalid_tool_arguments_are_a_decode_error_naming_the_tool() {
    let mock = Mock::start(|_, _| {
        json_reply(
            StatusCode::OK,
            completion(
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Par"}}
                ]}),
                "tool_calls",
                usage(10, 0, 10),
            ),
        )
    })
    .await;
    let err = mock
        .provider()
        .complete(CompletionRequest::new(vec![Message::user("weather?")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    assert!(err.to_string().contains("get_weather"), "{err}");
}

#[tokio::test]
async fn refusal_and_other_finish_reasons_map_to_stop_reasons() {
    let mock = Mock::start(|n, _| {
        let body = match n {
            0 => completion(
                json!({"role": "assistant", "content": null,
                       "refusal": "I'm sorry, I cannot help with that."}),
                "stop",
                usage(10, 0, 9),
            ),
            1 => completion(text_message("The answer is"), "length", usage(10, 0, 3)),
            _ => completion(text_message(""), "content_filter", usage(10, 0, 0)),
        };
        json_reply(StatusCode::OK, body)
    })
    .await;
    let p = mock.provider();
    let ask = || CompletionRequest::new(vec![Message::user("x")]);
    let r = p.complete(ask()).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::Refusal);
    assert_eq!(r.text(), "I'm sorry, I cannot help with that.");
    let r = p.complete(ask()).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::MaxTokens);
    let r = p.complete(ask()).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::ContentFilter);
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[tokio::test]
async fn streamed_text_is_reassembled_with_usage_from_the_final_chunk() {
    let mock = Mock::start(|_, _| sse(text_stream_events(&["Hel", "lo", ", world"]))).await;
    let p = mock.provider();
    let stream = p
        .stream(CompletionRequest::new(vec![Message::user("greet")]))
        .await
        .unwrap();
    let chunks: Vec<CompletionChunk> = stream.map(Result::unwrap).collect().await;
    let texts: Vec<&str> = chunks
        .iter()
        .filter_map(|c| match c {
            CompletionChunk::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["Hel", "lo", ", world"]);
    assert!(matches!(
        chunks.last(),
        Some(CompletionChunk::Finish { usage, stop_reason: StopReason::EndTurn, model })
            if *usage == Usage::new(20, 3).with_cache(10, 0) && model == MODEL
    ));

    let body = &mock.seen()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));

    // The same through collect_stream.
    let stream = p
        .stream(CompletionRequest::new(vec![Message::user("greet")]))
        .await
        .unwrap();
    let r = collect_stream(p.name(), stream).await.unwrap();
    assert_eq!(r.text(), "Hello, world");
    assert_eq!(r.usage, Usage::new(20, 3).with_cache(10, 0));
    assert_eq!(r.stop_reason, StopReason::EndTurn);
}

#[tokio::test]
async fn streamed_parallel_tool_call_deltas_are_reassembled() {
    let call = |index: u32, id: &str, name: &str| {
        chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        )
    };
    let args = |index: u32, fragment: &str| {
        chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
            Value::Null,
        )
    };
    let events = vec![
        chunk(
            json!({"role": "assistant", "content": null, "refusal": null}),
            Value::Null,
        ),
        call(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather"),
        args(0, "{\"ci"),
        args(0, "ty\": \"Pa"),
        args(0, "ris\"}"),
        call(1, "call_ABCd3xa9XTPNJ32zg2hcA", "get_weather"),
        args(1, "{\"city\""),
        args(1, ": \"Tokyo\"}"),
        chunk(json!({}), json!("tool_calls")),
        usage_chunk(82, 0, 51),
        "[DONE]".to_owned(),
    ];
    let mock = Mock::start(move |_, _| sse(events.clone())).await;
    let p = mock.provider();
    let stream = p
        .stream(
            CompletionRequest::new(vec![Message::user("Weather in Paris and Tokyo?")])
                .with_tools(vec![weather_tool()]),
        )
        .await
        .unwrap();
    let r = collect_stream(p.name(), stream).await.unwrap();
    assert_eq!(r.stop_reason, StopReason::ToolUse);
    assert_eq!(r.usage, Usage::new(82, 51));
    assert_eq!(r.model, MODEL);
    let calls: Vec<_> = r.message.tool_calls().collect();
    assert_eq!(
        calls,
        vec![
            (
                "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                "get_weather",
                &json!({"city": "Paris"})
            ),
            (
                "call_ABCd3xa9XTPNJ32zg2hcA",
                "get_weather",
                &json!({"city": "Tokyo"})
            ),
        ]
    );
}

#[tokio::test]
async fn a_stream_cut_before_done_is_a_stream_error() {
    // n = 0: the server ends the body cleanly after some text; n = 1: the connection breaks.
    let mock = Mock::start(|n, _| {
        let mut events = text_stream_events(&["The answer", " is"]);
        events.truncate(2);
        let frames = events
            .into_iter()
            .map(|e| Ok::<_, std::io::Error>(Bytes::from(format!("data: {e}\n\n"))));
        let body = if n == 0 {
            Body::from_stream(futures::stream::iter(frames))
        } else {
            Body::from_stream(
                futures::stream::iter(frames).chain(futures::stream::once(async {
                    // Let the head and the first events go out before the connection breaks.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(std::io::Error::other("connection reset"))
                })),
            )
        };
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(body)
            .unwrap()
    })
    .await;
    let p = mock.provider();
    for _ in 0..2 {
        let stream = p
            .stream(CompletionRequest::new(vec![Message::user("q")]))
            .await
            .unwrap();
        let err = collect_stream(p.name(), stream).await.unwrap_err();
        assert_eq!(
            err.provider_kind(),
            Some(ProviderErrorKind::Stream),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_error_event_in_the_stream_is_a_provider_error() {
    let mock =
        Mock::start(|_, _| {
            sse(vec![
            chunk(json!({"role": "assistant", "content": "Partial"}), Value::Null),
            json!({"error": {"message": "The server had an error while processing your request.",
                             "type": "server_error", "param": null, "code": null}})
            .to_string(),
        ])
        })
        .await;
    let p = mock.provider();
    let stream = p
        .stream(CompletionRequest::new(vec![Message::user("q")]))
        .await
        .unwrap();
    let err = collect_stream(p.name(), stream).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Server));
    assert!(err.to_string().contains("error while processing"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Through the agent loop

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[tokio::test]
async fn agent_runs_a_tool_round_trip_over_http() {
    let mock = Mock::start(|n, _| {
        let body = if n == 0 {
            completion(
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_add1", "type": "function",
                     "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}}
                ]}),
                "tool_calls",
                usage(50, 0, 12),
            )
        } else {
            completion(text_message("2 + 3 = 5"), "stop", usage(70, 0, 8))
        };
        json_reply(StatusCode::OK, body)
    })
    .await;
    let add = FnTool::new("add", "Add two integers", |x: AddArgs| async move {
        Ok::<_, Infallible>(x.a + x.b)
    });
    let agent = AgentLlm::new(
        Agent::new("calc", "You add numbers with the add tool.").with_tool(add),
        mock.provider(),
    );
    let generation = agent
        .generate("What is 2 + 3?".into(), &RunContext::new())
        .await
        .unwrap();
    assert_eq!(generation.text(), "2 + 3 = 5");
    assert_eq!(generation.usage, Usage::new(120, 20));
    assert_eq!(generation.llm_calls, 2);

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    let first = &seen[0].body;
    assert_eq!(first["messages"][0]["role"], "system");
    assert_eq!(first["tools"][0]["function"]["name"], "add");
    assert_eq!(
        first["tools"][0]["function"]["parameters"]["properties"]["a"]["type"],
        "integer"
    );
    let second = seen[1].body["messages"].as_array().unwrap();
    let n = second.len();
    assert_eq!(second[n - 2]["role"], "assistant");
    assert_eq!(second[n - 2]["tool_calls"][0]["id"], "call_add1");
    assert_eq!(
        second[n - 1],
        json!({"role": "tool", "tool_call_id": "call_add1", "content": "5"})
    );
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
struct CityWeather {
    city: String,
    temp_c: i32,
}

#[tokio::test]
async fn generate_structured_sends_json_schema_and_parses_the_answer() {
    let mock = Mock::start(|_, _| {
        json_reply(
            StatusCode::OK,
            text_completion(r#"{"city":"Lisbon","temp_c":18}"#),
        )
    })
    .await;
    let agent = AgentLlm::new(Agent::new("w", "Report weather."), mock.provider());
    let value: CityWeather = agent
        .generate_structured("Weather in Lisbon?", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(
        value,
        CityWeather {
            city: "Lisbon".into(),
            temp_c: 18
        }
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 1, "a valid answer needs no repair round");
    let format = &seen[0].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert!(
        format["json_schema"]["name"]
            .as_str()
            .unwrap()
            .contains("CityWeather")
    );
    let schema = &format["json_schema"]["schema"];
    assert_eq!(schema["properties"]["city"]["type"], "string");
    assert_eq!(schema["properties"]["temp_c"]["type"], "integer");
}

// ---------------------------------------------------------------------------------------------
// Errors and retries

fn openai_error(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after_ms_then_retries() {
    let mock = Mock::start(|n, _| {
        if n == 0 {
            let mut r = json_reply(
                StatusCode::TOO_MANY_REQUESTS,
                openai_error(
                    "Rate limit reached for gpt-4.1-mini on requests per min (RPM): Limit 3, Used 3, Requested 1.",
                    "requests",
                    "rate_limit_exceeded",
                ),
            );
            r.headers_mut()
                .insert("retry-after-ms", "150".parse().unwrap());
            r
        } else {
            json_reply(StatusCode::OK, text_completion("done"))
        }
    })
    .await;
    // The backoff alone would wait 1 ms: a gap of 150 ms can only come from retry-after-ms.
    let p = ProviderBuilder::new(mock.provider())
        .retry(
            RetryConfig::new()
                .with_max_retries(2)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .build();
    let r = p
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(r.text(), "done");
    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(150), "retried after {gap:?}");
}

#[tokio::test]
async fn a_429_reports_rate_limited_with_retry_after() {
    let mock = Mock::start(|_, _| {
        let mut r = json_reply(
            StatusCode::TOO_MANY_REQUESTS,
            openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
        );
        r.headers_mut().insert("retry-after", "2".parse().unwrap());
        r
    })
    .await;
    let err = mock
        .provider()
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::RateLimited));
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_absurd_retry_after_is_neither_a_panic_nor_a_stall() {
    // `Retry-After: 1e20` used to panic in Duration::from_secs_f64. Now it is clamped to a day,
    // which is longer than the retry layer waits (max_retry_after, 60 s): the error comes back
    // at once, after one request.
    let mock = Mock::start(|_, _| {
        let mut r = json_reply(
            StatusCode::TOO_MANY_REQUESTS,
            openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
        );
        r.headers_mut()
            .insert("retry-after", "1e20".parse().unwrap());
        r
    })
    .await;
    let provider = ProviderBuilder::new(mock.provider())
        .retry(RetryConfig::new())
        .build();
    let started = Instant::now();
    let err = provider.complete(common::hi()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::RateLimited));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(24 * 60 * 60)));
    assert_eq!(mock.requests(), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_endless_error_body_is_read_only_in_part() {
    // A broken server answers 500 with a body that never ends: the error is built from its
    // start instead of reading forever.
    let mock = Mock::start(|_, _| {
        let endless =
            futures::stream::repeat_with(|| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 4096])));
        Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from_stream(endless))
            .unwrap()
    })
    .await;
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        mock.provider().complete(common::hi()),
    )
    .await
    .expect("the error body was read to its (missing) end")
    .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Server));
    assert!(err.to_string().contains("xxxx…"), "{err}");
}

#[tokio::test]
async fn a_server_error_is_retried() {
    // The first two requests fail with 500, the third succeeds.
    let mock = Mock::start(|n, _| {
        if n < 2 {
            json_reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                openai_error(
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                    "",
                ),
            )
        } else {
            json_reply(StatusCode::OK, text_completion("recovered"))
        }
    })
    .await;
    let ask = || CompletionRequest::new(vec![Message::user("hi")]);
    let err = mock.provider().complete(ask()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Server));
    assert_eq!(err.status(), Some(500));
    assert!(err.to_string().contains("error while processing"), "{err}");

    let p = common::retrying(mock.provider());
    let r = p.complete(ask()).await.unwrap();
    assert_eq!(r.text(), "recovered");
    assert_eq!(mock.seen().len(), 3, "one failed attempt, then one retry");
}

#[tokio::test]
async fn malformed_json_is_a_decode_error_and_not_retried() {
    let mock = Mock::start(|_, _| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "mess"#,
            ))
            .unwrap()
    })
    .await;
    let p = ProviderBuilder::new(mock.provider())
        .retry(RetryConfig::new().with_initial_backoff(Duration::from_millis(1)))
        .build();
    let err = p
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    assert!(!err.is_retryable());
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn unauthorized_is_an_auth_error_that_mentions_the_api_key() {
    let mock = Mock::start(|_, _| {
        json_reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "Unauthorized", "type": "invalid_request_error",
                             "param": null, "code": null}}),
        )
    })
    .await;
    let err = mock
        .provider()
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Auth));
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("API key"), "{err}");

    // Without any key configured, the error says which variable to set.
    let keyless = OpenAiProvider::new(OpenAiConfig::default().with_base_url(mock.base())).unwrap();
    let err = keyless
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let p = OpenAiProvider::new(OpenAiConfig::new("k").with_base_url(format!("http://{addr}/v1")))
        .unwrap();
    let err = p
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let mock = Mock::start(|_, _| {
        // Headers come at once; the body never finishes within the timeout.
        let slow = futures::stream::once(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, Infallible>(Bytes::from_static(b"{}"))
        });
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(slow))
            .unwrap()
    })
    .await;
    let p = OpenAiProvider::new(mock.config().with_timeout(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    let err = p
        .complete(CompletionRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A stream that goes quiet for longer than the timeout fails too.
    let stream = p
        .stream(CompletionRequest::new(vec![Message::user("hi")]))
        .await;
    let err = match stream {
        Ok(s) => collect_stream(p.name(), s).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(err.is_timeout(), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Embeddings

#[tokio::test]
async fn embeddings_are_batched_and_ordered_by_index() {
    let mock = Mock::start(|_, seen| {
        let inputs = seen.body["input"].as_array().cloned().unwrap_or_default();
        // Answer in reverse order: the client must sort by `index`.
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, text)| {
                json!({"object": "embedding", "index": i,
                       "embedding": [text.as_str().unwrap().len() as f32, i as f32, 0.5]})
            })
            .collect();
        json_reply(
            StatusCode::OK,
            json!({"object": "list", "data": data, "model": "text-embedding-3-small",
                   "usage": {"prompt_tokens": 8, "total_tokens": 8}}),
        )
    })
    .await;
    let embedder = OpenAiEmbedder::new(mock.config())
        .unwrap()
        .with_batch_size(2)
        .with_dimensions(3);
    let texts: Vec<String> = vec!["a".into(), "bbb".into(), "cc".into()];
    let vectors = embedder.embed(&texts).await.unwrap();
    assert_eq!(
        vectors,
        vec![
            vec![1.0, 0.0, 0.5],
            vec![3.0, 1.0, 0.5],
            vec![2.0, 0.0, 0.5]
        ]
    );

    let seen = mock.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/v1/embeddings");
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-test");
    assert_eq!(
        seen[0].body,
        json!({"model": "text-embedding-3-small", "input": ["a", "bbb"],
               "encoding_format": "float", "dimensions": 3})
    );
    assert_eq!(seen[1].body["input"], json!(["cc"]));

    // Nothing to embed: no request.
    assert!(embedder.embed(&[]).await.unwrap().is_empty());
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn an_embeddings_answer_missing_a_vector_is_a_decode_error() {
    let mock = Mock::start(|_, _| {
        json_reply(
            StatusCode::OK,
            json!({"object": "list", "model": "text-embedding-3-small",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}]}),
        )
    })
    .await;
    let err = mock
        .provider()
        .embedder()
        .embed(&["x".into(), "y".into()])
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    assert!(err.to_string().contains("input 1"), "{err}");
}
