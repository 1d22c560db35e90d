//! OAuth 2.1 against a local authorization server and a protected MCP server (axum, started
//! by the test on 127.0.0.1): discovery from the 401, dynamic client registration,
//! authorization code with PKCE (S256 checked), client credentials, refresh after expiry and
//! after a 401 mid-session, re-authorization when the refresh token is gone, tokens in a file
//! store.
#![cfg(feature = "oauth")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentkit_core::{McpOAuth, RunContext};
use agentkit_mcp::oauth::{AuthorizationHandler, FileTokenStore, TokenStore};
use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock};
use agentkit_mcp::{ConnectionManager, HttpOptions, McpServerBuilder, ServerConfig};
use async_trait::async_trait;
use axum::Json;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct AuthState {
    base: String,
    /// code -> (code_challenge, client_id, redirect_uri)
    codes: HashMap<String, (String, String, String)>,
    /// access token -> expiry
    access: HashMap<String, Instant>,
    refresh: HashSet<String>,
    registered: Vec<String>,
    /// grant types of the token requests, in order
    grants: Vec<String>,
    /// `resource` parameters of token requests
    resources: Vec<String>,
    next: u64,
    expires_in: u64,
}

type Shared = Arc<Mutex<AuthState>>;

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn issue(s: &mut AuthState, with_refresh: bool) -> Value {
    s.next += 1;
    let at = format!("at-{}", s.next);
    s.access.insert(
        at.clone(),
        Instant::now() + Duration::from_secs(s.expires_in),
    );
    let mut body = json!({"access_token": at, "token_type": "Bearer", "expires_in": s.expires_in, "scope": "mcp"});
    if with_refresh {
        let rt = format!("rt-{}", s.next);
        s.refresh.insert(rt.clone());
        body["refresh_token"] = json!(rt);
    }
    body
}

fn oauth_error(code: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": code}))).into_response()
}

async fn token(
    State(st): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut s = st.lock().unwrap();
    let grant = f.get("grant_type").cloned().unwrap_or_default();
    s.grants.push(grant.clone());
    if let Some(r) = f.get("resource") {
        s.resources.push(r.clone());
    }
    match grant.as_str() {
        "authorization_code" => {
            let Some((challenge, _client, redirect)) =
                f.get("code").and_then(|c| s.codes.remove(c))
            else {
                return oauth_error("invalid_grant");
            };
            let verifier = f.get("code_verifier").cloned().unwrap_or_default();
            if b64url(&sha2::Sha256::digest(verifier.as_bytes())) != challenge
                || f.get("redirect_uri") != Some(&redirect)
            {
                return oauth_error("invalid_grant");
            }
            Json(issue(&mut s, true)).into_response()
        }
        "refresh_token" => {
            if !f.get("refresh_token").is_some_and(|r| s.refresh.remove(r)) {
                return oauth_error("invalid_grant");
            }
            Json(issue(&mut s, true)).into_response()
        }
        "client_credentials" => {
            // client_secret_post or client_secret_basic
            let basic = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let post_ok = f.get("client_id").map(String::as_str) == Some("svc")
                && f.get("client_secret").map(String::as_str) == Some("s3cret");
            let basic_ok = basic.as_deref() == Some(&format!("Basic {}", b64std("svc:s3cret")));
            if !(post_ok || basic_ok) {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"error": "invalid_client"})),
                )
                    .into_response();
            }
            Json(issue(&mut s, false)).into_response()
        }
        _ => oauth_error("unsupported_grant_type"),
    }
}

fn b64std(s: &str) -> String {
    let u = b64url(s.as_bytes()).replace('-', "+").replace('_', "/");
    let pad = (4 - u.len() % 4) % 4;
    format!("{u}{}", "=".repeat(pad))
}

async fn authorize(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = st.lock().unwrap();
    let client = q.get("client_id").cloned().unwrap_or_default();
    if q.get("response_type").map(String::as_str) != Some("code")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
        || !s.registered.contains(&client)
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    s.next += 1;
    let code = format!("code-{}", s.next);
    let redirect = q.get("redirect_uri").cloned().unwrap_or_default();
    s.codes.insert(
        code.clone(),
        (q["code_challenge"].clone(), client, redirect.clone()),
    );
    let state = q.get("state").cloned().unwrap_or_default();
    let location = format!("{redirect}?code={code}&state={state}");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn register(State(st): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut s = st.lock().unwrap();
    s.next += 1;
    let id = format!("dyn-{}", s.next);
    s.registered.push(id.clone());
    let mut out = body.clone();
    out["client_id"] = json!(id);
    out["token_endpoint_auth_method"] = json!("none");
    (StatusCode::CREATED, Json(out)).into_response()
}

async fn require_token(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let (ok, base) = {
        let s = st.lock().unwrap();
        let ok = token
            .as_ref()
            .and_then(|t| s.access.get(t))
            .is_some_and(|exp| *exp > Instant::now());
        (ok, s.base.clone())
    };
    if ok {
        return next.run(req).await;
    }
    let challenge = format!(
        r#"Bearer error="invalid_token", resource_metadata="{base}/.well-known/oauth-protected-resource/mcp", scope="mcp""#
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
    )
        .into_response()
}

struct Servers {
    url: String,
    state: Shared,
    stop: CancellationToken,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(expires_in: u64) -> Servers {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state: Shared = Arc::new(Mutex::new(AuthState {
        base: base.clone(),
        expires_in,
        registered: vec!["svc".into()],
        ..AuthState::default()
    }));
    let mcp = McpServerBuilder::new("secure", "1.0.0")
        .tool_fn(
            "hello",
            "Says hi",
            json!({"type": "object"}),
            |_a, _c| async { Ok(CallToolResult::success(vec![ContentBlock::text("hi")])) },
        )
        .build();
    let stop = CancellationToken::new();
    let svc = mcp.into_http_service(HttpOptions::new().with_cancellation(stop.child_token()));
    let prm = json!({"resource": format!("{base}/mcp"), "authorization_servers": [base.clone()], "scopes_supported": ["mcp"]});
    let asm = json!({
        "issuer": base.clone(),
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "registration_endpoint": format!("{base}/register"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "scopes_supported": ["mcp"],
    });
    let app = axum::Router::new()
        .nest_service("/mcp", svc)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(move || async move { Json(prm) }),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || async move { Json(asm) }),
        )
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/register", post(register))
        .with_state(state.clone());
    let st = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { st.cancelled().await })
            .await
            .unwrap();
    });
    Servers {
        url: format!("{base}/mcp"),
        state,
        stop,
    }
}

/// Plays the user: opens the authorization URL without following the redirect and hands
/// the redirect URL back (the local listener is not used).
#[derive(Default)]
struct Browser {
    visits: AtomicUsize,
    via_listener: bool,
}

#[async_trait]
impl AuthorizationHandler for Browser {
    async fn authorize(&self, _server: &str, url: &str) -> agentkit_core::Result<Option<String>> {
        self.visits.fetch_add(1, Ordering::SeqCst);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{url}");
        let location = resp.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        if self.via_listener {
            // Like a browser: follow the redirect to agentkit's local listener.
            let page = reqwest::get(&location).await.unwrap();
            assert!(page.status().is_success());
            return Ok(None);
        }
        Ok(Some(location))
    }
}

async fn hello(m: &ConnectionManager) -> agentkit_core::Result<String> {
    let out = m
        .call_tool("secure", "hello", Default::default(), &RunContext::new())
        .await?;
    Ok(out.content[0].as_text().unwrap().text.clone())
}

fn grants(s: &Servers) -> Vec<String> {
    s.state.lock().unwrap().grants.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_code_with_pkce_refresh_and_reauthorization() {
    let servers = start(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileTokenStore::new(dir.path().join("tokens")));
    let browser = Arc::new(Browser {
        via_listener: true,
        ..Browser::default()
    });
    let server = ServerConfig::http("secure", servers.url.clone())
        .with_oauth(McpOAuth::new().with_scopes(["mcp"]));
    let manager = ConnectionManager::builder([server.clone()])
        .with_token_store(store.clone())
        .with_authorization_handler(browser.clone())
        .build();

    // 401 -> discovery -> registration -> authorization code + PKCE via the local listener.
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    assert_eq!(browser.visits.load(Ordering::SeqCst), 1);
    assert_eq!(grants(&servers), ["authorization_code"]);
    {
        let s = servers.state.lock().unwrap();
        assert_eq!(s.registered.len(), 2, "one dynamic registration");
        assert!(
            s.resources.iter().all(|r| r == &servers.url),
            "{:?}",
            s.resources
        );
    }
    let saved = store.load(&servers.url).await.unwrap().unwrap();
    assert!(saved.client_id.starts_with("dyn-"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.path_for(&servers.url))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A 401 mid-session (the access token was revoked): a silent refresh, same session, no
    // new authorization. (Once in many CI runs a second request of the session met the
    // revoked token too and refreshed again, with the rotated refresh token: still silent.)
    servers.state.lock().unwrap().access.clear();
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    let g = grants(&servers);
    assert!(
        g.len() >= 2 && g[0] == "authorization_code" && g[1..].iter().all(|x| x == "refresh_token"),
        "a silent refresh and no new authorization: {g:?}"
    );

    // Tokens that expire: the next token lives 1 s; after that the client refreshes before
    // sending (and the server would refuse the old one anyway).
    servers.state.lock().unwrap().expires_in = 1;
    servers.state.lock().unwrap().access.clear();
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    let before = grants(&servers).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    servers.state.lock().unwrap().expires_in = 3600;
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    let after = grants(&servers);
    assert!(
        after.len() > before && after[before..].iter().all(|x| x == "refresh_token"),
        "refreshed before sending, no new authorization: {after:?}"
    );
    assert_eq!(browser.visits.load(Ordering::SeqCst), 1);

    // Refresh tokens revoked too: the refresh fails, and the user is asked again, within
    // the same call.
    {
        let mut s = servers.state.lock().unwrap();
        s.access.clear();
        s.refresh.clear();
    }
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    assert_eq!(browser.visits.load(Ordering::SeqCst), 2);
    manager.shutdown().await;

    // Another process with the same store: no authorization needed.
    let again = ConnectionManager::builder([server])
        .with_token_store(store.clone())
        .with_authorization_handler(browser.clone())
        .build();
    assert_eq!(hello(&again).await.unwrap(), "hi");
    assert_eq!(browser.visits.load(Ordering::SeqCst), 2);
    again.shutdown().await;
}

/// Twenty calls at once meet a revoked access token, on a server that rotates refresh tokens
/// (each refresh token works once): every call succeeds, every refresh uses the token the one
/// before it got (a stale one would fail and send the user to authorize again), and nobody is
/// asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_refresh_a_rotating_token_without_reauthorizing() {
    let servers = start(3600).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileTokenStore::new(dir.path().join("tokens")));
    let browser = Arc::new(Browser::default());
    let server = ServerConfig::http("secure", servers.url.clone())
        .with_oauth(McpOAuth::new().with_scopes(["mcp"]));
    let manager = ConnectionManager::builder([server])
        .with_token_store(store)
        .with_authorization_handler(browser.clone())
        .build();
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    assert_eq!(browser.visits.load(Ordering::SeqCst), 1);
    for round in 0..3 {
        servers.state.lock().unwrap().access.clear();
        let answers = futures::future::join_all((0..20).map(|_| hello(&manager))).await;
        for a in answers {
            assert_eq!(a.unwrap(), "hi", "round {round}");
        }
        assert_eq!(
            browser.visits.load(Ordering::SeqCst),
            1,
            "round {round}: nobody was asked to authorize again: {:?}",
            grants(&servers)
        );
    }
    let g = grants(&servers);
    assert!(
        g.len() >= 4 && g[1..].iter().all(|x| x == "refresh_token"),
        "{g:?}"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_supplied_redirect_and_preregistered_client() {
    let servers = start(3600).await;
    servers.state.lock().unwrap().registered.push("pre".into());
    let browser = Arc::new(Browser::default());
    let manager = ConnectionManager::builder([ServerConfig::http("secure", servers.url.clone())
        .with_oauth(McpOAuth::new().with_client_id("pre"))])
    .with_token_store(Arc::new(agentkit_mcp::oauth::MemoryTokenStore::new()))
    .with_authorization_handler(browser.clone())
    .build();
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    assert_eq!(browser.visits.load(Ordering::SeqCst), 1);
    assert_eq!(
        servers.state.lock().unwrap().registered,
        ["svc", "pre"],
        "no dynamic registration with a client_id"
    );
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_and_its_errors() {
    let servers = start(3600).await;
    let browser = Arc::new(Browser::default());
    let cc = |secret: &str| {
        ServerConfig::http("secure", servers.url.clone()).with_oauth(
            McpOAuth::new()
                .with_client_credentials()
                .with_client_id("svc")
                .with_client_secret(secret)
                .with_scopes(["mcp"]),
        )
    };
    let manager = ConnectionManager::builder([cc("s3cret")])
        .with_token_store(Arc::new(agentkit_mcp::oauth::MemoryTokenStore::new()))
        .with_authorization_handler(browser.clone())
        .build();
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    assert_eq!(grants(&servers), ["client_credentials"]);
    assert_eq!(browser.visits.load(Ordering::SeqCst), 0, "no user involved");
    // Its token revoked mid-session (client credentials have no refresh token): a new
    // token is fetched and the call retried.
    servers.state.lock().unwrap().access.clear();
    assert_eq!(hello(&manager).await.unwrap(), "hi");
    assert_eq!(
        grants(&servers),
        ["client_credentials", "client_credentials"]
    );
    manager.shutdown().await;

    let wrong = ConnectionManager::builder([cc("nope")])
        .with_token_store(Arc::new(agentkit_mcp::oauth::MemoryTokenStore::new()))
        .build();
    let err = hello(&wrong).await.unwrap_err().to_string();
    assert!(
        err.contains("client-credentials token request failed"),
        "{err}"
    );
    wrong.shutdown().await;
}
