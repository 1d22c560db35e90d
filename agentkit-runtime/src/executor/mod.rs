//! The [`Runtime`]: registers targets, starts, resumes, retries, cancels and signals runs.
//!
//! One job per file: [`options`](TargetOptions) (per-target retries, timeout, budget), `lease`
//! (node identity, leases, heartbeat), `registry` (targets), `lifecycle` (start, wait, cancel,
//! pause, resume, signal), `schedules`, `triggers`, `replay`, `recovery` and `dispatch` (the
//! claim loop and one execution with its retries); `host` implements core's `WorkflowHost`.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use agentkit_core::{PriceTable, Result};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::RunRecord;
use crate::redact::Redactor;
use crate::store::Store;

mod builder;
mod dispatch;
mod host;
mod lease;
mod lifecycle;
mod options;
mod recovery;
mod registry;
mod replay;
mod schedules;
mod triggers;

pub use builder::RuntimeBuilder;
pub use options::{MAX_BACKOFF, RetryPolicy, RetryPredicate, TargetOptions};
pub use registry::{AgentFactory, AgentResolver};
pub use replay::ReplayReport;
pub use schedules::{PAUSE_PROPAGATION, SCHEDULES_NAMESPACE, ScheduleInfo};

use registry::Target;
use schedules::ScheduleState;

struct Inner {
    store: Arc<dyn Store>,
    targets: RwLock<HashMap<String, Arc<Target>>>,
    inflight: Mutex<HashMap<String, CancellationToken>>,
    /// Runs dispatched while they were still executing: driven again when that ends.
    rerun: Mutex<std::collections::HashSet<String>>,
    /// `run_sync` callers waiting for a run this process executes.
    waiters: Mutex<HashMap<String, oneshot::Sender<RunRecord>>>,
    /// `wait_for_status` callers by run (a wakeup and how many wait on it): a run's execution
    /// ending wakes the waiters of that run only, instead of every waiter in the process
    /// re-reading its own run from the store (with 10,000 waiters that was 10,000 reads per
    /// finished run).
    watchers: Mutex<HashMap<String, Watched>>,
    redactor: Redactor,
    prices: Arc<PriceTable>,
    stopping: AtomicBool,
    /// When this node last read the schedules' shared pause state.
    pauses_read: Mutex<Option<std::time::Instant>>,
    abort: CancellationToken,
    tasks: TaskTracker,
    finished: watch::Sender<u64>,
    node_id: String,
    lease: Duration,
    heartbeat: AtomicBool,
    /// Whether to follow the store's [`stop_notices`](crate::store::LeaseStore::stop_notices)
    /// (set by the builder), and whether that has started.
    notices: bool,
    notices_started: AtomicBool,
    background: CancellationToken,
    polling: CancellationToken,
    schedules: RwLock<HashMap<String, Arc<ScheduleState>>>,
    subscriptions: RwLock<HashMap<String, Vec<String>>>,
    live: Arc<crate::live::LiveDeltas>,
    events: Option<Arc<dyn agentkit_core::EventSink>>,
    observer: Option<Arc<dyn crate::observe::RunObserver>>,
    spend_guard: Option<Arc<dyn agentkit_core::SpendGuard>>,
}

/// The waiters of one run: their wakeup, how many they are, and the record an execution of
/// this process ended with (so they need not read it back from the store).
struct Watched {
    notify: Arc<tokio::sync::Notify>,
    count: usize,
    last: Option<RunRecord>,
}

/// The durable executor.
///
/// Runs are stored before they execute; every model completion, tool result, workflow step,
/// timer and signal is journaled; a run that was `running` or `queued` when its process died
/// re-executes on [`recover`](Runtime::recover) and replays its completed steps from the
/// journal. Cloning is cheap (one `Arc`).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime over `store` with the defaults: a fresh node id, 30 s leases, the default
    /// redaction and price table. Same as `Runtime::builder(store).build()`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::builder(store).build()
    }

    /// A [`RuntimeBuilder`] over `store`, to set the node id, lease, redaction or prices.
    /// They are fixed when the runtime is built, so every clone of a runtime sees the same
    /// settings.
    pub fn builder(store: Arc<dyn Store>) -> RuntimeBuilder {
        RuntimeBuilder::new(store)
    }

    fn from_builder(b: RuntimeBuilder) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: b.store,
                targets: RwLock::default(),
                inflight: Mutex::default(),
                rerun: Mutex::default(),
                waiters: Mutex::default(),
                watchers: Mutex::default(),
                redactor: b.redactor,
                prices: b.prices,
                stopping: AtomicBool::new(false),
                pauses_read: Mutex::new(None),
                abort: CancellationToken::new(),
                tasks: TaskTracker::new(),
                finished: watch::Sender::new(0),
                node_id: b.node_id,
                lease: b.lease,
                heartbeat: AtomicBool::new(false),
                notices: b.notices,
                notices_started: AtomicBool::new(false),
                background: CancellationToken::new(),
                polling: CancellationToken::new(),
                schedules: RwLock::default(),
                subscriptions: RwLock::default(),
                live: Arc::default(),
                events: b.events,
                observer: b.observer,
                spend_guard: b.spend_guard,
            }),
        }
    }

    /// Tell the observer (if any) that this process ended `run`.
    pub(crate) fn observe_end(&self, run: Option<&RunRecord>) {
        if let Some(r) = run {
            // The run's span (current while it executes; other spans lack these fields).
            let span = tracing::Span::current();
            span.record("agentkit.run.status", r.status.as_str());
            span.record("agentkit.cost_usd", r.cost_usd);
            span.record("gen_ai.usage.input_tokens", r.usage.input_tokens);
            span.record("gen_ai.usage.output_tokens", r.usage.output_tokens);
            if r.status == agentkit_core::RunStatus::Failed {
                span.record("error.type", "run_failed");
            }
        }
        if let (Some(o), Some(r)) = (&self.inner.observer, run) {
            o.run_ended(r);
        }
    }

    /// The live text deltas of the agent runs this process executes (see
    /// [`LiveDeltas`](crate::LiveDeltas)): subscribe to a run's before or while it executes.
    /// While a run has a subscriber its model calls stream from the provider; deltas are not
    /// journaled, and the journaled model step that follows them is the source of truth.
    #[must_use]
    pub fn live_deltas(&self) -> &Arc<crate::live::LiveDeltas> {
        &self.inner.live
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The run's journal: every recorded model completion, tool result, step, timer and
    /// signal, in order.
    pub async fn journal(&self, run_id: &str) -> Result<Vec<crate::model::JournalEntry>> {
        self.inner.store.journal(run_id).await
    }
}
