//! OAuth 2.1 for streamable HTTP MCP servers, as the MCP authorization specification
//! describes (feature `oauth`), on rmcp's `auth` module.
//!
//! A server entry with `auth: {oauth: {...}}` ([`McpOAuth`]) is connected like this:
//!
//! 1. Stored tokens of that server's URL are loaded from the [`TokenStore`] (a
//!    [`FileTokenStore`] by default) and sent; an expired access token is refreshed first.
//! 2. A `401` (at connect or mid-session) is answered by rmcp once with a silent refresh. If
//!    that is not enough, agentkit authorizes: protected-resource metadata from the
//!    `WWW-Authenticate` challenge (or the well-known URL), then authorization-server
//!    metadata, then either the client-credentials grant, or the authorization code flow with
//!    PKCE: a pre-registered `client_id`, a client metadata document, or dynamic client
//!    registration; the user is sent to the authorization URL by the
//!    [`AuthorizationHandler`] and the redirect is received by a local
//!    `http://127.0.0.1:<port>/callback` listener (or by the handler).
//! 3. The tokens are saved in the store, keyed by the server's URL.
//!
//! Configure the store and handler on the manager:
//!
//! ```no_run
//! # fn demo(servers: Vec<agentkit_mcp::ServerConfig>) -> agentkit_core::Result<()> {
//! use std::sync::Arc;
//! use agentkit_mcp::ConnectionManager;
//! use agentkit_mcp::oauth::{FileTokenStore, LogAuthorizationUrl};
//!
//! let manager = ConnectionManager::builder(servers)
//!     .with_token_store(Arc::new(FileTokenStore::new("/var/lib/myapp/mcp-tokens")))
//!     .with_authorization_handler(Arc::new(LogAuthorizationUrl))
//!     .build();
//! # let _ = manager; Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::SseError;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream_rmcp::Sse;

use agentkit_core::{Error, McpOAuth, Result};
use async_trait::async_trait;
use rmcp::transport::auth::{
    AuthClient, AuthError, AuthorizationManager, AuthorizationRequest, AuthorizationSession,
    ClientCredentialsConfig, CredentialStore, OAuthClientConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub use rmcp::transport::auth::StoredCredentials;

/// Where the OAuth credentials (client id, access and refresh tokens) of MCP servers are
/// kept, keyed by the server's URL. Implement it to keep them in a keychain or a database.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The credentials saved for `key`, if any.
    async fn load(&self, key: &str) -> Result<Option<StoredCredentials>>;
    /// Save the credentials of `key`, replacing earlier ones.
    async fn save(&self, key: &str, credentials: &StoredCredentials) -> Result<()>;
    /// Forget the credentials of `key`.
    async fn clear(&self, key: &str) -> Result<()>;
}

/// Credentials in files, one per server, readable by the owner only (`0600`, in a `0700`
/// directory). The default store, at [`FileTokenStore::default_dir`].
#[derive(Debug, Clone)]
pub struct FileTokenStore {
    dir: PathBuf,
}

impl FileTokenStore {
    /// Files in `dir` (created when first needed).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$XDG_CONFIG_HOME/agentkit/mcp-oauth`, else `$HOME/.config/agentkit/mcp-oauth`, else
    /// `.agentkit/mcp-oauth` in the working directory.
    #[must_use]
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".config"))
            });
        match base {
            Some(b) => b.join("agentkit").join("mcp-oauth"),
            None => PathBuf::from(".agentkit").join("mcp-oauth"),
        }
    }

    /// The store at [`FileTokenStore::default_dir`].
    #[must_use]
    pub fn at_default_dir() -> Self {
        Self::new(Self::default_dir())
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `key`'s credentials: a readable prefix of the key plus a hash, so
    /// different URLs never share a file.
    #[must_use]
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.dir.join(file_name_for(key))
    }

    fn error(&self, what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
        Error::other(
            format!("OAuth token store: could not {what} {}", path.display()),
            e.to_string(),
        )
    }
}

/// A file name for a store key: its alphanumerics (up to 48) and a 64-bit FNV-1a hash.
pub(crate) fn file_name_for(key: &str) -> String {
    let readable: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(48)
        .collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{readable}-{hash:016x}.json")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredFile {
    key: String,
    credentials: StoredCredentials,
}

#[async_trait]
impl TokenStore for FileTokenStore {
    async fn load(&self, key: &str) -> Result<Option<StoredCredentials>> {
        let path = self.path_for(key);
        let text = match tokio::fs::read(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error("read", &path, e)),
        };
        let file: StoredFile = serde_json::from_slice(&text)
            .map_err(|e| self.error("parse (delete it to sign in again)", &path, e))?;
        Ok((file.key == key).then_some(file.credentials))
    }

    async fn save(&self, key: &str, credentials: &StoredCredentials) -> Result<()> {
        let path = self.path_for(key);
        let body = serde_json::to_vec_pretty(&StoredFile {
            key: key.to_owned(),
            credentials: credentials.clone(),
        })
        .map_err(|e| self.error("encode", &path, e))?;
        let dir = self.dir.clone();
        let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
        let (p, t) = (path.clone(), tmp.clone());
        tokio::task::spawn_blocking(move || write_private(&dir, &t, &p, &body))
            .await
            .map_err(|e| self.error("write", &path, e))?
            .map_err(|e| self.error("write", &path, e))
    }

    async fn clear(&self, key: &str) -> Result<()> {
        let path = self.path_for(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", &path, e)),
        }
    }
}

/// Writes `body` to `tmp` (created `0600`), then renames it over `path`, in `dir` (created
/// `0700`).
fn write_private(dir: &Path, tmp: &Path, path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)
}

/// Credentials in memory only (lost when the process exits): for tests and short-lived tools.
#[derive(Debug, Clone, Default)]
pub struct MemoryTokenStore {
    inner: Arc<Mutex<HashMap<String, StoredCredentials>>>,
}

impl MemoryTokenStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, key: &str) -> Result<Option<StoredCredentials>> {
        Ok(agentkit_core::sync::lock(&self.inner).get(key).cloned())
    }

    async fn save(&self, key: &str, credentials: &StoredCredentials) -> Result<()> {
        agentkit_core::sync::lock(&self.inner).insert(key.to_owned(), credentials.clone());
        Ok(())
    }

    async fn clear(&self, key: &str) -> Result<()> {
        agentkit_core::sync::lock(&self.inner).remove(key);
        Ok(())
    }
}

/// One server's slot of a [`TokenStore`], as rmcp's credential store.
struct KeyedStore {
    store: Arc<dyn TokenStore>,
    key: String,
}

fn store_error(e: Error) -> AuthError {
    AuthError::CredentialStoreError(e.to_string())
}

#[async_trait]
impl CredentialStore for KeyedStore {
    async fn load(&self) -> std::result::Result<Option<StoredCredentials>, AuthError> {
        self.store.load(&self.key).await.map_err(store_error)
    }

    async fn save(&self, credentials: StoredCredentials) -> std::result::Result<(), AuthError> {
        self.store
            .save(&self.key, &credentials)
            .await
            .map_err(store_error)
    }

    async fn clear(&self) -> std::result::Result<(), AuthError> {
        self.store.clear(&self.key).await.map_err(store_error)
    }
}

/// Sends the user to the authorization server, in the authorization code flow.
#[async_trait]
pub trait AuthorizationHandler: Send + Sync + 'static {
    /// The redirect URI to register when the application receives the redirect itself;
    /// `None` (the default) uses agentkit's local listener at
    /// `http://127.0.0.1:<port>/callback`.
    fn redirect_uri(&self, _server: &str) -> Option<String> {
        None
    }

    /// Have the user open `authorization_url` (print it, open a browser, show it in a UI).
    /// Return the full URL the authorization server redirected to (with `code` and
    /// `state`) when the application received it, or `None` when the local listener does.
    async fn authorize(&self, server: &str, authorization_url: &str) -> Result<Option<String>>;
}

/// The default handler: logs the authorization URL (at `warn`, so a terminal user sees it)
/// and lets the local listener receive the redirect.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogAuthorizationUrl;

#[async_trait]
impl AuthorizationHandler for LogAuthorizationUrl {
    async fn authorize(&self, server: &str, authorization_url: &str) -> Result<Option<String>> {
        tracing::warn!(
            server,
            url = authorization_url,
            "MCP server `{server}` needs authorization: open this URL in a browser to sign in: {authorization_url}"
        );
        Ok(None)
    }
}

/// For authorization servers that approve without a user (test and conformance servers,
/// pre-consented machine clients): requests the authorization URL itself, follows no
/// redirect, and hands back the redirect it answered with. Any other answer is an error
/// saying a user is needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct FollowAuthorizationRedirect;

#[async_trait]
impl AuthorizationHandler for FollowAuthorizationRedirect {
    async fn authorize(&self, server: &str, authorization_url: &str) -> Result<Option<String>> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| auth_error(server, "HTTP client", e))?;
        let resp = client
            .get(authorization_url)
            .send()
            .await
            .map_err(|e| auth_error(server, "requesting the authorization URL failed", e))?;
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|_| resp.status().is_redirection());
        let Some(location) = location else {
            return Err(auth_error(
                server,
                "the authorization server did not redirect",
                format!(
                    "it answered HTTP {} and needs a user; use an interactive AuthorizationHandler",
                    resp.status().as_u16()
                ),
            ));
        };
        let url = resp
            .url()
            .join(location)
            .map_err(|e| auth_error(server, "the authorization redirect is not a URL", e))?;
        Ok(Some(url.to_string()))
    }
}

/// OAuth options of a connection manager.
#[derive(Clone)]
pub(crate) struct OAuthOptions {
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) handler: Arc<dyn AuthorizationHandler>,
}

impl Default for OAuthOptions {
    fn default() -> Self {
        Self {
            store: Arc::new(FileTokenStore::at_default_dir()),
            handler: Arc::new(LogAuthorizationUrl),
        }
    }
}

fn auth_error(server: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::tool(
        server,
        format!("OAuth for MCP server `{server}`: {what}: {e}"),
    )
}

type Inner = AuthClient<reqwest::Client>;
type HttpError = StreamableHttpError<<Inner as StreamableHttpClient>::Error>;

/// How many times one connection may step up its scopes (403 `insufficient_scope`), so a
/// server that keeps asking for more is not answered with endless authorizations.
const MAX_STEP_UPS: u32 = 3;

/// An rmcp streamable HTTP client that sends the stored token (rmcp's [`AuthClient`]:
/// refresh before expiry, one silent refresh on a 401) and, when the server still refuses
/// (401, or 403 `insufficient_scope`), authorizes and retries the request once.
#[derive(Clone)]
pub(crate) struct OAuthHttpClient {
    inner: Inner,
    flow: Arc<Flow>,
}

struct Flow {
    server: String,
    url: String,
    settings: McpOAuth,
    options: OAuthOptions,
    lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    step_ups: AtomicU32,
}

impl OAuthHttpClient {
    /// The client for `url`, with the stored credentials of `options.store`.
    pub(crate) async fn new(
        server: &str,
        url: &str,
        settings: &McpOAuth,
        options: &OAuthOptions,
    ) -> Result<Self> {
        let inner = authorized_client(server, url, settings, options).await?;
        Ok(Self {
            inner,
            flow: Arc::new(Flow {
                server: server.to_owned(),
                url: url.to_owned(),
                settings: settings.clone(),
                options: options.clone(),
                lock: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                step_ups: AtomicU32::new(0),
            }),
        })
    }

    async fn with_reauth<T, F, Fut>(&self, call: F) -> std::result::Result<T, HttpError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, HttpError>>,
    {
        let seen = self.flow.generation.load(Ordering::SeqCst);
        match call().await {
            Err(StreamableHttpError::AuthRequired(e)) => {
                let challenge = e.www_authenticate_header.clone();
                self.reauthorize(
                    seen,
                    &challenge,
                    false,
                    StreamableHttpError::AuthRequired(e),
                )
                .await?;
                call().await
            }
            Err(StreamableHttpError::InsufficientScope(e)) => {
                let challenge = e.www_authenticate_header.clone();
                self.reauthorize(
                    seen,
                    &challenge,
                    true,
                    StreamableHttpError::InsufficientScope(e),
                )
                .await?;
                call().await
            }
            other => other,
        }
    }

    async fn reauthorize(
        &self,
        seen: u64,
        challenge: &str,
        step_up: bool,
        original: HttpError,
    ) -> std::result::Result<(), HttpError> {
        let f = &self.flow;
        let _one_at_a_time = f.lock.lock().await;
        if f.generation.load(Ordering::SeqCst) != seen {
            return Ok(()); // another request authorized meanwhile: just retry
        }
        if step_up && f.step_ups.fetch_add(1, Ordering::SeqCst) >= MAX_STEP_UPS {
            tracing::warn!(server = %f.server, "the MCP server keeps asking for more scopes; giving up");
            return Err(original);
        }
        let challenge = (!challenge.is_empty()).then_some(challenge);
        authorize(
            &f.server,
            &f.url,
            &f.settings,
            &f.options,
            &self.inner,
            challenge,
            step_up,
        )
        .await
        .map_err(|e| StreamableHttpError::Auth(AuthError::AuthorizationFailed(e.to_string())))?;
        f.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl StreamableHttpClient for OAuthHttpClient {
    type Error = <Inner as StreamableHttpClient>::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> std::result::Result<StreamableHttpPostResponse, HttpError> {
        self.with_reauth(|| {
            self.inner.post_message(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                auth_header.clone(),
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> std::result::Result<StreamableHttpPostResponse, HttpError> {
        self.with_reauth(|| {
            self.inner.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                auth_header.clone(),
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> std::result::Result<StreamableHttpPostResponse, HttpError> {
        self.with_reauth(|| {
            self.inner.post_message_with_response_limits(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                auth_header.clone(),
                custom_headers.clone(),
                limits,
            )
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> std::result::Result<(), HttpError> {
        // Closing needs no new authorization: a refused delete just ends the session.
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> std::result::Result<BoxStream<'static, std::result::Result<Sse, SseError>>, HttpError>
    {
        self.with_reauth(|| {
            self.inner.get_stream(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                auth_header.clone(),
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> std::result::Result<BoxStream<'static, std::result::Result<Sse, SseError>>, HttpError>
    {
        self.with_reauth(|| {
            self.inner.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                auth_header.clone(),
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }
}

/// A fresh authorization manager for `url`, reading and writing `options.store`.
async fn new_manager(
    server: &str,
    url: &str,
    options: &OAuthOptions,
) -> Result<AuthorizationManager> {
    let mut manager = AuthorizationManager::new(url)
        .await
        .map_err(|e| auth_error(server, "invalid server URL", e))?;
    manager.set_credential_store(KeyedStore {
        store: options.store.clone(),
        key: url.to_owned(),
    });
    Ok(manager)
}

/// An rmcp HTTP client that sends the stored token of `url` (refreshing it when expired)
/// and refreshes once on a `401`.
async fn authorized_client(
    server: &str,
    url: &str,
    settings: &McpOAuth,
    options: &OAuthOptions,
) -> Result<AuthClient<reqwest::Client>> {
    let mut manager = new_manager(server, url, options).await?;
    match manager.initialize_from_store().await {
        Ok(true) => {
            tracing::debug!(server, "using stored OAuth credentials");
            if let (Some(id), Some(secret)) = (&settings.client_id, &settings.client_secret) {
                // A confidential client refreshes with its secret.
                let cfg = OAuthClientConfig::new(id.clone(), "http://127.0.0.1/callback")
                    .with_client_secret(secret.clone())
                    .with_scopes(settings.scopes.clone());
                if let Err(e) = manager.configure_client(cfg) {
                    tracing::debug!(server, error = %e, "could not configure the client secret");
                }
            }
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(server, error = %e, "stored OAuth credentials are unusable; authorizing anew");
        }
    }
    Ok(AuthClient::new(reqwest::Client::new(), manager))
}

/// Authorizes `client` after a `401` whose `WWW-Authenticate` challenge was `challenge`:
/// discovery, then client credentials or the authorization code flow; the tokens end up in
/// the store.
async fn authorize(
    server: &str,
    url: &str,
    settings: &McpOAuth,
    options: &OAuthOptions,
    client: &AuthClient<reqwest::Client>,
    challenge: Option<&str>,
    step_up: bool,
) -> Result<()> {
    let mut guard = client.auth_manager.lock().await;
    // A step-up keeps what was granted and adds what the challenge asks for.
    let mut scopes = settings.scopes.clone();
    if step_up {
        for s in guard.get_current_scopes().await {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        if let (Some(c), Ok(base)) = (challenge, reqwest::Url::parse(url)) {
            let params = rmcp::transport::auth::WWWAuthenticateParams::parse(c, &base);
            for s in params.scope.iter().flat_map(|s| s.split_whitespace()) {
                if !scopes.iter().any(|have| have == s) {
                    scopes.push(s.to_owned());
                }
            }
        }
    }
    let mut settings = settings.clone();
    settings.scopes = scopes;
    let fresh = new_manager(server, url, options).await?;
    let manager = std::mem::replace(&mut *guard, fresh);
    let (manager, result) = run_flow(server, url, &settings, options, manager, challenge).await;
    *guard = manager;
    result
}

async fn run_flow(
    server: &str,
    url: &str,
    settings: &McpOAuth,
    options: &OAuthOptions,
    mut manager: AuthorizationManager,
    challenge: Option<&str>,
) -> (AuthorizationManager, Result<()>) {
    match manager.resolve_metadata_from_challenge(challenge).await {
        Ok(resolution) => manager.set_metadata(resolution.metadata),
        Err(e) => {
            let err = auth_error(server, "discovering the authorization server failed", e);
            return (manager, Err(err));
        }
    }
    if settings.client_credentials {
        let config = match client_credentials(server, url, settings, &mut manager).await {
            Ok(c) => c,
            Err(e) => return (manager, Err(e)),
        };
        // With rmcp's `auth-client-credentials-jwt` feature the token request's future is not
        // `Send` (it keeps a form serializer across an await), so it runs on a blocking
        // thread of this runtime.
        // Put in place of the manager should the task panic (creating it needs no network).
        let spare = match new_manager(server, url, options).await {
            Ok(m) => m,
            Err(e) => return (manager, Err(e)),
        };
        let handle = tokio::runtime::Handle::current();
        let exchanged = tokio::task::spawn_blocking(move || {
            let r = handle.block_on(manager.exchange_client_credentials(&config));
            (manager, r.map(|_| ()).map_err(|e| e.to_string()))
        })
        .await;
        return match exchanged {
            Ok((manager, Ok(()))) => {
                tracing::info!(server, "authorized with client credentials");
                (manager, Ok(()))
            }
            Ok((manager, Err(e))) => (
                manager,
                Err(auth_error(
                    server,
                    "the client-credentials token request failed",
                    e,
                )),
            ),
            Err(e) => (
                spare,
                Err(auth_error(server, "the token request task failed", e)),
            ),
        };
    }
    authorization_code(server, settings, options, manager, challenge).await
}

async fn client_credentials(
    server: &str,
    url: &str,
    settings: &McpOAuth,
    manager: &mut AuthorizationManager,
) -> Result<ClientCredentialsConfig> {
    let key = format!("mcp.servers.{server}.auth.oauth");
    let Some(id) = &settings.client_id else {
        return Err(Error::Config {
            file: None,
            key,
            message: "client_credentials needs `client_id` (and `client_secret` or `private_key`)"
                .into(),
        });
    };
    let config = if settings.private_key.is_some() || settings.private_key_file.is_some() {
        private_key_jwt(server, url, settings, id, &key).await?
    } else {
        let Some(secret) = &settings.client_secret else {
            return Err(Error::Config {
                file: None,
                key,
                message: "client_credentials needs `client_secret` or `private_key`".into(),
            });
        };
        ClientCredentialsConfig::ClientSecret {
            client_id: id.clone(),
            client_secret: secret.clone(),
            scopes: settings.scopes.clone(),
            resource: Some(url.to_owned()),
        }
    };
    manager
        .validate_client_credentials_metadata(&config)
        .map_err(|e| {
            auth_error(
                server,
                "the authorization server refuses client credentials",
                e,
            )
        })?;
    manager
        .configure_client_credentials(&config)
        .map_err(|e| auth_error(server, "configuring client credentials failed", e))?;
    Ok(config)
}

#[cfg(feature = "oauth-jwt")]
async fn private_key_jwt(
    _server: &str,
    url: &str,
    settings: &McpOAuth,
    id: &str,
    key: &str,
) -> Result<ClientCredentialsConfig> {
    use rmcp::transport::auth::JwtSigningAlgorithm as Alg;
    let pem = match (&settings.private_key, &settings.private_key_file) {
        (Some(pem), _) => pem.clone().into_bytes(),
        (None, Some(path)) => tokio::fs::read(path).await.map_err(|e| Error::Config {
            file: None,
            key: format!("{key}.private_key_file"),
            message: format!("could not read {}: {e}", path.display()),
        })?,
        (None, None) => Vec::new(),
    };
    let algorithm = match settings
        .signing_algorithm
        .as_deref()
        .unwrap_or("RS256")
        .to_ascii_uppercase()
        .as_str()
    {
        "RS256" => Alg::RS256,
        "RS384" => Alg::RS384,
        "RS512" => Alg::RS512,
        "ES256" => Alg::ES256,
        "ES384" => Alg::ES384,
        other => {
            return Err(Error::Config {
                file: None,
                key: format!("{key}.signing_algorithm"),
                message: format!(
                    "unknown signing algorithm `{other}`; expected RS256, RS384, RS512, ES256 or ES384"
                ),
            });
        }
    };
    Ok(ClientCredentialsConfig::PrivateKeyJwt {
        client_id: id.to_owned(),
        signing_key: pem,
        signing_algorithm: algorithm,
        token_endpoint_audience: None,
        scopes: settings.scopes.clone(),
        resource: Some(url.to_owned()),
    })
}

#[cfg(not(feature = "oauth-jwt"))]
async fn private_key_jwt(
    _server: &str,
    _url: &str,
    _settings: &McpOAuth,
    _id: &str,
    key: &str,
) -> Result<ClientCredentialsConfig> {
    Err(Error::Config {
        file: None,
        key: format!("{key}.private_key"),
        message: "private_key_jwt client authentication needs agentkit-mcp's `oauth-jwt` feature"
            .into(),
    })
}

async fn authorization_code(
    server: &str,
    settings: &McpOAuth,
    options: &OAuthOptions,
    manager: AuthorizationManager,
    challenge: Option<&str>,
) -> (AuthorizationManager, Result<()>) {
    let (redirect_uri, listener) = match options.handler.redirect_uri(server) {
        Some(uri) => (uri, None),
        None => match Loopback::bind(settings.redirect_port.unwrap_or(0)).await {
            Ok(l) => (l.redirect_uri.clone(), Some(l)),
            Err(e) => {
                return (
                    manager,
                    Err(auth_error(server, "the local redirect listener", e)),
                );
            }
        },
    };
    let mut request = AuthorizationRequest::new(redirect_uri).with_client_name(
        settings
            .client_name
            .clone()
            .unwrap_or_else(|| "agentkit".into()),
    );
    request = if settings.scopes.is_empty() {
        request.with_initial_scope_selection()
    } else {
        request.with_scopes(settings.scopes.clone())
    };
    if let Some(id) = &settings.client_id {
        request = request.with_preregistered_client(id.clone());
        if let Some(secret) = &settings.client_secret {
            request = request.with_client_secret(secret.clone());
        }
    }
    if let Some(m) = &settings.client_metadata_url {
        request = request.with_client_metadata_url(m.clone());
    }
    if let Some(c) = challenge {
        request = request.with_challenge(c);
    }
    let session = match AuthorizationSession::new(manager, request).await {
        Ok(s) => s,
        Err((manager, e)) => {
            let what = if settings.client_id.is_some() {
                "preparing the authorization request failed"
            } else {
                "client registration failed (set `client_id` for a pre-registered client)"
            };
            return (manager, Err(auth_error(server, what, e)));
        }
    };
    let result = async {
        let url = session.get_authorization_url().to_owned();
        let waiting = |e: std::io::Error| auth_error(server, "waiting for the redirect", e);
        // The handler and the local listener run together: a handler may wait for the
        // user to finish while the redirect arrives at the listener.
        let callback = match listener {
            Some(l) => {
                let redirect = l.wait();
                tokio::pin!(redirect);
                tokio::select! {
                    r = options.handler.authorize(server, &url) => match r? {
                        Some(callback) => callback,
                        None => redirect.await.map_err(waiting)?,
                    },
                    r = &mut redirect => r.map_err(waiting)?,
                }
            }
            None => options.handler.authorize(server, &url).await?.ok_or_else(|| {
                auth_error(
                    server,
                    "no redirect",
                    "the authorization handler has its own redirect_uri but returned no callback URL",
                )
            })?,
        };
        if let Some(refusal) = callback_error(&callback) {
            return Err(auth_error(server, "the authorization server refused", refusal));
        }
        session
            .handle_callback_url(&callback)
            .await
            .map_err(|e| auth_error(server, "exchanging the authorization code failed", e))?;
        tracing::info!(server, "authorized (authorization code)");
        Ok(())
    }
    .await;
    (session.auth_manager, result)
}

/// The `error` (and `error_description`) of a redirect URL, if the authorization server
/// refused.
pub(crate) fn callback_error(callback: &str) -> Option<String> {
    let url = reqwest::Url::parse(callback).ok()?;
    let mut error = None;
    let mut description = None;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "error" => error = Some(v.into_owned()),
            "error_description" => description = Some(v.into_owned()),
            _ => {}
        }
    }
    error.map(|e| match description {
        Some(d) => format!("{e}: {d}"),
        None => e,
    })
}

/// The local redirect listener of the authorization code flow.
struct Loopback {
    listener: TcpListener,
    port: u16,
    redirect_uri: String,
}

const CALLBACK_PATH: &str = "/callback";
const MAX_REQUEST_HEAD: usize = 16 * 1024;

impl Loopback {
    async fn bind(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            port,
            redirect_uri: format!("http://127.0.0.1:{port}{CALLBACK_PATH}"),
        })
    }

    /// Waits for the browser's redirect to `/callback`; returns it as a full URL. Other
    /// requests (a favicon) get a 404.
    async fn wait(self) -> std::io::Result<String> {
        loop {
            let (mut sock, _) = self.listener.accept().await?;
            let mut head = Vec::new();
            let mut buf = [0u8; 2048];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            match request_target(&text).filter(|t| is_callback(t)) {
                Some(target) => {
                    let page = "<!doctype html><title>agentkit</title><p>Authorization received. You can close this window.</p>";
                    let _ = sock
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                                page.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    let _ = sock.shutdown().await;
                    return Ok(format!("http://127.0.0.1:{}{target}", self.port));
                }
                None => {
                    let _ = sock
                        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                }
            }
        }
    }
}

/// The target of an HTTP/1 `GET` request head (`GET <target> HTTP/1.1`): origin-form only.
pub(crate) fn request_target(head: &str) -> Option<&str> {
    let line = head.split("\r\n").next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if method != "GET" || !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    target.starts_with('/').then_some(target)
}

fn is_callback(target: &str) -> bool {
    target.split('?').next() == Some(CALLBACK_PATH)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_targets() {
        assert_eq!(
            request_target("GET /callback?code=a&state=b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/callback?code=a&state=b")
        );
        assert_eq!(request_target("POST /callback HTTP/1.1\r\n\r\n"), None);
        assert_eq!(
            request_target("GET http://x/callback HTTP/1.1\r\n\r\n"),
            None
        );
        assert_eq!(request_target("GET /a b HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target(""), None);
        assert!(is_callback("/callback?code=1"));
        assert!(!is_callback("/favicon.ico"));
        assert!(!is_callback("/callbackx"));
    }

    #[test]
    fn refusals_are_read_from_the_redirect() {
        assert_eq!(
            callback_error(
                "http://127.0.0.1:1/callback?error=access_denied&error_description=no+way&state=s"
            ),
            Some("access_denied: no way".into())
        );
        assert_eq!(
            callback_error("http://127.0.0.1:1/callback?code=c&state=s"),
            None
        );
    }

    #[tokio::test]
    async fn file_store_round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::new(dir.path().join("tokens"));
        let key = "http://127.0.0.1:9/mcp";
        assert!(store.load(key).await.unwrap().is_none());
        let creds = StoredCredentials::new("client-1".into(), None, vec!["a".into()], Some(7));
        store.save(key, &creds).await.unwrap();
        let back = store.load(key).await.unwrap().unwrap();
        assert_eq!(back.client_id, "client-1");
        assert_eq!(back.granted_scopes, ["a"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path_for(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // Another key never reads this one's file.
        assert!(
            store
                .load("http://127.0.0.1:9/mcp2")
                .await
                .unwrap()
                .is_none()
        );
        store.clear(key).await.unwrap();
        assert!(store.load(key).await.unwrap().is_none());
        store.clear(key).await.unwrap();
        // A corrupt file is an error that says what to do.
        std::fs::write(store.path_for(key), "{").unwrap();
        let err = store.load(key).await.unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Parsing any request head never panics; a parsed target is origin-form and has no
        /// spaces.
        #[test]
        fn request_target_never_panics(head in ".{0,200}") {
            if let Some(t) = request_target(&head) {
                prop_assert!(t.starts_with('/'));
                prop_assert!(!t.contains(' '));
            }
        }

        /// Well-formed GET lines round-trip their target.
        #[test]
        fn get_lines_round_trip(path in "/[a-zA-Z0-9_./?=&%-]{0,60}") {
            let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            prop_assert_eq!(request_target(&head), Some(path.as_str()));
        }

        /// Store file names are safe (no separators, bounded) and differ for different keys.
        #[test]
        fn file_names_are_safe_and_distinct(a in ".{0,100}", b in ".{0,100}") {
            let fa = file_name_for(&a);
            prop_assert!(!fa.contains('/') && !fa.contains('\\') && fa.len() <= 48 + 1 + 16 + 5);
            prop_assert!(fa.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'));
            if a != b {
                prop_assert_ne!(fa, file_name_for(&b));
            }
        }
    }
}
