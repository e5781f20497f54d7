//! Block Kit for standing grants: the "Approve for 30 min" buttons beside Approve,
//! and the short FYI a grant-approved request is posted as, with its Revoke button.
//!
//! Slack documents at most 25 elements per actions block and 75 characters per
//! button text; the policy offers at most `policy::grants::MAX_DURATIONS` durations
//! and their labels are short ("Approve for 30 min").

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{
    blocks::{final_message, mention, RenderedMessage, ACTIONS_BLOCK_ID},
    text::{fit, limits, Escape},
};
use crate::{model::Approval, policy::grants::duration_label, store::grants::Grant};

/// The `action_id` of an "Approve for N" button is this followed by N (seconds).
pub const GRANT_ACTION_PREFIX: &str = "greenlight_grant_";
/// The Revoke button on a grant-approved request's FYI; its value is that request's id.
pub const REVOKE_ACTION_ID: &str = "greenlight_revoke_grant";

/// One "Approve for …" button per offered duration (seconds).
pub fn grant_buttons(approval: &Approval, durations_secs: &[u64]) -> Vec<Value> {
    durations_secs
        .iter()
        .map(|secs| {
            json!({"type": "button", "action_id": format!("{GRANT_ACTION_PREFIX}{secs}"),
                   "value": approval.id.to_string(),
                   "text": {"type": "plain_text", "text": fit(&duration_label(*secs), Escape::Plain, limits::BUTTON_TEXT), "emoji": true}})
        })
        .collect()
}

/// The seconds of an "Approve for N" button's `action_id`, if it is one.
pub fn grant_secs(action_id: &str) -> Option<u64> {
    action_id
        .strip_prefix(GRANT_ACTION_PREFIX)?
        .parse()
        .ok()
        .filter(|secs| *secs > 0)
}

/// The FYI of a request `grant` approved: the outcome, which grant and whose, and a
/// Revoke button while the grant is live at `now` (else who revoked it, or that it
/// expired). The final message's other blocks stay as they are.
pub fn grant_fyi(approval: &Approval, grant: &Grant, now: DateTime<Utc>) -> RenderedMessage {
    let mut message = final_message(approval);
    let summary = format!(
        "*Approved by a standing grant* from {} (rule \"{}\", until {}).\nGrant `{}`",
        mention(&grant.granted_by),
        fit(&grant.rule, Escape::Mrkdwn, 64),
        fit(&grant.expires_at, Escape::Mrkdwn, 40),
        fit(&grant.id, Escape::Mrkdwn, 40),
    );
    if let Some(blocks) = message.blocks.as_array_mut() {
        if blocks.len() > 1 {
            blocks[1] = json!({"type": "section", "text": {"type": "mrkdwn", "text": summary}});
        }
        blocks.push(if grant.active_at(now) {
            json!({"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": [
                {"type": "button", "action_id": REVOKE_ACTION_ID, "style": "danger",
                 "value": approval.id.to_string(),
                 "text": {"type": "plain_text", "text": "Revoke grant", "emoji": true}}]})
        } else {
            let why = match &grant.revoked_by {
                Some(by) => format!("Grant revoked by {}.", mention(by)),
                None => "Grant expired.".to_owned(),
            };
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": why}]})
        });
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_action_ids_round_trip() {
        assert_eq!(grant_secs("greenlight_grant_1800"), Some(1800));
        assert_eq!(grant_secs("greenlight_grant_0"), None);
        assert_eq!(grant_secs("greenlight_grant_x"), None);
        assert_eq!(grant_secs("greenlight_approve"), None);
    }
}
