//! Assembling and running the service: one function builds it from a listener and a
//! configuration, another runs it until a shutdown future resolves. Tests bind port 0
//! and pass their own shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    approval::ApprovalService,
    config::Config,
    http::{self, AppState},
    slack::{
        api::{RetryPolicy, SlackClient},
        signature::SignatureVerifier,
    },
    store::Store,
};

/// A built service, bound and recovered, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
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
            retry,
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
        Ok(Self {
            listener,
            state: AppState {
                config,
                service,
                verifier,
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn service(&self) -> &ApprovalService {
        &self.state.service
    }

    /// Serves until `shutdown` resolves, then stops accepting, answers open long-polls
    /// with their current state and finishes in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let service = self.state.service.clone();
        let app = http::router(self.state);
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: answering open long-polls");
                service.begin_shutdown();
            })
            .await
            .context("HTTP server failed")
    }
}
