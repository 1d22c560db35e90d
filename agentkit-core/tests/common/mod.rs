//! A local HTTP server for the provider wire tests: it answers each request with whatever the
//! test scripts and records what it was sent. Shared by `openai_wire.rs` and
//! `anthropic_wire.rs`.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkit_core::provider::LayeredProvider;
use agentkit_core::{CompletionRequest, LlmProvider, Message, ProviderBuilder, RetryConfig};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
    pub at: Instant,
}

type Reply = Arc<dyn Fn(usize, &Seen) -> Response + Send + Sync>;

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Reply,
}

/// The server; it stops when dropped.
pub struct MockServer {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    let n = {
        let mut all = shared.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    (shared.reply)(n, &seen)
}

impl MockServer {
    /// Serve on 127.0.0.1:<free port>, any path; `reply(n, request)` answers the n-th request
    /// (0-based).
    pub async fn start(reply: impl Fn(usize, &Seen) -> Response + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            seen: Arc::clone(&seen),
            reply: Arc::new(reply),
        };
        let app = Router::new().fallback(record).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://{addr}"),
            seen,
            task,
        }
    }

    /// Serve these replies in order; a request beyond them gets HTTP 500 "no reply queued".
    pub async fn queued<R>(replies: Vec<R>) -> Self
    where
        R: IntoResponse + Clone + Send + Sync + 'static,
    {
        Self::start(move |n, _| match replies.get(n) {
            Some(reply) => reply.clone().into_response(),
            None => (StatusCode::INTERNAL_SERVER_ERROR, "no reply queued").into_response(),
        })
        .await
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The JSON body of request `i`.
    pub fn body(&self, i: usize) -> Value {
        self.seen.lock().unwrap()[i].body.clone()
    }

    /// A header of request `i`.
    pub fn header(&self, i: usize, name: &str) -> Option<String> {
        self.seen.lock().unwrap()[i]
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A one-message request: "hi".
pub fn hi() -> CompletionRequest {
    CompletionRequest::new(vec![Message::user("hi")])
}

/// `provider` wrapped in the default retry layer with a fast (10 ms) first backoff.
pub fn retrying(provider: impl LlmProvider + 'static) -> LayeredProvider {
    ProviderBuilder::new(provider)
        .retry(RetryConfig::new().with_initial_backoff(Duration::from_millis(10)))
        .build()
}

/// A JSON response.
pub fn json_reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// An event-stream response made of these frames (each a complete `event:`/`data:` block,
/// blank line included): one frame per read with `piece` `None`, else the whole text in pieces
/// of `piece` bytes, as a network would cut it, so events straddle reads.
pub fn sse_response(frames: Vec<String>, piece: Option<usize>) -> Response {
    let pieces: Vec<Result<Bytes, Infallible>> = match piece {
        None => frames.into_iter().map(|f| Ok(Bytes::from(f))).collect(),
        Some(n) => frames
            .concat()
            .into_bytes()
            .chunks(n.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect(),
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(futures::stream::iter(pieces)))
        .unwrap()
}
