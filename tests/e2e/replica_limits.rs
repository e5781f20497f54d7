//! Per-agent limits and idempotency keys across replicas of `greenlight serve` on one
//! PostgreSQL database, each replica addressed directly (no proxy needed): an
//! agent's per-minute limit is admitted once across all of them, not once per
//! replica; its cap on pending requests holds when submissions race on two; and one
//! Idempotency-Key fired at three at once makes one request, posted once.
//!
//! Like `replicas`, these need PostgreSQL: the suite's PostgreSQL run gives its server,
//! the SQLite run starts one with `scripts/postgres` (they run, never skip, in both).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::{
        binary::Binary, database, fake_slack::approval_id_of, request, Answer, FakeSlack,
        AGENT_TOKEN, OTHER_AGENT_TOKEN,
    },
    replicas::{replicas, Server},
};

/// `POST {path}` on `replica` as the `ci-bot` agent, with an Idempotency-Key when
/// given.
async fn post(
    http: &reqwest::Client,
    replica: &Binary,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> Answer {
    post_as(http, replica, AGENT_TOKEN, path, key, body).await
}

/// `POST {path}` on `replica` as the agent of `token`.
async fn post_as(
    http: &reqwest::Client,
    replica: &Binary,
    token: &str,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> Answer {
    let mut call = http.post(replica.url(path)).bearer_auth(token).json(body);
    if let Some(key) = key {
        call = call.header("Idempotency-Key", key);
    }
    let response = call.send().await.expect("a replica answers");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// How many of `answers` were accepted (202) and how many refused by the pending cap.
fn accepted_and_capped(answers: &[Answer]) -> (usize, usize) {
    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .count();
    let capped = answers
        .iter()
        .filter(|a| code(a) == "too_many_pending")
        .count();
    (accepted, capped)
}

fn code(answer: &Answer) -> &str {
    answer.body["error"]["code"].as_str().unwrap_or("")
}

/// With 3 a minute, 12 submissions round-robin over 3 replicas: 3 are accepted (one
/// bucket, in the database), not 9 (a bucket per replica); the rest get the usual 429
/// and Retry-After. A replay on another replica still passes with the bucket empty.
#[tokio::test]
async fn an_agents_rate_limit_holds_across_three_replicas() {
    const PER_MINUTE: u64 = 3;
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (_, replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        3,
        &[("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "3")],
    )
    .await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for i in 0..12 {
        let replica = &replicas[i % replicas.len()];
        let key = format!("round-{i}");
        let answer = post(
            &http,
            replica,
            "/v1/approvals",
            Some(&key),
            &request(&format!("echo {i}")),
        )
        .await;
        match answer.status {
            StatusCode::ACCEPTED => accepted.push((key, answer.body["id"].clone(), i)),
            _ => refused.push(answer),
        }
    }
    // The bucket refills one token every 20 s: a slow run may have earned more.
    let refilled = started.elapsed().as_secs() * PER_MINUTE / 60;
    assert_eq!(
        accepted.len() as u64,
        PER_MINUTE + refilled,
        "accepted: {accepted:?}"
    );
    for answer in &refused {
        assert_eq!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{:?}",
            answer.body
        );
        assert_eq!(code(answer), "rate_limited");
        assert_eq!(
            answer.body["error"]["message"],
            "agent ci-bot may submit at most 3 requests a minute; retry later"
        );
        let retry_after: u64 = answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in whole seconds");
        assert!((1..=20).contains(&retry_after), "{retry_after}");
    }
    // A replay, on a replica other than the one that took it, is free.
    let (key, id, i) = &accepted[0];
    let other = &replicas[(i + 1) % replicas.len()];
    let again = post(
        &http,
        other,
        "/v1/approvals",
        Some(key),
        &request(&format!("echo {i}")),
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{:?}", again.body);
    assert_eq!(&again.body["id"], id);
}

/// A submission the pending cap refuses gives its token back to the shared bucket,
/// whichever replica refused it: with 3 a minute and a cap of 1, three refusals in a
/// row are all `too_many_pending` (without refunds the third would find the bucket
/// empty), and once the first request is cancelled the next is accepted.
#[tokio::test]
async fn a_submission_refused_by_the_cap_refunds_the_shared_bucket() {
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (_, replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        2,
        &[
            ("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "3"),
            ("GREENLIGHT_MAX_PENDING_PER_AGENT", "1"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let first = post(
        &http,
        &replicas[0],
        "/v1/approvals",
        None,
        &request("echo 0"),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    for i in 1..=3 {
        let body = request(&format!("echo {i}"));
        let refused = post(&http, &replicas[i % 2], "/v1/approvals", None, &body).await;
        assert_eq!(
            code(&refused),
            "too_many_pending",
            "{i}: {:?}",
            refused.body
        );
    }
    let id = first.body["id"].as_str().expect("id");
    let cancelled = http
        .post(replicas[1].url(&format!("/v1/approvals/{id}/cancel")))
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status(), StatusCode::OK);
    let next = post(
        &http,
        &replicas[1],
        "/v1/approvals",
        None,
        &request("echo 4"),
    )
    .await;
    assert_eq!(next.status, StatusCode::ACCEPTED, "{:?}", next.body);
}

/// Submissions of one agent fired at once on two replicas never get past its cap of
/// 3 pending requests together, single or batched.
#[tokio::test]
async fn the_pending_cap_holds_when_submissions_race_on_two_replicas() {
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (db, replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        2,
        &[("GREENLIGHT_MAX_PENDING_PER_AGENT", "3")],
    )
    .await;
    let http = reqwest::Client::new();
    let answers = futures::future::join_all((0..12).map(|i| {
        let body = request(&format!("echo race-{i}"));
        let (http, replica) = (http.clone(), &replicas[i % 2]);
        async move { post(&http, replica, "/v1/approvals", None, &body).await }
    }))
    .await;
    assert_eq!(accepted_and_capped(&answers), (3, 9), "{answers:?}");
    assert_eq!(
        database::count(
            &db,
            "SELECT COUNT(*) FROM approvals WHERE status = 'pending'"
        )
        .await,
        3
    );
    // Batches race the same way (another agent, none pending): one batch of two fits
    // under the cap of 3, the others would take it to 4.
    let batches = futures::future::join_all((0..6).map(|i| {
        let body =
            json!({"actions": [request(&format!("make {i}a")), request(&format!("make {i}b"))]});
        let (http, replica) = (http.clone(), &replicas[i % 2]);
        async move {
            post_as(
                &http,
                replica,
                OTHER_AGENT_TOKEN,
                "/v1/batches",
                None,
                &body,
            )
            .await
        }
    }))
    .await;
    assert_eq!(accepted_and_capped(&batches), (1, 5), "{batches:?}");
    assert_eq!(
        database::count(
            &db,
            "SELECT COUNT(*) FROM approvals WHERE status = 'pending'"
        )
        .await,
        5
    );
}

/// One Idempotency-Key fired at three replicas at once (three calls each): one
/// request, every answer carries its id, Slack is posted to once. Its cap of one
/// pending request does not refuse the replays. The same key with another body is
/// the 409 one replica gives.
#[tokio::test]
async fn one_idempotency_key_fired_at_three_replicas_makes_one_request() {
    let server = Server::get();
    let slack = FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (db, replicas) = replicas(
        &server,
        &slack,
        dir.path(),
        3,
        &[("GREENLIGHT_MAX_PENDING_PER_AGENT", "1")],
    )
    .await;
    let http = reqwest::Client::new();
    let body = request("terraform apply");
    let answers = futures::future::join_all((0..9).map(|i| {
        let (http, replica, body) = (http.clone(), &replicas[i % 3], body.clone());
        async move { post(&http, replica, "/v1/approvals", Some("apply-1"), &body).await }
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    }
    let id = answers[0].body["id"].as_str().expect("id").to_owned();
    assert!(
        answers.iter().all(|a| a.body["id"] == id.as_str()),
        "{answers:?}"
    );
    assert_eq!(
        database::count(&db, "SELECT COUNT(*) FROM approvals").await,
        1
    );
    slack
        .wait_until(Duration::from_secs(20), "the post", |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.postMessage" && approval_id_of(c) == id)
        })
        .await;
    let posts = slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 1, "posted once");

    // Another body under the same key: what one replica says, every replica says.
    let other = request("terraform destroy");
    let alone = post(
        &http,
        &replicas[0],
        "/v1/approvals",
        Some("apply-1"),
        &other,
    )
    .await;
    assert_eq!(alone.status, StatusCode::CONFLICT, "{:?}", alone.body);
    assert_eq!(code(&alone), "idempotency_conflict");
    let raced = futures::future::join_all((0..6).map(|i| {
        let (http, replica, other) = (http.clone(), &replicas[i % 3], other.clone());
        async move { post(&http, replica, "/v1/approvals", Some("apply-1"), &other).await }
    }))
    .await;
    for answer in &raced {
        assert_eq!(answer.status, alone.status, "{:?}", answer.body);
        assert_eq!(answer.body, alone.body);
    }

    // A batch under a new key, fired the same way (a second agent: ci-bot is at its
    // cap): one batch.
    let batch = json!({"actions": [request("make deploy")]});
    let batches = futures::future::join_all((0..6).map(|i| {
        let (http, replica, batch) = (http.clone(), &replicas[i % 3], batch.clone());
        async move {
            let path = "/v1/batches";
            post_as(
                &http,
                replica,
                OTHER_AGENT_TOKEN,
                path,
                Some("turn-1"),
                &batch,
            )
            .await
        }
    }))
    .await;
    for answer in &batches {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        assert_eq!(answer.body["id"], batches[0].body["id"]);
    }
    assert_eq!(
        database::count(&db, "SELECT COUNT(*) FROM batches").await,
        1
    );
}
