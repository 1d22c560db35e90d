//! The rmcp [`ClientHandler`] agentkit serves on every connection: it routes the server's
//! sampling, elicitation and roots requests and its progress notifications to the
//! [`RunContext`] of the call in flight.
#![allow(deprecated)] // sampling and roots are SEP-2577-deprecated in rmcp but still part of MCP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agentkit_core::config::McpRoot;
use agentkit_core::{
    CompletionRequest, HumanInputHandler, HumanInputRequest, HumanInputResponse, LlmProvider,
    Message, Role as CoreRole, RunContext, RunEvent,
};
use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability, Implementation,
    ListRootsResult, LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam,
    Role, Root, RootsCapabilities, SamplingCapability, SamplingMessage,
    SamplingMessageContentBlock,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ClientHandler, ErrorData, RoleClient};

/// What every connection of a manager shares: who we are and who answers the server's requests.
#[derive(Clone, Default)]
pub(crate) struct ClientShared {
    pub(crate) client_name: String,
    pub(crate) client_version: String,
    pub(crate) sampling: Option<Arc<dyn LlmProvider>>,
    pub(crate) sampling_model: Option<String>,
    pub(crate) human_input: Option<Arc<dyn HumanInputHandler>>,
    /// Token store and authorization handler of OAuth servers.
    #[cfg(feature = "oauth")]
    pub(crate) oauth: crate::oauth::OAuthOptions,
}

/// The calls in flight on one connection, by progress token, so that progress and the server's
/// requests reach the right run.
#[derive(Default)]
pub(crate) struct Inflight {
    next: AtomicU64,
    calls: Mutex<Calls>,
    /// Woken on every progress notification.
    progressed: tokio::sync::Notify,
}

/// The calls of an [`Inflight`]: those in flight, and those that ended in the last
/// [`LINGER`], oldest first.
///
/// Ended calls are kept apart: at tens of thousands of calls a second a `LINGER`'s worth of
/// them is tens of thousands of entries, and keeping them in the map of calls in flight made
/// every new call's insert pay for a large table (and purging it, for a scan of it). Here a
/// new call goes in a map as small as the calls in flight, an ended call is pushed at the
/// back of a queue and purged from its front: constant work per call. Finding an ended call
/// (a progress notification that arrives after the call's response) searches the queue from
/// its back, where such a call is.
#[derive(Default)]
struct Calls {
    /// progress token -> the call in flight
    live: HashMap<String, Call>,
    /// Calls that ended: (when, progress token, the call).
    ended: std::collections::VecDeque<(std::time::Instant, String, Call)>,
}

impl Calls {
    fn get(&self, token: &str) -> Option<&Call> {
        self.live.get(token).or_else(|| {
            self.ended
                .iter()
                .rev()
                .take(ENDED_SEARCHED)
                .find(|(_, t, _)| t == token)
                .map(|(_, _, c)| c)
        })
    }

    fn get_mut(&mut self, token: &str) -> Option<&mut Call> {
        match self.live.get_mut(token) {
            Some(c) => Some(c),
            None => self
                .ended
                .iter_mut()
                .rev()
                .take(ENDED_SEARCHED)
                .find(|(_, t, _)| t == token)
                .map(|(_, _, c)| c),
        }
    }
}

/// How many of the most recently ended calls a progress notification is looked for in: a
/// notification is late by milliseconds, and a server inventing tokens costs a bounded search.
const ENDED_SEARCHED: usize = 4_096;

struct Call {
    /// Sequence number (the latest call in flight is the one with the highest).
    seq: u64,
    ctx: RunContext,
    /// The last progress reported: (progress, total).
    progress: Option<(f64, Option<f64>)>,
}

impl Inflight {
    pub(crate) fn insert(self: &Arc<Self>, token: String, ctx: RunContext) -> InflightGuard {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.calls.lock() {
            m.live.insert(
                token.clone(),
                Call {
                    seq,
                    ctx,
                    progress: None,
                },
            );
        }
        InflightGuard {
            inflight: Arc::clone(self),
            token,
        }
    }

    /// Whether the call with `token` is in flight.
    fn is_live(&self, token: &str) -> bool {
        self.calls.lock().is_ok_and(|m| m.live.contains_key(token))
    }

    fn get(&self, token: &str) -> Option<RunContext> {
        self.calls
            .lock()
            .ok()
            .and_then(|m| m.get(token).map(|c| c.ctx.clone()))
    }

    /// Record a progress notification of the call with `token` and emit it as a run event.
    /// Notifications are handled concurrently, so one can overtake another: progress only
    /// increases (the MCP spec requires it), so a notification behind the furthest one seen is
    /// stale and dropped. The event is emitted under the lock, before waiters are woken, so
    /// the run's events are in order and complete when
    /// [`await_final_progress`](InflightGuard::await_final_progress) returns.
    fn progress(&self, token: &str, p: &ProgressNotificationParam) {
        if let Ok(mut m) = self.calls.lock()
            && let Some(c) = m.get_mut(token)
            && c.progress.is_none_or(|(seen, _)| p.progress > seen)
        {
            c.progress = Some((p.progress, p.total));
            c.ctx.emit(RunEvent::Progress {
                progress: p.progress,
                total: p.total,
                message: p.message.clone(),
            });
        }
        self.progressed.notify_waiters();
    }

    /// The run of the most recent call in flight (legacy servers send their sampling and
    /// elicitation requests without saying which call they belong to).
    fn latest(&self) -> Option<RunContext> {
        self.calls
            .lock()
            .ok()
            .and_then(|m| m.live.values().max_by_key(|c| c.seq).map(|c| c.ctx.clone()))
    }
}

/// Marks a call of [`Inflight`] ended when it ends, however it ends: at once it no longer
/// counts for the "latest call" fallback; progress notifications still reach its run for
/// [`LINGER`], then it is purged.
pub(crate) struct InflightGuard {
    inflight: Arc<Inflight>,
    token: String,
}

/// How long (steps of [`CONTEXT_WAIT_STEP`]) a server request waits for its call.
const CONTEXT_WAIT_STEPS: u32 = 25;
const CONTEXT_WAIT_STEP: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a finished call stays routable. rmcp hands each notification to its own task, so
/// the last progress notification of a call can be handled just after the call's response.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1_500);

/// How long a finished call waits for its last progress notification (see [`LINGER`]). Only
/// calls that reported progress short of their total wait; generous, since on a loaded
/// machine a notification's task can be scheduled late.
const LATE_PROGRESS: std::time::Duration = std::time::Duration::from_millis(1_000);

impl InflightGuard {
    /// After the response: if the call reported progress with a total it has not reached yet,
    /// wait briefly for the remaining notifications, so that every progress event of a call
    /// is emitted before the call returns. Calls without progress do not wait.
    pub(crate) async fn await_final_progress(&self) {
        let deadline = tokio::time::Instant::now() + LATE_PROGRESS;
        loop {
            let notified = self.inflight.progressed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let behind = self.inflight.calls.lock().ok().is_some_and(|m| {
                m.get(&self.token)
                    .and_then(|c| c.progress)
                    .is_some_and(|(p, total)| total.is_some_and(|t| p < t))
            });
            if !behind || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let token = std::mem::take(&mut self.token);
        self.inflight.end(token, std::time::Instant::now());
    }
}

impl Inflight {
    /// The call with `token` ended at `now`: it moves to the ended calls, and those that
    /// ended [`LINGER`] before `now` are purged.
    fn end(&self, token: String, now: std::time::Instant) {
        // Calls purged here are dropped after the lock is released.
        let mut purged = Vec::new();
        if let Ok(mut m) = self.calls.lock() {
            if let Some(call) = m.live.remove(&token) {
                m.ended.push_back((now, token, call));
            }
            while m
                .ended
                .front()
                .is_some_and(|(at, _, _)| now.saturating_duration_since(*at) >= LINGER)
            {
                purged.extend(m.ended.pop_front());
            }
        }
        drop(purged);
    }
}

/// The key of a progress token in [`Inflight`].
pub(crate) fn token_key(token: &rmcp::model::ProgressToken) -> String {
    serde_json::to_string(&token.0).unwrap_or_default()
}

/// agentkit's client handler for one connection.
#[derive(Clone)]
pub(crate) struct AgentkitClient {
    pub(crate) server: String,
    pub(crate) roots: Vec<McpRoot>,
    pub(crate) shared: Arc<ClientShared>,
    pub(crate) inflight: Arc<Inflight>,
    /// Bumped when the server says its tool (or prompt/resource) list changed.
    pub(crate) lists_epoch: Arc<AtomicU64>,
    /// The server's requests being answered now.
    pub(crate) answering: Arc<Answering>,
}

/// Counts the server's requests (sampling, elicitation, roots) being answered, so that a
/// closing connection sends their answers before it closes stdin: a server with an unanswered
/// request may keep running after its stdin closes.
#[derive(Default)]
pub(crate) struct Answering {
    count: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

impl Answering {
    fn start(self: &Arc<Self>) -> AnsweringGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        AnsweringGuard(Arc::clone(self))
    }

    /// Wait until no request is being answered, at most `limit`.
    pub(crate) async fn wait_idle(&self, limit: std::time::Duration) {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.count.load(Ordering::SeqCst) == 0 {
                    // Let the service loop write the last answer out.
                    tokio::task::yield_now().await;
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

struct AnsweringGuard(Arc<Answering>);

impl Drop for AnsweringGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl AgentkitClient {
    /// The run a server request belongs to: the call named by its progress token, else the
    /// latest call in flight. A server may ask before the call it belongs to is registered
    /// (its request can overtake the bookkeeping after our send), so an unmatched request
    /// waits briefly for one.
    async fn context_for(&self, meta: &rmcp::model::RequestMetaObject) -> Option<RunContext> {
        let find = || {
            meta.get_progress_token()
                .and_then(|t| self.inflight.get(&token_key(&t)))
                .or_else(|| self.inflight.latest())
        };
        for _ in 0..CONTEXT_WAIT_STEPS {
            if let Some(ctx) = find() {
                return Some(ctx);
            }
            tokio::time::sleep(CONTEXT_WAIT_STEP).await;
        }
        find()
    }

    /// Answer a sampling request with the configured provider.
    pub(crate) async fn sample(
        &self,
        p: CreateMessageRequestParams,
        ctx: Option<RunContext>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let Some(provider) = self.shared.sampling.clone() else {
            return Err(ErrorData::invalid_request(
                format!(
                    "sampling is not enabled for MCP server `{}`: give the ConnectionManager an LlmProvider with `with_sampling`",
                    self.server
                ),
                None,
            ));
        };
        let mut messages = Vec::new();
        for m in p.messages {
            let role = match m.role {
                Role::User => CoreRole::User,
                Role::Assistant => CoreRole::Assistant,
            };
            let text: Vec<String> = m
                .content
                .into_vec()
                .into_iter()
                .filter_map(|b| match b {
                    SamplingMessageContentBlock::Text(t) => Some(t.text),
                    _ => None,
                })
                .collect();
            messages.push(Message::new(
                role,
                vec![agentkit_core::Content::text(text.join("\n"))],
            ));
        }
        let mut req = CompletionRequest::new(messages).with_max_tokens(p.max_tokens);
        if let Some(s) = p.system_prompt {
            req = req.with_system(s);
        }
        if let Some(t) = p.temperature {
            req = req.with_temperature(t);
        }
        if let Some(stop) = p.stop_sequences {
            req = req.with_stop(stop);
        }
        if let Some(m) = self
            .shared
            .sampling_model
            .clone()
            .or_else(|| provider.default_model().map(str::to_owned))
        {
            req = req.with_model(m);
        }
        if let Some(ctx) = &ctx {
            ctx.check()
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        }
        let resp = provider.complete(req).await.map_err(|e| {
            ErrorData::internal_error(format!("sampling for `{}` failed: {e}", self.server), None)
        })?;
        if let Some(ctx) = &ctx {
            ctx.record_llm_usage(resp.usage, 0.0);
        }
        Ok(CreateMessageResult::new(
            SamplingMessage::new(
                Role::Assistant,
                SamplingMessageContentBlock::text(resp.message.text()),
            ),
            resp.model.clone(),
        )
        .with_stop_reason(CreateMessageResult::STOP_REASON_END_TURN))
    }

    /// Answer an elicitation with the run's human-input handler (or the manager's default).
    pub(crate) async fn elicit(
        &self,
        req: ElicitRequestParams,
        ctx: Option<RunContext>,
    ) -> Result<ElicitResult, ErrorData> {
        let ctx = ctx.unwrap_or_default();
        let handler = ctx
            .human_input()
            .cloned()
            .or_else(|| self.shared.human_input.clone());
        let Some(handler) = handler else {
            tracing::info!(server = %self.server, "elicitation declined: no human-input handler");
            return Ok(ElicitResult::new(ElicitationAction::Decline));
        };
        let question = match req {
            ElicitRequestParams::FormElicitationParams {
                message,
                requested_schema,
                ..
            } => HumanInputRequest::new(message)
                .with_description(format!("asked by MCP server `{}`", self.server))
                .with_schema(serde_json::to_value(requested_schema).unwrap_or_default()),
            ElicitRequestParams::UrlElicitationParams { message, url, .. } => {
                HumanInputRequest::new(format!("{message}\n{url}"))
                    .with_description(format!("asked by MCP server `{}`", self.server))
            }
            _ => return Ok(ElicitResult::new(ElicitationAction::Decline)),
        };
        ctx.emit(RunEvent::HumanInputRequested {
            agent: format!("mcp:{}", self.server),
            prompt: question.prompt.clone(),
        });
        let answer = handler
            .ask(question, &ctx)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        ctx.emit(RunEvent::HumanInputAnswered {
            agent: format!("mcp:{}", self.server),
        });
        Ok(match answer {
            HumanInputResponse::Answer { text, data } => {
                let content = data.unwrap_or_else(|| serde_json::json!({ "answer": text }));
                ElicitResult::new(ElicitationAction::Accept).with_content(content)
            }
            HumanInputResponse::Declined => ElicitResult::new(ElicitationAction::Decline),
            _ => ElicitResult::new(ElicitationAction::Cancel),
        })
    }

    pub(crate) fn roots(&self) -> ListRootsResult {
        ListRootsResult::new(
            self.roots
                .iter()
                .map(|r| {
                    let root = Root::new(r.uri.clone());
                    match &r.name {
                        Some(n) => root.with_name(n.clone()),
                        None => root,
                    }
                })
                .collect(),
        )
    }
}

impl ClientHandler for AgentkitClient {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        caps.roots = Some(RootsCapabilities::default());
        if self.shared.sampling.is_some() {
            caps.sampling = Some(SamplingCapability::default());
        }
        caps.elicitation = Some(ElicitationCapability::new());
        let mut cfg = ClientConfig::new(
            caps,
            Implementation::new(
                self.shared.client_name.clone(),
                self.shared.client_version.clone(),
            ),
        );
        // `initialize` exists up to 2025-11-25; 2026-07-28 is reached through `server/discover`.
        cfg.protocol_version = rmcp::model::ProtocolVersion::LATEST_WITH_INITIALIZE;
        cfg
    }

    async fn create_message(
        &self,
        p: CreateMessageRequestParams,
        ctx: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let _answering = self.answering.start();
        let run = self.context_for(&ctx.meta).await;
        self.sample(p, run).await
    }

    async fn create_elicitation(
        &self,
        req: ElicitRequestParams,
        ctx: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let _answering = self.answering.start();
        let run = self.context_for(&ctx.meta).await;
        self.elicit(req, run).await
    }

    async fn list_roots(
        &self,
        _: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let _answering = self.answering.start();
        Ok(self.roots())
    }

    async fn on_progress(&self, p: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        let key = token_key(&p.progress_token);
        // A fast server (one in this process) can report progress before our bookkeeping of
        // the call, made once the request is sent, is done: wait briefly for the call.
        if self.inflight.get(&key).is_none() {
            for _ in 0..CONTEXT_WAIT_STEPS {
                if self.inflight.is_live(&key) {
                    break;
                }
                tokio::time::sleep(CONTEXT_WAIT_STEP).await;
            }
        }
        self.inflight.progress(&key, &p);
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.lists_epoch.fetch_add(1, Ordering::SeqCst);
    }

    async fn on_prompt_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.lists_epoch.fetch_add(1, Ordering::SeqCst);
    }

    async fn on_resource_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.lists_epoch.fetch_add(1, Ordering::SeqCst);
    }

    async fn on_logging_message(
        &self,
        p: LoggingMessageNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let server = &self.server;
        let data = p.data.to_string();
        match p.level {
            LoggingLevel::Debug => tracing::debug!(server = %server, "{data}"),
            LoggingLevel::Info | LoggingLevel::Notice => tracing::info!(server = %server, "{data}"),
            LoggingLevel::Warning => tracing::warn!(server = %server, "{data}"),
            _ => tracing::error!(server = %server, "{data}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::{Duration, Instant};

    /// A run context that collects the progress its run is told.
    fn collecting() -> (RunContext, Arc<Mutex<Vec<f64>>>) {
        let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
        let sink = Arc::clone(&seen);
        let ctx = RunContext::new().with_events(Arc::new(agentkit_core::FnSink::new(
            move |_: &str, e: &RunEvent| {
                if let RunEvent::Progress { progress, .. } = e {
                    sink.lock().unwrap().push(*progress);
                }
            },
        )));
        (ctx, seen)
    }

    fn note(progress: f64) -> ProgressNotificationParam {
        serde_json::from_value(serde_json::json!({"progressToken": 1, "progress": progress}))
            .unwrap()
    }

    #[test]
    fn late_progress_reaches_an_ended_call_until_it_is_purged() {
        let inflight = Arc::new(Inflight::default());
        let (ctx, seen) = collecting();
        let guard = inflight.insert("1".into(), ctx);
        inflight.progress("1", &note(1.0));
        drop(guard);
        assert!(!inflight.is_live("1"));
        assert!(
            inflight.latest().is_none(),
            "an ended call is not the latest call"
        );
        // Just after its response: still routed, in order.
        inflight.progress("1", &note(2.0));
        inflight.progress("1", &note(1.5));
        assert_eq!(*seen.lock().unwrap(), vec![1.0, 2.0]);
        // Another call ends LINGER later: the first is purged, its notifications dropped.
        let (other, _) = collecting();
        let g2 = inflight.insert("2".into(), other);
        inflight.end(
            "2".into(),
            Instant::now() + LINGER + Duration::from_millis(1),
        );
        inflight.progress("1", &note(3.0));
        assert_eq!(*seen.lock().unwrap(), vec![1.0, 2.0]);
        assert!(inflight.get("1").is_none());
        assert!(
            inflight.get("2").is_some(),
            "the call that just ended lingers"
        );
        drop(g2);
    }

    #[test]
    fn the_latest_call_in_flight_is_the_newest_live_one() {
        let inflight = Arc::new(Inflight::default());
        let (a, _) = collecting();
        let (b, _) = collecting();
        let ga = inflight.insert("a".into(), a.with_run_id("run-a"));
        let gb = inflight.insert("b".into(), b.with_run_id("run-b"));
        assert_eq!(inflight.latest().unwrap().run_id(), "run-b");
        drop(gb);
        assert_eq!(inflight.latest().unwrap().run_id(), "run-a");
        drop(ga);
        assert!(inflight.latest().is_none());
    }
}
