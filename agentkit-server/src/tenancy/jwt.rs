//! OIDC / JWT bearer tokens: an identity provider's signed tokens accepted beside API keys.
//!
//! A token is verified with [`jsonwebtoken`] against the keys configured in `server.jwt`
//! (a JWKS URL, a PEM public key, an HMAC secret, or — with none of them — the keys found by
//! OIDC discovery at the issuer), its `iss`, `aud`, `exp` and `nbf` checked, and its claims
//! mapped to the organisation, workspace and role it acts as. The workspace must exist: a
//! token cannot conjure a tenant. Keys fetched from a JWKS are cached and refetched when a
//! token names a key id the cache does not hold (at most once every
//! [`REFETCH_INTERVAL`], so a stream of forged key ids cannot make the server hammer the
//! identity provider).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::config::JwtSettings;
use agentkit_core::{Error, Result};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{DEFAULT_ORG, Role, WorkspaceId};

/// The least time between two fetches of the key set.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long fetched keys are used before they are fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(600);
/// The longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const SYMMETRIC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenIdentity {
    /// The workspace it acts in.
    pub workspace: WorkspaceId,
    /// Its role.
    pub role: Role,
    /// The token's subject (`sub`), or `unknown` when it has none.
    pub subject: String,
}

/// Why a token was refused: the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// The token is invalid (signature, issuer, audience, time, claims): 401.
    Invalid(String),
    /// The identity provider's keys could not be fetched: 503.
    KeysUnavailable(String),
}

enum Keys {
    /// One key for every token.
    Static(DecodingKey),
    /// A key set fetched from a URL (found by discovery when `None`).
    Remote {
        url: Option<String>,
        /// The keys held: read by every verification, written after a fetch.
        cache: std::sync::RwLock<Cache>,
        /// One fetch at a time; verifications of known keys never wait for it.
        fetching: Mutex<()>,
    },
}

#[derive(Default, Clone)]
struct Cache {
    by_kid: HashMap<String, DecodingKey>,
    /// Keys without a `kid`, tried in turn.
    anonymous: Vec<DecodingKey>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

/// Verifies bearer JWTs (cheap to clone).
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    settings: JwtSettings,
    /// One validation per accepted algorithm (jsonwebtoken wants one family per validation).
    validations: Vec<(Algorithm, Validation)>,
    keys: Keys,
    http: reqwest::Client,
    default_role: Option<Role>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.inner.settings.issuer)
            .field("audience", &self.inner.settings.audience)
            .finish_non_exhaustive()
    }
}

fn bad(detail: impl std::fmt::Display) -> Error {
    Error::InvalidRequest(format!("server.jwt: {detail}"))
}

impl JwtVerifier {
    /// A verifier for `settings`; reads the PEM file or secret variable it names now.
    ///
    /// # Errors
    ///
    /// What is wrong with the settings (two key sources, an unreadable key, an unknown
    /// algorithm or role), naming the `server.jwt` key.
    pub fn from_settings(settings: &JwtSettings) -> Result<Self> {
        check_sources(settings)?;
        let secret = match &settings.secret_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                bad(format!(
                    "`secret_env`: the environment variable {var} is not set (or not UTF-8)"
                ))
            })?),
            None => None,
        };
        Self::build(settings, secret)
    }

    /// [`from_settings`](Self::from_settings) with the HMAC secret given (not read from the
    /// environment).
    pub(crate) fn build(settings: &JwtSettings, secret: Option<String>) -> Result<Self> {
        check_sources(settings)?;
        if settings.issuer.trim().is_empty() || settings.audience.trim().is_empty() {
            return Err(bad("`issuer` and `audience` must not be empty"));
        }
        let symmetric = settings.secret_env.is_some();
        let algorithms: Vec<Algorithm> = if settings.algorithms.is_empty() {
            if symmetric {
                SYMMETRIC.to_vec()
            } else {
                ASYMMETRIC.to_vec()
            }
        } else {
            settings
                .algorithms
                .iter()
                .map(|a| {
                    Algorithm::from_str(a).map_err(|_| {
                        bad(format!(
                            "`algorithms`: `{a}` is not a JWS algorithm (RS256, ES256, EdDSA, \
                             HS256, …)"
                        ))
                    })
                })
                .collect::<Result<_>>()?
        };
        // A public key must never verify an HMAC token (algorithm confusion), nor a secret
        // an RSA one.
        if let Some(a) = algorithms
            .iter()
            .find(|a| SYMMETRIC.contains(a) != symmetric)
        {
            return Err(bad(format!(
                "`algorithms`: {a:?} does not go with {}",
                if symmetric {
                    "an HMAC secret (`secret_env`)"
                } else {
                    "public keys (`jwks_url`, `public_key_file` or discovery)"
                }
            )));
        }
        let validations = algorithms
            .into_iter()
            .map(|alg| {
                let mut v = Validation::new(alg);
                v.set_issuer(&[settings.issuer.as_str()]);
                v.set_audience(&[settings.audience.as_str()]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                v.leeway = settings.leeway_seconds;
                (alg, v)
            })
            .collect();
        let keys = if let Some(file) = &settings.public_key_file {
            let pem = std::fs::read(file)
                .map_err(|e| bad(format!("`public_key_file`: cannot read {file}: {e}")))?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .or_else(|_| DecodingKey::from_ec_pem(&pem))
                .or_else(|_| DecodingKey::from_ed_pem(&pem))
                .map_err(|_| {
                    bad(format!(
                        "`public_key_file`: {file} holds no RSA, EC or Ed25519 public key in \
                         PEM form"
                    ))
                })?;
            Keys::Static(key)
        } else if let Some(var) = &settings.secret_env {
            let secret = secret.unwrap_or_default();
            if secret.len() < 32 {
                return Err(bad(format!(
                    "`secret_env`: the secret in {var} has {} bytes; use at least 32",
                    secret.len()
                )));
            }
            Keys::Static(DecodingKey::from_secret(secret.as_bytes()))
        } else {
            Keys::Remote {
                url: settings.jwks_url.clone(),
                cache: std::sync::RwLock::default(),
                fetching: Mutex::new(()),
            }
        };
        let default_role = settings
            .default_role
            .as_deref()
            .map(|r| Role::from_str(r).map_err(|e| bad(format!("`default_role`: {e}"))))
            .transpose()?;
        if let Some(org) = &settings.default_org {
            super::workspaces::check_name("organisation", org)
                .map_err(|e| bad(format!("`default_org`: {e}")))?;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| bad(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                validations,
                keys,
                http,
                default_role,
            }),
        })
    }

    /// Whether `token` has the shape of a JWT (three base64url parts), so it is checked
    /// here rather than as an API key.
    #[must_use]
    pub fn looks_like_jwt(token: &str) -> bool {
        token.starts_with("eyJ")
            && token.split('.').count() == 3
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// Verify `token` and map its claims.
    pub async fn verify(&self, token: &str) -> std::result::Result<TokenIdentity, TokenRefusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRefusal::Invalid(format!(
                "the bearer token has {} bytes; at most {MAX_TOKEN_BYTES} are accepted",
                token.len()
            )));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            TokenRefusal::Invalid(format!("the bearer token is not a well-formed JWT: {e}"))
        })?;
        let Some((_, validation)) = self
            .inner
            .validations
            .iter()
            .find(|(a, _)| *a == header.alg)
        else {
            return Err(TokenRefusal::Invalid(format!(
                "the token is signed with {:?}, which this server does not accept \
                 (server.jwt.algorithms)",
                header.alg
            )));
        };
        let claims = match &self.inner.keys {
            Keys::Static(key) => self.decode(token, key, validation)?,
            Keys::Remote {
                url,
                cache,
                fetching,
            } => {
                let keys = self
                    .remote_keys(url.as_deref(), cache, fetching, header.kid.as_deref())
                    .await?;
                self.decode_any(token, &keys, validation)?
            }
        };
        self.identity(&claims)
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        validation: &Validation,
    ) -> std::result::Result<Value, TokenRefusal> {
        use jsonwebtoken::errors::ErrorKind as K;
        let s = &self.inner.settings;
        jsonwebtoken::decode::<Value>(token, key, validation)
            .map(|t| t.claims)
            .map_err(|e| {
                TokenRefusal::Invalid(match e.kind() {
                    K::ExpiredSignature => "the token has expired; get a new one".to_owned(),
                    K::ImmatureSignature => "the token is not valid yet (`nbf`)".to_owned(),
                    K::InvalidIssuer => format!("the token's issuer is not {}", s.issuer),
                    K::InvalidAudience => format!("the token's audience is not {}", s.audience),
                    K::InvalidSignature => "the token's signature does not verify".to_owned(),
                    K::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                    K::InvalidAlgorithm => {
                        "the token's algorithm does not match its key".to_owned()
                    }
                    other => format!("the token was refused: {other:?}"),
                })
            })
    }

    /// The keys that may have signed a token naming `kid` (every key when it names none),
    /// fetching the set first when it is stale or lacks `kid`. Decoding happens outside any
    /// lock, so verifications run in parallel; only fetches take turns.
    async fn remote_keys(
        &self,
        url: Option<&str>,
        cache: &std::sync::RwLock<Cache>,
        fetching: &Mutex<()>,
        kid: Option<&str>,
    ) -> std::result::Result<Vec<DecodingKey>, TokenRefusal> {
        let read = |c: &Cache| -> Option<Vec<DecodingKey>> {
            if c.fetched.is_none_or(|t| t.elapsed() > KEYS_TTL) {
                return None;
            }
            match kid {
                Some(k) => c.by_kid.get(k).map(|key| vec![key.clone()]),
                None => Some(
                    c.anonymous
                        .iter()
                        .chain(c.by_kid.values())
                        .cloned()
                        .collect(),
                ),
            }
        };
        let lock = |c: &std::sync::RwLock<Cache>| {
            c.read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        let fresh = read(
            &cache
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if let Some(keys) = fresh {
            return Ok(keys);
        }
        let _turn = fetching.lock().await;
        let held = lock(cache);
        let may_fetch = held
            .attempted
            .is_none_or(|t| t.elapsed() >= REFETCH_INTERVAL);
        let held = if read(&held).is_none() && (may_fetch || held.fetched.is_none()) {
            let attempted = Some(Instant::now());
            let next = match self.fetch(url).await {
                Ok((by_kid, anonymous)) => Cache {
                    by_kid,
                    anonymous,
                    fetched: Some(Instant::now()),
                    attempted,
                },
                Err(e) if held.fetched.is_none() => {
                    cache
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .attempted = attempted;
                    return Err(TokenRefusal::KeysUnavailable(e));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refetching the JWKS failed; using the cached keys");
                    Cache { attempted, ..held }
                }
            };
            *cache
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next.clone();
            next
        } else {
            held
        };
        match kid {
            Some(k) => held
                .by_kid
                .get(k)
                .map(|key| vec![key.clone()])
                .ok_or_else(|| {
                    TokenRefusal::Invalid(format!(
                        "the token names key `{k}`, which the identity provider's key set does not \
                     hold"
                    ))
                }),
            None => Ok(held
                .anonymous
                .iter()
                .chain(held.by_kid.values())
                .cloned()
                .collect()),
        }
    }

    /// The claims of `token` signed by one of `keys`.
    fn decode_any(
        &self,
        token: &str,
        keys: &[DecodingKey],
        validation: &Validation,
    ) -> std::result::Result<Value, TokenRefusal> {
        let mut last = TokenRefusal::Invalid(
            "the token names no key (`kid`) and the key set has no key to try".to_owned(),
        );
        for key in keys {
            match self.decode(token, key, validation) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Fetch the key set (found by discovery when `url` is `None`).
    async fn fetch(
        &self,
        url: Option<&str>,
    ) -> std::result::Result<(HashMap<String, DecodingKey>, Vec<DecodingKey>), String> {
        let url = match url {
            Some(u) => u.to_owned(),
            None => {
                let issuer = self.inner.settings.issuer.trim_end_matches('/');
                let doc = format!("{issuer}/.well-known/openid-configuration");
                let meta: Value = self.get_json(&doc).await?;
                if meta
                    .get("issuer")
                    .and_then(Value::as_str)
                    .map(|i| i.trim_end_matches('/'))
                    != Some(issuer)
                {
                    return Err(format!(
                        "the OIDC discovery document at {doc} names another issuer"
                    ));
                }
                meta.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("the OIDC discovery document at {doc} has no jwks_uri"))?
                    .to_owned()
            }
        };
        let set: Value = self.get_json(&url).await?;
        let Some(keys) = set.get("keys").and_then(Value::as_array) else {
            return Err(format!("{url} is not a JSON Web Key Set (no `keys` array)"));
        };
        let mut by_kid = HashMap::new();
        let mut anonymous = Vec::new();
        for k in keys {
            // Keys of other types or uses (encryption keys, say) are skipped, not fatal.
            if k.get("use")
                .and_then(Value::as_str)
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            match jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid, key);
                }
                None => anonymous.push(key),
            }
        }
        if by_kid.is_empty() && anonymous.is_empty() {
            return Err(format!("the key set at {url} holds no usable signing key"));
        }
        Ok((by_kid, anonymous))
    }

    async fn get_json(&self, url: &str) -> std::result::Result<Value, String> {
        let res = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot fetch {url}: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("{url} answered {}", res.status()));
        }
        res.json()
            .await
            .map_err(|e| format!("{url} did not answer JSON: {e}"))
    }

    /// The organisation, workspace and role the claims name.
    fn identity(&self, claims: &Value) -> std::result::Result<TokenIdentity, TokenRefusal> {
        let s = &self.inner.settings;
        let text = |name: &str| {
            claim(claims, name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let workspace = text(&s.claims.workspace).ok_or_else(|| {
            TokenRefusal::Invalid(format!(
                "the token has no `{}` claim naming its workspace (server.jwt.claims.workspace)",
                s.claims.workspace
            ))
        })?;
        let org = text(&s.claims.org)
            .or_else(|| s.default_org.clone())
            .unwrap_or_else(|| DEFAULT_ORG.to_owned());
        let workspace = WorkspaceId::parse(&workspace, &org)
            .map_err(|e| TokenRefusal::Invalid(format!("the token's workspace claim: {e}")))?;
        let role = match claim(claims, &s.claims.role) {
            None => self.inner.default_role.ok_or_else(|| {
                TokenRefusal::Invalid(format!(
                    "the token has no `{}` claim naming its role, and server.jwt.default_role \
                     is not set",
                    s.claims.role
                ))
            })?,
            Some(v) => highest_role(v).ok_or_else(|| {
                TokenRefusal::Invalid(format!(
                    "the token's `{}` claim names no role (viewer, invoker, operator, \
                     developer, admin)",
                    s.claims.role
                ))
            })?,
        };
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .chars()
            .take(200)
            .collect();
        Ok(TokenIdentity {
            workspace,
            role,
            subject,
        })
    }
}

/// At most one key source.
fn check_sources(settings: &JwtSettings) -> Result<()> {
    let sources = [
        settings.jwks_url.is_some(),
        settings.public_key_file.is_some(),
        settings.secret_env.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        return Err(bad(
            "give at most one of `jwks_url`, `public_key_file` and `secret_env` \
             (none: keys are found by OIDC discovery at the issuer)",
        ));
    }
    Ok(())
}

/// The claim at a dotted `path`.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    // A claim whose own name has dots wins over a nested path.
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// The highest role a claim value names (a string, or a list of strings).
fn highest_role(v: &Value) -> Option<Role> {
    match v {
        Value::String(s) => Role::from_str(s).ok(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| Role::from_str(s).ok())
            .max(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use proptest::prelude::*;
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn verifier(extra: impl FnOnce(&mut JwtSettings)) -> JwtVerifier {
        let mut s = JwtSettings::new("https://idp.test/", "agentkit");
        s.secret_env = Some("AGENTKIT_JWT_SECRET".into());
        extra(&mut s);
        JwtVerifier::build(&s, Some(SECRET.to_owned())).unwrap()
    }

    fn token(claims: Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn exp() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[tokio::test]
    async fn claims_map_to_workspace_and_highest_role() {
        let v = verifier(|_| {});
        let t = token(json!({
            "iss": "https://idp.test/", "aud": "agentkit", "exp": exp(), "sub": "alice",
            "org": "acme", "workspace": "prod", "role": ["viewer", "operator", "nonsense"],
        }));
        assert!(JwtVerifier::looks_like_jwt(&t));
        let id = v.verify(&t).await.unwrap();
        assert_eq!(id.workspace, WorkspaceId::new("acme", "prod"));
        assert_eq!(id.role, Role::Operator);
        assert_eq!(id.subject, "alice");
        // Nested claim names and `org/workspace` in one claim.
        let v = verifier(|s| s.claims.role = "realm.role".into());
        let t = token(json!({
            "iss": "https://idp.test/", "aud": ["other", "agentkit"], "exp": exp(),
            "workspace": "globex/dev", "realm": {"role": "developer"},
        }));
        let id = v.verify(&t).await.unwrap();
        assert_eq!(id.workspace, WorkspaceId::new("globex", "dev"));
        assert_eq!(id.role, Role::Developer);
    }

    /// A public key in PEM form (SubjectPublicKeyInfo): `der` is the key's DER.
    fn pem(der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// `server.jwt.public_key_file` with an EC (P-256) or Ed25519 key in PEM form: tokens
    /// signed by its private key verify; those of another key, and an HMAC token keyed with
    /// the public key's own bytes (algorithm confusion), do not; a file holding no key is a
    /// located configuration error.
    #[tokio::test]
    async fn a_pem_public_key_verifies_its_tokens_and_no_others() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
        };
        // SubjectPublicKeyInfo prefixes: id-ecPublicKey + P-256, and Ed25519.
        const P256_SPKI: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
        const ED25519_SPKI: &str = "302a300506032b6570032100";
        let hex = |h: &str| -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        };
        let rng = SystemRandom::new();
        let ec = |rng: &SystemRandom| {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            let mut spki = hex(P256_SPKI);
            spki.extend_from_slice(pair.public_key().as_ref());
            (EncodingKey::from_ec_der(pkcs8.as_ref()), pem(&spki))
        };
        let ed = |rng: &SystemRandom| {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).unwrap();
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let mut spki = hex(ED25519_SPKI);
            spki.extend_from_slice(pair.public_key().as_ref());
            (EncodingKey::from_ed_der(pkcs8.as_ref()), pem(&spki))
        };
        let claims = json!({
            "iss": "https://idp.test/", "aud": "agentkit", "exp": exp(), "sub": "ci",
            "org": "acme", "workspace": "prod", "role": "invoker",
        });
        let dir = tempfile::tempdir().unwrap();
        let verifier_of = |public: &str, name: &str| {
            let file = dir.path().join(name);
            std::fs::write(&file, public).unwrap();
            let mut s = JwtSettings::new("https://idp.test/", "agentkit");
            s.public_key_file = Some(file.display().to_string());
            JwtVerifier::from_settings(&s)
        };
        for (alg, (signing, public), (stranger, _)) in [
            (Algorithm::ES256, ec(&rng), ec(&rng)),
            (Algorithm::EdDSA, ed(&rng), ed(&rng)),
        ] {
            let v = verifier_of(&public, "key.pem").unwrap();
            let sign =
                |key: &EncodingKey| jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap();
            let id = v.verify(&sign(&signing)).await.unwrap();
            assert_eq!(id.workspace, WorkspaceId::new("acme", "prod"));
            assert_eq!(id.role, Role::Invoker);
            match v.verify(&sign(&stranger)).await {
                Err(TokenRefusal::Invalid(r)) => assert!(r.contains("signature"), "{alg:?}: {r}"),
                other => panic!("{alg:?}: another key's token verified: {other:?}"),
            }
            // The public key is public: an HS256 token keyed with it must not pass.
            let confused = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(public.as_bytes()),
            )
            .unwrap();
            assert!(
                matches!(v.verify(&confused).await, Err(TokenRefusal::Invalid(_))),
                "{alg:?}: an HMAC token keyed with the public key verified"
            );
        }
        let err = verifier_of(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "bad.pem",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("server.jwt") && err.contains("no RSA, EC or Ed25519 public key"),
            "{err}"
        );
        let mut s = JwtSettings::new("https://idp.test/", "agentkit");
        s.public_key_file = Some(dir.path().join("missing.pem").display().to_string());
        let err = JwtVerifier::from_settings(&s).err().unwrap().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[tokio::test]
    async fn wrong_issuer_audience_time_or_claims_are_refused_with_reasons() {
        let v = verifier(|_| {});
        let base = json!({
            "iss": "https://idp.test/", "aud": "agentkit", "exp": exp(),
            "workspace": "prod", "role": "admin",
        });
        let with = |k: &str, val: Value| {
            let mut c = base.clone();
            c[k] = val;
            token(c)
        };
        let reason = |t: String| {
            let v = v.clone();
            async move {
                match v.verify(&t).await {
                    Err(TokenRefusal::Invalid(r)) => r,
                    other => panic!("expected a refusal, got {other:?}"),
                }
            }
        };
        assert!(
            reason(with("iss", json!("https://evil.test/")))
                .await
                .contains("issuer")
        );
        assert!(
            reason(with("aud", json!("someone-else")))
                .await
                .contains("audience")
        );
        assert!(reason(with("exp", json!(1_000))).await.contains("expired"));
        assert!(
            reason(with("role", json!("root")))
                .await
                .contains("names no role")
        );
        assert!(
            reason(with("workspace", json!("a~b")))
                .await
                .contains("workspace")
        );
        let mut no_ws = base.clone();
        no_ws.as_object_mut().unwrap().remove("workspace");
        assert!(reason(token(no_ws)).await.contains("`workspace` claim"));
        // Signed with another secret.
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &base,
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
        )
        .unwrap();
        assert!(reason(forged).await.contains("signature"));
        // `alg: none` never verifies.
        let payload = token(base.clone()).split('.').nth(1).unwrap().to_owned();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(v.verify(&none).await.is_err());
    }

    #[test]
    fn settings_errors_name_the_key() {
        let mut s = JwtSettings::new("https://idp.test/", "agentkit");
        s.jwks_url = Some("http://127.0.0.1:1/jwks".into());
        s.public_key_file = Some("/nonexistent".into());
        let e = JwtVerifier::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("at most one"), "{e}");
        let mut s = JwtSettings::new("https://idp.test/", "agentkit");
        s.algorithms = vec!["HS256".into()];
        let e = JwtVerifier::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("does not go with public keys"), "{e}");
        let mut s = JwtSettings::new("https://idp.test/", "agentkit");
        s.default_role = Some("root".into());
        let e = JwtVerifier::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("default_role"), "{e}");
        let mut s = JwtSettings::new("https://idp.test/", "agentkit");
        s.secret_env = Some("AGENTKIT_JWT_UNSET_VARIABLE_FOR_TEST".into());
        let e = JwtVerifier::from_settings(&s).unwrap_err().to_string();
        assert!(e.contains("is not set"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic_and_never_pass(t in ".{0,300}", tail in "[A-Za-z0-9_-]{0,80}") {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let v = verifier(|_| {});
            let shaped = format!("eyJ{tail}.{tail}.{tail}");
            for candidate in [t.as_str(), shaped.as_str()] {
                let _ = JwtVerifier::looks_like_jwt(candidate);
                prop_assert!(rt.block_on(v.verify(candidate)).is_err());
            }
        }
    }
}
