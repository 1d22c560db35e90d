//! A federated stdio MCP server (the official `server-everything`) SIGKILLed, its death not
//! yet noticed: `GET /v1/servers/{name}/tools` and `GET /v1/mcp/tools` right after list its
//! tools from a new process, not "the connection was lost" (listing only reads, so the
//! connection manager lists again on a new connection).
//!
//! A `sleep` started beside the server keeps the dead server's stdout open: no EOF, so the
//! manager still takes the connection for live and writes the request to the dead server's
//! stdin (a broken pipe).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod inproc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentkit_mcp::{ConnectionManager, ServerConfig};
use agentkit_runtime::{MemoryStore, Store};
use agentkit_server::Server;
use serde_json::Value;

const ADMIN: &str = "test-key";

/// `tests/peers/node_modules` at the workspace root (scripts/install-mcp-peers.sh).
fn peers() -> PathBuf {
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

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// Whether any thread of process `pid` still runs (a killed process's threads, and so its
/// ends of the stdio pipes, may outlive its main thread for a moment).
fn any_thread_alive(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or("X");
            state != "Z" && state != "X"
        })
    })
}

async fn exited(pid: u32) {
    for _ in 0..2000 {
        if !any_thread_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("process {pid} did not exit after SIGKILL");
}

/// The names of the tools a `GET` of `path` lists (either route's shape).
async fn listed(base: &str, path: &str) -> Vec<String> {
    let (status, body) = inproc::call_as(base, ADMIN, reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    let tools = match &body {
        Value::Array(tools) => tools.clone(),
        other => {
            assert_eq!(other["unavailable"], serde_json::json!([]), "GET {path}");
            other["tools"].as_array().unwrap().clone()
        }
    };
    tools
        .iter()
        .map(|t| {
            t.get("function")
                .unwrap_or(t)
                .get("name")
                .and_then(Value::as_str)
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_listed_right_after_the_upstream_is_killed() {
    let peers = peers();
    let dir = tempfile::tempdir().unwrap();
    let holders = dir.path().join("holders");
    let script = format!(
        "sleep 60 & echo $! >> '{}'; exec \"$0\" \"$@\"",
        holders.display()
    );
    let everything = ServerConfig::stdio(
        "everything",
        "sh",
        [
            "-c".to_owned(),
            script,
            peers.join(".bin/node").display().to_string(),
            peers
                .join("@modelcontextprotocol/server-everything/dist/index.js")
                .display()
                .to_string(),
            "stdio".to_owned(),
        ],
    )
    .with_shutdown_grace(Duration::from_secs(1));
    let manager = ConnectionManager::new([everything]);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let server = Server::builder(store)
        .admin_key(ADMIN)
        .mcp_servers(manager.clone())
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    let pid = || {
        manager
            .existing_connection("everything")
            .expect("a live connection")
            .process_id()
            .expect("a stdio server's pid")
    };

    let first = listed(&served.base, "/v1/servers/everything/tools").await;
    assert!(first.iter().any(|t| t == "echo"), "{first:?}");
    let mut pids = vec![pid()];
    let rounds = [
        ("/v1/servers/everything/tools", "echo"),
        ("/v1/mcp/tools", "everything__echo"),
    ];
    for (round, (path, echo)) in rounds.into_iter().cycle().take(4).enumerate() {
        let killed = *pids.last().unwrap();
        kill9(killed);
        exited(killed).await;
        let stale = manager
            .existing_connection("everything")
            .expect("the death is not noticed");
        assert!(!stale.is_closed());
        drop(stale);

        let tools = listed(&served.base, path).await;
        assert!(tools.iter().any(|t| t == echo), "GET {path}: {tools:?}");
        assert_eq!(
            manager.connect_count("everything").unwrap(),
            round as u64 + 2,
            "GET {path}"
        );
        let new_pid = pid();
        assert!(!pids.contains(&new_pid), "{new_pid} in {pids:?}");
        pids.push(new_pid);
    }

    drop(served);
    manager.shutdown().await;
    exited(*pids.last().unwrap()).await;
    // The sleeps may be gone already (closing a connection ends its process group).
    for h in std::fs::read_to_string(&holders).unwrap().lines() {
        let _ = std::process::Command::new("kill").args(["-9", h]).status();
        exited(h.parse().unwrap()).await;
    }
}
