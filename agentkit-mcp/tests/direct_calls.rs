//! `RequestTools::call_direct`: a stateless 2026-07-28 `tools/call` over streamable HTTP
//! answered without rmcp's per-request service gets the very answer rmcp's path gives
//! (status, content type, body bytes), and every request rmcp would check differently
//! (headers, `_meta`, sessions, origins, tasks) still goes through rmcp.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock, ErrorCode, JsonObject, Tool};
use agentkit_mcp::rmcp::service::RequestContext;
use agentkit_mcp::rmcp::{ErrorData, RoleServer};
use agentkit_mcp::{CallContext, DirectCall, HttpOptions, McpServerBuilder, RequestTools};
use serde_json::{Value, json};

/// Claims `x__*`; answers from the name and the `x-who` header of the HTTP request.
struct Fed {
    direct: bool,
    direct_calls: AtomicUsize,
}

fn answer(name: &str, args: &JsonObject, who: Option<&str>) -> Result<CallToolResult, ErrorData> {
    let text = format!("{name} {} by {who:?}", Value::Object(args.clone()));
    match name {
        "x__fail" => Err(ErrorData::invalid_params(format!("no {name}"), None)),
        "x__gone" => Err(ErrorData::new(
            ErrorCode::RESOURCE_NOT_FOUND,
            "gone",
            Some(json!({"why": 1})),
        )),
        "x__internal" => Err(ErrorData::internal_error("broken", None)),
        "x__err" => Ok(CallToolResult::error(vec![ContentBlock::text(text)])),
        "x__array" => {
            // Structured content that is not an object (2026-07-28 allows it).
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            r.structured_content = Some(json!([1, 2]));
            Ok(r)
        }
        _ => {
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            r.structured_content = Some(json!({"name": name, "n": 1.5}));
            Ok(r)
        }
    }
}

fn who(parts: Option<&http::request::Parts>) -> Option<String> {
    parts?
        .headers
        .get("x-who")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[async_trait::async_trait]
impl RequestTools for Fed {
    async fn list(&self, _: &RequestContext<RoleServer>) -> Result<Vec<Tool>, ErrorData> {
        Ok(Vec::new())
    }

    fn owns(&self, name: &str) -> bool {
        name.starts_with("x__")
    }

    async fn call(
        &self,
        name: &str,
        args: JsonObject,
        call: CallContext,
    ) -> Result<CallToolResult, ErrorData> {
        let parts = call.request().extensions.get::<http::request::Parts>();
        answer(name, &args, who(parts).as_deref())
    }

    fn calls_directly(&self, _: &str) -> bool {
        self.direct
    }

    async fn call_direct(
        &self,
        name: &str,
        args: JsonObject,
        call: DirectCall,
    ) -> Result<CallToolResult, ErrorData> {
        self.direct_calls.fetch_add(1, Ordering::SeqCst);
        answer(name, &args, who(Some(&call.parts)).as_deref())
    }
}

async fn serve(direct: bool) -> (String, Arc<Fed>) {
    let fed = Arc::new(Fed {
        direct,
        direct_calls: AtomicUsize::new(0),
    });
    let server = McpServerBuilder::new("direct", "1.0.0")
        .tool_fn(
            "plain",
            "A registered tool",
            json!({"type": "object"}),
            |_, _| async { Ok(CallToolResult::success(vec![ContentBlock::text("plain")])) },
        )
        .request_tools(Arc::clone(&fed) as Arc<dyn RequestTools>)
        .build();
    let service = server.into_http_service(
        HttpOptions::new()
            .with_allowed_hosts(std::iter::empty::<String>())
            .with_json_response(true),
    );
    let app = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/mcp"), fed)
}

/// One variant of a `tools/call` POST.
#[derive(Debug, Clone)]
struct Variant {
    tool: &'static str,
    accept: Option<&'static str>,
    /// `Mcp-Name`: 0 the tool, 1 another name, 2 absent, 3 twice, 4 `x__ok` Base64-encoded.
    name_header: u8,
    method_header: Option<&'static str>,
    version_header: Option<&'static str>,
    meta_version: Option<&'static str>,
    tasks: bool,
    session: bool,
    origin: Option<&'static str>,
    /// Raw members put first in the body (a stray `result`, a second `method`, ...).
    extra: &'static str,
}

impl Variant {
    fn plain(tool: &'static str) -> Self {
        Self {
            tool,
            accept: Some("application/json, text/event-stream"),
            name_header: 0,
            method_header: Some("tools/call"),
            version_header: Some("2026-07-28"),
            meta_version: Some("2026-07-28"),
            tasks: false,
            session: false,
            origin: None,
            extra: "",
        }
    }
}

/// Status, content type and body of `v` posted to `url`.
async fn post(http: &reqwest::Client, url: &str, v: &Variant) -> (u16, String, String) {
    let mut meta = serde_json::Map::new();
    if let Some(version) = v.meta_version {
        meta.insert(
            "io.modelcontextprotocol/protocolVersion".into(),
            json!(version),
        );
    }
    let caps = if v.tasks {
        json!({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    } else {
        json!({})
    };
    meta.insert("io.modelcontextprotocol/clientCapabilities".into(), caps);
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": v.tool, "arguments": {"a": [1, "two"]}, "_meta": meta}});
    let body = format!("{{{}{}", v.extra, &body.to_string()[1..]);
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-who", "alice")
        .body(body);
    if let Some(a) = v.accept {
        req = req.header("accept", a);
    }
    if let Some(m) = v.method_header {
        req = req.header("mcp-method", m);
    }
    if let Some(p) = v.version_header {
        req = req.header("mcp-protocol-version", p);
    }
    req = match v.name_header {
        0 => req.header("mcp-name", v.tool),
        1 => req.header("mcp-name", "x__other"),
        3 => req.header("mcp-name", v.tool).header("mcp-name", v.tool),
        // Base64 of `x__ok`, the tool of every variant with this header.
        4 => req.header("mcp-name", "=?base64?eF9fb2s=?="),
        _ => req,
    };
    if v.session {
        req = req.header("mcp-session-id", "no-such-session");
    }
    if let Some(o) = v.origin {
        req = req.header("origin", o);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ctype, res.text().await.unwrap())
}

#[tokio::test]
async fn direct_answers_are_rmcps_answers_byte_for_byte() {
    let (direct_url, direct) = serve(true).await;
    let (rmcp_url, _) = serve(false).await;
    let http = reqwest::Client::new();
    for tool in [
        "x__ok",
        "x__err",
        "x__array",
        "x__fail",
        "x__gone",
        "x__internal",
    ] {
        let v = Variant::plain(tool);
        let before = direct.direct_calls.load(Ordering::SeqCst);
        let a = post(&http, &direct_url, &v).await;
        assert_eq!(
            direct.direct_calls.load(Ordering::SeqCst),
            before + 1,
            "{tool}: answered directly"
        );
        let b = post(&http, &rmcp_url, &v).await;
        assert_eq!(a, b, "{tool}");
        assert!(a.1.starts_with("application/json"), "{tool}: {a:?}");
        let v: Value = serde_json::from_str(&a.2).unwrap();
        assert_eq!(v["id"], 7, "{tool}: {v}");
        match tool {
            "x__ok" => {
                assert_eq!(a.0, 200);
                assert_eq!(
                    v["result"]["content"][0]["text"],
                    r#"x__ok {"a":[1,"two"]} by Some("alice")"#
                );
                assert_eq!(v["result"]["structuredContent"]["n"], 1.5);
            }
            "x__err" => assert_eq!(v["result"]["isError"], true, "{v}"),
            "x__array" => assert_eq!(v["result"]["structuredContent"], json!([1, 2])),
            // rmcp passes a tool handler's error code on as it is.
            "x__gone" => assert_eq!(v["error"]["code"], -32002, "{v}"),
            "x__fail" => assert_eq!(v["error"]["code"], -32602, "{v}"),
            _ => assert_eq!(v["error"]["code"], -32603, "{v}"),
        }
    }
}

#[tokio::test]
async fn every_other_request_goes_through_rmcp_with_the_same_answer() {
    let (direct_url, direct) = serve(true).await;
    let (rmcp_url, _) = serve(false).await;
    let http = reqwest::Client::new();
    let mut variants = Vec::new();
    let base = Variant::plain("x__ok");
    for accept in [
        None,
        Some("application/json"),
        Some("application/json;q=0, text/event-stream"),
        Some("text/event-stream, application/json;q=0.5"),
    ] {
        variants.push(Variant {
            accept,
            ..base.clone()
        });
    }
    for name_header in 1..=4 {
        variants.push(Variant {
            name_header,
            ..base.clone()
        });
    }
    for method_header in [None, Some("tools/list")] {
        variants.push(Variant {
            method_header,
            ..base.clone()
        });
    }
    for version_header in [None, Some("2025-11-25"), Some("1999-01-01")] {
        variants.push(Variant {
            version_header,
            ..base.clone()
        });
    }
    for meta_version in [None, Some("2025-11-25")] {
        variants.push(Variant {
            meta_version,
            ..base.clone()
        });
        variants.push(Variant {
            meta_version,
            version_header: meta_version,
            ..base.clone()
        });
    }
    variants.push(Variant {
        tasks: true,
        ..base.clone()
    });
    variants.push(Variant {
        session: true,
        ..base.clone()
    });
    for origin in ["http://localhost:3000", "https://evil.example"] {
        variants.push(Variant {
            origin: Some(origin),
            ..base.clone()
        });
    }
    // Not plainly a request (rmcp refuses a stray `result` or `error`), or a body its
    // `tools/call` type does not read as one.
    for extra in [
        r#""result":1,"#,
        r#""error":null,"#,
        r#""method":"tools/list","#,
        r#""id":null,"#,
        r#""jsonrpc":"1.0","#,
        r#""params":{"name":"x__ok","arguments":"not an object"},"#,
    ] {
        variants.push(Variant {
            extra,
            ..base.clone()
        });
    }
    // A registered tool is never answered directly.
    variants.push(Variant::plain("plain"));
    for v in &variants {
        let a = post(&http, &direct_url, v).await;
        let b = post(&http, &rmcp_url, v).await;
        assert_eq!(a, b, "{v:?}");
    }
    // A quality parameter or a second `Mcp-Name` leaves the reading to rmcp even where
    // it accepts the request; only the plain shape is answered directly.
    assert_eq!(direct.direct_calls.load(Ordering::SeqCst), 0);
}
