//! placeholder
#![cfg(feature = "otel")]
