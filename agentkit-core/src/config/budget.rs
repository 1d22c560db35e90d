//! Spending budgets per period: `limits.budget` of an agent and the top-level `budgets:`
//! section (per workspace).
//!
//! ```yaml
//! budgets:
//!   workspace: {max_spend_usd: 20, period: day}        # every workspace
//!   workspaces:
//!     acme/prod: {max_spend_usd: 500, period: month}   # this one instead
//!   call_estimate_usd: 0.02   # set aside at least this before each model call
//!   hold_for: 10m             # how long a call in flight holds its estimate
//! agents:
//!   writer:
//!     model: scripted
//!     limits:
//!       budget: {max_spend_usd: 5, period: day}         # per workspace, for this agent
//! ```
//!
//! Periods are UTC calendar periods (`hour`, `day`, `week` from Monday 00:00, `month` from
//! the 1st), or fixed windows of a duration (`30m`, `6h`) counted from the Unix epoch.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::HumanDuration;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// How often a budget starts over: a UTC calendar period or a fixed window.
///
/// ```
/// use agentkit_core::config::BudgetPeriod;
///
/// let p: BudgetPeriod = "month".parse()?;
/// assert_eq!(p, BudgetPeriod::Month);
/// // 2026-12-06T18:00:00Z is in December 2026.
/// let (start, end) = p.window(1_796_580_000_000);
/// assert_eq!((start, end), (1_796_083_200_000, 1_798_761_600_000));
/// assert_eq!("15m".parse::<BudgetPeriod>()?.to_string(), "15m");
/// assert!("fortnight".parse::<BudgetPeriod>().is_err());
/// # Ok::<_, String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BudgetPeriod {
    /// Each UTC hour.
    Hour,
    /// Each UTC day.
    Day,
    /// Each ISO week (from Monday 00:00 UTC).
    Week,
    /// Each calendar month (from the 1st, 00:00 UTC).
    Month,
    /// Fixed windows of this length, counted from the Unix epoch.
    Every(HumanDuration),
}

impl BudgetPeriod {
    /// The period containing `now_ms` (ms since the Unix epoch): its start (inclusive) and end
    /// (exclusive), both in ms since the epoch.
    #[must_use]
    pub fn window(&self, now_ms: i64) -> (i64, i64) {
        match self {
            Self::Hour => floor_window(now_ms, HOUR_MS),
            Self::Day => floor_window(now_ms, DAY_MS),
            Self::Week => {
                let day = now_ms.div_euclid(DAY_MS);
                // 1970-01-01 was a Thursday: three days after a Monday.
                let monday = day - (day + 3).rem_euclid(7);
                (monday * DAY_MS, (monday + 7) * DAY_MS)
            }
            Self::Month => {
                let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    days_from_civil(y, m, 1) * DAY_MS,
                    days_from_civil(ny, nm, 1) * DAY_MS,
                )
            }
            Self::Every(d) => {
                let len = i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX).max(1);
                floor_window(now_ms, len)
            }
        }
    }
}

fn floor_window(now_ms: i64, len: i64) -> (i64, i64) {
    let start = now_ms.div_euclid(len) * len;
    (start, start.saturating_add(len))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl FromStr for BudgetPeriod {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "hour" | "hourly" => Ok(Self::Hour),
            "day" | "daily" => Ok(Self::Day),
            "week" | "weekly" => Ok(Self::Week),
            "month" | "monthly" => Ok(Self::Month),
            other => other
                .parse::<HumanDuration>()
                .map(Self::Every)
                .map_err(|_| {
                    format!(
                        "invalid budget period `{text}`: write `hour`, `day`, `week` or `month` \
                     (UTC calendar periods), or a fixed window such as `30m` or `6h`"
                    )
                }),
        }
    }
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hour => f.write_str("hour"),
            Self::Day => f.write_str("day"),
            Self::Week => f.write_str("week"),
            Self::Month => f.write_str("month"),
            Self::Every(d) => d.fmt(f),
        }
    }
}

impl Serialize for BudgetPeriod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BudgetPeriod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// At most `max_spend_usd` US dollars of model calls per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PeriodBudget {
    /// The most that may be spent in one period, in US dollars (greater than 0).
    pub max_spend_usd: f64,
    /// When the budget starts over.
    pub period: BudgetPeriod,
}

impl PeriodBudget {
    /// `max_spend_usd` per `period`.
    #[must_use]
    pub fn new(max_spend_usd: f64, period: BudgetPeriod) -> Self {
        Self {
            max_spend_usd,
            period,
        }
    }
}

/// The top-level `budgets:` section: what each workspace may spend per period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetSettings {
    /// The budget of every workspace without its own entry in `workspaces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PeriodBudget>,
    /// Budgets of named workspaces (`org/workspace`), replacing `workspace` for them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub workspaces: BTreeMap<String, PeriodBudget>,
    /// The least a model call is expected to cost, in US dollars: set aside before each call
    /// when the agent's recent calls cost less or it has none (default 0: the most one of
    /// its recent calls cost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_estimate_usd: Option<f64>,
    /// How long the estimate set aside for a model call is held (default `10m`); a process
    /// that died mid-call frees it after this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_for: Option<HumanDuration>,
}

impl BudgetSettings {
    /// Whether no workspace budget is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.workspace.is_none() && self.workspaces.is_empty()
    }

    /// Every workspace gets `budget`.
    #[must_use]
    pub fn with_workspace(mut self, budget: PeriodBudget) -> Self {
        self.workspace = Some(budget);
        self
    }

    /// Workspace `workspace` (`org/workspace`) gets `budget`.
    #[must_use]
    pub fn with_workspace_budget(
        mut self,
        workspace: impl Into<String>,
        budget: PeriodBudget,
    ) -> Self {
        self.workspaces.insert(workspace.into(), budget);
        self
    }

    /// Set aside at least `usd` before each model call (see
    /// [`call_estimate_usd`](Self::call_estimate_usd)).
    #[must_use]
    pub fn with_call_estimate(mut self, usd: f64) -> Self {
        self.call_estimate_usd = Some(usd);
        self
    }

    /// Hold the estimate of a model call for at most `d`.
    #[must_use]
    pub fn with_hold_for(mut self, d: std::time::Duration) -> Self {
        self.hold_for = Some(HumanDuration(d));
        self
    }

    /// The budget of `workspace`: its own, else the default.
    #[must_use]
    pub fn for_workspace(&self, workspace: &str) -> Option<PeriodBudget> {
        self.workspaces.get(workspace).copied().or(self.workspace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn period() -> impl Strategy<Value = BudgetPeriod> {
        prop_oneof![
            Just(BudgetPeriod::Hour),
            Just(BudgetPeriod::Day),
            Just(BudgetPeriod::Week),
            Just(BudgetPeriod::Month),
            (1u64..10_000_000).prop_map(|ms| BudgetPeriod::Every(HumanDuration(
                std::time::Duration::from_millis(ms)
            ))),
        ]
    }

    #[test]
    fn calendar_windows_are_utc() {
        // Sunday 2026-12-06T18:17:53Z.
        let now = 1_796_581_073_000;
        assert_eq!(
            BudgetPeriod::Day.window(now),
            (1_796_515_200_000, 1_796_601_600_000)
        );
        // The week began on Monday 2026-11-30.
        assert_eq!(
            BudgetPeriod::Week.window(now),
            (1_795_996_800_000, 1_796_601_600_000)
        );
        assert_eq!(
            BudgetPeriod::Hour.window(now),
            (1_796_580_000_000, 1_796_583_600_000)
        );
        // February of a leap year has 29 days.
        let feb = BudgetPeriod::Month.window(days_from_civil(2028, 2, 15) * DAY_MS);
        assert_eq!(feb.1 - feb.0, 29 * DAY_MS);
    }

    #[test]
    fn bad_periods_say_what_to_write() {
        let e = "fortnight".parse::<BudgetPeriod>().unwrap_err();
        assert!(e.contains("`hour`, `day`, `week` or `month`"), "{e}");
        assert!("0s".parse::<BudgetPeriod>().is_err());
        assert!("".parse::<BudgetPeriod>().is_err());
    }

    #[cfg(feature = "config")]
    #[test]
    fn call_estimates_and_hold_times_load_and_bad_ones_are_located() {
        let c = crate::Config::from_yaml_str_with_env(
            "budgets:\n  call_estimate_usd: 0.02\n  hold_for: 90s\n",
            None,
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.budgets.call_estimate_usd, Some(0.02));
        assert_eq!(
            c.budgets.hold_for.map(|h| h.0),
            Some(std::time::Duration::from_secs(90))
        );
        assert!(
            c.budgets.is_empty(),
            "no budget is set by an estimate alone"
        );
        let e = crate::Config::from_yaml_str_with_env(
            "budgets:\n  call_estimate_usd: -1\n",
            None,
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("call_estimate_usd"), "{e}");
    }

    proptest! {
        #[test]
        fn periods_round_trip_through_text(p in period()) {
            prop_assert_eq!(p.to_string().parse::<BudgetPeriod>(), Ok(p));
        }

        #[test]
        fn parsing_never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<BudgetPeriod>();
        }

        #[test]
        fn windows_contain_now_and_follow_each_other(
            p in period(),
            now in -4_000_000_000_000i64..8_000_000_000_000,
        ) {
            let (start, end) = p.window(now);
            prop_assert!(start <= now && now < end, "{start} {now} {end}");
            // The next period starts where this one ends.
            prop_assert_eq!(p.window(end).0, end);
            prop_assert_eq!(p.window(end - 1), (start, end));
        }

        #[test]
        fn budget_settings_round_trip_through_json(
            default in proptest::option::of((0.001f64..1e6, period())),
            named in proptest::collection::btree_map("[a-z]{1,6}/[a-z]{1,6}", (0.001f64..1e6, period()), 0..4),
        ) {
            let mut settings = BudgetSettings::default();
            if let Some((usd, p)) = default {
                settings = settings.with_workspace(PeriodBudget::new(usd, p));
            }
            for (ws, (usd, p)) in named {
                settings = settings.with_workspace_budget(ws, PeriodBudget::new(usd, p));
            }
            let text = serde_json::to_string(&settings).unwrap();
            let back: BudgetSettings = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, settings);
        }

        #[cfg(feature = "config")]
        #[test]
        fn any_budgets_section_loads_or_fails_with_a_located_error(
            usd in "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
            period in "[a-z0-9]{0,8}",
            ws in "[a-z/]{0,8}",
        ) {
            let text = format!(
                "budgets:\n  workspaces:\n    \"{ws}\": {{max_spend_usd: {usd}, period: \"{period}\"}}\n"
            );
            match crate::Config::from_yaml_str_with_env(&text, None, &|_| None) {
                Ok(c) => {
                    let b = c.budgets.workspaces[&ws];
                    prop_assert!(b.max_spend_usd > 0.0);
                    prop_assert_eq!(b.period.to_string().parse::<BudgetPeriod>(), Ok(b.period));
                }
                Err(e) => prop_assert!(e.to_string().contains("budgets"), "{}", e),
            }
        }

        #[test]
        fn dates_round_trip(day in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(day);
            prop_assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
