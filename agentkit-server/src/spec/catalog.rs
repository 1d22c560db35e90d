//! [`Catalog`]: declared agents and workflows built into runnable [`AugmentedLlm`]s, their
//! runtime options, and the declared schedules.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agentkit_core::config::{
    AgentSpec, CatchUpPolicy, ChainInputKind, Config, MinRating, OnFailure, OverlapPolicy,
    PlanModeKind, PolicyRef, ScheduleSpec, WorkflowSpec, locate_key,
};
use agentkit_core::policy::{AuditSink, Policy, PolicyLayer};
use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, Budget, Error, InMemoryMemory, MemoryWindow, RequestParams,
    Result, ToolSource,
};
use agentkit_mcp::{ConnectionManager, McpAggregator, ServerSet};
use agentkit_patterns::{
    BagOfWordsEmbedder, Chain, ChainInput, EvaluatorOptimizer, FailurePolicy, Orchestrator,
    Parallel, PlanMode, Rating, Router, Swarm, SwarmMember,
};
use agentkit_runtime::{CatchUp, Overlap, Schedule, TargetOptions};

use super::models::ModelFactory;
use super::tools::{FilteredTools, ToolMatcher};

/// The declared agents and workflows of a [`Config`], ready to build.
///
/// [`build`](Self::build) returns a fresh [`AugmentedLlm`] for any agent or workflow name:
/// agents are [`AgentLlm`]s (instruction, model, MCP tools of their servers and roles filtered
/// by their tool globs, `max_iterations`, history window); workflows compose freshly built
/// members with the agentkit-patterns builders. [`target_options`](Self::target_options) and
/// [`schedules`](Self::schedules) give what the runtime needs to run and schedule them.
///
/// Errors are [`Error::Config`] naming the key (and, with [`with_source`](Self::with_source),
/// the file, line and column).
///
/// ```
/// use agentkit_core::{AugmentedLlmExt, Config, RunContext};
/// use agentkit_server::spec::{Catalog, ModelFactory};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let config = Config::from_yaml_str(
///     "agents:\n  shout: {model: scripted, instructions: Repeat.}\n  again: {model: scripted}\n\
///      workflows:\n  twice: {type: chain, steps: [shout, again]}\n",
///     None,
/// )?;
/// let catalog = Catalog::new(config, ModelFactory::offline())?;
/// let twice = catalog.build("twice")?;
/// assert_eq!(twice.generate_str("hello", &RunContext::new()).await?, "hello");
/// assert_eq!(catalog.target_options("twice")?.description, "");
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
pub struct Catalog {
    config: Config,
    models: ModelFactory,
    mcp: Option<ConnectionManager>,
    extra_tools: BTreeMap<String, Vec<Arc<dyn ToolSource>>>,
    file: Option<PathBuf>,
    text: Option<String>,
    prebuilt: BTreeMap<String, Arc<dyn AugmentedLlm>>,
    memory: Option<Arc<dyn agentkit_core::Memory>>,
    audit: Option<Arc<dyn AuditSink>>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("agents", &self.config.agents.keys().collect::<Vec<_>>())
            .field(
                "workflows",
                &self.config.workflows.keys().collect::<Vec<_>>(),
            )
            .field("models", &self.models)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn map_rating(r: MinRating) -> Rating {
    match r {
        MinRating::Poor => Rating::Poor,
        MinRating::Fair => Rating::Fair,
        MinRating::Excellent => Rating::Excellent,
        _ => Rating::Good,
    }
}

impl Catalog {
    /// A catalog of `config`'s agents and workflows on `models`. The config is validated
    /// ([`Config::validate`]); MCP connections (when an agent uses servers) come from
    /// `config.mcp` and start lazily, unless [`with_connections`](Self::with_connections)
    /// supplies a manager.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the config is invalid.
    pub fn new(config: Config, models: ModelFactory) -> Result<Self> {
        config.validate()?;
        let uses_mcp = config
            .agents
            .values()
            .any(|a| !a.servers.is_empty() || !a.roles.is_empty());
        let mcp = if uses_mcp {
            Some(ConnectionManager::from_set(&ServerSet::from_settings(
                &config.mcp,
            )?))
        } else {
            None
        };
        Ok(Self {
            config,
            models,
            mcp,
            extra_tools: BTreeMap::new(),
            file: None,
            text: None,
            prebuilt: BTreeMap::new(),
            memory: None,
            audit: None,
        })
    }

    /// Write the policy decisions of every agent with a `policy:` to `sink` (the server's
    /// stored, hash-chained audit log).
    #[must_use]
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Agent `name`'s compiled policy, if it has one: `policy: <name>` from `policies:`, or
    /// an inline one.
    ///
    /// # Errors
    ///
    /// A located [`Error::Config`] at the glob that does not compile.
    pub fn policy(&self, name: &str) -> Result<Option<Policy>> {
        let spec = self.agent_spec(name)?;
        let (policy_name, policy, base) = match &spec.policy {
            None => return Ok(None),
            Some(PolicyRef::Named(p)) => {
                let Some(policy) = self.config.policies.get(p) else {
                    return Err(self.error(
                        format!("agents.{name}.policy"),
                        format!("no policy named `{p}` in `policies:`"),
                    ));
                };
                (p.clone(), policy, format!("policies.{p}"))
            }
            Some(PolicyRef::Inline(p)) => (
                p.name.clone().unwrap_or_else(|| name.to_owned()),
                &**p,
                format!("agents.{name}.policy"),
            ),
            Some(_) => return Ok(None),
        };
        Policy::compile(policy_name, policy)
            .map(Some)
            .map_err(|e| self.relocate_policy(e, &base))
    }

    fn relocate_policy(&self, err: Error, base: &str) -> Error {
        match err {
            Error::Config { key, message, .. } => self.error(format!("{base}.{key}"), message),
            other => other,
        }
    }

    /// Use `llm` whenever `name` is built (a member already built elsewhere, e.g. at the
    /// version a registry pinned).
    #[must_use]
    pub fn with_prebuilt(mut self, name: impl Into<String>, llm: Arc<dyn AugmentedLlm>) -> Self {
        self.prebuilt.insert(name.into(), llm);
        self
    }

    /// Give every agent this conversation memory (e.g. the store's, so threads persist)
    /// instead of a fresh in-process one.
    #[must_use]
    pub fn with_memory(mut self, memory: Arc<dyn agentkit_core::Memory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Connect agents' MCP servers through this manager (shared with the rest of the server).
    #[must_use]
    pub fn with_connections(mut self, manager: ConnectionManager) -> Self {
        self.mcp = Some(manager);
        self
    }

    /// Give agent `agent` these tools too (registered from code), filtered by its tool globs
    /// like its MCP tools.
    #[must_use]
    pub fn with_tools(mut self, agent: impl Into<String>, tools: Arc<dyn ToolSource>) -> Self {
        self.extra_tools
            .entry(agent.into())
            .or_default()
            .push(tools);
        self
    }

    /// The file and text the config was read from: errors then name the file, line and
    /// column (the config loader's own errors already do).
    #[must_use]
    pub fn with_source(mut self, file: Option<PathBuf>, text: impl Into<String>) -> Self {
        self.file = file;
        self.text = Some(text.into());
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model factory.
    #[must_use]
    pub fn models(&self) -> &ModelFactory {
        &self.models
    }

    /// Every agent and workflow name, agents first, each list sorted.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.config
            .agents
            .keys()
            .chain(self.config.workflows.keys())
            .map(String::as_str)
            .collect()
    }

    /// Whether `name` is an agent or workflow.
    #[must_use]
    pub fn contains(&self, name: &str) -> bool {
        self.config.agents.contains_key(name) || self.config.workflows.contains_key(name)
    }

    /// A located [`Error::Config`] at `key`.
    fn error(&self, key: String, message: impl Into<String>) -> Error {
        let mut message = message.into();
        if let Some((line, column)) = self.text.as_deref().and_then(|t| locate_key(t, &key)) {
            message = format!("{message} (line {line}, column {column})");
        }
        Error::Config {
            file: self.file.clone(),
            key,
            message,
        }
    }

    /// Relocates an error from the model factory or a builder under this catalog's source.
    pub(crate) fn relocate(&self, err: Error, key: String) -> Error {
        match err {
            Error::Config {
                key: k, message, ..
            } => self.error(if k.is_empty() { key } else { k }, message),
            Error::InvalidRequest(message) => self.error(key, message),
            other => other,
        }
    }

    fn not_found(&self, name: &str) -> Error {
        let names = self.names();
        Error::NotFound {
            kind: "agent or workflow".to_owned(),
            name: name.to_owned(),
            hint: if names.is_empty() {
                "none are declared".to_owned()
            } else {
                format!("declared: {}", names.join(", "))
            },
        }
    }

    /// Checks what loading cannot: tool globs compile, every agent's provider is available,
    /// every workflow builds, every schedule's cron expression, time zone and time parse
    /// (the top-level ones and those of agents and workflows).
    ///
    /// # Errors
    ///
    /// The first problem, as a located [`Error::Config`].
    pub fn check(&self) -> Result<()> {
        for name in self.names() {
            self.build(name)?;
        }
        let owned = self
            .config
            .agents
            .iter()
            .map(|(n, a)| ("agents", n, &a.schedules))
            .chain(
                self.config
                    .workflows
                    .iter()
                    .map(|(n, w)| ("workflows", n, w.schedules())),
            );
        for (section, owner, schedules) in owned {
            for (name, s) in schedules {
                schedule_from_spec(name, s).map_err(|(key, message)| {
                    let at = format!("{section}.{owner}.schedules.{name}");
                    self.error(
                        if key.is_empty() {
                            at
                        } else {
                            format!("{at}.{key}")
                        },
                        message,
                    )
                })?;
            }
        }
        self.schedules().map(|_| ())
    }

    /// Build the agent or workflow `name`: a fresh instance (its own in-process memory).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown name; [`Error::Config`] when a member cannot be built.
    pub fn build(&self, name: &str) -> Result<Arc<dyn AugmentedLlm>> {
        if let Some(p) = self.prebuilt.get(name) {
            return Ok(Arc::clone(p));
        }
        if self.config.agents.contains_key(name) {
            return Ok(Arc::new(self.build_agent(name)?));
        }
        let Some(spec) = self.config.workflows.get(name) else {
            return Err(self.not_found(name));
        };
        let key = |k: &str| format!("workflows.{name}.{k}");
        let built: Arc<dyn AugmentedLlm> = match spec {
            WorkflowSpec::Chain(s) => {
                let mut b = Chain::builder(name)
                    .with_description(&s.description)
                    .with_input(match s.input {
                        ChainInputKind::Transcript => ChainInput::Transcript,
                        _ => ChainInput::PreviousOutput,
                    });
                for step in &s.steps {
                    b = b.with_shared_step(self.build(step)?);
                }
                Arc::new(b.build().map_err(|e| self.relocate(e, key("steps")))?)
            }
            WorkflowSpec::Parallel(s) => {
                let mut b = Parallel::builder(name)
                    .with_description(&s.description)
                    .with_failure_policy(match s.on_failure {
                        OnFailure::Continue => FailurePolicy::Continue,
                        _ => FailurePolicy::FailFast,
                    });
                for branch in &s.fan_out {
                    b = b.with_shared_branch(self.build(branch)?);
                }
                if let Some(fan_in) = &s.fan_in {
                    b = b.with_shared_fan_in(self.build(fan_in)?);
                }
                if let Some(n) = s.max_concurrency {
                    b = b.with_max_concurrency(n);
                }
                Arc::new(b.build().map_err(|e| self.relocate(e, key("fan_out")))?)
            }
            WorkflowSpec::Router(s) => {
                let mut b = Router::builder(name).with_description(&s.description);
                for route in &s.routes {
                    b = b.with_shared_route(self.build(route)?);
                }
                b = match &s.router {
                    Some(router) => b.with_shared_llm(self.build(router)?),
                    None => b.with_embedder(BagOfWordsEmbedder::new()),
                };
                if let Some(k) = s.top_k {
                    b = b.with_top_k(k);
                }
                Arc::new(b.build().map_err(|e| self.relocate(e, key("routes")))?)
            }
            WorkflowSpec::EvaluatorOptimizer(s) => {
                let mut b = EvaluatorOptimizer::builder(
                    name,
                    self.build(&s.optimizer)?,
                    self.build(&s.evaluator)?,
                )
                .with_description(&s.description)
                .with_min_rating(map_rating(s.min_rating));
                if let Some(n) = s.max_refinements {
                    b = b.with_max_refinements(n);
                }
                if let Some(c) = &s.criteria {
                    b = b.with_criteria(c);
                }
                Arc::new(b.build().map_err(|e| self.relocate(e, key("evaluator")))?)
            }
            WorkflowSpec::Orchestrator(s) => {
                let mut b = Orchestrator::builder(name, self.build(&s.planner)?)
                    .with_description(&s.description)
                    .with_mode(match s.mode {
                        PlanModeKind::Iterative => PlanMode::Iterative,
                        _ => PlanMode::Full,
                    });
                for worker in &s.workers {
                    b = b.with_shared_worker(self.build(worker)?);
                }
                if let Some(synth) = &s.synthesizer {
                    b = b.with_synthesizer(self.build(synth)?);
                }
                if let Some(n) = s.max_iterations {
                    b = b.with_max_iterations(n);
                }
                if let Some(n) = s.max_plan_retries {
                    b = b.with_max_plan_retries(n);
                }
                Arc::new(b.build().map_err(|e| self.relocate(e, key("workers")))?)
            }
            WorkflowSpec::Swarm(s) => {
                let mut b = Swarm::builder(name).with_description(&s.description);
                for m in &s.members {
                    let (_, model) = self.provider(m)?;
                    let mut member = SwarmMember::from_llm(self.build_agent(m)?);
                    if let Some(model) = model {
                        member = member.with_model(model);
                    }
                    let handoffs: Vec<&String> = if s.handoffs.is_empty() {
                        s.members.iter().filter(|o| *o != m).collect()
                    } else {
                        s.handoffs
                            .get(m)
                            .map(|v| v.iter().collect())
                            .unwrap_or_default()
                    };
                    for h in handoffs {
                        member = member.with_handoff(h);
                    }
                    b = b.with_member(member);
                }
                if let Some(start) = &s.start {
                    b = b.with_start(start);
                }
                if let Some(n) = s.max_handoffs {
                    b = b.with_max_handoffs(n);
                }
                if let Some(n) = s.max_turns {
                    b = b.with_max_turns(n);
                }
                Arc::new(b.build().map_err(|e| self.relocate(e, key("members")))?)
            }
            other => {
                return Err(self.error(
                    format!("workflows.{name}"),
                    format!(
                        "workflow type `{}` is not supported by this server",
                        other.kind()
                    ),
                ));
            }
        };
        Ok(built)
    }

    fn agent_spec(&self, name: &str) -> Result<&AgentSpec> {
        self.config
            .agents
            .get(name)
            .ok_or_else(|| self.not_found(name))
    }

    fn provider(
        &self,
        name: &str,
    ) -> Result<(Arc<dyn agentkit_core::LlmProvider>, Option<String>)> {
        let spec = self.agent_spec(name)?;
        self.models
            .provider_for(name, spec)
            .map_err(|e| self.relocate(e, format!("agents.{name}.model")))
    }

    fn connections(&self, agent: &str) -> Result<ConnectionManager> {
        self.mcp.clone().ok_or_else(|| {
            self.error(
                format!("agents.{agent}.servers"),
                "no MCP connection manager: the config's MCP servers could not be set up",
            )
        })
    }

    /// Build agent `name` as an [`AgentLlm`] (swarms need the concrete type).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when `name` is not an agent; [`Error::Config`] when its provider is
    /// not configured or a tool glob is invalid.
    pub fn build_agent(&self, name: &str) -> Result<AgentLlm> {
        let spec = self.agent_spec(name)?;
        let (provider, model) = self.provider(name)?;
        let matcher = ToolMatcher::new(&spec.tools)
            .map_err(|(k, m)| self.error(format!("agents.{name}.{k}"), m))?;
        let mut agent = Agent::new(name, spec.instructions.clone())
            .with_description(spec.description.clone())
            .with_human_input(spec.human_input);
        let wrap = |source: Arc<dyn ToolSource>| -> Arc<dyn ToolSource> {
            if matcher.is_open() {
                source
            } else {
                Arc::new(FilteredTools::new(source, matcher.clone()))
            }
        };
        let roles: Vec<&str> = spec.roles.iter().map(String::as_str).collect();
        let servers: Vec<&str> = spec.servers.iter().map(String::as_str).collect();
        let servers = self
            .config
            .resolve_servers(&roles, &servers)
            .map_err(|e| self.relocate(e, format!("agents.{name}.servers")))?;
        if !servers.is_empty() {
            // Connections are the catalog's (one per server, started lazily): an agent built
            // again does not start its servers again.
            let manager = self.connections(name)?;
            agent = agent.with_tool_source(wrap(Arc::new(McpAggregator::new(manager, servers))));
        }
        for extra in self.extra_tools.get(name).into_iter().flatten() {
            agent = agent.with_tool_source(wrap(Arc::clone(extra)));
        }
        let mut params = RequestParams::new();
        if let Some(model) = model {
            params = params.with_model(model);
        }
        if let Some(n) = spec.limits.max_iterations {
            params = params.with_max_iterations(n);
        }
        if let Some(t) = spec
            .limits
            .timeout_seconds
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
        {
            params = params.with_timeout(t);
        }
        let mut llm = AgentLlm::shared(agent, provider).with_defaults(params);
        // Injection checks (`safety:`) sit inside the policy: a call the policy allows has its
        // arguments checked before it runs and its answer before the model reads it.
        if !spec.safety.is_default() {
            let mut layer = crate::gatewayops::safety::SafetyLayer::from_settings(&spec.safety);
            if let Some(sink) = &self.audit {
                layer = layer.with_audit(Arc::clone(sink));
            }
            llm = llm.with_tool_layer(layer);
        }
        // The workspace's and the API key's policies (found from the run's principal) apply
        // on top of the agent's own.
        let scoped =
            crate::policy::PrincipalPolicies::from_config(&self.config).map_err(|e| match e {
                Error::Config { key, message, .. } => self.error(key, message),
                other => other,
            })?;
        let scope = (!scoped.is_empty())
            .then(|| Arc::new(scoped) as Arc<dyn agentkit_core::policy::PolicyScope>);
        let layer = match (self.policy(name)?, scope) {
            (Some(policy), scope) => {
                let layer = PolicyLayer::new(policy);
                Some(match scope {
                    Some(s) => layer.with_scope(s),
                    None => layer,
                })
            }
            (None, Some(scope)) => Some(PolicyLayer::scoped(scope)),
            (None, None) => None,
        };
        if let Some(mut layer) = layer {
            if let Some(sink) = &self.audit {
                layer = layer.with_audit(Arc::clone(sink));
            }
            llm = llm.with_tool_layer(layer);
        }
        if let Some(m) = &self.memory {
            llm = llm.with_memory(Arc::clone(m));
        } else if let Some(n) = spec.history_messages {
            llm = llm.with_memory(Arc::new(
                InMemoryMemory::new().with_window(MemoryWindow::new().with_max_messages(n)),
            ));
        }
        Ok(llm)
    }

    /// How the runtime runs `name`: its description, timeout, budget (from `max_spend_usd`)
    /// and concurrency limit.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown name.
    pub fn target_options(&self, name: &str) -> Result<TargetOptions> {
        let (description, timeout, spend, concurrency) =
            if let Some(a) = self.config.agents.get(name) {
                let l = &a.limits;
                (
                    a.description.clone(),
                    l.timeout_seconds,
                    l.max_spend_usd,
                    l.concurrency,
                )
            } else if let Some(w) = self.config.workflows.get(name) {
                let l = w.limits();
                (
                    w.description().to_owned(),
                    l.timeout_seconds,
                    l.max_spend_usd,
                    l.concurrency,
                )
            } else {
                return Err(self.not_found(name));
            };
        let mut o = TargetOptions::new().with_description(description);
        if let Some(t) = timeout.and_then(|s| Duration::try_from_secs_f64(s).ok()) {
            o = o.with_timeout(t);
        }
        if let Some(usd) = spend {
            o = o.with_budget(Budget::new().with_max_cost_usd(usd));
        }
        if let Some(n) = concurrency {
            o = o.with_max_concurrency(n);
        }
        Ok(o)
    }

    /// The declared schedules as runtime [`Schedule`]s, sorted by name. Cron expressions,
    /// time zones and `at` times are checked here.
    ///
    /// # Errors
    ///
    /// A located [`Error::Config`] at `schedules.<name>.cron`, `.timezone` or `.at`.
    pub fn schedules(&self) -> Result<Vec<Schedule>> {
        let mut out = Vec::new();
        for (name, s) in &self.config.schedules {
            let schedule = schedule_from_spec(name, s).map_err(|(key, message)| {
                let key = if key.is_empty() {
                    format!("schedules.{name}")
                } else {
                    format!("schedules.{name}.{key}")
                };
                self.error(key, message)
            })?;
            out.push(schedule);
        }
        Ok(out)
    }
}

/// The `schedules:` of an agent's or workflow's spec (as JSON), checked as a deploy checks
/// them: each fires ([`ScheduleSpec::check`]), its cron expression, time zone or time parse,
/// and its `target` is empty or `owner` (when known). `Err`: the key that is wrong, relative to
/// the spec (`schedules.nightly.cron`), and what is wrong.
pub(crate) fn own_schedules(
    owner: Option<&str>,
    spec: &serde_json::Value,
) -> std::result::Result<BTreeMap<String, ScheduleSpec>, (String, String)> {
    let Some(value) = spec.get("schedules") else {
        return Ok(BTreeMap::new());
    };
    let schedules: BTreeMap<String, ScheduleSpec> = serde_path_to_error::deserialize(value)
        .map_err(|e| (format!("schedules.{}", e.path()), e.inner().to_string()))?;
    for (name, s) in &schedules {
        let at = |key: &str| {
            if key.is_empty() {
                format!("schedules.{name}")
            } else {
                format!("schedules.{name}.{key}")
            }
        };
        if !agentkit_core::config::is_valid_name(name) {
            return Err((
                at(""),
                format!(
                    "invalid schedule name `{}`: use 1 to 64 letters, digits, `_` or `-`",
                    name.escape_debug()
                ),
            ));
        }
        if let Some(owner) = owner
            && !s.target.is_empty()
            && s.target != owner
        {
            return Err((
                at("target"),
                format!(
                    "a schedule of `{owner}` runs `{owner}`; leave `target` out, or create a \
                     schedule of `{}` with `POST /v1/schedules`",
                    s.target
                ),
            ));
        }
        s.check().map_err(|(key, message)| (at(key), message))?;
        schedule_from_spec(name, s).map_err(|(key, message)| (at(key), message))?;
    }
    Ok(schedules)
}

/// The runtime schedule of spec `s` named `name`, or the key of `s` that is wrong (empty: the
/// schedule as a whole) and what is wrong with it.
pub(crate) fn schedule_from_spec(
    name: &str,
    s: &ScheduleSpec,
) -> std::result::Result<Schedule, (&'static str, String)> {
    let strip = |e: Error| {
        let message = match e {
            Error::InvalidRequest(m) => m,
            other => other.to_string(),
        };
        message
            .strip_prefix(&format!("schedule `{name}`: "))
            .unwrap_or(&message)
            .to_owned()
    };
    let input = s.input_or_default(name);
    let schedule = if let Some(expr) = &s.cron {
        Schedule::cron(name, &s.target, input, expr, s.timezone_or_utc()).map_err(|e| {
            let message = strip(e);
            if message.starts_with("unknown time zone") {
                ("timezone", message)
            } else {
                ("cron", message)
            }
        })?
    } else if let Some(every) = s.every {
        Schedule::every(name, &s.target, input, every.0).map_err(|e| ("every", strip(e)))?
    } else if let Some(at) = &s.at {
        let when = chrono::DateTime::parse_from_rfc3339(at).map_err(|e| {
            (
                "at",
                format!(
                    "invalid time `{at}`: {e}; write an RFC 3339 time such as \
                     `2026-01-01T09:00:00Z` or `2026-01-01T09:00:00+01:00`"
                ),
            )
        })?;
        let when: SystemTime = when.with_timezone(&chrono::Utc).into();
        Schedule::once(name, &s.target, input, when)
    } else {
        return Err((
            "",
            "a schedule needs one of `cron` (with `timezone`), `every` or `at`".to_owned(),
        ));
    };
    let overlap = match s.overlap {
        OverlapPolicy::AllowAll => Overlap::AllowAll,
        OverlapPolicy::BufferOne => Overlap::BufferOne,
        _ => Overlap::Skip,
    };
    let catch_up = match s.catch_up {
        CatchUpPolicy::Within(d) => CatchUp::Within(d.0),
        _ => CatchUp::Skip,
    };
    Ok(schedule.with_overlap(overlap).with_catch_up(catch_up))
}
