//! Assembling and running the service: one function builds it from a listener and a
//! configuration, another runs it until a shutdown future resolves. Tests bind port 0
//! and pass their own shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    approval::ApprovalService,
    config::Config,
    http::{self, AppState},
    slack::{
        api::{RetryPolicy, SlackClient},
        signature::SignatureVerifier,
        socket_mode::{self, SocketMode},
    },
    store::{retention, Store},
};

/// A built service, bound and recovered, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    /// Present when `SLACK_APP_TOKEN` is set; runs beside the HTTP endpoint.
    socket_mode: Option<SocketMode>,
}

/// Background housekeeping that lives as long as the server runs.
struct Housekeeping(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Housekeeping {
    fn drop(&mut self) {
        self.0.iter().for_each(|task| task.abort());
    }
}

impl Server {
    /// Opens the database (running migrations), recovers pending requests and wires
    /// the routes. Fails with a message naming what could not be set up.
    pub async fn build(
        listener: TcpListener,
        config: Config,
        retry: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        // Before anything is created: a bad policy must stop start-up cleanly.
        let policy = crate::policy::load(config.policy_path.as_deref())
            .context("invalid policy (GREENLIGHT_POLICY)")?;
        tracing::info!(source = %policy.source, rules = policy.rules.len(), "policy loaded");
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| format!("cannot open the database at {}", config.database_url))?;
        let slack = SlackClient::new(
            &config.slack_api_base_url,
            config.slack_bot_token.clone(),
            retry.clone(),
        );
        let service = ApprovalService::with_policy(
            store,
            slack,
            config.slack_channel_id.clone(),
            Arc::new(policy),
            config.approvers.clone(),
        );
        service
            .recover()
            .await
            .context("cannot recover pending requests")?;
        let verifier = SignatureVerifier::new(config.slack_signing_secret.clone());
        let socket_mode = config.slack_app_token.clone().map(|app_token| {
            SocketMode::new(
                SlackClient::new(&config.slack_api_base_url, app_token, retry.clone()),
                service.clone(),
                socket_mode::Backoff::from_retry(&retry),
                socket_mode::Timings::default(),
            )
        });
        Ok(Self {
            listener,
            state: AppState {
                config,
                service,
                verifier,
            },
            socket_mode,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn service(&self) -> &ApprovalService {
        &self.state.service
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers open long-polls
    /// with their current state and finishes in-flight requests. Socket Mode, when
    /// configured, runs as a background task that stops with the server.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let service = self.state.service.clone();
        let mut tasks = Vec::new();
        if let Some(keep_for) = self.state.config.retention {
            tasks.push(retention::spawn_pruner(service.store().clone(), keep_for));
        }
        let _housekeeping = Housekeeping(tasks);
        // Dropping the sender (the server failing) stops Socket Mode as well.
        let (stop_socket_mode, socket_mode_stopped) = watch::channel(false);
        let socket_mode = self
            .socket_mode
            .map(|socket_mode| tokio::spawn(socket_mode.run(socket_mode_stopped)));
        let app = http::router(self.state);
        // Without TCP_NODELAY a response written in two segments waits out the
        // client's delayed ACK (~40 ms), which is most of an approval's latency.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: answering open long-polls");
                let _ = stop_socket_mode.send(true);
                service.begin_shutdown();
            })
            .await;
        if let Some(task) = socket_mode {
            // Bounded: Socket Mode gives its connections a short grace, then returns.
            let _ = task.await;
        }
        served.context("HTTP server failed")
    }
}
