//! Anthropic Messages API provider (in progress).
