//! `POST /v1/hooks/claude-code`: Claude Code's HTTP hook (`{"type": "http", "url": …}`).
//!
//! The body is the hook input exactly as Claude Code posts it (`PreToolUse` or
//! `PermissionRequest`, see `crate::hooks::input`), with the agent's bearer token. The
//! tool call becomes an approval request (`crate::hooks::render`) that goes through
//! the policy and Slack like any other; the call is held until it is decided, or until
//! the hook budget (`GREENLIGHT_HOOK_BUDGET_SECS`, below the host's hook timeout) runs
//! out, when the request expires and the answer is an explicit deny that says so.
//!
//! A request the policy decides on its own without posting anything (an `auto_approve`
//! or `auto_deny` rule without `notify`) is answered as soon as the rule is known, and
//! its record (the request, `auto_decided` in the audit trail) is written right after,
//! by a task of its own: a hook runs on every tool call of every session, and waiting
//! for the commit (an fsync) behind whatever else the writer is doing would put that
//! on every read-only call. The price: a crash in the few milliseconds between the
//! answer and the commit loses that record. Such calls are not charged to the rate
//! limit (nothing is posted, nothing waits).
//!
//! Every answer is `200` with Claude Code's JSON, failures included: Claude Code
//! treats a non-2xx status, a connection failure and a timeout as non-blocking errors
//! and runs the tool (its hooks reference), so a `401` here would let anything
//! through. A bad token, a malformed input, a refused submission or a shutdown is a
//! deny whose reason names the problem, and so is an input over
//! [`MAX_HOOK_BODY_BYTES`] whose first bytes name its event; a body that is not a
//! hook input at all (so that the event is unknown) is `{"continue": false,
//! "stopReason": …}`.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{DefaultBodyLimit, State},
    routing::post,
    Json, Router,
};
use chrono::Utc;
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{extract::Agent, AppState};
use crate::{
    approval::ServiceError,
    error::ApiError,
    hooks::{claude_code, input::Event, render::render, HookInput, Host, Verdict},
    model::{Approval, NewApproval},
    policy::{Plan, Requested},
};

/// Largest hook input read. Above the agent API's 1 MiB so that an oversized tool
/// call (a big `Write`) can still be read far enough to answer a deny in the shape of
/// its event; `crate::hooks::render::MAX_CODE_BYTES` bounds what is stored.
pub const MAX_HOOK_BODY_BYTES: usize = 8 * 1024 * 1024;

/// After the deadline, how long a pending request may take to be expired before the
/// call gives up on it (the deadline worker and `get` both expire it at once).
const EXPIRY_SLACK: Duration = Duration::from_millis(250);

/// What the agent (and the request's Slack message and page) are told when greenlight
/// shuts down while a hook call is still waiting: the call is denied, and the reason
/// says it was greenlight, not the agent, that gave up.
const SHUTDOWN_REASON: &str =
    "greenlight shut down before anyone decided; the call is denied (ask again)";

/// How much of an input over [`MAX_HOOK_BODY_BYTES`] is kept to find its event.
const HEAD_BYTES: usize = 64 * 1024;

/// `POST /v1/hooks/claude-code`, which reads its body itself (`read_input`) with
/// its own limit ([`MAX_HOOK_BODY_BYTES`]) in place of the API's 1 MiB.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/hooks/claude-code", post(claude_code_hook))
        .layer(DefaultBodyLimit::disable())
}

/// A hook input as read.
enum Input {
    /// All of it, at most [`MAX_HOOK_BODY_BYTES`].
    Whole(Vec<u8>),
    /// More than [`MAX_HOOK_BODY_BYTES`]: only its first [`HEAD_BYTES`], and the rest
    /// is not read.
    TooLarge {
        /// The input's first bytes.
        head: Vec<u8>,
    },
    /// The connection failed while sending it.
    Unreadable(String),
}

/// Reads the body up to [`MAX_HOOK_BODY_BYTES`], keeping the head of a larger one so
/// that its answer can still take its event's shape.
async fn read_input(body: Body) -> Input {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => return Input::Unreadable(error.to_string()),
        };
        if bytes.len() + chunk.len() > MAX_HOOK_BODY_BYTES {
            bytes.extend_from_slice(&chunk[..chunk.len().min(HEAD_BYTES)]);
            bytes.truncate(HEAD_BYTES);
            return Input::TooLarge { head: bytes };
        }
        bytes.extend_from_slice(&chunk);
    }
    Input::Whole(bytes)
}

/// Claude Code's HTTP hook.
///
/// The body is Claude Code's hook input (`PreToolUse` or `PermissionRequest`) as it
/// posts it; the answer is always `200` with Claude Code's hook output JSON, failures
/// included (a bad token or input is a deny naming the problem), because Claude Code
/// runs the tool on any non-2xx answer. Held until a decision, at most
/// `GREENLIGHT_HOOK_BUDGET_SECS`.
#[utoipa::path(
    post,
    path = "/v1/hooks/claude-code",
    tag = "hooks",
    request_body(content = Object, description = "Claude Code's hook input, as posted"),
    responses(
        (status = 200, description = "Claude Code's hook output: allow, or a deny with the reason", body = Object),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(request_id = tracing::field::Empty))]
pub(super) async fn claude_code_hook(
    State(state): State<AppState>,
    agent: Result<Agent, ApiError>,
    body: Body,
) -> Json<Value> {
    let host = Host::ClaudeCode;
    let bytes = match read_input(body).await {
        Input::Whole(bytes) => bytes,
        Input::TooLarge { head } => {
            let verdict = Verdict::blocked(format!(
                "the hook input is larger than {} MiB, more than greenlight reads",
                MAX_HOOK_BODY_BYTES >> 20
            ));
            // Deny this one tool call when the head names its event; only an input
            // that names none stops the session.
            return Json(match Event::named_in_head(&head) {
                Some(event) => host.answer(event, &verdict),
                None => claude_code::stop(&verdict.reason),
            });
        }
        Input::Unreadable(problem) => {
            let problem = format!("could not read the hook input: {problem}");
            return Json(claude_code::stop(&Verdict::blocked(problem).reason));
        }
    };
    let input = match HookInput::parse(&bytes) {
        Ok(input) => input,
        Err(error) => {
            let verdict = Verdict::blocked(&error.problem);
            return Json(match error.event {
                Some(event) => host.answer(event, &verdict),
                None => claude_code::stop(&verdict.reason),
            });
        }
    };
    let verdict = match agent {
        Ok(agent) => decide(&state, agent, host, &input).await,
        Err(_) => Verdict::blocked(
            "the bearer token was not accepted (send Authorization: Bearer <a token of GREENLIGHT_API_TOKENS>)",
        ),
    };
    Json(host.answer(input.event, &verdict))
}

/// Asks for a decision on one tool call; any failure is a deny naming it.
async fn decide(state: &AppState, agent: Agent, host: Host, input: &HookInput) -> Verdict {
    let rendered = match render(host, input) {
        Ok(rendered) => rendered,
        Err(problem) => return Verdict::blocked(problem),
    };
    let request_hash = hex::encode(Sha256::digest(
        json!([
            rendered.code,
            rendered.language,
            rendered.title,
            rendered.context
        ])
        .to_string()
        .as_bytes(),
    ));
    let new = NewApproval {
        agent: agent.0,
        code: rendered.code,
        language: Some(rendered.language.to_owned()),
        title: Some(rendered.title),
        context: Some(rendered.context),
        timeout_secs: state.config.hook_budget.as_secs().max(1),
        requester_slack_id: None,
        required_approvals: 1,
        idempotency_key: input.idempotency_key(host),
        request_hash,
        callback_url: None,
    };
    if let Some(field) = new.field_with_nul() {
        return Verdict::blocked(format!(
            "the tool call's {field} contains the NUL character (U+0000), which greenlight does not accept"
        ));
    }
    if let Some(verdict) = silent_auto_decision(state, &new) {
        let service = state.service.clone();
        tokio::spawn(async move {
            if let Err(error) = service.submit(new, None).await {
                tracing::error!(%error, "hook: could not record an automatic decision");
            }
        });
        return verdict;
    }
    match ask(state, new).await {
        Ok(approval) => Verdict::of(
            approval.status.as_str(),
            &approval.reason,
            &approval.id.to_string(),
        ),
        Err(ApiError::Internal(error)) => {
            tracing::error!(
                error = format!("{error:#}"),
                "hook: could not ask for a decision"
            );
            Verdict::blocked("greenlight had an internal error")
        }
        Err(error) => Verdict::blocked(error),
    }
}

/// The verdict of a policy rule that decides `new` on its own and posts nothing, if
/// one does.
fn silent_auto_decision(state: &AppState, new: &NewApproval) -> Option<Verdict> {
    let plan = state.service.plan_for(
        &new.agent,
        new.language.as_deref(),
        &new.code,
        new.context.as_ref(),
        Requested {
            required_approvals: new.required_approvals,
            timeout_secs: new.timeout_secs,
        },
    );
    match plan {
        Plan::Auto {
            approve,
            reason,
            notify_channel: None,
            ..
        } => Some(Verdict {
            allow: approve,
            reason: if approve {
                format!("greenlight: {reason}")
            } else {
                format!("greenlight: denied: {reason}")
            },
        }),
        _ => None,
    }
}

/// Submits like `POST /v1/approvals` (same limits, same policy) and waits for the
/// request to be final. A request still pending when the wait ends early (the
/// service is shutting down) is withdrawn, so nobody approves a call that was denied.
async fn ask(state: &AppState, new: NewApproval) -> Result<Approval, ApiError> {
    let agent = new.agent.clone();
    let mut approval = super::approvals::admit_and_submit(state, new).await?;
    while !approval.status.is_final() {
        let left = (approval.expires_at - Utc::now())
            .to_std()
            .unwrap_or_default();
        approval = state.service.wait(approval.id, left + EXPIRY_SLACK).await?;
        if approval.status.is_final() {
            break;
        }
        if Utc::now() < approval.expires_at {
            // Woken before the deadline without a decision: shutdown.
            let withdrawn = state
                .service
                .withdraw(
                    approval.id,
                    &agent,
                    SHUTDOWN_REASON.to_owned(),
                    json!({ "why": "shutdown" }),
                )
                .await;
            return match withdrawn {
                Ok(cancelled) => Ok(cancelled),
                Err(ServiceError::AlreadyDecided(decided)) => Ok(*decided),
                Err(error) => Err(error.into()),
            };
        }
        approval = state.service.get(approval.id).await?;
        if !approval.status.is_final() {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "request {} is still pending after its deadline",
                approval.id
            )));
        }
    }
    Ok(approval)
}
