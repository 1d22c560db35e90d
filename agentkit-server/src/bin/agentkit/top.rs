//! `agentkit top`: the server's realtime metrics (`GET /v1/metrics/realtime`) in the terminal,
//! refreshed every interval until Ctrl-C.

use std::io::IsTerminal;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::Remote;
use crate::client::{Failure, exit};
use crate::commands::{client, print_json, table};

/// `agentkit top` options.
#[derive(Debug, clap::Args)]
pub(crate) struct TopArgs {
    /// Seconds between refreshes (at least 0.2).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Print once and exit (for scripts).
    #[arg(long)]
    once: bool,
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{x:.digits$}"))
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

fn render(v: &Value) {
    let conns = &v["active_connections"];
    outln!(
        "agentkit top — last {} s    connections {}    requests/s {}    latency p50 {} ms  p99 {} ms",
        v["window_seconds"],
        conns["total"],
        num(&v["requests_per_second"], 1),
        num(&v["latency_ms"]["p50"], 1),
        num(&v["latency_ms"]["p99"], 1),
    );
    outln!(
        "tool calls/min {}    error rate {}    tool error rate {}",
        num(&v["tool_calls_per_minute"], 1),
        pct(&v["error_rate"]),
        pct(&v["tool_error_rate"]),
    );
    outln!();
    let by: Vec<Vec<String>> = conns["by_platform"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| vec![k.clone(), n.to_string()])
        .collect();
    if !by.is_empty() {
        table(&["workspace", "connections"], &by);
        outln!();
    }
    let tools: Vec<Vec<String>> = v["top_tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["name"].as_str().unwrap_or_default().to_owned(),
                t["calls"].to_string(),
                t["errors"].to_string(),
            ]
        })
        .collect();
    if tools.is_empty() {
        outln!("no tool calls in the window");
    } else {
        table(&["tool", "calls", "errors"], &tools);
    }
}

/// `agentkit top`.
pub(crate) async fn top(remote: &Remote, args: TopArgs) -> Result<(), Failure> {
    if !(args.interval.is_finite() && args.interval >= 0.2) {
        return Err(Failure::new(
            exit::INVALID,
            format!(
                "--interval {} is not valid: give seconds, at least 0.2",
                args.interval
            ),
        ));
    }
    let c = client(remote);
    let clear = !args.once && !remote.json && std::io::stdout().is_terminal();
    let every = Duration::from_secs_f64(args.interval);
    loop {
        let v = c.call(Method::GET, "/v1/metrics/realtime", None).await?;
        if remote.json {
            print_json(&v);
        } else {
            if clear {
                // Clear the screen and go home, like top(1).
                out!("\x1b[2J\x1b[H");
            }
            render(&v);
        }
        if args.once {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
