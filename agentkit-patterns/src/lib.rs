//! # agentkit-patterns
//!
//! Every pattern of Anthropic's *Building Effective Agents*, plus Swarm, over
//! [`agentkit_core::AugmentedLlm`]. Each pattern is itself an `AugmentedLlm`, so patterns nest
//! freely: a router whose routes are parallels, an evaluator-optimizer as the planner of an
//! orchestrator, a chain as a worker.
//!
//! | Pattern | What it does |
//! |---|---|
//! | [`Chain`] | runs LLMs one after another, each getting the previous output or the transcript |
//! | [`Parallel`] | fans a request out to LLMs and functions, fans the answers in by an LLM or a function |
//! | [`Router`] | picks the best route (agent, tool source, function) by an LLM or by embeddings |
//! | [`IntentClassifier`] | names the user's intents with scores and extracted entities |
//! | [`EvaluatorOptimizer`] | refines an answer until an evaluator rates it good enough |
//! | [`Orchestrator`] | a planner splits the work into steps of parallel tasks for named workers |
//! | [`Swarm`] | agents hand the conversation to each other through `transfer_to_<agent>` tools |
//! | [`AgentsAsTools`] | offers agents to a parent agent as `agent__<name>` tools |
//!
//! Every pattern emits its steps as [`RunEvent::PatternStep`](agentkit_core::RunEvent)s, runs
//! inside a tracing span, checks the [`RunContext`](agentkit_core::RunContext) (cancellation,
//! deadline, budget) before every step, and reports in its
//! [`Generation`](agentkit_core::Generation) the usage and cost of every model call made inside
//! it.
//!
//! ```
//! use agentkit_core::{Agent, AgentLlm, AugmentedLlm, RunContext, ScriptedProvider};
//! use agentkit_patterns::Chain;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let writer = AgentLlm::new(
//!     Agent::new("writer", "Write a one-line slogan."),
//!     ScriptedProvider::new().then_text("Fresh bread, every morning."),
//! );
//! let editor = AgentLlm::new(
//!     Agent::new("editor", "Make the slogan punchier."),
//!     ScriptedProvider::new().then_text("Bread. Fresh. Daily."),
//! );
//! let chain = Chain::builder("slogan").with_step(writer).with_step(editor).build()?;
//! let g = chain.generate("A slogan for my bakery".into(), &RunContext::new()).await?;
//! assert_eq!(g.text(), "Bread. Fresh. Daily.");
//! assert_eq!(g.llm_calls, 2); // usage rolls up from both agents
//! # Ok::<_, agentkit_core::Error>(()) }).unwrap();
//! ```

mod agents_as_tools;
mod chain;
mod common;
mod embedder;
mod evaluator;
mod function;
mod intent;
mod orchestrator;
mod parallel;
mod router;
mod swarm;

pub use agents_as_tools::{AGENT_TOOL_PREFIX, AgentsAsTools};
pub use chain::{Chain, ChainBuilder, ChainInput};
pub use embedder::BagOfWordsEmbedder;
pub use evaluator::{
    Evaluation, EvaluatorOptimizer, EvaluatorOptimizerBuilder, OptimizationOutcome, Rating,
    Refinement,
};
pub use function::FnLlm;
pub use intent::{Entity, Intent, IntentClassifier, IntentClassifierBuilder, IntentMatch};
pub use orchestrator::{
    Orchestrator, OrchestratorBuilder, OrchestratorOutcome, Plan, PlanMode, PlanStep, PlanTask,
    StepResult, TaskResult,
};
pub use parallel::{BranchOutcome, FailurePolicy, FanInInput, Parallel, ParallelBuilder};
pub use router::{RouteKind, RouteResult, Router, RouterBuilder};
pub use swarm::{ContextVariables, Swarm, SwarmBuilder, SwarmMember, SwarmOutcome};
