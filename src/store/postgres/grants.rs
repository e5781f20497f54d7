//! PostgreSQL: standing grants (`grants`, `grant_uses`; migration postgres/0002).
//!
//! The insert that uses a grant reads it `FOR SHARE` inside its own transaction
//! ([`active_in`]), and a revoke `UPDATE`s the row, which takes its lock. So a revoke
//! and a matching submission are ordered on any replica: a submission that comes after
//! a committed revoke, or waits on an uncommitted one, re-reads the row and finds it
//! revoked; a revoke that waits on a submission's lock returns after that request was
//! approved, and is in force for everything after.

use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, Postgres as Pg, Row as _, Transaction};

use super::{insert_event, outbox, requests::decide_in, Postgres};
use crate::model::{rfc3339, Approval, ApprovalId, Decision};
use crate::store::grants::{Grant, GrantProbe, NewGrant};
use crate::store::{outbox::Kind, NewEvent, StoreError, StoreResult};

const GRANT_COLUMNS: &str = "id, agent, rule, rule_fingerprint, match_kind, language, action_key, granted_by, approval_id, created_at, expires_at, revoked_at, revoked_by";

fn grant_from(row: &PgRow) -> StoreResult<Grant> {
    Ok(Grant {
        id: row.try_get("id")?,
        agent: row.try_get("agent")?,
        rule: row.try_get("rule")?,
        fingerprint: row.try_get("rule_fingerprint")?,
        match_kind: row.try_get("match_kind")?,
        language: row.try_get("language")?,
        action_key: row.try_get("action_key")?,
        granted_by: row.try_get("granted_by")?,
        approval_id: row.try_get("approval_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

/// The live grant that covers a request from `agent` matching `probe` at `now`, if
/// any (the one expiring last), locked `FOR SHARE` until the caller's transaction ends.
pub(super) async fn active_in(
    tx: &mut Transaction<'static, Pg>,
    agent: &str,
    probe: &GrantProbe,
    now: DateTime<Utc>,
) -> StoreResult<Option<Grant>> {
    let row = sqlx::query(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants
         WHERE agent = $1 AND rule = $2 AND action_key = $3 AND revoked_at IS NULL
           AND rule_fingerprint = $4 AND language IS NOT DISTINCT FROM $5
           AND expires_at > $6 AND created_at >= $7
         ORDER BY expires_at DESC LIMIT 1 FOR SHARE"
    ))
    .bind(agent)
    .bind(&probe.rule)
    .bind(&probe.action_key)
    .bind(&probe.fingerprint)
    .bind(&probe.language)
    .bind(rfc3339(now))
    .bind(rfc3339(probe.made_after))
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(grant_from).transpose()
}

/// Records that `grant` approved request `id` (the FYI's Revoke button reads it).
pub(super) async fn record_use_in(
    tx: &mut Transaction<'static, Pg>,
    id: ApprovalId,
    grant: &Grant,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO grant_uses (approval_id, grant_id) VALUES ($1, $2)")
        .bind(id.to_string())
        .bind(&grant.id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Postgres {
    /// Approves request `id` and stores the grant with its `grant_made` event, in one
    /// transaction. The approval is the conditional `UPDATE` every decision uses, whose
    /// row lock orders it against a decision on another replica, so a grant exists only
    /// if this call's approval does. `None`: the request was not pending (or is unknown);
    /// nothing is written.
    pub async fn decide_with_grant(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
        grant: NewGrant,
    ) -> StoreResult<Option<(Approval, Grant)>> {
        let mut tx = self.begin().await?;
        let Some(approval) = decide_in(&mut tx, &self.me, id, &decision, &event).await? else {
            return Ok(None);
        };
        let stored = Grant {
            id: uuid::Uuid::new_v4().to_string(),
            agent: grant.agent,
            rule: grant.rule,
            fingerprint: grant.fingerprint,
            match_kind: grant.match_kind.to_owned(),
            language: grant.language,
            action_key: grant.action_key,
            granted_by: grant.granted_by,
            approval_id: id.to_string(),
            created_at: rfc3339(grant.created_at),
            expires_at: rfc3339(grant.expires_at),
            revoked_at: None,
            revoked_by: None,
        };
        sqlx::query(&format!(
            "INSERT INTO grants ({GRANT_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL)"
        ))
        .bind(&stored.id)
        .bind(&stored.agent)
        .bind(&stored.rule)
        .bind(&stored.fingerprint)
        .bind(&stored.match_kind)
        .bind(&stored.language)
        .bind(&stored.action_key)
        .bind(&stored.granted_by)
        .bind(&stored.approval_id)
        .bind(&stored.created_at)
        .bind(&stored.expires_at)
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({ "grant": stored.id, "rule": stored.rule,
            "action_key": stored.action_key, "expires_at": stored.expires_at });
        insert_event(
            &mut tx,
            id,
            approval.decided_at.unwrap_or_else(Utc::now),
            &NewEvent::new("grant_made", Some(&stored.granted_by), detail),
        )
        .await?;
        self.commit(tx).await?;
        Ok(Some((approval, stored)))
    }

    /// Revokes grant `id`; returns it and, when this call revoked it, the channels
    /// whose FYI messages are queued for a rewrite.
    pub async fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Grant, Vec<String>)>> {
        let mut tx = self.begin().await?;
        // The UPDATE takes the row lock: a submission holding the grant `FOR SHARE`
        // finishes first; one that comes later waits for this commit and sees it.
        let changed = sqlx::query(
            "UPDATE grants SET revoked_at = $1, revoked_by = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(rfc3339(now))
        .bind(by)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let Some(grant) = read_in(&mut tx, id).await? else {
            return Ok(None);
        };
        let mut channels = Vec::new();
        if changed == 1 {
            let made_by = ApprovalId::parse(&grant.approval_id).ok_or_else(|| {
                StoreError::Corrupt(format!("grant approval_id {}", grant.approval_id))
            })?;
            let detail = serde_json::json!({ "grant": grant.id, "rule": grant.rule });
            insert_event(
                &mut tx,
                made_by,
                now,
                &NewEvent::new("grant_revoked", Some(by), detail),
            )
            .await?;
            let rows = sqlx::query(
                "SELECT a.id, a.channel FROM grant_uses u JOIN approvals a ON a.id = u.approval_id
                 WHERE u.grant_id = $1 AND a.message_ts IS NOT NULL",
            )
            .bind(&grant.id)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let (approval, channel): (String, String) =
                    (row.try_get("id")?, row.try_get("channel")?);
                if let Some(approval) = ApprovalId::parse(&approval) {
                    outbox::enqueue_in(&mut tx, &self.me, approval, &channel, Kind::Update).await?;
                }
                if !channels.contains(&channel) {
                    channels.push(channel);
                }
            }
        }
        self.commit(tx).await?;
        Ok(Some((grant, channels)))
    }

    /// One grant by id (a UUID), as committed; `None` when there is no such grant.
    pub async fn grant(&self, id: &str) -> StoreResult<Option<Grant>> {
        let row = sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(grant_from).transpose()
    }

    /// The grant that approved request `id` (its `grant_uses` row), if one did.
    pub async fn grant_used_by(&self, id: ApprovalId) -> StoreResult<Option<Grant>> {
        let row = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants
             WHERE id = (SELECT grant_id FROM grant_uses WHERE approval_id = $1)"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(grant_from).transpose()
    }

    /// Grants of `agent` (all agents with `None`), newest first (`created_at`, then id),
    /// at most `limit`; with `active_at`, only those neither revoked nor expired then.
    pub async fn grants(
        &self,
        agent: Option<String>,
        active_at: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<Grant>> {
        let rows = sqlx::query(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants
             WHERE ($1::text IS NULL OR agent = $1)
               AND ($2::text IS NULL OR (revoked_at IS NULL AND expires_at > $2))
             ORDER BY created_at DESC, id LIMIT $3"
        ))
        .bind(agent)
        .bind(active_at.map(rfc3339))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(grant_from).collect()
    }
}

async fn read_in(tx: &mut Transaction<'static, Pg>, id: &str) -> StoreResult<Option<Grant>> {
    let row = sqlx::query(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(grant_from).transpose()
}
