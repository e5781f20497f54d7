//! Requests this process recently saw final, so a repeated or late click is answered
//! from memory: no database read, no durable write of its own.
//!
//! A final request never changes again, so a cached copy cannot go stale in any way a
//! click cares about (status, who decided, when), on one replica or many. The cache is
//! bounded by two generations: when the young one fills, the old one is dropped and the
//! young one takes its place, so memory stays below twice `capacity` entries and a
//! request clicked again and again stays in.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use crate::model::{Approval, ApprovalId};

/// Entries per generation by default: about a day of decisions for a busy team.
pub const DEFAULT_CAPACITY: usize = 50_000;

type Generation = HashMap<ApprovalId, Arc<Approval>>;

#[derive(Debug)]
pub struct RecentlyFinal {
    capacity: usize,
    generations: Mutex<(Generation, Generation)>,
}

impl Default for RecentlyFinal {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl RecentlyFinal {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            generations: Mutex::default(),
        }
    }

    /// Remembers a final request. Pending ones are ignored: they may still change.
    pub fn remember(&self, approval: &Approval) {
        if !approval.status.is_final() {
            return;
        }
        self.put(approval.id, Arc::new(approval.clone()));
    }

    fn put(&self, id: ApprovalId, approval: Arc<Approval>) {
        let Ok(mut generations) = self.generations.lock() else {
            return;
        };
        let (young, old) = &mut *generations;
        if young.len() >= self.capacity {
            *old = std::mem::take(young);
        }
        young.insert(id, approval);
    }

    /// The final state of `id`, if this process saw it recently.
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
    fn remembers_only_final_requests() {
        let recent = RecentlyFinal::new(4);
        let pending = sample("ls");
        recent.remember(&pending);
        assert!(recent.get(pending.id).is_none());
        let done = decided();
        recent.remember(&done);
        assert_eq!(
            recent.get(done.id).map(|a| a.status),
            Some(Status::Approved)
        );
    }

    #[test]
    fn stays_bounded_and_keeps_what_is_clicked_again() {
        let recent = RecentlyFinal::new(2);
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
