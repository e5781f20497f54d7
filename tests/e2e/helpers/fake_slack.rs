//! A stand-in for the Slack Web API: a real HTTP server on 127.0.0.1:0 that records
//! every call and answers as scripted. Tests assert on the recording.
//!
//! Like Slack, it refuses a message or view that breaks a documented limit
//! (`super::slack_limits`) with `invalid_blocks` / `msg_too_long` /
//! `invalid_arguments`, before any scripted answer, and keeps what it refused in
//! [`FakeSlack::violations`].

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::slack_limits::{self, Violation};

/// One recorded Web API call.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub authorization: Option<String>,
    pub body: Value,
    /// Whether the fake answered with success (not a scripted error, 429 or 5xx):
    /// with retries in play, the calls that *landed* are what tests count.
    pub succeeded: bool,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The default success for the method.
    Ok,
    /// `{"ok": false, "error": code}` with HTTP 200.
    Error(&'static str),
    /// HTTP 429 with `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// A bare HTTP status (5xx and the like).
    Status(u16),
    /// The default success, answered only after this long (a slow Slack); the call
    /// is recorded when it is answered.
    Slow(Duration),
}

#[derive(Default)]
struct Inner {
    calls: Mutex<Vec<Call>>,
    /// Answers consumed in order per method before falling back to `always`.
    scripted: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// Permanent answer per method.
    always: Mutex<HashMap<String, Reply>>,
    /// Success bodies that replace the built-in ones, per method.
    success_bodies: Mutex<HashMap<String, Value>>,
    next_ts: Mutex<u64>,
    next_file: Mutex<u64>,
    changed: Notify,
    /// Per-method rate limits, counted per channel as Slack does.
    rate_limits: Mutex<HashMap<String, RateLimit>>,
    /// The fake's own address, for URLs it hands out (`upload_url`).
    addr: Mutex<Option<SocketAddr>>,
    /// Calls refused for breaking a Slack limit, with the method.
    violations: Mutex<Vec<(String, Violation)>>,
    /// Messages posted so far (`channel`, `ts`, `metadata`), oldest first: what
    /// `conversations.history` answers with, as Slack would.
    messages: Mutex<Vec<Value>>,
}

/// "Allow `per_window` calls per channel in each `window`, then 429 until it ends."
struct RateLimit {
    per_window: usize,
    window: Duration,
    /// Per channel: when its current window opened and how many calls it admitted.
    windows: HashMap<String, (tokio::time::Instant, usize)>,
}

impl RateLimit {
    /// `None` admits the call; `Some(secs)` is the Retry-After to answer with.
    fn check(&mut self, channel: &str) -> Option<u64> {
        let now = tokio::time::Instant::now();
        let (opened, used) = self.windows.entry(channel.to_owned()).or_insert((now, 0));
        if now.duration_since(*opened) >= self.window {
            *opened = now;
            *used = 0;
        }
        if *used < self.per_window {
            *used += 1;
            return None;
        }
        let left = self.window.saturating_sub(now.duration_since(*opened));
        Some(left.as_secs_f64().ceil().max(1.0) as u64)
    }
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeSlack {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Slack");
        let addr = listener.local_addr().expect("addr");
        *inner.addr.lock().expect("lock") = Some(addr);
        let app = Router::new()
            .route("/{method}", post(handle))
            .route("/upload/{file_id}", post(upload))
            .with_state(inner.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `method` with these replies, in order, then as usual.
    pub fn script(&self, method: &str, replies: impl IntoIterator<Item = Reply>) {
        self.inner
            .scripted
            .lock()
            .expect("lock")
            .entry(method.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Answers every `method` call with `reply` from now on.
    pub fn always(&self, method: &str, reply: Reply) {
        self.inner
            .always
            .lock()
            .expect("lock")
            .insert(method.to_owned(), reply);
    }

    /// Answers `Reply::Ok` calls to `method` with `body` instead of the built-in
    /// success (e.g. `apps.connections.open` pointing at a fake WebSocket server, or
    /// `usergroups.users.list` → `{"ok": true, "users": [...]}`).
    pub fn set_success(&self, method: &str, body: Value) {
        self.inner
            .success_bodies
            .lock()
            .expect("lock")
            .insert(method.to_owned(), body);
    }

    /// Rate-limits `method` like Slack: each channel may make `per_window` calls per
    /// `window`; past that the fake answers `429 Retry-After: <rest of the window>`
    /// (at least 1 s) until the window ends. Scripted replies still come first.
    pub fn rate_limit(&self, method: &str, per_window: usize, window: Duration) {
        self.inner.rate_limits.lock().expect("lock").insert(
            method.to_owned(),
            RateLimit {
                per_window,
                window,
                windows: HashMap::new(),
            },
        );
    }

    /// The calls to `method` that the fake answered with success, in order.
    pub fn landed(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.succeeded)
            .collect()
    }

    /// Every limit a call broke (the fake refused those calls as Slack would).
    pub fn violations(&self) -> Vec<(String, Violation)> {
        self.inner.violations.lock().expect("lock").clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().expect("lock").clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Waits until the recording satisfies `done`, failing the test after `within`.
    pub async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[Call]) -> bool,
    ) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.inner.changed.notified();
            // Judge under the lock: cloning the whole recording on every call would
            // make a 1,000-message test quadratic.
            if done(&self.inner.calls.lock().expect("lock")) {
                return self.calls();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "fake Slack never saw {what}; calls: {:#?}",
                    self.calls().iter().map(|c| &c.method).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits for the `n`th call to `method` (1-based) and returns it.
    pub async fn nth_call(&self, method: &str, n: usize) -> Call {
        let calls = self
            .wait_until(
                Duration::from_secs(10),
                &format!("{n} {method} calls"),
                |calls| calls.iter().filter(|c| c.method == method).count() >= n,
            )
            .await;
        calls
            .into_iter()
            .filter(|c| c.method == method)
            .nth(n - 1)
            .expect("counted")
    }

    fn next_ts(&self) -> String {
        let mut ts = self.inner.next_ts.lock().expect("lock");
        *ts += 1;
        format!("1700000000.{:06}", *ts)
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // JSON for write methods; read methods are form-encoded, recorded as an object.
    let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        serde_urlencoded::from_bytes::<HashMap<String, String>>(&body)
            .ok()
            .filter(|form| !form.is_empty())
            .map_or(Value::Null, |form| json!(form))
    });
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let broken = slack_limits::check(&method, &body);
    if let Some(first) = broken.first() {
        eprintln!("fake Slack refused {method}: {broken:?}");
        let code = first.code;
        inner
            .violations
            .lock()
            .expect("lock")
            .extend(broken.into_iter().map(|v| (method.clone(), v)));
        inner.calls.lock().expect("lock").push(Call {
            method,
            authorization,
            body,
            succeeded: false,
        });
        inner.changed.notify_waiters();
        return Json(json!({"ok": false, "error": code})).into_response();
    }
    let reply = {
        let scripted = inner
            .scripted
            .lock()
            .expect("lock")
            .get_mut(&method)
            .and_then(VecDeque::pop_front);
        scripted
            .or_else(|| inner.always.lock().expect("lock").get(&method).cloned())
            .or_else(|| {
                let mut limits = inner.rate_limits.lock().expect("lock");
                let channel = body["channel"].as_str().unwrap_or_default();
                let retry_after_secs = limits.get_mut(&method)?.check(channel)?;
                Some(Reply::RateLimited { retry_after_secs })
            })
            .unwrap_or(Reply::Ok)
    };
    let reply = match reply {
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Reply::Ok
        }
        other => other,
    };
    let succeeded = matches!(reply, Reply::Ok);
    let fake = FakeSlack {
        addr: inner
            .addr
            .lock()
            .expect("lock")
            .unwrap_or_else(|| ([127, 0, 0, 1], 0).into()),
        inner: inner.clone(),
    };
    let response = match reply {
        Reply::Ok | Reply::Slow(_) => Json(success(&method, &body, &fake)).into_response(),
        Reply::Error(code) => Json(json!({"ok": false, "error": code})).into_response(),
        Reply::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after_secs.to_string())],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).expect("status").into_response(),
    };
    inner.calls.lock().expect("lock").push(Call {
        method,
        authorization,
        body,
        succeeded,
    });
    inner.changed.notify_waiters();
    response
}

/// The `upload_url` Slack hands out for an external upload: takes the file's bytes
/// and records them as a call to the pseudo-method `upload` with
/// `{"file_id", "bytes", "text"}`.
async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    inner.calls.lock().expect("lock").push(Call {
        method: "upload".to_owned(),
        authorization,
        body: json!({
            "file_id": file_id,
            "bytes": body.len(),
            "text": String::from_utf8_lossy(&body),
        }),
        succeeded: true,
    });
    inner.changed.notify_waiters();
    (StatusCode::OK, "OK - ").into_response()
}

fn success(method: &str, body: &Value, fake: &FakeSlack) -> Value {
    if let Some(custom) = fake.inner.success_bodies.lock().expect("lock").get(method) {
        return custom.clone();
    }
    match method {
        "chat.postMessage" => {
            let ts = fake.next_ts();
            fake.inner.messages.lock().expect("lock").push(json!({
                "channel": body["channel"], "ts": ts, "text": body["text"],
                "metadata": body["metadata"],
            }));
            json!({"ok": true, "channel": body["channel"], "ts": ts, "message": {"text": body["text"]}})
        }
        "conversations.history" => {
            // Newest first, as Slack pages it; every message fits one page here.
            let messages: Vec<Value> = fake
                .inner
                .messages
                .lock()
                .expect("lock")
                .iter()
                .rev()
                .filter(|m| m["channel"] == body["channel"])
                .cloned()
                .collect();
            json!({"ok": true, "messages": messages, "has_more": false})
        }
        "chat.update" => json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}),
        "views.open" => json!({"ok": true, "view": {"id": "V123"}}),
        "files.getUploadURLExternal" => {
            let file_id = {
                let mut n = fake.inner.next_file.lock().expect("lock");
                *n += 1;
                format!("F{:08}", *n)
            };
            json!({"ok": true, "file_id": file_id,
                   "upload_url": format!("http://{}/upload/{file_id}", fake.addr)})
        }
        "files.completeUploadExternal" => json!({"ok": true, "files": body["files"]}),
        "auth.test" => json!({"ok": true, "user_id": "UBOT", "team": "Test"}),
        "conversations.info" => json!({"ok": true, "channel": {
            "id": body["channel"], "name": "approvals", "is_channel": true,
            "is_private": false, "is_archived": false, "is_member": true,
        }}),
        _ => json!({"ok": true}),
    }
}

/// The approval id carried by the Approve button of a posted message.
pub fn approval_id_of(call: &Call) -> String {
    button_value(&call.body["blocks"], "greenlight_approve").expect("message has an Approve button")
}

/// The `value` of the button with `action_id`, anywhere in `blocks`.
pub fn button_value(blocks: &Value, action_id: &str) -> Option<String> {
    match blocks {
        Value::Object(map) => {
            if map.get("action_id").and_then(Value::as_str) == Some(action_id) {
                return map.get("value").and_then(Value::as_str).map(str::to_owned);
            }
            map.values().find_map(|v| button_value(v, action_id))
        }
        Value::Array(items) => items.iter().find_map(|v| button_value(v, action_id)),
        _ => None,
    }
}
