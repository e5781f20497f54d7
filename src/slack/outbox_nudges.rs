//! The outbox worker's reminder and escalation rows (`store::nudges`): a reminder in
//! the request message's thread, the escalation post (the request with its buttons, in
//! the escalation channel), and that message's rewrites (each vote, the decision). A
//! failure is audited and the row dropped: a nudge is a courtesy, the first message
//! and the deadline still stand.

use chrono::Utc;
use serde_json::json;

use super::{
    super::api::MessageRef,
    super::blocks::{self, mention},
    OutboxWorker,
};
use crate::{
    approval::ServiceError,
    model::Approval,
    store::{outbox::Row, NewEvent},
};

/// Before the notification text of the escalation message, posted or rewritten while
/// the request is pending.
const ESCALATED: &str = "Escalated: ";

/// How a reminder names who it waits for: users as `<@U…>`, groups as
/// `<!subteam^S…>`, web reviewers by name.
fn who(ids: &[String]) -> String {
    ids.iter()
        .map(|id| {
            if id.starts_with('S') && crate::policy::is_approver_id(id) {
                format!("<!subteam^{id}>")
            } else {
                mention(id)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reminder's text: Slack documents 40,000 characters for `text`, and at most a
/// few dozen ids are listed.
pub(super) fn reminder_text(waiting_for: &[String]) -> String {
    if waiting_for.is_empty() {
        "Reminder: this request is still waiting for a decision.".to_owned()
    } else {
        format!(
            "Reminder: this request is still waiting for {}.",
            who(waiting_for)
        )
    }
}

impl OutboxWorker {
    /// A reminder in the thread of the request's message, while it is pending.
    pub(super) async fn remind(
        &self,
        row: &Row,
        approval: &Approval,
        done: &mut Vec<i64>,
    ) -> Result<(), ServiceError> {
        let Some(ts) = approval
            .message_ts
            .clone()
            .filter(|_| !approval.status.is_final())
        else {
            done.push(row.seq);
            return Ok(());
        };
        let escalated = self.service.escalated(approval).await?;
        let waiting = self.service.waiting_for(approval, escalated).await?;
        let body = json!({ "channel": approval.channel, "thread_ts": ts,
                           "text": reminder_text(&waiting), "unfurl_links": false });
        let sent = self.slack.call("chat.postMessage", &body, None).await;
        self.finish_nudge(row, approval, sent.map(drop), "remind")
            .await
    }

    /// Posts the pending request to the escalation channel; its buttons work there
    /// like on the first message.
    pub(super) async fn escalate(
        &self,
        row: &Row,
        approval: &Approval,
        done: &mut Vec<i64>,
    ) -> Result<(), ServiceError> {
        if approval.status.is_final() {
            done.push(row.seq);
            return Ok(());
        }
        let extras = self.extras(approval).await?;
        let mut rendered = blocks::pending_message_with(approval, &extras);
        rendered.text = format!("{ESCALATED}{}", rendered.text);
        match self
            .slack
            .post_message(&row.channel, &rendered.text, &rendered.blocks, None)
            .await
        {
            Ok(message) => Ok(self
                .store()
                .escalation_posted(row.seq, approval.id, message.channel, message.ts)
                .await?),
            Err(error) => {
                self.finish_nudge(row, approval, Err(error), "escalate")
                    .await
            }
        }
    }

    /// Rewrites the escalation message from the request's state: its progress while
    /// pending, the outcome once final (as on the first message).
    pub(super) async fn rewrite_escalation(
        &self,
        row: &Row,
        approval: &Approval,
        done: &mut Vec<i64>,
    ) -> Result<(), ServiceError> {
        let Some(escalation) = self.store().escalation(approval.id).await? else {
            done.push(row.seq);
            return Ok(());
        };
        let (Some(channel), Some(ts)) = (escalation.channel, escalation.ts) else {
            done.push(row.seq);
            return Ok(());
        };
        let rendered = if approval.status.is_final() {
            blocks::final_message(approval)
        } else {
            let mut pending = blocks::pending_message_with(approval, &self.extras(approval).await?);
            pending.text = format!("{ESCALATED}{}", pending.text);
            pending
        };
        let sent = self
            .slack
            .update_message(
                &MessageRef { channel, ts },
                &rendered.text,
                &rendered.blocks,
            )
            .await;
        self.finish_nudge(row, approval, sent, "escalation_update")
            .await
    }

    async fn finish_nudge(
        &self,
        row: &Row,
        approval: &Approval,
        sent: Result<(), crate::slack::api::SlackError>,
        what: &str,
    ) -> Result<(), ServiceError> {
        let audit = sent.err().map(|error| {
            tracing::warn!(request_id = %approval.id, %error, what, "could not send a reminder or escalation message");
            let detail = json!({ "error": error.code(), "detail": error.to_string(), "kind": what, "at": Utc::now().to_rfc3339() });
            (approval.id, NewEvent::new("slack_nudge_failed", None, detail))
        });
        Ok(self.store().outbox_done(row.seq, audit).await?)
    }
}
