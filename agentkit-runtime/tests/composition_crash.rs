//! SIGKILL a real runtime process in the middle of a *composed* durable run — a `Parallel` of
//! four agents, an `Orchestrator` whose step runs four workers in parallel, a `Swarm` handing
//! off through four agents, and an agent calling four agents as tools at once — restart it,
//! and check that the run finishes and that every tool call journaled before the kill was
//! executed exactly once.
//!
//! Each agent makes two calls to a `note` tool that appends a line (`who#n`) to a file and
//! sleeps a random time first, so the branches interleave differently in every process: a
//! journal key that depended on timing would miss its entry after the restart and the tool
//! would write its line again.
//!
//! The child process is this test binary, re-run with `--ignored composition_child`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionRequest, CompletionResponse, Content, FnTool, Message,
    Role, RunStatus, ScriptedProvider, StartOptions, StopReason, Usage,
};
use agentkit_patterns::{AgentsAsTools, Orchestrator, Parallel, Swarm, SwarmMember};
use agentkit_runtime::model::ALL_STATUSES;
use agentkit_runtime::{EntryKind, Runtime, SqliteStore, Store, TargetOptions};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

const SCENARIOS: [&str; 4] = ["parallel", "orchestrator", "swarm", "agents_as_tools"];
const KILL_AFTER_LINES: [usize; 3] = [1, 3, 6];
/// Every scenario makes 4 agents × 2 tool calls.
const TOOL_CALLS: usize = 8;

#[derive(Deserialize, JsonSchema)]
struct Note {
    who: String,
    n: u32,
}

/// The `note` tool: sleep a random 2–24 ms (another order in every process), then append
/// `who#n` to the log.
fn note_tool(log: PathBuf) -> FnTool {
    let seed = std::collections::hash_map::RandomState::new();
    FnTool::new("note", "Write a note", move |a: Note| {
        let log = log.clone();
        let delay = 2 + seed.hash_one((&a.who, a.n)) % 23;
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            // One write per line: O_APPEND keeps concurrent lines whole.
            f.write_all(format!("{}#{}\n", a.who, a.n).as_bytes())
                .unwrap();
            Ok::<_, std::convert::Infallible>(format!("noted {}#{}", a.who, a.n))
        }
    })
}

fn reply(message: Message) -> agentkit_core::Result<CompletionResponse> {
    Ok(CompletionResponse::new(
        message,
        Usage::new(5, 2),
        StopReason::EndTurn,
        "scripted",
    ))
}

/// The texts of every tool result in the conversation.
fn tool_results(req: &CompletionRequest) -> Vec<String> {
    req.messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .flat_map(|m| m.content.iter())
        .filter_map(|c| match c {
            Content::ToolResult { content, .. } => Some(agentkit_core::message::join_text(content)),
            _ => None,
        })
        .collect()
}

/// An agent `who` whose model notes twice, then hands off to `next` (in a swarm) or answers.
fn worker(who: &'static str, next: Option<&'static str>, log: &Path) -> AgentLlm {
    let model = ScriptedProvider::from_fn(move |req| {
        let mine = tool_results(req)
            .iter()
            .filter(|t| t.starts_with(&format!("noted {who}#")))
            .count();
        reply(match (mine, next) {
            (n @ 0..2, _) => Message::new(
                Role::Assistant,
                vec![Content::tool_call(
                    format!("{who}_{n}"),
                    "note",
                    json!({"who": who, "n": n}),
                )],
            ),
            (_, Some(next)) => Message::new(
                Role::Assistant,
                vec![Content::tool_call(
                    format!("{who}_t"),
                    format!("transfer_to_{next}"),
                    json!({}),
                )],
            ),
            (_, None) => Message::assistant(format!("{who} done")),
        })
    });
    AgentLlm::new(
        Agent::new(who, format!("You are {who}. Take two notes.")).with_tool(note_tool(log.into())),
        model,
    )
}

fn scenario(name: &str, log: &Path) -> Arc<dyn AugmentedLlm> {
    match name {
        "parallel" => Arc::new(
            Parallel::builder("team")
                .with_branch(worker("p0", None, log))
                .with_branch(worker("p1", None, log))
                .with_branch(worker("p2", None, log))
                .with_branch(worker("p3", None, log))
                .build()
                .unwrap(),
        ),
        "orchestrator" => {
            let planner = ScriptedProvider::from_fn(|req| {
                let asked = req.messages.iter().map(Message::text).collect::<String>();
                let plan = if asked.contains("o0 done") {
                    json!({"steps": [], "is_complete": true})
                } else {
                    let tasks: Vec<_> = ["o0", "o1", "o2", "o3"]
                        .map(|w| json!({"description": "note", "worker": w}))
                        .to_vec();
                    json!({"steps": [{"description": "take notes", "tasks": tasks}], "is_complete": false})
                };
                reply(Message::assistant(plan.to_string()))
            });
            let synthesizer =
                ScriptedProvider::from_fn(|_| reply(Message::assistant("all notes taken")));
            Arc::new(
                Orchestrator::builder(
                    "lead",
                    Arc::new(AgentLlm::new(Agent::new("planner", "Plan."), planner)),
                )
                .with_worker(worker("o0", None, log))
                .with_worker(worker("o1", None, log))
                .with_worker(worker("o2", None, log))
                .with_worker(worker("o3", None, log))
                .with_synthesizer(Arc::new(AgentLlm::new(
                    Agent::new("synthesizer", "Sum up."),
                    synthesizer,
                )))
                .build()
                .unwrap(),
            )
        }
        "swarm" => {
            let chain = [
                ("s0", Some("s1")),
                ("s1", Some("s2")),
                ("s2", Some("s3")),
                ("s3", None),
            ];
            let mut builder = Swarm::builder("relay");
            for (who, next) in chain {
                let mut member = SwarmMember::from_llm(worker(who, next, log));
                if let Some(next) = next {
                    member = member.with_handoff(next);
                }
                builder = builder.with_member(member);
            }
            Arc::new(builder.build().unwrap())
        }
        "agents_as_tools" => {
            let tools = AgentsAsTools::new(
                ["a0", "a1", "a2", "a3"]
                    .map(|w| Arc::new(worker(w, None, log)) as Arc<dyn AugmentedLlm>)
                    .to_vec(),
            )
            .unwrap();
            let model = ScriptedProvider::from_fn(|req| {
                reply(if tool_results(req).is_empty() {
                    Message::new(
                        Role::Assistant,
                        ["a0", "a1", "a2", "a3"]
                            .map(|w| {
                                Content::tool_call(
                                    w,
                                    format!("agent__{w}"),
                                    json!({"message": "go"}),
                                )
                            })
                            .to_vec(),
                    )
                } else {
                    Message::assistant(tool_results(req).join(" | "))
                })
            });
            Arc::new(AgentLlm::new(
                Agent::new("lead", "Delegate.").with_tool(tools),
                model,
            ))
        }
        other => panic!("unknown scenario {other}"),
    }
}

async fn open_store() -> Arc<dyn Store> {
    match std::env::var("AGENTKIT_COMP_PG_URL") {
        #[cfg(feature = "postgres")]
        Ok(url) => Arc::new(
            agentkit_runtime::PostgresStore::connect(&url)
                .await
                .unwrap(),
        ),
        #[cfg(not(feature = "postgres"))]
        Ok(_) => panic!("AGENTKIT_COMP_PG_URL needs the postgres feature"),
        Err(_) => {
            let db = std::env::var("AGENTKIT_COMP_DB").expect("run by the composition tests");
            Arc::new(SqliteStore::open(&db).await.unwrap())
        }
    }
}

/// The child process: recover, start the scenario's run (idempotently), wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the composition crash tests"]
async fn composition_child() {
    let log = PathBuf::from(std::env::var("AGENTKIT_COMP_LOG").expect("AGENTKIT_COMP_LOG"));
    let name = std::env::var("AGENTKIT_COMP_SCENARIO").expect("AGENTKIT_COMP_SCENARIO");
    let pg = std::env::var("AGENTKIT_COMP_PG_URL").is_ok();
    let mut builder = Runtime::builder(open_store().await);
    if pg {
        // The killed process's lease on the run must expire before this one takes it over.
        builder = builder
            .with_node_id(uuid::Uuid::now_v7().to_string())
            .with_lease(Duration::from_millis(1000));
    }
    let rt = builder.build();
    let target = scenario(&name, &log);
    rt.register_agent("target", move || target.clone(), TargetOptions::new());
    rt.recover().await.unwrap();
    if pg {
        rt.start_polling(Duration::from_millis(50));
    }
    let id = rt
        .start_run(
            "target",
            json!("go"),
            StartOptions::new().with_idempotency_key("the-run"),
        )
        .await
        .unwrap();
    let run = rt.wait(&id).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
}

fn spawn_child(scenario: &str, db: &Db, log: &Path) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "composition_child",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("AGENTKIT_COMP_LOG", log)
    .env("AGENTKIT_COMP_SCENARIO", scenario)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    match db {
        Db::Sqlite(path) => c.env("AGENTKIT_COMP_DB", path),
        Db::Postgres(url) => c.env("AGENTKIT_COMP_PG_URL", url),
    };
    c.spawn().unwrap()
}

enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Kills the child when the test fails first.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `who#n` of every tool call journaled in the run.
async fn journaled_notes(store: &dyn Store) -> Vec<String> {
    let mut notes = Vec::new();
    for run in store.list_runs(&ALL_STATUSES, 10).await.unwrap() {
        for e in store.journal(&run.id).await.unwrap() {
            if e.kind != EntryKind::Tool {
                continue;
            }
            let text = e.value["content"][0]["text"].as_str().unwrap_or_default();
            if let Some(note) = text.strip_prefix("noted ") {
                notes.push(note.to_owned());
            }
        }
    }
    notes
}

/// How often one (scenario, kill point) is tried on a fresh database when the kill lands
/// after every tool call already ran (the test's 1 ms poll can lag behind the child on a busy
/// machine); such a try proves nothing and is not counted.
const ATTEMPTS: usize = 4;

/// One scenario, killed once `kill_after` tool lines are written, then restarted. `false`
/// when the kill came too late to be in the middle of the run (inconclusive: try again).
async fn crash_and_resume(
    scenario: &str,
    kill_after: usize,
    db: Db,
    store: &dyn Store,
    log: &Path,
) -> bool {
    let mut child = Guard(Some(spawn_child(scenario, &db, log)));
    let started = Instant::now();
    while lines(log).len() < kill_after {
        let c = child.0.as_mut().unwrap();
        assert!(
            c.try_wait().unwrap().is_none(),
            "{scenario}: the child exited before the kill"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{scenario}: no progress"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // SIGKILL (Child::kill on Unix).
    let mut c = child.0.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let at_kill = journaled_notes(store).await;
    let written_at_kill = lines(log).len();
    if written_at_kill >= TOOL_CALLS {
        eprintln!(
            "{scenario}: the kill after {kill_after} lines came too late ({written_at_kill} \
             written); trying again"
        );
        return false;
    }

    let mut child = Guard(Some(spawn_child(scenario, &db, log)));
    let c = child.0.as_mut().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{scenario}: the restarted child did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.0 = None;
    assert!(status.success(), "{scenario}: the restarted run failed");

    let runs = store.list_runs(&ALL_STATUSES, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{scenario}");
    assert_eq!(runs[0].status, RunStatus::Succeeded, "{scenario}");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for l in lines(log) {
        *counts.entry(l).or_default() += 1;
    }
    for note in &at_kill {
        assert_eq!(
            counts.get(note),
            Some(&1),
            "{scenario}, killed after {kill_after} lines: `{note}` was journaled before the \
             kill, so it must be in the file exactly once; file: {counts:?}"
        );
    }
    assert_eq!(
        counts.len(),
        TOOL_CALLS,
        "{scenario}: every call ran: {counts:?}"
    );
    let finale = journaled_notes(store).await;
    assert_eq!(finale.len(), TOOL_CALLS, "{scenario}: {finale:?}");
    let repeated: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{scenario}: killed after {written_at_kill} lines with {} journaled; {repeated} \
         in-flight call(s) ran again after the restart",
        at_kill.len()
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_composition_on_sqlite_repeats_no_journaled_tool_call() {
    for scenario in SCENARIOS {
        for kill_after in KILL_AFTER_LINES {
            let mut conclusive = false;
            for _ in 0..ATTEMPTS {
                let dir = tempfile::tempdir().unwrap();
                let db = dir.path().join("runs.db");
                let log = dir.path().join("notes.log");
                // Create the schema first, so the observer can read the journal at the kill.
                let store = SqliteStore::open(&db).await.unwrap();
                if crash_and_resume(scenario, kill_after, Db::Sqlite(db.clone()), &store, &log)
                    .await
                {
                    conclusive = true;
                    break;
                }
            }
            assert!(
                conclusive,
                "{scenario}: every kill after {kill_after} lines came too late"
            );
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_composition_on_postgres_repeats_no_journaled_tool_call() {
    let pg = common::Pg::start();
    for scenario in SCENARIOS {
        for kill_after in KILL_AFTER_LINES {
            let mut conclusive = false;
            for attempt in 0..ATTEMPTS {
                let url = pg
                    .fresh_db(&format!("comp_{scenario}_{kill_after}_{attempt}"))
                    .await;
                let store = agentkit_runtime::PostgresStore::connect(&url)
                    .await
                    .unwrap();
                let dir = tempfile::tempdir().unwrap();
                let log = dir.path().join("notes.log");
                conclusive =
                    crash_and_resume(scenario, kill_after, Db::Postgres(url), &store, &log).await;
                store.pool().close().await;
                if conclusive {
                    break;
                }
            }
            assert!(
                conclusive,
                "{scenario}: every kill after {kill_after} lines came too late"
            );
        }
    }
}
