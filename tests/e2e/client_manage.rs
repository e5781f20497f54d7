//! The Rust client's reads and management calls against the real server: a batch read
//! back and waited on by id, grants listed by the agent, and a grant revoked by a
//! reviewer's review-page session (never by the agent's token).

use std::time::Duration;

use greenlight_client::{BatchStatus, Client, ClientError};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    fake_slack::button_value, spawn_app, spawn_app_with_policy, TestApp, AGENT_TOKEN,
};

const POLICY: &str = r#"
[[rule]]
name = "tests"
code = '^cargo test'
approvers = ["U0ALICE"]
grant_max_secs = 3600
grant_durations_secs = [1800]
"#;
const ALICE_SECRET: &str = "alice-secret-0123456789";
const CAROL_SECRET: &str = "carol-secret-0123456789";

fn client_for(app: &TestApp) -> Client {
    Client::new(app.url(""), AGENT_TOKEN).expect("client")
}

#[tokio::test]
async fn get_batch_reads_and_waits_for_a_batch() {
    let app = spawn_app().await;
    let submitted = app
        .http
        .post(app.url("/v1/batches"))
        .bearer_auth(AGENT_TOKEN)
        .json(&json!({ "actions": [{ "code": "ls" }, { "code": "pwd" }] }))
        .send()
        .await
        .expect("submit");
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = submitted.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    let client = client_for(&app);
    let now = client.get_batch(&id, Duration::ZERO).await.expect("batch");
    assert_eq!(now.id.to_string(), id);
    assert_eq!(now.status, BatchStatus::Pending);
    assert_eq!(now.approvals.len(), 2);
    for item in &now.approvals {
        let item = item.id.to_string();
        assert_eq!(app.approve(&item, "U0ALICE").await.status, StatusCode::OK);
    }
    let done = client
        .get_batch(&id, Duration::from_secs(10))
        .await
        .expect("batch");
    assert_eq!(done.status, BatchStatus::Decided);
    assert!(done.approvals.iter().all(|a| a.approved));
    let unknown = client
        .get_batch(&uuid::Uuid::new_v4().to_string(), Duration::ZERO)
        .await
        .expect_err("unknown");
    assert!(
        matches!(&unknown, ClientError::Rejected(text) if text.starts_with("HTTP 404 not_found")),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn grants_are_listed_by_the_agent_and_revoked_by_a_reviewer() {
    let reviewers = format!("alice:U0ALICE:{ALICE_SECRET},carol:{CAROL_SECRET}");
    let app = spawn_app_with_policy(POLICY, &[("GREENLIGHT_REVIEWERS", &reviewers)]).await;
    let client = client_for(&app);
    assert!(client.list_grants(false).await.expect("list").is_empty());

    let answer = app
        .submit_as(
            AGENT_TOKEN,
            "",
            json!({ "code": "cargo test", "language": "bash" }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let id = answer.body["id"].as_str().expect("id").to_owned();
    app.slack
        .wait_until(
            Duration::from_secs(15),
            "the message with a grant button",
            |calls| {
                calls.iter().any(|c| {
                    c.method == "chat.postMessage"
                        && button_value(&c.body["blocks"], "greenlight_grant_1800").as_deref()
                            == Some(id.as_str())
                })
            },
        )
        .await;
    assert_eq!(
        app.click(&id, "greenlight_grant_1800", "U0ALICE")
            .await
            .status,
        StatusCode::OK
    );

    let grants = client.list_grants(false).await.expect("list");
    assert_eq!(grants.len(), 1, "{grants:?}");
    let grant = &grants[0];
    assert_eq!(
        (
            grant.rule.as_str(),
            grant.granted_by.as_str(),
            grant.action_key.as_str()
        ),
        ("tests", "U0ALICE", "cargo test")
    );
    assert_eq!(grant.approval_id, id);

    let carol = client
        .revoke_grant(&grant.id, CAROL_SECRET)
        .await
        .expect_err("carol has no say");
    assert!(
        matches!(&carol, ClientError::Rejected(text) if text.starts_with("HTTP 403 forbidden")),
        "{carol:?}"
    );
    let wrong = client
        .revoke_grant(&grant.id, "nobody-has-this-secret")
        .await
        .expect_err("wrong secret");
    assert!(matches!(wrong, ClientError::Unauthorized(_)), "{wrong:?}");
    let revoked = client
        .revoke_grant(&grant.id, ALICE_SECRET)
        .await
        .expect("alice revokes");
    assert_eq!(revoked.id, grant.id);
    assert_eq!(revoked.revoked_by.as_deref(), Some("U0ALICE"));
    assert!(client.list_grants(false).await.expect("list").is_empty());
    assert_eq!(client.list_grants(true).await.expect("all").len(), 1);
}
