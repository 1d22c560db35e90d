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

use agentkit_core::{Agent, AgentLlm, AugmentedLlm, FnTool, ScriptedProvider};
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
    // A scripted model keeps the example offline; swap in an OpenAI/Anthropic provider for real use.
    let mut forecast_model = ScriptedProvider::new();
    let mut greet_model = ScriptedProvider::new();
    for _ in 0..100 {
        forecast_model = forecast_model
            .then_tool_call("weather", serde_json::json!({"name": "Lisbon"}))
            .then_text("It is 18°C and sunny in Lisbon.");
        greet_model = greet_model.then_text("Hello from agentkit!");
    }
    vec![
        Arc::new(AgentLlm::new(
            Agent::new("forecaster", "You answer weather questions.").with_tool(weather),
            forecast_model,
        )),
        Arc::new(AgentLlm::new(
            Agent::new("greeter", "You greet people."),
            greet_model,
        )),
    ]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // stdout is the MCP wire in stdio mode: log to stderr only.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
