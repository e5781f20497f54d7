//! Batches: several actions submitted in one call (a framework that stopped with all
//! of a turn's tool calls at once), each stored as an ordinary request with its own
//! rule, votes and decision, shown to reviewers on one Slack card and answered
//! together.
//!
//! Every item goes through the same policy as a single submission
//! ([`ApprovalService::prepare`]) and every decision on an item through the same path
//! as any other, so approver lists, the two-person rule and automatic rules hold per
//! item. What is batch-specific is only storing the items together (all or none) and
//! reading or waiting for them together.

use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::service::{to_the_end, ApprovalService, ServiceError};
use crate::{
    model::{ApprovalId, BatchView, NewApproval},
    store::{BatchInserted, NewBatch},
};

impl ApprovalService {
    /// Stores `batch` with `items` (in order): all of them, or none when one is
    /// refused (a quorum that cannot be reached, the agent's cap of pending requests).
    /// Routed items share the first routed item's channel, where the batch's one card
    /// goes. With an Idempotency-Key seen before, returns that batch. The bool is
    /// whether this call created it.
    pub async fn submit_batch(
        &self,
        batch: NewBatch,
        items: Vec<NewApproval>,
        max_pending: Option<u32>,
    ) -> Result<(BatchView, bool), ServiceError> {
        let now = Utc::now();
        let mut submissions = Vec::with_capacity(items.len());
        let mut rules = Vec::with_capacity(items.len());
        for (index, new) in items.into_iter().enumerate() {
            let (submission, rule) =
                self.prepare(new, max_pending, now)
                    .map_err(|error| ServiceError::Item {
                        index,
                        error: Box::new(error),
                    })?;
            rules.push((rule, matches!(submission.fate, crate::store::Fate::Review)));
            submissions.push(submission);
        }
        let card_channel = submissions
            .iter()
            .find(|s| matches!(s.fate, crate::store::Fate::Review))
            .map(|s| s.channel.clone());
        if let Some(channel) = card_channel {
            for submission in &mut submissions {
                if matches!(submission.fate, crate::store::Fate::Review) {
                    submission.channel = channel.clone();
                }
            }
        }
        let (id, title) = (batch.id, batch.title.clone());
        let this = self.clone();
        let inserted = to_the_end(async move {
            let inserted = this.inner.store.insert_batch(batch, submissions).await?;
            if let BatchInserted::Created(items) = &inserted {
                for (approval, (rule, routed)) in items.iter().zip(&rules) {
                    this.stored(approval, rule, *routed);
                }
            }
            Ok(inserted)
        })
        .await?;
        match inserted {
            BatchInserted::Created(items) => Ok((BatchView::of(id, title, &items), true)),
            BatchInserted::Existing(existing) => Ok((self.batch(existing).await?, false)),
            BatchInserted::KeyConflict => Err(ServiceError::IdempotencyConflict),
            BatchInserted::TooManyPending { pending } => {
                Err(ServiceError::TooManyPending { pending })
            }
        }
    }

    /// Whether request `id` is a batch item whose batch's card is posted (the card is
    /// the message of one of its items).
    pub(super) async fn on_posted_card(&self, id: ApprovalId) -> Result<bool, ServiceError> {
        let Some(batch) = self.inner.store.batch_of(id).await? else {
            return Ok(false);
        };
        for item in batch.items {
            if let Some(item) = self.inner.store.get(item).await? {
                if item.message_ts.is_some() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The batch as it stands (overdue items expired first, as [`ApprovalService::get`]
    /// does for one request).
    pub async fn batch(&self, id: ApprovalId) -> Result<BatchView, ServiceError> {
        let batch = self
            .inner
            .store
            .batch(id)
            .await?
            .ok_or(ServiceError::NotFound(id))?;
        let mut items = Vec::with_capacity(batch.items.len());
        for item in batch.items {
            items.push(self.get(item).await?);
        }
        Ok(BatchView::of(id, batch.title, &items))
    }

    /// The batch once every item is final, or after `wait` (or at shutdown) with the
    /// items still pending then. Waits on each pending item in turn within the one
    /// budget, so the answer comes as soon as the last is decided.
    pub async fn wait_batch(
        &self,
        id: ApprovalId,
        wait: Duration,
    ) -> Result<BatchView, ServiceError> {
        let deadline = Instant::now() + wait;
        let batch = self
            .inner
            .store
            .batch(id)
            .await?
            .ok_or(ServiceError::NotFound(id))?;
        for item in &batch.items {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || *self.shutdown_watch().borrow() {
                break;
            }
            self.wait(*item, left).await?;
        }
        self.batch(id).await
    }
}
