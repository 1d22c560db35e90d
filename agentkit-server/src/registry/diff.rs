//! A structural diff of two specs: the JSON paths whose values differ.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One difference between two specs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Change {
    /// A JSON pointer (RFC 6901) to the value that differs.
    pub path: String,
    /// The value in the first spec (absent: added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The value in the second spec (absent: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// Every path where `a` and `b` differ, in path order: objects are compared key by key,
/// arrays index by index, anything else as a whole.
#[must_use]
pub fn diff_specs(a: &Value, b: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk(String::new(), Some(a), Some(b), &mut out);
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Change>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                walk(format!("{path}/{}", escape(k)), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                walk(format!("{path}/{i}"), x.get(i), y.get(i), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            path: if path.is_empty() { "/".into() } else { path },
            from: a.cloned(),
            to: b.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_changed_added_and_removed_paths() {
        let a = json!({"model": "m1", "servers": ["a", "b"], "limits": {"timeout": 5}, "x/y": 1});
        let b = json!({"model": "m2", "servers": ["a"], "limits": {"timeout": 5, "max": 2}});
        let d = diff_specs(&a, &b);
        let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/limits/max", "/model", "/servers/1", "/x~1y"]);
        assert_eq!(d[1].from, Some(json!("m1")));
        assert_eq!(d[1].to, Some(json!("m2")));
        assert!(d[0].from.is_none());
        assert!(d[2].to.is_none());
        assert!(diff_specs(&a, &a).is_empty());
    }
}
