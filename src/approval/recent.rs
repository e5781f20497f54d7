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
//! Requests are kept only when their code and context are small ([`MAX_KEPT_BYTES`]),
//! and the cache is bounded by bytes, not entries: each generation holds at most
//! [`DEFAULT_BUDGET`] bytes of requests (as `footprint` counts them). When the young
//! one fills, the old one is dropped and the young one takes its place, so memory
//! stays below twice the budget whatever agents send, and a request clicked again
//! and again stays in. A request the cache no longer holds is read from the store.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use crate::model::{Approval, ApprovalId};

/// Bytes per generation by default. With requests of a few hundred bytes in memory
/// (a one-line command and its metadata) that is some 8,000 per generation, the
/// hours of clicks a team repeats; the two generations together stay under 8 MiB.
/// Sized by RSS at 100,000 pending (`cargo bench --bench core`, target 150 MB): an
/// entry bound of 50,000 per generation took it to 223 MB, 16 MiB to 177 MB, 4 MiB to
/// 119 MB (one run each). A click on a request the cache no longer holds reads it
/// from the store instead, which costs a duplicate click about 20 µs of CPU.
pub const DEFAULT_BUDGET: usize = 4 << 20;
/// Largest code plus context (bytes, as sent) of a request worth keeping, pending or
/// final: a larger one is read from the store when clicked.
pub const MAX_KEPT_BYTES: usize = 4096;
/// What an entry costs beyond the request's own fields: the map's slot (id, pointer
/// and control byte, at its load factor) and the `Arc`'s counts.
const ENTRY_OVERHEAD: usize = 64;

/// A kept request and its [`footprint`], counted once when it is remembered.
#[derive(Debug, Clone)]
struct Entry {
    approval: Arc<Approval>,
    bytes: usize,
}

type Generation = HashMap<ApprovalId, Entry>;

#[derive(Debug, Default)]
struct Generations {
    young: Generation,
    /// [`footprint`]s of what `young` holds.
    young_bytes: usize,
    old: Generation,
}

/// The cache: requests by id in two generations of at most `budget` bytes each. One
/// mutex, held only to look up or insert; nothing is read from the store under it.
#[derive(Debug)]
pub struct Recent {
    budget: usize,
    generations: Mutex<Generations>,
}

impl Default for Recent {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET)
    }
}

/// The bytes `approval` takes in the cache: the struct, its strings' contents, its
/// context (`context_len`, its JSON length, counted twice: a parsed JSON tree is
/// larger than its text), and [`ENTRY_OVERHEAD`]. An estimate: the allocator's
/// rounding is not counted, so real use runs somewhat above the budget (the RSS
/// figures at [`DEFAULT_BUDGET`] are measured, not derived from it).
fn footprint(approval: &Approval, context_len: usize) -> usize {
    let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    ENTRY_OVERHEAD
        + std::mem::size_of::<Approval>()
        + approval.agent.len()
        + approval.code.len()
        + approval.channel.len()
        + approval.reason.len()
        + optional(&approval.language)
        + optional(&approval.title)
        + optional(&approval.requester_slack_id)
        + optional(&approval.message_ts)
        + optional(&approval.decided_by)
        + 2 * context_len
}

fn context_len(approval: &Approval) -> usize {
    approval.context.as_ref().map_or(0, |c| c.to_string().len())
}

impl Recent {
    /// A cache of at most `budget` bytes per generation (at least one entry's worth).
    pub fn new(budget: usize) -> Self {
        Self {
            budget: budget.max(1),
            generations: Mutex::default(),
        }
    }

    /// Remembers a request whose code and context are small, pending or final.
    pub fn remember(&self, approval: &Approval) {
        let context = context_len(approval);
        if approval.code.len() + context > MAX_KEPT_BYTES {
            return;
        }
        let entry = Entry {
            approval: Arc::new(approval.clone()),
            bytes: footprint(approval, context),
        };
        self.put(approval.id, entry);
    }

    fn put(&self, id: ApprovalId, entry: Entry) {
        let Ok(mut generations) = self.generations.lock() else {
            return;
        };
        let Generations {
            young,
            young_bytes,
            old,
        } = &mut *generations;
        // Final is final: a pending copy read before the decision never replaces it.
        let known_final = young
            .get(&id)
            .or_else(|| old.get(&id))
            .is_some_and(|seen| seen.approval.status.is_final());
        if known_final && !entry.approval.status.is_final() {
            return;
        }
        let size = entry.bytes;
        if *young_bytes + size > self.budget && !young.is_empty() {
            *old = std::mem::take(young);
            *young_bytes = 0;
        }
        if let Some(replaced) = young.insert(id, entry) {
            *young_bytes = young_bytes.saturating_sub(replaced.bytes);
        }
        *young_bytes += size;
    }

    /// The last state of `id` this process saw, if it saw it recently.
    pub fn get(&self, id: ApprovalId) -> Option<Arc<Approval>> {
        let found = {
            let generations = self.generations.lock().ok()?;
            if let Some(hit) = generations.young.get(&id) {
                return Some(hit.approval.clone());
            }
            generations.old.get(&id).cloned()
        };
        // A hit in the old generation moves to the young one, so it survives the next
        // turnover.
        let hit = found?;
        let approval = hit.approval.clone();
        self.put(id, hit);
        Some(approval)
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
    fn keeps_small_requests_pending_or_final() {
        let recent = Recent::new(DEFAULT_BUDGET);
        let pending = sample("ls");
        recent.remember(&pending);
        assert_eq!(
            recent.get(pending.id).map(|a| a.status),
            Some(Status::Pending)
        );
        let huge = sample(&"x".repeat(MAX_KEPT_BYTES + 1));
        recent.remember(&huge);
        assert!(
            recent.get(huge.id).is_none(),
            "large pending ones are not kept"
        );
        let huge_done = Approval {
            status: Status::Approved,
            ..huge
        };
        recent.remember(&huge_done);
        assert!(
            recent.get(huge_done.id).is_none(),
            "nor large final ones: an agent's input must not grow the cache"
        );
        let done = decided();
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
        // Room for two entries per generation.
        let recent = Recent::new(2 * footprint(&decided(), context_len(&decided())));
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
        assert!(generations.young.len() <= 2 && generations.old.len() <= 2);
    }

    #[test]
    fn the_budget_is_kept_in_bytes_whatever_the_requests_weigh() {
        let budget = 64 * 1024;
        let recent = Recent::new(budget);
        let heavy = |n: usize| Approval {
            status: Status::Approved,
            ..sample(&"y".repeat(n))
        };
        for i in 0..2_000 {
            recent.remember(&heavy(i % MAX_KEPT_BYTES));
            let generations = recent.generations.lock().expect("lock");
            let held: usize = generations
                .young
                .values()
                .chain(generations.old.values())
                .map(|e| e.bytes)
                .sum();
            assert!(held <= 2 * budget, "{held} bytes held");
            assert_eq!(
                generations.young_bytes,
                generations
                    .young
                    .values()
                    .map(|e| footprint(&e.approval, context_len(&e.approval)))
                    .sum::<usize>()
            );
        }
    }

    #[test]
    fn a_request_remembered_again_is_counted_once() {
        let recent = Recent::new(DEFAULT_BUDGET);
        let one = decided();
        for _ in 0..5 {
            recent.remember(&one);
        }
        let generations = recent.generations.lock().expect("lock");
        assert_eq!(generations.young_bytes, footprint(&one, context_len(&one)));
    }
}
