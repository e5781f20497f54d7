//! What the domain's state changes answer: what a click did (for the clicker's note,
//! the audit trail and metrics), and the wording of outcomes no human chose.

use serde_json::{json, Value};

use super::approvers::Refusal;
use crate::{model::Approval, store::outbox::Trouble};

/// What an Approve or Deny click did. The adapter that carried the click turns this
/// into what the clicker sees (an ephemeral note, the reason dialog, nothing).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// No such request.
    Unknown,
    /// This click decided the request.
    Decided(Approval),
    /// An approval was counted; more distinct approvers are needed.
    Counted {
        /// Reviewer ids who approved so far, this one included, oldest first.
        voters: Vec<String>,
        /// Distinct approvals the request needs (its `required_approvals`).
        required: u32,
    },
    /// This person had already approved the still-pending request.
    RepeatVote {
        /// The request as it stands, still pending.
        approval: Approval,
        /// Reviewer ids who approved so far, oldest first.
        voters: Vec<String>,
        /// Distinct approvals the request needs (its `required_approvals`).
        required: u32,
    },
    /// A Deny click: the reason dialog must be opened; its submission decides.
    ReasonNeeded(Approval),
    /// The same Deny click again (same trigger): it changes nothing.
    RepeatDeny,
    /// The request was already final; `same_person` if the clicker helped decide it.
    AlreadyFinal {
        /// The request as it was decided.
        approval: Approval,
        /// The clicker is among those who decided it (counted as `duplicate`, not
        /// `late`).
        same_person: bool,
    },
    /// The clicker may not decide this request.
    Refused {
        /// The request, unchanged.
        approval: Approval,
        /// Why: [`Refusal::explain`] is what the clicker is told.
        refusal: Refusal,
    },
}

/// What a click did, as metrics and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickOutcome {
    /// This click decided the request.
    Accepted,
    /// The request was already final when the click arrived.
    Late,
    /// The same person had already decided it (a double tap, a replay).
    Duplicate,
    /// No such request.
    Unknown,
    /// An approval was counted; more distinct approvers are needed.
    Counted,
    /// A Deny click: the reason dialog was asked for; its submission decides.
    ReasonRequested,
    /// The clicker is not an approver for this request.
    NotApprover,
    /// The requester tried to approve their own request.
    SelfApproval,
    /// Whether the clicker is an approver could not be verified (fails closed).
    Unverified,
    /// The current policy denies requests like this one: Approve no longer counts.
    PolicyForbids,
    /// "Approve for …" on a request the policy offers no grant for.
    GrantNotOffered,
}

impl ClickOutcome {
    /// The `outcome` label of `greenlight_clicks_total` and of the click's log line.
    pub fn as_str(self) -> &'static str {
        match self {
            ClickOutcome::Accepted => "accepted",
            ClickOutcome::Late => "late",
            ClickOutcome::Duplicate => "duplicate",
            ClickOutcome::Unknown => "unknown",
            ClickOutcome::Counted => "counted",
            ClickOutcome::ReasonRequested => "reason_requested",
            ClickOutcome::NotApprover => "not_approver",
            ClickOutcome::SelfApproval => "self_approval",
            ClickOutcome::Unverified => "unverified",
            ClickOutcome::PolicyForbids => "policy_forbids",
            ClickOutcome::GrantNotOffered => "grant_not_offered",
        }
    }
}

impl From<Refusal> for ClickOutcome {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotApprover => ClickOutcome::NotApprover,
            Refusal::SelfApproval => ClickOutcome::SelfApproval,
            Refusal::Unverified => ClickOutcome::Unverified,
            Refusal::PolicyForbids => ClickOutcome::PolicyForbids,
            Refusal::GrantNotOffered => ClickOutcome::GrantNotOffered,
        }
    }
}

impl Answer {
    /// How metrics and logs name this answer. A repeat vote, a repeat Deny and a
    /// click on a request the clicker helped decide are all `Duplicate`.
    pub fn outcome(&self) -> ClickOutcome {
        match self {
            Answer::Unknown => ClickOutcome::Unknown,
            Answer::Decided(_) => ClickOutcome::Accepted,
            Answer::Counted { .. } => ClickOutcome::Counted,
            Answer::RepeatVote { .. } | Answer::RepeatDeny => ClickOutcome::Duplicate,
            Answer::ReasonNeeded(_) => ClickOutcome::ReasonRequested,
            Answer::AlreadyFinal {
                same_person: true, ..
            } => ClickOutcome::Duplicate,
            Answer::AlreadyFinal { .. } => ClickOutcome::Late,
            Answer::Refused { refusal, .. } => (*refusal).into(),
        }
    }
}

/// What submitting the deny-reason dialog (or the page's Deny form) did. `Refused`
/// carries the text shown under the reason field, so the reviewer sees why in the
/// dialog itself.
#[derive(Debug, Clone, PartialEq)]
pub enum ReasonOutcome {
    /// The request is denied with the reason as typed.
    Denied,
    /// Nothing changed: the reviewer may not decide the request, or there is no such
    /// request; the text is shown under the reason field.
    Refused(String),
    /// Nothing changed: the request was already final (decided, expired or cancelled)
    /// when the reason arrived. The request as it ended, so each surface can say how
    /// and by whom in its own words (the page answers 409 `already_decided`, like a late
    /// Approve, rather than the 403 of a reviewer with no say).
    AlreadyFinal(Box<Approval>),
}

/// The reason and audit detail for a request that reaches its deadline with no Slack
/// message. "Timed out" alone would blame the reviewers, who never saw anything; this
/// names the failure that held up its channel (`trouble`, the last one since it was
/// submitted), or says it was still queued.
pub fn never_posted(
    approval: &Approval,
    waited_secs: i64,
    trouble: Option<&Trouble>,
) -> (String, Value) {
    let why = match trouble {
        Some(trouble) => format!(
            "its Slack message could not be posted to {} in time ({})",
            approval.channel, trouble.text
        ),
        None => format!(
            "its Slack message was never posted to {} (still queued behind earlier messages)",
            approval.channel
        ),
    };
    let reason = format!(
        "Timed out after {waited_secs} s: {why}, so no reviewer saw it and it was denied by default"
    );
    let detail = json!({
        "timeout_secs": waited_secs,
        "never_posted": true,
        "post_error": trouble.map(|t| t.code.as_str()),
        "post_error_detail": trouble.map(|t| t.text.as_str()),
    });
    (reason, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_click_outcome_has_a_series_from_start_up() {
        use ClickOutcome::*;
        let all = [
            Accepted,
            Late,
            Duplicate,
            Unknown,
            Counted,
            ReasonRequested,
            NotApprover,
            SelfApproval,
            Unverified,
            PolicyForbids,
            GrantNotOffered,
        ];
        // A new variant fails to compile here until it is listed above.
        for outcome in all {
            match outcome {
                Accepted | Late | Duplicate | Unknown | Counted | ReasonRequested | NotApprover
                | SelfApproval | Unverified | PolicyForbids | GrantNotOffered => {}
            }
        }
        let mut labels: Vec<_> = all.iter().map(|o| o.as_str()).collect();
        let mut created = crate::metrics::CLICK_OUTCOMES.to_vec();
        labels.sort_unstable();
        created.sort_unstable();
        assert_eq!(labels, created);
    }

    #[test]
    fn names_the_channel_failure_while_it_waited() {
        let approval = crate::model::sample("ls");
        let trouble = Trouble {
            code: "ratelimited".into(),
            text: "Slack kept rate-limiting chat.postMessage (HTTP 429)".into(),
        };
        let (reason, detail) = never_posted(&approval, 5, Some(&trouble));
        assert!(
            reason.contains("rate-limiting chat.postMessage"),
            "{reason}"
        );
        assert!(reason.contains("denied by default"), "{reason}");
        assert_eq!(detail["post_error"], "ratelimited");
        assert_eq!(detail["never_posted"], true);
    }

    #[test]
    fn says_still_queued_without_a_failure() {
        let (reason, detail) = never_posted(&crate::model::sample("ls"), 5, None);
        assert!(reason.contains("still queued"), "{reason}");
        assert_eq!(detail["post_error"], Value::Null);
    }

    #[test]
    fn a_refusal_is_its_own_outcome() {
        let answer = Answer::Refused {
            approval: crate::model::sample("ls"),
            refusal: Refusal::SelfApproval,
        };
        assert_eq!(answer.outcome(), ClickOutcome::SelfApproval);
    }
}
