//! Retries, timeouts and a concurrency limit around any provider, as tower layers.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use super::{ChunkStream, CompletionRequest, CompletionResponse, LlmProvider};
use crate::error::{Error, Result};

/// When and how often to retry a failed provider call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the error is returned instead.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
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
}

/// A tower retry [`Policy`](tower::retry::Policy): retries errors for which
/// [`Error::is_retryable`] holds, waiting for the provider's `Retry-After` when it gave one and
/// for an exponential backoff otherwise.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: Arc<RetryConfig>,
    attempt: u32,
}

impl RetryPolicy {
    /// A policy with this configuration.
    #[must_use]
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config: Arc::new(config),
            attempt: 0,
        }
    }

    /// The delay before retry number `attempt` (0-based) after `error`, or `None` to give up.
    #[must_use]
    pub fn delay_for(&self, attempt: u32, error: &Error) -> Option<Duration> {
        if attempt >= self.config.max_retries || !error.is_retryable() {
            return None;
        }
        if let Some(after) = error.retry_after() {
            return (after <= self.config.max_retry_after).then_some(after);
        }
        let factor = 2u32.saturating_pow(attempt.min(16));
        Some(
            self.config
                .initial_backoff
                .saturating_mul(factor)
                .min(self.config.max_backoff),
        )
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
        let delay = self.delay_for(self.attempt, error)?;
        tracing::warn!(attempt = self.attempt + 1, ?delay, error = %error, "retrying provider call");
        self.attempt += 1;
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

    /// Retry retryable failures.
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

    /// Allow at most `n` calls in flight (for streams: while the stream opens).
    #[must_use]
    pub fn concurrency_limit(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Build the layered provider.
    #[must_use]
    pub fn build(self) -> LayeredProvider {
        let semaphore = self.concurrency.map(|n| Arc::new(Semaphore::new(n.max(1))));
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

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        let p = RetryPolicy::new(RetryConfig::new());
        let e = Error::provider("x", ProviderErrorKind::Server, "e");
        assert_eq!(p.delay_for(0, &e), Some(Duration::from_millis(500)));
        assert_eq!(p.delay_for(2, &e), Some(Duration::from_secs(2)));
        assert_eq!(p.delay_for(3, &e), None);
        let e = Error::Provider {
            provider: "x".into(),
            kind: ProviderErrorKind::RateLimited,
            status: Some(429),
            message: String::new(),
            retry_after: Some(Duration::from_secs(7)),
            source: None,
        };
        assert_eq!(p.delay_for(0, &e), Some(Duration::from_secs(7)));
    }
}
