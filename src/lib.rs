//! agentkit facade (in progress).
