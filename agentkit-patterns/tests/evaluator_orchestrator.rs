#![allow(clippy::unwrap_used, clippy::expect_used)]
//! EvaluatorOptimizer and Orchestrator.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CollectingSink, RunContext, RunEvent,
    ScriptedProvider,
};
use agentkit_patterns::{EvaluatorOptimizer, FnLlm, Orchestrator, PlanMode, Rating};
use serde_json::json;

fn agent(name: &str, description: &str, provider: Arc<ScriptedProvider>) -> Arc<AgentLlm> {
    Arc::new(AgentLlm::shared(
        Agent::new(name, format!("You are {name}.")).with_description(description),
        provider,
    ))
}

fn eval(rating: &str, feedback: &str, focus: &[&str]) -> String {
    json!({"rating": rating, "feedback": feedback, "needs_improvement": rating != "excellent", "focus_areas": focus}).to_string()
}

fn pattern_steps(sink: &CollectingSink, pattern: &str) -> Vec<(String, serde_json::Value)> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::PatternStep {
                pattern: p,
                step,
                detail,
                ..
            } if p == pattern => Some((step, detail)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn evaluator_optimizer_refines_with_feedback_until_the_bar_is_met() {
    let writer = Arc::new(
        ScriptedProvider::new()
            .then_text("Buy our shoes.")
            .then_text("Run farther in featherlight shoes built for marathon days."),
    );
    let critic = Arc::new(
        ScriptedProvider::new()
            .then_text(eval(
                "fair",
                "Too generic; say who it is for.",
                &["audience", "benefit"],
            ))
            .then_text(eval("excellent", "Clear audience and benefit.", &[])),
    );
    let eo = EvaluatorOptimizer::builder(
        "tagline",
        agent("writer", "", writer.clone()),
        agent("critic", "", critic.clone()),
    )
    .with_min_rating(Rating::Good)
    .build()
    .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = eo
        .optimize("A tagline for running shoes", &ctx)
        .await
        .unwrap();
    assert!(out.met_bar);
    assert_eq!(out.best_attempt, 1);
    assert_eq!(
        out.generation.text(),
        "Run farther in featherlight shoes built for marathon days."
    );
    assert_eq!(out.history.len(), 2);
    assert_eq!(out.history[0].evaluation.rating, Rating::Fair);
    assert_eq!(out.generation.llm_calls, 4);
    // The rewrite request carries the feedback and the focus areas.
    let rewrite = writer.requests()[1].messages.last().unwrap().text();
    assert!(rewrite.contains("Buy our shoes."), "{rewrite}");
    assert!(
        rewrite.contains("Too generic; say who it is for."),
        "{rewrite}"
    );
    assert!(rewrite.contains("- audience"), "{rewrite}");
    let ratings: Vec<_> = pattern_steps(&sink, "evaluator_optimizer")
        .into_iter()
        .filter(|(s, _)| s == "rating")
        .map(|(_, d)| d["rating"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ratings, ["fair", "excellent"]);
}

#[tokio::test]
async fn evaluator_optimizer_returns_the_best_answer_when_the_bar_is_never_met() {
    let writer = Arc::new(
        ScriptedProvider::new()
            .then_text("draft one")
            .then_text("draft two")
            .then_text("draft three"),
    );
    let critic = Arc::new(
        ScriptedProvider::new()
            .then_text(eval("poor", "Off topic.", &["topic"]))
            .then_text(eval("good", "Nearly there.", &["tone"]))
            .then_text(eval("fair", "Worse than before.", &["tone"])),
    );
    let eo = EvaluatorOptimizer::builder(
        "e",
        agent("writer", "", writer.clone()),
        agent("critic", "", critic),
    )
    .with_min_rating(Rating::Excellent)
    .with_max_refinements(2)
    .build()
    .unwrap();
    let out = eo.optimize("write", &RunContext::new()).await.unwrap();
    assert!(!out.met_bar);
    assert_eq!(out.history.len(), 3, "first answer plus two refinements");
    assert_eq!(out.best_attempt, 1);
    assert_eq!(out.generation.text(), "draft two");
    assert_eq!(writer.remaining(), 0);
    // Usage counts all six calls even though an earlier answer is returned.
    assert_eq!(out.generation.llm_calls, 6);
}

#[test]
fn evaluator_optimizer_rejects_one_agent_grading_itself() {
    let a: Arc<dyn AugmentedLlm> = agent("a", "", Arc::new(ScriptedProvider::new()));
    let err = EvaluatorOptimizer::builder("e", a.clone(), a)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("same object"), "{err}");
}

fn plan(steps: serde_json::Value, complete: bool) -> String {
    json!({"steps": steps, "is_complete": complete}).to_string()
}

#[tokio::test(start_paused = true)]
async fn orchestrator_runs_a_full_plan_with_parallel_tasks_and_synthesizes() {
    let planner = Arc::new(
        ScriptedProvider::new()
            .then_text(plan(
                json!([
                    {"description": "Research both cities", "tasks": [
                        {"description": "Summarise Lisbon's climate", "worker": "lisbon"},
                        {"description": "Summarise Porto's climate", "worker": "porto"}
                    ]},
                    {"description": "Compare", "tasks": [
                        {"description": "Compare the two climates", "worker": "analyst"}
                    ]}
                ]),
                false,
            ))
            .then_text(plan(json!([]), true)),
    );
    // The two research workers each take 1s; run in parallel the step takes 1s, not 2s.
    let slow = |name: &'static str, answer: &'static str| {
        FnLlm::new(name, move |_t: String, _| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(answer.to_owned())
        })
        .with_description(format!("Knows {name}"))
    };
    let analyst =
        Arc::new(ScriptedProvider::new().then_text("Porto is wetter and cooler than Lisbon."));
    let synth = Arc::new(
        ScriptedProvider::new()
            .then_text("Choose Lisbon for sun; Porto is cooler and gets more rain."),
    );
    let orch = Orchestrator::builder("travel", agent("planner", "", planner.clone()))
        .with_worker(slow("lisbon", "Lisbon: mild, sunny, 17°C average."))
        .with_worker(slow("porto", "Porto: cooler, rainy winters, 15°C average."))
        .with_shared_worker(agent("analyst", "Compares findings", analyst.clone()))
        .with_synthesizer(agent("writer", "", synth.clone()))
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let started = tokio::time::Instant::now();
    let out = orch
        .orchestrate("Lisbon or Porto for a winter stay?", &ctx)
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "tasks of a step run in parallel"
    );
    assert_eq!(
        out.generation.text(),
        "Choose Lisbon for sun; Porto is cooler and gets more rain."
    );
    assert_eq!(out.plans.len(), 2);
    assert_eq!(out.steps.len(), 2);
    assert_eq!(
        out.steps[0].tasks[1].output,
        "Porto: cooler, rainy winters, 15°C average."
    );
    // The analyst saw the research results; the synthesizer saw everything.
    let analyst_prompt = analyst.requests()[0].messages.last().unwrap().text();
    assert!(
        analyst_prompt.contains("Lisbon: mild, sunny"),
        "{analyst_prompt}"
    );
    let synth_prompt = synth.requests()[0].messages.last().unwrap().text();
    assert!(
        synth_prompt.contains("Porto is wetter and cooler than Lisbon."),
        "{synth_prompt}"
    );
    // planner x2, analyst, synthesizer.
    assert_eq!(out.generation.llm_calls, 4);
    let steps: Vec<String> = pattern_steps(&sink, "orchestrator")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        steps,
        [
            "plan",
            "step_started",
            "step_finished",
            "step_started",
            "step_finished",
            "plan",
            "synthesis_started"
        ]
    );
}

#[tokio::test]
async fn a_plan_naming_an_unknown_worker_goes_back_to_the_planner_with_the_error() {
    let planner = Arc::new(
        ScriptedProvider::new()
            .then_text(plan(json!([{"description": "s", "tasks": [{"description": "t", "worker": "wizard"}]}]), false))
            .then_text(plan(json!([{"description": "s", "tasks": [{"description": "Say hi", "worker": "greeter"}]}]), true)),
    );
    let orch = Orchestrator::builder("o", agent("planner", "", planner.clone()))
        .with_worker(FnLlm::new("greeter", |_t: String, _| async {
            Ok("hi".to_owned())
        }))
        .with_synthesizer(agent(
            "s",
            "",
            Arc::new(ScriptedProvider::new().then_text("hi!")),
        ))
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let out = orch
        .orchestrate("greet", &RunContext::new().with_events(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.generation.text(), "hi!");
    let retry = planner.requests()[1].messages.last().unwrap().text();
    assert!(retry.contains("`wizard`, which is not a worker"), "{retry}");
    assert!(retry.contains("`greeter`"), "{retry}");
    assert!(
        pattern_steps(&sink, "orchestrator")
            .iter()
            .any(|(s, _)| s == "plan_rejected")
    );
}

#[tokio::test]
async fn a_planner_that_keeps_failing_ends_the_run_with_a_clear_error() {
    let bad = plan(
        json!([{"description": "s", "tasks": [{"description": "t", "worker": "ghost"}]}]),
        false,
    );
    let planner = Arc::new(
        ScriptedProvider::new()
            .then_text(bad.clone())
            .then_text(bad.clone())
            .then_text("not json at all")
            .then_text("still not json"),
    );
    let orch = Orchestrator::builder("o", agent("planner", "", planner.clone()))
        .with_worker(FnLlm::new("w", |t: String, _| async move { Ok(t) }))
        .with_max_plan_retries(2)
        .build()
        .unwrap();
    let err = orch
        .generate_str("do it", &RunContext::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("produced no valid plan after 3 attempts"),
        "{msg}"
    );
    assert!(
        msg.contains("structured output"),
        "last problem is named: {msg}"
    );
    assert_eq!(planner.remaining(), 0);
}

#[tokio::test]
async fn iterative_mode_plans_one_step_at_a_time_within_max_iterations() {
    let step = |w: &str| {
        plan(
            json!([{"description": w, "tasks": [{"description": w, "worker": "counter"}]},
                                     {"description": "ignored in iterative mode", "tasks": [{"description": "x", "worker": "counter"}]}]),
            false,
        )
    };
    let planner = Arc::new(
        ScriptedProvider::new()
            .then_text(step("one"))
            .then_text(step("two"))
            .then_text(step("three")),
    );
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c2 = calls.clone();
    let orch = Orchestrator::builder("o", agent("planner", "", planner))
        .with_worker(FnLlm::new("counter", move |_t: String, _| {
            let n = c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move { Ok(format!("done {n}")) }
        }))
        .with_mode(PlanMode::Iterative)
        .with_max_iterations(2)
        .with_synthesizer(agent(
            "s",
            "",
            Arc::new(ScriptedProvider::new().then_text("two steps done")),
        ))
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let out = orch
        .orchestrate("count", &RunContext::new().with_events(sink.clone()))
        .await
        .unwrap();
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one task per iteration"
    );
    assert_eq!(out.steps.len(), 2);
    assert_eq!(out.generation.text(), "two steps done");
    assert!(
        pattern_steps(&sink, "orchestrator")
            .iter()
            .any(|(s, _)| s == "max_iterations_reached")
    );
}

#[test]
fn orchestrator_without_workers_is_rejected() {
    let p: Arc<dyn AugmentedLlm> = agent("p", "", Arc::new(ScriptedProvider::new()));
    let err = Orchestrator::builder("o", p).build().unwrap_err();
    assert!(
        err.to_string().contains("orchestrator `o` has no workers"),
        "{err}"
    );
}

#[tokio::test]
async fn a_strict_planner_is_offered_only_the_real_workers_and_sees_their_instructions() {
    let planner = Arc::new(
        ScriptedProvider::new()
            .then_text(plan(
                json!([{"description": "s", "tasks": [{"description": "Say hi", "worker": "greeter"}]}]),
                true,
            ))
            .then_text("Hi!"),
    );
    // No description: the planner is shown the worker's instruction.
    let greeter = AgentLlm::shared(
        Agent::new("greeter", "You greet people warmly."),
        Arc::new(ScriptedProvider::new().then_text("hello")),
    );
    let orch = Orchestrator::builder("o", agent("planner", "", planner.clone()))
        .with_worker(greeter)
        .with_worker(FnLlm::new("echo", |t: String, _| async move { Ok(t) }))
        .build()
        .unwrap();
    let out = orch
        .orchestrate("greet me", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(out.steps[0].tasks[0].output, "hello");
    let request = &planner.requests()[0];
    let prompt = request.messages.last().unwrap().text();
    assert!(
        prompt.contains("- `greeter`: You greet people warmly.\n"),
        "{prompt}"
    );
    assert!(prompt.contains("- `echo`: echo\n"), "{prompt}");
    let format = request.response_format.clone().unwrap();
    assert!(format.strict);
    // Either steps (each with at least one task for a real worker), or none when complete.
    let branches = format.schema["properties"]["steps"]["anyOf"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(branches[0]["minItems"], 1);
    assert_eq!(branches[1]["maxItems"], 0);
    let tasks = &branches[0]["items"]["properties"]["tasks"];
    assert_eq!(tasks["minItems"], 1);
    assert_eq!(
        tasks["items"]["properties"]["worker"]["enum"],
        json!(["greeter", "echo"])
    );
}

#[tokio::test]
async fn a_strict_evaluator_is_offered_only_the_rating_levels() {
    let critic = Arc::new(ScriptedProvider::new().then_text(eval("excellent", "fine", &[])));
    let eo = EvaluatorOptimizer::builder(
        "e",
        agent(
            "writer",
            "",
            Arc::new(ScriptedProvider::new().then_text("a poem")),
        ),
        agent("critic", "", critic.clone()),
    )
    .build()
    .unwrap();
    let out = eo
        .optimize("write a poem", &RunContext::new())
        .await
        .unwrap();
    assert!(out.met_bar);
    let format = critic.requests()[0].response_format.clone().unwrap();
    assert!(format.strict);
    assert_eq!(
        format.schema["properties"]["rating"]["enum"],
        json!(["poor", "fair", "good", "excellent"])
    );
    assert_eq!(
        format.schema["required"],
        json!(["feedback", "focus_areas", "needs_improvement", "rating"])
    );
}
