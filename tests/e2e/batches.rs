//! Batches: several actions in one submission, one Slack card with buttons per item,
//! each item decided through the usual path, answered together, one callback.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    button_value,
    receiver::{Mode, Receiver},
    request, spawn_app_with, TestApp, AGENT_TOKEN,
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(20);

async fn submit_batch(app: &TestApp, query: &str, body: Value) -> crate::helpers::Answer {
    let response = app
        .http
        .post(app.url(&format!("/v1/batches{query}")))
        .bearer_auth(AGENT_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("submit batch");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    crate::helpers::Answer {
        status,
        headers,
        body,
    }
}

/// The approve buttons' values of the card, in order.
fn approve_buttons(blocks: &Value) -> Vec<String> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .filter_map(|b| button_value(b, "greenlight_approve"))
        .collect()
}

#[tokio::test]
async fn a_batch_is_one_card_decided_item_by_item_and_answered_together() {
    let receiver = Receiver::start(Mode::Status(200)).await;
    let host = receiver.host();
    let secrets = format!("ci-bot:{SECRET}");
    let app = spawn_app_with(&[
        ("GREENLIGHT_CALLBACK_HOSTS", host.as_str()),
        ("GREENLIGHT_CALLBACK_SECRETS", secrets.as_str()),
        ("GREENLIGHT_CALLBACK_RETRY_FIRST_MS", "50"),
    ])
    .await;
    let answer = submit_batch(
        &app,
        "",
        json!({
            "title": "Deploy the release",
            "callback_url": receiver.url("/batch"),
            "actions": [request("make build"), request("make test"), request("make deploy")],
        }),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "pending");
    let batch = answer.body["id"].as_str().expect("id").to_owned();
    let items: Vec<String> = answer.body["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .map(|a| a["id"].as_str().expect("item id").to_owned())
        .collect();
    assert_eq!(items.len(), 3);
    // One card with Approve / Deny for each item, in order.
    let calls = app
        .slack
        .wait_until(WAIT, "the batch card", |calls| {
            calls.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    let posts: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect();
    assert_eq!(approve_buttons(&posts[0].body["blocks"]), items);
    // An agent long-polls the batch.
    let poll = {
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/v1/batches/{batch}?wait=30")),
        );
        tokio::spawn(async move {
            let response = http
                .get(url)
                .bearer_auth(AGENT_TOKEN)
                .send()
                .await
                .expect("poll");
            (
                response.status(),
                response.json::<Value>().await.expect("json"),
            )
        })
    };
    app.approve(&items[0], "U0ALICE").await;
    // The card is rewritten: item 1 decided, the others still have buttons.
    let update = app
        .wait_for_update("the card after the first decision", |c| {
            approve_buttons(&c.body["blocks"]) == items[1..].to_vec()
        })
        .await;
    assert!(update.body["blocks"].to_string().contains("Approved"));
    assert!(
        !poll.is_finished(),
        "answered before every item was decided"
    );
    app.deny_with_reason(&items[1], "U0BOB", "not on a Friday")
        .await;
    app.approve(&items[2], "U0ALICE").await;
    let (status, body) = tokio::time::timeout(WAIT, poll)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "decided");
    let statuses: Vec<_> = body["approvals"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!("approved"), json!("denied"), json!("approved")]
    );
    assert_eq!(body["approvals"][1]["reason"], "not on a Friday");
    // Each item is an ordinary request.
    assert_eq!(app.approval(&items[1]).await["status"], "denied");
    // The last card has no buttons left; still one message.
    app.wait_for_update("the final card", |c| {
        approve_buttons(&c.body["blocks"]).is_empty()
    })
    .await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    // One signed callback for the batch, none per item.
    let got = receiver.wait_for(1, WAIT).await;
    let payload = got[0].json();
    assert_eq!(payload["type"], "batch.decided");
    assert_eq!(
        payload["data"],
        app.get(&format!("/v1/batches/{batch}")).await.body
    );
    greenlight_client::webhooks::verify(SECRET, &got[0].headers, &got[0].body).expect("signed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "items got callbacks of their own"
    );
}

#[tokio::test]
async fn a_batch_decided_by_policy_answers_at_once() {
    let app = crate::helpers::spawn_app_with_policy(
        "[[rule]]\nname = \"ls\"\naction = \"auto_approve\"\ncode = '^ls$'\n",
        &[],
    )
    .await;
    let answer = submit_batch(
        &app,
        "?wait=5",
        json!({"actions": [request("ls"), request("ls")]}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "decided");
    assert!(app.slack.calls_to("chat.postMessage").is_empty());
}

#[tokio::test]
async fn malformed_batches_are_refused_naming_the_field() {
    let app = spawn_app_with(&[]).await;
    let cases = [
        (json!({"actions": []}), "actions"),
        (json!({"actions": vec![request("ls"); 21]}), "actions"),
        (
            json!({"actions": [request("ls"), {"code": ""}]}),
            "actions[1]",
        ),
        (
            json!({"actions": [{"code": "ls", "callback_url": "http://x/"}]}),
            "actions[0]",
        ),
        (
            json!({"actions": [request("ls")], "callback_url": "http://169.254.169.254/"}),
            "callback_url",
        ),
    ];
    for (body, field) in cases {
        let answer = submit_batch(&app, "", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            answer.body
        );
        let message = answer.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{body}: {message}");
    }
    assert_eq!(
        app.get("/v1/batches/0190a0b0-0000-7000-8000-000000000001")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_batch_nobody_decides_expires_item_by_item_with_the_usual_reason() {
    let app = spawn_app_with(&[]).await;
    let answer = submit_batch(
        &app,
        "",
        json!({"timeout_secs": 2, "actions": [request("make a"), request("make b")]}),
    )
    .await;
    let batch = answer.body["id"].as_str().expect("id").to_owned();
    app.slack
        .wait_until(WAIT, "the batch card", |calls| {
            calls.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    let decided = app.get(&format!("/v1/batches/{batch}?wait=30")).await.body;
    assert_eq!(decided["status"], "decided");
    for item in decided["approvals"].as_array().expect("items") {
        assert_eq!(item["status"], "expired");
        let reason = item["reason"].as_str().unwrap_or("");
        assert!(
            reason.starts_with("Timed out: no decision within 2 s"),
            "{reason}"
        );
    }
    app.wait_for_update("the expired card", |c| {
        approve_buttons(&c.body["blocks"]).is_empty()
    })
    .await;
}
