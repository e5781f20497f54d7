//! The agent API: submit a request, wait for its decision, cancel it, read its trail.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, RawQuery, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    extract::{
        body_bytes, deserialize_body, parse_json, parse_wait, url_pairs, Agent, ApprovalPath,
    },
    AppState,
};
use utoipa::ToSchema;

use crate::{
    approval::ServiceError,
    callbacks::CallbackSettings,
    config::MAX_TIMEOUT_SECS,
    error::{ApiError, ErrorBody, Result},
    model::{is_user_id, Approval, ApprovalId, ApprovalView, NewApproval, Status},
    store::Event,
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitBody {
    /// The code (or command) the agent wants to run; shown to reviewers. Not empty.
    #[schema(min_length = 1)]
    pub(super) code: String,
    /// Fence language(s), e.g. `python` or `python, sh`: at most 64 letters, digits,
    /// spaces and `+ # . _ - ,`.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub(super) language: Option<String>,
    /// Anything that helps the reviewer decide; stored, not interpreted.
    #[serde(default)]
    pub(super) context: Option<Value>,
    /// A one-line summary for the Slack message (at most 200 characters).
    #[serde(default)]
    #[schema(max_length = 200)]
    pub(super) title: Option<String>,
    /// Seconds to wait for a decision before it expires (denied). Default:
    /// `GREENLIGHT_DEFAULT_TIMEOUT_SECS`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    pub(super) timeout_secs: Option<u64>,
    /// Slack user id (U…/W…) of the person the agent acts for.
    #[serde(default)]
    pub(super) requester_slack_id: Option<String>,
    /// Approvals needed (1-10, default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub(super) required_approvals: Option<u32>,
    /// Where to POST the signed decision (Standard Webhooks) once it is decided: an
    /// http(s) URL whose host is in `GREENLIGHT_CALLBACK_HOSTS`, for an agent with a
    /// secret in `GREENLIGHT_CALLBACK_SECRETS`; anything else is a 422.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub(super) callback_url: Option<String>,
}

/// `GET /v1/approvals`: newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApprovalList {
    approvals: Vec<ApprovalView>,
}

/// `GET /v1/approvals/{id}/events`: the audit trail, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventList {
    events: Vec<Event>,
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

/// Submit a request for approval.
///
/// Records the request, posts it to Slack and, with `wait`, holds the call until it is
/// decided or `wait` seconds pass. Replaying an `Idempotency-Key` with the same body
/// returns the original request (and is not charged against the rate limit).
#[utoipa::path(
    post,
    path = "/v1/approvals",
    tag = "approvals",
    params(
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60,
         description = "Seconds (0-60) to hold the call waiting for the decision"),
        ("Idempotency-Key" = Option<String>, Header,
         description = "At most 200 characters; same agent + key + body returns the same request"),
    ),
    request_body = SubmitBody,
    responses(
        (status = 200, description = "Decided within `wait`", body = ApprovalView),
        (status = 202, description = "Recorded; still pending", body = ApprovalView),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 409, description = "`idempotency_conflict`: the key was used with another body", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body exceeds 1 MiB", body = ErrorBody),
        (status = 422, description = "`invalid_request`: the message names the field", body = ErrorBody),
        (status = 429, description = "`rate_limited` (with Retry-After) or `too_many_pending`", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until a submission is admitted (rate_limited only)"))),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(agent = %agent.0, request_id = tracing::field::Empty))]
pub(super) async fn submit(
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
            "the request body must be a JSON object with a code field".into(),
        ));
    }
    let body: SubmitBody = deserialize_body(raw)?;
    let idempotency_key = idempotency_key(&headers)?;
    let new = validate(
        body,
        agent.0,
        idempotency_key,
        request_hash,
        state.config.default_timeout.as_secs(),
        &state.config.callbacks,
    )?;
    let approval = admit_and_submit(&state, new).await?;
    // Without `wait`, the state the submission just committed is the answer: no read.
    if wait == 0 || approval.status.is_final() {
        return Ok(reply(&approval));
    }
    let approval = state
        .service
        .wait(approval.id, Duration::from_secs(wait))
        .await?;
    Ok(reply(&approval))
}

/// The request's `Idempotency-Key`, trimmed; `None` without one. Errors (422): more
/// than one such header (which one the agent meant is unknowable, and picking one
/// could merge two different submissions), or a key that is blank, longer than
/// [`MAX_IDEMPOTENCY_KEY_CHARS`] or not visible ASCII.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::Invalid(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
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

/// A submitted title (a request's or a batch's), trimmed (blank is none). Errors:
/// longer than [`MAX_TITLE_CHARS`] characters, or holding the NUL character (which
/// no database stores alike; see `NewApproval::field_with_nul`).
pub(super) fn checked_title(title: Option<String>) -> Result<Option<String>> {
    let title = title.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    if title
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS)
    {
        return Err(ApiError::Invalid(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    if title.as_ref().is_some_and(|t| t.contains('\0')) {
        return Err(ApiError::Invalid(
            "title must not contain the NUL character (U+0000)".into(),
        ));
    }
    Ok(title)
}

/// A submitted `timeout_secs`, or the configured default when absent. Error: outside
/// 1..=[`MAX_TIMEOUT_SECS`] seconds.
pub(super) fn checked_timeout(timeout_secs: Option<u64>, default_secs: u64) -> Result<u64> {
    let timeout_secs = timeout_secs.unwrap_or(default_secs);
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
        return Err(ApiError::Invalid(format!(
            "timeout_secs must be from 1 to {MAX_TIMEOUT_SECS}"
        )));
    }
    Ok(timeout_secs)
}

pub(super) fn validate(
    body: SubmitBody,
    agent: String,
    idempotency_key: Option<String>,
    request_hash: String,
    default_timeout_secs: u64,
    callbacks: &CallbackSettings,
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
    let title = checked_title(body.title)?;
    let timeout_secs = checked_timeout(body.timeout_secs, default_timeout_secs)?;
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
    let callback_url = body
        .callback_url
        .map(|url| callbacks.check_url(&agent, &url))
        .transpose()
        .map_err(ApiError::Invalid)?;
    let new = NewApproval {
        callback_url,
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
    };
    if let Some(field) = new.field_with_nul() {
        return invalid(format!(
            "{field} must not contain the NUL character (U+0000)"
        ));
    }
    Ok(new)
}

/// Read a request; with `wait`, long-poll until it is decided.
#[utoipa::path(
    get,
    path = "/v1/approvals/{id}",
    tag = "approvals",
    params(
        ("id" = String, Path, description = "The approval id (a UUID)"),
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60,
         description = "Seconds (0-60) to wait while it is pending"),
    ),
    responses(
        (status = 200, description = "The request, decided or still pending", body = ApprovalView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another agent's request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_request` (a bad `wait`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(request_id = %id))]
pub(super) async fn fetch(
    State(state): State<AppState>,
    agent: Agent,
    ApprovalPath(id): ApprovalPath,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let wait = parse_wait(query.as_deref())?;
    owned_by(&state, id, &agent).await?;
    let approval = state.service.wait(id, Duration::from_secs(wait)).await?;
    Ok(Json(json!(approval.view())))
}

/// Withdraw a pending request (only the agent that submitted it may).
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/cancel",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval id (a UUID)")),
    responses(
        (status = 200, description = "Cancelled", body = ApprovalView),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another agent's request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_decided`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(request_id = %id, agent = %agent.0))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    agent: Agent,
    ApprovalPath(id): ApprovalPath,
) -> Result<Json<Value>> {
    let approval = state.service.cancel(id, &agent.0).await?;
    Ok(Json(json!(approval.view())))
}

/// A request's audit trail.
#[utoipa::path(
    get,
    path = "/v1/approvals/{id}/events",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval id (a UUID)")),
    responses(
        (status = 200, description = "Events, oldest first", body = EventList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: another agent's request", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(request_id = %id))]
pub(super) async fn events(
    State(state): State<AppState>,
    agent: Agent,
    ApprovalPath(id): ApprovalPath,
) -> Result<Json<EventList>> {
    owned_by(&state, id, &agent).await?;
    let events = state.service.store().events(id).await?;
    Ok(Json(EventList { events }))
}

/// Refuses (403 `forbidden`) a request another agent submitted: a request's code and
/// context may hold what only its agent should see, so an agent reads, waits on and
/// cancels only its own. 404 when there is no such request.
async fn owned_by(state: &AppState, id: ApprovalId, agent: &Agent) -> Result<()> {
    let approval = state.service.get(id).await?;
    if approval.agent != agent.0 {
        return Err(ServiceError::NotOwner.into());
    }
    Ok(())
}

/// List the agent's own requests, newest first.
#[utoipa::path(
    get,
    path = "/v1/approvals",
    tag = "approvals",
    params(
        ("status" = Option<Status>, Query, description = "Only requests in this state"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "At most this many (default 50)"),
    ),
    responses(
        (status = 200, description = "The requests", body = ApprovalList),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 422, description = "`invalid_request` (a bad `status` or `limit`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(state): State<AppState>,
    agent: Agent,
    RawQuery(query): RawQuery,
) -> Result<Json<ApprovalList>> {
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
    let approvals = state
        .service
        .store()
        .list(Some(&agent.0), status, limit)
        .await?;
    let approvals = approvals.iter().map(Approval::view).collect();
    Ok(Json(ApprovalList { approvals }))
}

/// Submits `new` through the agent's limits (rate, pending cap, idempotent replays not
/// charged), and names the request in the current span. The one way an agent's
/// submission enters the service, for `/v1/approvals` and the hooks alike.
pub(crate) async fn admit_and_submit(
    state: &AppState,
    new: NewApproval,
) -> Result<Approval, ApiError> {
    let admission = state
        .limits
        .admit(
            state.service.store(),
            &new.agent,
            new.idempotency_key.as_deref(),
        )
        .await?;
    let (approval, created) = match state
        .service
        .submit(new, Some(state.limits.max_pending()))
        .await
    {
        Err(ServiceError::TooManyPending { pending }) => {
            return Err(state.limits.over_cap(admission, pending).await)
        }
        other => other?,
    };
    if !created {
        admission.replayed().await;
    }
    tracing::Span::current().record("request_id", tracing::field::display(approval.id));
    Ok(approval)
}
