#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Router and IntentClassifier, LLM-based and embedding-based.

use std::sync::Arc;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CollectingSink, FnTool, RunContext, RunEvent,
    ScriptedProvider, ToolSource,
};
use agentkit_patterns::{
    BagOfWordsEmbedder, Entity, FnLlm, Intent, IntentClassifier, RouteKind, Router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

fn agent(name: &str, description: &str, provider: Arc<ScriptedProvider>) -> AgentLlm {
    AgentLlm::shared(
        Agent::new(name, format!("You are {name}.")).with_description(description),
        provider,
    )
}

#[tokio::test]
async fn llm_router_ranks_routes_and_delegates_to_the_best() {
    let classifier = Arc::new(ScriptedProvider::new().then_text(
        json!({"routes": [
            {"route": "billing", "confidence": 0.92, "reasoning": "The user asks for a refund."},
            {"route": "support", "confidence": 0.31, "reasoning": "Could be an account issue."}
        ]})
        .to_string(),
    ));
    let billing = Arc::new(
        ScriptedProvider::new()
            .then_text("I've started a refund for order 1234; expect it in 5 days."),
    );
    let support = Arc::new(ScriptedProvider::new());
    let router = Router::builder("desk")
        .with_llm(agent("classifier", "", classifier.clone()))
        .with_route(agent(
            "billing",
            "Refunds, invoices and payments",
            billing.clone(),
        ))
        .with_route(agent(
            "support",
            "Technical problems and accounts",
            support.clone(),
        ))
        .with_top_k(2)
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let g = router
        .generate("I want my money back for order 1234".into(), &ctx)
        .await
        .unwrap();
    assert_eq!(
        g.text(),
        "I've started a refund for order 1234; expect it in 5 days."
    );
    assert_eq!(support.call_count(), 0);
    // Classification and delegated call both count.
    assert_eq!(g.llm_calls, 2);
    // The classifier was shown the routes and their descriptions.
    let prompt = classifier.requests()[0].messages.last().unwrap().text();
    assert!(
        prompt.contains("`billing` (agent): Refunds, invoices and payments"),
        "{prompt}"
    );
    assert!(classifier.requests()[0].response_format.is_some());
    let chosen = sink.events().into_iter().find_map(|e| match e {
        RunEvent::PatternStep { step, detail, .. } if step == "route_chosen" => Some(detail),
        _ => None,
    });
    let chosen = chosen.unwrap();
    assert_eq!(chosen["route"], "billing");
    assert_eq!(chosen["reasoning"], "The user asks for a refund.");

    // route() returns the ranking without delegating.
    classifier.push(agentkit_core::ScriptedReply::Text(
        json!({"routes": [
            {"route": "support", "confidence": 0.4, "reasoning": "login"},
            {"route": "billing", "confidence": 0.7, "reasoning": "payment failed"}
        ]})
        .to_string(),
    ));
    let ranked = router
        .route("My card payment failed at login", &ctx)
        .await
        .unwrap();
    assert_eq!(ranked.len(), 2);
    assert_eq!(ranked[0].route, "billing", "sorted by confidence");
    assert_eq!(ranked[0].kind, RouteKind::Agent);
    assert_eq!(ranked[1].reasoning.as_deref(), Some("login"));
}

#[tokio::test]
async fn llm_router_ignores_unknown_routes_and_fails_clearly_when_none_is_known() {
    let classifier = Arc::new(
        ScriptedProvider::new()
            .then_text(
                json!({"routes": [
                    {"route": "sales", "confidence": 0.9, "reasoning": "made up"},
                    {"route": "billing", "confidence": 0.5, "reasoning": "money"}
                ]})
                .to_string(),
            )
            .then_text(
                json!({"routes": [
                    {"route": "sales", "confidence": 0.9, "reasoning": "made up"}
                ]})
                .to_string(),
            ),
    );
    let router = Router::builder("desk")
        .with_llm(agent("classifier", "", classifier))
        .with_route(agent(
            "billing",
            "Refunds",
            Arc::new(ScriptedProvider::new()),
        ))
        .build()
        .unwrap();
    let ctx = RunContext::new();
    let ranked = router.route("refund please", &ctx).await.unwrap();
    assert_eq!(ranked.len(), 1);
    assert_eq!(ranked[0].route, "billing");
    let err = router.route("buy more", &ctx).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("named no known route"), "{msg}");
    assert!(msg.contains("sales"), "{msg}");
}

#[tokio::test]
async fn embedding_router_picks_the_closest_description_and_runs_functions_and_tools() {
    #[derive(Deserialize, JsonSchema)]
    struct City {
        city: String,
    }
    let weather_tool = FnTool::new("forecast", "Forecast for a city", |c: City| async move {
        Ok::<_, std::convert::Infallible>(format!("Rain expected in {} tomorrow", c.city))
    });
    let weather_model: Arc<ScriptedProvider> = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("forecast", json!({"city": "Porto"}))
            .then_text("Take an umbrella: rain is expected in Porto tomorrow."),
    );
    let tools: Arc<dyn ToolSource> = Arc::new(weather_tool);
    let router = Router::builder("desk")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_function_route(
            FnLlm::new("calculator", |t: String, _| async move {
                Ok(format!("calculated: {t}"))
            })
            .with_description("arithmetic: add, subtract, multiply numbers and sums"),
        )
        .with_tools_route(
            "weather",
            "weather forecast, rain, sun and temperature for a city",
            tools,
            weather_model.clone(),
        )
        .build()
        .unwrap();
    let ctx = RunContext::new();
    let ranked = router
        .route("Will there be rain in Porto tomorrow?", &ctx)
        .await
        .unwrap();
    assert_eq!(ranked[0].route, "weather");
    assert_eq!(ranked[0].kind, RouteKind::Tools);
    assert!(router.tools("weather").is_some());
    let out = router
        .generate_str("Will there be rain in Porto tomorrow?", &ctx)
        .await
        .unwrap();
    assert_eq!(out, "Take an umbrella: rain is expected in Porto tomorrow.");
    assert_eq!(weather_model.call_count(), 2);
    let out = router
        .generate_str("multiply these numbers: 6 and 7", &ctx)
        .await
        .unwrap();
    assert_eq!(out, "calculated: multiply these numbers: 6 and 7");
}

#[test]
fn bad_router_configurations_are_rejected() {
    let err = Router::builder("empty")
        .with_embedder(BagOfWordsEmbedder::new())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("router `empty` has no routes"),
        "{err}"
    );
    let f = || FnLlm::new("f", |t: String, _| async move { Ok(t) });
    let err = Router::builder("r").with_route(f()).build().unwrap_err();
    assert!(err.to_string().contains("no classifier"), "{err}");
    let err = Router::builder("r")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_route(f())
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("route `f` of router `r` has no description"),
        "{err}"
    );
    let err = Router::builder("r")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_route(f().with_description("a"))
        .with_route(f().with_description("b"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("two routes named `f`"), "{err}");
}

#[tokio::test]
async fn llm_intent_classifier_returns_scored_intents_with_entities() {
    let model = Arc::new(ScriptedProvider::new().then_text(
        json!({"intents": [
            {"intent": "book_flight", "confidence": 0.95,
             "reasoning": "The user wants a flight.",
             "entities": [{"name": "destination", "value": "Lisbon"}, {"name": "date", "value": "next Friday"}]},
            {"intent": "check_weather", "confidence": 0.2, "reasoning": "Travel often involves weather.", "entities": []}
        ]})
        .to_string(),
    ));
    let classifier = IntentClassifier::builder("travel")
        .with_llm(agent("nlu", "", model.clone()))
        .with_intent(
            Intent::new("book_flight", "Book a plane ticket").with_example("fly me to Rome"),
        )
        .with_intent(Intent::new("check_weather", "Ask about the weather"))
        .with_top_k(2)
        .build()
        .unwrap();
    let found = classifier
        .classify("Get me a flight to Lisbon next Friday", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].intent, "book_flight");
    assert!((found[0].confidence - 0.95).abs() < 1e-6);
    assert_eq!(
        found[0].entities,
        vec![
            Entity::new("destination", "Lisbon"),
            Entity::new("date", "next Friday")
        ]
    );
    let prompt = model.requests()[0].messages.last().unwrap().text();
    assert!(
        prompt.contains("\"fly me to Rome\""),
        "examples are shown: {prompt}"
    );
}

#[tokio::test]
async fn embedding_intent_classifier_uses_examples_and_generate_returns_json() {
    let classifier = IntentClassifier::builder("shop")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_intent(
            Intent::new("track_order", "Where is my package")
                .with_example("track my parcel delivery status"),
        )
        .with_intent(
            Intent::new("return_item", "Send a product back")
                .with_example("return these shoes for a refund"),
        )
        .with_top_k(2)
        .build()
        .unwrap();
    let ctx = RunContext::new();
    let found = classifier
        .classify("what is the delivery status of my parcel", &ctx)
        .await
        .unwrap();
    assert_eq!(found[0].intent, "track_order");
    assert!(found[0].confidence > found[1].confidence);
    let text = classifier
        .generate_str("I need a refund for the shoes", &ctx)
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[0]["intent"], "return_item");
    assert!(
        IntentClassifier::builder("x")
            .with_embedder(BagOfWordsEmbedder::new())
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn a_router_is_an_augmented_llm_usable_as_a_tool() {
    // A router behind an AgentTool: it stands wherever an agent can.
    let router: Arc<dyn AugmentedLlm> = Arc::new(
        Router::builder("echo-router")
            .with_embedder(BagOfWordsEmbedder::new())
            .with_function_route(
                FnLlm::new(
                    "echo",
                    |t: String, _| async move { Ok(format!("echo: {t}")) },
                )
                .with_description("repeat echo words"),
            )
            .build()
            .unwrap(),
    );
    let tool = agentkit_core::AgentTool::new(router);
    let out = tool
        .call_tool(
            "echo-router",
            json!({"message": "echo this"}),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.text_content(), "echo: echo this");
}

/// The schema of the list `list` (whose items name a choice in `field`) a scripted model was
/// asked for, checking the request was strict and offered exactly `names`.
fn offered_list(
    model: &ScriptedProvider,
    list: &str,
    field: &str,
    names: serde_json::Value,
) -> serde_json::Value {
    let format = model.requests()[0].response_format.clone().unwrap();
    assert!(format.strict);
    let list = format.schema["properties"][list].clone();
    assert_eq!(list["items"]["properties"][field]["enum"], names);
    list
}

#[tokio::test]
async fn a_strict_model_is_offered_only_the_real_route_names_and_agents_are_described_by_their_instruction()
 {
    let classifier = Arc::new(
        ScriptedProvider::new().then_text(
            json!({"routes": [{"route": "faq", "confidence": 0.8, "reasoning": "a question"}]})
                .to_string(),
        ),
    );
    // No descriptions: the agent is shown by its instruction, a shared type-erased LLM by its
    // name.
    let faq = AgentLlm::shared(
        Agent::new(
            "faq",
            "You answer frequently asked questions about shipping.",
        ),
        Arc::new(ScriptedProvider::new().then_text("Shipping takes 3 days.")),
    );
    let echo: Arc<dyn AugmentedLlm> =
        Arc::new(FnLlm::new("echo", |t: String, _| async move { Ok(t) }));
    let router = Router::builder("desk")
        .with_llm(agent("classifier", "", classifier.clone()))
        .with_route(faq)
        .with_shared_route(echo)
        .with_top_k(2)
        .build()
        .unwrap();
    let ctx = RunContext::new();
    assert_eq!(
        router
            .generate_str("how long is shipping?", &ctx)
            .await
            .unwrap(),
        "Shipping takes 3 days."
    );
    let prompt = classifier.requests()[0].messages.last().unwrap().text();
    assert!(
        prompt.contains("- `faq` (agent): You answer frequently asked questions about shipping.\n"),
        "{prompt}"
    );
    assert!(prompt.contains("- `echo` (agent): echo\n"), "{prompt}");
    let routes = offered_list(&classifier, "routes", "route", json!(["faq", "echo"]));
    assert_eq!(routes["minItems"], 1);
    assert_eq!(routes["maxItems"], 2);
}

#[tokio::test]
async fn a_strict_model_is_offered_only_the_real_intent_names() {
    let model = Arc::new(ScriptedProvider::new().then_text(json!({"intents": []}).to_string()));
    let classifier = IntentClassifier::builder("travel")
        .with_llm(agent("nlu", "", model.clone()))
        .with_intent(Intent::new("book_flight", "Book a plane ticket"))
        .with_intent(Intent::new("check_weather", "Ask about the weather"))
        .build()
        .unwrap();
    let found = classifier
        .classify("hello", &RunContext::new())
        .await
        .unwrap();
    assert!(found.is_empty(), "an empty list means no intent matched");
    let intents = offered_list(
        &model,
        "intents",
        "intent",
        json!(["book_flight", "check_weather"]),
    );
    assert_eq!(intents["maxItems"], 1);
    // Strict mode: every property is required, none other is allowed.
    assert_eq!(
        intents["items"]["required"],
        json!(["confidence", "entities", "intent", "reasoning"])
    );
    assert_eq!(intents["items"]["additionalProperties"], false);
}
