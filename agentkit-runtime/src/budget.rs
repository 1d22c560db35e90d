//! Budgets per period across runs: a spend ledger in the [`Store`] and the rules it enforces.
//!
//! [`SpendLedger`] is a [`SpendGuard`]: a runtime built
//! [`with_spend_guard`](crate::RuntimeBuilder::with_spend_guard) asks it before every model
//! call and tells it every call's cost. A call is refused (the run fails with
//! [`Error::BudgetExceeded`], saying which budget, how much was spent and set aside, when the
//! period ends and what to do) when the agent's or the workspace's budget this period has too
//! little left for it.
//!
//! # Holds: what a call is expected to cost
//!
//! A call's cost is known only when it returns, so before the call the ledger sets its
//! *estimate* aside (a hold) and admits the call only if `spent + held + estimate` stays within
//! every budget that applies; the real cost then replaces the hold. The estimate of a call of
//! agent `a` is the most one of `a`'s last 8 calls cost (kept in the ledger, carried into the
//! next period), and at least `budgets.call_estimate_usd` (default 0; set it so that the first
//! calls of an agent with no history are held too). A hold expires after
//! `budgets.hold_for` (default 10 minutes): a process killed mid-call frees its hold then,
//! and an expired hold is dropped by the next write to its document. A call that fails (the
//! provider's error, a cancel or a timeout) gives its hold back at once.
//!
//! # Storage and concurrency
//!
//! One [`DocStore`](crate::DocStore) document per budget and period, in collection `spend`,
//! id `<org>/<workspace>/<scope>/<period>/<period start, ms>` (scope `workspace` or
//! `agent:<name>`), holding `{spent_usd, calls, holds, recent}`. Holds, charges and releases
//! are compare-and-swap writes (retried with a jittered backoff), so any number of server
//! processes sharing a SQLite file or a PostgreSQL database see every hold and add up every
//! charge exactly once. A new period is a new document: nothing is reset.
//!
//! # Guarantee
//!
//! Within a period, spend never exceeds the budget as long as every call costs at most its
//! estimate and returns within `hold_for`, however many runs and processes race on the last
//! cents. What can still pass the budget, and by how much:
//!
//! - a call that costs more than its estimate: by the difference (each agent's estimate
//!   follows its costliest recent call, so this is a call dearer than any of the last 8, or
//!   an agent's first calls without `call_estimate_usd`);
//! - a call outliving `hold_for`: its hold lapses and other calls may be admitted into it, so
//!   by at most that call's cost;
//! - a period ending during a call: the call is charged to the period it ends in.
//!
//! So with `k` calls in flight the overshoot is at most the sum of their costs above their
//! estimates — zero when the estimates hold. The check at a run's start (`429` from the server)
//! and [`BudgetStatus::is_exhausted`] use the same rule without the holds of calls in flight,
//! which are transient.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::config::{BudgetPeriod, BudgetSettings, PeriodBudget};
use agentkit_core::{Error, Result, RunContext, SpendGuard, SpendHold};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Expect, now_ms};
use crate::store::Store;

/// The collection of the ledger's documents.
pub const SPEND_COLLECTION: &str = "spend";
/// The workspace of runs started without a principal.
const DEFAULT_WORKSPACE: &str = "default/default";
const CAS_ATTEMPTS: usize = 64;
/// How many recent call costs of each agent a ledger document keeps (the estimate is their
/// maximum).
const RECENT_CALLS: usize = 8;
/// How long a hold lasts without `hold_for`.
const DEFAULT_HOLD_FOR: Duration = Duration::from_secs(600);
/// Slack for the sums of floating-point dollars.
const EPSILON_USD: f64 = 1e-9;

/// Which budgets apply: per agent (in each workspace) and per workspace.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BudgetRules {
    /// Budgets of agents by name; each workspace has its own ledger for each agent.
    pub agents: BTreeMap<String, PeriodBudget>,
    /// Budgets of workspaces, the least estimate of a call and how long a hold lasts.
    pub workspaces: BudgetSettings,
}

impl BudgetRules {
    /// No budgets.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Agent `agent` may spend `budget` per period in each workspace.
    #[must_use]
    pub fn with_agent(mut self, agent: impl Into<String>, budget: PeriodBudget) -> Self {
        self.agents.insert(agent.into(), budget);
        self
    }

    /// The workspace budgets (`budgets:` of `agentkit.yaml`).
    #[must_use]
    pub fn with_workspaces(mut self, settings: BudgetSettings) -> Self {
        self.workspaces = settings;
        self
    }

    /// Set aside at least `usd` before every model call (`budgets.call_estimate_usd`; see the
    /// [module docs](self)).
    #[must_use]
    pub fn with_call_estimate(mut self, usd: f64) -> Self {
        self.workspaces.call_estimate_usd = Some(usd);
        self
    }

    /// Hold a call's estimate for at most `d` (`budgets.hold_for`, default 10 minutes).
    #[must_use]
    pub fn with_hold_for(mut self, d: Duration) -> Self {
        self.workspaces = self.workspaces.with_hold_for(d);
        self
    }

    /// The budgets of `agentkit.yaml`: every agent's `limits.budget` and `budgets:`.
    #[must_use]
    pub fn from_config(config: &agentkit_core::Config) -> Self {
        Self {
            agents: config
                .agents
                .iter()
                .filter_map(|(name, a)| a.limits.budget.map(|b| (name.clone(), b)))
                .collect(),
            workspaces: config.budgets.clone(),
        }
    }

    /// Whether no budget is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.workspaces.is_empty()
    }

    /// The configured least estimate of a call (0 when unset or invalid).
    fn floor_estimate(&self) -> f64 {
        self.workspaces
            .call_estimate_usd
            .filter(|e| e.is_finite() && *e > 0.0)
            .unwrap_or(0.0)
    }

    fn hold_for_ms(&self) -> i64 {
        let d = self.workspaces.hold_for.map_or(DEFAULT_HOLD_FOR, |h| h.0);
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
    }
}

/// What a budget is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", content = "agent", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BudgetScope {
    /// The whole workspace.
    Workspace,
    /// One agent's runs in the workspace.
    Agent(String),
}

impl BudgetScope {
    fn key(&self) -> String {
        match self {
            Self::Workspace => "workspace".to_owned(),
            Self::Agent(a) => format!("agent:{a}"),
        }
    }

    /// Where the budget is configured (for messages).
    fn config_key(&self, workspace: &str, rules: &BudgetRules) -> String {
        match self {
            Self::Agent(a) => format!("agents.{a}.limits.budget"),
            Self::Workspace if rules.workspaces.workspaces.contains_key(workspace) => {
                format!("budgets.workspaces.{workspace}")
            }
            Self::Workspace => "budgets.workspace".to_owned(),
        }
    }
}

/// One budget of a workspace in the current period, as `GET /v1/budgets` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BudgetStatus {
    /// `org/workspace`.
    pub workspace: String,
    /// What the budget is for.
    #[serde(flatten)]
    pub scope: BudgetScope,
    /// The budget per period, in US dollars.
    pub max_spend_usd: f64,
    /// Spent this period.
    pub spent_usd: f64,
    /// Left this period (never below 0), not counting holds.
    pub remaining_usd: f64,
    /// Set aside for model calls in flight (their estimates, until they return or expire).
    pub reserved_usd: f64,
    /// What the next model call is expected to cost: for an agent's budget, the most one of
    /// its recent calls cost; for the workspace's, the least such estimate among its agents
    /// (at least `budgets.call_estimate_usd` either way).
    pub next_call_usd: f64,
    /// Model calls charged this period.
    pub calls: u64,
    /// The period (`day`, `month`, `30m`, ...).
    pub period: String,
    /// When this period started (ms since the Unix epoch).
    pub period_start: i64,
    /// When it ends and the budget starts over (ms since the Unix epoch).
    pub period_end: i64,
}

impl BudgetStatus {
    /// Whether the budget has too little left for the next call (`spent + next_call` passes
    /// it, or it is spent): no model call it applies to is admitted until `period_end`.
    #[must_use]
    pub fn is_exhausted(&self) -> bool {
        self.spent_usd >= self.max_spend_usd
            || self.spent_usd + self.next_call_usd > self.max_spend_usd + EPSILON_USD
    }

    /// Milliseconds from `now_ms` until the period ends.
    #[must_use]
    pub fn resets_in_ms(&self, now_ms: i64) -> i64 {
        (self.period_end - now_ms).max(0)
    }
}

/// A call's estimate set aside until `until` (ms since the epoch).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Hold {
    usd: f64,
    until: i64,
}

/// A ledger document.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Entry {
    spent_usd: f64,
    calls: u64,
    /// Holds of calls in flight, by hold id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    holds: BTreeMap<String, Hold>,
    /// The last costs of each agent's calls, oldest first.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    recent: BTreeMap<String, Vec<f64>>,
}

impl Entry {
    fn parse(value: serde_json::Value) -> Self {
        serde_json::from_value(value).unwrap_or_default()
    }

    /// Drops lapsed holds; returns whether any was dropped.
    fn drop_expired(&mut self, now: i64) -> bool {
        let before = self.holds.len();
        self.holds.retain(|_, h| h.until > now);
        self.holds.len() != before
    }

    fn held(&self, now: i64) -> f64 {
        self.holds
            .values()
            .filter(|h| h.until > now)
            .map(|h| h.usd)
            .fold(0.0, |a, b| a + b)
    }

    /// The most one of `agent`'s recent calls cost.
    fn recent_max(&self, agent: &str) -> Option<f64> {
        self.recent
            .get(agent)
            .and_then(|c| c.iter().copied().reduce(f64::max))
    }

    /// The least of the agents' estimates (for a workspace's status).
    fn least_recent_max(&self) -> Option<f64> {
        self.recent
            .keys()
            .filter_map(|a| self.recent_max(a))
            .reduce(f64::min)
    }

    fn record(&mut self, agent: &str, cost_usd: f64) {
        self.spent_usd += cost_usd;
        self.calls += 1;
        let costs = self.recent.entry(agent.to_owned()).or_default();
        costs.push(cost_usd);
        if costs.len() > RECENT_CALLS {
            let extra = costs.len() - RECENT_CALLS;
            costs.drain(..extra);
        }
    }
}

/// What a compare-and-swap step decided.
enum Step<T> {
    /// Write this document and return `T`.
    Write(Entry, T),
    /// Write nothing and return `T`.
    Keep(T),
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The spend ledger: budgets per agent and workspace per period, kept in a [`Store`] and
/// enforced before every model call with expiring holds (see the [module docs](self)). Cheap
/// to clone.
///
/// ```
/// use std::sync::Arc;
/// use agentkit_core::config::{BudgetPeriod, PeriodBudget};
/// use agentkit_runtime::{BudgetRules, MemoryStore, SpendLedger};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let rules = BudgetRules::new().with_agent("writer", PeriodBudget::new(1.0, BudgetPeriod::Day));
/// let ledger = SpendLedger::new(Arc::new(MemoryStore::new()), rules);
/// ledger.charge_to("acme/prod", "writer", 0.5).await?;
/// let status = ledger.status("acme/prod").await?;
/// assert_eq!(status[0].spent_usd, 0.5);
/// // The next call is expected to cost as much as the last: it still fits.
/// assert_eq!(status[0].next_call_usd, 0.5);
/// assert!(ledger.exhausted("acme/prod", Some("writer")).await?.is_none());
/// ledger.charge_to("acme/prod", "writer", 0.25).await?;
/// // $0.75 spent: another $0.50 call would pass the budget.
/// assert!(ledger.exhausted("acme/prod", Some("writer")).await?.is_some());
/// // Another workspace has its own ledger for the agent.
/// assert!(ledger.exhausted("acme/dev", Some("writer")).await?.is_none());
/// # Ok::<_, agentkit_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SpendLedger {
    store: Arc<dyn Store>,
    rules: Arc<BudgetRules>,
    clock: Clock,
}

impl std::fmt::Debug for SpendLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendLedger")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl SpendLedger {
    /// A ledger over `store` enforcing `rules`, on the system clock.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, rules: BudgetRules) -> Self {
        Self {
            store,
            rules: Arc::new(rules),
            clock: Arc::new(now_ms),
        }
    }

    /// Read the time (ms since the Unix epoch) from `clock` instead (tests of period
    /// rollover and hold expiry).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The rules.
    #[must_use]
    pub fn rules(&self) -> &BudgetRules {
        &self.rules
    }

    /// The time on the ledger's clock (ms since the Unix epoch).
    #[must_use]
    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The budgets that apply to `agent` (or to any run, without one) in `workspace`.
    fn budgets(&self, workspace: &str, agent: Option<&str>) -> Vec<(BudgetScope, PeriodBudget)> {
        let mut out = Vec::with_capacity(2);
        if let Some(a) = agent
            && let Some(b) = self.rules.agents.get(a)
        {
            out.push((BudgetScope::Agent(a.to_owned()), *b));
        }
        if let Some(b) = self.rules.workspaces.for_workspace(workspace) {
            out.push((BudgetScope::Workspace, b));
        }
        out
    }

    fn doc_id(workspace: &str, scope: &BudgetScope, period: BudgetPeriod, start: i64) -> String {
        format!("{workspace}/{}/{period}/{start}", scope.key())
    }

    /// The estimate of `agent`'s next call from `entry`.
    fn estimate(&self, entry: &Entry, agent: Option<&str>) -> f64 {
        let recent = match agent {
            Some(a) => entry.recent_max(a),
            None => entry.least_recent_max(),
        };
        recent.unwrap_or(0.0).max(self.rules.floor_estimate())
    }

    /// The document of a period, or a new one carrying the previous period's recent costs
    /// (so estimates survive the rollover).
    async fn load(
        &self,
        workspace: &str,
        scope: &BudgetScope,
        budget: PeriodBudget,
        start: i64,
    ) -> Result<(Entry, Expect)> {
        let id = Self::doc_id(workspace, scope, budget.period, start);
        if let Some(doc) = self.store.doc_get(SPEND_COLLECTION, &id).await? {
            return Ok((Entry::parse(doc.value), Expect::Revision(doc.revision)));
        }
        let (prev_start, _) = budget.period.window(start - 1);
        let prev = Self::doc_id(workspace, scope, budget.period, prev_start);
        let recent = match self.store.doc_get(SPEND_COLLECTION, &prev).await? {
            Some(doc) => Entry::parse(doc.value).recent,
            None => BTreeMap::new(),
        };
        Ok((
            Entry {
                recent,
                ..Entry::default()
            },
            Expect::Absent,
        ))
    }

    async fn read(
        &self,
        workspace: &str,
        scope: BudgetScope,
        budget: PeriodBudget,
        now: i64,
        agent: Option<&str>,
    ) -> Result<BudgetStatus> {
        let (start, end) = budget.period.window(now);
        let (entry, _) = self.load(workspace, &scope, budget, start).await?;
        let agent = agent.or(match &scope {
            BudgetScope::Agent(a) => Some(a.as_str()),
            BudgetScope::Workspace => None,
        });
        Ok(BudgetStatus {
            workspace: workspace.to_owned(),
            max_spend_usd: budget.max_spend_usd,
            spent_usd: entry.spent_usd,
            remaining_usd: (budget.max_spend_usd - entry.spent_usd).max(0.0),
            reserved_usd: entry.held(now),
            next_call_usd: self.estimate(&entry, agent),
            calls: entry.calls,
            period: budget.period.to_string(),
            period_start: start,
            period_end: end,
            scope,
        })
    }

    /// Every budget of `workspace` in the current period: the workspace's, then each agent's.
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn status(&self, workspace: &str) -> Result<Vec<BudgetStatus>> {
        let now = self.now_ms();
        let mut out = Vec::new();
        if let Some(b) = self.rules.workspaces.for_workspace(workspace) {
            out.push(
                self.read(workspace, BudgetScope::Workspace, b, now, None)
                    .await?,
            );
        }
        for (agent, b) in &self.rules.agents {
            out.push(
                self.read(workspace, BudgetScope::Agent(agent.clone()), *b, now, None)
                    .await?,
            );
        }
        Ok(out)
    }

    /// The first budget among those that apply to `agent` (or the workspace's alone) in
    /// `workspace` that has too little left for `agent`'s next call, if any: a run started
    /// now would be refused its first model call (holds of calls in flight aside).
    ///
    /// # Errors
    ///
    /// The store's.
    pub async fn exhausted(
        &self,
        workspace: &str,
        agent: Option<&str>,
    ) -> Result<Option<BudgetStatus>> {
        let now = self.now_ms();
        for (scope, budget) in self.budgets(workspace, agent) {
            let status = self.read(workspace, scope, budget, now, agent).await?;
            if status.is_exhausted() {
                return Ok(Some(status));
            }
        }
        Ok(None)
    }

    /// A clear explanation of why `status` refuses model calls: which budget, the spend and
    /// holds, when the period ends and what to do.
    #[must_use]
    pub fn explain(&self, status: &BudgetStatus) -> String {
        let what = match &status.scope {
            BudgetScope::Workspace => format!("workspace `{}`", status.workspace),
            BudgetScope::Agent(a) => {
                format!("agent `{a}` in workspace `{}`", status.workspace)
            }
        };
        let end = chrono::DateTime::from_timestamp_millis(status.period_end).map_or_else(
            || status.period_end.to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let key = status.scope.config_key(&status.workspace, &self.rules);
        if status.spent_usd >= status.max_spend_usd {
            return format!(
                "the budget of {what} is spent: ${:.4} of ${:.4} this {} (period ends {end}); \
                 runs may call models again then, or raise `{key}.max_spend_usd`",
                status.spent_usd, status.max_spend_usd, status.period,
            );
        }
        let held = if status.reserved_usd > 0.0 {
            format!(
                " and ${:.4} set aside for model calls in flight",
                status.reserved_usd
            )
        } else {
            String::new()
        };
        let when = if status.reserved_usd > 0.0 {
            "when calls in flight finish or the period ends"
        } else {
            "when the period ends"
        };
        format!(
            "the budget of {what} has too little left for the next model call: ${:.4} spent{held} \
             of ${:.4} this {}, and the call is expected to cost ${:.4} (the most one of the \
             agent's recent calls cost; period ends {end}); runs may call models again {when}, \
             or raise `{key}.max_spend_usd`",
            status.spent_usd, status.max_spend_usd, status.period, status.next_call_usd,
        )
    }

    /// Apply `step` to the current document of `scope` with compare-and-swap, retrying with
    /// a jittered backoff while other writers get there first.
    async fn cas<T>(
        &self,
        workspace: &str,
        scope: &BudgetScope,
        budget: PeriodBudget,
        now: i64,
        what: &str,
        mut step: impl FnMut(Entry) -> Step<T>,
    ) -> Result<T> {
        let (start, _) = budget.period.window(now);
        let id = Self::doc_id(workspace, scope, budget.period, start);
        for attempt in 0..CAS_ATTEMPTS {
            let (entry, expect) = self.load(workspace, scope, budget, start).await?;
            match step(entry) {
                Step::Keep(out) => return Ok(out),
                Step::Write(entry, out) => {
                    let value = serde_json::to_value(&entry)
                        .map_err(|e| Error::json("writing a spend ledger entry", e))?;
                    if self
                        .store
                        .doc_put(SPEND_COLLECTION, &id, value, expect)
                        .await?
                        .is_some()
                    {
                        return Ok(out);
                    }
                }
            }
            // Someone else wrote first: back off a little, more each time, with jitter so
            // racing writers spread out.
            let cap = 200u64 << attempt.min(6);
            let jitter =
                u64::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(cap)).unwrap_or(0);
            tokio::time::sleep(Duration::from_micros(jitter)).await;
        }
        Err(Error::Unavailable {
            what: "the spend ledger".to_owned(),
            message: format!(
                "the ledger entry `{id}` changed {CAS_ATTEMPTS} times while {what}; \
                 try again"
            ),
        })
    }

    /// Add `cost_usd` to the current period of every budget that applies to `agent` in
    /// `workspace` (compare-and-swap, safe across processes), without a hold.
    ///
    /// # Errors
    ///
    /// The store's, or [`Error::Unavailable`] when the document kept changing under us.
    pub async fn charge_to(&self, workspace: &str, agent: &str, cost_usd: f64) -> Result<()> {
        self.settle(workspace, agent, None, Some(cost_usd)).await
    }

    /// Set `agent`'s next call's estimate aside in every budget that applies to it in
    /// `workspace`, or refuse the call (and set nothing aside) when one has too little left.
    ///
    /// Returns the hold (none when no budget applies).
    ///
    /// # Errors
    ///
    /// [`Error::BudgetExceeded`] (for run `run_id`) when a budget has too little left; the
    /// store's; [`Error::Unavailable`] when a document kept changing under us.
    pub async fn hold(&self, workspace: &str, agent: &str, run_id: &str) -> Result<SpendHold> {
        let budgets = self.budgets(workspace, Some(agent));
        if budgets.is_empty() {
            return Ok(SpendHold::none());
        }
        let now = self.now_ms();
        let until = now.saturating_add(self.rules.hold_for_ms());
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut estimate: Option<f64> = None;
        let mut placed: Vec<(BudgetScope, PeriodBudget)> = Vec::new();
        for (scope, budget) in budgets {
            let (start, end) = budget.period.window(now);
            let refused = self
                .cas(
                    workspace,
                    &scope,
                    budget,
                    now,
                    "a model call's estimate was being set aside",
                    |mut entry| {
                        entry.drop_expired(now);
                        // Re-estimated on every attempt: a call that returned meanwhile may
                        // have raised it.
                        let est = self
                            .estimate(&entry, Some(agent))
                            .max(estimate.unwrap_or(0.0));
                        estimate = Some(est);
                        let held = entry.held(now);
                        let over = entry.spent_usd >= budget.max_spend_usd
                            || entry.spent_usd + held + est > budget.max_spend_usd + EPSILON_USD;
                        if over {
                            return Step::Keep(Some(BudgetStatus {
                                workspace: workspace.to_owned(),
                                scope: scope.clone(),
                                max_spend_usd: budget.max_spend_usd,
                                spent_usd: entry.spent_usd,
                                remaining_usd: (budget.max_spend_usd - entry.spent_usd).max(0.0),
                                reserved_usd: held,
                                next_call_usd: est,
                                calls: entry.calls,
                                period: budget.period.to_string(),
                                period_start: start,
                                period_end: end,
                            }));
                        }
                        entry.holds.insert(id.clone(), Hold { usd: est, until });
                        Step::Write(entry, None)
                    },
                )
                .await;
            match refused {
                Ok(None) => placed.push((scope, budget)),
                Ok(Some(status)) => {
                    self.unhold(workspace, &id, &placed, now).await;
                    return Err(Error::BudgetExceeded {
                        run_id: run_id.to_owned(),
                        message: self.explain(&status),
                    });
                }
                Err(e) => {
                    self.unhold(workspace, &id, &placed, now).await;
                    return Err(e);
                }
            }
        }
        Ok(SpendHold::new(id))
    }

    /// Take hold `id` back from the budgets it was placed in (best effort: it expires anyway).
    async fn unhold(
        &self,
        workspace: &str,
        id: &str,
        placed: &[(BudgetScope, PeriodBudget)],
        now: i64,
    ) {
        for (scope, budget) in placed {
            let dropped = self
                .cas(
                    workspace,
                    scope,
                    *budget,
                    now,
                    "a hold was being given back",
                    |mut entry| {
                        let expired = entry.drop_expired(now);
                        if entry.holds.remove(id).is_some() || expired {
                            Step::Write(entry, ())
                        } else {
                            Step::Keep(())
                        }
                    },
                )
                .await;
            if let Err(e) = dropped {
                tracing::warn!(workspace, hold = id, error = %e, "could not give back a budget hold; it expires by itself");
            }
        }
    }

    /// Replace hold `hold` (if any) by the real cost `cost` (if any) in every budget that
    /// applies to `agent` in `workspace`.
    async fn settle(
        &self,
        workspace: &str,
        agent: &str,
        hold: Option<&str>,
        cost: Option<f64>,
    ) -> Result<()> {
        let cost = cost.filter(|c| c.is_finite() && *c >= 0.0);
        let now = self.now_ms();
        for (scope, budget) in self.budgets(workspace, Some(agent)) {
            self.cas(
                workspace,
                &scope,
                budget,
                now,
                "a model call's cost was being recorded",
                |mut entry| {
                    let mut changed = entry.drop_expired(now);
                    if let Some(h) = hold {
                        changed |= entry.holds.remove(h).is_some();
                    }
                    if let Some(c) = cost {
                        entry.record(agent, c);
                        changed = true;
                    }
                    if changed {
                        Step::Write(entry, ())
                    } else {
                        Step::Keep(())
                    }
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// The workspace a run's model calls are charged to: its principal's `org/workspace`.
fn workspace_of(ctx: &RunContext) -> String {
    match ctx.principal() {
        Some(p) => match (&p.tenant, &p.workspace) {
            (Some(org), Some(ws)) => format!("{org}/{ws}"),
            _ => DEFAULT_WORKSPACE.to_owned(),
        },
        None => DEFAULT_WORKSPACE.to_owned(),
    }
}

#[async_trait]
impl SpendGuard for SpendLedger {
    async fn admit(&self, agent: &str, ctx: &RunContext) -> Result<SpendHold> {
        if self.rules.is_empty() {
            return Ok(SpendHold::none());
        }
        self.hold(&workspace_of(ctx), agent, ctx.run_id()).await
    }

    async fn charge(
        &self,
        hold: SpendHold,
        agent: &str,
        ctx: &RunContext,
        cost_usd: f64,
    ) -> Result<()> {
        if self.rules.is_empty() {
            return Ok(());
        }
        self.settle(&workspace_of(ctx), agent, hold.id(), Some(cost_usd))
            .await
    }

    async fn release(&self, hold: SpendHold, agent: &str, ctx: &RunContext) -> Result<()> {
        let Some(id) = hold.id() else {
            return Ok(());
        };
        self.settle(&workspace_of(ctx), agent, Some(id), None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use agentkit_core::Principal;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[tokio::test]
    async fn calls_are_refused_once_spent_and_allowed_in_the_next_period() {
        let now = Arc::new(AtomicI64::new(3_600_000 * 10));
        let clock = Arc::clone(&now);
        let rules = BudgetRules::new().with_workspaces(
            BudgetSettings::default().with_workspace(PeriodBudget::new(1.0, BudgetPeriod::Hour)),
        );
        let ledger = SpendLedger::new(Arc::new(MemoryStore::new()), rules)
            .with_clock(move || clock.load(Ordering::SeqCst));
        let ctx = RunContext::new()
            .with_run_id("r1")
            .with_principal(Principal::new("acme", "prod"));
        let h = ledger.admit("a", &ctx).await.unwrap();
        ledger.charge(h, "a", &ctx, 0.6).await.unwrap();
        let h = ledger.admit("b", &ctx).await.unwrap();
        ledger.charge(h, "b", &ctx, 0.6).await.unwrap();
        let err = ledger.admit("a", &ctx).await.unwrap_err();
        assert!(err.is_budget_exceeded(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("workspace `acme/prod`"), "{msg}");
        assert!(msg.contains("$1.2000 of $1.0000 this hour"), "{msg}");
        assert!(msg.contains("1970-01-01T11:00:00Z"), "{msg}");
        assert!(msg.contains("budgets.workspace.max_spend_usd"), "{msg}");
        // The next hour starts over.
        now.fetch_add(3_600_000, Ordering::SeqCst);
        ledger.admit("a", &ctx).await.unwrap();
        assert_eq!(ledger.status("acme/prod").await.unwrap()[0].spent_usd, 0.0);
    }

    #[tokio::test]
    async fn concurrent_charges_all_count() {
        let rules = BudgetRules::new().with_agent("a", PeriodBudget::new(100.0, BudgetPeriod::Day));
        let ledger = SpendLedger::new(Arc::new(MemoryStore::new()), rules);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let l = ledger.clone();
                tokio::spawn(async move { l.charge_to("o/w", "a", 0.5).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let s = &ledger.status("o/w").await.unwrap()[0];
        assert_eq!((s.spent_usd, s.calls), (10.0, 20));
    }

    #[tokio::test]
    async fn a_hold_blocks_a_call_that_would_pass_the_budget_until_it_is_settled() {
        let rules = BudgetRules::new()
            .with_agent("a", PeriodBudget::new(1.0, BudgetPeriod::Day))
            .with_call_estimate(0.4);
        let ledger = SpendLedger::new(Arc::new(MemoryStore::new()), rules);
        let ctx = RunContext::new().with_run_id("r");
        let h1 = ledger.admit("a", &ctx).await.unwrap();
        let h2 = ledger.admit("a", &ctx).await.unwrap();
        assert!(h1.id().is_some() && h1 != h2);
        // $0.80 held: a third $0.40 call would pass $1.
        let err = ledger.admit("a", &ctx).await.unwrap_err();
        assert!(err.is_budget_exceeded(), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("$0.8000 set aside"), "{msg}");
        assert!(msg.contains("expected to cost $0.4000"), "{msg}");
        assert!(msg.contains("when calls in flight finish"), "{msg}");
        let s = &ledger.status("default/default").await.unwrap()[0];
        assert!((s.reserved_usd - 0.8).abs() < 1e-9, "{s:?}");
        // The first call cost less than held; the second failed and gives its hold back.
        ledger.charge(h1, "a", &ctx, 0.1).await.unwrap();
        ledger.release(h2, "a", &ctx).await.unwrap();
        let s = &ledger.status("default/default").await.unwrap()[0];
        assert_eq!((s.reserved_usd, s.spent_usd, s.calls), (0.0, 0.1, 1));
        ledger.admit("a", &ctx).await.unwrap();
    }

    #[tokio::test]
    async fn an_expired_hold_frees_its_budget_and_a_late_charge_still_counts() {
        let now = Arc::new(AtomicI64::new(3_600_000 * 10));
        let clock = Arc::clone(&now);
        let rules = BudgetRules::new()
            .with_agent("a", PeriodBudget::new(1.0, BudgetPeriod::Day))
            .with_call_estimate(0.6)
            .with_hold_for(std::time::Duration::from_secs(60));
        let ledger = SpendLedger::new(Arc::new(MemoryStore::new()), rules)
            .with_clock(move || clock.load(Ordering::SeqCst));
        let ctx = RunContext::new().with_run_id("r");
        // A process takes a hold and dies mid-call: nobody settles it.
        let lost = ledger.admit("a", &ctx).await.unwrap();
        assert!(
            ledger
                .admit("a", &ctx)
                .await
                .unwrap_err()
                .is_budget_exceeded()
        );
        now.fetch_add(59_000, Ordering::SeqCst);
        assert!(
            ledger
                .admit("a", &ctx)
                .await
                .unwrap_err()
                .is_budget_exceeded()
        );
        // A minute on, the hold has lapsed: the budget is free again.
        now.fetch_add(1_000, Ordering::SeqCst);
        let h = ledger.admit("a", &ctx).await.unwrap();
        let s = &ledger.status("default/default").await.unwrap()[0];
        assert!(
            (s.reserved_usd - 0.6).abs() < 1e-9,
            "only the new hold: {s:?}"
        );
        // The lapsed call's cost, should it still arrive, is charged all the same.
        ledger.charge(lost, "a", &ctx, 0.3).await.unwrap();
        ledger.charge(h, "a", &ctx, 0.3).await.unwrap();
        let s = &ledger.status("default/default").await.unwrap()[0];
        assert_eq!((s.calls, s.reserved_usd), (2, 0.0));
        assert!((s.spent_usd - 0.6).abs() < 1e-9);
    }

    #[tokio::test]
    async fn estimates_follow_recent_calls_and_survive_the_period_rollover() {
        let now = Arc::new(AtomicI64::new(3_600_000 * 10));
        let clock = Arc::clone(&now);
        let rules = BudgetRules::new().with_agent("a", PeriodBudget::new(1.0, BudgetPeriod::Hour));
        let ledger = SpendLedger::new(Arc::new(MemoryStore::new()), rules)
            .with_clock(move || clock.load(Ordering::SeqCst));
        for cost in [0.05, 0.2, 0.1] {
            ledger.charge_to("o/w", "a", cost).await.unwrap();
        }
        let s = &ledger.status("o/w").await.unwrap()[0];
        assert_eq!(s.next_call_usd, 0.2, "the most a recent call cost");
        // Eight cheaper calls later the dear one is forgotten.
        for _ in 0..RECENT_CALLS {
            ledger.charge_to("o/w", "a", 0.01).await.unwrap();
        }
        assert_eq!(ledger.status("o/w").await.unwrap()[0].next_call_usd, 0.01);
        now.fetch_add(3_600_000, Ordering::SeqCst);
        let s = &ledger.status("o/w").await.unwrap()[0];
        assert_eq!((s.spent_usd, s.next_call_usd), (0.0, 0.01));
    }
}
