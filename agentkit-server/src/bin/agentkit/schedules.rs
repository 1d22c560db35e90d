//! `agentkit schedules …`: list, pause, resume, trigger now, history.

use reqwest::Method;
use serde_json::Value;

use crate::Remote;
use crate::client::Failure;
use crate::commands::{ago, client, print_json, s, table};

/// `agentkit schedules …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SchedulesCmd {
    /// List schedules: trigger, next fire, last run, paused.
    List,
    /// Create a schedule (stored: every server process sharing the store fires it, and it
    /// survives restarts). Give exactly one of --cron, --every, --at.
    Create {
        /// Its name (1 to 64 letters, digits, `_` or `-`).
        name: String,
        /// The agent or workflow it starts.
        #[arg(long)]
        target: String,
        /// A cron expression (5 fields, or 6 with seconds first), e.g. "0 9 * * 1-5".
        #[arg(long, required_unless_present_any = ["every", "at"], conflicts_with_all = ["every", "at"])]
        cron: Option<String>,
        /// The cron expression's IANA time zone (default UTC).
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
        /// A fixed interval, e.g. 15m or 1h.
        #[arg(long, conflicts_with = "at")]
        every: Option<String>,
        /// One fire at this RFC 3339 time, e.g. 2027-01-01T09:00:00Z.
        #[arg(long)]
        at: Option<String>,
        /// The message of each run (default: one naming the schedule).
        #[arg(long)]
        message: Option<String>,
        /// A fire while the last run still runs: skip (default), buffer_one or allow_all.
        #[arg(long)]
        overlap: Option<String>,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a schedule created through the API (those of agentkit.yaml stay; remove them
    /// there).
    Delete { name: String },
    /// Pause a schedule on every server process.
    Pause { name: String },
    /// Resume a paused schedule (missed fires are skipped).
    Resume { name: String },
    /// Start a run of the schedule's target now (a manual fire).
    Trigger { name: String },
    /// The schedule's runs, newest first.
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// When a time (ms since epoch) is: `2026-12-07 03:00 UTC (in 4h)`, or for a time gone by
/// `2001-01-01 00:00 UTC (passed, 25y ago)`.
fn when(ms: &Value) -> String {
    let Some(t) = ms
        .as_i64()
        .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
    else {
        return "-".into();
    };
    let ahead = t.timestamp_millis() - agentkit_runtime::model::now_ms();
    let secs = ahead / 1000;
    let rel = match secs {
        _ if ahead < 0 => format!("passed, {}", ago(ms)),
        i64::MIN..60 => "in <1m".to_owned(),
        60..3600 => format!("in {}m", secs / 60),
        3600..86400 => format!("in {}h", secs / 3600),
        _ => format!("in {}d", secs / 86400),
    };
    format!("{} ({rel})", t.format("%Y-%m-%d %H:%M UTC"))
}

fn trigger(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("cron") => format!("cron {} {}", s(t, "cron"), s(t, "timezone")),
        Some("every") => {
            let ms = t["every_ms"].as_u64().unwrap_or(0);
            match ms {
                0..1000 => format!("every {ms}ms"),
                _ if ms.is_multiple_of(86_400_000) => format!("every {}d", ms / 86_400_000),
                _ if ms.is_multiple_of(3_600_000) => format!("every {}h", ms / 3_600_000),
                _ if ms.is_multiple_of(60_000) => format!("every {}m", ms / 60_000),
                _ => format!("every {}s", ms / 1000),
            }
        }
        Some("at") => format!("at {}", when(&t["at"])),
        _ => t.to_string(),
    }
}

fn last_run(v: &Value) -> String {
    let r = &v["last_run"];
    if r.is_null() {
        return "-".into();
    }
    format!("{} {}", s(r, "status"), ago(&r["created_at"]))
}

/// Where a listed schedule comes from: `config`, `api`, or the agent version that declares it
/// (`spec: support v3 @prod`).
fn source(e: &Value) -> String {
    let o = &e["owner"];
    if o.is_object() {
        format!(
            "spec: {} v{} @{}",
            s(o, "agent"),
            o["version"],
            s(o, "label")
        )
    } else {
        s(e, "source")
    }
}

/// `agentkit schedules …`.
pub(crate) async fn schedules(remote: &Remote, cmd: SchedulesCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        SchedulesCmd::List => {
            let v = c.call(Method::GET, "/v1/schedules", None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            s(e, "name"),
                            s(e, "target"),
                            trigger(&e["trigger"]),
                            if e["paused"] == true {
                                "paused".into()
                            } else {
                                when(&e["next_fire_at"])
                            },
                            last_run(e),
                            source(e),
                        ]
                    })
                    .collect();
                table(
                    &["name", "target", "trigger", "next", "last run", "source"],
                    &rows,
                );
                return Ok(());
            }
            v
        }
        SchedulesCmd::Create {
            name,
            target,
            cron,
            timezone,
            every,
            at,
            message,
            overlap,
            description,
        } => {
            let mut body = serde_json::json!({"name": name, "target": target});
            for (key, value) in [
                ("cron", cron),
                ("timezone", timezone),
                ("every", every),
                ("at", at),
                ("overlap", overlap),
                ("description", description),
            ] {
                if let Some(v) = value {
                    body[key] = Value::String(v);
                }
            }
            if let Some(m) = message {
                body["input"] = serde_json::json!({ "message": m });
            }
            let v = c.call(Method::POST, "/v1/schedules", Some(&body)).await?;
            if !remote.json {
                outln!(
                    "created `{name}`: {}; next fire {}",
                    trigger(&v["trigger"]),
                    when(&v["next_fire_at"])
                );
                return Ok(());
            }
            v
        }
        SchedulesCmd::Delete { name } => {
            let v = c
                .call(Method::DELETE, &format!("/v1/schedules/{name}"), None)
                .await?;
            if !remote.json {
                outln!("deleted `{name}`");
                return Ok(());
            }
            v
        }
        SchedulesCmd::Pause { name } => {
            let v = c
                .call(Method::POST, &format!("/v1/schedules/{name}/pause"), None)
                .await?;
            if !remote.json {
                outln!("paused `{name}` (on every server process)");
                return Ok(());
            }
            v
        }
        SchedulesCmd::Resume { name } => {
            let v = c
                .call(Method::POST, &format!("/v1/schedules/{name}/resume"), None)
                .await?;
            if !remote.json {
                outln!("resumed `{name}`; next fire {}", when(&v["next_fire_at"]));
                return Ok(());
            }
            v
        }
        SchedulesCmd::Trigger { name } => {
            let v = c
                .call(Method::POST, &format!("/v1/schedules/{name}/trigger"), None)
                .await?;
            if !remote.json {
                outln!(
                    "started run {} of {} (follow it: agentkit runs events {} --follow)",
                    s(&v, "run_id"),
                    s(&v, "agent"),
                    s(&v, "run_id")
                );
                return Ok(());
            }
            v
        }
        SchedulesCmd::History { name, limit } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/v1/schedules/{name}/history?limit={limit}"),
                    None,
                )
                .await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let run = &e["run"];
                        vec![
                            s(run, "run_id"),
                            if e["manual"] == true {
                                "manual".into()
                            } else {
                                e["fire_at"]
                                    .as_i64()
                                    .and_then(
                                        chrono::DateTime::<chrono::Utc>::from_timestamp_millis,
                                    )
                                    .map_or_else(
                                        || "-".into(),
                                        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                                    )
                            },
                            s(run, "status"),
                            ago(&run["created_at"]),
                        ]
                    })
                    .collect();
                table(&["run", "fire", "status", "started"], &rows);
                return Ok(());
            }
            v
        }
    };
    print_json(&out);
    Ok(())
}
