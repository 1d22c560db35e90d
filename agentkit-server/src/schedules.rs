//! Schedules as the API shows and controls them: the config's (fixed while the server runs)
//! and those created over the API, stored as documents in [`COLLECTION`] so every server
//! process sharing the store (and the next start) registers them too.

use std::collections::{BTreeMap, BTreeSet};

use agentkit_core::config::{ScheduleSpec, is_valid_name};
use agentkit_core::{Error, Result};
use agentkit_runtime::{
    Expect, Overlap, RunQuery, RunRecord, SCHEDULES_NAMESPACE, Schedule, ScheduleInfo, Trigger,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::platform::{Platform, RunView};

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
}

fn book(p: &Platform) -> std::sync::MutexGuard<'_, ScheduleBook> {
    agentkit_core::sync::lock(&p.ops.schedules)
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
    fn schedule_source(&self, name: &str) -> ScheduleSource {
        if book(self).api.contains_key(name) {
            ScheduleSource::Api
        } else {
            ScheduleSource::Config
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
        Ok(ScheduleView {
            name: s.name.clone(),
            target: s.target.clone(),
            trigger: TriggerView::from(&s.trigger),
            input: s.input.clone(),
            overlap: overlap_name(s.overlap).to_owned(),
            paused: info.paused,
            next_fire_at: info.next_fire,
            last_run,
            source: self.schedule_source(&s.name),
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
    /// seconds). Its runs stay. Schedules from the configuration cannot be deleted here.
    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
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
