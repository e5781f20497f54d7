//! Changes committed by other replicas (PostgreSQL; `store::postgres::listen` hears
//! them): a decision made on replica B answers the agent long-polling on replica C,
//! and every replica's web page live list refreshes. On SQLite nothing arrives: one
//! process owns the database and wakes its own waiters at commit.
//!
//! Waiters hold no truth: the decision is read back from the store (committed before
//! the notification was sent) and handed to the waiters as a local decision would be.
//! Metrics are not counted again: the replica that decided counted it.

use tokio::sync::broadcast::error::RecvError;

use super::ApprovalService;
use crate::store::RemoteChange;

/// Runs until the store stops sending (the task is dropped at shutdown).
pub async fn run(service: ApprovalService) {
    let mut changes = service.store().remote_changes();
    loop {
        match changes.recv().await {
            Ok(change) => service.remote_change(change).await,
            // Some were missed: long-polls re-read at the end of their wait, and live
            // lists are re-read on their next change.
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "fell behind other replicas' changes");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

impl ApprovalService {
    /// Applies one change another replica committed.
    async fn remote_change(&self, change: RemoteChange) {
        if change.decided {
            match self.inner.store.get(change.id).await {
                Ok(Some(approval)) if approval.status.is_final() => {
                    self.inner.recent.remember(&approval);
                    self.inner.waiters.resolve(&approval);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(request_id = %change.id, %error, "could not read a decision made on another replica");
                }
            }
        }
        self.changed(change.id);
    }
}
