//! The platform: what every API surface (agentkit's `/v1`, Agent Protocol, the LangGraph
//! subset, the CLI in process) does, in one place: start runs on versions and threads, read
//! and control them, and read their events from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use agentkit_core::{AugmentedLlm, Error, Result, RunStatus, StartOptions, Usage};
use agentkit_runtime::{
    AgentResolver, EntryKind as JournalKind, Expect, JournalEntry, RunQuery, RunRecord, Runtime,
    TargetOptions,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::registry::{EntryKind, Registry, Version};
use crate::tenancy::{Scope, WorkspaceId};

/// The scope of a principal's workspace (`default/default` without one).
pub(crate) fn scope_of(p: Option<&agentkit_core::Principal>) -> Scope {
    match p.and_then(|p| Some((p.tenant.as_deref()?, p.workspace.as_deref()?))) {
        Some((org, ws)) => Scope::of(&WorkspaceId::new(org, ws)),
        None => Scope::default_scope(),
    }
}

/// What the caller asked of a start with an idempotency key (its message and thread), kept
/// to check the run the start returned: with a key used before, that is the earlier run.
#[derive(Debug, Clone)]
pub(crate) struct KeyedStart {
    message: String,
    thread: Option<String>,
}

impl KeyedStart {
    /// What `start` asks, if it has an idempotency key.
    pub(crate) fn of(start: &StartRun) -> Option<Self> {
        start.idempotency_key.as_ref().map(|_| Self {
            message: start.message.clone(),
            thread: start.thread_id.clone(),
        })
    }

    /// `Err` saying what to do when `run` (what the start returned, in `scope`) was started
    /// with another message or thread: the key was reused for another run.
    pub(crate) fn check(&self, scope: &Scope, run: &RunRecord) -> std::result::Result<(), String> {
        let thread = self.thread.as_deref().and_then(|t| scope.internal(t));
        if run.input.get("message").and_then(Value::as_str) == Some(self.message.as_str())
            && run.input.get("thread").and_then(Value::as_str) == thread.as_deref()
        {
            return Ok(());
        }
        Err(format!(
            "the run was not started: its idempotency key was used for run {} with another \
             message or thread; send a new key for a new run",
            run.id
        ))
    }
}

fn no_agent(name: &str) -> Error {
    Error::not_found(
        "agent or workflow",
        name,
        "list them with `GET /v1/agents` (or `agentkit agents list`)",
    )
}

fn no_run(run_id: &str) -> Error {
    Error::not_found("run", run_id, "check the run id")
}
use crate::threads::{ThreadPolicy, Threads};

/// The store collection indexing runs by thread (`{thread}/{run}`).
pub const THREAD_RUNS: &str = "agentkit.thread_runs";

/// The store collection of the LangGraph-only facts of a run (its metadata, multitask
/// strategy and stream modes), by run id; deleted with the run.
pub const RUN_META: &str = "agentkit.langgraph.run";

/// Marker documents (id = thread id) of the threads with runs waiting their turn, so every
/// node can advance the queues, also after a crash.
const THREAD_QUEUES: &str = "agentkit.thread_queues";

/// What [`Platform::wait`] waits for: the end, or a stop for input, approval or a pause.
const WAIT_FOR: &[RunStatus] = &[
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Cancelled,
    RunStatus::WaitingInput,
    RunStatus::WaitingApproval,
    RunStatus::Paused,
];

/// At most this many runs wait on one thread.
const MAX_QUEUED: usize = 100;

/// What advancing a thread's queue found.
enum QueueStep {
    /// The run in front is live: try again when it has ended.
    Wait(String),
    /// A run is starting (recorded, not stored yet): try again shortly.
    Retry,
    /// Nothing waits.
    Idle,
}

/// Builds the agent of a declarative version (its spec) given its members, already built at
/// their pinned versions. The server's declarative catalog implements it; a custom server may
/// supply its own.
pub trait SpecBuilder: Send + Sync + 'static {
    /// The agent (or composed workflow) for `version`.
    fn build(
        &self,
        version: &Version,
        members: &BTreeMap<String, Arc<dyn AugmentedLlm>>,
        memory: Arc<dyn agentkit_core::Memory>,
    ) -> Result<Arc<dyn AugmentedLlm>>;

    /// Check a spec before it is stored: `Ok` with its description and the names of the
    /// agents or workflows it composes (their current `latest` versions are pinned into the
    /// new version), or a clear error.
    fn validate(&self, kind: EntryKind, spec: &Value) -> Result<(String, Vec<String>)>;

    /// The runtime options (timeout, budget, concurrency, description) of `version`.
    fn target_options(&self, version: &Version) -> TargetOptions {
        let _ = version;
        TargetOptions::new()
    }
}

/// Resolves (name, version) to a built agent: code-registered agents, or declarative
/// versions built by the [`SpecBuilder`] and cached.
pub(crate) struct Directory {
    registry: Registry,
    code: RwLock<HashMap<String, Arc<dyn AugmentedLlm>>>,
    pub(crate) builder: Option<Arc<dyn SpecBuilder>>,
    memory: Arc<dyn agentkit_core::Memory>,
    cache: Mutex<HashMap<(String, u32), Arc<dyn AugmentedLlm>>>,
}

use agentkit_core::sync::lock;

impl Directory {
    pub(crate) fn new(
        registry: Registry,
        builder: Option<Arc<dyn SpecBuilder>>,
        memory: Arc<dyn agentkit_core::Memory>,
    ) -> Self {
        Self {
            registry,
            code: RwLock::default(),
            builder,
            memory,
            cache: Mutex::default(),
        }
    }

    pub(crate) fn add_code(&self, name: &str, llm: Arc<dyn AugmentedLlm>) {
        agentkit_core::sync::write(&self.code).insert(name.to_owned(), llm);
        lock(&self.cache).retain(|(n, _), _| n != name);
    }

    fn code(&self, name: &str) -> Option<Arc<dyn AugmentedLlm>> {
        agentkit_core::sync::read(&self.code).get(name).cloned()
    }

    fn resolve_boxed<'a>(
        &'a self,
        name: &'a str,
        version: u32,
        depth: usize,
    ) -> futures::future::BoxFuture<'a, Result<Arc<dyn AugmentedLlm>>> {
        Box::pin(async move {
            if let Some(hit) = lock(&self.cache).get(&(name.to_owned(), version)) {
                return Ok(Arc::clone(hit));
            }
            let v = self.registry.version(name, version).await?;
            if v.kind == EntryKind::Code {
                let llm = self.code(name).ok_or_else(|| Error::Unavailable {
                    what: format!("agent `{name}`"),
                    message: "it is registered from code in another server process; run it \
                              there, or register it in this one too"
                        .into(),
                })?;
                // Cached like built specs (a version's kind never changes), so a run of a code
                // agent does not read its version from the store every time.
                lock(&self.cache).insert((name.to_owned(), version), Arc::clone(&llm));
                return Ok(llm);
            }
            if depth > 16 {
                return Err(Error::InvalidRequest(format!(
                    "workflow `{name}` nests more than 16 levels deep"
                )));
            }
            let mut members = BTreeMap::new();
            for (m, mv) in &v.members {
                // A workspace's members are stored with its prefix; the spec names them
                // without it.
                let key = m.rsplit(crate::tenancy::SEP).next().unwrap_or(m);
                members.insert(key.to_owned(), self.resolve_boxed(m, *mv, depth + 1).await?);
            }
            let builder = self.builder.as_ref().ok_or_else(|| Error::Unavailable {
                what: format!("agent `{name}`"),
                message: "this server has no builder for declarative specs".into(),
            })?;
            // A workspace's agents are stored as `<org>~<workspace>~<name>`; the builder sees
            // the name its spec was written with.
            let mut v = v;
            if let Some(external) = v.name.rsplit(crate::tenancy::SEP).next() {
                v.name = external.to_owned();
            }
            let built = builder.build(&v, &members, Arc::clone(&self.memory))?;
            lock(&self.cache).insert((name.to_owned(), version), Arc::clone(&built));
            Ok(built)
        })
    }
}

#[async_trait]
impl AgentResolver for Directory {
    async fn resolve(&self, target: &str, version: u32) -> Result<Arc<dyn AugmentedLlm>> {
        self.resolve_boxed(target, version, 0).await
    }
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct RunView {
    /// The run id.
    pub run_id: String,
    /// The agent or workflow.
    pub agent: String,
    /// The version it runs (fixed when it started).
    pub version: u32,
    /// The thread it continues, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Its status.
    #[schema(value_type = String, example = "succeeded")]
    pub status: RunStatus,
    /// Its input.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Its output, once it succeeded (`{"text": …}` for agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens used.
    #[schema(value_type = Object)]
    pub usage: Usage,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was created (ms since epoch).
    pub created_at: i64,
    /// When it last changed (ms since epoch).
    pub updated_at: i64,
}

impl RunView {
    /// The run as `scope`'s workspace sees it (its agent's name without the workspace
    /// prefix).
    #[must_use]
    pub fn in_scope(r: RunRecord, scope: &Scope) -> Self {
        let mut v = Self::from(r);
        if let Some(name) = scope.external(&v.agent) {
            v.agent = name.to_owned();
        }
        if let Some(t) = v.thread_id.as_deref().and_then(|t| scope.external(t)) {
            let t = t.to_owned();
            v.input["thread"] = Value::String(t.clone());
            v.thread_id = Some(t);
        }
        v
    }
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        let thread_id = r
            .input
            .get("thread")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Self {
            run_id: r.id,
            agent: r.target,
            version: r.version,
            thread_id,
            status: r.status,
            input: r.input,
            output: r.output,
            error: r.error,
            usage: r.usage,
            cost_usd: r.cost_usd,
            attempts: r.attempts,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// One event of a run, read from its journal: `id` is the journal sequence number, so a
/// client that resumes after `id` misses nothing and sees nothing twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct RunEventView {
    /// The journal sequence number.
    pub id: u64,
    /// `model` (a model response, with its text and tool calls), `tool_result`, `step`,
    /// `signal`, `timer` or `other`.
    pub event: String,
    /// The journal key.
    pub key: String,
    /// The event's data (the journaled value, plus `text` for model responses).
    #[schema(value_type = Object)]
    pub data: Value,
    /// Model or tool latency in ms.
    pub latency_ms: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// When it was recorded (ms since epoch).
    pub created_at: i64,
}

impl From<JournalEntry> for RunEventView {
    fn from(e: JournalEntry) -> Self {
        let event = match e.kind {
            JournalKind::Llm => "model",
            JournalKind::Tool => "tool_result",
            JournalKind::Step => "step",
            JournalKind::Signal => "signal",
            JournalKind::Timer => "timer",
            _ => "other",
        };
        let mut data = e.value;
        if e.kind == JournalKind::Llm
            && let Some(parts) = data.pointer("/message/content").and_then(Value::as_array)
        {
            let text: String = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            let calls: Vec<Value> = parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("tool_call"))
                .cloned()
                .collect();
            data = json!({"text": text, "tool_calls": calls, "response": data});
        }
        Self {
            id: e.seq,
            event: event.to_owned(),
            key: e.key,
            data,
            latency_ms: e.latency_ms,
            cost_usd: e.cost_usd,
            created_at: e.created_at,
        }
    }
}

/// A request to start a run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StartRun {
    /// The agent or workflow.
    pub agent: String,
    /// The user message.
    pub message: String,
    /// Continue this thread (it must exist).
    pub thread_id: Option<String>,
    /// A label or version number (default: `latest`).
    pub reference: Option<String>,
    /// Same key, same run: a key is its workspace's and its target's (another agent's run
    /// with the same key is another run); an empty key is refused.
    pub idempotency_key: Option<String>,
    /// What to do if the thread is busy (default: the server's policy).
    pub if_busy: Option<ThreadPolicy>,
    /// Who starts it: its workspace scopes `agent` and `thread_id` (default:
    /// `default/default`), and the run's `RunContext` carries it.
    pub principal: Option<agentkit_core::Principal>,
}

impl StartRun {
    /// Start `agent` with `message`.
    #[must_use]
    pub fn new(agent: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            message: message.into(),
            ..Self::default()
        }
    }

    /// On thread `id`.
    #[must_use]
    pub fn on_thread(mut self, id: impl Into<String>) -> Self {
        self.thread_id = Some(id.into());
        self
    }

    /// Started by `principal` (in its workspace).
    #[must_use]
    pub fn by(mut self, principal: agentkit_core::Principal) -> Self {
        self.principal = Some(principal);
        self
    }

    /// The scope of the principal's workspace (`default/default` without one).
    #[must_use]
    pub fn scope(&self) -> Scope {
        scope_of(self.principal.as_ref())
    }

    /// At a label or version.
    #[must_use]
    pub fn at(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }
}

/// The platform's services over one runtime and store.
pub struct Platform {
    pub(crate) runtime: Runtime,
    pub(crate) registry: Registry,
    pub(crate) threads: Threads,
    pub(crate) directory: Arc<Directory>,
    pub(crate) policy: ThreadPolicy,
    registered: Mutex<std::collections::HashSet<String>>,
    pub(crate) ops: crate::ops::OpsState,
    /// The runs streamed over SSE in this process (one store poller per run).
    pub(crate) feeds: crate::api::sse::Feeds,
    /// The `/mcp` endpoint of `default/default` (set once the platform is in its `Arc`).
    pub(crate) gateway: std::sync::OnceLock<crate::gateway::Gateway>,
    /// The `/mcp` endpoints of the other workspaces (by stored prefix), made on first use.
    pub(crate) gateways:
        Mutex<HashMap<String, (crate::gateway::Gateway, agentkit_mcp::McpHttpService)>>,
    /// This platform, for tasks it spawns (set once it is in its `Arc`).
    pub(crate) this: std::sync::OnceLock<std::sync::Weak<Platform>>,
    /// The spend ledger, when budgets are configured.
    pub(crate) budgets: std::sync::OnceLock<agentkit_runtime::SpendLedger>,
    /// Run-start rate limits per agent.
    pub(crate) run_limits: std::sync::OnceLock<crate::ratelimit::RunRateLimits>,
    /// The gateway API, whose calls that need an approval become durable runs (see
    /// [`gatewayops::durable`](crate::gatewayops::durable)).
    pub(crate) gatewayops: std::sync::OnceLock<Arc<crate::gatewayops::GatewayOps>>,
    /// Cancelled when the server starts shutting down: open SSE streams (run events, `/mcp`
    /// sessions) end, so the HTTP drain does not wait for them.
    pub(crate) stopping: tokio_util::sync::CancellationToken,
    /// The label whose version's `schedules:` are live (set once at build; default
    /// [`SCHEDULES_LABEL`](crate::registry::SCHEDULES_LABEL)).
    pub(crate) schedules_label: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").finish_non_exhaustive()
    }
}

/// How long a run recorded on a thread but not yet stored counts as starting.
const STARTING_GRACE_MS: i64 = 30_000;

fn busy(thread: &str, run: &str, status: &str) -> Error {
    Error::invalid_state(
        format!("thread {thread}"),
        format!(
            "is busy with run {run} ({status}); wait for it, cancel it, or start the run with \
             `if_busy: interrupt` (LangGraph: `multitask_strategy: interrupt`)"
        ),
    )
}

fn live(status: RunStatus) -> bool {
    !status.is_terminal()
}

impl Platform {
    pub(crate) fn new(
        runtime: Runtime,
        registry: Registry,
        threads: Threads,
        directory: Arc<Directory>,
        policy: ThreadPolicy,
    ) -> Self {
        Self {
            runtime,
            registry,
            threads,
            directory,
            policy,
            registered: Mutex::default(),
            ops: crate::ops::OpsState::default(),
            feeds: Default::default(),
            gateway: std::sync::OnceLock::new(),
            gateways: Mutex::default(),
            this: std::sync::OnceLock::new(),
            budgets: std::sync::OnceLock::new(),
            run_limits: std::sync::OnceLock::new(),
            gatewayops: std::sync::OnceLock::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
            schedules_label: std::sync::OnceLock::new(),
        }
    }

    /// The label whose version's `schedules:` are the live schedules of an agent or
    /// workflow that has it (else `latest`'s): `prod` unless the server was built with
    /// [`ServerBuilder::schedules_label`](crate::ServerBuilder::schedules_label).
    #[must_use]
    pub fn schedules_label(&self) -> &str {
        self.schedules_label
            .get()
            .map_or(crate::registry::SCHEDULES_LABEL, String::as_str)
    }

    /// The runtime (runs, journals, schedules).
    #[must_use]
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The registry.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The threads.
    #[must_use]
    pub fn threads(&self) -> &Threads {
        &self.threads
    }

    /// Make sure the runtime executes runs of `name` (after a deploy, or a deploy by another
    /// server process).
    pub(crate) async fn ensure_target(&self, name: &str) -> Result<()> {
        if lock(&self.registered).contains(name) {
            return Ok(());
        }
        if crate::gatewayops::durable::is_gateway_target(name) {
            return self.ensure_gateway_target(name).await;
        }
        let entry = self.registry.entry(name).await?;
        let latest = self.registry.version(name, entry.latest).await?;
        let options = match (&self.directory.builder, latest.kind) {
            (Some(b), EntryKind::Agent | EntryKind::Workflow) => b.target_options(&latest),
            _ => TargetOptions::new().with_description(entry.description.clone()),
        }
        .with_version(entry.latest);
        self.runtime.register_resolved_agent(
            name,
            Arc::clone(&self.directory) as Arc<dyn AgentResolver>,
            options,
        );
        lock(&self.registered).insert(name.to_owned());
        Ok(())
    }

    /// Whether the runtime executes runs of `name` already (registered by this platform).
    pub(crate) fn is_registered(&self, name: &str) -> bool {
        lock(&self.registered).contains(name)
    }

    /// Note that `name` is registered with the runtime.
    pub(crate) fn mark_registered(&self, name: &str) {
        lock(&self.registered).insert(name.to_owned());
    }

    /// Register every registry entry with the runtime (at start, and periodically so runs of
    /// agents deployed through another process execute here too), and the built-in gateway
    /// call workflow of every workspace that used it; reconcile the schedules the entries'
    /// specs declare ([`sync_owned_schedules`](Self::sync_owned_schedules)).
    pub async fn sync_targets(&self) -> Result<usize> {
        self.sync_gateway_targets().await?;
        let mut n = 0;
        let entries = self.registry.list_all().await?;
        // The same read serves the specs' schedules (a label moved through another process);
        // first, so an entry that cannot be registered below does not hold them up.
        self.sync_owned_schedules_of(&entries).await;
        for e in &entries {
            if !lock(&self.registered).contains(&e.name) {
                self.ensure_target(&e.name).await?;
                n += 1;
            }
        }
        let tools: Vec<(String, String)> = entries
            .into_iter()
            .map(|e| (e.name, e.description))
            .collect();
        if let Some(g) = self.gateway.get() {
            g.sync(&tools).await;
        }
        let others: Vec<crate::gateway::Gateway> = lock(&self.gateways)
            .values()
            .map(|(g, _)| g.clone())
            .collect();
        for g in others {
            g.sync(&tools).await;
        }
        Ok(n)
    }

    /// Start a run: resolve the version, claim the thread (by its policy) and store the run.
    pub async fn start(&self, req: StartRun) -> Result<RunRecord> {
        let (agent, input, options, thread) = self.prepare(req).await?;
        let run = self
            .runtime
            .start_run_record(&agent, input, options)
            .await?;
        if let Some(thread) = thread {
            self.watch_queue(&thread);
        }
        Ok(run)
    }

    /// [`start`](Self::start) the run and [`wait`](Self::wait) for it. When this process
    /// executes it to the end, its record comes straight from the execution (no store reads).
    pub async fn start_and_wait(&self, req: StartRun) -> Result<RunRecord> {
        let (agent, input, options, thread) = self.prepare(req).await?;
        if let Some(thread) = thread {
            // Held behind the thread's live run: store it, then wait through the store.
            let run = self
                .runtime
                .start_run_record(&agent, input, options)
                .await?;
            self.watch_queue(&thread);
            return self.wait(&run.id).await;
        }
        self.runtime
            .run_until(&agent, input, options, WAIT_FOR)
            .await
    }

    /// Resolve the version and claim the thread: the target, input and options to start
    /// the run with, and the thread whose queue it joined (started held) if it did.
    async fn prepare(
        &self,
        req: StartRun,
    ) -> Result<(String, Value, StartOptions, Option<String>)> {
        let scope = req.scope();
        let mut req = req;
        let public_agent = req.agent.clone();
        req.agent = scope
            .internal(&req.agent)
            .ok_or_else(|| no_agent(&req.agent))?;
        if let Some(t) = &req.thread_id {
            let internal = scope.internal(t).ok_or_else(|| {
                Error::not_found("thread", t.as_str(), "create it first (`POST /threads`)")
            })?;
            req.thread_id = Some(internal);
        }
        if let Some(k) = &req.idempotency_key {
            if k.is_empty() {
                return Err(Error::InvalidRequest(
                    "the idempotency key is empty; send a key unique to this run (the same one \
                     on a retry), or none"
                        .into(),
                ));
            }
            if scope.is_default() && k.contains(crate::tenancy::SEP) {
                return Err(Error::InvalidRequest(format!(
                    "idempotency key `{}` contains `{}`, which is reserved; choose another",
                    k.escape_debug(),
                    crate::tenancy::SEP
                )));
            }
            // Keys are the workspace's and the target's own: another agent's run with the
            // same key is another run. `req.agent` is the internal name (the workspace's
            // prefix and the agent, neither of which holds the separator).
            req.idempotency_key = Some(format!("{}{}{k}", req.agent, crate::tenancy::SEP));
        }
        let version = self
            .registry
            .resolve(&req.agent, req.reference.as_deref())
            .await?;
        self.ensure_target(&req.agent).await?;
        self.check_budgets(req.principal.as_ref(), &public_agent)
            .await?;
        let run_id = uuid::Uuid::now_v7().to_string();
        let mut input = json!({ "message": req.message });
        if let Some(p) = &req.principal {
            input["principal"] = serde_json::to_value(p)
                .map_err(|e| Error::json("encoding the run's principal", e))?;
        }
        // The request's trace, for a run executed later or elsewhere (another node, a resume
        // after a restart): its span joins the trace of the request that started it. Only
        // when traces are exported (see `agentkit_core::trace`).
        if let Some(tp) = agentkit_core::trace::current_traceparent() {
            input["traceparent"] = Value::String(tp);
        }
        let mut queued = false;
        if let Some(thread) = &req.thread_id {
            queued = self
                .claim_thread(thread, &run_id, req.if_busy.unwrap_or(self.policy))
                .await?;
            input["thread"] = Value::String(thread.clone());
            self.runtime
                .store()
                .doc_put(
                    THREAD_RUNS,
                    &format!("{thread}/{run_id}"),
                    json!({"run_id": run_id}),
                    Expect::Any,
                )
                .await?;
        }
        let mut options = StartOptions::new()
            .with_version(version)
            .with_run_id(&run_id);
        if let Some(k) = req.idempotency_key {
            options = options.with_idempotency_key(k);
        }
        if queued {
            options = options.held();
        }
        let queue = if queued { req.thread_id } else { None };
        Ok((req.agent, input, options, queue))
    }

    fn check_run_rate(&self, workspace: &str, agent: &str) -> Result<()> {
        match self.run_limits.get() {
            Some(l) => l.check(workspace, agent),
            None => Ok(()),
        }
    }

    /// Refuse a run of `agent` while its budget or its workspace's has too little left for its
    /// next model call (the run would stop before its first model call anyway), or over the agent's run-start rate limit.
    async fn check_budgets(
        &self,
        principal: Option<&agentkit_core::Principal>,
        agent: &str,
    ) -> Result<()> {
        let workspace =
            match principal.and_then(|p| Some((p.tenant.as_deref()?, p.workspace.as_deref()?))) {
                Some((org, ws)) => format!("{org}/{ws}"),
                None => crate::policy::DEFAULT_WORKSPACE.to_owned(),
            };
        let Some(ledger) = self.budgets.get() else {
            return self.check_run_rate(&workspace, agent);
        };
        match ledger.exhausted(&workspace, Some(agent)).await? {
            // A start refused by its budget does not use up the agent's rate.
            None => self.check_run_rate(&workspace, agent),
            Some(status) => Err(Error::LimitReached {
                what: format!("run of `{agent}` refused"),
                message: ledger.explain(&status),
                retry_after: std::time::Duration::from_millis(
                    u64::try_from(status.resets_in_ms(ledger.now_ms())).unwrap_or(0),
                ),
            }),
        }
    }

    /// Claim `thread` for `run_id` by `policy`. `true` when the run was put in the thread's
    /// queue (policy `enqueue` on a busy thread): start it held.
    async fn claim_thread(&self, thread: &str, run_id: &str, policy: ThreadPolicy) -> Result<bool> {
        for _ in 0..32 {
            let t = self.threads.get(thread).await?;
            // Runs already wait their turn: a new one queues behind them, or is refused.
            if let Some(first) = t.queued.first() {
                match policy {
                    ThreadPolicy::Reject => return Err(busy(thread, first, "queued")),
                    ThreadPolicy::Enqueue => {
                        if self.enqueue(t, run_id).await? {
                            return Ok(true);
                        }
                        continue;
                    }
                    _ => {}
                }
            }
            // A run recorded on the thread but not stored yet is starting (its starter won
            // the thread a moment ago): busy, like a live run. After `STARTING_GRACE` it is
            // taken as a start that died between the two writes.
            if let Some(last) = &t.last_run
                && self.runtime.store().get_run(last).await?.is_none()
                && agentkit_runtime::model::now_ms().saturating_sub(t.updated_at)
                    < STARTING_GRACE_MS
            {
                match policy {
                    ThreadPolicy::Reject => return Err(busy(thread, last, "starting")),
                    ThreadPolicy::Enqueue => {
                        if self.enqueue(t, run_id).await? {
                            return Ok(true);
                        }
                        continue;
                    }
                    _ => {}
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            if let Some(last) = &t.last_run
                && let Some(run) = self.runtime.store().get_run(last).await?
                && live(run.status)
            {
                match policy {
                    ThreadPolicy::Reject => {
                        return Err(busy(thread, last, run.status.as_str()));
                    }
                    ThreadPolicy::Enqueue => {
                        if self.enqueue(t, run_id).await? {
                            return Ok(true);
                        }
                        continue;
                    }
                    ThreadPolicy::Interrupt => {
                        match self
                            .runtime
                            .cancel_with_reason(last, &format!("interrupted by run {run_id}"))
                            .await
                        {
                            Ok(()) => {}
                            Err(Error::InvalidState { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            let mut next = t;
            next.last_run = Some(run_id.to_owned());
            if self.threads.replace(next).await?.is_some() {
                return Ok(false);
            }
        }
        Err(Error::Unavailable {
            what: format!("thread {thread}"),
            message: "too many concurrent runs are starting on it; retry".into(),
        })
    }

    /// Put `run_id` at the end of the thread's queue (compare-and-swap on `t`). `false` when
    /// the thread changed meanwhile (read it again).
    async fn enqueue(&self, t: crate::threads::Thread, run_id: &str) -> Result<bool> {
        let thread = t.thread_id.clone();
        if t.queued.len() >= MAX_QUEUED {
            return Err(Error::invalid_state(
                format!("thread {thread}"),
                format!(
                    "has {MAX_QUEUED} runs waiting already; wait for them, or cancel some \
                     (`POST /v1/runs/{{id}}/cancel`)"
                ),
            ));
        }
        let mut next = t;
        next.queued.push(run_id.to_owned());
        if self.threads.replace(next).await?.is_none() {
            return Ok(false);
        }
        self.runtime
            .store()
            .doc_put(
                THREAD_QUEUES,
                &thread,
                json!({ "thread_id": thread }),
                Expect::Any,
            )
            .await?;
        Ok(true)
    }

    /// Advance the thread's queue in a task: now, and each time the run in front ends.
    fn watch_queue(&self, thread: &str) {
        let Some(this) = self.this.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let thread = thread.to_owned();
        tokio::spawn(async move {
            loop {
                match this.advance_queue(&thread).await {
                    Ok(QueueStep::Idle) => return,
                    Ok(QueueStep::Retry) => {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Ok(QueueStep::Wait(run)) => {
                        let ended = [
                            RunStatus::Succeeded,
                            RunStatus::Failed,
                            RunStatus::Cancelled,
                        ];
                        if let Err(e) = this.runtime.wait_for_status(&run, &ended).await {
                            tracing::warn!(%thread, %run, error = %e, "waiting for a thread's run failed; the queue is advanced by the periodic sweep");
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%thread, error = %e, "advancing a thread's queue failed; the periodic sweep retries");
                        return;
                    }
                }
            }
        });
    }

    /// Start the thread's next queued run if the run in front of it has ended.
    async fn advance_queue(&self, thread: &str) -> Result<QueueStep> {
        let store = self.runtime.store();
        for _ in 0..32 {
            let t = match self.threads.get(thread).await {
                Ok(t) => t,
                Err(e) if e.is_not_found() => {
                    store.doc_delete(THREAD_QUEUES, thread, Expect::Any).await?;
                    return Ok(QueueStep::Idle);
                }
                Err(e) => return Err(e),
            };
            let starting =
                agentkit_runtime::model::now_ms().saturating_sub(t.updated_at) < STARTING_GRACE_MS;
            let Some(next) = t.queued.first().cloned() else {
                store.doc_delete(THREAD_QUEUES, thread, Expect::Any).await?;
                // A run queued between the read and the delete keeps its marker.
                if !self.threads.get(thread).await?.queued.is_empty() {
                    continue;
                }
                return Ok(QueueStep::Idle);
            };
            if let Some(last) = &t.last_run {
                match store.get_run(last).await? {
                    Some(r) if live(r.status) => return Ok(QueueStep::Wait(last.clone())),
                    None if starting => return Ok(QueueStep::Retry),
                    _ => {}
                }
            }
            match store.get_run(&next).await? {
                // Recorded in the queue but not stored yet: its start is in progress.
                None if starting => return Ok(QueueStep::Retry),
                Some(r) if r.status == RunStatus::Queued => {
                    self.runtime.release(&next).await?;
                }
                // Its start failed, it was cancelled while it waited, or it was released
                // already: it leaves the queue either way.
                _ => {}
            }
            let mut after = t;
            after.queued.remove(0);
            after.last_run = Some(next);
            self.threads.replace(after).await?;
        }
        Ok(QueueStep::Retry)
    }

    /// Advance every thread queue (the periodic sweep: queues whose watcher died with its
    /// process, or whose front run ended on another node). How many threads were looked at.
    pub(crate) async fn advance_queues(&self) -> Result<usize> {
        // Every queue, page by page: one left out would wait for its watcher forever.
        let mut pages = crate::pages::DocPages::new(&**self.runtime.store(), THREAD_QUEUES, "");
        let mut seen = 0;
        while let Some(page) = pages.next().await? {
            seen += page.len();
            for d in &page {
                if let Err(e) = self.advance_queue(&d.id).await {
                    tracing::warn!(thread = %d.id, error = %e, "advancing a thread's queue failed");
                }
            }
        }
        Ok(seen)
    }

    /// Tell the clients of every `/mcp` endpoint (each workspace's) that the tool list
    /// changed: an outbound MCP server's tools changed, and the federated `server__tool`
    /// entries follow it.
    pub(crate) async fn notify_tools_changed(&self) {
        let mut all: Vec<crate::gateway::Gateway> = lock(&self.gateways)
            .values()
            .map(|(g, _)| g.clone())
            .collect();
        all.extend(self.gateway.get().cloned());
        for g in all {
            g.tools_changed().await;
        }
    }

    /// The `/mcp` service of `scope`'s workspace (made and filled on first use).
    pub(crate) async fn mcp_service(&self, scope: &Scope) -> Option<agentkit_mcp::McpHttpService> {
        if let Some((_, svc)) = lock(&self.gateways).get(scope.prefix()) {
            return Some(svc.clone());
        }
        let this = self.this.get()?.clone();
        let g = crate::gateway::Gateway::new(this, scope.clone());
        let entries: Vec<(String, String)> = match self.registry.list_all().await {
            Ok(all) => all.into_iter().map(|e| (e.name, e.description)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing agents for a workspace's /mcp failed");
                Vec::new()
            }
        };
        g.sync(&entries).await;
        let svc = g.service();
        let mut map = lock(&self.gateways);
        let (_, svc) = map.entry(scope.prefix().to_owned()).or_insert((g, svc));
        Some(svc.clone())
    }

    /// The run, if it is in the `default/default` workspace (see [`run_in`](Self::run_in)).
    pub async fn run(&self, run_id: &str) -> Result<RunRecord> {
        self.run_in(&Scope::default_scope(), run_id).await
    }

    /// The run, if it is in `scope`'s workspace; another workspace's run is not found,
    /// exactly like one that does not exist.
    pub async fn run_in(&self, scope: &Scope, run_id: &str) -> Result<RunRecord> {
        match self.runtime.store().get_run(run_id).await? {
            Some(r) if scope.contains(&r.target) => Ok(r),
            _ => Err(no_run(run_id)),
        }
    }

    /// The run, in any workspace (for the server's own tasks).
    pub(crate) async fn run_any(&self, run_id: &str) -> Result<RunRecord> {
        self.runtime.get(run_id).await
    }

    /// Wait until the run finishes (succeeded, failed or cancelled) or waits for input or
    /// approval.
    pub async fn wait(&self, run_id: &str) -> Result<RunRecord> {
        self.runtime.wait_for_status(run_id, WAIT_FOR).await
    }

    /// Runs of the `default/default` workspace matching `query`, newest first.
    pub async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.runs_in(&Scope::default_scope(), query).await
    }

    /// Runs of `scope`'s workspace matching `query` (whose targets are the workspace's
    /// names), newest first.
    pub async fn runs_in(&self, scope: &Scope, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let mut q = query.clone();
        q.targets = query
            .targets
            .iter()
            .filter_map(|t| scope.internal(t))
            .collect();
        if !query.targets.is_empty() && q.targets.is_empty() {
            return Ok(Vec::new());
        }
        if q.targets.is_empty() && !scope.is_default() {
            // Every target of the workspace (runs are found by target), with its gateway
            // calls that needed an approval.
            q.targets = self
                .registry
                .list_all()
                .await?
                .into_iter()
                .map(|e| e.name)
                .filter(|n| scope.contains(n))
                .collect();
            if let Some(g) = scope.internal(crate::gatewayops::durable::GATEWAY_CALL)
                && self.is_registered(&g)
            {
                q.targets.push(g);
            }
            if q.targets.is_empty() {
                return Ok(Vec::new());
            }
        }
        if let Some(k) = &q.idempotency_key_prefix
            && !scope.is_default()
        {
            q.idempotency_key_prefix =
                Some(format!("{}{k}", scope.internal("").unwrap_or_default()));
        }
        let mut runs = self.runtime.store().search_runs(&q).await?;
        // The default workspace's query had no target filter: drop other workspaces' runs.
        runs.retain(|r| scope.contains(&r.target));
        Ok(runs)
    }

    /// Runs started on a thread, newest first: the `limit` newest (a list limit the caller
    /// chooses; every run of the thread is considered, however many it has).
    pub async fn thread_runs(&self, thread: &str, limit: usize) -> Result<Vec<RunRecord>> {
        self.thread_runs_paged(thread, limit, crate::pages::PAGE)
            .await
    }

    /// [`thread_runs`](Self::thread_runs), reading the thread's run index `page` entries at
    /// a time.
    async fn thread_runs_paged(
        &self,
        thread: &str,
        limit: usize,
        page: usize,
    ) -> Result<Vec<RunRecord>> {
        self.threads.get(thread).await?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Index entries are `<thread>/<run id>`, run ids UUIDv7 (time-ordered), so the newest
        // runs are the last entries: keep the last `limit` ids of the whole index.
        let prefix = format!("{thread}/");
        let mut newest: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        let mut pages = crate::pages::DocPages::new(&**self.runtime.store(), THREAD_RUNS, &prefix)
            .with_page(page);
        while let Some(docs) = pages.next().await? {
            for d in docs {
                if newest.len() == limit {
                    newest.pop_front();
                }
                newest.push_back(d.id);
            }
        }
        let mut out = Vec::new();
        for key in newest.iter().rev() {
            let Some(id) = key.rsplit('/').next() else {
                continue;
            };
            if let Some(r) = self.runtime.store().get_run(id).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The run's events after journal sequence `after` (all when `None`), at most `limit`.
    pub async fn events(
        &self,
        run_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RunEventView>> {
        Ok(self
            .runtime
            .store()
            .journal_after(run_id, after, limit)
            .await?
            .into_iter()
            .map(RunEventView::from)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::StartRun;

    /// A thread with more runs than one page of its run index: the newest `limit` come
    /// back, newest first (reading only the first page would give the oldest).
    #[tokio::test]
    async fn thread_runs_are_the_newest_across_index_pages() {
        let store = Arc::new(agentkit_runtime::MemoryStore::new());
        let echo = agentkit_core::AgentLlm::new(
            agentkit_core::Agent::new("echo", "Repeat."),
            agentkit_core::ScriptedProvider::echo(),
        );
        let server = crate::Server::builder(store)
            .admin_key("k")
            .agent_llm("echo", Arc::new(echo), "Repeats")
            .build()
            .await
            .unwrap();
        let p = server.platform();
        let thread = p
            .threads()
            .create(None, Default::default(), false)
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let run = p
                .start_and_wait(StartRun::new("echo", format!("m{i}")).on_thread(&thread.thread_id))
                .await
                .unwrap();
            ids.push(run.id);
        }
        for page in [1, 2, 3, 5, 8] {
            let got: Vec<String> = p
                .thread_runs_paged(&thread.thread_id, 3, page)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(
                got,
                vec![ids[4].clone(), ids[3].clone(), ids[2].clone()],
                "page {page}"
            );
        }
        let all = p.thread_runs(&thread.thread_id, 100).await.unwrap();
        assert_eq!(all.len(), 5);
        assert!(
            p.thread_runs_paged(&thread.thread_id, 0, 2)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
