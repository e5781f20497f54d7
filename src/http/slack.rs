//! Slack's interactivity endpoint: button clicks and modal submits.
//!
//! The signature is checked on the raw body before anything is parsed; an unsigned,
//! stale or forged request gets 401 and changes nothing. The click is recorded before
//! the 200 goes back, and the ack never waits on a Slack API call.

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};

use super::{extract::body_bytes, AppState};
use crate::{error::ApiError, slack::interaction::Payload};

pub fn router() -> Router<AppState> {
    Router::new().route("/slack/interactions", post(interactions))
}

async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body_bytes(body)?;
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = state.verifier.verify(&headers, &body, now) {
        tracing::warn!(%error, "rejected an unsigned or forged Slack request");
        return Err(ApiError::Unauthorized);
    }
    let payload = Payload::from_form(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    for click in payload.clicks() {
        let outcome = state.service.click(&click).await?;
        tracing::info!(request_id = %click.approval_id, user = %click.user.id, outcome = outcome.as_str(), "click");
    }
    Ok(StatusCode::OK)
}
