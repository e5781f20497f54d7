//! The model: what an approval request is, the states it moves through, who reviews
//! it, and the JSON an agent sees. At the bottom of the house: the store, the domain
//! and every adapter import it; it imports nothing of ours.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Identifies one approval request. A UUID so ids are unguessable: the id travels in
/// Slack button values and URLs.
//
// Version 7: its 74 random bits keep it unguessable, and its leading timestamp makes
// new ids sort after old ones, so the database appends each new request (and its
// events and outbox rows) to the end of the indexes keyed by id rather than rewriting
// a random page of each: a commit writes a few pages, not one per request per index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct ApprovalId(pub Uuid);

impl ApprovalId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Uuid::parse_str(raw.trim()).ok().map(Self)
    }
}

impl Default for ApprovalId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a request stands. Everything but `Pending` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Expired,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn is_final(self) -> bool {
        self != Status::Pending
    }
}

/// What an agent asked for, after validation.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub agent: String,
    pub code: String,
    pub language: Option<String>,
    pub title: Option<String>,
    pub context: Option<serde_json::Value>,
    pub timeout_secs: u64,
    pub requester_slack_id: Option<String>,
    pub required_approvals: u32,
    /// `Idempotency-Key` header, scoped to the agent.
    pub idempotency_key: Option<String>,
    /// Hash of the request body, so a reused key with another body is caught.
    pub request_hash: String,
    /// Where to POST the signed decision (already checked against
    /// `GREENLIGHT_CALLBACK_HOSTS`); `None` for no callback.
    pub callback_url: Option<String>,
}

/// One approval request as stored, with its current state.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: ApprovalId,
    pub agent: String,
    pub code: String,
    pub language: Option<String>,
    pub title: Option<String>,
    pub context: Option<serde_json::Value>,
    pub requester_slack_id: Option<String>,
    pub required_approvals: u32,
    pub channel: String,
    pub message_ts: Option<String>,
    pub status: Status,
    pub reason: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The reason a pending request reports, so `reason` is always a string.
pub const PENDING_REASON: &str = "waiting for a reviewer";

/// The clause that opens the reason of a decision made in Slack. It names the deciders
/// for the agent; the Slack message already says who decided in its summary line, so
/// it shows only what follows the clause (see `slack::blocks::final_message`).
pub const APPROVED_IN_SLACK: &str = "Approved in Slack by ";
pub const DENIED_IN_SLACK: &str = "Denied in Slack by ";
/// The web review page's counterpart of [`APPROVED_IN_SLACK`].
pub const APPROVED_ON_THE_WEB: &str = "Approved on the review page by ";

/// Who decided when no person did (timeouts, failures to post).
pub const SYSTEM_ACTOR: &str = "greenlight";

impl Approval {
    /// A request as it stands right after it was stored: pending, never posted.
    pub fn stored(
        id: ApprovalId,
        new: NewApproval,
        channel: String,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            agent: new.agent,
            code: new.code,
            language: new.language,
            title: new.title,
            context: new.context,
            requester_slack_id: new.requester_slack_id,
            required_approvals: new.required_approvals,
            channel,
            message_ts: None,
            status: Status::Pending,
            reason: String::new(),
            decided_by: None,
            decided_at: None,
            created_at,
            expires_at,
        }
    }

    pub fn approved(&self) -> bool {
        self.status == Status::Approved
    }

    /// The JSON the agent API returns for this request.
    pub fn view(&self) -> ApprovalView {
        ApprovalView {
            id: self.id,
            status: self.status,
            approved: self.approved(),
            reason: if self.status == Status::Pending {
                PENDING_REASON.to_owned()
            } else {
                self.reason.clone()
            },
            decided_by: self.decided_by.clone(),
            decided_at: self.decided_at.map(rfc3339),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            agent: self.agent.clone(),
            title: self.title.clone(),
            language: self.language.clone(),
            channel: self.channel.clone(),
            message_ts: self.message_ts.clone(),
        }
    }
}

/// The agent-facing shape of an approval (see `docs/api-contract.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ApprovalView {
    pub id: ApprovalId,
    pub status: Status,
    /// True only when `status` is `approved`.
    pub approved: bool,
    /// Why it was decided; `waiting for a reviewer` while pending.
    pub reason: String,
    /// Slack user id(s) who decided, the agent (cancel) or `greenlight` (timeouts).
    pub decided_by: Option<String>,
    #[schema(format = DateTime)]
    pub decided_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The agent's configured name.
    pub agent: String,
    pub title: Option<String>,
    pub language: Option<String>,
    /// Slack channel id of the message.
    pub channel: String,
    /// Slack message timestamp, once posted.
    pub message_ts: Option<String>,
}

/// Where a batch stands: `decided` once every item is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    Pending,
    Decided,
}

/// The agent-facing shape of a batch (`GET /v1/batches/{id}`, and the `data` of a
/// `batch.decided` callback): its items as `GET /v1/approvals/{id}` shows each, in the
/// order they were submitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BatchView {
    pub id: ApprovalId,
    pub status: BatchStatus,
    pub title: Option<String>,
    pub approvals: Vec<ApprovalView>,
}

impl BatchView {
    /// The view of batch `id` with `items` (in order) as they stand.
    pub fn of(id: ApprovalId, title: Option<String>, items: &[Approval]) -> Self {
        let status = if items.iter().all(|a| a.status.is_final()) {
            BatchStatus::Decided
        } else {
            BatchStatus::Pending
        };
        Self {
            id,
            status,
            title,
            approvals: items.iter().map(Approval::view).collect(),
        }
    }
}

/// A final outcome to record: the one write that ends a request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub status: Status,
    pub reason: String,
    pub decided_by: String,
    pub at: DateTime<Utc>,
}

/// Millisecond RFC 3339 in UTC: fixed width, so stored timestamps sort as text.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A person who clicks Approve or Deny: their Slack user id (`U…`/`W…`; on the web
/// page, the configured Slack id or `web:<name>`) and, when known, their handle. The
/// id is what approver lists, votes and `decided_by` hold; the name only makes audit
/// entries readable; the surface says where the click came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reviewer {
    pub id: String,
    pub name: Option<String>,
    pub surface: Surface,
}

/// Where a reviewer decided: recorded as `surface` in the audit trail's decision
/// events, and named in the reason of a web approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Surface {
    /// A button in Slack (HTTP interactivity or Socket Mode).
    #[default]
    Slack,
    /// The web review page (`crate::web`).
    Web,
}

impl Surface {
    /// The audit trail's `surface` value: `slack` or `web`.
    pub fn as_str(self) -> &'static str {
        match self {
            Surface::Slack => "slack",
            Surface::Web => "web",
        }
    }

    /// The clause that opens an approval's reason, before the deciders' names.
    pub fn approved_clause(self) -> &'static str {
        match self {
            Surface::Slack => APPROVED_IN_SLACK,
            Surface::Web => APPROVED_ON_THE_WEB,
        }
    }

    /// How a deny reason reached greenlight: Slack's dialog, or the page's form.
    pub fn reason_via(self) -> &'static str {
        match self {
            Surface::Slack => "modal",
            Surface::Web => "form",
        }
    }
}

impl Reviewer {
    /// How the reviewer is named in audit entries and logs: `handle (U…)`, or the id.
    pub fn display(&self) -> String {
        match self.name.as_deref() {
            Some(name) if !name.is_empty() => format!("{name} ({})", self.id),
            _ => self.id.clone(),
        }
    }
}

/// Is this a Slack user id (`U…`/`W…`, 3–32 upper-case letters and digits), safe to
/// turn into a `<@…>` mention?
pub fn is_user_id(raw: &str) -> bool {
    raw.len() >= 3
        && raw.len() <= 32
        && raw.starts_with(['U', 'W'])
        && raw
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The prefix of a web-only reviewer's id (`web:<name>`): a reviewer of the review
/// page with no Slack user id is known by their configured name.
pub const WEB_REVIEWER_PREFIX: &str = "web:";

/// The id of the web-only reviewer `name`: `web:<name>`.
pub fn web_reviewer_id(name: &str) -> String {
    format!("{WEB_REVIEWER_PREFIX}{name}")
}

/// Is `raw` a web-only reviewer's id: `web:` then a reviewer name (1–64 ASCII
/// letters, digits, `-`, `_` or `.`, as `GREENLIGHT_REVIEWERS` requires)?
pub fn is_web_reviewer_id(raw: &str) -> bool {
    raw.strip_prefix(WEB_REVIEWER_PREFIX).is_some_and(|name| {
        (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    })
}

/// The deciders named in a reason: `<@U1>, <@U2>` for Slack user ids. Reviewer ids
/// come from signed Slack payloads; anything else is named as it is.
pub fn mentions(ids: &[String]) -> String {
    ids.iter()
        .map(|who| {
            if is_user_id(who) {
                format!("<@{who}>")
            } else {
                who.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pending request for unit tests; override fields with struct update syntax.
#[cfg(test)]
pub(crate) fn sample(code: &str) -> Approval {
    Approval {
        id: ApprovalId::new(),
        agent: "ci-bot".into(),
        code: code.into(),
        language: Some("python".into()),
        title: None,
        context: None,
        requester_slack_id: None,
        required_approvals: 1,
        channel: "C1".into(),
        message_ts: None,
        status: Status::Pending,
        reason: String::new(),
        decided_by: None,
        decided_at: None,
        created_at: Utc::now(),
        expires_at: Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).expect("serialize"), s.as_str());
        }
        assert_eq!(Status::parse("APPROVED"), None);
    }

    #[test]
    fn only_approved_is_approved() {
        let mut a = sample("ls");
        assert_eq!(a.view().reason, PENDING_REASON);
        for s in Status::ALL {
            a.status = s;
            assert_eq!(a.view().approved, s == Status::Approved);
        }
    }
}
