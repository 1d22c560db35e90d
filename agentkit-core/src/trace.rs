//! W3C Trace Context hooks: how a `traceparent` reaches model providers and MCP servers
//! without agentkit-core depending on OpenTelemetry.
//!
//! agentkit's spans are plain [`tracing`] spans (`invoke_agent`, `chat`, `execute_tool`,
//! `tools/call` …, named and attributed after the OpenTelemetry GenAI and MCP semantic
//! conventions). Turning them into OpenTelemetry spans is the job of whatever subscriber the
//! application installs (agentkit-server's `otel` feature uses `tracing-opentelemetry`).
//! Only that subscriber knows the W3C trace id and span id of the current span, so it
//! registers a [`TracePropagation`] here once with [`set_propagation`]; the core then:
//!
//! - sends `traceparent: <the chat span's context>` with every model-provider HTTP request
//!   (OpenAI, Anthropic, Gemini);
//! - lets agentkit-mcp put the `tools/call` span's `traceparent` in the request `_meta`;
//! - lets a runtime or server make a span the child of a remote caller's span
//!   ([`set_remote_parent`]), e.g. a run executed in a background task under the HTTP
//!   request that started it.
//!
//! Without a registered propagation every function here is a cheap no-op.
//!
//! ```
//! use std::sync::Arc;
//! use agentkit_core::trace::{self, TracePropagation};
//!
//! struct Fixed;
//! impl TracePropagation for Fixed {
//!     fn current_traceparent(&self) -> Option<String> {
//!         Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into())
//!     }
//!     fn set_parent(&self, _span: &tracing::Span, _traceparent: &str) {}
//! }
//!
//! trace::set_propagation(Arc::new(Fixed));
//! assert!(trace::current_traceparent().is_some_and(|t| t.starts_with("00-4bf92f35")));
//! ```

use std::sync::{Arc, OnceLock};

/// What an OpenTelemetry-aware subscriber provides so trace context crosses process
/// boundaries (see the [module docs](self)).
pub trait TracePropagation: Send + Sync + 'static {
    /// The W3C `traceparent` (`00-<trace id>-<span id>-<flags>`) of the span that is current
    /// on this thread ([`tracing::Span::current`]), or `None` when there is none or it is not
    /// sampled into a trace.
    fn current_traceparent(&self) -> Option<String>;

    /// Make the remote span named by `traceparent` the parent of `span`, which has not been
    /// entered yet. An invalid `traceparent` is ignored (the span starts a trace of its own).
    fn set_parent(&self, span: &tracing::Span, traceparent: &str);
}

static PROPAGATION: OnceLock<Arc<dyn TracePropagation>> = OnceLock::new();

/// Register the process's trace propagation. The first registration wins (one tracing
/// subscriber per process); returns `false` when one was already registered.
pub fn set_propagation(propagation: Arc<dyn TracePropagation>) -> bool {
    PROPAGATION.set(propagation).is_ok()
}

/// The `traceparent` of the current span, when a propagation is registered and the span is
/// part of a trace.
#[must_use]
pub fn current_traceparent() -> Option<String> {
    PROPAGATION.get()?.current_traceparent()
}

/// Make the remote span `traceparent` the parent of `span` (before it is entered); a no-op
/// without a registered propagation.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(p) = PROPAGATION.get() {
        p.set_parent(span, traceparent);
    }
}

/// Whether `value` is a well-formed W3C `traceparent` of version `00`:
/// `00-<32 lowercase hex, not all zero>-<16 lowercase hex, not all zero>-<2 hex>`.
///
/// ```
/// use agentkit_core::trace::is_traceparent;
/// assert!(is_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// assert!(!is_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
/// assert!(!is_traceparent("garbage"));
/// ```
#[must_use]
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [v, t, s, f]
        if *v == "00" && hex(t, 32) && nonzero(t) && hex(s, 16) && nonzero(s) && hex(f, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_is_judged_without_panicking(s in ".{0,80}") {
            let _ = is_traceparent(&s);
        }

        #[test]
        fn well_formed_traceparents_are_accepted(t in "[0-9a-f]{31}[1-9a-f]", s in "[1-9a-f][0-9a-f]{15}", f in "[0-9a-f]{2}") {
            let tp = format!("00-{t}-{s}-{f}");
            prop_assert!(is_traceparent(&tp));
            let upper = tp.to_uppercase();
            prop_assert_eq!(is_traceparent(&upper), upper == tp);
            let v1 = format!("01-{t}-{s}-{f}");
            prop_assert!(!is_traceparent(&v1));
        }
    }
}
