//! [`RunEvent`]s and the [`EventSink`] trait.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::usage::{StopReason, Usage};

/// Something that happened in a run. Sinks receive every event; the runtime journals them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEvent {
    /// A model call is about to be made.
    LlmRequest {
        /// The agent (or pattern) making the call.
        agent: String,
        /// Provider name.
        provider: String,
        /// Model id.
        model: String,
        /// Iteration of the tool loop (0-based).
        iteration: u32,
        /// Messages sent.
        messages: usize,
        /// Tools offered.
        tools: usize,
    },
    /// A model call returned.
    LlmResponse {
        /// The agent.
        agent: String,
        /// Provider name.
        provider: String,
        /// The model that answered.
        model: String,
        /// Tokens used.
        usage: Usage,
        /// Estimated cost in US dollars (0 when the model is not in the price table).
        cost_usd: f64,
        /// Wall time of the call in microseconds (0 when replayed from the journal).
        latency_us: u64,
        /// Why the model stopped.
        stop_reason: StopReason,
        /// Whether the answer came from the journal instead of the provider.
        #[serde(default)]
        replayed: bool,
    },
    /// A tool call starts.
    ToolCallStarted {
        /// The agent.
        agent: String,
        /// Call id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Arguments.
        arguments: Value,
    },
    /// A tool call finished.
    ToolCallFinished {
        /// The agent.
        agent: String,
        /// Call id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Whether the tool reported an error or could not be called.
        is_error: bool,
        /// What the tool returned (what the model sees).
        output: Vec<crate::message::Content>,
        /// Wall time in microseconds.
        latency_us: u64,
        /// Whether the result came from the journal instead of the tool.
        #[serde(default)]
        replayed: bool,
    },
    /// A human was asked for input.
    HumanInputRequested {
        /// The agent.
        agent: String,
        /// The question.
        prompt: String,
    },
    /// The human answered.
    HumanInputAnswered {
        /// The agent.
        agent: String,
    },
    /// A pattern took a step (route chosen, plan made, rating given, handoff...).
    PatternStep {
        /// Pattern kind, e.g. `router`.
        pattern: String,
        /// Pattern instance name.
        name: String,
        /// Step kind, e.g. `route_chosen`.
        step: String,
        /// Step details.
        detail: Value,
    },
    /// Progress of a long operation (MCP progress notifications).
    Progress {
        /// Progress so far.
        progress: f64,
        /// Total, when known.
        total: Option<f64>,
        /// A message, if any.
        message: Option<String>,
    },
    /// An error occurred (and was shown to the model or ended the run).
    Error {
        /// The agent, pattern or tool.
        source: String,
        /// The error message.
        message: String,
    },
}

/// Microseconds of `d`, saturating (for the `latency_us` fields of [`RunEvent`]).
#[must_use]
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Receives [`RunEvent`]s. Called synchronously on the hot path: keep it cheap (push to a
/// channel, increment a counter) and never block.
pub trait EventSink: Send + Sync {
    /// Handle one event of run `run_id`.
    fn emit(&self, run_id: &str, event: &RunEvent);

    /// Whether this sink wants events at all. When `false`, callers may skip building them
    /// (see [`RunContext::emit_with`](crate::RunContext::emit_with)).
    fn is_enabled(&self) -> bool {
        true
    }
}

/// Calls a function for every event: the simplest per-tool-call (or per-model-call) hook.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use agentkit_core::{FnSink, RunContext, RunEvent};
///
/// let tool_calls = Arc::new(AtomicU64::new(0));
/// let counter = Arc::clone(&tool_calls);
/// let ctx = RunContext::new().with_events(Arc::new(FnSink::new(move |_run, event| {
///     if let RunEvent::ToolCallFinished { output, latency_us, .. } = event {
///         counter.fetch_add(1, Ordering::Relaxed);
///         let _ = (output, latency_us); // inspect the result and its latency
///     }
/// })));
/// # let _ = ctx;
/// ```
pub struct FnSink<F> {
    f: F,
}

impl<F> FnSink<F>
where
    F: Fn(&str, &RunEvent) + Send + Sync,
{
    /// Call `f(run_id, event)` for every event.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> std::fmt::Debug for FnSink<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnSink(..)")
    }
}

impl<F> EventSink for FnSink<F>
where
    F: Fn(&str, &RunEvent) + Send + Sync,
{
    fn emit(&self, run_id: &str, event: &RunEvent) {
        (self.f)(run_id, event);
    }
}

/// Discards events.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl EventSink for NoopSink {
    fn emit(&self, _run_id: &str, _event: &RunEvent) {}

    fn is_enabled(&self) -> bool {
        false
    }
}

/// Keeps every event in memory (tests, small tools).
#[derive(Debug, Default)]
pub struct CollectingSink {
    events: Mutex<Vec<(String, RunEvent)>>,
}

impl CollectingSink {
    /// An empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The events received so far.
    #[must_use]
    pub fn events(&self) -> Vec<RunEvent> {
        crate::lock(&self.events)
            .iter()
            .map(|(_, ev)| ev.clone())
            .collect()
    }

    /// The events received so far, with their run ids.
    #[must_use]
    pub fn events_with_run_ids(&self) -> Vec<(String, RunEvent)> {
        crate::lock(&self.events).clone()
    }
}

impl EventSink for CollectingSink {
    fn emit(&self, run_id: &str, event: &RunEvent) {
        crate::lock(&self.events).push((run_id.to_owned(), event.clone()));
    }
}

/// Sends events into an unbounded tokio channel.
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: tokio::sync::mpsc::UnboundedSender<(String, RunEvent)>,
}

impl ChannelSink {
    /// A sink and the receiver of its events.
    #[must_use]
    pub fn new() -> (
        Self,
        tokio::sync::mpsc::UnboundedReceiver<(String, RunEvent)>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Self { tx }, rx)
    }
}

impl EventSink for ChannelSink {
    fn emit(&self, run_id: &str, event: &RunEvent) {
        // A closed receiver means nobody listens any more; that is not an error of the run.
        let _ = self.tx.send((run_id.to_owned(), event.clone()));
    }
}

/// Logs every event with `tracing` at debug level (errors at warn).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn emit(&self, run_id: &str, event: &RunEvent) {
        match event {
            RunEvent::Error { source, message } => {
                tracing::warn!(run_id, source = %source, "{message}");
            }
            other => tracing::debug!(run_id, event = ?other, "run event"),
        }
    }
}

/// Sends every event to several sinks.
#[derive(Default)]
pub struct FanoutSink {
    sinks: Vec<std::sync::Arc<dyn EventSink>>,
}

impl std::fmt::Debug for FanoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSink")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl FanoutSink {
    /// No sinks yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a sink.
    #[must_use]
    pub fn with(mut self, sink: std::sync::Arc<dyn EventSink>) -> Self {
        self.sinks.push(sink);
        self
    }
}

impl EventSink for FanoutSink {
    fn emit(&self, run_id: &str, event: &RunEvent) {
        for s in &self.sinks {
            s.emit(run_id, event);
        }
    }
}
