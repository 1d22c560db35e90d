//! Tenancy: organisations → workspaces, API keys (hashed, with roles), and the caller of a
//! request.
//!
//! Every request is authenticated by the API layer into a [`Caller`]: the workspace it acts
//! in, its [`Role`] and its key — or, with `server.jwt` set, its identity provider's token
//! ([`jwt`]). The server's admin key (`AGENTKIT_ADMIN_KEY`, printed by
//! `agentkit dev`) is a **super-admin**: role `admin` in the built-in `default/default`
//! workspace, and the only caller that may create workspaces in any organisation and keys in
//! any workspace. Keys created with `POST /v1/keys` belong to one workspace and act only in
//! it.
//!
//! Resources are kept apart by [`Scope`]: the names and ids a workspace chooses (agents,
//! threads) are stored under a workspace prefix (`<org>~<workspace>~<name>`), and the
//! default workspace's are stored unprefixed, so a single-tenant store needs no migration.
//! `~` is not allowed in names, so no name a caller sends can reach another workspace's;
//! anything outside the caller's scope answers 404, like something that does not exist.

use agentkit_core::Principal;
use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::api::Problem;

pub mod jwt;
pub mod keys;
pub mod roles;
pub mod workspaces;

pub use jwt::{JwtVerifier, TokenIdentity, TokenRefusal};
pub use keys::{ApiKey, ApiKeys, CreatedKey, Refusal};
pub use roles::{Role, required_role};
pub use workspaces::{Workspace, Workspaces};

/// The built-in organisation.
pub const DEFAULT_ORG: &str = "default";
/// The built-in workspace (of [`DEFAULT_ORG`]).
pub const DEFAULT_WORKSPACE: &str = "default";
/// Separates the workspace prefix from a name in stored names.
pub const SEP: char = '~';

/// An organisation and a workspace in it, written `org/workspace`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkspaceId {
    /// The organisation.
    pub org: String,
    /// The workspace.
    pub workspace: String,
}

impl WorkspaceId {
    /// `org/workspace`.
    #[must_use]
    pub fn new(org: impl Into<String>, workspace: impl Into<String>) -> Self {
        Self {
            org: org.into(),
            workspace: workspace.into(),
        }
    }

    /// `default/default`.
    #[must_use]
    pub fn default_workspace() -> Self {
        Self::new(DEFAULT_ORG, DEFAULT_WORKSPACE)
    }

    /// Whether this is `default/default`.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.org == DEFAULT_ORG && self.workspace == DEFAULT_WORKSPACE
    }

    /// Parse `org/workspace` (or a bare `workspace` of `org`).
    pub fn parse(s: &str, org: &str) -> agentkit_core::Result<Self> {
        let id = match s.split_once('/') {
            Some((o, w)) => Self::new(o, w),
            None => Self::new(org, s),
        };
        workspaces::check_name("organisation", &id.org)?;
        workspaces::check_name("workspace", &id.workspace)?;
        Ok(id)
    }
}

impl std::fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.org, self.workspace)
    }
}

/// Maps the names a workspace uses to the names stored, and back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    prefix: String,
}

impl Scope {
    /// The scope of `workspace`.
    #[must_use]
    pub fn of(workspace: &WorkspaceId) -> Self {
        let prefix = if workspace.is_default() {
            String::new()
        } else {
            format!("{}{SEP}{}{SEP}", workspace.org, workspace.workspace)
        };
        Self { prefix }
    }

    /// The scope of `default/default`.
    #[must_use]
    pub fn default_scope() -> Self {
        Self {
            prefix: String::new(),
        }
    }

    /// The prefix of this workspace's stored names (empty for `default/default`).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `text` (an error message, say) with this workspace's prefix removed from the stored
    /// names in it.
    #[must_use]
    pub fn unprefix(&self, text: &str) -> String {
        if self.prefix.is_empty() {
            text.to_owned()
        } else {
            text.replace(self.prefix.as_str(), "")
        }
    }

    /// Whether this is the default workspace's scope.
    #[must_use]
    pub fn is_default(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The stored name of `name`; `None` when `name` cannot name anything of this
    /// workspace (it contains [`SEP`]): answer 404.
    #[must_use]
    pub fn internal(&self, name: &str) -> Option<String> {
        (!name.contains(SEP)).then(|| format!("{}{name}", self.prefix))
    }

    /// The workspace's name for the stored `name`, if it is this workspace's.
    #[must_use]
    pub fn external<'a>(&self, stored: &'a str) -> Option<&'a str> {
        let rest = stored.strip_prefix(self.prefix.as_str())?;
        (!rest.contains(SEP)).then_some(rest)
    }

    /// Whether the stored `name` belongs to this workspace.
    #[must_use]
    pub fn contains(&self, stored: &str) -> bool {
        self.external(stored).is_some()
    }
}

/// Who is calling: set on every authenticated request (an axum extractor).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Caller {
    /// The workspace the request acts in.
    pub workspace: WorkspaceId,
    /// What it may do.
    pub role: Role,
    /// The key's id (`None` for the server's admin key).
    pub key_id: Option<String>,
    /// The server's admin key: may manage every organisation's workspaces and keys.
    pub super_admin: bool,
    /// The policy the key carries (a name in `policies:`), applied to its tool calls.
    pub policy: Option<String>,
}

impl Caller {
    /// The server's admin key.
    #[must_use]
    pub fn admin() -> Self {
        Self {
            workspace: WorkspaceId::default_workspace(),
            role: Role::Admin,
            key_id: None,
            super_admin: true,
            policy: None,
        }
    }

    /// A caller holding the API key `key`.
    #[must_use]
    pub fn with_key(key: &ApiKey) -> Self {
        Self {
            workspace: key.workspace_id(),
            role: key.role,
            key_id: Some(key.id.clone()),
            super_admin: false,
            policy: key.policy.clone(),
        }
    }

    /// A caller holding a verified bearer token (OIDC / JWT): `key_id` is `jwt:<subject>`.
    #[must_use]
    pub fn with_token(identity: &TokenIdentity) -> Self {
        Self {
            workspace: identity.workspace.clone(),
            role: identity.role,
            key_id: Some(format!("jwt:{}", identity.subject)),
            super_admin: false,
            policy: None,
        }
    }

    /// The scope of its workspace.
    #[must_use]
    pub fn scope(&self) -> Scope {
        Scope::of(&self.workspace)
    }

    /// The principal runs started by this caller carry on their `RunContext`.
    #[must_use]
    pub fn principal(&self) -> Principal {
        let mut p = Principal::new(&self.workspace.org, &self.workspace.workspace)
            .with_role(self.role.as_str());
        if let Some(k) = &self.key_id {
            p = p.with_key_id(k);
        }
        if let Some(policy) = &self.policy {
            p = p.with_policy(policy);
        }
        p
    }

    /// 403 unless the caller has `role` (or a higher one).
    pub fn require(&self, role: Role) -> Result<(), Problem> {
        if self.role.allows(role) {
            return Ok(());
        }
        Err(forbidden(self, role))
    }
}

/// 403: the caller's role is below `needed`.
pub(crate) fn forbidden(caller: &Caller, needed: Role) -> Problem {
    let who = caller
        .key_id
        .as_deref()
        .map_or_else(|| "this key".to_owned(), |k| format!("key {k}"));
    Problem::new(
        http::StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "this needs the `{needed}` role (or higher); {who} has `{}`. Ask an admin of \
             workspace {} for a key with that role (`agentkit keys create --role {needed}`)",
            caller.role, caller.workspace
        ),
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            Problem::unauthorized("this route needs an API key; none was authenticated")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scopes_keep_workspaces_apart() {
        let d = Scope::default_scope();
        let a = Scope::of(&WorkspaceId::new("acme", "prod"));
        let b = Scope::of(&WorkspaceId::new("acme", "dev"));
        let stored = a.internal("bot").unwrap_or_default();
        assert_eq!(stored, "acme~prod~bot");
        assert_eq!(a.external(&stored), Some("bot"));
        assert_eq!(b.external(&stored), None);
        assert_eq!(d.external(&stored), None);
        assert_eq!(d.internal("bot").as_deref(), Some("bot"));
        assert_eq!(d.internal("acme~prod~bot"), None);
        assert_eq!(a.external("bot"), None);
    }

    proptest! {
        #[test]
        fn no_name_reaches_another_workspace(
            name in ".{0,40}",
            o1 in "[a-z]{1,4}", w1 in "[a-z]{1,4}", o2 in "[a-z]{1,4}", w2 in "[a-z]{1,4}",
        ) {
            let s1 = Scope::of(&WorkspaceId::new(&o1, &w1));
            let s2 = Scope::of(&WorkspaceId::new(&o2, &w2));
            if let Some(stored) = s1.internal(&name) {
                prop_assert_eq!(s1.external(&stored), Some(name.as_str()));
                if (o1.as_str(), w1.as_str()) != (o2.as_str(), w2.as_str()) {
                    prop_assert!(!s2.contains(&stored));
                }
                prop_assert!(!Scope::default_scope().contains(&stored) || s1.is_default());
            }
        }

        #[test]
        fn workspace_ids_parse_or_fail_cleanly(s in ".{0,80}") {
            if let Ok(id) = WorkspaceId::parse(&s, "default") {
                prop_assert!(!id.org.contains(SEP) && !id.workspace.contains(SEP));
            }
        }
    }
}
