//! Which database a test server uses: a SQLite file in the test's folder, or, when
//! `GREENLIGHT_TEST_POSTGRES_URL` is set (`scripts/test` sets it for the suite's
//! PostgreSQL run, from `scripts/postgres start`), a PostgreSQL database of its own on
//! that server, created fresh for the file the test named. The same file name gives
//! the same database, so a test that restarts a server on "the same file" restarts it
//! on the same database.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    path::Path,
    sync::Mutex,
};

/// The environment variable that selects PostgreSQL for the test servers.
pub const POSTGRES_ENV: &str = "GREENLIGHT_TEST_POSTGRES_URL";

/// Databases this test process created already (a restart must keep the data).
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Whether this run's servers use PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(POSTGRES_ENV).is_ok_and(|url| !url.is_empty())
}

/// The database URL for a test's database "at" `file`: `sqlite://file`, or on the
/// PostgreSQL run a database named after `file`, created (empty) the first time.
pub fn url(file: &Path) -> String {
    let Some(server) = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty()) else {
        return format!("sqlite://{}", file.display());
    };
    let mut hasher = DefaultHasher::new();
    file.hash(&mut hasher);
    let name = format!("gl_{:016x}", hasher.finish());
    let mut created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
    if !created.contains(&name) {
        create(&server, &name);
        created.push(name.clone());
    }
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    format!("{base}/{name}")
}

/// A new, empty database on the PostgreSQL server at `server` (a URL); its URL.
pub fn fresh(server: &str) -> String {
    let name = format!("gl_{}", uuid::Uuid::new_v4().simple());
    create(server, &name);
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    format!("{base}/{name}")
}

/// `DROP` then `CREATE DATABASE name` on `server`, on a thread of its own (callers
/// may be inside a runtime, or not).
fn create(server: &str, name: &str) {
    let (server, name) = (server.to_owned(), name.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&server)
                .await
                .expect("the test PostgreSQL server (scripts/postgres start) is reachable");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .expect("drop an old test database");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create the test database");
        });
    })
    .join()
    .expect("database creation thread");
}

/// Runs `sql` (one `COUNT(*)`-like number) read-only against the database at `url`,
/// SQLite or PostgreSQL, beside the server using it.
pub async fn count(url: &str, sql: &str) -> i64 {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.expect("open db");
        let count: i64 = sqlx::query_scalar(sql)
            .fetch_one(&pool)
            .await
            .expect("count");
        pool.close().await;
        return count;
    }
    let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=ro"))
        .await
        .expect("open db");
    let count: i64 = sqlx::query_scalar(sql)
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    count
}

/// `sql` with SQLite's `?` placeholders numbered (`$1`, `$2`, …) for PostgreSQL.
fn numbered(sql: &str) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// One number read with `sql` (`?` placeholders bound to `binds`), on either backend.
pub async fn number(url: &str, sql: &str, binds: &[&str]) -> i64 {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.expect("open db");
        let sql = numbered(sql);
        let mut query = sqlx::query_scalar::<_, i64>(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let n = query.fetch_one(&pool).await.expect("query");
        pool.close().await;
        return n;
    }
    let pool = sqlx::SqlitePool::connect(url).await.expect("open db");
    let mut query = sqlx::query_scalar::<_, i64>(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    let n = query.fetch_one(&pool).await.expect("query");
    pool.close().await;
    n
}

/// Runs one statement (`?` placeholders bound to `binds`) on either backend.
pub async fn execute(url: &str, sql: &str, binds: &[&str]) {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.expect("open db");
        let sql = numbered(sql);
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        query.execute(&pool).await.expect("execute");
        pool.close().await;
        return;
    }
    let pool = sqlx::SqlitePool::connect(url).await.expect("open db");
    let mut query = sqlx::query(sql);
    for bind in binds {
        query = query.bind(*bind);
    }
    query.execute(&pool).await.expect("execute");
    pool.close().await;
}
