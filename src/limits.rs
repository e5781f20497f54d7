//! Submission limits: a token bucket per agent and a cap on each agent's pending
//! requests.
//!
//! Both protect the reviewers more than the server: a looping agent that submits a
//! request a second would bury the Slack channel long before it hurt SQLite.
//!
//! Idempotent replays are free. An agent that retries a submission after a dropped
//! connection (as the clients do, with the same `Idempotency-Key`) gets its original
//! request back even when its bucket is empty or it is at its pending cap: the replay
//! creates nothing, so refusing it would only make the agent's recovery fail.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::time::Instant;

use crate::{error::ApiError, metrics::Metrics, store::Store};

/// A token bucket: `capacity` tokens, refilled continuously at `per_minute` a minute.
/// A full bucket lets an agent burst a minute's worth at once, then holds it to the
/// steady rate.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Per-agent token buckets. Time comes from `tokio::time`, so tests pause it.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: DashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: DashMap::new(),
        }
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

/// Both limits, shared by every submission. The token bucket is checked here, before
/// anything is stored; the pending cap is checked by the store inside the insert's own
/// transaction (so concurrent submissions of one agent cannot all pass it, and no
/// lock is held across them), and reported back through [`SubmitLimits::over_cap`].
#[derive(Clone)]
pub struct SubmitLimits {
    inner: Arc<LimitsInner>,
}

struct LimitsInner {
    rate: RateLimiter,
    max_pending: u32,
    metrics: Metrics,
}

/// Permission to create one request. Call [`Admission::replayed`] if the insert
/// found an existing request instead, so its token is given back.
pub struct Admission {
    limits: Option<SubmitLimits>,
    agent: String,
    /// Tokens taken: 1 for a request, one per action for a batch.
    tokens: u32,
}

impl Admission {
    /// The submission was an idempotent replay after all: refund its tokens.
    pub fn replayed(self) {
        if let Some(limits) = &self.limits {
            limits.inner.rate.refund(&self.agent, self.tokens);
        }
    }
}

impl SubmitLimits {
    pub fn new(per_minute: u32, max_pending: u32, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(LimitsInner {
                rate: RateLimiter::new(per_minute),
                max_pending,
                metrics,
            }),
        }
    }

    /// `GREENLIGHT_MAX_PENDING_PER_AGENT`, for the store to enforce at insert.
    pub fn max_pending(&self) -> u32 {
        self.inner.max_pending
    }

    /// Admits a submission by `agent` past its token bucket, or refuses it with 429. A
    /// submission carrying an `Idempotency-Key` the agent already used is a replay and
    /// passes for free.
    pub async fn admit(
        &self,
        store: &Store,
        agent: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Admission, ApiError> {
        if let Some(key) = idempotency_key {
            if store.has_idempotency_key(agent, key).await? {
                return Ok(Admission {
                    limits: None,
                    agent: agent.to_owned(),
                    tokens: 0,
                });
            }
        }
        self.admit_n(agent, 1)
    }

    /// Admits a batch of `actions` submissions at once: each action is a request and
    /// takes its own token, so a batch never gets around the per-minute limit. A batch
    /// larger than a whole minute's allowance can never pass: 422, not a 429 whose
    /// retry could never succeed. (A replayed batch is refunded once the store finds
    /// its key.)
    pub fn admit_batch(&self, agent: &str, actions: u32) -> Result<Admission, ApiError> {
        let per_minute = self.inner.rate.per_minute;
        if actions > per_minute {
            return Err(ApiError::Invalid(format!(
                "actions: a batch of {actions} is {actions} submissions, more than agent {agent} may make in a minute ({per_minute})"
            )));
        }
        self.admit_n(agent, actions)
    }

    fn admit_n(&self, agent: &str, tokens: u32) -> Result<Admission, ApiError> {
        if let Err(wait) = self.inner.rate.try_acquire_n(agent, tokens) {
            self.inner.metrics.refused(agent, "rate_limited");
            let per_minute = self.inner.rate.per_minute;
            return Err(ApiError::RateLimited {
                message: format!(
                    "agent {agent} may submit at most {per_minute} requests a minute; retry later"
                ),
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        Ok(Admission {
            limits: Some(self.clone()),
            agent: agent.to_owned(),
            tokens,
        })
    }

    /// The store refused the submission: the agent already has `pending` requests.
    /// Gives the token back and says so with 429.
    pub fn over_cap(&self, admission: Admission, pending: u64) -> ApiError {
        let agent = admission.agent.clone();
        admission.replayed();
        self.inner.metrics.refused(&agent, "too_many_pending");
        ApiError::TooManyPending(format!(
            "agent {agent} already has {pending} pending requests (the limit is {}); wait for some to be decided or cancel them",
            self.inner.max_pending
        ))
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
    async fn a_batch_takes_a_token_per_action() {
        let limits = SubmitLimits::new(10, 100, Metrics::new());
        let first = limits.admit_batch("ci", 4).expect("4 of 10");
        limits.admit_batch("ci", 4).expect("8 of 10");
        assert!(matches!(
            limits.admit_batch("ci", 4),
            Err(ApiError::RateLimited { .. })
        ));
        // A replayed batch gives its tokens back.
        first.replayed();
        limits.admit_batch("ci", 4).expect("refunded");
        // More actions than a minute allows can never pass.
        assert!(matches!(
            limits.admit_batch("other", 11),
            Err(ApiError::Invalid(_))
        ));
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
