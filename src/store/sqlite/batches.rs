//! Batches on SQLite: `batches` and `batch_items` (migration 0005). A batch and its
//! items are stored in one writer job (a savepoint undoes a refused batch).

use chrono::Utc;
use rusqlite::OptionalExtension;

use super::{outbox, requests::insert_in, Sqlite};
use crate::model::{rfc3339, Approval, ApprovalId, BatchView};
use crate::store::batches::{Batch, BatchInserted, NewBatch};
use crate::store::callbacks::{payload, BATCH_DECIDED};
use crate::store::outbox::Kind;
use crate::store::rows::{approval_from_row, APPROVAL_COLUMNS};
use crate::store::{Inserted, StoreError, StoreResult, Submission};

impl Sqlite {
    /// Stores a batch and its items in one transaction: all of them or none. The
    /// items' submissions are as [`Store::insert`](crate::store::Store::insert) takes
    /// them; every item after the first routed one loses its own Slack post (the batch
    /// has one card). One writer job, inside a savepoint that a refusal rolls back.
    pub async fn insert_batch(
        &self,
        batch: NewBatch,
        items: Vec<Submission>,
    ) -> StoreResult<BatchInserted> {
        self.write(Box::new(move |conn| {
            conn.execute_batch("SAVEPOINT batch")?;
            let result = insert_batch_in(conn, batch, items);
            match &result {
                Ok(BatchInserted::Created(_)) | Ok(BatchInserted::Existing(_)) => {
                    conn.execute_batch("RELEASE batch")?
                }
                _ => conn.execute_batch("ROLLBACK TO batch; RELEASE batch")?,
            }
            result
        }))
        .await
    }

    /// The batch `id`, if there is one.
    pub async fn batch(&self, id: ApprovalId) -> StoreResult<Option<Batch>> {
        let found = self.readers.read(|conn| {
            let Some((agent, title)) = conn
                .prepare_cached("SELECT agent, title FROM batches WHERE id = ?")?
                .query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?
            else {
                return Ok(None);
            };
            let items = conn
                .prepare_cached(
                    "SELECT approval_id FROM batch_items WHERE batch_id = ? ORDER BY position",
                )?
                .query_map([id.to_string()], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((agent, title, items)))
        })?;
        let Some((agent, title, items)) = found else {
            return Ok(None);
        };
        Ok(Some(Batch {
            id,
            agent,
            title,
            items: items
                .iter()
                .map(|raw| {
                    ApprovalId::parse(raw)
                        .ok_or_else(|| StoreError::Corrupt(format!("batch item {raw}")))
                })
                .collect::<StoreResult<_>>()?,
        }))
    }

    /// Whether `agent` already used this Idempotency-Key for a batch.
    pub async fn has_batch_idempotency_key(&self, agent: &str, key: &str) -> StoreResult<bool> {
        self.readers.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM batches WHERE agent = ? AND idempotency_key = ?")?
                .exists([agent, key])?)
        })
    }

    /// The batch request `id` belongs to, if it is a batch item.
    pub async fn batch_of(&self, id: ApprovalId) -> StoreResult<Option<ApprovalId>> {
        let batch: Option<String> = self.readers.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT batch_id FROM batch_items WHERE approval_id = ?")?
                .query_row([id.to_string()], |row| row.get(0))
                .optional()?)
        })?;
        Ok(batch.as_deref().and_then(ApprovalId::parse))
    }
}

fn insert_batch_in(
    conn: &rusqlite::Connection,
    batch: NewBatch,
    items: Vec<Submission>,
) -> StoreResult<BatchInserted> {
    if let Some(key) = &batch.idempotency_key {
        let mut statement = conn.prepare_cached(
            "SELECT id, request_hash FROM batches WHERE agent = ? AND idempotency_key = ?",
        )?;
        let mut rows = statement.query(rusqlite::params![batch.agent, key])?;
        if let Some(row) = rows.next()? {
            let (id, hash): (String, String) = (row.get(0)?, row.get(1)?);
            return Ok(if hash == batch.request_hash {
                BatchInserted::Existing(
                    ApprovalId::parse(&id)
                        .ok_or_else(|| StoreError::Corrupt(format!("batch id {id}")))?,
                )
            } else {
                BatchInserted::KeyConflict
            });
        }
    }
    // The cap counts the batch as a whole: refused when all its items would take the
    // agent over it, with the count as it stands without them.
    if let Some(max) = items.iter().filter_map(|s| s.max_pending).min() {
        let pending = super::requests::pending_of(conn, &batch.agent)?;
        if pending + items.len() as u64 > u64::from(max) {
            return Ok(BatchInserted::TooManyPending { pending });
        }
    }
    conn.prepare_cached(
        "INSERT INTO batches (id, agent, title, callback_url, idempotency_key, request_hash, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(rusqlite::params![
        batch.id.to_string(),
        batch.agent,
        batch.title,
        batch.callback_url,
        batch.idempotency_key,
        batch.request_hash,
        rfc3339(batch.created_at),
    ])?;
    // Every item is linked before any is stored, so an item a rule decides at once
    // does not find its batch complete while later items are still to come.
    for (position, item) in items.iter().enumerate() {
        conn.prepare_cached(
            "INSERT INTO batch_items (approval_id, batch_id, position) VALUES (?, ?, ?)",
        )?
        .execute(rusqlite::params![
            item.id.to_string(),
            batch.id.to_string(),
            position as i64
        ])?;
    }
    let mut stored = Vec::with_capacity(items.len());
    let mut card_posted = false;
    for mut item in items {
        item.max_pending = None; // counted for the whole batch above
        match insert_in(conn, item)? {
            Inserted::Created(approval) => {
                if approval.status.is_final() {
                    // Decided by a rule at once: not on the card.
                } else if card_posted {
                    conn.prepare_cached(
                        "DELETE FROM outbox WHERE approval_id = ? AND kind = 'post'",
                    )?
                    .execute([approval.id.to_string()])?;
                } else {
                    card_posted = true;
                }
                stored.push(approval);
            }
            Inserted::TooManyPending { pending } => {
                return Ok(BatchInserted::TooManyPending { pending })
            }
            Inserted::Existing(_) | Inserted::KeyConflict => {
                return Err(StoreError::Corrupt(
                    "a batch item collided with an Idempotency-Key".into(),
                ))
            }
        }
    }
    Ok(BatchInserted::Created(stored))
}

/// In the transaction that decided `approval`: when it is a batch item, queues a
/// rewrite of the batch's card and, if this was the last pending item, the batch's
/// callback.
pub(super) fn on_item_decided_in(
    conn: &rusqlite::Connection,
    approval: &Approval,
) -> StoreResult<()> {
    let batch: Option<String> = {
        let mut statement =
            conn.prepare_cached("SELECT batch_id FROM batch_items WHERE approval_id = ?")?;
        let mut rows = statement.query([approval.id.to_string()])?;
        match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        }
    };
    let Some(batch) = batch else {
        return Ok(());
    };
    // The card is the message of the item that was posted; `decide_in` already
    // queued a rewrite when that is this one.
    let card: Option<(String, String)> = {
        let mut statement = conn.prepare_cached(
            "SELECT a.id, a.channel FROM batch_items b JOIN approvals a ON a.id = b.approval_id
             WHERE b.batch_id = ? AND a.message_ts IS NOT NULL AND a.id != ? LIMIT 1",
        )?;
        let mut rows = statement.query([&batch, &approval.id.to_string()])?;
        match rows.next()? {
            Some(row) => Some((row.get(0)?, row.get(1)?)),
            None => None,
        }
    };
    if let Some((card, channel)) = card {
        if let Some(card) = ApprovalId::parse(&card) {
            outbox::enqueue_in(conn, card, &channel, Kind::Update)?;
        }
    }
    let still_pending: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM batch_items b LEFT JOIN approvals a ON a.id = b.approval_id
             WHERE b.batch_id = ? AND (a.status IS NULL OR a.status = 'pending')",
        )?
        .query_row([&batch], |row| row.get(0))?;
    if still_pending > 0 {
        return Ok(());
    }
    let (agent, url): (String, Option<String>) = conn
        .prepare_cached("SELECT agent, callback_url FROM batches WHERE id = ?")?
        .query_row([&batch], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let Some(url) = url else {
        return Ok(());
    };
    let view = batch_view_in(conn, &batch)?;
    let Some(first) = view.approvals.first().map(|a| a.id) else {
        return Ok(());
    };
    let body = payload(
        BATCH_DECIDED,
        approval.decided_at.unwrap_or_else(Utc::now),
        serde_json::json!(view),
    );
    super::callbacks::enqueue_in(conn, &agent, &url, &body, first)
}

/// The batch as `GET /v1/batches/{id}` shows it, read in the caller's transaction.
fn batch_view_in(conn: &rusqlite::Connection, batch: &str) -> StoreResult<BatchView> {
    let title: Option<String> = conn
        .prepare_cached("SELECT title FROM batches WHERE id = ?")?
        .query_row([batch], |row| row.get(0))?;
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {} FROM batch_items b JOIN approvals a ON a.id = b.approval_id
         WHERE b.batch_id = ? ORDER BY b.position",
        APPROVAL_COLUMNS
            .split(", ")
            .map(|c| format!("a.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let mut rows = statement.query([batch])?;
    let mut approvals = Vec::new();
    while let Some(row) = rows.next()? {
        approvals.push(approval_from_row(row)?);
    }
    let id =
        ApprovalId::parse(batch).ok_or_else(|| StoreError::Corrupt(format!("batch {batch}")))?;
    Ok(BatchView::of(id, title, &approvals))
}
