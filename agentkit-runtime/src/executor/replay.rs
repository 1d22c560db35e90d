//! Offline replay of a recorded run against the code registered now.

use std::sync::Arc;

use agentkit_core::{Result, RunContext, RunStatus};
use serde_json::Value;

use super::Runtime;
use crate::journal::DurableJournal;
use crate::redact::Redactor;
use crate::workflow::WorkflowContext;

/// What [`Runtime::replay`] found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The replayed run.
    pub run_id: String,
    /// The output the replay produced, if it finished.
    pub output: Option<Value>,
    /// The error the replay ended with, if any.
    pub error: Option<String>,
    /// Journal keys served from the recording, in order.
    pub replayed: Vec<String>,
    /// Where the current code departs from the recording: steps it asked for that were not
    /// recorded, recorded steps it never asked for, and a different output.
    pub divergences: Vec<String>,
}

impl ReplayReport {
    /// Whether the replay followed the recording exactly.
    #[must_use]
    pub fn is_faithful(&self) -> bool {
        self.divergences.is_empty()
    }
}

impl Runtime {
    /// Re-run a finished run offline from its journal with the code registered now: every
    /// model completion, tool result, step and signal comes from the recording, so no
    /// provider, tool or MCP server is called and nothing is stored. Reports where the current
    /// code departs from the recording (a step it asks for that was not recorded, a recorded
    /// step it skips, a different output).
    ///
    /// Not detected: a change that makes the same calls in the same order with different
    /// requests (e.g. changed agent instructions), because the journal records responses,
    /// not requests.
    pub async fn replay(&self, run_id: &str) -> Result<ReplayReport> {
        let run = self.get(run_id).await?;
        let target = self
            .target(&run.target)
            .ok_or_else(|| self.unknown_target(&run.target))?;
        let prices = Arc::clone(&self.inner.prices);
        let journal = Arc::new(
            DurableJournal::load(
                Arc::clone(&self.inner.store),
                run_id,
                Redactor::none(),
                Arc::clone(&prices),
            )
            .await?
            .replay_only(),
        );
        let ctx = RunContext::new()
            .with_run_id(run_id)
            .with_journal(journal.clone())
            .with_prices(prices);
        let wctx = WorkflowContext::new(
            ctx,
            journal.clone(),
            Arc::clone(&self.inner.store),
            "replay",
        );
        let result = target
            .execute(&wctx, run.input.clone(), run.version, None)
            .await;
        let mut divergences = journal.divergences();
        for key in journal.unused_keys() {
            divergences.push(format!("recorded step `{key}` was not taken"));
        }
        let (output, error) = match result {
            Ok(o) => (Some(o), None),
            Err(e) => (None, Some(e.to_string())),
        };
        if run.status == RunStatus::Succeeded && output.is_some() && output != run.output {
            divergences.push("the output differs from the recorded output".to_owned());
        }
        Ok(ReplayReport {
            run_id: run_id.to_owned(),
            output,
            error,
            replayed: journal.replayed_keys(),
            divergences,
        })
    }
}
