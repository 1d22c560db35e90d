//! The credential vault: per-workspace secrets encrypted at rest, injected into outbound MCP
//! server connections and never shown again.
//!
//! Each secret is sealed with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`: a 192-bit
//! random nonce per write, so nonces never repeat in practice) under the server's 256-bit
//! master key, with the secret's slot (`org/workspace/name`) as associated data: a ciphertext
//! copied to another workspace's row, or another name, does not decrypt. The master key comes
//! from `AGENTKIT_MASTER_KEY` (64 hex digits) or a file (`AGENTKIT_MASTER_KEY_FILE`, the same
//! text); `agentkit dev` makes one under `./.agentkit/` when neither is set. Every process
//! sharing a database needs the same key.
//!
//! **Rotating the master key.** Each sealed secret records the id of the key that sealed it
//! (a hash of the key, never the key). Start every server with the new key in
//! `AGENTKIT_MASTER_KEY` and the old one in `AGENTKIT_MASTER_KEY_PREVIOUS` (several, separated
//! by commas or whitespace; or `AGENTKIT_MASTER_KEY_PREVIOUS_FILE`, one per line): secrets
//! sealed under a previous key still open, and the server re-seals them under the new key when
//! it starts ([`Vault::reseal`]; each row is rewritten only if nobody changed it meanwhile, so
//! a crash part-way or two servers doing it at once lose nothing). Once it reports nothing
//! left under old keys, drop the previous key.
//!
//! Servers name secrets in their `headers`, `bearer_token` and `env` values as
//! `{{secret:NAME}}`; the vault fills them in when the connection is made (and again on every
//! reconnect, so a rotated secret is used from the next connection on). The API lists names
//! and dates, never values.

use std::sync::Arc;

use agentkit_core::{Error, Result};
use agentkit_mcp::{ServerConfig, ServerTransport};
use agentkit_runtime::{Expect, Store};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::tenancy::WorkspaceId;

/// The store collection of sealed secrets.
pub const SECRETS: &str = "vault_secrets";
/// The environment variable holding the master key (64 hex digits).
pub const MASTER_KEY_ENV: &str = "AGENTKIT_MASTER_KEY";
/// The environment variable naming a file that holds the master key.
pub const MASTER_KEY_FILE_ENV: &str = "AGENTKIT_MASTER_KEY_FILE";
/// The environment variable holding earlier master keys (comma or whitespace separated), whose
/// secrets still open and are re-sealed under the current key.
pub const PREVIOUS_KEYS_ENV: &str = "AGENTKIT_MASTER_KEY_PREVIOUS";
/// The environment variable naming a file of earlier master keys (one per line).
pub const PREVIOUS_KEYS_FILE_ENV: &str = "AGENTKIT_MASTER_KEY_PREVIOUS_FILE";
/// The longest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// A 256-bit master key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// A fresh random key.
    ///
    /// # Errors
    ///
    /// When the operating system has no randomness to give.
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| Error::Unavailable {
            what: "randomness".into(),
            message: format!("the operating system gave no random bytes: {e}"),
        })?;
        Ok(Self(k))
    }

    /// Parse 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    ///
    /// When the text is not 64 hex digits.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "a master key is 64 hex digits (256 bits); this one has {} characters. Make \
                 one with `openssl rand -hex 32`",
                    t.len()
                ))
            })?;
        let mut k = [0u8; 32];
        k.copy_from_slice(&bytes);
        Ok(Self(k))
    }

    /// The key's id: 16 hex digits of a SHA-256 over a fixed label and the key. Stored with
    /// every secret it seals (it reveals nothing usable about the key).
    #[must_use]
    pub fn id(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"agentkit vault key id v1\0");
        h.update(self.0);
        hex::encode(&h.finalize()[..8])
    }

    /// Earlier master keys from [`PREVIOUS_KEYS_ENV`] or the file [`PREVIOUS_KEYS_FILE_ENV`]
    /// names (empty when neither is set).
    ///
    /// # Errors
    ///
    /// When both are set, the file cannot be read, or a key is malformed (saying which).
    pub fn previous_from_env() -> Result<Vec<Self>> {
        let direct = std::env::var(PREVIOUS_KEYS_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let file = std::env::var(PREVIOUS_KEYS_FILE_ENV)
            .ok()
            .filter(|v| !v.is_empty());
        let (text, source) = match (direct, file) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidRequest(format!(
                    "set {PREVIOUS_KEYS_ENV} or {PREVIOUS_KEYS_FILE_ENV}, not both"
                )));
            }
            (Some(t), None) => (t, PREVIOUS_KEYS_ENV.to_owned()),
            (None, Some(f)) => (
                std::fs::read_to_string(&f).map_err(|e| {
                    Error::InvalidRequest(format!("cannot read the previous keys file {f}: {e}"))
                })?,
                format!("previous keys file {f}"),
            ),
            (None, None) => return Ok(Vec::new()),
        };
        Self::parse_list(&text).map_err(|e| Error::InvalidRequest(format!("{source}: {e}")))
    }

    /// Keys of 64 hex digits separated by commas or whitespace.
    ///
    /// # Errors
    ///
    /// The first malformed key (by position, never its text).
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .enumerate()
            .map(|(i, t)| {
                Self::parse(t).map_err(|e| Error::InvalidRequest(format!("key {}: {e}", i + 1)))
            })
            .collect()
    }

    /// The key as 64 hex digits (to write it to a file).
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The key from [`MASTER_KEY_ENV`] or the file [`MASTER_KEY_FILE_ENV`] names; `None`
    /// when neither is set.
    ///
    /// # Errors
    ///
    /// When both are set, the file cannot be read, or the key is malformed.
    pub fn from_env() -> Result<Option<Self>> {
        let direct = std::env::var(MASTER_KEY_ENV).ok().filter(|v| !v.is_empty());
        let file = std::env::var(MASTER_KEY_FILE_ENV)
            .ok()
            .filter(|v| !v.is_empty());
        match (direct, file) {
            (Some(_), Some(_)) => Err(Error::InvalidRequest(format!(
                "set {MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}, not both"
            ))),
            (Some(k), None) => Self::parse(&k)
                .map(Some)
                .map_err(|e| Error::InvalidRequest(format!("{MASTER_KEY_ENV}: {e}"))),
            (None, Some(f)) => Self::from_file(std::path::Path::new(&f)).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The key in `path`.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or holds no key.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidRequest(format!(
                "cannot read the master key file {}: {e}",
                path.display()
            ))
        })?;
        Self::parse(&text)
            .map_err(|e| Error::InvalidRequest(format!("master key file {}: {e}", path.display())))
    }
}

/// What the API shows of a secret: its name and dates, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct SecretInfo {
    /// Its name.
    pub name: String,
    /// When it was first set (ms since epoch).
    pub created_at: i64,
    /// When it was last set (ms since epoch).
    pub updated_at: i64,
    /// How many times it was set.
    pub version: u64,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    nonce: String,
    ciphertext: String,
    /// The [`MasterKey::id`] of the key that sealed it (absent in rows written before keys
    /// had ids: every key held is tried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// A master key ready to seal and open.
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn new(k: &MasterKey) -> Self {
        Self {
            id: k.id(),
            cipher: XChaCha20Poly1305::new((&k.0).into()),
        }
    }
}

/// The current key (sealing) and earlier ones (opening only).
struct Keys {
    current: Key,
    previous: Vec<Key>,
    /// A random secret sealed under `current` (see [`Vault::decoy`]), made on first use.
    decoy: std::sync::OnceLock<Option<serde_json::Value>>,
}

/// The slot the decoy secret is sealed for (no stored secret has it: slots of stored
/// secrets are `org/workspace/name` and `webhook:org/workspace/name`).
const DECOY_SLOT: &str = "decoy:webhook";

/// What [`Vault::reseal`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Resealed {
    /// Secrets moved from a previous key to the current one.
    pub resealed: usize,
    /// Secrets already under the current key.
    pub current: usize,
    /// Secrets (`org/workspace/name`) no key held opens: set them again.
    pub unreadable: Vec<String>,
}

/// What re-sealing makes of one stored document (see [`reseal_collection`]).
pub(crate) enum Reseal {
    /// Already sealed under the current key.
    Current,
    /// Sealed under a previous key: this value, sealed under the current one, replaces it.
    Replace(serde_json::Value),
    /// No key held opens it.
    Unreadable,
}

/// Re-seal every document of `collection`, `each` saying what becomes of one. A replacement
/// is written only at the revision the document was read at: one changed meanwhile (set again,
/// so under the current key, or deleted) is kept as it is and counted as current, so running
/// this twice, on two servers at once or again after a crash part-way is harmless.
pub(crate) async fn reseal_collection(
    store: &Arc<dyn Store>,
    collection: &str,
    mut each: impl FnMut(&agentkit_runtime::Doc) -> Result<Reseal>,
) -> Result<Resealed> {
    const PAGE: usize = 500;
    let mut out = Resealed::default();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .doc_list(collection, "", after.as_deref(), PAGE)
            .await?;
        for doc in &page {
            match each(doc)? {
                Reseal::Current => out.current += 1,
                Reseal::Unreadable => out.unreadable.push(doc.id.clone()),
                Reseal::Replace(value) => {
                    let written = store
                        .doc_put(collection, &doc.id, value, Expect::Revision(doc.revision))
                        .await?;
                    if written.is_some() {
                        out.resealed += 1;
                    } else {
                        out.current += 1;
                    }
                }
            }
        }
        if page.len() < PAGE {
            break;
        }
        after = page.last().map(|d| d.id.clone());
    }
    Ok(out)
}

/// The vault (cheap to clone). Without a master key it holds nothing and says how to
/// configure one.
#[derive(Clone)]
pub struct Vault {
    store: Arc<dyn Store>,
    keys: Option<Arc<Keys>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("configured", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

/// Check a secret's name: 1–64 of `A-Z a-z 0-9 _ - .`.
///
/// # Errors
///
/// What is wrong with it.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "secret name {name:?} is not valid: use 1 to 64 letters, digits, `_`, `-` or `.`"
        )))
    }
}

fn slot(ws: &WorkspaceId, name: &str) -> String {
    format!("{}/{}/{name}", ws.org, ws.workspace)
}

impl Vault {
    /// A vault over `store`, sealing with `key` (`None`: not configured).
    #[must_use]
    pub fn new(store: Arc<dyn Store>, key: Option<&MasterKey>) -> Self {
        Self::with_previous(store, key, &[])
    }

    /// A vault sealing with `key` that also opens secrets sealed under `previous` keys (see
    /// [`reseal`](Self::reseal) and the module docs on rotation).
    #[must_use]
    pub fn with_previous(
        store: Arc<dyn Store>,
        key: Option<&MasterKey>,
        previous: &[MasterKey],
    ) -> Self {
        Self {
            store,
            keys: key.map(|k| {
                let current = Key::new(k);
                let previous = previous
                    .iter()
                    .filter(|p| p.id() != current.id)
                    .map(Key::new)
                    .collect();
                Arc::new(Keys {
                    current,
                    previous,
                    decoy: std::sync::OnceLock::new(),
                })
            }),
        }
    }

    /// Whether a master key is configured.
    #[must_use]
    pub fn is_configured(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether earlier master keys were given (secrets under them open and are re-sealed).
    #[must_use]
    pub fn has_previous_keys(&self) -> bool {
        self.keys.as_ref().is_some_and(|k| !k.previous.is_empty())
    }

    fn keys(&self) -> Result<&Keys> {
        self.keys.as_deref().ok_or_else(|| Error::Unavailable {
            what: "the credential vault".into(),
            message: format!(
                "no master key is configured; start the server with {MASTER_KEY_ENV} (64 hex \
                 digits, e.g. from `openssl rand -hex 32`) or {MASTER_KEY_FILE_ENV}"
            ),
        })
    }

    /// Set `name` in `ws` to `value` (create or replace).
    ///
    /// # Errors
    ///
    /// A bad name, an oversized value, no master key, or the store's error.
    pub async fn put(&self, ws: &WorkspaceId, name: &str, value: &str) -> Result<SecretInfo> {
        check_name(name)?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the secret has {} bytes; at most {MAX_SECRET_BYTES} are stored",
                value.len()
            )));
        }
        let id = slot(ws, name);
        let sealed = self.seal(&id, value.as_bytes())?;
        let doc = self
            .store
            .doc_put(SECRETS, &id, sealed_value(&sealed), Expect::Any)
            .await?
            .ok_or_else(|| {
                Error::invalid_state(format!("secret {name}"), "could not be written")
            })?;
        Ok(info(name, &doc))
    }

    /// The value of `name` in `ws`, if set.
    ///
    /// # Errors
    ///
    /// No master key, a ciphertext that does not open under it (another master key, or a
    /// row moved between slots), or the store's error.
    pub async fn get(&self, ws: &WorkspaceId, name: &str) -> Result<Option<String>> {
        check_name(name)?;
        let id = slot(ws, name);
        self.keys()?;
        let Some(doc) = self.store.doc_get(SECRETS, &id).await? else {
            return Ok(None);
        };
        let (plain, _) = self.open(name, &id, doc.value)?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| Error::invalid_state(format!("secret {name}"), "is not UTF-8"))
    }

    /// Seal `value` for `slot` (bound to it as associated data) as a JSON value to store
    /// beside other data (webhook secrets). Open it with [`open_sealed`](Self::open_sealed)
    /// and the same slot.
    pub(crate) fn seal_value(&self, slot: &str, value: &str) -> Result<serde_json::Value> {
        if value.len() > MAX_SECRET_BYTES {
            return Err(Error::InvalidRequest(format!(
                "the secret has {} bytes; at most {MAX_SECRET_BYTES} are stored",
                value.len()
            )));
        }
        self.seal_data(slot, value)
    }

    /// Seal `text` of any size for `slot` (bound to it as associated data), as a JSON value
    /// to store beside other data: what must be kept exactly but not in clear, e.g. the
    /// arguments of a gateway call waiting for an approval. Open it with
    /// [`open_sealed`](Self::open_sealed) and the same slot.
    pub(crate) fn seal_data(&self, slot: &str, text: &str) -> Result<serde_json::Value> {
        self.seal(slot, text.as_bytes()).map(|s| sealed_value(&s))
    }

    /// Open what [`seal_value`](Self::seal_value) sealed for `slot` (`what` names it in
    /// errors).
    pub(crate) fn open_sealed(
        &self,
        what: &str,
        slot: &str,
        stored: serde_json::Value,
    ) -> Result<String> {
        self.open_sealed_with_key(what, slot, stored)
            .map(|(v, _)| v)
    }

    /// This vault's decoy: a random 64-hex-digit secret sealed once (per process) under the
    /// current master key, with the slot to open it with ([`open_sealed`](Self::open_sealed)).
    /// An unknown webhook's delivery is checked against it, so it costs what a known hook's
    /// with a wrong signature costs. `None` without a master key (then no workspace hook
    /// can exist) or when sealing failed.
    pub(crate) fn decoy(&self) -> Option<(&'static str, serde_json::Value)> {
        let keys = self.keys.as_deref()?;
        let sealed = keys
            .decoy
            .get_or_init(|| {
                let mut k = [0u8; 32];
                getrandom::fill(&mut k).ok()?;
                self.seal_value(DECOY_SLOT, &hex::encode(k)).ok()
            })
            .clone()?;
        Some((DECOY_SLOT, sealed))
    }

    /// [`open_sealed`](Self::open_sealed), and whether the current master key sealed it
    /// (`false`: a previous key did; seal it again).
    pub(crate) fn open_sealed_with_key(
        &self,
        what: &str,
        slot: &str,
        stored: serde_json::Value,
    ) -> Result<(String, bool)> {
        let (plain, current) = self.open(what, slot, stored)?;
        let text = String::from_utf8(plain)
            .map_err(|_| Error::invalid_state(format!("secret {what}"), "is not UTF-8"))?;
        Ok((text, current))
    }

    /// Seal `value` for slot `id` under the current key.
    fn seal(&self, id: &str, value: &[u8]) -> Result<Sealed> {
        let key = &self.keys()?.current;
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| Error::Unavailable {
            what: "randomness".into(),
            message: format!("the operating system gave no random bytes: {e}"),
        })?;
        let ciphertext = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| Error::InvalidRequest("the secret could not be sealed".into()))?;
        Ok(Sealed {
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
            key: Some(key.id.clone()),
        })
    }

    /// Open the sealed row of slot `id` (secret `name`, for messages): its plaintext and
    /// whether the current key sealed it.
    fn open(&self, name: &str, id: &str, stored: serde_json::Value) -> Result<(Vec<u8>, bool)> {
        let keys = self.keys()?;
        let sealed: Sealed = serde_json::from_value(stored)
            .map_err(|e| Error::json(format!("reading secret {name}"), e))?;
        let nonce = hex::decode(&sealed.nonce).ok().filter(|n| n.len() == 24);
        let ciphertext = hex::decode(&sealed.ciphertext).ok();
        let (Some(nonce), Some(ciphertext)) = (nonce, ciphertext) else {
            return Err(Error::invalid_state(
                format!("secret {name}"),
                "is corrupt in the store",
            ));
        };
        let candidates: Vec<&Key> = std::iter::once(&keys.current)
            .chain(&keys.previous)
            .filter(|k| sealed.key.as_ref().is_none_or(|want| *want == k.id))
            .collect();
        for k in candidates {
            if let Ok(plain) = k.cipher.decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: id.as_bytes(),
                },
            ) {
                return Ok((plain, k.id == keys.current.id));
            }
        }
        Err(Error::invalid_state(
            format!("secret {name}"),
            match &sealed.key {
                Some(k) if !keys.has(k) => format!(
                    "was sealed under master key {k}, which this server does not hold; start it \
                     with that key in {PREVIOUS_KEYS_ENV} (the vault then re-seals it under the \
                     current key), or set the secret again"
                ),
                _ => "does not open with this server's master keys (was it copied from another \
                      workspace or name?); set it again"
                    .to_owned(),
            },
        ))
    }

    /// Re-seal under the current key every secret (of every workspace) sealed under a
    /// previous one. Each row is replaced only at the revision it was read at, so a secret set
    /// meanwhile is kept as set, and running it twice (or on two servers at once, or again
    /// after a crash part-way) is harmless.
    ///
    /// # Errors
    ///
    /// No master key, or the store's error. Rows no key opens are listed, not an error.
    pub async fn reseal(&self) -> Result<Resealed> {
        self.keys()?;
        reseal_collection(&self.store, SECRETS, |doc| {
            let name = doc.id.rsplit('/').next().unwrap_or(&doc.id);
            Ok(match self.open(name, &doc.id, doc.value.clone()) {
                Ok((_, true)) => Reseal::Current,
                Ok((plain, false)) => Reseal::Replace(sealed_value(&self.seal(&doc.id, &plain)?)),
                Err(_) => Reseal::Unreadable,
            })
        })
        .await
    }

    /// The secrets of `ws`, by name (no values).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn list(&self, ws: &WorkspaceId) -> Result<Vec<SecretInfo>> {
        let prefix = slot(ws, "");
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .doc_list(SECRETS, &prefix, after.as_deref(), 500)
                .await?;
            let done = page.len() < 500;
            for doc in &page {
                if let Some(name) = doc.id.strip_prefix(&prefix) {
                    out.push(info(name, doc));
                }
            }
            after = page.last().map(|d| d.id.clone());
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// Delete `name` from `ws`; whether it existed.
    ///
    /// # Errors
    ///
    /// A bad name or the store's error.
    pub async fn delete(&self, ws: &WorkspaceId, name: &str) -> Result<bool> {
        check_name(name)?;
        self.store
            .doc_delete(SECRETS, &slot(ws, name), Expect::Any)
            .await
    }

    /// `config` with every `{{secret:NAME}}` in its headers, bearer token and environment
    /// filled in from `ws`'s secrets.
    ///
    /// # Errors
    ///
    /// A named secret that is not set (naming it and the server), or [`get`](Self::get)'s
    /// errors.
    pub async fn resolve(&self, ws: &WorkspaceId, config: &ServerConfig) -> Result<ServerConfig> {
        let mut out = config.clone();
        let server = config.name.clone();
        let values: Vec<&mut String> = match &mut out.transport {
            ServerTransport::Stdio { env, .. } => env.values_mut().collect(),
            ServerTransport::StreamableHttp {
                headers,
                bearer_token,
                ..
            }
            | ServerTransport::Sse {
                headers,
                bearer_token,
                ..
            } => headers.values_mut().chain(bearer_token.as_mut()).collect(),
            _ => Vec::new(),
        };
        for v in values {
            if v.contains("{{secret:") {
                *v = self.fill(ws, &server, v).await?;
            }
        }
        Ok(out)
    }

    async fn fill(&self, ws: &WorkspaceId, server: &str, text: &str) -> Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{secret:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{{secret:".len()..];
            let Some(end) = after.find("}}") else {
                return Err(Error::InvalidRequest(format!(
                    "MCP server `{server}`: unterminated `{{{{secret:` (write `{{{{secret:NAME}}}}`)"
                )));
            };
            let name = after[..end].trim();
            let value = self.get(ws, name).await?.ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "MCP server `{server}` uses secret `{name}`, which workspace {ws} does not \
                     hold; set it with `PUT /v1/secrets/{name}` (or `agentkit secrets set \
                     {name}`)"
                ))
            })?;
            out.push_str(&value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A resolver that fills secrets into server configs at every connect: each server's
    /// from the vault of its workspace in `owners`, others' from `default/default`'s.
    #[must_use]
    pub fn resolver(
        &self,
        owners: std::collections::BTreeMap<String, WorkspaceId>,
    ) -> Arc<dyn agentkit_mcp::ConfigResolver> {
        Arc::new(WorkspaceResolver {
            vault: self.clone(),
            owners,
        })
    }
}

fn sealed_value(s: &Sealed) -> serde_json::Value {
    json!({"nonce": s.nonce, "ciphertext": s.ciphertext, "key": s.key})
}

impl Keys {
    fn has(&self, id: &str) -> bool {
        self.current.id == id || self.previous.iter().any(|k| k.id == id)
    }
}

fn info(name: &str, doc: &agentkit_runtime::Doc) -> SecretInfo {
    SecretInfo {
        name: name.to_owned(),
        created_at: doc.created_at,
        updated_at: doc.updated_at,
        version: doc.revision,
    }
}

struct WorkspaceResolver {
    vault: Vault,
    owners: std::collections::BTreeMap<String, WorkspaceId>,
}

#[async_trait::async_trait]
impl agentkit_mcp::ConfigResolver for WorkspaceResolver {
    async fn resolve(&self, config: &ServerConfig) -> Result<ServerConfig> {
        let ws = self
            .owners
            .get(&config.name)
            .cloned()
            .unwrap_or_else(WorkspaceId::default_workspace);
        self.vault.resolve(&ws, config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentkit_runtime::MemoryStore;
    use proptest::prelude::*;

    fn vault() -> (Vault, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let key = MasterKey::generate().unwrap();
        (Vault::new(Arc::clone(&store), Some(&key)), store)
    }

    #[test]
    fn the_decoy_is_one_random_secret_per_vault_opened_each_time() {
        let open = |v: &Vault| {
            let (slot, sealed) = v.decoy().unwrap();
            v.open_sealed("decoy", slot, sealed).unwrap()
        };
        let (v, _) = vault();
        let d = open(&v);
        assert_eq!(d.len(), 64);
        assert_eq!(open(&v.clone()), d, "clones share it");
        let (other, _) = vault();
        assert_ne!(open(&other), d);
        let bare = Vault::new(Arc::new(MemoryStore::new()), None);
        assert_eq!(bare.decoy(), None);
    }

    #[tokio::test]
    async fn secrets_round_trip_per_workspace_and_never_sit_in_the_store_in_clear() {
        let (v, store) = vault();
        let acme = WorkspaceId::new("acme", "prod");
        let globex = WorkspaceId::new("globex", "prod");
        v.put(&acme, "gh", "ghp_supersecretvalue").await.unwrap();
        assert_eq!(
            v.get(&acme, "gh").await.unwrap().as_deref(),
            Some("ghp_supersecretvalue")
        );
        assert_eq!(v.get(&globex, "gh").await.unwrap(), None);
        let names: Vec<String> = v
            .list(&acme)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["gh"]);
        assert!(v.list(&globex).await.unwrap().is_empty());
        let doc = store
            .doc_get(SECRETS, "acme/prod/gh")
            .await
            .unwrap()
            .unwrap();
        assert!(!doc.value.to_string().contains("supersecret"));
        // A sealed row copied into another workspace's slot does not open there.
        store
            .doc_put(SECRETS, "globex/prod/gh", doc.value.clone(), Expect::Any)
            .await
            .unwrap();
        let e = v.get(&globex, "gh").await.unwrap_err().to_string();
        assert!(e.contains("does not open"), "{e}");
        // Another master key cannot open it either.
        let other = Vault::new(Arc::clone(&store), Some(&MasterKey::generate().unwrap()));
        assert!(other.get(&acme, "gh").await.is_err());
        // Without a key: a clear message.
        let none = Vault::new(store, None);
        let e = none.put(&acme, "x", "y").await.unwrap_err().to_string();
        assert!(e.contains(MASTER_KEY_ENV), "{e}");
        assert!(v.delete(&acme, "gh").await.unwrap());
        assert_eq!(v.get(&acme, "gh").await.unwrap(), None);
    }

    #[tokio::test]
    async fn templates_in_headers_tokens_and_env_are_filled() {
        let (v, _) = vault();
        let ws = WorkspaceId::default_workspace();
        v.put(&ws, "token", "t0k3n").await.unwrap();
        let http = ServerConfig::http("issues", "http://127.0.0.1:1/mcp")
            .with_header("X-Api", "key={{secret:token}};v=1")
            .with_bearer_token("{{secret:token}}");
        let got = v.resolve(&ws, &http).await.unwrap();
        let ServerTransport::StreamableHttp {
            headers,
            bearer_token,
            ..
        } = &got.transport
        else {
            panic!("http")
        };
        assert_eq!(headers["X-Api"], "key=t0k3n;v=1");
        assert_eq!(bearer_token.as_deref(), Some("t0k3n"));
        let stdio =
            ServerConfig::stdio("gh", "node", ["x"]).with_env("GITHUB_TOKEN", "{{secret:missing}}");
        let e = v.resolve(&ws, &stdio).await.unwrap_err().to_string();
        assert!(e.contains("`missing`") && e.contains("`gh`"), "{e}");
    }

    #[tokio::test]
    async fn a_server_given_to_one_workspace_takes_that_workspaces_secret() {
        let (v, _) = vault();
        let acme = WorkspaceId::new("acme", "prod");
        v.put(&acme, "t", "acme-token").await.unwrap();
        v.put(&WorkspaceId::default_workspace(), "t", "default-token")
            .await
            .unwrap();
        let owners = std::collections::BTreeMap::from([("crm".to_owned(), acme)]);
        let r = v.resolver(owners);
        let token = |c: &ServerConfig| match &c.transport {
            ServerTransport::StreamableHttp { bearer_token, .. } => bearer_token.clone(),
            _ => None,
        };
        let crm =
            ServerConfig::http("crm", "http://127.0.0.1:1/mcp").with_bearer_token("{{secret:t}}");
        let other =
            ServerConfig::http("wiki", "http://127.0.0.1:1/mcp").with_bearer_token("{{secret:t}}");
        assert_eq!(
            token(&r.resolve(&crm).await.unwrap()).as_deref(),
            Some("acme-token")
        );
        assert_eq!(
            token(&r.resolve(&other).await.unwrap()).as_deref(),
            Some("default-token")
        );
    }

    #[tokio::test]
    async fn rotating_the_master_key_reseals_every_secret_and_old_keys_are_then_unneeded() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (old, new) = (
            MasterKey::generate().unwrap(),
            MasterKey::generate().unwrap(),
        );
        let acme = WorkspaceId::new("acme", "prod");
        let v_old = Vault::new(Arc::clone(&store), Some(&old));
        v_old.put(&acme, "TOKEN", "tok-1").await.unwrap();
        v_old
            .put(&WorkspaceId::default_workspace(), "KEY", "key-1")
            .await
            .unwrap();

        // The new key alone cannot open them, and says how to fix it.
        let v_new = Vault::new(Arc::clone(&store), Some(&new));
        let err = v_new.get(&acme, "TOKEN").await.unwrap_err().to_string();
        assert!(
            err.contains(&old.id()) && err.contains(PREVIOUS_KEYS_ENV),
            "{err}"
        );
        assert!(
            !err.contains(&old.to_hex()) && !err.contains("tok-1"),
            "{err}"
        );

        // New key plus the old one as previous: readable, then re-sealed.
        let v_both =
            Vault::with_previous(Arc::clone(&store), Some(&new), std::slice::from_ref(&old));
        assert!(v_both.has_previous_keys());
        assert_eq!(
            v_both.get(&acme, "TOKEN").await.unwrap().as_deref(),
            Some("tok-1")
        );
        let r = v_both.reseal().await.unwrap();
        assert_eq!(
            (r.resealed, r.current, r.unreadable.len()),
            (2, 0, 0),
            "{r:?}"
        );
        // Again: nothing left to do.
        let r = v_both.reseal().await.unwrap();
        assert_eq!((r.resealed, r.current), (0, 2), "{r:?}");

        // The old key is no longer needed; the old vault cannot open the new rows.
        assert_eq!(
            v_new.get(&acme, "TOKEN").await.unwrap().as_deref(),
            Some("tok-1")
        );
        assert_eq!(
            v_new
                .get(&WorkspaceId::default_workspace(), "KEY")
                .await
                .unwrap()
                .as_deref(),
            Some("key-1")
        );
        assert!(v_old.get(&acme, "TOKEN").await.is_err());

        // A row under a key nobody holds is listed, not fatal.
        let stray = MasterKey::generate().unwrap();
        Vault::new(Arc::clone(&store), Some(&stray))
            .put(&acme, "STRAY", "x")
            .await
            .unwrap();
        let r = v_new.reseal().await.unwrap();
        assert_eq!(r.unreadable, ["acme/prod/STRAY"]);
        assert_eq!(r.current, 2);
    }

    #[test]
    fn key_lists_parse_and_errors_never_echo_keys() {
        let (a, b) = (
            MasterKey::generate().unwrap(),
            MasterKey::generate().unwrap(),
        );
        let keys = MasterKey::parse_list(&format!(" {},\n{} ", a.to_hex(), b.to_hex())).unwrap();
        assert_eq!(
            keys.iter().map(MasterKey::id).collect::<Vec<_>>(),
            [a.id(), b.id()]
        );
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id().len(), 16);
        let bad = format!("{},{}zz", a.to_hex(), &b.to_hex()[..40]);
        let err = MasterKey::parse_list(&bad).unwrap_err().to_string();
        assert!(
            err.contains("key 2") && !err.contains(&a.to_hex()[..20]),
            "{err}"
        );
        assert!(MasterKey::parse_list("").unwrap().is_empty());
    }

    #[test]
    fn master_keys_parse_only_64_hex_digits_and_never_print() {
        let k = MasterKey::generate().unwrap();
        assert_eq!(MasterKey::parse(&k.to_hex()).unwrap().to_hex(), k.to_hex());
        assert!(!format!("{k:?}").contains(&k.to_hex()[..8]));
        assert!(MasterKey::parse("abc").is_err());
        assert!(MasterKey::parse(&"zz".repeat(32)).is_err());
    }

    proptest! {
        #[test]
        fn names_are_checked_and_filling_never_panics(name in ".{0,70}", text in ".{0,80}") {
            let ok = check_name(&name).is_ok();
            prop_assert!(!ok || !name.contains('/'));
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (v, _) = vault();
            let ws = WorkspaceId::default_workspace();
            let _ = rt.block_on(v.fill(&ws, "s", &text));
        }
    }
}
