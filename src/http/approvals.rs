//! The agent API: submit a request, wait for its decision, cancel it, read its trail.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    extract::{body_bytes, parse_json, parse_wait, url_pairs, Agent},
    AppState,
};
use crate::{
    approval::{Approval, ApprovalId, NewApproval, Status},
    config::MAX_TIMEOUT_SECS,
    error::{ApiError, Result},
    slack::blocks::is_user_id,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/approvals", post(submit).get(list))
        .route("/v1/approvals/{id}", get(fetch))
        .route("/v1/approvals/{id}/cancel", post(cancel))
        .route("/v1/approvals/{id}/events", get(events))
}

const MAX_TITLE_CHARS: usize = 200;
/// Room for a few fence languages joined with ", " ("python, sh").
const MAX_LANGUAGE_CHARS: usize = 64;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
const MAX_REQUIRED_APPROVALS: u32 = 10;
const MAX_LIST_LIMIT: u32 = 500;

/// The body of `POST /v1/approvals`. Unknown fields are refused so a typo such as
/// `timeout` for `timeout_secs` is reported instead of silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    code: String,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    requester_slack_id: Option<String>,
    #[serde(default)]
    required_approvals: Option<u32>,
}

type Reply = (StatusCode, Json<Value>);

fn reply(approval: &Approval) -> Reply {
    let status = if approval.status == Status::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(json!(approval.view())))
}

#[tracing::instrument(skip_all, fields(agent = %agent.0))]
async fn submit(
    State(state): State<AppState>,
    agent: Agent,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Reply> {
    let wait = parse_wait(query.as_deref())?;
    let bytes = body_bytes(body)?;
    let raw: Value = parse_json(&bytes)?;
    let request_hash = hex::encode(Sha256::digest(raw.to_string().as_bytes()));
    if !raw.is_object() {
        // serde would otherwise read a JSON array positionally into the struct.
        return Err(ApiError::Invalid(
            "the request body must be a JSON object (a struct with a code field)".into(),
        ));
    }
    let body: SubmitBody = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::Invalid(format!("invalid request body: {inner}"))
        } else {
            ApiError::Invalid(format!("invalid request body: {path}: {inner}"))
        }
    })?;
    let idempotency_key = idempotency_key(&headers)?;
    let new = validate(
        body,
        agent.0,
        idempotency_key,
        request_hash,
        state.config.default_timeout.as_secs(),
    )?;
    let (approval, _created) = state.service.submit(new).await?;
    let approval = state
        .service
        .wait(approval.id, Duration::from_secs(wait))
        .await?;
    Ok(reply(&approval))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_CHARS)
        .ok_or_else(|| {
            ApiError::Invalid(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"
            ))
        })?;
    Ok(Some(key.to_owned()))
}

fn validate(
    body: SubmitBody,
    agent: String,
    idempotency_key: Option<String>,
    request_hash: String,
    default_timeout_secs: u64,
) -> Result<NewApproval> {
    let invalid = |msg: String| Err(ApiError::Invalid(msg));
    if body.code.trim().is_empty() {
        return invalid("code must not be empty".into());
    }
    let language = body
        .language
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty());
    if let Some(language) = &language {
        if language.chars().count() > MAX_LANGUAGE_CHARS
            || !language
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+#._-, ".contains(c))
        {
            return invalid(format!(
                "language must be at most {MAX_LANGUAGE_CHARS} characters of letters, digits, spaces or + # . _ - ,"
            ));
        }
    }
    let title = body
        .title
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if title
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS)
    {
        return invalid(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        ));
    }
    let timeout_secs = body.timeout_secs.unwrap_or(default_timeout_secs);
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
        return invalid(format!("timeout_secs must be from 1 to {MAX_TIMEOUT_SECS}"));
    }
    if let Some(id) = &body.requester_slack_id {
        if !is_user_id(id) {
            return invalid("requester_slack_id must be a Slack user id such as U0123ABCD".into());
        }
    }
    let required_approvals = body.required_approvals.unwrap_or(1);
    if !(1..=MAX_REQUIRED_APPROVALS).contains(&required_approvals) {
        return invalid(format!(
            "required_approvals must be from 1 to {MAX_REQUIRED_APPROVALS}"
        ));
    }
    Ok(NewApproval {
        agent,
        code: body.code,
        language,
        title,
        context: body.context.filter(|c| !c.is_null()),
        timeout_secs,
        requester_slack_id: body.requester_slack_id,
        required_approvals,
        idempotency_key,
        request_hash,
    })
}

fn parse_id(raw: &str) -> Result<ApprovalId> {
    ApprovalId::parse(raw)
        .ok_or_else(|| ApiError::NotFound(format!("no approval request with id {raw:?}")))
}

#[tracing::instrument(skip_all, fields(request_id = %id))]
async fn fetch(
    State(state): State<AppState>,
    _agent: Agent,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let wait = parse_wait(query.as_deref())?;
    let approval = state
        .service
        .wait(parse_id(&id)?, Duration::from_secs(wait))
        .await?;
    Ok(Json(json!(approval.view())))
}

#[tracing::instrument(skip_all, fields(request_id = %id, agent = %agent.0))]
async fn cancel(
    State(state): State<AppState>,
    agent: Agent,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let approval = state.service.cancel(parse_id(&id)?, &agent.0).await?;
    Ok(Json(json!(approval.view())))
}

async fn events(
    State(state): State<AppState>,
    _agent: Agent,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let id = parse_id(&id)?;
    state.service.get(id).await?;
    let events = state.service.store().events(id).await?;
    Ok(Json(json!({ "events": events })))
}

async fn list(
    State(state): State<AppState>,
    _agent: Agent,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let mut status = None;
    let mut limit = 50;
    for (key, value) in url_pairs(query.as_deref()) {
        match key.as_str() {
            "status" => {
                status = Some(Status::parse(&value).ok_or_else(|| {
                    ApiError::Invalid(
                        "status must be one of pending, approved, denied, expired, cancelled"
                            .into(),
                    )
                })?)
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIST_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::Invalid(format!("limit must be from 1 to {MAX_LIST_LIMIT}"))
                    })?
            }
            _ => {}
        }
    }
    let approvals = state.service.store().list(status, limit).await?;
    let views: Vec<_> = approvals.iter().map(Approval::view).collect();
    Ok(Json(json!({ "approvals": views })))
}
