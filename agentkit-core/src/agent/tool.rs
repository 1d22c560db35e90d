//! [`AgentTool`]: any [`AugmentedLlm`] offered as a tool of other agents.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::llm::{AugmentedLlm, GenerateRequest, RequestParams};
use crate::message::{Content, Message, Role};
use crate::tool::{ToolOutput, ToolSource, ToolSpec};

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
