//! Callback fairness: a receiver that hangs delays only its own deliveries. The worker
//! keeps at most a few attempts in flight per receiver and claims again whenever a
//! slot frees, so another agent's callback to another host goes out at once. Runs on
//! the suite's backend (SQLite, or PostgreSQL on the PostgreSQL run).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    binary::Binary,
    receiver::{Mode, Receiver},
    request, FakeSlack, AGENT_TOKEN,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Attempts to the hanging receiver per worker: `callbacks::worker::PER_HOST`.
const PER_HOST: usize = 4;

/// Submits a request with `callback_url` and cancels it at once: its callback is due.
async fn decided_with_callback(http: &reqwest::Client, app: &Binary, url: &str) -> String {
    let mut body = request("make deploy");
    body["callback_url"] = json!(url);
    let submitted = http
        .post(app.url("/v1/approvals"))
        .bearer_auth(AGENT_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);
    let submitted: Value = submitted.json().await.expect("json");
    let id = submitted["id"].as_str().expect("id").to_owned();
    let cancelled = http
        .post(app.url(&format!("/v1/approvals/{id}/cancel")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), StatusCode::OK);
    id
}

#[tokio::test]
async fn a_hanging_receiver_does_not_delay_another_hosts_callback() {
    let slack = FakeSlack::start().await;
    let slow = Receiver::start(Mode::Hold).await;
    let fast = Receiver::start(Mode::Status(200)).await;
    let dir = tempfile::tempdir().expect("dir");
    let hosts = format!("{},{}", slow.host(), fast.host());
    let secrets = format!("ci-bot:{SECRET}");
    // Attempts may take a minute here: a worker that waited for its slowest attempt
    // before sending anything else would hold the fast receiver's callback that long.
    let app = Binary::start(
        &slack,
        dir.path(),
        &dir.path().join("greenlight.db"),
        "server.log",
        &[
            ("GREENLIGHT_CALLBACK_HOSTS", hosts.as_str()),
            ("GREENLIGHT_CALLBACK_SECRETS", secrets.as_str()),
            ("GREENLIGHT_CALLBACK_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    // More deliveries to the hanging receiver than it may have in flight.
    for _ in 0..PER_HOST + 2 {
        decided_with_callback(&http, &app, &slow.url("/cb")).await;
    }
    slow.wait_for(PER_HOST, Duration::from_secs(20)).await;
    let fast_id = decided_with_callback(&http, &app, &fast.url("/cb")).await;
    let got = fast.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].json()["data"]["id"], fast_id.as_str());
    // The hanging receiver never had more than its share in flight.
    assert_eq!(
        slow.received().len(),
        PER_HOST,
        "still held: at most {PER_HOST} in flight"
    );
    // Released, it gets the rest, each once.
    slow.release();
    slow.wait_for(PER_HOST + 2, Duration::from_secs(20)).await;
    let counts = slow.by_webhook_id();
    assert_eq!(counts.len(), PER_HOST + 2, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    app.kill9();
}
