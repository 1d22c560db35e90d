//! Schedules as the API shows and controls them: the config's (fixed while the server runs),
//! those created over the API, stored as documents in [`COLLECTION`] so every server process
//! sharing the store (and the next start) registers them too, and those an agent's or
//! workflow's spec declares (its `schedules:`), which follow its versions.
//!
//! A spec's schedules are part of its version. The live ones are those of the version its
//! schedules label points at ([`Entry::schedules_label`]: `prod`, or the server's
//! `schedules_label`, once it has one, else `latest`), each registered as `<agent>.<schedule>` ([`owned_schedule_name`]) and pinned
//! to that version, so its runs record the version that declared it. Every label move
//! through this process (deploy, `PUT …/labels/{label}`, promote, rollback) reconciles the
//! agent's schedules at once; every process also reconciles every agent every few seconds
//! and at start ([`Platform::sync_owned_schedules`]), from the registry alone, so all
//! processes sharing a store converge on the same set. A fire's run has the idempotency key
//! `schedule:<name>:<fire time>`, so processes that fire the same schedule start one run
//! per fire time, and the name stays the same across versions (its history and pause carry
//! over).

use std::collections::{BTreeMap, BTreeSet};

use agentkit_core::config::{ScheduleSpec, is_valid_name};
use agentkit_core::sync::lock;
use agentkit_core::{Error, Result};
use agentkit_runtime::{
    Expect, Overlap, RunQuery, RunRecord, SCHEDULES_NAMESPACE, Schedule, ScheduleInfo, Trigger,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::platform::{Platform, RunView};
use crate::registry::{Entry, EntryKind};

/// The store collection of schedules created over the API (id: the schedule name; value:
/// `{"spec": <ScheduleSpec>, "token": <unique per creation>, "created_at": <ms>}`).
pub const COLLECTION: &str = "agentkit.schedule_specs";

/// Where a schedule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScheduleSource {
    /// The server's configuration (`agentkit.yaml` or code): change it there.
    Config,
    /// Created over the API (stored; delete it over the API).
    Api,
    /// Declared in an agent's or workflow's spec (`schedules:`): change it by deploying a
    /// new version and moving the label; see [`ScheduleView::owner`].
    Spec,
}

/// The agent or workflow version that declares a schedule ([`ScheduleSource::Spec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ScheduleOwner {
    /// The agent or workflow (also the schedule's target).
    pub agent: String,
    /// The version whose `schedules:` it is (its runs run this version).
    pub version: u32,
    /// The label that points at that version ([`Entry::schedules_label`]).
    pub label: String,
    /// The schedule's name in that spec.
    pub schedule: String,
}

/// The name a schedule `schedule` declared in the spec of agent or workflow `agent` (its
/// stored name) is registered, listed and controlled under: `<agent>.<schedule>`. No
/// configured or created schedule name holds a `.`, so the name is the spec's alone, and it
/// stays the same across versions.
///
/// ```
/// assert_eq!(agentkit_server::schedules::owned_schedule_name("support", "nightly"), "support.nightly");
/// ```
#[must_use]
pub fn owned_schedule_name(agent: &str, schedule: &str) -> String {
    format!("{agent}.{schedule}")
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriggerView {
    /// A cron expression in a time zone.
    Cron {
        /// The expression.
        cron: String,
        /// The IANA time zone.
        timezone: String,
    },
    /// A fixed interval, aligned to the Unix epoch.
    Every {
        /// The interval in ms.
        every_ms: u64,
    },
    /// Once.
    At {
        /// The time (ms since epoch).
        at: i64,
    },
    /// A trigger this server version cannot describe.
    Other {
        /// Its debug description.
        description: String,
    },
}

impl From<&Trigger> for TriggerView {
    fn from(t: &Trigger) -> Self {
        match t {
            Trigger::Cron { cron, tz } => Self::Cron {
                cron: cron.as_str().to_owned(),
                timezone: tz.name().to_owned(),
            },
            Trigger::Every(d) => Self::Every {
                every_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            },
            Trigger::Once(at) => Self::At { at: *at },
            other => Self::Other {
                description: format!("{other:?}"),
            },
        }
    }
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ScheduleView {
    /// Its name.
    pub name: String,
    /// The agent or workflow it starts.
    pub target: String,
    /// When it fires.
    pub trigger: TriggerView,
    /// The input of its runs.
    #[schema(value_type = Object)]
    pub input: Value,
    /// `skip`, `buffer_one` or `allow_all`: what a fire does while the last run is unfinished.
    pub overlap: String,
    /// Whether it is paused (on every server process).
    pub paused: bool,
    /// Its next fire time (ms since epoch), if it fires again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire_at: Option<i64>,
    /// The run of its latest fire (scheduled or manual), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunView>,
    /// Where it comes from.
    pub source: ScheduleSource,
    /// The agent or workflow version that declares it, when [`ScheduleSource::Spec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ScheduleOwner>,
}

/// One run in a schedule's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ScheduleRun {
    /// The fire time it was started for (ms since epoch); absent for a manual fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fire_at: Option<i64>,
    /// Whether it was started by hand (`trigger`), not by the schedule.
    pub manual: bool,
    /// The run.
    pub run: RunView,
}

fn overlap_name(o: Overlap) -> &'static str {
    match o {
        Overlap::AllowAll => "allow_all",
        Overlap::BufferOne => "buffer_one",
        _ => "skip",
    }
}

/// This process's record of the schedules it registered.
#[derive(Debug, Default)]
pub(crate) struct ScheduleBook {
    /// Names of the configuration's schedules.
    pub(crate) config: BTreeSet<String>,
    /// Schedules created over the API and registered here: name → creation token.
    pub(crate) api: BTreeMap<String, String>,
    /// Schedules of agents' and workflows' specs registered here: name → owner.
    pub(crate) owned: BTreeMap<String, ScheduleOwner>,
    /// Agents and workflows (stored names) whose spec schedules are registered here: the
    /// entry revision, and the version and label they were registered from.
    pub(crate) owners: BTreeMap<String, (u64, u32, String)>,
}

fn book(p: &Platform) -> std::sync::MutexGuard<'_, ScheduleBook> {
    lock(&p.ops.schedules)
}

/// A schedule spec from the API as a runtime schedule (400 with the key that is wrong).
fn build(name: &str, spec: &ScheduleSpec) -> Result<Schedule> {
    crate::spec::schedule_from_spec(name, spec).map_err(|(key, message)| {
        if key.is_empty() {
            Error::InvalidRequest(format!("schedule `{name}`: {message}"))
        } else {
            Error::InvalidRequest(format!("schedule `{name}`, `{key}`: {message}"))
        }
    })
}

impl Platform {
    fn schedule_source(&self, name: &str) -> (ScheduleSource, Option<ScheduleOwner>) {
        let b = book(self);
        if let Some(owner) = b.owned.get(name) {
            (ScheduleSource::Spec, Some(owner.clone()))
        } else if b.api.contains_key(name) {
            (ScheduleSource::Api, None)
        } else {
            (ScheduleSource::Config, None)
        }
    }

    async fn schedule_view(&self, info: ScheduleInfo) -> Result<ScheduleView> {
        let s = &info.schedule;
        let last_run = self
            .runtime
            .store()
            .latest_run_with_key_prefix(&s.fire_key_prefix())
            .await?
            .map(RunView::from);
        let (source, owner) = self.schedule_source(&s.name);
        Ok(ScheduleView {
            name: s.name.clone(),
            target: s.target.clone(),
            trigger: TriggerView::from(&s.trigger),
            input: s.input.clone(),
            overlap: overlap_name(s.overlap).to_owned(),
            paused: info.paused,
            next_fire_at: info.next_fire,
            last_run,
            source,
            owner,
        })
    }

    /// The schedules this server fires, by name, with their last fire's run.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>> {
        let mut out = Vec::new();
        for info in self.runtime.schedules() {
            out.push(self.schedule_view(info).await?);
        }
        Ok(out)
    }

    /// One schedule (`NotFound` when no schedule has this name).
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView> {
        let info = self.runtime.schedule(name)?;
        self.schedule_view(info).await
    }

    /// Pause a schedule on every server process sharing the store.
    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.runtime.pause_schedule(name).await?;
        self.schedule(name).await
    }

    /// Resume a paused schedule (fires that came while it was paused are skipped).
    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.runtime.resume_schedule(name).await?;
        self.schedule(name).await
    }

    /// Start a run of the schedule's target with its input now (a manual fire, in its
    /// history), whether or not it is paused.
    pub async fn trigger_schedule(&self, name: &str) -> Result<RunRecord> {
        let info = self.runtime.schedule(name)?;
        self.ensure_target(&info.schedule.target).await?;
        let id = self.runtime.trigger_schedule(name).await?;
        self.runtime.get(&id).await
    }

    /// The schedule's runs (scheduled and manual fires), newest first, one page.
    pub async fn schedule_history(
        &self,
        name: &str,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ScheduleRun>> {
        let s = self.runtime.schedule(name)?.schedule;
        let prefix = s.fire_key_prefix();
        let runs = self
            .runtime
            .store()
            .search_runs(
                &RunQuery::new()
                    .with_idempotency_key_prefix(prefix.clone())
                    .with_page(limit, offset),
            )
            .await?;
        Ok(runs
            .into_iter()
            .map(|r| {
                let key = r.idempotency_key.clone().unwrap_or_default();
                let manual = s.is_manual_fire_key(&key);
                let fire_at = key
                    .strip_prefix(&prefix)
                    .and_then(|t| t.parse::<i64>().ok());
                ScheduleRun {
                    fire_at,
                    manual,
                    run: RunView::from(r),
                }
            })
            .collect())
    }

    /// Create a schedule: stored (so every server process sharing the store, and the next
    /// start, fire it) and registered here. Its name must be new; its target deployed.
    pub async fn create_schedule(&self, name: &str, spec: ScheduleSpec) -> Result<ScheduleView> {
        // A workspace's schedules are stored as `<org>~<workspace>~<name>`: the name is
        // checked.
        if !is_valid_name(name.rsplit(crate::tenancy::SEP).next().unwrap_or(name)) {
            return Err(Error::InvalidRequest(format!(
                "schedule name `{}` is not valid: use 1 to 64 letters, digits, `_` or `-`",
                name.escape_debug()
            )));
        }
        let schedule = build(name, &spec)?;
        // A one-shot fires when its time comes after registration (or within its catch-up
        // window before it): one already past would be stored and never fire.
        if let Some(at) = &spec.at {
            let now = agentkit_runtime::model::now_ms();
            let from = match schedule.catch_up {
                agentkit_runtime::CatchUp::Within(w) => {
                    now.saturating_sub(i64::try_from(w.as_millis()).unwrap_or(i64::MAX))
                }
                _ => now,
            };
            if schedule.next_fire_after(from).is_none() {
                return Err(Error::InvalidRequest(format!(
                    "schedule `{name}`, `at`: `{at}` is in the past, so the schedule would never \
                     fire; pick a time in the future"
                )));
            }
        }
        if self.runtime.schedule(name).is_ok() {
            return Err(Error::invalid_state(
                format!("schedule {name}"),
                "a schedule with this name exists; delete it first or pick another name",
            ));
        }
        self.registry.entry(&spec.target).await.map_err(|e| {
            if e.is_not_found() {
                Error::InvalidRequest(format!(
                    "schedule `{name}`: target `{}` is not a deployed agent or workflow; deploy \
                     it first",
                    spec.target
                ))
            } else {
                e
            }
        })?;
        self.ensure_target(&spec.target).await?;
        let token = uuid::Uuid::now_v7().to_string();
        let value = json!({
            "spec": spec,
            "token": token,
            "created_at": agentkit_runtime::model::now_ms(),
        });
        let stored = self
            .runtime
            .store()
            .doc_put(COLLECTION, name, value, Expect::Absent)
            .await?;
        if stored.is_none() {
            return Err(Error::invalid_state(
                format!("schedule {name}"),
                "a schedule with this name exists; delete it first or pick another name",
            ));
        }
        // A pause left by an earlier schedule of this name does not apply to the new one.
        self.runtime
            .store()
            .kv_delete(SCHEDULES_NAMESPACE, name)
            .await?;
        if let Err(e) = self.runtime.register_schedule(schedule) {
            self.runtime
                .store()
                .doc_delete(COLLECTION, name, Expect::Any)
                .await?;
            return Err(e);
        }
        book(self).api.insert(name.to_owned(), token);
        self.schedule(name).await
    }

    /// Delete a schedule created over the API (on every server process within a few
    /// seconds). Its runs stay. Schedules from the configuration or an agent's spec cannot be
    /// deleted here (`InvalidState`, a 409 over HTTP).
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        if let Some(o) = book(self).owned.get(name) {
            return Err(owned_elsewhere(o));
        }
        if book(self).config.contains(name) {
            return Err(Error::invalid_state(
                format!("schedule {name}"),
                "it is declared in the server's configuration (agentkit.yaml `schedules:`); \
                 remove it there, or pause it",
            ));
        }
        let deleted = self
            .runtime
            .store()
            .doc_delete(COLLECTION, name, Expect::Any)
            .await?;
        let was_here = book(self).api.remove(name).is_some();
        if was_here {
            self.runtime.unregister_schedule(name)?;
        }
        if !deleted && !was_here {
            return Err(Error::not_found(
                "schedule",
                name,
                "list the schedules with GET /v1/schedules",
            ));
        }
        self.runtime
            .store()
            .kv_delete(SCHEDULES_NAMESPACE, name)
            .await?;
        Ok(())
    }

    /// Register the stored schedules (created over the API, possibly by another process) not
    /// yet registered here, and unregister those deleted. Returns how many changed.
    pub async fn sync_schedules(&self) -> Result<usize> {
        let store = self.runtime.store();
        let mut docs = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .doc_list(COLLECTION, "", after.as_deref(), 500)
                .await?;
            let done = page.len() < 500;
            after = page.last().map(|d| d.id.clone());
            docs.extend(page);
            if done {
                break;
            }
        }
        let mut changed = 0;
        let mut seen = BTreeSet::new();
        for doc in docs {
            let name = doc.id.clone();
            seen.insert(name.clone());
            let token = doc
                .value
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let local = {
                let b = book(self);
                if b.config.contains(&name) {
                    continue;
                }
                b.api.get(&name).cloned()
            };
            if local.as_deref() == Some(token.as_str()) {
                continue;
            }
            let spec: ScheduleSpec = match serde_json::from_value(
                doc.value.get("spec").cloned().unwrap_or_default(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "a stored schedule is unreadable; skipped");
                    continue;
                }
            };
            let registered = async {
                let schedule = build(&name, &spec)?;
                self.ensure_target(&spec.target).await?;
                if local.is_some() {
                    self.runtime.unregister_schedule(&name)?;
                }
                self.runtime.register_schedule(schedule)
            }
            .await;
            match registered {
                Ok(()) => {
                    book(self).api.insert(name, token);
                    changed += 1;
                }
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "registering a stored schedule failed");
                }
            }
        }
        let gone: Vec<String> = book(self)
            .api
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            book(self).api.remove(&name);
            if let Err(e) = self.runtime.unregister_schedule(&name) {
                tracing::warn!(schedule = %name, error = %e, "unregistering a deleted schedule failed");
            }
            changed += 1;
        }
        Ok(changed)
    }
}

/// The refusal to change a spec's schedule through `/v1/schedules`.
fn owned_elsewhere(o: &ScheduleOwner) -> Error {
    Error::invalid_state(
        format!("schedule {}", owned_schedule_name(&o.agent, &o.schedule)),
        format!(
            "it is declared in the spec of `{}` (v{}, label `{}`, `schedules.{}`); deploy a new \
             version of `{}` without it or with the change and move the label \
             (`agentkit agents deploy`, `agentkit agents promote`), or pause it",
            o.agent, o.version, o.label, o.schedule, o.agent
        ),
    )
}

/// The `schedules:` a version's spec declares (none for code agents). A spec the registry
/// holds was checked when it was deployed; one unreadable now is logged and has none.
fn declared_schedules(v: &crate::registry::Version) -> BTreeMap<String, ScheduleSpec> {
    if !matches!(v.kind, EntryKind::Agent | EntryKind::Workflow) {
        return BTreeMap::new();
    }
    match crate::spec::own_schedules(None, &v.spec) {
        Ok(s) => s,
        Err((key, message)) => {
            tracing::warn!(agent = %v.name, version = v.version, %key, %message, "a version's schedules are unreadable; none registered");
            BTreeMap::new()
        }
    }
}

/// The input of the runs of a spec's schedule: its own (or the default one), acting as the
/// workspace that owns `agent` (a stored name). A `principal` written in the spec is
/// replaced: a spec never chooses who its runs act as.
fn owned_input(agent: &str, schedule: &str, spec: &ScheduleSpec) -> Value {
    let mut input = spec.input_or_default(schedule);
    if let Value::Object(o) = &mut input {
        o.remove("principal");
        let mut parts = agent.split(crate::tenancy::SEP);
        if let (Some(org), Some(ws), Some(_)) = (parts.next(), parts.next(), parts.next()) {
            let principal = agentkit_core::Principal::new(org, ws);
            if let Ok(p) = serde_json::to_value(principal) {
                o.insert("principal".into(), p);
            }
        }
    }
    input
}

impl Platform {
    /// Make the schedules this process fires for agent or workflow `name` (its stored name)
    /// those its spec declares at the version of its schedules label
    /// ([`Entry::schedules_label`]): new ones registered, changed ones replaced (keeping the
    /// fires already made and their pause), removed ones unregistered. Idempotent; a no-op
    /// when that version's schedules are registered already. Returns how many changed.
    pub async fn reconcile_owned_schedules(&self, name: &str) -> Result<usize> {
        match self.registry.find(name).await? {
            Some(entry) => self.apply_owned(&entry).await,
            None => Ok(0),
        }
    }

    /// After a label of `name` (a stored name) moved through this process: reconcile its
    /// schedules now. A failure is logged, not returned: the move is made, and the next
    /// [`sync_owned_schedules`](Self::sync_owned_schedules) applies it.
    pub(crate) async fn label_moved(&self, name: &str) {
        if let Err(e) = self.reconcile_owned_schedules(name).await {
            tracing::warn!(agent = name, error = %e, "reconciling the schedules of a spec after a label move failed; the periodic sync retries");
        }
    }

    /// [`reconcile_owned_schedules`](Self::reconcile_owned_schedules) for every agent and
    /// workflow of every workspace (at start and every few seconds, so a label moved through
    /// another process, or while this one was down, applies here too).
    pub async fn sync_owned_schedules(&self) -> Result<usize> {
        let entries = self.registry.list_all().await?;
        Ok(self.sync_owned_schedules_of(&entries).await)
    }

    /// [`sync_owned_schedules`](Self::sync_owned_schedules) over `entries` already read (the
    /// registry's periodic sync reads them once for its targets and for these); a failure is
    /// logged per entry. Returns how many schedules changed.
    pub(crate) async fn sync_owned_schedules_of(&self, entries: &[Entry]) -> usize {
        let mut changed = 0;
        for entry in entries {
            match self.apply_owned(entry).await {
                Ok(n) => changed += n,
                Err(e) => {
                    tracing::warn!(agent = %entry.name, error = %e, "registering the schedules of a spec failed");
                }
            }
        }
        changed
    }

    async fn apply_owned(&self, entry: &Entry) -> Result<usize> {
        let name = entry.name.as_str();
        let live = self.schedules_label();
        let Some(version) = entry.schedules_version(live) else {
            return Ok(0);
        };
        let label = entry.schedules_label(live).to_owned();
        let applied = book(self).owners.get(name).is_some_and(|(revision, v, l)| {
            *revision > entry.revision || (*v == version && *l == label)
        });
        if applied {
            return Ok(0);
        }
        let declared = declared_schedules(&self.registry.version(name, version).await?);
        if !declared.is_empty() {
            self.ensure_target(name).await?;
        }
        let mut wanted = Vec::new();
        for (schedule, spec) in declared {
            let id = owned_schedule_name(name, &schedule);
            let mut spec = spec;
            spec.input = Some(owned_input(name, &schedule, &spec));
            spec.target = name.to_owned();
            match build(&id, &spec) {
                Ok(s) => wanted.push((
                    s.with_version(version),
                    ScheduleOwner {
                        agent: name.to_owned(),
                        version,
                        label: label.clone(),
                        schedule,
                    },
                )),
                Err(e) => {
                    tracing::warn!(schedule = %id, version, error = %e, "a spec's schedule cannot be registered");
                }
            }
        }
        // Applied in one go under the book, after checking that no newer revision of the
        // entry was applied while this one was read.
        let mut b = book(self);
        if b.owners
            .get(name)
            .is_some_and(|(revision, ..)| *revision > entry.revision)
        {
            return Ok(0);
        }
        let mut changed = 0;
        let gone: Vec<String> = b
            .owned
            .iter()
            .filter(|(id, o)| o.agent == name && !wanted.iter().any(|(s, _)| &s.name == *id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            b.owned.remove(&id);
            if let Err(e) = self.runtime.unregister_schedule(&id) {
                tracing::warn!(schedule = %id, error = %e, "unregistering a spec's schedule failed");
            }
            changed += 1;
        }
        for (schedule, owner) in wanted {
            let id = schedule.name.clone();
            match self.runtime.replace_schedule(schedule) {
                Ok(()) => {
                    b.owned.insert(id, owner);
                    changed += 1;
                }
                Err(e) => {
                    tracing::warn!(schedule = %id, version, error = %e, "registering a spec's schedule failed");
                }
            }
        }
        b.owners
            .insert(name.to_owned(), (entry.revision, version, label.clone()));
        if changed > 0 {
            tracing::info!(agent = name, version, %label, changed, "spec schedules reconciled");
        }
        Ok(changed)
    }
}
