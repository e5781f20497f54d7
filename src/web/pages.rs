//! The signed-in pages: the pending list, a request's view, Approve and Deny, and
//! the history. Deciding calls the approval service exactly as a Slack click does.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use chrono::Utc;
use serde::Deserialize;

use super::{
    auth::{csrf_refused, form, html, json_error, SignedIn},
    highlight,
    views::{
        Choice, EventRow, HistoryPage, Note, PendingList, PendingPage, RequestPage, Row, StatusPart,
    },
};
use crate::{
    approval::{approvers::Refusal, Answer, ReasonOutcome, ServiceError},
    http::AppState,
    model::{Approval, ApprovalId, Status},
    store::history::HistoryFilter,
};

/// Most requests a list shows.
const LIST_LIMIT: u32 = 200;
/// Longest deny reason accepted, as in Slack's reason dialog.
pub const MAX_REASON_CHARS: usize = 3000;

/// Failures of a page handler.
pub enum PageError {
    NotFound,
    Internal(ServiceError),
}

impl From<ServiceError> for PageError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::NotFound(_) => PageError::NotFound,
            other => PageError::Internal(other),
        }
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(error: crate::store::StoreError) -> Self {
        PageError::Internal(ServiceError::Store(error))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::NotFound => json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no approval request with that id",
            ),
            PageError::Internal(error) => {
                tracing::error!(%error, "web page failed");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// What a page handler answers.
pub type Page = Result<Response, PageError>;

fn parse_id(raw: &str) -> Result<ApprovalId, PageError> {
    ApprovalId::parse(raw).ok_or(PageError::NotFound)
}

/// The pending requests whose time is not up, newest first.
pub async fn pending_list(state: &AppState) -> Result<PendingList, PageError> {
    let now = Utc::now();
    // One more than shown, to know whether the list leaves some out.
    let mut rows: Vec<Row> = state
        .service
        .store()
        .list(None, Some(Status::Pending), LIST_LIMIT + 1)
        .await?
        .iter()
        .filter(|a| a.expires_at > now)
        .map(Row::of)
        .collect();
    let more = rows.len() > LIST_LIMIT as usize;
    rows.truncate(LIST_LIMIT as usize);
    Ok(PendingList { rows, more })
}

/// The pending page: the live list, the standing grants, and `note` at the top.
pub async fn pending_page(
    state: &AppState,
    signed: &SignedIn,
    note: Option<Note>,
    status: StatusCode,
) -> Page {
    let list = pending_list(state).await?;
    let grants = super::grants::active(state).await?;
    Ok(html(
        status,
        &PendingPage {
            chrome: signed.chrome(),
            note,
            list,
            grants,
        },
    ))
}

/// `GET /web`: the pending list, kept live by `live::events`, and the standing grants.
pub async fn pending(
    signed: SignedIn,
    State(state): State<AppState>,
    Query(query): Query<NoteQuery>,
) -> Page {
    let note = done_note(query.note.as_deref());
    pending_page(&state, &signed, note, StatusCode::OK).await
}

/// Why a reviewer who approved a request still waiting for others has no Approve
/// button (a second click would not count).
const ALREADY_VOTED: &str = "You have approved this request; it needs another approver.";

/// Why the page hides a button, in the page's words.
fn hint(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::NotApprover => "You are not an approver for this request.",
        Refusal::SelfApproval => {
            "You asked for this request, so you cannot approve it yourself; someone else must. You may still deny it."
        }
        Refusal::Unverified => {
            "greenlight could not verify that you are an approver for this request (the approver group's members could not be read)."
        }
        Refusal::PolicyForbids => {
            "The approval policy now denies requests like this one, so it can no longer be approved."
        }
        Refusal::GrantNotOffered => "The approval policy offers no standing grant for this request.",
    }
}

async fn status_part(
    state: &AppState,
    signed: &SignedIn,
    approval: &Approval,
) -> Result<(StatusPart, Option<String>), PageError> {
    let progress = state.service.progress(approval).await?;
    let voted = progress.votes.contains(&signed.reviewer.id);
    let (cannot_approve, cannot_deny) = if approval.status == Status::Pending {
        let service = &state.service;
        (
            if voted {
                Some(ALREADY_VOTED)
            } else {
                service
                    .refusal_for(approval, &signed.reviewer, true)
                    .await
                    .map(hint)
            },
            service
                .refusal_for(approval, &signed.reviewer, false)
                .await
                .map(hint),
        )
    } else {
        (None, None)
    };
    Ok((
        StatusPart::of(
            approval,
            &signed.csrf,
            progress
                .votes
                .iter()
                .map(|id| state.web.display_name(id))
                .collect(),
            cannot_approve,
            cannot_deny,
        ),
        progress.high_risk_rule,
    ))
}

/// Everything the request view shows.
async fn request_page(
    state: &AppState,
    signed: &SignedIn,
    id: ApprovalId,
    note: Option<Note>,
) -> Result<RequestPage, PageError> {
    let approval = state.service.get(id).await?;
    let events = state.service.store().events(id).await?;
    // The routing decision is in the audit trail, as it was when the request came in.
    let rule = events
        .iter()
        .find(|e| e.kind == "routed" || e.kind == "auto_decided")
        .and_then(|e| e.detail.get("rule").and_then(|r| r.as_str()))
        .unwrap_or("(none recorded)")
        .to_owned();
    let (status, high_risk_rule) = status_part(state, signed, &approval).await?;
    let mut batch = Vec::new();
    let mut batch_title = None;
    if let Some(found) = state.service.store().batch_of(id).await? {
        batch_title = found
            .title
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        for item in found.items {
            if let Some(item) = state.service.store().get(item).await? {
                batch.push(Row::of(&item));
            }
        }
    }
    let (code, language) = (approval.code.clone(), approval.language.clone());
    let lines = tokio::task::spawn_blocking(move || highlight::lines(&code, language.as_deref()))
        .await
        .unwrap_or_default();
    Ok(RequestPage {
        chrome: signed.chrome(),
        note,
        row: Row::of(&approval),
        language: approval.language.clone().unwrap_or_default(),
        lines,
        context: approval
            .context
            .as_ref()
            .map(|c| serde_json::to_string_pretty(c).unwrap_or_default()),
        rule,
        high_risk_rule,
        status,
        events: events.iter().map(EventRow::of).collect(),
        batch,
        batch_title,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct NoteQuery {
    #[serde(default)]
    note: Option<String>,
}

/// The message after a successful action (POST, then redirect, then GET), from a
/// fixed list: the query string never puts text of its own on the page.
fn done_note(code: Option<&str>) -> Option<Note> {
    let text = match code? {
        "approved" => "You approved this request.",
        "counted" => "Your approval was counted; more approvers are needed.",
        "repeat" => "You had already approved this request; another approver is needed.",
        "denied" => "You denied this request.",
        "revoked" => "The standing grant is revoked: it approves nothing from now on.",
        _ => return None,
    };
    Some(Note {
        class: "done",
        code: None,
        text: text.into(),
    })
}

/// `GET /web/requests/{id}`.
pub async fn request(
    signed: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<NoteQuery>,
) -> Page {
    let id = parse_id(&id)?;
    let page = request_page(&state, &signed, id, done_note(query.note.as_deref())).await?;
    Ok(html(StatusCode::OK, &page))
}

/// `GET /web/requests/{id}/status`: the decision part alone, for live updates.
pub async fn status(
    signed: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Page {
    let approval = state.service.get(parse_id(&id)?).await?;
    let (part, _) = status_part(&state, &signed, &approval).await?;
    Ok(html(StatusCode::OK, &part))
}

/// The request view with a refusal at the top, answered with `status`; `code` names
/// the refusal as the API would (`forbidden`, `already_decided`, …).
async fn refused(
    state: &AppState,
    signed: &SignedIn,
    id: ApprovalId,
    (status, code): (StatusCode, &'static str),
    text: String,
) -> Page {
    let note = Note {
        class: "refused",
        code: Some(code),
        text,
    };
    let page = request_page(state, signed, id, Some(note)).await?;
    Ok(html(status, &page))
}

fn after(id: ApprovalId, note: &str) -> Response {
    Redirect::to(&format!("/web/requests/{id}?note={note}")).into_response()
}

/// `POST /web/requests/{id}/approve`: the same call as Slack's Approve button.
pub async fn approve(
    signed: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    if let Err(refused) = signed.check_csrf_form(&body) {
        return Ok(*refused);
    }
    let id = parse_id(&id)?;
    match state.service.approve(id, &signed.reviewer).await? {
        Answer::Decided(_) => Ok(after(id, "approved")),
        Answer::Counted { .. } => Ok(after(id, "counted")),
        Answer::RepeatVote { .. } => Ok(after(id, "repeat")),
        Answer::Unknown => Err(PageError::NotFound),
        Answer::Refused { refusal, .. } => {
            refused(&state, &signed, id, FORBIDDEN, refusal.explain().into()).await
        }
        Answer::AlreadyFinal { approval, .. } => {
            let text = already_final(&state, &approval, "approval");
            refused(&state, &signed, id, ALREADY_DECIDED, text).await
        }
        // Only a Deny click answers these.
        Answer::ReasonNeeded(_) | Answer::RepeatDeny => Ok(after(id, "")),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DenyForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
}

/// `POST /web/requests/{id}/deny`: the same call as Slack's reason dialog; a reason
/// is required.
pub async fn deny(
    signed: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    let form: DenyForm = form(&body);
    if !signed.csrf_ok(form.csrf.as_deref()) {
        return Ok(csrf_refused());
    }
    let id = parse_id(&id)?;
    let reason = form.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS || reason.contains('\0') {
        let text = format!(
            "A reason is required to deny (at most {MAX_REASON_CHARS} characters, no NUL character): the agent reads it."
        );
        let invalid = (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        return refused(&state, &signed, id, invalid, text).await;
    }
    match state.service.deny(id, &signed.reviewer, reason).await? {
        ReasonOutcome::Denied => Ok(after(id, "denied")),
        ReasonOutcome::Refused(text) => refused(&state, &signed, id, FORBIDDEN, text).await,
        ReasonOutcome::AlreadyFinal(approval) => {
            let text = already_final(&state, &approval, "denial");
            refused(&state, &signed, id, ALREADY_DECIDED, text).await
        }
    }
}

/// A click by a reviewer with no say over the request (docs/api-contract.md).
const FORBIDDEN: (StatusCode, &str) = (StatusCode::FORBIDDEN, "forbidden");

/// A click, either button, on a request that had already ended: 409, as the agent API
/// answers for a decided request. Whoever clicked (a reviewer who lost a race, or one
/// whose page was open when the agent withdrew) could have decided it; they were late.
const ALREADY_DECIDED: (StatusCode, &str) = (StatusCode::CONFLICT, "already_decided");

/// What a click on a request that had already ended is told: how it ended and who
/// ended it (reviewers as the page names them, or the agent that withdrew it), and
/// that the reader's `click` ("approval", "denial") changed nothing.
fn already_final(state: &AppState, approval: &Approval, click: &str) -> String {
    let status = approval.status.as_str();
    let by = approval
        .decided_by
        .as_deref()
        .filter(|by| !by.is_empty())
        .map(|by| {
            by.split(',')
                .map(|id| state.web.display_name(id))
                .collect::<Vec<_>>()
                .join(", ")
        });
    let how = match (approval.status, by) {
        (Status::Expired, _) => "already expired".to_owned(),
        // Its reason says who withdrew it: the agent, or greenlight at shutdown.
        (Status::Cancelled, _) => format!("was already cancelled ({})", approval.reason),
        (_, Some(by)) => format!("was already {status} by {by}"),
        (_, None) => format!("was already {status}"),
    };
    format!("This request {how}; your {click} changed nothing.")
}

#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    reviewer: Option<String>,
}

/// `GET /web/history?status=&agent=&reviewer=`.
pub async fn history(
    signed: SignedIn,
    State(state): State<AppState>,
    Query(query): Query<HistoryQuery>,
) -> Page {
    let non_empty = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let status = non_empty(query.status).and_then(|s| Status::parse(&s));
    let agent = non_empty(query.agent);
    let reviewer = non_empty(query.reviewer);
    let filter = HistoryFilter {
        status,
        agent: agent.clone(),
        reviewer: reviewer.clone(),
    };
    let rows = state
        .service
        .store()
        .history(&filter, LIST_LIMIT)
        .await?
        .iter()
        .map(Row::of)
        .collect();
    let mut statuses = vec![Choice {
        value: String::new(),
        label: "any".into(),
        selected: status.is_none(),
    }];
    statuses.extend(Status::ALL.into_iter().map(|s| Choice {
        value: s.as_str().into(),
        label: s.as_str().into(),
        selected: status == Some(s),
    }));
    let mut reviewers = vec![Choice {
        value: String::new(),
        label: "anyone".into(),
        selected: reviewer.is_none(),
    }];
    reviewers.extend(state.web.inner.reviewers.iter().map(|r| {
        let id = r.id();
        Choice {
            selected: reviewer.as_deref() == Some(id.as_str()),
            label: r.name.clone(),
            value: id,
        }
    }));
    Ok(html(
        StatusCode::OK,
        &HistoryPage {
            chrome: signed.chrome(),
            statuses,
            agent: agent.unwrap_or_default(),
            reviewers,
            rows,
        },
    ))
}
