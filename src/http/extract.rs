//! Request extraction with our own error bodies: axum's built-in rejections answer in
//! plain text, and every error here must be JSON that names the problem.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, FromRequestParts, Path},
    http::{header::AUTHORIZATION, request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use super::{AppState, MAX_BODY_BYTES};
use crate::{error::ApiError, model::ApprovalId};

/// The authenticated agent: the name its bearer token is configured under.
#[derive(Debug, Clone)]
pub struct Agent(pub String);

impl FromRequestParts<AppState> for Agent {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(ApiError::Unauthorized)?;
        state
            .config
            .agent_for_token(presented)
            .map(|name| Agent(name.to_owned()))
            .ok_or(ApiError::Unauthorized)
    }
}

/// The `{id}` of an approval in the path. Anything that is not an approval id (bad
/// UUID, bad percent-encoding) is simply a request that does not exist: a JSON 404,
/// never axum's plain-text rejection.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalPath(pub ApprovalId);

impl FromRequestParts<AppState> for ApprovalPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let raw = match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(raw)) => raw,
            Err(_) => {
                return Err(ApiError::NotFound(
                    "no approval request with that id".into(),
                ))
            }
        };
        ApprovalId::parse(&raw)
            .map(ApprovalPath)
            .ok_or_else(|| ApiError::NotFound(format!("no approval request with id {raw:?}")))
    }
}

/// The raw body, or the right error when it could not be read (413 when too large).
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            }
        } else {
            ApiError::MalformedJson(format!("could not read the request body: {rejection}"))
        }
    })
}

/// Parses JSON, telling a syntax error (400) from a well-formed body of the wrong
/// shape (422, with serde's message naming the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data => ApiError::Invalid(format!("invalid request body: {error}")),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::MalformedJson(format!("request body is not valid JSON: {error}"))
            }
        }
    })
}

/// `?wait=N`: seconds to hold a long-poll, bounded so a proxy's idle timeout is not hit.
pub const MAX_WAIT_SECS: u64 = 60;

pub fn parse_wait(query: Option<&str>) -> Result<u64, ApiError> {
    let mut wait = 0;
    for (key, value) in url_pairs(query) {
        if key == "wait" {
            wait = value
                .parse::<u64>()
                .ok()
                .filter(|secs| *secs <= MAX_WAIT_SECS)
                .ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}"
                    ))
                })?;
        }
    }
    Ok(wait)
}

pub fn url_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default())
        .unwrap_or_default()
}
