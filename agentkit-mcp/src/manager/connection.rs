//! [`Connection`]: one live connection, its requests and its close.

use super::*;
use tracing::Instrument;

/// A live connection to one server. Cheap to clone (an `Arc`).
///
/// Its requests are made on this connection only: one fails when the connection is lost.
/// [`ConnectionManager::read_only`] makes a read-only request again on a new connection then.
pub struct Connection {
    pub(super) server: String,
    pub(super) peer: Peer<RoleClient>,
    pub(super) client: AgentkitClient,
    pub(super) pid: Option<u32>,
    /// `network.transport` of its spans: `pipe` (stdio), `tcp` (HTTP) or `inproc`.
    pub(super) network: &'static str,
    /// What the transport did with the requests it sent, and whether the server's side ended.
    pub(super) wire: Arc<Wire>,
    /// Closed on purpose (the manager shut down, or the server was replaced): a call that
    /// never reached it is not sent again on a new connection.
    pub(super) retired: AtomicBool,
    pub(super) running: AsyncMutex<Option<RunningService<RoleClient, AgentkitClient>>>,
    /// Ends the connection's background tasks (the `subscriptions/listen` follower).
    pub(super) stop: CancellationToken,
    /// The child process of a stdio server.
    #[cfg(feature = "client-stdio")]
    pub(super) child: AsyncMutex<Option<crate::stdio::StdioChild>>,
    /// Messages of a stdio server discarded for being too large.
    #[cfg(feature = "client-stdio")]
    pub(super) oversize: Option<Arc<crate::stdio::Oversize>>,
    /// How long a closing stdio server may take to exit on its own.
    pub(super) shutdown_grace: Duration,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The server's name.
    #[must_use]
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The rmcp peer, for requests agentkit does not wrap.
    #[must_use]
    pub fn peer(&self) -> &Peer<RoleClient> {
        &self.peer
    }

    /// What the server said about itself (version, capabilities, negotiated protocol).
    #[must_use]
    pub fn peer_info(&self) -> Option<Arc<ServerPeerInfo>> {
        self.peer.peer_info()
    }

    /// The negotiated protocol version.
    #[must_use]
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.peer_info().map(|i| i.protocol_version.clone())
    }

    /// The process id of a stdio server.
    #[must_use]
    pub fn process_id(&self) -> Option<u32> {
        self.pid
    }

    /// Whether the transport is closed (the server exited or the session dropped), or
    /// closing: the server's side ended and rmcp is still winding the connection down.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.wire.ended() || self.peer.is_transport_closed()
    }

    /// Close the connection. For a stdio server: requests the server sent are answered
    /// first (up to the server's shutdown grace), stdin is closed, the server gets the grace
    /// period to exit, then SIGTERM, then SIGKILL after as long again.
    pub async fn close(&self) {
        self.stop.cancel();
        let running = self.running.lock().await.take();
        if let Some(mut r) = running {
            self.client.answering.wait_idle(self.shutdown_grace).await;
            let _ = r.close_with_timeout(CLOSE_TIMEOUT).await;
        }
        #[cfg(feature = "client-stdio")]
        if let Some(child) = self.child.lock().await.take() {
            child.shutdown(self.shutdown_grace).await;
        }
    }

    /// The answer to `request`, or `TransportClosed` when rmcp's service loop for this
    /// connection ended without answering it. rmcp answers (or drops, failing them) the
    /// requests its loop took before the loop ends, but a request queued just as the loop
    /// ended can stay in its queue, never answered: once the loop is gone, the answer gets
    /// `GONE_GRACE` to come through, then the request counts as lost.
    pub(super) async fn or_gone<T>(
        &self,
        request: impl Future<Output = std::result::Result<T, ServiceError>>,
    ) -> std::result::Result<T, ServiceError> {
        tokio::pin!(request);
        tokio::select! {
            biased;
            r = &mut request => r,
            () = self.wire.gone.cancelled() => tokio::time::timeout(GONE_GRACE, request)
                .await
                .unwrap_or(Err(ServiceError::TransportClosed)),
        }
    }

    /// Every tool, following pagination.
    pub async fn list_tools(&self) -> Result<Vec<Tool>> {
        self.or_gone(self.peer.list_all_tools())
            .await
            .map_err(|e| service_error(&self.server, "tools/list", e))
    }

    /// Every prompt, following pagination.
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>> {
        self.or_gone(self.peer.list_all_prompts())
            .await
            .map_err(|e| service_error(&self.server, "prompts/list", e))
    }

    /// Every resource, following pagination.
    pub async fn list_resources(&self) -> Result<Vec<Resource>> {
        self.or_gone(self.peer.list_all_resources())
            .await
            .map_err(|e| service_error(&self.server, "resources/list", e))
    }

    /// Read a resource.
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult> {
        self.or_gone(
            self.peer
                .read_resource(ReadResourceRequestParams::new(uri.to_owned())),
        )
        .await
        .map_err(|e| service_error(&self.server, &format!("resources/read {uri}"), e))
    }

    /// Get a prompt with arguments.
    pub async fn get_prompt(&self, name: &str, arguments: JsonObject) -> Result<GetPromptResult> {
        self.or_gone(
            self.peer
                .get_prompt(GetPromptRequestParams::new(name.to_owned()).with_arguments(arguments)),
        )
        .await
        .map_err(|e| service_error(&self.server, &format!("prompts/get {name}"), e))
    }

    /// Call a tool for a run: `_meta` carries the run id, an idempotency key and a W3C
    /// `traceparent`; progress notifications become [`RunEvent::Progress`](agentkit_core::RunEvent)
    /// events of `ctx`; the server's sampling and elicitation requests are answered for `ctx`;
    /// cancelling `ctx` sends `notifications/cancelled`.
    ///
    /// The call runs in a `tools/call {name}` span (client kind) with the MCP semantic
    /// conventions' attributes: `mcp.method.name`, `gen_ai.tool.name`,
    /// `gen_ai.operation.name = execute_tool`, `mcp.protocol.version`, `network.transport`,
    /// `jsonrpc.request.id`, `error.type` on failure, and `agentkit.mcp.server`. Arguments and
    /// results are not recorded.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RunContext,
        timeout: Option<Duration>,
    ) -> Result<CallToolResult> {
        let params = CallToolRequestParams::new(name.to_owned()).with_arguments(arguments);
        self.call_tool_params(params, ctx, timeout)
            .await
            .map_err(CallFailure::into_error)
    }

    /// [`call_tool`](Self::call_tool) with the request's parameters; a request that provably
    /// never reached the server comes back with its failure, to be sent again elsewhere.
    pub(super) async fn call_tool_params(
        &self,
        params: CallToolRequestParams,
        ctx: &RunContext,
        timeout: Option<Duration>,
    ) -> std::result::Result<CallToolResult, CallFailure> {
        let name = &params.name;
        let protocol = self
            .protocol_version()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let span = tracing::info_span!(
            "tools/call",
            otel.name = %format!("tools/call {name}"),
            otel.kind = "client",
            mcp.method.name = "tools/call",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = %name,
            mcp.protocol.version = %protocol,
            network.transport = self.network,
            agentkit.mcp.server = %self.server,
            jsonrpc.request.id = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        // Boxed: the call's future is kilobytes (rmcp's request, the wait for its answer and
        // its cancellation paths); in place, every caller's future would carry it and each
        // await of it would copy it again.
        let out = Box::pin(self.call_tool_in_span(params, ctx, timeout))
            .instrument(span.clone())
            .await;
        match &out {
            Err(e) => {
                span.record("error.type", error_type(e.error()));
            }
            Ok(r) if r.is_error == Some(true) => {
                span.record("error.type", "tool_error");
            }
            Ok(_) => {}
        }
        out
    }

    async fn call_tool_in_span(
        &self,
        mut params: CallToolRequestParams,
        ctx: &RunContext,
        timeout: Option<Duration>,
    ) -> std::result::Result<CallToolResult, CallFailure> {
        let name: &str = &params.name;
        let what = format!("{}/{}", self.server, name);
        let lost = |e: ServiceError| service_error(&self.server, &format!("tools/call {name}"), e);
        let meta = request_meta(ctx);
        for round in 0..MAX_INPUT_ROUNDS {
            // Only a call none of whose rounds reached the server may be sent again: after an
            // input-required round the server already knows of it.
            let unsent = |error: Error, params: CallToolRequestParams| {
                if round == 0 {
                    CallFailure::NotSent { error, params }
                } else {
                    CallFailure::Failed(error)
                }
            };
            ctx.check()?;
            let mut opts = PeerRequestOptions::no_options().with_meta(meta.clone());
            if let Some(t) = timeout {
                opts.timeout = Some(t);
                opts = opts.reset_timeout_on_progress();
            }
            let request = ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()));
            let handle = match self.peer.send_request_with_option(request, opts).await {
                Ok(handle) => handle,
                // rmcp's service loop is gone: the request was not even queued.
                Err(e @ ServiceError::TransportClosed) => return Err(unsent(lost(e), params)),
                Err(e) => return Err(lost(e).into()),
            };
            let guard = self
                .client
                .inflight
                .insert(token_key(&handle.progress_token), ctx.clone());
            let id = handle.id.clone();
            tracing::Span::current().record("jsonrpc.request.id", id.to_string().as_str());
            let remaining = ctx.remaining();
            let mut too_large = self.oversize_watch(&id);
            let response = tokio::select! {
                r = self.or_gone(handle.await_response()) => r,
                len = too_large.matched() => {
                    return Err(result_too_large(&what, len).into());
                }
                () = ctx.cancellation().cancelled() => {
                    self.send_cancel(id, "the run was cancelled").await;
                    return Err(Error::Cancelled { run_id: ctx.run_id().to_owned() }.into());
                }
                () = sleep_opt(remaining) => {
                    self.send_cancel(id, "the run's deadline passed").await;
                    return Err(Error::Timeout { what: format!("MCP call `{what}`"), after: remaining.unwrap_or_default() }.into());
                }
            };
            match response {
                Ok(ServerResult::CallToolResult(r)) => {
                    guard.await_final_progress().await;
                    return Ok(r);
                }
                Ok(ServerResult::InputRequiredResult(ir)) => {
                    let (responses, state) = self.fulfill(ir, ctx).await?;
                    params.input_responses = responses;
                    params.request_state = state;
                }
                Ok(ServerResult::CreateTaskResult(_)) => {
                    return Err(Error::tool(
                        what,
                        "the server answered with a task; agentkit calls tools synchronously (do not advertise the tasks capability)",
                    )
                    .into());
                }
                Ok(_) => {
                    return Err(Error::tool(
                        what,
                        "the server answered tools/call with an unexpected result type",
                    )
                    .into());
                }
                Err(ServiceError::Timeout { .. }) if too_large.unmatched().is_some() => {
                    let len = too_large.unmatched().unwrap_or_default();
                    return Err(result_too_large(&what, len).into());
                }
                Err(e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)))
                    if self.wire.never_reached(&id) =>
                {
                    return Err(unsent(lost(e), params));
                }
                Err(e) => return Err(lost(e).into()),
            }
        }
        Err(Error::tool(
            what,
            format!(
                "the server asked for input more than {MAX_INPUT_ROUNDS} times without answering"
            ),
        )
        .into())
    }

    /// Watches for the stdio transport discarding this request's response for its size.
    fn oversize_watch(&self, id: &rmcp::model::RequestId) -> OversizeWatch {
        #[cfg(feature = "client-stdio")]
        {
            OversizeWatch {
                rx: self.oversize.as_ref().map(|o| o.subscribe()),
                id: serde_json::to_string(id).unwrap_or_default(),
                unmatched: None,
            }
        }
        #[cfg(not(feature = "client-stdio"))]
        {
            let _ = id;
            OversizeWatch
        }
    }

    async fn send_cancel(&self, id: rmcp::model::RequestId, reason: &str) {
        let _ = self
            .peer
            .notify_cancelled(CancelledNotificationParam::new(
                Some(id),
                Some(reason.to_owned()),
            ))
            .await;
    }

    async fn fulfill(
        &self,
        ir: InputRequiredResult,
        ctx: &RunContext,
    ) -> Result<(Option<InputResponses>, Option<String>)> {
        let mut out = InputResponses::new();
        for (key, req) in ir.input_requests.unwrap_or_default() {
            let value = match req {
                InputRequest::CreateMessage(r) => {
                    let res = self.client.sample(r.params, Some(ctx.clone())).await;
                    res.map(|r| serde_json::to_value(r).unwrap_or_default())
                }
                InputRequest::Elicitation(r) => {
                    let res = self.client.elicit(r.params, Some(ctx.clone())).await;
                    res.map(|r| serde_json::to_value(r).unwrap_or_default())
                }
                InputRequest::ListRoots(_) => {
                    Ok(serde_json::to_value(self.client.roots()).unwrap_or_default())
                }
                _ => continue,
            };
            let value = value.map_err(|e| {
                Error::tool(
                    self.server.clone(),
                    format!(
                        "answering the server's input request `{key}` failed: {}",
                        e.message
                    ),
                )
            })?;
            out.insert(key, value);
        }
        Ok(((!out.is_empty()).then_some(out), ir.request_state))
    }
}

/// Which discarded oversize messages concern one request.
#[cfg(feature = "client-stdio")]
pub(super) struct OversizeWatch {
    rx: Option<tokio::sync::broadcast::Receiver<(Option<String>, usize)>>,
    id: String,
    /// The size of a discarded message whose id could not be read.
    unmatched: Option<usize>,
}

#[cfg(feature = "client-stdio")]
impl OversizeWatch {
    /// Resolves with the size of the discarded message that was this request's response.
    async fn matched(&mut self) -> usize {
        let Some(rx) = self.rx.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match rx.recv().await {
                Ok((Some(id), len)) if id == self.id => return len,
                Ok((None, len)) => self.unmatched = Some(len),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The size of a discarded message that may have been this request's response.
    fn unmatched(&mut self) -> Option<usize> {
        if let Some(rx) = self.rx.as_mut() {
            while let Ok((id, len)) = rx.try_recv() {
                if id.is_none() || id.as_deref() == Some(self.id.as_str()) {
                    self.unmatched = Some(len);
                }
            }
        }
        self.unmatched
    }
}

#[cfg(not(feature = "client-stdio"))]
pub(super) struct OversizeWatch;

#[cfg(not(feature = "client-stdio"))]
impl OversizeWatch {
    async fn matched(&mut self) -> usize {
        std::future::pending().await
    }

    fn unmatched(&mut self) -> Option<usize> {
        None
    }
}

#[cfg_attr(not(feature = "client-stdio"), allow(dead_code))]
pub(super) fn result_too_large(what: &str, len: usize) -> Error {
    Error::tool(
        what,
        format!(
            "the result is too large: the server sent a {:.1} MiB message, over the {} MiB \
             limit of one stdio message, and it was discarded; ask the tool for less (a page, \
             a filter, a smaller file)",
            len as f64 / (1024.0 * 1024.0),
            MAX_MESSAGE_BYTES / (1024 * 1024)
        ),
    )
}

/// The largest message a stdio server may send (rmcp's line limit).
pub(super) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Jittered exponential delays from `min` up to `max`, without end.
pub(super) fn backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

pub(super) async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// How a `tools/call` on one connection failed.
pub(super) enum CallFailure {
    /// The call failed; the request may have reached the server (its tool may have run).
    Failed(Error),
    /// The connection was lost and the request provably never reached the server: `params`
    /// is the request to send again on a new connection.
    NotSent {
        error: Error,
        params: CallToolRequestParams,
    },
}

impl CallFailure {
    pub(super) fn error(&self) -> &Error {
        match self {
            Self::Failed(e) | Self::NotSent { error: e, .. } => e,
        }
    }

    pub(super) fn into_error(self) -> Error {
        match self {
            Self::Failed(e) | Self::NotSent { error: e, .. } => e,
        }
    }
}

impl From<Error> for CallFailure {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

/// Turn an rmcp error into an agentkit error naming the server and what was attempted.
pub(crate) fn service_error(server: &str, what: &str, e: ServiceError) -> Error {
    match e {
        ServiceError::Timeout { timeout } => Error::Timeout {
            what: format!("MCP server `{server}`: {what}"),
            after: timeout,
        },
        ServiceError::McpError(d) => Error::tool(
            format!("{server}: {what}"),
            format!(
                "MCP server `{server}` answered with error {}: {}",
                d.code.0, d.message
            ),
        ),
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => Error::Tool {
            tool: format!("{server}: {what}"),
            message: format!(
                "the connection to MCP server `{server}` was lost (did it crash?); it is restarted on the next call"
            ),
            source: Some(Box::new(e)),
        },
        other => Error::Tool {
            tool: format!("{server}: {what}"),
            message: format!("MCP server `{server}`: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

pub(super) fn is_connection_lost(e: &Error) -> bool {
    matches!(e, Error::Tool { message, .. } if message.contains("was lost"))
}

/// The `error.type` of a failed MCP call: a short, low-cardinality class of the error.
fn error_type(e: &Error) -> &'static str {
    match e {
        Error::Timeout { .. } => "timeout",
        Error::Cancelled { .. } => "cancelled",
        _ => "mcp_error",
    }
}
