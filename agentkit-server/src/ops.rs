//! State of the operations surfaces (schedules, webhooks, retention, MCP servers) that the
//! platform carries for the API and the background loops.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};

use crate::retention::Retention;
use crate::schedules::ScheduleBook;
use crate::webhooks::Webhook;

/// What the platform knows about its operations surfaces.
#[derive(Debug, Default)]
pub(crate) struct OpsState {
    /// The schedules this process registered, by source.
    pub(crate) schedules: Mutex<ScheduleBook>,
    /// Webhooks by name.
    pub(crate) webhooks: RwLock<BTreeMap<String, Webhook>>,
    /// Event triggers: (event, target).
    pub(crate) events: RwLock<Vec<(String, String)>>,
    /// What to keep.
    pub(crate) retention: RwLock<Retention>,
    /// The outbound MCP servers.
    pub(crate) mcp: RwLock<Option<agentkit_mcp::ConnectionManager>>,
}
