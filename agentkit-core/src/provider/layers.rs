//! Retries, timeouts and a concurrency limit around any provider, as tower layers.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use super::{ChunkStream, CompletionRequest, CompletionResponse, LlmProvider};
use crate::error::{Error, Result};

/// The longest backoff delay (one day): configured delays are clamped to it, so the jitter
/// arithmetic stays far from `Duration::MAX`.
const BACKOFF_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// When and how often to retry a failed provider call.
///
/// Delays grow exponentially from `initial_backoff` (doubling, at most `max_backoff`), each
/// plus a random jitter of up to the delay itself, so clients that failed together do not
/// retry together. A `Retry-After` the provider sent replaces the computed delay, but only up
/// to `max_retry_after` (default 60 s): a provider asking for a longer wait gets its error
/// returned instead of a stalled call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Upper bound of one delay (before jitter).
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned instead.
    pub max_retry_after: Duration,
    /// Add a random delay of up to the computed delay (default on).
    pub jitter: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
            jitter: true,
        }
    }
}

impl RetryConfig {
    /// Default retry settings.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the number of retries.
    #[must_use]
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Set the first backoff delay.
    #[must_use]
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Set the largest backoff delay.
    #[must_use]
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Set the longest `Retry-After` that is honoured by waiting.
    #[must_use]
    pub fn with_max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Turn the random jitter on or off (off gives exact, doubling delays).
    #[must_use]
    pub fn with_jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The backon builder for these settings (delays clamped to one day).
    fn backoff(&self) -> ExponentialBuilder {
        let max = self.max_backoff.min(BACKOFF_CEILING);
        let builder = ExponentialBuilder::new()
            .with_factor(2.0)
            .with_min_delay(self.initial_backoff.min(max))
            .with_max_delay(max)
            .with_max_times(usize::try_from(self.max_retries).unwrap_or(usize::MAX));
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }
}

/// A tower retry [`Policy`](tower::retry::Policy): retries errors for which
/// [`Error::is_retryable`] holds, waiting for the provider's `Retry-After` when it gave one (up
/// to [`RetryConfig::max_retry_after`]) and for a jittered exponential backoff (the `backon`
/// crate's) otherwise.
///
/// A policy follows one request; tower clones the layer's policy for each new request, and a
/// clone starts with a fresh backoff.
#[derive(Debug)]
pub struct RetryPolicy {
    config: Arc<RetryConfig>,
    backoff: Option<ExponentialBackoff>,
    attempt: u32,
}

impl Clone for RetryPolicy {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
            backoff: None,
            attempt: 0,
        }
    }
}

impl RetryPolicy {
    /// A policy with this configuration.
    #[must_use]
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config: Arc::new(config),
            backoff: None,
            attempt: 0,
        }
    }

    /// The delay before the next retry after `error`, or `None` to give up (the error is not
    /// retryable, the retries are used up, or the provider asked for a wait longer than
    /// [`RetryConfig::max_retry_after`]). Counts as one retry when it returns a delay.
    pub fn next_delay(&mut self, error: &Error) -> Option<Duration> {
        if !error.is_retryable() {
            return None;
        }
        let config = &self.config;
        let backoff = self
            .backoff
            .get_or_insert_with(|| config.backoff().build())
            .next()?;
        let delay = match error.retry_after() {
            Some(after) if after > self.config.max_retry_after => {
                tracing::debug!(
                    ?after,
                    max = ?self.config.max_retry_after,
                    "the provider asks for a longer wait than max_retry_after; not retrying"
                );
                return None;
            }
            Some(after) => after,
            None => backoff,
        };
        self.attempt += 1;
        Some(delay)
    }
}

impl<Res> tower::retry::Policy<CompletionRequest, Res, Error> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut CompletionRequest,
        result: &mut Result<Res>,
    ) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let delay = self.next_delay(error)?;
        tracing::warn!(attempt = self.attempt, ?delay, error = %error, "retrying provider call");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &CompletionRequest) -> Option<CompletionRequest> {
        Some(req.clone())
    }
}

/// Calls `complete` on a provider, as a tower service.
#[derive(Clone)]
struct CompleteService(Arc<dyn LlmProvider>);

impl Service<CompletionRequest> for CompleteService {
    type Response = CompletionResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<CompletionResponse>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CompletionRequest) -> Self::Future {
        let p = Arc::clone(&self.0);
        async move { p.complete(req).await }.boxed()
    }
}

/// Opens a stream on a provider, as a tower service.
#[derive(Clone)]
struct StreamService(Arc<dyn LlmProvider>);

impl Service<CompletionRequest> for StreamService {
    type Response = ChunkStream;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ChunkStream>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CompletionRequest) -> Self::Future {
        let p = Arc::clone(&self.0);
        async move { p.stream(req).await }.boxed()
    }
}

/// Wraps a provider in tower layers: retry (outermost), concurrency limit, per-attempt
/// timeout. The result is again an [`LlmProvider`].
///
/// ```
/// use agentkit_core::{ProviderBuilder, RetryConfig, ScriptedProvider};
/// use std::time::Duration;
///
/// let provider = ProviderBuilder::new(ScriptedProvider::new().then_text("hi"))
///     .retry(RetryConfig::new().with_max_retries(2))
///     .timeout(Duration::from_secs(60))
///     .concurrency_limit(8)
///     .build();
/// assert_eq!(provider.name(), "scripted");
/// # use agentkit_core::LlmProvider;
/// ```
pub struct ProviderBuilder {
    inner: Arc<dyn LlmProvider>,
    retry: Option<RetryConfig>,
    timeout: Option<Duration>,
    concurrency: Option<usize>,
}

impl fmt::Debug for ProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderBuilder")
            .field("provider", &self.inner.name())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl ProviderBuilder {
    /// Start from a provider.
    pub fn new(provider: impl LlmProvider + 'static) -> Self {
        Self::from_arc(Arc::new(provider))
    }

    /// Start from a shared provider.
    #[must_use]
    pub fn from_arc(provider: Arc<dyn LlmProvider>) -> Self {
        Self {
            inner: provider,
            retry: None,
            timeout: None,
            concurrency: None,
        }
    }

    /// Retry retryable failures, with a jittered exponential backoff or the provider's
    /// `Retry-After`; a `Retry-After` longer than [`RetryConfig::max_retry_after`] (default
    /// 60 s) is not waited for, the error is returned instead.
    #[must_use]
    pub fn retry(mut self, config: RetryConfig) -> Self {
        self.retry = Some(config);
        self
    }

    /// Fail an attempt that takes longer than `timeout` (for streams: until the stream opens).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Allow at most `n` calls in flight (for streams: while the stream opens). `n` is taken
    /// as at least 1 and at most [`Semaphore::MAX_PERMITS`].
    #[must_use]
    pub fn concurrency_limit(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Build the layered provider.
    #[must_use]
    pub fn build(self) -> LayeredProvider {
        let semaphore = self
            .concurrency
            .map(|n| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))));
        let name = self.inner.name().to_owned();
        let complete = stack(
            CompleteService(Arc::clone(&self.inner)),
            &name,
            self.retry.clone(),
            self.timeout,
            semaphore.clone(),
        );
        let stream = stack(
            StreamService(Arc::clone(&self.inner)),
            &name,
            self.retry,
            self.timeout,
            semaphore,
        );
        LayeredProvider {
            inner: self.inner,
            complete,
            stream,
        }
    }
}

fn stack<S, R>(
    svc: S,
    provider: &str,
    retry: Option<RetryConfig>,
    timeout: Option<Duration>,
    semaphore: Option<Arc<Semaphore>>,
) -> BoxCloneSyncService<CompletionRequest, R, Error>
where
    S: Service<CompletionRequest, Response = R, Error = Error> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    let provider = provider.to_owned();
    let timed: BoxCloneSyncService<CompletionRequest, R, Error> = match timeout {
        Some(limit) => BoxCloneSyncService::new(tower::timeout::Timeout::new(svc, limit).map_err(
            move |e: tower::BoxError| match e.downcast::<Error>() {
                Ok(e) => *e,
                Err(e) => match e.downcast::<tower::timeout::error::Elapsed>() {
                    Ok(_) => Error::provider(
                        provider.clone(),
                        crate::error::ProviderErrorKind::Timeout,
                        format!("no answer within {limit:?}"),
                    ),
                    Err(e) => Error::other(format!("provider {provider}"), e),
                },
            },
        )),
        None => BoxCloneSyncService::new(svc),
    };
    let limited: BoxCloneSyncService<CompletionRequest, R, Error> = match semaphore {
        Some(sem) => BoxCloneSyncService::new(
            tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(sem).layer(timed),
        ),
        None => timed,
    };
    match retry {
        Some(cfg) => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(RetryPolicy::new(cfg)))
                .service(limited),
        ),
        None => BoxCloneSyncService::new(limited),
    }
}

/// A provider wrapped in tower layers by [`ProviderBuilder`].
#[derive(Clone)]
pub struct LayeredProvider {
    inner: Arc<dyn LlmProvider>,
    complete: BoxCloneSyncService<CompletionRequest, CompletionResponse, Error>,
    stream: BoxCloneSyncService<CompletionRequest, ChunkStream, Error>,
}

impl fmt::Debug for LayeredProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayeredProvider")
            .field("provider", &self.inner.name())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl LlmProvider for LayeredProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn default_model(&self) -> Option<&str> {
        self.inner.default_model()
    }

    async fn complete(&self, request: CompletionRequest) -> Result<CompletionResponse> {
        self.complete.clone().oneshot(request).await
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream> {
        self.stream.clone().oneshot(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProviderErrorKind;
    use crate::provider::ScriptedProvider;

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_then_succeeds() {
        let scripted = Arc::new(
            ScriptedProvider::new()
                .then_error(ProviderErrorKind::Server, "boom")
                .then_error(ProviderErrorKind::RateLimited, "slow")
                .then_text("ok"),
        );
        let p = ProviderBuilder::from_arc(scripted.clone())
            .retry(RetryConfig::new().with_max_retries(3))
            .build();
        let r = p.complete(CompletionRequest::default()).await.unwrap();
        assert_eq!(r.text(), "ok");
        assert_eq!(scripted.call_count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_bad_requests() {
        let scripted = Arc::new(
            ScriptedProvider::new()
                .then_error(ProviderErrorKind::BadRequest, "bad")
                .then_text("never"),
        );
        let p = ProviderBuilder::from_arc(scripted.clone())
            .retry(RetryConfig::new())
            .build();
        let err = p.complete(CompletionRequest::default()).await.unwrap_err();
        assert_eq!(err.provider_kind(), Some(ProviderErrorKind::BadRequest));
        assert_eq!(scripted.call_count(), 1);
    }

    fn retry_after(secs: u64) -> Error {
        Error::Provider {
            provider: "x".into(),
            kind: ProviderErrorKind::RateLimited,
            status: Some(429),
            message: String::new(),
            retry_after: Some(Duration::from_secs(secs)),
            source: None,
        }
    }

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        let e = Error::provider("x", ProviderErrorKind::Server, "e");
        let mut p = RetryPolicy::new(RetryConfig::new().with_jitter(false));
        let delays: Vec<_> = std::iter::from_fn(|| p.next_delay(&e)).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000].map(Duration::from_millis),
            "three retries, doubling"
        );

        let mut p = RetryPolicy::new(RetryConfig::new());
        assert_eq!(p.next_delay(&retry_after(7)), Some(Duration::from_secs(7)));
        // A wait longer than max_retry_after (60 s) is not done.
        assert_eq!(p.next_delay(&retry_after(61)), None);
        // A Retry-After counts as a retry too: one of three is left.
        assert!(p.next_delay(&e).is_some());
        assert_eq!(p.next_delay(&e), None);
        // A clone (tower makes one per request) starts over.
        assert!(p.clone().next_delay(&e).is_some());
        assert_eq!(
            p.next_delay(&Error::provider("x", ProviderErrorKind::BadRequest, "e")),
            None
        );
    }

    #[test]
    fn jitter_stays_between_the_delay_and_twice_it() {
        let e = Error::provider("x", ProviderErrorKind::Overloaded, "e");
        for _ in 0..50 {
            let mut p = RetryPolicy::new(
                RetryConfig::new()
                    .with_max_retries(5)
                    .with_max_backoff(Duration::from_secs(2)),
            );
            for base in [500, 1000, 2000, 2000, 2000].map(Duration::from_millis) {
                let d = p.next_delay(&e).unwrap();
                assert!(d >= base && d <= base * 2, "{d:?} for {base:?}");
            }
        }
    }

    #[test]
    fn absurd_settings_do_not_panic() {
        let e = Error::provider("x", ProviderErrorKind::Server, "e");
        let mut p = RetryPolicy::new(
            RetryConfig::new()
                .with_max_retries(u32::MAX)
                .with_initial_backoff(Duration::MAX)
                .with_max_backoff(Duration::MAX),
        );
        for _ in 0..100 {
            assert!(p.next_delay(&e).unwrap() <= BACKOFF_CEILING * 2);
        }
        let _ = ProviderBuilder::new(ScriptedProvider::new())
            .concurrency_limit(usize::MAX)
            .build();
    }
}
