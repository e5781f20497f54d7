//! Read connections that run a query on the calling task's own thread.
//!
//! sqlx's SQLite driver runs every statement on a worker thread of its connection and
//! hands rows back over channels: two thread wake-ups per query. On the hot paths
//! (a click reads its request, a submit checks its Idempotency-Key) those wake-ups
//! cost more than the query, which is a B-tree probe of pages already in memory. A
//! read here takes an idle rusqlite connection, runs, and puts it back, without
//! leaving the thread. WAL mode lets readers run beside the writer without waiting on
//! it, so a read blocks its thread for the query itself (or, in the rare moments
//! SQLite's WAL recovery holds a lock, up to the busy timeout); anything that may
//! scan many rows (exports, lists) stays on the sqlx pool.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OpenFlags};

use crate::store::StoreResult;

/// Idle connections kept for reuse: one per thread that reads at once (tokio's
/// workers); more are opened when needed and dropped when returned beyond this.
const KEEP_IDLE: usize = 8;

/// A pool of read-only rusqlite connections to one database file. Cheap to clone.
#[derive(Clone)]
pub struct Readers {
    file: Arc<PathBuf>,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Readers {
    /// Readers of `file`, which must exist (the writer or the migrator made it).
    /// Opens one connection now, so that a missing or unreadable file is an error
    /// here and not at the first read.
    pub fn open(file: &Path) -> StoreResult<Self> {
        let readers = Self {
            file: Arc::new(file.to_path_buf()),
            idle: Arc::default(),
        };
        let first = readers.connect()?;
        readers.give_back(first);
        Ok(readers)
    }

    /// Runs `query` on an idle connection, on this thread. Errors: opening a
    /// connection, or whatever `query` returns.
    pub fn read<T>(&self, query: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match taken {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let answer = query(&conn);
        self.give_back(conn);
        answer
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < KEEP_IDLE {
                idle.push(conn);
            }
        }
    }

    /// A read-only connection (it can neither write nor create the file) that waits
    /// up to 10 s for a lock, as the writer does, and caches its prepared statements.
    fn connect(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            self.file.as_path(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_committed_writes_and_cannot_write() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("r.db");
        let writer = Connection::open(&file).expect("open");
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER);")
            .expect("schema");
        let readers = Readers::open(&file).expect("readers");
        writer
            .execute("INSERT INTO t VALUES (7)", [])
            .expect("insert");
        let n: i64 = readers
            .read(|conn| Ok(conn.query_row("SELECT n FROM t", [], |row| row.get(0))?))
            .expect("read");
        assert_eq!(n, 7);
        let refused = readers.read(|conn| Ok(conn.execute("INSERT INTO t VALUES (8)", [])?));
        assert!(refused.is_err(), "a reader wrote");
    }

    #[test]
    fn a_missing_file_is_an_error_at_open() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(Readers::open(&dir.path().join("missing.db")).is_err());
    }

    #[test]
    fn a_read_inside_a_read_gets_its_own_connection() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("r.db");
        Connection::open(&file)
            .expect("open")
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER);")
            .expect("schema");
        let readers = Readers::open(&file).expect("readers");
        let inner = readers
            .read(|_| {
                readers.read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            })
            .expect("nested");
        assert_eq!(inner, 1);
    }
}
