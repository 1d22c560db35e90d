//! The registered targets (agents and workflows) and how each one executes.

use std::sync::Arc;

use agentkit_core::{AugmentedLlm, GenerateRequest, GenerationEvent, WorkflowInfo};
use agentkit_core::{Error, Result};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{Runtime, TargetOptions};
use crate::live::{LiveDelta, LiveDeltas};
use crate::sync::{read, write};
use crate::workflow::{DynWorkflow, Erased, Workflow, WorkflowContext};

/// Builds a fresh agent for each run (agents keep conversation memory, runs must not share it).
pub type AgentFactory = Arc<dyn Fn() -> Arc<dyn AugmentedLlm> + Send + Sync>;

/// Builds the agent (or composed workflow) of one version of a target: how a registry with
/// immutable versions plugs into the runtime ([`Runtime::register_resolved_agent`]). A run
/// records the version it was started with and is resolved with it on every node and every
/// resume, so moving a label never changes a run in flight.
#[async_trait::async_trait]
pub trait AgentResolver: Send + Sync + 'static {
    /// The agent of `version` of `target`. Called once per execution of a run (a resolver
    /// should cache what it builds); an error fails the attempt like any other.
    async fn resolve(&self, target: &str, version: u32) -> Result<Arc<dyn AugmentedLlm>>;
}

pub(super) enum Kind {
    Agent(AgentFactory),
    Resolved(Arc<dyn AgentResolver>),
    Workflow(Arc<dyn DynWorkflow>),
}

pub(super) struct Target {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) options: TargetOptions,
    pub(super) permits: Arc<Semaphore>,
}

/// The message of an agent run's input, and the conversation thread it continues, if any.
fn agent_message(target: &str, input: &Value) -> Result<(String, Option<String>)> {
    let bad = || {
        Error::InvalidRequest(format!(
            "input of agent `{target}` must be a string or {{\"message\": string, \"thread\"?: \
             string}}"
        ))
    };
    match input {
        Value::String(s) => Ok((s.clone(), None)),
        Value::Object(m) => {
            let Some(Value::String(message)) = m.get("message") else {
                return Err(bad());
            };
            let thread = match m.get("thread") {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
                Some(_) => return Err(bad()),
            };
            Ok((message.clone(), thread))
        }
        _ => Err(bad()),
    }
}

impl Target {
    pub(super) fn validate(&self, input: &Value) -> Result<()> {
        match &self.kind {
            Kind::Agent(_) | Kind::Resolved(_) => agent_message(&self.name, input).map(|_| ()),
            Kind::Workflow(w) => w.validate(input),
        }
    }

    pub(super) fn info(&self) -> WorkflowInfo {
        let (schema, description) = match &self.kind {
            Kind::Agent(_) | Kind::Resolved(_) => (
                json!({"type": "object", "properties": {"message": {"type": "string"}, "thread": {"type": "string", "description": "Continue this conversation thread"}}, "required": ["message"]}),
                self.options.description.clone(),
            ),
            Kind::Workflow(w) => {
                let d = if self.options.description.is_empty() {
                    w.description()
                } else {
                    self.options.description.clone()
                };
                (w.input_schema(), d)
            }
        };
        WorkflowInfo::new(&self.name, description, schema)
    }

    pub(super) async fn execute(
        &self,
        ctx: &WorkflowContext,
        input: Value,
        version: u32,
        live: Option<&Arc<LiveDeltas>>,
    ) -> Result<Value> {
        let agent = match &self.kind {
            Kind::Agent(factory) => factory(),
            Kind::Resolved(resolver) => resolver.resolve(&self.name, version).await?,
            Kind::Workflow(w) => return w.run_json(ctx, input).await,
        };
        let (message, thread) = agent_message(&self.name, &input)?;
        let mut request = GenerateRequest::from(message);
        // The context carries signal-backed human-input and approval handlers. A run on
        // a thread continues its conversation; any other run stands alone (runs of one
        // agent never share a conversation by accident).
        let run_ctx = match thread {
            Some(t) => ctx.run_context().clone().with_thread(t),
            None => {
                request.params.use_history = Some(false);
                ctx.run_context().clone()
            }
        };
        let generation = match live {
            None => agent.generate(request, &run_ctx).await?,
            Some(live) => {
                // Streamed, so listeners of the run get its text as it is produced; its model
                // calls stream from the provider only while someone listens.
                let publisher = live.publish(ctx.run_id());
                let run_ctx = run_ctx.with_stream_demand(publisher.demand());
                let mut stream = agent.generate_stream(request, &run_ctx);
                let mut done = None;
                while let Some(event) = stream.next().await {
                    match event? {
                        GenerationEvent::TextDelta { agent, text } => {
                            publisher.send(LiveDelta::new(agent, text));
                        }
                        GenerationEvent::Done(g) => {
                            done = Some(g);
                            break;
                        }
                        _ => {}
                    }
                }
                done.ok_or_else(|| Error::InvalidState {
                    what: format!("the streamed run of agent `{}`", self.name),
                    message: "the stream ended without its final generation".to_owned(),
                })?
            }
        };
        Ok(json!({"text": generation.text()}))
    }
}

impl Runtime {
    pub(super) fn insert(&self, target: Target) {
        write(&self.inner.targets).insert(target.name.clone(), Arc::new(target));
    }

    /// Register an agent target: `factory` builds the agent of each run (a fresh one, or a
    /// shared one). Input is a string or `{"message": string, "thread"?: string}`; output is
    /// `{"text": string}`. A run with a `thread` continues that conversation in the agent's
    /// memory (give the agents a persistent [`StoreMemory`](crate::StoreMemory) to keep threads
    /// across processes); a run without one neither reads nor writes history.
    pub fn register_agent(
        &self,
        name: impl Into<String>,
        factory: impl Fn() -> Arc<dyn AugmentedLlm> + Send + Sync + 'static,
        options: TargetOptions,
    ) {
        let permits = Arc::new(Semaphore::new(
            options.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
        ));
        self.insert(Target {
            name: name.into(),
            kind: Kind::Agent(Arc::new(factory)),
            options,
            permits,
        });
    }

    /// Register `name` as an agent whose every version is built by `resolver`: a run executes
    /// the version it was started with ([`StartOptions::with_version`](agentkit_core::StartOptions::with_version),
    /// default `options.version`). Input and output are those of
    /// [`register_agent`](Runtime::register_agent).
    pub fn register_resolved_agent(
        &self,
        name: impl Into<String>,
        resolver: Arc<dyn AgentResolver>,
        options: TargetOptions,
    ) {
        let permits = Arc::new(Semaphore::new(
            options.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
        ));
        self.insert(Target {
            name: name.into(),
            kind: Kind::Resolved(resolver),
            options,
            permits,
        });
    }

    /// Register a code-defined workflow under its name.
    pub fn register_workflow<W: Workflow>(&self, workflow: W, options: TargetOptions) {
        let permits = Arc::new(Semaphore::new(
            options.max_concurrency.unwrap_or(Semaphore::MAX_PERMITS),
        ));
        self.insert(Target {
            name: workflow.name().to_owned(),
            kind: Kind::Workflow(Arc::new(Erased(workflow))),
            options,
            permits,
        });
    }

    pub(super) fn target(&self, name: &str) -> Option<Arc<Target>> {
        read(&self.inner.targets).get(name).cloned()
    }

    pub(super) fn unknown_target(&self, name: &str) -> Error {
        let mut known: Vec<String> = read(&self.inner.targets).keys().cloned().collect();
        known.sort();
        Error::not_found(
            "agent or workflow",
            name,
            format!(
                "registered: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    }
}
