//! Governance routes: the audit log (`GET /v1/audit`, JSON or CSV, and
//! `GET /v1/audit/verify`) and the approval queue (`GET /v1/approvals`; claim and decide one
//! call with `/v1/approvals/{run_id}/{call_id}/claim|approve|reject`, or every pending call of
//! a run with `/v1/runs/{run_id}/approve|reject`).

use agentkit_core::policy::AuditEntry;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, AppState, Json, Path, Problem, Query};
use crate::policy::{ApprovalView, CSV_HEADER, StoreAudit, csv_line};
use crate::tenancy::Caller;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list_audit))
        .route("/v1/audit/verify", get(verify_audit))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/budgets", get(list_budgets))
        .route(
            "/v1/approvals/{run_id}/{call_id}/claim",
            axum::routing::post(claim_approval),
        )
        .route(
            "/v1/approvals/{run_id}/{call_id}/approve",
            axum::routing::post(approve_call),
        )
        .route(
            "/v1/approvals/{run_id}/{call_id}/reject",
            axum::routing::post(reject_call),
        )
}

fn audit(s: &AppState) -> &StoreAudit {
    &s.audit
}

/// The workspace (`org/workspace`) a request reads: the caller's own, or with `?workspace=`
/// another one for the server's admin key. Any other workspace answers 404, like one that
/// does not exist.
fn workspace_for(caller: &Caller, asked: Option<String>) -> Result<String, Problem> {
    let own = caller.workspace.to_string();
    match asked {
        None => Ok(own),
        Some(w) if w == own || caller.super_admin => Ok(w),
        Some(w) => Err(Problem::not_found(format!(
            "no workspace `{w}`; a key reads its own workspace's log (`{own}`): leave out \
             `workspace`"
        ))),
    }
}

/// Which audit entries to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// The workspace whose chain to read, `org/workspace` (default: the caller's own; another
    /// one only with the server's admin key).
    pub workspace: Option<String>,
    /// Only entries after this position.
    pub after: Option<u64>,
    /// At most this many entries (default 100, at most 10000).
    pub limit: Option<usize>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The workspace.
    pub workspace: String,
    /// Entries, oldest first.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<AuditEntry>,
    /// The position to pass as `after` for the next page, when there may be more.
    pub next_after: Option<u64>,
}

/// The audit log of policy decisions (allowed, denied, approval requested, approved,
/// rejected), hash-chained per workspace; `?format=csv` exports CSV.
#[utoipa::path(get, path = "/v1/audit", tag = "governance", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem)))]
pub async fn list_audit(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Response> {
    let workspace = workspace_for(&caller, q.workspace)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "`limit` must be between 1 and 10000, found {limit}"
        )));
    }
    let entries = audit(&s)
        .entries(&workspace, q.after.unwrap_or(0), limit)
        .await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => {
            let next_after = (entries.len() == limit)
                .then(|| entries.last().map(|e| e.seq))
                .flatten();
            Ok(Json(AuditPage {
                workspace,
                entries,
                next_after,
            })
            .into_response())
        }
        "csv" => {
            let mut body = String::from(CSV_HEADER);
            body.push_str("\r\n");
            for e in &entries {
                body.push_str(&csv_line(e));
                body.push_str("\r\n");
            }
            Ok((
                [(http::header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                body,
            )
                .into_response())
        }
        other => Err(Problem::bad_request(format!(
            "unknown format `{other}`; use `json` or `csv`"
        ))),
    }
}

/// Which workspace's chain to verify.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    /// The workspace, `org/workspace` (default: the caller's own; another one only with the
    /// server's admin key).
    pub workspace: Option<String>,
}

/// The outcome of verifying an audit chain.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyView {
    /// The workspace.
    pub workspace: String,
    /// Whether every entry verifies.
    pub ok: bool,
    /// Entries checked (when ok).
    pub entries: u64,
    /// Where the chain breaks (when not ok).
    pub error: Option<String>,
}

/// Verify a workspace's audit chain: every entry's hash, every link, no gaps.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "governance", params(VerifyQuery),
    responses((status = 200, body = VerifyView)))]
pub async fn verify_audit(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<VerifyQuery>,
) -> ApiResult<Json<VerifyView>> {
    let workspace = workspace_for(&caller, q.workspace)?;
    Ok(Json(match audit(&s).verify(&workspace).await {
        Ok(n) => VerifyView {
            workspace,
            ok: true,
            entries: n,
            error: None,
        },
        Err(e)
            if e.is_invalid_request() || matches!(e, agentkit_core::Error::InvalidState { .. }) =>
        {
            VerifyView {
                workspace,
                ok: false,
                entries: 0,
                error: Some(e.to_string()),
            }
        }
        Err(e) => return Err(e.into()),
    }))
}

/// Which approvals to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// `pending` (default), `approved`, `rejected`, `cancelled` (withdrawn because the run
    /// ended first) or `all`.
    pub status: Option<String>,
    /// The workspace, `org/workspace` (default: the caller's own; with the server's admin key
    /// another one, or every workspace's when left out).
    pub workspace: Option<String>,
}

/// Tool calls waiting for a human (or decided), with the tool history that triggered the
/// rule; decide one with `POST /v1/approvals/{run_id}/{call_id}/approve` or `/reject`, or
/// every pending call of a run with `POST /v1/runs/{run_id}/approve` or `/reject`.
#[utoipa::path(get, path = "/v1/approvals", tag = "governance", params(ApprovalsQuery),
    responses((status = 200, body = Vec<ApprovalView>), (status = 400, body = Problem)))]
pub async fn list_approvals(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<ApprovalsQuery>,
) -> ApiResult<Json<Vec<ApprovalView>>> {
    let workspace = match q.workspace {
        None if caller.super_admin => None,
        asked => Some(workspace_for(&caller, asked)?),
    };
    let status = match q.status.as_deref().unwrap_or("pending") {
        "all" => None,
        s @ ("pending" | "approved" | "rejected" | "cancelled") => Some(s),
        other => {
            return Err(Problem::bad_request(format!(
                "unknown status `{other}`; use pending, approved, rejected, cancelled or all"
            )));
        }
    };
    Ok(Json(
        audit(&s).approvals(status, workspace.as_deref()).await?,
    ))
}

/// Claim a pending approval for a while (`server.approvals.claim_for`, default 15 minutes):
/// until the claim lapses only its holder (or the server's admin key) may approve or reject
/// it. Claiming again extends one's own claim.
#[utoipa::path(post, path = "/v1/approvals/{run_id}/{call_id}/claim", tag = "governance",
    params(("run_id" = String, Path, description = "run id"),
           ("call_id" = String, Path, description = "the tool call's id")),
    responses((status = 200, body = ApprovalView), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn claim_approval(
    State(s): State<AppState>,
    caller: Caller,
    Path((run_id, call_id)): Path<(String, String)>,
) -> ApiResult<Json<ApprovalView>> {
    s.platform.run_in(&caller.scope(), &run_id).await?;
    let by = caller.key_id.clone().unwrap_or_else(|| "admin".to_owned());
    let until = agentkit_runtime::model::now_ms()
        .saturating_add(i64::try_from(s.claim_for.as_millis()).unwrap_or(i64::MAX));
    let claimed = audit(&s).claim(&run_id, &call_id, &by, until).await?;
    let workspace = crate::tenancy::WorkspaceId::parse(&claimed.workspace, "default")
        .unwrap_or_else(|_| caller.workspace.clone());
    s.audit_change(
        &caller,
        &workspace,
        "approvals.claim",
        &call_id,
        serde_json::json!({"run_id": run_id, "claimed_until": until}),
    )
    .await?;
    Ok(Json(claimed))
}

/// One budget of the workspace in its current period.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetView {
    /// `workspace` (the whole workspace) or `agent`.
    pub scope: String,
    /// The agent, for an agent's budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The budget per period, in US dollars.
    pub max_spend_usd: f64,
    /// Spent this period.
    pub spent_usd: f64,
    /// Left this period (never below 0), not counting `reserved_usd`.
    pub remaining_usd: f64,
    /// Set aside for model calls in flight (their estimated cost, until they return or their
    /// hold expires).
    pub reserved_usd: f64,
    /// What the next model call is expected to cost (an agent's budget: the most one of its
    /// recent calls cost; the workspace's: the least such estimate among its agents; at least
    /// `budgets.call_estimate_usd`). A call is admitted only while `spent_usd + reserved_usd`
    /// plus its estimate stays within `max_spend_usd`.
    pub next_call_usd: f64,
    /// Model calls charged this period.
    pub calls: u64,
    /// Whether it has too little left for the next call (`spent_usd + next_call_usd` passes
    /// `max_spend_usd`): runs it applies to are refused (429) and stop before their next
    /// model call until `period_end`.
    pub exhausted: bool,
    /// `hour`, `day`, `week`, `month` (UTC calendar periods) or a fixed window (`30m`).
    pub period: String,
    /// When this period started (RFC 3339, UTC).
    pub period_start: String,
    /// When it ends and the budget starts over (RFC 3339, UTC).
    pub period_end: String,
}

/// The caller's workspace budgets.
#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetsView {
    /// The workspace.
    pub workspace: String,
    /// Its budgets: the workspace's (`budgets:` of `agentkit.yaml`), then each agent's
    /// (`limits.budget`).
    pub budgets: Vec<BudgetView>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Whose budgets to read.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BudgetsQuery {
    /// The workspace, `org/workspace` (default: the caller's own; another one only with the
    /// server's admin key).
    pub workspace: Option<String>,
}

/// What the caller's workspace may spend and has spent this period, per budget (the
/// workspace's and each agent's). Empty when no budget is configured.
#[utoipa::path(get, path = "/v1/budgets", tag = "governance", params(BudgetsQuery),
    responses((status = 200, body = BudgetsView), (status = 404, body = Problem)))]
pub async fn list_budgets(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<BudgetsQuery>,
) -> ApiResult<Json<BudgetsView>> {
    let workspace = workspace_for(&caller, q.workspace)?;
    let statuses = match s.platform.budgets.get() {
        Some(ledger) => ledger.status(&workspace).await?,
        None => Vec::new(),
    };
    let budgets = statuses
        .into_iter()
        .map(|b| {
            let (scope, agent) = match &b.scope {
                agentkit_runtime::BudgetScope::Agent(a) => ("agent", Some(a.clone())),
                _ => ("workspace", None),
            };
            BudgetView {
                scope: scope.to_owned(),
                agent,
                max_spend_usd: b.max_spend_usd,
                spent_usd: b.spent_usd,
                remaining_usd: b.remaining_usd,
                reserved_usd: b.reserved_usd,
                next_call_usd: b.next_call_usd,
                calls: b.calls,
                exhausted: b.is_exhausted(),
                period: b.period.clone(),
                period_start: rfc3339(b.period_start),
                period_end: rfc3339(b.period_end),
            }
        })
        .collect();
    Ok(Json(BudgetsView { workspace, budgets }))
}

/// Approve one tool call waiting for approval: only that call resumes (another call of the
/// same run that waits stays pending). A claim by someone else is a 409 (the server's admin
/// key overrides it), so is a call that is not pending.
#[utoipa::path(post, path = "/v1/approvals/{run_id}/{call_id}/approve", tag = "governance",
    params(("run_id" = String, Path, description = "run id"),
           ("call_id" = String, Path, description = "the tool call's id")),
    request_body = super::v1::Reason,
    responses((status = 200, body = crate::platform::RunView), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn approve_call(
    State(s): State<AppState>,
    caller: Caller,
    Path((run_id, call_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<crate::platform::RunView>> {
    decide_one(&s, &caller, &run_id, &call_id, true, &body).await
}

/// Reject one tool call waiting for approval, with a reason the model reads (`{"reason"}`);
/// the run's other waiting calls stay pending.
#[utoipa::path(post, path = "/v1/approvals/{run_id}/{call_id}/reject", tag = "governance",
    params(("run_id" = String, Path, description = "run id"),
           ("call_id" = String, Path, description = "the tool call's id")),
    request_body = super::v1::Reason,
    responses((status = 200, body = crate::platform::RunView), (status = 404, body = Problem),
              (status = 409, body = Problem)))]
pub async fn reject_call(
    State(s): State<AppState>,
    caller: Caller,
    Path((run_id, call_id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<crate::platform::RunView>> {
    decide_one(&s, &caller, &run_id, &call_id, false, &body).await
}

async fn decide_one(
    s: &AppState,
    caller: &Caller,
    run_id: &str,
    call_id: &str,
    approved: bool,
    body: &[u8],
) -> ApiResult<Json<crate::platform::RunView>> {
    let reason = super::v1::optional_json::<super::v1::Reason>(body)?.reason;
    let by = super::v1::decider(caller);
    super::v1::decide_call(s, caller, run_id, Some(call_id), approved, reason, &by).await
}
