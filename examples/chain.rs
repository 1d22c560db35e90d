//! Chain: an outliner, a writer and an editor hand a product blurb down the line.
//!
//! `cargo run --example chain` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{Agent, AgentLlm, AugmentedLlm, CollectingSink, RunContext, ScriptedProvider};
use agentkit_patterns::{Chain, ChainInput};

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let outliner = AgentLlm::shared(
        Agent::new("outliner", "Turn the request into a three-point outline. Outline only."),
        common::model(ScriptedProvider::new().then_text(
            "1. Keeps drinks cold for 24 hours\n2. Leak-proof lid for bags\n3. Recycled steel, lifetime warranty",
        )),
    );
    let writer = AgentLlm::shared(
        Agent::new(
            "writer",
            "Write a product blurb of at most 40 words from the outline.",
        ),
        common::model(ScriptedProvider::new().then_text(
            "Meet the TrailFlask: it keeps your drinks ice-cold for 24 hours, its leak-proof lid \
             rides safely in any bag, and it is made from recycled steel with a lifetime warranty.",
        )),
    );
    let editor = AgentLlm::shared(
        Agent::new(
            "editor",
            "Tighten the blurb: active voice, no filler, under 30 words.",
        ),
        common::model(ScriptedProvider::new().then_text(
            "TrailFlask keeps drinks ice-cold for 24 hours, never leaks in your bag, and is built \
             from recycled steel to last a lifetime.",
        )),
    );
    let chain = Chain::builder("product-blurb")
        .with_step(outliner)
        .with_step(writer)
        .with_step(editor)
        .with_input(ChainInput::PreviousOutput)
        .build()?;

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let g = chain
        .generate(
            "A blurb for our insulated steel water bottle, the TrailFlask".into(),
            &ctx,
        )
        .await?;
    println!("\nfinal answer:\n{}", g.text());
    common::print_steps(&sink);
    println!(
        "\n{} model calls, {} tokens in total",
        g.llm_calls,
        g.usage.total_tokens()
    );
    Ok(())
}
