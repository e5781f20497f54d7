//! Group commit: every durable write goes through one task that owns the database's
//! only write connection and commits many callers' writes in one transaction.
//!
//! With `synchronous=FULL`, each commit costs an fsync (about 0.3 ms here), and SQLite
//! admits one writer at a time anyway. Committing callers one by one caps the service
//! at about one fsync per operation; batching pays one fsync for everything that
//! arrived while the previous commit was being made. Each caller is answered only
//! once the transaction holding its write is durable, so an acknowledged submit, vote
//! or decision survives a power cut exactly as before.
//!
//! Each job runs inside its own `SAVEPOINT`: a job that fails (a constraint, a bug)
//! is rolled back alone and gets its error, and the rest of the batch commits. A
//! failed commit fails every job in the batch; none of them was acknowledged.
//!
//! Audit entries that need no answer (duplicate and late clicks, counted in aggregate)
//! are queued with [`Writer::defer_event`] and ride along with the next batch, so a
//! flood of repeated clicks costs no fsync of its own.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{insert_event, NewEvent, StoreError, StoreResult};
use crate::model::ApprovalId;

/// Most jobs in one transaction: bounds how long a commit holds the write lock and
/// how much one failed commit can take with it.
const MAX_BATCH: usize = 512;
/// Deferred audit entries are written within this long even when no other write comes.
const DEFERRED_FLUSH: Duration = Duration::from_millis(500);
/// Callers queue at most this many jobs before `write` waits (back-pressure).
const QUEUE: usize = 8192;

/// The work of one caller, run on the writer's connection inside the batch's
/// transaction. Borrowing the connection is why it is a boxed closure.
pub type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, StoreResult<T>> + Send>;

/// A job as the writer task sees it, whatever its result type.
trait Job: Send {
    /// Runs the work, keeping its result until the commit is known.
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;
    /// Answers the caller: its result if the batch committed, the commit error if not.
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

struct Typed<T> {
    work: Option<Work<T>>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T: Send + 'static> Job for Typed<T> {
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        Box::pin(async move {
            let Some(work) = self.work.take() else {
                return false;
            };
            let result = work(conn).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
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

/// Audit entries waiting for the next batch. Identical ones (same request, kind, actor
/// and detail) are merged, so a thousand repeats of one click become one entry with
/// `"count": 1000`.
#[derive(Default)]
struct Deferred {
    entries: HashMap<DeferredKey, (NewEvent, u64)>,
}

/// Request, kind, actor and the detail as JSON text.
type DeferredKey = (ApprovalId, &'static str, Option<String>, String);

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Transactions committed so far (for tests and metrics: jobs per commit).
    commits: Arc<std::sync::atomic::AtomicU64>,
    deferred: Arc<std::sync::Mutex<Deferred>>,
    deferred_ready: Arc<Notify>,
    close: mpsc::Sender<oneshot::Sender<()>>,
}

impl Writer {
    /// Starts the writer task on `conn`, which it owns from now on. The task ends when
    /// every handle is dropped, after writing what was deferred.
    pub fn spawn(conn: SqliteConnection) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (close, close_rx) = mpsc::channel(1);
        let writer = Self {
            jobs,
            commits: Arc::default(),
            deferred: Arc::default(),
            deferred_ready: Arc::default(),
            close,
        };
        tokio::spawn(run(
            conn,
            rx,
            close_rx,
            writer.commits.clone(),
            writer.deferred.clone(),
            writer.deferred_ready.clone(),
        ));
        writer
    }

    /// How many transactions the writer has committed.
    pub fn commits(&self) -> u64 {
        self.commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits what is queued (jobs and deferred entries), closes the connection (which
    /// checkpoints the WAL) and stops the task. Later writes fail.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.close.send(done).await.is_ok() {
            let _ = closed.await;
        }
    }

    /// Runs `work` in the next batch; returns once that batch is committed (or failed).
    pub async fn write<T: Send + 'static>(&self, work: Work<T>) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Typed {
            work: Some(work),
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Commit("the database writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Commit("the database writer stopped mid-batch".into()))?
    }

    /// Returns once every deferred audit entry queued before the call is committed:
    /// a reader of the trail then sees every click acknowledged so far. An empty job
    /// is enough: batches commit in order, and each takes the deferred entries.
    pub async fn flush_deferred(&self) -> StoreResult<()> {
        self.write(Box::new(|_| Box::pin(async { Ok(()) }))).await
    }

    /// Queues an audit entry for the next batch without waiting for it. Identical
    /// entries are merged, counting repeats in `detail.count`. For evidence that changes nothing (a repeated or late click):
    /// losing it in a crash loses no decision.
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

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    mut close: mpsc::Receiver<oneshot::Sender<()>>,
    commits: Arc<std::sync::atomic::AtomicU64>,
    deferred: Arc<std::sync::Mutex<Deferred>>,
    deferred_ready: Arc<Notify>,
) {
    let closed_by = loop {
        let (first, closing) = tokio::select! {
            job = rx.recv() => (job, None),
            () = flush_due(&deferred_ready) => (None, None),
            asked = close.recv() => (None, Some(asked)),
        };
        let mut batch: Vec<Box<dyn Job>> = first.into_iter().collect();
        // Everything that queued while the last commit was being made.
        while closing.is_some() || batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let events = take_deferred(&deferred);
        if !batch.is_empty() || !events.is_empty() {
            commit_batch(&mut conn, &mut batch, &events).await;
            commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(asked) = closing {
            break asked;
        }
        if rx.is_closed() && rx.is_empty() {
            break None;
        }
    };
    rx.close();
    let _ = conn.close().await;
    if let Some(done) = closed_by {
        let _ = done.send(());
    }
}

/// Resolves once deferred entries have waited [`DEFERRED_FLUSH`]: they then get a
/// batch of their own.
async fn flush_due(ready: &Notify) {
    ready.notified().await;
    tokio::time::sleep(DEFERRED_FLUSH).await;
}

fn take_deferred(deferred: &std::sync::Mutex<Deferred>) -> Vec<(ApprovalId, NewEvent)> {
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
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Box<dyn Job>>,
    events: &[(ApprovalId, NewEvent)],
) {
    // Boxed so the compiler sees one concrete `Send` future (sqlx's executor bounds
    // are higher-ranked and do not infer through the nested borrows otherwise).
    let transaction: BoxFuture<'_, Result<(), String>> =
        Box::pin(transaction(&mut *conn, batch, events, Utc::now()));
    let committed = transaction.await;
    if let Err(error) = &committed {
        tracing::error!(%error, jobs = batch.len(), "a write batch failed to commit");
        // Whatever state the failure left, the next batch must start clean.
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    for job in batch.drain(..) {
        job.finish(committed.clone());
    }
}

async fn transaction(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    events: &[(ApprovalId, NewEvent)],
    now: DateTime<Utc>,
) -> Result<(), String> {
    execute(conn, "BEGIN IMMEDIATE").await?;
    for job in batch.iter_mut() {
        execute(conn, "SAVEPOINT job").await?;
        if !job.run(&mut *conn).await {
            execute(conn, "ROLLBACK TO job").await?;
        }
        execute(conn, "RELEASE job").await?;
    }
    for (id, event) in events {
        let written: BoxFuture<'_, StoreResult<()>> =
            Box::pin(insert_event(&mut *conn, *id, now, event));
        if let Err(error) = written.await {
            tracing::error!(request_id = %id, %error, "could not write a deferred audit entry");
        }
    }
    execute(conn, "COMMIT").await
}

/// Runs one fixed statement (transaction control) on the writer's connection.
fn execute<'c>(
    conn: &'c mut SqliteConnection,
    sql: &'static str,
) -> BoxFuture<'c, Result<(), String>> {
    Box::pin(async move {
        sqlx::query(sql)
            .execute(conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use sqlx::{sqlite::SqliteConnectOptions, ConnectOptions, Row};

    use super::*;

    async fn writer(dir: &tempfile::TempDir) -> Writer {
        let mut conn = SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .connect()
            .await
            .expect("connect");
        sqlx::query("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")
            .execute(&mut conn)
            .await
            .expect("table");
        sqlx::query(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, approval_id TEXT, at TEXT, kind TEXT, actor TEXT, detail TEXT)",
        )
        .execute(&mut conn)
        .await
        .expect("events");
        Writer::spawn(conn)
    }

    fn insert(n: i64) -> Work<i64> {
        Box::new(move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (n) VALUES (?)")
                    .bind(n)
                    .execute(&mut *conn)
                    .await?;
                Ok(n)
            })
        })
    }

    fn count() -> Work<i64> {
        Box::new(|conn| {
            Box::pin(async move {
                let row = sqlx::query("SELECT COUNT(*) AS c FROM t")
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(row.try_get("c")?)
            })
        })
    }

    #[tokio::test]
    async fn concurrent_writes_share_commits_and_all_land() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir).await;
        let answers = futures::future::join_all((0..500).map(|n| writer.write(insert(n)))).await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(writer.write(count()).await.expect("count"), 500);
        let commits = writer.commits();
        assert!(commits < 100, "500 writes took {commits} commits");
    }

    #[tokio::test]
    async fn a_failing_job_fails_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir).await;
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
        let writer = writer(&dir).await;
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
                Box::pin(async move {
                    let rows = sqlx::query("SELECT detail FROM events ORDER BY actor")
                        .fetch_all(&mut *conn)
                        .await?;
                    Ok(rows.iter().map(|r| r.get::<String, _>("detail")).collect())
                })
            }))
            .await
            .expect("read");
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(details[0].contains("\"count\":3"), "{details:?}");
        assert!(!details[1].contains("count"), "{details:?}");
    }

    #[tokio::test]
    async fn close_commits_what_is_queued_then_refuses_writes() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = writer(&dir).await;
        let queued = writer.write(insert(7));
        let (answer, ()) = tokio::join!(queued, writer.close());
        assert_eq!(answer.expect("committed before closing"), 7);
        assert!(writer.write(count()).await.is_err());
    }
}
