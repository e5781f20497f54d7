//! The review page over plain HTTP, without Slack: what is refused without a session,
//! cookies, links, CSRF, the sign-in rate limit, and that nothing waits for Slack.

use reqwest::{header, StatusCode};
use serde_json::Value;

use super::server::{request, WebServer};

/// Follows the printed link like a browser (GET the page, POST its form); returns the
/// session cookie (`gl_session=…`) and the response to the POST.
async fn sign_in_with_link(server: &WebServer, link: &str) -> (Option<String>, reqwest::Response) {
    let page = server.http.get(link).send().await.expect("link page");
    assert_eq!(page.status(), StatusCode::OK);
    let pre = cookie_pair(&page, "gl_signin").expect("sign-in cookie");
    let html = page.text().await.expect("html");
    let csrf = hidden(&html, "csrf");
    let token = hidden(&html, "token");
    let response = server
        .http
        .post(server.url("/web/link"))
        .header(header::COOKIE, pre)
        .form(&[("csrf", csrf.as_str()), ("token", token.as_str())])
        .send()
        .await
        .expect("sign in");
    (cookie_pair(&response, "gl_session"), response)
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

fn cookie_pair(response: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(response)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")) && !c.starts_with(&format!("{name}=;")))
        .and_then(|c| c.split(';').next().map(str::to_owned))
}

/// The value of the first hidden input named `name`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

#[tokio::test]
async fn without_slack_it_starts_and_the_page_needs_a_session() {
    let server = WebServer::start(&[]).await;
    assert!(
        server.review_line.contains("/web/link/") && server.review_line.contains("one-time"),
        "{}",
        server.review_line
    );
    // Ready without Slack; no interactivity endpoint to forge clicks against.
    let ready: Value = server
        .http
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["slack_auth"], "not configured");
    let slack = server
        .http
        .post(server.url("/slack/interactions"))
        .body("payload=%7B%7D")
        .send()
        .await
        .expect("post");
    assert_eq!(slack.status(), StatusCode::NOT_FOUND);

    let id = server.submit(request("Clean the cache")).await;
    for path in [
        "/web".to_owned(),
        "/web/history".to_owned(),
        "/web/events".to_owned(),
        format!("/web/requests/{id}"),
        format!("/web/requests/{id}/status"),
    ] {
        let response = server
            .http
            .get(server.url(&path))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(
            response.headers()[header::LOCATION],
            "/web/signin",
            "{path}"
        );
    }
    let post = server
        .http
        .post(server.url(&format!("/web/requests/{id}/approve")))
        .form(&[("csrf", "anything")])
        .send()
        .await
        .expect("post");
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    let body: Value = post.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "not_signed_in");
    // A forged session cookie is no session.
    let forged = server
        .http
        .get(server.url("/web"))
        .header(header::COOKIE, "gl_session=0123456789abcdef")
        .send()
        .await
        .expect("get");
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);

    // Signing in with the printed link: a session cookie with the right flags.
    let link = server.printed_link();
    let (session, response) = sign_in_with_link(&server, &link).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let session = session.expect("session cookie");
    let flags = set_cookies(&response)
        .into_iter()
        .find(|c| c.starts_with("gl_session="))
        .expect("set-cookie");
    assert!(
        flags.contains("HttpOnly")
            && flags.contains("SameSite=Strict")
            && !flags.contains("Secure"),
        "{flags}"
    );
    let page = server
        .http
        .get(server.url("/web"))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.expect("html");
    assert!(html.contains("Clean the cache"), "{html}");
    assert!(
        !html.contains("https://"),
        "loads nothing from elsewhere: {html}"
    );

    // The link works once; a wrong one gets the same single message.
    for link in [link.clone(), server.url("/web/link/not-a-real-token")] {
        let again = server.http.get(&link).send().await.expect("again");
        assert_eq!(again.status(), StatusCode::GONE);
        let text = again.text().await.expect("html");
        assert!(text.contains("wrong, already used or expired"), "{text}");
    }

    // A POST without the CSRF token changes nothing.
    let csrfless = server
        .http
        .post(server.url(&format!("/web/requests/{id}/approve")))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("post");
    assert_eq!(csrfless.status(), StatusCode::FORBIDDEN);
    let wrong = server
        .http
        .post(server.url(&format!("/web/requests/{id}/deny")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", "not-the-token"), ("reason", "no")])
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let state = server.wait(&id, 0).await;
    assert_eq!(state["status"], "pending", "{state}");

    // Nothing was queued for a Slack that does not exist.
    let db = rusqlite_count(&server, "SELECT COUNT(*) FROM outbox").await;
    assert_eq!(db, 0, "outbox rows without Slack");
    assert!(!server.stderr().contains("ERROR"), "{}", server.stderr());
}

/// Counts rows in the server's database, read-only beside it.
async fn rusqlite_count(server: &WebServer, sql: &str) -> i64 {
    crate::helpers::database::count(&crate::helpers::database::url(&server.db_path()), sql).await
}

#[tokio::test]
async fn wrong_secrets_are_refused_and_sign_in_is_rate_limited() {
    let server = WebServer::start(&[
        ("GREENLIGHT_REVIEWERS", "alice:alice-secret-0123456789"),
        ("GREENLIGHT_PUBLIC_URL", "https://review.example.com"),
    ])
    .await;
    assert!(
        server
            .review_line
            .contains("https://review.example.com/web")
            && !server.review_line.contains("/web/link/"),
        "{}",
        server.review_line
    );
    let form_page = server
        .http
        .get(server.url("/web/signin"))
        .send()
        .await
        .expect("page");
    let pre = cookie_pair(&form_page, "gl_signin").expect("cookie");
    let csrf = hidden(&form_page.text().await.expect("html"), "csrf");
    let attempt = |secret: &'static str, with_csrf: bool| {
        let request = server
            .http
            .post(server.url("/web/signin"))
            .header(header::COOKIE, pre.clone());
        let csrf = if with_csrf {
            csrf.clone()
        } else {
            String::new()
        };
        async move {
            request
                .form(&[("csrf", csrf.as_str()), ("secret", secret)])
                .send()
                .await
                .expect("post")
        }
    };
    assert_eq!(
        attempt("alice-secret-0123456789", false).await.status(),
        StatusCode::FORBIDDEN,
        "sign-in without its CSRF token"
    );
    let good = attempt("alice-secret-0123456789", true).await;
    assert_eq!(good.status(), StatusCode::SEE_OTHER);
    let flags = set_cookies(&good)
        .into_iter()
        .find(|c| c.starts_with("gl_session="))
        .expect("set-cookie");
    assert!(flags.contains("; Secure"), "https public URL: {flags}");
    let mut statuses = Vec::new();
    for _ in 0..greenlight::web::SIGN_INS_PER_MINUTE {
        statuses.push(attempt("wrong-secret-0123456789", true).await.status());
    }
    assert!(statuses.contains(&StatusCode::UNAUTHORIZED), "{statuses:?}");
    let limited = attempt("alice-secret-0123456789", true).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key(header::RETRY_AFTER));
}

/// `cp .env.example .env` and `greenlight serve`, as README's first command says: it
/// starts without Slack, prints a sign-in link, and the example agent token works.
#[tokio::test]
async fn the_example_env_file_works_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
    std::fs::copy(example, dir.path().join(".env")).expect("copy .env.example");
    // Only the port differs from the file (the environment wins over .env): tests run
    // side by side.
    let env = std::collections::HashMap::from([(
        "GREENLIGHT_LISTEN".to_owned(),
        "127.0.0.1:0".to_owned(),
    )]);
    let server = WebServer::start_in(dir, &env).await;
    assert!(
        server.review_line.contains("/web/link/"),
        "{}",
        server.review_line
    );
    let answer = server
        .http
        .post(server.url("/v1/approvals"))
        .bearer_auth("change-me-to-a-long-random-token")
        .json(&request("From the README"))
        .send()
        .await
        .expect("submit");
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
}

/// `greenlight doctor` without Slack settings: Slack is reported as not configured,
/// the database is checked, and nothing fails.
#[tokio::test]
async fn doctor_without_slack_checks_the_database_and_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = std::collections::HashMap::from([
        (
            "GREENLIGHT_API_TOKENS".to_owned(),
            format!("ci-bot:{}", crate::helpers::AGENT_TOKEN),
        ),
        (
            "GREENLIGHT_DATABASE_URL".to_owned(),
            format!("sqlite://{}", dir.path().join("none.db").display()),
        ),
    ]);
    let (code, stdout, stderr) = crate::helpers::binary::run(&env, dir.path(), &["doctor"]).await;
    assert!(stdout.contains("slack: not configured"), "{stdout}{stderr}");
    assert!(!stdout.contains("bot token"), "{stdout}");
    // The database does not exist yet: reported, not made.
    assert!(stdout.contains("does not exist yet"), "{stdout}");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!dir.path().join("none.db").exists());

    // A policy that serve would refuse fails doctor too, Slack or not.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"two of one\"\napprovers = [\"web:alice\"]\nrequired_approvals = 2\n",
    )
    .expect("policy");
    let mut env = env;
    env.insert("GREENLIGHT_POLICY".to_owned(), policy.display().to_string());
    let (code, stdout, stderr) = crate::helpers::binary::run(&env, dir.path(), &["doctor"]).await;
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("two of one")),
        "{stdout}{stderr}"
    );
    assert_eq!(code, 1, "{stdout}{stderr}");

    // A user group cannot be read without Slack, so a rule only it may decide could
    // never be decided: serve refuses it at start, and doctor fails, instead of every
    // request expiring.
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"sre\"\napprovers = [\"S0SRE\"]\n",
    )
    .expect("policy");
    let (code, stdout, stderr) = crate::helpers::binary::run(&env, dir.path(), &["doctor"]).await;
    assert!(
        stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains("rule \"sre\"")
            && l.contains("Slack is not configured")),
        "{stdout}{stderr}"
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
}

/// The requester may not approve their own request on the page either (no button, and
/// a posted approval is refused), but may deny it.
#[tokio::test]
async fn no_self_approval_on_the_page() {
    // Bob is there so that someone else could approve (alone, alice's own request
    // could never be approved, and is refused at submit).
    let server = WebServer::start(&[(
        "GREENLIGHT_REVIEWERS",
        "alice:U0ALICE:alice-secret-0123456789,bob:bob-secret-0123456789",
    )])
    .await;
    let mut body = request("My own deploy");
    body["requester_slack_id"] = serde_json::json!("U0ALICE");
    let id = server.submit(body).await;
    let base = server.url("");
    let session =
        super::server::sign_in_with_secret(&server.http, &base, "alice-secret-0123456789").await;
    let page = server
        .http
        .get(server.url(&format!("/web/requests/{id}")))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("id=\"cannot-approve\""), "{page}");
    assert!(!page.contains("id=\"approve\""), "{page}");
    assert!(page.contains("id=\"deny\""), "{page}");
    let csrf = hidden(&page, "csrf");
    let approve = server
        .http
        .post(server.url(&format!("/web/requests/{id}/approve")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("approve");
    assert_eq!(approve.status(), StatusCode::FORBIDDEN);
    assert_eq!(server.wait(&id, 0).await["status"], "pending");
    let deny = server
        .http
        .post(server.url(&format!("/web/requests/{id}/deny")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", csrf.as_str()), ("reason", "")])
        .send()
        .await
        .expect("deny");
    assert_eq!(
        deny.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a reason is required"
    );
    let deny = server
        .http
        .post(server.url(&format!("/web/requests/{id}/deny")))
        .header(header::COOKIE, &session)
        .form(&[("csrf", csrf.as_str()), ("reason", "changed my mind")])
        .send()
        .await
        .expect("deny");
    assert_eq!(deny.status(), StatusCode::SEE_OTHER);
    let answer = server.wait(&id, 0).await;
    assert_eq!(answer["status"], "denied", "{answer}");
    assert_eq!(answer["reason"], "changed my mind");
}

/// Without Slack a request nobody decides simply times out: denied by default, with a
/// reason about the deadline, not about a Slack message that was never meant to exist.
#[tokio::test]
async fn without_slack_an_undecided_request_times_out() {
    let server = WebServer::start(&[]).await;
    let mut body = request("Nobody looks");
    body["timeout_secs"] = serde_json::json!(1);
    let id = server.submit(body).await;
    let answer = server.wait(&id, 20).await;
    assert_eq!(answer["status"], "expired", "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Timed out")),
        "{answer}"
    );
}

/// Web-only reviewers (no Slack user id) are named on approver lists as `web:<name>`:
/// two of them decide a two-person request, and one left off the list may not.
#[tokio::test]
async fn approver_lists_name_web_only_reviewers() {
    let server = WebServer::start(&[
        (
            "GREENLIGHT_REVIEWERS",
            "alice:alice-secret-0123456789,bob:bob-secret-0123456789,carol:carol-secret-0123456789",
        ),
        ("GREENLIGHT_APPROVERS", "web:alice,web:bob"),
    ])
    .await;
    let mut body = request("Two of us");
    body["required_approvals"] = serde_json::json!(2);
    let id = server.submit(body).await;
    let base = server.url("");
    let approve = |secret: &'static str| {
        let (server, base, id) = (&server, base.clone(), id.clone());
        async move {
            let session = super::server::sign_in_with_secret(&server.http, &base, secret).await;
            let page = server
                .http
                .get(server.url(&format!("/web/requests/{id}")))
                .header(header::COOKIE, &session)
                .send()
                .await
                .expect("page")
                .text()
                .await
                .expect("html");
            let csrf = hidden(&page, "csrf");
            server
                .http
                .post(server.url(&format!("/web/requests/{id}/approve")))
                .header(header::COOKIE, &session)
                .form(&[("csrf", csrf.as_str())])
                .send()
                .await
                .expect("approve")
                .status()
        }
    };
    assert_eq!(
        approve("carol-secret-0123456789").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(server.wait(&id, 0).await["status"], "pending");
    assert_eq!(
        approve("alice-secret-0123456789").await,
        StatusCode::SEE_OTHER
    );
    assert_eq!(server.wait(&id, 0).await["status"], "pending");
    assert_eq!(
        approve("bob-secret-0123456789").await,
        StatusCode::SEE_OTHER
    );
    let answer = server.wait(&id, 0).await;
    assert_eq!(answer["status"], "approved", "{answer}");
}

/// Flooding the secret form uses up the sign-in limit, but the printed one-time link
/// still signs its reviewer in: an outsider cannot lock the local reviewer out.
#[tokio::test]
async fn a_flood_of_wrong_secrets_does_not_lock_out_the_printed_link() {
    let server = WebServer::start(&[]).await;
    let link = server.printed_link();
    let mut last = StatusCode::OK;
    for _ in 0..=greenlight::web::SIGN_INS_PER_MINUTE {
        let page = server
            .http
            .get(server.url("/web/signin"))
            .send()
            .await
            .expect("page");
        let pre = cookie_pair(&page, "gl_signin").expect("cookie");
        // The local reviewer has no secret, so the page shows no form; its CSRF token
        // is the cookie's value (a double-submit token), which a flood can post.
        let csrf = pre.split_once('=').expect("name=value").1.to_owned();
        last = server
            .http
            .post(server.url("/web/signin"))
            .header(header::COOKIE, pre)
            .form(&[
                ("csrf", csrf.as_str()),
                ("secret", "wrong-secret-0123456789"),
            ])
            .send()
            .await
            .expect("post")
            .status();
    }
    assert_eq!(
        last,
        StatusCode::TOO_MANY_REQUESTS,
        "the flood hit the limit"
    );
    let (session, response) = sign_in_with_link(&server, &link).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(session.is_some(), "the printed link signed its reviewer in");
}

/// Without Slack the page's reviewers are everyone who can decide: a request needing
/// more approvals than there are reviewers is refused at submit, not left to expire.
#[tokio::test]
async fn without_slack_a_quorum_beyond_the_reviewers_is_refused() {
    let server = WebServer::start(&[]).await;
    let mut body = request("Needs two of one");
    body["required_approvals"] = serde_json::json!(2);
    let response = server
        .http
        .post(server.url("/v1/approvals"))
        .bearer_auth(crate::helpers::AGENT_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer: serde_json::Value = response.json().await.expect("json");
    let message = answer["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("required_approvals"), "{answer}");
    // One approval, from the one local reviewer, is fine.
    server.submit(request("Needs one")).await;
}

/// A batch item's page lists every item of its batch, linking to the others.
#[tokio::test]
async fn a_batch_items_page_shows_the_items_asked_together() {
    let server =
        WebServer::start(&[("GREENLIGHT_REVIEWERS", "alice:alice-secret-0123456789")]).await;
    let answer: serde_json::Value = server
        .http
        .post(server.url("/v1/batches"))
        .bearer_auth(crate::helpers::AGENT_TOKEN)
        .json(&serde_json::json!({"actions": [
            {"code": "make build", "title": "Build it"},
            {"code": "make deploy", "title": "Deploy it"},
        ]}))
        .send()
        .await
        .expect("batch")
        .json()
        .await
        .expect("json");
    let first = answer["approvals"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let second = answer["approvals"][1]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let session = super::server::sign_in_with_secret(
        &server.http,
        &server.url(""),
        "alice-secret-0123456789",
    )
    .await;
    let page = server
        .http
        .get(server.url(&format!("/web/requests/{first}")))
        .header(header::COOKIE, &session)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(page.contains("id=\"batch\""), "{page}");
    assert!(page.contains("Asked together (2 actions"), "{page}");
    assert!(
        page.contains(&format!("href=\"/web/requests/{second}\"")),
        "{page}"
    );
}
