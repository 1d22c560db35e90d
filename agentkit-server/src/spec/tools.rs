//! Tool allow/deny globs over a tool source.

use std::sync::Arc;

use agentkit_core::config::ToolGlobs;
use agentkit_core::{Error, Result, RunContext, ToolOutput, ToolSource, ToolSpec};
use async_trait::async_trait;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value;

/// Compiled [`ToolGlobs`]: which tool names an agent may see and call.
#[derive(Debug, Clone)]
pub(crate) struct ToolMatcher {
    allow: Option<GlobSet>,
    deny: GlobSet,
}

impl ToolMatcher {
    /// Compiles the lists; `Err((key, message))` names the bad glob relative to the agent
    /// (`tools.allow[2]`).
    pub(crate) fn new(globs: &ToolGlobs) -> std::result::Result<Self, (String, String)> {
        fn compile(list: &str, globs: &[String]) -> std::result::Result<GlobSet, (String, String)> {
            let mut b = GlobSetBuilder::new();
            for (i, g) in globs.iter().enumerate() {
                let glob = Glob::new(g).map_err(|e| {
                    (
                        format!("tools.{list}[{i}]"),
                        format!("invalid tool glob `{g}`: {}", e.kind()),
                    )
                })?;
                b.add(glob);
            }
            b.build()
                .map_err(|e| (format!("tools.{list}"), format!("invalid tool globs: {e}")))
        }
        Ok(Self {
            allow: (!globs.allow.is_empty())
                .then(|| compile("allow", &globs.allow))
                .transpose()?,
            deny: compile("deny", &globs.deny)?,
        })
    }

    /// Whether the tool `name` passes.
    pub(crate) fn allows(&self, name: &str) -> bool {
        self.allow.as_ref().is_none_or(|a| a.is_match(name)) && !self.deny.is_match(name)
    }

    /// Whether every tool passes.
    pub(crate) fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }
}

/// A tool source offering only the tools its [`ToolMatcher`] allows; calling another one is a
/// [`Error::ToolNotFound`], as if it did not exist.
pub(crate) struct FilteredTools {
    inner: Arc<dyn ToolSource>,
    matcher: ToolMatcher,
}

impl FilteredTools {
    pub(crate) fn new(inner: Arc<dyn ToolSource>, matcher: ToolMatcher) -> Self {
        Self { inner, matcher }
    }
}

#[async_trait]
impl ToolSource for FilteredTools {
    async fn list_tools(&self) -> Result<Vec<ToolSpec>> {
        let mut tools = self.inner.list_tools().await?;
        tools.retain(|t| self.matcher.allows(&t.name));
        Ok(tools)
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        ctx: &RunContext,
    ) -> Result<ToolOutput> {
        if !self.matcher.allows(name) {
            let available = self
                .list_tools()
                .await
                .map(|ts| ts.into_iter().map(|t| t.name).collect())
                .unwrap_or_default();
            return Err(Error::ToolNotFound {
                tool: name.to_owned(),
                available,
            });
        }
        self.inner.call_tool(name, arguments, ctx).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn allow_and_deny_globs() {
        let m = ToolMatcher::new(
            &serde_json::from_value(serde_json::json!({
                "allow": ["github__*", "fetch__fetch"],
                "deny": ["github__delete_*"]
            }))
            .unwrap(),
        )
        .unwrap();
        assert!(m.allows("github__list_issues"));
        assert!(m.allows("fetch__fetch"));
        assert!(!m.allows("github__delete_repository"));
        assert!(!m.allows("fs__read_file"));
        let bad = ToolMatcher::new(
            &serde_json::from_value(serde_json::json!({"deny": ["ok", "a[b"]})).unwrap(),
        );
        let (key, message) = bad.unwrap_err();
        assert_eq!(key, "tools.deny[1]");
        assert!(message.starts_with("invalid tool glob `a[b`"), "{message}");
    }
}
