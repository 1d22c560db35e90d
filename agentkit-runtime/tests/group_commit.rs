//! The SQLite store group-commits concurrent writes: many writers at once are all stored; a
//! write that fails inside a shared transaction fails alone; and a write is acknowledged only
//! once committed, also when the process is killed (`kill -9`) or its runtime is dropped with
//! writes in flight.
//!
//! The kill test's child process is this test binary itself, re-run with `--ignored
//! group_commit_child` and the database and acknowledgement-log paths in the environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkit_core::RunStatus;
use agentkit_runtime::model::ALL_STATUSES;
use agentkit_runtime::{
    DocStore, Expect, JournalEntry, JournalStore, KvStore, NewRun, RunStore, RunUpdate,
    SignalStore, SqliteStore,
};
use serde_json::json;

fn entry(run: &str, seq: u64) -> JournalEntry {
    JournalEntry::new(run, seq, format!("step/{seq}"), json!({"seq": seq}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_are_all_committed_and_visible_after_reopening() {
    const N: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("many.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let store = store.clone();
        tasks.spawn(async move {
            let id = format!("run-{i}");
            store
                .create_run(NewRun::new("t", json!(i)).with_id(&id))
                .await
                .unwrap();
            for seq in 0..3 {
                store.append(&[entry(&id, seq)]).await.unwrap();
            }
            store.kv_put("many", &id, json!(i), None).await.unwrap();
            let doc = store
                .doc_put("many", &id, json!({"i": i}), Expect::Absent)
                .await
                .unwrap();
            assert_eq!(doc.unwrap().revision, 1);
            let done = store
                .transition(
                    &id,
                    &[RunStatus::Queued],
                    RunUpdate::new(RunStatus::Succeeded).with_output(json!(i)),
                )
                .await
                .unwrap();
            assert_eq!(done.unwrap().status, RunStatus::Succeeded);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    store.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let runs = store.list_runs(&ALL_STATUSES, N + 10).await.unwrap();
    assert_eq!(runs.len(), N);
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
    for i in 0..N {
        let id = format!("run-{i}");
        let journal = store.journal(&id).await.unwrap();
        assert_eq!(
            journal.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [0, 1, 2],
            "{id}"
        );
        assert_eq!(store.kv_get("many", &id).await.unwrap(), Some(json!(i)));
        assert_eq!(
            store.doc_get("many", &id).await.unwrap().unwrap().value,
            json!({"i": i})
        );
    }
}

/// Every kind of write, some failing, queued while another connection holds SQLite's write
/// lock, so that they all land in the writer's next transaction together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_fail_the_others_in_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("fail.db")).await.unwrap();
    store
        .create_run(NewRun::new("t", json!(null)).with_id("r"))
        .await
        .unwrap();
    store.append(&[entry("r", 0)]).await.unwrap();
    store
        .doc_put("d", "doc", json!(1), Expect::Absent)
        .await
        .unwrap();

    // Hold the write lock from a connection of the read pool: the writer's next transaction
    // waits for it, and every write sent meanwhile queues up behind it.
    let blocker = store.pool().begin_with("BEGIN IMMEDIATE").await.unwrap();
    let first = {
        let s = store.clone();
        tokio::spawn(async move { s.kv_put("kv", "first", json!(0), None).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let s = store.clone();
    let dup_key = tokio::spawn(async move { s.append(&[entry("r", 0)]).await });
    // Two statements (600 rows > one INSERT's 500): the second fails on the duplicate, and
    // the first must not stay.
    let s = store.clone();
    let half_dup = tokio::spawn(async move {
        let mut entries: Vec<_> = (1000..1599).map(|seq| entry("r", seq)).collect();
        entries.push(entry("r", 0));
        s.append(&entries).await
    });
    let s = store.clone();
    let no_run = tokio::spawn(async move { s.send_signal("missing", "go", json!(1)).await });
    let s = store.clone();
    let stale =
        tokio::spawn(async move { s.doc_put("d", "doc", json!(2), Expect::Revision(7)).await });
    let s = store.clone();
    let dup_run = tokio::spawn(async move {
        s.create_run(NewRun::new("t", json!(null)).with_id("r"))
            .await
    });
    let mut good = Vec::new();
    for i in 0..20 {
        let s = store.clone();
        good.push(tokio::spawn(async move {
            s.kv_put("kv", &format!("good-{i}"), json!(i), None).await
        }));
    }
    let s = store.clone();
    let many = tokio::spawn(async move {
        let entries: Vec<_> = (1..601).map(|seq| entry("r", seq)).collect();
        s.append(&entries).await
    });
    let s = store.clone();
    let signal = tokio::spawn(async move { s.send_signal("r", "go", json!("payload")).await });
    let s = store.clone();
    let cas =
        tokio::spawn(async move { s.doc_put("d", "doc", json!(3), Expect::Revision(1)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    blocker.commit().await.unwrap();

    first.await.unwrap().unwrap();
    let err = dup_key.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("already"), "{err}");
    assert!(half_dup.await.unwrap().is_err());
    let err = no_run.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("no such run"), "{err}");
    assert_eq!(stale.await.unwrap().unwrap(), None);
    assert!(dup_run.await.unwrap().is_err(), "a duplicate run id");
    for g in good {
        g.await.unwrap().unwrap();
    }
    many.await.unwrap().unwrap();
    signal.await.unwrap().unwrap();
    assert_eq!(cas.await.unwrap().unwrap().unwrap().revision, 2);

    // What succeeded is stored; nothing of what failed is.
    for i in 0..20 {
        assert_eq!(
            store.kv_get("kv", &format!("good-{i}")).await.unwrap(),
            Some(json!(i))
        );
    }
    let seqs: Vec<u64> = store
        .journal("r")
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (0..601).collect::<Vec<_>>());
    assert!(store.has_signal("r", "go").await.unwrap());
    assert!(!store.has_signal("missing", "go").await.unwrap());
    let doc = store.doc_get("d", "doc").await.unwrap().unwrap();
    assert_eq!((doc.value, doc.revision), (json!(3), 2));
    assert_eq!(store.list_runs(&ALL_STATUSES, 10).await.unwrap().len(), 1);
}

/// The child process: 64 writers putting keys as fast as they can, each logging a key once
/// the store acknowledged it, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sigkill_never_loses_an_acknowledged_write"]
async fn group_commit_child() {
    let db = std::env::var("AGENTKIT_GC_DB").expect("AGENTKIT_GC_DB: run by the kill test");
    let log = PathBuf::from(std::env::var("AGENTKIT_GC_LOG").expect("AGENTKIT_GC_LOG"));
    let store = SqliteStore::open(&db).await.unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (store, next, log) = (store.clone(), Arc::clone(&next), log.clone());
        tasks.spawn(async move {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let key = format!("k{i}");
                store.kv_put("acked", &key, json!(i), None).await.unwrap();
                // One write per line: O_APPEND keeps concurrent lines whole.
                f.write_all(format!("{key}\n").as_bytes()).unwrap();
            }
        });
    }
    // Until killed (a writer that panics fails the child, and the kill test with it).
    let stopped = tasks.join_next().await;
    panic!("a writer stopped before the kill: {stopped:?}");
}

fn acked(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_an_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill.db");
    let log = dir.path().join("acked.log");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "group_commit_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AGENTKIT_GC_DB", &db)
        .env("AGENTKIT_GC_LOG", &log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while acked(&log).len() < 3_000 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the writer process exited before the kill: {status}");
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!(
                "the writer process acknowledged only {} writes in 60 s",
                acked(&log).len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let keys = acked(&log);
    let store = SqliteStore::open(&db).await.unwrap();
    let mut missing = Vec::new();
    for key in &keys {
        if store.kv_get("acked", key).await.unwrap().is_none() {
            missing.push(key.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes were lost at the kill: {:?}",
        missing.len(),
        keys.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "group commit kill test: {} acknowledged writes, all stored",
        keys.len()
    );
}

/// A runtime shut down with writes in flight (the writer task dropped mid-transaction): every
/// write that was acknowledged before is stored.
#[test]
fn dropping_the_runtime_mid_batch_never_acknowledges_an_uncommitted_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("drop.db");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    for round in 0..5 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(SqliteStore::open(&db)).unwrap();
        for t in 0..64 {
            let (store, acked) = (store.clone(), Arc::clone(&acked));
            rt.spawn(async move {
                for i in 0.. {
                    let key = format!("r{round}-t{t}-{i}");
                    if store.kv_put("acked", &key, json!(i), None).await.is_ok() {
                        acked.lock().unwrap().push(key);
                    }
                }
            });
        }
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(30 + 20 * round as u64)).await;
        });
        {
            let _in = rt.enter();
            drop(store);
        }
        rt.shutdown_background();
    }
    let keys = acked.lock().unwrap().clone();
    assert!(
        keys.len() > 100,
        "too few writes to test anything: {}",
        keys.len()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        for key in &keys {
            assert!(
                store.kv_get("acked", key).await.unwrap().is_some(),
                "acknowledged write {key} was lost when its runtime was dropped"
            );
        }
    });
}

/// A burst: 200 tasks appending 10 journal entries each, one append at a time, all at once
/// (2,000 appends queued on one writer). Every append is acknowledged and readable, on a file
/// and on a private (`in_memory`) store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_appends_is_all_committed_and_readable() {
    const TASKS: usize = 200;
    const APPENDS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    for store in [
        SqliteStore::open(dir.path().join("burst.db"))
            .await
            .unwrap(),
        SqliteStore::in_memory().await.unwrap(),
    ] {
        for t in 0..TASKS {
            store
                .create_run(NewRun::new("t", json!(t)).with_id(format!("burst-{t}")))
                .await
                .unwrap();
        }
        let start = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let (store, start) = (store.clone(), Arc::clone(&start));
            tasks.spawn(async move {
                let id = format!("burst-{t}");
                start.wait().await;
                for seq in 0..APPENDS {
                    store.append(&[entry(&id, seq)]).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let mut total = 0;
        for t in 0..TASKS {
            let journal = store.journal(&format!("burst-{t}")).await.unwrap();
            assert_eq!(
                journal.iter().map(|e| e.seq).collect::<Vec<_>>(),
                (0..APPENDS).collect::<Vec<_>>(),
                "run burst-{t}"
            );
            assert!(journal.iter().all(|e| e.value == json!({"seq": e.seq})));
            total += journal.len();
        }
        assert_eq!(total, TASKS * APPENDS as usize);
    }
}

/// The WAL is checkpointed beside the writer: 16 MiB written in bursts (less than the WAL the
/// writer lets grow before it checkpoints itself) reach the database file soon after, every
/// write is readable, and closing the store leaves no WAL behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_beside_the_writer() {
    const DOCS: usize = 2_048;
    const SIZE: usize = 8 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let wal = dir.path().join("wal.db-wal");
    let store = SqliteStore::open(&path).await.unwrap();
    let blob = "x".repeat(SIZE);
    for burst in 0..(DOCS / 128) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..128 {
            let (store, blob) = (store.clone(), blob.clone());
            tasks.spawn(async move {
                store
                    .doc_put(
                        "blobs",
                        &format!("{burst}-{i}"),
                        json!({ "blob": blob }),
                        Expect::Any,
                    )
                    .await
                    .unwrap()
                    .unwrap();
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
    let written = (DOCS * SIZE) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
    while size() < written && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        size() >= written,
        "the database file holds {} bytes 10 s after {written} bytes were written: the WAL \
         was not checkpointed",
        size()
    );
    for key in ["0-0", "15-127"] {
        let doc = store.doc_get("blobs", key).await.unwrap().unwrap();
        assert_eq!(doc.value["blob"].as_str().map(str::len), Some(SIZE));
    }
    store.close().await;
    assert_eq!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()),
        0,
        "a closed store leaves its WAL checkpointed"
    );
    let again = SqliteStore::open(&path).await.unwrap();
    assert!(again.doc_get("blobs", "7-64").await.unwrap().is_some());
}
