#![allow(clippy::unwrap_used, clippy::expect_used)]
// The router and orchestrator examples each bring their own copy of `examples/common`.
#![allow(clippy::duplicate_mod)]
//! The patterns against the most literal strict-mode model: a local OpenAI-compatible server
//! (the `schema_first_server` example's peer) that answers every structured request with the
//! first valid instance of its schema, reached over real HTTP by the real `OpenAiProvider`.
//! A pattern that only offers real names in its schema gets a real route or worker back.

#[path = "../examples/schema_first_server/peer.rs"]
mod peer;

#[allow(dead_code)]
#[path = "../examples/router.rs"]
mod router_example;

#[allow(dead_code)]
#[path = "../examples/orchestrator.rs"]
mod orchestrator_example;

use std::sync::Arc;

use agentkit::core::{
    AugmentedLlm, CollectingSink, CompletionRequest, Content, LlmProvider, Message, OpenAiConfig,
    OpenAiProvider, ResponseFormat, RunContext, RunEvent, ToolChoice, ToolSpec, collect_stream,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Start the peer on a free port; its base URL and the log of what it received.
async fn start_peer() -> (String, peer::RequestLog) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = peer::RequestLog::default();
    let app = peer::app(log.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), log)
}

fn openai(base_url: &str) -> Arc<dyn LlmProvider> {
    Arc::new(OpenAiProvider::new(OpenAiConfig::new("x").with_base_url(base_url)).unwrap())
}

/// A run against a fresh peer: what it received, the provider that reaches it, and a context
/// collecting the run's events.
struct PeerRun {
    log: peer::RequestLog,
    provider: Arc<dyn LlmProvider>,
    sink: Arc<CollectingSink>,
    ctx: RunContext,
}

async fn peer_run() -> PeerRun {
    let (base_url, log) = start_peer().await;
    let sink = Arc::new(CollectingSink::new());
    PeerRun {
        log,
        provider: openai(&base_url),
        ctx: RunContext::new().with_events(sink.clone()),
        sink,
    }
}

fn steps(sink: &CollectingSink, wanted: &str) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::PatternStep { step, detail, .. } if step == wanted => Some(detail),
            _ => None,
        })
        .collect()
}

/// The `json_schema` response format of the first request that asked for one.
fn first_structured(log: &peer::RequestLog) -> Value {
    log.bodies()
        .into_iter()
        .find_map(|b| {
            (b["response_format"]["type"] == "json_schema")
                .then(|| b["response_format"]["json_schema"].clone())
        })
        .expect("a structured request")
}

#[tokio::test]
async fn the_router_example_routes_to_a_real_route_with_a_strict_model() {
    let run = peer_run().await;
    let desk = router_example::help_desk(&|_| Arc::clone(&run.provider)).unwrap();
    let answer = desk
        .by_llm
        .generate(router_example::REQUEST.into(), &run.ctx)
        .await
        .unwrap();
    // The first listed route answered (with the peer's fixed text).
    assert_eq!(answer.text(), peer::FIXED_TEXT);
    let chosen = steps(&run.sink, "route_chosen");
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0]["route"], "account_support");
    // The classifier was asked strictly, with the route names as an enum.
    let format = first_structured(&run.log);
    assert_eq!(format["strict"], true);
    assert_eq!(
        format["schema"]["properties"]["routes"]["items"]["properties"]["route"]["enum"],
        json!(["account_support", "billing", "service_status"])
    );
    // Classifier, then the chosen agent.
    assert_eq!(run.log.bodies().len(), 2);
    assert_eq!(answer.llm_calls, 2);
}

#[tokio::test]
async fn the_orchestrator_example_assigns_tasks_to_real_workers_with_a_strict_model() {
    let run = peer_run().await;
    let planner = orchestrator_example::trip_planner(&|_| Arc::clone(&run.provider)).unwrap();
    let out = planner
        .orchestrate(orchestrator_example::OBJECTIVE, &run.ctx)
        .await
        .unwrap();
    assert_eq!(out.generation.text(), peer::FIXED_TEXT);
    // Every plan was valid on the first try, and every task went to a real worker that ran.
    assert!(steps(&run.sink, "plan_rejected").is_empty());
    assert_eq!(
        out.plans.len(),
        3,
        "one plan per planning round (3 at most)"
    );
    assert_eq!(out.steps.len(), 3);
    for step in &out.steps {
        assert!(!step.tasks.is_empty());
        for task in &step.tasks {
            assert!(
                ["weather", "guide", "planner_worker"].contains(&task.task.worker.as_str()),
                "{task:?}"
            );
            assert!(!task.failed, "{task:?}");
            assert_eq!(task.output, peer::FIXED_TEXT);
        }
    }
    let format = first_structured(&run.log);
    assert_eq!(format["strict"], true);
    let workers = &format["schema"]["properties"]["steps"]["anyOf"][0]["items"]["properties"]["tasks"]
        ["items"]["properties"]["worker"]["enum"];
    assert_eq!(workers, &json!(["weather", "guide", "planner_worker"]));
}

#[tokio::test]
async fn the_peer_streams_and_answers_forced_tools_with_first_instances() {
    let (base_url, _log) = start_peer().await;
    let provider = openai(&base_url);
    let schema = json!({
        "type": "object",
        "properties": {"pick": {"type": "string", "enum": ["b", "a"]}, "n": {"type": "integer", "minimum": 3}},
        "required": ["pick", "n"],
        "additionalProperties": false
    });
    let structured = CompletionRequest::new(vec![Message::user("pick one")])
        .with_response_format(ResponseFormat::new("Pick", schema.clone()).with_strict(true));
    let streamed = collect_stream("openai", provider.stream(structured).await.unwrap())
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&streamed.message.text()).unwrap();
    assert_eq!(answer, json!({"pick": "b", "n": 3}));

    let forced = CompletionRequest::new(vec![Message::user("call it")])
        .with_tools(vec![ToolSpec::new("pick", "Pick one", schema)])
        .with_tool_choice(ToolChoice::Tool("pick".to_owned()));
    let response = provider.complete(forced).await.unwrap();
    let call = response.message.content.iter().find_map(|c| match c {
        Content::ToolCall {
            name, arguments, ..
        } => Some((name.clone(), arguments.clone())),
        _ => None,
    });
    assert_eq!(
        call,
        Some(("pick".to_owned(), json!({"pick": "b", "n": 3})))
    );

    let plain = provider
        .complete(CompletionRequest::new(vec![Message::user("hello")]))
        .await
        .unwrap();
    assert_eq!(plain.message.text(), peer::FIXED_TEXT);
}

#[test]
fn first_instances_of_the_keywords_the_peer_handles() {
    let cases = [
        (json!({"type": "string"}), json!("")),
        (json!({"type": "string", "minLength": 2}), json!("aa")),
        (json!({"type": ["string", "null"]}), json!("")),
        (json!({"type": ["null", "string"]}), json!(null)),
        (json!({"type": "number", "minimum": 0.5}), json!(0.5)),
        (json!({"type": "number", "maximum": -2}), json!(-2.0)),
        (
            json!({"type": "number", "exclusiveMinimum": 0, "maximum": 0.5}),
            json!(0.25),
        ),
        (json!({"type": "integer", "exclusiveMinimum": 2}), json!(3)),
        (json!({"type": "boolean"}), json!(false)),
        (json!({"const": {"a": 1}}), json!({"a": 1})),
        (json!({"enum": [3, 1]}), json!(3)),
        (
            json!({"type": "array", "minItems": 2, "items": {"enum": ["x"]}}),
            json!(["x", "x"]),
        ),
        (
            json!({"type": "array", "minItems": 2, "prefixItems": [{"const": 1}], "items": {"type": "boolean"}}),
            json!([1, false]),
        ),
        (
            json!({"anyOf": [{"type": "array", "minItems": 1, "items": {"const": 7}}, {"type": "null"}]}),
            json!([7]),
        ),
        (
            json!({"oneOf": [{"enum": []}, {"type": "integer"}]}),
            json!(0),
        ),
        (
            json!({
                "$defs": {"Leaf": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
                "type": "object",
                "properties": {"leaf": {"$ref": "#/$defs/Leaf"}, "skip": {"type": "string"}},
                "required": ["leaf"]
            }),
            json!({"leaf": {"x": 0}}),
        ),
        (
            json!({"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]}, {"properties": {"b": {"const": 2}}, "required": ["b"]}]}),
            json!({"a": "", "b": 2}),
        ),
    ];
    for (schema, expected) in cases {
        assert_eq!(peer::first_instance(&schema), Ok(expected), "{schema}");
    }
    for (schema, problem) in [
        (json!(false), "has no instance"),
        (json!({"enum": []}), "non-empty array"),
        (json!({"$ref": "#/$defs/Missing"}), "points nowhere"),
        (
            json!({"type": "integer", "minimum": 5, "maximum": 3}),
            "minimum and maximum",
        ),
        (
            json!({"$defs": {"R": {"type": "object", "properties": {"r": {"$ref": "#/$defs/R"}}, "required": ["r"]}}, "$ref": "#/$defs/R"}),
            "deeper than",
        ),
        (
            json!({"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}),
            "too complex",
        ),
        (json!({"type": "array", "minItems": 1_000_000}), "more than"),
        (
            json!({"type": "object", "required": ["x"], "additionalProperties": false}),
            "`x` is required but not allowed",
        ),
    ] {
        let err = peer::first_instance(&schema).unwrap_err();
        assert!(err.contains(problem), "{schema}: {err}");
    }
}

/// JSON schemas built from the keywords the peer handles, with values that may contradict;
/// `$ref`s point to the root's one definition, which may refer to itself.
fn arb_schema() -> impl Strategy<Value = Value> {
    (arb_subschema(), arb_subschema())
        .prop_map(|(body, def)| json!({"allOf": [body], "$defs": {"D": def}}))
}

fn arb_subschema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "string"})),
        (0u64..4).prop_map(|n| json!({"type": "string", "minLength": n})),
        Just(json!({"type": ["string", "null"]})),
        Just(json!({"type": "boolean"})),
        Just(json!({"type": "null"})),
        (-5i64..5, -5i64..5)
            .prop_map(|(a, b)| json!({"type": "integer", "minimum": a, "maximum": b})),
        (-5i64..5).prop_map(|a| json!({"type": "integer", "exclusiveMinimum": a})),
        (-5.0f64..5.0, -5.0f64..5.0)
            .prop_map(|(a, b)| json!({"type": "number", "exclusiveMinimum": a, "maximum": b})),
        (-5.0f64..5.0).prop_map(|b| json!({"type": "number", "exclusiveMaximum": b})),
        prop::collection::vec("[a-z]{0,3}", 0..3).prop_map(|v| json!({"enum": v})),
        any::<i32>().prop_map(|v| json!({"const": v})),
        Just(json!(true)),
        Just(json!(false)),
        Just(json!({"$ref": "#/$defs/D"})),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            (inner.clone(), 0u64..3).prop_map(|(items, n)| json!({"type": "array", "items": items, "minItems": n})),
            prop::collection::btree_map("[a-c]", (inner.clone(), any::<bool>()), 0..4).prop_map(|props| {
                let required: Vec<&String> = props.iter().filter(|p| p.1.1).map(|p| p.0).collect();
                let properties: serde_json::Map<String, Value> =
                    props.iter().map(|p| (p.0.clone(), p.1.0.clone())).collect();
                json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
            }),
            // (`oneOf` is left out: its first branch is valid only if no later one also is.)
            prop::collection::vec(inner, 1..3).prop_map(|b| json!({"anyOf": b})),
        ]
    })
}

/// The keys of the arbitrary JSON objects: mostly schema keywords.
const SCHEMA_KEYWORDS: [&str; 19] = [
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "properties",
    "required",
    "items",
    "prefixItems",
    "minItems",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "minLength",
    "additionalProperties",
    "$defs",
    "x",
];

/// Arbitrary JSON, to throw at the generator as a "schema".
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(|i| json!(i)),
        prop_oneof![
            Just("type".to_owned()),
            Just("object".to_owned()),
            Just("#".to_owned()),
            "[a-z#/$]{0,6}"
        ]
        .prop_map(Value::String),
    ];
    let keys = prop::sample::select(&SCHEMA_KEYWORDS[..]);
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|pairs| {
                let mut object = serde_json::Map::new();
                for (k, v) in pairs {
                    object.insert(k.to_owned(), v);
                }
                Value::Object(object)
            }),
        ]
    })
}

/// 256 cases; failures are shrunk and printed, not saved to files.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(256);
    config.failure_persistence = None;
    config
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the peer builds for a schema is valid against it (checked by `jsonschema`).
    #[test]
    fn a_first_instance_is_valid_against_its_schema(schema in arb_schema()) {
        if let Ok(instance) = peer::first_instance(&schema) {
            let validator = jsonschema::validator_for(&schema).unwrap();
            let errors: Vec<String> = validator.iter_errors(&instance).map(|e| e.to_string()).collect();
            prop_assert!(errors.is_empty(), "{} for {}: {:?}", instance, schema, errors);
        }
    }

    /// Arbitrary JSON as a schema: an instance or a message, never a panic or a hang.
    #[test]
    fn any_json_gets_an_instance_or_a_message(schema in arb_json()) {
        if let Err(message) = peer::first_instance(&schema) {
            prop_assert!(!message.is_empty());
        }
    }
}
