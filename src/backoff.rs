//! Backoff for every loop that tries again after an attempt that did no useful work:
//! Socket Mode reconnects, the readiness recheck, the outbox's post and rewrite
//! retries, store retries, user group lookups and the Web API client's own retries.
//!
//! One shape everywhere: the delay doubles from `first` up to `max`, and each delay
//! is shortened by a random part of up to `jitter` of itself, so that many instances
//! cut off by the same incident (several copies sharing one Slack app token, a Slack
//! outage) spread out instead of retrying in lockstep. `max` stays a true cap.
//!
//! [`Retrying`] carries the count of consecutive failures and says, for each one,
//! whether it deserves a log line: the first failure and every step up, then at the
//! cap only at the 2ⁿth failure. A loop stuck at the cap for a day logs a handful of
//! lines, not one per attempt.
//!
//! Why not a crate: `backoff` is unmaintained, and `backon` drives a retried closure
//! to completion, while these loops keep their count across state changes (a
//! connection that lived, a rewrite whose attempt count is stored in the database).
//! The arithmetic is ten lines; the random part comes from `rand`, already a
//! dependency.

use std::time::Duration;

use rand::Rng;

/// The default random shortening: up to a fifth of each delay.
pub const DEFAULT_JITTER: f64 = 0.2;

/// A backoff schedule (a value; the failure count lives in [`Retrying`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub first: Duration,
    /// The cap: no delay is longer.
    pub max: Duration,
    /// Fraction (0.0–1.0) of each delay that may be taken off at random.
    pub jitter: f64,
}

impl Backoff {
    /// Doubling from `first` to `max`, with [`DEFAULT_JITTER`]. A `max` below `first`
    /// is raised to it.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            jitter: DEFAULT_JITTER,
        }
    }

    /// The same schedule with another jitter fraction (clamped to 0.0–1.0).
    pub fn with_jitter(self, jitter: f64) -> Self {
        Self {
            jitter: jitter.clamp(0.0, 1.0),
            ..self
        }
    }

    /// The un-jittered delay after `failures` consecutive failures (0 → zero).
    pub fn step(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        // 2²⁰ × any sensible `first` is past any sensible cap.
        let doublings = (failures - 1).min(20);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The delay to wait after `failures` consecutive failures: [`step`](Self::step)
    /// less a random part of up to `jitter` of it.
    pub fn delay(&self, failures: u32) -> Duration {
        let step = self.step(failures);
        if self.jitter <= 0.0 || step.is_zero() {
            return step;
        }
        let cut = rand::thread_rng().gen_range(0.0..=self.jitter.min(1.0));
        step.mul_f64(1.0 - cut)
    }
}

/// One failure's verdict from [`Retrying::failed`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Consecutive failures so far, this one included (≥ 1).
    pub failures: u32,
    /// How long to wait before the next attempt.
    pub delay: Duration,
    /// Whether this failure deserves a log line (see the module doc).
    pub log: bool,
}

/// The state of one retry loop: a schedule and the consecutive failures.
#[derive(Debug, Clone)]
pub struct Retrying {
    schedule: Backoff,
    failures: u32,
}

impl Retrying {
    /// A loop with no failure yet: the next failure waits about `schedule.first`.
    pub fn new(schedule: Backoff) -> Self {
        Self {
            schedule,
            failures: 0,
        }
    }

    /// Counts a failed attempt and says how long to wait.
    pub fn failed(&mut self) -> Step {
        self.failures = self.failures.saturating_add(1);
        let n = self.failures;
        let grew = self.schedule.step(n) > self.schedule.step(n - 1);
        Step {
            failures: n,
            delay: self.schedule.delay(n),
            log: grew || n.is_power_of_two(),
        }
    }

    /// An attempt did useful work: the next failure starts from `first` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_first_up_to_the_cap() {
        let b = Backoff::new(100 * MS, 2000 * MS).with_jitter(0.0);
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), 100 * MS);
        assert_eq!(b.delay(2), 200 * MS);
        assert_eq!(b.delay(5), 1600 * MS);
        assert_eq!(b.delay(6), 2000 * MS);
        assert_eq!(b.delay(u32::MAX), 2000 * MS);
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_its_fraction() {
        let b = Backoff::new(1000 * MS, 8000 * MS).with_jitter(0.25);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = b.delay(1);
            assert!(d >= 750 * MS && d <= 1000 * MS, "{d:?}");
            let capped = b.delay(40);
            assert!(capped >= 6000 * MS && capped <= 8000 * MS, "{capped:?}");
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 10, "the delays are spread: {seen:?}");
    }

    #[test]
    fn a_cap_below_first_is_raised_and_jitter_is_clamped() {
        let b = Backoff::new(500 * MS, 10 * MS).with_jitter(7.0);
        assert_eq!(b.max, 500 * MS);
        assert_eq!(b.jitter, 1.0);
    }

    #[test]
    fn logs_each_step_then_rarely_at_the_cap() {
        let mut r = Retrying::new(Backoff::new(MS, 16 * MS));
        let logged: Vec<u32> = (0..1000)
            .map(|_| r.failed())
            .filter(|s| s.log)
            .map(|s| s.failures)
            .collect();
        // Steps 1, 2, 4, 8, 16 ms (failures 1–5), then powers of two at the cap.
        assert_eq!(logged, vec![1, 2, 3, 4, 5, 8, 16, 32, 64, 128, 256, 512]);
        r.succeeded();
        assert_eq!(r.failures(), 0);
        assert!(
            r.failed().log,
            "the first failure after a success is logged"
        );
    }

    /// A loop whose every attempt fails, in paused time: over ten virtual minutes
    /// it makes a few dozen attempts, not thousands, and logs far fewer lines.
    #[tokio::test(start_paused = true)]
    async fn a_loop_that_always_fails_slows_down_to_the_cap() {
        let mut r = Retrying::new(Backoff::new(100 * MS, Duration::from_secs(30)));
        let start = Instant::now();
        let (mut attempts, mut lines) = (0u32, 0u32);
        while start.elapsed() < Duration::from_secs(600) {
            attempts += 1;
            let step = r.failed();
            lines += u32::from(step.log);
            tokio::time::sleep(step.delay).await;
        }
        // 100 ms doubling reaches 30 s after ~9 failures (~51 s of waiting at most);
        // the rest of the ten minutes at 24–30 s a try.
        assert!((20..=40).contains(&attempts), "{attempts} attempts");
        assert!(lines <= 15, "{lines} log lines for {attempts} attempts");
    }

    /// Success resets: a loop that alternates one failure and one success never
    /// waits more than `first`.
    #[tokio::test(start_paused = true)]
    async fn success_resets_the_schedule() {
        let mut r = Retrying::new(Backoff::new(100 * MS, Duration::from_secs(30)));
        for _ in 0..50 {
            let step = r.failed();
            assert!(step.delay <= 100 * MS);
            tokio::time::sleep(step.delay).await;
            r.succeeded();
        }
    }
}
