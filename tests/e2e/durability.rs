//! Nothing lost: idempotency, cancel, the audit trail and its export, listing,
//! retention, kill -9 recovery, and the store under concurrency.

use std::{collections::HashMap, time::Duration};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{
    approval_id_of, base_env,
    binary::{run, Binary},
    request, spawn_app, spawn_app_with, FakeSlack, Reply, TestApp, AGENT_TOKEN, OTHER_AGENT_TOKEN,
};

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
    let db_url = format!("sqlite://{}", dir.path().join("gl.db").display());
    let app = spawn_app_with(&[("GREENLIGHT_DATABASE_URL", &db_url)]).await;
    let old = app.submit_and_post(request("old")).await;
    let recent = app.submit_and_post(request("recent")).await;
    let pending = app.submit_and_post(request("pending")).await;
    app.approve(&old, "U0ALICE").await;
    app.approve(&recent, "U0ALICE").await;
    app.stop().await;

    // Age one decision (and the pending request's creation) by ten days.
    let pool = sqlx::SqlitePool::connect(&db_url).await.expect("db");
    sqlx::query("UPDATE approvals SET decided_at = '2000-01-01T00:00:00.000Z' WHERE id = ?")
        .bind(&old)
        .execute(&pool)
        .await
        .expect("age");
    sqlx::query("UPDATE approvals SET created_at = '2000-01-01T00:00:00.000Z' WHERE id = ?")
        .bind(&pending)
        .execute(&pool)
        .await
        .expect("age");
    pool.close().await;

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
    let db_url = format!("sqlite://{}", dir.path().join("gl.db").display());
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
        .wait_until(Duration::from_secs(10), "three messages", |c| {
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
        .wait_until(Duration::from_secs(10), "the expired message update", |c| {
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
        .wait_until(Duration::from_secs(60), "1000 messages", |c| {
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
                assert_eq!(response.status, StatusCode::OK);
            }
        }
    }))
    .await;

    let pool = sqlx::SqlitePool::connect(&app.db_url()).await.expect("db");
    let rows = sqlx::query("SELECT id, status, (SELECT COUNT(*) FROM events e WHERE e.approval_id = a.id AND e.kind IN ('decided', 'cancelled')) AS finals FROM approvals a")
        .fetch_all(&pool)
        .await
        .expect("query");
    assert_eq!(rows.len(), N);
    let by_id: HashMap<String, (String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("id"),
                (r.get::<String, _>("status"), r.get::<i64, _>("finals")),
            )
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let (status, finals) = &by_id[id];
        assert_eq!(
            status,
            if i % 2 == 0 { "approved" } else { "cancelled" },
            "request {i}"
        );
        assert_eq!(*finals, 1, "request {i} has exactly one final event");
    }
    let posted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE kind = 'posted'")
        .fetch_one(&pool)
        .await
        .expect("count");
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
    let db_url = format!("sqlite://{}", dir.path().join("gl.db").display());
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
    let db_url = format!("sqlite://{}", dir.path().join("gl.db").display());
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
