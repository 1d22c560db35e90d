//! HTTP plumbing shared by the HTTP providers: client, base URLs, status → error mapping,
//! `Retry-After`, JSON decoding with the path of a bad field, server-sent events.
//!
//! Everything here takes what a server (or a configuration) sends and never panics on it:
//! bad values become an [`Error`] that says what was wrong, or are ignored with a debug log
//! when they are only a hint (an unreadable `Retry-After`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStream, TryStreamExt};
use reqwest::Url;
use serde::de::DeserializeOwned;

use crate::error::{Error, ProviderErrorKind};

/// The longest `Retry-After` kept from a response (one day). A longer or unrepresentable value
/// (`1e20`, a date far in the future) is clamped to this. Whether the retry layer waits that
/// long is up to [`RetryConfig::max_retry_after`](crate::RetryConfig::max_retry_after)
/// (default 60 s): a longer wait is not done and the error is returned instead.
pub(crate) const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// How many characters of a body an error message quotes.
const SNIPPET_CHARS: usize = 200;

/// Build the reqwest client the providers use.
pub(crate) fn client(connect_timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| Error::other("building the HTTP client", e))
}

/// Check a configured base URL: an absolute `http` or `https` URL that paths can be appended
/// to. `section` names the configuration section in the error (`openai`, `anthropic`).
pub(crate) fn base_url(section: &str, raw: &str, example: &str) -> Result<Url, Error> {
    let raw = raw.trim();
    Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
        .ok_or_else(|| Error::Config {
            file: None,
            key: format!("{section}.base_url"),
            message: format!("`{raw}` is not an absolute http(s) URL; use e.g. {example}"),
        })
}

/// The longest request timeout a configuration may set (one week); longer is surely a typo.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Check a configured `timeout_seconds`: a positive, finite number of seconds of at most a
/// week. `section` names the configuration section in the error.
pub(crate) fn timeout_seconds(section: &str, secs: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero() && *d <= MAX_TIMEOUT)
        .ok_or_else(|| Error::Config {
            file: None,
            key: format!("{section}.timeout_seconds"),
            message: format!(
                "expected a positive number of seconds of at most {} (a week), got {secs}",
                MAX_TIMEOUT.as_secs()
            ),
        })
}

/// Check a configured timeout: zero would fail every request, so it is a configuration error.
pub(crate) fn check_timeout(section: &str, timeout: Option<Duration>) -> Result<(), Error> {
    match timeout {
        Some(t) if t.is_zero() => Err(Error::Config {
            file: None,
            key: format!("{section}.timeout"),
            message: "a timeout of zero would fail every request; use a positive duration, \
                      or none to wait forever"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Map a transport-level reqwest error.
pub(crate) fn transport_error(provider: &str, e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ProviderErrorKind::Timeout
    } else if e.is_connect() || e.is_request() || e.is_body() {
        ProviderErrorKind::Connect
    } else if e.is_decode() {
        ProviderErrorKind::Decode
    } else {
        ProviderErrorKind::Connect
    };
    Error::Provider {
        provider: provider.to_owned(),
        kind,
        status: e.status().map(|s| s.as_u16()),
        message: e.to_string(),
        retry_after: None,
        source: Some(Box::new(e)),
    }
}

/// The kind of error an HTTP status means.
pub(crate) fn kind_for_status(status: u16) -> ProviderErrorKind {
    match status {
        401 | 403 => ProviderErrorKind::Auth,
        408 => ProviderErrorKind::Timeout,
        429 => ProviderErrorKind::RateLimited,
        503 | 529 => ProviderErrorKind::Overloaded,
        500..=599 => ProviderErrorKind::Server,
        _ => ProviderErrorKind::BadRequest,
    }
}

/// Parse a `Retry-After` value: a number of seconds (integer as RFC 9110 says, or a decimal as
/// some servers send) or an HTTP date, relative to `now`. The result is clamped to
/// [`RETRY_AFTER_CEILING`]; a date in the past means "now" (zero).
///
/// # Errors
///
/// A message saying why the value is neither a non-negative number nor an HTTP date.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Result<Duration, String> {
    let value = value.trim();
    if value.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '-' | '+' | '.'))
        || value.eq_ignore_ascii_case("nan")
        || value
            .to_ascii_lowercase()
            .trim_start_matches(['+', '-'])
            .starts_with("inf")
    {
        return seconds(value, 1.0);
    }
    let when = httpdate::parse_http_date(value).map_err(|_| {
        format!(
            "`{}` is neither a number of seconds nor an HTTP date",
            snippet(value)
        )
    })?;
    Ok(when
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(RETRY_AFTER_CEILING))
}

/// Parse OpenAI's `retry-after-ms` (milliseconds, possibly fractional), clamped to
/// [`RETRY_AFTER_CEILING`].
///
/// # Errors
///
/// A message saying why the value is not a non-negative number of milliseconds.
pub(crate) fn parse_retry_after_ms(value: &str) -> Result<Duration, String> {
    seconds(value.trim(), 1000.0)
}

/// `value / per_second` seconds as a duration, clamped to [`RETRY_AFTER_CEILING`].
fn seconds(value: &str, per_second: f64) -> Result<Duration, String> {
    let unit = if per_second == 1.0 {
        "seconds"
    } else {
        "milliseconds"
    };
    let n: f64 = value
        .parse()
        .map_err(|_| format!("`{}` is not a number of {unit}", snippet(value)))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!(
            "`{}` is not a non-negative, finite number of {unit}",
            snippet(value)
        ));
    }
    let secs = (n / per_second).min(RETRY_AFTER_CEILING.as_secs_f64());
    // In range by the checks above; the fallback only guards the conversion itself.
    Ok(Duration::try_from_secs_f64(secs).unwrap_or(RETRY_AFTER_CEILING))
}

/// The wait a response asks for: OpenAI's `retry-after-ms`, else `Retry-After` (seconds or an
/// HTTP date). An unreadable value is logged and ignored; it is only a hint.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        let raw = headers.get(name)?;
        match raw.to_str() {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::debug!(header = name, "ignoring a header that is not visible ASCII");
                None
            }
        }
    };
    let parsed = |name: &str, r: Result<Duration, String>| match r {
        Ok(d) => Some(d),
        Err(why) => {
            tracing::debug!(header = name, "ignoring an unreadable header: {why}");
            None
        }
    };
    header("retry-after-ms")
        .and_then(|v| parsed("retry-after-ms", parse_retry_after_ms(v)))
        .or_else(|| {
            header("retry-after")
                .and_then(|v| parsed("retry-after", parse_retry_after(v, SystemTime::now())))
        })
}

/// The first [`SNIPPET_CHARS`] characters of `text`, with `…` when there was more.
pub(crate) fn snippet(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(SNIPPET_CHARS).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// The provider's message in an error body (`{"error": {"message": ...}}` for both OpenAI and
/// Anthropic), else the start of the body.
pub(crate) fn error_body_message(status: u16, body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            let body = body.trim();
            if body.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                snippet(body)
            }
        })
}

/// How much of an error response's body is read (a hostile or broken server may send
/// gigabytes with a 500).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The start of an error response's body, at most [`MAX_ERROR_BODY`] bytes; a body that breaks
/// off is what arrived until then.
async fn error_body(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    body
}

/// Turn a non-success HTTP response into an error, reading the provider's error message from
/// the body.
pub(crate) async fn status_error(provider: &str, response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = error_body(response).await;
    let message = error_body_message(status, &String::from_utf8_lossy(&body));
    let hint = match status {
        401 | 403 => " (check the API key)",
        404 => " (check the base URL and the model name)",
        _ => "",
    };
    Error::Provider {
        provider: provider.to_owned(),
        kind: kind_for_status(status),
        status: Some(status),
        message: format!("{message}{hint}"),
        retry_after,
        source: None,
    }
}

/// Decode a JSON body, naming the path of the offending field and quoting the start of the
/// body in the error. `format` names the wire format (`OpenAI`, `Messages API`).
pub(crate) fn decode_json<T: DeserializeOwned>(
    provider: &str,
    format: &str,
    what: &str,
    bytes: &[u8],
) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body = || snippet(&String::from_utf8_lossy(bytes));
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!(" at `{path}`")
        };
        decode_error(
            provider,
            &format!("{what} is not in the {format} format{at}"),
            format!("{} (body starts with: {})", e.into_inner(), body()),
        )
    })?;
    // Data after the document is as wrong as a bad document.
    de.end().map_err(|e| {
        decode_error(
            provider,
            &format!("{what} is not in the {format} format"),
            format!("{e} (body starts with: {})", body()),
        )
    })?;
    Ok(value)
}

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

/// A decode error: the provider sent something that is not its wire format.
pub(crate) fn decode_error(provider: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::provider(provider, ProviderErrorKind::Decode, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_seconds_ms_and_http_dates() {
        let now = at(784_111_777 - 30);
        assert_eq!(parse_retry_after("3", now), Ok(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Ok(Duration::from_secs(30))
        );
        // A date in the past means: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Ok(Duration::ZERO)
        );
        assert_eq!(parse_retry_after_ms("250"), Ok(Duration::from_millis(250)));

        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        // An unreadable retry-after-ms falls back to retry-after.
        h.insert("retry-after-ms", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn absurd_retry_after_values_are_clamped_or_rejected_not_a_panic() {
        let now = SystemTime::now();
        for huge in [
            "1e20",
            "1e300",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_retry_after(huge, now),
                Ok(RETRY_AFTER_CEILING),
                "{huge}"
            );
            assert_eq!(
                parse_retry_after_ms(huge),
                Ok(RETRY_AFTER_CEILING),
                "{huge}"
            );
        }
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Ok(RETRY_AFTER_CEILING)
        );
        for bad in [
            "-1",
            "-0.5",
            "NaN",
            "inf",
            "-inf",
            "+infinity",
            "1e400",
            "-1e400",
        ] {
            let err = parse_retry_after(bad, now).unwrap_err();
            assert!(err.contains(bad) || err.contains("number"), "{bad}: {err}");
            assert!(parse_retry_after_ms(bad).is_err(), "{bad}");
        }
        let err = parse_retry_after("tomorrow-ish", now).unwrap_err();
        assert!(
            err.contains("neither a number of seconds nor an HTTP date"),
            "{err}"
        );
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "1e20".parse().unwrap());
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_CEILING));
        h.insert("retry-after", "-3".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_bodies_are_quoted_by_characters_not_bytes() {
        // 900 bytes of 3-byte characters: cutting at byte 500 (as before) split one and panicked.
        let body = "€".repeat(300);
        let message = error_body_message(500, &body);
        assert_eq!(message.chars().count(), SNIPPET_CHARS + 1);
        assert!(message.ends_with('…'));
        assert_eq!(error_body_message(502, "  "), "HTTP 502 with an empty body");
        assert_eq!(
            error_body_message(400, r#"{"error":{"message":"bad model"}}"#),
            "bad model"
        );
    }

    #[test]
    fn base_urls_must_be_absolute_http_urls() {
        assert!(base_url("openai", " http://localhost:11434/v1 ", "x").is_ok());
        for bad in [
            "localhost:8080",
            "ftp://x",
            "",
            "mailto:a@b",
            "http://",
            "not a url",
        ] {
            let err = base_url("openai", bad, "https://api.openai.com/v1").unwrap_err();
            assert!(err.to_string().contains("openai.base_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn decode_names_the_path_of_a_bad_field() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            n: u32,
        }
        let err = decode_json::<T>("p", "F", "the body", br#"{"n": -1}"#).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("at `n`") && text.contains("not in the F format"),
            "{text}"
        );
        let err = decode_json::<T>("p", "F", "the body", br#"{"n": 1} trailing"#).unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::Decode));
    }

    #[test]
    fn configured_timeouts_must_be_positive_finite_and_at_most_a_week() {
        assert_eq!(
            timeout_seconds("openai", 2.5).unwrap(),
            Duration::from_millis(2500)
        );
        assert!(check_timeout("openai", Some(Duration::ZERO)).is_err());
        assert!(check_timeout("openai", None).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e20, 1e300, 604_801.0] {
            let err = timeout_seconds("anthropic", bad).unwrap_err();
            assert!(
                err.to_string().contains("anthropic.timeout_seconds"),
                "{bad}: {err}"
            );
        }
    }

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_retry_after_text_is_a_bounded_wait_or_a_clear_error(value in ".{0,40}") {
            match parse_retry_after(&value, SystemTime::now()) {
                Ok(d) => prop_assert!(d <= RETRY_AFTER_CEILING),
                Err(why) => prop_assert!(
                    why.contains("number of seconds") || why.contains("HTTP date"),
                    "{why}"
                ),
            }
            match parse_retry_after_ms(&value) {
                Ok(d) => prop_assert!(d <= RETRY_AFTER_CEILING),
                Err(why) => prop_assert!(why.contains("milliseconds"), "{why}"),
            }
        }

        #[test]
        fn any_number_as_retry_after_is_a_bounded_wait_or_a_clear_error(n in any::<f64>()) {
            for text in [n.to_string(), format!("{n:e}")] {
                match parse_retry_after(&text, SystemTime::now()) {
                    Ok(d) => {
                        prop_assert!(n >= 0.0 || n == 0.0);
                        prop_assert!(d <= RETRY_AFTER_CEILING);
                    }
                    Err(why) => {
                        prop_assert!(!(n.is_finite() && n >= 0.0), "{text}: {why}");
                        prop_assert!(why.contains("non-negative"), "{text}: {why}");
                    }
                }
            }
        }

        #[test]
        fn any_http_date_is_a_bounded_wait(secs in 0u64..253_402_300_799, now in 0u64..4_102_444_800) {
            let date = httpdate::fmt_http_date(at(secs));
            let d = parse_retry_after(&date, at(now)).unwrap();
            prop_assert_eq!(d, Duration::from_secs(secs.saturating_sub(now)).min(RETRY_AFTER_CEILING));
        }

        #[test]
        fn any_error_body_gives_a_short_message(body in any::<String>(), status in 400u16..600) {
            let message = error_body_message(status, &body);
            prop_assert!(!message.is_empty());
        }
    }
}
