//! The data model: runs, journal entries and the updates a [`Store`](crate::Store) applies.

use std::time::{SystemTime, UNIX_EPOCH};

use agentkit_core::{RunStatus, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Every status a run can have, in the order they are documented.
pub const ALL_STATUSES: [RunStatus; 8] = [
    RunStatus::Queued,
    RunStatus::Running,
    RunStatus::WaitingInput,
    RunStatus::WaitingApproval,
    RunStatus::Paused,
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Cancelled,
];

/// Parse a stored status name (`queued`, `running`, ...).
#[must_use]
pub fn parse_status(s: &str) -> Option<RunStatus> {
    ALL_STATUSES.into_iter().find(|st| st.as_str() == s)
}

/// A run to create: one invocation of a registered agent or workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NewRun {
    /// Run id (UUIDv7 by default).
    pub id: String,
    /// Target name (agent or workflow).
    pub target: String,
    /// Target version.
    pub version: u32,
    /// The run's input.
    pub input: Value,
    /// Same key, same run.
    pub idempotency_key: Option<String>,
    /// Store the run already claimed by this owner until this time (ms since epoch): `running`,
    /// first attempt. The executor does this when it can execute a new run at once, which
    /// saves a store round trip per run.
    pub claim: Option<(String, i64)>,
    /// Store the run parked (queued, not claimable) until this time (ms since epoch);
    /// [`HELD`] parks it until [`Runtime::release`](crate::Runtime::release). A parked run is
    /// never created claimed.
    pub wake_at: Option<i64>,
}

/// The `wake_at` of a run held until it is released
/// ([`StartOptions::held`](agentkit_core::StartOptions::held), [`Runtime::release`](crate::Runtime::release)).
pub const HELD: i64 = i64::MAX;

impl NewRun {
    /// A new queued run of `target` with `input` and a fresh id.
    pub fn new(target: impl Into<String>, input: Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            target: target.into(),
            version: 1,
            input,
            idempotency_key: None,
            claim: None,
            wake_at: None,
        }
    }

    /// Use this id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Set the target version.
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Set an idempotency key.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Store the run already claimed by `owner` until `lease_until` (see [`NewRun::claim`]).
    #[must_use]
    pub fn with_claim(mut self, owner: impl Into<String>, lease_until: i64) -> Self {
        self.claim = Some((owner.into(), lease_until));
        self
    }

    /// Park the new run until `wake_at` ([`HELD`]: until it is released).
    #[must_use]
    pub fn with_wake_at(mut self, wake_at: i64) -> Self {
        self.wake_at = Some(wake_at);
        self
    }
}

/// A stored run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// Target version.
    pub version: u32,
    /// Input.
    pub input: Value,
    /// Status.
    pub status: RunStatus,
    /// How many times execution was started (first try, retries, resumes).
    pub attempts: u32,
    /// Idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// Created (ms since epoch).
    pub created_at: i64,
    /// Last updated (ms since epoch).
    pub updated_at: i64,
    /// Output, when succeeded.
    pub output: Option<Value>,
    /// Error, when failed or cancelled.
    pub error: Option<String>,
    /// Tokens used.
    pub usage: Usage,
    /// Dollars spent.
    pub cost_usd: f64,
    /// The runtime node holding the run's lease, while it executes.
    pub owner: Option<String>,
    /// When the lease expires (ms since epoch); another node may then claim the run.
    pub lease_until: Option<i64>,
    /// A `queued` run parked by a durable sleep: not claimable before this time (ms since
    /// epoch).
    pub wake_at: Option<i64>,
    /// A run waiting for a signal (`waiting_input`, `waiting_approval`): the names of the
    /// signals it waits for, any of which resumes it (e.g. `human_input`, or
    /// `approval/<call_id>` and `approval`). [`Runtime::recover`](crate::Runtime::recover)
    /// leaves a waiting run alone unless one of them is already queued. `None` for every
    /// other status, and for runs that started waiting before agentkit stored this (those
    /// are re-executed at recovery to find out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<Vec<String>>,
}

impl RunRecord {
    /// The record of a freshly created run: queued, or running if it was created claimed.
    #[must_use]
    pub fn new(run: NewRun) -> Self {
        let now = now_ms();
        let (status, attempts, owner, lease_until) = match run.claim {
            Some((owner, lease)) if run.wake_at.is_none() => {
                (RunStatus::Running, 1, Some(owner), Some(lease))
            }
            _ => (RunStatus::Queued, 0, None, None),
        };
        Self {
            id: run.id,
            target: run.target,
            version: run.version,
            input: run.input,
            status,
            attempts,
            idempotency_key: run.idempotency_key,
            created_at: now,
            updated_at: now,
            output: None,
            error: None,
            usage: Usage::default(),
            cost_usd: 0.0,
            owner,
            lease_until,
            wake_at: run.wake_at,
            waiting_for: None,
        }
    }

    /// Whether `owner` may claim the run at `now`: it is queued (and not parked until later),
    /// or running under a lease that has expired.
    #[must_use]
    pub fn claimable(&self, now: i64) -> bool {
        match self.status {
            RunStatus::Queued => self.wake_at.is_none_or(|w| w <= now),
            RunStatus::Running => self.lease_until.is_none_or(|t| t < now),
            _ => false,
        }
    }

    /// Claim the run for `owner` until `lease_until`: running, one more attempt.
    pub fn claim(&mut self, owner: &str, lease_until: i64) {
        self.status = RunStatus::Running;
        self.attempts = self.attempts.saturating_add(1);
        self.owner = Some(owner.to_owned());
        self.lease_until = Some(lease_until);
        self.wake_at = None;
        self.waiting_for = None;
        self.updated_at = now_ms();
    }

    /// Apply an update (what every store does inside its transition).
    pub fn apply(&mut self, update: &RunUpdate) {
        self.status = update.status;
        if update.increment_attempts {
            self.attempts = self.attempts.saturating_add(1);
        }
        if let Some(o) = &update.output {
            self.output = Some(o.clone());
        }
        if let Some(e) = &update.error {
            self.error = Some(e.clone());
        }
        if let Some(u) = update.usage {
            self.usage = u;
        }
        if let Some(c) = update.cost_usd {
            self.cost_usd = c;
        }
        self.wake_at = update.wake_at;
        self.waiting_for.clone_from(&update.waiting_for);
        self.updated_at = now_ms();
    }
}

/// A status change with what comes with it; applied only if the run is in an expected status.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunUpdate {
    /// New status.
    pub status: RunStatus,
    /// Count one more attempt.
    pub increment_attempts: bool,
    /// Set the output.
    pub output: Option<Value>,
    /// Set the error.
    pub error: Option<String>,
    /// Set the usage totals.
    pub usage: Option<Usage>,
    /// Set the cost.
    pub cost_usd: Option<f64>,
    /// Apply only if the run's lease is held by this owner (a node that lost its lease must
    /// not change a run another node now executes).
    pub owner_fence: Option<String>,
    /// Park the (queued) run until this time (ms since epoch). Every update sets it: `None`
    /// clears a previous wake-up time.
    pub wake_at: Option<i64>,
    /// The signals a run that now waits for a signal waits for (see
    /// [`RunRecord::waiting_for`]). Every update sets it: `None` clears it.
    pub waiting_for: Option<Vec<String>>,
}

impl RunUpdate {
    /// Change the status only.
    #[must_use]
    pub fn new(status: RunStatus) -> Self {
        Self {
            status,
            increment_attempts: false,
            output: None,
            error: None,
            usage: None,
            cost_usd: None,
            owner_fence: None,
            wake_at: None,
            waiting_for: None,
        }
    }

    /// Store the names of the signals the (waiting) run waits for (see
    /// [`RunRecord::waiting_for`]).
    #[must_use]
    pub fn with_waiting_for(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.waiting_for = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Park the run until `wake_at` (ms since epoch): a queued run is not claimed before.
    #[must_use]
    pub fn with_wake_at(mut self, wake_at: i64) -> Self {
        self.wake_at = Some(wake_at);
        self
    }

    /// Apply only if `owner` holds the run's lease.
    #[must_use]
    pub fn with_owner_fence(mut self, owner: impl Into<String>) -> Self {
        self.owner_fence = Some(owner.into());
        self
    }

    /// Count one more attempt.
    #[must_use]
    pub fn with_attempt(mut self) -> Self {
        self.increment_attempts = true;
        self
    }

    /// Set the output.
    #[must_use]
    pub fn with_output(mut self, output: Value) -> Self {
        self.output = Some(output);
        self
    }

    /// Set the error.
    #[must_use]
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Set usage and cost totals.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage, cost_usd: f64) -> Self {
        self.usage = Some(usage);
        self.cost_usd = Some(cost_usd);
        self
    }
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A model completion of the agent loop.
    Llm,
    /// A tool result of the agent loop.
    Tool,
    /// A `ctx.step` of a workflow.
    Step,
    /// A delivered signal.
    Signal,
    /// A durable timer.
    Timer,
    /// Anything else journaled through [`agentkit_core::Journal`].
    Other,
}

impl EntryKind {
    /// Classify a journal key (`agent/llm/3`, `agent/tool/4/call_1`, `step/fetch`, ...).
    #[must_use]
    pub fn from_key(key: &str) -> Self {
        if key.starts_with("step/") {
            Self::Step
        } else if key.starts_with("signal/") {
            Self::Signal
        } else if key.starts_with("sleep/") {
            Self::Timer
        } else if key.contains("/llm/") {
            Self::Llm
        } else if key.contains("/tool/") {
            Self::Tool
        } else {
            Self::Other
        }
    }

    /// The snake_case name, as stored.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Tool => "tool",
            Self::Step => "step",
            Self::Signal => "signal",
            Self::Timer => "timer",
            Self::Other => "other",
        }
    }

    /// Parse a stored name.
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "llm" => Self::Llm,
            "tool" => Self::Tool,
            "step" => Self::Step,
            "signal" => Self::Signal,
            "timer" => Self::Timer,
            _ => Self::Other,
        }
    }
}

/// One entry of a run's append-only journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JournalEntry {
    /// The run.
    pub run_id: String,
    /// Position in the run's journal (0, 1, 2, ...).
    pub seq: u64,
    /// The step key (unique within the run).
    pub key: String,
    /// What was recorded.
    pub kind: EntryKind,
    /// The recorded (redacted) result.
    pub value: Value,
    /// How long the step took to execute.
    pub latency_ms: u64,
    /// Tokens used by the step (model completions).
    pub usage: Usage,
    /// Dollars spent by the step.
    pub cost_usd: f64,
    /// When it was recorded (ms since epoch).
    pub created_at: i64,
}

impl JournalEntry {
    /// An entry; the kind is derived from the key.
    pub fn new(run_id: impl Into<String>, seq: u64, key: impl Into<String>, value: Value) -> Self {
        let key = key.into();
        Self {
            run_id: run_id.into(),
            seq,
            kind: EntryKind::from_key(&key),
            key,
            value,
            latency_ms: 0,
            usage: Usage::default(),
            cost_usd: 0.0,
            created_at: now_ms(),
        }
    }

    /// Set the latency.
    #[must_use]
    pub fn with_latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = ms;
        self
    }

    /// Set usage and cost.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage, cost_usd: f64) -> Self {
        self.usage = usage;
        self.cost_usd = cost_usd;
        self
    }
}

/// The result of [`RunStore::create_run`](crate::RunStore::create_run).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Created {
    /// A new run was stored.
    New(RunRecord),
    /// A run with the same idempotency key already existed; nothing was stored.
    Existing(RunRecord),
}

impl Created {
    /// The run, new or existing.
    #[must_use]
    pub fn run(&self) -> &RunRecord {
        match self {
            Self::New(r) | Self::Existing(r) => r,
        }
    }

    /// The run, new or existing, taken out.
    #[must_use]
    pub fn into_run(self) -> RunRecord {
        match self {
            Self::New(r) | Self::Existing(r) => r,
        }
    }

    /// Whether the run was created by this call.
    #[must_use]
    pub fn is_new(&self) -> bool {
        matches!(self, Self::New(_))
    }
}

/// Which runs [`RunStore::search_runs`](crate::RunStore::search_runs) returns: every filter
/// that is set must match; newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunQuery {
    /// Only runs of these targets (agents or workflows); empty = any.
    pub targets: Vec<String>,
    /// Only runs in these statuses; empty = any.
    pub statuses: Vec<RunStatus>,
    /// Only runs created at or after this time (ms since epoch).
    pub created_after: Option<i64>,
    /// Only runs created before this time (ms since epoch).
    pub created_before: Option<i64>,
    /// Only runs whose idempotency key starts with this (case-sensitive, no wildcards), e.g. a
    /// schedule's [`fire_key_prefix`](crate::Schedule::fire_key_prefix) for its history.
    pub idempotency_key_prefix: Option<String>,
    /// At most this many runs (capped at [`RunQuery::MAX_LIMIT`]).
    pub limit: usize,
    /// Skip this many matching runs first (paging).
    pub offset: usize,
}

impl Default for RunQuery {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            statuses: Vec::new(),
            created_after: None,
            created_before: None,
            idempotency_key_prefix: None,
            limit: 100,
            offset: 0,
        }
    }
}

impl RunQuery {
    /// The largest page a search returns.
    pub const MAX_LIMIT: usize = 1_000;

    /// Any run, newest first, 100 a page.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only runs of `target`.
    #[must_use]
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.targets.push(target.into());
        self
    }

    /// Only runs in `status`.
    #[must_use]
    pub fn with_status(mut self, status: RunStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// Only runs created in `[after, before)` (ms since epoch; either end open).
    #[must_use]
    pub fn with_created(mut self, after: Option<i64>, before: Option<i64>) -> Self {
        self.created_after = after;
        self.created_before = before;
        self
    }

    /// Only runs whose idempotency key starts with `prefix`.
    #[must_use]
    pub fn with_idempotency_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.idempotency_key_prefix = Some(prefix.into());
        self
    }

    /// One page: skip `offset` matches, return at most `limit`.
    #[must_use]
    pub fn with_page(mut self, limit: usize, offset: usize) -> Self {
        self.limit = limit;
        self.offset = offset;
        self
    }

    /// The page size a backend uses: `limit`, at most [`RunQuery::MAX_LIMIT`].
    #[must_use]
    pub fn page_size(&self) -> usize {
        self.limit.min(Self::MAX_LIMIT)
    }

    /// Whether `run` passes the filters (the in-memory backend's predicate).
    #[must_use]
    pub fn matches(&self, run: &RunRecord) -> bool {
        (self.targets.is_empty() || self.targets.contains(&run.target))
            && (self.statuses.is_empty() || self.statuses.contains(&run.status))
            && self.created_after.is_none_or(|t| run.created_at >= t)
            && self.created_before.is_none_or(|t| run.created_at < t)
            && self.idempotency_key_prefix.as_deref().is_none_or(|p| {
                run.idempotency_key
                    .as_deref()
                    .is_some_and(|k| k.starts_with(p))
            })
    }
}

/// A JSON document in a [`DocStore`](crate::DocStore) collection, with a revision for
/// compare-and-swap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Doc {
    /// Its id, unique in its collection.
    pub id: String,
    /// Its value.
    pub value: Value,
    /// 1 when created, one more on every write.
    pub revision: u64,
    /// When it was created (ms since epoch).
    pub created_at: i64,
    /// When it was last written (ms since epoch).
    pub updated_at: i64,
}

/// One write of [`DocStore::doc_put_many`](crate::DocStore::doc_put_many): what
/// [`DocStore::doc_put`](crate::DocStore::doc_put) takes, as a value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DocWrite {
    /// The collection.
    pub collection: String,
    /// The document's id.
    pub id: String,
    /// The value to store.
    pub value: Value,
    /// What the write expects to find (checked atomically with it).
    pub expect: Expect,
}

impl DocWrite {
    /// Write `value` as document `id` of `collection` if `expect` holds.
    #[must_use]
    pub fn new(
        collection: impl Into<String>,
        id: impl Into<String>,
        value: Value,
        expect: Expect,
    ) -> Self {
        Self {
            collection: collection.into(),
            id: id.into(),
            value,
            expect,
        }
    }
}

/// What a [`DocStore`](crate::DocStore) write expects to find, checked atomically with the
/// write (compare-and-swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expect {
    /// Anything (an unconditional write).
    Any,
    /// No document with this id (create only; immutable records).
    Absent,
    /// The document at exactly this revision.
    Revision(u64),
}
