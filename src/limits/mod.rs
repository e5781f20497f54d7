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
//!
//! # Across replicas
//! The buckets live where the requests do ([`rate::Buckets`]): in memory for SQLite
//! (one process), in the shared database for PostgreSQL, so N replicas admit an
//! agent's per-minute limit once, not N times. The pending cap and idempotency keys
//! are the store's, checked in the insert's transaction on either database.
//!
//! # Layout
//! - `bucket`: the in-memory token bucket ([`RateLimiter`]).
//! - `rate`: the choice between those buckets and the database's ([`Buckets`]),
//!   also the review page's sign-in limit, so that it too holds across replicas.
//! - here: [`SubmitLimits`], admitting a submission or a batch, refunding replays and
//!   wording the refusals.

mod bucket;
mod rate;

use std::sync::Arc;

pub use bucket::RateLimiter;
pub use rate::Buckets;

use crate::{error::ApiError, metrics::Metrics, store::Store};

/// Both limits, shared by every submission. The token bucket is checked here, before
/// anything is stored; the pending cap is checked by the store inside the insert's own
/// transaction (so concurrent submissions of one agent cannot all pass it, and no
/// lock is held across them), and reported back through [`SubmitLimits::over_cap`].
#[derive(Clone)]
pub struct SubmitLimits {
    inner: Arc<LimitsInner>,
}

struct LimitsInner {
    rate: Buckets,
    max_pending: u32,
    metrics: Metrics,
}

/// Permission to create one request (or one batch). Call [`Admission::replayed`] if
/// the insert found an existing request instead, so its tokens are given back.
pub struct Admission {
    limits: Option<SubmitLimits>,
    agent: String,
    /// Tokens taken: 1 for a request, one per action for a batch.
    tokens: u32,
}

impl Admission {
    /// Admission for a submission that takes no token (a replay of a known key).
    fn free(agent: &str) -> Self {
        Self {
            limits: None,
            agent: agent.to_owned(),
            tokens: 0,
        }
    }

    /// The submission created nothing after all (an idempotent replay): refund its
    /// tokens, to the database's bucket when that is where they came from.
    pub async fn replayed(self) {
        if let Some(limits) = &self.limits {
            limits.inner.rate.refund(&self.agent, self.tokens).await;
        }
    }
}

impl SubmitLimits {
    /// `per_minute` submissions a minute per agent (`GREENLIGHT_RATE_LIMIT_PER_MINUTE`)
    /// and at most `max_pending` pending requests each
    /// (`GREENLIGHT_MAX_PENDING_PER_AGENT`). The buckets are `store`'s when replicas
    /// may share it (PostgreSQL), else this process's.
    pub fn new(per_minute: u32, max_pending: u32, metrics: Metrics, store: &Store) -> Self {
        Self::with_buckets(Buckets::for_store(store, per_minute), max_pending, metrics)
    }

    fn with_buckets(rate: Buckets, max_pending: u32, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(LimitsInner {
                rate,
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
    /// passes for free. Errors: 429 `rate_limited`; 500 when the store cannot say.
    pub async fn admit(
        &self,
        store: &Store,
        agent: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Admission, ApiError> {
        if let Some(key) = idempotency_key {
            if store.has_idempotency_key(agent, key).await? {
                return Ok(Admission::free(agent));
            }
        }
        self.admit_n(agent, 1).await
    }

    /// Admits a batch of `actions` submissions at once: each action is a request and
    /// takes its own token, so a batch never gets around the per-minute limit. A batch
    /// carrying an `Idempotency-Key` the agent already used for a batch is a replay and
    /// passes for free, as a replayed submission does. A batch larger than a whole
    /// minute's allowance, or than the pending cap, can never pass: 422, not a 429
    /// whose retry could never succeed.
    pub async fn admit_batch(
        &self,
        store: &Store,
        agent: &str,
        idempotency_key: Option<&str>,
        actions: u32,
    ) -> Result<Admission, ApiError> {
        if let Some(key) = idempotency_key {
            if store.has_batch_idempotency_key(agent, key).await? {
                return Ok(Admission::free(agent));
            }
        }
        let per_minute = self.inner.rate.per_minute();
        if actions > per_minute {
            return Err(ApiError::Invalid(format!(
                "actions: a batch of {actions} is {actions} submissions, more than agent {agent} may make in a minute ({per_minute})"
            )));
        }
        let max_pending = self.inner.max_pending;
        if actions > max_pending {
            return Err(ApiError::Invalid(format!(
                "actions: a batch of {actions} is {actions} pending requests, more than agent {agent} may have pending at once ({max_pending})"
            )));
        }
        self.admit_n(agent, actions).await
    }

    async fn admit_n(&self, agent: &str, tokens: u32) -> Result<Admission, ApiError> {
        if let Err(wait) = self.inner.rate.take(agent, tokens).await? {
            self.inner.metrics.refused(agent, "rate_limited");
            let per_minute = self.inner.rate.per_minute();
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
    pub async fn over_cap(&self, admission: Admission, pending: u64) -> ApiError {
        let agent = self.refused_over_cap(admission).await;
        ApiError::TooManyPending(format!(
            "agent {agent} already has {pending} pending requests (the limit is {}); wait for some to be decided or cancel them",
            self.inner.max_pending
        ))
    }

    /// The store refused a batch of `actions`: with the agent's `pending` requests
    /// they would pass its cap. Gives the tokens back and says so with 429, in the
    /// batch's numbers.
    pub async fn batch_over_cap(
        &self,
        admission: Admission,
        pending: u64,
        actions: u32,
    ) -> ApiError {
        let agent = self.refused_over_cap(admission).await;
        let max = self.inner.max_pending;
        ApiError::TooManyPending(format!(
            "agent {agent} has {pending} pending requests and may have at most {max}: this batch would add {actions}, making {}; wait for some to be decided or cancel them",
            pending + u64::from(actions)
        ))
    }

    /// Refunds a submission the pending cap refused and counts the refusal; the agent.
    async fn refused_over_cap(&self, admission: Admission) -> String {
        let agent = admission.agent.clone();
        admission.replayed().await;
        self.inner.metrics.refused(&agent, "too_many_pending");
        agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(per_minute: u32, max_pending: u32) -> SubmitLimits {
        SubmitLimits::with_buckets(Buckets::local(per_minute), max_pending, Metrics::new())
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_a_token_per_action() {
        let limits = local(10, 100);
        let first = limits.admit_n("ci", 4).await.expect("4 of 10");
        let _second = limits.admit_n("ci", 4).await.expect("8 of 10");
        assert!(matches!(
            limits.admit_n("ci", 4).await,
            Err(ApiError::RateLimited { .. })
        ));
        // A replayed batch gives its tokens back.
        first.replayed().await;
        let _third = limits.admit_n("ci", 4).await.expect("refunded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_keeps_the_message_and_rounds_retry_after_up() {
        let limits = local(3, 100);
        for _ in 0..3 {
            let _ = limits.admit_n("ci", 1).await.expect("within the minute");
        }
        let Err(ApiError::RateLimited {
            message,
            retry_after_secs,
        }) = limits.admit_n("ci", 1).await
        else {
            panic!("the fourth in a minute is refused");
        };
        assert_eq!(
            message,
            "agent ci may submit at most 3 requests a minute; retry later"
        );
        assert_eq!(retry_after_secs, 20, "3 a minute is one per 20 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_over_the_cap_is_worded_in_the_batchs_numbers() {
        let limits = local(10, 5);
        let admission = limits.admit_n("ci", 4).await.expect("4 of 10");
        let ApiError::TooManyPending(message) = limits.batch_over_cap(admission, 3, 4).await else {
            panic!("too_many_pending");
        };
        assert_eq!(
            message,
            "agent ci has 3 pending requests and may have at most 5: this batch would add 4, making 7; wait for some to be decided or cancel them"
        );
        // Its tokens came back.
        let _ = limits.admit_n("ci", 10).await.expect("a full bucket again");
    }
}
