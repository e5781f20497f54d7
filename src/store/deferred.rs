//! Audit entries written later, in bulk, merged: the queue both backends keep for
//! evidence that changes nothing, so that a flood of it costs no write of its own.
//!
//! Two kinds of entry wait here:
//! - **Merged** ([`DeferredEvents::push`]): repeated and late clicks from verified
//!   reviewers. Identical ones (same request, kind, actor and detail) become one entry
//!   with `"count"` in the detail, and all of them go with the next write (SQLite: the
//!   next batch; PostgreSQL: within 500 ms).
//! - **Held** ([`DeferredEvents::hold`]): entries anyone can cause without credentials
//!   (a click whose Slack signature failed, naming a request id seen in a message).
//!   Merging per write is not enough for those: a sustained flood would still add an
//!   entry every half second to a trail nothing may shorten. A held entry is counted
//!   in memory and written once [`HOLD`] after the first of its kind arrived (or when
//!   the request's trail is read, so the reader sees every attempt so far, or at
//!   close). However long a flood lasts, each request gains at most one entry per
//!   distinct detail per [`HOLD`] per process, plus one per read of its trail by an
//!   authenticated reader; and at most [`MAX_HELD`] tallies are in memory at once.
//!
//! Both are lost if the process dies before writing them: losing them loses no
//! decision. Either is dropped when written if its request no longer exists (retention
//! pruned it meanwhile), so that no entry outlives its request.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::NewEvent;
use crate::model::ApprovalId;

/// How long a held entry is counted in memory before it is written: at most one entry
/// per request and distinct detail per this long (60 s), whatever the rate of attempts.
pub const HOLD: Duration = Duration::from_secs(60);

/// Most held tallies in memory at once (10 000); beyond it new ones are dropped
/// (and logged) rather than let a flood naming many requests grow memory.
pub const MAX_HELD: usize = 10_000;

/// Request, kind, actor and the detail as JSON text.
type Key = (ApprovalId, &'static str, Option<String>, String);

/// One held tally: the entry, how many times it happened, since when.
struct Held {
    event: NewEvent,
    count: u64,
    since: Instant,
}

/// What [`DeferredEvents::hold`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// The first of its kind since the last write: a tally was started, due in
    /// [`HOLD`]; the caller should make sure something writes it then.
    Started,
    /// Added to a tally already held.
    Counted,
    /// Dropped: [`MAX_HELD`] tallies are already held.
    Full,
}

/// Which held tallies [`DeferredEvents::take`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Those held for [`HOLD`] or longer (every regular write).
    Due,
    /// All of them (closing).
    All,
}

/// The queue: entries to write with the next write, and tallies held until due.
#[derive(Default)]
pub struct DeferredEvents {
    merged: HashMap<Key, (NewEvent, u64)>,
    held: HashMap<Key, Held>,
}

fn key(id: ApprovalId, event: &NewEvent) -> Key {
    (
        id,
        event.kind,
        event.actor.clone(),
        event.detail.to_string(),
    )
}

impl DeferredEvents {
    /// Queues `event` for the next write, merged with identical ones.
    pub fn push(&mut self, id: ApprovalId, event: NewEvent) {
        self.merged.entry(key(id, &event)).or_insert((event, 0)).1 += 1;
    }

    /// Counts `event` in a tally held until [`HOLD`] after `now` (or after the start
    /// of the tally it joins).
    pub fn hold(&mut self, id: ApprovalId, event: NewEvent, now: Instant) -> Holding {
        let key = key(id, &event);
        if let Some(held) = self.held.get_mut(&key) {
            held.count += 1;
            return Holding::Counted;
        }
        if self.held.len() >= MAX_HELD {
            return Holding::Full;
        }
        self.held.insert(
            key,
            Held {
                event,
                count: 1,
                since: now,
            },
        );
        Holding::Started
    }

    /// Moves request `id`'s held tallies to the next write, due or not: its trail is
    /// about to be read.
    pub fn release(&mut self, id: ApprovalId) {
        let keys: Vec<Key> = self.held.keys().filter(|k| k.0 == id).cloned().collect();
        for key in keys {
            if let Some(held) = self.held.remove(&key) {
                self.merged.entry(key).or_insert((held.event, 0)).1 += held.count;
            }
        }
    }

    /// Whether any tally is held.
    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// Takes what is to be written now: every merged entry, and the held tallies
    /// `release` names (as of `now`). An entry that stands for more than one
    /// occurrence carries `"count"` in its detail.
    pub fn take(&mut self, release: Release, now: Instant) -> Vec<(ApprovalId, NewEvent)> {
        let due: Vec<Key> = self
            .held
            .iter()
            .filter(|(_, h)| release == Release::All || now.duration_since(h.since) >= HOLD)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Some(held) = self.held.remove(&key) {
                self.merged.entry(key).or_insert((held.event, 0)).1 += held.count;
            }
        }
        self.merged
            .drain()
            .map(|((id, ..), (mut event, count))| {
                if count > 1 {
                    if let Value::Object(detail) = &mut event.detail {
                        detail.insert("count".into(), count.into());
                    }
                }
                (id, event)
            })
            .collect()
    }
}

/// Logs a held entry dropped because [`MAX_HELD`] tallies are held.
pub fn log_dropped(id: ApprovalId, event: &NewEvent) {
    tracing::warn!(request_id = %id, kind = event.kind, "audit tally dropped: too many held at once");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected() -> NewEvent {
        NewEvent::new(
            "click_rejected",
            None,
            serde_json::json!({"why": "bad_signature"}),
        )
    }

    fn counts(taken: &[(ApprovalId, NewEvent)]) -> Vec<u64> {
        taken
            .iter()
            .map(|(_, e)| e.detail.get("count").and_then(Value::as_u64).unwrap_or(1))
            .collect()
    }

    #[test]
    fn a_held_tally_waits_for_its_hold_then_is_one_entry_with_the_count() {
        let mut queue = DeferredEvents::default();
        let (id, start) = (ApprovalId::new(), Instant::now());
        assert_eq!(queue.hold(id, rejected(), start), Holding::Started);
        for _ in 1..1000 {
            assert_eq!(queue.hold(id, rejected(), start), Holding::Counted);
        }
        assert!(queue.take(Release::Due, start + HOLD / 2).is_empty());
        assert_eq!(counts(&queue.take(Release::Due, start + HOLD)), [1000]);
        assert!(!queue.holds_any());
    }

    #[test]
    fn a_sustained_flood_writes_one_entry_per_hold() {
        let mut queue = DeferredEvents::default();
        let (id, start) = (ApprovalId::new(), Instant::now());
        let (mut entries, mut total) = (0, 0);
        // Ten attempts a second for ten holds, with a write every 100 ms.
        for tick in 0..(10 * HOLD.as_millis() / 100) as u32 {
            let now = start + Duration::from_millis(100) * tick;
            queue.hold(id, rejected(), now);
            let taken = queue.take(Release::Due, now);
            entries += taken.len();
            total += counts(&taken).iter().sum::<u64>();
        }
        let rest = queue.take(Release::All, start + HOLD * 20);
        entries += rest.len();
        total += counts(&rest).iter().sum::<u64>();
        assert_eq!(total, 10 * HOLD.as_millis() as u64 / 100);
        assert!(entries <= 11, "{entries} entries");
    }

    #[test]
    fn release_moves_one_requests_tallies_to_the_next_write() {
        let mut queue = DeferredEvents::default();
        let (read, other, now) = (ApprovalId::new(), ApprovalId::new(), Instant::now());
        queue.hold(read, rejected(), now);
        queue.hold(read, rejected(), now);
        queue.hold(other, rejected(), now);
        queue.release(read);
        let taken = queue.take(Release::Due, now);
        assert_eq!(taken.len(), 1);
        assert_eq!((taken[0].0, counts(&taken)), (read, vec![2]));
        assert!(queue.holds_any());
    }

    #[test]
    fn held_tallies_are_capped() {
        let mut queue = DeferredEvents::default();
        let now = Instant::now();
        for _ in 0..MAX_HELD {
            assert_eq!(
                queue.hold(ApprovalId::new(), rejected(), now),
                Holding::Started
            );
        }
        assert_eq!(
            queue.hold(ApprovalId::new(), rejected(), now),
            Holding::Full
        );
        assert_eq!(queue.take(Release::All, now).len(), MAX_HELD);
    }

    #[test]
    fn merged_entries_go_with_the_next_write() {
        let mut queue = DeferredEvents::default();
        let id = ApprovalId::new();
        let late = NewEvent::new("click_ignored", Some("U1"), serde_json::json!({}));
        queue.push(id, late.clone());
        queue.push(id, late);
        assert_eq!(counts(&queue.take(Release::Due, Instant::now())), [2]);
    }
}
