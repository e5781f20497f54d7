//! Approval requests and their audit trail: the inserting and deciding writes, and the
//! reads the API and the workers make. Queries: `sqlite/requests.rs`,
//! `postgres/requests.rs`.

use chrono::{DateTime, Utc};

use super::{dispatch, Event, NewEvent, Store, StoreResult};
use crate::model::{Approval, ApprovalId, Decision, NewApproval, Status};

/// What inserting a request did.
#[derive(Debug)]
pub enum Inserted {
    /// A new request.
    Created(Approval),
    /// The agent already sent this Idempotency-Key with the same body.
    Existing(Approval),
    /// The agent already sent this Idempotency-Key with a different body.
    KeyConflict,
    /// The agent already has `pending` requests, at or over its cap: nothing stored.
    TooManyPending {
        /// The agent's pending requests, counted in the insert's own transaction.
        pending: u64,
    },
}

/// A request to store, as the domain routed it.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The new request's id, a fresh UUID; used only if the insert creates the
    /// request ([`Inserted::Created`]).
    pub id: ApprovalId,
    /// What the agent asked for, validated; for a request sent for review its
    /// `required_approvals` and `timeout_secs` are the ones the matching rule set.
    pub new: NewApproval,
    /// Where its message goes (the rule's channel, or an automatic rule's FYI channel).
    /// Empty when Slack is not configured: then no outbox row is ever queued for it.
    pub channel: String,
    /// When it was submitted: the time of its `submitted` event, and the moment a
    /// standing grant must be live at to approve it.
    pub created_at: DateTime<Utc>,
    /// `created_at` plus its `timeout_secs`: still pending then, the deadline worker
    /// expires it. Escalation may move it later.
    pub expires_at: DateTime<Utc>,
    /// Further events of the submission itself (how it was routed), written in the
    /// same transaction so a stored request never lacks them.
    pub also: Vec<NewEvent>,
    /// What happens to it: posted for review, or decided at once by a rule.
    pub fate: Fate,
    /// The agent's cap on pending requests (`GREENLIGHT_MAX_PENDING_PER_AGENT`),
    /// checked in the insert's own transaction, so concurrent submissions cannot all
    /// pass it. An idempotent replay is never refused by it.
    pub max_pending: Option<u32>,
    /// For a request sent for review: what a standing grant must match to approve it
    /// at once instead (looked up in the insert's own transaction; see `grants`).
    pub grant: Option<super::grants::GrantProbe>,
    /// When its first reminder or escalation is due (`store::nudges`), if ever.
    pub first_nudge: Option<DateTime<Utc>>,
}

/// How a stored request is handled from its first commit on.
#[derive(Debug, Clone)]
pub enum Fate {
    /// Posted to its channel for a human decision.
    Review,
    /// Decided by a policy rule in the insert's own transaction; `notify` posts the
    /// outcome to the channel as a message without buttons.
    Decided {
        /// The final status (approved or denied), reason, decider (`greenlight`, or the
        /// grant's maker) and time.
        decision: Decision,
        /// The decision's audit event (`auto_decided`, `grant_used`).
        event: NewEvent,
        /// Queue an `fyi` outbox row (skipped when the channel is empty).
        notify: bool,
    },
}

impl Store {
    /// Records a new request with its `submitted` event (and routing events, and the
    /// automatic decision or the outbox row that will post it) in one transaction, or
    /// finds the request an earlier call with the same Idempotency-Key created.
    pub async fn insert(&self, submission: Submission) -> StoreResult<Inserted> {
        let (expires_at, channel) = (submission.expires_at, submission.channel.clone());
        let first_nudge = submission.first_nudge;
        let inserted = dispatch!(self, insert(submission))?;
        if let Inserted::Created(approval) = &inserted {
            if approval.status == Status::Pending {
                self.signals.deadlines.inserted(expires_at);
                if let Some(at) = first_nudge {
                    self.signals.nudges.inserted(at);
                }
            }
            // A post, or an automatic decision's FYI (a spare mark costs one look).
            self.signals.outbox.mark(&channel);
            if approval.status.is_final() {
                self.signals.callbacks.decided();
            }
        }
        Ok(inserted)
    }

    /// Request `id` as it stands; `None` when there is none (never stored, or pruned).
    /// One lookup by primary key.
    pub async fn get(&self, id: ApprovalId) -> StoreResult<Option<Approval>> {
        dispatch!(self, get(id))
    }

    /// Ends a request if, and only if, it is still pending. `Some` means this call
    /// decided it; `None` means something else got there first (or the id is unknown).
    pub async fn decide(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
    ) -> StoreResult<Option<Approval>> {
        let decided = dispatch!(self, decide(id, decision, event))?;
        if let Some(approval) = &decided {
            self.signals.outbox.mark(&approval.channel);
            self.signals.callbacks.decided();
        }
        Ok(decided)
    }

    /// Appends one event to a request's audit trail, durably, before returning.
    pub async fn append_event(&self, id: ApprovalId, event: NewEvent) -> StoreResult<()> {
        dispatch!(self, append_event(id, event))
    }

    /// Queues an event for the next write without waiting for it, merging repeats
    /// (see [`super::sqlite::writer::Writer::defer_event`]). For evidence of clicks
    /// that changed nothing.
    pub fn defer_event(&self, id: ApprovalId, event: NewEvent) {
        match &self.backend {
            super::Backend::Sqlite(db) => db.defer_event(id, event),
            super::Backend::Postgres(db) => db.defer_event(id, event),
        }
    }

    /// Counts an event anyone can cause without credentials (a click whose Slack
    /// signature failed) in a tally held in memory: written as one entry with
    /// `detail.count` at most once per [`super::deferred::HOLD`] (60 s) per request and
    /// distinct detail, or when the request's trail is read, or at close. A flood of
    /// them costs no write each; see [`super::deferred`] for the bound. Lost if the
    /// process dies first.
    pub fn hold_event(&self, id: ApprovalId, event: NewEvent) {
        match &self.backend {
            super::Backend::Sqlite(db) => db.hold_event(id, event),
            super::Backend::Postgres(db) => db.hold_event(id, event),
        }
    }

    /// A request's audit trail, oldest first, including clicks whose entries were
    /// waiting for the next write and the request's held tallies.
    pub async fn events(&self, id: ApprovalId) -> StoreResult<Vec<Event>> {
        dispatch!(self, events(id))
    }

    /// Whether the request's trail already has an event of `kind` whose `detail` has
    /// `field` equal to `value` (a Deny click's trigger id, an upload).
    pub async fn has_event(
        &self,
        id: ApprovalId,
        kind: &str,
        field: Option<(&str, &str)>,
    ) -> StoreResult<bool> {
        dispatch!(self, has_event(id, kind, field))
    }

    /// Requests, newest first, optionally of one status and of one agent (`None`: every
    /// agent's, for the review page).
    pub async fn list(
        &self,
        agent: Option<&str>,
        status: Option<Status>,
        limit: u32,
    ) -> StoreResult<Vec<Approval>> {
        dispatch!(self, list(agent, status, limit))
    }

    /// Whether `agent` already used this Idempotency-Key: such a submission is a replay,
    /// which the limits let through for free.
    pub async fn has_idempotency_key(&self, agent: &str, key: &str) -> StoreResult<bool> {
        dispatch!(self, has_idempotency_key(agent, key))
    }

    /// Pending requests of one agent (`Some`) or of all agents (`None`), for the
    /// per-agent cap and the pending gauge.
    pub async fn count_pending(&self, agent: impl Into<Option<&str>>) -> StoreResult<u64> {
        let agent: Option<&str> = agent.into();
        dispatch!(self, count_pending(agent))
    }

    /// The earliest deadline of any pending request: when the deadline worker must
    /// look next. One index probe.
    pub async fn next_deadline(&self) -> StoreResult<Option<DateTime<Utc>>> {
        dispatch!(self, next_deadline())
    }

    /// Pending requests whose deadline is at or before `now`, earliest first, at most
    /// `limit`.
    pub async fn due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Approval>> {
        dispatch!(self, due(now, limit))
    }
}
