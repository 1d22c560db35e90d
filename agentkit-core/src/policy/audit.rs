//! The audit log of policy decisions: [`AuditEvent`], the [`AuditSink`] trait, and the hash
//! chain that makes a stored log tamper-evident ([`AuditEntry`], [`verify_chain`]).

use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::context::RunContext;
use crate::error::{Error, Result};

/// The `prev_hash` of the first entry of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to a tool call, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditOutcome {
    /// The policy allowed the call.
    Allowed,
    /// The policy refused the call.
    Denied,
    /// The policy asked for an approval; the call waits.
    ApprovalRequested,
    /// The approval was given; the call runs.
    Approved,
    /// The approval was refused (or expired); the call does not run.
    Rejected,
    /// Someone changed the platform's configuration outside any run (a key created or
    /// revoked, a label moved, a webhook rotated, a secret set; see [`AuditEvent::change`]).
    Changed,
}

impl AuditOutcome {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::ApprovalRequested => "approval_requested",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Changed => "changed",
        }
    }
}

/// One audited decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
    /// What happened.
    pub outcome: AuditOutcome,
    /// The run.
    pub run_id: String,
    /// The tenant of the run's principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The workspace of the run's principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The API key id of the run's principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The tool call's id, as the model gave it.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// Its arguments (a sink that stores them redacts them first).
    pub arguments: Value,
    /// The policy that decided.
    pub policy: String,
    /// The rule that decided, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Who decided (an approver), when a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// For an approval request: the run's earlier successful tool calls (the chain that
    /// triggered it), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
    /// The way a call came in when it is not an agent's own: `gateway` for a call made
    /// through the server's gateway for an outside client. Unset for an agent run's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The server process (its node id) that made a gateway call's decision: another
    /// process on the same store reads the calls it did not make from the log, so a chain
    /// rule sees a caller's calls through every node. Unset for an agent run's calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl AuditEvent {
    /// An event about the call `tool`/`call_id` of the run `ctx` (principal included), now.
    pub fn new(
        outcome: AuditOutcome,
        ctx: &RunContext,
        call_id: impl Into<String>,
        tool: impl Into<String>,
        arguments: Value,
        policy: impl Into<String>,
    ) -> Self {
        let p = ctx.principal();
        Self {
            at_ms: now_ms(),
            outcome,
            run_id: ctx.run_id().to_owned(),
            tenant: p.and_then(|p| p.tenant.clone()),
            workspace: p.and_then(|p| p.workspace.clone()),
            key_id: p.and_then(|p| p.key_id.clone()),
            call_id: call_id.into(),
            tool: tool.into(),
            arguments,
            policy: policy.into(),
            rule: None,
            reason: String::new(),
            actor: None,
            history: Vec::new(),
            via: None,
            node: None,
        }
    }

    /// A change made outside any run, now: `action` says what was done (`keys.create`,
    /// `webhooks.rotate`, …; stored in `tool`), `resource` what it was done to (stored in
    /// `call_id`), `details` what else identifies it (stored in `arguments`; never a secret).
    /// `run_id` is empty and `policy` is `admin`; name who did it with
    /// [`with_principal`](Self::with_principal) and [`with_actor`](Self::with_actor).
    pub fn change(action: impl Into<String>, resource: impl Into<String>, details: Value) -> Self {
        Self {
            at_ms: now_ms(),
            outcome: AuditOutcome::Changed,
            run_id: String::new(),
            tenant: None,
            workspace: None,
            key_id: None,
            call_id: resource.into(),
            tool: action.into(),
            arguments: details,
            policy: "admin".to_owned(),
            rule: None,
            reason: String::new(),
            actor: None,
            history: Vec::new(),
            via: None,
            node: None,
        }
    }

    /// Set the workspace the event belongs to (its organisation and name: the audit chain
    /// it lands in) and the API key that acted, if one did.
    #[must_use]
    pub fn with_principal(
        mut self,
        tenant: impl Into<String>,
        workspace: impl Into<String>,
        key_id: Option<String>,
    ) -> Self {
        self.tenant = Some(tenant.into());
        self.workspace = Some(workspace.into());
        self.key_id = key_id;
        self
    }

    /// Set the tool history that led to the decision.
    #[must_use]
    pub fn with_history(mut self, history: Vec<String>) -> Self {
        self.history = history;
        self
    }

    /// Name the rule.
    #[must_use]
    pub fn with_rule(mut self, rule: Option<String>) -> Self {
        self.rule = rule;
        self
    }

    /// Say why.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Name who decided.
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Say how the call came in (see [`via`](Self::via)).
    #[must_use]
    pub fn with_via(mut self, via: impl Into<String>) -> Self {
        self.via = Some(via.into());
        self
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where audited decisions go. A sink that fails makes the call fail (the call could not be
/// audited, so it is not made).
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Record one event.
    async fn record(&self, event: AuditEvent) -> Result<()>;
}

/// One entry of a hash-chained audit log: the event, its position, the previous entry's hash
/// and its own, `sha256(prev_hash ‖ seq ‖ canonical JSON of the event)` in lowercase hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// Position in the chain (the first entry is 1).
    pub seq: u64,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
    /// The event.
    pub event: AuditEvent,
}

impl AuditEntry {
    /// The entry after one whose hash is `prev_hash` at `seq - 1`.
    #[must_use]
    pub fn chained(seq: u64, prev_hash: &str, event: AuditEvent) -> Self {
        let hash = entry_hash(seq, prev_hash, &event);
        Self {
            seq,
            prev_hash: prev_hash.to_owned(),
            hash,
            event,
        }
    }

    /// [`chained`](Self::chained), and the entry as JSON (what `serde_json::to_value` of it
    /// gives), the event serialised once for both.
    ///
    /// # Errors
    ///
    /// [`Error::Json`](crate::Error) if the event does not serialise.
    pub fn chained_value(seq: u64, prev_hash: &str, event: AuditEvent) -> Result<(Self, Value)> {
        let value =
            serde_json::to_value(&event).map_err(|e| Error::json("encoding an audit event", e))?;
        let hash = value_hash(seq, prev_hash, &value);
        let json = serde_json::json!({
            "seq": seq,
            "prev_hash": prev_hash,
            "hash": hash,
            "event": value,
        });
        Ok((
            Self {
                seq,
                prev_hash: prev_hash.to_owned(),
                hash,
                event,
            },
            json,
        ))
    }
}

fn entry_hash(seq: u64, prev_hash: &str, event: &AuditEvent) -> String {
    match serde_json::to_value(event) {
        Ok(v) => value_hash(seq, prev_hash, &v),
        Err(e) => text_hash(seq, prev_hash, &format!("unserialisable event: {e}")),
    }
}

/// The hash of the entry at `seq` after `prev_hash` whose event is `event` (as JSON).
fn value_hash(seq: u64, prev_hash: &str, event: &Value) -> String {
    let mut text = String::new();
    canonical_json(event, &mut text);
    text_hash(seq, prev_hash, &text)
}

fn text_hash(seq: u64, prev_hash: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Append `v` to `out` as canonical JSON: object keys sorted at every level, no whitespace,
/// so equal values give equal text whatever order their keys came in (a database or a
/// client may reorder them). What the audit chain hashes; also used to compare or hash
/// any JSON value by content.
pub fn canonical_json(v: &Value, out: &mut String) {
    let mut bytes = std::mem::take(out).into_bytes();
    canonical_bytes(v, &mut bytes);
    // serde_json writes UTF-8 only, and `out` was a `String`: this never takes the lossy
    // branch.
    *out = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// [`canonical_json`] into bytes: keys and leaves written by serde_json's compact writer
/// (the text `Value::to_string` gives), without a string per key or leaf.
fn canonical_bytes(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Cannot fail: a `Vec` takes every byte and a string always serialises.
                let _ = serde_json::to_writer(&mut *out, k.as_str());
                out.push(b':');
                if let Some(item) = map.get(k) {
                    canonical_bytes(item, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_bytes(item, out);
            }
            out.push(b']');
        }
        // Cannot fail, as above.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// Where a hash chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainBreak {
    /// The first entry that does not verify.
    pub seq: u64,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the audit log was altered at entry {}: {}",
            self.seq, self.problem
        )
    }
}

impl std::error::Error for ChainBreak {}

/// Check a run of consecutive entries: every entry's hash is the hash of its content, links to
/// the entry before, and sequence numbers follow each other. The first entry must be the
/// chain's first (seq 1, [`GENESIS_HASH`]) unless the slice starts mid-chain, in which case
/// only its own hash is checked.
///
/// # Errors
///
/// [`Error::InvalidState`] naming the first entry that was changed, removed or inserted.
pub fn verify_chain(entries: &[AuditEntry]) -> Result<()> {
    check(entries).map_err(|b| Error::InvalidState {
        what: "audit log".to_owned(),
        message: b.to_string(),
    })
}

fn check(entries: &[AuditEntry]) -> std::result::Result<(), ChainBreak> {
    let mut prev: Option<&AuditEntry> = None;
    for e in entries {
        let brk = |problem: String| ChainBreak {
            seq: e.seq,
            problem,
        };
        match prev {
            None if e.seq == 1 && e.prev_hash != GENESIS_HASH => {
                return Err(brk("the first entry does not start the chain".into()));
            }
            None => {}
            Some(p) => {
                if e.seq != p.seq + 1 {
                    return Err(brk(format!(
                        "it follows entry {}: entries are missing or were inserted",
                        p.seq
                    )));
                }
                if e.prev_hash != p.hash {
                    return Err(brk("it does not link to the entry before it".into()));
                }
            }
        }
        if entry_hash(e.seq, &e.prev_hash, &e.event) != e.hash {
            return Err(brk("its content does not match its hash".into()));
        }
        prev = Some(e);
    }
    Ok(())
}

/// An in-memory hash-chained audit log (tests, in-process agents).
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    entries: Mutex<Vec<AuditEntry>>,
}

impl MemoryAuditLog {
    /// An empty log.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry, oldest first.
    #[must_use]
    pub fn entries(&self) -> Vec<AuditEntry> {
        crate::lock(&self.entries).clone()
    }
}

#[async_trait]
impl AuditSink for MemoryAuditLog {
    async fn record(&self, event: AuditEvent) -> Result<()> {
        let mut entries = crate::lock(&self.entries);
        let (seq, prev) = entries.last().map_or((1, GENESIS_HASH.to_owned()), |e| {
            (e.seq + 1, e.hash.clone())
        });
        entries.push(AuditEntry::chained(seq, &prev, event));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(tool: &str) -> AuditEvent {
        AuditEvent::new(
            AuditOutcome::Denied,
            &RunContext::new().with_run_id("r"),
            "c1",
            tool,
            json!({"b": 1, "a": {"y": 2, "x": 1}}),
            "p",
        )
    }

    /// The text `canonical_json` wrote before it wrote bytes directly (a string per key
    /// and leaf): stored chains were hashed over it, so the text must not change.
    fn canonical_reference(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical_reference(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical_reference(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\u{0}-\\u{1f}\"\\\\\\u{7f}\\u{2028}é😀a-z]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[\\u{0}-\\u{1f}\"\\\\a-zé😀]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn canonical_text_is_unchanged(v in json_value(), prefix in "[a-z{]{0,3}") {
            let (mut now, mut before) = (prefix.clone(), prefix);
            canonical_json(&v, &mut now);
            canonical_reference(&v, &mut before);
            proptest::prop_assert_eq!(now, before);
        }
    }

    #[test]
    fn chained_value_is_the_entry_as_json() {
        // One event (it carries the time it was made).
        let e = event("t");
        let (entry, value) = AuditEntry::chained_value(7, "abc", e.clone()).unwrap();
        assert_eq!(entry, AuditEntry::chained(7, "abc", e));
        assert_eq!(value, serde_json::to_value(&entry).unwrap());
        let back: AuditEntry = serde_json::from_value(value).unwrap();
        verify_chain(std::slice::from_ref(&back)).unwrap();
    }

    #[tokio::test]
    async fn tampering_is_detected() {
        let log = MemoryAuditLog::new();
        for t in ["a", "b", "c", "d"] {
            log.record(event(t)).await.unwrap();
        }
        let good = log.entries();
        verify_chain(&good).unwrap();
        // A changed field.
        let mut bad = good.clone();
        bad[1].event.reason = "nothing to see".into();
        let e = verify_chain(&bad).unwrap_err().to_string();
        assert!(e.contains("altered at entry 2"), "{e}");
        // A removed entry.
        let mut bad = good.clone();
        bad.remove(2);
        let e = verify_chain(&bad).unwrap_err().to_string();
        assert!(e.contains("entry 4"), "{e}");
        // A rewritten entry with a recomputed hash breaks the next link.
        let mut bad = good.clone();
        bad[1] = AuditEntry::chained(2, &bad[0].hash.clone(), event("zzz"));
        let e = verify_chain(&bad).unwrap_err().to_string();
        assert!(e.contains("entry 3"), "{e}");
        // Key order (a database may reorder JSON keys) does not matter.
        let mut same = good.clone();
        let v = serde_json::to_string(&same[0].event).unwrap();
        same[0].event = serde_json::from_str(&v).unwrap();
        verify_chain(&same).unwrap();
        // A window from the middle verifies on its own.
        verify_chain(&good[1..]).unwrap();
    }
}
