//! Where the agents' token buckets live, behind one type so the admission code does
//! not branch on the database: in this process (SQLite, which one process serves)
//! or in the database every replica shares (PostgreSQL, `store::rate`).

use std::time::Duration;

use super::bucket::RateLimiter;
use crate::store::{rate::SharedBuckets, Store, StoreResult};

/// The per-agent buckets, `per_minute` tokens each, refilled at `per_minute` a minute.
/// A bucket's key is an agent's name, or a name no agent can have (agent names are
/// letters, digits, `-`, `_` and `.`) for a limit of another kind.
#[derive(Debug)]
pub enum Buckets {
    /// In memory, refilled by `tokio::time` (which tests pause).
    Local(RateLimiter),
    /// Rows of the shared database, refilled by its clock.
    Shared {
        /// The `rate_buckets` rows, one per key, through the store's pool.
        buckets: SharedBuckets,
        /// Each bucket's capacity and refill a minute (at least 1).
        per_minute: u32,
    },
}

impl Buckets {
    /// The database's buckets when `store` may be shared by replicas, else buckets in
    /// memory.
    pub fn for_store(store: &Store, per_minute: u32) -> Self {
        let per_minute = per_minute.max(1);
        match store.shared_buckets() {
            Some(buckets) => Self::Shared {
                buckets,
                per_minute,
            },
            None => Self::Local(RateLimiter::new(per_minute)),
        }
    }

    /// Buckets in memory only (unit tests, and anything without a store).
    #[cfg(test)]
    pub(super) fn local(per_minute: u32) -> Self {
        Self::Local(RateLimiter::new(per_minute))
    }

    pub(super) fn per_minute(&self) -> u32 {
        match self {
            Self::Local(limiter) => limiter.per_minute(),
            Self::Shared { per_minute, .. } => *per_minute,
        }
    }

    /// Takes `n` tokens from `agent`'s bucket, or none and says how long until `n` are
    /// there. Errors: the shared database could not be asked (the caller refuses the
    /// submission: no token, no admission).
    pub async fn take(&self, agent: &str, n: u32) -> StoreResult<Result<(), Duration>> {
        match self {
            Self::Local(limiter) => Ok(limiter.try_acquire_n(agent, n)),
            Self::Shared {
                buckets,
                per_minute,
            } => buckets.take(agent, n, *per_minute).await,
        }
    }

    /// Gives `n` tokens back to `agent`'s bucket. A refund the database could not take
    /// is logged and dropped: the agent waits a little longer, nothing else is wrong.
    pub(super) async fn refund(&self, agent: &str, n: u32) {
        match self {
            Self::Local(limiter) => limiter.refund(agent, n),
            Self::Shared {
                buckets,
                per_minute,
            } => {
                if let Err(error) = buckets.refund(agent, n, *per_minute).await {
                    tracing::warn!(agent, tokens = n, %error, "could not refund rate-limit tokens");
                }
            }
        }
    }
}
