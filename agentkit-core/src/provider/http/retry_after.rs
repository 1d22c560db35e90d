//! `Retry-After` (seconds or an HTTP date) and OpenAI's `retry-after-ms`, read without ever
//! panicking: absurd values are clamped, invalid ones reported.

use std::time::{Duration, SystemTime};

use super::snippet;

/// The longest `Retry-After` kept from a response (one day). A longer or unrepresentable value
/// (`1e20`, a date far in the future) is clamped to this. Whether the retry layer waits that
/// long is up to [`RetryConfig::max_retry_after`](crate::RetryConfig::max_retry_after)
/// (default 60 s): a longer wait is not done and the error is returned instead.
pub(crate) const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

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
    }
}
