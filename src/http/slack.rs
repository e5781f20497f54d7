//! Slack's interactivity endpoint: button clicks and modal submits.
//!
//! The signature is checked on the raw body before anything is parsed; an unsigned,
//! stale or forged request gets 401 and changes nothing. The click is recorded before
//! the 200 goes back, and the ack never waits on a Slack API call.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};

use super::{extract::body_bytes, AppState};
use crate::{approval::interactions, error::ApiError, slack::interaction::Payload};

pub fn router() -> Router<AppState> {
    Router::new().route("/slack/interactions", post(interactions))
}

async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = state.verifier.verify(&headers, &body, now) {
        tracing::warn!(%error, "rejected an unsigned or forged Slack request");
        state.service.metrics().signature_failure(&error);
        return Err(ApiError::Unauthorized);
    }
    let payload = Payload::from_form(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    match interactions::handle(&state.service, &payload).await? {
        Some(ack) => Ok(Json(ack).into_response()),
        None => Ok(StatusCode::OK.into_response()),
    }
}
