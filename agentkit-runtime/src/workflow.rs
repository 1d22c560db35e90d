//! Code-defined workflows: the [`Workflow`] trait and the [`WorkflowContext`] it runs with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use agentkit_core::{
    ApprovalDecision, ApprovalHandler, ApprovalRequest, Error, HumanInputHandler,
    HumanInputRequest, HumanInputResponse, Result, RunContext, RunStatus,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::journal::DurableJournal;
use crate::model::{JournalEntry, RunUpdate, now_ms};
use crate::store::Store;
use crate::sync::lock;

/// A code-defined, durable workflow.
///
/// `run` is re-executed on resume (after a crash, a retry or a signal): everything with a side
/// effect must go through [`WorkflowContext::step`] (or an agent, whose model and tool calls
/// are journaled), so completed steps are replayed from the journal instead of running again.
/// Code between steps must be deterministic.
#[async_trait]
pub trait Workflow: Send + Sync + 'static {
    /// The input, validated when a run is started (a mismatch stores nothing).
    type Input: DeserializeOwned + JsonSchema + Send + 'static;
    /// The output, stored when the run succeeds.
    type Output: Serialize + Send + 'static;

    /// The name runs are started with.
    fn name(&self) -> &str;

    /// What it does (listed by [`WorkflowHost::list_workflows`](agentkit_core::WorkflowHost)).
    fn description(&self) -> &str {
        ""
    }

    /// Run the workflow.
    async fn run(&self, ctx: &WorkflowContext, input: Self::Input) -> Result<Self::Output>;
}

/// Type-erased workflow the executor stores.
#[async_trait]
pub(crate) trait DynWorkflow: Send + Sync {
    fn validate(&self, input: &Value) -> Result<()>;
    fn input_schema(&self) -> Value;
    fn description(&self) -> String;
    async fn run_json(&self, ctx: &WorkflowContext, input: Value) -> Result<Value>;
}

pub(crate) struct Erased<W>(pub(crate) W);

fn parse<T: DeserializeOwned>(workflow: &str, input: &Value) -> Result<T> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        Error::InvalidRequest(format!(
            "input of workflow `{workflow}` does not match its input type at `{}`: {}",
            e.path(),
            e.inner()
        ))
    })
}

#[async_trait]
impl<W: Workflow> DynWorkflow for Erased<W> {
    fn validate(&self, input: &Value) -> Result<()> {
        parse::<W::Input>(self.0.name(), input).map(|_| ())
    }

    fn input_schema(&self) -> Value {
        serde_json::to_value(schemars::schema_for!(W::Input)).unwrap_or(Value::Null)
    }

    fn description(&self) -> String {
        self.0.description().to_owned()
    }

    async fn run_json(&self, ctx: &WorkflowContext, input: Value) -> Result<Value> {
        let input = parse::<W::Input>(self.0.name(), &input)?;
        let output = self.0.run(ctx, input).await?;
        serde_json::to_value(output).map_err(|e| {
            Error::json(
                format!("encoding the output of workflow `{}`", self.0.name()),
                e,
            )
        })
    }
}

/// Sleeps with at least this much left release the run's task (see
/// [`WorkflowContext::sleep`]).
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// The signal that answers an agent's request for human input.
pub const HUMAN_INPUT_SIGNAL: &str = "human_input";

/// The run-wide signal that decides a tool call waiting for approval (whichever waiting call
/// asks first takes it; [`approval_signal_for`] addresses one call): its payload is an
/// [`ApprovalDecision`] as JSON, `{"decision": "approved"}` or
/// `{"decision": "denied", "reason": "..."}`.
pub const APPROVAL_SIGNAL: &str = "approval";

fn upgrade(inner: &Weak<Inner>) -> Result<WorkflowContext> {
    inner
        .upgrade()
        .map(|inner| WorkflowContext { inner })
        .ok_or_else(|| Error::Workflow("the run's execution has ended".into()))
}

/// Answers an agent loop's human-input requests with the run's `human_input` signal: the run
/// persists as `waiting_input`, frees its task, and resumes when the signal is delivered.
struct SignalHumanInput(Weak<Inner>);

#[async_trait]
impl HumanInputHandler for SignalHumanInput {
    async fn ask(
        &self,
        _request: HumanInputRequest,
        ctx: &RunContext,
    ) -> Result<HumanInputResponse> {
        let wctx = upgrade(&self.0)?;
        let key = match ctx.tool_call_key() {
            Some(call) => format!("signal/{HUMAN_INPUT_SIGNAL}/{call}"),
            None => wctx.key("signal", HUMAN_INPUT_SIGNAL),
        };
        let v = wctx
            .wait_signal(
                &[HUMAN_INPUT_SIGNAL.to_owned()],
                key,
                RunStatus::WaitingInput,
                ctx.tool_call_key(),
            )
            .await?;
        wctx.decode_human_input(v)
    }
}

/// Decides the agent loop's tool approvals with the run's approval signals: the run persists
/// as `waiting_approval`, frees its task, and resumes when a decision is delivered. A call
/// takes the decision addressed to it ([`approval_signal_for`] its call id) first, else the
/// oldest run-wide [`APPROVAL_SIGNAL`]. Each tool call's decision is journaled under its own
/// key (`signal/approval/<tool call key>`), so a resumed run replays it and never asks twice.
struct SignalApprovals(Weak<Inner>);

#[async_trait]
impl ApprovalHandler for SignalApprovals {
    async fn approve(
        &self,
        request: ApprovalRequest,
        ctx: &RunContext,
    ) -> Result<ApprovalDecision> {
        let wctx = upgrade(&self.0)?;
        let key = match ctx.tool_call_key() {
            Some(call) => format!("signal/{APPROVAL_SIGNAL}/{call}"),
            None => wctx.key("signal", APPROVAL_SIGNAL),
        };
        let mut names = Vec::with_capacity(2);
        if let Some(id) = &request.call_id {
            names.push(approval_signal_for(id));
        }
        names.push(APPROVAL_SIGNAL.to_owned());
        let v = wctx
            .wait_signal(&names, key, RunStatus::WaitingApproval, ctx.tool_call_key())
            .await?;
        decode_approval(wctx.run_id(), v)
    }
}

/// The signal that decides only the tool call `call_id` (the model's id of the call, as the
/// approval queue lists it): `approval/<call_id>`. Its payload is an [`ApprovalDecision`]
/// like [`APPROVAL_SIGNAL`]'s. Use it when several calls of a run wait at once.
#[must_use]
pub fn approval_signal_for(call_id: &str) -> String {
    format!("{APPROVAL_SIGNAL}/{call_id}")
}

/// Whether signal `name` carries an approval decision ([`APPROVAL_SIGNAL`] or
/// [`approval_signal_for`] a call).
pub(crate) fn is_approval_signal(name: &str) -> bool {
    name == APPROVAL_SIGNAL
        || name
            .strip_prefix(APPROVAL_SIGNAL)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Parse an `approval` signal payload.
pub(crate) fn decode_approval(run_id: &str, v: Value) -> Result<ApprovalDecision> {
    serde_json::from_value(v).map_err(|e| {
        Error::InvalidRequest(format!(
            "signal `{APPROVAL_SIGNAL}` of run {run_id} must be {{\"decision\": \"approved\"}} or \
             {{\"decision\": \"denied\", \"reason\": \"...\"}}: {e}"
        ))
    })
}

struct Inner {
    run: RunContext,
    journal: Arc<DurableJournal>,
    store: Arc<dyn Store>,
    counters: Mutex<HashMap<String, u32>>,
    /// The signals this execution stopped to wait for (any of them resumes it).
    waiting: Mutex<Vec<String>>,
    /// The status and signal names stored when this execution suspended the run.
    stored_wait: Mutex<Option<(RunStatus, Vec<String>)>>,
    parked: Mutex<Option<i64>>,
    owner: String,
}

/// What a workflow run gets: journaled steps, durable timers and signals, and the
/// [`RunContext`] to pass to agents (whose model and tool calls are journaled too).
#[derive(Clone)]
pub struct WorkflowContext {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkflowContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowContext")
            .field("run_id", &self.run_id())
            .finish_non_exhaustive()
    }
}

impl WorkflowContext {
    /// A context for one execution of a run. The run context gets signal-backed human-input
    /// and approval handlers, so agents called with it wait durably.
    pub(crate) fn new(
        run: RunContext,
        journal: Arc<DurableJournal>,
        store: Arc<dyn Store>,
        owner: &str,
    ) -> Self {
        Self {
            inner: Arc::new_cyclic(|weak: &Weak<Inner>| Inner {
                run: run
                    .with_human_input(Arc::new(SignalHumanInput(weak.clone())))
                    .with_approvals(Arc::new(SignalApprovals(weak.clone()))),
                journal,
                store,
                counters: Mutex::default(),
                waiting: Mutex::default(),
                stored_wait: Mutex::default(),
                parked: Mutex::default(),
                owner: owner.to_owned(),
            }),
        }
    }

    /// The run id.
    #[must_use]
    pub fn run_id(&self) -> &str {
        self.inner.run.run_id()
    }

    /// The run's context: pass it to `AugmentedLlm::generate` so agent calls are journaled,
    /// cancelled and budgeted with the run.
    #[must_use]
    pub fn run_context(&self) -> &RunContext {
        &self.inner.run
    }

    /// The journal key of the next `prefix/name` (a repeated name gets `#2`, `#3`, ...).
    fn key(&self, prefix: &str, name: &str) -> String {
        let base = format!("{prefix}/{name}");
        let n = {
            let mut c = lock(&self.inner.counters);
            let n = c.entry(base.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        if n == 1 { base } else { format!("{base}#{n}") }
    }

    /// Run `fut` as a journaled step named `name`: executed once, replayed afterwards.
    /// Stops early when the run is cancelled or passes its deadline.
    pub async fn step<T, F>(&self, name: &str, fut: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send,
        F: Future<Output = Result<T>> + Send,
    {
        let key = self.key("step", name);
        let run = &self.inner.run;
        run.guard(&format!("step `{name}`"), run.step(&key, fut))
            .await
    }

    /// A durable timer: the wake-up time is journaled, so after a restart the run sleeps only
    /// what is left.
    ///
    /// A sleep of [`PARK_AFTER`] (1 s) or more **releases the run's task**: the run is
    /// stored as `queued` with its wake-up time, this execution ends (this returns an error
    /// that the executor recognises) and the run's concurrency slot is free. When the time
    /// comes the run is claimed again (by this process's timer, by
    /// [`Runtime::start_polling`](crate::Runtime::start_polling) on any node, or by
    /// [`Runtime::recover`](crate::Runtime::recover) after a restart) and re-executes,
    /// replaying its journaled steps. Shorter sleeps keep the task: cheaper than a store round
    /// trip and a replay. In an offline [`Runtime::replay`](crate::Runtime::replay) nothing
    /// sleeps.
    pub async fn sleep(&self, duration: Duration) -> Result<()> {
        let key = self.key("sleep", "timer");
        let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let run = &self.inner.run;
        let wake_at: i64 = run
            .step(&key, async move { Ok(now_ms().saturating_add(ms)) })
            .await?;
        if self.inner.journal.is_replay_only() {
            return Ok(());
        }
        let left = u64::try_from(wake_at.saturating_sub(now_ms())).unwrap_or(0);
        if left > 0 && duration >= PARK_AFTER {
            run.check()?;
            *lock(&self.inner.parked) = Some(wake_at);
            self.inner.journal.suspend(
                &format!("sleeps until {wake_at} (ms since epoch); it is parked and resumes then"),
                None,
            );
            self.inner
                .store
                .transition(
                    self.run_id(),
                    &[RunStatus::Running],
                    RunUpdate::new(RunStatus::Queued)
                        .with_wake_at(wake_at)
                        .with_owner_fence(&self.inner.owner),
                )
                .await?;
            return Err(Error::Workflow(format!(
                "run {} sleeps until {wake_at} (ms since epoch); it is parked and resumes then",
                self.run_id()
            )));
        }
        if left > 0 {
            run.guard("durable sleep", async {
                tokio::time::sleep(Duration::from_millis(left)).await;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// When this execution parked the run to sleep, the wake-up time.
    pub(crate) fn parked_until(&self) -> Option<i64> {
        *lock(&self.inner.parked)
    }

    /// Wait for the signal `name` (see [`Runtime::signal`](crate::Runtime::signal)).
    ///
    /// A signal already delivered to this point of the run is replayed from the journal. A
    /// queued signal is delivered (and journaled) at once. Otherwise the run is persisted as
    /// `waiting_input` and its task ends: this returns an error that ends the current
    /// execution, and the run re-executes from its journal when the signal arrives, in this
    /// process or after a restart.
    pub async fn wait_for_signal<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let key = self.key("signal", name);
        let v = self
            .wait_signal(&[name.to_owned()], key, RunStatus::WaitingInput, None)
            .await?;
        serde_json::from_value(v).map_err(|e| {
            Error::InvalidRequest(format!(
                "signal `{name}` of run {} has an unexpected payload: {e}",
                self.run_id()
            ))
        })
    }

    /// Wait for an [`APPROVAL_SIGNAL`] like [`wait_for_signal`](Self::wait_for_signal), with
    /// the run persisted as `waiting_approval` meanwhile, and decode its decision.
    pub async fn wait_for_approval(&self) -> Result<ApprovalDecision> {
        let key = self.key("signal", APPROVAL_SIGNAL);
        let v = self
            .wait_signal(
                &[APPROVAL_SIGNAL.to_owned()],
                key,
                RunStatus::WaitingApproval,
                None,
            )
            .await?;
        decode_approval(self.run_id(), v)
    }

    /// Deliver the first queued of signals `names` (in that order of preference) to journal
    /// key `key`, or persist the run as `status` and end the execution. `step`: the tool call
    /// that waits (only its result is held back).
    async fn wait_signal(
        &self,
        names: &[String],
        key: String,
        status: RunStatus,
        step: Option<&str>,
    ) -> Result<Value> {
        let journal = &self.inner.journal;
        if let Some(v) = journal.replay(&key) {
            if self.releases_unjournaled(status, step, &key, &v) {
                // Delivered to an earlier execution, which ended before the call it released
                // ran: the call passes the gate again, so a cancel answered since this
                // execution claimed the run stops it here (see `take_signal_fenced` below).
                self.fence(
                    self.inner
                        .store
                        .fence_replayed_signal(self.run_id(), &self.inner.owner)
                        .await,
                )?;
                journal.owner_confirmed();
            }
            return Ok(v);
        }
        if journal.is_replay_only() {
            return Err(journal.diverged(format!("signal `{key}` is not in the recording")));
        }
        self.inner.run.check()?;
        for name in names {
            let entry = JournalEntry::new(self.run_id(), journal.next_seq(), &key, Value::Null);
            // The gate of what the decision releases (an approved tool call): delivered only
            // while the run is still executed here, atomically with the check and serialised
            // against a cancel from any node. A cancel answered before it stops the call
            // here; one answered after it finds the call released.
            let taken = self.fence(
                self.inner
                    .store
                    .take_signal_fenced(self.run_id(), name, entry, &self.inner.owner)
                    .await,
            )?;
            if let Some(v) = taken {
                journal.note_appended(&key, v.clone());
                journal.owner_confirmed();
                return Ok(v);
            }
        }
        let name = names.first().map_or("", String::as_str);
        let waiting = {
            let mut waiting = lock(&self.inner.waiting);
            for n in names {
                if !waiting.contains(n) {
                    waiting.push(n.clone());
                }
            }
            waiting.clone()
        };
        journal.suspend(
            &format!("is waiting for signal `{name}`; it resumes when the signal is delivered"),
            step,
        );
        // The first wait of this execution stores the run as waiting, with what it waits for
        // (a call waiting beside it finds the run no longer `running`: the executor stores the
        // complete set when the execution ends, see `stored_wait`).
        let stored = self
            .inner
            .store
            .transition(
                self.run_id(),
                &[RunStatus::Running],
                RunUpdate::new(status)
                    .with_owner_fence(&self.inner.owner)
                    .with_waiting_for(waiting.iter().cloned()),
            )
            .await?;
        if let Some(run) = stored {
            *lock(&self.inner.stored_wait) = Some((run.status, waiting));
        }
        Err(Error::Workflow(format!(
            "run {} is waiting for signal `{name}`; it resumes when the signal is delivered",
            self.run_id()
        )))
    }

    /// The answer of a fenced store call: a run no longer live under this execution stops it.
    fn fence<T>(&self, answer: Result<T>) -> Result<T> {
        match answer {
            Err(Error::Cancelled { .. }) => Err(self.inner.journal.fenced_out(None)),
            other => other,
        }
    }

    /// Whether the signal `key` replayed from the journal (`value`) releases an effect that
    /// has not been journaled yet, so it must pass the gate again: an approval (a denial
    /// releases nothing) of a tool call (`step`: its result is not journaled, or it would
    /// have replayed without asking), or of the workflow's own code when no entry follows
    /// it in the journal. Nothing is released in an offline replay.
    fn releases_unjournaled(
        &self,
        status: RunStatus,
        step: Option<&str>,
        key: &str,
        value: &Value,
    ) -> bool {
        let journal = &self.inner.journal;
        status == RunStatus::WaitingApproval
            && !journal.is_replay_only()
            && matches!(
                decode_approval(self.run_id(), value.clone()),
                Ok(ApprovalDecision::Approved)
            )
            && (step.is_some() || !journal.recorded_after(key))
    }

    /// Wait for the `human_input` signal and decode it as a [`HumanInputResponse`]: its
    /// payload is that type's JSON (`{"action": "answer", "text": ..}`) or a plain string.
    pub async fn wait_for_human_input(&self) -> Result<HumanInputResponse> {
        let v: Value = self.wait_for_signal(HUMAN_INPUT_SIGNAL).await?;
        self.decode_human_input(v)
    }

    fn decode_human_input(&self, v: Value) -> Result<HumanInputResponse> {
        match v {
            Value::String(s) => Ok(HumanInputResponse::text(s)),
            other => serde_json::from_value(other).map_err(|e| {
                Error::InvalidRequest(format!(
                    "signal `{HUMAN_INPUT_SIGNAL}` of run {} must be a string or a human-input \
                     response ({{\"action\": \"answer\", \"text\": ..}}): {e}",
                    self.run_id()
                ))
            }),
        }
    }

    /// The signals this execution stopped to wait for (empty if it did not wait).
    pub(crate) fn waiting_on(&self) -> Vec<String> {
        lock(&self.inner.waiting).clone()
    }

    /// The status and signal names stored when this execution suspended the run (`None` if
    /// it did not, e.g. the run was paused or cancelled meanwhile). Tool calls that wait beside
    /// the first may add names after it: compare with [`waiting_on`](Self::waiting_on).
    pub(crate) fn stored_wait(&self) -> Option<(RunStatus, Vec<String>)> {
        lock(&self.inner.stored_wait).clone()
    }

    /// The run's journal (which keys this execution replayed and which it executed).
    #[must_use]
    pub fn journal(&self) -> &Arc<DurableJournal> {
        &self.inner.journal
    }
}
