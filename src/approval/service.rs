//! The approval service: the one place that changes a request's state.
//!
//! Every transition is one store write, conditional on the request still being
//! pending, that also queues what must follow it (the Slack message to post or
//! rewrite goes into the store's outbox in the same transaction). Once it is
//! committed, waiters wake. The service starts no task and renders no message: the
//! workers (`crate::app` starts them) and the adapters (Slack, HTTP) do that from what
//! it returns and what the store holds.
//!
//! Who may decide, and how many must, comes from the policy (`crate::policy`): the
//! matching rule picks the channel, the approvers, the approvals needed and the
//! timeout, or decides on its own. A click is checked against that before it counts;
//! an approval is a durable vote, and the vote that completes the count decides in the
//! same transaction (`Store::record_approval`). A Deny click asks for a reason; the
//! submitted reason decides.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::json;
use tokio::sync::watch;

use super::{
    approvers::{Directory, GroupMembers, Refusal},
    outcomes::{Answer, ReasonOutcome},
    recent::Recent,
    waiters::Waiters,
};
use crate::{
    metrics::{Metrics, Outcome},
    model::{
        mentions, Approval, ApprovalId, Decision, NewApproval, Reviewer, Status, APPROVED_IN_SLACK,
        DENIED_IN_SLACK, SYSTEM_ACTOR,
    },
    policy::{Defaults, Plan, Policy, Requested, Subject},
    store::{outbox::Trouble, Fate, Inserted, NewEvent, Store, StoreError, Submission, Vote},
};

/// Failures the API maps to client errors; store failures become 500s.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no approval request with id {0}")]
    NotFound(ApprovalId),
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyConflict,
    #[error("the request is already {}", .0.status.as_str())]
    AlreadyDecided(Box<Approval>),
    #[error("only the agent that submitted a request may cancel it")]
    NotOwner,
    /// The agent is at its cap of pending requests; nothing was stored.
    #[error("the agent already has {pending} pending requests")]
    TooManyPending { pending: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who may decide a request and whether Approve needs confirming, from the policy.
#[derive(Debug, Clone)]
struct Access {
    approvers: Option<Vec<String>>,
    high_risk_rule: Option<String>,
    /// The policy now auto-denies requests like this one: Approve must not count.
    approve_forbidden: bool,
}

/// What a pending message shows beyond the request itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Who has approved so far (the two-person rule), oldest first.
    pub votes: Vec<String>,
    /// The policy rule that marks this request high-risk, if one does.
    pub high_risk_rule: Option<String>,
}

/// The decision and event an approval by `reviewer` makes once `voters` (the reviewer
/// among them) are enough.
fn approval_by(
    reviewer: &Reviewer,
    at: chrono::DateTime<Utc>,
) -> impl FnOnce(&[String]) -> (Decision, NewEvent) + Send + 'static {
    let (user, display) = (reviewer.id.clone(), reviewer.display());
    move |voters| {
        let decision = Decision {
            status: Status::Approved,
            reason: format!("{APPROVED_IN_SLACK}{}", mentions(voters)),
            decided_by: voters.join(","),
            at,
        };
        let event = NewEvent::new(
            "decided",
            Some(&user),
            json!({ "via": "click", "button": "approve", "status": "approved", "user": display, "approvers": voters }),
        );
        (decision, event)
    }
}

/// Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct ApprovalService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    waiters: Waiters,
    /// Requests stored or decided lately: clicks find them here without a read.
    recent: Recent,
    /// Flips to true on shutdown so open long-polls answer at once.
    shutting_down: watch::Sender<bool>,
    /// Routing, approvers, required approvals, timeouts and automatic decisions.
    policy: Arc<Policy>,
    /// What rules fall back to: the default channel and `GREENLIGHT_APPROVERS`.
    defaults: Defaults,
    /// Approver checks and the user group cache.
    directory: Directory,
    metrics: Metrics,
}

impl ApprovalService {
    /// A service that applies `policy` (`approvers` is `GREENLIGHT_APPROVERS`), reads
    /// user groups from `groups`, and records submissions and decisions into `metrics`.
    pub fn new(
        store: Store,
        groups: Arc<dyn GroupMembers>,
        defaults: Defaults,
        policy: Arc<Policy>,
        metrics: Metrics,
    ) -> Self {
        let (shutting_down, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                store,
                waiters: Waiters::new(),
                recent: Recent::default(),
                directory: Directory::new(groups),
                defaults,
                shutting_down,
                policy,
                metrics,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Records a request with its deadline and the outbox row that posts it. With an
    /// Idempotency-Key seen before, returns the earlier request and does nothing else
    /// (the store already holds whatever work it still needs).
    ///
    /// The policy is applied first: a routed request is stored with the rule's channel,
    /// required approvals (the higher of the agent's and the rule's) and timeout (the
    /// lower); an automatic rule stores the request already decided, in the same write.
    /// With `max_pending`, a new request is refused (`TooManyPending`) when the agent
    /// already has that many pending, checked in the insert's own transaction.
    pub async fn submit(
        &self,
        mut new: NewApproval,
        max_pending: Option<u32>,
    ) -> Result<(Approval, bool), ServiceError> {
        let now = Utc::now();
        let plan = self.plan_for(
            &new.agent,
            new.language.as_deref(),
            &new.code,
            new.context.as_ref(),
            Requested {
                required_approvals: new.required_approvals,
                timeout_secs: new.timeout_secs,
            },
        );
        let (channel, also, fate) = match &plan {
            Plan::Route {
                rule,
                channel,
                approvers,
                required_approvals,
                timeout_secs,
                high_risk,
                ..
            } => {
                new.required_approvals = *required_approvals;
                new.timeout_secs = *timeout_secs;
                let routed = NewEvent::new(
                    "routed",
                    None,
                    json!({ "rule": rule, "channel": channel, "approvers": approvers,
                            "required_approvals": new.required_approvals,
                            "timeout_secs": new.timeout_secs, "high_risk": high_risk }),
                );
                (channel.clone(), vec![routed], Fate::Review)
            }
            Plan::Auto {
                rule,
                approve,
                reason,
                notify_channel,
            } => {
                let status = if *approve {
                    Status::Approved
                } else {
                    Status::Denied
                };
                let fate = Fate::Decided {
                    decision: Decision {
                        status,
                        reason: reason.clone(),
                        decided_by: SYSTEM_ACTOR.to_owned(),
                        at: now,
                    },
                    event: NewEvent::new(
                        "auto_decided",
                        None,
                        json!({ "rule": rule, "status": status.as_str(), "notify": notify_channel }),
                    ),
                    notify: notify_channel.is_some(),
                };
                let channel = notify_channel
                    .clone()
                    .unwrap_or_else(|| self.inner.defaults.channel.clone());
                (channel, Vec::new(), fate)
            }
        };
        let expires_at = now + chrono::Duration::seconds(new.timeout_secs as i64);
        let submission = Submission {
            id: ApprovalId::new(),
            new,
            channel,
            created_at: now,
            expires_at,
            also,
            fate,
            max_pending,
        };
        match self.inner.store.insert(submission).await? {
            Inserted::Created(approval) => {
                tracing::info!(request_id = %approval.id, agent = %approval.agent, rule = plan.rule(), "approval submitted");
                self.inner.metrics.submitted(&approval.agent);
                self.inner.recent.remember(&approval);
                if approval.status.is_final() {
                    self.decided(&approval, true);
                }
                Ok((approval, true))
            }
            Inserted::Existing(approval) => Ok((approval, false)),
            Inserted::KeyConflict => Err(ServiceError::IdempotencyConflict),
            Inserted::TooManyPending { pending } => Err(ServiceError::TooManyPending { pending }),
        }
    }

    /// The request as it stands. One still pending past its deadline is expired
    /// first: the deadline worker may not have reached it yet (it was overdue when the
    /// service started, or the worker is behind), and nobody is ever told "pending"
    /// about a request whose time is up.
    pub async fn get(&self, id: ApprovalId) -> Result<Approval, ServiceError> {
        let approval = self
            .inner
            .store
            .get(id)
            .await?
            .ok_or(ServiceError::NotFound(id))?;
        self.overdue_expired(approval).await
    }

    async fn overdue_expired(&self, approval: Approval) -> Result<Approval, ServiceError> {
        if approval.status.is_final() || approval.expires_at > Utc::now() {
            return Ok(approval);
        }
        match self.expire(&approval).await? {
            Some(expired) => Ok(expired),
            // Decided (or expired by the worker) in the meantime.
            None => self
                .inner
                .store
                .get(approval.id)
                .await?
                .ok_or(ServiceError::NotFound(approval.id)),
        }
    }

    /// The request's state once it is final, or after `wait` (or at shutdown) if it
    /// is still pending by then.
    pub async fn wait(&self, id: ApprovalId, wait: Duration) -> Result<Approval, ServiceError> {
        if wait.is_zero() {
            return self.get(id).await;
        }
        // Subscribe before reading, so a decision between the two still wakes us.
        let decided = self.inner.waiters.subscribe(id);
        match self.get(id).await {
            Ok(current) if !current.status.is_final() => {}
            // Final or unknown: nobody will resolve this entry, so take it back.
            other => {
                drop(decided);
                self.inner.waiters.forget_if_idle(id);
                return other;
            }
        }
        let mut shutdown = self.inner.shutting_down.subscribe();
        let woken = tokio::select! {
            result = decided => result.ok(),
            _ = tokio::time::sleep(wait) => None,
            _ = shutdown.wait_for(|down| *down) => None,
        };
        match woken {
            Some(approval) => Ok(approval),
            None => {
                self.inner.waiters.forget_if_idle(id);
                self.get(id).await
            }
        }
    }

    /// The request as a click needs it: from the recent cache when it is there (see
    /// `recent` for why a pending copy is safe: every write a click makes is
    /// conditional on the store), else the store.
    async fn current(&self, id: ApprovalId) -> Result<Option<Approval>, ServiceError> {
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
        let (user, display) = (reviewer.id.clone(), reviewer.display());
        let vote = self
            .inner
            .store
            .record_approval(id, user.clone(), now, decide, move |voters, required| {
                NewEvent::new(
                    "approval_vote",
                    Some(&user),
                    json!({ "user": display, "votes": voters.len(), "required": required }),
                )
            })
            .await?;
        Ok(match vote {
            Vote::Decided(decided) => {
                self.decided(&decided, false);
                Answer::Decided(*decided)
            }
            Vote::Counted { voters, .. } => {
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
            json!({ "via": "click", "button": "deny", "status": "denied", "user": reviewer.display(), "modal_error": why }),
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
            self.refuse(approval, reviewer, "deny", Some("modal"), refusal);
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
            json!({ "via": "modal", "button": "deny", "status": "denied", "user": reviewer.display() }),
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
            Some("modal"),
            "late",
            json!({ "status": approval.status.as_str() }),
        );
        ReasonOutcome::Refused(format!(
            "This request was already {} by {}; your denial changed nothing.",
            approval.status.as_str(),
            approval.decided_by.as_deref().unwrap_or(SYSTEM_ACTOR)
        ))
    }

    /// A click on a final request: a duplicate if the clicker took part in the
    /// decision, late otherwise. Changes nothing, so its audit entry rides with the
    /// next write batch, merged with its repeats.
    fn already_final(
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
    fn refuse(
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
    fn access(&self, approval: &Approval) -> Access {
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

    fn plan_for(
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
    async fn may_decide(
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
            Ok(false) => Err(Refusal::NotApprover),
            Err(_) => Err(Refusal::Unverified),
        }
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
        })
    }

    /// The agent withdraws its request.
    pub async fn cancel(&self, id: ApprovalId, agent: &str) -> Result<Approval, ServiceError> {
        let current = self.get(id).await?;
        if current.agent != agent {
            return Err(ServiceError::NotOwner);
        }
        let decision = Decision {
            status: Status::Cancelled,
            reason: format!("Withdrawn by the agent {agent}"),
            decided_by: agent.to_owned(),
            at: Utc::now(),
        };
        let event = NewEvent::new("cancelled", Some(agent), json!({}));
        match self.finish(id, decision, event).await? {
            Some(approval) => Ok(approval),
            None => Err(ServiceError::AlreadyDecided(Box::new(self.get(id).await?))),
        }
    }

    /// Expires every pending request whose deadline is at or before `now`, at most
    /// `limit` of them in one write batch. Returns how many were due. Each expiry is
    /// conditional, so a request decided meanwhile stays as it was.
    pub async fn expire_due(
        &self,
        now: chrono::DateTime<Utc>,
        limit: u32,
    ) -> Result<usize, ServiceError> {
        let due = self.inner.store.due(now, limit).await?;
        let expiries = due.iter().map(|approval| self.expire(approval));
        for result in futures::future::join_all(expiries).await {
            result?;
        }
        Ok(due.len())
    }

    /// Denies a request whose deadline passed. A no-op if it was decided meanwhile.
    async fn expire(&self, approval: &Approval) -> Result<Option<Approval>, ServiceError> {
        let waited = (approval.expires_at - approval.created_at)
            .num_seconds()
            .max(0);
        let (reason, detail) = match approval.message_ts {
            Some(_) => (
                format!("Timed out: no decision within {waited} s, so it was denied by default"),
                json!({ "timeout_secs": waited }),
            ),
            None => {
                let trouble = self
                    .inner
                    .store
                    .trouble_since(&approval.channel, approval.created_at)
                    .await?;
                super::outcomes::never_posted(approval, waited, trouble.as_ref())
            }
        };
        let decision = Decision {
            status: Status::Expired,
            reason,
            decided_by: SYSTEM_ACTOR.to_owned(),
            at: Utc::now(),
        };
        self.finish(
            approval.id,
            decision,
            NewEvent::new("expired", None, detail),
        )
        .await
    }

    /// Slack refused to post the request's message for good: no reviewer can see it,
    /// so it is denied, naming the failure.
    pub async fn post_failed(
        &self,
        id: ApprovalId,
        failure: &Trouble,
    ) -> Result<Option<Approval>, ServiceError> {
        let decision = Decision {
            status: Status::Denied,
            reason: format!(
                "Denied: the Slack message could not be posted ({}), so no reviewer could see it",
                failure.text
            ),
            decided_by: SYSTEM_ACTOR.to_owned(),
            at: Utc::now(),
        };
        let event = NewEvent::new(
            "post_failed",
            None,
            json!({ "error": failure.code, "detail": failure.text }),
        );
        self.finish(id, decision, event).await
    }

    /// The single path that ends a request (but for votes): the conditional store
    /// write, then everything that follows a decision.
    async fn finish(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
    ) -> Result<Option<Approval>, ServiceError> {
        let Some(approval) = self.inner.store.decide(id, decision, event).await? else {
            return Ok(None);
        };
        self.decided(&approval, false);
        Ok(Some(approval))
    }

    /// After a committed decision: count it, remember it, wake the waiters. `by_rule`
    /// marks a policy's automatic decision, which metrics count as `auto` whatever its
    /// status. (The message rewrite is already in the outbox.)
    fn decided(&self, approval: &Approval, by_rule: bool) {
        tracing::info!(request_id = %approval.id, status = approval.status.as_str(), decided_by = ?approval.decided_by, "approval decided");
        let outcome = if by_rule {
            Some(Outcome::Auto)
        } else {
            Outcome::of(approval.status)
        };
        if let Some(outcome) = outcome {
            let decided_at = approval.decided_at.unwrap_or_else(Utc::now);
            let waited = (decided_at - approval.created_at)
                .to_std()
                .unwrap_or_default();
            self.inner.metrics.decided(outcome, waited);
        }
        self.inner.recent.remember(approval);
        self.inner.waiters.resolve(approval);
    }

    /// Answers every open long-poll with the current state, now and from now on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.send_replace(true);
        self.inner.waiters.release_all();
    }

    /// Number of parked long-polls.
    pub fn waiting(&self) -> usize {
        self.inner.waiters.waiting()
    }
}
