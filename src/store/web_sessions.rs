//! Review-page sessions and one-time sign-in links, in the database (tables
//! `web_sessions` and `web_links`, migrations 0007 / postgres 0003), so that every
//! replica behind a load balancer with any routing knows every session and link, and
//! a restart signs nobody out.
//!
//! The store only ever sees a token's SHA-256 (`token_hash`, 64 hex characters, made
//! by `web::sessions`): a copy of the database cannot be replayed as a cookie or a
//! link. The reviewer is held by a stable identity ([`WebIdentity`]: configured name
//! and reviewer id), never by a position in the configuration, so the web module can
//! refuse a row whose reviewer a replica no longer has.
//!
//! A link is used up by a conditional `DELETE … RETURNING`: on SQLite the one writer
//! orders two uses, on PostgreSQL the row lock does (the second `DELETE` waits, then
//! finds no row), so a link gives exactly one session however many replicas race on
//! it. Expired rows are swept whenever a session starts or a link is issued (rare
//! writes, an indexed range delete), which bounds both tables by the sign-ins of the
//! last [`SESSION_TTL`](crate::web::sessions::SESSION_TTL) without a worker of its own
//! (the retention worker is off by default). Queries: `sqlite/web_sessions.rs`,
//! `postgres/web_sessions.rs`.

use chrono::{DateTime, Utc};

use super::{dispatch, Store, StoreResult};

/// Who a session or link is for, as configured when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// The configured reviewer name (`GREENLIGHT_REVIEWERS`, or `local`).
    pub name: String,
    /// The reviewer id the approval domain knows: their Slack user id or `web:<name>`.
    pub id: String,
}

/// A live session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Who signed in, as configured then; the web module refuses the session when
    /// this replica no longer has that reviewer.
    pub reviewer: WebIdentity,
    /// Ties the session to the reviewer's secret at sign-in (hex SHA-256, made by
    /// `web::sessions::binding`; empty for the local reviewer).
    pub binding: String,
}

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Hex SHA-256 of the cookie value.
    pub token_hash: String,
    /// Who is signing in.
    pub reviewer: WebIdentity,
    /// As [`StoredSession::binding`].
    pub binding: String,
    /// The sign-in time: sessions and links expired at this moment are swept in the
    /// same write.
    pub created_at: DateTime<Utc>,
    /// The session works until then, exclusive: `created_at` plus
    /// [`SESSION_TTL`](crate::web::sessions::SESSION_TTL).
    pub expires_at: DateTime<Utc>,
}

/// A one-time sign-in link to store.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// Hex SHA-256 of the link's token.
    pub token_hash: String,
    /// Who the link signs in (the local reviewer, whose link `serve` prints).
    pub reviewer: WebIdentity,
    /// When it was issued: links and sessions expired at this moment are swept in the
    /// same write.
    pub created_at: DateTime<Utc>,
    /// The link works until then, exclusive: `created_at` plus
    /// [`LINK_TTL`](crate::web::sessions::LINK_TTL).
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Stores a new session, and sweeps the sessions and links expired at its
    /// `created_at`, in one write.
    pub async fn create_web_session(&self, session: NewSession) -> StoreResult<()> {
        dispatch!(self, create_web_session(session))
    }

    /// The session whose cookie hashes to `token_hash`, if it has not expired at
    /// `now`: one lookup by primary key, the cost of every page view.
    pub async fn web_session(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<StoredSession>> {
        dispatch!(self, web_session(token_hash, now))
    }

    /// Ends a session (sign-out); ending one that does not exist is no error.
    pub async fn end_web_session(&self, token_hash: &str) -> StoreResult<()> {
        dispatch!(self, end_web_session(token_hash))
    }

    /// Stores a one-time link, and sweeps what expired at its `created_at`.
    pub async fn issue_web_link(&self, link: NewLink) -> StoreResult<()> {
        dispatch!(self, issue_web_link(link))
    }

    /// Whose link this is, if it is unused and not expired at `now`, without using it.
    pub async fn peek_web_link(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebIdentity>> {
        dispatch!(self, peek_web_link(token_hash, now))
    }

    /// Uses a link up: `Some` (whose it was) for exactly one caller, however many race,
    /// and only before it expires; `None` for a wrong, used or expired link.
    pub async fn redeem_web_link(
        &self,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<WebIdentity>> {
        dispatch!(self, redeem_web_link(token_hash, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> WebIdentity {
        WebIdentity {
            name: "alice".into(),
            id: "web:alice".into(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    async fn store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        Store::connect(&url).await.expect("store")
    }

    fn session(hash: &str, from: i64, to: i64) -> NewSession {
        NewSession {
            token_hash: hash.into(),
            reviewer: alice(),
            binding: "b".into(),
            created_at: at(from),
            expires_at: at(to),
        }
    }

    #[tokio::test]
    async fn sessions_live_until_they_expire_or_end() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        store
            .create_web_session(session("h1", 0, 100))
            .await
            .expect("create");
        let found = store.web_session("h1", at(99)).await.expect("read");
        assert_eq!(
            found,
            Some(StoredSession {
                reviewer: alice(),
                binding: "b".into()
            })
        );
        assert_eq!(store.web_session("h1", at(100)).await.expect("read"), None);
        assert_eq!(store.web_session("other", at(1)).await.expect("read"), None);
        store.end_web_session("h1").await.expect("end");
        assert_eq!(store.web_session("h1", at(1)).await.expect("read"), None);
        store
            .end_web_session("h1")
            .await
            .expect("ending twice is fine");
    }

    #[tokio::test]
    async fn a_link_works_once_and_not_after_it_expires() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        for hash in ["l1", "l2"] {
            store
                .issue_web_link(NewLink {
                    token_hash: hash.into(),
                    reviewer: alice(),
                    created_at: at(0),
                    expires_at: at(60),
                })
                .await
                .expect("issue");
        }
        assert_eq!(
            store.peek_web_link("l1", at(1)).await.expect("peek"),
            Some(alice())
        );
        assert_eq!(
            store.redeem_web_link("l1", at(1)).await.expect("use"),
            Some(alice())
        );
        assert_eq!(store.redeem_web_link("l1", at(2)).await.expect("use"), None);
        assert_eq!(store.peek_web_link("l1", at(2)).await.expect("peek"), None);
        assert_eq!(store.peek_web_link("l2", at(60)).await.expect("peek"), None);
        assert_eq!(
            store.redeem_web_link("l2", at(60)).await.expect("use"),
            None
        );
        assert_eq!(
            store.redeem_web_link("nope", at(1)).await.expect("use"),
            None
        );
    }

    #[tokio::test]
    async fn concurrent_uses_of_one_link_give_one_winner() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        store
            .issue_web_link(NewLink {
                token_hash: "race".into(),
                reviewer: alice(),
                created_at: at(0),
                expires_at: at(60),
            })
            .await
            .expect("issue");
        let tries = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.redeem_web_link("race", at(1)).await })
        });
        let mut winners = 0;
        for task in tries {
            if task.await.expect("task").expect("use").is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn expired_rows_are_swept_when_a_session_starts() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir).await;
        store
            .create_web_session(session("old", 0, 10))
            .await
            .expect("create");
        store
            .issue_web_link(NewLink {
                token_hash: "old-link".into(),
                reviewer: alice(),
                created_at: at(0),
                expires_at: at(10),
            })
            .await
            .expect("issue");
        store
            .create_web_session(session("new", 20, 100))
            .await
            .expect("create");
        let rows = |table: &'static str| {
            let store = store.clone();
            async move {
                store
                    .write(Box::new(move |conn| {
                        Ok(
                            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                                r.get::<_, i64>(0)
                            })?,
                        )
                    }))
                    .await
                    .expect("count")
            }
        };
        assert_eq!(
            rows("web_sessions").await,
            1,
            "only the live session is left"
        );
        assert_eq!(rows("web_links").await, 0);
    }
}
