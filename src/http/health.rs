//! Liveness: answers as long as the process serves HTTP. Says nothing about
//! configuration, so it is safe to expose to a load balancer without auth.

use axum::{routing::get, Json, Router};
use serde_json::{json, Value};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}
