//! Assembling and running the service: one function builds it from a listener and a
//! configuration, another runs it until a shutdown future resolves. Tests bind port 0
//! and pass their own shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::{
    approval::ApprovalService,
    config::Config,
    http::{self, AppState},
    slack::{
        api::{RetryPolicy, SlackClient},
        signature::SignatureVerifier,
    },
    store::{retention, Store},
};

/// A built service, bound and recovered, not yet serving.
pub struct Server {
    listener: TcpListener,
    state: AppState,
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
        let store = Store::connect(&config.database_url)
            .await
            .with_context(|| format!("cannot open the database at {}", config.database_url))?;
        let slack = SlackClient::new(
            &config.slack_api_base_url,
            config.slack_bot_token.clone(),
            retry,
        );
        let service = ApprovalService::new(store, slack, config.slack_channel_id.clone());
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
        let mut tasks = Vec::new();
        if let Some(keep_for) = self.state.config.retention {
            tasks.push(retention::spawn_pruner(service.store().clone(), keep_for));
        }
        let _housekeeping = Housekeeping(tasks);
        let app = http::router(self.state);
        // Without TCP_NODELAY a response written in two segments waits out the
        // client's delayed ACK (~40 ms), which is most of an approval's latency.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: answering open long-polls");
                service.begin_shutdown();
            })
            .await
            .context("HTTP server failed")
    }
}
