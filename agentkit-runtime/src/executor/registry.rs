//! The registered targets (agents and workflows) and how each one executes.

use std::sync::Arc;

use agentkit_core::{AugmentedLlm, GenerateRequest, WorkflowInfo};
use agentkit_core::{Error, Result};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::{Runtime, TargetOptions};
use crate::sync::{read, write};
use crate::workflow::{DynWorkflow, Erased, Workflow, WorkflowContext};

/// Builds a fresh agent for each run (agents keep conversation memory, runs must not share it).
pub type AgentFactory = Arc<dyn Fn() -> Arc<dyn AugmentedLlm> + Send + Sync>;

pub(super) enum Kind {
    Agent(AgentFactory),
    Workflow(Arc<dyn DynWorkflow>),
}

pub(super) struct Target {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) options: TargetOptions,
    pub(super) permits: Arc<Semaphore>,
}

fn agent_message(target: &str, input: &Value) -> Result<String> {
    match input {
        Value::String(s) => Ok(s.clone()),
        Value::Object(m) => match m.get("message") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(Error::InvalidRequest(format!(
                "input of agent `{target}` must be a string or {{\"message\": string}}"
            ))),
        },
        _ => Err(Error::InvalidRequest(format!(
            "input of agent `{target}` must be a string or {{\"message\": string}}"
        ))),
    }
}

impl Target {
    pub(super) fn validate(&self, input: &Value) -> Result<()> {
        match &self.kind {
            Kind::Agent(_) => agent_message(&self.name, input).map(|_| ()),
            Kind::Workflow(w) => w.validate(input),
        }
    }

    pub(super) fn info(&self) -> WorkflowInfo {
        let (schema, description) = match &self.kind {
            Kind::Agent(_) => (
                json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}),
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

    pub(super) async fn execute(&self, ctx: &WorkflowContext, input: Value) -> Result<Value> {
        match &self.kind {
            Kind::Agent(factory) => {
                let message = agent_message(&self.name, &input)?;
                let agent = factory();
                // The context carries signal-backed human-input and approval handlers.
                let generation = agent
                    .generate(GenerateRequest::from(message), ctx.run_context())
                    .await?;
                Ok(json!({"text": generation.text()}))
            }
            Kind::Workflow(w) => w.run_json(ctx, input).await,
        }
    }
}

impl Runtime {
    pub(super) fn insert(&self, target: Target) {
        write(&self.inner.targets).insert(target.name.clone(), Arc::new(target));
    }

    /// Register an agent target: `factory` builds a fresh agent per run. Input is a string or
    /// `{"message": string}`; output is `{"text": string}`.
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
        Error::InvalidRequest(format!(
            "no agent or workflow named `{name}` is registered; registered: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    }
}
