//! Redaction: a function applied to every value before it is journaled.

use std::fmt;
use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexSet};
use serde_json::Value;

/// Masks secrets and PII in a value before it reaches the journal (and so the store, the
/// recorder and every replay) and the audit log.
///
/// The default masks API keys (`sk-…`, `sk-ant-…`, `ghp_…`, `xox…-`, AWS `AKIA…`), bearer
/// tokens, JWTs, e-mail addresses and card numbers (13 to 19 digits, spaces or dashes
/// between them, that pass the Luhn check, so order numbers and timestamps stay) in every
/// string of the value, keys of objects included. [`with_patterns`](Self::with_patterns) adds
/// your own regular expressions. Note what redaction means for durability: a step whose result was
/// redacted replays the *redacted* value after a crash, so never make control flow depend on a
/// secret that a step returns.
#[derive(Clone)]
pub struct Redactor {
    f: Arc<dyn Fn(&mut Value) + Send + Sync>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(..)")
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(mask_secrets)
    }
}

impl Redactor {
    /// A redactor running `f` on every value before it is journaled.
    pub fn new(f: impl Fn(&mut Value) + Send + Sync + 'static) -> Self {
        Self { f: Arc::new(f) }
    }

    /// A redactor that changes nothing.
    #[must_use]
    pub fn none() -> Self {
        Self::new(|_| {})
    }

    /// Run the default masking, then `f`.
    #[must_use]
    pub fn default_and(f: impl Fn(&mut Value) + Send + Sync + 'static) -> Self {
        Self::new(move |v| {
            mask_secrets(v);
            f(v);
        })
    }

    /// This redaction, then masking every match of each of `patterns` (regular expressions)
    /// with its replacement (`$1`-style group references work).
    ///
    /// ```
    /// use agentkit_runtime::Redactor;
    /// let r = Redactor::default()
    ///     .with_patterns([(r"\bEMP-\d{6}\b", "[REDACTED:employee]")])
    ///     .unwrap();
    /// let mut v = serde_json::json!({"note": "EMP-123456 paid with 4111 1111 1111 1111"});
    /// r.apply(&mut v);
    /// assert_eq!(v["note"], "[REDACTED:employee] paid with [REDACTED:card]");
    /// ```
    ///
    /// # Errors
    ///
    /// [`agentkit_core::Error::Config`] naming the pattern that is not a valid regular
    /// expression.
    pub fn with_patterns<I, P, R>(self, patterns: I) -> agentkit_core::Result<Self>
    where
        I: IntoIterator<Item = (P, R)>,
        P: AsRef<str>,
        R: Into<String>,
    {
        let mut compiled = Vec::new();
        for (i, (p, r)) in patterns.into_iter().enumerate() {
            let re = Regex::new(p.as_ref()).map_err(|e| agentkit_core::Error::Config {
                file: None,
                key: format!("redaction.patterns[{i}]"),
                message: format!("`{}` is not a valid regular expression: {e}", p.as_ref()),
            })?;
            compiled.push((re, r.into()));
        }
        let before = self.f;
        Ok(Self::new(move |v| {
            before(v);
            mask_with(v, &compiled);
        }))
    }

    /// Redact `value` in place.
    pub fn apply(&self, value: &mut Value) {
        (self.f)(value);
    }
}

/// The replacement of card numbers (only digit runs that pass the Luhn check are replaced).
const CARD: &str = "[REDACTED:card]";

/// Whether the digits of `s` (other characters ignored) pass the Luhn check.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn mask_with(value: &mut Value, patterns: &[(Regex, String)]) {
    match value {
        Value::String(s) => {
            for (re, r) in patterns {
                if re.is_match(s) {
                    *s = re.replace_all(s, r.as_str()).into_owned();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask_with(v, patterns)),
        Value::Object(map) => map.values_mut().for_each(|v| mask_with(v, patterns)),
        _ => {}
    }
}

static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{16,}", "[REDACTED:api_key]"),
        (
            r"\b(?:ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{20,}",
            "[REDACTED:api_key]",
        ),
        (r"\bxox[abpr]-[A-Za-z0-9\-]{10,}", "[REDACTED:api_key]"),
        (r"\bAKIA[0-9A-Z]{16}\b", "[REDACTED:aws_key]"),
        (
            r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{16,}=*",
            "Bearer [REDACTED]",
        ),
        (
            r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
            "[REDACTED:jwt]",
        ),
        (
            r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b",
            "[REDACTED:email]",
        ),
        (r"\b(?:\d[ \-]?){12,18}\d\b", CARD),
    ]
    .into_iter()
    .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
    .collect()
});

/// All default patterns in one automaton: one pass tells whether (and which) patterns match,
/// so the common case, a string with nothing to mask, costs one scan and no allocation.
static PATTERN_SET: LazyLock<Option<RegexSet>> =
    LazyLock::new(|| RegexSet::new(PATTERNS.iter().map(|(re, _)| re.as_str())).ok());

/// The masked string, or `None` when nothing in `s` matches a default pattern.
fn mask_if_needed(s: &str) -> Option<String> {
    let mut out: Option<String> = None;
    let hits: Vec<usize> = match PATTERN_SET.as_ref() {
        Some(set) => set.matches(s).into_iter().collect(),
        None => (0..PATTERNS.len()).collect(),
    };
    for i in hits {
        let Some((re, replacement)) = PATTERNS.get(i) else {
            continue;
        };
        let current = out.as_deref().unwrap_or(s);
        if *replacement == CARD {
            let mut changed = false;
            let masked = re.replace_all(current, |c: &regex::Captures<'_>| {
                let m = c.get(0).map_or("", |m| m.as_str());
                if luhn(m) {
                    changed = true;
                    CARD.to_owned()
                } else {
                    m.to_owned()
                }
            });
            if changed {
                out = Some(masked.into_owned());
            }
        } else if re.is_match(current) {
            out = Some(re.replace_all(current, *replacement).into_owned());
        }
    }
    out
}

/// Mask a string with the default patterns.
#[must_use]
pub fn mask_str(s: &str) -> String {
    mask_if_needed(s).unwrap_or_else(|| s.to_owned())
}

/// The default redaction: mask secrets and PII in every string of `value`.
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Some(masked) = mask_if_needed(s) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        Value::Object(map) => {
            // Rebuild the map only if a key must be masked (rare); values are masked in place.
            if map.keys().any(|k| mask_if_needed(k).is_some()) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(mask_str(&k), v);
                }
            }
            map.values_mut().for_each(mask_secrets);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn cards_are_masked_only_when_they_pass_luhn() {
        let mut v = json!({
            "visa": "card 4111 1111 1111 1111 exp 12/30",
            "amex": "378282246310005",
            "dashes": "5555-5555-5555-4444",
            "order": "order 1234567890123 shipped",
            "ts": "1733490000000000"
        });
        Redactor::default().apply(&mut v);
        assert_eq!(v["visa"], "card [REDACTED:card] exp 12/30");
        assert_eq!(v["amex"], "[REDACTED:card]");
        assert_eq!(v["dashes"], "[REDACTED:card]");
        assert_eq!(v["order"], "order 1234567890123 shipped");
        assert_eq!(v["ts"], "1733490000000000");
    }

    #[test]
    fn custom_patterns_are_checked_and_applied() {
        let err = Redactor::default()
            .with_patterns([("(unclosed", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redaction.patterns[0]"), "{err}");
        let r = Redactor::none()
            .with_patterns([(r"acct-(\d+)", "acct-[$1 hidden]")])
            .unwrap();
        let mut v = json!(["acct-42", {"k": "acct-7"}]);
        r.apply(&mut v);
        assert_eq!(v, json!(["acct-[42 hidden]", {"k": "acct-[7 hidden]"}]));
    }

    proptest! {
        /// Every valid card number is masked wherever it appears, and nothing panics.
        #[test]
        fn luhn_valid_numbers_never_survive(prefix in "[a-z ]{0,8}", body in proptest::collection::vec(0u32..10, 12..18), suffix in "[a-z ]{0,8}") {
            // Complete `body` with its Luhn check digit.
            let mut digits = body.clone();
            let sum: u32 = digits.iter().rev().enumerate().map(|(i, &d)| {
                if i % 2 == 0 { let d2 = d * 2; if d2 > 9 { d2 - 9 } else { d2 } } else { d }
            }).sum();
            digits.push((10 - sum % 10) % 10);
            let number: String = digits.iter().map(|d| char::from_digit(*d, 10).unwrap()).collect();
            prop_assert!(luhn(&number));
            let text = format!("{prefix} {number} {suffix}");
            prop_assert!(!mask_str(&text).contains(&number), "{}", mask_str(&text));
        }
    }

    #[test]
    fn default_masks_keys_tokens_and_emails_but_not_prose() {
        let mut v = json!({
            "auth": "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
            "nested": ["key sk-proj-ABCDEFGHIJKLMNOPQRSTUV please", "mail bob@example.com"],
            "aws": "AKIAIOSFODNN7EXAMPLE",
            "plain": "It is 18 degrees in Lisbon on 2026-11-23.",
            "n": 42
        });
        Redactor::default().apply(&mut v);
        let s = v.to_string();
        assert!(!s.contains("abcdefghijklmnopqrstuvwxyz012345"), "{s}");
        assert!(!s.contains("sk-proj-ABCDEFGHIJKLMNOPQRSTUV"), "{s}");
        assert!(!s.contains("bob@example.com"), "{s}");
        assert!(!s.contains("AKIAIOSFODNN7EXAMPLE"), "{s}");
        assert_eq!(v["plain"], "It is 18 degrees in Lisbon on 2026-11-23.");
        assert_eq!(v["n"], 42);
        // Keys are masked too, and values under masked keys keep being masked.
        let mut v =
            json!({"bob@example.com": {"token": "Bearer abcdefghijklmnopqrstuvwxyz012345"}});
        Redactor::default().apply(&mut v);
        assert_eq!(
            v,
            json!({"[REDACTED:email]": {"token": "Bearer [REDACTED]"}})
        );
    }
}
