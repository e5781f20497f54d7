//! A fake callback receiver: a real HTTP server on 127.0.0.1:0 that records every
//! request it gets (headers and raw body) and answers as the test says: a status, a
//! redirect, never (hanging, as a stalled application would), or once the test
//! releases it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, response::IntoResponse, Router};
use reqwest::StatusCode;
use tokio::sync::Notify;

/// How the receiver answers.
#[derive(Debug, Clone)]
pub enum Mode {
    Status(u16),
    /// `302 Found` to this location.
    Redirect(String),
    /// Never answers.
    Hang,
    /// Answers 200 once the test calls [`Receiver::release`] (at once after it).
    Hold,
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("callback body is JSON")
    }
}

struct Inner {
    mode: Mutex<Option<Mode>>,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    /// `true` once the test released held requests.
    released: tokio::sync::watch::Sender<bool>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            mode: Mutex::default(),
            received: Mutex::default(),
            arrived: Notify::new(),
            released: tokio::sync::watch::channel(false).0,
        }
    }
}

/// Cheap to clone; clones share the recording.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start(mode: Mode) -> Self {
        let inner = Arc::new(Inner::default());
        *inner.mode.lock().expect("lock") = Some(mode);
        let app = Router::new().fallback(record).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner }
    }

    /// `host:port`, as GREENLIGHT_CALLBACK_HOSTS lists it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.inner.mode.lock().expect("lock") = Some(mode);
    }

    /// Lets every request held by [`Mode::Hold`] answer, now and from now on.
    pub fn release(&self) {
        self.inner.released.send_replace(true);
    }

    /// How many times each `webhook-id` arrived.
    pub fn by_webhook_id(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for got in self.received() {
            *counts.entry(got.header("webhook-id")).or_insert(0) += 1;
        }
        counts
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived; fails the test after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.inner.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the receiver got {} of {n} callbacks within {within:?}",
                    got.len()
                );
            }
        }
    }
}

async fn record(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    inner.received.lock().expect("lock").push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    inner.arrived.notify_waiters();
    let mode = inner.mode.lock().expect("lock").clone();
    match mode.unwrap_or(Mode::Status(200)) {
        Mode::Status(code) => StatusCode::from_u16(code)
            .unwrap_or(StatusCode::OK)
            .into_response(),
        Mode::Redirect(location) => {
            (StatusCode::FOUND, [("location", location)], "").into_response()
        }
        Mode::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        Mode::Hold => {
            let mut released = inner.released.subscribe();
            let _ = released.wait_for(|released| *released).await;
            StatusCode::OK.into_response()
        }
    }
}
