//! RFC 9457 problem details: every error the API returns, with what to do about it.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// An error answer (`application/problem+json`, RFC 9457). `detail` says what failed and
/// what to do; `type` is a stable URI per kind of problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:agentkit:problem:<slug>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong with this request, and what to do.
    pub detail: String,
    /// The request path, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Seconds to send as `Retry-After` (429 for a rate limit or a spent budget).
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `status` with a slug (the end of its `type` URI) and a detail.
    #[must_use]
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:agentkit:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            retry_after: None,
        }
    }

    /// 400: the request is malformed or invalid.
    #[must_use]
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid-request", detail)
    }

    /// 404: nothing with this id (for this caller).
    #[must_use]
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 409: the resource is not in a state that allows this (or a compare-and-swap lost).
    #[must_use]
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 401: no or a wrong API key.
    #[must_use]
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 413: the request body is over the server's limit
    /// ([`ServerBuilder::max_body_bytes`](crate::ServerBuilder::max_body_bytes)).
    #[must_use]
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "the request body is larger than this server accepts (2 MiB unless set with \
             `ServerBuilder::max_body_bytes`); send a smaller body",
        )
    }

    /// The status as a [`StatusCode`].
    #[must_use]
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

impl From<agentkit_core::Error> for Problem {
    fn from(e: agentkit_core::Error) -> Self {
        use agentkit_core::Error as E;
        match &e {
            E::NotFound { .. } | E::ToolNotFound { .. } => Self::not_found(e.to_string()),
            E::InvalidRequest(_) | E::Config { .. } | E::StructuredOutput { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid-request", e.to_string())
            }
            E::InvalidState { .. } => Self::conflict(e.to_string()),
            E::Unavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            E::Timeout { .. } | E::DeadlineExceeded { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string())
            }
            E::LimitReached { retry_after, .. } => {
                let mut p = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "limit-reached",
                    e.to_string(),
                );
                // Whole seconds, rounded up: a client that waits that long is allowed again.
                p.retry_after = Some(
                    retry_after
                        .as_secs()
                        .saturating_add(u64::from(retry_after.subsec_nanos() > 0)),
                );
                p
            }
            E::BudgetExceeded { .. } => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "budget-exceeded",
                e.to_string(),
            ),
            _ => {
                // Store and internal failures: logged in full, answered without internals.
                tracing::error!(error = %e, "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed to handle the request; it is logged. Retry, and report \
                     it if it persists",
                )
            }
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::payload_too_large()
            }
            JsonRejection::JsonSyntaxError(e) => {
                Self::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                format!(
                    "the body does not match the expected shape: {}",
                    e.body_text()
                ),
            ),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<QueryRejection> for Problem {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(format!("invalid path: {}", r.body_text()))
    }
}

/// The result of a handler: a value or a [`Problem`].
pub type ApiResult<T> = std::result::Result<T, Problem>;
