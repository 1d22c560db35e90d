//! [`AugmentedLlm`], the composition unit, and its extension trait [`AugmentedLlmExt`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::context::RunContext;
use crate::cost::ModelPreferences;
use crate::error::{Error, Result};
use crate::message::{Message, Role};
use crate::provider::ResponseFormat;
use crate::stream::{GenerationStream, stream_generation};
use crate::usage::{StopReason, Usage};

/// Which tools a request may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolFilter {
    /// Only these tool names.
    Allow(HashSet<String>),
    /// Every tool except these.
    Deny(HashSet<String>),
}

impl ToolFilter {
    /// Allow only these names.
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self::Allow(names.into_iter().map(Into::into).collect())
    }

    /// Allow everything but these names.
    pub fn deny<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self::Deny(names.into_iter().map(Into::into).collect())
    }

    /// Whether `name` passes.
    #[must_use]
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Self::Allow(s) => s.contains(name),
            Self::Deny(s) => !s.contains(name),
        }
    }
}

/// Per-request settings. `None` fields fall back to the LLM's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RequestParams {
    /// Use this model.
    pub model: Option<String>,
    /// Pick a model by preferences when none is named.
    pub model_preferences: Option<ModelPreferences>,
    /// Maximum model calls that may request tools (default 10); a last call without tools
    /// follows when the limit is reached.
    pub max_iterations: Option<u32>,
    /// Maximum output tokens per model call.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Let the model request several tool calls at once, and run them concurrently.
    pub parallel_tool_calls: Option<bool>,
    /// Include and extend the conversation history (default true).
    pub use_history: Option<bool>,
    /// Restrict the tools offered.
    pub tool_filter: Option<ToolFilter>,
    /// Give up after this long.
    pub timeout: Option<Duration>,
    /// Ask for structured output.
    pub response_format: Option<ResponseFormat>,
    /// Extra system instruction appended for this request.
    pub system_suffix: Option<String>,
}

impl RequestParams {
    /// Default parameters.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Use this model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Pick a model by preferences.
    #[must_use]
    pub fn with_model_preferences(mut self, prefs: ModelPreferences) -> Self {
        self.model_preferences = Some(prefs);
        self
    }

    /// Set max iterations.
    #[must_use]
    pub fn with_max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = Some(n);
        self
    }

    /// Set max output tokens.
    #[must_use]
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Set the temperature.
    #[must_use]
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = Some(t);
        self
    }

    /// Set stop sequences.
    #[must_use]
    pub fn with_stop(mut self, stop: Vec<String>) -> Self {
        self.stop = stop;
        self
    }

    /// Allow or forbid parallel tool calls.
    #[must_use]
    pub fn with_parallel_tool_calls(mut self, p: bool) -> Self {
        self.parallel_tool_calls = Some(p);
        self
    }

    /// Use (or not) the conversation history.
    #[must_use]
    pub fn with_use_history(mut self, h: bool) -> Self {
        self.use_history = Some(h);
        self
    }

    /// Restrict tools.
    #[must_use]
    pub fn with_tool_filter(mut self, f: ToolFilter) -> Self {
        self.tool_filter = Some(f);
        self
    }

    /// Set a timeout.
    #[must_use]
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Ask for structured output.
    #[must_use]
    pub fn with_response_format(mut self, f: ResponseFormat) -> Self {
        self.response_format = Some(f);
        self
    }

    /// Append to the system instruction for this request.
    #[must_use]
    pub fn with_system_suffix(mut self, s: impl Into<String>) -> Self {
        self.system_suffix = Some(s.into());
        self
    }

    /// Fill every unset field of `self` from `defaults`.
    #[must_use]
    pub fn or(mut self, defaults: &RequestParams) -> Self {
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = defaults.$f.clone(); } )* };
        }
        fill!(
            model,
            model_preferences,
            max_iterations,
            max_tokens,
            temperature,
            parallel_tool_calls,
            use_history,
            tool_filter,
            timeout,
            response_format,
            system_suffix
        );
        if self.stop.is_empty() {
            self.stop = defaults.stop.clone();
        }
        self
    }
}

/// One call to an [`AugmentedLlm`]: new messages plus parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GenerateRequest {
    /// The new messages (usually one user message). History is added by the LLM.
    pub messages: Vec<Message>,
    /// Parameters.
    pub params: RequestParams,
}

impl GenerateRequest {
    /// A request with these messages.
    pub fn new(messages: Vec<Message>) -> Self {
        Self {
            messages,
            params: RequestParams::default(),
        }
    }

    /// Set parameters.
    #[must_use]
    pub fn with_params(mut self, params: RequestParams) -> Self {
        self.params = params;
        self
    }

    /// The text of the last user message (what patterns route or classify on).
    #[must_use]
    pub fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(Message::text)
            .unwrap_or_default()
    }
}

impl From<&str> for GenerateRequest {
    fn from(s: &str) -> Self {
        Self::new(vec![Message::user(s)])
    }
}

impl From<String> for GenerateRequest {
    fn from(s: String) -> Self {
        Self::new(vec![Message::user(s)])
    }
}

impl From<&String> for GenerateRequest {
    fn from(s: &String) -> Self {
        Self::new(vec![Message::user(s.as_str())])
    }
}

impl From<Message> for GenerateRequest {
    fn from(m: Message) -> Self {
        Self::new(vec![m])
    }
}

impl From<Vec<Message>> for GenerateRequest {
    fn from(m: Vec<Message>) -> Self {
        Self::new(m)
    }
}

/// What a `generate` produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Generation {
    /// Messages produced, in order: assistant turns and tool results. The last one is the
    /// final assistant answer.
    pub messages: Vec<Message>,
    /// Tokens used by every model call inside (including nested agents and patterns).
    pub usage: Usage,
    /// Estimated cost in US dollars of every model call inside.
    pub cost_usd: f64,
    /// Why the final model call stopped.
    pub stop_reason: StopReason,
    /// The model of the final call.
    pub model: String,
    /// Model calls made.
    pub llm_calls: u32,
}

impl Generation {
    /// A generation whose only message is `message`.
    pub fn from_message(message: Message) -> Self {
        Self {
            messages: vec![message],
            ..Self::default()
        }
    }

    /// A text answer with no model calls (functions, routers that delegate).
    pub fn from_text(text: impl Into<String>) -> Self {
        Self::from_message(Message::assistant(text))
    }

    /// The final answer's text.
    #[must_use]
    pub fn text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::Assistant)
            .map(Message::text)
            .unwrap_or_default()
    }

    /// The final message, if any.
    #[must_use]
    pub fn last_message(&self) -> Option<&Message> {
        self.messages.last()
    }

    /// Add another generation's usage, cost and calls to this one (patterns roll up inner
    /// calls this way).
    pub fn absorb_usage(&mut self, other: &Generation) {
        self.usage += other.usage;
        self.cost_usd += other.cost_usd;
        self.llm_calls += other.llm_calls;
    }

    /// Set the usage, cost and call count.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage, cost_usd: f64, llm_calls: u32) -> Self {
        self.usage = usage;
        self.cost_usd = cost_usd;
        self.llm_calls = llm_calls;
        self
    }
}

/// An LLM augmented with tools, memory and behaviour: an agent, or any pattern built from
/// agents. Object safe; patterns hold `Arc<dyn AugmentedLlm>` and nest freely.
#[async_trait]
pub trait AugmentedLlm: Send + Sync {
    /// A name, unique among siblings (used in events, tool names and routes).
    fn name(&self) -> &str;

    /// What it does (used when offered as a tool or a route).
    fn description(&self) -> &str {
        ""
    }

    /// Generate an answer to `request`.
    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation>;

    /// Generate an answer to `request` as a stream of
    /// [`GenerationEvent`](crate::stream::GenerationEvent)s: text deltas, tool calls, per-turn
    /// usage and stop reasons, and last
    /// [`GenerationEvent::Done`](crate::stream::GenerationEvent::Done) with the
    /// same [`Generation`] [`generate`](Self::generate) returns (see [`crate::stream`]).
    ///
    /// The default runs [`generate`](Self::generate) and yields the whole answer as one delta;
    /// agents stream each model call, patterns the sub-call that produces their answer. The
    /// stream runs the generation as it is polled; dropping it stops the generation and the
    /// model call in flight.
    fn generate_stream<'a>(
        &'a self,
        request: GenerateRequest,
        ctx: &'a RunContext,
    ) -> GenerationStream<'a> {
        stream_generation(move |emitter| async move {
            let generation = self.generate(request, ctx).await?;
            emitter.text(self.name(), generation.text());
            Ok(generation)
        })
    }

    /// Forget the conversation `thread` (its session ended): agents drop its history,
    /// patterns pass it on to their members. The default keeps nothing, so does nothing.
    async fn end_thread(&self, thread: &str) -> Result<()> {
        let _ = thread;
        Ok(())
    }

    /// What defines how it behaves, as JSON (an agent: its instruction, model, provider,
    /// request defaults and how many tool sources and tool layers it has), or `None` (the
    /// default) when it cannot tell. A server that registers it from code versions it by a
    /// content hash of this and its description, so a changed instruction or model is a new
    /// version. Code it runs (a tool's body, a dynamic instruction) is not in it.
    fn fingerprint(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Forget `thread` in every one of `members` (for patterns' [`AugmentedLlm::end_thread`]).
pub async fn end_thread_in<'a>(
    members: impl IntoIterator<Item = &'a Arc<dyn AugmentedLlm>>,
    thread: &str,
) -> Result<()> {
    for m in members {
        m.end_thread(thread).await?;
    }
    Ok(())
}

#[async_trait]
impl<T: AugmentedLlm + ?Sized> AugmentedLlm for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn description(&self) -> &str {
        (**self).description()
    }
    async fn generate(&self, request: GenerateRequest, ctx: &RunContext) -> Result<Generation> {
        (**self).generate(request, ctx).await
    }
    fn generate_stream<'a>(
        &'a self,
        request: GenerateRequest,
        ctx: &'a RunContext,
    ) -> GenerationStream<'a> {
        (**self).generate_stream(request, ctx)
    }
    async fn end_thread(&self, thread: &str) -> Result<()> {
        (**self).end_thread(thread).await
    }
    fn fingerprint(&self) -> Option<serde_json::Value> {
        (**self).fingerprint()
    }
}

/// Conveniences over [`AugmentedLlm::generate`], for every `AugmentedLlm`.
#[async_trait]
pub trait AugmentedLlmExt: AugmentedLlm {
    /// Generate and return the final text.
    async fn generate_str(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<String> {
        Ok(self.generate(request.into(), ctx).await?.text())
    }

    /// Generate a value of `T`: the schema of `T` is sent as the response format (native JSON
    /// schema on OpenAI, a forced tool on Anthropic), and the answer is validated against it
    /// and deserialised. When the answer is invalid, the model gets one repair round with the
    /// error; if that fails too, an [`Error::StructuredOutput`] says why.
    async fn generate_structured<T>(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned + Send,
    {
        Ok(self
            .generate_structured_with_usage::<T>(request, ctx)
            .await?
            .0)
    }

    /// Like [`generate_structured`](Self::generate_structured), also returning the
    /// generation(s) so usage and cost can be rolled up.
    async fn generate_structured_with_usage<T>(
        &self,
        request: impl Into<GenerateRequest> + Send,
        ctx: &RunContext,
    ) -> Result<(T, Generation)>
    where
        T: JsonSchema + DeserializeOwned + Send,
    {
        let mut request: GenerateRequest = request.into();
        let schema = crate::schema::schema_value::<T>();
        let type_name = std::any::type_name::<T>().to_owned();
        request.params.response_format = Some(ResponseFormat::new(
            crate::schema::schema_name::<T>(),
            schema.clone(),
        ));
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| Error::StructuredOutput {
                type_name: type_name.clone(),
                message: format!("the derived schema does not compile: {e}"),
                raw: String::new(),
            })?;
        let first = self.generate(request.clone(), ctx).await?;
        let raw = first.text();
        match parse_structured::<T>(&raw, &validator) {
            Ok(v) => Ok((v, first)),
            Err(problem) => {
                tracing::debug!(%problem, "structured output invalid; asking the model to repair it");
                let mut repair = request;
                let mut messages = repair.messages.clone();
                messages.push(Message::assistant(raw.clone()));
                messages.push(Message::user(format!(
                    "Your previous answer is not valid: {problem}. Reply again with only a JSON \
                     document that matches this JSON schema, and nothing else:\n{schema}"
                )));
                repair.messages = messages;
                repair.params.use_history = Some(false);
                let mut second = self.generate(repair, ctx).await?;
                second.absorb_usage(&first);
                let raw2 = second.text();
                match parse_structured::<T>(&raw2, &validator) {
                    Ok(v) => Ok((v, second)),
                    Err(problem) => Err(Error::StructuredOutput {
                        type_name,
                        message: format!("still invalid after one repair round: {problem}"),
                        raw: raw2,
                    }),
                }
            }
        }
    }
}

impl<T: AugmentedLlm + ?Sized> AugmentedLlmExt for T {}

/// Parse `raw` as JSON (tolerating a Markdown code fence around it), validate it against the
/// schema and deserialise it.
fn parse_structured<T: DeserializeOwned>(
    raw: &str,
    validator: &jsonschema::Validator,
) -> std::result::Result<T, String> {
    let text = strip_fence(raw);
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("it is not JSON ({e})"))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| {
            let p = e.instance_path().to_string();
            if p.is_empty() {
                e.to_string()
            } else {
                format!("{p}: {e}")
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "it does not match the schema ({})",
            errors.join("; ")
        ));
    }
    serde_json::from_value(value).map_err(|e| format!("it does not match the expected type ({e})"))
}

fn strip_fence(raw: &str) -> &str {
    let t = raw.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
        if let Some(inner) = rest.trim_end().strip_suffix("```") {
            return inner.trim();
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_fill_from_defaults() {
        let d = RequestParams::new().with_model("m").with_max_iterations(3);
        let p = RequestParams::new().with_max_iterations(5).or(&d);
        assert_eq!(p.model.as_deref(), Some("m"));
        assert_eq!(p.max_iterations, Some(5));
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fence("```json\n{\"a\":1}\n```"), "{\"a\":1}");
        assert_eq!(strip_fence(" {\"a\":1} "), "{\"a\":1}");
    }
}
