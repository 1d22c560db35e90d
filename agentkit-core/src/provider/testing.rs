//! Strategies and helpers for the providers' property tests: arbitrary JSON, byte streams cut
//! at arbitrary points, and a way to drive a chunk stream to its end.

use std::future::Future;

use futures::{Stream, StreamExt};
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{CompletionChunk, CompletionResponse, StreamAccumulator};
use crate::error::{Error, Result};

/// Any JSON leaf, with the numbers a hostile server might send (huge, negative, fractional).
pub(crate) fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from(1e300)),
        ".{0,12}".prop_map(Value::String),
    ]
}

/// Any JSON value, a few levels deep.
pub(crate) fn any_json() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `value` or, sometimes, any other JSON value in its place.
pub(crate) fn or_any(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop_oneof![3 => value, 1 => any_json()]
}

/// A JSON object with these fields, each left out when its value is `None`.
pub(crate) fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
    Value::Object(map)
}

/// A leaf where a small index is likely, else any leaf.
pub(crate) fn index_like() -> impl Strategy<Value = Value> {
    or_any(prop_oneof![
        Just(Value::from(0)),
        Just(Value::from(1)),
        json_leaf()
    ])
}

#[cfg(feature = "openai")]
/// The parts of an OpenAI choice, each of the right shape or not: `(index, content, tool
/// calls, finish_reason, a token count, an optional error object)`.
pub(crate) fn openai_parts()
-> impl Strategy<Value = (Value, Value, Vec<Value>, Value, Value, Option<Value>)> {
    let call = (
        index_like(),
        or_any(json_leaf()),
        or_any(json_leaf()),
        or_any(json_leaf()),
    )
        .prop_map(|(index, id, name, arguments)| {
            serde_json::json!({"index": index, "id": id,
                               "function": {"name": name, "arguments": arguments}})
        });
    (
        index_like(),
        or_any(json_leaf()),
        prop::collection::vec(call, 0..3),
        or_any(json_leaf()),
        or_any(json_leaf()),
        prop::option::of(or_any(json_leaf())),
    )
}

#[cfg(feature = "openai")]
/// OpenAI usage with every count `tokens`.
pub(crate) fn openai_usage(tokens: Value) -> Value {
    serde_json::json!({"prompt_tokens": tokens, "completion_tokens": tokens,
                       "prompt_tokens_details": {"cached_tokens": tokens}})
}

/// `bytes` cut into pieces at arbitrary points.
pub(crate) fn split(bytes: Vec<u8>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(any::<prop::sample::Index>(), 0..10).prop_map(move |cuts| {
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in at.into_iter().chain([bytes.len()]) {
            pieces.push(bytes[start..cut].to_vec());
            start = cut;
        }
        pieces
    })
}

/// Server-sent event frames for these `data:` payloads, with LF or CRLF line ends and, when
/// `bom`, a byte-order mark in front.
pub(crate) fn sse_frames(payloads: &[String], crlf: bool, bom: bool) -> Vec<u8> {
    let end = if crlf { "\r\n" } else { "\n" };
    let mut text = String::new();
    if bom {
        text.push('\u{feff}');
    }
    for p in payloads {
        text.push_str(&format!(": keep-alive{end}data: {p}{end}{end}"));
    }
    text.into_bytes()
}

/// A byte stream delivering `pieces` one by one.
pub(crate) fn byte_stream(
    pieces: Vec<Vec<u8>>,
) -> impl Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    futures::stream::iter(pieces.into_iter().map(|p| Ok(bytes::Bytes::from(p))))
}

/// Run a future to completion on a fresh current-thread runtime.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt.block_on(future),
        Err(e) => panic!("cannot start a test runtime: {e}"),
    }
}

/// Check what any chunk stream must do on any input: end, with at most one error, and that
/// error last and saying something. Returns whether it finished with a `Finish` chunk.
pub(crate) fn check_stream_ends_well(items: &[Result<CompletionChunk>]) -> bool {
    let errors: Vec<&Error> = items.iter().filter_map(|i| i.as_ref().err()).collect();
    assert!(errors.len() <= 1, "more than one error: {errors:?}");
    match items.last() {
        Some(Err(e)) => {
            assert!(!e.to_string().trim().is_empty());
            assert!(e.provider_kind().is_some(), "not a provider error: {e:?}");
            false
        }
        Some(Ok(CompletionChunk::Finish { .. })) => {
            let finishes = items
                .iter()
                .filter(|i| matches!(i, Ok(CompletionChunk::Finish { .. })))
                .count();
            assert_eq!(finishes, 1);
            true
        }
        other => panic!("the stream ended with neither an error nor a finish: {other:?}"),
    }
}

/// Whatever chunks came through assemble into a response or fail with a provider error.
pub(crate) fn check_assembles(provider: &str, items: Vec<Result<CompletionChunk>>) {
    let mut acc = StreamAccumulator::new(provider);
    for item in items.into_iter().flatten() {
        acc.push(item);
    }
    if let Err(e) = acc.finish() {
        assert!(e.provider_kind().is_some(), "{e:?}");
    }
}

/// A response assembled from a valid stream has exactly its text, tool-call arguments
/// (`{"n": arg}` each) and output tokens.
pub(crate) fn check_response(
    response: &CompletionResponse,
    texts: &[String],
    args: &[u32],
    output_tokens: u64,
) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(response.text(), texts.concat());
    let calls: Vec<Value> = response.message.tool_calls().map(|c| c.2.clone()).collect();
    let expected: Vec<Value> = args.iter().map(|a| serde_json::json!({"n": a})).collect();
    prop_assert_eq!(calls, expected);
    prop_assert_eq!(response.usage.output_tokens, output_tokens);
    Ok(())
}

/// Drive a chunk stream to its end.
pub(crate) fn collect_all(
    stream: impl Stream<Item = Result<CompletionChunk>>,
) -> Vec<Result<CompletionChunk>> {
    block_on(stream.collect())
}
