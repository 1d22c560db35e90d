//! Redaction: a function applied to every value before it is journaled.

use std::fmt;
use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexSet};
use serde_json::Value;

/// Masks secrets and PII in a value before it reaches the journal (and so the store, the
/// recorder and every replay).
///
/// The default masks API keys (`sk-…`, `sk-ant-…`, `ghp_…`, `xox…-`, AWS `AKIA…`), bearer
/// tokens, JWTs, e-mail addresses and card-like digit runs in every string of the value,
/// keys of objects included. Note what redaction means for durability: a step whose result was
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

    /// Redact `value` in place.
    pub fn apply(&self, value: &mut Value) {
        (self.f)(value);
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
        (r"\b(?:\d[ \-]?){13,16}\b", "[REDACTED:card]"),
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
        if re.is_match(current) {
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
    use serde_json::json;

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
