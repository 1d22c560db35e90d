//! A handler that panics, served over streamable HTTP on 127.0.0.1, is answered at once with
//! a JSON-RPC internal error (-32603) naming the tool and the panic's message, and the same
//! client keeps working: on a legacy (2025-11-25) session, on stateless 2026-07-28 requests
//! through rmcp, and on a stateless call answered directly by `RequestTools::call_direct`
//! (what agentkit-server's `/mcp` does for federated tools).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use agentkit_mcp::rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, GetPromptRequestParams, JsonObject,
    Prompt, ProtocolVersion, Tool,
};
use agentkit_mcp::rmcp::service::{RequestContext, RunningService};
use agentkit_mcp::rmcp::transport::StreamableHttpClientTransport;
use agentkit_mcp::rmcp::{
    ClientLifecycleMode, ClientServiceExt, ErrorData, RoleClient, RoleServer,
};
use agentkit_mcp::{CallContext, DirectCall, HttpOptions, RequestTools};
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ClientConfig>;

/// Claims `x__boom`, which panics on both paths, saying which one.
struct Panicky;

#[async_trait::async_trait]
impl RequestTools for Panicky {
    async fn list(&self, _: &RequestContext<RoleServer>) -> Result<Vec<Tool>, ErrorData> {
        Ok(Vec::new())
    }

    fn owns(&self, name: &str) -> bool {
        name == "x__boom"
    }

    async fn call(
        &self,
        _: &str,
        _: JsonObject,
        _: CallContext,
    ) -> Result<CallToolResult, ErrorData> {
        panic!("broken in call");
    }

    fn calls_directly(&self, _: &str) -> bool {
        true
    }

    async fn call_direct(
        &self,
        _: &str,
        _: JsonObject,
        _: DirectCall,
    ) -> Result<CallToolResult, ErrorData> {
        panic!("broken in call_direct");
    }
}

/// Tools `boom` (panics with "index <n> out of range") and `echo` (`common::fragile`), the
/// request tool `x__boom` and the prompt `broken` (panics), served as agentkit-server serves `/mcp` (any host, JSON answers).
async fn serve() -> String {
    let server = common::fragile()
        .request_tools(Arc::new(Panicky))
        .prompt(
            Prompt::new("broken", Some("Panics"), None),
            Arc::new(|_, _| Box::pin(async { panic!("the prompt is broken") })),
        )
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = HttpOptions::new()
        .with_allowed_hosts(std::iter::empty::<String>())
        .with_json_response(true);
    common::serve_on_with(server, listener, options).0
}

async fn client(url: &str, lifecycle: ClientLifecycleMode) -> Client {
    ClientConfig::default()
        .serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), lifecycle)
        .await
        .unwrap()
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args.as_object().unwrap().clone())
}

/// Calls `tool`, which panics: the JSON-RPC error's message (checked: at once, -32603).
async fn panicked(c: &Client, tool: &str, args: Value) -> String {
    common::panicked_at_once(c.call_tool(call(tool, args))).await
}

async fn echo(c: &Client, text: &str) -> String {
    let r = c
        .call_tool(call("echo", json!({"text": text})))
        .await
        .unwrap();
    r.content[0].as_text().unwrap().text.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_tool_is_answered_at_once_on_both_lifecycles() {
    let url = serve().await;
    let lifecycles = [
        (
            ClientLifecycleMode::Initialize,
            ProtocolVersion::V_2025_11_25,
        ),
        (
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
            ProtocolVersion::V_2026_07_28,
        ),
    ];
    for (lifecycle, version) in lifecycles {
        let c = client(&url, lifecycle).await;
        assert_eq!(c.peer_info().unwrap().protocol_version, version);
        let message = panicked(&c, "boom", json!({"n": 7})).await;
        assert!(
            message.starts_with("the handler of tool `boom` panicked: index 7 out of range;"),
            "{version}: {message}"
        );
        assert!(message.contains("keeps serving"), "{message}");
        // Any other request's handler too.
        let message =
            common::panicked_at_once(c.get_prompt(GetPromptRequestParams::new("broken"))).await;
        assert!(
            message.starts_with(
                "the handler of request `prompts/get` panicked: the prompt is broken;"
            ),
            "{version}: {message}"
        );
        // The client, and its session for the legacy one, keep working.
        assert_eq!(echo(&c, "still here").await, "still here", "{version}");
        // Concurrent calls: the panicking ones fail, the others succeed, none waits.
        let calls = (0..6).map(|i| {
            let c = &c;
            async move {
                if i % 2 == 0 {
                    Err(panicked(c, "boom", json!({"n": i})).await)
                } else {
                    Ok(echo(c, &i.to_string()).await)
                }
            }
        });
        for (i, r) in futures::future::join_all(calls)
            .await
            .into_iter()
            .enumerate()
        {
            match r {
                Ok(t) => assert_eq!(t, i.to_string()),
                Err(m) => assert!(m.contains(&format!("index {i} out of range")), "{m}"),
            }
        }
        c.cancel().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_call_that_panics_is_answered_with_the_same_error() {
    let url = serve().await;
    // A plain stateless POST, as a 2026-07-28 client sends it: answered by `call_direct`.
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "x__boom", "arguments": {}, "_meta": meta}});
    let http = reqwest::Client::new();
    let res = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "x__boom")
        .body(body.to_string())
        .send()
        .await
        .expect("the server answers (the connection is not dropped)");
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["id"], 9, "{answer}");
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the handler of tool `x__boom` panicked: broken in call_direct;"),
        "{answer}"
    );

    // An rmcp client on 2026-07-28 gets the same error, whichever path answered, and its
    // next call works.
    let c = client(
        &url,
        ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await;
    let message = panicked(&c, "x__boom", json!({})).await;
    assert!(
        message.starts_with("the handler of tool `x__boom` panicked: broken in call"),
        "{message}"
    );
    assert_eq!(echo(&c, "after").await, "after");
    c.cancel().await.unwrap();
}
