//! OpenTelemetry trace export over OTLP/HTTP (protobuf), feature `otel`.
//!
//! agentkit's spans are plain `tracing` spans named and attributed after the OpenTelemetry
//! GenAI and MCP semantic conventions. [`Otel`] turns them into OpenTelemetry spans
//! (`tracing-opentelemetry`) and exports them in batches to any OTLP backend (an
//! OpenTelemetry Collector, Jaeger, Grafana Tempo, Honeycomb …). One request is one trace:
//!
//! ```text
//! POST /v1/agents/{name}/runs            (server; continues the caller's `traceparent`)
//! └─ run {agent}                          (the run's task; agentkit.run.id, version, workspace, cost)
//!    └─ invoke_agent {agent}              (gen_ai.agent.name)
//!       ├─ chat {model}                   (gen_ai.request.model, gen_ai.usage.*, agentkit.cost_usd)
//!       └─ execute_tool {tool}            (gen_ai.tool.name, gen_ai.tool.call.id)
//!          └─ tools/call {tool}           (client; mcp.method.name, jsonrpc.request.id …)
//! ```
//!
//! The `traceparent` of the `chat` span goes to the model provider as an HTTP header, and the
//! one of the `tools/call` span to the MCP server in the request's `_meta` (see
//! [`agentkit_core::trace`]). Tool arguments and results, prompts and completions are never
//! recorded as attributes.
//!
//! # Configuration: `agentkit.yaml` first, then the `OTEL_*` variables
//!
//! | what | `otel:` key | variable (used when the key is left out) | default |
//! |---|---|---|---|
//! | on/off | `enabled: true` | on when an endpoint variable is set; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off | off |
//! | where | `endpoint` (base URL) | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (full URL), `OTEL_EXPORTER_OTLP_ENDPOINT` (base URL) | `http://localhost:4318` |
//! | `service.name` | `service_name` | `OTEL_SERVICE_NAME` | `agentkit` |
//! | sampling | `sample_ratio` | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | every trace |
//! | headers | `headers` | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | none |
//!
//! A key stated in the file always wins over the variable (for headers: per header name).
//! `enabled: true` or an `endpoint` in the file turns export on whatever the variables say.
//! Sampling is parent-based: a caller's sampled `traceparent` is always continued; the ratio
//! applies to traces that start here. `OTEL_EXPORTER_OTLP_TIMEOUT` and
//! `OTEL_RESOURCE_ATTRIBUTES` are honoured too.
//!
//! # In your own application
//!
//! ```no_run
//! # async fn demo() -> agentkit_core::Result<()> {
//! use agentkit_core::config::OtelSettings;
//! use agentkit_server::observe::otel::Otel;
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! let settings = OtelSettings::new().with_endpoint("http://localhost:4318");
//! let otel = Otel::from_settings(&settings)?.expect("an endpoint is set, so export is on");
//! tracing_subscriber::registry().with(otel.layer()).init();
//! // ... serve; at exit:
//! otel.shutdown().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use agentkit_core::config::OtelSettings;
use agentkit_core::trace::{TracePropagation, is_traceparent};
use agentkit_core::{Error, Result};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The default OTLP/HTTP base URL (a local collector or Jaeger).
pub const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
/// The default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "agentkit";

/// How traces that start here are sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Sampling {
    /// The share of new traces recorded, 0 to 1.
    pub ratio: f64,
    /// Follow the caller's sampling decision when a request carries a `traceparent`.
    pub parent_based: bool,
}

impl Sampling {
    /// Parent-based, recording `ratio` of new traces.
    #[must_use]
    pub fn ratio(ratio: f64) -> Self {
        Self {
            ratio,
            parent_based: true,
        }
    }

    fn sampler(self) -> Sampler {
        let root = if self.ratio >= 1.0 {
            Sampler::AlwaysOn
        } else if self.ratio <= 0.0 {
            Sampler::AlwaysOff
        } else {
            Sampler::TraceIdRatioBased(self.ratio)
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

/// Resolved export settings: `agentkit.yaml`'s `otel:` over the `OTEL_*` variables (see the
/// [module docs](self) for the rules).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OtelConfig {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub traces_endpoint: String,
    /// `service.name`.
    pub service_name: String,
    /// Sampling of new traces.
    pub sampling: Sampling,
    /// Headers from the file; they replace variable-given headers of the same name.
    pub headers: Vec<(String, String)>,
}

impl OtelConfig {
    /// Export to `endpoint` (an OTLP/HTTP base URL such as `http://localhost:4318`), every
    /// trace, as `service_name`.
    #[must_use]
    pub fn new(endpoint: &str, service_name: impl Into<String>) -> Self {
        Self {
            traces_endpoint: traces_url(endpoint),
            service_name: service_name.into(),
            sampling: Sampling::ratio(1.0),
            headers: Vec::new(),
        }
    }

    /// Resolve `settings` against this process's environment; `None` when export is off.
    ///
    /// # Errors
    /// A variable with a value that cannot be used (a non-HTTP endpoint, an unknown sampler,
    /// a sampler argument that is not a number from 0 to 1), named in the message.
    pub fn from_settings(settings: &OtelSettings) -> Result<Option<Self>> {
        Self::resolve(settings, &|name| std::env::var(name).ok())
    }

    /// [`from_settings`](Self::from_settings) with `env` standing for the environment.
    ///
    /// ```
    /// use agentkit_core::config::OtelSettings;
    /// use agentkit_server::observe::otel::OtelConfig;
    ///
    /// let env = |name: &str| match name {
    ///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_owned()),
    ///     "OTEL_SERVICE_NAME" => Some("from-env".to_owned()),
    ///     _ => None,
    /// };
    /// // The variable turns export on; the file's service name wins over the variable.
    /// let settings = OtelSettings::new().with_service_name("from-yaml");
    /// let config = OtelConfig::resolve(&settings, &env).unwrap().unwrap();
    /// assert_eq!(config.traces_endpoint, "http://collector:4318/v1/traces");
    /// assert_eq!(config.service_name, "from-yaml");
    /// // Nothing set anywhere: off.
    /// assert!(OtelConfig::resolve(&OtelSettings::new(), &|_| None).unwrap().is_none());
    /// ```
    ///
    /// # Errors
    /// As [`from_settings`](Self::from_settings).
    pub fn resolve(
        settings: &OtelSettings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let traces_var = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base_var = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        let disabled_by_env = var("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let stated = settings.enabled || settings.endpoint.is_some();
        let by_env = (traces_var.is_some() || base_var.is_some()) && !disabled_by_env;
        if !stated && !by_env {
            return Ok(None);
        }
        let traces_endpoint = match (&settings.endpoint, traces_var, base_var) {
            (Some(e), _, _) => traces_url(e),
            (None, Some(t), _) => {
                check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &t)?;
                t
            }
            (None, None, Some(b)) => {
                check_url("OTEL_EXPORTER_OTLP_ENDPOINT", &b)?;
                traces_url(&b)
            }
            (None, None, None) => traces_url(DEFAULT_ENDPOINT),
        };
        let service_name = settings
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        let sampling = match settings.sample_ratio {
            Some(r) => Sampling::ratio(r),
            None => sampling_from_env(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?,
        };
        Ok(Some(Self {
            traces_endpoint,
            service_name,
            sampling,
            headers: settings
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }))
    }
}

/// `<base>/v1/traces`.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
}

fn check_url(var: &str, value: &str) -> Result<()> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{var}=`{}` is not an http(s) URL; set it to the OTLP/HTTP address of a collector, \
             e.g. http://localhost:4318",
            value.escape_debug()
        )))
    }
}

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` as the OpenTelemetry specification
/// defines them (the `jaeger_remote` and `xray` samplers are not supported).
fn sampling_from_env(sampler: Option<String>, arg: Option<String>) -> Result<Sampling> {
    let ratio = || -> Result<f64> {
        match &arg {
            None => Ok(1.0),
            Some(a) => match a.parse::<f64>() {
                Ok(r) if r.is_finite() && (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(Error::InvalidRequest(format!(
                    "OTEL_TRACES_SAMPLER_ARG=`{}` is not a share of traces from 0 to 1",
                    a.escape_debug()
                ))),
            },
        }
    };
    let (r, parent_based) = match sampler.as_deref().map(str::to_ascii_lowercase).as_deref() {
        // Only the argument: a ratio, parent-based (what most people mean by it).
        None => (ratio()?, true),
        Some("always_on") => (1.0, false),
        Some("always_off") => (0.0, false),
        Some("traceidratio") => (ratio()?, false),
        Some("parentbased_always_on") => (1.0, true),
        Some("parentbased_always_off") => (0.0, true),
        Some("parentbased_traceidratio") => (ratio()?, true),
        Some(other) => {
            return Err(Error::InvalidRequest(format!(
                "OTEL_TRACES_SAMPLER=`{}` is not supported; use always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off or \
                 parentbased_traceidratio (or `otel.sample_ratio` in agentkit.yaml)",
                other.escape_debug()
            )));
        }
    };
    Ok(Sampling {
        ratio: r,
        parent_based,
    })
}

/// The installed exporter: hand [`layer`](Self::layer) to your `tracing` subscriber, and call
/// [`shutdown`](Self::shutdown) before the process exits so the last spans are sent.
#[derive(Debug, Clone)]
pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    config: OtelConfig,
}

impl Otel {
    /// Resolve `settings` with the process environment and start exporting; `None` when
    /// export is off (see the [module docs](self)).
    ///
    /// # Errors
    /// As [`OtelConfig::from_settings`] and [`Otel::start`].
    pub fn from_settings(settings: &OtelSettings) -> Result<Option<Self>> {
        OtelConfig::from_settings(settings)?
            .map(Self::start)
            .transpose()
    }

    /// Start exporting with `config`: a batch exporter on a thread of its own (it needs no
    /// particular async runtime), the W3C Trace Context propagator, and the
    /// [`agentkit_core::trace`] hook that passes `traceparent` to providers and MCP servers.
    ///
    /// # Errors
    /// When the exporter cannot be built (an endpoint that is not a URL, a header that is
    /// not valid HTTP).
    pub fn start(config: OtelConfig) -> Result<Self> {
        let client = OtlpClient::new(&config.headers)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.traces_endpoint.clone())
            .with_http_client(client)
            .build()
            .map_err(|e| {
                Error::InvalidRequest(format!(
                    "cannot export traces to {}: {e}",
                    config.traces_endpoint
                ))
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(config.sampling.sampler())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("agentkit");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
        // One propagation per process: a second `Otel` keeps the first's (both read the
        // current `tracing` span, so either serves).
        agentkit_core::trace::set_propagation(Arc::new(OtelPropagation));
        Ok(Self {
            provider,
            tracer,
            config,
        })
    }

    /// The resolved settings.
    #[must_use]
    pub fn config(&self) -> &OtelConfig {
        &self.config
    }

    /// The `tracing` layer that records agentkit's spans (targets `agentkit*`, level INFO and
    /// above) as OpenTelemetry spans. Add it to your subscriber next to your log layer.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let filter = tracing_subscriber::filter::Targets::new()
            .with_default(tracing::Level::WARN)
            .with_target("agentkit", tracing::Level::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_filter(filter)
    }

    /// Send every finished span now (waits for the export).
    ///
    /// # Errors
    /// When the backend refused or could not be reached.
    pub async fn flush(&self) -> Result<()> {
        let provider = self.provider.clone();
        tokio::task::spawn_blocking(move || provider.force_flush())
            .await
            .map_err(|e| Error::other("flushing traces", e))?
            .map_err(|e| Error::other("flushing traces", e))
    }

    /// Send what is left and stop exporting.
    ///
    /// # Errors
    /// When the last export failed.
    pub async fn shutdown(self) -> Result<()> {
        let provider = self.provider;
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .map_err(|e| Error::other("shutting down trace export", e))?
            .map_err(|e| Error::other("shutting down trace export", e))
    }
}

/// [`TracePropagation`] over `tracing-opentelemetry`: the current span's OpenTelemetry
/// context as a `traceparent`, and remote parents through the W3C propagator.
struct OtelPropagation;

impl TracePropagation for OtelPropagation {
    fn current_traceparent(&self) -> Option<String> {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
        if !is_traceparent(traceparent) {
            return;
        }
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        // A span filtered out of the export has nothing to parent.
        let _ = span.set_parent(cx);
    }
}

/// The largest response body read from a backend (its answers are tiny).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The OTLP exporter's HTTP client: the server's reqwest, run on a single-thread tokio runtime
/// of its own thread (the SDK's batch processor exports from a plain thread), adding the
/// file's headers over those from the environment.
#[derive(Debug)]
struct OtlpClient {
    client: reqwest::Client,
    headers: http::HeaderMap,
    runtime: tokio::runtime::Handle,
    /// Dropped with the client: ends the runtime's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OtlpClient {
    fn new(headers: &[(String, String)]) -> Result<Self> {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            let name = http::HeaderName::try_from(k.as_str()).map_err(|e| {
                Error::InvalidRequest(format!("otel header `{}`: {e}", k.escape_debug()))
            })?;
            let value = http::HeaderValue::try_from(v.as_str()).map_err(|e| {
                Error::InvalidRequest(format!("otel header `{}`: {e}", k.escape_debug()))
            })?;
            map.insert(name, value);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("agentkit-otlp".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| Error::other("starting the trace export thread", e))?;
        let runtime = rx
            .recv()
            .map_err(|e| Error::other("starting the trace export thread", e))?
            .map_err(|e| Error::other("starting the trace export runtime", e))?;
        Ok(Self {
            client: reqwest::Client::new(),
            headers: map,
            runtime,
            _stop: stop,
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> std::result::Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let mut request = reqwest::Request::try_from(request)?;
        for (k, v) in &self.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        let client = self.client.clone();
        let exchange = async move {
            let mut response = client.execute(request).await?;
            let status = response.status();
            let headers = std::mem::take(response.headers_mut());
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            let mut out = http::Response::new(bytes::Bytes::from(body));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, opentelemetry_http::HttpError>(out)
        };
        self.runtime.spawn(exchange).await?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_file_wins_over_the_variables() {
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
            ("OTEL_SERVICE_NAME", "env-name"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
        ]);
        let from_env = OtelConfig::resolve(&OtelSettings::new(), &vars)
            .unwrap()
            .unwrap();
        assert_eq!(from_env.traces_endpoint, "http://env:4318/v1/traces");
        assert_eq!(from_env.service_name, "env-name");
        assert_eq!(from_env.sampling.ratio, 0.0);
        let settings = OtelSettings::new()
            .with_endpoint("https://yaml:4318")
            .with_service_name("yaml-name")
            .with_sample_ratio(0.5)
            .with_header("authorization", "Bearer t");
        let c = OtelConfig::resolve(&settings, &vars).unwrap().unwrap();
        assert_eq!(c.traces_endpoint, "https://yaml:4318/v1/traces");
        assert_eq!(c.service_name, "yaml-name");
        assert_eq!(c.sampling, Sampling::ratio(0.5));
        assert_eq!(c.headers, [("authorization".into(), "Bearer t".into())]);
    }

    #[test]
    fn export_is_off_unless_asked_and_the_sdk_switch_is_honoured() {
        assert!(
            OtelConfig::resolve(&OtelSettings::new(), &env(&[]))
                .unwrap()
                .is_none()
        );
        let off = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(
            OtelConfig::resolve(&OtelSettings::new(), &off)
                .unwrap()
                .is_none()
        );
        // Stated in the file: on, at the default endpoint.
        let on = OtelConfig::resolve(&OtelSettings::new().with_enabled(true), &off)
            .unwrap()
            .unwrap();
        assert_eq!(on.traces_endpoint, "http://env:4318/v1/traces");
        let default = OtelConfig::resolve(&OtelSettings::new().with_enabled(true), &env(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(default.traces_endpoint, "http://localhost:4318/v1/traces");
        assert_eq!(default.service_name, "agentkit");
        assert_eq!(default.sampling, Sampling::ratio(1.0));
    }

    #[test]
    fn bad_variables_are_named() {
        let e = OtelConfig::resolve(
            &OtelSettings::new(),
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        let e = OtelConfig::resolve(
            &OtelSettings::new().with_enabled(true),
            &env(&[("OTEL_TRACES_SAMPLER", "xray")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("OTEL_TRACES_SAMPLER") && e.contains("xray"),
            "{e}"
        );
        let traces_full = OtelConfig::resolve(
            &OtelSettings::new(),
            &env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(traces_full.traces_endpoint, "http://c:4318/custom");
    }

    proptest! {
        #[test]
        fn any_sampler_variables_give_a_valid_ratio_or_a_named_error(
            sampler in proptest::option::of("[a-z_]{0,30}"),
            arg in proptest::option::of(".{0,12}"),
        ) {
            match sampling_from_env(sampler, arg) {
                Ok(s) => prop_assert!((0.0..=1.0).contains(&s.ratio)),
                Err(e) => prop_assert!(e.to_string().contains("OTEL_TRACES_SAMPLER")),
            }
        }
    }
}
