//! The [`Runtime`]: registers targets, starts, resumes, retries, cancels and signals runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use agentkit_core::{
    AugmentedLlm, Budget, Error, GenerateRequest, PriceTable, Result, RunContext, RunInfo,
    RunStatus, StartOptions, WorkflowHost, WorkflowInfo,
};
use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::journal::DurableJournal;
use crate::model::{Created, NewRun, RunRecord, RunUpdate};
use crate::redact::Redactor;
use crate::scheduler::{CatchUp, Overlap, Schedule};
use crate::store::Store;
use crate::workflow::{
    APPROVAL_SIGNAL, DynWorkflow, Erased, Workflow, WorkflowContext, decode_approval,
};

/// Builds a fresh agent for each run (agents keep conversation memory, runs must not share it).
pub type AgentFactory = Arc<dyn Fn() -> Arc<dyn AugmentedLlm> + Send + Sync>;

/// Decides whether a failed attempt is retried.
pub type RetryPredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// Retries with exponential backoff. Completed steps are not re-executed on a retry: the
/// journal replays them.
#[derive(Clone)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of the wait.
    pub max_backoff: Duration,
    /// Growth factor of the wait.
    pub multiplier: f64,
    /// Which errors are retried (default: [`Error::is_retryable`]).
    pub retry_if: RetryPredicate,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("multiplier", &self.multiplier)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            retry_if: Arc::new(Error::is_retryable),
        }
    }
}

impl RetryPolicy {
    /// The default policy: 3 attempts, 200 ms doubling up to 30 s, retryable errors only.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Never retry.
    #[must_use]
    pub fn none() -> Self {
        Self::default().with_max_attempts(1)
    }

    /// Set the number of attempts (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Set the backoff: first wait and upper bound.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Retry only errors for which `f` returns true.
    #[must_use]
    pub fn with_retry_if(mut self, f: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Arc::new(f);
        self
    }

    /// The wait before retry number `retry` (1-based).
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        let wait = self.initial_backoff.as_secs_f64() * factor;
        Duration::try_from_secs_f64(wait)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// How a target runs: concurrency, retries, timeout, budget.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TargetOptions {
    /// What the target does.
    pub description: String,
    /// Target version stored with each run.
    pub version: u32,
    /// At most this many runs of the target execute at once (others stay queued).
    pub max_concurrency: Option<usize>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Token / dollar budget per run.
    pub budget: Option<Budget>,
}

impl TargetOptions {
    /// Defaults: unlimited concurrency, default retries, no timeout, no budget, version 1.
    #[must_use]
    pub fn new() -> Self {
        Self {
            version: 1,
            ..Self::default()
        }
    }

    /// Describe the target.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Set the version.
    #[must_use]
    pub fn with_version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Limit concurrent runs.
    #[must_use]
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }

    /// Set the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Set a per-attempt timeout.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Set a budget.
    #[must_use]
    pub fn with_budget(mut self, b: Budget) -> Self {
        self.budget = Some(b);
        self
    }
}

enum Kind {
    Agent(AgentFactory),
    Workflow(Arc<dyn DynWorkflow>),
}

struct Target {
    name: String,
    kind: Kind,
    options: TargetOptions,
    permits: Arc<Semaphore>,
}

fn agent_message(target: &str, input: &Value) -> Result<String> {
    match input {
        Value::String(s) => Ok(s.clone()),
        Value::Object(m) => match m.get("message") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(Error::InvalidRequest(format!(
                "input of agent `{target}` must be a string or {{\"message\": string}}"
            ))),
        },
        _ => Err(Error::InvalidRequest(format!(
            "input of agent `{target}` must be a string or {{\"message\": string}}"
        ))),
    }
}

impl Target {
    fn validate(&self, input: &Value) -> Result<()> {
        match &self.kind {
            Kind::Agent(_) => agent_message(&self.name, input).map(|_| ()),
            Kind::Workflow(w) => w.validate(input),
        }
    }

    fn info(&self) -> WorkflowInfo {
        let (schema, description) = match &self.kind {
            Kind::Agent(_) => (
                json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}),
                self.options.description.clone(),
            ),
            Kind::Workflow(w) => {
                let d = if self.options.description.is_empty() {
                    w.description()
                } else {
                    self.options.description.clone()
                };
                (w.input_schema(), d)
            }
        };
        WorkflowInfo::new(&self.name, description, schema)
    }

    async fn execute(&self, ctx: &WorkflowContext, input: Value) -> Result<Value> {
        match &self.kind {
            Kind::Agent(factory) => {
                let message = agent_message(&self.name, &input)?;
                let agent = factory();
                // The context carries signal-backed human-input and approval handlers.
                let generation = agent
                    .generate(GenerateRequest::from(message), ctx.run_context())
                    .await?;
                Ok(json!({"text": generation.text()}))
            }
            Kind::Workflow(w) => w.run_json(ctx, input).await,
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    targets: RwLock<HashMap<String, Arc<Target>>>,
    inflight: Mutex<HashMap<String, CancellationToken>>,
    /// Runs dispatched while they were still executing: driven again when that ends.
    rerun: Mutex<std::collections::HashSet<String>>,
    /// `run_sync` callers waiting for a run this process executes.
    waiters: Mutex<HashMap<String, oneshot::Sender<RunRecord>>>,
    redactor: RwLock<Redactor>,
    prices: RwLock<Arc<PriceTable>>,
    stopping: AtomicBool,
    /// When this node last read the schedules' shared pause state.
    pauses_read: Mutex<Option<std::time::Instant>>,
    abort: CancellationToken,
    tasks: TaskTracker,
    finished: watch::Sender<u64>,
    node_id: RwLock<String>,
    lease: RwLock<Duration>,
    heartbeat: AtomicBool,
    background: CancellationToken,
    polling: CancellationToken,
    schedules: RwLock<HashMap<String, Arc<ScheduleState>>>,
    subscriptions: RwLock<HashMap<String, Vec<String>>>,
}

/// The key-value namespace holding each schedule's shared pause state (key: schedule name).
pub const SCHEDULES_NAMESPACE: &str = "agentkit.schedules";

/// How soon a schedule paused or resumed on one node applies on the other nodes.
pub const PAUSE_PROPAGATION: Duration = Duration::from_secs(1);

/// Unpause: fires up to `since` (when it was resumed) are skipped, not caught up.
fn resume_from(st: &ScheduleState, since: i64) {
    if let Ok(mut c) = st.checked_until.lock() {
        *c = (*c).max(since);
    }
    st.paused.store(false, Ordering::SeqCst);
}

struct ScheduleState {
    schedule: Schedule,
    checked_until: Mutex<i64>,
    paused: AtomicBool,
    /// `Overlap::BufferOne`: a fire came while the last run was unfinished (a hint to look
    /// when a run ends; what to start is derived from the stored runs).
    pending: AtomicBool,
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

/// What [`Runtime::replay`] found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The replayed run.
    pub run_id: String,
    /// The output the replay produced, if it finished.
    pub output: Option<Value>,
    /// The error the replay ended with, if any.
    pub error: Option<String>,
    /// Journal keys served from the recording, in order.
    pub replayed: Vec<String>,
    /// Where the current code departs from the recording: steps it asked for that were not
    /// recorded, recorded steps it never asked for, and a different output.
    pub divergences: Vec<String>,
}

impl ReplayReport {
    /// Whether the replay followed the recording exactly.
    #[must_use]
    pub fn is_faithful(&self) -> bool {
        self.divergences.is_empty()
    }
}

/// What the dispatcher already knows about a run.
enum Hint {
    /// Nothing: read it from the store.
    None,
    /// Its record (just created): no need to read it.
    Known(RunRecord),
    /// Claimed for this node by `claim_next`.
    Claimed(RunRecord),
    /// Created already claimed by this node, holding a concurrency permit of its target.
    Owned(RunRecord, OwnedSemaphorePermit),
}

/// What one execution ended with.
enum Outcome {
    Done,
    Requeue,
}

impl Runtime {
    /// A runtime over `store`, with the default redaction and price table.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                targets: RwLock::default(),
                inflight: Mutex::default(),
                rerun: Mutex::default(),
                waiters: Mutex::default(),
                redactor: RwLock::new(Redactor::default()),
                prices: RwLock::new(PriceTable::shared_default()),
                stopping: AtomicBool::new(false),
                pauses_read: Mutex::new(None),
                abort: CancellationToken::new(),
                tasks: TaskTracker::new(),
                finished: watch::Sender::new(0),
                node_id: RwLock::new(uuid::Uuid::now_v7().to_string()),
                lease: RwLock::new(Duration::from_secs(30)),
                heartbeat: AtomicBool::new(false),
                background: CancellationToken::new(),
                polling: CancellationToken::new(),
                schedules: RwLock::default(),
                subscriptions: RwLock::default(),
            }),
        }
    }

    /// Name this runtime node (default: a fresh UUID). Leases are held in this name.
    #[must_use]
    pub fn with_node_id(self, id: impl Into<String>) -> Self {
        if let Ok(mut n) = self.inner.node_id.write() {
            *n = id.into();
        }
        self
    }

    /// How long a claimed run stays claimed without a heartbeat (default 30 s). The heartbeat
    /// renews leases every third of this; a node that dies loses its runs after at most this.
    #[must_use]
    pub fn with_lease(self, lease: Duration) -> Self {
        if let Ok(mut l) = self.inner.lease.write() {
            *l = lease.max(Duration::from_millis(30));
        }
        self
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> String {
        self.inner
            .node_id
            .read()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    fn lease(&self) -> Duration {
        self.inner
            .lease
            .read()
            .map(|l| *l)
            .unwrap_or(Duration::from_secs(30))
    }

    fn lease_until(&self) -> i64 {
        let ms = i64::try_from(self.lease().as_millis()).unwrap_or(i64::MAX);
        crate::model::now_ms().saturating_add(ms)
    }

    /// Poll the store every `interval` for runs this node can execute: queued runs (started
    /// by any node) and runs whose lease expired (their node died). Needed when several
    /// processes share a PostgreSQL store; stops at [`shutdown`](Self::shutdown).
    pub fn start_polling(&self, interval: Duration) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                if this.inner.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let targets: Vec<String> = this
                    .inner
                    .targets
                    .read()
                    .map(|t| t.keys().cloned().collect())
                    .unwrap_or_default();
                match this
                    .inner
                    .store
                    .claim_next(&this.node_id(), &targets, this.lease_until(), 16)
                    .await
                {
                    Ok(runs) => {
                        for run in runs {
                            this.dispatch_run(run.id.clone(), Hint::Claimed(run));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "polling for runs failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = this.inner.polling.cancelled() => break,
                }
            }
        });
    }

    fn start_heartbeat(&self) {
        if self.inner.heartbeat.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let stop = self.inner.background.clone();
        let every = self.lease() / 3;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => break,
                }
                let Some(inner) = inner.upgrade() else { break };
                let this = Runtime { inner };
                let ids: Vec<String> = this
                    .inner
                    .inflight
                    .lock()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                if ids.is_empty() {
                    continue;
                }
                if let Err(e) = this
                    .inner
                    .store
                    .renew_leases(&this.node_id(), &ids, this.lease_until())
                    .await
                {
                    tracing::warn!(error = %e, "renewing run leases failed");
                }
            }
        });
    }

    /// Redact journaled values (and signal payloads) with `redactor`.
    #[must_use]
    pub fn with_redactor(self, redactor: Redactor) -> Self {
        if let Ok(mut r) = self.inner.redactor.write() {
            *r = redactor;
        }
        self
    }

    /// Price model usage with `prices`.
    #[must_use]
    pub fn with_prices(self, prices: Arc<PriceTable>) -> Self {
        if let Ok(mut p) = self.inner.prices.write() {
            *p = prices;
        }
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    fn insert(&self, target: Target) {
        if let Ok(mut t) = self.inner.targets.write() {
            t.insert(target.name.clone(), Arc::new(target));
        }
    }

    /// Register an agent target: `factory` builds a fresh agent per run. Input is a string or
    /// `{"message": string}`; output is `{"text": string}`.
    pub fn register_agent(
        &self,
        name: impl Into<String>,
        factory: impl Fn() -> Arc<dyn AugmentedLlm> + Send + Sync + 'static,
        options: TargetOptions,
    ) {
        let permits = Arc::new(Semaphore::new(
            options.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
        ));
        self.insert(Target {
            name: name.into(),
            kind: Kind::Agent(Arc::new(factory)),
            options,
            permits,
        });
    }

    /// Register a code-defined workflow under its name.
    pub fn register_workflow<W: Workflow>(&self, workflow: W, options: TargetOptions) {
        let permits = Arc::new(Semaphore::new(
            options.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
        ));
        self.insert(Target {
            name: workflow.name().to_owned(),
            kind: Kind::Workflow(Arc::new(Erased(workflow))),
            options,
            permits,
        });
    }

    fn target(&self, name: &str) -> Option<Arc<Target>> {
        self.inner
            .targets
            .read()
            .ok()
            .and_then(|t| t.get(name).cloned())
    }

    fn unknown_target(&self, name: &str) -> Error {
        let mut known: Vec<String> = self
            .inner
            .targets
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        known.sort();
        Error::InvalidRequest(format!(
            "no agent or workflow named `{name}` is registered; registered: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }

    /// Start a run and return its id at once. The target must be registered and the input
    /// must match it; otherwise nothing is stored. With an idempotency key that was used
    /// before, the earlier run's id is returned and nothing new executes.
    pub async fn start_run(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<String> {
        let (t, run) = self.prepare_run(target, input, options)?;
        let created = self.create_and_dispatch(&t, run, None).await?;
        Ok(created.run().id.clone())
    }

    /// Check a new run before anything is stored: the target is registered, the input matches
    /// it, and the runtime still accepts runs.
    fn prepare_run(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<(Arc<Target>, NewRun)> {
        let t = self
            .target(target)
            .ok_or_else(|| self.unknown_target(target))?;
        t.validate(&input)?;
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(Error::Workflow(
                "the runtime is shutting down and accepts no new runs".into(),
            ));
        }
        let mut run = NewRun::new(target, input).with_version(t.options.version);
        if let Some(key) = options.idempotency_key {
            run = run.with_idempotency_key(key);
        }
        Ok((t, run))
    }

    /// Store a new run and dispatch it. When the target has a free concurrency slot, the run
    /// is stored already claimed by this node (one store round trip instead of two).
    /// `waiter` gets the finished record if this execution finishes it.
    async fn create_and_dispatch(
        &self,
        t: &Target,
        mut run: NewRun,
        waiter: Option<oneshot::Sender<RunRecord>>,
    ) -> Result<Created> {
        // Counted as in-flight work, so a concurrent `shutdown` waits for the run stored here
        // to be dispatched (executed, or released if the runtime is stopping).
        let _in_flight = self.inner.tasks.token();
        let permit = Arc::clone(&t.permits).try_acquire_owned().ok();
        if permit.is_some() {
            run = run.with_claim(self.node_id(), self.lease_until());
        }
        let created = self.inner.store.create_run(run).await?;
        if let Created::New(run) = &created {
            if let Some(w) = waiter
                && let Ok(mut m) = self.inner.waiters.lock()
            {
                m.insert(run.id.clone(), w);
            }
            let hint = match permit {
                Some(p) => Hint::Owned(run.clone(), p),
                None => Hint::Known(run.clone()),
            };
            self.dispatch_run(run.id.clone(), hint);
        }
        Ok(created)
    }

    /// Start a run and wait until it finishes.
    pub async fn run_sync(
        &self,
        target: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<RunRecord> {
        let (t, run) = self.prepare_run(target, input, options)?;
        let (tx, rx) = oneshot::channel();
        let created = self.create_and_dispatch(&t, run, Some(tx)).await?;
        if created.is_new() {
            // Finished by this execution: its record comes straight from the final update.
            // Otherwise (it waits for a signal, sleeps, was cancelled...) read the store.
            if let Ok(run) = rx.await {
                return Ok(run);
            }
        }
        self.wait(&created.run().id).await
    }

    /// The stored run.
    pub async fn get(&self, run_id: &str) -> Result<RunRecord> {
        self.inner
            .store
            .get_run(run_id)
            .await?
            .ok_or_else(|| Error::Workflow(format!("no run with id {run_id}")))
    }

    /// Wait until the run has one of `statuses`.
    pub async fn wait_for_status(&self, run_id: &str, statuses: &[RunStatus]) -> Result<RunRecord> {
        let mut rx = self.inner.finished.subscribe();
        loop {
            rx.mark_unchanged();
            let run = self.get(run_id).await?;
            if statuses.contains(&run.status) {
                return Ok(run);
            }
            // Also poll, for changes made by other handles on the same store.
            let _ = tokio::time::timeout(Duration::from_millis(250), rx.changed()).await;
        }
    }

    /// Wait until the run has finished (succeeded, failed or cancelled).
    pub async fn wait(&self, run_id: &str) -> Result<RunRecord> {
        self.wait_for_status(
            run_id,
            &[
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Cancelled,
            ],
        )
        .await
    }

    /// Cancel a run: it is stored as cancelled at once and, if it is executing, its context is
    /// cancelled so it stops calling models and tools. Cancelling a finished run is an error.
    pub async fn cancel(&self, run_id: &str) -> Result<()> {
        let live = [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::WaitingInput,
            RunStatus::WaitingApproval,
            RunStatus::Paused,
        ];
        let update = RunUpdate::new(RunStatus::Cancelled).with_error("cancelled by request");
        self.stop_run(run_id, &live, update, "cancelled").await
    }

    /// Pause a run: it is stored as `paused` and, if it is executing, its context is cancelled
    /// so it stops between steps. Completed steps stay journaled; [`resume`](Self::resume)
    /// re-executes it and replays them.
    pub async fn pause(&self, run_id: &str) -> Result<()> {
        let live = [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::WaitingInput,
            RunStatus::WaitingApproval,
        ];
        self.stop_run(run_id, &live, RunUpdate::new(RunStatus::Paused), "paused")
            .await
    }

    /// Store `update` if the run's status is one of `from`, then cancel its execution on this
    /// node (if any) so it stops between steps. `verb` names the change in the error.
    async fn stop_run(
        &self,
        run_id: &str,
        from: &[RunStatus],
        update: RunUpdate,
        verb: &str,
    ) -> Result<()> {
        if self
            .inner
            .store
            .transition(run_id, from, update)
            .await?
            .is_none()
        {
            let run = self.get(run_id).await?;
            return Err(Error::Workflow(format!(
                "run {run_id} cannot be {verb}: it is already {}",
                run.status
            )));
        }
        let token = self
            .inner
            .inflight
            .lock()
            .ok()
            .and_then(|m| m.get(run_id).cloned());
        if let Some(t) = token {
            t.cancel();
        }
        self.notify();
        Ok(())
    }

    /// Resume a paused run: it is queued again and re-executes from its journal.
    pub async fn resume(&self, run_id: &str) -> Result<()> {
        if self
            .inner
            .store
            .transition(
                run_id,
                &[RunStatus::Paused],
                RunUpdate::new(RunStatus::Queued),
            )
            .await?
            .is_none()
        {
            let run = self.get(run_id).await?;
            return Err(Error::Workflow(format!(
                "run {run_id} cannot be resumed: it is {}, not paused",
                run.status
            )));
        }
        self.dispatch(run_id.to_owned());
        Ok(())
    }

    /// Register a schedule. Its target must be registered and its input must match it (a
    /// schedule that could never start a run is refused, and nothing is stored). Fires are
    /// started by [`start_scheduler`](Self::start_scheduler). The name must not contain `:`.
    /// The overlap policies look at the schedule's latest run in the store, so they hold
    /// across nodes, including a node that registers the schedule later.
    pub fn register_schedule(&self, schedule: Schedule) -> Result<()> {
        if schedule.name.is_empty() || schedule.name.contains(':') {
            return Err(Error::InvalidRequest(format!(
                "schedule name `{}` must be non-empty and contain no `:` (it is part of every \
                 fire's idempotency key `schedule:<name>:<fire time>`)",
                schedule.name
            )));
        }
        let t = self
            .target(&schedule.target)
            .ok_or_else(|| self.unknown_target(&schedule.target))?;
        t.validate(&schedule.input)
            .map_err(|e| Error::InvalidRequest(format!("schedule `{}`: {e}", schedule.name)))?;
        let now = crate::model::now_ms();
        let from = match schedule.catch_up {
            CatchUp::Skip => now,
            CatchUp::Within(w) => {
                now.saturating_sub(i64::try_from(w.as_millis()).unwrap_or(i64::MAX))
            }
        };
        if let Ok(mut s) = self.inner.schedules.write() {
            s.insert(
                schedule.name.clone(),
                Arc::new(ScheduleState {
                    schedule,
                    checked_until: Mutex::new(from),
                    paused: AtomicBool::new(false),
                    pending: AtomicBool::new(false),
                }),
            );
        }
        Ok(())
    }

    fn schedule_state(&self, name: &str) -> Result<Arc<ScheduleState>> {
        self.inner
            .schedules
            .read()
            .ok()
            .and_then(|s| s.get(name).cloned())
            .ok_or_else(|| Error::InvalidRequest(format!("no schedule named `{name}`")))
    }

    /// Pause a schedule on every node: its fires are skipped until it is resumed. The pause
    /// is stored (key-value namespace [`SCHEDULES_NAMESPACE`]); it applies on this node at once
    /// and on the other nodes sharing the store within [`PAUSE_PROPAGATION`].
    pub async fn pause_schedule(&self, name: &str) -> Result<()> {
        let st = self.schedule_state(name)?;
        let state = json!({"paused": true, "since": crate::model::now_ms()});
        self.inner
            .store
            .kv_put(SCHEDULES_NAMESPACE, name, state, None)
            .await?;
        st.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Resume a paused schedule on every node (stored like [`pause_schedule`](Self::pause_schedule));
    /// fires that came while it was paused are skipped, not caught up.
    pub async fn resume_schedule(&self, name: &str) -> Result<()> {
        let st = self.schedule_state(name)?;
        let now = crate::model::now_ms();
        let state = json!({"paused": false, "since": now});
        self.inner
            .store
            .kv_put(SCHEDULES_NAMESPACE, name, state, None)
            .await?;
        resume_from(&st, now);
        Ok(())
    }

    /// Apply the stored pause state of the schedules (at most every [`PAUSE_PROPAGATION`]).
    async fn read_pauses(&self, states: &[Arc<ScheduleState>]) {
        {
            let Ok(mut last) = self.inner.pauses_read.lock() else {
                return;
            };
            if last.is_some_and(|t| t.elapsed() < PAUSE_PROPAGATION) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        for st in states {
            let name = &st.schedule.name;
            match self.inner.store.kv_get(SCHEDULES_NAMESPACE, name).await {
                Ok(Some(v)) => {
                    let paused = v.get("paused").and_then(Value::as_bool).unwrap_or(false);
                    let since = v.get("since").and_then(Value::as_i64).unwrap_or(0);
                    if paused {
                        st.paused.store(true, Ordering::SeqCst);
                    } else if st.paused.load(Ordering::SeqCst) {
                        resume_from(st, since);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "reading the schedule's pause state failed");
                }
            }
        }
    }

    /// Evaluate the schedules every `tick` and start the runs of their fires (stops at
    /// [`shutdown`](Self::shutdown)). Returns at once. A fire buffered by
    /// [`Overlap::BufferOne`] is also started as soon as a run of this process ends.
    pub fn start_scheduler(&self, tick: Duration) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let mut finished = this.inner.finished.subscribe();
            let mut next_tick = tokio::time::Instant::now();
            loop {
                if this.inner.stopping.load(Ordering::SeqCst) {
                    break;
                }
                if tokio::time::Instant::now() >= next_tick {
                    this.fire_due().await;
                    next_tick = tokio::time::Instant::now() + tick;
                } else {
                    this.start_buffered().await;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(next_tick) => {}
                    r = finished.changed() => if r.is_err() { break },
                    () = this.inner.polling.cancelled() => break,
                }
            }
        });
    }

    /// Start the buffered fires whose previous run has ended.
    async fn start_buffered(&self) -> usize {
        let states: Vec<Arc<ScheduleState>> = self
            .inner
            .schedules
            .read()
            .map(|s| {
                s.values()
                    .filter(|st| st.pending.load(Ordering::SeqCst))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut created = 0;
        for st in states {
            if st.paused.load(Ordering::SeqCst) {
                continue;
            }
            match self.buffer_one(&st, None).await {
                Ok(n) => created += n,
                Err(e) => {
                    tracing::warn!(schedule = %st.schedule.name, error = %e, "starting a buffered fire failed");
                }
            }
        }
        created
    }

    /// The run of the schedule's latest fire, whichever node started it (read from the
    /// store, so a node that joined late or missed fires sees the same run as the others).
    async fn latest_run(&self, st: &ScheduleState) -> Result<Option<RunRecord>> {
        self.inner
            .store
            .latest_run_with_key_prefix(&st.schedule.fire_key_prefix())
            .await
    }

    /// Whether the latest run started for the schedule is still unfinished.
    async fn last_unfinished(&self, st: &ScheduleState) -> Result<bool> {
        Ok(self
            .latest_run(st)
            .await?
            .is_some_and(|run| !run.status.is_terminal()))
    }

    /// `Overlap::BufferOne`, deterministic on every node: the fire buffered behind a run is
    /// the first fire time after the run was created and not after it ended (both stored), so
    /// every node derives the same successor and starts it under that fire's idempotency key.
    /// Follows the chain from the schedule's latest stored run to the run executing now, starting
    /// what is due; then starts `fire` if it came after the last run ended, or notes it as
    /// buffered if the last run is still running (fires in between are dropped). Returns how
    /// many runs this call created.
    async fn buffer_one(&self, st: &ScheduleState, fire: Option<i64>) -> Result<usize> {
        let mut created = 0;
        // Each round starts a successor created after the latest run; the bound only guards
        // against clocks going backwards.
        for _ in 0..64 {
            let Some(run) = self.latest_run(st).await? else {
                // No run yet: this fire is the schedule's first.
                if let Some(f) = fire
                    && self.start_fire(st, f).await?
                {
                    created += 1;
                }
                return Ok(created);
            };
            if !run.status.is_terminal() {
                if fire.is_some_and(|f| f > run.created_at) {
                    st.pending.store(true, Ordering::SeqCst);
                    tracing::info!(schedule = %st.schedule.name, ?fire, "previous run unfinished; fire buffered (or dropped if one is already buffered)");
                }
                return Ok(created);
            }
            st.pending.store(false, Ordering::SeqCst);
            let Some(next) = st
                .schedule
                .fires_between(run.created_at, run.updated_at)
                .first()
                .copied()
            else {
                // Nothing came while it ran: `fire` starts only if it came after it ended.
                if let Some(f) = fire
                    && f > run.updated_at
                    && self.start_fire(st, f).await?
                {
                    created += 1;
                }
                return Ok(created);
            };
            tracing::info!(schedule = %st.schedule.name, fire = next, "previous run ended; starting the buffered fire");
            if self.start_fire(st, next).await? {
                created += 1;
            }
            // The buffered fire's run is now the latest: follow the chain.
        }
        Ok(created)
    }

    /// Start the runs of every fire due now; returns how many runs this call created.
    pub async fn fire_due(&self) -> usize {
        let states: Vec<Arc<ScheduleState>> = self
            .inner
            .schedules
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        self.read_pauses(&states).await;
        let now = crate::model::now_ms();
        let mut created = 0;
        for st in states {
            if st.paused.load(Ordering::SeqCst) {
                continue;
            }
            if st.schedule.overlap == Overlap::BufferOne {
                match self.buffer_one(&st, None).await {
                    Ok(n) => created += n,
                    Err(e) => {
                        tracing::warn!(schedule = %st.schedule.name, error = %e, "starting a buffered fire failed");
                    }
                }
            }
            let from = st.checked_until.lock().map(|c| *c).unwrap_or(now);
            let fires = st.schedule.fires_between(from, now);
            if let Ok(mut c) = st.checked_until.lock() {
                *c = now.max(*c);
            }
            for fire in fires {
                match self.fire(&st, fire).await {
                    Ok(true) => created += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(schedule = %st.schedule.name, fire, error = %e, "schedule fire failed");
                    }
                }
            }
        }
        created
    }

    async fn fire(&self, st: &ScheduleState, fire: i64) -> Result<bool> {
        let s = &st.schedule;
        if s.overlap == Overlap::BufferOne {
            return Ok(self.buffer_one(st, Some(fire)).await? > 0);
        }
        if s.overlap == Overlap::Skip && self.last_unfinished(st).await? {
            tracing::info!(schedule = %s.name, fire, "previous run unfinished; fire skipped");
            return Ok(false);
        }
        self.start_fire(st, fire).await
    }

    /// Start the run of one fire (idempotent per (schedule, fire time)).
    async fn start_fire(&self, st: &ScheduleState, fire: i64) -> Result<bool> {
        let s = &st.schedule;
        let Some(t) = self.target(&s.target) else {
            return Err(self.unknown_target(&s.target));
        };
        let run = NewRun::new(&s.target, s.input.clone())
            .with_version(t.options.version)
            .with_idempotency_key(s.fire_key(fire));
        let created = self.create_and_dispatch(&t, run, None).await?;
        Ok(created.is_new())
    }

    /// Start a run of `target` whenever `event` is [emitted](Self::emit). The target must be
    /// registered.
    pub fn on_event(&self, event: impl Into<String>, target: &str) -> Result<()> {
        if self.target(target).is_none() {
            return Err(self.unknown_target(target));
        }
        if let Ok(mut s) = self.inner.subscriptions.write() {
            let subs = s.entry(event.into()).or_default();
            if !subs.iter().any(|t| t == target) {
                subs.push(target.to_owned());
            }
        }
        Ok(())
    }

    /// Emit an event (webhooks call this): start one run of every target subscribed to it,
    /// with `payload` as input, and return their ids. The payload is validated against every
    /// subscriber first, so a payload one of them rejects starts nothing. With an `event_id`,
    /// emitting the same event again (a retried webhook) starts nothing new and returns the
    /// same runs.
    pub async fn emit(
        &self,
        event: &str,
        payload: Value,
        event_id: Option<&str>,
    ) -> Result<Vec<String>> {
        let targets: Vec<String> = self
            .inner
            .subscriptions
            .read()
            .ok()
            .and_then(|s| s.get(event).cloned())
            .unwrap_or_default();
        for name in &targets {
            let t = self.target(name).ok_or_else(|| self.unknown_target(name))?;
            t.validate(&payload)
                .map_err(|e| Error::InvalidRequest(format!("event `{event}` for `{name}`: {e}")))?;
        }
        let mut ids = Vec::with_capacity(targets.len());
        for name in &targets {
            let mut options = StartOptions::new();
            if let Some(id) = event_id {
                options = options.with_idempotency_key(format!("event:{event}:{id}:{name}"));
            }
            ids.push(self.start_run(name, payload.clone(), options).await?);
        }
        Ok(ids)
    }

    /// Re-run a finished run offline from its journal with the code registered now: every
    /// model completion, tool result, step and signal comes from the recording, so no
    /// provider, tool or MCP server is called and nothing is stored. Reports where the current
    /// code departs from the recording (a step it asks for that was not recorded, a recorded
    /// step it skips, a different output).
    ///
    /// Not detected: a change that makes the same calls in the same order with different
    /// requests (e.g. changed agent instructions), because the journal records responses,
    /// not requests.
    pub async fn replay(&self, run_id: &str) -> Result<ReplayReport> {
        let run = self.get(run_id).await?;
        let target = self
            .target(&run.target)
            .ok_or_else(|| self.unknown_target(&run.target))?;
        let prices = self
            .inner
            .prices
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_else(|_| PriceTable::shared_default());
        let journal = Arc::new(
            DurableJournal::load(
                Arc::clone(&self.inner.store),
                run_id,
                Redactor::none(),
                Arc::clone(&prices),
            )
            .await?
            .replay_only(),
        );
        let ctx = RunContext::new()
            .with_run_id(run_id)
            .with_journal(journal.clone())
            .with_prices(prices);
        let wctx = WorkflowContext::new(
            ctx,
            journal.clone(),
            Arc::clone(&self.inner.store),
            "replay",
        );
        let result = target.execute(&wctx, run.input.clone()).await;
        let mut divergences = journal.divergences();
        for key in journal.unused_keys() {
            divergences.push(format!("recorded step `{key}` was not taken"));
        }
        let (output, error) = match result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e.to_string())),
        };
        if run.status == RunStatus::Succeeded && output.is_some() && output != run.output {
            divergences.push("the output differs from the recorded output".to_owned());
        }
        Ok(ReplayReport {
            run_id: run_id.to_owned(),
            output,
            error,
            replayed: journal.replayed_keys(),
            divergences,
        })
    }

    /// Deliver a signal: it is stored (redacted), and a run waiting for signals is queued
    /// again and resumes from its journal. Works for a run that waited in a process that has
    /// since exited.
    pub async fn signal(&self, run_id: &str, name: &str, mut payload: Value) -> Result<()> {
        let run = self.get(run_id).await?;
        if run.status.is_terminal() {
            return Err(Error::Workflow(format!(
                "run {run_id} cannot take signal `{name}`: it is already {}",
                run.status
            )));
        }
        if name == APPROVAL_SIGNAL {
            // A malformed decision is refused here, before anything is stored.
            decode_approval(run_id, payload.clone())?;
        }
        if let Ok(r) = self.inner.redactor.read() {
            r.apply(&mut payload);
        }
        self.inner.store.send_signal(run_id, name, payload).await?;
        let resumed = self
            .inner
            .store
            .transition(
                run_id,
                &[RunStatus::WaitingInput, RunStatus::WaitingApproval],
                RunUpdate::new(RunStatus::Queued),
            )
            .await?;
        if resumed.is_some() {
            self.dispatch(run_id.to_owned());
        }
        Ok(())
    }

    /// Resume what a previous process left: runs `queued` or `running` (orphaned by a crash)
    /// re-execute, replaying their journals; runs parked by a durable sleep re-execute when
    /// their wake-up time comes; runs waiting for a signal re-check their queued signals.
    /// Returns how many runs were dispatched (parked runs included). Call once after registering targets.
    ///
    /// On a store of one process (memory, SQLite) every `running` run is orphaned and is
    /// resumed at once. On a shared store (PostgreSQL) a `running` run is resumed only once
    /// its lease has expired; use [`start_polling`](Self::start_polling) to pick those up.
    pub async fn recover(&self) -> Result<usize> {
        if !self.inner.store.is_shared() {
            // One process per store: whatever is `running` was left by a dead process.
            for run in self
                .inner
                .store
                .list_runs(&[RunStatus::Running], usize::MAX >> 1)
                .await?
            {
                self.inner
                    .store
                    .transition(
                        &run.id,
                        &[RunStatus::Running],
                        RunUpdate::new(RunStatus::Queued),
                    )
                    .await?;
            }
        }
        let runs = self
            .inner
            .store
            .list_runs(
                &[
                    RunStatus::Running,
                    RunStatus::Queued,
                    RunStatus::WaitingInput,
                    RunStatus::WaitingApproval,
                ],
                usize::MAX >> 1,
            )
            .await?;
        let mut n = 0;
        let now = crate::model::now_ms();
        for run in runs {
            if run.status == RunStatus::Queued
                && let Some(wake_at) = run.wake_at.filter(|w| *w > now)
            {
                // Parked by a durable sleep: resumed when it is due.
                self.wake_later(run.id, wake_at);
                n += 1;
                continue;
            }
            if matches!(
                run.status,
                RunStatus::WaitingInput | RunStatus::WaitingApproval
            ) {
                let requeued = self
                    .inner
                    .store
                    .transition(&run.id, &[run.status], RunUpdate::new(RunStatus::Queued))
                    .await?;
                if requeued.is_none() {
                    continue;
                }
            }
            self.dispatch(run.id);
            n += 1;
        }
        Ok(n)
    }

    /// Stop claiming runs, wait up to `grace` for executing runs to finish, then cancel the
    /// rest and release them (stored as `queued` again, so the next start resumes them).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.tasks.close();
        // Stop polling at once; the heartbeat goes on until the runs are finished or released.
        self.inner.polling.cancel();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            self.inner.abort.cancel();
            self.inner.tasks.wait().await;
        }
        self.inner.background.cancel();
    }

    /// Dispatch a run parked by a durable sleep once its wake-up time has come (unless it
    /// changed meanwhile: cancelled, paused, claimed by another node).
    fn wake_later(&self, run_id: String, wake_at: i64) {
        let inner = Arc::downgrade(&self.inner);
        let stop = self.inner.polling.clone();
        tokio::spawn(async move {
            let mut wake_at = wake_at;
            loop {
                let left = u64::try_from(wake_at.saturating_sub(crate::model::now_ms()))
                    .unwrap_or(0)
                    .saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(left)) => {}
                    () = stop.cancelled() => return,
                }
                let Some(inner) = inner.upgrade() else { return };
                let this = Runtime { inner };
                match this.inner.store.get_run(&run_id).await {
                    Ok(Some(run)) if run.status == RunStatus::Queued => match run.wake_at {
                        Some(w) if w > crate::model::now_ms() => wake_at = w,
                        _ => {
                            this.dispatch(run_id);
                            return;
                        }
                    },
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(run_id = %run_id, error = %e, "waking a sleeping run failed; polling or recovery will pick it up");
                        return;
                    }
                }
            }
        });
    }

    fn notify(&self) {
        self.inner.finished.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn dispatch(&self, run_id: String) {
        self.dispatch_run(run_id, Hint::None);
    }

    /// Hand the finished record to a `run_sync` waiting for it; with `None`, let the waiter
    /// fall back to reading the store.
    fn settle(&self, run_id: &str, record: Option<RunRecord>) {
        let waiter = self
            .inner
            .waiters
            .lock()
            .ok()
            .and_then(|mut m| m.remove(run_id));
        if let (Some(w), Some(r)) = (waiter, record) {
            let _ = w.send(r);
        }
    }

    fn dispatch_run(&self, run_id: String, hint: Hint) {
        if self.inner.stopping.load(Ordering::SeqCst) {
            if let Hint::Owned(run, _) | Hint::Claimed(run) = hint {
                // Stored claimed by this node but never started: release it for the next
                // process (tracked, so `shutdown` waits for the release).
                let this = self.clone();
                self.inner.tasks.spawn(async move {
                    let fence = run.owner.clone().unwrap_or_default();
                    let update = RunUpdate::new(RunStatus::Queued).with_owner_fence(fence);
                    if let Err(e) = this
                        .inner
                        .store
                        .transition(&run_id, &[RunStatus::Running], update)
                        .await
                    {
                        tracing::warn!(run_id = %run_id, error = %e, "releasing a run at shutdown failed; its lease will expire");
                    }
                    this.settle(&run_id, None);
                });
                return;
            }
            self.settle(&run_id, None);
            return;
        }
        self.start_heartbeat();
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let mut hint = hint;
            loop {
                let outcome = this
                    .drive(&run_id, std::mem::replace(&mut hint, Hint::None))
                    .await;
                this.notify();
                match outcome {
                    Ok(Outcome::Requeue) => {
                        if this.inner.stopping.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                    Ok(Outcome::Done) => break,
                    Err(e) => {
                        tracing::error!(run_id = %run_id, error = %e, "run execution failed in the store");
                        break;
                    }
                }
            }
            this.settle(&run_id, None);
        });
    }

    async fn drive(&self, run_id: &str, hint: Hint) -> Result<Outcome> {
        let token = {
            let Ok(mut m) = self.inner.inflight.lock() else {
                return Ok(Outcome::Done);
            };
            if m.contains_key(run_id) {
                if let Ok(mut r) = self.inner.rerun.lock() {
                    r.insert(run_id.to_owned());
                }
                return Ok(Outcome::Done);
            }
            let t = self.inner.abort.child_token();
            m.insert(run_id.to_owned(), t.clone());
            t
        };
        let result = self.execute(run_id, hint, &token).await;
        if let Ok(mut m) = self.inner.inflight.lock() {
            m.remove(run_id);
        }
        let again = self
            .inner
            .rerun
            .lock()
            .map(|mut r| r.remove(run_id))
            .unwrap_or(false);
        match result {
            Ok(Outcome::Done) if again => Ok(Outcome::Requeue),
            other => other,
        }
    }

    async fn execute(
        &self,
        run_id: &str,
        hint: Hint,
        token: &CancellationToken,
    ) -> Result<Outcome> {
        let store = &self.inner.store;
        let (run, claimed, permit) = match hint {
            Hint::Owned(run, permit) => (run.clone(), Some(run), Some(permit)),
            Hint::Claimed(run) => (run.clone(), Some(run), None),
            Hint::Known(run) => (run, None, None),
            Hint::None => match store.get_run(run_id).await? {
                Some(run) => (run, None, None),
                None => return Ok(Outcome::Done),
            },
        };
        let Some(target) = self.target(&run.target) else {
            let err = self.unknown_target(&run.target).to_string();
            store
                .transition(
                    run_id,
                    &[RunStatus::Queued, RunStatus::Running],
                    RunUpdate::new(RunStatus::Failed).with_error(err),
                )
                .await?;
            return Ok(Outcome::Done);
        };
        let _permit = match permit {
            Some(p) => p,
            None => {
                let permits = Arc::clone(&target.permits);
                tokio::select! {
                    p = permits.acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => return Ok(Outcome::Done),
                    },
                    () = token.cancelled() => return Ok(Outcome::Done),
                }
            }
        };
        if self.inner.stopping.load(Ordering::SeqCst) && self.inner.abort.is_cancelled() {
            if let Some(run) = &claimed {
                // Claimed but not started: release it for the next process.
                store
                    .transition(
                        run_id,
                        &[RunStatus::Running],
                        RunUpdate::new(RunStatus::Queued)
                            .with_owner_fence(run.owner.clone().unwrap_or_default()),
                    )
                    .await?;
            }
            return Ok(Outcome::Done);
        }
        let claimed = match claimed {
            Some(run) => Some(run),
            None => {
                store
                    .claim(run_id, &self.node_id(), self.lease_until())
                    .await?
            }
        };
        let Some(run) = claimed else {
            return Ok(Outcome::Done);
        };
        let node = run.owner.clone().unwrap_or_else(|| self.node_id());
        let redactor = self
            .inner
            .redactor
            .read()
            .map(|r| r.clone())
            .unwrap_or_default();
        let prices = self
            .inner
            .prices
            .read()
            .map(|p| Arc::clone(&p))
            .unwrap_or_else(|_| PriceTable::shared_default());
        // Journal entries are only written while a run executes, so a first attempt has none.
        let journal = Arc::new(if run.attempts <= 1 {
            DurableJournal::empty(Arc::clone(store), run_id, redactor, Arc::clone(&prices))
        } else {
            DurableJournal::load(Arc::clone(store), run_id, redactor, Arc::clone(&prices)).await?
        });
        let policy = &target.options.retry;
        let mut attempt = 1u32;
        loop {
            let mut ctx = RunContext::new()
                .with_run_id(run_id)
                .with_cancellation(token.clone())
                .with_journal(journal.clone())
                .with_prices(Arc::clone(&prices));
            if let Some(t) = target.options.timeout {
                ctx = ctx.with_timeout(t);
            }
            if let Some(b) = target.options.budget {
                ctx = ctx.with_budget(b);
            }
            let wctx = WorkflowContext::new(ctx.clone(), journal.clone(), Arc::clone(store), &node);
            let result = target.execute(&wctx, run.input.clone()).await;
            let totals = ctx.totals();
            let err = match result {
                Ok(output) => {
                    let done = store
                        .transition(
                            run_id,
                            &[RunStatus::Running],
                            RunUpdate::new(RunStatus::Succeeded)
                                .with_owner_fence(&node)
                                .with_output(output)
                                .with_usage(totals.usage, totals.cost_usd),
                        )
                        .await?;
                    self.settle(run_id, done);
                    return Ok(Outcome::Done);
                }
                Err(e) => e,
            };
            if let Some(wake_at) = wctx.parked_until() {
                // A long durable sleep: the run is stored queued until `wake_at`; free the task
                // and its concurrency slot, and come back then.
                self.wake_later(run_id.to_owned(), wake_at);
                return Ok(Outcome::Done);
            }
            if let Some(name) = wctx.waiting_on() {
                // A signal may have arrived between our check and the status change.
                if store.has_signal(run_id, &name).await?
                    && store
                        .transition(
                            run_id,
                            &[RunStatus::WaitingInput, RunStatus::WaitingApproval],
                            RunUpdate::new(RunStatus::Queued),
                        )
                        .await?
                        .is_some()
                {
                    return Ok(Outcome::Requeue);
                }
                return Ok(Outcome::Done);
            }
            if token.is_cancelled() {
                if self.inner.abort.is_cancelled() {
                    // Shutdown: release the run for the next process.
                    store
                        .transition(
                            run_id,
                            &[RunStatus::Running],
                            RunUpdate::new(RunStatus::Queued).with_owner_fence(&node),
                        )
                        .await?;
                }
                return Ok(Outcome::Done);
            }
            if attempt < policy.max_attempts && (policy.retry_if)(&err) {
                let wait = policy.backoff(attempt);
                tracing::warn!(run_id, attempt, error = %err, ?wait, "run attempt failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = token.cancelled() => continue,
                }
                attempt += 1;
                if store
                    .transition(
                        run_id,
                        &[RunStatus::Running],
                        RunUpdate::new(RunStatus::Running)
                            .with_attempt()
                            .with_owner_fence(&node),
                    )
                    .await?
                    .is_none()
                {
                    return Ok(Outcome::Done);
                }
                continue;
            }
            let done = store
                .transition(
                    run_id,
                    &[RunStatus::Running],
                    RunUpdate::new(RunStatus::Failed)
                        .with_owner_fence(&node)
                        .with_error(err.to_string())
                        .with_usage(totals.usage, totals.cost_usd),
                )
                .await?;
            self.settle(run_id, done);
            return Ok(Outcome::Done);
        }
    }

    /// The run's journal: every recorded model completion, tool result, step, timer and
    /// signal, in order.
    pub async fn journal(&self, run_id: &str) -> Result<Vec<crate::model::JournalEntry>> {
        self.inner.store.journal(run_id).await
    }
}

fn info(run: RunRecord) -> RunInfo {
    let mut info = RunInfo::new(run.id, run.target, run.status)
        .with_timestamps(run.created_at, run.updated_at);
    if let Some(o) = run.output {
        info = info.with_output(o);
    }
    if let Some(e) = run.error {
        info = info.with_error(e);
    }
    info
}

#[async_trait]
impl WorkflowHost for Runtime {
    async fn list_workflows(&self) -> Result<Vec<WorkflowInfo>> {
        let mut list: Vec<WorkflowInfo> = self
            .inner
            .targets
            .read()
            .map(|t| t.values().map(|t| t.info()).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    async fn start(&self, workflow: &str, input: Value, options: StartOptions) -> Result<String> {
        self.start_run(workflow, input, options).await
    }

    async fn status(&self, run_id: &str) -> Result<RunInfo> {
        self.get(run_id).await.map(info)
    }

    async fn signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()> {
        Runtime::signal(self, run_id, name, payload).await
    }

    async fn cancel(&self, run_id: &str) -> Result<()> {
        Runtime::cancel(self, run_id).await
    }
}
