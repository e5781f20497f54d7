//! Standing grants end to end: "Approve for 30 min" in Slack, later requests approved
//! at once by it, what it does not cover, revocation (Slack button and HTTP), expiry
//! and restarts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    fake_slack::{button_value, Call},
    spawn_app_with_policy, TestApp, AGENT_TOKEN, OTHER_AGENT_TOKEN,
};

const POLICY: &str = r#"
[[rule]]
name = "tests"
code = '^cargo test'
approvers = ["U0ALICE", "U0BOB"]
grant_max_secs = 3600
grant_durations_secs = [1800]

[[rule]]
name = "blink"
code = '^make'
approvers = ["U0ALICE"]
grant_max_secs = 1
"#;

const GRANT_30_MIN: &str = "greenlight_grant_1800";
const REVOKE: &str = "greenlight_revoke_grant";

/// The posted `chat.postMessage` whose button `action_id` carries `id`.
async fn posted(app: &TestApp, id: &str, action_id: &str) -> Call {
    let calls = app
        .slack
        .wait_until(
            Duration::from_secs(10),
            &format!("a message with {action_id} for {id}"),
            |calls| {
                calls.iter().any(|c| {
                    c.method == "chat.postMessage"
                        && button_value(&c.body["blocks"], action_id).as_deref() == Some(id)
                })
            },
        )
        .await;
    calls
        .into_iter()
        .find(|c| {
            c.method == "chat.postMessage"
                && button_value(&c.body["blocks"], action_id).as_deref() == Some(id)
        })
        .expect("found")
}

/// Submits `code` as `token`'s agent without waiting; returns the answer body.
async fn submit(app: &TestApp, token: &str, code: &str) -> (StatusCode, Value) {
    let answer = app
        .submit_as(token, "", json!({ "code": code, "language": "bash" }))
        .await;
    (answer.status, answer.body)
}

/// Submits, waits for the pending message, and makes a 30-minute grant from it as
/// U0ALICE. Returns the request id.
async fn grant_from_slack(app: &TestApp, code: &str) -> String {
    let (status, body) = submit(app, AGENT_TOKEN, code).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    let message = posted(app, &id, GRANT_30_MIN).await;
    let button = find_button(&message.body["blocks"], GRANT_30_MIN).expect("grant button");
    assert_eq!(button["text"]["text"], "Approve for 30 min");
    let answer = app.click(&id, GRANT_30_MIN, "U0ALICE").await;
    assert_eq!(answer.status, StatusCode::OK);
    let decided = app.approval(&id).await;
    assert_eq!(decided["status"], "approved", "{decided}");
    id
}

fn find_button(blocks: &Value, action_id: &str) -> Option<Value> {
    match blocks {
        Value::Object(map) if map.get("action_id").and_then(Value::as_str) == Some(action_id) => {
            Some(blocks.clone())
        }
        Value::Object(map) => map.values().find_map(|v| find_button(v, action_id)),
        Value::Array(items) => items.iter().find_map(|v| find_button(v, action_id)),
        _ => None,
    }
}

async fn grants(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let response = app
        .http
        .get(app.url(&format!("/v1/grants{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("grants");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["grants"].as_array().expect("grants").clone()
}

#[tokio::test]
async fn a_grant_approves_the_same_action_at_once_and_nothing_else() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    let first = grant_from_slack(&app, "cargo test --all").await;
    let listed = grants(&app, AGENT_TOKEN, "").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["granted_by"], "U0ALICE");
    assert_eq!(listed[0]["action_key"], "cargo test --all");
    assert_eq!(listed[0]["approval_id"], first.as_str());
    let grant_id = listed[0]["id"].as_str().expect("grant id").to_owned();
    // Another agent sees none of it.
    assert!(grants(&app, OTHER_AGENT_TOKEN, "").await.is_empty());

    // The same code, whitespace aside: approved in the submit call itself.
    let (status, body) = submit(&app, AGENT_TOKEN, "cargo test   \t--all \n").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    assert_eq!(body["decided_by"], "U0ALICE");
    let reason = body["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&grant_id) && reason.contains("<@U0ALICE>"),
        "{reason}"
    );
    let used = body["id"].as_str().expect("id").to_owned();
    // Posted as a short FYI: no Approve or Deny, a Revoke button.
    let fyi = posted(&app, &used, REVOKE).await;
    assert!(button_value(&fyi.body["blocks"], "greenlight_approve").is_none());
    assert!(button_value(&fyi.body["blocks"], "greenlight_deny").is_none());
    let kinds: Vec<String> = app
        .event_kinds(&used)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(kinds.contains(&"grant_used".to_owned()), "{kinds:?}");

    // Different code, another agent, more approvals asked: not covered.
    let (status, _) = submit(&app, AGENT_TOKEN, "cargo test --lib").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = submit(&app, OTHER_AGENT_TOKEN, "cargo test --all").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let answer = app
        .submit_as(
            AGENT_TOKEN,
            "",
            json!({ "code": "cargo test --all", "language": "bash", "required_approvals": 2 }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    // …and its message offers no grant.
    let two = answer.body["id"].as_str().expect("id").to_owned();
    let message = posted(&app, &two, "greenlight_approve").await;
    assert!(find_button(&message.body["blocks"], GRANT_30_MIN).is_none());

    // Revoke from the FYI: the next matching request goes to review again, and the
    // FYI is rewritten without its button.
    let answer = app.click(&used, REVOKE, "U0BOB").await;
    assert_eq!(answer.status, StatusCode::OK);
    let (status, body) = submit(&app, AGENT_TOKEN, "cargo test --all").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_for_update("the FYI without Revoke", |c| {
        c.body["text"].is_string()
            && button_value(&c.body["blocks"], REVOKE).is_none()
            && c.body.to_string().contains("Grant revoked by")
    })
    .await;
    let revoked = grants(&app, AGENT_TOKEN, "?all=true").await;
    assert_eq!(revoked[0]["revoked_by"], "U0BOB");
    assert!(grants(&app, AGENT_TOKEN, "").await.is_empty());
}

#[tokio::test]
async fn an_expired_grant_covers_nothing() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    let (_, body) = submit(&app, AGENT_TOKEN, "make all").await;
    let id = body["id"].as_str().expect("id").to_owned();
    posted(&app, &id, "greenlight_grant_1").await;
    app.click(&id, "greenlight_grant_1", "U0ALICE").await;
    assert_eq!(app.approval(&id).await["status"], "approved");
    // Wait on the grant's own state: it lasts one second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !grants(&app, AGENT_TOKEN, "").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(grants(&app, AGENT_TOKEN, "?all=true").await.len(), 1);
    let (status, body) = submit(&app, AGENT_TOKEN, "make all").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn only_a_signed_in_approver_revokes_over_http_and_agents_never() {
    let app = spawn_app_with_policy(
        POLICY,
        &[(
            "GREENLIGHT_REVIEWERS",
            "alice:U0ALICE:alice-secret-0123456789,carol:U0CAROL:carol-secret-0123456789",
        )],
    )
    .await;
    grant_from_slack(&app, "cargo test").await;
    let grant = grants(&app, AGENT_TOKEN, "").await.remove(0);
    let url = app.url(&format!("/v1/grants/{}", grant["id"].as_str().expect("id")));
    let delete = |cookie: Option<String>, token: Option<&str>| {
        let mut request = app.http.delete(&url);
        if let Some(cookie) = cookie {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.expect("delete");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = delete(None, Some(AGENT_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = delete(None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A person's call: the message is about signing in, not about a bearer token.
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("sign in to the review page") && !message.contains("bearer token is"),
        "{body}"
    );
    assert!(
        !message.starts_with("missing or invalid bearer token"),
        "{body}"
    );
    let base = app.url("");
    let carol = sign_in(&base, "carol-secret-0123456789").await;
    let alice = sign_in(&base, "alice-secret-0123456789").await;
    // An agent token fails closed even beside an approver's session.
    let (status, _) = delete(Some(alice.clone()), Some(AGENT_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Carol is no approver of the rule.
    let (status, body) = delete(Some(carol), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("only the reviewer who made this grant or an approver of its rule")
            && !message.contains("not_approver"),
        "{body}"
    );
    assert_eq!(grants(&app, AGENT_TOKEN, "").await.len(), 1);
    let (status, body) = delete(Some(alice), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["grant"]["revoked_by"], "U0ALICE");
    // Revoked before the next request is answered.
    let (status, _) = submit(&app, AGENT_TOKEN, "cargo test").await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_restart_keeps_grants() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    grant_from_slack(&app, "cargo test --release").await;
    let policy = app.db_path.with_file_name("policy.toml");
    let policy = policy.display().to_string();
    let app = app
        .restart_with(Duration::from_millis(50), &[("GREENLIGHT_POLICY", &policy)])
        .await;
    let (status, body) = submit(&app, AGENT_TOKEN, "cargo test --release").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");

    // A policy change to what the rule matches voids the grant.
    std::fs::write(&policy, POLICY.replace("'^cargo test'", "'^cargo test '")).expect("policy");
    let app = app
        .restart_with(Duration::from_millis(50), &[("GREENLIGHT_POLICY", &policy)])
        .await;
    let (status, body) = submit(&app, AGENT_TOKEN, "cargo test --release").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_grant_stops_when_its_maker_is_no_longer_an_approver() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    grant_from_slack(&app, "cargo test --lib").await;
    // Alice leaves the rule's approvers; what the rule matches is unchanged.
    let policy = app.db_path.with_file_name("policy.toml");
    std::fs::write(
        &policy,
        POLICY.replace(r#"["U0ALICE", "U0BOB"]"#, r#"["U0BOB", "U0CAROL"]"#),
    )
    .expect("policy");
    let policy = policy.display().to_string();
    let app = app
        .restart_with(Duration::from_millis(50), &[("GREENLIGHT_POLICY", &policy)])
        .await;
    let (status, body) = submit(&app, AGENT_TOKEN, "cargo test --lib").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");
    let all = grants(&app, AGENT_TOKEN, "?all=true").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0]["revoked_by"]
            .as_str()
            .is_some_and(|by| by.contains("no longer an approver")),
        "{all:?}"
    );
}

/// Signs in to the review page; returns the `gl_session=…` cookie pair.
async fn sign_in(base: &str, secret: &str) -> String {
    // The sign-in answers with a redirect, which must be seen, not followed.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    crate::web::sign_in_with_secret(&http, base, secret).await
}
