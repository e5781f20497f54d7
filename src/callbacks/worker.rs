//! The `callbacks` worker: sends the store's due deliveries, signed, and records how
//! each attempt went.
//!
//! It is driven by the store alone: it claims what is due, sends it, and then sleeps
//! until the earliest retry or until a committed decision wakes it
//! ([`crate::store::callbacks::CallbackSignal`]); nothing about a delivery lives only
//! in memory, so a restart (or a panic, which `workers` answers with a restart) picks
//! up exactly where the store stands.
//!
//! One attempt is one POST with [`ATTEMPT_TIMEOUT`], following no redirect (a 3xx is
//! a failed attempt: the allow-list was checked for this URL, not for where it points)
//! and through no proxy. Any 2xx delivers. Otherwise the delivery is tried again after
//! the shared backoff (`crate::backoff`: doubling from
//! `GREENLIGHT_CALLBACK_RETRY_FIRST_MS`, default 1 s, to 5 minutes, jittered) until
//! `GREENLIGHT_CALLBACK_MAX_ATTEMPTS`. Each attempt is audited on the request's trail
//! (`callback_attempt`), and the end as `callback_delivered` or `callback_failed`.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::json;

use super::{
    settings::{CallbackSettings, ATTEMPT_TIMEOUT, RETRY_MAX},
    sign::sign,
};
use crate::{
    backoff::{Backoff, Retrying},
    metrics::Metrics,
    store::{callbacks::Delivery, NewEvent, Store, StoreResult},
};

/// Deliveries claimed (and sent side by side) at once.
const CLAIM: u32 = 16;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer: the error, in words that name no secret.
    Error(String),
}

/// The worker; cheap to clone, so `workers` can make a fresh one after a panic.
#[derive(Clone)]
pub struct CallbackWorker {
    store: Store,
    settings: Arc<CallbackSettings>,
    http: reqwest::Client,
    metrics: Metrics,
}

impl CallbackWorker {
    pub fn new(store: Store, settings: Arc<CallbackSettings>, metrics: Metrics) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("greenlight/", env!("CARGO_PKG_VERSION"), " (callbacks)"))
            .build()
            .unwrap_or_else(|error| {
                tracing::error!(%error, "could not build the callbacks HTTP client with its settings; using the default");
                reqwest::Client::new()
            });
        Self {
            store,
            settings,
            http,
            metrics,
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut store_trouble = Retrying::new(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(30),
        ));
        loop {
            let next = match self.send_due().await {
                Ok(next) => {
                    store_trouble.succeeded();
                    next
                }
                Err(error) => {
                    let step = store_trouble.failed();
                    if step.log {
                        tracing::error!(%error, failed_attempts = step.failures, "the callbacks worker could not read or write the store; retrying");
                    }
                    tokio::time::sleep(step.delay).await;
                    continue;
                }
            };
            let sleep = next.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
            tokio::select! {
                () = self.store.callback_signal().woken() => {}
                () = async {
                    match sleep {
                        Some(sleep) => tokio::time::sleep(sleep).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    /// Sends everything due now; returns when the next delivery is due.
    async fn send_due(&self) -> StoreResult<Option<chrono::DateTime<Utc>>> {
        loop {
            let claimed = self.store.claim_callbacks(Utc::now(), CLAIM).await?;
            if claimed.is_empty() {
                return self.store.next_callback_due().await;
            }
            for result in futures::future::join_all(claimed.iter().map(|d| self.deliver(d))).await {
                result?;
            }
        }
    }

    /// One attempt at `delivery`, and its record.
    async fn deliver(&self, delivery: &Delivery) -> StoreResult<()> {
        let attempt = self.attempt(delivery).await;
        let detail = match &attempt {
            Attempt::Status(status) => {
                json!({ "attempt": delivery.attempts, "status": status, "webhook_id": delivery.event_id })
            }
            Attempt::Error(error) => {
                json!({ "attempt": delivery.attempts, "error": error, "webhook_id": delivery.event_id })
            }
        };
        let attempted = NewEvent::new("callback_attempt", None, detail);
        if matches!(attempt, Attempt::Status(s) if (200..300).contains(&s)) {
            tracing::info!(request_id = %delivery.audit_id, attempts = delivery.attempts, "callback delivered");
            self.metrics.callback_delivery("delivered");
            let done = NewEvent::new(
                "callback_delivered",
                None,
                json!({ "attempts": delivery.attempts, "webhook_id": delivery.event_id }),
            );
            return self
                .store
                .callback_done(delivery, vec![attempted, done])
                .await;
        }
        if delivery.attempts >= self.settings.max_attempts {
            tracing::warn!(request_id = %delivery.audit_id, attempts = delivery.attempts, last = ?attempt, "callback failed: giving up");
            self.metrics.callback_delivery("failed");
            let failed = NewEvent::new(
                "callback_failed",
                None,
                json!({ "attempts": delivery.attempts, "webhook_id": delivery.event_id }),
            );
            return self
                .store
                .callback_done(delivery, vec![attempted, failed])
                .await;
        }
        let delay = Backoff::new(self.settings.retry_first, RETRY_MAX).delay(delivery.attempts);
        if delivery.attempts == 1 || delivery.attempts.is_power_of_two() {
            tracing::warn!(request_id = %delivery.audit_id, attempts = delivery.attempts, last = ?attempt, retry_in_ms = delay.as_millis() as u64, "callback not delivered; retrying");
        }
        self.metrics.callback_delivery("retried");
        let not_before = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        self.store
            .callback_retry(delivery, not_before, attempted)
            .await
    }

    /// Signs and sends `delivery` once.
    async fn attempt(&self, delivery: &Delivery) -> Attempt {
        // Fail closed: never send a callback that is not signed.
        let Some(secret) = self.settings.secrets.get(&delivery.agent) else {
            return Attempt::Error(format!(
                "the agent {} has no signing secret in GREENLIGHT_CALLBACK_SECRETS",
                delivery.agent
            ));
        };
        let signed = match sign(
            secret,
            &delivery.event_id,
            Utc::now().timestamp(),
            delivery.body.as_bytes(),
        ) {
            Ok(signed) => signed,
            Err(error) => return Attempt::Error(format!("could not sign: {error}")),
        };
        let sent = self
            .http
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &signed.id)
            .header("webhook-timestamp", signed.timestamp.to_string())
            .header("webhook-signature", &signed.signature)
            .body(delivery.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => Attempt::Status(response.status().as_u16()),
            Err(error) if error.is_timeout() => {
                Attempt::Error(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()))
            }
            Err(error) if error.is_connect() => Attempt::Error("could not connect".into()),
            Err(error) => Attempt::Error(format!("request failed: {}", error.without_url())),
        }
    }
}
