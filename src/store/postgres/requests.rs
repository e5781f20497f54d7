//! PostgreSQL: inserting, reading and deciding requests; the audit trail.
//!
//! An insert locks its agent's `agent_pending` row before counting, so replicas taking
//! the same agent's submissions at once cannot all pass its cap; the
//! `(agent, idempotency_key)` unique index makes a concurrent replay wait for the first
//! insert and then find its row. A keyed insert looks for its key again once it holds
//! the agent's lock: a replay whose original committed meanwhile (on any replica) is
//! answered with that request, never refused by the cap.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Postgres as Pg, Row as _, Transaction};

use super::{
    insert_event,
    listen::{notify, Note},
    outbox, Postgres,
};
use crate::model::{rfc3339, Approval, ApprovalId, Decision, NewApproval, Status};
use crate::store::{
    outbox::Kind,
    rows::{approval_from_row, event_from_row, parse_time, APPROVAL_COLUMNS},
    Event, Fate, Inserted, NewEvent, StoreError, StoreResult, Submission,
};

impl Postgres {
    /// Stores a submission in one transaction: looks for a replay of its key first; when
    /// the cap applies, locks the agent's `agent_pending` row, looks again, and counts;
    /// then inserts with `ON CONFLICT (agent, idempotency_key) DO NOTHING`, so a
    /// concurrent replay on another replica waits for the first commit and returns that
    /// request. A standing grant that would approve it is read `FOR SHARE`. The commit
    /// `NOTIFY`s every other replica of what it changed. A refusal (`KeyConflict`,
    /// `TooManyPending`) stores no request.
    pub async fn insert(&self, submission: Submission) -> StoreResult<Inserted> {
        let mut tx = self.begin().await?;
        let inserted = insert_in(&mut tx, &self.me, submission).await?;
        self.commit(tx).await?;
        Ok(inserted)
    }

    /// Request `id` as last committed by any replica; `None` when unknown (or pruned).
    pub async fn get(&self, id: ApprovalId) -> StoreResult<Option<Approval>> {
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    /// Ends the request, in one transaction, by the conditional `UPDATE` (only while
    /// `status = 'pending'`): its row lock makes a concurrent decision on another replica
    /// wait, then update nothing. `Some`: this call decided it, and its event, message
    /// rewrites, callbacks and `NOTIFY` commit with it; `None`: already final, or
    /// unknown.
    pub async fn decide(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
    ) -> StoreResult<Option<Approval>> {
        let mut tx = self.begin().await?;
        let decided = decide_in(&mut tx, &self.me, id, &decision, &event).await?;
        self.commit(tx).await?;
        Ok(decided)
    }

    /// Appends one event, timestamped now, in a transaction of its own, committed before
    /// this returns.
    pub async fn append_event(&self, id: ApprovalId, event: NewEvent) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_event(&mut tx, id, Utc::now(), &event).await?;
        self.commit(tx).await
    }

    /// Queues an event to be written within 500 ms, with whatever else is queued, in one
    /// transaction; identical entries are merged (`"count"` in the detail). For clicks
    /// that changed nothing: lost if the process dies first, and dropped at once on a
    /// read-only store.
    pub fn defer_event(&self, id: ApprovalId, event: NewEvent) {
        self.deferred.push(id, event);
    }

    /// Counts an event anyone can cause in a tally held in this process and written at
    /// most once per [`crate::store::deferred::HOLD`], when the request's trail is read
    /// here, or at close. Dropped on a read-only store.
    pub fn hold_event(&self, id: ApprovalId, event: NewEvent) {
        self.deferred.hold(id, event);
    }

    /// A request's audit trail, oldest first, after writing this replica's deferred
    /// entries and the request's held tallies, so it holds every click acknowledged
    /// here. Other replicas' deferred entries show once they flush (within 500 ms),
    /// their held tallies once due (within two minutes).
    pub async fn events(&self, id: ApprovalId) -> StoreResult<Vec<Event>> {
        self.deferred.release(id);
        self.deferred.flush().await?;
        let rows = sqlx::query(
            "SELECT seq, approval_id, at, kind, actor, detail FROM events
             WHERE approval_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Whether request `id`'s trail has an event of `kind`; with a `field` of
    /// `(key, value)`, only one whose `detail` has that top-level key equal to `value`,
    /// compared as text (`->>`). Deferred entries not yet flushed are not seen.
    pub async fn has_event(
        &self,
        id: ApprovalId,
        kind: &str,
        field: Option<(&str, &str)>,
    ) -> StoreResult<bool> {
        let (field, value) = field.unzip();
        let found = sqlx::query(
            "SELECT 1 FROM events WHERE approval_id = $1 AND kind = $2
               AND ($3::text IS NULL OR (detail::jsonb) ->> $3 = $4) LIMIT 1",
        )
        .bind(id.to_string())
        .bind(kind)
        .bind(field)
        .bind(value)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Requests, newest first (`created_at`, then id), optionally of one status and of
    /// one agent, at most `limit`.
    pub async fn list(
        &self,
        agent: Option<&str>,
        status: Option<Status>,
        limit: u32,
    ) -> StoreResult<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE ($1::text IS NULL OR status = $1) AND ($3::text IS NULL OR agent = $3)
             ORDER BY created_at DESC, id LIMIT $2"
        ))
        .bind(status.map(Status::as_str))
        .bind(i64::from(limit))
        .bind(agent)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    /// Whether `agent` already used this Idempotency-Key: one indexed read without a
    /// lock, for the limits (a replay goes through free). `insert` is what decides.
    pub async fn has_idempotency_key(&self, agent: &str, key: &str) -> StoreResult<bool> {
        let found =
            sqlx::query("SELECT 1 FROM approvals WHERE agent = $1 AND idempotency_key = $2")
                .bind(agent)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Pending requests of `agent` (all agents with `None`), summed from the
    /// `agent_pending` counters, which a trigger updates at each commit
    /// (`migrations/postgres/0005_pending_count_at_commit.sql`). A read without a lock:
    /// the cap itself is checked by `insert` under the agent's lock.
    pub async fn count_pending(&self, agent: Option<&str>) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pending), 0)::BIGINT FROM agent_pending
             WHERE ($1::text IS NULL OR agent = $1)",
        )
        .bind(agent)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The earliest `expires_at` of any pending request, on any replica; `None` when none
    /// is pending. `StoreError::Corrupt` when the time does not parse.
    pub async fn next_deadline(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let earliest: Option<String> =
            sqlx::query_scalar("SELECT MIN(expires_at) FROM approvals WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        earliest
            .map(|raw| parse_time(&raw, "expires_at"))
            .transpose()
    }

    /// Pending requests whose `expires_at` is at or before `now`, earliest first, at most
    /// `limit`. A read without a lock: every replica's deadline worker may get the same
    /// rows, and the conditional `decide` expires each once.
    pub async fn due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals
             WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
        ))
        .bind(rfc3339(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }
}

/// `agent`'s pending requests, its `agent_pending` row created if need be and locked
/// in one statement: the agent's other submissions, on any replica, wait here until
/// this transaction ends, so they count one after the other (READ COMMITTED alone
/// would let two see the same count and both insert).
pub(super) async fn lock_pending(
    tx: &mut Transaction<'static, Pg>,
    agent: &str,
) -> StoreResult<u64> {
    let pending: i64 = sqlx::query_scalar(
        "INSERT INTO agent_pending (agent, pending) VALUES ($1, 0)
         ON CONFLICT (agent) DO UPDATE SET pending = agent_pending.pending
         RETURNING pending",
    )
    .bind(agent)
    .fetch_one(&mut **tx)
    .await?;
    Ok(u64::try_from(pending).unwrap_or(0))
}

pub(super) async fn insert_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
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
        if let Some(found) = existing(tx, &new).await? {
            return Ok(found);
        }
    }
    if let Some(max) = max_pending {
        let pending = lock_pending(tx, &new.agent).await?;
        // A replay of a submission that committed while we waited for the lock (on
        // another replica): the first look above could not see it, this one can, and
        // a replay is never refused by the cap.
        if new.idempotency_key.is_some() {
            if let Some(found) = existing(tx, &new).await? {
                return Ok(found);
            }
        }
        if pending >= u64::from(max) {
            return Ok(Inserted::TooManyPending { pending });
        }
    }
    let context = new.context.as_ref().map(Value::to_string);
    let inserted = sqlx::query(
        "INSERT INTO approvals (id, agent, idempotency_key, request_hash, title, language, code,
             context, requester_slack_id, required_approvals, channel, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (agent, idempotency_key) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(&new.agent)
    .bind(&new.idempotency_key)
    .bind(&new.request_hash)
    .bind(&new.title)
    .bind(&new.language)
    .bind(&new.code)
    .bind(context)
    .bind(&new.requester_slack_id)
    .bind(i64::from(new.required_approvals))
    .bind(&channel)
    .bind(rfc3339(created_at))
    .bind(rfc3339(expires_at))
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Another replica stored the same key first (we waited for its commit).
        return existing(tx, &new).await?.ok_or_else(|| {
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
        tx,
        id,
        created_at,
        &NewEvent::new("submitted", Some(&new.agent), detail),
    )
    .await?;
    for event in &also {
        insert_event(tx, id, created_at, event).await?;
    }
    let mut used = None;
    if let (Fate::Review, Some(probe)) = (&fate, &grant) {
        if let Some(found) = super::grants::active_in(tx, &new.agent, probe, created_at).await? {
            fate = crate::store::grants::by_grant(&found, created_at);
            used = Some(found);
        }
    }
    // Before any decision below: a request decided at insert owes its callback too.
    if let Some(url) = &new.callback_url {
        super::callbacks::target_in(tx, id, url).await?;
    }
    let mut approval = Approval::stored(id, new, channel, created_at, expires_at);
    if let Some(grant) = &used {
        super::grants::record_use_in(tx, id, grant).await?;
    }
    match fate {
        Fate::Review => {
            super::nudges::schedule_in(tx, me, id, first_nudge).await?;
            outbox::enqueue_in(tx, me, id, &approval.channel, Kind::Post).await?;
            notify(tx, me, Note::Deadline(expires_at)).await?;
            notify(tx, me, Note::Changed(id)).await?;
        }
        Fate::Decided {
            decision,
            event,
            notify: fyi,
        } => {
            let Some(decided) = decide_in(tx, me, id, &decision, &event).await? else {
                return Err(StoreError::Corrupt(format!(
                    "{id} was not pending at insert"
                )));
            };
            if fyi {
                outbox::enqueue_in(tx, me, id, &decided.channel, Kind::Fyi).await?;
            }
            approval = decided;
        }
    }
    Ok(Inserted::Created(approval))
}

/// The request an earlier submission with the same agent and Idempotency-Key stored,
/// if there is one.
async fn existing(
    tx: &mut Transaction<'static, Pg>,
    new: &NewApproval,
) -> StoreResult<Option<Inserted>> {
    let row = sqlx::query(&format!(
        "SELECT {APPROVAL_COLUMNS}, request_hash FROM approvals
         WHERE agent = $1 AND idempotency_key = $2"
    ))
    .bind(&new.agent)
    .bind(&new.idempotency_key)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stored_hash: String = row.try_get("request_hash")?;
    let existing = approval_from_row(&row)?;
    Ok(Some(if stored_hash == new.request_hash {
        Inserted::Existing(existing)
    } else {
        Inserted::KeyConflict
    }))
}

/// The one write that ends a request (see the SQLite twin). The UPDATE takes the
/// row's lock: a concurrent decision on another replica waits, then re-checks
/// `status = 'pending'` against the committed row and updates nothing.
pub(super) async fn decide_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    id: ApprovalId,
    decision: &Decision,
    event: &NewEvent,
) -> StoreResult<Option<Approval>> {
    debug_assert!(decision.status.is_final());
    let row = sqlx::query(&format!(
        "UPDATE approvals SET status = $1, reason = $2, decided_by = $3, decided_at = $4
         WHERE id = $5 AND status = 'pending' RETURNING {APPROVAL_COLUMNS}"
    ))
    .bind(decision.status.as_str())
    .bind(&decision.reason)
    .bind(&decision.decided_by)
    .bind(rfc3339(decision.at))
    .bind(id.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let approval = approval_from_row(&row)?;
    insert_event(tx, id, decision.at, event).await?;
    if approval.message_ts.is_some() {
        outbox::enqueue_in(tx, me, id, &approval.channel, Kind::Update).await?;
    }
    super::nudges::escalation_update_in(tx, me, id, &approval.channel).await?;
    super::callbacks::on_decided_in(tx, me, &approval).await?;
    notify(tx, me, Note::Decided(id)).await?;
    Ok(Some(approval))
}
