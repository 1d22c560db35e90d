//! # agentkit-server
//!
//! The agent operations server: declarative agents and workflows (`agentkit.yaml`), a
//! versioned registry with environment labels, durable runs on the runtime's store, threads
//! that hold conversations, crons, workspaces with hashed API keys and roles
//! ([`tenancy`]), and an HTTP API behind those keys: agentkit's `/v1` (with
//! SSE run streams that resume from the store), the Agent Protocol, and the part of the
//! LangGraph Agent Server API its SDK clients use ([`api::langgraph`]). A library first — [`Server::builder`] gives an axum
//! [`Router`](axum::Router) to serve or mount — and the `agentkit` binary.
//!
//! ```no_run
//! # async fn demo() -> agentkit_core::Result<()> {
//! use std::sync::Arc;
//! use agentkit_server::Server;
//!
//! let store = Arc::new(agentkit_runtime::MemoryStore::new());
//! let server = Server::builder(store).admin_key("secret").build().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.map_err(|e| {
//!     agentkit_core::Error::other("binding", e)
//! })?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod crons;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod deploy;
mod gateway;
pub mod gatewayops;
pub mod observe;
pub mod platform;
pub mod policy;
pub mod ratelimit;
pub mod registry;
pub mod retention;
pub mod schedules;
pub mod servers;
pub mod spec;
pub mod tenancy;
pub mod threads;
pub mod triggers;
pub mod vault;
pub mod webhooks;

mod named;
mod ops;
mod pages;
mod server;

pub use platform::{Platform, RunEventView, RunView, SpecBuilder, StartRun};
pub use ratelimit::{RateLimits, RunRateLimits};
pub use registry::{Deployed, Entry, EntryKind, Registry, Version};
pub use retention::{PruneReport, Retention};
pub use schedules::{ScheduleOwner, ScheduleRun, ScheduleSource, ScheduleView, TriggerView};
pub use server::{Server, ServerBuilder, generate_key};
pub use servers::{McpCallView, McpFailure, McpServerView, McpToolView};
pub use threads::{Thread, ThreadPolicy, Threads};
pub use triggers::{MessageTemplate, NewTrigger, TriggerInfo, WorkspaceTriggers};
pub use webhooks::{DeliveryError, HookInfo, HookWithSecret, NewHook, Webhook, WorkspaceHooks};
