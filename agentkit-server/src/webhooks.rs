//! Webhooks and events: signed HTTP deliveries (`POST /v1/hooks/{name}`) and named events
//! (`POST /v1/events/{event}`) that start runs. This module holds the webhooks and the
//! `agentkit.yaml` event triggers of `default/default`; the event triggers a workspace
//! declares through the API are in [`triggers`](crate::triggers).
//!
//! A delivery is signed with the hook's secret, HMAC-SHA256, in one of two ways:
//!
//! - agentkit: `X-Agentkit-Timestamp: <unix seconds>` and
//!   `X-Agentkit-Signature: sha256=<hex of HMAC("<timestamp>.<raw body>")>`; the timestamp
//!   must be within [`MAX_SKEW`] of the server's clock.
//! - GitHub: `X-Hub-Signature-256: sha256=<hex of HMAC(<raw body>)>` with the delivery id
//!   `X-GitHub-Delivery`.
//!
//! Signatures are compared in constant time. Each accepted signature is recorded in the store
//! ([`DELIVERIES`], created only if absent), so a replay is refused by every server process
//! sharing the store. GitHub's delivery id is not covered by its signature, so a GitHub
//! delivery is recorded twice, by its signature (the same signed body sent again under
//! another delivery id is a replay) and by its delivery id (GitHub's redelivery of the same
//! id is one too).
//!
//! # Two kinds of webhooks
//!
//! - **Declared in `agentkit.yaml`** (`triggers:` with `type: webhook`, or
//!   [`ServerBuilder::webhook`](crate::ServerBuilder::webhook)): they belong to
//!   `default/default`, whose agents the operator deploys; their secret is in the file (or its
//!   environment). Delivered to `POST /v1/hooks/{name}`.
//! - **Declared by a workspace through the API** ([`WorkspaceHooks`]; `POST /v1/webhooks`,
//!   role `developer`): they belong to the caller's workspace and start its agents and
//!   workflows. The server generates the secret (256 random bits, 64 hex digits), shows it
//!   once (on create and on `POST /v1/webhooks/{name}/rotate`) and stores it sealed with the
//!   credential vault ([`Vault`]: XChaCha20-Poly1305 under the master
//!   key, bound to the hook's workspace and name), never in plain text: verifying an HMAC
//!   needs the secret itself, so it cannot be hashed. Delivered to
//!   `POST /v1/hooks/{org}/{workspace}/{name}`: a workspace's hook names cannot collide with
//!   another's, and an unknown hook answers exactly like a bad signature (401), so the URL
//!   space reveals no workspace's hooks to a sender without their secret. When the master key
//!   is rotated (the new key in `AGENTKIT_MASTER_KEY`, the old one in
//!   `AGENTKIT_MASTER_KEY_PREVIOUS`), the server re-seals hook secrets under the new key when
//!   it starts ([`WorkspaceHooks::reseal`]), like the vault's own secrets.
//!
//! Both are signed and replay-protected the same way, and a delivery authenticates with the
//! hook's secret, not with a key. A run a hook starts carries the principal
//! [`webhook_principal`] (role `invoker`, key id `webhook:<name>`) in the hook's workspace, so
//! policy, audit, approvals and budgets apply in that workspace and name the hook.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Error, Principal, Result};
use agentkit_runtime::{Expect, RunRecord, Store};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::named::NamedDocs;
use crate::platform::{Platform, StartRun};
use crate::tenancy::WorkspaceId;
use crate::vault::Vault;

/// The store collection of accepted deliveries (`<hook>/<signature or delivery id>`).
pub const DELIVERIES: &str = "agentkit.webhook_deliveries";

/// How far a delivery's `X-Agentkit-Timestamp` may be from the server's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(300);

/// A webhook: a signed delivery starts a run of `target`.
#[derive(Clone)]
#[non_exhaustive]
pub struct Webhook {
    /// The agent or workflow to run.
    pub target: String,
    /// The HMAC-SHA256 key deliveries are signed with.
    pub secret: String,
    /// A JSON pointer into the body: that value is the message (a string as is, anything
    /// else as JSON text). `None`: the whole body.
    pub message_pointer: Option<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("target", &self.target)
            .field("secret", &"<redacted>")
            .field("message_pointer", &self.message_pointer)
            .finish()
    }
}

impl Webhook {
    /// A webhook starting runs of `target`, signed with `secret`, whose message is the whole
    /// body.
    #[must_use]
    pub fn new(target: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            secret: secret.into(),
            message_pointer: None,
        }
    }

    /// Take the message from this JSON pointer into the body (`/issue/title`).
    #[must_use]
    pub fn with_message_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.message_pointer = Some(pointer.into());
        self
    }
}

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Unsigned, badly signed, or stale (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Well-formed signature headers whose signature is not the hook secret's (401).
    #[error("{0}")]
    Mismatch(String),
    /// Seen before (409).
    #[error("{0}")]
    Replay(String),
    /// The body is not what the hook reads (400).
    #[error("{0}")]
    BadBody(String),
}

/// A verified delivery: what identifies it for replay protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// Each id the delivery is recorded under (a replay repeats one of them), first the one
    /// its signature gives: `agentkit:<signature hex>`, or `github-signature:<signature hex>`
    /// and `github:<delivery id>`.
    pub(crate) replay_ids: Vec<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"))
}

fn parse_signature(value: &str, name: &str) -> std::result::Result<Vec<u8>, DeliveryError> {
    let hex_part = value.trim().strip_prefix("sha256=").ok_or_else(|| {
        DeliveryError::Unauthorized(format!("`{name}` must be `sha256=<hex HMAC-SHA256>`"))
    })?;
    if hex_part.len() != 64 {
        return Err(DeliveryError::Unauthorized(format!(
            "`{name}` must carry 64 hex digits after `sha256=`"
        )));
    }
    hex::decode(hex_part).map_err(|_| {
        DeliveryError::Unauthorized(format!("`{name}` must carry hex digits after `sha256=`"))
    })
}

fn verify_mac(
    secret: &str,
    parts: &[&[u8]],
    signature: &[u8],
) -> std::result::Result<(), DeliveryError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| DeliveryError::Unauthorized("the hook's secret is unusable".into()))?;
    for p in parts {
        mac.update(p);
    }
    mac.verify_slice(signature).map_err(|_| {
        DeliveryError::Mismatch(
            "the signature does not match: sign with the hook's secret (see the docs of \
             `POST /v1/hooks/{name}`)"
                .into(),
        )
    })
}

/// Check a delivery's signature headers against `secret` at `now` (unix seconds).
pub(crate) fn verify(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> std::result::Result<Verified, DeliveryError> {
    if let Some(sig) = header(headers, "x-agentkit-signature") {
        let signature = parse_signature(sig, "X-Agentkit-Signature")?;
        let ts = header(headers, "x-agentkit-timestamp").ok_or_else(|| {
            DeliveryError::Unauthorized(
                "`X-Agentkit-Timestamp: <unix seconds>` is required with `X-Agentkit-Signature`"
                    .into(),
            )
        })?;
        let ts = ts.trim();
        let t: i64 = ts.parse().map_err(|_| {
            DeliveryError::Unauthorized(
                "`X-Agentkit-Timestamp` must be the unix time in seconds".into(),
            )
        })?;
        let skew = i64::try_from(MAX_SKEW.as_secs()).unwrap_or(i64::MAX);
        if now.abs_diff(t) > skew.unsigned_abs() {
            return Err(DeliveryError::Unauthorized(format!(
                "`X-Agentkit-Timestamp` is more than {} s from the server's time: sign each \
                 delivery when it is sent",
                MAX_SKEW.as_secs()
            )));
        }
        verify_mac(secret, &[ts.as_bytes(), b".", body], &signature)?;
        return Ok(Verified {
            replay_ids: vec![format!("agentkit:{}", hex::encode(&signature))],
        });
    }
    if let Some(sig) = header(headers, "x-hub-signature-256") {
        let signature = parse_signature(sig, "X-Hub-Signature-256")?;
        let delivery = header(headers, "x-github-delivery")
            .map(str::trim)
            .filter(|d| {
                !d.is_empty()
                    && d.len() <= 128
                    && d.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
            })
            .ok_or_else(|| {
                DeliveryError::Unauthorized(
                    "`X-GitHub-Delivery` (the delivery id, up to 128 printable characters) is \
                     required with `X-Hub-Signature-256`"
                        .into(),
                )
            })?;
        verify_mac(secret, &[body], &signature)?;
        // The delivery id is not signed: anyone who saw a delivery could send its body and
        // signature again under a new id. The signature (of the body) is the replay id too.
        return Ok(Verified {
            replay_ids: vec![
                format!("github-signature:{}", hex::encode(&signature)),
                format!("github:{delivery}"),
            ],
        });
    }
    Err(DeliveryError::Unauthorized(
        "sign the delivery: `X-Agentkit-Timestamp: <unix seconds>` and `X-Agentkit-Signature: \
         sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">` with the hook's secret (or \
         GitHub's `X-Hub-Signature-256` with `X-GitHub-Delivery`)"
            .into(),
    ))
}

/// The message a delivery's body gives the agent.
pub(crate) fn message(hook: &Webhook, body: &[u8]) -> std::result::Result<String, DeliveryError> {
    let Some(pointer) = &hook.message_pointer else {
        return String::from_utf8(body.to_vec())
            .map_err(|_| DeliveryError::BadBody("the body must be UTF-8 text".into()));
    };
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        DeliveryError::BadBody(format!(
            "the body must be JSON (the hook reads `{pointer}` from it): {e}"
        ))
    })?;
    text_at(&json, pointer).ok_or_else(|| {
        DeliveryError::BadBody(format!(
            "the body has no value at `{pointer}`, where the hook reads the message"
        ))
    })
}

/// The principal of the runs the `agentkit.yaml` webhook `name` starts: role `invoker` in
/// `default/default`, key id `webhook:<name>`.
#[must_use]
pub fn webhook_principal(name: &str) -> Principal {
    workspace_webhook_principal(&WorkspaceId::default_workspace(), name)
}

/// The principal of the runs webhook `name` of workspace `ws` starts: role `invoker` in `ws`,
/// key id `webhook:<name>`.
#[must_use]
pub fn workspace_webhook_principal(ws: &WorkspaceId, name: &str) -> Principal {
    Principal::new(&ws.org, &ws.workspace)
        .with_role(crate::tenancy::Role::Invoker.as_str())
        .with_key_id(format!("webhook:{name}"))
}

impl Platform {
    /// The webhook `name`, if this server has it.
    #[must_use]
    pub fn webhook(&self, name: &str) -> Option<Webhook> {
        agentkit_core::sync::read(&self.ops.webhooks)
            .get(name)
            .cloned()
    }

    /// Accept a delivery to webhook `name` (`Ok(None)`: no such hook): verify its signature
    /// at `now` (unix seconds), refuse a replay, and start a run of the hook's target with
    /// the message.
    pub async fn deliver(
        &self,
        name: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Option<std::result::Result<RunRecord, DeliveryError>>> {
        let Some(hook) = self.webhook(name) else {
            return Ok(None);
        };
        // Hooks of `agentkit.yaml` belong to `default/default` (see the module docs): the run
        // acts as the hook, with the role `invoker`, so policy and audit name it.
        self.accept_delivery(&hook, name, webhook_principal(name), headers, body, now)
            .await
            .map(Some)
    }

    /// Verify a delivery to `hook` (known as `key` among the deliveries), refuse a replay, and
    /// start a run of the hook's target as `principal` (in its workspace).
    pub(crate) async fn accept_delivery(
        &self,
        hook: &Webhook,
        key: &str,
        principal: Principal,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<std::result::Result<RunRecord, DeliveryError>> {
        let verified = match verify(&hook.secret, headers, body, now) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let message = match message(hook, body) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        let ids: Vec<String> = verified
            .replay_ids
            .iter()
            .map(|r| format!("{key}/{r}"))
            .collect();
        let store = self.runtime.store();
        let at = agentkit_runtime::model::now_ms();
        for (n, id) in ids.iter().enumerate() {
            let recorded = store
                .doc_put(DELIVERIES, id, json!({"at": at}), Expect::Absent)
                .await?;
            if recorded.is_none() {
                // Seen before under this id: forget the ids recorded for it just now.
                for earlier in &ids[..n] {
                    store.doc_delete(DELIVERIES, earlier, Expect::Any).await?;
                }
                return Ok(Err(DeliveryError::Replay(
                    "this delivery was accepted before (same signature or delivery id); send \
                     a new one"
                        .into(),
                )));
            }
        }
        let mut start = StartRun::new(&hook.target, message).by(principal);
        // A digest: delivery ids may hold characters idempotency keys may not.
        start.idempotency_key = Some(format!(
            "webhook:{}",
            hex::encode(Sha256::digest(ids.join("\n").as_bytes()))
        ));
        match self.start(start).await {
            Ok(run) => Ok(Ok(run)),
            Err(e) => {
                // Not started: let the sender retry the same delivery.
                for id in &ids {
                    store.doc_delete(DELIVERIES, id, Expect::Any).await?;
                }
                Err(e)
            }
        }
    }

    /// Emit `event`: start a run of every target its triggers name, with `payload` as input
    /// (`NotFound` when no trigger listens to it). With `event_id`, emitting it again starts
    /// nothing new and returns the same runs.
    pub async fn emit_event(
        &self,
        event: &str,
        payload: Value,
        event_id: Option<&str>,
    ) -> Result<Vec<RunRecord>> {
        self.emit_event_as(event, payload, event_id, None).await
    }

    /// [`emit_event`](Self::emit_event) on behalf of `principal`: the runs carry it, like
    /// runs started with a key. Only the `agentkit.yaml` triggers: `POST /v1/events/{event}`
    /// calls [`emit_in_workspace`](Self::emit_in_workspace), which adds the workspace's own.
    pub async fn emit_event_as(
        &self,
        event: &str,
        payload: Value,
        event_id: Option<&str>,
        principal: Option<&agentkit_core::Principal>,
    ) -> Result<Vec<RunRecord>> {
        let listened = agentkit_core::sync::read(&self.ops.events)
            .iter()
            .any(|(e, _)| e == event);
        if !listened {
            return Err(Error::not_found(
                "event trigger",
                event,
                "declare a trigger with `type: event` and this `event` in agentkit.yaml",
            ));
        }
        let ids = self
            .runtime
            .emit_as(event, payload, event_id, principal)
            .await?;
        let mut runs = Vec::with_capacity(ids.len());
        for id in ids {
            runs.push(self.runtime.get(&id).await?);
        }
        Ok(runs)
    }

    /// Register webhooks and event triggers (their targets must be deployed).
    pub(crate) async fn add_triggers(
        &self,
        hooks: Vec<(String, Webhook)>,
        events: Vec<(String, String)>,
    ) -> Result<()> {
        for (name, hook) in hooks {
            if hook.secret.is_empty() {
                return Err(Error::InvalidRequest(format!(
                    "webhook `{name}` has an empty secret; set `secret` (e.g. `${{WEBHOOK_SECRET}}`)"
                )));
            }
            self.ensure_target(&hook.target).await.map_err(|e| {
                Error::InvalidRequest(format!("webhook `{name}`: target `{}`: {e}", hook.target))
            })?;
            agentkit_core::sync::write(&self.ops.webhooks).insert(name, hook);
        }
        for (event, target) in events {
            self.ensure_target(&target).await.map_err(|e| {
                Error::InvalidRequest(format!("event trigger `{event}`: target `{target}`: {e}"))
            })?;
            self.runtime.on_event(event.clone(), &target)?;
            agentkit_core::sync::write(&self.ops.events).push((event, target));
        }
        Ok(())
    }
}

/// The store collection of the webhooks workspaces declare through the API, by
/// `<org>/<workspace>/<name>`.
pub const WORKSPACE_HOOKS: &str = "agentkit.workspace_webhooks";

/// The longest JSON pointer a hook reads its message from.
const MAX_POINTER_LEN: usize = 512;

/// A webhook of a workspace as stored: its secret sealed with the vault.
#[derive(Serialize, Deserialize)]
struct StoredHook {
    /// The agent or workflow, as the workspace names it.
    target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message_pointer: Option<String>,
    /// The sealed secret (see [`Vault`]).
    secret: Value,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    secret_rotated_at: i64,
}

/// A webhook of a workspace as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct HookInfo {
    /// Its name in the workspace.
    pub name: String,
    /// The agent or workflow of the workspace a delivery starts.
    pub target: String,
    /// The JSON pointer into the body the message is read from (absent: the whole body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_pointer: Option<String>,
    /// Where to deliver: `/v1/hooks/{org}/{workspace}/{name}` on this server.
    pub url: String,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
    /// The key that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// When its secret was made (ms since the Unix epoch).
    pub secret_rotated_at: i64,
}

/// A webhook just created, or whose secret was just rotated, with its secret: shown this
/// once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct HookWithSecret {
    /// The webhook.
    #[serde(flatten)]
    pub hook: HookInfo,
    /// The HMAC-SHA256 key deliveries are signed with: 64 hex digits (256 random bits). It is
    /// not shown again; rotate it to get a new one.
    pub secret: String,
}

/// What a new workspace webhook is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NewHook {
    /// Its name: 1 to 64 letters, digits, `_` or `-`.
    pub name: String,
    /// The agent or workflow of the workspace a delivery starts.
    pub target: String,
    /// Read the message from this JSON pointer into the body (`/issue/title`); absent: the
    /// whole body is the message.
    #[serde(default)]
    pub message_pointer: Option<String>,
}

impl NewHook {
    /// A hook `name` starting runs of `target` with the whole body as the message.
    #[must_use]
    pub fn new(name: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            target: target.into(),
            message_pointer: None,
        }
    }

    /// Read the message from this JSON pointer into the body.
    #[must_use]
    pub fn with_message_pointer(mut self, pointer: impl Into<String>) -> Self {
        self.message_pointer = Some(pointer.into());
        self
    }
}

/// Check a workspace webhook's name: 1 to 64 letters, digits, `_` or `-`.
///
/// # Errors
///
/// What is wrong with it.
pub fn check_hook_name(name: &str) -> Result<()> {
    crate::named::check_name("webhook", name, "it is part of the delivery URL")
}

/// Check a JSON pointer a hook (or a trigger's message template) reads from.
pub(crate) fn check_pointer(pointer: &str) -> Result<()> {
    if pointer.len() <= MAX_POINTER_LEN && (pointer.is_empty() || pointer.starts_with('/')) {
        return Ok(());
    }
    Err(Error::InvalidRequest(format!(
        "`message_pointer` must be a JSON pointer (RFC 6901) such as `/issue/title`: empty or \
         starting with `/`, at most {MAX_POINTER_LEN} characters"
    )))
}

/// The text of the value at `pointer` in `json`: a string as is, anything else as JSON text;
/// `None` when nothing is there.
pub(crate) fn text_at(json: &Value, pointer: &str) -> Option<String> {
    match json.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A new secret: 256 random bits as 64 hex digits.
fn new_secret() -> Result<String> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| Error::Unavailable {
        what: "randomness".into(),
        message: format!("the operating system gave no random bytes: {e}"),
    })?;
    Ok(hex::encode(k))
}

/// A delivery to a workspace hook whose signature does not verify, or to no hook at all.
fn no_match() -> DeliveryError {
    DeliveryError::Mismatch(
        "no webhook at this URL accepts this signature: check the URL \
         (`/v1/hooks/{org}/{workspace}/{name}`, as `GET /v1/webhooks` shows it) and sign with \
         the hook's secret"
            .into(),
    )
}

fn no_hook(name: &str) -> Error {
    Error::not_found(
        "webhook",
        name,
        "list the workspace's webhooks with `GET /v1/webhooks`",
    )
}

/// The webhooks workspaces declare through the API (see the [module docs](self)): stored in
/// the [`Store`] (collection [`WORKSPACE_HOOKS`]), their secrets sealed with the [`Vault`].
/// Every server process sharing the store serves them. Cheap to clone.
#[derive(Clone)]
pub struct WorkspaceHooks {
    docs: NamedDocs,
    vault: Vault,
}

impl std::fmt::Debug for WorkspaceHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceHooks")
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl WorkspaceHooks {
    /// The workspace webhooks in `store`, their secrets sealed with `vault`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, vault: Vault) -> Self {
        Self {
            docs: NamedDocs::new(store, WORKSPACE_HOOKS),
            vault,
        }
    }

    /// The vault slot of a hook's secret: no secret of `/v1/secrets` can have it.
    fn slot(ws: &WorkspaceId, name: &str) -> String {
        format!("webhook:{}/{}/{name}", ws.org, ws.workspace)
    }

    /// The path deliveries to hook `name` of `ws` are posted to.
    #[must_use]
    pub fn url(ws: &WorkspaceId, name: &str) -> String {
        format!("/v1/hooks/{}/{}/{name}", ws.org, ws.workspace)
    }

    fn info(ws: &WorkspaceId, name: &str, h: &StoredHook) -> HookInfo {
        HookInfo {
            name: name.to_owned(),
            target: h.target.clone(),
            message_pointer: h.message_pointer.clone(),
            url: Self::url(ws, name),
            created_at: h.created_at,
            created_by: h.created_by.clone(),
            secret_rotated_at: h.secret_rotated_at,
        }
    }

    fn parse(name: &str, value: Value) -> Result<StoredHook> {
        serde_json::from_value(value).map_err(|e| Error::json(format!("reading webhook {name}"), e))
    }

    /// Create webhook `hook` in `ws`, made by `by` (a key id): its target must be an agent or
    /// workflow deployed in `ws`. Returns it with its new secret (shown this once).
    ///
    /// # Errors
    ///
    /// A bad name, pointer or target; a name already used in `ws` (also by an
    /// `agentkit.yaml` hook, in `default/default`); no vault master key; the store's error.
    pub async fn create(
        &self,
        platform: &Platform,
        ws: &WorkspaceId,
        hook: NewHook,
        by: Option<&str>,
    ) -> Result<HookWithSecret> {
        check_hook_name(&hook.name)?;
        if let Some(p) = &hook.message_pointer {
            check_pointer(p)?;
        }
        crate::named::check_target(
            platform,
            ws,
            &format!("webhook `{}`", hook.name),
            &hook.target,
        )
        .await?;
        if ws.is_default() && platform.webhook(&hook.name).is_some() {
            return Err(Error::invalid_state(
                format!("webhook {}", hook.name),
                "is declared in agentkit.yaml; choose another name",
            ));
        }
        let secret = new_secret()?;
        let now = agentkit_runtime::model::now_ms();
        let stored = StoredHook {
            target: hook.target,
            message_pointer: hook.message_pointer,
            secret: self
                .vault
                .seal_value(&Self::slot(ws, &hook.name), &secret)?,
            created_at: now,
            created_by: by.map(str::to_owned),
            secret_rotated_at: now,
        };
        let value = serde_json::to_value(&stored)
            .map_err(|e| Error::json(format!("writing webhook {}", hook.name), e))?;
        if !self.docs.create(ws, &hook.name, value).await? {
            return Err(Error::invalid_state(
                format!("webhook {}", hook.name),
                "already exists in this workspace; delete it first, or rotate its secret \
                 (`POST /v1/webhooks/{name}/rotate`)",
            ));
        }
        Ok(HookWithSecret {
            hook: Self::info(ws, &hook.name, &stored),
            secret,
        })
    }

    /// The webhooks of `ws`, by name (no secrets).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn list(&self, ws: &WorkspaceId) -> Result<Vec<HookInfo>> {
        let mut out = Vec::new();
        for (name, doc) in self.docs.list(ws).await? {
            out.push(Self::info(ws, &name, &Self::parse(&name, doc.value)?));
        }
        Ok(out)
    }

    /// Webhook `name` of `ws` (no secret), if it exists.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn get(&self, ws: &WorkspaceId, name: &str) -> Result<Option<HookInfo>> {
        if check_hook_name(name).is_err() {
            return Ok(None);
        }
        match self.docs.get(ws, name).await? {
            Some(doc) => Ok(Some(Self::info(ws, name, &Self::parse(name, doc.value)?))),
            None => Ok(None),
        }
    }

    /// Give webhook `name` of `ws` a new secret (the old one stops verifying at once);
    /// returns it with the secret, shown this once.
    ///
    /// # Errors
    ///
    /// No such hook ([`Error::NotFound`]), no vault master key, or the store's error.
    pub async fn rotate(&self, ws: &WorkspaceId, name: &str) -> Result<HookWithSecret> {
        check_hook_name(name).map_err(|_| no_hook(name))?;
        for _ in 0..16 {
            let doc = self
                .docs
                .get(ws, name)
                .await?
                .ok_or_else(|| no_hook(name))?;
            let mut stored = Self::parse(name, doc.value)?;
            let secret = new_secret()?;
            stored.secret = self.vault.seal_value(&Self::slot(ws, name), &secret)?;
            stored.secret_rotated_at = agentkit_runtime::model::now_ms();
            let value = serde_json::to_value(&stored)
                .map_err(|e| Error::json(format!("writing webhook {name}"), e))?;
            if self.docs.replace(ws, name, value, doc.revision).await? {
                return Ok(HookWithSecret {
                    hook: Self::info(ws, name, &stored),
                    secret,
                });
            }
        }
        Err(Error::invalid_state(
            format!("webhook {name}"),
            "kept changing while its secret was rotated; try again",
        ))
    }

    /// Delete webhook `name` of `ws`; whether it existed. Deliveries to it are refused from
    /// then on.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn delete(&self, ws: &WorkspaceId, name: &str) -> Result<bool> {
        if check_hook_name(name).is_err() {
            return Ok(false);
        }
        self.docs.delete(ws, name).await
    }

    /// Re-seal under the vault's current master key every hook secret sealed under a previous
    /// one. Each hook is rewritten only at the revision it was read at (a hook rotated or
    /// deleted meanwhile is left as it is), so running it twice, or on two servers at once,
    /// is harmless.
    ///
    /// # Errors
    ///
    /// No master key, or the store's error. Hooks no key opens are listed (as
    /// `org/workspace/name`), not an error.
    pub async fn reseal(&self) -> Result<crate::vault::Resealed> {
        use crate::vault::Reseal;
        crate::vault::reseal_collection(self.docs.store(), WORKSPACE_HOOKS, |doc| {
            let Ok(mut stored) = serde_json::from_value::<StoredHook>(doc.value.clone()) else {
                return Ok(Reseal::Unreadable);
            };
            let slot = format!("webhook:{}", doc.id);
            Ok(
                match self.vault.open_sealed_with_key(
                    &format!("of webhook {}", doc.id),
                    &slot,
                    stored.secret.clone(),
                ) {
                    Ok((_, true)) => Reseal::Current,
                    Ok((secret, false)) => {
                        stored.secret = self.vault.seal_value(&slot, &secret)?;
                        Reseal::Replace(
                            serde_json::to_value(&stored).map_err(|e| {
                                Error::json(format!("writing webhook {}", doc.id), e)
                            })?,
                        )
                    }
                    Err(_) => Reseal::Unreadable,
                },
            )
        })
        .await
    }

    /// Accept a delivery to webhook `name` of workspace `org/workspace` at `now` (unix
    /// seconds): verify its signature with the hook's secret, refuse a replay, and start a
    /// run of its target in that workspace as [`workspace_webhook_principal`]. An unknown
    /// workspace or hook is refused exactly like a bad signature.
    ///
    /// # Errors
    ///
    /// The store's error, a secret the vault cannot open, or the run's start failing.
    #[allow(clippy::too_many_arguments)]
    pub async fn deliver(
        &self,
        platform: &Platform,
        org: &str,
        workspace: &str,
        name: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<std::result::Result<RunRecord, DeliveryError>> {
        // An unknown hook is refused like a known one with a wrong secret, with the same
        // work: a store lookup, a secret opened by the vault (the vault's decoy, sealed once
        // per process), the headers checked and the HMAC computed with it; a well-formed
        // signature does not match. Same status, same body.
        let unknown = || {
            let key = self
                .vault
                .decoy()
                .and_then(|(slot, sealed)| {
                    // As for a known hook: its document read, its secret opened.
                    let doc = json!({"target": "decoy", "secret": sealed, "created_at": 0,
                                     "secret_rotated_at": 0});
                    let stored = Self::parse("decoy", doc).ok()?;
                    self.vault
                        .open_sealed("of the decoy webhook", slot, stored.secret)
                        .ok()
                })
                .unwrap_or_else(|| new_secret().unwrap_or_default());
            match verify(&key, headers, body, now) {
                Err(e @ DeliveryError::Unauthorized(_)) => e,
                _ => no_match(),
            }
        };
        let named = WorkspaceId::parse(&format!("{org}/{workspace}"), org)
            .ok()
            .filter(|_| check_hook_name(name).is_ok());
        // A name that cannot be a hook is looked up too (as one that is not there).
        let id = named
            .as_ref()
            .map_or_else(|| "~/~/~".to_owned(), |ws| NamedDocs::id(ws, name));
        let found = self.docs.store().doc_get(WORKSPACE_HOOKS, &id).await?;
        let (Some(ws), Some(doc)) = (named, found) else {
            return Ok(Err(unknown()));
        };
        let stored = Self::parse(name, doc.value)?;
        let secret = match self.vault.open_sealed(
            &format!("of webhook {name}"),
            &Self::slot(&ws, name),
            stored.secret,
        ) {
            Ok(secret) => secret,
            Err(e) => {
                // The sender learns nothing of the server's keys; the operator reads why.
                tracing::warn!(workspace = %ws, webhook = name, error = %e, "a webhook's secret does not open; deliveries to it fail until it does");
                return Err(Error::Unavailable {
                    what: "this webhook".into(),
                    message: "the server cannot verify deliveries to it now (its operator \
                              finds why in the server's log); retry later"
                        .into(),
                });
            }
        };
        let mut hook = Webhook::new(stored.target, secret);
        hook.message_pointer = stored.message_pointer;
        let key = format!("ws:{}", NamedDocs::id(&ws, name));
        match platform
            .accept_delivery(
                &hook,
                &key,
                workspace_webhook_principal(&ws, name),
                headers,
                body,
                now,
            )
            .await?
        {
            // A wrong signature looks like an unknown hook.
            Err(DeliveryError::Mismatch(_)) => Ok(Err(no_match())),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sign(secret: &str, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        for p in parts {
            mac.update(p);
        }
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn both_signature_schemes_verify_and_say_what_is_wrong() {
        let body = br#"{"a":1}"#;
        let sig = sign("s3cret", &[b"1000.", body]);
        let ok = verify(
            "s3cret",
            &headers(&[
                ("x-agentkit-timestamp", "1000"),
                ("x-agentkit-signature", &sig),
            ]),
            body,
            1100,
        )
        .unwrap();
        assert_eq!(ok.replay_ids.len(), 1);
        assert!(ok.replay_ids[0].starts_with("agentkit:"));
        let stale = verify(
            "s3cret",
            &headers(&[
                ("x-agentkit-timestamp", "1000"),
                ("x-agentkit-signature", &sig),
            ]),
            body,
            1000 + 301,
        )
        .unwrap_err();
        assert!(stale.to_string().contains("300 s"), "{stale}");
        let wrong = verify(
            "other",
            &headers(&[
                ("x-agentkit-timestamp", "1000"),
                ("x-agentkit-signature", &sig),
            ]),
            body,
            1000,
        )
        .unwrap_err();
        assert!(wrong.to_string().contains("does not match"));
        let gh = sign("s3cret", &[body]);
        let ok = verify(
            "s3cret",
            &headers(&[("x-hub-signature-256", &gh), ("x-github-delivery", "d-1")]),
            body,
            0,
        )
        .unwrap();
        assert_eq!(
            ok.replay_ids,
            [
                format!("github-signature:{}", &gh["sha256=".len()..]),
                "github:d-1".into()
            ]
        );
        let no_id = verify("s3cret", &headers(&[("x-hub-signature-256", &gh)]), body, 0);
        assert!(no_id.unwrap_err().to_string().contains("X-GitHub-Delivery"));
        let unsigned = verify("s3cret", &HeaderMap::new(), body, 0).unwrap_err();
        assert!(unsigned.to_string().contains("X-Agentkit-Signature"));
    }

    #[test]
    fn the_message_is_the_pointer_or_the_body() {
        let hook = Webhook::new("t", "s");
        assert_eq!(message(&hook, b"hello").unwrap(), "hello");
        let hook = hook.with_message_pointer("/issue/title");
        let body = br#"{"issue":{"title":"Crash","n":3}}"#;
        assert_eq!(message(&hook, body).unwrap(), "Crash");
        let hook = Webhook::new("t", "s").with_message_pointer("/issue");
        assert_eq!(message(&hook, body).unwrap(), r#"{"n":3,"title":"Crash"}"#);
        let hook = Webhook::new("t", "s").with_message_pointer("/nope");
        assert!(matches!(
            message(&hook, body),
            Err(DeliveryError::BadBody(_))
        ));
        assert!(matches!(
            message(&hook, b"{"),
            Err(DeliveryError::BadBody(_))
        ));
    }

    proptest::proptest! {
        /// Any header values (any bytes a header can carry) and any clock are refused or
        /// accepted, never a panic.
        #[test]
        fn random_headers_never_panic_the_signature_parser(
            sig in proptest::collection::vec(proptest::num::u8::ANY, 0..100),
            ts in proptest::collection::vec(proptest::num::u8::ANY, 0..30),
            prefixed in proptest::prelude::any::<bool>(),
            github in proptest::prelude::any::<bool>(),
            delivery in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            now in proptest::prelude::any::<i64>(),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut sig = sig;
            if prefixed {
                let mut p = b"sha256=".to_vec();
                p.extend(sig);
                sig = p;
            }
            let mut h = HeaderMap::new();
            let (sig_name, ts_name) = if github {
                ("x-hub-signature-256", "x-github-delivery")
            } else {
                ("x-agentkit-signature", "x-agentkit-timestamp")
            };
            if let Ok(v) = http::HeaderValue::from_bytes(&sig) {
                h.insert(sig_name, v);
            }
            if let Ok(v) = http::HeaderValue::from_bytes(if github { &delivery } else { &ts }) {
                h.insert(ts_name, v);
            }
            let r = verify("secret", &h, &body, now);
            proptest::prop_assert!(r.is_err(), "random signatures never verify");
        }
    }
}
