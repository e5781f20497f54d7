//! Review-page sessions and sign-in links on SQLite (`web_sessions`, `web_links`;
//! migration 0007). Writes go through the one writer, which also orders two uses of
//! one link: the first `DELETE … RETURNING` finds the row, the second does not. The
//! page-view lookup reads through the reader pool, beside the writer.

use chrono::{DateTime, Utc};
use rusqlite::OptionalExtension;

use super::Sqlite;
use crate::model::rfc3339;
use crate::store::web_sessions::{NewLink, NewSession, StoredSession, WebIdentity};
use crate::store::StoreResult;

/// Deletes sessions and links expired at `now` (inside the caller's write).
fn sweep_in(conn: &rusqlite::Connection, now: &str) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM web_sessions WHERE expires_at <= ?")?
        .execute([now])?;
    conn.prepare_cached("DELETE FROM web_links WHERE expires_at <= ?")?
        .execute([now])?;
    Ok(())
}

impl Sqlite {
    /// Stores a session, and sweeps the sessions and links expired at its `created_at`,
    /// in one writer job; returns once its batch is committed.
    pub async fn create_web_session(&self, session: NewSession) -> StoreResult<()> {
        self.write(Box::new(move |conn| {
            let created = rfc3339(session.created_at);
            sweep_in(conn, &created)?;
            conn.prepare_cached(
                "INSERT INTO web_sessions (token_hash, reviewer, reviewer_id, binding, created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?
            .execute(rusqlite::params![
                session.token_hash,
                session.reviewer.name,
                session.reviewer.id,
                session.binding,
                created,
                rfc3339(session.expires_at),
            ])?;
            Ok(())
        }))
        .await
    }

    /// The session whose cookie hashes to `token_hash`, if it has not expired at `now`:
    /// one primary-key read on the caller's thread (`readers`), the cost of every page
    /// view.
    pub async fn web_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StoredSession>> {
        let row: Option<(String, String, String)> = self.readers.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT reviewer, reviewer_id, binding FROM web_sessions
                     WHERE token_hash = ? AND expires_at > ?",
                )?
                .query_row([token_hash.to_owned(), rfc3339(now)], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?)
        })?;
        Ok(row.map(|(name, id, binding)| StoredSession {
            reviewer: WebIdentity { name, id },
            binding,
        }))
    }

    /// Deletes the session (sign-out) through the writer; one that does not exist is no
    /// error.
    pub async fn end_web_session(&self, token_hash: &str) -> StoreResult<()> {
        let token_hash = token_hash.to_owned();
        self.write(Box::new(move |conn| {
            conn.prepare_cached("DELETE FROM web_sessions WHERE token_hash = ?")?
                .execute([token_hash])?;
            Ok(())
        }))
        .await
    }

    /// Stores a one-time link, and sweeps what expired at its `created_at`, in one writer
    /// job.
    pub async fn issue_web_link(&self, link: NewLink) -> StoreResult<()> {
        self.write(Box::new(move |conn| {
            let created = rfc3339(link.created_at);
            sweep_in(conn, &created)?;
            conn.prepare_cached(
                "INSERT INTO web_links (token_hash, reviewer, reviewer_id, created_at, expires_at)
                 VALUES (?, ?, ?, ?, ?)",
            )?
            .execute(rusqlite::params![
                link.token_hash,
                link.reviewer.name,
                link.reviewer.id,
                created,
                rfc3339(link.expires_at),
            ])?;
            Ok(())
        }))
        .await
    }

    /// Whose link this is, if it is unused and not expired at `now`, without using it: a
    /// read on the sqlx pool, so a redeem may use it right after.
    pub async fn peek_web_link(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebIdentity>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT reviewer, reviewer_id FROM web_links WHERE token_hash = ? AND expires_at > ?",
        )
        .bind(token_hash)
        .bind(rfc3339(now))
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|(name, id)| WebIdentity { name, id }))
    }

    /// Uses a link up with `DELETE … RETURNING` in one writer job: the writer runs jobs
    /// one at a time, so of two uses only the first finds the row. `Some` (whose it was)
    /// for that one caller; `None` for a wrong, used or expired link.
    pub async fn redeem_web_link(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebIdentity>> {
        let token_hash = token_hash.to_owned();
        self.write(Box::new(move |conn| {
            Ok(conn
                .prepare_cached(
                    "DELETE FROM web_links WHERE token_hash = ? AND expires_at > ?
                     RETURNING reviewer, reviewer_id",
                )?
                .query_row(rusqlite::params![token_hash, rfc3339(now)], |r| {
                    Ok(WebIdentity {
                        name: r.get(0)?,
                        id: r.get(1)?,
                    })
                })
                .optional()?)
        }))
        .await
    }
}
