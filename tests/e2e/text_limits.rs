//! Text that fits before escaping but not after, and what happens when Slack refuses a
//! message for its content anyway: the fake Slack checks every documented limit on
//! every message (helpers/slack_limits.rs), these tests push the edges.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    fake_slack::button_value, request, slack_limits, spawn_app, spawn_app_with_policy, Call, Reply,
    TestApp,
};

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

/// Outbox rows left for approval `id`: none means nothing will be sent again.
async fn outbox_rows(app: &TestApp, id: &str) -> i64 {
    crate::helpers::database::number(
        &app.db_url(),
        "SELECT COUNT(*) FROM outbox WHERE approval_id = ?",
        &[id],
    )
    .await
}

/// Waits until the outbox holds nothing for `id`.
async fn wait_outbox_empty(app: &TestApp, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while outbox_rows(app, id).await > 0 {
        assert!(Instant::now() < deadline, "the outbox kept a row for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn updates_of(app: &TestApp, id: &str) -> Vec<Call> {
    app.slack
        .calls_to("chat.update")
        .into_iter()
        .filter(|c| c.body.to_string().contains(id))
        .collect()
}

fn has_buttons(call: &Call) -> bool {
    call.body["blocks"].to_string().contains("\"button\"")
}

/// The section texts of a message, in order.
fn sections(call: &Call) -> Vec<String> {
    call.body["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_deny_reason_of_581_ampersands_gives_a_final_message_that_fits() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("ls -la")).await;
    let reason = "&".repeat(581);
    let ack = app.deny_with_reason(&id, "U0REVIEWER", &reason).await;
    assert_eq!(ack.status, StatusCode::OK, "{:?}", ack.body);

    let update = app
        .wait_for_update("the final message", |c| {
            c.succeeded && c.body["text"].as_str().unwrap_or("").starts_with("Denied")
        })
        .await;
    let broken = slack_limits::check("chat.update", &update.body);
    assert!(broken.is_empty(), "{broken:?}");
    assert!(!has_buttons(&update), "a decided request keeps no buttons");
    assert_eq!(
        button_value(&update.body["blocks"], "greenlight_approve"),
        None
    );
    let summary = sections(&update)
        .into_iter()
        .find(|t| t.starts_with("*Denied*"))
        .expect("summary");
    assert!(
        summary.chars().count() <= 3000,
        "{}",
        summary.chars().count()
    );
    // Cut between entities, marked, and never half an `&amp;`.
    assert!(
        summary.ends_with("&amp;…"),
        "{}",
        &summary[summary.len() - 20..]
    );
    assert_eq!(
        summary.matches('&').count(),
        summary.matches("&amp;").count()
    );

    // The agent gets the reason word for word; Slack needed no fallback and saw no
    // message over a limit.
    let approval = app.approval(&id).await;
    assert_eq!(approval["status"], "denied");
    assert!(approval["reason"]
        .as_str()
        .expect("reason")
        .contains(&reason));
    let kinds = app.event_kinds(&id).await;
    assert!(
        !kinds.iter().any(|(k, _)| k == "slack_fallback"),
        "{kinds:?}"
    );
    assert!(
        app.slack.violations().is_empty(),
        "{:?}",
        app.slack.violations()
    );
}

#[tokio::test]
async fn an_update_refused_for_its_blocks_falls_back_once_and_is_audited() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("ls")).await;
    app.slack
        .script("chat.update", [Reply::Error("invalid_blocks")]);
    let click = app.approve(&id, "U0ALICE").await;
    assert_eq!(click.status, StatusCode::OK);

    let minimal = app
        .wait_for_update("the minimal message", |c| c.succeeded)
        .await;
    assert!(!has_buttons(&minimal), "{}", minimal.body);
    let text = sections(&minimal).join("\n");
    assert!(text.starts_with("*Approved* by <@U0ALICE>"), "{text}");
    assert!(text.contains(&id), "points to the request: {text}");
    assert!(slack_limits::check("chat.update", &minimal.body).is_empty());

    let event = wait_for_event(&app, &id, "slack_fallback").await;
    assert_eq!(event["detail"]["error"], "invalid_blocks");
    assert_eq!(event["detail"]["message"], "update");
    // Nothing is left to send: the refused blocks are never sent again.
    wait_outbox_empty(&app, &id).await;
    let updates = updates_of(&app, &id);
    assert_eq!(
        updates.len(),
        2,
        "the refused update and the fallback, once"
    );
    assert!(!updates[0].succeeded && updates[1].succeeded);
    assert_eq!(app.approval(&id).await["status"], "approved");
}

#[tokio::test]
async fn an_update_slack_always_refuses_is_given_up_not_retried_forever() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("ls")).await;
    app.slack
        .always("chat.update", Reply::Error("msg_too_long"));
    app.approve(&id, "U0ALICE").await;

    let failed = wait_for_event(&app, &id, "slack_update_failed").await;
    assert_eq!(failed["detail"]["error"], "msg_too_long");
    wait_outbox_empty(&app, &id).await;
    // The full message, then the minimal one; no retry of either.
    assert_eq!(updates_of(&app, &id).len(), 2);
}

#[tokio::test]
async fn a_post_refused_for_its_blocks_posts_a_minimal_message_with_working_buttons() {
    let app = spawn_app().await;
    app.slack
        .script("chat.postMessage", [Reply::Error("invalid_blocks")]);
    let answer = app.submit(request("echo hello")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    let id = answer.body["id"].as_str().expect("id").to_owned();

    let calls = app
        .slack
        .wait_until(Duration::from_secs(10), "the minimal post", |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.postMessage" && c.succeeded)
        })
        .await;
    let posts: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect();
    assert_eq!(posts.len(), 2, "the refused post, then the minimal one");
    let minimal = posts[1];
    assert!(sections(minimal)[0].contains("Slack refused the full message (invalid_blocks)"));
    for action in [
        "greenlight_view_code",
        "greenlight_approve",
        "greenlight_deny",
    ] {
        assert_eq!(
            button_value(&minimal.body["blocks"], action).as_deref(),
            Some(id.as_str()),
            "{action}"
        );
    }
    let event = wait_for_event(&app, &id, "slack_fallback").await;
    assert_eq!(event["detail"]["message"], "post");
    assert_eq!(app.approval(&id).await["status"], "pending");

    // The buttons work: the request can be decided.
    app.approve(&id, "U0ALICE").await;
    let decided = app.get(&format!("/v1/approvals/{id}?wait=10")).await.body;
    assert_eq!(decided["status"], "approved", "{decided}");
}

#[tokio::test]
async fn hostile_text_everywhere_stays_within_every_limit() {
    let app = spawn_app().await;
    let hostile = format!(
        "{}{}{}",
        "&<>".repeat(700),
        "\u{202E}\u{2066}".repeat(300),
        "😀\u{0301}".repeat(500)
    );
    let body = serde_json::json!({
        "code": format!("{}\n{}", hostile, "`&\n".repeat(3000)),
        "title": hostile.chars().take(200).collect::<String>(),
        "context": vec![serde_json::json!({"role": hostile.clone(), "content": hostile.clone()}); 5],
    });
    let id = app.submit_and_post(body).await;
    app.deny_with_reason(
        &id,
        "U0REVIEWER",
        &hostile.chars().take(2000).collect::<String>(),
    )
    .await;
    app.wait_for_update("the final message", |c| c.succeeded)
        .await;
    // Both views and the ephemeral notes went through the same checks.
    let view = app
        .interact(
            &serde_json::json!({
                "type": "block_actions", "user": {"id": "U0BOB"}, "trigger_id": "1.2.3",
                "actions": [{"action_id": "greenlight_view_code", "value": id}],
            })
            .to_string(),
        )
        .await;
    assert_eq!(view.status, StatusCode::OK);
    app.slack
        .wait_until(Duration::from_secs(10), "the code view", |calls| {
            calls.iter().any(|c| {
                c.method == "views.open" && c.body["view"]["callback_id"] == "greenlight_code_view"
            })
        })
        .await;
    assert!(
        app.slack.violations().is_empty(),
        "{:?}",
        app.slack.violations()
    );
    let kinds = app.event_kinds(&id).await;
    assert!(
        !kinds.iter().any(|(k, _)| k == "slack_fallback"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn an_fyi_refused_for_its_blocks_is_posted_minimal_and_audited() {
    let policy = "[[rule]]\nname = \"no curl\"\naction = \"auto_deny\"\ncode = \"curl\"\nreason = \"no downloads\"\nnotify = true\n";
    let app = spawn_app_with_policy(policy, &[]).await;
    app.slack
        .script("chat.postMessage", [Reply::Error("msg_blocks_too_long")]);
    let answer = app.submit(request("curl https://example.invalid")).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let id = answer.body["id"].as_str().expect("id").to_owned();
    let event = wait_for_event(&app, &id, "slack_fallback").await;
    assert_eq!(event["detail"]["message"], "fyi");
    assert_eq!(event["detail"]["error"], "msg_blocks_too_long");
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 2, "the refused FYI, then the minimal one");
    assert!(posts[1].succeeded && !has_buttons(&posts[1]));
    let text = sections(&posts[1]).join("\n");
    assert!(
        text.starts_with("*Denied* by greenlight") && text.contains(&id),
        "{text}"
    );
    wait_outbox_empty(&app, &id).await;
}
