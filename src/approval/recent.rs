//! Requests this process recently stored or saw final, so a click finds the request
//! without a database read, and a repeated or late click is answered from memory with
//! no durable write of its own.
//!
//! Why a cached copy is safe to act on:
//! - A final request never changes again, so its copy cannot go stale in any way a
//!   click cares about (status, who decided, when), on one replica or many.
//! - A pending copy is used only for what never changes (agent, code, context,
//!   requester, required approvals, channel, deadline): the write a click makes is
//!   conditional on the request still being pending in the store, and a click whose
//!   write finds it decided reads the store for the answer.
//!
//! Pending requests are kept only when their code and context are small
//! ([`MAX_PENDING_BYTES`]), so the cache's memory stays bounded by entries, not by
//! what agents send. The cache is bounded by two generations: when the young one
//! fills, the old one is dropped and the young one takes its place, so memory stays
//! below twice `capacity` entries and a request clicked again and again stays in.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use crate::model::{Approval, ApprovalId};

/// Entries per generation by default: about a day of decisions for a busy team.
pub const DEFAULT_CAPACITY: usize = 50_000;
/// Largest code plus context (bytes) of a pending request worth keeping.
pub const MAX_PENDING_BYTES: usize = 4096;

type Generation = HashMap<ApprovalId, Arc<Approval>>;

#[derive(Debug)]
pub struct Recent {
    capacity: usize,
    generations: Mutex<(Generation, Generation)>,
}

impl Default for Recent {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Recent {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            generations: Mutex::default(),
        }
    }

    /// Remembers a request: any final one, and a pending one whose code and context
    /// are small.
    pub fn remember(&self, approval: &Approval) {
        if !approval.status.is_final() {
            let context = approval.context.as_ref().map_or(0, |c| c.to_string().len());
            if approval.code.len() + context > MAX_PENDING_BYTES {
                return;
            }
        }
        self.put(approval.id, Arc::new(approval.clone()));
    }

    fn put(&self, id: ApprovalId, approval: Arc<Approval>) {
        let Ok(mut generations) = self.generations.lock() else {
            return;
        };
        let (young, old) = &mut *generations;
        // Final is final: a pending copy read before the decision never replaces it.
        let known_final = young
            .get(&id)
            .or_else(|| old.get(&id))
            .is_some_and(|seen| seen.status.is_final());
        if known_final && !approval.status.is_final() {
            return;
        }
        if young.len() >= self.capacity {
            *old = std::mem::take(young);
        }
        young.insert(id, approval);
    }

    /// The last state of `id` this process saw, if it saw it recently.
    pub fn get(&self, id: ApprovalId) -> Option<Arc<Approval>> {
        let found = {
            let generations = self.generations.lock().ok()?;
            let (young, old) = &*generations;
            if let Some(hit) = young.get(&id) {
                return Some(hit.clone());
            }
            old.get(&id).cloned()
        };
        // A hit in the old generation moves to the young one, so it survives the next
        // turnover.
        if let Some(hit) = &found {
            self.put(id, hit.clone());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{sample, Status};

    fn decided() -> Approval {
        Approval {
            status: Status::Approved,
            ..sample("ls")
        }
    }

    #[test]
    fn keeps_final_requests_and_small_pending_ones() {
        let recent = Recent::new(4);
        let pending = sample("ls");
        recent.remember(&pending);
        assert_eq!(
            recent.get(pending.id).map(|a| a.status),
            Some(Status::Pending)
        );
        let huge = sample(&"x".repeat(MAX_PENDING_BYTES + 1));
        recent.remember(&huge);
        assert!(
            recent.get(huge.id).is_none(),
            "large pending ones are not kept"
        );
        let done = Approval {
            status: Status::Approved,
            ..huge
        };
        recent.remember(&done);
        assert_eq!(
            recent.get(done.id).map(|a| a.status),
            Some(Status::Approved)
        );
        // A pending copy read before the decision arrives late: the final one stays.
        recent.remember(&sample_with_id(done.id));
        assert_eq!(
            recent.get(done.id).map(|a| a.status),
            Some(Status::Approved)
        );
    }

    fn sample_with_id(id: crate::model::ApprovalId) -> Approval {
        Approval { id, ..sample("ls") }
    }

    #[test]
    fn stays_bounded_and_keeps_what_is_clicked_again() {
        let recent = Recent::new(2);
        let hot = decided();
        recent.remember(&hot);
        for _ in 0..10 {
            recent.remember(&decided());
            assert!(
                recent.get(hot.id).is_some(),
                "a hit moves it to the young generation"
            );
        }
        let cold = decided();
        recent.remember(&cold);
        for _ in 0..4 {
            recent.remember(&decided());
        }
        assert!(recent.get(cold.id).is_none(), "dropped after two turnovers");
        let generations = recent.generations.lock().expect("lock");
        assert!(generations.0.len() <= 2 && generations.1.len() <= 2);
    }
}
