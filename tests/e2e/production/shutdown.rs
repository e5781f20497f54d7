//! SIGTERM on the real binary: open long-polls are answered with the pending state,
//! an in-flight click finishes and counts, the process exits 0, and pending requests
//! are still pending after a restart on the same database.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{scrape, value, Binary};
use crate::helpers::{approval_id_of, FakeSlack, TestApp, AGENT_TOKEN};

async fn submit(http: &reqwest::Client, bin: &Binary, code: &str) -> String {
    let response = http
        .post(bin.url("/v1/approvals"))
        .bearer_auth(AGENT_TOKEN)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

async fn get(http: &reqwest::Client, bin: &Binary, id: &str) -> Value {
    http.get(bin.url(&format!("/v1/approvals/{id}")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

/// Reads from `stream` until `\r\n\r\n` (the end of a response head).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read");
        assert!(
            n > 0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ascii head")
}

#[tokio::test]
async fn sigterm_answers_long_polls_finishes_clicks_and_keeps_pending_requests() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("greenlight.db");
    let mut bin = Binary::start(&slack, dir.path(), &db, "first.log", &[]).await;
    let http = reqwest::Client::new();

    let waiting_a = submit(&http, &bin, "echo a").await;
    let waiting_b = submit(&http, &bin, "echo b").await;
    let clicked = submit(&http, &bin, "echo c").await;
    slack
        .wait_until(Duration::from_secs(10), "three messages", |calls| {
            let posted: Vec<String> = calls
                .iter()
                .filter(|c| c.method == "chat.postMessage")
                .map(approval_id_of)
                .collect();
            [&waiting_a, &waiting_b, &clicked]
                .iter()
                .all(|id| posted.contains(id))
        })
        .await;

    // Two agents long-poll; wait until both are parked.
    let polls: Vec<_> = [&waiting_a, &waiting_b]
        .into_iter()
        .map(|id| {
            let request = http
                .get(bin.url(&format!("/v1/approvals/{id}?wait=60")))
                .bearer_auth(AGENT_TOKEN)
                .send();
            tokio::spawn(async move {
                let response = request.await.expect("long-poll");
                (
                    response.status(),
                    response.json::<Value>().await.expect("json"),
                )
            })
        })
        .collect();
    let base = format!("http://{}", bin.addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while value(&scrape(&http, &base).await, "greenlight_long_polls_waiting") < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "polls never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A click in flight: its head is in and the handler is reading the body (the
    // server said 100 Continue), but the body has not been sent yet.
    let now = chrono::Utc::now().timestamp();
    let (body, signature) = TestApp::signed_form(
        &TestApp::click_payload(&clicked, "greenlight_approve", "U0ALICE"),
        now,
    );
    let mut click = TcpStream::connect(bin.addr).await.expect("connect");
    let head = format!(
        "POST /slack/interactions HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         X-Slack-Request-Timestamp: {now}\r\nX-Slack-Signature: {signature}\r\n\
         Expect: 100-continue\r\n\r\n",
        bin.addr,
        body.len()
    );
    click.write_all(head.as_bytes()).await.expect("write head");
    let interim = read_head(&mut click).await;
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

    bin.sigterm();

    // Long-polls answer at once with the current, pending, state.
    for poll in polls {
        let (status, body) = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .expect("long-poll answered on shutdown")
            .expect("task");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "pending", "{body}");
        assert_eq!(body["approved"], false);
    }
    // Shutdown has begun: no new connections.
    assert!(
        http.get(bin.url("/healthz")).send().await.is_err(),
        "a new connection was served during shutdown"
    );

    // The in-flight click completes and counts.
    click.write_all(&body).await.expect("write body");
    let mut response = String::new();
    click
        .read_to_string(&mut response)
        .await
        .expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let status = bin.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", bin.stderr());
    let log = bin.stderr();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with('{')),
        "text logs by default"
    );

    // Restart on the same database: the click's decision was kept, the others wait on.
    let bin = Binary::start(&slack, dir.path(), &db, "second.log", &[]).await;
    assert_eq!(get(&http, &bin, &clicked).await["status"], "approved");
    for id in [&waiting_a, &waiting_b] {
        let body = get(&http, &bin, id).await;
        assert_eq!(body["status"], "pending", "{body}");
    }
    // And can still be decided after the restart.
    let ack = crate::helpers::post_signed(
        &http,
        &bin.url(""),
        &TestApp::click_payload(&waiting_a, "greenlight_approve", "U0BOB"),
    )
    .await
    .status();
    assert_eq!(ack, StatusCode::OK);
    assert_eq!(get(&http, &bin, &waiting_a).await["status"], "approved");
}

#[tokio::test]
async fn a_stuck_request_cannot_hold_shutdown_past_the_grace_period() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("greenlight.db");
    let mut bin = Binary::start(
        &slack,
        dir.path(),
        &db,
        "stuck.log",
        &[("GREENLIGHT_SHUTDOWN_GRACE_SECS", "1")],
    )
    .await;
    // An upload that never finishes: the handler waits for a body that never comes.
    let mut stuck = TcpStream::connect(bin.addr).await.expect("connect");
    stuck
        .write_all(
            format!(
                "POST /slack/interactions HTTP/1.1\r\nHost: {}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\
                 Expect: 100-continue\r\n\r\n",
                bin.addr
            )
            .as_bytes(),
        )
        .await
        .expect("write head");
    assert!(read_head(&mut stuck).await.starts_with("HTTP/1.1 100"));

    bin.sigterm();
    let status = bin.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", bin.stderr());
    assert!(
        bin.stderr()
            .contains("did not finish within the shutdown grace period"),
        "{}",
        bin.stderr()
    );
}
