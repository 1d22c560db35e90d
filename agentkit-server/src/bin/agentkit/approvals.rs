//! `agentkit approvals …`: the approval queue — list, claim, approve, reject.

use reqwest::Method;
use serde_json::{Value, json};

use crate::Remote;
use crate::client::Failure;
use crate::commands::{ago, client, print_json, s, table};

/// Which approvals `agentkit approvals list` shows.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Status {
    /// Waiting for a decision.
    Pending,
    /// Approved.
    Approved,
    /// Rejected (by a person or by expiry).
    Rejected,
    /// Withdrawn because the run ended (cancelled, failed) before anyone decided.
    Cancelled,
    /// All of them.
    All,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::All => "all",
        }
    }
}

/// `agentkit approvals …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ApprovalsCmd {
    /// List tool calls waiting for approval (or decided), newest first.
    List {
        /// Which ones.
        #[arg(long, value_enum, default_value = "pending")]
        status: Status,
    },
    /// Claim a pending call for a while: until the claim lapses only you (or the server's
    /// admin key) may decide it.
    Claim {
        /// The run.
        run: String,
        /// The tool call's id (see `agentkit approvals list`).
        call: String,
    },
    /// Approve a call (it runs), or without a call every call of the run that waits.
    Approve {
        /// The run.
        run: String,
        /// The tool call's id; leave out to approve every pending call of the run.
        call: Option<String>,
        /// Why (kept in the queue and the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a call (it does not run; the model reads the reason), or without a call every
    /// call of the run that waits.
    Reject {
        /// The run.
        run: String,
        /// The tool call's id; leave out to reject every pending call of the run.
        call: Option<String>,
        /// Why: the model reads it.
        #[arg(long)]
        reason: String,
    },
}

/// `id` as one path segment: every byte but the unreserved characters of RFC 3986
/// percent-encoded, so a call id with `/` (a gateway client's own ids may have one) stays
/// one segment; the server decodes it.
fn segment(id: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The route that decides `call` of `run` (or every pending call of the run).
fn decide_path(run: &str, call: Option<&str>, verb: &str) -> String {
    let run = segment(run);
    match call {
        Some(call) => format!("/v1/approvals/{run}/{}/{verb}", segment(call)),
        None => format!("/v1/runs/{run}/{verb}"),
    }
}

/// `agentkit approvals …`.
pub(crate) async fn approvals(remote: &Remote, cmd: ApprovalsCmd) -> Result<(), Failure> {
    let c = client(remote);
    let out = match cmd {
        ApprovalsCmd::List { status } => {
            let v = c
                .call(
                    Method::GET,
                    &format!("/v1/approvals?status={}", status.as_str()),
                    None,
                )
                .await?;
            if !remote.json {
                let rows: Vec<Vec<String>> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let decided = match a["decided_by"].as_str() {
                            Some(by) => format!("{by} {}", ago(&a["decided_at"])),
                            None => match a["claimed_by"].as_str() {
                                Some(by) => format!("claimed by {by}"),
                                None => "-".into(),
                            },
                        };
                        vec![
                            s(a, "run_id"),
                            s(a, "call_id"),
                            s(a, "tool"),
                            s(a, "status"),
                            ago(&a["requested_at"]),
                            decided,
                            s(a, "reason"),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "run",
                        "call",
                        "tool",
                        "status",
                        "asked",
                        "decided",
                        "why asked",
                    ],
                    &rows,
                );
                return Ok(());
            }
            v
        }
        ApprovalsCmd::Claim { run, call } => {
            let v = c
                .call(
                    Method::POST,
                    &format!("/v1/approvals/{}/{}/claim", segment(&run), segment(&call)),
                    None,
                )
                .await?;
            if !remote.json {
                outln!(
                    "claimed call {call} ({}) of run {run} for {}",
                    s(&v, "tool"),
                    s(&v, "claimed_by")
                );
                return Ok(());
            }
            v
        }
        ApprovalsCmd::Approve { run, call, reason } => {
            let body = reason.map(|r| json!({ "reason": r }));
            let v = c
                .call(
                    Method::POST,
                    &decide_path(&run, call.as_deref(), "approve"),
                    body.as_ref(),
                )
                .await?;
            if !remote.json {
                print_decided(&v, &run, call.as_deref(), "approved");
                return Ok(());
            }
            v
        }
        ApprovalsCmd::Reject { run, call, reason } => {
            let v = c
                .call(
                    Method::POST,
                    &decide_path(&run, call.as_deref(), "reject"),
                    Some(&json!({ "reason": reason })),
                )
                .await?;
            if !remote.json {
                print_decided(&v, &run, call.as_deref(), "rejected");
                return Ok(());
            }
            v
        }
    };
    print_json(&out);
    Ok(())
}

fn print_decided(run_view: &Value, run: &str, call: Option<&str>, what: &str) {
    let which = match call {
        Some(call) => format!("call {call} of run {run}"),
        None => format!("the waiting calls of run {run}"),
    };
    outln!(
        "{what} {which}; the run is {} (follow it: agentkit runs events {run} --follow)",
        s(run_view, "status")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_id_with_a_slash_stays_one_segment() {
        assert_eq!(
            decide_path("r1", Some("batch/1 é"), "approve"),
            "/v1/approvals/r1/batch%2F1%20%C3%A9/approve"
        );
        assert_eq!(
            decide_path("r-1_a.b~c", None, "reject"),
            "/v1/runs/r-1_a.b~c/reject"
        );
    }
}
