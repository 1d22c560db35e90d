//! [`RateLimits`]: per-key and per-workspace request rate limits (GCRA, the `governor` crate),
//! checked after authentication; a request over a limit is answered 429 with `Retry-After`.
//!
//! Only authenticated callers reach the limiter, so its keys are bounded by the server's API
//! keys and workspaces; state for keys idle long enough to be back at a full burst is dropped
//! every few seconds (`retain_recent`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use http::StatusCode;

use crate::api::Problem;
use crate::tenancy::Caller;

type Limiter = DefaultKeyedRateLimiter<String>;

/// Request rate limits per API key and per workspace (none by default).
///
/// ```
/// use std::num::NonZeroU32;
/// use agentkit_server::RateLimits;
///
/// const TWENTY: NonZeroU32 = NonZeroU32::new(20).unwrap();
/// const FORTY: NonZeroU32 = NonZeroU32::new(40).unwrap();
///
/// // 20 requests per second per key, 40 at once after a quiet period.
/// let limits = RateLimits::new().per_key(TWENTY, FORTY);
/// assert!(limits.is_limited());
/// ```
#[derive(Clone, Default)]
pub struct RateLimits {
    per_key: Option<Arc<Limiter>>,
    per_workspace: Option<Arc<Limiter>>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_key", &self.per_key.is_some())
            .field("per_workspace", &self.per_workspace.is_some())
            .finish()
    }
}

fn quota(per_second: NonZeroU32, burst: NonZeroU32) -> Quota {
    Quota::per_second(per_second).allow_burst(burst)
}

impl RateLimits {
    /// No limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The limits of `agentkit.yaml`'s `server.rate_limit`.
    #[must_use]
    pub fn from_settings(s: &agentkit_core::config::RateLimitSettings) -> Self {
        let mut limits = Self::new();
        if let Some(r) = s.per_key {
            limits = limits.per_key(r.per_second, r.burst());
        }
        if let Some(r) = s.per_workspace {
            limits = limits.per_workspace(r.per_second, r.burst());
        }
        limits
    }

    /// At most `per_second` requests per second per API key, `burst` at once.
    #[must_use]
    pub fn per_key(mut self, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        self.per_key = Some(Arc::new(Limiter::dashmap(quota(per_second, burst))));
        self
    }

    /// At most `per_second` requests per second per workspace (all its keys), `burst` at once.
    #[must_use]
    pub fn per_workspace(mut self, per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        self.per_workspace = Some(Arc::new(Limiter::dashmap(quota(per_second, burst))));
        self
    }

    /// Whether any limit is set.
    #[must_use]
    pub fn is_limited(&self) -> bool {
        self.per_key.is_some() || self.per_workspace.is_some()
    }

    /// Count one request of `caller`; `Some` 429 response when it is over a limit. The
    /// workspace's limit is checked first, so a request refused by it does not use up the
    /// key's allowance.
    pub(crate) fn check(&self, caller: &Caller) -> Option<Response> {
        if let Some(l) = &self.per_workspace {
            let key = caller.workspace.to_string();
            if let Err(not_until) = l.check_key(&key) {
                let wait = not_until.wait_time_from(l.clock().now());
                return Some(too_many(&format!("workspace {}", caller.workspace), wait));
            }
        }
        if let Some(l) = &self.per_key {
            let key = caller.key_id.clone().unwrap_or_else(|| "admin".to_owned());
            if let Err(not_until) = l.check_key(&key) {
                let wait = not_until.wait_time_from(l.clock().now());
                let who = match &caller.key_id {
                    Some(id) => format!("API key {id}"),
                    None => "the admin key".to_owned(),
                };
                return Some(too_many(&who, wait));
            }
        }
        None
    }

    /// Drop the state of keys that are back at a full burst (they behave as new).
    pub(crate) fn retain_recent(&self) {
        for l in [&self.per_key, &self.per_workspace].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// 429 with `Retry-After` (whole seconds, at least 1).
fn too_many(who: &str, wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut res = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        format!(
            "{who} is over its request rate limit (server.rate_limit); retry after {secs} s \
             (Retry-After), or ask the operator for a higher limit"
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    res
}

/// Run-start rate limits per agent (`limits.rate_limit` of an agent), counted per workspace;
/// a start over a limit is refused with [`Error::LimitReached`](agentkit_core::Error) (429 and
/// `Retry-After` over HTTP). Kept in this process, like [`RateLimits`].
///
/// ```
/// use std::num::NonZeroU32;
/// use agentkit_core::config::Rate;
/// use agentkit_server::RunRateLimits;
///
/// let one = NonZeroU32::new(1).unwrap();
/// let limits = RunRateLimits::new().agent("writer", Rate::new(one, one));
/// assert!(limits.check("acme/prod", "writer").is_ok());
/// let refused = limits.check("acme/prod", "writer").unwrap_err();
/// assert!(refused.is_limit_reached());
/// assert!(limits.check("acme/dev", "writer").is_ok(), "per workspace");
/// assert!(limits.check("acme/prod", "reader").is_ok(), "per agent");
/// ```
#[derive(Clone, Default)]
pub struct RunRateLimits {
    agents: std::collections::HashMap<String, (agentkit_core::config::Rate, Arc<Limiter>)>,
}

impl std::fmt::Debug for RunRateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRateLimits")
            .field("agents", &self.agents.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RunRateLimits {
    /// No limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The `limits.rate_limit` of every agent of `config`.
    #[must_use]
    pub fn from_config(config: &agentkit_core::Config) -> Self {
        config
            .agents
            .iter()
            .filter_map(|(name, a)| a.limits.rate_limit.map(|r| (name, r)))
            .fold(Self::new(), |l, (name, r)| l.agent(name.clone(), r))
    }

    /// At most `rate` starts of `agent` per second in each workspace.
    #[must_use]
    pub fn agent(mut self, agent: impl Into<String>, rate: agentkit_core::config::Rate) -> Self {
        let limiter = Arc::new(Limiter::dashmap(quota(rate.per_second, rate.burst())));
        self.agents.insert(agent.into(), (rate, limiter));
        self
    }

    /// Whether any limit is set.
    #[must_use]
    pub fn is_limited(&self) -> bool {
        !self.agents.is_empty()
    }

    /// Count one start of `agent` in `workspace`.
    ///
    /// # Errors
    ///
    /// [`Error::LimitReached`](agentkit_core::Error::LimitReached) when it is over the agent's
    /// limit, with the wait.
    pub fn check(&self, workspace: &str, agent: &str) -> agentkit_core::Result<()> {
        let Some((rate, l)) = self.agents.get(agent) else {
            return Ok(());
        };
        match l.check_key(&workspace.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(l.clock().now());
                Err(agentkit_core::Error::LimitReached {
                    what: format!("run of `{agent}` refused"),
                    message: format!(
                        "agent `{agent}` may start {} runs per second (bursts of {}) in \
                         workspace `{workspace}` (agents.{agent}.limits.rate_limit); retry in \
                         {:.1} s (Retry-After)",
                        rate.per_second,
                        rate.burst(),
                        wait.as_secs_f64()
                    ),
                    retry_after: wait,
                })
            }
        }
    }
}
