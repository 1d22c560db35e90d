//! Idempotency keys for gateway calls (`/v1/execute`, `/v1/execute/stream`, the WebSocket's
//! `tool_call`, `POST /v1/servers/{name}/call_tool`).
//!
//! A call sent with an idempotency key (the `Idempotency-Key` header of a batch, which
//! keys each call as `<header key>` + its `id`, or the call's own `idempotency_key`; a
//! WebSocket `tool_call`'s `idempotency_key`; the `Idempotency-Key` header of a
//! `call_tool`) is remembered in the store for `gateway.idempotency_window_ms` (default 24 h) under its
//! workspace: document `agentkit.gateway_idempotency/<org>/<workspace>/<sha256 of the key>`
//! holding a digest of what was called (server, tool, canonical arguments) and, once it
//! ended, its [`CallResult`] (redacted, as the journal keeps a tool's result: a retry gets
//! it with credentials and PII masked). A retry within the window with the same key
//!
//! - gets that result back (a call that waits for an approval: `pending_approval` with the
//!   same `run_id`) and calls nothing, opens no second approval;
//! - while the first attempt is still being made, waits for it (up to its timeout);
//! - with other arguments (or another server or tool) is refused: 422 (a batch is refused
//!   whole), an `error` message on the WebSocket.
//!
//! Keys are per workspace: another workspace using the same key makes its own call. The
//! record is claimed create-only, so two attempts racing on two server processes make one
//! call. A call that could not be made (an unknown tool, a cancelled stream) forgets its
//! key, so a retry makes it; an attempt whose process died while it was in flight is taken
//! over once its timeout (plus a minute) has passed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::policy::canonical_json;
use agentkit_core::{Error, Result};
use agentkit_runtime::model::{Expect, now_ms};
use agentkit_runtime::{Doc, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Call, CallResult, CallStatus};
use crate::tenancy::WorkspaceId;

/// How long keys are remembered unless configured (24 h).
pub(crate) const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The collection of remembered calls (pruned by the retention sweep once expired).
pub(crate) const COLLECTION: &str = "agentkit.gateway_idempotency";

/// How long past its timeout an attempt still in flight is waited for before another
/// attempt takes its key over (its process may have died).
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// The longest idempotency key accepted, bytes.
pub(crate) const MAX_KEY_BYTES: usize = 255;

/// The key of call `call` of a batch: its own `idempotency_key`, else the batch's
/// `Idempotency-Key` header with the call's id.
pub(crate) fn key_of(own: Option<&str>, header: Option<&str>, call_id: &str) -> Option<String> {
    match (own, header) {
        (Some(k), _) => Some(k.to_owned()),
        (None, Some(h)) => Some(format!("{h}\u{1f}{call_id}")),
        (None, None) => None,
    }
}

/// Whether `key` can be an idempotency key: 1 to [`MAX_KEY_BYTES`] printable ASCII bytes.
pub(crate) fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_BYTES && key.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// What a call is, for comparing a retry with the first attempt: a digest of its server,
/// tool and arguments (not its id or timeout).
pub(crate) fn fingerprint(call: &Call) -> String {
    let mut text = String::new();
    canonical_json(
        &json!({"server": call.server, "tool": call.tool, "arguments": call.arguments}),
        &mut text,
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn doc_id(ws: &WorkspaceId, key: &str) -> String {
    format!(
        "{}/{}/{}",
        ws.org,
        ws.workspace,
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// What an earlier attempt with the same key left.
#[derive(Debug)]
pub(crate) enum Claim {
    /// None (or one that expired or was abandoned): this attempt makes the call, then
    /// [`Keys::finish`]es (or [`Keys::release`]s) the ticket.
    Fresh(Ticket),
    /// It ended with this result.
    Done(Box<CallResult>),
    /// It is still being made.
    InFlight,
    /// It called something else (server, tool or arguments differ).
    Conflict,
}

/// The right to make a keyed call and record its result.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: String,
    revision: u64,
    fingerprint: String,
}

/// The remembered keys of gateway calls, over the store.
#[derive(Clone)]
pub(crate) struct Keys {
    store: Arc<dyn Store>,
    window: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Keys {
    /// Keys over `store`, remembered for `window`.
    pub(crate) fn new(store: Arc<dyn Store>, window: Duration) -> Self {
        Self { store, window }
    }

    /// What an earlier attempt of `call` with `key` in `ws` left at `now`, without claiming
    /// anything (to refuse a conflicting batch before any of its calls is made).
    pub(crate) async fn peek(
        &self,
        ws: &WorkspaceId,
        key: &str,
        call: &Call,
        now: i64,
    ) -> Result<Option<Claim>> {
        let Some(doc) = self.store.doc_get(COLLECTION, &doc_id(ws, key)).await? else {
            return Ok(None);
        };
        Ok(self.judge(&doc, &fingerprint(call), now))
    }

    /// What `doc` (a remembered attempt) means for an attempt of `fingerprint` at `now`;
    /// `None` when it no longer counts (expired or abandoned).
    fn judge(&self, doc: &Doc, fingerprint: &str, now: i64) -> Option<Claim> {
        let v = &doc.value;
        let expires = v.get("expires_at").and_then(Value::as_i64).unwrap_or(0);
        if expires <= now {
            return None;
        }
        if v.get("fingerprint").and_then(Value::as_str) != Some(fingerprint) {
            return Some(Claim::Conflict);
        }
        match v.get("result") {
            Some(r) if !r.is_null() => match serde_json::from_value::<CallResult>(r.clone()) {
                Ok(r) => Some(Claim::Done(Box::new(r))),
                // Unreadable: the call was made; never make it again.
                Err(_) => Some(Claim::InFlight),
            },
            _ => {
                let stale = v.get("stale_at").and_then(Value::as_i64).unwrap_or(0);
                (stale > now).then_some(Claim::InFlight)
            }
        }
    }

    /// Claim `key` in `ws` for `call` (whose timeout is `timeout`) at `now`.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub(crate) async fn claim(
        &self,
        ws: &WorkspaceId,
        key: &str,
        call: &Call,
        timeout: Duration,
        now: i64,
    ) -> Result<Claim> {
        let id = doc_id(ws, key);
        let fp = fingerprint(call);
        let record = json!({
            "fingerprint": fp,
            "call_id": call.id,
            "started_at": now,
            "stale_at": now.saturating_add(millis(timeout + ABANDONED_AFTER)),
            "expires_at": now.saturating_add(millis(self.window)),
            "result": null,
        });
        for _ in 0..8 {
            let expect = match self.store.doc_get(COLLECTION, &id).await? {
                None => Expect::Absent,
                Some(doc) => match self.judge(&doc, &fp, now) {
                    Some(c) => return Ok(c),
                    // Expired or abandoned: take it over.
                    None => Expect::Revision(doc.revision),
                },
            };
            if let Some(doc) = self
                .store
                .doc_put(COLLECTION, &id, record.clone(), expect)
                .await?
            {
                return Ok(Claim::Fresh(Ticket {
                    id,
                    revision: doc.revision,
                    fingerprint: fp,
                }));
            }
            // Another attempt claimed it meanwhile: read what it left.
        }
        Err(Error::Unavailable {
            what: "an idempotency key".into(),
            message: "it is being claimed by many attempts at once; retry".into(),
        })
    }

    /// Make `call` at most once per `key` in `ws`: with `make` when no earlier attempt used
    /// the key (or it expired), else answer what that attempt left. An attempt still being
    /// made is waited for, up to `call`'s timeout. A call `make` did not make (an `Err`, or a
    /// result that says it was not made: see [`unmade`]) forgets the key, so a retry makes
    /// it; any other result is remembered for the window.
    ///
    /// # Errors
    ///
    /// [`Refused`] when the key belongs to another call, an earlier attempt is still being
    /// made after the wait, or the key could not be checked (the store failed).
    pub(crate) async fn once<E, F, Fut>(
        &self,
        ws: &WorkspaceId,
        key: &str,
        call: Call,
        make: F,
    ) -> std::result::Result<Keyed<E>, Refused>
    where
        F: FnOnce(Call) -> Fut,
        Fut: Future<Output = std::result::Result<CallResult, E>>,
    {
        let wait_until = Instant::now() + call.timeout;
        let ticket = loop {
            match self.claim(ws, key, &call, call.timeout, now_ms()).await {
                Ok(Claim::Fresh(t)) => break t,
                Ok(Claim::Done(mut r)) => {
                    // The first attempt's result, under this request's id for the call.
                    r.id.clone_from(&call.id);
                    return Ok(Keyed::Replayed(r));
                }
                Ok(Claim::InFlight) if Instant::now() < wait_until => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Claim::InFlight) => return Err(Refused::InFlight),
                Ok(Claim::Conflict) => return Err(Refused::Conflict),
                Err(e) => return Err(Refused::Unchecked(e)),
            }
        };
        let id = call.id.clone();
        let made = make(call).await;
        let kept = match &made {
            Ok(r) if !unmade(r) => self.finish(ticket, r).await,
            _ => self.release(ticket).await,
        };
        if let Err(e) = kept {
            tracing::warn!(call = %id, error = %e, "recording a gateway call's idempotency key failed");
        }
        Ok(Keyed::Made(made))
    }

    /// Record the result of the call `ticket` claimed: retries get it back.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub(crate) async fn finish(&self, ticket: Ticket, result: &CallResult) -> Result<()> {
        let now = now_ms();
        let mut value = json!({
            "fingerprint": ticket.fingerprint,
            "call_id": result.id,
            "finished_at": now,
            "expires_at": now.saturating_add(millis(self.window)),
            "result": result,
        });
        // Stored masked, as the journal keeps a tool's result: a retry gets the result with
        // the credentials in it masked, and the database never holds them.
        if let Some(r) = value.get_mut("result") {
            agentkit_runtime::Redactor::default().apply(r);
        }
        self.store
            .doc_put(
                COLLECTION,
                &ticket.id,
                value,
                Expect::Revision(ticket.revision),
            )
            .await?;
        Ok(())
    }

    /// Forget the key `ticket` claimed (the call was not made): a retry makes it.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub(crate) async fn release(&self, ticket: Ticket) -> Result<()> {
        self.store
            .doc_delete(COLLECTION, &ticket.id, Expect::Revision(ticket.revision))
            .await?;
        Ok(())
    }
}

/// Whether result `r` says its call was not made (not started before a batch's deadline,
/// cancelled by the client, over a rate limit, refused before reaching its server): its key
/// is forgotten, so a retry with it is made.
fn unmade(r: &CallResult) -> bool {
    matches!(r.status, CallStatus::Cancelled | CallStatus::RateLimited)
        || (r.duration_ms == 0
            && r.run_id.is_none()
            && matches!(r.status, CallStatus::Timeout | CallStatus::Error))
}

/// What a keyed call came to (see [`Keys::once`]).
// `Made` is the common case and lives for one return: boxing it would allocate per call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Keyed<E> {
    /// This attempt made it (or tried to): what making it answered.
    Made(std::result::Result<CallResult, E>),
    /// An earlier attempt with the same key made it: its result, under this call's id.
    Replayed(Box<CallResult>),
}

/// Why a keyed call was neither made nor answered from an earlier attempt.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The key was used (within the window) for a call with another server, tool or
    /// arguments.
    Conflict,
    /// An earlier attempt with the key is still being made (after waiting up to the call's
    /// timeout).
    InFlight,
    /// The key could not be checked: the store's error.
    Unchecked(Error),
}

impl Refused {
    /// The code of the WebSocket `error` message saying so.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Conflict => "idempotency_key_reused",
            Self::InFlight => "idempotency_key_in_flight",
            Self::Unchecked(_) => "unavailable",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict => f.write_str(
                "its idempotency key was used for a call with another server, tool or \
                 arguments; send a new key for a new call",
            ),
            Self::InFlight => f.write_str(
                "an earlier attempt with the same idempotency key is still being made; retry \
                 with the same key later to get its result",
            ),
            Self::Unchecked(e) => write!(
                f,
                "its idempotency key could not be checked ({e}); retry with the same key"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    fn call(args: Value) -> Call {
        let Value::Object(arguments) = args else {
            panic!("arguments must be an object")
        };
        Call {
            id: "c".into(),
            server: "crm".into(),
            tool: "send".into(),
            arguments,
            timeout: Duration::from_secs(1),
            cut: None,
        }
    }

    #[test]
    fn the_fingerprint_ignores_key_order_but_not_values() {
        let a = call(json!({"a": 1, "b": {"x": [1, 2], "y": "z"}}));
        let b = call(json!({"b": {"y": "z", "x": [1, 2]}, "a": 1}));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(
            fingerprint(&a),
            fingerprint(&call(json!({"a": 2, "b": {}})))
        );
        let mut other_tool = a.clone();
        other_tool.tool = "delete".into();
        assert_ne!(fingerprint(&a), fingerprint(&other_tool));
    }

    #[test]
    fn keys_name_the_call_in_the_batch() {
        assert_eq!(key_of(Some("own"), Some("h"), "c1").as_deref(), Some("own"));
        assert_ne!(key_of(None, Some("h"), "c1"), key_of(None, Some("h"), "c2"));
        assert_eq!(key_of(None, None, "c1"), None);
        assert!(valid_key("order-42"));
        assert!(!valid_key(""));
        assert!(!valid_key("tab\tinside"));
        assert!(!valid_key(&"k".repeat(MAX_KEY_BYTES + 1)));
    }

    proptest! {
        #[test]
        fn canonical_json_parses_back_to_the_same_value(
            pairs in proptest::collection::vec(("[a-z\"\\\\]{0,6}", any::<i64>()), 0..8)
        ) {
            let mut m = Map::new();
            for (k, v) in pairs {
                m.insert(k, json!(v));
            }
            let v = Value::Object(m);
            let mut text = String::new();
            canonical_json(&v, &mut text);
            prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        }
    }

    fn success(id: &str, text: &str) -> CallResult {
        serde_json::from_value(json!({
            "id": id, "status": "success", "content": [{"type": "text", "text": text}],
            "duration_ms": 3, "cost": 0.0
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn once_makes_a_call_once_and_refuses_what_it_cannot_make() {
        let keys = Keys::new(
            Arc::new(agentkit_runtime::MemoryStore::new()),
            Duration::from_secs(60),
        );
        let ws = WorkspaceId::new("acme", "prod");
        let c = call(json!({"text": "hi"}));
        let made = keys
            .once(&ws, "k", c.clone(), |c| async move {
                Ok::<_, String>(success(&c.id, "first"))
            })
            .await
            .unwrap();
        assert!(matches!(made, Keyed::Made(Ok(ref r)) if r.content[0]["text"] == "first"));
        // The retry, under another id, gets the first result and makes nothing.
        let mut retry = c.clone();
        retry.id = "again".into();
        match keys
            .once(&ws, "k", retry, |_| async {
                Err::<CallResult, _>("made twice")
            })
            .await
            .unwrap()
        {
            Keyed::Replayed(r) => {
                assert_eq!(r.id, "again");
                assert_eq!(r.content[0]["text"], "first");
            }
            other => panic!("expected the first result, got {other:?}"),
        }
        // Other arguments: refused, saying what to do.
        let refused = keys
            .once(&ws, "k", call(json!({"text": "bye"})), |_| async {
                Err::<CallResult, _>("made")
            })
            .await
            .unwrap_err();
        assert!(matches!(refused, Refused::Conflict));
        assert!(refused.to_string().contains("send a new key"), "{refused}");
        assert_eq!(refused.code(), "idempotency_key_reused");
        // A call that could not be made forgets its key: the next attempt makes it.
        let failed = keys
            .once(&ws, "f", c.clone(), |_| async {
                Err::<CallResult, _>("unreachable")
            })
            .await
            .unwrap();
        assert!(matches!(failed, Keyed::Made(Err("unreachable"))));
        let made = keys
            .once(&ws, "f", c.clone(), |c| async move {
                Ok::<_, String>(success(&c.id, "second"))
            })
            .await
            .unwrap();
        assert!(matches!(made, Keyed::Made(Ok(_))));
        // An attempt still in flight is waited for up to the call's timeout, then refused.
        let Claim::Fresh(_) = keys
            .claim(&ws, "busy", &c, c.timeout, now_ms())
            .await
            .unwrap()
        else {
            panic!("fresh")
        };
        let mut quick = c.clone();
        quick.timeout = Duration::from_millis(250);
        let started = Instant::now();
        let refused = keys
            .once(&ws, "busy", quick, |_| async {
                Err::<CallResult, _>("made")
            })
            .await
            .unwrap_err();
        assert!(matches!(refused, Refused::InFlight), "{refused}");
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(refused.to_string().contains("retry with the same key"));
    }

    #[test]
    fn a_result_that_says_its_call_was_not_made_forgets_its_key() {
        let mut r = success("c", "x");
        assert!(!unmade(&r));
        r.status = CallStatus::Cancelled;
        assert!(unmade(&r));
        r.status = CallStatus::Timeout;
        r.duration_ms = 0;
        assert!(unmade(&r), "not started before the deadline");
        r.duration_ms = 5;
        assert!(!unmade(&r), "timed out upstream: it may have been made");
    }

    #[tokio::test]
    async fn a_key_is_claimed_once_remembered_and_per_workspace() {
        let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
        let keys = Keys::new(store, Duration::from_secs(60));
        let acme = WorkspaceId::new("acme", "prod");
        let globex = WorkspaceId::new("globex", "prod");
        let c = call(json!({"text": "hi"}));
        let t = Duration::from_secs(1);
        let Claim::Fresh(ticket) = keys.claim(&acme, "k", &c, t, 1000).await.unwrap() else {
            panic!("the first claim is fresh")
        };
        assert!(matches!(
            keys.claim(&acme, "k", &c, t, 1001).await.unwrap(),
            Claim::InFlight
        ));
        assert!(matches!(
            keys.claim(&globex, "k", &c, t, 1001).await.unwrap(),
            Claim::Fresh(_)
        ));
        let other = call(json!({"text": "bye"}));
        assert!(matches!(
            keys.claim(&acme, "k", &other, t, 1002).await.unwrap(),
            Claim::Conflict
        ));
        let result: CallResult = serde_json::from_value(json!({
            "id": "c", "status": "success", "content": [], "duration_ms": 1, "cost": 0.0
        }))
        .unwrap();
        keys.finish(ticket, &result).await.unwrap();
        let now = now_ms();
        match keys.claim(&acme, "k", &c, t, now).await.unwrap() {
            Claim::Done(r) => assert_eq!(*r, result),
            other => panic!("expected the result, got {other:?}"),
        }
        // After the window it is a new call.
        assert!(matches!(
            keys.claim(&acme, "k", &c, t, now + 61_000).await.unwrap(),
            Claim::Fresh(_)
        ));
        // An attempt abandoned in flight is taken over after its timeout and a minute (in a
        // window longer than that).
        let keys = Keys::new(
            Arc::new(agentkit_runtime::MemoryStore::new()),
            Duration::from_secs(3600),
        );
        let Claim::Fresh(_) = keys.claim(&acme, "lost", &c, t, 5000).await.unwrap() else {
            panic!("fresh")
        };
        assert!(matches!(
            keys.claim(&acme, "lost", &c, t, 5000 + 60_000)
                .await
                .unwrap(),
            Claim::InFlight
        ));
        assert!(matches!(
            keys.claim(&acme, "lost", &c, t, 5000 + 61_001)
                .await
                .unwrap(),
            Claim::Fresh(_)
        ));
    }
}
