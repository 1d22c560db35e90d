//! Pattern overhead: `Parallel` with 8 branches and an LLM `Router` decision, each against the
//! same agent calls made by hand, in the same run.
//!
//! Both sides of each comparison make exactly the same `AgentLlm::generate` calls on the same
//! stateless `ScriptedProvider`s; the difference is what the pattern adds per step (events,
//! spans, scoping of usage, request shaping, fan-out bookkeeping, routing prompt and parsing).
//! After the criterion groups, a plain timing loop prints the overhead per pattern step.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CompletionRequest, CompletionResponse,
    GenerateRequest, Message, RequestParams, RunContext, ScriptedProvider, StopReason, Usage,
};
use agentkit_patterns::{FnLlm, Parallel, Router};
use criterion::Criterion;
use schemars::JsonSchema;
use serde::Deserialize;

const BRANCHES: usize = 8;

fn text_provider(text: &'static str) -> ScriptedProvider {
    ScriptedProvider::from_fn(move |_req: &CompletionRequest| {
        Ok(CompletionResponse::new(
            Message::assistant(text),
            Usage::new(20, 5),
            StopReason::EndTurn,
            "scripted-model",
        ))
    })
    .without_recording()
}

fn agent(name: &str, text: &'static str) -> Arc<AgentLlm> {
    Arc::new(
        AgentLlm::new(Agent::new(name, "Answer briefly."), text_provider(text))
            .with_defaults(RequestParams::new().with_use_history(false)),
    )
}

fn join(texts: &[String]) -> String {
    texts.join("\n")
}

struct ParallelSetup {
    branches: Vec<Arc<AgentLlm>>,
    pattern: Parallel,
}

fn parallel_setup() -> ParallelSetup {
    let branches: Vec<Arc<AgentLlm>> = (0..BRANCHES)
        .map(|i| agent(&format!("b{i}"), "A short branch answer."))
        .collect();
    let mut builder = Parallel::builder("fan");
    for b in &branches {
        builder = builder.with_shared_branch(b.clone());
    }
    let pattern = builder
        .with_fan_in_fn(|input, _ctx| async move {
            let texts: Vec<String> = input
                .branches
                .into_iter()
                .map(|b| b.result.unwrap_or_default())
                .collect();
            Ok(join(&texts))
        })
        .build()
        .unwrap();
    ParallelSetup { branches, pattern }
}

async fn parallel_by_hand(branches: &[Arc<AgentLlm>]) -> String {
    let ctx = RunContext::new();
    let req: GenerateRequest = "Question?".into();
    let gens =
        futures::future::join_all(branches.iter().map(|b| b.generate(req.clone(), &ctx))).await;
    let texts: Vec<String> = gens.into_iter().map(|g| g.unwrap().text()).collect();
    join(&texts)
}

async fn parallel_pattern(p: &Parallel) -> String {
    p.generate("Question?".into(), &RunContext::new())
        .await
        .unwrap()
        .text()
}

const DECISION: &str = r#"{"routes": [{"route": "billing", "confidence": 0.9, "reasoning": "It is about a refund."}]}"#;

#[derive(Deserialize, JsonSchema)]
struct Decision {
    routes: Vec<Choice>,
}

#[derive(Deserialize, JsonSchema)]
struct Choice {
    route: String,
    #[allow(dead_code)]
    confidence: f32,
    #[allow(dead_code)]
    reasoning: String,
}

struct RouterSetup {
    classifier: Arc<AgentLlm>,
    routes: Vec<Arc<AgentLlm>>,
    pattern: Router,
}

fn router_setup() -> RouterSetup {
    let classifier = agent("classifier", DECISION);
    let routes = vec![
        agent("billing", "Your refund is on its way."),
        agent("support", "Try restarting it."),
    ];
    let pattern = Router::builder("desk")
        .with_shared_llm(classifier.clone())
        .with_shared_route(routes[0].clone())
        .with_shared_route(routes[1].clone())
        .build()
        .unwrap();
    RouterSetup {
        classifier,
        routes,
        pattern,
    }
}

async fn router_by_hand(s: &RouterSetup) -> String {
    let ctx = RunContext::new();
    let prompt = "Pick the best handler for: I want a refund. Handlers: billing, support.";
    let d: Decision = s
        .classifier
        .generate_structured(
            GenerateRequest::new(vec![Message::user(prompt)])
                .with_params(RequestParams::new().with_use_history(false)),
            &ctx,
        )
        .await
        .unwrap();
    let target = s
        .routes
        .iter()
        .find(|r| r.name() == d.routes[0].route)
        .unwrap();
    target
        .generate("I want a refund.".into(), &ctx)
        .await
        .unwrap()
        .text()
}

async fn router_pattern(s: &RouterSetup) -> String {
    s.pattern
        .generate("I want a refund.".into(), &RunContext::new())
        .await
        .unwrap()
        .text()
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let p = parallel_setup();
    let mut group = c.benchmark_group("parallel_8_branches");
    group.bench_function("by_hand", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(parallel_by_hand(&p.branches).await) });
    });
    group.bench_function("parallel", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(parallel_pattern(&p.pattern).await) });
    });
    group.finish();

    let r = router_setup();
    let mut group = c.benchmark_group("llm_router_decision");
    group.bench_function("by_hand", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(router_by_hand(&r).await) });
    });
    group.bench_function("router", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(router_pattern(&r).await) });
    });
    group.finish();

    // A pattern with no model at all: the cost of the pattern machinery alone.
    let f = FnLlm::new("f", |t: String, _| async move { Ok(t) });
    let fns = Parallel::builder("fns")
        .with_branch(f.clone())
        .build()
        .unwrap();
    let mut group = c.benchmark_group("parallel_1_fn_branch");
    group.bench_function("fn_by_hand", |b| {
        b.to_async(rt).iter(|| async {
            black_box(
                f.generate("x".into(), &RunContext::new())
                    .await
                    .unwrap()
                    .text(),
            )
        });
    });
    group.bench_function("parallel", |b| {
        b.to_async(rt).iter(|| async {
            black_box(
                fns.generate("x".into(), &RunContext::new())
                    .await
                    .unwrap()
                    .text(),
            )
        });
    });
    group.finish();
}

/// Mean time of `f` over enough iterations to fill ~`budget`, after a warm-up.
fn mean<F: Fn() -> Fut, Fut: std::future::Future<Output = String>>(
    rt: &tokio::runtime::Runtime,
    budget: Duration,
    f: F,
) -> Duration {
    for _ in 0..200 {
        black_box(rt.block_on(f()));
    }
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed() < budget {
        black_box(rt.block_on(f()));
        n += 1;
    }
    start.elapsed() / n.max(1)
}

fn report(rt: &tokio::runtime::Runtime) {
    let budget = Duration::from_secs(2);
    let p = parallel_setup();
    let r = router_setup();
    let (ph, pp) = (
        mean(rt, budget, || parallel_by_hand(&p.branches)),
        mean(rt, budget, || parallel_pattern(&p.pattern)),
    );
    let (rh, rp) = (
        mean(rt, budget, || router_by_hand(&r)),
        mean(rt, budget, || router_pattern(&r)),
    );
    // Steps: 8 branches + the fan-in; a route decision + the delegation.
    let per_step = |pattern: Duration, hand: Duration, steps: u32| {
        (pattern.as_secs_f64() - hand.as_secs_f64()) * 1e6 / f64::from(steps)
    };
    println!("\n=== pattern overhead (same run, same scripted calls) ===");
    println!(
        "parallel, 8 branches: by hand {:>8.1} µs, Parallel {:>8.1} µs, overhead {:>6.2} µs per step (9 steps)",
        ph.as_secs_f64() * 1e6,
        pp.as_secs_f64() * 1e6,
        per_step(pp, ph, 9)
    );
    println!(
        "LLM router decision:  by hand {:>8.1} µs, Router   {:>8.1} µs, overhead {:>6.2} µs per step (2 steps)",
        rh.as_secs_f64() * 1e6,
        rp.as_secs_f64() * 1e6,
        per_step(rp, rh, 2)
    );
    println!("target: < 50 µs added per pattern step");
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rt);
    c.final_summary();
    report(&rt);
}
