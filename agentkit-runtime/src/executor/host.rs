//! The runtime as core's [`WorkflowHost`].

use agentkit_core::{Result, StartOptions};
use agentkit_core::{RunInfo, WorkflowHost, WorkflowInfo};
use async_trait::async_trait;
use serde_json::Value;

use super::Runtime;
use crate::model::RunRecord;
use crate::sync::read;

fn info(run: RunRecord) -> RunInfo {
    let mut info = RunInfo::new(run.id, run.target, run.status)
        .with_timestamps(run.created_at, run.updated_at);
    if let Some(o) = run.output {
        info = info.with_output(o);
    }
    if let Some(e) = run.error {
        info = info.with_error(e);
    }
    info
}

#[async_trait]
impl WorkflowHost for Runtime {
    async fn list_workflows(&self) -> Result<Vec<WorkflowInfo>> {
        let mut list: Vec<WorkflowInfo> = read(&self.inner.targets)
            .values()
            .map(|t| t.info())
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    async fn start(&self, workflow: &str, input: Value, options: StartOptions) -> Result<String> {
        self.start_run(workflow, input, options).await
    }

    async fn status(&self, run_id: &str) -> Result<RunInfo> {
        self.get(run_id).await.map(info)
    }

    async fn signal(&self, run_id: &str, name: &str, payload: Value) -> Result<()> {
        Runtime::signal(self, run_id, name, payload).await
    }

    async fn cancel(&self, run_id: &str) -> Result<()> {
        Runtime::cancel(self, run_id).await
    }
}
