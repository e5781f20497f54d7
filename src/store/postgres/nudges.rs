//! PostgreSQL: reminders and escalation (`approvals.next_nudge_at` and the escalation
//! columns; migration postgres/0002). A nudge fires by a conditional `UPDATE` (still
//! pending, still due at the value the worker read): the row lock makes it fire once
//! however many replicas' workers race for it. New nudge times are `NOTIFY`ed, so every
//! replica's nudge worker knows when to look.

use chrono::{DateTime, Utc};
use sqlx::{Postgres as Pg, Row as _, Transaction};

use super::{
    insert_event,
    listen::{notify, Note},
    outbox::{channel_of, enqueue_in, fence_in},
    Postgres,
};
use crate::model::{rfc3339, Approval, ApprovalId};
use crate::store::nudges::{Escalation, Fire, Nudgeable};
use crate::store::outbox::Kind;
use crate::store::rows::{approval_from_row, parse_time, APPROVAL_COLUMNS};
use crate::store::{NewEvent, StoreError, StoreResult};

/// Sets a new request's first nudge time, inside its insert.
pub(super) async fn schedule_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    id: ApprovalId,
    at: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    if let Some(at) = at {
        sqlx::query("UPDATE approvals SET next_nudge_at = $1 WHERE id = $2")
            .bind(rfc3339(at))
            .bind(id.to_string())
            .execute(&mut **tx)
            .await?;
        notify(tx, me, Note::Nudge(at)).await?;
    }
    Ok(())
}

/// Queues the rewrite of the escalation message, if the request has one (see the
/// SQLite twin).
pub(super) async fn escalation_update_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    id: ApprovalId,
    lane: &str,
) -> StoreResult<()> {
    let escalated: Option<bool> = sqlx::query_scalar(
        "SELECT escalation_channel IS NOT NULL AND escalation_ts IS NOT NULL
         FROM approvals WHERE id = $1",
    )
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    if escalated == Some(true) {
        enqueue_in(tx, me, id, lane, Kind::EscalationUpdate).await?;
    }
    Ok(())
}

impl Postgres {
    /// The earliest `next_nudge_at` of any pending request, on any replica; `None` when
    /// no pending request has one. `StoreError::Corrupt` when the time does not parse.
    pub async fn next_nudge(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let earliest: Option<String> = sqlx::query_scalar(
            "SELECT MIN(next_nudge_at) FROM approvals
             WHERE status = 'pending' AND next_nudge_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        earliest
            .map(|raw| parse_time(&raw, "next_nudge_at"))
            .transpose()
    }

    /// Pending requests whose nudge is due at `now`, earliest first, at most `limit`. A
    /// read without a lock: every replica's worker may get the same rows, and
    /// `fire_nudge`'s conditional `UPDATE` decides which fires each.
    pub async fn due_nudges(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Nudgeable>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS}, next_nudge_at, reminders, escalated_at FROM approvals
             WHERE status = 'pending' AND next_nudge_at IS NOT NULL AND next_nudge_at <= $1
             ORDER BY next_nudge_at LIMIT $2"
        ))
        .bind(rfc3339(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let escalated: Option<String> = row.try_get("escalated_at")?;
                let reminders: i64 = row.try_get("reminders")?;
                Ok(Nudgeable {
                    approval: approval_from_row(row)?,
                    due_at: row.try_get("next_nudge_at")?,
                    reminders: u32::try_from(reminders).unwrap_or(0),
                    escalated: escalated.is_some(),
                })
            })
            .collect()
    }

    /// Fires one nudge in one transaction, by a conditional `UPDATE` (still pending,
    /// `next_nudge_at` still the `due_at` text the worker read): racing workers on
    /// several replicas queue on the row lock, and the losers re-check and get `None`,
    /// writing nothing. The winner records `fire.events`, queues the reminder (only once
    /// the message is posted) and the escalation post, moves `expires_at` on escalation
    /// and `NOTIFY`s the next nudge time. Returns the request as it now stands.
    pub async fn fire_nudge(
        &self,
        id: ApprovalId,
        due_at: String,
        fire: Fire,
    ) -> StoreResult<Option<Approval>> {
        let now = Utc::now();
        let (escalate, channel, extends_ms) = match &fire.escalate {
            Some((channel, extends)) => (true, channel.clone(), extends.num_milliseconds()),
            None => (false, None, 0),
        };
        let mut tx = self.begin().await?;
        // Conditional on the value the worker read: the row lock orders racing fires,
        // and the loser re-checks against the winner's commit and updates nothing.
        let row = sqlx::query(&format!(
            "UPDATE approvals SET next_nudge_at = $1, reminders = $2,
               escalated_at = CASE WHEN $3 THEN $4 ELSE escalated_at END,
               escalation_channel = CASE WHEN $3 THEN $5 ELSE escalation_channel END,
               expires_at = CASE WHEN $3 AND $6 > 0 THEN
                   to_char((expires_at::timestamptz + $6 * interval '1 millisecond')
                             AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
                 ELSE expires_at END
             WHERE id = $7 AND status = 'pending' AND next_nudge_at = $8
             RETURNING {APPROVAL_COLUMNS}"
        ))
        .bind(fire.next.map(rfc3339))
        .bind(i64::from(fire.reminders))
        .bind(escalate)
        .bind(rfc3339(now))
        .bind(&channel)
        .bind(extends_ms)
        .bind(id.to_string())
        .bind(&due_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let approval = approval_from_row(&row)?;
        for event in &fire.events {
            insert_event(&mut tx, id, now, event).await?;
        }
        if fire.remind && approval.message_ts.is_some() {
            enqueue_in(&mut tx, &self.me, id, &approval.channel, Kind::Remind).await?;
        }
        if let Some(channel) = channel.filter(|_| escalate) {
            enqueue_in(&mut tx, &self.me, id, &channel, Kind::Escalate).await?;
        }
        if let Some(next) = fire.next {
            notify(&mut tx, &self.me, Note::Nudge(next)).await?;
        }
        self.commit(tx).await?;
        Ok(Some(approval))
    }

    /// Whether and where request `id` was escalated: `None` for an unknown request or one
    /// never escalated; `channel` and `ts` stay `None` until the escalation post reaches
    /// Slack (`channel` for good when the rule names none).
    pub async fn escalation(&self, id: ApprovalId) -> StoreResult<Option<Escalation>> {
        let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT escalated_at, escalation_channel, escalation_ts FROM approvals WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(at, channel, ts)| {
            Some(Escalation {
                at: at?,
                channel,
                ts,
            })
        }))
    }

    /// See the SQLite twin; the lane to wake when a rewrite was queued.
    pub async fn escalation_posted(
        &self,
        seq: i64,
        id: ApprovalId,
        channel: String,
        ts: String,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.begin().await?;
        // Completes an outbox row: only while its lane is still ours (`outbox::fence_in`).
        if let Some(lane) = channel_of(&mut tx, seq).await? {
            fence_in(&mut tx, &self.me, &lane).await?;
        }
        let (status, lane): (String, String) = sqlx::query_as(
            "UPDATE approvals SET escalation_channel = $1, escalation_ts = $2 WHERE id = $3
             RETURNING status, channel",
        )
        .bind(&channel)
        .bind(&ts)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished")))?;
        let detail = serde_json::json!({ "channel": channel, "ts": ts });
        insert_event(
            &mut tx,
            id,
            Utc::now(),
            &NewEvent::new("escalation_posted", None, detail),
        )
        .await?;
        sqlx::query("DELETE FROM outbox WHERE seq = $1")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        // See the SQLite twin: a vote counted after the post was rendered. The row
        // lock this UPDATE holds orders this read against any vote in flight, and
        // under READ COMMITTED (PostgreSQL's default, which greenlight keeps) this
        // statement sees a vote committed before the lock was granted.
        let voted: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM votes WHERE approval_id = $1)")
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?;
        let stale = status != "pending" || voted;
        if stale {
            // In the request's own lane: see the SQLite twin.
            enqueue_in(&mut tx, &self.me, id, &lane, Kind::EscalationUpdate).await?;
        }
        self.commit(tx).await?;
        Ok(stale.then_some(lane))
    }
}
