//! Retention: decided requests older than the configured age are pruned, with their
//! audit events, so the database does not grow without bound. Off by default: an
//! approval service's history is evidence, and deleting it is the operator's choice.

use std::time::Duration;

use chrono::Utc;

use super::Store;

/// How often the pruner wakes. Retention is counted in days; hourly is plenty.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The pruning worker: prunes once now and then every hour, until dropped.
pub async fn run(store: Store, keep_for: Duration) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        prune_once(&store, keep_for).await;
    }
}

/// One pruning pass: how many requests went. A failure is logged and counts 0 (the
/// next tick tries again), as does a `keep_for` too long for `chrono::Duration`.
pub async fn prune_once(store: &Store, keep_for: Duration) -> u64 {
    let Ok(age) = chrono::Duration::from_std(keep_for) else {
        return 0;
    };
    match store.prune_decided_before(Utc::now() - age).await {
        Ok(pruned) => {
            if pruned > 0 {
                tracing::info!(pruned, "pruned decided requests past retention");
            }
            pruned
        }
        Err(error) => {
            tracing::error!(%error, "pruning failed");
            0
        }
    }
}
