//! The registry: every agent or workflow spec is a numbered, immutable version; labels
//! (`dev`, `stage`, `prod`, any name) point at versions and move with compare-and-swap.
//! Stored as documents of the runtime's [`Store`] (SQLite or PostgreSQL), so every server
//! process sharing the database sees the same registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use agentkit_core::{Error, Result};
use agentkit_runtime::{Doc, Expect, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod diff;
pub use diff::{Change, diff_specs};

/// The store collection the registry writes.
pub const COLLECTION: &str = "agentkit.registry";

/// The label every deploy moves to the version it deployed.
pub const LATEST: &str = "latest";

/// The default schedules label: the label whose version's `schedules:` are the live schedules
/// of an agent or workflow once it has this label; before that, those of [`LATEST`] (so a
/// deploy alone starts the schedules of an agent nobody promotes). Another label is set with
/// `server.schedules_label` or
/// [`ServerBuilder::schedules_label`](crate::ServerBuilder::schedules_label). See
/// [`Entry::schedules_label`].
pub const SCHEDULES_LABEL: &str = "prod";

/// What a registry entry runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A declarative agent (`agents:` in `agentkit.yaml`).
    Agent,
    /// A declarative workflow composing agents with a pattern (`workflows:`).
    Workflow,
    /// An agent registered from code (`ServerBuilder::agent_llm`); its spec is a description.
    Code,
}

/// One immutable version of an agent or workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Version {
    /// The agent or workflow name.
    pub name: String,
    /// Its number, from 1.
    pub version: u32,
    /// What it is.
    pub kind: EntryKind,
    /// The spec, as deployed.
    pub spec: Value,
    /// SHA-256 of the spec's canonical JSON: deploying the same spec again is a no-op.
    pub hash: String,
    /// The versions of the agents a workflow composes, fixed when it was deployed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, u32>,
    /// When it was deployed (ms since epoch).
    pub created_at: i64,
}

/// An agent or workflow: its latest version and its labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Entry {
    /// The name.
    pub name: String,
    /// What it is (of its latest version).
    pub kind: EntryKind,
    /// What it does (of its latest version).
    pub description: String,
    /// The highest version number.
    pub latest: u32,
    /// Label → version.
    pub labels: BTreeMap<String, u32>,
    /// Label → the versions it pointed at before (newest last), for rollback.
    #[serde(default)]
    pub history: BTreeMap<String, Vec<u32>>,
    /// When the first version was deployed (ms since epoch).
    pub created_at: i64,
    /// When it last changed (ms since epoch).
    pub updated_at: i64,
    /// The store revision of this entry (compare-and-swap).
    #[serde(skip)]
    pub revision: u64,
}

impl Entry {
    /// The label whose version's `schedules:` are live, for a server whose schedules label
    /// is `live` ([`SCHEDULES_LABEL`], `prod`, unless configured): `live` when the entry has
    /// it, else [`LATEST`].
    #[must_use]
    pub fn schedules_label<'a>(&'a self, live: &'a str) -> &'a str {
        if self.labels.contains_key(live) {
            live
        } else {
            LATEST
        }
    }

    /// The version whose `schedules:` are live (see [`schedules_label`](Self::schedules_label)).
    #[must_use]
    pub fn schedules_version(&self, live: &str) -> Option<u32> {
        self.labels.get(self.schedules_label(live)).copied()
    }
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Deployed {
    /// The version the spec is stored as.
    pub version: u32,
    /// False when the same spec was already the latest version (nothing new stored).
    pub created: bool,
}

/// The registry over a [`Store`].
///
/// When the store is not shared between processes ([`LeaseStore::is_shared`](agentkit_runtime::LeaseStore::is_shared) false: memory,
/// SQLite, whose one process owns the file), the registry keeps the entries it read or wrote
/// (shared by its clones), so resolving a run's version reads nothing from the store: every
/// entry write goes through a registry (`deploy`, the label moves), which updates the kept
/// entry once its write is stored. Its writes always read the stored entry (compare-and-swap
/// on what is stored, never on what was kept). Writing the registry's documents
/// ([`COLLECTION`]) past a registry, or through a second `Registry::new` over the same
/// unshared store, is not seen by this one's reads. With a shared store (PostgreSQL), where
/// other processes move labels, every read goes to the store.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    /// The entries kept, when the store is not shared.
    entries: Option<Arc<Kept>>,
}

/// Entries a registry keeps (stored name → entry), shared by its clones.
type Kept = std::sync::Mutex<std::collections::HashMap<String, Arc<Entry>>>;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

/// A name usable in URLs, MCP tool names and store ids.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    // The rule `agentkit.yaml` names follow, so a name valid there is valid here.
    if agentkit_core::config::is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{what} `{}` is not a valid name: use 1 to 64 letters, digits, `-` or `_`",
            name.escape_debug()
        )))
    }
}

fn entry_id(name: &str) -> String {
    format!("entry/{name}")
}

fn version_id(name: &str, version: u32) -> String {
    format!("version/{name}/{version:010}")
}

fn decode<T: serde::de::DeserializeOwned>(doc: &Doc, what: &str) -> Result<T> {
    serde_json::from_value(doc.value.clone())
        .map_err(|e| Error::json(format!("reading registry {what} `{}`", doc.id), e))
}

fn encode(v: &impl Serialize, what: &str) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::json(format!("encoding registry {what}"), e))
}

/// How many times a compare-and-swap is retried against concurrent writers.
const CAS_ATTEMPTS: usize = 32;

impl Registry {
    /// The registry in `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        let entries = (!store.is_shared()).then(Arc::default);
        Self { store, entries }
    }

    /// Keep `entry` (when entries are kept), unless a newer revision of it is kept already: a
    /// read that started before a write may end after it.
    fn keep(&self, entry: &Arc<Entry>) {
        if let Some(entries) = &self.entries {
            let mut entries = agentkit_core::sync::lock(entries);
            match entries.get(&entry.name) {
                Some(kept) if kept.revision >= entry.revision => {}
                _ => {
                    entries.insert(entry.name.clone(), Arc::clone(entry));
                }
            }
        }
    }

    /// Forget the kept entry of `name` (a compare-and-swap on it failed: what was kept may be
    /// older than what is stored).
    fn forget(&self, name: &str) {
        if let Some(entries) = &self.entries {
            agentkit_core::sync::lock(entries).remove(name);
        }
    }

    /// The entry named `name`, kept or read (and then kept).
    async fn cached(&self, name: &str) -> Result<Option<Arc<Entry>>> {
        if let Some(entries) = &self.entries
            && let Some(e) = agentkit_core::sync::lock(entries).get(name)
        {
            return Ok(Some(Arc::clone(e)));
        }
        let Some(e) = self.stored(name).await? else {
            return Ok(None);
        };
        let e = Arc::new(e);
        self.keep(&e);
        Ok(Some(e))
    }

    /// The entry named `name` as stored now (what writes compare-and-swap on).
    async fn stored(&self, name: &str) -> Result<Option<Entry>> {
        match self.store.doc_get(COLLECTION, &entry_id(name)).await? {
            Some(d) => self.entry_from(&d).map(Some),
            None => Ok(None),
        }
    }

    /// Every entry of the `default/default` workspace, by name (at most 10,000).
    pub async fn list(&self) -> Result<Vec<Entry>> {
        let mut all = self.list_all().await?;
        all.retain(|e| crate::tenancy::Scope::default_scope().contains(&e.name));
        Ok(all)
    }

    /// Every entry of every workspace (stored names), by name (all of them: targets are
    /// registered and `/mcp` lists tools from this).
    pub async fn list_all(&self) -> Result<Vec<Entry>> {
        let docs = crate::pages::DocPages::new(&*self.store, COLLECTION, "entry/")
            .all()
            .await?;
        docs.iter().map(|d| self.entry_from(d)).collect()
    }

    fn entry_from(&self, doc: &Doc) -> Result<Entry> {
        let mut e: Entry = decode(doc, "entry")?;
        e.revision = doc.revision;
        Ok(e)
    }

    /// The entry named `name`.
    pub async fn entry(&self, name: &str) -> Result<Entry> {
        self.find(name).await?.ok_or_else(|| not_registered(name))
    }

    /// The entry named `name`, if any.
    pub async fn find(&self, name: &str) -> Result<Option<Entry>> {
        Ok(self.cached(name).await?.map(Arc::unwrap_or_clone))
    }

    /// Version `version` of `name`.
    pub async fn version(&self, name: &str, version: u32) -> Result<Version> {
        let doc = self
            .store
            .doc_get(COLLECTION, &version_id(name, version))
            .await?
            .ok_or_else(|| {
                Error::not_found(
                    "version",
                    format!("{name} v{version}"),
                    format!("list the versions with `GET /v1/agents/{name}/versions`"),
                )
            })?;
        decode(&doc, "version")
    }

    /// Every version of `name`, oldest first (at most `limit`, after version `after`).
    pub async fn versions(&self, name: &str, after: u32, limit: usize) -> Result<Vec<Version>> {
        self.entry(name).await?;
        let docs = self
            .store
            .doc_list(
                COLLECTION,
                &format!("version/{name}/"),
                Some(&version_id(name, after)),
                limit,
            )
            .await?;
        docs.iter().map(|d| decode(d, "version")).collect()
    }

    /// Resolve a reference to a version number: `None` → the `latest` label; a label name;
    /// or a number (`"3"`, `"v3"`).
    pub async fn resolve(&self, name: &str, reference: Option<&str>) -> Result<u32> {
        let entry = self
            .cached(name)
            .await?
            .ok_or_else(|| not_registered(name))?;
        let r = reference.unwrap_or(LATEST);
        if let Some(v) = entry.labels.get(r) {
            return Ok(*v);
        }
        if let Ok(v) = r.trim_start_matches('v').parse::<u32>()
            && v >= 1
            && v <= entry.latest
        {
            return Ok(v);
        }
        let labels: Vec<&str> = entry.labels.keys().map(String::as_str).collect();
        Err(Error::not_found(
            "label or version",
            format!("{name}@{r}"),
            format!(
                "`{name}` has versions 1..={} and labels {}",
                entry.latest,
                labels.join(", ")
            ),
        ))
    }

    /// Store `spec` as the next version of `name` unless it equals the latest version, and
    /// move `latest` to it. `members` pins the versions of the agents a workflow composes.
    pub async fn deploy(
        &self,
        name: &str,
        kind: EntryKind,
        description: &str,
        spec: Value,
        members: BTreeMap<String, u32>,
    ) -> Result<Deployed> {
        // A workspace's agents are stored as `<org>~<workspace>~<name>`: the name is checked.
        check_name(
            "agent or workflow",
            name.rsplit(crate::tenancy::SEP).next().unwrap_or(name),
        )?;
        let hash = crate::spec::spec_hash(&serde_json::json!({"spec": &spec, "members": &members}));
        // The highest version number found taken. A version document can exist beyond the
        // entry's `latest`: written by a deploy that lost the entry race, or by a process that
        // died between the two writes. Numbering must go past it, or every later deploy of
        // the name would retry the same taken number until it gave up.
        let mut taken = 0u32;
        // The version document this deploy wrote and has not yet made the entry's latest: a
        // lost entry race tries again with it rather than writing another.
        let mut written: Option<u32> = None;
        for _ in 0..CAS_ATTEMPTS {
            let current = self.stored(name).await?;
            if let Some(e) = &current {
                let latest = self.version(name, e.latest).await?;
                if latest.hash == hash {
                    // A concurrent deploy of the same spec won: this one's document goes.
                    if let Some(n) = written.filter(|n| *n != e.latest) {
                        self.drop_version(name, n).await;
                    }
                    return Ok(Deployed {
                        version: e.latest,
                        created: false,
                    });
                }
            }
            let latest = current.as_ref().map_or(0, |e| e.latest);
            let next = match written {
                // Still above the winner's latest: it can become the next version as it is.
                Some(n) if n > latest => n,
                other => {
                    if let Some(n) = other {
                        // Below the latest now: it would show as a version nobody deployed.
                        self.drop_version(name, n).await;
                        written = None;
                    }
                    let next = latest.max(taken).saturating_add(1);
                    let now = agentkit_runtime::model::now_ms();
                    let version = Version {
                        name: name.to_owned(),
                        version: next,
                        kind,
                        spec: spec.clone(),
                        hash: hash.clone(),
                        members: members.clone(),
                        created_at: now,
                    };
                    // The version first (create-only): a concurrent deploy that took this
                    // number makes this one retry with the next.
                    if self
                        .store
                        .doc_put(
                            COLLECTION,
                            &version_id(name, next),
                            encode(&version, "version")?,
                            Expect::Absent,
                        )
                        .await?
                        .is_none()
                    {
                        taken = next;
                        continue;
                    }
                    written = Some(next);
                    taken = next;
                    next
                }
            };
            let now = agentkit_runtime::model::now_ms();
            let mut entry = current.clone().unwrap_or_else(|| Entry {
                name: name.to_owned(),
                kind,
                description: String::new(),
                latest: 0,
                labels: BTreeMap::new(),
                history: BTreeMap::new(),
                created_at: now,
                updated_at: now,
                revision: 0,
            });
            entry.kind = kind;
            entry.description = description.to_owned();
            entry.latest = entry.latest.max(next);
            move_label(&mut entry, LATEST, next);
            entry.updated_at = now;
            let expect = current.map_or(Expect::Absent, |e| Expect::Revision(e.revision));
            if let Some(doc) = self
                .store
                .doc_put(
                    COLLECTION,
                    &entry_id(name),
                    encode(&entry, "entry")?,
                    expect,
                )
                .await?
            {
                entry.revision = doc.revision;
                self.keep(&Arc::new(entry));
                return Ok(Deployed {
                    version: next,
                    created: true,
                });
            }
            // Lost the entry race: the next round sees the winner's entry.
            self.forget(name);
        }
        if let Some(n) = written {
            self.drop_version(name, n).await;
        }
        Err(busy(name))
    }

    /// Delete version document `n` of `name` that a deploy wrote but did not make a version
    /// (it lost to a concurrent deploy). Best effort: one left behind (a failed delete, a
    /// crash) only shows in the version list.
    async fn drop_version(&self, name: &str, n: u32) {
        if let Err(e) = self
            .store
            .doc_delete(COLLECTION, &version_id(name, n), Expect::Revision(1))
            .await
        {
            tracing::warn!(agent = name, version = n, error = %e, "registry: a version document a lost deploy wrote could not be deleted");
        }
    }

    /// Point `label` of `name` at `version`. With `expected`, only if the label points at
    /// that version now (`Some(None)`: only if the label does not exist yet); a mismatch is
    /// an `InvalidState` error saying where it points.
    pub async fn set_label(
        &self,
        name: &str,
        label: &str,
        version: u32,
        expected: Option<Option<u32>>,
    ) -> Result<Entry> {
        check_name("label", label)?;
        self.version(name, version).await?;
        self.update(name, |e| {
            let now = e.labels.get(label).copied();
            if let Some(want) = expected
                && want != now
            {
                return Err(Error::invalid_state(
                    format!("label `{label}` of `{name}`"),
                    format!(
                        "points at {} now, not {}; read it again and retry",
                        now.map_or("nothing".to_owned(), |v| format!("v{v}")),
                        want.map_or("nothing".to_owned(), |v| format!("v{v}"))
                    ),
                ));
            }
            move_label(e, label, version);
            Ok(())
        })
        .await
    }

    /// Point `to` at the version `from` points at (e.g. promote `stage` to `prod`).
    pub async fn promote(&self, name: &str, from: &str, to: &str) -> Result<Entry> {
        check_name("label", to)?;
        self.update(name, |e| {
            let v = *e.labels.get(from).ok_or_else(|| {
                Error::not_found(
                    "label",
                    format!("{name}@{from}"),
                    "set it first with `PUT /v1/agents/{name}/labels/{label}`",
                )
            })?;
            move_label(e, to, v);
            Ok(())
        })
        .await
    }

    /// Point `label` back at the version it pointed at before its last move.
    pub async fn rollback(&self, name: &str, label: &str) -> Result<Entry> {
        self.update(name, |e| {
            if !e.labels.contains_key(label) {
                let labels: Vec<&str> = e.labels.keys().map(String::as_str).collect();
                return Err(Error::not_found(
                    "label",
                    format!("{name}@{label}"),
                    format!("`{name}` has labels {}", labels.join(", ")),
                ));
            }
            let previous = e.history.get_mut(label).and_then(Vec::pop).ok_or_else(|| {
                Error::invalid_state(
                    format!("label `{label}` of `{name}`"),
                    "has no earlier version to roll back to",
                )
            })?;
            e.labels.insert(label.to_owned(), previous);
            Ok(())
        })
        .await
    }

    /// Read-modify-write an entry with compare-and-swap.
    async fn update(&self, name: &str, f: impl Fn(&mut Entry) -> Result<()>) -> Result<Entry> {
        for _ in 0..CAS_ATTEMPTS {
            let mut e = self
                .stored(name)
                .await?
                .ok_or_else(|| not_registered(name))?;
            let revision = e.revision;
            f(&mut e)?;
            e.updated_at = agentkit_runtime::model::now_ms();
            if let Some(doc) = self
                .store
                .doc_put(
                    COLLECTION,
                    &entry_id(name),
                    encode(&e, "entry")?,
                    Expect::Revision(revision),
                )
                .await?
            {
                e.revision = doc.revision;
                let e = Arc::new(e);
                self.keep(&e);
                return Ok(Arc::unwrap_or_clone(e));
            }
            self.forget(name);
        }
        Err(busy(name))
    }
}

fn not_registered(name: &str) -> Error {
    Error::not_found(
        "agent or workflow",
        name,
        "list them with `GET /v1/agents` (or `agentkit agents list`)",
    )
}

fn move_label(e: &mut Entry, label: &str, version: u32) {
    if let Some(old) = e.labels.insert(label.to_owned(), version)
        && old != version
    {
        let h = e.history.entry(label.to_owned()).or_default();
        h.push(old);
        // Bounded: rollback goes back at most 100 moves.
        if h.len() > 100 {
            h.remove(0);
        }
    }
}

fn busy(name: &str) -> Error {
    Error::Unavailable {
        what: format!("registry entry `{name}`"),
        message: "too many concurrent changes; retry".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use agentkit_runtime::MemoryStore;
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deploys_leave_only_the_versions_they_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            agentkit_runtime::SqliteStore::open(dir.path().join("r.db"))
                .await
                .unwrap(),
        );
        // Two processes' registries on one database, 24 deploys at once: 16 distinct specs
        // and the same spec 8 times.
        let registries = [
            Registry::new(Arc::clone(&store)),
            Registry::new(Arc::clone(&store)),
        ];
        let mut tasks = Vec::new();
        for i in 0..24usize {
            let r = registries[i % 2].clone();
            let spec = if i < 16 {
                json!({"instructions": format!("spec {i}")})
            } else {
                json!({"instructions": "same"})
            };
            tasks.push(tokio::spawn(async move {
                let d = r
                    .deploy("racer", EntryKind::Agent, "", spec.clone(), BTreeMap::new())
                    .await
                    .unwrap();
                (d, spec)
            }));
        }
        let mut answered = std::collections::BTreeMap::new();
        for t in tasks {
            let (d, spec) = t.await.unwrap();
            if d.created {
                assert!(
                    answered.insert(d.version, spec).is_none(),
                    "v{} twice",
                    d.version
                );
            }
        }
        // Read by a third process (the others keep entries they wrote).
        let reader = Registry::new(store);
        let listed = reader.versions("racer", 0, 1000).await.unwrap();
        let listed: std::collections::BTreeMap<u32, Value> =
            listed.into_iter().map(|v| (v.version, v.spec)).collect();
        assert_eq!(
            listed, answered,
            "every stored version is one a deploy answered"
        );
        let entry = reader.entry("racer").await.unwrap();
        assert_eq!(Some(&entry.latest), answered.keys().last());
    }

    #[tokio::test]
    async fn a_version_left_without_its_entry_does_not_block_later_deploys() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        // A process died between storing version 1 and the entry that points at it.
        let orphan = Version {
            name: "a".into(),
            version: 1,
            kind: EntryKind::Agent,
            spec: json!({"instructions": "lost"}),
            hash: String::new(),
            members: BTreeMap::new(),
            created_at: 0,
        };
        store
            .doc_put(
                COLLECTION,
                &version_id("a", 1),
                encode(&orphan, "version").unwrap(),
                Expect::Absent,
            )
            .await
            .unwrap();
        let r = Registry::new(store);
        let spec = json!({"instructions": "kept"});
        let d = r
            .deploy("a", EntryKind::Agent, "", spec.clone(), BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(
            d,
            Deployed {
                version: 2,
                created: true
            }
        );
        assert_eq!(r.resolve("a", None).await.unwrap(), 2);
        assert_eq!(r.version("a", 2).await.unwrap().spec, spec);
        // Numbering goes on from there.
        let d = r
            .deploy("a", EntryKind::Agent, "", json!({"v": 3}), BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(d.version, 3);
    }

    /// On an unshared store the registry keeps entries: its own writes show at once, and a
    /// write it did not see (another registry over the same store) does not make its label
    /// moves fail, since they compare-and-swap on the stored entry.
    #[tokio::test]
    async fn kept_entries_follow_writes_and_never_block_them() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let r = Registry::new(Arc::clone(&store));
        for v in 1..=3 {
            r.deploy("a", EntryKind::Agent, "", json!({"v": v}), BTreeMap::new())
                .await
                .unwrap();
        }
        assert_eq!(r.resolve("a", None).await.unwrap(), 3);
        r.set_label("a", "prod", 1, None).await.unwrap();
        assert_eq!(r.resolve("a", Some("prod")).await.unwrap(), 1);
        r.promote("a", "latest", "prod").await.unwrap();
        assert_eq!(r.resolve("a", Some("prod")).await.unwrap(), 3);
        r.rollback("a", "prod").await.unwrap();
        assert_eq!(r.resolve("a", Some("prod")).await.unwrap(), 1);
        r.deploy("a", EntryKind::Agent, "", json!({"v": 4}), BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(r.resolve("a", None).await.unwrap(), 4);

        // A write past this registry: its kept entry is older than the stored one.
        let other = Registry::new(Arc::clone(&store));
        other.set_label("a", "prod", 2, None).await.unwrap();
        let e = r.set_label("a", "prod", 4, Some(Some(2))).await.unwrap();
        assert_eq!(e.labels["prod"], 4);
        assert_eq!(r.resolve("a", Some("prod")).await.unwrap(), 4);
        let d = r
            .deploy("a", EntryKind::Agent, "", json!({"v": 5}), BTreeMap::new())
            .await
            .unwrap();
        assert_eq!(d.version, 5);
        assert_eq!(r.resolve("a", None).await.unwrap(), 5);
    }
}
