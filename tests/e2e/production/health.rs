//! `/healthz` and `/readyz`: readiness follows Slack's `auth.test` and the database,
//! without leaking configuration and without a probe turning into Slack traffic.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_app_on, FakeSlack, Reply, TestApp, BOT_TOKEN};

async fn readyz(app: &TestApp) -> (StatusCode, Value, String) {
    let response = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).expect("readyz answers JSON");
    (status, body, text)
}

/// Polls `/readyz` until `done` holds, failing after `within`.
async fn readyz_until(
    app: &TestApp,
    within: Duration,
    what: &str,
    done: impl Fn(StatusCode, &Value) -> bool,
) -> (StatusCode, Value, String) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body, text) = readyz(app).await;
        if done(status, &body) {
            return (status, body, text);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never became {what}; last: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_fails_on_a_bad_slack_token_and_recovers() {
    let slack = FakeSlack::start().await;
    slack.always("auth.test", Reply::Error("invalid_auth"));
    let app = spawn_app_on(slack, &[("GREENLIGHT_READINESS_RECHECK_SECS", "1")]).await;

    let (status, body, text) = readyz_until(&app, Duration::from_secs(10), "failed", |_, body| {
        body["checks"]["slack_auth"] != "checking"
    })
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert_eq!(body["status"], "unready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["slack_auth"], "failed: invalid_auth");
    for secret_or_config in [
        BOT_TOKEN,
        "127.0.0.1",
        "sqlite",
        "greenlight.db",
        &app.slack.base_url(),
    ] {
        assert!(!text.contains(secret_or_config), "{text}");
    }
    // Liveness does not depend on Slack.
    let health = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);

    // A probe reads the cached answer: hammering /readyz does not hammer Slack. Between
    // the two counts auth.test runs at most once per elapsed second (the recheck
    // interval), plus one in flight.
    let calls_before = app.slack.calls_to("auth.test").len();
    let started = std::time::Instant::now();
    for _ in 0..50 {
        assert_eq!(readyz(&app).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
    let elapsed = started.elapsed().as_secs() as usize;
    let calls = app.slack.calls_to("auth.test").len() - calls_before;
    assert!(
        calls <= elapsed + 2,
        "{calls} auth.test calls in {elapsed} s for 50 probes"
    );

    // The token is fixed (say, the app was reinstalled): the next recheck sees it.
    app.slack.always("auth.test", Reply::Ok);
    let (_, body, _) = readyz_until(&app, Duration::from_secs(10), "ready", |status, _| {
        status == StatusCode::OK
    })
    .await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["slack_auth"], "ok");

    // Once Slack said yes, it is not asked again.
    let settled = app.slack.calls_to("auth.test").len();
    for _ in 0..20 {
        assert_eq!(readyz(&app).await.0, StatusCode::OK);
    }
    assert_eq!(app.slack.calls_to("auth.test").len(), settled);
    // Every call carried the bot token, as any Web API call does.
    assert!(app
        .slack
        .calls_to("auth.test")
        .iter()
        .all(|c| c.authorization.as_deref() == Some(&*format!("Bearer {BOT_TOKEN}"))));
}

#[tokio::test]
async fn readiness_is_ready_with_a_good_token_and_needs_no_auth() {
    let app = crate::helpers::spawn_app().await;
    let (status, body, _) = readyz_until(&app, Duration::from_secs(10), "ready", |status, _| {
        status == StatusCode::OK
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"database": "ok", "slack_auth": "ok"}})
    );
    assert_eq!(app.slack.calls_to("auth.test").len(), 1);
}
