//! `/metrics` moves as requests flow, with bounded labels only.

use std::time::Duration;

use reqwest::StatusCode;

use super::{scrape, value};
use crate::helpers::{request, spawn_app, Reply, TestApp};

const SUBMITTED: &str = "greenlight_approvals_submitted_total{agent=\"ci-bot\"}";
const PENDING: &str = "greenlight_approvals_pending";
const APPROVED: &str = "greenlight_decisions_total{outcome=\"approved\"}";
const DENIED: &str = "greenlight_decisions_total{outcome=\"denied\"}";
const DECISION_COUNT: &str = "greenlight_decision_duration_seconds_count{outcome=\"approved\"}";
const ACCEPTED: &str = "greenlight_clicks_total{outcome=\"accepted\"}";
const DUPLICATE: &str = "greenlight_clicks_total{outcome=\"duplicate\"}";
const UNKNOWN: &str = "greenlight_clicks_total{outcome=\"unknown\"}";
const MISMATCH: &str = "greenlight_slack_signature_failures_total{reason=\"mismatch\"}";
const MISSING: &str = "greenlight_slack_signature_failures_total{reason=\"missing_header\"}";
const POST_OK: &str =
    "greenlight_slack_api_requests_total{method=\"chat.postMessage\",result=\"ok\"}";
const UPDATE_429: &str =
    "greenlight_slack_api_requests_total{method=\"chat.update\",result=\"rate_limited\"}";
const UPDATE_RETRY: &str =
    "greenlight_slack_api_retries_total{method=\"chat.update\",reason=\"rate_limited\"}";
const POST_OTHER: &str =
    "greenlight_slack_api_requests_total{method=\"chat.postMessage\",result=\"other\"}";
const SUBMIT_202: &str =
    "greenlight_http_requests_total{method=\"POST\",route=\"/v1/approvals\",status=\"202\"}";
const FETCH_200: &str =
    "greenlight_http_requests_total{method=\"GET\",route=\"/v1/approvals/{id}\",status=\"200\"}";
const FETCH_LATENCY: &str =
    "greenlight_http_request_duration_seconds_count{route=\"/v1/approvals/{id}\"}";
const UNMATCHED_404: &str =
    "greenlight_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}";

async fn metrics_of(app: &TestApp) -> (std::collections::HashMap<String, f64>, String) {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    (super::parse_metrics(&text), text)
}

#[tokio::test]
async fn metrics_move_as_requests_flow() {
    let app = spawn_app().await;
    let base = format!("http://{}", app.addr);
    let before = scrape(&app.http, &base).await;
    // Every outcome and click label exists from the start, at zero.
    for series in [
        APPROVED,
        DENIED,
        "greenlight_decisions_total{outcome=\"auto\"}",
        "greenlight_decisions_total{outcome=\"expired\"}",
        "greenlight_decisions_total{outcome=\"cancelled\"}",
        ACCEPTED,
        "greenlight_clicks_total{outcome=\"not_approver\"}",
        SUBMITTED,
        "greenlight_approvals_submitted_total{agent=\"other-bot\"}",
    ] {
        assert_eq!(before.get(series), Some(&0.0), "{series}");
    }
    assert_eq!(value(&before, PENDING), 0.0);

    // Chat.update is rate-limited once: the client waits and retries.
    app.slack.script(
        "chat.update",
        [Reply::RateLimited {
            retry_after_secs: 0,
        }],
    );
    let id = app.submit_and_post(request("echo metrics")).await;
    let pending = scrape(&app.http, &base).await;
    assert_eq!(value(&pending, SUBMITTED), 1.0);
    assert_eq!(value(&pending, PENDING), 1.0);
    assert_eq!(value(&pending, SUBMIT_202), 1.0);
    assert_eq!(value(&pending, POST_OK), 1.0);

    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    let unknown = app
        .approve("6f1c1f0e-0000-4000-8000-000000000000", "U0ALICE")
        .await;
    assert_eq!(unknown.status, StatusCode::OK);
    // A forged click and an unsigned one.
    let payload = TestApp::click_payload(&id, "greenlight_deny", "U0MALLORY");
    let now = chrono::Utc::now().timestamp();
    let (body, _) = TestApp::signed_form(&payload, now);
    let forged = app
        .send_interaction(
            body.clone(),
            Some(now.to_string()),
            Some(format!("v0={}", "0".repeat(64))),
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let unsigned = app.send_interaction(body, None, None).await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.approval(&id).await["status"], "approved");
    assert_eq!(
        app.get("/no/such/path/6f1c1f0e").await.status,
        StatusCode::NOT_FOUND
    );
    // The rate-limited attempt and its retry.
    app.slack.nth_call("chat.update", 2).await;

    let (after, text) = metrics_of(&app).await;
    assert_eq!(value(&after, PENDING), 0.0, "pending gauge went down");
    assert_eq!(value(&after, APPROVED), 1.0);
    assert_eq!(
        value(&after, DENIED),
        0.0,
        "the forged Deny changed nothing"
    );
    assert_eq!(value(&after, DECISION_COUNT), 1.0);
    assert_eq!(value(&after, ACCEPTED), 1.0);
    assert_eq!(value(&after, DUPLICATE), 1.0);
    assert_eq!(value(&after, UNKNOWN), 1.0);
    assert_eq!(value(&after, MISMATCH), 1.0);
    assert_eq!(value(&after, MISSING), 1.0);
    assert_eq!(value(&after, UPDATE_429), 1.0);
    assert_eq!(value(&after, UPDATE_RETRY), 1.0);
    assert!(value(&after, FETCH_200) >= 1.0, "GET /v1/approvals/{{id}}");
    assert!(value(&after, FETCH_LATENCY) >= 1.0);
    assert_eq!(value(&after, UNMATCHED_404), 1.0);
    // Bounded labels: no approval id, user id or raw path anywhere.
    for unbounded in [id.as_str(), "U0ALICE", "U0MALLORY", "6f1c1f0e", "/no/such"] {
        assert!(!text.contains(unbounded), "{unbounded} leaked into metrics");
    }

    // A Slack error code nobody listed is counted as `other`, not as itself.
    app.slack
        .always("chat.postMessage", Reply::Error("brand_new_error_code"));
    let answer = app
        .submit_as(crate::helpers::AGENT_TOKEN, "?wait=10", request("ls"))
        .await;
    assert_eq!(answer.body["status"], "denied");
    let (last, text) = metrics_of(&app).await;
    assert_eq!(value(&last, POST_OTHER), 1.0);
    assert!(!text.contains("brand_new_error_code"));
    assert_eq!(value(&last, DENIED), 1.0);
    assert_eq!(value(&last, SUBMITTED), 2.0);
}

#[tokio::test]
async fn long_polls_and_pending_are_gauges() {
    let app = spawn_app().await;
    let base = format!("http://{}", app.addr);
    let id = app.submit_and_post(request("echo gauge")).await;
    let poll = {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/approvals/{id}?wait=30"));
        tokio::spawn(async move {
            http.get(url)
                .bearer_auth(crate::helpers::AGENT_TOKEN)
                .send()
                .await
                .expect("poll")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = scrape(&app.http, &base).await;
        if value(&metrics, "greenlight_long_polls_waiting") == 1.0 {
            assert_eq!(value(&metrics, PENDING), 1.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "poll never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancelled = app.cancel(&id, crate::helpers::AGENT_TOKEN).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    assert_eq!(poll.await.expect("poll task")["status"], "cancelled");
    let metrics = scrape(&app.http, &base).await;
    assert_eq!(value(&metrics, "greenlight_long_polls_waiting"), 0.0);
    assert_eq!(value(&metrics, PENDING), 0.0);
    assert_eq!(
        value(
            &metrics,
            "greenlight_decisions_total{outcome=\"cancelled\"}"
        ),
        1.0
    );
}
