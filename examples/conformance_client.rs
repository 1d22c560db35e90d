//! An MCP client built on agentkit's `ConnectionManager`, for the official conformance suite's
//! client scenarios:
//!
//! ```sh
//! tests/peers/node_modules/.bin/node tests/peers/node_modules/.bin/conformance client \
//!   --command "target/debug/examples/conformance_client" --scenario initialize
//! ```
//! The suite passes the server URL as the last argument and the scenario in
//! `MCP_CONFORMANCE_SCENARIO` (and scenario data such as client credentials in
//! `MCP_CONFORMANCE_CONTEXT`). The client connects, lists the tools and calls each one with
//! arguments built from its schema; elicitations are accepted with the schema's defaults.
//! `auth/*` scenarios connect with OAuth (`auth: {oauth: ...}`); the suite's authorization
//! server approves without a user, so `FollowAuthorizationRedirect` plays the browser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentkit_core::McpOAuth;
use agentkit_core::{HumanInputHandler, HumanInputRequest, HumanInputResponse, RunContext};
use agentkit_mcp::oauth::{FollowAuthorizationRedirect, MemoryTokenStore};
use agentkit_mcp::{ConnectionManager, ServerConfig};
use async_trait::async_trait;
use serde_json::{Map, Value, json};

/// Accepts every elicitation with the defaults its schema declares.
struct AcceptDefaults;

#[async_trait]
impl HumanInputHandler for AcceptDefaults {
    async fn ask(
        &self,
        r: HumanInputRequest,
        _: &RunContext,
    ) -> agentkit_core::Result<HumanInputResponse> {
        let mut data = Map::new();
        if let Some(props) = r
            .schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
        {
            for (k, p) in props {
                if let Some(d) = p.get("default") {
                    data.insert(k.clone(), d.clone());
                }
            }
        }
        Ok(HumanInputResponse::Answer {
            text: String::new(),
            data: Some(Value::Object(data)),
        })
    }
}

fn sample_args(schema: &Value) -> Value {
    let mut out = Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            let v = p.get("default").cloned().unwrap_or_else(|| {
                match p.get("type").and_then(Value::as_str) {
                    Some("number") | Some("integer") => json!(2),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => json!("test"),
                }
            });
            out.insert(k.clone(), v);
        }
    }
    Value::Object(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::args()
        .next_back()
        .ok_or("usage: conformance_client <server-url>")?;
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    eprintln!("scenario {scenario:?} against {url}");
    let context: Value = std::env::var("MCP_CONFORMANCE_CONTEXT")
        .ok()
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or(Value::Null);
    let mut server = ServerConfig::http("server", url);
    if scenario.starts_with("auth/") {
        let mut oauth = McpOAuth::new();
        if scenario == "auth/basic-cimd" {
            // The suite's authorization server fetches nothing; it accepts this URL as the
            // client id when the client offers it.
            oauth.client_metadata_url =
                Some("https://conformance-test.local/client-metadata.json".into());
        }
        if let Some(id) = context.get("client_id").and_then(Value::as_str) {
            oauth = oauth.with_client_id(id);
        }
        if let Some(secret) = context.get("client_secret").and_then(Value::as_str) {
            oauth = oauth.with_client_secret(secret);
        }
        if let Some(pem) = context.get("private_key_pem").and_then(Value::as_str) {
            oauth.private_key = Some(pem.to_owned());
            oauth.signing_algorithm = context
                .get("signing_algorithm")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if scenario.starts_with("auth/client-credentials") {
            oauth = oauth.with_client_credentials();
        }
        server = server.with_oauth(oauth);
    }
    let manager = ConnectionManager::builder([server])
        .with_client_info("agentkit-conformance-client", env!("CARGO_PKG_VERSION"))
        .with_human_input(Arc::new(AcceptDefaults))
        .with_token_store(Arc::new(MemoryTokenStore::new()))
        .with_authorization_handler(Arc::new(FollowAuthorizationRedirect))
        .build();
    let conn = manager.connection("server").await?;
    let tools = conn.list_tools().await?;
    let ctx = RunContext::new();
    for t in tools {
        let args = sample_args(&t.schema_as_json_value());
        let args = args.as_object().cloned().unwrap_or_default();
        match manager.call_tool("server", &t.name, args, &ctx).await {
            Ok(r) => eprintln!("{} -> {:?}", t.name, r.content),
            Err(e) => eprintln!("{} failed: {e}", t.name),
        }
    }
    manager.shutdown().await;
    Ok(())
}
