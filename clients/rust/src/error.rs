//! Why the client could not get a decision. Every variant is a reason to *deny*:
//! [`Client::request_approval`](crate::Client::request_approval) turns it into
//! `approved: false`, and the CLI gate into exit status 2.
//!
//! Messages are single lines meant for a person reading an agent's transcript or a CI
//! log. They never contain the API token: the token only ever travels in a request
//! header, and server error bodies are quoted, not the requests we sent.

use std::time::Duration;

/// What went wrong while asking for (or waiting for) an approval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client was configured with something unusable (a bad URL, an empty token).
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// The service refused the token (401/403). Retrying cannot help.
    #[error("the API token was rejected ({0})")]
    Unauthorized(String),

    /// The service refused the request itself (a 4xx such as a 422 naming the field).
    #[error("the request was rejected ({0})")]
    Rejected(String),

    /// The service could not be reached (or kept failing). While submitting: no
    /// request exists and nobody was asked. From the one-exchange calls of
    /// [`manage`](crate::manage): that exchange got no answer.
    #[error(
        "service unreachable at {url} ({problem}; gave up after {attempts} attempt(s) in {:.1}s)",
        elapsed.as_secs_f64()
    )]
    Unreachable {
        /// The service URL the client was built with.
        url: String,
        /// The last failure: a transport error with its causes (`… tcp connect error:
        /// Connection refused`), or `service error (HTTP 503 …)`.
        problem: String,
        /// Exchanges tried (always 1 for the calls of [`manage`](crate::manage)).
        attempts: u32,
        /// From the start of the call to giving up.
        elapsed: Duration,
    },

    /// The request exists but no decision could be learned before it expired (plus
    /// grace): typically the service was down for the rest of the wait.
    #[error(
        "no decision for approval {id} before it expired at {expires_at}{}",
        last_problem.as_deref().map(|p| format!("; last problem: {p}")).unwrap_or_default()
    )]
    NoDecision {
        /// The approval id (UUID).
        id: String,
        /// The request's `expires_at` as the service sent it (RFC 3339).
        expires_at: String,
        /// What the last failed poll ran into; `None` when the last poll was answered.
        last_problem: Option<String>,
    },

    /// The caller's own overall timeout ran out before a decision; the client
    /// withdrew the request (one `POST /v1/approvals/{id}/cancel`, best effort) so
    /// nobody approves what no one waits for any more.
    #[error("gave up waiting for approval {id} after {:.1}s (client timeout); {}", after.as_secs_f64(),
        if *withdrawn { "the request was withdrawn" } else { "its withdrawal was not confirmed: it may still be pending, or have just been decided" })]
    TimedOut {
        /// The approval id (UUID).
        id: String,
        /// From the start of the call (submission included) to giving up.
        after: Duration,
        /// Whether the service confirmed the withdrawal (`POST …/cancel` answered
        /// 200). `false`: it could not be reached, or refused (409 when the request
        /// was decided at that moment); a reviewer may still see live buttons for it.
        withdrawn: bool,
    },

    /// The service forgot the request (404 while waiting), e.g. a different database.
    #[error("approval {id} is unknown to the service ({detail})")]
    UnknownApproval {
        /// The approval id that was polled.
        id: String,
        /// The service's error, e.g. `HTTP 404 not_found: no approval request with id …`.
        detail: String,
    },

    /// The service answered something that is not a valid approval object, or one
    /// that contradicts itself. Never guessed at: it denies.
    #[error("malformed answer {during} ({detail})")]
    Malformed {
        /// Which step: `to the submission`, `while waiting`, or a
        /// [`manage`](crate::manage) call such as `reading a batch`.
        during: &'static str,
        /// What was wrong, quoting at most 200 characters of the body.
        detail: String,
        /// The approval id, when one was known (while waiting).
        id: Option<String>,
    },
}

impl ClientError {
    /// The approval id, when the request got far enough to have one.
    pub fn approval_id(&self) -> Option<&str> {
        match self {
            ClientError::NoDecision { id, .. }
            | ClientError::TimedOut { id, .. }
            | ClientError::UnknownApproval { id, .. } => Some(id),
            ClientError::Malformed { id, .. } => id.as_deref(),
            _ => None,
        }
    }
}
