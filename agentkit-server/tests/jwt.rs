//! OIDC / JWT bearer tokens end to end: `agentkit serve` configured with `server.jwt` finds
//! an identity provider's keys by OIDC discovery (a real HTTP server in the test, P-256 keys
//! made for this run), accepts its tokens as the workspace and role their claims name, and
//! refuses forged, expired, foreign-audience and unknown-workspace tokens with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use common::{Serve, free_port};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

/// A P-256 signing key and its public JWK.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn signing_key(kid: &str) -> SigningKey {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    SigningKey {
        kid: kid.to_owned(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }),
    }
}

/// The identity provider: OIDC discovery and a JWKS, counting key-set fetches.
#[derive(Clone)]
struct Idp {
    issuer: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

async fn start_idp(keys: &[&SigningKey]) -> Idp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let idp = Idp {
        issuer: issuer.clone(),
        jwks: Arc::new(Mutex::new(json!({
            "keys": keys.iter().map(|k| k.jwk.clone()).chain([
                // Keys this server cannot use are skipped, not fatal.
                json!({"kty": "RSA", "use": "enc", "kid": "encryption", "n": "AQAB", "e": "AQAB"}),
                json!({"kty": "weird", "kid": "unknown-type"}),
            ]).collect::<Vec<_>>()
        }))),
        fetches: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(idp): State<Idp>| async move {
                axum::Json(
                    json!({"issuer": idp.issuer, "jwks_uri": format!("{}/jwks", idp.issuer)}),
                )
            }),
        )
        .route(
            "/jwks",
            get(|State(idp): State<Idp>| async move {
                idp.fetches.fetch_add(1, Ordering::SeqCst);
                let body = idp.jwks.lock().unwrap().clone();
                axum::Json(body)
            }),
        )
        .with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    idp
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

async fn call(serve: &Serve, token: &str, method: Method, path: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .request(method, format!("{}{path}", serve.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn detail(body: &Value) -> String {
    body["detail"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn tokens_of_the_identity_provider_act_in_their_workspace_with_their_role() {
    let key = signing_key("key-1");
    let other = signing_key("key-1"); // same kid, another key: a forgery
    let idp = start_idp(&[&key]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  jwt:\n    issuer: {}\n    audience: agentkit-test\n    claims: {{role: groups}}\n",
            idp.issuer
        ),
    )
    .unwrap();
    let db = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let serve = Serve::start(&config, &db, free_port(), &dir.path().join("log")).await;
    let (s, b) = serve
        .call(
            Method::POST,
            "/v1/workspaces",
            Some(json!({"org": "acme", "workspace": "prod"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    let claims = |extra: Value| {
        let mut c = json!({
            "iss": idp.issuer, "aud": "agentkit-test", "exp": now() + 300, "sub": "alice@acme",
            "org": "acme", "workspace": "prod", "groups": ["staff", "operator"],
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };

    // A valid operator token: reads its workspace, may not deploy (developer) nor mint keys.
    let token = sign(&key, &claims(json!({})));
    // Twenty clients at once on a cold cache: all served, the key set fetched once.
    let all =
        futures::future::join_all((0..20).map(|_| call(&serve, &token, Method::GET, "/v1/runs")))
            .await;
    for (s, b) in all {
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = call(&serve, &token, Method::GET, "/v1/agents").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(&serve, &token, Method::POST, "/v1/keys").await;
    assert_eq!(s, 403, "{b}");
    assert!(detail(&b).contains("admin"), "{b}");
    // Routes not open to other workspaces answer 404, as for their API keys.
    let (s, _) = call(&serve, &token, Method::GET, "/metrics").await;
    assert!(s == 404 || s == 403, "{s}");
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        1,
        "keys are fetched once, then cached"
    );

    // Refusals, each with its reason and the Bearer challenge.
    let cases = [
        (sign(&other, &claims(json!({}))), "signature"),
        (sign(&key, &claims(json!({"exp": now() - 3600}))), "expired"),
        (
            sign(&key, &claims(json!({"aud": "someone-else"}))),
            "audience",
        ),
        (
            sign(&key, &claims(json!({"iss": "https://evil.test"}))),
            "issuer",
        ),
        (
            sign(&key, &claims(json!({"workspace": "staging"}))),
            "does not exist",
        ),
        (
            sign(&key, &claims(json!({"groups": ["staff"]}))),
            "names no role",
        ),
    ];
    for (token, reason) in cases {
        let res = reqwest::Client::new()
            .get(format!("{}/v1/runs", serve.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{reason}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        let body: Value = res.json().await.unwrap();
        assert!(detail(&body).contains(reason), "{reason}: {body}");
    }

    // A token naming a key id the provider does not hold is refused; the key set is fetched
    // again at most once per interval, however many such tokens come.
    let stranger = signing_key("key-unknown");
    for _ in 0..20 {
        let (s, b) = call(
            &serve,
            &sign(&stranger, &claims(json!({}))),
            Method::GET,
            "/v1/runs",
        )
        .await;
        assert_eq!(s, 401, "{b}");
        assert!(detail(&b).contains("key-unknown"), "{b}");
    }
    assert!(
        idp.fetches.load(Ordering::SeqCst) <= 2,
        "{}",
        idp.fetches.load(Ordering::SeqCst)
    );

    // The default workspace's token works on the default workspace's routes.
    let token = sign(
        &key,
        &claims(json!({"org": "default", "workspace": "default", "groups": "admin"})),
    );
    let (s, b) = call(&serve, &token, Method::GET, "/v1/keys").await;
    assert_eq!(s, 200, "{b}");
    // API keys go on working beside tokens.
    let (s, b) = serve.call(Method::GET, "/v1/runs", None).await;
    assert_eq!(s, 200, "{b}");
    assert!(!serve.log_text().contains(&token), "tokens are not logged");
}

#[tokio::test]
async fn an_unreachable_identity_provider_is_503_and_a_bad_config_is_located() {
    // Keys from a port nothing listens on: the token cannot be checked.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentkit.yaml");
    let dead = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        &config,
        format!(
            "server:\n  jwt:\n    issuer: {dead}\n    audience: a\n    jwks_url: {dead}/jwks\n"
        ),
    )
    .unwrap();
    let db = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let serve = Serve::start(&config, &db, free_port(), &dir.path().join("log")).await;
    let key = signing_key("k");
    let token = sign(
        &key,
        &json!({"iss": dead, "aud": "a", "exp": now() + 60, "workspace": "default", "role": "admin"}),
    );
    let (s, b) = call(&serve, &token, Method::GET, "/v1/runs").await;
    assert_eq!(s, 503, "{b}");
    assert!(detail(&b).contains("identity provider"), "{b}");
    drop(serve);

    // Two key sources: `agentkit validate` and `serve` name the key.
    std::fs::write(
        &config,
        "server:\n  jwt:\n    issuer: https://idp.test\n    audience: a\n    jwks_url: https://idp.test/jwks\n    secret_env: JWT_SECRET\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentkit"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args([
            "--database",
            "memory",
            "--bind",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.jwt") && err.contains("at most one"),
        "{err}"
    );
}
