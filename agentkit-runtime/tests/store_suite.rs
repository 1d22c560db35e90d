//! One behavioural suite, run against every [`Store`] backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use agentkit_core::{RunStatus, Usage};
use agentkit_runtime::model::{ALL_STATUSES, now_ms};
use agentkit_runtime::{
    EntryKind, JournalEntry, MemoryStore, NewRun, RunStore, RunUpdate, SqliteStore, Store,
};
use serde_json::json;

async fn suite(store: Arc<dyn Store>) {
    // Create and read back.
    let a = store
        .create_run(NewRun::new("agent-a", json!({"message": "hi"})).with_idempotency_key("k1"))
        .await
        .unwrap();
    assert!(a.is_new());
    let a = a.run().clone();
    assert_eq!(a.status, RunStatus::Queued);
    assert_eq!(a.attempts, 0);
    let got = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!(got.input, json!({"message": "hi"}));
    assert_eq!(got.idempotency_key.as_deref(), Some("k1"));
    assert!(store.get_run("nope").await.unwrap().is_none());

    // Same idempotency key: same run, nothing new stored.
    let again = store
        .create_run(NewRun::new("agent-a", json!("other")).with_idempotency_key("k1"))
        .await
        .unwrap();
    assert!(!again.is_new());
    assert_eq!(again.run().id, a.id);
    assert_eq!(store.list_runs(&ALL_STATUSES, 100).await.unwrap().len(), 1);

    // Compare-and-set transitions.
    let claimed = store
        .transition(
            &a.id,
            &[RunStatus::Queued],
            RunUpdate::new(RunStatus::Running).with_attempt(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.status, RunStatus::Running);
    assert_eq!(claimed.attempts, 1);
    let second = store
        .transition(
            &a.id,
            &[RunStatus::Queued],
            RunUpdate::new(RunStatus::Running).with_attempt(),
        )
        .await
        .unwrap();
    assert!(second.is_none(), "a run must not be claimed twice");

    // Every status round-trips.
    for st in ALL_STATUSES {
        let r = store
            .transition(&a.id, &ALL_STATUSES, RunUpdate::new(st))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, st);
        assert_eq!(store.get_run(&a.id).await.unwrap().unwrap().status, st);
    }
    let done = store
        .transition(
            &a.id,
            &[RunStatus::Cancelled],
            RunUpdate::new(RunStatus::Succeeded)
                .with_output(json!({"text": "done"}))
                .with_usage(Usage::new(10, 5), 0.25),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.output, Some(json!({"text": "done"})));
    assert_eq!(done.usage, Usage::new(10, 5));
    assert!((done.cost_usd - 0.25).abs() < 1e-9);
    assert_eq!(done.attempts, 1);

    // Listing by status, oldest first.
    let b = store.create_run(NewRun::new("wf", json!(1))).await.unwrap();
    let c = store.create_run(NewRun::new("wf", json!(2))).await.unwrap();
    let queued = store.list_runs(&[RunStatus::Queued], 10).await.unwrap();
    let ids: Vec<_> = queued.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, vec![b.run().id.clone(), c.run().id.clone()]);
    assert_eq!(
        store
            .list_runs(&[RunStatus::Queued], 1)
            .await
            .unwrap()
            .len(),
        1
    );

    // Journal: append-only, ordered, batch is all-or-nothing.
    let run = b.run().id.clone();
    let e0 = JournalEntry::new(
        &run,
        0,
        "agent/llm/0",
        json!({"usage": {"input_tokens": 3, "output_tokens": 4}}),
    )
    .with_latency_ms(12)
    .with_usage(Usage::new(3, 4), 0.01);
    let e1 = JournalEntry::new(&run, 1, "agent/tool/1/call_1", json!("18°C"));
    store.append(&[e0.clone(), e1.clone()]).await.unwrap();
    let dup_key = JournalEntry::new(&run, 2, "agent/llm/0", json!("again"));
    let fresh = JournalEntry::new(&run, 3, "step/x", json!(true));
    assert!(store.append(&[fresh.clone(), dup_key]).await.is_err());
    let dup_seq = JournalEntry::new(&run, 1, "step/y", json!(null));
    assert!(store.append(&[dup_seq]).await.is_err());
    let j = store.journal(&run).await.unwrap();
    assert_eq!(j.len(), 2, "a failed batch must store nothing: {j:?}");
    assert_eq!(j[0].key, "agent/llm/0");
    assert_eq!(j[0].kind, EntryKind::Llm);
    assert_eq!(j[0].latency_ms, 12);
    assert_eq!(j[0].usage, Usage::new(3, 4));
    assert_eq!(j[1].kind, EntryKind::Tool);
    assert_eq!(j[1].value, json!("18°C"));
    assert!(store.journal(&c.run().id).await.unwrap().is_empty());

    // Signals: queued per name, delivered in order, each once, journaled atomically.
    assert!(store.send_signal("nope", "go", json!(1)).await.is_err());
    assert!(!store.has_signal(&run, "go").await.unwrap());
    let none = store
        .take_signal(
            &run,
            "go",
            JournalEntry::new(&run, 2, "signal/go", json!(null)),
        )
        .await
        .unwrap();
    assert!(none.is_none());
    store
        .send_signal(&run, "go", json!({"n": 1}))
        .await
        .unwrap();
    store
        .send_signal(&run, "go", json!({"n": 2}))
        .await
        .unwrap();
    store.send_signal(&run, "other", json!(0)).await.unwrap();
    assert!(store.has_signal(&run, "go").await.unwrap());
    let first = store
        .take_signal(
            &run,
            "go",
            JournalEntry::new(&run, 2, "signal/go", json!(null)),
        )
        .await
        .unwrap();
    assert_eq!(first, Some(json!({"n": 1})));
    let second = store
        .take_signal(
            &run,
            "go",
            JournalEntry::new(&run, 3, "signal/go#2", json!(null)),
        )
        .await
        .unwrap();
    assert_eq!(second, Some(json!({"n": 2})));
    assert!(!store.has_signal(&run, "go").await.unwrap());
    assert!(store.has_signal(&run, "other").await.unwrap());
    let j = store.journal(&run).await.unwrap();
    assert_eq!(j.len(), 4);
    assert_eq!(j[2].kind, EntryKind::Signal);
    assert_eq!(j[2].value, json!({"n": 1}));
    assert_eq!(j[3].value, json!({"n": 2}));

    // Leases: a live lease keeps other nodes out; only the owner renews it; once it expires
    // another node claims the run (one more attempt).
    let far = now_ms() + 60_000;
    let r = store
        .create_run(NewRun::new("leased", json!(0)))
        .await
        .unwrap()
        .run()
        .clone();
    let a = store.claim(&r.id, "node-a", far).await.unwrap().unwrap();
    assert_eq!((a.status, a.attempts), (RunStatus::Running, 1));
    assert_eq!(a.owner.as_deref(), Some("node-a"));
    assert!(store.claim(&r.id, "node-b", far).await.unwrap().is_none());
    assert_eq!(
        store
            .renew_leases("node-b", std::slice::from_ref(&r.id), far)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .renew_leases("node-a", std::slice::from_ref(&r.id), now_ms() - 1)
            .await
            .unwrap(),
        1
    );
    let b = store.claim(&r.id, "node-b", far).await.unwrap().unwrap();
    assert_eq!((b.attempts, b.owner.as_deref()), (2, Some("node-b")));
    // The node that lost the lease can no longer change the run; the holder can.
    let stale = RunUpdate::new(RunStatus::Succeeded).with_owner_fence("node-a");
    assert!(
        store
            .transition(&r.id, &[RunStatus::Running], stale)
            .await
            .unwrap()
            .is_none()
    );
    let held = RunUpdate::new(RunStatus::Running).with_owner_fence("node-b");
    assert!(
        store
            .transition(&r.id, &[RunStatus::Running], held)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store.claim(&run, "node-a", far).await.unwrap().is_some(),
        "queued runs are claimable"
    );

    // claim_next: oldest first, only the given targets, each run to one node.
    let mut batch = Vec::new();
    for i in 0..3 {
        batch.push(
            store
                .create_run(NewRun::new("batch", json!(i)))
                .await
                .unwrap()
                .run()
                .id
                .clone(),
        );
    }
    let targets = vec!["batch".to_owned()];
    let first = store.claim_next("node-a", &targets, far, 2).await.unwrap();
    assert_eq!(
        first.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        batch[..2].to_vec()
    );
    let rest = store.claim_next("node-b", &targets, far, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, batch[2]);
    assert_eq!(rest[0].owner.as_deref(), Some("node-b"));
    assert!(
        store
            .claim_next("node-c", &targets, far, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_next("node-c", &["other".to_owned()], far, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Parked runs (durable sleep): queued with a wake-up time, claimed by nobody before it.
    let p = store
        .create_run(NewRun::new("parked", json!(null)))
        .await
        .unwrap()
        .run()
        .clone();
    let p = store.claim(&p.id, "node-a", far).await.unwrap().unwrap();
    let soon = now_ms() + 300;
    let parked = store
        .transition(
            &p.id,
            &[RunStatus::Running],
            RunUpdate::new(RunStatus::Queued)
                .with_wake_at(soon)
                .with_owner_fence("node-a"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parked.wake_at, Some(soon));
    assert_eq!(
        store.get_run(&p.id).await.unwrap().unwrap().wake_at,
        Some(soon)
    );
    let parked_targets = vec!["parked".to_owned()];
    assert!(store.claim(&p.id, "node-b", far).await.unwrap().is_none());
    assert!(
        store
            .claim_next("node-b", &parked_targets, far, 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(std::time::Duration::from_millis(320)).await;
    let woke = store
        .claim_next("node-b", &parked_targets, far, 10)
        .await
        .unwrap();
    assert_eq!(woke.len(), 1);
    assert_eq!(woke[0].wake_at, None, "claiming clears the wake-up time");
    assert_eq!(woke[0].attempts, 2);
    // Any other update clears it too (a paused sleeper re-parks from its journal on resume).
    store
        .transition(
            &p.id,
            &[RunStatus::Running],
            RunUpdate::new(RunStatus::Queued).with_wake_at(far),
        )
        .await
        .unwrap();
    let paused = store
        .transition(
            &p.id,
            &[RunStatus::Queued],
            RunUpdate::new(RunStatus::Paused),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paused.wake_at, None);

    // A waiting run stores what it waits for (as stored, in order); any other update clears it.
    let waiting = store
        .transition(
            &p.id,
            &[RunStatus::Paused],
            RunUpdate::new(RunStatus::WaitingApproval)
                .with_waiting_for(["approval/call_1", "approval"]),
        )
        .await
        .unwrap()
        .unwrap();
    let names = Some(vec!["approval/call_1".to_owned(), "approval".to_owned()]);
    assert_eq!(waiting.waiting_for, names);
    assert_eq!(
        store.get_run(&p.id).await.unwrap().unwrap().waiting_for,
        names
    );
    let requeued = store
        .transition(
            &p.id,
            &[RunStatus::WaitingApproval],
            RunUpdate::new(RunStatus::Queued),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(requeued.waiting_for, None);
    assert_eq!(
        store.get_run(&p.id).await.unwrap().unwrap().waiting_for,
        None
    );

    // A fenced append appends only while the run is executed by the owner, atomically.
    let f = store
        .create_run(NewRun::new("agent", json!("fenced")).with_claim("node-a", far))
        .await
        .unwrap()
        .run()
        .clone();
    let entry = |seq: u64, key: &str| JournalEntry::new(&f.id, seq, key, json!(seq));
    assert!(
        store
            .append_fenced(&[entry(0, "step/a")], "node-a")
            .await
            .unwrap()
    );
    assert!(
        !store
            .append_fenced(&[entry(1, "step/b")], "node-b")
            .await
            .unwrap(),
        "another node is fenced out"
    );
    // More entries than one statement takes: all or nothing too.
    let many: Vec<JournalEntry> = (1..=600).map(|i| entry(i, &format!("step/m{i}"))).collect();
    assert!(!store.append_fenced(&many, "node-b").await.unwrap());
    assert_eq!(store.journal(&f.id).await.unwrap().len(), 1);
    assert!(store.append_fenced(&many, "node-a").await.unwrap());
    assert_eq!(store.journal(&f.id).await.unwrap().len(), 601);
    store
        .transition(
            &f.id,
            &[RunStatus::Running],
            RunUpdate::new(RunStatus::Paused),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        !store
            .append_fenced(&[entry(601, "step/b")], "node-a")
            .await
            .unwrap(),
        "a paused run takes no more steps"
    );
    let keys: Vec<String> = store
        .journal(&f.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys.len(), 601, "nothing appended when fenced out");
    assert!(!keys.contains(&"step/b".to_owned()));
    let other = JournalEntry::new(&p.id, 99, "step/other", json!(1));
    let err = store
        .append_fenced(&[entry(601, "step/b"), other], "node-a")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one run"), "{err}");
    assert!(store.append_fenced(&[], "node-a").await.unwrap());

    // Context key-value store: namespaced, replaced on put, TTL honoured.
    assert_eq!(store.kv_get("team-a", "k").await.unwrap(), None);
    store
        .kv_put("team-a", "k", json!({"v": 1}), None)
        .await
        .unwrap();
    store
        .kv_put("team-b", "k", json!("other"), None)
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("team-a", "k").await.unwrap(),
        Some(json!({"v": 1}))
    );
    store
        .kv_put(
            "team-a",
            "k",
            json!({"v": 2}),
            Some(std::time::Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("team-a", "k").await.unwrap(),
        Some(json!({"v": 2}))
    );
    assert_eq!(
        store.kv_get("team-b", "k").await.unwrap(),
        Some(json!("other"))
    );
    store
        .kv_put("team-a", "gone", json!(1), Some(std::time::Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("team-a", "gone").await.unwrap(),
        None,
        "expired"
    );
    assert!(!store.kv_delete("team-a", "gone").await.unwrap());
    assert!(store.kv_delete("team-a", "k").await.unwrap());
    assert_eq!(store.kv_get("team-a", "k").await.unwrap(), None);
    assert!(!store.kv_delete("team-a", "k").await.unwrap());

    // The latest run of an idempotency-key prefix: exact, case-sensitive, newest first.
    for key in [
        "schedule:s:100",
        "schedule:s:200",
        "schedule:S:300",
        "schedule:s%:400",
    ] {
        store
            .create_run(NewRun::new("agent-a", json!(1)).with_idempotency_key(key))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let latest = |p: &'static str| {
        let store = Arc::clone(&store);
        async move {
            store
                .latest_run_with_key_prefix(p)
                .await
                .unwrap()
                .and_then(|r| r.idempotency_key)
        }
    };
    assert_eq!(
        latest("schedule:s:").await.as_deref(),
        Some("schedule:s:200")
    );
    assert_eq!(
        latest("schedule:S:").await.as_deref(),
        Some("schedule:S:300")
    );
    assert_eq!(
        latest("schedule:s%").await.as_deref(),
        Some("schedule:s%:400")
    );
    assert_eq!(latest("schedule:_:").await, None);
    assert_eq!(latest("nothing:").await, None);
}

/// Run search, retention, journal paging and documents: what the server builds on.
async fn search_and_docs_suite(store: Arc<dyn Store>) {
    use agentkit_runtime::{DocWrite, Expect, RunQuery};
    // Runs of two targets, created in order.
    let mut ids = Vec::new();
    for i in 0..6 {
        let target = if i % 2 == 0 { "even" } else { "odd" };
        let r = store
            .create_run(NewRun::new(target, json!({"message": i})))
            .await
            .unwrap();
        ids.push(r.run().id.clone());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let all = store.search_runs(&RunQuery::new()).await.unwrap();
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(
        all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        newest_first
    );
    let odd = store
        .search_runs(&RunQuery::new().with_target("odd"))
        .await
        .unwrap();
    assert_eq!(odd.len(), 3);
    assert!(odd.iter().all(|r| r.target == "odd"));
    let page = store
        .search_runs(&RunQuery::new().with_page(2, 1))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        newest_first[1..3]
    );
    // Finish two runs; filter by status and by time.
    for id in &ids[..2] {
        store
            .transition(
                id,
                &[RunStatus::Queued],
                RunUpdate::new(RunStatus::Succeeded),
            )
            .await
            .unwrap()
            .unwrap();
    }
    let done = store
        .search_runs(&RunQuery::new().with_status(RunStatus::Succeeded))
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    // Counts by status: statuses with no run are left out, others are not counted.
    let mut counts = store
        .count_runs(&[RunStatus::Queued, RunStatus::Succeeded, RunStatus::Paused])
        .await
        .unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        vec![(RunStatus::Queued, 4), (RunStatus::Succeeded, 2)]
    );
    assert!(store.count_runs(&[]).await.unwrap().is_empty());
    let third = store.get_run(&ids[2]).await.unwrap().unwrap();
    let since = store
        .search_runs(&RunQuery::new().with_created(Some(third.created_at), None))
        .await
        .unwrap();
    assert!(since.iter().all(|r| r.created_at >= third.created_at));
    assert_eq!(since.len(), 4);
    let before = store
        .search_runs(&RunQuery::new().with_created(None, Some(third.created_at)))
        .await
        .unwrap();
    assert_eq!(before.len(), 2);

    // Journal paging.
    let entries: Vec<JournalEntry> = (0..5)
        .map(|i| JournalEntry::new(&ids[0], i, format!("step/s{i}"), json!(i)))
        .collect();
    store.append(&entries).await.unwrap();
    let after = store.journal_after(&ids[0], Some(1), 2).await.unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    let first = store.journal_after(&ids[0], None, 100).await.unwrap();
    assert_eq!(first.len(), 5);
    assert!(
        store
            .journal_after(&ids[0], Some(4), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // One finished run is deleted alone, with its journal; a run that has not finished, or
    // one that is gone, is not.
    assert!(!store.delete_finished_run(&ids[2]).await.unwrap());
    assert!(store.get_run(&ids[2]).await.unwrap().is_some());
    assert!(!store.delete_finished_run("no-such-run").await.unwrap());
    let lone = store
        .create_run(NewRun::new("lone", json!({})))
        .await
        .unwrap()
        .run()
        .id
        .clone();
    store
        .append(&[JournalEntry::new(&lone, 0, "step/x", json!(1))])
        .await
        .unwrap();
    store.send_signal(&lone, "x", json!(1)).await.unwrap();
    store
        .transition(
            &lone,
            &[RunStatus::Queued],
            RunUpdate::new(RunStatus::Failed),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(store.delete_finished_run(&lone).await.unwrap());
    assert!(store.get_run(&lone).await.unwrap().is_none());
    assert!(store.journal(&lone).await.unwrap().is_empty());
    assert!(!store.has_signal(&lone, "x").await.unwrap());
    assert!(!store.delete_finished_run(&lone).await.unwrap());

    // Retention deletes finished runs (with their journals) and nothing else.
    store.send_signal(&ids[0], "x", json!(1)).await.unwrap();
    let deleted = store
        .delete_finished_runs(now_ms() + 1_000, 100)
        .await
        .unwrap();
    let mut deleted_sorted = deleted.clone();
    deleted_sorted.sort();
    let mut want = ids[..2].to_vec();
    want.sort();
    assert_eq!(deleted_sorted, want);
    assert!(store.get_run(&ids[0]).await.unwrap().is_none());
    assert!(store.journal(&ids[0]).await.unwrap().is_empty());
    assert_eq!(store.search_runs(&RunQuery::new()).await.unwrap().len(), 4);
    assert!(
        store
            .delete_finished_runs(now_ms() + 1_000, 100)
            .await
            .unwrap()
            .is_empty()
    );

    // Runs by idempotency-key prefix (a schedule's history): exact, case-sensitive, and `%`
    // and `_` are plain characters.
    let mut keyed = Vec::new();
    for key in [
        "schedule:a:1",
        "schedule:ab:1",
        "schedule:a:manual-x",
        "SCHEDULE:a:2",
        "schedule_a:3",
        "schedule:%:4",
    ] {
        let r = store
            .create_run(NewRun::new("even", json!({})).with_idempotency_key(key))
            .await
            .unwrap();
        keyed.push(r.run().id.clone());
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let history = store
        .search_runs(&RunQuery::new().with_idempotency_key_prefix("schedule:a:"))
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        [keyed[2].clone(), keyed[0].clone()],
        "newest first, only keys under the prefix"
    );
    let percent = store
        .search_runs(&RunQuery::new().with_idempotency_key_prefix("schedule:%"))
        .await
        .unwrap();
    assert_eq!(percent.len(), 1);
    let paged = store
        .search_runs(
            &RunQuery::new()
                .with_idempotency_key_prefix("schedule:a")
                .with_target("even")
                .with_page(1, 1),
        )
        .await
        .unwrap();
    assert_eq!(paged.len(), 1);
    assert_eq!(paged[0].id, keyed[1]);
    assert_eq!(store.search_runs(&RunQuery::new()).await.unwrap().len(), 10);

    // Documents: create-only, compare-and-swap, list by prefix with paging, delete.
    let v1 = store
        .doc_put("reg", "agent/a/1", json!({"v": 1}), Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.revision, 1);
    assert!(
        store
            .doc_put("reg", "agent/a/1", json!({"v": 9}), Expect::Absent)
            .await
            .unwrap()
            .is_none(),
        "an existing document is not overwritten by a create"
    );
    assert_eq!(
        store
            .doc_get("reg", "agent/a/1")
            .await
            .unwrap()
            .unwrap()
            .value,
        json!({"v": 1})
    );
    let v2 = store
        .doc_put("reg", "agent/a/1", json!({"v": 2}), Expect::Revision(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2.revision, 2);
    assert_eq!(v2.created_at, v1.created_at);
    assert!(
        store
            .doc_put("reg", "agent/a/1", json!({"v": 3}), Expect::Revision(1))
            .await
            .unwrap()
            .is_none(),
        "a stale revision loses"
    );
    let any = store
        .doc_put("reg", "agent/a/1", json!({"v": 4}), Expect::Any)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(any.revision, 3);
    assert!(
        store
            .doc_put("reg", "missing", json!(1), Expect::Revision(1))
            .await
            .unwrap()
            .is_none()
    );
    for id in [
        "agent/a/2",
        "agent/a/3",
        "agent/b/1",
        "agent/a%/1",
        "agent/A/1",
    ] {
        store
            .doc_put("reg", id, json!(id), Expect::Absent)
            .await
            .unwrap()
            .unwrap();
    }
    store
        .doc_put("other", "agent/a/9", json!(0), Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    // Several writes in one call stop at the first whose expectation fails.
    let written = store
        .doc_put_many(vec![
            DocWrite::new("many", "1", json!(1), Expect::Absent),
            DocWrite::new("many", "2", json!(2), Expect::Absent),
            DocWrite::new("many", "head", json!({"at": 2}), Expect::Absent),
        ])
        .await
        .unwrap();
    assert_eq!(
        written.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "head"]
    );
    let written = store
        .doc_put_many(vec![
            DocWrite::new("many", "3", json!(3), Expect::Absent),
            DocWrite::new("many", "2", json!(22), Expect::Absent),
            DocWrite::new("many", "4", json!(4), Expect::Absent),
            DocWrite::new("many", "head", json!({"at": 4}), Expect::Revision(1)),
        ])
        .await
        .unwrap();
    assert_eq!(written.len(), 1, "stops at `2`, which exists");
    assert_eq!(written[0].id, "3");
    let many = store.doc_list("many", "", None, 10).await.unwrap();
    assert_eq!(
        many.iter()
            .map(|d| (d.id.as_str(), d.value.clone()))
            .collect::<Vec<_>>(),
        [
            ("1", json!(1)),
            ("2", json!(2)),
            ("3", json!(3)),
            ("head", json!({"at": 2}))
        ],
        "nothing after the failed write was stored"
    );
    let written = store
        .doc_put_many(vec![
            DocWrite::new("many", "4", json!(4), Expect::Absent),
            DocWrite::new("many", "head", json!({"at": 4}), Expect::Revision(1)),
        ])
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    assert_eq!(written[1].revision, 2);
    // An update among several writes answers what was stored (SQLite reads `created_at`
    // back instead of using `RETURNING`).
    let head = store.doc_get("many", "head").await.unwrap().unwrap();
    assert_eq!(
        (
            &written[1].value,
            written[1].revision,
            written[1].created_at,
            written[1].updated_at
        ),
        (&head.value, head.revision, head.created_at, head.updated_at)
    );
    // An update of a stale revision among several writes stops there, the writes before it
    // stored.
    let written = store
        .doc_put_many(vec![
            DocWrite::new("many", "5", json!(5), Expect::Absent),
            DocWrite::new("many", "head", json!({"at": 5}), Expect::Revision(1)),
        ])
        .await
        .unwrap();
    assert_eq!(written.len(), 1, "the head is at revision 2");
    let head = store.doc_get("many", "head").await.unwrap().unwrap();
    assert_eq!((head.revision, head.value), (2, json!({"at": 4})));
    assert!(store.doc_put_many(Vec::new()).await.unwrap().is_empty());
    let listed: Vec<String> = store
        .doc_list("reg", "agent/a/", None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, ["agent/a/1", "agent/a/2", "agent/a/3"]);
    let paged: Vec<String> = store
        .doc_list("reg", "agent/a/", Some("agent/a/1"), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(paged, ["agent/a/2"]);
    assert_eq!(store.doc_list("reg", "", None, 100).await.unwrap().len(), 6);
    assert!(
        !store
            .doc_delete("reg", "agent/a/2", Expect::Revision(7))
            .await
            .unwrap()
    );
    assert!(
        !store
            .doc_delete("reg", "agent/a/2", Expect::Absent)
            .await
            .unwrap()
    );
    assert!(
        store
            .doc_delete("reg", "agent/a/2", Expect::Revision(1))
            .await
            .unwrap()
    );
    assert!(store.doc_get("reg", "agent/a/2").await.unwrap().is_none());
    assert!(
        !store
            .doc_delete("reg", "agent/a/2", Expect::Any)
            .await
            .unwrap()
    );
    spend_ledger_suite(store).await;
}

/// Two ledgers on one store (two server processes) charging at once: every charge counts
/// exactly once, and the spent budget refuses.
async fn spend_ledger_suite(store: Arc<dyn Store>) {
    use agentkit_core::config::{BudgetPeriod, BudgetSettings, PeriodBudget};
    use agentkit_runtime::{BudgetRules, SpendLedger};
    let rules = || {
        BudgetRules::new()
            .with_agent("writer", PeriodBudget::new(5.0, BudgetPeriod::Day))
            .with_workspaces(
                BudgetSettings::default()
                    .with_workspace(PeriodBudget::new(100.0, BudgetPeriod::Month)),
            )
    };
    let a = SpendLedger::new(Arc::clone(&store), rules());
    let b = SpendLedger::new(Arc::clone(&store), rules());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let l = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { l.charge_to("acme/prod", "writer", 0.25).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let status = a.status("acme/prod").await.unwrap();
    assert_eq!(status.len(), 2);
    for s in &status {
        assert_eq!((s.spent_usd, s.calls), (5.0, 20), "{s:?}");
    }
    let spent = b
        .exhausted("acme/prod", Some("writer"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(spent.max_spend_usd, 5.0);
    assert!(b.exhausted("acme/prod", None).await.unwrap().is_none());
    assert!(
        b.exhausted("acme/dev", Some("writer"))
            .await
            .unwrap()
            .is_none()
    );

    // Twenty runs on two ledgers racing for the last of a budget with held estimates: exactly
    // the budget is spent, never more.
    use agentkit_core::SpendGuard;
    let rules = || {
        BudgetRules::new()
            .with_agent("racer", PeriodBudget::new(1.0, BudgetPeriod::Day))
            .with_call_estimate(0.125)
    };
    let a = SpendLedger::new(Arc::clone(&store), rules());
    let b = SpendLedger::new(Arc::clone(&store), rules());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let l = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let ctx = agentkit_core::RunContext::new()
                    .with_principal(agentkit_core::Principal::new("acme", "race"));
                loop {
                    match l.admit("racer", &ctx).await {
                        Ok(hold) => l.charge(hold, "racer", &ctx, 0.125).await.unwrap(),
                        Err(e) => {
                            assert!(e.is_budget_exceeded(), "{e}");
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = &a.status("acme/race").await.unwrap()[0];
    assert_eq!(
        (s.spent_usd, s.calls, s.reserved_usd),
        (1.0, 8, 0.0),
        "{s:?}"
    );
}

#[tokio::test]
async fn memory_store_passes_the_search_and_docs_suite() {
    search_and_docs_suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn sqlite_store_passes_the_search_and_docs_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
    search_and_docs_suite(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_passes_the_search_and_docs_suite() {
    let pg = common::Pg::start();
    let url = pg.fresh_db("search_docs").await;
    let store = agentkit_runtime::PostgresStore::connect(&url)
        .await
        .unwrap();
    search_and_docs_suite(Arc::new(store.clone())).await;
    store.pool().close().await;
}

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_store_passes_the_suite_and_keeps_data_across_reconnect() {
    use agentkit_runtime::PostgresStore;
    let pg = common::Pg::start();
    // A fresh database per test run, so the suite starts empty even on a shared server.
    let url = pg.fresh_db("suite").await;
    let store = PostgresStore::connect(&url).await.unwrap();
    suite(Arc::new(store.clone())).await;
    let before = store.list_runs(&ALL_STATUSES, 100).await.unwrap();
    store.pool().close().await;
    let again = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(again.list_runs(&ALL_STATUSES, 100).await.unwrap(), before);
    again.pool().close().await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_connect_failure_says_what_to_check() {
    let err = agentkit_runtime::PostgresStore::connect("postgres://nobody@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("postgres store: connecting"),
        "{err}"
    );
}

#[tokio::test]
async fn memory_store_passes_the_suite() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn sqlite_in_memory_store_passes_the_suite() {
    suite(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
}

#[tokio::test]
async fn sqlite_file_store_passes_the_suite_and_keeps_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).await.unwrap();
    suite(Arc::new(store.clone())).await;
    let before = store.list_runs(&ALL_STATUSES, 100).await.unwrap();
    store.close().await;
    // Reopening runs the migrations again (a no-op) and sees the same data.
    let reopened = SqliteStore::open(&path).await.unwrap();
    let after = reopened.list_runs(&ALL_STATUSES, 100).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(after.len(), 13);
    let mode: String = sqlx_mode(&reopened).await;
    assert_eq!(mode, "wal");
}

async fn sqlx_mode(store: &SqliteStore) -> String {
    use sqlx::Row;
    sqlx::query("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get::<String, _>(0)
}

#[tokio::test]
async fn sqlite_open_in_a_missing_directory_names_the_file() {
    let err = SqliteStore::open("/nonexistent-dir-agentkit/x.db")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir-agentkit/x.db"),
        "{err}"
    );
}
