//! Observability: Prometheus metrics ([`Metrics`], served at `GET /metrics`), the realtime
//! window of `GET /v1/metrics/realtime` ([`Realtime`]) and, with the `otel` feature, OTLP
//! trace export ([`otel`]).
//!
//! The facts come from where they already are: model and tool calls from the runs' events
//! (an [`EventSink`](agentkit_core::EventSink) on the runtime), run ends and schedule fires
//! from the runtime ([`RunObserver`](agentkit_runtime::RunObserver)), HTTP requests from a
//! middleware on the router, and the runs in progress from the store at scrape time. Nothing
//! is recorded twice.

pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod realtime;

pub use metrics::Metrics;
pub use realtime::Realtime;
