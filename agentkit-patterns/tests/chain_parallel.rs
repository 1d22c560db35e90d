#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Chain and Parallel, driven by scripted models.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CollectingSink, Error, ProviderErrorKind,
    RunContext, RunEvent, ScriptedProvider,
};
use agentkit_patterns::{Chain, ChainInput, FailurePolicy, FnLlm, Parallel};

fn agent(name: &str, provider: Arc<ScriptedProvider>) -> AgentLlm {
    AgentLlm::shared(Agent::new(name, format!("You are {name}.")), provider)
}

fn steps(sink: &CollectingSink) -> Vec<(String, String)> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::PatternStep { pattern, step, .. } => Some((pattern, step)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn chain_hands_each_output_to_the_next_step_and_rolls_up_usage() {
    let outline = Arc::new(
        ScriptedProvider::new().then_text("1. Why Rust\n2. Ownership\n3. Fearless concurrency"),
    );
    let writer = Arc::new(ScriptedProvider::new().then_text(
        "Rust gives you speed without fear: ownership rules out data races at compile time.",
    ));
    let chain = Chain::builder("blog")
        .with_step(agent("outliner", outline.clone()))
        .with_step(agent("writer", writer.clone()))
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let g = chain
        .generate("Write a short post about Rust".into(), &ctx)
        .await
        .unwrap();

    assert_eq!(
        g.text(),
        "Rust gives you speed without fear: ownership rules out data races at compile time."
    );
    // The writer saw exactly the outliner's output.
    let writer_req = &writer.requests()[0];
    assert_eq!(
        writer_req.messages.last().unwrap().text(),
        "1. Why Rust\n2. Ownership\n3. Fearless concurrency"
    );
    // Usage of both agents rolls up into the chain's generation and the run.
    assert_eq!(g.llm_calls, 2);
    assert!(g.usage.input_tokens > 0);
    assert_eq!(ctx.totals().usage, g.usage);
    assert_eq!(
        steps(&sink),
        vec![
            ("chain".to_owned(), "step_started".to_owned()),
            ("chain".to_owned(), "step_finished".to_owned()),
            ("chain".to_owned(), "step_started".to_owned()),
            ("chain".to_owned(), "step_finished".to_owned()),
        ]
    );
}

#[tokio::test]
async fn chain_transcript_mode_shows_the_request_and_every_earlier_step() {
    let a =
        Arc::new(ScriptedProvider::new().then_text("Facts: Lisbon is the capital of Portugal."));
    let b = Arc::new(ScriptedProvider::new().then_text("Draft: Lisbon, Portugal's capital."));
    let c = Arc::new(ScriptedProvider::new().then_text("Lisbon is Portugal's capital."));
    let chain = Chain::builder("c")
        .with_step(agent("researcher", a))
        .with_step(agent("drafter", b))
        .with_step(agent("editor", c.clone()))
        .with_input(ChainInput::Transcript)
        .build()
        .unwrap();
    let out = chain
        .generate_str("What is the capital of Portugal?", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(out, "Lisbon is Portugal's capital.");
    let seen = c.requests()[0].messages.last().unwrap().text();
    assert!(seen.contains("What is the capital of Portugal?"), "{seen}");
    assert!(seen.contains("Step 1 (researcher)"), "{seen}");
    assert!(
        seen.contains("Facts: Lisbon is the capital of Portugal."),
        "{seen}"
    );
    assert!(
        seen.contains("Draft: Lisbon, Portugal's capital."),
        "{seen}"
    );
}

#[tokio::test]
async fn chain_stops_at_a_failing_step_and_says_which() {
    let ok = Arc::new(ScriptedProvider::new().then_text("first"));
    let bad =
        Arc::new(ScriptedProvider::new().then_error(ProviderErrorKind::Server, "upstream 500"));
    let never = Arc::new(ScriptedProvider::new().then_text("unused"));
    let chain = Chain::builder("c")
        .with_step(agent("a", ok))
        .with_step(agent("b", bad))
        .with_step(agent("c", never.clone()))
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let err = chain
        .generate("go".into(), &RunContext::new().with_events(sink.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Server));
    assert_eq!(never.call_count(), 0);
    assert!(sink.events().iter().any(|e| matches!(e,
        RunEvent::Error { source, .. } if source == "chain `c` step 1 (`b`)")));
}

#[test]
fn empty_chain_and_empty_parallel_are_rejected_with_a_hint() {
    let err = Chain::builder("nothing").build().unwrap_err();
    assert!(
        err.to_string().contains("chain `nothing` has no steps"),
        "{err}"
    );
    let err = Parallel::builder("none").build().unwrap_err();
    assert!(err.to_string().contains("with_branch"), "{err}");
}

#[tokio::test]
async fn parallel_fan_in_llm_sees_each_branch_text_by_name() {
    let pros = Arc::new(ScriptedProvider::new().then_text("Pro: compile-time memory safety."));
    let cons = Arc::new(ScriptedProvider::new().then_text("Con: a steep learning curve."));
    let judge = Arc::new(
        ScriptedProvider::new()
            .then_text("Rust trades a steep learning curve for compile-time memory safety."),
    );
    let p = Parallel::builder("review")
        .with_branch(agent("pros", pros))
        .with_branch(agent("cons", cons))
        .with_branch(FnLlm::new("length", |t: String, _| async move {
            Ok(format!("{} words", t.split_whitespace().count()))
        }))
        .with_fan_in(agent("judge", judge.clone()))
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let g = p
        .generate("Should we use Rust?".into(), &ctx)
        .await
        .unwrap();
    assert_eq!(
        g.text(),
        "Rust trades a steep learning curve for compile-time memory safety."
    );
    let prompt = judge.requests()[0].messages.last().unwrap().text();
    assert!(prompt.contains("Should we use Rust?"), "{prompt}");
    assert!(
        prompt.contains("Answer of `pros`\nPro: compile-time memory safety."),
        "{prompt}"
    );
    assert!(
        prompt.contains("Answer of `cons`\nCon: a steep learning curve."),
        "{prompt}"
    );
    assert!(prompt.contains("Answer of `length`\n4 words"), "{prompt}");
    assert!(!prompt.contains("Generation {"), "no debug dumps: {prompt}");
    // Two branch calls and the fan-in call.
    assert_eq!(g.llm_calls, 3);
    let s = steps(&sink);
    assert_eq!(s.iter().filter(|(_, k)| k == "branch_finished").count(), 3);
    assert!(s.iter().any(|(_, k)| k == "fan_in"));
}

#[tokio::test]
async fn parallel_fail_fast_returns_the_branch_error() {
    let ok = Arc::new(ScriptedProvider::new().then_text("fine"));
    let bad = Arc::new(ScriptedProvider::new().then_error(ProviderErrorKind::Auth, "bad key"));
    let p = Parallel::builder("p")
        .with_branch(agent("ok", ok))
        .with_branch(agent("bad", bad))
        .build()
        .unwrap();
    let err = p.generate_str("x", &RunContext::new()).await.unwrap_err();
    assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Auth));
}

#[tokio::test]
async fn parallel_continue_policy_reports_the_failure_to_the_fan_in() {
    let ok = Arc::new(ScriptedProvider::new().then_text("Paris"));
    let bad =
        Arc::new(ScriptedProvider::new().then_error(ProviderErrorKind::RateLimited, "slow down"));
    let p = Parallel::builder("p")
        .with_branch(agent("fast", ok))
        .with_branch(agent("flaky", bad))
        .with_failure_policy(FailurePolicy::Continue)
        .with_fan_in_fn(|input, _ctx| async move {
            let mut lines = Vec::new();
            for b in &input.branches {
                lines.push(match &b.result {
                    Ok(t) => format!("{}: {t}", b.name),
                    Err(e) => format!("{} failed: {e}", b.name),
                });
            }
            Ok(lines.join("\n"))
        })
        .build()
        .unwrap();
    let out = p
        .generate_str("capital of France?", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(
        out,
        "fast: Paris\nflaky failed: scripted: rate limited: slow down"
    );
}

#[tokio::test(start_paused = true)]
async fn parallel_never_runs_more_branches_than_the_limit() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut b = Parallel::builder("bounded").with_max_concurrency(2);
    for i in 0..6 {
        let (running, peak) = (running.clone(), peak.clone());
        b = b.with_branch(FnLlm::new(format!("b{i}"), move |_t: String, _| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(format!("r{i}"))
            }
        }));
    }
    let p = b.build().unwrap();
    let out = p.fan_out(&"go".into(), &RunContext::new()).await.unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    // Outcomes come back in branch order whatever order they finished in.
    let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["b0", "b1", "b2", "b3", "b4", "b5"]);
}

#[tokio::test]
async fn a_cancelled_run_stops_parallel_and_chain_before_any_call() {
    let p1 = Arc::new(ScriptedProvider::new().then_text("x"));
    let p = Parallel::builder("p")
        .with_branch(agent("a", p1.clone()))
        .build()
        .unwrap();
    let ctx = RunContext::new();
    ctx.cancel();
    let err: Error = p.generate_str("x", &ctx).await.unwrap_err();
    assert!(err.is_cancelled());
    let chain = Chain::builder("c")
        .with_step(agent("a", p1.clone()))
        .build()
        .unwrap();
    assert!(
        chain
            .generate_str("x", &ctx)
            .await
            .unwrap_err()
            .is_cancelled()
    );
    assert_eq!(p1.call_count(), 0);
}
