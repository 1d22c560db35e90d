#![doc = include_str!("../README.md")]

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
mod structured;
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
