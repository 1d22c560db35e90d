//! [`RunContext`]: everything a run carries, passed explicitly and cheap to clone.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cost::PriceTable;
use crate::error::{Error, Result};
use crate::event::{EventSink, NoopSink, RunEvent};
use crate::journal::Journal;
use crate::usage::Usage;

/// The conversation thread of a context that names none (one default thread for a single
/// user).
pub const DEFAULT_THREAD: &str = "default";

/// Who is acting: used by governance to scope tools, budgets and audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Principal {
    /// Tenant (organisation).
    pub tenant: Option<String>,
    /// Workspace inside the tenant.
    pub workspace: Option<String>,
    /// API key id (never the secret).
    pub key_id: Option<String>,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The policy the API key carries (a name in `policies:`): applied to every tool call
    /// this principal's runs and gateway calls make, on top of the agent's or gateway's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Principal {
    /// A principal in a tenant and workspace.
    pub fn new(tenant: impl Into<String>, workspace: impl Into<String>) -> Self {
        Self {
            tenant: Some(tenant.into()),
            workspace: Some(workspace.into()),
            key_id: None,
            roles: Vec::new(),
            policy: None,
        }
    }

    /// Set the policy its API key carries.
    #[must_use]
    pub fn with_policy(mut self, policy: impl Into<String>) -> Self {
        self.policy = Some(policy.into());
        self
    }

    /// Set the API key id.
    #[must_use]
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Add a role.
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }
}

/// Limits on what a run may spend. Checked before every model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Budget {
    /// Maximum total tokens (input, output and cache).
    pub max_tokens: Option<u64>,
    /// Maximum estimated cost in US dollars.
    pub max_cost_usd: Option<f64>,
}

impl Budget {
    /// No limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Limit total tokens.
    #[must_use]
    pub fn with_max_tokens(mut self, n: u64) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Limit estimated cost.
    #[must_use]
    pub fn with_max_cost_usd(mut self, usd: f64) -> Self {
        self.max_cost_usd = Some(usd);
        self
    }
}

/// A question for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HumanInputRequest {
    /// The question.
    pub prompt: String,
    /// More context, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of the expected answer (MCP elicitation), if structured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// How long to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl HumanInputRequest {
    /// A free-text question.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            description: None,
            schema: None,
            timeout: None,
        }
    }

    /// Add a description.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }

    /// Ask for a structured answer.
    #[must_use]
    pub fn with_schema(mut self, schema: Value) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Set a timeout.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

/// A human's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HumanInputResponse {
    /// The human answered.
    Answer {
        /// Free text.
        text: String,
        /// Structured answer, when a schema was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    },
    /// The human declined to answer.
    Declined,
    /// The request was dismissed without an answer.
    Cancelled,
}

impl HumanInputResponse {
    /// A text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Answer {
            text: text.into(),
            data: None,
        }
    }
}

/// Answers [`HumanInputRequest`]s: a console prompt, a UI, an MCP elicitation, a durable signal.
#[async_trait]
pub trait HumanInputHandler: Send + Sync {
    /// Ask and wait for the answer.
    async fn ask(&self, request: HumanInputRequest, ctx: &RunContext)
    -> Result<HumanInputResponse>;
}

/// A tool call waiting for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ApprovalRequest {
    /// The tool.
    pub tool: String,
    /// Its arguments.
    pub arguments: Value,
    /// Why approval is needed.
    pub reason: String,
    /// The model's id of the tool call, when the request is about one: a durable run's
    /// approval handler takes a decision addressed to this call (signal `approval/<call_id>`)
    /// before a run-wide one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl ApprovalRequest {
    /// An approval request.
    pub fn new(tool: impl Into<String>, arguments: Value, reason: impl Into<String>) -> Self {
        Self {
            tool: tool.into(),
            arguments,
            reason: reason.into(),
            call_id: None,
        }
    }

    /// The model's id of the tool call this request is about.
    #[must_use]
    pub fn with_call_id(mut self, call_id: impl Into<String>) -> Self {
        self.call_id = Some(call_id.into());
        self
    }
}

/// The decision on an [`ApprovalRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApprovalDecision {
    /// Go ahead.
    Approved,
    /// Do not run the tool; the reason is shown to the model.
    Denied {
        /// Why.
        reason: String,
    },
}

/// Decides on tool calls that need approval (governance, human in the loop).
#[async_trait]
pub trait ApprovalHandler: Send + Sync {
    /// Decide, waiting as long as needed.
    async fn approve(&self, request: ApprovalRequest, ctx: &RunContext)
    -> Result<ApprovalDecision>;
}

/// What a [`SpendGuard`] granted one model call: the hold it put on the budget for the call's
/// estimated cost, handed back to [`SpendGuard::charge`] (the real cost replaces it) or
/// [`SpendGuard::release`] (the call failed before it had a cost).
///
/// ```
/// use agentkit_core::SpendHold;
///
/// assert_eq!(SpendHold::none().id(), None);
/// assert_eq!(SpendHold::new("h1").id(), Some("h1"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpendHold {
    id: Option<String>,
}

impl SpendHold {
    /// No hold: the guard admitted the call without setting anything aside.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// The hold the guard knows as `id`.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: Some(id.into()),
        }
    }

    /// The guard's id of the hold, if it set one.
    #[must_use]
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// Spending across runs: asked before every model call a run makes and told its cost after
/// (budgets per agent and workspace per period, kept in a shared ledger).
///
/// [`admit`](Self::admit) may set the call's estimated cost aside (a [`SpendHold`]), so runs
/// racing on the last of a budget cannot all be admitted; the hold comes back to
/// [`charge`](Self::charge) with the real cost, or to [`release`](Self::release) when the
/// call failed.
///
/// All three are called only for calls that reach the provider: a model call answered from
/// the run's journal (a resumed or replayed run) was charged when it was made and is not
/// asked about or charged again.
#[async_trait]
pub trait SpendGuard: Send + Sync {
    /// May `agent` make a model call in this run? An `Err` (usually
    /// [`Error::BudgetExceeded`]) stops the run before the call is made.
    async fn admit(&self, agent: &str, ctx: &RunContext) -> Result<SpendHold>;

    /// `agent`'s model call, admitted with `hold`, cost `cost_usd`: record it in place of the
    /// hold.
    async fn charge(
        &self,
        hold: SpendHold,
        agent: &str,
        ctx: &RunContext,
        cost_usd: f64,
    ) -> Result<()>;

    /// `agent`'s model call, admitted with `hold`, failed without a cost (the provider
    /// answered an error, the run was cancelled or timed out): give the hold back. The
    /// default does nothing (for guards that hold nothing).
    async fn release(&self, hold: SpendHold, agent: &str, ctx: &RunContext) -> Result<()> {
        let _ = (hold, agent, ctx);
        Ok(())
    }
}

/// Tokens and dollars spent by a run so far (shared by every clone of its context).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunTotals {
    /// Tokens used.
    pub usage: Usage,
    /// Estimated cost in US dollars.
    pub cost_usd: f64,
    /// Model calls made.
    pub llm_calls: u64,
    /// Tool calls made.
    pub tool_calls: u64,
}

/// One tool call of a run, as the run's tool history holds it (what governance's chain rules
/// look at). Built by the agent loop from every call it makes or replays from the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolCallRecord {
    /// The tool name.
    pub tool: String,
    /// Whether the call failed (a tool error, a refused or denied call).
    pub is_error: bool,
}

impl ToolCallRecord {
    /// A record.
    pub fn new(tool: impl Into<String>, is_error: bool) -> Self {
        Self {
            tool: tool.into(),
            is_error,
        }
    }
}

/// A tool history that outlives one context: every context given it
/// ([`RunContext::with_shared_tool_history`]) sees the calls recorded in it, and what they
/// record lands in it. A server that is not a run (an MCP gateway) keeps one per caller, so
/// chain rules see the caller's earlier calls.
#[derive(Debug, Clone, Default)]
pub struct SharedToolHistory(Arc<Mutex<Vec<ToolCallRecord>>>);

impl SharedToolHistory {
    /// An empty history.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a finished call.
    pub fn push(&self, record: ToolCallRecord) {
        crate::lock(&self.0).push(record);
    }

    /// How many calls it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        crate::lock(&self.0).len()
    }

    /// Whether it holds no call.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop the `n` oldest calls (all of them when it holds fewer).
    pub fn forget_oldest(&self, n: usize) {
        let mut h = crate::lock(&self.0);
        let n = n.min(h.len());
        h.drain(..n);
    }

    /// The calls, oldest first.
    #[must_use]
    pub fn to_vec(&self) -> Vec<ToolCallRecord> {
        crate::lock(&self.0).clone()
    }

    /// Put `record` at `index` (0 is the oldest; at most [`len`](Self::len), else at the
    /// end): a call learnt of late that happened before the last ones it holds.
    pub fn insert(&self, index: usize, record: ToolCallRecord) {
        let mut h = crate::lock(&self.0);
        let index = index.min(h.len());
        h.insert(index, record);
    }

    /// Put `earlier` (oldest first), calls made before every call it holds, in front of
    /// them: a history restored after the calls since were recorded.
    pub fn prepend(&self, earlier: impl IntoIterator<Item = ToolCallRecord>) {
        let mut h = crate::lock(&self.0);
        let later = std::mem::take(&mut *h);
        h.extend(earlier);
        h.extend(later);
    }
}

struct Inner {
    run_id: String,
    cancel: CancellationToken,
    deadline: Option<Instant>,
    events: Arc<dyn EventSink>,
    journal: Option<Arc<dyn Journal>>,
    human_input: Option<Arc<dyn HumanInputHandler>>,
    approvals: Option<Arc<dyn ApprovalHandler>>,
    principal: Option<Principal>,
    budget: Option<Budget>,
    spend_guard: Option<Arc<dyn SpendGuard>>,
    prices: Arc<PriceTable>,
    /// Totals of the run (first) and of each nested scope (last is the innermost).
    totals: Vec<Arc<Mutex<RunTotals>>>,
    /// The step counter of this context's journal key space.
    steps: Arc<AtomicU64>,
    /// The key space's prefix (empty for the run's root space, else ends with `/`).
    key_space: Arc<str>,
    tool_call_key: Option<String>,
    thread: Option<Arc<str>>,
    /// Whether a streamed generation's model calls should stream now (absent: always).
    stream_demand: Option<Arc<StreamDemand>>,
    /// The run's tool calls so far, in order (shared by every clone).
    history: SharedToolHistory,
    /// How much of `history` this context sees (the calls of one model turn run side by side
    /// see only the calls made before the turn).
    history_cutoff: Option<usize>,
}

type StreamDemand = dyn Fn() -> bool + Send + Sync;

impl Clone for Inner {
    fn clone(&self) -> Self {
        Self {
            run_id: self.run_id.clone(),
            cancel: self.cancel.clone(),
            deadline: self.deadline,
            events: Arc::clone(&self.events),
            journal: self.journal.clone(),
            human_input: self.human_input.clone(),
            approvals: self.approvals.clone(),
            principal: self.principal.clone(),
            budget: self.budget,
            spend_guard: self.spend_guard.clone(),
            prices: Arc::clone(&self.prices),
            totals: self.totals.clone(),
            steps: Arc::clone(&self.steps),
            key_space: Arc::clone(&self.key_space),
            tool_call_key: self.tool_call_key.clone(),
            thread: self.thread.clone(),
            stream_demand: self.stream_demand.clone(),
            history: self.history.clone(),
            history_cutoff: self.history_cutoff,
        }
    }
}

/// Everything a run carries: id, cancellation, deadline, event sink, journal, human-input and
/// approval handlers, principal, budget, and the run's running totals.
///
/// Passed explicitly to every `generate` and tool call. Cloning is one `Arc` clone; clones share
/// cancellation, totals and the step counter.
///
/// # Journal keys and concurrency
///
/// Journaled steps are keyed by the context's *key space* and a step counter
/// ([`step_key`](Self::step_key)). Work that runs concurrently — parallel branches, the tasks
/// of an orchestrator step, several tool calls of one model turn — must each run in its own
/// key space, made with [`branch`](Self::branch) *before* the concurrent work starts, so that a
/// key depends only on the structure of the run and never on which branch happened to start
/// first. A run re-executed after a crash then finds every journaled step under the same key.
///
/// # Conversation threads
///
/// [`with_thread`](Self::with_thread) names the conversation a run continues; agents keep
/// their history per thread (see [`Memory`](crate::Memory)), so two callers on two threads
/// never see each other's messages.
///
/// ```
/// use agentkit_core::{RunContext, Budget};
/// use std::time::Duration;
///
/// let ctx = RunContext::new()
///     .with_run_id("run-1")
///     .with_timeout(Duration::from_secs(30))
///     .with_budget(Budget::new().with_max_tokens(10_000));
/// assert_eq!(ctx.run_id(), "run-1");
/// ctx.cancel();
/// assert!(ctx.check().unwrap_err().is_cancelled());
/// ```
#[derive(Clone)]
pub struct RunContext {
    inner: Arc<Inner>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.inner.run_id)
            .field("cancelled", &self.inner.cancel.is_cancelled())
            .field("deadline", &self.inner.deadline)
            .field("principal", &self.inner.principal)
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

impl Default for RunContext {
    fn default() -> Self {
        Self::new()
    }
}

/// The error of a journal that neither ran a step nor gave back a recorded value for it.
pub(crate) fn not_run(key: &str) -> Error {
    Error::Journal {
        key: key.to_owned(),
        message: "the journal neither ran the step nor gave back its recorded value (a bug in \
                  the journal implementation)"
            .to_owned(),
    }
}

impl RunContext {
    /// A fresh context with a new run id (UUIDv7), no deadline, no journal, events discarded.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                run_id: uuid::Uuid::now_v7().to_string(),
                cancel: CancellationToken::new(),
                deadline: None,
                events: Arc::new(NoopSink),
                journal: None,
                human_input: None,
                approvals: None,
                principal: None,
                budget: None,
                spend_guard: None,
                prices: PriceTable::shared_default(),
                totals: vec![Arc::default()],
                steps: Arc::default(),
                key_space: Arc::from(""),
                tool_call_key: None,
                thread: None,
                stream_demand: None,
                history: SharedToolHistory::default(),
                history_cutoff: None,
            }),
        }
    }

    fn modify(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Set the run id.
    #[must_use]
    pub fn with_run_id(self, run_id: impl Into<String>) -> Self {
        let run_id = run_id.into();
        self.modify(|i| i.run_id = run_id)
    }

    /// Use this cancellation token.
    #[must_use]
    pub fn with_cancellation(self, token: CancellationToken) -> Self {
        self.modify(|i| i.cancel = token)
    }

    /// Set an absolute deadline.
    #[must_use]
    pub fn with_deadline(self, deadline: Instant) -> Self {
        self.modify(|i| i.deadline = Some(deadline))
    }

    /// Set a deadline `timeout` from now.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.with_deadline(Instant::now() + timeout)
    }

    /// Send events to this sink.
    #[must_use]
    pub fn with_events(self, sink: Arc<dyn EventSink>) -> Self {
        self.modify(|i| i.events = sink)
    }

    /// Journal steps to this journal (durable runs, replay).
    #[must_use]
    pub fn with_journal(self, journal: Arc<dyn Journal>) -> Self {
        self.modify(|i| i.journal = Some(journal))
    }

    /// Answer human-input requests with this handler.
    #[must_use]
    pub fn with_human_input(self, handler: Arc<dyn HumanInputHandler>) -> Self {
        self.modify(|i| i.human_input = Some(handler))
    }

    /// Decide tool approvals with this handler.
    #[must_use]
    pub fn with_approvals(self, handler: Arc<dyn ApprovalHandler>) -> Self {
        self.modify(|i| i.approvals = Some(handler))
    }

    /// Act as this principal.
    #[must_use]
    pub fn with_principal(self, principal: Principal) -> Self {
        self.modify(|i| i.principal = Some(principal))
    }

    /// Limit spending.
    #[must_use]
    pub fn with_budget(self, budget: Budget) -> Self {
        self.modify(|i| i.budget = Some(budget))
    }

    /// Ask `guard` before every model call and tell it each call's cost (budgets across
    /// runs; see [`SpendGuard`]).
    #[must_use]
    pub fn with_spend_guard(self, guard: Arc<dyn SpendGuard>) -> Self {
        self.modify(|i| i.spend_guard = Some(guard))
    }

    /// Price usage with this table.
    #[must_use]
    pub fn with_prices(self, prices: Arc<PriceTable>) -> Self {
        self.modify(|i| i.prices = prices)
    }

    /// A context for a sub-task: same run, journal, sinks and totals, but a child cancellation
    /// token (cancelling the child does not cancel the parent; cancelling the parent cancels the
    /// child).
    #[must_use]
    pub fn child(&self) -> Self {
        let token = self.inner.cancel.child_token();
        self.clone().with_cancellation(token)
    }

    /// Mark this context as the one of a single tool call, identified by `key` (the tool
    /// loop uses its journal key: agent, step and tool-call id). Tool sources use it to build
    /// idempotency keys, e.g. MCP's `_meta`.
    #[must_use]
    pub fn with_tool_call_key(self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.modify(|i| i.tool_call_key = Some(key))
    }

    /// The key of the tool call this context was made for, if any (see
    /// [`with_tool_call_key`](Self::with_tool_call_key)).
    #[must_use]
    pub fn tool_call_key(&self) -> Option<&str> {
        self.inner.tool_call_key.as_deref()
    }

    /// Stream the model calls of a streamed generation
    /// ([`generate_stream`](crate::AugmentedLlm::generate_stream)) only while `demand` returns
    /// true; it is asked before each model call. A call made while nobody wants it streamed
    /// is a plain `complete`, and its text reaches the stream at once as one delta. A host
    /// that streams every run but forwards deltas only to live listeners (the server's SSE)
    /// uses it so runs nobody watches make the same provider calls as `generate`.
    #[must_use]
    pub fn with_stream_demand(self, demand: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        let demand: Arc<StreamDemand> = Arc::new(demand);
        self.modify(|i| i.stream_demand = Some(demand))
    }

    /// Whether a streamed generation's next model call should stream (see
    /// [`with_stream_demand`](Self::with_stream_demand); true without one).
    #[must_use]
    pub fn wants_stream(&self) -> bool {
        self.inner.stream_demand.as_ref().is_none_or(|d| d())
    }

    /// Continue the conversation `thread`: agents load and store their history under this
    /// name (an MCP session, an API thread, a chat). Without a thread, agents use
    /// [`DEFAULT_THREAD`].
    #[must_use]
    pub fn with_thread(self, thread: impl Into<String>) -> Self {
        let thread: Arc<str> = Arc::from(thread.into());
        self.modify(|i| i.thread = Some(thread))
    }

    /// The conversation thread this context names, if any (see
    /// [`with_thread`](Self::with_thread)).
    #[must_use]
    pub fn thread(&self) -> Option<&str> {
        self.inner.thread.as_deref()
    }

    /// The conversation thread agents use: the named one, or [`DEFAULT_THREAD`].
    #[must_use]
    pub fn thread_or_default(&self) -> &str {
        self.inner.thread.as_deref().unwrap_or(DEFAULT_THREAD)
    }

    /// A context for one of several sub-generations that run concurrently (a parallel
    /// branch, an orchestrator task): same run, journal, sinks, totals and cancellation, but
    /// its own journal key space named `label` with its own step counter.
    ///
    /// The branch takes one step of this context's counter, so branching the same label twice
    /// (a pattern called twice in one run) gives two distinct key spaces. Call `branch` in a
    /// deterministic order — before the concurrent work starts, not inside it — and the keys
    /// of every branch depend only on the run's structure, never on timing.
    ///
    /// ```
    /// use agentkit_core::RunContext;
    ///
    /// let run = RunContext::new();
    /// let a = run.branch("research");
    /// let b = run.branch("review");
    /// assert_eq!(a.step_key("agent/llm"), "research#0/agent/llm/0");
    /// assert_eq!(b.step_key("agent/llm"), "review#1/agent/llm/0");
    /// assert_eq!(run.step_key("agent/llm"), "agent/llm/2");
    /// ```
    #[must_use]
    pub fn branch(&self, label: &str) -> Self {
        let n = self.next_step();
        self.in_key_space(format!("{}{label}#{n}/", self.inner.key_space))
    }

    /// A context whose journal keys live under `prefix` (which should end with `/`), with a
    /// fresh step counter. The tool loop gives each tool call the key space of its own
    /// journal key, so an agent called as a tool journals its steps under that call.
    #[must_use]
    pub(crate) fn in_key_space(&self, prefix: String) -> Self {
        let prefix: Arc<str> = Arc::from(prefix);
        self.clone().modify(|i| {
            i.key_space = prefix;
            i.steps = Arc::default();
        })
    }

    /// This context's journal key space: empty for the run's root space, otherwise the path
    /// of [`branch`](Self::branch) labels, ending with `/`.
    #[must_use]
    pub fn key_space(&self) -> &str {
        &self.inner.key_space
    }

    /// The journal key of the next step named `name` in this key space:
    /// `{key_space}{name}/{n}`, taking the next step number.
    #[must_use]
    pub fn step_key(&self, name: &str) -> String {
        format!("{}{name}/{}", self.inner.key_space, self.next_step())
    }

    /// The run id.
    #[must_use]
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The cancellation token.
    #[must_use]
    pub fn cancellation(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Cancel the run (and every child context).
    pub fn cancel(&self) {
        self.inner.cancel.cancel();
    }

    /// Whether the run is cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// The deadline, if any.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// Time left before the deadline (`None` without a deadline).
    #[must_use]
    pub fn remaining(&self) -> Option<Duration> {
        self.inner
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// The journal, if the run is journaled.
    #[must_use]
    pub fn journal(&self) -> Option<&Arc<dyn Journal>> {
        self.inner.journal.as_ref()
    }

    /// The human-input handler, if any.
    #[must_use]
    pub fn human_input(&self) -> Option<&Arc<dyn HumanInputHandler>> {
        self.inner.human_input.as_ref()
    }

    /// The approval handler, if any.
    #[must_use]
    pub fn approvals(&self) -> Option<&Arc<dyn ApprovalHandler>> {
        self.inner.approvals.as_ref()
    }

    /// The principal, if any.
    #[must_use]
    pub fn principal(&self) -> Option<&Principal> {
        self.inner.principal.as_ref()
    }

    /// The budget, if any.
    #[must_use]
    pub fn budget(&self) -> Option<Budget> {
        self.inner.budget
    }

    /// The spend guard, if any.
    #[must_use]
    pub fn spend_guard(&self) -> Option<&Arc<dyn SpendGuard>> {
        self.inner.spend_guard.as_ref()
    }

    /// The price table.
    #[must_use]
    pub fn prices(&self) -> &PriceTable {
        &self.inner.prices
    }

    /// Emit an event to the run's sink.
    pub fn emit(&self, event: RunEvent) {
        self.inner.events.emit(&self.inner.run_id, &event);
    }

    /// Emit the event `make` builds, building it only if the sink wants events (hot paths use
    /// this so a run without a sink pays nothing for its events).
    pub fn emit_with(&self, make: impl FnOnce() -> RunEvent) {
        if self.inner.events.is_enabled() {
            self.inner.events.emit(&self.inner.run_id, &make());
        }
    }

    /// The next step number of this context's key space (0, 1, 2, ...). Deterministic as long
    /// as the calls of one key space are made in the same order, which is what journal keys
    /// rely on; concurrent work takes its own key space with [`branch`](Self::branch).
    #[must_use]
    pub fn next_step(&self) -> u64 {
        self.inner.steps.fetch_add(1, Ordering::SeqCst)
    }

    /// Run `exec` as a journaled step: with a journal, its result is recorded the first time
    /// and returned from the journal on replay; without one, `exec` just runs.
    ///
    /// A step that executes returns `exec`'s result itself (the journal records its JSON,
    /// see [`Journal::step_or_replay`]); only a replayed step is decoded from the recording.
    pub async fn step<T, F>(&self, key: &str, exec: F) -> Result<T>
    where
        T: Serialize + serde::de::DeserializeOwned + Send,
        F: std::future::Future<Output = Result<T>> + Send,
    {
        let Some(journal) = &self.inner.journal else {
            return exec.await;
        };
        let executed: std::sync::Mutex<Option<T>> = std::sync::Mutex::new(None);
        let fut = Box::pin(async {
            let v = exec.await?;
            let value = serde_json::to_value(&v)
                .map_err(|e| Error::json(format!("journal step `{key}`"), e))?;
            *crate::lock(&executed) = Some(v);
            Ok(value)
        });
        let recorded = journal.step_or_replay(key, fut).await?;
        if let Some(v) = crate::lock(&executed).take() {
            return Ok(v);
        }
        let value = recorded.ok_or_else(|| not_run(key))?;
        serde_json::from_value(value).map_err(|e| Error::Journal {
            key: key.to_owned(),
            message: format!("recorded value does not match the expected type: {e}"),
        })
    }

    /// [`step`](Self::step) for a result that is JSON already, recorded as it is, for a
    /// caller that keeps what `exec` computed itself: `None` when `exec` ran, else the
    /// recorded value (with a journal; without one, `exec` runs and its value comes back).
    pub(crate) async fn step_json<F>(&self, key: &str, exec: F) -> Result<Option<Value>>
    where
        F: std::future::Future<Output = Result<Value>> + Send,
    {
        match &self.inner.journal {
            None => exec.await.map(Some),
            Some(journal) => journal.step_or_replay(key, Box::pin(exec)).await,
        }
    }

    /// Fail if the run is cancelled, past its deadline or over budget.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            return Err(Error::Cancelled {
                run_id: self.inner.run_id.clone(),
            });
        }
        if let Some(deadline) = self.inner.deadline
            && Instant::now() >= deadline
        {
            return Err(Error::DeadlineExceeded {
                run_id: self.inner.run_id.clone(),
                what: String::new(),
            });
        }
        if let Some(budget) = self.inner.budget {
            let totals = self.totals();
            if let Some(max) = budget.max_tokens {
                let used = totals.usage.total_tokens();
                if used >= max {
                    return Err(Error::BudgetExceeded {
                        run_id: self.inner.run_id.clone(),
                        message: format!("{used} tokens used of a {max}-token budget"),
                    });
                }
            }
            if let Some(max) = budget.max_cost_usd
                && totals.cost_usd >= max
            {
                return Err(Error::BudgetExceeded {
                    run_id: self.inner.run_id.clone(),
                    message: format!("${:.4} spent of a ${max:.4} budget", totals.cost_usd),
                });
            }
        }
        Ok(())
    }

    /// Run `fut` unless the run is cancelled or its deadline passes first.
    pub async fn guard<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.check()?;
        let cancelled = self.inner.cancel.cancelled();
        let deadline = async {
            match self.inner.deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancelled => Err(Error::Cancelled { run_id: self.inner.run_id.clone() }),
            () = deadline => Err(Error::DeadlineExceeded { run_id: self.inner.run_id.clone(), what: what.to_owned() }),
            r = fut => r,
        }
    }

    /// A context whose [`scope_totals`](Self::scope_totals) start at zero and count only what
    /// is spent through it (and its clones and sub-scopes); everything still adds up in the
    /// run's [`totals`](Self::totals). Agents and patterns open a scope per `generate`, so a
    /// [`Generation`](crate::Generation) reports exactly its own usage, nested calls included.
    #[must_use]
    pub fn scoped(&self) -> Self {
        self.clone().modify(|i| i.totals.push(Arc::default()))
    }

    /// Add a model call's usage and cost to the run's totals and every enclosing scope.
    pub fn record_llm_usage(&self, usage: Usage, cost_usd: f64) {
        for t in &self.inner.totals {
            let mut t = crate::lock(t);
            t.usage += usage;
            t.cost_usd += cost_usd;
            t.llm_calls += 1;
        }
    }

    /// Count a tool call in the run's totals and every enclosing scope.
    pub fn record_tool_call(&self) {
        for t in &self.inner.totals {
            crate::lock(t).tool_calls += 1;
        }
    }

    /// Append a finished tool call to the run's tool history. The agent loop does it for every
    /// call, executed or replayed from the journal, so a resumed run sees the same history.
    pub fn record_tool_result(&self, tool: &str, is_error: bool) {
        self.inner.history.push(ToolCallRecord::new(tool, is_error));
    }

    /// Look at the run's tool history as this context sees it: every call finished before the
    /// current one started (for calls of one model turn run side by side: before the turn).
    /// The lock is held while `f` runs, so keep `f` short and never await in it.
    pub fn with_tool_history<R>(&self, f: impl FnOnce(&[ToolCallRecord]) -> R) -> R {
        let history = crate::lock(&self.inner.history.0);
        let end = self
            .inner
            .history_cutoff
            .map_or(history.len(), |c| c.min(history.len()));
        f(&history[..end])
    }

    /// The number of calls in the run's tool history.
    #[must_use]
    pub fn tool_history_len(&self) -> usize {
        self.inner.history.len()
    }

    /// A context whose tool history is `history` (shared with whoever else holds it) rather
    /// than its own: what chain rules see, and where its calls are recorded. For a caller
    /// that is not a run, e.g. a gateway's client across its requests.
    #[must_use]
    pub fn with_shared_tool_history(self, history: SharedToolHistory) -> Self {
        self.modify(|i| {
            i.history = history;
            i.history_cutoff = None;
        })
    }

    /// A context that sees only the first `len` calls of the run's tool history (see
    /// [`with_tool_history`](Self::with_tool_history)).
    #[must_use]
    pub fn with_tool_history_cutoff(self, len: usize) -> Self {
        self.modify(|i| i.history_cutoff = Some(len))
    }

    /// What the whole run has spent so far.
    #[must_use]
    pub fn totals(&self) -> RunTotals {
        self.inner
            .totals
            .first()
            .map(|t| *crate::lock(t))
            .unwrap_or_default()
    }

    /// What has been spent through the innermost [`scoped`](Self::scoped) context.
    #[must_use]
    pub fn scope_totals(&self) -> RunTotals {
        self.inner
            .totals
            .last()
            .map(|t| *crate::lock(t))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_stops_the_run() {
        let ctx = RunContext::new().with_budget(Budget::new().with_max_tokens(100));
        assert!(ctx.check().is_ok());
        ctx.record_llm_usage(Usage::new(80, 30), 0.0);
        let err = ctx.check().unwrap_err();
        assert!(err.is_budget_exceeded(), "{err}");
        assert!(
            err.to_string()
                .contains("110 tokens used of a 100-token budget")
        );
    }

    #[test]
    fn clones_share_totals_and_steps() {
        let a = RunContext::new();
        let b = a.clone().with_run_id("other");
        b.record_llm_usage(Usage::new(1, 2), 0.5);
        assert_eq!(a.totals().usage, Usage::new(1, 2));
        assert_eq!(a.next_step(), 0);
        assert_eq!(b.next_step(), 1);
    }

    #[test]
    fn branches_have_their_own_key_spaces() {
        let run = RunContext::new();
        let a = run.branch("p[0]");
        let b = run.branch("p[1]");
        // Whatever order the branches take steps in, their keys are the same.
        assert_eq!(b.step_key("x/llm"), "p[1]#1/x/llm/0");
        assert_eq!(a.step_key("x/llm"), "p[0]#0/x/llm/0");
        assert_eq!(a.step_key("x/llm"), "p[0]#0/x/llm/1");
        let nested = a.branch("q");
        assert_eq!(nested.step_key("y"), "p[0]#0/q#2/y/0");
        // The same label branched again is a new key space.
        assert_eq!(run.branch("p[0]").key_space(), "p[0]#2/");
        assert_eq!(run.key_space(), "");
    }

    #[test]
    fn threads_are_named_by_the_context() {
        let ctx = RunContext::new();
        assert_eq!(ctx.thread(), None);
        assert_eq!(ctx.thread_or_default(), DEFAULT_THREAD);
        let t = ctx.clone().with_thread("session-1");
        assert_eq!(t.thread_or_default(), "session-1");
        assert_eq!(t.branch("b").thread(), Some("session-1"));
    }

    /// A step that executes hands back what it computed; a replay decodes the recording
    /// (here a field the JSON leaves out tells them apart).
    #[tokio::test]
    async fn an_executed_step_returns_its_result_and_a_replay_decodes_the_recording() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Out {
            shown: u32,
            #[serde(skip)]
            local: u32,
        }
        let journal = Arc::new(crate::journal::MemoryJournal::new());
        let ctx = RunContext::new().with_journal(journal.clone());
        let first: Out = ctx
            .step("k", async { Ok(Out { shown: 1, local: 7 }) })
            .await
            .unwrap();
        assert_eq!(first, Out { shown: 1, local: 7 });
        let replayed: Out = ctx
            .step("k", async { Ok(Out { shown: 2, local: 9 }) })
            .await
            .unwrap();
        assert_eq!(replayed, Out { shown: 1, local: 0 });
        let err = ctx.step::<u32, _>("k", async { Ok(3) }).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("recorded value does not match the expected type"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn guard_stops_on_cancel() {
        let ctx = RunContext::new();
        let c2 = ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            c2.cancel();
        });
        let r: Result<()> = ctx
            .guard("wait", async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(())
            })
            .await;
        assert!(r.unwrap_err().is_cancelled());
    }

    #[test]
    fn scopes_count_their_own_usage_and_roll_up() {
        let run = RunContext::new();
        let a = run.scoped();
        let b = a.scoped();
        b.record_llm_usage(Usage::new(10, 0), 0.0);
        a.record_llm_usage(Usage::new(1, 0), 0.0);
        assert_eq!(b.scope_totals().usage.input_tokens, 10);
        assert_eq!(a.scope_totals().usage.input_tokens, 11);
        assert_eq!(run.totals().usage.input_tokens, 11);
        assert_eq!(b.totals().usage.input_tokens, 11);
    }

    #[test]
    fn child_cancellation_does_not_cancel_parent() {
        let parent = RunContext::new();
        let child = parent.child();
        child.cancel();
        assert!(!parent.is_cancelled());
        let child2 = parent.child();
        parent.cancel();
        assert!(child2.is_cancelled());
    }
}
