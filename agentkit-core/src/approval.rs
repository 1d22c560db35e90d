//! [`ApprovalLayer`]: tool calls that need a decision before they run.
//!
//! The layer sits on the agent's tool-call stack ([`AgentLlm::with_tool_layer`]). For every call
//! its predicate selects, it asks the run's [`ApprovalHandler`](crate::ApprovalHandler) ([`RunContext::with_approvals`](crate::RunContext::with_approvals))
//! and only runs the tool when the decision is [`ApprovalDecision::Approved`]:
//!
//! - **Approved**: the call goes on down the stack and the tool runs.
//! - **Denied**: the tool does not run; the model gets a tool error with the reason, so it can
//!   tell the user or try something else.
//! - **No handler on the run**: the tool does not run; the call fails with an error naming the
//!   tool and saying how to configure a handler (the model is shown that error).
//!
//! Under the durable runtime (`agentkit-runtime`) agent runs get a handler that persists the
//! run as `waiting_approval` and resumes it when an `approval` signal arrives.
//!
//! ```
//! use agentkit_core::{
//!     Agent, AgentLlm, ApprovalDecision, ApprovalHandler, ApprovalLayer, ApprovalRequest,
//!     AugmentedLlmExt, FnTool, RunContext, ScriptedProvider,
//! };
//! use std::sync::Arc;
//!
//! struct DenyRefunds;
//! #[async_trait::async_trait]
//! impl ApprovalHandler for DenyRefunds {
//!     async fn approve(&self, req: ApprovalRequest, _: &RunContext)
//!         -> agentkit_core::Result<ApprovalDecision> {
//!         Ok(ApprovalDecision::Denied { reason: format!("{} is frozen today", req.tool) })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let refund = FnTool::new("refund", "Refund an order", |_: serde_json::Value| async {
//!     Ok::<_, String>("refunded")
//! });
//! let model = ScriptedProvider::new()
//!     .then_tool_call("refund", serde_json::json!({"order": 7}))
//!     .then_text("I could not refund: refunds are frozen today.");
//! let agent = AgentLlm::new(Agent::new("support", "").with_tool(refund), model)
//!     .with_tool_layer(ApprovalLayer::tools(["refund"]));
//! let ctx = RunContext::new().with_approvals(Arc::new(DenyRefunds));
//! let answer = agent.generate_str("Refund order 7", &ctx).await?;
//! assert!(answer.contains("frozen"));
//! # Ok::<_, agentkit_core::Error>(()) }).unwrap();
//! ```
//!
//! [`AgentLlm::with_tool_layer`]: crate::AgentLlm::with_tool_layer

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tower::{Service, ServiceExt};

use crate::context::{ApprovalDecision, ApprovalRequest};
use crate::error::{Error, Result};
use crate::tool::{ToolOutput, ToolRequest, ToolService};

type NeedsApproval = dyn Fn(&str, &Value) -> bool + Send + Sync;

/// A tower layer on the tool-call stack that asks the run's
/// [`ApprovalHandler`](crate::ApprovalHandler) before running the tool calls its predicate
/// selects. See the [module docs](self).
#[derive(Clone)]
pub struct ApprovalLayer {
    needs: Arc<NeedsApproval>,
    reason: Arc<str>,
}

impl fmt::Debug for ApprovalLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApprovalLayer")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl ApprovalLayer {
    /// Ask for approval of every call for which `needs_approval(tool name, arguments)` is true.
    pub fn new(needs_approval: impl Fn(&str, &Value) -> bool + Send + Sync + 'static) -> Self {
        Self {
            needs: Arc::new(needs_approval),
            reason: Arc::from("this tool requires approval"),
        }
    }

    /// Ask for approval of every call of these tools.
    pub fn tools<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: HashSet<String> = names.into_iter().map(Into::into).collect();
        Self::new(move |tool, _| names.contains(tool))
    }

    /// The reason put in every [`ApprovalRequest`] (default: "this tool requires approval").
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Arc::from(reason.into());
        self
    }
}

impl tower::Layer<ToolService> for ApprovalLayer {
    type Service = Approval;

    fn layer(&self, inner: ToolService) -> Approval {
        Approval {
            inner,
            needs: Arc::clone(&self.needs),
            reason: Arc::clone(&self.reason),
        }
    }
}

/// The service made by [`ApprovalLayer`].
#[derive(Clone)]
pub struct Approval {
    inner: ToolService,
    needs: Arc<NeedsApproval>,
    reason: Arc<str>,
}

impl fmt::Debug for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Approval")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Service<ToolRequest> for Approval {
    type Response = ToolOutput;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ToolOutput>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        // Readiness of the inner service is awaited in `call` (after the decision), so a call
        // waiting for approval holds no slot of an inner concurrency limit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        let inner = self.inner.clone();
        if !(self.needs)(&req.name, &req.arguments) {
            return inner.oneshot(req).boxed();
        }
        let reason = self.reason.to_string();
        async move {
            let Some(handler) = req.ctx.approvals().cloned() else {
                return Err(Error::Tool {
                    tool: req.name.clone(),
                    message: format!(
                        "this call needs approval but the run has no approval handler; \
                         configure one with RunContext::with_approvals (the agentkit runtime \
                         installs one for agent runs), or remove `{}` from the ApprovalLayer",
                        req.name
                    ),
                    source: None,
                });
            };
            let request = ApprovalRequest::new(&req.name, req.arguments.clone(), reason)
                .with_call_id(req.call_id.clone());
            match handler.approve(request, &req.ctx).await? {
                ApprovalDecision::Approved => inner.oneshot(req).await,
                ApprovalDecision::Denied { reason } => Ok(ToolOutput::error(format!(
                    "the call of tool `{}` was denied: {reason}",
                    req.name
                ))),
            }
        }
        .boxed()
    }
}
