//! [`Parallel`]: fan out to several LLMs or functions, fan in by an LLM or a function.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use agentkit_core::{
    AugmentedLlm, Error, GenerateRequest, Generation, GenerationEmitter, GenerationStream, Result,
    RunContext, generate_into, stream_generation,
};
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::json;
use tracing::Instrument;

use crate::common::{
    emit_error, emit_step, emit_whole, finish, finish_text, inner_params, pattern_span, section,
    user_request,
};

const PATTERN: &str = "parallel";

/// What a [`Parallel`] does when a branch fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Stop at the first failing branch and return its error (the default). Branches still
    /// running are dropped.
    #[default]
    FailFast,
    /// Let the other branches finish and give the failure to the fan-in, which sees which
    /// branch failed and why. Cancellation, deadline and budget errors still stop the run.
    Continue,
}

/// The result of one branch, as the fan-in sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BranchOutcome {
    /// The branch name.
    pub name: String,
    /// The branch's answer text, or the error message when it failed.
    pub result: std::result::Result<String, String>,
}

impl BranchOutcome {
    /// A branch result.
    pub fn new(name: impl Into<String>, result: std::result::Result<String, String>) -> Self {
        Self {
            name: name.into(),
            result,
        }
    }
}

/// What the fan-in receives: the request and every branch's outcome, in branch order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FanInInput {
    /// The text of the request that was fanned out.
    pub request: String,
    /// One outcome per branch, in the order the branches were added.
    pub branches: Vec<BranchOutcome>,
}

impl FanInInput {
    /// A fan-in input.
    pub fn new(request: impl Into<String>, branches: Vec<BranchOutcome>) -> Self {
        Self {
            request: request.into(),
            branches,
        }
    }

    /// The prompt an LLM fan-in gets: the request, then each branch's text under its name
    /// (failed branches are marked as such with their error).
    #[must_use]
    pub fn to_prompt(&self) -> String {
        let mut out = format!(
            "Several assistants worked on the same request in parallel. Combine their answers \
             into one answer to the request.\n\n{}",
            section("Request", &self.request)
        );
        for b in &self.branches {
            out.push('\n');
            match &b.result {
                Ok(text) => out.push_str(&section(&format!("Answer of `{}`", b.name), text)),
                Err(e) => out.push_str(&section(
                    &format!("`{}` failed", b.name),
                    &format!("This assistant could not answer: {e}"),
                )),
            }
        }
        out
    }
}

type FanInFn = dyn Fn(FanInInput, RunContext) -> BoxFuture<'static, Result<String>> + Send + Sync;

#[derive(Clone)]
enum FanIn {
    Llm(Arc<dyn AugmentedLlm>),
    Fn(Arc<FanInFn>),
    Join,
}

/// Sends the same request to several branches (agents, patterns or [`FnLlm`](crate::FnLlm)
/// functions) concurrently, at most `max_concurrency` at a time, then combines their answers
/// with a fan-in LLM or function.
///
/// Streamed ([`generate_stream`](AugmentedLlm::generate_stream)), a parallel streams its
/// fan-in: a fan-in LLM streams as it answers, a fan-in function or join yields its whole
/// answer as one delta. The branches run as plain `generate` calls (their answers are inputs,
/// not the answer).
///
/// A failing branch follows the [`FailurePolicy`]; it is never dropped silently. Without a
/// fan-in, the answer is the branches' texts joined under their names.
///
/// ```
/// use agentkit_core::{AugmentedLlmExt, RunContext};
/// use agentkit_patterns::{FnLlm, Parallel};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let p = Parallel::builder("stats")
///     .with_branch(FnLlm::new("words", |t: String, _| async move { Ok(t.split_whitespace().count().to_string()) }))
///     .with_branch(FnLlm::new("chars", |t: String, _| async move { Ok(t.chars().count().to_string()) }))
///     .with_fan_in_fn(|input, _ctx| async move {
///         let parts: Vec<String> = input.branches.iter()
///             .map(|b| format!("{}={}", b.name, b.result.clone().unwrap_or_default()))
///             .collect();
///         Ok(parts.join(" "))
///     })
///     .build()?;
/// assert_eq!(p.generate_str("two words", &RunContext::new()).await?, "words=2 chars=9");
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Parallel {
    name: String,
    description: String,
    branches: Vec<Arc<dyn AugmentedLlm>>,
    fan_in: FanIn,
    max_concurrency: usize,
    policy: FailurePolicy,
}

impl fmt::Debug for Parallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parallel")
            .field("name", &self.name)
            .field(
                "branches",
                &self.branches.iter().map(|b| b.name()).collect::<Vec<_>>(),
            )
            .field("max_concurrency", &self.max_concurrency)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Parallel`].
#[derive(Clone)]
#[must_use]
pub struct ParallelBuilder {
    inner: Parallel,
}

impl fmt::Debug for ParallelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Parallel {
    /// Start building a parallel named `name`.
    pub fn builder(name: impl Into<String>) -> ParallelBuilder {
        ParallelBuilder::new(name)
    }
}

impl ParallelBuilder {
    /// A parallel named `name`, with no branches, no concurrency limit, fail-fast and a joining
    /// fan-in.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            inner: Parallel {
                name: name.into(),
                description: String::new(),
                branches: Vec::new(),
                fan_in: FanIn::Join,
                max_concurrency: usize::MAX,
                policy: FailurePolicy::default(),
            },
        }
    }

    /// Add a branch.
    pub fn with_branch(self, branch: impl AugmentedLlm + 'static) -> Self {
        self.with_shared_branch(Arc::new(branch))
    }

    /// Add a shared branch.
    pub fn with_shared_branch(mut self, branch: Arc<dyn AugmentedLlm>) -> Self {
        self.inner.branches.push(branch);
        self
    }

    /// Combine the answers with this LLM; it gets [`FanInInput::to_prompt`] as its request.
    pub fn with_fan_in(self, llm: impl AugmentedLlm + 'static) -> Self {
        self.with_shared_fan_in(Arc::new(llm))
    }

    /// Combine the answers with this shared LLM.
    pub fn with_shared_fan_in(mut self, llm: Arc<dyn AugmentedLlm>) -> Self {
        self.inner.fan_in = FanIn::Llm(llm);
        self
    }

    /// Combine the answers with a function.
    pub fn with_fan_in_fn<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(FanInInput, RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String>> + Send + 'static,
    {
        self.inner.fan_in = FanIn::Fn(Arc::new(move |input, ctx| f(input, ctx).boxed()));
        self
    }

    /// Run at most `n` branches at a time (at least 1).
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.inner.max_concurrency = n.max(1);
        self
    }

    /// What to do when a branch fails.
    pub fn with_failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.inner.policy = policy;
        self
    }

    /// Describe the parallel (shown when it is a route or a worker).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.inner.description = description.into();
        self
    }

    /// Finish. Fails when there is no branch.
    pub fn build(self) -> Result<Parallel> {
        if self.inner.branches.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "parallel `{}` has no branches; add at least one with `with_branch`",
                self.inner.name
            )));
        }
        Ok(self.inner)
    }
}

impl Parallel {
    /// Run every branch on `request` and return their outcomes in branch order, without the
    /// fan-in. Under [`FailurePolicy::FailFast`] the first failure is returned as `Err`.
    pub async fn fan_out(
        &self,
        request: &GenerateRequest,
        ctx: &RunContext,
    ) -> Result<Vec<BranchOutcome>> {
        ctx.check()?;
        let mut req = request.clone();
        req.params = inner_params(&request.params);
        let req = &req;
        let futs: Vec<BoxFuture<'_, (usize, Result<Generation>)>> = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, branch)| {
                // Each branch journals in its own key space, taken here in branch order before
                // anything runs, so its keys never depend on which branch starts first.
                let bctx = ctx.branch(&format!("{}[{i}]", self.name));
                async move {
                    emit_step(
                        ctx,
                        PATTERN,
                        &self.name,
                        "branch_started",
                        json!({"index": i, "branch": branch.name()}),
                    );
                    (i, branch.generate(req.clone(), &bctx).await)
                }
                .boxed()
            })
            .collect();
        let mut running = futures::stream::iter(futs).buffer_unordered(self.max_concurrency);
        let mut outcomes: Vec<Option<BranchOutcome>> = vec![None; self.branches.len()];
        while let Some((i, result)) = running.next().await {
            let branch = self.branches[i].name();
            let result = match result {
                Ok(g) => {
                    let text = g.text();
                    emit_step(
                        ctx,
                        PATTERN,
                        &self.name,
                        "branch_finished",
                        json!({"index": i, "branch": branch, "output": text}),
                    );
                    Ok(text)
                }
                Err(e) => {
                    emit_error(
                        ctx,
                        format!("parallel `{}` branch `{branch}`", self.name),
                        &e,
                    );
                    emit_step(
                        ctx,
                        PATTERN,
                        &self.name,
                        "branch_failed",
                        json!({"index": i, "branch": branch, "error": e.to_string()}),
                    );
                    if self.policy == FailurePolicy::FailFast || e.is_fatal_for_run() {
                        return Err(e);
                    }
                    Err(e.to_string())
                }
            };
            outcomes[i] = Some(BranchOutcome::new(branch, result));
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    async fn run(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Generation> {
        let branches = self.fan_out(&request, ctx).await?;
        ctx.check()?;
        let input = FanInInput::new(request.last_user_text(), branches);
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "fan_in",
            json!({
                "succeeded": input.branches.iter().filter(|b| b.result.is_ok()).count(),
                "failed": input.branches.iter().filter(|b| b.result.is_err()).map(|b| &b.name).collect::<Vec<_>>(),
            }),
        );
        match &self.fan_in {
            FanIn::Llm(llm) => {
                let req = user_request(input.to_prompt(), request.params);
                generate_into(llm.as_ref(), req, ctx, emitter).await
            }
            FanIn::Fn(f) => {
                let what = format!("fan-in of parallel `{}`", self.name);
                let text = ctx.guard(&what, f(input, ctx.clone())).await?;
                let g = finish_text(ctx, text, format!("fn:{}", self.name));
                emit_whole(emitter, &self.name, &g);
                Ok(g)
            }
            FanIn::Join => {
                let text = input
                    .branches
                    .iter()
                    .map(|b| match &b.result {
                        Ok(t) => section(&b.name, t),
                        Err(e) => section(&format!("{} (failed)", b.name), e),
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let g = finish_text(ctx, text, format!("fn:{}", self.name));
                emit_whole(emitter, &self.name, &g);
                Ok(g)
            }
        }
    }
}

#[async_trait]
impl AugmentedLlm for Parallel {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn end_thread(&self, thread: &str) -> Result<()> {
        agentkit_core::llm::end_thread_in(&self.branches, thread).await?;
        match &self.fan_in {
            FanIn::Llm(llm) => llm.end_thread(thread).await,
            _ => Ok(()),
        }
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        self.generate_with(request, ctx, None).await
    }

    fn generate_stream<'a>(
        &'a self,
        request: GenerateRequest,
        ctx: &'a RunContext,
    ) -> GenerationStream<'a> {
        stream_generation(move |emitter| async move {
            self.generate_with(request, ctx, Some(&emitter)).await
        })
    }
}

impl Parallel {
    async fn generate_with(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Generation> {
        let scope = ctx.scoped();
        self.run(request, &scope, emitter)
            .instrument(pattern_span(PATTERN, &self.name))
            .await
            .map(|g| finish(&scope, g))
    }
}
