//! Governance on every tool call: [`Policy`] (scopes, argument rules, chain rules over the
//! run's tool history, approvals), [`PolicyLayer`] (the tower layer that applies it on an
//! agent's tool-call stack), and the [`AuditSink`] every decision is written to, with the
//! hash chain ([`AuditEntry`], [`verify_chain`]) that makes a stored audit log
//! tamper-evident. Feature `policy`.
//!
//! The layer is the same in-process and in the server: a library user puts it on any
//! [`AgentLlm`](crate::AgentLlm) with `with_tool_layer`; the server builds it from the
//! `policies:` of `agentkit.yaml` and stores the audit log in its database.
//!
//! - **Deny**: the tool does not run; the model gets a tool error naming the policy and the
//!   rule (`arguments.filesystem__*.path.deny[0]`), so it can tell the user or try something
//!   else.
//! - **Require approval**: the run's [`ApprovalHandler`](crate::ApprovalHandler) decides; under
//!   the durable runtime the run waits as `waiting_approval` until someone approves or rejects,
//!   then the exact call runs once (or the model is told it was rejected).
//! - **Allow**: the call goes on down the stack.
//!
//! Chain rules look at the run's tool history ([`RunContext::with_tool_history`](crate::RunContext::with_tool_history)), which the
//! agent loop builds from every call it makes *or replays from the journal*, so the rules hold
//! across a crash and a resume. A verdict that made a call wait for approval is journaled
//! (`policy/<tool call key>`), so a resumed run asks about the same call and never re-decides
//! it differently.
//!
//! ```
//! use std::sync::Arc;
//! use agentkit_core::config::{ArgumentRule, PolicySpec};
//! use agentkit_core::policy::{MemoryAuditLog, Policy, PolicyLayer};
//! use agentkit_core::{Agent, AgentLlm, AugmentedLlmExt, FnTool, RunContext, ScriptedProvider};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let read = FnTool::new("read_file", "Read a file", |_: serde_json::Value| async {
//!     Ok::<_, String>("secret contents")
//! });
//! let policy = Policy::compile(
//!     "docs",
//!     &PolicySpec::new().with_argument_rule("read_file", "path", ArgumentRule::new().with_deny(["/etc/**"])),
//! )?;
//! let audit = Arc::new(MemoryAuditLog::new());
//! let model = ScriptedProvider::new()
//!     .then_tool_call("read_file", serde_json::json!({"path": "/etc/shadow"}))
//!     .then_text("I may not read that file.");
//! let agent = AgentLlm::new(Agent::new("reader", "").with_tool(read), model)
//!     .with_tool_layer(PolicyLayer::new(policy).with_audit(audit.clone()));
//! let answer = agent.generate_str("show /etc/shadow", &RunContext::new()).await?;
//! assert_eq!(answer, "I may not read that file.");
//! let entries = audit.entries();
//! assert_eq!(entries[0].event.outcome, agentkit_core::policy::AuditOutcome::Denied);
//! assert_eq!(entries[0].event.rule.as_deref(), Some("arguments.read_file.path.deny[0]"));
//! agentkit_core::policy::verify_chain(&entries)?;
//! # Ok::<_, agentkit_core::Error>(()) }).unwrap();
//! ```

mod audit;
mod compiled;
mod layer;

pub use audit::{
    AuditEntry, AuditEvent, AuditOutcome, AuditSink, ChainBreak, GENESIS_HASH, MemoryAuditLog,
    canonical_json, verify_chain,
};
pub use compiled::{Policy, RateLimited};
pub use layer::{PolicyLayer, PolicyScope, PolicyService};

use serde::{Deserialize, Serialize};

/// What a policy says about one tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// The call may run.
    Allow,
    /// The call is refused.
    Deny,
    /// The call waits for a human approval.
    RequireApproval,
}

impl Verdict {
    /// How restrictive it is: allow < require approval < deny. When several policies apply
    /// to a call, the most restrictive verdict wins.
    #[must_use]
    pub fn severity(self) -> u8 {
        match self {
            Self::Allow => 0,
            Self::RequireApproval => 1,
            Self::Deny => 2,
        }
    }

    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RequireApproval => "require_approval",
        }
    }
}

/// A policy's decision on one tool call: the verdict, the policy, the rule that decided (a key
/// path inside the policy, e.g. `chains[0]`; none for a plain allow) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// The policy's name.
    pub policy: String,
    /// The rule that decided, as a key path inside the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why (empty for a plain allow).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl Decision {
    /// An allow by `policy` with no rule.
    #[must_use]
    pub fn allow(policy: &str) -> Self {
        Self {
            verdict: Verdict::Allow,
            policy: policy.to_owned(),
            rule: None,
            reason: String::new(),
        }
    }
}
