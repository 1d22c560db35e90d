//! [`OpenAiEmbedder`]: text embeddings over `POST {base_url}/embeddings`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::OpenAiProvider;
use super::config::OpenAiConfig;
use super::endpoint::Endpoint;
use super::response::WireError;
use crate::embedding::Embedder;
use crate::error::{ProviderErrorKind, Result};
use crate::provider::http;

/// The embedding model [`OpenAiEmbedder`] uses unless told otherwise.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// How many texts one embeddings request carries at most (OpenAI's limit per request).
pub const DEFAULT_EMBEDDING_BATCH: usize = 2048;

/// Text embeddings over `POST {base_url}/embeddings` (OpenAI and compatible servers).
///
/// Texts are sent in batches of at most [`with_batch_size`](Self::with_batch_size) inputs;
/// vectors come back in the order of the texts.
///
/// ```no_run
/// use agentkit_core::Embedder;
/// use agentkit_core::provider::openai::{OpenAiConfig, OpenAiEmbedder};
///
/// # async fn run() -> agentkit_core::Result<()> {
/// let embedder = OpenAiEmbedder::new(OpenAiConfig::from_env()?)?.with_dimensions(256);
/// let vectors = embedder.embed(&["refund policy".into(), "shipping times".into()]).await?;
/// assert_eq!(vectors.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OpenAiEmbedder {
    name: String,
    model: String,
    dimensions: Option<u32>,
    batch_size: usize,
    endpoint: Arc<Endpoint>,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedder")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("batch_size", &self.batch_size)
            .field("url", &self.endpoint.embeddings_url.as_str())
            .finish()
    }
}

impl OpenAiEmbedder {
    /// An embedder named `name` on this endpoint, with the default model and batch size.
    pub(super) fn on(name: &str, endpoint: Arc<Endpoint>) -> Self {
        Self {
            name: name.to_owned(),
            model: DEFAULT_EMBEDDING_MODEL.to_owned(),
            dimensions: None,
            batch_size: DEFAULT_EMBEDDING_BATCH,
            endpoint,
        }
    }

    /// An embedder for this configuration, with model `text-embedding-3-small`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) when the base URL, a header or the key cannot be used.
    pub fn new(config: OpenAiConfig) -> Result<Self> {
        Ok(OpenAiProvider::new(config)?.embedder())
    }

    /// An embedder configured from the environment; see [`OpenAiConfig::from_env`].
    ///
    /// # Errors
    ///
    /// As [`OpenAiConfig::from_env`].
    pub fn from_env() -> Result<Self> {
        Self::new(OpenAiConfig::from_env()?)
    }

    /// Use this embedding model.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Ask for vectors of this size (`text-embedding-3-*` models only).
    #[must_use]
    pub fn with_dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// Send at most this many texts per request (at least 1).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Rename the provider in errors (default `openai`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The embedding model.
    #[must_use]
    pub fn model(&self) -> &str {
        &self.model
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut body = json!({
            "model": self.model,
            "input": texts,
            "encoding_format": "float",
        });
        if let Some(d) = self.dimensions {
            body["dimensions"] = json!(d);
        }
        let wire: WireEmbeddings = self
            .endpoint
            .post_json(
                &self.name,
                &self.endpoint.embeddings_url,
                &body,
                "the embeddings response",
            )
            .await?;
        vectors(&self.name, wire, texts.len())
    }
}

/// The vectors of an embeddings answer, in the order of the `expected` inputs.
///
/// # Errors
///
/// The provider's error object, or a decode error when an index is out of range or an input
/// has no vector. (A value beyond `f32` is already a decode error naming its path.)
fn vectors(provider: &str, wire: WireEmbeddings, expected: usize) -> Result<Vec<Vec<f32>>> {
    const WHAT: &str = "the embeddings response";
    if let Some(error) = wire.error {
        return Err(error.into_error(provider, ProviderErrorKind::BadRequest));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    for item in wire.data {
        let slot = slots.get_mut(item.index).ok_or_else(|| {
            http::decode_error(
                provider,
                WHAT,
                format!(
                    "it has index {} but only {expected} texts were sent",
                    item.index
                ),
            )
        })?;
        *slot = Some(item.embedding);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| {
                http::decode_error(provider, WHAT, format!("it has no vector for input {i}"))
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct WireEmbeddings {
    #[serde(default)]
    data: Vec<WireEmbedding>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    index: usize,
    embedding: Vec<f32>,
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size.max(1)) {
            out.extend(self.embed_batch(batch).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::testing::{any_json, index_like, json_leaf, or_any};
    use proptest::prelude::*;
    use serde_json::Value;

    fn parse(body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>> {
        let wire = super::super::response::decode("openai", "the embeddings response", body)?;
        vectors("openai", wire, expected)
    }

    #[test]
    fn out_of_range_missing_and_overflowing_vectors_are_decode_errors() {
        let err = parse(br#"{"data": [{"index": 5, "embedding": [1]}]}"#, 1).unwrap_err();
        assert!(
            err.to_string().contains("index 5 but only 1 texts"),
            "{err}"
        );
        let err = parse(br#"{"data": [{"index": 1, "embedding": [1]}]}"#, 2).unwrap_err();
        assert!(err.to_string().contains("no vector for input 0"), "{err}");
        let err = parse(br#"{"data": [{"index": 0, "embedding": [1e39]}]}"#, 1).unwrap_err();
        assert!(err.to_string().contains("data[0].embedding[0]"), "{err}");
        let err = parse(br#"{"data": [{"index": -1, "embedding": []}]}"#, 1).unwrap_err();
        assert!(err.to_string().contains("data[0].index"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_embeddings_body_is_vectors_or_a_clear_error(
            body in prop_oneof![
                any_json(),
                prop::collection::vec(
                    (index_like(), or_any(prop::collection::vec(json_leaf(), 0..3).prop_map(Value::Array))),
                    0..4,
                )
                .prop_map(|items| json!({"data": items.into_iter()
                    .map(|(index, embedding)| json!({"index": index, "embedding": embedding}))
                    .collect::<Vec<_>>()})),
            ],
            expected in 0usize..3,
        ) {
            match parse(body.to_string().as_bytes(), expected) {
                Ok(v) => {
                    prop_assert_eq!(v.len(), expected);
                    prop_assert!(v.iter().flatten().all(|x| x.is_finite()));
                }
                Err(e) => prop_assert!(e.provider_kind().is_some(), "{e:?}"),
            }
        }
    }
}
