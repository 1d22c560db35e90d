//! The one error type of agentkit-core.

use std::time::Duration;

/// A boxed error used as the `source` of [`Error`] variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with agentkit-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong when talking to an LLM provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// The provider rejected the credentials (HTTP 401/403).
    Auth,
    /// The request was malformed or refused (HTTP 400/404/422).
    BadRequest,
    /// Too many requests (HTTP 429). Retryable, often with `Retry-After`.
    RateLimited,
    /// The provider is overloaded (HTTP 503/529). Retryable.
    Overloaded,
    /// The provider failed (HTTP 5xx). Retryable.
    Server,
    /// The connection could not be made or broke. Retryable.
    Connect,
    /// The request timed out. Retryable.
    Timeout,
    /// The provider answered with something that is not its documented wire format.
    Decode,
    /// A streamed response ended before its final event.
    Stream,
}

impl ProviderErrorKind {
    /// Whether a request that failed this way may succeed when sent again.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::Overloaded | Self::Server | Self::Connect | Self::Timeout
        )
    }
}

impl std::fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Self::Auth => "authentication failed",
            Self::BadRequest => "bad request",
            Self::RateLimited => "rate limited",
            Self::Overloaded => "overloaded",
            Self::Server => "server error",
            Self::Connect => "connection failed",
            Self::Timeout => "timed out",
            Self::Decode => "unexpected response format",
            Self::Stream => "stream ended early",
        };
        f.write_str(s)
    }
}

/// Everything that can fail in agentkit-core.
///
/// Errors carry the context a user needs to act: which provider, tool, agent,
/// file or run failed, and why. Use the predicates ([`Error::is_retryable`],
/// [`Error::is_timeout`], [`Error::is_cancelled`]) rather than matching on
/// variants where you can: the enum is `#[non_exhaustive]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An LLM provider call failed.
    #[error("{provider}: {kind}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Provider {
        /// Provider name, e.g. `openai`.
        provider: String,
        /// The class of failure.
        kind: ProviderErrorKind,
        /// HTTP status, when there was one.
        status: Option<u16>,
        /// What the provider said, or what we saw.
        message: String,
        /// How long the provider asked us to wait before retrying.
        retry_after: Option<Duration>,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A tool could not be called (as opposed to a tool that ran and reported an error,
    /// which is a [`ToolOutput`](crate::ToolOutput) with `is_error`).
    #[error("tool `{tool}`: {message}")]
    Tool {
        /// The tool name.
        tool: String,
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// No tool source offers a tool of this name.
    #[error("no tool named `{tool}`; available tools: {}", if available.is_empty() { "none".to_owned() } else { available.join(", ") })]
    ToolNotFound {
        /// The requested name.
        tool: String,
        /// Names that do exist.
        available: Vec<String>,
    },
    /// The request is invalid (bad parameters, inconsistent configuration).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A configuration file or value is wrong.
    #[error("config error{}{}: {message}", file.as_ref().map(|f| format!(" in {}", f.display())).unwrap_or_default(), if key.is_empty() { String::new() } else { format!(" at `{key}`") })]
    Config {
        /// The file, when the value came from one.
        file: Option<std::path::PathBuf>,
        /// Dotted path of the offending key (empty for the whole file).
        key: String,
        /// What was expected.
        message: String,
    },
    /// The model's structured output could not be parsed or validated.
    #[error("structured output for `{type_name}` is invalid: {message}")]
    StructuredOutput {
        /// The Rust type that was requested.
        type_name: String,
        /// Parse or validation error.
        message: String,
        /// The raw model text.
        raw: String,
    },
    /// The run was cancelled.
    #[error("run {run_id} was cancelled")]
    Cancelled {
        /// The run.
        run_id: String,
    },
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: String,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// The run's deadline passed.
    #[error("run {run_id} passed its deadline{}", if what.is_empty() { String::new() } else { format!(" during {what}") })]
    DeadlineExceeded {
        /// The run.
        run_id: String,
        /// What was running when the deadline passed.
        what: String,
    },
    /// The run's token or dollar budget is spent.
    #[error("run {run_id} exceeded its budget: {message}")]
    BudgetExceeded {
        /// The run.
        run_id: String,
        /// Which limit and by how much.
        message: String,
    },
    /// A limit refuses this until `retry_after` from now: a rate limit, or a budget per
    /// period that is spent (it starts over when its period ends).
    #[error("{what}: {message}")]
    LimitReached {
        /// The limit, e.g. "the budget of agent `writer`" or "the rate limit of tool `x`".
        what: String,
        /// The spend or rate, when it allows again and what to do.
        message: String,
        /// When trying again may succeed.
        retry_after: Duration,
    },
    /// Asking a human for input failed or no handler is configured.
    #[error("human input: {0}")]
    HumanInput(String),
    /// A JSON (de)serialisation failed. The serde error is part of the message (and not
    /// repeated as [`source`](std::error::Error::source)).
    #[error("{context}: {error}")]
    Json {
        /// What was being (de)serialised.
        context: String,
        /// The serde error.
        error: serde_json::Error,
    },
    /// The journal could not record or replay a step.
    #[error("journal step `{key}`: {message}")]
    Journal {
        /// The step key.
        key: String,
        /// What failed.
        message: String,
    },
    /// A workflow host operation failed.
    #[error("workflow: {0}")]
    Workflow(String),
    /// A named thing (a run, a workflow, a server, a thread) does not exist.
    #[error("{kind} `{name}` not found{}", if hint.is_empty() { String::new() } else { format!("; {hint}") })]
    NotFound {
        /// What kind of thing, e.g. `run`.
        kind: String,
        /// Its name or id.
        name: String,
        /// What to do, e.g. the names that do exist.
        hint: String,
    },
    /// The operation is not allowed in the thing's current state (e.g. resuming a run that
    /// already finished).
    #[error("{what}: {message}")]
    InvalidState {
        /// The thing, e.g. "run `0193…`".
        what: String,
        /// Its state and what is allowed.
        message: String,
    },
    /// A service is not available now (shutting down, not started); trying later or
    /// elsewhere may succeed.
    #[error("{what} is unavailable: {message}")]
    Unavailable {
        /// The service, e.g. `runtime`.
        what: String,
        /// Why.
        message: String,
    },
    /// A connection (to an MCP server, a database) was lost mid-call.
    #[error("the connection to {peer} was lost: {message}")]
    ConnectionLost {
        /// The peer, e.g. "MCP server `files`".
        peer: String,
        /// What happened and what to do.
        message: String,
    },
    /// Any other error, with context. The underlying error is part of the message (and not
    /// repeated as [`source`](std::error::Error::source)).
    #[error("{context}: {error}")]
    Other {
        /// What was being done.
        context: String,
        /// The underlying error.
        error: BoxError,
    },
}

impl Error {
    /// A provider error without an HTTP status or source.
    pub fn provider(
        provider: impl Into<String>,
        kind: ProviderErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self::Provider {
            provider: provider.into(),
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A tool error: the call could not be made.
    pub fn tool(tool: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Tool {
            tool: tool.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A JSON error with context.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            context: context.into(),
            error: source,
        }
    }

    /// Wrap any error with context.
    pub fn other(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Other {
            context: context.into(),
            error: source.into(),
        }
    }

    /// A [`NotFound`](Self::NotFound) error.
    pub fn not_found(
        kind: impl Into<String>,
        name: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::NotFound {
            kind: kind.into(),
            name: name.into(),
            hint: hint.into(),
        }
    }

    /// An [`InvalidState`](Self::InvalidState) error.
    pub fn invalid_state(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidState {
            what: what.into(),
            message: message.into(),
        }
    }

    /// Whether sending the same request again may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Provider { kind, .. } => kind.is_retryable(),
            Self::Timeout { .. } | Self::Unavailable { .. } | Self::ConnectionLost { .. } => true,
            _ => false,
        }
    }

    /// Whether a named thing does not exist.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::ToolNotFound { .. })
    }

    /// Whether the caller asked for something invalid (bad parameters, configuration or
    /// structured output): sending it again unchanged fails again.
    #[must_use]
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            Self::InvalidRequest(_) | Self::Config { .. } | Self::InvalidState { .. }
        )
    }

    /// Whether a connection was lost mid-call.
    #[must_use]
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::ConnectionLost { .. })
    }

    /// Whether this is a timeout (of a provider call or any operation).
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::DeadlineExceeded { .. }
                | Self::Provider {
                    kind: ProviderErrorKind::Timeout,
                    ..
                }
        )
    }

    /// Whether the run was cancelled.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled { .. })
    }

    /// Whether a budget stopped the run.
    #[must_use]
    pub fn is_budget_exceeded(&self) -> bool {
        matches!(self, Self::BudgetExceeded { .. })
    }

    /// Whether the connection to a provider failed.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Provider {
                kind: ProviderErrorKind::Connect,
                ..
            }
        )
    }

    /// The provider error kind, if this is a provider error.
    #[must_use]
    pub fn provider_kind(&self) -> Option<ProviderErrorKind> {
        match self {
            Self::Provider { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether a rate limit or a spent budget refused this ([`Error::LimitReached`]).
    #[must_use]
    pub fn is_limit_reached(&self) -> bool {
        matches!(self, Self::LimitReached { .. })
    }

    /// How long the provider (or a limit) asked us to wait before retrying, if it said.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Provider { retry_after, .. } => *retry_after,
            Self::LimitReached { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The HTTP status of a provider error, if any.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Provider { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether the run must stop (cancelled, past its deadline, out of budget) rather than
    /// showing the failure to the model.
    #[must_use]
    pub fn is_fatal_for_run(&self) -> bool {
        matches!(
            self,
            Self::Cancelled { .. } | Self::BudgetExceeded { .. } | Self::DeadlineExceeded { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_error_message_names_provider_and_status() {
        let e = Error::Provider {
            provider: "openai".into(),
            kind: ProviderErrorKind::RateLimited,
            status: Some(429),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(2)),
            source: None,
        };
        assert_eq!(e.to_string(), "openai: rate limited (HTTP 429): slow down");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn a_source_is_printed_once() {
        use std::error::Error as _;
        let e = Error::json(
            "reading the plan",
            serde_json::from_str::<u8>("x").unwrap_err(),
        );
        assert!(
            e.to_string()
                .starts_with("reading the plan: expected value"),
            "{e}"
        );
        assert!(e.source().is_none(), "not repeated as the source");
        let e = Error::other("opening the store", std::io::Error::other("disk full"));
        assert_eq!(e.to_string(), "opening the store: disk full");
        assert!(e.source().is_none());
    }

    #[test]
    fn typed_errors_say_what_to_do() {
        let e = Error::not_found("run", "r-1", "list runs with `Runtime::list`");
        assert_eq!(
            e.to_string(),
            "run `r-1` not found; list runs with `Runtime::list`"
        );
        assert!(e.is_not_found() && !e.is_retryable());
        let e = Error::Unavailable {
            what: "runtime".into(),
            message: "it is shutting down".into(),
        };
        assert!(e.is_retryable() && !e.is_invalid_request());
    }

    #[test]
    fn tool_not_found_lists_alternatives() {
        let e = Error::ToolNotFound {
            tool: "x".into(),
            available: vec!["a".into(), "b".into()],
        };
        assert_eq!(e.to_string(), "no tool named `x`; available tools: a, b");
        assert!(!e.is_retryable());
    }
}
