//! [`Agent`] (name, instruction, tools) and [`AgentLlm`] (an agent bound to a provider and a
//! memory): the tool-calling loop.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

use crate::context::{HumanInputHandler, HumanInputRequest, HumanInputResponse, RunContext};
use crate::error::{Error, Result};
use crate::event::RunEvent;
use crate::llm::{AugmentedLlm, GenerateRequest, Generation, RequestParams};
use crate::message::{Content, Message, Role};
use crate::provider::{CompletionRequest, CompletionResponse, LlmProvider, ToolChoice};
use crate::tool::{ToolOutput, ToolRequest, ToolService, ToolSource, ToolSpec};

/// Default `max_iterations` of the tool loop.
pub const DEFAULT_MAX_ITERATIONS: u32 = 10;

/// The name of the tool offered when an agent accepts human input.
pub const HUMAN_INPUT_TOOL: &str = "__human_input";

type DynInstruction = dyn Fn(&RunContext) -> String + Send + Sync;

/// An agent's system instruction: fixed text or computed per request.
#[derive(Clone)]
pub enum Instruction {
    /// Fixed text.
    Static(String),
    /// Computed from the run context on every request (dynamic instructions).
    Dynamic(Arc<DynInstruction>),
}

impl fmt::Debug for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(s) => f.debug_tuple("Static").field(s).finish(),
            Self::Dynamic(_) => f.write_str("Dynamic(..)"),
        }
    }
}

impl Instruction {
    /// The instruction text for this run.
    #[must_use]
    pub fn resolve(&self, ctx: &RunContext) -> String {
        match self {
            Self::Static(s) => s.clone(),
            Self::Dynamic(f) => f(ctx),
        }
    }
}

impl From<&str> for Instruction {
    fn from(s: &str) -> Self {
        Self::Static(s.to_owned())
    }
}

impl From<String> for Instruction {
    fn from(s: String) -> Self {
        Self::Static(s)
    }
}

/// What an agent is: a name, an instruction, tools, and whether it may ask a human.
#[derive(Clone)]
#[non_exhaustive]
pub struct Agent {
    /// Name, unique among the agents of an application.
    pub name: String,
    /// What the agent does (shown when it is offered as a tool or a route).
    pub description: String,
    /// The system instruction.
    pub instruction: Instruction,
    /// Tool sources.
    pub tools: Vec<Arc<dyn ToolSource>>,
    /// Offer a [`HUMAN_INPUT_TOOL`] that asks a human (through the agent's or the run's handler).
    pub human_input: bool,
    /// A handler for human input that takes precedence over the run context's.
    pub human_input_handler: Option<Arc<dyn HumanInputHandler>>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("instruction", &self.instruction)
            .field("tools", &self.tools.len())
            .field("human_input", &self.human_input)
            .finish()
    }
}

impl Agent {
    /// An agent with a name and an instruction.
    pub fn new(name: impl Into<String>, instruction: impl Into<Instruction>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            instruction: instruction.into(),
            tools: Vec::new(),
            human_input: false,
            human_input_handler: None,
        }
    }

    /// Set the description.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Compute the instruction per request.
    #[must_use]
    pub fn with_dynamic_instruction(
        mut self,
        f: impl Fn(&RunContext) -> String + Send + Sync + 'static,
    ) -> Self {
        self.instruction = Instruction::Dynamic(Arc::new(f));
        self
    }

    /// Add a tool source.
    #[must_use]
    pub fn with_tool(mut self, tool: impl ToolSource + 'static) -> Self {
        self.tools.push(Arc::new(tool));
        self
    }

    /// Add a shared tool source.
    #[must_use]
    pub fn with_tool_source(mut self, tool: Arc<dyn ToolSource>) -> Self {
        self.tools.push(tool);
        self
    }

    /// Offer the human-input tool, answered by the run context's handler.
    #[must_use]
    pub fn with_human_input(mut self, enabled: bool) -> Self {
        self.human_input = enabled;
        self
    }

    /// Offer the human-input tool, answered by this handler.
    #[must_use]
    pub fn with_human_input_handler(mut self, handler: Arc<dyn HumanInputHandler>) -> Self {
        self.human_input = true;
        self.human_input_handler = Some(handler);
        self
    }
}

/// Conversation memory of an [`AgentLlm`].
pub trait Memory: Send + Sync {
    /// The remembered messages.
    fn get(&self) -> Vec<Message>;
    /// Remember more messages.
    fn extend(&self, messages: &[Message]);
    /// Forget everything.
    fn clear(&self);
}

/// Memory kept in process.
#[derive(Debug, Default)]
pub struct InMemoryMemory {
    messages: Mutex<Vec<Message>>,
}

impl InMemoryMemory {
    /// Empty memory.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Memory for InMemoryMemory {
    fn get(&self) -> Vec<Message> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }
    fn extend(&self, messages: &[Message]) {
        if let Ok(mut m) = self.messages.lock() {
            m.extend_from_slice(messages);
        }
    }
    fn clear(&self) {
        if let Ok(mut m) = self.messages.lock() {
            m.clear();
        }
    }
}

type ToolLayerFn = dyn Fn(ToolService) -> ToolService + Send + Sync;

/// An [`Agent`] bound to an [`LlmProvider`] and a [`Memory`]: it runs the tool loop.
///
/// Each `generate`: call the model with the instruction, history and tools → run the tool calls
/// it asks for (concurrently when it asks for several, unless `parallel_tool_calls` is false),
/// through the tower [`ToolService`] stack → feed the results back → repeat until the model
/// answers without tools. After `max_iterations` tool rounds, one last call with tools disabled
/// asks the model to answer with what it has. Every model completion and tool result is a
/// journaled step, so a journaled run resumes or replays without repeating them.
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

impl AgentLlm {
    /// Bind an agent to a provider, with in-process memory.
    pub fn new(agent: Agent, provider: impl LlmProvider + 'static) -> Self {
        Self::with_provider(agent, Arc::new(provider))
    }

    /// Bind an agent to a shared provider.
    #[must_use]
    pub fn with_provider(agent: Agent, provider: Arc<dyn LlmProvider>) -> Self {
        Self {
            agent: Arc::new(agent),
            provider,
            memory: Arc::new(InMemoryMemory::new()),
            defaults: RequestParams::default(),
            tool_layers: Vec::new(),
        }
    }

    /// Use this memory.
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
    pub fn with_tool_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ToolService> + Send + Sync + 'static,
        L::Service: Service<ToolRequest, Response = ToolOutput, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<ToolRequest>>::Future: Send + 'static,
    {
        self.tool_layers
            .push(Arc::new(move |svc| ToolService::new(layer.layer(svc))));
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

    async fn complete_step(
        &self,
        request: CompletionRequest,
        iteration: u32,
        ctx: &RunContext,
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
        );
        let key = format!("{agent}/llm/{}", ctx.next_step());
        let started = Instant::now();
        let executed = std::sync::atomic::AtomicBool::new(false);
        // With a journal, the recorded response carries a fingerprint of the request, so a
        // replay can tell when the code now asks something else (changed instructions, model,
        // tools or conversation).
        let fingerprint = ctx.journal().map(|_| request_fingerprint(&request));
        let recorded: Value = ctx
            .step(&key, async {
                executed.store(true, std::sync::atomic::Ordering::Relaxed);
                let response = ctx
                    .guard(
                        &format!("model call of agent `{agent}`"),
                        self.provider.complete(request),
                    )
                    .await?;
                let mut value = serde_json::to_value(&response)
                    .map_err(|e| Error::json("journaling a model response", e))?;
                if let (Some(fp), Value::Object(map)) = (&fingerprint, &mut value) {
                    map.insert(FINGERPRINT_FIELD.to_owned(), Value::String(fp.clone()));
                }
                Ok(value)
            })
            .instrument(span.clone())
            .await?;
        let replayed = !executed.load(std::sync::atomic::Ordering::Relaxed);
        if replayed
            && let (Some(fp), Some(journal)) = (&fingerprint, ctx.journal())
            && let Some(was) = recorded.get(FINGERPRINT_FIELD).and_then(Value::as_str)
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
        let response: CompletionResponse =
            serde_json::from_value(recorded).map_err(|e| Error::Journal {
                key: key.clone(),
                message: format!("the recorded value is not a model response: {e}"),
            })?;
        let latency_ms = started.elapsed().as_millis() as u64;
        let cost = ctx.prices().cost(&response.model, &response.usage);
        if !span.is_disabled() {
            span.record("gen_ai.response.model", response.model.as_str());
            span.record("gen_ai.usage.input_tokens", response.usage.input_tokens);
            span.record("gen_ai.usage.output_tokens", response.usage.output_tokens);
            span.record(
                "gen_ai.response.finish_reasons",
                format!("{:?}", response.stop_reason).as_str(),
            );
        }
        ctx.record_llm_usage(response.usage, cost);
        ctx.emit_with(|| RunEvent::LlmResponse {
            agent: agent.clone(),
            provider,
            model: response.model.clone(),
            usage: response.usage,
            cost_usd: cost,
            latency_ms,
            stop_reason: response.stop_reason.clone(),
            replayed,
        });
        Ok(response)
    }

    async fn run_tools(
        &self,
        calls: Vec<(String, String, Value)>,
        service: &ToolService,
        parallel: bool,
        ctx: &RunContext,
    ) -> Result<Vec<Content>> {
        // Journal keys are taken in call order before anything runs, so they are the same on
        // replay whatever order the calls finish in.
        let keyed: Vec<(String, String, String, Value)> = calls
            .into_iter()
            .map(|(id, name, args)| {
                let key = format!("{}/tool/{}/{}", self.agent.name, ctx.next_step(), id);
                (key, id, name, args)
            })
            .collect();
        let futs = keyed.into_iter().map(|(key, id, name, args)| {
            self.run_one_tool(key, id, name, args, service.clone(), ctx)
        });
        let results: Vec<Result<Content>> = if parallel {
            futures::future::join_all(futs).await
        } else {
            let mut out = Vec::new();
            for f in futs {
                out.push(f.await);
            }
            out
        };
        results.into_iter().collect()
    }

    async fn run_one_tool(
        &self,
        key: String,
        id: String,
        name: String,
        arguments: Value,
        service: ToolService,
        ctx: &RunContext,
    ) -> Result<Content> {
        let agent = &self.agent.name;
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
        );
        let started = Instant::now();
        let request = ToolRequest::new(
            id.clone(),
            name.clone(),
            arguments,
            ctx.clone().with_tool_call_key(key.clone()),
        );
        let outcome: Result<ToolOutput> = ctx
            .step(&key, async {
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
            .instrument(span)
            .await;
        let output = outcome?;
        ctx.emit_with(|| RunEvent::ToolCallFinished {
            agent: agent.clone(),
            call_id: id.clone(),
            tool: name,
            is_error: output.is_error,
            latency_ms: started.elapsed().as_millis() as u64,
        });
        Ok(Content::tool_result(id, output.content, output.is_error))
    }

    async fn run_loop(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        let params = request.params.clone().or(&self.defaults);
        let use_history = params.use_history.unwrap_or(true);
        let max_iterations = params
            .max_iterations
            .unwrap_or(DEFAULT_MAX_ITERATIONS)
            .max(1);
        let parallel = params.parallel_tool_calls.unwrap_or(true);
        let model = self.resolve_model(&params, ctx);
        let mut system = self.agent.instruction.resolve(ctx);
        if let Some(suffix) = &params.system_suffix {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str(suffix);
        }
        let (tools, routes) = self.tool_specs(&params).await?;
        let service = self.tool_service(routes);

        let mut conversation = if use_history {
            self.memory.get()
        } else {
            Vec::new()
        };
        conversation.extend(request.messages.iter().cloned());
        let mut produced: Vec<Message> = Vec::new();

        let base = CompletionRequest {
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
        };

        let mut last: Option<CompletionResponse> = None;
        for iteration in 0..=max_iterations {
            let mut req = base.clone();
            if iteration == max_iterations {
                // Tool budget spent: one last turn without tools.
                req.tool_choice = ToolChoice::None;
                let nudge = Message::user(
                    "You have reached the maximum number of tool calls for this request. Answer \
                     now with the information you have, without calling any tool.",
                );
                conversation.push(nudge.clone());
                produced.push(nudge);
            }
            req.messages = conversation.clone();
            let response = self.complete_step(req, iteration, ctx).await?;
            conversation.push(response.message.clone());
            produced.push(response.message.clone());
            let calls: Vec<(String, String, Value)> = response
                .message
                .tool_calls()
                .map(|(id, name, args)| (id.to_owned(), name.to_owned(), args.clone()))
                .collect();
            let done = calls.is_empty() || iteration == max_iterations;
            last = Some(response);
            if done {
                break;
            }
            let results = self.run_tools(calls, &service, parallel, ctx).await?;
            let msg = Message::tool_results(results);
            conversation.push(msg.clone());
            produced.push(msg);
        }

        if use_history {
            let mut remember = request.messages;
            remember.extend(produced.iter().cloned());
            self.memory.extend(&remember);
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

    fn description(&self) -> &str {
        &self.agent.description
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        let scope = ctx.scoped();
        let span = tracing::info_span!(
            "invoke_agent",
            otel.name = %format!("invoke_agent {}", self.agent.name),
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %self.agent.name,
            gen_ai.provider.name = %self.provider.name(),
        );
        let timeout = request.params.timeout.or(self.defaults.timeout);
        let fut = self.run_loop(request, &scope).instrument(span);
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

/// The field of a journaled model response that holds its request fingerprint.
const FINGERPRINT_FIELD: &str = "request_fingerprint";

/// A stable fingerprint (FNV-1a 64 over the canonical JSON) of what a model request asks:
/// system prompt, model, tools, tool choice, response format and messages. Stable across
/// processes and Rust versions, unlike `std`'s hasher.
fn request_fingerprint(request: &CompletionRequest) -> String {
    struct Fnv(u64);
    impl std::io::Write for Fnv {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for b in buf {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let parts = (
        &request.system,
        &request.model,
        &request.tools,
        &request.tool_choice,
        &request.response_format,
        &request.messages,
    );
    // Serialising plain data into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut h, &parts);
    format!("{:016x}", h.0)
}

/// Routes tool calls to the agent's sources, and answers the human-input tool.
#[derive(Clone)]
struct Dispatch {
    agent: Arc<Agent>,
    routes: Arc<HashMap<String, usize>>,
}

impl Service<ToolRequest> for Dispatch {
    type Response = ToolOutput;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ToolOutput>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        let agent = Arc::clone(&self.agent);
        let routes = Arc::clone(&self.routes);
        async move {
            if agent.human_input && req.name == HUMAN_INPUT_TOOL {
                return ask_human(&agent, req.arguments, &req.ctx).await;
            }
            match routes.get(&req.name) {
                Some(i) => {
                    agent.tools[*i]
                        .call_tool(&req.name, req.arguments, &req.ctx)
                        .await
                }
                None => {
                    let mut available: Vec<String> = routes.keys().cloned().collect();
                    available.sort();
                    Err(Error::ToolNotFound {
                        tool: req.name,
                        available,
                    })
                }
            }
        }
        .boxed()
    }
}

async fn ask_human(agent: &Agent, arguments: Value, ctx: &RunContext) -> Result<ToolOutput> {
    let Some(prompt) = arguments.get("prompt").and_then(Value::as_str) else {
        return Ok(ToolOutput::error(
            "the `prompt` argument (a string) is required",
        ));
    };
    let handler = agent
        .human_input_handler
        .as_ref()
        .or_else(|| ctx.human_input())
        .cloned()
        .ok_or_else(|| {
            Error::HumanInput(format!(
                "agent `{}` asked for human input but no handler is set (RunContext::with_human_input)",
                agent.name
            ))
        })?;
    let mut request = HumanInputRequest::new(prompt);
    if let Some(d) = arguments.get("description").and_then(Value::as_str) {
        request = request.with_description(d);
    }
    ctx.emit(RunEvent::HumanInputRequested {
        agent: agent.name.clone(),
        prompt: prompt.to_owned(),
    });
    let answer = handler.ask(request, ctx).await?;
    ctx.emit(RunEvent::HumanInputAnswered {
        agent: agent.name.clone(),
    });
    Ok(match answer {
        HumanInputResponse::Answer {
            text,
            data: Some(d),
        } => ToolOutput::text(text).with_structured(d),
        HumanInputResponse::Answer { text, data: None } => ToolOutput::text(text),
        HumanInputResponse::Declined => ToolOutput::error("the user declined to answer"),
        HumanInputResponse::Cancelled => ToolOutput::error("the user dismissed the question"),
    })
}

/// Any [`AugmentedLlm`] (an agent, a pattern) offered as a tool: input `{"message": string}`,
/// output the LLM's final text. Lets agents call agents.
#[derive(Clone)]
pub struct AgentTool {
    llm: Arc<dyn AugmentedLlm>,
    name: String,
    description: String,
    use_history: bool,
}

impl fmt::Debug for AgentTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AgentTool {
    /// Offer `llm` as a tool named after it.
    #[must_use]
    pub fn new(llm: Arc<dyn AugmentedLlm>) -> Self {
        let name = crate::schema::sanitize_name(llm.name());
        let description = if llm.description().is_empty() {
            format!(
                "Ask the `{}` agent. Send it a self-contained message.",
                llm.name()
            )
        } else {
            llm.description().to_owned()
        };
        Self {
            llm,
            name,
            description,
            use_history: false,
        }
    }

    /// Use this tool name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = crate::schema::sanitize_name(&name.into());
        self
    }

    /// Use this description.
    #[must_use]
    pub fn with_description(mut self, d: impl Into<String>) -> Self {
        self.description = d.into();
        self
    }

    /// Let the inner agent keep its conversation across calls (off by default: each call is
    /// independent).
    #[must_use]
    pub fn with_history(mut self, keep: bool) -> Self {
        self.use_history = keep;
        self
    }
}

#[async_trait]
impl ToolSource for AgentTool {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        Ok(vec![ToolSpec::new(
            self.name.clone(),
            self.description.clone(),
            json!({
                "type": "object",
                "properties": {"message": {"type": "string", "description": "What to ask the agent."}},
                "required": ["message"]
            }),
        )])
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        ctx: &RunContext,
    ) -> Result<ToolOutput> {
        if name != self.name {
            return Err(Error::ToolNotFound {
                tool: name.to_owned(),
                available: vec![self.name.clone()],
            });
        }
        let Some(message) = arguments.get("message").and_then(Value::as_str) else {
            return Ok(ToolOutput::error(
                "the `message` argument (a string) is required",
            ));
        };
        let request =
            GenerateRequest::new(vec![Message::new(Role::User, vec![Content::text(message)])])
                .with_params(RequestParams::new().with_use_history(self.use_history));
        match self.llm.generate(request, ctx).await {
            Ok(g) => Ok(ToolOutput::text(g.text())),
            Err(e) if e.is_fatal_for_run() => Err(e),
            Err(e) => Ok(ToolOutput::error(format!(
                "agent `{}` failed: {e}",
                self.llm.name()
            ))),
        }
    }
}
