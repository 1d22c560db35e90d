//! Helpers shared by the patterns: members, events, spans, request shaping, generations.

use agentkit_core::{
    Error, GenerateRequest, Generation, GenerationEmitter, Message, RequestParams, RunContext,
    RunEvent, StopReason,
};
use serde_json::Value;

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

/// When streaming, send `generation`'s whole answer as one delta of `name` (for answers that
/// are not streamed as they are produced: functions, joins).
pub(crate) fn emit_whole(emitter: Option<&GenerationEmitter>, name: &str, generation: &Generation) {
    if let Some(e) = emitter {
        e.text(name, generation.text());
    }
}

/// Indent-free text block used when showing one agent's output to another.
pub(crate) fn section(title: &str, body: &str) -> String {
    format!("### {title}\n{}\n", body.trim())
}
