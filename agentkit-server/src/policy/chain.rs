//! Group appends to the hash-chained audit log.
//!
//! Each workspace's chain has one writer task per [`StoreAudit`](super::StoreAudit) (started on
//! its first append). Appends are sent to it over a channel; it takes every append waiting (up
//! to [`MAX_BATCH`]), chains them in memory after the head it knows, and writes the entries and
//! the new head with one [`DocStore::doc_put_many`](agentkit_runtime::DocStore::doc_put_many):
//! one transaction, so under load many appends share one commit. Callers are answered only
//! after that write returned, so an entry handed back is stored.
//!
//! The guarantee the server builds on this: every append is awaited by whoever answers the
//! client (the policy layer before a tool call is made or refused, the API before it
//! answers a change or an approval decision), so a 2xx (or a denial) a client saw has its
//! entry committed — a SIGKILL right after the answer loses nothing that was answered. What
//! is lost in a crash is only what no client was told about yet.
//!
//! Other writers of the same chain (another server process on the same database, another
//! `StoreAudit` in this one) are handled as before: entries are written create-only, so two
//! writers never take the same position, and the batch stops at the first position already
//! taken (nothing after it is written). The writer then finds the chain's real end, moves the
//! head there (compare-and-swap on its revision) and chains what is left after it. The head is
//! only a hint of the last position; the entries are the log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agentkit_core::policy::{AuditEntry, AuditEvent, GENESIS_HASH};
use agentkit_core::{Error, Result};
use agentkit_runtime::model::Expect;
use agentkit_runtime::{DocWrite, Store};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{AUDIT, CAS_ATTEMPTS, HEAD, entry_id};

/// At most this many appends share one write: enough to amortise the commit, few enough that
/// one transaction stays short.
const MAX_BATCH: usize = 256;

/// A store write that took this long makes the next one wait a scheduling round for more
/// events (see `write_chain`); an in-memory store's write takes a few microseconds, a hand-off
/// to SQLite's writer thread tens.
const GATHER_AFTER: std::time::Duration = std::time::Duration::from_micros(40);

/// An append waiting for its writer task: the event, and where its entry goes.
type Pending = (AuditEvent, oneshot::Sender<Result<AuditEntry>>);

/// The writer tasks of one [`StoreAudit`](super::StoreAudit) (shared by its clones), one per
/// workspace chain. A task ends when this is dropped (its channel closes).
#[derive(Default)]
pub(super) struct Appender {
    lanes: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
}

impl Appender {
    /// Append `event` to chain `ws` of `store`; returns its entry once it is stored.
    pub(super) async fn append(
        &self,
        store: &Arc<dyn Store>,
        ws: String,
        event: AuditEvent,
    ) -> Result<AuditEntry> {
        let (tx, rx) = oneshot::channel();
        let sent = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            let lane = match lanes.get(&ws) {
                // A task whose runtime shut down (its receiver dropped) is replaced.
                Some(lane) if !lane.is_closed() => lane.clone(),
                _ => {
                    let (lane, queue) = mpsc::unbounded_channel();
                    tokio::spawn(write_chain(Arc::clone(store), ws.clone(), queue));
                    lanes.insert(ws.clone(), lane.clone());
                    lane
                }
            };
            lane.send((event, tx)).is_ok()
        };
        let stopped = || Error::Unavailable {
            what: format!("the audit log of workspace `{ws}`"),
            message: "its writer stopped (the server is shutting down); try again".into(),
        };
        if !sent {
            return Err(stopped());
        }
        rx.await.map_err(|_| stopped())?
    }
}

/// What a writer knows of its chain's end: the last entry's position and hash, and what the
/// head document's compare-and-swap expects.
struct Head {
    seq: u64,
    hash: String,
    expect: Expect,
}

/// The writer task of chain `ws`: takes the appends waiting, writes them together, answers.
async fn write_chain(
    store: Arc<dyn Store>,
    ws: String,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    let mut known: Option<Head> = None;
    let mut last_write = std::time::Duration::ZERO;
    let mut events = Vec::new();
    let mut answers = Vec::new();
    while let Some((event, answer)) = queue.recv().await {
        events.push(event);
        answers.push(answer);
        if last_write >= GATHER_AFTER {
            // A write costs more than a scheduling round (a hand-off to SQLite's writer
            // thread, a round trip to PostgreSQL): let the tasks that are ready run first, so
            // those about to append join this write. Alone, this returns at once.
            tokio::task::yield_now().await;
        }
        while events.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok((event, answer)) => {
                    events.push(event);
                    answers.push(answer);
                }
                Err(_) => break,
            }
        }
        let (written, failed) = write_batch(
            &*store,
            &ws,
            std::mem::take(&mut events),
            &mut known,
            &mut last_write,
        )
        .await;
        let mut answers = answers.drain(..);
        for (entry, answer) in written.into_iter().zip(answers.by_ref()) {
            // A caller that stopped waiting has nothing to be told.
            let _ = answer.send(Ok(entry));
        }
        if let Some(e) = failed {
            let message = e.to_string();
            for answer in answers {
                let _ = answer.send(Err(Error::Unavailable {
                    what: format!("the audit log of workspace `{ws}`"),
                    message: format!("writing the entry failed: {message}"),
                }));
            }
        }
        events.clear();
    }
}

/// Chain `events` after the chain's end and store them (with the new head) in one write,
/// again after the real end if another writer took a position first (`took`: how long the
/// last store write took). Returns the entries
/// stored, oldest first (a prefix of `events`), and the error that stopped the rest.
async fn write_batch(
    store: &dyn Store,
    ws: &str,
    events: Vec<AuditEvent>,
    known: &mut Option<Head>,
    took: &mut std::time::Duration,
) -> (Vec<AuditEntry>, Option<Error>) {
    let mut stored: Vec<AuditEntry> = Vec::with_capacity(events.len());
    // The events not stored yet, oldest first.
    let mut rest = events;
    let mut attempts = 0;
    while !rest.is_empty() {
        if attempts == CAS_ATTEMPTS {
            return (
                stored,
                Some(Error::Unavailable {
                    what: format!("the audit log of workspace `{ws}`"),
                    message: "too many concurrent writers; try again".into(),
                }),
            );
        }
        attempts += 1;
        let head = match known.take() {
            Some(h) => h,
            None => match read_head(store, ws).await {
                Ok(h) => h,
                Err(e) => return (stored, Some(e)),
            },
        };
        let mut entries = Vec::with_capacity(rest.len());
        let mut writes = Vec::with_capacity(rest.len() + 1);
        let mut prev = head.hash.clone();
        for (i, event) in (1u64..).zip(std::mem::take(&mut rest)) {
            let (entry, value) = match AuditEntry::chained_value(head.seq + i, &prev, event) {
                Ok(e) => e,
                Err(e) => return (stored, Some(e)),
            };
            writes.push(DocWrite::new(
                AUDIT,
                entry_id(ws, entry.seq),
                value,
                Expect::Absent,
            ));
            prev.clone_from(&entry.hash);
            entries.push(entry);
        }
        let (end_seq, end_hash) = (head.seq + entries.len() as u64, prev);
        writes.push(DocWrite::new(
            HEAD,
            ws,
            json!({"seq": end_seq, "hash": end_hash}),
            head.expect,
        ));
        let started = std::time::Instant::now();
        let done = store.doc_put_many(writes).await;
        *took = started.elapsed();
        let done = match done {
            Ok(d) => d,
            Err(e) => return (stored, Some(e)),
        };
        let n = done.len().min(entries.len());
        if n == entries.len() {
            // Every entry is stored; the head too unless another writer moved it (then it
            // is read again next time).
            if let Some(h) = done.get(n) {
                *known = Some(Head {
                    seq: end_seq,
                    hash: end_hash,
                    expect: Expect::Revision(h.revision),
                });
            }
            stored.extend(entries);
            return (stored, None);
        }
        // Position `head.seq + n + 1` was taken by another writer: keep what was stored,
        // move the head to the chain's real end and chain the rest after it.
        rest = entries.split_off(n).into_iter().map(|e| e.event).collect();
        let last = entries
            .last()
            .map_or((head.seq, head.hash.clone()), |e| (e.seq, e.hash.clone()));
        stored.extend(entries);
        let end = match chain_end(store, ws, last).await {
            Ok(end) => end,
            Err(e) => return (stored, Some(e)),
        };
        if let Err(e) = store
            .doc_put(HEAD, ws, json!({"seq": end.0, "hash": end.1}), head.expect)
            .await
        {
            return (stored, Some(e));
        }
    }
    (stored, None)
}

/// The head document of chain `ws` (genesis when there is none).
async fn read_head(store: &dyn Store, ws: &str) -> Result<Head> {
    Ok(match store.doc_get(HEAD, ws).await? {
        Some(d) => Head {
            seq: d.value.get("seq").and_then(Value::as_u64).unwrap_or(0),
            hash: d
                .value
                .get("hash")
                .and_then(Value::as_str)
                .unwrap_or(GENESIS_HASH)
                .to_owned(),
            expect: Expect::Revision(d.revision),
        },
        None => Head {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
            expect: Expect::Absent,
        },
    })
}

/// The last stored entry of chain `ws` at or after `from` (position, hash).
async fn chain_end(store: &dyn Store, ws: &str, from: (u64, String)) -> Result<(u64, String)> {
    let mut end = from;
    loop {
        let page = store
            .doc_list(AUDIT, &format!("{ws}/"), Some(&entry_id(ws, end.0)), 500)
            .await?;
        let Some(last) = page.last() else {
            return Ok(end);
        };
        let seq = last.value.get("seq").and_then(Value::as_u64);
        let hash = last.value.get("hash").and_then(Value::as_str);
        match (seq, hash) {
            (Some(seq), Some(hash)) if seq > end.0 => end = (seq, hash.to_owned()),
            _ => {
                return Err(Error::invalid_state(
                    format!("audit entry `{}`", last.id),
                    "it is not an audit entry after the chain's head; run `verify` on this \
                     workspace's audit log",
                ));
            }
        }
    }
}
