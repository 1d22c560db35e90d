//! A stdio MCP server killed with SIGKILL between two calls: the next call is answered by a
//! new process, without an error, whether or not the manager noticed the death before
//! sending it (a request written to a dead child's stdin fails with a broken pipe: it never
//! reached a server, so it is sent again on a new connection). A call in flight when the
//! server dies is not sent again (its tool may have run): the tool ran once, and the caller
//! is told the connection was lost. A health check (`tools/list`, read-only) right after a
//! kill is made again on a new process, and so are the aggregator's read-only requests
//! (listing tools, prompts and resources, reading a resource, getting a prompt): right after
//! a kill the manager has not noticed, and while a read is in flight when the server dies.
//! The stdio→HTTP bridge in front of it answers resource reads and prompts right after a
//! kill too, and a bridge built right after a kill mirrors the new process.
//!
//! The server is a real child process: this test binary itself, started with
//! `--serve-stdio` (so the file has its own `main`: `harness = false` in Cargo.toml, and
//! nothing but the server writes to the child's stdout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{RunContext, ToolSource};
use agentkit_mcp::bridge::bridge_server;
use agentkit_mcp::rmcp::model::{
    CallToolResult, ContentBlock, GetPromptResult, JsonObject, Prompt, PromptMessage,
    ReadResourceResult, Resource, ResourceContents, Role,
};
use agentkit_mcp::{ConnectionManager, McpAggregator, McpServerBuilder, ServerConfig};
use serde_json::{Value, json};

/// The child's argument: serve on stdio instead of testing.
const SERVE: &str = "--serve-stdio";
/// The grandchild's argument: hold the server's stdout open for a minute.
const HOLD: &str = "--hold-stdout";
/// The server's variable: the file where tool `work` notes each of its runs.
const RUNS: &str = "STDIO_RESTART_RUNS";
/// The server's variable: start a grandchild holding stdout open and note its pid here.
const HOLDER: &str = "STDIO_RESTART_HOLDER";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == HOLD) {
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if args.iter().any(|a| a == SERVE) {
        runtime.block_on(serve());
        return;
    }
    common::run_tests(
        &args,
        &runtime,
        &common::harness_tests![
            a_killed_stdio_server_answers_the_next_call_from_a_new_process,
            a_call_sent_to_a_killed_server_before_its_death_was_noticed_goes_to_a_new_process,
            a_call_in_flight_when_the_server_is_killed_runs_once_and_fails,
            a_health_check_right_after_a_kill_checks_a_new_process,
            reads_right_after_a_kill_are_answered_by_a_new_process,
            a_read_in_flight_when_the_server_is_killed_is_made_again_on_a_new_process,
            a_bridge_answers_reads_right_after_its_upstream_is_killed,
        ],
    );
}

/// `echo` answers its `text`; `work` notes its run in the file named by `STDIO_RESTART_RUNS`,
/// then takes 30 s. Resource `note://greeting` reads `hello`; resource `note://slow` notes
/// each read in that file plus `.reads` and takes 30 s the first time; prompt `greet` greets
/// its `name`.
async fn serve() {
    if let Ok(file) = std::env::var(HOLDER) {
        // A helper that keeps our stdout open after we die, so the client reads no EOF: it
        // cannot notice the death until it writes to our stdin. Never waited for: this server
        // is killed, and the test kills the helper by its pid.
        #[allow(clippy::zombie_processes)]
        let holder = std::process::Command::new(std::env::current_exe().unwrap())
            .arg(HOLD)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(file, holder.id().to_string()).unwrap();
    }
    McpServerBuilder::new("restartable", "1.0.0")
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
        .tool_fn(
            "work",
            "Works for 30 s",
            json!({"type": "object"}),
            |_, _| async move {
                let runs = std::env::var(RUNS).unwrap();
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(runs)
                    .unwrap();
                std::io::Write::write_all(&mut f, b"ran\n").unwrap();
                f.sync_all().unwrap();
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(CallToolResult::success(vec![ContentBlock::text("done")]))
            },
        )
        .resource(
            Resource::new("note://greeting", "greeting"),
            Arc::new(|uri, _| {
                Box::pin(async move {
                    Ok(ReadResourceResult::new(vec![ResourceContents::text(
                        "hello", uri,
                    )]))
                })
            }),
        )
        .resource(
            Resource::new("note://slow", "slow"),
            Arc::new(|uri, _| {
                Box::pin(async move {
                    let reads = format!("{}.reads", std::env::var(RUNS).unwrap());
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&reads)
                        .unwrap();
                    std::io::Write::write_all(&mut f, b"read\n").unwrap();
                    f.sync_all().unwrap();
                    let count = std::fs::read_to_string(&reads).unwrap().lines().count();
                    if count == 1 {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Ok(ReadResourceResult::new(vec![ResourceContents::text(
                        format!("read {count}"),
                        uri,
                    )]))
                })
            }),
        )
        .prompt(
            Prompt::new("greet", Some("Greets someone"), None),
            Arc::new(|args, _| {
                Box::pin(async move {
                    let name = args.get("name").and_then(Value::as_str).unwrap_or("nobody");
                    Ok(GetPromptResult::new(vec![PromptMessage::new_text(
                        Role::User,
                        format!("Hello, {name}"),
                    )]))
                })
            }),
        )
        .build()
        .serve_stdio()
        .await
        .unwrap();
}

fn server(dir: &Path) -> ServerConfig {
    ServerConfig::stdio(
        "s",
        std::env::current_exe().unwrap().display().to_string(),
        [SERVE],
    )
    .with_env(RUNS, dir.join("runs").display().to_string())
    .with_shutdown_grace(Duration::from_secs(1))
}

/// A manager of the test server whose dead processes' stdout a helper process keeps open
/// (see [`HOLDER`]), and the file where the current process writes its helper's pid.
fn held_manager(dir: &Path) -> (ConnectionManager, std::path::PathBuf) {
    let holder_file = dir.join("holder");
    let manager =
        ConnectionManager::new([server(dir).with_env(HOLDER, holder_file.display().to_string())]);
    (manager, holder_file)
}

/// The pid of the helper process the current server started (written to `holder_file`).
fn holder_pid(holder_file: &Path) -> u32 {
    std::fs::read_to_string(holder_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn args(v: Value) -> JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid}");
}

/// Whether any thread of process `pid` still runs. (The main thread of a killed process turns
/// zombie while its other threads may still be exiting, with its file descriptors, and so its
/// ends of the stdio pipes, still open.)
fn any_thread_alive(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        t.file_name()
            .to_str()
            .and_then(|tid| tid.parse::<u32>().ok())
            .is_some_and(|tid| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).is_ok_and(|stat| {
                    let state = stat
                        .rsplit(')')
                        .next()
                        .and_then(|s| s.split_whitespace().next())
                        .unwrap_or("X");
                    state != "Z" && state != "X"
                })
            })
    })
}

/// Wait until every thread of `pid` has exited (its pipes are closed).
async fn exited(pid: u32) {
    for _ in 0..2000 {
        if !any_thread_alive(pid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("process {pid} did not exit after SIGKILL");
}

async fn echo(manager: &ConnectionManager, t: &str) -> agentkit_core::Result<String> {
    manager
        .call_tool("s", "echo", args(json!({"text": t})), &RunContext::new())
        .await
        .map(|r| text(&r))
}

fn pid_of(manager: &ConnectionManager) -> u32 {
    manager
        .existing_connection("s")
        .expect("a live connection")
        .process_id()
        .expect("a stdio server's pid")
}

async fn a_killed_stdio_server_answers_the_next_call_from_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ConnectionManager::new([server(dir.path())]);
    assert_eq!(echo(&manager, "first").await.unwrap(), "first");
    let mut pids = vec![pid_of(&manager)];
    for round in 1..=5_u64 {
        let pid = *pids.last().unwrap();
        kill9(pid);
        exited(pid).await;
        // Whether or not the manager noticed the death yet, the next call is answered.
        let out = echo(&manager, &format!("after kill {round}")).await;
        assert_eq!(
            out.unwrap_or_else(|e| panic!("call after kill {round}: {e}")),
            format!("after kill {round}")
        );
        assert_eq!(manager.connect_count("s").unwrap(), round + 1);
        let new_pid = pid_of(&manager);
        assert!(!pids.contains(&new_pid), "{new_pid} in {pids:?}");
        pids.push(new_pid);
    }
    manager.shutdown().await;
    common::assert_gone(*pids.last().unwrap()).await;
}

async fn a_call_sent_to_a_killed_server_before_its_death_was_noticed_goes_to_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, holder_file) = held_manager(dir.path());
    assert_eq!(echo(&manager, "first").await.unwrap(), "first");
    let pid = pid_of(&manager);
    let holder = holder_pid(&holder_file);

    kill9(pid);
    exited(pid).await;
    // The helper keeps the dead server's stdout open: no EOF, so the manager still takes the
    // connection for live, and the next call is written to the dead server's stdin.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stale = manager
        .existing_connection("s")
        .expect("the death is not noticed");
    assert_eq!(stale.process_id(), Some(pid));
    assert!(!stale.is_closed());
    drop(stale);

    let out = echo(&manager, "after kill").await;
    assert_eq!(out.unwrap(), "after kill");
    assert_eq!(manager.connect_count("s").unwrap(), 2);
    let new_pid = pid_of(&manager);
    assert_ne!(new_pid, pid);

    // The helper may be gone already (closing the dead connection ends its process group).
    let _ = std::process::Command::new("kill")
        .args(["-9", &holder.to_string()])
        .status();
    exited(holder).await;
    manager.shutdown().await;
    common::assert_gone(new_pid).await;
}

async fn a_call_in_flight_when_the_server_is_killed_runs_once_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ConnectionManager::new([server(dir.path())]);
    assert_eq!(echo(&manager, "first").await.unwrap(), "first");
    let pid = pid_of(&manager);

    let inflight = {
        let m = manager.clone();
        tokio::spawn(async move {
            m.call_tool("s", "work", args(json!({})), &RunContext::new())
                .await
        })
    };
    // Kill the server once the tool runs.
    for _ in 0..1000 {
        if runs(dir.path()) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(runs(dir.path()), 1, "the tool did not start");
    kill9(pid);
    let answer = tokio::time::timeout(Duration::from_secs(15), inflight)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the call in flight did not end when its server died (sent again? the tool ran {} times)",
                runs(dir.path())
            )
        })
        .unwrap();
    let e = answer
        .expect_err("a call whose server died under it fails")
        .to_string();
    assert!(e.contains("`s`") && e.contains("was lost"), "{e}");
    assert_eq!(runs(dir.path()), 1, "the tool ran again");

    // The next call is answered by a new process; the tool still ran once.
    assert_eq!(echo(&manager, "next").await.unwrap(), "next");
    assert_ne!(pid_of(&manager), pid);
    assert_eq!(runs(dir.path()), 1);
    let last = pid_of(&manager);
    manager.shutdown().await;
    common::assert_gone(last).await;
}

async fn a_health_check_right_after_a_kill_checks_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ConnectionManager::new([server(dir.path())]);
    manager.health_check("s").await.unwrap();
    let pid = pid_of(&manager);
    // No wait for the death: `tools/list` only reads, so a check whose request may have
    // reached the dying server is made again on a new connection all the same.
    kill9(pid);
    manager
        .health_check("s")
        .await
        .expect("a health check after a kill checks a new process");
    assert_eq!(manager.connect_count("s").unwrap(), 2);
    let new_pid = pid_of(&manager);
    assert_ne!(new_pid, pid);
    exited(pid).await;
    manager.shutdown().await;
    common::assert_gone(new_pid).await;
}

fn resource_text(r: &ReadResourceResult) -> String {
    r.contents
        .iter()
        .map(|c| match c {
            ResourceContents::TextResourceContents { text, .. } => text.clone(),
            other => panic!("not text: {other:?}"),
        })
        .collect()
}

fn prompt_text(r: &GetPromptResult) -> String {
    r.messages
        .iter()
        .map(|m| m.content.as_text().expect("a text message").text.clone())
        .collect()
}

/// One read-only request of the aggregator, and what it answered, as text.
async fn read(aggregator: &McpAggregator, which: usize) -> agentkit_core::Result<String> {
    Ok(match which {
        0 => {
            let mut names: Vec<String> = aggregator
                .list_tools()
                .await?
                .into_iter()
                .map(|t| t.name)
                .collect();
            names.sort();
            names.join(",")
        }
        1 => aggregator.list_prompts().await?["s"]
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
            .join(","),
        2 => {
            let mut uris: Vec<String> = aggregator.list_resources().await?["s"]
                .iter()
                .map(|r| r.uri.clone())
                .collect();
            uris.sort();
            uris.join(",")
        }
        3 => resource_text(&aggregator.read_resource("s", "note://greeting").await?),
        _ => prompt_text(
            &aggregator
                .get_prompt("s", "greet", args(json!({"name": "Ada"})))
                .await?,
        ),
    })
}

const READS: [(&str, &str); 5] = [
    ("tools/list", "s__echo,s__work"),
    ("prompts/list", "greet"),
    ("resources/list", "note://greeting,note://slow"),
    ("resources/read", "hello"),
    ("prompts/get", "Hello, Ada"),
];

async fn reads_right_after_a_kill_are_answered_by_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, holder_file) = held_manager(dir.path());
    let holder = || holder_pid(&holder_file);
    manager.health_check("s").await.unwrap();
    let mut pids = vec![pid_of(&manager)];
    let mut holders = vec![holder()];
    let mut round = 0_u64;
    for _ in 0..2 {
        for (which, (what, expected)) in READS.iter().enumerate() {
            round += 1;
            let pid = *pids.last().unwrap();
            kill9(pid);
            exited(pid).await;
            // A helper keeps the dead server's stdout open: no EOF, so the manager still takes
            // the connection for live and writes the request to the dead server's stdin.
            let stale = manager
                .existing_connection("s")
                .expect("the death is not noticed");
            assert_eq!(stale.process_id(), Some(pid));
            assert!(!stale.is_closed());
            drop(stale);

            // A new aggregator: nothing cached, every read goes to the server.
            let aggregator = McpAggregator::new(manager.clone(), ["s"]);
            let out = read(&aggregator, which)
                .await
                .unwrap_or_else(|e| panic!("{what} right after kill {round}: {e}"));
            assert_eq!(out, *expected, "{what} after kill {round}");
            assert_eq!(manager.connect_count("s").unwrap(), round + 1, "{what}");
            let new_pid = pid_of(&manager);
            assert!(!pids.contains(&new_pid), "{new_pid} in {pids:?}");
            pids.push(new_pid);
            holders.push(holder());
        }
    }
    manager.shutdown().await;
    common::assert_gone(*pids.last().unwrap()).await;
    // The helpers may be gone already (closing a dead connection ends its process group).
    for h in holders {
        let _ = std::process::Command::new("kill")
            .args(["-9", &h.to_string()])
            .status();
        exited(h).await;
    }
}

async fn a_read_in_flight_when_the_server_is_killed_is_made_again_on_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ConnectionManager::new([server(dir.path())]);
    let aggregator = Arc::new(McpAggregator::new(manager.clone(), ["s"]));
    manager.health_check("s").await.unwrap();
    let pid = pid_of(&manager);
    let reads = || {
        std::fs::read_to_string(dir.path().join("runs.reads"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };

    let inflight = {
        let a = Arc::clone(&aggregator);
        tokio::spawn(async move { a.read_resource("s", "note://slow").await })
    };
    // Kill the server once it is reading (the first read takes 30 s).
    for _ in 0..1000 {
        if reads() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(reads(), 1, "the read did not start");
    kill9(pid);
    let answer = tokio::time::timeout(Duration::from_secs(15), inflight)
        .await
        .expect("the read in flight did not end when its server died")
        .unwrap();
    // A read changes nothing: it was made again, on a new process, which answered at once.
    let out = answer.unwrap_or_else(|e| panic!("a read whose server died under it: {e}"));
    assert_eq!(resource_text(&out), "read 2");
    assert_eq!(reads(), 2);
    assert_eq!(manager.connect_count("s").unwrap(), 2);
    let new_pid = pid_of(&manager);
    assert_ne!(new_pid, pid);
    exited(pid).await;
    manager.shutdown().await;
    common::assert_gone(new_pid).await;
}

/// Kill the server of `manager` and wait until it is gone, its death not noticed (a helper
/// holds its stdout open); returns its pid.
async fn kill_unnoticed(manager: &ConnectionManager) -> u32 {
    let pid = pid_of(manager);
    kill9(pid);
    exited(pid).await;
    let stale = manager
        .existing_connection("s")
        .expect("the death is not noticed");
    assert_eq!(stale.process_id(), Some(pid));
    assert!(!stale.is_closed());
    pid
}

async fn a_bridge_answers_reads_right_after_its_upstream_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, holder_file) = held_manager(dir.path());
    let holder = || holder_pid(&holder_file);
    manager.health_check("s").await.unwrap();
    let mut holders = vec![holder()];

    // A bridge built right after a kill lists the new process.
    let killed = kill_unnoticed(&manager).await;
    let bridge = bridge_server(&manager, "s")
        .await
        .unwrap_or_else(|e| panic!("a bridge built right after a kill: {e}"))
        .build();
    assert_ne!(pid_of(&manager), killed);
    holders.push(holder());
    assert_eq!(bridge.tool_names(), ["echo", "work"]);

    // Its clients' reads right after a kill are answered by a new process.
    let front = ConnectionManager::new([ServerConfig::in_process("b", bridge)]);
    let aggregator = McpAggregator::new(front.clone(), ["b"]);
    assert_eq!(
        aggregator.list_resources().await.unwrap()["b"].len(),
        2,
        "the bridge mirrors the resources"
    );
    for round in 1..=2 {
        let killed = kill_unnoticed(&manager).await;
        let read = aggregator
            .read_resource("b", "note://greeting")
            .await
            .unwrap_or_else(|e| panic!("resources/read through the bridge, round {round}: {e}"));
        assert_eq!(resource_text(&read), "hello");
        assert_ne!(pid_of(&manager), killed);
        holders.push(holder());

        let killed = kill_unnoticed(&manager).await;
        let prompt = aggregator
            .get_prompt("b", "greet", args(json!({"name": "Ada"})))
            .await
            .unwrap_or_else(|e| panic!("prompts/get through the bridge, round {round}: {e}"));
        assert_eq!(prompt_text(&prompt), "Hello, Ada");
        assert_ne!(pid_of(&manager), killed);
        holders.push(holder());
    }
    assert_eq!(manager.connect_count("s").unwrap(), 6);

    front.shutdown().await;
    let last = pid_of(&manager);
    manager.shutdown().await;
    common::assert_gone(last).await;
    for h in holders {
        let _ = std::process::Command::new("kill")
            .args(["-9", &h.to_string()])
            .status();
        exited(h).await;
    }
}
