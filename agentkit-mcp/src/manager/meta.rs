//! The `_meta` agentkit sends with every tool call.

use super::*;

/// The `_meta` of a tool call made for a run: `agentkit/runId`, `agentkit/idempotencyKey`
/// (run id plus the tool loop's step and tool-call id) and a W3C `traceparent`: the current
/// span's (the `tools/call` span, per the MCP semantic conventions) when an OpenTelemetry
/// subscriber registered a [`TracePropagation`](agentkit_core::trace::TracePropagation), else
/// one whose trace id is derived from the run id.
#[must_use]
pub fn request_meta(ctx: &RunContext) -> RequestMetaObject {
    let mut meta = RequestMetaObject::new();
    let run = ctx.run_id();
    meta.insert("agentkit/runId".into(), run.into());
    let key = match ctx.tool_call_key() {
        Some(k) => format!("{run}/{k}"),
        None => format!("{run}/{}", uuid::Uuid::now_v7()),
    };
    meta.insert("agentkit/idempotencyKey".into(), key.into());
    meta.set_traceparent(
        agentkit_core::trace::current_traceparent().unwrap_or_else(|| traceparent(run)),
    );
    meta
}

pub(super) fn traceparent(run_id: &str) -> String {
    use std::fmt::Write as _;
    // `00-<trace id, 32 hex>-<span id, 16 hex>-01`, written in place.
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    // The trace id is the run's UUID when it is one (UUIDv7 by default), else a hash of it.
    match uuid::Uuid::parse_str(run_id) {
        Ok(u) => out.push_str(u.simple().encode_lower(&mut uuid::Uuid::encode_buffer())),
        Err(_) => {
            let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
            for b in run_id.bytes() {
                h ^= u128::from(b);
                h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
            }
            let _ = write!(out, "{h:032x}");
        }
    }
    // A random span id: the first half of a v4 UUID, never zero (its version bits are set).
    let (span, _) = uuid::Uuid::new_v4().as_u64_pair();
    let _ = write!(out, "-{span:016x}-01");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn meta_carries_run_id_idempotency_key_and_traceparent() {
        let ctx = RunContext::new()
            .with_run_id("0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70")
            .with_tool_call_key("agent/tool/3/call_1");
        let meta = request_meta(&ctx);
        assert_eq!(
            meta["agentkit/runId"],
            "0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70"
        );
        assert_eq!(
            meta["agentkit/idempotencyKey"],
            "0190f0d2-8d3b-7c4e-9a1f-2b3c4d5e6f70/agent/tool/3/call_1"
        );
        let tp = meta.get_traceparent().unwrap();
        assert!(
            tp.starts_with("00-0190f0d28d3b7c4e9a1f2b3c4d5e6f70-"),
            "{tp}"
        );
        assert_eq!(tp.len(), 55);
    }
}
