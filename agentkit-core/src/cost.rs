//! Prices and model selection: turn [`Usage`] into dollars, and pick a model from
//! MCP-style [`ModelPreferences`].

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// What one model costs and how it ranks, per million tokens in US dollars.
///
/// In config files only `id`, `provider`, `input_per_mtok` and `output_per_mtok` are required;
/// cache prices default to 0 and scores to 0.5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelInfo {
    /// Model id as the provider names it (dated variants match by prefix).
    pub id: String,
    /// Provider name (`openai`, `anthropic`, ...).
    pub provider: String,
    /// USD per million uncached input tokens.
    pub input_per_mtok: f64,
    /// USD per million output tokens.
    pub output_per_mtok: f64,
    /// USD per million input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_per_mtok: f64,
    /// USD per million input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write_per_mtok: f64,
    /// Relative speed, 0 (slow) to 1 (fast).
    #[serde(default = "half")]
    pub speed: f64,
    /// Relative capability, 0 to 1.
    #[serde(default = "half")]
    pub intelligence: f64,
}

fn half() -> f64 {
    0.5
}

impl ModelInfo {
    /// A model entry with cache prices equal to the input price and middling scores.
    pub fn new(
        id: impl Into<String>,
        provider: impl Into<String>,
        input_per_mtok: f64,
        output_per_mtok: f64,
    ) -> Self {
        Self {
            id: id.into(),
            provider: provider.into(),
            input_per_mtok,
            output_per_mtok,
            cache_read_per_mtok: input_per_mtok,
            cache_write_per_mtok: input_per_mtok,
            speed: 0.5,
            intelligence: 0.5,
        }
    }

    /// Set cache read and write prices.
    #[must_use]
    pub fn with_cache_prices(mut self, read: f64, write: f64) -> Self {
        self.cache_read_per_mtok = read;
        self.cache_write_per_mtok = write;
        self
    }

    /// Set speed and intelligence scores (0 to 1).
    #[must_use]
    pub fn with_scores(mut self, speed: f64, intelligence: f64) -> Self {
        self.speed = speed.clamp(0.0, 1.0);
        self.intelligence = intelligence.clamp(0.0, 1.0);
        self
    }

    /// The cost of `usage` on this model in US dollars.
    #[must_use]
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_mtok
            + usage.output_tokens as f64 * self.output_per_mtok
            + usage.cache_read_tokens as f64 * self.cache_read_per_mtok
            + usage.cache_write_tokens as f64 * self.cache_write_per_mtok)
            / 1_000_000.0
    }

    fn blended_price(&self) -> f64 {
        // A typical agent turn reads ~3x what it writes.
        (3.0 * self.input_per_mtok + self.output_per_mtok) / 4.0
    }
}

/// A table of model prices. [`PriceTable::default`] holds list prices of current OpenAI,
/// Anthropic and Google Gemini models (as published in 2025; override with [`PriceTable::with_model`] or
/// `prices:` in config when they change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PriceTable {
    /// The models.
    pub models: Vec<ModelInfo>,
}

impl Default for PriceTable {
    fn default() -> Self {
        let oa = |id: &str, i: f64, cached: f64, o: f64, speed: f64, intel: f64| {
            ModelInfo::new(id, "openai", i, o)
                .with_cache_prices(cached, i)
                .with_scores(speed, intel)
        };
        let an = |id: &str, i: f64, o: f64, speed: f64, intel: f64| {
            ModelInfo::new(id, "anthropic", i, o)
                .with_cache_prices(i * 0.1, i * 1.25)
                .with_scores(speed, intel)
        };
        // Gemini: list prices for prompts up to 200k tokens (the Pro models cost more above);
        // implicit caching has no write charge, cached input is a tenth of the input price.
        let gm = |id: &str, i: f64, o: f64, speed: f64, intel: f64| {
            ModelInfo::new(id, "google", i, o)
                .with_cache_prices(i * 0.1, i)
                .with_scores(speed, intel)
        };
        Self {
            models: vec![
                gm("gemini-3-pro-preview", 2.0, 12.0, 0.45, 0.97),
                gm("gemini-3-flash-preview", 0.50, 3.0, 0.8, 0.88),
                gm("gemini-2.5-pro", 1.25, 10.0, 0.45, 0.92),
                gm("gemini-2.5-flash", 0.30, 2.50, 0.8, 0.8),
                gm("gemini-2.5-flash-lite", 0.10, 0.40, 0.95, 0.6),
                gm("gemini-2.0-flash", 0.10, 0.40, 0.9, 0.55),
                oa("gpt-5", 1.25, 0.125, 10.0, 0.45, 0.95),
                oa("gpt-5-mini", 0.25, 0.025, 2.0, 0.7, 0.8),
                oa("gpt-5-nano", 0.05, 0.005, 0.40, 0.9, 0.6),
                oa("gpt-4.1", 2.0, 0.50, 8.0, 0.6, 0.8),
                oa("gpt-4.1-mini", 0.40, 0.10, 1.60, 0.8, 0.65),
                oa("gpt-4.1-nano", 0.10, 0.025, 0.40, 0.95, 0.45),
                oa("gpt-4o", 2.50, 1.25, 10.0, 0.65, 0.7),
                oa("gpt-4o-mini", 0.15, 0.075, 0.60, 0.85, 0.5),
                oa("o3", 2.0, 0.50, 8.0, 0.3, 0.9),
                oa("o4-mini", 1.10, 0.275, 4.40, 0.5, 0.8),
                an("claude-opus-4-5", 5.0, 25.0, 0.4, 0.98),
                an("claude-opus-4-1", 15.0, 75.0, 0.3, 0.95),
                an("claude-opus-4", 15.0, 75.0, 0.3, 0.93),
                an("claude-sonnet-4-5", 3.0, 15.0, 0.6, 0.92),
                an("claude-sonnet-4", 3.0, 15.0, 0.6, 0.85),
                an("claude-3-7-sonnet", 3.0, 15.0, 0.6, 0.8),
                an("claude-haiku-4-5", 1.0, 5.0, 0.9, 0.75),
                an("claude-3-5-haiku", 0.80, 4.0, 0.9, 0.55),
            ],
        }
    }
}

impl PriceTable {
    /// An empty table (every cost is 0).
    #[must_use]
    pub fn empty() -> Self {
        Self { models: Vec::new() }
    }

    /// The built-in table, shared.
    #[must_use]
    pub fn shared_default() -> Arc<PriceTable> {
        static DEFAULT: OnceLock<Arc<PriceTable>> = OnceLock::new();
        Arc::clone(DEFAULT.get_or_init(|| Arc::new(PriceTable::default())))
    }

    /// Add or replace a model.
    #[must_use]
    pub fn with_model(mut self, model: ModelInfo) -> Self {
        self.models.retain(|m| m.id != model.id);
        self.models.push(model);
        self
    }

    /// The entry for `model`: an exact id match, else the longest id that prefixes it
    /// (`gpt-4o-2024-08-06` → `gpt-4o`). A `provider/` prefix (OpenRouter style) is ignored.
    #[must_use]
    pub fn get(&self, model: &str) -> Option<&ModelInfo> {
        let model = model.rsplit('/').next().unwrap_or(model);
        if let Some(m) = self.models.iter().find(|m| m.id == model) {
            return Some(m);
        }
        self.models
            .iter()
            .filter(|m| {
                model.starts_with(&m.id)
                    && model[m.id.len()..].starts_with(['-', '@', ':'])
                    && !model[m.id.len() + 1..].starts_with(|c: char| c.is_ascii_alphabetic())
            })
            .max_by_key(|m| m.id.len())
    }

    /// The cost of `usage` on `model` in US dollars, or 0 when the model is unknown.
    #[must_use]
    pub fn cost(&self, model: &str, usage: &Usage) -> f64 {
        self.get(model).map(|m| m.cost(usage)).unwrap_or(0.0)
    }

    /// Pick a model for `prefs` among the models of `providers` (all models when empty).
    ///
    /// Name hints are tried in order: the first hint that matches a model id (substring,
    /// case-insensitive) decides, and among several matches the priorities break the tie.
    /// Without a matching hint, models are ranked by
    /// `cost_priority·cheapness + speed_priority·speed + intelligence_priority·intelligence`.
    #[must_use]
    pub fn select(&self, prefs: &ModelPreferences, providers: &[&str]) -> Option<&ModelInfo> {
        let candidates: Vec<&ModelInfo> = self
            .models
            .iter()
            .filter(|m| providers.is_empty() || providers.contains(&m.provider.as_str()))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let max_price = candidates
            .iter()
            .map(|m| m.blended_price())
            .fold(f64::MIN_POSITIVE, f64::max);
        let (cp, sp, ip) = prefs.weights();
        let score = |m: &ModelInfo| {
            // Log scale: prices span three orders of magnitude.
            let cheapness = 1.0 - ((1.0 + m.blended_price()).ln() / (1.0 + max_price).ln());
            cp * cheapness + sp * m.speed + ip * m.intelligence
        };
        fn best<'a>(
            ms: Vec<&'a ModelInfo>,
            score: &dyn Fn(&ModelInfo) -> f64,
        ) -> Option<&'a ModelInfo> {
            ms.into_iter()
                .fold(None, |acc: Option<&'a ModelInfo>, m| match acc {
                    Some(a) if score(a) >= score(m) => Some(a),
                    _ => Some(m),
                })
        }
        for hint in &prefs.hints {
            let needle = hint.name.to_ascii_lowercase();
            let matching: Vec<&ModelInfo> = candidates
                .iter()
                .copied()
                .filter(|m| m.id.to_ascii_lowercase().contains(&needle))
                .collect();
            if let Some(m) = best(matching, &score) {
                return Some(m);
            }
        }
        best(candidates, &score)
    }
}

/// A name hint for model selection (MCP `ModelHint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelHint {
    /// A substring of the model id, e.g. `sonnet` or `gpt-4.1`.
    pub name: String,
}

impl ModelHint {
    /// A hint.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// MCP-style model preferences: priorities from 0 to 1 and name hints. Serialises with MCP's
/// field names (`costPriority`, ...), so sampling requests deserialise into it directly.
///
/// ```
/// use agentkit_core::{ModelPreferences, PriceTable};
/// let prefs = ModelPreferences::new().with_cost_priority(1.0);
/// let table = PriceTable::default();
/// let cheapest = table.select(&prefs, &["openai"]).unwrap();
/// assert_eq!(cheapest.id, "gpt-5-nano");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ModelPreferences {
    /// Name hints, in order of preference.
    #[serde(default)]
    pub hints: Vec<ModelHint>,
    /// How much cost matters (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_priority: Option<f64>,
    /// How much speed matters (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_priority: Option<f64>,
    /// How much capability matters (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intelligence_priority: Option<f64>,
}

impl ModelPreferences {
    /// No preferences.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a name hint.
    #[must_use]
    pub fn with_hint(mut self, name: impl Into<String>) -> Self {
        self.hints.push(ModelHint::new(name));
        self
    }

    /// Set the cost priority.
    #[must_use]
    pub fn with_cost_priority(mut self, p: f64) -> Self {
        self.cost_priority = Some(p);
        self
    }

    /// Set the speed priority.
    #[must_use]
    pub fn with_speed_priority(mut self, p: f64) -> Self {
        self.speed_priority = Some(p);
        self
    }

    /// Set the intelligence priority.
    #[must_use]
    pub fn with_intelligence_priority(mut self, p: f64) -> Self {
        self.intelligence_priority = Some(p);
        self
    }

    fn weights(&self) -> (f64, f64, f64) {
        let c = self.cost_priority.unwrap_or(0.0).clamp(0.0, 1.0);
        let s = self.speed_priority.unwrap_or(0.0).clamp(0.0, 1.0);
        let i = self.intelligence_priority.unwrap_or(0.0).clamp(0.0, 1.0);
        if c + s + i == 0.0 {
            // No stated priorities: balance capability and cost.
            (0.5, 0.0, 0.5)
        } else {
            (c, s, i)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_uses_all_token_kinds() {
        let t = PriceTable::default();
        let u = Usage::new(1_000_000, 1_000_000).with_cache(1_000_000, 1_000_000);
        let c = t.cost("claude-sonnet-4-5-20250929", &u);
        assert!((c - (3.0 + 15.0 + 0.3 + 3.75)).abs() < 1e-9, "{c}");
        assert_eq!(t.cost("unknown-model", &u), 0.0);
    }

    #[test]
    fn prefix_match_does_not_confuse_mini_with_base() {
        let t = PriceTable::default();
        assert_eq!(t.get("gpt-4o-2024-08-06").unwrap().id, "gpt-4o");
        assert_eq!(t.get("gpt-4o-mini-2024-07-18").unwrap().id, "gpt-4o-mini");
        assert_eq!(t.get("openai/gpt-4.1-mini").unwrap().id, "gpt-4.1-mini");
    }

    #[test]
    fn selection_follows_hints_then_priorities() {
        let t = PriceTable::default();
        let p = ModelPreferences::new()
            .with_hint("sonnet")
            .with_intelligence_priority(1.0);
        assert_eq!(t.select(&p, &[]).unwrap().id, "claude-sonnet-4-5");
        let p = ModelPreferences::new()
            .with_hint("no-such")
            .with_speed_priority(1.0);
        assert_eq!(t.select(&p, &["anthropic"]).unwrap().provider, "anthropic");
        let p = ModelPreferences::new().with_intelligence_priority(1.0);
        assert_eq!(t.select(&p, &["anthropic"]).unwrap().id, "claude-opus-4-5");
        assert!(t.select(&p, &["nobody"]).is_none());
    }

    #[test]
    fn preferences_use_mcp_field_names() {
        let p: ModelPreferences =
            serde_json::from_str(r#"{"hints":[{"name":"claude"}],"costPriority":0.3}"#).unwrap();
        assert_eq!(p.hints[0].name, "claude");
        assert_eq!(p.cost_priority, Some(0.3));
    }
}
