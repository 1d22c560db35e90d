//! [`StoreMemory`]: conversation threads kept in the runtime's [`Store`], so they survive a
//! restart and are shared by every process on the same database.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::memory::{Memory, MemoryWindow};
use agentkit_core::{Error, Message, Result};
use async_trait::async_trait;

use crate::store::Store;

/// The key-value namespace threads are stored in.
pub const THREADS_NAMESPACE: &str = "agentkit.threads";

/// A [`Memory`] in the runtime's store (key-value namespace [`THREADS_NAMESPACE`], one value per
/// thread), bounded by a [`MemoryWindow`] and optionally expiring after a time to live.
///
/// It is persistent, so the agent loop journals a run's history read and its append: a run
/// resumed after a crash sees the history it saw the first time and does not append twice.
///
/// Two runs appending to the same thread at the same moment race (the last write wins); run
/// one conversation turn at a time per thread.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use agentkit_core::{Agent, AgentLlm, AugmentedLlmExt, RunContext, ScriptedProvider};
/// use agentkit_runtime::{MemoryStore, StoreMemory};
///
/// let memory = Arc::new(StoreMemory::new(Arc::new(MemoryStore::new())));
/// let agent = AgentLlm::new(
///     Agent::new("chat", "Chat."),
///     ScriptedProvider::new().then_text("Hi Ana!").then_text("You are Ana."),
/// )
/// .with_memory(memory.clone());
/// let ctx = RunContext::new().with_thread("ana");
/// agent.generate_str("I am Ana.", &ctx).await?;
/// agent.generate_str("Who am I?", &ctx).await?;
/// assert_eq!(agentkit_core::Memory::load(memory.as_ref(), "ana").await?.len(), 4);
/// # Ok::<(), agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct StoreMemory {
    store: Arc<dyn Store>,
    window: MemoryWindow,
    ttl: Option<Duration>,
}

impl fmt::Debug for StoreMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreMemory")
            .field("window", &self.window)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl StoreMemory {
    /// Threads in `store`, with the default window and no expiry.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            window: MemoryWindow::default(),
            ttl: None,
        }
    }

    /// Bound each thread by `window`.
    #[must_use]
    pub fn with_window(mut self, window: MemoryWindow) -> Self {
        self.window = window;
        self
    }

    /// Forget a thread `ttl` after its last message.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

#[async_trait]
impl Memory for StoreMemory {
    async fn load(&self, thread: &str) -> Result<Vec<Message>> {
        match self.store.kv_get(THREADS_NAMESPACE, thread).await? {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v).map_err(|e| {
                Error::json(
                    format!(
                        "conversation thread `{thread}` in the store is not a list of messages"
                    ),
                    e,
                )
            }),
        }
    }

    async fn append(&self, thread: &str, messages: &[Message]) -> Result<()> {
        let mut all = self.load(thread).await?;
        all.extend_from_slice(messages);
        self.window.apply(&mut all);
        let value = serde_json::to_value(&all)
            .map_err(|e| Error::json(format!("storing conversation thread `{thread}`"), e))?;
        self.store
            .kv_put(THREADS_NAMESPACE, thread, value, self.ttl)
            .await
    }

    async fn clear(&self, thread: &str) -> Result<()> {
        self.store
            .kv_delete(THREADS_NAMESPACE, thread)
            .await
            .map(|_| ())
    }

    fn is_persistent(&self) -> bool {
        true
    }
}
