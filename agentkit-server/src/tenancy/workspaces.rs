//! Organisations and their workspaces, stored as documents.

use std::sync::Arc;

use agentkit_core::{Error, Result};
use agentkit_runtime::{Expect, Store};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_ORG, DEFAULT_WORKSPACE, WorkspaceId};

/// The store collection of workspaces (id `org/workspace`).
pub const WORKSPACES: &str = "agentkit.workspaces";

/// A workspace as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Workspace {
    /// The organisation.
    pub org: String,
    /// The workspace's name in its organisation.
    pub workspace: String,
    /// When it was created (ms since epoch; 0 for the built-in `default/default`).
    pub created_at: i64,
}

/// A name usable for an organisation or workspace: 1 to 64 lowercase letters, digits, `-`
/// or `_`.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{what} `{}` is not a valid name: use 1 to 64 lowercase letters, digits, `-` or `_`",
            name.escape_debug()
        )))
    }
}

/// At most this many workspaces are remembered as existing.
const KNOWN_MAX: usize = 10_000;

/// The workspaces in a store. Workspaces are never deleted, so one found to exist is
/// remembered and not read again (a bearer token's workspace is checked on every request).
#[derive(Clone)]
pub struct Workspaces {
    store: Arc<dyn Store>,
    known: Arc<std::sync::RwLock<std::collections::HashSet<WorkspaceId>>>,
}

impl std::fmt::Debug for Workspaces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspaces").finish_non_exhaustive()
    }
}

impl Workspaces {
    /// The workspaces in `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: Arc::default(),
        }
    }

    /// Create `id`; 409 if it exists.
    pub async fn create(&self, id: &WorkspaceId) -> Result<Workspace> {
        check_name("organisation", &id.org)?;
        check_name("workspace", &id.workspace)?;
        if id.is_default() {
            return Err(Error::invalid_state(
                "workspace default/default",
                "exists already (it is built in)",
            ));
        }
        let now = agentkit_runtime::model::now_ms();
        let ws = Workspace {
            org: id.org.clone(),
            workspace: id.workspace.clone(),
            created_at: now,
        };
        let value = serde_json::to_value(&ws)
            .map_err(|e| Error::json(format!("encoding workspace {id}"), e))?;
        match self
            .store
            .doc_put(WORKSPACES, &id.to_string(), value, Expect::Absent)
            .await?
        {
            Some(_) => Ok(ws),
            None => Err(Error::invalid_state(
                format!("workspace {id}"),
                "exists already; list them with `GET /v1/workspaces`",
            )),
        }
    }

    /// Whether `id` exists (`default/default` always does).
    pub async fn exists(&self, id: &WorkspaceId) -> Result<bool> {
        if id.is_default()
            || self
                .known
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(id)
        {
            return Ok(true);
        }
        let found = self
            .store
            .doc_get(WORKSPACES, &id.to_string())
            .await?
            .is_some();
        if found {
            let mut known = self
                .known
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if known.len() < KNOWN_MAX {
                known.insert(id.clone());
            }
        }
        Ok(found)
    }

    /// The workspaces of `org` (every organisation when `None`), `default/default` first.
    pub async fn list(&self, org: Option<&str>) -> Result<Vec<Workspace>> {
        let mut out = Vec::new();
        if org.is_none_or(|o| o == DEFAULT_ORG) {
            out.push(Workspace {
                org: DEFAULT_ORG.into(),
                workspace: DEFAULT_WORKSPACE.into(),
                created_at: 0,
            });
        }
        let prefix = org.map(|o| format!("{o}/")).unwrap_or_default();
        let mut after: Option<String> = None;
        loop {
            let docs = self
                .store
                .doc_list(WORKSPACES, &prefix, after.as_deref(), 1_000)
                .await?;
            let n = docs.len();
            for d in &docs {
                let ws: Workspace = serde_json::from_value(d.value.clone())
                    .map_err(|e| Error::json(format!("reading workspace {}", d.id), e))?;
                out.push(ws);
            }
            after = docs.last().map(|d| d.id.clone());
            if n < 1_000 {
                break;
            }
        }
        Ok(out)
    }
}
