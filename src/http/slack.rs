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
use crate::{
    error::ApiError,
    slack::{interaction::Payload, signature::SignatureError},
    store::NewEvent,
};

/// At most this many requests get a `click_rejected` event from one forged body, so a
/// forger cannot turn one request into many writes.
const MAX_REJECTED_PER_BODY: usize = 2;

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
        record_rejected_clicks(&state, &body, error).await;
        return Err(ApiError::BadSlackSignature);
    }
    let payload = Payload::from_form(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    match state.interactions.handle(&payload).await? {
        Some(ack) => Ok(Json(ack).into_response()),
        None => Ok(StatusCode::OK.into_response()),
    }
}

/// Puts a failed-signature attempt on the audit trail of the request it names, if that
/// request exists. Nothing in the body is trusted: no actor is recorded, only that a
/// click with a bad signature arrived for this id, and why it was refused.
///
/// This endpoint is public and request ids are shown in Slack messages, so anyone can
/// send these, as fast as they like, to a trail nothing may shorten. They are therefore
/// not written one by one: each is counted in a tally the store holds in memory
/// ([`crate::store::Store::hold_event`]), written as one `click_rejected` entry with
/// `detail.count` at most once a minute per request and refusal reason (and when the
/// trail is read). A flood costs a read to check the id, and no write of its own.
async fn record_rejected_clicks(state: &AppState, body: &[u8], error: SignatureError) {
    let Ok(payload) = Payload::from_form(body) else {
        return;
    };
    let store = state.service.store();
    for click in payload.clicks().into_iter().take(MAX_REJECTED_PER_BODY) {
        // Only for requests that exist: an unknown id is not worth a tally.
        if matches!(store.get(click.approval_id).await, Ok(Some(_))) {
            let event = NewEvent::new(
                "click_rejected",
                None,
                serde_json::json!({ "why": "bad_signature", "error": error.to_string() }),
            );
            store.hold_event(click.approval_id, event);
        }
    }
}
