//! [`BagOfWordsEmbedder`]: a deterministic, offline [`Embedder`] for tests and demos.

use agentkit_core::{Embedder, Result};
use async_trait::async_trait;

/// Hashes each lower-cased word (ASCII letters and digits; a trailing `s` is dropped) into one of
/// `dimensions` buckets and counts them. Texts that share words get similar vectors, so
/// embedding-based routing and classification behave sensibly offline, with no model and no
/// network. Not a semantic model: use a real embedder (e.g. OpenAI's) in production.
///
/// ```
/// use agentkit_core::{Embedder, cosine_similarity};
/// use agentkit_patterns::BagOfWordsEmbedder;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let e = BagOfWordsEmbedder::new();
/// let v = e.embed(&["refund my order".into(), "order refunds".into(), "weather".into()]).await?;
/// assert!(cosine_similarity(&v[0], &v[1]) > cosine_similarity(&v[0], &v[2]));
/// # Ok::<_, agentkit_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BagOfWordsEmbedder {
    /// Vector length.
    pub dimensions: usize,
}

impl Default for BagOfWordsEmbedder {
    fn default() -> Self {
        Self::new()
    }
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "with", "is", "are", "be", "i",
    "me", "my", "you", "your", "it", "this", "that", "what", "how", "do", "can", "please", "about",
];

impl BagOfWordsEmbedder {
    /// 256 dimensions.
    #[must_use]
    pub fn new() -> Self {
        Self { dimensions: 256 }
    }

    /// Use `n` dimensions (at least 1).
    #[must_use]
    pub fn with_dimensions(mut self, n: usize) -> Self {
        self.dimensions = n.max(1);
        self
    }

    /// The vector of one text.
    #[must_use]
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dimensions];
        for word in text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let word = word.to_ascii_lowercase();
            if STOP_WORDS.contains(&word.as_str()) {
                continue;
            }
            let stem = if word.len() > 3 {
                word.strip_suffix('s').unwrap_or(&word)
            } else {
                &word
            };
            // FNV-1a: stable across runs and platforms.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in stem.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            let bucket = usize::try_from(h % self.dimensions as u64).unwrap_or(0);
            v[bucket] += 1.0;
        }
        v
    }
}

#[async_trait]
impl Embedder for BagOfWordsEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}
