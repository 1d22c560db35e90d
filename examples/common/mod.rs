//! Shared by the pattern examples: the model to run on, and printing a run's steps.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Once};

use agentkit_core::{CollectingSink, LlmProvider, RunEvent, ScriptedProvider};

/// Where the agents of an example get their model: given the scripted model an agent runs on
/// offline, the model to use ([`model`] in the examples; a test may point it elsewhere).
pub type Models<'a> = &'a dyn Fn(ScriptedProvider) -> Arc<dyn LlmProvider>;

/// The model for one agent of an example: the real provider named by the environment
/// (`OPENAI_API_KEY`/`OPENAI_BASE_URL`, else `ANTHROPIC_API_KEY`/`ANTHROPIC_BASE_URL`, else
/// `GEMINI_API_KEY`/`GOOGLE_API_KEY`), or
/// offline the given scripted model, whose replies are what a real model would say to that
/// agent.
pub fn model(scripted: ScriptedProvider) -> Arc<dyn LlmProvider> {
    static NOTICE: Once = Once::new();
    match agentkit_core::provider::from_env() {
        Ok(Some(real)) => {
            NOTICE.call_once(|| {
                println!(
                    "using {} ({})",
                    real.name(),
                    real.default_model().unwrap_or("default model")
                );
            });
            real
        }
        Ok(None) => {
            NOTICE.call_once(|| {
                println!(
                    "no OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY set: running the offline scripted model"
                );
            });
            Arc::new(scripted)
        }
        Err(e) => {
            NOTICE.call_once(|| {
                println!("the provider in the environment is misconfigured ({e}); running the offline scripted model");
            });
            Arc::new(scripted)
        }
    }
}

/// Print the pattern steps, tool calls and handoffs a run emitted.
pub fn print_steps(sink: &CollectingSink) {
    println!("\n--- steps ---");
    for event in sink.events() {
        match event {
            RunEvent::PatternStep {
                pattern,
                name,
                step,
                detail,
            } => println!(
                "[{pattern} {name}] {step}: {}",
                compact(&detail.to_string())
            ),
            RunEvent::ToolCallStarted {
                agent,
                tool,
                arguments,
                ..
            } => println!("  [{agent}] calls {tool}({arguments})"),
            RunEvent::LlmResponse { agent, usage, .. } => println!(
                "  [{agent}] model answered ({} in / {} out tokens)",
                usage.input_tokens, usage.output_tokens
            ),
            RunEvent::Error { source, message } => println!("  [{source}] error: {message}"),
            _ => {}
        }
    }
}

fn compact(s: &str) -> String {
    if s.chars().count() > 160 {
        format!("{}…", s.chars().take(160).collect::<String>())
    } else {
        s.to_owned()
    }
}
