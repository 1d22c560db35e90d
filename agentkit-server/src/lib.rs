//! agentkit-server: not yet implemented.
