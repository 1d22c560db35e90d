//! agentkit-mcp: not yet implemented.
