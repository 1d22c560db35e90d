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
//! Not kept: the history of another server process (each node has its own) and, after a
//! restart, of the calls before it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentkit_core::{SharedToolHistory, ToolCallRecord};

use crate::tenancy::WorkspaceId;

/// The most calls kept per caller (the oldest go first).
pub(crate) const MAX_CALLS: usize = 256;

/// The most callers kept at once; past it, those idle longest are forgotten.
const MAX_CALLERS: usize = 10_000;

/// How long a call stays in its caller's history by default (`gateway.chain_window_ms`).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// One caller's calls and when each ended (same order, same length).
struct Calls {
    history: SharedToolHistory,
    ended: VecDeque<Instant>,
}

/// Every caller's recent gateway calls (see the module docs).
pub(crate) struct Histories {
    window: Duration,
    callers: Mutex<HashMap<String, Calls>>,
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
        let history = SharedToolHistory::new();
        callers.insert(
            caller.to_owned(),
            Calls {
                history: history.clone(),
                ended: VecDeque::new(),
            },
        );
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
        let calls = callers.entry(caller.to_owned()).or_insert_with(|| Calls {
            history: SharedToolHistory::new(),
            ended: VecDeque::new(),
        });
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
    fn a_context_given_the_history_sees_later_calls() {
        let h = Histories::new(DEFAULT_WINDOW);
        let shared = h.of("a");
        h.record("a", "fs__read", false);
        let ctx = agentkit_core::RunContext::new().with_shared_tool_history(shared);
        assert_eq!(ctx.with_tool_history(<[_]>::len), 1);
    }
}
