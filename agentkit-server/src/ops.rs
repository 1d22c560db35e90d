//! State of the operations surfaces (schedules, webhooks, retention, MCP servers) that the
//! platform carries for the API and the background loops.

use std::sync::Mutex;

use crate::schedules::ScheduleBook;

/// What the platform knows about its operations surfaces.
#[derive(Debug, Default)]
pub(crate) struct OpsState {
    /// The schedules this process registered, by source.
    pub(crate) schedules: Mutex<ScheduleBook>,
}
