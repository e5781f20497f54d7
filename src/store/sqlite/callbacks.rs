//! Decision callbacks on SQLite: `callback_targets` and the `callbacks` delivery rows
//! (migration 0005). The one callbacks worker claims rows through the writer, never
//! one it has in flight, so nothing is sent twice at once.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Row as _;

use super::{insert_event, Sqlite};
use crate::model::{rfc3339, Approval, ApprovalId};
use crate::store::callbacks::{payload, ClaimShape, Delivery, APPROVAL_DECIDED};
use crate::store::{NewEvent, StoreError, StoreResult};

/// Remembers `url` as request `id`'s callback, inside the insert's transaction.
pub(super) fn target_in(conn: &rusqlite::Connection, id: ApprovalId, url: &str) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO callback_targets (approval_id, url) VALUES (?, ?)")?
        .execute(rusqlite::params![id.to_string(), url])?;
    Ok(())
}

/// Called by the write that ends a request, in its transaction: queues the request's
/// own callback (when it has a `callback_url`), and lets its batch, if it is in one,
/// react (its card, its callback once the last item is decided).
pub(super) fn on_decided_in(conn: &rusqlite::Connection, approval: &Approval) -> StoreResult<()> {
    let url: Option<String> = {
        let mut statement =
            conn.prepare_cached("SELECT url FROM callback_targets WHERE approval_id = ?")?;
        let mut rows = statement.query([approval.id.to_string()])?;
        match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        }
    };
    if let Some(url) = url {
        let body = payload(
            APPROVAL_DECIDED,
            approval.decided_at.unwrap_or_else(Utc::now),
            json!(approval.view()),
        );
        enqueue_in(conn, &approval.agent, &url, &body, approval.id)?;
    }
    super::batches::on_item_decided_in(conn, approval)
}

/// Adds a delivery row, due now, inside the caller's transaction.
pub(super) fn enqueue_in(
    conn: &rusqlite::Connection,
    agent: &str,
    url: &str,
    body: &str,
    audit_id: ApprovalId,
) -> StoreResult<()> {
    let now = rfc3339(Utc::now());
    conn.prepare_cached(
        "INSERT INTO callbacks (event_id, agent, url, body, audit_id, not_before, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(rusqlite::params![
        format!("msg_{}", uuid::Uuid::new_v4().simple()),
        agent,
        url,
        body,
        audit_id.to_string(),
        now
    ])?;
    Ok(())
}

impl Sqlite {
    /// Claims deliveries due at `now` as `shape` allows (oldest first, at most
    /// `per_host` in flight per receiver, none already in flight), raising their
    /// `attempts`. The one worker never claims a row it has in flight, so nothing is
    /// sent twice at once; a delivery cut off by a crash is due again at the next start.
    pub async fn claim_callbacks(
        &self,
        now: DateTime<Utc>,
        shape: &ClaimShape,
    ) -> StoreResult<Vec<Delivery>> {
        let shape = shape.clone();
        let in_flight = serde_json::to_string(&shape.in_flight_seqs())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let busy =
            serde_json::to_string(&shape.busy()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut claimed = self
            .write(Box::new(move |conn| {
                let candidates = {
                    let mut statement = conn.prepare_cached(
                        "SELECT seq, url FROM callbacks WHERE not_before <= ?1
                           AND seq NOT IN (SELECT value FROM json_each(?2))
                           AND NOT EXISTS (SELECT 1 FROM json_each(?3) AS busy
                                WHERE substr(url, 1, length(busy.value)) = busy.value)
                         ORDER BY seq LIMIT ?4",
                    )?;
                    let mut rows = statement.query(rusqlite::params![
                        rfc3339(now),
                        in_flight,
                        busy,
                        i64::from(shape.window())
                    ])?;
                    let mut candidates = Vec::new();
                    while let Some(row) = rows.next()? {
                        candidates.push((row.get::<_, i64>(0)?, row.get::<_, String>(1)?));
                    }
                    candidates
                };
                let mut statement = conn.prepare_cached(
                    "UPDATE callbacks SET attempts = attempts + 1 WHERE seq = ?1
                     RETURNING seq, event_id, agent, url, body, audit_id, attempts",
                )?;
                let mut claimed = Vec::new();
                for seq in shape.pick(&candidates) {
                    let mut rows = statement.query([seq])?;
                    while let Some(row) = rows.next()? {
                        let audit: String = row.get("audit_id")?;
                        let attempts: i64 = row.get("attempts")?;
                        claimed.push(Delivery {
                            seq: row.get("seq")?,
                            event_id: row.get("event_id")?,
                            agent: row.get("agent")?,
                            url: row.get("url")?,
                            body: row.get("body")?,
                            audit_id: ApprovalId::parse(&audit).ok_or_else(|| {
                                StoreError::Corrupt(format!("callback audit_id {audit}"))
                            })?,
                            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                        });
                    }
                }
                Ok(claimed)
            }))
            .await?;
        claimed.sort_by_key(|d| d.seq);
        Ok(claimed)
    }

    /// When the earliest delivery not in `in_flight` may be tried; `None` when there
    /// is none.
    pub async fn next_callback_due(&self, in_flight: &[i64]) -> StoreResult<Option<DateTime<Utc>>> {
        let in_flight =
            serde_json::to_string(in_flight).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = sqlx::query(
            "SELECT MIN(not_before) AS at FROM callbacks
             WHERE seq NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(in_flight)
        .fetch_one(&self.reader)
        .await?;
        let at: Option<String> = row.try_get("at")?;
        Ok(at.and_then(|raw| {
            DateTime::parse_from_rfc3339(&raw)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }))
    }

    /// The delivery is over (delivered, or given up on): removes it and appends
    /// `events` to its request's trail, in one transaction.
    pub async fn callback_done(
        &self,
        delivery: &Delivery,
        events: Vec<NewEvent>,
    ) -> StoreResult<()> {
        let (seq, audit_id) = (delivery.seq, delivery.audit_id);
        self.write(Box::new(move |conn| {
            for event in &events {
                insert_event(conn, audit_id, Utc::now(), event)?;
            }
            conn.prepare_cached("DELETE FROM callbacks WHERE seq = ?")?
                .execute([seq])?;
            Ok(())
        }))
        .await
    }

    /// The attempt failed; the delivery is tried again at `not_before`, and `event`
    /// goes on its request's trail.
    pub async fn callback_retry(
        &self,
        delivery: &Delivery,
        not_before: DateTime<Utc>,
        event: NewEvent,
    ) -> StoreResult<()> {
        let (seq, audit_id) = (delivery.seq, delivery.audit_id);
        self.write(Box::new(move |conn| {
            insert_event(conn, audit_id, Utc::now(), &event)?;
            conn.prepare_cached("UPDATE callbacks SET not_before = ? WHERE seq = ?")?
                .execute(rusqlite::params![rfc3339(not_before), seq])?;
            Ok(())
        }))
        .await
    }
}
