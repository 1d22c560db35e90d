//! Registered client platforms (`gateway.platforms` in `agentkit.yaml`): a platform names
//! itself with the `x-agentkit-platform` header and gets its CORS origins, its request rate
//! limit, its default servers (what `GET /v1/mcp/tools` lists for it) and extra policy rules:
//! `block_patterns` (tools it may never call) and `require_approval_for` (tools that need an
//! approval: such a call waits durably in the approval queue, see
//! [`durable`](super::durable)), globs over `server__tool`.

use std::num::NonZeroU32;

use agentkit_core::policy::Policy;
use agentkit_core::{Error, Result};
use governor::{DefaultDirectRateLimiter, Quota};

/// The header a client platform names itself with.
pub const PLATFORM_HEADER: &str = "x-agentkit-platform";

pub use agentkit_core::config::PlatformRegistration;

/// A registration with its globs compiled into the policy its calls run under.
pub(crate) struct Compiled {
    pub(crate) name: String,
    pub(crate) origins: Vec<String>,
    pub(crate) default_servers: Vec<String>,
    block: globset::GlobSet,
    policy: Policy,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Compiled {
    /// Compile registration `i` over the gateway's `base` policy: its block patterns are
    /// denied tools, its approval globs need approval, on top of the base rules.
    pub(crate) fn new(p: &PlatformRegistration, i: usize, base: &Policy) -> Result<Self> {
        let at = |k: &str| format!("gateway.platforms[{i}].{k}");
        if p.name.trim().is_empty() {
            return Err(Error::Config {
                file: None,
                key: at("name"),
                message: "a platform needs a name (the value of its x-agentkit-platform header)"
                    .into(),
            });
        }
        let mut block = globset::GlobSetBuilder::new();
        for (j, g) in p.block_patterns.iter().enumerate() {
            let glob = globset::Glob::new(g).map_err(|e| Error::Config {
                file: None,
                key: at(&format!("block_patterns[{j}]")),
                message: format!("invalid tool glob `{g}`: {}", e.kind()),
            })?;
            block.add(glob);
        }
        let block = block.build().map_err(|e| Error::Config {
            file: None,
            key: at("block_patterns"),
            message: format!("invalid globs: {e}"),
        })?;
        let mut spec = base.spec().clone();
        spec.tools.deny.extend(p.block_patterns.iter().cloned());
        spec.require_approval
            .extend(p.require_approval_for.iter().cloned());
        let policy = Policy::compile(format!("{}+platform:{}", base.name(), p.name), &spec)
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::Config {
                    file: None,
                    key: at("require_approval_for"),
                    message,
                },
                other => other,
            })?;
        for (j, o) in p.allowed_origins.iter().enumerate() {
            if http::HeaderValue::from_str(o).is_err() || !o.contains("://") {
                return Err(Error::Config {
                    file: None,
                    key: at(&format!("allowed_origins[{j}]")),
                    message: format!(
                        "`{}` is not an origin; write it like `https://app.example.com`",
                        o.escape_debug()
                    ),
                });
            }
        }
        let limiter = match p.rate_limit {
            None => None,
            Some(n) => {
                let Some(n) = NonZeroU32::new(n) else {
                    return Err(Error::Config {
                        file: None,
                        key: at("rate_limit"),
                        message: "the rate limit must be at least 1 request per second".into(),
                    });
                };
                Some(DefaultDirectRateLimiter::direct(Quota::per_second(n)))
            }
        };
        Ok(Self {
            name: p.name.clone(),
            origins: p.allowed_origins.clone(),
            default_servers: p.default_servers.clone(),
            block,
            policy,
            limiter,
        })
    }

    /// Whether tool `name` (`server__tool`) is blocked for this platform.
    pub(crate) fn blocks(&self, name: &str) -> bool {
        self.block.is_match(name)
    }

    /// The policy its calls run under.
    pub(crate) fn policy(&self) -> Policy {
        self.policy.clone()
    }

    /// Count one request; `Err(wait)` when it is over the platform's rate limit.
    pub(crate) fn admit(&self) -> std::result::Result<(), std::time::Duration> {
        use governor::clock::Clock;
        match &self.limiter {
            None => Ok(()),
            Some(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(l.clock().now())),
        }
    }
}
