//! [`Chain`]: sequential handoff from one LLM to the next.

use std::fmt;
use std::sync::Arc;

use agentkit_core::{
    AugmentedLlm, Error, GenerateRequest, Generation, GenerationEmitter, GenerationStream, Result,
    RunContext, generate_into, stream_generation,
};
use async_trait::async_trait;
use serde_json::json;
use tracing::Instrument;

use crate::common::{
    emit_error, emit_step, finish, inner_params, pattern_span, section, user_request,
};

const PATTERN: &str = "chain";

/// What each step of a [`Chain`] receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainInput {
    /// The previous step's output only (the first step gets the request).
    #[default]
    PreviousOutput,
    /// The original request followed by every earlier step's output, labelled by step name.
    Transcript,
}

/// Runs LLMs one after another; each step gets the previous output (or the cumulative
/// transcript, see [`ChainInput`]). The last step's answer is the chain's answer.
///
/// Streamed ([`generate_stream`](AugmentedLlm::generate_stream)), the chain streams its last
/// step; the earlier steps run as plain `generate` calls.
///
/// ```
/// use agentkit_core::{AugmentedLlmExt, RunContext};
/// use agentkit_patterns::{Chain, FnLlm};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let chain = Chain::builder("shout-then-exclaim")
///     .with_step(FnLlm::new("shout", |t: String, _| async move { Ok(t.to_uppercase()) }))
///     .with_step(FnLlm::new("exclaim", |t: String, _| async move { Ok(format!("{t}!")) }))
///     .build()?;
/// assert_eq!(chain.generate_str("hello", &RunContext::new()).await?, "HELLO!");
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Chain {
    name: String,
    description: String,
    steps: Vec<Arc<dyn AugmentedLlm>>,
    input: ChainInput,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("name", &self.name)
            .field(
                "steps",
                &self.steps.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("input", &self.input)
            .finish()
    }
}

/// Builds a [`Chain`].
#[derive(Clone)]
#[must_use]
pub struct ChainBuilder {
    chain: Chain,
}

impl fmt::Debug for ChainBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.chain.fmt(f)
    }
}

impl Chain {
    /// Start building a chain named `name`.
    pub fn builder(name: impl Into<String>) -> ChainBuilder {
        ChainBuilder::new(name)
    }

    /// The step names, in order.
    #[must_use]
    pub fn step_names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name()).collect()
    }
}

impl ChainBuilder {
    /// A chain named `name`, with no steps yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            chain: Chain {
                name: name.into(),
                description: String::new(),
                steps: Vec::new(),
                input: ChainInput::default(),
            },
        }
    }

    /// Append a step.
    pub fn with_step(self, step: impl AugmentedLlm + 'static) -> Self {
        self.with_shared_step(Arc::new(step))
    }

    /// Append a shared step.
    pub fn with_shared_step(mut self, step: Arc<dyn AugmentedLlm>) -> Self {
        self.chain.steps.push(step);
        self
    }

    /// Choose what each step receives.
    pub fn with_input(mut self, input: ChainInput) -> Self {
        self.chain.input = input;
        self
    }

    /// Describe the chain (shown when it is a route or a worker).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.chain.description = description.into();
        self
    }

    /// Finish. Fails when the chain has no step.
    pub fn build(self) -> Result<Chain> {
        if self.chain.steps.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "chain `{}` has no steps; add at least one with `with_step`",
                self.chain.name
            )));
        }
        Ok(self.chain)
    }
}

#[async_trait]
impl AugmentedLlm for Chain {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn end_thread(&self, thread: &str) -> Result<()> {
        agentkit_core::llm::end_thread_in(&self.steps, thread).await
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

impl Chain {
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

impl Chain {
    async fn run(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Generation> {
        let original = request.last_user_text();
        let params = inner_params(&request.params);
        let mut transcript = section("Request", &original);
        let mut last: Option<Generation> = None;
        let count = self.steps.len();
        for (i, step) in self.steps.iter().enumerate() {
            ctx.check()?;
            let is_last = i + 1 == count;
            let step_params = if is_last {
                request.params.clone()
            } else {
                params.clone()
            };
            let req = match (&last, self.input) {
                (None, _) => request.clone().with_params(step_params),
                (Some(prev), ChainInput::PreviousOutput) => user_request(prev.text(), step_params),
                (Some(_), ChainInput::Transcript) => user_request(
                    format!(
                        "{transcript}\nContinue the work above: do your part, building on the earlier steps."
                    ),
                    step_params,
                ),
            };
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "step_started",
                json!({"index": i, "step": step.name()}),
            );
            // Only the last step's answer is the chain's: only it streams.
            let streamed = if is_last { emitter } else { None };
            let g = match generate_into(step.as_ref(), req, ctx, streamed).await {
                Ok(g) => g,
                Err(e) => {
                    emit_error(
                        ctx,
                        format!("chain `{}` step {i} (`{}`)", self.name, step.name()),
                        &e,
                    );
                    return Err(e);
                }
            };
            let text = g.text();
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "step_finished",
                json!({"index": i, "step": step.name(), "output": text}),
            );
            transcript.push('\n');
            transcript.push_str(&section(
                &format!("Step {} ({})", i + 1, step.name()),
                &text,
            ));
            last = Some(g);
        }
        last.ok_or_else(|| Error::InvalidRequest(format!("chain `{}` has no steps", self.name)))
    }
}
