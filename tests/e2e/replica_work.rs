//! Work shared by three replicas on one PostgreSQL database, counted exactly once from
//! the fakes' own records: decision callbacks (one replica killed -9 midway),
//! reminders and escalations, standing grants and their revocation, and a Slack post
//! slower than the outbox lease.
//!
//! Like `replicas.rs` (whose server, proxy and helpers these reuse), they need
//! PostgreSQL and start one of their own on the SQLite run, so they never skip.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    database,
    fake_slack::{approval_id_of, button_value, Call, FakeSlack, Reply},
    receiver::{Mode, Receiver},
    request, AGENT_TOKEN, CHANNEL,
};
use crate::replicas::{click, replicas, submit, try_click, unpooled, wait_final, Proxy, Server};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(45);

/// Waits until `check` holds for the database's answer to `sql` (a count).
async fn wait_count(db: &str, sql: &str, what: &str, check: impl Fn(i64) -> bool) -> i64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = database::count(db, sql).await;
        if check(n) {
            return n;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `id`'s audit trail, read through any replica.
async fn events(http: &reqwest::Client, base: &str, id: &str) -> Vec<Value> {
    for _ in 0..100 {
        if let Ok(response) = http
            .get(format!("{base}/v1/approvals/{id}/events"))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await
        {
            if let Ok(body) = response.json::<Value>().await {
                if let Some(events) = body["events"].as_array() {
                    return events.clone();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no events for {id}");
}

/// Cancels `id` through whichever replica answers (a cancel that reached the killed
/// replica may be lost; repeating one changes nothing once the request is final).
async fn cancel(http: &reqwest::Client, base: &str, id: &str) {
    for _ in 0..100 {
        if let Ok(response) = http
            .post(format!("{base}/v1/approvals/{id}/cancel"))
            .bearer_auth(AGENT_TOKEN)
            .send()
            .await
        {
            if response.status().is_success() || response.status() == StatusCode::CONFLICT {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} could not be cancelled");
}

/// 200 decided requests with a `callback_url`, submitted and decided through the
/// proxy (so spread across the replicas), one replica killed -9 midway: every
/// `webhook-id` reaches the receiver, none is *recorded* delivered twice, and a
/// `webhook-id` the receiver got twice is only one whose earlier attempt was cut off
/// by the kill before it could be recorded (at-least-once, as Standard Webhooks
/// receivers expect; no living replica ever resends a delivery another holds).
#[tokio::test]
async fn callbacks_across_three_replicas_one_killed_are_each_delivered_once() {
    const REQUESTS: usize = 200;
    const CONCURRENCY: usize = 16;
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let receiver = Receiver::start(Mode::Status(200)).await;
    let dir = tempfile::tempdir().expect("dir");
    let hosts = receiver.host();
    let secrets = format!("ci-bot:{SECRET}");
    // The default 15 s lease and 10 s attempt timeout: generous on purpose.
    let (db, mut replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        3,
        &[
            ("GREENLIGHT_CALLBACK_HOSTS", hosts.as_str()),
            ("GREENLIGHT_CALLBACK_SECRETS", secrets.as_str()),
            ("GREENLIGHT_CALLBACK_RETRY_FIRST_MS", "200"),
        ],
    )
    .await;
    let proxy = Arc::new(Proxy::start(replicas.iter().map(|r| r.addr).collect()).await);
    let http = unpooled();
    let callback = receiver.url("/cb");
    let decided = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let mut agents = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, proxy, decided, next, callback) = (
            http.clone(),
            proxy.clone(),
            decided.clone(),
            next.clone(),
            callback.clone(),
        );
        agents.spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= REQUESTS {
                    return ids;
                }
                let mut body = request(&format!("callback {n}"));
                body["callback_url"] = json!(callback);
                let mut id = None;
                for _ in 0..50 {
                    id = submit(&http, &proxy.url(""), &body, Some(&format!("cb-{n}"))).await;
                    if id.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let id = id.expect("a submission acknowledged");
                cancel(&http, &proxy.url(""), &id).await;
                decided.fetch_add(1, Ordering::Relaxed);
                ids.push(id);
            }
        });
    }
    while decided.load(Ordering::Relaxed) < REQUESTS / 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victim = replicas.remove(1);
    proxy.remove(victim.addr);
    victim.kill9();
    let mut ids = Vec::new();
    while let Some(agent) = agents.join_next().await {
        ids.extend(agent.expect("agent task"));
    }
    assert_eq!(ids.len(), REQUESTS);
    // Every delivery recorded delivered (the killed replica's lapse after its lease).
    wait_count(
        &db,
        "SELECT COUNT(*) FROM callbacks",
        "deliveries left undelivered",
        |n| n == 0,
    )
    .await;
    let delivered_twice = database::count(
        &db,
        "SELECT COUNT(*) FROM (SELECT detail::jsonb->>'webhook_id' FROM events
           WHERE kind = 'callback_delivered' GROUP BY 1 HAVING COUNT(*) > 1) AS twice",
    )
    .await;
    assert_eq!(delivered_twice, 0, "recorded delivered twice");
    assert_eq!(
        database::count(
            &db,
            "SELECT COUNT(*) FROM events WHERE kind = 'callback_delivered'"
        )
        .await,
        REQUESTS as i64
    );
    let received = receiver.by_webhook_id();
    assert_eq!(
        received.len(),
        REQUESTS,
        "every webhook-id reached the receiver"
    );
    // Attempts each replica recorded, per webhook-id: a living replica records every
    // attempt it makes, so an unrecorded one was the killed replica's.
    let mut recorded: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        for event in events(&http, &proxy.url(""), id).await {
            if event["kind"] == "callback_attempt" {
                let webhook = event["detail"]["webhook_id"].as_str().unwrap_or_default();
                *recorded.entry(webhook.to_owned()).or_insert(0) += 1;
            }
        }
    }
    let mut unexplained = Vec::new();
    let mut cut_off = 0;
    for (webhook, got) in &received {
        let attempts = recorded.get(webhook).copied().unwrap_or(0);
        // Every arrival is a recorded attempt, but for at most one that the kill cut
        // off before its replica could record it.
        if *got > attempts + 1 {
            unexplained.push((webhook.clone(), *got, attempts));
        } else if *got > attempts {
            cut_off += 1;
        }
    }
    assert!(unexplained.is_empty(), "delivered twice: {unexplained:?}");
    // Only what the killed replica had in flight can have been cut off.
    assert!(cut_off <= 16, "{cut_off} deliveries cut off by one kill");
    eprintln!(
        "callbacks: {REQUESTS} delivered, {cut_off} resent after the kill cut their attempt off"
    );
    drop(replicas);
}

const NUDGE_POLICY: &str = r#"
[[rule]]
name = "deploys"
code = '^deploy'
approvers = ["U0ALICE"]
timeout_secs = 120
remind_after_secs = 2
remind_every_secs = 1
escalate_after_secs = 4
escalate_to = ["U0CAROL"]
escalate_channel = "C0ESCALATE"
escalation_extends_secs = 30
"#;

fn posted_to(call: &Call, channel: &str, id: &str) -> bool {
    call.method == "chat.postMessage"
        && call.body["channel"] == channel
        && button_value(&call.body["blocks"], "greenlight_approve").as_deref() == Some(id)
}

/// Reminders and escalations with short timers across three replicas whose nudge
/// workers all race for the same due times: each reminder is fired (and posted in the
/// thread) once per due time, each escalation posted once.
#[tokio::test]
async fn reminders_and_escalations_across_three_replicas_are_sent_once() {
    const REQUESTS: usize = 9;
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, NUDGE_POLICY).expect("policy");
    let policy = policy.display().to_string();
    let (db, replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        3,
        &[("GREENLIGHT_POLICY", policy.as_str())],
    )
    .await;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..REQUESTS {
        let base = replicas[n % 3].url("");
        let body = json!({ "code": format!("deploy {n}"), "language": "bash" });
        ids.push(submit(&http, &base, &body, None).await.expect("submitted"));
    }
    // Every request escalated, and a few reminders after that.
    slack
        .wait_until(WAIT, "every escalation post", |calls| {
            ids.iter()
                .all(|id| calls.iter().any(|c| posted_to(c, "C0ESCALATE", id)))
        })
        .await;
    slack
        .wait_until(WAIT, "reminders after the escalation", |calls| {
            calls
                .iter()
                .filter(|c| c.method == "chat.postMessage" && c.body["thread_ts"].is_string())
                .count()
                >= REQUESTS * 4
        })
        .await;
    // Approved (on another replica than submitted it): the nudges stop. (Deny would
    // open the reason dialog first.)
    for (n, id) in ids.iter().enumerate() {
        try_click(
            &http,
            &replicas[(n + 1) % 3].url(""),
            id,
            "greenlight_approve",
            "U0ALICE",
        )
        .await;
        let last = wait_final(
            &http,
            &replicas[(n + 2) % 3].url(""),
            id,
            Some("greenlight_approve"),
        )
        .await;
        assert_eq!(last["status"], "approved", "{last}");
    }
    wait_count(
        &db,
        "SELECT COUNT(*) FROM outbox",
        "outbox rows left",
        |n| n == 0,
    )
    .await;
    let calls = slack.calls();
    for id in &ids {
        let trail = events(&http, &replicas[0].url(""), id).await;
        let kinds = |kind: &str| trail.iter().filter(|e| e["kind"] == kind).count();
        assert_eq!(kinds("escalated"), 1, "{id}: escalated once");
        let escalation_posts = calls
            .iter()
            .filter(|c| posted_to(c, "C0ESCALATE", id))
            .count();
        assert_eq!(escalation_posts, 1, "{id}: escalation posted once");
        // Each due time fired once: the reminder numbers never repeat.
        let mut numbers: Vec<i64> = trail
            .iter()
            .filter(|e| e["kind"] == "reminded")
            .filter_map(|e| e["detail"]["reminder"].as_i64())
            .collect();
        let fired = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), fired, "{id}: a reminder fired twice");
        // Reminders fired once the message was posted each reach its thread once.
        let posted_seq = trail
            .iter()
            .find(|e| e["kind"] == "posted" && e["detail"]["channel"] == CHANNEL)
            .and_then(|e| e["seq"].as_i64())
            .expect("posted");
        let ts = trail
            .iter()
            .find(|e| e["kind"] == "posted" && e["detail"]["channel"] == CHANNEL)
            .and_then(|e| e["detail"]["ts"].as_str())
            .expect("ts")
            .to_owned();
        let after_post = trail
            .iter()
            .filter(|e| e["kind"] == "reminded" && e["seq"].as_i64() > Some(posted_seq))
            .count();
        let in_thread = calls
            .iter()
            .filter(|c| {
                c.method == "chat.postMessage"
                    && c.body["channel"] == CHANNEL
                    && c.body["thread_ts"] == ts.as_str()
            })
            .count();
        // Each fired reminder reaches the thread at most once; the last one may be
        // dropped when the decision came before its turn (a final request gets none).
        assert!(
            in_thread <= after_post && in_thread + 1 >= after_post,
            "{id}: {in_thread} thread reminders for {after_post} reminders fired"
        );
        assert!(fired >= 3, "{id}: {fired} reminders");
    }
    drop(replicas);
}

const GRANT_POLICY: &str = r#"
[[rule]]
name = "tests"
code = '^cargo test'
approvers = ["U0ALICE"]
grant_max_secs = 3600
grant_durations_secs = [1800]
"#;

/// A grant made through one replica auto-approves a request submitted to another;
/// revoked through one replica, the next request on another is not auto-approved.
#[tokio::test]
async fn a_grant_and_its_revocation_hold_on_every_replica() {
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, GRANT_POLICY).expect("policy");
    let policy = policy.display().to_string();
    let (_, replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        3,
        &[("GREENLIGHT_POLICY", policy.as_str())],
    )
    .await;
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    let http = reqwest::Client::new();
    let submit_code = |base: String| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{base}/v1/approvals"))
                .bearer_auth(AGENT_TOKEN)
                .json(&json!({ "code": "cargo test --all", "language": "bash" }))
                .send()
                .await
                .expect("submit");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = submit_code(a.url("")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let first = body["id"].as_str().expect("id").to_owned();
    slack
        .wait_until(WAIT, "the message with its grant button", |calls| {
            calls.iter().any(|c| {
                c.method == "chat.postMessage"
                    && button_value(&c.body["blocks"], "greenlight_grant_1800").as_deref()
                        == Some(first.as_str())
            })
        })
        .await;
    try_click(
        &http,
        &b.url(""),
        &first,
        "greenlight_grant_1800",
        "U0ALICE",
    )
    .await;
    // Made on B: C approves the same action in the submit call itself.
    let (status, body) = submit_code(c.url("")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    let used = body["id"].as_str().expect("id").to_owned();
    slack
        .wait_until(WAIT, "the FYI with Revoke", |calls| {
            calls.iter().any(|c| {
                c.method == "chat.postMessage"
                    && button_value(&c.body["blocks"], "greenlight_revoke_grant").as_deref()
                        == Some(used.as_str())
            })
        })
        .await;
    // Revoked on A: the very next request, on C, goes to review.
    try_click(
        &http,
        &a.url(""),
        &used,
        "greenlight_revoke_grant",
        "U0ALICE",
    )
    .await;
    let (status, body) = submit_code(c.url("")).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "revoked on A, still used on C: {body}"
    );
    assert_eq!(body["status"], "pending", "{body}");
    drop(replicas);
}

/// A Slack post slower than the outbox lease (3 s here; the post takes 6 s): the
/// replica sending it renews its lease meanwhile, so the other replicas neither claim
/// the row nor post it again. Then a slow rewrite, the same way.
#[tokio::test]
async fn a_slack_call_slower_than_the_lease_is_not_sent_again_by_another_replica() {
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (db, replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        3,
        &[("GREENLIGHT_OUTBOX_LEASE_SECS", "3")],
    )
    .await;
    let http = reqwest::Client::new();
    slack.script("chat.postMessage", [Reply::Slow(Duration::from_secs(6))]);
    let id = submit(&http, &replicas[0].url(""), &request("echo slow"), None)
        .await
        .expect("submitted");
    // The slow post is recorded when Slack answers it, after any second post a
    // replica that took the lapsed lease would have sent meanwhile.
    slack
        .wait_until(WAIT, "the slow post answered", |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.postMessage" && approval_id_of(c) == id)
        })
        .await;
    wait_count(
        &db,
        "SELECT COUNT(*) FROM outbox",
        "the post recorded",
        |n| n == 0,
    )
    .await;
    let posts = slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| approval_id_of(c) == id)
        .count();
    assert_eq!(posts, 1, "posted by more than one replica");
    // A rewrite slower than the lease: sent once too.
    slack.script("chat.update", [Reply::Slow(Duration::from_secs(6))]);
    click(
        &http,
        &replicas[1].url(""),
        &id,
        "greenlight_approve",
        "U0ALICE",
    )
    .await;
    let last = wait_final(&http, &replicas[2].url(""), &id, None).await;
    assert_eq!(last["status"], "approved", "{last}");
    slack
        .wait_until(WAIT, "the slow rewrite answered", |calls| {
            calls.iter().any(|c| c.method == "chat.update")
        })
        .await;
    wait_count(
        &db,
        "SELECT COUNT(*) FROM outbox",
        "the rewrite recorded",
        |n| n == 0,
    )
    .await;
    assert_eq!(
        slack.calls_to("chat.update").len(),
        1,
        "rewritten by more than one replica"
    );
    drop(replicas);
}

/// A replica paused (SIGSTOP) past its lease in the middle of posting: another
/// replica takes the channel over once the lease lapses and posts; the paused one,
/// resumed, stops at its fence and records nothing over the new owner's post. (Its
/// call, if it was already on the wire, still reaches Slack: the residual case
/// `greenlight::leases` documents.)
#[tokio::test]
async fn a_replica_paused_past_its_lease_records_nothing_over_the_new_owner() {
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let lease = [("GREENLIGHT_OUTBOX_LEASE_SECS", "3")];
    let (db, mut started) = replicas(&server, &slack, dir.path(), 1, &lease).await;
    let a = started.remove(0);
    let http = reqwest::Client::new();
    slack.script("chat.postMessage", [Reply::Slow(Duration::from_secs(5))]);
    let id = submit(&http, &a.url(""), &request("echo paused"), None)
        .await
        .expect("submitted");
    // A claimed the row (and holds the channel); then it is frozen.
    wait_count(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE attempts = 1",
        "the claim",
        |n| n == 1,
    )
    .await;
    a.signal("STOP");
    let mut env = crate::helpers::base_env(&slack, &db);
    env.insert("RUST_LOG".into(), "info".into());
    env.insert("GREENLIGHT_OUTBOX_LEASE_SECS".into(), "3".into());
    let b = crate::helpers::binary::Binary::serve(&env, dir.path(), "replica-b.log").await;
    // B takes the channel over once A's lease lapses, and posts.
    let posted = |trail: &[Value]| trail.iter().filter(|e| e["kind"] == "posted").count();
    let deadline = tokio::time::Instant::now() + WAIT;
    while posted(&events(&http, &b.url(""), &id).await) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "B never posted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.signal("CONT");
    // A wakes past its fence: it lets the lane go instead of completing the row.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !a.stderr().contains("lost the outbox lane's lease") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never noticed it lost the lease:\n{}",
            a.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trail = events(&http, &b.url(""), &id).await;
    assert_eq!(posted(&trail), 1, "recorded as posted twice: {trail:?}");
    let recorded = trail
        .iter()
        .find(|e| e["kind"] == "posted")
        .map(|e| e["detail"]["ts"].clone())
        .expect("posted");
    let approval: Value = http
        .get(b.url(&format!("/v1/approvals/{id}")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(approval["message_ts"], recorded, "{approval}");
    drop((a, b));
}
