//! The [`Journal`] trait: record a step's result once, return it on replay.
//!
//! In core the journal is absent (steps just run). `agentkit-runtime` supplies a durable one,
//! which makes every model completion and tool result of the agent loop a checkpoint: a run
//! resumed after a crash, or replayed offline, gets the recorded results back instead of
//! calling the model or the tool again.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::error::Result;

/// Records step results by key and returns recorded results on replay.
///
/// `exec` is a future that has not been polled; a journal that already holds `key` returns the
/// recorded value without polling it, so the step's side effects do not happen twice. Failed
/// steps (`Err`) are not recorded: they run again on resume.
#[async_trait]
pub trait Journal: Send + Sync {
    /// Return the recorded result of `key`, or run `exec`, record its result and return it.
    async fn step(&self, key: &str, exec: BoxFuture<'_, Result<Value>>) -> Result<Value>;

    /// [`step`](Self::step) for a caller that keeps `exec`'s result itself (it computed it):
    /// `None` when `exec` ran and its result was recorded, the recorded value when the step
    /// was answered from the journal. A journal that keeps a copy of what it records
    /// overrides this to skip the copy it would hand back; the default calls `step`.
    async fn step_or_replay(
        &self,
        key: &str,
        exec: BoxFuture<'_, Result<Value>>,
    ) -> Result<Option<Value>> {
        self.step(key, exec).await.map(Some)
    }

    /// Told when a step was answered from the journal although the code now asks something
    /// different from what was recorded (e.g. the agent's instructions, model, tools or
    /// conversation changed since the run was recorded). Replay reports collect these; the
    /// default ignores them.
    fn note_divergence(&self, _key: &str, _what: &str) {}

    /// The recorded result of `key`, if the journal holds one, without running anything
    /// (governance reads a journaled verdict before deciding again). The default holds
    /// nothing.
    fn recorded(&self, _key: &str) -> Option<Value> {
        None
    }
}

/// A journal that records nothing and always runs the step.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopJournal;

#[async_trait]
impl Journal for NoopJournal {
    async fn step(&self, _key: &str, exec: BoxFuture<'_, Result<Value>>) -> Result<Value> {
        exec.await
    }
}

/// An in-memory journal: steps are recorded in a map. Useful in tests and to replay a run
/// within one process (`MemoryJournal::from_entries` with a recorded tape).
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: Mutex<HashMap<String, Value>>,
    order: Mutex<Vec<String>>,
    replayed: Mutex<Vec<String>>,
    divergences: Mutex<Vec<String>>,
}

impl MemoryJournal {
    /// An empty journal.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A journal pre-filled with recorded steps.
    #[must_use]
    pub fn from_entries(entries: impl IntoIterator<Item = (String, Value)>) -> Self {
        let j = Self::default();
        {
            let (mut e, mut o) = (crate::lock(&j.entries), crate::lock(&j.order));
            for (k, v) in entries {
                o.push(k.clone());
                e.insert(k, v);
            }
        }
        j
    }

    /// Recorded steps in the order they were recorded.
    #[must_use]
    pub fn entries(&self) -> Vec<(String, Value)> {
        let (e, o) = (crate::lock(&self.entries), crate::lock(&self.order));
        o.iter()
            .filter_map(|k| e.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    /// Keys whose results were served from the journal rather than executed.
    #[must_use]
    pub fn replayed_keys(&self) -> Vec<String> {
        crate::lock(&self.replayed).clone()
    }

    /// Divergences noted while replaying (see [`Journal::note_divergence`]).
    #[must_use]
    pub fn divergences(&self) -> Vec<String> {
        crate::lock(&self.divergences).clone()
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn step(&self, key: &str, exec: BoxFuture<'_, Result<Value>>) -> Result<Value> {
        let recorded = crate::lock(&self.entries).get(key).cloned();
        if let Some(v) = recorded {
            crate::lock(&self.replayed).push(key.to_owned());
            return Ok(v);
        }
        let v = exec.await?;
        let (mut e, mut o) = (crate::lock(&self.entries), crate::lock(&self.order));
        if e.insert(key.to_owned(), v.clone()).is_none() {
            o.push(key.to_owned());
        }
        Ok(v)
    }

    fn note_divergence(&self, key: &str, what: &str) {
        crate::lock(&self.divergences).push(format!("step `{key}`: {what}"));
    }

    fn recorded(&self, key: &str) -> Option<Value> {
        crate::lock(&self.entries).get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn recorded_steps_are_not_executed_again() {
        let j = MemoryJournal::new();
        let calls = AtomicU32::new(0);
        for _ in 0..3 {
            let v = j
                .step(
                    "k",
                    async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(Value::from(7))
                    }
                    .boxed(),
                )
                .await
                .unwrap();
            assert_eq!(v, Value::from(7));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(j.replayed_keys().len(), 2);
    }
}
