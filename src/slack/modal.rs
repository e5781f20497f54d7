//! The deny-reason modal and the Web API calls the approver checks need.
//!
//! Kept apart from `api.rs` and `interaction.rs` (inherent impls may live anywhere in
//! the crate) so the click-path features stay in one place.
//!
//! Wire contract (`docs/api-contract.md`): the modal's `callback_id` is
//! `greenlight_deny_reason`, its `private_metadata` is the approval id, and the reason
//! arrives at `view.state.values.reason.reason_input.value`.

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{
    api::{SlackClient, SlackError},
    blocks::NAME_CHARS,
    interaction::{Payload, User},
    text::{fit, Escape},
};
use crate::{
    approval::approvers::GroupMembers,
    model::{Approval, ApprovalId},
};

/// `callback_id` of the deny-reason modal: a `view_submission` with any other is not
/// ours.
pub const DENY_REASON_CALLBACK_ID: &str = "greenlight_deny_reason";
/// `block_id` of the reason input; also the key a field error is reported under
/// (`{"response_action":"errors","errors":{"reason":…}}`).
pub const REASON_BLOCK_ID: &str = "reason";
/// `action_id` of the reason's `plain_text_input`; the typed text arrives at
/// `view.state.values.reason.reason_input.value`.
pub const REASON_ACTION_ID: &str = "reason_input";
/// Long enough for a real explanation, short enough to show in the message.
pub const MAX_REASON_CHARS: usize = 2000;

/// The request's title in the modal's intro, escaped (a section holds 3,000).
const INTRO_TITLE_CHARS: usize = 600;

/// The modal a Deny click opens.
pub fn deny_reason_view(approval: &Approval) -> Value {
    let title = approval
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("run code");
    let intro = format!(
        "You are denying *{}* from *{}*. Your reason goes to the agent word for word and is shown in the channel.",
        fit(title, Escape::Mrkdwn, INTRO_TITLE_CHARS),
        fit(&approval.agent, Escape::Mrkdwn, NAME_CHARS)
    );
    json!({
        "type": "modal",
        "callback_id": DENY_REASON_CALLBACK_ID,
        "private_metadata": approval.id.to_string(),
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": intro}},
            {
                "type": "input",
                "block_id": REASON_BLOCK_ID,
                "label": {"type": "plain_text", "text": "Why are you denying it?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION_ID,
                    "multiline": true,
                    "max_length": MAX_REASON_CHARS,
                    "placeholder": {"type": "plain_text", "text": "e.g. Writes to the repo; use a temp dir instead"},
                },
            },
        ],
    })
}

/// A submitted deny-reason modal.
#[derive(Debug, Clone)]
pub struct DenyReason {
    /// The request being denied, from the view's `private_metadata`.
    pub approval_id: ApprovalId,
    /// Who submitted (the payload's `user`): the reviewer the denial is recorded as.
    pub user: User,
    /// As typed; `None` when the field is missing.
    pub reason: Option<String>,
}

impl Payload {
    /// The deny-reason submission in a `view_submission`, if this is one of ours with a
    /// valid approval id and a user.
    pub fn deny_reason(&self) -> Option<DenyReason> {
        if self.kind != "view_submission" {
            return None;
        }
        let view = self.view.as_ref()?;
        if view.callback_id.as_deref() != Some(DENY_REASON_CALLBACK_ID) {
            return None;
        }
        let approval_id = ApprovalId::parse(view.private_metadata.as_deref()?)?;
        let reason = view
            .state
            .as_ref()
            .and_then(|s| {
                s.pointer(&format!(
                    "/values/{REASON_BLOCK_ID}/{REASON_ACTION_ID}/value"
                ))
            })
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(DenyReason {
            approval_id,
            user: self.user.clone()?,
            reason,
        })
    }
}

/// Approver lists name user groups; their members come from Slack.
impl GroupMembers for SlackClient {
    fn members<'a>(
        &'a self,
        group: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            self.usergroup_members(group, deadline)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl SlackClient {
    /// `views.open`. The trigger dies 3 s after the click, so a caller passes a
    /// deadline and no retry waits past it.
    pub async fn open_view(
        &self,
        trigger_id: &str,
        view: &Value,
        deadline: Instant,
    ) -> Result<(), SlackError> {
        let body = json!({ "trigger_id": trigger_id, "view": view });
        match tokio::time::timeout_at(deadline, self.call("views.open", &body, Some(deadline)))
            .await
        {
            Ok(result) => result.map(drop),
            Err(_) => Err(SlackError::Transport {
                method: "views.open".into(),
                detail: "no answer before the trigger expired".into(),
            }),
        }
    }

    /// `usergroups.users.list`: the members of a user group (`S…`).
    pub async fn usergroup_members(
        &self,
        usergroup: &str,
        deadline: Instant,
    ) -> Result<Vec<String>, SlackError> {
        let method = "usergroups.users.list";
        let body = json!({ "usergroup": usergroup });
        let answer =
            match tokio::time::timeout_at(deadline, self.call(method, &body, Some(deadline))).await
            {
                Ok(answer) => answer?,
                Err(_) => {
                    return Err(SlackError::Transport {
                        method: method.into(),
                        detail: "no answer in time".into(),
                    })
                }
            };
        answer
            .get("users")
            .and_then(Value::as_array)
            .map(|users| {
                users
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .ok_or(SlackError::Malformed {
                method: method.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::interaction::form;

    #[test]
    fn reads_the_contracted_view_submission() {
        let id = ApprovalId::new();
        let json = format!(
            r#"{{"type":"view_submission","user":{{"id":"U1"}},"view":{{"id":"V1","callback_id":"greenlight_deny_reason",
               "private_metadata":"{id}","state":{{"values":{{"reason":{{"reason_input":{{"type":"plain_text_input","value":"not <today>"}}}}}}}}}}}}"#
        );
        let payload = Payload::from_form(&form(&json)).expect("parses");
        let deny = payload.deny_reason().expect("ours");
        assert_eq!(deny.approval_id, id);
        assert_eq!(deny.user.id, "U1");
        assert_eq!(deny.reason.as_deref(), Some("not <today>"));
    }

    #[test]
    fn ignores_other_views_and_bad_ids() {
        for json in [
            r#"{"type":"view_submission","user":{"id":"U1"},"view":{"callback_id":"other","private_metadata":"x"}}"#,
            r#"{"type":"view_submission","user":{"id":"U1"},"view":{"callback_id":"greenlight_deny_reason","private_metadata":"nope"}}"#,
            r#"{"type":"block_actions","user":{"id":"U1"}}"#,
        ] {
            let payload = Payload::from_form(&form(json)).expect("parses");
            assert!(payload.deny_reason().is_none(), "{json}");
        }
    }

    #[test]
    fn view_follows_the_contract_and_escapes_the_title() {
        let approval = Approval {
            id: ApprovalId::new(),
            agent: "ci-bot".into(),
            code: "ls".into(),
            language: None,
            title: Some("<!channel> deploy".into()),
            context: None,
            requester_slack_id: None,
            required_approvals: 1,
            channel: "C1".into(),
            message_ts: None,
            status: crate::model::Status::Pending,
            reason: String::new(),
            decided_by: None,
            decided_at: None,
            created_at: chrono::Utc::now(),
            expires_at: chrono::Utc::now(),
        };
        let view = deny_reason_view(&approval);
        assert_eq!(view["callback_id"], DENY_REASON_CALLBACK_ID);
        assert_eq!(view["private_metadata"], approval.id.to_string());
        assert_eq!(view["blocks"][1]["block_id"], "reason");
        assert_eq!(view["blocks"][1]["element"]["action_id"], "reason_input");
        assert_eq!(view["blocks"][1]["element"]["multiline"], true);
        assert!(view["blocks"][1].get("optional").is_none(), "required");
        assert!(!view.to_string().contains("<!channel>"));
        assert!(
            view["title"]["text"]
                .as_str()
                .expect("title")
                .chars()
                .count()
                <= 24
        );
    }
}
