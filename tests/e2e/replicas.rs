//! Several replicas of `greenlight serve` on one PostgreSQL database, behind a
//! round-robin proxy written here: any replica takes any call, and nothing is lost or
//! done twice, a replica killed with `kill -9` included.
//!
//! These tests need PostgreSQL: the suite's PostgreSQL run gives its server
//! (`GREENLIGHT_TEST_POSTGRES_URL`); on the SQLite run they start one of their own
//! with `scripts/postgres`, so they run (never skip) in both.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

// Work shared by the replicas (callbacks, nudges, grants, slow Slack calls): tests
// named `replicas::work::…`, so the suite runs them with the others here, one at a time.
#[path = "replica_work.rs"]
mod work;

use crate::helpers::{
    base_env,
    binary::Binary,
    database,
    fake_slack::{approval_id_of, FakeSlack},
    post_signed, request, TestApp, AGENT_TOKEN,
};

/// A PostgreSQL server for the test: the suite's, or one started here and stopped on
/// drop. (Also used by `web_replicas`.)
pub(crate) struct Server {
    pub(crate) url: String,
    started: Option<tempfile::TempDir>,
}

impl Server {
    pub(crate) fn get() -> Self {
        if let Ok(url) = std::env::var(database::POSTGRES_ENV) {
            if !url.is_empty() {
                return Self { url, started: None };
            }
        }
        let dir = tempfile::tempdir().expect("dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres");
        let out = std::process::Command::new(script)
            .arg("start")
            .arg(dir.path().join("pg"))
            .output()
            .expect("run scripts/postgres");
        assert!(
            out.status.success(),
            "scripts/postgres start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let url = stdout
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

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = &self.started {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres");
            let _ = std::process::Command::new(script)
                .arg("stop")
                .arg(dir.path().join("pg"))
                .status();
        }
    }
}

/// A round-robin TCP proxy: each new connection goes to the next replica that
/// accepts it (a dead one is passed over).
pub(crate) struct Proxy {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Proxy {
    pub(crate) async fn start(backends: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let backends = Arc::new(Mutex::new(backends));
        let next = Arc::new(AtomicUsize::new(0));
        let shared = backends.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (backends, next) = (shared.clone(), next.clone());
                tokio::spawn(async move {
                    let list = backends.lock().expect("lock").clone();
                    for _ in 0..list.len() {
                        let target = list[next.fetch_add(1, Ordering::Relaxed) % list.len()];
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, backends }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Takes `addr` out of the rotation (a replica that was killed).
    pub(crate) fn remove(&self, addr: SocketAddr) {
        self.backends.lock().expect("lock").retain(|a| *a != addr);
    }
}

/// `n` replicas on a fresh database of `server`, all against `slack`; the
/// database's URL and the replicas. (Also `replica_limits`'.)
pub(crate) async fn replicas(
    server: &Server,
    slack: &FakeSlack,
    dir: &Path,
    n: usize,
    extra: &[(&str, &str)],
) -> (String, Vec<Binary>) {
    let url = database::fresh(&server.url);
    let mut env = base_env(slack, &url);
    env.insert("RUST_LOG".into(), "info".into());
    // A killed replica's outbox lease lapses sooner than the default 30 s, and still
    // outlasts a claimed batch on a loaded machine.
    env.insert("GREENLIGHT_OUTBOX_LEASE_SECS".into(), "10".into());
    for (key, value) in extra {
        env.insert((*key).into(), (*value).into());
    }
    let mut started = Vec::new();
    for i in 0..n {
        started.push(Binary::serve(&env, dir, &format!("replica-{i}.log")).await);
    }
    (url, started)
}

/// A client that opens a new connection per call, so the proxy spreads calls.
pub(crate) fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client")
}

pub(crate) async fn submit(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
    key: Option<&str>,
) -> Option<String> {
    let mut call = http
        .post(format!("{base}/v1/approvals"))
        .bearer_auth(AGENT_TOKEN);
    if let Some(key) = key {
        call = call.header("Idempotency-Key", key);
    }
    let response = call.json(body).send().await.ok()?;
    if response.status() != StatusCode::ACCEPTED {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["id"].as_str().map(str::to_owned)
}

/// Long-polls `id` until it is final (retrying through whichever replica answers),
/// clicking `action` again before each poll when given (a click that reached the
/// killed replica may have been lost; a repeat changes nothing once decided).
pub(crate) async fn wait_final(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    action: Option<&str>,
) -> Value {
    for _ in 0..300 {
        if let Some(action) = action {
            for user in ["U0ALICE", "U0BOB"] {
                try_click(http, base, id, action, user).await;
            }
        }
        let wait = if action.is_some() { 2 } else { 20 };
        if let Ok(response) = http
            .get(format!("{base}/v1/approvals/{id}?wait={wait}"))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await
        {
            if let Ok(body) = response.json::<Value>().await {
                if body["status"] != "pending" && body["status"].is_string() {
                    return body;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} never became final");
}

/// Waits until `id`'s trail has its `posted` entry (read through any replica).
pub(crate) async fn wait_posted(http: &reqwest::Client, base: &str, id: &str) {
    for _ in 0..3000 {
        if let Ok(response) = http
            .get(format!("{base}/v1/approvals/{id}/events"))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await
        {
            if let Ok(body) = response.json::<Value>().await {
                let posted = body["events"]
                    .as_array()
                    .is_some_and(|events| events.iter().any(|e| e["kind"] == "posted"));
                if posted {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} was never posted");
}

/// A signed click whose failure (the replica behind the connection was killed) is
/// only retried by the caller's loop.
pub(crate) async fn try_click(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    action: &str,
    user: &str,
) {
    let payload = TestApp::click_payload(id, action, user);
    let now = Utc::now().timestamp();
    let (body, signature) = TestApp::signed_form(&payload, now);
    let _ = http
        .post(format!("{base}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", now.to_string())
        .header("X-Slack-Signature", signature)
        .body(body)
        .send()
        .await;
}

pub(crate) async fn click(http: &reqwest::Client, base: &str, id: &str, action: &str, user: &str) {
    let payload = TestApp::click_payload(id, action, user);
    let response = post_signed(http, base, &payload).await;
    assert!(
        response.status().is_success(),
        "click: {}",
        response.status()
    );
}

fn time(raw: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Submit on A, long-poll on C, click on B: C answers once B commits, woken through
/// PostgreSQL's LISTEN/NOTIFY. Nothing else would wake C before its 30 s wait ran out
/// (a long-poll re-reads the store only at the end of its wait), so an answer well
/// inside the wait proves the notification path. How fast it is (issue #11 asks for
/// 50 ms) is the benchmark's business (`BENCH_DATABASE=postgres BENCH_REPLICAS=3`),
/// not a timed assertion: a loaded test machine can stall any single round.
#[tokio::test]
async fn a_click_on_one_replica_answers_the_long_poll_on_another() {
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (_, replicas) = replicas(&server, &slack, dir.path(), 3, &[]).await;
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    let http = reqwest::Client::new();
    let mut latencies = Vec::new();
    for round in 0..5 {
        let id = submit(&http, &a.url(""), &request(&format!("echo {round}")), None)
            .await
            .expect("submitted on A");
        slack
            .wait_until(Duration::from_secs(20), "the post", |calls| {
                calls
                    .iter()
                    .any(|c| c.method == "chat.postMessage" && approval_id_of(c) == id)
            })
            .await;
        let poll = {
            let (http, url) = (http.clone(), c.url(&format!("/v1/approvals/{id}?wait=30")));
            tokio::spawn(async move {
                let response = http
                    .get(url)
                    .bearer_auth(AGENT_TOKEN)
                    .send()
                    .await
                    .expect("poll");
                let body: Value = response.json().await.expect("json");
                (body, Utc::now())
            })
        };
        // The poll is parked on C before the click (C counts its waiters).
        wait_for_waiter(&http, c).await;
        click(&http, &b.url(""), &id, "greenlight_approve", "U0ALICE").await;
        let (body, answered_at) = poll.await.expect("poll task");
        assert_eq!(body["status"], "approved", "{body}");
        latencies.push((answered_at - time(&body["decided_at"])).num_milliseconds());
    }
    latencies.sort_unstable();
    eprintln!("cross-replica wake, decided_at to the agent's answer (ms): {latencies:?}");
    let slowest = latencies.last().copied().unwrap_or_default();
    assert!(
        slowest < 15_000,
        "a long-poll on C was answered only near the end of its 30 s wait, not by B's notification: {latencies:?}"
    );
}

/// Waits until replica `on` has a parked long-poll (its metrics' waiting gauge).
async fn wait_for_waiter(http: &reqwest::Client, on: &Binary) {
    for _ in 0..200 {
        let text = http
            .get(on.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if text
            .lines()
            .any(|l| l.starts_with("greenlight_long_polls_waiting ") && !l.ends_with(" 0"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the long-poll never parked");
}

/// The replica storm: requests, clicks and long-polls spread over three replicas by
/// the proxy, one replica killed with `kill -9` midway. Afterwards nothing is lost,
/// posted twice, decided twice or expired twice, and every waiting agent is answered.
#[tokio::test]
async fn three_replicas_one_killed_midway_lose_nothing_and_do_nothing_twice() {
    const REQUESTS: usize = 1000;
    const CONCURRENCY: usize = 24;
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (db, mut replicas) = replicas(&server, &slack, dir.path(), 3, &[]).await;
    let proxy = Arc::new(Proxy::start(replicas.iter().map(|r| r.addr).collect()).await);
    let http = unpooled();
    let answered = Arc::new(Mutex::new(HashMap::<String, Value>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut agents = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, proxy, answered, done, next) = (
            http.clone(),
            proxy.clone(),
            answered.clone(),
            done.clone(),
            next.clone(),
        );
        agents.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= REQUESTS {
                    return;
                }
                // Every fifth request is left to expire (2 s); the others are clicked.
                let mut body = request(&format!("storm {n}"));
                if n % 5 == 0 {
                    body["timeout_secs"] = 2.into();
                }
                let mut id = None;
                for _ in 0..20 {
                    // A retry after a lost answer replays the key: one request.
                    id = submit(&http, &proxy.url(""), &body, Some(&format!("storm-{n}"))).await;
                    if id.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let id = id.expect("a submission acknowledged");
                if n % 5 != 0 {
                    wait_posted(&http, &proxy.url(""), &id).await;
                }
                // Two clicks, on (likely) two replicas: one decision.
                let action = (n % 5 != 0).then_some("greenlight_approve");
                let last = wait_final(&http, &proxy.url(""), &id, action).await;
                answered.lock().expect("lock").insert(id, last);
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Midway, replica 1 dies without warning.
    while done.load(Ordering::Relaxed) < REQUESTS / 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim = replicas.remove(1);
    proxy.remove(victim.addr);
    victim.kill9();
    while let Some(agent) = agents.join_next().await {
        agent.expect("agent task");
    }
    let answered = answered.lock().expect("lock").clone();
    assert_eq!(answered.len(), REQUESTS, "every waiting agent was answered");
    for (id, last) in &answered {
        assert_ne!(last["status"], "pending", "{id}");
    }
    // The database's own account.
    let count = |sql: String| {
        let db = db.clone();
        async move { database::count(&db, &sql).await }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM approvals WHERE status <> 'pending'".into()).await,
        REQUESTS as i64,
        "requests lost or left pending"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM (SELECT approval_id FROM events WHERE kind IN ('decided', 'expired', 'cancelled') GROUP BY approval_id HAVING COUNT(*) > 1) AS twice".into()).await,
        0,
        "decided twice"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM (SELECT approval_id FROM events WHERE kind = 'expired' GROUP BY approval_id HAVING COUNT(*) > 1) AS twice".into()).await,
        0,
        "expired twice"
    );
    let mut posts = HashMap::<String, usize>::new();
    for call in slack.calls_to("chat.postMessage") {
        if let Some(id) =
            crate::helpers::fake_slack::button_value(&call.body["blocks"], "greenlight_approve")
        {
            *posts.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "posted twice: {twice:?}");
    for (id, last) in &answered {
        if last["status"] != "expired" {
            assert_eq!(posts.get(id), Some(&1), "{id} was decided but never posted");
        }
    }
    drop(replicas);
}
