//! The deadline worker: one task that expires requests at their deadline, instead of a
//! timer per request.
//!
//! It asks the store for the earliest pending `expires_at`, sleeps until then, and
//! expires everything due in one batch (each expiry is conditional, so a request
//! decided meanwhile is left alone and none is expired twice). A request stored with an
//! earlier deadline than the one it sleeps toward wakes it ([`DeadlineSignal`]).
//! Deadlines that passed while the service was down are simply due at the first look,
//! so start-up needs no recovery step of its own, and memory does not grow with the
//! number of pending requests.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::{ApprovalService, ServiceError};
use crate::{
    backoff::{Backoff, Retrying},
    store::signals::DeadlineSignal,
};

/// Requests expired per write batch; more due ones are taken in the next round at once.
pub const BATCH: u32 = 256;
/// Backoff after a failed look (a busy or full disk): a deadline must not be lost to
/// one failure, and a failing store must not be hammered.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where the worker gets deadlines and how it expires them: the approval service in
/// production, an in-memory set in tests.
pub trait DeadlineSource: Send + Sync {
    /// The earliest deadline of any pending request.
    fn next_deadline(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, ServiceError>>;
    /// Expires up to [`BATCH`] requests due at `now`; returns how many were due.
    fn expire_due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, ServiceError>>;
}

impl DeadlineSource for ApprovalService {
    fn next_deadline(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, ServiceError>> {
        Box::pin(async move { Ok(self.store().next_deadline().await?) })
    }

    fn expire_due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, ServiceError>> {
        Box::pin(self.expire_due(now, BATCH))
    }
}

/// What "now" is for the worker. The system clock in production; in tests, a wall
/// time that advances with tokio's (pausable) clock, so paused time drives deadlines.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// `Utc::now()`: production.
    System,
    /// Tests: `wall` plus the tokio time elapsed since `at` (see [`Clock::tokio_from`]).
    Tokio {
        /// The wall time at `at`.
        wall: DateTime<Utc>,
        /// The tokio instant that `wall` corresponds to.
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `wall` now and advances with `tokio::time`.
    pub fn tokio_from(wall: DateTime<Utc>) -> Self {
        Clock::Tokio {
            wall,
            at: tokio::time::Instant::now(),
        }
    }

    /// The current wall time, UTC, by this clock.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { wall, at } => {
                let elapsed = chrono::Duration::from_std(at.elapsed()).unwrap_or_default();
                *wall + elapsed
            }
        }
    }
}

/// Runs until the task is dropped.
pub async fn run(source: &dyn DeadlineSource, signal: &DeadlineSignal, clock: Clock) {
    let mut retrying = Retrying::new(Backoff::new(RETRY_FIRST, RETRY_MAX));
    loop {
        match look(source, signal, clock).await {
            Ok(Some(sleep)) => {
                retrying.succeeded();
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = signal.earlier() => {}
                }
            }
            // More were due than one batch takes: go on at once.
            Ok(None) => retrying.succeeded(),
            Err(error) => {
                let step = retrying.failed();
                if step.log {
                    tracing::error!(%error, failed_attempts = step.failures, retry_in_ms = step.delay.as_millis() as u64, "the deadline worker could not expire requests; retrying");
                }
                tokio::time::sleep(step.delay).await;
            }
        }
    }
}

/// One round: expire what is due, then say how long to sleep (`None`: more are due
/// now). Arms the signal before reading the next deadline, so a request inserted
/// between the read and the sleep still wakes the worker.
async fn look(
    source: &dyn DeadlineSource,
    signal: &DeadlineSignal,
    clock: Clock,
) -> Result<Option<Duration>, ServiceError> {
    let expired = source.expire_due(clock.now()).await?;
    if expired >= BATCH as usize {
        return Ok(None);
    }
    signal.arm(None);
    let next = source.next_deadline().await?;
    signal.arm(next);
    Ok(Some(match next {
        // Nothing pending: sleep until woken (a day stands for "forever").
        None => Duration::from_secs(86_400),
        Some(at) => (at - clock.now()).to_std().unwrap_or(Duration::ZERO),
    }))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// Pending deadlines in memory, and the order they were expired in.
    #[derive(Default)]
    struct Fake {
        pending: Mutex<BTreeSet<(DateTime<Utc>, u32)>>,
        expired: Mutex<Vec<(u32, DateTime<Utc>)>>,
        signal: DeadlineSignal,
    }

    impl Fake {
        fn insert(&self, at: DateTime<Utc>, id: u32) {
            self.pending.lock().expect("lock").insert((at, id));
            self.signal.inserted(at);
        }

        fn expired_ids(&self) -> Vec<u32> {
            self.expired
                .lock()
                .expect("lock")
                .iter()
                .map(|e| e.0)
                .collect()
        }
    }

    impl DeadlineSource for Fake {
        fn next_deadline(&self) -> BoxFuture<'_, Result<Option<DateTime<Utc>>, ServiceError>> {
            let next = self.pending.lock().expect("lock").first().map(|e| e.0);
            Box::pin(async move { Ok(next) })
        }

        fn expire_due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, ServiceError>> {
            let mut pending = self.pending.lock().expect("lock");
            let due: Vec<_> = pending
                .iter()
                .take_while(|e| e.0 <= now)
                .take(BATCH as usize)
                .copied()
                .collect();
            for entry in &due {
                pending.remove(entry);
                self.expired.lock().expect("lock").push((entry.1, now));
            }
            Box::pin(async move { Ok(due.len()) })
        }
    }

    fn start(fake: &Arc<Fake>, clock: Clock) -> tokio::task::JoinHandle<()> {
        let fake = fake.clone();
        tokio::spawn(async move { run(&*fake, &fake.signal, clock).await })
    }

    /// Lets the worker run until it sleeps again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_inserted_while_it_sleeps_wakes_it() {
        let fake = Arc::new(Fake::default());
        let clock = Clock::tokio_from(Utc::now());
        let t0 = clock.now();
        fake.insert(t0 + secs(60), 1);
        let worker = start(&fake, clock);
        settle().await;
        fake.insert(t0 + secs(5), 2);
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(fake.expired_ids(), [2], "the later one waits");
        let (_, at) = fake.expired.lock().expect("lock")[0];
        assert!(
            at >= t0 + secs(5) && at < t0 + secs(6),
            "expired on time: {at}"
        );
        tokio::time::sleep(Duration::from_secs(55)).await;
        settle().await;
        assert_eq!(fake.expired_ids(), [2, 1]);
        worker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn many_deadlines_in_the_same_millisecond_all_expire_once() {
        let fake = Arc::new(Fake::default());
        let clock = Clock::tokio_from(Utc::now());
        let at = clock.now() + secs(10);
        let count = BATCH * 3 + 7;
        for id in 0..count {
            fake.insert(at, id);
        }
        let worker = start(&fake, clock);
        tokio::time::sleep(Duration::from_secs(10)).await;
        settle().await;
        let mut ids = fake.expired_ids();
        assert_eq!(ids.len(), count as usize);
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), count as usize, "none twice");
        worker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_that_passed_while_down_expires_at_the_first_look() {
        let fake = Arc::new(Fake::default());
        let clock = Clock::tokio_from(Utc::now());
        fake.insert(clock.now() - secs(3600), 7);
        fake.insert(clock.now() + secs(3600), 8);
        let worker = start(&fake, clock);
        settle().await;
        assert_eq!(fake.expired_ids(), [7]);
        worker.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_pending_it_sleeps_until_a_request_arrives() {
        let fake = Arc::new(Fake::default());
        let clock = Clock::tokio_from(Utc::now());
        let worker = start(&fake, clock);
        settle().await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        fake.insert(clock.now() + secs(2), 3);
        tokio::time::sleep(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(fake.expired_ids(), [3]);
        worker.abort();
    }
}
