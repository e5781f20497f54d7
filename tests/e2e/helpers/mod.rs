//! `spawn_app()`: the real server on 127.0.0.1:0 with a fresh SQLite database and a
//! fake Slack, plus helpers that speak the agent API and click buttons as Slack would.

pub mod binary;
pub mod database;
pub mod fake_slack;
pub mod fake_socket;
pub mod receiver;
mod restart;
pub mod slack_limits;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Once, time::Duration};

use greenlight::{
    app::Server,
    config::Config,
    slack::{api::RetryPolicy, signature::SignatureVerifier},
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub use fake_slack::{approval_id_of, button_value, Call, FakeSlack, Reply};
pub use fake_socket::{FakeSocket, SocketConn};

pub const SIGNING_SECRET: &str = "e2e-signing-secret-0123456789abcdef";
pub const BOT_TOKEN: &str = "xoxb-e2e-bot-token";
pub const AGENT_TOKEN: &str = "ci-token-0123456789abcdef";
pub const OTHER_AGENT_TOKEN: &str = "other-token-0123456789abcdef";
pub const CHANNEL: &str = "C0APPROVALS";
pub const APP_TOKEN: &str = "xapp-1-A0GREENLIGHT-e2e-app-token";

/// A loopback address where nothing answers, held for as long as this value lives.
///
/// The socket is bound but never listens, so a connection to it is refused at once,
/// and no other test's server can be given the port by `127.0.0.1:0`. (A port bound
/// and released could be handed to a parallel test's server, which would then answer
/// with a 404 instead of refusing; that flaked on PostgreSQL runs.)
pub struct DeadAddress {
    _socket: tokio::net::TcpSocket,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
}

impl DeadAddress {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        Self {
            _socket: socket,
            url: format!("http://{addr}"),
        }
    }
}

/// Retries fast enough for tests, same shape as production.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy::fast()
}

fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Logs only when asked: TEST_LOG=1 cargo test
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .try_init();
        }
    });
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub slack: FakeSlack,
    pub http: reqwest::Client,
    pub db_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Environment for the app, before `spawn_app_with` applies overrides.
pub fn base_env(slack: &FakeSlack, db_url: &str) -> HashMap<String, String> {
    HashMap::from([
        ("SLACK_BOT_TOKEN".into(), BOT_TOKEN.into()),
        ("SLACK_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
        ("SLACK_CHANNEL_ID".into(), CHANNEL.into()),
        ("SLACK_API_BASE_URL".into(), slack.base_url()),
        ("GREENLIGHT_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "GREENLIGHT_API_TOKENS".into(),
            format!("ci-bot:{AGENT_TOKEN},other-bot:{OTHER_AGENT_TOKEN}"),
        ),
        ("GREENLIGHT_DATABASE_URL".into(), db_url.into()),
        ("GREENLIGHT_DEFAULT_TIMEOUT_SECS".into(), "60".into()),
        // Tests that flood the API are not testing the limits; tests/e2e/production
        // sets small ones where it does.
        ("GREENLIGHT_RATE_LIMIT_PER_MINUTE".into(), "1000000".into()),
        ("GREENLIGHT_MAX_PENDING_PER_AGENT".into(), "1000000".into()),
    ])
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the app with extra environment settings.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_on(FakeSlack::start().await, overrides).await
}

/// Starts the app against a fake Slack the test has already scripted (answers that
/// must be in place before start-up, such as `apps.connections.open`).
pub async fn spawn_app_on(slack: FakeSlack, overrides: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("greenlight.db");
    let mut env = base_env(&slack, &database::url(&db_path));
    for (key, value) in overrides {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    start(slack, env, db_path, dir).await
}

/// Starts the app with `policy` as its policy file (GREENLIGHT_POLICY) and extra
/// environment settings.
pub async fn spawn_app_with_policy(policy: &str, overrides: &[(&str, &str)]) -> TestApp {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("greenlight.db");
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, policy).expect("write policy");
    let mut env = base_env(&slack, &database::url(&db_path));
    env.insert(
        "GREENLIGHT_POLICY".into(),
        policy_path.display().to_string(),
    );
    for (key, value) in overrides {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    start(slack, env, db_path, dir).await
}

async fn start(
    slack: FakeSlack,
    env: HashMap<String, String>,
    db_path: PathBuf,
    dir: tempfile::TempDir,
) -> TestApp {
    init_tracing();
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind app");
    let server = Server::build(listener, config, fast_retry())
        .await
        .expect("server builds");
    let addr = server.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        slack,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .expect("client"),
        db_path,
        shutdown: Some(tx),
        server: Some(handle),
        _dir: dir,
    }
}

/// A parsed HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `POST /v1/approvals` as the `ci-bot` agent.
    pub async fn submit(&self, body: Value) -> Answer {
        self.submit_as(AGENT_TOKEN, "", body).await
    }

    pub async fn submit_as(&self, token: &str, query: &str, body: Value) -> Answer {
        let response = self
            .http
            .post(self.url(&format!("/v1/approvals{query}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("submit");
        Self::answer(response).await
    }

    /// `POST /v1/approvals` with an `Idempotency-Key`.
    pub async fn submit_with_key(&self, token: &str, key: &str, body: &Value) -> Answer {
        let response = self
            .http
            .post(self.url("/v1/approvals"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("submit");
        Self::answer(response).await
    }

    /// `POST /v1/approvals/{id}/cancel` as the agent holding `token`.
    pub async fn cancel(&self, id: &str, token: &str) -> Answer {
        let response = self
            .http
            .post(self.url(&format!("/v1/approvals/{id}/cancel")))
            .bearer_auth(token)
            .send()
            .await
            .expect("cancel");
        Self::answer(response).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Self::answer(request.send().await.expect("post")).await
    }

    /// `GET path` as the `ci-bot` agent.
    pub async fn get(&self, path: &str) -> Answer {
        self.get_as(AGENT_TOKEN, path).await
    }

    /// `GET path` as the agent holding `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> Answer {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("get");
        Self::answer(response).await
    }

    pub async fn approval(&self, id: &str) -> Value {
        let answer = self.get(&format!("/v1/approvals/{id}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.body
    }

    /// Submits a request and waits for its Slack message; returns the approval id.
    pub async fn submit_and_post(&self, body: Value) -> String {
        let before = self.slack.calls_to("chat.postMessage").len();
        let answer = self.submit(body).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        let id = answer.body["id"].as_str().expect("id").to_owned();
        self.slack
            .wait_until(Duration::from_secs(10), "the approval message", |calls| {
                calls
                    .iter()
                    .filter(|c| c.method == "chat.postMessage")
                    .skip(before)
                    .any(|c| approval_id_of(c) == id)
            })
            .await;
        id
    }

    /// A `block_actions` payload as Slack sends it for a click on one of our buttons.
    pub fn click_payload(id: &str, action_id: &str, user: &str) -> String {
        json!({
            "type": "block_actions",
            "user": {"id": user, "username": user.to_lowercase(), "team_id": "T1"},
            "team": {"id": "T1", "domain": "test"},
            "channel": {"id": CHANNEL, "name": "approvals"},
            "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": CHANNEL},
            "trigger_id": "1111.2222.abcd",
            "response_url": "https://hooks.slack.invalid/actions/1",
            "actions": [{"action_id": action_id, "block_id": "greenlight_decision", "value": id,
                         "type": "button", "action_ts": "1700000001.000"}],
        })
        .to_string()
    }

    /// Form-encodes and signs `payload` with the signing secret at `timestamp`.
    pub fn signed_form(payload: &str, timestamp: i64) -> (Vec<u8>, String) {
        let body = serde_urlencoded::to_string([("payload", payload)])
            .expect("encode")
            .into_bytes();
        let verifier = SignatureVerifier::new(SIGNING_SECRET.to_owned().into());
        let signature = verifier.sign(timestamp, &body);
        (body, signature)
    }

    /// Sends an interaction with explicit headers (for forged and stale cases).
    pub async fn send_interaction(
        &self,
        body: Vec<u8>,
        timestamp: Option<String>,
        signature: Option<String>,
    ) -> Answer {
        Self::answer(post_interaction(&self.http, &self.url(""), body, timestamp, signature).await)
            .await
    }

    /// Signs and sends an interaction payload now.
    pub async fn interact(&self, payload: &str) -> Answer {
        Self::answer(post_signed(&self.http, &self.url(""), payload).await).await
    }

    /// Clicks Approve or Deny as `user`, properly signed.
    pub async fn click(&self, id: &str, action_id: &str, user: &str) -> Answer {
        self.interact(&Self::click_payload(id, action_id, user))
            .await
    }

    pub async fn approve(&self, id: &str, user: &str) -> Answer {
        self.click(id, "greenlight_approve", user).await
    }

    pub async fn deny(&self, id: &str, user: &str) -> Answer {
        self.click(id, "greenlight_deny", user).await
    }

    /// A `view_submission` of the deny-reason modal for approval `id`, as Slack sends
    /// it (see docs/api-contract.md).
    pub fn reason_payload(id: &str, user: &str, reason: &str) -> String {
        json!({
            "type": "view_submission",
            "user": {"id": user, "username": user.to_lowercase(), "team_id": "T1"},
            "team": {"id": "T1", "domain": "test"},
            "trigger_id": "3333.4444.efgh",
            "view": {
                "id": "V123", "type": "modal", "callback_id": "greenlight_deny_reason",
                "private_metadata": id,
                "state": {"values": {"reason": {"reason_input": {"type": "plain_text_input", "value": reason}}}},
            },
        })
        .to_string()
    }

    /// Submits the deny-reason modal for `id` as `user`.
    pub async fn submit_reason(&self, id: &str, user: &str, reason: &str) -> Answer {
        self.interact(&Self::reason_payload(id, user, reason)).await
    }

    /// Waits for the deny-reason modal of approval `id` to be opened; returns the
    /// `views.open` call.
    pub async fn wait_for_modal(&self, id: &str) -> Call {
        let calls = self
            .slack
            .wait_until(Duration::from_secs(10), "the deny-reason modal", |calls| {
                calls
                    .iter()
                    .any(|c| c.method == "views.open" && c.body["view"]["private_metadata"] == id)
            })
            .await;
        calls
            .into_iter()
            .find(|c| c.method == "views.open" && c.body["view"]["private_metadata"] == id)
            .expect("found")
    }

    /// Clicks Deny as `user`, waits for the modal and submits `reason`: the whole
    /// deny flow. Returns the modal submission's ack.
    pub async fn deny_with_reason(&self, id: &str, user: &str, reason: &str) -> Answer {
        let before = self
            .slack
            .calls_to("views.open")
            .iter()
            .filter(|c| c.body["view"]["private_metadata"] == id)
            .count();
        let click = self.deny(id, user).await;
        assert_eq!(click.status, StatusCode::OK, "{:?}", click.body);
        self.slack
            .wait_until(Duration::from_secs(10), "the deny-reason modal", |calls| {
                calls
                    .iter()
                    .filter(|c| {
                        c.method == "views.open" && c.body["view"]["private_metadata"] == id
                    })
                    .count()
                    > before
            })
            .await;
        self.submit_reason(id, user, reason).await
    }

    /// Events of approval `id` as `(kind, detail.why)` pairs, oldest first.
    pub async fn event_kinds(&self, id: &str) -> Vec<(String, String)> {
        let events = self.get(&format!("/v1/approvals/{id}/events")).await.body;
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                (
                    e["kind"].as_str().unwrap_or("").to_owned(),
                    e["detail"]["why"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    /// The `chat.update` calls that rewrote the message of approval `id`.
    pub async fn wait_for_update(&self, what: &str, check: impl Fn(&Call) -> bool) -> Call {
        let calls = self
            .slack
            .wait_until(Duration::from_secs(10), what, |calls| {
                calls.iter().any(|c| c.method == "chat.update" && check(c))
            })
            .await;
        calls
            .into_iter()
            .find(|c| c.method == "chat.update" && check(c))
            .expect("found")
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.server.take() {
            handle
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Every test also checks that greenlight sent Slack nothing over a documented
        // limit (the fake refused it; see slack_limits.rs).
        if !std::thread::panicking() {
            let broken = self.slack.violations();
            assert!(
                broken.is_empty(),
                "greenlight sent Slack something over its limits: {broken:?}"
            );
        }
    }
}

/// Posts a form body to `{base_url}/slack/interactions` with these signature headers,
/// as Slack would (or as a forger would, when they are wrong or missing).
pub async fn post_interaction(
    http: &reqwest::Client,
    base_url: &str,
    body: Vec<u8>,
    timestamp: Option<String>,
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = http
        .post(format!("{base_url}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(ts) = timestamp {
        request = request.header("X-Slack-Request-Timestamp", ts);
    }
    if let Some(sig) = signature {
        request = request.header("X-Slack-Signature", sig);
    }
    request.send().await.expect("interaction")
}

/// Signs `payload` now with the test signing secret and posts it to any greenlight
/// (an in-process app or a child process).
pub async fn post_signed(
    http: &reqwest::Client,
    base_url: &str,
    payload: &str,
) -> reqwest::Response {
    let now = chrono::Utc::now().timestamp();
    let (body, signature) = TestApp::signed_form(payload, now);
    post_interaction(http, base_url, body, Some(now.to_string()), Some(signature)).await
}

/// A minimal valid request body.
/// A time the API answered (`created_at`, `expires_at`, …): RFC 3339 in UTC.
pub fn rfc3339(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("time"))
        .expect("rfc3339")
        .with_timezone(&chrono::Utc)
}

pub fn request(code: &str) -> Value {
    json!({ "code": code, "language": "bash", "title": "test request" })
}

impl TestApp {
    /// The database URL this app uses, for a second process or a direct look.
    pub fn db_url(&self) -> String {
        database::url(&self.db_path)
    }
}
