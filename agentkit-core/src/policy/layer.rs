//! [`PolicyLayer`]: a [`Policy`] on the tool-call stack.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use tower::{Service, ServiceExt};

use super::{AuditEvent, AuditOutcome, AuditSink, Decision, Policy, Verdict};
use crate::context::{ApprovalDecision, ApprovalRequest, RunContext};
use crate::error::{Error, Result};
use crate::tool::{ToolOutput, ToolRequest, ToolService};

/// Policies that apply to a tool call beyond a [`PolicyLayer`]'s own, found from the call's
/// [`RunContext`] — e.g. the policy of the workspace and of the API key of its
/// [`Principal`](crate::Principal). A call must pass every policy that applies: the most
/// restrictive verdict ([`Verdict::severity`]) wins, and the audit names the policy that
/// decided.
pub trait PolicyScope: Send + Sync {
    /// The policies that apply to calls made in `ctx`, in addition to the layer's own.
    fn policies(&self, ctx: &RunContext) -> Vec<Policy>;
}

/// A tower layer that decides every tool call with a [`Policy`] before the tool runs, and
/// writes every decision to an [`AuditSink`]. See the [module docs](super).
#[derive(Clone)]
pub struct PolicyLayer {
    policy: Option<Policy>,
    scope: Option<Arc<dyn PolicyScope>>,
    audit: Option<Arc<dyn AuditSink>>,
}

impl fmt::Debug for PolicyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyLayer")
            .field("policy", &self.policy.as_ref().map(Policy::name))
            .field("scoped", &self.scope.is_some())
            .field("audit", &self.audit.is_some())
            .finish()
    }
}

impl PolicyLayer {
    /// Apply `policy` (decisions are not audited unless [`with_audit`](Self::with_audit)).
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: Some(policy),
            scope: None,
            audit: None,
        }
    }

    /// Apply only the policies `scope` finds for each call (a call none applies to runs
    /// without a decision or an audit entry).
    #[must_use]
    pub fn scoped(scope: Arc<dyn PolicyScope>) -> Self {
        Self {
            policy: None,
            scope: Some(scope),
            audit: None,
        }
    }

    /// Also apply the policies `scope` finds for each call (see [`PolicyScope`]).
    #[must_use]
    pub fn with_scope(mut self, scope: Arc<dyn PolicyScope>) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Write every decision to `sink`.
    #[must_use]
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// What this layer would decide about `req` (its own policy and those its scope finds,
    /// the most restrictive winning), with nothing audited, journaled or counted: for a caller
    /// that must know the verdict before it chooses how to make the call. `None` when no
    /// policy applies.
    #[must_use]
    pub fn decide(&self, req: &ToolRequest) -> Option<Decision> {
        let scoped = self
            .scope
            .as_ref()
            .map(|s| s.policies(&req.ctx))
            .unwrap_or_default();
        decide_all(self.policy.as_ref(), &scoped, req)
    }
}

/// The decision of every policy that applies, combined: the first most restrictive one;
/// `None` when no policy applies.
fn decide_all(own: Option<&Policy>, scoped: &[Policy], req: &ToolRequest) -> Option<Decision> {
    let mut out: Option<Decision> = None;
    for p in own.into_iter().chain(scoped.iter()) {
        let d = req
            .ctx
            .with_tool_history(|h| p.decide(&req.name, &req.arguments, h));
        if out
            .as_ref()
            .is_none_or(|o| d.verdict.severity() > o.verdict.severity())
        {
            out = Some(d);
        }
    }
    out
}

impl tower::Layer<ToolService> for PolicyLayer {
    type Service = PolicyService;

    fn layer(&self, inner: ToolService) -> PolicyService {
        PolicyService {
            inner,
            policy: self.policy.clone(),
            scope: self.scope.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// The service made by [`PolicyLayer`].
#[derive(Clone)]
pub struct PolicyService {
    inner: ToolService,
    policy: Option<Policy>,
    scope: Option<Arc<dyn PolicyScope>>,
    audit: Option<Arc<dyn AuditSink>>,
}

impl fmt::Debug for PolicyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyService")
            .field("policy", &self.policy.as_ref().map(Policy::name))
            .field("scoped", &self.scope.is_some())
            .finish_non_exhaustive()
    }
}

/// The journal key of the verdict of the tool call `call_key`.
fn verdict_key(call_key: &str) -> String {
    format!("policy/{call_key}")
}

impl Service<ToolRequest> for PolicyService {
    type Response = ToolOutput;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ToolOutput>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        // The inner service's readiness is awaited in `call`, after the decision, so a call
        // waiting for approval holds no slot of an inner concurrency limit.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        let inner = self.inner.clone();
        let policy = self.policy.clone();
        let scope = self.scope.clone();
        let audit = self.audit.clone();
        async move {
            // A verdict journaled by an earlier execution of this run (a call that waited for
            // approval) stands: the resumed run asks about the same call.
            let key = req.ctx.tool_call_key().map(verdict_key);
            let recorded: Option<Decision> = match (&key, req.ctx.journal()) {
                (Some(k), Some(j)) => j.recorded(k).and_then(|v| serde_json::from_value(v).ok()),
                _ => None,
            };
            let replayed = recorded.is_some();
            // The principal's policies (workspace, key), looked up once per call.
            let scoped = scope
                .as_ref()
                .map(|s| s.policies(&req.ctx))
                .unwrap_or_default();
            let decision = match recorded {
                Some(d) => d,
                None => match decide_all(policy.as_ref(), &scoped, &req) {
                    Some(d) => d,
                    // No policy applies to this call.
                    None => return inner.oneshot(req).await,
                },
            };
            let event = |outcome: AuditOutcome, d: &Decision| {
                AuditEvent::new(
                    outcome,
                    &req.ctx,
                    req.call_id.clone(),
                    req.name.clone(),
                    req.arguments.clone(),
                    d.policy.clone(),
                )
                .with_rule(d.rule.clone())
                .with_reason(d.reason.clone())
            };
            // A call over a rate limit is not made: the model reads when to retry.
            let limited = |d: &Decision| {
                let workspace = req.ctx.principal().map_or_else(
                    || "default/default".to_owned(),
                    |p| match (&p.tenant, &p.workspace) {
                        (Some(o), Some(w)) => format!("{o}/{w}"),
                        _ => "default/default".to_owned(),
                    },
                );
                // Every policy that applies counts the call (the layer's own and the scope's).
                policy
                    .iter()
                    .chain(scoped.iter())
                    .find_map(|p| p.check_rate(&req.name, &workspace).map(|r| (p, r)))
                    .map(|(p, r)| {
                        let mut d = d.clone();
                        d.verdict = Verdict::Deny;
                        d.policy = p.name().to_owned();
                        d.rule = Some(r.rule);
                        d.reason = r.reason;
                        (d, r.retry_after)
                    })
            };
            match decision.verdict {
                Verdict::Allow => {
                    if let Some((d, wait)) = limited(&decision) {
                        if let Some(a) = &audit {
                            a.record(event(AuditOutcome::Denied, &d)).await?;
                        }
                        return Ok(ToolOutput::error(format!(
                            "the call of `{}` was not made (policy `{}`, rule `{}`): {}",
                            req.name,
                            d.policy,
                            d.rule.as_deref().unwrap_or("-"),
                            d.reason
                        ))
                        .with_retry_after(wait));
                    }
                    if let Some(a) = &audit {
                        a.record(event(AuditOutcome::Allowed, &decision)).await?;
                    }
                    inner.oneshot(req).await
                }
                Verdict::Deny => {
                    if let Some(a) = &audit {
                        a.record(event(AuditOutcome::Denied, &decision)).await?;
                    }
                    Ok(ToolOutput::error(format!(
                        "the call of `{}` was denied by policy `{}` (rule `{}`): {}",
                        req.name,
                        decision.policy,
                        decision.rule.as_deref().unwrap_or("-"),
                        decision.reason
                    )))
                }
                _ => {
                    let Some(handler) = req.ctx.approvals().cloned() else {
                        if let Some(a) = &audit {
                            a.record(event(AuditOutcome::Rejected, &decision).with_reason(
                                "the run has no approval handler, so no one can approve",
                            ))
                            .await?;
                        }
                        return Ok(ToolOutput::error(format!(
                            "the call of `{}` needs approval ({}), but nobody can approve it \
                             in this run; it was not made",
                            req.name, decision.reason
                        )));
                    };
                    if !replayed {
                        if let (Some(k), Some(_)) = (&key, req.ctx.journal()) {
                            let d = decision.clone();
                            req.ctx.step(k, async move { Ok(d) }).await?;
                        }
                        if let Some(a) = &audit {
                            let history = req.ctx.with_tool_history(|h| {
                                h.iter()
                                    .filter(|c| !c.is_error)
                                    .map(|c| c.tool.clone())
                                    .collect()
                            });
                            a.record(
                                event(AuditOutcome::ApprovalRequested, &decision)
                                    .with_history(history),
                            )
                            .await?;
                        }
                    }
                    let request = ApprovalRequest::new(
                        &req.name,
                        req.arguments.clone(),
                        decision.reason.clone(),
                    )
                    .with_call_id(req.call_id.clone());
                    match handler.approve(request, &req.ctx).await? {
                        ApprovalDecision::Approved => {
                            if let Some(a) = &audit {
                                a.record(event(AuditOutcome::Approved, &decision)).await?;
                            }
                            inner.oneshot(req).await
                        }
                        ApprovalDecision::Denied { reason } => {
                            if let Some(a) = &audit {
                                a.record(
                                    event(AuditOutcome::Rejected, &decision)
                                        .with_reason(reason.clone()),
                                )
                                .await?;
                            }
                            Ok(ToolOutput::error(format!(
                                "the call of `{}` was not approved: {reason}",
                                req.name
                            )))
                        }
                    }
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChainAction, ChainRule, PolicySpec};
    use crate::policy::MemoryAuditLog;
    use crate::{
        Agent, AgentLlm, ApprovalHandler, AugmentedLlmExt, FnTool, MemoryJournal, RunContext,
        ScriptedProvider,
    };
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Count(Arc<AtomicU32>, ApprovalDecision);
    #[async_trait::async_trait]
    impl ApprovalHandler for Count {
        async fn approve(
            &self,
            _: ApprovalRequest,
            _: &crate::RunContext,
        ) -> Result<ApprovalDecision> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(self.1.clone())
        }
    }

    fn tool(name: &'static str, calls: Arc<AtomicU32>) -> FnTool {
        FnTool::new(name, "t", move |_: serde_json::Value| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(format!("{name} done"))
            }
        })
    }

    /// `decide` answers what the layer's call would: the most restrictive of its own policy
    /// and its scope's, naming the one that decided; nothing when no policy applies; nothing
    /// audited either way.
    #[test]
    fn decide_combines_own_and_scoped_policies_without_auditing() {
        struct Denies(Policy);
        impl PolicyScope for Denies {
            fn policies(&self, _: &RunContext) -> Vec<Policy> {
                vec![self.0.clone()]
            }
        }
        let own = Policy::compile("own", &PolicySpec::new()).unwrap();
        let workspace = Policy::compile(
            "workspace",
            &PolicySpec::new().with_denied_tools(["fs__write_*"]),
        )
        .unwrap();
        let audit = Arc::new(MemoryAuditLog::new());
        let layer = PolicyLayer::new(own)
            .with_scope(Arc::new(Denies(workspace)))
            .with_audit(audit.clone());
        let req = |name: &str| ToolRequest::new("c", name, json!({}), RunContext::new());
        let denied = layer.decide(&req("fs__write_file")).unwrap();
        assert_eq!(denied.verdict, Verdict::Deny);
        assert_eq!(denied.policy, "workspace");
        let allowed = layer.decide(&req("fs__read_file")).unwrap();
        assert_eq!(allowed.verdict, Verdict::Allow);
        struct Nothing;
        impl PolicyScope for Nothing {
            fn policies(&self, _: &RunContext) -> Vec<Policy> {
                Vec::new()
            }
        }
        assert!(
            PolicyLayer::scoped(Arc::new(Nothing))
                .decide(&req("fs__write_file"))
                .is_none()
        );
        assert!(audit.entries().is_empty());
    }

    #[tokio::test]
    async fn chain_rules_see_the_history_rebuilt_from_the_journal() {
        let reads = Arc::new(AtomicU32::new(0));
        let sends = Arc::new(AtomicU32::new(0));
        let asked = Arc::new(AtomicU32::new(0));
        let policy = Policy::compile(
            "p",
            &PolicySpec::new().with_chain(ChainRule::new(
                ["fs__read", "slack__send"],
                ChainAction::RequireApproval,
            )),
        )
        .unwrap();
        let audit = Arc::new(MemoryAuditLog::new());
        let build = || {
            let model = ScriptedProvider::new()
                .then_tool_call("slack__send", json!({"text": "hi"}))
                .then_tool_call("fs__read", json!({}))
                .then_tool_call("slack__send", json!({"text": "the file"}))
                .then_text("done");
            AgentLlm::new(
                Agent::new("a", "")
                    .with_tool(tool("fs__read", Arc::clone(&reads)))
                    .with_tool(tool("slack__send", Arc::clone(&sends))),
                model,
            )
            .with_tool_layer(PolicyLayer::new(policy.clone()).with_audit(audit.clone()))
        };
        let journal = Arc::new(MemoryJournal::new());
        let ctx = RunContext::new()
            .with_journal(journal.clone())
            .with_approvals(Arc::new(Count(
                Arc::clone(&asked),
                ApprovalDecision::Approved,
            )));
        assert_eq!(build().generate_str("go", &ctx).await.unwrap(), "done");
        // The first send needed nothing; the one after the read needed an approval.
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(sends.load(Ordering::SeqCst), 2);
        let outcomes: Vec<AuditOutcome> = audit.entries().iter().map(|e| e.event.outcome).collect();
        assert_eq!(
            outcomes,
            [
                AuditOutcome::Allowed,
                AuditOutcome::Allowed,
                AuditOutcome::ApprovalRequested,
                AuditOutcome::Approved
            ]
        );
        // The verdict is journaled.
        assert!(
            journal
                .entries()
                .iter()
                .any(|(k, _)| k.starts_with("policy/"))
        );

        // Replaying the recorded run in a fresh context runs nothing again, and the history
        // is rebuilt from the replayed calls.
        let replay = RunContext::new()
            .with_journal(Arc::new(MemoryJournal::from_entries(journal.entries())))
            .with_approvals(Arc::new(Count(
                Arc::clone(&asked),
                ApprovalDecision::Approved,
            )));
        assert_eq!(build().generate_str("go", &replay).await.unwrap(), "done");
        assert_eq!(sends.load(Ordering::SeqCst), 2);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        replay.with_tool_history(|h| {
            let names: Vec<&str> = h.iter().map(|c| c.tool.as_str()).collect();
            assert_eq!(names, ["slack__send", "fs__read", "slack__send"]);
        });
    }

    /// Policies by principal: the key's carries `read-only`.
    struct ByKey(Policy);
    impl PolicyScope for ByKey {
        fn policies(&self, ctx: &RunContext) -> Vec<Policy> {
            ctx.principal()
                .and_then(|p| p.policy.as_deref())
                .filter(|p| *p == self.0.name())
                .map(|_| self.0.clone())
                .into_iter()
                .collect()
        }
    }

    #[tokio::test]
    async fn the_most_restrictive_of_every_policy_that_applies_wins() {
        let writes = Arc::new(AtomicU32::new(0));
        let open = Policy::compile("open", &PolicySpec::new()).unwrap();
        let ro = Policy::compile(
            "read-only",
            &PolicySpec::new().with_allowed_tools(["*__read"]),
        )
        .unwrap();
        let audit = Arc::new(MemoryAuditLog::new());
        let service = |layer: PolicyLayer| {
            layer.with_audit(audit.clone()).layer(ToolService::new(
                crate::tool::ToolSourceService::new(Arc::new(tool(
                    "fs__write",
                    Arc::clone(&writes),
                ))),
            ))
        };
        let with_key = RunContext::new()
            .with_principal(crate::Principal::new("o", "w").with_policy("read-only"));
        let scope: Arc<dyn PolicyScope> = Arc::new(ByKey(ro));
        let out = service(PolicyLayer::new(open.clone()).with_scope(Arc::clone(&scope)))
            .oneshot(ToolRequest::new(
                "c1",
                "fs__write",
                json!({}),
                with_key.clone(),
            ))
            .await
            .unwrap();
        assert!(out.is_error);
        assert!(
            out.text_content().contains("denied by policy `read-only`"),
            "{}",
            out.text_content()
        );
        assert_eq!(writes.load(Ordering::SeqCst), 0);
        // Without the key's policy the agent's own allows it.
        let out = service(PolicyLayer::new(open).with_scope(Arc::clone(&scope)))
            .oneshot(ToolRequest::new(
                "c2",
                "fs__write",
                json!({}),
                RunContext::new(),
            ))
            .await
            .unwrap();
        assert!(!out.is_error);
        // A scope-only layer with no policy for the call runs it without a decision.
        let out = service(PolicyLayer::scoped(Arc::clone(&scope)))
            .oneshot(ToolRequest::new(
                "c3",
                "fs__write",
                json!({}),
                RunContext::new(),
            ))
            .await
            .unwrap();
        assert!(!out.is_error);
        assert_eq!(writes.load(Ordering::SeqCst), 2);
        let decided: Vec<(AuditOutcome, String)> = audit
            .entries()
            .iter()
            .map(|e| (e.event.outcome, e.event.policy.clone()))
            .collect();
        assert_eq!(
            decided,
            [
                (AuditOutcome::Denied, "read-only".to_owned()),
                (AuditOutcome::Allowed, "open".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn a_resumed_call_keeps_its_journaled_verdict() {
        // The journal says this call needed approval, although the history (empty here)
        // would allow it: the recorded verdict stands and the approval is asked.
        let sends = Arc::new(AtomicU32::new(0));
        let asked = Arc::new(AtomicU32::new(0));
        let policy = Policy::compile(
            "p",
            &PolicySpec::new().with_chain(ChainRule::new(["x", "send"], ChainAction::Block)),
        )
        .unwrap();
        let recorded = Decision {
            verdict: Verdict::RequireApproval,
            policy: "p".into(),
            rule: Some("chains[0]".into()),
            reason: "r".into(),
        };
        let journal = MemoryJournal::from_entries([(
            "policy/k1".to_owned(),
            serde_json::to_value(&recorded).unwrap(),
        )]);
        let ctx = RunContext::new()
            .with_journal(Arc::new(journal))
            .with_approvals(Arc::new(Count(
                Arc::clone(&asked),
                ApprovalDecision::Denied {
                    reason: "no".into(),
                },
            )))
            .with_tool_call_key("k1");
        let svc = PolicyLayer::new(policy).layer(ToolService::new(
            crate::tool::ToolSourceService::new(Arc::new(tool("send", Arc::clone(&sends)))),
        ));
        let out = svc
            .oneshot(ToolRequest::new("c", "send", json!({}), ctx))
            .await
            .unwrap();
        assert!(out.is_error);
        assert!(
            out.text_content().contains("not approved: no"),
            "{}",
            out.text_content()
        );
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert_eq!(sends.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_tool_over_its_rate_limit_is_a_tool_error_the_model_reads_and_others_run() {
        use std::num::NonZeroU32;
        let searches = Arc::new(AtomicU32::new(0));
        let sends = Arc::new(AtomicU32::new(0));
        let one = NonZeroU32::new(1).unwrap();
        let policy = Policy::compile(
            "p",
            &PolicySpec::new().with_rate_limit(
                "github__*",
                crate::config::Rate::new(one, NonZeroU32::new(2).unwrap()),
            ),
        )
        .unwrap();
        let audit = Arc::new(MemoryAuditLog::new());
        let provider = Arc::new(
            ScriptedProvider::new()
                .then_tool_call("github__search", json!({}))
                .then_tool_call("github__search", json!({}))
                .then_tool_call("github__search", json!({}))
                .then_tool_call("slack__send", json!({}))
                .then_text("done"),
        );
        let agent = AgentLlm::shared(
            Agent::new("a", "")
                .with_tool(tool("github__search", Arc::clone(&searches)))
                .with_tool(tool("slack__send", Arc::clone(&sends))),
            provider.clone(),
        )
        .with_tool_layer(PolicyLayer::new(policy).with_audit(audit.clone()));
        let ctx = RunContext::new();
        assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "done");
        // The burst of two ran; the third call was not made; another tool is not affected.
        assert_eq!(searches.load(Ordering::SeqCst), 2);
        assert_eq!(sends.load(Ordering::SeqCst), 1);
        // The model read why and when to retry.
        let seen = provider.requests()[3].messages.clone();
        let last = serde_json::to_string(seen.last().unwrap()).unwrap();
        assert!(
            last.contains("over the rate limit `github__*` (1 per second, bursts of 2)")
                && last.contains("retry in"),
            "{last}"
        );
        let denied: Vec<_> = audit
            .entries()
            .into_iter()
            .filter(|e| e.event.outcome == AuditOutcome::Denied)
            .collect();
        assert_eq!(denied.len(), 1);
        assert_eq!(
            denied[0].event.rule.as_deref(),
            Some("rate_limits.github__*")
        );
    }
    /// A call refused by a rate limit says how long to wait, as a number the gateway turns
    /// into `Retry-After`; a call that was made carries none.
    #[tokio::test]
    async fn a_rate_limited_output_carries_when_to_retry() {
        use std::num::NonZeroU32;
        let one = NonZeroU32::new(1).unwrap();
        let policy = Policy::compile(
            "p",
            &PolicySpec::new().with_rate_limit("send", crate::config::Rate::new(one, one)),
        )
        .unwrap();
        let sends = Arc::new(AtomicU32::new(0));
        let svc = PolicyLayer::new(policy).layer(ToolService::new(
            crate::tool::ToolSourceService::new(Arc::new(tool("send", Arc::clone(&sends)))),
        ));
        let call = |svc: &PolicyService| {
            svc.clone()
                .oneshot(ToolRequest::new("c", "send", json!({}), RunContext::new()))
        };
        let made = call(&svc).await.unwrap();
        assert!(!made.is_error && made.retry_after_ms.is_none(), "{made:?}");
        let refused = call(&svc).await.unwrap();
        assert!(refused.is_error, "{refused:?}");
        let wait = refused
            .retry_after_ms
            .expect("a rate-limited call says when to retry");
        assert!(wait > 0 && wait <= 1000, "{wait} ms");
        assert_eq!(sends.load(Ordering::SeqCst), 1);
    }
    use tower::Layer;
}
