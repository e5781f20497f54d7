//! Prometheus metrics: what an operator needs to see the approval loop working, and
//! nothing that identifies a person or a request.
//!
//! One [`Metrics`] per server, not a process-wide global: tests run many servers in one
//! process, and each must read its own counters. It is a cheap `Clone` handle that the
//! service, the Slack client and the HTTP layer each record into at one point per event.
//!
//! Every label value comes from a closed set: outcomes and click results are enums,
//! agent names come from configuration, Slack methods and error codes are mapped onto a
//! fixed list (anything else is `other`), HTTP routes are the router's templates. Never
//! an approval id, a user id or a raw path: those would grow the series without bound.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{model::Status, slack::signature::SignatureError};

/// How a request ended, as the decisions metric labels it (`outcome`). `Auto` is for
/// requests final at submit, whichever way they went (a policy rule, or a standing
/// grant), so the other four count what people, the clock and agents decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Enough reviewers approved ("Approve for …" included).
    Approved,
    /// A person denied, or the Slack message could not be posted.
    Denied,
    /// Nobody decided before the deadline.
    Expired,
    /// The agent withdrew it (or greenlight, for a hook call cut off by shutdown).
    Cancelled,
    /// Decided at submit: an `auto_approve` / `auto_deny` rule, or a standing grant.
    Auto,
}

impl Outcome {
    /// Every outcome: each label's series is created at zero at start-up, so a rate
    /// over it exists before the first such decision.
    pub const ALL: [Outcome; 5] = [
        Outcome::Approved,
        Outcome::Denied,
        Outcome::Expired,
        Outcome::Cancelled,
        Outcome::Auto,
    ];

    /// The `outcome` label value, lowercase: `approved`, …, `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Denied => "denied",
            Outcome::Expired => "expired",
            Outcome::Cancelled => "cancelled",
            Outcome::Auto => "auto",
        }
    }

    /// The outcome of a final status decided by a person, the clock or the agent.
    pub fn of(status: Status) -> Option<Self> {
        match status {
            Status::Pending => None,
            Status::Approved => Some(Outcome::Approved),
            Status::Denied => Some(Outcome::Denied),
            Status::Expired => Some(Outcome::Expired),
            Status::Cancelled => Some(Outcome::Cancelled),
        }
    }
}

/// Every click result (`approval::outcomes::ClickOutcome`, whose unit test keeps the
/// two in step): each series exists at zero from start-up, so a rate or an alert on
/// a rare one (`self_approval`, `unverified`) works before it first happens.
pub const CLICK_OUTCOMES: [&str; 11] = [
    "accepted",
    "duplicate",
    "late",
    "unknown",
    "counted",
    "reason_requested",
    "not_approver",
    "self_approval",
    "unverified",
    "policy_forbids",
    "grant_not_offered",
];

/// Why a Slack request's signature was refused (see `slack::signature`).
pub const SIGNATURE_FAILURES: [&str; 5] = [
    "missing_header",
    "malformed_timestamp",
    "stale_timestamp",
    "malformed_signature",
    "mismatch",
];

/// Why Socket Mode opened a new connection (see `slack::socket_mode`): Slack asked
/// for it after a stable connection (`planned`), Slack ended a young connection
/// (`disconnected`, e.g. `too_many_websockets`), the link dropped (`lost`), or the
/// previous attempt could not connect at all (`connect_failed`).
pub const SOCKET_RECONNECT_CAUSES: [&str; 4] =
    ["planned", "disconnected", "lost", "connect_failed"];

/// The Web API methods greenlight calls (or is about to); any other is `other`.
const SLACK_METHODS: &[&str] = &[
    "auth.test",
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "views.open",
    "views.update",
    "views.push",
    "apps.connections.open",
    "conversations.info",
    "conversations.members",
    "usergroups.users.list",
    "users.info",
];

/// Slack error codes worth telling apart on a dashboard; any other is `other`. Codes
/// come from Slack's answer, so without this list a misbehaving upstream could mint
/// series at will.
const SLACK_ERROR_CODES: &[&str] = &[
    "ok",
    "rate_limited",
    "http_error",
    "unreachable",
    "malformed_response",
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "missing_scope",
    "not_allowed_token_type",
    "channel_not_found",
    "not_in_channel",
    "is_archived",
    "msg_too_long",
    "no_text",
    "invalid_blocks",
    "invalid_arguments",
    "invalid_arg_name",
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
    "user_not_found",
    "user_not_in_channel",
    "expired_trigger_id",
    "invalid_trigger_id",
    "view_too_large",
    "restricted_action",
    "team_access_not_granted",
    "fatal_error",
    "internal_error",
    "service_unavailable",
    "request_timeout",
];

/// Maps a Slack method name onto the bounded set.
pub fn bounded_slack_method(method: &str) -> &'static str {
    SLACK_METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other")
}

/// Maps a Slack error code (or one of the client's own failure names) onto the
/// bounded set. Slack's `ratelimited` and HTTP 429 are both `rate_limited`.
pub fn bounded_slack_code(code: &str) -> &'static str {
    if code == "ratelimited" {
        return "rate_limited";
    }
    SLACK_ERROR_CODES
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    agent: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlackLabels {
    method: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlackRetryLabels {
    method: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The outcomes of `greenlight_callback_deliveries_total`.
const CALLBACK_OUTCOMES: [&str; 3] = ["delivered", "retried", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

/// Submit-to-decision time: from seconds (a reviewer watching the channel) to the
/// one-week maximum timeout.
fn decision_histogram() -> Histogram {
    Histogram::new([
        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
        604800.0,
    ])
}

/// HTTP latency: milliseconds for API calls, up to the 60 s long-poll cap.
fn http_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// The service's metrics. Clones share the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    submitted: Family<AgentLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    decisions: Family<OutcomeLabels, Counter>,
    decision_seconds: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    pending: Gauge,
    long_polls: Gauge,
    db_commits: Counter,
    db_writes: Counter,
    slack_calls: Family<SlackLabels, Counter>,
    slack_retries: Family<SlackRetryLabels, Counter>,
    socket_reconnects: Family<CauseLabels, Counter>,
    signature_failures: Family<ReasonLabels, Counter>,
    clicks: Family<OutcomeLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    worker_restarts: Family<WorkerLabels, Counter>,
    grants: Family<KindLabels, Counter>,
    nudges: Family<KindLabels, Counter>,
    callback_deliveries: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh registry (prefix `greenlight_`) with every metric registered and the
    /// closed label sets' series created at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("greenlight");
        let submitted = Family::<AgentLabels, Counter>::default();
        registry.register(
            "approvals_submitted",
            "Approval requests created, by agent (idempotent replays excluded)",
            submitted.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "submissions_refused",
            "Submissions refused by a limit, by agent and reason (rate_limited, too_many_pending)",
            refused.clone(),
        );
        let decisions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "decisions",
            "Approval requests decided, by outcome",
            decisions.clone(),
        );
        let decision_seconds =
            Family::<OutcomeLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                decision_histogram,
            );
        registry.register(
            "decision_duration_seconds",
            "Time from submission to decision, by outcome",
            decision_seconds.clone(),
        );
        let pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "Approval requests waiting for a decision (read from the database at scrape time)",
            pending.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "long_polls_waiting",
            "Agent calls currently parked waiting for a decision",
            long_polls.clone(),
        );
        let db_commits = Counter::default();
        registry.register(
            "db_commits",
            "Write transactions the group-committing writer committed (each one fsync)",
            db_commits.clone(),
        );
        let db_writes = Counter::default();
        registry.register(
            "db_writes",
            "Writes (submits, votes, decisions, outbox updates) the writer ran; writes per commit is the group-commit batch size",
            db_writes.clone(),
        );
        let slack_calls = Family::<SlackLabels, Counter>::default();
        registry.register(
            "slack_api_requests",
            "Slack Web API HTTP attempts, by method and result (ok, a Slack error code, rate_limited, http_error, unreachable, malformed_response, other)",
            slack_calls.clone(),
        );
        let slack_retries = Family::<SlackRetryLabels, Counter>::default();
        registry.register(
            "slack_api_retries",
            "Slack Web API attempts retried, by method and reason (rate_limited, failure)",
            slack_retries.clone(),
        );
        let socket_reconnects = Family::<CauseLabels, Counter>::default();
        registry.register(
            "slack_socket_reconnects",
            "Socket Mode connections opened to replace an earlier one, by cause (planned, disconnected, lost, connect_failed)",
            socket_reconnects.clone(),
        );
        let signature_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "slack_signature_failures",
            "Slack requests refused for their signature, by reason",
            signature_failures.clone(),
        );
        let clicks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "clicks",
            "Approve/Deny clicks, by outcome (accepted, duplicate, late, unknown, not_approver)",
            clicks.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        let http_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                http_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template (long-polls included)",
            http_seconds.clone(),
        );
        let worker_restarts = Family::<WorkerLabels, Counter>::default();
        registry.register(
            "worker_restarts",
            "Background workers restarted after a panic, by worker (deadlines, slack-outbox, …)",
            worker_restarts.clone(),
        );

        let grants = Family::<KindLabels, Counter>::default();
        registry.register(
            "grant_events",
            "Standing grants made, used (a request approved by one) and revoked, by kind",
            grants.clone(),
        );
        let nudges = Family::<KindLabels, Counter>::default();
        registry.register(
            "nudges",
            "Reminders and escalations of pending requests, by kind (reminder, escalation)",
            nudges.clone(),
        );
        for kind in ["made", "used", "revoked"] {
            drop(grants.get_or_create(&KindLabels { kind }));
        }
        for kind in ["reminder", "escalation"] {
            drop(nudges.get_or_create(&KindLabels { kind }));
        }

        // Every known label value shows up as 0 from the first scrape, so a rate() over a
        let callback_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "callback_deliveries",
            "Decision callback attempts, by outcome (delivered, retried, failed: given up)",
            callback_deliveries.clone(),
        );
        for outcome in CALLBACK_OUTCOMES {
            drop(callback_deliveries.get_or_create(&OutcomeLabels { outcome }));
        }
        // fresh series works and dashboards list all outcomes.
        for outcome in Outcome::ALL {
            let labels = OutcomeLabels {
                outcome: outcome.as_str(),
            };
            drop(decisions.get_or_create(&labels));
            drop(decision_seconds.get_or_create(&labels));
        }
        for outcome in CLICK_OUTCOMES {
            drop(clicks.get_or_create(&OutcomeLabels { outcome }));
        }
        for cause in SOCKET_RECONNECT_CAUSES {
            drop(socket_reconnects.get_or_create(&CauseLabels { cause }));
        }
        for reason in SIGNATURE_FAILURES {
            drop(signature_failures.get_or_create(&ReasonLabels { reason }));
        }

        Self {
            inner: Arc::new(Inner {
                registry,
                submitted,
                refused,
                decisions,
                decision_seconds,
                pending,
                long_polls,
                db_commits,
                db_writes,
                slack_calls,
                slack_retries,
                socket_reconnects,
                signature_failures,
                clicks,
                http_requests,
                http_seconds,
                worker_restarts,
                grants,
                nudges,
                callback_deliveries,
            }),
        }
    }

    /// Pre-creates the per-agent series for every configured agent.
    pub fn register_agents<'a>(&self, agents: impl IntoIterator<Item = &'a str>) {
        for agent in agents {
            drop(self.inner.submitted.get_or_create(&AgentLabels {
                agent: agent.to_owned(),
            }));
        }
    }

    /// A callback attempt ended: `delivered`, `retried` (will be tried again) or
    /// `failed` (the last attempt failed; given up).
    pub fn callback_delivery(&self, outcome: &'static str) {
        self.inner
            .callback_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A new approval request was recorded.
    pub fn submitted(&self, agent: &str) {
        self.inner
            .submitted
            .get_or_create(&AgentLabels {
                agent: agent.to_owned(),
            })
            .inc();
    }

    /// A submission was refused by a limit (`rate_limited` or `too_many_pending`).
    pub fn refused(&self, agent: &str, reason: &'static str) {
        self.inner
            .refused
            .get_or_create(&RefusalLabels {
                agent: agent.to_owned(),
                reason,
            })
            .inc();
    }

    /// A request was decided after waiting `waited`.
    pub fn decided(&self, outcome: Outcome, waited: Duration) {
        let labels = OutcomeLabels {
            outcome: outcome.as_str(),
        };
        self.inner.decisions.get_or_create(&labels).inc();
        self.inner
            .decision_seconds
            .get_or_create(&labels)
            .observe(waited.as_secs_f64());
    }

    /// One Slack HTTP attempt ended with `result` (`ok`, an error code, …).
    pub fn slack_attempt(&self, method: &str, result: &str) {
        self.inner
            .slack_calls
            .get_or_create(&SlackLabels {
                method: bounded_slack_method(method),
                result: bounded_slack_code(result),
            })
            .inc();
    }

    /// The Slack client is about to retry `method` (`rate_limited` or `failure`).
    pub fn slack_retry(&self, method: &str, reason: &'static str) {
        self.inner
            .slack_retries
            .get_or_create(&SlackRetryLabels {
                method: bounded_slack_method(method),
                reason,
            })
            .inc();
    }

    /// The background worker `worker` panicked and is being started again.
    pub fn worker_restarted(&self, worker: &'static str) {
        self.inner
            .worker_restarts
            .get_or_create(&WorkerLabels { worker })
            .inc();
    }

    /// Socket Mode is about to open a new connection, for `cause` (one of
    /// [`SOCKET_RECONNECT_CAUSES`]; anything else counts as `lost`).
    pub fn socket_reconnect(&self, cause: &'static str) {
        let cause = SOCKET_RECONNECT_CAUSES
            .iter()
            .find(|known| **known == cause)
            .copied()
            .unwrap_or("lost");
        self.inner
            .socket_reconnects
            .get_or_create(&CauseLabels { cause })
            .inc();
    }

    /// A Slack request was refused for its signature.
    pub fn signature_failure(&self, error: &SignatureError) {
        let reason = match error {
            SignatureError::MissingHeader => "missing_header",
            SignatureError::MalformedTimestamp => "malformed_timestamp",
            SignatureError::StaleTimestamp => "stale_timestamp",
            SignatureError::MalformedSignature => "malformed_signature",
            SignatureError::Mismatch => "mismatch",
        };
        self.inner
            .signature_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A standing grant was `made`, `used` or `revoked`.
    pub fn grant(&self, kind: &'static str) {
        self.inner.grants.get_or_create(&KindLabels { kind }).inc();
    }

    /// A pending request was nudged: `reminder` or `escalation`.
    pub fn nudge(&self, kind: &'static str) {
        self.inner.nudges.get_or_create(&KindLabels { kind }).inc();
    }

    /// A click was handled with this outcome (`ClickOutcome::as_str`).
    pub fn click(&self, outcome: &'static str) {
        self.inner
            .clicks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// An HTTP request was answered. `route` is the matched route template (or
    /// `unmatched`), never the raw path.
    pub fn http_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let method = match method {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "PATCH" => "PATCH",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => "other",
        };
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .http_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Gauges read at scrape time rather than tracked by increments, so they cannot
    /// drift across restarts or missed paths.
    pub fn set_pending(&self, pending: i64) {
        self.inner.pending.set(pending);
    }

    /// Agent calls parked waiting for a decision (long-polls, hooks), read from the
    /// service's waiters at scrape time.
    pub fn set_long_polls(&self, waiting: i64) {
        self.inner.long_polls.set(waiting);
    }

    /// Brings the writer counters up to the writer's own totals (read at scrape time).
    pub fn set_db_totals(&self, commits: u64, writes: u64) {
        for (counter, total) in [
            (&self.inner.db_commits, commits),
            (&self.inner.db_writes, writes),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The registry in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.inner.registry).is_err() {
            // Encoding into a String cannot fail; keep the scrape parseable regardless.
            let _ = writeln!(out, "# EOF");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_slack_codes_and_methods_are_bounded() {
        assert_eq!(bounded_slack_code("invalid_auth"), "invalid_auth");
        assert_eq!(bounded_slack_code("ratelimited"), "rate_limited");
        assert_eq!(bounded_slack_code("some_new_code_2031"), "other");
        assert_eq!(bounded_slack_method("chat.update"), "chat.update");
        assert_eq!(bounded_slack_method("admin.users.remove"), "other");
    }

    #[test]
    fn renders_known_series_from_the_start() {
        let metrics = Metrics::new();
        metrics.register_agents(["ci-bot"]);
        metrics.decided(Outcome::Approved, Duration::from_secs(3));
        metrics.slack_attempt("chat.postMessage", "weird_code");
        let text = metrics.render();
        for expected in [
            "greenlight_approvals_submitted_total{agent=\"ci-bot\"} 0",
            "greenlight_decisions_total{outcome=\"approved\"} 1",
            "greenlight_decisions_total{outcome=\"auto\"} 0",
            "greenlight_clicks_total{outcome=\"not_approver\"} 0",
            "greenlight_decision_duration_seconds_count{outcome=\"approved\"} 1",
            "greenlight_slack_api_requests_total{method=\"chat.postMessage\",result=\"other\"} 1",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
