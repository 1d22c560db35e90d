//! HTTP plumbing shared by the HTTP providers: client, status → error mapping, `Retry-After`,
//! server-sent events.

use std::time::Duration;

use futures::{Stream, StreamExt};

use crate::error::{Error, ProviderErrorKind};

/// Build the reqwest client the providers use.
pub(crate) fn client(connect_timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .map_err(|e| Error::other("building the HTTP client", e))
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

/// Parse `Retry-After` (seconds or an HTTP date) and OpenAI's `retry-after-ms`.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Minimal IMF-fixdate parser (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn httpdate_parse(s: &str) -> Option<std::time::SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: u64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as u64
        + 1;
    let year: u64 = parts[3].parse().ok()?;
    let hms: Vec<u64> = parts[4].split(':').filter_map(|p| p.parse().ok()).collect();
    if hms.len() != 3 || year < 1970 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Turn a non-success HTTP response into an error, reading the provider's error message from
/// the body (`{"error": {"message": ...}}` for both OpenAI and Anthropic).
pub(crate) async fn status_error(provider: &str, response: reqwest::Response) -> Error {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            let mut b = body.trim().to_owned();
            b.truncate(500);
            if b.is_empty() {
                format!("HTTP {status} with an empty body")
            } else {
                b
            }
        });
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

/// The server-sent events of a streaming response, as `(event, data)` pairs.
pub(crate) fn sse_events(
    provider: &str,
    response: reqwest::Response,
) -> impl Stream<Item = Result<(String, String), Error>> + Send + 'static {
    use eventsource_stream::Eventsource;
    let provider = provider.to_owned();
    response.bytes_stream().eventsource().map(move |r| match r {
        Ok(ev) => Ok((ev.event, ev.data)),
        Err(e) => Err(Error::Provider {
            provider: provider.clone(),
            kind: ProviderErrorKind::Stream,
            status: None,
            message: format!("the event stream broke: {e}"),
            retry_after: None,
            source: None,
        }),
    })
}

/// A decode error: the provider sent something that is not its wire format.
pub(crate) fn decode_error(provider: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::provider(provider, ProviderErrorKind::Decode, format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_dates() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
    }

    #[test]
    fn retry_after_seconds_and_ms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }
}
