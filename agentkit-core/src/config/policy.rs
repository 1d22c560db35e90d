//! Tool-call policies (`policies:` in `agentkit.yaml`, `policy:` of an agent): plain data.
//!
//! The compiled form, which decides tool calls, is [`crate::policy::Policy`] (feature
//! `policy`). Loading a file checks names and references; globs are compiled (and a bad one
//! reported at its key) when a policy is built.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::spec::ToolGlobs;

/// A named set of rules every tool call of an agent passes through before the tool runs.
///
/// ```yaml
/// policies:
///   docs-only:
///     description: Read Markdown docs; post to Slack only with approval after reading.
///     tools:
///       allow: ["filesystem__read_*", "filesystem__list_*", "slack__*"]
///       deny: ["slack__delete_*"]
///     arguments:
///       "filesystem__*":
///         path: {allow: ["/**/*.md"], deny: ["/etc/**", "/**/.env"]}
///       "slack__send_message":
///         channel: {enum: ["#docs", "#support"]}
///     chains:
///       - pattern: ["*__read_*", "slack__send_message"]
///         action: require_approval
///         reason: a message sent after reading files may leak them
///     require_approval: ["slack__delete_*"]
///     rate_limits:
///       "github__*": {per_second: 2, burst: 5}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicySpec {
    /// The policy's name, when a named policy is copied into an agent's registry version
    /// (decisions and tool errors show it); unset in `policies:` (the key names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the policy is for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Which tools may be called at all (globs over tool names such as `filesystem__read_*`).
    #[serde(skip_serializing_if = "ToolGlobs::is_empty")]
    pub tools: ToolGlobs,
    /// Argument rules: tool glob → argument name (or a JSON pointer like `/options/path`) →
    /// rule. Every rule of every glob the tool matches applies.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub arguments: BTreeMap<String, BTreeMap<String, ArgumentRule>>,
    /// Rules over the run's tool history.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainRule>,
    /// Tools (globs) whose every call needs a human approval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub require_approval: Vec<String>,
    /// Rate limits (GCRA) per tool glob, counted per workspace for the agents (or the
    /// gateway) using this policy: a call over a limit is not made, and the model reads a tool
    /// error saying when to retry.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rate_limits: BTreeMap<String, super::Rate>,
}

impl PolicySpec {
    /// An empty policy (allows everything).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow only tools matching these globs.
    #[must_use]
    pub fn with_allowed_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, g: I) -> Self {
        self.tools.allow = g.into_iter().map(Into::into).collect();
        self
    }

    /// Deny tools matching these globs.
    #[must_use]
    pub fn with_denied_tools<I: IntoIterator<Item = S>, S: Into<String>>(mut self, g: I) -> Self {
        self.tools.deny = g.into_iter().map(Into::into).collect();
        self
    }

    /// Add a rule on argument `argument` of the tools matching `tools`.
    #[must_use]
    pub fn with_argument_rule(
        mut self,
        tools: impl Into<String>,
        argument: impl Into<String>,
        rule: ArgumentRule,
    ) -> Self {
        self.arguments
            .entry(tools.into())
            .or_default()
            .insert(argument.into(), rule);
        self
    }

    /// Add a chain rule.
    #[must_use]
    pub fn with_chain(mut self, rule: ChainRule) -> Self {
        self.chains.push(rule);
        self
    }

    /// At most `rate` calls of the tools matching `tools` (per workspace).
    #[must_use]
    pub fn with_rate_limit(mut self, tools: impl Into<String>, rate: super::Rate) -> Self {
        self.rate_limits.insert(tools.into(), rate);
        self
    }

    /// Require approval of every call of tools matching these globs.
    #[must_use]
    pub fn with_require_approval<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        g: I,
    ) -> Self {
        self.require_approval = g.into_iter().map(Into::into).collect();
        self
    }
}

/// A rule on one argument: string values (each element of an array of strings) must match an
/// `allow` glob when `allow` is set and no `deny` glob; `enum` lists the only values allowed.
///
/// Globs use `/` as a separator: `*` stays within one path segment, `**` crosses segments
/// (`/**/*.md`). Absolute paths are normalised (`.`, `..` and repeated `/` resolved) before
/// matching, so `/docs/../etc/passwd` is checked as `/etc/passwd`. An argument that is absent
/// passes (the tool's schema decides whether it is required).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ArgumentRule {
    /// Values must match one of these globs (any value when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Values must match none of these globs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// The only values allowed (any JSON values; compared exactly).
    #[serde(
        rename = "enum",
        alias = "one_of",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub one_of: Vec<Value>,
}

impl ArgumentRule {
    /// An empty rule (allows every value).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Values must match one of these globs.
    #[must_use]
    pub fn with_allow<I: IntoIterator<Item = S>, S: Into<String>>(mut self, g: I) -> Self {
        self.allow = g.into_iter().map(Into::into).collect();
        self
    }

    /// Values must match none of these globs.
    #[must_use]
    pub fn with_deny<I: IntoIterator<Item = S>, S: Into<String>>(mut self, g: I) -> Self {
        self.deny = g.into_iter().map(Into::into).collect();
        self
    }

    /// The only values allowed.
    #[must_use]
    pub fn with_enum<I: IntoIterator<Item = Value>>(mut self, values: I) -> Self {
        self.one_of = values.into_iter().collect();
        self
    }
}

/// A rule over the run's tool history: when earlier successful calls match the globs of
/// `pattern` in order (not necessarily adjacent) and the call being made matches its last
/// glob, `action` applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ChainRule {
    /// Tool globs, oldest first; the last one matches the call being made.
    pub pattern: Vec<String>,
    /// What happens when the chain matches.
    pub action: ChainAction,
    /// Why, shown to the model (when blocked) and to the approver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ChainRule {
    /// A rule.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(
        pattern: I,
        action: ChainAction,
    ) -> Self {
        Self {
            pattern: pattern.into_iter().map(Into::into).collect(),
            action,
            reason: None,
        }
    }

    /// Say why.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// What a matching [`ChainRule`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainAction {
    /// The call waits for a human approval.
    #[default]
    RequireApproval,
    /// The call is refused; the model gets a tool error saying which rule refused it.
    Block,
}

/// An agent's policy: the name of one in `policies:`, or one written inline.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PolicyRef {
    /// A policy of `policies:` by name.
    Named(String),
    /// A policy written in the agent.
    Inline(Box<PolicySpec>),
}

impl Serialize for PolicyRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Named(n) => s.serialize_str(n),
            Self::Inline(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for PolicyRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PolicyRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the name of a policy in `policies:`, or a policy (a map with `tools`, `arguments`, `chains`, ...)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PolicyRef, E> {
                Ok(PolicyRef::Named(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PolicyRef, A::Error> {
                PolicySpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|p| PolicyRef::Inline(Box::new(p)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refs_read_names_and_inline_policies() {
        let named: PolicyRef = serde_json::from_value(serde_json::json!("docs-only")).unwrap();
        assert_eq!(named, PolicyRef::Named("docs-only".into()));
        let inline: PolicyRef = serde_json::from_value(serde_json::json!({
            "tools": {"deny": ["shell__*"]},
            "arguments": {"fs__*": {"path": {"deny": ["/etc/**"], "enum": ["/a"]}}},
            "chains": [{"pattern": ["*__read_*", "slack__send"], "action": "block"}]
        }))
        .unwrap();
        let PolicyRef::Inline(p) = &inline else {
            panic!("inline expected")
        };
        assert_eq!(p.tools.deny, ["shell__*"]);
        assert_eq!(p.chains[0].action, ChainAction::Block);
        assert_eq!(
            p.arguments["fs__*"]["path"].one_of,
            [serde_json::json!("/a")]
        );
        let back = serde_json::to_value(&inline).unwrap();
        assert_eq!(serde_json::from_value::<PolicyRef>(back).unwrap(), inline);
        let err = serde_json::from_value::<PolicyRef>(serde_json::json!({"tool": {}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `tool`"), "{err}");
    }
}
