//! The credential vault end to end: `agentkit serve` with a master key connects to an MCP
//! server that demands a bearer token kept in the vault (`{{secret:NAME}}` in the server's
//! headers), the secret never appears in the database file or the logs, `/v1/secrets` shows
//! names only, workspaces keep separate vaults, and a missing secret is a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod inproc;

use inproc::call_as;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use common::upstream::Upstream;
use common::{Serve, free_port};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "vault-test-token-7f3a9c";
const MASTER: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// An MCP server over streamable HTTP that answers only requests carrying
/// `Authorization: Bearer TOKEN`, counting refusals.
async fn guarded_server() -> (Upstream, Arc<Mutex<usize>>) {
    use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
    let server = agentkit_mcp::McpServerBuilder::new("guarded", "1.0.0")
        .tool_fn(
            "whoami",
            "Says who you are",
            json!({"type": "object"}),
            |_, _| async move { Ok(CallToolResult::success(vec![ContentBlock::text("trusted")])) },
        )
        .build();
    let refused = Arc::new(Mutex::new(0usize));
    async fn guard(State(refused): State<Arc<Mutex<usize>>>, req: Request, next: Next) -> Response {
        let ok = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if ok {
            next.run(req).await
        } else {
            *refused.lock().unwrap() += 1;
            (axum::http::StatusCode::UNAUTHORIZED, "no").into_response()
        }
    }
    let counter = Arc::clone(&refused);
    let up = Upstream::serve_with(server, |app| {
        app.layer(axum::middleware::from_fn_with_state(counter, guard))
    })
    .await;
    (up, refused)
}

/// Call the guarded server's `whoami` tool (retried while the connection backs off).
async fn whoami(serve: &Serve) -> (u16, Value) {
    let mut answer = (0, Value::Null);
    for _ in 0..50 {
        answer = serve
            .call(
                Method::POST,
                "/v1/servers/guarded/call_tool",
                Some(json!({"name": "whoami", "arguments": {}})),
            )
            .await;
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    answer
}

#[tokio::test]
async fn mcp_credentials_come_from_the_vault_and_stay_out_of_the_database_and_logs() {
    let (guarded, refused) = guarded_server().await;
    let url = &guarded.url;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(
        &config,
        format!(
            "mcp:\n  servers:\n    guarded:\n      url: {url}\n      headers:\n        Authorization: \"Bearer {{{{secret:guarded_token}}}}\"\n"
        ),
    )
    .unwrap();
    let db_path = dir.path().join("db.sqlite");
    let db = format!("sqlite://{}", db_path.display());
    let log = dir.path().join("log");
    let serve = Serve::start_with_env(
        &config,
        &db,
        free_port(),
        &log,
        &[("AGENTKIT_MASTER_KEY", MASTER), ("RUST_LOG", "debug")],
    )
    .await;

    // Not set yet: the call fails and says which secret to set.
    let (s, b) = serve
        .call(Method::GET, "/v1/servers/guarded/tools", None)
        .await;
    assert!(s >= 400, "{s} {b}");
    let text = b.to_string();
    assert!(
        text.contains("guarded_token") && text.contains("/v1/secrets"),
        "{text}"
    );

    let (s, b) = serve
        .call(
            Method::PUT,
            "/v1/secrets/guarded_token",
            Some(json!({"value": TOKEN})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"], "guarded_token");
    assert!(!b.to_string().contains(TOKEN));
    let (s, b) = serve.call(Method::GET, "/v1/secrets", None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b.as_array().unwrap().len(), 1);
    assert!(!b.to_string().contains(TOKEN), "values are never listed");

    // Now the connection carries the token (after the failed attempt's short backoff).
    let answer = whoami(&serve).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["content"][0]["text"], "trusted");
    assert_eq!(
        *refused.lock().unwrap(),
        0,
        "no request went out without the token"
    );

    // Another workspace has its own vault; its admin cannot see or delete this secret.
    let (s, b) = inproc::create_workspace(&serve.base, common::KEY, "acme", "prod").await;
    assert_eq!(s, 201, "{b}");
    let body = json!({"workspace": "acme/prod", "role": "admin"});
    let (acme, _) = inproc::create_key(&serve.base, common::KEY, body).await;
    let (s, b) = call_as(&serve.base, &acme, Method::GET, "/v1/secrets", None).await;
    assert_eq!((s, b.clone()), (200, json!([])), "{b}");
    let (s, _) = call_as(
        &serve.base,
        &acme,
        Method::DELETE,
        "/v1/secrets/guarded_token",
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call_as(
        &serve.base,
        &acme,
        Method::PUT,
        "/v1/secrets/guarded_token",
        Some(json!({"value": "acme's own"})),
    )
    .await;
    assert_eq!(s, 200);
    // A viewer may not touch the vault; bad names and bodies are 4xx.
    let (_, b) = serve
        .call(Method::POST, "/v1/keys", Some(json!({"role": "viewer"})))
        .await;
    let viewer = b["key"].as_str().unwrap().to_owned();
    let (s, _) = call_as(&serve.base, &viewer, Method::GET, "/v1/secrets", None).await;
    assert_eq!(s, 403);
    let (s, b) = serve
        .call(
            Method::PUT,
            "/v1/secrets/bad%20name",
            Some(json!({"value": "x"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = serve
        .call(Method::PUT, "/v1/secrets/x", Some(json!({"val": "x"})))
        .await;
    assert!((400..500).contains(&s));
    let (s, _) = serve
        .call(
            Method::PUT,
            "/v1/secrets/x",
            Some(json!({"value": "y".repeat(70_000)})),
        )
        .await;
    assert_eq!(s, 400);

    // The CLI: the value comes from standard input; lists show names only.
    let cli = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentkit"))
            .args(args)
            .args(["--server", &serve.base, "--key", common::KEY])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = cli(&["secrets", "set", "cli_token"], "from-stdin-value\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("set secret cli_token"), "{text}");
    let (code, text) = cli(&["secrets", "list"], "");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("cli_token") && text.contains("guarded_token"),
        "{text}"
    );
    assert!(
        !text.contains("from-stdin-value") && !text.contains(TOKEN),
        "{text}"
    );
    let (code, text) = cli(&["secrets", "set", "empty"], "");
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("empty"), "{text}");
    let (code, text) = cli(&["secrets", "delete", "cli_token"], "");
    assert_eq!(code, Some(0), "{text}");

    // Rotate the master key: started with the new key and the old one as previous, the
    // server re-seals every secret; afterwards the new key alone opens them.
    drop(serve);
    let rotated = "ab".repeat(32);
    let serve = Serve::start_with_env(
        &config,
        &db,
        free_port(),
        &log,
        &[
            ("AGENTKIT_MASTER_KEY", rotated.as_str()),
            ("AGENTKIT_MASTER_KEY_PREVIOUS", MASTER),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let text = serve.log_text();
    assert!(
        text.contains("previous key(s)") && text.contains("resealed=2"),
        "{text}"
    );
    drop(serve);
    let serve = Serve::start_with_env(
        &config,
        &db,
        free_port(),
        &log,
        &[
            ("AGENTKIT_MASTER_KEY", rotated.as_str()),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let answer = whoami(&serve).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["content"][0]["text"], "trusted");

    guarded.stop();
    let logs = serve.log_text();
    drop(serve);
    // The bytes of the database (and its WAL) and the debug logs never hold the token.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{} holds the secret",
            path.display()
        );
    }
    assert!(!logs.contains(TOKEN));
}

#[tokio::test]
async fn without_a_master_key_the_vault_says_how_to_configure_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(&config, "agents: {}\n").unwrap();
    let serve = Serve::start(&config, "memory", free_port(), &dir.path().join("log")).await;
    let (s, b) = serve
        .call(Method::PUT, "/v1/secrets/x", Some(json!({"value": "y"})))
        .await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("AGENTKIT_MASTER_KEY"),
        "{b}"
    );
}
