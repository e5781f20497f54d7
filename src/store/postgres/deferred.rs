//! Audit entries that need no answer (repeated and late clicks), merged and written
//! together within [`FLUSH_AFTER`], as the SQLite writer does with its batches: a
//! flood of repeated clicks costs one transaction, with `"count"` in the detail.
//! Entries anyone can cause (forged clicks) are held longer: see
//! [`crate::store::deferred`].

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    model::ApprovalId,
    store::{
        deferred::{self, DeferredEvents, Holding, Release},
        NewEvent, StoreResult,
    },
};

/// Deferred entries are written within this long even when nothing reads them.
const FLUSH_AFTER: Duration = Duration::from_millis(500);

/// Cheap to clone; every clone is the same queue.
#[derive(Clone)]
pub(super) struct Deferred {
    pool: Option<PgPool>,
    entries: Arc<Mutex<DeferredEvents>>,
    ready: Arc<Notify>,
    /// Told when a held tally starts, so it is written when due.
    held_ready: Arc<Notify>,
    /// Serializes flushes, so `flush` returns only once everything queued before it
    /// is committed (not merely taken by a concurrent flush).
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl Deferred {
    /// A queue on `pool` with its flushing tasks.
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
                if !task.write(Release::Due).await {
                    return;
                }
            }
        });
        let task = deferred.clone();
        tokio::spawn(async move {
            loop {
                task.held_ready.notified().await;
                loop {
                    tokio::time::sleep(deferred::HOLD).await;
                    if !task.write(Release::Due).await {
                        return;
                    }
                    if !task.entries.lock().is_ok_and(|e| e.holds_any()) {
                        break;
                    }
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
            held_ready: Arc::default(),
            flushing: Arc::default(),
        }
    }

    /// A flushing task's write; `false` once the pool is closed (the task ends).
    async fn write(&self, release: Release) -> bool {
        if self.pool.as_ref().is_some_and(PgPool::is_closed) {
            return false;
        }
        if let Err(error) = self.flush_releasing(release).await {
            tracing::error!(%error, "could not write deferred audit entries");
        }
        true
    }

    /// Queues `event` for the next flush, merged with identical ones.
    pub(super) fn push(&self, id: ApprovalId, event: NewEvent) {
        if self.pool.is_none() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.push(id, event);
        }
        self.ready.notify_one();
    }

    /// Counts `event` in a tally held until due (see [`crate::store::deferred`]).
    pub(super) fn hold(&self, id: ApprovalId, event: NewEvent) {
        if self.pool.is_none() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        match entries.hold(id, event.clone(), Instant::now()) {
            Holding::Started => self.held_ready.notify_one(),
            Holding::Counted => {}
            Holding::Full => deferred::log_dropped(id, &event),
        }
    }

    /// Moves request `id`'s held tallies to the next flush: its trail is being read.
    pub(super) fn release(&self, id: ApprovalId) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.release(id);
        }
    }

    /// Writes every entry queued so far, and the held tallies that are due, in one
    /// transaction.
    pub(super) async fn flush(&self) -> StoreResult<()> {
        self.flush_releasing(Release::Due).await
    }

    /// Writes every entry queued so far and every held tally, due or not (closing).
    pub(super) async fn flush_all(&self) -> StoreResult<()> {
        self.flush_releasing(Release::All).await
    }

    async fn flush_releasing(&self, release: Release) -> StoreResult<()> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let _one_at_a_time = self.flushing.lock().await;
        let taken = match self.entries.lock() {
            Ok(mut entries) => entries.take(release, Instant::now()),
            Err(_) => return Ok(()),
        };
        if taken.is_empty() {
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        let now = Utc::now();
        for (id, event) in taken {
            super::insert_deferred_event(&mut tx, id, now, &event).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
