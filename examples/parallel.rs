//! Parallel: three reviewers and a word counter grade a short story at once; a grader fans in.
//!
//! `cargo run --example parallel` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{Agent, AgentLlm, AugmentedLlm, CollectingSink, RunContext, ScriptedProvider};
use agentkit_patterns::{FailurePolicy, FnLlm, Parallel};

const STORY: &str = "The fox jumpd over the lazy dog. It were the fastest fox in the forest, \
                     and it knew the moon was made of cheese.";

fn reviewer(name: &str, instruction: &str, reply: &str) -> AgentLlm {
    AgentLlm::shared(
        Agent::new(name, instruction),
        common::model(ScriptedProvider::new().then_text(reply)),
    )
}

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let proofreader = reviewer(
        "proofreader",
        "List spelling and grammar errors in the story.",
        "Two errors: \"jumpd\" should be \"jumped\"; \"It were\" should be \"It was\".",
    );
    let fact_checker = reviewer(
        "fact_checker",
        "List factual claims in the story that are false.",
        "The moon is not made of cheese (fine in fiction, but flag it if the piece is factual).",
    );
    let style = reviewer(
        "style_enforcer",
        "Judge the story's style against APA guidance for narrative prose.",
        "Short and vivid; vary sentence openings and avoid the cliché \"lazy dog\".",
    );
    let words = FnLlm::new("word_count", |text: String, _ctx| async move {
        Ok(format!("{} words", text.split_whitespace().count()))
    });
    let grader = reviewer(
        "grader",
        "Combine the reviews into a grade (A-F) with a short report.",
        "Grade: C+. Fix the two grammar errors (\"jumped\", \"It was\"), replace the cliché, and \
         keep the cheese moon only if the piece is clearly fiction. Length is fine.",
    );
    let parallel = Parallel::builder("story-review")
        .with_branch(proofreader)
        .with_branch(fact_checker)
        .with_branch(style)
        .with_branch(words)
        .with_fan_in(grader)
        .with_max_concurrency(4)
        .with_failure_policy(FailurePolicy::Continue)
        .build()?;

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let g = parallel.generate(STORY.into(), &ctx).await?;
    println!("\nfinal answer:\n{}", g.text());
    common::print_steps(&sink);
    println!("\n{} model calls in total", g.llm_calls);
    Ok(())
}
