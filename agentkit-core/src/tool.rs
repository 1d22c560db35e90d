//! Tools: [`ToolSpec`], the [`ToolSource`] trait, [`FnTool`] (a Rust async fn as a tool) and the
//! tower [`ToolService`] every tool call runs through.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::RunContext;
use crate::error::{Error, Result};
use crate::message::{Content, join_text};

/// What a model is told about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolSpec {
    /// Tool name, unique among the tools offered to a model.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON schema of the arguments object. Shared: specs are cloned into every model request,
    /// and a clone must not copy large MCP schemas.
    pub input_schema: Arc<Value>,
    /// JSON schema of the structured result, if the tool declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Arc<Value>>,
}

impl ToolSpec {
    /// A tool spec.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        input_schema: impl Into<Arc<Value>>,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema: input_schema.into(),
            output_schema: None,
        }
    }

    /// Declare the schema of the structured result.
    #[must_use]
    pub fn with_output_schema(mut self, schema: impl Into<Arc<Value>>) -> Self {
        self.output_schema = Some(schema.into());
        self
    }
}

/// The result of a tool that ran. A tool that ran and failed has `is_error` set: the model sees
/// the error and may recover. A tool that could not be called returns `Err` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolOutput {
    /// What the tool returned, for the model.
    pub content: Vec<Content>,
    /// Structured result (MCP `structuredContent`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<Value>,
    /// Whether the tool ran and failed.
    #[serde(default)]
    pub is_error: bool,
    /// Set when the call was not made because it was over a rate limit: how long until a
    /// retry may succeed, in milliseconds. What the gateway answers with status
    /// `rate_limited` and a `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ToolOutput {
    /// A successful text result.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            content: vec![Content::text(text)],
            structured: None,
            is_error: false,
            retry_after_ms: None,
        }
    }

    /// A failed result the model can read.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            content: vec![Content::text(text)],
            structured: None,
            is_error: true,
            retry_after_ms: None,
        }
    }

    /// A successful result with these content blocks.
    pub fn new(content: Vec<Content>) -> Self {
        Self {
            content,
            structured: None,
            is_error: false,
            retry_after_ms: None,
        }
    }

    /// A structured JSON result; its text form is the serialised JSON.
    pub fn structured(value: Value) -> Self {
        Self {
            content: vec![Content::text(value.to_string())],
            structured: Some(value),
            is_error: false,
            retry_after_ms: None,
        }
    }

    /// Mark as failed or not.
    #[must_use]
    pub fn with_is_error(mut self, is_error: bool) -> Self {
        self.is_error = is_error;
        self
    }

    /// Set the structured result.
    #[must_use]
    pub fn with_structured(mut self, value: Value) -> Self {
        self.structured = Some(value);
        self
    }

    /// Mark as a call not made because of a rate limit, which a retry after `wait` may pass
    /// (rounded up to whole milliseconds).
    #[must_use]
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        let ms = wait.as_nanos().div_ceil(1_000_000);
        self.retry_after_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self
    }

    /// All text of the result joined with newlines.
    #[must_use]
    pub fn text_content(&self) -> String {
        join_text(&self.content)
    }
}

/// Anything that offers tools: local functions, MCP servers, other agents.
///
/// Object safe; agents hold `Arc<dyn ToolSource>`.
#[async_trait]
pub trait ToolSource: Send + Sync {
    /// The tools offered now.
    async fn list_tools(&self) -> Result<Vec<ToolSpec>>;

    /// Call a tool by name. `Ok` with `is_error` when the tool ran and failed; `Err` when the
    /// call could not be made (unknown tool, server down, cancelled).
    async fn call_tool(&self, name: &str, arguments: Value, ctx: &RunContext)
    -> Result<ToolOutput>;
}

#[async_trait]
impl<T: ToolSource + ?Sized> ToolSource for Arc<T> {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        (**self).list_tools().await
    }
    async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        ctx: &RunContext,
    ) -> Result<ToolOutput> {
        (**self).call_tool(name, arguments, ctx).await
    }
}

type ToolFn = dyn Fn(Value, RunContext) -> BoxFuture<'static, ToolOutput> + Send + Sync;

/// A plain Rust async function as a tool.
///
/// The input schema is derived from the argument type with `schemars`, and arguments are
/// validated against it before the function runs: bad arguments become a tool error the model
/// can read, never a panic. The output is serialised: a `String` becomes text, anything else
/// becomes JSON text plus structured content. An `Err` from the function becomes a tool error.
///
/// ```
/// use agentkit_core::{FnTool, ToolSource, RunContext};
/// use schemars::JsonSchema;
/// use serde::Deserialize;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Add { a: i64, b: i64 }
///
/// # tokio_test_block_on(async {
/// let tool = FnTool::new("add", "Add two integers", |args: Add| async move {
///     Ok::<_, std::convert::Infallible>(args.a + args.b)
/// });
/// let out = tool.call_tool("add", serde_json::json!({"a": 2, "b": 3}), &RunContext::new()).await?;
/// assert_eq!(out.text_content(), "5");
/// let bad = tool.call_tool("add", serde_json::json!({"a": "two"}), &RunContext::new()).await?;
/// assert!(bad.is_error);
/// # Ok::<_, agentkit_core::Error>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct FnTool {
    spec: ToolSpec,
    validator: Arc<jsonschema::Validator>,
    f: Arc<ToolFn>,
}

impl fmt::Debug for FnTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl FnTool {
    /// A tool from an async function of its arguments.
    pub fn new<T, O, E, F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        f: F,
    ) -> Self
    where
        T: JsonSchema + DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, E>> + Send + 'static,
    {
        Self::with_context(name, description, move |args: T, _ctx: RunContext| f(args))
    }

    /// A tool from an async function of its arguments and the [`RunContext`] of the call.
    pub fn with_context<T, O, E, F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        f: F,
    ) -> Self
    where
        T: JsonSchema + DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        E: fmt::Display + Send + 'static,
        F: Fn(T, RunContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, E>> + Send + 'static,
    {
        let name = name.into();
        let schema = crate::schema::schema_value::<T>();
        // A schema generated by schemars always compiles; fall back to "accept any object"
        // rather than panicking if it ever does not.
        let validator = jsonschema::validator_for(&schema)
            .or_else(|_| jsonschema::validator_for(&serde_json::json!({"type": "object"})))
            .map(Arc::new);
        let validator = match validator {
            Ok(v) => v,
            Err(_) => unreachable_validator(),
        };
        let tool_name = name.clone();
        let f = Arc::new(f);
        let call = move |args: Value, ctx: RunContext| -> BoxFuture<'static, ToolOutput> {
            let f = Arc::clone(&f);
            let tool_name = tool_name.clone();
            async move {
                let parsed: T = match serde_json::from_value(args) {
                    Ok(v) => v,
                    Err(e) => {
                        return ToolOutput::error(format!(
                            "invalid arguments for tool `{tool_name}`: {e}"
                        ));
                    }
                };
                match f(parsed, ctx).await {
                    Ok(out) => output_to_tool_output(&tool_name, out),
                    Err(e) => ToolOutput::error(e.to_string()),
                }
            }
            .boxed()
        };
        Self {
            spec: ToolSpec::new(name, description, schema),
            validator,
            f: Arc::new(call),
        }
    }

    /// The tool's spec.
    #[must_use]
    pub fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    /// Declare an output schema derived from `O`.
    #[must_use]
    pub fn with_output_schema<O: JsonSchema>(mut self) -> Self {
        self.spec.output_schema = Some(Arc::new(crate::schema::schema_value::<O>()));
        self
    }

    fn validate(&self, args: &Value) -> std::result::Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(args)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

fn unreachable_validator() -> Arc<jsonschema::Validator> {
    // `{}` accepts everything and always compiles.
    match jsonschema::validator_for(&serde_json::json!({})) {
        Ok(v) => Arc::new(v),
        Err(e) => unreachable!("the empty schema always compiles: {e}"),
    }
}

fn output_to_tool_output<O: Serialize>(tool: &str, out: O) -> ToolOutput {
    match serde_json::to_value(out) {
        Ok(Value::String(s)) => ToolOutput::text(s),
        Ok(Value::Null) => ToolOutput::text(""),
        Ok(v @ (Value::Object(_) | Value::Array(_))) => ToolOutput::structured(v),
        Ok(v) => ToolOutput::text(v.to_string()),
        Err(e) => ToolOutput::error(format!(
            "tool `{tool}` returned a value that cannot be serialised: {e}"
        )),
    }
}

#[async_trait]
impl ToolSource for FnTool {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        Ok(vec![self.spec.clone()])
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        ctx: &RunContext,
    ) -> Result<ToolOutput> {
        if name != self.spec.name {
            return Err(Error::ToolNotFound {
                tool: name.to_owned(),
                available: vec![self.spec.name.clone()],
            });
        }
        if let Err(msg) = self.validate(&arguments) {
            return Ok(ToolOutput::error(format!(
                "invalid arguments for tool `{name}`: {msg}. Expected arguments matching this schema: {}",
                self.spec.input_schema
            )));
        }
        Ok((self.f)(arguments, ctx.clone()).await)
    }
}

/// Several tool sources as one, with names resolved in order (the first source offering a name
/// wins).
#[derive(Clone, Default)]
pub struct ToolSet {
    sources: Vec<Arc<dyn ToolSource>>,
}

impl fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolSet")
            .field("sources", &self.sources.len())
            .finish()
    }
}

impl ToolSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a source.
    #[must_use]
    pub fn with(mut self, source: impl ToolSource + 'static) -> Self {
        self.sources.push(Arc::new(source));
        self
    }

    /// Add a shared source.
    pub fn push(&mut self, source: Arc<dyn ToolSource>) {
        self.sources.push(source);
    }

    /// The sources.
    #[must_use]
    pub fn sources(&self) -> &[Arc<dyn ToolSource>] {
        &self.sources
    }

    /// List every tool with the index of the source that serves it. Duplicate names are
    /// dropped after the first.
    pub async fn list_indexed(&self) -> Result<Vec<(usize, ToolSpec)>> {
        let lists =
            futures::future::try_join_all(self.sources.iter().map(|s| s.list_tools())).await?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, list) in lists.into_iter().enumerate() {
            for spec in list {
                if seen.insert(spec.name.clone()) {
                    out.push((i, spec));
                } else {
                    tracing::warn!(tool = %spec.name, "two tool sources offer the same tool name; the first one wins");
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ToolSource for ToolSet {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        Ok(self
            .list_indexed()
            .await?
            .into_iter()
            .map(|(_, s)| s)
            .collect())
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        ctx: &RunContext,
    ) -> Result<ToolOutput> {
        let listed = self.list_indexed().await?;
        match listed.iter().find(|(_, s)| s.name == name) {
            Some((i, _)) => self.sources[*i].call_tool(name, arguments, ctx).await,
            None => Err(Error::ToolNotFound {
                tool: name.to_owned(),
                available: listed.into_iter().map(|(_, s)| s.name).collect(),
            }),
        }
    }
}

/// One tool call travelling through the tower [`ToolService`] stack.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ToolRequest {
    /// The call id the model gave.
    pub call_id: String,
    /// The tool name.
    pub name: String,
    /// The arguments.
    pub arguments: Value,
    /// The run the call belongs to.
    pub ctx: RunContext,
}

impl ToolRequest {
    /// A tool request.
    pub fn new(
        call_id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
        ctx: RunContext,
    ) -> Self {
        Self {
            call_id: call_id.into(),
            name: name.into(),
            arguments,
            ctx,
        }
    }
}

/// The boxed tower service every tool call runs through. Timeouts, retries, concurrency limits
/// and governance are tower layers around it (see `AgentLlm::with_tool_layer`).
pub type ToolService = tower::util::BoxCloneSyncService<ToolRequest, ToolOutput, Error>;

/// A tower layer that can wrap the tool-call stack ([`ToolService`]): implemented for every
/// [`Layer`](tower::Layer) whose service takes a [`ToolRequest`] and answers a [`ToolOutput`]
/// or an [`Error`] (timeouts, retries, approvals, governance, your own).
pub trait ToolLayer:
    tower::Layer<ToolService, Service = Self::ToolCalls> + Send + Sync + 'static
{
    /// The service the layer makes.
    type ToolCalls: tower::Service<ToolRequest, Response = ToolOutput, Error = Error, Future = Self::ToolCall>
        + Clone
        + Send
        + Sync
        + 'static;
    /// The future of one call.
    type ToolCall: std::future::Future<Output = Result<ToolOutput>> + Send + 'static;
}

impl<L, S> ToolLayer for L
where
    L: tower::Layer<ToolService, Service = S> + Send + Sync + 'static,
    S: tower::Service<ToolRequest, Response = ToolOutput, Error = Error>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type ToolCalls = S;
    type ToolCall = S::Future;
}

/// A tower service that calls a [`ToolSource`].
#[derive(Clone)]
pub struct ToolSourceService {
    source: Arc<dyn ToolSource>,
}

impl fmt::Debug for ToolSourceService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolSourceService").finish_non_exhaustive()
    }
}

impl ToolSourceService {
    /// A service over this source.
    pub fn new(source: Arc<dyn ToolSource>) -> Self {
        Self { source }
    }
}

impl tower::Service<ToolRequest> for ToolSourceService {
    type Response = ToolOutput;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ToolOutput>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        let source = Arc::clone(&self.source);
        async move { source.call_tool(&req.name, req.arguments, &req.ctx).await }.boxed()
    }
}

/// A tower layer that fails a tool call that takes longer than `timeout` with
/// [`Error::Timeout`] naming the tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolTimeoutLayer {
    timeout: std::time::Duration,
}

impl ToolTimeoutLayer {
    /// A timeout layer.
    #[must_use]
    pub fn new(timeout: std::time::Duration) -> Self {
        Self { timeout }
    }
}

impl tower::Layer<ToolService> for ToolTimeoutLayer {
    type Service = ToolTimeout;

    fn layer(&self, inner: ToolService) -> ToolTimeout {
        ToolTimeout {
            inner: tower::timeout::Timeout::new(inner, self.timeout),
            timeout: self.timeout,
        }
    }
}

/// The service made by [`ToolTimeoutLayer`]: tower's [`Timeout`](tower::timeout::Timeout),
/// with its elapsed error turned into an [`Error::Timeout`] naming the tool.
#[derive(Clone)]
pub struct ToolTimeout {
    inner: tower::timeout::Timeout<ToolService>,
    timeout: std::time::Duration,
}

impl fmt::Debug for ToolTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolTimeout")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl tower::Service<ToolRequest> for ToolTimeout {
    type Response = ToolOutput;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ToolOutput>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| from_timeout_error(e, "", self.timeout))
    }

    fn call(&mut self, req: ToolRequest) -> Self::Future {
        let timeout = self.timeout;
        let name = req.name.clone();
        let fut = self.inner.call(req);
        async move { fut.await.map_err(|e| from_timeout_error(e, &name, timeout)) }.boxed()
    }
}

/// tower's timeout boxes errors: take ours back out, and name the tool in a timeout.
fn from_timeout_error(e: crate::BoxError, tool: &str, after: std::time::Duration) -> Error {
    if e.is::<tower::timeout::error::Elapsed>() {
        return Error::Timeout {
            what: format!("tool `{tool}`"),
            after,
        };
    }
    match e.downcast::<Error>() {
        Ok(e) => *e,
        Err(e) => Error::tool(tool, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, JsonSchema)]
    struct Weather {
        /// City name.
        city: String,
        #[serde(default)]
        celsius: bool,
    }

    fn weather_tool() -> FnTool {
        FnTool::new("weather", "Weather for a city", |w: Weather| async move {
            if w.city.is_empty() {
                return Err("city must not be empty");
            }
            Ok(json!({"city": w.city, "temp": if w.celsius { 20 } else { 68 }}))
        })
    }

    #[tokio::test]
    async fn fn_tool_derives_schema_and_returns_structured_output() {
        let tool = weather_tool();
        let spec = &tool.list_tools().await.unwrap()[0];
        assert_eq!(spec.input_schema["properties"]["city"]["type"], "string");
        assert_eq!(spec.input_schema["required"], json!(["city"]));
        let out = tool
            .call_tool(
                "weather",
                json!({"city": "Oslo", "celsius": true}),
                &RunContext::new(),
            )
            .await
            .unwrap();
        assert!(!out.is_error);
        assert_eq!(out.structured, Some(json!({"city": "Oslo", "temp": 20})));
    }

    #[tokio::test]
    async fn bad_arguments_become_a_readable_tool_error() {
        let tool = weather_tool();
        let out = tool
            .call_tool("weather", json!({"celsius": "yes"}), &RunContext::new())
            .await
            .unwrap();
        assert!(out.is_error);
        let text = out.text_content();
        assert!(
            text.contains("invalid arguments for tool `weather`"),
            "{text}"
        );
        assert!(text.contains("city"), "{text}");
    }

    #[tokio::test]
    async fn function_error_becomes_tool_error_and_unknown_name_is_err() {
        let tool = weather_tool();
        let out = tool
            .call_tool("weather", json!({"city": ""}), &RunContext::new())
            .await
            .unwrap();
        assert!(out.is_error);
        assert_eq!(out.text_content(), "city must not be empty");
        let err = tool
            .call_tool("nope", json!({}), &RunContext::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ToolNotFound { .. }));
    }

    #[tokio::test]
    async fn timeout_layer_names_the_tool() {
        use tower::{Layer, ServiceExt};
        let slow = FnTool::new(
            "slow",
            "sleeps",
            |_: serde_json::Map<String, Value>| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                Ok::<_, String>("done")
            },
        );
        let svc = ToolService::new(ToolSourceService::new(Arc::new(slow)));
        let svc = ToolService::new(
            ToolTimeoutLayer::new(std::time::Duration::from_millis(20)).layer(svc),
        );
        let err = svc
            .oneshot(ToolRequest::new("c", "slow", json!({}), RunContext::new()))
            .await
            .unwrap_err();
        assert!(err.is_timeout());
        assert!(err.to_string().contains("tool `slow`"), "{err}");
    }
}
