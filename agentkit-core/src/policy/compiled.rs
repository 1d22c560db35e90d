//! [`Policy`]: a [`PolicySpec`] compiled into glob matchers, and its decision function.

use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::Value;

use super::{Decision, Verdict};
use crate::config::{ChainAction, PolicySpec};
use crate::context::ToolCallRecord;
use crate::error::{Error, Result};

/// A compiled [`PolicySpec`]: decides whether one tool call may run, must wait for an
/// approval, or is refused. Deciding allocates only for the refusal message; it never does
/// I/O. Cheap to clone (shared).
///
/// ```
/// use agentkit_core::config::{ArgumentRule, ChainAction, ChainRule, PolicySpec};
/// use agentkit_core::policy::{Policy, Verdict};
/// use agentkit_core::ToolCallRecord;
/// use serde_json::json;
///
/// let spec = PolicySpec::new()
///     .with_denied_tools(["shell__*"])
///     .with_argument_rule("fs__*", "path", ArgumentRule::new().with_allow(["/docs/**"]).with_deny(["/**/.env"]))
///     .with_chain(ChainRule::new(["fs__read_*", "slack__send"], ChainAction::RequireApproval));
/// let policy = Policy::compile("docs", &spec)?;
/// assert_eq!(policy.decide("fs__read_file", &json!({"path": "/docs/a.md"}), &[]).verdict, Verdict::Allow);
/// let denied = policy.decide("fs__read_file", &json!({"path": "/docs/../etc/passwd"}), &[]);
/// assert_eq!(denied.verdict, Verdict::Deny);
/// assert_eq!(denied.rule.as_deref(), Some("arguments.fs__*.path.allow"));
/// assert_eq!(policy.decide("shell__run", &json!({}), &[]).verdict, Verdict::Deny);
/// let history = [ToolCallRecord::new("fs__read_file", false)];
/// assert_eq!(policy.decide("slack__send", &json!({}), &history).verdict, Verdict::RequireApproval);
/// # Ok::<_, agentkit_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    spec: PolicySpec,
    allow: Option<GlobSet>,
    deny: GlobSet,
    approval: GlobSet,
    args: Vec<ToolArgs>,
    arg_tools: GlobSet,
    chains: Vec<Chain>,
    /// Every glob of every chain, in one set: one match per history entry.
    chain_globs: GlobSet,
    /// The tool globs of `rate_limits`, in one set (indexes into `limits`).
    rate_globs: GlobSet,
    limits: Vec<ToolLimit>,
}

/// One `rate_limits` entry: a GCRA limiter keyed by workspace.
struct ToolLimit {
    glob: String,
    rate: crate::config::Rate,
    limiter: governor::DefaultKeyedRateLimiter<String>,
}

impl std::fmt::Debug for ToolLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolLimit")
            .field("glob", &self.glob)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// A tool call refused by a policy's rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    /// The rule, `rate_limits.<glob>`.
    pub rule: String,
    /// Why, with the limit and when to retry.
    pub reason: String,
    /// When a call may succeed again.
    pub retry_after: std::time::Duration,
}

#[derive(Debug)]
struct ToolArgs {
    glob: String,
    rules: Vec<ArgCheck>,
}

#[derive(Debug)]
struct ArgCheck {
    name: String,
    pointer: String,
    allow: Option<GlobSet>,
    deny: GlobSet,
    deny_src: Vec<String>,
    one_of: Vec<Value>,
}

#[derive(Debug)]
struct Chain {
    /// Indexes into `chain_globs`, oldest first; the last is the current call's.
    globs: Vec<usize>,
    action: ChainAction,
    reason: Option<String>,
    pattern: Vec<String>,
}

fn config_error(key: String, message: String) -> Error {
    Error::Config {
        file: None,
        key,
        message,
    }
}

fn tool_set(key: &str, globs: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for (i, g) in globs.iter().enumerate() {
        let glob = Glob::new(g).map_err(|e| {
            config_error(
                format!("{key}[{i}]"),
                format!("invalid tool glob `{g}`: {}", e.kind()),
            )
        })?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| config_error(key.to_owned(), format!("invalid globs: {e}")))
}

fn path_set(key: &str, globs: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for (i, g) in globs.iter().enumerate() {
        let glob = GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| {
                config_error(
                    format!("{key}[{i}]"),
                    format!("invalid glob `{g}`: {}", e.kind()),
                )
            })?;
        b.add(glob);
    }
    b.build()
        .map_err(|e| config_error(key.to_owned(), format!("invalid globs: {e}")))
}

impl Policy {
    /// Compile `spec` under `name` (shown in decisions and tool errors).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] whose `key` is relative to the policy (`tools.allow[2]`,
    /// `arguments.fs__*.path.deny[0]`, `chains[1].pattern[0]`) when a glob does not compile.
    pub fn compile(name: impl Into<String>, spec: &PolicySpec) -> Result<Self> {
        let allow = (!spec.tools.allow.is_empty())
            .then(|| tool_set("tools.allow", &spec.tools.allow))
            .transpose()?;
        let deny = tool_set("tools.deny", &spec.tools.deny)?;
        let approval = tool_set("require_approval", &spec.require_approval)?;
        let mut args = Vec::new();
        let mut arg_tools = GlobSetBuilder::new();
        for (tools, rules) in &spec.arguments {
            let glob = Glob::new(tools).map_err(|e| {
                config_error(
                    format!("arguments.{tools}"),
                    format!("invalid tool glob `{tools}`: {}", e.kind()),
                )
            })?;
            arg_tools.add(glob);
            let mut checks = Vec::new();
            for (arg, rule) in rules {
                let key = format!("arguments.{tools}.{arg}");
                let pointer = if arg.starts_with('/') {
                    arg.clone()
                } else {
                    format!("/{}", arg.replace('~', "~0").replace('/', "~1"))
                };
                checks.push(ArgCheck {
                    name: arg.clone(),
                    pointer,
                    allow: (!rule.allow.is_empty())
                        .then(|| path_set(&format!("{key}.allow"), &rule.allow))
                        .transpose()?,
                    deny: path_set(&format!("{key}.deny"), &rule.deny)?,
                    deny_src: rule.deny.clone(),
                    one_of: rule.one_of.clone(),
                });
            }
            args.push(ToolArgs {
                glob: tools.clone(),
                rules: checks,
            });
        }
        let arg_tools = arg_tools
            .build()
            .map_err(|e| config_error("arguments".into(), format!("invalid globs: {e}")))?;
        let mut chain_globs = GlobSetBuilder::new();
        let mut chains = Vec::new();
        let mut n = 0usize;
        for (i, c) in spec.chains.iter().enumerate() {
            if c.pattern.len() < 2 {
                return Err(config_error(
                    format!("chains[{i}].pattern"),
                    "a chain needs at least two tool globs".into(),
                ));
            }
            let mut idx = Vec::new();
            for (j, g) in c.pattern.iter().enumerate() {
                let glob = Glob::new(g).map_err(|e| {
                    config_error(
                        format!("chains[{i}].pattern[{j}]"),
                        format!("invalid tool glob `{g}`: {}", e.kind()),
                    )
                })?;
                chain_globs.add(glob);
                idx.push(n);
                n += 1;
            }
            chains.push(Chain {
                globs: idx,
                action: c.action,
                reason: c.reason.clone(),
                pattern: c.pattern.clone(),
            });
        }
        let chain_globs = chain_globs
            .build()
            .map_err(|e| config_error("chains".into(), format!("invalid globs: {e}")))?;
        let mut rate_globs = GlobSetBuilder::new();
        let mut limits = Vec::new();
        for (g, rate) in &spec.rate_limits {
            let glob = Glob::new(g).map_err(|e| {
                config_error(
                    format!("rate_limits.{g}"),
                    format!("invalid tool glob `{g}`: {}", e.kind()),
                )
            })?;
            rate_globs.add(glob);
            limits.push(ToolLimit {
                glob: g.clone(),
                rate: *rate,
                limiter: governor::RateLimiter::dashmap(
                    governor::Quota::per_second(rate.per_second).allow_burst(rate.burst()),
                ),
            });
        }
        let rate_globs = rate_globs
            .build()
            .map_err(|e| config_error("rate_limits".into(), format!("invalid globs: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.into(),
                spec: spec.clone(),
                allow,
                deny,
                approval,
                args,
                arg_tools,
                chains,
                chain_globs,
                rate_globs,
                limits,
            }),
        })
    }

    /// Count one call of `tool` in `workspace` against every rate limit whose glob matches it;
    /// `Some` when one refuses it (the call must not be made). Limits are kept in this
    /// process (shared by every clone of this policy), like the server's request limits.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use agentkit_core::config::{PolicySpec, Rate};
    /// use agentkit_core::policy::Policy;
    ///
    /// let one = NonZeroU32::new(1).unwrap();
    /// let spec = PolicySpec::new().with_rate_limit("github__*", Rate::new(one, NonZeroU32::new(2).unwrap()));
    /// let policy = Policy::compile("p", &spec)?;
    /// assert!(policy.check_rate("github__search", "acme/prod").is_none());
    /// assert!(policy.check_rate("github__search", "acme/prod").is_none());
    /// let refused = policy.check_rate("github__search", "acme/prod").unwrap();
    /// assert_eq!(refused.rule, "rate_limits.github__*");
    /// assert!(policy.check_rate("github__search", "acme/dev").is_none(), "per workspace");
    /// assert!(policy.check_rate("slack__send", "acme/prod").is_none(), "another tool");
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    #[must_use]
    pub fn check_rate(&self, tool: &str, workspace: &str) -> Option<RateLimited> {
        use governor::clock::Clock;
        if self.inner.limits.is_empty() {
            return None;
        }
        for i in self.inner.rate_globs.matches(tool) {
            let Some(l) = self.inner.limits.get(i) else {
                continue;
            };
            if let Err(not_until) = l.limiter.check_key(&workspace.to_owned()) {
                let wait = not_until.wait_time_from(l.limiter.clock().now());
                return Some(RateLimited {
                    rule: format!("rate_limits.{}", l.glob),
                    reason: format!(
                        "`{tool}` is over the rate limit `{}` ({} per second, bursts of {}); \
                         retry in {:.1} s",
                        l.glob,
                        l.rate.per_second,
                        l.rate.burst(),
                        wait.as_secs_f64()
                    ),
                    retry_after: wait,
                });
            }
        }
        None
    }

    /// The policy's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The spec it was compiled from.
    #[must_use]
    pub fn spec(&self) -> &PolicySpec {
        &self.inner.spec
    }

    fn decision(&self, verdict: Verdict, rule: String, reason: String) -> Decision {
        Decision {
            verdict,
            policy: self.inner.name.clone(),
            rule: Some(rule),
            reason,
        }
    }

    /// Whether a call of `tool` can be the last call of one of this policy's chain rules:
    /// only then does its decision depend on the history. A caller that must fetch the
    /// history first (a gateway reading other nodes' calls) fetches it only for these.
    #[must_use]
    pub fn may_end_chain(&self, tool: &str) -> bool {
        let p = &*self.inner;
        if p.chains.is_empty() {
            return false;
        }
        let current = p.chain_globs.matches(tool);
        !current.is_empty()
            && p.chains
                .iter()
                .any(|c| c.globs.last().is_some_and(|g| current.contains(g)))
    }

    /// Decide the call of `tool` with `arguments`, given the run's earlier calls `history`
    /// (oldest first). Refusals win over approvals: scopes and argument rules are checked
    /// first, then chain rules that block, then approvals (`require_approval`, chain rules
    /// that require approval).
    #[must_use]
    pub fn decide(&self, tool: &str, arguments: &Value, history: &[ToolCallRecord]) -> Decision {
        let p = &*self.inner;
        // The tool name as globset matches it, prepared once for every set below.
        let name = globset::Candidate::new(tool);
        if let Some(allow) = &p.allow
            && !allow.is_match_candidate(&name)
        {
            return self.decision(
                Verdict::Deny,
                "tools.allow".into(),
                format!(
                    "tool `{tool}` is not among the tools policy `{}` allows ({})",
                    p.name,
                    p.spec.tools.allow.join(", ")
                ),
            );
        }
        if let Some(i) = p.deny.matches_candidate(&name).first() {
            return self.decision(
                Verdict::Deny,
                format!("tools.deny[{i}]"),
                format!(
                    "tool `{tool}` matches `{}`, which policy `{}` denies",
                    p.spec.tools.deny[*i], p.name
                ),
            );
        }
        if !p.args.is_empty() {
            for i in p.arg_tools.matches_candidate(&name) {
                if let Some(d) = self.check_args(&p.args[i], tool, arguments) {
                    return d;
                }
            }
        }
        let mut approval: Option<Decision> = None;
        if !p.chains.is_empty() {
            let current = p.chain_globs.matches_candidate(&name);
            if !current.is_empty() {
                let matched = self.matching_chains(&current, history);
                for ci in matched {
                    let c = &p.chains[ci];
                    let reason = c.reason.clone().unwrap_or_else(|| {
                        format!("the calls {} happened in this order", c.pattern.join(" → "))
                    });
                    match c.action {
                        ChainAction::Block => {
                            return self.decision(
                                Verdict::Deny,
                                format!("chains[{ci}]"),
                                format!(
                                    "policy `{}` blocks `{tool}` after {}: {reason}",
                                    p.name,
                                    c.pattern[..c.pattern.len() - 1].join(" → ")
                                ),
                            );
                        }
                        _ => {
                            if approval.is_none() {
                                approval = Some(self.decision(
                                    Verdict::RequireApproval,
                                    format!("chains[{ci}]"),
                                    format!(
                                        "policy `{}` requires approval of `{tool}` after {}: {reason}",
                                        p.name,
                                        c.pattern[..c.pattern.len() - 1].join(" → ")
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let Some(i) = p.approval.matches_candidate(&name).first() {
            return self.decision(
                Verdict::RequireApproval,
                format!("require_approval[{i}]"),
                format!(
                    "policy `{}` requires approval of every call of `{}`",
                    p.name, p.spec.require_approval[*i]
                ),
            );
        }
        approval.unwrap_or_else(|| Decision::allow(&p.name))
    }

    /// Chains whose last glob is among `current` and whose earlier globs match successful
    /// calls of `history` in order.
    fn matching_chains(&self, current: &[usize], history: &[ToolCallRecord]) -> Vec<usize> {
        let p = &*self.inner;
        let candidates: Vec<usize> = p
            .chains
            .iter()
            .enumerate()
            .filter(|(_, c)| c.globs.last().is_some_and(|g| current.contains(g)))
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return candidates;
        }
        // Progress of each candidate: how many of its earlier globs are matched so far. The
        // earliest match of each glob is the best (a subsequence test), so one pass suffices.
        let mut progress = vec![0usize; candidates.len()];
        let mut hits = Vec::new();
        for call in history.iter().filter(|c| !c.is_error) {
            p.chain_globs.matches_into(call.tool.as_str(), &mut hits);
            if hits.is_empty() {
                continue;
            }
            for (k, &ci) in candidates.iter().enumerate() {
                let globs = &p.chains[ci].globs;
                let need = globs.len() - 1;
                if progress[k] < need && hits.contains(&globs[progress[k]]) {
                    progress[k] += 1;
                }
            }
        }
        candidates
            .into_iter()
            .zip(progress)
            .filter(|(ci, n)| *n == p.chains[*ci].globs.len() - 1)
            .map(|(ci, _)| ci)
            .collect()
    }

    fn check_args(&self, rules: &ToolArgs, tool: &str, arguments: &Value) -> Option<Decision> {
        for check in &rules.rules {
            let Some(value) = arguments.pointer(&check.pointer) else {
                continue;
            };
            // What a denial names (written only for a denial).
            let base = || format!("arguments.{}.{}", rules.glob, check.name);
            if !check.one_of.is_empty() && !check.one_of.contains(value) {
                let allowed: Vec<String> = check.one_of.iter().map(Value::to_string).collect();
                return Some(self.decision(
                    Verdict::Deny,
                    format!("{}.enum", base()),
                    format!(
                        "argument `{}` of `{tool}` is {value}; policy `{}` allows only {}",
                        check.name,
                        self.inner.name,
                        allowed.join(", ")
                    ),
                ));
            }
            if check.allow.is_none() && check.deny.is_empty() {
                continue;
            }
            let mut strings: Vec<std::borrow::Cow<'_, str>> = Vec::new();
            let mut bad_type = false;
            match value {
                Value::String(s) => strings.push(s.as_str().into()),
                Value::Array(items) => {
                    for item in items {
                        match item {
                            Value::String(s) => strings.push(s.as_str().into()),
                            Value::Number(_) | Value::Bool(_) => {
                                strings.push(item.to_string().into());
                            }
                            _ => bad_type = true,
                        }
                    }
                }
                Value::Number(_) | Value::Bool(_) => strings.push(value.to_string().into()),
                Value::Null => continue,
                Value::Object(_) => bad_type = true,
            }
            if bad_type {
                return Some(self.decision(
                    Verdict::Deny,
                    base(),
                    format!(
                        "argument `{}` of `{tool}` must be a string (or a list of strings) for \
                         policy `{}` to check it",
                        check.name, self.inner.name
                    ),
                ));
            }
            for s in &strings {
                let normal = normalize(s);
                if let Some(i) = check.deny.matches(normal.as_ref()).first() {
                    return Some(self.decision(
                        Verdict::Deny,
                        format!("{}.deny[{i}]", base()),
                        format!(
                            "argument `{}` of `{tool}` is `{s}`, which matches `{}`; policy `{}` \
                             denies it",
                            check.name, check.deny_src[*i], self.inner.name
                        ),
                    ));
                }
                if let Some(allow) = &check.allow
                    && !allow.is_match(normal.as_ref())
                {
                    return Some(self.decision(
                        Verdict::Deny,
                        format!("{}.allow", base()),
                        format!(
                            "argument `{}` of `{tool}` is `{s}`, which policy `{}` does not \
                             allow (allowed: {})",
                            check.name,
                            self.inner.name,
                            self.allowed_list(rules, check)
                        ),
                    ));
                }
            }
        }
        None
    }

    fn allowed_list(&self, rules: &ToolArgs, check: &ArgCheck) -> String {
        self.inner
            .spec
            .arguments
            .get(&rules.glob)
            .and_then(|r| r.get(&check.name))
            .map(|r| r.allow.join(", "))
            .unwrap_or_default()
    }
}

/// An absolute path with `.`, `..` and repeated `/` resolved lexically (never above `/`);
/// anything else unchanged.
pub(crate) fn normalize(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.starts_with('/') || !(s.contains("/.") || s.contains("//")) {
        return s.into();
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = String::with_capacity(s.len());
    for p in &parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() || (s.ends_with('/') && !parts.is_empty()) {
        out.push('/');
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ArgumentRule, ChainRule};
    use proptest::prelude::*;
    use serde_json::json;

    fn rec(names: &[&str]) -> Vec<ToolCallRecord> {
        names
            .iter()
            .map(|n| ToolCallRecord::new(*n, false))
            .collect()
    }

    fn docs() -> Policy {
        let spec = PolicySpec::new()
            .with_allowed_tools(["filesystem__*", "slack__*", "github__*"])
            .with_denied_tools(["filesystem__write_*"])
            .with_argument_rule(
                "filesystem__*",
                "path",
                ArgumentRule::new()
                    .with_allow(["/**/*.md"])
                    .with_deny(["/etc/**", "/**/.env"]),
            )
            .with_argument_rule(
                "github__*",
                "repo",
                ArgumentRule::new().with_enum([json!("acme/docs"), json!("acme/site")]),
            )
            .with_chain(
                ChainRule::new(
                    ["*__read_*", "slack__send_message"],
                    ChainAction::RequireApproval,
                )
                .with_reason("reading then posting may leak files"),
            )
            .with_chain(ChainRule::new(
                ["github__get_*", "filesystem__read_*", "slack__post_*"],
                ChainAction::Block,
            ))
            .with_require_approval(["github__delete_*"]);
        Policy::compile("docs", &spec).unwrap()
    }

    #[test]
    fn scopes_deny_with_the_rule_named() {
        let p = docs();
        let d = p.decide("shell__run", &json!({}), &[]);
        assert_eq!(
            (d.verdict, d.rule.as_deref()),
            (Verdict::Deny, Some("tools.allow"))
        );
        assert!(
            d.reason
                .contains("not among the tools policy `docs` allows"),
            "{}",
            d.reason
        );
        let d = p.decide("filesystem__write_file", &json!({"path": "/a.md"}), &[]);
        assert_eq!(d.rule.as_deref(), Some("tools.deny[0]"));
        let d = p.decide("filesystem__read_file", &json!({"path": "/docs/a.md"}), &[]);
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.rule, None);
    }

    #[test]
    fn argument_rules() {
        let p = docs();
        let d = p.decide(
            "filesystem__read_file",
            &json!({"path": "/etc/motd.md"}),
            &[],
        );
        assert_eq!(
            d.rule.as_deref(),
            Some("arguments.filesystem__*.path.deny[0]")
        );
        let d = p.decide("filesystem__read_file", &json!({"path": "/app/.env"}), &[]);
        assert_eq!(
            d.rule.as_deref(),
            Some("arguments.filesystem__*.path.deny[1]")
        );
        let d = p.decide("filesystem__read_file", &json!({"path": "/app/x.txt"}), &[]);
        assert_eq!(
            d.rule.as_deref(),
            Some("arguments.filesystem__*.path.allow")
        );
        assert!(d.reason.contains("/**/*.md"), "{}", d.reason);
        // Traversal is resolved before matching.
        let d = p.decide(
            "filesystem__read_file",
            &json!({"path": "/docs/../etc/passwd.md"}),
            &[],
        );
        assert_eq!(d.verdict, Verdict::Deny);
        // Lists are checked element by element; objects cannot be checked.
        let d = p.decide(
            "filesystem__read_multiple",
            &json!({"path": ["/a.md", "/etc/b.md"]}),
            &[],
        );
        assert_eq!(d.verdict, Verdict::Deny);
        let d = p.decide("filesystem__read_file", &json!({"path": {"p": 1}}), &[]);
        assert_eq!(d.verdict, Verdict::Deny);
        // An absent argument passes.
        assert_eq!(
            p.decide("filesystem__read_file", &json!({}), &[]).verdict,
            Verdict::Allow
        );
        let d = p.decide("github__get_issue", &json!({"repo": "evil/x"}), &[]);
        assert_eq!(d.rule.as_deref(), Some("arguments.github__*.repo.enum"));
        assert_eq!(
            p.decide("github__get_issue", &json!({"repo": "acme/site"}), &[])
                .verdict,
            Verdict::Allow
        );
    }

    #[test]
    fn chains_over_history() {
        let p = docs();
        let send = |h: &[ToolCallRecord]| p.decide("slack__send_message", &json!({}), h);
        assert_eq!(send(&[]).verdict, Verdict::Allow);
        let d = send(&rec(&[
            "github__list",
            "filesystem__read_file",
            "github__list",
        ]));
        assert_eq!(
            (d.verdict, d.rule.as_deref()),
            (Verdict::RequireApproval, Some("chains[0]"))
        );
        assert!(d.reason.contains("reading then posting"), "{}", d.reason);
        // A failed (or refused) read does not count.
        assert_eq!(
            send(&[ToolCallRecord::new("filesystem__read_file", true)]).verdict,
            Verdict::Allow
        );
        // Order matters for three-step chains.
        let post = |h: &[ToolCallRecord]| p.decide("slack__post_x", &json!({}), h);
        assert_eq!(
            post(&rec(&["filesystem__read_a", "github__get_b"])).verdict,
            Verdict::Allow
        );
        let d = post(&rec(&["github__get_b", "slack__x", "filesystem__read_a"]));
        assert_eq!(
            (d.verdict, d.rule.as_deref()),
            (Verdict::Deny, Some("chains[1]"))
        );
        let d = p.decide("github__delete_repo", &json!({"repo": "acme/docs"}), &[]);
        assert_eq!(d.rule.as_deref(), Some("require_approval[0]"));
        // Only the last call of a chain depends on the history.
        assert!(p.may_end_chain("slack__send_message"));
        assert!(p.may_end_chain("slack__post_x"));
        assert!(!p.may_end_chain("filesystem__read_file"));
        assert!(!p.may_end_chain("github__get_b"));
        assert!(
            !Policy::compile("none", &PolicySpec::new())
                .unwrap()
                .may_end_chain("slack__post_x")
        );
    }

    #[test]
    fn bad_globs_are_located() {
        let spec = PolicySpec::new().with_argument_rule(
            "fs__*",
            "path",
            ArgumentRule::new().with_deny(["/ok/**", "/bad/[z-a]"]),
        );
        let e = Policy::compile("p", &spec).unwrap_err();
        assert!(
            matches!(&e, Error::Config { key, .. } if key == "arguments.fs__*.path.deny[1]"),
            "{e}"
        );
    }

    /// Reference: is `pattern[..n-1]` a subsequence of the successful calls, by glob?
    fn reference_chain(globs: &[String], history: &[ToolCallRecord], tool: &str) -> bool {
        let m = |g: &str, s: &str| Glob::new(g).unwrap().compile_matcher().is_match(s);
        let (last, earlier) = globs.split_last().unwrap();
        if !m(last, tool) {
            return false;
        }
        let mut i = 0;
        for c in history.iter().filter(|c| !c.is_error) {
            if i < earlier.len() && m(&earlier[i], &c.tool) {
                i += 1;
            }
        }
        i == earlier.len()
    }

    proptest! {
        #[test]
        fn chain_matching_is_a_subsequence_test(
            pattern in proptest::collection::vec(prop_oneof![Just("a*"), Just("b"), Just("*c"), Just("?x")], 2..4),
            history in proptest::collection::vec((prop_oneof![Just("a1"), Just("b"), Just("cc"), Just("zx"), Just("q")], any::<bool>()), 0..8),
            tool in prop_oneof![Just("a1"), Just("b"), Just("cc"), Just("zx")],
        ) {
            let pattern: Vec<String> = pattern.into_iter().map(String::from).collect();
            let history: Vec<ToolCallRecord> = history.into_iter().map(|(t, e)| ToolCallRecord::new(t, e)).collect();
            let spec = PolicySpec::new().with_chain(ChainRule::new(pattern.clone(), ChainAction::Block));
            let p = Policy::compile("p", &spec).unwrap();
            let denied = p.decide(tool, &json!({}), &history).verdict == Verdict::Deny;
            prop_assert_eq!(denied, reference_chain(&pattern, &history, tool));
        }

        #[test]
        fn normalized_paths_never_escape_their_prefix(segs in proptest::collection::vec(prop_oneof![Just(".."), Just("."), Just(""), Just("docs"), Just("etc"), Just("a.md")], 0..8)) {
            let path = format!("/{}", segs.join("/"));
            let n = normalize(&path);
            prop_assert!(n.starts_with('/'));
            prop_assert!(!n.split('/').any(|s| s == ".." || s == "."), "{}", n);
            // The policy decides on the normalised path: a path whose normal form is under
            // /etc is denied whatever its spelling.
            let spec = PolicySpec::new().with_argument_rule("t", "p", ArgumentRule::new().with_deny(["/etc/**"]));
            let p = Policy::compile("p", &spec).unwrap();
            let denied = p.decide("t", &json!({"p": path}), &[]).verdict == Verdict::Deny;
            prop_assert_eq!(denied, n.starts_with("/etc/"));
        }

        #[test]
        fn argument_globs_never_panic(value in any::<String>(), glob in "[a-z/*?.]{0,12}") {
            let spec = PolicySpec::new().with_argument_rule("*", "x", ArgumentRule::new().with_allow([glob]));
            if let Ok(p) = Policy::compile("p", &spec) {
                let _ = p.decide("t", &json!({"x": value}), &[]);
            }
        }
    }
}
