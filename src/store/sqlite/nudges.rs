//! Reminders and escalation on SQLite: `approvals.next_nudge_at` and the escalation
//! columns (migration 0006). Firing is conditional on `next_nudge_at` still being the
//! value the worker read, so a nudge fires once however many looks race.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::{insert_event, outbox::enqueue_in, Sqlite};
use crate::model::{rfc3339, Approval, ApprovalId};
use crate::store::nudges::{Escalation, Fire, Nudgeable};
use crate::store::outbox::Kind;
use crate::store::rows::{approval_from_row, APPROVAL_COLUMNS};
use crate::store::{NewEvent, StoreError, StoreResult};

/// Sets a new request's first nudge time, inside its insert.
pub(super) fn schedule_in(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    at: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    if let Some(at) = at {
        conn.prepare_cached("UPDATE approvals SET next_nudge_at = ? WHERE id = ?")?
            .execute(rusqlite::params![rfc3339(at), id.to_string()])?;
    }
    Ok(())
}

/// Queues the rewrite of the escalation message, if the request has one (inside the
/// write of a vote or a decision, beside the first message's rewrite). The row goes in the lane of
/// the request's own channel (`lane`), which every decision already wakes; the
/// rewrite reads where the escalation message is from the request.
pub(super) fn escalation_update_in(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    lane: &str,
) -> StoreResult<()> {
    let found: Option<(Option<String>, Option<String>)> = conn
        .prepare_cached("SELECT escalation_channel, escalation_ts FROM approvals WHERE id = ?")?
        .query_row([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((Some(_), Some(_))) = found {
        enqueue_in(conn, id, lane, Kind::EscalationUpdate)?;
    }
    Ok(())
}

impl Sqlite {
    /// The earliest `next_nudge_at` of any pending request.
    pub async fn next_nudge(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let earliest: Option<String> = self.readers.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT MIN(next_nudge_at) FROM approvals WHERE status = 'pending' AND next_nudge_at IS NOT NULL",
                )?
                .query_row([], |row| row.get(0))?)
        })?;
        earliest
            .map(|raw| {
                DateTime::parse_from_rfc3339(&raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| StoreError::Corrupt(format!("next_nudge_at {raw}")))
            })
            .transpose()
    }

    /// Pending requests whose nudge is due at `now`, earliest first, at most `limit`.
    pub async fn due_nudges(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Nudgeable>> {
        self.write(Box::new(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {APPROVAL_COLUMNS}, next_nudge_at, reminders, escalated_at FROM approvals
                 WHERE status = 'pending' AND next_nudge_at IS NOT NULL AND next_nudge_at <= ?
                 ORDER BY next_nudge_at LIMIT ?"
            ))?;
            let mut rows = statement.query(rusqlite::params![rfc3339(now), i64::from(limit)])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let escalated: Option<String> = row.get("escalated_at")?;
                let reminders: i64 = row.get("reminders")?;
                out.push(Nudgeable {
                    approval: approval_from_row(row)?,
                    due_at: row.get("next_nudge_at")?,
                    reminders: u32::try_from(reminders).unwrap_or(0),
                    escalated: escalated.is_some(),
                });
            }
            Ok(out)
        }))
        .await
    }

    /// Fires one nudge if the request is still pending and still due at `due_at` (so
    /// it fires once): records it, queues its Slack posts, moves the deadline on
    /// escalation. Returns the request as it now stands, `None` if nothing fired.
    pub async fn fire_nudge(
        &self,
        id: ApprovalId,
        due_at: String,
        fire: Fire,
    ) -> StoreResult<Option<Approval>> {
        let now = Utc::now();
        self
            .write(Box::new(move |conn| {
                let next = fire.next.map(rfc3339);
                let (escalate, channel, extends_ms) = match &fire.escalate {
                    Some((channel, extends)) => (true, channel.clone(), extends.num_milliseconds()),
                    None => (false, None, 0),
                };
                let approval = {
                    let mut statement = conn.prepare_cached(&format!(
                        "UPDATE approvals SET next_nudge_at = ?1, reminders = ?2,
                           escalated_at = CASE WHEN ?3 THEN ?4 ELSE escalated_at END,
                           escalation_channel = CASE WHEN ?3 THEN ?5 ELSE escalation_channel END,
                           expires_at = CASE WHEN ?3 AND ?6 > 0 THEN
                               strftime('%Y-%m-%dT%H:%M:%fZ', expires_at, printf('+%.3f seconds', ?6 / 1000.0))
                             ELSE expires_at END
                         WHERE id = ?7 AND status = 'pending' AND next_nudge_at = ?8
                         RETURNING {APPROVAL_COLUMNS}"
                    ))?;
                    let mut rows = statement.query(rusqlite::params![
                        next,
                        i64::from(fire.reminders),
                        escalate,
                        rfc3339(now),
                        channel,
                        extends_ms,
                        id.to_string(),
                        due_at,
                    ])?;
                    let Some(row) = rows.next()? else {
                        return Ok(None);
                    };
                    approval_from_row(row)?
                };
                for event in &fire.events {
                    insert_event(conn, id, now, event)?;
                }
                if fire.remind && approval.message_ts.is_some() {
                    enqueue_in(conn, id, &approval.channel, Kind::Remind)?;
                }
                if let Some(channel) = channel.filter(|_| escalate) {
                    enqueue_in(conn, id, &channel, Kind::Escalate)?;
                }
                Ok(Some(approval))
            }))
            .await
    }

    /// Whether and where request `id` was escalated.
    pub async fn escalation(&self, id: ApprovalId) -> StoreResult<Option<Escalation>> {
        let row: Option<(Option<String>, Option<String>, Option<String>)> =
            self.readers.read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT escalated_at, escalation_channel, escalation_ts FROM approvals WHERE id = ?",
                    )?
                    .query_row([id.to_string()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()?)
            })?;
        Ok(row.and_then(|(at, channel, ts)| {
            Some(Escalation {
                at: at?,
                channel,
                ts,
            })
        }))
    }

    /// See [`crate::store::Store::escalation_posted`]; the lane to wake when a rewrite
    /// was queued.
    pub async fn escalation_posted(
        &self,
        seq: i64,
        id: ApprovalId,
        channel: String,
        ts: String,
    ) -> StoreResult<Option<String>> {
        self
            .write(Box::new(move |conn| {
                let (status, lane): (String, String) = conn
                    .prepare_cached(
                        "UPDATE approvals SET escalation_channel = ?, escalation_ts = ? WHERE id = ? RETURNING status, channel",
                    )?
                    .query_row(rusqlite::params![channel, ts, id.to_string()], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?;
                let detail = serde_json::json!({ "channel": channel, "ts": ts });
                insert_event(conn, id, Utc::now(), &NewEvent::new("escalation_posted", None, detail))?;
                conn.prepare_cached("DELETE FROM outbox WHERE seq = ?")?.execute([seq])?;
                // The post shows the votes counted when it was rendered; one counted
                // since then would be missing from it until the decision.
                let voted: bool = conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM votes WHERE approval_id = ?)")?
                    .query_row([id.to_string()], |r| r.get(0))?;
                if status == "pending" && !voted {
                    return Ok(None);
                }
                // In the request's own lane, behind any rewrite a vote or the decision
                // queued there, so a pending rendering never lands after the final one.
                enqueue_in(conn, id, &lane, Kind::EscalationUpdate)?;
                Ok(Some(lane))
            }))
            .await
    }
}
