//! Crons (LangGraph's `/runs/crons`): stored schedules that start runs of an agent with a
//! fixed user message, on a thread or stateless. They live in the store, so every server
//! process sharing it evaluates them (the server does every two seconds). A process claims a
//! cron's due fires by moving the cron's cursor with compare-and-swap, and each fire's run has
//! the idempotency key `cron:<id>:<fire ms>`, so a fire starts one run however many processes
//! look at it. After downtime only the latest missed fire runs.
//!
//! Fire times come from the runtime's [`Schedule`] (cron expressions with seconds and IANA
//! time zones).
//!
//! A cron belongs to the workspace of its agent: `agent` and `thread_id` are stored names
//! (`<org>~<workspace>~<name>`, plain for `default/default`, see [`crate::tenancy`]), and
//! `principal` is who created it; its runs start as that principal, in its workspace. The
//! `…_in` methods see only one workspace's crons; another workspace's cron is not found,
//! exactly like one that does not exist.

use std::sync::Arc;

use agentkit_core::{Error, Result};
use agentkit_runtime::{Expect, Schedule, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::platform::{Platform, StartRun};
use crate::tenancy::Scope;
use crate::threads::ThreadPolicy;

/// The store collection of crons.
pub const COLLECTION: &str = "agentkit.cron";

/// A cron: when to start which agent with which message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Cron {
    /// Its id (a UUID).
    pub cron_id: String,
    /// The agent or workflow it starts (its stored name).
    pub agent: String,
    /// The thread its runs continue (its stored id; none: stateless runs).
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Who created it: its runs start as this principal, in its workspace (none: the
    /// `default/default` workspace, as crons stored before workspaces had them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<agentkit_core::Principal>,
    /// A cron expression (5 fields, or 6 with seconds).
    pub schedule: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// The user message of each run.
    pub message: String,
    /// The request it was created from, as given (LangGraph clients read it back).
    pub payload: Value,
    /// The client's metadata.
    pub metadata: Map<String, Value>,
    /// No fires after this time (ms since epoch).
    #[serde(default)]
    pub end_time: Option<i64>,
    /// Whether it fires.
    pub enabled: bool,
    /// What a fire does when the thread is busy (default: the server's policy).
    #[serde(default)]
    pub if_busy: Option<ThreadPolicy>,
    /// When it was created (ms since epoch).
    pub created_at: i64,
    /// When it last changed (ms since epoch).
    pub updated_at: i64,
    /// Fires up to this time (ms since epoch) are claimed.
    pub evaluated_until: i64,
    /// The store revision (compare-and-swap).
    #[serde(skip)]
    pub revision: u64,
}

impl Cron {
    /// A cron starting `agent` with `message` on `schedule` (in UTC, enabled, no end).
    /// A malformed expression is an error.
    pub fn new(
        agent: impl Into<String>,
        schedule: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<Self> {
        let now = agentkit_runtime::model::now_ms();
        let cron = Self {
            cron_id: uuid::Uuid::now_v7().to_string(),
            agent: agent.into(),
            thread_id: None,
            principal: None,
            schedule: schedule.into(),
            timezone: "UTC".into(),
            message: message.into(),
            payload: Value::Null,
            metadata: Map::new(),
            end_time: None,
            enabled: true,
            if_busy: None,
            created_at: now,
            updated_at: now,
            evaluated_until: now,
            revision: 0,
        };
        cron.fire_schedule()?;
        Ok(cron)
    }

    /// The runtime schedule that computes its fire times (checks the expression and zone).
    pub fn fire_schedule(&self) -> Result<Schedule> {
        Schedule::cron(
            &self.cron_id,
            &self.agent,
            Value::Null,
            &self.schedule,
            &self.timezone,
        )
    }

    /// Its fire times in `(after, until]`, oldest first (at most 1000), up to its end time.
    pub fn fires_between(&self, after: i64, until: i64) -> Result<Vec<i64>> {
        let until = self.end_time.map_or(until, |end| until.min(end));
        Ok(self.fire_schedule()?.fires_between(after, until))
    }

    /// Its next fire after `now`, if it is enabled and fires again within a year.
    #[must_use]
    pub fn next_run(&self, now: i64) -> Option<i64> {
        if !self.enabled {
            return None;
        }
        let year = 366 * 24 * 3600 * 1000;
        self.fires_between(now, now.saturating_add(year))
            .ok()?
            .first()
            .copied()
    }
}

fn decode(doc: &agentkit_runtime::Doc) -> Result<Cron> {
    let mut c: Cron = serde_json::from_value(doc.value.clone())
        .map_err(|e| Error::json(format!("reading cron `{}`", doc.id), e))?;
    c.revision = doc.revision;
    Ok(c)
}

fn no_cron(id: &str) -> Error {
    Error::not_found("cron", id, "list them with `POST /runs/crons/search`")
}

fn encode(c: &Cron) -> Result<Value> {
    serde_json::to_value(c).map_err(|e| Error::json("encoding a cron", e))
}

/// The crons in a [`Store`].
#[derive(Clone)]
pub struct Crons {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Crons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crons").finish_non_exhaustive()
    }
}

impl Crons {
    /// The crons of `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Store a new cron.
    pub async fn create(&self, cron: Cron) -> Result<Cron> {
        cron.fire_schedule()?;
        let mut cron = cron;
        match self
            .store
            .doc_put(COLLECTION, &cron.cron_id, encode(&cron)?, Expect::Absent)
            .await?
        {
            Some(doc) => {
                cron.revision = doc.revision;
                Ok(cron)
            }
            None => Err(Error::invalid_state(
                format!("cron {}", cron.cron_id),
                "already exists",
            )),
        }
    }

    /// The cron.
    pub async fn get(&self, id: &str) -> Result<Cron> {
        match self.store.doc_get(COLLECTION, id).await? {
            Some(d) => decode(&d),
            None => Err(no_cron(id)),
        }
    }

    /// The cron, if it is in `scope`'s workspace; another workspace's cron is not found,
    /// exactly like one that does not exist.
    pub async fn get_in(&self, scope: &Scope, id: &str) -> Result<Cron> {
        match self.get(id).await {
            Ok(c) if scope.contains(&c.agent) => Ok(c),
            Ok(_) => Err(no_cron(id)),
            Err(e) => Err(e),
        }
    }

    /// The crons of `scope`'s workspace, oldest first.
    pub async fn list_in(&self, scope: &Scope) -> Result<Vec<Cron>> {
        let mut all = self.list().await?;
        all.retain(|c| scope.contains(&c.agent));
        Ok(all)
    }

    /// [`update`](Self::update) the cron if it is in `scope`'s workspace (else not found).
    pub async fn update_in(
        &self,
        scope: &Scope,
        id: &str,
        f: impl Fn(&mut Cron) -> Result<()>,
    ) -> Result<Cron> {
        self.update(id, |c| {
            if !scope.contains(&c.agent) {
                return Err(no_cron(id));
            }
            f(c)
        })
        .await
    }

    /// Delete the cron if it is in `scope`'s workspace (else not found); its runs stay.
    pub async fn delete_in(&self, scope: &Scope, id: &str) -> Result<()> {
        self.get_in(scope, id).await?;
        self.store.doc_delete(COLLECTION, id, Expect::Any).await?;
        Ok(())
    }

    /// Every cron, oldest first (all of them: the fire sweep reads this list, and a cron left
    /// out of it would never fire).
    pub async fn list(&self) -> Result<Vec<Cron>> {
        self.list_paged(crate::pages::PAGE).await
    }

    /// [`list`](Self::list), reading `page` crons per store call.
    async fn list_paged(&self, page: usize) -> Result<Vec<Cron>> {
        let mut out = Vec::new();
        let mut pages = crate::pages::DocPages::new(&*self.store, COLLECTION, "").with_page(page);
        while let Some(docs) = pages.next().await? {
            for d in &docs {
                out.push(decode(d)?);
            }
        }
        Ok(out)
    }

    /// Read-modify-write with compare-and-swap; `f` may refuse with an error. A changed
    /// schedule is checked, and fires are evaluated from now on.
    pub async fn update(&self, id: &str, f: impl Fn(&mut Cron) -> Result<()>) -> Result<Cron> {
        for _ in 0..32 {
            let mut c = self.get(id).await?;
            let rev = c.revision;
            f(&mut c)?;
            c.fire_schedule()?;
            let now = agentkit_runtime::model::now_ms();
            c.updated_at = now;
            c.evaluated_until = c.evaluated_until.max(now);
            if let Some(doc) = self
                .store
                .doc_put(COLLECTION, id, encode(&c)?, Expect::Revision(rev))
                .await?
            {
                c.revision = doc.revision;
                return Ok(c);
            }
        }
        Err(Error::Unavailable {
            what: format!("cron {id}"),
            message: "too many concurrent changes; retry".into(),
        })
    }

    /// Delete the cron (its runs stay).
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.get(id).await?;
        self.store.doc_delete(COLLECTION, id, Expect::Any).await?;
        Ok(())
    }

    /// Start the runs of the fires due at `now`: for each enabled cron with due fires that
    /// this call claims (compare-and-swap on its cursor), the run of its latest due fire.
    /// Returns how many runs were started. A fire whose run cannot start (the thread is busy
    /// and the policy is `reject`, the thread or agent is gone) is logged and skipped.
    pub async fn fire_due(&self, platform: &Platform, now: i64) -> Result<usize> {
        let mut started = 0;
        for c in self.list().await? {
            if !c.enabled {
                continue;
            }
            let fires = match c.fires_between(c.evaluated_until, now) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(cron = %c.cron_id, error = %e, "a cron's schedule is invalid");
                    continue;
                }
            };
            let Some(&fire) = fires.last() else { continue };
            let mut claimed = c.clone();
            claimed.evaluated_until = now;
            if self
                .store
                .doc_put(
                    COLLECTION,
                    &c.cron_id,
                    encode(&claimed)?,
                    Expect::Revision(c.revision),
                )
                .await?
                .is_none()
            {
                // Another process claimed these fires (or the cron changed): it starts them.
                continue;
            }
            // The run starts as the cron's creator, in its workspace, naming the agent and
            // thread as that workspace does.
            let scope = crate::platform::scope_of(c.principal.as_ref());
            let agent = scope.external(&c.agent);
            let thread = c.thread_id.as_deref().map(|t| scope.external(t));
            let (Some(agent), None | Some(Some(_))) = (agent, thread) else {
                tracing::warn!(cron = %c.cron_id, "a cron's agent or thread is not in its creator's workspace; skipped");
                continue;
            };
            let mut start = StartRun::new(agent, c.message.clone());
            start.thread_id = thread.flatten().map(str::to_owned);
            start.principal = c.principal.clone();
            start.if_busy = c.if_busy;
            start.idempotency_key = Some(format!("cron:{}:{fire}", c.cron_id));
            match platform.start(start).await {
                Ok(run) => {
                    tracing::info!(cron = %c.cron_id, run = %run.id, fire, "cron fired");
                    started += 1;
                }
                Err(e) => {
                    tracing::warn!(cron = %c.cron_id, fire, error = %e, "a cron fire could not start its run");
                }
            }
        }
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn every_cron_is_listed_past_a_page_boundary() {
        let crons = Crons::new(Arc::new(agentkit_runtime::MemoryStore::new()));
        let mut ids = Vec::new();
        for i in 0..5 {
            let c = Cron::new(format!("agent{i}"), "0 9 * * *", "hi").unwrap();
            ids.push(crons.create(c).await.unwrap().cron_id);
        }
        ids.sort();
        for page in [1, 2, 4, 5, 6] {
            let mut listed: Vec<String> = crons
                .list_paged(page)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.cron_id)
                .collect();
            listed.sort();
            assert_eq!(listed, ids, "page size {page}");
        }
    }

    #[test]
    fn fires_follow_the_expression_and_stop_at_the_end_time() {
        let mut c = Cron::new("echo", "0 9 * * *", "good morning").unwrap();
        let day = 24 * 3600 * 1000;
        // 2026-01-10T00:00:00Z.
        let start = 1_768_003_200_000;
        let fires = c.fires_between(start, start + 3 * day).unwrap();
        assert_eq!(fires.len(), 3);
        assert_eq!(fires[0], start + 9 * 3600 * 1000);
        c.end_time = Some(start + day + 1);
        assert_eq!(c.fires_between(start, start + 3 * day).unwrap().len(), 1);
        assert_eq!(c.next_run(start), Some(start + 9 * 3600 * 1000));
        c.enabled = false;
        assert_eq!(c.next_run(start), None);
    }

    #[test]
    fn six_fields_fire_every_second() {
        let c = Cron::new("echo", "* * * * * *", "tick").unwrap();
        assert_eq!(
            c.fires_between(1_000, 4_000).unwrap(),
            vec![2_000, 3_000, 4_000]
        );
    }

    #[test]
    fn a_malformed_expression_or_zone_is_an_error() {
        assert!(Cron::new("echo", "every day", "hi").is_err());
        let mut c = Cron::new("echo", "*/5 * * * *", "hi").unwrap();
        c.timezone = "Mars/Olympus".into();
        assert!(c.fire_schedule().is_err());
    }
}
