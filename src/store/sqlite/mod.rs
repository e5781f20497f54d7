//! The SQLite backend: one file, one `greenlight serve`.
//!
//! Writes go through one group-committing writer thread ([`writer`]): SQLite admits
//! one writer at a time anyway, and batching pays one fsync for many callers. Reads
//! run beside the writer, as WAL mode allows: point lookups on the caller's own
//! thread (`readers`), scans (lists, history, exports) through a small sqlx pool.
//! The file is locked (`flock`) while a serve writes to it, so a second one is
//! refused at start.

mod batches;
mod callbacks;
mod grants;
mod history;
mod nudges;
mod outbox;
mod readers;
mod requests;
mod votes;
mod web_sessions;
pub mod writer;

use std::{str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    ConnectOptions, Connection as _, SqlitePool,
};

use super::{rows, Event, NewEvent, StoreError, StoreResult};
use crate::model::{rfc3339, ApprovalId};
use writer::{Work, Writer};

/// Cheap to clone; every clone is the same database and writer.
#[derive(Clone)]
pub struct Sqlite {
    /// `None` for a store opened read-only (`doctor`, `audit export`).
    writer: Option<Writer>,
    reader: SqlitePool,
    /// The hot-path reads, run on the caller's thread ([`readers`]).
    readers: readers::Readers,
    /// The database file, locked exclusively (`flock`) while this store writes to it.
    _lock: Option<Arc<std::fs::File>>,
}

impl Sqlite {
    /// Opens (creating if needed) the database, brings its schema up to date and
    /// starts the writer task.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed decision survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let mut conn = options.connect().await?;
        let file = options.get_filename().to_path_buf();
        let lock = lock_for_writing(&file)?;
        sqlx::migrate!("./migrations").run(&mut conn).await?;
        conn.close().await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(options)
            .await?;
        let readers = readers::Readers::open(&file)?;
        let checkpoints = rusqlite::Connection::open(&file)?;
        checkpoints.busy_timeout(Duration::from_secs(10))?;
        let writer = Writer::spawn_with_checkpointer(open_writer(&file)?, Some(checkpoints))
            .map_err(|e| StoreError::Commit(format!("cannot start the database writer: {e}")))?;
        Ok(Self {
            writer: Some(writer),
            reader,
            readers,
            _lock: lock,
        })
    }

    /// Opens an existing database read-only, without migrating it: for tools that
    /// only look (`audit export`, `doctor`). A typo in the path is an error, not a new
    /// empty database, and a running `serve` of another version is never migrated
    /// under its feet.
    pub async fn open_read_only(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .read_only(true)
            .busy_timeout(Duration::from_secs(10));
        let readers = readers::Readers::open(options.get_filename())?;
        let reader = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Self {
            writer: None,
            reader,
            readers,
            _lock: None,
        })
    }

    /// The file behind a `sqlite:` URL, if it names one.
    pub fn file_of(url: &str) -> Option<std::path::PathBuf> {
        let options = SqliteConnectOptions::from_str(url).ok()?;
        Some(options.get_filename().to_path_buf())
    }

    /// Runs `work` in the writer's next batch; see [`writer`].
    pub(crate) async fn write<T: Send + 'static>(&self, work: Work<T>) -> StoreResult<T> {
        self.writer
            .as_ref()
            .ok_or(StoreError::ReadOnly)?
            .write(work)
            .await
    }

    /// Transactions committed and writes run by the writer since start (both 0 for a
    /// read-only store): their ratio is the group-commit batch size.
    pub fn write_totals(&self) -> (u64, u64) {
        self.writer
            .as_ref()
            .map_or((0, 0), |w| (w.commits(), w.writes()))
    }

    /// Versions of the migrations this binary carries that the database has not
    /// applied yet (all of them for a database greenlight never started on).
    /// Errors: a file SQLite cannot read as a database ([`StoreError::is_not_a_database`])
    /// or any other failed read; only a missing `_sqlx_migrations` table means "nothing
    /// applied".
    pub async fn pending_migrations(&self) -> StoreResult<Vec<i64>> {
        // Reading the schema is what tells a database from a file that is not one:
        // `SELECT 1` (the ping) never opens the file's pages.
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_one(&self.reader)
        .await?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&self.reader)
                .await?
        } else {
            Vec::new()
        };
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

    /// Commits what is queued, then closes the writer and the readers. Closing the
    /// last connection checkpoints the WAL into the database file, so the next start
    /// (or a backup) reads one file.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.close().await;
        }
        self.reader.close().await;
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
        rows.iter().map(rows::event_from_row).collect()
    }

    /// Deletes final requests decided before `cutoff`, with their events, votes, outbox
    /// rows, grant uses, callback targets and batch links (and batches left with no
    /// item), and grants expired or revoked
    /// before it, in one writer job. Pending requests are never pruned, however old.
    /// Returns how many requests went.
    pub async fn prune_decided_before(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let cutoff = rfc3339(cutoff);
        self.write(Box::new(move |conn| {
            // Everything that refers to a pruned request goes with it, atomically.
            for table in [
                "events",
                "votes",
                "outbox",
                "grant_uses",
                "callback_targets",
                "batch_items",
            ] {
                conn.execute(
                    &format!(
                        "DELETE FROM {table} WHERE approval_id IN
                           (SELECT id FROM approvals WHERE status != 'pending' AND decided_at < ?)"
                    ),
                    [&cutoff],
                )?;
            }
            let pruned = conn.execute(
                "DELETE FROM approvals WHERE status != 'pending' AND decided_at < ?",
                [&cutoff],
            )?;
            // A batch whose every item went has nothing left to answer about.
            conn.execute(
                "DELETE FROM batches WHERE NOT EXISTS
                   (SELECT 1 FROM batch_items WHERE batch_items.batch_id = batches.id)",
                [],
            )?;
            // Grants expired (or revoked) before the cutoff are no use to anyone.
            conn.execute(
                "DELETE FROM grants WHERE expires_at < ?1 OR revoked_at < ?1",
                [&cutoff],
            )?;
            Ok(pruned as u64)
        }))
        .await
    }
}

/// Takes an exclusive advisory lock (`flock`) on the database file, so a second
/// `greenlight serve` on the same file is refused at start instead of running a second
/// set of workers (each would post, expire and rewrite the same requests). The lock
/// goes with the process, `kill -9` included. An in-memory database has no file and
/// needs none.
fn lock_for_writing(file: &std::path::Path) -> StoreResult<Option<Arc<std::fs::File>>> {
    if file.as_os_str() == ":memory:" || file.as_os_str().is_empty() {
        return Ok(None);
    }
    let handle = std::fs::File::open(file)
        .map_err(|e| StoreError::Commit(format!("cannot open {}: {e}", file.display())))?;
    match handle.try_lock() {
        Ok(()) => Ok(Some(Arc::new(handle))),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StoreError::InUse(file.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Commit(format!(
            "cannot lock {}: {e}",
            file.display()
        ))),
    }
}

/// The writer's connection: the same database, with the settings that make a commit
/// durable (`synchronous=FULL`: a committed decision survives power loss, not only a
/// crash), a patient busy timeout for the moments a checkpoint holds the file, and a
/// 64 MiB cap on the WAL file kept after a checkpoint (a start-up after a crash reads
/// the whole WAL, so an unbounded one makes recovery slow). Temporary storage is
/// in memory: each job's savepoint journals the pages it touches, and in a file that
/// cost an open, writes and an unlink per batch. The
/// page cache stays at SQLite's default: a larger one makes every savepoint and commit
/// slower (the cache is walked when they end), measured at 2.5x per job at 64 MiB.
fn open_writer(file: &std::path::Path) -> StoreResult<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(file)?;
    conn.busy_timeout(writer::BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Appends one event inside the caller's transaction (on the writer's connection).
fn insert_event(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> StoreResult<()> {
    insert_event_with(
        conn,
        "INSERT INTO events (approval_id, at, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        id,
        at,
        event,
    )
}

/// Appends a deferred audit entry (a merged repeat click, a held tally) if its
/// request still exists. Such an entry is written after the fact, up to minutes later
/// for a held tally: meanwhile retention may have pruned the request, and an entry
/// then would belong to no request and never be pruned itself.
fn insert_deferred_event(
    conn: &rusqlite::Connection,
    id: ApprovalId,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> StoreResult<()> {
    insert_event_with(
        conn,
        "INSERT INTO events (approval_id, at, kind, actor, detail)
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM approvals WHERE id = ?1)",
        id,
        at,
        event,
    )
}

/// Runs `sql`, an insert into `events` taking the request id, time, kind, actor and
/// detail as `?1`..`?5`.
fn insert_event_with(
    conn: &rusqlite::Connection,
    sql: &str,
    id: ApprovalId,
    at: DateTime<Utc>,
    event: &NewEvent,
) -> StoreResult<()> {
    conn.prepare_cached(sql)?.execute(rusqlite::params![
        id.to_string(),
        rfc3339(at),
        event.kind,
        event.actor,
        event.detail.to_string()
    ])?;
    Ok(())
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[tokio::test]
    async fn a_second_writer_on_the_same_file_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("one.db").display());
        let first = crate::store::Store::connect(&url).await.expect("first");
        match crate::store::Store::connect(&url).await {
            Err(StoreError::InUse(file)) => assert!(file.ends_with("one.db"), "{file}"),
            other => panic!("a second writer was not refused: {other:?}"),
        }
        // Readers (doctor, audit export) are not writers.
        crate::store::Store::open_read_only(&url)
            .await
            .expect("read-only");
        first.close().await;
        drop(first);
        crate::store::Store::connect(&url)
            .await
            .expect("the lock went with the first store");
    }
}
