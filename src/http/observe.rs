//! One middleware around every route: a tracing span per HTTP request and the HTTP
//! metrics.
//!
//! Both use the matched route template (`/v1/approvals/{id}`), never the raw path, so
//! metrics stay bounded and logs do not fill with ids that belong in `request_id`. The
//! span carries the method and route only: headers (and so `Authorization`) are never
//! recorded.

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::AppState;

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED.to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!("http", method = %method, route = %route);
    let response = next.run(request).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            latency_ms = took.as_millis() as u64,
            "request finished"
        )
    });
    state
        .metrics
        .http_request(method.as_str(), &route, status, took);
    response
}
