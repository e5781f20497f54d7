//! The outbox worker: delivers the store's outbox to Slack (posts, rewrites, FYIs).
//!
//! One lane per channel with work, each sending that channel's rows strictly in order,
//! so a rate-limited channel waits without holding up the others; a lane ends when its
//! channel has nothing left. Lanes start when the store marks a channel
//! (`store::signals::OutboxSignal`) and, at start-up, for every channel that still has
//! rows: resuming after a crash is the worker starting.
//!
//! A post that Slack refuses for good denies the request (no reviewer can see it); the
//! failure is also kept per channel, so a request that expires still queued can say
//! why. A rewrite that fails is retried with backoff, unless Slack says it never can
//! succeed (the message or channel is gone). A post, rewrite or FYI that Slack refuses
//! for its content is sent once more as a minimal message (`super::fallback`) instead
//! of being retried as it is.
//!
//! Each channel's posts go through that channel's [`Pacer`]: after Slack's first 429
//! the lane sends at the rate the channel has shown, instead of bursting into the
//! limit and waiting out a refusal per burst.
//!
//! On PostgreSQL a lane sends only while its replica holds the channel's lease: it
//! renews the lease beside the batch and drops the batch (with the Slack call in
//! flight) the moment the lease is lost or can no longer be vouched for; writes that
//! complete a row refuse once another replica took the channel over
//! (`StoreError::LeaseLost`), which also ends the batch. Why that is enough, and what
//! remains, is in `crate::leases`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use serde_json::json;
use tokio::{sync::Notify, task::JoinSet, time::Instant};

use super::{
    api::{SlackClient, SlackError},
    blocks::{self, PendingExtras},
    fallback, history,
    pacing::Pacer,
};
use crate::{
    approval::{ApprovalService, ServiceError},
    backoff::{Backoff, Retrying},
    model::Approval,
    store::{
        outbox::{Kind, Row, Trouble},
        NewEvent, Store, StoreError,
    },
};

/// Rows a lane claims at once.
const CLAIM: u32 = 16;
/// A claimed row carries the request as it was at the claim. A post whose turn comes
/// later than this re-reads it, so a request decided while the lane waited on Slack is
/// not posted with live buttons. (A rewrite needs no re-read: a later change queues a
/// rewrite of its own.)
const FRESH: Duration = Duration::from_secs(1);
/// Backoff of a failed rewrite: doubles per attempt up to the cap.
const REWRITE_RETRY_FIRST: Duration = Duration::from_secs(1);
const REWRITE_RETRY_MAX: Duration = Duration::from_secs(300);
/// Backoff between posts while Slack is unavailable (the client's own retries ran
/// out): doubles up to the cap, and never waits past the request's deadline.
const POST_RETRY_FIRST: Duration = Duration::from_secs(1);
const POST_RETRY_MAX: Duration = Duration::from_secs(30);
/// Backoff when the store itself fails: doubles up to the cap.
const STORE_RETRY: Duration = Duration::from_millis(500);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// A backoff for store failures, which log once per step.
fn store_retrying() -> Retrying {
    Retrying::new(Backoff::new(STORE_RETRY, STORE_RETRY_MAX))
}

/// Delivers the outbox. Cheap to clone.
#[derive(Clone)]
pub struct OutboxWorker {
    service: ApprovalService,
    slack: SlackClient,
    /// Per channel: the pace of its posts (kept across lanes: a channel that was
    /// just rate-limited is still paced when its next burst comes; a pace a minute
    /// old is forgotten by the pacer itself). One entry per channel posted to.
    pacers: Arc<Mutex<HashMap<String, Arc<Pacer>>>>,
}

impl OutboxWorker {
    /// `slack` holds the bot token (`xoxb-…`, scope `chat:write`). Nothing is sent
    /// until [`run`](Self::run).
    pub fn new(service: ApprovalService, slack: SlackClient) -> Self {
        Self {
            service,
            slack,
            pacers: Arc::default(),
        }
    }

    /// `channel`'s pacer.
    fn pacer(&self, channel: &str) -> Arc<Pacer> {
        let mut pacers = self
            .pacers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pacers.entry(channel.to_owned()).or_default().clone()
    }

    fn store(&self) -> &Store {
        self.service.store()
    }

    /// Runs until the task is dropped (which drops the lanes with it).
    pub async fn run(self) {
        let mut lanes = JoinSet::new();
        let mut running: HashMap<String, Arc<Notify>> = HashMap::new();
        // Channels marked while their lane ran: looked at again when it ends.
        let mut again: HashSet<String> = HashSet::new();
        let mut todo: HashSet<String> = self.resume().await;
        loop {
            for channel in todo.drain() {
                if let Some(wake) = running.get(&channel) {
                    wake.notify_one();
                    again.insert(channel);
                    continue;
                }
                let wake = Arc::new(Notify::new());
                running.insert(channel.clone(), wake.clone());
                let worker = self.clone();
                lanes.spawn(async move {
                    // A lane that panicked must still hand its channel back, or the
                    // channel would count as running forever and never be served.
                    let lane = std::panic::AssertUnwindSafe(worker.lane(&channel, &wake));
                    if futures::FutureExt::catch_unwind(lane).await.is_err() {
                        tracing::error!(%channel, "a Slack outbox lane panicked; restarting it");
                    }
                    channel
                });
            }
            tokio::select! {
                marked = self.store().outbox_signal().changed() => todo.extend(marked),
                Some(ended) = lanes.join_next() => {
                    let Ok(channel) = ended else { continue };
                    running.remove(&channel);
                    // Rows may be left (a panicked lane) or new (marked meanwhile).
                    if again.remove(&channel) || self.store().next_outbox_try(&channel).await.ok().flatten().is_some() {
                        todo.insert(channel);
                    }
                }
            }
        }
    }

    /// Every channel with rows left by an earlier run.
    async fn resume(&self) -> HashSet<String> {
        let mut retrying = store_retrying();
        loop {
            match self.store().outbox_channels().await {
                Ok(channels) => {
                    if !channels.is_empty() {
                        tracing::info!(channels = channels.len(), "resuming the Slack outbox");
                    }
                    return channels.into_iter().collect();
                }
                Err(error) => {
                    let step = retrying.failed();
                    if step.log {
                        tracing::error!(%error, failed_attempts = step.failures, "could not read the Slack outbox; retrying");
                    }
                    tokio::time::sleep(step.delay).await;
                }
            }
        }
    }

    /// Sends `channel`'s rows in order until none is left. Rows waiting out a retry
    /// are slept for (a mark for the channel wakes the lane sooner).
    async fn lane(&self, channel: &str, wake: &Notify) {
        // Rows delivered since the last claim: removed by the next claim's own write
        // (on PostgreSQL at once, `Store::outbox_delivered`).
        let mut done = Vec::new();
        let mut store_trouble = store_retrying();
        loop {
            // Taken before the claim is sent: the lease it takes lapses no sooner than
            // a lease from now (`leases::Fence`).
            let sent_at = Instant::now();
            let claimed = self
                .store()
                .claim_outbox(channel, Utc::now(), CLAIM, done.clone())
                .await;
            let rows = match claimed {
                Ok(rows) => {
                    done.clear();
                    store_trouble.succeeded();
                    rows
                }
                Err(error) => {
                    let step = store_trouble.failed();
                    if step.log {
                        tracing::error!(%channel, %error, failed_attempts = step.failures, "could not claim outbox rows; retrying");
                    }
                    tokio::time::sleep(step.delay).await;
                    continue;
                }
            };
            if rows.is_empty() {
                match self.store().next_outbox_try(channel).await {
                    Ok(None) => return,
                    Ok(Some(at)) => {
                        let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                        tokio::select! {
                            () = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                            () = wake.notified() => {}
                        }
                    }
                    Err(error) => {
                        let step = store_trouble.failed();
                        if step.log {
                            tracing::error!(%channel, %error, failed_attempts = step.failures, "could not read the outbox; retrying");
                        }
                        tokio::time::sleep(step.delay).await;
                    }
                }
                continue;
            }
            let batch = self.send_batch(channel, rows, &mut done, &mut store_trouble);
            let held = self.hold_lane(channel, sent_at);
            // Whichever ends first: a lost lease drops the batch, and with it the
            // Slack call in flight, before another replica may claim the rows.
            let lost = tokio::select! {
                lost = held => Some(lost),
                sent = batch => sent.err(),
            };
            if let Some(lost) = lost {
                tracing::warn!(%channel, why = %lost, "lost the outbox lane's lease mid-batch; stopped sending and left the rest to the replica that holds it");
            }
        }
    }

    /// Holds `channel`'s lease while a batch claimed at `sent_at` is sent (see
    /// `crate::leases::hold`); returns only when the lease is lost or can no longer be
    /// vouched for. On SQLite the one process owns every lane: never returns.
    async fn hold_lane(&self, channel: &str, sent_at: Instant) -> String {
        if !self.store().is_postgres() {
            return std::future::pending().await;
        }
        let fence = crate::leases::Fence::new(crate::leases::from_env().outbox, sent_at);
        match crate::leases::hold(fence, || self.store().renew_outbox_lane(channel)).await {
            crate::leases::Lost::Taken => "another replica took the lease".into(),
            crate::leases::Lost::Unconfirmed(error) => {
                format!("the lease could not be renewed in time: {error}")
            }
        }
    }

    /// Sends claimed `rows` in order. `Err` (why) when a completion write found the
    /// lane taken over by another replica: the rest of the batch is the other
    /// replica's to send.
    async fn send_batch(
        &self,
        channel: &str,
        rows: Vec<Row>,
        done: &mut Vec<i64>,
        store_trouble: &mut Retrying,
    ) -> Result<(), String> {
        let claimed = Instant::now();
        for mut row in rows {
            if row.kind == Kind::Post && claimed.elapsed() > FRESH {
                // Slack held the lane up: the request may have been decided since.
                match self.store().get(row.approval_id).await {
                    Ok(now) => row.approval = now,
                    Err(error) => {
                        tracing::warn!(request_id = %row.approval_id, %error, "could not re-read a request before posting")
                    }
                }
            }
            match self.deliver(&row, done).await {
                Ok(()) => {}
                Err(ServiceError::Store(error @ StoreError::LeaseLost(_))) => {
                    return Err(error.to_string())
                }
                Err(error) => {
                    // The row stays claimed and is tried again when its lane next runs.
                    let step = store_trouble.failed();
                    if step.log {
                        tracing::error!(request_id = %row.approval_id, %error, kind = row.kind.as_str(), failed_attempts = step.failures, "could not deliver an outbox row");
                    }
                    tokio::time::sleep(step.delay).await;
                }
            }
            match self.store().outbox_delivered(channel, done).await {
                Ok(()) => {}
                Err(error @ StoreError::LeaseLost(_)) => return Err(error.to_string()),
                // Still in `done`: the next claim removes them.
                Err(error) => {
                    tracing::warn!(%channel, %error, "could not remove delivered outbox rows now")
                }
            }
        }
        Ok(())
    }

    async fn deliver(&self, row: &Row, done: &mut Vec<i64>) -> Result<(), ServiceError> {
        let Some(approval) = &row.approval else {
            done.push(row.seq);
            return Ok(());
        };
        match row.kind {
            Kind::Post => self.post(row, approval, done).await,
            Kind::Update => self.rewrite(row, approval, done).await,
            Kind::Fyi => self.fyi(row, approval, done).await,
            Kind::Remind => self.remind(row, approval, done).await,
            Kind::Escalate => self.escalate(row, approval, done).await,
            Kind::EscalationUpdate => self.rewrite_escalation(row, approval, done).await,
        }
    }

    /// Posts the pending message. A request decided before its turn is never posted
    /// (there is nothing left to decide); one decided while the post was in flight
    /// gets a rewrite queued by the store.
    async fn post(
        &self,
        row: &Row,
        approval: &Approval,
        done: &mut Vec<i64>,
    ) -> Result<(), ServiceError> {
        // A batch item's message is the batch's card: worth posting while any item
        // of the batch is still pending.
        let card = self.batch_card(approval).await?;
        let live = match &card {
            Some((_, pending)) => *pending,
            None => !approval.status.is_final(),
        };
        if !live || approval.message_ts.is_some() {
            done.push(row.seq);
            return Ok(());
        }
        if self.found_interrupted_post(row, approval).await? {
            return Ok(());
        }
        let extras = self.extras(approval).await?;
        let rendered = match card {
            Some((card, _)) => card,
            None => blocks::pending_message_with(approval, &extras),
        };
        let deadline = Instant::now()
            + (approval.expires_at - Utc::now())
                .to_std()
                .unwrap_or_default();
        let store = self.store().clone();
        let channel = approval.channel.clone();
        let on_retry = move |error: &SlackError| {
            let (store, channel, trouble) = (store.clone(), channel.clone(), trouble(error));
            tokio::spawn(async move {
                if let Err(error) = store.record_trouble(&channel, trouble).await {
                    tracing::warn!(%error, "could not record a Slack posting failure");
                }
            });
        };
        let mut retrying = Retrying::new(Backoff::new(POST_RETRY_FIRST, POST_RETRY_MAX));
        let pacer = self.pacer(&approval.channel);
        loop {
            let posted = self
                .slack
                .post_message_paced(
                    &approval.channel,
                    &rendered.text,
                    &rendered.blocks,
                    Some(deadline),
                    &on_retry,
                    &pacer,
                    &approval.id.to_string(),
                )
                .await;
            let error = match posted {
                Ok(message) => {
                    self.store()
                        .posted(row, message.channel, message.ts)
                        .await?;
                    return Ok(());
                }
                Err(error) if fallback::is_content_refusal(&error) => {
                    let minimal = fallback::minimal_message(approval, &extras, &error);
                    match self
                        .slack
                        .post_message_paced(
                            &approval.channel,
                            &minimal.text,
                            &minimal.blocks,
                            Some(deadline),
                            &on_retry,
                            &pacer,
                            &approval.id.to_string(),
                        )
                        .await
                    {
                        Ok(message) => {
                            tracing::warn!(request_id = %approval.id, %error, "Slack refused the approval message; posted a minimal one");
                            self.store()
                                .posted(row, message.channel, message.ts)
                                .await?;
                            self.store()
                                .append_event(approval.id, fallback::event("post", &error))
                                .await?;
                            return Ok(());
                        }
                        Err(second) => second,
                    }
                }
                Err(error) => error,
            };
            self.store()
                .record_trouble(&approval.channel, trouble(&error))
                .await?;
            if !is_transient(&error) {
                // Slack refused for good: no reviewer can ever see it.
                tracing::warn!(request_id = %approval.id, %error, "could not post the approval message");
                let failure = Trouble {
                    code: error.code().to_owned(),
                    text: error.to_string(),
                };
                self.service.post_failed(approval.id, &failure).await?;
                done.push(row.seq);
                return Ok(());
            }
            if Utc::now() >= approval.expires_at {
                // Slack stayed unavailable until the deadline: the request expires,
                // with a reason naming the failure (the deadline worker's expiry, done
                // now so the lane can move on).
                self.service
                    .expire_due(Utc::now(), crate::approval::deadlines::BATCH)
                    .await?;
                done.push(row.seq);
                return Ok(());
            }
            let step = retrying.failed();
            if step.log {
                tracing::warn!(request_id = %approval.id, %error, failed_attempts = step.failures, retry_in_ms = step.delay.as_millis() as u64, "Slack is unavailable for a post; retrying until the deadline");
            }
            let until_deadline = (approval.expires_at - Utc::now())
                .to_std()
                .unwrap_or_default();
            tokio::time::sleep(step.delay.min(until_deadline)).await;
            // Cancelled (or decided) while Slack was away: nothing left to post.
            let still_pending = self
                .store()
                .get(approval.id)
                .await?
                .is_some_and(|now| !now.status.is_final());
            if !still_pending {
                done.push(row.seq);
                return Ok(());
            }
        }
    }

    /// Rewrites the message from the request's current state: the outcome once final,
    /// else the pending message with its approval progress.
    async fn rewrite(
        &self,
        row: &Row,
        approval: &Approval,
        done: &mut Vec<i64>,
    ) -> Result<(), ServiceError> {
        let Some(ts) = approval.message_ts.clone() else {
            done.push(row.seq);
            return Ok(());
        };
        let extras = if approval.status.is_final() {
            PendingExtras::default()
        } else {
            self.extras(approval).await?
        };
        let rendered = if let Some((card, _)) = self.batch_card(approval).await? {
            card
        } else if approval.status.is_final() {
            self.final_message(approval).await?
        } else {
            blocks::pending_message_with(approval, &extras)
        };
        let message = super::api::MessageRef {
            channel: approval.channel.clone(),
            ts,
        };
        let Err(mut error) = self
            .slack
            .update_message(&message, &rendered.text, &rendered.blocks)
            .await
        else {
            done.push(row.seq);
            return Ok(());
        };
        if fallback::is_content_refusal(&error) {
            let minimal = fallback::minimal_message(approval, &extras, &error);
            match self
                .slack
                .update_message(&message, &minimal.text, &minimal.blocks)
                .await
            {
                Ok(()) => {
                    tracing::warn!(request_id = %approval.id, %error, "Slack refused the message update; sent a minimal one");
                    let event = fallback::event("update", &error);
                    return Ok(self
                        .store()
                        .outbox_done(row.seq, Some((approval.id, event)))
                        .await?);
                }
                Err(second) => error = second,
            }
        }
        tracing::warn!(request_id = %approval.id, %error, "could not update the Slack message");
        let event = NewEvent::new(
            "slack_update_failed",
            None,
            json!({ "error": error.code(), "detail": error.to_string() }),
        );
        if is_permanent_update_failure(&error) {
            self.store()
                .outbox_done(row.seq, Some((approval.id, event)))
                .await?;
        } else {
            let not_before = Utc::now()
                + chrono::Duration::from_std(rewrite_backoff(row.attempts)).unwrap_or_default();
            self.store()
                .outbox_retry(row.seq, not_before, (approval.id, event))
                .await?;
        }
        Ok(())
    }

    /// Posts an automatic decision as a message without buttons.
    async fn fyi(
        &self,
        row: &Row,
        approval: &Approval,
        done: &mut Vec<i64>,
    ) -> Result<(), ServiceError> {
        if approval.message_ts.is_some() || self.found_interrupted_post(row, approval).await? {
            done.push(row.seq);
            return Ok(());
        }
        let rendered = self.final_message(approval).await?;
        let mut posted = self
            .slack
            .post_message_paced(
                &approval.channel,
                &rendered.text,
                &rendered.blocks,
                None,
                &|_| {},
                &self.pacer(&approval.channel),
                &approval.id.to_string(),
            )
            .await;
        let refused = posted
            .as_ref()
            .err()
            .filter(|e| fallback::is_content_refusal(e))
            .cloned();
        if let Some(error) = &refused {
            let minimal = fallback::minimal_message(approval, &PendingExtras::default(), error);
            posted = self
                .slack
                .post_message_paced(
                    &approval.channel,
                    &minimal.text,
                    &minimal.blocks,
                    None,
                    &|_| {},
                    &self.pacer(&approval.channel),
                    &approval.id.to_string(),
                )
                .await;
        }
        match posted {
            Ok(message) => {
                self.store()
                    .posted(row, message.channel, message.ts)
                    .await?;
                if let Some(refused) = refused {
                    self.store()
                        .append_event(approval.id, fallback::event("fyi", &refused))
                        .await?;
                }
            }
            Err(error) => {
                tracing::warn!(request_id = %approval.id, %error, "could not post the FYI message");
                let event = NewEvent::new(
                    "post_failed",
                    None,
                    json!({ "error": error.code(), "detail": error.to_string(), "fyi": true }),
                );
                self.store()
                    .outbox_done(row.seq, Some((approval.id, event)))
                    .await?;
            }
        }
        Ok(())
    }

    /// For a post or FYI row claimed before (`attempts > 1`: the process may have died
    /// after Slack took the message and before its `ts` was recorded), looks for the
    /// message in the channel's history ([`history`]) and, when it is there, records it
    /// as posted. True when it was found and recorded: nothing is left to send.
    async fn found_interrupted_post(
        &self,
        row: &Row,
        approval: &Approval,
    ) -> Result<bool, ServiceError> {
        if row.attempts <= 1 {
            return Ok(false);
        }
        let id = approval.id.to_string();
        match history::find_posted(&self.slack, &approval.channel, approval.created_at, &id).await {
            Ok(Some(message)) => {
                tracing::info!(request_id = %approval.id, ts = %message.ts, "an interrupted post had reached Slack; recorded it instead of posting again");
                self.store()
                    .posted(row, message.channel, message.ts)
                    .await?;
                Ok(true)
            }
            Ok(None) => {
                tracing::info!(request_id = %approval.id, attempts = row.attempts, "an interrupted post had not reached Slack; posting it");
                Ok(false)
            }
            Err(error) => {
                tracing::warn!(request_id = %approval.id, %error, "could not read the channel's history to find an interrupted post (scopes channels:history, groups:history); posting again");
                Ok(false)
            }
        }
    }

    /// A final request's message: a grant-approved one names its grant and offers
    /// Revoke while the grant is live.
    async fn final_message(
        &self,
        approval: &Approval,
    ) -> Result<blocks::RenderedMessage, ServiceError> {
        Ok(match self.store().grant_used_by(approval.id).await? {
            Some(grant) => super::grant_blocks::grant_fyi(approval, &grant, Utc::now()),
            None => blocks::final_message(approval),
        })
    }

    /// When `approval` is a batch item: the batch's card as its items stand now, and
    /// whether any of them is still pending.
    async fn batch_card(
        &self,
        approval: &Approval,
    ) -> Result<Option<(blocks::RenderedMessage, bool)>, ServiceError> {
        let Some(batch) = self.store().batch_of(approval.id).await? else {
            return Ok(None);
        };
        let mut items = Vec::with_capacity(batch.items.len());
        for id in &batch.items {
            if let Some(item) = self.store().get(*id).await? {
                items.push(item);
            }
        }
        let pending = items.iter().any(|a| !a.status.is_final());
        let card = super::batch_card::batch_card(batch.title.as_deref(), &items);
        Ok(Some((card, pending)))
    }

    async fn extras(&self, approval: &Approval) -> Result<PendingExtras, ServiceError> {
        let progress = self.service.progress(approval).await?;
        Ok(PendingExtras {
            votes: progress.votes,
            high_risk_rule: progress.high_risk_rule,
            grant_durations: progress.grant_durations,
        })
    }
}

/// A posting failure as kept for the channel.
fn trouble(error: &SlackError) -> Trouble {
    Trouble {
        code: error.code().to_owned(),
        text: describe(error),
    }
}

/// A failure in words a reviewer or agent understands. A rate limit is reported as
/// such, not as "past the deadline", because the deadline is what we are explaining.
pub fn describe(error: &SlackError) -> String {
    match error {
        SlackError::RateLimited { method } => {
            format!("Slack kept rate-limiting {method} (HTTP 429)")
        }
        other => other.to_string(),
    }
}

/// Failures that may pass (rate limits, 5xx, no connection, an unreadable answer): a
/// post that hits one is tried again until its deadline. Slack's own refusals
/// (`channel_not_found`, `invalid_auth`, …) and other 4xx never will.
fn is_transient(error: &SlackError) -> bool {
    match error {
        SlackError::Api { .. } => false,
        SlackError::Http { status, .. } => *status >= 500 || *status == 429,
        SlackError::RateLimited { .. }
        | SlackError::Transport { .. }
        | SlackError::Malformed { .. } => true,
    }
}

/// Slack answers after which updating the message again can never succeed: the
/// message or channel is gone, or Slack refused the content (even the minimal
/// fallback's).
fn is_permanent_update_failure(error: &SlackError) -> bool {
    fallback::is_content_refusal(error)
        || matches!(
            error.code(),
            "message_not_found"
                | "cant_update_message"
                | "channel_not_found"
                | "is_archived"
                | "edit_window_closed"
        )
}

/// How long a rewrite waits after its `attempts`-th failure (the count is stored
/// with the row, so it survives restarts): the shared backoff, jittered.
fn rewrite_backoff(attempts: u32) -> Duration {
    Backoff::new(REWRITE_RETRY_FIRST, REWRITE_RETRY_MAX).delay(attempts.max(1))
}

#[path = "outbox_nudges.rs"]
mod nudges;

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod worker_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_backoff_doubles_up_to_the_cap_with_jitter() {
        let within = |attempts, step: Duration| {
            let delay = rewrite_backoff(attempts);
            assert!(
                delay <= step && delay >= step.mul_f64(0.79),
                "{attempts}: {delay:?}"
            );
        };
        for _ in 0..20 {
            within(0, Duration::from_secs(1));
            within(1, Duration::from_secs(1));
            within(2, Duration::from_secs(2));
            within(5, Duration::from_secs(16));
            within(40, REWRITE_RETRY_MAX);
        }
    }

    #[test]
    fn a_rate_limit_is_described_as_one() {
        let text = describe(&SlackError::RateLimited {
            method: "chat.postMessage".into(),
        });
        assert!(text.contains("rate-limiting chat.postMessage"), "{text}");
    }
}
