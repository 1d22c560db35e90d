//! HTTP plumbing shared by the HTTP providers: client, base URLs, status → error mapping,
//! `Retry-After`, JSON decoding with the path of a bad field, server-sent events.
//!
//! Everything here takes what a server (or a configuration) sends and never panics on it:
//! bad values become an [`Error`] that says what was wrong, or are ignored with a debug log
//! when they are only a hint (an unreadable `Retry-After`).

mod retry_after;
mod sse;

use std::time::Duration;

use reqwest::Url;
use serde::de::DeserializeOwned;

use crate::error::{Error, ProviderErrorKind};

#[cfg(feature = "gemini")]
pub(crate) use retry_after::parse_retry_after;
pub(crate) use retry_after::retry_after;
#[cfg(test)]
pub(crate) use sse::sse_events;
pub(crate) use sse::{idle_timeout, response_events};

/// How many characters of a body an error message quotes.
const SNIPPET_CHARS: usize = 200;

/// Build the reqwest client the providers use.
pub(crate) fn client(connect_timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| Error::other("building the HTTP client", e))
}

/// Add the current span's W3C `traceparent` (see [`crate::trace`]) to a provider request, so
/// the provider's own traces join the caller's; unchanged when no propagation is registered.
pub(crate) fn with_traceparent(builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match crate::trace::current_traceparent() {
        Some(tp) => builder.header("traceparent", tp),
        None => builder,
    }
}

/// Check a configured base URL: an absolute `http` or `https` URL that paths can be appended
/// to. `section` names the configuration section in the error (`openai`, `anthropic`,
/// `google`).
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
pub(crate) async fn error_body(mut response: reqwest::Response) -> Vec<u8> {
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
#[cfg_attr(
    not(any(feature = "openai", feature = "anthropic")),
    allow(dead_code) // Gemini reads its own error object
)]
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

/// A decode error: the provider sent something that is not its wire format.
pub(crate) fn decode_error(provider: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::provider(provider, ProviderErrorKind::Decode, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]


        #[test]
        fn any_error_body_gives_a_short_message(body in any::<String>(), status in 400u16..600) {
            let message = error_body_message(status, &body);
            prop_assert!(!message.is_empty());
        }
    }
}
