//! JSON Schema → Gemini's `Schema` (a subset of the OpenAPI 3.0 schema object), for
//! `responseSchema` and function `parameters`.

use serde_json::{Map, Value, json};

/// How often one `$ref` may be expanded inside itself; a recursive schema is cut there.
const MAX_RECURSION: usize = 2;
/// How deep a schema is followed at all.
const MAX_DEPTH: usize = 32;
/// How many schema nodes one conversion produces at most (a schema whose references fan out
/// must not take exponential time).
const MAX_NODES: usize = 10_000;

/// The state of one conversion.
struct Ctx<'a> {
    root: &'a Value,
    /// The `$ref`s being expanded, outermost first.
    refs: Vec<String>,
    /// Nodes left to produce.
    budget: usize,
}

/// Keys copied as they are (Gemini's names are JSON Schema's).
const KEPT: &[&str] = &[
    "title",
    "description",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minProperties",
    "maxProperties",
    "propertyOrdering",
    "example",
    "default",
    "nullable",
];

/// Convert a JSON Schema (as `schemars` or an MCP server writes it) into the schema Gemini
/// accepts in `responseSchema` and function declarations.
///
/// - `$ref`s to `#/$defs/…` or `#/definitions/…` are inlined (a recursive schema is cut
///   after 24 levels to a bare `OBJECT`);
/// - `type` becomes upper case (`STRING`, `OBJECT`, ...); a `null` in a type list, in `anyOf`
///   or in `oneOf` becomes `nullable: true`; several other types become `anyOf`;
/// - `oneOf` becomes `anyOf`; `allOf` is merged into one schema; `const` becomes a one-value
///   `enum`;
/// - `enum` is kept for strings only (Gemini's enums are strings); `format` only where Gemini
///   knows it (`enum` and `date-time` for strings, `float`/`double`, `int32`/`int64`);
/// - `required` keeps only names that are properties.
///
/// Dropped, because Gemini's schema has no such field: `$schema`, `$id`, `$defs`,
/// `additionalProperties`, `patternProperties`, `unevaluatedProperties`, `exclusiveMinimum`,
/// `exclusiveMaximum`, `multipleOf`, `uniqueItems`, `prefixItems`, `not`, `if`/`then`/`else`,
/// `dependentRequired`, `examples`, `readOnly`, `writeOnly`, `deprecated`, and numeric
/// enums. The model is then less constrained than the schema says, so validate the answer
/// (as [`generate_structured`](crate::AugmentedLlmExt::generate_structured) does).
///
/// ```
/// use agentkit_core::provider::gemini::to_gemini_schema;
/// use serde_json::json;
///
/// let schema = json!({
///     "type": "object",
///     "properties": {"name": {"type": ["string", "null"]}, "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}}},
///     "required": ["name"],
///     "additionalProperties": false,
///     "$defs": {"Tag": {"type": "string", "enum": ["a", "b"]}},
/// });
/// assert_eq!(
///     to_gemini_schema(&schema),
///     json!({
///         "type": "OBJECT",
///         "properties": {
///             "name": {"type": "STRING", "nullable": true},
///             "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}},
///         },
///         "required": ["name"],
///     })
/// );
/// ```
#[must_use]
pub fn to_gemini_schema(schema: &Value) -> Value {
    let mut cx = Ctx {
        root: schema,
        refs: Vec::new(),
        budget: MAX_NODES,
    };
    convert(schema, &mut cx, 0)
}

fn convert(node: &Value, cx: &mut Ctx<'_>, depth: usize) -> Value {
    let Value::Object(map) = node else {
        // `true` (anything) and other non-object schemas: no constraint Gemini can express.
        return json!({});
    };
    if depth > MAX_DEPTH || cx.budget == 0 {
        return json!({"type": "OBJECT"});
    }
    cx.budget -= 1;
    if let Some(target) = map.get("$ref").and_then(Value::as_str) {
        let seen = cx.refs.iter().filter(|r| *r == target).count();
        let mut out = match resolve(cx.root, target) {
            Some(_) if seen >= MAX_RECURSION => json!({"type": "OBJECT"}),
            Some(r) => {
                cx.refs.push(target.to_owned());
                let out = convert(r, cx, depth + 1);
                cx.refs.pop();
                out
            }
            None => json!({}),
        };
        // Siblings of a `$ref` (a description) still apply.
        let mut rest = map.clone();
        rest.remove("$ref");
        if let (Value::Object(o), extra) = (&mut out, convert_map(&rest, cx, depth)) {
            for (k, v) in extra {
                o.entry(k).or_insert(v);
            }
        }
        return out;
    }
    Value::Object(convert_map(map, cx, depth))
}

fn resolve<'a>(root: &'a Value, target: &str) -> Option<&'a Value> {
    let pointer = target.strip_prefix('#')?;
    root.pointer(pointer)
}

fn type_name(t: &str) -> Option<&'static str> {
    Some(match t {
        "string" => "STRING",
        "number" => "NUMBER",
        "integer" => "INTEGER",
        "boolean" => "BOOLEAN",
        "array" => "ARRAY",
        "object" => "OBJECT",
        _ => return None,
    })
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
}

fn convert_map(map: &Map<String, Value>, cx: &mut Ctx<'_>, depth: usize) -> Map<String, Value> {
    let mut out = Map::new();

    // allOf: merge the parts into this schema first.
    let mut merged;
    let map = if let Some(Value::Array(parts)) = map.get("allOf") {
        merged = map.clone();
        merged.remove("allOf");
        for part in parts {
            let part = match part.get("$ref").and_then(Value::as_str) {
                Some(t) => resolve(cx.root, t).unwrap_or(part),
                None => part,
            };
            if let Value::Object(p) = part {
                merge_into(&mut merged, p);
            }
        }
        &merged
    } else {
        map
    };

    for key in KEPT {
        if let Some(v) = map.get(*key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }

    let mut nullable = false;
    let mut types: Vec<&'static str> = Vec::new();
    match map.get("type") {
        Some(Value::String(t)) if t == "null" => nullable = true,
        Some(Value::String(t)) => types.extend(type_name(t)),
        Some(Value::Array(ts)) => {
            for t in ts.iter().filter_map(Value::as_str) {
                if t == "null" {
                    nullable = true;
                } else if let Some(name) = type_name(t) {
                    types.push(name);
                }
            }
        }
        _ => {}
    }
    // A schema with properties or items but no type is an object or an array.
    if types.is_empty() {
        if map.contains_key("properties") {
            types.push("OBJECT");
        } else if map.contains_key("items") {
            types.push("ARRAY");
        }
    }

    // anyOf / oneOf: a null member is `nullable`; one other member is inlined.
    let alternatives: Vec<&Value> = ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| map.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    if !alternatives.is_empty() {
        let (nulls, rest): (Vec<&Value>, Vec<&Value>) =
            alternatives.into_iter().partition(|v| is_null_schema(v));
        nullable |= !nulls.is_empty();
        match rest.as_slice() {
            [] => {}
            [only] => {
                if let Value::Object(inner) = convert(only, cx, depth + 1) {
                    for (k, v) in inner {
                        out.entry(k).or_insert(v);
                    }
                }
            }
            many => {
                out.insert(
                    "anyOf".into(),
                    Value::Array(many.iter().map(|v| convert(v, cx, depth + 1)).collect()),
                );
            }
        }
    }

    match types.as_slice() {
        [] => {}
        [one] => {
            out.insert("type".into(), json!(one));
        }
        many => {
            // Several types: one alternative per type, each with this schema's other keys.
            let mut single = map.clone();
            for k in ["anyOf", "oneOf", "nullable"] {
                single.remove(k);
            }
            let alts = many
                .iter()
                .map(|t| {
                    single.insert("type".into(), json!(t.to_ascii_lowercase()));
                    convert(&Value::Object(single.clone()), cx, depth + 1)
                })
                .collect();
            out.insert("anyOf".into(), Value::Array(alts));
        }
    }
    if nullable {
        out.insert("nullable".into(), Value::Bool(true));
    }
    let kind = out.get("type").and_then(Value::as_str).map(str::to_owned);

    if let Some(Value::Object(props)) = map.get("properties") {
        let converted: Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.clone(), convert(v, cx, depth + 1)))
            .collect();
        if let Some(Value::Array(required)) = map.get("required") {
            let required: Vec<Value> = required
                .iter()
                .filter(|r| r.as_str().is_some_and(|r| converted.contains_key(r)))
                .cloned()
                .collect();
            if !required.is_empty() {
                out.insert("required".into(), Value::Array(required));
            }
        }
        out.insert("properties".into(), Value::Object(converted));
    }
    if let Some(items) = map.get("items")
        && items.is_object()
    {
        out.insert("items".into(), convert(items, cx, depth + 1));
    }

    let strings = |vs: &[Value]| vs.iter().all(Value::is_string);
    let is_string = kind.as_deref() == Some("STRING") || kind.is_none();
    if let Some(Value::Array(values)) = map.get("enum")
        && is_string
        && !values.is_empty()
        && strings(values)
    {
        out.insert("enum".into(), Value::Array(values.clone()));
        out.entry("type").or_insert(json!("STRING"));
    } else if let Some(c @ Value::String(_)) = map.get("const")
        && is_string
    {
        out.insert("enum".into(), json!([c]));
        out.entry("type").or_insert(json!("STRING"));
    }

    if let Some(Value::String(format)) = map.get("format") {
        let known = match kind.as_deref() {
            Some("STRING") => matches!(format.as_str(), "enum" | "date-time"),
            Some("NUMBER") => matches!(format.as_str(), "float" | "double"),
            Some("INTEGER") => matches!(format.as_str(), "int32" | "int64"),
            _ => false,
        };
        if known {
            out.insert("format".into(), Value::String(format.clone()));
        }
    }
    out
}

/// Merge an `allOf` part into `into`: properties and required lists are united, other keys
/// kept from whichever had them first.
fn merge_into(into: &mut Map<String, Value>, part: &Map<String, Value>) {
    for (k, v) in part {
        match (k.as_str(), into.get_mut(k), v) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => {
                for (name, schema) in theirs {
                    mine.entry(name.clone()).or_insert_with(|| schema.clone());
                }
            }
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                for r in theirs {
                    if !mine.contains(r) {
                        mine.push(r.clone());
                    }
                }
            }
            (_, None, _) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::testing::any_json;
    use proptest::prelude::*;

    #[test]
    fn schemars_output_converts() {
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        struct Forecast {
            city: String,
            celsius: i32,
            note: Option<String>,
            kind: Kind,
        }
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        enum Kind {
            Sunny,
            Rainy,
        }
        let schema = crate::schema::schema_value::<Forecast>();
        let g = to_gemini_schema(&schema);
        assert_eq!(g["type"], "OBJECT");
        assert_eq!(g["properties"]["city"], json!({"type": "STRING"}));
        assert_eq!(g["properties"]["celsius"]["type"], "INTEGER");
        assert_eq!(g["properties"]["celsius"]["format"], "int32");
        assert_eq!(
            g["properties"]["note"],
            json!({"type": "STRING", "nullable": true})
        );
        assert_eq!(g["properties"]["kind"]["enum"], json!(["Sunny", "Rainy"]));
        assert!(g.get("$schema").is_none() && g.get("$defs").is_none());
        assert!(g.get("additionalProperties").is_none());
    }

    #[test]
    fn recursion_is_cut_and_odd_shapes_survive() {
        let schema = json!({
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
            "$ref": "#/$defs/Node",
        });
        let g = to_gemini_schema(&schema);
        assert_eq!(g["type"], "OBJECT");
        let mut depth = 0;
        let mut n = &g;
        while let Some(next) = n.pointer("/properties/next") {
            n = next;
            depth += 1;
        }
        assert!(depth <= MAX_RECURSION + 1, "{depth}");
        assert_eq!(
            to_gemini_schema(&json!({"type": ["integer", "string"], "oneOf": [{"type": "null"}]})),
            json!({"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}], "nullable": true})
        );
        assert_eq!(
            to_gemini_schema(&json!({"const": "x"})),
            json!({"type": "STRING", "enum": ["x"]})
        );
        assert_eq!(to_gemini_schema(&json!({"enum": [1, 2]})), json!({}));
    }

    /// Only Gemini's field names, anywhere in the output.
    fn only_gemini_keys(v: &Value) -> bool {
        const ALLOWED: &[&str] = &[
            "type",
            "format",
            "title",
            "description",
            "nullable",
            "enum",
            "minItems",
            "maxItems",
            "properties",
            "required",
            "propertyOrdering",
            "items",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "pattern",
            "minProperties",
            "maxProperties",
            "anyOf",
            "example",
            "default",
        ];
        match v {
            Value::Object(m) => m.iter().all(|(k, v)| {
                ALLOWED.contains(&k.as_str())
                    && match k.as_str() {
                        "properties" => v
                            .as_object()
                            .is_some_and(|p| p.values().all(only_gemini_keys)),
                        "items" => only_gemini_keys(v),
                        "anyOf" => v.as_array().is_some_and(|a| a.iter().all(only_gemini_keys)),
                        _ => true,
                    }
            }),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_json_converts_to_gemini_keys_only(schema in any_json()) {
            let g = to_gemini_schema(&schema);
            prop_assert!(only_gemini_keys(&g), "{g}");
        }

        #[test]
        fn any_self_referencing_schema_terminates(name in "[a-z]{1,4}", extra in any_json()) {
            let schema = json!({
                "$defs": {name.clone(): {"anyOf": [{"$ref": format!("#/$defs/{name}")}, extra],
                                          "items": {"$ref": format!("#/$defs/{name}")}}},
                "$ref": format!("#/$defs/{name}"),
            });
            let g = to_gemini_schema(&schema);
            prop_assert!(only_gemini_keys(&g), "{g}");
        }
    }
}
