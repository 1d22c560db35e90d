#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Patterns nest, roll up usage and honour the run context.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlmExt, Budget, CollectingSink, RunContext, RunEvent,
    ScriptedProvider,
};
use agentkit_patterns::{Chain, EvaluatorOptimizer, FnLlm, Orchestrator, Parallel, Router};
use serde_json::json;

fn agent(name: &str, description: &str, provider: &Arc<ScriptedProvider>) -> Arc<AgentLlm> {
    Arc::new(AgentLlm::shared(
        Agent::new(name, format!("You are {name}.")).with_description(description),
        provider.clone(),
    ))
}

#[tokio::test]
async fn orchestrator_with_an_evaluator_optimizer_planner_and_a_router_worker_over_a_parallel() {
    let task = json!({"steps": [{"description": "Gather views", "tasks": [
        {"description": "Collect opinions on a four-day work week", "worker": "desk"}]}],
        "is_complete": false});
    let vague = json!({"steps": [{"description": "Think", "tasks": [
        {"description": "Think about it", "worker": "desk"}]}], "is_complete": false});
    let planner_model = Arc::new(
        ScriptedProvider::new()
            .then_text(vague.to_string())
            .then_text(task.to_string())
            .then_text(json!({"steps": [], "is_complete": true}).to_string()),
    );
    let critic_model = Arc::new(
        ScriptedProvider::new()
            .then_text(json!({"rating": "fair", "feedback": "The task is vague; say what to collect.", "needs_improvement": true, "focus_areas": ["specific task"]}).to_string())
            .then_text(json!({"rating": "good", "feedback": "Clear and assigned.", "needs_improvement": false, "focus_areas": []}).to_string())
            .then_text(json!({"rating": "excellent", "feedback": "Done is done.", "needs_improvement": false, "focus_areas": []}).to_string()),
    );
    let planner = EvaluatorOptimizer::builder(
        "careful-planner",
        agent("planner", "", &planner_model),
        agent("critic", "", &critic_model),
    )
    .build()
    .unwrap();

    let optimist = Arc::new(ScriptedProvider::new().then_text("More rest, higher productivity."));
    let pessimist = Arc::new(ScriptedProvider::new().then_text("Coverage gaps for customers."));
    let merger = Arc::new(
        ScriptedProvider::new()
            .then_text("Supporters cite rest and productivity; critics worry about coverage."),
    );
    let opinions = Parallel::builder("opinions")
        .with_description("Collects several opinions on a question")
        .with_shared_branch(agent("optimist", "", &optimist))
        .with_shared_branch(agent("pessimist", "", &pessimist))
        .with_shared_fan_in(agent("merger", "", &merger))
        .build()
        .unwrap();
    let facts = Arc::new(ScriptedProvider::new());
    let classifier = Arc::new(ScriptedProvider::new().then_text(
        json!({"routes": [{"route": "opinions", "confidence": 0.88, "reasoning": "It asks for opinions."}]}).to_string(),
    ));
    let desk = Router::builder("desk")
        .with_description("Answers questions: facts or opinions")
        .with_llm(agent("classifier", "", &classifier).as_ref().clone())
        .with_shared_route(agent("facts", "Looks up facts", &facts))
        .with_route(opinions)
        .build()
        .unwrap();
    let synth = Arc::new(ScriptedProvider::new().then_text(
        "A four-day week is popular for rest and productivity, but plan customer coverage.",
    ));
    let orch = Orchestrator::builder("research", Arc::new(planner))
        .with_worker(desk)
        .with_synthesizer(agent("writer", "", &synth))
        .build()
        .unwrap();

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = orch
        .orchestrate("What do people think of a four-day work week?", &ctx)
        .await
        .unwrap();
    assert_eq!(
        out.generation.text(),
        "A four-day week is popular for rest and productivity, but plan customer coverage."
    );
    // The improved plan (not the vague one) was executed, through the router, by the parallel.
    assert_eq!(
        out.plans[0].steps[0].tasks[0].description,
        "Collect opinions on a four-day work week"
    );
    assert_eq!(
        out.steps[0].tasks[0].output,
        "Supporters cite rest and productivity; critics worry about coverage."
    );
    assert_eq!(facts.call_count(), 0);
    // Planner 3 + critic 3 + classifier 1 + two branches + fan-in + synthesizer = 11 calls, all
    // rolled up into the outer generation and matching the run's totals.
    assert_eq!(out.generation.llm_calls, 11);
    assert_eq!(out.generation.usage, ctx.totals().usage);
    for p in [
        &planner_model,
        &critic_model,
        &classifier,
        &optimist,
        &pessimist,
        &merger,
        &synth,
    ] {
        assert_eq!(p.remaining(), 0);
    }
    let patterns: std::collections::BTreeSet<String> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::PatternStep { pattern, .. } => Some(pattern),
            _ => None,
        })
        .collect();
    assert_eq!(
        patterns.into_iter().collect::<Vec<_>>(),
        ["evaluator_optimizer", "orchestrator", "parallel", "router"]
    );
}

#[tokio::test]
async fn a_budget_stops_a_chain_between_steps() {
    let first = Arc::new(ScriptedProvider::new().then_text("x".repeat(400)));
    let second = Arc::new(ScriptedProvider::new().then_text("never"));
    let chain = Chain::builder("c")
        .with_shared_step(agent("a", "", &first))
        .with_shared_step(agent("b", "", &second))
        .build()
        .unwrap();
    let ctx = RunContext::new().with_budget(Budget::new().with_max_tokens(50));
    let err = chain.generate_str("go", &ctx).await.unwrap_err();
    assert!(err.is_budget_exceeded(), "{err}");
    assert_eq!(second.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_stops_slow_branches_and_workers() {
    let slow = || {
        FnLlm::new("slow", |_t: String, _| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok("late".to_owned())
        })
    };
    let p = Parallel::builder("p").with_branch(slow()).build().unwrap();
    let ctx = RunContext::new().with_timeout(Duration::from_secs(1));
    let err = p.generate_str("x", &ctx).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");

    let planner = Arc::new(ScriptedProvider::new().then_text(
        json!({"steps": [{"description": "s", "tasks": [{"description": "t", "worker": "slow"}]}], "is_complete": true}).to_string(),
    ));
    let orch = Orchestrator::builder("o", agent("planner", "", &planner))
        .with_worker(slow())
        .build()
        .unwrap();
    let ctx = RunContext::new().with_timeout(Duration::from_secs(1));
    let err = orch.generate_str("x", &ctx).await.unwrap_err();
    assert!(err.is_timeout(), "a timed-out worker ends the run: {err}");
}
