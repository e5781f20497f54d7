//! The HTTP surface: the agent API under `/v1` (with coding agents' hooks under
//! `/v1/hooks`), Slack's interactivity endpoint, the web review page under `/web`
//! (`crate::web`), and health checks. Each area has its own `router()`; they are
//! merged here.

mod approvals;
mod batches;
mod extract;
mod grants;
mod health;
pub mod hooks;
pub mod listener;
mod metrics;
mod observe;
pub mod openapi;
mod slack;

use std::sync::Arc;

use axum::{extract::DefaultBodyLimit, middleware, Router};

use crate::{
    approval::ApprovalService,
    config::Config,
    error::ApiError,
    limits::SubmitLimits,
    metrics::Metrics,
    readiness::Readiness,
    slack::{interactions::Interactions, signature::SignatureVerifier},
};

/// Largest request body accepted anywhere. Code to review rarely comes near it; it
/// bounds what one request can make the service buffer.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Everything a handler needs: cheap handles, cloned per request.
#[derive(Clone)]
pub struct AppState {
    /// The configuration read at start-up, never changed after.
    pub config: Arc<Config>,
    /// Submitting, deciding, waiting for and reading requests.
    pub service: ApprovalService,
    /// What a verified Slack interaction does (shared with Socket Mode).
    pub interactions: Interactions,
    /// Checks Slack's request signature; without Slack, keyed with a random secret
    /// nobody has (the interactivity route is not mounted then anyway).
    pub verifier: SignatureVerifier,
    /// This server's metrics (`GET /metrics`).
    pub metrics: Metrics,
    /// The cached Slack check behind `GET /readyz`.
    pub readiness: Readiness,
    /// The per-agent rate limit and pending cap every submission passes.
    pub limits: SubmitLimits,
    /// The web review page's reviewers, sessions and sign-in links.
    pub web: crate::web::Web,
}

/// The whole service's routes.
pub fn router(state: AppState) -> Router {
    // Without Slack settings there is no interactivity endpoint: nothing could sign
    // a call to it.
    let slack = if state.config.slack.is_some() {
        slack::router()
    } else {
        Router::new()
    };
    Router::new()
        .merge(approvals::router())
        .merge(batches::router())
        .merge(hooks::router())
        .merge(grants::router())
        .merge(slack)
        .merge(crate::web::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::track,
        ))
        .with_state(state)
}
