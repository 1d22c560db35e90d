//! [`EvaluatorOptimizer`]: refine an answer until an evaluator rates it good enough.

use std::fmt;
use std::sync::Arc;

use agentkit_core::{
    AugmentedLlm, Error, GenerateRequest, Generation, RequestParams, Result, RunContext,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

use crate::common::{emit_step, finish, pattern_span, section, user_request};
use crate::structured::Question;

const PATTERN: &str = "evaluator_optimizer";

/// A quality rating, from worst to best (ordered: `Poor < Fair < Good < Excellent`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rating {
    /// Wrong or unusable.
    Poor,
    /// Usable with significant problems.
    Fair,
    /// Good, minor problems at most.
    Good,
    /// Nothing to improve.
    Excellent,
}

impl Rating {
    /// Every rating, worst first.
    const ALL: [Rating; 4] = [Rating::Poor, Rating::Fair, Rating::Good, Rating::Excellent];

    /// The rating as the evaluator writes it (`poor`, `fair`, `good`, `excellent`).
    fn as_str(self) -> &'static str {
        match self {
            Rating::Poor => "poor",
            Rating::Fair => "fair",
            Rating::Good => "good",
            Rating::Excellent => "excellent",
        }
    }
}

/// An evaluator's verdict on one response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Evaluation {
    /// The rating.
    pub rating: Rating,
    /// What is good and what to fix, concretely.
    pub feedback: String,
    /// Whether another attempt would help.
    pub needs_improvement: bool,
    /// The aspects the next attempt should work on.
    #[serde(default)]
    pub focus_areas: Vec<String>,
}

impl Evaluation {
    /// An evaluation.
    pub fn new(rating: Rating, feedback: impl Into<String>) -> Self {
        Self {
            rating,
            feedback: feedback.into(),
            needs_improvement: rating < Rating::Excellent,
            focus_areas: Vec::new(),
        }
    }
}

/// One attempt and its evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Refinement {
    /// 0 for the first answer, then 1, 2, ... for each refinement.
    pub attempt: u32,
    /// The optimizer's answer.
    pub response: String,
    /// The evaluator's verdict.
    pub evaluation: Evaluation,
}

/// The full result of an [`EvaluatorOptimizer`] run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OptimizationOutcome {
    /// The best answer (highest rating; the latest on ties), with the usage of the whole run.
    pub generation: Generation,
    /// Every attempt and its evaluation, in order.
    pub history: Vec<Refinement>,
    /// Which attempt [`generation`](Self::generation) is.
    pub best_attempt: u32,
    /// Whether the best answer reached `min_rating`.
    pub met_bar: bool,
}

/// An optimizer writes an answer, an evaluator rates it ([`Evaluation`]: rating, feedback, focus
/// areas); while the rating is below `min_rating` and refinements remain, the optimizer
/// rewrites its answer with the feedback. If the bar is never met, the best answer so far is
/// returned, and the whole history is kept in [`OptimizationOutcome`].
///
/// Streamed ([`generate_stream`](AugmentedLlm::generate_stream)), it yields its final accepted
/// answer as one delta once the evaluator has accepted it (or the refinements ran out): an
/// answer is known to be the one only after it is rated, so drafts are not streamed.
#[derive(Clone)]
pub struct EvaluatorOptimizer {
    name: String,
    description: String,
    optimizer: Arc<dyn AugmentedLlm>,
    evaluator: Arc<dyn AugmentedLlm>,
    min_rating: Rating,
    max_refinements: u32,
    criteria: Option<String>,
    /// What the evaluator is asked: an [`Evaluation`] whose rating is an `enum` of the levels.
    question: Question,
}

impl fmt::Debug for EvaluatorOptimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvaluatorOptimizer")
            .field("name", &self.name)
            .field("optimizer", &self.optimizer.name())
            .field("evaluator", &self.evaluator.name())
            .field("min_rating", &self.min_rating)
            .field("max_refinements", &self.max_refinements)
            .finish_non_exhaustive()
    }
}

/// Builds an [`EvaluatorOptimizer`].
#[derive(Clone)]
#[must_use]
pub struct EvaluatorOptimizerBuilder {
    inner: EvaluatorOptimizer,
}

impl fmt::Debug for EvaluatorOptimizerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl EvaluatorOptimizer {
    /// Start building: `optimizer` writes answers, `evaluator` rates them.
    pub fn builder(
        name: impl Into<String>,
        optimizer: Arc<dyn AugmentedLlm>,
        evaluator: Arc<dyn AugmentedLlm>,
    ) -> EvaluatorOptimizerBuilder {
        EvaluatorOptimizerBuilder::new(name, optimizer, evaluator)
    }
}

impl EvaluatorOptimizerBuilder {
    /// `min_rating` good, at most 3 refinements.
    pub fn new(
        name: impl Into<String>,
        optimizer: Arc<dyn AugmentedLlm>,
        evaluator: Arc<dyn AugmentedLlm>,
    ) -> Self {
        Self {
            inner: EvaluatorOptimizer {
                name: name.into(),
                description: String::new(),
                optimizer,
                evaluator,
                min_rating: Rating::Good,
                max_refinements: 3,
                criteria: None,
                question: Question::of::<Evaluation>(),
            },
        }
    }

    /// Accept an answer rated at least this.
    pub fn with_min_rating(mut self, rating: Rating) -> Self {
        self.inner.min_rating = rating;
        self
    }

    /// At most this many rewrites after the first answer.
    pub fn with_max_refinements(mut self, n: u32) -> Self {
        self.inner.max_refinements = n;
        self
    }

    /// What the evaluator should judge, added to its prompt.
    pub fn with_criteria(mut self, criteria: impl Into<String>) -> Self {
        self.inner.criteria = Some(criteria.into());
        self
    }

    /// Describe it (shown when it is a route or a worker).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.inner.description = description.into();
        self
    }

    /// Finish. Fails when the optimizer and the evaluator are the same object (an agent with
    /// memory would then grade its own conversation).
    pub fn build(mut self) -> Result<EvaluatorOptimizer> {
        self.inner.question = self
            .inner
            .question
            .with_names("/properties/rating", Rating::ALL.map(Rating::as_str))?;
        let i = &self.inner;
        if std::ptr::addr_eq(Arc::as_ptr(&i.optimizer), Arc::as_ptr(&i.evaluator)) {
            return Err(Error::InvalidRequest(format!(
                "evaluator-optimizer `{}`: the optimizer and the evaluator are the same object; \
                 give the evaluator its own agent",
                i.name
            )));
        }
        Ok(self.inner)
    }
}

impl EvaluatorOptimizer {
    /// Run and return the best answer with the whole refinement history.
    pub async fn optimize(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<OptimizationOutcome> {
        let scope = ctx.scoped();
        let mut outcome = self
            .run(request.into(), &scope)
            .instrument(pattern_span(PATTERN, &self.name))
            .await?;
        outcome.generation = finish(&scope, outcome.generation);
        Ok(outcome)
    }

    async fn run(&self, request: GenerateRequest, ctx: &RunContext) -> Result<OptimizationOutcome> {
        let task = request.last_user_text();
        let mut history: Vec<Refinement> = Vec::new();
        let mut generations: Vec<Generation> = Vec::new();
        let mut next = request.clone();
        for attempt in 0..=self.max_refinements {
            ctx.check()?;
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "attempt_started",
                json!({"attempt": attempt}),
            );
            let g = self.optimizer.generate(next.clone(), ctx).await?;
            let response = g.text();
            ctx.check()?;
            let evaluation = self.evaluate(&task, &response, ctx).await?;
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "rating",
                json!({
                    "attempt": attempt,
                    "rating": evaluation.rating,
                    "feedback": evaluation.feedback,
                    "focus_areas": evaluation.focus_areas,
                }),
            );
            let good_enough = evaluation.rating >= self.min_rating;
            if !good_enough && attempt < self.max_refinements {
                let mut params = request.params.clone();
                params.use_history = Some(false);
                next = user_request(self.refine_prompt(&task, &response, &evaluation), params);
            }
            history.push(Refinement {
                attempt,
                response,
                evaluation,
            });
            generations.push(g);
            if good_enough {
                break;
            }
        }
        // Best rating; the latest attempt wins ties (it had the most feedback).
        let best = history
            .iter()
            .enumerate()
            .max_by_key(|(i, r)| (r.evaluation.rating, *i))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let met_bar = history
            .get(best)
            .is_some_and(|r| r.evaluation.rating >= self.min_rating);
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "finished",
            json!({
                "best_attempt": best,
                "met_bar": met_bar,
                "attempts": history.len(),
            }),
        );
        let generation = generations.into_iter().nth(best).ok_or_else(|| {
            Error::InvalidRequest(format!(
                "evaluator-optimizer `{}` produced no answer",
                self.name
            ))
        })?;
        Ok(OptimizationOutcome {
            generation,
            history,
            best_attempt: u32::try_from(best).unwrap_or(u32::MAX),
            met_bar,
        })
    }

    async fn evaluate(&self, task: &str, response: &str, ctx: &RunContext) -> Result<Evaluation> {
        let mut prompt = format!(
            "Evaluate how well the response below answers the request.\n\n{}\n{}",
            section("Request", task),
            section("Response", response)
        );
        if let Some(c) = &self.criteria {
            prompt.push('\n');
            prompt.push_str(&section("Criteria", c));
        }
        prompt.push_str(
            "\nRate it poor, fair, good or excellent; give concrete feedback; say whether it \
             needs improvement; list the focus areas for a better version.",
        );
        self.question
            .ask(
                self.evaluator.as_ref(),
                user_request(prompt, RequestParams::new().with_use_history(false)),
                ctx,
            )
            .await
    }

    fn refine_prompt(&self, task: &str, response: &str, evaluation: &Evaluation) -> String {
        let mut out = format!(
            "{}\n{}\n",
            section("Request", task),
            section("Your previous answer", response)
        );
        out.push_str(&section(
            &format!("Feedback (rated {})", evaluation.rating.as_str()),
            &evaluation.feedback,
        ));
        if !evaluation.focus_areas.is_empty() {
            out.push('\n');
            out.push_str(&section(
                "Focus on",
                &evaluation
                    .focus_areas
                    .iter()
                    .map(|f| format!("- {f}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
        out.push_str("\nWrite an improved answer to the request, addressing the feedback. Reply with the answer only.");
        out
    }
}

#[async_trait]
impl AugmentedLlm for EvaluatorOptimizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn end_thread(&self, thread: &str) -> Result<()> {
        agentkit_core::llm::end_thread_in([&self.optimizer, &self.evaluator], thread).await
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        Ok(self.optimize(request, ctx).await?.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rating_names_are_the_serde_names() {
        for r in Rating::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
