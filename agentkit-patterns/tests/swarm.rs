#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Swarm handoffs and agents as tools.

use std::sync::Arc;
use std::time::Duration;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, AugmentedLlmExt, CollectingSink, FnTool, GenerateRequest,
    Generation, Result, RunContext, RunEvent, ScriptedProvider,
};
use agentkit_patterns::{AgentsAsTools, ContextVariables, Swarm, SwarmMember};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct Order {
    order_id: String,
}

#[tokio::test]
async fn agents_hand_off_through_transfer_tools_and_share_variables() {
    let vars = ContextVariables::new().with("customer", json!("Ana"));
    let v = vars.clone();
    let refund = FnTool::new("refund_order", "Refund an order", move |o: Order| {
        let v = v.clone();
        async move {
            v.set("refunded_order", json!(o.order_id));
            Ok::<_, std::convert::Infallible>(format!("Order {} refunded", o.order_id))
        }
    });
    // Triage runs on one model, billing on another: the swarm is model-agnostic.
    let triage_model = Arc::new(
        ScriptedProvider::new()
            .with_name("model-a")
            .then_tool_call("transfer_to_billing", json!({})),
    );
    let billing_model = Arc::new(
        ScriptedProvider::new()
            .with_name("model-b")
            .then_tool_call("refund_order", json!({"order_id": "A-17"}))
            .then_text("Done, Ana: order A-17 is refunded."),
    );
    let swarm = Swarm::builder("support")
        .with_member(
            SwarmMember::new(
                Agent::new("triage", "Send billing questions to billing.")
                    .with_description("Front desk"),
                triage_model.clone(),
            )
            .with_handoff("billing"),
        )
        .with_member(
            SwarmMember::new(
                Agent::new("billing", "You handle refunds.")
                    .with_description("Refunds and invoices")
                    .with_tool(refund),
                billing_model.clone(),
            )
            .with_handoff("triage"),
        )
        .with_variables(vars.clone())
        .build()
        .unwrap();
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = swarm.run_swarm("Refund my order A-17", &ctx).await.unwrap();
    assert_eq!(out.generation.text(), "Done, Ana: order A-17 is refunded.");
    assert_eq!(out.final_agent, "billing");
    assert_eq!(
        out.handoffs,
        vec![("triage".to_owned(), "billing".to_owned())]
    );
    assert_eq!(out.variables["refunded_order"], "A-17");
    assert_eq!(out.generation.llm_calls, 3);
    // Triage was offered the transfer tool; billing saw the shared variables and the whole
    // conversation, including the user's request.
    let triage_req = &triage_model.requests()[0];
    assert!(
        triage_req
            .tools
            .iter()
            .any(|t| t.name == "transfer_to_billing")
    );
    let billing_req = &billing_model.requests()[0];
    assert!(
        billing_req
            .system
            .as_ref()
            .unwrap()
            .contains("\"customer\":\"Ana\"")
    );
    assert_eq!(billing_req.messages[0].text(), "Refund my order A-17");
    assert!(
        billing_req
            .tools
            .iter()
            .any(|t| t.name == "transfer_to_triage")
    );
    let handoff = sink.events().into_iter().find_map(|e| match e {
        RunEvent::PatternStep { step, detail, .. } if step == "handoff" => Some(detail),
        _ => None,
    });
    assert_eq!(handoff.unwrap(), json!({"from": "triage", "to": "billing"}));
    // The next turn starts with the agent that had the conversation.
    assert_eq!(swarm.active_agent(&ctx).await.unwrap(), "billing");
    // Another thread starts afresh with the start agent and none of this conversation.
    let other = RunContext::new().with_thread("another-customer");
    assert_eq!(swarm.active_agent(&other).await.unwrap(), "triage");
}

#[tokio::test]
async fn the_done_condition_ends_the_run_and_max_handoffs_bounds_ping_pong() {
    let vars = ContextVariables::new();
    let v = vars.clone();
    let close = FnTool::new(
        "close_ticket",
        "Close the ticket",
        move |_: serde_json::Value| {
            let v = v.clone();
            async move {
                v.set("closed", json!(true));
                Ok::<_, std::convert::Infallible>("closed")
            }
        },
    );
    let model = Arc::new(ScriptedProvider::new().then_tool_call("close_ticket", json!({})));
    let swarm = Swarm::builder("s")
        .with_member(SwarmMember::new(
            Agent::new("a", "Close tickets.").with_tool(close),
            model.clone(),
        ))
        .with_variables(vars)
        .with_done(|vars, _last| vars.get("closed") == Some(json!(true)))
        .build()
        .unwrap();
    let out = swarm
        .run_swarm("close it", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(
        model.call_count(),
        1,
        "stopped right after the tool set `closed`"
    );
    assert_eq!(out.variables["closed"], true);

    // Two agents that keep transferring to each other.
    let ping = Arc::new(ScriptedProvider::from_fn(|_| {
        Ok(agentkit_core::CompletionResponse::new(
            agentkit_core::Message::new(
                agentkit_core::Role::Assistant,
                vec![agentkit_core::Content::tool_call(
                    "c",
                    "transfer_to_pong",
                    json!({}),
                )],
            ),
            agentkit_core::Usage::new(1, 1),
            agentkit_core::StopReason::ToolUse,
            "m",
        ))
    }));
    let pong = Arc::new(ScriptedProvider::from_fn(|_| {
        Ok(agentkit_core::CompletionResponse::new(
            agentkit_core::Message::new(
                agentkit_core::Role::Assistant,
                vec![agentkit_core::Content::tool_call(
                    "c",
                    "transfer_to_ping",
                    json!({}),
                )],
            ),
            agentkit_core::Usage::new(1, 1),
            agentkit_core::StopReason::ToolUse,
            "m",
        ))
    }));
    let swarm = Swarm::builder("loop")
        .with_member(SwarmMember::new(Agent::new("ping", "p"), ping).with_handoff("pong"))
        .with_member(SwarmMember::new(Agent::new("pong", "p"), pong).with_handoff("ping"))
        .with_max_handoffs(3)
        .build()
        .unwrap();
    let err = swarm
        .generate_str("go", &RunContext::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("exceeded its 3 handoffs"), "{err}");
}

#[test]
fn a_swarm_with_an_unknown_handoff_target_is_rejected() {
    let p = Arc::new(ScriptedProvider::new());
    let err = Swarm::builder("s")
        .with_member(SwarmMember::new(Agent::new("a", "x"), p.clone()).with_handoff("b"))
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("hands off to `b`, which is not in the swarm"),
        "{err}"
    );
    let err = Swarm::builder("s")
        .with_member(SwarmMember::new(Agent::new("a", "x"), p))
        .with_start("z")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("starts with `z`"), "{err}");
    assert!(Swarm::builder("s").build().is_err());
}

/// Answers only once both it and its sibling have started: proves concurrency.
struct Rendezvous {
    name: String,
    barrier: Arc<tokio::sync::Barrier>,
}

#[async_trait]
impl AugmentedLlm for Rendezvous {
    fn name(&self) -> &str {
        &self.name
    }
    async fn generate(&self, req: GenerateRequest, _ctx: &RunContext) -> Result<Generation> {
        self.barrier.wait().await;
        Ok(Generation::from_text(format!(
            "{} says: {}",
            self.name,
            req.last_user_text()
        )))
    }
}

#[tokio::test]
async fn agents_as_tools_are_called_in_parallel_when_the_model_asks_for_several() {
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let tools = AgentsAsTools::new(vec![
        Arc::new(Rendezvous {
            name: "french".into(),
            barrier: barrier.clone(),
        }),
        Arc::new(Rendezvous {
            name: "german".into(),
            barrier,
        }),
    ])
    .unwrap();
    assert_eq!(tools.tool_names(), ["agent__french", "agent__german"]);
    let model = Arc::new(
        ScriptedProvider::new()
            .then_tool_calls(vec![
                ("agent__french".into(), json!({"message": "hello"})),
                ("agent__german".into(), json!({"message": "hello"})),
            ])
            .then_text("Bonjour / Hallo"),
    );
    let parent = AgentLlm::shared(
        Agent::new("parent", "Delegate.").with_tool(tools),
        model.clone(),
    );
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        parent.generate_str("Say hello in French and German", &RunContext::new()),
    )
    .await
    .expect("sequential calls would deadlock on the barrier")
    .unwrap();
    assert_eq!(out, "Bonjour / Hallo");
    let results = model.requests()[1].messages.last().unwrap().clone();
    let texts: Vec<String> = results
        .content
        .iter()
        .filter_map(|c| match c {
            agentkit_core::Content::ToolResult { content, .. } => {
                Some(agentkit_core::message::join_text(content))
            }
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["french says: hello", "german says: hello"]);
    let dup = AgentsAsTools::new(vec![
        Arc::new(Rendezvous {
            name: "x".into(),
            barrier: Arc::new(tokio::sync::Barrier::new(1)),
        }),
        Arc::new(Rendezvous {
            name: "x".into(),
            barrier: Arc::new(tokio::sync::Barrier::new(1)),
        }),
    ]);
    assert!(
        dup.unwrap_err()
            .to_string()
            .contains("same tool `agent__x`")
    );
}

struct DenyAll;

#[async_trait]
impl agentkit_core::ApprovalHandler for DenyAll {
    async fn approve(
        &self,
        req: agentkit_core::ApprovalRequest,
        _: &RunContext,
    ) -> Result<agentkit_core::ApprovalDecision> {
        Ok(agentkit_core::ApprovalDecision::Denied {
            reason: format!("{} is frozen", req.tool),
        })
    }
}

fn refund_swarm(
    counter: Arc<std::sync::atomic::AtomicU32>,
    billing_instruction: &str,
) -> (Swarm, Arc<ScriptedProvider>, Arc<ScriptedProvider>) {
    let refund = FnTool::new("refund_order", "Refund an order", move |o: Order| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(format!("Order {} refunded", o.order_id))
        }
    });
    let triage = Arc::new(ScriptedProvider::new().then_tool_call("transfer_to_billing", json!({})));
    let billing = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("refund_order", json!({"order_id": "A-17"}))
            .then_text("Done."),
    );
    let swarm = Swarm::builder("support")
        .with_member(
            SwarmMember::new(Agent::new("triage", "Route."), triage.clone())
                .with_handoff("billing"),
        )
        .with_member(SwarmMember::new(
            Agent::new("billing", billing_instruction).with_tool(refund),
            billing.clone(),
        ))
        .build()
        .unwrap();
    (swarm, triage, billing)
}

#[tokio::test]
async fn an_approval_layer_denies_a_tool_inside_a_swarm() {
    let ran = Arc::new(std::sync::atomic::AtomicU32::new(0));
    // A refund swarm with an approval layer on every member's tool calls.
    let (guarded, _, guarded_billing) = {
        let t = Arc::new(ScriptedProvider::new().then_tool_call("transfer_to_billing", json!({})));
        let b = Arc::new(
            ScriptedProvider::new()
                .then_tool_call("refund_order", json!({"order_id": "A-17"}))
                .then_text("I could not refund it."),
        );
        let refund = FnTool::new("refund_order", "Refund an order", {
            let ran = ran.clone();
            move |_: Order| {
                let ran = ran.clone();
                async move {
                    ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>("refunded")
                }
            }
        });
        let s = Swarm::builder("support")
            .with_member(
                SwarmMember::new(Agent::new("triage", "Route."), t.clone()).with_handoff("billing"),
            )
            .with_member(SwarmMember::new(
                Agent::new("billing", "You handle refunds.").with_tool(refund),
                b.clone(),
            ))
            .with_tool_layer(agentkit_core::ApprovalLayer::tools(["refund_order"]))
            .build()
            .unwrap();
        (s, t, b)
    };
    let ctx = RunContext::new().with_approvals(Arc::new(DenyAll));
    let out = guarded.run_swarm("Refund A-17", &ctx).await.unwrap();
    assert_eq!(
        out.final_agent, "billing",
        "the handoff itself needs no approval"
    );
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the denied tool never ran"
    );
    // The billing model was shown the denial as a tool error with the reason.
    let second = &guarded_billing.requests()[1];
    let shown = second.messages.last().unwrap();
    let (is_error, text) = shown
        .content
        .iter()
        .find_map(|c| match c {
            agentkit_core::Content::ToolResult {
                content, is_error, ..
            } => Some((*is_error, agentkit_core::message::join_text(content))),
            _ => None,
        })
        .unwrap();
    assert!(is_error);
    assert!(text.contains("refund_order is frozen"), "{text}");
}

#[tokio::test]
async fn a_replayed_swarm_run_reports_changed_instructions_and_runs_no_tool_again() {
    let ran = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let journal = Arc::new(agentkit_core::MemoryJournal::new());
    let (swarm, _, _) = refund_swarm(ran.clone(), "You handle refunds.");
    let ctx = RunContext::new().with_journal(journal.clone());
    swarm.run_swarm("Refund A-17", &ctx).await.unwrap();
    assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
    let recorded = journal.entries();
    assert!(
        recorded.iter().any(|(k, _)| k.starts_with("billing/tool/")),
        "swarm tool calls are journaled: {recorded:?}"
    );

    // Replay the recording with billing's instructions changed.
    let replay = Arc::new(agentkit_core::MemoryJournal::from_entries(recorded));
    let (changed, triage, billing) = refund_swarm(ran.clone(), "You refuse all refunds.");
    let ctx = RunContext::new().with_journal(replay.clone());
    let out = changed.run_swarm("Refund A-17", &ctx).await.unwrap();
    assert_eq!(out.generation.text(), "Done.");
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no tool ran again"
    );
    assert_eq!(
        triage.call_count() + billing.call_count(),
        0,
        "no model was called"
    );
    let divergences = replay.divergences();
    assert!(
        divergences.iter().any(|d| d.contains("agent `billing`")),
        "{divergences:?}"
    );
    assert!(
        !divergences.iter().any(|d| d.contains("agent `triage`")),
        "triage did not change: {divergences:?}"
    );
}
