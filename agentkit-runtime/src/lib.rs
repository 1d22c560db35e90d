//! agentkit-runtime: not yet implemented.
