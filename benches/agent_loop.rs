//! One agent turn with a tool call: `AgentLlm` vs the same work by hand.
//!
//! Both sides call the same `ScriptedProvider` twice (tool call, then answer) and run the same
//! `FnTool` once; the difference is the framework's overhead per turn (message assembly, tool
//! dispatch through the tower stack, events, usage, cost, spans).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, CompletionRequest, CompletionResponse, Content, FnTool,
    LlmProvider, Message, RequestParams, Role, RunContext, ScriptedProvider, StopReason,
    ToolSource, Usage,
};
use criterion::{Criterion, criterion_group, criterion_main};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

fn add_tool() -> FnTool {
    FnTool::new("add", "Add two integers", |x: Add| async move {
        Ok::<_, std::convert::Infallible>(x.a + x.b)
    })
}

/// Answers with a tool call when the last message is the user's, and with text after a tool
/// result: two model calls per turn, stateless, so it serves any number of iterations.
fn provider() -> ScriptedProvider {
    ScriptedProvider::from_fn(|req: &CompletionRequest| {
        let last = req.messages.last().map(|m| m.role);
        let message = if last == Some(Role::Tool) {
            Message::assistant("The sum is 5.")
        } else {
            Message::new(
                Role::Assistant,
                vec![Content::tool_call("call_1", "add", json!({"a": 2, "b": 3}))],
            )
        };
        let stop = if message.has_tool_calls() {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        };
        Ok(CompletionResponse::new(
            message,
            Usage::new(20, 5),
            stop,
            "scripted-model",
        ))
    })
    .without_recording()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("agent_turn_with_one_tool_call");

    let by_hand_provider = Arc::new(provider());
    let tool = add_tool();
    let specs = rt.block_on(tool.list_tools()).unwrap();
    group.bench_function("by_hand", |b| {
        b.to_async(&rt).iter(|| {
            let p = Arc::clone(&by_hand_provider);
            let tool = tool.clone();
            let specs = specs.clone();
            async move {
                let ctx = RunContext::new();
                let mut messages = vec![Message::user("What is 2 + 3?")];
                let first = p
                    .complete(
                        CompletionRequest::new(messages.clone())
                            .with_system("Add numbers.")
                            .with_tools(specs.clone()),
                    )
                    .await
                    .unwrap();
                let (id, name, args) = {
                    let (id, name, args) = first.message.tool_calls().next().unwrap();
                    (id.to_owned(), name.to_owned(), args.clone())
                };
                messages.push(first.message);
                let out = tool.call_tool(&name, args, &ctx).await.unwrap();
                messages.push(Message::tool_results(vec![Content::tool_result(
                    id,
                    out.content,
                    false,
                )]));
                let second = p
                    .complete(
                        CompletionRequest::new(messages)
                            .with_system("Add numbers.")
                            .with_tools(specs),
                    )
                    .await
                    .unwrap();
                black_box(second.text())
            }
        });
    });

    let agent = AgentLlm::new(
        Agent::new("adder", "Add numbers.").with_tool(add_tool()),
        provider(),
    )
    .with_defaults(RequestParams::new().with_use_history(false));
    group.bench_function("agent_llm", |b| {
        b.to_async(&rt).iter(|| async {
            let g = agent
                .generate("What is 2 + 3?".into(), &RunContext::new())
                .await
                .unwrap();
            black_box(g.text())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
