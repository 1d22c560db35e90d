//! Orchestrator: a planner splits a trip-planning request into parallel research tasks for
//! named workers, then a synthesizer writes the answer.
//!
//! `cargo run --example orchestrator` (offline with scripted models; online with an API key).

mod common;

use std::sync::Arc;

use agentkit_core::{Agent, AgentLlm, CollectingSink, FnTool, RunContext, ScriptedProvider};
use agentkit_patterns::{Orchestrator, PlanMode};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct City {
    /// City name.
    city: String,
}

/// What the orchestrator is asked.
pub(crate) const OBJECTIVE: &str = "Plan 3 days in Kyoto next week for me.";

/// The trip planner: a planner, three workers and a synthesizer; every agent gets its model
/// from `models`.
pub(crate) fn trip_planner(
    models: common::Models<'_>,
) -> Result<Orchestrator, agentkit_core::Error> {
    let planner = Arc::new(AgentLlm::shared(
        Agent::new("planner", "You break trip-planning requests into tasks for your workers."),
        models(
            ScriptedProvider::new()
                .then_text(
                    r#"{"steps": [
                        {"description": "Research the destination", "tasks": [
                            {"description": "Get the weather forecast for Kyoto next week", "worker": "weather"},
                            {"description": "List three must-see sights in Kyoto for a 3-day visit", "worker": "guide"}
                        ]},
                        {"description": "Plan", "tasks": [
                            {"description": "Draft a 3-day Kyoto itinerary that fits the forecast and the sights", "worker": "planner_worker"}
                        ]}
                    ], "is_complete": false}"#,
                )
                .then_text(r#"{"steps": [], "is_complete": true}"#),
        ),
    ));
    let forecast = FnTool::new(
        "forecast",
        "Weather forecast for a city",
        |c: City| async move {
            Ok::<_, std::convert::Infallible>(format!(
                "{}: Mon-Tue sunny 22°C, Wed rain 17°C, Thu sunny 21°C",
                c.city
            ))
        },
    );
    let weather = AgentLlm::shared(
        Agent::new("weather", "You report weather forecasts using your tool.")
            .with_description("Weather forecasts for any city")
            .with_tool(forecast),
        models(
            ScriptedProvider::new()
                .then_tool_call("forecast", serde_json::json!({"city": "Kyoto"}))
                .then_text(
                    "Kyoto next week: sunny Monday and Tuesday (22°C), rain on Wednesday (17°C).",
                ),
        ),
    );
    let guide = AgentLlm::shared(
        Agent::new("guide", "You are a travel guide.").with_description("Sights, food and culture"),
        models(ScriptedProvider::new().then_text(
            "1. Fushimi Inari shrine (go early). 2. Kiyomizu-dera temple. 3. Nishiki Market (covered, good for rain).",
        )),
    );
    let itinerary = AgentLlm::shared(
        Agent::new("planner_worker", "You write day-by-day itineraries.")
            .with_description("Writes itineraries from research"),
        models(ScriptedProvider::new().then_text(
            "Day 1 (sunny): Fushimi Inari at 7am. Day 2 (sunny): Kiyomizu-dera and Higashiyama. \
             Day 3 (rain): Nishiki Market and a tea ceremony.",
        )),
    );
    let synthesizer = Arc::new(AgentLlm::shared(
        Agent::new("writer", "You write the final answer for the traveller."),
        models(ScriptedProvider::new().then_text(
            "Your 3 days in Kyoto: Day 1, Fushimi Inari at sunrise while it is sunny; Day 2, \
             Kiyomizu-dera and the Higashiyama lanes; Day 3 brings rain, so spend it in covered \
             Nishiki Market and at a tea ceremony. Pack an umbrella for Wednesday.",
        )),
    ));
    Orchestrator::builder("trip-planner", planner)
        .with_worker(weather)
        .with_worker(guide)
        .with_worker(itinerary)
        .with_synthesizer(synthesizer)
        .with_mode(PlanMode::Full)
        .with_max_iterations(3)
        .build()
}

#[tokio::main]
async fn main() -> Result<(), agentkit_core::Error> {
    let orchestrator = trip_planner(&common::model)?;
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    let out = orchestrator.orchestrate(OBJECTIVE, &ctx).await?;
    println!("\nfinal answer:\n{}", out.generation.text());
    common::print_steps(&sink);
    println!(
        "\n{} steps, {} model calls in total",
        out.steps.len(),
        out.generation.llm_calls
    );
    Ok(())
}
