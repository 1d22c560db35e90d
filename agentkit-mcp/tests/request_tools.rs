//! `RequestTools`: tools listed and called per request beside the registered ones, driven by
//! a raw rmcp client over a duplex pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, JsonObject, Tool,
};
use agentkit_mcp::rmcp::service::RequestContext;
use agentkit_mcp::rmcp::{ErrorData, RoleServer, ServiceExt};
use agentkit_mcp::{CallContext, McpServerBuilder, RequestTools};
use serde_json::json;

/// Lists `dyn__echo`, claims every `dyn__` name, hides the registered `secret`.
struct Dynamic;

#[async_trait::async_trait]
impl RequestTools for Dynamic {
    async fn list(&self, _: &RequestContext<RoleServer>) -> Result<Vec<Tool>, ErrorData> {
        Ok(vec![Tool::new(
            "dyn__echo",
            "Echoes",
            Arc::new(JsonObject::new()),
        )])
    }

    fn owns(&self, name: &str) -> bool {
        name.starts_with("dyn__")
    }

    async fn call(
        &self,
        name: &str,
        args: JsonObject,
        _: CallContext,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "{name} {}",
            serde_json::Value::Object(args)
        ))]))
    }

    fn shows(&self, name: &str, _: &RequestContext<RoleServer>) -> bool {
        name != "secret"
    }
}

#[tokio::test]
async fn request_tools_are_listed_called_and_hide_registered_ones() {
    let ok = |text: &'static str| {
        move |_: JsonObject, _: CallContext| async move {
            Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
        }
    };
    let server = McpServerBuilder::new("dyn", "1.0.0")
        .tool_fn("open", "Open", json!({"type": "object"}), ok("open"))
        .tool_fn("secret", "Hidden", json!({"type": "object"}), ok("secret"))
        // A registered tool with a claimed name: the request tools win.
        .tool_fn(
            "dyn__echo",
            "Shadowed",
            json!({"type": "object"}),
            ok("shadowed"),
        )
        .request_tools(Arc::new(Dynamic))
        .build();
    let (a, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let running = server.serve(a).await.unwrap();
        let _ = running.waiting().await;
    });
    let client = ().serve(b).await.unwrap();
    let mut names: Vec<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["dyn__echo", "open"]);

    let text = |r: &CallToolResult| -> String {
        r.content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect()
    };
    let args = json!({"x": 1}).as_object().unwrap().clone();
    let r = client
        .call_tool(CallToolRequestParams::new("dyn__echo").with_arguments(args))
        .await
        .unwrap();
    assert_eq!(text(&r), r#"dyn__echo {"x":1}"#);
    let r = client
        .call_tool(CallToolRequestParams::new("open"))
        .await
        .unwrap();
    assert_eq!(text(&r), "open");
    let err = client
        .call_tool(CallToolRequestParams::new("secret"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown tool `secret`"), "{err}");
    assert!(
        !err.contains("open"),
        "the error lists no tool names: {err}"
    );
    client.cancel().await.unwrap();
}
