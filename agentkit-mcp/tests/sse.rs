//! The legacy HTTP+SSE transport (protocol 2024-11-05): against server-everything's SSE mode,
//! and against small axum servers that misbehave in the ways the transport must report.
#![cfg(feature = "client-sse")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkit_core::{CollectingSink, RunContext, RunEvent, ToolSource};
use agentkit_mcp::rmcp::transport::Transport;
use agentkit_mcp::rmcp::{RoleClient, ServiceExt, model::ClientConfig};
use agentkit_mcp::sse::{SseClientConfig, SseClientTransport, SseTransportError};
use agentkit_mcp::{ConnectionManager, McpAggregator, ServerConfig, ServerSet};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn obj(v: serde_json::Value) -> agentkit_mcp::rmcp::model::JsonObject {
    v.as_object().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_sse_list_call_progress_and_new_session_after_restart() {
    let port = common::free_port();
    let peer = common::HttpPeer::start_sse(port).await;
    // Read through the mcpServers JSON dialect: a URL ending in /sse is the SSE transport.
    let set = ServerSet::from_mcp_servers_json(&format!(
        r#"{{"mcpServers": {{"everything": {{"url": "{}", "headers": {{"X-Test": "1"}}}}}}}}"#,
        peer.url
    ))
    .unwrap();
    let manager = ConnectionManager::new(set.servers.into_values());
    let tools = McpAggregator::new(manager.clone(), ["everything"]);
    let ctx = RunContext::new();

    let specs = tools.list_tools().await.unwrap();
    assert!(
        specs.iter().any(|s| s.name == "everything__echo"),
        "{specs:?}"
    );
    let out = tools
        .call_tool("everything__echo", json!({"message": "over sse"}), &ctx)
        .await
        .unwrap();
    assert_eq!(out.text_content(), "Echo: over sse");
    let sum = tools
        .call_tool("everything__get-sum", json!({"a": 40, "b": 2}), &ctx)
        .await
        .unwrap();
    assert!(sum.text_content().contains("42"), "{}", sum.text_content());
    let conn = manager.connection("everything").await.unwrap();
    assert_eq!(
        conn.protocol_version().map(|v| v.to_string()).as_deref(),
        Some("2025-11-25"),
        "the SDK server answers the version it was offered"
    );

    // Progress notifications arrive on the SSE stream and become run events.
    let sink = Arc::new(CollectingSink::new());
    let pctx = RunContext::new().with_events(sink.clone());
    let out = manager
        .call_tool(
            "everything",
            "trigger-long-running-operation",
            obj(json!({"duration": 0.3, "steps": 3})),
            &pctx,
        )
        .await
        .unwrap();
    assert!(out.is_error != Some(true));
    let progress: Vec<f64> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RunEvent::Progress { progress, .. } => Some(progress),
            _ => None,
        })
        .collect();
    assert_eq!(progress, vec![1.0, 2.0, 3.0]);

    // The server goes away: the stream ends, the connection closes, calls fail with the
    // server's name; when it is back, the manager opens a new session.
    peer.stop().await;
    let down = tools
        .call_tool("everything__echo", json!({"message": "x"}), &ctx)
        .await;
    assert!(down.unwrap_err().to_string().contains("everything"));
    let peer = common::HttpPeer::start_sse(port).await;
    let mut last = None;
    for _ in 0..30 {
        match tools
            .call_tool("everything__echo", json!({"message": "again"}), &ctx)
            .await
        {
            Ok(out) => {
                last = Some(out.text_content());
                break;
            }
            Err(e) => {
                last = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    assert_eq!(last.as_deref(), Some("Echo: again"));
    manager.shutdown().await;
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_serves_rmcp_directly_and_closes_cleanly() {
    let port = common::free_port();
    let peer = common::HttpPeer::start_sse(port).await;
    let transport = SseClientTransport::connect(SseClientConfig::new(peer.url.clone()))
        .await
        .unwrap();
    assert!(transport.endpoint().path().starts_with("/message"));
    assert!(transport.endpoint().query().unwrap().contains("sessionId="));
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"));
    client.cancel().await.unwrap();
    peer.stop().await;
}

/// A test server: `GET /sse` answers with `respond`; everything it was sent is recorded.
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    stop: CancellationToken,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn fake<F>(respond: F) -> Fake
where
    F: Fn(usize, &HeaderMap) -> Response + Clone + Send + Sync + 'static,
{
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/sse",
            get(move |headers: HeaderMap| {
                let respond = respond.clone();
                let seen = s.clone();
                async move {
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(headers.clone());
                        seen.len() - 1
                    };
                    respond(n, &headers)
                }
            }),
        )
        .route(
            "/msg",
            axum::routing::post(|| async { StatusCode::ACCEPTED }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let st = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { st.cancelled().await })
            .await
            .unwrap();
    });
    Fake {
        url: format!("http://{addr}/sse"),
        seen,
        stop,
    }
}

/// An SSE response with these event blocks; it stays open when `open` is set.
fn sse_body(blocks: Vec<String>, open: bool) -> Response {
    let items = futures::stream::iter(
        blocks
            .into_iter()
            .map(|b| Ok::<_, std::io::Error>(Bytes::from(b))),
    );
    let body = if open {
        Body::from_stream(futures::StreamExt::chain(items, futures::stream::pending()))
    } else {
        Body::from_stream(items)
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn cfg(url: &str) -> SseClientConfig {
    SseClientConfig::new(url).with_endpoint_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn wrong_content_type_is_reported_with_advice() {
    let f = fake(|_, _| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"jsonrpc":"2.0"}"#,
        )
            .into_response()
    })
    .await;
    let err = SseClientTransport::connect(cfg(&f.url)).await.unwrap_err();
    assert!(
        matches!(err, SseTransportError::ContentType { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("application/json"), "{err}");
    assert!(err.to_string().contains("streamable_http"), "{err}");
}

#[tokio::test]
async fn a_stream_without_endpoint_is_reported() {
    let f = fake(|_, _| {
        sse_body(
            vec![": hello\n\n".into(), "event: ping\ndata: x\n\n".into()],
            false,
        )
    })
    .await;
    let err = SseClientTransport::connect(cfg(&f.url)).await.unwrap_err();
    assert!(
        matches!(&err, SseTransportError::NoEndpoint { reason, .. } if reason.contains("ended")),
        "{err}"
    );
    // A stream that stays silent runs into the endpoint timeout.
    let f = fake(|_, _| sse_body(vec![], true)).await;
    let err =
        SseClientTransport::connect(cfg(&f.url).with_endpoint_timeout(Duration::from_millis(300)))
            .await
            .unwrap_err();
    assert!(
        matches!(&err, SseTransportError::NoEndpoint { reason, .. } if reason.contains("none within")),
        "{err}"
    );
}

#[tokio::test]
async fn an_endpoint_on_another_origin_is_refused() {
    let f = fake(|_, _| {
        sse_body(
            vec!["event: endpoint\ndata: http://attacker.invalid/msg\n\n".into()],
            true,
        )
    })
    .await;
    let err = SseClientTransport::connect(cfg(&f.url)).await.unwrap_err();
    assert!(matches!(err, SseTransportError::Endpoint { .. }), "{err}");
    assert!(err.to_string().contains("another origin"), "{err}");
}

#[tokio::test]
async fn status_errors_carry_the_challenge_and_headers_are_sent() {
    let f = fake(|_, h| {
        if h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some("Bearer good") {
            sse_body(vec!["event: endpoint\ndata: /msg?s=1\n\n".into()], true)
        } else {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, r#"Bearer realm="mcp""#)],
                "no",
            )
                .into_response()
        }
    })
    .await;
    let err = SseClientTransport::connect(cfg(&f.url).with_bearer_token("bad"))
        .await
        .unwrap_err();
    assert!(err.is_authorization_required(), "{err}");
    assert_eq!(err.auth_challenge(), Some(r#"Bearer realm="mcp""#));
    let mut t = SseClientTransport::connect(
        cfg(&f.url)
            .with_bearer_token("good")
            .with_header("X-Team", "a"),
    )
    .await
    .unwrap();
    assert_eq!(t.endpoint().path(), "/msg");
    {
        let seen = f.seen.lock().unwrap();
        let last = seen.last().unwrap();
        assert_eq!(last["x-team"], "a");
        assert_eq!(last[header::ACCEPT], "text/event-stream");
    }
    Transport::<RoleClient>::close(&mut t).await.unwrap();

    // Through the manager the error names the server and says what to set.
    let manager = ConnectionManager::new([ServerConfig::sse("old", f.url.clone())]);
    let err = manager.connection("old").await.unwrap_err().to_string();
    assert!(
        err.contains("requires authorization") && err.contains("bearer_token"),
        "{err}"
    );
    manager.shutdown().await;
}

#[tokio::test]
async fn a_dropped_stream_with_event_ids_is_resumed_with_last_event_id() {
    let msg = |id: u32| {
        format!(
            "id: {id}\ndata: {}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": id}})
        )
    };
    let f = fake(move |n, _| match n {
        // First stream: the endpoint, one message, then it drops.
        0 => sse_body(
            vec![
                "id: 1\nretry: 10\nevent: endpoint\ndata: /msg?s=1\n\n".into(),
                msg(2),
            ],
            false,
        ),
        // The resumed stream repeats the endpoint (same session) and goes on.
        _ => sse_body(
            vec!["event: endpoint\ndata: /msg?s=1\n\n".into(), msg(3)],
            true,
        ),
    })
    .await;
    let mut t = SseClientTransport::connect(cfg(&f.url)).await.unwrap();
    let a = Transport::<RoleClient>::receive(&mut t).await.unwrap();
    let b = Transport::<RoleClient>::receive(&mut t).await.unwrap();
    let data = |m| serde_json::to_value(m).unwrap()["params"]["data"].clone();
    assert_eq!((data(a), data(b)), (json!(2), json!(3)));
    assert_eq!(f.seen.lock().unwrap()[1]["last-event-id"], "2");
    Transport::<RoleClient>::close(&mut t).await.unwrap();
}

#[tokio::test]
async fn a_new_session_on_reconnect_or_no_event_ids_ends_the_transport() {
    // No ids: the 2024-11-05 transport cannot resume, so the stream's end is the session's.
    let f = fake(|_, _| sse_body(vec!["event: endpoint\ndata: /msg?s=1\n\n".into()], false)).await;
    let mut t = SseClientTransport::connect(cfg(&f.url)).await.unwrap();
    assert!(Transport::<RoleClient>::receive(&mut t).await.is_none());
    assert_eq!(f.seen.lock().unwrap().len(), 1);
    // Ids, but the server starts a new session: the transport ends rather than talk to a
    // session that was never initialised.
    let f = fake(|n, _| {
        sse_body(
            vec![format!(
                "id: 1\nretry: 10\nevent: endpoint\ndata: /msg?s={n}\n\n"
            )],
            n > 0,
        )
    })
    .await;
    let mut t = SseClientTransport::connect(cfg(&f.url)).await.unwrap();
    assert!(Transport::<RoleClient>::receive(&mut t).await.is_none());
    assert_eq!(f.seen.lock().unwrap().len(), 2);
}
