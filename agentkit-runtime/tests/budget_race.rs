//! Budgets under a race: many runs in two "processes" (two stores on one SQLite file) keep
//! asking to spend on the last of a budget; with holds, spend never passes the budget while
//! calls cost at most their estimate, and the budget is used up.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(feature = "sqlite")]

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::config::{BudgetPeriod, BudgetSettings, PeriodBudget};
use agentkit_core::{Principal, RunContext, SpendGuard};
use agentkit_runtime::{BudgetRules, SpendLedger, SqliteStore};

const TASKS: usize = 20;

/// Runs `TASKS` racing "runs", alternating between two ledgers over two connections to one
/// SQLite file; each call costs `cost(task, call)`. Returns (spent, calls, refusals).
async fn race(rules: BudgetRules, cost: fn(usize, usize) -> f64) -> (f64, u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let a = SpendLedger::new(
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        rules.clone(),
    );
    let b = SpendLedger::new(Arc::new(SqliteStore::open(&path).await.unwrap()), rules);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let ledger = if t % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let ctx = RunContext::new()
                    .with_run_id(format!("run-{t}"))
                    .with_principal(Principal::new("acme", "prod"));
                let mut call = 0;
                loop {
                    match ledger.admit("writer", &ctx).await {
                        Ok(hold) => {
                            // The model call.
                            tokio::time::sleep(Duration::from_millis(1 + (t % 3) as u64)).await;
                            ledger
                                .charge(hold, "writer", &ctx, cost(t, call))
                                .await
                                .unwrap();
                            call += 1;
                        }
                        Err(e) => {
                            assert!(e.is_budget_exceeded(), "{e}");
                            assert!(e.to_string().contains("budget of"), "{e}");
                            return 1usize;
                        }
                    }
                }
            })
        })
        .collect();
    let mut refused = 0;
    for t in tasks {
        refused += t.await.unwrap();
    }
    let status = a.status("acme/prod").await.unwrap();
    let spent = status[0].spent_usd;
    // Every hold was settled: nothing stays set aside.
    for s in &status {
        assert!(s.reserved_usd.abs() < 1e-12, "{s:?}");
    }
    (spent, status[0].calls, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_racing_runs_never_pass_the_budget_when_calls_cost_their_estimate() {
    let rules = BudgetRules::new()
        .with_agent("writer", PeriodBudget::new(0.5, BudgetPeriod::Day))
        .with_call_estimate(0.01);
    let (spent, calls, refused) = race(rules, |_, _| 0.01).await;
    assert_eq!(refused, TASKS, "every run ended on the budget");
    assert!(
        spent <= 0.5 + 1e-9,
        "spent ${spent} of $0.50 in {calls} calls"
    );
    assert!(
        spent >= 0.5 - 0.01 - 1e-9,
        "the budget was used up: ${spent}"
    );
    assert_eq!(calls, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_runs_with_varying_costs_stay_within_budget_and_workspace_budget() {
    // Costs vary between 0.2 and 1 cent; the estimate is the dearest recent call (here
    // seeded by `call_estimate_usd`), so no call costs more than held.
    let rules = BudgetRules::new()
        .with_agent("writer", PeriodBudget::new(0.4, BudgetPeriod::Day))
        .with_workspaces(
            BudgetSettings::default()
                .with_workspace(PeriodBudget::new(0.3, BudgetPeriod::Hour))
                .with_call_estimate(0.01),
        );
    let (spent, calls, refused) =
        race(rules, |t, c| 0.002 + ((t * 7 + c * 3) % 9) as f64 * 0.001).await;
    assert_eq!(refused, TASKS);
    // The workspace's $0.30 is the tighter budget.
    assert!(
        spent <= 0.3 + 1e-9,
        "spent ${spent} of $0.30 in {calls} calls"
    );
    assert!(
        spent >= 0.3 - 0.01 - 1e-9,
        "the budget was used up: ${spent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_holds_history_the_overshoot_stays_within_the_documented_bound() {
    // No `call_estimate_usd`: an agent's first calls of a fresh ledger are held at $0 (they
    // have no history), so only those can pass the budget, by at most one call each.
    let rules = BudgetRules::new().with_agent("writer", PeriodBudget::new(0.05, BudgetPeriod::Day));
    let (spent, calls, refused) = race(rules, |_, _| 0.01).await;
    assert_eq!(refused, TASKS);
    assert!(
        spent <= 0.05 + TASKS as f64 * 0.01 + 1e-9,
        "spent ${spent} in {calls} calls"
    );
}
