//! [`DurableJournal`]: core's [`Journal`] over a [`Store`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agentkit_core::{Journal, PriceTable, Result, RunStatus, Usage};
use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::model::{EntryKind, JournalEntry};
use crate::redact::Redactor;
use crate::store::Store;
use crate::sync::lock;

#[derive(Debug, Default)]
struct State {
    recorded: HashMap<String, Value>,
    next_seq: u64,
    replayed: Vec<String>,
    executed: Vec<String>,
    suspended: Option<String>,
    /// Steps (tool calls) that stopped to wait for a signal, with why.
    suspended_steps: HashMap<String, String>,
    order: Vec<String>,
    divergences: Vec<String>,
}

/// A run's durable journal: a step already in the store returns its recorded result without
/// executing; a new step executes once, is redacted, and is appended (with its sequence
/// number, latency, and for model completions its usage and cost) before its result is used.
///
/// The agent loop journals each model *response* and each tool *result*, never the
/// conversation so far, so a run with N model calls stores O(N) entries.
pub struct DurableJournal {
    store: Arc<dyn Store>,
    run_id: String,
    redactor: Redactor,
    prices: Arc<PriceTable>,
    state: Mutex<State>,
    replay_only: bool,
    /// On a store shared by several processes: the node executing the run. A new step's
    /// result is appended only while the run is still `running` under this node (a fenced
    /// append), and a step starts only if that was confirmed lately; see
    /// [`with_owner`](Self::with_owner).
    owner: Option<String>,
    /// When the store last confirmed that `owner` executes the run (the claim, a fenced
    /// append, an owner check).
    confirmed: Mutex<Instant>,
}

/// A step of a run on a shared store re-reads the run before it executes only when its
/// ownership was last confirmed longer ago than this (see [`DurableJournal::with_owner`]).
const OWNER_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for DurableJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableJournal")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl DurableJournal {
    /// Load the journal of `run_id` from `store`.
    pub async fn load(
        store: Arc<dyn Store>,
        run_id: impl Into<String>,
        redactor: Redactor,
        prices: Arc<PriceTable>,
    ) -> Result<Self> {
        let run_id = run_id.into();
        let entries = store.journal(&run_id).await?;
        let next_seq = entries.last().map_or(0, |e| e.seq.saturating_add(1));
        let order = entries.iter().map(|e| e.key.clone()).collect();
        let recorded = entries.into_iter().map(|e| (e.key, e.value)).collect();
        Ok(Self {
            store,
            run_id,
            redactor,
            prices,
            state: Mutex::new(State {
                recorded,
                next_seq,
                order,
                ..State::default()
            }),
            replay_only: false,
            owner: None,
            confirmed: Mutex::new(Instant::now()),
        })
    }

    /// An empty journal for a run that has never executed (nothing to read from the store).
    pub fn empty(
        store: Arc<dyn Store>,
        run_id: impl Into<String>,
        redactor: Redactor,
        prices: Arc<PriceTable>,
    ) -> Self {
        Self {
            store,
            run_id: run_id.into(),
            redactor,
            prices,
            state: Mutex::new(State::default()),
            replay_only: false,
            owner: None,
            confirmed: Mutex::new(Instant::now()),
        }
    }

    /// Execute and record steps only while the run is `running` (or waiting for a signal one
    /// of its tool calls asked for) under `node`, which has just claimed it.
    ///
    /// On a shared store another process may pause or cancel the run (and a paused run may be
    /// resumed and claimed by yet another node) while this one executes it: that process
    /// cannot cancel this execution, so without the check it would go on calling models and
    /// tools and append results the run's new executor also appends (a duplicate journal key
    /// that failed the run). With it, this execution stops at its next step boundary: each
    /// result is appended with a fenced insert
    /// ([`append_fenced`](crate::store::JournalStore::append_fenced): the check and the append
    /// are one statement), and a step starts without reading the run when the store confirmed this
    /// node's ownership less than a second ago (the claim, the previous step's append), so
    /// steps that follow each other cost no extra read.
    #[must_use]
    pub(crate) fn with_owner(mut self, node: impl Into<String>) -> Self {
        self.owner = Some(node.into());
        *lock(&self.confirmed) = Instant::now();
        self
    }

    /// The error of an execution whose run was stopped or taken over elsewhere.
    pub(crate) fn fenced_out(&self, status: Option<RunStatus>) -> agentkit_core::Error {
        match status {
            Some(status) => {
                tracing::info!(run_id = %self.run_id, %status, "the run was stopped or taken over elsewhere; this execution stops");
            }
            None => {
                tracing::info!(run_id = %self.run_id, "the run was stopped or taken over elsewhere; this execution stops");
            }
        }
        agentkit_core::Error::Cancelled {
            run_id: self.run_id.clone(),
        }
    }

    /// With an owner whose ownership was not confirmed lately: an error unless the run is
    /// still executed by it.
    async fn check_owner(&self) -> Result<()> {
        if lock(&self.confirmed).elapsed() < OWNER_RECHECK {
            return Ok(());
        }
        let Some(owner) = &self.owner else {
            return Ok(());
        };
        match self.store.get_run(&self.run_id).await? {
            // Waiting: a tool call of this execution waits for a signal while the calls beside
            // it still journal their results.
            Some(r)
                if matches!(
                    r.status,
                    RunStatus::Running | RunStatus::WaitingInput | RunStatus::WaitingApproval
                ) && r.owner.as_deref() == Some(owner) =>
            {
                self.owner_confirmed();
                Ok(())
            }
            Some(r) => Err(self.fenced_out(Some(r.status))),
            None => Err(self.fenced_out(None)),
        }
    }

    /// Note that the store has just confirmed that the owner executes the run (a signal
    /// delivered with [`take_signal_fenced`](crate::store::SignalStore::take_signal_fenced)).
    pub(crate) fn owner_confirmed(&self) {
        *lock(&self.confirmed) = Instant::now();
    }

    /// Replay only: a step that is not recorded is not executed; it is noted as a divergence
    /// and fails. Nothing is appended.
    #[must_use]
    pub fn replay_only(mut self) -> Self {
        self.replay_only = true;
        self
    }

    /// Whether this journal only replays.
    #[must_use]
    pub fn is_replay_only(&self) -> bool {
        self.replay_only
    }

    /// Note a divergence from the recording (replay mode).
    pub(crate) fn diverged(&self, what: String) -> agentkit_core::Error {
        let e = agentkit_core::Error::Workflow(format!("replay diverged: {what}"));
        self.with(|s| s.divergences.push(what));
        e
    }

    /// Divergences noted while replaying.
    #[must_use]
    pub fn divergences(&self) -> Vec<String> {
        self.with(|s| s.divergences.clone())
    }

    /// Recorded keys that this execution never asked for, in recorded order.
    #[must_use]
    pub fn unused_keys(&self) -> Vec<String> {
        self.with(|s| {
            s.order
                .iter()
                .filter(|k| !s.replayed.contains(k))
                .cloned()
                .collect()
        })
    }

    /// The run this journal belongs to.
    #[must_use]
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut lock(&self.state))
    }

    /// Keys served from the journal instead of executing, in order.
    #[must_use]
    pub fn replayed_keys(&self) -> Vec<String> {
        self.with(|s| s.replayed.clone())
    }

    /// Keys executed and appended by this process, in order.
    #[must_use]
    pub fn executed_keys(&self) -> Vec<String> {
        self.with(|s| s.executed.clone())
    }

    /// The recorded value of `key`, counted as a replay when present.
    pub(crate) fn replay(&self, key: &str) -> Option<Value> {
        self.with(|s| {
            let v = s.recorded.get(key).cloned();
            if v.is_some() {
                s.replayed.push(key.to_owned());
            }
            v
        })
    }

    /// Whether an entry loaded with the journal follows `key`'s (a step after a replayed
    /// signal already ran in an earlier execution).
    pub(crate) fn recorded_after(&self, key: &str) -> bool {
        self.with(|s| {
            s.order
                .iter()
                .position(|k| k == key)
                .is_some_and(|i| i.saturating_add(1) < s.order.len())
        })
    }

    /// Reserve the next sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.with(|s| {
            let n = s.next_seq;
            s.next_seq = s.next_seq.saturating_add(1);
            n
        })
    }

    /// Mark the execution as suspended (`why`: what it waits for, shown in the error of every
    /// step that ends because of it): from now on nothing more is
    /// journaled by it, so a step that was interrupted by the wait is not recorded as done.
    ///
    /// With `step`, only that step (a tool call waiting for human input or an approval) is
    /// suspended: its result is not journaled, while tool calls running beside it still
    /// journal theirs (so they do not run again on resume).
    pub(crate) fn suspend(&self, why: &str, step: Option<&str>) {
        self.with(|s| match step {
            Some(key) => {
                s.suspended_steps.insert(key.to_owned(), why.to_owned());
            }
            None => s.suspended = Some(why.to_owned()),
        });
    }

    fn suspended_error(&self, key: &str) -> Option<agentkit_core::Error> {
        self.with(|s| {
            s.suspended
                .as_ref()
                .or_else(|| s.suspended_steps.get(key))
                .map(|why| agentkit_core::Error::Workflow(format!("run {} {why}", self.run_id)))
        })
    }

    /// Note a value appended by someone else (a delivered signal).
    pub(crate) fn note_appended(&self, key: &str, value: Value) {
        self.with(|s| {
            s.recorded.insert(key.to_owned(), value);
            s.executed.push(key.to_owned());
        });
    }

    fn usage_of(&self, kind: EntryKind, value: &Value) -> (Usage, f64) {
        if kind != EntryKind::Llm {
            return (Usage::default(), 0.0);
        }
        let usage: Usage = value
            .get("usage")
            .and_then(|u| Usage::deserialize(u).ok())
            .unwrap_or_default();
        let model = value.get("model").and_then(Value::as_str).unwrap_or("");
        (usage, self.prices.cost(model, &usage))
    }
}

/// How [`DurableJournal::run_step`] answered a step.
enum Stepped<K> {
    /// From the recording.
    Replayed(Value),
    /// `exec` ran: what the caller asked to keep of its unredacted result.
    Executed(K),
}

impl DurableJournal {
    /// A step: the recorded value when it is replayed, else `exec` runs, its result is
    /// redacted, appended and kept for replays, and what `back` takes of the unredacted
    /// result is returned.
    async fn run_step<K>(
        &self,
        key: &str,
        exec: BoxFuture<'_, Result<Value>>,
        back: impl FnOnce(&Value) -> K,
    ) -> Result<Stepped<K>> {
        if let Some(v) = self.replay(key) {
            return Ok(Stepped::Replayed(v));
        }
        if self.replay_only {
            return Err(self.diverged(format!(
                "step `{key}` is not in the recording (the code now asks for a step the run did not take)"
            )));
        }
        self.check_owner().await?;
        let started = Instant::now();
        let value = exec.await?;
        if let Some(e) = self.suspended_error(key) {
            return Err(e);
        }
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let kind = EntryKind::from_key(key);
        let (usage, cost) = self.usage_of(kind, &value);
        let kept = back(&value);
        let mut stored = value;
        self.redactor.apply(&mut stored);
        let entry = JournalEntry::new(&self.run_id, self.next_seq(), key, stored)
            .with_latency_ms(latency_ms)
            .with_usage(usage, cost);
        match &self.owner {
            None => self.store.append(std::slice::from_ref(&entry)).await?,
            Some(owner) => {
                if !self
                    .store
                    .append_fenced(std::slice::from_ref(&entry), owner)
                    .await?
                {
                    return Err(self.fenced_out(None));
                }
                *lock(&self.confirmed) = Instant::now();
            }
        }
        // The stored entry's value is what a replay returns: kept without another copy.
        self.with(|s| {
            s.recorded.insert(key.to_owned(), entry.value);
            s.executed.push(key.to_owned());
        });
        Ok(Stepped::Executed(kept))
    }
}

#[async_trait]
impl Journal for DurableJournal {
    async fn step(&self, key: &str, exec: BoxFuture<'_, Result<Value>>) -> Result<Value> {
        // A step that executes returns its result unredacted: a copy of it, besides the
        // redacted one the journal keeps.
        Ok(match self.run_step(key, exec, Value::clone).await? {
            Stepped::Replayed(v) | Stepped::Executed(v) => v,
        })
    }

    async fn step_or_replay(
        &self,
        key: &str,
        exec: BoxFuture<'_, Result<Value>>,
    ) -> Result<Option<Value>> {
        // The caller keeps what `exec` computed: no copy of it.
        Ok(match self.run_step(key, exec, |_| ()).await? {
            Stepped::Replayed(v) => Some(v),
            Stepped::Executed(()) => None,
        })
    }

    fn note_divergence(&self, key: &str, what: &str) {
        self.with(|s| s.divergences.push(format!("step `{key}`: {what}")));
    }

    fn recorded(&self, key: &str) -> Option<Value> {
        self.replay(key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::json;

    use super::*;
    use crate::store::MemoryStore;

    /// `step_or_replay` gives nothing back for a step that ran (its caller has the result)
    /// and the recorded (redacted) value for a replayed one; `step` gives back the result
    /// unredacted. Either way the journal stores the redacted value.
    #[tokio::test]
    async fn a_step_that_ran_gives_back_nothing_or_its_unredacted_result() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let redactor = Redactor::new(|v: &mut Value| {
            if let Some(s) = v.get_mut("secret") {
                *s = json!("***");
            }
        });
        let journal = DurableJournal::empty(Arc::clone(&store), "r1", redactor, Arc::default());
        let runs = AtomicU32::new(0);
        let exec = || {
            let runs = &runs;
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"secret": "s3cret", "x": 1}))
            }) as BoxFuture<'_, Result<Value>>
        };
        assert_eq!(journal.step_or_replay("a", exec()).await.unwrap(), None);
        assert_eq!(
            journal.step_or_replay("a", exec()).await.unwrap(),
            Some(json!({"secret": "***", "x": 1}))
        );
        assert_eq!(
            journal.step("b", exec()).await.unwrap(),
            json!({"secret": "s3cret", "x": 1})
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        let stored: Vec<Value> = store
            .journal("r1")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.value)
            .collect();
        assert_eq!(stored, vec![json!({"secret": "***", "x": 1}); 2]);
        assert_eq!(journal.executed_keys(), ["a", "b"]);
        assert_eq!(journal.replayed_keys(), ["a"]);
    }
}
