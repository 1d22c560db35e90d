//! Registered client platforms (`gateway.platforms` in `agentkit.yaml`): a platform names
//! itself with the `x-agentkit-platform` header and gets its CORS origins, its request rate
//! limit, its default servers (what `GET /v1/mcp/tools` lists for it) and extra policy rules:
//! `block_patterns` (tools it may never call) and `require_approval_for` (tools that need an
//! approval, so are denied at the gateway), globs over `server__tool`.

use std::num::NonZeroU32;

use agentkit_core::policy::Policy;
use agentkit_core::{Error, Result};
use governor::{DefaultDirectRateLimiter, Quota};
use serde::{Deserialize, Serialize};

/// The header a client platform names itself with.
pub const PLATFORM_HEADER: &str = "x-agentkit-platform";

/// One registered client platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PlatformRegistration {
    /// Its name (the value of the `x-agentkit-platform` header).
    pub name: String,
    /// Browser origins allowed to call the gateway routes (CORS), e.g. `https://app.example.com`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// At most this many gateway requests per second from this platform (all its keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// The servers `GET /v1/mcp/tools` lists for it (empty: every server the key sees).
    #[serde(default)]
    pub default_servers: Vec<String>,
    /// Tools (globs over `server__tool`) whose calls need an approval.
    #[serde(default)]
    pub require_approval_for: Vec<String>,
    /// Tools (globs over `server__tool`) it may never call.
    #[serde(default)]
    pub block_patterns: Vec<String>,
}

impl PlatformRegistration {
    /// A platform named `name` with no rules.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Allow these browser origins.
    #[must_use]
    pub fn with_allowed_origins<I: IntoIterator<Item = S>, S: Into<String>>(mut self, o: I) -> Self {
        self.allowed_origins = o.into_iter().map(Into::into).collect();
        self
    }

    /// At most `per_second` requests per second.
    #[must_use]
    pub fn with_rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = Some(per_second);
        self
    }

    /// List these servers' tools.
    #[must_use]
    pub fn with_default_servers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, s: I) -> Self {
        self.default_servers = s.into_iter().map(Into::into).collect();
        self
    }

    /// Tools needing approval.
    #[must_use]
    pub fn with_require_approval_for<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        g: I,
    ) -> Self {
        self.require_approval_for = g.into_iter().map(Into::into).collect();
        self
    }

    /// Tools never to be called.
    #[must_use]
    pub fn with_block_patterns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, g: I) -> Self {
        self.block_patterns = g.into_iter().map(Into::into).collect();
        self
    }
}

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

    /// Count one request; `false` when it is over the platform's rate limit.
    pub(crate) fn admit(&self) -> bool {
        self.limiter.as_ref().is_none_or(|l| l.check().is_ok())
    }
}
