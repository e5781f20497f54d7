//! A batch meets the agent's limits as single submissions do: a replayed batch (same
//! Idempotency-Key, same body) creates nothing and passes even with an empty bucket;
//! a batch refused by the pending cap is told in the batch's numbers; every per-item
//! error names its item (`actions[i]: …`), the quorum check's included.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{request, spawn_app_with, Answer, TestApp, AGENT_TOKEN};

/// `POST /v1/batches` as the `ci-bot` agent, with an Idempotency-Key when given.
async fn submit_batch(app: &TestApp, key: Option<&str>, body: &Value) -> Answer {
    let mut call = app
        .http
        .post(app.url("/v1/batches"))
        .bearer_auth(AGENT_TOKEN)
        .json(body);
    if let Some(key) = key {
        call = call.header("Idempotency-Key", key);
    }
    let response = call.send().await.expect("submit batch");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn message(answer: &Answer) -> &str {
    answer.body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_replayed_batch_passes_with_an_empty_bucket_and_returns_the_same_batch() {
    let app = spawn_app_with(&[("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let body = json!({"actions": [request("make a"), request("make b"), request("make c")]});
    let first = submit_batch(&app, Some("turn-1"), &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    // The bucket is empty: a new submission is refused...
    let refused = app.submit(request("echo 4")).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"]["code"], "rate_limited");
    // ...but the replay creates nothing, so it passes, with the same batch.
    for _ in 0..2 {
        let again = submit_batch(&app, Some("turn-1"), &body).await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
        assert_eq!(again.body["id"], first.body["id"]);
    }
    // The same key with another body is the usual conflict, not a 429.
    let other = json!({"actions": [request("make d")]});
    let conflict = submit_batch(&app, Some("turn-1"), &other).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{:?}", conflict.body);
    assert_eq!(conflict.body["error"]["code"], "idempotency_conflict");
    // A new key is a new batch: still limited.
    let new = submit_batch(&app, Some("turn-2"), &other).await;
    assert_eq!(new.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", new.body);
    assert!(new.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_batch_over_the_pending_cap_says_what_it_would_add_what_is_pending_and_the_limit() {
    let app = spawn_app_with(&[("GREENLIGHT_MAX_PENDING_PER_AGENT", "5")]).await;
    for i in 0..3 {
        let answer = app.submit(request(&format!("echo {i}"))).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    }
    let three = json!({"actions": [request("make a"), request("make b"), request("make c")]});
    let refused = submit_batch(&app, None, &three).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"]["code"], "too_many_pending");
    assert_eq!(
        message(&refused),
        "agent ci-bot has 3 pending requests and may have at most 5: this batch would add 3, making 6; wait for some to be decided or cancel them"
    );
    // Nothing of it was stored, and a batch that fits is taken.
    let two = json!({"actions": [request("make a"), request("make b")]});
    let taken = submit_batch(&app, None, &two).await;
    assert_eq!(taken.status, StatusCode::ACCEPTED, "{:?}", taken.body);
    // A batch larger than the cap itself could never pass: 422 naming actions.
    let six = json!({"actions": vec![request("ls"); 6]});
    let never = submit_batch(&app, None, &six).await;
    assert_eq!(
        never.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        never.body
    );
    assert!(
        message(&never).starts_with("actions: a batch of 6"),
        "{}",
        message(&never)
    );
}

#[tokio::test]
async fn a_batch_item_whose_quorum_cannot_be_reached_is_named_like_any_item_error() {
    let app = spawn_app_with(&[("GREENLIGHT_APPROVERS", "U0AAA,U0BBB")]).await;
    let mut unreachable = request("kubectl rollout restart deploy/api");
    unreachable["required_approvals"] = json!(3);
    let body = json!({"actions": [request("ls"), unreachable]});
    let refused = submit_batch(&app, None, &body).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"]["code"], "invalid_request");
    assert!(
        message(&refused).starts_with("actions[1]: required_approvals: "),
        "{}",
        message(&refused)
    );
    assert!(app.slack.calls_to("chat.postMessage").is_empty());
}
