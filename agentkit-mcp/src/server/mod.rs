//! [`McpServerBuilder`]: an MCP server whose tools, resources, prompts and completions are
//! defined at runtime (no macros), served over stdio, any async byte stream, or streamable HTTP
//! as a tower service (feature `server-http`).

#![allow(deprecated)] // logging and subscriptions are SEP-2577-deprecated in rmcp but still part of MCP 2025-11-25.
//!
//! One job per file: `context.rs` ([`CallContext`], what a handler gets), `builder.rs`
//! ([`McpServerBuilder`] and the handler registry), `serve.rs` ([`McpServer`]: serving over
//! stdio, streams and HTTP; [`HttpOptions`]), `handler.rs` (the rmcp `ServerHandler`), `request_tools.rs` ([`RequestTools`]: tools
//! per request), `catch_panics.rs` ([`CatchPanics`]: a panicking handler answered at once).

mod builder;
mod catch_panics;
mod context;
mod handler;
mod request_tools;
mod serve;

pub use builder::*;
pub use catch_panics::CatchPanics;
pub(crate) use catch_panics::panicked;
pub use context::*;
pub use request_tools::{DirectCall, RequestTools};
pub use serve::*;
