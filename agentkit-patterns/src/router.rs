//! [`Router`]: pick the best handler for a request, by an LLM or by embeddings.

use std::fmt;
use std::sync::Arc;

use agentkit_core::{
    Agent, AgentLlm, AugmentedLlm, Embedder, Error, GenerateRequest, Generation, GenerationEmitter,
    GenerationStream, LlmProvider, RequestParams, Result, RunContext, ToolSource,
    cosine_similarity, generate_into, stream_generation,
};
use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::Instrument;

use crate::common::{emit_step, finish, pattern_span, user_request};
use crate::structured::Question;

const PATTERN: &str = "router";

/// What a route leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RouteKind {
    /// An agent or a pattern.
    Agent,
    /// A tool source (an MCP server, a set of functions), driven by an agent made for it.
    Tools,
    /// A plain function ([`FnLlm`](crate::FnLlm)).
    Function,
}

/// One ranked routing decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RouteResult {
    /// The route's name.
    pub route: String,
    /// What the route leads to.
    pub kind: RouteKind,
    /// How well the route fits, from 0 to 1 (LLM confidence, or cosine similarity).
    pub confidence: f64,
    /// Why, when an LLM decided.
    pub reasoning: Option<String>,
}

impl RouteResult {
    /// A routing decision.
    pub fn new(route: impl Into<String>, kind: RouteKind, confidence: f64) -> Self {
        Self {
            route: route.into(),
            kind,
            confidence,
            reasoning: None,
        }
    }

    /// Add the reasoning.
    #[must_use]
    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.reasoning = Some(reasoning.into());
        self
    }
}

#[derive(Clone)]
struct Route {
    name: String,
    description: String,
    kind: RouteKind,
    llm: Arc<dyn AugmentedLlm>,
    tools: Option<Arc<dyn ToolSource>>,
}

#[derive(Clone)]
enum Classifier {
    Llm(Arc<dyn AugmentedLlm>),
    Embedding {
        embedder: Arc<dyn Embedder>,
        routes: Arc<OnceCell<Vec<Vec<f32>>>>,
    },
}

/// The structured answer asked of an LLM router.
#[derive(Debug, Deserialize, JsonSchema)]
struct RoutingDecision {
    /// The best routes, best first.
    routes: Vec<RouteChoice>,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct RouteChoice {
    /// The route's name, exactly as listed.
    route: String,
    /// Confidence from 0 to 1.
    confidence: f64,
    /// One sentence on why this route fits.
    reasoning: String,
}

/// Sends each request to the route that fits it best.
///
/// Routes are agents or patterns, tool sources (given an agent to drive them) or functions.
/// [`route`](Self::route) ranks them (up to `top_k`); [`generate`](AugmentedLlm::generate)
/// delegates the request to the best one.
///
/// Streamed ([`generate_stream`](AugmentedLlm::generate_stream)), the router streams the
/// chosen route's answer; the classification is a plain call and streams nothing.
///
/// Two classifiers:
/// - an LLM ([`with_llm`](RouterBuilder::with_llm)) that returns, as structured output, the
///   best routes with a confidence and a reasoning;
/// - an [`Embedder`] ([`with_embedder`](RouterBuilder::with_embedder)): cosine similarity of
///   the request to each route's description (embedded once, then cached).
///
/// ```
/// use agentkit_core::{AugmentedLlmExt, RunContext};
/// use agentkit_patterns::{BagOfWordsEmbedder, FnLlm, Router};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let router = Router::builder("desk")
///     .with_embedder(BagOfWordsEmbedder::new())
///     .with_function_route(FnLlm::new("billing", |_, _| async { Ok("billing here".to_owned()) })
///         .with_description("invoices, refunds, payments and billing questions"))
///     .with_function_route(FnLlm::new("weather", |_, _| async { Ok("sunny".to_owned()) })
///         .with_description("weather forecasts, rain and temperature"))
///     .build()?;
/// let ctx = RunContext::new();
/// let ranked = router.route("I want a refund for my invoice", &ctx).await?;
/// assert_eq!(ranked[0].route, "billing");
/// assert_eq!(router.generate_str("will it rain tomorrow?", &ctx).await?, "sunny");
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Router {
    name: String,
    description: String,
    routes: Vec<Route>,
    classifier: Classifier,
    top_k: usize,
    /// What an LLM classifier is asked: a [`RoutingDecision`] whose route names are an `enum`
    /// of the routes.
    question: Question,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.name)
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .field(
                "classifier",
                &match self.classifier {
                    Classifier::Llm(_) => "llm",
                    Classifier::Embedding { .. } => "embedding",
                },
            )
            .field("top_k", &self.top_k)
            .finish()
    }
}

/// Builds a [`Router`].
#[derive(Clone)]
#[must_use]
pub struct RouterBuilder {
    name: String,
    description: String,
    routes: Vec<Route>,
    classifier: Option<Classifier>,
    top_k: usize,
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("name", &self.name)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Start building a router named `name`.
    pub fn builder(name: impl Into<String>) -> RouterBuilder {
        RouterBuilder::new(name)
    }

    /// The tool source behind a [`RouteKind::Tools`] route.
    #[must_use]
    pub fn tools(&self, route: &str) -> Option<&Arc<dyn ToolSource>> {
        self.routes
            .iter()
            .find(|r| r.name == route)
            .and_then(|r| r.tools.as_ref())
    }

    /// The LLM (agent, pattern or function) behind a route.
    #[must_use]
    pub fn target(&self, route: &str) -> Option<&Arc<dyn AugmentedLlm>> {
        self.routes.iter().find(|r| r.name == route).map(|r| &r.llm)
    }
}

impl RouterBuilder {
    /// A router named `name` with no routes, no classifier and `top_k` 1.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            routes: Vec::new(),
            classifier: None,
            top_k: 1,
        }
    }

    /// Add an agent or pattern route, named by the LLM itself and described by its
    /// description, else by its instruction (an [`AgentLlm`]), else by its name. An
    /// [`FnLlm`](crate::FnLlm) is reported as a [`RouteKind::Function`] route by
    /// [`with_function_route`](Self::with_function_route).
    pub fn with_route(self, llm: impl AugmentedLlm + 'static) -> Self {
        self.with_shared_route(Arc::new(llm))
    }

    /// Add a shared agent or pattern route (described as in [`with_route`](Self::with_route)).
    pub fn with_shared_route(mut self, llm: Arc<dyn AugmentedLlm>) -> Self {
        let description = llm.description().trim().to_owned();
        self.routes.push(Route {
            name: llm.name().to_owned(),
            description,
            kind: RouteKind::Agent,
            llm,
            tools: None,
        });
        self
    }

    /// Add a function route.
    pub fn with_function_route(mut self, f: crate::FnLlm) -> Self {
        self.routes.push(Route {
            name: f.name().to_owned(),
            description: f.description().to_owned(),
            kind: RouteKind::Function,
            llm: Arc::new(f),
            tools: None,
        });
        self
    }

    /// Add a tool-source route: requests routed here go to an agent named `name`, instructed
    /// with `description`, that uses `tools` through `provider`.
    pub fn with_tools_route(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        tools: Arc<dyn ToolSource>,
        provider: Arc<dyn LlmProvider>,
    ) -> Self {
        let name = name.into();
        let description = description.into();
        let agent = Agent::new(
            name.clone(),
            format!("You handle requests about: {description}. Use your tools to answer."),
        )
        .with_description(description.clone())
        .with_tool_source(Arc::clone(&tools));
        self.routes.push(Route {
            name,
            description,
            kind: RouteKind::Tools,
            llm: Arc::new(AgentLlm::shared(agent, provider)),
            tools: Some(tools),
        });
        self
    }

    /// Classify with this LLM (structured output).
    pub fn with_llm(self, llm: impl AugmentedLlm + 'static) -> Self {
        self.with_shared_llm(Arc::new(llm))
    }

    /// Classify with this shared LLM.
    pub fn with_shared_llm(mut self, llm: Arc<dyn AugmentedLlm>) -> Self {
        self.classifier = Some(Classifier::Llm(llm));
        self
    }

    /// Classify by cosine similarity of embeddings.
    pub fn with_embedder(self, embedder: impl Embedder + 'static) -> Self {
        self.with_shared_embedder(Arc::new(embedder))
    }

    /// Classify by cosine similarity of embeddings from this shared embedder.
    pub fn with_shared_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.classifier = Some(Classifier::Embedding {
            embedder,
            routes: Arc::new(OnceCell::new()),
        });
        self
    }

    /// Return up to `k` ranked routes from [`Router::route`] (at least 1).
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k.max(1);
        self
    }

    /// Describe the router (shown when it is a route or a worker).
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Finish. Fails when there is no route, two routes share a name, no classifier is set,
    /// or an embedding router has a route without a description (or instruction).
    pub fn build(self) -> Result<Router> {
        let name = &self.name;
        if self.routes.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "router `{name}` has no routes; add at least one with `with_route`"
            )));
        }
        for (i, r) in self.routes.iter().enumerate() {
            if self.routes[..i].iter().any(|o| o.name == r.name) {
                return Err(Error::InvalidRequest(format!(
                    "router `{name}` has two routes named `{}`; route names must be unique",
                    r.name
                )));
            }
        }
        let Some(classifier) = self.classifier else {
            return Err(Error::InvalidRequest(format!(
                "router `{name}` has no classifier; set one with `with_llm` or `with_embedder`"
            )));
        };
        if matches!(classifier, Classifier::Embedding { .. })
            && let Some(r) = self.routes.iter().find(|r| r.description.trim().is_empty())
        {
            return Err(Error::InvalidRequest(format!(
                "route `{}` of router `{name}` has no description; an embedding router \
                 compares requests with route descriptions, so give it one",
                r.name
            )));
        }
        let question = Question::of::<RoutingDecision>()
            .with_names(
                "/properties/routes/items/properties/route",
                self.routes.iter().map(|r| r.name.clone()),
            )?
            .with_items("/properties/routes", 1, Some(self.top_k))?;
        Ok(Router {
            name: self.name,
            description: self.description,
            routes: self.routes,
            classifier,
            top_k: self.top_k,
            question,
        })
    }
}

impl Router {
    /// Rank the routes for `request` (best first, at most `top_k`).
    pub async fn route(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<Vec<RouteResult>> {
        let request = request.into();
        ctx.check()?;
        let text = request.last_user_text();
        let mut ranked = match &self.classifier {
            Classifier::Llm(llm) => self.route_llm(llm.as_ref(), &text, ctx).await?,
            Classifier::Embedding { embedder, routes } => {
                self.route_embedding(embedder.as_ref(), routes, &text, ctx)
                    .await?
            }
        };
        ranked.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        ranked.truncate(self.top_k);
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "routes_ranked",
            json!({ "routes": ranked }),
        );
        Ok(ranked)
    }

    fn kind_of(&self, route: &str) -> Option<RouteKind> {
        self.routes.iter().find(|r| r.name == route).map(|r| r.kind)
    }

    async fn route_llm(
        &self,
        llm: &dyn AugmentedLlm,
        text: &str,
        ctx: &RunContext,
    ) -> Result<Vec<RouteResult>> {
        let mut prompt = String::from(
            "You are a router. Pick the handlers best able to handle the request below.\n\nHandlers:\n",
        );
        for r in &self.routes {
            let kind = match r.kind {
                RouteKind::Agent => "agent",
                RouteKind::Tools => "tools",
                RouteKind::Function => "function",
            };
            // A route without a description is shown by its name (as mcp-agent does).
            let about = if r.description.is_empty() {
                &r.name
            } else {
                &r.description
            };
            prompt.push_str(&format!("- `{}` ({kind}): {about}\n", r.name));
        }
        prompt.push_str(&format!(
            "\nRequest:\n{text}\n\nAnswer with up to {} handlers, best first, each with its exact \
             name, a confidence from 0 to 1 and one sentence of reasoning.",
            self.top_k
        ));
        let request = user_request(prompt, RequestParams::new().with_use_history(false));
        let decision: RoutingDecision = self.question.ask(llm, request, ctx).await?;
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        for choice in decision.routes {
            match self.kind_of(&choice.route) {
                Some(kind) if !out.iter().any(|r: &RouteResult| r.route == choice.route) => out
                    .push(
                        RouteResult::new(choice.route, kind, choice.confidence.clamp(0.0, 1.0))
                            .with_reasoning(choice.reasoning),
                    ),
                Some(_) => {}
                None => unknown.push(choice.route),
            }
        }
        if !unknown.is_empty() {
            emit_step(
                ctx,
                PATTERN,
                &self.name,
                "unknown_routes_ignored",
                json!({ "routes": unknown }),
            );
        }
        if out.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "router `{}`: the classifier `{}` named no known route (it answered {unknown:?}; \
                 routes are {:?}); check its instruction or the route descriptions",
                self.name,
                llm.name(),
                self.routes.iter().map(|r| &r.name).collect::<Vec<_>>()
            )));
        }
        Ok(out)
    }

    async fn route_embedding(
        &self,
        embedder: &dyn Embedder,
        cache: &OnceCell<Vec<Vec<f32>>>,
        text: &str,
        ctx: &RunContext,
    ) -> Result<Vec<RouteResult>> {
        let what = format!("embeddings of router `{}`", self.name);
        let route_vectors = cache
            .get_or_try_init(|| async {
                let texts: Vec<String> = self
                    .routes
                    .iter()
                    .map(|r| format!("{}: {}", r.name, r.description))
                    .collect();
                let v = ctx.guard(&what, embedder.embed(&texts)).await?;
                check_count(&self.name, texts.len(), v.len())?;
                Ok::<_, Error>(v)
            })
            .await?;
        let query = ctx.guard(&what, embedder.embed(&[text.to_owned()])).await?;
        check_count(&self.name, 1, query.len())?;
        Ok(self
            .routes
            .iter()
            .zip(route_vectors)
            .map(|(r, v)| {
                RouteResult::new(
                    r.name.clone(),
                    r.kind,
                    f64::from(cosine_similarity(&query[0], v)),
                )
            })
            .collect())
    }

    async fn run(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Generation> {
        let ranked = self.route(request.clone(), ctx).await?;
        let best = ranked.first().and_then(|r| {
            self.routes
                .iter()
                .find(|x| x.name == r.route)
                .map(|x| (r, x))
        });
        let Some((decision, route)) = best else {
            return Err(Error::InvalidRequest(format!(
                "router `{}` found no route for the request",
                self.name
            )));
        };
        emit_step(
            ctx,
            PATTERN,
            &self.name,
            "route_chosen",
            json!({
                "route": decision.route,
                "kind": decision.kind,
                "confidence": decision.confidence,
                "reasoning": decision.reasoning,
            }),
        );
        ctx.check()?;
        generate_into(route.llm.as_ref(), request, ctx, emitter).await
    }
}

fn check_count(router: &str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "router `{router}`: the embedder returned {got} vectors for {expected} texts"
        )))
    }
}

#[async_trait]
impl AugmentedLlm for Router {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn end_thread(&self, thread: &str) -> Result<()> {
        for route in &self.routes {
            route.llm.end_thread(thread).await?;
        }
        match &self.classifier {
            Classifier::Llm(llm) => llm.end_thread(thread).await,
            _ => Ok(()),
        }
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        self.generate_with(request, ctx, None).await
    }

    fn generate_stream<'a>(
        &'a self,
        request: GenerateRequest,
        ctx: &'a RunContext,
    ) -> GenerationStream<'a> {
        stream_generation(move |emitter| async move {
            self.generate_with(request, ctx, Some(&emitter)).await
        })
    }
}

impl Router {
    async fn generate_with(
        &self,
        request: GenerateRequest,
        ctx: &RunContext,
        emitter: Option<&GenerationEmitter>,
    ) -> Result<Generation> {
        let scope = ctx.scoped();
        self.run(request, &scope, emitter)
            .instrument(pattern_span(PATTERN, &self.name))
            .await
            .map(|g| finish(&scope, g))
    }
}
