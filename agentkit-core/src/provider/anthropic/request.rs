//! Building the Messages API request body.

use serde_json::{Map, Value, json};

use super::config::AnthropicConfig;
use crate::message::{Content, ImageData, Message, Role};
use crate::provider::{CompletionRequest, ResponseFormat, ToolChoice};

/// The `cache_control` marker of a prompt-cache breakpoint.
fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// A request body and, when structured output was asked for, the name of the answer tool.
pub(super) struct WireRequest {
    pub(super) body: Value,
    pub(super) structured: Option<String>,
}

pub(super) fn build_body(
    config: &AnthropicConfig,
    req: &CompletionRequest,
    stream: bool,
) -> WireRequest {
    let mut body = Map::new();
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| config.default_model.clone());
    body.insert("model".into(), Value::String(model));
    body.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(config.default_max_tokens)),
    );

    let mut system: Vec<String> = req
        .system
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    let messages = convert_messages(&req.messages, &mut system);
    if !system.is_empty() {
        let system = system.join("\n\n");
        let system = if config.prompt_caching {
            json!([{"type": "text", "text": system, "cache_control": ephemeral()}])
        } else {
            Value::String(system)
        };
        body.insert("system".into(), system);
    }
    body.insert("messages".into(), Value::Array(messages));

    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut tool = Map::new();
            tool.insert("name".into(), Value::String(t.name.clone()));
            if !t.description.is_empty() {
                tool.insert("description".into(), Value::String(t.description.clone()));
            }
            tool.insert("input_schema".into(), object_schema(&t.input_schema));
            Value::Object(tool)
        })
        .collect();
    let structured = req.response_format.as_ref().map(|f| f.name.clone());
    let choice = tool_choice(req, !tools.is_empty());
    if let Some(format) = &req.response_format {
        tools.push(answer_tool(format));
    }
    // One breakpoint after the last of the request's tools caches every tool definition (the
    // structured-output answer tool, which changes with the schema, comes after it).
    let last_tool = req
        .tools
        .len()
        .checked_sub(1)
        .or(tools.len().checked_sub(1));
    if config.prompt_caching
        && let Some(Value::Object(last)) = last_tool.and_then(|i| tools.get_mut(i))
    {
        last.insert("cache_control".into(), ephemeral());
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    if let Some(t) = req.temperature {
        // Through the shortest decimal form, so 0.2f32 is sent as 0.2, not 0.200000003.
        let t = t.to_string().parse::<f64>().unwrap_or(f64::from(t));
        body.insert("temperature".into(), json!(t));
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    for (k, v) in &req.extra {
        body.insert(k.clone(), v.clone());
    }
    WireRequest {
        body: Value::Object(body),
        structured,
    }
}

/// The `tool_choice` field, or `None` to leave it out.
///
/// With structured output the answer tool is forced (`{"type":"tool"}`), unless the request
/// also offers other tools the model may still need: then any tool may be called
/// (`{"type":"any"}`) and the tool loop goes on until the model calls the answer tool.
fn tool_choice(req: &CompletionRequest, has_tools: bool) -> Option<Value> {
    let mut choice = match (&req.response_format, &req.tool_choice) {
        (_, ToolChoice::Tool(name)) => json!({"type": "tool", "name": name}),
        (Some(_), ToolChoice::Auto | ToolChoice::Required) if has_tools => json!({"type": "any"}),
        (Some(format), _) => json!({"type": "tool", "name": format.name}),
        (None, _) if !has_tools => return None,
        (None, ToolChoice::Auto) => json!({"type": "auto"}),
        (None, ToolChoice::Required) => json!({"type": "any"}),
        (None, ToolChoice::None) => return Some(json!({"type": "none"})),
    };
    if req.parallel_tool_calls == Some(false)
        && let Value::Object(map) = &mut choice
    {
        map.insert("disable_parallel_tool_use".into(), Value::Bool(true));
    }
    Some(choice)
}

fn answer_tool(format: &ResponseFormat) -> Value {
    json!({
        "name": format.name,
        "description": "Give your final answer by calling this tool. Its input is the answer: \
                        a JSON document matching the input schema.",
        "input_schema": object_schema(&format.schema),
    })
}

/// The API wants every `input_schema` to be a JSON object schema.
fn object_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) if !map.is_empty() => schema.clone(),
        _ => json!({"type": "object", "properties": {}}),
    }
}

/// Translate the conversation: system messages go to `system`, tool messages become user
/// turns, consecutive turns of one role are merged, and `tool_result` blocks lead their turn.
fn convert_messages(messages: &[Message], system: &mut Vec<String>) -> Vec<Value> {
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
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Value> = m.content.iter().filter_map(content_block).collect();
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, blocks)| {
            let (mut results, rest): (Vec<Value>, Vec<Value>) =
                blocks.into_iter().partition(|b| b["type"] == "tool_result");
            results.extend(rest);
            json!({"role": role, "content": results})
        })
        .collect()
}

fn content_block(content: &Content) -> Option<Value> {
    match content {
        // Another format's data (an OpenAI reasoning item, a Gemini signature) means nothing here.
        Content::ProviderData { .. } => None,
        Content::Text { text } => {
            (!text.trim().is_empty()).then(|| json!({"type": "text", "text": text}))
        }
        Content::Image { mime_type, data } => Some(image_block(mime_type, data)),
        Content::ToolCall {
            id,
            name,
            arguments,
        } => {
            let input = if arguments.is_object() {
                arguments.clone()
            } else {
                json!({})
            };
            Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
        }
        Content::ToolResult {
            call_id,
            content,
            is_error,
        } => {
            let inner: Vec<Value> = content
                .iter()
                .filter(|c| !matches!(c, Content::ToolCall { .. } | Content::ToolResult { .. }))
                .filter_map(content_block)
                .collect();
            let mut block =
                json!({"type": "tool_result", "tool_use_id": call_id, "is_error": is_error});
            if !inner.is_empty() {
                block["content"] = Value::Array(inner);
            }
            Some(block)
        }
        Content::Resource {
            uri,
            mime_type,
            text,
            blob,
        } => match (text, blob, mime_type.as_deref()) {
            (Some(text), _, _) => content_block(&Content::text(text.clone())),
            (None, Some(blob), Some(mime)) if mime.starts_with("image/") => {
                Some(image_block(mime, &ImageData::Base64(blob.clone())))
            }
            (None, Some(blob), Some("application/pdf")) => Some(json!({
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": blob},
            })),
            _ => Some(json!({
                "type": "text",
                "text": format!(
                    "[resource {uri}{}: binary content not shown]",
                    mime_type.as_deref().map(|m| format!(" ({m})")).unwrap_or_default()
                ),
            })),
        },
    }
}

fn image_block(mime_type: &str, data: &ImageData) -> Value {
    let source = match data {
        ImageData::Base64(b64) => json!({"type": "base64", "media_type": mime_type, "data": b64}),
        ImageData::Url(url) => json!({"type": "url", "url": url}),
    };
    json!({"type": "image", "source": source})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::ToolSpec;

    fn config() -> AnthropicConfig {
        AnthropicConfig::new("k")
    }

    #[test]
    fn no_tools_means_no_tool_choice_and_temperature_is_exact() {
        let req = CompletionRequest::new(vec![Message::user("hi")]).with_temperature(0.2);
        let body = build_body(&config(), &req, false).body;
        assert!(body.get("tool_choice").is_none());
        assert!(body.get("tools").is_none());
        assert_eq!(body["temperature"], json!(0.2));
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["model"], DEFAULT_MODEL);
        assert!(body.get("stream").is_none());
    }

    #[test]
    fn the_cache_breakpoint_stays_on_the_last_real_tool() {
        let config = config().with_prompt_caching(true);
        let req = CompletionRequest::new(vec![Message::user("hi")])
            .with_tools(vec![ToolSpec::new("search", "", json!({"type": "object"}))])
            .with_response_format(ResponseFormat::new("Answer", json!({"type": "object"})));
        let body = build_body(&config, &req, false).body;
        assert_eq!(
            body["tools"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert!(body["tools"][1].get("cache_control").is_none());
        let req = CompletionRequest::new(vec![Message::user("hi")])
            .with_response_format(ResponseFormat::new("Answer", json!({"type": "object"})));
        let body = build_body(&config, &req, false).body;
        assert_eq!(
            body["tools"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert!(body.get("system").is_none());
    }

    #[test]
    fn structured_output_with_other_tools_lets_the_model_use_them() {
        let req = CompletionRequest::new(vec![Message::user("hi")])
            .with_tools(vec![ToolSpec::new("search", "", json!({"type": "object"}))])
            .with_response_format(ResponseFormat::new("Answer", json!({"type": "object"})));
        let body = build_body(&config(), &req, true).body;
        assert_eq!(body["tool_choice"], json!({"type": "any"}));
        assert_eq!(body["tools"][1]["name"], "Answer");
        assert_eq!(body["stream"], true);
        let req = req.with_tool_choice(ToolChoice::None);
        let body = build_body(&config(), &req, false).body;
        assert_eq!(
            body["tool_choice"],
            json!({"type": "tool", "name": "Answer"})
        );
    }

    #[test]
    fn tool_results_lead_a_merged_user_turn_and_empty_text_is_dropped() {
        let mut system = Vec::new();
        let msgs = convert_messages(
            &[
                Message::user("first"),
                Message::tool_results(vec![Content::tool_result(
                    "t1",
                    vec![Content::text("ok")],
                    false,
                )]),
                Message::assistant("  "),
                Message::system("be brief"),
            ],
            &mut system,
        );
        assert_eq!(system, vec!["be brief".to_owned()]);
        let only_data = convert_messages(
            &[Message::new(
                Role::Assistant,
                vec![Content::provider_data(
                    "gemini",
                    json!({"thoughtSignature": "s"}),
                )],
            )],
            &mut system,
        );
        assert!(only_data.is_empty(), "another format's data is not sent");
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[0]["content"][1]["text"], "first");
    }
    use super::super::config::DEFAULT_MODEL;
}
