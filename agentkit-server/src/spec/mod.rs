//! Declarative agents, workflows, schedules and triggers (`agentkit.yaml`) turned into
//! runnable agents and runtime targets.

use agentkit_core::{Config, Result};

use crate::ServerBuilder;

/// Configure `builder` from `config`: TEMPORARY until the declarative catalog lands.
pub fn server_builder(builder: ServerBuilder, config: &Config) -> Result<(ServerBuilder, bool)> {
    let _ = config;
    Ok((builder, true))
}
