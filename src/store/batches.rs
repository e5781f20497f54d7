//! Batches in the store: several requests submitted together, each an ordinary
//! approval request (own id, rule, votes and decision), linked to their batch by
//! `batch_items` in submission order.
//!
//! A batch has one Slack card: only its first routed item gets an outbox `post` row,
//! and the card (`slack::batch_card`) is rendered from every item whenever that item's
//! message is posted or rewritten. A decision on any other item queues a rewrite of
//! that message, here, in the decision's own transaction. When the last item is
//! decided, the batch's callback (if it has a `callback_url`) is queued in the same
//! transaction.

//!
//! Queries: `sqlite/batches.rs`, `postgres/batches.rs` (tables `batches`,
//! `batch_items`). On PostgreSQL the deciding transaction locks the batch row
//! (`FOR UPDATE`) before it counts the pending items, so two items decided at once on
//! two replicas cannot both miss (or both queue) the batch's callback.

use chrono::{DateTime, Utc};

use super::{dispatch, requests::Submission, Store, StoreResult};
use crate::model::{Approval, ApprovalId};

/// A batch to store, as the API validated it.
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// The batch's own id, a fresh UUID (no item's): `GET /v1/batches/{id}`.
    pub id: ApprovalId,
    /// The submitting agent's name, from its token; every item is this agent's.
    pub agent: String,
    /// A heading for the card: trimmed, 1 to 200 characters; `None` for none.
    pub title: Option<String>,
    /// Where the `batch.decided` callback goes once the last item is decided: a
    /// canonical URL already checked by `CallbackSettings::check_url`; `None` for none.
    pub callback_url: Option<String>,
    /// The `Idempotency-Key` header, scoped to the agent and apart from the keys of
    /// single requests; `None` without one.
    pub idempotency_key: Option<String>,
    /// Hex SHA-256 of the body's JSON as parsed and serialised again (whitespace does
    /// not count), so a reused key with another body is [`BatchInserted::KeyConflict`].
    pub request_hash: String,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
}

/// What inserting a batch did.
#[derive(Debug)]
pub enum BatchInserted {
    /// A new batch; its items as stored, in order.
    Created(Vec<Approval>),
    /// The agent already sent this Idempotency-Key with the same body: that batch.
    Existing(ApprovalId),
    /// The agent already sent this Idempotency-Key with a different body.
    KeyConflict,
    /// The items, all together, would take the agent over its cap of pending
    /// requests: nothing stored. `pending` is what the agent has without them.
    TooManyPending {
        /// The agent's pending requests, counted in the insert's own transaction.
        pending: u64,
    },
}

/// A stored batch: who sent it and its items' ids, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The batch's own id (no item's).
    pub id: ApprovalId,
    /// The submitting agent's name: only that agent may read the batch.
    pub agent: String,
    /// The heading it was submitted with, if any.
    pub title: Option<String>,
    /// Its requests' ids in submission order (retention removes pruned ones).
    pub items: Vec<ApprovalId>,
}

impl Store {
    /// Stores a batch and its items in one transaction: all of them or none. The
    /// items' submissions are as [`Store::insert`] takes them; every item after the
    /// first routed one loses its own Slack post (the batch has one card).
    pub async fn insert_batch(
        &self,
        batch: NewBatch,
        items: Vec<Submission>,
    ) -> StoreResult<BatchInserted> {
        let deadlines: Vec<_> = items.iter().map(|s| s.expires_at).collect();
        let nudges: Vec<_> = items.iter().filter_map(|s| s.first_nudge).collect();
        let channels: Vec<_> = items.iter().map(|s| s.channel.clone()).collect();
        let inserted = dispatch!(self, insert_batch(batch, items))?;
        if let BatchInserted::Created(_) = &inserted {
            if let Some(first) = deadlines.iter().min() {
                self.signals.deadlines.inserted(*first);
            }
            if let Some(first) = nudges.iter().min() {
                self.signals.nudges.inserted(*first);
            }
            for channel in channels {
                self.signals.outbox.mark(&channel);
            }
            self.signals.callbacks.decided();
        }
        Ok(inserted)
    }

    /// The batch `id`, if there is one.
    pub async fn batch(&self, id: ApprovalId) -> StoreResult<Option<Batch>> {
        dispatch!(self, batch(id))
    }

    /// Whether `agent` already used this Idempotency-Key for a batch: such a batch is
    /// a replay, which the limits let through for free (as [`Store::has_idempotency_key`]
    /// for single requests).
    pub async fn has_batch_idempotency_key(&self, agent: &str, key: &str) -> StoreResult<bool> {
        dispatch!(self, has_batch_idempotency_key(agent, key))
    }

    /// The batch request `id` belongs to, if it is a batch item.
    pub async fn batch_of(&self, id: ApprovalId) -> StoreResult<Option<Batch>> {
        match dispatch!(self, batch_of(id))? {
            Some(batch) => self.batch(batch).await,
            None => Ok(None),
        }
    }
}
