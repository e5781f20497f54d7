//! Socket Mode: clicks delivered over a WebSocket greenlight opens itself, against a
//! fake Slack whose `apps.connections.open` points at a fake WebSocket server.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    binary::Binary, request, spawn_app_on, FakeSlack, FakeSocket, Reply, SocketConn, TestApp,
    APP_TOKEN,
};

const WITHIN: Duration = Duration::from_secs(5);
/// Slack's limit for an ack.
const ACK_LIMIT: Duration = Duration::from_secs(3);

async fn socket_app() -> (TestApp, FakeSocket, SocketConn) {
    let slack = FakeSlack::start().await;
    let socket = FakeSocket::start().await;
    slack.set_success(
        "apps.connections.open",
        json!({"ok": true, "url": socket.url()}),
    );
    let app = spawn_app_on(slack, &[("SLACK_APP_TOKEN", APP_TOKEN)]).await;
    let conn = socket.next_connection(WITHIN).await;
    (app, socket, conn)
}

fn click(id: &str, action: &str, user: &str) -> String {
    TestApp::click_payload(id, action, user)
}

/// Event kinds of a request's audit trail.
async fn event_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

async fn stop(app: TestApp) {
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("server stops promptly with Socket Mode running");
}

#[tokio::test]
async fn click_envelope_decides_and_is_acked_within_three_seconds() {
    let (app, _socket, mut conn) = socket_app().await;
    let open = app.slack.nth_call("apps.connections.open", 1).await;
    assert_eq!(
        open.authorization.as_deref(),
        Some(&*format!("Bearer {APP_TOKEN}")),
        "apps.connections.open takes the app-level token"
    );

    let id = app.submit_and_post(request("make deploy")).await;
    let sent = Instant::now();
    conn.send_interactive(
        "env-approve-1",
        &click(&id, "greenlight_approve", "U0ALICE"),
    );
    let ack = conn.next_frame(ACK_LIMIT).await;
    assert!(sent.elapsed() < ACK_LIMIT, "ack took {:?}", sent.elapsed());
    assert_eq!(ack, json!({"envelope_id": "env-approve-1"}));

    // The ack means the click is recorded: no waiting needed.
    let body = app.approval(&id).await;
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decided_by"], "U0ALICE");
    assert_eq!(body["reason"], "Approved in Slack by <@U0ALICE>");
    app.wait_for_update("the approved message", |c| {
        c.body["blocks"].to_string().contains("Approved")
    })
    .await;

    // Envelopes greenlight does not use, and unreadable payloads, are still acked so
    // Slack does not redeliver them.
    conn.send(json!({"envelope_id": "env-event", "type": "events_api", "payload": {}}));
    assert_eq!(
        conn.next_frame(ACK_LIMIT).await,
        json!({"envelope_id": "env-event"})
    );
    conn.send(json!({"envelope_id": "env-junk", "type": "interactive", "payload": {"no": "type"}}));
    assert_eq!(
        conn.next_frame(ACK_LIMIT).await,
        json!({"envelope_id": "env-junk"})
    );
    stop(app).await;
}

#[tokio::test]
async fn disconnect_opens_a_new_connection_that_works() {
    let (app, socket, mut conn) = socket_app().await;
    // Slack's three reasons, one after the other on the same app.
    for (n, reason) in ["refresh_requested", "warning", "link_disabled"]
        .into_iter()
        .enumerate()
    {
        conn.disconnect(reason);
        conn = socket.next_connection(WITHIN).await;
        assert_eq!(
            app.slack.calls_to("apps.connections.open").len(),
            n + 2,
            "one apps.connections.open per connection ({reason})"
        );
    }

    // The whole deny flow over the new connection: click, modal, reason.
    let id = app.submit_and_post(request("terraform apply")).await;
    conn.send_interactive("env-deny-1", &click(&id, "greenlight_deny", "U0BOB"));
    assert_eq!(
        conn.next_frame(ACK_LIMIT).await,
        json!({"envelope_id": "env-deny-1"})
    );
    app.wait_for_modal(&id).await;
    conn.send_interactive(
        "env-reason-1",
        &TestApp::reason_payload(&id, "U0BOB", "not during the freeze"),
    );
    assert_eq!(
        conn.next_frame(ACK_LIMIT).await["envelope_id"],
        "env-reason-1"
    );
    let body = app.approval(&id).await;
    assert_eq!(body["status"], "denied");
    assert_eq!(body["decided_by"], "U0BOB");
    assert_eq!(body["reason"], "not during the freeze");
    stop(app).await;
}

#[tokio::test]
async fn lost_connection_is_reopened_after_failed_attempts() {
    let (app, socket, conn) = socket_app().await;
    // Slack drops the link without a word, then fails the next two opens.
    app.slack.script(
        "apps.connections.open",
        [Reply::Error("internal_error"), Reply::Status(503)],
    );
    conn.drop_link();
    let mut conn = socket.next_connection(WITHIN).await;
    // 1 initial + 1 refused + 503 (retried once by the client) + 1 success, at least.
    assert!(
        app.slack.calls_to("apps.connections.open").len() >= 4,
        "{} calls",
        app.slack.calls_to("apps.connections.open").len()
    );

    let id = app.submit_and_post(request("ls")).await;
    conn.send_interactive(
        "env-after-loss",
        &click(&id, "greenlight_approve", "U0ALICE"),
    );
    assert_eq!(
        conn.next_frame(ACK_LIMIT).await,
        json!({"envelope_id": "env-after-loss"})
    );
    assert_eq!(app.approval(&id).await["status"], "approved");
    stop(app).await;
}

#[tokio::test]
async fn duplicate_deliveries_decide_once_and_are_all_acked() {
    let (app, socket, mut first) = socket_app().await;

    // The same envelope delivered twice on one connection.
    let a = app.submit_and_post(request("echo a")).await;
    let payload = click(&a, "greenlight_approve", "U0ALICE");
    first.send_interactive("env-dup", &payload);
    first.send_interactive("env-dup", &payload);
    for _ in 0..2 {
        assert_eq!(
            first.next_frame(ACK_LIMIT).await,
            json!({"envelope_id": "env-dup"})
        );
    }
    let kinds = event_kinds(&app, &a).await;
    assert_eq!(count(&kinds, "decided"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "click_ignored"), 1, "{kinds:?}");
    assert_eq!(app.approval(&a).await["status"], "approved");

    // The same click over two overlapping connections: the old one still drains
    // after Slack asked for a replacement.
    first.disconnect("refresh_requested");
    let mut second = socket.next_connection(WITHIN).await;
    let b = app.submit_and_post(request("echo b")).await;
    let payload = click(&b, "greenlight_approve", "U0BOB");
    first.send_interactive("env-old-link", &payload);
    second.send_interactive("env-new-link", &payload);
    assert_eq!(
        first.next_frame(ACK_LIMIT).await,
        json!({"envelope_id": "env-old-link"})
    );
    assert_eq!(
        second.next_frame(ACK_LIMIT).await,
        json!({"envelope_id": "env-new-link"})
    );
    let kinds = event_kinds(&app, &b).await;
    assert_eq!(count(&kinds, "decided"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "click_ignored"), 1, "{kinds:?}");
    let body = app.approval(&b).await;
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decided_by"], "U0BOB");
    stop(app).await;
}

#[tokio::test]
async fn http_interactions_keep_working_beside_socket_mode() {
    let (app, _socket, mut conn) = socket_app().await;
    let over_http = app.submit_and_post(request("echo http")).await;
    let over_socket = app.submit_and_post(request("echo socket")).await;

    assert_eq!(
        app.approve(&over_http, "U0ALICE").await.status,
        StatusCode::OK
    );
    conn.send_interactive("env-1", &click(&over_socket, "greenlight_deny", "U0BOB"));
    assert_eq!(conn.next_frame(ACK_LIMIT).await["envelope_id"], "env-1");
    app.wait_for_modal(&over_socket).await;
    conn.send_interactive(
        "env-2",
        &TestApp::reason_payload(&over_socket, "U0BOB", "wrong cluster"),
    );
    assert_eq!(conn.next_frame(ACK_LIMIT).await["envelope_id"], "env-2");
    assert_eq!(app.approval(&over_http).await["status"], "approved");
    assert_eq!(app.approval(&over_socket).await["status"], "denied");

    // The HTTP endpoint still demands a signature.
    let (body, _) = TestApp::signed_form(&click(&over_http, "greenlight_deny", "U0EVE"), 1);
    let forged = app
        .send_interaction(
            body,
            Some(chrono::Utc::now().timestamp().to_string()),
            Some("v0=00".into()),
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    stop(app).await;
}

#[tokio::test]
async fn shutdown_closes_the_connection_and_does_not_reconnect() {
    let (app, socket, mut conn) = socket_app().await;
    // Let the connection settle (hello handled) before stopping.
    let id = app.submit_and_post(request("true")).await;
    conn.send_interactive("env-1", &click(&id, "greenlight_approve", "U0ALICE"));
    let _: Value = conn.next_frame(ACK_LIMIT).await;

    stop(app).await;
    assert!(
        conn.closed_within(WITHIN).await,
        "greenlight closes its connection on shutdown"
    );
    assert!(
        !socket.connects_within(Duration::from_millis(500)).await,
        "no reconnect after shutdown"
    );
}

/// Slack answers every new connection with `hello`, then `disconnect`
/// (`too_many_websockets`), then closes it, as it does when the app already holds its
/// maximum of connections (several copies sharing one app token). greenlight must
/// back off, not call `apps.connections.open` hundreds of times a second, and must
/// log once per backoff step, not per attempt. The real binary, for its real
/// timings (250 ms doubling) and its log output.
#[tokio::test]
async fn too_many_websockets_backs_off_and_logs_once_per_step() {
    let slack = FakeSlack::start().await;
    let socket = FakeSocket::start().await;
    socket.refuse_every_connection("too_many_websockets");
    slack.set_success(
        "apps.connections.open",
        json!({"ok": true, "url": socket.url()}),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bin = Binary::start(
        &slack,
        dir.path(),
        &dir.path().join("greenlight.db"),
        "serve.log",
        &[("SLACK_APP_TOKEN", APP_TOKEN)],
    )
    .await;
    let opens = |calls: &[crate::helpers::Call]| {
        calls
            .iter()
            .filter(|c| c.method == "apps.connections.open")
            .count()
    };
    slack
        .wait_until(Duration::from_secs(20), "a first connection", |c| {
            opens(c) >= 1
        })
        .await;
    let first = Instant::now();
    let calls = slack
        .wait_until(Duration::from_secs(20), "four connection attempts", |c| {
            opens(c) >= 4
        })
        .await;
    let took = first.elapsed();
    // Three waits of 250, 500 and 1,000 ms, each shortened by at most a fifth:
    // at least 1.4 s. Without backoff the four calls take a few milliseconds.
    assert!(
        took >= Duration::from_millis(1000),
        "4 apps.connections.open calls within {took:?}"
    );
    assert!(opens(&calls) <= 5, "{} calls", opens(&calls));
    assert!(
        socket.handshakes() >= 3,
        "each call led to a refused connection"
    );

    let metrics = reqwest::get(bin.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let disconnected = metrics
        .lines()
        .find(|l| l.starts_with("greenlight_slack_socket_reconnects_total{cause=\"disconnected\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("reconnect counter missing:\n{metrics}"));
    assert!(disconnected >= 3, "{disconnected} reconnects counted");

    bin.sigterm();
    assert!(bin.wait_exit(Duration::from_secs(20)).await.success());
    let log = bin.stderr();
    let attempts = slack.calls_to("apps.connections.open").len();
    let lines = log.lines().filter(|l| l.contains("Socket Mode")).count();
    // "starting", the first connection's own four lines, "stopped", and one warning
    // per backoff step: never several lines per attempt.
    assert!(
        lines <= 6 + attempts,
        "{lines} Socket Mode log lines for {attempts} attempts:\n{log}"
    );
    let warnings = log.matches("backing off before reconnecting").count();
    assert!(
        (1..=attempts).contains(&warnings),
        "{warnings} backoff warnings for {attempts} attempts"
    );
}
