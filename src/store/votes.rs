//! Approval votes (the two-person rule): counted and decided in one transaction
//! (SQLite: one job of the writer; PostgreSQL: with the request's row locked), so two
//! approvers clicking at once, on one replica or two, give exactly one decision.

use chrono::{DateTime, Utc};

use super::{dispatch, NewEvent, Store, StoreResult};
use crate::model::{Approval, ApprovalId, Decision};

/// What recording one approval did.
#[derive(Debug)]
pub enum Vote {
    /// The request is not pending (or does not exist): nothing was recorded.
    NotPending,
    /// This person had already approved; the voters so far, oldest first.
    Repeat(Vec<String>),
    /// Counted, more are needed; the voters so far, oldest first.
    Counted {
        /// Reviewer ids who approved so far, this one included, oldest first.
        voters: Vec<String>,
        /// The request's channel: the lane where a rewrite showing the progress was
        /// queued, if the message was posted already.
        channel: String,
    },
    /// This vote was the last one needed: the request is approved.
    Decided(Box<Approval>),
}

impl Store {
    /// Records `user`'s approval of `id`. `decide` builds the decision and its event
    /// from the full voter list when the vote completes the approval; `counted` builds
    /// the event for a vote that does not (whose outbox row then shows the progress).
    pub async fn record_approval(
        &self,
        id: ApprovalId,
        user: String,
        at: DateTime<Utc>,
        decide: impl FnOnce(&[String]) -> (Decision, NewEvent) + Send + 'static,
        counted: impl FnOnce(&[String], u32) -> NewEvent + Send + 'static,
    ) -> StoreResult<Vote> {
        let vote = dispatch!(self, record_approval(id, user, at, decide, counted))?;
        match &vote {
            Vote::Decided(approval) => {
                self.signals.outbox.mark(&approval.channel);
                self.signals.callbacks.decided();
            }
            Vote::Counted { channel, .. } => self.signals.outbox.mark(channel),
            _ => {}
        }
        Ok(vote)
    }

    /// Who has approved `id` so far, oldest first.
    pub async fn votes(&self, id: ApprovalId) -> StoreResult<Vec<String>> {
        dispatch!(self, votes(id))
    }
}
