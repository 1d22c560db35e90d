//! An MCP server built with agentkit-mcp's `McpServerBuilder` implementing fixtures of the
//! official conformance suite's server scenarios (every active scenario passes; see
//! scripts/mcp-conformance.sh).
//!
//! ```sh
//! cargo run --example conformance_server --features mcp -- --http 127.0.0.1:3100
//! node tests/peers/node_modules/.bin/conformance server --url http://127.0.0.1:3100/mcp
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, deprecated)]

use std::sync::Arc;

use agentkit_mcp::rmcp::ErrorData;
use agentkit_mcp::rmcp::model::{
    CallToolResult, ContentBlock, ElicitResult, ElicitationAction, ElicitationSchema,
    GetPromptResult, LoggingLevel, Prompt, PromptArgument, PromptMessage, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, Role,
};
use agentkit_mcp::{HttpOptions, McpServerBuilder};
use serde_json::json;

const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
const WAV: &str = "UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=";

fn empty() -> serde_json::Value {
    json!({"type": "object", "properties": {}})
}

/// A JSON elicitation schema as rmcp's typed schema (a protocol error if it does not fit).
fn elicitation_schema(v: serde_json::Value) -> Result<ElicitationSchema, ErrorData> {
    serde_json::from_value(v)
        .map_err(|e| ErrorData::internal_error(format!("bad elicitation schema: {e}"), None))
}

fn action(r: &ElicitResult) -> &'static str {
    match r.action {
        ElicitationAction::Accept => "accept",
        ElicitationAction::Decline => "decline",
        _ => "cancel",
    }
}

fn completed(r: &ElicitResult) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(format!(
        "Elicitation completed: action={}, content={}",
        action(r),
        r.content
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "{}".into())
    ))])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .iter()
        .position(|a| a == "--http")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:3100".into());

    let server = McpServerBuilder::new("agentkit-conformance-server", env!("CARGO_PKG_VERSION"))
        .logging()
        .resource_subscriptions()
        .tool_fn("test_simple_text", "Returns simple text", empty(), |_a, _c| async {
            Ok(CallToolResult::success(vec![ContentBlock::text("This is a simple text response for testing.")]))
        })
        .tool_fn("test_image_content", "Returns an image", empty(), |_a, _c| async {
            Ok(CallToolResult::success(vec![ContentBlock::image(PNG, "image/png")]))
        })
        .tool_fn("test_audio_content", "Returns audio", empty(), |_a, _c| async {
            Ok(CallToolResult::success(vec![ContentBlock::audio(WAV, "audio/wav")]))
        })
        .tool_fn("test_embedded_resource", "Returns an embedded resource", empty(), |_a, _c| async {
            Ok(CallToolResult::success(vec![ContentBlock::resource(ResourceContents::text(
                "This is an embedded resource content.",
                "test://embedded-resource",
            ))]))
        })
        .tool_fn("test_multiple_content_types", "Returns mixed content", empty(), |_a, _c| async {
            Ok(CallToolResult::success(vec![
                ContentBlock::text("Multiple content types test:"),
                ContentBlock::image(PNG, "image/png"),
                ContentBlock::resource(ResourceContents::text(
                    r#"{"test":"data","value":123}"#,
                    "test://mixed-content-resource",
                )),
            ]))
        })
        .tool_fn("test_error_handling", "Always fails", empty(), |_a, _c| async {
            Ok(CallToolResult::error(vec![ContentBlock::text("This tool intentionally returns an error for testing")]))
        })
        .tool_fn("test_tool_with_logging", "Logs while running", empty(), |_a, c| async move {
            for m in ["Tool execution started", "Tool processing data", "Tool execution completed"] {
                c.log(LoggingLevel::Info, json!(m)).await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(CallToolResult::success(vec![ContentBlock::text("Tool with logging executed successfully")]))
        })
        .tool_fn("test_tool_with_progress", "Reports progress", empty(), |_a, c| async move {
            for (i, m) in [(0.0, "Completed step 0 of 100"), (50.0, "Completed step 50 of 100"), (100.0, "Completed step 100 of 100")] {
                c.progress(i, Some(100.0), Some(m.into())).await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(CallToolResult::success(vec![ContentBlock::text("Progress test completed")]))
        })
        .resource(
            Resource::new("test://static-text", "Static Text Resource"),
            Arc::new(|uri, _c| Box::pin(async move {
                Ok(ReadResourceResult::new(vec![ResourceContents::text("This is the content of the static text resource.", uri)]))
            })),
        )
        .resource(
            Resource::new("test://static-binary", "Static Binary Resource"),
            Arc::new(|uri, _c| Box::pin(async move {
                Ok(ReadResourceResult::new(vec![ResourceContents::blob(PNG, uri).with_mime_type("image/png")]))
            })),
        )
        .resource_template(
            ResourceTemplate::new("test://template/{id}/data", "Template Resource"),
            Arc::new(|uri, vars, _c| Box::pin(async move {
                let id = vars.get("id").cloned().unwrap_or_default();
                let body = json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")});
                Ok(ReadResourceResult::new(vec![ResourceContents::text(body.to_string(), uri).with_mime_type("application/json")]))
            })),
        )
        .prompt(
            Prompt::new("test_simple_prompt", Some("A simple prompt"), None),
            Arc::new(|_a, _c| Box::pin(async {
                Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, "This is a simple prompt for testing.")]))
            })),
        )
        .prompt(
            Prompt::new(
                "test_prompt_with_arguments",
                Some("A prompt with arguments"),
                Some(vec![
                    PromptArgument::new("arg1").with_description("First test argument").with_required(true),
                    PromptArgument::new("arg2").with_description("Second test argument").with_required(true),
                ]),
            ),
            Arc::new(|a, _c| Box::pin(async move {
                let get = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                Ok(GetPromptResult::new(vec![PromptMessage::new_text(
                    Role::User,
                    format!("Prompt with arguments: arg1='{}', arg2='{}'", get("arg1"), get("arg2")),
                )]))
            })),
        )
        .prompt(
            Prompt::new(
                "test_prompt_with_embedded_resource",
                Some("A prompt with an embedded resource"),
                Some(vec![PromptArgument::new("resourceUri").with_description("URI of the resource to embed").with_required(true)]),
            ),
            Arc::new(|a, _c| Box::pin(async move {
                let uri = a.get("resourceUri").and_then(|v| v.as_str()).unwrap_or("test://example-resource").to_owned();
                Ok(GetPromptResult::new(vec![
                    PromptMessage::new(Role::User, ContentBlock::resource(ResourceContents::text("Embedded resource content for testing.", uri))),
                    PromptMessage::new_text(Role::User, "Please process the embedded resource above."),
                ]))
            })),
        )
        .prompt(
            Prompt::new("test_prompt_with_image", Some("A prompt with an image"), None),
            Arc::new(|_a, _c| Box::pin(async {
                Ok(GetPromptResult::new(vec![
                    PromptMessage::new(Role::User, ContentBlock::image(PNG, "image/png")),
                    PromptMessage::new_text(Role::User, "Please analyze the image above."),
                ]))
            })),
        )
        .tool_fn(
            "test_sampling",
            "Asks the client's model",
            json!({"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}),
            |a, c| async move {
                use agentkit_mcp::rmcp::model::{CreateMessageRequestParams, SamplingMessage};
                let prompt = a.get("prompt").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                let req = CreateMessageRequestParams::new(vec![SamplingMessage::user_text(prompt)], 100);
                Ok(match c.sample(req).await {
                    Ok(r) => CallToolResult::success(vec![ContentBlock::text(format!("LLM response: {}", serde_json::to_string(&r.message.content).unwrap_or_default()))]),
                    Err(e) => CallToolResult::error(vec![ContentBlock::text(format!("sampling failed: {e}"))]),
                })
            },
        )
        .tool_fn(
            "json_schema_2020_12_tool",
            "Tool with JSON Schema 2020-12 features",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
                "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                "additionalProperties": false
            }),
            |a, _c| async move { Ok(CallToolResult::success(vec![ContentBlock::text(serde_json::Value::Object(a).to_string())])) },
        )
        .tool_fn(
            "test_elicitation",
            "Asks the user for their information",
            json!({"type": "object", "properties": {"message": {"type": "string", "description": "The message to show the user"}}, "required": ["message"]}),
            |a, c| async move {
                let message = a.get("message").and_then(|v| v.as_str()).unwrap_or("Please provide your information").to_owned();
                let schema = elicitation_schema(json!({
                    "type": "object",
                    "properties": {
                        "username": {"type": "string", "description": "User's response"},
                        "email": {"type": "string", "description": "User's email address"}
                    },
                    "required": ["username", "email"]
                }))?;
                let r = c.elicit(message, schema).await?;
                Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                    "User response: action={}, content={}",
                    action(&r),
                    r.content.map(|v| v.to_string()).unwrap_or_else(|| "{}".into())
                ))]))
            },
        )
        .tool_fn(
            "test_elicitation_sep1034_defaults",
            "Elicitation whose schema has defaults for every primitive type (SEP-1034)",
            empty(),
            |_a, c| async move {
                let schema = elicitation_schema(json!({
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "description": "User name", "default": "John Doe"},
                        "age": {"type": "integer", "description": "User age", "default": 30},
                        "score": {"type": "number", "description": "User score", "default": 95.5},
                        "status": {"type": "string", "description": "User status", "enum": ["active", "inactive", "pending"], "default": "active"},
                        "verified": {"type": "boolean", "description": "Verification status", "default": true}
                    }
                }))?;
                let r = c.elicit("Please review and update the form fields with defaults", schema).await?;
                Ok(completed(&r))
            },
        )
        .tool_fn(
            "test_elicitation_sep1330_enums",
            "Elicitation with every enum schema variant (SEP-1330)",
            empty(),
            |_a, c| async move {
                let schema = elicitation_schema(json!({
                    "type": "object",
                    "properties": {
                        "untitledSingle": {"type": "string", "description": "Untitled single-select", "enum": ["option1", "option2", "option3"]},
                        "titledSingle": {"type": "string", "description": "Titled single-select", "oneOf": [
                            {"const": "value1", "title": "First Option"},
                            {"const": "value2", "title": "Second Option"},
                            {"const": "value3", "title": "Third Option"}
                        ]},
                        "legacyEnum": {"type": "string", "description": "Legacy titled enum", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
                        "untitledMulti": {"type": "array", "description": "Untitled multi-select", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                        "titledMulti": {"type": "array", "description": "Titled multi-select", "items": {"anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"}
                        ]}}
                    }
                }))?;
                let r = c.elicit("Please select options from the enum fields", schema).await?;
                Ok(completed(&r))
            },
        )
        .build();

    let app =
        axum::Router::new().nest_service("/mcp", server.into_http_service(HttpOptions::new()));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "conformance server at http://{}/mcp",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
