//! When Slack refuses a message for what it says: a minimal message instead.
//!
//! Rendering fits every text to Slack's limits ([`super::text`]), so a refusal of the
//! message's content (`invalid_blocks`, `msg_too_long`, …) should not happen. If it
//! does anyway (a limit Slack changed or never documented), sending the same blocks
//! again can never succeed, and a retry loop would leave a decided request showing
//! live buttons forever. So the outbox sends, once, a minimal message built from
//! greenlight's own words, the request id and Slack user mentions only, which
//! certainly fits, and records `slack_fallback` on the request's audit trail with
//! Slack's error code:
//!
//! - a request that is **final**: its outcome, who decided and when, and where the
//!   full details are (the request id; the reason and the code are in the agent API
//!   and the audit trail). No buttons.
//! - a request that is **pending**: "approval needed" with the request id and working
//!   **View full code**, **Approve** and **Deny** buttons (and the high-risk confirm
//!   dialog when the rule asks for one). A reviewer can still read every line in the
//!   code modal, which is fitted the same way, and a request is not denied only
//!   because its message was too rich to show.
//!
//! greenlight has no public address of its own in its configuration, so the pointer
//! to the details is the request id (`GET /v1/approvals/{id}` and its `/events`).

use serde_json::{json, Value};

use super::{
    api::SlackError,
    blocks::{self, PendingExtras, RenderedMessage},
    code_view::VIEW_CODE_ACTION_ID,
    text::{fit, Escape},
};
use crate::{model::Approval, store::NewEvent};

/// The audit event that records a fallback message.
pub const FALLBACK_EVENT: &str = "slack_fallback";

/// Slack's answers that refuse the message itself (its blocks, its size, its
/// arguments): the same message will never be accepted, a smaller one may be. From
/// the error lists of `chat.postMessage` and `chat.update` in Slack's Web API
/// reference (`invalid_blocks` and `msg_blocks_too_long` are also in
/// `shared/docs/slack-platform.md`).
const CONTENT_REFUSALS: &[&str] = &[
    "invalid_blocks",
    "invalid_blocks_format",
    "msg_too_long",
    "msg_blocks_too_long",
    "invalid_arguments",
    "invalid_attachments",
    "too_many_attachments",
    "no_text",
];

/// Did Slack refuse what the message says (rather than where it goes, who sends it,
/// or how busy Slack is)? Such a refusal is permanent for that content.
pub fn is_content_refusal(error: &SlackError) -> bool {
    matches!(error, SlackError::Api { code, .. } if CONTENT_REFUSALS.contains(&code.as_str()))
}

/// The minimal message for `approval` in its current state (see the module docs).
pub fn minimal_message(
    approval: &Approval,
    extras: &PendingExtras,
    refused: &SlackError,
) -> RenderedMessage {
    if approval.status.is_final() {
        minimal_final(approval)
    } else {
        minimal_pending(approval, extras, refused)
    }
}

/// A final request: outcome, who, when, and where the details are.
fn minimal_final(approval: &Approval) -> RenderedMessage {
    let (icon, outcome) = blocks::outcome_of(approval.status);
    let text = format!(
        "{}\nThe full message could not be shown in Slack. The reason, the code and the audit trail are in greenlight under request `{}`.",
        blocks::outcome_line(approval),
        approval.id
    );
    RenderedMessage {
        text: format!("{icon} {outcome}: request {}", approval.id),
        blocks: json!([{"type": "section", "text": {"type": "mrkdwn", "text": text}}]),
    }
}

/// A pending request: what is asked, by whom, and working buttons.
fn minimal_pending(
    approval: &Approval,
    extras: &PendingExtras,
    refused: &SlackError,
) -> RenderedMessage {
    let text = format!(
        "*Approval needed* for request `{}` from *{}*.\nSlack refused the full message ({}), so the code is not shown here: open *View full code* and read it before approving.",
        approval.id,
        fit(&approval.agent, Escape::Mrkdwn, blocks::NAME_CHARS),
        fit(refused.code(), Escape::Mrkdwn, 64),
    );
    let view = json!({"type": "button", "action_id": VIEW_CODE_ACTION_ID, "value": approval.id.to_string(),
        "text": {"type": "plain_text", "text": "View full code", "emoji": true}});
    RenderedMessage {
        text: format!("Approval needed: request {}", approval.id),
        blocks: Value::Array(vec![
            json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}),
            blocks::decision_actions(approval, extras, vec![view]),
        ]),
    }
}

/// The audit entry for a fallback: which message (`post`, `update`, `fyi`) and what
/// Slack said about the full one.
pub fn event(message: &'static str, refused: &SlackError) -> NewEvent {
    NewEvent::new(
        FALLBACK_EVENT,
        None,
        json!({ "message": message, "error": refused.code(), "detail": refused.to_string() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    fn refused(code: &str) -> SlackError {
        SlackError::Api {
            method: "chat.update".into(),
            code: code.into(),
        }
    }

    #[test]
    fn content_refusals_are_told_apart_from_other_failures() {
        for code in ["invalid_blocks", "msg_too_long", "invalid_arguments"] {
            assert!(is_content_refusal(&refused(code)), "{code}");
        }
        for code in ["channel_not_found", "message_not_found", "invalid_auth"] {
            assert!(!is_content_refusal(&refused(code)), "{code}");
        }
        assert!(!is_content_refusal(&SlackError::RateLimited {
            method: "chat.update".into()
        }));
    }

    #[test]
    fn a_final_fallback_has_no_buttons_and_no_requester_text() {
        let mut a = crate::model::sample(&"&".repeat(100_000));
        a.title = Some("<!channel> secret title".into());
        a.status = Status::Denied;
        a.decided_by = Some("U0BOB".into());
        a.reason = "&".repeat(2000);
        let message = minimal_message(&a, &PendingExtras::default(), &refused("invalid_blocks"));
        let shown = message.blocks.to_string();
        assert!(!shown.contains("\"button\""), "{shown}");
        assert!(!shown.contains("&amp;") && !shown.contains("secret title"));
        assert!(shown.contains("*Denied* by <@U0BOB>"), "{shown}");
        assert!(shown.contains(&a.id.to_string()));
        assert!(message.text.starts_with("⛔ Denied"));
    }

    #[test]
    fn a_pending_fallback_keeps_working_buttons() {
        let a = crate::model::sample("ls");
        let extras = PendingExtras {
            votes: Vec::new(),
            high_risk_rule: Some("prod".into()),
            grant_durations: Vec::new(),
        };
        let message = minimal_message(&a, &extras, &refused("msg_too_long"));
        let id = a.id.to_string();
        let actions = &message.blocks[1];
        let ids: Vec<&str> = actions["elements"]
            .as_array()
            .expect("buttons")
            .iter()
            .map(|b| b["action_id"].as_str().expect("action_id"))
            .collect();
        assert_eq!(
            ids,
            [
                VIEW_CODE_ACTION_ID,
                blocks::APPROVE_ACTION_ID,
                blocks::DENY_ACTION_ID
            ]
        );
        assert!(actions["elements"]
            .as_array()
            .expect("buttons")
            .iter()
            .all(|b| b["value"] == id));
        assert!(actions["elements"][1].get("confirm").is_some());
        assert!(message.blocks.to_string().contains("msg_too_long"));
    }
}
