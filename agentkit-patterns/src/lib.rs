//! agentkit-patterns: not yet implemented.
