//! [`RunObserver`]: what a [`Runtime`](crate::Runtime) tells an observer about the runs it
//! executes, for metrics. Model and tool calls come through an
//! [`EventSink`](agentkit_core::EventSink) instead (see
//! [`RuntimeBuilder::with_event_sink`](crate::RuntimeBuilder::with_event_sink)).

use std::time::Duration;

use crate::model::RunRecord;

/// Told about the runs a runtime moves to an end and the schedule fires it starts. Called
/// synchronously on the runtime's tasks: keep it cheap (increment a counter) and never block.
/// Every method has an empty default, so an observer implements only what it needs.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use agentkit_runtime::{MemoryStore, RunObserver, Runtime, model::RunRecord};
///
/// #[derive(Default)]
/// struct Ended(AtomicU64);
///
/// impl RunObserver for Ended {
///     fn run_ended(&self, _run: &RunRecord) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let runtime = Runtime::builder(Arc::new(MemoryStore::new()))
///     .with_observer(Arc::new(Ended::default()))
///     .build();
/// # let _ = runtime;
/// ```
pub trait RunObserver: Send + Sync {
    /// This process moved `run` to a terminal status (succeeded, failed or cancelled); `run`
    /// is the record as stored by that change. A run cancelled through another process is
    /// reported by that process.
    fn run_ended(&self, run: &RunRecord) {
        let _ = run;
    }

    /// A fire of `schedule` started a run of `target`, `lag` after the fire's time (how late
    /// the scheduler was: its tick, a busy store, a catch-up after downtime).
    fn schedule_fired(&self, schedule: &str, target: &str, lag: Duration) {
        let _ = (schedule, target, lag);
    }
}
