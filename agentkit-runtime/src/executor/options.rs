//! Per-target options: concurrency, retries and backoff, timeout, budget.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{Budget, Error};
use backon::{BackoffBuilder, ExponentialBuilder};

/// Decides whether a failed attempt is retried.
pub type RetryPredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// Retries with jittered exponential backoff (see [`backoffs`](Self::backoffs)). Completed steps are not re-executed on a retry: the
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

    /// The waits before the retries, in order (`max_attempts - 1` of them): exponential from
    /// `initial_backoff` by `multiplier`, capped at `max_backoff` (and at [`MAX_BACKOFF`]),
    /// each plus up to 100 % random jitter so that runs failing together do not retry in
    /// lockstep. Built with backon's `ExponentialBuilder`.
    pub fn backoffs(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let max = self.max_backoff.min(MAX_BACKOFF);
        #[allow(clippy::cast_possible_truncation)] // a growth factor needs no f64 precision
        let factor = if self.multiplier.is_finite() {
            self.multiplier.clamp(1.0, 1_000.0) as f32
        } else {
            1.0
        };
        ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff.min(max))
            .with_max_delay(max)
            .with_factor(factor)
            .with_max_times(
                usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX),
            )
            .with_jitter()
            .build()
    }
}

/// The longest wait between two attempts, whatever the policy says (one day).
pub const MAX_BACKOFF: Duration = Duration::from_secs(86_400);

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoffs_grow_with_jitter_up_to_the_cap() {
        let policy = RetryPolicy::new()
            .with_max_attempts(6)
            .with_backoff(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<Duration> = policy.backoffs().collect();
        assert_eq!(waits.len(), 5);
        // Base 100, 200, 400, 500, 500 ms, each plus up to 100 % jitter.
        for (wait, base) in waits.iter().zip([100u64, 200, 400, 500, 500]) {
            let base = Duration::from_millis(base);
            assert!(*wait >= base && *wait <= base * 2, "{wait:?} for {base:?}");
        }
        // Jittered: two runs failing together do not wait the same.
        let a: Vec<Duration> = policy.backoffs().collect();
        let b: Vec<Duration> = policy.backoffs().collect();
        assert_ne!(a, b);
        assert_eq!(RetryPolicy::none().backoffs().count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn backoffs_never_panic_and_stay_bounded(
            attempts in 0u32..20,
            initial in any::<u64>(),
            max in any::<u64>(),
            multiplier in any::<f64>(),
        ) {
            let mut policy = RetryPolicy::new()
                .with_max_attempts(attempts)
                .with_backoff(Duration::from_millis(initial), Duration::from_millis(max));
            policy.multiplier = multiplier;
            for wait in policy.backoffs() {
                prop_assert!(wait <= MAX_BACKOFF * 2);
            }
        }
    }
}
