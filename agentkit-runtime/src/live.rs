//! [`LiveDeltas`]: the text deltas of the agent runs this process executes, as they are
//! produced, for listeners in the same process (the server's SSE streams).
//!
//! Deltas are live only: they are not journaled, carry no sequence number and are not kept
//! for a listener that subscribes later or reconnects. The journaled model step that follows
//! them is the source of truth; a listener that missed deltas (or lagged behind) gets the whole
//! text from that step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::sync::lock;

/// How many deltas a slow listener may fall behind before it misses some.
const CAPACITY: usize = 1024;

/// One live text delta of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LiveDelta {
    /// The agent whose model produced it.
    pub agent: String,
    /// The new text.
    pub text: String,
}

impl LiveDelta {
    /// A delta of `agent`.
    pub fn new(agent: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            agent: agent.into(),
            text: text.into(),
        }
    }
}

struct Channel {
    /// Made by the first listener: a run nobody listens to allocates no buffer (a channel of
    /// 1,024 slots per executing run was tens of kilobytes each with 10,000 runs in flight).
    tx: Option<broadcast::Sender<LiveDelta>>,
    /// Executions of the run publishing here (normally 0 or 1).
    publishers: usize,
}

impl Channel {
    fn listeners(&self) -> usize {
        self.tx
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }
}

/// Live deltas of the runs executing in this process, by run id (a [`Runtime`](crate::Runtime)
/// holds one; see [`Runtime::live_deltas`](crate::Runtime::live_deltas)).
///
/// A listener may subscribe before the run starts executing; model calls stream from the
/// provider only while a run has listeners, so runs nobody watches make the same calls as
/// plain `generate`.
#[derive(Default)]
pub struct LiveDeltas {
    channels: Mutex<HashMap<String, Channel>>,
}

impl std::fmt::Debug for LiveDeltas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDeltas")
            .field("runs", &lock(&self.channels).len())
            .finish()
    }
}

impl LiveDeltas {
    /// Listen to `run_id`'s deltas from now on (the run may start later, or run elsewhere, in
    /// which case nothing comes). A receiver that falls more than 1,024 deltas behind gets
    /// `Lagged` and misses them.
    pub fn subscribe(&self, run_id: &str) -> broadcast::Receiver<LiveDelta> {
        let mut channels = lock(&self.channels);
        // Channels nobody publishes to or listens on any more are dropped here.
        channels.retain(|_, c| c.publishers > 0 || c.listeners() > 0);
        channels
            .entry(run_id.to_owned())
            .or_insert_with(|| Channel {
                tx: None,
                publishers: 0,
            })
            .tx
            .get_or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Whether `run_id` has listeners now.
    #[must_use]
    pub fn has_listeners(&self, run_id: &str) -> bool {
        lock(&self.channels)
            .get(run_id)
            .is_some_and(|c| c.listeners() > 0)
    }

    /// Publish deltas of `run_id` until the returned publisher is dropped.
    pub(crate) fn publish(self: &Arc<Self>, run_id: &str) -> Publisher {
        lock(&self.channels)
            .entry(run_id.to_owned())
            .or_insert_with(|| Channel {
                tx: None,
                publishers: 0,
            })
            .publishers += 1;
        Publisher {
            hub: Arc::clone(self),
            run_id: Arc::from(run_id),
        }
    }
}

/// Sends one execution's deltas; unregisters when dropped.
pub(crate) struct Publisher {
    hub: Arc<LiveDeltas>,
    run_id: Arc<str>,
}

impl Publisher {
    /// Send a delta to whoever listens now.
    pub(crate) fn send(&self, delta: LiveDelta) {
        // No listener is not an error: deltas are live only.
        if let Some(tx) = lock(&self.hub.channels)
            .get(&*self.run_id)
            .and_then(|c| c.tx.as_ref())
        {
            let _ = tx.send(delta);
        }
    }

    /// Whether anyone listens now (asked before each model call).
    pub(crate) fn demand(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let (hub, run_id) = (Arc::clone(&self.hub), Arc::clone(&self.run_id));
        move || hub.has_listeners(&run_id)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let mut channels = lock(&self.hub.channels);
        if let Some(c) = channels.get_mut(&*self.run_id) {
            c.publishers = c.publishers.saturating_sub(1);
            if c.publishers == 0 && c.listeners() == 0 {
                channels.remove(&*self.run_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listeners_get_deltas_published_after_they_subscribe() {
        let hub = Arc::new(LiveDeltas::default());
        let mut early = hub.subscribe("r");
        let p = hub.publish("r");
        assert!(p.demand()());
        p.send(LiveDelta::new("a", "x"));
        let mut late = hub.subscribe("r");
        p.send(LiveDelta::new("a", "y"));
        assert_eq!(early.recv().await.unwrap().text, "x");
        assert_eq!(early.recv().await.unwrap().text, "y");
        assert_eq!(late.recv().await.unwrap().text, "y");
        drop((early, late));
        assert!(!p.demand()());
        drop(p);
        assert!(lock(&hub.channels).is_empty());
    }

    #[test]
    fn a_run_nobody_listens_to_allocates_no_channel() {
        let hub = Arc::new(LiveDeltas::default());
        let p = hub.publish("r");
        p.send(LiveDelta::new("a", "nobody hears this"));
        assert!(!p.demand()());
        assert!(lock(&hub.channels)["r"].tx.is_none());
        drop(p);
        assert!(lock(&hub.channels).is_empty());
    }
}
