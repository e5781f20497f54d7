//! What greenlight does with a verified Slack interaction, whatever carried it (the
//! signed HTTP endpoint or a Socket Mode envelope).

use serde_json::Value;

use super::{service::ServiceError, ApprovalService};
use crate::slack::interaction::Payload;

/// Applies every greenlight action in `payload`. Returns the body to ack with, if the
/// interaction needs one (modal errors); `None` acks with an empty 200.
///
/// Each click is recorded before this returns, so the ack Slack gets means the click
/// is durable; Slack-side effects (message updates, ephemeral notes) run afterwards.
pub async fn handle(
    service: &ApprovalService,
    payload: &Payload,
) -> Result<Option<Value>, ServiceError> {
    super::views::spawn(service, payload);
    for click in payload.clicks() {
        let outcome = service.click(&click).await?;
        tracing::info!(request_id = %click.approval_id, user = %click.user.id, outcome = outcome.as_str(), "click");
    }
    Ok(None)
}
