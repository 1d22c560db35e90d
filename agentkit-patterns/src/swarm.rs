//! [`Swarm`]: agents hand the conversation to each other through tool calls.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use agentkit_core::memory::{self, InMemoryMemory, Memory};
use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, Content, Error, GenerateRequest, Generation, GenerationEmitter,
    GenerationStream, LlmProvider, Message, Result, Role, RunContext, ToolLayer, ToolOutput,
    ToolSource, ToolSpec, stream_generation,
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

    fn lock(&self) -> MutexGuard<'_, Map<String, Value>> {
        // Every update is one map operation, so a panic elsewhere leaves the map consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Value> {
        self.lock().get(key).cloned()
    }

    /// Set `key`.
    pub fn set(&self, key: impl Into<String>, value: Value) {
        self.lock().insert(key.into(), value);
    }

    /// Remove `key`, returning its value.
    pub fn remove(&self, key: &str) -> Option<Value> {
        self.lock().remove(key)
    }

    /// A copy of every variable.
    #[must_use]
    pub fn snapshot(&self) -> Map<String, Value> {
        self.lock().clone()
    }
}

/// One agent of a [`Swarm`]: an [`AgentLlm`] (agent + provider + tool layers; the swarm is
/// model-agnostic, each member may run on another provider) and the agents it may hand off to.
///
/// Members run their model calls and tools through [`AgentLlm::turn`], the same journaled model
/// step and tool-call service stack as a plain agent: every tool layer of the member
/// ([`with_tool_layer`](Self::with_tool_layer), [`SwarmBuilder::with_tool_layer`]) —
/// approvals, timeouts, governance — applies to its tools and its handoffs.
#[derive(Clone)]
#[non_exhaustive]
pub struct SwarmMember {
    /// The agent bound to its provider.
    pub llm: AgentLlm,
    /// Model id (default: the provider's).
    pub model: Option<String>,
    /// Names of the agents it may transfer to.
    pub handoffs: Vec<String>,
}

impl fmt::Debug for SwarmMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwarmMember")
            .field("agent", &self.llm.agent().name)
            .field("provider", &self.llm.provider().name())
            .field("model", &self.model)
            .field("handoffs", &self.handoffs)
            .finish()
    }
}

impl SwarmMember {
    /// A member running `agent` on `provider`.
    pub fn new(agent: Agent, provider: Arc<dyn LlmProvider>) -> Self {
        Self::from_llm(AgentLlm::shared(agent, provider))
    }

    /// A member from an agent already bound to its provider (with its tool layers).
    pub fn from_llm(llm: AgentLlm) -> Self {
        Self {
            llm,
            model: None,
            handoffs: Vec::new(),
        }
    }

    /// The member's agent.
    #[must_use]
    pub fn agent(&self) -> &Agent {
        self.llm.agent()
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

    /// Wrap this member's tool calls (handoffs included) in a tower layer, as
    /// [`AgentLlm::with_tool_layer`] does.
    #[must_use]
    pub fn with_tool_layer(mut self, layer: impl ToolLayer) -> Self {
        self.llm = self.llm.with_tool_layer(layer);
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

/// Agents that hand the conversation to each other through `transfer_to_<agent>` tool calls,
/// sharing [`ContextVariables`].
///
/// The active agent answers; when it calls a transfer tool (and the call is not refused by a
/// tool layer), the next model turn is the target agent's, with the same conversation. The run
/// ends when the active agent answers without a tool call, or when the done condition holds
/// after a turn. `max_handoffs` and `max_turns` bound it.
///
/// The conversation carries over to the next `generate` on the same thread
/// ([`RunContext::with_thread`]; unless the request sets `use_history: false`), and the next
/// turn starts with the agent that had it last. Threads are kept in the swarm's [`Memory`]
/// (bounded, in process by default; see [`SwarmBuilder::with_memory`]), so callers on different
/// threads never share a conversation.
///
/// Streamed ([`generate_stream`](AugmentedLlm::generate_stream)), the swarm streams every model
/// turn of whichever agent is active, handoffs included; deltas carry the agent's name.
#[derive(Clone)]
pub struct Swarm {
    name: String,
    description: String,
    /// Each member's agent with its handoff tools added.
    members: Vec<SwarmMember>,
    /// Transfer tool name → member index.
    transfers: Arc<HashMap<String, usize>>,
    start: usize,
    variables: ContextVariables,
    done: Option<Arc<DoneFn>>,
    max_handoffs: u32,
    max_turns: u32,
    memory: Arc<dyn Memory>,
}

impl fmt::Debug for Swarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swarm")
            .field("name", &self.name)
            .field("members", &self.members)
            .field(
                "start",
                &self.members.get(self.start).map(|m| &m.agent().name),
            )
            .field("max_handoffs", &self.max_handoffs)
            .field("max_turns", &self.max_turns)
            .finish_non_exhaustive()
    }
}

type LayerFn = dyn Fn(SwarmMember) -> SwarmMember + Send + Sync;

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
    memory: Option<Arc<dyn Memory>>,
    layers: Vec<Arc<LayerFn>>,
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

    /// The agent that has the conversation of `ctx`'s thread now (the start agent for a new
    /// thread).
    pub async fn active_agent(&self, ctx: &RunContext) -> Result<String> {
        let history = self.memory.load(ctx.thread_or_default()).await?;
        Ok(self.members[self.active_after(&history)]
            .agent()
            .name
            .clone())
    }

    /// The member that has the conversation after `history`: the target of the last transfer
    /// that went through (a refused transfer is a tool error and does not count).
    fn active_after(&self, history: &[Message]) -> usize {
        let mut active = self.start;
        let mut pending: HashMap<&str, usize> = HashMap::new();
        for m in history {
            match m.role {
                Role::Assistant => {
                    pending.clear();
                    for (id, name, _) in m.tool_calls() {
                        if let Some(t) = self.transfers.get(name) {
                            pending.insert(id, *t);
                        }
                    }
                }
                Role::Tool => {
                    for c in &m.content {
                        if let Content::ToolResult {
                            call_id,
                            is_error: false,
                            ..
                        } = c
                            && let Some(t) = pending.get(call_id.as_str())
                        {
                            active = *t;
                        }
                    }
                }
                _ => {}
            }
        }
        active
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
            memory: None,
            layers: Vec::new(),
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

    /// Keep conversation threads in this memory (default: an in-process
    /// [`InMemoryMemory`] with its bounded window and thread count).
    pub fn with_memory(mut self, memory: Arc<dyn Memory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// Wrap the tool calls of every member (added before or after) in a tower layer:
    /// approvals, timeouts, governance apply to every agent of the swarm.
    pub fn with_tool_layer(mut self, layer: impl ToolLayer + Clone) -> Self {
        self.layers.push(Arc::new(move |m: SwarmMember| {
            m.with_tool_layer(layer.clone())
        }));
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
        let names: Vec<String> = self
            .members
            .iter()
            .map(|m| m.agent().name.clone())
            .collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(Error::InvalidRequest(format!(
                    "swarm `{name}` has two agents named `{n}`"
                )));
            }
        }
        for m in &self.members {
            for h in &m.handoffs {
                if !names.contains(h) {
                    return Err(Error::InvalidRequest(format!(
                        "swarm `{name}`: agent `{}` hands off to `{h}`, which is not in the swarm \
                         (agents: {})",
                        m.agent().name,
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
        let transfers: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (transfer_tool_name(n), i))
            .collect();
        let members = self
            .members
            .iter()
            .map(|m| {
                let handoffs = Handoffs::new(&self.members, &m.handoffs);
                let mut member = m.clone();
                if !handoffs.specs.is_empty() {
                    member.llm = member.llm.with_extra_tools(Arc::new(handoffs));
                }
                self.layers.iter().fold(member, |m, layer| layer(m))
            })
            .collect();
        Ok(Swarm {
            name: self.name,
            description: self.description,
            members,
            transfers: Arc::new(transfers),
            start,
            variables: self.variables,
            done: self.done,
            max_handoffs: self.max_handoffs,
            max_turns: self.max_turns,
            memory: self
                .memory
                .unwrap_or_else(|| Arc::new(InMemoryMemory::new())),
        })
    }
}

fn transfer_tool_name(agent: &str) -> String {
    agentkit_core::schema::sanitize_name(&format!("{TRANSFER_PREFIX}{agent}"))
}

/// A member's `transfer_to_<agent>` tools. Calling one only answers that the conversation was
/// transferred; the swarm reads the transfer from the (journaled) tool call and its result.
struct Handoffs {
    specs: Vec<ToolSpec>,
    /// Tool name → target agent name.
    targets: HashMap<String, String>,
}

impl Handoffs {
    fn new(members: &[SwarmMember], handoffs: &[String]) -> Self {
        let mut specs = Vec::new();
        let mut targets = HashMap::new();
        for h in handoffs {
            let Some(t) = members.iter().find(|m| &m.agent().name == h) else {
                continue;
            };
            let t = t.agent();
            let tool = transfer_tool_name(&t.name);
            if targets.contains_key(&tool) {
                continue;
            }
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
            targets.insert(tool, t.name.clone());
        }
        Self { specs, targets }
    }
}

#[async_trait]
impl ToolSource for Handoffs {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        Ok(self.specs.clone())
    }

    async fn call_tool(
        &self,
        name: &str,
        _arguments: Value,
        _ctx: &RunContext,
    ) -> Result<ToolOutput> {
        match self.targets.get(name) {
            Some(agent) => Ok(ToolOutput::text(format!(
                "Transferred to `{agent}`. That agent now continues the conversation."
            ))),
            None => {
                let mut available: Vec<String> = self.targets.keys().cloned().collect();
                available.sort();
                Err(Error::ToolNotFound {
                    tool: name.to_owned(),
                    available,
                })
            }
        }
    }
}

impl Swarm {
    /// Run and return the answer with the handoffs and the final variables.
    pub async fn run_swarm(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<SwarmOutcome> {
        self.run_swarm_with(request.into(), ctx, None).await
    }

    async fn run_swarm_with(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<SwarmOutcome> {
        let scope = ctx.scoped();
        let mut outcome = self
            .run(request, &scope, emitter)
            .instrument(pattern_span(PATTERN, &self.name))
            .await?;
        outcome.generation = finish(&scope, outcome.generation);
        Ok(outcome)
    }

    async fn run(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<SwarmOutcome> {
        let use_history = request.params.use_history.unwrap_or(true);
        let mut conversation = if use_history {
            memory::load_history(self.memory.as_ref(), &self.name, ctx).await?
        } else {
            Vec::new()
        };
        let mut active = self.active_after(&conversation);
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
                    self.name,
                    self.max_turns,
                    self.members[active].agent().name
                )));
            }
            let member = &self.members[active];
            let mut params = request.params.clone();
            params.response_format = None;
            if member.model.is_some() {
                params.model.clone_from(&member.model);
            }
            let vars = self.variables.snapshot();
            if !vars.is_empty() {
                let shared = format!("Shared context variables: {}", Value::Object(vars));
                params.system_suffix = Some(match params.system_suffix.take() {
                    Some(s) => format!("{s}\n\n{shared}"),
                    None => shared,
                });
            }
            let step = match emitter {
                Some(e) => {
                    member
                        .llm
                        .turn_streamed(&conversation, &params, turn, ctx, e)
                        .await?
                }
                None => member.llm.turn(&conversation, &params, turn, ctx).await?,
            };
            turn += 1;
            let final_message = step.response.message.clone();
            conversation.push(final_message.clone());
            produced.push(final_message.clone());
            let Some(results) = step.tool_results.clone() else {
                break step.response;
            };
            // The last transfer that went through (a layer may have refused it).
            let target = final_message
                .tool_calls()
                .filter_map(|(id, name, _)| {
                    let t = *self.transfers.get(name)?;
                    let (_, is_error) = step.tool_result(id)?;
                    (!is_error).then_some(t)
                })
                .last();
            conversation.push(results.clone());
            produced.push(results);
            if let Some(t) = target {
                let from = member.agent().name.clone();
                let to = self.members[t].agent().name.clone();
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
                    json!({"agent": self.members[active].agent().name}),
                );
                break step.response;
            }
        };
        if use_history {
            let mut remember = request.messages;
            remember.extend(produced.iter().cloned());
            memory::remember(self.memory.as_ref(), &self.name, &remember, ctx).await?;
        }
        let final_agent = self.members[active].agent().name.clone();
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

    fn generate_stream<'a>(
        &'a self,
        request: GenerateRequest,
        ctx: &'a RunContext,
    ) -> GenerationStream<'a> {
        stream_generation(move |emitter| async move {
            Ok(self
                .run_swarm_with(request, ctx, Some(&emitter))
                .await?
                .generation)
        })
    }

    async fn end_thread(&self, thread: &str) -> Result<()> {
        self.memory.clear(thread).await
    }
}
