//! Server-sent events of a streamed chat completion → [`CompletionChunk`]s.

use std::collections::{HashMap, VecDeque};

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
    /// A stream state over `events` (already bounded by an idle timeout, if any).
    pub(super) fn new(
        provider: &str,
        events: BoxStream<'static, Result<(String, String)>>,
        model: String,
    ) -> Self {
        Self {
            provider: provider.to_owned(),
            events,
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
                match st.events.next().await {
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
        let mut st = StreamState::new("p", futures::stream::empty().boxed(), "m".into());
        assert_eq!(st.call_index(0, Some("a")), 0);
        assert_eq!(st.call_index(0, None), 0);
        assert_eq!(st.call_index(0, Some("b")), 1);
        assert_eq!(st.call_index(0, None), 1);
        assert_eq!(st.call_index(1, Some("c")), 2);
    }

    use crate::provider::testing::{
        any_json, byte_stream, check_assembles, check_response, check_stream_ends_well,
        collect_all, object, openai_parts, openai_usage, split, sse_frames,
    };
    use crate::provider::{StreamAccumulator, http};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The chunks the OpenAI stream decoder makes of these bytes, delivered in these pieces.
    fn decode(pieces: Vec<Vec<u8>>) -> Vec<Result<CompletionChunk>> {
        let events = http::sse_events("openai", byte_stream(pieces)).boxed();
        collect_all(StreamState::new("openai", events, "m".into()).into_stream())
    }

    /// A chat-completion chunk shaped like the real thing, any field possibly of a wrong type
    /// or an absurd value.
    fn shaped_chunk() -> impl Strategy<Value = Value> {
        openai_parts().prop_map(|(index, content, calls, finish, tokens, error)| {
            object(vec![
                (
                    "choices",
                    Some(json!([{
                        "index": index,
                        "delta": {"content": content, "tool_calls": calls},
                        "finish_reason": finish,
                    }])),
                ),
                ("usage", Some(openai_usage(tokens))),
                ("error", error),
            ])
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_bytes_in_any_pieces_end_the_stream_cleanly(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
        ) {
            check_stream_ends_well(&decode(pieces));
        }

        #[test]
        fn any_json_events_end_the_stream_cleanly(
            events in prop::collection::vec(prop_oneof![any_json(), shaped_chunk()], 0..6),
            done in any::<bool>(),
        ) {
            let mut payloads: Vec<String> = events.iter().map(Value::to_string).collect();
            if done {
                payloads.push("[DONE]".into());
            }
            let items = decode(vec![sse_frames(&payloads, false, false)]);
            let finished = check_stream_ends_well(&items);
            if !done {
                prop_assert!(!finished, "finished without [DONE]");
            }
            check_assembles("openai", items);
        }

        #[test]
        fn a_valid_stream_decodes_the_same_however_it_is_cut(
            (texts, args, crlf, bom, pieces) in (
                prop::collection::vec(".{0,8}", 0..5),
                prop::collection::vec(any::<u32>(), 0..3),
                any::<bool>(),
                any::<bool>(),
            ).prop_flat_map(|(texts, args, crlf, bom)| {
                let mut payloads: Vec<String> = texts
                    .iter()
                    .map(|t| json!({"choices": [{"index": 0, "delta": {"content": t}}]}).to_string())
                    .collect();
                for (i, a) in args.iter().enumerate() {
                    let arguments = json!({"n": a}).to_string();
                    let (head, tail) = arguments.split_at(3);
                    payloads.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                        {"index": i, "id": format!("call_{i}"), "function": {"name": "f", "arguments": head}}
                    ]}}]}).to_string());
                    payloads.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                        {"index": i, "function": {"arguments": tail}}
                    ]}}]}).to_string());
                }
                payloads.push(json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).to_string());
                payloads.push("[DONE]".into());
                let bytes = sse_frames(&payloads, crlf, bom);
                (Just(texts), Just(args), Just(crlf), Just(bom), split(bytes))
            }),
        ) {
            let _ = (crlf, bom);
            let mut acc = StreamAccumulator::new("openai");
            for item in decode(pieces) {
                acc.push(item.map_err(|e| TestCaseError::fail(e.to_string()))?);
            }
            let response = acc.finish().map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_response(&response, &texts, &args, 4)?;
        }
    }
}
