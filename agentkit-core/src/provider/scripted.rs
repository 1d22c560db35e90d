//! A deterministic provider for tests and offline demos.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use super::{CompletionRequest, CompletionResponse, LlmProvider};
use crate::error::{Error, ProviderErrorKind, Result};
use crate::message::{Content, Message, Role};
use crate::usage::{StopReason, Usage};

/// One scripted answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ScriptedReply {
    /// Answer with text and end the turn.
    Text(String),
    /// Ask for these tool calls `(name, arguments)`.
    ToolCalls(Vec<(String, Value)>),
    /// Answer with this exact response.
    Response(CompletionResponse),
    /// Fail with a provider error of this kind.
    Error(ProviderErrorKind, String),
}

type Responder = dyn Fn(&CompletionRequest) -> Result<CompletionResponse> + Send + Sync;

/// A provider that answers from a script: a queue of replies, then (optionally) a function.
///
/// Token usage is estimated deterministically (one token per four characters), so cost and
/// budget code paths run for real. Every request is recorded for assertions.
///
/// ```
/// use agentkit_core::{ScriptedProvider, LlmProvider, CompletionRequest, Message};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let p = ScriptedProvider::new()
///     .then_tool_call("add", serde_json::json!({"a": 1, "b": 2}))
///     .then_text("3");
/// let r = p.complete(CompletionRequest::new(vec![Message::user("1+2?")])).await.unwrap();
/// assert!(r.message.has_tool_calls());
/// let r = p.complete(CompletionRequest::new(vec![Message::user("1+2?")])).await.unwrap();
/// assert_eq!(r.text(), "3");
/// assert_eq!(p.requests().len(), 2);
/// # });
/// ```
pub struct ScriptedProvider {
    name: String,
    model: String,
    queue: Mutex<VecDeque<ScriptedReply>>,
    responder: Option<Arc<Responder>>,
    requests: Mutex<Vec<CompletionRequest>>,
    record: bool,
    calls: AtomicU64,
    tool_ids: AtomicU64,
}

impl fmt::Debug for ScriptedProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedProvider")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("remaining", &self.remaining())
            .field("calls", &self.call_count())
            .finish_non_exhaustive()
    }
}

impl Default for ScriptedProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedProvider {
    /// An empty script (name `scripted`, model `scripted-model`).
    #[must_use]
    pub fn new() -> Self {
        Self {
            name: "scripted".into(),
            model: "scripted-model".into(),
            queue: Mutex::default(),
            responder: None,
            requests: Mutex::default(),
            record: true,
            calls: AtomicU64::new(0),
            tool_ids: AtomicU64::new(0),
        }
    }

    /// A provider that answers every request with the texts of the user messages it was sent,
    /// joined by ` | `: in a test, the answer shows which conversation the model saw.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use agentkit_core::{Agent, AgentLlm, AugmentedLlmExt, RunContext, ScriptedProvider};
    ///
    /// let agent = AgentLlm::new(Agent::new("a", ""), ScriptedProvider::echo());
    /// let ctx = RunContext::new().with_thread("t");
    /// assert_eq!(agent.generate_str("one", &ctx).await?, "one");
    /// assert_eq!(agent.generate_str("two", &ctx).await?, "one | two");
    /// # Ok::<(), agentkit_core::Error>(()) }).unwrap();
    /// ```
    #[must_use]
    pub fn echo() -> Self {
        Self::from_fn(|req| {
            let seen: Vec<String> = req
                .messages
                .iter()
                .filter(|m| m.role == crate::message::Role::User)
                .map(crate::message::Message::text)
                .collect();
            Ok(CompletionResponse::new(
                crate::message::Message::assistant(seen.join(" | ")),
                crate::usage::Usage::new(1, 1),
                crate::usage::StopReason::EndTurn,
                "echo",
            ))
        })
        .with_name("echo")
    }

    /// A provider that answers every request with `f` (after any queued replies).
    pub fn from_fn(
        f: impl Fn(&CompletionRequest) -> Result<CompletionResponse> + Send + Sync + 'static,
    ) -> Self {
        Self::new().with_fallback(f)
    }

    /// Answer with `f` once the queue is empty.
    #[must_use]
    pub fn with_fallback(
        mut self,
        f: impl Fn(&CompletionRequest) -> Result<CompletionResponse> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Some(Arc::new(f));
        self
    }

    /// Report this provider name (e.g. `openai`, to price usage with OpenAI's table).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Report this model id.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Do not record requests (benchmarks).
    #[must_use]
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// Queue a reply.
    #[must_use]
    pub fn then(self, reply: ScriptedReply) -> Self {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(reply);
        }
        self
    }

    /// Queue a text answer.
    #[must_use]
    pub fn then_text(self, text: impl Into<String>) -> Self {
        self.then(ScriptedReply::Text(text.into()))
    }

    /// Queue a single tool call.
    #[must_use]
    pub fn then_tool_call(self, name: impl Into<String>, arguments: Value) -> Self {
        self.then(ScriptedReply::ToolCalls(vec![(name.into(), arguments)]))
    }

    /// Queue several tool calls in one answer.
    #[must_use]
    pub fn then_tool_calls(self, calls: Vec<(String, Value)>) -> Self {
        self.then(ScriptedReply::ToolCalls(calls))
    }

    /// Queue a provider error.
    #[must_use]
    pub fn then_error(self, kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        self.then(ScriptedReply::Error(kind, message.into()))
    }

    /// Queue a reply at run time.
    pub fn push(&self, reply: ScriptedReply) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back(reply);
        }
    }

    /// Requests received so far.
    #[must_use]
    pub fn requests(&self) -> Vec<CompletionRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many calls were made.
    #[must_use]
    pub fn call_count(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Queued replies not yet used.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    fn usage_for(request: &CompletionRequest, message: &Message) -> Usage {
        let mut input_chars = request.system.as_ref().map_or(0, String::len);
        for m in &request.messages {
            input_chars += content_chars(&m.content);
        }
        for t in &request.tools {
            input_chars += t.name.len() + t.description.len() + t.input_schema.to_string().len();
        }
        let output_chars = content_chars(&message.content);
        Usage::new(
            input_chars.div_ceil(4) as u64,
            output_chars.div_ceil(4) as u64,
        )
    }

    fn build(
        &self,
        request: &CompletionRequest,
        reply: ScriptedReply,
    ) -> Result<CompletionResponse> {
        let model = request.model.clone().unwrap_or_else(|| self.model.clone());
        let (message, stop) = match reply {
            ScriptedReply::Response(r) => return Ok(r),
            ScriptedReply::Error(kind, message) => {
                return Err(Error::provider(&self.name, kind, message));
            }
            ScriptedReply::Text(t) => (Message::assistant(t), StopReason::EndTurn),
            ScriptedReply::ToolCalls(calls) => {
                let content = calls
                    .into_iter()
                    .map(|(name, arguments)| {
                        let n = self.tool_ids.fetch_add(1, Ordering::SeqCst);
                        Content::tool_call(format!("call_{n}"), name, arguments)
                    })
                    .collect();
                (Message::new(Role::Assistant, content), StopReason::ToolUse)
            }
        };
        let usage = Self::usage_for(request, &message);
        Ok(CompletionResponse::new(message, usage, stop, model))
    }
}

fn content_chars(content: &[Content]) -> usize {
    content
        .iter()
        .map(|c| match c {
            Content::Text { text } => text.len(),
            Content::ToolCall {
                name, arguments, ..
            } => name.len() + arguments.to_string().len(),
            Content::ToolResult { content, .. } => content_chars(content),
            Content::Resource { text, .. } => text.as_ref().map_or(0, String::len),
            Content::Image { .. } => 1000,
            Content::ProviderData { .. } => 0,
        })
        .sum()
}

#[async_trait]
impl LlmProvider for ScriptedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn default_model(&self) -> Option<&str> {
        Some(&self.model)
    }

    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self.queue.lock().ok().and_then(|mut q| q.pop_front());
        let result = match (next, &self.responder) {
            (Some(reply), _) => self.build(&request, reply),
            (None, Some(f)) => f(&request),
            (None, None) => Err(Error::provider(
                &self.name,
                ProviderErrorKind::BadRequest,
                format!(
                    "the script has no reply left for call #{} (add more with then_text/then_tool_call)",
                    n + 1
                ),
            )),
        };
        if self.record
            && let Ok(mut r) = self.requests.lock()
        {
            r.push(request);
        }
        result
    }

    /// The scripted answer as a real model streams it: its text word by word (each delta a
    /// word with the space after it), then its tool calls and the final event.
    async fn stream(&self, request: CompletionRequest) -> Result<super::ChunkStream> {
        let response = self.complete(request).await?;
        let mut chunks = Vec::new();
        for chunk in super::response_to_chunks(response) {
            match chunk {
                super::CompletionChunk::TextDelta { text } => {
                    chunks.extend(
                        text.split_inclusive(' ')
                            .map(|w| super::CompletionChunk::TextDelta { text: w.to_owned() }),
                    );
                }
                other => chunks.push(other),
            }
        }
        Ok(futures::StreamExt::boxed(futures::stream::iter(
            chunks.into_iter().map(Ok),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_exhausted_script_says_so() {
        let p = ScriptedProvider::new().then_text("only");
        p.complete(CompletionRequest::default()).await.unwrap();
        let err = p.complete(CompletionRequest::default()).await.unwrap_err();
        assert!(
            err.to_string().contains("no reply left for call #2"),
            "{err}"
        );
    }
}
