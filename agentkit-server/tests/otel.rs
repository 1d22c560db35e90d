//! OpenTelemetry traces as a user sees them in Jaeger or Tempo: a caller with a
//! `traceparent` starts a run over real HTTP; the agent's model (an OpenAI-compatible server
//! on 127.0.0.1) asks for one tool of a real MCP server (streamable HTTP on 127.0.0.1); the
//! spans reach an OTLP/HTTP receiver in this test, decoded with `opentelemetry-proto`.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_core::{Agent, AgentLlm, OpenAiConfig, OpenAiProvider};
use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use agentkit_mcp::{ConnectionManager, McpAggregator, ServerConfig};
use agentkit_server::Server;
use agentkit_server::observe::otel::{Otel, OtelConfig};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const KEY: &str = "otel-test-key";
/// A tool argument that looks like a credential: it must not reach the trace backend.
const SECRET: &str = "sk-live-7f3a9c1e5b2d4068a1c3e5f7";

/// What the OTLP receiver got: spans, and the `service.name` of their resource.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
    raw: Vec<u8>,
}

async fn receive(
    State(r): State<Arc<Mutex<Received>>>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP trace export");
    let mut r = r.lock().unwrap();
    r.raw.extend_from_slice(&body);
    for rs in request.resource_spans {
        if let Some(res) = &rs.resource {
            for kv in &res.attributes {
                if kv.key == "service.name" {
                    r.services.push(text(kv.value.as_ref()));
                }
            }
        }
        for ss in rs.scope_spans {
            r.spans.extend(ss.spans);
        }
    }
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv: &&KeyValue| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OpenAI-compatible model: asks for `calc__add` (with a secret-looking argument) until it
/// sees the tool's result, then answers. Records each request's `traceparent` header.
async fn model(
    State(seen): State<Arc<Mutex<Vec<String>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let tp = headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    seen.lock().unwrap().push(tp);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let answered = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["role"] == "tool");
    let message = if answered {
        json!({"role": "assistant", "content": "2 + 40 = 42"})
    } else {
        let args = json!({"a": 2, "b": 40, "api_key": SECRET}).to_string();
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "calc__add", "arguments": args}
        }]})
    };
    axum::Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message,
                     "finish_reason": if answered { "stop" } else { "tool_calls" }}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_callers_request_to_the_mcp_server() {
    // The OTLP/HTTP receiver, and the exporter pointed at it.
    let received = Arc::new(Mutex::new(Received::default()));
    let otlp = serve(
        axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(Arc::clone(&received)),
    )
    .await;
    let otel = Otel::start(OtelConfig::new(&otlp, "agentkit-test")).unwrap();
    tracing_subscriber::registry().with(otel.layer()).init();

    // The MCP server: `add`, recording the `_meta.traceparent` of each call.
    let metas = Arc::new(Mutex::new(Vec::<String>::new()));
    let m = Arc::clone(&metas);
    let calc = agentkit_mcp::McpServerBuilder::new("calc", "1.0.0")
        .tool_fn(
            "add",
            "Adds a and b",
            json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
            move |args, call| {
                let m = Arc::clone(&m);
                async move {
                    let meta = serde_json::to_value(&call.request().meta).unwrap();
                    m.lock()
                        .unwrap()
                        .push(meta["traceparent"].as_str().unwrap_or_default().to_owned());
                    let n = |k: &str| args.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    Ok(CallToolResult::success(vec![ContentBlock::text(
                        (n("a") + n("b")).to_string(),
                    )]))
                }
            },
        )
        .build();
    let ct = tokio_util::sync::CancellationToken::new();
    let mcp = serve(axum::Router::new().nest_service(
        "/mcp",
        calc.into_http_service(
            agentkit_mcp::HttpOptions::new().with_cancellation(ct.child_token()),
        ),
    ))
    .await;

    // The model server.
    let model_tps = Arc::new(Mutex::new(Vec::<String>::new()));
    let model_url = serve(
        axum::Router::new()
            .fallback(axum::routing::post(model))
            .with_state(Arc::clone(&model_tps)),
    )
    .await;

    let manager = ConnectionManager::new([ServerConfig::http("calc", format!("{mcp}/mcp"))]);
    let provider = OpenAiProvider::new(
        OpenAiConfig::new("test")
            .with_base_url(format!("{model_url}/v1"))
            .with_default_model("gpt-4o-mini"),
    )
    .unwrap();
    let agent = AgentLlm::new(
        Agent::new("calculator", "Add numbers with the calc tools.")
            .with_tool(McpAggregator::new(manager.clone(), ["calc"])),
        provider,
    );
    let store = Arc::new(agentkit_runtime::MemoryStore::new());
    let server = Server::builder(store)
        .admin_key(KEY)
        .agent_llm("calculator", Arc::new(agent), "Adds numbers")
        .build()
        .await
        .unwrap();
    let base = serve(server.router()).await;

    // The caller's own span.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let run: Value = reqwest::Client::new()
        .post(format!("{base}/v1/agents/calculator/runs"))
        .bearer_auth(KEY)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"message": "2 + 40?", "wait": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(run["status"], "succeeded", "{run}");

    // Flush until the request's span (closed once its response is sent) has arrived.
    let wanted = [
        "POST /v1/agents/{name}/runs",
        "run calculator",
        "invoke_agent calculator",
        "chat gpt-4o-mini",
        "execute_tool calc__add",
        "tools/call add",
    ];
    let mut spans = Vec::new();
    for _ in 0..50 {
        otel.flush().await.unwrap();
        spans = received.lock().unwrap().spans.clone();
        if wanted.iter().all(|w| spans.iter().any(|s| s.name == *w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} [{} <- {}]",
                s.name,
                hex(&s.span_id),
                hex(&s.parent_span_id)
            )
        })
        .collect();
    let one = |name: &str| -> &Span {
        let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one `{name}` span expected in {names:?}");
        found[0]
    };
    let http = one("POST /v1/agents/{name}/runs");
    let run_span = one("run calculator");
    let invoke = one("invoke_agent calculator");
    let tool = one("execute_tool calc__add");
    let call = one("tools/call add");
    let chats: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "chat gpt-4o-mini")
        .collect();
    assert_eq!(
        chats.len(),
        2,
        "a model call for the tool, one for the answer: {names:?}"
    );

    // One trace: the caller's.
    for s in [http, run_span, invoke, tool, call]
        .into_iter()
        .chain(chats.iter().copied())
    {
        assert_eq!(
            hex(&s.trace_id),
            trace_id,
            "`{}` is in another trace",
            s.name
        );
    }
    // The tree.
    let parent_of = |s: &Span| hex(&s.parent_span_id);
    assert_eq!(
        parent_of(http),
        caller_span,
        "the request continues the caller's span"
    );
    assert_eq!(
        parent_of(run_span),
        hex(&http.span_id),
        "the run's task joins the request"
    );
    assert_eq!(parent_of(invoke), hex(&run_span.span_id));
    for c in &chats {
        assert_eq!(parent_of(c), hex(&invoke.span_id));
    }
    assert_eq!(parent_of(tool), hex(&invoke.span_id));
    assert_eq!(parent_of(call), hex(&tool.span_id));

    // Kinds and attributes (OpenTelemetry HTTP, GenAI and MCP semantic conventions).
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    assert_eq!(http.kind, SpanKind::Server as i32);
    assert_eq!(call.kind, SpanKind::Client as i32);
    assert_eq!(attr(http, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(http, "http.route").as_deref(),
        Some("/v1/agents/{name}/runs")
    );
    assert_eq!(
        attr(http, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(http, "agentkit.workspace").as_deref(), Some("admin"));
    assert_eq!(
        attr(run_span, "agentkit.run.id"),
        run["run_id"].as_str().map(str::to_owned)
    );
    assert_eq!(
        attr(run_span, "agentkit.agent.version").as_deref(),
        Some("1")
    );
    // Stored with the run, for a node that executes it later (or after a restart).
    assert_eq!(
        run["input"]["traceparent"],
        format!("00-{trace_id}-{}-01", hex(&http.span_id)),
        "{run}"
    );
    assert_eq!(
        attr(run_span, "agentkit.run.status").as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        attr(run_span, "gen_ai.usage.input_tokens").as_deref(),
        Some("20")
    );
    assert_eq!(
        attr(run_span, "gen_ai.usage.output_tokens").as_deref(),
        Some("10")
    );
    let run_cost: f64 = attr(run_span, "agentkit.cost_usd")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        run_cost > 0.0,
        "gpt-4o-mini is in the price table: {run_cost}"
    );
    assert_eq!(
        attr(invoke, "gen_ai.operation.name").as_deref(),
        Some("invoke_agent")
    );
    assert_eq!(
        attr(invoke, "gen_ai.agent.name").as_deref(),
        Some("calculator")
    );
    for c in &chats {
        assert_eq!(attr(c, "gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(
            attr(c, "gen_ai.request.model").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(attr(c, "gen_ai.provider.name").as_deref(), Some("openai"));
        assert_eq!(attr(c, "gen_ai.usage.input_tokens").as_deref(), Some("10"));
        assert_eq!(attr(c, "gen_ai.usage.output_tokens").as_deref(), Some("5"));
        let cost: f64 = attr(c, "agentkit.cost_usd").unwrap().parse().unwrap();
        assert!(cost > 0.0);
    }
    assert_eq!(
        attr(tool, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(attr(tool, "gen_ai.tool.name").as_deref(), Some("calc__add"));
    assert_eq!(attr(tool, "gen_ai.tool.call.id").as_deref(), Some("call_1"));
    assert_eq!(attr(call, "mcp.method.name").as_deref(), Some("tools/call"));
    assert_eq!(attr(call, "gen_ai.tool.name").as_deref(), Some("add"));
    assert_eq!(attr(call, "network.transport").as_deref(), Some("tcp"));
    assert!(attr(call, "jsonrpc.request.id").is_some());
    assert!(attr(call, "mcp.protocol.version").is_some_and(|v| !v.is_empty()));
    assert!(attr(call, "error.type").is_none());

    // Passed on: the MCP server got the `tools/call` span in `_meta`, the model server each
    // `chat` span as a header.
    let metas = metas.lock().unwrap().clone();
    assert_eq!(
        metas,
        [format!("00-{trace_id}-{}-01", hex(&call.span_id))],
        "the MCP request's _meta.traceparent"
    );
    let mut sent = model_tps.lock().unwrap().clone();
    let mut expected: Vec<String> = chats
        .iter()
        .map(|c| format!("00-{trace_id}-{}-01", hex(&c.span_id)))
        .collect();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected, "the provider requests' traceparent headers");

    // What the backend shows: this service, and not the tool's secret argument anywhere.
    let (services, raw) = {
        let r = received.lock().unwrap();
        (
            r.services.clone(),
            String::from_utf8_lossy(&r.raw).into_owned(),
        )
    };
    assert!(services.iter().all(|s| s == "agentkit-test") && !services.is_empty());
    assert!(
        !raw.contains(SECRET),
        "a tool argument reached the trace backend"
    );

    manager.shutdown().await;
    ct.cancel();
    otel.shutdown().await.unwrap();
}
