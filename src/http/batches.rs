//! The batch API: submit several actions at once (`POST /v1/batches`) and read or
//! long-poll them together (`GET /v1/batches/{id}`). Each action is validated exactly
//! as `POST /v1/approvals` validates a body, and becomes an ordinary request.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, RawQuery, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
    Json, Router,
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{
    approvals::{checked_timeout, checked_title, idempotency_key, validate, SubmitBody},
    extract::{body_bytes, deserialize_body, parse_json, parse_wait, Agent, ApprovalPath},
    AppState,
};
use crate::{
    approval::ServiceError,
    error::{ApiError, ErrorBody, Result},
    model::{ApprovalId, BatchStatus, BatchView},
    store::NewBatch,
};

/// Actions one batch may carry: a turn's tool calls, and what one Slack card can show
/// (two blocks per item within Slack's 50 blocks per message).
pub const MAX_ACTIONS: usize = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/batches", post(submit))
        .route("/v1/batches/{id}", get(fetch))
}

/// The body of `POST /v1/batches`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    /// 1 to 20 submissions, each as `POST /v1/approvals` takes it (without
    /// `timeout_secs` or `callback_url`, which are the batch's).
    #[schema(min_items = 1, max_items = 20)]
    actions: Vec<SubmitBody>,
    /// A one-line summary for the card (at most 200 characters).
    #[serde(default)]
    #[schema(max_length = 200)]
    title: Option<String>,
    /// Seconds every item waits before it expires (denied). Default:
    /// `GREENLIGHT_DEFAULT_TIMEOUT_SECS`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    timeout_secs: Option<u64>,
    /// Where to POST one signed `batch.decided` callback once every item is decided.
    #[serde(default)]
    #[schema(max_length = 2000)]
    callback_url: Option<String>,
}

fn reply(batch: &BatchView) -> (StatusCode, Json<Value>) {
    let status = if batch.status == BatchStatus::Pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(json!(batch)))
}

/// Submit several actions for approval at once.
///
/// Each action becomes an ordinary request (own id, policy rule and decision; its
/// deadline is the batch's). Reviewers see one Slack card with Approve / Deny per item.
#[utoipa::path(
    post,
    path = "/v1/batches",
    tag = "approvals",
    params(
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60,
         description = "Seconds (0-60) to hold the call until every item is decided"),
        ("Idempotency-Key" = Option<String>, Header,
         description = "Same agent + key + body returns the same batch"),
    ),
    request_body = BatchBody,
    responses(
        (status = 200, description = "Every item decided", body = BatchView),
        (status = 202, description = "Recorded; some items still pending", body = BatchView),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`idempotency_conflict`", body = ErrorBody),
        (status = 422, description = "`invalid_request`: the message names the field (`actions[2].code`, `callback_url`)", body = ErrorBody),
        (status = 429, description = "`rate_limited` or `too_many_pending`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(agent = %agent.0))]
pub(super) async fn submit(
    State(state): State<AppState>,
    agent: Agent,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let wait = parse_wait(query.as_deref())?;
    let bytes = body_bytes(body)?;
    let raw: Value = parse_json(&bytes)?;
    let request_hash = hex::encode(Sha256::digest(raw.to_string().as_bytes()));
    let item_raws: Vec<Value> = raw
        .get("actions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let body: BatchBody = deserialize_body(raw)?;
    if body.actions.is_empty() || body.actions.len() > MAX_ACTIONS {
        return Err(ApiError::Invalid(format!(
            "actions must hold 1 to {MAX_ACTIONS} submissions"
        )));
    }
    let timeout_secs = checked_timeout(body.timeout_secs, state.config.default_timeout.as_secs())?;
    let title = checked_title(body.title)?;
    let callback_url = body
        .callback_url
        .map(|url| state.config.callbacks.check_url(&agent.0, &url))
        .transpose()
        .map_err(ApiError::Invalid)?;
    let mut items = Vec::with_capacity(body.actions.len());
    for (i, (mut action, raw)) in body.actions.into_iter().zip(item_raws).enumerate() {
        if action.callback_url.is_some() || action.timeout_secs.is_some() {
            return Err(ApiError::Invalid(format!(
                "actions[{i}]: callback_url and timeout_secs belong to the batch, not to an action"
            )));
        }
        action.timeout_secs = Some(timeout_secs);
        let hash = hex::encode(Sha256::digest(raw.to_string().as_bytes()));
        let new = validate(
            action,
            agent.0.clone(),
            None,
            hash,
            timeout_secs,
            &state.config.callbacks,
        )
        .map_err(|e| match e {
            ApiError::Invalid(message) => ApiError::Invalid(format!("actions[{i}]: {message}")),
            other => other,
        })?;
        items.push(new);
    }
    let idempotency_key = idempotency_key(&headers)?;
    let actions = u32::try_from(items.len()).unwrap_or(u32::MAX);
    let admission = state
        .limits
        .admit_batch(
            state.service.store(),
            &agent.0,
            idempotency_key.as_deref(),
            actions,
        )
        .await?;
    let batch = NewBatch {
        id: ApprovalId::new(),
        agent: agent.0.clone(),
        title,
        callback_url,
        idempotency_key,
        request_hash,
        created_at: Utc::now(),
    };
    let (view, created) = match state
        .service
        .submit_batch(batch, items, Some(state.limits.max_pending()))
        .await
    {
        Err(ServiceError::TooManyPending { pending }) => {
            return Err(state
                .limits
                .batch_over_cap(admission, pending, actions)
                .await)
        }
        other => other?,
    };
    if !created {
        admission.replayed().await;
    }
    if wait == 0 || view.status == BatchStatus::Decided {
        return Ok(reply(&view));
    }
    let view = state
        .service
        .wait_batch(view.id, Duration::from_secs(wait))
        .await?;
    Ok(reply(&view))
}

/// Read a batch; with `wait`, long-poll until every item is decided.
#[utoipa::path(
    get,
    path = "/v1/batches/{id}",
    tag = "approvals",
    params(
        ("id" = String, Path, description = "The batch id (a UUID)"),
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60,
         description = "Seconds (0-60) to wait while an item is pending"),
    ),
    responses(
        (status = 200, description = "The batch, decided or not", body = BatchView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another agent's batch", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(super) async fn fetch(
    State(state): State<AppState>,
    agent: Agent,
    ApprovalPath(id): ApprovalPath,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let wait = parse_wait(query.as_deref())?;
    // An agent reads and waits on its own batches only, as with single requests.
    match state.service.store().batch(id).await? {
        None => return Err(ApiError::NotFound(format!("no batch with id {id}"))),
        Some(batch) if batch.agent != agent.0 => {
            return Err(ServiceError::NotOwner.into());
        }
        Some(_) => {}
    }
    let view = state
        .service
        .wait_batch(id, Duration::from_secs(wait))
        .await
        .map_err(|e| match e {
            ServiceError::NotFound(id) => ApiError::NotFound(format!("no batch with id {id}")),
            other => other.into(),
        })?;
    Ok(Json(json!(view)))
}
