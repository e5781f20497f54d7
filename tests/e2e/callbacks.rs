//! Decision callbacks: a request with a `callback_url` is POSTed, signed as Standard
//! Webhooks specifies, to an allowed host when it is decided, however it is decided,
//! retried until delivered, and still delivered after a kill -9.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    binary::Binary,
    receiver::{Mode, Received, Receiver},
    request, spawn_app_with, FakeSlack, TestApp, AGENT_TOKEN, OTHER_AGENT_TOKEN,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(20);

fn settings(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        ("GREENLIGHT_CALLBACK_HOSTS", receiver.host()),
        ("GREENLIGHT_CALLBACK_SECRETS", format!("ci-bot:{SECRET}")),
        ("GREENLIGHT_CALLBACK_RETRY_FIRST_MS", "50".into()),
    ]
}

async fn app_for(receiver: &Receiver, extra: &[(&'static str, String)]) -> TestApp {
    let mut vars = settings(receiver);
    vars.extend(extra.iter().cloned());
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_with(&borrowed).await
}

/// Checks the signature with a plain HMAC-SHA256, independently of the
/// `standardwebhooks` crate greenlight signs with.
fn assert_signed(received: &Received) {
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .expect("key");
    let (id, timestamp) = (
        received.header("webhook-id"),
        received.header("webhook-timestamp"),
    );
    assert!(id.starts_with("msg_"), "{id}");
    let sent_at: i64 = timestamp.parse().expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("mac");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(
        received.header("webhook-signature"),
        format!("v1,{expected}")
    );
    assert_eq!(received.header("content-type"), "application/json");
    // And the Rust client's verifier accepts it.
    greenlight_client::webhooks::verify(SECRET, &received.headers, &received.body)
        .expect("the client verifies greenlight's signature");
}

async fn submit_with_callback(app: &TestApp, receiver: &Receiver, extra: Value) -> String {
    let mut body = request("make deploy");
    body["callback_url"] = json!(receiver.url("/greenlight/callback"));
    for (key, value) in extra.as_object().into_iter().flatten() {
        body[key] = value.clone();
    }
    let answer = app.submit(body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    answer.body["id"].as_str().expect("id").to_owned()
}

async fn wait_for_event(app: &TestApp, id: &str, kind: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = app.get(&format!("/v1/approvals/{id}/events")).await.body["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events.iter().any(|e| e["kind"] == kind) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} event: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_decision_is_posted_signed_with_exactly_what_get_returns() {
    let receiver = Receiver::start(Mode::Status(204)).await;
    let app = app_for(&receiver, &[]).await;
    let id = submit_with_callback(&app, &receiver, json!({})).await;
    app.slack
        .wait_until(WAIT, "the message", |calls| {
            calls.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    // The callback carries the request as it stood at the decision: wait until the
    // post is recorded too (Slack taking it comes first), so that GET, read after,
    // has nothing the decision could not have seen.
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.approval(&id).await["message_ts"].is_null() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "post never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        receiver.received().is_empty(),
        "nothing is sent while pending"
    );
    app.approve(&id, "U0ALICE").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].path, "/greenlight/callback");
    assert_signed(&got[0]);
    let payload = got[0].json();
    assert_eq!(payload["type"], "approval.decided");
    assert_eq!(payload["data"], app.approval(&id).await);
    assert_eq!(payload["data"]["status"], "approved");
    let events = wait_for_event(&app, &id, "callback_delivered").await;
    let attempt = events
        .iter()
        .find(|e| e["kind"] == "callback_attempt")
        .expect("attempt");
    assert_eq!(attempt["detail"]["status"], 204);
    assert_eq!(attempt["detail"]["attempt"], 1);
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("greenlight_callback_deliveries_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("MfKQ9r8"));
    // Exactly one delivery.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_same_event_once_it_is_back() {
    let receiver = Receiver::start(Mode::Status(503)).await;
    let app = app_for(&receiver, &[]).await;
    let id = submit_with_callback(&app, &receiver, json!({})).await;
    assert_eq!(app.cancel(&id, AGENT_TOKEN).await.status, StatusCode::OK);
    let failed = receiver.wait_for(3, WAIT).await;
    receiver.set(Mode::Status(200));
    let events = wait_for_event(&app, &id, "callback_delivered").await;
    let all = receiver.received();
    let last = all.last().expect("delivered");
    assert_signed(last);
    assert_eq!(last.json()["data"]["status"], "cancelled");
    // Every retry is the same event: same webhook-id, same bytes.
    for attempt in &all {
        assert_eq!(attempt.header("webhook-id"), failed[0].header("webhook-id"));
        assert_eq!(attempt.body, failed[0].body);
    }
    let attempts: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "callback_attempt")
        .collect();
    assert_eq!(attempts.len(), all.len());
    assert_eq!(attempts[0]["detail"]["status"], 503);
}

#[tokio::test]
async fn expiry_and_cancel_each_produce_a_callback() {
    let receiver = Receiver::start(Mode::Status(200)).await;
    let app = app_for(&receiver, &[]).await;
    let expiring = submit_with_callback(&app, &receiver, json!({"timeout_secs": 1})).await;
    let cancelled = submit_with_callback(&app, &receiver, json!({})).await;
    app.cancel(&cancelled, AGENT_TOKEN).await;
    let got = receiver.wait_for(2, WAIT).await;
    let mut statuses: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            assert_signed(r);
            let data = r.json()["data"].clone();
            (
                data["id"].as_str().unwrap_or("").to_owned(),
                data["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    statuses.sort();
    let mut expected = vec![
        (expiring, "expired".to_owned()),
        (cancelled, "cancelled".to_owned()),
    ];
    expected.sort();
    assert_eq!(statuses, expected);
}

#[tokio::test]
async fn callback_urls_outside_the_allow_list_are_refused_at_submit() {
    let receiver = Receiver::start(Mode::Status(200)).await;
    let app = app_for(&receiver, &[]).await;
    let port = receiver.addr.port();
    for url in [
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://localhost:{port}/cb"),
        format!("http://127.0.0.1:{}/cb", port.wrapping_add(1)),
        format!("http://user:pw@127.0.0.1:{port}/cb"),
        format!("ftp://127.0.0.1:{port}/cb"),
        "not a url".to_owned(),
    ] {
        let mut body = request("ls");
        body["callback_url"] = json!(url);
        let answer = app.submit(body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["error"]["code"], "invalid_request");
        let message = answer.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.starts_with("callback_url: "), "{url}: {message}");
    }
    // An agent without a signing secret cannot ask for callbacks at all.
    let mut body = request("ls");
    body["callback_url"] = json!(receiver.url("/cb"));
    let answer = app.submit_as(OTHER_AGENT_TOKEN, "", body).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("callback_url"));
    let pending = app.get("/v1/approvals?status=pending").await.body;
    assert_eq!(
        pending["approvals"].as_array().map(Vec::len),
        Some(0),
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_the_delivery_gives_up_at_the_limit() {
    let elsewhere = Receiver::start(Mode::Status(200)).await;
    let receiver = Receiver::start(Mode::Redirect(elsewhere.url("/stolen"))).await;
    let app = app_for(
        &receiver,
        &[("GREENLIGHT_CALLBACK_MAX_ATTEMPTS", "2".into())],
    )
    .await;
    let id = submit_with_callback(&app, &receiver, json!({})).await;
    app.cancel(&id, AGENT_TOKEN).await;
    let events = wait_for_event(&app, &id, "callback_failed").await;
    let attempts: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "callback_attempt")
        .collect();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["detail"]["status"], 302);
    assert_eq!(receiver.received().len(), 2);
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("greenlight_callback_deliveries_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
}

/// A server whose cancelled request's callback is in flight to a receiver that never
/// answers, killed -9 right then: what a restarted server must finish.
struct KilledMidDelivery {
    slack: FakeSlack,
    receiver: Receiver,
    dir: tempfile::TempDir,
    vars: Vec<(&'static str, String)>,
    http: reqwest::Client,
    id: String,
    /// The attempt the killed server made.
    stalled: Received,
}

impl KilledMidDelivery {
    async fn start() -> Self {
        let slack = FakeSlack::start().await;
        let receiver = Receiver::start(Mode::Hang).await;
        let dir = tempfile::tempdir().expect("dir");
        let mut vars = settings(&receiver);
        // On PostgreSQL the killed server's claim keeps the delivery from others until
        // its lease lapses (15 s by default): short here, where nothing else sends it
        // (start-up requires the lease to outlast an attempt by 1 s).
        vars.push(("GREENLIGHT_CALLBACK_LEASE_SECS", "3".into()));
        vars.push(("GREENLIGHT_CALLBACK_TIMEOUT_SECS", "2".into()));
        let first = Self::serve(&slack, &dir, &vars, "first.log").await;
        let http = reqwest::Client::new();
        let mut body = request("make deploy");
        body["callback_url"] = json!(receiver.url("/cb"));
        let submitted: Value = http
            .post(first.url("/v1/approvals"))
            .bearer_auth(AGENT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        let id = submitted["id"].as_str().expect("id").to_owned();
        let cancelled = http
            .post(first.url(&format!("/v1/approvals/{id}/cancel")))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await
            .expect("cancel");
        assert_eq!(cancelled.status(), StatusCode::OK);
        // The decision is committed and the delivery is in flight, unanswered.
        let stalled = receiver.wait_for(1, WAIT).await.remove(0);
        first.kill9();
        Self {
            slack,
            receiver,
            dir,
            vars,
            http,
            id,
            stalled,
        }
    }

    async fn serve(
        slack: &FakeSlack,
        dir: &tempfile::TempDir,
        vars: &[(&'static str, String)],
        log: &str,
    ) -> Binary {
        let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let db = dir.path().join("greenlight.db");
        Binary::start(slack, dir.path(), &db, log, &overrides).await
    }

    /// The second server, on the same database, with `vars`.
    async fn restart(&self, vars: &[(&'static str, String)]) -> Binary {
        Self::serve(&self.slack, &self.dir, vars, "second.log").await
    }
}

#[tokio::test]
async fn a_kill_9_between_the_decision_and_the_delivery_still_delivers_after_restart() {
    let killed = KilledMidDelivery::start().await;
    killed.receiver.set(Mode::Status(200));
    let second = killed.restart(&killed.vars).await;
    let got = killed.receiver.wait_for(2, WAIT).await;
    assert_signed(&got[1]);
    assert_eq!(
        got[1].header("webhook-id"),
        killed.stalled.header("webhook-id")
    );
    assert_eq!(got[1].json()["data"]["status"], "cancelled");
    assert_eq!(got[1].json()["data"]["id"], killed.id.as_str());
    second.kill9();
}

#[tokio::test]
async fn a_host_taken_off_the_allow_list_is_never_called_again() {
    let killed = KilledMidDelivery::start().await;
    // The operator takes the receiver's host off the list; the receiver would answer.
    killed.receiver.set(Mode::Status(200));
    let mut vars = killed.vars.clone();
    vars[0].1 = "hooks.example.com".into();
    let second = killed.restart(&vars).await;
    let (http, id) = (&killed.http, &killed.id);
    let deadline = tokio::time::Instant::now() + WAIT;
    let events = loop {
        let events: Value = http
            .get(second.url(&format!("/v1/approvals/{id}/events")))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("json");
        let events = events["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["kind"] == "callback_failed") {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused = events
        .iter()
        .rev()
        .find(|e| e["kind"] == "callback_attempt")
        .expect("the refused attempt is audited");
    assert!(
        refused["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not in GREENLIGHT_CALLBACK_HOSTS")),
        "{refused}"
    );
    // Only the stalled first attempt ever reached the receiver.
    assert_eq!(killed.receiver.received().len(), 1);
    second.kill9();
}
