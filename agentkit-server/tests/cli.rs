//! The `agentkit` binary as a user runs it: `agentkit dev` in an empty directory serves the
//! demo agents offline; `agentkit run`, `agents` and `runs` talk to it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agentkit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agentkit"));
    c.env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("GEMINI_API_KEY")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("AGENTKIT_URL")
        .env("AGENTKIT_API_KEY", "cli-test-key");
    c
}

fn start_dev() -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let mut child = agentkit()
        .args(["dev", "--bind", "127.0.0.1:0"])
        .env("AGENTKIT_ADMIN_KEY", "cli-test-key")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut url = None;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push(line.clone());
        if let Some(rest) = line.trim().strip_prefix("API") {
            url = rest
                .split_whitespace()
                .next()
                .map(|u| u.trim_end_matches("/v1").to_owned());
        }
        if line.starts_with("Try:") {
            break;
        }
    }
    // Held from here on, so a failed check below still stops the server (Drop).
    let dev = Dev {
        child,
        url: url.unwrap_or_default(),
        dir,
    };
    assert!(!dev.url.is_empty(), "no API line in: {seen:#?}");
    assert!(
        seen.iter().any(|l| l.contains("scripted (offline)")),
        "dev must say it runs offline: {seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("built-in demo")),
        "{seen:#?}"
    );
    assert!(
        seen[0].starts_with("agentkit serving 2 agents, 1 workflow, 1 schedule, 1 webhook from"),
        "the demo has 2 agents, 1 workflow, 1 schedule and 1 webhook: {seen:#?}"
    );
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    dev
}

fn run(dev: &Dev, args: &[&str]) -> (i32, String, String) {
    let out = agentkit()
        .args(args)
        .args(["--server", &dev.url])
        .current_dir(dev.dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `POST path` with a JSON body, as the test key, over plain HTTP: the status and body.
fn post(dev: &Dev, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let addr = dev.url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let body = body.to_string();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: cli-test-key\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer}"));
    let (_, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[test]
fn dev_serves_the_demo_and_the_cli_drives_it() {
    let dev = start_dev();
    let (code, out, err) = run(&dev, &["agents", "list"]);
    assert_eq!(code, 0, "{err}");
    for name in ["support", "summarizer", "answer-and-summarize"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains("latest=v1"), "{out}");

    let (code, out, err) = run(&dev, &["run", "support", "hello there"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "hello there");
    assert!(err.contains("succeeded"), "{err}");
    assert!(err.contains("1 model call(s)"), "{err}");

    // The chain runs both agents: the summarizer echoes the support agent's answer.
    let (code, out, err) = run(&dev, &["run", "answer-and-summarize", "why?"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("why?"), "{out}");

    let (code, out, _) = run(&dev, &["runs", "list", "--json"]);
    assert_eq!(code, 0);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(runs.as_array().unwrap().len() >= 2, "{out}");
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();

    let (code, out, _) = run(&dev, &["runs", "events", &id, "--follow"]);
    assert_eq!(code, 0);
    assert!(out.contains("end"), "{out}");
    // A model line says how many tokens the model wrote.
    let model = out
        .lines()
        .find(|l| l.contains("  model  "))
        .unwrap_or_else(|| panic!("no model event: {out}"));
    let tokens = model
        .trim_end_matches(" tokens")
        .rsplit(' ')
        .next()
        .unwrap();
    assert!(tokens.parse::<u64>().is_ok(), "{model}");
    // Without --follow: the same table (the journal's events; the run has ended).
    let (code, table, err) = run(&dev, &["runs", "events", &id]);
    assert_eq!(code, 0, "{err}");
    let followed: Vec<&str> = out.lines().filter(|l| !l.contains(" end ")).collect();
    assert_eq!(table.lines().collect::<Vec<_>>(), followed);
    let (code, json, _) = run(&dev, &["runs", "events", &id, "--json"]);
    assert_eq!(code, 0);
    let events: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(events.as_array().unwrap().len(), followed.len(), "{json}");

    // A run, an agent and a replay are shown for people, and as JSON with --json.
    let (code, out, err) = run(&dev, &["runs", "get", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status") && out.contains("succeeded"), "{out}");
    assert!(out.contains("tokens in"), "{out}");
    let (code, json, _) = run(&dev, &["runs", "get", &id, "--json"]);
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(got["run_id"], id.as_str());
    let (code, out, err) = run(&dev, &["agents", "show", "support"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("latest") && out.contains("latest=v1"), "{out}");
    let (code, out, err) = run(&dev, &["runs", "replay", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("faithful"), "{out}");

    // `agentkit top --once`: the realtime window, with the calls just made.
    let (code, out, err) = run(&dev, &["top", "--once"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("requests/s") && out.contains("p99"), "{out}");
    let (code, out, _) = run(&dev, &["top", "--once", "--json"]);
    assert_eq!(code, 0);
    let top: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(top["requests_per_second"].as_f64().unwrap() > 0.0, "{top}");
    let (code, _, err) = run(&dev, &["top", "--interval", "0"]);
    assert_eq!(code, 2, "{err}");

    // Errors map to exit codes and say what to do.
    let (code, _, err) = run(&dev, &["run", "nobody", "x"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nobody"), "{err}");
    let (code, _, err) = run(&dev, &["runs", "cancel", &id]);
    assert_eq!(code, 4, "{err}");
    let bad_key = agentkit()
        .args(["agents", "list", "--server", &dev.url, "--key", "wrong"])
        .output()
        .unwrap();
    assert_eq!(bad_key.status.code(), Some(5));
}

#[test]
fn validate_points_at_the_broken_line_and_init_writes_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let ok = agentkit()
        .arg("init")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(ok.status.success());
    let v = agentkit()
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let v = agentkit()
        .args(["validate", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["valid"], true, "{report}");
    let again = agentkit()
        .arg("init")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(4));
    std::fs::write(
        dir.path().join("agentkit.yaml"),
        "agents:\n  a:\n    model: scripted\n    instructions: hi\nworkflows:\n  w:\n    type: chain\n    steps: [a, b]\n",
    )
    .unwrap();
    let bad = agentkit()
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("workflows.w.steps[1]"), "{err}");
    assert!(err.contains("agentkit.yaml"), "{err}");
}

#[test]
fn run_without_a_server_runs_in_process_and_says_it_is_offline() {
    let dir = tempfile::tempdir().unwrap();
    let out = agentkit()
        .args(["run", "support", "in process please"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "in process please"
    );
    assert!(err.contains("scripted model (offline)"), "{err}");
    assert!(
        !dir.path().join(".agentkit").exists(),
        "in-process runs store nothing on disk"
    );
}

#[tokio::test]
async fn mcp_serve_exposes_the_configs_agents_to_an_mcp_client_over_stdio() {
    use agentkit_mcp::{ConnectionManager, ServerConfig};
    let dir = tempfile::tempdir().unwrap();
    let init = agentkit()
        .arg("init")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(init.status.success());
    let config = dir.path().join("agentkit.yaml");
    let mut server = ServerConfig::stdio(
        "agentkit",
        env!("CARGO_BIN_EXE_agentkit"),
        ["mcp", "serve", "--config", config.to_str().unwrap()],
    );
    // Empty keys count as unset: the agents run offline whatever the environment holds.
    if let agentkit_mcp::ServerTransport::Stdio { env, .. } = &mut server.transport {
        env.insert("OPENAI_API_KEY".into(), String::new());
        env.insert("ANTHROPIC_API_KEY".into(), String::new());
    }
    let manager = ConnectionManager::new([server]);
    let conn = manager.connection("agentkit").await.unwrap();
    let mut tools: Vec<String> = conn
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    tools.sort();
    assert_eq!(tools, ["answer-and-summarize", "summarizer", "support"]);
    let args = serde_json::json!({"message": "over mcp"});
    let result = manager
        .call_tool(
            "agentkit",
            "support",
            args.as_object().unwrap().clone(),
            &agentkit_core::RunContext::new(),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&result.content).unwrap();
    assert!(text.contains("over mcp"), "{text}");
    manager.shutdown().await;
}

#[test]
fn schedules_are_listed_paused_triggered_and_their_history_shown() {
    let dev = start_dev();
    let (code, out, err) = run(&dev, &["schedules", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("daily-digest"), "{out}");
    assert!(out.contains("cron 0 9 * * 1-5 Europe/Paris"), "{out}");
    assert!(out.contains("UTC (in "), "the next fire: {out}");

    // A one-shot whose time has passed is shown as past, not as due in a minute. (Created
    // over the API, a past `at` is refused unless it is within `catch_up`.)
    let (status, p) = post(
        &dev,
        "/v1/schedules",
        &serde_json::json!({"name": "past", "target": "support", "at": "2001-01-01T00:00:00Z"}),
    );
    assert_eq!(status, 400, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("in the past"), "{p}");
    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    let (status, p) = post(
        &dev,
        "/v1/schedules",
        &serde_json::json!({"name": "late", "target": "support", "at": at.to_rfc3339(),
                            "catch_up": {"within": "1h"}}),
    );
    assert_eq!(status, 201, "{p}");
    let (code, out, err) = run(&dev, &["schedules", "list"]);
    assert_eq!(code, 0, "{err}");
    let late = out.lines().find(|l| l.starts_with("late")).unwrap();
    assert!(late.contains("(passed, 5m ago)"), "{late}");

    let (code, out, err) = run(&dev, &["schedules", "pause", "daily-digest"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused"), "{out}");
    let (_, out, _) = run(&dev, &["schedules", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["paused"], true);

    let (code, out, err) = run(&dev, &["schedules", "trigger", "daily-digest"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("of summarizer"), "{out}");
    let (code, out, err) = run(&dev, &["schedules", "history", "daily-digest", "--json"]);
    assert_eq!(code, 0, "{err}");
    let history: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["manual"], true);
    let (code, out, _) = run(&dev, &["schedules", "history", "daily-digest"]);
    assert_eq!(code, 0);
    assert!(out.contains("manual"), "{out}");

    let (code, out, err) = run(&dev, &["schedules", "resume", "daily-digest"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resumed"), "{out}");
    let (code, _, err) = run(&dev, &["schedules", "trigger", "nope"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nope"), "{err}");

    // Created and deleted from the CLI.
    let (code, out, err) = run(
        &dev,
        &[
            "schedules",
            "create",
            "hourly",
            "--target",
            "support",
            "--every",
            "1h",
            "--message",
            "status?",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created `hourly`: every 1h"), "{out}");
    let (_, out, _) = run(&dev, &["schedules", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hourly = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "hourly")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(
        hourly["input"],
        serde_json::json!({"message": "status?"}),
        "{hourly}"
    );
    let (code, _, err) = run(
        &dev,
        &["schedules", "create", "none", "--target", "support"],
    );
    assert_eq!(code, 2, "a schedule needs --cron, --every or --at: {err}");
    let (code, _, err) = run(
        &dev,
        &[
            "schedules",
            "create",
            "both",
            "--target",
            "support",
            "--every",
            "1h",
            "--at",
            "2030-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let (code, out, err) = run(&dev, &["schedules", "delete", "hourly"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted `hourly`"), "{out}");
    let (_, out, _) = run(&dev, &["schedules", "list"]);
    assert!(!out.contains("hourly"), "{out}");
    let (code, _, err) = run(&dev, &["schedules", "delete", "daily-digest"]);
    assert_eq!(code, 4, "a schedule of agentkit.yaml stays: {err}");
}

#[test]
fn keys_and_workspaces_are_managed_from_the_cli() {
    let dev = start_dev();
    let (code, out, err) = run(&dev, &["workspaces", "create", "acme/prod"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created workspace acme/prod"), "{out}");
    let (code, out, _) = run(&dev, &["workspaces", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("acme") && out.contains("built in"), "{out}");

    let (code, out, err) = run(
        &dev,
        &[
            "keys",
            "create",
            "--role",
            "developer",
            "--workspace",
            "acme/prod",
            "--name",
            "ci",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let secret = out
        .lines()
        .find(|l| l.starts_with("ak_"))
        .unwrap_or_else(|| panic!("no key in {out}"))
        .to_owned();
    let id = secret[3..15].to_owned();

    // The new key works in its own workspace, which has no agents yet.
    let as_key = |args: &[&str]| {
        let out = agentkit()
            .args(args)
            .args(["--server", &dev.url, "--key", &secret])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = as_key(&["agents", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "[]");
    // A developer key may not list keys.
    assert_eq!(as_key(&["keys", "list"]).0, 5);

    let (code, out, _) = run(&dev, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&id) && out.contains("developer") && out.contains("acme/prod"),
        "{out}"
    );
    assert!(!out.contains(&secret), "{out}");
    let (code, out, _) = run(
        &dev,
        &["keys", "list", "--json", "--workspace", "acme/prod"],
    );
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (code, out, err) = run(&dev, &["keys", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(as_key(&["agents", "list"]).0, 5);
    let (code, _, err) = run(&dev, &["keys", "create", "--role", "root"]);
    assert_eq!(code, 2, "{err}");
}

/// A TCP proxy to `target` that cuts the first SSE response it carries 400 bytes into its
/// body (both sockets shut), then passes everything through. Returns its URL and the number
/// of connections it accepted.
fn cutting_proxy(target: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let target = target.trim_start_matches("http://").to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let cut_done = Arc::new(AtomicBool::new(false));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            let (mut c_read, mut s_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            });
            let cut_done = Arc::clone(&cut_done);
            std::thread::spawn(move || {
                let (mut s_read, mut c_write) = (server, client);
                let mut buf = [0u8; 256];
                let mut seen: Vec<u8> = Vec::new();
                let mut after_sse: Option<usize> = None;
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if cut_done.load(Ordering::SeqCst) {
                        continue;
                    }
                    match after_sse.as_mut() {
                        Some(k) => *k += n,
                        None => {
                            seen.extend_from_slice(&buf[..n]);
                            if seen.windows(17).any(|w| w == b"text/event-stream") {
                                after_sse = Some(0);
                            }
                        }
                    }
                    if after_sse.is_some_and(|k| k >= 400) {
                        cut_done.store(true, Ordering::SeqCst);
                        let _ = c_write.shutdown(Shutdown::Both);
                        let _ = s_read.shutdown(Shutdown::Both);
                        break;
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[test]
fn runs_events_follow_reconnects_and_shows_every_event_once() {
    let dev = start_dev();
    let (code, _, err) = run(
        &dev,
        &["run", "answer-and-summarize", "tell me a long story"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&dev, &["runs", "list", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    // Without the proxy: the ids the stream holds.
    let (code, whole, _) = run(&dev, &["runs", "events", &id, "--follow"]);
    assert_eq!(code, 0, "{whole}");
    let ids = |text: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let expected = ids(&whole);
    assert!(expected.len() >= 3, "{whole}");

    let (proxy, accepted) = cutting_proxy(&dev.url);
    let out = agentkit()
        .args(["runs", "events", &id, "--follow", "--server", &proxy])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the stream was not cut, so nothing was tested: {text}"
    );
    assert_eq!(
        ids(&text),
        expected,
        "every event once, in order, across the reconnect"
    );
    assert!(text.contains("end"), "{text}");
}

#[test]
fn a_workspace_declares_lists_rotates_and_deletes_webhooks_from_the_cli() {
    let dev = start_dev();
    let (code, out, err) = run(
        &dev,
        &[
            "webhooks",
            "create",
            "tickets",
            "--target",
            "support",
            "--message-pointer",
            "/ticket/text",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("POST") && out.contains("/v1/hooks/default/default/tickets"),
        "{out}"
    );
    let secret = out
        .lines()
        .find(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no secret in {out}"))
        .to_owned();
    let (code, out, _) = run(&dev, &["webhooks", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("tickets") && out.contains("support"), "{out}");
    assert!(
        !out.contains(&secret),
        "a list never shows the secret: {out}"
    );
    let (code, out, _) = run(&dev, &["webhooks", "rotate", "tickets"]);
    assert_eq!(code, 0);
    assert!(!out.contains(&secret), "a new secret: {out}");
    let (code, out, _) = run(&dev, &["webhooks", "delete", "tickets"]);
    assert_eq!((code, out.trim()), (0, "deleted webhook tickets"));
    let (code, _, err) = run(&dev, &["webhooks", "delete", "tickets"]);
    assert_ne!(code, 0);
    assert!(err.contains("no webhook `tickets`"), "{err}");
    let (code, out, _) = run(&dev, &["webhooks", "list", "--json"]);
    assert_eq!((code, out.trim()), (0, "[]"));
}

/// `agentkit ARGS --server URL` with its stdout closed before it writes (as `| head` closes
/// it once it has read enough): exit code and stderr.
fn run_into_closed_pipe(dev: &Dev, args: &[&str]) -> (Option<i32>, String) {
    let mut child = agentkit()
        .args(args)
        .args(["--server", &dev.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn output_piped_into_head_ends_quietly() {
    let dev = start_dev();
    for _ in 0..3 {
        let (code, _, err) = run(&dev, &["run", "support", "hi"]);
        assert_eq!(code, 0, "{err}");
    }
    let (_, out, _) = run(&dev, &["runs", "list", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    for args in [
        &["runs", "list"][..],
        &["runs", "list", "--json"],
        &["keys", "list", "--json"],
        &["runs", "events", &id, "--follow"],
        &["agents", "list"],
    ] {
        let (code, err) = run_into_closed_pipe(&dev, args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn run_with_a_new_thread_starts_it_and_the_next_run_continues_it() {
    let dev = start_dev();
    let (code, out, err) = run(&dev, &["run", "support", "one", "--thread", "t1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "one");
    // The scripted model echoes the conversation: the second run sees the first.
    let (code, out, err) = run(&dev, &["run", "support", "two", "--thread", "t1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "one | two");
    let (code, out, err) = run(&dev, &["run", "support", "alone", "--thread", "t2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim(),
        "alone",
        "another thread is another conversation"
    );
}

#[test]
fn mcp_tools_lists_the_config_servers_even_with_agentkit_url_set() {
    // The README's 30-second block exports AGENTKIT_URL; `mcp tools [server]` must not take
    // it for the MCP server's name.
    let dir = tempfile::tempdir().unwrap();
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers");
    let python = peers.join(".venv/bin/python");
    assert!(
        python.exists(),
        "run scripts/install-python-clients.sh first ({python:?})"
    );
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(
        &config,
        format!(
            "mcp:\n  servers:\n    ops:\n      command: {}\n      args: [{}]\n      env: {{TOOL_LOG: {}}}\n",
            python.display(),
            peers.join("tool_log_server.py").display(),
            dir.path().join("tools.log").display(),
        ),
    )
    .unwrap();
    for (url, server) in [
        (None, Some("ops")),
        (Some("http://127.0.0.1:1"), Some("ops")),
        (Some("http://127.0.0.1:1"), None),
    ] {
        let mut c = agentkit();
        if let Some(u) = url {
            c.env("AGENTKIT_URL", u);
        }
        c.args(["mcp", "tools", "--config"]).arg(&config);
        if let Some(name) = server {
            c.arg(name);
        }
        let out = c.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "AGENTKIT_URL={url:?}: {stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("read_file") && stdout.contains("send_message"),
            "{stdout}"
        );
    }
}

/// The README's "Schedules of a version" block, run as written against `agentkit dev`: the
/// spec file it writes, then each `agentkit` line; the schedule is live only while prod
/// points at the version that declares it.
#[test]
fn the_readme_schedules_of_a_version_block_works_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("**Schedules of a version**").unwrap();
    let block = &readme[start..];
    let block = &block[block.find("```sh").unwrap() + 5..];
    let block = &block[..block.find("```").unwrap()];
    let lines: Vec<&str> = block
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect();
    let open = lines
        .iter()
        .position(|l| l.starts_with("cat > nightly.yaml"))
        .unwrap();
    let close = open + lines[open..].iter().position(|l| *l == "EOF").unwrap();
    let dev = start_dev();
    std::fs::write(
        dev.dir.path().join("nightly.yaml"),
        lines[open + 1..close].join("\n"),
    )
    .unwrap();
    let mut outputs = Vec::new();
    for line in &lines[close + 1..] {
        let command = line.split('#').next().unwrap().trim();
        let Some(args) = command.strip_prefix("agentkit ") else {
            continue;
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let (code, out, err) = run(&dev, &args);
        assert_eq!(code, 0, "{command}: {out}{err}");
        outputs.push((args.join(" "), out));
        if args[..2] == ["schedules", "list"] {
            // The block lists right after the second promote.
            let (_, list) = outputs.last().unwrap();
            let row = list
                .lines()
                .find(|l| l.starts_with("support.nightly"))
                .unwrap_or_else(|| panic!("{list}"));
            assert!(row.contains("cron 0 2 * * * Europe/Paris"), "{row}");
            assert!(row.contains("spec: support v2 @prod"), "{row}");
        }
    }
    let ran: Vec<&str> = outputs.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        ran,
        [
            "agents promote support latest prod",
            "agents deploy nightly.yaml",
            "agents diff support prod latest",
            "agents promote support latest prod",
            "schedules list",
            "agents rollback support prod",
        ]
    );
    let diff = &outputs[2].1;
    let paths: Vec<&str> = diff.lines().filter(|l| l.starts_with("  /")).collect();
    assert_eq!(paths, ["  /spec/schedules"], "{diff}");
    // Rolled back: prod's version declares no schedule, so none of the spec's is live.
    let (code, out, err) = run(&dev, &["schedules", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("support.nightly"), "{out}");
    assert!(out.contains("daily-digest"), "{out}");
}
