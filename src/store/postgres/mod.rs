//! The PostgreSQL backend: any number of `greenlight serve` replicas on one database.
//!
//! Every write is one transaction on a pool (PostgreSQL groups concurrent commits
//! itself). What SQLite gets from having one writer, this backend gets from the
//! database:
//! - the conditional `UPDATE … WHERE status = 'pending'` that ends a request takes the
//!   row lock, so a concurrent click, expiry or cancel on another replica re-checks
//!   the row after the first commits and finds it final (exactly one decision, one
//!   expiry);
//! - a vote locks its request (`SELECT … FOR UPDATE`) before counting (`votes`);
//! - an insert locks its agent's `agent_pending` row (the per-agent cap) and relies on
//!   the `(agent, idempotency_key)` unique index (`requests`); the counter itself is
//!   kept by a trigger deferred to commit, so a decision locks that row only while it
//!   commits (`migrations/postgres/0005_pending_count_at_commit.sql`);
//! - an agent's token bucket is one `rate_buckets` row, taken from by an upsert that
//!   locks it (`rate`);
//! - each channel's outbox is delivered by the replica holding its lease, and rows are
//!   claimed `FOR UPDATE SKIP LOCKED` (`outbox`);
//! - every transaction `NOTIFY`s what it changed, and every replica `LISTEN`s
//!   ([`listen`]): a decision on one replica answers a long-poll on another.

mod batches;
mod callbacks;
mod deferred;
mod grants;
mod history;
pub mod listen;
mod nudges;
mod outbox;
mod rate;
mod requests;
mod votes;
mod web_sessions;

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool, Postgres as Pg, Transaction,
};

use super::{rows, Event, NewEvent, Signals, StoreError, StoreResult};
use crate::model::{rfc3339, ApprovalId};

/// The migrations for this backend (`migrations/postgres`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per replica: a long-poll holds none (it waits in memory), so a few
/// serve many requests.
const POOL_SIZE: u32 = 10;
/// How long a call may wait for a pooled connection before it fails (500).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long opening the store waits for PostgreSQL's first connection. The pool
/// retries a refused or unanswered connection until its acquire timeout (60 s for
/// serve) without saying why; one direct attempt first turns a wrong host, port,
/// password or database name into its own error at once.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens and closes one connection with `options`, so that a server that cannot be
/// reached or refuses us fails with its cause (connection refused, password
/// authentication failed, …) instead of a pool timeout. Errors: that cause, or an
/// I/O `TimedOut` after [`FIRST_CONNECT_TIMEOUT`].
async fn first_connection(options: &PgConnectOptions) -> StoreResult<()> {
    use sqlx::{ConnectOptions, Connection};
    let connection = tokio::time::timeout(FIRST_CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection to the server within {} s",
                    FIRST_CONNECT_TIMEOUT.as_secs()
                ),
            ))
        })??;
    connection.close().await?;
    Ok(())
}

/// Cheap to clone; every clone is the same pool.
#[derive(Clone)]
pub struct Postgres {
    pool: PgPool,
    read_only: bool,
    /// This store's random id: the owner of its outbox leases, and how its own
    /// notifications are told from other replicas'.
    me: Arc<str>,
    deferred: deferred::Deferred,
    commits: Arc<AtomicU64>,
}

impl Postgres {
    /// Connects, migrates (concurrent replicas serialize on sqlx's advisory lock) and
    /// starts listening for other replicas' changes, which it passes to `signals`.
    pub(crate) async fn connect(url: &str, signals: Arc<Signals>) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        first_connection(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(1)
            // Writers queue for a connection as they queue for SQLite's writer: a burst
            // (a thousand submissions of one agent, serialized on its counter row)
            // waits its turn instead of failing.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let me: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let store = Self {
            deferred: deferred::Deferred::start(pool.clone()),
            pool,
            read_only: false,
            me,
            commits: Arc::default(),
        };
        listen::start(store.clone(), signals).await?;
        Ok(store)
    }

    /// Connects without migrating; every write is refused with
    /// [`StoreError::ReadOnly`].
    pub async fn open_read_only(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        first_connection(&options).await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Self {
            deferred: deferred::Deferred::idle(),
            pool,
            read_only: true,
            me: "read-only".into(),
            commits: Arc::default(),
        })
    }

    /// Opens a write transaction (refused on a read-only store).
    async fn begin(&self) -> StoreResult<Transaction<'static, Pg>> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(self.pool.begin().await?)
    }

    /// Commits `tx`, counting it.
    async fn commit(&self, tx: Transaction<'static, Pg>) -> StoreResult<()> {
        tx.commit().await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Transactions committed by this replica since start, as `(commits, writes)`: always
    /// equal, since every write is its own transaction here (PostgreSQL groups concurrent
    /// commits where this cannot see it). Both 0 on a read-only store. Not counted: the
    /// deferred audit flushes, lease renewals and the lease release at close.
    pub fn write_totals(&self) -> (u64, u64) {
        let commits = self.commits.load(Ordering::Relaxed);
        (commits, commits)
    }

    /// Versions in `migrations/postgres` that `_sqlx_migrations` does not record as
    /// applied successfully; all of them when that table does not exist yet. A table this
    /// role may not read is an error (permission denied), not "nothing applied".
    pub async fn pending_migrations(&self) -> StoreResult<Vec<i64>> {
        // No table yet: nothing applied. A table this role may not read is an error
        // (permission denied), not "nothing applied": the advice would be wrong.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?
        } else {
            Vec::new()
        };
        Ok(MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
    }

    /// Whether greenlight's writes would be refused: a standby
    /// (`pg_is_in_recovery()`), sessions that start read-only
    /// (`default_transaction_read_only`), or a role that may not create in its schema
    /// (`serve`'s migrator always needs that) or insert, update and delete requests.
    pub async fn refuses_writes(&self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar(
            "SELECT pg_is_in_recovery()
                 OR current_setting('default_transaction_read_only') = 'on'
                 OR NOT has_schema_privilege(current_schema(), 'CREATE')
                 OR (to_regclass('approvals') IS NOT NULL AND NOT (
                        has_table_privilege('approvals', 'INSERT')
                        AND has_table_privilege('approvals', 'UPDATE')
                        AND has_table_privilege('approvals', 'DELETE')))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// `SELECT 1` on a pooled connection, for readiness probes and `doctor`. Fails when
    /// no connection comes within the pool's acquire timeout (60 s for serve, 10 s
    /// read-only).
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Writes the deferred audit entries (held tallies too), releases this store's outbox leases, then
    /// closes the pool (the `LISTEN`
    /// connection goes with the task that holds it).
    pub async fn close(&self) {
        if let Err(error) = self.deferred.flush_all().await {
            tracing::warn!(%error, "deferred audit entries were not written at close");
        }
        // Hand this replica's outbox channels back at once, so the next start (or
        // another replica) does not wait for the leases to lapse.
        if !self.read_only {
            let released = sqlx::query("DELETE FROM outbox_lanes WHERE owner = $1")
                .bind(&*self.me)
                .execute(&self.pool)
                .await;
            if let Err(error) = released {
                tracing::warn!(%error, "outbox leases were not released at close");
            }
        }
        self.pool.close().await;
    }

    /// Audit events in `seq` order after `after_seq` (exclusive), only those at or after
    /// `since` when given (`at` is RFC 3339 text in `COLLATE "C"`, so it sorts as time),
    /// at most `limit`: what `audit export` pages through. `seq` is taken at insert, not
    /// at commit, so a transaction still open may later commit an event below a `seq`
    /// already read. Deferred audit entries show once flushed (within 500 ms).
    pub async fn events_page(
        &self,
        since: Option<DateTime<Utc>>,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT seq, approval_id, at, kind, actor, detail FROM events
             WHERE seq > $1 AND ($2::text IS NULL OR at >= $2) ORDER BY seq LIMIT $3",
        )
        .bind(after_seq)
        .bind(since.map(rfc3339))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::event_from_row).collect()
    }

    /// Deletes final requests decided before `cutoff`, with their events, votes, outbox
    /// rows, grant uses, callback targets and batch links (and batches left with no
    /// item), and grants expired or revoked
    /// before it, all in one transaction. Pending requests are never pruned, however old.
    /// Returns how many requests went.
    pub async fn prune_decided_before(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let cutoff = rfc3339(cutoff);
        let mut tx = self.begin().await?;
        for table in [
            "events",
            "votes",
            "outbox",
            "grant_uses",
            "callback_targets",
            "batch_items",
        ] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE approval_id IN
                   (SELECT id FROM approvals WHERE status <> 'pending' AND decided_at < $1)"
            ))
            .bind(&cutoff)
            .execute(&mut *tx)
            .await?;
        }
        let pruned =
            sqlx::query("DELETE FROM approvals WHERE status <> 'pending' AND decided_at < $1")
                .bind(&cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        // A batch whose every item went has nothing left to answer about.
        sqlx::query(
            "DELETE FROM batches WHERE NOT EXISTS
               (SELECT 1 FROM batch_items WHERE batch_items.batch_id = batches.id)",
        )
        .execute(&mut *tx)
        .await?;
        // Grants expired (or revoked) before the cutoff are no use to anyone.
        sqlx::query("DELETE FROM grants WHERE expires_at < $1 OR revoked_at < $1")
            .bind(&cutoff)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(pruned)
    }
}

/// Appends one event inside the caller's transaction.
async fn insert_event(
    tx: &mut Transaction<'static, Pg>,
    id: ApprovalId,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> StoreResult<()> {
    insert_event_with(
        tx,
        "INSERT INTO events (approval_id, at, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)",
        id,
        at,
        event,
    )
    .await
}

/// Appends a deferred audit entry (a merged repeat click, a held tally) if its
/// request still exists: written after the fact, up to minutes later for a held
/// tally, it must not outlive a request retention pruned meanwhile.
async fn insert_deferred_event(
    tx: &mut Transaction<'static, Pg>,
    id: ApprovalId,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> StoreResult<()> {
    insert_event_with(
        tx,
        "INSERT INTO events (approval_id, at, kind, actor, detail)
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM approvals WHERE id = $1)",
        id,
        at,
        event,
    )
    .await
}

/// Runs `sql`, an insert into `events` taking the request id, time, kind, actor and
/// detail as `$1`..`$5`.
async fn insert_event_with(
    tx: &mut Transaction<'static, Pg>,
    sql: &'static str,
    id: ApprovalId,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> StoreResult<()> {
    sqlx::query(sql)
        .bind(id.to_string())
        .bind(rfc3339(at))
        .bind(event.kind)
        .bind(event.actor.as_deref())
        .bind(event.detail.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
