//! `/v1/keys` and `/v1/workspaces`: API keys (create, list, revoke) and workspaces.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, AppState, Json, Path, Problem, Query};
use crate::tenancy::{ApiKey, Caller, CreatedKey, Role, Workspace, WorkspaceId};

/// The tenancy routes (authenticated; `admin` only).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(revoke_key))
        .route(
            "/v1/workspaces",
            get(list_workspaces).post(create_workspace),
        )
}

/// A key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// What it is for (shown in lists).
    #[serde(default)]
    pub name: String,
    /// What it may do: `viewer`, `invoker`, `operator`, `developer` or `admin` (at most the
    /// creator's own role).
    pub role: Role,
    /// `org/workspace` (default: the caller's). Only the server's admin key may create keys
    /// for another workspace.
    #[serde(default)]
    pub workspace: Option<String>,
    /// When it stops working (ms since epoch).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Or: how many days from now it stops working.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// A policy (a name in `policies:`) every tool call made with the key must pass too, on
    /// top of the agent's or the gateway's own.
    #[serde(default)]
    pub policy: Option<String>,
}

fn not_found_workspace(ws: &WorkspaceId) -> Problem {
    Problem::not_found(format!(
        "no workspace {ws}; list them with `GET /v1/workspaces` (`agentkit workspaces list`)"
    ))
}

/// Create an API key. Its secret is in this answer only: it is stored hashed.
#[utoipa::path(post, path = "/v1/keys", tag = "tenancy", request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKey), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn create_key(
    State(s): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateKeyRequest>,
) -> ApiResult<Response> {
    let ws = match &req.workspace {
        Some(w) => WorkspaceId::parse(w, &caller.workspace.org)?,
        None => caller.workspace.clone(),
    };
    if ws != caller.workspace && !caller.super_admin {
        return Err(not_found_workspace(&ws));
    }
    if !s.workspaces.exists(&ws).await? {
        return Err(not_found_workspace(&ws));
    }
    if !caller.role.allows(req.role) {
        return Err(crate::tenancy::forbidden(&caller, req.role));
    }
    let expires_at = match (req.expires_at, req.expires_in_days) {
        (Some(_), Some(_)) => {
            return Err(Problem::bad_request(
                "give `expires_at` or `expires_in_days`, not both",
            ));
        }
        (Some(t), None) => Some(t),
        (None, Some(d)) => {
            Some(agentkit_runtime::model::now_ms().saturating_add(i64::from(d) * 86_400_000))
        }
        (None, None) => None,
    };
    let by = caller.key_id.clone().unwrap_or_else(|| "admin".into());
    if let Some(p) = &req.policy
        && !s.gatewayops.scoped_policies().knows(p)
    {
        return Err(Problem::bad_request(format!(
            "`policy`: {}",
            s.gatewayops.scoped_policies().unknown(p)
        )));
    }
    let created = s
        .keys
        .create_with_policy(
            &ws,
            &req.name,
            req.role,
            expires_at,
            &by,
            req.policy.as_deref(),
        )
        .await?;
    // The key's id, name and role; never the key itself.
    s.audit_change(
        &caller,
        &ws,
        "keys.create",
        &created.record.id,
        json!({
            "name": created.record.name,
            "role": created.record.role,
            "expires_at": created.record.expires_at,
            "policy": req.policy,
        }),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Which keys to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct KeyFilter {
    /// Only keys of this `org/workspace` (the admin key sees every workspace's keys by
    /// default; other keys only their own workspace's).
    pub workspace: Option<String>,
}

/// The API keys of the caller's workspace (never their secrets).
#[utoipa::path(get, path = "/v1/keys", tag = "tenancy", params(KeyFilter),
    responses((status = 200, body = [ApiKey]), (status = 403, body = Problem)))]
pub async fn list_keys(
    State(s): State<AppState>,
    caller: Caller,
    Query(f): Query<KeyFilter>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    let filter = match &f.workspace {
        Some(w) => Some(WorkspaceId::parse(w, &caller.workspace.org)?),
        None if caller.super_admin => None,
        None => Some(caller.workspace.clone()),
    };
    if let Some(w) = &filter
        && *w != caller.workspace
        && !caller.super_admin
    {
        return Ok(Json(Vec::new()));
    }
    Ok(Json(s.keys.list(filter.as_ref()).await?))
}

/// Revoke a key: it is refused (401) from now on, on every server process.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "tenancy",
    params(("id" = String, Path, description = "the key's id (`ak_<id>_…`)")),
    responses((status = 200, body = ApiKey), (status = 404, body = Problem)))]
pub async fn revoke_key(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApiKey>> {
    let missing = || {
        Problem::not_found(format!(
            "no API key {id}; list them with `GET /v1/keys` (`agentkit keys list`)"
        ))
    };
    let key = s.keys.get(&id).await?.ok_or_else(missing)?;
    if key.workspace_id() != caller.workspace && !caller.super_admin {
        return Err(missing());
    }
    let revoked = s.keys.revoke(&id).await?.ok_or_else(missing)?;
    s.audit_change(
        &caller,
        &revoked.workspace_id(),
        "keys.revoke",
        &revoked.id,
        json!({"name": revoked.name, "role": revoked.role}),
    )
    .await?;
    Ok(Json(revoked))
}

/// The workspaces the caller can see: every one for the server's admin key, its own for
/// other keys.
#[utoipa::path(get, path = "/v1/workspaces", tag = "tenancy",
    responses((status = 200, body = [Workspace]), (status = 403, body = Problem)))]
pub async fn list_workspaces(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Workspace>>> {
    let mut all = s.workspaces.list(None).await?;
    if !caller.super_admin {
        all.retain(|w| w.org == caller.workspace.org && w.workspace == caller.workspace.workspace);
    }
    Ok(Json(all))
}

/// A workspace to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceRequest {
    /// The organisation (created with its first workspace).
    pub org: String,
    /// The workspace's name in the organisation.
    pub workspace: String,
}

/// Create a workspace (the server's admin key only). Create its first key with
/// `POST /v1/keys` and `"workspace": "org/workspace"`.
#[utoipa::path(post, path = "/v1/workspaces", tag = "tenancy", request_body = CreateWorkspaceRequest,
    responses((status = 201, body = Workspace), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 409, body = Problem)))]
pub async fn create_workspace(
    State(s): State<AppState>,
    caller: Caller,
    Json(req): Json<CreateWorkspaceRequest>,
) -> ApiResult<Response> {
    if !caller.super_admin {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the server's admin key (AGENTKIT_ADMIN_KEY) creates workspaces",
        ));
    }
    let id = WorkspaceId::new(req.org, req.workspace);
    let ws = s.workspaces.create(&id).await?;
    s.audit_change(
        &caller,
        &id,
        "workspaces.create",
        &id.to_string(),
        json!({}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(ws)).into_response())
}
