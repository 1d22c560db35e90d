//! Webhooks and events: signed HTTP deliveries (`POST /v1/hooks/{name}`) and named events
//! (`POST /v1/events/{event}`) that start runs.
//!
//! A delivery is signed with the hook's secret, HMAC-SHA256, in one of two ways:
//!
//! - agentkit: `X-Agentkit-Timestamp: <unix seconds>` and
//!   `X-Agentkit-Signature: sha256=<hex of HMAC("<timestamp>.<raw body>")>`; the timestamp
//!   must be within [`MAX_SKEW`] of the server's clock.
//! - GitHub: `X-Hub-Signature-256: sha256=<hex of HMAC(<raw body>)>` with the delivery id
//!   `X-GitHub-Delivery`.
//!
//! Signatures are compared in constant time. Each accepted signature (agentkit) or delivery
//! id (GitHub) is recorded in the store ([`DELIVERIES`], created only if absent), so a replay
//! is refused by every server process sharing the store.
//!
//! Webhooks and event triggers belong to the `default/default` workspace. They are declared
//! in the server's `agentkit.yaml` (`triggers:`), which only the operator edits and whose
//! agents are deployed into `default/default`; a delivery authenticates with the hook's
//! secret, not with a key, so there is no caller whose workspace it could act in, and a
//! workspace key cannot add or change a hook. A run a hook starts carries the principal
//! [`webhook_principal`] (role `invoker` in `default/default`, key id `webhook:<name>`), so
//! policy, audit and approvals attribute it to the hook.

use std::time::Duration;

use agentkit_core::{Error, Result};
use agentkit_runtime::{Expect, RunRecord};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::platform::{Platform, StartRun};

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
    /// `agentkit:<signature hex>` or `github:<delivery id>`.
    pub(crate) replay_id: String,
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
        DeliveryError::Unauthorized(
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
            replay_id: format!("agentkit:{}", hex::encode(&signature)),
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
        return Ok(Verified {
            replay_id: format!("github:{delivery}"),
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
    match json.pointer(pointer) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Ok(other.to_string()),
        None => Err(DeliveryError::BadBody(format!(
            "the body has no value at `{pointer}`, where the hook reads the message"
        ))),
    }
}

/// The principal of the runs webhook `name` starts: role `invoker` in `default/default`,
/// key id `webhook:<name>`.
#[must_use]
pub fn webhook_principal(name: &str) -> agentkit_core::Principal {
    agentkit_core::Principal::new(
        crate::tenancy::DEFAULT_ORG,
        crate::tenancy::DEFAULT_WORKSPACE,
    )
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
        let verified = match verify(&hook.secret, headers, body, now) {
            Ok(v) => v,
            Err(e) => return Ok(Some(Err(e))),
        };
        let message = match message(&hook, body) {
            Ok(m) => m,
            Err(e) => return Ok(Some(Err(e))),
        };
        let id = format!("{name}/{}", verified.replay_id);
        let store = self.runtime.store();
        let recorded = store
            .doc_put(
                DELIVERIES,
                &id,
                json!({"at": agentkit_runtime::model::now_ms()}),
                Expect::Absent,
            )
            .await?;
        if recorded.is_none() {
            return Ok(Some(Err(DeliveryError::Replay(
                "this delivery was accepted before (same signature or delivery id); send a \
                 new one"
                    .into(),
            ))));
        }
        // Hooks belong to `default/default` (see the module docs): the run acts as the hook,
        // with the role `invoker`, so policy and audit name it.
        let mut start = StartRun::new(&hook.target, message).by(webhook_principal(name));
        start.idempotency_key = Some(format!("webhook:{id}"));
        match self.start(start).await {
            Ok(run) => Ok(Some(Ok(run))),
            Err(e) => {
                // Not started: let the sender retry the same delivery.
                store.doc_delete(DELIVERIES, &id, Expect::Any).await?;
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

    /// [`emit_event`](Self::emit_event) on behalf of `principal` (the caller of
    /// `POST /v1/events/{event}`): the runs carry it, like runs started with a key.
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
        assert!(ok.replay_id.starts_with("agentkit:"));
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
        assert_eq!(ok.replay_id, "github:d-1");
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
