//! Budgets per period across runs: a spend ledger in the [`Store`] and the rules it enforces.
//!
//! [`SpendLedger`] is a [`SpendGuard`]: a runtime built
//! [`with_spend_guard`](crate::RuntimeBuilder::with_spend_guard) asks it before every model
//! call and tells it every call's cost. A call is refused (the run fails with
//! [`Error::BudgetExceeded`], saying which budget, how much was spent, when the period ends and
//! what to do) once the agent's or the workspace's spend this period has reached its budget.
//!
//! # Storage and concurrency
//!
//! One [`DocStore`](crate::DocStore) document per budget and period, in collection `spend`,
//! id `<org>/<workspace>/<scope>/<period>/<period start, ms>` (scope `workspace` or
//! `agent:<name>`), holding `{spent_usd, calls}`. Charges are compare-and-swap increments, so
//! any number of server processes sharing a SQLite file or a PostgreSQL database add up every
//! charge exactly once. A new period is a new document: nothing is reset.
//!
//! # Guarantee
//!
//! The check before a call and the charge after it are separate steps (a call's cost is known
//! only when it returns). A call is admitted only while spend is under the budget, so a
//! budget is exceeded by at most the cost of the calls that were already admitted when it ran
//! out: with `k` runs racing on the last cents, at most one model call each. After that every
//! call of every run is refused until the period ends.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentkit_core::config::{BudgetPeriod, BudgetSettings, PeriodBudget};
use agentkit_core::{Error, Result, RunContext, SpendGuard};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::model::{Expect, now_ms};
use crate::store::Store;

/// The collection of the ledger's documents.
pub const SPEND_COLLECTION: &str = "spend";
/// The workspace of runs started without a principal.
const DEFAULT_WORKSPACE: &str = "default/default";
const CAS_ATTEMPTS: usize = 64;

/// Which budgets apply: per agent (in each workspace) and per workspace.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BudgetRules {
    /// Budgets of agents by name; each workspace has its own ledger for each agent.
    pub agents: BTreeMap<String, PeriodBudget>,
    /// Budgets of workspaces.
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
    /// Left this period (never below 0).
    pub remaining_usd: f64,
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
    /// Whether the budget is spent (no model call is admitted until `period_end`).
    #[must_use]
    pub fn is_exhausted(&self) -> bool {
        self.spent_usd >= self.max_spend_usd
    }

    /// Milliseconds from `now_ms` until the period ends.
    #[must_use]
    pub fn resets_in_ms(&self, now_ms: i64) -> i64 {
        (self.period_end - now_ms).max(0)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    spent_usd: f64,
    calls: u64,
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The spend ledger: budgets per agent and workspace per period, kept in a [`Store`] and
/// enforced before every model call (see the [module docs](self)). Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use agentkit_core::config::{BudgetPeriod, PeriodBudget};
/// use agentkit_runtime::{BudgetRules, MemoryStore, SpendLedger};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let rules = BudgetRules::new().with_agent("writer", PeriodBudget::new(1.0, BudgetPeriod::Day));
/// let ledger = SpendLedger::new(Arc::new(MemoryStore::new()), rules);
/// ledger.charge_to("acme/prod", "writer", 0.75).await?;
/// let status = ledger.status("acme/prod").await?;
/// assert_eq!(status[0].spent_usd, 0.75);
/// assert!(ledger.exhausted("acme/prod", Some("writer")).await?.is_none());
/// ledger.charge_to("acme/prod", "writer", 0.25).await?;
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
    /// rollover).
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

    async fn read(
        &self,
        workspace: &str,
        scope: BudgetScope,
        budget: PeriodBudget,
        now: i64,
    ) -> Result<BudgetStatus> {
        let (start, end) = budget.period.window(now);
        let id = Self::doc_id(workspace, &scope, budget.period, start);
        let entry: Entry = match self.store.doc_get(SPEND_COLLECTION, &id).await? {
            Some(doc) => serde_json::from_value(doc.value).unwrap_or_default(),
            None => Entry::default(),
        };
        Ok(BudgetStatus {
            workspace: workspace.to_owned(),
            scope,
            max_spend_usd: budget.max_spend_usd,
            spent_usd: entry.spent_usd,
            remaining_usd: (budget.max_spend_usd - entry.spent_usd).max(0.0),
            calls: entry.calls,
            period: budget.period.to_string(),
            period_start: start,
            period_end: end,
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
            out.push(self.read(workspace, BudgetScope::Workspace, b, now).await?);
        }
        for (agent, b) in &self.rules.agents {
            out.push(
                self.read(workspace, BudgetScope::Agent(agent.clone()), *b, now)
                    .await?,
            );
        }
        Ok(out)
    }

    /// The first spent budget among those that apply to `agent` (or the workspace's alone)
    /// in `workspace`, if any: a run started now would be refused its first model call.
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
            let status = self.read(workspace, scope, budget, now).await?;
            if status.is_exhausted() {
                return Ok(Some(status));
            }
        }
        Ok(None)
    }

    /// A clear explanation of why `status` refuses model calls: which budget, the spend, when
    /// the period ends and what to do.
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
        format!(
            "the budget of {what} is spent: ${:.4} of ${:.4} this {} (period ends {end}); \
             runs may call models again then, or raise `{}.max_spend_usd`",
            status.spent_usd,
            status.max_spend_usd,
            status.period,
            status.scope.config_key(&status.workspace, &self.rules),
        )
    }

    /// Add `cost_usd` to the current period of every budget that applies to `agent` in
    /// `workspace` (compare-and-swap, safe across processes).
    ///
    /// # Errors
    ///
    /// The store's, or [`Error::Unavailable`] when the document kept changing under us.
    pub async fn charge_to(&self, workspace: &str, agent: &str, cost_usd: f64) -> Result<()> {
        if !cost_usd.is_finite() || cost_usd < 0.0 {
            return Ok(());
        }
        let now = self.now_ms();
        for (scope, budget) in self.budgets(workspace, Some(agent)) {
            let (start, _) = budget.period.window(now);
            let id = Self::doc_id(workspace, &scope, budget.period, start);
            self.add(&id, cost_usd).await?;
        }
        Ok(())
    }

    async fn add(&self, id: &str, cost_usd: f64) -> Result<()> {
        for _ in 0..CAS_ATTEMPTS {
            let (entry, expect) = match self.store.doc_get(SPEND_COLLECTION, id).await? {
                Some(doc) => (
                    serde_json::from_value::<Entry>(doc.value).unwrap_or_default(),
                    Expect::Revision(doc.revision),
                ),
                None => (Entry::default(), Expect::Absent),
            };
            let value = json!({
                "spent_usd": entry.spent_usd + cost_usd,
                "calls": entry.calls + 1,
            });
            if self
                .store
                .doc_put(SPEND_COLLECTION, id, value, expect)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(Error::Unavailable {
            what: "the spend ledger".to_owned(),
            message: format!(
                "the ledger entry `{id}` changed {CAS_ATTEMPTS} times while a charge was being \
                 added; the charge of ${cost_usd:.6} is not recorded"
            ),
        })
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
    async fn admit(&self, agent: &str, ctx: &RunContext) -> Result<()> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let workspace = workspace_of(ctx);
        match self.exhausted(&workspace, Some(agent)).await? {
            None => Ok(()),
            Some(status) => Err(Error::BudgetExceeded {
                run_id: ctx.run_id().to_owned(),
                message: self.explain(&status),
            }),
        }
    }

    async fn charge(&self, agent: &str, ctx: &RunContext, cost_usd: f64) -> Result<()> {
        if self.rules.is_empty() {
            return Ok(());
        }
        self.charge_to(&workspace_of(ctx), agent, cost_usd).await
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
        ledger.admit("a", &ctx).await.unwrap();
        ledger.charge("a", &ctx, 0.6).await.unwrap();
        ledger.admit("b", &ctx).await.unwrap();
        ledger.charge("b", &ctx, 0.6).await.unwrap();
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
}
