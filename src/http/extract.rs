//! Request extraction with our own error bodies: axum's built-in rejections answer in
//! plain text, and every error here must be JSON that names the problem.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, FromRequestParts, Path},
    http::{header::AUTHORIZATION, request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use super::{AppState, MAX_BODY_BYTES};
use crate::{
    error::{wording::api_terms, ApiError},
    model::ApprovalId,
};

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
/// shape (422, naming the field in API terms: see `error::wording`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        use serde_json::error::Category;
        match error.classify() {
            Category::Data => ApiError::Invalid(format!(
                "invalid request body: {}",
                api_terms(&error.to_string())
            )),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::MalformedJson(format!("request body is not valid JSON: {error}"))
            }
        }
    })
}

/// Reads a JSON object already parsed into `raw` as the body type `T`: a 422 whose
/// message names the field by its path in the body (`actions[0].code`) and says what
/// is wrong in API terms, never in Rust's (no type names, no serde wording).
pub fn deserialize_body<T: DeserializeOwned>(raw: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Invalid(body_problem(&path, &e.into_inner().to_string()))
    })
}

/// "invalid request body: …" for serde's `message` about the field at `path` (`.` for
/// the body itself).
pub fn body_problem(path: &str, message: &str) -> String {
    let text = api_terms(message);
    // A missing or unknown field's message names it, and its path ends with it: the
    // path then says only where it sits ("actions[0]: code is required").
    let name = text.split(' ').next().unwrap_or_default();
    let path = if path == name {
        "."
    } else {
        path.strip_suffix(name)
            .and_then(|p| p.strip_suffix('.'))
            .unwrap_or(path)
    };
    match path {
        "." | "" => format!("invalid request body: {text}"),
        path => format!("invalid request body: {path}: {text}"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct SubmitBody {
        code: String,
        timeout_secs: Option<u64>,
        items: Option<Vec<Item>>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        kind: Kind,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Kind {
        Approve,
        Deny,
    }

    fn problem(body: serde_json::Value) -> String {
        match deserialize_body::<SubmitBody>(body) {
            Err(ApiError::Invalid(message)) => message,
            other => panic!("expected a 422, got {other:?}"),
        }
    }

    #[test]
    fn body_errors_speak_json_not_rust() {
        let cases = [
            (serde_json::json!({}), "invalid request body: code is required"),
            (
                serde_json::json!({"code": "ls", "timeout": 5}),
                "invalid request body: timeout is not a field of this body (allowed: code, timeout_secs, items)",
            ),
            (
                serde_json::json!({"code": 5}),
                "invalid request body: code: must be a string, not integer 5",
            ),
            (
                serde_json::json!({"code": "ls", "timeout_secs": "soon"}),
                "invalid request body: timeout_secs: must be a whole number (0 or more), not string \"soon\"",
            ),
            (
                serde_json::json!({"code": "ls", "timeout_secs": -1}),
                "invalid request body: timeout_secs: must be a whole number (0 or more), not -1",
            ),
            (
                serde_json::json!({"code": "ls", "items": [{"kind": "maybe"}]}),
                "invalid request body: items[0].kind: \"maybe\" is not allowed here (allowed: approve or deny)",
            ),
            (
                serde_json::json!({"code": "ls", "items": {"kind": "deny"}}),
                "invalid request body: items: must be a JSON array, not a JSON object",
            ),
            (
                serde_json::json!("ls"),
                "invalid request body: must be a JSON object, not string \"ls\"",
            ),
        ];
        for (body, expected) in cases {
            let message = problem(body);
            assert_eq!(message, expected);
            for leak in ["SubmitBody", "struct", "u64", "`", "variant", "Kind"] {
                assert!(!message.contains(leak), "{leak} in {message}");
            }
        }
    }

    #[test]
    fn parse_json_words_shape_errors_alike() {
        match parse_json::<SubmitBody>(br#"{"code": "ls", "timeout_secs": true}"#) {
            Err(ApiError::Invalid(message)) => assert_eq!(
                message,
                "invalid request body: must be a whole number (0 or more), not boolean true"
            ),
            other => panic!("{other:?}"),
        }
    }
}
