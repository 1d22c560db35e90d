//! [`Agent`] (name, instruction, tools) and [`AgentLlm`] (an agent bound to a provider and a
//! memory): the tool-calling loop, which every pattern that runs tools goes through.
//!
//! - `llm.rs`: [`AgentLlm`], the loop and its single [`Turn`]s;
//! - `dispatch.rs`: routing a tool call to the agent's sources (and the human-input tool);
//! - `tool.rs`: [`AgentTool`], any [`AugmentedLlm`](crate::AugmentedLlm) offered as a tool;
//! - `fingerprint.rs`: the request fingerprint that lets a replay notice changed requests.

use std::fmt;
use std::sync::Arc;

use crate::context::{HumanInputHandler, RunContext};
use crate::tool::ToolSource;

mod dispatch;
mod fingerprint;
mod llm;
mod tool;

pub use llm::{AgentLlm, Turn};
pub use tool::AgentTool;

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
