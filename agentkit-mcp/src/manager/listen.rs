//! Following list changes on a 2026-07-28 `subscriptions/listen` stream.

use super::*;

/// On 2026-07-28 connections list_changed notifications only flow on a `subscriptions/listen`
/// stream; turn them into epoch bumps like the legacy notifications. Only the lists whose
/// `listChanged` the server advertises are asked for. When the stream ends or breaks while the
/// connection lives on (a stateless HTTP server restarted, a proxy cut the stream), it is
/// opened again with backoff, and the epoch is bumped then, since changes may have been missed
/// in between. A server that refuses the subscription (a JSON-RPC error) is not asked again.
///
/// The first subscription is awaited (up to `LISTEN_FIRST_WAIT`) before the connection is
/// handed out, so that no change made after a first `tools/list` can be missed.
pub(super) async fn start_listener(conn: &Connection) {
    let caps = conn.peer_info().map(|i| i.capabilities.clone());
    let mut filter = SubscriptionFilter::builder();
    let mut any = false;
    if let Some(caps) = &caps {
        if caps.tools.as_ref().and_then(|t| t.list_changed) == Some(true) {
            filter = filter.tools_list_changed();
            any = true;
        }
        if caps.prompts.as_ref().and_then(|p| p.list_changed) == Some(true) {
            filter = filter.prompts_list_changed();
            any = true;
        }
        if caps.resources.as_ref().and_then(|r| r.list_changed) == Some(true) {
            filter = filter.resources_list_changed();
            any = true;
        }
    }
    if !any {
        return;
    }
    let filter = filter.build();
    let peer = conn.peer.clone();
    let epoch = Arc::clone(&conn.client.lists_epoch);
    let stop = conn.stop.clone();
    let server = conn.server.clone();
    let first = match tokio::time::timeout(LISTEN_FIRST_WAIT, peer.listen(filter.clone())).await {
        Ok(Err(ServiceError::McpError(e))) => {
            tracing::info!(server = %server, error = %e.message, "MCP server refused subscriptions/listen; list changes are not followed");
            return;
        }
        Ok(r) => Some(r),
        Err(_) => None,
    };
    tokio::spawn(stop.clone().run_until_cancelled_owned(async move {
        let mut delays = backoff(LISTEN_RETRY_BASE, LISTEN_RETRY_MAX);
        let mut first = first;
        while !peer.is_transport_closed() {
            let attempt = match first.take() {
                Some(r) => r,
                None => {
                    let r = peer.listen(filter.clone()).await;
                    if r.is_ok() {
                        // Changes may have been missed while there was no stream.
                        epoch.fetch_add(1, Ordering::SeqCst);
                    }
                    r
                }
            };
            match attempt {
                Ok(mut sub) => {
                    let opened = Instant::now();
                    loop {
                        match sub.next().await {
                            Ok(Some(_)) => {
                                epoch.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(server = %server, error = %e, "MCP subscriptions/listen stream broke");
                                break;
                            }
                        }
                    }
                    // A stream that lived a while was healthy: retry soon. One that ends at
                    // once keeps backing off.
                    if opened.elapsed() >= LISTEN_HEALTHY {
                        delays = backoff(LISTEN_RETRY_BASE, LISTEN_RETRY_MAX);
                    }
                }
                Err(ServiceError::McpError(e)) => {
                    tracing::info!(server = %server, error = %e.message, "MCP server refused subscriptions/listen; list changes are not followed");
                    return;
                }
                Err(e) => {
                    tracing::debug!(server = %server, error = %e, "MCP subscriptions/listen failed");
                }
            }
            tokio::time::sleep(delays.next().unwrap_or(LISTEN_RETRY_MAX)).await;
        }
    }));
}
