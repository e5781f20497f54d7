//! The approval service: the one place that changes a request's state.
//!
//! Every transition follows the same order: write the store (conditional on the request
//! still being pending), then wake the broker's waiters, then tell Slack in the
//! background. The store write is the decision; everything after it is notification
//! and may be retried or fail without changing the outcome.

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
    post_trouble::PostTrouble, Approval, ApprovalId, Broker, Decision, NewApproval, Status,
    SYSTEM_ACTOR,
};
use crate::{
    slack::{
        api::{MessageRef, SlackClient},
        blocks,
        interaction::{Button, Click},
    },
    store::{Inserted, NewEvent, Store, StoreError},
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
}

impl ClickOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ClickOutcome::Accepted => "accepted",
            ClickOutcome::Late => "late",
            ClickOutcome::Duplicate => "duplicate",
            ClickOutcome::Unknown => "unknown",
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
    default_channel: String,
    /// One ordered posting queue per channel, so a rate-limited channel waits without
    /// holding up the others.
    post_queues: DashMap<String, mpsc::UnboundedSender<ApprovalId>>,
    /// The deadline timer of each pending request, aborted when it is decided.
    timers: DashMap<ApprovalId, AbortHandle>,
    /// Flips to true on shutdown so open long-polls answer at once.
    shutting_down: watch::Sender<bool>,
    /// The last post failure per channel, so an unposted request's expiry names it.
    post_trouble: PostTrouble,
}

impl ApprovalService {
    pub fn new(store: Store, slack: SlackClient, default_channel: String) -> Self {
        let (shutting_down, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                store,
                broker: Broker::new(),
                slack,
                default_channel,
                post_queues: DashMap::new(),
                timers: DashMap::new(),
                shutting_down,
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

    /// Records a request, arms its deadline and queues its Slack message. With an
    /// Idempotency-Key seen before, returns the earlier request and does nothing else.
    pub async fn submit(&self, new: NewApproval) -> Result<(Approval, bool), ServiceError> {
        let id = ApprovalId::new();
        let now = Utc::now();
        let expires_at = now + chrono::Duration::seconds(new.timeout_secs as i64);
        let channel = self.inner.default_channel.clone();
        match self
            .inner
            .store
            .insert(id, &new, &channel, now, expires_at)
            .await?
        {
            Inserted::Created(approval) => {
                tracing::info!(request_id = %approval.id, agent = %approval.agent, "approval submitted");
                self.arm_deadline(&approval);
                self.enqueue_post(&approval);
                Ok((approval, true))
            }
            Inserted::Existing(approval) => Ok((approval, false)),
            Inserted::KeyConflict => Err(ServiceError::IdempotencyConflict),
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
        // Subscribe before reading, so a decision between the two still wakes us.
        let decided = self.inner.broker.subscribe(id);
        let current = self.get(id).await?;
        if current.status.is_final() || wait.is_zero() {
            return Ok(current);
        }
        let mut shutdown = self.inner.shutting_down.subscribe();
        let woken = tokio::select! {
            result = decided => result.ok(),
            _ = tokio::time::sleep(wait) => None,
            _ = shutdown.wait_for(|down| *down) => None,
        };
        match woken {
            Some(approval) => Ok(approval),
            None => self.get(id).await,
        }
    }

    /// Applies one button click. Writes its audit event before returning, so the ack
    /// Slack gets means the click is recorded; Slack-side effects run in the background.
    pub async fn click(&self, click: &Click) -> Result<ClickOutcome, ServiceError> {
        let id = click.approval_id;
        let Some(approval) = self.inner.store.get(id).await? else {
            tracing::warn!(request_id = %id, user = %click.user.id, "click on an unknown request");
            return Ok(ClickOutcome::Unknown);
        };
        if approval.status.is_final() {
            return self.ignore_click(click, &approval).await;
        }
        let (status, reason) = match click.button {
            Button::Approve => (
                Status::Approved,
                format!("Approved in Slack by <@{}>", click.user.id),
            ),
            Button::Deny => (
                Status::Denied,
                format!("Denied in Slack by <@{}>", click.user.id),
            ),
        };
        let decision = Decision {
            status,
            reason,
            decided_by: click.user.id.clone(),
            at: Utc::now(),
        };
        let event = NewEvent::new(
            "decided",
            Some(&click.user.id),
            json!({ "via": "click", "button": click.button.as_str(), "status": status.as_str(), "user": click.user.display() }),
        );
        match self.finish(id, decision, event).await? {
            Some(_) => Ok(ClickOutcome::Accepted),
            // Lost a race with another click, the timer or a cancel.
            None => {
                let now_final = self.get(id).await?;
                self.ignore_click(click, &now_final).await
            }
        }
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
        if let Some(channel) = click
            .channel
            .clone()
            .or_else(|| Some(approval.channel.clone()))
        {
            let note = blocks::already_decided_note(approval);
            let slack = self.inner.slack.clone();
            let user = click.user.id.clone();
            tokio::spawn(async move {
                if let Err(error) = slack.post_ephemeral(&channel, &user, &note).await {
                    tracing::warn!(%error, "could not tell a late clicker");
                }
            });
        }
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
        tracing::info!(request_id = %id, status = approval.status.as_str(), decided_by = ?approval.decided_by, "approval decided");
        if let Some((_, timer)) = self.inner.timers.remove(&id) {
            timer.abort();
        }
        self.inner.broker.resolve(&approval);
        self.spawn_final_update(approval.clone());
        Ok(Some(approval))
    }

    /// Replaces the Slack message with the outcome, if there is a message yet. (If the
    /// post is still queued, the poster sees the final state and updates instead.)
    fn spawn_final_update(&self, approval: Approval) {
        let Some(ts) = approval.message_ts.clone() else {
            return;
        };
        let service = self.clone();
        tokio::spawn(async move {
            let message = MessageRef {
                channel: approval.channel.clone(),
                ts,
            };
            service.update_to_final(&approval, &message).await;
        });
    }

    async fn update_to_final(&self, approval: &Approval, message: &MessageRef) {
        let rendered = blocks::final_message(approval);
        if let Err(error) = self
            .inner
            .slack
            .update_message(message, &rendered.text, &rendered.blocks)
            .await
        {
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
    }

    fn arm_deadline(&self, approval: &Approval) {
        let id = approval.id;
        let sleep_for = until(approval.expires_at);
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            tokio::time::sleep(sleep_for).await;
            let Some(service) = upgrade(&weak) else {
                return;
            };
            service.inner.timers.remove(&id);
            if let Err(error) = service.expire(id).await {
                tracing::error!(request_id = %id, %error, "could not expire a request");
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
        let rendered = blocks::pending_message(&approval);
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
                    self.update_to_final(&stored, &message).await;
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
        Ok(pending.len())
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
