//! Per-target options: concurrency, retries and backoff, timeout, budget.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Budget, Error};

/// Decides whether a failed attempt is retried.
pub type RetryPredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// Retries with exponential backoff. Completed steps are not re-executed on a retry: the
/// journal replays them.
#[derive(Clone)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound of the wait.
    pub max_backoff: Duration,
    /// Growth factor of the wait.
    pub multiplier: f64,
    /// Which errors are retried (default: [`Error::is_retryable`]).
    pub retry_if: RetryPredicate,
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("multiplier", &self.multiplier)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
            retry_if: Arc::new(Error::is_retryable),
        }
    }
}

impl RetryPolicy {
    /// The default policy: 3 attempts, 200 ms doubling up to 30 s, retryable errors only.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Never retry.
    #[must_use]
    pub fn none() -> Self {
        Self::default().with_max_attempts(1)
    }

    /// Set the number of attempts (at least 1).
    #[must_use]
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Set the backoff: first wait and upper bound.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Retry only errors for which `f` returns true.
    #[must_use]
    pub fn with_retry_if(mut self, f: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Arc::new(f);
        self
    }

    /// The wait before retry number `retry` (1-based).
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .powi(i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX));
        let wait = self.initial_backoff.as_secs_f64() * factor;
        Duration::try_from_secs_f64(wait)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

/// How a target runs: concurrency, retries, timeout, budget.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TargetOptions {
    /// What the target does.
    pub description: String,
    /// Target version stored with each run.
    pub version: u32,
    /// At most this many runs of the target execute at once (others stay queued).
    pub max_concurrency: Option<usize>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// Token / dollar budget per run.
    pub budget: Option<Budget>,
}

impl TargetOptions {
    /// Defaults: unlimited concurrency, default retries, no timeout, no budget, version 1.
    #[must_use]
    pub fn new() -> Self {
        Self {
            version: 1,
            ..Self::default()
        }
    }

    /// Describe the target.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Set the version.
    #[must_use]
    pub fn with_version(mut self, v: u32) -> Self {
        self.version = v;
        self
    }

    /// Limit concurrent runs.
    #[must_use]
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n.max(1));
        self
    }

    /// Set the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Set a per-attempt timeout.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Set a budget.
    #[must_use]
    pub fn with_budget(mut self, b: Budget) -> Self {
        self.budget = Some(b);
        self
    }
}
