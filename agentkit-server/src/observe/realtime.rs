//! [`Realtime`]: the last minute of traffic, for `GET /v1/metrics/realtime` (the GatewayOps
//! shape): active connections by platform, requests per second, latency p50/p99, tool calls
//! per minute, error rate and the top tools.
//!
//! Memory is fixed: a ring of [`WINDOW_SECONDS`] one-second buckets, each with counters, a
//! latency histogram of [`LATENCY_BINS`] logarithmic bins and at most [`MAX_TOOLS`] tool
//! names (further names are counted under `_other`). A bucket is reset when its second comes
//! round again, so nothing older than the window is kept and nothing grows with traffic.
//!
//! **Platform**: agentkit has no notion of a client platform yet, so connections are grouped
//! by the caller's workspace (`org/workspace`), `admin` for the server's admin key. A
//! connection is an authenticated request in progress, streams (SSE run events, `/mcp`)
//! included until their body ends.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How many seconds the window covers.
pub const WINDOW_SECONDS: u64 = 60;
/// Latency histogram bins per bucket (4 per doubling, from 50 µs to ≈ 3.5 min).
pub const LATENCY_BINS: usize = 88;
/// Distinct tool names one bucket keeps; others are counted under `_other`.
pub const MAX_TOOLS: usize = 64;
/// How many tools `top_tools` lists.
pub const TOP_TOOLS: usize = 10;

/// The smallest latency bin's upper bound, in microseconds.
const FIRST_BIN_US: f64 = 50.0;
const BINS_PER_DOUBLING: f64 = 4.0;

/// The bin of a latency.
fn bin_of(latency: Duration) -> usize {
    #[allow(clippy::cast_precision_loss)]
    let us = latency.as_micros() as f64;
    if us <= FIRST_BIN_US {
        return 0;
    }
    let i = ((us / FIRST_BIN_US).log2() * BINS_PER_DOUBLING).ceil();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = i as usize;
    i.min(LATENCY_BINS - 1)
}

/// A representative latency of a bin, in milliseconds (the geometric middle of its range:
/// within ±9% of any latency in it).
fn bin_ms(i: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let upper = FIRST_BIN_US * 2f64.powf(i as f64 / BINS_PER_DOUBLING);
    let lower = if i == 0 {
        0.0
    } else {
        upper / 2f64.powf(1.0 / BINS_PER_DOUBLING)
    };
    let middle = if i == 0 {
        upper / 2.0
    } else {
        (lower * upper).sqrt()
    };
    middle / 1000.0
}

#[derive(Clone)]
struct ToolCount {
    name: String,
    calls: u64,
    errors: u64,
}

#[derive(Clone)]
struct Bucket {
    second: u64,
    requests: u64,
    server_errors: u64,
    latency: [u32; LATENCY_BINS],
    tool_calls: u64,
    tool_errors: u64,
    tools: Vec<ToolCount>,
}

impl Bucket {
    fn empty(second: u64) -> Self {
        Self {
            second,
            requests: 0,
            server_errors: 0,
            latency: [0; LATENCY_BINS],
            tool_calls: 0,
            tool_errors: 0,
            tools: Vec::new(),
        }
    }
}

struct Inner {
    started: Instant,
    /// `WINDOW_SECONDS` buckets, bucket `s % WINDOW_SECONDS` holding second `s`.
    ring: Mutex<Vec<Bucket>>,
    /// Open connections by platform; an entry goes when its count reaches zero.
    connections: Mutex<HashMap<String, u64>>,
}

/// The realtime window (see the [module docs](self)). Cloning is cheap (one `Arc`).
///
/// ```
/// use std::time::Duration;
/// use agentkit_server::observe::Realtime;
///
/// let rt = Realtime::new();
/// rt.request(200, Duration::from_millis(4));
/// rt.request(503, Duration::from_millis(40));
/// rt.tool_call("fs__read_file", false);
/// let _open = rt.connect("acme/prod");
/// let snap = rt.snapshot();
/// assert_eq!(snap.active_connections.total, 1);
/// assert_eq!(snap.active_connections.by_platform["acme/prod"], 1);
/// assert_eq!(snap.error_rate, 0.5);
/// assert_eq!(snap.top_tools[0].name, "fs__read_file");
/// ```
#[derive(Clone)]
pub struct Realtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime").finish_non_exhaustive()
    }
}

impl Default for Realtime {
    fn default() -> Self {
        Self::new()
    }
}

/// Open connections: in total and by platform (the caller's workspace, `admin` for the admin
/// key).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Connections {
    /// Every open connection.
    pub total: u64,
    /// By platform.
    pub by_platform: std::collections::BTreeMap<String, u64>,
}

/// Latency percentiles over the window, in milliseconds (`null` without requests).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// One tool's calls in the window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ToolStat {
    /// The tool's name as agents call it (`server__tool` for MCP tools).
    pub name: String,
    /// Calls.
    pub calls: u64,
    /// Calls that ended with an error result.
    pub errors: u64,
}

/// What `GET /v1/metrics/realtime` answers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct RealtimeSnapshot {
    /// The seconds the rates are computed over (the window, or the uptime while shorter).
    pub window_seconds: u64,
    /// Open connections now.
    pub active_connections: Connections,
    /// HTTP requests answered per second.
    pub requests_per_second: f64,
    /// HTTP latency percentiles (until the response head).
    pub latency_ms: Latency,
    /// Tool calls per minute (every agent's, MCP and local).
    pub tool_calls_per_minute: f64,
    /// The share of answered requests with a 5xx status, 0 to 1.
    pub error_rate: f64,
    /// The share of tool calls that ended with an error result, 0 to 1.
    pub tool_error_rate: f64,
    /// The most called tools, most calls first (at most 10).
    pub top_tools: Vec<ToolStat>,
}

impl Realtime {
    /// An empty window starting now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                ring: Mutex::new(
                    (0..WINDOW_SECONDS)
                        .map(|_| Bucket::empty(u64::MAX))
                        .collect(),
                ),
                connections: Mutex::default(),
            }),
        }
    }

    fn now(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }

    fn with_bucket(&self, second: u64, f: impl FnOnce(&mut Bucket)) {
        let mut ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        #[allow(clippy::cast_possible_truncation)]
        let slot = &mut ring[(second % WINDOW_SECONDS) as usize];
        if slot.second != second {
            *slot = Bucket::empty(second);
        }
        f(slot);
    }

    /// Count an answered HTTP request.
    pub fn request(&self, status: u16, latency: Duration) {
        self.request_at(self.now(), status, latency);
    }

    fn request_at(&self, second: u64, status: u16, latency: Duration) {
        self.with_bucket(second, |b| {
            b.requests += 1;
            if status >= 500 {
                b.server_errors += 1;
            }
            let bin = &mut b.latency[bin_of(latency)];
            *bin = bin.saturating_add(1);
        });
    }

    /// Count a finished tool call.
    pub fn tool_call(&self, name: &str, is_error: bool) {
        self.tool_call_at(self.now(), name, is_error);
    }

    fn tool_call_at(&self, second: u64, name: &str, is_error: bool) {
        self.with_bucket(second, |b| {
            b.tool_calls += 1;
            b.tool_errors += u64::from(is_error);
            let idx = match b.tools.iter().position(|t| t.name == name) {
                Some(i) => i,
                None if b.tools.len() < MAX_TOOLS - 1 => {
                    b.tools.push(ToolCount {
                        name: name.to_owned(),
                        calls: 0,
                        errors: 0,
                    });
                    b.tools.len() - 1
                }
                None => match b.tools.iter().position(|t| t.name == "_other") {
                    Some(i) => i,
                    None => {
                        b.tools.push(ToolCount {
                            name: "_other".to_owned(),
                            calls: 0,
                            errors: 0,
                        });
                        b.tools.len() - 1
                    }
                },
            };
            b.tools[idx].calls += 1;
            b.tools[idx].errors += u64::from(is_error);
        });
    }

    /// Count an open connection of `platform` until the returned guard is dropped.
    #[must_use = "the connection counts until the guard is dropped"]
    pub fn connect(&self, platform: &str) -> ConnectionGuard {
        let mut c = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *c.entry(platform.to_owned()).or_default() += 1;
        ConnectionGuard {
            inner: Arc::clone(&self.inner),
            platform: platform.to_owned(),
        }
    }

    /// The window now.
    #[must_use]
    pub fn snapshot(&self) -> RealtimeSnapshot {
        self.snapshot_at(self.now())
    }

    fn snapshot_at(&self, now: u64) -> RealtimeSnapshot {
        let mut requests = 0u64;
        let mut server_errors = 0u64;
        let mut tool_calls = 0u64;
        let mut tool_errors = 0u64;
        let mut latency = [0u64; LATENCY_BINS];
        let mut tools: HashMap<String, (u64, u64)> = HashMap::new();
        {
            let ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
            for b in ring
                .iter()
                .filter(|b| b.second <= now && now - b.second < WINDOW_SECONDS)
            {
                requests += b.requests;
                server_errors += b.server_errors;
                tool_calls += b.tool_calls;
                tool_errors += b.tool_errors;
                for (sum, n) in latency.iter_mut().zip(b.latency.iter()) {
                    *sum += u64::from(*n);
                }
                for t in &b.tools {
                    let e = tools.entry(t.name.clone()).or_default();
                    e.0 += t.calls;
                    e.1 += t.errors;
                }
            }
        }
        let by_platform: std::collections::BTreeMap<String, u64> = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let span = (now + 1).min(WINDOW_SECONDS);
        #[allow(clippy::cast_precision_loss)]
        let (span_f, requests_f, tool_calls_f) = (span as f64, requests as f64, tool_calls as f64);
        let share = |part: u64, whole: u64| {
            #[allow(clippy::cast_precision_loss)]
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        let percentile = |q: f64| -> Option<f64> {
            if requests == 0 {
                return None;
            }
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let rank = ((q * requests as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, n) in latency.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Some(bin_ms(i));
                }
            }
            Some(bin_ms(LATENCY_BINS - 1))
        };
        let mut top: Vec<ToolStat> = tools
            .into_iter()
            .map(|(name, (calls, errors))| ToolStat {
                name,
                calls,
                errors,
            })
            .collect();
        top.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.name.cmp(&b.name)));
        top.truncate(TOP_TOOLS);
        RealtimeSnapshot {
            window_seconds: span,
            active_connections: Connections {
                total: by_platform.values().sum(),
                by_platform,
            },
            requests_per_second: requests_f / span_f,
            latency_ms: Latency {
                p50: percentile(0.5),
                p99: percentile(0.99),
            },
            tool_calls_per_minute: tool_calls_f * 60.0 / span_f,
            error_rate: share(server_errors, requests),
            tool_error_rate: share(tool_errors, tool_calls),
            top_tools: top,
        }
    }
}

/// Counts one open connection until dropped (see [`Realtime::connect`]).
pub struct ConnectionGuard {
    inner: Arc<Inner>,
    platform: String,
}

impl std::fmt::Debug for ConnectionGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionGuard")
            .field("platform", &self.platform)
            .finish()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut c = self
            .inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.platform) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.platform);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps a connection counted until it ends or is dropped.
    pub(crate) struct Counted<B> {
        #[pin]
        inner: B,
        guard: Option<ConnectionGuard>,
    }
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, guard: ConnectionGuard) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: http_body::Body> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            // The body ended: the connection is done even if the body is kept around.
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::float_cmp)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates_cover_the_last_minute_only() {
        let rt = Realtime::new();
        for s in 0..120 {
            rt.request_at(
                s,
                if s % 10 == 0 { 500 } else { 200 },
                Duration::from_millis(5),
            );
        }
        for _ in 0..30 {
            rt.tool_call_at(100, "calc__add", false);
        }
        rt.tool_call_at(119, "calc__div", true);
        let snap = rt.snapshot_at(119);
        assert_eq!(snap.window_seconds, 60);
        assert_eq!(snap.requests_per_second, 1.0);
        assert_eq!(snap.error_rate, 6.0 / 60.0);
        assert_eq!(snap.tool_calls_per_minute, 31.0);
        assert_eq!(snap.top_tools[0].name, "calc__add");
        assert_eq!(snap.top_tools[1].errors, 1);
        let p50 = snap.latency_ms.p50.unwrap();
        assert!((4.5..=5.5).contains(&p50), "{p50}");
        // Two minutes later nothing is left.
        let later = rt.snapshot_at(240);
        assert_eq!(later.requests_per_second, 0.0);
        assert!(later.latency_ms.p50.is_none() && later.top_tools.is_empty());
    }

    #[test]
    fn percentiles_separate_fast_and_slow_requests() {
        let rt = Realtime::new();
        for _ in 0..98 {
            rt.request_at(3, 200, Duration::from_millis(2));
        }
        for _ in 0..2 {
            rt.request_at(3, 200, Duration::from_secs(2));
        }
        let snap = rt.snapshot_at(3);
        assert_eq!(
            snap.window_seconds, 4,
            "rates over the uptime while it is short"
        );
        let (p50, p99) = (snap.latency_ms.p50.unwrap(), snap.latency_ms.p99.unwrap());
        assert!((1.8..=2.2).contains(&p50), "{p50}");
        assert!((1800.0..=2200.0).contains(&p99), "{p99}");
    }

    #[test]
    fn tool_names_per_bucket_are_bounded_and_connections_end_with_their_guard() {
        let rt = Realtime::new();
        for i in 0..1000 {
            rt.tool_call_at(7, &format!("evil__t{i}"), false);
        }
        let ring = rt.inner.ring.lock().unwrap();
        assert!(ring[7].tools.len() <= MAX_TOOLS);
        drop(ring);
        let snap = rt.snapshot_at(7);
        assert_eq!(snap.tool_calls_per_minute * 8.0 / 60.0, 1000.0);
        assert!(snap.top_tools.iter().any(|t| t.name == "_other"));
        let a = rt.connect("admin");
        let b = rt.connect("acme/prod");
        let c = rt.connect("acme/prod");
        assert_eq!(rt.snapshot().active_connections.total, 3);
        drop((a, b));
        let snap = rt.snapshot();
        assert_eq!(snap.active_connections.by_platform.len(), 1);
        assert_eq!(snap.active_connections.by_platform["acme/prod"], 1);
        drop(c);
        assert_eq!(rt.snapshot().active_connections.total, 0);
    }

    proptest! {
        #[test]
        fn any_latency_lands_in_a_bin_that_represents_it(us in 0u64..400_000_000) {
            let d = Duration::from_micros(us);
            let i = bin_of(d);
            prop_assert!(i < LATENCY_BINS);
            let ms = bin_ms(i);
            #[allow(clippy::cast_precision_loss)]
            let actual = us as f64 / 1000.0;
            if us > 50 && i < LATENCY_BINS - 1 {
                prop_assert!((ms / actual - 1.0).abs() <= 0.095, "{actual} ms in bin {i} ({ms} ms)");
            }
        }
    }
}
