//! [`AgentsAsTools`]: offer agents to a parent agent as `agent__<name>` tools.

use std::fmt;
use std::sync::Arc;

use agentkit_core::{
    AgentTool, AugmentedLlm, Error, Result, RunContext, ToolOutput, ToolSource, ToolSpec,
};
use async_trait::async_trait;
use serde_json::Value;

/// The prefix of the tool names: `agent__<name>`.
pub const AGENT_TOOL_PREFIX: &str = "agent__";

/// A [`ToolSource`] offering each of a set of agents (or patterns) as a tool named
/// `agent__<name>`, input `{"message": string}`, output the agent's answer. Give it to a parent
/// agent with [`Agent::with_tool`](agentkit_core::Agent::with_tool): when the model asks for
/// several agents at once, the parent's tool loop calls them concurrently.
///
/// ```
/// use agentkit_core::{Agent, AgentLlm, AugmentedLlmExt, RunContext, ScriptedProvider};
/// use agentkit_patterns::{AgentsAsTools, FnLlm};
/// use std::sync::Arc;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let tools = AgentsAsTools::new(vec![
///     Arc::new(FnLlm::new("translator", |t: String, _| async move { Ok(format!("«{t}» in French")) })),
/// ])?;
/// let parent = AgentLlm::new(
///     Agent::new("parent", "Delegate.").with_tool(tools),
///     ScriptedProvider::new()
///         .then_tool_call("agent__translator", serde_json::json!({"message": "hello"}))
///         .then_text("Bonjour."),
/// );
/// assert_eq!(parent.generate_str("Say hello in French", &RunContext::new()).await?, "Bonjour.");
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct AgentsAsTools {
    tools: Vec<(String, AgentTool)>,
}

impl fmt::Debug for AgentsAsTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentsAsTools")
            .field(
                "tools",
                &self.tools.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl AgentsAsTools {
    /// Offer these agents. Fails when there is none or two get the same tool name.
    pub fn new(agents: Vec<Arc<dyn AugmentedLlm>>) -> Result<Self> {
        if agents.is_empty() {
            return Err(Error::InvalidRequest(
                "AgentsAsTools needs at least one agent".to_owned(),
            ));
        }
        let mut tools: Vec<(String, AgentTool)> = Vec::new();
        for a in agents {
            let name =
                agentkit_core::schema::sanitize_name(&format!("{AGENT_TOOL_PREFIX}{}", a.name()));
            if tools.iter().any(|(n, _)| *n == name) {
                return Err(Error::InvalidRequest(format!(
                    "two agents are offered as the same tool `{name}`; give them distinct names"
                )));
            }
            let tool = AgentTool::new(a).with_name(name.clone());
            tools.push((name, tool));
        }
        Ok(Self { tools })
    }

    /// The tool names, in order.
    #[must_use]
    pub fn tool_names(&self) -> Vec<&str> {
        self.tools.iter().map(|(n, _)| n.as_str()).collect()
    }
}

#[async_trait]
impl ToolSource for AgentsAsTools {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        let mut out = Vec::with_capacity(self.tools.len());
        for (_, t) in &self.tools {
            out.extend(t.list_tools().await?);
        }
        Ok(out)
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        ctx: &RunContext,
    ) -> Result<ToolOutput> {
        match self.tools.iter().find(|(n, _)| n == name) {
            Some((_, t)) => t.call_tool(name, arguments, ctx).await,
            None => Err(Error::ToolNotFound {
                tool: name.to_owned(),
                available: self.tools.iter().map(|(n, _)| n.clone()).collect(),
            }),
        }
    }
}
