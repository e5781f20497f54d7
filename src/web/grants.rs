//! Standing grants on the review page: the live ones, listed under the pending
//! requests, each with a Revoke button for a signed-in reviewer.
//!
//! Revoking is a `/web` form POST with the session's CSRF token, not a call to
//! `DELETE /v1/grants/{id}`: the session cookie is scoped to `Path=/web` (a browser
//! never sends it to the API, and widening it would hand every `/v1` route a
//! reviewer's cookie), and a plain form works without script. Both call the same
//! `ApprovalService::revoke_grant` as Slack's Revoke button, which checks who may
//! revoke (the grant's maker or an approver of its rule) and commits the revocation
//! before it returns, so the request answered after the redirect is already checked
//! against the revoked grant.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Redirect},
};

use super::{
    auth::SignedIn,
    pages::{pending_page, Page, PageError},
    views::{GrantRow, Note},
};
use crate::{
    approval::{approvers::Refusal, Revoked},
    http::AppState,
};

/// Longest action shown for a grant, in characters (the full text is in the API).
const ACTION_CHARS: usize = 160;

/// The live grants of every agent, newest first, as the pending page lists them.
pub async fn active(state: &AppState) -> Result<Vec<GrantRow>, PageError> {
    let grants = state.service.grants(None, false).await?;
    Ok(grants
        .iter()
        .map(|grant| GrantRow {
            id: grant.id.clone(),
            agent: grant.agent.clone(),
            rule: grant.rule.clone(),
            action: summary(&grant.match_kind, &grant.action_key),
            granted_by: state.web.display_name(&grant.granted_by),
            expires_at: grant.expires_at.clone(),
        })
        .collect())
}

/// What a grant covers, in one line: `same code: …` or `commands starting: …`,
/// cut to [`ACTION_CHARS`] characters.
fn summary(match_kind: &str, action_key: &str) -> String {
    let kind = match match_kind {
        "command_prefix" => "commands starting",
        _ => "same code",
    };
    let flat: String = action_key.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut short: String = flat.chars().take(ACTION_CHARS).collect();
    if flat.chars().count() > ACTION_CHARS {
        short.push('…');
    }
    format!("{kind}: {short}")
}

/// Why a Revoke was refused, in the page's words.
fn refusal_text(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Unverified => {
            "greenlight could not verify that you are an approver of this grant's rule (the approver group's members could not be read), so nothing was revoked."
        }
        _ => {
            "You may not revoke this grant: only the reviewer who made it or an approver of its rule may. Nothing was revoked."
        }
    }
}

/// `POST /web/grants/{id}/revoke`: revokes the grant for the signed-in reviewer, then
/// back to the pending page; a refusal or an unknown grant is shown there.
pub async fn revoke(
    signed: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Page {
    if let Err(refused) = signed.check_csrf_form(&body) {
        return Ok(*refused);
    }
    let (status, code, text) = match state.service.revoke_grant(&id, &signed.reviewer).await? {
        Revoked::Done(_) => return Ok(Redirect::to("/web?note=revoked").into_response()),
        Revoked::NotFound => (
            StatusCode::NOT_FOUND,
            "not_found",
            "No standing grant has that id.",
        ),
        Revoked::Refused(refusal) => (StatusCode::FORBIDDEN, "forbidden", refusal_text(refusal)),
    };
    let note = Note {
        class: "refused",
        code: Some(code),
        text: text.into(),
    };
    pending_page(&state, &signed, Some(note), status).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_says_what_is_covered_on_one_short_line() {
        assert_eq!(
            summary("command_prefix", "cargo test"),
            "commands starting: cargo test"
        );
        assert_eq!(summary("exact", "ls\n  -la"), "same code: ls -la");
        let long = "x".repeat(ACTION_CHARS + 5);
        let shown = summary("exact", &long);
        assert!(shown.ends_with('…'), "{shown}");
        assert_eq!(
            shown.chars().count(),
            "same code: ".len() + ACTION_CHARS + 1
        );
    }
}
