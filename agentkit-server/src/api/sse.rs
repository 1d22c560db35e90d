//! Run event streams over SSE, read from the store: every journal entry is an event whose
//! `id` is its sequence number, so a client reconnecting with `Last-Event-ID` gets each
//! missed event exactly once, from any server process sharing the store. All subscribers of
//! a run in one process share one poller of the store.
//!
//! Besides the journal events, a run executing in the process serving the stream sends live
//! `delta` events: its answer's text as the model writes it (`{"agent", "text"}`), from the
//! runtime's in-process [`LiveDeltas`](agentkit_runtime::LiveDeltas). They carry no `id`, are
//! not stored, and are not sent again on reconnect; the journaled model step that follows them
//! (the `llm_response` event) is the source of truth for the text. A stream served by a process
//! that does not execute the run has journal events only.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use agentkit_core::RunStatus;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::Problem;
use crate::platform::{Platform, RunEventView, RunView};

/// How often a run's stream polls the store for new events (once per run and process,
/// however many subscribers it has).
pub const POLL: Duration = Duration::from_millis(100);

/// The sequence number a reconnecting client already has (`Last-Event-ID`).
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    last_event_id_as(headers, "a number", |s| s.parse::<u64>().ok())
}

/// The `Last-Event-ID` a reconnecting client sent, read by `parse` (`None` when absent or
/// empty); a value that is not text or that `parse` refuses is a 400 problem saying the `id`
/// must be `shape`.
pub(crate) fn last_event_id_as<T>(
    headers: &HeaderMap,
    shape: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, Problem> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let Ok(s) = v.to_str() else {
        return Err(Problem::bad_request(format!(
            "`Last-Event-ID` must be the `id` of an event of this stream ({shape}); this one \
             is not text"
        )));
    };
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    parse(s).map(Some).ok_or_else(|| {
        Problem::bad_request(format!(
            "`Last-Event-ID` must be the `id` of an event of this stream ({shape}), not `{}`",
            s.escape_debug()
        ))
    })
}

#[cfg(test)]
mod last_event_id_tests {
    use super::*;

    fn with(value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "last-event-id",
            http::HeaderValue::from_bytes(value).unwrap(),
        );
        h
    }

    #[test]
    fn a_last_event_id_is_a_number_or_refused() {
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), None);
        assert_eq!(last_event_id(&with(b" 7 ")).unwrap(), Some(7));
        assert_eq!(last_event_id(&with(b"")).unwrap(), None);
        assert!(last_event_id(&with(b"x")).is_err());
        assert!(last_event_id(&with(b"-1")).is_err());
        // Not text: refused like any other bad value, not read as "no header" (which would
        // send the whole stream again).
        assert!(last_event_id(&with(b"\xff\xfe")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_header_value_is_answered_without_panic(bytes in proptest::collection::vec(0x20u8..=0xff, 0..24)) {
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert("last-event-id", v);
                let parsed = last_event_id(&h);
                if let Ok(Some(n)) = parsed {
                    proptest::prop_assert_eq!(std::str::from_utf8(&bytes).unwrap().trim().parse::<u64>().ok(), Some(n));
                }
            }
        }
    }
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

/// What one process knows of a run's stream: every journal event so far, the run's latest
/// state, and whether the stream is over.
#[derive(Default)]
struct FeedState {
    events: Vec<RunEventView>,
    run: Option<RunView>,
    error: Option<String>,
    done: bool,
}

/// One run's stream in this process, shared by all its subscribers: a single task polls the
/// store (every [`POLL`]) and every subscriber reads from here. With one poller per
/// subscriber, 1,000 subscribers of one run made 20,000 store reads a second; on SQLite that
/// slowed the run they were watching threefold.
struct Feed {
    state: std::sync::RwLock<FeedState>,
    /// Bumped after every change of `state`.
    changed: tokio::sync::watch::Sender<u64>,
}

/// The runs being streamed in this process (`Platform` holds one).
#[derive(Default)]
pub(crate) struct Feeds {
    live: std::sync::Mutex<HashMap<String, Weak<Feed>>>,
}

impl Feeds {
    /// The run's feed, and its poller started if nobody streams the run yet.
    fn subscribe(&self, platform: &Arc<Platform>, run_id: &str) -> Arc<Feed> {
        let mut live = agentkit_core::sync::lock(&self.live);
        // A feed that failed reading the store is not reused: a new subscriber tries again.
        if let Some(feed) = live.get(run_id).and_then(Weak::upgrade)
            && agentkit_core::sync::read(&feed.state).error.is_none()
        {
            return feed;
        }
        live.retain(|_, f| f.strong_count() > 0);
        let feed = Arc::new(Feed {
            state: std::sync::RwLock::default(),
            changed: tokio::sync::watch::Sender::new(0),
        });
        live.insert(run_id.to_owned(), Arc::downgrade(&feed));
        tokio::spawn(poll(
            Arc::clone(platform),
            run_id.to_owned(),
            Arc::downgrade(&feed),
        ));
        feed
    }
}

/// Poll the store for the run's status and new events until it finishes or nobody listens.
async fn poll(platform: Arc<Platform>, run_id: String, feed: Weak<Feed>) {
    let mut after = None;
    let mut status = None;
    loop {
        let Some(f) = feed.upgrade() else { return };
        // Status first, then the journal: entries are written before the run's final status,
        // so the read after seeing a final status has every entry.
        let mut fresh = Vec::new();
        let mut error = None;
        let run = match platform.run_any(&run_id).await {
            Ok(r) => Some(r),
            Err(e) => {
                error = Some(e.to_string());
                None
            }
        };
        if run.is_some() {
            loop {
                match platform.events(&run_id, after, 256).await {
                    Ok(events) => {
                        let full = events.len() == 256;
                        after = events.last().map(|e| e.id).or(after);
                        fresh.extend(events);
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
        }
        let new_status = run.as_ref().map(|r| r.status);
        let done = error.is_some() || new_status.is_some_and(|s| s.is_terminal());
        if !fresh.is_empty() || new_status != status || done {
            status = new_status;
            let mut st = agentkit_core::sync::write(&f.state);
            st.events.extend(fresh);
            if let Some(r) = run {
                st.run = Some(RunView::from(r));
            }
            st.error = error;
            st.done = done;
            drop(st);
            f.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        if done {
            return;
        }
        drop(f);
        tokio::time::sleep(POLL).await;
    }
}

struct Cursor {
    feed: Arc<Feed>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Events of the feed already queued (an index into its `events`).
    next: usize,
    after: Option<u64>,
    status: Option<RunStatus>,
    queue: VecDeque<StreamItem>,
    done: bool,
}

impl Cursor {
    /// Queue what the feed has that this subscriber has not seen yet.
    fn catch_up(&mut self) {
        let st = agentkit_core::sync::read(&self.feed.state);
        for e in &st.events[self.next..] {
            if self.after.is_none_or(|a| e.id > a) {
                self.queue.push_back(StreamItem::Event(e.clone()));
            }
        }
        self.next = st.events.len();
        if let Some(run) = &st.run
            && self.status != Some(run.status)
        {
            self.status = Some(run.status);
            if run.status.is_terminal() {
                self.done = true;
                self.queue.push_back(StreamItem::End(run.clone()));
            } else {
                self.queue.push_back(StreamItem::Status(run.clone()));
            }
        }
        if let Some(e) = &st.error {
            self.done = true;
            self.queue.push_back(StreamItem::Error(e.clone()));
        } else if st.done {
            self.done = true;
        }
    }
}

/// The run's items after `after`, until it finishes or the server starts shutting down
/// (then the stream just ends: a client reconnecting with `Last-Event-ID`, to another node or
/// after the restart, gets every event it missed from the store). Every subscriber of a run
/// in this process shares one poller of the store.
pub fn run_items(
    platform: Arc<Platform>,
    run_id: String,
    after: Option<u64>,
) -> impl Stream<Item = StreamItem> + Send + 'static {
    let feed = platform.feeds.subscribe(&platform, &run_id);
    let changes = feed.changed.subscribe();
    let cursor = Cursor {
        feed,
        changes,
        next: 0,
        after,
        status: None,
        queue: VecDeque::new(),
        done: false,
    };
    let stopping = platform.stopping.clone();
    futures::stream::unfold(cursor, move |mut c| {
        let stopping = stopping.clone();
        async move {
            loop {
                if stopping.is_cancelled() {
                    return None;
                }
                if let Some(item) = c.queue.pop_front() {
                    return Some((item, c));
                }
                if c.done {
                    return None;
                }
                c.changes.mark_unchanged();
                c.catch_up();
                if c.queue.is_empty() && !c.done {
                    tokio::select! {
                        changed = c.changes.changed() => if changed.is_err() {
                            return None;
                        },
                        () = stopping.cancelled() => return None,
                    }
                }
            }
        }
    })
}

/// The live deltas of `run_id` in this process, as SSE `delta` events without an `id`.
/// A listener that falls behind skips the deltas it missed (the journal has the text).
fn live_deltas(platform: &Platform, run_id: &str) -> impl Stream<Item = Event> + Send + use<> {
    let rx = platform.runtime().live_deltas().subscribe(run_id);
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(delta) => {
                    let event = Event::default()
                        .event("delta")
                        .json_data(&delta)
                        .unwrap_or_else(|_| {
                            Event::default().event("error").data("encoding failed")
                        });
                    return Some((event, rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The run's stream as SSE: `event: <kind>` with `id: <seq>` for journal events, `status`
/// events, live `delta` events (no `id`; see the module docs) while the run executes in this
/// process, and a final `end` event with the finished run.
pub fn run_sse(
    platform: Arc<Platform>,
    run_id: String,
    after: Option<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    use futures::StreamExt;
    use futures::stream::PollNext;
    let deltas = live_deltas(&platform, &run_id).map(Some);
    let journal = run_items(platform, run_id, after).map(|item| {
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
        Some(event.unwrap_or_else(|_| Event::default().event("error").data("encoding failed")))
    });
    // Deltas go first: a model step's deltas are sent before the step is journaled, so they
    // reach the client before its journal event. The stream ends with the journal's.
    let journal = journal.chain(futures::stream::once(async { None }));
    let stream =
        futures::stream::select_with_strategy(deltas, journal, |_: &mut ()| PollNext::Left)
            .take_while(|e| std::future::ready(e.is_some()))
            .filter_map(|e| std::future::ready(e.map(Ok)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}
