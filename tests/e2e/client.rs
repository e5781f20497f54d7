//! The Rust client and the `greenlight request` gate against the real server and the
//! fake Slack: every outcome an agent or a CI step can see, including a restart of the
//! service while a client waits.

use std::collections::HashMap;
use std::{future::Future, process::Stdio, time::Duration};

use greenlight_client::{
    Approval, ApprovalRequest, ApprovalStatus, Client, ClientBuilder, ClientError, DecisionStatus,
    ResponseStatus,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::{io::AsyncWriteExt, process::Command};

use crate::helpers::{approval_id_of, spawn_app, DeadAddress, TestApp, AGENT_TOKEN, CHANNEL};

/// Long enough for a loaded 2-core machine, short enough that a hang fails fast.
const PATIENCE: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Test timings: reconnect quickly, give up quickly.
fn fast(builder: ClientBuilder) -> ClientBuilder {
    builder
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .submit_retry(Duration::from_secs(1))
        .grace(Duration::from_secs(2))
}

fn client_for(app: &TestApp) -> Client {
    fast(Client::builder(app.url(""), AGENT_TOKEN))
        .build()
        .expect("client")
}

/// The approval id of the `n`th Slack message (1-based).
async fn posted_id(app: &TestApp, n: usize) -> String {
    approval_id_of(&app.slack.nth_call("chat.postMessage", n).await)
}

/// Denies as `user` the way Slack lets people: the Deny button, then (if the service
/// asks for a reason in a modal) the modal's submission.
async fn deny_in_slack(app: &TestApp, id: &str, user: &str) {
    assert_eq!(app.deny(id, user).await.status, StatusCode::OK);
    if app.approval(id).await["status"] == "pending" {
        let submission = json!({
            "type": "view_submission",
            "user": {"id": user},
            "view": {"id": "V1", "callback_id": "greenlight_deny_reason", "private_metadata": id,
                     "state": {"values": {"reason": {"reason_input":
                        {"type": "plain_text_input", "value": "not on a Friday"}}}}},
        });
        app.interact(&submission.to_string()).await;
    }
}

fn request(code: &str) -> ApprovalRequest {
    ApprovalRequest::new(code)
        .language("bash")
        .title("client e2e")
        .timeout_secs(60)
}

// ---------------------------------------------------------------- library client

#[tokio::test]
async fn approve_in_slack_reaches_the_rust_agent() {
    let app = spawn_app().await;
    let client = client_for(&app);
    let asking = tokio::spawn(async move { client.request_approval(request("make deploy")).await });

    let id = posted_id(&app, 1).await;
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    let answer = within("the approval", asking).await.expect("task");

    assert!(answer.approved);
    assert_eq!(answer.status, ResponseStatus::Approved);
    assert_eq!(answer.reason, "Approved in Slack by <@U0ALICE>");
    assert_eq!(answer.decided_by.as_deref(), Some("U0ALICE"));
    assert_eq!(answer.id.as_deref(), Some(id.as_str()));
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
}

/// An escalation that moves the deadline later keeps the client waiting until the new
/// one: before, it gave up at the deadline it was first told (`NoDecision`) while the
/// request stayed live for the escalation's approvers.
#[tokio::test]
async fn the_client_keeps_waiting_when_an_escalation_moves_the_deadline() {
    const POLICY: &str = r#"
[[rule]]
name = "escalating"
approvers = ["U0ALICE"]
escalate_after_secs = 1
escalate_to = ["U0CAROL"]
escalation_extends_secs = 60
"#;
    let app = crate::helpers::spawn_app_with_policy(POLICY, &[]).await;
    let grace = Duration::from_millis(500);
    let client = fast(Client::builder(app.url(""), AGENT_TOKEN))
        .grace(grace)
        .build()
        .expect("client");
    let asking = tokio::spawn(async move {
        client
            .try_request_approval(request("make deploy").timeout_secs(3))
            .await
    });
    let id = posted_id(&app, 1).await;
    // The deadline it was submitted with (the escalation may already have moved it).
    let first_expiry = crate::helpers::rfc3339(&app.approval(&id).await["created_at"])
        + chrono::Duration::seconds(3);
    // Past the first deadline and the client's grace, with a margin for its last
    // poll: the request is still pending, its deadline moved.
    let give_up = first_expiry + chrono::Duration::from_std(grace * 4).expect("delta");
    while chrono::Utc::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moved = app.approval(&id).await;
    assert_eq!(moved["status"], "pending", "{moved}");
    assert!(
        crate::helpers::rfc3339(&moved["expires_at"]) > first_expiry,
        "{moved}"
    );
    assert!(
        !asking.is_finished(),
        "the client gave up: {:?}",
        asking.await
    );
    assert_eq!(app.approve(&id, "U0CAROL").await.status, StatusCode::OK);
    let decision = within("the approval", asking)
        .await
        .expect("task")
        .expect("a decision");
    assert_eq!(decision.status, DecisionStatus::Approved);
}

/// The client has its own type for the approval object (`greenlight_client::wire`), so
/// it must keep up with the server: it reads the server's real answers, pending and
/// decided, and loses nothing (read and written back, each is the same JSON), and it
/// knows exactly the fields and statuses the OpenAPI document promises.
#[tokio::test]
async fn the_clients_wire_type_reads_the_servers_approval_object_whole() {
    let app = spawn_app().await;
    let id = app
        .submit_and_post(crate::helpers::request("make deploy"))
        .await;
    let pending = app.approval(&id).await;
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    let decided = app.approval(&id).await;
    let mut written = Value::Null;
    for body in [pending, decided] {
        let read: Approval = serde_json::from_value(body.clone()).expect("the client reads it");
        written = serde_json::to_value(&read).expect("json");
        assert_eq!(written, body);
    }

    let openapi: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
            .expect("docs/openapi.json"),
    )
    .expect("openapi JSON");
    let resolve = |schema: &Value| -> Value {
        let name = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .expect("a schema reference");
        openapi["components"]["schemas"][name].clone()
    };
    let approval = resolve(
        &openapi["paths"]["/v1/approvals/{id}"]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"],
    );
    let mut promised: Vec<&str> = approval["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    let mut known: Vec<&str> = written
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    promised.sort_unstable();
    known.sort_unstable();
    assert_eq!(known, promised, "fields");
    let statuses: Vec<String> =
        serde_json::from_value(resolve(&approval["properties"]["status"])["enum"].clone())
            .expect("status names");
    let ours: Vec<&str> = ApprovalStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(statuses, ours, "statuses");
}

#[tokio::test]
async fn deny_in_slack_is_a_denial_with_the_reviewers_reason() {
    let app = spawn_app().await;
    let client = client_for(&app);
    let asking =
        tokio::spawn(async move { client.try_request_approval(request("rm -rf /")).await });

    let id = posted_id(&app, 1).await;
    deny_in_slack(&app, &id, "U0BOB").await;
    let decision = within("the denial", asking)
        .await
        .expect("task")
        .expect("a decision, not an error");

    assert_eq!(decision.status, DecisionStatus::Denied);
    assert!(!decision.approved());
    assert_eq!(decision.decided_by.as_deref(), Some("U0BOB"));
    assert!(!decision.reason.is_empty());
    assert_eq!(decision.id, id);
}

#[tokio::test]
async fn no_decision_in_time_expires_and_the_same_key_reattaches() {
    let app = spawn_app().await;
    let client = client_for(&app);
    let mut ask = request("sleep 1").timeout_secs(1);
    ask.idempotency_key = Some("e2e-expire-key".into());

    let first = within("the expiry", client.request_approval(ask.clone())).await;
    assert!(!first.approved);
    assert_eq!(first.status, ResponseStatus::Expired);
    assert_eq!(first.decided_by.as_deref(), Some("greenlight"));
    assert!(
        first.reason.contains("denied by default"),
        "{}",
        first.reason
    );

    // Same key, same body: the same request comes back, nobody is asked twice.
    let again = within("the replay", client.request_approval(ask)).await;
    assert_eq!(again.id, first.id);
    assert_eq!(again.status, ResponseStatus::Expired);
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
}

#[tokio::test]
async fn an_unreachable_service_is_a_reasoned_denial() {
    let dead = DeadAddress::new();
    let url = dead.url.clone();
    let client = fast(Client::builder(url.clone(), AGENT_TOKEN))
        .build()
        .expect("client");

    let answer = within("giving up", client.request_approval(request("ls"))).await;
    assert!(!answer.approved);
    assert_eq!(answer.status, ResponseStatus::Error);
    assert!(
        answer
            .reason
            .starts_with(&format!("greenlight: service unreachable at {url}"))
            && answer.reason.ends_with("denied by default (fail closed)"),
        "{}",
        answer.reason
    );
    assert_eq!(answer.id, None);

    match within("giving up", client.try_request_approval(request("ls"))).await {
        Err(ClientError::Unreachable { attempts, .. }) => {
            assert!(attempts > 1, "retried before giving up: {attempts}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_bad_token_is_refused_without_asking_anyone() {
    let app = spawn_app().await;
    let token = "wrong-token-0123456789abcdef";
    let client = fast(Client::builder(app.url(""), token))
        .build()
        .expect("client");

    let answer = within("the refusal", client.request_approval(request("ls"))).await;
    assert!(!answer.approved);
    assert_eq!(answer.status, ResponseStatus::Error);
    assert!(
        answer
            .reason
            .contains("the API token was rejected (HTTP 401 unauthorized"),
        "{}",
        answer.reason
    );
    assert!(!answer.reason.contains(token));
    assert!(app.slack.calls_to("chat.postMessage").is_empty());
}

#[tokio::test]
async fn an_invalid_request_is_rejected_with_the_servers_words() {
    let app = spawn_app().await;
    let result = client_for(&app)
        .try_request_approval(request("ls").timeout_secs(0))
        .await;
    match result {
        Err(ClientError::Rejected(text)) => {
            assert!(text.starts_with("HTTP 422 invalid_request"), "{text}");
            assert!(text.contains("timeout_secs"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_waiting_client_survives_a_restart_of_the_service() {
    let app = spawn_app().await;
    let client = client_for(&app);
    let asking = tokio::spawn(async move { client.try_request_approval(request("migrate")).await });
    let id = posted_id(&app, 1).await;

    // Down for a second: the client's polls are refused and it backs off meanwhile.
    let app = app.restart(Duration::from_secs(1)).await;
    assert!(
        !asking.is_finished(),
        "the client gave up during the outage"
    );
    assert_eq!(app.approval(&id).await["status"], "pending");
    assert_eq!(app.approve(&id, "U0CAROL").await.status, StatusCode::OK);

    let decision = within("the approval after the restart", asking)
        .await
        .expect("task")
        .expect("a decision, not an error");
    assert_eq!(decision.id, id);
    assert_eq!(decision.status, DecisionStatus::Approved);
    assert_eq!(decision.decided_by.as_deref(), Some("U0CAROL"));
}

#[tokio::test]
async fn a_client_timeout_withdraws_the_request() {
    let app = spawn_app().await;
    let client = fast(Client::builder(app.url(""), AGENT_TOKEN))
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client");

    let result = within(
        "the client timeout",
        client.try_request_approval(request("ls")),
    )
    .await;
    let id = match result {
        Err(ClientError::TimedOut {
            id,
            withdrawn: true,
            ..
        }) => id,
        other => panic!("{other:?}"),
    };
    // Nobody can approve it any more: the client no longer waits for it.
    assert_eq!(app.approval(&id).await["status"], "cancelled");
}

// ------------------------------------------------------------ greenlight request

/// The gate as a child process with only the environment we give it, in an empty
/// directory (so no stray `.env` is read).
struct Gate {
    command: Command,
    _cwd: tempfile::TempDir,
}

impl Gate {
    fn new(url: &str, token: &str, args: &[&str]) -> Self {
        let cwd = tempfile::tempdir().expect("cwd");
        let env = HashMap::from([
            ("GREENLIGHT_URL".to_owned(), url.to_owned()),
            ("GREENLIGHT_API_TOKEN".to_owned(), token.to_owned()),
        ]);
        let mut command = Command::from(crate::helpers::binary::command(&env, cwd.path()));
        command
            .arg("request")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Self { command, _cwd: cwd }
    }

    fn for_app(app: &TestApp, args: &[&str]) -> Self {
        Self::new(&app.url(""), AGENT_TOKEN, args)
    }

    fn spawn(mut self) -> Running {
        let child = self.command.spawn().expect("spawn greenlight");
        Running {
            child,
            _cwd: self._cwd,
        }
    }

    async fn run(self) -> Outcome {
        self.spawn().finish().await
    }
}

struct Running {
    child: tokio::process::Child,
    _cwd: tempfile::TempDir,
}

impl Running {
    async fn finish(self) -> Outcome {
        let output = within("greenlight request to exit", self.child.wait_with_output())
            .await
            .expect("wait");
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Exit status `code`, stdout starting with `stdout`, nothing on stderr.
    fn assert_decided(&self, code: i32, stdout: &str) {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert!(self.stdout.starts_with(stdout), "{self:?}");
        assert!(self.stdout.lines().count() <= 2, "{self:?}");
        assert!(self.stderr.is_empty(), "{self:?}");
    }

    /// Exit status 2 and exactly one stderr line containing `problem`.
    fn assert_error(&self, problem: &str) {
        assert_eq!(self.code, Some(2), "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:?}");
        assert!(self.stderr.starts_with("greenlight: "), "{self:?}");
        assert!(self.stderr.contains(problem), "{self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
    }
}

#[tokio::test]
async fn gate_exits_0_when_approved() {
    let app = spawn_app().await;
    let running = Gate::for_app(&app, &["--code", "./deploy.sh prod", "--timeout", "60"]).spawn();
    let id = posted_id(&app, 1).await;
    app.approve(&id, "U0ALICE").await;
    let outcome = running.finish().await;
    outcome.assert_decided(0, "approved: Approved in Slack by <@U0ALICE>\n");
    assert!(outcome.stdout.contains(&id), "{outcome:?}");
}

#[tokio::test]
async fn gate_exits_1_when_denied() {
    let app = spawn_app().await;
    let running = Gate::for_app(&app, &["--code", "drop table users"]).spawn();
    let id = posted_id(&app, 1).await;
    deny_in_slack(&app, &id, "U0BOB").await;
    running.finish().await.assert_decided(1, "denied: ");
}

#[tokio::test]
async fn gate_exits_1_when_expired() {
    let app = spawn_app().await;
    let outcome = Gate::for_app(&app, &["--code", "sleep 5", "--timeout", "1"])
        .run()
        .await;
    outcome.assert_decided(1, "expired: ");
    assert!(outcome.stdout.contains("denied by default"), "{outcome:?}");
}

#[tokio::test]
async fn gate_exits_1_when_cancelled_while_waiting() {
    let app = spawn_app().await;
    let running = Gate::for_app(&app, &["--code", "terraform apply"]).spawn();
    let id = posted_id(&app, 1).await;
    let cancel = app.cancel(&id, AGENT_TOKEN).await;
    assert_eq!(cancel.status, StatusCode::OK, "{:?}", cancel.body);
    running.finish().await.assert_decided(1, "cancelled: ");
}

#[tokio::test]
async fn gate_exits_2_when_the_service_is_unreachable() {
    let dead = DeadAddress::new();
    let url = dead.url.clone();
    let outcome = Gate::new(&url, AGENT_TOKEN, &["--code", "ls", "--retry-secs", "1"])
        .run()
        .await;
    outcome.assert_error(&format!("service unreachable at {url}"));
}

#[tokio::test]
async fn gate_exits_2_on_a_bad_token_and_never_prints_it() {
    let app = spawn_app().await;
    let token = "wrong-token-0123456789abcdef";
    let outcome = Gate::new(&app.url(""), token, &["--code", "ls"])
        .run()
        .await;
    outcome.assert_error("the API token was rejected (HTTP 401");
    assert!(!outcome.stderr.contains(token), "{outcome:?}");
    assert!(app.slack.calls_to("chat.postMessage").is_empty());
}

#[tokio::test]
async fn gate_exits_2_on_bad_input_before_asking_anyone() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("dir");
    let bad_json = dir.path().join("context.json");
    std::fs::write(&bad_json, "{\"ticket\": ").expect("write");
    let bad_json = bad_json.to_str().expect("utf-8");
    let missing = dir.path().join("deploy.sh");
    let missing = missing.to_str().expect("utf-8");

    let cases: [(&[&str], &str); 4] = [
        (&["--code-file", missing], "cannot read the code file"),
        (&["--code", " \n "], "the code to approve is empty"),
        (
            &["--code", "ls", "--context-json", bad_json],
            "is not valid JSON",
        ),
        (&[], "the code to approve is empty"), // stdin is empty (/dev/null)
    ];
    for (args, problem) in cases {
        Gate::for_app(&app, args).run().await.assert_error(problem);
    }

    let mut no_url = Gate::for_app(&app, &["--code", "ls"]);
    no_url.command.env_remove("GREENLIGHT_URL");
    no_url.run().await.assert_error("no service URL");
    let mut no_token = Gate::for_app(&app, &["--code", "ls"]);
    no_token.command.env_remove("GREENLIGHT_API_TOKEN");
    no_token.run().await.assert_error("no API token");

    assert!(app.slack.calls_to("chat.postMessage").is_empty());
}

#[tokio::test]
async fn gate_reads_code_from_stdin_and_context_from_a_file() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("dir");
    let context = dir.path().join("context.json");
    std::fs::write(&context, r#"{"ticket": "OPS-4242", "pipeline": "release"}"#).expect("write");
    let context = context.to_str().expect("utf-8");

    let mut gate = Gate::for_app(
        &app,
        &[
            "--language",
            "bash",
            "--title",
            "Release",
            "--context-json",
            context,
        ],
    );
    gate.command.stdin(Stdio::piped());
    let mut running = gate.spawn();
    let mut stdin = running.child.stdin.take().expect("stdin");
    stdin
        .write_all(b"helm upgrade app ./chart\n")
        .await
        .expect("write stdin");
    drop(stdin);

    let post = app.slack.nth_call("chat.postMessage", 1).await;
    let blocks = post.body["blocks"].to_string();
    assert!(blocks.contains("helm upgrade app ./chart"), "{blocks}");
    assert!(blocks.contains("OPS-4242"), "context shown: {blocks}");
    assert_eq!(post.body["channel"], CHANNEL);
    app.approve(&approval_id_of(&post), "U0ALICE").await;
    running.finish().await.assert_decided(0, "approved: ");
}

#[tokio::test]
async fn gate_flags_override_the_environment() {
    let app = spawn_app().await;
    // The environment points nowhere useful; the flags point at the app.
    let dead = DeadAddress::new();
    let mut gate = Gate::new(&dead.url, "wrong-token-0123456789abcdef", &[]);
    gate.command.args([
        "--url",
        &app.url(""),
        "--token",
        AGENT_TOKEN,
        "--code",
        "echo ok",
        "--timeout",
        "1",
    ]);
    gate.run().await.assert_decided(1, "expired: ");
}
