//! Audit entries that need no answer (repeated and late clicks), merged and written
//! together within [`FLUSH_AFTER`], as the SQLite writer does with its batches: a
//! flood of repeated clicks costs one transaction, with `"count"` in the detail.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    model::ApprovalId,
    store::{NewEvent, StoreResult},
};

/// Deferred entries are written within this long even when nothing reads them.
const FLUSH_AFTER: Duration = Duration::from_millis(500);

/// Request, kind, actor and the detail as JSON text.
type Key = (ApprovalId, &'static str, Option<String>, String);

/// Cheap to clone; every clone is the same queue.
#[derive(Clone)]
pub(super) struct Deferred {
    pool: Option<PgPool>,
    entries: Arc<Mutex<HashMap<Key, (NewEvent, u64)>>>,
    ready: Arc<Notify>,
    /// Serializes flushes, so `flush` returns only once everything queued before it
    /// is committed (not merely taken by a concurrent flush).
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl Deferred {
    /// A queue on `pool` with its flushing task.
    pub(super) fn start(pool: PgPool) -> Self {
        let deferred = Self {
            pool: Some(pool),
            ..Self::idle()
        };
        let task = deferred.clone();
        tokio::spawn(async move {
            loop {
                task.ready.notified().await;
                tokio::time::sleep(FLUSH_AFTER).await;
                if task.pool.as_ref().is_some_and(PgPool::is_closed) {
                    return;
                }
                if let Err(error) = task.flush().await {
                    tracing::error!(%error, "could not write deferred audit entries");
                }
            }
        });
        deferred
    }

    /// A queue that never writes (a read-only store).
    pub(super) fn idle() -> Self {
        Self {
            pool: None,
            entries: Arc::default(),
            ready: Arc::default(),
            flushing: Arc::default(),
        }
    }

    pub(super) fn push(&self, id: ApprovalId, event: NewEvent) {
        if self.pool.is_none() {
            return;
        }
        let key = (
            id,
            event.kind,
            event.actor.clone(),
            event.detail.to_string(),
        );
        if let Ok(mut entries) = self.entries.lock() {
            entries.entry(key).or_insert((event, 0)).1 += 1;
        }
        self.ready.notify_one();
    }

    /// Writes every entry queued so far, in one transaction.
    pub(super) async fn flush(&self) -> StoreResult<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let _one_at_a_time = self.flushing.lock().await;
        let taken: Vec<_> = match self.entries.lock() {
            Ok(mut entries) => entries.drain().collect(),
            Err(_) => return Ok(()),
        };
        if taken.is_empty() {
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        let now = Utc::now();
        for ((id, ..), (mut event, count)) in taken {
            if count > 1 {
                if let Value::Object(detail) = &mut event.detail {
                    detail.insert("count".into(), count.into());
                }
            }
            super::insert_event(&mut tx, id, now, &event).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
