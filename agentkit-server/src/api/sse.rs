//! Run event streams over SSE, read from the store: every journal entry is an event whose
//! `id` is its sequence number, so a client reconnecting with `Last-Event-ID` gets each
//! missed event exactly once, from any server process sharing the store.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agentkit_core::RunStatus;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::Problem;
use crate::platform::{Platform, RunEventView, RunView};

/// How often a stream polls the store for new events.
pub const POLL: Duration = Duration::from_millis(100);

/// The sequence number a reconnecting client already has (`Last-Event-ID`).
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<u64>().map(Some).map_err(|_| {
        Problem::bad_request(format!(
            "`Last-Event-ID` must be the `id` of an event of this stream (a number), not `{}`",
            s.escape_debug()
        ))
    })
}

/// One item of a run's stream.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// A journal event.
    Event(RunEventView),
    /// The run's status changed (not resumable: a reconnect sends the current one again).
    Status(RunView),
    /// The run finished; the stream ends.
    End(RunView),
    /// Reading the store failed; the stream ends.
    Error(String),
}

struct Cursor {
    platform: Arc<Platform>,
    run_id: String,
    after: Option<u64>,
    status: Option<RunStatus>,
    queue: VecDeque<StreamItem>,
    done: bool,
}

/// The run's items after `after`, until it finishes.
pub fn run_items(
    platform: Arc<Platform>,
    run_id: String,
    after: Option<u64>,
) -> impl Stream<Item = StreamItem> + Send + 'static {
    let cursor = Cursor {
        platform,
        run_id,
        after,
        status: None,
        queue: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(item) = c.queue.pop_front() {
                return Some((item, c));
            }
            if c.done {
                return None;
            }
            // Status first, then the journal: entries are written before the run's final
            // status, so the read after seeing a final status has every entry.
            let run = match c.platform.run(&c.run_id).await {
                Ok(r) => r,
                Err(e) => {
                    c.done = true;
                    c.queue.push_back(StreamItem::Error(e.to_string()));
                    continue;
                }
            };
            loop {
                match c.platform.events(&c.run_id, c.after, 256).await {
                    Ok(events) => {
                        let full = events.len() == 256;
                        for e in events {
                            c.after = Some(e.id);
                            c.queue.push_back(StreamItem::Event(e));
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        c.done = true;
                        c.queue.push_back(StreamItem::Error(e.to_string()));
                        break;
                    }
                }
            }
            if c.status != Some(run.status) {
                c.status = Some(run.status);
                let view = RunView::from(run.clone());
                if run.status.is_terminal() {
                    c.done = true;
                    c.queue.push_back(StreamItem::End(view));
                } else {
                    c.queue.push_back(StreamItem::Status(view));
                }
            }
            if c.queue.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
    })
}

/// The run's stream as SSE: `event: <kind>` with `id: <seq>` for journal events, `status`
/// events, and a final `end` event with the finished run.
pub fn run_sse(
    platform: Arc<Platform>,
    run_id: String,
    after: Option<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    use futures::StreamExt;
    let stream = run_items(platform, run_id, after).map(|item| {
        let event = match item {
            StreamItem::Event(e) => Event::default()
                .id(e.id.to_string())
                .event(e.event.clone())
                .json_data(&e),
            StreamItem::Status(r) => Event::default().event("status").json_data(&r),
            StreamItem::End(r) => Event::default().event("end").json_data(&r),
            StreamItem::Error(m) => Event::default()
                .event("error")
                .json_data(serde_json::json!({"error": m})),
        };
        Ok(event.unwrap_or_else(|_| Event::default().event("error").data("encoding failed")))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
