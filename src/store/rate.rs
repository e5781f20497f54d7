//! Per-agent token buckets kept in the database, for replicas that share it
//! (PostgreSQL): every replica takes from and refunds to the same row, so an agent's
//! per-minute limit holds across all of them. Queries: `postgres/rate.rs` (table
//! `rate_buckets`, migration postgres/0004).
//!
//! SQLite has no twin: one process serves a SQLite database, and its in-memory
//! buckets (`limits::RateLimiter`) cost no write. [`Store::shared_buckets`] says
//! which case a store is.

use std::time::Duration;

use super::{postgres::Postgres, Backend, Store, StoreResult};

/// The database's token buckets (PostgreSQL only). Cheap to clone: the store's pool.
#[derive(Clone)]
pub struct SharedBuckets {
    db: Postgres,
}

impl std::fmt::Debug for SharedBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedBuckets(postgres)")
    }
}

impl Store {
    /// The database's token buckets when replicas may share this store (PostgreSQL);
    /// `None` for SQLite, where one process keeps them in memory.
    pub fn shared_buckets(&self) -> Option<SharedBuckets> {
        match &self.backend {
            Backend::Postgres(db) => Some(SharedBuckets { db: db.clone() }),
            Backend::Sqlite(_) => None,
        }
    }
}

impl SharedBuckets {
    /// Takes `n` tokens from `agent`'s bucket (capacity `per_minute`, refilled at
    /// `per_minute` a minute by the database's clock), or none: `Ok(Err(wait))` says
    /// how long until `n` are there. One statement, one round trip; concurrent takes
    /// on any replica queue on the row's lock, so together they never take more
    /// than the bucket holds. `n` must not exceed `per_minute` (it would never fit).
    pub async fn take(
        &self,
        agent: &str,
        n: u32,
        per_minute: u32,
    ) -> StoreResult<Result<(), Duration>> {
        self.db.take_tokens(agent, n, per_minute).await
    }

    /// Gives back `n` tokens taken for a submission that created nothing (an
    /// idempotent replay, a refusal by the pending cap), never beyond `per_minute`.
    pub async fn refund(&self, agent: &str, n: u32, per_minute: u32) -> StoreResult<()> {
        self.db.refund_tokens(agent, n, per_minute).await
    }
}
