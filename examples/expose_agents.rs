//! Serve two agents as an MCP server.
//!
//! ```sh
//! cargo run --example expose_agents --features mcp -- --stdio
//! cargo run --example expose_agents --features mcp -- --http 127.0.0.1:8000   # endpoint /mcp
//! ```
//! Offline: the agents run on a scripted model. Try it with the MCP Inspector or with
//! `agentkit_mcp::ConnectionManager`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentkit_core::message::join_text;
use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionRequest, CompletionResponse, Content, FnTool,
    LlmProvider, Message, Role, ScriptedProvider, StopReason, Usage,
};
use agentkit_mcp::{HttpOptions, expose_as_mcp_server};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct City {
    /// City name.
    name: String,
}

fn agents() -> Vec<Arc<dyn AugmentedLlm>> {
    let weather = FnTool::new(
        "weather",
        "Current weather of a city",
        |c: City| async move {
            Ok::<_, std::convert::Infallible>(format!("18°C and sunny in {}", c.name))
        },
    );
    let (forecast_model, greet_model): (Arc<dyn LlmProvider>, Arc<dyn LlmProvider>) =
        match agentkit_core::provider::from_env() {
            Ok(Some(real)) => (real.clone(), real),
            _ => (
                Arc::new(scripted_forecaster()),
                Arc::new(scripted_greeter()),
            ),
        };
    vec![
        Arc::new(AgentLlm::shared(
            Agent::new("forecaster", "You answer weather questions.")
                .with_description("Answers weather questions for a city")
                .with_tool(weather),
            forecast_model,
        )),
        Arc::new(AgentLlm::shared(
            Agent::new("greeter", "You greet people.").with_description("Greets people"),
            greet_model,
        )),
    ]
}

/// Offline stand-in for a model: asks for the weather of the city named last in the question,
/// then answers from the tool's result. Stateless, so it serves any number of calls.
fn scripted_forecaster() -> ScriptedProvider {
    ScriptedProvider::from_fn(|req: &CompletionRequest| {
        let last = req.messages.last();
        let message = match last {
            Some(m) if m.role == Role::Tool => {
                let result = m
                    .content
                    .iter()
                    .find_map(|c| match c {
                        Content::ToolResult { content, .. } => Some(join_text(content)),
                        _ => None,
                    })
                    .unwrap_or_default();
                Message::assistant(format!("Right now: {result}."))
            }
            _ => {
                let question = last.map(Message::text).unwrap_or_default();
                let city = question
                    .split(|c: char| !c.is_alphanumeric())
                    .rfind(|w| w.chars().next().is_some_and(char::is_uppercase))
                    .unwrap_or("Lisbon")
                    .to_owned();
                Message::new(
                    Role::Assistant,
                    vec![Content::tool_call(
                        "call_1",
                        "weather",
                        serde_json::json!({"name": city}),
                    )],
                )
            }
        };
        let stop = if message.has_tool_calls() {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(60, 15),
            stop,
            "scripted-model",
        ))
    })
    .without_recording()
}

fn scripted_greeter() -> ScriptedProvider {
    ScriptedProvider::from_fn(|_req: &CompletionRequest| {
        Ok(CompletionResponse::new(
            Message::assistant("Hello from agentkit!"),
            Usage::new(20, 5),
            StopReason::EndTurn,
            "scripted-model",
        ))
    })
    .without_recording()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // stdout is the MCP wire in stdio mode: log to stderr only.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server = expose_as_mcp_server("agentkit-agents", agents()).build();
    match args.first().map(String::as_str) {
        Some("--http") => {
            let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:8000");
            let app = axum::Router::new()
                .nest_service("/mcp", server.into_http_service(HttpOptions::new()));
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("serving 2 agents at http://{}/mcp", listener.local_addr()?);
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
        _ => server.serve_stdio().await?,
    }
    Ok(())
}
