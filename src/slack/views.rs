//! "View full code" and "Show context" clicks: open the modal, and upload code too
//! long for it into the message's thread, once.
//!
//! These clicks read a request and never change it. They run after the ack (the
//! modal must open within the trigger's 3 s, which a background task does in
//! milliseconds) so a slow upload never delays Slack's 200.

use serde_json::json;
use tokio::time::Instant;

use super::{
    api::SlackClient,
    code_view::{self, ViewKind, ViewRequest},
    interaction::Payload,
};
use crate::{
    approval::{ApprovalService, ServiceError},
    model::Approval,
    store::NewEvent,
};

/// The audit event that records the upload, and keeps a second click from
/// uploading the same code again.
const UPLOADED: &str = "code_file_uploaded";

/// Starts serving every view click in `payload`; returns at once. No `views.open`
/// is tried after `trigger_deadline` (the trigger id is dead by then).
pub fn spawn(
    service: &ApprovalService,
    slack: &SlackClient,
    payload: &Payload,
    trigger_deadline: Instant,
) {
    for request in code_view::view_requests(payload) {
        let (service, slack) = (service.clone(), slack.clone());
        tokio::spawn(async move {
            if let Err(error) = show(&service, &slack, &request, trigger_deadline).await {
                tracing::error!(request_id = %request.approval_id, %error, "could not show a view");
            }
        });
    }
}

async fn show(
    service: &ApprovalService,
    slack: &SlackClient,
    request: &ViewRequest,
    trigger_deadline: Instant,
) -> Result<(), ServiceError> {
    let user = request.user.as_ref().map(|u| u.id.as_str()).unwrap_or("?");
    let Some(approval) = service.store().get(request.approval_id).await? else {
        tracing::warn!(request_id = %request.approval_id, user, "view click on an unknown request");
        return Ok(());
    };
    let (view, too_long) = match request.kind {
        ViewKind::Code => code_view::code_modal(&approval),
        ViewKind::Context => (code_view::context_modal(&approval), false),
    };
    match slack
        .open_view(&request.trigger_id, &view, trigger_deadline)
        .await
    {
        Ok(()) => {
            tracing::info!(request_id = %approval.id, user, kind = ?request.kind, "view opened")
        }
        Err(error) => {
            tracing::warn!(request_id = %approval.id, user, %error, "could not open the view")
        }
    }
    if too_long {
        upload_once(service, slack, &approval, user).await?;
    }
    Ok(())
}

async fn upload_once(
    service: &ApprovalService,
    slack: &SlackClient,
    approval: &Approval,
    user: &str,
) -> Result<(), ServiceError> {
    let Some(thread_ts) = approval.message_ts.as_deref() else {
        return Ok(());
    };
    let store = service.store();
    if store.has_event(approval.id, UPLOADED, None).await? {
        return Ok(());
    }
    let event = match code_view::upload_code(slack, approval, thread_ts).await {
        Ok(file_id) => NewEvent::new(
            UPLOADED,
            Some(user),
            json!({ "file_id": file_id, "thread_ts": thread_ts, "bytes": approval.code.len() }),
        ),
        Err(error) => {
            tracing::warn!(request_id = %approval.id, %error, "could not upload the full code");
            NewEvent::new(
                "code_upload_failed",
                Some(user),
                json!({ "error": error.code(), "detail": error.to_string() }),
            )
        }
    };
    store.append_event(approval.id, event).await?;
    Ok(())
}
