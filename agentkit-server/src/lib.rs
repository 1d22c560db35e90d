//! # agentkit-server
//!
//! The agent operations server: declarative agents and workflows (`agentkit.yaml`), a
//! versioned registry with environment labels, durable runs on the runtime's store, and an HTTP
//! API (Agent Protocol, the LangGraph SDK subset, agentkit's own `/v1`) with SSE run streams.
//! A library first (`Server::builder()` gives an axum `Router`), and the `agentkit` binary.

pub mod spec;
