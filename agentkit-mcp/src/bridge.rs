//! The stdio→streamable-HTTP bridge: serve any MCP server that a [`ConnectionManager`] reaches
//! (typically a stdio child process) as an [`McpServer`](crate::McpServer), so it can be mounted at `/mcp` in an
//! axum app or served over any other transport.
//!
//! The bridge mirrors the server's tools, resources and prompts as they are when the bridge is
//! built (a tool added later needs a new bridge). Every call goes through the manager, so the
//! child is started lazily, shared, and restarted after a crash; a client's cancellation
//! cancels the forwarded request.

use std::sync::Arc;

use agentkit_core::{Error, Result, RunContext};
use rmcp::model::ErrorData;

use crate::manager::ConnectionManager;
use crate::server::{McpServerBuilder, PromptHandler, ResourceHandler, ToolHandler};

fn forward_error(e: &Error) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}

/// Build an [`McpServerBuilder`] that forwards to `server` of `manager`: every tool, resource
/// and prompt of that server, with the same names, schemas and descriptions.
///
/// ```no_run
/// use agentkit_mcp::{ConnectionManager, HttpOptions, ServerConfig};
/// use agentkit_mcp::bridge::bridge_server;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ConnectionManager::new([ServerConfig::stdio(
///     "everything",
///     "npx",
///     ["-y", "@modelcontextprotocol/server-everything"],
/// )]);
/// let server = bridge_server(&manager, "everything").await?.build();
/// let app: axum::Router = axum::Router::new()
///     .nest_service("/mcp", server.into_http_service(HttpOptions::new()));
/// # let _ = app; Ok(()) }
/// ```
pub async fn bridge_server(manager: &ConnectionManager, server: &str) -> Result<McpServerBuilder> {
    // Servers without resources or prompts answer "method not found": mirror what exists.
    let (info, tools, resources, prompts) = manager
        .read_only(server, |conn| async move {
            let tools = conn.list_tools().await?;
            let resources = conn.list_resources().await;
            let prompts = conn.list_prompts().await;
            // A listing of resources or prompts failed by a lost connection is no "method
            // not found": fail, so that everything is listed again on a new connection.
            if conn.is_closed() {
                let resources = resources?;
                let prompts = prompts?;
                return Ok((conn.peer_info(), tools, Ok(resources), Ok(prompts)));
            }
            Ok((conn.peer_info(), tools, resources, prompts))
        })
        .await?;
    let (name, version) = info
        .as_ref()
        .and_then(|i| i.server_info.as_ref())
        .map(|i| (i.name.clone(), i.version.clone()))
        .unwrap_or_else(|| (server.to_owned(), "0.0.0".to_owned()));
    let mut builder = McpServerBuilder::new(name, version);

    for tool in tools {
        let manager = manager.clone();
        let server = server.to_owned();
        let tool_name = tool.name.to_string();
        let handler: ToolHandler = Arc::new(move |args, call| {
            let manager = manager.clone();
            let server = server.clone();
            let tool_name = tool_name.clone();
            Box::pin(async move {
                let ctx = RunContext::new().with_cancellation(call.cancellation());
                manager
                    .call_tool(&server, &tool_name, args, &ctx)
                    .await
                    .map_err(|e| forward_error(&e))
            })
        });
        builder = builder.tool(tool, handler);
    }

    if let Ok(resources) = resources {
        for resource in resources {
            let manager = manager.clone();
            let server = server.to_owned();
            let handler: ResourceHandler = Arc::new(move |uri, _call| {
                let manager = manager.clone();
                let server = server.clone();
                Box::pin(async move {
                    let uri = &uri;
                    manager
                        .read_only(&server, |conn| async move { conn.read_resource(uri).await })
                        .await
                        .map_err(|e| forward_error(&e))
                })
            });
            builder = builder.resource(resource, handler);
        }
    }
    if let Ok(prompts) = prompts {
        for prompt in prompts {
            let manager = manager.clone();
            let server = server.to_owned();
            let prompt_name = prompt.name.clone();
            let handler: PromptHandler = Arc::new(move |args, _call| {
                let manager = manager.clone();
                let server = server.clone();
                let prompt_name = prompt_name.clone();
                Box::pin(async move {
                    let prompt_name = &prompt_name;
                    manager
                        .read_only(&server, |conn| {
                            let args = args.clone();
                            async move { conn.get_prompt(prompt_name, args).await }
                        })
                        .await
                        .map_err(|e| forward_error(&e))
                })
            });
            builder = builder.prompt(prompt, handler);
        }
    }
    Ok(builder)
}
