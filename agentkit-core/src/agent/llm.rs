//! [`AgentLlm`]: the tool loop, and its single [`Turn`]s.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing::Instrument;

use super::dispatch::Dispatch;
use super::fingerprint::{FINGERPRINT_FIELD, request_fingerprint};
use super::tool::AgentTool;
use super::{Agent, DEFAULT_MAX_ITERATIONS, HUMAN_INPUT_TOOL};
use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::event::{RunEvent, micros};
use crate::llm::{AugmentedLlm, GenerateRequest, Generation, RequestParams};
use crate::memory::{self, InMemoryMemory, Memory};
use crate::message::{Content, Message};
use crate::provider::{
    CompletionChunk, CompletionRequest, CompletionResponse, LlmProvider, StreamAccumulator,
    ToolChoice,
};
use crate::stream::{GenerationEmitter, GenerationEvent, GenerationStream, stream_generation};
use crate::tool::{ToolLayer, ToolOutput, ToolRequest, ToolService, ToolSource, ToolSpec};

type ToolLayerFn = dyn Fn(ToolService) -> ToolService + Send + Sync;

/// An [`Agent`] bound to an [`LlmProvider`] and a [`Memory`]: it runs the tool loop.
///
/// Each `generate`: call the model with the instruction, history and tools → run the tool calls
/// it asks for (concurrently when it asks for several, unless `parallel_tool_calls` is false),
/// through the tower [`ToolService`] stack → feed the results back → repeat until the model
/// answers without tools. After `max_iterations` tool rounds, one last call with tools disabled
/// asks the model to answer with what it has. Every model completion and tool result is a
/// journaled step, so a journaled run resumes or replays without repeating them.
///
/// History is kept per conversation thread: the one the [`RunContext`] names
/// ([`RunContext::with_thread`]), or the default thread. Two callers on two threads never see
/// each other's messages. The default memory is an [`InMemoryMemory`] with a bounded window
/// and a bounded number of threads; [`with_memory`](Self::with_memory) swaps it (e.g. for
/// agentkit-runtime's store-backed memory). A request with `use_history: false` neither reads
/// nor writes history.
///
/// Patterns that drive the loop themselves (a swarm switching agents between model calls) use
/// [`turn`](Self::turn): the same journaled model step and the same tool-call service stack,
/// so every tool layer applies everywhere.
#[derive(Clone)]
pub struct AgentLlm {
    agent: Arc<Agent>,
    provider: Arc<dyn LlmProvider>,
    memory: Arc<dyn Memory>,
    defaults: RequestParams,
    tool_layers: Vec<Arc<ToolLayerFn>>,
}

impl fmt::Debug for AgentLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLlm")
            .field("agent", &self.agent)
            .field("provider", &self.provider.name())
            .field("defaults", &self.defaults)
            .field("tool_layers", &self.tool_layers.len())
            .finish()
    }
}

/// What one turn of the tool loop produced (see [`AgentLlm::turn`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Turn {
    /// The model's response; its message is the assistant's turn.
    pub response: CompletionResponse,
    /// The results of the tool calls the model asked for, in call order (`None` when it asked
    /// for none).
    pub tool_results: Option<Message>,
}

impl Turn {
    /// The result of the tool call `call_id`, if this turn ran it: `(content, is_error)`.
    #[must_use]
    pub fn tool_result(&self, call_id: &str) -> Option<(&[Content], bool)> {
        self.tool_results
            .as_ref()?
            .content
            .iter()
            .find_map(|c| match c {
                Content::ToolResult {
                    call_id: id,
                    content,
                    is_error,
                } if id == call_id => Some((content.as_slice(), *is_error)),
                _ => None,
            })
    }
}

/// What a `generate` fixes once: the request every turn starts from, and the tool stack.
struct Prepared {
    base: CompletionRequest,
    service: ToolService,
    parallel: bool,
}

impl AgentLlm {
    /// Bind an agent to a provider, with in-process memory.
    pub fn new(agent: Agent, provider: impl LlmProvider + 'static) -> Self {
        Self::shared(agent, Arc::new(provider))
    }

    /// Bind an agent to a shared provider, with in-process memory.
    #[must_use]
    pub fn shared(agent: Agent, provider: Arc<dyn LlmProvider>) -> Self {
        Self {
            agent: Arc::new(agent),
            provider,
            memory: Arc::new(InMemoryMemory::new()),
            defaults: RequestParams::default(),
            tool_layers: Vec::new(),
        }
    }

    /// Bind an agent to a shared provider: the same as [`shared`](Self::shared), whose name
    /// does not read like a setter.
    #[deprecated(
        since = "0.1.0",
        note = "a constructor named like a setter: use `AgentLlm::shared`"
    )]
    #[must_use]
    pub fn with_provider(agent: Agent, provider: Arc<dyn LlmProvider>) -> Self {
        Self::shared(agent, provider)
    }

    /// Keep conversation history in this memory.
    #[must_use]
    pub fn with_memory(mut self, memory: Arc<dyn Memory>) -> Self {
        self.memory = memory;
        self
    }

    /// Default request parameters (a request's own parameters win).
    #[must_use]
    pub fn with_defaults(mut self, params: RequestParams) -> Self {
        self.defaults = params;
        self
    }

    /// Wrap every tool call in a tower layer (timeout, retry, concurrency limit, governance).
    /// The first layer added is the innermost.
    #[must_use]
    pub fn with_tool_layer(mut self, layer: impl ToolLayer) -> Self {
        self.tool_layers
            .push(Arc::new(move |svc| ToolService::new(layer.layer(svc))));
        self
    }

    /// The same agent with one more tool source (its tool layers apply to it too). Patterns
    /// use it to add their own tools, e.g. a swarm's handoff tools.
    #[must_use]
    pub fn with_extra_tools(mut self, tools: Arc<dyn ToolSource>) -> Self {
        Arc::make_mut(&mut self.agent).tools.push(tools);
        self
    }

    /// The agent.
    #[must_use]
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The provider.
    #[must_use]
    pub fn provider(&self) -> &Arc<dyn LlmProvider> {
        &self.provider
    }

    /// The memory.
    #[must_use]
    pub fn memory(&self) -> &Arc<dyn Memory> {
        &self.memory
    }

    /// Offer this agent as a tool of other agents.
    #[must_use]
    pub fn as_tool(self) -> AgentTool {
        AgentTool::new(Arc::new(self))
    }

    fn resolve_model(&self, params: &RequestParams, ctx: &RunContext) -> Option<String> {
        if let Some(m) = &params.model {
            return Some(m.clone());
        }
        if let Some(prefs) = &params.model_preferences
            && let Some(m) = ctx.prices().select(prefs, &[self.provider.name()])
        {
            return Some(m.id.clone());
        }
        None
    }

    async fn tool_specs(
        &self,
        params: &RequestParams,
    ) -> Result<(Vec<ToolSpec>, HashMap<String, usize>)> {
        let lists =
            futures::future::try_join_all(self.agent.tools.iter().map(|t| t.list_tools())).await?;
        let mut specs = Vec::new();
        let mut routes = HashMap::new();
        for (i, list) in lists.into_iter().enumerate() {
            for spec in list {
                if params
                    .tool_filter
                    .as_ref()
                    .is_some_and(|f| !f.allows(&spec.name))
                {
                    continue;
                }
                if routes.contains_key(&spec.name) {
                    tracing::warn!(agent = %self.agent.name, tool = %spec.name, "two tool sources offer the same tool; the first wins");
                    continue;
                }
                routes.insert(spec.name.clone(), i);
                specs.push(spec);
            }
        }
        if self.agent.human_input {
            specs.push(ToolSpec::new(
                HUMAN_INPUT_TOOL,
                "Ask the human user a question and wait for the answer. Use it when you need \
                 information or a decision only the user can give.",
                json!({
                    "type": "object",
                    "properties": {
                        "prompt": {"type": "string", "description": "The question for the user."},
                        "description": {"type": "string", "description": "Why you ask, if useful."}
                    },
                    "required": ["prompt"]
                }),
            ));
        }
        Ok((specs, routes))
    }

    fn tool_service(&self, routes: HashMap<String, usize>) -> ToolService {
        let base = ToolService::new(Dispatch {
            agent: Arc::clone(&self.agent),
            routes: Arc::new(routes),
        });
        self.tool_layers.iter().fold(base, |svc, layer| layer(svc))
    }

    async fn prepare(&self, params: &RequestParams, ctx: &RunContext) -> Result<Prepared> {
        let model = self.resolve_model(params, ctx);
        let mut system = self.agent.instruction.resolve(ctx);
        if let Some(suffix) = &params.system_suffix {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(suffix);
        }
        let (tools, routes) = self.tool_specs(params).await?;
        Ok(Prepared {
            base: CompletionRequest {
                model,
                system: (!system.is_empty()).then_some(system),
                messages: Vec::new(),
                tools,
                tool_choice: ToolChoice::Auto,
                temperature: params.temperature,
                max_tokens: params.max_tokens,
                stop: params.stop.clone(),
                parallel_tool_calls: params.parallel_tool_calls,
                response_format: params.response_format.clone(),
                extra: Default::default(),
            },
            service: self.tool_service(routes),
            parallel: params.parallel_tool_calls.unwrap_or(true),
        })
    }

    /// One turn of the tool loop on `conversation`: one journaled model call with this
    /// agent's instruction (plus `params.system_suffix`), tools and parameters, then — if the
    /// model asked for tools — every tool call through this agent's tool-call service stack
    /// (its tower layers: approval, timeout, governance), each journaled.
    ///
    /// `iteration` is reported in events. The conversation is not remembered: callers that
    /// drive turns themselves keep their own history. Journal keys come from `ctx`'s key space
    /// like those of [`generate`](AugmentedLlm::generate).
    pub async fn turn(
        &self,
        conversation: &[Message],
        params: &RequestParams,
        iteration: u32,
        ctx: &RunContext,
    ) -> Result<Turn> {
        self.turn_with(conversation, params, iteration, ctx, None)
            .await
    }

    /// [`turn`](Self::turn), streamed: the model call goes through the provider's
    /// [`stream`](LlmProvider::stream) and its text deltas, the tool calls and the turn's
    /// usage are sent to `emitter` as they happen (see [`crate::stream`]). The journal records
    /// the turn exactly as [`turn`](Self::turn) does; a turn answered from the journal sends
    /// its recorded text as one delta.
    pub async fn turn_streamed(
        &self,
        conversation: &[Message],
        params: &RequestParams,
        iteration: u32,
        ctx: &RunContext,
        emitter: &GenerationEmitter,
    ) -> Result<Turn> {
        self.turn_with(conversation, params, iteration, ctx, Some(emitter))
            .await
    }

    async fn turn_with(
        &self,
        conversation: &[Message],
        params: &RequestParams,
        iteration: u32,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Turn> {
        let params = params.clone().or(&self.defaults);
        let prepared = self.prepare(&params, ctx).await?;
        self.turn_prepared(
            &prepared,
            conversation.to_vec(),
            iteration,
            false,
            ctx,
            emitter,
        )
        .await
    }

    async fn turn_prepared(
        &self,
        prepared: &Prepared,
        conversation: Vec<Message>,
        iteration: u32,
        last: bool,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Turn> {
        let mut req = prepared.base.clone();
        if last {
            req.tool_choice = ToolChoice::None;
        }
        req.messages = conversation;
        let response = self.complete_step(req, iteration, ctx, emitter).await?;
        let calls: Vec<(String, String, Value)> = response
            .message
            .tool_calls()
            .map(|(id, name, args)| (id.to_owned(), name.to_owned(), args.clone()))
            .collect();
        if calls.is_empty() || last {
            return Ok(Turn {
                response,
                tool_results: None,
            });
        }
        let results = self
            .run_tools(calls, &prepared.service, prepared.parallel, ctx, emitter)
            .await?;
        Ok(Turn {
            response,
            tool_results: Some(Message::tool_results(results)),
        })
    }

    async fn complete_step(
        &self,
        request: CompletionRequest,
        iteration: u32,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<CompletionResponse> {
        ctx.check()?;
        let agent = &self.agent.name;
        let provider = self.provider.name().to_owned();
        let model = request
            .model
            .clone()
            .or_else(|| self.provider.default_model().map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        ctx.emit_with(|| RunEvent::LlmRequest {
            agent: agent.clone(),
            provider: provider.clone(),
            model: model.clone(),
            iteration,
            messages: request.messages.len(),
            tools: request.tools.len(),
        });
        let span = tracing::info_span!(
            "chat",
            otel.name = %format!("chat {model}"),
            gen_ai.operation.name = "chat",
            gen_ai.provider.name = %provider,
            gen_ai.request.model = %model,
            gen_ai.agent.name = %agent,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            agentkit.cost_usd = tracing::field::Empty,
            agentkit.replayed = tracing::field::Empty,
        );
        let key = ctx.step_key(&format!("{agent}/llm"));
        let started = Instant::now();
        let executed = std::sync::atomic::AtomicBool::new(false);
        let streamed = std::sync::atomic::AtomicBool::new(false);
        // With a journal, the recorded response carries a fingerprint of the request, so a
        // replay can tell when the code now asks something else (changed instructions, model,
        // tools or conversation).
        let fingerprint = ctx.journal().map(|_| request_fingerprint(&request));
        // The response of a model call made here, used as it is (only a recorded one is
        // decoded from the journal).
        let answer: std::sync::Mutex<Option<CompletionResponse>> = std::sync::Mutex::new(None);
        let recorded: Option<Value> = ctx
            .step_json(&key, async {
                executed.store(true, std::sync::atomic::Ordering::Relaxed);
                let hold = match ctx.spend_guard() {
                    Some(guard) => Some(guard.admit(agent, ctx).await?),
                    None => None,
                };
                let what = format!("model call of agent `{agent}`");
                let answered = match emitter.filter(|_| ctx.wants_stream()) {
                    None => ctx.guard(&what, self.provider.complete(request)).await,
                    Some(emitter) => {
                        streamed.store(true, std::sync::atomic::Ordering::Relaxed);
                        ctx.guard(&what, self.stream_model(request, agent, emitter))
                            .await
                    }
                };
                let response = match answered {
                    Ok(r) => r,
                    Err(e) => {
                        if let (Some(guard), Some(hold)) = (ctx.spend_guard(), hold)
                            && let Err(le) = guard.release(hold, agent, ctx).await
                        {
                            tracing::warn!(agent = %agent, error = %le, "could not give back a failed model call's budget hold (it expires by itself)");
                        }
                        return Err(e);
                    }
                };
                if let (Some(guard), Some(hold)) = (ctx.spend_guard(), hold) {
                    // Charged here, inside the journaled step, so a call answered from the
                    // journal later is not charged twice.
                    let cost = ctx.prices().cost(&response.model, &response.usage);
                    if let Err(e) = guard.charge(hold, agent, ctx, cost).await {
                        tracing::warn!(agent = %agent, cost_usd = cost, error = %e, "could not record a model call's cost in the spend ledger");
                    }
                }
                let mut value = serde_json::to_value(&response)
                    .map_err(|e| Error::json("journaling a model response", e))?;
                if let (Some(fp), Value::Object(map)) = (&fingerprint, &mut value) {
                    map.insert(FINGERPRINT_FIELD.to_owned(), Value::String(fp.clone()));
                }
                *crate::lock(&answer) = Some(response);
                Ok(value)
            })
            .instrument(span.clone())
            .await?;
        let replayed = !executed.load(std::sync::atomic::Ordering::Relaxed);
        if replayed
            && let (Some(fp), Some(journal)) = (&fingerprint, ctx.journal())
            && let Some(was) = recorded
                .as_ref()
                .and_then(|r| r.get(FINGERPRINT_FIELD))
                .and_then(Value::as_str)
            && was != fp
        {
            tracing::warn!(agent = %agent, step = %key, "the model request differs from the recorded one; using the recorded response");
            journal.note_divergence(
                &key,
                &format!(
                    "agent `{agent}` now sends a different model request than the recording \
                     (its instructions, model, tools or conversation changed)"
                ),
            );
        }
        let executed_answer = crate::lock(&answer).take();
        let response: CompletionResponse = match (executed_answer, recorded) {
            (Some(response), _) => response,
            (None, Some(recorded)) => {
                serde_json::from_value(recorded).map_err(|e| Error::Journal {
                    key: key.clone(),
                    message: format!("the recorded value is not a model response: {e}"),
                })?
            }
            (None, None) => return Err(crate::context::not_run(&key)),
        };
        let latency_us = if replayed {
            0
        } else {
            micros(started.elapsed())
        };
        let cost = ctx.prices().cost(&response.model, &response.usage);
        if !span.is_disabled() {
            span.record("agentkit.cost_usd", cost);
            span.record("agentkit.replayed", replayed);
            span.record("gen_ai.response.model", response.model.as_str());
            span.record("gen_ai.usage.input_tokens", response.usage.input_tokens);
            span.record("gen_ai.usage.output_tokens", response.usage.output_tokens);
            span.record(
                "gen_ai.response.finish_reasons",
                format!("{:?}", response.stop_reason).as_str(),
            );
        }
        ctx.record_llm_usage(response.usage, cost);
        if let Some(emitter) = emitter {
            if !streamed.load(std::sync::atomic::Ordering::Relaxed) {
                // Answered from the journal (no model call), or not streamed because nobody
                // wanted it: the text at once, as one delta.
                emitter.text(agent, response.message.text());
            }
            emitter.emit(GenerationEvent::TurnFinished {
                agent: agent.clone(),
                iteration,
                usage: response.usage,
                stop_reason: response.stop_reason.clone(),
                model: response.model.clone(),
                tool_calls: response.message.tool_calls().count(),
                replayed,
            });
        }
        ctx.emit_with(|| RunEvent::LlmResponse {
            agent: agent.clone(),
            provider,
            model: response.model.clone(),
            usage: response.usage,
            cost_usd: cost,
            latency_us,
            stop_reason: response.stop_reason.clone(),
            replayed,
        });
        Ok(response)
    }

    /// One model call through the provider's stream: text deltas go to `emitter` as they
    /// arrive, and the chunks are assembled into the same response `complete` gives.
    async fn stream_model(
        &self,
        request: CompletionRequest,
        agent: &str,
        emitter: &GenerationEmitter,
    ) -> Result<CompletionResponse> {
        let mut chunks = self.provider.stream(request).await?;
        let mut acc = StreamAccumulator::new(self.provider.name());
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if let CompletionChunk::TextDelta { text } = &chunk {
                emitter.text(agent, text.clone());
            }
            acc.push(chunk);
        }
        acc.finish()
    }

    async fn run_tools(
        &self,
        calls: Vec<(String, String, Value)>,
        service: &ToolService,
        parallel: bool,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Vec<Content>> {
        // Journal keys are taken in call order before anything runs, so they are the same on
        // replay whatever order the calls finish in. Each call also gets the key space of its
        // own key, so whatever it journals (an agent called as a tool) is keyed by the call,
        // not by timing.
        let keyed: Vec<(String, String, String, Value)> = calls
            .into_iter()
            .map(|(id, name, args)| {
                let key = format!(
                    "{}{}/tool/{}/{}",
                    ctx.key_space(),
                    self.agent.name,
                    ctx.next_step(),
                    id
                );
                (key, id, name, args)
            })
            .collect();
        // The run's tool history (what chain rules of governance look at) gets every call,
        // executed or replayed, in call order: calls run side by side see the history as it
        // was before the turn and are added after it, in the order the model asked for them,
        // so a resumed run rebuilds exactly the history it had.
        let record = |name: &str, result: &Result<Content>| {
            if let Ok(Content::ToolResult { is_error, .. }) = result {
                ctx.record_tool_result(name, *is_error);
            }
        };
        if parallel {
            let seen = ctx.tool_history_len();
            let names: Vec<String> = keyed.iter().map(|(_, _, n, _)| n.clone()).collect();
            let futs = keyed.into_iter().map(|(key, id, name, args)| {
                self.run_one_tool((key, id, name, args), service.clone(), ctx, seen, emitter)
            });
            let results = futures::future::join_all(futs).await;
            for (name, result) in names.iter().zip(&results) {
                record(name, result);
            }
            results.into_iter().collect()
        } else {
            let mut out = Vec::new();
            for (key, id, name, args) in keyed {
                let seen = ctx.tool_history_len();
                let result = self
                    .run_one_tool(
                        (key, id, name.clone(), args),
                        service.clone(),
                        ctx,
                        seen,
                        emitter,
                    )
                    .await;
                record(&name, &result);
                out.push(result);
            }
            out.into_iter().collect()
        }
    }

    /// Run one tool call: `(journal key, call id, tool name, arguments)`.
    async fn run_one_tool(
        &self,
        (key, id, name, arguments): (String, String, String, Value),
        service: ToolService,
        ctx: &RunContext,
        history_seen: usize,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Content> {
        let agent = &self.agent.name;
        if let Some(emitter) = emitter {
            emitter.emit(GenerationEvent::ToolCallStarted {
                agent: agent.clone(),
                call_id: id.clone(),
                tool: name.clone(),
                arguments: arguments.clone(),
            });
        }
        ctx.emit_with(|| RunEvent::ToolCallStarted {
            agent: agent.clone(),
            call_id: id.clone(),
            tool: name.clone(),
            arguments: arguments.clone(),
        });
        let span = tracing::info_span!(
            "execute_tool",
            otel.name = %format!("execute_tool {name}"),
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %name,
            gen_ai.tool.call.id = %id,
            gen_ai.agent.name = %agent,
            error.type = tracing::field::Empty,
        );
        let started = Instant::now();
        let request = ToolRequest::new(
            id.clone(),
            name.clone(),
            arguments,
            ctx.in_key_space(format!("{key}/"))
                .with_tool_call_key(key.clone())
                .with_tool_history_cutoff(history_seen),
        );
        let executed = std::sync::atomic::AtomicBool::new(false);
        let outcome: Result<ToolOutput> = ctx
            .step(&key, async {
                executed.store(true, std::sync::atomic::Ordering::Relaxed);
                ctx.check()?;
                ctx.record_tool_call();
                let call = service.oneshot(request);
                match ctx.guard(&format!("tool `{name}`"), call).await {
                    Ok(out) => Ok(out),
                    Err(e) if e.is_fatal_for_run() => Err(e),
                    // The call could not be made; the model is told so and may recover. This is
                    // journaled like a result so a replay shows the model the same thing.
                    Err(e) => {
                        ctx.emit(RunEvent::Error {
                            source: format!("tool `{name}`"),
                            message: e.to_string(),
                        });
                        Ok(ToolOutput::error(format!("error: {e}")))
                    }
                }
            })
            .instrument(span.clone())
            .await;
        let output = outcome?;
        if output.is_error {
            // The tool ran and reported an error (the model sees it); the span says so.
            span.record("error.type", "tool_error");
        }
        let replayed = !executed.load(std::sync::atomic::Ordering::Relaxed);
        if let Some(emitter) = emitter {
            emitter.emit(GenerationEvent::ToolCallFinished {
                agent: agent.clone(),
                call_id: id.clone(),
                tool: name.clone(),
                output: output.content.clone(),
                is_error: output.is_error,
            });
        }
        ctx.emit_with(|| RunEvent::ToolCallFinished {
            agent: agent.clone(),
            call_id: id.clone(),
            tool: name,
            is_error: output.is_error,
            output: output.content.clone(),
            latency_us: if replayed {
                0
            } else {
                micros(started.elapsed())
            },
            replayed,
        });
        Ok(Content::tool_result(id, output.content, output.is_error))
    }

    async fn run_loop(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Generation> {
        let params = request.params.clone().or(&self.defaults);
        let use_history = params.use_history.unwrap_or(true);
        let max_iterations = params
            .max_iterations
            .unwrap_or(DEFAULT_MAX_ITERATIONS)
            .max(1);
        let prepared = self.prepare(&params, ctx).await?;
        let mut conversation = if use_history {
            memory::load_history(self.memory.as_ref(), &self.agent.name, ctx).await?
        } else {
            Vec::new()
        };
        conversation.extend(request.messages.iter().cloned());
        let mut produced: Vec<Message> = Vec::new();

        let mut last: Option<CompletionResponse> = None;
        for iteration in 0..=max_iterations {
            let final_turn = iteration == max_iterations;
            if final_turn {
                // Tool budget spent: one last turn without tools.
                let nudge = Message::user(
                    "You have reached the maximum number of tool calls for this request. Answer \
                     now with the information you have, without calling any tool.",
                );
                conversation.push(nudge.clone());
                produced.push(nudge);
            }
            let turn = self
                .turn_prepared(
                    &prepared,
                    conversation.clone(),
                    iteration,
                    final_turn,
                    ctx,
                    emitter,
                )
                .await?;
            conversation.push(turn.response.message.clone());
            produced.push(turn.response.message.clone());
            let results = turn.tool_results;
            last = Some(turn.response);
            match results {
                Some(msg) => {
                    conversation.push(msg.clone());
                    produced.push(msg);
                }
                None => break,
            }
        }

        if use_history {
            let mut remember = request.messages;
            remember.extend(produced.iter().cloned());
            memory::remember(self.memory.as_ref(), &self.agent.name, &remember, ctx).await?;
        }
        let last =
            last.ok_or_else(|| Error::InvalidRequest("the tool loop made no model call".into()))?;
        let totals = ctx.scope_totals();
        Ok(Generation {
            messages: produced,
            usage: totals.usage,
            cost_usd: totals.cost_usd,
            stop_reason: last.stop_reason,
            model: last.model,
            llm_calls: totals.llm_calls as u32,
        })
    }
}

#[async_trait]
impl AugmentedLlm for AgentLlm {
    fn name(&self) -> &str {
        &self.agent.name
    }

    async fn end_thread(&self, thread: &str) -> Result<()> {
        self.memory.clear(thread).await
    }

    /// The agent's description; without one, its (static) instruction, as mcp-agent does, so
    /// a router or a parent agent still learns what it does.
    fn description(&self) -> &str {
        match (&*self.agent.description, &self.agent.instruction) {
            ("", super::Instruction::Static(instruction)) => instruction,
            (d, _) => d,
        }
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        self.generate_with(request, ctx, None).await
    }

    /// The instruction (or that it is dynamic), the provider, the request defaults (model
    /// included), and the numbers of tool sources and tool layers.
    fn fingerprint(&self) -> Option<serde_json::Value> {
        let instruction = match &self.agent.instruction {
            super::Instruction::Static(text) => serde_json::json!(text),
            super::Instruction::Dynamic(_) => serde_json::json!({"dynamic": true}),
        };
        Some(serde_json::json!({
            "instruction": instruction,
            "provider": self.provider.name(),
            "defaults": serde_json::to_value(&self.defaults).ok(),
            "tool_sources": self.agent.tools.len(),
            "tool_layers": self.tool_layers.len(),
            "human_input": self.agent.human_input,
        }))
    }

    /// Streams every model call of the tool loop (see [`crate::stream`]).
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

impl AgentLlm {
    async fn generate_with(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Generation> {
        let scope = ctx.scoped();
        let span = tracing::info_span!(
            "invoke_agent",
            otel.name = %format!("invoke_agent {}", self.agent.name),
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %self.agent.name,
            gen_ai.provider.name = %self.provider.name(),
        );
        let timeout = request.params.timeout.or(self.defaults.timeout);
        let fut = self.run_loop(request, &scope, emitter).instrument(span);
        match timeout {
            None => fut.await,
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    what: format!("agent `{}`", self.agent.name),
                    after: t,
                }),
            },
        }
    }
}
