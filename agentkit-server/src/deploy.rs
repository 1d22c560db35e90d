//! Deploying specs into the registry: validate, pin member versions, store a version.

use std::collections::BTreeMap;

use agentkit_core::{Error, Result};
use serde_json::Value;

use crate::platform::Platform;
use crate::registry::{Deployed, EntryKind};
use crate::tenancy::Scope;

/// Validate `spec` with the platform's spec builder, pin the `latest` versions of the agents
/// it composes, and store it as the next version of `name` (or find it unchanged). When
/// `latest` is the label its schedules follow (it has no `prod` label), its `schedules:`
/// become the live ones here at once (see [`crate::schedules`]).
pub async fn deploy_spec(
    platform: &Platform,
    name: &str,
    kind: EntryKind,
    spec: Value,
) -> Result<Deployed> {
    deploy_spec_in(platform, &Scope::default_scope(), name, kind, spec).await
}

/// [`deploy_spec`] in `scope`'s workspace: `name` and the agents the spec composes are that
/// workspace's.
pub async fn deploy_spec_in(
    platform: &Platform,
    scope: &Scope,
    name: &str,
    kind: EntryKind,
    spec: Value,
) -> Result<Deployed> {
    let reserved = |n: &str| {
        Error::InvalidRequest(format!(
            "`{}` is not a valid name: use 1 to 64 letters, digits, `-` or `_`",
            n.escape_debug()
        ))
    };
    let external = name;
    let name = &scope.internal(name).ok_or_else(|| reserved(external))?;
    let builder = platform.directory.builder.as_ref().ok_or_else(|| {
        Error::InvalidRequest(
            "this server accepts no declarative specs (it was built without a spec builder)".into(),
        )
    })?;
    if kind == EntryKind::Code {
        return Err(Error::InvalidRequest(
            "`code` agents are registered by the server's code, not deployed; use `agent` or \
             `workflow`"
                .into(),
        ));
    }
    if !spec.is_object() {
        let what = match &spec {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        return Err(Error::InvalidRequest(format!(
            "`spec` of `{external}` is {what}; it must be an object: the {} as written under \
             `{}:` in agentkit.yaml",
            if kind == EntryKind::Workflow {
                "workflow"
            } else {
                "agent"
            },
            if kind == EntryKind::Workflow {
                "workflows"
            } else {
                "agents"
            },
        )));
    }
    let (description, members) = builder.validate(kind, &spec)?;
    // A spec's schedules run the spec itself.
    crate::spec::own_schedules(Some(external), &spec).map_err(|(key, message)| {
        Error::InvalidRequest(format!(
            "the spec of `{external}` is invalid at `{key}`: {message}"
        ))
    })?;
    let mut pinned = BTreeMap::new();
    for m in members {
        let m = scope.internal(&m).ok_or_else(|| reserved(&m))?;
        if &m == name {
            return Err(Error::InvalidRequest(format!(
                "workflow `{external}` cannot compose itself"
            )));
        }
        let v = platform.registry.resolve(&m, None).await.map_err(|e| {
            if e.is_not_found() {
                let m = scope.external(&m).unwrap_or(&m);
                Error::InvalidRequest(format!(
                    "`{external}` composes `{m}`, which is not deployed; deploy `{m}` first"
                ))
            } else {
                e
            }
        })?;
        pinned.insert(m, v);
    }
    let deployed = platform
        .registry
        .deploy(name, kind, &description, spec, pinned)
        .await?;
    platform.ensure_target(name).await?;
    if deployed.created {
        // The `/mcp` tool list shows the new agent (or its new description) at once.
        platform.sync_targets().await?;
    }
    platform.label_moved(name).await;
    Ok(deployed)
}
