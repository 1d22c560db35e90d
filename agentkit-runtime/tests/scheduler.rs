//! Schedules: exactly one run per (schedule, fire time) with two nodes on one store, pause,
//! overlap, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentkit_core::{Result, RunStatus};
use agentkit_runtime::model::{ALL_STATUSES, now_ms};
use agentkit_runtime::{
    CatchUp, MemoryStore, Overlap, Runtime, Schedule, Store, TargetOptions, Workflow,
    WorkflowContext,
};
use async_trait::async_trait;
use serde_json::{Value, json};

/// Records one step, optionally slowly.
struct Tick {
    delay: Duration,
}

#[async_trait]
impl Workflow for Tick {
    type Input = Value;
    type Output = Value;
    fn name(&self) -> &str {
        "tick"
    }
    async fn run(&self, ctx: &WorkflowContext, input: Value) -> Result<Value> {
        let delay = self.delay;
        ctx.step("work", async move {
            tokio::time::sleep(delay).await;
            Ok(input)
        })
        .await
    }
}

fn node(store: Arc<dyn Store>, delay: Duration) -> Runtime {
    with_tick(Runtime::new(store), delay)
}

fn named_node(store: Arc<dyn Store>, delay: Duration, id: &str) -> Runtime {
    with_tick(Runtime::builder(store).with_node_id(id).build(), delay)
}

fn with_tick(rt: Runtime, delay: Duration) -> Runtime {
    rt.register_workflow(Tick { delay }, TargetOptions::new());
    rt
}

/// `n` interval schedules with exactly `fires` fire times each, starting soon.
fn schedules(n: usize, fires: i64, every_ms: i64) -> Vec<Schedule> {
    let now = now_ms();
    let start = (now / every_ms + 3) * every_ms;
    let end = start + (fires - 1) * every_ms;
    let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap());
    (0..n)
        .map(|i| {
            Schedule::every(
                format!("s{i}"),
                "tick",
                json!({"schedule": i}),
                Duration::from_millis(u64::try_from(every_ms).unwrap()),
            )
            .unwrap()
            .with_window(at(start), at(end))
            .with_catch_up(CatchUp::Within(Duration::from_secs(60)))
        })
        .collect()
}

async fn two_nodes_fire_exactly_once(a: Runtime, b: Runtime, store: Arc<dyn Store>, n: usize) {
    let fires = 10;
    let every = 100;
    for s in schedules(n, fires, every) {
        a.register_schedule(s.clone()).unwrap();
        b.register_schedule(s).unwrap();
    }
    a.start_scheduler(Duration::from_millis(25));
    b.start_scheduler(Duration::from_millis(25));
    let expected = n * usize::try_from(fires).unwrap();
    let started = std::time::Instant::now();
    loop {
        let runs = store.list_runs(&ALL_STATUSES, 100_000).await.unwrap();
        let done = runs
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .count();
        if done >= expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{done}/{expected} runs finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two more fire intervals: nothing fires after the window.
    tokio::time::sleep(Duration::from_millis(250)).await;
    a.shutdown(Duration::from_secs(10)).await;
    b.shutdown(Duration::from_secs(10)).await;
    let runs = store.list_runs(&ALL_STATUSES, 100_000).await.unwrap();
    assert_eq!(
        runs.len(),
        expected,
        "exactly one run per (schedule, fire time)"
    );
    let keys: HashSet<_> = runs
        .iter()
        .map(|r| r.idempotency_key.clone().unwrap())
        .collect();
    assert_eq!(keys.len(), expected);
    for i in 0..n {
        let mine = runs
            .iter()
            .filter(|r| r.input == json!({"schedule": i}))
            .count();
        assert_eq!(mine, 10, "schedule s{i}");
    }
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_store_start_one_run_per_fire() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = node(Arc::clone(&store), Duration::ZERO);
    let b = node(Arc::clone(&store), Duration::ZERO);
    two_nodes_fire_exactly_once(a, b, store, 20).await;
}

#[cfg(feature = "postgres")]
mod common;

/// 100 schedules, 2 nodes (two processes' worth of connection pools) on PostgreSQL, 10 fire
/// times each: exactly 1,000 runs.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_100_schedules_2_nodes_10_fires_exactly_1000_runs() {
    use agentkit_runtime::PostgresStore;
    let pg = common::Pg::start();
    let url = pg.fresh_db("sched").await;
    let sa: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let sb: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let a = named_node(Arc::clone(&sa), Duration::ZERO, "a");
    let b = named_node(sb, Duration::ZERO, "b");
    two_nodes_fire_exactly_once(a, b, sa, 100).await;
}

#[tokio::test]
async fn a_paused_schedule_fires_nothing_until_resumed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = node(Arc::clone(&store), Duration::ZERO);
    let s = Schedule::every("p", "tick", json!(1), Duration::from_millis(20)).unwrap();
    rt.register_schedule(s).unwrap();
    rt.pause_schedule("p").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rt.fire_due().await, 0);
    rt.resume_schedule("p").await.unwrap();
    tokio::time::sleep(Duration::from_millis(70)).await;
    let fired = rt.fire_due().await;
    // The fires of the paused 100 ms are skipped, not caught up.
    assert!((2..=4).contains(&fired), "{fired}");
    assert!(rt.pause_schedule("nope").await.is_err());
}

/// A pause on node a stops the schedule on node b too (it is stored), and a resume on b
/// restarts it on a, without catching up the fires of the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_schedule_on_one_node_pauses_it_on_every_node() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = named_node(Arc::clone(&store), Duration::ZERO, "a");
    let b = named_node(Arc::clone(&store), Duration::ZERO, "b");
    let s = Schedule::every("shared", "tick", json!(1), Duration::from_millis(50)).unwrap();
    for rt in [&a, &b] {
        rt.register_schedule(s.clone()).unwrap();
        rt.start_scheduler(Duration::from_millis(10));
    }
    let count = || {
        let store = Arc::clone(&store);
        async move { store.list_runs(&ALL_STATUSES, 10_000).await.unwrap().len() }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(count().await >= 3, "the schedule fires before the pause");
    a.pause_schedule("shared").await.unwrap();
    // Let the pause reach b, then nothing fires on either node.
    tokio::time::sleep(agentkit_runtime::PAUSE_PROPAGATION + Duration::from_millis(200)).await;
    let paused = count().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count().await,
        paused,
        "a fire started while the schedule was paused"
    );

    b.resume_schedule("shared").await.unwrap();
    tokio::time::sleep(agentkit_runtime::PAUSE_PROPAGATION + Duration::from_millis(300)).await;
    let resumed = count().await - paused;
    // About 1.3 s of 50 ms fires after the resume, none of the paused ones caught up.
    assert!(
        (10..=30).contains(&resumed),
        "{resumed} runs after the resume"
    );
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn overlap_skip_does_not_start_a_fire_while_the_last_run_is_unfinished() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = node(Arc::clone(&store), Duration::from_millis(400));
    let s = Schedule::every("slow", "tick", json!(1), Duration::from_millis(50))
        .unwrap()
        .with_overlap(Overlap::Skip);
    rt.register_schedule(s).unwrap();
    rt.start_scheduler(Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.shutdown(Duration::from_secs(5)).await;
    let runs = store.list_runs(&ALL_STATUSES, 100).await.unwrap();
    assert_eq!(runs.len(), 1, "about 6 fires, one run");
}

/// Node b registers the schedule while node a's run of it is still going: b has seen no
/// fire of its own, and still neither skips nor buffers wrongly (it reads the latest run from
/// the shared store), so no run overlaps another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_late_respects_the_overlap_policy_of_runs_it_did_not_start() {
    for overlap in [Overlap::Skip, Overlap::BufferOne] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = named_node(Arc::clone(&store), Duration::from_millis(400), "a");
        let b = named_node(Arc::clone(&store), Duration::from_millis(400), "b");
        let s = Schedule::every("late", "tick", json!(1), Duration::from_millis(50))
            .unwrap()
            .with_overlap(overlap);
        a.register_schedule(s.clone()).unwrap();
        a.start_scheduler(Duration::from_millis(10));
        // Wait until a's first run is going, then let b join.
        let first = loop {
            let runs = store.list_runs(&ALL_STATUSES, 10).await.unwrap();
            if let Some(r) = runs.first() {
                break r.clone();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        b.register_schedule(s).unwrap();
        b.start_scheduler(Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let runs = store.list_runs(&ALL_STATUSES, 100).await.unwrap();
        assert_eq!(
            runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
            vec![&first.id],
            "{overlap:?}: b started a run while a's run was going"
        );
        a.shutdown(Duration::from_secs(5)).await;
        b.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn schedules_with_bad_input_are_refused_and_nothing_is_stored() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = node(Arc::clone(&store), Duration::ZERO);
    let s = Schedule::every("x", "no-such-target", json!(1), Duration::from_secs(1)).unwrap();
    let e = rt.register_schedule(s).unwrap_err();
    assert!(e.to_string().contains("`no-such-target`"), "{e}");
    let e = Schedule::cron("c", "tick", json!(1), "*/5 * * * * * * *", "UTC").unwrap_err();
    assert!(e.to_string().contains("invalid cron expression"), "{e}");
    let colon = Schedule::every("a:b", "tick", json!(1), Duration::from_secs(1)).unwrap();
    let e = rt.register_schedule(colon).unwrap_err();
    assert!(e.to_string().contains("no `:`"), "{e}");
    let once = Schedule::once("o", "tick", json!(1), SystemTime::now());
    rt.register_schedule(once).unwrap();
    assert!(store.list_runs(&ALL_STATUSES, 10).await.unwrap().is_empty());
}

/// The fire time of a schedule run, from its idempotency key `schedule:<name>:<fire ms>`.
fn fire_of(run: &agentkit_runtime::RunRecord) -> i64 {
    run.idempotency_key
        .as_deref()
        .and_then(|k| k.rsplit(':').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap()
}

/// Every 100 ms, runs of 250 ms: with "buffer one" the runs never overlap, each next run is
/// a fire buffered while its predecessor ran (so it starts right when that ends, not at the
/// next free fire), and the fires in between are dropped.
async fn buffer_one_on(nodes: Vec<Runtime>, store: Arc<dyn Store>) {
    let s = Schedule::every("buf", "tick", json!(1), Duration::from_millis(100))
        .unwrap()
        .with_overlap(Overlap::BufferOne);
    for rt in &nodes {
        rt.register_schedule(s.clone()).unwrap();
        rt.start_scheduler(Duration::from_millis(10));
    }
    tokio::time::sleep(Duration::from_millis(1_400)).await;
    for rt in &nodes {
        rt.shutdown(Duration::from_secs(5)).await;
    }
    let mut runs = store.list_runs(&ALL_STATUSES, 100).await.unwrap();
    runs.sort_by_key(fire_of);
    let keys: HashSet<_> = runs.iter().map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), runs.len(), "one run per fire time");
    // About 14 fires; runs of 250 ms back to back fit about 5, and each of them ran.
    assert!((4..=7).contains(&runs.len()), "{} runs", runs.len());
    // A buffered fire may start on a node just as it shuts down: that last run is then
    // released (`queued`) for the next process instead of executed. Every other run ran.
    let (last, ran) = runs.split_last().unwrap();
    assert!(
        matches!(last.status, RunStatus::Succeeded | RunStatus::Queued),
        "{:?}: {:?}",
        last.status,
        last.error
    );
    for r in ran {
        assert_eq!(
            r.status,
            RunStatus::Succeeded,
            "{:?} on {:?}: {:?}",
            r.idempotency_key,
            r.owner,
            r.error
        );
    }
    let table: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "fire {} created {} ended {} owner {:?}",
                fire_of(r),
                r.created_at,
                r.updated_at,
                r.owner
            )
        })
        .collect();
    let table = table.join("\n");
    for pair in runs.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert!(
            next.created_at >= prev.updated_at,
            "overlap: {} started at {} before {} ended at {}\n{table}",
            next.id,
            next.created_at,
            prev.id,
            prev.updated_at
        );
        // Buffered: its fire came while the previous run was running ...
        let fire = fire_of(next);
        assert!(fire < prev.updated_at, "fire {fire} was not buffered");
        // ... and it started as soon as that run ended (not 100 ms later at a free fire).
        assert!(
            next.created_at - prev.updated_at < 60,
            "started {} ms after the previous run ended",
            next.created_at - prev.updated_at
        );
        // Only one fire is kept, the first that came while the previous run ran: the fire
        // before it came before that run started (give or take a scheduler tick).
        assert!(
            fire - 100 <= prev.created_at + 30,
            "fire {fire} is not the first that came after {} started at {}",
            prev.id,
            prev.created_at
        );
    }
}

#[tokio::test]
async fn overlap_buffer_one_keeps_one_pending_fire_and_starts_it_when_the_run_ends() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = node(Arc::clone(&store), Duration::from_millis(250));
    buffer_one_on(vec![rt], store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_buffer_one_on_two_nodes_starts_each_buffered_fire_once() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = named_node(Arc::clone(&store), Duration::from_millis(250), "a");
    let b = named_node(Arc::clone(&store), Duration::from_millis(250), "b");
    buffer_one_on(vec![a, b], store).await;
}

/// "Buffer one" with two nodes, each with its own connection pool, on PostgreSQL.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_overlap_buffer_one_on_two_nodes() {
    use agentkit_runtime::PostgresStore;
    let pg = common::Pg::start();
    let url = pg.fresh_db("buffer").await;
    let sa: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let sb: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let a = named_node(Arc::clone(&sa), Duration::from_millis(250), "a");
    let b = named_node(sb, Duration::from_millis(250), "b");
    buffer_one_on(vec![a, b], sa).await;
}

#[tokio::test]
async fn schedules_are_listed_triggered_by_hand_and_unregistered() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = node(Arc::clone(&store), Duration::ZERO);
    let daily = Schedule::cron("daily", "tick", json!({"d": 1}), "0 9 * * *", "UTC").unwrap();
    rt.register_schedule(daily.clone()).unwrap();
    rt.register_schedule(
        Schedule::every("often", "tick", json!({}), Duration::from_secs(60)).unwrap(),
    )
    .unwrap();
    let listed = rt.schedules();
    assert_eq!(
        listed
            .iter()
            .map(|s| s.schedule.name.as_str())
            .collect::<Vec<_>>(),
        ["daily", "often"]
    );
    let next = listed[0].next_fire.unwrap();
    assert!(next > now_ms() && next - now_ms() <= 86_400_000);
    assert_eq!(next % 86_400_000, 9 * 3_600_000, "09:00 UTC");
    rt.pause_schedule("daily").await.unwrap();
    assert!(rt.schedule("daily").unwrap().paused);

    // A manual fire runs even while paused, under the schedule's key prefix.
    let id = rt.trigger_schedule("daily").await.unwrap();
    let done = rt.wait(&id).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output, Some(json!({"d": 1})));
    let key = done.idempotency_key.unwrap();
    assert!(key.starts_with(&daily.fire_key_prefix()), "{key}");
    assert!(daily.is_manual_fire_key(&key));
    assert!(!daily.is_manual_fire_key(&daily.fire_key(5)));
    let second = rt.trigger_schedule("daily").await.unwrap();
    assert_ne!(second, id, "every manual fire is a new run");

    rt.unregister_schedule("often").unwrap();
    assert_eq!(rt.schedules().len(), 1);
    assert!(
        rt.trigger_schedule("often")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(rt.unregister_schedule("often").is_err());
}

/// A schedule pinned to a version starts its runs (scheduled and manual) on that version, not
/// the target's registered one; replacing it keeps what was already fired and its pause.
#[tokio::test]
async fn a_pinned_schedule_runs_its_version_and_a_replacement_keeps_its_fires_and_pause() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let rt = Runtime::new(Arc::clone(&store));
    rt.register_workflow(
        Tick {
            delay: Duration::ZERO,
        },
        TargetOptions::new().with_version(1),
    );
    // An hourly schedule that catches up the last hour: its latest hourly fire is due now.
    let hourly = |version: u32| {
        Schedule::every("hourly", "tick", json!({}), Duration::from_secs(3600))
            .unwrap()
            .with_catch_up(CatchUp::Within(Duration::from_secs(3600)))
            .with_version(version)
    };
    rt.register_schedule(hourly(3)).unwrap();
    assert_eq!(rt.fire_due().await, 1);
    let fired = store
        .latest_run_with_key_prefix(&hourly(3).fire_key_prefix())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fired.version, 3, "the fire runs the pinned version");
    let manual = rt.trigger_schedule("hourly").await.unwrap();
    assert_eq!(rt.get(&manual).await.unwrap().version, 3);

    // Replaced by version 4: the fire already made is not made again, the pause holds, and
    // its runs start on version 4.
    rt.pause_schedule("hourly").await.unwrap();
    rt.replace_schedule(hourly(4)).unwrap();
    assert!(rt.schedule("hourly").unwrap().paused);
    rt.resume_schedule("hourly").await.unwrap();
    assert_eq!(rt.fire_due().await, 0);
    let manual = rt.trigger_schedule("hourly").await.unwrap();
    assert_eq!(rt.get(&manual).await.unwrap().version, 4);
    // Registered afresh instead, the same catch-up fires nothing new either: one run per
    // (schedule, fire time).
    rt.unregister_schedule("hourly").unwrap();
    rt.register_schedule(hourly(4)).unwrap();
    assert_eq!(rt.fire_due().await, 0);
}
