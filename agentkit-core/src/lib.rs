//! # agentkit-core
//!
//! The contract crate of agentkit: the message model, the [`LlmProvider`] trait and its
//! providers, tools ([`ToolSource`], [`FnTool`]), the composition unit [`AugmentedLlm`], the
//! tool-calling [`Agent`]/[`AgentLlm`], the [`RunContext`] every call carries, [`RunEvent`]s,
//! the [`Journal`] that makes runs durable, [`WorkflowHost`], prices and model selection, and
//! configuration.
//!
//! With `default-features = false` it is traits, data and the agent loop, and pulls in no HTTP
//! client; the `openai`, `anthropic` and `gemini` features add those providers.
//!
//! ```
//! use agentkit_core::{Agent, AgentLlm, AugmentedLlmExt, FnTool, RunContext, ScriptedProvider};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct City { name: String }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let weather = FnTool::new("weather", "Current weather of a city", |c: City| async move {
//!     Ok::<_, std::convert::Infallible>(format!("18°C and sunny in {}", c.name))
//! });
//! // Offline: a scripted model that calls the tool, then answers.
//! let model = ScriptedProvider::new()
//!     .then_tool_call("weather", serde_json::json!({"name": "Lisbon"}))
//!     .then_text("It is 18°C and sunny in Lisbon.");
//! let agent = AgentLlm::new(
//!     Agent::new("assistant", "You answer weather questions.").with_tool(weather),
//!     model,
//! );
//! let answer = agent.generate_str("Weather in Lisbon?", &RunContext::new()).await?;
//! assert_eq!(answer, "It is 18°C and sunny in Lisbon.");
//! # Ok::<_, agentkit_core::Error>(()) }).unwrap();
//! ```

pub mod agent;
pub mod approval;
pub mod config;
pub mod context;
pub mod cost;
pub mod embedding;
pub mod error;
pub mod event;
pub mod journal;
pub mod llm;
pub mod memory;
pub mod message;
#[cfg(feature = "policy")]
pub mod policy;
pub mod provider;
pub mod schema;
pub mod stream;
pub mod tool;
pub mod trace;
pub mod usage;
pub mod workflow;

pub mod sync;
pub(crate) use sync::lock;

pub use agent::{Agent, AgentLlm, AgentTool, Instruction, Turn};
pub use approval::{Approval, ApprovalLayer};
pub use config::{Config, McpAuth, McpOAuth, McpProcessLimits, McpServerConfig, McpTransport};
pub use context::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, Budget, DEFAULT_THREAD, HumanInputHandler,
    HumanInputRequest, HumanInputResponse, Principal, RunContext, RunTotals, SharedToolHistory,
    SpendGuard, SpendHold, ToolCallRecord,
};
pub use cost::{ModelHint, ModelInfo, ModelPreferences, PriceTable};
pub use embedding::{Embedder, cosine_similarity};
pub use error::{BoxError, Error, ProviderErrorKind, Result};
pub use event::{
    ChannelSink, CollectingSink, EventSink, FanoutSink, FnSink, NoopSink, RunEvent, TracingSink,
    micros,
};
pub use journal::{Journal, MemoryJournal, NoopJournal};
pub use llm::{
    AugmentedLlm, AugmentedLlmExt, GenerateRequest, Generation, RequestParams, ToolFilter,
};
pub use memory::{InMemoryMemory, Memory, MemoryWindow};
pub use message::{Content, ImageData, Message, Role};
#[cfg(feature = "anthropic")]
pub use provider::anthropic::{AnthropicConfig, AnthropicProvider};
#[cfg(feature = "gemini")]
pub use provider::gemini::{GeminiConfig, GeminiProvider};
#[cfg(feature = "openai")]
pub use provider::openai::{OpenAiConfig, OpenAiEmbedder, OpenAiProvider};
pub use provider::{
    ChunkStream, CompletionChunk, CompletionRequest, CompletionResponse, LlmProvider,
    ProviderBuilder, ResponseFormat, RetryConfig, ScriptedProvider, ScriptedReply, ToolChoice,
    collect_stream,
};
pub use stream::{
    GenerationEmitter, GenerationEvent, GenerationStream, collect_generation, generate_into,
    stream_generation,
};
pub use tool::{
    FnTool, ToolLayer, ToolOutput, ToolRequest, ToolService, ToolSet, ToolSource, ToolSpec,
    ToolTimeoutLayer,
};
pub use usage::{StopReason, Usage};
pub use workflow::{RunInfo, RunStatus, StartOptions, WorkflowHost, WorkflowInfo};

/// Re-exported so users derive schemas with the same `schemars` major agentkit uses.
pub use schemars;
/// Re-exported for `Value` and `json!`.
pub use serde_json;
/// Re-exported so users write tool-call layers against the same `tower` agentkit uses.
pub use tower;
