//! Slack as it really behaves: rate limits, 5xx, refusals, vanished messages, long
//! code and hostile text. Every assertion reads what the fake Slack recorded.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{approval_id_of, request, spawn_app, Reply, TestApp};

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

async fn event_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let answer = app.get(&format!("/v1/approvals/{id}/events")).await;
    answer.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}

/// Submits and returns the id without waiting for the message.
async fn submit_id(app: &TestApp, body: Value) -> String {
    let answer = app.submit(body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    answer.body["id"].as_str().expect("id").to_owned()
}

/// Waits until `n` posts have landed (a refused attempt carries the id too, so
/// `submit_and_post` alone would return on the first 429).
async fn landed_posts(app: &TestApp, n: usize) {
    app.slack
        .wait_until(Duration::from_secs(10), "landed posts", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage" && c.succeeded)
                .count()
                >= n
        })
        .await;
}

/// Long-polls until the request is final (at most 30 s).
async fn final_state(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = app.get(&format!("/v1/approvals/{id}?wait=10")).await.body;
        if body["status"] != "pending" {
            return body;
        }
        assert!(Instant::now() < deadline, "still pending: {body}");
    }
}

#[tokio::test]
async fn a_429_is_waited_out_then_the_message_lands() {
    let app = spawn_app().await;
    app.slack.script(
        "chat.postMessage",
        [Reply::RateLimited {
            retry_after_secs: 1,
        }],
    );
    let started = Instant::now();
    let id = submit_id(&app, request("echo hi")).await;
    landed_posts(&app, 1).await;
    let waited = started.elapsed();
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 2, "one 429, one retry");
    assert!(!posts[0].succeeded && posts[1].succeeded);
    assert!(
        waited >= Duration::from_secs(1),
        "Retry-After ignored: {waited:?}"
    );
    wait_for_event(&app, &id, "posted").await;
    let body = app.approval(&id).await;
    assert_eq!(body["status"], "pending");
    assert_eq!(body["message_ts"], "1700000000.000001");
}

#[tokio::test]
async fn server_errors_are_retried_then_the_message_lands() {
    let app = spawn_app().await;
    app.slack
        .script("chat.postMessage", [Reply::Status(500), Reply::Status(503)]);
    let id = submit_id(&app, request("echo hi")).await;
    landed_posts(&app, 1).await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 3);
    assert_eq!(app.slack.landed("chat.postMessage").len(), 1);
    assert_eq!(app.approval(&id).await["status"], "pending");
    // Still decidable as usual.
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "approved");
}

#[tokio::test]
async fn a_permanent_refusal_denies_with_the_slack_error() {
    let app = spawn_app().await;
    app.slack
        .always("chat.postMessage", Reply::Error("channel_not_found"));
    let id = submit_id(&app, request("echo hi")).await;
    let body = final_state(&app, &id).await;
    assert_eq!(body["status"], "denied");
    assert_eq!(body["approved"], false);
    assert_eq!(body["decided_by"], "greenlight");
    let reason = body["reason"].as_str().expect("reason");
    assert!(reason.contains("channel_not_found"), "{reason}");
    // Not retried: Slack's answer will not change.
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    let event = wait_for_event(&app, &id, "post_failed").await;
    assert_eq!(event["detail"]["error"], "channel_not_found");
}

/// Slack answers 503 for longer than the Web API client retries: the request is not
/// denied as if Slack had refused it; the post is tried again until the deadline, then
/// the request expires naming the failure. And a request posted once Slack is back
/// is posted as usual.
#[tokio::test]
async fn an_outage_longer_than_the_retries_waits_for_the_deadline_not_a_denial() {
    let app = spawn_app().await;
    app.slack.always("chat.postMessage", Reply::Status(503));
    let mut body = request("echo during the outage");
    body["timeout_secs"] = json!(3);
    let id = submit_id(&app, body).await;
    let state = final_state(&app, &id).await;
    assert_eq!(state["status"], "expired", "{state}");
    let reason = state["reason"].as_str().expect("reason");
    assert!(
        reason.contains("could not be posted") && reason.contains("503"),
        "{reason}"
    );
    let event = wait_for_event(&app, &id, "expired").await;
    assert_eq!(event["detail"]["never_posted"], true);
    assert!(
        !event_kinds(&app, &id)
            .await
            .contains(&"post_failed".to_owned()),
        "a transient failure is not a refusal"
    );
    // More than one round of the client's retries went out before the deadline.
    assert!(app.slack.calls_to("chat.postMessage").len() > 4);

    app.slack.always("chat.postMessage", Reply::Ok);
    let after = submit_id(&app, request("echo after the outage")).await;
    wait_for_event(&app, &after, "posted").await;
    assert_eq!(app.approval(&after).await["status"], "pending");
}

/// 40 requests to one channel whose Slack admits 5 messages a second: all of them
/// land, once each, in the order they were submitted, and the limit is not hammered.
/// (The limit is low so that even a loaded machine submits faster than it: at 20 a
/// second, slow submits never met it and the test proved nothing.)
#[tokio::test]
async fn a_burst_lands_in_order_through_the_rate_limit() {
    let app = spawn_app().await;
    app.slack
        .rate_limit("chat.postMessage", 5, Duration::from_secs(1));
    let started = Instant::now();
    let mut submitted = Vec::new();
    for i in 0..40 {
        submitted.push(submit_id(&app, request(&format!("echo burst {i}"))).await);
    }
    let submit_time = started.elapsed();
    app.slack
        .wait_until(Duration::from_secs(60), "40 landed messages", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage" && c.succeeded)
                .count()
                >= 40
        })
        .await;
    let wall = started.elapsed();
    let landed: Vec<String> = app
        .slack
        .landed("chat.postMessage")
        .iter()
        .map(approval_id_of)
        .collect();
    assert_eq!(landed, submitted, "every message once, in submission order");
    let refused = app
        .slack
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| !c.succeeded)
        .count();
    assert!(
        refused >= 1,
        "the fake never rate-limited: the test proves nothing"
    );
    // After the first 429 the channel's lane paces itself at the rate it was shown,
    // instead of bursting into the limit once a second (about eight 429s here).
    assert!(
        refused <= 2,
        "{refused} answers were 429: the lane hammers the limit"
    );
    eprintln!(
        "burst: 40 submitted in {submit_time:?}, all posted after {wall:?}, {refused} answers were 429"
    );
    // Nothing was lost on the way: every request is still waiting for a reviewer,
    // with its own message. The fake answering is not greenlight having recorded the
    // answer, so wait for the record rather than read it once.
    let recorded = wait_for_message_ts(&app, &submitted).await;
    for (id, body) in &recorded {
        assert_eq!(body["status"], "pending", "{id}");
    }
    let mut message_ts: Vec<&str> = recorded
        .iter()
        .filter_map(|(_, body)| body["message_ts"].as_str())
        .collect();
    message_ts.sort_unstable();
    message_ts.dedup();
    assert_eq!(message_ts.len(), 40, "one message each");
}

/// Polls each request until greenlight has recorded its Slack message (`message_ts`);
/// returns the approval objects in the order of `ids`. Fails after 10 s.
async fn wait_for_message_ts(app: &TestApp, ids: &[String]) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut recorded: Vec<Option<Value>> = vec![None; ids.len()];
    loop {
        for (id, slot) in ids.iter().zip(recorded.iter_mut()) {
            if slot.is_none() {
                let body = app.approval(id).await;
                if body["message_ts"].is_string() {
                    *slot = Some(body);
                }
            }
        }
        let missing: Vec<&String> = ids
            .iter()
            .zip(&recorded)
            .filter(|(_, slot)| slot.is_none())
            .map(|(id, _)| id)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no message_ts recorded for {} request(s), e.g. {}",
            missing.len(),
            missing[0]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ids.iter()
        .cloned()
        .zip(recorded.into_iter().flatten())
        .collect()
}

/// Slack rate-limits the channel for good: the request being posted is denied when
/// its deadline comes, and the one queued behind it, never attempted, expires with a
/// reason that says its message never went out and why, not "no decision".
#[tokio::test]
async fn unposted_requests_are_denied_naming_the_failure() {
    let app = spawn_app().await;
    app.slack.always(
        "chat.postMessage",
        Reply::RateLimited {
            retry_after_secs: 1,
        },
    );
    let mut first = request("echo first");
    first["timeout_secs"] = json!(3);
    let first = submit_id(&app, first).await;
    let mut second = request("echo second");
    second["timeout_secs"] = json!(2);
    let second = submit_id(&app, second).await;

    let queued = final_state(&app, &second).await;
    assert_eq!(queued["status"], "expired");
    assert_eq!(queued["approved"], false);
    let reason = queued["reason"].as_str().expect("reason");
    assert!(
        reason.contains("could not be posted") && reason.contains("rate-limiting chat.postMessage"),
        "{reason}"
    );
    assert!(!reason.contains("no decision"), "{reason}");
    let event = wait_for_event(&app, &second, "expired").await;
    assert_eq!(event["detail"]["never_posted"], true);
    assert_eq!(event["detail"]["post_error"], "ratelimited");

    let in_flight = final_state(&app, &first).await;
    assert_eq!(in_flight["approved"], false);
    let reason = in_flight["reason"].as_str().expect("reason");
    assert!(reason.contains("rate-limit"), "{reason}");
    // Every attempt was a 429 for the first request: the second never reached Slack.
    let posts = app.slack.calls_to("chat.postMessage");
    assert!(
        posts.iter().all(|c| approval_id_of(c) == first),
        "second was posted"
    );
}

#[tokio::test]
async fn chat_update_is_retried_after_5xx_and_429() {
    let app = spawn_app().await;
    app.slack.script(
        "chat.update",
        [
            Reply::Status(502),
            Reply::RateLimited {
                retry_after_secs: 1,
            },
        ],
    );
    let id = app.submit_and_post(request("echo hi")).await;
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    app.slack
        .wait_until(Duration::from_secs(10), "a landed chat.update", |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.update" && c.succeeded)
        })
        .await;
    assert_eq!(app.slack.calls_to("chat.update").len(), 3);
    let update = &app.slack.landed("chat.update")[0];
    assert!(update.body["blocks"].to_string().contains("Approved"));
    assert!(!event_kinds(&app, &id)
        .await
        .contains(&"slack_update_failed".to_owned()));
}

#[tokio::test]
async fn a_vanished_message_leaves_the_decision_and_an_audit_event() {
    for code in ["message_not_found", "cant_update_message"] {
        let app = spawn_app().await;
        app.slack.always("chat.update", Reply::Error(code));
        let id = app.submit_and_post(request("echo hi")).await;
        let ack = app.deny_with_reason(&id, "U0BOB", "wrong host").await;
        assert_eq!(ack.status, StatusCode::OK);
        let event = wait_for_event(&app, &id, "slack_update_failed").await;
        assert_eq!(event["detail"]["error"], code);
        let body = app.approval(&id).await;
        assert_eq!(body["status"], "denied", "{code}");
        assert_eq!(body["decided_by"], "U0BOB");
        // A permanent refusal is not retried.
        assert_eq!(app.slack.calls_to("chat.update").len(), 1, "{code}");
    }
}

/// Every mrkdwn text in a Block Kit value (plain_text is never parsed for mentions).
fn mrkdwn_texts(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if map.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                if let Some(text) = map.get("text").and_then(Value::as_str) {
                    out.push(text.to_owned());
                }
            }
            map.values().for_each(|v| mrkdwn_texts(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| mrkdwn_texts(v, out)),
        _ => {}
    }
}

/// The ``` sections of a message or view, fences included.
fn code_sections(blocks: &Value) -> Vec<String> {
    let mut texts = Vec::new();
    mrkdwn_texts(blocks, &mut texts);
    texts.retain(|t| t.starts_with("```") && t.ends_with("```"));
    texts
}

fn long_script(lines: usize) -> String {
    (1..=lines).map(|i| format!("echo line {i}\n")).collect()
}

#[tokio::test]
async fn a_400_line_script_shows_its_head_and_the_modal_has_every_line() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request(&long_script(400))).await;
    let post = app.slack.nth_call("chat.postMessage", 1).await;
    let message = post.body["blocks"].to_string();
    let shown = code_sections(&post.body["blocks"]);
    assert_eq!(shown.len(), 1);
    assert!(!shown[0].contains("echo line 400"));
    let hidden = 400 - shown[0].lines().count();
    assert!(
        message.contains(&format!("… {hidden} more lines not shown")),
        "{message}"
    );
    assert_eq!(
        crate::helpers::fake_slack::button_value(&post.body["blocks"], "greenlight_view_code"),
        Some(id.clone())
    );

    // Anyone in the channel may look; looking decides nothing.
    let ack = app.click(&id, "greenlight_view_code", "U0CAROL").await;
    assert_eq!(ack.status, StatusCode::OK);
    let open = app.slack.nth_call("views.open", 1).await;
    assert_eq!(open.body["trigger_id"], "1111.2222.abcd");
    let view = &open.body["view"];
    assert_eq!(view["type"], "modal");
    assert_eq!(view["private_metadata"], id);
    assert!(view["blocks"].as_array().expect("blocks").len() <= 100);
    let sections = code_sections(&view["blocks"]);
    assert!(sections.iter().all(|s| s.chars().count() <= 3000));
    assert!(sections.len() >= 2, "400 lines need more than one section");
    assert!(sections.last().expect("code").ends_with("echo line 400```"));
    let all_lines: usize = sections.iter().map(|s| s.lines().count()).sum();
    assert_eq!(all_lines, 400);

    let body = app.approval(&id).await;
    assert_eq!(body["status"], "pending");
    assert!(app.slack.calls_to("chat.update").is_empty());
    assert!(app.slack.calls_to("files.getUploadURLExternal").is_empty());
    assert!(!event_kinds(&app, &id).await.contains(&"decided".to_owned()));
}

#[tokio::test]
async fn an_unsigned_view_click_opens_nothing() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request(&long_script(400))).await;
    let payload = TestApp::click_payload(&id, "greenlight_view_code", "U0MALLORY");
    let (body, _) = TestApp::signed_form(&payload, chrono::Utc::now().timestamp());
    let answer = app
        .send_interaction(
            body,
            Some(chrono::Utc::now().timestamp().to_string()),
            Some("v0=00".into()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // A signed click right after proves the check above would have seen a modal.
    assert_eq!(
        app.click(&id, "greenlight_view_code", "U0CAROL")
            .await
            .status,
        StatusCode::OK
    );
    app.slack.nth_call("views.open", 1).await;
    assert_eq!(app.slack.calls_to("views.open").len(), 1);
}

/// Code far beyond a modal: the modal shows the head and points to the thread, where
/// the whole script arrives as a file, uploaded once, in Slack's three steps.
#[tokio::test]
async fn a_huge_script_is_uploaded_into_the_message_thread() {
    let app = spawn_app().await;
    let code: String = (1..=12_000)
        .map(|i| format!("echo padding padding {i:05}\n"))
        .collect();
    let id = app.submit_and_post(request(&code)).await;
    wait_for_event(&app, &id, "posted").await;
    let message_ts = app.approval(&id).await["message_ts"]
        .as_str()
        .expect("ts")
        .to_owned();

    assert_eq!(
        app.click(&id, "greenlight_view_code", "U0CAROL")
            .await
            .status,
        StatusCode::OK
    );
    app.slack.nth_call("files.completeUploadExternal", 1).await;
    let calls: Vec<_> = app
        .slack
        .calls()
        .into_iter()
        // The start-up token check is not part of this story.
        .filter(|c| c.method != "chat.postMessage" && c.method != "auth.test")
        .collect();
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "views.open",
            "files.getUploadURLExternal",
            "upload",
            "files.completeUploadExternal"
        ]
    );
    let view = &calls[0].body["view"];
    let blocks = view["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 100);
    assert!(blocks.last().expect("note").to_string().contains("thread"));
    let get_url = &calls[1].body;
    assert_eq!(get_url["length"], code.len().to_string());
    assert!(get_url["filename"].as_str().expect("name").ends_with(".sh"));
    let upload = &calls[2];
    assert_eq!(
        upload.authorization, None,
        "the bot token must not go to upload_url"
    );
    assert_eq!(upload.body["text"], code, "every byte, unescaped");
    let complete = &calls[3].body;
    assert_eq!(complete["channel_id"], crate::helpers::CHANNEL);
    assert_eq!(complete["thread_ts"], message_ts);
    let files: Value =
        serde_json::from_str(complete["files"].as_str().expect("files")).expect("json");
    assert_eq!(files[0]["id"], upload.body["file_id"]);
    let event = wait_for_event(&app, &id, "code_file_uploaded").await;
    assert_eq!(event["detail"]["file_id"], upload.body["file_id"]);
    assert_eq!(event["actor"], "U0CAROL");

    // A second look opens the modal again but does not upload the file twice.
    assert_eq!(
        app.click(&id, "greenlight_view_code", "U0DAVE")
            .await
            .status,
        StatusCode::OK
    );
    app.slack.nth_call("views.open", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.slack.calls_to("files.getUploadURLExternal").len(), 1);
    assert_eq!(app.approval(&id).await["status"], "pending");
}

/// Requester text full of mrkdwn tricks reaches Slack inert, in the message and in
/// both modals.
#[tokio::test]
async fn hostile_text_cannot_break_out_of_the_message_or_the_modals() {
    const TRICKS: &str = "<!channel> <@U123> <https://evil|click> ``` *x*";
    let app = spawn_app().await;
    let code: String = (0..200).map(|i| format!("echo {i} '{TRICKS}'\n")).collect();
    let body = json!({
        "code": code,
        "language": "bash",
        "title": format!("tidy {TRICKS}"),
        "context": [{"role": "user", "content": format!("please {TRICKS}")}, {"note": TRICKS}],
    });
    let id = app.submit_and_post(body).await;
    let post = app.slack.nth_call("chat.postMessage", 1).await;
    assert_eq!(
        app.click(&id, "greenlight_view_code", "U0CAROL")
            .await
            .status,
        StatusCode::OK
    );
    app.slack.nth_call("views.open", 1).await;
    assert_eq!(
        app.click(&id, "greenlight_view_context", "U0CAROL")
            .await
            .status,
        StatusCode::OK
    );
    app.slack.nth_call("views.open", 2).await;
    let opens = app.slack.calls_to("views.open");
    let callbacks: Vec<&Value> = opens
        .iter()
        .map(|c| &c.body["view"]["callback_id"])
        .collect();
    assert!(callbacks.contains(&&json!("greenlight_code_view")));
    assert!(callbacks.contains(&&json!("greenlight_context_view")));

    let mut texts = vec![post.body["text"].as_str().expect("text").to_owned()];
    mrkdwn_texts(&post.body["blocks"], &mut texts);
    for open in &opens {
        mrkdwn_texts(&open.body["view"], &mut texts);
    }
    assert!(
        texts.iter().any(|t| t.contains("&lt;!channel&gt;")),
        "the tricks were shown, escaped"
    );
    for text in &texts {
        assert!(!text.replace("<!date^", "").contains("<!"), "{text}");
        assert!(!text.contains("<@U123>"), "{text}");
        assert!(!text.contains("<https"), "{text}");
    }
    let mut sections = code_sections(&post.body["blocks"]);
    for open in &opens {
        sections.extend(code_sections(&open.body["view"]["blocks"]));
    }
    assert!(sections.len() >= 3);
    for section in &sections {
        let inner = &section[3..section.len() - 3];
        assert!(!inner.contains("```"), "{inner:?}");
    }
    assert_eq!(app.approval(&id).await["status"], "pending");
}
