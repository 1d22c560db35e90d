//! Server-sent events of a streamed chat completion → [`CompletionChunk`]s.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Deserialize;

use super::response::{WireError, WireUsage, decode, stop_reason};
use crate::error::{Error, ProviderErrorKind, Result};
use crate::provider::{ChunkStream, CompletionChunk};
use crate::usage::Usage;

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    delta: Option<WireDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCallDelta>>,
}

#[derive(Deserialize)]
struct WireToolCallDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionDelta>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// Turns the SSE events of a streamed chat completion into [`CompletionChunk`]s.
pub(super) struct StreamState {
    provider: String,
    events: BoxStream<'static, Result<(String, String)>>,
    idle: Option<Duration>,
    pending: VecDeque<Result<CompletionChunk>>,
    finished: bool,
    model: String,
    usage: Usage,
    finish_reason: Option<String>,
    refusal: bool,
    /// The wire `index` of a tool call → its index in our message.
    by_wire_index: HashMap<usize, usize>,
    /// The id of each tool call so far, by our index.
    call_ids: Vec<Option<String>>,
}

impl StreamState {
    /// A stream state over `events`; `idle` bounds the gap between two events.
    pub(super) fn new(
        provider: &str,
        events: BoxStream<'static, Result<(String, String)>>,
        idle: Option<Duration>,
        model: String,
    ) -> Self {
        Self {
            provider: provider.to_owned(),
            events,
            idle,
            pending: VecDeque::new(),
            finished: false,
            model,
            usage: Usage::default(),
            finish_reason: None,
            refusal: false,
            by_wire_index: HashMap::new(),
            call_ids: Vec::new(),
        }
    }

    pub(super) fn into_stream(self) -> ChunkStream {
        futures::stream::unfold(self, |mut st| async move {
            loop {
                if let Some(item) = st.pending.pop_front() {
                    return Some((item, st));
                }
                if st.finished {
                    return None;
                }
                let next = match st.idle {
                    Some(limit) => match tokio::time::timeout(limit, st.events.next()).await {
                        Ok(next) => next,
                        Err(_) => Some(Err(Error::provider(
                            st.provider.clone(),
                            ProviderErrorKind::Timeout,
                            format!("the stream sent nothing for {limit:?}"),
                        ))),
                    },
                    None => st.events.next().await,
                };
                match next {
                    Some(Ok((_event, data))) => st.handle(&data),
                    Some(Err(e)) => st.fail(e),
                    None => {
                        let e = Error::provider(
                            st.provider.clone(),
                            ProviderErrorKind::Stream,
                            "the stream ended before `data: [DONE]`; the answer is incomplete",
                        );
                        st.fail(e);
                    }
                }
            }
        })
        .boxed()
    }

    fn fail(&mut self, error: Error) {
        self.pending.push_back(Err(error));
        self.finished = true;
    }

    fn handle(&mut self, data: &str) {
        let data = data.trim();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            let stop = stop_reason(
                self.finish_reason.as_deref(),
                !self.call_ids.is_empty(),
                self.refusal,
            );
            self.pending.push_back(Ok(CompletionChunk::Finish {
                usage: self.usage,
                stop_reason: stop,
                model: self.model.clone(),
            }));
            self.finished = true;
            return;
        }
        let chunk: WireChunk = match decode(&self.provider, "a stream event", data.as_bytes()) {
            Ok(c) => c,
            Err(e) => return self.fail(e),
        };
        if let Some(error) = chunk.error {
            let e = error.into_error(&self.provider, ProviderErrorKind::Server);
            return self.fail(e);
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        if let Some(usage) = &chunk.usage {
            self.usage = usage.to_usage();
        }
        for choice in chunk.choices {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
            }
            let Some(delta) = choice.delta else { continue };
            if let Some(refusal) = delta.refusal.filter(|r| !r.is_empty()) {
                self.refusal = true;
                self.pending
                    .push_back(Ok(CompletionChunk::TextDelta { text: refusal }));
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                self.pending
                    .push_back(Ok(CompletionChunk::TextDelta { text }));
            }
            for (position, call) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let wire = call.index.unwrap_or(position);
                let id = call.id.filter(|id| !id.is_empty());
                let index = self.call_index(wire, id.as_deref());
                let (name, arguments) = match call.function {
                    Some(f) => (f.name.filter(|n| !n.is_empty()), f.arguments),
                    None => (None, None),
                };
                self.pending.push_back(Ok(CompletionChunk::ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments: arguments.unwrap_or_default(),
                }));
            }
        }
    }

    /// Our index for a tool-call delta. A new id at a wire index already in use starts a new
    /// call (some compatible servers send every call at index 0).
    fn call_index(&mut self, wire: usize, id: Option<&str>) -> usize {
        if let Some(&index) = self.by_wire_index.get(&wire) {
            let known = self.call_ids.get(index).and_then(|i| i.as_deref());
            match (known, id) {
                (Some(known), Some(id)) if known != id => {}
                (None, Some(id)) => {
                    if let Some(slot) = self.call_ids.get_mut(index) {
                        *slot = Some(id.to_owned());
                    }
                    return index;
                }
                _ => return index,
            }
        }
        let index = self.call_ids.len();
        self.call_ids.push(id.map(str::to_owned));
        self.by_wire_index.insert(wire, index);
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_wire_indexes_with_new_ids_become_separate_calls() {
        let mut st = StreamState {
            provider: "p".into(),
            events: futures::stream::empty().boxed(),
            idle: None,
            pending: VecDeque::new(),
            finished: false,
            model: "m".into(),
            usage: Usage::default(),
            finish_reason: None,
            refusal: false,
            by_wire_index: HashMap::new(),
            call_ids: Vec::new(),
        };
        assert_eq!(st.call_index(0, Some("a")), 0);
        assert_eq!(st.call_index(0, None), 0);
        assert_eq!(st.call_index(0, Some("b")), 1);
        assert_eq!(st.call_index(0, None), 1);
        assert_eq!(st.call_index(1, Some("c")), 2);
    }
}
