//! Standing grants on the review page: listed under the pending requests, and revoked
//! with the page's own CSRF-protected form by a reviewer with a say over the grant; in
//! force before the next request is answered.

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::server::{hidden_value, page, post_form, sign_in_with_secret};
use crate::helpers::{spawn_app_with_policy, AGENT_TOKEN};

const POLICY: &str = r#"
[[rule]]
name = "tests"
code = '^cargo test'
approvers = ["U0ALICE"]
grant_max_secs = 3600
grant_durations_secs = [1800]
"#;

const REVIEWERS: &str =
    "alice:U0ALICE:alice-secret-0123456789,carol:U0CAROL:carol-secret-0123456789";

#[tokio::test]
async fn a_grant_is_shown_and_revoked_from_the_page() {
    let app = spawn_app_with_policy(POLICY, &[("GREENLIGHT_REVIEWERS", REVIEWERS)]).await;
    let submit = || async {
        app.submit_as(
            AGENT_TOKEN,
            "",
            json!({ "code": "cargo test --workspace", "language": "bash" }),
        )
        .await
    };
    // Alice makes a 30-minute grant from Slack.
    let first = submit().await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    let id = first.body["id"].as_str().expect("id").to_owned();
    let click = app.click(&id, "greenlight_grant_1800", "U0ALICE").await;
    assert_eq!(click.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "approved");
    let covered = submit().await;
    assert_eq!(covered.body["status"], "approved", "the grant is in force");
    let grants = app.get("/v1/grants").await.body;
    let grant = grants["grants"][0]["id"]
        .as_str()
        .expect("grant")
        .to_owned();

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = app.url("");
    let carol = sign_in_with_secret(&http, &base, "carol-secret-0123456789").await;
    let alice = sign_in_with_secret(&http, &base, "alice-secret-0123456789").await;
    let revoke = format!("/web/grants/{grant}/revoke");

    // Listed: agent, rule, what it covers, who made it, until when; a Revoke button.
    let (status, html) = page(&http, &base, "/web", &alice).await;
    assert_eq!(status, StatusCode::OK);
    for shown in [
        "agent ci-bot",
        "rule tests",
        "same code: cargo test --workspace",
        "granted by alice (U0ALICE)",
        &format!("id=\"revoke-{grant}\""),
        &format!("action=\"{revoke}\""),
    ] {
        assert!(html.contains(shown), "{shown} not in {html}");
    }
    let alice_csrf = hidden_value(&html, "csrf");

    // No CSRF token, or another session's: refused, nothing revoked.
    let (_, carol_page) = page(&http, &base, "/web", &carol).await;
    let carol_csrf = hidden_value(&carol_page, "csrf");
    for (session, csrf) in [(&alice, ""), (&alice, carol_csrf.as_str())] {
        let post = post_form(&http, &base, &revoke, session, csrf, &[]).await;
        assert_eq!(post.status(), StatusCode::FORBIDDEN);
        let body: Value = post.json().await.expect("json");
        assert_eq!(body["error"]["code"], "csrf", "{body}");
    }
    // Carol is neither its maker nor an approver of its rule.
    let post = post_form(&http, &base, &revoke, &carol, &carol_csrf, &[]).await;
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    let html = post.text().await.expect("html");
    assert!(html.contains("You may not revoke this grant"), "{html}");
    assert_eq!(submit().await.body["status"], "approved", "still in force");
    // An unknown grant.
    let post = post_form(
        &http,
        &base,
        "/web/grants/nope/revoke",
        &alice,
        &alice_csrf,
        &[],
    )
    .await;
    assert_eq!(post.status(), StatusCode::NOT_FOUND);

    // Alice revokes it: in force before the next request is answered.
    let post = post_form(&http, &base, &revoke, &alice, &alice_csrf, &[]).await;
    assert_eq!(post.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        post.headers()[reqwest::header::LOCATION],
        "/web?note=revoked"
    );
    let after = submit().await;
    assert_eq!(after.status, StatusCode::ACCEPTED, "{:?}", after.body);
    assert_eq!(after.body["status"], "pending");
    let (_, html) = page(&http, &base, "/web?note=revoked", &alice).await;
    assert!(html.contains("The standing grant is revoked"), "{html}");
    assert!(html.contains("id=\"no-grants\""), "{html}");
    let all = app.get("/v1/grants?all=true").await.body;
    assert_eq!(all["grants"][0]["revoked_by"], "U0ALICE", "{all}");
}
