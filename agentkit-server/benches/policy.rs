//! Governance: what one policy decision costs, and what the policy layer adds to a tool call,
//! with the no-policy baseline in the same run.
//!
//! - `decide/*`: `Policy::decide` alone on a policy with tool scopes, argument globs and two
//!   chain rules, over a 20-call history: an allowed call, a call denied by an argument glob,
//!   and a call a chain rule holds for approval;
//! - `tool_call/no_policy`: a `FnTool` called through the tower tool-call service (baseline);
//! - `tool_call/policy`: the same call through `PolicyLayer` (no audit sink);
//! - `tool_call/policy_memory_audit`: the same with the in-memory hash-chained audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use agentkit_core::config::{ArgumentRule, ChainAction, ChainRule, PolicySpec};
use agentkit_core::policy::{MemoryAuditLog, Policy, PolicyLayer, Verdict};
use agentkit_core::tool::{ToolRequest, ToolService, ToolSourceService};
use agentkit_core::{FnTool, RunContext, ToolCallRecord};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

fn policy() -> Policy {
    let spec = PolicySpec::new()
        .with_allowed_tools(["filesystem__*", "slack__*", "github__*"])
        .with_denied_tools(["filesystem__write_*", "github__delete_*"])
        .with_argument_rule(
            "filesystem__*",
            "path",
            ArgumentRule::new()
                .with_allow(["/**/*.md", "/docs/**"])
                .with_deny(["/etc/**", "/**/.env", "/**/id_rsa*"]),
        )
        .with_argument_rule(
            "github__*",
            "repo",
            ArgumentRule::new().with_enum([json!("acme/docs"), json!("acme/site")]),
        )
        .with_chain(ChainRule::new(
            ["*__read_*", "slack__send_message"],
            ChainAction::RequireApproval,
        ))
        .with_chain(ChainRule::new(
            ["github__get_*", "filesystem__read_*", "slack__post_*"],
            ChainAction::Block,
        ));
    Policy::compile("bench", &spec).unwrap()
}

fn history() -> Vec<ToolCallRecord> {
    (0..20)
        .map(|i| {
            let name = match i % 4 {
                0 => "github__list_issues",
                1 => "filesystem__list_dir",
                2 => "filesystem__read_file",
                _ => "slack__list_channels",
            };
            ToolCallRecord::new(name, false)
        })
        .collect()
}

fn decide(c: &mut Criterion) {
    let p = policy();
    let h = history();
    let allowed = json!({"path": "/docs/guide/intro.md"});
    let denied = json!({"path": "/srv/app/.env"});
    assert_eq!(
        p.decide("filesystem__read_file", &allowed, &h).verdict,
        Verdict::Allow
    );
    assert_eq!(
        p.decide("filesystem__read_file", &denied, &h).verdict,
        Verdict::Deny
    );
    assert_eq!(
        p.decide("slack__send_message", &json!({"text": "hi"}), &h)
            .verdict,
        Verdict::RequireApproval
    );
    let mut g = c.benchmark_group("decide");
    g.bench_function("allow_args_and_chains", |b| {
        b.iter(|| black_box(p.decide("filesystem__read_file", black_box(&allowed), &h)))
    });
    g.bench_function("deny_argument_glob", |b| {
        b.iter(|| black_box(p.decide("filesystem__read_file", black_box(&denied), &h)))
    });
    let text = json!({"text": "hi"});
    g.bench_function("chain_require_approval", |b| {
        b.iter(|| black_box(p.decide("slack__send_message", black_box(&text), &h)))
    });
    g.finish();
}

fn tool_call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tool = FnTool::new("filesystem__read_file", "read", |_: Value| async {
        Ok::<_, String>("# Title")
    });
    let base = ToolService::new(ToolSourceService::new(Arc::new(tool)));
    let with_policy = ToolService::new(PolicyLayer::new(policy()).layer(base.clone()));
    let with_audit = ToolService::new(
        PolicyLayer::new(policy())
            .with_audit(Arc::new(MemoryAuditLog::new()))
            .layer(base.clone()),
    );
    let ctx = RunContext::new();
    let args = json!({"path": "/docs/guide/intro.md"});
    let mut g = c.benchmark_group("tool_call");
    for (name, svc) in [
        ("no_policy", base),
        ("policy", with_policy),
        ("policy_memory_audit", with_audit),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let req =
                    ToolRequest::new("c1", "filesystem__read_file", args.clone(), ctx.clone());
                let out = rt.block_on(svc.clone().oneshot(req)).unwrap();
                assert!(!out.is_error);
                black_box(out)
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = decide, tool_call
}
criterion_main!(benches);
