//! Kill -9 a real runtime process while 50 agent runs are in flight against SQLite, restart
//! it, and check that every run finishes and no journaled model or tool call runs twice.
//!
//! The child process is this test binary itself, re-run with `--ignored crash_child` and the
//! database and execution-log paths in the environment. The child's scripted model and
//! counting tool append one line per *execution* to the log (replays do not execute them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionRequest, CompletionResponse, Content, FnTool,
    LlmProvider, Message, Result, Role, RunStatus, StartOptions, StopReason, Usage,
};
use agentkit_runtime::model::ALL_STATUSES;
use agentkit_runtime::{
    EntryKind, JournalStore, RunStore, Runtime, SqliteStore, Store, TargetOptions,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

const RUNS: usize = 50;
const TOOL_CALLS_PER_RUN: usize = 3;

fn log_line(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    // One write per line: O_APPEND keeps concurrent lines whole.
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// A model that calls `count` three times, then answers; logs each execution.
struct CountingModel {
    log: PathBuf,
}

#[async_trait]
impl LlmProvider for CountingModel {
    fn name(&self) -> &str {
        "counting"
    }

    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let task = request
            .messages
            .iter()
            .find(|m| m.role == Role::User)
            .map(Message::text)
            .unwrap_or_default();
        let done = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count();
        log_line(&self.log, &format!("llm {task} {done}"));
        let message = if done < TOOL_CALLS_PER_RUN {
            Message::new(
                Role::Assistant,
                vec![Content::tool_call(
                    format!("call_{done}"),
                    "count",
                    json!({"task": task, "i": done}),
                )],
            )
        } else {
            Message::assistant(format!("done {task}"))
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(10, 2),
            StopReason::EndTurn,
            "counting-1",
        ))
    }
}

#[derive(Deserialize, JsonSchema)]
struct CountArgs {
    task: String,
    i: usize,
}

fn agent(log: PathBuf) -> Arc<dyn AugmentedLlm> {
    let tool_log = log.clone();
    let count = FnTool::new("count", "Count a unit of work", move |a: CountArgs| {
        let log = tool_log.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            log_line(&log, &format!("tool {} {}", a.task, a.i));
            Ok::<_, std::convert::Infallible>(format!("counted {}", a.i))
        }
    });
    Arc::new(AgentLlm::new(
        Agent::new("worker", "Count three units, then say done.").with_tool(count),
        CountingModel { log },
    ))
}

/// The child process: recover, (re)start the 50 runs idempotently, wait for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sigkill_mid_run_then_restart_finishes_every_run_exactly_once"]
async fn crash_child() {
    let log = PathBuf::from(std::env::var("AGENTKIT_CRASH_LOG").expect("AGENTKIT_CRASH_LOG"));
    let pg = std::env::var("AGENTKIT_CRASH_PG_URL").ok();
    let store: Arc<dyn Store> = match &pg {
        #[cfg(feature = "postgres")]
        Some(url) => Arc::new(agentkit_runtime::PostgresStore::connect(url).await.unwrap()),
        #[cfg(not(feature = "postgres"))]
        Some(_) => panic!("AGENTKIT_CRASH_PG_URL needs the postgres feature"),
        None => {
            let db = std::env::var("AGENTKIT_CRASH_DB")
                .expect("AGENTKIT_CRASH_DB: run by the crash test");
            Arc::new(SqliteStore::open(&db).await.unwrap())
        }
    };
    let mut builder = Runtime::builder(store);
    if let Ok(node) = std::env::var("AGENTKIT_CRASH_NODE") {
        builder = builder
            .with_node_id(node)
            .with_lease(Duration::from_millis(1000));
    }
    let rt = builder.build();
    rt.register_agent(
        "worker",
        move || agent(log.clone()),
        TargetOptions::new().with_max_concurrency(10),
    );
    rt.recover().await.unwrap();
    if pg.is_some() {
        rt.start_polling(Duration::from_millis(50));
    }
    let mut ids = Vec::new();
    for i in 0..RUNS {
        let key = format!("task-{i}");
        let opts = StartOptions::new().with_idempotency_key(&key);
        ids.push(rt.start_run("worker", json!(key), opts).await.unwrap());
    }
    for id in ids {
        let run = rt.wait(&id).await.unwrap();
        assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    }
}

fn child_command(log: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "crash_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("AGENTKIT_CRASH_LOG", log)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    c
}

fn spawn_child(db: &Path, log: &Path) -> Child {
    child_command(log)
        .env("AGENTKIT_CRASH_DB", db)
        .spawn()
        .unwrap()
}

async fn wait_success(child: &mut Child) {
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(90) {
            child.kill().unwrap();
            panic!("child did not finish");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "child failed: {status}");
}

/// (task, kind) -> count, from an execution log.
fn executions(log: &Path) -> HashMap<(String, EntryKind), usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        let kind = match parts.next() {
            Some("llm") => EntryKind::Llm,
            Some("tool") => EntryKind::Tool,
            _ => panic!("bad log line {line:?}"),
        };
        let task = parts.next().unwrap().to_owned();
        *m.entry((task, kind)).or_insert(0) += 1;
    }
    m
}

/// (task, kind) -> journaled entries, read from the database.
async fn journaled(store: &SqliteStore) -> HashMap<(String, EntryKind), usize> {
    let mut m = HashMap::new();
    for run in store.list_runs(&ALL_STATUSES, 1000).await.unwrap() {
        let task = run.idempotency_key.clone().unwrap();
        for e in store.journal(&run.id).await.unwrap() {
            *m.entry((task.clone(), e.kind)).or_insert(0) += 1;
        }
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_finishes_every_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let log1 = dir.path().join("phase1.log");
    let log2 = dir.path().join("phase2.log");

    // Phase 1: run until about a third of all calls are journaled (some runs finished, the
    // next wave mid-way), then SIGKILL (Child::kill on Unix).
    let mut child = spawn_child(&db, &log1);
    let started = Instant::now();
    let mut observer: Option<SqliteStore> = None;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "child made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "child exited before the kill"
        );
        if observer.is_none() && db.exists() {
            observer = SqliteStore::open(&db).await.ok();
        }
        if let Some(store) = &observer
            && let Ok(n) = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM journal")
                .fetch_one(store.pool())
                .await
            && n >= 120
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = observer.unwrap();

    let at_kill = store.list_runs(&ALL_STATUSES, 1000).await.unwrap();
    let finished = at_kill
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .count();
    assert!(
        finished < RUNS,
        "the kill came too late to test anything ({finished} done)"
    );
    let snapshot = journaled(&store).await;
    let per_run = |m: &HashMap<(String, EntryKind), usize>, t: &str| {
        m.get(&(t.to_owned(), EntryKind::Llm)).copied().unwrap_or(0)
            + m.get(&(t.to_owned(), EntryKind::Tool))
                .copied()
                .unwrap_or(0)
    };
    let full = TOOL_CALLS_PER_RUN * 2 + 1;
    let partial = (0..RUNS)
        .map(|i| per_run(&snapshot, &format!("task-{i}")))
        .filter(|n| *n > 0 && *n < full)
        .count();
    assert!(partial > 0, "no run was mid-way at the kill");

    // Phase 2: restart; it must finish everything.
    let mut child = spawn_child(&db, &log2);
    wait_success(&mut child).await;

    let runs = store.list_runs(&ALL_STATUSES, 1000).await.unwrap();
    assert_eq!(runs.len(), RUNS);
    for r in &runs {
        assert_eq!(r.status, RunStatus::Succeeded, "{}: {:?}", r.id, r.error);
        let task = r.idempotency_key.clone().unwrap();
        assert_eq!(r.output, Some(json!({"text": format!("done {task}")})));
    }
    let finale = journaled(&store).await;
    let phase1 = executions(&log1);
    let phase2 = executions(&log2);
    let mut reexecuted_in_flight = 0;
    for i in 0..RUNS {
        let task = format!("task-{i}");
        for (kind, expected) in [
            (EntryKind::Llm, TOOL_CALLS_PER_RUN + 1),
            (EntryKind::Tool, TOOL_CALLS_PER_RUN),
        ] {
            let k = (task.clone(), kind);
            let get = |m: &HashMap<(String, EntryKind), usize>| m.get(&k).copied().unwrap_or(0);
            assert_eq!(
                get(&finale),
                expected,
                "{task} {kind:?}: journal incomplete"
            );
            // The restart executed exactly what was not journaled at the kill: nothing
            // journaled ran again.
            assert_eq!(
                get(&phase2),
                expected - get(&snapshot),
                "{task} {kind:?}: restart re-executed journaled calls"
            );
            // Before the kill, at most the one call in flight per run executed without
            // reaching the journal.
            let unjournaled = get(&phase1) - get(&snapshot);
            assert!(
                unjournaled <= 1,
                "{task} {kind:?}: {unjournaled} calls lost"
            );
            reexecuted_in_flight += unjournaled;
        }
    }
    assert!(
        reexecuted_in_flight <= 10,
        "more in-flight calls than the concurrency limit"
    );
    eprintln!(
        "crash test: {finished}/{RUNS} runs done at the kill, {partial} mid-way, \
         {reexecuted_in_flight} in-flight calls re-executed after restart"
    );
}

/// Two runtime processes share one PostgreSQL database; one is SIGKILLed mid-way. The other
/// claims the dead node's runs once their leases expire, resumes them from the journal, and
/// finishes all 50; only calls in flight at the kill may run again (at most one per run).
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_one_killed_the_other_finishes_every_run() {
    use agentkit_runtime::PostgresStore;
    let pg = common::Pg::start();
    let url = pg.fresh_db("crash").await;
    let store = PostgresStore::connect(&url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let spawn = |node: &str, log: &Path| {
        KillOnDrop(
            child_command(log)
                .env("AGENTKIT_CRASH_PG_URL", &url)
                .env("AGENTKIT_CRASH_NODE", node)
                .spawn()
                .unwrap(),
        )
    };
    let mut a = spawn("node-a", &log_a);
    let mut b = spawn("node-b", &log_b);

    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        assert!(
            a.try_wait().unwrap().is_none(),
            "node a exited before the kill"
        );
        // Kill once both nodes have journaled work and node a holds a run mid-way with at
        // least two calls still to go (so it cannot finish between this query and the kill).
        let mid_way: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT r.id FROM agentkit_runs r \
             JOIN agentkit_journal j ON j.run_id = r.id \
             WHERE r.owner = 'node-a' AND r.status = 'running' \
             GROUP BY r.id HAVING COUNT(*) BETWEEN 1 AND $1) m",
        )
        .bind((TOOL_CALLS_PER_RUN * 2 - 1) as i64)
        .fetch_one(store.pool())
        .await
        .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agentkit_journal")
            .fetch_one(store.pool())
            .await
            .unwrap();
        if n >= 60 && mid_way > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill().unwrap();
    a.wait().unwrap();
    let at_kill = store.list_runs(&ALL_STATUSES, 1000).await.unwrap();
    let snapshot = {
        let mut m = HashMap::new();
        for run in &at_kill {
            let task = run.idempotency_key.clone().unwrap();
            m.insert(task, store.journal(&run.id).await.unwrap().len());
        }
        m
    };
    let orphaned: Vec<String> = at_kill
        .iter()
        .filter(|r| r.status == RunStatus::Running && r.owner.as_deref() == Some("node-a"))
        .map(|r| r.idempotency_key.clone().unwrap())
        .collect();
    assert!(!orphaned.is_empty(), "node a held no run at the kill");
    let full = TOOL_CALLS_PER_RUN * 2 + 1;
    assert!(
        orphaned.iter().any(|t| (1..full).contains(&snapshot[t])),
        "no run of node a was mid-way at the kill"
    );

    wait_success(&mut b).await;
    let runs = store.list_runs(&ALL_STATUSES, 1000).await.unwrap();
    assert_eq!(runs.len(), RUNS);
    let (ea, eb) = (executions(&log_a), executions(&log_b));
    let count = |m: &HashMap<(String, EntryKind), usize>, t: &str| {
        m.get(&(t.to_owned(), EntryKind::Llm)).copied().unwrap_or(0)
            + m.get(&(t.to_owned(), EntryKind::Tool))
                .copied()
                .unwrap_or(0)
    };
    let mut repeated = 0;
    for r in &runs {
        let task = r.idempotency_key.clone().unwrap();
        assert_eq!(r.status, RunStatus::Succeeded, "{task}: {:?}", r.error);
        assert_eq!(store.journal(&r.id).await.unwrap().len(), full, "{task}");
        let executed = count(&ea, &task) + count(&eb, &task);
        let extra = executed - full;
        if orphaned.contains(&task) {
            assert!(extra <= 1, "{task}: {extra} journaled calls ran again");
            repeated += extra;
        } else {
            assert_eq!(
                extra, 0,
                "{task}: a run not in flight on the dead node ran calls twice"
            );
        }
    }
    // Every run node a left unfinished was continued by node b (a run whose calls were all
    // journaled before the kill only needs its status set, so it executes nothing).
    let unfinished: Vec<&String> = orphaned.iter().filter(|t| snapshot[*t] < full).collect();
    assert!(
        unfinished.iter().all(|t| count(&eb, t) > 0),
        "node b resumed every unfinished run of node a"
    );
    assert!(
        count_tasks(&ea) > 0 && count_tasks(&eb) > 0,
        "both nodes did work"
    );
    eprintln!(
        "postgres crash test: {} runs in flight on the killed node, all resumed by the other; \
         {repeated} in-flight calls re-executed",
        orphaned.len()
    );
}

/// A child process killed when the test ends, also when an assertion fails first.
#[cfg(feature = "postgres")]
struct KillOnDrop(Child);

#[cfg(feature = "postgres")]
impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

#[cfg(feature = "postgres")]
impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

#[cfg(feature = "postgres")]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "postgres")]
fn count_tasks(m: &HashMap<(String, EntryKind), usize>) -> usize {
    m.keys()
        .map(|(t, _)| t)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

#[cfg(feature = "postgres")]
mod common;
