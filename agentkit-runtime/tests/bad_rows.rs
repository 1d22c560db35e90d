//! Nothing read back from the store makes the runtime panic: rows written by hand, by a
//! newer agentkit or by a corrupted disk give clear errors. Arbitrary values (any SQLite type,
//! any text, integers at the edges) are written straight into a SQLite store's tables, then
//! read through the store and the runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agentkit_runtime::model::ALL_STATUSES;
use agentkit_runtime::{
    JournalEntry, JournalStore, KvStore, LeaseStore, RunStore, Runtime, SignalStore, SqliteStore,
};
use proptest::prelude::*;

/// One SQLite value of any storage class.
#[derive(Debug, Clone)]
enum Sql {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

fn sql() -> impl Strategy<Value = Sql> {
    prop_oneof![
        Just(Sql::Null),
        any::<i64>().prop_map(Sql::Int),
        prop_oneof![Just(i64::MIN), Just(-1i64), Just(0i64), Just(i64::MAX)].prop_map(Sql::Int),
        any::<f64>().prop_map(Sql::Real),
        any::<String>().prop_map(Sql::Text),
        prop_oneof![
            Just("null"),
            Just("{}"),
            Just("\"x\""),
            Just("queued"),
            Just("running"),
            Just("waiting_input"),
            Just("{\"input_tokens\":1,\"output_tokens\":1}"),
            Just("1e999"),
        ]
        .prop_map(|s| Sql::Text(s.to_owned())),
    ]
}

fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    v: &Sql,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    match v {
        Sql::Null => q.bind(None::<i64>),
        Sql::Int(i) => q.bind(*i),
        Sql::Real(f) => q.bind(*f),
        Sql::Text(s) => q.bind(s.clone()),
    }
}

/// Insert `values` into `table` (columns `cols`), ignoring CHECK constraints; false when
/// SQLite refuses the row (NOT NULL, foreign key).
async fn insert(store: &SqliteStore, table: &str, cols: &[&str], values: &[Sql]) -> bool {
    let marks = vec!["?"; cols.len()].join(", ");
    let sql = format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for v in values {
        q = bind(q, v);
    }
    q.execute(store.pool()).await.is_ok()
}

const RUN_COLS: [&str; 15] = [
    "target",
    "version",
    "input",
    "status",
    "attempts",
    "idempotency_key",
    "created_at",
    "updated_at",
    "output",
    "error",
    "usage",
    "cost_usd",
    "owner",
    "lease_until",
    "wake_at",
];
const JOURNAL_COLS: [&str; 7] = [
    "seq",
    "kind",
    "value",
    "latency_ms",
    "usage",
    "cost_usd",
    "created_at",
];

async fn read_everything(run: Vec<Sql>, journal: Vec<Sql>, signal: Sql, kv: Vec<Sql>) {
    let store = SqliteStore::in_memory().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(store.pool())
        .await
        .unwrap();
    let mut cols = vec!["id"];
    cols.extend(RUN_COLS);
    let mut values = vec![Sql::Text("r".into())];
    values.extend(run);
    insert(&store, "runs", &cols, &values).await;
    let mut cols = vec!["run_id", "key"];
    cols.extend(JOURNAL_COLS);
    let mut values = vec![Sql::Text("r".into()), Sql::Text("step/a".into())];
    values.extend(journal);
    insert(&store, "journal", &cols, &values).await;
    insert(
        &store,
        "signals",
        &["run_id", "name", "payload", "created_at"],
        &[
            Sql::Text("r".into()),
            Sql::Text("go".into()),
            signal,
            Sql::Int(0),
        ],
    )
    .await;
    let mut values = vec![Sql::Text("ns".into()), Sql::Text("k".into())];
    values.extend(kv);
    insert(
        &store,
        "kv",
        &["namespace", "key", "value", "expires_at"],
        &values,
    )
    .await;

    // The store: every read answers (a value or an error), none panics.
    let _ = store.get_run("r").await;
    let _ = store.list_runs(&ALL_STATUSES, 10).await;
    let _ = store.journal("r").await;
    let _ = store.kv_get("ns", "k").await;
    let _ = store.kv_delete("ns", "k").await;
    let _ = store.has_signal("r", "go").await;
    let _ = store
        .take_signal(
            "r",
            "go",
            JournalEntry::new("r", 9, "signal/go", serde_json::Value::Null),
        )
        .await;
    let _ = store.claim("r", "node", i64::MAX).await;

    // The runtime on top: recovery, status, replay, signals.
    let rt = Runtime::new(Arc::new(store));
    let _ = rt.recover().await;
    let _ = rt.get("r").await;
    let _ = rt.replay("r").await;
    let _ = rt.signal("r", "go", serde_json::json!(1)).await;
    let _ = rt.fire_due().await;
    rt.shutdown(Duration::from_secs(5)).await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_stored_values_never_panic(
        run in proptest::collection::vec(sql(), RUN_COLS.len()),
        journal in proptest::collection::vec(sql(), JOURNAL_COLS.len()),
        signal in sql(),
        kv in proptest::collection::vec(sql(), 2),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(read_everything(run, journal, signal, kv));
    }
}

/// The errors say which run and which column is wrong.
#[tokio::test]
async fn a_negative_attempt_count_is_a_clear_error() {
    let store = SqliteStore::in_memory().await.unwrap();
    let mut cols = vec!["id"];
    cols.extend(RUN_COLS);
    let values = [
        Sql::Text("r".into()),
        Sql::Text("t".into()),
        Sql::Int(1),
        Sql::Text("null".into()),
        Sql::Text("queued".into()),
        Sql::Int(-5),
        Sql::Null,
        Sql::Int(0),
        Sql::Int(0),
        Sql::Null,
        Sql::Null,
        Sql::Text("{}".into()),
        Sql::Real(0.0),
        Sql::Null,
        Sql::Null,
        Sql::Null,
    ];
    assert!(insert(&store, "runs", &cols, &values).await);
    let err = store.get_run("r").await.unwrap_err().to_string();
    assert_eq!(
        err,
        "sqlite store: reading run r: column `attempts` is -5, out of range for u32"
    );
    let err = Runtime::new(Arc::new(store)).recover().await.unwrap_err();
    assert!(err.to_string().contains("column `attempts`"), "{err}");
}
