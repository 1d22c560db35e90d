//! Server-sent events of `streamGenerateContent?alt=sse` → [`CompletionChunk`]s.
//!
//! Each event's `data` is a whole `GenerateContentResponse` carrying the new text (a delta),
//! whole function calls, and the running usage; the last one has a `finishReason`. There is
//! no end marker: the stream is complete when it closes after a `finishReason`.

use futures::StreamExt;
use futures::stream::BoxStream;

use super::PROVIDER;
use super::response::{Turn, WireResponse};
use crate::error::{Error, ProviderErrorKind, Result};
use crate::provider::http;
use crate::provider::{ChunkStream, CompletionChunk};

/// The chunks of a streamed answer, from its server-sent events.
pub(super) fn chunk_stream(
    events: BoxStream<'static, Result<(String, String)>>,
    model: String,
) -> ChunkStream {
    let turn = Turn::new(model);
    futures::stream::unfold(Some((events, turn)), |st| async move {
        let (mut events, mut turn) = st?;
        loop {
            match events.next().await {
                Some(Ok((_event, data))) => match on_event(&mut turn, &data) {
                    Ok(chunks) if chunks.is_empty() => continue,
                    Ok(chunks) => {
                        let items: Vec<Result<CompletionChunk>> =
                            chunks.into_iter().map(Ok).collect();
                        return Some((items, Some((events, turn))));
                    }
                    Err(e) => return Some((vec![Err(e)], None)),
                },
                Some(Err(e)) => return Some((vec![Err(e)], None)),
                None if turn.ended() => return Some((vec![Ok(turn.finish())], None)),
                None => {
                    return Some((
                        vec![Err(Error::provider(
                            PROVIDER,
                            ProviderErrorKind::Stream,
                            "the event stream ended before a `finishReason`; the answer is \
                             incomplete (retry the request)",
                        ))],
                        None,
                    ));
                }
            }
        }
    })
    .flat_map(futures::stream::iter)
    .boxed()
}

fn on_event(turn: &mut Turn, data: &str) -> Result<Vec<CompletionChunk>> {
    let data = data.trim();
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let wire: WireResponse =
        http::decode_json(PROVIDER, "Gemini", "a stream event", data.as_bytes())?;
    turn.on_response(wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::collect_stream;
    use crate::provider::testing::{
        any_json, byte_stream, check_assembles, check_response, check_stream_ends_well,
        collect_all, split, sse_frames,
    };
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn decode(pieces: Vec<Vec<u8>>) -> Vec<Result<CompletionChunk>> {
        let events = http::sse_events(PROVIDER, byte_stream(pieces)).boxed();
        collect_all(chunk_stream(events, "m".into()))
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
            events in prop::collection::vec(
                prop_oneof![any_json(), super::super::response::tests::shaped_response()], 0..6),
        ) {
            let payloads: Vec<String> = events.iter().map(Value::to_string).collect();
            let items = decode(vec![sse_frames(&payloads, false, false)]);
            check_stream_ends_well(&items);
            check_assembles(PROVIDER, items);
        }

        #[test]
        fn a_valid_stream_decodes_the_same_however_it_is_cut(
            (texts, args, pieces) in (
                prop::collection::vec(".{0,8}", 0..5),
                prop::collection::vec(any::<u32>(), 0..3),
                any::<bool>(),
                any::<bool>(),
            ).prop_flat_map(|(texts, args, crlf, bom)| {
                let mut events: Vec<Value> = texts.iter().map(|t| json!({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
                    "modelVersion": "gemini-2.5-flash",
                })).collect();
                for (i, a) in args.iter().enumerate() {
                    events.push(json!({"candidates": [{"content": {"role": "model", "parts": [
                        {"functionCall": {"name": "f", "args": {"n": a}}, "thoughtSignature": format!("s{i}")}
                    ]}, "index": 0}]}));
                }
                events.push(json!({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7},
                }));
                let payloads: Vec<String> = events.iter().map(Value::to_string).collect();
                (Just(texts), Just(args), split(sse_frames(&payloads, crlf, bom)))
            }),
        ) {
            let events = http::sse_events(PROVIDER, byte_stream(pieces)).boxed();
            let response = crate::provider::testing::block_on(collect_stream(PROVIDER, chunk_stream(events, "m".into())))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_response(&response, &texts, &args, 4)?;
            let signatures = response.message.content.iter()
                .filter(|c| matches!(c, crate::Content::ProviderData { .. }))
                .count();
            prop_assert_eq!(signatures, args.len());
            let stop = if args.is_empty() { crate::StopReason::EndTurn } else { crate::StopReason::ToolUse };
            prop_assert_eq!(response.stop_reason, stop);
        }
    }
}
