//! `GET /metrics`: Prometheus exposition, without auth.
//!
//! It is meant to be scraped from inside the deployment (bind the service to a
//! private interface or block `/metrics` at the proxy if it faces the internet). It
//! holds no secrets and no personal data: counts by agent name, outcome, Slack method
//! and route template only.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// The OpenMetrics text format, which Prometheus negotiates and parses natively.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match state.service.store().count_pending(None).await {
        Ok(pending) => state
            .metrics
            .set_pending(i64::try_from(pending).unwrap_or(i64::MAX)),
        // Keep serving the other metrics; the gauge keeps its last value.
        Err(error) => tracing::warn!(%error, "metrics: could not count pending requests"),
    }
    let (commits, writes) = state.service.store().write_totals();
    state.metrics.set_db_totals(commits, writes);
    state
        .metrics
        .set_long_polls(i64::try_from(state.service.waiting()).unwrap_or(i64::MAX));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(),
    )
}
