//! Governance in the server: the stored, hash-chained audit log of every policy decision
//! ([`StoreAudit`]) and the approval queue it keeps beside it.
//!
//! The policy itself ([`agentkit_core::policy::Policy`], [`PolicyLayer`](agentkit_core::policy::PolicyLayer))
//! is core's, so it applies the same way to agents used as a library; the server builds it
//! from the `policies:` of `agentkit.yaml` (and an agent's `policy:`) and gives it this
//! module's audit sink.
//!
//! Storage: documents in the runtime's [`Store`] (SQLite or PostgreSQL, nothing to migrate).
//! Each workspace has its own chain: entry `n` is document `audit/<workspace>/<n, 20 digits>`,
//! written create-only, so two writers never take the same position; `audit_head/<workspace>`
//! is a hint of the last position (written in the same transaction as the entries on the
//! stores of agentkit-runtime; repaired when another writer moved past it). Concurrent appends
//! to one chain are gathered and written together, in one transaction (`chain`).
//! Arguments and reasons are redacted (the runtime's [`Redactor`]) before they are hashed and
//! stored.

use std::sync::Arc;

mod chain;
mod scope;

pub use scope::PrincipalPolicies;

use agentkit_core::policy::{AuditEntry, AuditEvent, AuditOutcome, AuditSink, GENESIS_HASH};
use agentkit_core::{Error, Result};
use agentkit_runtime::model::{Expect, now_ms};
use agentkit_runtime::{Redactor, Store};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

const AUDIT: &str = "audit";
const HEAD: &str = "audit_head";
const APPROVALS: &str = "approvals";
/// Approvals that expire, by time: `<expires_at, 20 digits>/<run_id>/<call_id>`, so the sweep
/// reads only what is due.
const EXPIRING: &str = "approvals_expiring";
/// [`AuditEvent::via`] of a call made through the server's gateway.
pub(crate) const GATEWAY_VIA: &str = "gateway";
/// The chain of events whose run has no principal: the built-in `default/default` workspace.
pub const DEFAULT_WORKSPACE: &str = "default/default";
const CAS_ATTEMPTS: usize = 64;

/// The chain an event belongs to: its principal's `org/workspace` (the same workspace name in
/// two organisations is two chains), or [`DEFAULT_WORKSPACE`].
fn chain_of(event: &AuditEvent) -> String {
    match (&event.tenant, &event.workspace) {
        (Some(org), Some(ws)) => format!("{org}/{ws}"),
        _ => DEFAULT_WORKSPACE.to_owned(),
    }
}

fn entry_id(workspace: &str, seq: u64) -> String {
    format!("{workspace}/{seq:020}")
}

/// The audit log and approval queue over a [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct StoreAudit {
    store: Arc<dyn Store>,
    redactor: Redactor,
    /// Pending approvals are rejected this long after they were asked.
    expire_after: Option<std::time::Duration>,
    /// The chains' writer tasks: appends are gathered and written together (see `chain`).
    appender: Arc<chain::Appender>,
}

impl std::fmt::Debug for StoreAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreAudit").finish_non_exhaustive()
    }
}

/// A call waiting for (or decided by) a human, as `GET /v1/approvals` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ApprovalView {
    /// The run that waits.
    pub run_id: String,
    /// The tool call's id.
    pub call_id: String,
    /// The workspace (`org/workspace`).
    pub workspace: String,
    /// The tool.
    pub tool: String,
    /// Its arguments (redacted).
    #[schema(value_type = Object)]
    pub arguments: Value,
    /// The policy and rule that asked for approval.
    pub policy: String,
    /// The rule.
    pub rule: Option<String>,
    /// Why approval is needed.
    pub reason: String,
    /// The run's earlier successful tool calls (the chain that triggered the rule).
    pub history: Vec<String>,
    /// `pending`, `approved`, `rejected`, or `cancelled` (its run ended before anyone
    /// decided: cancelled, failed or finished; `decision_reason` says how).
    pub status: String,
    /// When it was asked (ms since epoch).
    pub requested_at: i64,
    /// When it was decided.
    pub decided_at: Option<i64>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// The decision's reason.
    pub decision_reason: Option<String>,
    /// Who claimed it (a key id or `admin`): only they may decide it until `claimed_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// When the claim lapses (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_until: Option<i64>,
    /// When it is rejected for want of a decision (ms since epoch; `server.approvals.expire_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The API key of the run's principal, if one started it (for the decision's audit
    /// entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The position of the decision's entry in the workspace's audit log, once it is
    /// written (when the decision is made, before the run resumes; see
    /// [`StoreAudit::audit_decision`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_seq: Option<u64>,
}

impl ApprovalView {
    /// Mark the call decided: `status` (`approved`, `rejected`, `cancelled`) by `by` at `now`.
    fn settle(&mut self, status: &str, by: &str, reason: Option<String>, now: i64) {
        status.clone_into(&mut self.status);
        self.decided_at = Some(now);
        self.decided_by = Some(by.to_owned());
        self.decision_reason = reason;
    }
}

/// Who decides expired approvals.
pub const EXPIRY_DECIDER: &str = "expiry";

/// Who "decides" the approvals withdrawn because their run ended (status `cancelled`).
pub const RUN_ENDED_DECIDER: &str = "run";

impl StoreAudit {
    /// Store approval `v` under `id` if `expect` holds: whether it was written (`false`: it
    /// changed meanwhile).
    async fn put_approval(&self, id: &str, v: &ApprovalView, expect: Expect) -> Result<bool> {
        let value = serde_json::to_value(v).map_err(|e| Error::json("encoding an approval", e))?;
        Ok(self
            .store
            .doc_put(APPROVALS, id, value, expect)
            .await?
            .is_some())
    }

    /// An audit log over `store`, redacting with the default [`Redactor`].
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            redactor: Redactor::default(),
            expire_after: None,
            appender: Arc::default(),
        }
    }

    /// Reject approvals nobody decided `after` they were asked (see [`expire_due`]).
    #[must_use]
    pub fn with_approval_expiry(mut self, after: Option<std::time::Duration>) -> Self {
        self.expire_after = after;
        self
    }

    /// Redact with `redactor` instead.
    #[must_use]
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    fn redact(&self, event: &mut AuditEvent) {
        self.redactor.apply(&mut event.arguments);
        if !event.reason.is_empty() {
            let mut reason = Value::String(std::mem::take(&mut event.reason));
            self.redactor.apply(&mut reason);
            event.reason = match reason {
                Value::String(s) => s,
                _ => String::new(),
            };
        }
    }

    /// Append `event` (already redacted) to its workspace's chain; returns the entry once it
    /// is stored. Concurrent appends to one chain share one write (see `chain`).
    async fn append(&self, event: AuditEvent) -> Result<AuditEntry> {
        self.appender
            .append(&self.store, chain_of(&event), event)
            .await
    }

    /// Entries of `workspace`'s chain after position `after`, at most `limit`, oldest first.
    pub async fn entries(
        &self,
        workspace: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let docs = self
            .store
            .doc_list(
                AUDIT,
                &format!("{workspace}/"),
                Some(&entry_id(workspace, after)),
                limit,
            )
            .await?;
        docs.into_iter()
            .map(|d| {
                serde_json::from_value(d.value).map_err(|e| {
                    Error::invalid_state(
                        format!("audit entry `{}`", d.id),
                        format!("it is not an audit entry: {e}"),
                    )
                })
            })
            .collect()
    }

    /// The gateway calls (events [`via`](AuditEvent::via) `gateway`) that `workspace`'s
    /// chain records as allowed or approved for `key_id` (`None`: the admin key) at
    /// `from_ms` or later and before `until_ms`: each call's tool and time, oldest first.
    /// Reads at most the chain's last `scan` entries.
    pub(crate) async fn gateway_calls(
        &self,
        workspace: &str,
        key_id: Option<&str>,
        from_ms: i64,
        until_ms: i64,
        scan: u64,
    ) -> Result<Vec<(String, i64)>> {
        let (_, calls) = self.gateway_entries(workspace, None, scan).await?;
        Ok(calls
            .into_iter()
            .filter(|(_, e)| {
                e.key_id.as_deref() == key_id && (from_ms..until_ms).contains(&e.at_ms)
            })
            .map(|(_, e)| (e.tool, e.at_ms))
            .collect())
    }

    /// The gateway calls allowed or approved in `workspace`'s chain after entry `after`
    /// (`None`: in its last `scan` entries) by a process other than `node`, decided at
    /// `since_ms` or later: each as (entry, key id, tool, time). Reads at most the chain's
    /// last `scan` entries (older ones are skipped). Also returns the chain's last entry
    /// read (`after` when nothing was new).
    pub(crate) async fn gateway_calls_after(
        &self,
        workspace: &str,
        after: Option<u64>,
        node: &str,
        since_ms: i64,
        scan: u64,
    ) -> Result<(u64, Vec<(u64, Option<String>, String, i64)>)> {
        let (last, calls) = self.gateway_entries(workspace, after, scan).await?;
        let calls = calls
            .into_iter()
            .filter(|(_, e)| e.node.as_deref().is_some_and(|n| n != node) && e.at_ms >= since_ms)
            .map(|(seq, e)| (seq, e.key_id, e.tool, e.at_ms))
            .collect();
        Ok((last.max(after.unwrap_or(0)), calls))
    }

    /// The entries of `workspace`'s chain after `after` (and among its last `scan`) that
    /// record a gateway call (events [`via`](AuditEvent::via) `gateway`) allowed or
    /// approved, oldest first, with the last entry read.
    async fn gateway_entries(
        &self,
        workspace: &str,
        after: Option<u64>,
        scan: u64,
    ) -> Result<(u64, Vec<(u64, AuditEvent)>)> {
        let head = match self.store.doc_get(HEAD, workspace).await? {
            Some(h) => h.value.get("seq").and_then(Value::as_u64).unwrap_or(0),
            None => 0,
        };
        let mut from = after.unwrap_or(0).max(head.saturating_sub(scan));
        let mut out = Vec::new();
        while from < head {
            let page = self.entries(workspace, from, 500).await?;
            let Some(end) = page.last().map(|e| e.seq) else {
                break;
            };
            from = end;
            out.extend(
                page.into_iter()
                    .filter(|e| {
                        e.event.via.as_deref() == Some(GATEWAY_VIA)
                            && matches!(
                                e.event.outcome,
                                AuditOutcome::Allowed | AuditOutcome::Approved
                            )
                    })
                    .map(|e| (e.seq, e.event)),
            );
        }
        Ok((from, out))
    }

    /// Verify `workspace`'s whole chain; returns how many entries it has.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidState`] naming the first entry that was altered, removed or inserted.
    pub async fn verify(&self, workspace: &str) -> Result<u64> {
        let mut after = 0u64;
        let mut last: Option<AuditEntry> = None;
        loop {
            let page = self.entries(workspace, after, 500).await?;
            let Some(end) = page.last().cloned() else {
                break;
            };
            let mut window = Vec::with_capacity(page.len() + 1);
            match last.take() {
                Some(prev) => window.push(prev),
                None => {
                    if page[0].seq != 1 || page[0].prev_hash != GENESIS_HASH {
                        return Err(Error::invalid_state(
                            "audit log",
                            format!(
                                "the audit log was altered at entry {}: the chain does not start \
                                 at entry 1",
                                page[0].seq
                            ),
                        ));
                    }
                }
            }
            window.extend(page);
            agentkit_core::policy::verify_chain(&window)?;
            after = end.seq;
            last = Some(end);
        }
        if let Some(head) = self.store.doc_get(HEAD, workspace).await?
            && let Some(n) = head.value.get("seq").and_then(Value::as_u64)
            && n > after
        {
            return Err(Error::invalid_state(
                "audit log",
                format!(
                    "the audit log was altered: entries {}..={n} are missing",
                    after + 1
                ),
            ));
        }
        Ok(after)
    }

    /// Approvals, newest first: all, or those with `status` (`pending`, `approved`,
    /// `rejected`, `cancelled`), optionally of one workspace. A pending approval whose run
    /// has ended is withdrawn first (see [`withdraw_approvals`](Self::withdraw_approvals)).
    pub async fn approvals(
        &self,
        status: Option<&str>,
        workspace: Option<&str>,
    ) -> Result<Vec<ApprovalView>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let docs = self
                .store
                .doc_list(APPROVALS, "", after.as_deref(), 500)
                .await?;
            let Some(last) = docs.last() else { break };
            after = Some(last.id.clone());
            for d in docs {
                let Ok(v) = serde_json::from_value::<ApprovalView>(d.value) else {
                    continue;
                };
                if status.is_some_and(|s| v.status != s)
                    || workspace.is_some_and(|w| v.workspace != w)
                {
                    continue;
                }
                out.push(v);
            }
        }
        // A pending approval whose run ended (its process stopped before withdrawing it)
        // is withdrawn now, and listed as it is then.
        let mut ended = std::collections::HashMap::new();
        for v in &mut out {
            if v.status != "pending" {
                continue;
            }
            if !ended.contains_key(&v.run_id) {
                let run = self.store.get_run(&v.run_id).await?;
                let how = run.filter(|r| r.status.is_terminal()).map(|r| ending(&r));
                if let Some(how) = &how {
                    self.withdraw_approvals(&v.run_id, how).await?;
                }
                ended.insert(v.run_id.clone(), how);
            }
            if let Some(Some(_)) = ended.get(&v.run_id)
                && let Some(d) = self
                    .store
                    .doc_get(APPROVALS, &format!("{}/{}", v.run_id, v.call_id))
                    .await?
                && let Ok(now) = serde_json::from_value::<ApprovalView>(d.value)
            {
                *v = now;
            }
        }
        if let Some(s) = status {
            out.retain(|v| v.status == s);
        }
        out.sort_by_key(|a| std::cmp::Reverse(a.requested_at));
        Ok(out)
    }

    /// Record who decided the pending approvals of `run_id`, before the run is signalled;
    /// returns how many this call decided (0: none was pending, or another decider won the
    /// race — then the run must not be signalled again). See
    /// [`note_decision_for`](Self::note_decision_for) to decide one call.
    ///
    /// # Errors
    ///
    /// 409 when one of them is claimed by someone else (unless `override_claim`), or the
    /// store's error.
    pub async fn note_decision(
        &self,
        run_id: &str,
        approved: bool,
        by: &str,
        reason: Option<&str>,
        override_claim: bool,
    ) -> Result<usize> {
        self.note(run_id, None, approved, by, reason, override_claim)
            .await
            .map(|(calls, _)| calls.len())
    }

    /// Record who decided the pending approval of call `call_id` of `run_id` (or, with
    /// `None`, every pending approval of the run), before the run is signalled; returns the
    /// call ids this decided (signal each with
    /// [`approval_signal_for`](agentkit_runtime::approval_signal_for)). With `None`, an
    /// empty list means no call of the run was pending (or another decider won the race).
    ///
    /// # Errors
    ///
    /// 404 when `call_id` has no approval in the run; 409 when it is decided already, when
    /// another decider decided it (or, with `None`, all the run's pending calls) meanwhile,
    /// or when one of them is claimed by someone else (unless `override_claim`); or the
    /// store's error.
    pub async fn note_decision_for(
        &self,
        run_id: &str,
        call_id: Option<&str>,
        approved: bool,
        by: &str,
        reason: Option<&str>,
        override_claim: bool,
    ) -> Result<Vec<String>> {
        let (decided, had_pending) = self
            .note(run_id, call_id, approved, by, reason, override_claim)
            .await?;
        if had_pending && decided.is_empty() {
            return Err(Error::invalid_state(
                format!("the approvals of run {run_id}"),
                "were decided by someone else meanwhile; list them with \
                 `GET /v1/approvals?status=all`",
            ));
        }
        Ok(decided)
    }

    /// Decide the pending approvals (see [`note_decision_for`](Self::note_decision_for)):
    /// the call ids this decided, and whether any was pending.
    async fn note(
        &self,
        run_id: &str,
        call_id: Option<&str>,
        approved: bool,
        by: &str,
        reason: Option<&str>,
        override_claim: bool,
    ) -> Result<(Vec<String>, bool)> {
        let docs = match call_id {
            Some(call) => {
                let id = format!("{run_id}/{call}");
                let Some(d) = self.store.doc_get(APPROVALS, &id).await? else {
                    return Err(Error::not_found(
                        "approval",
                        &id,
                        "list the run's approvals with `GET /v1/approvals?status=all`",
                    ));
                };
                vec![d]
            }
            None => {
                let prefix = format!("{run_id}/");
                crate::pages::DocPages::new(&*self.store, APPROVALS, &prefix)
                    .all()
                    .await?
            }
        };
        let now = now_ms();
        let mut pending = Vec::new();
        for d in docs {
            let Ok(v) = serde_json::from_value::<ApprovalView>(d.value.clone()) else {
                continue;
            };
            if v.status != "pending" {
                if call_id.is_some() {
                    return Err(not_pending(run_id, &v));
                }
                continue;
            }
            if !override_claim
                && let (Some(who), Some(until)) = (&v.claimed_by, v.claimed_until)
                && who != by
                && until > now
            {
                return Err(Error::invalid_state(
                    format!("the approval of {} in run {run_id}", v.tool),
                    format!(
                        "is claimed by {who} for {} s more; ask them, or wait for the claim \
                         to lapse",
                        (until - now + 999) / 1000
                    ),
                ));
            }
            pending.push((d, v));
        }
        let had_pending = !pending.is_empty();
        let mut decided = Vec::new();
        for (d, mut v) in pending {
            v.settle(
                if approved { "approved" } else { "rejected" },
                by,
                reason.map(str::to_owned),
                now,
            );
            if self
                .put_approval(&d.id, &v, Expect::Revision(d.revision))
                .await?
            {
                decided.push(v.call_id);
            } else if call_id.is_some() {
                // Decided meanwhile (by another decider, or withdrawn because the run
                // ended): say how, as for a call found decided.
                if let Some(now) = self.store.doc_get(APPROVALS, &d.id).await?
                    && let Ok(now) = serde_json::from_value::<ApprovalView>(now.value)
                    && now.status != "pending"
                {
                    return Err(not_pending(run_id, &now));
                }
                return Err(Error::invalid_state(
                    format!("the approval of call {} in run {run_id}", v.call_id),
                    "was decided by someone else meanwhile; list it with `GET /v1/approvals?status=all`",
                ));
            }
        }
        Ok((decided, had_pending))
    }

    /// Claim the pending approval `run_id`/`call_id` for `by` until `until` (ms since epoch):
    /// others cannot decide it meanwhile. Claiming one's own claim again extends it.
    ///
    /// # Errors
    ///
    /// 404 when there is no such approval, 409 when it is decided or claimed by someone
    /// else.
    pub async fn claim(
        &self,
        run_id: &str,
        call_id: &str,
        by: &str,
        until: i64,
    ) -> Result<ApprovalView> {
        let id = format!("{run_id}/{call_id}");
        for _ in 0..8 {
            let Some(d) = self.store.doc_get(APPROVALS, &id).await? else {
                return Err(Error::not_found(
                    "approval",
                    &id,
                    "list pending approvals with `GET /v1/approvals`",
                ));
            };
            let mut v: ApprovalView = serde_json::from_value(d.value)
                .map_err(|e| Error::json("reading an approval", e))?;
            if v.status != "pending" {
                return Err(Error::invalid_state(
                    format!("the approval {id}"),
                    format!("is {} already", v.status),
                ));
            }
            let now = now_ms();
            if let (Some(who), Some(t)) = (&v.claimed_by, v.claimed_until)
                && who != by
                && t > now
            {
                return Err(Error::invalid_state(
                    format!("the approval {id}"),
                    format!("is claimed by {who} for {} s more", (t - now + 999) / 1000),
                ));
            }
            v.claimed_by = Some(by.to_owned());
            v.claimed_until = Some(until);
            if self
                .put_approval(&id, &v, Expect::Revision(d.revision))
                .await?
            {
                return Ok(v);
            }
        }
        Err(Error::Unavailable {
            what: format!("the approval {id}"),
            message: "it is being written concurrently; retry".into(),
        })
    }

    /// Append a change made outside any run ([`AuditEvent::change`]) to its workspace's
    /// chain, redacted; returns the entry once it is stored (the writer's commit
    /// acknowledged it).
    ///
    /// # Errors
    ///
    /// The store's error: the entry is not stored.
    pub async fn record_change(&self, mut event: AuditEvent) -> Result<AuditEntry> {
        self.redact(&mut event);
        self.append(event).await
    }

    /// Withdraw the approvals of `run_id` still pending, because the run ended
    /// (`ended`: its status and error, e.g. `cancelled: cancelled by request`): each becomes
    /// `cancelled`, decided by [`RUN_ENDED_DECIDER`] with that reason, and gets a `rejected`
    /// audit entry. Returns the call ids withdrawn (those another decider took meanwhile are
    /// left as they were).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn withdraw_approvals(&self, run_id: &str, ended: &str) -> Result<Vec<String>> {
        let prefix = format!("{run_id}/");
        let docs = crate::pages::DocPages::new(&*self.store, APPROVALS, &prefix)
            .all()
            .await?;
        let now = now_ms();
        let reason = format!("the run ended before a decision ({ended})");
        let mut withdrawn = Vec::new();
        for d in docs {
            let Ok(mut v) = serde_json::from_value::<ApprovalView>(d.value) else {
                continue;
            };
            if v.status != "pending" || v.run_id != run_id {
                continue;
            }
            v.settle("cancelled", RUN_ENDED_DECIDER, Some(reason.clone()), now);
            if !self
                .put_approval(&d.id, &v, Expect::Revision(d.revision))
                .await?
            {
                // Decided meanwhile by someone else: theirs stands.
                continue;
            }
            let (org, ws) = v
                .workspace
                .split_once('/')
                .unwrap_or(("default", "default"));
            let mut event = AuditEvent::change("approvals.withdraw", &v.call_id, Value::Null)
                .with_principal(org, ws, None)
                .with_actor(RUN_ENDED_DECIDER)
                .with_reason(reason.clone())
                .with_rule(v.rule.clone());
            event.outcome = AuditOutcome::Rejected;
            event.run_id.clone_from(&v.run_id);
            event.tool.clone_from(&v.tool);
            event.arguments = v.arguments.clone();
            event.policy.clone_from(&v.policy);
            self.record_change(event).await?;
            withdrawn.push(v.call_id);
        }
        Ok(withdrawn)
    }

    /// Keep the approval queue in step with `event`; whether to append it (not when it is a
    /// decision audited when it was made).
    async fn track_approval(&self, event: &mut AuditEvent) -> Result<bool> {
        let id = format!("{}/{}", event.run_id, event.call_id);
        match event.outcome {
            AuditOutcome::ApprovalRequested => {
                let v = ApprovalView {
                    run_id: event.run_id.clone(),
                    call_id: event.call_id.clone(),
                    workspace: chain_of(event),
                    tool: event.tool.clone(),
                    arguments: event.arguments.clone(),
                    policy: event.policy.clone(),
                    rule: event.rule.clone(),
                    reason: event.reason.clone(),
                    history: event.history.clone(),
                    status: "pending".into(),
                    requested_at: event.at_ms,
                    decided_at: None,
                    decided_by: None,
                    decision_reason: None,
                    claimed_by: None,
                    claimed_until: None,
                    key_id: event.key_id.clone(),
                    decision_seq: None,
                    expires_at: self.expire_after.map(|d| {
                        event
                            .at_ms
                            .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    }),
                };
                self.put_approval(&id, &v, Expect::Any).await?;
                if let Some(at) = v.expires_at {
                    self.store
                        .doc_put(
                            EXPIRING,
                            &format!("{:020}/{id}", at.max(0)),
                            Value::Object(serde_json::Map::new()),
                            Expect::Any,
                        )
                        .await?;
                }
            }
            AuditOutcome::Approved | AuditOutcome::Rejected => {
                // The person who decided, as the approve/reject route noted it.
                if let Some(d) = self.store.doc_get(APPROVALS, &id).await? {
                    if d.value.get("decision_seq").is_some_and(|s| !s.is_null()) {
                        // The decision was audited when it was made.
                        return Ok(false);
                    }
                    if let Some(by) = d.value.get("decided_by").and_then(Value::as_str) {
                        event.actor = Some(by.to_owned());
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// Write the audit entry of the decision on approval `run_id`/`call_id` (decided with
    /// [`note_decision_for`](Self::note_decision_for)) now, before its run is signalled, and
    /// note its position in the approval, so the run, when it resumes, does not write it
    /// again. The entry is the one the policy layer would write on resume (`approved`, or
    /// `rejected` with the reason), by who decided. Returns it once it is stored; an approval
    /// whose decision is audited already is left as it is.
    ///
    /// # Errors
    ///
    /// 404 when there is no such approval, 409 when it is still pending; the store's error
    /// (then nothing says the decision is audited, and the run writes it on resume).
    pub async fn audit_decision(&self, run_id: &str, call_id: &str) -> Result<Option<AuditEntry>> {
        let id = format!("{run_id}/{call_id}");
        let Some(d) = self.store.doc_get(APPROVALS, &id).await? else {
            return Err(Error::not_found(
                "approval",
                &id,
                "list the run's approvals with `GET /v1/approvals?status=all`",
            ));
        };
        let v: ApprovalView =
            serde_json::from_value(d.value).map_err(|e| Error::json("reading an approval", e))?;
        if v.decision_seq.is_some() {
            return Ok(None);
        }
        let (outcome, reason) = match v.status.as_str() {
            "approved" => (AuditOutcome::Approved, v.reason.clone()),
            "rejected" => (
                AuditOutcome::Rejected,
                v.decision_reason
                    .clone()
                    .unwrap_or_else(|| "rejected by an operator".to_owned()),
            ),
            other => {
                return Err(Error::invalid_state(
                    format!("the approval of call {call_id} in run {run_id}"),
                    format!("is {other}, not decided"),
                ));
            }
        };
        let (org, ws) = v
            .workspace
            .split_once('/')
            .unwrap_or(("default", "default"));
        let mut event = AuditEvent::change("", call_id, v.arguments.clone())
            .with_principal(org, ws, v.key_id.clone())
            .with_rule(v.rule.clone())
            .with_reason(reason);
        event.outcome = outcome;
        event.run_id = run_id.to_owned();
        event.tool.clone_from(&v.tool);
        event.policy.clone_from(&v.policy);
        event.actor.clone_from(&v.decided_by);
        if let Some(at) = v.decided_at {
            event.at_ms = at;
        }
        let entry = self.record_change(event).await?;
        // Note it, so the resumed run does not write it again.
        for _ in 0..CAS_ATTEMPTS {
            let Some(d) = self.store.doc_get(APPROVALS, &id).await? else {
                break;
            };
            let mut v: ApprovalView = serde_json::from_value(d.value)
                .map_err(|e| Error::json("reading an approval", e))?;
            v.decision_seq = Some(entry.seq);
            if self
                .put_approval(&id, &v, Expect::Revision(d.revision))
                .await?
            {
                break;
            }
        }
        Ok(Some(entry))
    }
}

#[async_trait]
impl AuditSink for StoreAudit {
    async fn record(&self, mut event: AuditEvent) -> Result<()> {
        self.redact(&mut event);
        if !self.track_approval(&mut event).await? {
            return Ok(());
        }
        self.append(event).await.map(|_| ())
    }
}

/// The 409 for deciding approval `v` of run `run_id`, which is not pending: its status and
/// who decided it (`run` when it was withdrawn because the run ended).
fn not_pending(run_id: &str, v: &ApprovalView) -> Error {
    Error::invalid_state(
        format!(
            "the approval of call {} ({}) in run {run_id}",
            v.call_id, v.tool
        ),
        format!(
            "is {} already{}; only a pending call can be decided",
            v.status,
            v.decided_by
                .as_deref()
                .map(|b| format!(" (by {b})"))
                .unwrap_or_default()
        ),
    )
}

/// The runtime's [`RunObserver`](agentkit_runtime::RunObserver) of a server: tells the
/// metrics, and withdraws the pending approvals of a run that ended (cancelled, failed or
/// finished; see [`StoreAudit::withdraw_approvals`]), whichever way it ended (every cancel
/// path goes through the runtime). A run ended by a process that stopped before this ran
/// is caught when its approval is listed or decided.
pub struct EndedRuns {
    inner: Arc<dyn agentkit_runtime::RunObserver>,
    audit: StoreAudit,
}

impl EndedRuns {
    /// Tell `inner` everything, and withdraw approvals through `audit`.
    #[must_use]
    pub fn new(inner: Arc<dyn agentkit_runtime::RunObserver>, audit: StoreAudit) -> Self {
        Self { inner, audit }
    }
}

impl std::fmt::Debug for EndedRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndedRuns").finish_non_exhaustive()
    }
}

/// How a run ended, for a withdrawn approval's reason: its status and error.
fn ending(run: &agentkit_runtime::model::RunRecord) -> String {
    let status = run.status.to_string();
    match &run.error {
        // Cancel reasons start with `cancelled: ` already.
        Some(e) if e.starts_with(&status) => e.clone(),
        Some(e) if !e.is_empty() => format!("{status}: {e}"),
        _ => status,
    }
}

impl agentkit_runtime::RunObserver for EndedRuns {
    fn run_ended(&self, run: &agentkit_runtime::model::RunRecord) {
        self.inner.run_ended(run);
        // A run that succeeded had every approval it asked for decided (it waits for each
        // one), so it has nothing to withdraw: no store read on the common path.
        if run.status == agentkit_runtime::RunStatus::Succeeded {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (audit, run_id, ended) = (self.audit.clone(), run.id.clone(), ending(run));
        handle.spawn(async move {
            if let Err(e) = audit.withdraw_approvals(&run_id, &ended).await {
                tracing::warn!(run = %run_id, error = %e, "withdrawing the approvals of an ended run failed");
            }
        });
    }

    fn schedule_fired(&self, schedule: &str, target: &str, lag: std::time::Duration) {
        self.inner.schedule_fired(schedule, target, lag);
    }
}

/// If run `run` ended, withdraw its pending approvals (in case the process that ended it
/// stopped first), and refuse a decision on one of them (`call_id`, or with `None` any of
/// them): 409 saying they were withdrawn. A decision on a call that was decided before the
/// run ended is left to [`StoreAudit::note_decision_for`], which names its status.
///
/// # Errors
///
/// 409 ([`Error::InvalidState`]) when this withdrew what was to be decided; the store's
/// error.
pub(crate) async fn refuse_if_ended(
    audit: &StoreAudit,
    run: &agentkit_runtime::model::RunRecord,
    call_id: Option<&str>,
) -> Result<()> {
    if !run.status.is_terminal() {
        return Ok(());
    }
    let withdrawn = audit.withdraw_approvals(&run.id, &ending(run)).await?;
    let refused = match call_id {
        Some(c) => withdrawn.iter().any(|w| w == c),
        None => !withdrawn.is_empty(),
    };
    if !refused {
        return Ok(());
    }
    Err(Error::invalid_state(
        format!("run {}", run.id),
        format!(
            "is {} already, so its approvals were withdrawn (status `cancelled`) and there is \
             nothing to decide; start a new run",
            run.status
        ),
    ))
}

/// Reject every pending approval whose `expires_at` has passed at `now`, and resume its run
/// with the rejection (the model reads that the approval expired). Runs on every server
/// process; the approval's compare-and-swap lets one of them decide and signal it.
///
/// # Errors
///
/// The store's error.
pub async fn expire_due(platform: &crate::platform::Platform, now: i64) -> Result<usize> {
    let store = platform.runtime().store();
    let audit = StoreAudit::new(Arc::clone(store));
    let mut expired = 0;
    loop {
        let due = store.doc_list(EXPIRING, "", None, 100).await?;
        let mut any = false;
        for marker in &due {
            let Some((at, id)) = marker.id.split_once('/') else {
                continue;
            };
            if at.parse::<i64>().is_ok_and(|t| t > now) {
                return Ok(expired);
            }
            any = true;
            if let Some(d) = store.doc_get(APPROVALS, id).await?
                && let Ok(a) = serde_json::from_value::<ApprovalView>(d.value)
                && a.status == "pending"
                && expire(platform, &audit, &a).await?
            {
                expired += 1;
            }
            store.doc_delete(EXPIRING, &marker.id, Expect::Any).await?;
        }
        if !any || due.len() < 100 {
            return Ok(expired);
        }
    }
}

/// Reject the pending approval `a` as expired and resume its run; whether this process did.
async fn expire(
    platform: &crate::platform::Platform,
    audit: &StoreAudit,
    a: &ApprovalView,
) -> Result<bool> {
    let minutes = (a.expires_at.unwrap_or(a.requested_at) - a.requested_at) / 60_000;
    let reason = format!(
        "nobody approved the call to {} within {minutes} minute(s), so it expired",
        a.tool
    );
    match audit
        .note_decision_for(
            &a.run_id,
            Some(&a.call_id),
            false,
            EXPIRY_DECIDER,
            Some(&reason),
            true,
        )
        .await
    {
        Ok(calls) if !calls.is_empty() => {
            if let Err(e) = audit.audit_decision(&a.run_id, &a.call_id).await {
                // The run writes it when it resumes.
                tracing::warn!(run = %a.run_id, error = %e, "auditing an expired approval failed");
            }
        }
        // Decided by someone else meanwhile (or gone).
        Ok(_) | Err(Error::InvalidState { .. } | Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e),
    }
    let payload = serde_json::json!({"decision": "denied", "reason": reason});
    if let Err(e) = platform
        .runtime()
        .signal(
            &a.run_id,
            &agentkit_runtime::approval_signal_for(&a.call_id),
            payload,
        )
        .await
    {
        tracing::warn!(run = %a.run_id, error = %e, "resuming a run after its approval expired failed");
    }
    Ok(true)
}

/// One entry as a CSV line (RFC 4180 quoting), in the columns of [`CSV_HEADER`].
#[must_use]
pub fn csv_line(e: &AuditEntry) -> String {
    fn q(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    }
    let ev = &e.event;
    [
        e.seq.to_string(),
        ev.at_ms.to_string(),
        ev.outcome.as_str().to_owned(),
        ev.workspace.clone().unwrap_or_default(),
        ev.tenant.clone().unwrap_or_default(),
        ev.key_id.clone().unwrap_or_default(),
        ev.run_id.clone(),
        ev.call_id.clone(),
        ev.tool.clone(),
        ev.arguments.to_string(),
        ev.policy.clone(),
        ev.rule.clone().unwrap_or_default(),
        ev.reason.clone(),
        ev.actor.clone().unwrap_or_default(),
        e.prev_hash.clone(),
        e.hash.clone(),
        ev.via.clone().unwrap_or_default(),
        if ev.history.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&ev.history).unwrap_or_default()
        },
        ev.node.clone().unwrap_or_default(),
    ]
    .iter()
    .map(|s| q(s))
    .collect::<Vec<_>>()
    .join(",")
}

/// The header line of the CSV export.
pub const CSV_HEADER: &str = "seq,at_ms,outcome,workspace,tenant,key_id,run_id,call_id,tool,arguments,policy,rule,reason,actor,prev_hash,hash,via,history,node";

#[cfg(test)]
mod tests {
    use super::*;
    use agentkit_core::RunContext;
    use agentkit_runtime::MemoryStore;
    use serde_json::json;

    fn event(outcome: AuditOutcome, args: Value) -> AuditEvent {
        AuditEvent::new(
            outcome,
            &RunContext::new().with_run_id("r1"),
            "c1",
            "slack__send",
            args,
            "p",
        )
    }

    #[tokio::test]
    async fn the_same_workspace_name_in_two_organisations_is_two_chains() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let audit = StoreAudit::new(Arc::clone(&store));
        for (org, n) in [("acme", 2), ("globex", 3)] {
            for _ in 0..n {
                let ctx = RunContext::new()
                    .with_run_id(format!("{org}-run"))
                    .with_principal(agentkit_core::Principal::new(org, "prod"));
                audit
                    .record(AuditEvent::new(
                        AuditOutcome::ApprovalRequested,
                        &ctx,
                        "c1",
                        "slack__send",
                        json!({}),
                        "p",
                    ))
                    .await
                    .unwrap();
            }
        }
        assert_eq!(audit.verify("acme/prod").await.unwrap(), 2);
        assert_eq!(audit.verify("globex/prod").await.unwrap(), 3);
        let acme = audit.entries("acme/prod", 0, 100).await.unwrap();
        assert!(
            acme.iter()
                .all(|e| e.event.tenant.as_deref() == Some("acme"))
        );
        let approvals = audit.approvals(None, Some("acme/prod")).await.unwrap();
        assert_eq!(approvals.len(), 1);
        assert_eq!(approvals[0].run_id, "acme-run");
        // Nothing lands in the default chain.
        assert_eq!(audit.verify(DEFAULT_WORKSPACE).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn chain_survives_a_lagging_head_and_detects_tampering() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let audit = StoreAudit::new(Arc::clone(&store));
        for i in 0..5 {
            audit
                .record(event(
                    AuditOutcome::Allowed,
                    json!({"i": i, "token": "sk-ABCDEFGHIJKLMNOPQRSTUVWX"}),
                ))
                .await
                .unwrap();
        }
        assert_eq!(audit.verify(DEFAULT_WORKSPACE).await.unwrap(), 5);
        let entries = audit.entries(DEFAULT_WORKSPACE, 0, 100).await.unwrap();
        assert!(
            !serde_json::to_string(&entries)
                .unwrap()
                .contains("sk-ABCDEFGH")
        );
        // A writer that died between its entry and the head: the next one repairs the head.
        store
            .doc_put(
                HEAD,
                DEFAULT_WORKSPACE,
                json!({"seq": 3, "hash": entries[2].hash}),
                Expect::Any,
            )
            .await
            .unwrap();
        audit
            .record(event(AuditOutcome::Denied, json!({})))
            .await
            .unwrap();
        assert_eq!(audit.verify(DEFAULT_WORKSPACE).await.unwrap(), 6);
        // An edited row is found.
        let mut doc = store
            .doc_get(AUDIT, &entry_id(DEFAULT_WORKSPACE, 2))
            .await
            .unwrap()
            .unwrap();
        doc.value["event"]["tool"] = json!("harmless");
        store
            .doc_put(AUDIT, &doc.id, doc.value, Expect::Any)
            .await
            .unwrap();
        let err = audit
            .verify(DEFAULT_WORKSPACE)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("altered at entry 2"), "{err}");
    }

    /// Two nodes appending to one chain at once: each event is stored once, in a chain that
    /// verifies (the losing writer re-chains its events after the winner's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_of_one_chain_store_every_event_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let nodes = [
            StoreAudit::new(Arc::clone(&store)),
            StoreAudit::new(Arc::clone(&store)),
        ];
        let mut tasks = tokio::task::JoinSet::new();
        for (n, audit) in nodes.iter().enumerate() {
            for i in 0..100 {
                let audit = audit.clone();
                tasks.spawn(async move {
                    audit
                        .record(event(AuditOutcome::Allowed, json!({"node": n, "i": i})))
                        .await
                });
            }
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        assert_eq!(nodes[0].verify(DEFAULT_WORKSPACE).await.unwrap(), 200);
        let entries = nodes[1].entries(DEFAULT_WORKSPACE, 0, 500).await.unwrap();
        let mut seen: Vec<(u64, u64)> = entries
            .iter()
            .map(|e| {
                let a = &e.event.arguments;
                (a["node"].as_u64().unwrap(), a["i"].as_u64().unwrap())
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 200, "every event once");
    }

    #[tokio::test]
    async fn approvals_are_queued_and_decided() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let audit = StoreAudit::new(Arc::clone(&store));
        audit
            .record(
                event(AuditOutcome::ApprovalRequested, json!({"text": "hi"}))
                    .with_history(vec!["fs__read".into()]),
            )
            .await
            .unwrap();
        let pending = audit.approvals(Some("pending"), None).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].history, ["fs__read"]);
        // Two deciders claim at once: exactly one holds it.
        let until = now_ms() + 60_000;
        let call = pending[0].call_id.clone();
        let (a, b) = tokio::join!(
            audit.claim("r1", &call, "key-a", until),
            audit.claim("r1", &call, "key-c", until)
        );
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        let winner = if a.is_ok() { "key-a" } else { "key-c" };
        if winner == "key-c" {
            // Hand it to key-a for the rest of the test: the admin override decides nothing
            // here, so let the claim lapse by claiming with a past expiry as its holder.
            audit.claim("r1", &call, "key-c", 0).await.unwrap();
        }
        // A claim keeps others from deciding; its holder (or an override) may.
        let claimed = audit
            .claim("r1", &pending[0].call_id, "key-a", until)
            .await
            .unwrap();
        assert_eq!(claimed.claimed_by.as_deref(), Some("key-a"));
        let e = audit
            .claim("r1", &pending[0].call_id, "key-b", until)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("claimed by key-a"), "{e}");
        let e = audit
            .note_decision("r1", true, "key-b", None, false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("claimed by key-a"), "{e}");
        assert_eq!(
            audit
                .note_decision("r1", true, "key-a", Some("ok"), false)
                .await
                .unwrap(),
            1
        );
        // Decided once: a second decision decides nothing (the run is not signalled twice).
        assert_eq!(
            audit
                .note_decision("r1", false, "admin", None, true)
                .await
                .unwrap(),
            0
        );
        audit
            .record(event(AuditOutcome::Approved, json!({"text": "hi"})))
            .await
            .unwrap();
        assert!(
            audit
                .approvals(Some("pending"), None)
                .await
                .unwrap()
                .is_empty()
        );
        let last = audit.entries(DEFAULT_WORKSPACE, 1, 10).await.unwrap();
        assert_eq!(last[0].event.actor.as_deref(), Some("key-a"));
        assert!(csv_line(&last[0]).contains(",approved,"));
    }
}
