//! Decision callbacks in the store: where a request's `callback_url` is kept, and the
//! delivery rows the callbacks worker (`crate::callbacks`) sends.
//!
//! A delivery row is written by [`on_decided_in`], which the one write that ends a
//! request (`requests::decide_in`) calls inside its own transaction: the decision and
//! the promise to tell the application about it commit together, so a crash between
//! the decision and the delivery only delays the delivery until the next start. The
//! body is rendered at that moment and stored, so every retry sends the same bytes under
//! the same `event_id` (the `webhook-id` receivers deduplicate by).
//!
//! `attempts` is raised when a row is claimed, before the receiver is called: a row
//! found at start-up with `attempts > 0` may already have been delivered once, which
//! the receiver's deduplication by `webhook-id` absorbs.
//!
//! On PostgreSQL several replicas' workers claim rows: a claim takes them
//! `FOR UPDATE SKIP LOCKED` and moves their `not_before` a lease ahead, so no two
//! replicas send the same attempt; a replica that dies mid-send leaves the row due
//! again when the lease runs out. A committed delivery row wakes the other replicas'
//! workers through `NOTIFY`. Queries: `sqlite/callbacks.rs`, `postgres/callbacks.rs`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::{dispatch, NewEvent, Store, StoreResult};
use crate::model::{rfc3339, ApprovalId};

/// The `type` of a single request's callback.
pub const APPROVAL_DECIDED: &str = "approval.decided";
/// The `type` of a batch's callback.
pub const BATCH_DECIDED: &str = "batch.decided";

/// Wakes the callbacks worker when a delivery row may have been committed. A spare
/// wake costs one indexed read; a missed one cannot happen (`Notify` keeps a permit).
#[derive(Debug, Default)]
pub struct CallbackSignal {
    notify: Notify,
}

impl CallbackSignal {
    /// A decision was committed: there may be a callback to send.
    pub fn decided(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next [`CallbackSignal::decided`] (or at once if one came since
    /// the last wait).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

/// A claimed delivery.
#[derive(Clone, PartialEq)]
pub struct Delivery {
    pub seq: i64,
    /// The `webhook-id`: one per event, the same on every retry.
    pub event_id: String,
    /// The agent whose secret signs it.
    pub agent: String,
    pub url: String,
    /// The exact bytes to send (JSON).
    pub body: String,
    /// The request whose audit trail records the attempts (a batch's first item).
    pub audit_id: ApprovalId,
    /// Claims so far, this one included.
    pub attempts: u32,
}

impl std::fmt::Debug for Delivery {
    // The body holds the decision, not a secret, but it can be long: leave it out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("seq", &self.seq)
            .field("event_id", &self.event_id)
            .field("agent", &self.agent)
            .field("url", &self.url)
            .field("audit_id", &self.audit_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The callback body: `{"type", "timestamp", "data"}` (see docs/api-contract.md).
pub(crate) fn payload(kind: &str, at: DateTime<Utc>, data: Value) -> String {
    json!({ "type": kind, "timestamp": rfc3339(at), "data": data }).to_string()
}

impl Store {
    /// What wakes the callbacks worker.
    pub fn callback_signal(&self) -> &CallbackSignal {
        &self.signals.callbacks
    }

    /// Claims up to `limit` deliveries due at `now`, oldest first, raising their
    /// `attempts`. The worker sends what it claimed to the end (each is then removed
    /// or given a later `not_before`) before it claims again, so nothing is sent twice
    /// at once; a delivery cut off by a crash is due again at the next start (SQLite)
    /// or when its lease runs out (PostgreSQL).
    pub async fn claim_callbacks(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Delivery>> {
        let mut claimed = dispatch!(self, claim_callbacks(now, limit))?;
        claimed.sort_by_key(|d| d.seq);
        Ok(claimed)
    }

    /// When the earliest delivery may be tried; `None` when there is none.
    pub async fn next_callback_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        dispatch!(self, next_callback_due())
    }

    /// The delivery is over (delivered, or given up on): removes it and appends
    /// `events` to its request's trail, in one transaction.
    pub async fn callback_done(
        &self,
        delivery: &Delivery,
        events: Vec<NewEvent>,
    ) -> StoreResult<()> {
        dispatch!(self, callback_done(delivery, events))
    }

    /// The attempt failed; the delivery is tried again at `not_before`, and `event`
    /// goes on its request's trail.
    pub async fn callback_retry(
        &self,
        delivery: &Delivery,
        not_before: DateTime<Utc>,
        event: NewEvent,
    ) -> StoreResult<()> {
        dispatch!(self, callback_retry(delivery, not_before, event))
    }
}
