//! Logs of the real binary: JSON lines on request, request ids on the lines about a
//! request, and no secret or code, even at debug/trace level.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::{command, Binary};
use crate::helpers::{
    approval_id_of, base_env, FakeSlack, TestApp, AGENT_TOKEN, BOT_TOKEN, OTHER_AGENT_TOKEN,
    SIGNING_SECRET,
};

/// Code distinctive enough that finding it anywhere in the logs means it leaked.
const CODE: &str = "echo zebra-quokka-7731 > /tmp/greenlight-leak-canary";
/// A wrong token an attacker (or a misconfigured agent) presents.
const WRONG_TOKEN: &str = "wrong-token-zzzz-0123456789abcdef";

async fn wait_ready(http: &reqwest::Client, bin: &Binary) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = http
            .get(bin.url("/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ready {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn signed_click(
    http: &reqwest::Client,
    bin: &Binary,
    payload: &str,
    secret_ok: bool,
) -> StatusCode {
    let now = chrono::Utc::now().timestamp();
    let (body, signature) = TestApp::signed_form(payload, now);
    let signature = if secret_ok {
        signature
    } else {
        greenlight::slack::signature::SignatureVerifier::new("not-the-secret".to_owned().into())
            .sign(now, &body)
    };
    crate::helpers::post_interaction(
        http,
        &bin.url(""),
        body,
        Some(now.to_string()),
        Some(signature),
    )
    .await
    .status()
}

/// Whether a JSON log line carries `request_id == id`, as an event field or in one of
/// its spans.
fn carries_request_id(line: &Value, id: &str) -> bool {
    line["fields"]["request_id"] == id
        || line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == id))
}

#[tokio::test]
async fn json_logs_carry_request_ids_and_never_secrets_or_code() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("greenlight.db");
    let mut bin = Binary::start(
        &slack,
        dir.path(),
        &db,
        "json.log",
        &[
            ("GREENLIGHT_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug,greenlight=trace"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    wait_ready(&http, &bin).await;

    // Submit → Slack message → approve click → read back.
    let submitted: Value = http
        .post(bin.url("/v1/approvals"))
        .bearer_auth(AGENT_TOKEN)
        .header("Idempotency-Key", "log-test-1")
        .json(&serde_json::json!({"code": CODE, "language": "bash", "title": "log test"}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let id = submitted["id"].as_str().expect("id").to_owned();
    let post = slack.nth_call("chat.postMessage", 1).await;
    assert_eq!(approval_id_of(&post), id);
    assert!(
        post.body.to_string().contains("zebra-quokka-7731"),
        "the code did reach Slack"
    );
    let forged = TestApp::click_payload(&id, "greenlight_deny", "U0MALLORY");
    assert_eq!(
        signed_click(&http, &bin, &forged, false).await,
        StatusCode::UNAUTHORIZED
    );
    let click = TestApp::click_payload(&id, "greenlight_approve", "U0ALICE");
    assert_eq!(
        signed_click(&http, &bin, &click, true).await,
        StatusCode::OK
    );
    // Another agent's valid token: refused, and never logged either.
    let other = http
        .get(bin.url(&format!("/v1/approvals/{id}")))
        .bearer_auth(OTHER_AGENT_TOKEN)
        .send()
        .await
        .expect("fetch");
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let fetched: Value = http
        .get(bin.url(&format!("/v1/approvals/{id}")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("fetch")
        .json()
        .await
        .expect("json");
    assert_eq!(fetched["status"], "approved");
    // A wrong token, on the agent API.
    let wrong = http
        .get(bin.url(&format!("/v1/approvals/{id}")))
        .bearer_auth(WRONG_TOKEN)
        .send()
        .await
        .expect("wrong token");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    slack.nth_call("chat.update", 1).await;

    bin.sigterm();
    assert!(bin.wait_exit(Duration::from_secs(20)).await.success());
    let log = bin.stderr();

    let mut lines = Vec::new();
    for (n, raw) in log.lines().enumerate() {
        let line: Value = serde_json::from_str(raw)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {raw}", n + 1));
        assert!(
            line["level"].is_string() && line["timestamp"].is_string(),
            "{raw}"
        );
        lines.push(line);
    }
    assert!(
        lines.len() > 10,
        "debug logging produced {} lines",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" || l["level"] == "TRACE"),
        "RUST_LOG=debug took effect"
    );

    for secret in [
        BOT_TOKEN,
        SIGNING_SECRET,
        AGENT_TOKEN,
        OTHER_AGENT_TOKEN,
        WRONG_TOKEN,
        "zebra-quokka-7731",
        "Bearer ",
        "authorization",
    ] {
        let hits: Vec<&str> = log
            .lines()
            .filter(|l| l.to_lowercase().contains(&secret.to_lowercase()))
            .collect();
        assert!(hits.is_empty(), "{secret:?} appears in the logs: {hits:#?}");
    }
    // Routes are logged as templates; the id travels as `request_id`, not in a path.
    assert!(!log.contains(&format!("/v1/approvals/{id}")));

    for message in ["approval submitted", "click", "approval decided"] {
        let about: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .collect();
        assert!(!about.is_empty(), "a {message:?} line");
        for line in about {
            assert!(
                carries_request_id(line, &id),
                "{message:?} without request_id: {line}"
            );
        }
    }
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("forged"))),
        "the forged click is logged"
    );
}

#[tokio::test]
async fn an_invalid_log_format_is_a_one_line_config_error() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("greenlight.db");
    let mut env = base_env(&slack, &crate::helpers::database::url(&db));
    env.insert("GREENLIGHT_LOG_FORMAT".into(), "yaml".into());
    let output = command(&env, dir.path())
        .arg("serve")
        .output()
        .expect("run greenlight");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert_eq!(
        stderr,
        "greenlight: GREENLIGHT_LOG_FORMAT is invalid: \"yaml\" is not a log format; use text or json\n"
    );
    assert!(output.stdout.is_empty());
}
