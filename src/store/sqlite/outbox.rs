//! SQLite: the Slack outbox's rows, claimed by the one writer.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{insert_event, Sqlite};
use crate::model::{rfc3339, Approval, ApprovalId, Status};
use crate::store::{
    outbox::{Kind, Row, Trouble},
    NewEvent, StoreError, StoreResult,
};

/// Adds a row inside the caller's transaction. A rewrite is merged into a rewrite of
/// the same request that has not been tried yet. A request without a channel (Slack
/// is not configured: the web page is the only surface) has no message, so nothing
/// is queued for it and nothing piles up.
pub(super) fn enqueue_in(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    channel: &str,
    kind: Kind,
) -> StoreResult<()> {
    if channel.is_empty() {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO outbox (approval_id, channel, kind, created_at)
         SELECT ?1, ?2, ?3, ?4
         WHERE ?3 != 'update' OR NOT EXISTS
           (SELECT 1 FROM outbox WHERE approval_id = ?1 AND kind = 'update' AND attempts = 0)",
    )?
    .execute(rusqlite::params![
        id.to_string(),
        channel,
        kind.as_str(),
        rfc3339(Utc::now())
    ])?;
    Ok(())
}

impl Sqlite {
    /// Every channel with rows waiting: what the outbox worker resumes at start-up.
    pub async fn outbox_channels(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT channel FROM outbox")
            .fetch_all(&self.reader)
            .await?)
    }

    /// Removes the rows `done` (delivered since the last claim: one write for the lot)
    /// and claims up to `limit` of `channel`'s rows that are due at `now`, oldest
    /// first, raising their `attempts`. A crash before the next claim only means those
    /// rows are delivered again (a rewrite that changes nothing).
    pub async fn claim_outbox(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
        done: Vec<i64>,
    ) -> StoreResult<Vec<Row>> {
        let channel = channel.to_owned();
        let mut rows = self
            .write(Box::new(move |conn| {
                for seq in &done {
                    delete_in(conn, *seq)?;
                }
                let mut statement = conn.prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1 WHERE seq IN
                       (SELECT seq FROM outbox WHERE channel = ?1
                          AND (not_before IS NULL OR not_before <= ?2) ORDER BY seq LIMIT ?3)
                     RETURNING seq, approval_id, channel, kind, attempts",
                )?;
                let mut rows =
                    statement.query(rusqlite::params![channel, rfc3339(now), i64::from(limit)])?;
                let mut claimed = Vec::new();
                while let Some(row) = rows.next()? {
                    claimed.push(row_from(row)?);
                }
                drop(rows);
                drop(statement);
                let mut read = conn.prepare_cached(&format!(
                    "SELECT {} FROM approvals WHERE id = ?",
                    crate::store::rows::APPROVAL_COLUMNS
                ))?;
                for row in &mut claimed {
                    let mut found = read.query([row.approval_id.to_string()])?;
                    row.approval = match found.next()? {
                        Some(stored) => Some(crate::store::rows::approval_from_row(stored)?),
                        None => None,
                    };
                }
                Ok(claimed)
            }))
            .await?;
        rows.sort_by_key(|row| row.seq);
        Ok(rows)
    }

    /// When `channel`'s earliest waiting row may be tried again; `None` when it has
    /// no rows left at all.
    pub async fn next_outbox_try(&self, channel: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let (count, at): (i64, Option<String>) = self.readers.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT COUNT(*), MIN(COALESCE(not_before, created_at)) FROM outbox WHERE channel = ?",
                )?
                .query_row([channel], |row| Ok((row.get(0)?, row.get(1)?)))?)
        })?;
        if count == 0 {
            return Ok(None);
        }
        Ok(Some(
            at.and_then(|raw| DateTime::parse_from_rfc3339(&raw).ok())
                .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
        ))
    }

    /// A post (or FYI) reached Slack: remembers where the message is, with its
    /// `posted` event, and removes the row. A request decided while its post was in
    /// flight gets a rewrite queued, so the message shows the outcome.
    pub async fn posted(&self, row: &Row, channel: String, ts: String) -> StoreResult<Approval> {
        let (seq, id, kind) = (row.seq, row.approval_id, row.kind);
        self.write(Box::new(move |conn| {
            let approval = {
                let mut statement = conn.prepare_cached(&format!(
                    "UPDATE approvals SET channel = ?, message_ts = ? WHERE id = ?
                         RETURNING {}",
                    crate::store::rows::APPROVAL_COLUMNS
                ))?;
                let mut rows = statement.query(rusqlite::params![channel, ts, id.to_string()])?;
                let row = rows
                    .next()?
                    .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished")))?;
                crate::store::rows::approval_from_row(row)?
            };
            let detail = serde_json::json!({ "channel": channel, "ts": ts });
            insert_event(conn, id, Utc::now(), &NewEvent::new("posted", None, detail))?;
            delete_in(conn, seq)?;
            // Decided, or voted on, while the post was in flight: the vote saw no
            // message to rewrite, so the rewrite is queued here.
            if kind == Kind::Post && (approval.status != Status::Pending || voted_on(conn, id)?) {
                enqueue_in(conn, id, &approval.channel, Kind::Update)?;
            }
            Ok(approval)
        }))
        .await
    }

    /// The row is done with (delivered, or never deliverable): removes it, recording
    /// `event` on the request's trail in the same transaction.
    pub async fn outbox_done(
        &self,
        seq: i64,
        audit: Option<(ApprovalId, NewEvent)>,
    ) -> StoreResult<()> {
        self.write(Box::new(move |conn| {
            if let Some((id, event)) = &audit {
                insert_event(conn, *id, Utc::now(), event)?;
            }
            delete_in(conn, seq)
        }))
        .await
    }

    /// The row failed and is worth trying again at `not_before`; `event` goes on the
    /// request's trail.
    pub async fn outbox_retry(
        &self,
        seq: i64,
        not_before: DateTime<Utc>,
        audit: (ApprovalId, NewEvent),
    ) -> StoreResult<()> {
        self.write(Box::new(move |conn| {
            insert_event(conn, audit.0, Utc::now(), &audit.1)?;
            conn.prepare_cached("UPDATE outbox SET not_before = ? WHERE seq = ?")?
                .execute(rusqlite::params![rfc3339(not_before), seq])?;
            Ok(())
        }))
        .await
    }

    /// Remembers the latest failure posting to `channel`.
    pub async fn record_trouble(&self, channel: &str, trouble: Trouble) -> StoreResult<()> {
        let channel = channel.to_owned();
        self.write(Box::new(move |conn| {
            conn.prepare_cached(
                "INSERT INTO channel_trouble (channel, code, text, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (channel) DO UPDATE SET code = ?2, text = ?3, at = ?4",
            )?
            .execute(rusqlite::params![
                channel,
                trouble.code,
                trouble.text,
                rfc3339(Utc::now())
            ])?;
            Ok(())
        }))
        .await
    }

    /// The last failure posting to `channel` at or after `since`, if any.
    pub async fn trouble_since(
        &self,
        channel: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Trouble>> {
        let row =
            sqlx::query("SELECT code, text FROM channel_trouble WHERE channel = ? AND at >= ?")
                .bind(channel)
                .bind(rfc3339(since))
                .fetch_optional(&self.reader)
                .await?;
        row.map(|row| {
            Ok(Trouble {
                code: row.try_get("code")?,
                text: row.try_get("text")?,
            })
        })
        .transpose()
    }
}

/// Whether anyone has approved `id` yet.
fn voted_on(conn: &rusqlite::Connection, id: ApprovalId) -> StoreResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM votes WHERE approval_id = ?")?
        .exists([id.to_string()])?)
}

fn delete_in(conn: &rusqlite::Connection, seq: i64) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE seq = ?")?
        .execute([seq])?;
    Ok(())
}

fn row_from(row: &rusqlite::Row<'_>) -> StoreResult<Row> {
    let id: String = row.get("approval_id")?;
    let kind: String = row.get("kind")?;
    let attempts: i64 = row.get("attempts")?;
    Ok(Row {
        seq: row.get("seq")?,
        approval_id: ApprovalId::parse(&id)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox approval_id {id}")))?,
        channel: row.get("channel")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox kind {kind}")))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        approval: None,
    })
}
