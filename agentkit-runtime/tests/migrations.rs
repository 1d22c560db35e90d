//! Databases created by the earlier hand-written migration runner (bookkeeping table
//! `agentkit_migrations`) keep working under `sqlx::migrate!`: their data is kept, the
//! migrations they had are not applied again, and the ones they lacked are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agentkit_runtime::RunStatus;
use agentkit_runtime::model::ALL_STATUSES;
use agentkit_runtime::{EntryKind, NewRun, RunStore, RunUpdate, SqliteStore, Store};
use serde_json::json;
use sqlx::Row;

/// The SQLite migration files, in order: the earlier runner ran the same statements.
const SQLITE: [&str; 4] = [
    include_str!("../migrations/sqlite/0001_runs_journal_signals.sql"),
    include_str!("../migrations/sqlite/0002_run_leases.sql"),
    include_str!("../migrations/sqlite/0003_kv.sql"),
    include_str!("../migrations/sqlite/0004_parked_runs.sql"),
];

/// `(version, execution_time)` of every migration sqlx recorded; adopted ones have -1.
async fn recorded<'c, E>(conn: E) -> Vec<(i64, i64)>
where
    E: sqlx::Executor<'c>,
    for<'r> i64: sqlx::Decode<'r, E::Database> + sqlx::Type<E::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<<E::Database as sqlx::Database>::Row>,
    <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
{
    sqlx::query("SELECT version, execution_time FROM agentkit_sqlx_migrations ORDER BY version")
        .fetch_all(conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("version"), r.get("execution_time")))
        .collect()
}

/// What the earlier runner left after the first `applied` of `migrations`: its bookkeeping
/// table (`int`: the backend's integer type) and rows, the migrations' tables, and one run
/// with one journal entry in them (tables named with `prefix`).
fn legacy_script(migrations: &[&str], applied: usize, int: &str, prefix: &str) -> String {
    let mut sql = format!(
        "CREATE TABLE agentkit_migrations (version {int} PRIMARY KEY, applied_at {int} NOT NULL);\n"
    );
    for (i, m) in migrations.iter().take(applied).enumerate() {
        sql.push_str(m);
        sql.push_str(&format!(
            "INSERT INTO agentkit_migrations (version, applied_at) VALUES ({}, 1);\n",
            i + 1
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO {prefix}runs (id, target, version, input, status, attempts, created_at,
            updated_at, usage, cost_usd) VALUES ('old-run', 'agent', 1, '\"hi\"', 'succeeded',
            1, 10, 20, '{{\"input_tokens\":0,\"output_tokens\":0}}', 0.5);
         INSERT INTO {prefix}journal (run_id, seq, key, kind, value, latency_ms, usage,
            cost_usd, created_at) VALUES ('old-run', 0, 'step/a', 'step', '42', 3,
            '{{\"input_tokens\":0,\"output_tokens\":0}}', 0, 15);"
    ));
    sql
}

/// The run and journal entry of [`legacy_script`] are still there, and a run can be parked
/// (the `wake_at` column of the last migration exists).
async fn data_kept_and_parking_works(store: &dyn Store) {
    let old = store.get_run("old-run").await.unwrap().unwrap();
    assert_eq!(old.status, RunStatus::Succeeded);
    assert_eq!(old.input, json!("hi"));
    let journal = store.journal("old-run").await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].kind, EntryKind::Step);
    assert_eq!(journal[0].value, json!(42));
    let new = store
        .create_run(NewRun::new("agent", json!(1)))
        .await
        .unwrap();
    let parked = store
        .transition(
            &new.run().id,
            &[RunStatus::Queued],
            RunUpdate::new(RunStatus::Queued).with_wake_at(99),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(parked.wake_at, Some(99));
    // A row written before the `waiting_for` column has none; a waiting run stores its own.
    assert_eq!(old.waiting_for, None);
    let waiting = store
        .transition(
            &new.run().id,
            &[RunStatus::Queued],
            RunUpdate::new(RunStatus::WaitingInput).with_waiting_for(["human_input"]),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waiting.waiting_for, Some(vec!["human_input".to_owned()]));
    let read = store.get_run(&new.run().id).await.unwrap().unwrap();
    assert_eq!(read.waiting_for, waiting.waiting_for);
}

/// A SQLite file as the earlier runner left it after `applied` migrations.
async fn legacy_sqlite(path: &std::path::Path, applied: usize) {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let script = legacy_script(&SQLITE, applied, "INTEGER", "");
    sqlx::raw_sql(sqlx::AssertSqlSafe(script))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn sqlite_database_of_the_earlier_runner_is_adopted_and_completed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    // Versions 1-3 applied by the earlier runner; 4 (parked runs) came later.
    legacy_sqlite(&path, 3).await;

    let store = SqliteStore::open(&path).await.unwrap();
    // Adopted versions are recorded, not re-run (sqlx marks them -1); versions 4 and 5 (the
    // server's documents) were applied.
    let rec = recorded(store.pool()).await;
    assert_eq!(
        rec.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(rec[..3].iter().all(|r| r.1 == -1), "{rec:?}");
    assert!(rec[3..].iter().all(|r| r.1 >= 0), "{rec:?}");
    data_kept_and_parking_works(&store).await;
    store.close().await;

    // Opening again changes nothing.
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(recorded(again.pool()).await, rec);
    assert_eq!(again.list_runs(&ALL_STATUSES, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_fully_migrated_database_of_the_earlier_runner_applies_only_what_came_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    legacy_sqlite(&path, SQLITE.len()).await;
    let store = SqliteStore::open(&path).await.unwrap();
    let rec = recorded(store.pool()).await;
    // Everything the earlier runner applied is adopted; only versions 5 and 6 (documents,
    // run waits: added after that runner was replaced) run.
    assert_eq!(rec[..4], [(1, -1), (2, -1), (3, -1), (4, -1)]);
    assert_eq!(
        rec.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(rec[4..].iter().all(|r| r.1 >= 0), "{rec:?}");
    assert!(store.get_run("old-run").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_database_of_a_newer_runner_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    legacy_sqlite(&path, SQLITE.len()).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql("INSERT INTO agentkit_migrations (version, applied_at) VALUES (99, 1)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let err = SqliteStore::open(&path).await.unwrap_err().to_string();
    assert!(err.contains("version 99"), "{err}");
    assert!(err.contains("upgrade agentkit"), "{err}");
}

#[cfg(feature = "postgres")]
mod common;

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use agentkit_runtime::PostgresStore;

    const POSTGRES: [&str; 3] = [
        include_str!("../migrations/postgres/0001_runs_journal_signals.sql"),
        include_str!("../migrations/postgres/0002_kv.sql"),
        include_str!("../migrations/postgres/0003_parked_runs.sql"),
    ];

    /// A database as the earlier runner left it after `applied` migrations.
    async fn legacy(url: &str, applied: usize) {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let script = legacy_script(&POSTGRES, applied, "BIGINT", "agentkit_");
        sqlx::raw_sql(sqlx::AssertSqlSafe(script))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_database_of_the_earlier_runner_is_adopted_by_nodes_starting_at_once() {
        let pg = common::Pg::start();
        let url = pg.fresh_db("legacy").await;
        // Versions 1-2 applied by the earlier runner; 3 (parked runs) came later.
        legacy(&url, 2).await;

        // Four nodes start at once: adoption and the remaining migration happen once.
        let nodes = futures::future::join_all((0..4).map(|_| PostgresStore::connect(&url))).await;
        let nodes: Vec<PostgresStore> = nodes.into_iter().map(Result::unwrap).collect();
        let store = &nodes[0];
        let rec = recorded(store.pool()).await;
        assert_eq!(rec.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert!(rec[..2].iter().all(|r| r.1 == -1), "{rec:?}");
        assert!(rec[2..].iter().all(|r| r.1 >= 0), "{rec:?}");

        data_kept_and_parking_works(store).await;
        for n in &nodes {
            n.pool().close().await;
        }
        let again = PostgresStore::connect(&url).await.unwrap();
        assert_eq!(recorded(again.pool()).await, rec);
        again.pool().close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_fresh_database_is_migrated_once_by_nodes_starting_at_once() {
        let pg = common::Pg::start();
        let url = pg.fresh_db("fresh").await;
        let nodes = futures::future::join_all((0..4).map(|_| PostgresStore::connect(&url))).await;
        let nodes: Vec<PostgresStore> = nodes.into_iter().map(Result::unwrap).collect();
        let rec = recorded(nodes[0].pool()).await;
        assert_eq!(rec.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert!(rec.iter().all(|r| r.1 >= 0), "{rec:?}");
        for n in &nodes {
            n.pool().close().await;
        }
    }
}

/// Processes that open a fresh file at the same moment (a server and a CLI, or a test and its
/// child) take turns: every one opens it, and each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_fresh_file_opened_by_several_stores_at_once_is_migrated_once() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("fresh-{round}.db"));
        let opens = (0..6).map(|_| {
            let path = path.clone();
            tokio::spawn(async move { SqliteStore::open(&path).await })
        });
        let stores: Vec<SqliteStore> = futures::future::join_all(opens)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap())
            .collect();
        let rec = recorded(stores[0].pool()).await;
        assert_eq!(
            rec.iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6],
            "round {round}"
        );
        for s in &stores {
            s.close().await;
        }
    }
}
