//! Named things a workspace declares through the API (webhooks, event triggers), stored one
//! document each under `<org>/<workspace>/<name>` in a collection of the [`Store`]: a
//! workspace reads only its own prefix, so names live apart per workspace and another
//! workspace's are never listed or found.

use std::sync::Arc;

use agentkit_core::{Error, Result};
use agentkit_runtime::{Doc, Expect, Store};
use serde_json::Value;

use crate::pages::DocPages;
use crate::platform::Platform;
use crate::tenancy::{Scope, WorkspaceId};

/// Check the name of a thing a workspace declares (`kind`: "webhook", "trigger"): 1 to 64
/// letters, digits, `_` or `-`; `why` says where the name appears.
pub(crate) fn check_name(kind: &str, name: &str, why: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{kind} name `{}` is not valid: use 1 to 64 letters, digits, `_` or `-` ({why})",
            name.escape_debug()
        )))
    }
}

/// Check that `target` names an agent or workflow deployed in `ws`, for `what` (such as
/// ``trigger `on-deploy` ``), which starts it.
pub(crate) async fn check_target(
    platform: &Platform,
    ws: &WorkspaceId,
    what: &str,
    target: &str,
) -> Result<()> {
    let scope = Scope::of(ws);
    let internal = scope.internal(target).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "target `{}` is not a valid name",
            target.escape_debug()
        ))
    })?;
    platform.ensure_target(&internal).await.map_err(|e| {
        Error::InvalidRequest(format!(
            "{what}: target `{target}`: {}; deploy it in this workspace first",
            scope.unprefix(&e.to_string())
        ))
    })
}

/// One collection of workspace-named documents. Cheap to clone.
#[derive(Clone)]
pub(crate) struct NamedDocs {
    store: Arc<dyn Store>,
    collection: &'static str,
}

impl NamedDocs {
    pub(crate) fn new(store: Arc<dyn Store>, collection: &'static str) -> Self {
        Self { store, collection }
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The document id of `name` in `ws`.
    pub(crate) fn id(ws: &WorkspaceId, name: &str) -> String {
        format!("{}/{}/{name}", ws.org, ws.workspace)
    }

    /// Every document of `ws`, with its name, by name (all of them, page by page).
    pub(crate) async fn list(&self, ws: &WorkspaceId) -> Result<Vec<(String, Doc)>> {
        let prefix = Self::id(ws, "");
        let mut out = Vec::new();
        let mut pages = DocPages::new(&*self.store, self.collection, &prefix);
        while let Some(page) = pages.next().await? {
            for doc in page {
                if let Some(name) = doc.id.strip_prefix(&prefix)
                    && !name.contains('/')
                {
                    out.push((name.to_owned(), doc));
                }
            }
        }
        Ok(out)
    }

    /// The document `name` of `ws`, if any.
    pub(crate) async fn get(&self, ws: &WorkspaceId, name: &str) -> Result<Option<Doc>> {
        self.store
            .doc_get(self.collection, &Self::id(ws, name))
            .await
    }

    /// Store `value` as `name` of `ws` unless that name is taken; whether it was stored.
    pub(crate) async fn create(&self, ws: &WorkspaceId, name: &str, value: Value) -> Result<bool> {
        Ok(self
            .store
            .doc_put(self.collection, &Self::id(ws, name), value, Expect::Absent)
            .await?
            .is_some())
    }

    /// Store `value` as `name` of `ws` if it is still at `revision`; whether it was.
    pub(crate) async fn replace(
        &self,
        ws: &WorkspaceId,
        name: &str,
        value: Value,
        revision: u64,
    ) -> Result<bool> {
        Ok(self
            .store
            .doc_put(
                self.collection,
                &Self::id(ws, name),
                value,
                Expect::Revision(revision),
            )
            .await?
            .is_some())
    }

    /// Delete `name` of `ws`; whether it existed.
    pub(crate) async fn delete(&self, ws: &WorkspaceId, name: &str) -> Result<bool> {
        self.store
            .doc_delete(self.collection, &Self::id(ws, name), Expect::Any)
            .await
    }
}
