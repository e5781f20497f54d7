//! SQLite: inserting, reading and deciding requests; the audit trail.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;
use serde_json::Value;

use super::{insert_event, outbox, Sqlite};
use crate::model::{rfc3339, Approval, ApprovalId, Decision, NewApproval, Status};
use crate::store::{
    rows::{approval_from_row, event_from_row, APPROVAL_COLUMNS},
    Event, Fate, Inserted, NewEvent, StoreError, StoreResult, Submission,
};

impl Sqlite {
    /// Records a new request with its `submitted` event (and routing events, and the
    /// automatic decision or the outbox row that will post it) in one transaction, or
    /// finds the request an earlier call with the same Idempotency-Key created.
    pub async fn insert(&self, submission: Submission) -> StoreResult<Inserted> {
        self.write(Box::new(move |conn| insert_in(conn, submission)))
            .await
    }

    /// Request `id` as last committed, read on the caller's thread through a read-only
    /// connection (`readers`), beside the writer: the lookup every click makes. `None`
    /// when unknown (or pruned).
    pub async fn get(&self, id: ApprovalId) -> StoreResult<Option<Approval>> {
        static BY_ID: LazyLock<String> =
            LazyLock::new(|| format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"));
        self.readers.read(|conn| {
            conn.prepare_cached(&BY_ID)?
                .query_row([id.to_string()], |row| Ok(approval_from_row(row)))
                .optional()?
                .transpose()
        })
    }

    /// Ends a request if, and only if, it is still pending. `Some` means this call
    /// decided it; `None` means something else got there first (or the id is unknown).
    pub async fn decide(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
    ) -> StoreResult<Option<Approval>> {
        self.write(Box::new(move |conn| decide_in(conn, id, &decision, &event)))
            .await
    }

    /// Appends one event to a request's audit trail, durably, before returning.
    pub async fn append_event(&self, id: ApprovalId, event: NewEvent) -> StoreResult<()> {
        self.write(Box::new(move |conn| {
            insert_event(conn, id, Utc::now(), &event)
        }))
        .await
    }

    /// Queues an event for the next write batch without waiting for it, merging
    /// repeats (see [`super::writer::Writer::defer_event`]). For evidence of clicks
    /// that changed nothing.
    pub fn defer_event(&self, id: ApprovalId, event: NewEvent) {
        if let Some(writer) = &self.writer {
            writer.defer_event(id, event);
        }
    }

    /// Counts an event anyone can cause in a tally written at most once per
    /// [`crate::store::deferred::HOLD`] (see [`super::writer::Writer::hold_event`]).
    /// Dropped on a read-only store.
    pub fn hold_event(&self, id: ApprovalId, event: NewEvent) {
        if let Some(writer) = &self.writer {
            writer.hold_event(id, event);
        }
    }

    /// A request's audit trail, oldest first, including clicks whose entries were
    /// waiting for the next write batch and the request's held tallies.
    pub async fn events(&self, id: ApprovalId) -> StoreResult<Vec<Event>> {
        if let Some(writer) = &self.writer {
            writer.flush_deferred_of(id).await?;
        }
        self.readers.read(|conn| {
            conn.prepare_cached("SELECT seq, approval_id, at, kind, actor, detail FROM events WHERE approval_id = ? ORDER BY seq")?
                .query_map([id.to_string()], |row| Ok(event_from_row(row)))?
                .map(|row| row?)
                .collect()
        })
    }

    /// Whether the request's trail already has an event of `kind` whose `detail` has
    /// `field` equal to `value` (a Deny click's trigger id, an upload).
    pub async fn has_event(
        &self,
        id: ApprovalId,
        kind: &str,
        field: Option<(&str, &str)>,
    ) -> StoreResult<bool> {
        let (path, value) = field.map_or((None, None), |(f, v)| (Some(format!("$.{f}")), Some(v)));
        self.readers.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM events WHERE approval_id = ?1 AND kind = ?2
                       AND (?3 IS NULL OR json_extract(detail, ?3) = ?4) LIMIT 1",
                )?
                .exists(rusqlite::params![id.to_string(), kind, path, value])?)
        })
    }

    /// Requests, newest first, optionally of one status.
    pub async fn list(
        &self,
        agent: Option<&str>,
        status: Option<Status>,
        limit: u32,
    ) -> StoreResult<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE (?1 IS NULL OR status = ?1) AND (?3 IS NULL OR agent = ?3)
             ORDER BY created_at DESC, id LIMIT ?2"
        ))
        .bind(status.map(Status::as_str))
        .bind(i64::from(limit))
        .bind(agent)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    /// Whether `agent` already used this Idempotency-Key: such a submission is a replay,
    /// which the limits let through for free.
    pub async fn has_idempotency_key(&self, agent: &str, key: &str) -> StoreResult<bool> {
        self.readers.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM approvals WHERE agent = ? AND idempotency_key = ?")?
                .exists([agent, key])?)
        })
    }

    /// Pending requests of one agent (`Some`) or of all agents (`None`), for the
    /// per-agent cap and the pending gauge.
    pub async fn count_pending(&self, agent: Option<&str>) -> StoreResult<u64> {
        let count: i64 = self.readers.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(pending), 0) FROM agent_pending WHERE (?1 IS NULL OR agent = ?1)",
                )?
                .query_row([agent], |row| row.get(0))?)
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The earliest deadline of any pending request: when the deadline worker must
    /// look next. One index probe.
    pub async fn next_deadline(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let earliest: Option<String> = self.readers.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT MIN(expires_at) FROM approvals WHERE status = 'pending'")?
                .query_row([], |row| row.get(0))?)
        })?;
        earliest
            .map(|raw| {
                DateTime::parse_from_rfc3339(&raw)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| StoreError::Corrupt(format!("expires_at {raw}")))
            })
            .transpose()
    }

    /// Pending requests whose deadline is at or before `now`, earliest first, at most
    /// `limit`.
    pub async fn due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE status = 'pending' AND expires_at <= ? ORDER BY expires_at LIMIT ?"
        ))
        .bind(rfc3339(now))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }
}

/// `agent`'s pending requests, for its cap (`agent_pending`, kept by triggers). The
/// one writer makes the count and the insert that follows it atomic.
pub(super) fn pending_of(conn: &rusqlite::Connection, agent: &str) -> StoreResult<u64> {
    let pending: Option<i64> = conn
        .prepare_cached("SELECT pending FROM agent_pending WHERE agent = ?")?
        .query_row([agent], |row| row.get(0))
        .optional()?;
    Ok(u64::try_from(pending.unwrap_or(0)).unwrap_or(0))
}

pub(super) fn insert_in(
    conn: &rusqlite::Connection,
    submission: Submission,
) -> StoreResult<Inserted> {
    let Submission {
        id,
        new,
        channel,
        created_at,
        expires_at,
        also,
        mut fate,
        max_pending,
        grant,
        first_nudge,
    } = submission;
    if new.idempotency_key.is_some() {
        if let Some(found) = existing(conn, &new)? {
            return Ok(found);
        }
    }
    if let Some(max) = max_pending {
        let pending = pending_of(conn, &new.agent)?;
        if pending >= u64::from(max) {
            return Ok(Inserted::TooManyPending { pending });
        }
    }
    let context = new.context.as_ref().map(Value::to_string);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO approvals (id, agent, idempotency_key, request_hash, title, language, code,
                 context, requester_slack_id, required_approvals, channel, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (agent, idempotency_key) DO NOTHING",
        )?
        .execute(rusqlite::params![
            id.to_string(),
            new.agent,
            new.idempotency_key,
            new.request_hash,
            new.title,
            new.language,
            new.code,
            context,
            new.requester_slack_id,
            new.required_approvals,
            channel,
            rfc3339(created_at),
            rfc3339(expires_at),
        ])?;
    if inserted == 0 {
        // Another job of this batch stored the same key first.
        return existing(conn, &new)?.ok_or_else(|| {
            StoreError::Corrupt("an Idempotency-Key conflict without a row".into())
        });
    }
    let detail = serde_json::json!({
        "channel": channel,
        "timeout_secs": new.timeout_secs,
        "language": new.language,
        "title": new.title,
        "required_approvals": new.required_approvals,
        "idempotency_key": new.idempotency_key.is_some(),
    });
    insert_event(
        conn,
        id,
        created_at,
        &NewEvent::new("submitted", Some(&new.agent), detail),
    )?;
    for event in &also {
        insert_event(conn, id, created_at, event)?;
    }
    let mut used = None;
    if let (Fate::Review, Some(probe)) = (&fate, &grant) {
        if let Some(found) = super::grants::active_in(conn, &new.agent, probe, created_at)? {
            fate = crate::store::grants::by_grant(&found, created_at);
            used = Some(found);
        }
    }
    // Before any decision below: a request decided at insert owes its callback too.
    if let Some(url) = &new.callback_url {
        super::callbacks::target_in(conn, id, url)?;
    }
    let mut approval = Approval::stored(id, new, channel, created_at, expires_at);
    if let Some(grant) = &used {
        super::grants::record_use_in(conn, id, grant)?;
    }
    match fate {
        Fate::Review => {
            super::nudges::schedule_in(conn, id, first_nudge)?;
            outbox::enqueue_in(
                conn,
                id,
                &approval.channel,
                crate::store::outbox::Kind::Post,
            )?;
        }
        Fate::Decided {
            decision,
            event,
            notify,
        } => {
            let Some(decided) = decide_in(conn, id, &decision, &event)? else {
                return Err(StoreError::Corrupt(format!(
                    "{id} was not pending at insert"
                )));
            };
            if notify {
                outbox::enqueue_in(conn, id, &decided.channel, crate::store::outbox::Kind::Fyi)?;
            }
            approval = decided;
        }
    }
    Ok(Inserted::Created(approval))
}

/// The request an earlier submission with the same agent and Idempotency-Key stored,
/// if there is one.
fn existing(conn: &rusqlite::Connection, new: &NewApproval) -> StoreResult<Option<Inserted>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {APPROVAL_COLUMNS}, request_hash FROM approvals WHERE agent = ? AND idempotency_key = ?"
    ))?;
    let mut rows = statement.query(rusqlite::params![new.agent, new.idempotency_key])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let stored_hash: String = row.get("request_hash")?;
    let existing = approval_from_row(row)?;
    Ok(Some(if stored_hash == new.request_hash {
        Inserted::Existing(existing)
    } else {
        Inserted::KeyConflict
    }))
}

/// The one write that ends a request, inside the caller's transaction: conditional on
/// the request still being pending, together with its event and, when the request has
/// a Slack message, the outbox row that rewrites it. `None` means it was not pending
/// any more and nothing was written. Every decision goes through here, which is what
/// makes the first decision win.
pub(super) fn decide_in(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    decision: &Decision,
    event: &NewEvent,
) -> StoreResult<Option<Approval>> {
    debug_assert!(decision.status.is_final());
    let approval = {
        let mut statement = conn.prepare_cached(&format!(
            "UPDATE approvals SET status = ?, reason = ?, decided_by = ?, decided_at = ?
             WHERE id = ? AND status = 'pending' RETURNING {APPROVAL_COLUMNS}"
        ))?;
        let mut rows = statement.query(rusqlite::params![
            decision.status.as_str(),
            decision.reason,
            decision.decided_by,
            rfc3339(decision.at),
            id.to_string(),
        ])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        approval_from_row(row)?
    };
    insert_event(conn, id, decision.at, event)?;
    if approval.message_ts.is_some() {
        outbox::enqueue_in(
            conn,
            id,
            &approval.channel,
            crate::store::outbox::Kind::Update,
        )?;
    }
    super::nudges::escalation_update_in(conn, id, &approval.channel)?;
    super::callbacks::on_decided_in(conn, &approval)?;
    Ok(Some(approval))
}
