//! The agent API's JSON as this client reads it. The contract is the "Approval object"
//! of `docs/api-contract.md` (schema `ApprovalView` in `docs/openapi.json`); these are
//! the client's own types for it, not the server's, so an agent compiles only this
//! crate and the server may reshape its internals as long as the JSON stays the same.
//! The server's end-to-end tests (`tests/e2e/client.rs`) read its real answers into
//! these types and check nothing is lost.
//!
//! Reading is lenient where the contract may grow and strict where a wrong reading
//! could approve: fields this client does not know are ignored (a newer server may add
//! some) and the nullable ones may be missing, but an unknown `status` or an `id` that
//! is not a UUID is an error, which the client turns into a denial.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One approval request as the service reports it, pending or final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Approval {
    /// The approval id; an answer whose `id` is not a UUID is refused.
    pub id: Uuid,
    /// Where it stands; an unknown value is refused (a denial), never guessed at.
    pub status: ApprovalStatus,
    /// True only when `status` is `approved`; the client refuses an answer where the
    /// two disagree.
    pub approved: bool,
    /// Why it was decided; `waiting for a reviewer` while pending.
    pub reason: String,
    /// Slack user id(s) who decided (comma-separated when several approved),
    /// `web:<name>` (review page), the agent (cancel) or `greenlight` (timeouts, policy
    /// rules); `None` while pending.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// RFC 3339, e.g. `2026-11-25T18:00:00.000Z`.
    #[serde(default)]
    pub decided_at: Option<String>,
    /// RFC 3339. Kept as text: a timestamp the client cannot read costs only the
    /// precision of its deadline (see `protocol::time_to_live`), not the decision.
    pub created_at: String,
    /// RFC 3339; no decision by then denies.
    pub expires_at: String,
    /// The submitting agent's configured name (its token's name).
    pub agent: String,
    /// The request's `title`, if it sent one.
    #[serde(default)]
    pub title: Option<String>,
    /// The request's `language` (trimmed), if it sent one.
    #[serde(default)]
    pub language: Option<String>,
    /// Slack channel id of the message; empty when the service runs without Slack.
    pub channel: String,
    /// Slack message timestamp, once posted.
    #[serde(default)]
    pub message_ts: Option<String>,
}

/// Where a request stands. Everything but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    /// Waiting for reviewers (`reason` is `waiting for a reviewer`).
    Pending,
    /// Approved: the only status whose `approved` is true.
    Approved,
    /// Denied by a reviewer, a policy rule, or because its Slack message could not be
    /// posted.
    Denied,
    /// Nobody decided before `expires_at`: denied by default.
    Expired,
    /// Withdrawn for the agent: `POST /v1/approvals/{id}/cancel`, or a coding agent's
    /// hook call the service gave up at shutdown.
    Cancelled,
}

impl ApprovalStatus {
    /// Every status, `Pending` first.
    pub const ALL: [ApprovalStatus; 5] = [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Denied,
        ApprovalStatus::Expired,
        ApprovalStatus::Cancelled,
    ];

    /// The status as the JSON spells it (lowercase).
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// True for every status but `Pending`; a final status never changes.
    pub fn is_final(self) -> bool {
        self != ApprovalStatus::Pending
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The example of docs/api-contract.md, filled in.
    fn decided() -> serde_json::Value {
        json!({
            "id": "0b5d2f9e-8f1a-4c55-9d6e-0a1b2c3d4e5f",
            "status": "approved", "approved": true,
            "reason": "Approved in Slack by <@U1>, <@U2>", "decided_by": "U1,U2",
            "decided_at": "2026-11-25T18:00:00.000Z",
            "created_at": "2026-11-25T17:55:00.000Z", "expires_at": "2026-11-25T18:05:00.000Z",
            "agent": "ci-bot", "title": "Deploy", "language": "bash",
            "channel": "C1", "message_ts": "1700000000.000100"
        })
    }

    #[test]
    fn the_contract_example_reads_and_writes_back_unchanged() {
        let approval: Approval = serde_json::from_value(decided()).expect("reads");
        assert_eq!(approval.status, ApprovalStatus::Approved);
        assert_eq!(approval.decided_by.as_deref(), Some("U1,U2"));
        assert_eq!(serde_json::to_value(&approval).expect("writes"), decided());
    }

    #[test]
    fn unknown_fields_are_ignored_and_nullable_ones_may_be_missing() {
        let mut body = decided();
        body["added_by_a_newer_server"] = json!({"x": 1});
        for field in [
            "decided_by",
            "decided_at",
            "title",
            "language",
            "message_ts",
        ] {
            body.as_object_mut().expect("object").remove(field);
        }
        let approval: Approval = serde_json::from_value(body).expect("reads");
        assert_eq!((approval.title, approval.message_ts), (None, None));
    }

    #[test]
    fn what_a_decision_rests_on_is_read_strictly() {
        for (field, value) in [
            ("status", json!("maybe")),
            ("status", json!("Approved")),
            ("id", json!("not-a-uuid")),
            ("approved", json!("yes")),
        ] {
            let mut body = decided();
            body[field] = value.clone();
            assert!(
                serde_json::from_value::<Approval>(body).is_err(),
                "{field}: {value}"
            );
        }
        for field in ["id", "status", "approved", "reason"] {
            let mut body = decided();
            body.as_object_mut().expect("object").remove(field);
            assert!(serde_json::from_value::<Approval>(body).is_err(), "{field}");
        }
    }

    #[test]
    fn statuses_are_their_lowercase_names() {
        for status in ApprovalStatus::ALL {
            assert_eq!(serde_json::to_value(status).expect("json"), status.as_str());
            assert_eq!(status.is_final(), status != ApprovalStatus::Pending);
        }
    }
}
