//! The reviewer's side of the service: clicks on Approve and Deny, the deny reason,
//! who may decide a request (approver lists, no self-approval, the policy as it is
//! now), and the approval progress a pending message shows.
//!
//! Every write here is conditional on the request still being pending in the store;
//! a request found in the recent cache is used only for what never changes.

use chrono::Utc;
use serde_json::json;

use super::{
    approvers::Refusal,
    outcomes::{Answer, ReasonOutcome},
    service::{to_the_end, ApprovalService, Progress, ServiceError},
};
use crate::{
    model::{mentions, Approval, ApprovalId, Decision, Reviewer, Status, DENIED_IN_SLACK},
    policy::{Plan, Requested, Subject},
    store::{NewEvent, Vote},
};

/// Who may decide a request and whether Approve needs confirming, from the policy.
#[derive(Debug, Clone)]
pub(super) struct Access {
    pub(super) approvers: Option<Vec<String>>,
    high_risk_rule: Option<String>,
    /// The policy now auto-denies requests like this one: Approve must not count.
    approve_forbidden: bool,
}

/// The decision and event an approval by `reviewer` makes once `voters` (the reviewer
/// among them) are enough.
fn approval_by(
    reviewer: &Reviewer,
    at: chrono::DateTime<Utc>,
) -> impl FnOnce(&[String]) -> (Decision, NewEvent) + Send + 'static {
    let (user, display) = (reviewer.id.clone(), reviewer.display());
    let surface = reviewer.surface;
    move |voters| {
        let decision = Decision {
            status: Status::Approved,
            reason: format!("{}{}", surface.approved_clause(), mentions(voters)),
            decided_by: voters.join(","),
            at,
        };
        let event = NewEvent::new(
            "decided",
            Some(&user),
            json!({ "via": "click", "button": "approve", "status": "approved", "user": display, "approvers": voters, "surface": surface.as_str() }),
        );
        (decision, event)
    }
}

impl ApprovalService {
    /// The request as a click needs it: from the recent cache when it is there (see
    /// `recent` for why a pending copy is safe: every write a click makes is
    /// conditional on the store), else the store.
    pub(super) async fn current(&self, id: ApprovalId) -> Result<Option<Approval>, ServiceError> {
        if let Some(seen) = self.inner.recent.get(id) {
            // An overdue copy goes to the store: expiring it needs its current state.
            if seen.status.is_final() || seen.expires_at > Utc::now() {
                return Ok(Some((*seen).clone()));
            }
        }
        let Some(approval) = self.inner.store.get(id).await? else {
            return Ok(None);
        };
        let approval = self.overdue_expired(approval).await?;
        self.inner.recent.remember(&approval);
        Ok(Some(approval))
    }

    /// An Approve click. The clicker must be allowed to decide (approver list, no
    /// self-approval); then the approval is a durable vote, which decides once enough
    /// distinct people have approved. Everything that changes state is committed
    /// before this returns.
    pub async fn approve(
        &self,
        id: ApprovalId,
        reviewer: &Reviewer,
    ) -> Result<Answer, ServiceError> {
        let Some(approval) = self.current(id).await? else {
            tracing::warn!(request_id = %id, user = %reviewer.id, "click on an unknown request");
            return Ok(Answer::Unknown);
        };
        if approval.status.is_final() {
            return Ok(self.already_final(approval, reviewer, "approve", None));
        }
        if let Err(refusal) = self.may_decide(&approval, &reviewer.id, true).await {
            return Ok(self.refuse(approval, reviewer, "approve", None, refusal));
        }
        let now = Utc::now();
        let decide = approval_by(reviewer, now);
        if approval.required_approvals <= 1 {
            // One approval decides: the conditional write alone, no vote to count.
            let (decision, event) = decide(std::slice::from_ref(&reviewer.id));
            return Ok(match self.finish(id, decision, event).await? {
                Some(decided) => Answer::Decided(decided),
                None => self.already_final(self.get(id).await?, reviewer, "approve", None),
            });
        }
        let (user, display, surface) = (reviewer.id.clone(), reviewer.display(), reviewer.surface);
        let this = self.clone();
        let vote = to_the_end(async move {
            let vote = this
                .inner
                .store
                .record_approval(id, user.clone(), now, decide, move |voters, required| {
                    NewEvent::new(
                        "approval_vote",
                        Some(&user),
                        json!({ "user": display, "votes": voters.len(), "required": required, "surface": surface.as_str() }),
                    )
                })
                .await?;
            if let Vote::Decided(decided) = &vote {
                this.decided(decided, false);
            }
            Ok(vote)
        })
        .await?;
        Ok(match vote {
            Vote::Decided(decided) => Answer::Decided(*decided),
            Vote::Counted { voters, .. } => {
                self.changed(id);
                tracing::info!(request_id = %id, user = %reviewer.id, votes = voters.len(), required = approval.required_approvals, "approval counted");
                Answer::Counted {
                    voters,
                    required: approval.required_approvals,
                }
            }
            Vote::Repeat(voters) => {
                self.audit_ignored(
                    id,
                    reviewer,
                    "approve",
                    None,
                    "repeat_vote",
                    json!({ "status": "pending", "votes": voters.len() }),
                );
                Answer::RepeatVote {
                    voters,
                    required: approval.required_approvals,
                    approval,
                }
            }
            // Lost a race with another decision, the deadline or a cancel.
            Vote::NotPending => {
                let now_final = self.get(id).await?;
                self.inner.recent.remember(&now_final);
                self.already_final(now_final, reviewer, "approve", None)
            }
        })
    }

    /// A Deny click. A permitted one records that a reason was asked for (under the
    /// click's `trigger_id`) and answers [`Answer::ReasonNeeded`]: the adapter opens
    /// the reason dialog, whose submission decides ([`Self::deny`]). Without a trigger
    /// no dialog can open, so it denies at once.
    pub async fn deny_clicked(
        &self,
        id: ApprovalId,
        reviewer: &Reviewer,
        trigger_id: Option<&str>,
    ) -> Result<Answer, ServiceError> {
        let Some(approval) = self.current(id).await? else {
            tracing::warn!(request_id = %id, user = %reviewer.id, "click on an unknown request");
            return Ok(Answer::Unknown);
        };
        if approval.status.is_final() {
            return Ok(self.already_final(approval, reviewer, "deny", None));
        }
        if let Err(refusal) = self.may_decide(&approval, &reviewer.id, false).await {
            return Ok(self.refuse(approval, reviewer, "deny", None, refusal));
        }
        let Some(trigger_id) = trigger_id.filter(|t| !t.is_empty()) else {
            return Ok(
                match self
                    .deny_without_reason(id, reviewer, "no_trigger_id")
                    .await?
                {
                    Some(decided) => Answer::Decided(decided),
                    None => self.already_final(self.get(id).await?, reviewer, "deny", None),
                },
            );
        };
        // Slack issues a fresh trigger per click, so a second Deny with the same one is
        // that click again (a proxy retry, a replay inside the signature window). Its
        // used trigger could not open a dialog, and denying "without a reason" in the
        // reviewer's name would be a decision they did not make.
        let store = &self.inner.store;
        if store
            .has_event(id, "reason_requested", Some(("trigger_id", trigger_id)))
            .await?
        {
            self.audit_ignored(
                id,
                reviewer,
                "deny",
                None,
                "duplicate",
                json!({ "status": "pending" }),
            );
            return Ok(Answer::RepeatDeny);
        }
        let event = NewEvent::new(
            "reason_requested",
            Some(&reviewer.id),
            json!({ "user": reviewer.display(), "trigger_id": trigger_id }),
        );
        store.append_event(id, event).await?;
        Ok(Answer::ReasonNeeded(approval))
    }

    /// The Deny fallback when no reason can be asked for: the reviewer meant to deny,
    /// so deny now rather than leave the request waiting on a dialog that never opened.
    pub async fn deny_without_reason(
        &self,
        id: ApprovalId,
        reviewer: &Reviewer,
        why: &str,
    ) -> Result<Option<Approval>, ServiceError> {
        let decision = Decision {
            status: Status::Denied,
            reason: format!(
                "{DENIED_IN_SLACK}{}; no reason was given (the reason dialog could not be opened)",
                mentions(std::slice::from_ref(&reviewer.id))
            ),
            decided_by: reviewer.id.clone(),
            at: Utc::now(),
        };
        let event = NewEvent::new(
            "decided",
            Some(&reviewer.id),
            json!({ "via": "click", "button": "deny", "status": "denied", "user": reviewer.display(), "modal_error": why, "surface": reviewer.surface.as_str() }),
        );
        self.finish(id, decision, event).await
    }

    /// The deny-reason dialog was submitted: the same checks as a click, then the
    /// request is denied with the reason exactly as typed.
    pub async fn deny(
        &self,
        id: ApprovalId,
        reviewer: &Reviewer,
        reason: &str,
    ) -> Result<ReasonOutcome, ServiceError> {
        let Some(approval) = self.current(id).await? else {
            return Ok(ReasonOutcome::Refused(
                "This request no longer exists.".into(),
            ));
        };
        if approval.status.is_final() {
            return Ok(self.late_reason(&approval, reviewer));
        }
        if let Err(refusal) = self.may_decide(&approval, &reviewer.id, false).await {
            self.refuse(
                approval,
                reviewer,
                "deny",
                Some(reviewer.surface.reason_via()),
                refusal,
            );
            return Ok(ReasonOutcome::Refused(refusal.explain().into()));
        }
        let decision = Decision {
            status: Status::Denied,
            reason: reason.to_owned(),
            decided_by: reviewer.id.clone(),
            at: Utc::now(),
        };
        let event = NewEvent::new(
            "decided",
            Some(&reviewer.id),
            json!({ "via": reviewer.surface.reason_via(), "button": "deny", "status": "denied", "user": reviewer.display(), "surface": reviewer.surface.as_str() }),
        );
        match self.finish(id, decision, event).await? {
            Some(_) => Ok(ReasonOutcome::Denied),
            None => Ok(self.late_reason(&self.get(id).await?, reviewer)),
        }
    }

    fn late_reason(&self, approval: &Approval, reviewer: &Reviewer) -> ReasonOutcome {
        self.audit_ignored(
            approval.id,
            reviewer,
            "deny",
            Some(reviewer.surface.reason_via()),
            "late",
            json!({ "status": approval.status.as_str() }),
        );
        ReasonOutcome::AlreadyFinal(Box::new(approval.clone()))
    }

    /// A click on a final request: a duplicate if the clicker took part in the
    /// decision, late otherwise. Changes nothing, so its audit entry rides with the
    /// next write batch, merged with its repeats.
    pub(super) fn already_final(
        &self,
        approval: Approval,
        reviewer: &Reviewer,
        button: &str,
        via: Option<&str>,
    ) -> Answer {
        let same_person = approval
            .decided_by
            .as_deref()
            .is_some_and(|by| by.split(',').any(|who| who == reviewer.id));
        let why = if same_person { "duplicate" } else { "late" };
        self.audit_ignored(
            approval.id,
            reviewer,
            button,
            via,
            why,
            json!({ "status": approval.status.as_str() }),
        );
        tracing::debug!(request_id = %approval.id, user = %reviewer.id, why, "click ignored");
        Answer::AlreadyFinal {
            approval,
            same_person,
        }
    }

    /// A click that may not count: audited, and the clicker is told why.
    pub(super) fn refuse(
        &self,
        approval: Approval,
        reviewer: &Reviewer,
        button: &str,
        via: Option<&str>,
        refusal: Refusal,
    ) -> Answer {
        self.audit_ignored(
            approval.id,
            reviewer,
            button,
            via,
            refusal.as_str(),
            json!({ "status": approval.status.as_str(), "user": reviewer.display() }),
        );
        tracing::info!(request_id = %approval.id, user = %reviewer.id, why = refusal.as_str(), "click refused");
        Answer::Refused { approval, refusal }
    }

    /// Records a click that changed nothing (`click_ignored`), with the next batch.
    fn audit_ignored(
        &self,
        id: ApprovalId,
        reviewer: &Reviewer,
        button: &str,
        via: Option<&str>,
        why: &str,
        mut detail: serde_json::Value,
    ) {
        detail["button"] = button.into();
        detail["why"] = why.into();
        detail["surface"] = reviewer.surface.as_str().into();
        if let Some(via) = via {
            detail["via"] = via.into();
        }
        self.inner.store.defer_event(
            id,
            NewEvent::new("click_ignored", Some(&reviewer.id), detail),
        );
    }

    /// The approver list and high-risk flag for a request, from the policy as it is
    /// now (so a restart with a narrower list takes effect on pending requests too).
    pub(super) fn access(&self, approval: &Approval) -> Access {
        let plan = self.plan_for(
            &approval.agent,
            approval.language.as_deref(),
            &approval.code,
            approval.context.as_ref(),
            Requested {
                required_approvals: approval.required_approvals,
                timeout_secs: 1,
            },
        );
        match plan {
            Plan::Route {
                rule,
                approvers,
                high_risk,
                ..
            } => Access {
                approvers,
                high_risk_rule: high_risk.then_some(rule),
                approve_forbidden: false,
            },
            // The policy changed since the request was routed and now decides requests
            // like it automatically. Fail closed: if it would deny, Approve no longer
            // counts; either way the global approver list says who may click.
            Plan::Auto { approve, .. } => Access {
                approvers: self.inner.defaults.approvers.clone(),
                high_risk_rule: None,
                approve_forbidden: !approve,
            },
        }
    }

    /// What the policy does with a request from `agent`, computed without storing
    /// anything (the same answer `submit` will reach: the policy is pure). The hook
    /// endpoint uses it to answer silent automatic decisions at once.
    pub fn plan_for(
        &self,
        agent: &str,
        language: Option<&str>,
        code: &str,
        context: Option<&serde_json::Value>,
        requested: Requested,
    ) -> Plan {
        self.inner.policy.plan(
            &Subject {
                agent: Some(agent),
                language,
                code,
                context,
            },
            requested,
            &self.inner.defaults,
        )
    }

    /// May `user` approve (or deny) this request? The requester may never approve
    /// and may always deny (withdrawing their own ask); everyone else must be on the
    /// approver list, when there is one, to approve *or* deny: a list names who has a
    /// say, and a bystander's denial would be a decision by someone without one.
    pub(super) async fn may_decide(
        &self,
        approval: &Approval,
        user: &str,
        approve: bool,
    ) -> Result<(), Refusal> {
        if approval.requester_slack_id.as_deref() == Some(user) {
            return if approve {
                Err(Refusal::SelfApproval)
            } else {
                Ok(())
            };
        }
        let access = self.access(approval);
        if access.approve_forbidden && approve {
            return Err(Refusal::PolicyForbids);
        }
        let Some(approvers) = access.approvers else {
            return Ok(());
        };
        match self.inner.directory.allows(&approvers, user).await {
            Ok(true) => Ok(()),
            // Once escalated, the rule's `escalate_to` may decide too.
            Ok(false) => match self.escalation_allows(approval, user).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Refusal::NotApprover),
                Err(refusal) => Err(refusal),
            },
            Err(_) => Err(Refusal::Unverified),
        }
    }

    /// Why `reviewer` may not approve (`approve`) or deny this pending request, or
    /// `None` if they may: the same check a click goes through, for a page that shows
    /// only the buttons its reader may use. The click is checked again when it comes.
    pub async fn refusal_for(
        &self,
        approval: &Approval,
        reviewer: &Reviewer,
        approve: bool,
    ) -> Option<Refusal> {
        self.may_decide(approval, &reviewer.id, approve).await.err()
    }

    /// What a pending message shows besides the request: votes so far and the
    /// high-risk rule, if any.
    pub async fn progress(&self, approval: &Approval) -> Result<Progress, ServiceError> {
        // With one approval needed, the first one decides: there are never votes to show.
        let votes = if approval.required_approvals > 1 {
            self.inner.store.votes(approval.id).await?
        } else {
            Vec::new()
        };
        Ok(Progress {
            votes,
            high_risk_rule: self.access(approval).high_risk_rule,
            grant_durations: self.grant_offer(approval),
        })
    }
}
