//! The Rust client of the agent API, for Rust agents and for the `greenlight request`
//! gate. It mirrors the Python client (`clients/python`), so every agent sees the same
//! behaviour:
//!
//! 1. submit the request with a fresh `Idempotency-Key`, retrying connection errors
//!    and 5xx/429 for a while: a retried POST finds the first request instead of
//!    posting a second Slack message;
//! 2. re-attach by id with long-polls (`GET /v1/approvals/{id}?wait=N`, N ≤ 25),
//!    reconnecting with bounded exponential backoff, so a restart of the service (which
//!    keeps every request in SQLite) costs the agent nothing;
//! 3. stop at the decision, or at the request's expiry plus a small grace.
//!
//! [`Client::try_request_approval`] tells "denied" (`Ok`) from "could not ask"
//! (`Err`); [`Client::request_approval`] is built on it and *fails closed*: any error
//! becomes `approved: false` with a reason saying what went wrong, because an approval
//! callback that errors or panics would take the agent down with it.
//!
//! ```no_run
//! # async fn run() -> Result<(), greenlight_client::ClientError> {
//! use greenlight_client::{ApprovalRequest, Client};
//!
//! let client = Client::new("http://127.0.0.1:8080", std::env::var("GREENLIGHT_API_TOKEN").unwrap_or_default())?;
//! let answer = client
//!     .request_approval(ApprovalRequest::new("rm -rf /tmp/cache").language("bash").timeout_secs(600))
//!     .await;
//! if answer.approved { /* run it */ } else { eprintln!("not approved: {}", answer.reason); }
//! # Ok(()) }
//! ```
//!
//! This crate speaks only the agent API's JSON (`docs/api-contract.md`): it does not
//! depend on the greenlight server, so an agent compiles an HTTP client and nothing of
//! axum, sqlx or the Slack side.
//!
//! # Layout
//! - this file: [`Client`] and its builder, what to ask ([`ApprovalRequest`]) and what
//!   comes back ([`Decision`], [`ApprovalResponse`]); the submit and wait loops.
//! - [`wire`]: the approval object as the service sends it ([`Approval`]).
//! - `protocol`: the judgement calls (retry or give up, back-off, how long to wait) as
//!   pure functions.
//! - `error`: [`ClientError`], every way of not getting a decision.
//! - [`webhooks`]: verifying the signed decision callbacks (`callback_url`).
//! - `cli` (feature `cli`): `greenlight request`, the approval gate for scripts and CI.

#[cfg(feature = "cli")]
pub mod cli;
mod error;
pub mod manage;
mod protocol;
pub mod webhooks;
pub mod wire;

use std::{fmt, time::Duration};

use reqwest::header::RETRY_AFTER;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::time::Instant;

pub use error::ClientError;
pub use manage::{Batch, BatchStatus, Grant};
pub use protocol::MAX_POLL_WAIT_SECS;
pub use wire::{Approval, ApprovalStatus};

use protocol::{Backoff, Exchange, Phase, Step};

/// Largest answer body read: an approval object is a few hundred bytes, and a
/// misbehaving server (or something else on that port) must not exhaust memory.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// While a long-poll answers "pending" at once (e.g. a server shutting down), wait this
/// long before asking again instead of hammering it.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What to ask a reviewer. Only `code` is required; the service fills in defaults
/// (`timeout_secs` from `GREENLIGHT_DEFAULT_TIMEOUT_SECS`, one approval).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApprovalRequest {
    /// The code or command to run, shown verbatim in Slack.
    pub code: String,
    /// Fence language(s), e.g. `"bash"` or `"python, sh"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// One line for the Slack message (≤ 200 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Anything that helps the reviewer decide (stored, shown in Slack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// How long a reviewer has; no decision by then denies (1..=604800).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// The Slack user the agent acts for (`U…`/`W…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester_slack_id: Option<String>,
    /// Approvals needed (1..=10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_approvals: Option<u32>,
    /// Reuse a key to re-attach to the same request after the agent itself restarted;
    /// by default each call gets a fresh UUID v4.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

impl ApprovalRequest {
    /// A request for `code`, every other field unset. The service refuses a blank
    /// `code` ([`ClientError::Rejected`], HTTP 422).
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            ..Self::default()
        }
    }

    /// Sets `language`: the fence language(s) of the code, e.g. `bash`, or `python, sh`
    /// for several; at most 64 characters of letters, digits, spaces and `+ # . _ - ,`
    /// (else HTTP 422). Policy rules may match on it.
    pub fn language(mut self, language: impl Into<String>) -> Self {
        self.language = Some(language.into());
        self
    }

    /// Sets `title`: one line shown above the code, at most 200 characters (else HTTP
    /// 422).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets `context`: any JSON that helps the reviewer decide. Policy rules may match
    /// on fields of an object (`context.env = "prod"`).
    pub fn context(mut self, context: serde_json::Value) -> Self {
        self.context = Some(context);
        self
    }

    /// Sets `timeout_secs`: seconds reviewers have before the request expires, denied
    /// (1 to 604800, a week; else HTTP 422). A policy rule may shorten it; the client
    /// waits until the `expires_at` the service answers, plus its grace.
    pub fn timeout_secs(mut self, secs: u64) -> Self {
        self.timeout_secs = Some(secs);
        self
    }
}

/// How a request ended, when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionStatus {
    /// Approved by enough reviewers, a policy rule or a standing grant: go ahead.
    Approved,
    /// Denied by a reviewer (with a reason), a policy rule, or because its Slack
    /// message could not be posted.
    Denied,
    /// Nobody decided in time: denied by default.
    Expired,
    /// Withdrawn through the API.
    Cancelled,
}

impl DecisionStatus {
    /// The status as the API spells it: `approved`, `denied`, `expired`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionStatus::Approved => "approved",
            DecisionStatus::Denied => "denied",
            DecisionStatus::Expired => "expired",
            DecisionStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for DecisionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service's final answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The approval id, a hyphenated UUID (what `GET /v1/approvals/{id}` takes).
    pub id: String,
    /// How it ended; only `Approved` means go ahead.
    pub status: DecisionStatus,
    /// Why, e.g. "Approved in Slack by <@U024BE7LH>"; never empty.
    pub reason: String,
    /// Who decided: Slack user id(s) (comma-separated, in approval order, when several
    /// approved), `web:<name>` for a review-page reviewer, the agent's name when it
    /// cancelled, or `greenlight` when no person did (timeouts, policy rules).
    pub decided_by: Option<String>,
    /// The full approval object as the service returned it.
    pub approval: Approval,
}

impl Decision {
    /// True only for [`DecisionStatus::Approved`].
    pub fn approved(&self) -> bool {
        self.status == DecisionStatus::Approved
    }
}

/// [`ApprovalResponse::status`]: a [`DecisionStatus`], or `Error` when the client
/// could not get a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    /// [`DecisionStatus::Approved`]: the only status with `approved: true`.
    Approved,
    /// [`DecisionStatus::Denied`].
    Denied,
    /// [`DecisionStatus::Expired`]: nobody decided in time.
    Expired,
    /// [`DecisionStatus::Cancelled`]: withdrawn through the API.
    Cancelled,
    /// No decision could be had ([`ClientError`]); treated as a denial.
    Error,
}

impl ResponseStatus {
    /// `approved`, `denied`, `expired`, `cancelled` or `error`: the same strings as
    /// the Python client's `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseStatus::Approved => "approved",
            ResponseStatus::Denied => "denied",
            ResponseStatus::Expired => "expired",
            ResponseStatus::Cancelled => "cancelled",
            ResponseStatus::Error => "error",
        }
    }
}

impl fmt::Display for ResponseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<DecisionStatus> for ResponseStatus {
    fn from(status: DecisionStatus) -> Self {
        match status {
            DecisionStatus::Approved => ResponseStatus::Approved,
            DecisionStatus::Denied => ResponseStatus::Denied,
            DecisionStatus::Expired => ResponseStatus::Expired,
            DecisionStatus::Cancelled => ResponseStatus::Cancelled,
        }
    }
}

/// What an agent's approval callback needs: `approved` is true only for an explicit
/// approval; everything else, errors included, is a denial with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalResponse {
    /// True only for an explicit approval; run the action only then.
    pub approved: bool,
    /// Never empty: the service's reason, or for `Error` `greenlight: <what went
    /// wrong>; denied by default (fail closed)`.
    pub reason: String,
    /// How it ended, or `Error`.
    pub status: ResponseStatus,
    /// The approval id (UUID); `None` when no request was created or the error came
    /// before its id was known (e.g. the service unreachable at submit).
    pub id: Option<String>,
    /// As [`Decision::decided_by`]; `None` for `Error`.
    pub decided_by: Option<String>,
}

impl From<Decision> for ApprovalResponse {
    fn from(decision: Decision) -> Self {
        Self {
            approved: decision.approved(),
            reason: decision.reason,
            status: decision.status.into(),
            id: Some(decision.id),
            decided_by: decision.decided_by,
        }
    }
}

impl ApprovalResponse {
    /// The denial that stands in for an error (fail closed).
    pub fn fail_closed(error: &ClientError) -> Self {
        Self {
            approved: false,
            reason: format!("greenlight: {error}; denied by default (fail closed)"),
            status: ResponseStatus::Error,
            id: error.approval_id().map(str::to_owned),
            decided_by: None,
        }
    }
}

/// Timing knobs; the defaults match the Python client.
#[derive(Debug, Clone)]
struct Settings {
    poll_wait: Duration,
    timeout: Option<Duration>,
    initial_backoff: Duration,
    max_backoff: Duration,
    submit_retry: Duration,
    grace: Duration,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            poll_wait: Duration::from_secs(MAX_POLL_WAIT_SECS),
            timeout: None,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            submit_retry: Duration::from_secs(15),
            grace: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Configures a [`Client`]; see each option for its default.
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: SecretString,
    settings: Settings,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("settings", &self.settings)
            .finish()
    }
}

impl ClientBuilder {
    /// Longest single long-poll (default and maximum 25 s, minimum 1 s).
    pub fn poll_wait(mut self, wait: Duration) -> Self {
        self.settings.poll_wait = wait;
        self
    }

    /// Overall limit for one call, submission included (default: none, i.e. until the
    /// request's own expiry plus grace). When it runs out first the client withdraws
    /// the request, so a reviewer cannot approve what the agent no longer waits for.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = Some(timeout);
        self
    }

    /// Reconnect backoff: doubles from `initial` (default 250 ms, at least 10 ms) up to
    /// `max` (default 4 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.settings.initial_backoff = initial.max(Duration::from_millis(10));
        self.settings.max_backoff = max;
        self
    }

    /// How long to keep retrying the submission while the service is unreachable or
    /// answers 5xx/429 (default 15 s). Until it succeeds nobody has been asked, so
    /// giving up early (e.g. in CI) is safe.
    pub fn submit_retry(mut self, limit: Duration) -> Self {
        self.settings.submit_retry = limit;
        self
    }

    /// How long past the request's expiry to keep trying to learn its decision
    /// (default 5 s): the service needs a moment to record the expiry.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.settings.grace = grace;
        self
    }

    /// Limit for one ordinary exchange, on top of a long-poll's wait (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// TCP/TLS connect limit (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Checks the URL and token, so a misconfiguration shows at start-up rather than
    /// as a denial later.
    pub fn build(self) -> Result<Client, ClientError> {
        let base_url = parse_base_url(&self.base_url)?;
        if self.token.expose_secret().trim().is_empty() {
            return Err(ClientError::Config("the API token is empty".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "greenlight-client-rust/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| {
                ClientError::Config(format!(
                    "cannot set up HTTP: {}",
                    protocol::describe_error(&e)
                ))
            })?;
        Ok(Client {
            base_url,
            token: self.token,
            http,
            settings: self.settings,
        })
    }
}

/// `http(s)://host[:port][/prefix]`, kept without a trailing slash so paths append.
fn parse_base_url(raw: &str) -> Result<String, ClientError> {
    let invalid = |why: &str| ClientError::Config(format!("invalid service URL {raw:?}: {why}"));
    let trimmed = raw.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if !url.host_str().is_some_and(|host| !host.is_empty()) {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or fragment"));
    }
    Ok(trimmed.to_owned())
}

/// A greenlight client. Cheap to clone (connections are shared); `Debug` never shows
/// the token.
#[derive(Clone)]
pub struct Client {
    base_url: String,
    token: SecretString,
    http: reqwest::Client,
    settings: Settings,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Client {
    /// A client with default timings; see [`Client::builder`] for the options.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(base_url, token).build()
    }

    /// A [`ClientBuilder`] for `base_url` (`http(s)://host[:port][/prefix]`, no query
    /// or fragment) and the agent's API token from `GREENLIGHT_API_TOKENS` (sent as
    /// `Authorization: Bearer`). Nothing is checked until [`ClientBuilder::build`].
    pub fn builder(base_url: impl Into<String>, token: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            token: SecretString::from(token.into()),
            settings: Settings::default(),
        }
    }

    /// The service URL as given, trimmed and without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Asks a reviewer and waits for the decision; never fails. Use this as an agent's
    /// approval callback: errors (unreachable service, rejected token or request,
    /// malformed answer, no decision in time) come back as `approved: false`,
    /// `status: Error` and a reason naming the problem.
    pub async fn request_approval(&self, request: ApprovalRequest) -> ApprovalResponse {
        match self.try_request_approval(request).await {
            Ok(decision) => decision.into(),
            Err(error) => {
                tracing::warn!(%error, "greenlight: no decision; denying (fail closed)");
                ApprovalResponse::fail_closed(&error)
            }
        }
    }

    /// Asks a reviewer and waits for the decision. `Ok` is the service's decision
    /// (approved, denied, expired or cancelled); `Err` means no decision could be had.
    pub async fn try_request_approval(
        &self,
        request: ApprovalRequest,
    ) -> Result<Decision, ClientError> {
        let start = Instant::now();
        let overall = self.settings.timeout.map(|t| start + t);
        let key = request
            .idempotency_key
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let view = self.submit(&request, &key, start, overall).await?;
        if view.status != ApprovalStatus::Pending {
            return final_decision(*view);
        }
        let expiry = Expiry {
            start,
            requested_secs: request.timeout_secs,
            grace: self.settings.grace,
        };
        self.wait_for_decision(&view, &expiry, overall).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `POST /v1/approvals`, retried with the same key until it lands or the submit
    /// retry window (bounded by the overall timeout) closes.
    async fn submit(
        &self,
        request: &ApprovalRequest,
        key: &str,
        start: Instant,
        overall: Option<Instant>,
    ) -> Result<Box<Approval>, ClientError> {
        let give_up_at = earliest(start + self.settings.submit_retry, overall);
        let mut backoff = Backoff::new(self.settings.initial_backoff, self.settings.max_backoff);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let timeout = bounded(self.settings.request_timeout, overall);
            let call = self
                .http
                .post(self.url("/v1/approvals"))
                .bearer_auth(self.token.expose_secret())
                .header("Idempotency-Key", key)
                .timeout(timeout)
                .json(request);
            let (problem, min_delay) =
                match protocol::classify(self.exchange(call).await, Phase::Submit) {
                    Step::Approval(view) => return Ok(view),
                    Step::Fail(error) => return Err(error),
                    Step::Retry { problem, min_delay } => (problem, min_delay),
                };
            let delay = backoff.next_delay().max(min_delay);
            if Instant::now() + delay > give_up_at {
                return Err(ClientError::Unreachable {
                    url: self.base_url.clone(),
                    problem,
                    attempts,
                    elapsed: start.elapsed(),
                });
            }
            tracing::info!(%problem, ?delay, "greenlight: submission failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Long-polls `GET /v1/approvals/{id}` until a decision or the deadline, riding out
    /// restarts and blips with backoff.
    async fn wait_for_decision(
        &self,
        submitted: &Approval,
        rule: &Expiry,
        overall: Option<Instant>,
    ) -> Result<Decision, ClientError> {
        let (id, start) = (&submitted.id.to_string(), rule.start);
        let mut expires_at = submitted.expires_at.clone();
        let mut expiry = rule.of(submitted);
        let mut deadline = earliest(expiry, overall);
        let mut backoff = Backoff::new(self.settings.initial_backoff, self.settings.max_backoff);
        let mut last_problem: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                if overall.is_some_and(|o| o <= expiry) {
                    let withdrawn = self.withdraw(id).await;
                    return Err(ClientError::TimedOut {
                        id: id.to_owned(),
                        after: start.elapsed(),
                        withdrawn,
                    });
                }
                return Err(ClientError::NoDecision {
                    id: id.to_owned(),
                    expires_at: expires_at.clone(),
                    last_problem,
                });
            }
            let wait = protocol::poll_wait_secs(remaining, self.settings.poll_wait);
            // The server holds the poll for `wait`; beyond the deadline nobody listens.
            let timeout = (Duration::from_secs(wait) + self.settings.request_timeout)
                .min(remaining + Duration::from_secs(1));
            let asked_at = Instant::now();
            let call = self
                .http
                .get(self.url(&format!("/v1/approvals/{id}")))
                .query(&[("wait", wait)])
                .bearer_auth(self.token.expose_secret())
                .timeout(timeout);
            match protocol::classify(self.exchange(call).await, Phase::Poll { id }) {
                Step::Approval(view) if view.status != ApprovalStatus::Pending => {
                    return final_decision(*view)
                }
                Step::Approval(view) => {
                    backoff.reset();
                    last_problem = None;
                    if view.expires_at != expires_at {
                        // An escalation moved the deadline: wait as long as it lives.
                        expiry = rule.of(&view);
                        deadline = earliest(expiry, overall);
                        expires_at = view.expires_at;
                    }
                    if asked_at.elapsed() < MIN_POLL_INTERVAL {
                        sleep_until_at_most(Instant::now() + MIN_POLL_INTERVAL, deadline).await;
                    }
                }
                Step::Retry { problem, min_delay } => {
                    let delay = backoff.next_delay().max(min_delay);
                    tracing::info!(%id, %problem, ?delay, "greenlight: waiting failed; retrying");
                    last_problem = Some(problem);
                    sleep_until_at_most(Instant::now() + delay, deadline).await;
                }
                Step::Fail(error) => return Err(error),
            }
        }
    }

    /// Best-effort `POST /v1/approvals/{id}/cancel` when the caller stops waiting;
    /// `true` when the service confirmed it.
    async fn withdraw(&self, id: &str) -> bool {
        let call = self
            .http
            .post(self.url(&format!("/v1/approvals/{id}/cancel")))
            .bearer_auth(self.token.expose_secret())
            .timeout(self.settings.request_timeout.min(Duration::from_secs(5)));
        match self.exchange(call).await {
            Exchange::Reply { status: 200, .. } => {
                tracing::info!(%id, "greenlight: withdrew the request after the client timeout");
                true
            }
            other => {
                tracing::warn!(%id, answer = ?other, "greenlight: could not withdraw the request");
                false
            }
        }
    }

    /// One HTTP exchange, reduced to what the protocol needs.
    async fn exchange(&self, call: reqwest::RequestBuilder) -> Exchange {
        let mut response = match call.send().await {
            Ok(response) => response,
            Err(error) => return Exchange::Failed(protocol::describe_error(&error)),
        };
        let status = response.status().as_u16();
        let retry_after = protocol::parse_retry_after(
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_ANSWER_BYTES {
                        return Exchange::Failed(format!(
                            "HTTP {status} answer larger than {MAX_ANSWER_BYTES} bytes"
                        ));
                    }
                }
                Ok(None) => break,
                Err(error) => return Exchange::Failed(protocol::describe_error(&error)),
            }
        }
        Exchange::Reply {
            status,
            retry_after,
            body,
        }
    }
}

fn final_decision(view: Approval) -> Result<Decision, ClientError> {
    protocol::decision_of(view)?.ok_or_else(|| ClientError::Malformed {
        during: "while waiting",
        detail: "a pending request was taken for a decision".into(),
        id: None,
    })
}

fn earliest(at: Instant, other: Option<Instant>) -> Instant {
    other.map_or(at, |o| o.min(at))
}

/// `limit`, shortened so a single exchange cannot outlast the overall deadline.
fn bounded(limit: Duration, overall: Option<Instant>) -> Duration {
    match overall {
        Some(o) => limit
            .min(o.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(100)),
        None => limit,
    }
}

/// When the client stops waiting for a request's decision.
struct Expiry {
    /// Just before the submission: the wait is measured from here, so the client
    /// never gives up before the server does.
    start: Instant,
    /// The `timeout_secs` asked for, used when the answer's times cannot be read.
    requested_secs: Option<u64>,
    /// How long past the request's life the client keeps asking.
    grace: Duration,
}

impl Expiry {
    /// The request's life on the server's own clock (`expires_at - created_at`), from
    /// [`Expiry::start`], plus the grace. Taken again from every answer whose
    /// `expires_at` changed: an escalation may move the deadline later.
    fn of(&self, view: &Approval) -> Instant {
        self.start + protocol::time_to_live(view, self.requested_secs) + self.grace
    }
}

async fn sleep_until_at_most(until: Instant, deadline: Instant) {
    tokio::time::sleep_until(until.min(deadline)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "secret-token-0123456789abcdef";

    #[test]
    fn debug_and_errors_never_show_the_token() {
        let client = Client::new("http://127.0.0.1:9", TOKEN).expect("client");
        assert!(!format!("{client:?}").contains(TOKEN));
        let builder = Client::builder("http://127.0.0.1:9", TOKEN);
        assert!(!format!("{builder:?}").contains(TOKEN));
        let error = Client::new("ftp://example", TOKEN).expect_err("bad scheme");
        assert!(!error.to_string().contains(TOKEN));
    }

    #[test]
    fn base_urls_are_checked_and_normalised() {
        assert_eq!(
            parse_base_url(" http://127.0.0.1:8080/ ").expect("ok"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            parse_base_url("https://example.com/greenlight/").expect("ok"),
            "https://example.com/greenlight"
        );
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://x",
            "http://x/?a=1",
            "not a url",
        ] {
            assert!(
                matches!(parse_base_url(bad), Err(ClientError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_empty_token_is_a_configuration_error() {
        assert!(matches!(
            Client::new("http://127.0.0.1:9", "  "),
            Err(ClientError::Config(_))
        ));
    }

    #[test]
    fn request_body_omits_what_was_not_given() {
        let body = serde_json::to_value(ApprovalRequest::new("ls")).expect("json");
        assert_eq!(body, serde_json::json!({"code": "ls"}));
        let mut request = ApprovalRequest::new("ls")
            .language("bash")
            .timeout_secs(5)
            .context(serde_json::json!({"k": 1}));
        request.idempotency_key = Some("key".into());
        let body = serde_json::to_value(request).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"code": "ls", "language": "bash", "timeout_secs": 5, "context": {"k": 1}})
        );
    }

    #[test]
    fn errors_become_reasoned_denials() {
        let error = ClientError::NoDecision {
            id: "abc".into(),
            expires_at: "2026-01-01T00:00:00.000Z".into(),
            last_problem: Some("connection refused".into()),
        };
        let response = ApprovalResponse::fail_closed(&error);
        assert!(!response.approved);
        assert_eq!(response.status, ResponseStatus::Error);
        assert_eq!(response.id.as_deref(), Some("abc"));
        assert_eq!(
            response.reason,
            "greenlight: no decision for approval abc before it expired at \
             2026-01-01T00:00:00.000Z; last problem: connection refused; denied by default (fail closed)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_never_outlasts_the_overall_deadline() {
        let now = Instant::now();
        let limit = Duration::from_secs(30);
        assert_eq!(bounded(limit, None), limit);
        assert_eq!(
            bounded(limit, Some(now + Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(bounded(limit, Some(now)), Duration::from_millis(100));
    }
}
