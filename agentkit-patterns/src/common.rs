//! Helpers shared by the patterns: members, events, spans, request shaping, generations.

use std::any::Any;
use std::sync::Arc;

use agentkit_core::{
    AgentLlm, AugmentedLlm, Error, GenerateRequest, Generation, Instruction, Message,
    RequestParams, RunContext, RunEvent, StopReason,
};
use serde_json::Value;

/// An LLM a pattern holds as a member (a route, a worker): an `Arc` of any concrete
/// [`AugmentedLlm`], or an `Arc<dyn AugmentedLlm>`.
///
/// A pattern shows its members to a model that picks among them; [`summary`](Self::summary)
/// is what it shows: the member's description, else (an [`AgentLlm`]) its static instruction, else
/// nothing (the model then sees only the name).
///
/// ```
/// use std::sync::Arc;
/// use agentkit_core::{Agent, AgentLlm, AugmentedLlm, ScriptedProvider};
/// use agentkit_patterns::SharedLlm;
///
/// let agent = Arc::new(AgentLlm::new(
///     Agent::new("billing", "You answer questions about invoices."),
///     ScriptedProvider::new(),
/// ));
/// assert_eq!(agent.summary(), "You answer questions about invoices.");
/// let erased: Arc<dyn AugmentedLlm> = agent;
/// assert_eq!(erased.summary(), "", "a type-erased LLM has only its description");
/// ```
pub trait SharedLlm {
    /// What to show a model choosing among members (may be empty).
    fn summary(&self) -> String;

    /// The member, shared.
    fn into_shared(self) -> Arc<dyn AugmentedLlm>;
}

impl<L: AugmentedLlm + 'static> SharedLlm for Arc<L> {
    fn summary(&self) -> String {
        let own = self.description().trim();
        if !own.is_empty() {
            return own.to_owned();
        }
        match (self.as_ref() as &dyn Any)
            .downcast_ref::<AgentLlm>()
            .map(|a| &a.agent().instruction)
        {
            Some(Instruction::Static(text)) => text.trim().to_owned(),
            // A dynamic instruction needs a run to be computed.
            _ => String::new(),
        }
    }

    fn into_shared(self) -> Arc<dyn AugmentedLlm> {
        self
    }
}

impl SharedLlm for Arc<dyn AugmentedLlm> {
    fn summary(&self) -> String {
        self.description().trim().to_owned()
    }

    fn into_shared(self) -> Arc<dyn AugmentedLlm> {
        self
    }
}

/// Emit a [`RunEvent::PatternStep`].
pub(crate) fn emit_step(ctx: &RunContext, pattern: &str, name: &str, step: &str, detail: Value) {
    tracing::debug!(pattern, name, step, %detail, "pattern step");
    ctx.emit(RunEvent::PatternStep {
        pattern: pattern.to_owned(),
        name: name.to_owned(),
        step: step.to_owned(),
        detail,
    });
}

/// Emit a [`RunEvent::Error`] naming the pattern and where it failed.
pub(crate) fn emit_error(ctx: &RunContext, source: String, error: &Error) {
    ctx.emit(RunEvent::Error {
        source,
        message: error.to_string(),
    });
}

/// The tracing span of one `generate` of a pattern (OpenTelemetry GenAI conventions).
pub(crate) fn pattern_span(pattern: &'static str, name: &str) -> tracing::Span {
    tracing::info_span!(
        "invoke_workflow",
        otel.name = %format!("invoke_workflow {pattern} {name}"),
        gen_ai.operation.name = "invoke_workflow",
        gen_ai.agent.name = %name,
        agentkit.pattern = pattern,
    )
}

/// Parameters for inner calls: the caller's, without the response format (only the call that
/// produces the pattern's final answer gets that).
pub(crate) fn inner_params(params: &RequestParams) -> RequestParams {
    let mut p = params.clone();
    p.response_format = None;
    p
}

/// A one-message request with these parameters.
pub(crate) fn user_request(text: impl Into<String>, params: RequestParams) -> GenerateRequest {
    GenerateRequest::new(vec![Message::user(text)]).with_params(params)
}

/// The pattern's generation: the final inner generation's messages and stop reason, with the
/// usage, cost and call count of everything spent through `scope`.
pub(crate) fn finish(scope: &RunContext, last: Generation) -> Generation {
    let totals = scope.scope_totals();
    let calls = u32::try_from(totals.llm_calls).unwrap_or(u32::MAX);
    last.with_usage(totals.usage, totals.cost_usd, calls)
}

/// A generation whose answer is `text`, with the usage of `scope`.
pub(crate) fn finish_text(scope: &RunContext, text: String, model: String) -> Generation {
    let mut g = Generation::from_text(text);
    g.model = model;
    g.stop_reason = StopReason::EndTurn;
    finish(scope, g)
}

/// Indent-free text block used when showing one agent's output to another.
pub(crate) fn section(title: &str, body: &str) -> String {
    format!("### {title}\n{}\n", body.trim())
}
