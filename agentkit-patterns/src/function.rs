//! [`FnLlm`]: a plain async function as an [`AugmentedLlm`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use agentkit_core::{AugmentedLlm, GenerateRequest, Generation, Result, RunContext};
use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;

type TextFn = dyn Fn(String, RunContext) -> BoxFuture<'static, Result<String>> + Send + Sync;

/// A plain async function of the request's text, usable wherever an agent is: a branch of a
/// [`Parallel`](crate::Parallel), a route of a [`Router`](crate::Router), a worker of an
/// [`Orchestrator`](crate::Orchestrator), a step of a [`Chain`](crate::Chain).
///
/// It receives the text of the last user message and the run context, and makes no model call
/// (its generation reports zero usage).
///
/// ```
/// use agentkit_core::{AugmentedLlmExt, RunContext};
/// use agentkit_patterns::FnLlm;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let upper = FnLlm::new("upper", |text: String, _ctx| async move { Ok(text.to_uppercase()) })
///     .with_description("Shouts the request back.");
/// assert_eq!(upper.generate_str("hi", &RunContext::new()).await?, "HI");
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct FnLlm {
    name: String,
    description: String,
    f: Arc<TextFn>,
}

impl fmt::Debug for FnLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnLlm")
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl FnLlm {
    /// A named function of the request text and the run context.
    pub fn new<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(String, RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            description: String::new(),
            f: Arc::new(move |text, ctx| f(text, ctx).boxed()),
        }
    }

    /// Describe what it does (shown when it is a route or a worker).
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

#[async_trait]
impl AugmentedLlm for FnLlm {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        let what = format!("function `{}`", self.name);
        let text = ctx
            .guard(&what, (self.f)(request.last_user_text(), ctx.clone()))
            .await?;
        let mut g = Generation::from_text(text);
        g.model = format!("fn:{}", self.name);
        Ok(g)
    }
}
