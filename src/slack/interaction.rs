//! Interaction payloads Slack sends when someone clicks a button or submits a modal.
//!
//! Parsed tolerantly: unknown fields are ignored and most fields are optional, as
//! Slack documents. Only trust what it yields from a body whose signature has been
//! verified.

use serde::Deserialize;
use serde_json::Value;

use super::{
    blocks::{APPROVE_ACTION_ID, DENY_ACTION_ID},
    grant_blocks::{grant_secs, REVOKE_ACTION_ID},
};
use crate::model::ApprovalId;

/// Why an interaction body could not be read. The HTTP endpoint answers either with
/// 400 `malformed_json`; Socket Mode acks the envelope anyway, since a redelivery
/// would not parse either.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    /// The body is not a form, or has no `payload` field (Slack sends one field,
    /// `payload`, holding JSON).
    #[error("the form has no `payload` field")]
    MissingPayload,
    /// `payload` is not JSON of the expected shape (e.g. it has no `type`); holds
    /// serde's message.
    #[error("`payload` is not valid interaction JSON: {0}")]
    InvalidJson(String),
}

/// Slack's `user` object: who clicked or submitted. Its `team_id` is ignored.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct User {
    /// Slack user id (`U…` or `W…`): the identity every vote and approver check
    /// uses.
    pub id: String,
    /// The handle, when Slack sends one; for readable reasons and audit entries only,
    /// never for a decision.
    #[serde(default)]
    pub username: Option<String>,
    /// A second name Slack may send; used when `username` is absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// An object of which only `id` is read (the payload's `channel`; its `name` is
/// ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct IdOnly {
    /// Slack id, e.g. a channel's `C…` or `G…`.
    pub id: String,
}

/// Slack's `container`: the surface the clicked element sits on. For a message it
/// is `{type: "message", message_ts, channel_id}`; for a modal it names the view.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Container {
    /// The message's `ts`, a string like `1712345678.000100`. Parsed but not read
    /// today: the request id in the button's `value` finds the message.
    #[serde(default)]
    pub message_ts: Option<String>,
    /// The message's channel: where a click's ephemeral note goes when the payload
    /// has no `channel`.
    #[serde(default)]
    pub channel_id: Option<String>,
}

/// One entry of `actions`: the element that was clicked. Slack also sends `type` and
/// `action_ts`, which are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    /// The element's `action_id` as greenlight rendered it (at most 255 characters,
    /// Slack's limit): which button, e.g. `greenlight_approve`,
    /// `greenlight_grant_3600`. Ids that are not greenlight's are skipped.
    pub action_id: String,
    /// The enclosing block's `block_id`. Parsed but not read: `action_id` alone says
    /// which button.
    #[serde(default)]
    pub block_id: Option<String>,
    /// The button's `value` (at most 2,000 characters, Slack's limit): on greenlight's
    /// buttons, the request id as a UUID string. A click without a valid one is
    /// skipped.
    #[serde(default)]
    pub value: Option<String>,
}

/// Slack's `view` in a `view_submission`: the modal that was submitted.
#[derive(Debug, Clone, Deserialize)]
pub struct View {
    /// Slack's view id (`V…`). Parsed but not read.
    #[serde(default)]
    pub id: Option<String>,
    /// The `callback_id` greenlight gave the modal: which modal this is (e.g.
    /// `greenlight_deny_reason`); other views are ignored.
    #[serde(default)]
    pub callback_id: Option<String>,
    /// Echoed back as greenlight set it (Slack allows 3,000 characters): the request
    /// id, since a submission has no button `value` to carry it.
    #[serde(default)]
    pub private_metadata: Option<String>,
    /// The inputs, raw: an input's value sits at
    /// `values.<block_id>.<action_id>.value`, as Slack documents.
    #[serde(default)]
    pub state: Option<Value>,
}

/// The fields greenlight reads from any interaction payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Payload {
    /// Slack's `type`, the one required top-level field: `block_actions` (a click) and
    /// `view_submission` (a modal submit) are acted on; others are acked and ignored.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who acted. Slack documents it as possibly missing; a payload without it
    /// decides nothing.
    #[serde(default)]
    pub user: Option<User>,
    /// The channel of the clicked message, when Slack sends it (it may not).
    #[serde(default)]
    pub channel: Option<IdOnly>,
    /// Where the clicked element sits; its `channel_id` stands in for `channel`.
    #[serde(default)]
    pub container: Option<Container>,
    /// Lets `views.open` show a modal for this click: it expires 3 seconds after the
    /// click and works once (Slack's `trigger_expired`, `trigger_exchanged`).
    #[serde(default)]
    pub trigger_id: Option<String>,
    /// The elements acted on in a `block_actions`; empty for other types.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// The submitted modal, in a `view_submission`.
    #[serde(default)]
    pub view: Option<View>,
}

/// Which button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// `greenlight_approve`: one vote toward the request's required approvals.
    Approve,
    /// `greenlight_deny`: opens the deny-reason modal; a click without a
    /// `trigger_id` denies without a reason.
    Deny,
    /// "Approve for N seconds": approve and make a standing grant.
    Grant(u64),
    /// Revoke the grant that approved this (FYI) request.
    Revoke,
}

/// A click on one of greenlight's buttons.
#[derive(Debug, Clone)]
pub struct Click {
    /// The request the button belongs to, parsed from the action's `value`.
    pub approval_id: ApprovalId,
    /// Which button, from the action's `action_id`.
    pub button: Button,
    /// Who clicked: the payload's `user`, required for a click to count.
    pub user: User,
    /// Where to send an ephemeral answer, when Slack told us.
    pub channel: Option<String>,
    /// The payload's `trigger_id`, for opening the deny-reason modal (3 seconds, once).
    pub trigger_id: Option<String>,
}

impl Payload {
    /// Decodes the `application/x-www-form-urlencoded` body (`payload=<json>`).
    pub fn from_form(body: &[u8]) -> Result<Self, PayloadError> {
        #[derive(Deserialize)]
        struct Form {
            payload: Option<String>,
        }
        let form: Form =
            serde_urlencoded::from_bytes(body).map_err(|_| PayloadError::MissingPayload)?;
        let raw = form.payload.ok_or(PayloadError::MissingPayload)?;
        serde_json::from_str(&raw).map_err(|e| PayloadError::InvalidJson(e.to_string()))
    }

    /// Decodes a payload that arrives as JSON already: a Socket Mode envelope carries
    /// the same object the HTTP endpoint gets form-encoded, so both share one parser.
    pub fn from_json(value: Value) -> Result<Self, PayloadError> {
        serde_json::from_value(value).map_err(|e| PayloadError::InvalidJson(e.to_string()))
    }

    /// The greenlight button clicks in a `block_actions` payload. Actions that are not
    /// ours, or carry no valid id, are skipped: they decide nothing.
    pub fn clicks(&self) -> Vec<Click> {
        if self.kind != "block_actions" {
            return Vec::new();
        }
        let Some(user) = self.user.clone() else {
            return Vec::new();
        };
        let channel = self
            .channel
            .as_ref()
            .map(|c| c.id.clone())
            .or_else(|| self.container.as_ref().and_then(|c| c.channel_id.clone()));
        self.actions
            .iter()
            .filter_map(|action| {
                let button = match action.action_id.as_str() {
                    APPROVE_ACTION_ID => Button::Approve,
                    DENY_ACTION_ID => Button::Deny,
                    REVOKE_ACTION_ID => Button::Revoke,
                    other => Button::Grant(grant_secs(other)?),
                };
                let approval_id = ApprovalId::parse(action.value.as_deref()?)?;
                Some(Click {
                    approval_id,
                    button,
                    user: user.clone(),
                    channel: channel.clone(),
                    trigger_id: self.trigger_id.clone(),
                })
            })
            .collect()
    }
}

impl User {
    /// How the user is named in reasons and logs: handle and id.
    pub fn display(&self) -> String {
        match self.username.as_deref().or(self.name.as_deref()) {
            Some(name) if !name.is_empty() => format!("{name} ({})", self.id),
            _ => self.id.clone(),
        }
    }
}

/// `payload=<json>` form-encoded, as Slack sends interactions: for unit tests.
#[cfg(test)]
pub(crate) fn form(json: &str) -> Vec<u8> {
    serde_urlencoded::to_string([("payload", json)])
        .expect("encode")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_block_actions_click_and_ignores_unknown_fields() {
        let id = ApprovalId::new();
        let json = format!(
            r#"{{"type":"block_actions","user":{{"id":"U1","username":"alice","team_id":"T1"}},
               "team":{{"id":"T1"}},"container":{{"type":"message","message_ts":"1.2","channel_id":"C9"}},
               "trigger_id":"t","actions":[{{"action_id":"greenlight_deny","block_id":"greenlight_decision",
               "value":"{id}","type":"button","action_ts":"1"}},{{"action_id":"other","value":"{id}"}}],
               "brand_new_field":[1,2,3]}}"#
        );
        let payload = Payload::from_form(&form(&json)).expect("parses");
        let clicks = payload.clicks();
        assert_eq!(clicks.len(), 1);
        assert_eq!(clicks[0].approval_id, id);
        assert_eq!(clicks[0].button, Button::Deny);
        assert_eq!(clicks[0].channel.as_deref(), Some("C9"));
        assert_eq!(clicks[0].user.display(), "alice (U1)");
    }

    #[test]
    fn plus_and_percent_twenty_both_decode_as_space() {
        let body = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22user%22%3A%7B%22id%22%3A%22U1%22%2C%22name%22%3A%22a+b%20c%22%7D%7D";
        let payload = Payload::from_form(body).expect("parses");
        assert_eq!(payload.user.expect("user").name.as_deref(), Some("a b c"));
    }

    #[test]
    fn rejects_missing_or_broken_payload() {
        assert_eq!(
            Payload::from_form(b"foo=bar").err(),
            Some(PayloadError::MissingPayload)
        );
        assert!(matches!(
            Payload::from_form(b"payload=%7Bnope").err(),
            Some(PayloadError::InvalidJson(_))
        ));
        assert!(matches!(
            Payload::from_form(&form(r#"{"user":{"id":"U1"}}"#)).err(),
            Some(PayloadError::InvalidJson(_))
        ));
    }

    #[test]
    fn json_payloads_parse_like_form_payloads() {
        let id = ApprovalId::new();
        let value = serde_json::json!({
            "type": "block_actions", "user": {"id": "U1"}, "unknown": true,
            "actions": [{"action_id": "greenlight_approve", "value": id.to_string()}],
        });
        let clicks = Payload::from_json(value).expect("parses").clicks();
        assert_eq!(clicks.len(), 1);
        assert_eq!(clicks[0].button, Button::Approve);
        assert!(matches!(
            Payload::from_json(serde_json::json!({"user": {"id": "U1"}})).err(),
            Some(PayloadError::InvalidJson(_))
        ));
    }

    #[test]
    fn clicks_need_a_user_and_a_valid_id() {
        let no_user = form(
            r#"{"type":"block_actions","actions":[{"action_id":"greenlight_approve","value":"x"}]}"#,
        );
        assert!(Payload::from_form(&no_user)
            .expect("parses")
            .clicks()
            .is_empty());
        let bad_id = form(
            r#"{"type":"block_actions","user":{"id":"U1"},"actions":[{"action_id":"greenlight_approve","value":"not-a-uuid"}]}"#,
        );
        assert!(Payload::from_form(&bad_id)
            .expect("parses")
            .clicks()
            .is_empty());
    }
}
