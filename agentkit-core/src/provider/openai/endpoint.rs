//! The HTTP side shared by the chat provider and the embedder: client, headers, URLs, POST.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::config::{DEFAULT_BASE_URL, ENV_API_KEY, OpenAiConfig};
use super::response::decode;
use crate::error::{Error, ProviderErrorKind, Result};
use crate::provider::http;

/// The HTTP side shared by [`OpenAiProvider`] and [`OpenAiEmbedder`]: client, headers, URLs.
pub(super) struct Endpoint {
    client: reqwest::Client,
    headers: HeaderMap,
    pub(super) chat_url: Url,
    pub(super) embeddings_url: Url,
    pub(super) responses_url: Url,
    pub(super) timeout: Option<Duration>,
    has_key: bool,
}

impl Endpoint {
    pub(super) fn new(config: &OpenAiConfig) -> Result<Self> {
        let config_error = |key: &str, message: String| Error::Config {
            file: None,
            key: format!("openai.{key}"),
            message,
        };
        http::check_timeout("openai", config.timeout)?;
        let base = config.base_url.trim();
        let base_url = http::base_url(
            "openai",
            base,
            &format!("{DEFAULT_BASE_URL} or http://localhost:11434/v1"),
        )?;
        let join = |path: &[&str]| -> Result<Url> {
            let mut url = base_url.clone();
            {
                let mut segments = url.path_segments_mut().map_err(|()| {
                    config_error("base_url", format!("`{base}` cannot be a base URL"))
                })?;
                segments.pop_if_empty().extend(path);
            }
            if !config.query.is_empty() {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in &config.query {
                    pairs.append_pair(k, v);
                }
            }
            Ok(url)
        };
        let chat_url = join(&["chat", "completions"])?;
        let embeddings_url = join(&["embeddings"])?;
        let responses_url = join(&["responses"])?;

        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("agentkit/", env!("CARGO_PKG_VERSION"))),
        );
        let value = |what: &str, v: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                config_error(
                    what,
                    "contains characters that cannot be sent in an HTTP header".to_owned(),
                )
            })
        };
        if let Some(key) = &config.api_key {
            let mut v = value("api_key", &format!("Bearer {}", key.trim()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Some(org) = &config.organization {
            headers.insert("openai-organization", value("organization", org)?);
        }
        if let Some(project) = &config.project {
            headers.insert("openai-project", value("project", project)?);
        }
        for (name, v) in &config.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                config_error(
                    &format!("headers.{name}"),
                    "is not a valid HTTP header name".to_owned(),
                )
            })?;
            let mut v = value(&format!("headers.{name}"), v)?;
            v.set_sensitive(true);
            headers.insert(header, v);
        }

        let connect_timeout = config
            .timeout
            .unwrap_or(Duration::from_secs(30))
            .min(Duration::from_secs(30));
        Ok(Self {
            client: http::client(connect_timeout)?,
            headers,
            chat_url,
            embeddings_url,
            responses_url,
            timeout: config.timeout,
            has_key: config.api_key.is_some(),
        })
    }

    /// POST `body` to `url` and return the response if its status is a success.
    ///
    /// With `whole_timeout` the timeout bounds the whole exchange, body included; otherwise only
    /// the wait for the response head (streams bound the gap between events themselves).
    pub(super) async fn post(
        &self,
        provider: &str,
        url: &Url,
        body: &Value,
        whole_timeout: bool,
    ) -> Result<reqwest::Response> {
        let mut builder = http::with_traceparent(
            self.client
                .post(url.clone())
                .headers(self.headers.clone())
                .json(body),
        );
        if whole_timeout && let Some(t) = self.timeout {
            builder = builder.timeout(t);
        }
        let sent = match (whole_timeout, self.timeout) {
            (false, Some(t)) => tokio::time::timeout(t, builder.send()).await.map_err(|_| {
                Error::provider(
                    provider,
                    ProviderErrorKind::Timeout,
                    format!("no response from {url} within {t:?}"),
                )
            })?,
            _ => builder.send().await,
        };
        let response = sent.map_err(|e| http::transport_error(provider, e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let mut error = http::status_error(provider, response).await;
        if let Error::Provider {
            kind: ProviderErrorKind::Auth,
            message,
            ..
        } = &mut error
            && !self.has_key
        {
            message.push_str(&format!(
                "; no API key is configured: set {ENV_API_KEY} or use OpenAiConfig::new(key)"
            ));
        }
        Err(error)
    }

    /// POST and decode a JSON answer.
    pub(super) async fn post_json<T: DeserializeOwned>(
        &self,
        provider: &str,
        url: &Url,
        body: &Value,
        what: &str,
    ) -> Result<T> {
        let response = self.post(provider, url, body, true).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| http::transport_error(provider, e))?;
        decode(provider, what, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::openai::OpenAiProvider;

    #[test]
    fn bad_base_urls_and_headers_are_config_errors() {
        let err = OpenAiProvider::new(OpenAiConfig::new("k").with_base_url("localhost:8080"))
            .unwrap_err();
        assert!(err.to_string().contains("base_url"), "{err}");
        let err =
            OpenAiProvider::new(OpenAiConfig::new("k").with_header("bad header", "x")).unwrap_err();
        assert!(err.to_string().contains("bad header"), "{err}");
    }

    #[test]
    fn urls_keep_the_base_path_and_add_the_query() {
        let p = OpenAiProvider::new(
            OpenAiConfig::new("k")
                .with_base_url("https://r.openai.azure.com/openai/deployments/d/")
                .with_query("api-version", "2024-10-21"),
        )
        .unwrap();
        assert_eq!(
            p.endpoint.chat_url.as_str(),
            "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            p.endpoint.embeddings_url.as_str(),
            "https://r.openai.azure.com/openai/deployments/d/embeddings?api-version=2024-10-21"
        );
    }
}
