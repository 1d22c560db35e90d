//! Roles and what each may do: one table from (method, route) to the least role it needs.

use serde::{Deserialize, Serialize};

/// What a key may do. Roles are ordered: each includes everything the roles below it may do
/// (`admin` > `developer` > `operator` > `invoker` > `viewer`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Read anything in the workspace: agents, versions, runs, events, threads, schedules.
    Viewer,
    /// Also start runs and threads, write the store, call agents over `/mcp`.
    Invoker,
    /// Also control runs (pause, resume, cancel, signal, approve, reject, replay, delete a
    /// finished one), manage
    /// schedules and crons, emit events, call outbound MCP tools directly.
    Operator,
    /// Also deploy agents and workflows, move labels, promote and roll back.
    Developer,
    /// Also create, list and revoke API keys and create workspaces.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Invoker,
        Role::Operator,
        Role::Developer,
        Role::Admin,
    ];

    /// Its name (`viewer`, …, `admin`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Invoker => "invoker",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    /// Whether this role includes `needed`.
    #[must_use]
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "`{}` is not a role; use one of viewer, invoker, operator, developer, admin",
                    s.escape_debug()
                )
            })
    }
}

/// `POST` routes that only read (searches, counts, a thread's state at a checkpoint): `viewer`.
const READING_POSTS: &[&str] = &[
    "/assistants/search",
    "/assistants/count",
    "/threads/search",
    "/threads/count",
    "/threads/{thread_id}/history",
    "/threads/{thread_id}/state/checkpoint",
    "/runs/crons/search",
    "/runs/crons/count",
    "/store/items/search",
    "/store/namespaces",
    "/agents/search",
    "/runs/search",
    "/v1/safety/analyze",
];

/// The least role `method` on the route `path` (the route's pattern, e.g.
/// `/v1/runs/{run_id}/cancel`) needs, or `None` for a route this table does not know (the
/// server then asks for `admin`, so a route added without a rule is closed, not open).
///
/// | Role        | Routes |
/// |-------------|--------|
/// | `viewer`    | every `GET`; the LangGraph/Agent Protocol searches and counts, and a thread's state at a checkpoint; `POST /v1/safety/analyze`; `/mcp` (whose tools each need their own role: agents and federated tools `invoker`, operations their route's role) |
/// | `invoker`   | start runs (`POST /v1/agents/{name}/runs`, `/runs*`, `/threads/{id}/runs*`, `POST /v1/events/{event}`), threads (create, patch, copy, delete), store items (put, delete), the gateway's `POST /v1/execute`, `/v1/execute/stream`, `/v1/agents/connect` and its WebSocket |
/// | `operator`  | run control (`/v1/runs/{id}/{pause,resume,cancel,signal,approve,reject,replay}`, LangGraph and Agent Protocol cancel, LangGraph run delete), schedules and crons (create, delete, pause, resume, trigger, update), `POST /v1/servers/{name}/call_tool` |
/// | `developer` | `POST /v1/agents` (deploy), `PUT /v1/agents/{name}/labels/{label}`, promote, rollback, `/v1/webhooks*` and `/v1/triggers*` (also `GET`: create, list, get, rotate the secret, delete the workspace's webhooks and event triggers) |
/// | `admin`     | `/v1/keys*`, `/v1/workspaces*`, `/v1/audit*`, `/v1/secrets*`, `/metrics`, `/v1/metrics/realtime` (also `GET`) |
#[must_use]
pub fn required_role(method: &http::Method, path: &str) -> Option<Role> {
    use http::Method as M;
    if path == "/v1/keys"
        || path.starts_with("/v1/keys/")
        || path == "/v1/workspaces"
        || path.starts_with("/v1/workspaces/")
        || path == "/metrics"
        || path == "/v1/metrics/realtime"
        || path == "/v1/audit"
        || path.starts_with("/v1/audit/")
        || path == "/v1/secrets"
        || path.starts_with("/v1/secrets/")
    {
        // `/metrics` counts every workspace's runs and calls; the audit log records every
        // decision.
        return Some(Role::Admin);
    }
    if path == "/v1/webhooks"
        || path.starts_with("/v1/webhooks/")
        || path == "/v1/triggers"
        || path.starts_with("/v1/triggers/")
    {
        // A hook starts the workspace's agents without a key, a trigger on an event any
        // invoker emits: declaring one is deploying.
        return Some(Role::Developer);
    }
    if path == "/mcp" {
        // Each tool needs its own role (see `gateway`): a viewer sees the read-only ones.
        return Some(Role::Viewer);
    }
    if *method == M::GET || *method == M::HEAD {
        return Some(Role::Viewer);
    }
    if *method == M::POST && READING_POSTS.contains(&path) {
        return Some(Role::Viewer);
    }
    let role = match (method.as_str(), path) {
        ("POST", "/v1/agents")
        | ("PUT", "/v1/agents/{name}/labels/{label}")
        | ("POST", "/v1/agents/{name}/promote" | "/v1/agents/{name}/rollback") => Role::Developer,
        (
            "POST",
            "/v1/runs/{run_id}/pause"
            | "/v1/runs/{run_id}/resume"
            | "/v1/runs/{run_id}/cancel"
            | "/v1/runs/{run_id}/signal"
            | "/v1/runs/{run_id}/approve"
            | "/v1/runs/{run_id}/reject"
            | "/v1/runs/{run_id}/replay"
            | "/threads/{thread_id}/runs/{run_id}/cancel"
            | "/runs/{run_id}/cancel"
            | "/v1/schedules"
            | "/v1/schedules/{name}/pause"
            | "/v1/schedules/{name}/resume"
            | "/v1/schedules/{name}/trigger"
            | "/threads/{thread_id}/runs/crons"
            | "/runs/crons"
            | "/v1/servers/{name}/call_tool"
            | "/v1/approvals/{run_id}/{call_id}/claim"
            | "/v1/approvals/{run_id}/{call_id}/approve"
            | "/v1/approvals/{run_id}/{call_id}/reject",
        )
        | (
            "DELETE",
            "/v1/schedules/{name}" | "/runs/crons/{cron_id}" | "/threads/{thread_id}/runs/{run_id}",
        )
        | ("PATCH", "/runs/crons/{cron_id}") => Role::Operator,
        (
            "POST",
            "/v1/agents/{name}/runs"
            | "/threads"
            | "/threads/{thread_id}/copy"
            | "/threads/{thread_id}/runs"
            | "/threads/{thread_id}/runs/wait"
            | "/threads/{thread_id}/runs/stream"
            | "/runs"
            | "/runs/wait"
            | "/runs/stream"
            | "/v1/execute"
            | "/v1/execute/stream"
            | "/v1/agents/connect"
            | "/v1/events/{event}",
        )
        | ("PATCH" | "DELETE", "/threads/{thread_id}")
        | ("PUT" | "DELETE", "/store/items") => Role::Invoker,
        _ => return None,
    };
    Some(role)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Invoker));
        assert!(Role::Operator.allows(Role::Invoker));
        assert!(!Role::Operator.allows(Role::Developer));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn every_documented_route_has_a_rule() {
        let doc = serde_json::to_value(crate::api::openapi::document()).unwrap_or_default();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        assert!(paths.len() > 50);
        for (path, ops) in paths {
            if matches!(
                path.as_str(),
                "/healthz" | "/readyz" | "/v1/hooks/{name}" | "/v1/hooks/{org}/{workspace}/{name}"
            ) {
                continue;
            }
            for method in ops.as_object().into_iter().flat_map(|o| o.keys()) {
                let m: http::Method = method.to_uppercase().parse().unwrap_or(http::Method::GET);
                assert!(
                    required_role(&m, &path).is_some(),
                    "{method} {path} has no role rule"
                );
            }
        }
        assert_eq!(
            required_role(&http::Method::POST, "/v1/agents"),
            Some(Role::Developer)
        );
        assert_eq!(
            required_role(&http::Method::GET, "/v1/webhooks"),
            Some(Role::Developer)
        );
        assert_eq!(
            required_role(&http::Method::GET, "/v1/triggers/{name}"),
            Some(Role::Developer)
        );
        assert_eq!(
            required_role(&http::Method::POST, "/v1/events/{event}"),
            Some(Role::Invoker)
        );
        // Deleting a run (its journal, the run's record) is run control, like cancelling it.
        assert_eq!(
            required_role(&http::Method::DELETE, "/threads/{thread_id}/runs/{run_id}"),
            Some(Role::Operator)
        );
        assert_eq!(required_role(&http::Method::POST, "/v1/unknown"), None);
    }
}
