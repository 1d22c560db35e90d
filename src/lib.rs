//! # agentkit
//!
//! Build, compose and operate MCP-native AI agents in Rust.
//!
//! This facade re-exports the agentkit crates behind features, plus a [`prelude`]:
//!
//! | module | crate | feature | what |
//! |---|---|---|---|
//! | [`core`] | `agentkit-core` | always | messages, `LlmProvider`, tools, `AugmentedLlm`, `Agent`, `RunContext`, events, journal, config |
//! | `patterns` | `agentkit-patterns` | `patterns` (default) | router, parallel, chain, evaluator-optimizer, orchestrator, swarm |
//! | `mcp` | `agentkit-mcp` | `mcp` | managed MCP connections, aggregator, MCP servers |
//! | `runtime` | `agentkit-runtime` | `runtime` | durable runs, scheduler, stores |
//! | `server` | `agentkit-server` | `server` | the hosting server |
//!
//! ```
//! use agentkit::prelude::*;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let model = ScriptedProvider::new().then_text("Hello!");
//! let agent = AgentLlm::new(Agent::new("greeter", "Greet the user."), model);
//! assert_eq!(agent.generate_str("hi", &RunContext::new()).await?, "Hello!");
//! # Ok::<_, agentkit::core::Error>(()) }).unwrap();
//! ```

pub use agentkit_core as core;

#[cfg(feature = "patterns")]
pub use agentkit_patterns as patterns;

#[cfg(feature = "mcp")]
pub use agentkit_mcp as mcp;

#[cfg(feature = "runtime")]
pub use agentkit_runtime as runtime;

#[cfg(feature = "server")]
pub use agentkit_server as server;

/// The names most programs need: the core types, the patterns (feature `patterns`) and the
/// MCP connections and servers (feature `mcp`).
///
/// ```
/// # #[cfg(feature = "patterns")] {
/// use agentkit::prelude::*;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let router = Router::builder("desk")
///     .with_embedder(BagOfWordsEmbedder::new())
///     .with_function_route(
///         FnLlm::new("weather", |_, _| async { Ok("sunny".to_owned()) })
///             .with_description("weather forecasts, rain and temperature"),
///     )
///     .with_function_route(
///         FnLlm::new("billing", |_, _| async { Ok("refunded".to_owned()) })
///             .with_description("invoices, refunds and payments"),
///     )
///     .build()?;
/// assert_eq!(router.generate_str("will it rain?", &RunContext::new()).await?, "sunny");
/// # Ok::<_, CoreError>(()) }).unwrap();
/// # }
/// ```
pub mod prelude {
    pub use agentkit_core::{
        Agent, AgentLlm, AgentTool, AugmentedLlm, AugmentedLlmExt, Budget, CompletionRequest,
        Content, Error as CoreError, EventSink, FnTool, GenerateRequest, Generation,
        GenerationEvent, LlmProvider, Message, ModelPreferences, ProviderBuilder, RequestParams,
        RetryConfig, Role, RunContext, RunEvent, ScriptedProvider, ToolOutput, ToolSource,
        ToolSpec, Usage,
    };

    #[cfg(feature = "patterns")]
    pub use agentkit_patterns::{
        AgentsAsTools, BagOfWordsEmbedder, Chain, EvaluatorOptimizer, FnLlm, Intent,
        IntentClassifier, Orchestrator, Parallel, PlanMode, Rating, Router, Swarm, SwarmMember,
    };

    #[cfg(feature = "mcp")]
    pub use agentkit_mcp::{
        ConnectionManager, McpAggregator, McpServer, ServerConfig, ServerSet, expose_as_mcp_server,
    };
}
