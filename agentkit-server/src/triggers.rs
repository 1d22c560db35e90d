//! Event triggers: `POST /v1/events/{event}` starts a run for every trigger of the caller's
//! workspace that listens to the event.
//!
//! # Two kinds of event triggers
//!
//! - **Declared in `agentkit.yaml`** (`triggers:` with `type: event`, or
//!   [`ServerBuilder::event_trigger`](crate::ServerBuilder::event_trigger)): they belong to
//!   `default/default`; the event's payload is the run's input as is.
//! - **Declared by a workspace through the API** ([`WorkspaceTriggers`]; `POST /v1/triggers`,
//!   role `developer`): they belong to the caller's workspace, start its agents and
//!   workflows, and are stored in the [`Store`] (collection [`WORKSPACE_TRIGGERS`], by
//!   `<org>/<workspace>/<name>`), so every server process sharing the store serves them.
//!   Another workspace's triggers are never listed, found, or started by its events.
//!
//! A run a workspace trigger starts is an ordinary run of its target in that workspace: its
//! message is the payload's `message` (as the `agentkit.yaml` triggers read it), or the
//! trigger's [`MessageTemplate`] filled from the payload; it carries the principal of the key
//! that emitted the event, so policy, audit, approvals and budgets apply as for a run that key
//! started. An `Idempotency-Key` on the emit makes a retried emit start nothing new.

use std::sync::Arc;

use agentkit_core::{Error, Principal, Result};
use agentkit_runtime::{RunRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::named::{NamedDocs, check_name};
use crate::platform::{Platform, StartRun};
use crate::tenancy::{Scope, WorkspaceId};
use crate::webhooks::{check_pointer, text_at};

/// The store collection of the event triggers workspaces declare through the API, by
/// `<org>/<workspace>/<name>`.
pub const WORKSPACE_TRIGGERS: &str = "agentkit.workspace_triggers";

/// The longest message template.
pub const MAX_TEMPLATE_LEN: usize = 4096;

/// The longest event name a workspace trigger listens to.
pub const MAX_EVENT_LEN: usize = 128;

/// A trigger's message: text with `{/json/pointer}` placeholders filled from the event's
/// payload (a string as is, anything else as JSON text; `{}` is the whole payload); `{{` and
/// `}}` are literal braces. `"Deployed {/service} at {/version}"` with the payload
/// `{"service": "api", "version": 7}` gives `Deployed api at 7`.
///
/// ```
/// use agentkit_server::triggers::MessageTemplate;
///
/// let t = MessageTemplate::parse("Deployed {/service} at {/version}").unwrap();
/// let payload = serde_json::json!({"service": "api", "version": 7});
/// assert_eq!(t.render(&payload).unwrap(), "Deployed api at 7");
/// assert!(MessageTemplate::parse("Deployed {service}").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Pointer(String),
}

impl MessageTemplate {
    /// Parse `template`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] saying what is wrong and where: an unclosed `{`, a lone `}`,
    /// a placeholder that is not a JSON pointer, or a template over [`MAX_TEMPLATE_LEN`]
    /// bytes.
    pub fn parse(template: &str) -> Result<Self> {
        if template.len() > MAX_TEMPLATE_LEN {
            return Err(Error::InvalidRequest(format!(
                "the `message` template has {} bytes; at most {MAX_TEMPLATE_LEN} are allowed",
                template.len()
            )));
        }
        let bad = |at: usize, what: &str| {
            Error::InvalidRequest(format!(
                "the `message` template is not valid at byte {at}: {what} (write `{{/json/pointer}}` \
                 for a value of the payload, `{{{{` and `}}}}` for literal braces)"
            ))
        };
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = template.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    text.push('}');
                }
                '}' => return Err(bad(at, "a `}` closes nothing")),
                '{' => {
                    let rest = &template[at + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| bad(at, "this `{` is not closed"))?;
                    let pointer = &rest[..end];
                    if pointer.contains('{') {
                        return Err(bad(at, "a placeholder holds a `{`"));
                    }
                    check_pointer(pointer).map_err(|_| {
                        bad(
                            at,
                            &format!(
                                "`{{{}}}` is not a JSON pointer (RFC 6901: empty or starting \
                                 with `/`)",
                                pointer.escape_debug()
                            ),
                        )
                    })?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Pointer(pointer.to_owned()));
                    // Skip the pointer and its `}`.
                    while chars.next_if(|&(i, _)| i <= at + 1 + end).is_some() {}
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { parts })
    }

    /// The message for `payload`.
    ///
    /// # Errors
    ///
    /// The first placeholder whose pointer has no value in `payload` (as the message to
    /// answer with).
    pub fn render(&self, payload: &Value) -> std::result::Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Pointer(ptr) => match text_at(payload, ptr) {
                    Some(v) => out.push_str(&v),
                    None => {
                        return Err(format!("the payload has no value at `{ptr}`"));
                    }
                },
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for MessageTemplate {
    /// The template as written (braces doubled), which parses back to the same template.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.parts {
            match p {
                Part::Text(t) => f.write_str(&t.replace('{', "{{").replace('}', "}}"))?,
                Part::Pointer(ptr) => write!(f, "{{{ptr}}}")?,
            }
        }
        Ok(())
    }
}

/// Check an event name a workspace trigger listens to: 1 to [`MAX_EVENT_LEN`] letters,
/// digits, `_`, `-`, `.` or `:` (it is a path segment of `POST /v1/events/{event}`).
///
/// # Errors
///
/// What is wrong with it.
pub fn check_event_name(event: &str) -> Result<()> {
    let ok = !event.is_empty()
        && event.len() <= MAX_EVENT_LEN
        && event
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "event name `{}` is not valid: use 1 to {MAX_EVENT_LEN} letters, digits, `_`, `-`, \
             `.` or `:` (it is sent as `POST /v1/events/{{event}}`)",
            event.escape_debug()
        )))
    }
}

/// Check a workspace trigger's name: 1 to 64 letters, digits, `_` or `-`.
///
/// # Errors
///
/// What is wrong with it.
pub fn check_trigger_name(name: &str) -> Result<()> {
    check_name("trigger", name, "it is part of `/v1/triggers/{name}`")
}

/// What a new workspace event trigger is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NewTrigger {
    /// Its name in the workspace: 1 to 64 letters, digits, `_` or `-`.
    pub name: String,
    /// The event it listens to (`POST /v1/events/{event}`): 1 to 128 letters, digits, `_`,
    /// `-`, `.` or `:`.
    pub event: String,
    /// The agent or workflow of the workspace a matching event starts.
    pub target: String,
    /// The run's message: a template with `{/json/pointer}` placeholders filled from the
    /// event's payload (`"Deployed {/service}"`). Absent: the payload's `message`, as the
    /// `agentkit.yaml` event triggers read it.
    #[serde(default)]
    pub message: Option<String>,
}

impl NewTrigger {
    /// A trigger `name` starting runs of `target` on `event`, with the payload's `message`.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        event: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            event: event.into(),
            target: target.into(),
            message: None,
        }
    }

    /// Make the run's message from this template (see [`MessageTemplate`]).
    #[must_use]
    pub fn with_message(mut self, template: impl Into<String>) -> Self {
        self.message = Some(template.into());
        self
    }
}

/// A workspace event trigger as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct TriggerInfo {
    /// Its name in the workspace.
    pub name: String,
    /// The event it listens to.
    pub event: String,
    /// The agent or workflow of the workspace it starts.
    pub target: String,
    /// The message template (absent: the payload's `message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was created (ms since the Unix epoch).
    pub created_at: i64,
    /// The key that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

impl TriggerInfo {
    /// The message of the run this trigger starts for `payload`.
    fn message_for(&self, payload: &Value) -> Result<String> {
        let fix = "send `{\"message\": \"...\"}`, or give the trigger a `message` template \
                   such as `\"Deployed {/service}\"`";
        let rendered = match &self.message {
            Some(t) => MessageTemplate::parse(t)?.render(payload),
            None => match payload.get("message") {
                Some(Value::String(m)) => Ok(m.clone()),
                _ => Err("the payload has no `message` string".to_owned()),
            },
        };
        rendered.map_err(|why| {
            Error::InvalidRequest(format!(
                "event `{}`: {why}, which trigger `{}` makes the run's message from; {}",
                self.event,
                self.name,
                if self.message.is_some() {
                    "send a payload with that value"
                } else {
                    fix
                }
            ))
        })
    }
}

/// The event triggers workspaces declare through the API (see the [module docs](self)).
/// Cheap to clone.
#[derive(Clone)]
pub struct WorkspaceTriggers {
    docs: NamedDocs,
}

impl std::fmt::Debug for WorkspaceTriggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceTriggers").finish_non_exhaustive()
    }
}

fn no_trigger(name: &str) -> Error {
    Error::not_found(
        "trigger",
        name,
        "list the workspace's triggers with `GET /v1/triggers`",
    )
}

impl WorkspaceTriggers {
    /// The workspace triggers in `store`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            docs: NamedDocs::new(store, WORKSPACE_TRIGGERS),
        }
    }

    fn parse(name: &str, value: Value) -> Result<TriggerInfo> {
        serde_json::from_value(value).map_err(|e| Error::json(format!("reading trigger {name}"), e))
    }

    /// Create `trigger` in `ws`, made by `by` (a key id): its target must be an agent or
    /// workflow deployed in `ws`.
    ///
    /// # Errors
    ///
    /// A bad name, event, template or target ([`Error::InvalidRequest`]); a name already used
    /// in `ws` ([`Error::InvalidState`]); the store's error.
    pub async fn create(
        &self,
        platform: &Platform,
        ws: &WorkspaceId,
        trigger: NewTrigger,
        by: Option<&str>,
    ) -> Result<TriggerInfo> {
        check_trigger_name(&trigger.name)?;
        check_event_name(&trigger.event)?;
        if let Some(t) = &trigger.message {
            MessageTemplate::parse(t)?;
        }
        crate::named::check_target(
            platform,
            ws,
            &format!("trigger `{}`", trigger.name),
            &trigger.target,
        )
        .await?;
        let info = TriggerInfo {
            name: trigger.name,
            event: trigger.event,
            target: trigger.target,
            message: trigger.message,
            created_at: agentkit_runtime::model::now_ms(),
            created_by: by.map(str::to_owned),
        };
        let value = serde_json::to_value(&info)
            .map_err(|e| Error::json(format!("writing trigger {}", info.name), e))?;
        if !self.docs.create(ws, &info.name, value).await? {
            return Err(Error::invalid_state(
                format!("trigger {}", info.name),
                "already exists in this workspace; delete it first (`DELETE /v1/triggers/{name}`) \
                 or choose another name",
            ));
        }
        Ok(info)
    }

    /// The triggers of `ws`, by name.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn list(&self, ws: &WorkspaceId) -> Result<Vec<TriggerInfo>> {
        let mut out = Vec::new();
        for (name, doc) in self.docs.list(ws).await? {
            out.push(Self::parse(&name, doc.value)?);
        }
        Ok(out)
    }

    /// Trigger `name` of `ws`, if it exists.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn get(&self, ws: &WorkspaceId, name: &str) -> Result<Option<TriggerInfo>> {
        if check_trigger_name(name).is_err() {
            return Ok(None);
        }
        match self.docs.get(ws, name).await? {
            Some(doc) => Ok(Some(Self::parse(name, doc.value)?)),
            None => Ok(None),
        }
    }

    /// Delete trigger `name` of `ws`; what it was. Its event starts nothing from then on.
    ///
    /// # Errors
    ///
    /// No such trigger ([`Error::NotFound`]), or the store's error.
    pub async fn delete(&self, ws: &WorkspaceId, name: &str) -> Result<TriggerInfo> {
        let info = self.get(ws, name).await?.ok_or_else(|| no_trigger(name))?;
        if !self.docs.delete(ws, name).await? {
            return Err(no_trigger(name));
        }
        Ok(info)
    }

    /// The triggers of `ws` listening to `event`.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn listening(&self, ws: &WorkspaceId, event: &str) -> Result<Vec<TriggerInfo>> {
        if check_event_name(event).is_err() {
            return Ok(Vec::new());
        }
        let mut all = self.list(ws).await?;
        all.retain(|t| t.event == event);
        Ok(all)
    }
}

impl Platform {
    /// Emit `event` in `principal`'s workspace: start a run for every trigger of that
    /// workspace listening to it (and, in `default/default`, every `agentkit.yaml` event
    /// trigger), each carrying `principal`. Every message is made before any run starts, so a
    /// payload one trigger cannot read starts nothing. With `event_id`, emitting it again
    /// starts nothing new and returns the same runs. A start refused after others began (a
    /// budget or a run-start rate limit) answers its error; the runs already started go on,
    /// and a retry with the same `event_id` starts only the missing ones.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no trigger of the workspace listens to `event`;
    /// [`Error::InvalidRequest`] for a payload a trigger cannot read; a trigger whose target
    /// is gone ([`Error::InvalidState`]); the run's start failing.
    pub async fn emit_in_workspace(
        &self,
        principal: &Principal,
        event: &str,
        payload: Value,
        event_id: Option<&str>,
    ) -> Result<Vec<RunRecord>> {
        let ws = match (&principal.tenant, &principal.workspace) {
            (Some(org), Some(w)) => WorkspaceId::new(org, w),
            _ => WorkspaceId::default_workspace(),
        };
        let scope = Scope::of(&ws);
        let triggers = WorkspaceTriggers::new(Arc::clone(self.runtime.store()))
            .listening(&ws, event)
            .await?;
        let declared = scope.is_default()
            && agentkit_core::sync::read(&self.ops.events)
                .iter()
                .any(|(e, _)| e == event);
        if triggers.is_empty() && !declared {
            let mut how = "create a trigger for it with `POST /v1/triggers` \
                           ({\"name\", \"event\", \"target\"}) or `agentkit triggers create`"
                .to_owned();
            if scope.is_default() {
                how.push_str(", or declare one with `type: event` in agentkit.yaml");
            }
            return Err(Error::not_found(
                "event trigger",
                event,
                format!("workspace {ws} has none: {how}"),
            ));
        }
        // Everything checked before anything starts.
        let mut starts = Vec::with_capacity(triggers.len());
        for t in &triggers {
            let message = t.message_for(&payload)?;
            let internal = scope.internal(&t.target).unwrap_or_default();
            if self.registry.find(&internal).await?.is_none() {
                return Err(Error::invalid_state(
                    format!("trigger {}", t.name),
                    format!(
                        "starts `{}`, which is no longer deployed in this workspace; deploy \
                         it again or delete the trigger (`DELETE /v1/triggers/{}`)",
                        t.target, t.name
                    ),
                ));
            }
            let mut start = StartRun::new(&t.target, message).by(principal.clone());
            if let Some(id) = event_id {
                // A digest: an event id may hold characters idempotency keys may not.
                start.idempotency_key = Some(format!(
                    "event:{}",
                    hex::encode(Sha256::digest(format!("{event}\n{id}\n{}", t.name)))
                ));
            }
            starts.push(start);
        }
        let mut runs = if declared {
            self.emit_event_as(event, payload, event_id, Some(principal))
                .await?
        } else {
            Vec::new()
        };
        for start in starts {
            runs.push(self.start(start).await?);
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn templates_fill_pointers_and_say_what_is_wrong() {
        let p = json!({"service": "api", "n": 7, "tags": ["a"], "a/b": "slash", "m~n": "tilde"});
        let r = |t: &str| MessageTemplate::parse(t).unwrap().render(&p);
        assert_eq!(r("Deployed {/service} #{/n}").unwrap(), "Deployed api #7");
        assert_eq!(r("{/tags}").unwrap(), r#"["a"]"#);
        assert_eq!(r("{/a~1b} {/m~0n}").unwrap(), "slash tilde");
        assert_eq!(r("{{literal}} {/service}").unwrap(), "{literal} api");
        assert_eq!(r("").unwrap(), "");
        assert!(r("{}").unwrap().contains("\"service\":\"api\""));
        assert_eq!(
            r("{/nope}").unwrap_err(),
            "the payload has no value at `/nope`"
        );
        for bad in ["{service}", "open {/a", "close }", "{/a{/b}}"] {
            let e = MessageTemplate::parse(bad).unwrap_err().to_string();
            assert!(e.contains("`message` template"), "{bad}: {e}");
        }
        assert!(MessageTemplate::parse(&"x".repeat(MAX_TEMPLATE_LEN + 1)).is_err());
    }

    #[test]
    fn without_a_template_the_message_is_the_payloads() {
        let t = TriggerInfo {
            name: "t".into(),
            event: "deployed".into(),
            target: "bot".into(),
            message: None,
            created_at: 0,
            created_by: None,
        };
        assert_eq!(t.message_for(&json!({"message": "hi"})).unwrap(), "hi");
        let e = t
            .message_for(&json!({"msg": "hi"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`message` template"), "{e}");
        assert!(t.message_for(&json!([1])).is_err());
    }

    #[test]
    fn names_and_events_are_checked() {
        assert!(check_trigger_name("on-deploy_2").is_ok());
        assert!(check_trigger_name("").is_err());
        assert!(check_trigger_name("a/b").is_err());
        assert!(check_trigger_name(&"a".repeat(65)).is_err());
        assert!(check_event_name("github.push:main").is_ok());
        assert!(check_event_name("a b").is_err());
        assert!(check_event_name(&"e".repeat(MAX_EVENT_LEN + 1)).is_err());
    }

    proptest! {
        /// Any text parses or is refused with a message, never a panic; what parses renders
        /// against any payload without a panic and prints back to the same template.
        #[test]
        fn any_template_parses_or_is_refused(t in "\\PC{0,60}", key in "[a-z]{0,5}", v in any::<i64>()) {
            if let Ok(parsed) = MessageTemplate::parse(&t) {
                let _ = parsed.render(&json!({ key.clone(): v }));
                let again = MessageTemplate::parse(&parsed.to_string()).unwrap();
                prop_assert_eq!(again, parsed);
            }
        }

        /// Templates built from text and placeholders round-trip and render each value.
        #[test]
        fn built_templates_render_their_values(
            pieces in proptest::collection::vec(("[^{}]{0,8}", "[a-z]{1,6}"), 0..5),
        ) {
            let mut t = String::new();
            let mut want = String::new();
            let mut payload = serde_json::Map::new();
            for (i, (text, key)) in pieces.iter().enumerate() {
                let k = format!("{key}{i}");
                t.push_str(text);
                t.push_str(&format!("{{/{k}}}"));
                want.push_str(text);
                want.push_str(&format!("v{i}"));
                payload.insert(k, Value::String(format!("v{i}")));
            }
            let parsed = MessageTemplate::parse(&t).unwrap();
            prop_assert_eq!(parsed.render(&Value::Object(payload)).unwrap(), want);
        }

        /// Names: exactly the documented alphabet and lengths are accepted.
        #[test]
        fn trigger_names_follow_the_documented_rule(name in "\\PC{0,70}") {
            let ok = (1..=64).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            prop_assert_eq!(check_trigger_name(&name).is_ok(), ok);
        }
    }
}
