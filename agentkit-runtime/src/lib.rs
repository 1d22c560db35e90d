//! # agentkit-runtime
//!
//! The crate's README follows: what works today, the durability contract, and what is not yet
//! implemented.
//!
#![doc = include_str!("../README.md")]

pub mod budget;
pub mod executor;
pub mod journal;
pub mod live;
pub mod memory;
pub mod model;
pub mod observe;
pub mod redact;
pub mod scheduler;
pub mod store;
mod sync;
pub mod workflow;

pub use budget::{BudgetRules, BudgetScope, BudgetStatus, SpendLedger};
pub use executor::{
    AgentFactory, AgentResolver, PAUSE_PROPAGATION, ReplayReport, RetryPolicy, Runtime,
    RuntimeBuilder, SCHEDULES_NAMESPACE, ScheduleInfo, TargetOptions,
};
pub use journal::DurableJournal;
pub use live::{LiveDelta, LiveDeltas};
pub use memory::{StoreMemory, THREADS_NAMESPACE};
pub use model::{
    Created, Doc, DocWrite, EntryKind, Expect, HELD, JournalEntry, NewRun, RunQuery, RunRecord,
    RunUpdate,
};
pub use observe::RunObserver;
pub use redact::Redactor;
pub use scheduler::{CatchUp, MANUAL_FIRE, Overlap, Schedule, Trigger};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    DocStore, InvalidStoredData, JournalStore, KvStore, LeaseStore, MemoryStore, RunStore,
    SignalStore, Store,
};
pub use workflow::{
    APPROVAL_SIGNAL, HUMAN_INPUT_SIGNAL, PARK_AFTER, Workflow, WorkflowContext, approval_signal_for,
};

pub use agentkit_core::{RunStatus, StartOptions, WorkflowHost};
