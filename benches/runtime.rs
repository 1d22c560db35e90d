//! agentkit-runtime: journal append throughput on SQLite (batched and one entry per
//! transaction), and one agent run through the durable executor on SQLite next to the same
//! agent called directly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agentkit::core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CompletionResponse, Message, RunContext,
    ScriptedProvider, StartOptions, StopReason, Usage,
};
use agentkit::runtime::{
    JournalEntry, JournalStore, NewRun, RunStore, Runtime, SqliteStore, TargetOptions,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const BATCH: u64 = 1000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn entry(run: &str, seq: u64) -> JournalEntry {
    JournalEntry::new(
        run,
        seq,
        format!("agent/tool/{seq}/call_{seq}"),
        json!({"content": [{"type": "text", "text": "18°C and sunny in Lisbon"}], "is_error": false}),
    )
    .with_latency_ms(3)
}

fn journal_append(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open(dir.path().join("bench.db")))
        .unwrap();
    let run = rt
        .block_on(store.create_run(NewRun::new("bench", json!(null))))
        .unwrap()
        .run()
        .id
        .clone();
    let seq = AtomicU64::new(0);

    let mut g = c.benchmark_group("journal_append_sqlite");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("batched_1000", |b| {
        b.to_async(&rt).iter_batched(
            || {
                let start = seq.fetch_add(BATCH, Ordering::Relaxed);
                (start..start + BATCH)
                    .map(|s| entry(&run, s))
                    .collect::<Vec<_>>()
            },
            |batch| {
                let store = &store;
                async move { store.append(&batch).await.unwrap() }
            },
            BatchSize::SmallInput,
        );
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_per_transaction", |b| {
        b.to_async(&rt).iter_batched(
            || entry(&run, seq.fetch_add(1, Ordering::Relaxed)),
            |e| {
                let store = &store;
                async move { store.append(std::slice::from_ref(&e)).await.unwrap() }
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

fn agent() -> Arc<dyn AugmentedLlm> {
    let model = ScriptedProvider::from_fn(|_| {
        Ok(CompletionResponse::new(
            Message::assistant("Hello!"),
            Usage::new(10, 2),
            StopReason::EndTurn,
            "scripted",
        ))
    })
    .without_recording();
    Arc::new(AgentLlm::new(Agent::new("greeter", "Greet."), model))
}

fn executor_overhead(c: &mut Criterion) {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open(dir.path().join("exec.db")))
        .unwrap();
    let runtime = Runtime::new(Arc::new(store));
    runtime.register_agent("greeter", agent, TargetOptions::new());

    let mut g = c.benchmark_group("agent_run");
    g.bench_function("direct", |b| {
        b.to_async(&rt).iter(|| async {
            let a = agent();
            black_box(a.generate_str("hi", &RunContext::new()).await.unwrap())
        });
    });
    g.bench_function("durable_executor_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            let run = runtime
                .run_sync("greeter", json!("hi"), StartOptions::new())
                .await
                .unwrap();
            black_box(run.output)
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = journal_append, executor_overhead
}
criterion_main!(benches);
