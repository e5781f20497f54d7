//! Throughput and latency of the approval loop, end to end over loopback HTTP: the
//! real server, its SQLite store (WAL, synchronous=FULL) and the test suite's fake
//! Slack. Prints figures; asserts only that every answer was right.
//!
//!     cargo bench --bench approval_loop            # defaults: 2000 requests
//!     BENCH_REQUESTS=5000 cargo bench --bench approval_loop

#[path = "../tests/e2e/helpers/fake_slack.rs"]
#[allow(dead_code)]
mod fake_slack;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures::StreamExt;
use greenlight::{
    app::Server, config::Config, slack::api::RetryPolicy, slack::signature::SignatureVerifier,
};
use serde_json::{json, Value};

const SECRET: &str = "bench-signing-secret";
const TOKEN: &str = "bench-token-0123456789";

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let slack = fake_slack::FakeSlack::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let env = HashMap::from([
        ("SLACK_BOT_TOKEN", "xoxb-bench".to_owned()),
        ("SLACK_SIGNING_SECRET", SECRET.to_owned()),
        ("SLACK_CHANNEL_ID", "CBENCH".to_owned()),
        ("SLACK_API_BASE_URL", slack.base_url()),
        ("GREENLIGHT_API_TOKENS", format!("bench:{TOKEN}")),
        (
            "GREENLIGHT_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("bench.db").display()),
        ),
        // One agent sends everything: the per-agent limits must not be what is measured.
        ("GREENLIGHT_RATE_LIMIT_PER_MINUTE", "1000000".to_owned()),
        ("GREENLIGHT_MAX_PENDING_PER_AGENT", "1000000".to_owned()),
    ]);
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::build(listener, config, RetryPolicy::default())
        .await
        .expect("build");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(server.run(std::future::pending()));
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let rss_before = rss_kib();

    // 1. Submissions: n requests, 64 in flight at a time.
    let started = Instant::now();
    let ids: Vec<String> = futures::stream::iter(0..n)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let body: Value = http
                    .post(format!("{base}/v1/approvals"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"code": format!("echo {i}"), "language": "bash"}))
                    .send()
                    .await
                    .expect("submit")
                    .json()
                    .await
                    .expect("json");
                body["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no id in {body}"))
                    .to_owned()
            }
        })
        .buffered(64)
        .collect()
        .await;
    let submit_secs = started.elapsed().as_secs_f64();
    slack
        .wait_until(Duration::from_secs(600), "every message", |c| {
            c.iter().filter(|c| c.method == "chat.postMessage").count() >= n
        })
        .await;
    let posted_secs = started.elapsed().as_secs_f64();
    let rss_pending = rss_kib();

    // 2. Click → answer latency: an agent long-polls, a reviewer clicks; time from
    //    sending the click to the agent's answer.
    let verifier = SignatureVerifier::new(SECRET.to_owned().into());
    let mut latencies = Vec::with_capacity(n);
    let decide_started = Instant::now();
    for id in &ids {
        let poll = tokio::spawn(
            http.get(format!("{base}/v1/approvals/{id}?wait=30"))
                .bearer_auth(TOKEN)
                .send(),
        );
        tokio::task::yield_now().await;
        let payload =
            json!({"type": "block_actions", "user": {"id": "UBENCH"}, "channel": {"id": "CBENCH"},
            "actions": [{"action_id": "greenlight_approve", "value": id}]})
            .to_string();
        let form = serde_urlencoded::to_string([("payload", payload)])
            .expect("form")
            .into_bytes();
        let now = chrono::Utc::now().timestamp();
        let signature = verifier.sign(now, &form);
        let clicked = Instant::now();
        http.post(format!("{base}/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("X-Slack-Request-Timestamp", now.to_string())
            .header("X-Slack-Signature", signature)
            .body(form)
            .send()
            .await
            .expect("click");
        let answer: Value = poll
            .await
            .expect("task")
            .expect("poll")
            .json()
            .await
            .expect("json");
        latencies.push(clicked.elapsed());
        assert_eq!(answer["status"], "approved", "{answer}");
    }
    let decide_secs = decide_started.elapsed().as_secs_f64();
    latencies.sort();

    println!("greenlight approval loop, {n} requests (release build, loopback, SQLite WAL synchronous=FULL)");
    println!(
        "  submit        {:>8.0} requests/s   ({n} in {submit_secs:.2} s)",
        n as f64 / submit_secs
    );
    println!("  posted        {:>8.0} messages/s   (all {n} posted {posted_secs:.2} s after the first submit)", n as f64 / posted_secs);
    println!(
        "  click→answer  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    println!(
        "  decisions     {:>8.0} per second, sequential click + long-poll pairs",
        n as f64 / decide_secs
    );
    println!(
        "  memory        {} KiB RSS before, {} KiB with {n} pending ({:.1} KiB per pending request, incl. the fake Slack's recording)",
        rss_before,
        rss_pending,
        (rss_pending.saturating_sub(rss_before)) as f64 / n as f64
    );
}
