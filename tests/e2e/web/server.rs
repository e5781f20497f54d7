//! `greenlight serve` with no Slack settings, in a child process: its printed lines
//! (address, sign-in link) and a plain HTTP client for the agent's side.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Stdio},
    time::Duration,
};

use serde_json::{json, Value};

use crate::helpers::{binary::command, AGENT_TOKEN};

/// A running `greenlight serve` without Slack.
pub struct WebServer {
    pub addr: SocketAddr,
    /// The second line `serve` printed (the review page, maybe a one-time link).
    pub review_line: String,
    pub http: reqwest::Client,
    child: Child,
    dir: tempfile::TempDir,
    /// Exactly the environment it was started with (for a restart).
    env: HashMap<String, String>,
}

impl WebServer {
    /// Starts the binary with only the agent token, a fresh database, and `extra`.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: HashMap<String, String> = HashMap::from([
            ("GREENLIGHT_LISTEN".into(), "127.0.0.1:0".into()),
            (
                "GREENLIGHT_API_TOKENS".into(),
                format!("ci-bot:{AGENT_TOKEN}"),
            ),
            (
                "GREENLIGHT_DATABASE_URL".into(),
                crate::helpers::database::url(&dir.path().join("web.db")),
            ),
            ("RUST_LOG".into(), "info".into()),
        ]);
        for (key, value) in extra {
            env.insert((*key).into(), (*value).into());
        }
        Self::start_in(dir, &env).await
    }

    /// Starts `greenlight serve` in `dir` (where a `.env` may be) with exactly `env`.
    pub async fn start_in(dir: tempfile::TempDir, env: &HashMap<String, String>) -> Self {
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut child = command(env, dir.path())
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start greenlight");
        let stdout = child.stdout.take().expect("stdout");
        let lines = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let mut reader = BufReader::new(stdout);
                let (mut first, mut second) = (String::new(), String::new());
                let _ = reader.read_line(&mut first);
                let _ = reader.read_line(&mut second);
                (first, second)
            }),
        )
        .await
        .expect("greenlight printed its lines in time")
        .expect("reader");
        let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        let addr = lines
            .0
            .trim()
            .strip_prefix("greenlight listening on http://")
            .unwrap_or_else(|| panic!("unexpected stdout {lines:?}; stderr:\n{log}"))
            .parse()
            .expect("address");
        Self {
            addr,
            review_line: lines.1.trim().to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            child,
            dir,
            env: env.clone(),
        }
    }

    /// Kills the process (`kill -9`) and starts it again in the same folder, on the
    /// same database, with its environment changed by `changes` (an empty value
    /// removes the variable).
    pub async fn restart(mut self, changes: &[(&str, &str)]) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut env = self.env.clone();
        for (key, value) in changes {
            if value.is_empty() {
                env.remove(*key);
            } else {
                env.insert((*key).into(), (*value).into());
            }
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        Self::start_in(dir, &env).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The one-time sign-in link in the printed line.
    pub fn printed_link(&self) -> String {
        let start = self
            .review_line
            .find("http://")
            .unwrap_or_else(|| panic!("no link in {:?}", self.review_line));
        self.review_line[start..]
            .split_whitespace()
            .next()
            .expect("link")
            .to_owned()
    }

    /// The `GREENLIGHT_DATABASE_URL` it was started with.
    pub fn database_url(&self) -> Option<String> {
        self.env.get("GREENLIGHT_DATABASE_URL").cloned()
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        self.dir.path().join("web.db")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Submits a request as the agent; returns its id.
    pub async fn submit(&self, body: Value) -> String {
        let response = self
            .http
            .post(self.url("/v1/approvals"))
            .bearer_auth(AGENT_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("submit");
        assert!(response.status().is_success(), "{}", response.status());
        let answer: Value = response.json().await.expect("json");
        answer["id"].as_str().expect("id").to_owned()
    }

    /// The agent's long-poll for `id`, up to `wait_secs`.
    pub async fn wait(&self, id: &str, wait_secs: u32) -> Value {
        self.http
            .get(self.url(&format!("/v1/approvals/{id}?wait={wait_secs}")))
            .bearer_auth(AGENT_TOKEN)
            .timeout(Duration::from_secs(u64::from(wait_secs) + 10))
            .send()
            .await
            .expect("wait")
            .json()
            .await
            .expect("json")
    }

    /// The request's audit trail.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let body: Value = self
            .http
            .get(self.url(&format!("/v1/approvals/{id}/events")))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("json");
        body["events"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no events in {body}"))
    }
}

/// A request body with some code worth highlighting.
pub fn request(title: &str) -> Value {
    json!({
        "code": "import shutil\nshutil.rmtree('/tmp/build-cache')  # <b>not bold</b>\nprint('done')",
        "language": "python",
        "title": title,
        "context": { "ticket": "OPS-42", "why": "the cache is stale" },
        "timeout_secs": 600,
    })
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs in with a reviewer secret over plain HTTP, as a browser would (GET the form
/// for its CSRF cookie and token, POST it); returns the `gl_session=…` cookie pair.
pub async fn sign_in_with_secret(http: &reqwest::Client, base: &str, secret: &str) -> String {
    let page = http
        .get(format!("{base}/web/signin"))
        .send()
        .await
        .expect("sign-in page");
    let pre = set_cookie_pair(&page, "gl_signin").expect("sign-in cookie");
    let html = page.text().await.expect("html");
    let csrf = hidden_value(&html, "csrf");
    let response = http
        .post(format!("{base}/web/signin"))
        .header(reqwest::header::COOKIE, pre)
        .form(&[("csrf", csrf.as_str()), ("secret", secret)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), reqwest::StatusCode::SEE_OTHER);
    set_cookie_pair(&response, "gl_session").expect("session cookie")
}

/// `name=value` of a cookie the response sets (not a deletion).
pub fn set_cookie_pair(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")) && !c.starts_with(&format!("{name}=;")))
        .and_then(|c| c.split(';').next().map(str::to_owned))
}

/// The value of the first hidden input named `name` in a page.
pub fn hidden_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().expect("value").to_owned()
}

/// The token of a printed one-time link (`…/web/link/{token}`).
pub fn link_token(link: &str) -> String {
    link.rsplit('/').next().expect("token").to_owned()
}

/// Opens the confirm page of link `token` on the server at `base`, as a browser does
/// (a GET never uses the link up); returns the sign-in CSRF cookie pair and the form's
/// token, or `None` when the page says the link is not valid.
pub async fn link_form(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> Option<(String, String)> {
    let page = http
        .get(format!("{base}/web/link/{token}"))
        .send()
        .await
        .expect("link page");
    if page.status() != reqwest::StatusCode::OK {
        return None;
    }
    let pre = set_cookie_pair(&page, "gl_signin").expect("sign-in cookie");
    let html = page.text().await.expect("html");
    Some((pre, hidden_value(&html, "csrf")))
}

/// Posts the confirm form of link `token` on the server at `base`; returns the status
/// and the session cookie pair, if one was set.
pub async fn post_link(
    http: &reqwest::Client,
    base: &str,
    form: &(String, String),
    token: &str,
) -> (reqwest::StatusCode, Option<String>) {
    let response = http
        .post(format!("{base}/web/link"))
        .header(reqwest::header::COOKIE, &form.0)
        .form(&[("csrf", form.1.as_str()), ("token", token)])
        .send()
        .await
        .expect("use the link");
    (response.status(), set_cookie_pair(&response, "gl_session"))
}

/// `GET path` with a session cookie: the status and the page.
pub async fn page(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    session: &str,
) -> (reqwest::StatusCode, String) {
    let response = http
        .get(format!("{base}{path}"))
        .header(reqwest::header::COOKIE, session)
        .send()
        .await
        .expect("page");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// Posts a signed-in form (`fields` besides `csrf`) to `path`; returns the response.
pub async fn post_form(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    session: &str,
    csrf: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut form = vec![("csrf", csrf)];
    form.extend_from_slice(fields);
    http.post(format!("{base}{path}"))
        .header(reqwest::header::COOKIE, session)
        .form(&form)
        .send()
        .await
        .expect("post")
}
