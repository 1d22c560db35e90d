//! [`Swarm`]: agents hand the conversation to each other through tool calls.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agentkit_core::{
    Agent, AugmentedLlm, CompletionRequest, CompletionResponse, Content, Error, GenerateRequest,
    Generation, LlmProvider, Message, Result, RunContext, RunEvent, ToolOutput, ToolSpec,
};
use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::common::{emit_step, finish, pattern_span};

const PATTERN: &str = "swarm";

/// The prefix of handoff tools: `transfer_to_<agent>`.
const TRANSFER_PREFIX: &str = "transfer_to_";

/// Variables shared by the agents of a [`Swarm`] and their tools. Cloning shares them.
///
/// Every agent sees them in its system prompt; tools read and update them by capturing a clone
/// (see [`Swarm::variables`]).
#[derive(Debug, Clone, Default)]
pub struct ContextVariables {
    inner: Arc<Mutex<Map<String, Value>>>,
}

impl ContextVariables {
    /// No variables.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Start with these variables.
    #[must_use]
    pub fn with(self, key: impl Into<String>, value: Value) -> Self {
        self.set(key, value);
        self
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Value> {
        self.inner.lock().ok().and_then(|m| m.get(key).cloned())
    }

    /// Set `key`.
    pub fn set(&self, key: impl Into<String>, value: Value) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(key.into(), value);
        }
    }

    /// Remove `key`, returning its value.
    pub fn remove(&self, key: &str) -> Option<Value> {
        self.inner.lock().ok().and_then(|mut m| m.remove(key))
    }

    /// A copy of every variable.
    #[must_use]
    pub fn snapshot(&self) -> Map<String, Value> {
        self.inner.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// One agent of a [`Swarm`]: an [`Agent`], the provider it runs on (any: the swarm is
/// model-agnostic) and the agents it may hand off to.
#[derive(Clone)]
#[non_exhaustive]
pub struct SwarmMember {
    /// The agent (name, instruction, tools).
    pub agent: Agent,
    /// Its provider.
    pub provider: Arc<dyn LlmProvider>,
    /// Model id (default: the provider's).
    pub model: Option<String>,
    /// Names of the agents it may transfer to.
    pub handoffs: Vec<String>,
}

impl fmt::Debug for SwarmMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmMember")
            .field("agent", &self.agent.name)
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .field("handoffs", &self.handoffs)
            .finish()
    }
}

impl SwarmMember {
    /// A member running `agent` on `provider`.
    pub fn new(agent: Agent, provider: Arc<dyn LlmProvider>) -> Self {
        Self {
            agent,
            provider,
            model: None,
            handoffs: Vec::new(),
        }
    }

    /// Let it transfer the conversation to `agent`.
    #[must_use]
    pub fn with_handoff(mut self, agent: impl Into<String>) -> Self {
        self.handoffs.push(agent.into());
        self
    }

    /// Use this model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
}

/// The full result of a [`Swarm`] run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SwarmOutcome {
    /// The messages of this run and the final answer, with usage.
    pub generation: Generation,
    /// The agent that had the conversation at the end.
    pub final_agent: String,
    /// Every handoff of this run, `(from, to)`, in order.
    pub handoffs: Vec<(String, String)>,
    /// The context variables at the end.
    pub variables: Map<String, Value>,
}

type DoneFn = dyn Fn(&ContextVariables, &Message) -> bool + Send + Sync;

#[derive(Debug, Default)]
struct State {
    active: Option<usize>,
    history: Vec<Message>,
}

/// Agents that hand the conversation to each other through `transfer_to_<agent>` tool calls,
/// sharing [`ContextVariables`].
///
/// The active agent answers; when it calls a transfer tool, the next model turn is the target
/// agent's, with the same conversation. The run ends when the active agent answers without a
/// tool call, or when the done condition holds after a turn. `max_handoffs` and `max_turns`
/// bound it. The conversation and the active agent carry over to the next `generate` (unless
/// the request sets `use_history: false`), so create one swarm per conversation.
#[derive(Clone)]
pub struct Swarm {
    name: String,
    description: String,
    members: Vec<SwarmMember>,
    start: usize,
    variables: ContextVariables,
    done: Option<Arc<DoneFn>>,
    max_handoffs: u32,
    max_turns: u32,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swarm")
            .field("name", &self.name)
            .field("members", &self.members)
            .field(
                "start",
                &self.members.get(self.start).map(|m| &m.agent.name),
            )
            .field("max_handoffs", &self.max_handoffs)
            .field("max_turns", &self.max_turns)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Swarm`].
#[derive(Clone)]
#[must_use]
pub struct SwarmBuilder {
    name: String,
    description: String,
    members: Vec<SwarmMember>,
    start: Option<String>,
    variables: ContextVariables,
    done: Option<Arc<DoneFn>>,
    max_handoffs: u32,
    max_turns: u32,
}

impl fmt::Debug for SwarmBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmBuilder")
            .field("name", &self.name)
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl Swarm {
    /// Start building a swarm named `name`.
    pub fn builder(name: impl Into<String>) -> SwarmBuilder {
        SwarmBuilder::new(name)
    }

    /// The shared context variables (clone it into tools that read or update them).
    #[must_use]
    pub fn variables(&self) -> &ContextVariables {
        &self.variables
    }

    /// The agent that has the conversation now.
    #[must_use]
    pub fn active_agent(&self) -> String {
        let i = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.active)
            .unwrap_or(self.start);
        self.members
            .get(i)
            .map(|m| m.agent.name.clone())
            .unwrap_or_default()
    }
}

impl SwarmBuilder {
    /// No members yet; at most 10 handoffs and 30 model turns per run.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            members: Vec::new(),
            start: None,
            variables: ContextVariables::new(),
            done: None,
            max_handoffs: 10,
            max_turns: 30,
        }
    }

    /// Add a member. The first member starts unless [`with_start`](Self::with_start) says
    /// otherwise.
    pub fn with_member(mut self, member: SwarmMember) -> Self {
        self.members.push(member);
        self
    }

    /// Start conversations with this agent.
    pub fn with_start(mut self, agent: impl Into<String>) -> Self {
        self.start = Some(agent.into());
        self
    }

    /// Share these variables (keep a clone to give to tools).
    pub fn with_variables(mut self, variables: ContextVariables) -> Self {
        self.variables = variables;
        self
    }

    /// End the run after any turn where `done(variables, last_message)` is true.
    pub fn with_done(
        mut self,
        done: impl Fn(&ContextVariables, &Message) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.done = Some(Arc::new(done));
        self
    }

    /// At most `n` handoffs per run; one more fails the run.
    pub fn with_max_handoffs(mut self, n: u32) -> Self {
        self.max_handoffs = n;
        self
    }

    /// At most `n` model calls per run (at least 1); one more fails the run.
    pub fn with_max_turns(mut self, n: u32) -> Self {
        self.max_turns = n.max(1);
        self
    }

    /// Describe the swarm (shown when it is a route or a worker).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Finish. Fails when there is no member, two members share a name, a handoff names an
    /// unknown agent, or the start agent is unknown.
    pub fn build(self) -> Result<Swarm> {
        let name = &self.name;
        if self.members.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "swarm `{name}` has no agents; add some with `with_member`"
            )));
        }
        let names: Vec<&str> = self.members.iter().map(|m| m.agent.name.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(Error::InvalidRequest(format!(
                    "swarm `{name}` has two agents named `{n}`"
                )));
            }
        }
        for m in &self.members {
            for h in &m.handoffs {
                if !names.contains(&h.as_str()) {
                    return Err(Error::InvalidRequest(format!(
                        "swarm `{name}`: agent `{}` hands off to `{h}`, which is not in the swarm \
                         (agents: {})",
                        m.agent.name,
                        names.join(", ")
                    )));
                }
            }
        }
        let start = match &self.start {
            None => 0,
            Some(s) => names.iter().position(|n| n == s).ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "swarm `{name}` starts with `{s}`, which is not in the swarm (agents: {})",
                    names.join(", ")
                ))
            })?,
        };
        Ok(Swarm {
            name: self.name,
            description: self.description,
            members: self.members,
            start,
            variables: self.variables,
            done: self.done,
            max_handoffs: self.max_handoffs,
            max_turns: self.max_turns,
            state: Arc::default(),
        })
    }
}

fn transfer_tool_name(agent: &str) -> String {
    agentkit_core::schema::sanitize_name(&format!("{TRANSFER_PREFIX}{agent}"))
}

enum ToolRoute {
    Source(usize),
    Transfer(usize),
}

impl Swarm {
    /// Run and return the answer with the handoffs and the final variables.
    pub async fn run_swarm(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<SwarmOutcome> {
        let scope = ctx.scoped();
        let mut outcome = self
            .run(request.into(), &scope)
            .instrument(pattern_span(PATTERN, &self.name))
            .await?;
        outcome.generation = finish(&scope, outcome.generation);
        Ok(outcome)
    }

    async fn tools_of(
        &self,
        member: &SwarmMember,
    ) -> Result<(Vec<ToolSpec>, HashMap<String, ToolRoute>)> {
        let mut specs = Vec::new();
        let mut routes = HashMap::new();
        for (i, source) in member.agent.tools.iter().enumerate() {
            for spec in source.list_tools().await? {
                if routes.contains_key(&spec.name) {
                    continue;
                }
                routes.insert(spec.name.clone(), ToolRoute::Source(i));
                specs.push(spec);
            }
        }
        for h in &member.handoffs {
            let Some(target) = self.members.iter().position(|m| &m.agent.name == h) else {
                continue;
            };
            let t = &self.members[target].agent;
            let tool = transfer_tool_name(&t.name);
            let what = if t.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.description)
            };
            specs.push(ToolSpec::new(
                tool.clone(),
                format!(
                    "Transfer the conversation to the `{}` agent{what}. Call it when that agent is \
                     better placed to help.",
                    t.name
                ),
                json!({"type": "object", "properties": {}}),
            ));
            routes.insert(tool, ToolRoute::Transfer(target));
        }
        Ok((specs, routes))
    }

    async fn complete(
        &self,
        member: &SwarmMember,
        request: CompletionRequest,
        iteration: u32,
        ctx: &RunContext,
    ) -> Result<CompletionResponse> {
        let agent = &member.agent.name;
        let provider = member.provider.name().to_owned();
        let model = request
            .model
            .clone()
            .or_else(|| member.provider.default_model().map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned());
        ctx.emit(RunEvent::LlmRequest {
            agent: agent.clone(),
            provider: provider.clone(),
            model: model.clone(),
            iteration,
            messages: request.messages.len(),
            tools: request.tools.len(),
        });
        let key = format!("{}/{agent}/llm/{}", self.name, ctx.next_step());
        let started = Instant::now();
        let what = format!("model call of agent `{agent}` in swarm `{}`", self.name);
        let response: CompletionResponse = ctx
            .step(&key, ctx.guard(&what, member.provider.complete(request)))
            .instrument(tracing::info_span!(
                "chat",
                otel.name = %format!("chat {model}"),
                gen_ai.operation.name = "chat",
                gen_ai.provider.name = %provider,
                gen_ai.request.model = %model,
                gen_ai.agent.name = %agent,
            ))
            .await?;
        let cost = ctx.prices().cost(&response.model, &response.usage);
        ctx.record_llm_usage(response.usage, cost);
        ctx.emit(RunEvent::LlmResponse {
            agent: agent.clone(),
            provider,
            model: response.model.clone(),
            usage: response.usage,
            cost_usd: cost,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            stop_reason: response.stop_reason.clone(),
            replayed: false,
        });
        Ok(response)
    }

    async fn call_tool(
        &self,
        member: &SwarmMember,
        routes: &HashMap<String, ToolRoute>,
        (id, name, arguments): (String, String, Value),
        ctx: &RunContext,
    ) -> Result<(Content, Option<usize>)> {
        let agent = &member.agent.name;
        ctx.emit(RunEvent::ToolCallStarted {
            agent: agent.clone(),
            call_id: id.clone(),
            tool: name.clone(),
            arguments: arguments.clone(),
        });
        let started = Instant::now();
        let (output, transfer) = match routes.get(&name) {
            Some(ToolRoute::Transfer(target)) => (
                ToolOutput::text(format!(
                    "Transferred to `{}`. That agent now continues the conversation.",
                    self.members[*target].agent.name
                )),
                Some(*target),
            ),
            Some(ToolRoute::Source(i)) => {
                ctx.check()?;
                ctx.record_tool_call();
                let key = format!("{}/{agent}/tool/{}/{id}", self.name, ctx.next_step());
                let source = &member.agent.tools[*i];
                let out = ctx
                    .step(&key, async {
                        match source.call_tool(&name, arguments, ctx).await {
                            Ok(o) => Ok(o),
                            Err(e) if e.is_fatal_for_run() => Err(e),
                            Err(e) => Ok(ToolOutput::error(format!("error: {e}"))),
                        }
                    })
                    .await?;
                (out, None)
            }
            None => {
                let mut available: Vec<&String> = routes.keys().collect();
                available.sort();
                (
                    ToolOutput::error(format!(
                        "there is no tool named `{name}`; available tools: {available:?}"
                    )),
                    None,
                )
            }
        };
        ctx.emit(RunEvent::ToolCallFinished {
            agent: agent.clone(),
            call_id: id.clone(),
            tool: name,
            is_error: output.is_error,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        Ok((
            Content::tool_result(id, output.content, output.is_error),
            transfer,
        ))
    }

    async fn run(&self, request: GenerateRequest, ctx: &RunContext) -> Result<SwarmOutcome> {
        let use_history = request.params.use_history.unwrap_or(true);
        let (mut active, mut conversation) = match (use_history, self.state.lock()) {
            (true, Ok(s)) => (s.active.unwrap_or(self.start), s.history.clone()),
            _ => (self.start, Vec::new()),
        };
        conversation.extend(request.messages.iter().cloned());
        let mut produced: Vec<Message> = Vec::new();
        let mut handoffs: Vec<(String, String)> = Vec::new();
        let mut turn: u32 = 0;
        let last = loop {
            ctx.check()?;
            if turn >= self.max_turns {
                return Err(Error::InvalidRequest(format!(
                    "swarm `{}` made {} model calls without finishing (agent `{}` was active); \
                     raise `with_max_turns` or tell the agents when to stop",
                    self.name, self.max_turns, self.members[active].agent.name
                )));
            }
            let member = &self.members[active];
            let (tools, routes) = self.tools_of(member).await?;
            let mut system = member.agent.instruction.resolve(ctx);
            let vars = self.variables.snapshot();
            if !vars.is_empty() {
                system.push_str(&format!(
                    "\n\nShared context variables: {}",
                    Value::Object(vars)
                ));
            }
            let mut req = CompletionRequest::new(conversation.clone())
                .with_system(system)
                .with_tools(tools);
            req.model = member.model.clone();
            req.temperature = request.params.temperature;
            req.max_tokens = request.params.max_tokens;
            req.parallel_tool_calls = request.params.parallel_tool_calls;
            let response = self.complete(member, req, turn, ctx).await?;
            turn += 1;
            conversation.push(response.message.clone());
            produced.push(response.message.clone());
            let calls: Vec<(String, String, Value)> = response
                .message
                .tool_calls()
                .map(|(id, n, a)| (id.to_owned(), n.to_owned(), a.clone()))
                .collect();
            let final_message = response.message.clone();
            if calls.is_empty() {
                break response;
            }
            let results = futures::future::try_join_all(
                calls
                    .into_iter()
                    .map(|c| self.call_tool(member, &routes, c, ctx)),
            )
            .await?;
            let mut target = None;
            let mut contents = Vec::new();
            for (content, transfer) in results {
                contents.push(content);
                if transfer.is_some() {
                    target = transfer;
                }
            }
            let msg = Message::tool_results(contents);
            conversation.push(msg.clone());
            produced.push(msg);
            if let Some(t) = target {
                let from = member.agent.name.clone();
                let to = self.members[t].agent.name.clone();
                if handoffs.len() >= self.max_handoffs as usize {
                    return Err(Error::InvalidRequest(format!(
                        "swarm `{}` exceeded its {} handoffs (last: `{from}` → `{to}`); raise \
                         `with_max_handoffs` or check the agents' instructions for a loop",
                        self.name, self.max_handoffs
                    )));
                }
                emit_step(
                    ctx,
                    PATTERN,
                    &self.name,
                    "handoff",
                    json!({"from": from, "to": to}),
                );
                handoffs.push((from, to));
                active = t;
            }
            if self
                .done
                .as_ref()
                .is_some_and(|d| d(&self.variables, &final_message))
            {
                emit_step(
                    ctx,
                    PATTERN,
                    &self.name,
                    "done_condition",
                    json!({"agent": self.members[active].agent.name}),
                );
                break response;
            }
        };
        if use_history && let Ok(mut s) = self.state.lock() {
            s.active = Some(active);
            s.history = conversation;
        }
        let final_agent = self.members[active].agent.name.clone();
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "finished",
            json!({"agent": final_agent, "handoffs": handoffs.len(), "turns": turn}),
        );
        let (stop_reason, model) = (last.stop_reason, last.model);
        let mut generation = Generation::default();
        generation.messages = produced;
        generation.stop_reason = stop_reason;
        generation.model = model;
        Ok(SwarmOutcome {
            generation,
            final_agent,
            handoffs,
            variables: self.variables.snapshot(),
        })
    }
}

#[async_trait]
impl AugmentedLlm for Swarm {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        Ok(self.run_swarm(request, ctx).await?.generation)
    }
}
