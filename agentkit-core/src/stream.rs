//! Streaming generation: [`GenerationEvent`]s as a [`Stream`], from any [`AugmentedLlm`]
//! through [`generate_stream`](AugmentedLlm::generate_stream).
//!
//! A stream yields, in order: the answer's text as it is produced ([`GenerationEvent::TextDelta`]),
//! tool calls as they start and finish, one [`GenerationEvent::TurnFinished`] per model call
//! (usage, stop reason), and last [`GenerationEvent::Done`] with the whole
//! [`Generation`] — the same value [`generate`](AugmentedLlm::generate) returns. An
//! error ends the stream with `Err`.
//!
//! # Who streams what
//!
//! - The default implementation (any `AugmentedLlm` that does not override it) runs `generate`
//!   and yields the whole answer as one delta.
//! - [`AgentLlm`](crate::AgentLlm) streams every model call of its tool loop through the
//!   provider's [`stream`](crate::LlmProvider::stream): the text of a turn that ends in tool
//!   calls is streamed too (a `TurnFinished` with `tool_calls > 0` follows it), so the deltas
//!   of the *last* turn are the final answer's text. A journaled model call is recorded exactly
//!   as [`generate`](AugmentedLlm::generate) records it, from the accumulated stream;
//!   a call answered from the journal (a resumed or replayed run) yields its recorded text at
//!   once as one delta and does not call the model.
//!   With [`RunContext::with_stream_demand`], a model call streams only while the demand says
//!   so; one that does not is a plain `complete` whose text comes as one delta.
//! - Patterns stream the sub-call that produces their answer (a router its chosen route, a
//!   chain its last step, ...); each pattern's docs say which.
//!
//! # Cancellation
//!
//! The stream owns the generation: nothing runs unless the stream is polled, and dropping it
//! drops the generation, which stops the model call in flight (the HTTP request is closed).
//!
//! ```
//! use agentkit_core::{Agent, AgentLlm, AugmentedLlm, GenerationEvent, RunContext, ScriptedProvider};
//! use futures::StreamExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let agent = AgentLlm::new(Agent::new("a", "Be brief."), ScriptedProvider::new().then_text("Hi!"));
//! let ctx = RunContext::new();
//! let mut stream = agent.generate_stream("hello".into(), &ctx);
//! let mut text = String::new();
//! while let Some(event) = stream.next().await {
//!     match event? {
//!         GenerationEvent::TextDelta { text: t, .. } => text.push_str(&t),
//!         GenerationEvent::Done(generation) => assert_eq!(generation.text(), text),
//!         _ => {}
//!     }
//! }
//! assert_eq!(text, "Hi!");
//! # Ok::<_, agentkit_core::Error>(()) }).unwrap();
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::llm::{AugmentedLlm, GenerateRequest, Generation};
use crate::message::Content;
use crate::usage::{StopReason, Usage};

/// One event of a streamed generation (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GenerationEvent {
    /// More text of the answer.
    TextDelta {
        /// The agent whose model produced it.
        agent: String,
        /// The new text.
        text: String,
    },
    /// A tool call is about to run.
    ToolCallStarted {
        /// The agent that called it.
        agent: String,
        /// Call id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// Arguments.
        arguments: Value,
    },
    /// A tool call finished: its result, or the error the model is shown (`is_error`).
    ToolCallFinished {
        /// The agent that called it.
        agent: String,
        /// Call id.
        call_id: String,
        /// Tool name.
        tool: String,
        /// The result content.
        output: Vec<Content>,
        /// Whether the tool failed (or could not be called).
        is_error: bool,
    },
    /// One model call ended.
    TurnFinished {
        /// The agent.
        agent: String,
        /// The turn of the tool loop (0-based).
        iteration: u32,
        /// Tokens this call used.
        usage: Usage,
        /// Why the model stopped.
        stop_reason: StopReason,
        /// The model that answered.
        model: String,
        /// Tool calls the model asked for (0 for a final answer).
        tool_calls: usize,
        /// Answered from the journal rather than by the model.
        replayed: bool,
    },
    /// The generation finished; the last event of the stream. Its usage is the total of every
    /// model call inside, its stop reason that of the final call.
    Done(Generation),
}

/// A streamed generation: [`GenerationEvent`]s ending with [`GenerationEvent::Done`], or an
/// `Err`.
pub type GenerationStream<'a> = BoxStream<'a, Result<GenerationEvent>>;

/// Where a generation running inside [`stream_generation`] sends its events. Cloning is cheap;
/// events sent after the stream was dropped are discarded.
#[derive(Debug, Clone)]
pub struct GenerationEmitter {
    tx: mpsc::UnboundedSender<GenerationEvent>,
}

impl GenerationEmitter {
    /// Send an event to the stream's consumer.
    pub fn emit(&self, event: GenerationEvent) {
        // A closed channel means the consumer dropped the stream: nothing to tell.
        let _ = self.tx.unbounded_send(event);
    }

    /// Send a text delta of `agent` (empty text is not sent).
    pub fn text(&self, agent: &str, text: impl Into<String>) {
        let text = text.into();
        if !text.is_empty() {
            self.emit(GenerationEvent::TextDelta {
                agent: agent.to_owned(),
                text,
            });
        }
    }

    /// Generate with `llm`, streaming: its events (all but its `Done`) are sent here and its
    /// final generation is returned. Patterns use it for the sub-call whose answer they stream.
    pub async fn forward<L: AugmentedLlm + ?Sized>(
        &self,
        llm: &L,
        request: GenerateRequest,
        ctx: &RunContext,
    ) -> Result<Generation> {
        let mut stream = llm.generate_stream(request, ctx);
        while let Some(event) = stream.next().await {
            match event? {
                GenerationEvent::Done(generation) => return Ok(generation),
                other => self.emit(other),
            }
        }
        Err(Error::InvalidState {
            what: format!("the streamed generation of `{}`", llm.name()),
            message: "the stream ended without its final `Done` event; its `generate_stream` \
                      must end with one"
                .to_owned(),
        })
    }
}

/// Generate with `llm`: streamed into `emitter` when there is one (see
/// [`GenerationEmitter::forward`]), else a plain [`generate`](AugmentedLlm::generate).
pub async fn generate_into<L: AugmentedLlm + ?Sized>(
    llm: &L,
    request: GenerateRequest,
    ctx: &RunContext,
    emitter: Option<&GenerationEmitter>,
) -> Result<Generation> {
    match emitter {
        Some(e) => e.forward(llm, request, ctx).await,
        None => llm.generate(request, ctx).await,
    }
}

/// Turn a generation that reports its progress to a [`GenerationEmitter`] into a
/// [`GenerationStream`]: `run` gets the emitter and returns the generation's future. The
/// stream polls that future itself (nothing is spawned), yields the events it emits as they
/// come, and ends with [`GenerationEvent::Done`] (or the future's error). Dropping the stream
/// drops the future.
pub fn stream_generation<'a, F, Fut>(run: F) -> GenerationStream<'a>
where
    F: FnOnce(GenerationEmitter) -> Fut,
    Fut: Future<Output = Result<Generation>> + Send + 'a,
{
    let (tx, rx) = mpsc::unbounded();
    let fut = run(GenerationEmitter { tx }).boxed();
    Driven {
        fut: Some(fut),
        rx,
        result: None,
        done: false,
    }
    .boxed()
}

/// Drain a [`GenerationStream`] into its final [`Generation`], discarding the other events.
pub async fn collect_generation(mut stream: GenerationStream<'_>) -> Result<Generation> {
    while let Some(event) = stream.next().await {
        if let GenerationEvent::Done(generation) = event? {
            return Ok(generation);
        }
    }
    Err(Error::InvalidState {
        what: "a streamed generation".to_owned(),
        message: "the stream ended without its final `Done` event".to_owned(),
    })
}

struct Driven<'a> {
    fut: Option<BoxFuture<'a, Result<Generation>>>,
    rx: mpsc::UnboundedReceiver<GenerationEvent>,
    result: Option<Result<Generation>>,
    done: bool,
}

impl Stream for Driven<'_> {
    type Item = Result<GenerationEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            // Events already emitted go first, in order.
            if let Poll::Ready(Some(event)) = this.rx.poll_next_unpin(cx) {
                return Poll::Ready(Some(Ok(event)));
            }
            if let Some(fut) = this.fut.as_mut() {
                match fut.poll_unpin(cx) {
                    Poll::Ready(result) => {
                        this.fut = None;
                        this.result = Some(result);
                    }
                    // Polling it may have emitted events (the receiver's waker is registered
                    // too, for events sent from other tasks).
                    Poll::Pending => {
                        return match this.rx.poll_next_unpin(cx) {
                            Poll::Ready(Some(event)) => Poll::Ready(Some(Ok(event))),
                            _ => Poll::Pending,
                        };
                    }
                }
                continue;
            }
            // The generation is over: what it emitted is queued; a clone of the emitter kept
            // elsewhere does not hold the stream open.
            if let Ok(event) = this.rx.try_recv() {
                return Poll::Ready(Some(Ok(event)));
            }
            this.done = true;
            return Poll::Ready(this.result.take().map(|r| r.map(GenerationEvent::Done)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_come_in_order_and_done_is_last() {
        let stream = stream_generation(|em| async move {
            em.text("a", "x");
            tokio::task::yield_now().await;
            em.text("a", "");
            em.text("a", "y");
            Ok(Generation::from_text("xy"))
        });
        let events: Vec<_> = stream.map(Result::unwrap).collect().await;
        assert_eq!(events.len(), 3);
        assert!(matches!(&events[0], GenerationEvent::TextDelta { text, .. } if text == "x"));
        assert!(matches!(&events[1], GenerationEvent::TextDelta { text, .. } if text == "y"));
        assert!(matches!(&events[2], GenerationEvent::Done(g) if g.text() == "xy"));
    }

    #[test]
    fn events_round_trip_through_json_with_a_type_tag() {
        let events = [
            GenerationEvent::TextDelta {
                agent: "a".into(),
                text: "hi".into(),
            },
            GenerationEvent::Done(Generation::from_text("hi")),
        ];
        for e in events {
            let v = serde_json::to_value(&e).unwrap();
            assert!(v["type"].is_string(), "{v}");
            assert_eq!(serde_json::from_value::<GenerationEvent>(v).unwrap(), e);
        }
    }

    #[tokio::test]
    async fn an_error_ends_the_stream() {
        let stream = stream_generation(|em| async move {
            em.text("a", "partial");
            Err(Error::InvalidRequest("boom".into()))
        });
        let events: Vec<_> = stream.collect().await;
        assert_eq!(events.len(), 2);
        assert!(events[0].is_ok());
        assert!(events[1].as_ref().unwrap_err().to_string().contains("boom"));
    }

    #[tokio::test]
    async fn dropping_the_stream_drops_the_generation() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(std::sync::Arc::clone(&dropped));
        let mut stream = stream_generation(move |em| async move {
            let _flag = flag;
            em.text("a", "first");
            std::future::pending::<()>().await;
            Ok(Generation::default())
        });
        assert!(matches!(
            stream.next().await,
            Some(Ok(GenerationEvent::TextDelta { .. }))
        ));
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        drop(stream);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
