//! Server-sent events: bytes → `(event, data)` pairs (with the `sse-stream` decoder), a cap on
//! the size of one event, and an idle timeout between events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStream, TryStreamExt};

use crate::error::{Error, ProviderErrorKind};

/// The most bytes one server-sent event may take (16 MiB): a server that sends a line without
/// end must not fill the memory.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Why the bytes under an event stream could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("one event is larger than {0} bytes (or never ends)")]
    EventTooLarge(usize),
    #[error(transparent)]
    Transport(Box<dyn std::error::Error + Send + Sync>),
}

/// The server-sent events of a byte stream, as `(event, data)` pairs. Blocks without `data`
/// (comments, `retry:`-only blocks) are skipped; an event without a name is `message`. A
/// decoding failure (invalid UTF-8 in a field, an event larger than 16 MiB, a broken
/// connection) ends the stream with an error of kind [`ProviderErrorKind::Stream`].
pub(crate) fn sse_events<S>(
    provider: &str,
    bytes: S,
) -> impl Stream<Item = Result<(String, String), Error>> + Send + 'static
where
    S: TryStream + Send + 'static,
    S::Ok: bytes::Buf + Send,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    sse_events_limited(provider, bytes, MAX_EVENT_BYTES)
}

/// [`sse_events`] with at most `limit` bytes read per event.
fn sse_events_limited<S>(
    provider: &str,
    bytes: S,
    limit: usize,
) -> impl Stream<Item = Result<(String, String), Error>> + Send + 'static
where
    S: TryStream + Send + 'static,
    S::Ok: bytes::Buf + Send,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    // Bytes read since the decoder last gave an event out.
    let unread = Arc::new(AtomicUsize::new(0));
    let counted = {
        let unread = Arc::clone(&unread);
        bytes.into_stream().map(move |r| match r {
            Ok(buf) => {
                let n = bytes::Buf::remaining(&buf);
                if unread.fetch_add(n, Ordering::Relaxed).saturating_add(n) > limit {
                    Err(ReadError::EventTooLarge(limit))
                } else {
                    Ok(buf)
                }
            }
            Err(e) => Err(ReadError::Transport(Box::new(e))),
        })
    };
    let provider = provider.to_owned();
    sse_stream::SseByteStream::new(counted).filter_map(move |r| {
        let item = match r {
            Ok(ev) => {
                unread.store(0, Ordering::Relaxed);
                ev.data.map(|data| {
                    let event = ev.event.unwrap_or_else(|| "message".to_owned());
                    Ok((event, data))
                })
            }
            Err(e) => Some(Err(Error::provider(
                provider.clone(),
                ProviderErrorKind::Stream,
                format!("the event stream broke: {e}"),
            ))),
        };
        std::future::ready(item)
    })
}

/// The server-sent events of a streaming response; see [`sse_events`].
pub(crate) fn response_events(
    provider: &str,
    response: reqwest::Response,
) -> impl Stream<Item = Result<(String, String), Error>> + Send + 'static {
    sse_events(provider, response.bytes_stream())
}

/// `events`, ending with a [`ProviderErrorKind::Timeout`] error when nothing arrives for
/// `idle` (a stalled server must not hang a stream forever); `None` waits forever.
pub(crate) fn idle_timeout<S>(
    provider: &str,
    events: S,
    idle: Option<Duration>,
) -> BoxStream<'static, Result<(String, String), Error>>
where
    S: Stream<Item = Result<(String, String), Error>> + Send + 'static,
{
    let Some(limit) = idle else {
        return events.boxed();
    };
    let provider = provider.to_owned();
    futures::stream::unfold(Some(events.boxed()), move |events| {
        let provider = provider.clone();
        async move {
            let mut events = events?;
            match tokio::time::timeout(limit, events.next()).await {
                Ok(Some(item)) => Some((item, Some(events))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(Error::provider(
                        provider,
                        ProviderErrorKind::Timeout,
                        format!("the stream sent nothing for {limit:?}"),
                    )),
                    None,
                )),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_without_end_is_an_error_not_a_full_memory() {
        let frames =
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("data: {}\n\n"))])
                .chain(futures::stream::repeat_with(|| {
                    Ok(bytes::Bytes::from(vec![b'x'; 100]))
                }));
        let items: Vec<_> = sse_events_limited("p", frames, 1000).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().1, "{}");
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Stream));
        assert!(err.to_string().contains("larger than 1000 bytes"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_ends_with_a_timeout() {
        let events = futures::stream::iter([Ok(("message".to_owned(), "1".to_owned()))])
            .chain(futures::stream::pending());
        let items: Vec<_> = idle_timeout("p", events, Some(Duration::from_secs(5)))
            .collect()
            .await;
        assert_eq!(items.len(), 2);
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Timeout));
        assert!(err.to_string().contains("sent nothing for 5s"), "{err}");
    }
}
