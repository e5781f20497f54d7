//! The stand-in Slack Web API: answers every method at once, counts the calls, and
//! records which request each `chat.postMessage` was for (greenlight puts the request
//! id in the message's `metadata.event_payload.request_id`), so a run can report how
//! many requests were posted more than once.

use std::{collections::HashMap, sync::Mutex};

use super::*;

#[derive(Default)]
struct SlackCounts {
    post: AtomicU64,
    update: AtomicU64,
    ephemeral: AtomicU64,
    other: AtomicU64,
    /// Posts per request id (from the post's metadata); posts without one are counted
    /// under the empty string. One short lock per post: a few thousand a second here.
    posts_per_request: Mutex<HashMap<String, u32>>,
}

pub struct SlackTally {
    pub post: u64,
    pub update: u64,
    pub ephemeral: u64,
    pub other: u64,
}

/// Which requests were posted, from the posts' metadata.
pub struct PostedRequests {
    /// Distinct request ids posted at least once.
    pub distinct: usize,
    /// Request ids posted more than once (each request must be posted once).
    pub twice: usize,
    /// `chat.postMessage` calls that named no request id.
    pub without_id: u32,
}

pub struct StandInSlack {
    pub addr: SocketAddr,
    counts: Arc<SlackCounts>,
}

impl StandInSlack {
    pub async fn start() -> Self {
        let counts = Arc::new(SlackCounts::default());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in Slack");
        let addr = listener.local_addr().expect("local address");
        let app = Router::new()
            .route("/{method}", post(slack_method))
            .with_state(counts.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, counts }
    }

    pub fn counts(&self) -> SlackTally {
        let c = &self.counts;
        SlackTally {
            post: c.post.load(Ordering::Relaxed),
            update: c.update.load(Ordering::Relaxed),
            ephemeral: c.ephemeral.load(Ordering::Relaxed),
            other: c.other.load(Ordering::Relaxed),
        }
    }

    /// How many requests were posted, and how many more than once.
    pub fn posted_requests(&self) -> PostedRequests {
        let posts = self
            .counts
            .posts_per_request
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let without_id = posts.get("").copied().unwrap_or(0);
        let with_id = posts.iter().filter(|(id, _)| !id.is_empty());
        PostedRequests {
            distinct: with_id.clone().count(),
            twice: with_id.filter(|(_, n)| **n > 1).count(),
            without_id,
        }
    }

    fn total(&self) -> u64 {
        let t = self.counts();
        t.post + t.update + t.ephemeral + t.other
    }

    /// Lets greenlight's background Slack work (posting, message updates, ephemeral
    /// notes) finish before the next phase, so one phase's tail is not measured in the
    /// next: waits until every submitted request has been posted and no call has come
    /// in for 300 ms, at most 60 s. Hygiene for the measurements, not a correctness
    /// check: nothing is asserted here.
    pub async fn settle(&self, submitted: usize) {
        let started = Instant::now();
        let mut last = self.total();
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let total = self.total();
            if total != last {
                last = total;
                quiet_since = Instant::now();
            }
            let posted = self.counts.post.load(Ordering::Relaxed) as usize >= submitted;
            if posted && quiet_since.elapsed() >= Duration::from_millis(300) {
                return;
            }
            if started.elapsed() >= Duration::from_secs(60) {
                progress(format!(
                    "Slack traffic still not settled after 60 s ({} of {submitted} posted); going on",
                    self.counts.post.load(Ordering::Relaxed)
                ));
                return;
            }
        }
    }
}

async fn slack_method(
    State(counts): State<Arc<SlackCounts>>,
    UrlPath(method): UrlPath<String>,
    body: Bytes,
) -> Json<serde_json::Value> {
    Json(match method.as_str() {
        "chat.postMessage" => {
            let id = request_id(&body);
            *counts
                .posts_per_request
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id)
                .or_default() += 1;
            let n = counts.post.fetch_add(1, Ordering::Relaxed) + 1;
            let ts = format!("{}.{:06}", 1_700_000_000 + n / 1_000_000, n % 1_000_000);
            json!({"ok": true, "channel": CHANNEL, "ts": ts, "message": {"ts": ts}})
        }
        "chat.update" => {
            counts.update.fetch_add(1, Ordering::Relaxed);
            json!({"ok": true, "channel": CHANNEL})
        }
        "chat.postEphemeral" => {
            counts.ephemeral.fetch_add(1, Ordering::Relaxed);
            json!({"ok": true, "message_ts": "1700000000.000000"})
        }
        "auth.test" => {
            counts.other.fetch_add(1, Ordering::Relaxed);
            json!({"ok": true, "user_id": "UBOT", "team": "Bench", "team_id": "TBENCH", "bot_id": "BBENCH"})
        }
        _ => {
            counts.other.fetch_add(1, Ordering::Relaxed);
            json!({"ok": true})
        }
    })
}

/// The request id greenlight put in a post's metadata (`metadata.event_payload.
/// request_id`, see src/slack/history.rs); empty when the body names none.
fn request_id(body: &[u8]) -> String {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    body["metadata"]["event_payload"]["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
