//! Commands that talk to a running server: `run`, `agents …`, `runs …`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::Remote;
use crate::client::{Client, Failure, exit};

/// `agentkit run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The agent or workflow.
    agent: String,
    /// The message.
    message: String,
    /// Continue this thread's conversation (a new id starts one).
    #[arg(long)]
    thread: Option<String>,
    /// A label or version (default: latest).
    #[arg(long)]
    version: Option<String>,
    /// In process (no --server): the config file (default: agentkit.yaml found from here up,
    /// else the demo agents).
    #[arg(long, short)]
    config: Option<std::path::PathBuf>,
}

/// `agentkit agents …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AgentsCmd {
    /// List agents and workflows.
    List,
    /// Show one, with its labels.
    Show { name: String },
    /// List its versions.
    Versions { name: String },
    /// What changed between two versions (numbers or labels).
    Diff {
        name: String,
        from: String,
        /// Default: latest.
        to: Option<String>,
    },
    /// Deploy a spec file (JSON or YAML: `{name, kind: agent|workflow, spec}`).
    Deploy { file: std::path::PathBuf },
    /// Point label `to` at the version of label `from`.
    Promote {
        name: String,
        from: String,
        to: String,
    },
    /// Point a label back at its previous version.
    Rollback { name: String, label: String },
}

/// `agentkit runs …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum RunsCmd {
    /// List runs, newest first.
    List {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a run.
    Get { run_id: String },
    /// Print a run's events (with --follow, until it ends).
    Events {
        run_id: String,
        #[arg(long)]
        follow: bool,
    },
    /// Pause a run.
    Pause { run_id: String },
    /// Resume a paused run.
    Resume { run_id: String },
    /// Cancel a run.
    Cancel {
        run_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a signal to a waiting run (payload: JSON).
    Signal {
        run_id: String,
        name: String,
        #[arg(default_value = "null")]
        payload: String,
    },
    /// Replay a run offline and report divergences.
    Replay { run_id: String },
}

/// How many times a followed event stream is reconnected before giving up.
const FOLLOW_RECONNECTS: u32 = 10;

/// Follow the events of run `run_id` until its `end` event, whose data it returns: each
/// event (name, data, id) goes to `on_event`; a dropped stream is reconnected with
/// `Last-Event-ID` (the server replays what was missed from the store, so no event comes twice
/// or is lost), up to [`FOLLOW_RECONNECTS`] times with a growing pause, shown on `bar`.
async fn run_events(
    c: &Client,
    run_id: &str,
    bar: &indicatif::ProgressBar,
    mut on_event: impl FnMut(&str, &Value, Option<&str>) -> Result<(), Failure>,
) -> Result<Value, Failure> {
    let mut last_id: Option<String> = None;
    let mut drops = 0u32;
    loop {
        let mut req = c
            .request(Method::GET, &format!("/v1/runs/{run_id}/events"))
            .header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            req = req.header("last-event-id", id);
        }
        match req.send().await {
            Ok(res) if res.status().is_success() => {
                let mut stream = sse_stream::SseStream::from_bytes_stream(res.bytes_stream());
                while let Some(Ok(e)) = stream.next().await {
                    if let Some(id) = e.id.filter(|i| !i.is_empty()) {
                        last_id = Some(id);
                    }
                    let ev = e.event.unwrap_or_default();
                    let data = e.data.unwrap_or_default();
                    let v: Value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    on_event(&ev, &v, last_id.as_deref())?;
                    if ev == "end" {
                        return Ok(v);
                    }
                }
            }
            Ok(res) => {
                return Err(Failure::new(
                    exit::FAILED,
                    format!(
                        "following run {run_id}: the server answered {}",
                        res.status()
                    ),
                ));
            }
            Err(e) if drops >= FOLLOW_RECONNECTS => {
                return Err(Failure::new(
                    exit::UNREACHABLE,
                    format!("following run {run_id}: {e}"),
                ));
            }
            Err(_) => {}
        }
        drops += 1;
        if drops > FOLLOW_RECONNECTS {
            return Err(Failure::new(
                exit::UNREACHABLE,
                format!("following run {run_id}: the stream dropped {drops} times"),
            ));
        }
        bar.set_message(format!(
            "stream dropped; reconnecting ({drops}/{FOLLOW_RECONNECTS})"
        ));
        tokio::time::sleep(Duration::from_millis(250 * u64::from(drops))).await;
    }
}

/// `agentkit runs events <id> --follow`: print the run's events as they happen (model text
/// live, as it is written); exits non-zero when the run ends failed or cancelled.
async fn follow_events(c: &Client, remote: &Remote, run_id: &str) -> Result<(), Failure> {
    c.call(Method::GET, &format!("/v1/runs/{run_id}"), None)
        .await?;
    let bar = if remote.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message(format!("following run {run_id}"));
    let mut in_text = false;
    let end = run_events(c, run_id, &bar, |ev, v, id| {
        if remote.json {
            bar.suspend(|| outln!("{}", json!({"event": ev, "data": v})));
        } else if ev == "delta" {
            bar.suspend(|| {
                if !in_text {
                    out!("      ");
                }
                out!("{}", s(v, "text"));
            });
            in_text = true;
        } else {
            let what = event_line(ev, v);
            let id = id.unwrap_or_default();
            bar.suspend(|| {
                if in_text {
                    outln!();
                }
                outln!("{id:>4}  {what}");
            });
            in_text = false;
            bar.set_message(format!("run {run_id}: {what}"));
        }
        Ok(())
    })
    .await;
    bar.finish_and_clear();
    let end = end?;
    match end["status"].as_str() {
        Some("failed" | "cancelled") => Err(Failure::new(
            exit::FAILED,
            format!("run {run_id} ended {}", s(&end, "status")),
        )),
        _ => Ok(()),
    }
}

/// What the table of `agentkit runs events` says of event `ev` (its data `v`: a journal
/// event, a run for `status` and `end`).
fn event_line(ev: &str, v: &Value) -> String {
    match ev {
        // A model event's data is `{text, tool_calls, response}`: the journaled model
        // response, with its usage, is `response`.
        "model" => format!(
            "model  {} ms, {} tokens",
            v["latency_ms"], v["data"]["response"]["usage"]["output_tokens"]
        ),
        "tool_result" => format!("tool   {} ({} ms)", s(v, "key"), v["latency_ms"]),
        "status" | "end" => format!("{ev:<6} {}", s(v, "status")),
        "error" => format!("error  {v}"),
        _ => format!("{ev:<6} {}", s(v, "key")),
    }
}

/// The default server URL.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

pub(crate) fn client(remote: &Remote) -> Client {
    Client::new(
        remote.server.as_deref().unwrap_or(DEFAULT_SERVER),
        remote.key.clone(),
    )
}

pub(crate) fn print_json(v: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

pub(crate) fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// A plain table: columns padded to their widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Labelled lines (`label  value`), labels padded to the widest: one record for people.
pub(crate) fn fields(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in rows {
        outln!("{label:<width$}  {value}");
    }
}

/// A run's output for people: its `text` when it has one, else the JSON.
fn output_text(output: &Value) -> String {
    match output {
        Value::Null => "-".into(),
        Value::String(t) => t.clone(),
        o => o
            .get("text")
            .and_then(Value::as_str)
            .map_or_else(|| o.to_string(), str::to_owned),
    }
}

/// `agentkit runs get` for people.
fn print_run(v: &Value) {
    let usage = &v["usage"];
    let mut rows = vec![
        ("run", s(v, "run_id")),
        ("agent", format!("{} v{}", s(v, "agent"), s(v, "version"))),
        ("status", s(v, "status")),
        ("thread", s(v, "thread_id")),
        ("attempts", s(v, "attempts")),
        ("created", ago(&v["created_at"])),
        ("updated", ago(&v["updated_at"])),
        (
            "usage",
            format!(
                "{} tokens in, {} out, ${:.4}",
                s(usage, "input_tokens"),
                s(usage, "output_tokens"),
                v["cost_usd"].as_f64().unwrap_or(0.0)
            ),
        ),
    ];
    if !v["error"].is_null() {
        rows.push(("error", s(v, "error")));
    }
    rows.push(("output", output_text(&v["output"])));
    fields(&rows);
}

pub(crate) fn ago(ms: &Value) -> String {
    let Some(ms) = ms.as_i64() else {
        return "-".into();
    };
    let now = agentkit_runtime::model::now_ms();
    let secs = (now - ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        86400..31_536_000 => format!("{}d ago", secs / 86400),
        _ => format!("{}y ago", secs / 31_536_000),
    }
}

/// `agentkit run AGENT MESSAGE`: start, follow its events with a live progress line, then
/// print the answer with time, tokens and cost.
pub(crate) async fn run(remote: &Remote, args: RunArgs) -> Result<(), Failure> {
    if remote.server.is_none() {
        // In process: the agents of the config on an in-memory store, served on a private
        // loopback port for the duration of this one run.
        let server = crate::serve::in_process(args.config.clone()).await?;
        let local = Remote {
            server: Some(server.url.clone()),
            key: Some(server.key.clone()),
            json: remote.json,
        };
        let result = Box::pin(run(&local, args)).await;
        server.stop().await;
        return result;
    }
    let c = client(remote);
    let started = Instant::now();
    let mut body = json!({ "message": args.message });
    if let Some(t) = &args.thread {
        // The first run on a thread creates it; later runs find it and continue it.
        c.call(
            Method::POST,
            "/threads",
            Some(&json!({"thread_id": t, "if_exists": "do_nothing"})),
        )
        .await?;
        body["thread_id"] = json!(t);
    }
    if let Some(v) = &args.version {
        body["version"] = json!(v);
    }
    let run = c
        .call(
            Method::POST,
            &format!("/v1/agents/{}/runs", args.agent),
            Some(&body),
        )
        .await?;
    let id = s(&run, "run_id");
    let bar = if remote.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    bar.enable_steady_tick(Duration::from_millis(100));
    bar.set_message(format!("{} v{} started", args.agent, s(&run, "version")));
    let (mut models, mut tools) = (0u32, 0u32);
    let ended = run_events(&c, &id, &bar, |ev, data, _| {
        match ev {
            "model" => {
                models += 1;
                let calls = data["data"]["tool_calls"].as_array().map_or(0, Vec::len);
                bar.set_message(format!(
                    "model call {models} ({} ms){}",
                    data["latency_ms"],
                    if calls > 0 {
                        format!(", {calls} tool call(s)")
                    } else {
                        String::new()
                    }
                ));
            }
            "tool_result" => {
                tools += 1;
                bar.set_message(format!("tool result {tools} ({} ms)", data["latency_ms"]));
            }
            "status" => bar.set_message(s(data, "status")),
            "error" => return Err(Failure::new(exit::FAILED, s(data, "error"))),
            _ => {}
        }
        Ok(())
    })
    .await;
    bar.finish_and_clear();
    let run = ended?;
    if remote.json {
        print_json(&run);
    } else {
        match run["output"]["text"].as_str() {
            Some(text) => outln!("{text}"),
            None => outln!("{}", run["output"]),
        }
        let usage = &run["usage"];
        eprintln!(
            "\n{} · {} · {:.1}s · {} model call(s), {} tool call(s) · {} tokens in, {} out · ${:.4}",
            s(&run, "status"),
            id,
            started.elapsed().as_secs_f64(),
            models,
            tools,
            usage["input_tokens"].as_u64().unwrap_or(0),
            usage["output_tokens"].as_u64().unwrap_or(0),
            run["cost_usd"].as_f64().unwrap_or(0.0)
        );
    }
    match run["status"].as_str() {
        Some("succeeded") => Ok(()),
        Some(other) => Err(Failure::new(
            exit::FAILED,
            format!("run {id} is {other}: {}", s(&run, "error")),
        )),
        None => Err(Failure::new(exit::FAILED, format!("run {id}: no status"))),
    }
}

/// `agentkit agents …`.
pub(crate) async fn agents(remote: &Remote, cmd: AgentsCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        AgentsCmd::List => {
            let v = c.call(Method::GET, "/v1/agents", None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let labels = e["labels"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| format!("{k}=v{v}"))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default();
                        vec![
                            s(e, "name"),
                            s(e, "kind"),
                            format!("v{}", s(e, "latest")),
                            labels,
                            s(e, "description"),
                        ]
                    })
                    .collect();
                table(&["name", "kind", "latest", "labels", "description"], &rows);
                return Ok(());
            }
            v
        }
        AgentsCmd::Show { name } => {
            let v = c
                .call(Method::GET, &format!("/v1/agents/{name}"), None)
                .await?;
            if !remote.json {
                let labels: Vec<String> = v["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(l, n)| format!("{l}=v{n}"))
                    .collect();
                fields(&[
                    ("name", s(&v, "name")),
                    ("kind", s(&v, "kind")),
                    ("description", s(&v, "description")),
                    ("latest", format!("v{}", s(&v, "latest"))),
                    ("labels", labels.join(", ")),
                    ("created", ago(&v["created_at"])),
                    ("updated", ago(&v["updated_at"])),
                ]);
                return Ok(());
            }
            v
        }
        AgentsCmd::Versions { name } => {
            let v = c
                .call(Method::GET, &format!("/v1/agents/{name}/versions"), None)
                .await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            format!("v{}", s(e, "version")),
                            s(e, "kind"),
                            s(e, "hash").chars().take(12).collect(),
                            ago(&e["created_at"]),
                        ]
                    })
                    .collect();
                table(&["version", "kind", "hash", "deployed"], &rows);
                return Ok(());
            }
            v
        }
        AgentsCmd::Diff { name, from, to } => {
            let mut q = format!("/v1/agents/{name}/diff?from={from}");
            if let Some(t) = to {
                q.push_str(&format!("&to={t}"));
            }
            let v = c.call(Method::GET, &q, None).await?;
            if !remote.json {
                outln!("v{} → v{}", s(&v, "from"), s(&v, "to"));
                for ch in v["changes"].as_array().into_iter().flatten() {
                    outln!("  {}", s(ch, "path"));
                    if let Some(f) = ch.get("from") {
                        outln!("    - {f}");
                    }
                    if let Some(t) = ch.get("to") {
                        outln!("    + {t}");
                    }
                }
                return Ok(());
            }
            v
        }
        AgentsCmd::Deploy { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Failure::new(
                    exit::INVALID,
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            let body: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
                Failure::new(
                    exit::INVALID,
                    format!("{} is not YAML or JSON: {e}", file.display()),
                )
            })?;
            c.call(Method::POST, "/v1/agents", Some(&body)).await?
        }
        AgentsCmd::Promote { name, from, to } => {
            c.call(
                Method::POST,
                &format!("/v1/agents/{name}/promote"),
                Some(&json!({"from": from, "to": to})),
            )
            .await?
        }
        AgentsCmd::Rollback { name, label } => {
            c.call(
                Method::POST,
                &format!("/v1/agents/{name}/rollback"),
                Some(&json!({"label": label})),
            )
            .await?
        }
    };
    print_json(&out);
    Ok(())
}

/// `agentkit runs …`.
pub(crate) async fn runs(remote: &Remote, cmd: RunsCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        RunsCmd::List {
            agent,
            status,
            limit,
        } => {
            let mut q = format!("/v1/runs?limit={limit}");
            if let Some(a) = agent {
                q.push_str(&format!("&agent={a}"));
            }
            if let Some(st) = status {
                q.push_str(&format!("&status={st}"));
            }
            let v = c.call(Method::GET, &q, None).await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        vec![
                            s(r, "run_id"),
                            format!("{} v{}", s(r, "agent"), s(r, "version")),
                            s(r, "status"),
                            ago(&r["created_at"]),
                            format!("${:.4}", r["cost_usd"].as_f64().unwrap_or(0.0)),
                        ]
                    })
                    .collect();
                table(&["run", "agent", "status", "created", "cost"], &rows);
                return Ok(());
            }
            v
        }
        RunsCmd::Get { run_id } => {
            let v = c
                .call(Method::GET, &format!("/v1/runs/{run_id}"), None)
                .await?;
            if !remote.json {
                print_run(&v);
                return Ok(());
            }
            v
        }
        RunsCmd::Events { run_id, follow } => {
            if follow {
                return follow_events(&c, remote, &run_id).await;
            }
            let v = c
                .call(Method::GET, &format!("/v1/runs/{run_id}/events"), None)
                .await?;
            if !remote.json {
                for e in v.as_array().into_iter().flatten() {
                    outln!("{:>4}  {}", s(e, "id"), event_line(&s(e, "event"), e));
                }
                return Ok(());
            }
            v
        }
        RunsCmd::Pause { run_id } => {
            c.call(Method::POST, &format!("/v1/runs/{run_id}/pause"), None)
                .await?
        }
        RunsCmd::Resume { run_id } => {
            c.call(Method::POST, &format!("/v1/runs/{run_id}/resume"), None)
                .await?
        }
        RunsCmd::Cancel { run_id, reason } => {
            c.call(
                Method::POST,
                &format!("/v1/runs/{run_id}/cancel"),
                Some(&json!({ "reason": reason })),
            )
            .await?
        }
        RunsCmd::Signal {
            run_id,
            name,
            payload,
        } => {
            let payload: Value = serde_json::from_str(&payload).map_err(|e| {
                Failure::new(exit::INVALID, format!("the payload is not JSON: {e}"))
            })?;
            c.call(
                Method::POST,
                &format!("/v1/runs/{run_id}/signal"),
                Some(&json!({"name": name, "payload": payload})),
            )
            .await?
        }
        RunsCmd::Replay { run_id } => {
            let v = c
                .call(Method::POST, &format!("/v1/runs/{run_id}/replay"), None)
                .await?;
            if !remote.json {
                let faithful = v["faithful"] == true;
                fields(&[
                    ("run", s(&v, "run_id")),
                    (
                        "replay",
                        if faithful {
                            "faithful: the recorded run replays as it ran".into()
                        } else {
                            "diverged: the code or the agent changed since it ran".into()
                        },
                    ),
                    (
                        "replayed",
                        format!("{} steps", v["replayed"].as_array().map_or(0, Vec::len)),
                    ),
                    ("output", output_text(&v["output"])),
                ]);
                for d in v["divergences"].as_array().into_iter().flatten() {
                    outln!("  divergence: {}", d.as_str().unwrap_or_default());
                }
                return Ok(());
            }
            v
        }
    };
    print_json(&out);
    Ok(())
}
