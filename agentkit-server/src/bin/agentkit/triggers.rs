//! `agentkit triggers …` (the key's workspace's event triggers) and `agentkit events emit`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::Remote;
use crate::client::{Failure, exit};
use crate::commands::{ago, client, print_json, s, table};

/// `agentkit triggers …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TriggersCmd {
    /// Declare an event trigger of the key's workspace: `agentkit events emit EVENT` then
    /// starts a run of TARGET.
    Create {
        /// Its name in the workspace.
        name: String,
        /// The event it listens to.
        #[arg(long)]
        event: String,
        /// The agent or workflow of the workspace it starts.
        #[arg(long)]
        target: String,
        /// The run's message: a template with `{/json/pointer}` placeholders filled from the
        /// event's payload (`"Deployed {/service}"`); default: the payload's `message`.
        #[arg(long)]
        message: Option<String>,
    },
    /// List the workspace's event triggers.
    List,
    /// Delete an event trigger: its event starts nothing from then on.
    Delete { name: String },
}

/// `agentkit events …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum EventsCmd {
    /// Emit EVENT in the key's workspace: every trigger listening to it starts a run.
    Emit {
        /// The event.
        event: String,
        /// The payload, a JSON object (default `{}`); `{"message": "..."}` is the runs'
        /// message unless a trigger has a `message` template.
        payload: Option<String>,
        /// Emitting again with the same key starts nothing new (the same runs are shown).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

/// `s` as one URL path segment (percent-encoded but for RFC 3986's unreserved characters).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `agentkit triggers …`.
pub(crate) async fn triggers(remote: &Remote, cmd: TriggersCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        TriggersCmd::Create {
            name,
            event,
            target,
            message,
        } => {
            let mut body = json!({"name": name, "event": event, "target": target});
            if let Some(m) = message {
                body["message"] = Value::String(m);
            }
            let v = c.call(Method::POST, "/v1/triggers", Some(&body)).await?;
            if !remote.json {
                outln!(
                    "trigger {}: event {} starts {} (emit it with `agentkit events emit {}`)",
                    s(&v, "name"),
                    s(&v, "event"),
                    s(&v, "target"),
                    s(&v, "event")
                );
                return Ok(());
            }
            v
        }
        TriggersCmd::List => {
            let v = c.call(Method::GET, "/v1/triggers", None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        vec![
                            s(t, "name"),
                            s(t, "event"),
                            s(t, "target"),
                            s(t, "message"),
                            ago(&t["created_at"]),
                        ]
                    })
                    .collect();
                table(&["name", "event", "target", "message", "created"], &rows);
                return Ok(());
            }
            v
        }
        TriggersCmd::Delete { name } => {
            c.call(
                Method::DELETE,
                &format!("/v1/triggers/{}", segment(&name)),
                None,
            )
            .await?;
            if !remote.json {
                outln!("deleted trigger {name}");
                return Ok(());
            }
            json!({"deleted": name})
        }
    };
    print_json(&out);
    Ok(())
}

/// `agentkit events …`.
pub(crate) async fn events(remote: &Remote, cmd: EventsCmd) -> Result<(), Failure> {
    let c = client(remote);
    let EventsCmd::Emit {
        event,
        payload,
        idempotency_key,
    } = cmd;
    let payload: Value = match payload {
        None => json!({}),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            Failure::new(
                exit::INVALID,
                format!(
                    "the payload is not JSON ({e}); pass an object such as \
                     '{{\"message\": \"v2 is live\"}}'"
                ),
            )
        })?,
    };
    let mut r = c
        .request(Method::POST, &format!("/v1/events/{}", segment(&event)))
        .json(&payload);
    if let Some(k) = idempotency_key {
        r = r.header("idempotency-key", k);
    }
    let v = c.send(r).await?;
    if remote.json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| vec![s(r, "run_id"), s(r, "agent"), s(r, "status")])
        .collect();
    outln!("event {event} started {} run(s)", rows.len());
    table(&["run", "agent", "status"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_unreserved_characters_and_encode_the_rest() {
        assert_eq!(segment("github.push_1-a~"), "github.push_1-a~");
        assert_eq!(segment("a/b c:d"), "a%2Fb%20c%3Ad");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
