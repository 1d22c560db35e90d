//! The hello world: an agent with the official filesystem MCP server reads a file and answers.
//!
//! ```sh
//! ./scripts/install-mcp-peers.sh      # or have `npx` fetch @modelcontextprotocol/server-filesystem
//! cargo run --example finder --features mcp
//! ```
//! With `OPENAI_API_KEY` or `ANTHROPIC_API_KEY` set it uses that provider; otherwise it runs an
//! offline scripted model whose answer is read from the real tool result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlmExt, CompletionResponse, LlmProvider, Message, RunContext,
    ScriptedProvider, StopReason, Usage,
};
use agentkit_mcp::{ConnectionManager, McpAggregator, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    let dir = std::env::temp_dir().join(format!("agentkit-finder-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("notes.md");
    std::fs::write(&file, "# Notes\nThe launch code word is *pelican*.\n")?;

    // Prefer the pinned peer from scripts/install-mcp-peers.sh, else npx.
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/node_modules");
    let local = peers.join("@modelcontextprotocol/server-filesystem/dist/index.js");
    let fs = if local.exists() {
        ServerConfig::stdio(
            "filesystem",
            peers.join(".bin/node").display().to_string(),
            [local.display().to_string(), dir.display().to_string()],
        )
    } else {
        ServerConfig::stdio(
            "filesystem",
            "npx",
            [
                "-y".to_owned(),
                "@modelcontextprotocol/server-filesystem".to_owned(),
                dir.display().to_string(),
            ],
        )
    };
    let manager = ConnectionManager::new([fs]);
    let tools = McpAggregator::new(manager.clone(), ["filesystem"]);

    let model: Arc<dyn LlmProvider> = match agentkit_core::provider::from_env()? {
        Some(real) => real,
        None => {
            println!(
                "no OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY set: running the offline \
                 scripted model (the MCP tool call is real)"
            );
            // Calls the MCP tool, then answers from what the tool returned.
            Arc::new(
                ScriptedProvider::new()
                    .then_tool_call(
                        "filesystem__read_text_file",
                        serde_json::json!({"path": file}),
                    )
                    .with_fallback(|req| {
                        let result = req
                            .messages
                            .last()
                            .map(|m| format!("{:?}", m.content))
                            .unwrap_or_default();
                        let word = result.split('*').nth(1).unwrap_or("not found").to_owned();
                        Ok(CompletionResponse::new(
                            Message::assistant(format!("The code word in notes.md is \"{word}\".")),
                            Usage::new(150, 12),
                            StopReason::EndTurn,
                            "scripted-model",
                        ))
                    }),
            )
        }
    };
    let agent = AgentLlm::new(
        Agent::new(
            "finder",
            "You find answers in the user's files. Use the filesystem tools.",
        )
        .with_tool(tools),
        model,
    );
    let question = format!("What is the code word in {}?", file.display());
    let answer = agent.generate_str(&question, &RunContext::new()).await?;
    println!("{answer}");
    manager.shutdown().await;
    Ok(())
}
