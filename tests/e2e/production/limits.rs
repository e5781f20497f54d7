//! Per-agent submission limits: a token bucket (429 + Retry-After) and a cap on
//! pending requests (429 too_many_pending). Idempotent replays pass for free.

use reqwest::StatusCode;
use serde_json::Value;

use super::{scrape, value};
use crate::helpers::{request, spawn_app_with, TestApp, AGENT_TOKEN, OTHER_AGENT_TOKEN};

/// (status, body, Retry-After) of a submission with an Idempotency-Key.
async fn submit_with_key(
    app: &TestApp,
    token: &str,
    key: &str,
    body: &Value,
) -> (StatusCode, Value, Option<String>) {
    let answer = app.submit_with_key(token, key, body).await;
    let retry_after = answer
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (answer.status, answer.body, retry_after)
}

#[tokio::test]
async fn each_agent_is_rate_limited_with_retry_after_and_replays_are_free() {
    let app = spawn_app_with(&[("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let first_body = request("echo 1");
    let (status, first, _) = submit_with_key(&app, AGENT_TOKEN, "key-1", &first_body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for i in 2..=3 {
        let answer = app.submit(request(&format!("echo {i}"))).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    }

    let refused = app.submit(request("echo 4")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body["error"]["code"], "rate_limited");
    let retry_after: u64 = refused
        .headers
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    // 3 a minute refills one token every 20 s.
    assert!((1..=20).contains(&retry_after), "{retry_after}");

    // A replay of an earlier submission is answered even with an empty bucket, and
    // gives the same request back.
    for _ in 0..3 {
        let (status, again, _) = submit_with_key(&app, AGENT_TOKEN, "key-1", &first_body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{again}");
        assert_eq!(again["id"], first["id"]);
    }
    // A new key is a new request: still limited.
    let (status, body, retry) =
        submit_with_key(&app, AGENT_TOKEN, "key-2", &request("echo 5")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry.is_some());

    // Another agent has its own bucket.
    let other = app
        .submit_as(OTHER_AGENT_TOKEN, "", request("echo other"))
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);

    let metrics = scrape(&app.http, &format!("http://{}", app.addr)).await;
    assert_eq!(
        value(
            &metrics,
            "greenlight_submissions_refused_total{agent=\"ci-bot\",reason=\"rate_limited\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            "greenlight_approvals_submitted_total{agent=\"ci-bot\"}"
        ),
        3.0,
        "replays are not submissions"
    );
}

#[tokio::test]
async fn pending_requests_are_capped_per_agent() {
    let app = spawn_app_with(&[("GREENLIGHT_MAX_PENDING_PER_AGENT", "2")]).await;
    let body = request("echo a");
    let (status, first, _) = submit_with_key(&app, AGENT_TOKEN, "cap-1", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        app.submit(request("echo b")).await.status,
        StatusCode::ACCEPTED
    );

    let refused = app.submit(request("echo c")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.body["error"]["code"], "too_many_pending");
    assert!(refused.body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("limit is 2"));
    // A replay of a pending request is not a new one.
    let (status, again, _) = submit_with_key(&app, AGENT_TOKEN, "cap-1", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again["id"], first["id"]);
    // Other agents are not affected.
    let other = app
        .submit_as(OTHER_AGENT_TOKEN, "", request("echo d"))
        .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);

    // Once one is decided there is room again.
    let id = first["id"].as_str().expect("id");
    let cancel = app.cancel(id, AGENT_TOKEN).await;
    assert_eq!(cancel.status, StatusCode::OK);
    assert_eq!(
        app.submit(request("echo e")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.submit(request("echo f")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn concurrent_submissions_cannot_overshoot_the_pending_cap() {
    let app = spawn_app_with(&[("GREENLIGHT_MAX_PENDING_PER_AGENT", "3")]).await;
    let answers =
        futures::future::join_all((0..12).map(|i| app.submit(request(&format!("echo race-{i}")))))
            .await;
    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .count();
    let capped = answers
        .iter()
        .filter(|a| a.body["error"]["code"] == "too_many_pending")
        .count();
    assert_eq!((accepted, capped), (3, 9));
}

/// The cap keeps an agent from burying its reviewers. A request the policy decides at
/// once never reaches a reviewer, so an agent at its cap still gets its policy's
/// answers (a coding agent's hook keeps working while two requests wait), and those
/// answers take no room under the cap.
#[tokio::test]
async fn the_pending_cap_does_not_hold_back_what_the_policy_decides() {
    let policy = "[[rule]]\nname = \"ls\"\naction = \"auto_approve\"\ncode = '^ls$'\n\n\
                  [[rule]]\nname = \"rm\"\naction = \"auto_deny\"\nreason = \"never\"\ncode = '^rm '\n";
    let app =
        crate::helpers::spawn_app_with_policy(policy, &[("GREENLIGHT_MAX_PENDING_PER_AGENT", "1")])
            .await;
    assert_eq!(
        app.submit(request("echo waits")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.submit(request("echo refused")).await.body["error"]["code"],
        "too_many_pending"
    );
    let approved = app.submit_as(AGENT_TOKEN, "?wait=5", request("ls")).await;
    assert_eq!(approved.status, StatusCode::OK, "{:?}", approved.body);
    assert_eq!(approved.body["status"], "approved");
    let denied = app
        .submit_as(AGENT_TOKEN, "?wait=5", request("rm -rf /"))
        .await;
    assert_eq!(denied.status, StatusCode::OK, "{:?}", denied.body);
    assert_eq!(denied.body["status"], "denied");
    // Still exactly one pending: the cap is unchanged by the policy's answers.
    assert_eq!(
        app.submit(request("echo still refused")).await.body["error"]["code"],
        "too_many_pending"
    );
}
