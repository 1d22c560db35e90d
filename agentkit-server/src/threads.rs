//! Threads: conversations that live in the store, never in an agent instance. A run on a
//! thread continues its conversation; runs on different threads never share one.
//!
//! A thread belongs to the workspace that created it: its stored id is the id the workspace
//! chose under the workspace's prefix (`<org>~<workspace>~<id>`, see
//! [`Scope`]; the `default/default` workspace's ids are stored as they are). The methods
//! here take stored ids, except [`Threads::create_in`] and [`Threads::search_in`], which take
//! the workspace's [`Scope`]; the API maps ids in and out.

use std::sync::Arc;

use agentkit_core::memory::Memory;
use agentkit_core::{Error, Message, Result, Role};
use agentkit_runtime::{Expect, Store, StoreMemory};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::tenancy::{SEP, Scope};

/// The store collection of thread records.
pub const COLLECTION: &str = "agentkit.thread";

/// When a time to live of `ttl` that starts now ends (ms since epoch).
fn expiry_from_now(ttl: std::time::Duration) -> i64 {
    agentkit_runtime::model::now_ms()
        .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// The store collection that indexes threads with a time to live by when they expire
/// (`<expires_at, 20 digits>/<thread id>`), so the retention sweep reads only the due ones.
pub const EXPIRY: &str = "agentkit.thread_expiry";

/// The id of thread `id`'s entry in [`EXPIRY`] for expiry time `at` (ms since epoch).
pub(crate) fn expiry_id(at: i64, id: &str) -> String {
    format!("{:020}/{id}", at.max(0))
}

/// A conversation thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Thread {
    /// Its id (a UUID unless the client chose one).
    pub thread_id: String,
    /// When it was created (ms since epoch).
    pub created_at: i64,
    /// When it last changed (ms since epoch).
    pub updated_at: i64,
    /// Free-form metadata the client set (an object).
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// The run that last started on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Runs waiting their turn (policy `enqueue`), oldest first: each is stored `queued` and
    /// held until the run before it ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<String>,
    /// When its time to live ends (ms since epoch; set with a `ttl` when it is created or
    /// patched): the retention sweep then deletes it and its conversation, once its last run
    /// has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// The store revision (compare-and-swap).
    #[serde(skip)]
    pub revision: u64,
}

/// What to do when a run starts on a thread whose previous run is still live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ThreadPolicy {
    /// Refuse the new run (409): the default, so two callers never interleave one
    /// conversation.
    #[default]
    Reject,
    /// Cancel the live run, then start the new one.
    Interrupt,
    /// Store the new run `queued` and start it when the runs before it on the thread have
    /// ended, in the order they were started (from any node, also after a restart).
    Enqueue,
}

/// Threads over a [`Store`]: records in a document collection, messages in
/// [`StoreMemory`].
#[derive(Clone)]
pub struct Threads {
    store: Arc<dyn Store>,
    memory: Arc<StoreMemory>,
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads").finish_non_exhaustive()
    }
}

fn decode(doc: &agentkit_runtime::Doc) -> Result<Thread> {
    let mut t: Thread = serde_json::from_value(doc.value.clone())
        .map_err(|e| Error::json(format!("reading thread `{}`", doc.id), e))?;
    t.revision = doc.revision;
    Ok(t)
}

fn encode(t: &Thread) -> Result<Value> {
    serde_json::to_value(t).map_err(|e| Error::json("encoding a thread", e))
}

/// A thread id usable as a store key and in URLs.
pub fn check_thread_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "thread id `{}` is not valid: use 1 to 128 letters, digits, `-`, `_` or `.`",
            id.escape_debug()
        )))
    }
}

/// A stored thread id: a [valid](check_thread_id) id, optionally under one workspace
/// prefix (`<org>~<workspace>~<id>`).
fn check_stored_id(stored: &str) -> Result<()> {
    let parts: Vec<&str> = stored.split(SEP).collect();
    let ok = match parts.as_slice() {
        [_] => true,
        [org, ws, _] => check_thread_id(org).is_ok() && check_thread_id(ws).is_ok(),
        _ => false,
    };
    match parts.last() {
        Some(id) if ok => check_thread_id(id),
        _ => Err(Error::InvalidRequest(format!(
            "thread id `{}` is not valid: use 1 to 128 letters, digits, `-`, `_` or `.`",
            stored.escape_debug()
        ))),
    }
}

/// The workspace prefix of a stored id (empty for `default/default`).
fn prefix_of(stored: &str) -> &str {
    stored.rfind(SEP).map_or("", |i| &stored[..=i])
}

impl Threads {
    /// Threads in `store`, with conversation memory `memory`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, memory: Arc<StoreMemory>) -> Self {
        Self { store, memory }
    }

    /// The conversation memory agents use for threads.
    #[must_use]
    pub fn memory(&self) -> &Arc<StoreMemory> {
        &self.memory
    }

    /// Create a thread of the `default/default` workspace (see [`create_in`](Self::create_in)).
    pub async fn create(
        &self,
        id: Option<String>,
        metadata: Map<String, Value>,
        if_exists_do_nothing: bool,
    ) -> Result<Thread> {
        self.create_in(&Scope::default_scope(), id, metadata, if_exists_do_nothing)
            .await
    }

    /// Create a thread of `scope`'s workspace (a fresh UUID unless `id` is given; the
    /// returned thread carries its stored id). With `id` of an existing thread of the same
    /// workspace: an `InvalidState` error, or that thread when `if_exists_do_nothing`.
    /// Another workspace's thread of the same id is a different thread.
    pub async fn create_in(
        &self,
        scope: &Scope,
        id: Option<String>,
        metadata: Map<String, Value>,
        if_exists_do_nothing: bool,
    ) -> Result<Thread> {
        self.create_expiring_in(scope, id, metadata, if_exists_do_nothing, None)
            .await
    }

    /// [`create_in`](Self::create_in), with a time to live: the thread (and its
    /// conversation) is deleted by the retention sweep `ttl` after it is created, once its
    /// last run has ended. An existing thread answered for `if_exists_do_nothing` keeps its own.
    pub async fn create_expiring_in(
        &self,
        scope: &Scope,
        id: Option<String>,
        metadata: Map<String, Value>,
        if_exists_do_nothing: bool,
        ttl: Option<std::time::Duration>,
    ) -> Result<Thread> {
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        check_thread_id(&id)?;
        let stored = scope.internal(&id).ok_or_else(|| {
            Error::InvalidRequest(format!("thread id `{}` is not valid", id.escape_debug()))
        })?;
        let expires_at = ttl.map(expiry_from_now);
        if let Some(at) = expires_at {
            // The index entry first: one left without its thread (the create refused) is
            // dropped by the sweep.
            self.index_expiry(at, &stored).await?;
        }
        self.create_stored(stored, metadata, if_exists_do_nothing, expires_at)
            .await
    }

    async fn index_expiry(&self, at: i64, id: &str) -> Result<()> {
        self.store
            .doc_put(
                EXPIRY,
                &expiry_id(at, id),
                json!({"thread_id": id, "expires_at": at}),
                Expect::Any,
            )
            .await?;
        Ok(())
    }

    /// Give the thread a new time to live, from now (`None`: none; it stays until deleted or
    /// the server's `retention.thread_ttl_days`).
    pub async fn set_ttl(&self, id: &str, ttl: Option<std::time::Duration>) -> Result<Thread> {
        let expires_at = ttl.map(expiry_from_now);
        if let Some(at) = expires_at {
            self.index_expiry(at, id).await?;
        }
        // The entry of the old expiry stays and is dropped by the sweep, which finds the
        // thread's `expires_at` moved.
        self.update(id, |t| {
            t.expires_at = expires_at;
            Ok(())
        })
        .await
    }

    async fn create_stored(
        &self,
        id: String,
        metadata: Map<String, Value>,
        if_exists_do_nothing: bool,
        expires_at: Option<i64>,
    ) -> Result<Thread> {
        check_stored_id(&id)?;
        let now = agentkit_runtime::model::now_ms();
        let mut t = Thread {
            thread_id: id.clone(),
            created_at: now,
            updated_at: now,
            metadata,
            last_run: None,
            queued: Vec::new(),
            expires_at,
            revision: 0,
        };
        match self
            .store
            .doc_put(COLLECTION, &id, encode(&t)?, Expect::Absent)
            .await?
        {
            Some(doc) => {
                t.revision = doc.revision;
                Ok(t)
            }
            None if if_exists_do_nothing => self.get(&id).await,
            None => Err(Error::invalid_state(
                format!("thread {id}"),
                "already exists; use another id or omit it",
            )),
        }
    }

    /// The thread.
    pub async fn get(&self, id: &str) -> Result<Thread> {
        self.find(id)
            .await?
            .ok_or_else(|| Error::not_found("thread", id, "create it first (`POST /threads`)"))
    }

    /// The thread, if it exists.
    pub async fn find(&self, id: &str) -> Result<Option<Thread>> {
        check_stored_id(id)?;
        match self.store.doc_get(COLLECTION, id).await? {
            Some(d) => decode(&d).map(Some),
            None => Ok(None),
        }
    }

    /// Threads of the `default/default` workspace (see [`search_in`](Self::search_in)).
    pub async fn search(
        &self,
        metadata: &Map<String, Value>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Thread>> {
        self.search_in(&Scope::default_scope(), metadata, limit, offset)
            .await
    }

    /// Threads of `scope`'s workspace whose metadata contains every key/value of `metadata`,
    /// in id order (UUIDv7 ids: oldest first), skipping `offset`, at most `limit`. Reads the
    /// workspace's threads until `limit` match or none is left, so a match is never missed.
    pub async fn search_in(
        &self,
        scope: &Scope,
        metadata: &Map<String, Value>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Thread>> {
        let mut out = Vec::new();
        let mut seen = 0usize;
        let mut pages = crate::pages::DocPages::new(&*self.store, COLLECTION, scope.prefix());
        while out.len() < limit {
            let Some(page) = pages.next().await? else {
                break;
            };
            for doc in page.iter().filter(|d| scope.contains(&d.id)) {
                let t = decode(doc)?;
                if metadata.iter().all(|(k, v)| t.metadata.get(k) == Some(v)) {
                    if seen >= offset && out.len() < limit {
                        out.push(t);
                    }
                    seen += 1;
                }
            }
        }
        Ok(out)
    }

    /// Merge `metadata` into the thread's metadata.
    pub async fn patch(&self, id: &str, metadata: Map<String, Value>) -> Result<Thread> {
        self.update(id, |t| {
            t.metadata.extend(metadata.clone());
            Ok(())
        })
        .await
    }

    /// Store `t` if the stored thread is still at `t.revision` (compare-and-swap), stamping
    /// `updated_at`; `None` when another writer got there first (read it again and retry).
    pub async fn replace(&self, mut t: Thread) -> Result<Option<Thread>> {
        t.updated_at = agentkit_runtime::model::now_ms();
        let stored = self
            .store
            .doc_put(
                COLLECTION,
                &t.thread_id,
                encode(&t)?,
                Expect::Revision(t.revision),
            )
            .await?;
        Ok(stored.map(|doc| {
            t.revision = doc.revision;
            t
        }))
    }

    /// Read-modify-write with compare-and-swap; `f` may refuse with an error.
    pub async fn update(&self, id: &str, f: impl Fn(&mut Thread) -> Result<()>) -> Result<Thread> {
        for _ in 0..32 {
            let mut t = self.get(id).await?;
            f(&mut t)?;
            if let Some(t) = self.replace(t).await? {
                return Ok(t);
            }
        }
        Err(Error::Unavailable {
            what: format!("thread {id}"),
            message: "too many concurrent changes; retry".into(),
        })
    }

    /// Delete the thread and its conversation.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.get(id).await?;
        self.memory.clear(id).await?;
        self.store.doc_delete(COLLECTION, id, Expect::Any).await?;
        Ok(())
    }

    /// A new thread of the same workspace with the same metadata and conversation.
    pub async fn copy(&self, id: &str) -> Result<Thread> {
        let t = self.get(id).await?;
        let new_id = format!("{}{}", prefix_of(id), uuid::Uuid::now_v7());
        let copy = self
            .create_stored(new_id, t.metadata.clone(), false, None)
            .await?;
        let messages = self.memory.load(id).await?;
        if !messages.is_empty() {
            self.memory.append(&copy.thread_id, &messages).await?;
        }
        Ok(copy)
    }

    /// The conversation so far.
    pub async fn messages(&self, id: &str) -> Result<Vec<Message>> {
        self.memory.load(id).await
    }

    /// The thread's state values: `{"messages": [...]}` in the LangGraph message shape.
    pub async fn values(&self, id: &str) -> Result<Value> {
        Ok(values_of(&self.messages(id).await?))
    }

    /// The state after each turn of the conversation, newest first (at most `limit`).
    pub async fn history(&self, id: &str, limit: usize) -> Result<Vec<Value>> {
        let messages = self.messages(id).await?;
        let mut ends: Vec<usize> = messages
            .iter()
            .enumerate()
            .filter(|(i, m)| m.role == Role::User && *i > 0)
            .map(|(i, _)| i)
            .collect();
        ends.push(messages.len());
        Ok(ends
            .into_iter()
            .rev()
            .filter(|&n| n > 0)
            .take(limit)
            .map(|n| values_of(&messages[..n]))
            .collect())
    }
}

/// Messages in the shape LangGraph clients read: `{"type": "human"|"ai"|"tool"|"system",
/// "content": text, ...}`; a model answer's tool calls are its `tool_calls` (`{"id", "name",
/// "args", "type": "tool_call"}`), and each tool result is a `tool` message of its own with
/// the text of the result and the `tool_call_id` it answers (`status: error` if it failed).
#[must_use]
pub fn values_of(messages: &[Message]) -> Value {
    let list: Vec<Value> = messages.iter().flat_map(messages_json).collect();
    json!({ "messages": list })
}

fn messages_json(m: &Message) -> Vec<Value> {
    let kind = match m.role {
        Role::User => "human",
        Role::Assistant => "ai",
        Role::Tool => "tool",
        Role::System => "system",
        _ => "unknown",
    };
    let results: Vec<Value> = m
        .content
        .iter()
        .filter_map(|c| match c {
            agentkit_core::Content::ToolResult {
                call_id,
                content,
                is_error,
            } => {
                let mut v = json!({
                    "type": "tool",
                    "content": agentkit_core::message::join_text(content),
                    "tool_call_id": call_id,
                });
                if *is_error {
                    v["status"] = json!("error");
                }
                Some(v)
            }
            _ => None,
        })
        .collect();
    if !results.is_empty() {
        return results;
    }
    let mut v = json!({ "type": kind, "content": m.text() });
    let calls: Vec<Value> = m
        .content
        .iter()
        .filter_map(|c| match c {
            agentkit_core::Content::ToolCall {
                id,
                name,
                arguments,
            } => Some(json!({"id": id, "name": name, "args": arguments, "type": "tool_call"})),
            _ => None,
        })
        .collect();
    if !calls.is_empty() {
        v["tool_calls"] = Value::Array(calls);
    }
    vec![v]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::WorkspaceId;
    use proptest::prelude::*;

    #[test]
    fn stored_ids_carry_at_most_one_workspace_prefix() {
        assert!(check_stored_id("abc").is_ok());
        assert!(check_stored_id("acme~prod~abc").is_ok());
        assert!(check_stored_id("acme~abc").is_err());
        assert!(check_stored_id("a~b~c~d").is_err());
        assert!(check_stored_id("acme~prod~").is_err());
        assert!(check_stored_id("acme~prod~a b").is_err());
        assert_eq!(prefix_of("acme~prod~abc"), "acme~prod~");
        assert_eq!(prefix_of("abc"), "");
    }

    proptest! {
        #[test]
        fn a_valid_id_in_any_workspace_is_a_valid_stored_id(
            id in "[A-Za-z0-9._-]{1,128}", org in "[a-z0-9]{1,8}", ws in "[a-z0-9]{1,8}",
        ) {
            let scope = Scope::of(&WorkspaceId::new(org, ws));
            let stored = scope.internal(&id).unwrap_or_default();
            prop_assert!(check_stored_id(&stored).is_ok());
            prop_assert_eq!(prefix_of(&stored), scope.prefix());
            prop_assert_eq!(scope.external(&stored), Some(id.as_str()));
        }

        #[test]
        fn stored_ids_parse_or_fail_cleanly(s in ".{0,200}") {
            if check_stored_id(&s).is_ok() {
                prop_assert!(s.split(SEP).count() == 1 || s.split(SEP).count() == 3);
            }
        }
    }
}
