//! Key paths (`mcp.servers.github.args[1]`), finding a key's line and column in a YAML or
//! JSON text, and turning serde's messages into ones a config author can act on.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;

pub(crate) use super::keypath::{KeyPath, Seg};

impl KeyPath {
    /// The path serde_path_to_error recorded.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        let mut segs = Vec::new();
        for seg in path.iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => segs.push(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => segs.push(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. } => {}
                serde_path_to_error::Segment::Unknown => break,
            }
        }
        Self(segs)
    }

    /// The value at this path in `tree`.
    pub(crate) fn get_mut<'a>(&self, tree: &'a mut Value) -> Option<&'a mut Value> {
        let mut node = tree;
        for seg in &self.0 {
            node = match (seg, node) {
                (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str())?,
                (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

/// A map key as text, for comparison with a [`Seg::Key`].
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        _ => "?".to_owned(),
    }
}

/// The 1-based line and column where the value at `path` starts in `text` (YAML or JSON),
/// or `None` if the text has no such value.
pub(crate) fn locate(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    if path.is_empty() {
        return None;
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Walk { path: &path.0 }).deserialize(de) {
        // The walk reports "found" by failing at the target, so the error carries its mark.
        Err(e) => e.location().map(|l| (l.line(), l.column())),
        Ok(()) => None,
    }
}

/// Like [`locate`], but falls back to the longest prefix of `path` that exists.
pub(crate) fn locate_prefix(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    (1..=path.0.len())
        .rev()
        .find_map(|n| locate(text, &KeyPath(path.0[..n].to_vec())))
}

struct Walk<'p> {
    path: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.path.is_empty() {
            d.deserialize_any(Target)
        } else {
            d.deserialize_any(self)
        }
    }
}

/// Fails on whatever it is given: the deserializer attaches the value's position.
struct Target;

impl<'de> Visitor<'de> for Target {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nothing (locating a key)")
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let want = match self.path.first() {
            Some(Seg::Key(k)) => Some(k.as_str()),
            _ => None,
        };
        while let Some(key) = map.next_key::<Value>()? {
            if want.is_some_and(|w| w == key_text(&key)) {
                map.next_value_seed(Walk {
                    path: &self.path[1..],
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let want = match self.path.first() {
            Some(Seg::Index(i)) => Some(*i),
            _ => None,
        };
        let mut i = 0;
        loop {
            let found = if want == Some(i) {
                seq.next_element_seed(Walk {
                    path: &self.path[1..],
                })?
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if found.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Rewrites serde's `invalid type: map, expected a sequence` as
/// `expected a list, found a map`, and suggests the closest valid key for unknown fields.
pub(crate) fn humanize(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.split_once(", expected ")
        {
            return format!(
                "expected {}, found {}",
                expected_text(expected),
                found_text(found)
            );
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, tail)) = rest.split_once('`')
    {
        let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let mut out = format!("unknown key `{field}`");
        if valid.is_empty() {
            out.push_str("; this section takes no keys");
        } else {
            out.push_str("; valid keys are ");
            out.push_str(&valid.join(", "));
            if let Some(best) = closest(field, &valid) {
                out.push_str(&format!(" (did you mean `{best}`?)"));
            }
        }
        return out;
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, tail)) = rest.split_once('`')
    {
        let valid: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let mut out = format!("unknown value `{value}`");
        if !valid.is_empty() {
            out.push_str("; expected one of ");
            out.push_str(&valid.join(", "));
            if let Some(best) = closest(value, &valid) {
                out.push_str(&format!(" (did you mean `{best}`?)"));
            }
        }
        return out;
    }
    message.to_owned()
}

fn expected_text(expected: &str) -> String {
    match expected {
        "a sequence" => "a list".to_owned(),
        "a map" => "a map".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        e if e.starts_with("struct ") => format!("a map ({})", &e["struct ".len()..]),
        e => e.to_owned(),
    }
}

fn found_text(found: &str) -> String {
    match found {
        "map" => "a map".to_owned(),
        "sequence" => "a list".to_owned(),
        "unit value" => "nothing (null)".to_owned(),
        f if f.starts_with("string ") => format!("the string {}", &f["string ".len()..]),
        f => f.to_owned(),
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys_and_list_items() {
        let text = "mcp:\n  servers:\n    gh:\n      args:\n        - a\n        - b\n";
        let path = KeyPath::keys(["mcp", "servers", "gh", "args"]).index(1);
        assert_eq!(path.to_string(), "mcp.servers.gh.args[1]");
        assert_eq!(locate(text, &path), Some((6, 11)));
        assert_eq!(locate(text, &KeyPath::keys(["mcp", "nope"])), None);
        let missing = KeyPath::keys(["mcp", "servers", "gh", "env"]);
        assert_eq!(locate_prefix(text, &missing), Some((4, 7)));
    }

    #[test]
    fn locates_in_json() {
        let text = "{\n  \"mcpServers\": {\n    \"x\": {\"args\": {\"a\": 1}}\n  }\n}";
        let path = KeyPath::keys(["mcpServers", "x", "args"]);
        assert_eq!(locate(text, &path), Some((3, 19)));
    }

    #[test]
    fn humanizes_serde_messages() {
        assert_eq!(
            humanize("invalid type: map, expected a sequence"),
            "expected a list, found a map"
        );
        let m = humanize("unknown field `mpc`, expected one of `openai`, `mcp`, `logger`");
        assert_eq!(
            m,
            "unknown key `mpc`; valid keys are openai, mcp, logger (did you mean `mcp`?)"
        );
    }
}
