//! Evaluator-optimizer: a writer drafts a cover letter, a critic rates it until it is excellent.
//!
//! `cargo run --example evaluator_optimizer` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{Agent, AgentLlm, CollectingSink, RunContext, ScriptedProvider};
use agentkit_patterns::{EvaluatorOptimizer, Rating};

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let writer = Arc::new(AgentLlm::shared(
        Agent::new("writer", "You write concise, specific cover letters."),
        common::model(
            ScriptedProvider::new()
                .then_text(
                    "Dear hiring manager, I am a hard-working developer and I would love to work \
                     at your company. I am a fast learner. Regards, Sam",
                )
                .then_text(
                    "Dear Ms. Ortiz, I build reliable backend services: at Parcelly I cut our \
                     Rust API's p99 latency from 480 ms to 90 ms. Your platform team's work on \
                     event pipelines is exactly what I want to do next. Regards, Sam Lee",
                ),
        ),
    ));
    let critic = Arc::new(AgentLlm::shared(
        Agent::new("critic", "You evaluate cover letters strictly."),
        common::model(
            ScriptedProvider::new()
                .then_text(
                    r#"{"rating": "fair", "feedback": "Generic: no achievements, no link to the company, no name of the recipient.", "needs_improvement": true, "focus_areas": ["a measurable achievement", "why this company", "address the hiring manager by name"]}"#,
                )
                .then_text(
                    r#"{"rating": "excellent", "feedback": "Specific, measurable and tailored to the team.", "needs_improvement": false, "focus_areas": []}"#,
                ),
        ),
    ));
    let eo = EvaluatorOptimizer::builder("cover-letter", writer, critic)
        .with_min_rating(Rating::Excellent)
        .with_max_refinements(3)
        .with_criteria("Specific achievements, tailored to Acme's platform team, under 80 words.")
        .build()?;

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = eo
        .optimize(
            "Write a cover letter for the backend engineer role on Acme's platform team \
             (hiring manager: Ms. Ortiz). I am Sam Lee; at Parcelly I cut API p99 latency from \
             480 ms to 90 ms.",
            &ctx,
        )
        .await?;
    println!("\nfinal answer:\n{}", out.generation.text());
    println!("\nhistory:");
    for r in &out.history {
        println!(
            "  attempt {}: {:?} — {}",
            r.attempt, r.evaluation.rating, r.evaluation.feedback
        );
    }
    println!("met the bar: {}", out.met_bar);
    common::print_steps(&sink);
    Ok(())
}
