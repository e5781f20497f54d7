//! PostgreSQL: per-agent token buckets (`rate_buckets`, migration postgres/0004).
//!
//! A bucket's row holds its tokens as of `updated_at`; each statement first refills
//! it by the time since then at `per_minute / 60` a second (capped at `per_minute`),
//! from the database's `now()`, so replicas with skewed clocks agree. The upsert
//! takes the row's lock, so concurrent takes on several replicas apply one after the
//! other, each to the row the previous one committed.

use std::time::Duration;

use super::Postgres;
use crate::store::{StoreError, StoreResult};

/// The bucket's tokens refilled up to `now()` (`b` is the row; `$3` the capacity,
/// `$4` tokens per second). `GREATEST(0, …)`: a statement that waited for the row's
/// lock may have a `now()` (its transaction's start) older than the row's.
const REFILLED: &str = "LEAST($3, b.tokens
    + GREATEST(0, EXTRACT(EPOCH FROM now() - b.updated_at)::float8) * $4)";

impl Postgres {
    /// Takes `n` tokens from `agent`'s `rate_buckets` row (capacity `per_minute`, at
    /// least 1, refilled at `per_minute / 60` a second by the database's `now()`) in one
    /// upsert that locks the row; a missing row is a full bucket. `Ok(Err(wait))`:
    /// refused, nothing taken, and `wait` is an estimate from the statement's snapshot of
    /// how long until `n` are there (possibly zero; the caller rounds up to 1 s).
    /// `StoreError::ReadOnly` on a read-only store.
    pub async fn take_tokens(
        &self,
        agent: &str,
        n: u32,
        per_minute: u32,
    ) -> StoreResult<Result<(), Duration>> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let (n, capacity) = (f64::from(n), f64::from(per_minute.max(1)));
        let rate = capacity / 60.0;
        // The upsert takes the tokens when they are there (a missing row is a full
        // bucket) and returns a row only then. When it does not, the second branch
        // reads the bucket to say how long until they are; it reads the statement's
        // snapshot, so the wait is an estimate (the refusal itself is the upsert's).
        let answer: Option<(bool, f64)> = sqlx::query_as(&format!(
            "WITH took AS (
                 INSERT INTO rate_buckets AS b (agent, tokens, updated_at)
                 VALUES ($1, $3 - $2, now())
                 ON CONFLICT (agent) DO UPDATE
                     SET tokens = {REFILLED} - $2,
                         updated_at = GREATEST(b.updated_at, now())
                     WHERE {REFILLED} >= $2
                 RETURNING true AS took, 0::float8 AS wait
             )
             SELECT took, wait FROM took
             UNION ALL
             SELECT false, ($2 - {REFILLED}) / $4 FROM rate_buckets b
              WHERE b.agent = $1 AND NOT EXISTS (SELECT 1 FROM took)"
        ))
        .bind(agent)
        .bind(n)
        .bind(capacity)
        .bind(rate)
        .fetch_optional(&self.pool)
        .await?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(match answer {
            Some((true, _)) => Ok(()),
            // NaN or a stale snapshot's negative wait: the caller rounds up to 1 s.
            Some((false, wait)) => {
                Err(Duration::try_from_secs_f64(wait.max(0.0)).unwrap_or(Duration::from_secs(60)))
            }
            // Refused, and the bucket was not in our snapshot (another replica made
            // it meanwhile): the longest it can take to hold `n` again.
            None => Err(Duration::from_secs_f64(n / rate)),
        })
    }

    /// Gives `n` tokens back to `agent`'s bucket, refilled first and capped at
    /// `per_minute`. An agent without a row has a full bucket already: nothing changes.
    /// `StoreError::ReadOnly` on a read-only store.
    pub async fn refund_tokens(&self, agent: &str, n: u32, per_minute: u32) -> StoreResult<()> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let capacity = f64::from(per_minute.max(1));
        sqlx::query(&format!(
            "UPDATE rate_buckets b SET tokens = LEAST($3, {REFILLED} + $2),
                 updated_at = GREATEST(b.updated_at, now())
             WHERE b.agent = $1"
        ))
        .bind(agent)
        .bind(f64::from(n))
        .bind(capacity)
        .bind(capacity / 60.0)
        .execute(&self.pool)
        .await?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
