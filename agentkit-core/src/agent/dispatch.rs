//! Routes a tool call to the agent's tool sources; answers the human-input tool.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tower::Service;

use super::{Agent, HUMAN_INPUT_TOOL};
use crate::context::{HumanInputRequest, HumanInputResponse, RunContext};
use crate::error::{Error, Result};
use crate::event::RunEvent;
use crate::tool::{ToolOutput, ToolRequest};

/// Routes tool calls to the agent's sources, and answers the human-input tool.
#[derive(Clone)]
pub(super) struct Dispatch {
    pub(super) agent: Arc<Agent>,
    pub(super) routes: Arc<HashMap<String, usize>>,
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
