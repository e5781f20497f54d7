//! Review-page sessions and sign-in links live in the database: they survive a
//! restart of the binary, and a session names its reviewer by name and identity, so a
//! restarted (or another) process whose reviewers changed refuses it.

use reqwest::StatusCode;

use super::server::{
    hidden_value, link_form, link_token, page, post_form, post_link, request, sign_in_with_secret,
    WebServer,
};

const ALICE: &str = "alice:alice-secret-0123456789";
const BOB: &str = "bob:bob-secret-0123456789";

/// Whether `session` is signed in on `server` as `name` (the page's header says so);
/// `false` when the page sends it to sign in.
async fn signed_in_as(server: &WebServer, session: &str, name: &str) -> bool {
    let (status, html) = page(&server.http, &server.url(""), "/web", session).await;
    match status {
        StatusCode::OK => {
            assert!(html.contains(&format!("id=\"me\">{name}<")), "{html}");
            true
        }
        StatusCode::SEE_OTHER => false,
        other => panic!("unexpected {other}: {html}"),
    }
}

#[tokio::test]
async fn sessions_and_printed_links_survive_a_restart() {
    let server = WebServer::start(&[]).await;
    let base = server.url("");
    let first = link_token(&server.printed_link());
    let form = link_form(&server.http, &base, &first).await.expect("valid");
    let (status, session) = post_link(&server.http, &base, &form, &first).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = session.expect("session");
    let id = server.submit(request("Clean the cache")).await;
    let (_, html) = page(
        &server.http,
        &base,
        &format!("/web/requests/{id}"),
        &session,
    )
    .await;
    let csrf = hidden_value(&html, "csrf");

    // kill -9, start again on the same database: still signed in, and the form
    // fetched before the restart still carries a valid CSRF token.
    let server = server.restart(&[]).await;
    let base = server.url("");
    assert!(signed_in_as(&server, &session, "local").await);
    let second = link_token(&server.printed_link());
    let approve = post_form(
        &server.http,
        &base,
        &format!("/web/requests/{id}/approve"),
        &session,
        &csrf,
        &[],
    )
    .await;
    assert_eq!(approve.status(), StatusCode::SEE_OTHER);
    assert_eq!(server.wait(&id, 0).await["status"], "approved");

    // A link printed before a restart works after it, once; the used one never again.
    let server = server.restart(&[]).await;
    let base = server.url("");
    assert!(link_form(&server.http, &base, &first).await.is_none());
    let form = link_form(&server.http, &base, &second)
        .await
        .expect("valid");
    let (status, again) = post_link(&server.http, &base, &form, &second).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(signed_in_as(&server, &again.expect("session"), "local").await);
    let (status, none) = post_link(&server.http, &base, &form, &second).await;
    assert_eq!((status, none), (StatusCode::GONE, None));
    assert!(signed_in_as(&server, &session, "local").await);

    // Signing out ends the session on every later start too.
    let (_, html) = page(&server.http, &base, "/web", &session).await;
    let out = post_form(
        &server.http,
        &base,
        "/web/signout",
        &session,
        &hidden_value(&html, "csrf"),
        &[],
    )
    .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let server = server.restart(&[]).await;
    assert!(!signed_in_as(&server, &session, "local").await);
}

#[tokio::test]
async fn a_session_ends_when_its_reviewer_is_removed_or_changed() {
    let reviewers = format!("{ALICE},{BOB}");
    let server = WebServer::start(&[("GREENLIGHT_REVIEWERS", &reviewers)]).await;
    let base = server.url("");
    let alice = sign_in_with_secret(&server.http, &base, "alice-secret-0123456789").await;
    let bob = sign_in_with_secret(&server.http, &base, "bob-secret-0123456789").await;

    // Reordered: the sessions name reviewers, not positions.
    let reordered = format!("{BOB},{ALICE}");
    let server = server
        .restart(&[("GREENLIGHT_REVIEWERS", &reordered)])
        .await;
    assert!(signed_in_as(&server, &alice, "alice").await);
    assert!(signed_in_as(&server, &bob, "bob").await);

    // Alice's secret changes: her sessions end, Bob's stay.
    let rotated = format!("{BOB},alice:alice-rotated-0123456789");
    let server = server.restart(&[("GREENLIGHT_REVIEWERS", &rotated)]).await;
    assert!(!signed_in_as(&server, &alice, "alice").await);
    assert!(signed_in_as(&server, &bob, "bob").await);
    let alice =
        sign_in_with_secret(&server.http, &server.url(""), "alice-rotated-0123456789").await;

    // Bob is removed; Alice gets a Slack user id (another identity): both end.
    let server = server
        .restart(&[(
            "GREENLIGHT_REVIEWERS",
            "alice:U0ALICE:alice-rotated-0123456789",
        )])
        .await;
    assert!(!signed_in_as(&server, &bob, "bob").await);
    assert!(!signed_in_as(&server, &alice, "alice").await);
    // A POST with a removed reviewer's cookie is refused as not signed in.
    let id = server.submit(request("Clean the cache")).await;
    let post = post_form(
        &server.http,
        &server.url(""),
        &format!("/web/requests/{id}/approve"),
        &bob,
        "any",
        &[],
    )
    .await;
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.wait(&id, 0).await["status"], "pending");
}
