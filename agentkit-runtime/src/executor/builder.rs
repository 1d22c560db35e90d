//! [`RuntimeBuilder`]: the settings a [`Runtime`] is built with.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{EventSink, PriceTable, SpendGuard};

use super::Runtime;
use crate::observe::RunObserver;
use crate::redact::Redactor;
use crate::store::Store;

/// The shortest lease a runtime accepts (the heartbeat renews every third of it).
const MIN_LEASE: Duration = Duration::from_millis(30);

/// Builds a [`Runtime`]: node id, lease, redaction and prices are set here, once, and are
/// the same for every clone of the runtime afterwards.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use agentkit_runtime::{MemoryStore, Runtime};
///
/// let runtime = Runtime::builder(Arc::new(MemoryStore::new()))
///     .with_node_id("node-a")
///     .with_lease(Duration::from_secs(10))
///     .build();
/// assert_eq!(runtime.node_id(), "node-a");
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct RuntimeBuilder {
    pub(super) store: Arc<dyn Store>,
    pub(super) node_id: String,
    pub(super) lease: Duration,
    pub(super) redactor: Redactor,
    pub(super) prices: Arc<PriceTable>,
    pub(super) events: Option<Arc<dyn EventSink>>,
    pub(super) observer: Option<Arc<dyn RunObserver>>,
    pub(super) spend_guard: Option<Arc<dyn SpendGuard>>,
    pub(super) notices: bool,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// A builder over `store` with the defaults: a fresh UUID as node id, 30 s leases, the
    /// default redaction and price table.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            node_id: uuid::Uuid::now_v7().to_string(),
            lease: Duration::from_secs(30),
            redactor: Redactor::default(),
            prices: PriceTable::shared_default(),
            events: None,
            observer: None,
            spend_guard: None,
            notices: true,
        }
    }

    /// Name this runtime node (default: a fresh UUID). Leases are held in this name.
    pub fn with_node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// How long a claimed run stays claimed without a heartbeat (default 30 s, at least
    /// 30 ms). The heartbeat renews leases every third of this; a node that dies loses its
    /// runs after at most this.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(MIN_LEASE);
        self
    }

    /// Redact journaled values (and signal payloads) with `redactor`.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Price model usage with `prices`.
    pub fn with_prices(mut self, prices: Arc<PriceTable>) -> Self {
        self.prices = prices;
        self
    }

    /// Send the events of every run this runtime executes (model calls with usage and cost,
    /// tool calls, pattern steps; see [`RunEvent`](agentkit_core::RunEvent)) to `sink`, e.g.
    /// for metrics. Steps answered from the journal (a resumed run) are sent too, marked
    /// `replayed`. Without a sink runs build no events at all.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// Tell `observer` about the runs this runtime ends and the schedule fires it starts.
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Ask `guard` before every model call of every run and tell it each call's cost, e.g. a
    /// [`SpendLedger`](crate::SpendLedger) enforcing budgets per agent and workspace per
    /// period. Calls answered from a run's journal are not charged again.
    pub fn with_spend_guard(mut self, guard: Arc<dyn SpendGuard>) -> Self {
        self.spend_guard = Some(guard);
        self
    }

    /// Whether to follow the store's announcements of cancelled and paused runs (default on;
    /// see [`LeaseStore::stop_notices`](crate::LeaseStore::stop_notices)). On PostgreSQL they
    /// hold one connection of the pool; off, a cancel made by another process stops this
    /// node's execution at its next step, and waits see it within their polling interval.
    pub fn with_store_notices(mut self, on: bool) -> Self {
        self.notices = on;
        self
    }

    /// The runtime.
    pub fn build(self) -> Runtime {
        Runtime::from_builder(self)
    }
}
