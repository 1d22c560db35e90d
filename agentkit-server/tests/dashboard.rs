//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver, started by
//! the test on a free 127.0.0.1 port): sign in with a key, open every page, approve a pending
//! tool call (the run then finishes), cancel a running run, promote a version, and check the
//! browser console stayed clean. Screenshots of every page are saved as PNG files under
//! `<target>/dashboard-screenshots/` (the path is printed).
//!
//! Needs Debian's `chromium` and `chromium-driver`: `bash scripts/install-chromium.sh`.
#![cfg(feature = "dashboard")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod inproc;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::policy::{Policy, PolicyLayer};
use agentkit_core::{Agent, AgentLlm, Config, FnTool, ProviderErrorKind, ScriptedProvider};
use agentkit_server::Server;
use agentkit_server::policy::StoreAudit;
use agentkit_server::spec::{DeclarativeBuilder, ModelFactory};
use common::upstream::{Upstream, with_add};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{Value, json};

const KEY: &str = "dashboard-test-key";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

const POLICY: &str = r#"
policies:
  docs:
    tools:
      allow: ["fs__*", "slack__*"]
    chains:
      - pattern: ["fs__read_*", "slack__send_message"]
        action: require_approval
        reason: posting after reading files may leak them
"#;

/// chromedriver, killed (by its PID) when dropped, also when the test fails.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_driver() -> Driver {
    assert!(
        Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
        "the dashboard test needs Chromium and chromedriver ({CHROMIUM}, {CHROMEDRIVER}); \
         install them with `bash scripts/install-chromium.sh` (Debian packages chromium and \
         chromium-driver)"
    );
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let driver = Driver { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on 127.0.0.1:{port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

/// Where the browser saves downloads (the audit exports).
fn downloads(profile: &Path) -> PathBuf {
    profile.join("downloads")
}

/// Wait for the browser to finish downloading `name`.
async fn downloaded(profile: &Path, name: &str) -> String {
    let path = downloads(profile).join(name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the browser did not download {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
            "prefs": {
                "download.default_directory": downloads(profile).display().to_string(),
                "download.prompt_for_download": false,
            },
        },
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("opening a Chromium session through chromedriver")
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (st, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(st, 200, "GET {path}: {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (st, v) = self.call(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&st), "POST {path}: {st} {v}");
        v
    }

    /// Poll until `f` holds of `GET path`.
    async fn until(&self, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get(path).await;
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: still {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Fixture {
    api: Api,
    /// `stepper`'s tool answers once a permit is added here.
    gate: Arc<tokio::sync::Semaphore>,
    _dir: tempfile::TempDir,
    _served: inproc::InProcess,
    _mcp: Upstream,
}

/// An MCP server over streamable HTTP on 127.0.0.1 with one tool, `add`; stops when dropped.
async fn calc_server() -> Upstream {
    Upstream::serve(with_add(agentkit_mcp::McpServerBuilder::new("calc", "1.0.0")).build()).await
}

/// A server with: `poster` (reads a file, then posts to Slack, which needs approval), `slow`
/// (calls a tool that takes minutes), `echo`, `flaky` (its model fails), and a declarative
/// `writer` with two versions, `stage` on v2 and `prod` on v1.
async fn start_server() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = inproc::sqlite(dir.path()).await;
    let memory = || Server::memory_for(Arc::clone(&store));
    let config = Config::from_yaml_str(POLICY, None).unwrap();
    let policy = Policy::compile("docs", &config.policies["docs"]).unwrap();
    let audit = Arc::new(StoreAudit::new(Arc::clone(&store)));

    let read = FnTool::new("fs__read_file", "Read a file", |_: Value| async {
        Ok::<_, String>("# Docs\nHello.")
    });
    let send = FnTool::new("slack__send_message", "Post to Slack", |_: Value| async {
        Ok::<_, String>("sent")
    });
    let poster_model = ScriptedProvider::new()
        .then_tool_call("fs__read_file", json!({"path": "/docs/readme.md"}))
        .then_tool_call(
            "slack__send_message",
            json!({"channel": "#docs", "text": "Docs say hello"}),
        )
        .then_text("Posted the docs to #docs.");
    let poster = AgentLlm::new(
        Agent::new("poster", "Read docs and post them.")
            .with_tool(read)
            .with_tool(send),
        poster_model,
    )
    .with_memory(memory())
    .with_tool_layer(PolicyLayer::new(policy).with_audit(audit));

    let wait = FnTool::new(
        "warehouse__query",
        "Query the warehouse",
        |_: Value| async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok::<_, String>("rows")
        },
    );
    let slow = AgentLlm::new(
        Agent::new("slow", "Query the warehouse.").with_tool(wait),
        ScriptedProvider::new()
            .then_tool_call(
                "warehouse__query",
                json!({"sql": "select count(*) from orders"}),
            )
            .then_text("done"),
    )
    .with_memory(memory());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = Arc::clone(&gate);
    let fetch = FnTool::new("crm__lookup", "Look up a customer", move |_: Value| {
        let g = Arc::clone(&g);
        async move {
            let _permit = g.acquire().await.map_err(|e| e.to_string())?;
            Ok::<_, String>("customer 42: gold tier")
        }
    });
    let stepper = AgentLlm::new(
        Agent::new("stepper", "Look the customer up.").with_tool(fetch),
        ScriptedProvider::new()
            .then_tool_call("crm__lookup", json!({"customer": 42}))
            .then_text("Customer 42 is gold tier."),
    )
    .with_memory(memory());
    let echo = AgentLlm::new(Agent::new("echo", "Repeat."), ScriptedProvider::echo())
        .with_memory(memory());
    let flaky = AgentLlm::new(
        Agent::new("flaky", "Fail."),
        ScriptedProvider::new().then_error(ProviderErrorKind::BadRequest, "the prompt is invalid"),
    )
    .with_memory(memory());

    let models =
        ModelFactory::offline().with_provider("scripted:echo", Arc::new(ScriptedProvider::echo()));
    let builder = DeclarativeBuilder::new(&Config::new(), models);
    let mcp = calc_server().await;
    let manager =
        agentkit_mcp::ConnectionManager::new([
            agentkit_mcp::ServerConfig::http("calc", &mcp.url).with_description("Arithmetic")
        ]);
    let server = Server::builder(Arc::clone(&store))
        .admin_key(KEY)
        .mcp_servers(manager)
        .spec_builder(Arc::new(builder))
        .agent_llm("poster", Arc::new(poster), "Posts docs to Slack")
        .agent_llm("slow", Arc::new(slow), "Queries the warehouse slowly")
        .agent_llm("stepper", Arc::new(stepper), "Looks customers up")
        .agent_llm("echo", Arc::new(echo), "Repeats what it was told")
        .agent_llm("flaky", Arc::new(flaky), "Always fails")
        .budgets(agentkit_runtime::SpendLedger::new(
            Arc::clone(&store),
            agentkit_runtime::BudgetRules::new().with_agent(
                "poster",
                agentkit_core::config::PeriodBudget::new(
                    25.0,
                    agentkit_core::config::BudgetPeriod::Month,
                ),
            ),
        ))
        .poll_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let served = inproc::serve(server).await;
    Fixture {
        api: Api {
            base: served.base.clone(),
            http: reqwest::Client::new(),
        },
        gate,
        _dir: dir,
        _served: served,
        _mcp: mcp,
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Open `hash` and wait until the page `page` has rendered.
async fn open(c: &Client, base: &str, hash: &str, page: &str) {
    c.goto(&format!("{base}/{hash}")).await.unwrap();
    ready(c, page).await;
}

async fn ready(c: &Client, page: &str) {
    let css = format!("main[data-page=\"{page}\"][data-ready=\"true\"]");
    if let Err(e) = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(&css))
        .await
    {
        let text = match c.find(Locator::Css("main")).await {
            Ok(m) => m.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        panic!("page {page} did not render ({e}); the page shows: {text}");
    }
    if let Ok(p) = c.find(Locator::Css("#page-error")).await {
        panic!("page {page} failed: {}", p.text().await.unwrap());
    }
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn wait_css(c: &Client, css: &str, what: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{what}: no {css} ({e})"))
}

/// The browser's console entries at level SEVERE since the last call (chromedriver's log
/// endpoint), or `None` when this chromedriver does not offer it.
async fn severe_console(driver: &Driver, c: &Client) -> Option<Vec<String>> {
    let sid = c.session_id().await.ok()??;
    let res = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/session/{sid}/se/log",
            driver.port
        ))
        .json(&json!({"type": "browser"}))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let v: Value = res.json().await.ok()?;
    Some(
        v["value"]
            .as_array()?
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect(),
    )
}

/// Script errors the page collected (uncaught errors, rejections, CSP violations).
async fn page_errors(c: &Client) -> Vec<String> {
    let v = c
        .execute(
            "return window.__errors || ['the dashboard did not load']",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

async fn flow(f: &Fixture, driver: &Driver, c: &Client, dir: &Path, profile: &Path) {
    let api = &f.api;
    let base = api.base.as_str();

    // Data for the pages: finished runs (one failed), a run waiting for approval, a run busy
    // in a slow tool, two versions of `writer` with labels, and a schedule.
    for m in ["hello", "status report", "summarise the week"] {
        api.post("/v1/agents/echo/runs", json!({"message": m, "wait": true}))
            .await;
    }
    api.post(
        "/v1/agents/flaky/runs",
        json!({"message": "x", "wait": true}),
    )
    .await;
    let poster = api
        .post(
            "/v1/agents/poster/runs",
            json!({"message": "post the docs"}),
        )
        .await;
    let poster = poster["run_id"].as_str().unwrap().to_owned();
    let slow = api
        .post(
            "/v1/agents/slow/runs",
            json!({"message": "count the orders"}),
        )
        .await;
    let slow = slow["run_id"].as_str().unwrap().to_owned();
    for instructions in ["Write briefly.", "Write briefly and cite sources."] {
        api.post(
            "/v1/agents",
            json!({"name": "writer", "kind": "agent",
                   "spec": {"model": "scripted:echo", "instructions": instructions,
                            "schedules": {"digest": {"cron": "0 8 * * 1"}}}}),
        )
        .await;
    }
    for (label, version) in [("prod", 1), ("stage", 2)] {
        let (st, v) = api
            .call(
                reqwest::Method::PUT,
                &format!("/v1/agents/writer/labels/{label}"),
                Some(json!({"version": version})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    api.post(
        "/v1/schedules",
        json!({"name": "nightly-report", "target": "echo", "cron": "0 3 * * *"}),
    )
    .await;
    api.until(&format!("/v1/runs/{poster}"), "poster waits", |r| {
        r["status"] == "waiting_approval"
    })
    .await;
    api.until(
        &format!("/v1/runs/{slow}/events"),
        "slow called its tool",
        |e| e.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;

    // The shell is public; without a key it shows the sign-in form, and a wrong key is refused
    // with the server's explanation.
    c.goto(&format!("{base}/")).await.unwrap();
    ready(c, "login").await;
    shot(c, dir, "login").await;
    wait_css(c, "#key", "login")
        .await
        .send_keys("not-the-key")
        .await
        .unwrap();
    c.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let refused = c
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::XPath(
            "//p[@id='login-error'][contains(., 'not a valid API key')]",
        ))
        .await;
    assert!(refused.is_ok(), "a wrong key was not refused visibly");
    // The 401 of that attempt is in the console (which shows the console check can see
    // errors); count from here.
    if let Some(severe) = severe_console(driver, c).await {
        assert!(severe.iter().any(|m| m.contains("401")), "{severe:?}");
    }

    let key = c.find(Locator::Css("#key")).await.unwrap();
    key.clear().await.unwrap();
    key.send_keys(KEY).await.unwrap();
    c.find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    ready(c, "overview").await;
    let overview = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(overview.contains("Error rate"), "{overview}");
    assert!(overview.contains("echo"), "{overview}");
    let bars = c.find_all(Locator::Css("svg.chart rect")).await.unwrap();
    assert!(!bars.is_empty(), "the runs chart has no bars");
    shot(c, dir, "overview").await;

    // The SSE parser of the page gives the same events however the stream is cut.
    let split = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            import('/ui/api.js').then(({ SseParser }) => {
              const text = ': comment\r\nevent: model\r\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
                + 'data:no space\n\nevent: end\rdata: {"x": "\u00e9\u20ac"}\r\r\n';
              const run = (chunks) => { const p = new SseParser(); return chunks.flatMap((c) => p.push(c)); };
              const want = JSON.stringify(run([text]));
              const bad = [];
              for (let i = 0; i <= text.length; i++) {
                for (let j = i; j <= text.length; j += 3) {
                  const got = JSON.stringify(run([text.slice(0, i), text.slice(i, j), text.slice(j)]));
                  if (got !== want) bad.push([i, j, got]);
                }
              }
              const bytes = JSON.stringify(run(text.split('')));
              done({ want: JSON.parse(want), bad: bad.slice(0, 3), bytes: bytes === want });
            }).catch((e) => done({ error: String(e) }));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        split["want"],
        json!([
            {"event": "model", "id": "7", "data": "{\"a\":\n1}"},
            {"event": "message", "id": null, "data": "no space"},
            {"event": "end", "id": null, "data": "{\"x\": \"\u{e9}\u{20ac}\"}"},
        ]),
        "{split}"
    );
    assert_eq!(split["bad"], json!([]), "{split}");
    assert_eq!(split["bytes"], true, "{split}");

    // Every page renders.
    for (hash, page, name, expect) in [
        ("#/agents", "agents", "agents", "writer"),
        ("#/runs", "runs", "runs", "poster"),
        ("#/runs?status=failed", "runs", "runs-failed", "flaky"),
        ("#/schedules", "schedules", "schedules", "nightly-report"),
        ("#/audit", "audit", "audit", "approval_requested"),
        ("#/keys", "keys", "keys-list", "Create a key"),
        ("#/budgets", "budgets", "budgets", "agent poster"),
    ] {
        open(c, base, hash, page).await;
        let text = c
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(expect),
            "{hash} does not show {expect}: {text}"
        );
        shot(c, dir, name).await;
    }

    // MCP servers: the tools of `calc`, and the playground calls one.
    open(c, base, "#/servers", "servers").await;
    let text = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("calc") && text.contains("Arithmetic"),
        "{text}"
    );
    c.find(Locator::Css("button.open-server"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(c, "#tool option[value=\"add\"]", "the tools of calc").await;
    let args = c.find(Locator::Css("#arguments")).await.unwrap();
    args.clear().await.unwrap();
    args.send_keys(r#"{"a": 2, "b": 40}"#).await.unwrap();
    c.find(Locator::Css("#call"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = wait_css(c, "#call-result pre", "the playground's answer").await;
    assert_eq!(result.text().await.unwrap(), "42");
    shot(c, dir, "servers").await;

    // Schedules: a spec's schedule names the agent version and label that make it live;
    // trigger one by hand; its history shows the run.
    open(c, base, "#/schedules", "schedules").await;
    let owner = c
        .find(Locator::Css("main .owner"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(owner, "spec of writer v1 (prod)");
    let rows = c.find_all(Locator::Css("main tbody tr")).await.unwrap();
    assert!(
        rows[0].text().await.unwrap().contains("nightly-report"),
        "the first row's Trigger now button is nightly-report's"
    );
    c.find(Locator::Css("button.trigger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(c, "#history tbody a", "the trigger history").await;
    let history = api.get("/v1/schedules/nightly-report/history").await;
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history[0]["manual"], true);

    // Audit: the search narrows the entries.
    open(c, base, "#/audit", "audit").await;
    c.find(Locator::Css("#audit-search"))
        .await
        .unwrap()
        .send_keys("approval_requested")
        .await
        .unwrap();
    let count = c
        .find(Locator::Css("main p.muted"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let all = api.get("/v1/audit").await["entries"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        count,
        format!("1 of {all} entries"),
        "the search of the audit log"
    );
    assert!(all > 1, "{all}");
    // Both exports download the whole log.
    c.find(Locator::Css("#export-csv"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let csv = downloaded(profile, "audit.csv").await;
    assert!(csv.starts_with("seq,at_ms,outcome,"), "{csv}");
    assert_eq!(csv.trim_end().lines().count(), all + 1, "{csv}");
    c.find(Locator::Css("#export-json"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let exported: Value = serde_json::from_str(&downloaded(profile, "audit.json").await).unwrap();
    assert_eq!(exported.as_array().unwrap().len(), all, "{exported}");

    // Keys: create one; its secret is shown once, and it works.
    open(c, base, "#/keys", "keys").await;
    c.find(Locator::Css("#key-name"))
        .await
        .unwrap()
        .send_keys("ci reader")
        .await
        .unwrap();
    c.find(Locator::Css("#create-key"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let secret = wait_css(c, "#created-key .secret", "the new key")
        .await
        .text()
        .await
        .unwrap();
    let res = reqwest::Client::new()
        .get(format!("{base}/v1/runs?limit=1"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the key made in the dashboard works");
    let keys = api.get("/v1/keys").await;
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "ci reader" && k["role"] == "viewer"),
        "{keys}"
    );
    shot(c, dir, "keys").await;

    // Server data is text, never markup: a message with HTML shows as typed and runs nothing.
    let hostile = r#"<img src=x onerror="window.__xss=1"><b>bold</b>"#;
    let xss = api
        .post(
            "/v1/agents/echo/runs",
            json!({"message": hostile, "wait": true}),
        )
        .await;
    open(
        c,
        base,
        &format!("#/runs/{}", xss["run_id"].as_str().unwrap()),
        "run",
    )
    .await;
    let shown = c
        .find(Locator::Css("#run-header"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains(hostile), "{shown}");
    assert!(
        c.find_all(Locator::Css("main img, main b"))
            .await
            .unwrap()
            .is_empty()
    );
    let ran = c
        .execute("return window.__xss === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(ran, json!(true), "markup from the server was executed");

    // A run page follows its run live: the tool result and the end arrive without a reload.
    let stepper = api
        .post("/v1/agents/stepper/runs", json!({"message": "who is 42?"}))
        .await;
    let stepper = stepper["run_id"].as_str().unwrap().to_owned();
    open(c, base, &format!("#/runs/{stepper}"), "run").await;
    wait_css(c, "#timeline li.event.model", "the first model call").await;
    assert!(
        c.find_all(Locator::Css("#timeline li.event.tool_result"))
            .await
            .unwrap()
            .is_empty()
    );
    // Pause it while its tool waits, then resume it from the page.
    c.find(Locator::Css("#pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(c, "#run-status[data-status=\"paused\"]", "paused").await;
    api.until(&format!("/v1/runs/{stepper}"), "stepper paused", |r| {
        r["status"] == "paused"
    })
    .await;
    wait_css(c, "#resume", "the resume button")
        .await
        .click()
        .await
        .unwrap();
    api.until(&format!("/v1/runs/{stepper}"), "stepper resumed", |r| {
        r["status"] == "running"
    })
    .await;
    f.gate.add_permits(1);
    wait_css(c, "#timeline li.event.tool_result", "the tool result, live").await;
    assert!(
        c.find_all(Locator::Css("#timeline li.pending[data-call]"))
            .await
            .unwrap()
            .is_empty(),
        "the answered call still shows as working"
    );
    wait_css(c, "#run-status[data-status=\"succeeded\"]", "the end, live").await;
    let out = wait_css(c, "#run-output", "the output, live")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(out, "Customer 42 is gold tier.");

    // Approve the pending call from the inbox, with a reason; the run then finishes.
    open(c, base, "#/approvals", "approvals").await;
    let item = format!(".approval[data-run=\"{poster}\"]");
    let text = wait_css(c, &item, "approvals").await.text().await.unwrap();
    assert!(text.contains("slack__send_message"), "{text}");
    assert!(
        text.contains("fs__read_file"),
        "the tool chain is missing: {text}"
    );
    assert!(text.contains("#docs"), "the arguments are missing: {text}");
    shot(c, dir, "approvals").await;
    c.find(Locator::Css(&format!("{item} textarea.reason")))
        .await
        .unwrap()
        .send_keys("fine to share")
        .await
        .unwrap();
    c.find(Locator::Css(&format!("{item} button.approve")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_css(c, "#no-approvals", "the approved call left the inbox").await;
    let done = api
        .until(
            &format!("/v1/runs/{poster}"),
            "approved run finishes",
            |r| r["status"] == "succeeded",
        )
        .await;
    assert_eq!(done["output"]["text"], "Posted the docs to #docs.");
    let decided = api.get("/v1/approvals?status=approved").await;
    assert_eq!(decided[0]["decision_reason"], "fine to share", "{decided}");

    // The finished run's timeline: model calls, tool results with arguments, the approval.
    open(c, base, &format!("#/runs/{poster}"), "run").await;
    wait_css(c, "#run-status[data-status=\"succeeded\"]", "run detail").await;
    let models = c
        .find_all(Locator::Css("#timeline li.event.model"))
        .await
        .unwrap();
    assert_eq!(models.len(), 3, "three model calls");
    let events = api.get(&format!("/v1/runs/{poster}/events")).await;
    let journal_tools = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "tool_result")
        .count();
    let tools = c
        .find_all(Locator::Css("#timeline li.event.tool_result"))
        .await
        .unwrap();
    assert_eq!(
        tools.len(),
        journal_tools,
        "every tool result is shown: {events:#}"
    );
    assert!(journal_tools >= 2, "{events:#}");
    let text = c
        .find(Locator::Css("#timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("/docs/readme.md"), "{text}");
    assert!(text.contains("tokens"), "{text}");
    assert!(text.contains("Tool result slack__send_message"), "{text}");
    // The whole page, for the README.
    let height = c
        .execute("return document.documentElement.scrollHeight", vec![])
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    c.set_window_size(1280, u32::try_from(height).unwrap().clamp(1000, 4000) + 40)
        .await
        .unwrap();
    shot(c, dir, "run-detail").await;
    c.set_window_size(1280, 1000).await.unwrap();
    // The replay's report is the API's: faithful or not, with the same divergences.
    let report = api
        .post(&format!("/v1/runs/{poster}/replay"), json!({}))
        .await;
    c.find(Locator::Css("#replay-run"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let verdict = wait_css(c, "#replay .status", "replay report").await;
    let want = if report["faithful"] == true {
        "succeeded"
    } else {
        "failed"
    };
    assert_eq!(verdict.text().await.unwrap(), want, "{report}");
    let shown = c.find_all(Locator::Css("#divergences li")).await.unwrap();
    assert_eq!(
        shown.len(),
        report["divergences"].as_array().unwrap().len(),
        "{report}"
    );
    for (li, d) in shown.iter().zip(report["divergences"].as_array().unwrap()) {
        assert_eq!(li.text().await.unwrap(), d.as_str().unwrap());
    }
    shot(c, dir, "run-replay").await;

    // The slow run, live: its model call is on the timeline while its tool works; cancel it.
    open(c, base, &format!("#/runs/{slow}"), "run").await;
    wait_css(c, "#run-status[data-status=\"running\"]", "slow run").await;
    wait_css(c, "#timeline li.event.model", "the live timeline").await;
    let working = wait_css(c, "#timeline li.pending", "the tool at work").await;
    assert_eq!(
        working.text().await.unwrap().lines().next().unwrap(),
        "Tool warehouse__query is working…"
    );
    let state = c
        .find(Locator::Css("#stream-state"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(state, "Following the run live…");
    shot(c, dir, "run-live").await;
    c.find(Locator::Css("#control-reason"))
        .await
        .unwrap()
        .send_keys("takes too long")
        .await
        .unwrap();
    c.find(Locator::Css("#cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let cancelled = api
        .until(&format!("/v1/runs/{slow}"), "slow run cancelled", |r| {
            r["status"] == "cancelled"
        })
        .await;
    assert!(
        cancelled["error"]
            .as_str()
            .unwrap_or_default()
            .contains("takes too long"),
        "{cancelled}"
    );
    wait_css(
        c,
        "#run-status[data-status=\"cancelled\"]",
        "the page shows the cancel",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .find_all(Locator::Css("#timeline li.pending"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the cancelled tool still shows as working"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Promote stage (v2) to prod (v1): prod moves to v2; the diff shows the change.
    open(c, base, "#/agents/writer", "agent").await;
    let diff = wait_css(c, "#diff", "diff").await.text().await.unwrap();
    assert!(diff.contains("/spec/instructions"), "{diff}");
    assert!(diff.contains("cite sources"), "{diff}");
    c.find(Locator::Css("#promote-from"))
        .await
        .unwrap()
        .select_by_value("stage")
        .await
        .unwrap();
    c.find(Locator::Css("#promote-to"))
        .await
        .unwrap()
        .send_keys("prod")
        .await
        .unwrap();
    c.find(Locator::Css("#promote"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    api.until("/v1/agents/writer", "prod moved to v2", |e| {
        e["labels"]["prod"] == 2
    })
    .await;
    wait_css(
        c,
        "button.rollback[data-label=\"prod\"]:not([disabled])",
        "prod can be rolled back after the promote",
    )
    .await;
    shot(c, dir, "agent").await;
    // And roll prod back to v1.
    c.find(Locator::Css("button.rollback[data-label=\"prod\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    api.until("/v1/agents/writer", "prod rolled back to v1", |e| {
        e["labels"]["prod"] == 1
    })
    .await;
    ready(c, "agent").await;

    // Nothing went wrong in the page.
    let errors = page_errors(c).await;
    assert!(
        errors.is_empty(),
        "script errors in the dashboard: {errors:?}"
    );
    match severe_console(driver, c).await {
        Some(severe) => assert!(severe.is_empty(), "browser console errors: {severe:#?}"),
        None => eprintln!("chromedriver offers no browser log; checked window.__errors only"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let driver = start_driver();
    let profile = tempfile::tempdir().unwrap();
    let fixture = start_server().await;
    let client = browser(&driver, profile.path()).await;
    let dir = screenshot_dir();
    let _ = std::fs::remove_file(dir.join("failure.png"));
    let outcome =
        std::panic::AssertUnwindSafe(flow(&fixture, &driver, &client, &dir, profile.path()))
            .catch_unwind()
            .await;
    if outcome.is_err() {
        let _ = client
            .screenshot()
            .await
            .map(|png| std::fs::write(dir.join("failure.png"), png));
    }
    let _ = client.close().await;
    drop(driver);
    eprintln!("dashboard screenshots: {}", dir.display());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn the_shell_is_public_with_a_strict_csp_and_revalidates_with_etags() {
    let f = start_server().await;
    let http = reqwest::Client::new();
    let res = http.get(format!("{}/", f.api.base)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["cache-control"], "no-cache");
    let body = res.text().await.unwrap();
    assert!(body.contains("/ui/app.js"), "{body}");
    for (file, ty) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let res = http
            .get(format!("{}/ui/{file}", f.api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{file}");
        assert_eq!(res.headers()["content-type"], ty, "{file}");
        let etag = res.headers()["etag"].clone();
        let again = http
            .get(format!("{}/ui/{file}", f.api.base))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{file}");
    }
    let missing = http
        .get(format!("{}/ui/secrets.txt", f.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The data stays behind the key.
    let res = http
        .get(format!("{}/v1/runs", f.api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
