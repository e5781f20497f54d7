//! Slack as it really behaves: rate limits, 5xx, refusals, vanished messages, long
//! code and hostile text. Every assertion reads what the fake Slack recorded.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{approval_id_of, request, spawn_app, Reply, TestApp};

/// Polls the audit trail until an event of `kind` appears; returns it.
async fn wait_for_event(app: &TestApp, id: &str, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = app.get(&format!("/v1/approvals/{id}/events")).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        if let Some(event) = answer.body["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["kind"] == kind))
        {
            return event.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event: {:?}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let answer = app.get(&format!("/v1/approvals/{id}/events")).await;
    answer.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}

/// Submits and returns the id without waiting for the message.
async fn submit_id(app: &TestApp, body: Value) -> String {
    let answer = app.submit(body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    answer.body["id"].as_str().expect("id").to_owned()
}

/// Waits until `n` posts have landed (a refused attempt carries the id too, so
/// `submit_and_post` alone would return on the first 429).
async fn landed_posts(app: &TestApp, n: usize) {
    app.slack
        .wait_until(Duration::from_secs(10), "landed posts", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage" && c.succeeded)
                .count()
                >= n
        })
        .await;
}

/// Long-polls until the request is final (at most 30 s).
async fn final_state(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = app.get(&format!("/v1/approvals/{id}?wait=10")).await.body;
        if body["status"] != "pending" {
            return body;
        }
        assert!(Instant::now() < deadline, "still pending: {body}");
    }
}

#[tokio::test]
async fn a_429_is_waited_out_then_the_message_lands() {
    let app = spawn_app().await;
    app.slack.script(
        "chat.postMessage",
        [Reply::RateLimited {
            retry_after_secs: 1,
        }],
    );
    let started = Instant::now();
    let id = submit_id(&app, request("echo hi")).await;
    landed_posts(&app, 1).await;
    let waited = started.elapsed();
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 2, "one 429, one retry");
    assert!(!posts[0].succeeded && posts[1].succeeded);
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After ignored: {waited:?}"
    );
    wait_for_event(&app, &id, "posted").await;
    let body = app.approval(&id).await;
    assert_eq!(body["status"], "pending");
    assert_eq!(body["message_ts"], "1700000000.000001");
}

#[tokio::test]
async fn server_errors_are_retried_then_the_message_lands() {
    let app = spawn_app().await;
    app.slack
        .script("chat.postMessage", [Reply::Status(500), Reply::Status(503)]);
    let id = submit_id(&app, request("echo hi")).await;
    landed_posts(&app, 1).await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 3);
    assert_eq!(app.slack.landed("chat.postMessage").len(), 1);
    assert_eq!(app.approval(&id).await["status"], "pending");
    // Still decidable as usual.
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "approved");
}

#[tokio::test]
async fn a_permanent_refusal_denies_with_the_slack_error() {
    let app = spawn_app().await;
    app.slack
        .always("chat.postMessage", Reply::Error("channel_not_found"));
    let id = submit_id(&app, request("echo hi")).await;
    let body = final_state(&app, &id).await;
    assert_eq!(body["status"], "denied");
    assert_eq!(body["approved"], false);
    assert_eq!(body["decided_by"], "greenlight");
    let reason = body["reason"].as_str().expect("reason");
    assert!(reason.contains("channel_not_found"), "{reason}");
    // Not retried: Slack's answer will not change.
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    let event = wait_for_event(&app, &id, "post_failed").await;
    assert_eq!(event["detail"]["error"], "channel_not_found");
}

/// 100 requests to one channel whose Slack admits 20 messages a second: all of them
/// land, once each, in the order they were submitted.
#[tokio::test]
async fn a_burst_of_100_all_lands_in_order_through_the_rate_limit() {
    let app = spawn_app().await;
    app.slack
        .rate_limit("chat.postMessage", 20, Duration::from_secs(1));
    let started = Instant::now();
    let mut submitted = Vec::new();
    for i in 0..100 {
        submitted.push(submit_id(&app, request(&format!("echo burst {i}"))).await);
    }
    let submit_time = started.elapsed();
    app.slack
        .wait_until(Duration::from_secs(40), "100 landed messages", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage" && c.succeeded)
                .count()
                >= 100
        })
        .await;
    let wall = started.elapsed();
    let landed: Vec<String> = app
        .slack
        .landed("chat.postMessage")
        .iter()
        .map(approval_id_of)
        .collect();
    assert_eq!(landed, submitted, "every message once, in submission order");
    let refused = app
        .slack
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| !c.succeeded)
        .count();
    assert!(
        refused >= 1,
        "the fake never rate-limited: the test proves nothing"
    );
    eprintln!(
        "burst: 100 submitted in {submit_time:?}, all posted after {wall:?}, {refused} answers were 429"
    );
    // Nothing was lost on the way: every request is still waiting for a reviewer,
    // with its own message.
    for id in [&submitted[0], &submitted[50], &submitted[99]] {
        let body = app.approval(id).await;
        assert_eq!(body["status"], "pending");
        assert!(body["message_ts"].is_string());
    }
}

/// Slack rate-limits the channel for good: the request being posted is denied when
/// its deadline comes, and the one queued behind it, never attempted, expires with a
/// reason that says its message never went out and why, not "no decision".
#[tokio::test]
async fn unposted_requests_are_denied_naming_the_failure() {
    let app = spawn_app().await;
    app.slack.always(
        "chat.postMessage",
        Reply::RateLimited {
            retry_after_secs: 1,
        },
    );
    let mut first = request("echo first");
    first["timeout_secs"] = json!(3);
    let first = submit_id(&app, first).await;
    let mut second = request("echo second");
    second["timeout_secs"] = json!(2);
    let second = submit_id(&app, second).await;

    let queued = final_state(&app, &second).await;
    assert_eq!(queued["status"], "expired");
    assert_eq!(queued["approved"], false);
    let reason = queued["reason"].as_str().expect("reason");
    assert!(
        reason.contains("could not be posted") && reason.contains("rate-limiting chat.postMessage"),
        "{reason}"
    );
    assert!(!reason.contains("no decision"), "{reason}");
    let event = wait_for_event(&app, &second, "expired").await;
    assert_eq!(event["detail"]["never_posted"], true);
    assert_eq!(event["detail"]["post_error"], "ratelimited");

    let in_flight = final_state(&app, &first).await;
    assert_eq!(in_flight["approved"], false);
    let reason = in_flight["reason"].as_str().expect("reason");
    assert!(reason.contains("rate-limit"), "{reason}");
    // Every attempt was a 429 for the first request: the second never reached Slack.
    let posts = app.slack.calls_to("chat.postMessage");
    assert!(
        posts.iter().all(|c| approval_id_of(c) == first),
        "second was posted"
    );
}

#[tokio::test]
async fn chat_update_is_retried_after_5xx_and_429() {
    let app = spawn_app().await;
    app.slack.script(
        "chat.update",
        [
            Reply::Status(502),
            Reply::RateLimited {
                retry_after_secs: 1,
            },
        ],
    );
    let id = app.submit_and_post(request("echo hi")).await;
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    app.slack
        .wait_until(Duration::from_secs(10), "a landed chat.update", |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.update" && c.succeeded)
        })
        .await;
    assert_eq!(app.slack.calls_to("chat.update").len(), 3);
    let update = &app.slack.landed("chat.update")[0];
    assert!(update.body["blocks"].to_string().contains("Approved"));
    assert!(!event_kinds(&app, &id)
        .await
        .contains(&"slack_update_failed".to_owned()));
}

#[tokio::test]
async fn a_vanished_message_leaves_the_decision_and_an_audit_event() {
    for code in ["message_not_found", "cant_update_message"] {
        let app = spawn_app().await;
        app.slack.always("chat.update", Reply::Error(code));
        let id = app.submit_and_post(request("echo hi")).await;
        assert_eq!(app.deny(&id, "U0BOB").await.status, StatusCode::OK);
        let event = wait_for_event(&app, &id, "slack_update_failed").await;
        assert_eq!(event["detail"]["error"], code);
        let body = app.approval(&id).await;
        assert_eq!(body["status"], "denied", "{code}");
        assert_eq!(body["decided_by"], "U0BOB");
        // A permanent refusal is not retried.
        assert_eq!(app.slack.calls_to("chat.update").len(), 1, "{code}");
    }
}
