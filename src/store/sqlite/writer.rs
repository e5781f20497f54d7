//! Group commit: every durable write goes through one thread that owns the database's
//! only write connection and commits many callers' writes in one transaction.
//!
//! With `synchronous=FULL`, each commit costs an fsync, and SQLite admits one writer
//! at a time anyway. Committing callers one by one caps the service at about one fsync
//! per operation; batching pays one fsync for everything that arrived while the
//! previous commit was being made. Each caller is answered only once the transaction
//! holding its write is durable, so an acknowledged submit, vote or decision survives
//! a power cut exactly as before.
//!
//! The writer is an OS thread with a plain (rusqlite) connection: it is the one serial
//! path every state change takes, so its statements run as function calls, not as
//! round trips between tasks. Callers stay async: they queue a job and await a
//! oneshot answer.
//!
//! Each job runs inside its own `SAVEPOINT`: a job that fails (a constraint, a bug)
//! is rolled back alone and gets its error, and the rest of the batch commits. A
//! failed commit fails every job in the batch; none of them was acknowledged.
//!
//! Audit entries that need no answer (duplicate and late clicks, counted in aggregate)
//! are queued with [`Writer::defer_event`] and ride along with the next batch, so a
//! flood of repeated clicks costs no fsync of its own.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::Utc;
use rusqlite::Connection;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use super::insert_event;
use crate::model::ApprovalId;
use crate::store::{NewEvent, StoreError, StoreResult};

/// Most jobs in one transaction: bounds how long a commit holds the write lock and
/// how much one failed commit can take with it.
const MAX_BATCH: usize = 512;
/// Deferred audit entries are written within this long even when no other write comes.
const DEFERRED_FLUSH: Duration = Duration::from_millis(500);
/// Callers queue at most this many jobs before `write` waits (back-pressure).
const QUEUE: usize = 8192;

/// The work of one caller, run on the writer's connection inside the batch's
/// transaction.
pub type Work<T> = Box<dyn FnOnce(&Connection) -> StoreResult<T> + Send>;

/// A job as the writer thread sees it, whatever its result type.
trait Job: Send {
    /// Runs the work, keeping its result until the commit is known.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: its result if the batch committed, the commit error if not.
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Typed<T> {
    work: Option<Work<T>>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send + 'static> Job for Typed<T> {
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A job that panics fails alone (its savepoint is rolled back), instead of
        // taking the only writer, and with it every later write, down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Commit("the write panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let answer = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(error), _) => Err(StoreError::Commit(error)),
            (Ok(()), None) => Err(StoreError::Commit("the job never ran".into())),
        };
        let _ = self.reply.send(answer);
    }
}

/// What the writer thread receives.
enum Message {
    Job(Box<dyn Job>),
    /// Commit what is queued, close the connection, answer, stop.
    Close(oneshot::Sender<()>),
}

/// Audit entries waiting for the next batch. Identical ones (same request, kind, actor
/// and detail) are merged, so a thousand repeats of one click become one entry with
/// `"count": 1000`.
#[derive(Default)]
struct Deferred {
    entries: HashMap<DeferredKey, (NewEvent, u64)>,
}

/// Request, kind, actor and the detail as JSON text.
type DeferredKey = (ApprovalId, &'static str, Option<String>, String);

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    messages: mpsc::Sender<Message>,
    /// Transactions committed so far (for tests and metrics: jobs per commit).
    commits: Arc<AtomicU64>,
    /// Jobs run so far.
    writes: Arc<AtomicU64>,
    deferred: Arc<Mutex<Deferred>>,
    deferred_ready: Arc<Notify>,
}

impl Writer {
    /// Starts the writer thread on `conn`, which it owns from now on, and a small task
    /// that makes sure deferred entries are written within [`DEFERRED_FLUSH`]. The
    /// thread ends when every handle is dropped or [`Writer::close`] is called.
    pub fn spawn(conn: Connection) -> std::io::Result<Self> {
        Self::spawn_with_checkpointer(conn, None)
    }

    /// As [`Writer::spawn`], and with `checkpoints` (a second connection to the same
    /// database) moves WAL checkpoints off the write path: the writer's own automatic
    /// checkpoint is turned off, and a thread of its own checkpoints (`PASSIVE`, which
    /// never blocks the writer) every [`CHECKPOINT_EVERY`]. A checkpoint copies pages
    /// into the database file and fsyncs it; done inside a commit, it stalls every
    /// caller of that batch.
    pub fn spawn_with_checkpointer(
        conn: Connection,
        checkpoints: Option<Connection>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(checkpoints) = checkpoints {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(std::io::Error::other)?;
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("greenlight-checkpoint".into())
                .spawn(move || checkpoint(checkpoints, &stop))?;
        }
        let (messages, rx) = mpsc::channel(QUEUE);
        let writer = Self {
            messages,
            commits: Arc::default(),
            writes: Arc::default(),
            deferred: Arc::default(),
            deferred_ready: Arc::default(),
        };
        let counters = (writer.commits.clone(), writer.writes.clone());
        let deferred = writer.deferred.clone();
        std::thread::Builder::new()
            .name("greenlight-writer".into())
            .spawn(move || {
                run(conn, rx, counters, deferred);
                stop.store(true, Ordering::Relaxed);
            })?;
        tokio::spawn(flush_deferred_regularly(
            writer.messages.downgrade(),
            writer.deferred_ready.clone(),
        ));
        Ok(writer)
    }

    /// Runs `work` in the next batch; returns once that batch is committed (or failed).
    pub async fn write<T: Send + 'static>(&self, work: Work<T>) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            work: Some(work),
            result: None,
            reply,
        });
        self.messages
            .send(Message::Job(job))
            .await
            .map_err(|_| StoreError::Commit("the database writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Commit("the database writer stopped mid-batch".into()))?
    }

    /// Commits what is queued (jobs and deferred entries), closes the connection (which
    /// checkpoints the WAL) and stops the thread. Later writes fail.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.messages.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// How many transactions the writer has committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// How many jobs the writer has run.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Returns once every deferred audit entry queued before the call is committed:
    /// a reader of the trail then sees every click acknowledged so far. An empty job
    /// is enough: batches commit in order, and each takes the deferred entries.
    pub async fn flush_deferred(&self) -> StoreResult<()> {
        self.write(Box::new(|_| Ok(()))).await
    }

    /// Queues an audit entry for the next batch without waiting for it. Identical
    /// entries are merged, counting repeats in `detail.count`. For evidence that
    /// changes nothing (a repeated or late click): losing it in a crash loses no
    /// decision.
    pub fn defer_event(&self, id: ApprovalId, event: NewEvent) {
        let key = (
            id,
            event.kind,
            event.actor.clone(),
            event.detail.to_string(),
        );
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.entries.entry(key).or_insert((event, 0)).1 += 1;
        }
        self.deferred_ready.notify_one();
    }
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The checkpoint thread: `PASSIVE` checkpoints until the writer stops, then one
/// last one, so the WAL does not grow without bound.
fn checkpoint(conn: Connection, stop: &std::sync::atomic::AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "WAL checkpoint failed; retrying");
        }
    }
}

/// Sends an empty job [`DEFERRED_FLUSH`] after deferred entries appear, so they are
/// written even when nothing else is.
async fn flush_deferred_regularly(messages: mpsc::WeakSender<Message>, ready: Arc<Notify>) {
    loop {
        ready.notified().await;
        tokio::time::sleep(DEFERRED_FLUSH).await;
        let Some(messages) = messages.upgrade() else {
            return;
        };
        let (reply, _) = oneshot::channel::<StoreResult<()>>();
        let job = Box::new(Typed {
            work: Some(Box::new(|_: &Connection| Ok(()))),
            result: None,
            reply,
        });
        if messages.send(Message::Job(job)).await.is_err() {
            return;
        }
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Message>,
    (commits, writes): (Arc<AtomicU64>, Arc<AtomicU64>),
    deferred: Arc<Mutex<Deferred>>,
) {
    let mut closed_by = None;
    while closed_by.is_none() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Job(job) => batch.push(job),
                Message::Close(done) => closed_by = Some(done),
            }
            // Everything that queued while the last commit was being made.
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let events = take_deferred(&deferred);
        if !batch.is_empty() || !events.is_empty() {
            writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            commit_batch(&conn, &mut batch, &events);
            commits.fetch_add(1, Ordering::Relaxed);
        }
    }
    rx.close();
    // Jobs that raced the close are refused, not left hanging.
    while let Ok(message) = rx.try_recv() {
        if let Message::Job(job) = message {
            job.finish(Err("the database writer has stopped".into()));
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "the database writer did not close cleanly");
    }
    if let Some(done) = closed_by {
        let _ = done.send(());
    }
}

fn take_deferred(deferred: &Mutex<Deferred>) -> Vec<(ApprovalId, NewEvent)> {
    let Ok(mut deferred) = deferred.lock() else {
        return Vec::new();
    };
    deferred
        .entries
        .drain()
        .map(|((id, ..), (mut event, count))| {
            if count > 1 {
                if let Value::Object(detail) = &mut event.detail {
                    detail.insert("count".into(), count.into());
                }
            }
            (id, event)
        })
        .collect()
}

/// One transaction: every job in its savepoint, then the deferred entries, then one
/// commit; then every caller is answered.
fn commit_batch(
    conn: &Connection,
    batch: &mut Vec<Box<dyn Job>>,
    events: &[(ApprovalId, NewEvent)],
) {
    let committed = transaction(conn, batch, events).map_err(|e| e.to_string());
    if let Err(error) = &committed {
        tracing::error!(%error, jobs = batch.len(), "a write batch failed to commit");
        // Whatever state the failure left, the next batch must start clean.
        let _ = conn.execute_batch("ROLLBACK");
    }
    for job in batch.drain(..) {
        job.finish(committed.clone());
    }
}

fn transaction(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    events: &[(ApprovalId, NewEvent)],
) -> rusqlite::Result<()> {
    run_cached(conn, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        run_cached(conn, "SAVEPOINT job")?;
        if !job.run(conn) {
            run_cached(conn, "ROLLBACK TO job")?;
        }
        run_cached(conn, "RELEASE job")?;
    }
    let now = Utc::now();
    for (id, event) in events {
        if let Err(error) = insert_event(conn, *id, now, event) {
            tracing::error!(request_id = %id, %error, "could not write a deferred audit entry");
        }
    }
    run_cached(conn, "COMMIT")
}

/// Runs one statement through the connection's statement cache: the writer runs
/// these four per job, and parsing them each time was a measurable share of its time.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &tempfile::TempDir) -> Writer {
        let conn = Connection::open(dir.path().join("w.db")).expect("open");
        conn.execute_batch(
            "CREATE TABLE t (n INTEGER NOT NULL UNIQUE);
             CREATE TABLE events (seq INTEGER PRIMARY KEY, approval_id TEXT, at TEXT, kind TEXT, actor TEXT, detail TEXT);",
        )
        .expect("tables");
        Writer::spawn(conn).expect("spawn")
    }

    fn insert(n: i64) -> Work<i64> {
        Box::new(move |conn| {
            conn.prepare_cached("INSERT INTO t (n) VALUES (?)")?
                .execute([n])?;
            Ok(n)
        })
    }

    fn count() -> Work<i64> {
        Box::new(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))?))
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_all_land() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir);
        let answers = futures::future::join_all((0..500).map(|n| writer.write(insert(n)))).await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(writer.write(count()).await.expect("count"), 500);
        let commits = writer.commits();
        assert!(commits < 100, "500 writes took {commits} commits");
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir);
        let panics: Work<i64> = Box::new(|_| panic!("a bug in one write"));
        let (bad, good) = tokio::join!(writer.write(panics), writer.write(insert(5)));
        assert!(bad.is_err());
        assert_eq!(good.expect("the other write commits"), 5);
        assert_eq!(writer.write(count()).await.expect("count"), 1);
    }

    #[tokio::test]
    async fn a_failing_job_fails_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir);
        writer.write(insert(1)).await.expect("first");
        // The duplicate violates UNIQUE; the others in its batch still commit.
        let answers =
            futures::future::join_all([2, 1, 3].into_iter().map(|n| writer.write(insert(n)))).await;
        assert!(answers[0].is_ok() && answers[1].is_err() && answers[2].is_ok());
        assert_eq!(writer.write(count()).await.expect("count"), 3);
    }

    #[tokio::test]
    async fn identical_deferred_entries_merge_with_a_count() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir);
        let id = ApprovalId::new();
        let late = || {
            NewEvent::new(
                "click_ignored",
                Some("U1"),
                serde_json::json!({"why": "late"}),
            )
        };
        for _ in 0..3 {
            writer.defer_event(id, late());
        }
        writer.defer_event(
            id,
            NewEvent::new(
                "click_ignored",
                Some("U2"),
                serde_json::json!({"why": "late"}),
            ),
        );
        writer.flush_deferred().await.expect("flush");
        let details: Vec<String> = writer
            .write(Box::new(|conn| {
                let mut statement = conn.prepare("SELECT detail FROM events ORDER BY actor")?;
                let rows = statement.query_map([], |row| row.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            }))
            .await
            .expect("read");
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(details[0].contains("\"count\":3"), "{details:?}");
        assert!(!details[1].contains("count"), "{details:?}");
    }

    #[tokio::test]
    async fn deferred_entries_are_written_without_other_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir);
        writer.defer_event(
            ApprovalId::new(),
            NewEvent::new("click_ignored", None, serde_json::json!({})),
        );
        let started = std::time::Instant::now();
        while writer.commits() == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "never flushed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn close_commits_what_is_queued_then_refuses_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir);
        let queued = writer.write(insert(7));
        let (answer, ()) = tokio::join!(queued, writer.close());
        assert_eq!(answer.expect("committed before closing"), 7);
        assert!(writer.write(count()).await.is_err());
    }
}
