//! Declarative agents, workflows, schedules and triggers (`agentkit.yaml`) turned into
//! runnable agents and runtime targets.
//!
//! The data types live in [`agentkit_core::config`] ([`AgentSpec`](agentkit_core::config::AgentSpec),
//! [`WorkflowSpec`](agentkit_core::config::WorkflowSpec), ...); loading a file checks names,
//! references and cycles. This module adds what needs the other crates:
//!
//! - [`ModelFactory`]: the provider each agent runs on (OpenAI, Anthropic, or the offline
//!   echo model when no key is configured);
//! - [`Catalog`]: builds any agent or workflow as an `Arc<dyn AugmentedLlm>`, gives its
//!   runtime [`TargetOptions`](agentkit_runtime::TargetOptions), and the declared schedules as
//!   runtime [`Schedule`](agentkit_runtime::Schedule)s (cron expressions and time zones are
//!   checked there);
//! - [`spec_hash`]: the content hash that identifies a spec version in the registry.

mod catalog;
mod models;
mod server;
mod tools;

pub use catalog::Catalog;
pub(crate) use catalog::{own_schedules, schedule_from_spec};
pub use models::ModelFactory;
pub use server::{DeclarativeBuilder, server_builder};

use agentkit_core::policy::canonical_json;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// A stable content hash of a spec: the SHA-256 (lowercase hex) of its canonical JSON (object
/// keys sorted at every level, no whitespace). Two specs that serialise to the same JSON have
/// the same hash whatever their field or map order; the registry uses it as a version's
/// identity, so registering an unchanged spec creates no new version.
///
/// A value that cannot be serialised to JSON (a map with non-string keys) hashes its error
/// text, which no valid spec produces.
///
/// ```
/// use agentkit_core::config::AgentSpec;
/// use agentkit_server::spec::spec_hash;
///
/// let a = spec_hash(&AgentSpec::new("openai:gpt-4o-mini", "Be brief."));
/// assert_eq!(a.len(), 64);
/// assert_eq!(a, spec_hash(&AgentSpec::new("openai:gpt-4o-mini", "Be brief.")));
/// assert_ne!(a, spec_hash(&AgentSpec::new("openai:gpt-4o-mini", "Be thorough.")));
/// assert_eq!(
///     spec_hash(&serde_json::json!({"b": 1, "a": [true, null]})),
///     spec_hash(&serde_json::json!({"a": [true, null], "b": 1})),
/// );
/// ```
#[must_use]
pub fn spec_hash(value: &impl Serialize) -> String {
    let mut text = String::new();
    match serde_json::to_value(value) {
        Ok(v) => canonical_json(&v, &mut text),
        Err(e) => text = format!("unserialisable spec: {e}"),
    }
    hex::encode(Sha256::digest(text.as_bytes()))
}
