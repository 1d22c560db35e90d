//! [`Metrics`]: the server's Prometheus metrics (prometheus-client), in the text exposition
//! format at `GET /metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `agentkit_runs_finished_total` | counter | `agent`, `version`, `status` |
//! | `agentkit_run_duration_seconds` | histogram | `agent`, `status` |
//! | `agentkit_runs` | gauge (store-wide, at scrape) | `status` (queued, running, waiting_input, waiting_approval, paused) |
//! | `agentkit_approvals_pending` | gauge (store-wide, at scrape) | |
//! | `agentkit_model_calls_total` | counter | `provider`, `model` |
//! | `agentkit_model_call_duration_seconds` | histogram | `provider`, `model` |
//! | `agentkit_model_tokens_total` | counter | `provider`, `model`, `kind` (input, output, cache_read, cache_write, reasoning) |
//! | `agentkit_model_cost_usd_total` | counter | `provider`, `model` |
//! | `agentkit_tool_calls_total` | counter | `server`, `tool`, `outcome` (ok, error) |
//! | `agentkit_tool_call_duration_seconds` | histogram | `server`, `tool` |
//! | `agentkit_schedule_fire_lag_seconds` | histogram | `schedule` |
//! | `agentkit_http_requests_total` | counter | `method`, `route`, `status` |
//! | `agentkit_http_request_duration_seconds` | histogram | `method`, `route` |
//!
//! Counters and histograms count what *this process* did (sum them over processes in
//! PromQL); the two gauges read the shared store, so every process reports the same value.
//! Model and tool calls answered from the journal (a resumed run replaying its completed
//! steps) are not counted again. A tool named `server__tool` (an MCP server's tool, as the
//! aggregator names it) is split into its `server` and `tool` labels; a local tool has
//! `server=""`. `route` is the route's pattern (`/v1/runs/{id}`), never the path, and
//! `unmatched` for unknown paths.
//!
//! **Cardinality is bounded**: no label holds a run, thread or call id, and each metric keeps
//! at most [`MAX_SERIES`] label sets; what comes after is counted under the value `_other`
//! (an MCP server that invents a tool name per call cannot grow the scrape without bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentkit_core::{EventSink, RunEvent, RunStatus};
use agentkit_runtime::RunObserver;
use agentkit_runtime::model::RunRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The most label sets one metric keeps; further ones are counted under `_other`.
pub const MAX_SERIES: usize = 2_000;

/// The `Content-Type` of `GET /metrics` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The label value that stands for every label set past [`MAX_SERIES`].
const OTHER: &str = "_other";

/// The live statuses `agentkit_runs` reports.
const LIVE: [RunStatus; 5] = [
    RunStatus::Queued,
    RunStatus::Running,
    RunStatus::WaitingInput,
    RunStatus::WaitingApproval,
    RunStatus::Paused,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    agent: String,
    version: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentStatus {
    agent: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    server: String,
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolOutcome {
    server: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// Histogram buckets for one kind of duration.
#[derive(Clone, Copy, Debug)]
struct Buckets {
    start: f64,
    count: u16,
}

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(self.start, 2.0, self.count))
    }
}

/// 1 ms … ≈ 65 s.
const FAST: Buckets = Buckets {
    start: 0.001,
    count: 17,
};
/// 10 ms … ≈ 5.8 h (runs can wait for people).
const SLOW: Buckets = Buckets {
    start: 0.01,
    count: 22,
};

type Hist<L> = Family<L, Histogram, Buckets>;

/// A metric family that keeps at most [`MAX_SERIES`] label sets; later ones are counted under
/// the label set `overflow` gives.
struct Bounded<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    series: AtomicUsize,
}

impl<L, M, C> Bounded<L, M, C>
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    fn new(family: Family<L, M, C>) -> Self {
        Self {
            family,
            series: AtomicUsize::new(0),
        }
    }

    /// The metric of `labels`, or of `overflow()` once the family is full.
    fn get(&self, labels: L, overflow: impl FnOnce() -> L) -> M {
        if let Some(m) = self.family.get(&labels) {
            return m.clone();
        }
        // A race may let a few more in than the cap; the bound still holds within that.
        if self.series.fetch_add(1, Ordering::Relaxed) < MAX_SERIES {
            self.family.get_or_create_owned(&labels)
        } else {
            self.series.fetch_sub(1, Ordering::Relaxed);
            self.family.get_or_create_owned(&overflow())
        }
    }
}

struct Inner {
    registry: Registry,
    runs: Bounded<RunLabels, Counter>,
    run_seconds: Bounded<AgentStatus, Histogram, Buckets>,
    live: Family<StatusLabel, Gauge>,
    approvals: Gauge,
    model_calls: Bounded<ModelLabels, Counter>,
    model_seconds: Bounded<ModelLabels, Histogram, Buckets>,
    tokens: Bounded<TokenLabels, Counter>,
    cost: Bounded<ModelLabels, Counter<f64, AtomicU64>>,
    tool_calls: Bounded<ToolOutcome, Counter>,
    tool_seconds: Bounded<ToolLabels, Histogram, Buckets>,
    schedule_lag: Bounded<ScheduleLabel, Histogram, Buckets>,
    http: Bounded<HttpLabels, Counter>,
    http_seconds: Bounded<RouteLabels, Histogram, Buckets>,
    realtime: super::Realtime,
}

/// The server's metrics: an [`EventSink`] and a [`RunObserver`] for the runtime, an HTTP
/// middleware, and the text the scrape returns. Cloning is cheap (one `Arc`).
///
/// ```
/// use agentkit_server::observe::Metrics;
///
/// use std::time::Duration;
///
/// let metrics = Metrics::new();
/// metrics.http_request("GET", Some("/v1/runs/{run_id}"), 404, Duration::from_millis(2));
/// let text = metrics.render_local();
/// assert!(text.contains(
///     r#"agentkit_http_requests_total{method="GET",route="/v1/runs/{run_id}",status="404"} 1"#
/// ));
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics. A family appears in the scrape with its first sample.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agentkit");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs this process ended, by agent (or workflow), version and final status",
            runs.clone(),
        );
        let run_seconds = Hist::<AgentStatus>::new_with_constructor(SLOW);
        registry.register(
            "run_duration_seconds",
            "Time from a run's creation to its end (queueing, waits and retries included)",
            run_seconds.clone(),
        );
        let live = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "runs",
            "Runs not yet ended, in the whole store, by status (read at scrape time)",
            live.clone(),
        );
        let approvals = Gauge::default();
        registry.register(
            "approvals_pending",
            "Runs waiting for a tool call to be approved, in the whole store (read at scrape time)",
            approvals.clone(),
        );
        let model_calls = Family::<ModelLabels, Counter>::default();
        registry.register(
            "model_calls",
            "Model calls made (not those answered from a run's journal)",
            model_calls.clone(),
        );
        let model_seconds = Hist::<ModelLabels>::new_with_constructor(FAST);
        registry.register(
            "model_call_duration_seconds",
            "Wall time of a model call",
            model_seconds.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "model_tokens",
            "Tokens used by model calls, by kind (input, output, cache_read, cache_write, reasoning)",
            tokens.clone(),
        );
        let cost = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "model_cost_usd",
            "Estimated cost of model calls in US dollars (0 for models not in the price table)",
            cost.clone(),
        );
        let tool_calls = Family::<ToolOutcome, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls made, by MCP server (empty for local tools), tool and outcome",
            tool_calls.clone(),
        );
        let tool_seconds = Hist::<ToolLabels>::new_with_constructor(FAST);
        registry.register(
            "tool_call_duration_seconds",
            "Wall time of a tool call",
            tool_seconds.clone(),
        );
        let schedule_lag = Hist::<ScheduleLabel>::new_with_constructor(FAST);
        registry.register(
            "schedule_fire_lag_seconds",
            "How late a schedule's run started after its fire time",
            schedule_lag.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status code",
            http.clone(),
        );
        let http_seconds = Hist::<RouteLabels>::new_with_constructor(FAST);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (until the response head; a stream's body is not \
             included)",
            http_seconds.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                runs: Bounded::new(runs),
                run_seconds: Bounded::new(run_seconds),
                live,
                approvals,
                model_calls: Bounded::new(model_calls),
                model_seconds: Bounded::new(model_seconds),
                tokens: Bounded::new(tokens),
                cost: Bounded::new(cost),
                tool_calls: Bounded::new(tool_calls),
                tool_seconds: Bounded::new(tool_seconds),
                schedule_lag: Bounded::new(schedule_lag),
                http: Bounded::new(http),
                http_seconds: Bounded::new(http_seconds),
                realtime: super::Realtime::new(),
            }),
        }
    }

    /// The metrics as Prometheus text, without reading the store (the store-wide gauges keep
    /// their last scraped values).
    #[must_use]
    pub fn render_local(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Read the store-wide gauges (runs by live status, approvals pending) from `store`, then
    /// render everything as Prometheus text.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn render(
        &self,
        store: &dyn agentkit_runtime::Store,
    ) -> agentkit_core::Result<String> {
        let counts = store.count_runs(&LIVE).await?;
        let count = |status: RunStatus| {
            counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| i64::try_from(*n).unwrap_or(i64::MAX))
        };
        for status in LIVE {
            self.inner
                .live
                .get_or_create(&StatusLabel {
                    status: status.as_str(),
                })
                .set(count(status));
        }
        self.inner.approvals.set(count(RunStatus::WaitingApproval));
        Ok(self.render_local())
    }

    /// The last minute of traffic (`GET /v1/metrics/realtime`), fed by the same requests
    /// and tool calls as the counters.
    #[must_use]
    pub fn realtime(&self) -> &super::Realtime {
        &self.inner.realtime
    }

    /// Count one answered HTTP request: `route` is the matched route's pattern (or `None`
    /// for an unknown path).
    pub fn http_request(&self, method: &str, route: Option<&str>, status: u16, elapsed: Duration) {
        let i = &self.inner;
        i.realtime.request(status, elapsed);
        let route = route.unwrap_or("unmatched");
        let labels = |route: &str| HttpLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status: status.to_string(),
        };
        i.http.get(labels(route), || labels(OTHER)).inc();
        let labels = |route: &str| RouteLabels {
            method: method.to_owned(),
            route: route.to_owned(),
        };
        i.http_seconds
            .get(labels(route), || labels(OTHER))
            .observe(elapsed.as_secs_f64());
    }

    fn model_call(
        &self,
        provider: &str,
        model: &str,
        usage: &agentkit_core::Usage,
        cost: f64,
        latency_us: u64,
    ) {
        let i = &self.inner;
        let labels = |model: &str| ModelLabels {
            provider: provider.to_owned(),
            model: model.to_owned(),
        };
        i.model_calls.get(labels(model), || labels(OTHER)).inc();
        i.model_seconds
            .get(labels(model), || labels(OTHER))
            .observe(Duration::from_micros(latency_us).as_secs_f64());
        if cost > 0.0 && cost.is_finite() {
            i.cost.get(labels(model), || labels(OTHER)).inc_by(cost);
        }
        let kinds = [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ];
        for (kind, n) in kinds {
            if n > 0 {
                let labels = |model: &str| TokenLabels {
                    provider: provider.to_owned(),
                    model: model.to_owned(),
                    kind,
                };
                i.tokens.get(labels(model), || labels(OTHER)).inc_by(n);
            }
        }
    }

    fn tool_call(&self, name: &str, is_error: bool, latency_us: u64) {
        let i = &self.inner;
        i.realtime.tool_call(name, is_error);
        let (server, tool) = match name.split_once("__") {
            Some((s, t)) if !s.is_empty() && !t.is_empty() => (s, t),
            _ => ("", name),
        };
        let outcome = if is_error { "error" } else { "ok" };
        i.tool_calls
            .get(
                ToolOutcome {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                    outcome,
                },
                || ToolOutcome {
                    server: OTHER.to_owned(),
                    tool: OTHER.to_owned(),
                    outcome,
                },
            )
            .inc();
        i.tool_seconds
            .get(
                ToolLabels {
                    server: server.to_owned(),
                    tool: tool.to_owned(),
                },
                || ToolLabels {
                    server: OTHER.to_owned(),
                    tool: OTHER.to_owned(),
                },
            )
            .observe(Duration::from_micros(latency_us).as_secs_f64());
    }
}

impl EventSink for Metrics {
    fn emit(&self, _run_id: &str, event: &RunEvent) {
        match event {
            RunEvent::LlmResponse {
                provider,
                model,
                usage,
                cost_usd,
                latency_us,
                replayed: false,
                ..
            } => self.model_call(provider, model, usage, *cost_usd, *latency_us),
            RunEvent::ToolCallFinished {
                tool,
                is_error,
                latency_us,
                replayed: false,
                ..
            } => self.tool_call(tool, *is_error, *latency_us),
            _ => {}
        }
    }
}

impl RunObserver for Metrics {
    fn run_ended(&self, run: &RunRecord) {
        let i = &self.inner;
        let status = run.status.as_str();
        i.runs
            .get(
                RunLabels {
                    agent: run.target.clone(),
                    version: run.version.to_string(),
                    status,
                },
                || RunLabels {
                    agent: OTHER.to_owned(),
                    version: OTHER.to_owned(),
                    status,
                },
            )
            .inc();
        let ms = run.updated_at.saturating_sub(run.created_at).max(0);
        #[allow(clippy::cast_precision_loss)]
        i.run_seconds
            .get(
                AgentStatus {
                    agent: run.target.clone(),
                    status,
                },
                || AgentStatus {
                    agent: OTHER.to_owned(),
                    status,
                },
            )
            .observe(ms as f64 / 1000.0);
    }

    fn schedule_fired(&self, schedule: &str, _target: &str, lag: Duration) {
        self.inner
            .schedule_lag
            .get(
                ScheduleLabel {
                    schedule: schedule.to_owned(),
                },
                || ScheduleLabel {
                    schedule: OTHER.to_owned(),
                },
            )
            .observe(lag.as_secs_f64());
    }
}

/// The layer that counts every request (see [`Metrics::http_request`]), by the route
/// pattern axum matched (so it goes inside the router, as `Router::layer` puts it).
#[derive(Clone)]
pub(crate) struct TrackLayer {
    metrics: Metrics,
}

impl TrackLayer {
    /// Count into `metrics`.
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            metrics: self.metrics.clone(),
            inner,
        }
    }
}

/// The service of [`TrackLayer`].
#[derive(Clone)]
pub(crate) struct Track<S> {
    metrics: Metrics,
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.method().clone();
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .cloned();
        TrackFuture {
            future: self.inner.call(request),
            counted: Some((self.metrics.clone(), method, route)),
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Track`]: counts the request when the response is ready.
    pub(crate) struct TrackFuture<F> {
        #[pin]
        future: F,
        counted: Option<(Metrics, http::Method, Option<axum::extract::MatchedPath>)>,
        started: Instant,
    }
}

impl<F, R, E> std::future::Future for TrackFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.future.poll(cx));
        if let (Ok(response), Some((metrics, method, route))) = (&out, this.counted.take()) {
            metrics.http_request(
                method.as_str(),
                route.as_ref().map(axum::extract::MatchedPath::as_str),
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        std::task::Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_family_appears_with_its_help_and_type() {
        let m = Metrics::new();
        m.http_request("GET", None, 404, Duration::from_millis(1));
        m.model_call(
            "openai",
            "gpt-4o",
            &agentkit_core::Usage::new(10, 5),
            0.001,
            20_000,
        );
        m.tool_call("fs__read_file", false, 300);
        m.schedule_fired("nightly", "report", Duration::from_millis(40));
        let text = m.render_local();
        for name in [
            "agentkit_approvals_pending gauge",
            "agentkit_model_calls_total counter",
            "agentkit_model_call_duration_seconds histogram",
            "agentkit_model_tokens_total counter",
            "agentkit_model_cost_usd_total counter",
            "agentkit_tool_calls_total counter",
            "agentkit_tool_call_duration_seconds histogram",
            "agentkit_schedule_fire_lag_seconds histogram",
            "agentkit_http_requests_total counter",
            "agentkit_http_request_duration_seconds histogram",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name}")),
                "{name} missing:\n{text}"
            );
        }
        assert!(text.contains(
            r#"agentkit_model_tokens_total{provider="openai",model="gpt-4o",kind="output"} 5"#
        ));
        assert!(text.contains(r#"agentkit_schedule_fire_lag_seconds_count{schedule="nightly"} 1"#));
        assert!(text.contains(
            r#"agentkit_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ));
    }

    #[test]
    fn mcp_tool_names_split_into_server_and_tool_and_replays_are_not_counted() {
        let m = Metrics::new();
        let finished = |tool: &str, is_error, replayed| RunEvent::ToolCallFinished {
            agent: "a".into(),
            call_id: "c".into(),
            tool: tool.into(),
            is_error,
            output: Vec::new(),
            latency_us: 1500,
            replayed,
        };
        m.emit("r", &finished("fs__read_file", false, false));
        m.emit("r", &finished("fs__read_file", true, false));
        m.emit("r", &finished("fs__read_file", false, true));
        m.emit("r", &finished("lookup", false, false));
        let text = m.render_local();
        assert!(
            text.contains(
                r#"agentkit_tool_calls_total{server="fs",tool="read_file",outcome="ok"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"agentkit_tool_calls_total{server="fs",tool="read_file",outcome="error"} 1"#
        ));
        assert!(
            text.contains(r#"agentkit_tool_calls_total{server="",tool="lookup",outcome="ok"} 1"#)
        );
        assert!(
            line(
                &text,
                r#"agentkit_tool_call_duration_seconds_count{server="fs",tool="read_file"}"#
            )
            .is_some_and(|l| l.ends_with(" 2"))
        );
    }

    #[test]
    fn label_sets_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_SERIES + 50) {
            m.tool_call(&format!("evil__tool{i}"), false, 10);
        }
        let text = m.render_local();
        let series = text
            .lines()
            .filter(|l| l.starts_with("agentkit_tool_calls_total{"))
            .count();
        assert_eq!(series, MAX_SERIES + 1, "the cap plus one `_other` series");
        assert!(text.contains(
            r#"agentkit_tool_calls_total{server="_other",tool="_other",outcome="ok"} 50"#
        ));
    }
}
