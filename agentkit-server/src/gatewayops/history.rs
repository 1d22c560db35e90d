//! The tool history chain rules see at the gateway.
//!
//! Inside an agent run, a chain rule (`pattern: ["*__read_*", "slack__send_message"]`) looks
//! at the run's earlier calls. A gateway client — a `/v1/execute` batch, a WebSocket, an
//! `/mcp` session or a stateless `/mcp` request — has no run, and nothing ties its requests
//! together but its key. So at the gateway the history is the caller's: the calls its key
//! (or the admin key, or a token's subject) made in its workspace through this server
//! process within `gateway.chain_window_ms` (default 1 h), at most [`MAX_CALLS`] of them.
//! Two agents behind one key share it: a read by one makes the other's send wait for an
//! approval, which errs on the side of asking.
//!
//! A call handed to a durable run (one that waits for an approval, or an MCP task) takes the
//! history it was decided on into the run's input, so the run decides it the same way after
//! a restart or on another node, and its result is added to the caller's history here when
//! it is made.
//!
//! A process starts knowing nothing; on a caller's first call it reads the audit log for the
//! gateway calls the caller's key was allowed (or approved) in the window before the process
//! started (in the workspace chain's last [`SEED_SCAN`] entries), so a chain rule holds across
//! a restart, and on a node the caller has not used yet.
//!
//! Since then, calls through other processes sharing the store: every gateway decision's
//! audit entry names the process that made it ([`AuditEvent::node`]), and before a call that
//! can end a chain rule (its tool matches the last pattern of one; other calls' decisions do
//! not depend on the history) the process reads the workspace's audit entries it has not read
//! yet and puts the calls other processes allowed into their callers' histories, in time
//! order ([`Histories::learn`]). So a read through node A makes a send through node B wait,
//! as soon as the read was decided. A call read from the log counts as successful (the log
//! records the decision, not the answer), which errs on the side of asking too.
//!
//! [`AuditEvent::node`]: agentkit_core::policy::AuditEvent::node

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentkit_core::{SharedToolHistory, ToolCallRecord};

use crate::tenancy::WorkspaceId;

/// The most calls kept per caller (the oldest go first).
pub(crate) const MAX_CALLS: usize = 256;

/// The most callers kept at once; past it, those idle longest are forgotten.
const MAX_CALLERS: usize = 10_000;

/// How many of a workspace chain's last audit entries a caller's first call reads for the
/// caller's earlier gateway calls.
pub(crate) const SEED_SCAN: u64 = 4096;

/// How long a call stays in its caller's history by default (`gateway.chain_window_ms`).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// One caller's calls and when each ended (same order, same length).
struct Calls {
    history: SharedToolHistory,
    ended: VecDeque<Instant>,
    /// Whether its calls from before this process started were read from the audit log.
    seeded: bool,
}

impl Calls {
    fn new() -> Self {
        Self {
            history: SharedToolHistory::new(),
            ended: VecDeque::new(),
            seeded: false,
        }
    }
}

/// A gateway call another process made, read from the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Learnt {
    /// Its entry's place in the workspace's chain.
    pub(crate) seq: u64,
    /// The caller (see [`caller_key`]).
    pub(crate) caller: String,
    /// The tool.
    pub(crate) tool: String,
    /// When it was decided (ms since the Unix epoch).
    pub(crate) at_ms: i64,
}

/// Every caller's recent gateway calls (see the module docs).
pub(crate) struct Histories {
    window: Duration,
    callers: Mutex<HashMap<String, Calls>>,
    /// Per workspace, the last entry of its audit chain read for other processes' calls.
    read_up_to: Mutex<HashMap<String, u64>>,
    /// When this process started keeping histories: the calls before it are read from the
    /// audit log (ms since the Unix epoch, and as an instant).
    started_ms: i64,
    started: Instant,
}

/// The key a caller's history is kept under: its workspace and its key (`None`: the admin
/// key).
pub(crate) fn caller_key(workspace: &WorkspaceId, key_id: Option<&str>) -> String {
    format!("{workspace}\n{}", key_id.unwrap_or(""))
}

impl Histories {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            callers: Mutex::new(HashMap::new()),
            read_up_to: Mutex::new(HashMap::new()),
            started_ms: agentkit_runtime::model::now_ms(),
            started: Instant::now(),
        }
    }

    /// The span of wall-clock time (ms since the Unix epoch, end excluded) whose calls of a
    /// caller not yet seeded are to be read from the audit log: the window before this
    /// process started. `None` once `caller` is seeded, or once this process has run for
    /// longer than the window (nothing before its start is still in it).
    pub(crate) fn to_seed(&self, caller: &str) -> Option<(i64, i64)> {
        if self.started.elapsed() >= self.window {
            return None;
        }
        let callers = agentkit_core::sync::lock(&self.callers);
        if callers.get(caller).is_some_and(|c| c.seeded) {
            return None;
        }
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        Some((self.started_ms.saturating_sub(window), self.started_ms))
    }

    /// Put `calls` (tool and wall-clock time, oldest first; read from the audit log, all
    /// before this process started) before `caller`'s calls, once.
    pub(crate) fn seed(&self, caller: &str, calls: Vec<(String, i64)>) {
        let now = Instant::now();
        let mut callers = agentkit_core::sync::lock(&self.callers);
        if !callers.contains_key(caller) && callers.len() >= MAX_CALLERS {
            self.make_room(&mut callers, now);
        }
        let entry = callers.entry(caller.to_owned()).or_insert_with(Calls::new);
        if entry.seeded {
            return;
        }
        entry.seeded = true;
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let from = self.started_ms.saturating_sub(window);
        let calls: Vec<_> = calls
            .into_iter()
            .filter(|(_, at)| (from..self.started_ms).contains(at))
            .collect();
        let room = MAX_CALLS.saturating_sub(entry.ended.len());
        let skip = calls.len().saturating_sub(room);
        let mut ended: Vec<Instant> = Vec::with_capacity(calls.len() - skip);
        let mut records = Vec::with_capacity(calls.len() - skip);
        for (tool, at_ms) in calls.into_iter().skip(skip) {
            let before = u64::try_from(self.started_ms - at_ms).unwrap_or(0);
            // An instant before the clock's start (a machine up for less than the window)
            // is taken as the earliest it can be; times never go backwards.
            let at = self
                .started
                .checked_sub(Duration::from_millis(before))
                .unwrap_or(self.started);
            let at = ended.last().map_or(at, |prev| at.max(*prev));
            ended.push(at);
            records.push(ToolCallRecord::new(tool, false));
        }
        entry.history.prepend(records);
        for (i, at) in ended.into_iter().enumerate() {
            entry.ended.insert(i, at);
        }
        self.expire(entry, now);
    }

    /// The last entry of `workspace`'s audit chain read for other processes' calls (`None`:
    /// none yet), and the earliest time a call read from it may have (this process's start:
    /// the calls before it are seeded, see [`to_seed`](Self::to_seed)).
    pub(crate) fn read_up_to(&self, workspace: &str) -> (Option<u64>, i64) {
        let read = agentkit_core::sync::lock(&self.read_up_to)
            .get(workspace)
            .copied();
        (read, self.started_ms)
    }

    /// Put `calls` (read from `workspace`'s audit chain up to entry `last`, made by other
    /// processes since this one started) into their callers' histories, each at its place in
    /// time; an entry at or before what was read already (by a concurrent reader) is
    /// skipped, so each is learnt once.
    pub(crate) fn learn(&self, workspace: &str, last: u64, calls: Vec<Learnt>) {
        let now = Instant::now();
        let mut read = agentkit_core::sync::lock(&self.read_up_to);
        let before = read.get(workspace).copied();
        if before.is_some_and(|b| last <= b) {
            return;
        }
        read.insert(workspace.to_owned(), last);
        let before = before.unwrap_or(0);
        let mut callers = agentkit_core::sync::lock(&self.callers);
        for call in calls.into_iter().filter(|c| c.seq > before) {
            if !callers.contains_key(&call.caller) && callers.len() >= MAX_CALLERS {
                self.make_room(&mut callers, now);
            }
            // Its time on this process's clock: never later than now (another node's clock
            // may be ahead), never before this process started.
            let since = u64::try_from(call.at_ms - self.started_ms).unwrap_or(0);
            let at = self
                .started
                .checked_add(Duration::from_millis(since))
                .map_or(now, |t| t.min(now));
            let calls = callers.entry(call.caller).or_insert_with(Calls::new);
            let index = calls.ended.partition_point(|t| *t <= at);
            calls.ended.insert(index, at);
            calls
                .history
                .insert(index, ToolCallRecord::new(call.tool, false));
            let over = calls.ended.len().saturating_sub(MAX_CALLS);
            if over > 0 {
                calls.ended.drain(..over);
                calls.history.forget_oldest(over);
            }
        }
    }

    /// The history of `caller` (see [`caller_key`]) without the calls older than the window:
    /// what its next call's chain rules see.
    pub(crate) fn of(&self, caller: &str) -> SharedToolHistory {
        let now = Instant::now();
        let mut callers = agentkit_core::sync::lock(&self.callers);
        if let Some(calls) = callers.get_mut(caller) {
            self.expire(calls, now);
            return calls.history.clone();
        }
        if callers.len() >= MAX_CALLERS {
            self.make_room(&mut callers, now);
        }
        let calls = Calls::new();
        let history = calls.history.clone();
        callers.insert(caller.to_owned(), calls);
        history
    }

    /// Add a call of `tool` that just ended (`is_error`: it failed, was denied or timed out)
    /// to `caller`'s history.
    pub(crate) fn record(&self, caller: &str, tool: &str, is_error: bool) {
        let now = Instant::now();
        let mut callers = agentkit_core::sync::lock(&self.callers);
        if !callers.contains_key(caller) && callers.len() >= MAX_CALLERS {
            self.make_room(&mut callers, now);
        }
        let calls = callers.entry(caller.to_owned()).or_insert_with(Calls::new);
        calls.history.push(ToolCallRecord::new(tool, is_error));
        calls.ended.push_back(now);
        let over = calls.ended.len().saturating_sub(MAX_CALLS);
        if over > 0 {
            calls.ended.drain(..over);
            calls.history.forget_oldest(over);
        }
    }

    /// Drop `calls`' entries older than the window.
    fn expire(&self, calls: &mut Calls, now: Instant) {
        let old = calls
            .ended
            .iter()
            .take_while(|t| now.saturating_duration_since(**t) > self.window)
            .count();
        if old > 0 {
            calls.ended.drain(..old);
            calls.history.forget_oldest(old);
        }
    }

    /// Forget the callers with nothing left in the window, and if that is not enough the
    /// tenth idle longest.
    fn make_room(&self, callers: &mut HashMap<String, Calls>, now: Instant) {
        callers.retain(|_, c| {
            c.ended
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) <= self.window)
        });
        if callers.len() < MAX_CALLERS {
            return;
        }
        let mut last: Vec<(Instant, String)> = callers
            .iter()
            .map(|(k, c)| (c.ended.back().copied().unwrap_or(now), k.clone()))
            .collect();
        last.sort_unstable();
        for (_, k) in last.into_iter().take(MAX_CALLERS / 10) {
            callers.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(h: &SharedToolHistory) -> Vec<String> {
        h.to_vec().into_iter().map(|r| r.tool).collect()
    }

    #[test]
    fn each_caller_has_its_own_history() {
        let h = Histories::new(DEFAULT_WINDOW);
        h.record("a", "fs__read", false);
        h.record("b", "slack__send", true);
        assert_eq!(tools(&h.of("a")), ["fs__read"]);
        assert_eq!(tools(&h.of("b")), ["slack__send"]);
        assert!(h.of("c").is_empty());
    }

    #[test]
    fn a_history_keeps_the_latest_calls_within_the_window() {
        let h = Histories::new(DEFAULT_WINDOW);
        for i in 0..MAX_CALLS + 5 {
            h.record("a", &format!("t{i}"), false);
        }
        let kept = tools(&h.of("a"));
        assert_eq!(kept.len(), MAX_CALLS);
        assert_eq!(kept[0], "t5");

        let h = Histories::new(Duration::from_millis(1));
        h.record("a", "fs__read", false);
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.of("a").is_empty(), "an old call is forgotten");
    }

    #[test]
    fn calls_read_from_the_audit_log_go_before_those_made_since_and_only_once() {
        let h = Histories::new(DEFAULT_WINDOW);
        let (from, until) = h.to_seed("a").unwrap();
        assert_eq!(until - from, 3_600_000);
        // A call made since this process started (a durable run's) is recorded first.
        h.record("a", "slack__send", false);
        let shared = h.of("a");
        h.seed(
            "a",
            vec![
                ("too__old".into(), from - 1),
                ("fs__read".into(), until - 10),
            ],
        );
        assert_eq!(tools(&shared), ["fs__read", "slack__send"]);
        assert!(h.to_seed("a").is_none());
        h.seed("a", vec![("fs__read".into(), until - 5)]);
        assert_eq!(
            tools(&h.of("a")),
            ["fs__read", "slack__send"],
            "seeded once"
        );
        // Seeding keeps at most MAX_CALLS, the latest.
        let many = (0..MAX_CALLS + 3)
            .map(|i| (format!("t{i}"), until - 1000 + i64::try_from(i).unwrap()))
            .collect();
        h.seed("b", many);
        let kept = tools(&h.of("b"));
        assert_eq!((kept.len(), kept[0].as_str()), (MAX_CALLS, "t3"));
        // Once the process has run for longer than the window, nothing is read.
        let h = Histories::new(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.to_seed("a").is_none());
    }

    #[test]
    fn calls_of_other_processes_go_in_at_their_time_once() {
        let h = Histories::new(DEFAULT_WINDOW);
        let (read, started) = h.read_up_to("acme/prod");
        assert_eq!(read, None);
        h.record("a", "fs__list", false);
        std::thread::sleep(Duration::from_millis(30));
        h.record("a", "fs__write", false);
        let learnt = |seq: u64, tool: &str, at_ms: i64| Learnt {
            seq,
            caller: "a".into(),
            tool: tool.into(),
            at_ms,
        };
        // A read another node made between the two local calls, and one made after both
        // (in the future by this clock: it goes last).
        let between = started + 15;
        h.learn(
            "acme/prod",
            7,
            vec![
                learnt(5, "fs__read", between),
                learnt(7, "db__read", started + 3_600_000),
            ],
        );
        assert_eq!(
            tools(&h.of("a")),
            ["fs__list", "fs__read", "fs__write", "db__read"]
        );
        assert_eq!(h.read_up_to("acme/prod").0, Some(7));
        // Read again (a concurrent reader, or the same entries): nothing is added twice.
        h.learn("acme/prod", 7, vec![learnt(7, "db__read", started + 20)]);
        h.learn(
            "acme/prod",
            8,
            vec![
                learnt(7, "db__read", started + 20),
                learnt(8, "x__y", started + 40),
            ],
        );
        assert_eq!(
            tools(&h.of("a")),
            ["fs__list", "fs__read", "fs__write", "db__read", "x__y"]
        );
        assert_eq!(h.read_up_to("acme/prod").0, Some(8));
        assert_eq!(h.read_up_to("acme/other").0, None);
    }

    #[test]
    fn a_context_given_the_history_sees_later_calls() {
        let h = Histories::new(DEFAULT_WINDOW);
        let shared = h.of("a");
        h.record("a", "fs__read", false);
        let ctx = agentkit_core::RunContext::new().with_shared_tool_history(shared);
        assert_eq!(ctx.with_tool_history(<[_]>::len), 1);
    }
}
