//! An in-memory [`Store`]: for tests and single-process demos; nothing survives the process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use agentkit_core::{Error, Result, RunStatus};
use async_trait::async_trait;
use serde_json::Value;

use super::{DocStore, JournalStore, KvStore, LeaseStore, RunStore, SignalStore};
use crate::model::{
    Created, Doc, DocWrite, Expect, JournalEntry, NewRun, RunQuery, RunRecord, RunUpdate, now_ms,
};
use crate::sync::lock;

#[derive(Debug, Default)]
struct State {
    runs: HashMap<String, RunRecord>,
    order: Vec<String>,
    keys: HashMap<String, String>,
    journals: HashMap<String, Vec<JournalEntry>>,
    signals: HashMap<(String, String), VecDeque<Value>>,
    kv: HashMap<(String, String), (Value, Option<i64>)>,
    docs: BTreeMap<(String, String), Doc>,
}

/// A [`Store`](super::Store) in process memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        f(&mut lock(&self.state))
    }
}

fn duplicate(entry: &JournalEntry) -> Error {
    Error::Journal {
        key: entry.key.clone(),
        message: format!(
            "run {} already has a journal entry with this key or seq {}; journals are append-only",
            entry.run_id, entry.seq
        ),
    }
}

/// Remove runs `ids` with their journals, signals and idempotency keys (what retention and
/// the deletion of one finished run both do).
fn remove_runs(s: &mut State, ids: &[String]) {
    for id in ids {
        if let Some(r) = s.runs.remove(id)
            && let Some(k) = r.idempotency_key
        {
            s.keys.remove(&k);
        }
        s.journals.remove(id);
        s.signals.retain(|(run, _), _| run != id);
    }
    s.order.retain(|id| s.runs.contains_key(id));
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn create_run(&self, run: NewRun) -> Result<Created> {
        self.with(|s| {
            if let Some(key) = &run.idempotency_key
                && let Some(existing) = s.keys.get(key).and_then(|id| s.runs.get(id))
            {
                return Ok(Created::Existing(existing.clone()));
            }
            if s.runs.contains_key(&run.id) {
                return Err(Error::InvalidRequest(format!(
                    "a run with id {} already exists",
                    run.id
                )));
            }
            let rec = RunRecord::new(run);
            if let Some(key) = &rec.idempotency_key {
                s.keys.insert(key.clone(), rec.id.clone());
            }
            s.order.push(rec.id.clone());
            s.runs.insert(rec.id.clone(), rec.clone());
            Ok(Created::New(rec))
        })
    }

    async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        self.with(|s| Ok(s.runs.get(run_id).cloned()))
    }

    async fn latest_run_with_key_prefix(&self, prefix: &str) -> Result<Option<RunRecord>> {
        self.with(|s| {
            Ok(s.order
                .iter()
                .rev()
                .filter_map(|id| s.runs.get(id))
                .find(|r| {
                    r.idempotency_key
                        .as_deref()
                        .is_some_and(|k| k.starts_with(prefix))
                })
                .cloned())
        })
    }

    async fn list_runs(&self, statuses: &[RunStatus], limit: usize) -> Result<Vec<RunRecord>> {
        self.with(|s| {
            Ok(s.order
                .iter()
                .filter_map(|id| s.runs.get(id))
                .filter(|r| statuses.contains(&r.status))
                .take(limit)
                .cloned()
                .collect())
        })
    }

    async fn count_runs(&self, statuses: &[RunStatus]) -> Result<Vec<(RunStatus, u64)>> {
        self.with(|s| {
            Ok(statuses
                .iter()
                .map(|st| {
                    let n = s.runs.values().filter(|r| r.status == *st).count();
                    (*st, u64::try_from(n).unwrap_or(u64::MAX))
                })
                .filter(|(_, n)| *n > 0)
                .collect())
        })
    }

    async fn search_runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        self.with(|s| {
            let mut runs: Vec<&RunRecord> = s
                .order
                .iter()
                .filter_map(|id| s.runs.get(id))
                .filter(|r| query.matches(r))
                .collect();
            runs.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
            Ok(runs
                .into_iter()
                .skip(query.offset)
                .take(query.page_size())
                .cloned()
                .collect())
        })
    }

    async fn delete_finished_runs(&self, before: i64, limit: usize) -> Result<Vec<String>> {
        self.with(|s| {
            let doomed: Vec<String> = s
                .order
                .iter()
                .filter_map(|id| s.runs.get(id))
                .filter(|r| r.status.is_terminal() && r.updated_at < before)
                .take(limit)
                .map(|r| r.id.clone())
                .collect();
            remove_runs(s, &doomed);
            Ok(doomed)
        })
    }

    async fn delete_finished_run(&self, run_id: &str) -> Result<bool> {
        self.with(|s| {
            if !s.runs.get(run_id).is_some_and(|r| r.status.is_terminal()) {
                return Ok(false);
            }
            remove_runs(s, &[run_id.to_owned()]);
            Ok(true)
        })
    }

    async fn transition(
        &self,
        run_id: &str,
        from: &[RunStatus],
        update: RunUpdate,
    ) -> Result<Option<RunRecord>> {
        self.with(|s| {
            Ok(s.runs.get_mut(run_id).and_then(|r| {
                let owner_ok = update
                    .owner_fence
                    .as_ref()
                    .is_none_or(|o| r.owner.as_ref() == Some(o));
                (owner_ok && from.contains(&r.status)).then(|| {
                    r.apply(&update);
                    r.clone()
                })
            }))
        })
    }
}

#[async_trait]
impl JournalStore for MemoryStore {
    async fn append(&self, entries: &[JournalEntry]) -> Result<()> {
        self.with(|s| append_to(s, entries))
    }

    async fn append_fenced(&self, entries: &[JournalEntry], owner: &str) -> Result<bool> {
        let Some(first) = entries.first() else {
            return Ok(true);
        };
        if let Some(other) = entries.iter().find(|e| e.run_id != first.run_id) {
            return Err(Error::InvalidRequest(format!(
                "a fenced journal append takes the entries of one run, got runs {} and {}: \
                 append each run's entries on their own",
                first.run_id, other.run_id
            )));
        }
        self.with(|s| {
            if !executed_by(s, &first.run_id, owner) {
                return Ok(false);
            }
            append_to(s, entries).map(|()| true)
        })
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>> {
        self.with(|s| Ok(s.journals.get(run_id).cloned().unwrap_or_default()))
    }
}

/// Whether run `run_id` is executed by `owner`: live (running, or waiting while the tool
/// calls beside a waiting call finish) under its lease.
fn executed_by(s: &State, run_id: &str, owner: &str) -> bool {
    s.runs.get(run_id).is_some_and(|r| {
        r.owner.as_deref() == Some(owner)
            && matches!(
                r.status,
                RunStatus::Running | RunStatus::WaitingInput | RunStatus::WaitingApproval
            )
    })
}

/// Append `entries` to their runs' journals, all or nothing.
fn append_to(s: &mut State, entries: &[JournalEntry]) -> Result<()> {
    for (i, e) in entries.iter().enumerate() {
        let clash = |x: &JournalEntry| x.key == e.key || x.seq == e.seq;
        let stored = s
            .journals
            .get(&e.run_id)
            .is_some_and(|j| j.iter().any(clash));
        let batch = entries[..i]
            .iter()
            .any(|x| x.run_id == e.run_id && clash(x));
        if stored || batch {
            return Err(duplicate(e));
        }
    }
    for e in entries {
        let j = s.journals.entry(e.run_id.clone()).or_default();
        j.push(e.clone());
        j.sort_by_key(|x| x.seq);
    }
    Ok(())
}

#[async_trait]
impl SignalStore for MemoryStore {
    async fn send_signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()> {
        self.with(|s| {
            if !s.runs.contains_key(run_id) {
                return Err(Error::Workflow(format!(
                    "cannot signal run {run_id}: no such run"
                )));
            }
            s.signals
                .entry((run_id.to_owned(), name.to_owned()))
                .or_default()
                .push_back(payload);
            Ok(())
        })
    }

    async fn has_signal(&self, run_id: &str, name: &str) -> Result<bool> {
        self.with(|s| {
            Ok(s.signals
                .get(&(run_id.to_owned(), name.to_owned()))
                .is_some_and(|q| !q.is_empty()))
        })
    }

    async fn take_signal(
        &self,
        run_id: &str,
        name: &str,
        entry: JournalEntry,
    ) -> Result<Option<Value>> {
        self.with(|s| deliver(s, run_id, name, entry))
    }

    async fn take_signal_fenced(
        &self,
        run_id: &str,
        name: &str,
        entry: JournalEntry,
        owner: &str,
    ) -> Result<Option<Value>> {
        self.with(|s| {
            live_under(s, run_id, owner)?;
            deliver(s, run_id, name, entry)
        })
    }

    async fn fence_replayed_signal(&self, run_id: &str, owner: &str) -> Result<()> {
        self.with(|s| live_under(s, run_id, owner))
    }
}

/// `Ok` if run `run_id` is [`executed_by`] `owner`, else [`Error::Cancelled`]; read under the
/// store's lock, which every status change takes too.
fn live_under(s: &State, run_id: &str, owner: &str) -> Result<()> {
    if executed_by(s, run_id, owner) {
        Ok(())
    } else {
        Err(Error::Cancelled {
            run_id: run_id.to_owned(),
        })
    }
}

/// Deliver the oldest queued signal `name` of the run into `entry` (see
/// [`SignalStore::take_signal`]).
fn deliver(
    s: &mut State,
    run_id: &str,
    name: &str,
    mut entry: JournalEntry,
) -> Result<Option<Value>> {
    let k = (run_id.to_owned(), name.to_owned());
    let Some(payload) = s.signals.get(&k).and_then(|q| q.front().cloned()) else {
        return Ok(None);
    };
    let j = s.journals.entry(run_id.to_owned()).or_default();
    if j.iter().any(|x| x.key == entry.key || x.seq == entry.seq) {
        return Err(duplicate(&entry));
    }
    entry.value = payload.clone();
    j.push(entry);
    if let Some(q) = s.signals.get_mut(&k) {
        q.pop_front();
    }
    Ok(Some(payload))
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn claim(
        &self,
        run_id: &str,
        owner: &str,
        lease_until: i64,
    ) -> Result<Option<RunRecord>> {
        let now = now_ms();
        self.with(|s| {
            Ok(s.runs.get_mut(run_id).and_then(|r| {
                r.claimable(now).then(|| {
                    r.claim(owner, lease_until);
                    r.clone()
                })
            }))
        })
    }

    async fn claim_next(
        &self,
        owner: &str,
        targets: &[String],
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<RunRecord>> {
        let now = now_ms();
        self.with(|s| {
            let mut out = Vec::new();
            for id in &s.order {
                if out.len() >= limit {
                    break;
                }
                if let Some(r) = s.runs.get_mut(id)
                    && targets.contains(&r.target)
                    && r.claimable(now)
                {
                    r.claim(owner, lease_until);
                    out.push(r.clone());
                }
            }
            Ok(out)
        })
    }

    async fn renew_leases(&self, owner: &str, run_ids: &[String], lease_until: i64) -> Result<u64> {
        self.with(|s| {
            let mut n = 0;
            for id in run_ids {
                if let Some(r) = s.runs.get_mut(id)
                    && r.status == RunStatus::Running
                    && r.owner.as_deref() == Some(owner)
                {
                    r.lease_until = Some(lease_until);
                    n += 1;
                }
            }
            Ok(n)
        })
    }
}

#[async_trait]
impl KvStore for MemoryStore {
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        ttl: Option<std::time::Duration>,
    ) -> Result<()> {
        self.with(|s| {
            s.kv.insert(
                (namespace.to_owned(), key.to_owned()),
                (value, super::expires_at(ttl)),
            );
            Ok(())
        })
    }

    async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        let now = now_ms();
        self.with(|s| {
            Ok(s.kv
                .get(&(namespace.to_owned(), key.to_owned()))
                .filter(|(_, exp)| exp.is_none_or(|e| e > now))
                .map(|(v, _)| v.clone()))
        })
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let now = now_ms();
        self.with(|s| {
            Ok(s.kv
                .remove(&(namespace.to_owned(), key.to_owned()))
                .is_some_and(|(_, exp)| exp.is_none_or(|e| e > now)))
        })
    }
}

fn expected(doc: Option<&Doc>, expect: Expect) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => doc.is_none(),
        Expect::Revision(r) => doc.is_some_and(|d| d.revision == r),
    }
}

/// One [`DocStore::doc_put`] on the locked state.
fn put_doc(
    s: &mut State,
    collection: &str,
    id: &str,
    value: Value,
    expect: Expect,
    now: i64,
) -> Option<Doc> {
    let k = (collection.to_owned(), id.to_owned());
    let old = s.docs.get(&k);
    if !expected(old, expect) {
        return None;
    }
    let doc = Doc {
        id: id.to_owned(),
        value,
        revision: old.map_or(1, |d| d.revision.saturating_add(1)),
        created_at: old.map_or(now, |d| d.created_at),
        updated_at: now,
    };
    s.docs.insert(k, doc.clone());
    Some(doc)
}

#[async_trait]
impl DocStore for MemoryStore {
    async fn doc_put(
        &self,
        collection: &str,
        id: &str,
        value: Value,
        expect: Expect,
    ) -> Result<Option<Doc>> {
        let now = now_ms();
        self.with(|s| Ok(put_doc(s, collection, id, value, expect, now)))
    }

    async fn doc_put_many(&self, writes: Vec<DocWrite>) -> Result<Vec<Doc>> {
        let now = now_ms();
        self.with(|s| {
            let mut done = Vec::with_capacity(writes.len());
            for w in writes {
                match put_doc(s, &w.collection, &w.id, w.value, w.expect, now) {
                    Some(doc) => done.push(doc),
                    None => break,
                }
            }
            Ok(done)
        })
    }

    async fn doc_get(&self, collection: &str, id: &str) -> Result<Option<Doc>> {
        self.with(|s| Ok(s.docs.get(&(collection.to_owned(), id.to_owned())).cloned()))
    }

    async fn doc_delete(&self, collection: &str, id: &str, expect: Expect) -> Result<bool> {
        self.with(|s| {
            let k = (collection.to_owned(), id.to_owned());
            let old = s.docs.get(&k);
            if old.is_none() || expect == Expect::Absent || !expected(old, expect) {
                return Ok(false);
            }
            Ok(s.docs.remove(&k).is_some())
        })
    }

    async fn doc_list(
        &self,
        collection: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Doc>> {
        self.with(|s| {
            let start = (collection.to_owned(), prefix.to_owned());
            Ok(s.docs
                .range(start..)
                .take_while(|((c, id), _)| c == collection && id.starts_with(prefix))
                .filter(|((_, id), _)| after.is_none_or(|a| id.as_str() > a))
                .take(limit)
                .map(|(_, d)| d.clone())
                .collect())
        })
    }
}
