#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Whatever a model answers to a pattern's structured question (any text, any JSON, answers
//! close to valid ones), the pattern never panics: it either goes on with names that exist or
//! fails with an error that says what was wrong.

use std::sync::Arc;

use agentkit_core::{Agent, AgentLlm, AugmentedLlm, RunContext, ScriptedProvider};
use agentkit_patterns::{
    EvaluatorOptimizer, FnLlm, Intent, IntentClassifier, Orchestrator, Router,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A model that answers `answer` to the question and to the repair round.
fn model(answer: &str) -> Arc<dyn AugmentedLlm> {
    Arc::new(AgentLlm::new(
        Agent::new("model", "You answer."),
        ScriptedProvider::new().then_text(answer).then_text(answer),
    ))
}

fn function(name: &str) -> FnLlm {
    let answer = format!("{name} answered");
    FnLlm::new(name, move |_, _| {
        let answer = answer.clone();
        async move { Ok(answer) }
    })
    .with_description(format!("handles {name}"))
}

/// Names the patterns know, and some they do not.
fn arb_name() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "billing",
        "support",
        "book",
        "w1",
        "good",
        "excellent",
        "nobody",
        "",
    ])
}

/// One object that answers all four questions at once (each pattern reads its own fields),
/// well formed but with any names and numbers.
fn arb_well_formed() -> impl Strategy<Value = Value> {
    let choice = (arb_name(), any::<f64>(), ".{0,8}");
    let task = (".{0,8}", arb_name()).prop_map(|(d, w)| json!({"description": d, "worker": w}));
    let step = (".{0,8}", prop::collection::vec(task, 0..3))
        .prop_map(|(d, t)| json!({"description": d, "tasks": t}));
    (
        prop::collection::vec(choice, 0..4),
        prop::collection::vec(step, 0..3),
        any::<bool>(),
        arb_name(),
    )
        .prop_map(|(choices, steps, flag, rating)| {
            json!({
                "routes": choices.iter().map(|(n, c, r)| json!({"route": n, "confidence": c, "reasoning": r})).collect::<Vec<_>>(),
                "intents": choices.iter().map(|(n, c, r)| json!({"intent": n, "confidence": c, "reasoning": r, "entities": []})).collect::<Vec<_>>(),
                "steps": steps,
                "is_complete": flag,
                "rating": rating,
                "feedback": "",
                "needs_improvement": flag,
                "focus_areas": [],
            })
        })
}

/// JSON in the vocabulary of the patterns' answers, real names and made-up ones mixed.
fn arb_answer_json() -> impl Strategy<Value = Value> {
    let names = arb_name();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(|i| json!(i)),
        names.prop_map(|n| json!(n)),
        ".{0,8}".prop_map(Value::String),
    ];
    let keys = prop::sample::select(vec![
        "routes",
        "route",
        "confidence",
        "reasoning",
        "intents",
        "intent",
        "entities",
        "name",
        "value",
        "steps",
        "tasks",
        "description",
        "worker",
        "is_complete",
        "rating",
        "feedback",
        "needs_improvement",
        "focus_areas",
    ]);
    leaf.prop_recursive(5, 48, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

/// Any text a model could send: JSON of the right vocabulary (maybe in a code fence), or not.
fn arb_answer() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => arb_well_formed().prop_map(|v| v.to_string()),
        3 => arb_answer_json().prop_map(|v| v.to_string()),
        1 => arb_answer_json().prop_map(|v| format!("```json\n{v}\n```")),
        1 => ".{0,40}",
    ]
}

fn check_error(pattern: &str, err: &agentkit_core::Error) -> Result<(), TestCaseError> {
    let msg = err.to_string();
    prop_assert!(
        msg.contains(pattern) || msg.contains("structured output for"),
        "{pattern}: an unclear error: {msg}"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    })]

    #[test]
    fn any_answer_gets_real_names_or_a_clear_error(answer in arb_answer()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let ctx = RunContext::new();

            let router = Router::builder("desk")
                .with_shared_llm(model(&answer))
                .with_function_route(function("billing"))
                .with_function_route(function("support"))
                .with_top_k(2)
                .build()
                .unwrap();
            match router.route("help", &ctx).await {
                Ok(ranked) => {
                    prop_assert!(!ranked.is_empty() && ranked.len() <= 2);
                    for r in ranked {
                        prop_assert!(["billing", "support"].contains(&r.route.as_str()));
                        prop_assert!((0.0..=1.0).contains(&r.confidence));
                    }
                }
                Err(e) => check_error("router `desk`", &e)?,
            }

            let classifier = IntentClassifier::builder("nlu")
                .with_shared_llm(model(&answer))
                .with_intent(Intent::new("book", "Book something"))
                .build()
                .unwrap();
            match classifier.classify("help", &ctx).await {
                Ok(found) => {
                    prop_assert!(found.len() <= 1);
                    for m in found {
                        prop_assert_eq!(m.intent, "book");
                    }
                }
                Err(e) => check_error("intent classifier `nlu`", &e)?,
            }

            let orchestrator = Orchestrator::builder("o", model(&answer))
                .with_worker(function("w1"))
                .with_synthesizer(Arc::new(function("writer")))
                .with_max_iterations(1)
                .with_max_plan_retries(0)
                .build()
                .unwrap();
            match orchestrator.orchestrate("help", &ctx).await {
                Ok(out) => {
                    prop_assert_eq!(out.generation.text(), "writer answered");
                    for task in out.steps.iter().flat_map(|s| &s.tasks) {
                        prop_assert_eq!(&task.task.worker, "w1");
                        prop_assert_eq!(&task.output, "w1 answered");
                    }
                }
                Err(e) => check_error("orchestrator `o`", &e)?,
            }

            let evaluator = EvaluatorOptimizer::builder("e", Arc::new(function("writer")), model(&answer))
                .with_max_refinements(0)
                .build()
                .unwrap();
            match evaluator.optimize("help", &ctx).await {
                Ok(out) => prop_assert_eq!(out.history.len(), 1),
                Err(e) => check_error("evaluator", &e)?,
            }
            Ok(())
        })?;
    }
}
