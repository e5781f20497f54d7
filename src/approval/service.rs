//! The approval service: the one place that changes a request's state.
//!
//! Every transition follows the same order: write the store (conditional on the request
//! still being pending), then wake the broker's waiters, then tell Slack in the
//! background. The store write is the decision; everything after it is notification
//! and may be retried or fail without changing the outcome.
//!
//! Who may decide, and how many must, comes from the policy (`crate::policy`): the
//! matching rule picks the channel, the approvers, the approvals needed and the
//! timeout, or decides on its own. A click is checked against that before it counts;
//! an approval is a durable vote, and the vote that completes the count decides in the
//! same transaction (`Store::record_approval`). A Deny click opens a modal asking why;
//! the submitted reason decides.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde_json::json;
use tokio::{
    sync::{mpsc, watch},
    task::AbortHandle,
    time::Instant,
};

use super::{
    approvers::{Directory, Refusal},
    post_trouble::PostTrouble,
    Approval, ApprovalId, Broker, Decision, NewApproval, Status, APPROVED_IN_SLACK,
    DENIED_IN_SLACK, SYSTEM_ACTOR,
};
use crate::{
    metrics::{Metrics, Outcome},
    policy::{Defaults, Plan, Policy, Requested, Subject},
    slack::{
        api::{MessageRef, SlackClient, SlackError},
        blocks::{self, mention, PendingExtras},
        interaction::{Button, Click, User},
        modal,
    },
    store::{Inserted, NewEvent, Store, StoreError, Vote},
};

/// How long after a Deny click `views.open` may still be tried: the trigger id dies
/// 3 s after Slack sent the click, and some of that was spent getting here.
const TRIGGER_BUDGET: Duration = Duration::from_millis(2500);

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a click did, for the audit trail, metrics and the ack.
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
    /// A Deny click: the reason modal was asked for; its submission decides.
    ReasonRequested,
    /// The clicker is not an approver for this request.
    NotApprover,
    /// The requester tried to approve their own request.
    SelfApproval,
    /// Whether the clicker is an approver could not be verified (fails closed).
    Unverified,
    /// The current policy denies requests like this one: Approve no longer counts.
    PolicyForbids,
}

impl From<Refusal> for ClickOutcome {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotApprover => ClickOutcome::NotApprover,
            Refusal::SelfApproval => ClickOutcome::SelfApproval,
            Refusal::Unverified => ClickOutcome::Unverified,
            Refusal::PolicyForbids => ClickOutcome::PolicyForbids,
        }
    }
}

/// What submitting the deny-reason modal did. `Refused` carries the text shown under
/// the reason field, so the reviewer sees why in the modal itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReasonOutcome {
    Denied,
    Refused(String),
}

/// Who may decide a request and whether Approve needs confirming, from the policy.
#[derive(Debug, Clone)]
struct Access {
    approvers: Option<Vec<String>>,
    high_risk_rule: Option<String>,
    /// The policy now auto-denies requests like this one: Approve must not count.
    approve_forbidden: bool,
}

impl ClickOutcome {
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
        }
    }
}

/// Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct ApprovalService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    broker: Broker,
    slack: SlackClient,
    /// One ordered posting queue per channel, so a rate-limited channel waits without
    /// holding up the others.
    post_queues: DashMap<String, mpsc::UnboundedSender<ApprovalId>>,
    /// The deadline timer of each pending request, aborted when it is decided.
    timers: DashMap<ApprovalId, AbortHandle>,
    /// Flips to true on shutdown so open long-polls answer at once.
    shutting_down: watch::Sender<bool>,
    /// Routing, approvers, required approvals, timeouts and automatic decisions.
    policy: Arc<Policy>,
    /// What rules fall back to: the default channel and `GREENLIGHT_APPROVERS`.
    defaults: Defaults,
    /// Approver checks and the user group cache.
    directory: Directory,
    /// One lock per request's Slack message, so progress and final updates reach
    /// Slack in order and the last one sent shows the latest state.
    message_locks: DashMap<ApprovalId, Arc<tokio::sync::Mutex<()>>>,
    metrics: Metrics,
    /// The last post failure per channel, so an unposted request's expiry names it.
    post_trouble: PostTrouble,
}

impl ApprovalService {
    /// A service with the built-in policy and no approver list (anyone may decide).
    pub fn new(store: Store, slack: SlackClient, default_channel: String) -> Self {
        Self::with_policy(
            store,
            slack,
            default_channel,
            Arc::new(Policy::builtin()),
            None,
            Metrics::new(),
        )
    }

    /// A service that applies `policy` (`approvers` is `GREENLIGHT_APPROVERS`) and
    /// records submissions and decisions into `metrics`.
    pub fn with_policy(
        store: Store,
        slack: SlackClient,
        default_channel: String,
        policy: Arc<Policy>,
        approvers: Option<Vec<String>>,
        metrics: Metrics,
    ) -> Self {
        let (shutting_down, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                store,
                broker: Broker::new(),
                directory: Directory::new(slack.clone()),
                slack,
                defaults: Defaults {
                    channel: default_channel,
                    approvers,
                },
                post_queues: DashMap::new(),
                timers: DashMap::new(),
                shutting_down,
                policy,
                message_locks: DashMap::new(),
                metrics,
                post_trouble: PostTrouble::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn slack(&self) -> &SlackClient {
        &self.inner.slack
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Records a request, arms its deadline and queues its Slack message. With an
    /// Idempotency-Key seen before, returns the earlier request and does nothing else.
    ///
    /// The policy is applied first: a routed request is stored with the rule's channel,
    /// required approvals (the higher of the agent's and the rule's) and timeout (the
    /// lower); an automatic rule stores the request and decides it in the same call.
    pub async fn submit(&self, mut new: NewApproval) -> Result<(Approval, bool), ServiceError> {
        let id = ApprovalId::new();
        let now = Utc::now();
        let plan = self.inner.policy.plan(
            &Subject {
                agent: Some(&new.agent),
                language: new.language.as_deref(),
                code: &new.code,
                context: new.context.as_ref(),
            },
            Requested {
                required_approvals: new.required_approvals,
                timeout_secs: new.timeout_secs,
            },
            &self.inner.defaults,
        );
        let channel = match &plan {
            Plan::Route {
                channel,
                required_approvals,
                timeout_secs,
                ..
            } => {
                new.required_approvals = *required_approvals;
                new.timeout_secs = *timeout_secs;
                channel.clone()
            }
            Plan::Auto { notify_channel, .. } => notify_channel
                .clone()
                .unwrap_or_else(|| self.inner.defaults.channel.clone()),
        };
        let expires_at = now + chrono::Duration::seconds(new.timeout_secs as i64);
        let routed: Vec<NewEvent> = match &plan {
            Plan::Route {
                rule,
                approvers,
                high_risk,
                ..
            } => vec![NewEvent::new(
                "routed",
                None,
                json!({ "rule": rule, "channel": channel, "approvers": approvers,
                        "required_approvals": new.required_approvals,
                        "timeout_secs": new.timeout_secs, "high_risk": high_risk }),
            )],
            Plan::Auto { .. } => Vec::new(),
        };
        match self
            .inner
            .store
            .insert(id, &new, &channel, now, expires_at, &routed)
            .await?
        {
            Inserted::Created(approval) => {
                tracing::info!(request_id = %approval.id, agent = %approval.agent, rule = plan.rule(), "approval submitted");
                self.inner.metrics.submitted(&approval.agent);
                // Armed before anything else can fail, so a stored request always
                // has a deadline.
                self.arm_deadline(&approval);
                if let Plan::Auto { .. } = plan {
                    let decided = self.auto_decide(&approval, &plan).await?;
                    return Ok((decided, true));
                }
                self.enqueue_post(&approval);
                Ok((approval, true))
            }
            Inserted::Existing(approval) => {
                // The first submission may have failed after storing it (a 500 the
                // agent is now retrying): make sure the request is being worked on.
                if approval.status == Status::Pending {
                    if !self.inner.timers.contains_key(&approval.id) {
                        self.arm_deadline(&approval);
                    }
                    if approval.message_ts.is_none() {
                        self.enqueue_post(&approval);
                    }
                }
                Ok((approval, false))
            }
            Inserted::KeyConflict => Err(ServiceError::IdempotencyConflict),
        }
    }

    /// Decides a just-stored request by its automatic rule, and posts the FYI if the
    /// rule asks for one.
    async fn auto_decide(
        &self,
        approval: &Approval,
        plan: &Plan,
    ) -> Result<Approval, ServiceError> {
        let Plan::Auto {
            rule,
            approve,
            reason,
            notify_channel,
        } = plan
        else {
            return Ok(approval.clone());
        };
        let status = if *approve {
            Status::Approved
        } else {
            Status::Denied
        };
        let decision = Decision {
            status,
            reason: reason.clone(),
            decided_by: SYSTEM_ACTOR.to_owned(),
            at: Utc::now(),
        };
        let event = NewEvent::new(
            "auto_decided",
            None,
            json!({ "rule": rule, "status": status.as_str(), "notify": notify_channel }),
        );
        let Some(decided) = self.finish(approval.id, decision, event).await? else {
            // Nothing else can know this id yet, but never report a decision we lost.
            return self.get(approval.id).await;
        };
        if notify_channel.is_some() {
            let service = self.clone();
            let fyi = decided.clone();
            tokio::spawn(async move { service.post_fyi(&fyi).await });
        }
        Ok(decided)
    }

    /// Posts an automatic decision as a message without buttons.
    async fn post_fyi(&self, approval: &Approval) {
        let rendered = blocks::final_message(approval);
        match self
            .inner
            .slack
            .post_message(&approval.channel, &rendered.text, &rendered.blocks, None)
            .await
        {
            Ok(message) => {
                if let Err(error) = self
                    .inner
                    .store
                    .set_message(approval.id, &message.channel, &message.ts)
                    .await
                {
                    tracing::error!(request_id = %approval.id, %error, "could not record the FYI message");
                }
            }
            Err(error) => {
                tracing::warn!(request_id = %approval.id, %error, "could not post the FYI message");
                let event = NewEvent::new(
                    "post_failed",
                    None,
                    json!({ "error": error.code(), "detail": error.to_string(), "fyi": true }),
                );
                if let Err(error) = self.inner.store.append_event(approval.id, &event).await {
                    tracing::error!(request_id = %approval.id, %error, "could not record a failed FYI");
                }
            }
        }
    }

    pub async fn get(&self, id: ApprovalId) -> Result<Approval, ServiceError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or(ServiceError::NotFound(id))
    }

    /// The request's state once it is final, or after `wait` (or at shutdown) if it
    /// is still pending by then.
    pub async fn wait(&self, id: ApprovalId, wait: Duration) -> Result<Approval, ServiceError> {
        if wait.is_zero() {
            return self.get(id).await;
        }
        // Subscribe before reading, so a decision between the two still wakes us.
        let decided = self.inner.broker.subscribe(id);
        match self.get(id).await {
            Ok(current) if !current.status.is_final() => {}
            // Final or unknown: nobody will resolve this entry, so take it back.
            other => {
                drop(decided);
                self.inner.broker.forget_if_idle(id);
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
                self.inner.broker.forget_if_idle(id);
                self.get(id).await
            }
        }
    }

    /// Applies one button click. Writes its audit event before returning, so the ack
    /// Slack gets means the click is recorded; Slack-side effects run in the background.
    ///
    /// The clicker must be allowed to decide (approver list, no self-approval) before
    /// anything counts. Approve records a vote, which decides once enough distinct
    /// people have approved. Deny opens the reason modal (in the background, see
    /// [`Self::open_reason_modal`]); its submission decides.
    pub async fn click(&self, click: &Click) -> Result<ClickOutcome, ServiceError> {
        let received = Instant::now();
        let id = click.approval_id;
        let Some(approval) = self.inner.store.get(id).await? else {
            tracing::warn!(request_id = %id, user = %click.user.id, "click on an unknown request");
            return Ok(ClickOutcome::Unknown);
        };
        if approval.status.is_final() {
            return self.ignore_click(click, &approval).await;
        }
        if let Err(refusal) = self
            .may_decide(&approval, &click.user.id, click.button)
            .await
        {
            return self.refuse_click(click, &approval, refusal).await;
        }
        match click.button {
            Button::Approve => self.approve_vote(click, &approval).await,
            Button::Deny => self.start_deny(click, &approval, received).await,
        }
    }

    /// The approver list and high-risk flag for a request, from the policy as it is
    /// now (so a restart with a narrower list takes effect on pending requests too).
    fn access(&self, approval: &Approval) -> Access {
        let plan = self.inner.policy.plan(
            &Subject {
                agent: Some(&approval.agent),
                language: approval.language.as_deref(),
                code: &approval.code,
                context: approval.context.as_ref(),
            },
            Requested {
                required_approvals: approval.required_approvals,
                timeout_secs: 1,
            },
            &self.inner.defaults,
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

    /// May `user` press `button` on this request? The requester may never approve
    /// and may always deny (withdrawing their own ask); everyone else must be on the
    /// approver list, when there is one, to approve *or* deny: a list names who has a
    /// say, and a bystander's denial would be a decision by someone without one.
    async fn may_decide(
        &self,
        approval: &Approval,
        user: &str,
        button: Button,
    ) -> Result<(), Refusal> {
        if approval.requester_slack_id.as_deref() == Some(user) {
            return match button {
                Button::Approve => Err(Refusal::SelfApproval),
                Button::Deny => Ok(()),
            };
        }
        let access = self.access(approval);
        if access.approve_forbidden && button == Button::Approve {
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

    /// A click that may not count: audited, and the clicker is told why.
    async fn refuse_click(
        &self,
        click: &Click,
        approval: &Approval,
        refusal: Refusal,
    ) -> Result<ClickOutcome, ServiceError> {
        let event = NewEvent::new(
            "click_ignored",
            Some(&click.user.id),
            json!({ "button": click.button.as_str(), "why": refusal.as_str(), "status": approval.status.as_str(), "user": click.user.display() }),
        );
        self.inner.store.append_event(approval.id, &event).await?;
        tracing::info!(request_id = %approval.id, user = %click.user.id, why = refusal.as_str(), "click refused");
        let channel = click
            .channel
            .clone()
            .unwrap_or_else(|| approval.channel.clone());
        self.spawn_ephemeral(channel, click.user.id.clone(), refusal.explain().to_owned());
        Ok(refusal.into())
    }

    fn spawn_ephemeral(&self, channel: String, user: String, text: String) {
        let slack = self.inner.slack.clone();
        tokio::spawn(async move {
            if let Err(error) = slack.post_ephemeral(&channel, &user, &text).await {
                tracing::warn!(%error, "could not send an ephemeral note");
            }
        });
    }

    /// Counts one approval; the vote that reaches `required_approvals` decides.
    async fn approve_vote(
        &self,
        click: &Click,
        approval: &Approval,
    ) -> Result<ClickOutcome, ServiceError> {
        let id = approval.id;
        let user = &click.user;
        let now = Utc::now();
        let vote = self
            .inner
            .store
            .record_approval(
                id,
                &user.id,
                now,
                |voters| {
                    let by = voters.join(",");
                    let decision = Decision {
                        status: Status::Approved,
                        reason: format!("{APPROVED_IN_SLACK}{}", mention(&by)),
                        decided_by: by,
                        at: now,
                    };
                    let event = NewEvent::new(
                        "decided",
                        Some(&user.id),
                        json!({ "via": "click", "button": "approve", "status": "approved", "user": user.display(), "approvers": voters }),
                    );
                    (decision, event)
                },
                |voters, required| {
                    NewEvent::new(
                        "approval_vote",
                        Some(&user.id),
                        json!({ "user": user.display(), "votes": voters.len(), "required": required }),
                    )
                },
            )
            .await?;
        match vote {
            Vote::Decided(approval) => {
                self.after_finish(*approval, false);
                Ok(ClickOutcome::Accepted)
            }
            Vote::Counted(voters) => {
                tracing::info!(request_id = %id, user = %user.id, votes = voters.len(), required = approval.required_approvals, "approval counted");
                self.spawn_refresh(id);
                Ok(ClickOutcome::Counted)
            }
            Vote::Repeat(voters) => {
                let event = NewEvent::new(
                    "click_ignored",
                    Some(&user.id),
                    json!({ "button": "approve", "why": "repeat_vote", "status": "pending", "votes": voters.len() }),
                );
                self.inner.store.append_event(id, &event).await?;
                let channel = click
                    .channel
                    .clone()
                    .unwrap_or_else(|| approval.channel.clone());
                let note = format!(
                    "You already approved this request; it needs {} approvals from different people ({}).",
                    approval.required_approvals,
                    blocks::approval_progress(approval.required_approvals, &voters)
                );
                self.spawn_ephemeral(channel, user.id.clone(), note);
                Ok(ClickOutcome::Duplicate)
            }
            // Lost a race with another decision, the timer or a cancel.
            Vote::NotPending => {
                let now_final = self.get(id).await?;
                self.ignore_click(click, &now_final).await
            }
        }
    }

    /// A permitted Deny click: records that a reason was asked for and opens the
    /// modal in the background.
    ///
    /// Why not open it before acking: the trigger id and the ack share one 3 s window
    /// from the moment Slack sent the click. Starting `views.open` in a task starts it
    /// just as early, while the ack goes back at once, so a slow `views.open` can
    /// never turn into the "this app did not respond" error Slack shows when an ack is
    /// late. The task owns the failure path: if the modal cannot be opened, it denies
    /// at once, so a request is never left hanging on a modal nobody saw.
    async fn start_deny(
        &self,
        click: &Click,
        approval: &Approval,
        received: Instant,
    ) -> Result<ClickOutcome, ServiceError> {
        let Some(trigger_id) = click.trigger_id.clone().filter(|t| !t.is_empty()) else {
            self.deny_without_reason(approval.id, &click.user, "no_trigger_id")
                .await?;
            return Ok(ClickOutcome::Accepted);
        };
        // Slack issues a fresh trigger per click, so a second Deny with the same one is
        // that click again (a proxy retry, a replay inside the signature window). Its
        // used trigger could not open a modal, and denying "without a reason" in the
        // reviewer's name would be a decision they did not make.
        let seen =
            self.inner.store.events(approval.id).await?.iter().any(|e| {
                e.kind == "reason_requested" && e.detail["trigger_id"] == trigger_id.as_str()
            });
        if seen {
            let event = NewEvent::new(
                "click_ignored",
                Some(&click.user.id),
                json!({ "button": "deny", "why": "duplicate", "status": approval.status.as_str() }),
            );
            self.inner.store.append_event(approval.id, &event).await?;
            return Ok(ClickOutcome::Duplicate);
        }
        let event = NewEvent::new(
            "reason_requested",
            Some(&click.user.id),
            json!({ "user": click.user.display(), "trigger_id": trigger_id }),
        );
        self.inner.store.append_event(approval.id, &event).await?;
        let service = self.clone();
        let approval = approval.clone();
        let user = click.user.clone();
        tokio::spawn(async move {
            service
                .open_reason_modal(&approval, &user, &trigger_id, received + TRIGGER_BUDGET)
                .await;
        });
        Ok(ClickOutcome::ReasonRequested)
    }

    async fn open_reason_modal(
        &self,
        approval: &Approval,
        user: &User,
        trigger_id: &str,
        deadline: Instant,
    ) {
        let view = modal::deny_reason_view(approval);
        let Err(error) = self
            .inner
            .slack
            .open_view(trigger_id, &view, deadline)
            .await
        else {
            return;
        };
        tracing::warn!(request_id = %approval.id, %error, "could not open the deny-reason modal; denying without a reason");
        if let Err(error) = self
            .deny_without_reason(approval.id, user, error.code())
            .await
        {
            tracing::error!(request_id = %approval.id, %error, "could not deny after the modal failed");
        }
    }

    /// The Deny fallback when no reason can be asked for: the reviewer meant to deny,
    /// so deny now rather than leave the request waiting on a modal that never opened.
    async fn deny_without_reason(
        &self,
        id: ApprovalId,
        user: &User,
        why: &str,
    ) -> Result<Option<Approval>, ServiceError> {
        let decision = Decision {
            status: Status::Denied,
            reason: format!(
                "{DENIED_IN_SLACK}<@{}>; no reason was given (the reason dialog could not be opened)",
                user.id
            ),
            decided_by: user.id.clone(),
            at: Utc::now(),
        };
        let event = NewEvent::new(
            "decided",
            Some(&user.id),
            json!({ "via": "click", "button": "deny", "status": "denied", "user": user.display(), "modal_error": why }),
        );
        self.finish(id, decision, event).await
    }

    /// The deny-reason modal was submitted: the same checks as a click, then the
    /// request is denied with the reason exactly as typed.
    pub async fn deny_with_reason(
        &self,
        id: ApprovalId,
        user: &User,
        reason: &str,
    ) -> Result<ReasonOutcome, ServiceError> {
        let Some(approval) = self.inner.store.get(id).await? else {
            return Ok(ReasonOutcome::Refused(
                "This request no longer exists.".into(),
            ));
        };
        if approval.status.is_final() {
            return self.late_reason(&approval, user).await;
        }
        if let Err(refusal) = self.may_decide(&approval, &user.id, Button::Deny).await {
            let event = NewEvent::new(
                "click_ignored",
                Some(&user.id),
                json!({ "button": "deny", "via": "modal", "why": refusal.as_str(), "status": "pending", "user": user.display() }),
            );
            self.inner.store.append_event(id, &event).await?;
            return Ok(ReasonOutcome::Refused(refusal.explain().into()));
        }
        let decision = Decision {
            status: Status::Denied,
            reason: reason.to_owned(),
            decided_by: user.id.clone(),
            at: Utc::now(),
        };
        let event = NewEvent::new(
            "decided",
            Some(&user.id),
            json!({ "via": "modal", "button": "deny", "status": "denied", "user": user.display() }),
        );
        match self.finish(id, decision, event).await? {
            Some(_) => Ok(ReasonOutcome::Denied),
            None => {
                let now_final = self.get(id).await?;
                self.late_reason(&now_final, user).await
            }
        }
    }

    async fn late_reason(
        &self,
        approval: &Approval,
        user: &User,
    ) -> Result<ReasonOutcome, ServiceError> {
        let event = NewEvent::new(
            "click_ignored",
            Some(&user.id),
            json!({ "button": "deny", "via": "modal", "why": "late", "status": approval.status.as_str() }),
        );
        self.inner.store.append_event(approval.id, &event).await?;
        Ok(ReasonOutcome::Refused(format!(
            "This request was already {} by {}; your denial changed nothing.",
            approval.status.as_str(),
            approval.decided_by.as_deref().unwrap_or(SYSTEM_ACTOR)
        )))
    }

    async fn ignore_click(
        &self,
        click: &Click,
        approval: &Approval,
    ) -> Result<ClickOutcome, ServiceError> {
        let same_person = approval
            .decided_by
            .as_deref()
            .is_some_and(|by| by.split(',').any(|who| who == click.user.id));
        let outcome = if same_person {
            ClickOutcome::Duplicate
        } else {
            ClickOutcome::Late
        };
        let event = NewEvent::new(
            "click_ignored",
            Some(&click.user.id),
            json!({ "button": click.button.as_str(), "why": outcome.as_str(), "status": approval.status.as_str() }),
        );
        self.inner.store.append_event(approval.id, &event).await?;
        tracing::info!(request_id = %approval.id, user = %click.user.id, why = outcome.as_str(), "click ignored");
        let channel = click
            .channel
            .clone()
            .unwrap_or_else(|| approval.channel.clone());
        self.spawn_ephemeral(
            channel,
            click.user.id.clone(),
            blocks::already_decided_note(approval),
        );
        Ok(outcome)
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

    /// Denies a request whose deadline passed. A no-op if it was decided meanwhile.
    pub async fn expire(&self, id: ApprovalId) -> Result<Option<Approval>, ServiceError> {
        let approval = self.get(id).await?;
        if approval.status.is_final() {
            return Ok(None);
        }
        let waited = (approval.expires_at - approval.created_at)
            .num_seconds()
            .max(0);
        let (reason, detail) = self
            .inner
            .post_trouble
            .never_posted(&approval, waited)
            .unwrap_or_else(|| {
                (
                    format!(
                        "Timed out: no decision within {waited} s, so it was denied by default"
                    ),
                    json!({ "timeout_secs": waited }),
                )
            });
        let decision = Decision {
            status: Status::Expired,
            reason,
            decided_by: SYSTEM_ACTOR.to_owned(),
            at: Utc::now(),
        };
        let event = NewEvent::new("expired", None, detail);
        self.finish(id, decision, event).await
    }

    /// The single path that ends a request: store first, then waiters, then Slack.
    async fn finish(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
    ) -> Result<Option<Approval>, ServiceError> {
        let Some(approval) = self.inner.store.finish(id, &decision, &event).await? else {
            return Ok(None);
        };
        self.after_finish(approval.clone(), event.kind == "auto_decided");
        Ok(Some(approval))
    }

    /// Everything after the deciding write: count it, stop the timer, wake the
    /// waiters, update the message. `by_rule` marks a policy's automatic decision,
    /// which metrics count as `auto` whatever its status.
    fn after_finish(&self, approval: Approval, by_rule: bool) {
        let id = approval.id;
        tracing::info!(request_id = %id, status = approval.status.as_str(), decided_by = ?approval.decided_by, "approval decided");
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
        if let Some((_, timer)) = self.inner.timers.remove(&id) {
            timer.abort();
        }
        self.inner.broker.resolve(&approval);
        if approval.message_ts.is_some() {
            self.spawn_refresh(id);
        }
    }

    /// Brings the Slack message up to date in the background. (If the post is still
    /// queued, the poster renders the current state itself.)
    fn spawn_refresh(&self, id: ApprovalId) {
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(error) = service.refresh_message(id).await {
                tracing::error!(request_id = %id, %error, "could not refresh the Slack message");
            }
        });
    }

    /// Rewrites the message from the request's *current* state: the final outcome, or
    /// the pending message with approval progress. Holding the request's message lock
    /// while reading and sending means updates cannot overtake each other: whichever
    /// runs last sends the latest state, so buttons never come back after a decision.
    async fn refresh_message(&self, id: ApprovalId) -> Result<(), ServiceError> {
        let lock = self.inner.message_locks.entry(id).or_default().clone();
        let _guard = lock.lock().await;
        let approval = self.get(id).await?;
        let Some(ts) = approval.message_ts.clone() else {
            // Never posted: nothing to rewrite, and once final nothing ever will be.
            if approval.status.is_final() {
                self.inner.message_locks.remove(&id);
            }
            return Ok(());
        };
        let message = MessageRef {
            channel: approval.channel.clone(),
            ts,
        };
        let rendered = if approval.status.is_final() {
            blocks::final_message(&approval)
        } else {
            blocks::pending_message_with(&approval, &self.pending_extras(&approval).await?)
        };
        let result = self
            .inner
            .slack
            .update_message(&message, &rendered.text, &rendered.blocks)
            .await;
        if approval.status.is_final() {
            self.inner.message_locks.remove(&id);
            // Synced when the outcome is shown, or when retrying can never show it
            // (the message or channel is gone); a transient failure stays stale for
            // the resync sweep.
            let settled = match &result {
                Ok(()) => true,
                Err(error) => is_permanent_update_failure(error),
            };
            if settled {
                self.inner.store.mark_message_synced(id).await?;
            }
        }
        if let Err(error) = result {
            tracing::warn!(request_id = %approval.id, %error, "could not update the Slack message");
            let event = NewEvent::new(
                "slack_update_failed",
                None,
                json!({ "error": error.code(), "detail": error.to_string() }),
            );
            if let Err(error) = self.inner.store.append_event(approval.id, &event).await {
                tracing::error!(request_id = %approval.id, %error, "could not record a failed Slack update");
            }
        }
        Ok(())
    }

    /// Rewrites every Slack message that may still show a decided request as pending
    /// (a crash between the decision and its update, or Slack failing the update).
    /// Runs at start-up and periodically; returns how many it tried.
    pub async fn resync_stale_messages(&self) -> Result<usize, ServiceError> {
        let stale = self.inner.store.stale_messages().await?;
        for id in &stale {
            if let Err(error) = self.refresh_message(*id).await {
                tracing::warn!(request_id = %id, %error, "could not resync a Slack message");
            }
        }
        if !stale.is_empty() {
            tracing::info!(count = stale.len(), "resynced stale Slack messages");
        }
        Ok(stale.len())
    }

    async fn pending_extras(&self, approval: &Approval) -> Result<PendingExtras, ServiceError> {
        Ok(PendingExtras {
            votes: self.inner.store.votes(approval.id).await?,
            high_risk_rule: self.access(approval).high_risk_rule,
        })
    }

    fn arm_deadline(&self, approval: &Approval) {
        let id = approval.id;
        let sleep_for = until(approval.expires_at);
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            tokio::time::sleep(sleep_for).await;
            // Out of the map first: deciding aborts the request's timer, which is
            // this very task.
            if let Some(service) = upgrade(&weak) {
                service.inner.timers.remove(&id);
            }
            // A deadline must not be lost to one failed write (a busy or full disk):
            // keep trying, backing off, until the request is expired or decided.
            let mut backoff = Duration::from_millis(250);
            loop {
                let Some(service) = upgrade(&weak) else {
                    return;
                };
                match service.expire(id).await {
                    Ok(_) | Err(ServiceError::NotFound(_)) => break,
                    Err(error) => {
                        tracing::error!(request_id = %id, %error, retry_in_ms = backoff.as_millis() as u64, "could not expire a request; retrying");
                    }
                }
                drop(service);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        });
        self.inner.timers.insert(id, task.abort_handle());
    }

    fn enqueue_post(&self, approval: &Approval) {
        let channel = approval.channel.clone();
        let queue = self
            .inner
            .post_queues
            .entry(channel.clone())
            .or_insert_with(|| spawn_channel_poster(Arc::downgrade(&self.inner), channel))
            .clone();
        // The worker only stops when the service is gone, so a send cannot fail while
        // anyone could care.
        let _ = queue.send(approval.id);
    }

    /// Posts one request's message: the step a channel queue runs, in order.
    async fn post(&self, id: ApprovalId) -> Result<(), ServiceError> {
        let approval = self.get(id).await?;
        if approval.status.is_final() || approval.message_ts.is_some() {
            return Ok(());
        }
        let rendered =
            blocks::pending_message_with(&approval, &self.pending_extras(&approval).await?);
        let deadline = Instant::now() + until(approval.expires_at);
        let trouble = &self.inner.post_trouble;
        let on_retry = |error: &_| trouble.record(&approval.channel, error);
        match self
            .inner
            .slack
            .post_message_observed(
                &approval.channel,
                &rendered.text,
                &rendered.blocks,
                Some(deadline),
                &on_retry,
            )
            .await
        {
            Ok(message) => {
                let stored = self
                    .inner
                    .store
                    .set_message(id, &message.channel, &message.ts)
                    .await?;
                // Decided while the post was in flight: the message must say so too.
                if stored.status.is_final() {
                    self.refresh_message(id).await?;
                }
                Ok(())
            }
            Err(error) => {
                trouble.record(&approval.channel, &error);
                tracing::warn!(request_id = %id, %error, "could not post the approval message");
                let decision = Decision {
                    status: Status::Denied,
                    reason: format!("Denied: the Slack message could not be posted ({error}), so no reviewer could see it"),
                    decided_by: SYSTEM_ACTOR.to_owned(),
                    at: Utc::now(),
                };
                let event = NewEvent::new(
                    "post_failed",
                    None,
                    json!({ "error": error.code(), "detail": error.to_string() }),
                );
                self.finish(id, decision, event).await.map(drop)
            }
        }
    }

    /// Start-up recovery: re-arms the deadline of every pending request, expires those
    /// whose deadline passed while the service was down, and posts any message that
    /// was never posted. Returns how many requests were pending.
    pub async fn recover(&self) -> Result<usize, ServiceError> {
        let pending = self.inner.store.pending().await?;
        let now = Utc::now();
        for approval in &pending {
            if approval.expires_at <= now {
                self.expire(approval.id).await?;
                continue;
            }
            self.arm_deadline(approval);
            if approval.message_ts.is_none() {
                self.enqueue_post(approval);
            }
        }
        tracing::info!(pending = pending.len(), "recovered pending requests");
        // Messages a crash left showing a decided request as pending: fixed in the
        // background, so start-up does not wait on Slack.
        let service = self.clone();
        tokio::spawn(async move {
            if let Err(error) = service.resync_stale_messages().await {
                tracing::error!(%error, "could not resync stale Slack messages");
            }
        });
        Ok(pending.len())
    }

    /// Retries stale Slack messages every `every`, for as long as the task lives.
    pub fn spawn_resync_sweep(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await; // the first tick is immediate; start-up already resynced
            loop {
                tick.tick().await;
                let Some(service) = upgrade(&weak) else {
                    return;
                };
                if let Err(error) = service.resync_stale_messages().await {
                    tracing::error!(%error, "could not resync stale Slack messages");
                }
            }
        })
    }

    /// Answers every open long-poll with the current state, now and from now on.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.send_replace(true);
        self.inner.broker.release_all();
    }

    /// Number of parked long-polls.
    pub fn waiting(&self) -> usize {
        self.inner.broker.waiting()
    }
}

/// Slack answers after which updating the message again can never succeed.
fn is_permanent_update_failure(error: &SlackError) -> bool {
    matches!(
        error.code(),
        "message_not_found"
            | "cant_update_message"
            | "channel_not_found"
            | "is_archived"
            | "edit_window_closed"
    )
}

fn upgrade(weak: &Weak<Inner>) -> Option<ApprovalService> {
    weak.upgrade().map(|inner| ApprovalService { inner })
}

/// Time left until `at`, zero if it has passed.
fn until(at: DateTime<Utc>) -> Duration {
    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

fn spawn_channel_poster(weak: Weak<Inner>, channel: String) -> mpsc::UnboundedSender<ApprovalId> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ApprovalId>();
    tokio::spawn(async move {
        while let Some(id) = rx.recv().await {
            let Some(service) = upgrade(&weak) else {
                return;
            };
            if let Err(error) = service.post(id).await {
                tracing::error!(request_id = %id, %channel, %error, "posting failed");
            }
        }
    });
    tx
}

#[cfg(test)]
#[path = "service_queue_tests.rs"]
mod queue_tests;
