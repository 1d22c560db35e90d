//! Issue 11 across processes: two `agentkit serve` processes on one PostgreSQL database,
//! node A cancelling a run while node B approves the call that run waits on, at the same
//! moment, round after round. Whichever wins, the approval ends in one state a user can
//! trust:
//!
//! - withdrawn: `cancelled` in the queue (decided by `run`), the approver answered 409 saying
//!   so, and the tool never ran;
//! - approved: the approver answered 200 and the call ran at most once: once when the run
//!   went on to finish, not at all when the cancel stopped it first (a cancel that lands
//!   after an approval is a cancel of a run that has nothing waiting).
//!
//! Never both: an approver told 409 never finds the call `approved` (the race this test was
//! written for: the approval won, the run ended before its signal, and the approver was told
//! 409 while the queue and the audit log said approved), and the audit log holds exactly one
//! decision per call.
//!
//! Approved calls that reach the tool after the cancel answered 200 ("late calls") are
//! counted and printed, not asserted: they are possible by design. The node that takes the
//! approval from the signal queue delivers it with `take_signal_fenced` (agentkit-runtime):
//! the delivery and the check that the run is still live under that node are one
//! transaction, serialised against the cancel's update of the run (the run's row is locked
//! `FOR SHARE`). A cancel that commits first stops the call (a withdrawn or stopped round
//! here); one that commits after it finds the call released, and the call starts with the
//! executing node's next request, which on a loaded machine can come after the cancel has
//! written its audit entry and answered (seen: 1 round in 20, 7 ms after the answer, under a
//! parallel build). Such a round is still an approval that won: approved, 200, the call run
//! once (asserted below). A cancel that answers only once the executing node has stopped
//! would exclude them; it is not built yet (README, "Approvals").
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agentkit_mcp::McpServerBuilder;
use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use common::pg::Pg;
use common::tools::ToolModel;
use common::upstream::Upstream;
use common::{Serve, free_port, wait_status};
use reqwest::Method;
use serde_json::{Value, json};

const ROUNDS: usize = 20;
/// When `send_message` ran, each time.
static SENT_AT: std::sync::Mutex<Vec<Instant>> = std::sync::Mutex::new(Vec::new());

/// MCP server `ops` with `read_file` and `send_message`, counting the sends it really ran.
async fn ops(sends: &Arc<AtomicU32>) -> Upstream {
    let sends = Arc::clone(sends);
    let server = McpServerBuilder::new("ops", "1.0.0")
        .tool_fn(
            "read_file",
            "Reads a file",
            json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            |_, _| async move { Ok(CallToolResult::success(vec![ContentBlock::text("hello")])) },
        )
        .tool_fn(
            "send_message",
            "Sends a message",
            json!({"type": "object", "properties": {"text": {"type": "string"}}}),
            move |_, _| {
                let sends = Arc::clone(&sends);
                async move {
                    sends.fetch_add(1, Ordering::SeqCst);
                    SENT_AT.lock().unwrap().push(Instant::now());
                    Ok(CallToolResult::success(vec![ContentBlock::text("sent")]))
                }
            },
        )
        .build();
    Upstream::serve(server).await
}

/// Agent `poster` on `model` with `ops` at `url`, each send needing an approval.
fn config(model: &ToolModel, url: &str) -> String {
    format!(
        r#"openai:
  base_url: {base}
  api_key: test
mcp:
  servers:
    ops:
      url: {url}
policies:
  guarded:
    require_approval: ["ops__send_message"]
agents:
  poster:
    model: openai:gpt-4o-mini
    instructions: Read the docs, then post what they say.
    servers: [ops]
    policy: guarded
"#,
        base = model.base_url,
    )
}

/// The approvals of `run` (any status), as `on` lists them.
async fn approvals_of(on: &Serve, run: &str) -> Vec<Value> {
    let (s, all) = on.call(Method::GET, "/v1/approvals?status=all", None).await;
    assert_eq!(s, 200, "{all}");
    all.as_array()
        .unwrap()
        .iter()
        .filter(|a| a["run_id"] == run)
        .cloned()
        .collect()
}

/// The decisions (approved or rejected) the audit log holds for call `call` of `run`.
async fn decisions(on: &Serve, run: &str, call: &str) -> Vec<Value> {
    let (s, page) = on.call(Method::GET, "/v1/audit?limit=10000", None).await;
    assert_eq!(s, 200, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let e = &e["event"];
            e["run_id"] == run
                && e["call_id"] == call
                && (e["outcome"] == "approved" || e["outcome"] == "rejected")
        })
        .cloned()
        .collect()
}

/// `POST path` with `body` to `on`, sent `after_ms` after `barrier` lets it go: its status,
/// body text and when it answered.
fn post_at(
    barrier: &Arc<tokio::sync::Barrier>,
    after_ms: u64,
    on: &Serve,
    path: String,
    body: Value,
) -> tokio::task::JoinHandle<(u16, String, Instant)> {
    let req = on.request(Method::POST, &path).json(&body);
    let barrier = Arc::clone(barrier);
    tokio::spawn(async move {
        barrier.wait().await;
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        let res = req.send().await.unwrap();
        let s = res.status().as_u16();
        let at = Instant::now();
        (s, res.text().await.unwrap(), at)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_on_one_node_while_approving_on_the_other_ends_each_approval_one_way() {
    let pg = Pg::start();
    let model = ToolModel::start(Duration::from_millis(10)).await;
    let sends = Arc::new(AtomicU32::new(0));
    let tools = ops(&sends).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("agentkit.yaml");
    std::fs::write(&config_path, config(&model, &tools.url)).unwrap();
    let (a_log, b_log) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (a, b) = tokio::join!(
        Serve::start(&config_path, &pg.url, free_port(), &a_log),
        Serve::start(&config_path, &pg.url, free_port(), &b_log),
    );
    let logs = || format!("A:\n{}\nB:\n{}", a.log_text(), b.log_text());

    let (mut withdrawn, mut ran_once, mut stopped_first, mut late_calls) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        let (s, run) = a
            .call(
                Method::POST,
                "/v1/agents/poster/runs",
                Some(json!({"message": format!("round {round}")})),
            )
            .await;
        assert_eq!(s, 202, "{run}");
        let run = run["run_id"].as_str().unwrap().to_owned();
        wait_status(&b, &run, &["waiting_approval"]).await;
        let pending = approvals_of(&b, &run).await;
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0]["status"], "pending", "{pending:?}");
        let call = pending[0]["call_id"].as_str().unwrap().to_owned();
        let sent_before = sends.load(Ordering::SeqCst);

        // A cancels, B approves, released together; in some rounds one of them a little
        // later, so that each way of ending is reached.
        let (cancel_after, approve_after) = match round % 4 {
            0 => (0, 0),
            1 => (0, 20),
            2 => (20, 0),
            _ => (300, 0),
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let cancel = post_at(
            &barrier,
            cancel_after,
            &a,
            format!("/v1/runs/{run}/cancel"),
            json!({"reason": "the customer hung up"}),
        );
        let approve = post_at(
            &barrier,
            approve_after,
            &b,
            format!("/v1/approvals/{run}/{call}/approve"),
            json!({"reason": "fine"}),
        );
        let ((cancel_status, cancel_body, cancelled_at), (approve_status, approve_body, _)) =
            (cancel.await.unwrap(), approve.await.unwrap());
        assert!(
            cancel_status == 200 || cancel_status == 409,
            "round {round}: cancel answered {cancel_status} {cancel_body}"
        );
        assert!(
            approve_status == 200 || approve_status == 409,
            "round {round}: approve answered {approve_status} {approve_body}\n{}",
            logs()
        );

        // The run ends either way (cancelled, or succeeded when the cancel came too late).
        let done = wait_status(&a, &run, &["succeeded", "failed", "cancelled"]).await;
        assert_ne!(
            done["status"],
            "failed",
            "round {round}: {done}\n{}",
            logs()
        );
        if cancel_status == 200 {
            assert_eq!(done["status"], "cancelled", "round {round}: {done}");
        }
        // Let a resumed execution on either node run what it was going to run.
        let settle = Instant::now() + Duration::from_secs(2);
        let mut approval = Value::Null;
        while Instant::now() < settle {
            let now = approvals_of(&b, &run).await;
            assert_eq!(now.len(), 1, "round {round}: {now:?}");
            approval = now[0].clone();
            if approval["status"] != "pending" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ran = sends.load(Ordering::SeqCst) - sent_before;
        let (on_a, on_b) = (approvals_of(&a, &run).await, approvals_of(&b, &run).await);
        assert_eq!(on_a, on_b, "round {round}: both nodes show one queue");

        let why = format!(
            "round {round}: cancel {cancel_status} {cancel_body}; approve {approve_status} \
             {approve_body}; run {}; approval {approval}; the tool ran {ran} time(s)",
            done["status"]
        );
        // A call that ran although the cancel answered 200: released at the gate before the
        // cancel committed (so only in a round the approval won: asserted below). When it
        // started, against the cancel's answer: after it is a late call (module docs).
        let sent_at = (ran == 1 && cancel_status == 200)
            .then(|| SENT_AT.lock().unwrap().last().copied())
            .flatten();
        let late = sent_at.and_then(|t| t.checked_duration_since(cancelled_at));
        late_calls += usize::from(late.is_some());
        let when = match (sent_at, late) {
            (_, Some(d)) => format!(", starting {d:?} after the cancel answered"),
            (Some(t), None) => format!(
                ", starting {:?} before the cancel answered",
                cancelled_at.duration_since(t)
            ),
            (None, _) => String::new(),
        };
        println!(
            "round {round}: cancel {cancel_status}, approve {approve_status}, approval {}, run {}, \
             the tool ran {ran} time(s){when}",
            approval["status"], done["status"],
        );
        match approval["status"].as_str().unwrap() {
            "cancelled" => {
                withdrawn += 1;
                assert_eq!(
                    approve_status, 409,
                    "withdrawn, so the approver hears 409: {why}"
                );
                assert!(
                    approve_body.contains("cancelled"),
                    "the 409 says the call was withdrawn with its run: {why}"
                );
                assert_eq!(approval["decided_by"], "run", "{why}");
                assert_eq!(ran, 0, "a withdrawn call never runs: {why}");
                assert_eq!(done["status"], "cancelled", "{why}");
            }
            "approved" => {
                if ran == 1 {
                    ran_once += 1;
                } else {
                    stopped_first += 1;
                }
                assert_eq!(
                    approve_status, 200,
                    "approved, so the approver hears 200: {why}"
                );
                assert_ne!(approval["decided_by"], "run", "{why}");
                assert!(ran <= 1, "an approved call runs once at most: {why}");
                if done["status"] == "succeeded" {
                    assert_eq!(ran, 1, "a run that finished made its approved call: {why}");
                    assert_eq!(cancel_status, 409, "a finished run is not cancelled: {why}");
                }
            }
            other => panic!("the approval ended {other}: {why}\n{}", logs()),
        }
        // One decision per call in the audit log, the one the queue shows.
        let decided = decisions(&a, &run, &call).await;
        assert_eq!(decided.len(), 1, "{why}: {decided:?}");
        let outcome = if approval["status"] == "approved" {
            "approved"
        } else {
            "rejected"
        };
        assert_eq!(
            decided[0]["event"]["outcome"], outcome,
            "{why}: {decided:?}"
        );
    }
    // Report how the race went (both sides should win sometimes; not asserted, timing-bound).
    println!(
        "{ROUNDS} rounds: {withdrawn} withdrawn, {ran_once} approved and run, \
         {stopped_first} approved and then stopped by the cancel; {late_calls} approved \
         call(s) started after the cancel had answered"
    );
    let (_, v) = a.call(Method::GET, "/v1/audit/verify", None).await;
    assert_eq!(v["ok"], true, "{v}");
    drop((a, b));
}
