//! Building the Chat Completions request body.

use serde_json::{Map, Value, json};

use super::config::OpenAiConfig;
use crate::message::{Content, ImageData, Message, Role, join_text};
use crate::provider::{CompletionRequest, ToolChoice};

/// The Chat Completions request body for `request`.
pub(super) fn chat_body(
    config: &OpenAiConfig,
    request: &CompletionRequest,
    stream: bool,
) -> Map<String, Value> {
    let mut body = Map::new();
    let model = request
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| config.default_model.clone());
    body.insert("model".into(), Value::String(model));
    body.insert(
        "messages".into(),
        Value::Array(wire_messages(request.system.as_deref(), &request.messages)),
    );
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let mut function = Map::new();
                function.insert("name".into(), Value::String(t.name.clone()));
                if !t.description.is_empty() {
                    function.insert("description".into(), Value::String(t.description.clone()));
                }
                let parameters = match &*t.input_schema {
                    Value::Object(o) if !o.is_empty() => (*t.input_schema).clone(),
                    _ => json!({"type": "object", "properties": {}}),
                };
                function.insert("parameters".into(), parameters);
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        let choice = match &request.tool_choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
        if let Some(parallel) = request.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), Value::Bool(parallel));
        }
    }
    if let Some(t) = request.temperature {
        // Through f64's shortest decimal form so 0.2 goes out as 0.2, not 0.20000000298...
        let t: f64 = t.to_string().parse().unwrap_or(f64::from(t));
        body.insert("temperature".into(), json!(t));
    }
    if let Some(n) = request.max_tokens {
        let field = if config.legacy_max_tokens {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        body.insert(field.into(), json!(n));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    if let Some(format) = &request.response_format {
        body.insert(
            "response_format".into(),
            json!({
                "type": "json_schema",
                "json_schema": {
                    "name": format.name,
                    "schema": format.schema,
                    "strict": format.strict,
                }
            }),
        );
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (k, v) in &request.extra {
        // `stream` decides how the answer is parsed; it follows complete() vs stream().
        if k == "stream" {
            tracing::debug!("ignoring `stream` in CompletionRequest::extra");
            continue;
        }
        body.insert(k.clone(), v.clone());
    }
    body
}

/// Translate the system prompt and messages into Chat Completions messages.
fn wire_messages(system: Option<&str>, messages: &[Message]) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(system) = system.filter(|s| !s.is_empty()) {
        out.push(json!({"role": "system", "content": system}));
    }
    for message in messages {
        // Tool results become `role: tool` messages of their own, in order, ahead of whatever
        // else the message carries (tool messages must directly follow the assistant's calls).
        // Tool messages carry text only, so images a tool returned follow in a user message.
        let mut rest = Vec::new();
        let mut tool_images = Vec::new();
        for content in &message.content {
            match content {
                Content::ToolResult {
                    call_id, content, ..
                } => {
                    let images: Vec<String> = content.iter().filter_map(image_url).collect();
                    let mut text = join_text(content);
                    if !images.is_empty() {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&format!(
                            "({} image(s) returned; they follow in the next message)",
                            images.len()
                        ));
                        tool_images.push(json!({
                            "type": "text",
                            "text": format!("Images returned by tool call {call_id}:"),
                        }));
                        tool_images.extend(
                            images
                                .into_iter()
                                .map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
                        );
                    }
                    out.push(json!({
                        "role": "tool",
                        "tool_call_id": call_id,
                        "content": text,
                    }));
                }
                // Another API's data (a Responses reasoning item, a Gemini signature).
                Content::ProviderData { .. } => {}
                other => rest.push(other),
            }
        }
        if !tool_images.is_empty() {
            out.push(json!({"role": "user", "content": tool_images}));
        }
        if rest.is_empty() {
            continue;
        }
        match message.role {
            Role::System => {
                let text = join_refs(&rest);
                out.push(json!({"role": "system", "content": text}));
            }
            Role::User | Role::Tool => out.push(json!({
                "role": "user",
                "content": user_content(&rest),
            })),
            Role::Assistant => out.push(assistant_message(&rest)),
        }
    }
    out
}

fn join_refs(content: &[&Content]) -> String {
    let owned: Vec<Content> = content.iter().map(|c| (*c).clone()).collect();
    join_text(&owned)
}

/// User content: a plain string when it is all text, else an array of text and image parts.
fn user_content(content: &[&Content]) -> Value {
    let has_image = content.iter().any(|c| image_url(c).is_some());
    if !has_image {
        return Value::String(join_refs(content));
    }
    let mut parts = Vec::new();
    for c in content {
        if let Some(url) = image_url(c) {
            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            continue;
        }
        let text = match c {
            Content::Text { text } => Some(text),
            Content::Resource {
                text: Some(text), ..
            } => Some(text),
            _ => None,
        };
        if let Some(text) = text {
            parts.push(json!({"type": "text", "text": text}));
        }
    }
    Value::Array(parts)
}

/// The `image_url.url` of an image block (a `data:` URL for inline bytes).
fn image_url(content: &Content) -> Option<String> {
    match content {
        Content::Image { mime_type, data } => Some(match data {
            ImageData::Base64(b64) => format!("data:{mime_type};base64,{b64}"),
            ImageData::Url(url) => url.clone(),
        }),
        Content::Resource {
            mime_type: Some(mime),
            blob: Some(b64),
            ..
        } if mime.starts_with("image/") => Some(format!("data:{mime};base64,{b64}")),
        _ => None,
    }
}

fn assistant_message(content: &[&Content]) -> Value {
    let text = join_refs(content);
    let calls: Vec<Value> = content
        .iter()
        .filter_map(|c| match c {
            Content::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()},
            })),
            _ => None,
        })
        .collect();
    let mut m = Map::new();
    m.insert("role".into(), json!("assistant"));
    if calls.is_empty() {
        m.insert("content".into(), Value::String(text));
    } else {
        m.insert(
            "content".into(),
            if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            },
        );
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::ToolSpec;

    #[test]
    fn tool_choice_and_parallel_are_only_sent_with_tools() {
        let cfg = OpenAiConfig::new("k");
        let req = CompletionRequest::new(vec![Message::user("hi")])
            .with_tool_choice(ToolChoice::Required)
            .with_parallel_tool_calls(false);
        let body = chat_body(&cfg, &req, false);
        assert!(!body.contains_key("tools"));
        assert!(!body.contains_key("tool_choice"));
        assert!(!body.contains_key("parallel_tool_calls"));
        assert!(!body.contains_key("stream"));

        let req = req.with_tools(vec![ToolSpec::new("t", "", json!({}))]);
        let body = chat_body(&cfg, &req, false);
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(body["parallel_tool_calls"], false);
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn other_apis_provider_data_is_not_sent() {
        let messages = vec![
            Message::new(
                Role::Assistant,
                vec![Content::provider_data(
                    "gemini",
                    json!({"thoughtSignature": "s"}),
                )],
            ),
            Message::new(
                Role::Assistant,
                vec![
                    Content::provider_data("openai.responses", json!({"type": "reasoning"})),
                    Content::tool_call("c1", "f", json!({})),
                ],
            ),
        ];
        let wire = wire_messages(None, &messages);
        assert_eq!(
            wire,
            vec![json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]})]
        );
    }

    #[test]
    fn images_returned_by_tools_follow_in_a_user_message() {
        let messages = vec![Message::tool_results(vec![Content::tool_result(
            "call_1",
            vec![
                Content::text("a chart"),
                Content::image_base64("image/png", "AAAA"),
            ],
            false,
        )])];
        let wire = wire_messages(None, &messages);
        assert_eq!(wire.len(), 2);
        assert_eq!(wire[0]["role"], "tool");
        assert!(
            wire[0]["content"]
                .as_str()
                .unwrap()
                .starts_with("a chart\n(1 image(s) returned")
        );
        assert_eq!(wire[1]["role"], "user");
        assert_eq!(
            wire[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
    }
}
