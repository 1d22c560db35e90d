//! Quickstart: an agent with a local Rust function tool answers a question, streamed: the
//! answer is printed token by token as the model writes it, with the tool call in between.
//!
//! ```sh
//! cargo run --example quickstart
//! OPENAI_API_KEY=sk-... cargo run --example quickstart            # real OpenAI model
//! ANTHROPIC_API_KEY=sk-ant-... cargo run --example quickstart     # real Anthropic model
//! GEMINI_API_KEY=... cargo run --example quickstart                # real Gemini model
//! OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=x cargo run --example quickstart  # Ollama
//! ```
//!
//! Without a key it runs an offline scripted model that still makes a real tool-call round trip
//! through the agent loop: the model asks for the tool, the Rust function runs, the model answers
//! from its result (streamed word by word, as a real model streams tokens).

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use agentkit::core::provider;
use agentkit::prelude::*;
use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;

/// Arguments of the `convert_temperature` tool.
#[derive(Deserialize, JsonSchema)]
struct Convert {
    /// Degrees Celsius.
    celsius: f64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tool = FnTool::new(
        "convert_temperature",
        "Convert a temperature from Celsius to Fahrenheit",
        |c: Convert| async move {
            Ok::<_, std::convert::Infallible>(format!("{:.1}°F", c.celsius * 9.0 / 5.0 + 32.0))
        },
    );

    let model: Arc<dyn LlmProvider> = match provider::from_env()? {
        Some(p) => {
            println!(
                "using {} ({})",
                p.name(),
                p.default_model().unwrap_or("default model")
            );
            p
        }
        None => {
            println!(
                "no OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY set: running the offline \
                 scripted model (the tool call below is real)"
            );
            Arc::new(
                ScriptedProvider::new()
                    .with_model("scripted-model")
                    .then_tool_call("convert_temperature", serde_json::json!({"celsius": 21.5}))
                    .with_fallback(|req| {
                        // Answer from the tool result the agent loop fed back.
                        let result = req
                            .messages
                            .last()
                            .and_then(|m| m.content.first())
                            .and_then(|c| match c {
                                Content::ToolResult { content, .. } => {
                                    content.first().and_then(|c| c.as_text())
                                }
                                _ => None,
                            })
                            .unwrap_or("unknown")
                            .to_owned();
                        Ok(agentkit::core::CompletionResponse::new(
                            Message::assistant(format!("21.5°C is {result}.")),
                            Usage::new(120, 12),
                            agentkit::core::StopReason::EndTurn,
                            "scripted-model",
                        ))
                    }),
            )
        }
    };

    let agent = AgentLlm::shared(
        Agent::new(
            "assistant",
            "You are a concise assistant. Use the tools you have for any conversion.",
        )
        .with_tool(tool),
        model,
    );

    let ctx = RunContext::new();
    let started = Instant::now();
    let mut events = agent.generate_stream(
        "It is 21.5 °C in Lisbon. What is that in Fahrenheit?".into(),
        &ctx,
    );
    let mut stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        match event? {
            // Tokens as they arrive.
            GenerationEvent::TextDelta { text, .. } => {
                print!("{text}");
                stdout.flush()?;
            }
            GenerationEvent::ToolCallStarted {
                tool, arguments, ..
            } => println!("[calling {tool} {arguments}]"),
            GenerationEvent::ToolCallFinished { output, .. } => {
                let shown: Vec<&str> = output.iter().filter_map(Content::as_text).collect();
                println!("[result: {}]", shown.join(" "));
            }
            GenerationEvent::Done(_) => println!(),
            _ => {}
        }
    }
    drop(events);
    let totals = ctx.totals();

    println!(
        "time {:.2?} · {} model calls · {} tool calls · tokens {} in / {} out · est. cost ${:.6}",
        started.elapsed(),
        totals.llm_calls,
        totals.tool_calls,
        totals.usage.input_tokens
            + totals.usage.cache_read_tokens
            + totals.usage.cache_write_tokens,
        totals.usage.output_tokens,
        totals.cost_usd,
    );
    Ok(())
}
