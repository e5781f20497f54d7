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
    /// A fresh id: a UUID v7 (see the note on the type).
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Reads an id from a path, a button value or a modal's `private_metadata`: any
    /// UUID text form, surrounding whitespace ignored. `None` when it is not a UUID.
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

/// Where a request stands. Everything but `Pending` is final. `expired` means nobody
/// decided in time, and counts as a deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a reviewer, or for more approvals when `required_approvals` > 1.
    Pending,
    /// Enough distinct reviewers approved, or a policy rule or standing grant did.
    Approved,
    /// A reviewer or a policy rule denied it, or its Slack message could not be posted.
    Denied,
    /// Nobody decided before `expires_at`: a deny by default.
    Expired,
    /// Withdrawn by the agent, or abandoned by greenlight at shutdown during a hook call.
    Cancelled,
}

impl Status {
    /// Every status, `Pending` first.
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Expired,
        Status::Cancelled,
    ];

    /// The wire and database spelling: lowercase, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    /// The inverse of [`Status::as_str`]: exact lowercase only, so `APPROVED` is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// True for every status but `Pending`: a final request never changes again.
    pub fn is_final(self) -> bool {
        self != Status::Pending
    }
}

/// What an agent asked for, after validation.
#[derive(Debug, Clone)]
pub struct NewApproval {
    /// Agent name from its bearer token (`GREENLIGHT_API_TOKENS`): 1–64 ASCII letters,
    /// digits, `-`, `_` or `.`.
    pub agent: String,
    /// The code or command to review, verbatim; never blank. Bounded by the 1 MiB body
    /// on the agent API, by `hooks::render::MAX_CODE_BYTES` for a hook.
    pub code: String,
    /// Fence language(s), trimmed: at most 64 letters, digits, spaces and `+ # . _ - ,`
    /// (`python, sh`). `None` when absent or blank.
    pub language: Option<String>,
    /// One-line summary, trimmed, at most 200 characters. `None` when absent or blank.
    pub title: Option<String>,
    /// Any JSON the agent sent to help the reviewer, stored as is; JSON `null` is `None`.
    pub context: Option<serde_json::Value>,
    /// Seconds until it expires, 1 to `config::MAX_TIMEOUT_SECS` (a week): as asked, else
    /// `GREENLIGHT_DEFAULT_TIMEOUT_SECS` (a hook: `GREENLIGHT_HOOK_BUDGET_SECS`). A
    /// policy rule may lower it before it is stored.
    pub timeout_secs: u64,
    /// Slack user id (`U…`/`W…`) of the person the agent acts for: they may deny the
    /// request but never approve it.
    pub requester_slack_id: Option<String>,
    /// Distinct approvers needed, 1–10 as asked (default 1); a policy rule may raise it.
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
    /// Unique, unguessable, and travels in button values and URLs.
    pub id: ApprovalId,
    /// Agent name from its bearer token, as in [`NewApproval::agent`].
    pub agent: String,
    /// The code or command to review, verbatim.
    pub code: String,
    /// Fence language(s) as submitted (see [`NewApproval::language`]).
    pub language: Option<String>,
    /// One-line summary as submitted; `None` when there is none.
    pub title: Option<String>,
    /// The agent's JSON context, stored as is.
    pub context: Option<serde_json::Value>,
    /// Slack user id the agent acts for: may deny, never approve.
    pub requester_slack_id: Option<String>,
    /// Distinct approvers needed: the agent's number, raised to the matching rule's
    /// floor.
    pub required_approvals: u32,
    /// Slack channel id the request is routed to (Slack's answer once posted); `""`
    /// without Slack, where no message is ever queued.
    pub channel: String,
    /// Slack's `ts` of the request's message, a string like `1712345678.000100`; `None`
    /// until posted (and for batch items other than the one carrying the card).
    pub message_ts: Option<String>,
    /// Where it stands; only `Pending` ever changes.
    pub status: Status,
    /// Why it was decided, as the agent is told; empty while pending (the view shows
    /// [`PENDING_REASON`]).
    pub reason: String,
    /// Who decided, as [`ApprovalView::decided_by`] shows it; `None` while pending.
    pub decided_by: Option<String>,
    /// When it was decided; `None` while pending.
    pub decided_at: Option<DateTime<Utc>>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When a still-pending request expires: `created_at` plus `timeout_secs`.
    pub expires_at: DateTime<Utc>,
}

/// The reason a pending request reports, so `reason` is always a string.
pub const PENDING_REASON: &str = "waiting for a reviewer";

/// The clause that opens the reason of a decision made in Slack. It names the deciders
/// for the agent; the Slack message already says who decided in its summary line, so
/// it shows only what follows the clause (see `slack::blocks::final_message`).
pub const APPROVED_IN_SLACK: &str = "Approved in Slack by ";
/// The deny counterpart of [`APPROVED_IN_SLACK`]: opens the reason of a Deny click
/// that decided without the reason dialog (it could not be opened). A reason typed in
/// the dialog is the reviewer's words alone.
pub const DENIED_IN_SLACK: &str = "Denied in Slack by ";
/// The web review page's counterpart of [`APPROVED_IN_SLACK`].
pub const APPROVED_ON_THE_WEB: &str = "Approved on the review page by ";

/// Who decided when no person did (timeouts, failures to post).
pub const SYSTEM_ACTOR: &str = "greenlight";

/// The key of a request's context that names the coding agent's hook event it came
/// from (`PreToolUse`, `PermissionRequest`), as `crate::hooks::render` sets it for
/// both the HTTP and the command hook.
pub const HOOK_EVENT_KEY: &str = "hook_event_name";

impl NewApproval {
    /// The first field holding the NUL character (U+0000), if one does: `code`,
    /// `title`, `language`, or `context` (any string or key in it). PostgreSQL's text
    /// and JSON types cannot store it, so such a request is refused on every backend
    /// alike rather than failing on one; and no command or reason needs it.
    pub fn field_with_nul(&self) -> Option<&'static str> {
        let has = |text: &str| text.contains('\0');
        if has(&self.code) {
            Some("code")
        } else if self.title.as_deref().is_some_and(has) {
            Some("title")
        } else if self.language.as_deref().is_some_and(has) {
            Some("language")
        } else if self.context.as_ref().is_some_and(json_has_nul) {
            Some("context")
        } else {
            None
        }
    }
}

/// Whether any string or object key in `value` holds U+0000.
fn json_has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_has_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || json_has_nul(value)),
        _ => false,
    }
}

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

    /// Whether a coding agent's hook is waiting for this request (its context has
    /// [`HOOK_EVENT_KEY`]). Its host waits a fixed time (agent-hosts.md: a hook that
    /// outlasts its timeout fails open) and greenlight answers within the hook budget
    /// below it, so such a request's deadline can never move later. An API agent that
    /// puts the key in its own context only keeps its own deadline fixed.
    pub fn waited_on_by_a_hook(&self) -> bool {
        self.context
            .as_ref()
            .and_then(|context| context.get(HOOK_EVENT_KEY))
            .is_some_and(serde_json::Value::is_string)
    }

    /// True only when the status is `Approved`.
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
    /// The request's id (a UUID): the `{id}` of `GET /v1/approvals/{id}`.
    pub id: ApprovalId,
    /// Where it stands: `pending`, or final (`approved`, `denied`, `expired`: nobody
    /// decided in time, a deny; `cancelled`: withdrawn by the agent).
    pub status: Status,
    /// True only when `status` is `approved`.
    pub approved: bool,
    /// Why it was decided; `waiting for a reviewer` while pending.
    pub reason: String,
    /// Who decided: reviewer id(s) (a Slack user id, or `web:<name>` for a reviewer of
    /// the review page without one), comma-separated in approval order when several
    /// approved (`U1,U2`); the agent's name when it cancelled; `greenlight` for
    /// timeouts, policy rules and messages that could not be posted. `null` while
    /// pending.
    pub decided_by: Option<String>,
    /// When it was decided: RFC 3339 in UTC with milliseconds, such as
    /// `2026-11-25T18:00:00.000Z`; `null` while pending.
    #[schema(format = DateTime)]
    pub decided_at: Option<String>,
    /// When greenlight stored it (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When it expires if still pending: `created_at` plus its `timeout_secs`, after any
    /// cap a policy rule set (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// The agent's configured name.
    pub agent: String,
    /// The one-line summary it was submitted with (at most 200 characters); `null` when
    /// none.
    pub title: Option<String>,
    /// The fence language(s) it was submitted with, such as `python` or `python, sh`;
    /// `null` when none.
    pub language: Option<String>,
    /// Slack channel id the request was routed to, where its message goes if it gets
    /// one; `""` when greenlight runs without Slack.
    pub channel: String,
    /// Slack's `ts` of the request's message, a string like `1700000000.000100`; `null`
    /// until it is posted, and for a batch's items other than the one whose message is
    /// the batch's card.
    pub message_ts: Option<String>,
}

/// Where a batch stands: `decided` once every item is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BatchStatus {
    /// At least one item is still pending.
    Pending,
    /// Every item is final; each may have been approved or not.
    Decided,
}

/// The agent-facing shape of a batch (`GET /v1/batches/{id}`, and the `data` of a
/// `batch.decided` callback): its items as `GET /v1/approvals/{id}` shows each, in the
/// order they were submitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct BatchView {
    /// The batch's id (a UUID, not any item's): the `{id}` of `GET /v1/batches/{id}`.
    pub id: ApprovalId,
    /// `pending` while any item is pending, then `decided`.
    pub status: BatchStatus,
    /// The batch's one-line summary (at most 200 characters); `null` when none.
    pub title: Option<String>,
    /// One approval object per submitted action, in the order of `actions`.
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
    /// The final status; never `Pending`.
    pub status: Status,
    /// What the agent is told, verbatim.
    pub reason: String,
    /// Who decided: reviewer ids joined with `,` in approval order, the agent's name
    /// (cancel) or [`SYSTEM_ACTOR`].
    pub decided_by: String,
    /// When; becomes `decided_at`.
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
    /// What approver lists, votes and `decided_by` hold: a Slack user id, or
    /// `web:<name>` for a reviewer of the page without one.
    pub id: String,
    /// Slack handle (or the page's reviewer name), only to make audit entries readable;
    /// `None` when Slack sent none.
    pub name: Option<String>,
    /// Where the click came from.
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
    fn a_nul_anywhere_in_the_text_names_its_field() {
        let mut new = NewApproval {
            agent: "ci".into(),
            code: "ls".into(),
            language: None,
            title: Some("fine".into()),
            context: Some(serde_json::json!({"a": ["x", {"b": "y"}]})),
            timeout_secs: 60,
            requester_slack_id: None,
            required_approvals: 1,
            idempotency_key: None,
            request_hash: "h".into(),
            callback_url: None,
        };
        assert_eq!(new.field_with_nul(), None);
        new.context = Some(serde_json::json!({"a": ["x", {"b": "y\u{0}"}]}));
        assert_eq!(new.field_with_nul(), Some("context"));
        new.context = Some(serde_json::json!({"k\u{0}": 1}));
        assert_eq!(new.field_with_nul(), Some("context"));
        new.code = "ls\u{0}".into();
        assert_eq!(new.field_with_nul(), Some("code"));
    }

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
