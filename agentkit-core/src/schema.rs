//! JSON schemas derived with `schemars`.

use schemars::JsonSchema;
use serde_json::Value;

/// The JSON schema of `T` as a `serde_json::Value`, without the `$schema` meta key (providers
/// reject it in tool and response schemas).
#[must_use]
pub fn schema_value<T: JsonSchema>() -> Value {
    let schema = schemars::schema_for!(T);
    let mut value = schema.to_value();
    if let Value::Object(map) = &mut value {
        map.remove("$schema");
    }
    value
}

/// A schema name usable by providers (`[a-zA-Z0-9_-]`, at most 64 chars) for `T`.
#[must_use]
pub fn schema_name<T: JsonSchema>() -> String {
    sanitize_name(&T::schema_name())
}

/// Replace characters outside `[a-zA-Z0-9_-]` with `_` and cut to 64 chars.
#[must_use]
pub fn sanitize_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s.push_str("output");
    }
    s.truncate(64);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Plan {
        steps: Vec<String>,
    }

    #[test]
    fn schema_has_no_meta_key() {
        let v = schema_value::<Plan>();
        assert!(v.get("$schema").is_none());
        assert_eq!(v["type"], "object");
        assert_eq!(schema_name::<Plan>(), "Plan");
        assert_eq!(sanitize_name("Vec<Plan>"), "Vec_Plan_");
    }
}
