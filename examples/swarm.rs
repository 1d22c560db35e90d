//! Swarm: an airline triage agent hands a customer to the flight-change agent, which updates
//! shared context variables through a tool.
//!
//! `cargo run --example swarm` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{Agent, CollectingSink, FnTool, RunContext, ScriptedProvider};
use agentkit_patterns::{ContextVariables, Swarm, SwarmMember};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct Change {
    /// The new flight number.
    new_flight: String,
}

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let vars = ContextVariables::new()
        .with("customer", json!("Jordan Park"))
        .with("booking", json!({"flight": "AK101", "date": "2026-12-04"}));
    let v = vars.clone();
    let change_flight = FnTool::new(
        "change_flight",
        "Move the customer's booking to another flight",
        move |c: Change| {
            let v = v.clone();
            async move {
                v.set(
                    "booking",
                    json!({"flight": c.new_flight, "date": "2026-12-05"}),
                );
                v.set("changed", json!(true));
                Ok::<_, std::convert::Infallible>(format!(
                    "Booking moved to {} on 2026-12-05",
                    c.new_flight
                ))
            }
        },
    );

    let triage = SwarmMember::new(
        Agent::new(
            "triage",
            "You are the airline's front desk. Transfer flight changes to flight_modification, \
             lost bags to lost_baggage.",
        )
        .with_description("Front desk"),
        common::model(
            ScriptedProvider::new().then_tool_call("transfer_to_flight_modification", json!({})),
        ),
    )
    .with_handoff("flight_modification")
    .with_handoff("lost_baggage");
    let modification = SwarmMember::new(
        Agent::new(
            "flight_modification",
            "You change flights with the change_flight tool.",
        )
        .with_description("Changes and cancels flights")
        .with_tool(change_flight),
        common::model(
            ScriptedProvider::new()
                .then_tool_call("change_flight", json!({"new_flight": "AK103"}))
                .then_text(
                    "Done, Jordan: you are now on AK103 on December 5th. Your seat and bags \
                     carry over.",
                ),
        ),
    )
    .with_handoff("triage");
    let baggage = SwarmMember::new(
        Agent::new("lost_baggage", "You trace lost bags.")
            .with_description("Lost and delayed bags"),
        common::model(ScriptedProvider::new()),
    )
    .with_handoff("triage");

    let swarm = Swarm::builder("airline")
        .with_member(triage)
        .with_member(modification)
        .with_member(baggage)
        .with_variables(vars)
        .with_max_handoffs(5)
        .build()?;

    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = swarm
        .run_swarm("I need to move my flight AK101 to the next day.", &ctx)
        .await?;
    println!(
        "\nfinal answer ({}):\n{}",
        out.final_agent,
        out.generation.text()
    );
    println!(
        "context variables: {}",
        serde_json::Value::Object(out.variables)
    );
    common::print_steps(&sink);
    Ok(())
}
