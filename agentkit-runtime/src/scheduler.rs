//! Schedules: cron expressions with time zones, fixed intervals and one-shots that start runs.
//!
//! Exactly-once firing needs no lock: each fire starts its run with the idempotency key
//! `schedule:<name>:<fire time in ms>`, so however many nodes evaluate the same schedule over
//! the same store, one run per (schedule, fire time) is stored.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentkit_core::{Error, Result};
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde_json::Value;

/// What follows a schedule's [`fire_key_prefix`](Schedule::fire_key_prefix) in the
/// idempotency key of a manual fire (a run started on demand, not at a fire time).
pub const MANUAL_FIRE: &str = "manual-";

/// When a schedule fires.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trigger {
    /// A cron expression (5 fields, or 6 with seconds) evaluated in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<Cron>,
        /// The IANA time zone, e.g. `Europe/Lisbon`.
        tz: Tz,
    },
    /// Every `interval`, aligned to the Unix epoch (so every node computes the same times).
    Every(Duration),
    /// Once, at this time (ms since epoch).
    Once(i64),
}

/// What to do after downtime: fires that were due while no node was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatchUp {
    /// Fire only from when the schedule is registered on.
    Skip,
    /// Also fire what was due in this window before registration (already-fired times are
    /// not fired twice: their runs exist).
    Within(Duration),
}

/// What to do when a fire comes while the previous fire's run is still unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overlap {
    /// Start it anyway.
    AllowAll,
    /// Skip the fire.
    Skip,
    /// Keep at most one pending fire: the first fire that comes while the previous fire's
    /// run is unfinished (after the run was created, up to when it ends) is buffered and
    /// started as soon as that run ends (by the node that ran it at once, by the others at
    /// their next scheduler tick); further fires meanwhile are dropped. The buffered fire is
    /// derived from the stored run's creation and end times, so every node picks the same
    /// one, and its run has that fire's idempotency key: still exactly one run per
    /// (schedule, fire time) with any number of nodes.
    BufferOne,
}

/// A named schedule that starts runs of a target with a fixed input.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Schedule {
    /// Unique name (part of every fire's idempotency key).
    pub name: String,
    /// The agent or workflow to start.
    pub target: String,
    /// Its input.
    pub input: Value,
    /// When it fires.
    pub trigger: Trigger,
    /// Catch-up policy.
    pub catch_up: CatchUp,
    /// Overlap policy.
    pub overlap: Overlap,
    /// No fire before this time (ms since epoch).
    pub not_before: Option<i64>,
    /// No fire after this time (ms since epoch).
    pub not_after: Option<i64>,
    /// The version of the target its runs start on; `None`: the target's registered version
    /// ([`TargetOptions::with_version`](crate::TargetOptions::with_version)).
    pub version: Option<u32>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Schedule {
    fn new(name: &str, target: &str, input: Value, trigger: Trigger) -> Self {
        Self {
            name: name.to_owned(),
            target: target.to_owned(),
            input,
            trigger,
            catch_up: CatchUp::Skip,
            overlap: Overlap::AllowAll,
            not_before: None,
            not_after: None,
            version: None,
        }
    }

    /// Fire on a cron expression in time zone `tz` (`UTC`, `Europe/Lisbon`, ...). A malformed
    /// expression or an unknown zone is an error.
    pub fn cron(
        name: impl Into<String>,
        target: impl Into<String>,
        input: Value,
        expression: &str,
        tz: &str,
    ) -> Result<Self> {
        let name = name.into();
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) && !expression.trim_start().starts_with('@') {
            return Err(Error::InvalidRequest(format!(
                "schedule `{name}`: invalid cron expression `{expression}`: it has {fields} \
                 fields; use 5 (minute hour day month weekday) or 6 (seconds first)"
            )));
        }
        let cron = Cron::from_str(expression).map_err(|e| {
            Error::InvalidRequest(format!(
                "schedule `{name}`: invalid cron expression `{expression}`: {e}"
            ))
        })?;
        let tz = Tz::from_str(tz).map_err(|_| {
            Error::InvalidRequest(format!(
                "schedule `{name}`: unknown time zone `{tz}` (use an IANA name such as UTC or Europe/Lisbon)"
            ))
        })?;
        Ok(Self::new(
            &name,
            &target.into(),
            input,
            Trigger::Cron {
                cron: Box::new(cron),
                tz,
            },
        ))
    }

    /// Fire every `interval` (at least 10 ms).
    pub fn every(
        name: impl Into<String>,
        target: impl Into<String>,
        input: Value,
        interval: Duration,
    ) -> Result<Self> {
        let name = name.into();
        if interval < Duration::from_millis(10) {
            return Err(Error::InvalidRequest(format!(
                "schedule `{name}`: interval {interval:?} is shorter than the 10 ms minimum"
            )));
        }
        Ok(Self::new(
            &name,
            &target.into(),
            input,
            Trigger::Every(interval),
        ))
    }

    /// Fire once at `at`.
    pub fn once(
        name: impl Into<String>,
        target: impl Into<String>,
        input: Value,
        at: SystemTime,
    ) -> Self {
        Self::new(&name.into(), &target.into(), input, Trigger::Once(ms(at)))
    }

    /// Set the catch-up policy.
    #[must_use]
    pub fn with_catch_up(mut self, c: CatchUp) -> Self {
        self.catch_up = c;
        self
    }

    /// Set the overlap policy.
    #[must_use]
    pub fn with_overlap(mut self, o: Overlap) -> Self {
        self.overlap = o;
        self
    }

    /// Start its runs on `version` of the target (a schedule that is part of a versioned
    /// spec runs the version that declares it), whatever version the target is registered
    /// with.
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = Some(version);
        self
    }

    /// Fire only within `[start, end]`.
    #[must_use]
    pub fn with_window(mut self, start: SystemTime, end: SystemTime) -> Self {
        self.not_before = Some(ms(start));
        self.not_after = Some(ms(end));
        self
    }

    /// The idempotency key of the run of the fire at `fire_ms`.
    #[must_use]
    pub fn fire_key(&self, fire_ms: i64) -> String {
        format!("{}{fire_ms}", self.fire_key_prefix())
    }

    /// The idempotency key of a manual fire (`schedule:<name>:manual-<id>`, see
    /// `Runtime::trigger_schedule`); `id` makes it unique.
    #[must_use]
    pub fn manual_fire_key(&self, id: &str) -> String {
        format!("{}{MANUAL_FIRE}{id}", self.fire_key_prefix())
    }

    /// Whether `key` (an idempotency key under [`fire_key_prefix`](Self::fire_key_prefix)) is
    /// a manual fire's.
    #[must_use]
    pub fn is_manual_fire_key(&self, key: &str) -> bool {
        key.strip_prefix(&self.fire_key_prefix())
            .is_some_and(|rest| rest.starts_with(MANUAL_FIRE))
    }

    /// The prefix shared by the idempotency keys of all this schedule's fires.
    #[must_use]
    pub fn fire_key_prefix(&self) -> String {
        format!("schedule:{}:", self.name)
    }

    /// Fire times in `(after, until]` (ms since epoch), oldest first, at most 1000.
    #[must_use]
    pub fn fires_between(&self, after: i64, until: i64) -> Vec<i64> {
        self.fires(after, until, 1000)
    }

    /// The first fire time after `after` (ms since epoch), if the schedule fires again.
    #[must_use]
    pub fn next_fire_after(&self, after: i64) -> Option<i64> {
        self.fires(after, i64::MAX, 1).first().copied()
    }

    /// Fire times in `(after, until]`, oldest first, at most `max`.
    fn fires(&self, after: i64, until: i64, max: usize) -> Vec<i64> {
        let lo = self
            .not_before
            .map_or(after, |nb| after.max(nb.saturating_sub(1)));
        let hi = self.not_after.map_or(until, |na| until.min(na));
        let mut out = Vec::new();
        if hi <= lo {
            return out;
        }
        match &self.trigger {
            Trigger::Once(at) => {
                if *at > lo && *at <= hi {
                    out.push(*at);
                }
            }
            Trigger::Every(interval) => {
                let step = i64::try_from(interval.as_millis())
                    .unwrap_or(i64::MAX)
                    .max(1);
                let mut t = lo.div_euclid(step).saturating_add(1).saturating_mul(step);
                while t <= hi && out.len() < max {
                    out.push(t);
                    t = t.saturating_add(step);
                }
            }
            Trigger::Cron { cron, tz } => {
                let Some(mut t) = Utc.timestamp_millis_opt(lo).single() else {
                    return out;
                };
                let mut local = t.with_timezone(tz);
                while out.len() < max {
                    let Ok(next) = cron.find_next_occurrence(&local, false) else {
                        break;
                    };
                    t = next.with_timezone(&Utc);
                    let at = t.timestamp_millis();
                    if at > hi {
                        break;
                    }
                    out.push(at);
                    local = next;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cron_fires_in_its_time_zone() {
        // 09:00 every day in Lisbon = 09:00 UTC in winter.
        let s = Schedule::cron("daily", "t", json!(null), "0 9 * * *", "Europe/Lisbon").unwrap();
        let day = Utc
            .with_ymd_and_hms(2026, 1, 10, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let fires = s.fires_between(day, day + 3 * 86_400_000);
        assert_eq!(fires.len(), 3);
        let first = Utc.timestamp_millis_opt(fires[0]).unwrap();
        assert_eq!(first.to_rfc3339(), "2026-01-10T09:00:00+00:00");
        // In New York, 09:00 is 14:00 UTC.
        let s = Schedule::cron("ny", "t", json!(null), "0 9 * * *", "America/New_York").unwrap();
        let first = Utc
            .timestamp_millis_opt(s.fires_between(day, day + 86_400_000)[0])
            .unwrap();
        assert_eq!(first.to_rfc3339(), "2026-01-10T14:00:00+00:00");
    }

    #[test]
    fn malformed_cron_and_zones_are_rejected() {
        let e = Schedule::cron("x", "t", json!(null), "61 * * *", "UTC").unwrap_err();
        assert!(
            e.to_string().contains("invalid cron expression `61 * * *`"),
            "{e}"
        );
        let e = Schedule::cron("x", "t", json!(null), "* * * * *", "Mars/Olympus").unwrap_err();
        assert!(
            e.to_string().contains("unknown time zone `Mars/Olympus`"),
            "{e}"
        );
        assert!(Schedule::every("x", "t", json!(null), Duration::ZERO).is_err());
        // Seven fields (a year) are not what the docs promise: refused, not read as seconds.
        let e = Schedule::cron("x", "t", json!(null), "* * * * * * *", "UTC").unwrap_err();
        assert!(e.to_string().contains("it has 7 fields"), "{e}");
        assert!(Schedule::cron("x", "t", json!(null), "*/5 * * * * *", "UTC").is_ok());
    }

    #[test]
    fn intervals_are_epoch_aligned_and_windows_bound_them() {
        let s = Schedule::every("e", "t", json!(null), Duration::from_millis(100)).unwrap();
        assert_eq!(s.fires_between(1_050, 1_300), vec![1_100, 1_200, 1_300]);
        let s = s.with_window(
            UNIX_EPOCH + Duration::from_millis(1_200),
            UNIX_EPOCH + Duration::from_millis(1_400),
        );
        assert_eq!(s.fires_between(0, 10_000), vec![1_200, 1_300, 1_400]);
        let once = Schedule::once(
            "o",
            "t",
            json!(null),
            UNIX_EPOCH + Duration::from_millis(500),
        );
        assert_eq!(once.fires_between(0, 499), Vec::<i64>::new());
        assert_eq!(once.fires_between(0, 500), vec![500]);
        assert_eq!(once.fire_key(500), "schedule:o:500");
        assert_eq!(once.next_fire_after(0), Some(500));
        assert_eq!(once.next_fire_after(500), None);
        let s = Schedule::every("e", "t", json!(null), Duration::from_millis(100)).unwrap();
        assert_eq!(s.next_fire_after(1_050), Some(1_100));
    }

    /// Any i64, with the edges of chrono's range and of i64 drawn often.
    fn timestamp() -> impl proptest::strategy::Strategy<Value = i64> {
        use proptest::prelude::*;
        let max = chrono::DateTime::<Utc>::MAX_UTC.timestamp_millis();
        let min = chrono::DateTime::<Utc>::MIN_UTC.timestamp_millis();
        prop_oneof![
            any::<i64>(),
            (max - 400 * 86_400_000)..=max.saturating_add(1000),
            min.saturating_sub(1000)..=(min + 400 * 86_400_000),
            Just(i64::MAX),
            Just(i64::MIN),
            -1_000i64..1_000,
        ]
    }

    proptest::proptest! {
        // 64 cases: a cron search near the end of chrono's range is slow.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Fire times are computed from stored run timestamps (`created_at`, `updated_at`):
        /// any pair of i64, including the edges of chrono's range, gives fires in range and
        /// never panics.
        #[test]
        fn fires_between_any_timestamps_never_panics(
            after in timestamp(),
            until in timestamp(),
            every_ms in 1u64..10_000_000,
            cron in proptest::sample::select(vec!["* * * * *", "0 9 * * 1-5", "0 0 29 2 *"]),
            tz in proptest::sample::select(vec!["UTC", "Europe/Lisbon", "Pacific/Kiritimati"]),
        ) {
            let schedules = [
                Schedule::every("e", "t", json!(null), Duration::from_millis(every_ms)).unwrap(),
                Schedule::once("o", "t", json!(null), UNIX_EPOCH + Duration::from_millis(every_ms)),
                Schedule::cron("c", "t", json!(null), cron, tz).unwrap(),
            ];
            for s in &schedules {
                let fires = s.fires_between(after, until);
                proptest::prop_assert!(fires.len() <= 1000);
                proptest::prop_assert!(fires.iter().all(|f| *f > after && *f <= until));
                proptest::prop_assert!(fires.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
