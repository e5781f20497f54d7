//! Phase 9: posting under a channel's rate limit (issue #16, item 4).
//!
//! A second greenlight process posts to a channel of a rate-limited stand-in Slack:
//! each channel accepts `RATE` `chat.postMessage` calls per one-second window (the
//! window opens at the first call after the previous one closed) and answers the rest
//! `429 Retry-After: 1`. `BENCH_PACED_POSTS` requests are submitted one after the
//! other; the figure is the rate at which their posts landed (posts ÷ time from the
//! first submit to the last accepted post) over the available rate, target ≥ 0.9.
//!
//! Reference, in the same run and at the same time on a channel of its own: a simple
//! bot that sends each message and, on a 429, waits out `Retry-After` and sends it
//! again. Both runs are checked to land every message, once, in order; the number of
//! 429s each drew is printed.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path as UrlPath, State},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{check_submitted, progress, submit_request, verdict, Conn, Greenlight};

/// Posts per one-second window the stand-in accepts per channel.
const RATE: usize = 5;
const WINDOW: Duration = Duration::from_secs(1);
const TARGET_RATIO: f64 = 0.9;
const GREENLIGHT_CHANNEL: &str = "CPACED0001";
const BOT_CHANNEL: &str = "CPACED0002";

/// One channel's limiter and what it accepted.
#[derive(Default)]
struct Channel {
    opened: Option<Instant>,
    used: usize,
    refused: usize,
    /// Accepted posts: when, and the body's text.
    landed: Vec<(Instant, String)>,
}

type Channels = Arc<Mutex<HashMap<String, Channel>>>;

async fn slack_method(
    State(channels): State<Channels>,
    UrlPath(method): UrlPath<String>,
    body: Bytes,
) -> Response {
    if method != "chat.postMessage" {
        return Json(json!({"ok": true, "user_id": "UBOT", "team": "Bench"})).into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let channel = body["channel"].as_str().unwrap_or("").to_owned();
    let now = Instant::now();
    let mut channels = channels.lock().expect("lock");
    let state = channels.entry(channel.clone()).or_default();
    if state
        .opened
        .is_none_or(|at| now.duration_since(at) >= WINDOW)
    {
        state.opened = Some(now);
        state.used = 0;
    }
    if state.used >= RATE {
        state.refused += 1;
        let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return response;
    }
    state.used += 1;
    state.landed.push((now, body.to_string()));
    let ts = format!("1700000000.{:06}", state.landed.len());
    Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
}

/// The simple bot: each message in turn, waiting out `Retry-After` on a 429.
async fn simple_bot(slack: std::net::SocketAddr, posts: usize) -> Duration {
    let http = reqwest::Client::new();
    let url = format!("http://{slack}/chat.postMessage");
    let start = Instant::now();
    for i in 0..posts {
        loop {
            let answer = http
                .post(&url)
                .json(&json!({"channel": BOT_CHANNEL, "text": format!("echo {i}")}))
                .send()
                .await
                .expect("the stand-in answers");
            if answer.status() != StatusCode::TOO_MANY_REQUESTS {
                break;
            }
            let after = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(after)).await;
        }
    }
    start.elapsed()
}

/// Every `echo i` landed once, in order (`echo 1` must not match `echo 10`: the code
/// is followed by a non-digit in every rendering).
fn check_order(landed: &[(Instant, String)], posts: usize, who: &str) {
    assert_eq!(landed.len(), posts, "{who}: every message lands once");
    for (i, (_, body)) in landed.iter().enumerate() {
        let digits_after = |at: usize| body[at..].starts_with(|c: char| c.is_ascii_digit());
        let needle = format!("echo {i}");
        let found = body
            .match_indices(&needle)
            .any(|(at, _)| !digits_after(at + needle.len()));
        assert!(found, "{who}: post {i} is not `{needle}`: {body:.200}");
    }
}

/// Runs the phase; prints its lines and verdict. `posts == 0` skips it.
pub async fn run(env: &[(&'static str, String)], posts: usize) {
    if posts == 0 {
        return;
    }
    progress(format!(
        "paced posts: {posts} to a channel that accepts {RATE}/s, then 429 Retry-After: 1"
    ));
    let channels: Channels = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the rate-limited stand-in Slack");
    let slack = listener.local_addr().expect("local address");
    let app = Router::new()
        .route("/{method}", post(slack_method))
        .with_state(channels.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().expect("temporary directory");
    let mut env = env.to_vec();
    for (key, value) in env.iter_mut() {
        match *key {
            "SLACK_API_BASE_URL" => *value = format!("http://{slack}"),
            "SLACK_CHANNEL_ID" => *value = GREENLIGHT_CHANNEL.into(),
            "GREENLIGHT_DATABASE_URL" => {
                *value = format!("sqlite://{}", dir.path().join("paced.db").display())
            }
            _ => {}
        }
    }
    let greenlight = Greenlight::start(&env, dir.path()).await;
    let bot = tokio::spawn(simple_bot(slack, posts));

    let start = Instant::now();
    let mut conn = Conn::open(greenlight.addr).await;
    let submit = submit_request(greenlight.addr, 0);
    for i in 0..posts {
        let (status, body) = conn.send(submit(i)).await;
        check_submitted(i, status, body);
    }
    let deadline = start + Duration::from_secs((posts as u64 / RATE as u64) * 3 + 30);
    let last = loop {
        let landed = {
            let channels = channels.lock().expect("lock");
            channels
                .get(GREENLIGHT_CHANNEL)
                .filter(|c| c.landed.len() >= posts)
                .map(|c| c.landed[posts - 1].0)
        };
        if let Some(at) = landed {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "greenlight did not post {posts} messages in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = last.duration_since(start);
    let bot_took = bot.await.expect("the simple bot");
    // Anything posted after the last counted message would be a duplicate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (refused, bot_refused) = {
        let channels = channels.lock().expect("lock");
        let ours = &channels[GREENLIGHT_CHANNEL];
        let bots = &channels[BOT_CHANNEL];
        check_order(&ours.landed, posts, "greenlight");
        check_order(&bots.landed, posts, "simple bot");
        (ours.refused, bots.refused)
    };
    drop(greenlight);

    let available = RATE as f64 / WINDOW.as_secs_f64();
    let ideal = posts as f64 / available;
    let line = |who: &str, took: Duration, refused: usize| {
        let rate = posts as f64 / took.as_secs_f64();
        println!(
            "  {who:<11} {:>6.2} s  {rate:>5.2} posts/s  {:.3} of the available rate   {refused} × 429",
            took.as_secs_f64(),
            rate / available
        );
    };
    println!(
        "paced posts: {posts} to one channel accepting {RATE}/s then 429 Retry-After: 1 (ideal {ideal:.0} s)"
    );
    line("greenlight", took, refused);
    line("simple bot", bot_took, bot_refused);
    let ratio = posts as f64 / took.as_secs_f64() / available;
    verdict(
        "paced posts / available",
        format!("{ratio:.3}"),
        format!("≥ {TARGET_RATIO}, in order"),
        ratio >= TARGET_RATIO,
    );
}
