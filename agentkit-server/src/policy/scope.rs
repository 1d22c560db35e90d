//! Policies by who calls: the workspace's (`server.workspace_policies`) and the API key's
//! (`POST /v1/keys {"policy": ..}`), applied to every tool call on top of the agent's or the
//! gateway's own policy (see [`PolicyScope`]).

use std::collections::BTreeMap;

use agentkit_core::policy::{Policy, PolicyScope};
use agentkit_core::{Config, Error, Result, RunContext};

/// The policies of `policies:` by name, and the one each workspace carries. A call's
/// principal (its workspace and API key, on the [`RunContext`]) selects which apply.
#[derive(Debug, Clone, Default)]
pub struct PrincipalPolicies {
    named: BTreeMap<String, Policy>,
    workspaces: BTreeMap<String, Policy>,
}

fn config_error(key: String, message: String) -> Error {
    Error::Config {
        file: None,
        key,
        message,
    }
}

impl PrincipalPolicies {
    /// The `policies:` of `config` (each compiled) and its `server.workspace_policies`.
    ///
    /// # Errors
    ///
    /// A located [`Error::Config`] for a policy that does not compile, a workspace that is
    /// not `org/workspace`, or a workspace policy that names no policy of `policies:`.
    pub fn from_config(config: &Config) -> Result<Self> {
        let mut named = BTreeMap::new();
        for (name, spec) in &config.policies {
            let policy = Policy::compile(name.clone(), spec).map_err(|e| match e {
                Error::Config { key, message, .. } => {
                    config_error(format!("policies.{name}.{key}"), message)
                }
                other => other,
            })?;
            named.insert(name.clone(), policy);
        }
        let mut workspaces = BTreeMap::new();
        for (ws, p) in &config.server.workspace_policies {
            let key = format!("server.workspace_policies.{ws}");
            let valid = ws
                .split_once('/')
                .is_some_and(|(o, w)| !o.is_empty() && !w.is_empty() && !w.contains('/'));
            if !valid {
                return Err(config_error(
                    key,
                    format!("`{ws}` is not a workspace; write it as `org/workspace`"),
                ));
            }
            let Some(policy) = named.get(p) else {
                return Err(config_error(key, unknown(p, &named)));
            };
            workspaces.insert(ws.clone(), policy.clone());
        }
        Ok(Self { named, workspaces })
    }

    /// Whether `policies:` has a policy named `name`.
    #[must_use]
    pub fn knows(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }

    /// Why `name` cannot be given to a key: it names no policy (listing those that exist).
    #[must_use]
    pub fn unknown(&self, name: &str) -> String {
        unknown(name, &self.named)
    }

    /// Every policy of `policies:` (those of workspaces and keys among them).
    pub(crate) fn all(&self) -> impl Iterator<Item = &Policy> {
        self.named.values()
    }

    /// Whether no workspace has a policy and `policies:` is empty (so no key can carry one).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.workspaces.is_empty()
    }
}

fn unknown(name: &str, named: &BTreeMap<String, Policy>) -> String {
    let known: Vec<&str> = named.keys().map(String::as_str).collect();
    format!(
        "no policy named `{name}` in `policies:` (declared: {})",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

impl PolicyScope for PrincipalPolicies {
    fn policies(&self, ctx: &RunContext) -> Vec<Policy> {
        let Some(p) = ctx.principal() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let (Some(org), Some(ws)) = (&p.tenant, &p.workspace)
            && let Some(policy) = self.workspaces.get(&format!("{org}/{ws}"))
        {
            out.push(policy.clone());
        }
        if let Some(policy) = p.policy.as_ref().and_then(|n| self.named.get(n)) {
            out.push(policy.clone());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use agentkit_core::Principal;
    use agentkit_core::policy::Verdict;

    use super::*;

    const YAML: &str = r#"
policies:
  read-only:
    tools: {allow: ["*__read_*"]}
  no-delete:
    tools: {deny: ["*__delete_*"]}
server:
  workspace_policies:
    acme/prod: no-delete
"#;

    #[test]
    fn the_workspace_and_the_key_select_their_policies() {
        let config = Config::from_yaml_str(YAML, None).unwrap();
        let scope = PrincipalPolicies::from_config(&config).unwrap();
        let names = |p: Principal| -> Vec<String> {
            scope
                .policies(&RunContext::new().with_principal(p))
                .iter()
                .map(|p| p.name().to_owned())
                .collect()
        };
        assert!(names(Principal::new("acme", "dev")).is_empty());
        assert_eq!(names(Principal::new("acme", "prod")), ["no-delete"]);
        assert_eq!(
            names(Principal::new("acme", "prod").with_policy("read-only")),
            ["no-delete", "read-only"]
        );
        let ro = &scope.policies(
            &RunContext::new().with_principal(Principal::new("a", "b").with_policy("read-only")),
        )[0];
        assert_eq!(
            ro.decide("fs__write_file", &serde_json::json!({}), &[])
                .verdict,
            Verdict::Deny
        );
        assert!(RunContext::new().principal().is_none());
    }

    #[test]
    fn a_workspace_policy_must_name_a_policy_and_a_workspace() {
        let bad = YAML.replace("acme/prod: no-delete", "acme/prod: nope");
        let e = PrincipalPolicies::from_config(&Config::from_yaml_str(&bad, None).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no policy named `nope`") && e.contains("read-only"),
            "{e}"
        );
        let bad = YAML.replace("acme/prod: no-delete", "prod: no-delete");
        let e = PrincipalPolicies::from_config(&Config::from_yaml_str(&bad, None).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("org/workspace"), "{e}");
    }
}
