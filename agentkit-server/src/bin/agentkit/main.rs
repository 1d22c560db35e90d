//! The `agentkit` command line.

fn main() {}
