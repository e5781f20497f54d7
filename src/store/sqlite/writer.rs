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
//! flood of repeated clicks costs no fsync of its own. Entries anyone can cause (forged
//! clicks) are held longer with [`Writer::hold_event`]: see [`crate::store::deferred`]
//! for what bounds them.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::Utc;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Notify};

use super::insert_deferred_event;
use crate::model::ApprovalId;
use crate::store::{
    deferred::{self, DeferredEvents, Holding, Release},
    NewEvent, StoreError, StoreResult,
};

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

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    messages: mpsc::Sender<Message>,
    /// Transactions committed so far (for tests and metrics: jobs per commit).
    commits: Arc<AtomicU64>,
    /// Jobs run so far.
    writes: Arc<AtomicU64>,
    /// Times the writer rewound the WAL ([`restart_wal`]).
    rewinds: Arc<AtomicU64>,
    /// Audit entries waiting for a batch: merged ones for the next, held ones until due.
    deferred: Arc<Mutex<DeferredEvents>>,
    deferred_ready: Arc<Notify>,
    /// Told when a held tally starts, so something writes it when it is due.
    held_ready: Arc<Notify>,
}

impl Writer {
    /// Starts the writer thread on `conn`, which it owns from now on, and a small task
    /// that makes sure deferred entries are written within `DEFERRED_FLUSH` (500 ms). The
    /// thread ends when every handle is dropped or [`Writer::close`] is called.
    pub fn spawn(conn: Connection) -> std::io::Result<Self> {
        Self::spawn_with_checkpointer(conn, None)
    }

    /// As [`Writer::spawn`], and with `checkpoints` (a second connection to the same
    /// database) moves WAL checkpoints off the write path: the writer's own automatic
    /// checkpoint is turned off, and a thread of its own checkpoints (`PASSIVE`, which
    /// never blocks the writer) every `CHECKPOINT_EVERY` (250 ms). A checkpoint copies
    /// pages into the database file and fsyncs it; done inside a commit, it stalls every
    /// caller of that batch.
    ///
    /// A `PASSIVE` checkpoint copies frames but cannot rewind the WAL while writes keep
    /// coming: the log restarts from its beginning only once it is wholly copied, and
    /// under steady load there is always a newer frame (measured: 3.3 GB of WAL beside
    /// a 90 MB database after one minute of posting in `cargo bench --bench core`).
    /// So once the WAL holds more than [`WAL_RESTART_BYTES`], the writer itself runs a
    /// `RESTART` checkpoint between two batches; see `restart_wal`.
    pub fn spawn_with_checkpointer(
        conn: Connection,
        checkpoints: Option<Connection>,
    ) -> std::io::Result<Self> {
        Self::spawn_bounded(conn, checkpoints, (WAL_RESTART_BYTES, CHECKPOINT_EVERY))
    }

    /// [`Writer::spawn_with_checkpointer`] with the WAL bound in bytes and the time
    /// between checkpoints (tests use small ones).
    fn spawn_bounded(
        conn: Connection,
        checkpoints: Option<Connection>,
        (wal_bound, every): (i64, Duration),
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let restart_due = Arc::new(AtomicBool::new(false));
        if let Some(checkpoints) = checkpoints {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(std::io::Error::other)?;
            let page_size: i64 = conn
                .pragma_query_value(None, "page_size", |row| row.get(0))
                .map_err(std::io::Error::other)?;
            let bound = WalBound {
                frames: wal_bound / page_size.max(512),
                every,
                restart_due: restart_due.clone(),
            };
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("greenlight-checkpoint".into())
                .spawn(move || checkpoint(checkpoints, &stop, &bound))?;
        }
        let (messages, rx) = mpsc::channel(QUEUE);
        let writer = Self {
            messages,
            commits: Arc::default(),
            writes: Arc::default(),
            rewinds: Arc::default(),
            deferred: Arc::default(),
            deferred_ready: Arc::default(),
            held_ready: Arc::default(),
        };
        let counters = (writer.commits.clone(), writer.writes.clone());
        let deferred = writer.deferred.clone();
        let rewinds = writer.rewinds.clone();
        std::thread::Builder::new()
            .name("greenlight-writer".into())
            .spawn(move || {
                run(conn, rx, counters, deferred, (&restart_due, &rewinds));
                stop.store(true, Ordering::Relaxed);
            })?;
        tokio::spawn(flush_deferred_regularly(
            writer.messages.downgrade(),
            writer.deferred_ready.clone(),
        ));
        tokio::spawn(write_held_when_due(
            writer.messages.downgrade(),
            Arc::downgrade(&writer.deferred),
            writer.held_ready.clone(),
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

    /// How many times the writer has rewound an over-long WAL.
    pub fn wal_rewinds(&self) -> u64 {
        self.rewinds.load(Ordering::Relaxed)
    }

    /// Returns once every deferred audit entry queued before the call is committed:
    /// a reader of the trail then sees every click acknowledged so far. An empty job
    /// is enough: batches commit in order, and each takes the deferred entries.
    pub async fn flush_deferred(&self) -> StoreResult<()> {
        self.write(Box::new(|_| Ok(()))).await
    }

    /// As [`Writer::flush_deferred`], and request `id`'s held tallies are written too,
    /// due or not: its trail is about to be read, and should show every attempt so far.
    pub async fn flush_deferred_of(&self, id: ApprovalId) -> StoreResult<()> {
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.release(id);
        }
        self.flush_deferred().await
    }

    /// Queues an audit entry for the next batch without waiting for it. Identical
    /// entries are merged, counting repeats in `detail.count`. For evidence that
    /// changes nothing (a repeated or late click): losing it in a crash loses no
    /// decision.
    pub fn defer_event(&self, id: ApprovalId, event: NewEvent) {
        if let Ok(mut deferred) = self.deferred.lock() {
            deferred.push(id, event);
        }
        self.deferred_ready.notify_one();
    }

    /// Counts an audit entry anyone can cause (a forged click) in a tally held in
    /// memory and written as one entry with `detail.count` once due
    /// ([`deferred::HOLD`], 60 s), when the request's trail is read, or at close; see
    /// [`crate::store::deferred`] for the bound. Costs no write of its own.
    pub fn hold_event(&self, id: ApprovalId, event: NewEvent) {
        let Ok(mut queue) = self.deferred.lock() else {
            return;
        };
        match queue.hold(id, event.clone(), std::time::Instant::now()) {
            Holding::Started => self.held_ready.notify_one(),
            Holding::Counted => {}
            Holding::Full => deferred::log_dropped(id, &event),
        }
    }
}

/// How often the checkpoint thread copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// A WAL longer than this is rewound by a `RESTART` checkpoint: the same 64 MiB the
/// writer's `journal_size_limit` keeps on disk after a rewind (`super::open_writer`).
pub const WAL_RESTART_BYTES: i64 = 64 * 1024 * 1024;
/// How long a `RESTART` checkpoint waits for readers still on the old log (a long
/// scan) before giving up until the next round: the writer is stalled meanwhile.
const RESTART_PATIENCE: Duration = Duration::from_millis(100);
/// The writer's usual wait for a lock (a checkpoint holding the file).
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// When the WAL is too long, and the flag that asks the writer to rewind it.
struct WalBound {
    frames: i64,
    every: Duration,
    restart_due: Arc<AtomicBool>,
}

/// The checkpoint thread: a `PASSIVE` checkpoint every [`CHECKPOINT_EVERY`] until
/// the writer stops. When one reports a log longer than the bound, a second one runs
/// at once (copying what was written during the first), and then the writer is asked
/// for a `RESTART`: it stalls its callers while it copies what is left, so that should
/// be little. Not while a reader holds an old snapshot (the second checkpoint could
/// not copy every frame it saw): the `RESTART` would stall the writer for its whole
/// patience and fail; the log waits for that reader (a long export) to finish.
fn checkpoint(conn: Connection, stop: &AtomicBool, bound: &WalBound) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(bound.every);
        let Some((log, _)) = passive(&conn) else {
            continue;
        };
        if log > bound.frames && passive(&conn).is_some_and(|(log, copied)| copied == log) {
            bound.restart_due.store(true, Ordering::Release);
        }
    }
}

/// One `PASSIVE` checkpoint: the frames in the log when it started and how many of
/// them are now in the database file, or `None` if it failed (logged).
fn passive(conn: &Connection) -> Option<(i64, i64)> {
    // (busy, frames in the log, frames copied): SQLite's documented result row; a
    // checkpoint that could not start reports (1, -1, -1).
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    result
        .inspect_err(|error| tracing::warn!(%error, "WAL checkpoint failed; retrying"))
        .ok()
}

/// Rewinds the WAL, on the writer's connection between two batches: a `RESTART`
/// checkpoint copies what the passive ones have not, waits (at most
/// [`RESTART_PATIENCE`]) for readers still on the old log, and makes the next commit
/// write from the log's start. Run by the writer because it takes the write lock: from
/// another connection it would wait for a gap between batches, then stall the writer
/// on its busy timeout. Jobs that arrive meanwhile queue and go into the next batch.
/// A reader that outlasts the patience leaves the log as it is until the next round.
/// Returns whether the log was rewound.
fn restart_wal(conn: &Connection) -> bool {
    let started = std::time::Instant::now();
    let _ = conn.busy_timeout(RESTART_PATIENCE);
    let result = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
    });
    let _ = conn.busy_timeout(BUSY_TIMEOUT);
    match result {
        Ok((0, frames)) => {
            tracing::debug!(
                frames,
                took_ms = started.elapsed().as_millis() as u64,
                "WAL rewound"
            );
            true
        }
        Ok((_, frames)) => {
            tracing::debug!(
                frames,
                "WAL not rewound yet (a reader or the passive checkpoint was on it)"
            );
            false
        }
        Err(error) => {
            tracing::warn!(%error, "WAL restart checkpoint failed");
            false
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
        let (job, _) = empty_job();
        if messages.send(Message::Job(job)).await.is_err() {
            return;
        }
    }
}

/// A job that writes nothing, so that a batch runs (and writes the deferred entries
/// due), and the receiver that hears when it committed.
fn empty_job() -> (Box<Typed<()>>, oneshot::Receiver<StoreResult<()>>) {
    let (reply, answer) = oneshot::channel::<StoreResult<()>>();
    let job = Box::new(Typed {
        work: Some(Box::new(|_: &Connection| Ok(()))),
        result: None,
        reply,
    });
    (job, answer)
}

/// Once a held tally starts, waits [`deferred::HOLD`] and has an (empty) batch run,
/// which writes every tally due by then; again while tallies remain held. Ends with the
/// writer.
async fn write_held_when_due(
    messages: mpsc::WeakSender<Message>,
    deferred: std::sync::Weak<Mutex<DeferredEvents>>,
    ready: Arc<Notify>,
) {
    loop {
        ready.notified().await;
        loop {
            tokio::time::sleep(deferred::HOLD).await;
            let Some(messages) = messages.upgrade() else {
                return;
            };
            let (job, answer) = empty_job();
            if messages.send(Message::Job(job)).await.is_err() {
                return;
            }
            drop(messages);
            let _ = answer.await;
            let Some(deferred) = deferred.upgrade() else {
                return;
            };
            if !deferred.lock().is_ok_and(|d| d.holds_any()) {
                break;
            }
        }
    }
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Message>,
    (commits, writes): (Arc<AtomicU64>, Arc<AtomicU64>),
    deferred: Arc<Mutex<DeferredEvents>>,
    (restart_due, rewinds): (&AtomicBool, &AtomicU64),
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
        // Closing writes every held tally: none is left behind in memory.
        let release = match closed_by {
            Some(_) => Release::All,
            None => Release::Due,
        };
        let events = take_deferred(&deferred, release);
        if !batch.is_empty() || !events.is_empty() {
            writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            commit_batch(&conn, &mut batch, &events);
            commits.fetch_add(1, Ordering::Relaxed);
        }
        if restart_due.swap(false, Ordering::AcqRel) && restart_wal(&conn) {
            rewinds.fetch_add(1, Ordering::Relaxed);
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

fn take_deferred(
    deferred: &Mutex<DeferredEvents>,
    release: Release,
) -> Vec<(ApprovalId, NewEvent)> {
    deferred
        .lock()
        .map(|mut deferred| deferred.take(release, std::time::Instant::now()))
        .unwrap_or_default()
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
        if let Err(error) = insert_deferred_event(conn, *id, now, event) {
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
             CREATE TABLE approvals (id TEXT PRIMARY KEY);
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
        let id = stored(&writer).await;
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

    /// A fresh id stored in `approvals`, as a request deferred entries may refer to.
    async fn stored(writer: &Writer) -> ApprovalId {
        let id = ApprovalId::new();
        writer
            .write(Box::new(move |conn| {
                conn.execute("INSERT INTO approvals (id) VALUES (?)", [id.to_string()])?;
                Ok(())
            }))
            .await
            .expect("stored");
        id
    }

    fn rejected() -> NewEvent {
        NewEvent::new(
            "click_rejected",
            None,
            serde_json::json!({"why": "bad_signature"}),
        )
    }

    fn details(dir: &tempfile::TempDir) -> Vec<String> {
        let conn = Connection::open(dir.path().join("w.db")).expect("open");
        let mut statement = conn
            .prepare("SELECT detail FROM events ORDER BY seq")
            .expect("prepare");
        let rows = statement
            .query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows
    }

    #[tokio::test]
    async fn held_entries_wait_for_a_read_of_their_trail_then_are_one_counted_entry() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir);
        let (read, other) = (stored(&writer).await, stored(&writer).await);
        for _ in 0..50 {
            writer.hold_event(read, rejected());
        }
        writer.hold_event(other, rejected());
        // A request pruned (here: never stored) before its tally is written gets none.
        writer.hold_event(ApprovalId::new(), rejected());
        writer.flush_deferred().await.expect("flush");
        assert!(
            details(&dir).is_empty(),
            "held entries were written at once"
        );
        writer.flush_deferred_of(read).await.expect("flush");
        let written = details(&dir);
        assert_eq!(written.len(), 1, "{written:?}");
        assert!(written[0].contains("\"count\":50"), "{written:?}");
        // Closing writes what is still held.
        writer.close().await;
        assert_eq!(details(&dir).len(), 2);
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

    /// The mechanism: after a `RESTART` checkpoint (with a reader between writes, as
    /// the service always has), the next commit writes the log from its start, which
    /// `journal_size_limit` then truncates. Without it the commit appends.
    #[test]
    fn a_restart_checkpoint_makes_the_next_commit_rewrite_the_log() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("r.db");
        let conn = Connection::open(&file).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 0; CREATE TABLE t (n INTEGER NOT NULL, pad BLOB NOT NULL);",
        )
        .expect("table");
        let reader = Connection::open(&file).expect("reader");
        let insert = |n: i64| {
            conn.execute("INSERT INTO t (n, pad) VALUES (?, zeroblob(3000))", [n])
                .expect("insert")
        };
        let wal = || {
            std::fs::metadata(dir.path().join("r.db-wal"))
                .expect("wal")
                .len()
        };
        for n in 0..200 {
            insert(n);
        }
        let grown = wal();
        let count =
            |c: &Connection| c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0));
        assert_eq!(count(&reader).expect("read"), 200);
        assert!(
            restart_wal(&conn),
            "the restart checkpoint did not complete"
        );
        insert(200);
        assert!(
            wal() * 10 < grown,
            "the log went from {grown} to {} bytes: the commit appended",
            wal()
        );
        assert_eq!(count(&reader).expect("read"), 201);
    }

    /// The wiring, under steady writes with a reader always on the log (where passive
    /// checkpoints alone never rewind it): the checkpoint thread finds the log over
    /// its bound and the writer rewinds it, again and again, and no write is lost.
    #[tokio::test]
    async fn steady_writes_under_a_reader_rewind_the_wal() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("wal.db");
        let conn = Connection::open(&file).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE t (n INTEGER NOT NULL UNIQUE, pad BLOB NOT NULL);
             CREATE TABLE events (seq INTEGER PRIMARY KEY, approval_id TEXT, at TEXT, kind TEXT, actor TEXT, detail TEXT);",
        )
        .expect("tables");
        let checkpoints = Connection::open(&file).expect("checkpoint connection");
        let bound = (64 * 4096, Duration::from_millis(10));
        let writer = Writer::spawn_bounded(conn, Some(checkpoints), bound).expect("spawn");
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (stop, conn) = (stop.clone(), Connection::open(&file).expect("reader"));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0));
                }
            })
        };
        let started = std::time::Instant::now();
        let mut rows = 0_i64;
        while writer.wal_rewinds() < 3 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the WAL was never rewound ({rows} rows written)"
            );
            let n = rows;
            writer
                .write(Box::new(move |conn| {
                    conn.prepare_cached("INSERT INTO t (n, pad) VALUES (?, zeroblob(3000))")?
                        .execute([n])?;
                    Ok(())
                }))
                .await
                .expect("write");
            rows += 1;
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader");
        assert_eq!(writer.write(count()).await.expect("count"), rows);
    }
}
