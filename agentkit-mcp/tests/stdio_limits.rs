#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A stdio server's failures as a user meets them, each against a real child process: a
//! server that never answers, a result over the 16 MiB message limit, a server that exits at
//! start, and a server that does not exit when its stdin closes; and what a server's process
//! starts with: a scrubbed environment (against the official server-everything's `get-env`)
//! and resource limits.

mod common;

use std::time::{Duration, Instant};

use agentkit_core::{Error, RunContext};
use agentkit_mcp::{ConnectionManager, ServerConfig, connect_once};
use serde_json::json;

/// A minimal MCP server in node: `big` answers with a text of `mib` MiB, `hang` never answers.
/// With `linger`, a timer keeps node running after its stdin closes.
const SCRIPT: &str = r#"
const linger = process.argv.includes('linger');
if (linger) setInterval(() => {}, 1000);
let buf = '';
const send = (m) => process.stdout.write(JSON.stringify(m) + '\n');
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i); buf = buf.slice(i + 1);
    if (!line.trim()) continue;
    const m = JSON.parse(line);
    if (m.id === undefined) continue;
    if (m.method === 'initialize') {
      send({jsonrpc: '2.0', id: m.id, result: {protocolVersion: m.params.protocolVersion,
        capabilities: {tools: {}}, serverInfo: {name: 'limits', version: '1'}}});
    } else if (m.method === 'tools/list') {
      send({jsonrpc: '2.0', id: m.id, result: {tools: [
        {name: 'big', inputSchema: {type: 'object'}}, {name: 'hang', inputSchema: {type: 'object'}},
        {name: 'proc_limits', inputSchema: {type: 'object'}}]}});
    } else if (m.method === 'tools/call' && m.params.name === 'proc_limits') {
      const text = require('fs').readFileSync('/proc/self/limits', 'utf8');
      send({jsonrpc: '2.0', id: m.id, result: {content: [{type: 'text', text}]}});
    } else if (m.method === 'tools/call' && m.params.name === 'big') {
      const text = 'x'.repeat(m.params.arguments.mib * 1024 * 1024);
      // As the TypeScript SDK writes it: the id last.
      send({result: {content: [{type: 'text', text}]}, jsonrpc: '2.0', id: m.id});
    } else if (m.method === 'tools/call') {
      // hang: never answer
    } else {
      send({jsonrpc: '2.0', id: m.id, error: {code: -32601, message: 'no'}});
    }
  }
});
"#;

fn script() -> tempfile::TempPath {
    let file = tempfile::Builder::new().suffix(".js").tempfile().unwrap();
    std::fs::write(file.path(), SCRIPT).unwrap();
    file.into_temp_path()
}

fn limits(path: &std::path::Path, extra: &[&str]) -> ServerConfig {
    let mut args = vec![path.display().to_string()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    ServerConfig::stdio("limits", common::node(), args)
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_with_the_configured_timeout() {
    let path = script();
    let manager = ConnectionManager::new([
        limits(&path, &[]).with_request_timeout(Duration::from_millis(400))
    ]);
    let started = Instant::now();
    let err = manager
        .call_tool("limits", "hang", obj(json!({})), &RunContext::new())
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("limits"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_message_limit_is_reported_as_too_large_at_once() {
    let path = script();
    // A long timeout: the error must come from the discarded message, not the timer.
    let manager =
        ConnectionManager::new([limits(&path, &[]).with_request_timeout(Duration::from_secs(60))]);
    let started = Instant::now();
    let err = manager
        .call_tool("limits", "big", obj(json!({"mib": 17})), &RunContext::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("too large"), "{text}");
    assert!(text.contains("16 MiB"), "{text}");
    assert!(!err.is_timeout(), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The connection still works: a result under the limit arrives.
    let ok = manager
        .call_tool("limits", "big", obj(json!({"mib": 1})), &RunContext::new())
        .await
        .unwrap();
    assert_eq!(ok.content[0].as_text().unwrap().text.len(), 1024 * 1024);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_exits_at_start_has_its_stderr_in_the_error() {
    let server = ServerConfig::stdio(
        "broken",
        "sh",
        [
            "-c",
            "echo 'starting up' >&2; echo 'fatal: GITHUB_TOKEN is not set' >&2; exit 3",
        ],
    );
    let err = connect_once(server).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("broken"), "{text}");
    assert!(text.contains("fatal: GITHUB_TOKEN is not set"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(matches!(err, Error::Tool { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_stdin_close_is_terminated_after_the_grace_period() {
    let path = script();
    let server = limits(&path, &["linger"]).with_shutdown_grace(Duration::from_millis(200));
    let conn = connect_once(server).await.unwrap();
    let pid = conn.process_id().unwrap();
    assert_eq!(conn.list_tools().await.unwrap().len(), 3);
    let started = Instant::now();
    conn.close().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "close took {took:?}"
    );
    common::assert_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_short_server_everything_session_is_fast() {
    // server-everything asks for roots 350 ms after `initialized`; before that a timer keeps
    // node running after stdin closes (rmcp's own close then waits 3 s).
    for _ in 0..2 {
        let conn = connect_once(common::everything_stdio("everything"))
            .await
            .unwrap();
        let pid = conn.process_id().unwrap();
        conn.list_tools().await.unwrap();
        let started = Instant::now();
        conn.close().await;
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1500), "close took {took:?}");
        common::assert_gone(pid).await;
    }
    // A session past the roots request closes at once: node exits when stdin closes.
    let conn = connect_once(common::everything_stdio("everything"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let started = Instant::now();
    conn.close().await;
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

/// The environment server-everything's `get-env` reports.
async fn child_env(server: ServerConfig) -> serde_json::Map<String, serde_json::Value> {
    let manager = ConnectionManager::new([server]);
    let out = manager
        .call_tool("env", "get-env", obj(json!({})), &RunContext::new())
        .await
        .unwrap();
    manager.shutdown().await;
    let text = &out.content[0].as_text().unwrap().text;
    serde_json::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_gets_only_declared_inherited_and_base_variables() {
    // cargo sets CARGO_PKG_NAME (and more) in this test's environment: agentkit's own
    // variables, which a server must not see unless allowed.
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    let env = child_env(common::everything_stdio("env").with_env("DECLARED", "yes")).await;
    assert_eq!(env.get("DECLARED"), Some(&json!("yes")));
    assert!(env.contains_key("PATH"), "{env:?}");
    let leaked: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with("CARGO") || k.starts_with("RUST"))
        .collect();
    assert!(leaked.is_empty(), "leaked to the server: {leaked:?}");
    // Allowed by prefix: passed.
    let env = child_env(common::everything_stdio("env").with_inherited_env("CARGO_PKG_*")).await;
    assert_eq!(
        env.get("CARGO_PKG_NAME").and_then(|v| v.as_str()),
        Some("agentkit-mcp")
    );
    assert!(!env.contains_key("CARGO_MANIFEST_DIR"));
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_hold_in_the_server_process() {
    let path = script();
    let mut l = agentkit_core::McpProcessLimits::default();
    l.memory_mb = std::num::NonZeroU64::new(2048);
    l.cpu_seconds = std::num::NonZeroU64::new(120);
    l.open_files = std::num::NonZeroU64::new(64);
    let manager = ConnectionManager::new([limits(&path, &[]).with_limits(l)]);
    let out = manager
        .call_tool("limits", "proc_limits", obj(json!({})), &RunContext::new())
        .await
        .unwrap();
    let text = out.content[0].as_text().unwrap().text.clone();
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    // "Max data size  2147483648  2147483648  bytes": soft and hard.
    assert!(row("Max data size").contains(&"2147483648"), "{text}");
    assert!(row("Max cpu time").contains(&"120"), "{text}");
    assert!(row("Max open files").contains(&"64"), "{text}");
    manager.shutdown().await;

    // A server that opens more files than allowed fails inside, not agentkit.
    let mut l = agentkit_core::McpProcessLimits::default();
    l.open_files = std::num::NonZeroU64::new(3);
    let err = connect_once(limits(&path, &[]).with_limits(l))
        .await
        .unwrap_err();
    // The server cannot even load its libraries ("Error 24": EMFILE): the limit held from
    // its first instruction, and the error shows its stderr.
    let text = err.to_string();
    assert!(
        text.contains("Error 24") || text.contains("EMFILE"),
        "{text}"
    );
    assert!(text.contains("exit status"), "{text}");
}
