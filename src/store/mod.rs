//! Durable state: approval requests and their append-only audit trail, in SQLite.
//!
//! Every state change is written (and committed) here before anyone is told about it,
//! so a crash at any point loses nothing that was reported. The one write that ends a
//! request is conditional on it still being pending, which is what makes "first
//! decision wins" hold across concurrent clicks, timeouts and cancels.
//!
//! Writes go through a single connection (SQLite admits one writer at a time anyway;
//! queuing in the pool is cheaper than retrying on `SQLITE_BUSY`), reads through a
//! small pool that WAL mode lets run beside the writer.

pub mod retention;
mod rows;
mod votes;

use std::{str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};

use crate::approval::{rfc3339, Approval, ApprovalId, Decision, NewApproval, Status};
use rows::{approval_from_row, event_from_row, APPROVAL_COLUMNS};
pub use votes::Vote;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What inserting a request did.
#[derive(Debug)]
pub enum Inserted {
    /// A new request.
    Created(Approval),
    /// The agent already sent this Idempotency-Key with the same body.
    Existing(Approval),
    /// The agent already sent this Idempotency-Key with a different body.
    KeyConflict,
}

/// One audit event.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Event {
    pub seq: i64,
    pub approval_id: String,
    pub at: String,
    pub kind: String,
    pub actor: Option<String>,
    pub detail: Value,
}

/// An event to append: what happened, who did it, and its particulars.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub actor: Option<String>,
    pub detail: Value,
}

impl NewEvent {
    pub fn new(kind: &'static str, actor: Option<&str>, detail: Value) -> Self {
        Self {
            kind,
            actor: actor.map(str::to_owned),
            detail,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed decision survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self { writer, reader })
    }

    /// Opens an existing database read-only, without migrating it: for tools that
    /// only look (`audit export`, `doctor`). A typo in the path is an error, not a new
    /// empty database, and a running `serve` of another version is never migrated
    /// under its feet.
    pub async fn open_read_only(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
        })
    }

    /// The file behind a `sqlite:` URL, if it names one.
    pub fn file_of(url: &str) -> Option<std::path::PathBuf> {
        let options = SqliteConnectOptions::from_str(url).ok()?;
        Some(options.get_filename().to_path_buf())
    }

    /// Versions of the migrations this binary carries that the database has not
    /// applied yet (all of them for a database greenlight never started on).
    pub async fn pending_migrations(&self) -> StoreResult<Vec<i64>> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&self.reader)
                .await
                .unwrap_or_default();
        Ok(sqlx::migrate!("./migrations")
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    /// Cheap liveness check for readiness probes and `doctor`.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    /// Whether `agent` already used this Idempotency-Key: such a submission is a replay,
    /// which the limits let through for free.
    pub async fn has_idempotency_key(&self, agent: &str, key: &str) -> StoreResult<bool> {
        let found = sqlx::query("SELECT 1 FROM approvals WHERE agent = ? AND idempotency_key = ?")
            .bind(agent)
            .bind(key)
            .fetch_optional(&self.reader)
            .await?;
        Ok(found.is_some())
    }

    /// Pending requests of one agent (`Some`) or of all agents (`None`), for the
    /// per-agent cap and the pending gauge.
    pub async fn count_pending(&self, agent: impl Into<Option<&str>>) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND (?1 IS NULL OR agent = ?1)",
        )
        .bind(agent.into())
        .fetch_one(&self.reader)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Closes both pools at shutdown. Closing the last connection checkpoints the WAL
    /// into the database file, so the next start (or a backup) reads one file.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Records a new request and its `submitted` event in one transaction, or finds
    /// the request an earlier call with the same Idempotency-Key created.
    ///
    /// `also` are further events of the submission itself (how it was routed): written
    /// in the same transaction, so a stored request never lacks them.
    pub async fn insert(
        &self,
        id: ApprovalId,
        new: &NewApproval,
        channel: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        also: &[NewEvent],
    ) -> StoreResult<Inserted> {
        let mut tx = self.writer.begin().await?;
        let context = new.context.as_ref().map(Value::to_string);
        let inserted = sqlx::query(
            "INSERT INTO approvals (id, agent, idempotency_key, request_hash, title, language, code,
                 context, requester_slack_id, required_approvals, channel, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
        .bind(new.required_approvals)
        .bind(channel)
        .bind(rfc3339(created_at))
        .bind(rfc3339(expires_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();

        if inserted == 0 {
            let row = sqlx::query(&format!(
                "SELECT {APPROVAL_COLUMNS}, request_hash FROM approvals WHERE agent = ? AND idempotency_key = ?"
            ))
            .bind(&new.agent)
            .bind(&new.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            let stored_hash: String = sqlx::Row::try_get(&row, "request_hash")?;
            let existing = approval_from_row(&row)?;
            return Ok(if stored_hash == new.request_hash {
                Inserted::Existing(existing)
            } else {
                Inserted::KeyConflict
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
            &mut tx,
            id,
            created_at,
            &NewEvent::new("submitted", Some(&new.agent), detail),
        )
        .await?;
        for event in also {
            insert_event(&mut tx, id, created_at, event).await?;
        }
        tx.commit().await?;
        self.get(id)
            .await?
            .map(Inserted::Created)
            .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished after insert")))
    }

    pub async fn get(&self, id: ApprovalId) -> StoreResult<Option<Approval>> {
        let row = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    /// Remembers where the Slack message is, with its `posted` event.
    pub async fn set_message(
        &self,
        id: ApprovalId,
        channel: &str,
        ts: &str,
    ) -> StoreResult<Approval> {
        let mut tx = self.writer.begin().await?;
        // Posted after it was decided (the post was in flight): the message now shows
        // a stale, pending state until it is updated.
        sqlx::query(
            "UPDATE approvals SET channel = ?, message_ts = ?, message_stale = (status != 'pending')
             WHERE id = ?",
        )
            .bind(channel)
            .bind(ts)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let detail = serde_json::json!({ "channel": channel, "ts": ts });
        insert_event(
            &mut tx,
            id,
            Utc::now(),
            &NewEvent::new("posted", None, detail),
        )
        .await?;
        tx.commit().await?;
        self.get(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished after posting")))
    }

    /// Ends a request if, and only if, it is still pending. `Some` means this call
    /// decided it; `None` means something else got there first (or the id is unknown).
    pub async fn finish(
        &self,
        id: ApprovalId,
        decision: &Decision,
        event: &NewEvent,
    ) -> StoreResult<Option<Approval>> {
        let mut tx = self.writer.begin().await?;
        if !decide_in(&mut tx, id, decision, event).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        self.get(id).await
    }

    /// The Slack message of `id` now shows its final state (or never will: it is gone).
    pub async fn mark_message_synced(&self, id: ApprovalId) -> StoreResult<()> {
        sqlx::query("UPDATE approvals SET message_stale = 0 WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Final requests whose Slack message may still show them as pending.
    pub async fn stale_messages(&self) -> StoreResult<Vec<ApprovalId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM approvals WHERE message_stale = 1 AND status != 'pending' ORDER BY decided_at",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(ids.iter().filter_map(|id| ApprovalId::parse(id)).collect())
    }

    /// Appends one event to a request's audit trail.
    pub async fn append_event(&self, id: ApprovalId, event: &NewEvent) -> StoreResult<()> {
        let mut conn = self.writer.acquire().await?;
        insert_event(&mut conn, id, Utc::now(), event).await
    }

    /// A request's audit trail, oldest first.
    pub async fn events(&self, id: ApprovalId) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query("SELECT seq, approval_id, at, kind, actor, detail FROM events WHERE approval_id = ? ORDER BY seq")
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Every pending request, for re-arming deadlines after a restart.
    pub async fn pending(&self) -> StoreResult<Vec<Approval>> {
        self.list(Some(Status::Pending), u32::MAX).await
    }

    /// Requests, newest first, optionally of one status.
    pub async fn list(&self, status: Option<Status>, limit: u32) -> StoreResult<Vec<Approval>> {
        let rows = sqlx::query(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE (?1 IS NULL OR status = ?1)
             ORDER BY created_at DESC, id LIMIT ?2"
        ))
        .bind(status.map(Status::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(approval_from_row).collect()
    }

    /// Audit events in order, from `after_seq` (exclusive), optionally only those at or
    /// after `since`; at most `limit`. Export pages through this so a large trail never
    /// sits in memory at once.
    pub async fn events_page(
        &self,
        since: Option<DateTime<Utc>>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT seq, approval_id, at, kind, actor, detail FROM events
             WHERE seq > ?1 AND (?2 IS NULL OR at >= ?2) ORDER BY seq LIMIT ?3",
        )
        .bind(after_seq)
        .bind(since.map(rfc3339))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Deletes final requests decided before `cutoff`, with their events. Pending
    /// requests are never pruned, however old. Returns how many requests went.
    pub async fn prune_decided_before(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let cutoff = rfc3339(cutoff);
        let mut tx = self.writer.begin().await?;
        // Everything that refers to a pruned request goes with it, in one transaction.
        for table in ["events", "votes"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE approval_id IN
                   (SELECT id FROM approvals WHERE status != 'pending' AND decided_at < ?)"
            ))
            .bind(&cutoff)
            .execute(&mut *tx)
            .await?;
        }
        let pruned =
            sqlx::query("DELETE FROM approvals WHERE status != 'pending' AND decided_at < ?")
                .bind(&cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(pruned)
    }
}

/// The one write that ends a request, inside the caller's transaction: conditional on
/// the request still being pending, together with its event. `false` means it was not
/// pending any more and nothing was written. Every decision goes through here, which is
/// what makes the first decision win.
async fn decide_in(
    conn: &mut sqlx::SqliteConnection,
    id: ApprovalId,
    decision: &Decision,
    event: &NewEvent,
) -> StoreResult<bool> {
    debug_assert!(decision.status.is_final());
    let changed = sqlx::query(
        "UPDATE approvals SET status = ?, reason = ?, decided_by = ?, decided_at = ?,
             message_stale = (message_ts IS NOT NULL)
         WHERE id = ? AND status = 'pending'",
    )
    .bind(decision.status.as_str())
    .bind(&decision.reason)
    .bind(&decision.decided_by)
    .bind(rfc3339(decision.at))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(false);
    }
    insert_event(conn, id, decision.at, event).await?;
    Ok(true)
}

async fn insert_event(
    conn: &mut sqlx::SqliteConnection,
    id: ApprovalId,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO events (approval_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(id.to_string())
        .bind(rfc3339(at))
        .bind(event.kind)
        .bind(&event.actor)
        .bind(event.detail.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
