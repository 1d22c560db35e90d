//! API keys: 256 random bits, shown once, stored as a SHA-256 hash under a visible id.
//!
//! A key reads `ak_<id>_<secret>`: `<id>` is 12 hex digits (48 random bits) that name the
//! key in lists, logs and URLs; `<secret>` is 64 hex digits (256 bits from the operating
//! system's CSPRNG). The store keeps `SHA-256(key)` only. A plain, unsalted hash is enough
//! for a secret this long: salts and slow hashes (argon2, bcrypt) protect low-entropy
//! passwords against guessing, but 2^256 candidates cannot be enumerated, and a fast hash
//! keeps checking a key on every request cheap. The stored hash is compared in constant
//! time.

use std::sync::Arc;

use agentkit_core::{Error, Result};
use agentkit_runtime::{Doc, Expect, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Role, WorkspaceId};

/// The store collection of API keys (id = the key's visible id).
pub const KEYS: &str = "agentkit.api_keys";

/// `last_used_at` is written at most this often per key (ms).
const LAST_USED_EVERY_MS: i64 = 60_000;

/// An API key as stored and listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ApiKey {
    /// The visible id (`ak_<id>_…`), used to revoke it.
    pub id: String,
    /// What it is for (free text).
    pub name: String,
    /// Its organisation.
    pub org: String,
    /// Its workspace.
    pub workspace: String,
    /// What it may do.
    pub role: Role,
    /// When it was created (ms since epoch).
    pub created_at: i64,
    /// When it stops working (ms since epoch), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When it was revoked (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    /// When it was last used (ms since epoch; updated at most once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    /// The key (id) or `admin` that created it.
    pub created_by: String,
    /// The policy (a name in `policies:`) applied to every tool call made with it, on top of
    /// the agent's or the gateway's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Hex SHA-256 of the whole key.
    #[serde(skip)]
    pub(crate) hash: String,
}

impl ApiKey {
    /// The workspace it belongs to.
    #[must_use]
    pub fn workspace_id(&self) -> WorkspaceId {
        WorkspaceId::new(&self.org, &self.workspace)
    }

    /// Whether it works at `now` (not revoked, not expired).
    #[must_use]
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    key: ApiKey,
    hash: String,
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct CreatedKey {
    /// The whole key (`ak_<id>_<secret>`): send it as `Authorization: Bearer …` or
    /// `x-api-key: …`. It is not stored and cannot be shown again.
    pub key: String,
    /// The key's record.
    #[serde(flatten)]
    pub record: ApiKey,
}

/// Why a presented key was refused (all answer 401; the detail differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not a key of this server (unknown id, wrong secret, malformed).
    Unknown,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether record `k` accepts a key whose secret hashes to `given` at `now` (ms): `Ok(true)`
/// when it does and its use is due to be recorded (at most once a minute).
fn admits(k: &ApiKey, given: &str, now: i64) -> std::result::Result<bool, Refusal> {
    if !bool::from(given.as_bytes().ct_eq(k.hash.as_bytes())) {
        Err(Refusal::Unknown)
    } else if k.revoked_at.is_some() {
        Err(Refusal::Revoked)
    } else if k.expires_at.is_some_and(|t| now >= t) {
        Err(Refusal::Expired)
    } else {
        Ok(k.last_used_at
            .is_none_or(|t| now.saturating_sub(t) >= LAST_USED_EVERY_MS))
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Unavailable {
        what: "the operating system's random number generator".into(),
        message: format!("{e}; a key cannot be generated without it"),
    })?;
    Ok(hex::encode(buf))
}

/// Split `ak_<12 hex>_<64 hex>` into its id; `None` if it is not shaped like a key.
#[must_use]
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ak_")?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexy(id, 12) && hexy(secret, 64)).then_some(id)
}

/// How long a verified key is answered from memory before it is read again: a key revoked
/// through another server process stops working within this time (at once through this one).
pub const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(5);
/// At most this many verified keys are kept in memory.
const VERIFIED_MAX: usize = 10_000;

/// A key verified recently: its record and the store revision it was read at.
#[derive(Clone)]
struct Verified {
    key: ApiKey,
    revision: u64,
    at: std::time::Instant,
}

/// The API keys in a store. Verified keys are kept in memory for [`VERIFIED_TTL`], so a busy
/// client costs one store read per key every few seconds, not one per request.
#[derive(Clone)]
pub struct ApiKeys {
    store: Arc<dyn Store>,
    verified: Arc<std::sync::Mutex<std::collections::HashMap<String, Verified>>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").finish_non_exhaustive()
    }
}

fn decode(d: &Doc) -> Result<ApiKey> {
    let s: Stored = serde_json::from_value(d.value.clone())
        .map_err(|e| Error::json(format!("reading API key {}", d.id), e))?;
    let mut k = s.key;
    k.hash = s.hash;
    Ok(k)
}

fn encode(k: &ApiKey) -> Result<serde_json::Value> {
    serde_json::to_value(Stored {
        key: k.clone(),
        hash: k.hash.clone(),
    })
    .map_err(|e| Error::json(format!("encoding API key {}", k.id), e))
}

impl ApiKeys {
    /// The keys in `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            verified: Arc::default(),
        }
    }

    /// Create a key for `workspace` with `role`, valid until `expires_at` (ms since epoch)
    /// if given. The returned [`CreatedKey::key`] is the only copy of the secret.
    pub async fn create(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        role: Role,
        expires_at: Option<i64>,
        created_by: &str,
    ) -> Result<CreatedKey> {
        self.create_with_policy(workspace, name, role, expires_at, created_by, None)
            .await
    }

    /// [`create`](Self::create) a key that carries `policy` (a name in `policies:`; the
    /// caller checks that it exists): every tool call made with the key must pass it too.
    pub async fn create_with_policy(
        &self,
        workspace: &WorkspaceId,
        name: &str,
        role: Role,
        expires_at: Option<i64>,
        created_by: &str,
        policy: Option<&str>,
    ) -> Result<CreatedKey> {
        if name.len() > 200 {
            return Err(Error::InvalidRequest(
                "a key's name is at most 200 bytes".into(),
            ));
        }
        let now = agentkit_runtime::model::now_ms();
        if expires_at.is_some_and(|t| t <= now) {
            return Err(Error::InvalidRequest(
                "`expires_at` is in the past; give a future time (ms since epoch)".into(),
            ));
        }
        for _ in 0..8 {
            let id = random_hex(6)?;
            let key = format!("ak_{id}_{}", random_hex(32)?);
            let record = ApiKey {
                id: id.clone(),
                name: name.to_owned(),
                org: workspace.org.clone(),
                workspace: workspace.workspace.clone(),
                role,
                created_at: now,
                expires_at,
                revoked_at: None,
                last_used_at: None,
                created_by: created_by.to_owned(),
                policy: policy.map(str::to_owned),
                hash: hash(&key),
            };
            if self
                .store
                .doc_put(KEYS, &id, encode(&record)?, Expect::Absent)
                .await?
                .is_some()
            {
                return Ok(CreatedKey { key, record });
            }
        }
        Err(Error::Unavailable {
            what: "API key ids".into(),
            message: "eight random ids in a row were taken; retry".into(),
        })
    }

    /// The key with this id.
    pub async fn get(&self, id: &str) -> Result<Option<ApiKey>> {
        match self.store.doc_get(KEYS, id).await? {
            Some(d) => decode(&d).map(Some),
            None => Ok(None),
        }
    }

    /// Every key of `workspace` (every key when `None`), by id.
    pub async fn list(&self, workspace: Option<&WorkspaceId>) -> Result<Vec<ApiKey>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let docs = self
                .store
                .doc_list(KEYS, "", after.as_deref(), 1_000)
                .await?;
            for d in &docs {
                let k = decode(d)?;
                if workspace.is_none_or(|w| *w == k.workspace_id()) {
                    out.push(k);
                }
            }
            after = docs.last().map(|d| d.id.clone());
            if docs.len() < 1_000 {
                break;
            }
        }
        Ok(out)
    }

    /// Revoke the key `id` (a no-op if it is revoked already). The key as it is now.
    pub async fn revoke(&self, id: &str) -> Result<Option<ApiKey>> {
        for _ in 0..16 {
            let Some(d) = self.store.doc_get(KEYS, id).await? else {
                return Ok(None);
            };
            let mut k = decode(&d)?;
            if k.revoked_at.is_some() {
                return Ok(Some(k));
            }
            k.revoked_at = Some(agentkit_runtime::model::now_ms());
            if self
                .store
                .doc_put(KEYS, id, encode(&k)?, Expect::Revision(d.revision))
                .await?
                .is_some()
            {
                self.forget(id);
                return Ok(Some(k));
            }
        }
        Err(Error::Unavailable {
            what: format!("API key {id}"),
            message: "it is being written concurrently; retry".into(),
        })
    }

    /// Check a presented key: its record if it is a live key of this server. Records its
    /// use (`last_used_at`, at most once a minute).
    pub async fn verify(&self, presented: &str) -> Result<std::result::Result<ApiKey, Refusal>> {
        let Some(id) = key_id(presented) else {
            return Ok(Err(Refusal::Unknown));
        };
        let given = hash(presented);
        let now = agentkit_runtime::model::now_ms();
        if let Some(answer) = self.cached_answer(id, &given, now) {
            return Ok(answer);
        }
        // Not known from memory, or its use is due to be recorded (then the remembered
        // record and revision are what the write compares against).
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .filter(|v| v.at.elapsed() < VERIFIED_TTL)
            .cloned();
        let (mut k, revision) = match cached {
            Some(v) => (v.key, v.revision),
            None => {
                let Some(d) = self.store.doc_get(KEYS, id).await? else {
                    return Ok(Err(Refusal::Unknown));
                };
                (decode(&d)?, d.revision)
            }
        };
        match admits(&k, &given, now) {
            Err(refusal) => return Ok(Err(refusal)),
            Ok(false) => self.remember(id, &k, revision),
            Ok(true) => {
                k.last_used_at = Some(now);
                // A lost race means another request (or process) just wrote it: read it
                // afresh next time, which also picks up a revocation made elsewhere.
                match self
                    .store
                    .doc_put(KEYS, id, encode(&k)?, Expect::Revision(revision))
                    .await
                {
                    Ok(Some(d)) => self.remember(id, &k, d.revision),
                    Ok(None) => self.forget(id),
                    Err(e) => {
                        self.forget(id);
                        tracing::warn!(key = %id, error = %e, "recording a key's last use failed");
                    }
                }
            }
        }
        Ok(Ok(k))
    }

    /// [`verify`](Self::verify)'s answer when it needs neither a store read nor a write: a
    /// malformed key, or a key verified within [`VERIFIED_TTL`] whose last use was recorded
    /// within the minute. `None` when only `verify` can tell. The request path calls this
    /// first, so a busy client is authenticated without waiting.
    pub fn verify_cached(&self, presented: &str) -> Option<std::result::Result<ApiKey, Refusal>> {
        let Some(id) = key_id(presented) else {
            return Some(Err(Refusal::Unknown));
        };
        self.cached_answer(id, &hash(presented), agentkit_runtime::model::now_ms())
    }

    /// The answer for key `id` presented with secret hash `given` at `now`, from the keys
    /// verified within [`VERIFIED_TTL`]; `None` when it is not among them or its use is due
    /// to be recorded.
    fn cached_answer(
        &self,
        id: &str,
        given: &str,
        now: i64,
    ) -> Option<std::result::Result<ApiKey, Refusal>> {
        let m = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let k = &m.get(id).filter(|v| v.at.elapsed() < VERIFIED_TTL)?.key;
        match admits(k, given, now) {
            Err(refusal) => Some(Err(refusal)),
            Ok(true) => None,
            Ok(false) => Some(Ok(k.clone())),
        }
    }

    fn remember(&self, id: &str, key: &ApiKey, revision: u64) {
        let mut m = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = m.get(id)
            && v.revision == revision
            && v.at.elapsed() < VERIFIED_TTL
        {
            return;
        }
        if m.len() >= VERIFIED_MAX {
            m.retain(|_, v| v.at.elapsed() < VERIFIED_TTL);
            if m.len() >= VERIFIED_MAX {
                m.clear();
            }
        }
        m.insert(
            id.to_owned(),
            Verified {
                key: key.clone(),
                revision,
                at: std::time::Instant::now(),
            },
        );
    }

    fn forget(&self, id: &str) {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn remembered_keys_still_check_the_secret_and_a_revocation_here_is_immediate() {
        let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
        let keys = ApiKeys::new(Arc::clone(&store));
        let ws = WorkspaceId::default_workspace();
        let k = keys
            .create(&ws, "t", Role::Viewer, None, "admin")
            .await
            .unwrap();
        assert!(keys.verify(&k.key).await.unwrap().is_ok());
        // Remembered now: a wrong secret under the same id is still refused.
        let (head, _) = k.key.rsplit_once('_').unwrap();
        let forged = format!("{head}_{}", "0".repeat(64));
        assert_eq!(
            keys.verify(&forged).await.unwrap().unwrap_err(),
            Refusal::Unknown
        );
        assert!(keys.verify(&k.key).await.unwrap().is_ok());
        keys.revoke(&k.record.id).await.unwrap();
        assert_eq!(
            keys.verify(&k.key).await.unwrap().unwrap_err(),
            Refusal::Revoked
        );
        // Another process's view (a fresh ApiKeys over the same store) agrees.
        let other = ApiKeys::new(store);
        assert_eq!(
            other.verify(&k.key).await.unwrap().unwrap_err(),
            Refusal::Revoked
        );
    }

    /// What the request path answers without the store: only what `verify` would answer.
    #[tokio::test]
    async fn cached_answers_need_a_verified_key_and_agree_with_verify() {
        let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
        let keys = ApiKeys::new(Arc::clone(&store));
        let ws = WorkspaceId::default_workspace();
        let k = keys
            .create(&ws, "t", Role::Viewer, None, "admin")
            .await
            .unwrap();
        assert_eq!(
            keys.verify_cached("not-a-key").unwrap().unwrap_err(),
            Refusal::Unknown
        );
        // Never verified here: only the store can tell.
        assert!(keys.verify_cached(&k.key).is_none());
        assert!(keys.verify(&k.key).await.unwrap().is_ok());
        let cached = keys.verify_cached(&k.key).unwrap().unwrap();
        assert_eq!(cached.id, k.record.id);
        let (head, _) = k.key.rsplit_once('_').unwrap();
        let forged = format!("{head}_{}", "0".repeat(64));
        assert_eq!(
            keys.verify_cached(&forged).unwrap().unwrap_err(),
            Refusal::Unknown
        );
        // Revoked through this process: forgotten, so the next answer comes from the store.
        keys.revoke(&k.record.id).await.unwrap();
        assert!(keys.verify_cached(&k.key).is_none());
        assert_eq!(
            keys.verify(&k.key).await.unwrap().unwrap_err(),
            Refusal::Revoked
        );
    }

    #[test]
    fn key_ids_parse_only_well_formed_keys() {
        let k = format!("ak_{}_{}", "a1".repeat(6), "f0".repeat(32));
        assert_eq!(key_id(&k), Some("a1a1a1a1a1a1"));
        assert_eq!(key_id("ak_0123"), None);
        assert_eq!(
            key_id(&format!("ak_{}_{}", "zz".repeat(6), "f0".repeat(32))),
            None
        );
        assert_eq!(
            key_id(&format!("ak_{}_{}x", "a1".repeat(6), "f0".repeat(32))),
            None
        );
    }

    proptest! {
        #[test]
        fn key_id_never_panics(s in ".{0,120}") {
            if let Some(id) = key_id(&s) {
                prop_assert_eq!(id.len(), 12);
                prop_assert!(s.starts_with("ak_"));
            }
        }
    }

    #[tokio::test]
    async fn keys_verify_revoke_and_expire() {
        let store: Arc<dyn Store> = Arc::new(agentkit_runtime::MemoryStore::new());
        let keys = ApiKeys::new(store);
        let ws = WorkspaceId::new("acme", "prod");
        let c = keys
            .create(&ws, "ci", Role::Invoker, None, "admin")
            .await
            .unwrap();
        assert!(key_id(&c.key).is_some());
        let k = keys.verify(&c.key).await.unwrap().unwrap();
        assert_eq!(k.role, Role::Invoker);
        assert!(k.last_used_at.is_some());
        let mut wrong = c.key.clone();
        wrong.pop();
        wrong.push(if c.key.ends_with('0') { '1' } else { '0' });
        assert_eq!(keys.verify(&wrong).await.unwrap(), Err(Refusal::Unknown));
        keys.revoke(&c.record.id).await.unwrap();
        assert_eq!(keys.verify(&c.key).await.unwrap(), Err(Refusal::Revoked));
        assert!(
            keys.create(&ws, "old", Role::Viewer, Some(1), "admin")
                .await
                .is_err()
        );
    }
}
