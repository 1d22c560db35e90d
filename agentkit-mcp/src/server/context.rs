//! [`CallContext`]: what a tool, resource or prompt handler gets besides its arguments.

#![allow(deprecated)] // logging and subscriptions are SEP-2577-deprecated in rmcp but still part of MCP 2025-11-25.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequest, ElicitRequestParams, ElicitResult, ElicitationSchema, InputRequest,
    InputRequests, InputResponses, LoggingLevel, LoggingMessageNotificationParam,
    ProgressNotificationParam, ProtocolVersion,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// What a handler gets besides its arguments: cancellation, progress, logging, the peer, and
/// questions to the client ([`elicit`](Self::elicit), [`sample`](Self::sample)) in either
/// lifecycle.
#[derive(Clone)]
pub struct CallContext {
    pub(super) request: RequestContext<RoleServer>,
    pub(super) input: Arc<InputRounds>,
    pub(super) session: Option<Arc<str>>,
}

/// The input-required rounds (MRTR) of one `tools/call` on a 2026-07-28 connection: the
/// client's answers so far, and the questions the handler asked that have no answer yet.
#[derive(Default)]
pub(super) struct InputRounds {
    pub(super) answers: InputResponses,
    pub(super) asked: AtomicUsize,
    pub(super) pending: Mutex<InputRequests>,
}

impl InputRounds {
    /// The answers of earlier rounds (carried in `requestState`) plus this round's.
    pub(super) fn from_request(req: &CallToolRequestParams) -> Self {
        let mut answers: InputResponses = req
            .request_state
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        if let Some(r) = &req.input_responses {
            answers.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Self {
            answers,
            ..Self::default()
        }
    }

    pub(super) fn take_pending(&self) -> InputRequests {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("id", &self.request.id)
            .finish_non_exhaustive()
    }
}

impl CallContext {
    /// Fires when the client cancels the request (or the connection ends).
    #[must_use]
    pub fn cancellation(&self) -> CancellationToken {
        self.request.ct.clone()
    }

    /// The connected client.
    #[must_use]
    pub fn peer(&self) -> &Peer<RoleServer> {
        &self.request.peer
    }

    /// The MCP session this request belongs to: the `Mcp-Session-Id` of a legacy streamable
    /// HTTP session (absent on its `initialize` request), one id per stdio (or other
    /// transport) connection, and `None` for stateless 2026-07-28 HTTP requests. Stable for
    /// the session's life; [`McpServerBuilder::on_session_end`](super::McpServerBuilder::on_session_end) is told when it ends.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The raw rmcp request context (meta, extensions such as `http::request::Parts`).
    #[must_use]
    pub fn request(&self) -> &RequestContext<RoleServer> {
        &self.request
    }

    /// The request's `_meta` value under `key`, if any.
    #[must_use]
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.request.meta.get(key)
    }

    /// Send a progress notification, when the client asked for progress.
    pub async fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        if let Some(token) = self.request.meta.get_progress_token() {
            let mut p = ProgressNotificationParam::new(token, progress);
            if let Some(t) = total {
                p = p.with_total(t);
            }
            if let Some(m) = message {
                p = p.with_message(m);
            }
            let _ = self.request.peer.notify_progress(p).await;
        }
    }

    /// Whether this request arrived on a 2026-07-28 (or later) connection, where the server
    /// may not send requests to the client and asks through input-required results instead.
    #[must_use]
    pub fn is_stateless_protocol(&self) -> bool {
        self.request
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28)
    }

    /// Ask the client's user for input (an elicitation) while a tool runs; works in both
    /// lifecycles:
    ///
    /// - legacy sessions (up to 2025-11-25): sends `elicitation/create` and waits for the answer;
    /// - 2026-07-28: the first time, records the question and returns an error; propagate it
    ///   with `?`. The server then answers `tools/call` with an `InputRequiredResult` carrying
    ///   the question (whatever the handler returned), the client retries with the answer, and
    ///   the handler runs again from the start, this time getting the answer here.
    ///
    /// So on 2026-07-28 a handler runs once per round: ask before acting, and keep the order
    /// of questions stable (answers are matched to questions by their position). The answers
    /// of earlier rounds travel in `requestState`; they come from the client either way, so a
    /// client that edits them only changes its own answers.
    ///
    /// ```no_run
    /// # use agentkit_mcp::server::CallContext;
    /// # use agentkit_mcp::rmcp::model::{CallToolResult, ContentBlock, ElicitationAction, ElicitationSchema};
    /// # async fn tool(ctx: CallContext) -> Result<CallToolResult, agentkit_mcp::rmcp::ErrorData> {
    /// let schema: ElicitationSchema = serde_json::from_value(serde_json::json!({
    ///     "type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]
    /// })).map_err(|e| agentkit_mcp::rmcp::ErrorData::internal_error(e.to_string(), None))?;
    /// let answer = ctx.elicit("Proceed?", schema).await?;
    /// let text = format!("{:?} {:?}", answer.action, answer.content);
    /// Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    /// # }
    /// ```
    pub async fn elicit(
        &self,
        message: impl Into<String>,
        schema: ElicitationSchema,
    ) -> Result<ElicitResult, ErrorData> {
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message.into(),
            requested_schema: schema,
        };
        if !self.is_stateless_protocol() {
            return self
                .request
                .peer
                .create_elicitation(params)
                .await
                .map_err(|e| ErrorData::internal_error(format!("elicitation failed: {e}"), None));
        }
        self.ask(InputRequest::Elicitation(ElicitRequest::new(params)))
    }

    /// Ask the client's model for a completion (sampling) while a tool runs, in either
    /// lifecycle; see [`elicit`](Self::elicit) for how 2026-07-28 rounds work.
    pub async fn sample(
        &self,
        params: CreateMessageRequestParams,
    ) -> Result<CreateMessageResult, ErrorData> {
        if !self.is_stateless_protocol() {
            return self
                .request
                .peer
                .create_message(params)
                .await
                .map_err(|e| ErrorData::internal_error(format!("sampling failed: {e}"), None));
        }
        self.ask(InputRequest::CreateMessage(CreateMessageRequest::new(
            params,
        )))
    }

    /// The answer to the next question of this handler run, or record the question.
    pub(super) fn ask<T: serde::de::DeserializeOwned>(
        &self,
        question: InputRequest,
    ) -> Result<T, ErrorData> {
        let n = self.input.asked.fetch_add(1, Ordering::SeqCst);
        let key = format!("q{n}");
        if let Some(answer) = self.input.answers.get(&key) {
            return serde_json::from_value(answer.clone()).map_err(|e| {
                ErrorData::invalid_params(
                    format!("malformed answer to input request `{key}`: {e}"),
                    None,
                )
            });
        }
        if let Ok(mut p) = self.input.pending.lock() {
            p.insert(key.clone(), question);
        }
        Err(ErrorData::internal_error(
            format!("input request `{key}` has no answer yet; the client is asked for it"),
            None,
        ))
    }

    /// Send a log message notification to the client.
    pub async fn log(&self, level: LoggingLevel, data: Value) {
        #[allow(deprecated)]
        let p = LoggingMessageNotificationParam::new(level, data);
        #[allow(deprecated)]
        let _ = self.request.peer.notify_logging_message(p).await;
    }
}
