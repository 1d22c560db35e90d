//! Conversation memory: [`Memory`] keeps each conversation thread's messages, bounded by a
//! [`MemoryWindow`]; [`InMemoryMemory`] keeps them in process.
//!
//! A conversation belongs to a *thread* that the caller names
//! ([`RunContext::with_thread`](crate::RunContext::with_thread)), never to an agent instance:
//! an agent served to many callers gives each its own thread, and no caller sees another's
//! messages. agentkit-runtime persists threads in its store.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::context::RunContext;
use crate::error::Result;
use crate::message::{Content, Message, Role};

/// Conversation memory, per thread.
///
/// Implementations bound what they keep (see [`MemoryWindow`]): a thread's oldest turns are
/// dropped whole, so a tool call is never separated from its result.
#[async_trait]
pub trait Memory: Send + Sync {
    /// The remembered messages of `thread`, oldest first (empty for an unknown thread).
    async fn load(&self, thread: &str) -> Result<Vec<Message>>;
    /// Remember more messages of `thread`.
    async fn append(&self, thread: &str, messages: &[Message]) -> Result<()>;
    /// Forget `thread`.
    async fn clear(&self, thread: &str) -> Result<()>;

    /// Whether this memory survives the process (a database, a file). The agent loop then
    /// journals a run's history read and its append, so a run resumed after a crash sees the
    /// history it saw the first time and does not append its messages twice. In-process
    /// memories (the default `false`) lose everything in a crash anyway and skip that cost.
    fn is_persistent(&self) -> bool {
        false
    }
}

/// The history of `ctx`'s thread ([`RunContext::thread_or_default`]) for `owner` (an agent or
/// pattern name, used in the journal key). A persistent memory's read is journaled, so a run
/// resumed after a crash sees the history it saw the first time.
pub async fn load_history(
    memory: &dyn Memory,
    owner: &str,
    ctx: &RunContext,
) -> Result<Vec<Message>> {
    let thread = ctx.thread_or_default();
    if !memory.is_persistent() {
        return memory.load(thread).await;
    }
    let key = ctx.step_key(&format!("{owner}/history"));
    ctx.step(&key, memory.load(thread)).await
}

/// Append a `generate`'s messages to `ctx`'s thread. A persistent memory's append is
/// journaled, so a run resumed after a crash does not append twice.
pub async fn remember(
    memory: &dyn Memory,
    owner: &str,
    messages: &[Message],
    ctx: &RunContext,
) -> Result<()> {
    let thread = ctx.thread_or_default();
    if !memory.is_persistent() {
        return memory.append(thread, messages).await;
    }
    let key = ctx.step_key(&format!("{owner}/remember"));
    ctx.step(&key, async {
        memory.append(thread, messages).await?;
        Ok(true)
    })
    .await
    .map(|_| ())
}

/// How much of a thread a [`Memory`] keeps: at most `max_messages` messages and about
/// `max_tokens` tokens. When a thread grows past either, its oldest *turns* are dropped whole —
/// a turn starts at a user message and holds the model's answers, tool calls and tool results
/// that follow it — so what remains never starts with a tool result whose call was dropped.
/// The newest turn is always kept, even when it alone is larger than the window.
///
/// Tokens are estimated (about four characters per token, plus a few per message); the
/// estimate needs no tokenizer and errs on the side of keeping less.
///
/// ```
/// use agentkit_core::{Message, MemoryWindow};
///
/// let window = MemoryWindow::new().with_max_messages(2);
/// let mut thread = vec![
///     Message::user("first question"),
///     Message::assistant("first answer"),
///     Message::user("second question"),
///     Message::assistant("second answer"),
/// ];
/// window.apply(&mut thread);
/// assert_eq!(thread.len(), 2);
/// assert_eq!(thread[0].text(), "second question");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoryWindow {
    /// Keep at most this many messages (`None`: no limit by count).
    pub max_messages: Option<usize>,
    /// Keep about this many tokens (`None`: no limit by tokens).
    pub max_tokens: Option<usize>,
}

impl Default for MemoryWindow {
    /// 200 messages and about 100,000 tokens.
    fn default() -> Self {
        Self {
            max_messages: Some(DEFAULT_MAX_MESSAGES),
            max_tokens: Some(DEFAULT_MAX_TOKENS),
        }
    }
}

/// Messages a thread keeps by default.
pub const DEFAULT_MAX_MESSAGES: usize = 200;
/// Estimated tokens a thread keeps by default.
pub const DEFAULT_MAX_TOKENS: usize = 100_000;
/// Threads an [`InMemoryMemory`] keeps by default before it forgets the least recently used.
pub const DEFAULT_MAX_THREADS: usize = 1_000;

impl MemoryWindow {
    /// The default window (see [`Default`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// No limit at all (memory then grows with every turn: use only for short-lived agents).
    #[must_use]
    pub fn unbounded() -> Self {
        Self {
            max_messages: None,
            max_tokens: None,
        }
    }

    /// Keep at most `n` messages.
    #[must_use]
    pub fn with_max_messages(mut self, n: usize) -> Self {
        self.max_messages = Some(n);
        self
    }

    /// Keep about `n` tokens.
    #[must_use]
    pub fn with_max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = Some(n);
        self
    }

    fn fits(&self, messages: usize, tokens: usize) -> bool {
        self.max_messages.is_none_or(|m| messages <= m)
            && self.max_tokens.is_none_or(|t| tokens <= t)
    }

    /// Drop the oldest whole turns of `messages` until the rest fits the window.
    pub fn apply(&self, messages: &mut Vec<Message>) {
        let tokens: Vec<usize> = messages.iter().map(estimate_tokens).collect();
        let mut total: usize = tokens.iter().sum();
        if self.fits(messages.len(), total) {
            return;
        }
        // Candidate cut points: the start of every turn after the first message.
        let mut cut = 0;
        for (i, m) in messages.iter().enumerate().skip(1) {
            if !starts_turn(m) {
                continue;
            }
            total -= tokens[cut..i].iter().sum::<usize>();
            cut = i;
            if self.fits(messages.len() - cut, total) {
                break;
            }
        }
        messages.drain(..cut);
    }
}

/// A turn starts at a user message (not a tool result).
fn starts_turn(m: &Message) -> bool {
    m.role == Role::User
        && !m
            .content
            .iter()
            .any(|c| matches!(c, Content::ToolResult { .. }))
}

/// About four characters per token, plus four tokens per message and per content block.
#[must_use]
pub fn estimate_tokens(m: &Message) -> usize {
    let chars: usize = m
        .content
        .iter()
        .map(|c| match c {
            Content::Text { text } => text.len(),
            Content::ToolCall {
                name, arguments, ..
            } => name.len() + json_len(arguments),
            Content::ToolResult { content, .. } => content
                .iter()
                .map(|c| match c {
                    Content::Text { text } => text.len(),
                    _ => 256,
                })
                .sum(),
            // Images and resources: a flat allowance (their real cost depends on the model).
            _ => 1_024,
        })
        .sum();
    chars.div_ceil(4) + 4 * (1 + m.content.len())
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len(value: &serde_json::Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Memory kept in process: one bounded history per thread, and at most `max_threads` threads
/// (the least recently used is forgotten first). Nothing survives the process; use
/// agentkit-runtime's store-backed memory for that.
pub struct InMemoryMemory {
    window: MemoryWindow,
    max_threads: usize,
    state: Mutex<Threads>,
}

#[derive(Default)]
struct Threads {
    by_name: HashMap<String, (u64, Vec<Message>)>,
    /// (use tick, thread) in order of last use; stale entries are skipped.
    lru: VecDeque<(u64, String)>,
    tick: u64,
}

impl fmt::Debug for InMemoryMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryMemory")
            .field("window", &self.window)
            .field("max_threads", &self.max_threads)
            .field("threads", &self.lock().by_name.len())
            .finish()
    }
}

impl Default for InMemoryMemory {
    fn default() -> Self {
        Self {
            window: MemoryWindow::default(),
            max_threads: DEFAULT_MAX_THREADS,
            state: Mutex::default(),
        }
    }
}

impl InMemoryMemory {
    /// Empty memory with the default window and thread limit.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Bound each thread by `window`.
    #[must_use]
    pub fn with_window(mut self, window: MemoryWindow) -> Self {
        self.window = window;
        self
    }

    /// Keep at most `n` threads (at least 1).
    #[must_use]
    pub fn with_max_threads(mut self, n: usize) -> Self {
        self.max_threads = n.max(1);
        self
    }

    /// The number of threads held now.
    #[must_use]
    pub fn thread_count(&self) -> usize {
        self.lock().by_name.len()
    }

    fn lock(&self) -> MutexGuard<'_, Threads> {
        crate::lock(&self.state)
    }
}

impl Threads {
    fn touch(&mut self, thread: &str) -> u64 {
        self.tick += 1;
        self.lru.push_back((self.tick, thread.to_owned()));
        self.tick
    }

    fn evict(&mut self, max_threads: usize) {
        while self.by_name.len() > max_threads {
            let Some((tick, name)) = self.lru.pop_front() else {
                break;
            };
            if self.by_name.get(&name).is_some_and(|(t, _)| *t == tick) {
                self.by_name.remove(&name);
            }
        }
        // Stale LRU entries of live threads: compact when they dominate.
        if self.lru.len() > 4 * self.by_name.len() + 64 {
            let live = &self.by_name;
            self.lru
                .retain(|(tick, name)| live.get(name).is_some_and(|(t, _)| t == tick));
        }
    }
}

#[async_trait]
impl Memory for InMemoryMemory {
    async fn load(&self, thread: &str) -> Result<Vec<Message>> {
        Ok(self
            .lock()
            .by_name
            .get(thread)
            .map(|(_, m)| m.clone())
            .unwrap_or_default())
    }

    async fn append(&self, thread: &str, messages: &[Message]) -> Result<()> {
        // Copied before the lock: other threads' calls wait only for the bookkeeping.
        let messages = messages.to_vec();
        let mut state = self.lock();
        let tick = state.touch(thread);
        let entry = state
            .by_name
            .entry(thread.to_owned())
            .or_insert_with(|| (tick, Vec::new()));
        entry.0 = tick;
        entry.1.extend(messages);
        self.window.apply(&mut entry.1);
        state.evict(self.max_threads);
        Ok(())
    }

    async fn clear(&self, thread: &str) -> Result<()> {
        self.lock().by_name.remove(thread);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool_turn(q: &str) -> Vec<Message> {
        vec![
            Message::user(q),
            Message::new(
                Role::Assistant,
                vec![Content::tool_call("c1", "lookup", json!({"q": q}))],
            ),
            Message::tool_results(vec![Content::tool_result(
                "c1",
                vec![Content::text("found")],
                false,
            )]),
            Message::assistant(format!("answer to {q}")),
        ]
    }

    #[test]
    fn a_tool_calls_arguments_count_as_their_json_text() {
        let args = json!({"q": "caf\u{e9} \"x\"", "n": [1, 2.5, null], "o": {}});
        assert_eq!(json_len(&args), args.to_string().len());
        let call = Message::new(
            Role::Assistant,
            vec![Content::tool_call("c1", "lookup", args.clone())],
        );
        assert_eq!(
            estimate_tokens(&call),
            ("lookup".len() + args.to_string().len()).div_ceil(4) + 8
        );
    }

    #[test]
    fn oldest_turns_are_dropped_whole() {
        let mut thread = [tool_turn("a"), tool_turn("b"), tool_turn("c")].concat();
        MemoryWindow::unbounded()
            .with_max_messages(6)
            .apply(&mut thread);
        assert_eq!(
            thread.len(),
            4,
            "one whole turn fits in 6 messages, two do not"
        );
        assert_eq!(thread[0].text(), "c");
        assert!(starts_turn(&thread[0]));
    }

    #[test]
    fn the_newest_turn_is_kept_even_if_too_large() {
        let mut thread = tool_turn("only");
        MemoryWindow::unbounded()
            .with_max_messages(1)
            .apply(&mut thread);
        assert_eq!(thread.len(), 4);
    }

    #[test]
    fn token_window() {
        let long = "x".repeat(4_000);
        let mut thread = vec![
            Message::user(long.clone()),
            Message::assistant("ok"),
            Message::user("short"),
            Message::assistant("ok"),
        ];
        MemoryWindow::unbounded()
            .with_max_tokens(100)
            .apply(&mut thread);
        assert_eq!(thread.len(), 2);
        assert_eq!(thread[0].text(), "short");
    }

    #[tokio::test]
    async fn threads_are_separate_and_bounded() {
        let memory = InMemoryMemory::new().with_max_threads(2);
        memory
            .append("a", &[Message::user("from a")])
            .await
            .unwrap();
        memory
            .append("b", &[Message::user("from b")])
            .await
            .unwrap();
        assert_eq!(memory.load("a").await.unwrap()[0].text(), "from a");
        assert_eq!(memory.load("b").await.unwrap()[0].text(), "from b");
        // `a` was used before `b`: a third thread evicts `a`.
        memory
            .append("a", &[Message::assistant("again")])
            .await
            .unwrap();
        memory
            .append("c", &[Message::user("from c")])
            .await
            .unwrap();
        assert_eq!(memory.thread_count(), 2);
        assert!(memory.load("b").await.unwrap().is_empty());
        assert_eq!(memory.load("a").await.unwrap().len(), 2);
        memory.clear("a").await.unwrap();
        assert!(memory.load("a").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn lru_bookkeeping_stays_small() {
        let memory = InMemoryMemory::new().with_max_threads(3);
        for i in 0..10_000 {
            memory
                .append(&format!("t{}", i % 5), &[Message::user("hi")])
                .await
                .unwrap();
        }
        let state = memory.lock();
        assert_eq!(state.by_name.len(), 3);
        assert!(state.lru.len() < 100, "{}", state.lru.len());
        for (_, msgs) in state.by_name.values() {
            assert!(msgs.len() <= DEFAULT_MAX_MESSAGES);
        }
    }
}
