//! Why a request's Slack message never went out.
//!
//! Messages to one channel are posted in order by one queue, and a post that Slack
//! rate-limits (or answers with 5xx) is retried in place, so the requests behind it
//! wait without ever reaching Slack themselves. When one of those reaches its
//! deadline, "timed out" would blame the reviewers, who never saw anything. This
//! keeps, per channel, the last failure a post hit, so the expiry can name it.
//!
//! In memory only: after a restart the reason falls back to "never posted", which is
//! still true.

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde_json::{json, Value};

use super::Approval;
use crate::slack::api::SlackError;

/// The last post failure seen in each channel, with when it happened.
#[derive(Debug, Default)]
pub struct PostTrouble {
    by_channel: DashMap<String, (SlackError, DateTime<Utc>)>,
}

impl PostTrouble {
    /// Remembers a failure a post to `channel` hit (and is retrying, or gave up on).
    pub fn record(&self, channel: &str, error: &SlackError) {
        self.by_channel
            .insert(channel.to_owned(), (error.clone(), Utc::now()));
    }

    /// The failure that held up `approval`'s channel while it waited, if any: only
    /// failures since it was submitted count, older ones did not delay it.
    fn during(&self, approval: &Approval) -> Option<SlackError> {
        let entry = self.by_channel.get(&approval.channel)?;
        let (error, at) = entry.value();
        (*at >= approval.created_at).then(|| error.clone())
    }

    /// For a request that reaches its deadline with no Slack message: the reason and
    /// audit detail to expire it with. `None` when the message was posted.
    pub fn never_posted(&self, approval: &Approval, waited_secs: i64) -> Option<(String, Value)> {
        if approval.message_ts.is_some() {
            return None;
        }
        let cause = self.during(approval);
        let why = match &cause {
            Some(error) => format!(
                "its Slack message could not be posted to {} in time ({})",
                approval.channel,
                describe(error)
            ),
            None => format!(
                "its Slack message was never posted to {} (still queued behind earlier messages)",
                approval.channel
            ),
        };
        let reason = format!(
            "Timed out after {waited_secs} s: {why}, so no reviewer saw it and it was denied by default"
        );
        let detail = json!({
            "timeout_secs": waited_secs,
            "never_posted": true,
            "post_error": cause.as_ref().map(SlackError::code),
            "post_error_detail": cause.as_ref().map(ToString::to_string),
        });
        Some((reason, detail))
    }
}

/// A failure in words a reviewer or agent understands. A rate limit is reported as
/// such, not as "past the deadline", because the deadline is what we are explaining.
pub fn describe(error: &SlackError) -> String {
    match error {
        SlackError::RateLimited { method } => {
            format!("Slack kept rate-limiting {method} (HTTP 429)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(ts: Option<&str>) -> Approval {
        Approval {
            message_ts: ts.map(str::to_owned),
            created_at: Utc::now() - chrono::Duration::seconds(5),
            ..crate::approval::sample("ls")
        }
    }

    #[test]
    fn posted_requests_expire_as_usual() {
        let trouble = PostTrouble::default();
        trouble.record(
            "C1",
            &SlackError::RateLimited {
                method: "chat.postMessage".into(),
            },
        );
        assert!(trouble.never_posted(&approval(Some("1.2")), 5).is_none());
    }

    #[test]
    fn names_the_channel_failure_while_it_waited() {
        let trouble = PostTrouble::default();
        trouble.record(
            "C1",
            &SlackError::RateLimited {
                method: "chat.postMessage".into(),
            },
        );
        let (reason, detail) = trouble.never_posted(&approval(None), 5).expect("unposted");
        assert!(
            reason.contains("rate-limiting chat.postMessage"),
            "{reason}"
        );
        assert!(reason.contains("denied by default"), "{reason}");
        assert_eq!(detail["post_error"], "ratelimited");
        assert_eq!(detail["never_posted"], true);
    }

    #[test]
    fn ignores_failures_older_than_the_request_and_other_channels() {
        let trouble = PostTrouble::default();
        let old = approval(None);
        trouble.record(
            "C2",
            &SlackError::Http {
                method: "chat.postMessage".into(),
                status: 503,
            },
        );
        let (reason, detail) = trouble.never_posted(&old, 5).expect("unposted");
        assert!(reason.contains("still queued"), "{reason}");
        assert_eq!(detail["post_error"], Value::Null);
        let mut newer = approval(None);
        newer.created_at = Utc::now() + chrono::Duration::seconds(60);
        trouble.record(
            "C1",
            &SlackError::Http {
                method: "chat.postMessage".into(),
                status: 503,
            },
        );
        assert!(trouble
            .never_posted(&newer, 5)
            .expect("unposted")
            .0
            .contains("still queued"));
    }
}
