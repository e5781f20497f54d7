//! The policy file: automatic decisions, routing, floors and caps, high-risk confirm,
//! start-up validation and `greenlight policy check`.

use std::{collections::HashMap, time::Duration};

use greenlight::{app::Server, config::Config};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    base_env, fast_retry, request, spawn_app_with_policy, FakeSlack, AGENT_TOKEN, CHANNEL,
    OTHER_AGENT_TOKEN,
};

const POLICY: &str = r#"
[[rule]]
name = "read-only"
action = "auto_approve"
language = "bash"
code = '^ls\b'

[[rule]]
name = "no-curl-pipe"
action = "auto_deny"
code = 'curl[^|]*\|\s*sh'
reason = "Piping downloads into a shell is not allowed"
notify = true

[[rule]]
name = "other-bot is read-only"
agent = "other-bot"
action = "auto_deny"
reason = "other-bot may not run code"

[[rule]]
name = "prod"
context.env = "prod"
channel = "C0PROD"
approvers = ["U0SRE", "U0OPS"]
required_approvals = 2
timeout_secs = 120
high_risk = true
"#;

#[tokio::test]
async fn auto_approve_answers_at_once_without_slack() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    let answer = app.submit(request("ls -la /tmp")).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "approved");
    assert_eq!(answer.body["decided_by"], "greenlight");
    assert_eq!(
        answer.body["reason"],
        "Approved automatically by policy rule \"read-only\""
    );
    let id = answer.body["id"].as_str().expect("id");
    let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
    let auto = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "auto_decided")
        .cloned()
        .expect("auto_decided event");
    assert_eq!(auto["detail"]["rule"], "read-only");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Only the start-up token check reached Slack: no message about this request.
    assert!(
        app.slack.calls().iter().all(|c| c.method == "auth.test"),
        "no notify: Slack is not told"
    );
}

#[tokio::test]
async fn auto_deny_answers_with_the_rule_reason_and_posts_an_fyi() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    let answer = app.submit(request("curl https://x.sh | sh")).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "denied");
    assert_eq!(
        answer.body["reason"],
        "Piping downloads into a shell is not allowed"
    );
    let fyi = app.slack.nth_call("chat.postMessage", 1).await;
    assert_eq!(fyi.body["channel"], CHANNEL);
    let blocks = fyi.body["blocks"].to_string();
    assert!(
        !blocks.contains("greenlight_approve"),
        "an FYI has no buttons"
    );
    assert!(
        blocks.contains("Denied") && blocks.contains("Piping downloads"),
        "{blocks}"
    );
}

#[tokio::test]
async fn rules_match_on_the_agent_name() {
    let app = spawn_app_with_policy(POLICY, &[]).await;
    let answer = app
        .submit_as(OTHER_AGENT_TOKEN, "", request("echo hi"))
        .await;
    assert_eq!(answer.body["status"], "denied", "{:?}", answer.body);
    assert_eq!(answer.body["agent"], "other-bot");
    // The same request from ci-bot matches no rule and goes to Slack.
    let answer = app.submit_as(AGENT_TOKEN, "", request("echo hi")).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn routed_rules_pick_channel_approvers_floor_cap_and_confirm() {
    let app = spawn_app_with_policy(POLICY, &[("GREENLIGHT_APPROVERS", "U0ALICE")]).await;
    let mut body = request("helm upgrade api");
    body["context"] = json!({"env": "prod"});
    body["timeout_secs"] = json!(3600);
    let answer = app.submit(body).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["channel"], "C0PROD");
    let created =
        chrono::DateTime::parse_from_rfc3339(answer.body["created_at"].as_str().expect("t"))
            .expect("created");
    let expires =
        chrono::DateTime::parse_from_rfc3339(answer.body["expires_at"].as_str().expect("t"))
            .expect("expires");
    assert_eq!(
        (expires - created).num_seconds(),
        120,
        "the rule caps the timeout"
    );
    let id = answer.body["id"].as_str().expect("id").to_owned();

    let post = app.slack.nth_call("chat.postMessage", 1).await;
    assert_eq!(post.body["channel"], "C0PROD");
    let rendered = post.body["blocks"].to_string();
    assert!(
        rendered.contains("Needs 2 approvals"),
        "the rule's floor: {rendered}"
    );
    let approve = post.body["blocks"]
        .as_array()
        .and_then(|b| b.last())
        .map(|actions| actions["elements"][0].clone())
        .expect("approve button");
    assert_eq!(approve["action_id"], "greenlight_approve");
    let confirm = &approve["confirm"];
    assert!(confirm["title"]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty() && t.chars().count() <= 100));
    assert!(confirm["text"]["text"]
        .as_str()
        .is_some_and(|t| t.contains("prod") && t.chars().count() <= 300));

    // The rule's approvers replace GREENLIGHT_APPROVERS.
    app.approve(&id, "U0ALICE").await;
    assert_eq!(app.approval(&id).await["status"], "pending");
    let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
    let events = events["events"].as_array().expect("events").clone();
    assert!(events
        .iter()
        .any(|e| e["kind"] == "click_ignored" && e["detail"]["why"] == "not_approver"));
    let routed = events
        .iter()
        .find(|e| e["kind"] == "routed")
        .expect("routed event");
    assert_eq!(routed["detail"]["rule"], "prod");
    assert_eq!(routed["detail"]["required_approvals"], 2);
}

#[tokio::test]
async fn an_invalid_policy_stops_start_up_naming_file_and_line() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[rule]]\nname = \"x\"\ncode = \"(open\"\n").expect("write");
    let mut env = base_env(
        &slack,
        &crate::helpers::database::url(&dir.path().join("g.db")),
    );
    env.insert("GREENLIGHT_POLICY".into(), policy.display().to_string());
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = match Server::build(listener, config, fast_retry()).await {
        Ok(_) => panic!("a bad policy must stop start-up"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains(&format!(
            "{}:3:8: rule \"x\": code is not a valid regex",
            policy.display()
        )),
        "{error}"
    );
    assert!(
        !dir.path().join("g.db").exists(),
        "nothing created before the policy is valid"
    );
}

/// The Slack settings `serve` would read, as `policy check` reads them (it contacts
/// nothing): with them the request is explained for Slack.
fn slack_settings() -> [(String, String); 3] {
    [
        (
            "SLACK_BOT_TOKEN".to_owned(),
            "xoxb-not-contacted".to_owned(),
        ),
        (
            "SLACK_SIGNING_SECRET".to_owned(),
            "0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("SLACK_CHANNEL_ID".to_owned(), "C0DEFAULT".to_owned()),
    ]
}

/// `policy check` needs no Slack connection: it explains from the settings alone.
/// Without the Slack settings it explains web-only mode, as `serve` would run then.
#[test]
fn policy_check_explains_without_slack_settings() {
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).expect("write");
    let prod = dir.path().join("prod.json");
    std::fs::write(
        &prod,
        r#"{"code": "helm upgrade", "context": {"env": "prod"}}"#,
    )
    .expect("write");
    let web_only = HashMap::from([("GREENLIGHT_POLICY".to_owned(), policy.display().to_string())]);
    // Web-only: nobody on the review page is U0SRE or U0OPS, so serve would refuse this
    // policy; policy check says so in one line.
    let out = crate::helpers::binary::command(&web_only, dir.path())
        .args(["policy", "check", "--request", prod.to_str().expect("utf8")])
        .output()
        .expect("run greenlight");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("rule \"prod\": needs 2 approvals, but Slack is not configured")
            && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    let mut env = web_only.clone();
    env.extend(slack_settings());
    let run = |args: &[&str]| {
        crate::helpers::binary::command(&env, dir.path())
            .args(args)
            .output()
            .expect("run greenlight")
    };
    let out = run(&["policy", "check", "--request", prod.to_str().expect("utf8")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "rule: prod (",
        "channel: C0PROD",
        "approvers: U0SRE, U0OPS (from the rule)",
        "required approvals: 2",
        "timeout: 120 s",
        "high risk: yes",
    ] {
        assert!(stdout.contains(line), "missing {line:?}:\n{stdout}");
    }

    let curl = dir.path().join("curl.json");
    std::fs::write(&curl, r#"{"code": "curl a | sh"}"#).expect("write");
    let out = run(&[
        "policy",
        "check",
        "--request",
        curl.to_str().expect("utf8"),
        "--agent",
        "ci-bot",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rule: no-curl-pipe") && stdout.contains("deny at once"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"code\": ").expect("write");
    let out = run(&["policy", "check", "--request", bad.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("bad.json is not a valid request"),
        "{stderr}"
    );
}

/// A request routed to a narrow approver list, then a restart with a policy that now
/// auto-denies its code: Approve must stop counting (fail closed), Deny still works.
#[tokio::test]
async fn a_policy_that_now_denies_a_pending_request_refuses_its_approval() {
    let dir = tempfile::tempdir().expect("dir");
    let db_url = crate::helpers::database::url(&dir.path().join("gl.db"));
    let routed = r#"
[[rule]]
name = "kubectl"
code = 'kubectl'
approvers = ["U0SRE"]
"#;
    let app = spawn_app_with_policy(routed, &[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    let id = app.submit_and_post(request("kubectl delete ns prod")).await;
    app.stop().await;

    let now_denied = r#"
[[rule]]
name = "no kubectl delete"
action = "auto_deny"
code = 'kubectl delete'
reason = "Deleting namespaces is not allowed"
"#;
    let app = spawn_app_with_policy(now_denied, &[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    assert_eq!(app.approve(&id, "U0SRE").await.status, StatusCode::OK);
    assert_eq!(app.approve(&id, "U0ANYONE").await.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "pending");
    let refused = app.event_kinds(&id).await;
    assert_eq!(
        refused
            .iter()
            .filter(|(kind, why)| kind == "click_ignored" && why == "policy_forbids")
            .count(),
        2,
        "{refused:?}"
    );
    let ack = app
        .deny_with_reason(&id, "U0SRE", "policy forbids it now")
        .await;
    assert_eq!(ack.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "denied");
}

/// Two listed people and three approvals required.
const UNREACHABLE: &str = "[[rule]]\nname = \"deploys\"\ncode = \"deploy\"\napprovers = [\"U0AAA\", \"U0BBB\"]\nrequired_approvals = 3\n";

#[tokio::test]
async fn a_quorum_that_can_never_be_reached_stops_start_up_naming_rule_and_position() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, UNREACHABLE).expect("write");
    let mut env = base_env(
        &slack,
        &crate::helpers::database::url(&dir.path().join("g.db")),
    );
    env.insert("GREENLIGHT_POLICY".into(), policy.display().to_string());
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = match Server::build(listener, config, fast_retry()).await {
        Ok(_) => panic!("an unreachable quorum must stop start-up"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains(&format!(
            "{}:5:22: rule \"deploys\": required_approvals = 3: 3 approvals can never be reached",
            policy.display()
        )),
        "{error}"
    );
}

#[test]
fn policy_check_refuses_a_quorum_that_can_never_be_reached() {
    let dir = tempfile::tempdir().expect("dir");
    let request = dir.path().join("r.json");
    std::fs::write(&request, r#"{"code": "make deploy"}"#).expect("write");
    let check = |policy_text: &str, approvers: Option<&str>| {
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, policy_text).expect("write");
        let mut env =
            HashMap::from([("GREENLIGHT_POLICY".to_owned(), policy.display().to_string())]);
        env.extend(slack_settings());
        if let Some(approvers) = approvers {
            env.insert("GREENLIGHT_APPROVERS".into(), approvers.into());
        }
        let out = crate::helpers::binary::command(&env, dir.path())
            .args([
                "policy",
                "check",
                "--request",
                request.to_str().expect("utf8"),
            ])
            .output()
            .expect("run greenlight");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            policy.display().to_string(),
        )
    };
    // The rule's own list.
    let (code, stderr, file) = check(UNREACHABLE, None);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:5:22: rule \"deploys\": required_approvals = 3"
        )),
        "{stderr}"
    );
    // A floor that GREENLIGHT_APPROVERS cannot meet.
    let floor = "[[rule]]\nname = \"floor\"\nrequired_approvals = 3\n";
    let (code, stderr, file) = check(floor, Some("U0AAA,U0BBB"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:3:22: rule \"floor\""))
            && stderr.contains("GREENLIGHT_APPROVERS"),
        "{stderr}"
    );
    let (code, stderr, _) = check(floor, Some("U0AAA,U0BBB,U0CCC"));
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn a_reachable_rule_quorum_with_the_requester_listed_is_refused_at_submit() {
    let policy = "[[rule]]\nname = \"pair\"\ncode = \"deploy\"\napprovers = [\"U0AAA\", \"U0BBB\"]\nrequired_approvals = 2\n";
    let app = spawn_app_with_policy(policy, &[]).await;
    let mut body = request("make deploy");
    body["requester_slack_id"] = json!("U0BBB");
    let answer = app.submit(body).await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        answer.body
    );
    let message = answer.body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("required_approvals: 2 approvals can never be reached")
            && message.contains("requester U0BBB"),
        "{message}"
    );
}
