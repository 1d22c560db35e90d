//! [`Server`] and its builder: the platform over a store, and its HTTP router.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{AugmentedLlm, Error, Result};
use agentkit_runtime::{Runtime, Schedule, Store, StoreMemory};
use serde_json::{Value, json};

use crate::api::{self, AppState};
use crate::platform::{Directory, Platform, SpecBuilder};
use crate::registry::{EntryKind, Registry};
use crate::threads::{ThreadPolicy, Threads};

/// How to build a [`Server`]: the store, the key, agents from code and from specs.
pub struct ServerBuilder {
    store: Arc<dyn Store>,
    admin_key: Option<String>,
    node_id: Option<String>,
    code: Vec<(String, Arc<dyn AugmentedLlm>, String)>,
    specs: Vec<(String, EntryKind, Value)>,
    builder: Option<Arc<dyn SpecBuilder>>,
    policy: ThreadPolicy,
    max_body_bytes: usize,
    poll: Duration,
    schedules: Vec<Schedule>,
    webhooks: Vec<(String, crate::webhooks::Webhook)>,
    events: Vec<(String, String)>,
    retention: crate::retention::Retention,
    mcp: Option<agentkit_mcp::ConnectionManager>,
    metrics: Option<crate::observe::Metrics>,
    rate_limits: crate::ratelimit::RateLimits,
    jwt: Option<crate::tenancy::JwtVerifier>,
    master_key: Option<crate::vault::MasterKey>,
    previous_keys: Vec<crate::vault::MasterKey>,
    claim_for: Duration,
    approval_expiry: Option<Duration>,
    gateway: crate::gatewayops::GatewayConfig,
    budgets: Option<agentkit_runtime::SpendLedger>,
    run_limits: crate::ratelimit::RunRateLimits,
    schedules_label: Option<String>,
}

/// How long an approval claim lasts unless set.
const DEFAULT_CLAIM_FOR: Duration = Duration::from_secs(15 * 60);

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("node_id", &self.node_id)
            .field("policy", &self.policy)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// A fresh admin key: 244 random bits (two UUIDv4s), hex.
#[must_use]
pub fn generate_key() -> String {
    format!(
        "ak_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl ServerBuilder {
    /// The store the server will use.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            admin_key: None,
            node_id: None,
            code: Vec::new(),
            specs: Vec::new(),
            builder: None,
            policy: ThreadPolicy::default(),
            max_body_bytes: 2 * 1024 * 1024,
            poll: Duration::from_millis(250),
            schedules: Vec::new(),
            webhooks: Vec::new(),
            events: Vec::new(),
            retention: crate::retention::Retention::default(),
            mcp: None,
            metrics: None,
            rate_limits: crate::ratelimit::RateLimits::new(),
            jwt: None,
            master_key: None,
            previous_keys: Vec::new(),
            claim_for: DEFAULT_CLAIM_FOR,
            approval_expiry: None,
            gateway: crate::gatewayops::GatewayConfig::default(),
            budgets: None,
            run_limits: crate::ratelimit::RunRateLimits::new(),
            schedules_label: None,
        }
    }

    /// The label whose version's `schedules:` are live for an agent or workflow that has it
    /// (default [`SCHEDULES_LABEL`](crate::registry::SCHEDULES_LABEL), `prod`); until it has
    /// one, the schedules of its `latest` version are. Every process sharing a store must use
    /// the same label (each reconciles the schedules to its own). A label that is not a valid
    /// name fails [`build`](Self::build). `server.schedules_label` in `agentkit.yaml`.
    #[must_use]
    pub fn schedules_label(mut self, label: impl Into<String>) -> Self {
        self.schedules_label = Some(label.into());
        self
    }

    /// Limit how many runs of each agent may start per second in each workspace (default:
    /// none); a start over a limit is answered 429 with `Retry-After`.
    #[must_use]
    pub fn run_rate_limits(mut self, limits: crate::ratelimit::RunRateLimits) -> Self {
        self.run_limits = limits;
        self
    }

    /// Enforce budgets per agent and workspace per period (default: none): before every
    /// model call its estimated cost is set aside, and the call is refused when a budget that
    /// applies has too little left for it (the run fails with `budget exceeded`, saying which
    /// budget and when it starts over); a run start is refused with 429 and `Retry-After`
    /// (the period end), and `GET /v1/budgets` shows spend and holds. The ledger lives in
    /// this builder's store (see [`SpendLedger`](agentkit_runtime::SpendLedger)), e.g.
    /// `SpendLedger::new(Arc::clone(builder.store()), rules)`.
    #[must_use]
    pub fn budgets(mut self, ledger: agentkit_runtime::SpendLedger) -> Self {
        self.budgets = Some(ledger);
        self
    }

    /// Fire these schedules (exactly once per fire time across every process sharing the
    /// store). Their targets must be deployed agents or workflows.
    #[must_use]
    pub fn schedules(mut self, schedules: Vec<Schedule>) -> Self {
        self.schedules.extend(schedules);
        self
    }

    /// Accept signed deliveries at `POST /v1/hooks/{name}`: each starts a run of `target`
    /// (a deployed agent or workflow) whose message is the body's value at `message_pointer`
    /// (a JSON pointer), or the whole body. See [`webhooks`](crate::webhooks) for the
    /// signature.
    #[must_use]
    pub fn webhook(
        mut self,
        name: impl Into<String>,
        target: impl Into<String>,
        secret: impl Into<String>,
        message_pointer: Option<String>,
    ) -> Self {
        let mut hook = crate::webhooks::Webhook::new(target, secret);
        hook.message_pointer = message_pointer;
        self.webhooks.push((name.into(), hook));
        self
    }

    /// Start a run of `target` with the event's payload whenever `event` is emitted
    /// (`POST /v1/events/{event}` or [`Platform::emit_event`]).
    #[must_use]
    pub fn event_trigger(mut self, event: impl Into<String>, target: impl Into<String>) -> Self {
        self.events.push((event.into(), target.into()));
        self
    }

    /// Delete finished runs and idle threads after these ages (default: keep them); the
    /// server prunes every minute ([`Platform::prune`]).
    #[must_use]
    pub fn retention(mut self, retention: crate::retention::Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The outbound MCP servers shown and called at `/v1/servers` (agentkit.yaml
    /// `mcp.servers`). Their connections close when the server stops.
    #[must_use]
    pub fn mcp_servers(mut self, manager: agentkit_mcp::ConnectionManager) -> Self {
        self.mcp = Some(manager);
        self
    }

    /// The server's admin key (default: a random one, see [`Server::admin_key`]): a
    /// super-admin, `admin` of the `default/default` workspace and the only key that creates
    /// workspaces and keys of any workspace. Other keys are made with `POST /v1/keys`; see
    /// [`tenancy`](crate::tenancy).
    #[must_use]
    pub fn admin_key(mut self, key: impl Into<String>) -> Self {
        self.admin_key = Some(key.into());
        self
    }

    /// This process's node id (leases name it; default: a fresh UUID).
    #[must_use]
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// Register an agent built in code (any [`AugmentedLlm`]). Its registry version is the
    /// content hash of `description` and of what [`AugmentedLlm::fingerprint`] says of it
    /// (an `AgentLlm`: its instruction, provider, model and request defaults): a change to
    /// any of them is a new version at the next start. Give it a persistent memory (e.g.
    /// [`Server::memory_for`]) so its threads survive restarts.
    #[must_use]
    pub fn agent_llm(
        mut self,
        name: impl Into<String>,
        llm: Arc<dyn AugmentedLlm>,
        description: impl Into<String>,
    ) -> Self {
        self.code.push((name.into(), llm, description.into()));
        self
    }

    /// How declarative specs are checked and built (the `agentkit.yaml` catalog).
    #[must_use]
    pub fn spec_builder(mut self, builder: Arc<dyn SpecBuilder>) -> Self {
        self.builder = Some(builder);
        self
    }

    /// Deploy `spec` as `name` when the server is built (a no-op when unchanged). Workflows
    /// must come after the agents they compose.
    #[must_use]
    pub fn deploy(mut self, name: impl Into<String>, kind: EntryKind, spec: Value) -> Self {
        self.specs.push((name.into(), kind, spec));
        self
    }

    /// Count into `metrics` (default: fresh [`Metrics`](crate::observe::Metrics)); pass
    /// your own to read them in process or to serve them from another router as well.
    #[must_use]
    pub fn metrics(mut self, metrics: crate::observe::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Limit request rates per API key and per workspace (default: no limits); a request
    /// over a limit is answered 429 with `Retry-After`.
    #[must_use]
    pub fn rate_limits(mut self, limits: crate::ratelimit::RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Accept bearer JWTs verified by `verifier` beside API keys (default: API keys only);
    /// see [`tenancy::jwt`](crate::tenancy::jwt).
    #[must_use]
    pub fn jwt(mut self, verifier: crate::tenancy::JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// Seal the credential vault with `key` (default: none; the vault refuses writes and
    /// servers naming `{{secret:…}}` cannot connect). See [`vault`](crate::vault).
    #[must_use]
    pub fn master_key(mut self, key: crate::vault::MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// Earlier master keys (after a rotation): secrets sealed under them still open, and
    /// [`build`](Self::build) re-seals them under the current key. See
    /// [`vault`](crate::vault) on rotation.
    #[must_use]
    pub fn previous_master_keys(mut self, keys: Vec<crate::vault::MasterKey>) -> Self {
        self.previous_keys = keys;
        self
    }

    /// How long a claim on an approval keeps others from deciding it (default 15 minutes).
    #[must_use]
    pub fn approval_claim(mut self, duration: Duration) -> Self {
        self.claim_for = duration;
        self
    }

    /// Reject the gateway's calls waiting for an approval `after` they were asked (default:
    /// never; `server.approvals.expire_after`). Agents' approvals expire by their spec
    /// builder's audit log.
    #[must_use]
    pub fn approval_expiry(mut self, after: Option<Duration>) -> Self {
        self.approval_expiry = after;
        self
    }

    /// The credential vault over this builder's store and master key (set the key first).
    #[must_use]
    pub fn vault(&self) -> crate::vault::Vault {
        crate::vault::Vault::with_previous(
            Arc::clone(&self.store),
            self.master_key.as_ref(),
            &self.previous_keys,
        )
    }

    /// How the gateway API (`/v1/execute`, its WebSocket, `/v1/mcp/tools`,
    /// `/v1/safety/analyze`) behaves: limits, its policy, which workspaces see which MCP
    /// servers, registered platforms. See [`gatewayops`](crate::gatewayops).
    #[must_use]
    pub fn gateway(mut self, config: crate::gatewayops::GatewayConfig) -> Self {
        self.gateway = config;
        self
    }

    /// What to do when a run starts on a busy thread (default: reject with 409).
    #[must_use]
    pub fn thread_policy(mut self, policy: ThreadPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The largest request body accepted (default 2 MiB; larger bodies get 413).
    #[must_use]
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// How often this process polls the store for runs to execute (default 250 ms).
    #[must_use]
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }

    /// Open the platform: deploy code agents and specs, register every registry entry with
    /// the runtime, resume runs left unfinished and start executing.
    pub async fn build(self) -> Result<Server> {
        if let Some(label) = &self.schedules_label {
            crate::registry::check_name("schedules label", label)?;
        }
        let store = self.store;
        let vault = crate::vault::Vault::with_previous(
            Arc::clone(&store),
            self.master_key.as_ref(),
            &self.previous_keys,
        );
        if vault.has_previous_keys() {
            let r = vault.reseal().await?;
            tracing::info!(
                resealed = r.resealed,
                current = r.current,
                unreadable = r.unreadable.len(),
                "vault: secrets under previous master keys re-sealed under the current key"
            );
            if !r.unreadable.is_empty() {
                tracing::warn!(
                    secrets = ?r.unreadable,
                    "vault: no master key held opens these secrets; set them again"
                );
            }
            let hooks = crate::webhooks::WorkspaceHooks::new(Arc::clone(&store), vault.clone())
                .reseal()
                .await?;
            tracing::info!(
                resealed = hooks.resealed,
                current = hooks.current,
                unreadable = hooks.unreadable.len(),
                "vault: webhook secrets under previous master keys re-sealed under the current key"
            );
            if !hooks.unreadable.is_empty() {
                tracing::warn!(
                    webhooks = ?hooks.unreadable,
                    "vault: no master key held opens these webhooks' secrets; rotate them"
                );
            }
        }
        // One audit log (one writer task per workspace chain) for the gateway's calls, the
        // API's changes and the approvals withdrawn when their run ends.
        let audit = crate::policy::StoreAudit::new(Arc::clone(&store))
            .with_approval_expiry(self.approval_expiry);
        let gatewayops = Arc::new(crate::gatewayops::GatewayOps::new(
            self.gateway,
            Arc::new(audit.clone()),
        )?);
        gatewayops.set_vault(vault.clone());
        gatewayops.set_audit_log(audit.clone());
        let memory = Arc::new(StoreMemory::new(Arc::clone(&store)));
        let mut rb = Runtime::builder(Arc::clone(&store));
        if let Some(id) = &self.node_id {
            rb = rb.with_node_id(id.clone());
        }
        if let Some(ledger) = &self.budgets {
            rb = rb.with_spend_guard(Arc::new(ledger.clone()));
        }
        let metrics = self.metrics.unwrap_or_default();
        let runtime = rb
            .with_event_sink(Arc::new(metrics.clone()))
            .with_observer(Arc::new(crate::policy::EndedRuns::new(
                Arc::new(metrics.clone()),
                audit.clone(),
            )))
            .build();
        gatewayops.set_node(runtime.node_id());
        let registry = Registry::new(Arc::clone(&store));
        let threads = Threads::new(Arc::clone(&store), Arc::clone(&memory));
        let directory = Arc::new(Directory::new(
            registry.clone(),
            self.builder,
            Arc::clone(&memory) as Arc<dyn agentkit_core::Memory>,
        ));
        let platform = Arc::new(Platform::new(
            runtime.clone(),
            registry.clone(),
            threads,
            Arc::clone(&directory),
            self.policy,
        ));
        let _ = platform.this.set(Arc::downgrade(&platform));
        if let Some(label) = self.schedules_label {
            let _ = platform.schedules_label.set(label);
        }
        let _ = platform.gatewayops.set(Arc::clone(&gatewayops));
        if let Some(ledger) = self.budgets {
            let _ = platform.budgets.set(ledger);
        }
        if self.run_limits.is_limited() {
            let _ = platform.run_limits.set(self.run_limits);
        }
        let _ = platform.gateway.set(crate::gateway::Gateway::new(
            Arc::downgrade(&platform),
            crate::tenancy::Scope::default_scope(),
        ));
        for (name, llm, description) in self.code {
            let mut spec = json!({ "description": description });
            if let Some(behaviour) = llm.fingerprint() {
                spec["behaviour"] = behaviour;
            }
            directory.add_code(&name, llm);
            registry
                .deploy(
                    &name,
                    EntryKind::Code,
                    &description,
                    spec,
                    Default::default(),
                )
                .await?;
        }
        for (name, kind, spec) in self.specs {
            crate::deploy::deploy_spec(&platform, &name, kind, spec)
                .await
                .map_err(|e| Error::InvalidRequest(format!("deploying `{name}`: {e}")))?;
        }
        platform.sync_targets().await?;
        platform.add_triggers(self.webhooks, self.events).await?;
        for s in self.schedules {
            let name = s.name.clone();
            runtime.register_schedule(s)?;
            agentkit_core::sync::lock(&platform.ops.schedules)
                .config
                .insert(name);
        }
        // Schedules created over the API (stored) are registered too; see `schedules`.
        platform.sync_schedules().await?;
        // And those the agents' and workflows' specs declare, at their schedules label.
        platform.sync_owned_schedules().await?;
        // Before recovery: a recovered gateway call's run calls its MCP server.
        if let Some(m) = self.mcp {
            platform.set_mcp(m);
            watch_upstream_tools(Arc::downgrade(&platform));
        }
        runtime.recover().await?;
        runtime.start_polling(self.poll);
        // Always: schedules can be created over the API while the server runs.
        runtime.start_scheduler(Duration::from_secs(1));
        platform.set_retention(self.retention);
        let prune = Arc::downgrade(&platform);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::retention::PRUNE_EVERY).await;
                let Some(p) = prune.upgrade() else { break };
                match p.prune(agentkit_runtime::model::now_ms()).await {
                    Ok(r) if r != crate::retention::PruneReport::default() => {
                        tracing::info!(?r, "retention pruned");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention pruning failed"),
                }
            }
        });
        // Agents deployed through another process sharing the store run here too; stored
        // schedules and crons (shared by every process) are synced and fired from here.
        let sync = Arc::downgrade(&platform);
        let limits = self.rate_limits.clone();
        let crons = crate::crons::Crons::new(Arc::clone(runtime.store()));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Some(p) = sync.upgrade() else { break };
                if let Err(e) = p.sync_targets().await {
                    tracing::warn!(error = %e, "syncing the registry failed");
                }
                let now = agentkit_runtime::model::now_ms();
                if let Err(e) = crons.fire_due(&p, now).await {
                    tracing::warn!(error = %e, "firing crons failed");
                }
                if let Err(e) = p.sync_schedules().await {
                    tracing::warn!(error = %e, "syncing the stored schedules failed");
                }
                if let Err(e) = p.advance_queues().await {
                    tracing::warn!(error = %e, "advancing thread queues failed");
                }
                match crate::policy::expire_due(&p, now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "approvals expired"),
                    Err(e) => tracing::warn!(error = %e, "expiring approvals failed"),
                }
                limits.retain_recent();
            }
        });
        Ok(Server {
            gatewayops,
            audit,
            platform,
            admin_key: self.admin_key.unwrap_or_else(generate_key).into(),
            max_body_bytes: self.max_body_bytes,
            metrics,
            rate_limits: self.rate_limits,
            jwt: self.jwt,
            keys: crate::tenancy::ApiKeys::new(Arc::clone(&store)),
            workspaces: crate::tenancy::Workspaces::new(Arc::clone(&store)),
            vault,
            claim_for: self.claim_for,
        })
    }
}

/// The server: the platform and its HTTP API.
#[derive(Clone)]
pub struct Server {
    platform: Arc<Platform>,
    admin_key: Arc<str>,
    max_body_bytes: usize,
    metrics: crate::observe::Metrics,
    rate_limits: crate::ratelimit::RateLimits,
    jwt: Option<crate::tenancy::JwtVerifier>,
    vault: crate::vault::Vault,
    keys: crate::tenancy::ApiKeys,
    workspaces: crate::tenancy::Workspaces,
    claim_for: Duration,
    gatewayops: Arc<crate::gatewayops::GatewayOps>,
    audit: crate::policy::StoreAudit,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// A builder over `store` (SQLite, PostgreSQL or memory).
    pub fn builder(store: Arc<dyn Store>) -> ServerBuilder {
        ServerBuilder::new(store)
    }

    /// The platform (runs, registry, threads) for in-process use.
    #[must_use]
    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// The key requests must carry.
    #[must_use]
    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// The credential vault (`/v1/secrets`).
    #[must_use]
    pub fn vault(&self) -> &crate::vault::Vault {
        &self.vault
    }

    /// The server's Prometheus metrics (served at `GET /metrics`).
    #[must_use]
    pub fn metrics(&self) -> &crate::observe::Metrics {
        &self.metrics
    }

    /// A persistent conversation memory over `store`: give it to code-registered agents so
    /// their threads live in the store.
    #[must_use]
    pub fn memory_for(store: Arc<dyn Store>) -> Arc<StoreMemory> {
        Arc::new(StoreMemory::new(store))
    }

    /// The HTTP API as an axum router (serve it, or mount it in your own).
    pub fn router(&self) -> axum::Router {
        api::router(
            AppState::new(crate::api::AppStateParts {
                platform: Arc::clone(&self.platform),
                admin_key: Arc::clone(&self.admin_key),
                metrics: self.metrics.clone(),
                rate_limits: self.rate_limits.clone(),
                gatewayops: Arc::clone(&self.gatewayops),
                keys: self.keys.clone(),
                workspaces: self.workspaces.clone(),
                jwt: self.jwt.clone(),
                vault: self.vault.clone(),
                claim_for: self.claim_for,
                audit: self.audit.clone(),
            }),
            self.max_body_bytes,
        )
    }

    /// Serve the API on `listener` until `shutdown` completes, then shut down in bounded
    /// time: stop accepting connections, end open SSE streams (run events, LangGraph streams,
    /// `/mcp` sessions and their streams; a client reconnecting with `Last-Event-ID`, to
    /// another node or after the restart, gets what it missed from the store; a
    /// `/v1/execute/stream` batch cancels its calls in flight and ends with a
    /// `server_stopping` event), give requests in progress up to
    /// 10 s and then close every connection still open, and give in-flight runs 10 s more to
    /// finish; runs still going are left to resume on the next start (or on another node),
    /// from their journals.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        use axum::serve::ListenerExt;
        // Routes become services once here; each connection then takes a reference to the
        // router (`into_make_service`) instead of a copy of every route (what `axum::serve`
        // does for a bare `Router`: a cost per connection that clients opening a connection
        // per request, like rmcp's, paid on every call).
        let router: axum::Router = self.router().with_state(());
        // Small responses (an SSE event per MCP message, a JSON body) go out at once instead
        // of waiting for the client's delayed ACK of the previous segment (Nagle).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
            }
        });
        let stopping = self.platform.stopping.clone();
        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections, open event streams end");
                stopping.cancel();
            }
        };
        let served = axum::serve(listener, router.into_make_service())
            .with_graceful_shutdown(signal)
            .into_future();
        // No connection holds the process: the drain has a deadline from the signal on.
        let deadline = async {
            stopping.cancelled().await;
            tokio::time::sleep(HTTP_DRAIN).await;
        };
        tokio::select! {
            served = served => served.map_err(|e| Error::other("serving HTTP", e))?,
            () = deadline => tracing::warn!(
                "requests still in progress {} s after the shutdown signal; closing their \
                 connections",
                HTTP_DRAIN.as_secs()
            ),
        }
        self.platform.runtime().shutdown(RUN_GRACE).await;
        if let Some(m) = self.platform.mcp() {
            m.shutdown().await;
        }
        Ok(())
    }
}

/// How long requests in progress get to finish after the shutdown signal (see
/// [`Server::serve`]) before their connections are closed.
const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// How long runs executing get to finish after the HTTP drain (see [`Server::serve`]) before
/// they are stopped and released to resume on the next start or another node.
const RUN_GRACE: Duration = Duration::from_secs(10);

/// How often the outbound MCP servers' list epochs are compared (see [`watch_upstream_tools`]).
const UPSTREAM_TOOLS_EVERY: Duration = Duration::from_secs(1);

/// Follow the outbound MCP servers' tool lists: when one says its tools changed
/// (`notifications/tools/list_changed`, or a `subscriptions/listen` event, or its connection
/// was replaced), the connection manager moves that server's list epoch; within
/// [`UPSTREAM_TOOLS_EVERY`] every `/mcp` endpoint tells its clients that its tool list
/// changed, so they list the federated `server__tool` entries again. Ends with the platform.
fn watch_upstream_tools(platform: std::sync::Weak<Platform>) {
    fn epochs(p: &Platform) -> u64 {
        p.mcp().map_or(0, |m| {
            m.server_names()
                .iter()
                .filter_map(|n| m.lists_epoch(n).ok())
                .fold(0u64, u64::wrapping_add)
        })
    }
    tokio::spawn(async move {
        let mut seen = match platform.upgrade() {
            Some(p) => epochs(&p),
            None => return,
        };
        loop {
            tokio::time::sleep(UPSTREAM_TOOLS_EVERY).await;
            let Some(p) = platform.upgrade() else { break };
            let now = epochs(&p);
            if now != seen {
                seen = now;
                p.notify_tools_changed().await;
            }
        }
    });
}
