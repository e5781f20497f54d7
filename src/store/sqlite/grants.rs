//! Standing grants on SQLite: the `grants` and `grant_uses` tables (migration 0006).
//!
//! Every write here goes through the one writer, and the lookup that auto-approves a
//! request runs inside that request's insert job ([`active_in`], called from
//! `requests::insert_in`). So a revocation and a matching submission are ordered by
//! the writer: a request inserted after the revoke committed never uses the grant,
//! and a revoke answered to its caller is in force for every request answered later.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::{insert_event, requests::decide_in, Sqlite};
use crate::model::{rfc3339, Approval, ApprovalId, Decision};
use crate::store::grants::{Grant, GrantProbe, NewGrant};
use crate::store::{NewEvent, StoreError, StoreResult};

const GRANT_COLUMNS: &str = "id, agent, rule, rule_fingerprint, match_kind, language, action_key, granted_by, approval_id, created_at, expires_at, revoked_at, revoked_by";

fn grant_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: row.get("id")?,
        agent: row.get("agent")?,
        rule: row.get("rule")?,
        fingerprint: row.get("rule_fingerprint")?,
        match_kind: row.get("match_kind")?,
        language: row.get("language")?,
        action_key: row.get("action_key")?,
        granted_by: row.get("granted_by")?,
        approval_id: row.get("approval_id")?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        revoked_at: row.get("revoked_at")?,
        revoked_by: row.get("revoked_by")?,
    })
}

/// The live grant that covers a request from `agent` matching `probe` at `now`, if
/// any (the one expiring last), inside the caller's transaction.
pub(super) fn active_in(
    conn: &rusqlite::Connection,
    agent: &str,
    probe: &GrantProbe,
    now: DateTime<Utc>,
) -> StoreResult<Option<Grant>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants
             WHERE agent = ?1 AND rule = ?2 AND action_key = ?3 AND revoked_at IS NULL
               AND rule_fingerprint = ?4 AND language IS ?5 AND expires_at > ?6 AND created_at >= ?7
             ORDER BY expires_at DESC LIMIT 1"
        ))?
        .query_row(
            rusqlite::params![
                agent,
                probe.rule,
                probe.action_key,
                probe.fingerprint,
                probe.language,
                rfc3339(now),
                rfc3339(probe.made_after),
            ],
            grant_from,
        )
        .optional()?;
    Ok(found)
}

/// Records that `grant` approved request `id` (the FYI's Revoke button reads it).
pub(super) fn record_use_in(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    grant: &Grant,
) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO grant_uses (approval_id, grant_id) VALUES (?, ?)")?
        .execute(rusqlite::params![id.to_string(), grant.id])?;
    Ok(())
}

impl Sqlite {
    /// Approves request `id` (if it is still pending) and stores the grant its
    /// approver made, in one transaction: a grant exists only if its approval does.
    /// `None`: the request was not pending; nothing was written.
    pub async fn decide_with_grant(
        &self,
        id: ApprovalId,
        decision: Decision,
        event: NewEvent,
        grant: NewGrant,
    ) -> StoreResult<Option<(Approval, Grant)>> {
        self
            .write(Box::new(move |conn| {
                let Some(approval) = decide_in(conn, id, &decision, &event)? else {
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
                conn.prepare_cached(&format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
                ))?
                .execute(rusqlite::params![
                    stored.id,
                    stored.agent,
                    stored.rule,
                    stored.fingerprint,
                    stored.match_kind,
                    stored.language,
                    stored.action_key,
                    stored.granted_by,
                    stored.approval_id,
                    stored.created_at,
                    stored.expires_at,
                ])?;
                let detail = serde_json::json!({ "grant": stored.id, "rule": stored.rule,
                    "action_key": stored.action_key, "expires_at": stored.expires_at });
                insert_event(conn, id, approval.decided_at.unwrap_or_else(Utc::now), &NewEvent::new("grant_made", Some(&stored.granted_by), detail))?;
                Ok(Some((approval, stored)))
            }))
            .await
    }

    /// Revokes grant `id` as `by`, through the writer: every request inserted after
    /// this returns is checked against the revoked grant. The revocation is audited on
    /// the trail of the request that made the grant, and the FYI messages of requests
    /// it approved are rewritten (their Revoke button goes). `Ok(None)`: no such
    /// grant; a grant revoked before is returned as it was.
    pub async fn revoke_grant(
        &self,
        id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<(Grant, Vec<String>)>> {
        let (id, by) = (id.to_owned(), by.to_owned());
        let revoked = self
            .write(Box::new(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE grants SET revoked_at = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL",
                    )?
                    .execute(rusqlite::params![rfc3339(now), by, id])?;
                let Some(grant) = read_in(conn, &id)? else {
                    return Ok(None);
                };
                if changed == 1 {
                    let made_by = ApprovalId::parse(&grant.approval_id).ok_or_else(|| {
                        StoreError::Corrupt(format!("grant approval_id {}", grant.approval_id))
                    })?;
                    let detail = serde_json::json!({ "grant": grant.id, "rule": grant.rule });
                    insert_event(conn, made_by, now, &NewEvent::new("grant_revoked", Some(&by), detail))?;
                    let mut uses = conn.prepare_cached(
                        "SELECT a.id, a.channel FROM grant_uses u JOIN approvals a ON a.id = u.approval_id
                         WHERE u.grant_id = ? AND a.message_ts IS NOT NULL",
                    )?;
                    let rows: Vec<(String, String)> = uses
                        .query_map([&grant.id], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?;
                    drop(uses);
                    for (approval, channel) in rows {
                        if let Some(approval) = ApprovalId::parse(&approval) {
                            super::outbox::enqueue_in(conn, approval, &channel, crate::store::outbox::Kind::Update)?;
                        }
                    }
                }
                Ok(Some((grant, changed == 1)))
            }))
            .await?;
        // The rewrites' channels: a spare look at each costs little.
        let channels = match &revoked {
            Some((grant, true)) => self.grant_use_channels(&grant.id).await?,
            _ => Vec::new(),
        };
        Ok(revoked.map(|(grant, _)| (grant, channels)))
    }

    async fn grant_use_channels(&self, grant: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT a.channel FROM grant_uses u JOIN approvals a ON a.id = u.approval_id WHERE u.grant_id = ?",
        )
        .bind(grant)
        .fetch_all(&self.reader)
        .await?)
    }

    /// One grant by id.
    pub async fn grant(&self, id: &str) -> StoreResult<Option<Grant>> {
        let id = id.to_owned();
        self.read_grants(move |conn| read_in(conn, &id)).await
    }

    /// The grant that approved request `id`, if one did.
    pub async fn grant_used_by(&self, id: ApprovalId) -> StoreResult<Option<Grant>> {
        self.read_grants(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS} FROM grants WHERE id = (SELECT grant_id FROM grant_uses WHERE approval_id = ?)"
                ))?
                .query_row([id.to_string()], grant_from)
                .optional()?)
        })
        .await
    }

    /// Grants of `agent` (all agents with `None`), newest first, at most `limit`;
    /// with `active_at`, only those neither revoked nor expired then.
    pub async fn grants(
        &self,
        agent: Option<String>,
        active_at: Option<DateTime<Utc>>,
        limit: u32,
    ) -> StoreResult<Vec<Grant>> {
        self.read_grants(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants
                 WHERE (?1 IS NULL OR agent = ?1)
                   AND (?2 IS NULL OR (revoked_at IS NULL AND expires_at > ?2))
                 ORDER BY created_at DESC, id LIMIT ?3"
            ))?;
            let rows = statement.query_map(
                rusqlite::params![agent, active_at.map(rfc3339), i64::from(limit)],
                grant_from,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    /// Reads through the writer's connection: grants are few and read rarely (a
    /// listing, a Revoke click), and one code path (rusqlite) keeps them simple to
    /// port. Reads commit nothing, so they cost no fsync.
    async fn read_grants<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write(Box::new(read)).await
    }
}

fn read_in(conn: &rusqlite::Connection, id: &str) -> StoreResult<Option<Grant>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?"))?
        .query_row([id], grant_from)
        .optional()?)
}
