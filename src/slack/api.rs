//! The Slack Web API client.
//!
//! Slack answers most failures with HTTP 200 and `{"ok": false, "error": "…"}`, rate
//! limits with 429 and `Retry-After`, and has the odd 5xx. This client turns all of
//! that into one `SlackError` and retries what is worth retrying: 429s after waiting
//! out `Retry-After` (plus jitter, so a burst of waiters does not stampede back), and
//! 5xx / connection failures with the shared [`Backoff`]
//! (doubling, capped, jittered). A caller with a deadline (a request that expires)
//! never waits past it. A caller that sends one channel's messages in order passes
//! that channel's [`Pacer`]: its 429s then set a pace for the channel instead of
//! adding jitter to each retry.

use std::{fmt, time::Duration};

use rand::Rng;
use reqwest::{header::RETRY_AFTER, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::pacing::Pacer;
use crate::{backoff::Backoff, metrics::Metrics};

/// How hard to try before giving up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after a 5xx or a connection failure.
    pub max_failure_retries: u32,
    /// Retries after a 429 when the caller has no deadline of its own.
    pub max_rate_limit_retries: u32,
    /// First backoff after a failure; doubles each time up to `max_backoff`, each
    /// shortened at random by up to a fifth (see [`crate::backoff`]).
    pub base_backoff: Duration,
    /// Cap of that backoff; Socket Mode reconnects cap at four times this.
    pub max_backoff: Duration,
    /// Upper bound of the random delay added to each `Retry-After`.
    pub max_jitter: Duration,
    /// Timeout of one HTTP attempt.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_failure_retries: 4,
            max_rate_limit_retries: 10,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_jitter: Duration::from_millis(250),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The production shape with millisecond backoffs: for tests against a fake Slack,
    /// which must not wait out real backoffs.
    pub fn fast() -> Self {
        Self {
            max_failure_retries: 3,
            max_rate_limit_retries: 10,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_jitter: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a Web API call failed, after any retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// Slack answered `ok: false` (e.g. `channel_not_found`, `invalid_auth`).
    #[error("Slack refused {method}: {code}")]
    Api {
        /// The Web API method, e.g. `chat.postMessage`.
        method: String,
        /// Slack's `error` string, as sent; `unknown_error` when the answer had none.
        code: String,
    },
    /// Still rate-limited when retries or the deadline ran out.
    #[error("Slack rate-limited {method} past the deadline")]
    RateLimited {
        /// The Web API method, e.g. `chat.postMessage`.
        method: String,
    },
    /// An HTTP status Slack should not send (4xx other than 429, or 5xx after retries).
    #[error("Slack answered {method} with HTTP {status}")]
    Http {
        /// The Web API method, e.g. `chat.postMessage`.
        method: String,
        /// The HTTP status code of the last attempt.
        status: u16,
    },
    /// Could not reach Slack, or no answer in time, after retries.
    #[error("could not reach Slack for {method}: {detail}")]
    Transport {
        /// The Web API method, e.g. `chat.postMessage`.
        method: String,
        /// What went wrong, for logs: the HTTP client's error without the URL, or
        /// which deadline passed.
        detail: String,
    },
    /// A 200 whose body is not the JSON Slack documents.
    #[error("Slack sent an unreadable answer to {method}")]
    Malformed {
        /// The Web API method, e.g. `chat.postMessage`.
        method: String,
    },
}

impl SlackError {
    /// Slack's error code, or a short stable name for the failure: what metrics and
    /// audit events record.
    pub fn code(&self) -> &str {
        match self {
            SlackError::Api { code, .. } => code,
            SlackError::RateLimited { .. } => "ratelimited",
            SlackError::Http { .. } => "http_error",
            SlackError::Transport { .. } => "unreachable",
            SlackError::Malformed { .. } => "malformed_response",
        }
    }
}

/// Told about each failure a call is about to retry (see [`SlackClient::call_observed`]).
pub type OnRetry<'a> = dyn Fn(&SlackError) + Send + Sync + 'a;

/// A posted message's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef {
    /// The channel id (e.g. `C…`) from `chat.postMessage`'s answer; the one asked
    /// for if the answer has none.
    pub channel: String,
    /// Slack's `ts`, a string like `1712345678.000100`: the message's id within its
    /// channel, what `chat.update` and thread replies name it by.
    pub ts: String,
}

/// A Web API client for one token: the bot token (`xoxb-…`) for messages, or the
/// app-level token (`xapp-…`) for Socket Mode's `apps.connections.open`. Cheap to
/// clone (the HTTP client is shared); `Debug` never shows the token.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base_url: String,
    token: SecretString,
    retry: RetryPolicy,
    metrics: Metrics,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackClient")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// How a call's arguments travel.
#[derive(Clone, Copy)]
enum Args<'a> {
    Json(&'a Value),
    Form(&'a [(&'a str, &'a str)]),
}

/// One attempt's result, before the retry decision.
enum Attempt {
    Done(Result<Value, SlackError>),
    RetryAfter(Duration),
    Failed(SlackError),
}

impl Attempt {
    /// The result label metrics record (bounded there).
    fn result(&self) -> &str {
        match self {
            Attempt::Done(Ok(_)) => "ok",
            Attempt::Done(Err(error)) | Attempt::Failed(error) => error.code(),
            Attempt::RetryAfter(_) => "rate_limited",
        }
    }
}

impl SlackClient {
    /// A client sending `POST {base_url}/<method>` with `Authorization: Bearer
    /// {token}`. `base_url` is the Web API root (`https://slack.com/api`, or a fake on
    /// loopback in tests); a trailing `/` is dropped. Each HTTP attempt times out
    /// after `retry.attempt_timeout`. Metrics go nowhere until
    /// [`with_metrics`](Self::with_metrics).
    ///
    /// Errors when the HTTP client cannot be built (its TLS backend failing to start):
    /// a client without its per-attempt timeout could hang an outbox lane for good,
    /// so there is no fallback to a default one.
    pub fn new(
        base_url: &str,
        token: SecretString,
        retry: RetryPolicy,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(retry.attempt_timeout)
            .user_agent(concat!("greenlight/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            retry,
            metrics: Metrics::new(),
        })
    }

    /// Records every attempt and retry into `metrics` (a fresh client records into a
    /// registry nobody reads).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Calls one Web API method with a JSON body, retrying as described above, never
    /// sleeping past `deadline`.
    pub async fn call(
        &self,
        method: &str,
        body: &Value,
        deadline: Option<Instant>,
    ) -> Result<Value, SlackError> {
        self.call_with(method, Args::Json(body), deadline, None, None)
            .await
    }

    /// Like [`call`](Self::call) with form-encoded arguments. Slack's read methods
    /// (`conversations.info`, `users.info`, …) ignore JSON bodies and then answer as if
    /// the argument were missing (`channel_not_found`), so they must be sent this way.
    pub async fn call_form(
        &self,
        method: &str,
        form: &[(&str, &str)],
        deadline: Option<Instant>,
    ) -> Result<Value, SlackError> {
        self.call_with(method, Args::Form(form), deadline, None, None)
            .await
    }

    /// Like [`call`](Self::call), and tells `on_retry` about every failure or rate
    /// limit it is about to retry: a caller that queues work behind this call (the
    /// per-channel poster) can then say *why* a message never went out, even while
    /// the call is still retrying.
    pub async fn call_observed(
        &self,
        method: &str,
        body: &Value,
        deadline: Option<Instant>,
        on_retry: &OnRetry<'_>,
    ) -> Result<Value, SlackError> {
        self.call_with(method, Args::Json(body), deadline, Some(on_retry), None)
            .await
    }

    /// Like [`call_observed`](Self::call_observed), sending when `pacer` allows and
    /// telling it about every answer: a 429 sets the pace of the channel the pacer
    /// stands for, and is retried after exactly its `Retry-After`.
    pub async fn call_paced(
        &self,
        method: &str,
        body: &Value,
        deadline: Option<Instant>,
        on_retry: &OnRetry<'_>,
        pacer: &Pacer,
    ) -> Result<Value, SlackError> {
        self.call_with(
            method,
            Args::Json(body),
            deadline,
            Some(on_retry),
            Some(pacer),
        )
        .await
    }

    /// The HTTP client, for the one request that does not go to the Web API: the
    /// file bytes of an external upload, POSTed to the URL Slack hands out.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn call_with(
        &self,
        method: &str,
        body: Args<'_>,
        deadline: Option<Instant>,
        on_retry: Option<&OnRetry<'_>>,
        pacer: Option<&Pacer>,
    ) -> Result<Value, SlackError> {
        let mut failures = 0;
        let mut rate_limits = 0;
        // What the deadline cut short, so the caller hears the real cause (a 5xx is
        // not a rate limit).
        let mut last_trouble = SlackError::RateLimited {
            method: method.to_owned(),
        };
        loop {
            if let Some(next) = pacer.and_then(Pacer::next_send) {
                if deadline.is_some_and(|deadline| next >= deadline) {
                    return Err(last_trouble);
                }
                tokio::time::sleep_until(next).await;
            }
            let sent = Instant::now();
            let attempt = self.attempt(method, body).await;
            if let (Some(pacer), Attempt::Done(_)) = (pacer, &attempt) {
                pacer.answered(sent);
            }
            self.metrics.slack_attempt(method, attempt.result());
            let (wait, retry_reason) = match attempt {
                Attempt::Done(result) => return result,
                Attempt::RetryAfter(after) => {
                    last_trouble = SlackError::RateLimited {
                        method: method.to_owned(),
                    };
                    if let Some(on_retry) = on_retry {
                        on_retry(&last_trouble);
                    }
                    rate_limits += 1;
                    tracing::warn!(
                        method,
                        retry_after_ms = after.as_millis() as u64,
                        "Slack rate limit"
                    );
                    if deadline.is_none() && rate_limits > self.retry.max_rate_limit_retries {
                        return Err(SlackError::RateLimited {
                            method: method.to_owned(),
                        });
                    }
                    let wait = match pacer {
                        Some(pacer) => pacer.limited(sent, after),
                        None => after + self.jitter(),
                    };
                    (wait, "rate_limited")
                }
                Attempt::Failed(error) => {
                    if let Some(on_retry) = on_retry {
                        on_retry(&error);
                    }
                    failures += 1;
                    if failures > self.retry.max_failure_retries {
                        return Err(error);
                    }
                    tracing::warn!(method, %error, attempt = failures, "Slack call failed, retrying");
                    last_trouble = error;
                    (self.backoff(failures), "failure")
                }
            };
            if let Some(deadline) = deadline {
                if Instant::now() + wait >= deadline {
                    return Err(last_trouble);
                }
            }
            self.metrics.slack_retry(method, retry_reason);
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, method: &str, body: Args<'_>) -> Attempt {
        let url = format!("{}/{method}", self.base_url);
        let request = self.http.post(&url).bearer_auth(self.token.expose_secret());
        let request = match body {
            Args::Json(body) => request.json(body),
            Args::Form(form) => request.form(form),
        };
        let sent = request.send().await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Failed(SlackError::Transport {
                    method: method.to_owned(),
                    // Without the URL: it may carry a path someone considers sensitive.
                    detail: error.without_url().to_string(),
                });
            }
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Attempt::RetryAfter(retry_after(response.headers()));
        }
        if status.is_server_error() {
            return Attempt::Failed(SlackError::Http {
                method: method.to_owned(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Attempt::Done(Err(SlackError::Http {
                method: method.to_owned(),
                status: status.as_u16(),
            }));
        }
        let Ok(value) = response.json::<Value>().await else {
            return Attempt::Done(Err(SlackError::Malformed {
                method: method.to_owned(),
            }));
        };
        match value.get("ok").and_then(Value::as_bool) {
            Some(true) => Attempt::Done(Ok(value)),
            Some(false) => {
                let code = value
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown_error");
                if code == "ratelimited" {
                    return Attempt::RetryAfter(Duration::from_secs(1));
                }
                Attempt::Done(Err(SlackError::Api {
                    method: method.to_owned(),
                    code: code.to_owned(),
                }))
            }
            None => Attempt::Done(Err(SlackError::Malformed {
                method: method.to_owned(),
            })),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        Backoff::new(self.retry.base_backoff, self.retry.max_backoff).delay(failures)
    }

    fn jitter(&self) -> Duration {
        let max = self.retry.max_jitter.as_millis() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::thread_rng().gen_range(0..=max))
    }

    /// `chat.postMessage`: returns where the message landed.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
        deadline: Option<Instant>,
    ) -> Result<MessageRef, SlackError> {
        self.post_message_observed(channel, text, blocks, deadline, &|_| {})
            .await
    }

    /// [`post_message_observed`](Self::post_message_observed) paced by `pacer`, the
    /// channel's (see [`call_paced`](Self::call_paced)), for request `request_id`:
    /// the message carries metadata naming it, so that an interrupted post can be
    /// found instead of sent twice ([`super::history`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn post_message_paced(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
        deadline: Option<Instant>,
        on_retry: &OnRetry<'_>,
        pacer: &Pacer,
        request_id: &str,
    ) -> Result<MessageRef, SlackError> {
        let mut body = post_body(channel, text, blocks);
        body["metadata"] = super::history::metadata(request_id);
        let answer = self
            .call_paced("chat.postMessage", &body, deadline, on_retry, pacer)
            .await?;
        posted_at(&answer, channel)
    }

    /// [`post_message`](Self::post_message) that reports each retried failure to
    /// `on_retry` (see [`call_observed`](Self::call_observed)).
    pub async fn post_message_observed(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
        deadline: Option<Instant>,
        on_retry: &OnRetry<'_>,
    ) -> Result<MessageRef, SlackError> {
        let body = post_body(channel, text, blocks);
        let answer = self
            .call_observed("chat.postMessage", &body, deadline, on_retry)
            .await?;
        posted_at(&answer, channel)
    }

    /// `chat.update`: replaces a message's text and blocks.
    pub async fn update_message(
        &self,
        message: &MessageRef,
        text: &str,
        blocks: &Value,
    ) -> Result<(), SlackError> {
        let body =
            json!({ "channel": message.channel, "ts": message.ts, "text": text, "blocks": blocks });
        self.call("chat.update", &body, None).await.map(drop)
    }

    /// `chat.postEphemeral`: a note only `user` sees.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let body = json!({ "channel": channel, "user": user, "text": text });
        self.call("chat.postEphemeral", &body, None).await.map(drop)
    }
}

/// A `chat.postMessage` body.
fn post_body(channel: &str, text: &str, blocks: &Value) -> Value {
    json!({ "channel": channel, "text": text, "blocks": blocks, "unfurl_links": false, "unfurl_media": false })
}

/// Where a `chat.postMessage` answer says the message landed.
fn posted_at(answer: &Value, channel: &str) -> Result<MessageRef, SlackError> {
    let ts = answer.get("ts").and_then(Value::as_str);
    let channel = answer
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or(channel);
    match ts {
        Some(ts) => Ok(MessageRef {
            channel: channel.to_owned(),
            ts: ts.to_owned(),
        }),
        None => Err(SlackError::Malformed {
            method: "chat.postMessage".into(),
        }),
    }
}

/// `Retry-After` in seconds; Slack always sends it with 429, but be safe if not.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let secs = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_and_bounded() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&h), Duration::from_secs(7));
        h.insert(RETRY_AFTER, "99999".parse().expect("header"));
        assert_eq!(retry_after(&h), Duration::from_secs(300));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let retry = RetryPolicy {
            max_jitter: Duration::ZERO,
            ..RetryPolicy::default()
        };
        let client =
            SlackClient::new("http://127.0.0.1:9", "x".to_owned().into(), retry).expect("client");
        for _ in 0..20 {
            let first = client.backoff(1);
            assert!(first > Duration::from_millis(190) && first <= Duration::from_millis(250));
            let second = client.backoff(2);
            assert!(second > Duration::from_millis(390) && second <= Duration::from_millis(500));
            let capped = client.backoff(30);
            assert!(capped > Duration::from_millis(6390) && capped <= Duration::from_secs(8));
        }
    }

    #[test]
    fn debug_hides_token() {
        let client = SlackClient::new(
            "http://127.0.0.1:9",
            "xoxb-secret".to_owned().into(),
            RetryPolicy::default(),
        )
        .expect("client");
        assert!(!format!("{client:?}").contains("xoxb-secret"));
    }
}
