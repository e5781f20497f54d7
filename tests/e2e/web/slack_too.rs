//! The page as a second surface beside Slack (the fake one): the first decision wins
//! across both, a web decision rewrites the Slack message, a Slack click reaches an
//! open page over server-sent events, and the audit trail names the surface.

use reqwest::{header, StatusCode};
use serde_json::Value;

use super::server::{hidden_value, sign_in_with_secret};
use crate::helpers::{request, spawn_app_with};

#[tokio::test]
async fn web_and_slack_decide_the_same_requests() {
    let app =
        spawn_app_with(&[("GREENLIGHT_REVIEWERS", "dana:U0DANA:dana-secret-0123456789")]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = app.url("");
    let session = sign_in_with_secret(&http, &base, "dana-secret-0123456789").await;

    // Decided on the web: the Slack message is rewritten, the trail says "web".
    let id = app.submit_and_post(request("ls /tmp")).await;
    let page = http
        .get(app.url(&format!("/web/requests/{id}")))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let csrf = hidden_value(&page, "csrf");
    let approve = http
        .post(app.url(&format!("/web/requests/{id}/approve")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("approve");
    assert_eq!(approve.status(), StatusCode::SEE_OTHER);
    app.wait_for_update("the message rewritten after a web decision", |call| {
        call.body.to_string().contains(&id) || call.body["text"].to_string().contains("pproved")
    })
    .await;
    let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
    let web_decision = decided(&events);
    assert_eq!(web_decision["detail"]["surface"], "web", "{web_decision}");

    // An open page follows a decision made in Slack, live.
    let mut stream = http
        .get(app.url("/web/events"))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("events");
    let first = stream.chunk().await.expect("bytes").expect("first event");
    assert!(String::from_utf8_lossy(&first).contains("event: pending"));
    let id2 = app.submit_and_post(request("ls /var")).await;
    let clicked = app.approve(&id2, "U0SLACKER").await;
    assert_eq!(clicked.status, StatusCode::OK);
    let wanted = format!("event: request-{id2}");
    let mut seen = String::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(chunk) = stream.chunk().await.expect("bytes") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(&wanted) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen}");
    let events = app.get(&format!("/v1/approvals/{id2}/events")).await.body;
    assert_eq!(decided(&events)["detail"]["surface"], "slack");

    // The first decision won: a later denial on the web changes nothing, and is told
    // so as a conflict (not as having no say).
    let deny = http
        .post(app.url(&format!("/web/requests/{id2}/deny")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", csrf.as_str()), ("reason", "too late")])
        .send()
        .await
        .expect("deny");
    assert_eq!(deny.status(), StatusCode::CONFLICT);
    let html = deny.text().await.expect("html");
    assert!(html.contains("already approved by U0SLACKER"), "{html}");
    assert_eq!(app.approval(&id2).await["status"], "approved");
}

fn decided(events: &Value) -> Value {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "decided")
        .cloned()
        .unwrap_or_else(|| panic!("no decided event in {events}"))
}
