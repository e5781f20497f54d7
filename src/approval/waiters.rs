//! Waiters: where callers (long-polling agents) park until their request is decided.
//!
//! Each waiter is a oneshot sender in a concurrent map keyed by request id. Several
//! callers may wait on one id (an agent that re-attached after a dropped connection
//! next to its old, still-open poll); all of them wake with the same final state.
//!
//! Waiters hold no truth: the store does. Callers subscribe *before* reading the
//! store and deciders write the store *before* resolving, so a decision can never fall
//! between a caller's read and its subscription (no lost wake-up).

use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::model::{Approval, ApprovalId};

/// Parked long-polls by request id; several per id are allowed.
#[derive(Debug, Default)]
pub struct Waiters {
    waiters: DashMap<ApprovalId, Vec<oneshot::Sender<Approval>>>,
}

impl Waiters {
    /// No waiters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parks a waiter for `id`. Waiters whose receiver is gone (a long-poll that timed
    /// out) are dropped here, so a request polled for hours does not accumulate them.
    pub fn subscribe(&self, id: ApprovalId) -> oneshot::Receiver<Approval> {
        let (tx, rx) = oneshot::channel();
        let mut entry = self.waiters.entry(id).or_default();
        entry.retain(|waiter| !waiter.is_closed());
        entry.push(tx);
        rx
    }

    /// Drops the entry for `id` if nobody is listening on it any more: a long-poll
    /// that timed out, or a read that found the request final or unknown. Without
    /// this, every such read would leave an entry behind for good.
    pub fn forget_if_idle(&self, id: ApprovalId) {
        self.waiters
            .remove_if(&id, |_, waiters| waiters.iter().all(|w| w.is_closed()));
    }

    /// Wakes every waiter of this request with its final state. Returns how many were
    /// still listening.
    pub fn resolve(&self, approval: &Approval) -> usize {
        let Some((_, waiters)) = self.waiters.remove(&approval.id) else {
            return 0;
        };
        waiters
            .into_iter()
            .filter_map(|waiter| waiter.send(approval.clone()).ok())
            .count()
    }

    /// Drops every waiter without an answer: on shutdown, open long-polls then answer
    /// with the current (pending) state so agents re-attach to the next process.
    pub fn release_all(&self) {
        self.waiters.clear();
    }

    /// Number of live waiters, for metrics and tests.
    pub fn waiting(&self) -> usize {
        self.waiters
            .iter()
            .map(|entry| entry.value().iter().filter(|w| !w.is_closed()).count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;
    fn approval(id: ApprovalId, status: Status) -> Approval {
        Approval {
            id,
            status,
            reason: "ok".into(),
            decided_by: Some("U1".into()),
            ..crate::model::sample("true")
        }
    }

    #[tokio::test]
    async fn every_waiter_on_an_id_gets_the_same_answer() {
        let waiters = Waiters::new();
        let id = ApprovalId::new();
        let other = ApprovalId::new();
        let a = waiters.subscribe(id);
        let b = waiters.subscribe(id);
        let mut c = waiters.subscribe(other);
        assert_eq!(waiters.resolve(&approval(id, Status::Approved)), 2);
        assert_eq!(a.await.expect("woken").status, Status::Approved);
        assert_eq!(b.await.expect("woken").status, Status::Approved);
        assert!(c.try_recv().is_err(), "another id's waiter is untouched");
        assert_eq!(
            waiters.resolve(&approval(id, Status::Denied)),
            0,
            "resolves once"
        );
    }

    #[tokio::test]
    async fn idle_entries_are_forgotten_live_ones_kept() {
        let waiters = Waiters::new();
        let (idle, live) = (ApprovalId::new(), ApprovalId::new());
        drop(waiters.subscribe(idle));
        let _listening = waiters.subscribe(live);
        waiters.forget_if_idle(idle);
        waiters.forget_if_idle(live);
        assert!(waiters.waiters.get(&idle).is_none());
        assert!(waiters.waiters.get(&live).is_some());
    }

    #[tokio::test]
    async fn abandoned_waiters_are_pruned_and_release_wakes_with_error() {
        let waiters = Waiters::new();
        let id = ApprovalId::new();
        for _ in 0..100 {
            drop(waiters.subscribe(id));
        }
        let live = waiters.subscribe(id);
        assert_eq!(waiters.waiting(), 1);
        assert_eq!(waiters.waiters.get(&id).map(|w| w.len()), Some(1));
        waiters.release_all();
        assert!(live.await.is_err());
    }
}
