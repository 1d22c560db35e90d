//! Building the `generateContent` request body.

use std::collections::{HashMap, VecDeque};

use serde_json::{Map, Value, json};

use super::schema::to_gemini_schema;
use super::{DATA_FORMAT, SYNTHETIC_ID_PREFIX};
use crate::message::{Content, ImageData, Message, Role, join_text};
use crate::provider::{CompletionRequest, ToolChoice};

/// `CompletionRequest::extra` keys that belong in `generationConfig` rather than at the top of
/// the body.
const GENERATION_KEYS: &[&str] = &[
    "topP",
    "topK",
    "seed",
    "candidateCount",
    "presencePenalty",
    "frequencyPenalty",
    "thinkingConfig",
    "responseModalities",
    "mediaResolution",
    "responseLogprobs",
    "logprobs",
    "speechConfig",
];

/// The request body (the model goes in the URL, not here).
pub(super) fn build_body(req: &CompletionRequest) -> Value {
    let mut body = Map::new();

    let mut system: Vec<String> = req
        .system
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    let contents = convert_messages(&req.messages, &mut system);
    if !system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    body.insert("contents".into(), Value::Array(contents));

    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), Value::String(t.name.clone()));
                if !t.description.is_empty() {
                    d.insert("description".into(), Value::String(t.description.clone()));
                }
                // Gemini rejects an OBJECT without properties: a tool without parameters
                // declares none.
                let has_properties = t
                    .input_schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| !p.is_empty());
                if has_properties {
                    d.insert("parameters".into(), to_gemini_schema(&t.input_schema));
                }
                Value::Object(d)
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{"functionDeclarations": declarations}]),
        );
        let config = match &req.tool_choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }

    let mut generation = Map::new();
    if let Some(t) = req.temperature {
        // Through the shortest decimal form, so 0.2f32 is sent as 0.2, not 0.200000003.
        let t = t.to_string().parse::<f64>().unwrap_or(f64::from(t));
        generation.insert("temperature".into(), json!(t));
    }
    if let Some(n) = req.max_tokens {
        generation.insert("maxOutputTokens".into(), json!(n));
    }
    if !req.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(format) = &req.response_format {
        generation.insert("responseMimeType".into(), json!("application/json"));
        generation.insert("responseSchema".into(), to_gemini_schema(&format.schema));
    }
    for (k, v) in &req.extra {
        if GENERATION_KEYS.contains(&k.as_str()) {
            generation.insert(k.clone(), v.clone());
        } else if k == "generationConfig"
            && let Value::Object(more) = v
        {
            generation.extend(more.clone());
        } else {
            body.insert(k.clone(), v.clone());
        }
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Value::Object(body)
}

/// Thought signatures waiting for the part they belong to, by part kind.
#[derive(Default)]
struct Signatures {
    text: VecDeque<Value>,
    call: VecDeque<Value>,
}

/// Translate the conversation: system messages go to `systemInstruction`, assistant turns are
/// `model`, tool results are `user` turns of `functionResponse` parts, and consecutive turns
/// of one role are merged.
fn convert_messages(messages: &[Message], system: &mut Vec<String>) -> Vec<Value> {
    // Gemini answers a call by the function's name: remember the name of every call id.
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for m in messages {
        let role = match m.role {
            Role::System => {
                let text = m.text();
                if !text.trim().is_empty() {
                    system.push(text);
                }
                continue;
            }
            Role::User | Role::Tool => "user",
            Role::Assistant => "model",
        };
        let mut signatures = Signatures::default();
        let mut parts = Vec::new();
        for c in &m.content {
            if let Content::ToolCall { id, name, .. } = c {
                names.insert(id.as_str(), name.as_str());
            }
            convert_content(c, &names, &mut signatures, &mut parts);
        }
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect()
}

fn convert_content(
    content: &Content,
    names: &HashMap<&str, &str>,
    signatures: &mut Signatures,
    parts: &mut Vec<Value>,
) {
    match content {
        Content::Text { text } => {
            if !text.trim().is_empty() {
                let mut part = json!({"text": text});
                if let Some(sig) = signatures.text.pop_front() {
                    part["thoughtSignature"] = sig;
                }
                parts.push(part);
            }
        }
        Content::Image { mime_type, data } => parts.push(image_part(mime_type, data)),
        Content::ToolCall {
            id,
            name,
            arguments,
        } => {
            let mut call = json!({"name": name, "args": object_or_empty(arguments)});
            if !id.starts_with(SYNTHETIC_ID_PREFIX) {
                call["id"] = json!(id);
            }
            let mut part = json!({"functionCall": call});
            if let Some(sig) = signatures.call.pop_front() {
                part["thoughtSignature"] = sig;
            }
            parts.push(part);
        }
        Content::ToolResult {
            call_id,
            content,
            is_error,
        } => {
            let name = names.get(call_id.as_str()).copied().unwrap_or(call_id);
            let text = join_text(content);
            let key = if *is_error { "error" } else { "output" };
            let mut response = json!({"name": name, "response": {key: text}});
            if !call_id.starts_with(SYNTHETIC_ID_PREFIX) {
                response["id"] = json!(call_id);
            }
            parts.push(json!({"functionResponse": response}));
            // Images a tool returned follow as parts of the same turn.
            for c in content {
                if let Content::Image { mime_type, data } = c {
                    parts.push(image_part(mime_type, data));
                }
            }
        }
        Content::Resource {
            uri,
            mime_type,
            text,
            blob,
        } => match (text, blob, mime_type.as_deref()) {
            (Some(text), _, _) => {
                convert_content(&Content::text(text.clone()), names, signatures, parts);
            }
            (None, Some(blob), Some(mime)) => {
                parts.push(json!({"inlineData": {"mimeType": mime, "data": blob}}));
            }
            _ => parts.push(json!({
                "text": format!("[resource {uri}: binary content without a MIME type not shown]"),
            })),
        },
        Content::ProviderData { format, data } if format.as_str() == DATA_FORMAT => {
            if let Some(sig) = data.get("thoughtSignature").filter(|s| s.is_string()) {
                match data.get("part").and_then(Value::as_str) {
                    Some("text") => signatures.text.push_back(sig.clone()),
                    _ => signatures.call.push_back(sig.clone()),
                }
            }
        }
        // Another wire format's data means nothing to Gemini.
        Content::ProviderData { .. } => {}
    }
}

fn object_or_empty(v: &Value) -> Value {
    if v.is_object() { v.clone() } else { json!({}) }
}

fn image_part(mime_type: &str, data: &ImageData) -> Value {
    match data {
        ImageData::Base64(b64) => json!({"inlineData": {"mimeType": mime_type, "data": b64}}),
        ImageData::Url(url) => json!({"fileData": {"mimeType": mime_type, "fileUri": url}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::ToolSpec;

    #[test]
    fn signatures_go_back_on_the_part_they_came_with() {
        let messages = vec![
            Message::user("go"),
            Message::new(
                Role::Assistant,
                vec![
                    Content::provider_data(
                        DATA_FORMAT,
                        json!({"thoughtSignature": "sigA", "part": "functionCall"}),
                    ),
                    Content::text("Checking."),
                    Content::tool_call("gemini-call-1", "f", json!({"x": 1})),
                    Content::tool_call("gemini-call-2", "f", json!({"x": 2})),
                    Content::provider_data("openai.responses", json!({"type": "reasoning"})),
                ],
            ),
            Message::tool_results(vec![
                Content::tool_result("gemini-call-1", vec![Content::text("one")], false),
                Content::tool_result("gemini-call-2", vec![Content::text("bad")], true),
            ]),
        ];
        let mut system = Vec::new();
        let contents = convert_messages(&messages, &mut system);
        assert_eq!(
            contents[1],
            json!({"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "f", "args": {"x": 1}}, "thoughtSignature": "sigA"},
                {"functionCall": {"name": "f", "args": {"x": 2}}},
            ]})
        );
        assert_eq!(
            contents[2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "f", "response": {"output": "one"}}},
                {"functionResponse": {"name": "f", "response": {"error": "bad"}}},
            ]})
        );
    }

    #[test]
    fn tool_choice_and_generation_config() {
        let req = CompletionRequest::new(vec![Message::user("hi")])
            .with_tools(vec![ToolSpec::new("noargs", "", json!({"type": "object"}))])
            .with_tool_choice(ToolChoice::Tool("noargs".into()))
            .with_extra("topK", json!(3))
            .with_extra("safetySettings", json!([]));
        let body = build_body(&req);
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [{"name": "noargs"}]}])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["noargs"]}})
        );
        assert_eq!(body["generationConfig"], json!({"topK": 3}));
        assert_eq!(body["safetySettings"], json!([]));
    }
}
