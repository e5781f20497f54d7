//! What the sign-in pages offer matches how reviewers can sign in: with only the local
//! reviewer (no `GREENLIGHT_REVIEWERS`, as in the README's quick start) nobody has a
//! secret, so the pages point to the link `serve` prints and never ask for a secret;
//! with configured reviewers, who sign in with their secrets and get no printed link,
//! the pages ask for a secret and never point to a link.

use reqwest::StatusCode;

use super::server::{link_form, link_token, post_link, set_cookie_pair, WebServer};

/// `GET path` without a session: the status and the page.
async fn get(server: &WebServer, path: &str) -> (StatusCode, String) {
    let response = server.http.get(server.url(path)).send().await.expect("get");
    let status = response.status();
    (status, response.text().await.expect("html"))
}

#[tokio::test]
async fn without_reviewer_secrets_the_pages_point_to_the_printed_link() {
    let server = WebServer::start(&[]).await;
    let base = server.url("");

    let (status, html) = get(&server, "/web/signin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("id=\"secret\""), "no secret form: {html}");
    assert!(!html.contains("reviewer secret"), "{html}");
    assert!(
        html.contains("one-time sign-in link")
            && html.contains("restart <code>greenlight serve</code>"),
        "{html}"
    );

    // A used link says what gives a new one, and nothing about secrets.
    let token = link_token(&server.printed_link());
    let form = link_form(&server.http, &base, &token).await.expect("link");
    let (status, session) = post_link(&server.http, &base, &form, &token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(session.is_some());
    let (status, html) = get(&server, &format!("/web/link/{token}")).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(!html.contains("secret"), "{html}");
    assert!(
        html.contains("wrong, already used or expired")
            && html.contains("restart greenlight serve"),
        "{html}"
    );

    // A secret posted anyway (an old form, a script) signs nobody in, and the answer
    // says why. (The page has no form: the sign-in CSRF token is its cookie's value.)
    let page = server
        .http
        .get(server.url("/web/signin"))
        .send()
        .await
        .expect("page");
    let pre = set_cookie_pair(&page, "gl_signin").expect("cookie");
    let csrf = pre.split_once('=').expect("name=value").1.to_owned();
    let posted = server
        .http
        .post(server.url("/web/signin"))
        .header(reqwest::header::COOKIE, pre)
        .form(&[
            ("csrf", csrf.as_str()),
            ("secret", "guess-0123456789abcdef"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie_pair(&posted, "gl_session").is_none());
    let html = posted.text().await.expect("html");
    assert!(html.contains("No reviewer has a secret"), "{html}");
    assert!(!html.contains("id=\"secret\""), "{html}");
}

#[tokio::test]
async fn with_reviewer_secrets_the_pages_ask_for_a_secret() {
    let server =
        WebServer::start(&[("GREENLIGHT_REVIEWERS", "alice:alice-secret-0123456789")]).await;
    let (status, html) = get(&server, "/web/signin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"secret\""), "{html}");
    assert!(
        !html.contains("one-time sign-in link"),
        "serve prints none: {html}"
    );
    let (status, html) = get(&server, "/web/link/not-a-real-token").await;
    assert_eq!(status, StatusCode::GONE);
    assert!(html.contains("reviewer secret"), "{html}");
    assert!(!html.contains("restart greenlight serve"), "{html}");
}
