//! The outbox worker against a real store and a tiny stand-in Slack: per-channel
//! order, channels that do not wait for each other, and resuming after a crash.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::post, Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::*;
use crate::{
    approval::approvers::GroupMembers,
    metrics::Metrics,
    model::{ApprovalId, NewApproval, Status},
    policy::{Defaults, Policy},
    slack::api::RetryPolicy,
    store::{Fate, Inserted, Submission},
};

/// What the stand-in saw, and how it answers.
#[derive(Default)]
struct Seen {
    /// (method, channel, approval id) of every call, in arrival order.
    calls: Mutex<Vec<(String, String, String)>>,
    /// Approval ids whose first post is received but never answered (a crash of
    /// greenlight while Slack has it).
    swallow_first: Mutex<HashSet<String>>,
    swallowed: Notify,
    /// The message ts answered for each posted approval id.
    ts_to_id: Mutex<Vec<(String, String)>>,
    /// (channel, ts, metadata) of every message posted, as `conversations.history`
    /// returns them.
    history: Mutex<Vec<(String, String, Value)>>,
    /// `conversations.history` answers `missing_scope` (an app without the scope).
    history_refused: std::sync::atomic::AtomicBool,
}

/// The first approval id in a message's blocks (the buttons carry it).
fn id_in(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => ApprovalId::parse(s).map(|id| id.to_string()),
        Value::Array(items) => items.iter().find_map(id_in),
        Value::Object(map) => map.values().find_map(id_in),
        _ => None,
    }
}

impl Seen {
    fn posts(&self, channel: &str) -> Vec<String> {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|(m, c, _)| m == "chat.postMessage" && c == channel)
            .map(|(_, _, id)| id.clone())
            .collect()
    }
}

/// Answers `CSLOW` with 429, `CDOWN` with 503, everything else with success.
async fn stand_in() -> (String, Arc<Seen>) {
    async fn call(
        State(seen): State<Arc<Seen>>,
        axum::extract::Path(method): axum::extract::Path<String>,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        // JSON for write methods, a form for `conversations.history`.
        let body: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            json!(
                serde_urlencoded::from_bytes::<std::collections::HashMap<String, String>>(&body)
                    .unwrap_or_default()
            )
        });
        let channel = body["channel"].as_str().unwrap_or_default().to_owned();
        if method == "conversations.history" {
            if seen
                .history_refused
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Json(json!({"ok": false, "error": "missing_scope"})).into_response();
            }
            let messages: Vec<Value> = seen
                .history
                .lock()
                .expect("lock")
                .iter()
                .rev()
                .filter(|(c, _, _)| *c == channel)
                .map(|(_, ts, metadata)| json!({"type": "message", "ts": ts, "metadata": metadata}))
                .collect();
            return Json(json!({"ok": true, "messages": messages, "has_more": false}))
                .into_response();
        }
        let n = seen.calls.lock().expect("lock").len() + 1;
        let ts = format!("1.{n:06}");
        let id = match id_in(&body["blocks"]) {
            Some(id) => {
                seen.ts_to_id
                    .lock()
                    .expect("lock")
                    .push((ts.clone(), id.clone()));
                id
            }
            None => {
                let at = body["ts"].as_str().unwrap_or_default();
                let known = seen.ts_to_id.lock().expect("lock");
                known
                    .iter()
                    .find(|(t, _)| t == at)
                    .map(|(_, id)| id.clone())
                    .unwrap_or_default()
            }
        };
        seen.calls
            .lock()
            .expect("lock")
            .push((method.clone(), channel.clone(), id.clone()));
        if method == "chat.postMessage" {
            seen.history.lock().expect("lock").push((
                channel.clone(),
                ts.clone(),
                body["metadata"].clone(),
            ));
        }
        if method == "chat.postMessage" && seen.swallow_first.lock().expect("lock").remove(&id) {
            seen.swallowed.notify_one();
            std::future::pending::<()>().await;
        }
        match channel.as_str() {
            "CSLOW" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
            "CDOWN" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            _ => Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response(),
        }
    }
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/{method}", post(call))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn retry() -> RetryPolicy {
    RetryPolicy::fast()
}

struct NoGroups;

impl GroupMembers for NoGroups {
    fn members<'a>(
        &'a self,
        _: &'a str,
        _: Instant,
    ) -> futures::future::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async { Err("no groups in this test".to_owned()) })
    }
}

async fn worker(base_url: &str, store: Store) -> OutboxWorker {
    let service = ApprovalService::new(
        store,
        Arc::new(NoGroups),
        Defaults {
            channel: "CFAST".into(),
            approvers: None,
        },
        Arc::new(Policy::builtin()),
        Metrics::new(),
    );
    let slack = SlackClient::new(base_url, "xoxb-test".to_owned().into(), retry()).expect("client");
    OutboxWorker::new(service, slack)
}

async fn store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}", dir.path().join("outbox.db").display());
    Store::connect(&url).await.expect("store")
}

/// Stores a pending request for `channel`, with the outbox row that posts it.
async fn pending(store: &Store, channel: &str, code: &str) -> ApprovalId {
    needing(store, channel, code, 1).await
}

/// [`pending`], decided by `required_approvals` distinct approvals.
async fn needing(store: &Store, channel: &str, code: &str, required_approvals: u32) -> ApprovalId {
    let now = Utc::now();
    let submission = Submission {
        id: ApprovalId::new(),
        new: NewApproval {
            agent: "ci".into(),
            code: code.into(),
            language: None,
            title: None,
            context: None,
            timeout_secs: 30,
            requester_slack_id: None,
            required_approvals,
            idempotency_key: None,
            request_hash: code.into(),
            callback_url: None,
        },
        channel: channel.into(),
        created_at: now,
        expires_at: now + chrono::Duration::seconds(30),
        also: Vec::new(),
        fate: Fate::Review,
        max_pending: None,
        grant: None,
        first_nudge: None,
    };
    match store.insert(submission).await.expect("insert") {
        Inserted::Created(approval) => approval.id,
        other => panic!("not created: {other:?}"),
    }
}

/// Polls `done` every few milliseconds for at most 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn posted(store: &Store, id: ApprovalId) -> bool {
    store
        .get(id)
        .await
        .expect("get")
        .is_some_and(|a| a.message_ts.is_some())
}

#[tokio::test]
async fn each_channel_is_posted_in_the_order_its_requests_were_stored() {
    let (base_url, seen) = stand_in().await;
    let dir = tempfile::tempdir().expect("dir");
    let store = store(&dir).await;
    let mut expected: [Vec<String>; 2] = Default::default();
    for i in 0..20 {
        let channel = ["C1", "C2"][i % 2];
        let id = pending(&store, channel, &format!("echo {i}")).await;
        expected[i % 2].push(id.to_string());
    }
    let task = tokio::spawn(worker(&base_url, store.clone()).await.run());
    eventually("all 20 posted", || {
        seen.posts("C1").len() + seen.posts("C2").len() == 20
    })
    .await;
    assert_eq!(seen.posts("C1"), expected[0]);
    assert_eq!(seen.posts("C2"), expected[1]);
    eventually_async(|| async { store.outbox_channels().await.expect("read").is_empty() }).await;
    task.abort();
}

async fn eventually_async<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never happened"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_rate_limited_channel_does_not_hold_up_another() {
    let (base_url, seen) = stand_in().await;
    let dir = tempfile::tempdir().expect("dir");
    let store = store(&dir).await;
    let slow = pending(&store, "CSLOW", "slow").await;
    let task = tokio::spawn(worker(&base_url, store.clone()).await.run());
    // The slow channel's first attempt has happened: it is now in its Retry-After.
    eventually("CSLOW tried", || !seen.posts("CSLOW").is_empty()).await;
    let started = Instant::now();
    let mut fast = Vec::new();
    for i in 0..3 {
        fast.push(pending(&store, "CFAST", &format!("fast {i}")).await);
    }
    for id in &fast {
        eventually_async(|| posted(&store, *id)).await;
    }
    // Well under the slow channel's 1 s Retry-After.
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "CFAST waited behind CSLOW: {:?}",
        started.elapsed()
    );
    let slow = store.get(slow).await.expect("get").expect("stored");
    assert!(slow.message_ts.is_none() && slow.status == Status::Pending);
    task.abort();
}

/// Posts `first` and `second` to C1, "crashes" after Slack took `first` and before
/// its answer was recorded, then restarts the worker and waits until both are posted.
/// Answers what the stand-in saw and the store (with the directory that holds it).
async fn crash_between_post_and_record(
    history_refused: bool,
) -> (Arc<Seen>, Store, [ApprovalId; 2], tempfile::TempDir) {
    let (base_url, seen) = stand_in().await;
    seen.history_refused
        .store(history_refused, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().expect("dir");
    let store = store(&dir).await;
    let first = pending(&store, "C1", "first").await;
    let second = pending(&store, "C1", "second").await;
    seen.swallow_first
        .lock()
        .expect("lock")
        .insert(first.to_string());
    let swallowed = seen.swallowed.notified();
    let crashed = tokio::spawn(worker(&base_url, store.clone()).await.run());
    // Slack has the first post; greenlight "dies" before it records the answer.
    swallowed.await;
    crashed.abort();
    let _ = crashed.await;
    assert!(!posted(&store, first).await, "nothing was recorded");
    assert_eq!(seen.posts("C1"), [first.to_string()]);

    // The next start resumes from the store, in order.
    let restarted = tokio::spawn(worker(&base_url, store.clone()).await.run());
    eventually_async(|| posted(&store, second)).await;
    assert!(posted(&store, first).await);
    restarted.abort();
    (seen, store, [first, second], dir)
}

#[tokio::test]
async fn a_crash_between_post_and_record_finds_the_message_instead_of_posting_twice() {
    let (seen, store, [first, second], _dir) = crash_between_post_and_record(false).await;
    // The interrupted post was found in the channel's history by its metadata.
    assert_eq!(seen.posts("C1"), [first.to_string(), second.to_string()]);
    let history = seen.history.lock().expect("lock").clone();
    let first_ts = &history[0].1;
    let approval = store.get(first).await.expect("get").expect("stored");
    assert_eq!(approval.message_ts.as_ref(), Some(first_ts));
    assert_eq!(
        history[0].2["event_payload"]["request_id"],
        first.to_string()
    );
    let events = store.events(first).await.expect("events");
    assert_eq!(events.iter().filter(|e| e.kind == "posted").count(), 1);
}

#[tokio::test]
async fn a_crash_between_post_and_record_posts_again_when_the_history_is_unreadable() {
    let (seen, store, [first, second], _dir) = crash_between_post_and_record(true).await;
    // Better a second message than a request no reviewer sees.
    assert_eq!(
        seen.posts("C1"),
        [first.to_string(), first.to_string(), second.to_string()]
    );
    let events = store.events(first).await.expect("events");
    assert_eq!(events.iter().filter(|e| e.kind == "posted").count(), 1);
}

#[tokio::test]
async fn a_decision_made_while_the_worker_was_down_rewrites_the_message_after_restart() {
    let (base_url, seen) = stand_in().await;
    let dir = tempfile::tempdir().expect("dir");
    let store = store(&dir).await;
    let id = pending(&store, "C1", "ls").await;
    let running = tokio::spawn(worker(&base_url, store.clone()).await.run());
    eventually_async(|| posted(&store, id)).await;
    running.abort();
    let _ = running.await;
    let decision = crate::model::Decision {
        status: Status::Approved,
        reason: "ok".into(),
        decided_by: "U1".into(),
        at: Utc::now(),
    };
    let event = NewEvent::new("decided", Some("U1"), json!({}));
    store.decide(id, decision, event).await.expect("decide");
    assert_eq!(store.outbox_channels().await.expect("read"), ["C1"]);

    let restarted = tokio::spawn(worker(&base_url, store.clone()).await.run());
    eventually("the final rewrite", || {
        seen.calls
            .lock()
            .expect("lock")
            .iter()
            .any(|(m, _, i)| m == "chat.update" && *i == id.to_string())
    })
    .await;
    eventually_async(|| async { store.outbox_channels().await.expect("read").is_empty() }).await;
    restarted.abort();
}

#[tokio::test]
async fn a_deadline_during_5xx_backoff_reports_the_5xx() {
    let (base_url, _) = stand_in().await;
    let client = SlackClient::new(
        &base_url,
        "xoxb-test".to_owned().into(),
        RetryPolicy {
            base_backoff: Duration::from_millis(400),
            max_backoff: Duration::from_secs(2),
            max_failure_retries: 10,
            ..retry()
        },
    )
    .expect("client");
    let seen = Mutex::new(Vec::new());
    let error = client
        .post_message_observed(
            "CDOWN",
            "t",
            &json!([]),
            Some(Instant::now() + Duration::from_millis(300)),
            &|e| seen.lock().expect("lock").push(e.code().to_owned()),
        )
        .await
        .expect_err("fails");
    assert_eq!(
        error,
        SlackError::Http {
            method: "chat.postMessage".into(),
            status: 503
        }
    );
    assert_eq!(*seen.lock().expect("lock"), vec!["http_error".to_owned()]);
}

/// A vote counted while the request's first post is in flight finds no message to
/// rewrite; recording the post queues the rewrite that shows it, as it does for a
/// decision made in that window. A post with no vote queues nothing.
#[tokio::test]
async fn a_vote_counted_while_the_post_was_in_flight_rewrites_the_new_message() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store(&dir).await;
    let quiet = needing(&store, "C1", "ls", 2).await;
    let voted = needing(&store, "C1", "rm", 2).await;
    let rows = store
        .claim_outbox("C1", Utc::now(), 16, Vec::new())
        .await
        .expect("claim");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let vote = store
        .record_approval(
            voted,
            "U1".into(),
            Utc::now(),
            |_| unreachable!("one approval of two decides nothing"),
            |_, _| NewEvent::new("approval_counted", Some("U1"), json!({})),
        )
        .await
        .expect("vote");
    assert!(
        matches!(vote, crate::store::Vote::Counted { .. }),
        "{vote:?}"
    );
    for row in &rows {
        store
            .posted(row, "C1".into(), format!("1.{}", row.seq))
            .await
            .expect("posted");
    }
    let done = rows.iter().map(|r| r.seq).collect();
    let queued = store
        .claim_outbox("C1", Utc::now(), 16, done)
        .await
        .expect("claim");
    let rewrites: Vec<_> = queued.iter().map(|r| (r.approval_id, r.kind)).collect();
    assert_eq!(
        rewrites,
        [(voted, crate::store::outbox::Kind::Update)],
        "quiet: {quiet}"
    );
}
