//! Nothing lost: idempotency, cancel, the audit trail and its export, listing,
//! retention, kill -9 recovery, and the store under concurrency.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    approval_id_of, base_env,
    binary::{run, Binary},
    request, spawn_app, spawn_app_with, FakeSlack, Reply, TestApp, AGENT_TOKEN, OTHER_AGENT_TOKEN,
};

/// Two Idempotency-Key headers are refused: which one the agent meant is unknowable.
/// Before, the first was used silently.
#[tokio::test]
async fn two_idempotency_keys_are_refused() {
    let app = spawn_app().await;
    let answer = app
        .http
        .post(app.url("/v1/approvals"))
        .bearer_auth(AGENT_TOKEN)
        .header("Idempotency-Key", "deploy-1")
        .header("Idempotency-Key", "deploy-2")
        .json(&request("make deploy"))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("one Idempotency-Key")),
        "{body}"
    );
    let list = app.get("/v1/approvals").await.body;
    assert_eq!(list["approvals"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn idempotency_key_returns_the_same_request_and_posts_once() {
    let app = spawn_app().await;
    let body = request("kubectl rollout restart deploy/api");
    let first = app.submit_with_key(AGENT_TOKEN, "deploy-42", &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    app.slack.nth_call("chat.postMessage", 1).await;
    let again = app.submit_with_key(AGENT_TOKEN, "deploy-42", &body).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["id"], first.body["id"]);

    // Same key, different body: refused, nothing created.
    let mut other = body.clone();
    other["code"] = json!("kubectl delete ns prod");
    let conflict = app.submit_with_key(AGENT_TOKEN, "deploy-42", &other).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.body["error"]["code"], "idempotency_conflict");

    // Keys are scoped per agent: another agent's identical key is its own request.
    let theirs = app
        .submit_with_key(OTHER_AGENT_TOKEN, "deploy-42", &body)
        .await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED);
    assert_ne!(theirs.body["id"], first.body["id"]);

    app.slack.nth_call("chat.postMessage", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.slack.calls_to("chat.postMessage").len(),
        2,
        "one message per distinct request"
    );

    // After a decision the same key answers with the decision.
    let id = first.body["id"].as_str().expect("id");
    app.approve(id, "U0ALICE").await;
    let decided = app.submit_with_key(AGENT_TOKEN, "deploy-42", &body).await;
    assert_eq!(decided.status, StatusCode::OK);
    assert_eq!(decided.body["status"], "approved");
}

#[tokio::test]
async fn cancel_withdraws_a_pending_request_and_nothing_changes_it_after() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("rm -rf ./dist")).await;

    let not_owner = app.cancel(&id, OTHER_AGENT_TOKEN).await;
    assert_eq!(not_owner.status, StatusCode::FORBIDDEN);

    let cancelled = app.cancel(&id, AGENT_TOKEN).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    let body = cancelled.body;
    assert_eq!(
        (body["status"].as_str(), body["approved"].as_bool()),
        (Some("cancelled"), Some(false))
    );

    let update = app
        .wait_for_update("the withdrawn message", |c| {
            c.body["blocks"].to_string().contains("Withdrawn")
        })
        .await;
    assert!(!update.body["blocks"]
        .to_string()
        .contains("greenlight_approve"));

    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    assert_eq!(app.approval(&id).await["status"], "cancelled");

    let again = app.cancel(&id, AGENT_TOKEN).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let body = again.body;
    assert_eq!(body["error"]["code"], "already_decided");

    // Cancelling a decided request is a conflict too.
    let decided = app.submit_and_post(request("ls")).await;
    app.approve(&decided, "U0ALICE").await;
    let late = app.cancel(&decided, AGENT_TOKEN).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(app.approval(&decided).await["status"], "approved");

    let unknown = app
        .cancel(&uuid::Uuid::new_v4().to_string(), AGENT_TOKEN)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

fn kinds(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn events_record_the_whole_story_and_export_as_json_lines() {
    let app = spawn_app().await;
    let id = app.submit_and_post(request("make deploy")).await;
    // Slack has the message; its `posted` entry commits a moment later.
    wait_for_event(&app, &id, "posted").await;
    app.approve(&id, "U0ALICE").await;
    app.approve(&id, "U0BOB").await;
    app.wait_for_update("the approved message", |_| true).await;

    let events = app.get(&format!("/v1/approvals/{id}/events")).await.body;
    assert_eq!(
        kinds(&events),
        ["submitted", "routed", "posted", "decided", "click_ignored"]
    );
    let list = events["events"].as_array().expect("list");
    assert_eq!(list[0]["actor"], "ci-bot");
    assert_eq!(list[2]["detail"]["channel"], crate::helpers::CHANNEL);
    assert!(list[2]["detail"]["ts"].is_string());
    assert_eq!(
        (
            list[3]["actor"].as_str(),
            list[3]["detail"]["button"].as_str()
        ),
        (Some("U0ALICE"), Some("approve"))
    );
    assert_eq!(
        (list[4]["actor"].as_str(), list[4]["detail"]["why"].as_str()),
        (Some("U0BOB"), Some("late"))
    );

    let unknown = app
        .get(&format!("/v1/approvals/{}/events", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // The CLI export, from a separate process reading the same database.
    let env = HashMap::from([("GREENLIGHT_DATABASE_URL".to_owned(), app.db_url())]);
    let dir = tempfile::tempdir().expect("dir");
    let (code, stdout, stderr) = run(&env, dir.path(), &["audit", "export"]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|l| l["approval_id"] == id.as_str()));
    assert!(lines
        .windows(2)
        .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));

    let (code, stdout, _) = run(
        &env,
        dir.path(),
        &["audit", "export", "--since", "2999-01-01T00:00:00Z"],
    )
    .await;
    assert_eq!((code, stdout.as_str()), (0, ""));
    let (code, _, stderr) = run(
        &env,
        dir.path(),
        &["audit", "export", "--since", "last tuesday"],
    )
    .await;
    assert_eq!(code, 2);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--since"), "{stderr}");

    let missing = HashMap::from([(
        "GREENLIGHT_DATABASE_URL".to_owned(),
        format!("sqlite://{}/nope.db", dir.path().display()),
    )]);
    let (code, _, stderr) = run(&missing, dir.path(), &["audit", "export"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot open the database"), "{stderr}");
    assert!(
        !dir.path().join("nope.db").exists(),
        "export must not create a database"
    );
}

#[tokio::test]
async fn list_filters_by_status_and_limits() {
    let app = spawn_app().await;
    let a = app.submit_and_post(request("a")).await;
    let b = app.submit_and_post(request("b")).await;
    let _c = app.submit_and_post(request("c")).await;
    app.approve(&a, "U0ALICE").await;

    let pending = app.get("/v1/approvals?status=pending").await.body;
    let ids: Vec<&str> = pending["approvals"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&b.as_str()) && !ids.contains(&a.as_str()));
    let one = app.get("/v1/approvals?limit=1").await.body;
    assert_eq!(one["approvals"].as_array().expect("list").len(), 1);
    let all = app.get("/v1/approvals").await.body;
    assert_eq!(all["approvals"].as_array().expect("list").len(), 3);
    for bad in [
        "/v1/approvals?status=maybe",
        "/v1/approvals?limit=0",
        "/v1/approvals?limit=x",
    ] {
        let answer = app.get(bad).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(answer.body["error"]["code"], "invalid_request");
    }
}

#[tokio::test]
async fn retention_prunes_old_decided_requests_but_never_pending_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let db_url = crate::helpers::database::url(&dir.path().join("gl.db"));
    let app = spawn_app_with(&[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    let old = app.submit_and_post(request("old")).await;
    let recent = app.submit_and_post(request("recent")).await;
    let pending = app.submit_and_post(request("pending")).await;
    app.approve(&old, "U0ALICE").await;
    app.approve(&recent, "U0ALICE").await;
    // A batch of one, whose item is decided (withdrawn) and aged with `old`.
    let batch = app
        .post_raw(
            "/v1/batches",
            Some(AGENT_TOKEN),
            "application/json",
            serde_json::to_vec(&json!({"actions": [request("batched")]})).expect("json"),
        )
        .await;
    assert_eq!(batch.status, StatusCode::ACCEPTED, "{:?}", batch.body);
    let batch_id = batch.body["id"].as_str().expect("batch id").to_owned();
    let item = batch.body["approvals"][0]["id"]
        .as_str()
        .expect("item id")
        .to_owned();
    assert_eq!(app.cancel(&item, AGENT_TOKEN).await.status, StatusCode::OK);
    app.stop().await;

    // Age one decision (and the pending request's creation) by ten days.
    crate::helpers::database::execute(
        &db_url,
        "UPDATE approvals SET decided_at = '2000-01-01T00:00:00.000Z' WHERE id = ?",
        &[&old],
    )
    .await;
    crate::helpers::database::execute(
        &db_url,
        "UPDATE approvals SET created_at = '2000-01-01T00:00:00.000Z' WHERE id = ?",
        &[&pending],
    )
    .await;
    crate::helpers::database::execute(
        &db_url,
        "UPDATE approvals SET decided_at = '2000-01-01T00:00:00.000Z' WHERE id = ?",
        &[&item],
    )
    .await;

    let app = spawn_app_with(&[
        ("GREENLIGHT_DATABASE_URL", &db_url),
        ("GREENLIGHT_RETENTION_DAYS", "1"),
    ])
    .await;
    // The pruner runs once at start; wait for it to have removed the old request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.get(&format!("/v1/approvals/{old}")).await.status != StatusCode::NOT_FOUND {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old decided request was not pruned"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.approval(&recent).await["status"], "approved");
    assert_eq!(app.approval(&pending).await["status"], "pending");
    // A batch whose every item was pruned goes too (it answered 200 with no items).
    let gone = app.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:?}", gone.body);
    let events = app
        .get(&format!("/v1/approvals/{recent}/events"))
        .await
        .body;
    assert_eq!(kinds(&events), ["submitted", "routed", "posted", "decided"]);

    let export_env = HashMap::from([("GREENLIGHT_DATABASE_URL".to_owned(), db_url.clone())]);
    let (code, stdout, stderr) = run(&export_env, dir.path(), &["audit", "export"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains(&old),
        "pruned events are gone from the export"
    );
    assert!(stdout.contains(&recent) && stdout.contains(&pending));
}

/// The binary is killed with SIGKILL mid-flight and restarted on the same database:
/// nothing is lost, deadlines hold, and the request that expired while it was down is
/// expired at start-up with its Slack message updated.
#[tokio::test]
async fn kill_nine_and_restart_loses_nothing() {
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let db_url = crate::helpers::database::url(&dir.path().join("gl.db"));
    let env = base_env(&slack, &db_url);
    let http = reqwest::Client::new();

    let first = Binary::serve(&env, dir.path(), "first.log").await;
    let mut ids = Vec::new();
    let mut expires = Vec::new();
    for (code, timeout) in [("short", 2), ("approve-me", 120), ("reattach", 120)] {
        let answer: Value = http
            .post(first.url("/v1/approvals"))
            .bearer_auth(AGENT_TOKEN)
            .json(&json!({"code": code, "timeout_secs": timeout}))
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        ids.push(answer["id"].as_str().expect("id").to_owned());
        expires.push(answer["expires_at"].as_str().expect("expires").to_owned());
    }
    let posts = slack
        .wait_until(Duration::from_secs(30), "three messages", |c| {
            c.iter().filter(|c| c.method == "chat.postMessage").count() >= 3
        })
        .await;
    let ts_of = |id: &str| -> String {
        let post = posts
            .iter()
            .filter(|c| c.method == "chat.postMessage")
            .position(|c| approval_id_of(c) == id)
            .expect("posted");
        format!("1700000000.{:06}", post + 1)
    };
    // An agent is long-polling when the process dies.
    let poll = tokio::spawn(
        http.get(first.url(&format!("/v1/approvals/{}?wait=60", ids[2])))
            .bearer_auth(AGENT_TOKEN)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.kill9();
    assert!(
        poll.await.expect("task").is_err(),
        "the agent's connection dropped"
    );

    // Stay down past the short request's deadline.
    let short_deadline = chrono::DateTime::parse_from_rfc3339(&expires[0]).expect("rfc3339");
    while chrono::Utc::now() <= short_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let updates_before = slack.calls_to("chat.update").len();
    assert_eq!(updates_before, 0);

    let second = Binary::serve(&env, dir.path(), "second.log").await;
    let get = |id: &str, wait: u32| {
        http.get(second.url(&format!("/v1/approvals/{id}?wait={wait}")))
            .bearer_auth(AGENT_TOKEN)
            .send()
    };
    let short: Value = get(&ids[0], 0)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(short["status"], "expired");
    assert_eq!(short["approved"], false);
    let short_ts = ts_of(&ids[0]);
    slack
        .wait_until(Duration::from_secs(30), "the expired message update", |c| {
            c.iter()
                .any(|c| c.method == "chat.update" && c.body["ts"] == short_ts.as_str())
        })
        .await;

    // Pending ones are still pending with their original deadlines.
    for (i, id) in ids.iter().enumerate().skip(1) {
        let body: Value = get(id, 0).await.expect("get").json().await.expect("json");
        assert_eq!(body["status"], "pending");
        assert_eq!(body["expires_at"], expires[i].as_str());
    }
    // The agent re-attaches; a click after the restart decides as usual.
    let reattached = tokio::spawn(get(&ids[2], 30));
    let base = second.url("");
    for id in &ids[1..] {
        let payload = TestApp::click_payload(id, "greenlight_approve", "U0ALICE");
        let ack = crate::helpers::post_signed(&http, &base, &payload).await;
        assert_eq!(ack.status(), StatusCode::OK);
    }
    let answer: Value = reattached
        .await
        .expect("task")
        .expect("poll")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["status"], "approved");
    let approved: Value = get(&ids[1], 0)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(approved["status"], "approved");
    // No message was posted twice.
    assert_eq!(slack.calls_to("chat.postMessage").len(), 3);
    second.kill9();
}

/// One operation of the storm in `kill_nine_amid_a_thousand_acknowledgements…`.
#[derive(Debug, Clone)]
enum StormOp {
    /// A new request, `POST /v1/approvals` with an `Idempotency-Key`, as the agent
    /// holding `token`.
    Submit {
        token: String,
        key: String,
        body: Value,
    },
    /// Approve clicked on a pending request.
    Approve { id: String, user: String },
    /// The deny-reason modal submitted for a pending request (what a Deny click leads
    /// to; the submission alone decides).
    Deny { id: String, user: String },
}

/// What the service acknowledged, as the caller saw it.
#[derive(Debug, Clone, PartialEq)]
enum StormAck {
    /// 202 with this id.
    Submitted { id: String },
    /// 200: the click was taken.
    Clicked,
    /// 200 with an empty body: denied with our reason.
    Denied,
    /// 200 with `response_action: errors`: decided nothing (already decided).
    DenyRefused,
}

const STORM_REASON: &str = "not during the storm";

/// Sends one operation; `None` when no acknowledgement arrived (connection refused or
/// dropped, as when the process is killed).
async fn storm_send(http: &reqwest::Client, base: &str, op: &StormOp) -> Option<StormAck> {
    match op {
        StormOp::Submit { token, key, body } => {
            let response = http
                .post(format!("{base}/v1/approvals"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .await
                .ok()?;
            if response.status() != StatusCode::ACCEPTED {
                return None;
            }
            let body: Value = response.json().await.ok()?;
            Some(StormAck::Submitted {
                id: body["id"].as_str()?.to_owned(),
            })
        }
        StormOp::Approve { id, user } => {
            let payload = TestApp::click_payload(id, "greenlight_approve", user);
            let (status, _) = storm_interact(http, base, &payload).await?;
            (status == StatusCode::OK).then_some(StormAck::Clicked)
        }
        StormOp::Deny { id, user } => {
            let payload = TestApp::reason_payload(id, user, STORM_REASON);
            let (status, body) = storm_interact(http, base, &payload).await?;
            if status != StatusCode::OK {
                return None;
            }
            Some(if body.is_empty() {
                StormAck::Denied
            } else {
                StormAck::DenyRefused
            })
        }
    }
}

/// A signed interaction that reports a dropped connection instead of panicking.
async fn storm_interact(
    http: &reqwest::Client,
    base: &str,
    payload: &str,
) -> Option<(StatusCode, Vec<u8>)> {
    let now = chrono::Utc::now().timestamp();
    let (body, signature) = TestApp::signed_form(payload, now);
    let response = http
        .post(format!("{base}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("X-Slack-Request-Timestamp", now.to_string())
        .header("X-Slack-Signature", signature)
        .body(body)
        .send()
        .await
        .ok()?;
    let status = response.status();
    Some((status, response.bytes().await.ok()?.to_vec()))
}

/// The audit-trail kinds that end a request: exactly one per final request. (A
/// `post_failed` ends one too, unless it is only about an FYI message.)
fn is_final_event(event: &Value) -> bool {
    match event["kind"].as_str() {
        Some("decided" | "expired" | "cancelled" | "auto_decided") => true,
        Some("post_failed") => event["detail"]["fyi"] != true,
        _ => false,
    }
}

/// A directory for the storm's database: in memory (/dev/shm) where there is one. A
/// kill -9 leaves the kernel's page cache alone, so what SQLite committed survives it
/// on any file system; on a disk every commit also waits for an fsync, which only a
/// power cut would need and which would make the test take many times longer.
fn storm_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("temp dir")
}

/// Kill -9 while 1,000 concurrent submits and clicks are being acknowledged, then
/// restart: every acknowledged one is there, and each request has exactly one decision.
///
/// 200 requests are pending, with their Slack messages, when the storm starts. 750 new
/// submissions (from 8 agents, each with an `Idempotency-Key`) go out at once, while
/// 250 interactions stream in 32 at a time, mixed: 150 Approve clicks (on pending
/// 0..150) and 100 deny-reason submissions (on pending 100..200), so on 50 requests an
/// Approve and a Deny race. Streaming the interactions keeps them from all being
/// answered before the submissions get a turn at the single SQLite writer (an agent's
/// submissions are admitted one at a time), so both kinds are in flight when the
/// process is killed: once 30 submissions and 100 interactions have been acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_amid_a_thousand_acknowledgements_loses_none_and_decides_each_once() {
    const PENDING: usize = 200;
    const SUBMITS: usize = 750;
    const AGENTS: usize = 8;
    // Pending requests by what the storm does to them.
    const APPROVE_ONLY: std::ops::Range<usize> = 0..100;
    const CONTESTED: std::ops::Range<usize> = 100..150;
    const DENY_ONLY: std::ops::Range<usize> = 150..200;
    const CLICKS_AT_ONCE: usize = 32;
    const KILL_AFTER_SUBMITS: usize = 30;
    const KILL_AFTER_CLICKS: usize = 100;
    let started = std::time::Instant::now();
    let slack = FakeSlack::start().await;
    let dir = storm_dir();
    let db_path = dir.path().join("gl.db");
    let tokens: Vec<String> = (0..AGENTS)
        .map(|n| format!("storm-agent-{n}-0123456789abcdef"))
        .collect();
    let api_tokens = std::iter::once(format!("ci-bot:{AGENT_TOKEN}"))
        .chain(
            tokens
                .iter()
                .enumerate()
                .map(|(n, t)| format!("storm-{n}:{t}")),
        )
        .collect::<Vec<_>>()
        .join(",");
    let env = [("GREENLIGHT_API_TOKENS", api_tokens.as_str())];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let body = |code: String| json!({"code": code, "language": "bash", "timeout_secs": 600});

    let first = Binary::start(&slack, dir.path(), &db_path, "first.log", &env).await;
    let base = first.url("");
    let pending: Vec<String> = futures::future::join_all((0..PENDING).map(|i| {
        let (http, base, body) = (&http, &base, body(format!("echo pending {i}")));
        async move {
            let answer = http
                .post(format!("{base}/v1/approvals"))
                .bearer_auth(AGENT_TOKEN)
                .json(&body)
                .send()
                .await
                .expect("submit");
            assert_eq!(answer.status(), StatusCode::ACCEPTED);
            let answer: Value = answer.json().await.expect("json");
            answer["id"].as_str().expect("id").to_owned()
        }
    }))
    .await;
    slack
        .wait_until(Duration::from_secs(120), "the pending messages", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage" && c.succeeded)
                .count()
                >= PENDING
        })
        .await;
    let storm_started = started.elapsed();

    let submits: Vec<StormOp> = (0..SUBMITS)
        .map(|i| StormOp::Submit {
            token: tokens[i % AGENTS].clone(),
            key: format!("storm-{i}"),
            body: body(format!("echo storm {i}")),
        })
        .collect();
    // Every kind early in the stream; a contested pair travels side by side, so the
    // Approve and the Deny race.
    let approve = |i: usize| StormOp::Approve {
        id: pending[i].clone(),
        user: format!("U0APPROVE{i}"),
    };
    let deny = |i: usize| StormOp::Deny {
        id: pending[i].clone(),
        user: format!("U0DENY{i}"),
    };
    let mut clicks = Vec::new();
    for (n, i) in APPROVE_ONLY.enumerate() {
        clicks.push(approve(i));
        if n < CONTESTED.len() && n < DENY_ONLY.len() {
            let (c, d) = (CONTESTED.start + n, DENY_ONLY.start + n);
            clicks.extend([approve(c), deny(c), deny(d)]);
        }
    }
    assert_eq!(submits.len() + clicks.len(), 1000);

    // Acknowledged submissions [0] and interactions [1] so far, and a bell on each.
    let acks = [AtomicUsize::new(0), AtomicUsize::new(0)];
    let acked = tokio::sync::Notify::new();
    let send = |op: &StormOp| {
        let (http, base, acks, acked) = (&http, &base, &acks, &acked);
        let op = op.clone();
        async move {
            let ack = storm_send(http, base, &op).await;
            if let Some(ack) = &ack {
                let counter = usize::from(!matches!(ack, StormAck::Submitted { .. }));
                acks[counter].fetch_add(1, Ordering::SeqCst);
                acked.notify_waiters();
            }
            ack
        }
    };
    let storm = futures::future::join(
        futures::future::join_all(submits.iter().map(send)),
        futures::StreamExt::collect::<Vec<_>>(futures::StreamExt::buffered(
            futures::stream::iter(clicks.iter().map(send)),
            CLICKS_AT_ONCE,
        )),
    );
    let killer = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = acked.notified();
            let so_far = (
                acks[0].load(Ordering::SeqCst),
                acks[1].load(Ordering::SeqCst),
            );
            if so_far.0 >= KILL_AFTER_SUBMITS && so_far.1 >= KILL_AFTER_CLICKS {
                first.kill9();
                return so_far;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "in 60 s only {} submissions and {} interactions were acknowledged",
                so_far.0,
                so_far.1
            );
        }
    };
    let ((submit_answers, click_answers), at_kill) = tokio::join!(storm, killer);
    let ops: Vec<StormOp> = submits.into_iter().chain(clicks).collect();
    let answers = submit_answers.into_iter().chain(click_answers);
    let storm_done = started.elapsed();
    let results: Vec<(&StormOp, StormAck)> = ops
        .iter()
        .zip(answers)
        .filter_map(|(op, ack)| Some((op, ack?)))
        .collect();
    assert!(
        results.len() < ops.len(),
        "the kill came after every operation was answered: it proves nothing"
    );

    let second = Binary::start(&slack, dir.path(), &db_path, "second.log", &env).await;
    // An agent reads only its own requests: each is read with its submitter's token.
    let token_of: HashMap<String, &str> = std::iter::once(("ci-bot".to_owned(), AGENT_TOKEN))
        .chain(
            tokens
                .iter()
                .enumerate()
                .map(|(n, t)| (format!("storm-{n}"), t.as_str())),
        )
        .collect();
    let get = |(id, agent): (String, String)| {
        let (http, url) = (&http, second.url(&format!("/v1/approvals/{id}")));
        let token = token_of[&agent];
        async move {
            let answer = http.get(url).bearer_auth(token).send().await.expect("get");
            assert_eq!(answer.status(), StatusCode::OK, "approval {id}");
            (id, answer.json::<Value>().await.expect("json"))
        }
    };

    // Every request the audit trail knows, with its final events.
    let export_env = HashMap::from([(
        "GREENLIGHT_DATABASE_URL".to_owned(),
        crate::helpers::database::url(&db_path),
    )]);
    let (code, stdout, stderr) = run(&export_env, dir.path(), &["audit", "export"]).await;
    assert_eq!(code, 0, "{stderr}");
    let mut trail: HashMap<String, (usize, Vec<Value>)> = HashMap::new();
    let mut submitter: HashMap<String, String> = HashMap::new();
    for line in stdout.lines() {
        let event: Value = serde_json::from_str(line).expect("JSON line");
        let entry = trail
            .entry(event["approval_id"].as_str().expect("id").to_owned())
            .or_default();
        if event["kind"] == "submitted" {
            entry.0 += 1;
            submitter.insert(
                event["approval_id"].as_str().expect("id").to_owned(),
                event["actor"]
                    .as_str()
                    .expect("the submitting agent")
                    .to_owned(),
            );
        }
        if is_final_event(&event) {
            entry.1.push(event);
        }
    }
    let approvals: HashMap<String, Value> =
        futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
            futures::stream::iter(
                trail
                    .keys()
                    .map(|id| (id.clone(), submitter[id].clone()))
                    .map(get),
            ),
            16,
        ))
        .await;

    // Acknowledged means stored, with the acknowledged outcome. Where an Approve and a
    // Deny raced, either may have won, but only one.
    let contested: std::collections::HashSet<&String> = pending[CONTESTED].iter().collect();
    let (mut submitted, mut clicked, mut denied) = (0, 0, 0);
    for (op, ack) in &results {
        match (op, ack) {
            (StormOp::Submit { token, key, body }, StormAck::Submitted { id }) => {
                submitted += 1;
                assert!(approvals.contains_key(id), "acknowledged submission {id}");
                let again = http
                    .post(second.url("/v1/approvals"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", key)
                    .json(body)
                    .send()
                    .await
                    .expect("replay");
                let again: Value = again.json().await.expect("json");
                assert_eq!(again["id"], id.as_str(), "the key {key} finds it again");
            }
            (StormOp::Approve { id, user }, StormAck::Clicked) => {
                clicked += 1;
                let approval = &approvals[id];
                if !contested.contains(id) || approval["status"] == "approved" {
                    assert_eq!(
                        (approval["status"].as_str(), approval["decided_by"].as_str()),
                        (Some("approved"), Some(user.as_str())),
                        "acknowledged Approve on {id}"
                    );
                } else {
                    assert_eq!(approval["status"], "denied", "{approval}");
                }
            }
            (StormOp::Deny { id, user }, StormAck::Denied) => {
                denied += 1;
                let approval = &approvals[id];
                assert_eq!(
                    (
                        approval["status"].as_str(),
                        approval["decided_by"].as_str(),
                        approval["reason"].as_str()
                    ),
                    (Some("denied"), Some(user.as_str()), Some(STORM_REASON)),
                    "acknowledged Deny on {id}"
                );
            }
            (StormOp::Deny { id, .. }, StormAck::DenyRefused) => {
                assert_eq!(approvals[id]["status"], "approved", "refused Deny on {id}");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        submitted > 0 && clicked > 0,
        "the kill came before submissions and clicks were both acknowledged"
    );

    // Each request: submitted once, at most one final event, exactly one if final,
    // and a decision's event names the outcome and the one who decided.
    for id in &pending {
        assert!(trail.contains_key(id), "pre-submitted {id} is on the trail");
    }
    for (id, (submissions, finals)) in &trail {
        let approval = &approvals[id];
        assert_eq!(*submissions, 1, "{id} submitted once");
        let is_final = approval["status"] != "pending";
        assert_eq!(
            finals.len(),
            usize::from(is_final),
            "{id} is {} with final events {finals:?}",
            approval["status"]
        );
        if let Some(event) = finals.first().filter(|e| e["kind"] == "decided") {
            assert_eq!(
                (&event["detail"]["status"], &event["actor"]),
                (&approval["status"], &approval["decided_by"]),
                "{id}"
            );
        }
    }
    second.kill9();
    eprintln!(
        "kill -9 storm: killed at {} submissions + {} interactions acknowledged; {} \
         acknowledged in all ({submitted} submissions, {clicked} Approve clicks, {denied} \
         denials); {} requests checked; storm from {storm_started:?} to {storm_done:?}, \
         test {:?}",
        at_kill.0,
        at_kill.1,
        results.len(),
        trail.len(),
        started.elapsed()
    );
}

/// 1,000 requests submitted and decided concurrently (half approved by a click, half
/// withdrawn by the agent): every one is stored exactly once with its own outcome and
/// exactly one final event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_are_each_persisted_once() {
    let app = spawn_app().await;
    const N: usize = 1000;
    let ids: Vec<String> = futures::future::join_all((0..N).map(|i| {
        let app = &app;
        async move {
            let answer = app.submit(request(&format!("echo {i}"))).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
            answer.body["id"].as_str().expect("id").to_owned()
        }
    }))
    .await;
    app.slack
        .wait_until(Duration::from_secs(180), "1000 messages", |c| {
            c.iter().filter(|c| c.method == "chat.postMessage").count() >= N
        })
        .await;
    futures::future::join_all(ids.iter().enumerate().map(|(i, id)| {
        let app = &app;
        async move {
            if i % 2 == 0 {
                assert_eq!(app.approve(id, "U0ALICE").await.status, StatusCode::OK);
            } else {
                let response = app.cancel(id, AGENT_TOKEN).await;
                assert_eq!(
                    response.status,
                    StatusCode::OK,
                    "cancel {id}: {:?}; the request now: {}",
                    response.body,
                    app.approval(id).await
                );
            }
        }
    }))
    .await;

    // Read back from the database itself (SQLite or PostgreSQL), in aggregate.
    let db = app.db_url();
    let number = |sql: String| {
        let db = db.clone();
        async move { crate::helpers::database::number(&db, &sql, &[]).await }
    };
    assert_eq!(
        number("SELECT COUNT(*) FROM approvals".into()).await,
        N as i64
    );
    let quoted = |parity: usize| {
        ids.iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .map(|(_, id)| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    for (parity, status) in [(0, "approved"), (1, "cancelled")] {
        assert_eq!(
            number(format!(
                "SELECT COUNT(*) FROM approvals WHERE status = '{status}' AND id IN ({})",
                quoted(parity)
            ))
            .await,
            (N / 2) as i64,
            "every {status} request has its status"
        );
    }
    assert_eq!(
        number(
            "SELECT COUNT(*) FROM approvals a WHERE (SELECT COUNT(*) FROM events e
               WHERE e.approval_id = a.id AND e.kind IN ('decided', 'cancelled')) <> 1"
                .into()
        )
        .await,
        0,
        "every request has exactly one final event"
    );
    let posted = number("SELECT COUNT(*) FROM events WHERE kind = 'posted'".into()).await;
    assert_eq!(posted, N as i64);
}

/// Waits until request `id` has an event of `kind`.
async fn wait_for_event(app: &TestApp, id: &str, kind: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !kinds(&app.get(&format!("/v1/approvals/{id}/events")).await.body)
        .iter()
        .any(|k| k == kind)
    {
        assert!(tokio::time::Instant::now() < deadline, "no {kind} event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slack fails the final update (down for good, so every retry fails): the decision
/// stands, and the next start shows it in the message. Once shown, it is not redone.
#[tokio::test]
async fn a_message_left_showing_pending_is_fixed_at_the_next_start() {
    let dir = tempfile::tempdir().expect("dir");
    let db_url = crate::helpers::database::url(&dir.path().join("gl.db"));
    let app = spawn_app_with(&[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    app.slack.always("chat.update", Reply::Status(503));
    let id = app.submit_and_post(request("make deploy")).await;
    assert_eq!(app.approve(&id, "U0ALICE").await.status, StatusCode::OK);
    wait_for_event(&app, &id, "slack_update_failed").await;
    assert_eq!(app.approval(&id).await["status"], "approved");
    app.stop().await;

    // Slack is back: the new start rewrites the message with the outcome.
    let app = spawn_app_with(&[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    let update = app
        .wait_for_update("the resynced message", |c| {
            c.body["ts"] == "1700000000.000001"
        })
        .await;
    let blocks = update.body["blocks"].to_string();
    assert!(
        !blocks.contains("greenlight_approve") && blocks.contains("Approved"),
        "{blocks}"
    );
    // Slack has the rewrite; stop once its outbox row is removed too (a stop in
    // between would leave it to be sent again, which is the next start's business).
    outbox_drained(&db_url).await;
    app.stop().await;

    // Synced now: a further start leaves the message alone.
    let app = spawn_app_with(&[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.slack.calls_to("chat.update").is_empty());
}

/// A message that is gone for good is not retried at every start.
#[tokio::test]
async fn a_vanished_message_is_not_resynced() {
    let dir = tempfile::tempdir().expect("dir");
    let db_url = crate::helpers::database::url(&dir.path().join("gl.db"));
    let app = spawn_app_with(&[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    app.slack
        .always("chat.update", Reply::Error("message_not_found"));
    let id = app.submit_and_post(request("make deploy")).await;
    app.approve(&id, "U0ALICE").await;
    wait_for_event(&app, &id, "slack_update_failed").await;
    app.stop().await;
    let app = spawn_app_with(&[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.slack.calls_to("chat.update").is_empty());
}

/// Waits (up to 10 s) until the database at `db_url` has no outbox rows left.
async fn outbox_drained(db_url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = crate::helpers::database::count(db_url, "SELECT COUNT(*) FROM outbox").await;
        if left == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} outbox rows still waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
