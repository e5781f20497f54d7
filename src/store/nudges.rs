//! Reminders and escalation in the store: when each pending request is next due for
//! one (`approvals.next_nudge_at`, indexed for pending rows), the conditional write
//! that fires one, and where the escalation message lives.
//!
//! Like deadlines, nudges are driven by the store: the nudge worker asks for the
//! earliest `next_nudge_at` (one index probe), sleeps until then, and fires what is
//! due. Firing is conditional on `next_nudge_at` still being the value the worker read,
//! so a nudge fires once however many looks race; a restart simply finds what is due.
//! Slack posts go through the outbox (kinds `remind`, `escalate`,
//! `escalation_update`) in the same transaction.
//!
//! On PostgreSQL the fire is the same conditional `UPDATE` (it takes the row lock), so
//! it happens once across replicas too; a fire on one replica wakes the others'
//! outbox workers through the outbox's own `NOTIFY`. Queries: `sqlite/nudges.rs`,
//! `postgres/nudges.rs`.

use chrono::{DateTime, Utc};

use super::{dispatch, NewEvent, Store, StoreResult};
use crate::model::{Approval, ApprovalId};

/// A pending request due for a nudge, with its nudge columns.
#[derive(Debug, Clone)]
pub struct Nudgeable {
    /// The request as read with its nudge columns.
    pub approval: Approval,
    /// The `next_nudge_at` read: the fire is conditional on it.
    pub due_at: String,
    /// Reminders fired so far.
    pub reminders: u32,
    /// Whether it was escalated already (`escalated_at` is set).
    pub escalated: bool,
}

/// What one nudge does, decided by the domain from the policy.
#[derive(Debug, Clone)]
pub struct Fire {
    /// Queue a reminder in the message's thread.
    pub remind: bool,
    /// The new reminder count.
    pub reminders: u32,
    /// Escalate now: post to this channel (if any), move the deadline by this much.
    pub escalate: Option<(Option<String>, chrono::Duration)>,
    /// The new `next_nudge_at`; `None`: no nudge is due any more.
    pub next: Option<DateTime<Utc>>,
    /// Appended to the trail in the fire's transaction (`reminded`,
    /// `reminder_skipped`, `escalated`).
    pub events: Vec<NewEvent>,
}

/// Where a request's escalation message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// When it was escalated (`escalated_at`, RFC 3339, UTC).
    pub at: String,
    /// The escalation channel; `None` when there was none to post to (the rule names
    /// no `escalate_channel`, or Slack is not configured).
    pub channel: Option<String>,
    /// Slack's `ts` of the escalation message, a string like `1712345678.000100`;
    /// `None` until it is posted.
    pub ts: Option<String>,
}

impl Store {
    /// The earliest `next_nudge_at` of any pending request.
    pub async fn next_nudge(&self) -> StoreResult<Option<DateTime<Utc>>> {
        dispatch!(self, next_nudge())
    }

    /// Pending requests whose nudge is due at `now`, earliest first, at most `limit`.
    pub async fn due_nudges(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Nudgeable>> {
        dispatch!(self, due_nudges(now, limit))
    }

    /// Fires one nudge if the request is still pending and still due at `due_at` (so
    /// it fires once): records it, queues its Slack posts, moves the deadline on
    /// escalation. Returns the request as it now stands, `None` if nothing fired.
    pub async fn fire_nudge(
        &self,
        id: ApprovalId,
        due_at: String,
        fire: Fire,
    ) -> StoreResult<Option<Approval>> {
        let fired = dispatch!(self, fire_nudge(id, due_at, fire))?;
        if let Some(approval) = &fired {
            self.signals.outbox.mark(&approval.channel);
            if let Some(escalation) = self.escalation(approval.id).await? {
                if let Some(channel) = escalation.channel {
                    self.signals.outbox.mark(&channel);
                }
            }
        }
        Ok(fired)
    }

    /// Whether and where request `id` was escalated.
    pub async fn escalation(&self, id: ApprovalId) -> StoreResult<Option<Escalation>> {
        dispatch!(self, escalation(id))
    }

    /// The escalation message was posted at `ts` in `channel`: remembered (so votes
    /// and the decision rewrite it), audited, and its outbox row removed. The post
    /// shows the request as it was rendered, before the call; when the request was
    /// decided meanwhile, or has votes (one may have been counted meanwhile; a
    /// rewrite that changes nothing costs one `chat.update`), its rewrite is queued at
    /// once, in the request's own lane, behind any rewrite queued there already.
    pub async fn escalation_posted(
        &self,
        seq: i64,
        id: ApprovalId,
        channel: String,
        ts: String,
    ) -> StoreResult<()> {
        if let Some(lane) = dispatch!(self, escalation_posted(seq, id, channel, ts))? {
            self.signals.outbox.mark(&lane);
        }
        Ok(())
    }
}
