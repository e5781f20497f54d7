//! The Slack outbox: messages to post or rewrite, kept in the store so that a crash
//! or restart resumes them instead of losing them.
//!
//! A row is written in the same transaction as the state change it reports (a new
//! request, a vote, a decision), so the message and the state cannot disagree for
//! longer than the outbox takes to drain. Rows are delivered per channel in `seq`
//! order by the outbox worker (`slack::outbox`). A rewrite renders the request's state
//! at the time it is sent, so one queued rewrite per message is enough: a second is
//! merged into the first while that one has not been tried.
//!
//! `attempts` is raised when a row is claimed, before Slack is called: a row found with
//! `attempts > 0` at start-up may already have reached Slack.
//!
//! `channel_trouble` keeps the last failure posting to each channel, so a request that
//! expires unposted can say why no reviewer saw it, even after a restart.

use chrono::{DateTime, Utc};

use super::{dispatch, NewEvent, Store, StoreResult};
use crate::model::{Approval, ApprovalId};

/// What an outbox row asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Post the pending message with its buttons.
    Post,
    /// Rewrite the posted message from the request's current state.
    Update,
    /// Post an automatic decision's outcome, without buttons.
    Fyi,
    /// A reminder in the message's thread, naming who has not voted.
    Remind,
    /// Post the request, with its buttons, to the escalation channel (the row's).
    Escalate,
    /// Rewrite the escalation message from the request's current state.
    EscalationUpdate,
}

impl Kind {
    /// The stored `kind`: `post`, `update`, `fyi`, `remind`, `escalate` or
    /// `escalation_update`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Post => "post",
            Kind::Update => "update",
            Kind::Fyi => "fyi",
            Kind::Remind => "remind",
            Kind::Escalate => "escalate",
            Kind::EscalationUpdate => "escalation_update",
        }
    }

    pub(crate) fn parse(raw: &str) -> Option<Self> {
        [
            Kind::Post,
            Kind::Update,
            Kind::Fyi,
            Kind::Remind,
            Kind::Escalate,
            Kind::EscalationUpdate,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// A claimed outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The row's id, increasing as rows are queued: a channel's rows are sent in this
    /// order, and `done`, [`Store::outbox_done`] and [`Store::outbox_retry`] name it.
    pub seq: i64,
    /// The request the message is about.
    pub approval_id: ApprovalId,
    /// The lane it is sent in: the request's channel, or for [`Kind::Escalate`] the
    /// escalation channel ([`Kind::EscalationUpdate`] rows wait in the request's lane).
    pub channel: String,
    /// What to send.
    pub kind: Kind,
    /// Claims so far, this one included: more than 1 means an earlier attempt may
    /// have reached Slack.
    pub attempts: u32,
    /// The request as it stood when the row was claimed (read in the claim's own
    /// transaction); `None` if it is gone (pruned).
    pub approval: Option<Approval>,
}

/// The last failure posting to a channel, as a reviewer or agent would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    /// Slack's error code or a short stable name (`ratelimited`, `http_error`, …).
    pub code: String,
    /// The failure in words.
    pub text: String,
}

impl Store {
    /// Every channel with rows waiting: what the outbox worker resumes at start-up.
    pub async fn outbox_channels(&self) -> StoreResult<Vec<String>> {
        dispatch!(self, outbox_channels())
    }

    /// Removes the rows `done` (delivered since the last claim: one write for the lot)
    /// and claims up to `limit` of `channel`'s rows that are due at `now`, oldest
    /// first, raising their `attempts`. A crash before the next claim only means those
    /// rows are delivered again (a rewrite that changes nothing). On PostgreSQL the
    /// claim also takes the channel's lease: while another replica's lease on the
    /// channel is live, nothing is claimed.
    pub async fn claim_outbox(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
        done: Vec<i64>,
    ) -> StoreResult<Vec<Row>> {
        dispatch!(self, claim_outbox(channel, now, limit, done))
    }

    /// Rows just delivered (`done`, emptied here): on PostgreSQL removed at once, one
    /// write for the lot, so a replica stopped or killed before its next claim does
    /// not leave them to be sent again by the next claimer (on any replica). On SQLite
    /// they wait for the lane's next claim, whose own write removes them (the lane's
    /// one process resumes them itself).
    /// On PostgreSQL the removal is fenced: it fails with `StoreError::LeaseLost` once
    /// another replica took `channel`'s lane over.
    pub async fn outbox_delivered(&self, channel: &str, done: &mut Vec<i64>) -> StoreResult<()> {
        match &self.backend {
            super::Backend::Sqlite(_) => Ok(()),
            super::Backend::Postgres(db) => {
                if !done.is_empty() {
                    db.outbox_delete(channel, done).await?;
                    done.clear();
                }
                Ok(())
            }
        }
    }

    /// Renews this replica's lease on `channel`'s lane while the lane works (see
    /// `crate::leases::hold`): `Ok(false)` when another replica holds it now. On SQLite
    /// the one process owns every lane, so it is always `true`.
    pub async fn renew_outbox_lane(&self, channel: &str) -> StoreResult<bool> {
        match &self.backend {
            super::Backend::Sqlite(_) => Ok(true),
            super::Backend::Postgres(db) => db.renew_outbox_lane(channel).await,
        }
    }

    /// When `channel`'s earliest waiting row may be tried again (on PostgreSQL, not
    /// before another replica's lease on the channel lapses); `None` when it has no
    /// rows left at all.
    pub async fn next_outbox_try(&self, channel: &str) -> StoreResult<Option<DateTime<Utc>>> {
        dispatch!(self, next_outbox_try(channel))
    }

    /// A post (or FYI) reached Slack: remembers where the message is, with its
    /// `posted` event, and removes the row (on PostgreSQL only while the lane's lease is
    /// still this replica's, else `StoreError::LeaseLost`; so are `outbox_done` and
    /// `outbox_retry`). A request decided while its post was in
    /// flight gets a rewrite queued, so the message shows the outcome.
    pub async fn posted(&self, row: &Row, channel: String, ts: String) -> StoreResult<Approval> {
        let approval = dispatch!(self, posted(row, channel, ts))?;
        self.signals.outbox.mark(&approval.channel);
        Ok(approval)
    }

    /// The row is done with (delivered, or never deliverable): removes it, recording
    /// `event` on the request's trail in the same transaction.
    pub async fn outbox_done(
        &self,
        seq: i64,
        audit: Option<(ApprovalId, NewEvent)>,
    ) -> StoreResult<()> {
        dispatch!(self, outbox_done(seq, audit))
    }

    /// The row failed and is worth trying again at `not_before`; `event` goes on the
    /// request's trail.
    pub async fn outbox_retry(
        &self,
        seq: i64,
        not_before: DateTime<Utc>,
        audit: (ApprovalId, NewEvent),
    ) -> StoreResult<()> {
        dispatch!(self, outbox_retry(seq, not_before, audit))
    }

    /// Remembers the latest failure posting to `channel`.
    pub async fn record_trouble(&self, channel: &str, trouble: Trouble) -> StoreResult<()> {
        dispatch!(self, record_trouble(channel, trouble))
    }

    /// The last failure posting to `channel` at or after `since`, if any.
    pub async fn trouble_since(
        &self,
        channel: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Trouble>> {
        dispatch!(self, trouble_since(channel, since))
    }
}
