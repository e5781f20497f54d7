//! PostgreSQL: review-page sessions and sign-in links (`web_sessions`, `web_links`;
//! migration postgres/0003), shared by every replica. A link is used up by
//! `DELETE … RETURNING`: the row lock makes a second replica's `DELETE` wait for the
//! first to commit, then find nothing, so one link gives exactly one session.

use chrono::{DateTime, Utc};
use sqlx::{Postgres as Pg, Transaction};

use super::Postgres;
use crate::model::rfc3339;
use crate::store::web_sessions::{NewLink, NewSession, StoredSession, WebIdentity};
use crate::store::StoreResult;

/// Deletes sessions and links expired at `now` (inside the caller's transaction).
async fn sweep_in(tx: &mut Transaction<'static, Pg>, now: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM web_links WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Postgres {
    /// Stores a session, and sweeps the sessions and links expired at its `created_at`,
    /// in one transaction. Every replica knows it from the commit on.
    pub async fn create_web_session(&self, session: NewSession) -> StoreResult<()> {
        let created = rfc3339(session.created_at);
        let mut tx = self.begin().await?;
        sweep_in(&mut tx, &created).await?;
        sqlx::query(
            "INSERT INTO web_sessions (token_hash, reviewer, reviewer_id, binding, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&session.token_hash)
        .bind(&session.reviewer.name)
        .bind(&session.reviewer.id)
        .bind(&session.binding)
        .bind(&created)
        .bind(rfc3339(session.expires_at))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    /// The session whose cookie hashes to `token_hash`, if it has not expired at `now`:
    /// one primary-key read on the pool, the cost of every page view.
    pub async fn web_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StoredSession>> {
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT reviewer, reviewer_id, binding FROM web_sessions
             WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(rfc3339(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(name, id, binding)| StoredSession {
            reviewer: WebIdentity { name, id },
            binding,
        }))
    }

    /// Deletes the session (sign-out) on every replica at once; one that does not exist
    /// is no error.
    pub async fn end_web_session(&self, token_hash: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }

    /// Stores a one-time link, and sweeps what expired at its `created_at`, in one
    /// transaction: the link then works on any replica.
    pub async fn issue_web_link(&self, link: NewLink) -> StoreResult<()> {
        let created = rfc3339(link.created_at);
        let mut tx = self.begin().await?;
        sweep_in(&mut tx, &created).await?;
        sqlx::query(
            "INSERT INTO web_links (token_hash, reviewer, reviewer_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&link.token_hash)
        .bind(&link.reviewer.name)
        .bind(&link.reviewer.id)
        .bind(&created)
        .bind(rfc3339(link.expires_at))
        .execute(&mut *tx)
        .await?;
        self.commit(tx).await
    }

    /// Whose link this is, if it is unused and not expired at `now`, without using it: a
    /// plain read, so another replica may redeem it right after.
    pub async fn peek_web_link(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebIdentity>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT reviewer, reviewer_id FROM web_links WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(rfc3339(now))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(name, id)| WebIdentity { name, id }))
    }

    /// Uses a link up with `DELETE … RETURNING` in a transaction of its own: `Some`
    /// (whose it was) for exactly one caller across replicas, since a second `DELETE`
    /// waits for the first's row lock and then finds nothing; `None` for a wrong, used or
    /// expired link.
    pub async fn redeem_web_link(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebIdentity>> {
        let mut tx = self.begin().await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "DELETE FROM web_links WHERE token_hash = $1 AND expires_at > $2
             RETURNING reviewer, reviewer_id",
        )
        .bind(token_hash)
        .bind(rfc3339(now))
        .fetch_optional(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(row.map(|(name, id)| WebIdentity { name, id }))
    }
}
