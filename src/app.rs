//! Assembling and running the service: one function builds it from a listener and a
//! configuration, another runs it until a shutdown future resolves. Tests bind port 0
//! and pass their own shutdown.
//!
//! Every background worker is started, named and stopped here, where a reader sees
//! them all side by side:
//! - `deadlines`: expires requests at their deadline (`approval::deadlines`);
//! - `nudges`: reminders and escalation, the same loop over `next_nudge_at`
//!   (`approval::nudges`);
//! - `slack-outbox`: posts and rewrites Slack messages from the store's outbox
//!   (`slack::outbox`);
//! - `slack-auth-check`: readiness's `auth.test` until Slack accepts the token;
//! - `retention`: prunes decided requests past `GREENLIGHT_RETENTION_DAYS`;
//! - `callbacks`: sends signed decision callbacks from the store (`callbacks`);
//! - `socket-mode`: the Socket Mode receiver, when `SLACK_APP_TOKEN` is set;
//! - `replica-changes`: on PostgreSQL, other replicas' decisions answer this one's
//!   long-polls and refresh its live views (`approval::remote`).
//!
//! Without Slack settings (no `SLACK_BOT_TOKEN`) the Slack workers do not start: the
//! web review page (`crate::web`) is the only surface, and nothing is queued for Slack.
//!
//! Start-up recovery is nothing more than these workers starting: everything pending
//! is in the store. For the same reason a worker that panics is simply started again
//! (`workers`).

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    approval::{deadlines, nudges, ApprovalService},
    config::Config,
    http::{self, AppState},
    limits::SubmitLimits,
    metrics::Metrics,
    policy::Defaults,
    readiness::Readiness,
    slack::{
        api::{RetryPolicy, SlackClient},
        interactions::Interactions,
        outbox::OutboxWorker,
        signature::SignatureVerifier,
        socket_mode::{self, SocketMode},
    },
    store::{retention, Store},
    workers::Workers,
};

/// A built service, bound and migrated, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    /// The bot's client; `None` without Slack settings.
    slack: Option<SlackClient>,
    /// Present when `SLACK_APP_TOKEN` is set; runs beside the HTTP endpoint.
    socket_mode: Option<SocketMode>,
}

impl Server {
    /// Opens the database (running migrations) and wires the routes. Fails with a
    /// message naming what could not be set up.
    pub async fn build(
        listener: TcpListener,
        config: Config,
        retry: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        // Before anything is created: a bad policy must stop start-up cleanly.
        let policy = crate::policy::load(config.policy_path.as_deref())
            .context("invalid policy (GREENLIGHT_POLICY)")?;
        // A rule relying on GREENLIGHT_APPROVERS for a quorum they cannot reach.
        policy
            .check_approvers(config.approvers.as_deref())
            .context("invalid policy (GREENLIGHT_POLICY)")?;
        // Without Slack only the page's reviewers can decide: a rule none (or too few)
        // of them may approve would let every matching request expire.
        if config.slack.is_none() {
            policy
                .check_web_only(
                    config.approvers.as_deref(),
                    &crate::policy::web_only::reviewer_ids(&config.reviewers),
                )
                .context("invalid policy (GREENLIGHT_POLICY)")?;
        }
        tracing::info!(source = %policy.source, rules = policy.rules.len(), "policy loaded");
        // Allowed where only this machine can use it (the quick start); the
        // configuration refuses it once greenlight is published.
        for agent in config.placeholder_agents() {
            tracing::warn!(
                agent,
                "the API token of {agent} is the placeholder from .env.example, which anyone can read: anyone who can reach this address may submit as {agent}; give it a token of its own (openssl rand -hex 24) before others can reach greenlight"
            );
        }
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the database at {}",
                    crate::store::redact_url(&config.database_url)
                )
            })?;
        let metrics = Metrics::new();
        metrics.register_agents(config.api_tokens.iter().map(|t| t.name.as_str()));
        let slack = config
            .slack
            .as_ref()
            .map(|settings| {
                SlackClient::new(
                    &settings.api_base_url,
                    settings.bot_token.clone(),
                    retry.clone(),
                )
                .map(|client| client.with_metrics(metrics.clone()))
            })
            .transpose()
            .context("cannot build the Slack Web API client")?;
        let groups: Arc<dyn crate::approval::approvers::GroupMembers> = match &slack {
            Some(slack) => Arc::new(slack.clone()),
            None => Arc::new(crate::web::NoSlackGroups),
        };
        let web = crate::web::Web::new(&config, &store);
        // Without Slack the page's reviewers are everyone who can decide: as the
        // default approver list, a request needing more of them than exist is refused
        // at submit (422) instead of waiting until it expires.
        let approvers = config
            .approvers
            .clone()
            .or_else(|| slack.is_none().then(|| web.reviewer_ids()));
        let service = ApprovalService::new(
            store,
            groups,
            Defaults {
                channel: config.slack_channel(),
                approvers,
            },
            Arc::new(policy),
            metrics.clone(),
        );
        // Without Slack the interactivity route is not mounted (`http::router`); these
        // two exist only because the state has a place for them: a client that is never
        // called, and a verifier whose random secret nobody could sign with.
        let interactions = Interactions::new(
            service.clone(),
            match slack.clone() {
                Some(slack) => slack,
                None => SlackClient::new(
                    crate::config::DEFAULT_SLACK_API_BASE_URL,
                    String::new().into(),
                    retry.clone(),
                )
                .context("cannot build the Slack Web API client")?,
            },
        );
        let verifier = SignatureVerifier::new(match &config.slack {
            Some(settings) => settings.signing_secret.clone(),
            None => crate::web::sessions::random_token().into(),
        });
        let socket_mode = match config.slack.as_ref() {
            Some(settings) => match settings.app_token.clone() {
                Some(app_token) => Some(SocketMode::new(
                    SlackClient::new(&settings.api_base_url, app_token, retry.clone())
                        .context("cannot build the Socket Mode client")?
                        .with_metrics(metrics.clone()),
                    interactions.clone(),
                    socket_mode::reconnect_backoff(&retry),
                    socket_mode::Timings::default(),
                    metrics.clone(),
                )),
                None => None,
            },
            None => None,
        };
        let readiness = if slack.is_some() {
            Readiness::new()
        } else {
            Readiness::without_slack()
        };
        let limits = SubmitLimits::new(
            config.rate_limit_per_minute,
            config.max_pending_per_agent,
            metrics.clone(),
            service.store(),
        );
        Ok(Self {
            listener,
            slack,
            state: AppState {
                config,
                service,
                interactions,
                verifier,
                metrics,
                readiness,
                limits,
                web,
            },
            socket_mode,
        })
    }

    /// The address actually bound: with port 0 in `GREENLIGHT_LISTEN`, the one the OS
    /// picked (what tests and the `greenlight listening on …` line use).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The approval service behind the routes, for code that embeds the server and
    /// acts on requests without HTTP.
    pub fn service(&self) -> &ApprovalService {
        &self.state.service
    }

    /// The line `serve` prints for reviewers: the review page's address and, when no
    /// reviewers are configured, a fresh one-time sign-in link for the local reviewer
    /// (stored in the database, so any replica takes it). `Err`: no local address, or
    /// the link could not be stored.
    pub async fn review_page_line(&self) -> anyhow::Result<String> {
        let base = self.state.config.base_url(self.local_addr()?);
        let store = self.state.service.store();
        self.state
            .web
            .start_line(store, &base)
            .await
            .context("cannot store the review page's sign-in link")
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers open long-polls
    /// with their current state and finishes in-flight requests, for at most
    /// `GREENLIGHT_SHUTDOWN_GRACE_SECS`; then closes the database. Socket Mode, when
    /// configured, runs as a background task that stops with the server.
    ///
    /// Pending requests stay pending in the database, with their deadlines and
    /// outbox rows: the next start's workers take them up. Nothing needs flushing
    /// beyond the writer's queue, because every state change is committed before
    /// anyone is told about it. Past the grace period it
    /// returns anyway, so a stuck client cannot keep an orchestrator's rollout waiting;
    /// the requests cut off then were either committed already or never acknowledged.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let service = self.state.service.clone();
        let store = service.store().clone();
        // Before the first request: a grant whose maker the policy no longer lets
        // decide must not approve anything.
        let revoked = service.revoke_grants_of_former_approvers().await?;
        if revoked > 0 {
            tracing::warn!(revoked, "standing grants of former approvers revoked");
        }
        let mut workers = Workers::new(self.state.metrics.clone());
        let deadline_source = service.clone();
        workers.start("deadlines", move || {
            let source = deadline_source.clone();
            async move {
                let signal = source.store().deadline_signal();
                deadlines::run(&source, signal, deadlines::Clock::System).await
            }
        });
        let nudge_source = service.clone();
        workers.start("nudges", move || {
            let source = nudges::NudgeSource(nudge_source.clone());
            async move {
                let signal = source.0.store().nudge_signal();
                deadlines::run(&source, signal, deadlines::Clock::System).await
            }
        });
        if let Some(slack) = &self.slack {
            let (outbox_service, outbox_slack) = (service.clone(), slack.clone());
            workers.start("slack-outbox", move || {
                OutboxWorker::new(outbox_service.clone(), outbox_slack.clone()).run()
            });
            let (readiness, auth_slack) = (self.state.readiness.clone(), slack.clone());
            let recheck = self.state.config.readiness_recheck;
            workers.start("slack-auth-check", move || {
                readiness.check_slack(auth_slack.clone(), recheck)
            });
        } else {
            tracing::info!("Slack is not configured: the web review page is the only surface");
        }
        if store.is_postgres() {
            let remote_service = service.clone();
            workers.start("replica-changes", move || {
                crate::approval::remote::run(remote_service.clone())
            });
        }
        let callbacks = crate::callbacks::CallbackWorker::new(
            store.clone(),
            Arc::new(self.state.config.callbacks.clone()),
            self.state.metrics.clone(),
        )
        .context("cannot build the callbacks HTTP client")?;
        workers.start("callbacks", move || callbacks.clone().run());
        if let Some(keep_for) = self.state.config.retention {
            let store = store.clone();
            workers.start("retention", move || retention::run(store.clone(), keep_for));
        }
        let grace = self.state.config.shutdown_grace;
        // Dropping the sender (the server failing) stops Socket Mode as well.
        let (stop_socket_mode, socket_mode_stopped) = watch::channel(false);
        let socket_mode = self
            .socket_mode
            .map(|socket_mode| tokio::spawn(socket_mode.run(socket_mode_stopped)));
        let (signalled, mut on_signal) = watch::channel(false);
        let app = http::router(self.state);
        // Without TCP_NODELAY a response written in two segments waits out the
        // client's delayed ACK (~40 ms), which is most of an approval's latency.
        let (listener, closer) =
            http::listener::ClosableListener::new(self.listener).context("listener")?;
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        });
        let shutdown_service = service.clone();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!(
                    "shutting down: answering open long-polls, finishing in-flight requests"
                );
                let _ = stop_socket_mode.send(true);
                // No new connection once long-polls are answered: an agent told
                // "pending" must reconnect to the next process, not this one.
                closer.close().await;
                shutdown_service.begin_shutdown();
                signalled.send_replace(true);
            })
            .into_future();
        let hard_cap = async move {
            if on_signal.wait_for(|s| *s).await.is_err() {
                // The server ended without a signal; the other branch has the answer.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        };
        let result = tokio::select! {
            result = serve => result.context("HTTP server failed"),
            () = hard_cap => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "in-flight requests did not finish within the shutdown grace period; exiting anyway"
                );
                Ok(())
            }
        };
        if let Some(task) = socket_mode {
            // Bounded: Socket Mode gives its connections a short grace, then returns.
            let _ = task.await;
        }
        drop(workers);
        if tokio::time::timeout(Duration::from_secs(5), store.close())
            .await
            .is_err()
        {
            tracing::warn!("the database did not close within 5 s");
        }
        tracing::info!("stopped");
        result
    }
}
