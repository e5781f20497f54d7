//! How the store tells its workers that there is new work, without a task or a timer
//! per request.
//!
//! The store is the truth; these are only hints that make workers look sooner. A
//! worker that missed a hint still finds the work at its next look (the deadline
//! worker at the earliest `expires_at` it knows, the outbox at start-up and after each
//! lane). Both signals coalesce: a thousand inserts wake a worker once.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicI64, Ordering},
        Mutex,
    },
};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// Wakes the deadline worker when a request is stored that expires before the moment
/// the worker is sleeping until.
#[derive(Debug)]
pub struct DeadlineSignal {
    /// The worker's wake-up time in Unix milliseconds; `i64::MAX` while it has none.
    armed_for: AtomicI64,
    notify: Notify,
}

impl Default for DeadlineSignal {
    fn default() -> Self {
        Self {
            armed_for: AtomicI64::new(i64::MAX),
            notify: Notify::new(),
        }
    }
}

impl DeadlineSignal {
    /// A request expiring at `at` was committed: wake the worker if that is sooner
    /// than it planned to look. Later deadlines cost one atomic load.
    pub fn inserted(&self, at: DateTime<Utc>) {
        let at = at.timestamp_millis();
        if self.armed_for.fetch_min(at, Ordering::AcqRel) > at {
            self.notify.notify_one();
        }
    }

    /// The worker will look again at `at` (`None`: only when woken).
    pub fn arm(&self, at: Option<DateTime<Utc>>) {
        let at = at.map_or(i64::MAX, |at| at.timestamp_millis());
        self.armed_for.store(at, Ordering::Release);
    }

    /// Resolves when an earlier deadline than the armed one was inserted.
    pub async fn earlier(&self) {
        self.notify.notified().await;
    }
}

/// Wakes the outbox worker with the channels that have new messages to send.
#[derive(Debug, Default)]
pub struct OutboxSignal {
    dirty: Mutex<HashSet<String>>,
    notify: Notify,
}

impl OutboxSignal {
    /// `channel` has new outbox rows.
    pub fn mark(&self, channel: &str) {
        let fresh = match self.dirty.lock() {
            Ok(mut dirty) => dirty.insert(channel.to_owned()),
            Err(_) => true,
        };
        if fresh {
            self.notify.notify_one();
        }
    }

    /// Waits until some channel was marked, then takes the marked set.
    pub async fn changed(&self) -> HashSet<String> {
        loop {
            let taken = self
                .dirty
                .lock()
                .map(|mut dirty| std::mem::take(&mut *dirty))
                .unwrap_or_default();
            if !taken.is_empty() {
                return taken;
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_an_earlier_deadline_wakes_the_worker() {
        let signal = DeadlineSignal::default();
        let now = Utc::now();
        signal.arm(Some(now));
        signal.inserted(now + chrono::Duration::seconds(5));
        let woken = tokio::time::timeout(std::time::Duration::from_millis(20), signal.earlier());
        assert!(woken.await.is_err(), "a later deadline does not wake it");
        signal.inserted(now - chrono::Duration::seconds(5));
        signal.earlier().await;
    }

    #[tokio::test]
    async fn marks_coalesce_into_one_set() {
        let signal = OutboxSignal::default();
        signal.mark("C1");
        signal.mark("C2");
        signal.mark("C1");
        let taken = signal.changed().await;
        assert_eq!(taken.len(), 2);
        assert!(signal.dirty.lock().expect("lock").is_empty());
    }
}
