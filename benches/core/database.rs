//! The database the benchmarked greenlight runs on (`BENCH_DATABASE`): a SQLite file in
//! the run's temporary directory (the default, `synchronous=FULL` as greenlight sets
//! it), or a fresh PostgreSQL database created for this run and dropped at its end.
//!
//! The PostgreSQL server is, in this order: the one `BENCH_DATABASE_URL` names (any
//! database on it; the bench only creates and drops its own), the one
//! `GREENLIGHT_TEST_POSTGRES_URL` names (set by `eval "$(scripts/postgres start)"`), or
//! a throwaway one this run starts with `scripts/postgres start` and stops at the end.
//! Its settings are whatever that server has; `scripts/postgres` sets `fsync=off`,
//! `synchronous_commit=off`, `full_page_writes=off` and `max_connections=400` and leaves
//! the rest at PostgreSQL's defaults. The header line prints the three durability
//! settings as the server reports them (`SHOW`), never the URL (it may hold a password).

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::Connection as _;

use super::progress;

/// `BENCH_DATABASE`: which engine the run uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// From `BENCH_DATABASE` (`sqlite`, the default, or `postgres`); anything else
    /// stops the bench.
    pub fn from_env() -> Self {
        match std::env::var("BENCH_DATABASE").as_deref() {
            Err(_) | Ok("") | Ok("sqlite") => Self::Sqlite,
            Ok("postgres") | Ok("postgresql") => Self::Postgres,
            Ok(other) => panic!("BENCH_DATABASE={other:?}: use sqlite or postgres"),
        }
    }
}

/// The run's database: the URL greenlight gets, and how to describe it.
pub struct Database {
    /// `GREENLIGHT_DATABASE_URL` for every replica.
    pub url: String,
    /// For the figures' header, e.g. "SQLite in a temporary directory".
    pub description: String,
    postgres: Option<PostgresRun>,
}

/// The fresh database on a PostgreSQL server, and the server if this run started it.
struct PostgresRun {
    admin_url: String,
    name: String,
    /// Declared last: stopped after the database is dropped.
    _server: Option<ThrowawayServer>,
}

impl Database {
    /// The SQLite file `dir/greenlight.db`, or a new database on a PostgreSQL server.
    pub async fn open(engine: Engine, dir: &Path) -> Self {
        match engine {
            Engine::Sqlite => Self {
                url: format!("sqlite://{}", dir.join("greenlight.db").display()),
                description: "SQLite in a temporary directory".into(),
                postgres: None,
            },
            Engine::Postgres => Self::open_postgres().await,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// The SQLite file's `-wal` log, watched for the rest of the run; `None` on
    /// PostgreSQL.
    pub fn watch_wal(&self) -> Option<WalWatch> {
        let file = self.url.strip_prefix("sqlite://")?;
        Some(WalWatch::start(PathBuf::from(format!("{file}-wal"))))
    }

    async fn open_postgres() -> Self {
        let given = |var: &str| std::env::var(var).ok().filter(|url| !url.is_empty());
        let (admin_url, source, server) = if let Some(url) = given("BENCH_DATABASE_URL") {
            (url, "the server BENCH_DATABASE_URL names", None)
        } else if let Some(url) = given("GREENLIGHT_TEST_POSTGRES_URL") {
            (url, "the server GREENLIGHT_TEST_POSTGRES_URL names", None)
        } else {
            let server = ThrowawayServer::start();
            (
                server.url.clone(),
                "a throwaway server from scripts/postgres",
                Some(server),
            )
        };
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to the PostgreSQL server ({source}): {e}"));
        let mut show = Vec::new();
        for setting in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
        ] {
            let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
                .fetch_one(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("SHOW {setting}: {e}"));
            show.push(value);
        }
        let name = format!("greenlight_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let url = format!("{}/{name}", server_base(&admin_url));
        let description = format!(
            "PostgreSQL {} on {source} (fsync={}, synchronous_commit={}, full_page_writes={}; other settings its own), fresh database {name}",
            show[0].split_whitespace().next().unwrap_or_default(),
            show[1],
            show[2],
            show[3]
        );
        progress(format!("database: {description}"));
        Self {
            url,
            description,
            postgres: Some(PostgresRun {
                admin_url,
                name,
                _server: server,
            }),
        }
    }

    /// Drops this run's PostgreSQL database (the replicas must be gone), then stops a
    /// server this run started. Nothing for SQLite: its folder goes with the run.
    pub async fn finish(self) {
        let Some(run) = self.postgres else {
            return;
        };
        match sqlx::PgConnection::connect(&run.admin_url).await {
            Ok(mut conn) => {
                let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", run.name);
                if let Err(e) = sqlx::query(&drop).execute(&mut conn).await {
                    progress(format!("could not drop {}: {e}", run.name));
                }
                let _ = conn.close().await;
            }
            Err(e) => progress(format!("could not drop {}: {e}", run.name)),
        }
    }
}

/// `postgres://user@host:port` of a URL naming a database on that server (what
/// follows the first `/` after the host is dropped, query included).
fn server_base(url: &str) -> &str {
    let host = url.find("://").map_or(0, |scheme| scheme + 3);
    match url[host..].find('/') {
        Some(path) => &url[..host + path],
        None => url,
    }
}

/// A PostgreSQL server started by `scripts/postgres start` for this run; stopped
/// (`scripts/postgres stop`, its folder deleted) when dropped, also after a panic.
struct ThrowawayServer {
    url: String,
    dir: String,
}

impl ThrowawayServer {
    fn script() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres")
    }

    fn start() -> Self {
        progress("starting a throwaway PostgreSQL (scripts/postgres start)".into());
        let out = std::process::Command::new(Self::script())
            .arg("start")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run scripts/postgres start");
        assert!(
            out.status.success(),
            "scripts/postgres start failed ({})",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = |var: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {var}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("scripts/postgres start printed no {var}"))
        };
        Self {
            url: value("GREENLIGHT_TEST_POSTGRES_URL"),
            dir: value("GREENLIGHT_TEST_POSTGRES_DIR"),
        }
    }
}

impl Drop for ThrowawayServer {
    fn drop(&mut self) {
        let stopped = std::process::Command::new(Self::script())
            .args(["stop", &self.dir])
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!(
                "[bench] scripts/postgres stop {} did not succeed: stop it by hand",
                self.dir
            );
        }
    }
}

/// The size of SQLite's `-wal` file, sampled every [`WalWatch::EVERY`] by a task of
/// its own: the largest seen, and the size now. The log is what a restart after
/// kill -9 reads, and what sits on disk beside the database.
pub struct WalWatch {
    file: PathBuf,
    largest: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl WalWatch {
    const EVERY: Duration = Duration::from_millis(100);

    fn start(file: PathBuf) -> Self {
        let largest = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn({
            let (file, largest) = (file.clone(), largest.clone());
            async move {
                loop {
                    largest.fetch_max(size_of(&file), Ordering::Relaxed);
                    tokio::time::sleep(Self::EVERY).await;
                }
            }
        });
        Self {
            file,
            largest,
            sampler,
        }
    }

    /// Bytes now (0 while there is no log).
    pub fn now(&self) -> u64 {
        let now = size_of(&self.file);
        self.largest.fetch_max(now, Ordering::Relaxed);
        now
    }

    /// The most bytes seen so far.
    pub fn largest(&self) -> u64 {
        self.largest.load(Ordering::Relaxed)
    }
}

impl Drop for WalWatch {
    fn drop(&mut self) {
        self.sampler.abort();
    }
}

fn size_of(file: &Path) -> u64 {
    std::fs::metadata(file).map_or(0, |m| m.len())
}
