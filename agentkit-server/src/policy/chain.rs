//! Group appends to the hash-chained audit log.
//!
//! Each workspace's chain has one writer task per [`StoreAudit`](super::StoreAudit) (started on
//! its first append). Appends are sent to it over a channel; it takes every append waiting (up
//! to [`MAX_BATCH`]), chains them in memory after the head it knows, and writes the entries and
//! the new head with one [`DocStore::doc_put_many`](agentkit_runtime::DocStore::doc_put_many):
//! one transaction, so under load many appends share one commit. Callers are answered only
//! after that write returned, so an entry handed back is stored.
//!
//! When the store's write takes longer than a scheduling round (SQLite's writer thread,
//! PostgreSQL), the next batch does not wait for the answer: it is chained after the end the
//! batch in flight will give and queued behind it, guarded so that it stores nothing unless
//! that batch was stored whole (see [`WRITER`]). The store then goes from one commit to the
//! next without waiting for this task, which keeps both cores busy under load.
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
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use agentkit_core::policy::{AuditEntry, AuditEvent, GENESIS_HASH};
use agentkit_core::{Error, Result};
use agentkit_runtime::model::{Doc, Expect};
use agentkit_runtime::{DocWrite, Store};
use futures::FutureExt;
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
type Pending = (AuditEvent, Answer);

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
#[derive(Clone)]
struct Head {
    seq: u64,
    hash: String,
    expect: Expect,
}

/// The collection of the writer tasks' own documents (id `{ws}/{writer}`, one per task): a
/// batch that may have a successor in flight behind it ends by bumping its writer's document,
/// and that successor starts by bumping it again expecting the revision the first bump gives.
/// So the successor stores nothing unless the batch before it was stored whole: the chain
/// never has a gap, whatever other writers do meanwhile (the head's revision alone would not
/// prove it: another writer's head update can reach the same revision).
const WRITER: &str = "audit_writer";

/// A caller waiting for its entry.
type Answer = oneshot::Sender<Result<AuditEntry>>;

/// A batch handed to the store and not answered yet.
struct Flight {
    /// The store's answer. It was polled once when the batch was launched, so the store
    /// has the write (SQLite: queued to its writer thread) before a successor's.
    write: Pin<Box<dyn Future<Output = Result<Vec<Doc>>> + Send>>,
    /// Whether the first write is the guard on the writer's document.
    guarded: bool,
    /// Whether the last write bumps the writer's document (a successor may then be
    /// launched before this batch is answered).
    proof: bool,
    /// The entries, in the order written.
    entries: Vec<AuditEntry>,
    /// Their callers.
    answers: Vec<Answer>,
    /// The chain's end once the batch is stored whole (`expect`: the head's revision then,
    /// as stores number revisions one by one; a wrong guess only makes a write fail and be
    /// made again).
    end: Head,
    /// The writer document's revision once the batch is stored whole.
    proof_after: u64,
    started: std::time::Instant,
}

/// The writer task of one chain and what it knows.
struct ChainWriter {
    store: Arc<dyn Store>,
    ws: String,
    /// This task's document in [`WRITER`].
    me: String,
    /// Its revision, as last stored (`None`: not written yet).
    proof_rev: Option<u64>,
    /// The chain's end, as last stored (`None`: read the head first).
    known: Option<Head>,
    /// How long the last store write took.
    last_write: std::time::Duration,
    /// Whether the last batch settled was stored whole and its writer-document revision is
    /// the one predicted for it (a successor's guard failing after it means the store did
    /// not keep the order).
    last_whole: bool,
    /// Whether the store makes a batch's writes after those of the batch handed to it
    /// before (SQLite's writer thread does; PostgreSQL may run them at once on two
    /// connections). Learnt: cleared when a guard fails although the batch before it was
    /// stored whole; then no batch is launched before the one in flight is answered.
    ordered: bool,
}

/// The writer task of chain `ws`: takes the appends waiting and writes them together. With a
/// store whose write takes longer than a scheduling round (SQLite, PostgreSQL), up to two
/// batches are in flight: while the store commits one, the next is already queued behind it
/// (chained after its predicted end and guarded, see [`WRITER`]), so the store does not wait
/// for this task between commits.
async fn write_chain(
    store: Arc<dyn Store>,
    ws: String,
    mut queue: mpsc::UnboundedReceiver<Pending>,
) {
    let me = format!("{ws}/{}", uuid::Uuid::new_v4().simple());
    let mut w = ChainWriter {
        store,
        ws,
        me,
        proof_rev: None,
        known: None,
        last_write: std::time::Duration::ZERO,
        last_whole: false,
        ordered: true,
    };
    w.sweep().await;
    let mut flying: Option<Flight> = None;
    loop {
        let next = match &mut flying {
            None => queue.recv().await.map(Ok),
            Some(f) => tokio::select! {
                biased;
                done = &mut f.write => Some(Err(done)),
                next = queue.recv() => next.map(Ok),
            },
        };
        let first = match next {
            None => break,
            Some(Ok(first)) => first,
            Some(Err(done)) => {
                if let Some(f) = flying.take() {
                    w.settle(f, done).await;
                }
                continue;
            }
        };
        let mut batch = vec![first];
        if flying.is_none() && w.last_write >= GATHER_AFTER {
            // A write costs more than a scheduling round (a hand-off to SQLite's writer
            // thread, a round trip to PostgreSQL): let the tasks that are ready run first, so
            // those about to append join this write. Alone, this returns at once.
            tokio::task::yield_now().await;
        }
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        flying = match flying.take() {
            Some(mut before) if before.proof => {
                let next = w.launch(batch, before.end.clone(), Some(before.proof_after));
                let done = (&mut before.write).await;
                w.settle(before, done).await;
                next
            }
            Some(mut before) => {
                let done = (&mut before.write).await;
                w.settle(before, done).await;
                w.launch_after_known(batch).await
            }
            None => w.launch_after_known(batch).await,
        };
    }
    if let Some(mut f) = flying.take() {
        let done = (&mut f.write).await;
        w.settle(f, done).await;
    }
    if w.proof_rev.is_some() {
        // Best effort: a writer stopped by a crash leaves its small document behind.
        let _ = w.store.doc_delete(WRITER, &w.me, Expect::Any).await;
    }
}

/// A writer document not written for this long belongs to a writer that stopped without
/// deleting it (its process was killed); a new writer of the chain deletes it.
const STALE_WRITER: std::time::Duration = std::time::Duration::from_secs(3600);

impl ChainWriter {
    /// Delete the documents of this chain's writers that stopped without deleting theirs
    /// (best effort: a failure leaves them for the next writer). A live writer idle that
    /// long writes its document again when it needs it.
    async fn sweep(&self) {
        let prefix = format!("{}/", self.ws);
        let Ok(docs) = self.store.doc_list(WRITER, &prefix, None, 100).await else {
            return;
        };
        let old = i64::try_from(STALE_WRITER.as_millis()).unwrap_or(i64::MAX);
        let before = agentkit_runtime::model::now_ms().saturating_sub(old);
        for d in docs.into_iter().filter(|d| d.updated_at < before) {
            let _ = self
                .store
                .doc_delete(WRITER, &d.id, Expect::Revision(d.revision))
                .await;
        }
    }

    /// Launch `batch` after the chain's end as last stored (read from the head if unknown).
    async fn launch_after_known(&mut self, batch: Vec<Pending>) -> Option<Flight> {
        let head = match self.known.take() {
            Some(h) => h,
            None => match read_head(&*self.store, &self.ws).await {
                Ok(h) => h,
                Err(e) => {
                    fail(&self.ws, batch.into_iter().map(|(_, a)| a), &e);
                    return None;
                }
            },
        };
        self.launch(batch, head, None)
    }

    /// Chain `batch` after `head`, hand it to the store and poll the write once (so it is
    /// queued). `guard`: `head` is the predicted end of a batch still in flight, whose
    /// writer-document bump gives this revision; the writes then start with a bump expecting
    /// it (see [`WRITER`]). `None` when a batch fails to chain (its callers are answered).
    fn launch(&self, batch: Vec<Pending>, head: Head, guard: Option<u64>) -> Option<Flight> {
        // A successor is launched early only when the store is slow enough for it to help
        // and keeps the order of batches.
        let proof = self.ordered && self.last_write >= GATHER_AFTER;
        let mut writes = Vec::with_capacity(batch.len() + 3);
        if let Some(g) = guard {
            writes.push(DocWrite::new(
                WRITER,
                &self.me,
                json!({}),
                Expect::Revision(g),
            ));
        }
        let mut entries = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        let mut prev = head.hash;
        let mut batch = batch.into_iter();
        for seq in head.seq + 1.. {
            let Some((event, answer)) = batch.next() else {
                break;
            };
            match AuditEntry::chained_value(seq, &prev, event) {
                Ok((entry, value)) => {
                    writes.push(DocWrite::new(
                        AUDIT,
                        entry_id(&self.ws, entry.seq),
                        value,
                        Expect::Absent,
                    ));
                    prev.clone_from(&entry.hash);
                    entries.push(entry);
                    answers.push(answer);
                }
                Err(e) => {
                    // Nothing of the batch is written; its callers (this one included) are told.
                    answers.push(answer);
                    answers.extend(batch.map(|(_, a)| a));
                    fail(&self.ws, answers, &e);
                    return None;
                }
            }
        }
        let end_seq = head.seq + entries.len() as u64;
        writes.push(DocWrite::new(
            HEAD,
            &self.ws,
            json!({"seq": end_seq, "hash": prev}),
            head.expect,
        ));
        let proof_after = match guard {
            Some(g) => g.saturating_add(2),
            None => self.proof_rev.map_or(1, |r| r.saturating_add(1)),
        };
        if proof {
            let expect = guard.map_or(Expect::Any, |g| Expect::Revision(g.saturating_add(1)));
            writes.push(DocWrite::new(WRITER, &self.me, json!({}), expect));
        }
        let store = Arc::clone(&self.store);
        let mut write: Pin<Box<dyn Future<Output = Result<Vec<Doc>>> + Send>> =
            Box::pin(async move { store.doc_put_many(writes).await });
        if let Some(done) = (&mut write).now_or_never() {
            write = Box::pin(std::future::ready(done));
        }
        Some(Flight {
            write,
            guarded: guard.is_some(),
            proof,
            entries,
            answers,
            end: Head {
                seq: end_seq,
                hash: prev,
                expect: next_revision(head.expect),
            },
            proof_after,
            started: std::time::Instant::now(),
        })
    }

    /// Answer the callers of a batch the store answered (`done`), learn the chain's end from
    /// it, and write again what it did not store.
    async fn settle(&mut self, flight: Flight, done: Result<Vec<Doc>>) {
        self.last_write = flight.started.elapsed();
        let Flight {
            guarded,
            proof,
            entries,
            answers,
            end,
            proof_after,
            ..
        } = flight;
        let writes = usize::from(guarded) + entries.len() + 1 + usize::from(proof);
        let whole = done.as_ref().is_ok_and(|d| {
            d.len() == writes && (!proof || d.last().is_some_and(|p| p.revision == proof_after))
        });
        let before_whole = std::mem::replace(&mut self.last_whole, whole);
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                // Nothing of it was stored (the stores of this crate write a batch whole or
                // not at all on an error).
                self.known = None;
                fail(&self.ws, answers, &e);
                return;
            }
        };
        let skip = usize::from(guarded);
        if guarded {
            let Some(guard) = done.first() else {
                // The batch before was not stored whole, or the store made this batch's
                // writes first: nothing of this one was stored. Chain it again after the
                // chain's real end.
                if before_whole {
                    self.ordered = false;
                }
                let events = entries.into_iter().map(|e| e.event).collect();
                let (written, failed) = write_batch(
                    &*self.store,
                    &self.ws,
                    events,
                    &mut self.known,
                    &mut self.last_write,
                )
                .await;
                answer(&self.ws, written, answers, failed);
                return;
            };
            self.proof_rev = Some(guard.revision);
        }
        let stored = done.len().saturating_sub(skip).min(entries.len());
        if stored == entries.len() {
            // Every entry is stored; the head too unless another writer moved it (then it is
            // read again next time).
            self.known = done.get(skip + stored).map(|h| Head {
                seq: end.seq,
                hash: end.hash,
                expect: Expect::Revision(h.revision),
            });
            if proof && let Some(p) = done.get(skip + stored + 1) {
                self.proof_rev = Some(p.revision);
            }
            answer(&self.ws, entries, answers, None);
            return;
        }
        // A position was taken by another writer: answer what was stored, and chain the rest
        // after the chain's real end.
        let mut entries = entries;
        let mut answers = answers;
        let rest: Vec<AuditEvent> = entries
            .split_off(stored)
            .into_iter()
            .map(|e| e.event)
            .collect();
        let waiting = answers.split_off(stored);
        answer(&self.ws, entries, answers, None);
        self.known = None;
        let (written, failed) = write_batch(
            &*self.store,
            &self.ws,
            rest,
            &mut self.known,
            &mut self.last_write,
        )
        .await;
        answer(&self.ws, written, waiting, failed);
    }
}

/// The head's revision after a write of it expecting `expect` (stores number revisions one by
/// one).
fn next_revision(expect: Expect) -> Expect {
    match expect {
        Expect::Revision(r) => Expect::Revision(r.saturating_add(1)),
        // A create (or an upsert: a wrong guess only makes the next guard fail).
        _ => Expect::Revision(1),
    }
}

/// Tell the callers of `written` (in order) their entries, and the rest `failed`.
fn answer(ws: &str, written: Vec<AuditEntry>, answers: Vec<Answer>, failed: Option<Error>) {
    let mut answers = answers.into_iter();
    for (entry, answer) in written.into_iter().zip(answers.by_ref()) {
        // A caller that stopped waiting has nothing to be told.
        let _ = answer.send(Ok(entry));
    }
    if let Some(e) = failed {
        fail(ws, answers, &e);
    }
}

/// Tell `answers` that writing their entries failed with `e`.
fn fail(ws: &str, answers: impl IntoIterator<Item = Answer>, e: &Error) {
    for answer in answers {
        let _ = answer.send(Err(Error::Unavailable {
            what: format!("the audit log of workspace `{ws}`"),
            message: format!("writing the entry failed: {e}"),
        }));
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
