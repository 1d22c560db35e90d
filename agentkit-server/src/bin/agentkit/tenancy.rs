//! `agentkit keys …`, `agentkit workspaces …`, `agentkit secrets …` and `agentkit webhooks …`:
//! API keys, workspaces, the vault and the workspace's webhooks.

use reqwest::Method;
use serde_json::{Value, json};

use crate::Remote;
use crate::client::{Failure, exit};
use crate::commands::{ago, client, print_json, s, table};

/// `agentkit keys …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCmd {
    /// Create a key; its secret is printed once (it is stored hashed).
    Create {
        /// viewer, invoker, operator, developer or admin.
        #[arg(long)]
        role: String,
        /// What the key is for.
        #[arg(long, default_value = "")]
        name: String,
        /// `org/workspace` (default: the calling key's workspace).
        #[arg(long)]
        workspace: Option<String>,
        /// Stop working after this many days.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// A policy (a name in `policies:`) every tool call made with the key must pass too.
        #[arg(long)]
        policy: Option<String>,
    },
    /// List keys (never their secrets): id, name, workspace, role, last used, state.
    List {
        /// Only keys of this `org/workspace`.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Revoke a key by id: it is refused from now on.
    Revoke { id: String },
}

/// `agentkit workspaces …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum WorkspacesCmd {
    /// List workspaces.
    List,
    /// Create a workspace `org/workspace` (the server's admin key only).
    Create { workspace: String },
}

fn state(k: &Value) -> String {
    if k["revoked_at"].is_i64() {
        return "revoked".into();
    }
    match k["expires_at"].as_i64() {
        Some(t) if t <= agentkit_runtime::model::now_ms() => "expired".into(),
        Some(t) => chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t).map_or_else(
            || "active".into(),
            |t| format!("expires {}", t.format("%Y-%m-%d")),
        ),
        None => "active".into(),
    }
}

/// `agentkit keys …`.
pub(crate) async fn keys(remote: &Remote, cmd: KeysCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        KeysCmd::Create {
            role,
            name,
            workspace,
            expires_in_days,
            policy,
        } => {
            let mut body = json!({"role": role, "name": name});
            if let Some(p) = policy {
                body["policy"] = Value::String(p);
            }
            if let Some(w) = workspace {
                body["workspace"] = Value::String(w);
            }
            if let Some(d) = expires_in_days {
                body["expires_in_days"] = json!(d);
            }
            let v = c.call(Method::POST, "/v1/keys", Some(&body)).await?;
            if !remote.json {
                outln!(
                    "created key {} ({} in {}/{}{})",
                    s(&v, "id"),
                    s(&v, "role"),
                    s(&v, "org"),
                    s(&v, "workspace"),
                    v["policy"]
                        .as_str()
                        .map(|p| format!(", policy {p}"))
                        .unwrap_or_default()
                );
                outln!("{}", s(&v, "key"));
                outln!("this is the only time the key is shown: store it now");
                return Ok(());
            }
            v
        }
        KeysCmd::List { workspace } => {
            let path = match workspace {
                Some(w) if w.contains(['&', '#', '?', ' ']) => {
                    return Err(Failure::new(
                        exit::INVALID,
                        format!("`{w}` is not a workspace (write it as org/workspace)"),
                    ));
                }
                Some(w) => format!("/v1/keys?workspace={w}"),
                None => "/v1/keys".into(),
            };
            let v = c.call(Method::GET, &path, None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        vec![
                            s(k, "id"),
                            s(k, "name"),
                            format!("{}/{}", s(k, "org"), s(k, "workspace")),
                            s(k, "role"),
                            ago(&k["last_used_at"]),
                            state(k),
                        ]
                    })
                    .collect();
                table(
                    &["id", "name", "workspace", "role", "last used", "state"],
                    &rows,
                );
                return Ok(());
            }
            v
        }
        KeysCmd::Revoke { id } => {
            let v = c
                .call(Method::DELETE, &format!("/v1/keys/{id}"), None)
                .await?;
            if !remote.json {
                outln!("revoked key {id}");
                return Ok(());
            }
            v
        }
    };
    print_json(&out);
    Ok(())
}

/// `agentkit workspaces …`.
pub(crate) async fn workspaces(remote: &Remote, cmd: WorkspacesCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        WorkspacesCmd::List => {
            let v = c.call(Method::GET, "/v1/workspaces", None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        let created = if w["created_at"] == 0 {
                            "built in".to_owned()
                        } else {
                            ago(&w["created_at"])
                        };
                        vec![s(w, "org"), s(w, "workspace"), created]
                    })
                    .collect();
                table(&["org", "workspace", "created"], &rows);
                return Ok(());
            }
            v
        }
        WorkspacesCmd::Create { workspace } => {
            let Some((org, ws)) = workspace.split_once('/') else {
                return Err(Failure::new(
                    exit::INVALID,
                    format!("`{workspace}` is not org/workspace (e.g. acme/prod)"),
                ));
            };
            let v = c
                .call(
                    Method::POST,
                    "/v1/workspaces",
                    Some(&json!({"org": org, "workspace": ws})),
                )
                .await?;
            if !remote.json {
                outln!(
                    "created workspace {workspace}; give it a key with `agentkit keys create \
                     --workspace {workspace} --role admin`"
                );
                return Ok(());
            }
            v
        }
    };
    print_json(&out);
    Ok(())
}

/// `agentkit secrets …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SecretsCmd {
    /// Set a secret of the key's workspace (MCP servers name it as `{{secret:NAME}}`). The
    /// value is read from standard input (so it stays out of shell history), or from the
    /// environment variable `--from-env` names.
    Set {
        /// Its name.
        name: String,
        /// Read the value from this environment variable instead of standard input.
        #[arg(long)]
        from_env: Option<String>,
    },
    /// List the workspace's secrets: names and dates, never values.
    List,
    /// Delete a secret.
    Delete { name: String },
}

/// `agentkit secrets …`.
pub(crate) async fn secrets(remote: &Remote, cmd: SecretsCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        SecretsCmd::Set { name, from_env } => {
            let value = match from_env {
                Some(var) => std::env::var(&var).map_err(|_| {
                    Failure::new(
                        exit::INVALID,
                        format!("the environment variable {var} is not set"),
                    )
                })?,
                None => {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(
                        |e| Failure::new(exit::INVALID, format!("cannot read standard input: {e}")),
                    )?;
                    text.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if value.is_empty() {
                return Err(Failure::new(
                    exit::INVALID,
                    "the secret is empty: pipe it in (`printf %s \"$TOKEN\" | agentkit secrets set NAME`) or pass --from-env VAR",
                ));
            }
            let v = c
                .call(
                    Method::PUT,
                    &format!("/v1/secrets/{name}"),
                    Some(&json!({"value": value})),
                )
                .await?;
            if !remote.json {
                outln!("set secret {name} (version {})", v["version"]);
                return Ok(());
            }
            v
        }
        SecretsCmd::List => {
            let v = c.call(Method::GET, "/v1/secrets", None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|k| {
                        vec![
                            s(k, "name"),
                            k["version"].to_string(),
                            ago(&k["updated_at"]),
                        ]
                    })
                    .collect();
                table(&["name", "version", "updated"], &rows);
                return Ok(());
            }
            v
        }
        SecretsCmd::Delete { name } => {
            c.call(Method::DELETE, &format!("/v1/secrets/{name}"), None)
                .await?;
            if !remote.json {
                outln!("deleted secret {name}");
                return Ok(());
            }
            json!({"deleted": name})
        }
    };
    print_json(&out);
    Ok(())
}

/// `agentkit webhooks …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum WebhooksCmd {
    /// Declare a webhook of the key's workspace: a signed delivery to its URL starts a run of
    /// TARGET. Its secret is printed once (it is stored sealed with the vault).
    Create {
        /// Its name (part of the delivery URL).
        name: String,
        /// The agent or workflow a delivery starts.
        #[arg(long)]
        target: String,
        /// Read the message from this JSON pointer into the body (`/issue/title`); default:
        /// the whole body.
        #[arg(long)]
        message_pointer: Option<String>,
    },
    /// List the workspace's webhooks: names, targets and URLs, never secrets.
    List,
    /// Give a webhook a new secret, printed once; the old one stops working at once.
    Rotate { name: String },
    /// Delete a webhook: deliveries to it are refused from then on.
    Delete { name: String },
}

/// `agentkit webhooks …`.
pub(crate) async fn webhooks(remote: &Remote, cmd: WebhooksCmd) -> Result<(), Failure> {
    let c = client(remote);
    let shown_once = |v: &Value| {
        outln!(
            "webhook {} of {} -> POST {}{}",
            s(v, "name"),
            s(v, "target"),
            c.base,
            s(v, "url")
        );
        outln!("{}", s(v, "secret"));
        outln!(
            "(the secret is shown once: sign each delivery with it, HMAC-SHA256 of \
             \"<timestamp>.<body>\" in X-Agentkit-Signature: sha256=<hex>, the timestamp in \
             X-Agentkit-Timestamp)"
        );
    };
    let out = match cmd {
        WebhooksCmd::Create {
            name,
            target,
            message_pointer,
        } => {
            let mut body = json!({"name": name, "target": target});
            if let Some(p) = message_pointer {
                body["message_pointer"] = Value::String(p);
            }
            let v = c.call(Method::POST, "/v1/webhooks", Some(&body)).await?;
            if !remote.json {
                shown_once(&v);
                return Ok(());
            }
            v
        }
        WebhooksCmd::List => {
            let v = c.call(Method::GET, "/v1/webhooks", None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| {
                        vec![
                            s(h, "name"),
                            s(h, "target"),
                            s(h, "url"),
                            ago(&h["secret_rotated_at"]),
                        ]
                    })
                    .collect();
                table(&["name", "target", "url", "secret made"], &rows);
                return Ok(());
            }
            v
        }
        WebhooksCmd::Rotate { name } => {
            let v = c
                .call(Method::POST, &format!("/v1/webhooks/{name}/rotate"), None)
                .await?;
            if !remote.json {
                shown_once(&v);
                return Ok(());
            }
            v
        }
        WebhooksCmd::Delete { name } => {
            c.call(Method::DELETE, &format!("/v1/webhooks/{name}"), None)
                .await?;
            if !remote.json {
                outln!("deleted webhook {name}");
                return Ok(());
            }
            json!({"deleted": name})
        }
    };
    print_json(&out);
    Ok(())
}
