//! What greenlight does with a verified Slack interaction, whatever carried it (the
//! signed HTTP endpoint or a Socket Mode envelope).

use serde_json::{json, Value};

use super::{
    service::{ReasonOutcome, ServiceError},
    ApprovalService,
};
use crate::slack::{interaction::Payload, modal::REASON_BLOCK_ID};

/// Shown under the reason field when it was left blank.
pub const EMPTY_REASON_ERROR: &str =
    "Say why you are denying this request: the agent is told your reason.";

/// Applies every greenlight action in `payload`. Returns the body to ack with, if the
/// interaction needs one (modal errors); `None` acks with an empty 200 (which, for a
/// modal submission, closes the modal).
///
/// Each click is recorded before this returns, so the ack Slack gets means the click
/// is durable; Slack-side effects (message updates, ephemeral notes, the deny-reason
/// modal) run afterwards.
pub async fn handle(
    service: &ApprovalService,
    payload: &Payload,
) -> Result<Option<Value>, ServiceError> {
    // "View full code" / "Show context": read-only, answered in the background.
    super::views::spawn(service, payload);
    if let Some(deny) = payload.deny_reason() {
        // Blank is refused in the modal itself; anything else goes to the agent as
        // typed (the Slack message escapes it).
        let Some(reason) = deny.reason.filter(|r| !r.trim().is_empty()) else {
            return Ok(Some(field_error(EMPTY_REASON_ERROR)));
        };
        let outcome = service
            .deny_with_reason(deny.approval_id, &deny.user, &reason)
            .await?;
        tracing::info!(request_id = %deny.approval_id, user = %deny.user.id, outcome = ?outcome, "deny reason submitted");
        return Ok(match outcome {
            ReasonOutcome::Denied => None,
            ReasonOutcome::Refused(message) => Some(field_error(&message)),
        });
    }
    for click in payload.clicks() {
        let outcome = service.click(&click).await?;
        tracing::info!(request_id = %click.approval_id, user = %click.user.id, outcome = outcome.as_str(), "click");
        service.metrics().click(outcome.as_str());
    }
    Ok(None)
}

/// `response_action: errors` keeps the modal open with `message` under the reason.
fn field_error(message: &str) -> Value {
    json!({ "response_action": "errors", "errors": { REASON_BLOCK_ID: message } })
}
