//! Schedules: registration, shared pause state, firing and the overlap policies.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agentkit_core::{Error, Result};
use serde_json::{Value, json};

use super::Runtime;
use crate::model::{NewRun, RunRecord};
use crate::scheduler::{CatchUp, Overlap, Schedule};
use crate::sync::{lock, read, write};

/// The key-value namespace holding each schedule's shared pause state (key: schedule name).
pub const SCHEDULES_NAMESPACE: &str = "agentkit.schedules";

/// How soon a schedule paused or resumed on one node applies on the other nodes.
pub const PAUSE_PROPAGATION: Duration = Duration::from_secs(1);

/// Unpause: fires up to `since` (when it was resumed) are skipped, not caught up.
pub(super) fn resume_from(st: &ScheduleState, since: i64) {
    let mut c = lock(&st.checked_until);
    *c = (*c).max(since);
    drop(c);
    st.paused.store(false, Ordering::SeqCst);
}

pub(super) struct ScheduleState {
    schedule: Schedule,
    checked_until: Mutex<i64>,
    paused: AtomicBool,
    /// `Overlap::BufferOne`: a fire came while the last run was unfinished (a hint to look
    /// when a run ends; what to start is derived from the stored runs).
    pending: AtomicBool,
}

/// A registered schedule as this node sees it (see [`Runtime::schedules`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// The schedule.
    pub schedule: Schedule,
    /// Whether it is paused (a pause made on another node shows here within
    /// [`PAUSE_PROPAGATION`] while the scheduler runs).
    pub paused: bool,
    /// Its next fire time after now (ms since epoch), if it fires again.
    pub next_fire: Option<i64>,
}

impl ScheduleInfo {
    fn of(st: &ScheduleState, now: i64) -> Self {
        Self {
            schedule: st.schedule.clone(),
            paused: st.paused.load(Ordering::SeqCst),
            next_fire: st.schedule.next_fire_after(now),
        }
    }
}

impl Runtime {
    /// The registered schedules, by name.
    #[must_use]
    pub fn schedules(&self) -> Vec<ScheduleInfo> {
        let now = crate::model::now_ms();
        let mut out: Vec<ScheduleInfo> = read(&self.inner.schedules)
            .values()
            .map(|st| ScheduleInfo::of(st, now))
            .collect();
        out.sort_by(|a, b| a.schedule.name.cmp(&b.schedule.name));
        out
    }

    /// One registered schedule (a `NotFound` error when no schedule has this name).
    pub fn schedule(&self, name: &str) -> Result<ScheduleInfo> {
        let st = self.schedule_state(name)?;
        Ok(ScheduleInfo::of(&st, crate::model::now_ms()))
    }

    /// Stop firing a schedule on this node and forget it (its runs and its stored pause
    /// state stay). A `NotFound` error when no schedule has this name.
    pub fn unregister_schedule(&self, name: &str) -> Result<()> {
        write(&self.inner.schedules)
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| {
                Error::not_found("schedule", name, "list the schedules to see their names")
            })
    }

    /// Start a run of the schedule's target with its input now, whatever its trigger, pause
    /// and overlap policy say: a manual fire. Its idempotency key is
    /// [`Schedule::manual_fire_key`] (under the schedule's
    /// [`fire_key_prefix`](Schedule::fire_key_prefix), so it is in the schedule's history and
    /// counts as its latest run for the overlap policies). Returns the run id.
    pub async fn trigger_schedule(&self, name: &str) -> Result<String> {
        let st = self.schedule_state(name)?;
        let s = &st.schedule;
        let t = self
            .target(&s.target)
            .ok_or_else(|| self.unknown_target(&s.target))?;
        let key = s.manual_fire_key(&uuid::Uuid::now_v7().to_string());
        let run = NewRun::new(&s.target, s.input.clone())
            .with_version(s.version.unwrap_or(t.options.version))
            .with_idempotency_key(key);
        let created = self.create_and_dispatch(&t, run, None).await?;
        Ok(created.run().id.clone())
    }

    /// Register a schedule. Its target must be registered and its input must match it (a
    /// schedule that could never start a run is refused, and nothing is stored). Fires are
    /// started by [`start_scheduler`](Self::start_scheduler). The name must not contain `:`.
    /// The overlap policies look at the schedule's latest run in the store, so they hold
    /// across nodes, including a node that registers the schedule later.
    pub fn register_schedule(&self, schedule: Schedule) -> Result<()> {
        self.add_schedule(schedule, false)
    }

    /// Register `schedule`; with `replace`, carrying over the checked time and the pause of
    /// the registered schedule of its name (in the same write, so no fire is evaluated in
    /// between).
    fn add_schedule(&self, schedule: Schedule, replace: bool) -> Result<()> {
        if schedule.name.is_empty() || schedule.name.contains(':') {
            return Err(Error::InvalidRequest(format!(
                "schedule name `{}` must be non-empty and contain no `:` (it is part of every \
                 fire's idempotency key `schedule:<name>:<fire time>`)",
                schedule.name
            )));
        }
        let t = self
            .target(&schedule.target)
            .ok_or_else(|| self.unknown_target(&schedule.target))?;
        t.validate(&schedule.input)
            .map_err(|e| Error::InvalidRequest(format!("schedule `{}`: {e}", schedule.name)))?;
        let now = crate::model::now_ms();
        let from = match schedule.catch_up {
            CatchUp::Skip => now,
            CatchUp::Within(w) => {
                now.saturating_sub(i64::try_from(w.as_millis()).unwrap_or(i64::MAX))
            }
        };
        let mut schedules = write(&self.inner.schedules);
        let (from, paused) = match schedules.get(&schedule.name).filter(|_| replace) {
            Some(old) => (*lock(&old.checked_until), old.paused.load(Ordering::SeqCst)),
            None => (from, false),
        };
        schedules.insert(
            schedule.name.clone(),
            Arc::new(ScheduleState {
                schedule,
                checked_until: Mutex::new(from),
                paused: AtomicBool::new(paused),
                pending: AtomicBool::new(false),
            }),
        );
        Ok(())
    }

    /// Register `schedule` in place of the registered schedule of its name, if any: fires
    /// already checked by the one it replaces are not evaluated again (no catch-up, no
    /// second fire for a time the old one fired), and its pause holds. Without one of that
    /// name, the same as [`register_schedule`](Self::register_schedule).
    pub fn replace_schedule(&self, schedule: Schedule) -> Result<()> {
        self.add_schedule(schedule, true)
    }

    pub(super) fn schedule_state(&self, name: &str) -> Result<Arc<ScheduleState>> {
        read(&self.inner.schedules)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("schedule", name, "register it first"))
    }

    /// Pause a schedule on every node: its fires are skipped until it is resumed. The pause
    /// is stored (key-value namespace [`SCHEDULES_NAMESPACE`]); it applies on this node at once
    /// and on the other nodes sharing the store within [`PAUSE_PROPAGATION`].
    pub async fn pause_schedule(&self, name: &str) -> Result<()> {
        let st = self.schedule_state(name)?;
        let state = json!({"paused": true, "since": crate::model::now_ms()});
        self.inner
            .store
            .kv_put(SCHEDULES_NAMESPACE, name, state, None)
            .await?;
        st.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Resume a paused schedule on every node (stored like [`pause_schedule`](Self::pause_schedule));
    /// fires that came while it was paused are skipped, not caught up.
    pub async fn resume_schedule(&self, name: &str) -> Result<()> {
        let st = self.schedule_state(name)?;
        let now = crate::model::now_ms();
        let state = json!({"paused": false, "since": now});
        self.inner
            .store
            .kv_put(SCHEDULES_NAMESPACE, name, state, None)
            .await?;
        resume_from(&st, now);
        Ok(())
    }

    /// Apply the stored pause state of the schedules (at most every [`PAUSE_PROPAGATION`]).
    pub(super) async fn read_pauses(&self, states: &[Arc<ScheduleState>]) {
        {
            let mut last = lock(&self.inner.pauses_read);
            if last.is_some_and(|t| t.elapsed() < PAUSE_PROPAGATION) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        for st in states {
            let name = &st.schedule.name;
            match self.inner.store.kv_get(SCHEDULES_NAMESPACE, name).await {
                Ok(Some(v)) => {
                    let paused = v.get("paused").and_then(Value::as_bool).unwrap_or(false);
                    let since = v.get("since").and_then(Value::as_i64).unwrap_or(0);
                    if paused {
                        st.paused.store(true, Ordering::SeqCst);
                    } else if st.paused.load(Ordering::SeqCst) {
                        resume_from(st, since);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "reading the schedule's pause state failed");
                }
            }
        }
    }

    /// Evaluate the schedules every `tick` and start the runs of their fires (stops at
    /// [`shutdown`](Self::shutdown)). Returns at once. A fire buffered by
    /// [`Overlap::BufferOne`] is also started as soon as a run of this process ends.
    pub fn start_scheduler(&self, tick: Duration) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let mut finished = this.inner.finished.subscribe();
            let mut next_tick = tokio::time::Instant::now();
            loop {
                if this.inner.stopping.load(Ordering::SeqCst) {
                    break;
                }
                if tokio::time::Instant::now() >= next_tick {
                    this.fire_due().await;
                    next_tick = tokio::time::Instant::now() + tick;
                } else {
                    this.start_buffered().await;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(next_tick) => {}
                    r = finished.changed() => if r.is_err() { break },
                    () = this.inner.polling.cancelled() => break,
                }
            }
        });
    }

    /// Start the buffered fires whose previous run has ended.
    pub(super) async fn start_buffered(&self) -> usize {
        let states: Vec<Arc<ScheduleState>> = read(&self.inner.schedules)
            .values()
            .filter(|st| st.pending.load(Ordering::SeqCst))
            .cloned()
            .collect();
        let mut created = 0;
        for st in states {
            if st.paused.load(Ordering::SeqCst) {
                continue;
            }
            match self.buffer_one(&st, None).await {
                Ok(n) => created += n,
                Err(e) => {
                    tracing::warn!(schedule = %st.schedule.name, error = %e, "starting a buffered fire failed");
                }
            }
        }
        created
    }

    /// The run of the schedule's latest fire, whichever node started it (read from the
    /// store, so a node that joined late or missed fires sees the same run as the others).
    pub(super) async fn latest_run(&self, st: &ScheduleState) -> Result<Option<RunRecord>> {
        self.inner
            .store
            .latest_run_with_key_prefix(&st.schedule.fire_key_prefix())
            .await
    }

    /// Whether the latest run started for the schedule is still unfinished.
    pub(super) async fn last_unfinished(&self, st: &ScheduleState) -> Result<bool> {
        Ok(self
            .latest_run(st)
            .await?
            .is_some_and(|run| !run.status.is_terminal()))
    }

    /// `Overlap::BufferOne`, deterministic on every node: the fire buffered behind a run is
    /// the first fire time after the run was created and not after it ended (both stored), so
    /// every node derives the same successor and starts it under that fire's idempotency key.
    /// Follows the chain from the schedule's latest stored run to the run executing now, starting
    /// what is due; then starts `fire` if it came after the last run ended, or notes it as
    /// buffered if the last run is still running (fires in between are dropped). Returns how
    /// many runs this call created.
    pub(super) async fn buffer_one(&self, st: &ScheduleState, fire: Option<i64>) -> Result<usize> {
        let mut created = 0;
        // Each round starts a successor created after the latest run; the bound only guards
        // against clocks going backwards.
        for _ in 0..64 {
            let Some(run) = self.latest_run(st).await? else {
                // No run yet: this fire is the schedule's first.
                if let Some(f) = fire
                    && self.start_fire(st, f).await?
                {
                    created += 1;
                }
                return Ok(created);
            };
            if !run.status.is_terminal() {
                if fire.is_some_and(|f| f > run.created_at) {
                    st.pending.store(true, Ordering::SeqCst);
                    tracing::info!(schedule = %st.schedule.name, ?fire, "previous run unfinished; fire buffered (or dropped if one is already buffered)");
                }
                return Ok(created);
            }
            st.pending.store(false, Ordering::SeqCst);
            let Some(next) = st
                .schedule
                .fires_between(run.created_at, run.updated_at)
                .first()
                .copied()
            else {
                // Nothing came while it ran: `fire` starts only if it came after it ended.
                if let Some(f) = fire
                    && f > run.updated_at
                    && self.start_fire(st, f).await?
                {
                    created += 1;
                }
                return Ok(created);
            };
            tracing::info!(schedule = %st.schedule.name, fire = next, "previous run ended; starting the buffered fire");
            if self.start_fire(st, next).await? {
                created += 1;
            }
            // The buffered fire's run is now the latest: follow the chain.
        }
        Ok(created)
    }

    /// Start the runs of every fire due now; returns how many runs this call created.
    pub async fn fire_due(&self) -> usize {
        let states: Vec<Arc<ScheduleState>> =
            read(&self.inner.schedules).values().cloned().collect();
        self.read_pauses(&states).await;
        let now = crate::model::now_ms();
        let mut created = 0;
        for st in states {
            if st.paused.load(Ordering::SeqCst) {
                continue;
            }
            if st.schedule.overlap == Overlap::BufferOne {
                match self.buffer_one(&st, None).await {
                    Ok(n) => created += n,
                    Err(e) => {
                        tracing::warn!(schedule = %st.schedule.name, error = %e, "starting a buffered fire failed");
                    }
                }
            }
            let fires = {
                let mut c = lock(&st.checked_until);
                let from = *c;
                *c = now.max(*c);
                st.schedule.fires_between(from, now)
            };
            for fire in fires {
                match self.fire(&st, fire).await {
                    Ok(true) => created += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(schedule = %st.schedule.name, fire, error = %e, "schedule fire failed");
                    }
                }
            }
        }
        created
    }

    pub(super) async fn fire(&self, st: &ScheduleState, fire: i64) -> Result<bool> {
        let s = &st.schedule;
        if s.overlap == Overlap::BufferOne {
            return Ok(self.buffer_one(st, Some(fire)).await? > 0);
        }
        if s.overlap == Overlap::Skip && self.last_unfinished(st).await? {
            tracing::info!(schedule = %s.name, fire, "previous run unfinished; fire skipped");
            return Ok(false);
        }
        self.start_fire(st, fire).await
    }

    /// Start the run of one fire (idempotent per (schedule, fire time)).
    pub(super) async fn start_fire(&self, st: &ScheduleState, fire: i64) -> Result<bool> {
        let s = &st.schedule;
        let Some(t) = self.target(&s.target) else {
            return Err(self.unknown_target(&s.target));
        };
        let run = NewRun::new(&s.target, s.input.clone())
            .with_version(s.version.unwrap_or(t.options.version))
            .with_idempotency_key(s.fire_key(fire));
        let created = self.create_and_dispatch(&t, run, None).await?;
        if created.is_new()
            && let Some(o) = &self.inner.observer
        {
            let lag = crate::model::now_ms().saturating_sub(fire);
            o.schedule_fired(
                &s.name,
                &s.target,
                Duration::from_millis(u64::try_from(lag).unwrap_or(0)),
            );
        }
        Ok(created.is_new())
    }
}
