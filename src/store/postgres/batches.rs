//! PostgreSQL: batches (`batches`, `batch_items`; migration postgres/0002). A batch and
//! its items are one transaction (a refused batch rolls back whole). The write that
//! decides an item locks its batch's row before counting the items still pending, so
//! items decided at once on two replicas are counted one after the other: exactly one
//! of them sees the batch complete and queues its callback.

use chrono::Utc;
use sqlx::{Postgres as Pg, Row as _, Transaction};

use super::{outbox, requests::insert_in, Postgres};
use crate::model::{rfc3339, Approval, ApprovalId, BatchView};
use crate::store::batches::{Batch, BatchInserted, NewBatch};
use crate::store::callbacks::{payload, BATCH_DECIDED};
use crate::store::outbox::Kind;
use crate::store::rows::{approval_from_row, APPROVAL_COLUMNS};
use crate::store::{Inserted, StoreError, StoreResult, Submission};

impl Postgres {
    /// Stores a batch and its items in one transaction, committed only when the batch is
    /// created: a replay (`Existing`), a key conflict or a refusal by the cap rolls back
    /// whatever was written. When any item carries a cap, the agent's `agent_pending` row
    /// is locked first and the key looked for again under the lock, so a replay that
    /// committed meanwhile on another replica is answered, not refused. A concurrent
    /// insert of the same key waits on the `(agent, idempotency_key)` unique index and
    /// then returns the batch that won.
    pub async fn insert_batch(
        &self,
        batch: NewBatch,
        items: Vec<Submission>,
    ) -> StoreResult<BatchInserted> {
        let mut tx = self.begin().await?;
        let result = insert_batch_in(&mut tx, &self.me, batch, items).await?;
        if let BatchInserted::Created(_) = &result {
            self.commit(tx).await?;
        }
        // Anything else wrote nothing that should stay: dropping `tx` rolls it back.
        Ok(result)
    }

    /// The batch `id` with its items in submission order, from the pool (two reads, no
    /// lock); `None` when there is no such batch. `StoreError::Corrupt` when a stored
    /// item id does not parse.
    pub async fn batch(&self, id: ApprovalId) -> StoreResult<Option<Batch>> {
        let Some(row) = sqlx::query("SELECT id, agent, title FROM batches WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let items: Vec<String> = sqlx::query_scalar(
            "SELECT approval_id FROM batch_items WHERE batch_id = $1 ORDER BY position",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(Batch {
            id,
            agent: row.try_get("agent")?,
            title: row.try_get("title")?,
            items: items
                .iter()
                .map(|raw| {
                    ApprovalId::parse(raw)
                        .ok_or_else(|| StoreError::Corrupt(format!("batch item {raw}")))
                })
                .collect::<StoreResult<_>>()?,
        }))
    }

    /// Whether `agent` already used this Idempotency-Key for a batch: one indexed read
    /// without a lock, for the limits (a replay goes through free). The insert's own
    /// transaction is what decides.
    pub async fn has_batch_idempotency_key(&self, agent: &str, key: &str) -> StoreResult<bool> {
        let found = sqlx::query("SELECT 1 FROM batches WHERE agent = $1 AND idempotency_key = $2")
            .bind(agent)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The batch request `id` is an item of; `None` when it is in none (a stored batch id
    /// that does not parse also reads as none).
    pub async fn batch_of(&self, id: ApprovalId) -> StoreResult<Option<ApprovalId>> {
        let batch: Option<String> =
            sqlx::query_scalar("SELECT batch_id FROM batch_items WHERE approval_id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(batch.as_deref().and_then(ApprovalId::parse))
    }
}

/// The batch an earlier submission with the same agent and Idempotency-Key stored.
async fn existing(
    tx: &mut Transaction<'static, Pg>,
    batch: &NewBatch,
) -> StoreResult<Option<BatchInserted>> {
    let Some(key) = &batch.idempotency_key else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT id, request_hash FROM batches WHERE agent = $1 AND idempotency_key = $2",
    )
    .bind(&batch.agent)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (id, hash): (String, String) = (row.try_get("id")?, row.try_get("request_hash")?);
    Ok(Some(if hash == batch.request_hash {
        BatchInserted::Existing(
            ApprovalId::parse(&id).ok_or_else(|| StoreError::Corrupt(format!("batch id {id}")))?,
        )
    } else {
        BatchInserted::KeyConflict
    }))
}

async fn insert_batch_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    batch: NewBatch,
    items: Vec<Submission>,
) -> StoreResult<BatchInserted> {
    if let Some(found) = existing(tx, &batch).await? {
        return Ok(found);
    }
    // The cap counts the batch as a whole (the agent's row locked, as for one
    // request): refused when all its items would take the agent over it, with the
    // count as it stands without them.
    if let Some(max) = items.iter().filter_map(|s| s.max_pending).min() {
        let pending = super::requests::lock_pending(tx, &batch.agent).await?;
        // A replay that committed while we waited for the lock is a replay.
        if let Some(found) = existing(tx, &batch).await? {
            return Ok(found);
        }
        if pending + items.len() as u64 > u64::from(max) {
            return Ok(BatchInserted::TooManyPending { pending });
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO batches (id, agent, title, callback_url, idempotency_key, request_hash, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (agent, idempotency_key) DO NOTHING",
    )
    .bind(batch.id.to_string())
    .bind(&batch.agent)
    .bind(&batch.title)
    .bind(&batch.callback_url)
    .bind(&batch.idempotency_key)
    .bind(&batch.request_hash)
    .bind(rfc3339(batch.created_at))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Another replica stored the same key first (we waited for its commit).
        return existing(tx, &batch).await?.ok_or_else(|| {
            StoreError::Corrupt("a batch Idempotency-Key conflict without a row".into())
        });
    }
    // Every item is linked before any is stored, so an item a rule decides at once
    // does not find its batch complete while later items are still to come.
    for (position, item) in items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO batch_items (approval_id, batch_id, position) VALUES ($1, $2, $3)",
        )
        .bind(item.id.to_string())
        .bind(batch.id.to_string())
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
    }
    let mut stored = Vec::with_capacity(items.len());
    let mut card_posted = false;
    for mut item in items {
        item.max_pending = None; // counted for the whole batch above
        match insert_in(tx, me, item).await? {
            Inserted::Created(approval) => {
                if approval.status.is_final() {
                    // Decided by a rule at once: not on the card.
                } else if card_posted {
                    sqlx::query("DELETE FROM outbox WHERE approval_id = $1 AND kind = 'post'")
                        .bind(approval.id.to_string())
                        .execute(&mut **tx)
                        .await?;
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
/// callback (see the SQLite twin). Locks the batch row first.
pub(super) async fn on_item_decided_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    approval: &Approval,
) -> StoreResult<()> {
    let batch: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT b.id, b.agent, b.callback_url FROM batch_items i JOIN batches b ON b.id = i.batch_id
         WHERE i.approval_id = $1 FOR UPDATE OF b",
    )
    .bind(approval.id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some((batch, agent, url)) = batch else {
        return Ok(());
    };
    // The card is the message of the item that was posted; `decide_in` already
    // queued a rewrite when that is this one.
    let card: Option<(String, String)> = sqlx::query_as(
        "SELECT a.id, a.channel FROM batch_items b JOIN approvals a ON a.id = b.approval_id
         WHERE b.batch_id = $1 AND a.message_ts IS NOT NULL AND a.id <> $2 LIMIT 1",
    )
    .bind(&batch)
    .bind(approval.id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some((card, channel)) = card {
        if let Some(card) = ApprovalId::parse(&card) {
            outbox::enqueue_in(tx, me, card, &channel, Kind::Update).await?;
        }
    }
    let still_pending: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM batch_items b LEFT JOIN approvals a ON a.id = b.approval_id
         WHERE b.batch_id = $1 AND (a.status IS NULL OR a.status = 'pending')",
    )
    .bind(&batch)
    .fetch_one(&mut **tx)
    .await?;
    if still_pending > 0 {
        return Ok(());
    }
    let Some(url) = url else {
        return Ok(());
    };
    let view = batch_view_in(tx, &batch).await?;
    let Some(first) = view.approvals.first().map(|a| a.id) else {
        return Ok(());
    };
    let body = payload(
        BATCH_DECIDED,
        approval.decided_at.unwrap_or_else(Utc::now),
        serde_json::json!(view),
    );
    super::callbacks::enqueue_in(tx, me, &agent, &url, &body, first).await
}

/// The batch as `GET /v1/batches/{id}` shows it, read in the caller's transaction.
async fn batch_view_in(tx: &mut Transaction<'static, Pg>, batch: &str) -> StoreResult<BatchView> {
    let title: Option<String> = sqlx::query_scalar("SELECT title FROM batches WHERE id = $1")
        .bind(batch)
        .fetch_one(&mut **tx)
        .await?;
    let columns = APPROVAL_COLUMNS
        .split(", ")
        .map(|c| format!("a.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = sqlx::query(&format!(
        "SELECT {columns} FROM batch_items b JOIN approvals a ON a.id = b.approval_id
         WHERE b.batch_id = $1 ORDER BY b.position"
    ))
    .bind(batch)
    .fetch_all(&mut **tx)
    .await?;
    let approvals = rows
        .iter()
        .map(approval_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let id =
        ApprovalId::parse(batch).ok_or_else(|| StoreError::Corrupt(format!("batch {batch}")))?;
    Ok(BatchView::of(id, title, &approvals))
}
