//! Durable state: approval requests, votes, the append-only audit trail and the Slack
//! outbox, in SQLite (the default) or PostgreSQL (`GREENLIGHT_DATABASE_URL=postgres://…`,
//! for several replicas of `greenlight serve` sharing one database).
//!
//! Every state change is committed here before anyone is told about it, so a crash at
//! any point loses nothing that was reported. The one write that ends a request is
//! conditional on it still being pending, which is what makes "first decision wins"
//! hold across concurrent clicks, timeouts and cancels (and, on PostgreSQL, across
//! replicas: the conditional UPDATE takes the row lock).
//!
//! [`Store`] is the one type the rest of the code uses. Inside, it dispatches each
//! query to a [`Backend`]:
//! - [`sqlite`]: writes go through one group-committing writer thread
//!   ([`sqlite::writer`]); reads through a small pool that WAL mode lets run beside it.
//! - [`postgres`]: every write is its own transaction on a pool; row locks
//!   (`SELECT … FOR UPDATE`, `FOR UPDATE SKIP LOCKED`) and leases make concurrent
//!   replicas safe, and `LISTEN/NOTIFY` ([`postgres::listen`]) carries the wake-ups
//!   that SQLite keeps in-process.
//!
//! The store also drives the background work: a committed request wakes the deadline
//! worker if it expires sooner than the worker planned to look, and a committed outbox
//! row wakes the Slack outbox worker ([`signals`]). Nothing about pending work lives
//! only in memory, so start-up recovery is simply the workers starting.
//!
//! # Layout
//! One file per concern, at each level. A file here holds the concern's types and the
//! `impl Store` methods the rest of the code calls (they dispatch, then signal the
//! workers); `sqlite/<concern>.rs` and `postgres/<concern>.rs` hold the queries.
//! - `requests`: inserting, reading and deciding requests; the audit trail.
//! - `votes`: approvals counted toward the two-person rule.
//! - [`outbox`]: Slack messages to post or rewrite, per channel, in order.
//! - [`callbacks`]: decision callbacks to deliver (signed webhooks), and where to.
//! - [`batches`]: requests submitted together, shown on one Slack card.
//! - [`grants`]: standing grants (made, looked up at insert, revoked).
//! - [`rate`]: per-agent token buckets shared by replicas (PostgreSQL only).
//! - [`nudges`]: reminder and escalation times, and firing them once.
//! - [`deferred`]: audit entries written later, merged (repeated clicks) or held
//!   (forged clicks), so a flood of them costs no write each.
//! - [`signals`]: waking the workers. [`retention`]: pruning decided requests.
//! - [`history`]: the web page's filtered history. `rows`: rows to domain types.
//! - [`web_sessions`]: the review page's sessions and one-time sign-in links.
//!
//! # Adding a query
//! 1. Write it in `sqlite/<concern>.rs` as a method of [`sqlite::Sqlite`]: a write is a
//!    closure run by the writer (`self.write(Box::new(move |conn| …))`, rusqlite, `?`
//!    placeholders), a read goes through `self.reader` (sqlx).
//! 2. Write it in `postgres/<concern>.rs` as a method of [`postgres::Postgres`]: sqlx
//!    with `$1` placeholders; a write that reads then writes opens a transaction and
//!    locks the rows it reads (`FOR UPDATE`). Timestamps are RFC 3339 text in both
//!    (`model::rfc3339`), `COLLATE "C"` on PostgreSQL, so they sort as they do on SQLite.
//! 3. Add the `impl Store` method in `<concern>.rs` with `dispatch!`, plus any worker
//!    signal it owes after the commit. Tables go in `migrations/NNNN_*.sql` (SQLite)
//!    and `migrations/postgres/NNNN_*.sql`.

pub mod batches;
pub mod callbacks;
pub mod deferred;
pub mod grants;
pub mod history;
pub mod nudges;
pub mod outbox;
pub mod postgres;
pub mod rate;
mod requests;
pub mod retention;
mod rows;
pub mod signals;
pub mod sqlite;
mod votes;
pub mod web_sessions;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

pub use batches::{Batch, BatchInserted, NewBatch};
pub use requests::{Fate, Inserted, Submission};
use signals::{DeadlineSignal, OutboxSignal};
pub use votes::Vote;

/// Why a store call failed. Outcomes a caller must expect (the request was no longer
/// pending, an Idempotency-Key was reused, no such row) are not errors: they are in
/// the `Ok` value (`None`, [`Inserted`], [`Vote`], …).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// From sqlx: any PostgreSQL query, connection or commit; on SQLite the reader
    /// pool's scans (lists, history, export, `ping`) and opening the database.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From rusqlite: a SQLite write run by the writer (the job's savepoint is rolled
    /// back) or a point lookup on the reader connections.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Bringing the schema up to date in [`Store::connect`] failed, for instance
    /// because the database has applied a migration this binary does not carry.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not parse (an id, a status, a timestamp, JSON), or the rows
    /// contradict what the code writes (an Idempotency-Key conflict without a row); the
    /// message names the column and the row.
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    /// SQLite: the batch holding this write did not commit (or the writer is gone, or
    /// the write panicked); the write did not happen. Also at start-up: the database
    /// file could not be opened or locked, or the writer thread not started.
    #[error("database write not committed: {0}")]
    Commit(String),
    /// A write on a store opened with [`Store::open_read_only`] (on SQLite also a
    /// grant read, which goes through the writer). A PostgreSQL standby refuses
    /// writes with a [`StoreError::Database`] instead.
    #[error("the database was opened read-only")]
    ReadOnly,
    /// A write that completes leased work found the lease taken over by another
    /// replica (PostgreSQL; see `crate::leases`): the write did not happen, and the
    /// work is the other replica's now.
    #[error("this replica no longer holds {0}: another replica took it over")]
    LeaseLost(String),
    /// Another process holds the database for writing (see [`Store::connect`]).
    #[error("{0} is in use by another greenlight serve: one process per SQLite database (stop the other first)")]
    InUse(String),
}

/// What every [`Store`] call returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// SQLite's `SQLITE_NOTADB` as sqlx reports it (a decimal string): the file exists and
/// can be read, but is not a database.
const SQLITE_NOTADB: &str = "26";

impl StoreError {
    /// Whether SQLite refused the file as not a database at all (`SQLITE_NOTADB`, "file
    /// is not a database"): some other file at the configured path, which no
    /// migration can turn into greenlight's database. `doctor` names it so.
    pub fn is_not_a_database(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(error)) => error
                .try_downcast_ref::<sqlx::sqlite::SqliteError>()
                .is_some_and(|e| {
                    sqlx::error::DatabaseError::code(e).as_deref() == Some(SQLITE_NOTADB)
                }),
            StoreError::Sqlite(error) => {
                error.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase)
            }
            _ => false,
        }
    }
}

/// One audit event. A request's trail is append-only: the database refuses edits to
/// an event once written.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Event {
    /// Orders the trail: unique across every request's events and increasing as they
    /// are appended, with gaps.
    pub seq: i64,
    /// The id (a UUID) of the request the event belongs to.
    pub approval_id: String,
    /// When it happened: RFC 3339 in UTC with milliseconds, such as
    /// `2026-04-05T06:07:08.123Z`.
    pub at: String,
    /// What happened, such as `submitted`, `routed`, `decided`, `expired`,
    /// `cancelled`, `click_ignored`, `callback_attempt`; new kinds may appear.
    pub kind: String,
    /// Who did it: the agent's name, or a reviewer's id (a Slack user id or
    /// `web:<name>`); `null` for greenlight itself (routing, timeouts, deliveries).
    pub actor: Option<String>,
    /// A JSON object with the particulars of `kind`. Repeated identical clicks may be
    /// merged into one event whose `count` says how many there were.
    pub detail: Value,
}

/// An event to append: what happened, who did it, and its particulars.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The stored `kind`: a literal, so every kind is spelled somewhere in the code.
    pub kind: &'static str,
    /// An agent's name or a reviewer's id; `None` for greenlight itself.
    pub actor: Option<String>,
    /// A JSON object (stored as its text); an object, so fields can be added later.
    pub detail: Value,
}

impl NewEvent {
    /// The event; its time is set by the write that stores it (the decision's `at`,
    /// the submission's `created_at`, or the moment of the write).
    pub fn new(kind: &'static str, actor: Option<&str>, detail: Value) -> Self {
        Self {
            kind,
            actor: actor.map(str::to_owned),
            detail,
        }
    }
}

/// A change another replica committed (PostgreSQL only): the request's id, and
/// whether the change made it final (then long-polls waiting on it must answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteChange {
    /// The request that changed. The notification carries only the id: read the
    /// request back from the store, which committed it before notifying.
    pub id: crate::model::ApprovalId,
    /// `true` when the change ended the request (every decision, including one made at
    /// insert); `false` when it was stored pending or a vote was counted.
    pub decided: bool,
}

/// The database a [`Store`] talks to.
#[derive(Clone)]
pub enum Backend {
    /// A SQLite file (any URL but `postgres://`/`postgresql://`; the default): one
    /// `greenlight serve` per file, which it locks.
    Sqlite(sqlite::Sqlite),
    /// A PostgreSQL database, which several replicas of `greenlight serve` may share.
    Postgres(postgres::Postgres),
}

/// Runs the same method on whichever backend the store has.
macro_rules! dispatch {
    ($store:expr, $method:ident ( $($arg:expr),* $(,)? )) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite(db) => db.$method($($arg),*).await,
            $crate::store::Backend::Postgres(db) => db.$method($($arg),*).await,
        }
    };
}
pub(crate) use dispatch;

/// Cheap to clone; every clone is the same database, writer and signals.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    signals: Arc<Signals>,
}

/// What wakes the workers of this process, and (PostgreSQL) what other replicas
/// committed.
#[derive(Debug)]
pub(crate) struct Signals {
    pub(crate) deadlines: DeadlineSignal,
    /// Wakes the nudge worker (reminders, escalation) like `deadlines` does its own.
    pub(crate) nudges: DeadlineSignal,
    pub(crate) outbox: OutboxSignal,
    pub(crate) callbacks: callbacks::CallbackSignal,
    pub(crate) remote: broadcast::Sender<RemoteChange>,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            deadlines: DeadlineSignal::default(),
            nudges: DeadlineSignal::default(),
            outbox: OutboxSignal::default(),
            callbacks: callbacks::CallbackSignal::default(),
            remote: broadcast::channel(1024).0,
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("postgres", &self.is_postgres())
            .finish()
    }
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Query parameters of a PostgreSQL URL shown as they are; every other value (such
/// as `password`, `sslpassword`, or anything sqlx or libpq may add) shows as `***`.
const SHOWN_PARAMS: &[&str] = &[
    "sslmode",
    "application_name",
    "connect_timeout",
    "host",
    "port",
    "dbname",
    "user",
    "options",
];

/// `url` as logs and errors may show it: a SQLite URL as it is (a path holds no
/// secret); any other with its password and every query value but
/// `SHOWN_PARAMS` replaced by `***`. A URL that does not parse is not shown at
/// all beyond its scheme, since where its password sits cannot be known (an
/// unencoded `/` or `#` in a password, or a mistyped `postgres:/`).
pub fn redact_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let Ok(mut parsed) = url::Url::parse(url) else {
        return withheld(url);
    };
    if !parsed.has_host() {
        return withheld(url);
    }
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
        return withheld(url);
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(key, value)| {
                let shown = SHOWN_PARAMS.contains(&key.as_ref());
                let value = if shown {
                    value.into_owned()
                } else {
                    "***".into()
                };
                (key.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.set_fragment(None);
    parsed.to_string().replace("%2A%2A%2A", "***")
}

/// What is shown of a URL that does not parse: its scheme, if it has one.
fn withheld(url: &str) -> String {
    let scheme = url
        .split_once(':')
        .map(|(scheme, _)| scheme)
        .filter(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        })
        .unwrap_or("?");
    format!("{scheme}:… (the rest not shown: it does not parse as a URL, and may hold a password)")
}

impl Store {
    /// Opens (creating if needed) the database, brings its schema up to date and
    /// starts what writes to it (SQLite: the writer thread; PostgreSQL: the pool and
    /// the `LISTEN` task).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let signals = Arc::new(Signals::default());
        let backend = if is_postgres_url(url) {
            Backend::Postgres(postgres::Postgres::connect(url, signals.clone()).await?)
        } else {
            Backend::Sqlite(sqlite::Sqlite::connect(url).await?)
        };
        Ok(Self { backend, signals })
    }

    /// Opens an existing database read-only, without migrating it: for tools that
    /// only look (`audit export`, `doctor`). A typo in the path is an error, not a new
    /// empty database, and a running `serve` of another version is never migrated
    /// under its feet.
    pub async fn open_read_only(url: &str) -> StoreResult<Self> {
        let backend = if is_postgres_url(url) {
            Backend::Postgres(postgres::Postgres::open_read_only(url).await?)
        } else {
            Backend::Sqlite(sqlite::Sqlite::open_read_only(url).await?)
        };
        Ok(Self {
            backend,
            signals: Arc::default(),
        })
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// The file behind a `sqlite:` URL, if it names one.
    pub fn file_of(url: &str) -> Option<std::path::PathBuf> {
        if is_postgres_url(url) {
            return None;
        }
        sqlite::Sqlite::file_of(url)
    }

    /// Transactions committed and writes run since start (both 0 for a read-only
    /// store): on SQLite their ratio is the group-commit batch size; on PostgreSQL
    /// every write is its own transaction.
    pub fn write_totals(&self) -> (u64, u64) {
        match &self.backend {
            Backend::Sqlite(db) => db.write_totals(),
            Backend::Postgres(db) => db.write_totals(),
        }
    }

    /// What wakes the deadline worker.
    pub fn deadline_signal(&self) -> &DeadlineSignal {
        &self.signals.deadlines
    }

    /// What wakes the nudge worker (reminders and escalation).
    pub fn nudge_signal(&self) -> &DeadlineSignal {
        &self.signals.nudges
    }

    /// What wakes the outbox worker.
    pub fn outbox_signal(&self) -> &OutboxSignal {
        &self.signals.outbox
    }

    /// Changes other replicas committed (PostgreSQL; nothing ever arrives on SQLite,
    /// where one process owns the database).
    pub fn remote_changes(&self) -> broadcast::Receiver<RemoteChange> {
        self.signals.remote.subscribe()
    }

    /// Versions of the migrations this binary carries that the database has not
    /// applied yet (all of them for a database greenlight never started on).
    pub async fn pending_migrations(&self) -> StoreResult<Vec<i64>> {
        dispatch!(self, pending_migrations())
    }

    /// Whether the database refuses writes (a PostgreSQL standby, or
    /// `default_transaction_read_only`): `doctor`'s check. Always false on SQLite,
    /// whose read-only case is the file's permissions.
    pub async fn refuses_writes(&self) -> StoreResult<bool> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(false),
            Backend::Postgres(db) => db.refuses_writes().await,
        }
    }

    /// Cheap liveness check for readiness probes and `doctor`.
    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self, ping())
    }

    /// Commits what is queued, then closes the connections. On SQLite, closing the
    /// last connection checkpoints the WAL into the database file, so the next start
    /// (or a backup) reads one file.
    pub async fn close(&self) {
        dispatch!(self, close())
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
        dispatch!(self, events_page(since, after_seq, limit))
    }

    /// Deletes final requests decided before `cutoff`, with their events, votes,
    /// outbox rows, callback URLs, grant uses and batch links, and grants expired or
    /// revoked before it. Pending requests are never pruned, however old. Returns how
    /// many requests went.
    pub async fn prune_decided_before(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        dispatch!(self, prune_decided_before(cutoff))
    }
}

#[cfg(test)]
impl Store {
    /// Runs `work` on the SQLite writer's connection: for unit tests that set up a
    /// state no API makes (an aged grant). Panics on PostgreSQL.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: sqlite::writer::Work<T>,
    ) -> StoreResult<T> {
        match &self.backend {
            Backend::Sqlite(db) => db.write(work).await,
            Backend::Postgres(_) => panic!("Store::write is SQLite only"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_password_never_shows() {
        assert_eq!(
            redact_url("postgres://gl:s3cret@db:5432/greenlight"),
            "postgres://gl:***@db:5432/greenlight"
        );
        assert_eq!(redact_url("postgres://gl@db/x"), "postgres://gl@db/x");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
        // Found by a trial run: each of these printed the password.
        assert_eq!(
            redact_url("postgres://gl@127.0.0.1:5432/gl?password=WrongQ_pw9&sslmode=disable"),
            "postgres://gl@127.0.0.1:5432/gl?password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/gl?user=gl&password=QpwLeak9"),
            "postgres://127.0.0.1/gl?user=gl&password=***"
        );
        for unparsable in [
            "postgres://gl:Pw/withslash@127.0.0.1:32799/gl",
            "postgres:/gl:SecretNoSlash@127.0.0.1:32799/gl",
            "postgres://gl:Secret#frag@127.0.0.1:32799/gl",
            "gl:Secret@db/x",
        ] {
            let shown = redact_url(unparsable);
            for secret in ["withslash", "SecretNoSlash", "Secret"] {
                assert!(!shown.contains(secret), "{unparsable} → {shown}");
            }
        }
        assert!(is_postgres_url("postgresql://h/d") && !is_postgres_url("sqlite://x"));
    }
}
