//! The tool loop of `AgentLlm`, driven by `ScriptedProvider`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agentkit_core::{
    Agent, AgentLlm, ApprovalDecision, ApprovalHandler, ApprovalLayer, ApprovalRequest,
    AugmentedLlm, AugmentedLlmExt, Budget, CollectingSink, Content, Error, FnTool, GenerateRequest,
    HumanInputHandler, HumanInputRequest, HumanInputResponse, MemoryJournal, Message,
    RequestParams, Role, RunContext, RunEvent, ScriptedProvider, StopReason, ToolChoice,
    ToolFilter, ToolTimeoutLayer,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct Sleep {
    ms: u64,
    label: String,
}

fn sleeper(counter: Arc<AtomicUsize>) -> FnTool {
    FnTool::new("sleep", "Sleep then echo the label", move |s: Sleep| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(s.ms)).await;
            Ok::<_, String>(format!("slept {}", s.label))
        }
    })
}

#[tokio::test]
async fn parallel_tool_calls_run_concurrently_and_results_come_back_in_order() {
    let counter = Arc::new(AtomicUsize::new(0));
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_calls(vec![
                ("sleep".into(), json!({"ms": 300, "label": "a"})),
                ("sleep".into(), json!({"ms": 300, "label": "b"})),
                ("sleep".into(), json!({"ms": 300, "label": "c"})),
            ])
            .then_text("all done"),
    );
    let agent = AgentLlm::shared(
        Agent::new("worker", "Use tools.").with_tool(sleeper(counter.clone())),
        provider.clone(),
    );
    let started = Instant::now();
    let g = agent
        .generate("go".into(), &RunContext::new())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(g.text(), "all done");
    assert_eq!(counter.load(Ordering::SeqCst), 3);
    assert!(
        elapsed < Duration::from_millis(850),
        "tools did not run concurrently: {elapsed:?}"
    );

    // The second model call saw the three results, in call order.
    let second = &provider.requests()[1];
    let results = second.messages.last().unwrap();
    assert_eq!(results.role, Role::Tool);
    let texts: Vec<String> = results
        .content
        .iter()
        .map(|c| match c {
            Content::ToolResult {
                content, is_error, ..
            } => {
                assert!(!is_error);
                content[0].as_text().unwrap().to_owned()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(texts, ["slept a", "slept b", "slept c"]);
}

#[tokio::test]
async fn sequential_when_parallel_tool_calls_is_false() {
    let counter = Arc::new(AtomicUsize::new(0));
    let provider = ScriptedProvider::new()
        .then_tool_calls(vec![
            ("sleep".into(), json!({"ms": 150, "label": "a"})),
            ("sleep".into(), json!({"ms": 150, "label": "b"})),
        ])
        .then_text("ok");
    let agent = AgentLlm::new(Agent::new("w", "").with_tool(sleeper(counter)), provider);
    let started = Instant::now();
    agent
        .generate(
            GenerateRequest::from("go")
                .with_params(RequestParams::new().with_parallel_tool_calls(false)),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn max_iterations_ends_with_a_final_answer_turn_without_tools() {
    let counter = Arc::new(AtomicUsize::new(0));
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("sleep", json!({"ms": 1, "label": "1"}))
            .then_tool_call("sleep", json!({"ms": 1, "label": "2"}))
            .then_text("best effort answer"),
    );
    let agent = AgentLlm::shared(
        Agent::new("w", "").with_tool(sleeper(counter.clone())),
        provider.clone(),
    )
    .with_defaults(RequestParams::new().with_max_iterations(2));
    let g = agent
        .generate("loop".into(), &RunContext::new())
        .await
        .unwrap();
    assert_eq!(g.text(), "best effort answer");
    assert_eq!(counter.load(Ordering::SeqCst), 2);
    let reqs = provider.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].tool_choice, ToolChoice::None);
    assert!(
        reqs[2]
            .messages
            .last()
            .unwrap()
            .text()
            .contains("maximum number of tool calls")
    );
    assert_eq!(g.llm_calls, 3);
}

#[tokio::test]
async fn history_is_kept_across_turns_unless_disabled() {
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_text("Hi Ana")
            .then_text("Your name is Ana")
            .then_text("?"),
    );
    let agent = AgentLlm::shared(Agent::new("chat", "Be brief."), provider.clone());
    let ctx = RunContext::new();
    agent.generate_str("I am Ana", &ctx).await.unwrap();
    agent.generate_str("What is my name?", &ctx).await.unwrap();
    let reqs = provider.requests();
    assert_eq!(
        reqs[1].messages.len(),
        3,
        "second turn carries the first exchange"
    );
    assert_eq!(reqs[1].messages[0].text(), "I am Ana");
    assert_eq!(reqs[1].system.as_deref(), Some("Be brief."));
    agent
        .generate(
            GenerateRequest::from("fresh")
                .with_params(RequestParams::new().with_use_history(false)),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(provider.requests()[2].messages.len(), 1);
}

#[tokio::test]
async fn tool_filter_limits_offered_tools_and_unknown_tools_are_reported_to_the_model() {
    let counter = Arc::new(AtomicUsize::new(0));
    let echo = FnTool::new(
        "echo",
        "Echo",
        |v: serde_json::Map<String, serde_json::Value>| async move {
            Ok::<_, String>(serde_json::Value::Object(v))
        },
    );
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("sleep", json!({"ms": 1, "label": "x"}))
            .then_text("fine"),
    );
    let agent = AgentLlm::shared(
        Agent::new("w", "")
            .with_tool(sleeper(counter.clone()))
            .with_tool(echo),
        provider.clone(),
    );
    let g = agent
        .generate(
            GenerateRequest::from("hi")
                .with_params(RequestParams::new().with_tool_filter(ToolFilter::allow(["echo"]))),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(g.text(), "fine");
    let reqs = provider.requests();
    let names: Vec<&str> = reqs[0].tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["echo"]);
    // The filtered-out tool was requested anyway: it did not run, and the model was told.
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    let result = reqs[1].messages.last().unwrap();
    match &result.content[0] {
        Content::ToolResult {
            is_error, content, ..
        } => {
            assert!(is_error);
            let t = content[0].as_text().unwrap();
            assert!(
                t.contains("no tool named `sleep`") && t.contains("echo"),
                "{t}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dynamic_instructions_see_the_run_context() {
    let provider = Arc::new(ScriptedProvider::new().then_text("ok"));
    let agent = AgentLlm::shared(
        Agent::new("d", "")
            .with_dynamic_instruction(|ctx| format!("You serve run {}.", ctx.run_id())),
        provider.clone(),
    );
    agent
        .generate_str("x", &RunContext::new().with_run_id("r-42"))
        .await
        .unwrap();
    assert_eq!(
        provider.requests()[0].system.as_deref(),
        Some("You serve run r-42.")
    );
}

struct Human;

#[async_trait]
impl HumanInputHandler for Human {
    async fn ask(
        &self,
        request: HumanInputRequest,
        _ctx: &RunContext,
    ) -> agentkit_core::Result<HumanInputResponse> {
        assert_eq!(request.prompt, "Which city?");
        Ok(HumanInputResponse::text("Porto"))
    }
}

#[tokio::test]
async fn human_input_tool_asks_the_handler_and_emits_events() {
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("__human_input", json!({"prompt": "Which city?"}))
            .then_text("Booking Porto"),
    );
    let agent = AgentLlm::shared(
        Agent::new("booker", "").with_human_input(true),
        provider.clone(),
    );
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new()
        .with_human_input(Arc::new(Human))
        .with_events(sink.clone());
    assert_eq!(
        agent.generate_str("book a trip", &ctx).await.unwrap(),
        "Booking Porto"
    );
    assert!(
        provider.requests()[0]
            .tools
            .iter()
            .any(|t| t.name == "__human_input")
    );
    let tool_result = provider.requests()[1].messages.last().unwrap().clone();
    assert!(format!("{tool_result:?}").contains("Porto"));
    let events = sink.events();
    assert!(events.iter().any(
        |e| matches!(e, RunEvent::HumanInputRequested { prompt, .. } if prompt == "Which city?")
    ));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::HumanInputAnswered { .. }))
    );

    // Without a handler the model is told, the run goes on.
    let provider = ScriptedProvider::new()
        .then_tool_call("__human_input", json!({"prompt": "Which city?"}))
        .then_text("I will assume Lisbon");
    let agent = AgentLlm::new(Agent::new("booker", "").with_human_input(true), provider);
    assert_eq!(
        agent
            .generate_str("book", &RunContext::new())
            .await
            .unwrap(),
        "I will assume Lisbon"
    );
}

#[tokio::test]
async fn agents_are_tools_of_other_agents_and_usage_rolls_up() {
    let inner = AgentLlm::new(
        Agent::new("researcher", "Research.").with_description("Finds facts"),
        ScriptedProvider::new()
            .with_name("openai")
            .with_model("gpt-4.1-mini")
            .then_text("Lisbon has 545k people"),
    );
    let outer_provider = Arc::new(
        ScriptedProvider::new()
            .with_name("openai")
            .with_model("gpt-4.1")
            .then_tool_call("researcher", json!({"message": "population of Lisbon"}))
            .then_text("About 545 thousand."),
    );
    let outer = AgentLlm::shared(
        Agent::new("lead", "").with_tool(inner.as_tool()),
        outer_provider.clone(),
    );
    let ctx = RunContext::new();
    let g = outer
        .generate("How many people live in Lisbon?".into(), &ctx)
        .await
        .unwrap();
    assert_eq!(g.text(), "About 545 thousand.");
    let spec = &outer_provider.requests()[0].tools[0];
    assert_eq!(spec.name, "researcher");
    assert_eq!(spec.description, "Finds facts");
    assert_eq!(g.llm_calls, 3, "two outer calls and one inner call");
    assert!(g.cost_usd > 0.0);
    assert_eq!(ctx.totals().usage, g.usage);
}

#[tokio::test]
async fn journal_replays_recorded_steps_without_calling_model_or_tool() {
    let counter = Arc::new(AtomicUsize::new(0));
    let script = || {
        ScriptedProvider::new()
            .then_tool_call("sleep", json!({"ms": 1, "label": "once"}))
            .then_text("done")
    };
    let journal = Arc::new(MemoryJournal::new());
    let first = Arc::new(script());
    let agent = AgentLlm::shared(
        Agent::new("j", "").with_tool(sleeper(counter.clone())),
        first.clone(),
    );
    let ctx = RunContext::new()
        .with_run_id("r")
        .with_journal(journal.clone());
    assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "done");
    assert_eq!(
        journal.entries().len(),
        3,
        "two completions and one tool result"
    );

    // Replay: a fresh process would rebuild the agent with a provider that must not be called.
    let tape = MemoryJournal::from_entries(journal.entries());
    let silent = Arc::new(ScriptedProvider::new());
    let sink = Arc::new(CollectingSink::new());
    let agent = AgentLlm::shared(
        Agent::new("j", "").with_tool(sleeper(counter.clone())),
        silent.clone(),
    );
    let ctx = RunContext::new()
        .with_run_id("r")
        .with_journal(Arc::new(tape))
        .with_events(sink.clone());
    assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "done");
    assert_eq!(silent.call_count(), 0);
    assert_eq!(
        counter.load(Ordering::SeqCst),
        1,
        "the tool ran only the first time"
    );
    assert!(
        sink.events()
            .iter()
            .any(|e| matches!(e, RunEvent::LlmResponse { replayed: true, .. }))
    );
}

#[tokio::test]
async fn budget_and_cancellation_stop_the_run() {
    let provider = ScriptedProvider::new()
        .then_tool_call("sleep", json!({"ms": 1, "label": "a"}))
        .then_text("never");
    let agent = AgentLlm::new(
        Agent::new("b", "").with_tool(sleeper(Arc::default())),
        provider,
    );
    let ctx = RunContext::new().with_budget(Budget::new().with_max_tokens(5));
    let err = agent
        .generate_str("spend a lot of tokens please", &ctx)
        .await
        .unwrap_err();
    assert!(err.is_budget_exceeded(), "{err}");

    let provider =
        ScriptedProvider::new().then_tool_call("sleep", json!({"ms": 5000, "label": "slow"}));
    let agent = AgentLlm::new(
        Agent::new("c", "").with_tool(sleeper(Arc::default())),
        provider,
    );
    let ctx = RunContext::new();
    let c2 = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        c2.cancel();
    });
    let started = Instant::now();
    // The tool is slow; cancelling the run stops the in-flight call at once.
    let err = agent.generate_str("go", &ctx).await.unwrap_err();
    assert!(err.is_cancelled(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));

    let provider =
        ScriptedProvider::new().then_tool_call("sleep", json!({"ms": 5000, "label": "slow"}));
    let agent = AgentLlm::new(
        Agent::new("d", "").with_tool(sleeper(Arc::default())),
        provider,
    );
    let ctx = RunContext::new().with_timeout(Duration::from_millis(100));
    let err = agent.generate_str("go", &ctx).await.unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
    assert!(err.to_string().contains("tool `sleep`"), "{err}");
}

#[tokio::test]
async fn tool_layer_timeout_is_shown_to_the_model() {
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("sleep", json!({"ms": 2000, "label": "slow"}))
            .then_text("the tool timed out"),
    );
    let agent = AgentLlm::shared(
        Agent::new("t", "").with_tool(sleeper(Arc::default())),
        provider.clone(),
    )
    .with_tool_layer(ToolTimeoutLayer::new(Duration::from_millis(50)));
    let g = agent
        .generate("go".into(), &RunContext::new())
        .await
        .unwrap();
    assert_eq!(g.text(), "the tool timed out");
    let result = provider.requests()[1].messages.last().unwrap().clone();
    let dbg = format!("{result:?}");
    assert!(
        dbg.contains("timed out") && dbg.contains("is_error: true"),
        "{dbg}"
    );
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
struct Verdict {
    label: String,
    score: u8,
}

#[tokio::test]
async fn structured_output_is_validated_with_one_repair_round() {
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_text("Sure! The label is spam.")
            .then_text("```json\n{\"label\": \"spam\", \"score\": 9}\n```"),
    );
    let agent = AgentLlm::shared(Agent::new("judge", ""), provider.clone());
    let v: Verdict = agent
        .generate_structured("classify: WIN A PRIZE", &RunContext::new())
        .await
        .unwrap();
    assert_eq!(
        v,
        Verdict {
            label: "spam".into(),
            score: 9
        }
    );
    let reqs = provider.requests();
    let rf = reqs[0].response_format.as_ref().unwrap();
    assert_eq!(rf.name, "Verdict");
    assert_eq!(rf.schema["required"], json!(["label", "score"]));
    assert!(
        reqs[1]
            .messages
            .last()
            .unwrap()
            .text()
            .contains("not valid")
    );

    let provider = ScriptedProvider::new()
        .then_text("{\"label\": 3}")
        .then_text("{\"label\": \"x\"}");
    let agent = AgentLlm::new(Agent::new("judge", ""), provider);
    let err = agent
        .generate_structured::<Verdict>("classify", &RunContext::new())
        .await
        .unwrap_err();
    match err {
        Error::StructuredOutput { message, raw, .. } => {
            assert!(message.contains("score"), "{message}");
            assert_eq!(raw, "{\"label\": \"x\"}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn events_describe_the_run() {
    let sink = Arc::new(CollectingSink::new());
    let provider = ScriptedProvider::new()
        .with_name("anthropic")
        .with_model("claude-haiku-4-5")
        .then_tool_call("sleep", json!({"ms": 1, "label": "z"}))
        .then_text("ok");
    let agent = AgentLlm::new(
        Agent::new("ev", "").with_tool(sleeper(Arc::default())),
        provider,
    );
    let ctx = RunContext::new().with_events(sink.clone());
    let g = agent.generate("go".into(), &ctx).await.unwrap();
    assert_eq!(g.stop_reason, StopReason::EndTurn);
    let kinds: Vec<&'static str> = sink
        .events()
        .iter()
        .map(|e| match e {
            RunEvent::LlmRequest { .. } => "llm_request",
            RunEvent::LlmResponse { .. } => "llm_response",
            RunEvent::ToolCallStarted { .. } => "tool_started",
            RunEvent::ToolCallFinished { .. } => "tool_finished",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "llm_request",
            "llm_response",
            "tool_started",
            "tool_finished",
            "llm_request",
            "llm_response"
        ]
    );
    let cost: f64 = sink
        .events()
        .iter()
        .filter_map(|e| match e {
            RunEvent::LlmResponse { cost_usd, .. } => Some(*cost_usd),
            _ => None,
        })
        .sum();
    assert!((cost - g.cost_usd).abs() < 1e-12 && cost > 0.0);
}

#[tokio::test]
async fn model_preferences_pick_a_model_of_the_provider() {
    let provider = Arc::new(
        ScriptedProvider::new()
            .with_name("anthropic")
            .then_text("ok"),
    );
    let agent = AgentLlm::shared(Agent::new("m", ""), provider.clone());
    let prefs = agentkit_core::ModelPreferences::new().with_hint("haiku");
    agent
        .generate(
            GenerateRequest::new(vec![Message::user("hi")])
                .with_params(RequestParams::new().with_model_preferences(prefs)),
            &RunContext::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        provider.requests()[0].model.as_deref(),
        Some("claude-haiku-4-5")
    );
}

#[tokio::test]
async fn replay_with_changed_instructions_is_reported_as_a_divergence() {
    let record = Arc::new(MemoryJournal::new());
    let agent = AgentLlm::new(
        Agent::new("j", "Be brief.").with_tool(sleeper(Arc::default())),
        ScriptedProvider::new()
            .then_tool_call("sleep", json!({"ms": 1, "label": "x"}))
            .then_text("done"),
    );
    let ctx = RunContext::new()
        .with_run_id("r")
        .with_journal(record.clone());
    agent.generate_str("go", &ctx).await.unwrap();

    async fn replay(record: &MemoryJournal, instruction: &str) -> Vec<String> {
        let tape = Arc::new(MemoryJournal::from_entries(record.entries()));
        let silent = Arc::new(ScriptedProvider::new());
        let agent = AgentLlm::shared(
            Agent::new("j", instruction).with_tool(sleeper(Arc::default())),
            silent.clone(),
        );
        let ctx = RunContext::new()
            .with_run_id("r")
            .with_journal(tape.clone());
        assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "done");
        assert_eq!(silent.call_count(), 0, "replay never calls the model");
        tape.divergences()
    }

    assert!(
        replay(&record, "Be brief.").await.is_empty(),
        "same code, same requests"
    );
    let notes = replay(&record, "Be brief. Answer in French.").await;
    assert_eq!(notes.len(), 2, "both model calls changed: {notes:?}");
    assert!(
        notes[0].contains("j/llm/0") && notes[0].contains("different model request"),
        "{notes:?}"
    );
}

/// Approves `sleep` calls labelled "ok", denies the rest; records what it was asked.
#[derive(Default)]
struct Gatekeeper {
    asked: std::sync::Mutex<Vec<ApprovalRequest>>,
}

#[async_trait]
impl ApprovalHandler for Gatekeeper {
    async fn approve(
        &self,
        request: ApprovalRequest,
        _ctx: &RunContext,
    ) -> agentkit_core::Result<ApprovalDecision> {
        let ok = request.arguments["label"] == "ok";
        self.asked.lock().unwrap().push(request);
        Ok(if ok {
            ApprovalDecision::Approved
        } else {
            ApprovalDecision::Denied {
                reason: "not on a Friday".into(),
            }
        })
    }
}

#[tokio::test]
async fn approval_layer_runs_approved_calls_and_shows_denials_to_the_model() {
    let runs = Arc::new(AtomicUsize::new(0));
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("sleep", json!({"ms": 1, "label": "ok"}))
            .then_tool_call("sleep", json!({"ms": 1, "label": "risky"}))
            .then_text("done"),
    );
    let agent = AgentLlm::shared(
        Agent::new("t", "").with_tool(sleeper(Arc::clone(&runs))),
        provider.clone(),
    )
    .with_tool_layer(
        ApprovalLayer::new(|tool, _args| tool == "sleep").with_reason("sleeping is risky"),
    );
    let gate = Arc::new(Gatekeeper::default());
    let ctx = RunContext::new().with_approvals(gate.clone());
    assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "done");
    // The approved call ran, the denied one did not.
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let asked = gate.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[0].tool, "sleep");
    assert_eq!(asked[0].reason, "sleeping is risky");
    let approved = format!("{:?}", provider.requests()[1].messages.last().unwrap());
    assert!(
        approved.contains("slept ok") && approved.contains("is_error: false"),
        "{approved}"
    );
    let denied = format!("{:?}", provider.requests()[2].messages.last().unwrap());
    assert!(
        denied.contains("denied: not on a Friday") && denied.contains("is_error: true"),
        "{denied}"
    );
}

#[tokio::test]
async fn approval_layer_skips_unselected_tools_and_needs_a_handler_for_selected_ones() {
    let runs = Arc::new(AtomicUsize::new(0));
    // Not selected: runs without asking (no handler needed).
    let provider = ScriptedProvider::new()
        .then_tool_call("sleep", json!({"ms": 1, "label": "free"}))
        .then_text("done");
    let agent = AgentLlm::new(
        Agent::new("t", "").with_tool(sleeper(Arc::clone(&runs))),
        provider,
    )
    .with_tool_layer(ApprovalLayer::tools(["delete_everything"]));
    assert_eq!(
        agent.generate_str("go", &RunContext::new()).await.unwrap(),
        "done"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Selected, but the run has no handler: the tool does not run and the model is told why.
    let provider = Arc::new(
        ScriptedProvider::new()
            .then_tool_call("sleep", json!({"ms": 1, "label": "x"}))
            .then_text("could not"),
    );
    let agent = AgentLlm::shared(
        Agent::new("t", "").with_tool(sleeper(Arc::clone(&runs))),
        provider.clone(),
    )
    .with_tool_layer(ApprovalLayer::tools(["sleep"]));
    let sink = Arc::new(CollectingSink::new());
    let ctx = RunContext::new().with_events(sink.clone());
    assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "could not");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the unapproved tool must not run"
    );
    let shown = format!("{:?}", provider.requests()[1].messages.last().unwrap());
    assert!(
        shown.contains("tool `sleep`")
            && shown.contains("no approval handler")
            && shown.contains("RunContext::with_approvals")
            && shown.contains("is_error: true"),
        "{shown}"
    );
    assert!(
        sink.events()
            .iter()
            .any(|e| matches!(e, RunEvent::Error { .. }))
    );
}

/// Counts what a [`SpendGuard`] is asked and told; refuses once `limit` calls were charged.
struct CountingGuard {
    admitted: AtomicUsize,
    charged: std::sync::Mutex<Vec<(String, f64)>>,
    released: AtomicUsize,
    limit: usize,
}

#[async_trait]
impl agentkit_core::SpendGuard for CountingGuard {
    async fn admit(
        &self,
        _agent: &str,
        ctx: &RunContext,
    ) -> agentkit_core::Result<agentkit_core::SpendHold> {
        if self.charged.lock().unwrap().len() >= self.limit {
            return Err(agentkit_core::Error::BudgetExceeded {
                run_id: ctx.run_id().to_owned(),
                message: "the test budget is spent".into(),
            });
        }
        self.admitted.fetch_add(1, Ordering::SeqCst);
        Ok(agentkit_core::SpendHold::new("h"))
    }

    async fn charge(
        &self,
        hold: agentkit_core::SpendHold,
        agent: &str,
        _ctx: &RunContext,
        cost_usd: f64,
    ) -> agentkit_core::Result<()> {
        assert_eq!(hold.id(), Some("h"), "the hold admit gave comes back");
        self.charged
            .lock()
            .unwrap()
            .push((agent.to_owned(), cost_usd));
        Ok(())
    }

    async fn release(
        &self,
        hold: agentkit_core::SpendHold,
        _agent: &str,
        _ctx: &RunContext,
    ) -> agentkit_core::Result<()> {
        assert_eq!(hold.id(), Some("h"), "the hold admit gave comes back");
        self.released.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_spend_guard_charges_real_model_calls_once_and_never_replayed_ones() {
    let counter = Arc::new(AtomicUsize::new(0));
    let guard = Arc::new(CountingGuard {
        admitted: AtomicUsize::new(0),
        charged: Default::default(),
        released: AtomicUsize::new(0),
        limit: 10,
    });
    let journal = Arc::new(MemoryJournal::new());
    let agent = AgentLlm::shared(
        Agent::new("j", "").with_tool(sleeper(counter.clone())),
        Arc::new(
            ScriptedProvider::new()
                .with_model("gpt-4o")
                .then_tool_call("sleep", json!({"ms": 1, "label": "once"}))
                .then_text("done"),
        ),
    );
    let ctx = RunContext::new()
        .with_run_id("r")
        .with_journal(journal.clone())
        .with_spend_guard(guard.clone());
    assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "done");
    let charged = guard.charged.lock().unwrap().clone();
    assert_eq!(charged.len(), 2, "two model calls");
    assert!(
        charged.iter().all(|(a, c)| a == "j" && *c > 0.0),
        "{charged:?}"
    );
    let total: f64 = charged.iter().map(|(_, c)| c).sum();
    assert!((total - ctx.totals().cost_usd).abs() < 1e-12);

    // Resumed from the journal (a restart): answered from the journal, charged nothing.
    let silent = Arc::new(ScriptedProvider::new());
    let agent = AgentLlm::shared(
        Agent::new("j", "").with_tool(sleeper(counter.clone())),
        silent.clone(),
    );
    let ctx = RunContext::new()
        .with_run_id("r")
        .with_journal(Arc::new(MemoryJournal::from_entries(journal.entries())))
        .with_spend_guard(guard.clone());
    assert_eq!(agent.generate_str("go", &ctx).await.unwrap(), "done");
    assert_eq!(guard.charged.lock().unwrap().len(), 2, "no second charge");
    assert_eq!(guard.admitted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refusing_spend_guard_stops_the_run_before_the_provider_is_called() {
    let guard = Arc::new(CountingGuard {
        admitted: AtomicUsize::new(0),
        charged: Default::default(),
        released: AtomicUsize::new(0),
        limit: 0,
    });
    let provider = Arc::new(ScriptedProvider::new().then_text("never"));
    let agent = AgentLlm::shared(Agent::new("j", ""), provider.clone());
    let ctx = RunContext::new().with_spend_guard(guard);
    let err = agent.generate_str("go", &ctx).await.unwrap_err();
    assert!(err.is_budget_exceeded(), "{err}");
    assert!(
        err.to_string().contains("the test budget is spent"),
        "{err}"
    );
    assert_eq!(provider.call_count(), 0);
}

#[tokio::test]
async fn a_failed_model_call_gives_its_spend_hold_back_and_is_not_charged() {
    let guard = Arc::new(CountingGuard {
        admitted: AtomicUsize::new(0),
        charged: Default::default(),
        released: AtomicUsize::new(0),
        limit: 10,
    });
    let provider = Arc::new(ScriptedProvider::from_fn(|_| {
        Err(agentkit_core::Error::provider(
            "scripted",
            agentkit_core::ProviderErrorKind::BadRequest,
            "refused",
        ))
    }));
    let agent = AgentLlm::shared(Agent::new("j", ""), provider);
    let ctx = RunContext::new().with_spend_guard(guard.clone());
    assert!(agent.generate_str("go", &ctx).await.is_err());
    assert!(guard.admitted.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        guard.released.load(Ordering::SeqCst),
        guard.admitted.load(Ordering::SeqCst),
        "every admitted call that failed gave its hold back"
    );
    assert!(guard.charged.lock().unwrap().is_empty());
}
