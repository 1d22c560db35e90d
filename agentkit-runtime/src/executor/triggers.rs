//! Triggers: runs started by emitted events (webhooks).

use agentkit_core::{Error, Result, StartOptions};
use serde_json::Value;

use super::Runtime;
use crate::sync::{read, write};

impl Runtime {
    /// Start a run of `target` whenever `event` is [emitted](Self::emit). The target must be
    /// registered.
    pub fn on_event(&self, event: impl Into<String>, target: &str) -> Result<()> {
        if self.target(target).is_none() {
            return Err(self.unknown_target(target));
        }
        let mut s = write(&self.inner.subscriptions);
        let subs = s.entry(event.into()).or_default();
        if !subs.iter().any(|t| t == target) {
            subs.push(target.to_owned());
        }
        Ok(())
    }

    /// Emit an event (webhooks call this): start one run of every target subscribed to it,
    /// with `payload` as input, and return their ids. The payload is validated against every
    /// subscriber first, so a payload one of them rejects starts nothing. With an `event_id`,
    /// emitting the same event again (a retried webhook) starts nothing new and returns the
    /// same runs.
    pub async fn emit(
        &self,
        event: &str,
        payload: Value,
        event_id: Option<&str>,
    ) -> Result<Vec<String>> {
        self.emit_as(event, payload, event_id, None).await
    }

    /// [`emit`](Self::emit) on behalf of `principal`: each run's input also carries it as
    /// `principal` (after the payload was validated, when the payload is an object), so the
    /// runs' policy decisions, audit entries and approvals name who emitted the event.
    pub async fn emit_as(
        &self,
        event: &str,
        payload: Value,
        event_id: Option<&str>,
        principal: Option<&agentkit_core::Principal>,
    ) -> Result<Vec<String>> {
        let targets: Vec<String> = read(&self.inner.subscriptions)
            .get(event)
            .cloned()
            .unwrap_or_default();
        for name in &targets {
            let t = self.target(name).ok_or_else(|| self.unknown_target(name))?;
            t.validate(&payload)
                .map_err(|e| Error::InvalidRequest(format!("event `{event}` for `{name}`: {e}")))?;
        }
        let mut payload = payload;
        if let (Some(p), Value::Object(o)) = (principal, &mut payload) {
            let p =
                serde_json::to_value(p).map_err(|e| Error::json("encoding the principal", e))?;
            o.insert("principal".into(), p);
        }
        let mut ids = Vec::with_capacity(targets.len());
        for name in &targets {
            let mut options = StartOptions::new();
            if let Some(id) = event_id {
                options = options.with_idempotency_key(format!("event:{event}:{id}:{name}"));
            }
            ids.push(self.start_run(name, payload.clone(), options).await?);
        }
        Ok(ids)
    }
}
