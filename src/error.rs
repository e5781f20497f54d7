//! The HTTP error type: every failure the API reports, as
//! `{"error": {"code", "message"}}` with the right status.
//!
//! Client errors carry a stable `code` and a message that says what to fix. Internal
//! errors are logged with their cause and answered with an opaque 500, so a database
//! path or a Slack token can never leak through an error body.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{approval::service::ServiceError, store::StoreError};

pub mod wording;

/// A failure the API answers with. Each variant is one status and one stable `code`
/// (several variants may share a code); its text (`Display`) becomes the `message`,
/// so it is written for the person reading the agent's log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `unauthorized`: no `Authorization: Bearer …` header, or a token that is not
    /// in `GREENLIGHT_API_TOKENS`. The response adds `WWW-Authenticate: Bearer`.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A call made for a person (revoking a grant) without a review-page session.
    #[error("sign in to the review page first: this call needs a reviewer's session cookie (gl_session, from /web/signin), not a bearer token")]
    SessionRequired,
    /// A request to `/slack/interactions` that Slack did not sign.
    #[error("the request is not signed by this Slack app (X-Slack-Signature and X-Slack-Request-Timestamp missing, wrong or too old)")]
    BadSlackSignature,
    /// 400 `malformed_json`: the body could not be read or is not JSON (a Slack
    /// interaction: its `payload` does not parse); the text says where it broke.
    #[error("{0}")]
    MalformedJson(String),
    /// 422 `invalid_request`: well-formed but refused. The text names the field by its
    /// path in the body, in JSON terms (`actions[0]: code is required`).
    #[error("{0}")]
    Invalid(String),
    /// 413 `payload_too_large`: the body is over the route's limit.
    #[error("request body is larger than the {limit} byte limit")]
    PayloadTooLarge {
        /// The limit, in bytes (`http::MAX_BODY_BYTES`, 1 MiB).
        limit: usize,
    },
    /// 404 `not_found`: an unknown id, an id that is not a UUID (answered alike), or
    /// no such endpoint; the text says what was looked for.
    #[error("{0}")]
    NotFound(String),
    /// 409 under a code of its own: `idempotency_conflict` (an `Idempotency-Key`
    /// reused with another body) or `already_decided` (cancelling a final request).
    #[error("{message}")]
    Conflict {
        /// The stable snake_case code the body carries.
        code: &'static str,
        /// What the request collided with, for a person.
        message: String,
    },
    /// 403 `forbidden`: another agent's request, an `Authorization` header on a call
    /// only a reviewer may make, or a grant the signed-in reviewer has no say over.
    #[error("{0}")]
    Forbidden(String),
    /// 405 `method_not_allowed`: the path exists, for other methods.
    #[error("this endpoint does not accept that HTTP method")]
    MethodNotAllowed,
    /// 429 `rate_limited`, with `Retry-After`: the agent's token bucket
    /// (`GREENLIGHT_RATE_LIMIT_PER_MINUTE`) has too few tokens for the submission.
    #[error("{message}")]
    RateLimited {
        /// Names the agent and its limit a minute.
        message: String,
        /// Whole seconds (at least 1) until the tokens are there; sent as
        /// `Retry-After`.
        retry_after_secs: u64,
    },
    /// The agent is at its cap of pending requests (`GREENLIGHT_MAX_PENDING_PER_AGENT`).
    #[error("{0}")]
    TooManyPending(String),
    /// 500 `internal`: nothing the client can fix (the store failed, a bug). The cause
    /// is logged with its chain; the body says only `internal error`, so no database
    /// path or token can leak.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The body of every error response: `{"error": {"code", "message"}}`. Also the
/// OpenAPI schema of errors, so the document and the wire cannot disagree.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong: a code to branch on and a message to show.
    pub error: ErrorDetail,
}

/// The `error` object of an error response: branch on `code`, which is stable;
/// `message` is prose for a person, not for parsing.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_request`, `rate_limited`.
    pub code: String,
    /// What went wrong and what to fix, for a person.
    pub message: String,
}

/// A handler's result: the error is an [`ApiError`] unless said otherwise.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized | ApiError::SessionRequired | ApiError::BadSlackSignature => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TooManyPending(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_pending"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
            },
        });
        let mut response = (status, body).into_response();
        if let ApiError::Unauthorized = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(id) => {
                ApiError::NotFound(format!("no approval request with id {id}"))
            }
            ServiceError::IdempotencyConflict => ApiError::Conflict {
                code: "idempotency_conflict",
                message: error.to_string(),
            },
            ServiceError::AlreadyDecided(ref approval) => ApiError::Conflict {
                code: "already_decided",
                message: format!("the request is already {}", approval.status.as_str()),
            },
            ServiceError::NotOwner => ApiError::Forbidden(error.to_string()),
            ServiceError::QuorumUnreachable(_) => ApiError::Invalid(error.to_string()),
            ServiceError::Item { index, error } => match ApiError::from(*error) {
                ApiError::Invalid(message) => {
                    ApiError::Invalid(format!("actions[{index}]: {message}"))
                }
                other => other,
            },
            // The HTTP handler words this one itself (it knows the limit).
            ServiceError::TooManyPending { .. } => ApiError::TooManyPending(error.to_string()),
            ServiceError::Store(store) => ApiError::Internal(store.into()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Internal(error.into())
    }
}
