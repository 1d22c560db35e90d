#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every pattern streams: the deltas are its answer, coming from the sub-call the pattern
//! streams, and the stream ends with the same generation `generate` returns.

use std::sync::Arc;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionResponse, Generation, GenerationEvent, LlmProvider,
    RunContext, ScriptedProvider,
};
use agentkit_patterns::{
    BagOfWordsEmbedder, Chain, EvaluatorOptimizer, FnLlm, Orchestrator, Parallel, Rating, Router,
    Swarm, SwarmMember,
};
use futures::StreamExt;
use serde_json::json;

fn agent(name: &str, description: &str, script: ScriptedProvider) -> AgentLlm {
    AgentLlm::new(
        Agent::new(name, format!("You are {name}.")).with_description(description),
        script,
    )
}

/// `(agent, text)` of every delta (the scripted model streams its text word by word), and the final generation.
async fn stream(llm: &dyn AugmentedLlm, input: &str) -> (Vec<(String, String)>, Generation) {
    let ctx = RunContext::new();
    let mut deltas = Vec::new();
    let mut s = llm.generate_stream(input.into(), &ctx);
    while let Some(event) = s.next().await {
        match event.unwrap() {
            GenerationEvent::TextDelta { agent, text } => deltas.push((agent, text)),
            GenerationEvent::Done(g) => {
                assert!(s.next().await.is_none(), "Done is the last event");
                return (deltas, g);
            }
            _ => {}
        }
    }
    panic!("the stream ended without Done");
}

fn from(deltas: &[(String, String)]) -> Vec<&str> {
    let mut agents: Vec<&str> = deltas.iter().map(|(a, _)| a.as_str()).collect();
    agents.dedup();
    agents
}

fn text(deltas: &[(String, String)]) -> String {
    deltas.iter().map(|(_, t)| t.as_str()).collect()
}

#[tokio::test]
async fn a_chain_streams_its_last_step() {
    let chain = Chain::builder("c")
        .with_step(agent(
            "drafter",
            "",
            ScriptedProvider::new().then_text("a rough draft"),
        ))
        .with_step(agent(
            "editor",
            "",
            ScriptedProvider::new().then_text("The polished final text."),
        ))
        .build()
        .unwrap();
    let (deltas, g) = stream(&chain, "write").await;
    assert_eq!(from(&deltas), ["editor"]);
    assert_eq!(deltas.len(), 4, "word by word: {deltas:?}");
    assert_eq!(text(&deltas), g.text());
    assert_eq!(g.text(), "The polished final text.");
    assert_eq!(g.llm_calls, 2);
}

#[tokio::test]
async fn a_router_streams_its_chosen_route() {
    let router = Router::builder("desk")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_route(agent(
            "billing",
            "invoices refunds payments billing",
            ScriptedProvider::new().then_text("Your refund is on its way."),
        ))
        .with_route(agent(
            "weather",
            "weather forecast rain sun",
            ScriptedProvider::new().then_text("Sunny."),
        ))
        .build()
        .unwrap();
    let (deltas, g) = stream(&router, "where is my refund for the invoice").await;
    assert_eq!(from(&deltas), ["billing"]);
    assert!(deltas.len() > 1);
    assert_eq!(text(&deltas), "Your refund is on its way.");
    assert_eq!(g.text(), text(&deltas));
}

#[tokio::test]
async fn a_parallel_streams_its_fan_in() {
    let branch = |name: &'static str| {
        FnLlm::new(name, move |t: String, _| async move {
            Ok(format!("{name}: {t}"))
        })
    };
    let parallel = Parallel::builder("p")
        .with_branch(branch("a"))
        .with_branch(branch("b"))
        .with_fan_in(agent(
            "merger",
            "",
            ScriptedProvider::new().then_text("Both agree on everything."),
        ))
        .build()
        .unwrap();
    let (deltas, g) = stream(&parallel, "q").await;
    assert_eq!(from(&deltas), ["merger"]);
    assert_eq!(deltas.len(), 4);
    assert_eq!(text(&deltas), g.text());

    // A join has no model: its whole answer is one delta.
    let join = Parallel::builder("j")
        .with_branch(branch("a"))
        .with_branch(branch("b"))
        .build()
        .unwrap();
    let (deltas, g) = stream(&join, "q").await;
    assert_eq!(deltas.len(), 1);
    assert_eq!(text(&deltas), g.text());
    assert!(g.text().contains("a: q") && g.text().contains("b: q"));
}

fn eval(rating: &str) -> String {
    json!({"rating": rating, "feedback": "f", "needs_improvement": rating != "excellent", "focus_areas": []})
        .to_string()
}

#[tokio::test]
async fn an_evaluator_optimizer_streams_only_its_accepted_answer() {
    let eo = EvaluatorOptimizer::builder(
        "eo",
        Arc::new(agent(
            "writer",
            "",
            ScriptedProvider::new()
                .then_text("Buy shoes.")
                .then_text("Run farther in featherlight shoes."),
        )),
        Arc::new(agent(
            "critic",
            "",
            ScriptedProvider::new()
                .then_text(eval("fair"))
                .then_text(eval("excellent")),
        )),
    )
    .with_min_rating(Rating::Good)
    .build()
    .unwrap();
    let (deltas, g) = stream(&eo, "a tagline").await;
    assert_eq!(
        deltas,
        [(
            "eo".to_owned(),
            "Run farther in featherlight shoes.".to_owned()
        )]
    );
    assert_eq!(g.text(), "Run farther in featherlight shoes.");
    assert_eq!(g.llm_calls, 4);
}

#[tokio::test]
async fn an_orchestrator_streams_its_synthesis() {
    let plan = |steps: serde_json::Value, complete: bool| {
        json!({"steps": steps, "is_complete": complete}).to_string()
    };
    let orch = Orchestrator::builder(
        "o",
        Arc::new(agent(
            "planner",
            "",
            ScriptedProvider::new().then_text(plan(
                json!([{"description": "look", "tasks": [{"description": "Look it up", "worker": "researcher"}]}]),
                true,
            )),
        )),
    )
    .with_shared_worker(Arc::new(agent(
        "researcher",
        "Finds facts",
        ScriptedProvider::new().then_text("Fact: the sky is blue."),
    )))
    .with_synthesizer(Arc::new(agent(
        "writer",
        "",
        ScriptedProvider::new().then_text("The sky is blue, as research shows."),
    )))
    .build()
    .unwrap();
    let (deltas, g) = stream(&orch, "what colour is the sky").await;
    assert_eq!(from(&deltas), ["writer"]);
    assert!(deltas.len() > 1);
    assert_eq!(text(&deltas), g.text());
    assert_eq!(g.llm_calls, 3);
}

#[tokio::test]
async fn a_swarm_streams_the_active_agent_across_handoffs() {
    let swarm = Swarm::builder("support")
        .with_member(
            SwarmMember::new(
                Agent::new("triage", "Send billing questions to billing."),
                Arc::new(
                    ScriptedProvider::new().then(agentkit_core::ScriptedReply::Response(
                        CompletionResponse::new(
                            agentkit_core::Message::new(
                                agentkit_core::Role::Assistant,
                                vec![
                                    agentkit_core::Content::text("Let me transfer you. "),
                                    agentkit_core::Content::tool_call(
                                        "t1",
                                        "transfer_to_billing",
                                        json!({}),
                                    ),
                                ],
                            ),
                            agentkit_core::Usage::new(1, 1),
                            agentkit_core::StopReason::ToolUse,
                            "m",
                        ),
                    )),
                ) as Arc<dyn LlmProvider>,
            )
            .with_handoff("billing"),
        )
        .with_member(SwarmMember::new(
            Agent::new("billing", "You handle refunds."),
            Arc::new(ScriptedProvider::new().then_text("Refund done for order A-17."))
                as Arc<dyn LlmProvider>,
        ))
        .build()
        .unwrap();
    let (deltas, g) = stream(&swarm, "refund A-17").await;
    assert_eq!(from(&deltas), ["triage", "billing"]);
    let billing: String = deltas
        .iter()
        .filter(|(a, _)| a == "billing")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(billing, g.text());
    assert_eq!(g.text(), "Refund done for order A-17.");
}

#[tokio::test]
async fn nested_patterns_stream_through_each_other() {
    // A router whose chosen route is a chain streams that chain's last step.
    let chain = Chain::builder("refunds")
        .with_description("invoices refunds payments billing")
        .with_step(agent(
            "checker",
            "",
            ScriptedProvider::new().then_text("checked"),
        ))
        .with_step(agent(
            "replier",
            "",
            ScriptedProvider::new().then_text("Refund approved and sent."),
        ))
        .build()
        .unwrap();
    let router = Router::builder("desk")
        .with_embedder(BagOfWordsEmbedder::new())
        .with_route(chain)
        .with_route(agent(
            "weather",
            "weather forecast rain sun",
            ScriptedProvider::new().then_text("Sunny."),
        ))
        .build()
        .unwrap();
    let (deltas, g) = stream(&router, "refund my invoice payment").await;
    assert_eq!(from(&deltas), ["replier"]);
    assert_eq!(deltas.len(), 4);
    assert_eq!(text(&deltas), g.text());
}
