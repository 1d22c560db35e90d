//! A test peer that speaks OpenAI Chat Completions like the most literal strict-mode model:
//! every structured request (`response_format: json_schema`, or a request that forces a tool)
//! is answered with the FIRST VALID INSTANCE of the schema, every other request with a short
//! fixed text. Used by `tests/strict_models.rs` and by `scripts/strict-models.sh` (through the
//! `schema_first_server` example).
#![allow(dead_code, unreachable_pub)]

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Map, Value, json};

/// The answer to a request that asks for no structure.
pub const FIXED_TEXT: &str = "This is the schema-first peer's fixed answer.";

/// Deepest nesting of subschemas (and `$ref`s) followed before giving up.
const MAX_DEPTH: usize = 64;
/// Most subschemas visited for one instance (a schema whose `anyOf` branches refer back to
/// the root would otherwise take exponential time).
const MAX_VISITS: usize = 100_000;
/// Most items in one generated array.
const MAX_ITEMS: u64 = 10_000;

/// The first valid instance of `schema`: for an `enum` its first value, `const` its value;
/// `anyOf`/`oneOf` the first branch that has an instance; a string `""` (or `minLength`
/// `a`s); a number or integer its minimum (or just above its exclusive minimum), else 0 (or
/// its maximum when that is below 0); a boolean `false`; an array `minItems` copies of the
/// first valid item; an object its required properties; `$ref` followed within the schema;
/// for a list of types (`["string", "null"]`) the first.
///
/// # Errors
///
/// A message saying why the schema has no instance this generator can build (an empty
/// `enum`, `false`, a `$ref` that points nowhere, a minimum above the maximum, ...).
pub fn first_instance(schema: &Value) -> Result<Value, String> {
    Generator {
        root: schema,
        visits: Cell::new(0),
    }
    .instance(schema, 0)
}

struct Generator<'a> {
    root: &'a Value,
    visits: Cell<usize>,
}

impl Generator<'_> {
    fn instance(&self, schema: &Value, depth: usize) -> Result<Value, String> {
        self.visits.set(self.visits.get() + 1);
        if self.visits.get() > MAX_VISITS {
            return Err(format!(
                "the schema is too complex (more than {MAX_VISITS} subschemas to visit)"
            ));
        }
        if depth > MAX_DEPTH {
            return Err(format!(
                "the schema nests deeper than {MAX_DEPTH} levels (a required recursive `$ref`?)"
            ));
        }
        let node = match schema {
            Value::Bool(true) => return Ok(Value::Null),
            Value::Bool(false) => return Err("the schema `false` has no instance".to_owned()),
            Value::Object(node) => node,
            other => return Err(format!("`{other}` is not a JSON schema")),
        };
        if let Some(reference) = node.get("$ref") {
            return self.instance(self.resolve(reference)?, depth + 1);
        }
        if let Some(value) = node.get("const") {
            return Ok(value.clone());
        }
        if let Some(values) = node.get("enum") {
            return values
                .as_array()
                .and_then(|v| v.first())
                .cloned()
                .ok_or_else(|| format!("`enum` must be a non-empty array, not `{values}`"));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(branches) = node.get(key) {
                return self.first_branch(key, branches, depth);
            }
        }
        if let Some(parts) = node.get("allOf") {
            return self.instance(&merge_all_of(node, parts)?, depth + 1);
        }
        match type_of(node)? {
            "null" => Ok(Value::Null),
            "boolean" => Ok(Value::Bool(false)),
            "string" => {
                let len = bound(node, "minLength")?.unwrap_or(0);
                Ok(Value::String("a".repeat(usize::try_from(len).unwrap_or(0))))
            }
            "integer" => integer(node),
            "number" => number(node),
            "array" => self.array(node, depth),
            "object" => self.object(node, depth),
            other => Err(format!("unknown type `{other}`")),
        }
    }

    fn resolve(&self, reference: &Value) -> Result<&Value, String> {
        let text = reference
            .as_str()
            .ok_or_else(|| format!("`$ref` must be a string, not `{reference}`"))?;
        text.strip_prefix('#')
            .and_then(|pointer| self.root.pointer(pointer))
            .ok_or_else(|| format!("`$ref` `{text}` points nowhere in the schema"))
    }

    fn first_branch(&self, key: &str, branches: &Value, depth: usize) -> Result<Value, String> {
        let branches = branches
            .as_array()
            .ok_or_else(|| format!("`{key}` must be an array"))?;
        let mut problems = Vec::new();
        for branch in branches {
            match self.instance(branch, depth + 1) {
                Ok(value) => return Ok(value),
                // Past the budget every branch fails the same way: stop here.
                Err(problem) if self.visits.get() > MAX_VISITS => return Err(problem),
                Err(problem) => problems.push(problem),
            }
        }
        // The first problem only (nested branches would otherwise multiply the message).
        Err(match problems.first() {
            None => format!("`{key}` has no branches"),
            Some(first) => format!("no branch of `{key}` has an instance (first: {first})"),
        })
    }

    fn array(&self, node: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        let min = bound(node, "minItems")?.unwrap_or(0);
        if min > MAX_ITEMS {
            return Err(format!("`minItems` {min} is more than {MAX_ITEMS}"));
        }
        if bound(node, "maxItems")?.is_some_and(|max| max < min) {
            return Err("`maxItems` is below `minItems`".to_owned());
        }
        let prefix: &[Value] = match (node.get("prefixItems"), node.get("items")) {
            (Some(Value::Array(p)), _) | (None, Some(Value::Array(p))) => p,
            _ => &[],
        };
        let rest = match node.get("items") {
            Some(items @ (Value::Object(_) | Value::Bool(_))) => items,
            _ => &Value::Bool(true),
        };
        let mut out = Vec::new();
        let mut first_rest = None;
        for i in 0..usize::try_from(min).unwrap_or(0) {
            let item = match prefix.get(i) {
                Some(schema) => self.instance(schema, depth + 1)?,
                None => match &first_rest {
                    Some(item) => Value::clone(item),
                    None => {
                        let item = self.instance(rest, depth + 1)?;
                        first_rest = Some(item.clone());
                        item
                    }
                },
            };
            out.push(item);
        }
        Ok(Value::Array(out))
    }

    fn object(&self, node: &Map<String, Value>, depth: usize) -> Result<Value, String> {
        let empty = Map::new();
        let properties = match node.get("properties") {
            Some(Value::Object(p)) => p,
            None => &empty,
            Some(other) => return Err(format!("`properties` must be an object, not `{other}`")),
        };
        let required = match node.get("required") {
            Some(Value::Array(r)) => r.as_slice(),
            None => &[],
            Some(other) => return Err(format!("`required` must be an array, not `{other}`")),
        };
        let mut out = Map::new();
        for name in required {
            let name = name
                .as_str()
                .ok_or_else(|| format!("`required` lists `{name}`, which is not a string"))?;
            let schema = match (properties.get(name), node.get("additionalProperties")) {
                (Some(schema), _) => schema,
                (None, Some(Value::Bool(false))) => {
                    return Err(format!(
                        "`{name}` is required but not allowed (no such property and no additional properties)"
                    ));
                }
                (None, Some(extra @ Value::Object(_))) => extra,
                (None, _) => &Value::Bool(true),
            };
            let value = self
                .instance(schema, depth + 1)
                .map_err(|e| format!("property `{name}`: {e}"))?;
            out.insert(name.to_owned(), value);
        }
        Ok(Value::Object(out))
    }
}

/// The node's type: its `type` (the first of a list), else what its keywords imply; a node
/// that constrains nothing accepts anything, and `null` is the first value.
fn type_of(node: &Map<String, Value>) -> Result<&str, String> {
    match node.get("type") {
        Some(Value::String(t)) => Ok(t),
        Some(Value::Array(types)) => types
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| "`type` must be a non-empty list of names".to_owned()),
        Some(other) => Err(format!("`type` must be a name or a list, not `{other}`")),
        None if node.contains_key("properties") || node.contains_key("required") => Ok("object"),
        None if node.contains_key("items") || node.contains_key("prefixItems") => Ok("array"),
        None => Ok("null"),
    }
}

/// `allOf` folded into the node: the parts' keywords, with `properties` and `required`
/// united (enough for the schemas generators write).
fn merge_all_of(node: &Map<String, Value>, parts: &Value) -> Result<Value, String> {
    let parts = parts
        .as_array()
        .ok_or_else(|| "`allOf` must be an array".to_owned())?;
    let mut merged = node.clone();
    merged.remove("allOf");
    for part in parts {
        let Value::Object(part) = part else {
            return Err(format!(
                "`allOf` holds `{part}`, which is not a schema object"
            ));
        };
        for (key, value) in part {
            match (key.as_str(), merged.get_mut(key), value) {
                ("properties", Some(Value::Object(have)), Value::Object(more)) => {
                    have.extend(more.clone());
                }
                ("required", Some(Value::Array(have)), Value::Array(more)) => {
                    have.extend(more.iter().cloned());
                }
                _ => {
                    merged.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Ok(Value::Object(merged))
}

/// A non-negative integer keyword (`minItems`, `minLength`...).
fn bound(node: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match node.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a non-negative integer, not `{v}`")),
    }
}

fn number_keyword(node: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match node.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a number, not `{v}`")),
    }
}

/// The numeric bounds of a node: `minimum`, `exclusiveMinimum`, `maximum`, `exclusiveMaximum`.
struct Bounds {
    min: Option<f64>,
    exclusive_min: Option<f64>,
    max: Option<f64>,
    exclusive_max: Option<f64>,
}

impl Bounds {
    fn of(node: &Map<String, Value>) -> Result<Self, String> {
        Ok(Self {
            min: number_keyword(node, "minimum")?,
            exclusive_min: number_keyword(node, "exclusiveMinimum")?,
            max: number_keyword(node, "maximum")?,
            exclusive_max: number_keyword(node, "exclusiveMaximum")?,
        })
    }

    fn allow(&self, v: f64) -> bool {
        self.min.is_none_or(|m| v >= m)
            && self.exclusive_min.is_none_or(|m| v > m)
            && self.max.is_none_or(|m| v <= m)
            && self.exclusive_max.is_none_or(|m| v < m)
    }

    /// The first allowed value among `candidates`.
    fn first(&self, candidates: impl IntoIterator<Item = f64>) -> Result<f64, String> {
        candidates
            .into_iter()
            .find(|v| v.is_finite() && self.allow(*v))
            .ok_or_else(|| "no number fits its minimum and maximum".to_owned())
    }
}

fn integer(node: &Map<String, Value>) -> Result<Value, String> {
    let b = Bounds::of(node)?;
    // The inclusive bounds of an integer, as floats.
    let low = match (
        b.min.map(f64::ceil),
        b.exclusive_min.map(|e| e.floor() + 1.0),
    ) {
        (Some(a), Some(e)) => Some(a.max(e)),
        (a, e) => a.or(e),
    };
    let high = match (
        b.max.map(f64::floor),
        b.exclusive_max.map(|e| e.ceil() - 1.0),
    ) {
        (Some(a), Some(e)) => Some(a.min(e)),
        (a, e) => a.or(e),
    };
    let value = b.first(low.into_iter().chain([high.map_or(0.0, |h| h.min(0.0))]))?;
    if value.abs() > 9.0e15 {
        return Err(format!(
            "the smallest allowed integer, {value}, is out of range"
        ));
    }
    Ok(json!(value as i64))
}

fn number(node: &Map<String, Value>) -> Result<Value, String> {
    let b = Bounds::of(node)?;
    let upper = b.max.or(b.exclusive_max);
    let mut candidates = vec![b.min.unwrap_or(f64::NAN)];
    if let Some(e) = b.exclusive_min {
        // Just above an exclusive minimum: 1 above, or halfway to the maximum.
        candidates.extend([e + 1.0, upper.map_or(f64::NAN, |u| e + (u - e) / 2.0)]);
    }
    candidates.extend([
        0.0,
        upper.map_or(f64::NAN, |u| u.min(0.0)),
        b.max.unwrap_or(f64::NAN),
    ]);
    if let Some(e) = b.exclusive_max {
        candidates.push(e - 1.0);
    }
    let value = b.first(candidates)?;
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .ok_or_else(|| format!("the smallest allowed number, {value}, is not finite"))
}

/// Every request body the peer received, in order.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Value>>>);

impl RequestLog {
    /// A copy of the bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, body: Value) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(body);
    }
}

/// The peer as an axum app: `POST /v1/chat/completions`.
pub fn app(log: RequestLog) -> axum::Router {
    axum::Router::new().route(
        "/v1/chat/completions",
        post(move |body: Bytes| {
            let log = log.clone();
            async move { chat_completions(&log, &body) }
        }),
    )
}

fn chat_completions(log: &RequestLog, body: &[u8]) -> Response {
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    log.push(request.clone());
    let (message, finish_reason) = match answer(&request) {
        Ok(answer) => answer,
        Err(problem) => return error(StatusCode::BAD_REQUEST, &problem),
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("schema-first")
        .to_owned();
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15});
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream(&model, &message, finish_reason, &usage);
    }
    json_response(&json!({
        "id": "chatcmpl-schema-first",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }))
}

/// The assistant message for `request` and its finish reason.
fn answer(request: &Value) -> Result<(Value, &'static str), String> {
    let format = &request["response_format"];
    match format["type"].as_str() {
        Some("json_schema") => {
            let instance = first_instance(&format["json_schema"]["schema"])
                .map_err(|e| format!("response_format.json_schema.schema: {e}"))?;
            return Ok((
                json!({"role": "assistant", "content": instance.to_string()}),
                "stop",
            ));
        }
        Some("json_object") => {
            return Ok((json!({"role": "assistant", "content": "{}"}), "stop"));
        }
        _ => {}
    }
    if let Some(tool) = forced_tool(request)? {
        let name = tool["function"]["name"].as_str().unwrap_or_default();
        let arguments = first_instance(&tool["function"]["parameters"])
            .map_err(|e| format!("parameters of tool `{name}`: {e}"))?;
        return Ok((
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_schema_first",
                "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()},
            }]}),
            "tool_calls",
        ));
    }
    Ok((json!({"role": "assistant", "content": FIXED_TEXT}), "stop"))
}

/// The tool a request forces (`tool_choice` naming a function, or `required`: the first).
fn forced_tool(request: &Value) -> Result<Option<&Value>, String> {
    let tools = request["tools"].as_array().map_or(&[][..], Vec::as_slice);
    let wanted = match &request["tool_choice"] {
        Value::String(s) if s == "required" => None,
        choice @ Value::Object(_) => Some(
            choice["function"]["name"]
                .as_str()
                .ok_or_else(|| format!("tool_choice `{choice}` names no function"))?,
        ),
        _ => return Ok(None),
    };
    let tool = match wanted {
        None => tools.first(),
        Some(name) => tools.iter().find(|t| t["function"]["name"] == name),
    };
    tool.map(Some).ok_or_else(|| {
        format!(
            "tool_choice forces `{}`, which is not in `tools`",
            wanted.unwrap_or("a tool")
        )
    })
}

/// The same answer as server-sent events: the content (or tool calls) in one delta, then the
/// finish reason, the usage and `[DONE]`.
fn stream(model: &str, message: &Value, finish_reason: &str, usage: &Value) -> Response {
    let chunk = |delta: Value, finish: Value, usage: Value| {
        let mut c = json!({
            "id": "chatcmpl-schema-first",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": if delta.is_null() { json!([]) } else {
                json!([{"index": 0, "delta": delta, "finish_reason": finish}])
            },
        });
        if !usage.is_null() {
            c["usage"] = usage;
        }
        format!("data: {c}\n\n")
    };
    let mut delta = json!({"role": "assistant"});
    if let Some(text) = message["content"].as_str() {
        delta["content"] = json!(text);
    }
    if let Some(Value::Array(calls)) = message.get("tool_calls") {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c["index"] = json!(i);
                c
            })
            .collect();
        delta["tool_calls"] = json!(calls);
    }
    let body = [
        chunk(delta, Value::Null, Value::Null),
        chunk(json!({}), json!(finish_reason), Value::Null),
        chunk(Value::Null, Value::Null, usage.clone()),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn json_response(body: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
