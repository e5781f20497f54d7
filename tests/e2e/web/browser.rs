//! The review page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/install-browser`, which `scripts/test`
//! runs), driven over WebDriver by fantoccini. No Slack settings: only the binary and
//! the browser. Every wait polls the page for a state; none sleeps a fixed time.
//! Screenshots at phone and desktop sizes land in `<target>/screenshots/`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::server::{request, WebServer};
use crate::helpers::AGENT_TOKEN;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any one expected state may take to show.
const WAIT: Duration = Duration::from_secs(20);
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 900);

/// A headless Chromium behind its own chromedriver, with a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(binary).exists(),
                "{binary} is missing: run scripts/install-browser (scripts/test does) to install Debian's chromium and chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = probe.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready {
                let body: Value = response.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps.as_object().cloned().expect("object"))
            .connect(&base)
            .await
            .expect("WebDriver session");
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    async fn size(&self, (width, height): (u32, u32)) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("window size");
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// Waits until an element matches `css`.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} within {WAIT:?}: {e}"))
    }

    /// Waits until the element at `css` shows text containing `text`.
    async fn wait_text(&self, css: &str, text: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(shown) = element.text().await {
                    if shown.contains(text) {
                        return;
                    }
                    last = shown;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{css} never showed {text:?}; last {last:?}");
    }

    /// Waits until the page's live feed (`GET /web/events`, htmx's SSE extension) is
    /// open: a change committed before that sends no event the page can hear, so a
    /// test of live updates must make its change after it.
    async fn wait_live(&self) {
        let script = "const e = document.querySelector('[sse-connect]'); \
                      const d = e && e['htmx-internal-data']; \
                      return !!(d && d.sseEventSource && d.sseEventSource.readyState === 1);";
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if let Ok(open) = self.client.execute(script, vec![]).await {
                if open.as_bool() == Some(true) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page's live feed never opened within {WAIT:?}");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Keeps a PNG of the page as a test artifact.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).expect("screenshots dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    async fn sign_in_with_secret(&self, server: &WebServer, secret: &str, name: &str) {
        self.goto(&server.url("/web/signin")).await;
        self.find("#secret")
            .await
            .send_keys(secret)
            .await
            .expect("type");
        self.click("#signin").await;
        self.wait_text("#me", name).await;
    }

    async fn sign_out(&self) {
        self.click("form[action='/web/signout'] button").await;
        self.find("#secret").await;
    }

    /// A form POST without the CSRF token, from inside the signed-in page (so the
    /// browser sends the session cookie); returns the HTTP status.
    async fn post_without_csrf(&self, path: &str, body: &str) -> u64 {
        let script = "return fetch(arguments[0], {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: arguments[1]}).then(r => r.status)";
        let status = self
            .client
            .execute(script, vec![json!(path), json!(body)])
            .await
            .expect("fetch");
        status.as_u64().expect("status")
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `<target>/screenshots`, beside the directory Cargo gives integration tests.
fn screenshots_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map_or(tmp.clone(), PathBuf::from)
        .join("screenshots")
}

/// The agent's long-poll, in the background: it is answered when a reviewer decides.
fn agent_waits(server: &WebServer, id: &str) -> tokio::task::JoinHandle<Value> {
    let http = server.http.clone();
    let url = server.url(&format!("/v1/approvals/{id}?wait=60"));
    tokio::spawn(async move {
        http.get(url)
            .bearer_auth(AGENT_TOKEN)
            .timeout(Duration::from_secs(90))
            .send()
            .await
            .expect("long-poll")
            .json()
            .await
            .expect("json")
    })
}

fn decided_event(events: &[Value]) -> Value {
    events
        .iter()
        .find(|e| e["kind"] == "decided")
        .cloned()
        .unwrap_or_else(|| panic!("no decided event in {events:?}"))
}

#[tokio::test]
async fn local_reviewer_signs_in_with_the_printed_link_and_decides() {
    let server = WebServer::start(&[]).await;
    let browser = Browser::start().await;
    browser.size(PHONE).await;

    // Sign in with the printed link: a confirmation page, then the pending list.
    browser.goto(&server.printed_link()).await;
    browser.click("#signin").await;
    browser.find("#none-pending").await;
    browser.wait_text("#me", "local").await;

    // A request arrives live (server-sent events; the page is not reloaded).
    let id = server.submit(request("Clean the build cache")).await;
    let agent = agent_waits(&server, &id);
    let card = format!("li.card[data-id='{id}']");
    browser.wait_text(&card, "Clean the build cache").await;
    browser
        .wait_text(&format!("{card} time.countdown"), "expires in")
        .await;
    browser.screenshot("phone-pending").await;

    // The request view: numbered, highlighted code; context; the rule; the buttons.
    browser.click(&format!("{card} a")).await;
    browser.find("#approve").await;
    let numbers = browser
        .client
        .find_all(Locator::Css(".code td.n"))
        .await
        .expect("line numbers");
    assert!(numbers.len() >= 3, "{} line numbers", numbers.len());
    browser.find(".code td.l span[style]").await;
    browser.wait_text("#context", "OPS-42").await;
    browser.wait_text("#rule", "default").await;
    let source = browser.client.source().await.expect("source");
    assert!(!source.contains("<b>not bold</b>"), "code must be escaped");
    browser.wait_text("#progress", "0 of 1 approval").await;
    browser.screenshot("phone-request").await;

    // Approve: the page says so and the waiting agent is answered.
    browser.click("#approve").await;
    browser.wait_text("#status-badge", "approved").await;
    browser.wait_text("#note", "You approved").await;
    let answer = agent.await.expect("agent");
    assert_eq!(answer["status"], "approved", "{answer}");
    assert_eq!(answer["approved"], true);
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|r| r.contains("review page") && r.contains("web:local")),
        "{answer}"
    );
    let decided = decided_event(&server.events(&id).await);
    assert_eq!(decided["detail"]["surface"], "web", "{decided}");
    assert_eq!(decided["actor"], "web:local");

    // A change made elsewhere (the agent withdraws) shows on an open page, live.
    browser.size(DESKTOP).await;
    let withdrawn = server.submit(request("Rotate the logs")).await;
    browser
        .goto(&server.url(&format!("/web/requests/{withdrawn}")))
        .await;
    browser.find("#deny").await;
    browser.wait_live().await;
    let cancel = server
        .http
        .post(server.url(&format!("/v1/approvals/{withdrawn}/cancel")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("cancel");
    assert!(cancel.status().is_success());
    browser.wait_text("#status-badge", "cancelled").await;

    // A page that missed the change (its live feed dropped: a phone asleep) still shows
    // the buttons; a click then is answered 409, and the page says how the request
    // ended.
    let missed = server.submit(request("Purge the queue")).await;
    browser
        .goto(&server.url(&format!("/web/requests/{missed}")))
        .await;
    browser.find("#approve").await;
    browser.wait_live().await;
    browser
        .client
        .execute(
            "document.querySelector('[sse-connect]')['htmx-internal-data'].sseEventSource.close()",
            vec![],
        )
        .await
        .expect("drop the live feed");
    let cancel = server
        .http
        .post(server.url(&format!("/v1/approvals/{missed}/cancel")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("cancel");
    assert!(cancel.status().is_success());
    browser.click("#approve").await;
    browser
        .wait_text("#note", "already cancelled (Withdrawn by the agent ci-bot)")
        .await;
    browser.wait_text("#status-badge", "cancelled").await;

    // Deny with a reason: the agent reads it.
    let denied = server.submit(request("Drop the staging database")).await;
    let agent = agent_waits(&server, &denied);
    browser
        .goto(&server.url(&format!("/web/requests/{denied}")))
        .await;
    browser
        .find("#reason")
        .await
        .send_keys("Not during the release freeze")
        .await
        .expect("type");
    browser.screenshot("desktop-request").await;
    browser.click("#deny").await;
    browser.wait_text("#status-badge", "denied").await;
    let answer = agent.await.expect("agent");
    assert_eq!(answer["status"], "denied", "{answer}");
    assert_eq!(answer["reason"], "Not during the release freeze");
    let decided = decided_event(&server.events(&denied).await);
    assert_eq!(decided["detail"]["surface"], "web", "{decided}");
    assert_eq!(decided["detail"]["via"], "form", "{decided}");

    // A POST without the CSRF token, with the session cookie: refused, nothing changes.
    let pending = server.submit(request("Restart the workers")).await;
    browser.goto(&server.url("/web")).await;
    browser
        .wait_text(&format!("li.card[data-id='{pending}']"), "Restart")
        .await;
    let status = browser
        .post_without_csrf(&format!("/web/requests/{pending}/approve"), "")
        .await;
    assert_eq!(status, 403);
    let status = browser
        .post_without_csrf(
            &format!("/web/requests/{pending}/deny"),
            "reason=forged&csrf=wrong",
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(server.wait(&pending, 0).await["status"], "pending");

    // History, filtered by status.
    browser
        .goto(&server.url("/web/history?status=denied"))
        .await;
    browser
        .wait_text(
            &format!("#history li[data-id='{denied}']"),
            "Drop the staging",
        )
        .await;
    let shown = browser
        .client
        .find_all(Locator::Css("#history li"))
        .await
        .expect("rows");
    assert_eq!(shown.len(), 1, "only the denied request");
    browser.screenshot("desktop-history").await;
    browser.size(PHONE).await;
    browser.screenshot("phone-history").await;
    browser.close().await;
}

#[tokio::test]
async fn two_person_rule_and_a_non_approver_in_the_browser() {
    let server = WebServer::start(&[
        (
            "GREENLIGHT_REVIEWERS",
            "alice:U0ALICE:alice-secret-0123456789,bob:U0BOB:bob-secret-0123456789,carol:carol-secret-0123456789",
        ),
        ("GREENLIGHT_APPROVERS", "U0ALICE,U0BOB"),
    ])
    .await;
    let mut body = request("Deploy to production");
    body["required_approvals"] = json!(2);
    let id = server.submit(body).await;
    let agent = agent_waits(&server, &id);
    let browser = Browser::start().await;
    browser.size(PHONE).await;
    let page = server.url(&format!("/web/requests/{id}"));

    // Alice approves: counted, one of two.
    browser
        .sign_in_with_secret(&server, "alice-secret-0123456789", "alice")
        .await;
    browser.goto(&page).await;
    browser.wait_text("#progress", "0 of 2 approvals").await;
    browser.click("#approve").await;
    browser
        .wait_text("#note", "more approvers are needed")
        .await;
    browser.wait_text("#progress", "1 of 2 approvals").await;
    browser.wait_text("#votes", "alice (U0ALICE)").await;
    browser
        .wait_text("#cannot-approve", "it needs another approver")
        .await;
    browser
        .client
        .execute("document.getElementById('status').scrollIntoView()", vec![])
        .await
        .expect("scroll");
    browser.screenshot("phone-two-person-rule").await;
    browser.sign_out().await;

    // Carol is not an approver: no buttons, and a forged approval is refused.
    browser
        .sign_in_with_secret(&server, "carol-secret-0123456789", "carol")
        .await;
    browser.goto(&page).await;
    browser
        .wait_text("#cannot-approve", "not an approver")
        .await;
    assert!(
        browser.client.find(Locator::Css("#approve")).await.is_err(),
        "no Approve button for a non-approver"
    );
    let csrf = browser
        .find("input[name='csrf']")
        .await
        .attr("value")
        .await
        .expect("attr")
        .expect("csrf");
    let status = browser
        .post_without_csrf(
            &format!("/web/requests/{id}/approve"),
            &format!("csrf={csrf}"),
        )
        .await;
    assert_eq!(status, 403, "a non-approver's approval is refused");
    assert_eq!(server.wait(&id, 0).await["status"], "pending");
    let events = server.events(&id).await;
    assert!(
        events.iter().any(|e| e["kind"] == "click_ignored"
            && e["detail"]["why"] == "not_approver"
            && e["detail"]["surface"] == "web"),
        "{events:?}"
    );
    browser.sign_out().await;

    // Bob's approval is the second: the request is approved and the agent answered.
    browser
        .sign_in_with_secret(&server, "bob-secret-0123456789", "bob")
        .await;
    browser.goto(&page).await;
    browser.wait_text("#progress", "1 of 2 approvals").await;
    browser.click("#approve").await;
    browser.wait_text("#status-badge", "approved").await;
    let answer = agent.await.expect("agent");
    assert_eq!(answer["status"], "approved", "{answer}");
    assert_eq!(answer["decided_by"], "U0ALICE,U0BOB", "{answer}");

    // History by reviewer.
    browser
        .goto(&server.url("/web/history?reviewer=U0BOB"))
        .await;
    browser
        .wait_text(&format!("#history li[data-id='{id}']"), "Deploy")
        .await;
    browser.size(DESKTOP).await;
    browser.screenshot("desktop-history-by-reviewer").await;
    browser.close().await;
}
