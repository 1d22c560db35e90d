//! A small client of the server's `/v1` API for the CLI.

use reqwest::Method;
use serde_json::Value;

/// Why a command failed, and the exit code it maps to.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<agentkit_core::Error> for Failure {
    fn from(e: agentkit_core::Error) -> Self {
        let code = if e.is_not_found() {
            exit::NOT_FOUND
        } else if e.is_invalid_request() {
            exit::INVALID
        } else {
            exit::FAILED
        };
        Self::new(code, e.to_string())
    }
}

/// Exit codes (documented in `agentkit --help`).
pub(crate) mod exit {
    /// Something failed (a run failed, the server errored, …).
    pub(crate) const FAILED: i32 = 1;
    /// Bad usage or invalid input.
    pub(crate) const INVALID: i32 = 2;
    /// The agent, run or version does not exist.
    pub(crate) const NOT_FOUND: i32 = 3;
    /// A conflict (busy thread, label moved, run in the wrong state).
    pub(crate) const CONFLICT: i32 = 4;
    /// The server could not be reached or refused the key.
    pub(crate) const UNREACHABLE: i32 = 5;
}

/// The server at `base`, with `key`.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub(crate) fn new(base: &str, key: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    /// Send a request; a problem answer becomes a [`Failure`] with its detail.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut r = self.request(method, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        self.send(r).await
    }

    /// Send a request built from [`request`](Self::request); a problem answer becomes a
    /// [`Failure`] with its detail.
    pub(crate) async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let res = r.send().await.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!(
                    "cannot reach the server at {}: {e}. Start it with `agentkit dev`, or pass \
                     --server URL",
                    self.base
                ),
            )
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let detail = value
            .get("detail")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned);
        let code = match status.as_u16() {
            401 | 403 => exit::UNREACHABLE,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            400..=499 => exit::INVALID,
            _ => exit::FAILED,
        };
        Err(Failure::new(code, format!("{status}: {detail}")))
    }
}
