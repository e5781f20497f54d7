//! Liveness and readiness. Neither needs auth and neither says anything about
//! configuration (no URLs, paths or tokens), so both are safe to expose to a load
//! balancer.

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Value};

use super::AppState;
use crate::readiness::Report;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "`{\"status\":\"ok\"}`"))
)]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and Slack accepted the bot token.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Report),
        (status = 503, description = "Not ready; `checks` says which check failed", body = Report),
    )
)]
pub(super) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Report>) {
    let report = state.readiness.report(state.service.store()).await;
    let status = if report.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
