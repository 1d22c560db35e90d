//! `/v1/secrets`: the caller's workspace's credential vault (names and dates only; a value
//! is written, never read back). See [`vault`](crate::vault).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiResult, AppState, Json, Path, Problem};
use crate::tenancy::Caller;
use crate::vault::SecretInfo;

/// The vault routes (authenticated; `admin` only).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", put(put_secret).delete(delete_secret))
}

/// A secret's value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The value (at most 64 KiB). Stored encrypted; never shown again.
    pub value: String,
}

/// The secrets of the caller's workspace: names and dates, never values.
#[utoipa::path(get, path = "/v1/secrets", tag = "vault",
    responses((status = 200, body = [SecretInfo]), (status = 403, body = Problem)))]
pub async fn list_secrets(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<SecretInfo>>> {
    Ok(Json(s.vault.list(&caller.workspace).await?))
}

/// Set a secret of the caller's workspace (create or replace). MCP servers name it as
/// `{{secret:NAME}}` in headers, bearer tokens and environment values.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "vault", request_body = SecretValue,
    params(("name" = String, Path, description = "1-64 of letters, digits, `_`, `-`, `.`")),
    responses((status = 200, body = SecretInfo), (status = 400, body = Problem),
              (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn put_secret(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<SecretValue>,
) -> ApiResult<Json<SecretInfo>> {
    let info = s.vault.put(&caller.workspace, &name, &req.value).await?;
    tracing::info!(workspace = %caller.workspace, secret = %name, "secret set");
    // The name only; never the value.
    s.audit_change(
        &caller,
        &caller.workspace,
        "secrets.set",
        &name,
        serde_json::json!({}),
    )
    .await?;
    Ok(Json(info))
}

/// Delete a secret of the caller's workspace.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "vault",
    params(("name" = String, Path, description = "The secret's name")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_secret(
    State(s): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    if s.vault.delete(&caller.workspace, &name).await? {
        s.audit_change(
            &caller,
            &caller.workspace,
            "secrets.delete",
            &name,
            serde_json::json!({}),
        )
        .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found(format!(
            "no secret {name} in workspace {}; list them with `GET /v1/secrets`",
            caller.workspace
        )))
    }
}
