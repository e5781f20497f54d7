//! PostgreSQL: decision callbacks (`callback_targets`, `callbacks`; migration
//! postgres/0002), delivered by the callbacks workers of every replica.
//!
//! A claim takes due rows `FOR UPDATE SKIP LOCKED` and, in the same transaction, raises
//! their `attempts` and moves their `not_before` a lease ahead ([`lease`]): no other
//! replica claims them until the attempt is over (the row is removed or given its
//! retry time) or the lease lapses (the claimer died). The attempt itself cannot
//! outlive the lease: its timeout is shorter by a margin checked at start-up, and the
//! worker cuts it at the claim's fence (`crate::leases`). The retry write is
//! conditional on `attempts` being this claim's, so a late writer never moves a row
//! another replica claimed since. So two replicas never send the same attempt. A
//! queued delivery `NOTIFY`s every replica's callbacks worker.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Postgres as Pg, Row as _, Transaction};

use super::{
    insert_event,
    listen::{notify, Note},
    Postgres,
};
use crate::model::{rfc3339, Approval, ApprovalId};
use crate::store::callbacks::{payload, ClaimShape, Delivery, APPROVAL_DECIDED};
use crate::store::rows::parse_time;
use crate::store::{NewEvent, StoreError, StoreResult};

/// How long a claim keeps its deliveries from other replicas: over one attempt
/// (`GREENLIGHT_CALLBACK_TIMEOUT_SECS`, 10 s) and the writes that record it, so 15 s
/// unless `GREENLIGHT_CALLBACK_LEASE_SECS` says otherwise; start-up refuses a lease
/// that does not exceed the attempt timeout by `leases::CALLBACK_MARGIN`
/// (`crate::leases`).
pub fn lease() -> Duration {
    crate::leases::from_env().callback
}

/// Remembers `url` as request `id`'s callback, inside the insert's transaction.
pub(super) async fn target_in(
    tx: &mut Transaction<'static, Pg>,
    id: ApprovalId,
    url: &str,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO callback_targets (approval_id, url) VALUES ($1, $2)")
        .bind(id.to_string())
        .bind(url)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Called by the write that ends a request, in its transaction (see the SQLite twin).
pub(super) async fn on_decided_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    approval: &Approval,
) -> StoreResult<()> {
    let url: Option<String> =
        sqlx::query_scalar("SELECT url FROM callback_targets WHERE approval_id = $1")
            .bind(approval.id.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    if let Some(url) = url {
        let body = payload(
            APPROVAL_DECIDED,
            approval.decided_at.unwrap_or_else(Utc::now),
            json!(approval.view()),
        );
        enqueue_in(tx, me, &approval.agent, &url, &body, approval.id).await?;
    }
    super::batches::on_item_decided_in(tx, me, approval).await
}

/// Adds a delivery row, due now, inside the caller's transaction, and wakes every
/// replica's callbacks worker when it commits.
pub(super) async fn enqueue_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    agent: &str,
    url: &str,
    body: &str,
    audit_id: ApprovalId,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO callbacks (event_id, agent, url, body, audit_id, not_before, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(format!("msg_{}", uuid::Uuid::new_v4().simple()))
    .bind(agent)
    .bind(url)
    .bind(body)
    .bind(audit_id.to_string())
    .bind(rfc3339(Utc::now()))
    .execute(&mut **tx)
    .await?;
    notify(tx, me, Note::Callback).await
}

impl Postgres {
    /// Claims deliveries due at `now` as `shape` allows, in one transaction: candidates
    /// (oldest first, at most `shape.window()`, none in flight here, none for a receiver
    /// at its cap) are locked `FOR UPDATE SKIP LOCKED`, so rows another replica is
    /// claiming are skipped, not waited for; the picked ones get `attempts + 1` and their
    /// `not_before` moved a lease (`lease()`, 15 s by default) ahead, so no replica
    /// claims them again until the attempt is recorded or the lease lapses. Empty when
    /// nothing is due.
    pub async fn claim_callbacks(
        &self,
        now: DateTime<Utc>,
        shape: &ClaimShape,
    ) -> StoreResult<Vec<Delivery>> {
        let lease =
            chrono::Duration::from_std(lease()).unwrap_or_else(|_| chrono::Duration::zero());
        let mut tx = self.begin().await?;
        // Candidates, locked for this transaction: due, not in flight here, not for a
        // receiver already at its cap; then at most `per_host` each (`ClaimShape::pick`).
        let candidates = sqlx::query(
            "SELECT seq, url FROM callbacks WHERE not_before <= $1
               AND seq <> ALL($2)
               AND NOT EXISTS (SELECT 1 FROM unnest($3::text[]) AS busy(prefix)
                                WHERE left(url, length(busy.prefix)) = busy.prefix)
             ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED",
        )
        .bind(rfc3339(now))
        .bind(shape.in_flight_seqs())
        .bind(shape.busy())
        .bind(i64::from(shape.window()))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("seq")?, row.try_get("url")?)))
        .collect::<StoreResult<Vec<(i64, String)>>>()?;
        let picked = shape.pick(&candidates);
        if picked.is_empty() {
            self.commit(tx).await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE callbacks SET attempts = attempts + 1, not_before = $2 WHERE seq = ANY($1)
             RETURNING seq, event_id, agent, url, body, audit_id, attempts",
        )
        .bind(&picked)
        .bind(rfc3339(now + lease))
        .fetch_all(&mut *tx)
        .await?;
        self.commit(tx).await?;
        rows.iter()
            .map(|row| {
                let audit: String = row.try_get("audit_id")?;
                let attempts: i64 = row.try_get("attempts")?;
                Ok(Delivery {
                    seq: row.try_get("seq")?,
                    event_id: row.try_get("event_id")?,
                    agent: row.try_get("agent")?,
                    url: row.try_get("url")?,
                    body: row.try_get("body")?,
                    audit_id: ApprovalId::parse(&audit)
                        .ok_or_else(|| StoreError::Corrupt(format!("callback audit_id {audit}")))?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// When the earliest delivery not in `in_flight` (by `seq`) may be tried: its
    /// `not_before`, which for a row another replica claimed is the end of that claim's
    /// lease. `None` when there is none; `StoreError::Corrupt` when the time does not
    /// parse.
    pub async fn next_callback_due(&self, in_flight: &[i64]) -> StoreResult<Option<DateTime<Utc>>> {
        let at: Option<String> =
            sqlx::query_scalar("SELECT MIN(not_before) FROM callbacks WHERE seq <> ALL($1)")
                .bind(in_flight)
                .fetch_one(&self.pool)
                .await?;
        at.map(|raw| parse_time(&raw, "callbacks.not_before"))
            .transpose()
    }

    /// Removes the delivery and appends `events` to the trail of its `audit_id`, in one
    /// transaction. Not conditional on the claim (unlike `callback_retry`): a delivered
    /// callback is delivered, whichever replica holds the row now.
    pub async fn callback_done(
        &self,
        delivery: &Delivery,
        events: Vec<NewEvent>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for event in &events {
            insert_event(&mut tx, delivery.audit_id, Utc::now(), event).await?;
        }
        sqlx::query("DELETE FROM callbacks WHERE seq = $1")
            .bind(delivery.seq)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }

    /// Appends `event` and sets the delivery's `not_before`, in one transaction. The
    /// `UPDATE` is conditional on `attempts` still being this claim's: if the lease
    /// lapsed and another replica claimed the row since, the row keeps that claim's time
    /// (the event is written either way).
    pub async fn callback_retry(
        &self,
        delivery: &Delivery,
        not_before: DateTime<Utc>,
        event: NewEvent,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_event(&mut tx, delivery.audit_id, Utc::now(), &event).await?;
        // Only this claim's attempt: if the lease lapsed and another replica claimed
        // the row since, its own attempt decides the row's next try.
        sqlx::query("UPDATE callbacks SET not_before = $1 WHERE seq = $2 AND attempts = $3")
            .bind(rfc3339(not_before))
            .bind(delivery.seq)
            .bind(i64::from(delivery.attempts))
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }
}
