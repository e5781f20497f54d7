//! The approval service: the one place that changes a request's state.
//!
//! Every transition is one store write, conditional on the request still being
//! pending, that also queues what must follow it (the Slack message to post or
//! rewrite goes into the store's outbox in the same transaction). Once it is
//! committed, waiters wake. The service renders no message and runs no background
//! work: the workers (`crate::app` starts them) and the adapters (Slack, HTTP) do that
//! from what it returns and what the store holds. Its only task is `to_the_end`,
//! which keeps a state change and its follow-ups running when the caller goes away.
//!
//! The policy (`crate::policy`) routes each submission: the matching rule picks the
//! channel, the approvers, the approvals needed and the timeout, or decides on its own.
//! What reviewers do (clicks, deny reasons, who may decide) is in `review.rs`; this
//! file holds submit, wait, cancel, expiry and the one path that ends a request.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::{
    approvers::{Directory, GroupMembers},
    recent::Recent,
    waiters::Waiters,
};
use crate::{
    metrics::{Metrics, Outcome},
    model::{Approval, ApprovalId, Decision, NewApproval, Status, SYSTEM_ACTOR},
    policy::{quorum, Defaults, Plan, Policy, Requested},
    store::{outbox::Trouble, Fate, Inserted, NewEvent, Store, StoreError, Submission},
};

/// Runs a state change and what must follow its commit (waking the workers and the
/// waiters) to the end even if the caller goes away: an HTTP client that disconnects
/// while its write is queued drops the handler's future, but the write still commits,
/// and a committed change whose follow-ups were dropped would sit unseen (no post, no
/// deadline armed, long-polls left sleeping) until something else looked.
pub(super) async fn to_the_end<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ServiceError>> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::spawn(change).await.map_err(|e| {
        ServiceError::Store(StoreError::Commit(format!("the write task failed: {e}")))
    })?
}

/// Failures the API maps to client errors; store failures become 500s.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No request has this id (404 `not_found`).
    #[error("no approval request with id {0}")]
    NotFound(ApprovalId),
    /// This agent sent the same `Idempotency-Key` before with another body (409
    /// `idempotency_conflict`); nothing was stored.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyConflict,
    /// A cancel came after the request was final; it carries the request as decided
    /// (409 `already_decided`).
    #[error("the request is already {}", .0.status.as_str())]
    AlreadyDecided(Box<Approval>),
    /// Another agent's request (403 `forbidden`).
    #[error("the request belongs to another agent: an agent reads, waits on and cancels only its own requests")]
    NotOwner,
    /// The agent is at its cap of pending requests; nothing was stored (429
    /// `too_many_pending`).
    #[error("the agent already has {pending} pending requests")]
    TooManyPending {
        /// How many the agent has pending, counted in the insert's transaction.
        pending: u64,
    },
    /// The request's approvers can never give the approvals it needs (counting
    /// neither the requester nor anyone twice); nothing was stored.
    #[error("required_approvals: {0}")]
    QuorumUnreachable(crate::policy::quorum::Shortfall),
    /// Item `index` of a batch was refused (its `QuorumUnreachable`); nothing was
    /// stored. Worded `actions[i]: …` like the batch's other per-item errors.
    #[error("actions[{index}]: {error}")]
    Item {
        /// 0-based position in the batch's `actions`.
        index: usize,
        /// Why that item was refused.
        error: Box<ServiceError>,
    },
    /// The database failed (500 `internal`; the cause is logged, not shown).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a pending message shows beyond the request itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Who has approved so far (the two-person rule), oldest first.
    pub votes: Vec<String>,
    /// The policy rule that marks this request high-risk, if one does.
    pub high_risk_rule: Option<String>,
    /// Grant durations (seconds) the policy offers beside Approve; empty for none.
    pub grant_durations: Vec<u64>,
}

/// Changes a live view may fall behind by before it is told to re-read everything.
const CHANGES_BUFFERED: usize = 256;

/// Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct ApprovalService {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Store,
    pub(super) waiters: Waiters,
    /// Requests stored or decided lately: clicks find them here without a read.
    pub(super) recent: Recent,
    /// Flips to true on shutdown so open long-polls answer at once.
    shutting_down: watch::Sender<bool>,
    /// The id of every request stored, voted on or decided, after its commit: what
    /// the web page's live views (`crate::web::live`) follow. Lossy by design: a slow
    /// listener sees `Lagged` and re-reads everything.
    changes: broadcast::Sender<ApprovalId>,
    /// Routing, approvers, required approvals, timeouts and automatic decisions.
    pub(super) policy: Arc<Policy>,
    /// What rules fall back to: the default channel and `GREENLIGHT_APPROVERS`.
    pub(super) defaults: Defaults,
    /// Approver checks and the user group cache.
    pub(super) directory: Directory,
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
        let (changes, _) = broadcast::channel(CHANGES_BUFFERED);
        Self {
            inner: Arc::new(Inner {
                store,
                waiters: Waiters::new(),
                recent: Recent::default(),
                directory: Directory::new(groups),
                defaults,
                shutting_down,
                changes,
                policy,
                metrics,
            }),
        }
    }

    /// The store it writes to, for reads that change no state (lists, the audit
    /// trail, grants) and for the workers that take their work from it.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The metrics it counts submissions and decisions in; the adapters count theirs
    /// (clicks, nudges, grants) in the same registry.
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
    /// already has that many pending, checked in the insert's own transaction. A
    /// routed request whose listed user approvers, not counting its requester, are
    /// fewer than the approvals it needs is refused (`QuorumUnreachable`): it could
    /// only ever expire. (A list with user groups is not checked here; see
    /// [`quorum`].)
    pub async fn submit(
        &self,
        new: NewApproval,
        max_pending: Option<u32>,
    ) -> Result<(Approval, bool), ServiceError> {
        let (submission, rule) = self.prepare(new, max_pending, Utc::now())?;
        let routed = matches!(submission.fate, Fate::Review);
        let this = self.clone();
        let inserted = to_the_end(async move {
            let inserted = this.inner.store.insert(submission).await?;
            if let Inserted::Created(approval) = &inserted {
                this.stored(approval, &rule, routed);
            }
            Ok(inserted)
        })
        .await?;
        match inserted {
            Inserted::Created(approval) => Ok((approval, true)),
            // A replay after the deadline must not say "pending".
            Inserted::Existing(approval) => Ok((self.overdue_expired(approval).await?, false)),
            Inserted::KeyConflict => Err(ServiceError::IdempotencyConflict),
            Inserted::TooManyPending { pending } => Err(ServiceError::TooManyPending { pending }),
        }
    }

    /// Applies the policy to `new`: the submission to store (routed, or decided by a
    /// rule) and the name of the rule that matched. Refuses a quorum that can never be
    /// reached. Stores nothing.
    pub(super) fn prepare(
        &self,
        mut new: NewApproval,
        max_pending: Option<u32>,
        now: chrono::DateTime<Utc>,
    ) -> Result<(Submission, String), ServiceError> {
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
        if let Plan::Route {
            approvers: Some(approvers),
            required_approvals,
            ..
        } = &plan
        {
            let requester = new.requester_slack_id.as_deref();
            if let Some(short) = quorum::shortfall(approvers, *required_approvals, requester) {
                return Err(ServiceError::QuorumUnreachable(short));
            }
        }
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
        // Without Slack (no default channel) nothing is ever posted, whatever a rule
        // names: a request without a channel gets no outbox row (`store::outbox`).
        let channel = if self.inner.defaults.channel.is_empty() {
            String::new()
        } else {
            channel
        };
        let expires_at = now + chrono::Duration::seconds(new.timeout_secs as i64);
        let grant = self.grant_probe(&new, &plan, now);
        // The cap keeps an agent from burying its reviewers; a request the policy
        // decides at once never reaches them, so it is not held to it (and, on
        // PostgreSQL, does not queue on the agent's counter row behind every other
        // submission of that agent: hooks auto-approve most tool calls).
        let max_pending = match fate {
            Fate::Review => max_pending,
            Fate::Decided { .. } => None,
        };
        let submission = Submission {
            id: ApprovalId::new(),
            new,
            channel,
            created_at: now,
            expires_at,
            also,
            fate,
            max_pending,
            grant,
            first_nudge: self.first_nudge(&plan, now),
        };
        Ok((submission, plan.rule().to_owned()))
    }

    /// After a new request's commit: log, count and remember it, and answer or
    /// notify whoever follows it. `routed`: the policy sent it to review (so, if it is
    /// final already, a standing grant approved it inside its insert).
    pub(super) fn stored(&self, approval: &Approval, rule: &str, routed: bool) {
        tracing::info!(request_id = %approval.id, agent = %approval.agent, rule, "approval submitted");
        self.inner.metrics.submitted(&approval.agent);
        self.inner.recent.remember(approval);
        if approval.status.is_final() {
            if routed {
                self.inner.metrics.grant("used");
            }
            self.decided(approval, true);
        } else {
            self.changed(approval.id);
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

    pub(super) async fn overdue_expired(
        &self,
        approval: Approval,
    ) -> Result<Approval, ServiceError> {
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

    /// The agent withdraws its request.
    pub async fn cancel(&self, id: ApprovalId, agent: &str) -> Result<Approval, ServiceError> {
        let reason = format!("Withdrawn by the agent {agent}");
        self.withdraw(id, agent, reason, json!({})).await
    }

    /// Withdraws a pending request on behalf of `agent` (its submitter only), with the
    /// `reason` the agent and reviewers are shown and `detail` for the `cancelled`
    /// audit event. [`Self::cancel`] is the agent's own withdrawal; a hook call that
    /// greenlight itself must give up (shutdown) says so instead of blaming the agent.
    ///
    /// Errors: [`ServiceError::NotOwner`] for another agent's request,
    /// [`ServiceError::AlreadyDecided`] (with the decision) when it was final first.
    pub async fn withdraw(
        &self,
        id: ApprovalId,
        agent: &str,
        reason: String,
        detail: serde_json::Value,
    ) -> Result<Approval, ServiceError> {
        let current = self.get(id).await?;
        if current.agent != agent {
            return Err(ServiceError::NotOwner);
        }
        let decision = Decision {
            status: Status::Cancelled,
            reason,
            decided_by: agent.to_owned(),
            at: Utc::now(),
        };
        let event = NewEvent::new("cancelled", Some(agent), detail);
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
        // No channel: Slack is not configured and the web page was the only place to
        // decide, so it simply timed out.
        // A batch item is shown on its batch's card, not on a message of its own.
        let on_a_card = approval.message_ts.is_none()
            && !approval.channel.is_empty()
            && self.on_posted_card(approval.id).await?;
        let (reason, detail) = match approval.message_ts {
            _ if approval.channel.is_empty() || on_a_card => (
                format!("Timed out: no decision within {waited} s, so it was denied by default"),
                json!({ "timeout_secs": waited }),
            ),
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
    pub(super) async fn finish(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
    ) -> Result<Option<Approval>, ServiceError> {
        let this = self.clone();
        to_the_end(async move {
            let decided = this.inner.store.decide(id, decision, event).await?;
            if let Some(approval) = &decided {
                this.decided(approval, false);
            }
            Ok(decided)
        })
        .await
    }

    /// After a committed decision: count it, remember it, wake the waiters. `by_rule`
    /// marks a policy's automatic decision, which metrics count as `auto` whatever its
    /// status. (The message rewrite is already in the outbox.)
    pub(super) fn decided(&self, approval: &Approval, by_rule: bool) {
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
        self.changed(approval.id);
    }

    /// Tells live views that `id` changed (after the commit). Nobody listening is fine.
    pub(super) fn changed(&self, id: ApprovalId) {
        let _ = self.inner.changes.send(id);
    }

    /// Follows every committed change: the id of each request stored, voted on or
    /// decided, in commit order. `Lagged` means some were missed: re-read the store.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<ApprovalId> {
        self.inner.changes.subscribe()
    }

    /// Resolves to true once shutdown began, so long-lived streams (the web page's
    /// server-sent events) end and let the server stop.
    pub fn shutdown_watch(&self) -> watch::Receiver<bool> {
        self.inner.shutting_down.subscribe()
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
