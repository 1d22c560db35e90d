//! Declarative agents, workflows, schedules and triggers (`agents:`, `workflows:`,
//! `schedules:`, `triggers:` and `server:` in `agentkit.yaml`).
//!
//! These are plain data: the server (agentkit-server's `spec` module) turns them into running
//! agents, pattern workflows and runtime schedules. Loading a file checks what can be checked
//! without those crates (names, references, cycles, durations, limits); cron expressions, time
//! zones, RFC 3339 times and tool globs are checked when the server builds them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::Config;
use super::keypath::KeyPath;
use super::resolve::seconds;

/// The longest name of an agent, workflow, schedule or trigger.
pub const MAX_NAME_LEN: usize = 64;

/// The shortest schedule interval (`every`), the runtime's minimum.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The longest [`HumanDuration`]: 3650 days (10 years).
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

/// Which provider runs an agent's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI Chat Completions (or a compatible endpoint, by `openai.base_url`).
    #[serde(alias = "open_ai")]
    Openai,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API (`google:` section; `gemini` is an alias).
    #[serde(alias = "gemini")]
    Google,
    /// The offline scripted model: it answers with the user messages it was sent.
    Scripted,
}

impl ProviderKind {
    /// The name used in a `provider:model` string and in `provider:`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Google => "google",
            Self::Scripted => "scripted",
        }
    }

    /// The provider a `provider:model` prefix names (`openai`, `anthropic`, `google` or
    /// `gemini`, `scripted`).
    #[must_use]
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        match prefix {
            "openai" => Some(Self::Openai),
            "anthropic" => Some(Self::Anthropic),
            "google" | "gemini" => Some(Self::Google),
            "scripted" => Some(Self::Scripted),
            _ => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared agent: a model, an instruction, MCP servers and limits.
///
/// ```yaml
/// agents:
///   billing:
///     description: Answers invoice and refund questions
///     model: openai:gpt-4o-mini
///     instructions: You answer billing questions. Be brief.
///     servers: [stripe]
///     roles: [support]
///     tools: {allow: ["stripe__*"], deny: ["stripe__delete_*"]}
///     limits: {timeout_seconds: 120, max_iterations: 8, max_spend_usd: 0.5, concurrency: 4}
///     history_messages: 40
///     schedules:
///       nightly: {cron: "0 3 * * *", timezone: Europe/Lisbon, input: {message: Summarise the day}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentSpec {
    /// What the agent does (shown to routers, planners, MCP clients).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The model: `gpt-4o-mini`, `openai:gpt-4o-mini`, `anthropic:claude-sonnet-4-5`, or
    /// `scripted` (the offline echo model). Unset: the provider's `default_model`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The provider, when `model` has no `provider:` prefix. Unset and unprefixed: OpenAI
    /// when it has an API key, else Anthropic when it has one, else the scripted model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// The system instruction.
    #[serde(alias = "instruction", skip_serializing_if = "String::is_empty")]
    pub instructions: String,
    /// MCP servers (names from `mcp.servers`) whose tools the agent gets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Roles (names from `mcp.roles`) whose servers the agent gets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Which of those tools it may use.
    #[serde(skip_serializing_if = "ToolGlobs::is_empty")]
    pub tools: ToolGlobs,
    /// Time, iteration, spend and concurrency limits.
    #[serde(skip_serializing_if = "AgentLimits::is_empty")]
    pub limits: AgentLimits,
    /// Keep at most this many messages of a conversation thread (the memory window's
    /// `max_messages`); unset: the memory's default window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_messages: Option<usize>,
    /// The policy every tool call of the agent passes: the name of one in `policies:`, or
    /// one written inline (see [`PolicySpec`](super::PolicySpec)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::PolicyRef>,
    /// Prompt-injection checks on the agent's tool calls, like `gateway.safety`: what to do
    /// when the detectors find something in a call's arguments (`inputs`) or in a tool's
    /// answer (`outputs`): `flag`, `block` or `require_approval`.
    #[serde(skip_serializing_if = "super::SafetySettings::is_default")]
    pub safety: super::SafetySettings,
    /// Offer the agent the tool that asks a person (`__human_input`, a `prompt`): a run that
    /// calls it waits as `waiting_input`, durably, for its `human_input` signal (`POST
    /// /v1/runs/{id}/signal` with the answer as `payload`), then goes on with the answer as the
    /// tool's result.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub human_input: bool,
    /// Schedules that run this agent, part of its versioned spec: a change of schedule is a
    /// new version, `diff` shows it, and they follow the version the agent's `prod` label
    /// points at (`latest` while it has no `prod` label) on the server. The fields of a
    /// top-level schedule, without `target` (the agent itself).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

/// Tool allow/deny lists of globs over the agent's tool names (`server__tool`): `*` matches
/// any run of characters, `?` one, `[abc]` a class, `{a,b}` alternatives.
///
/// A tool is offered when it matches some `allow` glob (or `allow` is empty) and no `deny` glob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ToolGlobs {
    /// Only tools matching one of these (all tools when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Never tools matching one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl ToolGlobs {
    /// Whether both lists are empty (every tool is offered).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// Limits of one agent's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentLimits {
    /// Give up a run after this many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// At most this many tool rounds per request (the agent loop's `max_iterations`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    /// Stop a run that has spent this many US dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_spend_usd: Option<f64>,
    /// At most this many runs at once (others wait in the queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// What the agent's runs may spend per period, in each workspace (all runs together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::PeriodBudget>,
    /// How many runs of the agent may start per second in each workspace (GCRA); a start
    /// over it is answered 429 with `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
}

impl AgentLimits {
    /// Whether no limit is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl AgentSpec {
    /// The provider and the model id the agent names: a `provider:` prefix of `model` wins over
    /// [`provider`](Self::provider). `scripted` alone is the scripted provider. A prefix that is
    /// not a known provider is part of the model id (`llama3:8b`).
    ///
    /// ```
    /// use agentkit_core::config::{AgentSpec, ProviderKind};
    ///
    /// let a = AgentSpec::new("anthropic:claude-sonnet-4-5", "Be brief.");
    /// assert_eq!(a.provider_and_model(), (Some(ProviderKind::Anthropic), Some("claude-sonnet-4-5")));
    /// let b = AgentSpec::new("llama3:8b", "Be brief.").with_provider(ProviderKind::Openai);
    /// assert_eq!(b.provider_and_model(), (Some(ProviderKind::Openai), Some("llama3:8b")));
    /// assert_eq!(AgentSpec::new("scripted", "").provider_and_model(), (Some(ProviderKind::Scripted), None));
    /// ```
    #[must_use]
    pub fn provider_and_model(&self) -> (Option<ProviderKind>, Option<&str>) {
        let Some(model) = self
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
        else {
            return (self.provider, None);
        };
        if model == "scripted" {
            return (Some(ProviderKind::Scripted), None);
        }
        if let Some((prefix, rest)) = model.split_once(':')
            && let Some(kind) = ProviderKind::from_prefix(prefix)
        {
            let rest = rest.trim();
            return (Some(kind), (!rest.is_empty()).then_some(rest));
        }
        (self.provider, Some(model))
    }
}

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

/// A workflow: agents (or other workflows) composed with one of the patterns, chosen by
/// `type`. Members are named; a name is an agent or another workflow (no cycles).
///
/// ```yaml
/// workflows:
///   desk:
///     type: router
///     routes: [billing, tech]
///     router: classifier
///   draft:
///     type: chain
///     steps: [outline, writer]
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowSpec {
    /// Steps one after another, each given the previous output.
    Chain(ChainSpec),
    /// Branches on the same request at once, then a fan-in.
    Parallel(ParallelSpec),
    /// The request goes to the route that fits it best.
    Router(RouterSpec),
    /// An optimizer answers, an evaluator rates, until good enough.
    #[serde(alias = "evaluator-optimizer")]
    EvaluatorOptimizer(EvaluatorOptimizerSpec),
    /// A planner splits the work into tasks for workers; a synthesizer answers.
    Orchestrator(OrchestratorSpec),
    /// Agents that hand the conversation to each other.
    Swarm(SwarmSpec),
}

/// Limits of one workflow's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkflowLimits {
    /// Give up a run after this many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Stop a run that has spent this many US dollars.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_spend_usd: Option<f64>,
    /// At most this many runs at once (others wait in the queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
}

impl WorkflowLimits {
    /// Whether no limit is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What each step of a chain receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChainInputKind {
    /// The previous step's output (the first step gets the request).
    #[default]
    PreviousOutput,
    /// The request and every earlier output, labelled by step.
    Transcript,
}

/// `type: chain`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ChainSpec {
    /// What the workflow does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The steps, in order (at least one).
    pub steps: Vec<String>,
    /// What each step receives (default `previous_output`).
    pub input: ChainInputKind,
    /// Run limits.
    #[serde(skip_serializing_if = "WorkflowLimits::is_empty")]
    pub limits: WorkflowLimits,
    /// Schedules that run this workflow, part of its versioned spec (see
    /// [`AgentSpec::schedules`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

/// What a parallel workflow does when a branch fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OnFailure {
    /// Stop at the first failing branch (the default).
    #[default]
    FailFast,
    /// Let the others finish; the fan-in sees which branch failed and why.
    Continue,
}

/// `type: parallel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ParallelSpec {
    /// What the workflow does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The branches, all given the request (at least one).
    pub fan_out: Vec<String>,
    /// Combines the branches' answers; unset: the answers joined, labelled by branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_in: Option<String>,
    /// At most this many branches at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// What a failing branch does (default `fail_fast`).
    pub on_failure: OnFailure,
    /// Run limits.
    #[serde(skip_serializing_if = "WorkflowLimits::is_empty")]
    pub limits: WorkflowLimits,
    /// Schedules that run this workflow, part of its versioned spec (see
    /// [`AgentSpec::schedules`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

/// `type: router`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RouterSpec {
    /// What the workflow does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The routes (at least one), each described to the router by its description.
    pub routes: Vec<String>,
    /// The agent that picks a route (answers with structured output); unset: an offline
    /// bag-of-words similarity of the request to each route's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// How many ranked routes the router returns (at least 1, default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// Run limits.
    #[serde(skip_serializing_if = "WorkflowLimits::is_empty")]
    pub limits: WorkflowLimits,
    /// Schedules that run this workflow, part of its versioned spec (see
    /// [`AgentSpec::schedules`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

/// The lowest rating an evaluator-optimizer accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MinRating {
    /// Wrong or unusable.
    Poor,
    /// Usable with significant problems.
    Fair,
    /// Minor problems at most (the default).
    #[default]
    Good,
    /// Nothing to improve.
    Excellent,
}

/// `type: evaluator_optimizer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EvaluatorOptimizerSpec {
    /// What the workflow does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Writes (and rewrites) the answer.
    pub optimizer: String,
    /// Rates each answer (structured output). May name the same agent as the optimizer: each
    /// role gets its own instance.
    pub evaluator: String,
    /// Accept an answer rated at least this (default `good`).
    pub min_rating: MinRating,
    /// At most this many rewrites after the first answer (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_refinements: Option<u32>,
    /// What the evaluator judges, added to its prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criteria: Option<String>,
    /// Run limits.
    #[serde(skip_serializing_if = "WorkflowLimits::is_empty")]
    pub limits: WorkflowLimits,
    /// Schedules that run this workflow, part of its versioned spec (see
    /// [`AgentSpec::schedules`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

/// How an orchestrator plans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PlanModeKind {
    /// Plan every remaining step at once (the default).
    #[default]
    Full,
    /// Plan one step at a time.
    Iterative,
}

/// `type: orchestrator`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OrchestratorSpec {
    /// What the workflow does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Writes the plan (structured output).
    pub planner: String,
    /// The workers tasks are assigned to (at least one).
    pub workers: Vec<String>,
    /// Writes the final answer; unset: the planner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synthesizer: Option<String>,
    /// Full or iterative planning (default `full`).
    pub mode: PlanModeKind,
    /// At most this many planning rounds (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    /// Send an invalid plan back at most this many times in a row (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_plan_retries: Option<u32>,
    /// Run limits.
    #[serde(skip_serializing_if = "WorkflowLimits::is_empty")]
    pub limits: WorkflowLimits,
    /// Schedules that run this workflow, part of its versioned spec (see
    /// [`AgentSpec::schedules`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

/// `type: swarm`. Members are agents (not workflows): a swarm drives their model turns itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SwarmSpec {
    /// What the workflow does.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The agents (at least one).
    pub members: Vec<String>,
    /// The agent that starts; unset: the first member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Who may hand off to whom: `{triage: [billing, tech]}`. Empty: every member may hand
    /// off to every other member; a member not listed (when some are) hands off to no one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub handoffs: BTreeMap<String, Vec<String>>,
    /// At most this many handoffs per run (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_handoffs: Option<u32>,
    /// At most this many model calls per run (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// Run limits.
    #[serde(skip_serializing_if = "WorkflowLimits::is_empty")]
    pub limits: WorkflowLimits,
    /// Schedules that run this workflow, part of its versioned spec (see
    /// [`AgentSpec::schedules`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub schedules: BTreeMap<String, ScheduleSpec>,
}

impl WorkflowSpec {
    /// The pattern name, as written in `type:`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Chain(_) => "chain",
            Self::Parallel(_) => "parallel",
            Self::Router(_) => "router",
            Self::EvaluatorOptimizer(_) => "evaluator_optimizer",
            Self::Orchestrator(_) => "orchestrator",
            Self::Swarm(_) => "swarm",
        }
    }

    /// What the workflow does.
    #[must_use]
    pub fn description(&self) -> &str {
        match self {
            Self::Chain(s) => &s.description,
            Self::Parallel(s) => &s.description,
            Self::Router(s) => &s.description,
            Self::EvaluatorOptimizer(s) => &s.description,
            Self::Orchestrator(s) => &s.description,
            Self::Swarm(s) => &s.description,
        }
    }

    /// The schedules that run it (part of its versioned spec).
    #[must_use]
    pub fn schedules(&self) -> &BTreeMap<String, ScheduleSpec> {
        match self {
            Self::Chain(s) => &s.schedules,
            Self::Parallel(s) => &s.schedules,
            Self::Router(s) => &s.schedules,
            Self::EvaluatorOptimizer(s) => &s.schedules,
            Self::Orchestrator(s) => &s.schedules,
            Self::Swarm(s) => &s.schedules,
        }
    }

    /// Its run limits.
    #[must_use]
    pub fn limits(&self) -> &WorkflowLimits {
        match self {
            Self::Chain(s) => &s.limits,
            Self::Parallel(s) => &s.limits,
            Self::Router(s) => &s.limits,
            Self::EvaluatorOptimizer(s) => &s.limits,
            Self::Orchestrator(s) => &s.limits,
            Self::Swarm(s) => &s.limits,
        }
    }

    /// Every member it names, with the key (relative to the workflow) that names it, in file
    /// order.
    ///
    /// ```
    /// use agentkit_core::config::WorkflowSpec;
    ///
    /// let w = WorkflowSpec::parallel(["a", "b"]).with_fan_in("c");
    /// let refs: Vec<(String, &str)> = w.references().collect();
    /// assert_eq!(refs, [("fan_out[0]".to_owned(), "a"), ("fan_out[1]".to_owned(), "b"), ("fan_in".to_owned(), "c")]);
    /// ```
    pub fn references(&self) -> impl Iterator<Item = (String, &str)> {
        let mut out: Vec<(String, &str)> = Vec::new();
        fn push_list<'a>(out: &mut Vec<(String, &'a str)>, key: &str, names: &'a [String]) {
            out.extend(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (format!("{key}[{i}]"), n.as_str())),
            );
        }
        fn push_one<'a>(out: &mut Vec<(String, &'a str)>, key: &str, name: Option<&'a String>) {
            if let Some(n) = name {
                out.push((key.to_owned(), n.as_str()));
            }
        }
        match self {
            Self::Chain(s) => push_list(&mut out, "steps", &s.steps),
            Self::Parallel(s) => {
                push_list(&mut out, "fan_out", &s.fan_out);
                push_one(&mut out, "fan_in", s.fan_in.as_ref());
            }
            Self::Router(s) => {
                push_list(&mut out, "routes", &s.routes);
                push_one(&mut out, "router", s.router.as_ref());
            }
            Self::EvaluatorOptimizer(s) => {
                push_one(&mut out, "optimizer", Some(&s.optimizer));
                push_one(&mut out, "evaluator", Some(&s.evaluator));
            }
            Self::Orchestrator(s) => {
                push_one(&mut out, "planner", Some(&s.planner));
                push_list(&mut out, "workers", &s.workers);
                push_one(&mut out, "synthesizer", s.synthesizer.as_ref());
            }
            Self::Swarm(s) => push_list(&mut out, "members", &s.members),
        }
        out.into_iter()
    }
}

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

/// A duration written as text: one or more `<number><unit>` parts, largest unit first, each
/// unit at most once, units `d`, `h`, `m`, `s`, `ms` (`30s`, `15m`, `1h30m`, `1d`, `250ms`).
/// Greater than zero and at most [`MAX_DURATION`]. Displays in the same form, so it
/// round-trips.
///
/// ```
/// use agentkit_core::config::HumanDuration;
/// use std::time::Duration;
///
/// let d: HumanDuration = "1h30m".parse()?;
/// assert_eq!(d.0, Duration::from_secs(5400));
/// assert_eq!(d.to_string(), "1h30m");
/// assert_eq!(HumanDuration(Duration::from_millis(90_500)).to_string(), "1m30s500ms");
/// assert!("90".parse::<HumanDuration>().is_err());
/// assert!("1m1h".parse::<HumanDuration>().is_err());
/// # Ok::<_, String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "invalid duration `{text}`: {why}; write e.g. `30s`, `15m`, `1h30m`, `1d` \
                 (units d, h, m, s, ms)"
            )
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        let mut last_unit: Option<usize> = None;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(bad("expected a number"));
            }
            let number: u64 = s[start..i]
                .parse()
                .map_err(|_| bad("the number is too large"))?;
            let ustart = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[ustart..i];
            if unit.is_empty() {
                return Err(bad("a number needs a unit"));
            }
            let Some(rank) = UNITS.iter().position(|(u, _)| *u == unit) else {
                return Err(bad(&format!("unknown unit `{unit}`")));
            };
            if last_unit.is_some_and(|l| rank <= l) {
                return Err(bad("write each unit once, largest first"));
            }
            last_unit = Some(rank);
            total = number
                .checked_mul(UNITS[rank].1)
                .and_then(|ms| total.checked_add(ms))
                .ok_or_else(|| bad("it is too long"))?;
        }
        let d = Duration::from_millis(total);
        if d.is_zero() {
            return Err(bad("it must be greater than zero"));
        }
        if d > MAX_DURATION {
            return Err(bad("it is longer than 3650d (10 years)"));
        }
        Ok(Self(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0ms");
        }
        for (unit, size) in UNITS {
            let n = ms / size;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                ms -= n * size;
            }
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Schedules
// ---------------------------------------------------------------------------------------------

/// What a schedule does when a fire comes while the previous fire's run is unfinished (the
/// runtime's `Overlap`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverlapPolicy {
    /// Skip the fire (the default).
    #[default]
    Skip,
    /// Keep at most one pending fire, started when the running one ends.
    BufferOne,
    /// Start it anyway.
    AllowAll,
}

/// What a schedule does with fires that were due while no server was running (the runtime's
/// `CatchUp`): `skip` (the default), or `{within: 1h}` to fire what was due in that window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatchUpPolicy {
    /// Fire only from when the schedule is registered on.
    #[default]
    Skip,
    /// Also fire what was due in this window before registration.
    Within(HumanDuration),
}

/// One schedule: exactly one of `cron` (with `timezone`), `every` or `at` says when it starts a
/// run of `target` with `input`.
///
/// `input` is what the run gets: a string or `{"message": ..., "thread"?: ...}` for an agent,
/// any JSON a workflow accepts. Unset, the run gets
/// ``{"message": "Scheduled run `<schedule name>`."}``.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ScheduleSpec {
    /// What the schedule is for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The agent or workflow to run. Left out in an agent's or workflow's own `schedules:`
    /// (the target is that agent or workflow).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// A cron expression: 5 fields (minute hour day month weekday) or 6 with seconds first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone the cron expression is read in (default `UTC`); only with `cron`.
    #[serde(alias = "tz", skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A fixed interval, aligned to the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<HumanDuration>,
    /// One fire at this RFC 3339 time (`2026-01-01T09:00:00Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The run's input (see the type's docs for the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Overlap policy (default `skip`).
    pub overlap: OverlapPolicy,
    /// Catch-up policy (default `skip`).
    pub catch_up: CatchUpPolicy,
}

impl ScheduleSpec {
    /// The input a run of schedule `name` gets: [`input`](Self::input), or
    /// ``{"message": "Scheduled run `<name>`."}``.
    #[must_use]
    pub fn input_or_default(&self, name: &str) -> Value {
        self.input
            .clone()
            .unwrap_or_else(|| serde_json::json!({"message": format!("Scheduled run `{name}`.")}))
    }

    /// Check when it fires: exactly one of `cron`, `every` or `at`, a non-empty cron
    /// expression, `timezone` only with `cron`, an interval of at least the 10ms minimum
    /// (cron expressions, zones and times are parsed where schedules are built). `Err` with
    /// the key that is wrong (empty: the schedule as a whole) and what is wrong.
    ///
    /// ```
    /// use agentkit_core::config::ScheduleSpec;
    ///
    /// use std::time::Duration;
    ///
    /// assert!(ScheduleSpec::cron("", "0 3 * * *").with_timezone("Europe/Lisbon").check().is_ok());
    /// let hourly = ScheduleSpec::every("", Duration::from_secs(3600)).with_timezone("UTC");
    /// assert_eq!(hourly.check().unwrap_err().0, "timezone");
    /// assert_eq!(ScheduleSpec::default().check().unwrap_err().0, "");
    /// ```
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let s = self;
        let set: Vec<&str> = [
            s.cron.as_ref().map(|_| "cron"),
            s.every.as_ref().map(|_| "every"),
            s.at.as_ref().map(|_| "at"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match set.as_slice() {
            [] => {
                return Err((
                    "",
                    "a schedule needs one of `cron` (with `timezone`), `every` or `at`".into(),
                ));
            }
            [_] => {}
            [first, second, ..] => {
                return Err((
                    *second,
                    format!(
                        "a schedule takes exactly one of `cron`, `every` or `at`, and this \
                         one sets both `{first}` and `{second}`"
                    ),
                ));
            }
        }
        if let Some(cron) = &s.cron
            && cron.trim().is_empty()
        {
            return Err(("cron", "the cron expression is empty".into()));
        }
        if s.timezone.is_some() && s.cron.is_none() {
            return Err((
                "timezone",
                "`timezone` applies only to `cron` schedules".into(),
            ));
        }
        if let Some(every) = s.every
            && every.0 < MIN_INTERVAL
        {
            return Err((
                "every",
                format!("the interval `{every}` is shorter than the 10ms minimum"),
            ));
        }
        Ok(())
    }

    /// The time zone of the cron expression (`UTC` when unset).
    #[must_use]
    pub fn timezone_or_utc(&self) -> &str {
        self.timezone.as_deref().unwrap_or("UTC")
    }
}

impl Serialize for CatchUpPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Self::Skip => s.serialize_str("skip"),
            Self::Within(d) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("within", d)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for CatchUpPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CatchUpPolicy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`skip` or `{within: <duration>}`")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CatchUpPolicy, E> {
                match v {
                    "skip" => Ok(CatchUpPolicy::Skip),
                    other => Err(E::custom(format_args!(
                        "unknown catch-up policy `{other}`; expected `skip` or `{{within: 1h}}`"
                    ))),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<CatchUpPolicy, A::Error> {
                let mut within = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "within" || within.is_some() {
                        return Err(serde::de::Error::custom(format_args!(
                            "unknown key `{key}`; catch_up takes `skip` or `{{within: 1h}}`"
                        )));
                    }
                    within = Some(map.next_value::<HumanDuration>()?);
                }
                within.map(CatchUpPolicy::Within).ok_or_else(|| {
                    serde::de::Error::custom("expected `{within: <duration>}`, found an empty map")
                })
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Triggers
// ---------------------------------------------------------------------------------------------

/// Something that starts runs when it happens, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriggerSpec {
    /// An HTTP POST to the trigger's webhook URL, signed with HMAC-SHA256.
    Webhook(WebhookTrigger),
    /// A named event emitted inside the server.
    Event(EventTrigger),
}

impl TriggerSpec {
    /// The agent or workflow it runs.
    #[must_use]
    pub fn target(&self) -> &str {
        match self {
            Self::Webhook(w) => &w.target,
            Self::Event(e) => &e.target,
        }
    }
}

/// `type: webhook`: a signed POST starts a run of `target`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WebhookTrigger {
    /// What the webhook is for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The agent or workflow to run.
    pub target: String,
    /// The HMAC-SHA256 key requests are signed with; write `${WEBHOOK_SECRET}` to keep it out
    /// of the file.
    pub secret: String,
    /// A JSON pointer (`/issue/title`) into the request body: that value (a string as is,
    /// anything else as JSON text) is the agent's message. Unset: the whole body as JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_pointer: Option<String>,
}

impl fmt::Debug for WebhookTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookTrigger")
            .field("description", &self.description)
            .field("target", &self.target)
            .field("secret", &"<redacted>")
            .field("message_pointer", &self.message_pointer)
            .finish()
    }
}

/// `type: event`: an event with this name starts a run of `target` with the event's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EventTrigger {
    /// What the trigger is for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The event name.
    pub event: String,
    /// The agent or workflow to run.
    pub target: String,
}

// ---------------------------------------------------------------------------------------------
// Server settings
// ---------------------------------------------------------------------------------------------

/// What a run started on a thread that already has a run in progress does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ThreadConcurrency {
    /// Refuse it (HTTP 409; the default).
    #[default]
    Reject,
    /// Queue it after the running one.
    Enqueue,
    /// Cancel the running one and start it.
    Interrupt,
}

/// How long the server keeps things.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionSettings {
    /// Delete finished runs after this many days (unset: keep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs_days: Option<u32>,
    /// Delete threads idle for this many days (unset: keep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_ttl_days: Option<u32>,
}

/// The `server:` section: how `agentkit serve` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerSettings {
    /// Listen address, e.g. `127.0.0.1:8080`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Store URL: `sqlite://path.db`, `postgres://...` or `memory` (unset: `storage.url`, else
    /// the embedded SQLite file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Retention.
    pub retention: RetentionSettings,
    /// A second run on a busy thread (default `reject`).
    pub thread_concurrency: ThreadConcurrency,
    /// Request rate limits (unset: none), answered with 429 and `Retry-After`.
    pub rate_limit: RateLimitSettings,
    /// Accept OIDC / JWT bearer tokens beside API keys (unset: API keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// The approval queue.
    pub approvals: ApprovalSettings,
    /// A policy (a name in `policies:`) per workspace (`org/workspace`): applied to every
    /// tool call made in that workspace — its agents' runs and its gateway calls — on top of
    /// the agent's `policy:` or `gateway.policy` (the most restrictive verdict wins).
    ///
    /// ```yaml
    /// server:
    ///   workspace_policies:
    ///     acme/prod: read-only
    /// ```
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub workspace_policies: BTreeMap<String, String>,
    /// The label whose version's `schedules:` are the live schedules of an agent or workflow
    /// that has it (unset: `prod`); until it has one, its `latest` version's are. Every
    /// process sharing a store must use the same label.
    ///
    /// ```yaml
    /// server:
    ///   schedules_label: live
    /// ```
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedules_label: Option<String>,
}

/// `server.approvals`: how long a tool call may wait for a human.
///
/// ```yaml
/// server:
///   approvals:
///     expire_after: 24h      # then the call is rejected and the model reads why
///     claim_for: 15m         # a claim keeps others from deciding for this long
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ApprovalSettings {
    /// Reject a pending approval this long after it was asked (unset: it waits forever).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<HumanDuration>,
    /// How long a claim lasts (default 15 minutes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_for: Option<HumanDuration>,
}

/// `server.jwt`: accept bearer tokens (JWTs) issued by an identity provider beside API keys.
/// The token's claims name the organisation, workspace and role it acts as; the workspace
/// must exist (`agentkit workspaces create`).
///
/// Where the verification keys come from (at most one of `jwks_url`, `public_key_file`,
/// `secret_env`; none: OIDC discovery at `{issuer}/.well-known/openid-configuration`):
///
/// ```yaml
/// server:
///   jwt:
///     issuer: https://login.example.com/
///     audience: agentkit
///     jwks_url: https://login.example.com/.well-known/jwks.json
///     claims: {org: org, workspace: workspace, role: agentkit_role}
///     default_role: viewer
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtSettings {
    /// The `iss` every token must carry (and, without a key source, where OIDC discovery
    /// starts).
    pub issuer: String,
    /// The `aud` every token must carry (one of them, when the token names several).
    pub audience: String,
    /// A JSON Web Key Set URL (refetched when a token names a key id it does not hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// A PEM public key file (RSA, EC or Ed25519).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<String>,
    /// The environment variable holding an HMAC secret (HS256/384/512 tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The algorithms accepted (default: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384 and EdDSA for public keys; HS256, HS384, HS512 for a secret).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<String>,
    /// Which claims name the organisation, workspace and role.
    #[serde(default)]
    pub claims: JwtClaimNames,
    /// The organisation of tokens without an organisation claim (default: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_org: Option<String>,
    /// The role of tokens without a role claim (unset: such tokens are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 60).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn default_leeway() -> u64 {
    60
}

/// The claim names of [`JwtSettings`]. A name with dots reads a nested claim
/// (`realm_access.role`); a role claim may hold one role or a list (the highest counts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtClaimNames {
    /// The organisation claim (default `org`).
    pub org: String,
    /// The workspace claim (default `workspace`; `org/workspace` is accepted too).
    pub workspace: String,
    /// The role claim (default `role`).
    pub role: String,
}

impl Default for JwtClaimNames {
    fn default() -> Self {
        Self {
            org: "org".into(),
            workspace: "workspace".into(),
            role: "role".into(),
        }
    }
}

impl JwtSettings {
    /// Tokens of `issuer` for `audience`, keys found by OIDC discovery.
    #[must_use]
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            public_key_file: None,
            secret_env: None,
            algorithms: Vec::new(),
            claims: JwtClaimNames::default(),
            default_org: None,
            default_role: None,
            leeway_seconds: default_leeway(),
        }
    }
}

/// `server.rate_limit`: how many API requests a caller may make (GCRA: a sustained rate and a
/// burst). A request over a limit is answered 429 with `Retry-After`.
///
/// ```yaml
/// server:
///   rate_limit:
///     per_key: {per_second: 20, burst: 40}
///     per_workspace: {per_second: 100}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitSettings {
    /// Per API key (the server's admin key counts as one key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_key: Option<Rate>,
    /// Per workspace, over all of its keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_workspace: Option<Rate>,
}

/// A request rate: `per_second` sustained, `burst` at once (default: `per_second`). Both at
/// least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: std::num::NonZeroU32,
    /// Requests allowed at once after a quiet period (default: `per_second`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<std::num::NonZeroU32>,
}

impl Rate {
    /// `per_second` sustained, bursts of `burst`.
    #[must_use]
    pub fn new(per_second: std::num::NonZeroU32, burst: std::num::NonZeroU32) -> Self {
        Self {
            per_second,
            burst: Some(burst),
        }
    }

    /// The burst: `burst`, or `per_second` when unset.
    #[must_use]
    pub fn burst(&self) -> std::num::NonZeroU32 {
        self.burst.unwrap_or(self.per_second)
    }
}

impl ServerSettings {
    /// Whether every setting is at its default.
    #[must_use]
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

type Fail = (KeyPath, String);

/// Whether `name` can name an agent, workflow, schedule or trigger: 1 to 64 of
/// `A-Z a-z 0-9 _ -` (names appear in URLs and MCP tool names).
///
/// ```
/// use agentkit_core::config::is_valid_name;
///
/// assert!(is_valid_name("billing-v2"));
/// assert!(!is_valid_name("billing agent"));
/// assert!(!is_valid_name(""));
/// ```
#[must_use]
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(feature = "config")]
fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    super::locate::closest(word, candidates)
}

#[cfg(not(feature = "config"))]
fn suggest<'a>(_word: &str, _candidates: &[&'a str]) -> Option<&'a str> {
    None
}

fn listing(names: &[&str]) -> String {
    if names.is_empty() {
        "none are configured".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// "no X named `y`; did you mean `z`?" or "...; configured: `a`, `b`".
fn unknown(what: &str, name: &str, candidates: &[&str]) -> String {
    match suggest(name, candidates) {
        Some(best) => format!("no {what} named `{name}`; did you mean `{best}`?"),
        None => format!(
            "no {what} named `{name}`; configured: {}",
            listing(candidates)
        ),
    }
}

fn check_seconds(p: KeyPath, value: Option<f64>) -> Result<(), Fail> {
    match value {
        Some(v) => seconds(v).map(|_| ()).map_err(|m| (p, m)),
        None => Ok(()),
    }
}

fn check_spend(p: KeyPath, value: Option<f64>) -> Result<(), Fail> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err((
            p,
            format!(
                "expected an amount of US dollars greater than 0, found {v}; leave the key out \
                 for no limit"
            ),
        )),
        _ => Ok(()),
    }
}

fn at_least_one<T: PartialOrd + From<u8> + fmt::Display + Copy>(
    p: KeyPath,
    value: Option<T>,
    what: &str,
) -> Result<(), Fail> {
    match value {
        Some(v) if v < T::from(1u8) => Err((p, format!("expected at least 1 {what}, found {v}"))),
        _ => Ok(()),
    }
}

/// [`ScheduleSpec::check`] of the schedule at `p`.
fn check_schedule(p: &KeyPath, s: &ScheduleSpec) -> Result<(), Fail> {
    s.check().map_err(|(key, message)| {
        (
            if key.is_empty() {
                p.clone()
            } else {
                p.key(key)
            },
            message,
        )
    })
}

/// The checks of the `schedules:` of agent or workflow `owner` (`p`: the owner's key): valid
/// names, no `target` but the owner itself, and each trigger ([`check_schedule`]).
fn check_own_schedules(
    p: &KeyPath,
    owner: &str,
    schedules: &BTreeMap<String, ScheduleSpec>,
) -> Result<(), Fail> {
    for (name, s) in schedules {
        let sp = p.key("schedules").key(name.as_str());
        if !is_valid_name(name) {
            return Err((
                sp,
                format!(
                    "invalid name `{name}`: use 1 to {MAX_NAME_LEN} letters, digits, `_` or `-` \
                     (names appear in URLs)"
                ),
            ));
        }
        if !s.target.is_empty() && s.target != owner {
            return Err((
                sp.key("target"),
                format!(
                    "a schedule of `{owner}` runs `{owner}`; leave `target` out, or declare a \
                     schedule of `{}` under the top-level `schedules:`",
                    s.target
                ),
            ));
        }
        check_schedule(&sp, s)?;
    }
    Ok(())
}

fn check_names<'a>(section: &str, names: impl Iterator<Item = &'a String>) -> Result<(), Fail> {
    for name in names {
        if !is_valid_name(name) {
            return Err((
                KeyPath::keys([section, name.as_str()]),
                format!(
                    "invalid name `{name}`: use 1 to {MAX_NAME_LEN} letters, digits, `_` or `-` \
                     (names appear in URLs and MCP tool names)"
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Checks `agents`, `workflows`, `schedules`, `triggers` and `server` (part of
    /// [`Config::validate`]).
    pub(crate) fn check_specs(&self) -> Result<(), Fail> {
        if let Some(b) = &self.budgets.workspace {
            check_spend(
                KeyPath::keys(["budgets", "workspace", "max_spend_usd"]),
                Some(b.max_spend_usd),
            )?;
        }
        for (ws, b) in &self.budgets.workspaces {
            let p = KeyPath::keys(["budgets", "workspaces", ws.as_str()]);
            if ws.split('/').count() != 2 || ws.split('/').any(str::is_empty) {
                return Err((
                    p,
                    format!(
                        "`{ws}` is not a workspace; name it `org/workspace` \
                         (e.g. `default/default`)"
                    ),
                ));
            }
            check_spend(p.key("max_spend_usd"), Some(b.max_spend_usd))?;
        }
        if let Some(e) = self.budgets.call_estimate_usd
            && !(e.is_finite() && e >= 0.0)
        {
            return Err((
                KeyPath::keys(["budgets", "call_estimate_usd"]),
                format!("expected a cost in US dollars of at least 0, found {e}"),
            ));
        }
        check_names("agents", self.agents.keys())?;
        check_names("workflows", self.workflows.keys())?;
        check_names("schedules", self.schedules.keys())?;
        check_names("triggers", self.triggers.keys())?;
        check_names("policies", self.policies.keys())?;
        for (name, policy) in &self.policies {
            check_policy(&KeyPath::keys(["policies", name.as_str()]), policy)?;
        }
        for name in self.workflows.keys() {
            if self.agents.contains_key(name) {
                return Err((
                    KeyPath::keys(["workflows", name.as_str()]),
                    format!(
                        "`{name}` is both an agent and a workflow; agents and workflows share \
                         one namespace, rename one"
                    ),
                ));
            }
        }
        let targets: Vec<&str> = self
            .agents
            .keys()
            .chain(self.workflows.keys())
            .map(String::as_str)
            .collect();
        let servers: Vec<&str> = self.mcp.servers.keys().map(String::as_str).collect();
        let roles: Vec<&str> = self.mcp.roles.keys().map(String::as_str).collect();
        let target_check = |p: KeyPath, name: &str| -> Result<(), Fail> {
            if self.agents.contains_key(name) || self.workflows.contains_key(name) {
                Ok(())
            } else {
                Err((p, unknown("agent or workflow", name, &targets)))
            }
        };

        for (name, agent) in &self.agents {
            let p = KeyPath::keys(["agents", name.as_str()]);
            if let Some(model) = &agent.model
                && model.trim().is_empty()
            {
                return Err((
                    p.key("model"),
                    "the model is empty; name one (`openai:gpt-4o-mini`) or leave the key out \
                     for the provider's default_model"
                        .to_owned(),
                ));
            }
            if let (Some(declared), (Some(prefixed), _)) =
                (agent.provider, agent.provider_and_model())
                && declared != prefixed
            {
                return Err((
                    p.key("provider"),
                    format!(
                        "`provider: {declared}` contradicts the model `{}`; drop one of them",
                        agent.model.as_deref().unwrap_or_default()
                    ),
                ));
            }
            for (i, server) in agent.servers.iter().enumerate() {
                if !self.mcp.servers.contains_key(server) {
                    return Err((
                        p.key("servers").index(i),
                        unknown("MCP server", server, &servers),
                    ));
                }
            }
            for (i, role) in agent.roles.iter().enumerate() {
                if !self.mcp.roles.contains_key(role) {
                    return Err((p.key("roles").index(i), unknown("role", role, &roles)));
                }
            }
            for (list, globs) in [("allow", &agent.tools.allow), ("deny", &agent.tools.deny)] {
                for (i, g) in globs.iter().enumerate() {
                    if g.trim().is_empty() {
                        return Err((
                            p.key("tools").key(list).index(i),
                            "empty tool glob; write a tool name or a pattern like `github__*`"
                                .to_owned(),
                        ));
                    }
                }
            }
            match &agent.policy {
                Some(super::PolicyRef::Named(policy)) if !self.policies.contains_key(policy) => {
                    let names: Vec<&str> = self.policies.keys().map(String::as_str).collect();
                    return Err((p.key("policy"), unknown("policy", policy, &names)));
                }
                Some(super::PolicyRef::Inline(policy)) => check_policy(&p.key("policy"), policy)?,
                _ => {}
            }
            let l = &agent.limits;
            let lp = p.key("limits");
            check_seconds(lp.key("timeout_seconds"), l.timeout_seconds)?;
            check_spend(lp.key("max_spend_usd"), l.max_spend_usd)?;
            if let Some(b) = &l.budget {
                check_spend(lp.key("budget").key("max_spend_usd"), Some(b.max_spend_usd))?;
            }
            at_least_one(lp.key("max_iterations"), l.max_iterations, "iteration")?;
            check_concurrency(lp.key("concurrency"), l.concurrency)?;
            check_own_schedules(&p, name, &agent.schedules)?;
            if agent.history_messages == Some(0) {
                return Err((
                    p.key("history_messages"),
                    "expected at least 1 message; set `use_history: false` on a request to \
                     ignore history, or leave the key out for the default window"
                        .to_owned(),
                ));
            }
        }

        for (name, wf) in &self.workflows {
            let p = KeyPath::keys(["workflows", name.as_str()]);
            for (key, member) in wf.references() {
                target_check(p.key_path(&key), member)?;
            }
            check_own_schedules(&p, name, wf.schedules())?;
            let lp = p.key("limits");
            let l = wf.limits();
            check_seconds(lp.key("timeout_seconds"), l.timeout_seconds)?;
            check_spend(lp.key("max_spend_usd"), l.max_spend_usd)?;
            check_concurrency(lp.key("concurrency"), l.concurrency)?;
            let (list_key, list) = match wf {
                WorkflowSpec::Chain(s) => ("steps", &s.steps),
                WorkflowSpec::Parallel(s) => ("fan_out", &s.fan_out),
                WorkflowSpec::Router(s) => ("routes", &s.routes),
                WorkflowSpec::Orchestrator(s) => ("workers", &s.workers),
                WorkflowSpec::Swarm(s) => ("members", &s.members),
                WorkflowSpec::EvaluatorOptimizer(_) => ("", &Vec::new()),
            };
            if !list_key.is_empty() && list.is_empty() {
                return Err((
                    p.key(list_key),
                    format!(
                        "a {} needs at least one name in `{list_key}`",
                        wf.kind().replace('_', "-")
                    ),
                ));
            }
            match wf {
                WorkflowSpec::EvaluatorOptimizer(s) => {
                    for (key, v) in [("optimizer", &s.optimizer), ("evaluator", &s.evaluator)] {
                        if v.is_empty() {
                            return Err((
                                p.key(key),
                                format!("an evaluator-optimizer needs an `{key}`"),
                            ));
                        }
                    }
                }
                WorkflowSpec::Orchestrator(s) => {
                    if s.planner.is_empty() {
                        return Err((p.key("planner"), "an orchestrator needs a `planner`".into()));
                    }
                    at_least_one(p.key("max_iterations"), s.max_iterations, "planning round")?;
                    no_duplicates(&p.key("workers"), &s.workers)?;
                }
                WorkflowSpec::Router(s) => {
                    at_least_one(p.key("top_k"), s.top_k, "route")?;
                    no_duplicates(&p.key("routes"), &s.routes)?;
                }
                WorkflowSpec::Parallel(s) => {
                    check_concurrency(p.key("max_concurrency"), s.max_concurrency)?;
                }
                WorkflowSpec::Swarm(s) => {
                    no_duplicates(&p.key("members"), &s.members)?;
                    let members: Vec<&str> = s.members.iter().map(String::as_str).collect();
                    for (i, m) in s.members.iter().enumerate() {
                        if !self.agents.contains_key(m) {
                            return Err((
                                p.key("members").index(i),
                                format!(
                                    "swarm members must be agents, and `{m}` is a workflow \
                                     (a swarm drives its members' model turns itself)"
                                ),
                            ));
                        }
                    }
                    if let Some(start) = &s.start
                        && !members.contains(&start.as_str())
                    {
                        return Err((
                            p.key("start"),
                            unknown("member of this swarm", start, &members),
                        ));
                    }
                    for (from, tos) in &s.handoffs {
                        let hp = p.key("handoffs").key(from.as_str());
                        if !members.contains(&from.as_str()) {
                            return Err((hp, unknown("member of this swarm", from, &members)));
                        }
                        for (i, to) in tos.iter().enumerate() {
                            if !members.contains(&to.as_str()) {
                                return Err((
                                    hp.index(i),
                                    unknown("member of this swarm", to, &members),
                                ));
                            }
                        }
                    }
                }
                WorkflowSpec::Chain(_) => {}
            }
        }
        self.check_cycles()?;

        for (name, s) in &self.schedules {
            let p = KeyPath::keys(["schedules", name.as_str()]);
            if s.target.is_empty() {
                return Err((
                    p.key("target"),
                    "a schedule needs a `target`: the agent or workflow it runs".into(),
                ));
            }
            target_check(p.key("target"), &s.target)?;
            check_schedule(&p, s)?;
        }

        for (name, t) in &self.triggers {
            let p = KeyPath::keys(["triggers", name.as_str()]);
            if t.target().is_empty() {
                return Err((
                    p.key("target"),
                    "a trigger needs a `target`: the agent or workflow it runs".into(),
                ));
            }
            target_check(p.key("target"), t.target())?;
            match t {
                TriggerSpec::Webhook(w) => {
                    if w.secret.trim().is_empty() {
                        return Err((
                            p.key("secret"),
                            "a webhook needs a `secret` (the HMAC-SHA256 key requests are \
                             signed with); write `secret: ${WEBHOOK_SECRET}` to read it from \
                             the environment"
                                .into(),
                        ));
                    }
                    if let Some(ptr) = &w.message_pointer
                        && !(ptr.is_empty() || ptr.starts_with('/'))
                    {
                        return Err((
                            p.key("message_pointer"),
                            format!(
                                "`{ptr}` is not a JSON pointer; write `/{ptr}` (a pointer starts \
                                 with `/`, e.g. `/issue/title`)"
                            ),
                        ));
                    }
                }
                TriggerSpec::Event(e) => {
                    if e.event.trim().is_empty() {
                        return Err((
                            p.key("event"),
                            "an event trigger needs the `event` name it listens for".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Fails when a workflow contains itself, directly or through other workflows.
    fn check_cycles(&self) -> Result<(), Fail> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit<'a>(
            config: &'a Config,
            name: &'a str,
            marks: &mut BTreeMap<&'a str, Mark>,
            stack: &mut Vec<(&'a str, String)>,
        ) -> Result<(), Fail> {
            let Some(wf) = config.workflows.get(name) else {
                return Ok(());
            };
            match marks.get(name) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => {
                    let start = stack.iter().position(|(n, _)| *n == name).unwrap_or(0);
                    let mut path: Vec<&str> = stack[start..].iter().map(|(n, _)| *n).collect();
                    path.push(name);
                    let (owner, key) = stack.last().cloned().unwrap_or((name, String::new()));
                    return Err((
                        KeyPath::keys(["workflows", owner]).key_path(&key),
                        format!(
                            "workflow cycle: {}; a workflow cannot contain itself",
                            path.join(" → ")
                        ),
                    ));
                }
                None => {}
            }
            marks.insert(name, Mark::Visiting);
            for (key, member) in wf.references() {
                stack.push((name, key));
                visit(config, member, marks, stack)?;
                stack.pop();
            }
            marks.insert(name, Mark::Done);
            Ok(())
        }
        let mut marks = BTreeMap::new();
        for name in self.workflows.keys() {
            visit(self, name, &mut marks, &mut Vec::new())?;
        }
        Ok(())
    }
}

/// What a policy can be checked for without compiling its globs.
fn check_policy(p: &KeyPath, policy: &super::PolicySpec) -> Result<(), Fail> {
    let empty = |p: KeyPath| -> Fail {
        (
            p,
            "empty glob; write a tool name or a pattern like `github__*`".to_owned(),
        )
    };
    for (list, globs) in [("allow", &policy.tools.allow), ("deny", &policy.tools.deny)] {
        if let Some(i) = globs.iter().position(|g| g.trim().is_empty()) {
            return Err(empty(p.key("tools").key(list).index(i)));
        }
    }
    if let Some(i) = policy
        .require_approval
        .iter()
        .position(|g| g.trim().is_empty())
    {
        return Err(empty(p.key("require_approval").index(i)));
    }
    if policy.rate_limits.keys().any(|g| g.trim().is_empty()) {
        return Err(empty(p.key("rate_limits")));
    }
    for (tools, rules) in &policy.arguments {
        if tools.trim().is_empty() {
            return Err(empty(p.key("arguments")));
        }
        for (arg, rule) in rules {
            let ap = p.key("arguments").key(tools.as_str()).key(arg.as_str());
            if arg.trim().is_empty() {
                return Err((ap, "empty argument name".to_owned()));
            }
            if rule.allow.is_empty() && rule.deny.is_empty() && rule.one_of.is_empty() {
                return Err((
                    ap,
                    format!(
                        "the rule on argument `{arg}` is empty; give it `allow` or `deny` globs, \
                         or an `enum` of allowed values"
                    ),
                ));
            }
        }
    }
    for (i, chain) in policy.chains.iter().enumerate() {
        let cp = p.key("chains").index(i);
        if chain.pattern.len() < 2 {
            return Err((
                cp.key("pattern"),
                "a chain needs at least two tool globs: earlier calls, then the call being made \
                 (e.g. [\"*__read_*\", \"slack__send_message\"]); for a single tool use \
                 `tools.deny` or `require_approval`"
                    .to_owned(),
            ));
        }
        if let Some(j) = chain.pattern.iter().position(|g| g.trim().is_empty()) {
            return Err(empty(cp.key("pattern").index(j)));
        }
    }
    Ok(())
}

fn check_concurrency(p: KeyPath, value: Option<usize>) -> Result<(), Fail> {
    if value == Some(0) {
        return Err((
            p,
            "expected at least 1 concurrent run; leave the key out for no limit".to_owned(),
        ));
    }
    Ok(())
}

fn no_duplicates(p: &KeyPath, names: &[String]) -> Result<(), Fail> {
    let mut seen = BTreeSet::new();
    for (i, n) in names.iter().enumerate() {
        if !seen.insert(n.as_str()) {
            return Err((p.index(i), format!("`{n}` is listed twice")));
        }
    }
    Ok(())
}

impl KeyPath {
    /// This path extended by a relative key like `routes[1]` or `fan_in`.
    pub(crate) fn key_path(&self, rel: &str) -> KeyPath {
        let mut p = self.clone();
        for part in rel.split('.').filter(|s| !s.is_empty()) {
            let (key, rest) = part.split_once('[').unwrap_or((part, ""));
            if !key.is_empty() {
                p = p.key(key);
            }
            for idx in rest.split('[') {
                if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                    p = p.index(i);
                }
            }
        }
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Add or replace an agent.
    ///
    /// ```
    /// use agentkit_core::config::{AgentSpec, Config, ScheduleSpec, WorkflowSpec};
    ///
    /// let config = Config::new()
    ///     .with_agent("outline", AgentSpec::new("scripted", "Outline the topic."))
    ///     .with_agent("writer", AgentSpec::new("scripted", "Write from the outline."))
    ///     .with_workflow("draft", WorkflowSpec::chain(["outline", "writer"]))
    ///     .with_schedule("nightly", ScheduleSpec::cron("draft", "0 3 * * *").with_timezone("Europe/Lisbon"));
    /// config.validate()?;
    ///
    /// let bad = config.clone().with_workflow("oops", WorkflowSpec::chain(["outlin"]));
    /// assert_eq!(
    ///     bad.validate().unwrap_err().to_string(),
    ///     "config error at `workflows.oops.steps[0]`: no agent or workflow named `outlin`; did you mean `outline`?"
    /// );
    /// # Ok::<_, agentkit_core::Error>(())
    /// ```
    #[must_use]
    pub fn with_agent(mut self, name: impl Into<String>, agent: AgentSpec) -> Self {
        self.agents.insert(name.into(), agent);
        self
    }

    /// Add or replace a workflow.
    #[must_use]
    pub fn with_workflow(mut self, name: impl Into<String>, workflow: WorkflowSpec) -> Self {
        self.workflows.insert(name.into(), workflow);
        self
    }

    /// Add or replace a schedule.
    #[must_use]
    pub fn with_schedule(mut self, name: impl Into<String>, schedule: ScheduleSpec) -> Self {
        self.schedules.insert(name.into(), schedule);
        self
    }

    /// Add or replace a trigger.
    #[must_use]
    pub fn with_trigger(mut self, name: impl Into<String>, trigger: TriggerSpec) -> Self {
        self.triggers.insert(name.into(), trigger);
        self
    }

    /// Add or replace a named policy (`policies:`).
    #[must_use]
    pub fn with_policy(mut self, name: impl Into<String>, policy: super::PolicySpec) -> Self {
        self.policies.insert(name.into(), policy);
        self
    }

    /// Set the `server:` settings.
    #[must_use]
    pub fn with_server_settings(mut self, server: ServerSettings) -> Self {
        self.server = server;
        self
    }
}

fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

impl AgentSpec {
    /// An agent on `model` (`openai:gpt-4o-mini`, `anthropic:claude-sonnet-4-5`, `scripted`)
    /// with this instruction.
    #[must_use]
    pub fn new(model: impl Into<String>, instructions: impl Into<String>) -> Self {
        Self {
            model: Some(model.into()),
            instructions: instructions.into(),
            ..Self::default()
        }
    }

    /// Describe it.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Set the provider (for a model id without a `provider:` prefix).
    #[must_use]
    pub fn with_provider(mut self, provider: ProviderKind) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Give it the tools of an MCP server from `mcp.servers`.
    #[must_use]
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.servers.push(server.into());
        self
    }

    /// Give it the servers of a role from `mcp.roles`.
    #[must_use]
    pub fn with_role(mut self, role: impl Into<String>) -> Self {
        self.roles.push(role.into());
        self
    }

    /// Offer only tools matching these globs.
    #[must_use]
    pub fn with_allowed_tools<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools.allow = strings(globs);
        self
    }

    /// Never offer tools matching these globs.
    #[must_use]
    pub fn with_denied_tools<I, S>(mut self, globs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools.deny = strings(globs);
        self
    }

    /// Set the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: AgentLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Pass every tool call through this policy (a name from `policies:` or an inline one).
    #[must_use]
    pub fn with_policy(mut self, policy: super::PolicyRef) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Add or replace a schedule of the agent (its `target` is the agent: leave it empty).
    ///
    /// ```
    /// use agentkit_core::config::{AgentSpec, ScheduleSpec};
    ///
    /// let a = AgentSpec::new("scripted", "Summarise the day.")
    ///     .with_schedule("nightly", ScheduleSpec::cron("", "0 3 * * *").with_timezone("Europe/Lisbon"));
    /// assert_eq!(a.schedules["nightly"].cron.as_deref(), Some("0 3 * * *"));
    /// ```
    #[must_use]
    pub fn with_schedule(mut self, name: impl Into<String>, schedule: ScheduleSpec) -> Self {
        self.schedules.insert(name.into(), schedule);
        self
    }

    /// Keep at most `n` messages of a thread.
    #[must_use]
    pub fn with_history_messages(mut self, n: usize) -> Self {
        self.history_messages = Some(n);
        self
    }

    /// Offer the tool that asks a person (see [`human_input`](Self::human_input)).
    #[must_use]
    pub fn with_human_input(mut self, enabled: bool) -> Self {
        self.human_input = enabled;
        self
    }
}

impl AgentLimits {
    /// No limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Give up a run after this many seconds.
    #[must_use]
    pub fn with_timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// At most this many tool rounds per request.
    #[must_use]
    pub fn with_max_iterations(mut self, n: u32) -> Self {
        self.max_iterations = Some(n);
        self
    }

    /// Stop a run that has spent this many US dollars.
    #[must_use]
    pub fn with_max_spend_usd(mut self, usd: f64) -> Self {
        self.max_spend_usd = Some(usd);
        self
    }

    /// At most `rate` run starts of the agent per second in each workspace.
    #[must_use]
    pub fn with_rate_limit(mut self, rate: Rate) -> Self {
        self.rate_limit = Some(rate);
        self
    }

    /// What the agent's runs may spend per period, in each workspace.
    #[must_use]
    pub fn with_budget(mut self, budget: super::PeriodBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// At most this many runs at once.
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }
}

impl WorkflowLimits {
    /// No limits.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Give up a run after this many seconds.
    #[must_use]
    pub fn with_timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// Stop a run that has spent this many US dollars.
    #[must_use]
    pub fn with_max_spend_usd(mut self, usd: f64) -> Self {
        self.max_spend_usd = Some(usd);
        self
    }

    /// At most this many runs at once.
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }
}

impl WorkflowSpec {
    /// A chain of these steps.
    #[must_use]
    pub fn chain<I, S>(steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Chain(ChainSpec {
            steps: strings(steps),
            ..ChainSpec::default()
        })
    }

    /// These branches in parallel (add a fan-in with [`with_fan_in`](Self::with_fan_in)).
    #[must_use]
    pub fn parallel<I, S>(fan_out: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Parallel(ParallelSpec {
            fan_out: strings(fan_out),
            ..ParallelSpec::default()
        })
    }

    /// A router over these routes (set the routing agent with
    /// [`with_router`](Self::with_router); without one it routes by word similarity).
    #[must_use]
    pub fn router<I, S>(routes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Router(RouterSpec {
            routes: strings(routes),
            ..RouterSpec::default()
        })
    }

    /// `optimizer` answers, `evaluator` rates.
    #[must_use]
    pub fn evaluator_optimizer(optimizer: impl Into<String>, evaluator: impl Into<String>) -> Self {
        Self::EvaluatorOptimizer(EvaluatorOptimizerSpec {
            optimizer: optimizer.into(),
            evaluator: evaluator.into(),
            ..EvaluatorOptimizerSpec::default()
        })
    }

    /// `planner` plans tasks for `workers`.
    #[must_use]
    pub fn orchestrator<I, S>(planner: impl Into<String>, workers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Orchestrator(OrchestratorSpec {
            planner: planner.into(),
            workers: strings(workers),
            ..OrchestratorSpec::default()
        })
    }

    /// A swarm of these agents (the first starts; every member may hand off to every other).
    #[must_use]
    pub fn swarm<I, S>(members: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Swarm(SwarmSpec {
            members: strings(members),
            ..SwarmSpec::default()
        })
    }

    /// Describe it.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        let d = description.into();
        match &mut self {
            Self::Chain(s) => s.description = d,
            Self::Parallel(s) => s.description = d,
            Self::Router(s) => s.description = d,
            Self::EvaluatorOptimizer(s) => s.description = d,
            Self::Orchestrator(s) => s.description = d,
            Self::Swarm(s) => s.description = d,
        }
        self
    }

    /// Set the run limits.
    #[must_use]
    pub fn with_limits(mut self, limits: WorkflowLimits) -> Self {
        match &mut self {
            Self::Chain(s) => s.limits = limits,
            Self::Parallel(s) => s.limits = limits,
            Self::Router(s) => s.limits = limits,
            Self::EvaluatorOptimizer(s) => s.limits = limits,
            Self::Orchestrator(s) => s.limits = limits,
            Self::Swarm(s) => s.limits = limits,
        }
        self
    }

    /// A parallel workflow's fan-in (ignored by other patterns).
    #[must_use]
    pub fn with_fan_in(mut self, agent: impl Into<String>) -> Self {
        if let Self::Parallel(s) = &mut self {
            s.fan_in = Some(agent.into());
        }
        self
    }

    /// A router's routing agent (ignored by other patterns).
    #[must_use]
    pub fn with_router(mut self, agent: impl Into<String>) -> Self {
        if let Self::Router(s) = &mut self {
            s.router = Some(agent.into());
        }
        self
    }

    /// An orchestrator's synthesizer (ignored by other patterns).
    #[must_use]
    pub fn with_synthesizer(mut self, agent: impl Into<String>) -> Self {
        if let Self::Orchestrator(s) = &mut self {
            s.synthesizer = Some(agent.into());
        }
        self
    }

    /// A swarm's first agent (ignored by other patterns).
    #[must_use]
    pub fn with_start(mut self, agent: impl Into<String>) -> Self {
        if let Self::Swarm(s) = &mut self {
            s.start = Some(agent.into());
        }
        self
    }

    /// Let a swarm member hand off to these members (ignored by other patterns).
    #[must_use]
    pub fn with_handoffs<I, S>(mut self, from: impl Into<String>, to: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if let Self::Swarm(s) = &mut self {
            s.handoffs.insert(from.into(), strings(to));
        }
        self
    }
}

impl ScheduleSpec {
    fn of(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            ..Self::default()
        }
    }

    /// Run `target` on a cron expression (in UTC unless [`with_timezone`](Self::with_timezone)).
    #[must_use]
    pub fn cron(target: impl Into<String>, expression: impl Into<String>) -> Self {
        Self {
            cron: Some(expression.into()),
            ..Self::of(target)
        }
    }

    /// Run `target` every `interval`.
    #[must_use]
    pub fn every(target: impl Into<String>, interval: Duration) -> Self {
        Self {
            every: Some(HumanDuration(interval)),
            ..Self::of(target)
        }
    }

    /// Run `target` once at an RFC 3339 time.
    #[must_use]
    pub fn at(target: impl Into<String>, rfc3339: impl Into<String>) -> Self {
        Self {
            at: Some(rfc3339.into()),
            ..Self::of(target)
        }
    }

    /// Read the cron expression in this IANA time zone.
    #[must_use]
    pub fn with_timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = Some(tz.into());
        self
    }

    /// Give each run this input.
    #[must_use]
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = Some(input);
        self
    }

    /// Set the overlap policy.
    #[must_use]
    pub fn with_overlap(mut self, overlap: OverlapPolicy) -> Self {
        self.overlap = overlap;
        self
    }

    /// Set the catch-up policy.
    #[must_use]
    pub fn with_catch_up(mut self, catch_up: CatchUpPolicy) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Describe it.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

impl TriggerSpec {
    /// A webhook running `target`, its requests signed with `secret`.
    #[must_use]
    pub fn webhook(target: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::Webhook(WebhookTrigger {
            target: target.into(),
            secret: secret.into(),
            ..WebhookTrigger::default()
        })
    }

    /// Run `target` when the event `event` is emitted.
    #[must_use]
    pub fn event(event: impl Into<String>, target: impl Into<String>) -> Self {
        Self::Event(EventTrigger {
            event: event.into(),
            target: target.into(),
            ..EventTrigger::default()
        })
    }

    /// A webhook's message pointer (ignored by event triggers).
    #[must_use]
    pub fn with_message_pointer(mut self, pointer: impl Into<String>) -> Self {
        if let Self::Webhook(w) = &mut self {
            w.message_pointer = Some(pointer.into());
        }
        self
    }
}

impl ServerSettings {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Listen on this address.
    #[must_use]
    pub fn with_bind(mut self, bind: impl Into<String>) -> Self {
        self.bind = Some(bind.into());
        self
    }

    /// Use this store URL.
    #[must_use]
    pub fn with_database(mut self, url: impl Into<String>) -> Self {
        self.database = Some(url.into());
        self
    }

    /// Set what a second run on a busy thread does.
    #[must_use]
    pub fn with_thread_concurrency(mut self, policy: ThreadConcurrency) -> Self {
        self.thread_concurrency = policy;
        self
    }
}

#[cfg(all(test, feature = "config"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    const BASE: &str = "\
mcp:
  servers:
    stripe: {command: stripe-mcp}
    docs: {url: http://127.0.0.1:9/mcp}
  roles:
    support: [stripe, docs]
agents:
  billing:
    model: openai:gpt-4o-mini
    instructions: You answer billing questions.
    servers: [stripe]
  tech:
    model: scripted
    instructions: You answer technical questions.
    roles: [support]
";

    fn load(extra: &str) -> crate::Result<Config> {
        let text = format!("{BASE}{extra}");
        Config::from_yaml_str_with_env(&text, Some(Path::new("agentkit.yaml")), &|name| {
            (name == "HOOK_SECRET").then(|| "s3cret".to_owned())
        })
    }

    fn err(extra: &str) -> String {
        load(extra).unwrap_err().to_string()
    }

    #[test]
    fn a_full_file_parses_and_round_trips() {
        let config = load(
            "\
workflows:
  desk:
    type: router
    description: Front desk
    routes: [billing, tech]
    router: tech
    top_k: 2
    limits: {timeout_seconds: 60, max_spend_usd: 1.5, concurrency: 2}
  draft: {type: chain, steps: [billing, tech], input: transcript}
  fan: {type: parallel, fan_out: [billing, desk], fan_in: tech, on_failure: continue}
  polish: {type: evaluator_optimizer, optimizer: tech, evaluator: tech, min_rating: excellent, max_refinements: 2}
  plan: {type: orchestrator, planner: tech, workers: [billing, draft], mode: iterative}
  team: {type: swarm, members: [billing, tech], start: tech, handoffs: {tech: [billing]}}
schedules:
  nightly: {target: draft, cron: '0 3 * * *', timezone: Europe/Lisbon, overlap: buffer_one, catch_up: {within: 1h}}
  poll: {target: billing, every: 15m, input: check the queue}
  once: {target: desk, at: '2030-01-01T09:00:00Z'}
triggers:
  github: {type: webhook, target: desk, secret: '${HOOK_SECRET}', message_pointer: /issue/title}
  signup: {type: event, event: user.created, target: billing}
server:
  bind: 127.0.0.1:8080
  retention: {runs_days: 30}
  thread_concurrency: enqueue
",
        )
        .unwrap();
        assert_eq!(config.agents.len(), 2);
        assert_eq!(config.workflows["desk"].kind(), "router");
        let nightly = &config.schedules["nightly"];
        assert_eq!(nightly.overlap, OverlapPolicy::BufferOne);
        assert_eq!(
            nightly.catch_up,
            CatchUpPolicy::Within(HumanDuration(Duration::from_secs(3600)))
        );
        assert_eq!(
            config.schedules["poll"].every,
            Some(HumanDuration(Duration::from_secs(900)))
        );
        assert_eq!(
            config.schedules["poll"].input_or_default("poll"),
            Value::String("check the queue".into())
        );
        assert_eq!(
            config.schedules["once"].input_or_default("once"),
            serde_json::json!({"message": "Scheduled run `once`."})
        );
        let TriggerSpec::Webhook(hook) = &config.triggers["github"] else {
            panic!("not a webhook")
        };
        assert_eq!(hook.secret, "s3cret");
        assert!(!format!("{hook:?}").contains("s3cret"));
        assert_eq!(config.server.thread_concurrency, ThreadConcurrency::Enqueue);

        let json = serde_json::to_value(&config).unwrap();
        let back: Config = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn an_agent_may_ask_a_person_and_says_so_only_when_it_does() {
        let text = "agents:\n  asker: {model: scripted, instructions: Ask., human_input: true}\n";
        let config = Config::from_yaml_str_with_env(text, None, &|_| None).unwrap();
        assert!(config.agents["asker"].human_input);
        let json = serde_json::to_value(&config.agents["asker"]).unwrap();
        assert_eq!(json["human_input"], true);
        // Off (the default) is not written, so specs written before have the same form.
        let plain = AgentSpec::new("scripted", "Answer.");
        assert!(!plain.human_input);
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("human_input").is_none(), "{json}");
        assert!(plain.with_human_input(true).human_input);
    }

    #[test]
    fn otel_settings_are_read_and_bad_values_are_located() {
        let config = load(
            "otel:\n  enabled: true\n  endpoint: http://localhost:4318\n  service_name: api\n  sample_ratio: 0.25\n  headers: {authorization: Bearer t}\n",
        )
        .unwrap();
        assert!(config.otel.enabled);
        assert_eq!(
            config.otel.endpoint.as_deref(),
            Some("http://localhost:4318")
        );
        assert_eq!(config.otel.sample_ratio, Some(0.25));
        assert_eq!(config.otel.headers["authorization"], "Bearer t");
        let e = err("otel:\n  sample_ratio: 1.5\n");
        assert!(
            e.contains("otel.sample_ratio") && e.contains("from 0 to 1"),
            "{e}"
        );
        let e = err("otel:\n  endpoint: localhost:4318\n");
        assert!(
            e.contains("otel.endpoint") && e.contains("http://localhost:4318"),
            "{e}"
        );
        let e = err("otel:\n  headers: {\"bad name\": x}\n");
        assert!(
            e.contains("otel.headers") && e.contains("header name"),
            "{e}"
        );
        let e = err("otel:\n  sampling: 0.5\n");
        assert!(e.contains("sampling"), "{e}");
    }

    #[test]
    fn rate_limits_are_read_and_zero_is_refused_where_it_is() {
        let config = load(
            "server:\n  rate_limit:\n    per_key: {per_second: 20, burst: 40}\n    per_workspace: {per_second: 100}\n",
        )
        .unwrap();
        let limits = &config.server.rate_limit;
        let per_key = limits.per_key.unwrap();
        assert_eq!((per_key.per_second.get(), per_key.burst().get()), (20, 40));
        let per_ws = limits.per_workspace.unwrap();
        assert_eq!((per_ws.per_second.get(), per_ws.burst().get()), (100, 100));
        let e = err("server:\n  rate_limit:\n    per_key: {per_second: 0}\n");
        assert!(
            e.contains("server.rate_limit.per_key.per_second") && e.contains("nonzero"),
            "{e}"
        );
        let e = err("server:\n  rate_limit:\n    per_user: {per_second: 1}\n");
        assert!(e.contains("per_user"), "{e}");
    }

    #[test]
    fn budgets_are_read_and_bad_ones_are_located() {
        use super::super::{BudgetPeriod, PeriodBudget};
        let parse = |text: &str| {
            Config::from_yaml_str_with_env(text, Some(Path::new("agentkit.yaml")), &|_| None)
        };
        let config = parse(
            "budgets:\n  workspace: {max_spend_usd: 20, period: day}\n  workspaces:\n    acme/prod: {max_spend_usd: 500, period: month}\nagents:\n  writer:\n    model: scripted\n    limits:\n      budget: {max_spend_usd: 5, period: 6h}\n",
        )
        .unwrap();
        assert_eq!(
            config.budgets.for_workspace("acme/prod"),
            Some(PeriodBudget::new(500.0, BudgetPeriod::Month))
        );
        assert_eq!(
            config.budgets.for_workspace("acme/dev"),
            Some(PeriodBudget::new(20.0, BudgetPeriod::Day))
        );
        let b = config.agents["writer"].limits.budget.unwrap();
        assert_eq!(
            (b.max_spend_usd, b.period.to_string()),
            (5.0, "6h".to_owned())
        );
        // Round trip.
        let again = parse(&serde_yaml_ng::to_string(&config).unwrap()).unwrap();
        assert_eq!(again.budgets, config.budgets);

        let e = parse("budgets:\n  workspace: {max_spend_usd: 20, period: fortnight}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("budgets.workspace") && e.contains("`hour`, `day`"),
            "{e}"
        );
        let e = parse("budgets:\n  workspace: {max_spend_usd: 0, period: day}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("budgets.workspace.max_spend_usd") && e.contains("greater than 0"),
            "{e}"
        );
        let e = parse("budgets:\n  workspaces:\n    prod: {max_spend_usd: 1, period: day}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("budgets.workspaces.prod") && e.contains("org/workspace"),
            "{e}"
        );
        let e = parse(
            "agents:\n  w:\n    model: scripted\n    limits: {budget: {max_spend_usd: -1, period: day}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("agents.w.limits.budget.max_spend_usd"), "{e}");
        let e = parse("budgets:\n  workspace: {max_spend_usd: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("period"), "{e}");
    }

    #[test]
    fn stdio_servers_read_inherited_variables_and_limits() {
        let parse = |text: &str| Config::from_yaml_str_with_env(text, None, &|_| None);
        let config = parse(
            "mcp:\n  servers:\n    fs:\n      command: node\n      inherit_env: [LANG, LC_*]\n      limits: {memory_mb: 512, open_files: 64}\n",
        )
        .unwrap();
        let fs = &config.mcp.servers["fs"];
        assert_eq!(fs.inherit_env, ["LANG", "LC_*"]);
        let limits = fs.limits.unwrap();
        assert_eq!(limits.memory_mb.map(|m| m.get()), Some(512));
        assert_eq!(limits.cpu_seconds, None);
        let e = parse(
            "mcp:\n  servers:\n    fs:\n      command: node\n      limits: {cpu_seconds: 0}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("limits.cpu_seconds"), "{e}");
        let e =
            parse("mcp:\n  servers:\n    fs:\n      command: node\n      limits: {memory: 1}\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("memory"), "{e}");
    }

    #[test]
    fn approval_settings_are_read() {
        let config = load("server:\n  approvals: {expire_after: 2h, claim_for: 5m}\n").unwrap();
        let a = &config.server.approvals;
        assert_eq!(a.expire_after.map(|d| d.0.as_secs()), Some(7200));
        assert_eq!(a.claim_for.map(|d| d.0.as_secs()), Some(300));
        let e = err("server:\n  approvals: {expire: 2h}\n");
        assert!(
            e.contains("server.approvals") && e.contains("expire"),
            "{e}"
        );
    }

    #[test]
    fn jwt_settings_are_read_with_defaults_and_unknown_keys_are_located() {
        let config = load(
            "server:\n  jwt:\n    issuer: https://idp.test/\n    audience: agentkit\n    jwks_url: http://127.0.0.1:1/jwks\n    claims: {role: agentkit_role}\n",
        )
        .unwrap();
        let jwt = config.server.jwt.unwrap();
        assert_eq!(jwt.issuer, "https://idp.test/");
        assert_eq!(jwt.claims.role, "agentkit_role");
        assert_eq!(jwt.claims.workspace, "workspace");
        assert_eq!(jwt.leeway_seconds, 60);
        let e = err("server:\n  jwt:\n    issuer: x\n    audience: y\n    jwks: z\n");
        assert!(e.contains("server.jwt") && e.contains("jwks"), "{e}");
        let e = err("server:\n  jwt:\n    audience: y\n");
        assert!(e.contains("issuer"), "{e}");
    }

    #[test]
    fn unknown_member_is_located_with_a_suggestion() {
        assert_eq!(
            err("workflows:\n  triage:\n    type: router\n    routes: [tech, biling]\n"),
            "config error in agentkit.yaml at `workflows.triage.routes[1]`: no agent or workflow \
             named `biling`; did you mean `billing`? (line 19, column 20)"
        );
        assert_eq!(
            err("workflows:\n  triage: {type: chain, steps: [zzz]}\n"),
            "config error in agentkit.yaml at `workflows.triage.steps[0]`: no agent or workflow \
             named `zzz`; configured: `billing`, `tech`, `triage` (line 17, column 33)"
        );
    }

    #[test]
    fn unknown_server_and_role() {
        assert_eq!(
            err("  ops:\n    servers: [strpe]\n"),
            "config error in agentkit.yaml at `agents.ops.servers[0]`: no MCP server named \
             `strpe`; did you mean `stripe`? (line 17, column 15)"
        );
        assert_eq!(
            err("  ops:\n    roles: [admin]\n"),
            "config error in agentkit.yaml at `agents.ops.roles[0]`: no role named `admin`; \
             configured: `support` (line 17, column 13)"
        );
    }

    #[test]
    fn cycles_are_reported_with_their_path() {
        assert_eq!(
            err(
                "workflows:\n  a: {type: chain, steps: [billing, b]}\n  b: {type: parallel, fan_out: [a]}\n"
            ),
            "config error in agentkit.yaml at `workflows.b.fan_out[0]`: workflow cycle: a → b → \
             a; a workflow cannot contain itself (line 18, column 33)"
        );
        assert!(
            err("workflows:\n  me: {type: chain, steps: [me]}\n")
                .contains("workflow cycle: me → me")
        );
    }

    #[test]
    fn schedules_need_exactly_one_trigger() {
        assert_eq!(
            err("schedules:\n  s: {target: tech}\n"),
            "config error in agentkit.yaml at `schedules.s`: a schedule needs one of `cron` (with \
             `timezone`), `every` or `at` (line 17, column 6)"
        );
        assert_eq!(
            err("schedules:\n  s: {target: tech, cron: '* * * * *', every: 1m}\n"),
            "config error in agentkit.yaml at `schedules.s.every`: a schedule takes exactly one of \
             `cron`, `every` or `at`, and this one sets both `cron` and `every` (line 17, column 47)"
        );
        assert!(
            err("schedules:\n  s: {target: tech, every: 1m, timezone: UTC}\n")
                .contains("`timezone` applies only to `cron` schedules")
        );
    }

    /// An agent's or workflow's own `schedules:` are checked like the top-level ones, located
    /// under the owner, and run only the owner.
    #[test]
    fn schedules_of_an_agent_or_workflow_are_checked_under_it() {
        let ok = load(
            "  ops:\n    model: scripted\n    schedules:\n      nightly: {cron: '0 3 * * *', \
             timezone: Europe/Lisbon}\n      poll: {target: ops, every: 5m}\n\
             workflows:\n  desk:\n    type: chain\n    steps: [tech]\n    schedules:\n      \
             hourly: {every: 1h}\n",
        )
        .unwrap();
        let nightly = &ok.agents["ops"].schedules["nightly"];
        assert_eq!(nightly.cron.as_deref(), Some("0 3 * * *"));
        assert!(nightly.target.is_empty());
        assert_eq!(
            ok.workflows["desk"].schedules()["hourly"].every,
            Some(HumanDuration(Duration::from_secs(3600)))
        );
        // Part of the spec: it serialises (without an empty `target`) and round-trips.
        let json = serde_json::to_value(&ok.agents["ops"]).unwrap();
        assert_eq!(
            json["schedules"]["nightly"],
            serde_json::json!({"cron": "0 3 * * *", "timezone": "Europe/Lisbon", "overlap": "skip", "catch_up": "skip"})
        );
        let back: AgentSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, ok.agents["ops"]);

        assert_eq!(
            err("  ops:\n    model: scripted\n    schedules:\n      nightly: {timezone: UTC}\n"),
            "config error in agentkit.yaml at `agents.ops.schedules.nightly`: a schedule needs one \
             of `cron` (with `timezone`), `every` or `at` (line 19, column 16)"
        );
        assert_eq!(
            err(
                "  ops:\n    model: scripted\n    schedules:\n      nightly: {every: 1h, target: tech}\n"
            ),
            "config error in agentkit.yaml at `agents.ops.schedules.nightly.target`: a schedule of \
             `ops` runs `ops`; leave `target` out, or declare a schedule of `tech` under the \
             top-level `schedules:` (line 19, column 36)"
        );
        assert!(
            err(
                "workflows:\n  desk:\n    type: chain\n    steps: [tech]\n    schedules:\n      \
                 s: {every: 1m, timezone: UTC}\n"
            )
            .starts_with("config error in agentkit.yaml at `workflows.desk.schedules.s.timezone`")
        );
        assert!(
            err("  ops:\n    model: scripted\n    schedules:\n      'two words': {every: 1h}\n")
                .starts_with("config error in agentkit.yaml at `agents.ops.schedules.two words`")
        );
    }

    #[test]
    fn bad_durations_are_located() {
        assert_eq!(
            err("schedules:\n  s: {target: tech, every: 15 minutes}\n"),
            "config error in agentkit.yaml at `schedules.s.every`: invalid duration `15 minutes`: \
             a number needs a unit; write e.g. `30s`, `15m`, `1h30m`, `1d` (units d, h, m, s, ms) \
             (line 17, column 28)"
        );
        assert!(
            err("schedules:\n  s: {target: tech, cron: '0 * * * *', catch_up: {within: 0s}}\n")
                .contains("it must be greater than zero")
        );
        assert!(err("schedules:\n  s: {target: tech, every: 5ms}\n").contains("10ms minimum"));
    }

    #[test]
    fn names_must_be_url_safe() {
        assert_eq!(
            err("workflows:\n  'front desk': {type: chain, steps: [tech]}\n"),
            "config error in agentkit.yaml at `workflows.front desk`: invalid name `front desk`: \
             use 1 to 64 letters, digits, `_` or `-` (names appear in URLs and MCP tool names) \
             (line 17, column 17)"
        );
        let long = "x".repeat(65);
        assert!(err(&format!("  {long}: {{model: scripted}}\n")).contains("invalid name"));
    }

    #[test]
    fn unknown_pattern_and_keys_get_suggestions() {
        let e = err("workflows:\n  w: {type: chian, steps: [tech]}\n");
        assert!(e.contains("unknown value `chian`"), "{e}");
        assert!(e.contains("(did you mean `chain`?)"), "{e}");
        let e = err("  ops:\n    instrucions: hi\n");
        assert!(e.contains("did you mean `instructions`?"), "{e}");
    }

    #[test]
    fn swarms_hold_agents_only_and_know_their_members() {
        let e = err(
            "workflows:\n  d: {type: chain, steps: [tech]}\n  s: {type: swarm, members: [tech, d]}\n",
        );
        assert!(
            e.contains("`workflows.s.members[1]`: swarm members must be agents"),
            "{e}"
        );
        let e =
            err("workflows:\n  s: {type: swarm, members: [tech], handoffs: {tech: [billing]}}\n");
        assert!(
            e.contains("`workflows.s.handoffs.tech[0]`: no member of this swarm named `billing`"),
            "{e}"
        );
    }

    #[test]
    fn triggers_and_limits() {
        assert!(
            err("triggers:\n  t: {type: webhook, target: tech, secret: ''}\n")
                .contains("a webhook needs a `secret`")
        );
        assert!(
            err("triggers:\n  t: {type: webhook, target: tech, secret: x, message_pointer: a/b}\n")
                .contains("write `/a/b`")
        );
        assert!(
            err("triggers:\n  t: {type: event, event: e, target: tekh}\n")
                .contains("did you mean `tech`?")
        );
        assert!(
            err("  ops: {model: scripted, limits: {concurrency: 0}}\n")
                .contains("at `agents.ops.limits.concurrency`: expected at least 1 concurrent run")
        );
        assert!(
            err("  ops: {model: scripted, limits: {max_spend_usd: -1}}\n")
                .contains("greater than 0")
        );
        assert!(
            err("  ops: {model: 'anthropic:claude', provider: openai}\n")
                .contains("contradicts the model")
        );
        assert!(
            err("  billing2: {}\nworkflows:\n  billing2: {type: chain, steps: [tech]}\n")
                .contains("both an agent and a workflow")
        );
    }

    #[test]
    fn code_built_config_validates_the_same_way() {
        let config = Config::new()
            .with_agent("a", AgentSpec::new("scripted", "x"))
            .with_schedule("s", ScheduleSpec::every("a", Duration::from_secs(60)))
            .with_trigger(
                "t",
                TriggerSpec::webhook("a", "k").with_message_pointer("/m"),
            );
        config.validate().unwrap();
        let bad = config.with_trigger("u", TriggerSpec::event("e", "b"));
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "config error at `triggers.u.target`: no agent or workflow named `b`; configured: `a`"
        );
    }

    #[test]
    fn durations_parse_strictly() {
        for (text, ms) in [
            ("30s", 30_000),
            ("15m", 900_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("1h30m", 5_400_000),
            ("250ms", 250),
            (" 2m ", 120_000),
        ] {
            assert_eq!(
                text.parse::<HumanDuration>().unwrap().0,
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for bad in [
            "",
            "30",
            "s",
            "1x",
            "1m1h",
            "1m1m",
            "-1s",
            "1.5h",
            "1 h",
            "0s",
            "3651d",
            "99999999999999999999s",
        ] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<HumanDuration>();
        }

        #[test]
        fn durations_round_trip(ms in 1u64..=MAX_DURATION.as_millis() as u64) {
            let d = HumanDuration(Duration::from_millis(ms));
            prop_assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
        }

        #[test]
        fn loader_never_panics_on_yamlish_input(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("agents:\n".to_owned()),
                    Just("workflows:\n".to_owned()),
                    Just("schedules:\n".to_owned()),
                    Just("triggers:\n".to_owned()),
                    Just("server:\n".to_owned()),
                    Just("  a: {model: scripted}\n".to_owned()),
                    Just("  w: {type: chain, steps: [a, w]}\n".to_owned()),
                    Just("  r: {type: router, routes: [a], top_k: 0}\n".to_owned()),
                    Just("  s: {target: a, every: 1h, cron: x}\n".to_owned()),
                    Just("  t: {type: webhook, target: a, secret: k}\n".to_owned()),
                    Just("    type: swarm\n".to_owned()),
                    Just("    members: [a, a]\n".to_owned()),
                    "[ -~]{0,20}\n",
                    "\\PC{0,12}",
                ],
                0..10,
            )
        ) {
            let text: String = parts.concat();
            let _ = Config::from_yaml_str_with_env(&text, None, &|_| None);
        }
    }
}
