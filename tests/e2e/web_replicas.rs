//! The review page on several replicas sharing one PostgreSQL database, with no
//! sticky sessions: a sign-in link printed by one replica works on another, the
//! session it gives works on a third (pages and a CSRF-protected Approve), one link
//! used on two replicas at once gives exactly one session, and the sign-in limit is
//! one limit, not one per replica.
//!
//! Like `replicas`, these need PostgreSQL and never skip: on the SQLite run they start
//! a server of their own.

use std::collections::HashMap;

use reqwest::StatusCode;

use crate::{
    helpers::{database, AGENT_TOKEN},
    replicas::Server,
    web::server::{
        hidden_value, link_form, link_token, page, post_form, post_link, request, WebServer,
    },
};

/// `n` replicas without Slack (the local reviewer) on a fresh database of `server`.
async fn replicas(server: &Server, n: usize) -> Vec<WebServer> {
    let env: HashMap<String, String> = HashMap::from([
        ("GREENLIGHT_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "GREENLIGHT_API_TOKENS".into(),
            format!("ci-bot:{AGENT_TOKEN}"),
        ),
        (
            "GREENLIGHT_DATABASE_URL".into(),
            database::fresh(&server.url),
        ),
        ("RUST_LOG".into(), "info".into()),
    ]);
    let mut started = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().expect("tempdir");
        started.push(WebServer::start_in(dir, &env).await);
    }
    started
}

#[tokio::test]
async fn a_link_from_one_replica_signs_in_on_another_and_the_session_works_on_a_third() {
    let server = Server::get();
    let nodes = replicas(&server, 3).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let id = a.submit(request("Rotate the logs")).await;

    // A printed the link; B takes it.
    let token = link_token(&a.printed_link());
    let form = link_form(&b.http, &b.url(""), &token)
        .await
        .expect("B knows A's link");
    let (status, session) = post_link(&b.http, &b.url(""), &form, &token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = session.expect("session");
    // Used up on every replica.
    for node in [a, b, c] {
        assert!(link_form(&node.http, &node.url(""), &token).await.is_none());
    }

    // C serves the pages to that session, and takes its CSRF-protected Approve.
    let (status, html) = page(&c.http, &c.url(""), "/web", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Rotate the logs"), "{html}");
    let (status, html) = page(
        &c.http,
        &c.url(""),
        &format!("/web/requests/{id}"),
        &session,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csrf = hidden_value(&html, "csrf");
    let csrfless = post_form(
        &c.http,
        &c.url(""),
        &format!("/web/requests/{id}/approve"),
        &session,
        "",
        &[],
    )
    .await;
    assert_eq!(csrfless.status(), StatusCode::FORBIDDEN);
    let approve = post_form(
        &c.http,
        &c.url(""),
        &format!("/web/requests/{id}/approve"),
        &session,
        &csrf,
        &[],
    )
    .await;
    assert_eq!(approve.status(), StatusCode::SEE_OTHER);
    assert_eq!(a.wait(&id, 0).await["status"], "approved");

    // Signed out on A: signed out on all.
    let (_, html) = page(&a.http, &a.url(""), "/web", &session).await;
    let out = post_form(
        &a.http,
        &a.url(""),
        "/web/signout",
        &session,
        &hidden_value(&html, "csrf"),
        &[],
    )
    .await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    for node in [a, b, c] {
        let (status, _) = page(&node.http, &node.url(""), "/web", &session).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
}

#[tokio::test]
async fn one_link_used_on_two_replicas_at_once_gives_one_session() {
    let server = Server::get();
    let nodes = replicas(&server, 3).await;
    // Every replica printed a link: each is raced by the two other replicas.
    for (i, printer) in nodes.iter().enumerate() {
        let token = link_token(&printer.printed_link());
        let (x, y) = (&nodes[(i + 1) % 3], &nodes[(i + 2) % 3]);
        let fx = link_form(&x.http, &x.url(""), &token).await.expect("valid");
        let fy = link_form(&y.http, &y.url(""), &token).await.expect("valid");
        let (bx, by) = (x.url(""), y.url(""));
        let (rx, ry) = tokio::join!(
            post_link(&x.http, &bx, &fx, &token),
            post_link(&y.http, &by, &fy, &token)
        );
        let sessions: Vec<String> = [rx.clone(), ry.clone()]
            .into_iter()
            .filter_map(|(_, cookie)| cookie)
            .collect();
        assert_eq!(sessions.len(), 1, "exactly one session: {rx:?} {ry:?}");
        let mut statuses = [rx.0, ry.0];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::SEE_OTHER, StatusCode::GONE]);
        let (status, _) = page(&printer.http, &printer.url(""), "/web", &sessions[0]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let url = nodes[0].database_url().expect("url");
    let rows = database::count(&url, "SELECT COUNT(*) FROM web_sessions").await;
    assert_eq!(rows, 3, "one session per link");
    let rows = database::count(&url, "SELECT COUNT(*) FROM web_links").await;
    assert_eq!(rows, 0, "every link used up");
}

/// Wrong sign-in links used up the limit on one replica: the next wrong one on another
/// replica is refused for the limit too, so N replicas do not allow N times the
/// guesses. (A valid link is never refused for the limit: `web::auth::link`.)
#[tokio::test]
async fn the_sign_in_limit_is_shared_by_the_replicas() {
    let server = Server::get();
    let nodes = replicas(&server, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Each replica's confirm form (its CSRF pair), from the printed link's page.
    let token = link_token(&a.printed_link());
    let form_a = link_form(&a.http, &a.url(""), &token)
        .await
        .expect("A's form");
    let form_b = link_form(&b.http, &b.url(""), &token)
        .await
        .expect("B's form");
    let wrong = "0".repeat(token.len());
    for n in 0..greenlight::web::SIGN_INS_PER_MINUTE {
        let (status, session) = post_link(&a.http, &a.url(""), &form_a, &wrong).await;
        assert_eq!(status, StatusCode::GONE, "wrong link {n} on A");
        assert!(session.is_none());
    }
    let (status, session) = post_link(&b.http, &b.url(""), &form_b, &wrong).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "B let a wrong link through after A's limit was used up"
    );
    assert!(session.is_none());
    // The printed link itself still signs in.
    let (status, session) = post_link(&b.http, &b.url(""), &form_b, &token).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(session.is_some());
}
