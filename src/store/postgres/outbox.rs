//! PostgreSQL: the Slack outbox shared by every replica.
//!
//! A channel's rows are delivered by one replica at a time: the one holding the
//! channel's lease (`outbox_lanes`), taken or renewed by each claim, renewed by the
//! lane while it works ([`Postgres::renew_outbox_lane`], see `crate::leases`) and
//! released by a claim that finds nothing to do. Claimed rows are locked
//! `FOR UPDATE SKIP LOCKED` for the claim's transaction. So no two replicas post or
//! rewrite the same message, and a channel's messages keep their order.
//!
//! Work that outlives its lease: every write that completes a row (`posted`,
//! `outbox_done`, `outbox_retry`, removing delivered rows) first locks the lane's row
//! and checks the lease is still this replica's ([`fence_in`]); if another replica
//! took it over, the write changes nothing and fails with
//! [`StoreError::LeaseLost`], and the lane stops before its next Slack call (the lane
//! also stops on its own once it cannot renew, `crate::leases::hold`). The new owner
//! finds the rows with `attempts > 1` and looks in the channel's history before
//! posting again (`slack::history`), so a post that reached Slack is not repeated.
//!
//! A replica killed while holding a lease only delays its channels until the lease
//! lapses (30 s unless `GREENLIGHT_OUTBOX_LEASE_SECS` says otherwise).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Postgres as Pg, Row as _, Transaction};

use super::{
    insert_event,
    listen::{notify, Note},
    Postgres,
};
use crate::model::{rfc3339, Approval, ApprovalId, Status};
use crate::store::{
    outbox::{Kind, Row, Trouble},
    rows::{approval_from_row, APPROVAL_COLUMNS},
    NewEvent, StoreError, StoreResult,
};

/// How long a claim (or a renewal) keeps a channel for its replica: 30 s unless
/// `GREENLIGHT_OUTBOX_LEASE_SECS` says otherwise (checked at start-up, `crate::leases`).
/// The lane renews it while it works, so a long batch keeps it; a dead replica's
/// channels resume once it lapses.
pub fn lease() -> Duration {
    crate::leases::from_env().outbox
}

/// The lease as milliseconds, as the SQL takes it.
fn lease_ms() -> i64 {
    i64::try_from(lease().as_millis()).unwrap_or(i64::MAX)
}

/// Fences a completion write: locks `channel`'s lane row and checks it is still this
/// replica's (`me`). Holding the row lock until the write commits orders it against a
/// claim by another replica: either the write commits first (the claimer then sees
/// its effect), or the claim took the lease first and the write is refused
/// ([`StoreError::LeaseLost`]) so the lane stops. A lease that merely lapsed but was
/// taken by no one is still ours: nobody else can have sent the row.
pub(super) async fn fence_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    channel: &str,
) -> StoreResult<()> {
    let owner: Option<String> =
        sqlx::query_scalar("SELECT owner FROM outbox_lanes WHERE channel = $1 FOR UPDATE")
            .bind(channel)
            .fetch_optional(&mut **tx)
            .await?;
    if owner.as_deref() == Some(me) {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(format!(
            "the Slack outbox lane of {channel}"
        )))
    }
}

/// The channel of outbox row `seq`, if it is still there.
pub(super) async fn channel_of(
    tx: &mut Transaction<'static, Pg>,
    seq: i64,
) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT channel FROM outbox WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&mut **tx)
            .await?,
    )
}

/// Adds a row inside the caller's transaction (see the SQLite twin), and tells every
/// replica the channel has work.
pub(super) async fn enqueue_in(
    tx: &mut Transaction<'static, Pg>,
    me: &str,
    id: ApprovalId,
    channel: &str,
    kind: Kind,
) -> StoreResult<()> {
    if channel.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO outbox (approval_id, channel, kind, created_at)
         SELECT $1, $2, $3, $4
         WHERE $3 <> 'update' OR NOT EXISTS
           (SELECT 1 FROM outbox WHERE approval_id = $1 AND kind = 'update' AND attempts = 0)",
    )
    .bind(id.to_string())
    .bind(channel)
    .bind(kind.as_str())
    .bind(rfc3339(Utc::now()))
    .execute(&mut **tx)
    .await?;
    notify(tx, me, Note::Outbox(channel)).await
}

impl Postgres {
    /// Every channel with rows waiting, whichever replica delivers it: what the outbox
    /// worker resumes at start-up and after the `LISTEN` connection dropped. A channel
    /// under another replica's live lease is included; its claims here come back empty.
    pub async fn outbox_channels(&self) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT DISTINCT channel FROM outbox")
            .fetch_all(&self.pool)
            .await?)
    }

    /// In one transaction: removes `done` (unfenced, and normally empty here, since
    /// `Store::outbox_delivered` already removed them under the fence), takes or renews
    /// `channel`'s lease (an upsert that wins only when the lease is this replica's or
    /// has lapsed, by the database's clock), then claims up to `limit` due rows, oldest
    /// first, `FOR UPDATE SKIP LOCKED`, raising their `attempts`, each with its request
    /// as this transaction reads it. Empty while another replica's lease is live; a claim
    /// that finds nothing due releases the lease.
    pub async fn claim_outbox(
        &self,
        channel: &str,
        now: DateTime<Utc>,
        limit: u32,
        done: Vec<i64>,
    ) -> StoreResult<Vec<Row>> {
        let mut tx = self.begin().await?;
        if !done.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
                .bind(&done)
                .execute(&mut *tx)
                .await?;
        }
        let lease_ms = lease_ms();
        let leased = sqlx::query(
            "INSERT INTO outbox_lanes (channel, owner, claimed_until)
             VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond')
             ON CONFLICT (channel) DO UPDATE
               SET owner = EXCLUDED.owner, claimed_until = EXCLUDED.claimed_until
               WHERE outbox_lanes.owner = EXCLUDED.owner
                  OR outbox_lanes.claimed_until < clock_timestamp()
             RETURNING 1",
        )
        .bind(channel)
        .bind(&*self.me)
        .bind(lease_ms)
        .fetch_optional(&mut *tx)
        .await?;
        if leased.is_none() {
            // Another replica delivers this channel for now.
            self.commit(tx).await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1 WHERE seq IN
               (SELECT seq FROM outbox WHERE channel = $1
                  AND (not_before IS NULL OR not_before <= $2)
                ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING seq, approval_id, channel, kind, attempts",
        )
        .bind(channel)
        .bind(rfc3339(now))
        // A batch, in order; each claim renews the lease, which must outlast the
        // delivery of one batch (30 s against Slack calls bounded by the client).
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = rows.iter().map(row_from).collect::<StoreResult<Vec<_>>>()?;
        if claimed.is_empty() {
            sqlx::query("DELETE FROM outbox_lanes WHERE channel = $1 AND owner = $2")
                .bind(channel)
                .bind(&*self.me)
                .execute(&mut *tx)
                .await?;
        }
        for row in &mut claimed {
            let found = sqlx::query(&format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"
            ))
            .bind(row.approval_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            row.approval = found.as_ref().map(approval_from_row).transpose()?;
        }
        self.commit(tx).await?;
        claimed.sort_by_key(|row| row.seq);
        Ok(claimed)
    }

    /// Extends this replica's lease on `channel` by a full lease from now (the
    /// database's clock). `false` when the lease is another replica's, or gone.
    pub async fn renew_outbox_lane(&self, channel: &str) -> StoreResult<bool> {
        let renewed = sqlx::query(
            "UPDATE outbox_lanes SET claimed_until = clock_timestamp() + $3 * interval '1 millisecond'
             WHERE channel = $1 AND owner = $2 RETURNING 1",
        )
        .bind(channel)
        .bind(&*self.me)
        .bind(lease_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(renewed.is_some())
    }

    /// Removes delivered rows `seqs` of `channel`, in one transaction, while the lane
    /// is still this replica's (`fence_in`); else `StoreError::LeaseLost`, and nothing
    /// is removed.
    pub async fn outbox_delete(&self, channel: &str, seqs: &[i64]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        fence_in(&mut tx, &self.me, channel).await?;
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }

    /// When `channel`'s earliest waiting row may be tried: its `not_before` (its
    /// `created_at` if it has none), but not before another replica's live lease on the
    /// channel ends. `None` when the channel has no rows at all; a time that does not
    /// parse counts as now.
    pub async fn next_outbox_try(&self, channel: &str) -> StoreResult<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(COALESCE(not_before, created_at)) AS at,
                    (SELECT claimed_until FROM outbox_lanes WHERE channel = $1 AND owner <> $2
                       AND claimed_until > clock_timestamp()) AS leased_until
             FROM outbox WHERE channel = $1",
        )
        .bind(channel)
        .bind(&*self.me)
        .fetch_one(&self.pool)
        .await?;
        let count: i64 = row.try_get("n")?;
        if count == 0 {
            return Ok(None);
        }
        let at: Option<String> = row.try_get("at")?;
        let leased_until: Option<DateTime<Utc>> = row.try_get("leased_until")?;
        let at = at
            .and_then(|raw| DateTime::parse_from_rfc3339(&raw).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        Ok(Some(leased_until.map_or(at, |until| until.max(at))))
    }

    /// Records where the message is (`channel`, `ts` and a `posted` event) and removes
    /// the row, in one transaction fenced by the lane's lease: `StoreError::LeaseLost`,
    /// with nothing written, once another replica took the lane over. For a `post` row,
    /// queues a rewrite when the request was decided or voted on (on any replica) while
    /// the post was in flight: such a vote found no message to rewrite.
    /// `StoreError::Corrupt` when the request is gone.
    pub async fn posted(&self, row: &Row, channel: String, ts: String) -> StoreResult<Approval> {
        let (seq, id, kind) = (row.seq, row.approval_id, row.kind);
        let mut tx = self.begin().await?;
        fence_in(&mut tx, &self.me, &row.channel).await?;
        let stored = sqlx::query(&format!(
            "UPDATE approvals SET channel = $1, message_ts = $2 WHERE id = $3
             RETURNING {APPROVAL_COLUMNS}"
        ))
        .bind(&channel)
        .bind(&ts)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("approval {id} vanished")))?;
        let approval = approval_from_row(&stored)?;
        let detail = serde_json::json!({ "channel": channel, "ts": ts });
        insert_event(
            &mut tx,
            id,
            Utc::now(),
            &NewEvent::new("posted", None, detail),
        )
        .await?;
        delete_in(&mut tx, seq).await?;
        // Decided, or voted on, while the post was in flight (on any replica): the
        // vote saw no message to rewrite, so the rewrite is queued here.
        if kind == Kind::Post {
            let voted: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM votes WHERE approval_id = $1)")
                    .bind(id.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
            if approval.status != Status::Pending || voted {
                enqueue_in(&mut tx, &self.me, id, &approval.channel, Kind::Update).await?;
            }
        }
        self.commit(tx).await?;
        Ok(approval)
    }

    /// Removes row `seq`, appending `audit`'s event in the same transaction; fenced by
    /// its lane's lease while the row exists (`StoreError::LeaseLost`, nothing written).
    /// A row already gone is no error.
    pub async fn outbox_done(
        &self,
        seq: i64,
        audit: Option<(ApprovalId, NewEvent)>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        if let Some(channel) = channel_of(&mut tx, seq).await? {
            fence_in(&mut tx, &self.me, &channel).await?;
        }
        if let Some((id, event)) = &audit {
            insert_event(&mut tx, *id, Utc::now(), event).await?;
        }
        delete_in(&mut tx, seq).await?;
        self.commit(tx).await
    }

    /// Appends `audit`'s event and sets row `seq`'s `not_before`, in one transaction
    /// fenced as `outbox_done` is.
    pub async fn outbox_retry(
        &self,
        seq: i64,
        not_before: DateTime<Utc>,
        audit: (ApprovalId, NewEvent),
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        if let Some(channel) = channel_of(&mut tx, seq).await? {
            fence_in(&mut tx, &self.me, &channel).await?;
        }
        insert_event(&mut tx, audit.0, Utc::now(), &audit.1).await?;
        sqlx::query("UPDATE outbox SET not_before = $1 WHERE seq = $2")
            .bind(rfc3339(not_before))
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }

    /// Keeps `trouble` as `channel`'s latest failure, timestamped now: one
    /// `channel_trouble` row per channel, shared by every replica.
    pub async fn record_trouble(&self, channel: &str, trouble: Trouble) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO channel_trouble (channel, code, text, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (channel) DO UPDATE SET code = $2, text = $3, at = $4",
        )
        .bind(channel)
        .bind(&trouble.code)
        .bind(&trouble.text)
        .bind(rfc3339(Utc::now()))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    /// The latest failure recorded for `channel` (by any replica) if it was at or after
    /// `since`.
    pub async fn trouble_since(
        &self,
        channel: &str,
        since: DateTime<Utc>,
    ) -> StoreResult<Option<Trouble>> {
        let row =
            sqlx::query("SELECT code, text FROM channel_trouble WHERE channel = $1 AND at >= $2")
                .bind(channel)
                .bind(rfc3339(since))
                .fetch_optional(&self.pool)
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

async fn delete_in(tx: &mut Transaction<'static, Pg>, seq: i64) -> StoreResult<()> {
    sqlx::query("DELETE FROM outbox WHERE seq = $1")
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn row_from(row: &sqlx::postgres::PgRow) -> StoreResult<Row> {
    let id: String = row.try_get("approval_id")?;
    let kind: String = row.try_get("kind")?;
    let attempts: i64 = row.try_get("attempts")?;
    Ok(Row {
        seq: row.try_get("seq")?,
        approval_id: ApprovalId::parse(&id)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox approval_id {id}")))?,
        channel: row.try_get("channel")?,
        kind: Kind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox kind {kind}")))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        approval: None,
    })
}
