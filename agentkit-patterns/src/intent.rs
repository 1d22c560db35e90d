//! [`IntentClassifier`]: name the user's intents, by an LLM or by embeddings.

use std::fmt;
use std::sync::Arc;

use agentkit_core::{
    AugmentedLlm, Embedder, Error, GenerateRequest, Generation, RequestParams, Result, RunContext,
    cosine_similarity,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::common::{emit_step, finish_text, pattern_span, user_request};
use crate::structured::Question;

const PATTERN: &str = "intent_classifier";

/// An intent the classifier can recognise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Intent {
    /// Name, e.g. `book_flight`.
    pub name: String,
    /// What the user wants when they have this intent.
    pub description: String,
    /// Example utterances.
    #[serde(default)]
    pub examples: Vec<String>,
}

impl Intent {
    /// An intent with a name and a description.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            examples: Vec::new(),
        }
    }

    /// Add an example utterance.
    #[must_use]
    pub fn with_example(mut self, example: impl Into<String>) -> Self {
        self.examples.push(example.into());
        self
    }
}

/// A named value found in the request (a date, a city, an order number...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Entity {
    /// What it is, e.g. `destination`.
    pub name: String,
    /// The value as written in the request, e.g. `Lisbon`.
    pub value: String,
}

impl Entity {
    /// An entity.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// One recognised intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IntentMatch {
    /// The intent's name.
    pub intent: String,
    /// How sure, from 0 to 1 (LLM confidence, or best cosine similarity).
    pub confidence: f64,
    /// Why, when an LLM decided.
    pub reasoning: Option<String>,
    /// Entities extracted from the request (LLM classifier only).
    pub entities: Vec<Entity>,
}

impl IntentMatch {
    /// A match with no reasoning and no entities.
    pub fn new(intent: impl Into<String>, confidence: f64) -> Self {
        Self {
            intent: intent.into(),
            confidence,
            reasoning: None,
            entities: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
struct IntentDecision {
    /// The intents expressed by the request, most likely first.
    intents: Vec<IntentChoice>,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct IntentChoice {
    /// The intent's name, exactly as listed.
    intent: String,
    /// Confidence from 0 to 1.
    confidence: f64,
    /// One sentence on why.
    reasoning: String,
    /// Entities found in the request that matter for this intent.
    #[serde(default)]
    entities: Vec<Entity>,
}

#[derive(Clone)]
enum Classifier {
    Llm(Arc<dyn AugmentedLlm>),
    Embedding {
        embedder: Arc<dyn Embedder>,
        /// For each intent, the vectors of its description and examples.
        vectors: Arc<OnceCell<Vec<Vec<Vec<f32>>>>>,
    },
}

/// Recognises which of a set of [`Intent`]s a request expresses, ranked, with scores (and, with
/// an LLM, extracted entities).
///
/// As an [`AugmentedLlm`] its answer is the JSON array of [`IntentMatch`]es.
///
/// ```
/// use agentkit_core::RunContext;
/// use agentkit_patterns::{BagOfWordsEmbedder, Intent, IntentClassifier};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let classifier = IntentClassifier::builder("intents")
///     .with_embedder(BagOfWordsEmbedder::new())
///     .with_intent(Intent::new("greeting", "The user says hello").with_example("hi there"))
///     .with_intent(Intent::new("cancel_order", "The user wants to cancel an order")
///         .with_example("cancel my order please"))
///     .build()?;
/// let found = classifier.classify("please cancel order 42", &RunContext::new()).await?;
/// assert_eq!(found[0].intent, "cancel_order");
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct IntentClassifier {
    name: String,
    intents: Vec<Intent>,
    classifier: Classifier,
    top_k: usize,
    /// What an LLM classifier is asked: an [`IntentDecision`] whose intent names are an `enum`
    /// of the intents.
    question: Question,
}

impl fmt::Debug for IntentClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntentClassifier")
            .field("name", &self.name)
            .field("intents", &self.intents)
            .field("top_k", &self.top_k)
            .finish_non_exhaustive()
    }
}

/// Builds an [`IntentClassifier`].
#[derive(Clone)]
#[must_use]
pub struct IntentClassifierBuilder {
    name: String,
    intents: Vec<Intent>,
    classifier: Option<Classifier>,
    top_k: usize,
}

impl fmt::Debug for IntentClassifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntentClassifierBuilder")
            .field("name", &self.name)
            .field("intents", &self.intents)
            .finish_non_exhaustive()
    }
}

impl IntentClassifier {
    /// Start building a classifier named `name`.
    pub fn builder(name: impl Into<String>) -> IntentClassifierBuilder {
        IntentClassifierBuilder::new(name)
    }
}

impl IntentClassifierBuilder {
    /// A classifier named `name`, with no intents yet and `top_k` 1.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            intents: Vec::new(),
            classifier: None,
            top_k: 1,
        }
    }

    /// Add an intent.
    pub fn with_intent(mut self, intent: Intent) -> Self {
        self.intents.push(intent);
        self
    }

    /// Classify with this LLM (structured output, with entities).
    pub fn with_llm(mut self, llm: impl AugmentedLlm + 'static) -> Self {
        self.classifier = Some(Classifier::Llm(Arc::new(llm)));
        self
    }

    /// Classify with this shared LLM.
    pub fn with_shared_llm(mut self, llm: Arc<dyn AugmentedLlm>) -> Self {
        self.classifier = Some(Classifier::Llm(llm));
        self
    }

    /// Classify by the best cosine similarity to each intent's description and examples.
    pub fn with_embedder(self, embedder: impl Embedder + 'static) -> Self {
        self.with_shared_embedder(Arc::new(embedder))
    }

    /// Classify with this shared embedder.
    pub fn with_shared_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.classifier = Some(Classifier::Embedding {
            embedder,
            vectors: Arc::new(OnceCell::new()),
        });
        self
    }

    /// Return up to `k` intents (at least 1).
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k.max(1);
        self
    }

    /// Finish. Fails when there is no intent, two intents share a name, or no classifier is set.
    pub fn build(self) -> Result<IntentClassifier> {
        let name = &self.name;
        if self.intents.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "intent classifier `{name}` has no intents; add some with `with_intent`"
            )));
        }
        for (i, it) in self.intents.iter().enumerate() {
            if self.intents[..i].iter().any(|o| o.name == it.name) {
                return Err(Error::InvalidRequest(format!(
                    "intent classifier `{name}` has two intents named `{}`",
                    it.name
                )));
            }
        }
        let Some(classifier) = self.classifier else {
            return Err(Error::InvalidRequest(format!(
                "intent classifier `{name}` has no classifier; set one with `with_llm` or `with_embedder`"
            )));
        };
        let question = Question::of::<IntentDecision>()
            .with_names(
                "/properties/intents/items/properties/intent",
                self.intents.iter().map(|i| i.name.clone()),
            )?
            .with_items("/properties/intents", 0, Some(self.top_k))?;
        Ok(IntentClassifier {
            name: self.name,
            intents: self.intents,
            classifier,
            top_k: self.top_k,
            question,
        })
    }
}

impl IntentClassifier {
    /// The intents of `request`, most likely first, at most `top_k`. An empty list means no
    /// known intent matched.
    pub async fn classify(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<Vec<IntentMatch>> {
        let request = request.into();
        ctx.check()?;
        let text = request.last_user_text();
        let mut found = match &self.classifier {
            Classifier::Llm(llm) => self.classify_llm(llm.as_ref(), &text, ctx).await?,
            Classifier::Embedding { embedder, vectors } => {
                self.classify_embedding(embedder.as_ref(), vectors, &text, ctx)
                    .await?
            }
        };
        found.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        found.truncate(self.top_k);
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "intents_classified",
            json!({ "intents": found }),
        );
        Ok(found)
    }

    async fn classify_llm(
        &self,
        llm: &dyn AugmentedLlm,
        text: &str,
        ctx: &RunContext,
    ) -> Result<Vec<IntentMatch>> {
        let mut prompt = String::from("Classify the intent of the request below. Known intents:\n");
        for it in &self.intents {
            prompt.push_str(&format!("- `{}`: {}", it.name, it.description));
            if !it.examples.is_empty() {
                let ex: Vec<String> = it.examples.iter().map(|e| format!("\"{e}\"")).collect();
                prompt.push_str(&format!(" (examples: {})", ex.join(", ")));
            }
            prompt.push('\n');
        }
        prompt.push_str(&format!(
            "\nRequest:\n{text}\n\nAnswer with up to {} intents the request expresses, most likely \
             first, each with its exact name, a confidence from 0 to 1, one sentence of reasoning \
             and the entities (name and value as written) the request contains. Answer with an \
             empty list if no intent fits.",
            self.top_k
        ));
        let request = user_request(prompt, RequestParams::new().with_use_history(false));
        let decision: IntentDecision = self.question.ask(llm, request, ctx).await?;
        let mut out: Vec<IntentMatch> = Vec::new();
        let mut unknown = Vec::new();
        for c in decision.intents {
            if !self.intents.iter().any(|i| i.name == c.intent) {
                unknown.push(c.intent);
                continue;
            }
            if out.iter().any(|m| m.intent == c.intent) {
                continue;
            }
            out.push(IntentMatch {
                intent: c.intent,
                confidence: c.confidence.clamp(0.0, 1.0),
                reasoning: Some(c.reasoning),
                entities: c.entities,
            });
        }
        if !unknown.is_empty() {
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "unknown_intents_ignored",
                json!({ "intents": unknown }),
            );
        }
        Ok(out)
    }

    async fn classify_embedding(
        &self,
        embedder: &dyn Embedder,
        cache: &OnceCell<Vec<Vec<Vec<f32>>>>,
        text: &str,
        ctx: &RunContext,
    ) -> Result<Vec<IntentMatch>> {
        let what = format!("embeddings of intent classifier `{}`", self.name);
        let vectors = cache
            .get_or_try_init(|| async {
                let mut texts = Vec::new();
                let mut owner = Vec::new();
                for (i, it) in self.intents.iter().enumerate() {
                    texts.push(format!("{}: {}", it.name, it.description));
                    owner.push(i);
                    for e in &it.examples {
                        texts.push(e.clone());
                        owner.push(i);
                    }
                }
                let flat = ctx.guard(&what, embedder.embed(&texts)).await?;
                if flat.len() != texts.len() {
                    return Err(Error::InvalidRequest(format!(
                        "intent classifier `{}`: the embedder returned {} vectors for {} texts",
                        self.name,
                        flat.len(),
                        texts.len()
                    )));
                }
                let mut grouped = vec![Vec::new(); self.intents.len()];
                for (v, i) in flat.into_iter().zip(owner) {
                    grouped[i].push(v);
                }
                Ok(grouped)
            })
            .await?;
        let query = ctx.guard(&what, embedder.embed(&[text.to_owned()])).await?;
        let Some(q) = query.first() else {
            return Err(Error::InvalidRequest(format!(
                "intent classifier `{}`: the embedder returned no vector for the request",
                self.name
            )));
        };
        Ok(self
            .intents
            .iter()
            .zip(vectors)
            .map(|(it, vs)| {
                let best = vs
                    .iter()
                    .map(|v| f64::from(cosine_similarity(q, v)))
                    .fold(0.0f64, f64::max);
                IntentMatch::new(it.name.clone(), best)
            })
            .collect())
    }
}

#[async_trait]
impl AugmentedLlm for IntentClassifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        "Classifies the intent of a request; answers with a JSON list of intents."
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        let scope = ctx.scoped();
        async {
            let found = self.classify(request, &scope).await?;
            let text = serde_json::to_string(&found)
                .map_err(|e| Error::json(format!("intents of `{}`", self.name), e))?;
            Ok(finish_text(
                &scope,
                text,
                format!("classifier:{}", self.name),
            ))
        }
        .instrument(pattern_span(PATTERN, &self.name))
        .await
    }
}
