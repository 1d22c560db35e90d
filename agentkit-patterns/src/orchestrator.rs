//! [`Orchestrator`]: a planner splits the work into steps of parallel tasks for named workers.

use std::fmt;
use std::sync::Arc;

use agentkit_core::{
    AugmentedLlm, Error, GenerateRequest, Generation, GenerationEmitter, GenerationStream,
    RequestParams, Result, RunContext, generate_into, stream_generation,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use crate::common::{
    emit_error, emit_step, finish, inner_params, pattern_span, section, user_request,
};
use crate::structured::Question;

const PATTERN: &str = "orchestrator";

/// A plan: steps run one after another; the tasks of a step run in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Plan {
    /// The steps still to do, in order.
    pub steps: Vec<PlanStep>,
    /// True when the work already done achieves the objective (then `steps` is empty).
    pub is_complete: bool,
}

impl Plan {
    /// A plan with these steps, not complete.
    pub fn new(steps: Vec<PlanStep>) -> Self {
        Self {
            steps,
            is_complete: false,
        }
    }

    /// The plan that says the objective is achieved.
    #[must_use]
    pub fn complete() -> Self {
        Self {
            steps: Vec::new(),
            is_complete: true,
        }
    }
}

/// One step of a [`Plan`]: tasks that do not depend on each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct PlanStep {
    /// What the step achieves.
    pub description: String,
    /// Tasks run in parallel (at least one).
    pub tasks: Vec<PlanTask>,
}

impl PlanStep {
    /// A step.
    pub fn new(description: impl Into<String>, tasks: Vec<PlanTask>) -> Self {
        Self {
            description: description.into(),
            tasks,
        }
    }
}

/// One task, assigned to a named worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct PlanTask {
    /// What to do, self-contained.
    pub description: String,
    /// The worker's name, exactly as listed.
    pub worker: String,
}

impl PlanTask {
    /// A task for `worker`.
    pub fn new(description: impl Into<String>, worker: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            worker: worker.into(),
        }
    }
}

/// What a task produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskResult {
    /// The task.
    pub task: PlanTask,
    /// The worker's answer, or the error when it failed.
    pub output: String,
    /// Whether the worker failed (the planner and synthesizer see it).
    pub failed: bool,
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepResult {
    /// The step.
    pub step: PlanStep,
    /// Its tasks' results, in task order.
    pub tasks: Vec<TaskResult>,
}

/// The full result of an [`Orchestrator`] run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OrchestratorOutcome {
    /// The synthesizer's answer, with the usage of the whole run.
    pub generation: Generation,
    /// Every plan the planner made (valid ones), in order.
    pub plans: Vec<Plan>,
    /// Every executed step, in order.
    pub steps: Vec<StepResult>,
}

/// How the planner plans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanMode {
    /// Plan every remaining step at once, run them all, then ask again whether the objective
    /// is achieved (the default).
    #[default]
    Full,
    /// Plan only the next step, run it, repeat.
    Iterative,
}

/// A planner produces a structured [`Plan`] (steps of tasks, each for a named worker); the
/// tasks of a step run in parallel; a synthesizer writes the final answer from the results.
///
/// An invalid plan (an unknown worker, an empty step, unparsable output) is sent back to the
/// planner with the problem, at most `max_plan_retries` times in a row; after that the run
/// fails with an error that names the problem. `max_iterations` bounds the planning rounds;
/// when it is reached, the synthesizer answers with what was done.
///
/// Streamed ([`generate_stream`](AugmentedLlm::generate_stream)), the orchestrator streams its
/// synthesis; planning and the workers' tasks run as plain `generate` calls.
#[derive(Clone)]
pub struct Orchestrator {
    name: String,
    description: String,
    planner: Arc<dyn AugmentedLlm>,
    synthesizer: Arc<dyn AugmentedLlm>,
    workers: Vec<Worker>,
    mode: PlanMode,
    max_iterations: u32,
    max_plan_retries: u32,
    /// What the planner is asked: a [`Plan`] whose worker names are an `enum` of the workers.
    question: Question,
}

/// A worker and what the planner is told about it.
#[derive(Clone)]
struct Worker {
    llm: Arc<dyn AugmentedLlm>,
    /// Its description, else its instruction (an `AgentLlm`), else empty.
    summary: String,
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("name", &self.name)
            .field("planner", &self.planner.name())
            .field("synthesizer", &self.synthesizer.name())
            .field(
                "workers",
                &self
                    .workers
                    .iter()
                    .map(|w| w.llm.name())
                    .collect::<Vec<_>>(),
            )
            .field("mode", &self.mode)
            .field("max_iterations", &self.max_iterations)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Orchestrator`].
#[derive(Clone)]
#[must_use]
pub struct OrchestratorBuilder {
    name: String,
    description: String,
    planner: Arc<dyn AugmentedLlm>,
    synthesizer: Option<Arc<dyn AugmentedLlm>>,
    workers: Vec<Worker>,
    mode: PlanMode,
    max_iterations: u32,
    max_plan_retries: u32,
}

impl fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .field("name", &self.name)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Start building an orchestrator whose plans come from `planner`.
    pub fn builder(name: impl Into<String>, planner: Arc<dyn AugmentedLlm>) -> OrchestratorBuilder {
        OrchestratorBuilder::new(name, planner)
    }
}

impl OrchestratorBuilder {
    /// Full-plan mode, at most 5 planning rounds, 2 plan retries, the planner as synthesizer.
    pub fn new(name: impl Into<String>, planner: Arc<dyn AugmentedLlm>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            planner,
            synthesizer: None,
            workers: Vec::new(),
            mode: PlanMode::Full,
            max_iterations: 5,
            max_plan_retries: 2,
        }
    }

    /// Add a worker, named by itself and described to the planner by its description, else
    /// its instruction (an [`AgentLlm`](agentkit_core::AgentLlm)), else its name.
    pub fn with_worker(self, worker: impl AugmentedLlm + 'static) -> Self {
        self.with_shared_worker(Arc::new(worker))
    }

    /// Add a shared worker (described as in
    /// [`with_worker`](Self::with_worker)).
    pub fn with_shared_worker(mut self, worker: Arc<dyn AugmentedLlm>) -> Self {
        let summary = worker.description().trim().to_owned();
        self.workers.push(Worker {
            llm: worker,
            summary,
        });
        self
    }

    /// Write the final answer with this LLM (default: the planner).
    pub fn with_synthesizer(mut self, synthesizer: Arc<dyn AugmentedLlm>) -> Self {
        self.synthesizer = Some(synthesizer);
        self
    }

    /// Full-plan or iterative planning.
    pub fn with_mode(mut self, mode: PlanMode) -> Self {
        self.mode = mode;
        self
    }

    /// At most `n` planning rounds (at least 1).
    pub fn with_max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = n.max(1);
        self
    }

    /// Send an invalid plan back to the planner at most `n` times in a row.
    pub fn with_max_plan_retries(mut self, n: u32) -> Self {
        self.max_plan_retries = n;
        self
    }

    /// Describe the orchestrator (shown when it is a route or a worker).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Finish. Fails when there is no worker or two workers share a name.
    pub fn build(self) -> Result<Orchestrator> {
        let name = &self.name;
        if self.workers.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "orchestrator `{name}` has no workers; add some with `with_worker`"
            )));
        }
        for (i, w) in self.workers.iter().enumerate() {
            if self.workers[..i]
                .iter()
                .any(|o| o.llm.name() == w.llm.name())
            {
                return Err(Error::InvalidRequest(format!(
                    "orchestrator `{name}` has two workers named `{}`; worker names must be unique",
                    w.llm.name()
                )));
            }
        }
        let synthesizer = self
            .synthesizer
            .unwrap_or_else(|| Arc::clone(&self.planner));
        // A strict-mode planner can name only real workers, gives every step a task, and gives
        // steps unless it says the objective is achieved.
        let question = Question::of::<Plan>()
            .with_names(
                "/properties/steps/items/properties/tasks/items/properties/worker",
                self.workers.iter().map(|w| w.llm.name().to_owned()),
            )?
            .with_items("/properties/steps/items/properties/tasks", 1, None)?
            .with_branches(
                "/properties/steps",
                &[
                    json!({"minItems": 1, "description": "The steps still to do, in order."}),
                    json!({"maxItems": 0, "description": "No steps: the objective is achieved (is_complete true)."}),
                ],
            )?;
        Ok(Orchestrator {
            name: self.name,
            description: self.description,
            planner: self.planner,
            synthesizer,
            workers: self.workers,
            mode: self.mode,
            max_iterations: self.max_iterations,
            max_plan_retries: self.max_plan_retries,
            question,
        })
    }
}

fn render_results(steps: &[StepResult]) -> String {
    if steps.is_empty() {
        return "Nothing has been done yet.\n".to_owned();
    }
    let mut out = String::new();
    for (i, s) in steps.iter().enumerate() {
        out.push_str(&format!("Step {}: {}\n", i + 1, s.step.description));
        for t in &s.tasks {
            let status = if t.failed { " (FAILED)" } else { "" };
            out.push_str(&format!(
                "- Task for `{}`{status}: {}\n  Result: {}\n",
                t.task.worker,
                t.task.description,
                t.output.trim().replace('\n', "\n  ")
            ));
        }
    }
    out
}

impl Orchestrator {
    /// Run and return the answer with every plan and step result.
    pub async fn orchestrate(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<OrchestratorOutcome> {
        self.orchestrate_with(request.into(), ctx, None).await
    }

    async fn orchestrate_with(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<OrchestratorOutcome> {
        let scope = ctx.scoped();
        let mut outcome = self
            .run(request, &scope, emitter)
            .instrument(pattern_span(PATTERN, &self.name))
            .await?;
        outcome.generation = finish(&scope, outcome.generation);
        Ok(outcome)
    }

    fn worker(&self, name: &str) -> Option<&Arc<dyn AugmentedLlm>> {
        self.workers
            .iter()
            .find(|w| w.llm.name() == name)
            .map(|w| &w.llm)
    }

    fn validate(&self, plan: &Plan) -> std::result::Result<(), String> {
        if !plan.is_complete && plan.steps.is_empty() {
            return Err("the plan is not complete but has no steps".to_owned());
        }
        let mut problems = Vec::new();
        for (i, step) in plan.steps.iter().enumerate() {
            if step.tasks.is_empty() {
                problems.push(format!("step {} has no tasks", i + 1));
            }
            for t in &step.tasks {
                if self.worker(&t.worker).is_none() {
                    problems.push(format!(
                        "step {} assigns a task to `{}`, which is not a worker",
                        i + 1,
                        t.worker
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}; the workers are: {}",
                problems.join("; "),
                self.workers
                    .iter()
                    .map(|w| format!("`{}`", w.llm.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    fn plan_prompt(&self, objective: &str, done: &[StepResult]) -> String {
        let mut workers = String::new();
        for w in &self.workers {
            let name = w.llm.name();
            let about = if w.summary.is_empty() {
                name
            } else {
                &w.summary
            };
            workers.push_str(&format!("- `{name}`: {about}\n"));
        }
        let what = match self.mode {
            PlanMode::Full => "Plan all the remaining steps needed to achieve the objective.",
            PlanMode::Iterative => "Plan only the next step needed to achieve the objective.",
        };
        format!(
            "You plan work for a team of workers.\n\n{}\n{}\n{}\n{what} Steps run one after \
             another; the tasks of a step run in parallel, so put tasks that need earlier \
             results in a later step. Assign every task to one worker by its exact name and \
             make each task description self-contained. If the work done already achieves the \
             objective, answer with is_complete true and no steps.",
            section("Objective", objective),
            section("Workers", &workers),
            section("Work done so far", &render_results(done)),
        )
    }

    async fn plan(&self, objective: &str, done: &[StepResult], ctx: &RunContext) -> Result<Plan> {
        let base = self.plan_prompt(objective, done);
        let mut prompt = base.clone();
        let mut attempt = 0;
        loop {
            ctx.check()?;
            let request =
                user_request(prompt.clone(), RequestParams::new().with_use_history(false));
            let problem = match self
                .question
                .ask::<Plan>(self.planner.as_ref(), request, ctx)
                .await
            {
                Ok(plan) => match self.validate(&plan) {
                    Ok(()) => return Ok(plan),
                    Err(p) => p,
                },
                Err(e @ Error::StructuredOutput { .. }) => e.to_string(),
                Err(e) => return Err(e),
            };
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "plan_rejected",
                json!({"attempt": attempt, "problem": problem}),
            );
            if attempt >= self.max_plan_retries {
                return Err(Error::InvalidRequest(format!(
                    "orchestrator `{}`: the planner `{}` produced no valid plan after {} attempts; \
                     last problem: {problem}. Check the planner's instruction and the worker names",
                    self.name,
                    self.planner.name(),
                    attempt + 1
                )));
            }
            attempt += 1;
            prompt = format!(
                "{base}\n\nYour previous plan was rejected: {problem}. Answer again with a valid plan."
            );
        }
    }

    async fn run_step(
        &self,
        index: usize,
        step: PlanStep,
        objective: &str,
        done: &[StepResult],
        params: &RequestParams,
        ctx: &RunContext,
    ) -> Result<StepResult> {
        ctx.check()?;
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "step_started",
            json!({"index": index, "description": step.description, "tasks": step.tasks}),
        );
        let context = render_results(done);
        let context = context.as_str();
        // Each task journals in its own key space, taken in task order before any task runs.
        let futs = step
            .tasks
            .iter()
            .enumerate()
            .map(|(t, task)| (task, ctx.branch(&format!("{}[{index}.{t}]", self.name))));
        let futs = futs.map(|(task, ctx)| async move {
            let ctx = &ctx;
            let worker = self.worker(&task.worker).ok_or_else(|| {
                Error::InvalidRequest(format!("no worker named `{}`", task.worker))
            })?;
            let prompt = format!(
                "You are one worker on a larger objective.\n\n{}\n{}\n{}\nDo your task and reply \
                 with its result only.",
                section("Objective", objective),
                section("Results so far", context),
                section("Your task", &task.description),
            );
            match worker
                .generate(user_request(prompt, params.clone()), ctx)
                .await
            {
                Ok(g) => Ok(TaskResult {
                    task: task.clone(),
                    output: g.text(),
                    failed: false,
                }),
                Err(e) if e.is_fatal_for_run() => Err(e),
                Err(e) => {
                    emit_error(
                        ctx,
                        format!("orchestrator `{}` worker `{}`", self.name, task.worker),
                        &e,
                    );
                    Ok(TaskResult {
                        task: task.clone(),
                        output: format!("error: {e}"),
                        failed: true,
                    })
                }
            }
        });
        let tasks = futures::future::try_join_all(futs).await?;
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "step_finished",
            json!({
                "index": index,
                "results": tasks.iter().map(|t| json!({"worker": t.task.worker, "failed": t.failed, "output": t.output})).collect::<Vec<_>>(),
            }),
        );
        Ok(StepResult { step, tasks })
    }

    async fn run(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<OrchestratorOutcome> {
        let objective = request.last_user_text();
        let params = inner_params(&request.params);
        let mut plans = Vec::new();
        let mut steps: Vec<StepResult> = Vec::new();
        let mut completed = false;
        for iteration in 0..self.max_iterations {
            let plan = self.plan(&objective, &steps, ctx).await?;
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "plan",
                json!({"iteration": iteration, "plan": plan}),
            );
            plans.push(plan.clone());
            if plan.is_complete && plan.steps.is_empty() {
                completed = true;
                break;
            }
            let todo: Vec<PlanStep> = match self.mode {
                PlanMode::Full => plan.steps,
                PlanMode::Iterative => plan.steps.into_iter().take(1).collect(),
            };
            for step in todo {
                let index = steps.len();
                let result = self
                    .run_step(index, step, &objective, &steps, &params, ctx)
                    .await?;
                steps.push(result);
            }
            if plan.is_complete {
                completed = true;
                break;
            }
        }
        if !completed {
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "max_iterations_reached",
                json!({"max_iterations": self.max_iterations}),
            );
        }
        ctx.check()?;
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "synthesis_started",
            json!({"steps": steps.len()}),
        );
        let prompt = format!(
            "{}\n{}\nWrite the final answer to the objective from these results.",
            section("Objective", &objective),
            section("Results", &render_results(&steps)),
        );
        let mut synth_params = request.params.clone();
        synth_params.use_history = Some(false);
        let generation = generate_into(
            self.synthesizer.as_ref(),
            user_request(prompt, synth_params),
            ctx,
            emitter,
        )
        .await?;
        Ok(OrchestratorOutcome {
            generation,
            plans,
            steps,
        })
    }
}

#[async_trait]
impl AugmentedLlm for Orchestrator {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn end_thread(&self, thread: &str) -> Result<()> {
        agentkit_core::llm::end_thread_in([&self.planner, &self.synthesizer], thread).await?;
        for worker in &self.workers {
            worker.llm.end_thread(thread).await?;
        }
        Ok(())
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        Ok(self.orchestrate(request, ctx).await?.generation)
    }

    fn generate_stream<'a>(
        &'a self,
        request: GenerateRequest,
        ctx: &'a RunContext,
    ) -> GenerationStream<'a> {
        stream_generation(move |emitter| async move {
            Ok(self
                .orchestrate_with(request, ctx, Some(&emitter))
                .await?
                .generation)
        })
    }
}
