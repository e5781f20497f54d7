//! Readiness: may a load balancer send traffic here?
//!
//! Two things must hold: the database answers, and the Slack bot token worked. The
//! token is checked with `auth.test` once, in the background, at start-up (a bad token
//! is the most common misconfiguration, and without it no request can ever reach a
//! reviewer). While it fails it is retried, first after
//! `GREENLIGHT_READINESS_RECHECK_SECS`, then backing off (doubling, jittered) up to
//! [`RECHECK_MAX`], with one warning per backoff step; once it succeeds it is not
//! asked again. A probe only reads the cached answer, so a
//! load balancer polling `/readyz` every second never turns into Slack traffic.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    backoff::{Backoff, Retrying},
    metrics::bounded_slack_code,
    slack::api::SlackClient,
    store::Store,
};

/// The longest wait between two `auth.test` rechecks (unless the configured recheck
/// is longer): a token fixed in Slack's settings is noticed within this long.
pub const RECHECK_MAX: Duration = Duration::from_secs(300);

/// The last `auth.test` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlackAuth {
    /// Not answered yet.
    Checking,
    Ok,
    /// Failed with this (bounded) error code.
    Failed(&'static str),
    /// Slack is not configured: the web page is the only surface, nothing to check.
    NotConfigured,
}

/// Cheap handle on the cached Slack check.
#[derive(Clone, Debug)]
pub struct Readiness {
    slack: Arc<RwLock<SlackAuth>>,
}

/// The `/readyz` body: `status` is `ready` or `unready`; each check is `ok` or says
/// why not, without configuration (no URLs, paths or tokens).
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Report {
    /// `ready` (answered with 200) when the database answers and Slack accepted the
    /// bot token, or Slack is not configured; otherwise `unready` (503).
    pub status: &'static str,
    /// One entry per dependency, each `ok` or why not.
    pub checks: Checks,
}

/// The checks behind `status`: the failing one says why, so an operator reading the
/// probe knows where to look.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Checks {
    /// `ok`, or `failed: unreachable` / `failed: timeout`.
    pub database: String,
    /// `ok`, `checking` (no answer yet), `failed: <Slack error code>`, or
    /// `not configured` (no Slack: the web review page is the only surface).
    pub slack_auth: String,
}

impl Report {
    /// Whether `status` is `ready`: the probe answers 200, else 503.
    pub fn ready(&self) -> bool {
        self.status == "ready"
    }
}

/// The Slack check's answer when Slack is not configured.
const NOT_CONFIGURED: &str = "not configured";

/// How long a probe waits for the database before calling it down.
const DATABASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Readiness with Slack configured: `checking`, so unready, until the first
    /// `auth.test` answer (see [`Readiness::check_slack`]).
    pub fn new() -> Self {
        Self {
            slack: Arc::new(RwLock::new(SlackAuth::Checking)),
        }
    }

    /// Readiness without Slack (no `SLACK_BOT_TOKEN`): only the database counts, and
    /// `/readyz` reports `slack_auth: "not configured"`.
    pub fn without_slack() -> Self {
        Self {
            slack: Arc::new(RwLock::new(SlackAuth::NotConfigured)),
        }
    }

    /// The Slack check worker: checks the bot token now and, while it fails, again
    /// after `recheck`, doubling to [`RECHECK_MAX`]. Ends once Slack accepted the
    /// token (or when dropped at shutdown).
    pub fn check_slack(
        &self,
        slack: SlackClient,
        recheck: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let state = self.slack.clone();
        let mut retrying = Retrying::new(Backoff::new(recheck, RECHECK_MAX.max(recheck)));
        async move {
            loop {
                let answer = match slack.call("auth.test", &serde_json::json!({}), None).await {
                    Ok(_) => SlackAuth::Ok,
                    Err(error) => SlackAuth::Failed(bounded_slack_code(error.code())),
                };
                let failed = match answer {
                    SlackAuth::Failed(code) => Some(code),
                    _ => None,
                };
                if let Ok(mut slot) = state.write() {
                    *slot = answer;
                }
                let Some(code) = failed else {
                    tracing::info!("Slack accepted the bot token (auth.test)");
                    return;
                };
                let step = retrying.failed();
                if step.log {
                    tracing::warn!(
                        error = code,
                        failed_checks = step.failures,
                        retry_in_secs = step.delay.as_secs(),
                        "Slack auth.test failed: not ready"
                    );
                }
                tokio::time::sleep(step.delay).await;
            }
        }
    }

    fn slack_status(&self) -> String {
        match self.slack.read().map(|s| s.clone()) {
            Ok(SlackAuth::Ok) => "ok".into(),
            Ok(SlackAuth::Checking) => "checking".into(),
            Ok(SlackAuth::Failed(code)) => format!("failed: {code}"),
            Ok(SlackAuth::NotConfigured) => NOT_CONFIGURED.into(),
            Err(_) => "failed: internal".into(),
        }
    }

    /// Runs the checks: pings the database, reads the cached Slack answer.
    pub async fn report(&self, store: &Store) -> Report {
        let database = match tokio::time::timeout(DATABASE_PROBE_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(error)) => {
                // The cause goes to the log, not the unauthenticated response: it may
                // name the database file.
                tracing::warn!(%error, "readiness: database ping failed");
                "failed: unreachable".to_owned()
            }
            Err(_) => "failed: timeout".to_owned(),
        };
        let slack_auth = self.slack_status();
        let ready = database == "ok" && (slack_auth == "ok" || slack_auth == NOT_CONFIGURED);
        Report {
            status: if ready { "ready" } else { "unready" },
            checks: Checks {
                database,
                slack_auth,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_that_stopped_answering_is_unready_without_details() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("store");
        let readiness = Readiness::new();
        *readiness.slack.write().expect("lock") = SlackAuth::Ok;
        assert!(readiness.report(&store).await.ready());

        store.close().await;
        let report = readiness.report(&store).await;
        assert_eq!(report.status, "unready");
        assert_eq!(report.checks.database, "failed: unreachable");
        assert_eq!(report.checks.slack_auth, "ok");
    }

    #[tokio::test]
    async fn slack_is_checking_until_it_answers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.expect("store");
        let readiness = Readiness::new();
        let report = readiness.report(&store).await;
        assert!(!report.ready());
        assert_eq!(report.checks.slack_auth, "checking");
        *readiness.slack.write().expect("lock") = SlackAuth::Failed("invalid_auth");
        assert_eq!(
            readiness.report(&store).await.checks.slack_auth,
            "failed: invalid_auth"
        );
    }
}
