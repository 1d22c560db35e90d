//! Poison-tolerant std locks: agentkit-core's (see [`agentkit_core::sync`]).

pub(crate) use agentkit_core::sync::{lock, read, write};
