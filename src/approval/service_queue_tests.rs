//! The per-channel posting queues, against a tiny stand-in Slack: a channel Slack
//! keeps rate-limiting must not hold up another channel. (Requests cannot be routed
//! to a second channel through the API yet, so this drives the queues directly.)

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::post, Json, Router};
use serde_json::{json, Value};

use super::*;
use crate::slack::api::RetryPolicy;

/// Answers `chat.postMessage` with 429 for `CSLOW`, 503 for `CDOWN`, success
/// otherwise; records the channel of every call.
async fn stand_in() -> (String, Arc<Mutex<Vec<String>>>) {
    async fn post_message(
        State(seen): State<Arc<Mutex<Vec<String>>>>,
        Json(body): Json<Value>,
    ) -> axum::response::Response {
        let channel = body["channel"].as_str().unwrap_or_default().to_owned();
        let mut seen = seen.lock().expect("lock");
        seen.push(channel.clone());
        match channel.as_str() {
            "CSLOW" => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response(),
            "CDOWN" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            _ => Json(json!({"ok": true, "channel": channel, "ts": format!("1.{}", seen.len())}))
                .into_response(),
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/chat.postMessage", post(post_message))
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
    RetryPolicy {
        max_failure_retries: 3,
        max_rate_limit_retries: 10,
        base_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_jitter: Duration::from_millis(20),
        attempt_timeout: Duration::from_secs(5),
    }
}

fn new_approval(code: &str) -> NewApproval {
    NewApproval {
        agent: "ci".into(),
        code: code.into(),
        language: None,
        title: None,
        context: None,
        timeout_secs: 30,
        requester_slack_id: None,
        required_approvals: 1,
        idempotency_key: None,
        request_hash: code.into(),
    }
}

async fn service(base_url: &str, dir: &tempfile::TempDir) -> ApprovalService {
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let store = Store::connect(&url).await.expect("store");
    let slack = SlackClient::new(base_url, "xoxb-test".to_owned().into(), retry());
    ApprovalService::new(store, slack, "CFAST".into())
}

#[tokio::test]
async fn a_rate_limited_channel_does_not_hold_up_another() {
    let (base_url, seen) = stand_in().await;
    let dir = tempfile::tempdir().expect("dir");
    let service = service(&base_url, &dir).await;
    let now = Utc::now();
    let slow_id = ApprovalId::new();
    let slow = match service
        .store()
        .insert(
            slow_id,
            &new_approval("slow"),
            "CSLOW",
            now,
            now + chrono::Duration::seconds(30),
            &[],
        )
        .await
        .expect("insert")
    {
        Inserted::Created(approval) => approval,
        other => panic!("not created: {other:?}"),
    };
    service.enqueue_post(&slow);
    // Let the slow channel's first attempt happen, so it is mid-Retry-After.
    let started = Instant::now();
    while !seen.lock().expect("lock").iter().any(|c| c == "CSLOW") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow never tried"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut fast = Vec::new();
    for i in 0..3 {
        let (approval, _) = service
            .submit(new_approval(&format!("fast {i}")))
            .await
            .expect("submit");
        fast.push(approval.id);
    }
    let started = Instant::now();
    for id in &fast {
        loop {
            let approval = service.get(*id).await.expect("get");
            if approval.message_ts.is_some() {
                break;
            }
            // Well under the slow channel's 1 s Retry-After.
            assert!(
                started.elapsed() < Duration::from_millis(800),
                "CFAST waited behind CSLOW"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let slow = service.get(slow_id).await.expect("get");
    assert!(slow.message_ts.is_none() && slow.status == Status::Pending);
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
    );
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
        crate::slack::api::SlackError::Http {
            method: "chat.postMessage".into(),
            status: 503
        }
    );
    assert_eq!(*seen.lock().expect("lock"), vec!["http_error".to_owned()]);
}
