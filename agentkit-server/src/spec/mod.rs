//! Declarative agents, workflows, schedules and triggers (`agentkit.yaml`) turned into
//! runnable agents and runtime targets.
