//! Token usage and stop reasons.

use serde::{Deserialize, Serialize};

/// Tokens used by one or more model calls. Adds up with `+` and `+=` (saturating: counts a
/// provider reports are not trusted to stay small).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Usage {
    /// Prompt tokens billed at the normal input rate (excluding cache reads and writes).
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// How many of `output_tokens` the model spent reasoning (OpenAI reasoning tokens,
    /// Gemini thoughts). Already counted in `output_tokens` and billed with them; this only
    /// says how they split.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage with input and output tokens.
    #[must_use]
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// Set cache read and write tokens.
    #[must_use]
    pub fn with_cache(mut self, read: u64, write: u64) -> Self {
        self.cache_read_tokens = read;
        self.cache_write_tokens = write;
        self
    }

    /// Set how many of the output tokens were reasoning.
    #[must_use]
    pub fn with_reasoning(mut self, reasoning_tokens: u64) -> Self {
        self.reasoning_tokens = reasoning_tokens;
        self
    }

    /// All tokens, input (including cache) and output.
    #[must_use]
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(mut self, rhs: Usage) -> Usage {
        self += rhs;
        self
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        self.input_tokens = self.input_tokens.saturating_add(rhs.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(rhs.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(rhs.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(rhs.cache_write_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(rhs.reasoning_tokens);
    }
}

/// Why the model stopped generating.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// The model finished its turn.
    #[default]
    EndTurn,
    /// The model asks for tool calls.
    ToolUse,
    /// `max_tokens` was reached.
    MaxTokens,
    /// A stop sequence was produced.
    StopSequence,
    /// The provider's content filter stopped the output.
    ContentFilter,
    /// The model refused.
    Refusal,
    /// A provider-specific reason.
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up() {
        let mut u = Usage::new(10, 5).with_cache(3, 2);
        u += Usage::new(1, 1);
        assert_eq!(u, Usage::new(11, 6).with_cache(3, 2));
        assert_eq!(u.total_tokens(), 22);
        // A provider reporting absurd counts does not overflow (and panic in debug builds).
        let mut huge = Usage::new(u64::MAX, u64::MAX).with_cache(u64::MAX, 1);
        assert_eq!(huge.total_tokens(), u64::MAX);
        huge += Usage::new(1, 1);
        assert_eq!(huge.input_tokens, u64::MAX);
    }
}
