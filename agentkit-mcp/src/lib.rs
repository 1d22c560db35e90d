//! # agentkit-mcp
//!
//! agentkit's MCP layer, on [rmcp](https://docs.rs/rmcp) (re-exported as [`rmcp`], so nobody
//! gets two copies of the protocol crate):
//!
//! - [`ServerConfig`] / [`ServerSet`]: servers from agentkit.yaml, `mcp_agent.config.yaml` or
//!   `mcpServers` JSON, with role-based server sets.
//! - Transports: stdio child processes, streamable HTTP, (feature `client-sse`) the legacy
//!   HTTP+SSE transport of protocol 2024-11-05 ([`sse::SseClientTransport`]), and servers
//!   running in this process ([`InProcessServer`], [`ServerConfig::in_process`]).
//! - OAuth 2.1 for streamable HTTP servers (feature `oauth`, module `oauth`): discovery,
//!   dynamic client registration, authorization code + PKCE, client credentials, refresh,
//!   application-chosen token stores.
//! - [`ConnectionManager`]: one lazily started, shared, self-healing connection per server.
//! - [`McpAggregator`]: several servers as one [`ToolSource`](agentkit_core::ToolSource), tools
//!   named `server__tool`.
//! - Client capabilities routed through the [`RunContext`](agentkit_core::RunContext): sampling
//!   (an [`LlmProvider`](agentkit_core::LlmProvider)), elicitation (the run's human-input
//!   handler), roots, progress as [`RunEvent`](agentkit_core::RunEvent)s, cancellation.
//! - Server side (feature `server`): [`McpServerBuilder`] for tools, resources, prompts and
//!   completions defined at runtime, served over stdio or streamable HTTP (feature
//!   `server-http`, a tower service for axum), and [`expose_as_mcp_server`] to turn agents and
//!   workflows into MCP tools.
#![doc = include_str!("../README.md")]

pub mod aggregator;
#[cfg(feature = "server")]
pub mod bridge;
mod client;
pub mod config;
#[cfg(feature = "server")]
pub mod expose;
#[cfg(feature = "server-http")]
pub mod http;
pub mod inprocess;
pub mod manager;
pub mod names;
#[cfg(feature = "oauth")]
pub mod oauth;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
mod session;
#[cfg(feature = "client-sse")]
pub mod sse;
#[cfg(feature = "client-stdio")]
mod stdio;
pub mod stdio_env;
#[cfg(feature = "server")]
pub mod tasks;

pub use agentkit_core::ToolFilter;
pub use aggregator::{Collision, DEFAULT_SEPARATOR, McpAggregator, to_content, to_tool_output};
pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SHUTDOWN_GRACE, ServerConfig,
    ServerSet, ServerTransport,
};
#[cfg(feature = "server")]
pub use expose::{
    SessionHistory, WorkflowTasks, expose_as_mcp_server, expose_as_mcp_server_with,
    expose_workflows,
};
#[cfg(feature = "server-http")]
pub use http::McpHttpService;
pub use inprocess::InProcessServer;
pub use manager::{
    ConfigResolver, Connection, ConnectionManager, ConnectionManagerBuilder, Lifecycle,
    connect_once, request_meta,
};
pub use names::{MAX_TOOL_NAME_LEN, qualified_tool_name};
#[cfg(feature = "server")]
pub use server::{CallContext, CatchPanics, DirectCall, McpServer, McpServerBuilder, RequestTools};
#[cfg(feature = "server-http")]
pub use server::{DEFAULT_MAX_SESSIONS, HttpOptions};
#[cfg(feature = "server")]
pub use session::SessionEndHook;
#[cfg(feature = "server")]
pub use tasks::TaskBackend;

/// The rmcp version agentkit-mcp is built on.
pub use rmcp;
