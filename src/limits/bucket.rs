//! The in-memory token bucket: one per agent (or one for all sign-ins), in this
//! process only. Enough where there is one process (SQLite); replicas sharing a
//! PostgreSQL database keep their agents' buckets in it instead (`store::rate`).

use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// A token bucket: `capacity` tokens, refilled continuously at `per_minute` a minute.
/// A full bucket lets an agent burst a minute's worth at once, then holds it to the
/// steady rate.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-key token buckets (an agent's name, or one key for every sign-in). Time comes
/// from `tokio::time`, so tests pause it.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: DashMap<String, Bucket>,
}

impl RateLimiter {
    /// Buckets of `per_minute` tokens (at least 1), each refilled at `per_minute` a
    /// minute.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: DashMap::new(),
        }
    }

    /// Tokens a bucket holds when full, and takes a minute to refill.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn capacity(&self) -> f64 {
        f64::from(self.per_minute)
    }

    fn per_second(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }

    /// Takes one token from `agent`'s bucket, or says how long until one is there.
    pub fn try_acquire(&self, agent: &str) -> Result<(), Duration> {
        self.try_acquire_n(agent, 1)
    }

    /// Takes `n` tokens at once (a batch of `n` actions is `n` submissions), or none
    /// and says how long until `n` are there. `n` above the capacity never fits; the
    /// caller refuses such a batch before asking.
    pub fn try_acquire_n(&self, agent: &str, n: u32) -> Result<(), Duration> {
        let n = f64::from(n);
        let now = Instant::now();
        let capacity = self.capacity();
        let rate = self.per_second();
        let mut bucket = self.buckets.entry(agent.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= n {
            bucket.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - bucket.tokens) / rate))
        }
    }

    /// Gives back `n` tokens taken for a submission that turned out to create nothing.
    pub fn refund(&self, agent: &str, n: u32) {
        let capacity = self.capacity();
        if let Some(mut bucket) = self.buckets.get_mut(agent) {
            bucket.tokens = (bucket.tokens + f64::from(n)).min(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_a_minute_then_holds_to_the_rate() {
        let limiter = RateLimiter::new(60);
        for _ in 0..60 {
            assert!(limiter.try_acquire("ci").is_ok());
        }
        let wait = limiter.try_acquire("ci").expect_err("bucket is empty");
        assert_eq!(wait, Duration::from_secs(1));
        // Another agent has its own bucket.
        assert!(limiter.try_acquire("other").is_ok());

        tokio::time::advance(Duration::from_millis(500)).await;
        let wait = limiter.try_acquire("ci").expect_err("half a token");
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.try_acquire("ci").is_ok(), "one token a second");
        assert!(limiter.try_acquire("ci").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn refills_only_up_to_capacity() {
        let limiter = RateLimiter::new(3);
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert!(limiter.try_acquire("ci").is_ok());
        }
        let wait = limiter.try_acquire("ci").expect_err("capacity is 3");
        assert_eq!(wait, Duration::from_secs(20), "3 a minute is one per 20 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_gives_the_token_back_but_not_beyond_capacity() {
        let limiter = RateLimiter::new(2);
        limiter.try_acquire("ci").expect("first");
        limiter.try_acquire("ci").expect("second");
        assert!(limiter.try_acquire("ci").is_err());
        limiter.refund("ci", 1);
        assert!(limiter.try_acquire("ci").is_ok());
        limiter.refund("ci", 1);
        limiter.refund("ci", 1);
        limiter.refund("ci", 1);
        limiter.try_acquire("ci").expect("1");
        limiter.try_acquire("ci").expect("2");
        assert!(
            limiter.try_acquire("ci").is_err(),
            "refunds cap at capacity"
        );
    }
}
