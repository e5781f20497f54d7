//! The protocol's judgement calls as pure functions, so they are unit-tested without a
//! socket: what an HTTP answer means (done, retry, give up), how long to back off,
//! how long to long-poll and when to stop waiting. The loops in the parent module
//! only do I/O and sleeping around these.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    wire::{Approval, ApprovalStatus},
    ClientError, Decision, DecisionStatus,
};

/// Longest long-poll the client asks for. The server allows 60 s; staying well below
/// common proxy idle timeouts keeps connections healthy (same as the Python client).
pub const MAX_POLL_WAIT_SECS: u64 = 25;

/// How long to wait for the request's lifetime when the server's timestamps cannot be
/// read: long enough not to cut a normal request short, bounded so a broken answer
/// cannot park an agent forever.
const FALLBACK_TTL: Duration = Duration::from_secs(3600);

/// The outcome of one HTTP exchange, as the loops see it.
#[derive(Debug)]
pub enum Exchange {
    /// The service answered (any status).
    Reply {
        status: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    /// No answer: connection refused or reset, DNS, timeout. Described for a reason.
    Failed(String),
}

/// Which call an answer belongs to: the same status means different things.
#[derive(Debug, Clone, Copy)]
pub enum Phase<'a> {
    Submit,
    Poll { id: &'a str },
}

/// What to do after an exchange.
#[derive(Debug)]
pub enum Step {
    /// A valid approval object, pending or final.
    Approval(Box<Approval>),
    /// A transient problem (no answer, 408, 429, 5xx): try again after at least
    /// `min_delay` (the server's `Retry-After`, else zero).
    Retry {
        problem: String,
        min_delay: Duration,
    },
    /// A problem retrying cannot fix.
    Fail(ClientError),
}

/// Decides what an exchange means. The token is never part of an answer we quote.
pub fn classify(exchange: Exchange, phase: Phase<'_>) -> Step {
    let (status, retry_after, body) = match exchange {
        Exchange::Failed(problem) => {
            return Step::Retry {
                problem,
                min_delay: Duration::ZERO,
            }
        }
        Exchange::Reply {
            status,
            retry_after,
            body,
        } => (status, retry_after, body),
    };
    let id = match phase {
        Phase::Submit => None,
        Phase::Poll { id } => Some(id),
    };
    let during = if id.is_some() {
        "while waiting"
    } else {
        "to the submission"
    };
    let ok = match phase {
        Phase::Submit => (200..=202).contains(&status),
        Phase::Poll { .. } => status == 200,
    };
    if ok {
        return match parse_approval(status, &body, id) {
            Ok(view) => Step::Approval(Box::new(view)),
            Err(detail) => Step::Fail(ClientError::Malformed {
                during,
                detail,
                id: id.map(str::to_owned),
            }),
        };
    }
    let text = error_text(status, &body);
    match (status, id) {
        (401 | 403, _) => Step::Fail(ClientError::Unauthorized(text)),
        (408 | 429 | 500..=599, _) => Step::Retry {
            problem: format!("service error ({text})"),
            min_delay: retry_after.unwrap_or(Duration::ZERO),
        },
        (404, Some(id)) => Step::Fail(ClientError::UnknownApproval {
            id: id.to_owned(),
            detail: text,
        }),
        _ => Step::Fail(ClientError::Rejected(text)),
    }
}

/// Reads an approval object, checking it is the one we asked about.
pub fn parse_approval(
    status: u16,
    body: &[u8],
    expected_id: Option<&str>,
) -> Result<Approval, String> {
    let view: Approval = serde_json::from_slice(body).map_err(|error| {
        format!(
            "HTTP {status} body is not an approval object: {}; body: {}",
            one_line(&error.to_string()),
            snippet(body)
        )
    })?;
    if let Some(expected) = expected_id {
        if view.id.to_string() != expected {
            return Err(format!("asked for approval {expected} but got {}", view.id));
        }
    }
    Ok(view)
}

/// The final decision in `view`, `None` while pending. An answer that contradicts
/// itself (`status` approved but `approved` false, or the reverse) is refused rather
/// than guessed at: the caller denies.
pub fn decision_of(view: Approval) -> Result<Option<Decision>, ClientError> {
    let status = match view.status {
        ApprovalStatus::Pending => return Ok(None),
        ApprovalStatus::Approved => DecisionStatus::Approved,
        ApprovalStatus::Denied => DecisionStatus::Denied,
        ApprovalStatus::Expired => DecisionStatus::Expired,
        ApprovalStatus::Cancelled => DecisionStatus::Cancelled,
    };
    if view.approved != (status == DecisionStatus::Approved) {
        return Err(ClientError::Malformed {
            during: "while waiting",
            detail: format!(
                "inconsistent answer: status {} but approved={}",
                view.status.as_str(),
                view.approved
            ),
            id: Some(view.id.to_string()),
        });
    }
    let reason = if view.reason.trim().is_empty() {
        format!("request {}", view.status.as_str())
    } else {
        view.reason.clone()
    };
    Ok(Some(Decision {
        id: view.id.to_string(),
        status,
        reason,
        decided_by: view.decided_by.clone(),
        approval: view,
    }))
}

/// Renders a server error (`{"error": {"code", "message"}}`) for a reason, on one line.
pub fn error_text(status: u16, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(one_line)
            .filter(|s| !s.is_empty())
    };
    let parts: Vec<String> = [field("code"), field("message")]
        .into_iter()
        .flatten()
        .collect();
    if !parts.is_empty() {
        return format!("HTTP {status} {}", parts.join(": "));
    }
    let snippet = snippet(body);
    if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {snippet}")
    }
}

/// At most 200 characters of a body, quoted, on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = one_line(text.trim());
    if text.is_empty() {
        return String::new();
    }
    let short: String = text.chars().take(200).collect();
    format!("{short:?}")
}

/// Collapses line breaks and other control characters so a reason stays one line.
pub fn one_line(text: &str) -> String {
    text.split(char::is_control)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Describes a transport error with its causes ("… : tcp connect error: Connection
/// refused"), because reqwest's top-level message alone does not say what failed.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        let text = one_line(&current.to_string());
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        next = current.source();
    }
    parts.join(": ")
}

/// `Retry-After` in seconds (the only form the service sends).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Bounded exponential backoff for reconnecting: doubles from `initial` to `max`, and
/// starts over once the service answers again.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// How long the request lives, measured on the server's own clock (`expires_at -
/// created_at`) so a skewed client clock cannot cut the wait short or stretch it.
/// Falls back to the requested timeout when the timestamps cannot be read.
pub fn time_to_live(view: &Approval, requested_secs: Option<u64>) -> Duration {
    let parse = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    };
    match (parse(&view.created_at), parse(&view.expires_at)) {
        (Some(created), Some(expires)) if expires >= created => {
            (expires - created).to_std().unwrap_or(FALLBACK_TTL)
        }
        (_, Some(expires)) => (expires - Utc::now()).to_std().unwrap_or(Duration::ZERO),
        _ => requested_secs
            .map(Duration::from_secs)
            .unwrap_or(FALLBACK_TTL),
    }
}

/// Seconds to ask the server to hold one long-poll: never past the remaining time
/// (so the client is not parked beyond its deadline), at least 1, at most `max`.
pub fn poll_wait_secs(remaining: Duration, max: Duration) -> u64 {
    let max = max.as_secs().clamp(1, MAX_POLL_WAIT_SECS);
    remaining.as_secs().clamp(1, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0b5d2f9e-8f1a-4c55-9d6e-0a1b2c3d4e5f";

    fn view_json(status: &str, approved: bool) -> Value {
        json!({
            "id": ID, "status": status, "approved": approved,
            "reason": "Approved in Slack by <@U1>", "decided_by": "U1",
            "decided_at": null,
            "created_at": "2026-01-01T10:00:00.000Z",
            "expires_at": "2026-01-01T10:05:00.000Z",
            "agent": "ci-bot", "title": null, "language": "bash",
            "channel": "C1", "message_ts": null
        })
    }

    fn reply(status: u16, body: Value) -> Exchange {
        Exchange::Reply {
            status,
            retry_after: None,
            body: body.to_string().into_bytes(),
        }
    }

    fn view(status: &str, approved: bool) -> Approval {
        serde_json::from_value(view_json(status, approved)).expect("view")
    }

    #[test]
    fn accepted_submission_is_an_approval() {
        let step = classify(reply(202, view_json("pending", false)), Phase::Submit);
        assert!(matches!(step, Step::Approval(v) if v.status == ApprovalStatus::Pending));
    }

    #[test]
    fn bad_token_fails_at_once_and_quotes_the_server() {
        let body = json!({"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}});
        for phase in [Phase::Submit, Phase::Poll { id: ID }] {
            match classify(reply(401, body.clone()), phase) {
                Step::Fail(ClientError::Unauthorized(text)) => assert_eq!(
                    text,
                    "HTTP 401 unauthorized: missing or invalid bearer token"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn validation_errors_are_not_retried() {
        let body =
            json!({"error": {"code": "invalid_request", "message": "code must not be empty"}});
        match classify(reply(422, body), Phase::Submit) {
            Step::Fail(ClientError::Rejected(text)) => {
                assert_eq!(text, "HTTP 422 invalid_request: code must not be empty")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transient_answers_are_retried_honouring_retry_after() {
        for status in [408, 429, 500, 502, 503] {
            let exchange = Exchange::Reply {
                status,
                retry_after: Some(Duration::from_secs(3)),
                body: b"<html>\nbad gateway</html>".to_vec(),
            };
            match classify(exchange, Phase::Poll { id: ID }) {
                Step::Retry { problem, min_delay } => {
                    assert_eq!(min_delay, Duration::from_secs(3));
                    assert!(problem.contains(&format!("HTTP {status}")), "{problem}");
                    assert!(!problem.contains('\n'), "{problem}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        assert!(matches!(
            classify(Exchange::Failed("connection refused".into()), Phase::Submit),
            Step::Retry { min_delay, .. } if min_delay.is_zero()
        ));
    }

    #[test]
    fn not_found_while_waiting_means_the_approval_is_gone() {
        let body = json!({"error": {"code": "not_found", "message": "no approval"}});
        assert!(matches!(
            classify(reply(404, body.clone()), Phase::Poll { id: ID }),
            Step::Fail(ClientError::UnknownApproval { .. })
        ));
        // On submit a 404 means a wrong base URL: rejected, not "unknown approval".
        assert!(matches!(
            classify(reply(404, body), Phase::Submit),
            Step::Fail(ClientError::Rejected(_))
        ));
    }

    #[test]
    fn malformed_answers_fail_closed() {
        let not_json = Exchange::Reply {
            status: 200,
            retry_after: None,
            body: b"OK".to_vec(),
        };
        assert!(matches!(
            classify(not_json, Phase::Poll { id: ID }),
            Step::Fail(ClientError::Malformed { .. })
        ));
        let mut unknown_status = view_json("pending", false);
        unknown_status["status"] = json!("maybe");
        assert!(matches!(
            classify(reply(200, unknown_status), Phase::Poll { id: ID }),
            Step::Fail(ClientError::Malformed { .. })
        ));
        let other = "11111111-2222-4333-8444-555555555555";
        match classify(
            reply(200, view_json("approved", true)),
            Phase::Poll { id: other },
        ) {
            Step::Fail(ClientError::Malformed { detail, .. }) => {
                assert!(detail.contains("asked for approval"), "{detail}")
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn decisions_map_statuses_and_refuse_contradictions() {
        assert!(decision_of(view("pending", false)).expect("ok").is_none());
        let approved = decision_of(view("approved", true))
            .expect("ok")
            .expect("final");
        assert_eq!(approved.status, DecisionStatus::Approved);
        assert!(approved.approved());
        assert_eq!(approved.decided_by.as_deref(), Some("U1"));
        for (status, expected) in [
            ("denied", DecisionStatus::Denied),
            ("expired", DecisionStatus::Expired),
            ("cancelled", DecisionStatus::Cancelled),
        ] {
            let d = decision_of(view(status, false))
                .expect("ok")
                .expect("final");
            assert_eq!(d.status, expected);
            assert!(!d.approved());
        }
        assert!(decision_of(view("approved", false)).is_err());
        assert!(decision_of(view("denied", true)).is_err());
    }

    #[test]
    fn empty_reason_is_replaced_so_the_agent_always_has_one() {
        let mut v = view("denied", false);
        v.reason = "  ".into();
        let d = decision_of(v).expect("ok").expect("final");
        assert_eq!(d.reason, "request denied");
    }

    #[test]
    fn error_text_falls_back_to_a_one_line_snippet() {
        assert_eq!(error_text(502, b""), "HTTP 502");
        assert_eq!(
            error_text(502, b"bad\r\ngateway"),
            "HTTP 502 \"bad gateway\""
        );
        let long = "x".repeat(1000);
        assert!(error_text(500, long.as_bytes()).len() < 220);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
        // A cap below the start is raised to it rather than shrinking the delay.
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn time_to_live_uses_the_server_clock() {
        // Five minutes between created_at and expires_at, whatever our clock says.
        assert_eq!(
            time_to_live(&view("pending", false), Some(10)),
            Duration::from_secs(300)
        );
        let mut unreadable = view("pending", false);
        unreadable.created_at = "yesterday".into();
        unreadable.expires_at = "tomorrow".into();
        assert_eq!(time_to_live(&unreadable, Some(42)), Duration::from_secs(42));
        assert_eq!(time_to_live(&unreadable, None), FALLBACK_TTL);
        // Only expires_at readable: measured against now; in the past means zero.
        let mut past = view("pending", false);
        past.created_at = "?".into();
        assert_eq!(time_to_live(&past, Some(42)), Duration::ZERO);
    }

    #[test]
    fn poll_wait_never_outlasts_the_deadline_or_the_cap() {
        let max = Duration::from_secs(25);
        assert_eq!(poll_wait_secs(Duration::from_secs(600), max), 25);
        assert_eq!(poll_wait_secs(Duration::from_secs(7), max), 7);
        assert_eq!(poll_wait_secs(Duration::from_millis(300), max), 1);
        assert_eq!(
            poll_wait_secs(Duration::from_secs(600), Duration::from_secs(60)),
            25
        );
        assert_eq!(poll_wait_secs(Duration::from_secs(600), Duration::ZERO), 1);
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        assert_eq!(parse_retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }

    #[test]
    fn error_chains_are_described_on_one_line() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused\nnow");
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            describe_error(&Outer(inner)),
            "error sending request: refused now"
        );
    }
}
