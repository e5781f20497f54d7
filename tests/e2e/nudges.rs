//! Reminders and escalation end to end, on short real timers: a reminder in the
//! message's thread, then the escalation post (whose approvers may then decide), the
//! deadline moved as a long-polling agent sees it, both messages rewritten on the
//! decision, and a restart that keeps a pending escalation.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    fake_slack::{button_value, Call},
    spawn_app_with_policy, TestApp, AGENT_TOKEN, CHANNEL,
};

const ESCALATION_CHANNEL: &str = "C0ESCALATE";

const POLICY: &str = r#"
[[rule]]
name = "deploys"
code = '^deploy'
approvers = ["U0ALICE"]
remind_after_secs = 1
escalate_after_secs = 2
escalate_to = ["U0CAROL"]
escalate_channel = "C0ESCALATE"
escalation_extends_secs = 30
"#;

async fn wait_for(app: &TestApp, what: &str, check: impl Fn(&Call) -> bool) -> Call {
    let calls = app
        .slack
        .wait_until(Duration::from_secs(15), what, |calls| {
            calls.iter().any(&check)
        })
        .await;
    calls.into_iter().find(|c| check(c)).expect("found")
}

fn posted_to(call: &Call, channel: &str, id: &str) -> bool {
    call.method == "chat.postMessage"
        && call.body["channel"] == channel
        && button_value(&call.body["blocks"], "greenlight_approve").as_deref() == Some(id)
}

#[tokio::test]
async fn reminder_then_escalation_then_a_decision_from_the_escalation_channel() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    let submitted = app
        .submit_as(
            AGENT_TOKEN,
            "",
            json!({ "code": "deploy web", "language": "bash" }),
        )
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::ACCEPTED,
        "{:?}",
        submitted.body
    );
    let id = submitted.body["id"].as_str().expect("id").to_owned();
    let first_deadline = crate::helpers::rfc3339(&submitted.body["expires_at"]);
    // The agent long-polls across the escalation: its answer carries the new deadline.
    let poll = {
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/v1/approvals/{id}?wait=4")),
        );
        tokio::spawn(async move {
            let response = http
                .get(url)
                .bearer_auth(AGENT_TOKEN)
                .send()
                .await
                .expect("poll");
            response.json::<Value>().await.expect("json")
        })
    };
    let first = wait_for(&app, "the request message", |c| posted_to(c, CHANNEL, &id)).await;
    let ts = first.body["ts"].clone();
    // Carol is not an approver until the request is escalated.
    app.approve(&id, "U0CAROL").await;
    assert_eq!(app.approval(&id).await["status"], "pending");

    let reminder = wait_for(&app, "a reminder in the thread", |c| {
        c.method == "chat.postMessage" && c.body["thread_ts"].is_string()
    })
    .await;
    assert_eq!(reminder.body["channel"], CHANNEL);
    let text = reminder.body["text"].as_str().expect("text");
    assert!(text.contains("<@U0ALICE>"), "{text}");
    let _ = ts;
    wait_for(&app, "the escalation post", |c| {
        posted_to(c, ESCALATION_CHANNEL, &id)
    })
    .await;

    let polled = poll.await.expect("poll task");
    assert_eq!(polled["status"], "pending", "{polled}");
    let moved = crate::helpers::rfc3339(&polled["expires_at"]) - first_deadline;
    assert_eq!(moved.num_seconds(), 30, "{polled}");

    // Carol decides from the escalation channel; both messages show the outcome.
    let answer = app.approve(&id, "U0CAROL").await;
    assert_eq!(answer.status, StatusCode::OK);
    let decided = app.approval(&id).await;
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["decided_by"], "U0CAROL");
    for channel in [CHANNEL, ESCALATION_CHANNEL] {
        wait_for(&app, &format!("the rewrite in {channel}"), |c| {
            c.method == "chat.update"
                && c.body["channel"] == channel
                && button_value(&c.body["blocks"], "greenlight_approve").is_none()
        })
        .await;
    }
    let kinds: Vec<String> = app
        .event_kinds(&id)
        .await
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for kind in ["reminded", "escalated", "escalation_posted"] {
        assert!(kinds.contains(&kind.to_owned()), "{kind}: {kinds:?}");
    }
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("greenlight_nudges_total{kind=\"escalation\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_restart_keeps_a_pending_escalation() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    let submitted = app
        .submit_as(
            AGENT_TOKEN,
            "",
            json!({ "code": "deploy api", "language": "bash" }),
        )
        .await;
    let id = submitted.body["id"].as_str().expect("id").to_owned();
    wait_for(&app, "the request message", |c| posted_to(c, CHANNEL, &id)).await;
    let policy = app
        .db_path
        .with_file_name("policy.toml")
        .display()
        .to_string();
    let app = app
        .restart_with(Duration::from_millis(50), &[("GREENLIGHT_POLICY", &policy)])
        .await;
    wait_for(&app, "the escalation post after the restart", |c| {
        posted_to(c, ESCALATION_CHANNEL, &id)
    })
    .await;
    let answer = app.approve(&id, "U0CAROL").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "approved");
}

/// A request that needs two approvals and was escalated: a vote that does not decide
/// yet rewrites the escalation message too, so reviewers there see "1 of 2" as the
/// request's own channel does, not the count from when it was escalated.
#[tokio::test]
async fn a_vote_on_an_escalated_request_rewrites_the_escalation_message() {
    let policy = POLICY.replace(
        "approvers = [\"U0ALICE\"]",
        "approvers = [\"U0ALICE\", \"U0BOB\"]\nrequired_approvals = 2",
    );
    assert!(policy.contains("required_approvals = 2"), "{policy}");
    let app = spawn_app_with_policy(&policy, &[]).await;
    let submitted = app
        .submit_as(AGENT_TOKEN, "", json!({ "code": "deploy db" }))
        .await;
    let id = submitted.body["id"].as_str().expect("id").to_owned();
    wait_for(&app, "the escalation post", |c| {
        posted_to(c, ESCALATION_CHANNEL, &id)
    })
    .await;
    let answer = app.approve(&id, "U0ALICE").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "pending");
    for channel in [CHANNEL, ESCALATION_CHANNEL] {
        let rewrite = wait_for(&app, &format!("the progress in {channel}"), |c| {
            c.method == "chat.update"
                && c.body["channel"] == channel
                && c.body["blocks"].to_string().contains("1 of 2 approvals")
        })
        .await;
        assert_eq!(
            button_value(&rewrite.body["blocks"], "greenlight_approve").as_deref(),
            Some(id.as_str()),
            "a request still pending keeps its buttons in {channel}"
        );
    }
}

/// Without Slack there is no message thread to remind in: a due reminder is audited
/// as `reminder_skipped` with the reason, never as `reminded`, and not counted as sent.
#[tokio::test]
async fn without_slack_reminders_are_audited_as_skipped_and_not_counted() {
    let policy = "[[rule]]\nname = \"slow\"\ncode = '^deploy'\nremind_after_secs = 1\nremind_every_secs = 1\n";
    let app = spawn_app_with_policy(
        policy,
        &[
            ("SLACK_BOT_TOKEN", ""),
            ("SLACK_SIGNING_SECRET", ""),
            ("SLACK_CHANNEL_ID", ""),
        ],
    )
    .await;
    let submitted = app
        .submit_as(AGENT_TOKEN, "", json!({ "code": "deploy web" }))
        .await;
    assert_eq!(
        submitted.status,
        StatusCode::ACCEPTED,
        "{:?}",
        submitted.body
    );
    let id = submitted.body["id"].as_str().expect("id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let events = loop {
        let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
        let skipped = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "reminder_skipped");
        if skipped {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reminder_skipped: {events}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let list = events["events"].as_array().expect("events");
    assert!(!list.iter().any(|e| e["kind"] == "reminded"), "{events}");
    let skipped = list
        .iter()
        .find(|e| e["kind"] == "reminder_skipped")
        .expect("skipped");
    assert!(
        skipped["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Slack is not configured")),
        "{skipped}"
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let sent = metrics
        .lines()
        .find_map(|l| l.strip_prefix("greenlight_nudges_total{kind=\"reminder\"} "))
        .unwrap_or("0");
    assert_eq!(sent, "0", "{metrics}");
    assert!(
        app.slack
            .calls()
            .iter()
            .all(|c| c.method != "chat.postMessage"),
        "nothing is posted without Slack"
    );
}
