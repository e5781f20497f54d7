//! A click on a request that is already final, on the review page: whichever button,
//! and however it ended (another reviewer decided, its agent withdrew it), the answer
//! is 409 `already_decided` with a message that says how it ended, as the agent API
//! answers for a decided request; 403 stays for a reviewer who has no say.

use reqwest::StatusCode;

use super::server::{hidden_value, page, post_form, request, sign_in_with_secret, WebServer};
use crate::helpers::AGENT_TOKEN;

const REVIEWERS: &str = "alice:alice-secret-0123456789,bob:bob-secret-0123456789";

/// Both buttons, clicked by `session` with `csrf` on request `id`: each answers 409
/// `already_decided` with a page whose note contains `says`.
async fn both_buttons_conflict(
    server: &WebServer,
    session: &str,
    csrf: &str,
    id: &str,
    says: &str,
) {
    let base = server.url("");
    for (button, fields) in [
        ("deny", &[("reason", "too risky")][..]),
        ("approve", &[][..]),
    ] {
        let late = post_form(
            &server.http,
            &base,
            &format!("/web/requests/{id}/{button}"),
            session,
            csrf,
            fields,
        )
        .await;
        assert_eq!(late.status(), StatusCode::CONFLICT, "{button}");
        let html = late.text().await.expect("html");
        assert!(
            html.contains("id=\"note\" data-code=\"already_decided\""),
            "{button}: {html}"
        );
        assert!(html.contains(says), "{button}: {html}");
    }
}

#[tokio::test]
async fn a_click_on_a_final_request_is_a_conflict_whichever_button() {
    let server = WebServer::start(&[("GREENLIGHT_REVIEWERS", REVIEWERS)]).await;
    let base = server.url("");
    let alice = sign_in_with_secret(&server.http, &base, "alice-secret-0123456789").await;
    let bob = sign_in_with_secret(&server.http, &base, "bob-secret-0123456789").await;

    // Both open the request while it is pending; Alice approves first.
    let id = server.submit(request("Clean the cache")).await;
    let path = format!("/web/requests/{id}");
    let (_, bobs_page) = page(&server.http, &base, &path, &bob).await;
    let bob_csrf = hidden_value(&bobs_page, "csrf");
    let (_, alices_page) = page(&server.http, &base, &path, &alice).await;
    let approved = post_form(
        &server.http,
        &base,
        &format!("{path}/approve"),
        &alice,
        &hidden_value(&alices_page, "csrf"),
        &[],
    )
    .await;
    assert_eq!(approved.status(), StatusCode::SEE_OTHER);
    both_buttons_conflict(
        &server,
        &bob,
        &bob_csrf,
        &id,
        "already approved by web:alice",
    )
    .await;
    assert_eq!(server.wait(&id, 0).await["status"], "approved");

    // Withdrawn by its agent while the page was open: the same answer.
    let withdrawn = server.submit(request("Rotate the logs")).await;
    let cancel = server
        .http
        .post(server.url(&format!("/v1/approvals/{withdrawn}/cancel")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("cancel");
    assert!(cancel.status().is_success(), "{}", cancel.status());
    both_buttons_conflict(&server, &bob, &bob_csrf, &withdrawn, "already cancelled").await;
    assert_eq!(server.wait(&withdrawn, 0).await["status"], "cancelled");
}
