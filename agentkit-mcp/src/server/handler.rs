//! The rmcp `ServerHandler` of an [`McpServer`](super::McpServer).

#![allow(deprecated)] // logging and subscriptions are SEP-2577-deprecated in rmcp but still part of MCP 2025-11-25.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::context::InputRounds;
use super::serve::McpServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, InputRequiredResult, JsonObject, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use tokio::sync::broadcast;

/// Match `uri` against an RFC 6570 level-1 template (`scheme://a/{x}/b`).
pub(super) fn match_uri_template(template: &str, uri: &str) -> Option<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    let mut rest = uri;
    let mut t = template;
    while !t.is_empty() {
        match t.find('{') {
            None => return (rest == t).then_some(vars),
            Some(open) => {
                let literal = &t[..open];
                rest = rest.strip_prefix(literal)?;
                let close = t[open..].find('}')? + open;
                let name = &t[open + 1..close];
                t = &t[close + 1..];
                let next_literal_end = t.find('{').unwrap_or(t.len());
                let next_literal = &t[..next_literal_end];
                let end = if next_literal.is_empty() {
                    rest.len()
                } else {
                    rest.find(next_literal)?
                };
                let value = &rest[..end];
                if value.is_empty()
                    || (next_literal.is_empty() && value.contains('/')) && !t.is_empty()
                {
                    return None;
                }
                vars.insert(name.to_owned(), value.to_owned());
                rest = &rest[end..];
            }
        }
    }
    rest.is_empty().then_some(vars)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        // Tools are always advertised, with `listChanged`: they can be added at runtime.
        let mut b = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        if !self.reg.resources.is_empty() || !self.reg.templates.is_empty() {
            let mut r = rmcp::model::ResourcesCapability::default();
            if self.reg.subscriptions {
                r.subscribe = Some(true);
            }
            b.resources = Some(r);
        }
        if !self.reg.prompts.is_empty() {
            b.prompts = Some(rmcp::model::PromptsCapability::default());
        }
        if self.reg.completion.is_some() {
            b.completions = Some(Default::default());
        }
        if self.reg.logging {
            b.logging = Some(Default::default());
        }
        if self.reg.tasks.is_some() {
            b.extensions.get_or_insert_with(Default::default).insert(
                rmcp::model::TASKS_EXTENSION_ID.to_owned(),
                JsonObject::new(),
            );
        }
        let mut cfg = ServerConfig::new(b);
        if let Some(info) = &self.reg.info {
            cfg = cfg.with_server_info(info.clone());
        }
        if let Some(i) = &self.reg.instructions {
            cfg = cfg.with_instructions(i.clone());
        }
        cfg
    }

    async fn list_tools(
        &self,
        _p: Option<PaginatedRequestParams>,
        c: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let Some(extra) = &self.reg.request_tools else {
            return Ok(ListToolsResult::with_all_items(
                self.reg.tools().values().map(|(t, _)| t.clone()).collect(),
            ));
        };
        let mut tools: Vec<Tool> = self
            .reg
            .tools()
            .iter()
            .filter(|(name, _)| !extra.owns(name) && extra.shows(name, &c))
            .map(|(_, (t, _))| t.clone())
            .collect();
        tools.extend(extra.list(&c).await?);
        Ok(ListToolsResult::with_all_items(tools))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.reg.tools().get(name).map(|(t, _)| t.clone())
    }

    async fn on_initialized(&self, c: NotificationContext<RoleServer>) {
        // A legacy session: it hears about tool-list changes by notification.
        if let Ok(mut peers) = self.reg.legacy_peers.lock() {
            peers.retain(|p| !p.is_transport_closed());
            peers.push(c.peer);
        }
    }

    /// `server/discover` is how a 2026-07-28 client starts; the versions before it only work
    /// with `initialize`, so only the discover-era ones are listed (`initialize` still
    /// negotiates every version rmcp knows).
    async fn discover(
        &self,
        _c: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::DiscoverResult, ErrorData> {
        let versions = self
            .supported_protocol_versions()
            .iter()
            .filter(|v| **v >= ProtocolVersion::V_2026_07_28)
            .cloned()
            .collect();
        Ok(rmcp::model::DiscoverResult::from_server_info(
            versions,
            self.get_info(),
        ))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, c: SubscriptionContext) -> Result<(), ErrorData> {
        // 2026-07-28: tool-list changes flow on the client's `subscriptions/listen` stream.
        let mut changed = self.reg.tools_changed.subscribe();
        loop {
            tokio::select! {
                () = c.cancelled() => return Ok(()),
                r = changed.recv() => match r {
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    _ => {
                        let _ = c.sink().notify_tool_list_changed().await;
                    }
                },
            }
        }
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        c: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(extra) = self
            .reg
            .request_tools
            .as_ref()
            .filter(|t| t.owns(&req.name))
        {
            let ct = c.ct.clone();
            let name = req.name.clone();
            let call = self.ctx(c);
            return tokio::select! {
                r = extra.call_response(&name, req.arguments.unwrap_or_default(), call) => r,
                () = ct.cancelled() => Err(ErrorData::internal_error("cancelled by the client", None)),
            };
        }
        let handler = self
            .reg
            .tools()
            .get(req.name.as_ref())
            .filter(|_| {
                self.reg
                    .request_tools
                    .as_ref()
                    .is_none_or(|t| t.shows(&req.name, &c))
            })
            .map(|(_, f)| Arc::clone(f));
        let Some(f) = handler else {
            return Err(ErrorData::invalid_params(
                if self.reg.request_tools.is_some() {
                    // What is available depends on the caller: don't list what it may not see.
                    format!(
                        "unknown tool `{}`; list the tools with tools/list",
                        req.name
                    )
                } else {
                    format!(
                        "unknown tool `{}`; available: {}",
                        req.name,
                        self.tool_names().join(", ")
                    )
                },
                None,
            ));
        };
        if let Some(tasks) = &self.reg.tasks
            && tasks.runs_as_task(&req.name)
            && c.client_capabilities()
                .is_some_and(|caps| caps.supports_tasks())
        {
            return tasks
                .start(&req.name, req.arguments.unwrap_or_default(), &c)
                .await;
        }
        let ct = c.ct.clone();
        let input = Arc::new(InputRounds::from_request(&req));
        let call = self.call_context(c, Arc::clone(&input));
        let out = tokio::select! {
            r = f(req.arguments.clone().unwrap_or_default(), call) => r,
            () = ct.cancelled() => return Err(ErrorData::internal_error("cancelled by the client", None)),
        };
        // 2026-07-28: the handler asked questions without answers; ask the client (MRTR).
        let asked = input.take_pending();
        if !asked.is_empty() {
            let state = (!input.answers.is_empty())
                .then(|| serde_json::to_string(&input.answers).ok())
                .flatten();
            return Ok(InputRequiredResult::new(Some(asked), state).into());
        }
        out.map(Into::into)
    }

    async fn get_task(
        &self,
        req: rmcp::model::GetTaskParams,
        c: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        let task = self.task_backend()?.get(&req.task_id, &c).await?;
        Ok(rmcp::model::GetTaskResult::new(task))
    }

    async fn update_task(
        &self,
        req: rmcp::model::UpdateTaskParams,
        c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.task_backend()?
            .update(&req.task_id, req.input_responses, &c)
            .await
    }

    async fn cancel_task(
        &self,
        req: rmcp::model::CancelTaskParams,
        c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.task_backend()?.cancel(&req.task_id, &c).await
    }

    async fn list_resources(
        &self,
        _p: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(
            self.reg
                .resources
                .values()
                .map(|(r, _)| r.clone())
                .collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _p: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            self.reg.templates.iter().map(|(t, _)| t.clone()).collect(),
        ))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        c: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if let Some((_, f)) = self.reg.resources.get(&req.uri) {
            return f(req.uri.clone(), self.ctx(c)).await.map(Into::into);
        }
        if let Some((f, vars)) = self.match_template(&req.uri) {
            return f(req.uri.clone(), vars, self.ctx(c)).await.map(Into::into);
        }
        Err(ErrorData::resource_not_found(
            format!("no resource `{}`", req.uri),
            None,
        ))
    }

    async fn list_prompts(
        &self,
        _p: Option<PaginatedRequestParams>,
        _c: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(
            self.reg.prompts.values().map(|(p, _)| p.clone()).collect(),
        ))
    }

    async fn get_prompt(
        &self,
        req: GetPromptRequestParams,
        c: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let Some((_, f)) = self.reg.prompts.get(&req.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown prompt `{}`", req.name),
                None,
            ));
        };
        let args: JsonObject = req
            .arguments
            .clone()
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        f(args, self.ctx(c)).await.map(Into::into)
    }

    async fn complete(
        &self,
        req: CompleteRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        match &self.reg.completion {
            Some(f) => f(req).await,
            None => Ok(CompleteResult::default()),
        }
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        _req: SetLevelRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        _req: SubscribeRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        _req: UnsubscribeRequestParams,
        _c: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn uri_templates_match_variables() {
        let v =
            match_uri_template("test://template/{id}/data", "test://template/123/data").unwrap();
        assert_eq!(v["id"], "123");
        assert!(match_uri_template("test://template/{id}/data", "test://other/1/data").is_none());
        let v = match_uri_template("file:///{path}", "file:///a").unwrap();
        assert_eq!(v["path"], "a");
    }
}
