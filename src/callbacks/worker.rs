//! The `callbacks` worker: sends the store's due deliveries, signed, and records how
//! each attempt went.
//!
//! It is driven by the store alone: it claims what is due, sends it, and then sleeps
//! until the earliest retry or until a committed decision wakes it
//! ([`crate::store::callbacks::CallbackSignal`]); nothing about a delivery lives only
//! in memory, so a restart (or a panic, which `workers` answers with a restart) picks
//! up exactly where the store stands.
//!
//! Fairness: each attempt is a task of its own, at most `IN_FLIGHT` (16) at once and at
//! most `PER_HOST` (4) per receiver, and the worker claims again as soon as a slot frees,
//! so a receiver that hangs delays only its own deliveries, never another agent's.
//! A delivery is claimed only when a slot is free for it, so its lease (PostgreSQL)
//! never runs while it waits in memory (see `crate::leases`).
//!
//! One attempt is one POST with `GREENLIGHT_CALLBACK_TIMEOUT_SECS` (10 s), following
//! no redirect (a 3xx is a failed attempt: the allow-list was checked for this URL, not
//! for where it points) and through no proxy. Any 2xx delivers. Otherwise the delivery
//! is tried again after the shared backoff (`crate::backoff`: doubling from
//! `GREENLIGHT_CALLBACK_RETRY_FIRST_MS`, default 1 s, to 5 minutes, jittered) until
//! `GREENLIGHT_CALLBACK_MAX_ATTEMPTS`. Each attempt is audited on the request's trail
//! (`callback_attempt`), and the end as `callback_delivered` or `callback_failed`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::Utc;
use serde_json::json;
use tokio::{task::JoinSet, time::Instant};

use super::{
    settings::{CallbackSettings, RETRY_MAX},
    sign::sign,
};
use crate::{
    backoff::{Backoff, Retrying},
    leases::{self, CALLBACK_MARGIN},
    metrics::Metrics,
    store::{
        callbacks::{host_key, ClaimShape, Delivery},
        NewEvent, Store, StoreResult,
    },
};

/// Deliveries in flight at once, all receivers together.
const IN_FLIGHT: u32 = 16;
/// Deliveries in flight at once to one receiver (`scheme://host[:port]`): a receiver
/// that hangs holds at most this many of the worker's slots, never the others'.
const PER_HOST: usize = 4;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer: the error, in words that name no secret.
    Error(String),
    /// Not sent, and never will be: the URL is no longer allowed by the settings as
    /// they are now (its host was taken off `GREENLIGHT_CALLBACK_HOSTS`, or the agent
    /// lost its secret, since the request was submitted).
    Refused(String),
}

/// The worker; cheap to clone, so `workers` can make a fresh one after a panic.
#[derive(Clone)]
pub struct CallbackWorker {
    store: Store,
    settings: Arc<CallbackSettings>,
    http: reqwest::Client,
    metrics: Metrics,
    /// The attempt timeout and the claim's lease (`crate::leases`, checked at start-up).
    leases: leases::Leases,
}

impl CallbackWorker {
    /// A worker sending with the leases and attempt timeout of the environment
    /// ([`leases::from_env`]), with no redirect followed and no proxy.
    ///
    /// Errors when that HTTP client cannot be built (its TLS backend failing to
    /// start). There is no fallback to a default client: one that follows redirects
    /// could be led from an allowed callback host to any other.
    pub fn new(
        store: Store,
        settings: Arc<CallbackSettings>,
        metrics: Metrics,
    ) -> Result<Self, reqwest::Error> {
        let leases = leases::from_env();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(leases.callback_timeout)
            .user_agent(concat!(
                "greenlight/",
                env!("CARGO_PKG_VERSION"),
                " (callbacks)"
            ))
            .build()?;
        Ok(Self {
            store,
            settings,
            http,
            metrics,
            leases,
        })
    }

    /// Runs until the task is aborted (which aborts the attempts in flight: their rows
    /// are due again at the next start, or when their lease lapses).
    ///
    /// Claims whenever a slot is free, never waiting for the slowest attempt of a
    /// claim: each attempt runs as its own task, and the claim skips receivers that
    /// already have `PER_HOST` (4) attempts in flight (`store::callbacks::ClaimShape`).
    pub async fn run(self) {
        let mut store_trouble = Retrying::new(Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(30),
        ));
        let mut attempts: JoinSet<(i64, StoreResult<()>)> = JoinSet::new();
        let mut in_flight: HashMap<i64, String> = HashMap::new();
        loop {
            let next = match self.claim_and_start(&mut attempts, &mut in_flight).await {
                Ok(next) => {
                    store_trouble.succeeded();
                    next
                }
                Err(error) => {
                    let step = store_trouble.failed();
                    if step.log {
                        tracing::error!(%error, failed_attempts = step.failures, "the callbacks worker could not read or write the store; retrying");
                    }
                    Some(Instant::now() + step.delay)
                }
            };
            tokio::select! {
                () = self.store.callback_signal().woken() => {}
                () = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                Some(ended) = attempts.join_next() => {
                    match ended {
                        Ok((seq, recorded)) => {
                            in_flight.remove(&seq);
                            if let Err(error) = recorded {
                                // The row stays as claimed: due again when its lease lapses
                                // (PostgreSQL) or now (SQLite), after this backoff.
                                let step = store_trouble.failed();
                                if step.log {
                                    tracing::error!(%error, failed_attempts = step.failures, "could not record a callback attempt; retrying");
                                }
                                tokio::time::sleep(step.delay).await;
                            }
                        }
                        // Attempts catch their own panics (below) and are never
                        // aborted while the worker runs.
                        Err(error) => tracing::error!(%error, "a callback attempt task failed"),
                    }
                }
            }
        }
    }

    /// Claims what free slots allow and starts each attempt; returns when to look
    /// again (`None`: only a decision or an ending attempt can bring more work).
    async fn claim_and_start(
        &self,
        attempts: &mut JoinSet<(i64, StoreResult<()>)>,
        in_flight: &mut HashMap<i64, String>,
    ) -> StoreResult<Option<Instant>> {
        loop {
            let free = IN_FLIGHT.saturating_sub(u32::try_from(in_flight.len()).unwrap_or(u32::MAX));
            if free == 0 {
                return Ok(None);
            }
            let shape = ClaimShape {
                limit: free,
                per_host: PER_HOST,
                in_flight: in_flight.clone(),
            };
            // Taken before the claim is sent: its lease lapses no sooner than a lease
            // from now.
            let sent_at = Instant::now();
            let claimed = self.store.claim_callbacks(Utc::now(), &shape).await?;
            if claimed.is_empty() {
                let seqs: Vec<i64> = in_flight.keys().copied().collect();
                let Some(at) = self.store.next_callback_due(&seqs).await? else {
                    return Ok(None);
                };
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                if wait.is_zero() && !in_flight.is_empty() {
                    // Due, but for receivers at their cap: an ending attempt frees one.
                    return Ok(None);
                }
                return Ok(Some(Instant::now() + wait.max(Duration::from_millis(1))));
            }
            // The attempt ends before the lease can lapse: its own timeout is shorter
            // by CALLBACK_MARGIN (checked at start-up); this fence also covers the time
            // the claim took to come back.
            let fence = sent_at + self.leases.callback.saturating_sub(CALLBACK_MARGIN);
            for delivery in claimed {
                in_flight.insert(delivery.seq, host_key(&delivery.url));
                let worker = self.clone();
                attempts.spawn(async move {
                    let attempt = std::panic::AssertUnwindSafe(worker.deliver(&delivery, fence));
                    match futures::FutureExt::catch_unwind(attempt).await {
                        Ok(recorded) => (delivery.seq, recorded),
                        Err(_) => {
                            // The row is still stored as claimed: due again later.
                            tracing::error!(request_id = %delivery.audit_id, "a callback attempt panicked");
                            (delivery.seq, Ok(()))
                        }
                    }
                });
            }
        }
    }

    /// One attempt at `delivery`, cut at `fence` (before its claim's lease can lapse),
    /// and its record.
    async fn deliver(&self, delivery: &Delivery, fence: Instant) -> StoreResult<()> {
        let attempt = tokio::time::timeout_at(fence, self.attempt(delivery))
            .await
            .unwrap_or_else(|_| {
                Attempt::Error("no answer before the claim's lease ran out".into())
            });
        let detail = match &attempt {
            Attempt::Status(status) => {
                json!({ "attempt": delivery.attempts, "status": status, "webhook_id": delivery.event_id })
            }
            Attempt::Error(error) | Attempt::Refused(error) => {
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
        if delivery.attempts >= self.settings.max_attempts || matches!(attempt, Attempt::Refused(_))
        {
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
        // The allow-list as it is now, not as it was at submit: a host taken off it
        // is never called again, whatever was queued for it.
        if let Err(why) = self.settings.check_url(&delivery.agent, &delivery.url) {
            return Attempt::Refused(format!("not sent: {why}"));
        }
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
            Err(error) if error.is_timeout() => Attempt::Error(format!(
                "no answer within {} s",
                self.leases.callback_timeout.as_secs_f64()
            )),
            Err(error) if error.is_connect() => Attempt::Error("could not connect".into()),
            Err(error) => Attempt::Error(format!("request failed: {}", error.without_url())),
        }
    }
}
