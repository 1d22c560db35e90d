//! The declarative catalog as the server's [`SpecBuilder`], and [`server_builder`]: a
//! [`ServerBuilder`] configured from an `agentkit.yaml`.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentkit_core::config::{AgentSpec, TriggerSpec, WorkflowSpec};
use agentkit_core::{AugmentedLlm, Config, Error, Memory, Result};
use agentkit_runtime::TargetOptions;
use serde_json::Value;

use super::{Catalog, ModelFactory};
use crate::ServerBuilder;
use crate::platform::SpecBuilder;
use crate::registry::{EntryKind, Version};
use crate::threads::ThreadPolicy;

/// Builds registry versions of declarative agents and workflows with a [`Catalog`]: the
/// config's providers and MCP servers, the version's own spec, and its members at their
/// pinned versions.
#[derive(Clone)]
pub struct DeclarativeBuilder {
    base: Config,
    models: ModelFactory,
    audit: Option<Arc<dyn agentkit_core::policy::AuditSink>>,
}

impl std::fmt::Debug for DeclarativeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeclarativeBuilder")
            .field("models", &self.models)
            .field("audit", &self.audit.is_some())
            .finish_non_exhaustive()
    }
}

impl DeclarativeBuilder {
    /// A builder with `config`'s providers, prices and MCP servers (its agents and workflows
    /// are not used: versions carry their own specs).
    #[must_use]
    pub fn new(config: &Config, models: ModelFactory) -> Self {
        let mut base = config.clone();
        base.agents.clear();
        base.workflows.clear();
        base.schedules.clear();
        base.triggers.clear();
        Self {
            base,
            models,
            audit: None,
        }
    }

    /// Write the policy decisions of the agents it builds to `sink`.
    #[must_use]
    pub fn with_audit(mut self, sink: Arc<dyn agentkit_core::policy::AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// [`parse`](Self::parse) `spec` without its `schedules:`, which the server registers
    /// (see [`crate::schedules`]) and a built agent does not use.
    fn parse_unscheduled(kind: EntryKind, spec: &Value) -> Result<Spec> {
        match spec {
            Value::Object(o) if o.contains_key("schedules") => {
                let mut o = o.clone();
                o.remove("schedules");
                Self::parse(kind, &Value::Object(o))
            }
            other => Self::parse(kind, other),
        }
    }

    fn parse(kind: EntryKind, spec: &Value) -> Result<Spec> {
        let bad = |what: &str, e: serde_path_to_error::Error<serde_json::Error>| {
            Error::InvalidRequest(format!(
                "the {what} spec is invalid at `{}`: {}",
                e.path(),
                e.inner()
            ))
        };
        match kind {
            EntryKind::Agent => serde_path_to_error::deserialize(spec)
                .map(Spec::Agent)
                .map_err(|e| bad("agent", e)),
            EntryKind::Workflow => serde_path_to_error::deserialize(spec)
                .map(Spec::Workflow)
                .map_err(|e| bad("workflow", e)),
            _ => Err(Error::InvalidRequest(
                "only `agent` and `workflow` specs are built from declarations".into(),
            )),
        }
    }

    /// A catalog holding just `name` (members as placeholders, replaced by `prebuilt`).
    fn catalog(
        &self,
        name: &str,
        spec: &Spec,
        members: &BTreeMap<String, Arc<dyn AugmentedLlm>>,
        memory: Option<Arc<dyn Memory>>,
    ) -> Result<Catalog> {
        let mut config = self.base.clone();
        match spec {
            Spec::Agent(a) => {
                config.agents.insert(name.to_owned(), a.clone());
            }
            Spec::Workflow(w) => {
                for (_, m) in w.references() {
                    config
                        .agents
                        .entry(m.to_owned())
                        .or_insert_with(|| AgentSpec::new("scripted", ""));
                }
                config.workflows.insert(name.to_owned(), w.clone());
            }
        }
        let mut catalog = Catalog::new(config, self.models.clone())?;
        if let Some(sink) = &self.audit {
            catalog = catalog.with_audit(Arc::clone(sink));
        }
        for (m, llm) in members {
            catalog = catalog.with_prebuilt(m.clone(), Arc::clone(llm));
        }
        if let Some(memory) = memory {
            catalog = catalog.with_memory(memory);
        }
        Ok(catalog)
    }
}

#[derive(Debug, Clone)]
enum Spec {
    Agent(AgentSpec),
    Workflow(WorkflowSpec),
}

impl SpecBuilder for DeclarativeBuilder {
    fn build(
        &self,
        version: &Version,
        members: &BTreeMap<String, Arc<dyn AugmentedLlm>>,
        memory: Arc<dyn Memory>,
    ) -> Result<Arc<dyn AugmentedLlm>> {
        let spec = Self::parse_unscheduled(version.kind, &version.spec)?;
        self.catalog(&version.name, &spec, members, Some(memory))?
            .build(&version.name)
    }

    fn validate(&self, kind: EntryKind, spec: &Value) -> Result<(String, Vec<String>)> {
        let what = if kind == EntryKind::Workflow {
            "workflow"
        } else {
            "agent"
        };
        Self::parse(kind, spec)?;
        super::own_schedules(None, spec).map_err(|(key, message)| {
            Error::InvalidRequest(format!("the {what} spec is invalid at `{key}`: {message}"))
        })?;
        let parsed = Self::parse_unscheduled(kind, spec)?;
        let (description, members) = match &parsed {
            Spec::Agent(a) => (a.description.clone(), Vec::new()),
            Spec::Workflow(w) => {
                let mut m: Vec<String> = w.references().map(|(_, n)| n.to_owned()).collect();
                m.sort();
                m.dedup();
                (w.description().to_owned(), m)
            }
        };
        // Build it once with placeholder members: a spec that cannot be built is refused now,
        // not when its first run starts.
        let name = "validate";
        let catalog = self.catalog(name, &parsed, &BTreeMap::new(), None)?;
        catalog.build(name)?;
        Ok((description, members))
    }

    fn target_options(&self, version: &Version) -> TargetOptions {
        Self::parse_unscheduled(version.kind, &version.spec)
            .and_then(|spec| self.catalog(&version.name, &spec, &BTreeMap::new(), None))
            .and_then(|c| c.target_options(&version.name))
            .unwrap_or_else(|_| TargetOptions::new())
    }
}

/// `builder` configured from `config`: the declarative catalog as its spec builder, every
/// agent and workflow deployed (workflows after what they compose), the schedules
/// registered, the webhooks and event triggers added, the retention set, the MCP servers
/// (`mcp.servers`) shown at `/v1/servers`, their `{{secret:NAME}}` values filled from the
/// vault (so set [`ServerBuilder::master_key`] before). Returns whether the agents run offline (the scripted model: no provider key).
///
/// # Errors
///
/// The config's located error when an agent, workflow or schedule is invalid.
pub fn server_builder(builder: ServerBuilder, config: &Config) -> Result<(ServerBuilder, bool)> {
    let models = ModelFactory::from_config(config);
    let offline = models.is_offline();
    let catalog = Catalog::new(config.clone(), models.clone())?;
    catalog.check()?;
    let schedules = catalog.schedules()?;
    let retention = &config.server.retention;
    let approvals = &config.server.approvals;
    let audit: Arc<dyn agentkit_core::policy::AuditSink> = Arc::new(
        crate::policy::StoreAudit::new(Arc::clone(builder.store()))
            .with_approval_expiry(approvals.expire_after.map(|d| d.0)),
    );
    let vault = builder.vault();
    let mut builder = builder
        .spec_builder(Arc::new(
            DeclarativeBuilder::new(config, models).with_audit(audit),
        ))
        .schedules(schedules)
        .mcp_servers({
            let set = agentkit_mcp::ServerSet::from_config(config)?;
            // `{{secret:NAME}}` in a server's headers, token or env: filled at each connect
            // from the vault of the one workspace `gateway.servers` gives the server to, else
            // from `default/default`'s (a server shared by several workspaces is the server
            // admin's, with one connection for all of them).
            let owners = config
                .gateway
                .servers
                .iter()
                .filter_map(|(server, wss)| match wss.as_slice() {
                    [one] => crate::tenancy::WorkspaceId::parse(one, crate::tenancy::DEFAULT_ORG)
                        .ok()
                        .map(|ws| (server.clone(), ws)),
                    _ => None,
                })
                .collect();
            agentkit_mcp::ConnectionManager::builder(set.servers.values().cloned())
                .with_config_resolver(vault.resolver(owners))
                .build()
        })
        .retention(crate::retention::Retention::from_days(
            retention.runs_days,
            retention.thread_ttl_days,
        ))
        .rate_limits(crate::ratelimit::RateLimits::from_settings(
            &config.server.rate_limit,
        ))
        .gateway(
            crate::gatewayops::GatewayConfig::from_config(config)
                .map_err(|e| catalog.relocate(e, "gateway".into()))?,
        )
        .thread_policy(match config.server.thread_concurrency {
            agentkit_core::config::ThreadConcurrency::Enqueue => ThreadPolicy::Enqueue,
            agentkit_core::config::ThreadConcurrency::Interrupt => ThreadPolicy::Interrupt,
            _ => ThreadPolicy::Reject,
        });
    if let Some(d) = approvals.claim_for {
        builder = builder.approval_claim(d.0);
    }
    if let Some(label) = &config.server.schedules_label {
        // Checked with the config (`Config::validate`, which `Catalog::new` runs).
        builder = builder.schedules_label(label.clone());
    }
    builder = builder.approval_expiry(approvals.expire_after.map(|d| d.0));
    builder = builder.run_rate_limits(crate::ratelimit::RunRateLimits::from_config(config));
    let rules = agentkit_runtime::BudgetRules::from_config(config);
    if !rules.is_empty() {
        let ledger =
            agentkit_runtime::SpendLedger::new(std::sync::Arc::clone(builder.store()), rules);
        builder = builder.budgets(ledger);
    }
    if let Some(jwt) = &config.server.jwt {
        builder = builder.jwt(crate::tenancy::JwtVerifier::from_settings(jwt)?);
    }
    for (name, trigger) in &config.triggers {
        builder = match trigger {
            TriggerSpec::Webhook(w) => builder.webhook(
                name.clone(),
                w.target.clone(),
                w.secret.clone(),
                w.message_pointer.clone(),
            ),
            TriggerSpec::Event(e) => builder.event_trigger(e.event.clone(), e.target.clone()),
            other => {
                return Err(Error::InvalidRequest(format!(
                    "trigger `{name}`: this server cannot run triggers of this type ({other:?})"
                )));
            }
        };
    }
    for (name, agent) in &config.agents {
        // A named policy is written into the agent's version, so the version carries the
        // rules it runs with and a changed policy makes a new version.
        let mut agent = agent.clone();
        if let Some(agentkit_core::config::PolicyRef::Named(p)) = &agent.policy
            && let Some(policy) = config.policies.get(p)
        {
            let mut policy = policy.clone();
            policy.name = Some(p.clone());
            agent.policy = Some(agentkit_core::config::PolicyRef::Inline(Box::new(policy)));
        }
        let spec =
            serde_json::to_value(&agent).map_err(|e| Error::json("encoding an agent spec", e))?;
        builder = builder.deploy(name.clone(), EntryKind::Agent, spec);
    }
    // Workflows in dependency order: each after the workflows it composes.
    let mut done: std::collections::BTreeSet<&str> =
        config.agents.keys().map(String::as_str).collect();
    let mut left: Vec<(&String, &WorkflowSpec)> = config.workflows.iter().collect();
    while !left.is_empty() {
        let before = left.len();
        let mut next = Vec::new();
        for (name, w) in left {
            if w.references().all(|(_, m)| done.contains(m)) {
                let spec = serde_json::to_value(w)
                    .map_err(|e| Error::json("encoding a workflow spec", e))?;
                builder = builder.deploy(name.clone(), EntryKind::Workflow, spec);
                done.insert(name.as_str());
            } else {
                next.push((name, w));
            }
        }
        if next.len() == before {
            return Err(Error::InvalidRequest(
                "workflows compose each other in a cycle".into(),
            ));
        }
        left = next;
    }
    Ok((builder, offline))
}
