//! `greenlight doctor` against PostgreSQL, as `tests/e2e/doctor.rs` checks SQLite:
//! reachable, migrated, writable (a read-only database fails), never printing the
//! password, and never changing the database. The suite's PostgreSQL
//! (`GREENLIGHT_TEST_POSTGRES_URL`, from `scripts/postgres start`) when set, else one
//! started here with the same script, so the test runs in both of `scripts/test`'s runs.

use std::{collections::HashMap, path::Path};

use crate::helpers::{binary, database, DeadAddress, AGENT_TOKEN};

const PASSWORD: &str = "doctor-pw-never-printed";

/// A PostgreSQL server: the suite's, or one started here and stopped on drop.
struct Postgres {
    url: String,
    started: Option<tempfile::TempDir>,
}

impl Postgres {
    fn get() -> Self {
        if let Some(url) = std::env::var(database::POSTGRES_ENV)
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Self { url, started: None };
        }
        let dir = tempfile::tempdir().expect("dir");
        let out = std::process::Command::new(script())
            .arg("start")
            .arg(dir.path().join("pg"))
            .output()
            .expect("run scripts/postgres");
        assert!(
            out.status.success(),
            "scripts/postgres start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {}=", database::POSTGRES_ENV)))
            .expect("the URL line")
            .to_owned();
        Self {
            url,
            started: Some(dir),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(dir) = &self.started {
            let _ = std::process::Command::new(script())
                .arg("stop")
                .arg(dir.path().join("pg"))
                .status();
        }
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres")
}

/// `url` with `PASSWORD` as the user's password (the test server trusts loopback, so
/// it is accepted and ignored: what matters is that doctor never prints it).
fn with_password(url: &str) -> String {
    url.replacen("://greenlight@", &format!("://greenlight:{PASSWORD}@"), 1)
}

/// Runs doctor without Slack against `db_url`; (exit code, the database line).
async fn doctor(db_url: &str, dir: &Path) -> (i32, String) {
    let env = HashMap::from([
        (
            "GREENLIGHT_API_TOKENS".to_owned(),
            format!("ci-bot:{AGENT_TOKEN}"),
        ),
        ("GREENLIGHT_DATABASE_URL".to_owned(), db_url.to_owned()),
    ]);
    let (code, stdout, stderr) = binary::run(&env, dir, &["doctor"]).await;
    assert!(
        !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD),
        "doctor printed the password:\n{stdout}{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(" database: "))
        .unwrap_or_else(|| panic!("no database line in:\n{stdout}{stderr}"))
        .to_owned();
    (code, line)
}

async fn execute(url: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
    conn.close().await.expect("close");
}

#[tokio::test]
async fn doctor_checks_a_postgres_database_reachable_migrated_and_writable() {
    let server = Postgres::get();
    let dir = tempfile::tempdir().expect("dir");
    let url = database::fresh(&server.url);
    let shown = with_password(&url);

    // Reachable but empty: serve would migrate it; doctor only says so.
    let (code, line) = doctor(&shown, dir.path()).await;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("warn") && line.contains("schema migration(s)"),
        "{line}"
    );
    let (_, again) = doctor(&shown, dir.path()).await;
    assert!(
        again.contains("schema migration(s)"),
        "doctor migrated nothing: {again}"
    );

    // Migrated as serve does it: up to date.
    greenlight::store::Store::connect(&url)
        .await
        .expect("migrate as serve would")
        .close()
        .await;
    let (code, line) = doctor(&shown, dir.path()).await;
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("ok") && line.contains("reachable, writable and up to date"),
        "{line}"
    );

    // A database that refuses writes (as a standby would): doctor fails.
    let name = url.rsplit('/').next().expect("database name").to_owned();
    execute(
        &server.url,
        &format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
    )
    .await;
    let (code, line) = doctor(&shown, dir.path()).await;
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("FAIL") && line.contains("is read-only"),
        "{line}"
    );
    execute(
        &server.url,
        &format!("ALTER DATABASE {name} SET default_transaction_read_only = off"),
    )
    .await;

    // A role that may read greenlight's tables but not write them (nor create in the
    // schema, which serve's migrator needs): doctor fails instead of calling the
    // database writable, as serve would fail at start. (Found by a trial run.)
    let role = format!("ro_{}", &name[name.len().saturating_sub(12)..]);
    execute(&url, &format!("CREATE ROLE {role} LOGIN")).await;
    execute(
        &url,
        &format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"),
    )
    .await;
    execute(&url, &format!("REVOKE CREATE ON SCHEMA public FROM {role}")).await;
    let as_reader = url.replacen("://greenlight@", &format!("://{role}:{PASSWORD}@"), 1);
    let (code, line) = doctor(&as_reader, dir.path()).await;
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("FAIL") && line.contains("is read-only for this role"),
        "{line}"
    );

    // Nobody listening: fails naming the setting to check.
    let dead = DeadAddress::new();
    let host = dead.url.trim_start_matches("http://");
    let unreachable = format!("postgres://greenlight:{PASSWORD}@{host}/greenlight");
    let (code, line) = doctor(&unreachable, dir.path()).await;
    assert_eq!(code, 1, "{line}");
    assert!(
        line.starts_with("FAIL")
            && line.contains("cannot reach")
            && line.contains("GREENLIGHT_DATABASE_URL"),
        "{line}"
    );
}

/// serve against a PostgreSQL nobody listens on fails with the cause, not after the
/// pool's 60 s acquire timeout with "pool timed out" (found by a trial run: serve sat
/// silent for a minute). No server is needed: the address is bound and never listens.
#[tokio::test]
async fn serve_names_the_cause_when_postgres_cannot_be_reached() {
    let dir = tempfile::tempdir().expect("dir");
    let dead = DeadAddress::new();
    let host = dead.url.trim_start_matches("http://");
    let env = HashMap::from([
        (
            "GREENLIGHT_API_TOKENS".to_owned(),
            format!("ci-bot:{AGENT_TOKEN}"),
        ),
        (
            "GREENLIGHT_DATABASE_URL".to_owned(),
            format!("postgres://greenlight:{PASSWORD}@{host}/greenlight"),
        ),
        ("GREENLIGHT_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
    ]);
    let (code, _, stderr) = binary::run(&env, dir.path(), &["serve"]).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("refused") && !stderr.contains("timed out"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "{stderr}");
}
