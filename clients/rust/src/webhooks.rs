//! Verifying greenlight's decision callbacks (`callback_url`), which are signed as
//! Standard Webhooks specifies: headers `webhook-id`, `webhook-timestamp` (Unix
//! seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256>`), keyed with the
//! agent's `whsec_…` secret from the server's `GREENLIGHT_CALLBACK_SECRETS`.
//!
//! Verify over the raw body bytes, before parsing anything:
//!
//! ```no_run
//! # fn handle(headers: &http::HeaderMap, body: &[u8]) -> Result<(), greenlight_client::webhooks::VerifyError> {
//! let event = greenlight_client::webhooks::verify("whsec_…", headers, body)?;
//! if let Some(approval) = event.approval() {
//!     // resume the run that waits for approval.id, with approval.approved / approval.reason
//! }
//! # Ok(()) }
//! ```
//!
//! The check itself is the `standardwebhooks` crate's (the specification's reference
//! implementation): constant-time comparison, and timestamps more than five minutes
//! off refused, so a captured callback cannot be replayed later. A receiver should
//! still drop a `webhook-id` it has already handled: greenlight retries until it gets
//! a 2xx, so the same event may arrive twice.

use serde::Deserialize;
use serde_json::Value;

use crate::wire::Approval;

/// Why a callback was refused. Nothing in it repeats the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The secret is not `whsec_` + base64 (or plain base64).
    #[error("the webhook secret is not valid base64")]
    BadSecret,
    /// A `webhook-*` header is missing or unreadable.
    #[error("missing or unreadable header: {0}")]
    Header(&'static str),
    /// `webhook-timestamp` is more than five minutes away from now.
    #[error("the webhook timestamp is too old or too far in the future")]
    Stale,
    /// No `v1` signature in `webhook-signature` matches the body.
    #[error("the webhook signature does not match")]
    BadSignature,
    /// The signature matched but the body is not a greenlight callback.
    #[error("the webhook body is not a greenlight callback: {0}")]
    BadPayload(String),
}

/// A verified callback: `{"type", "timestamp", "data"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// `approval.decided` or `batch.decided`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was decided, RFC 3339.
    pub timestamp: String,
    /// What `GET /v1/approvals/{id}` (or `GET /v1/batches/{id}`) returns.
    pub data: Value,
}

impl Event {
    /// The decided request of an `approval.decided` event.
    pub fn approval(&self) -> Option<Approval> {
        (self.kind == "approval.decided")
            .then(|| serde_json::from_value(self.data.clone()).ok())
            .flatten()
    }

    /// The items of a `batch.decided` event, in the order they were submitted.
    pub fn batch_approvals(&self) -> Option<Vec<Approval>> {
        (self.kind == "batch.decided")
            .then(|| serde_json::from_value(self.data.get("approvals")?.clone()).ok())
            .flatten()
    }
}

/// Verifies `body` against `headers` with `secret` and parses it.
pub fn verify(secret: &str, headers: &http::HeaderMap, body: &[u8]) -> Result<Event, VerifyError> {
    use standardwebhooks::WebhookError as E;
    let webhook = standardwebhooks::Webhook::new(secret).map_err(|_| VerifyError::BadSecret)?;
    webhook.verify(body, headers).map_err(|error| match error {
        E::InvalidSecret(_) => VerifyError::BadSecret,
        E::MissingHeader(name) | E::InvalidHeader(name) => VerifyError::Header(name),
        E::InvalidTimestamp => VerifyError::Header("timestamp"),
        E::TimestampTooOldError | E::FutureTimestampError => VerifyError::Stale,
        E::InvalidSignature => VerifyError::BadSignature,
        E::InvalidPayload => VerifyError::BadPayload("not UTF-8".into()),
    })?;
    serde_json::from_slice(body).map_err(|e| VerifyError::BadPayload(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn signed(body: &str, timestamp: i64) -> http::HeaderMap {
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        let key = base64::engine::general_purpose::STANDARD
            .decode(SECRET.trim_start_matches("whsec_"))
            .expect("key");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("mac");
        mac.update(format!("msg_1.{timestamp}.{body}").as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "msg_1".parse().expect("h"));
        headers.insert(
            "webhook-timestamp",
            timestamp.to_string().parse().expect("h"),
        );
        headers.insert(
            "webhook-signature",
            format!("v1,{signature}").parse().expect("h"),
        );
        headers
    }

    const BODY: &str = r#"{"type":"approval.decided","timestamp":"2026-11-30T12:00:00.000Z","data":{"id":"0190a0b0-0000-7000-8000-000000000001","status":"denied","approved":false,"reason":"no","created_at":"x","expires_at":"y","agent":"ci","channel":""}}"#;

    #[test]
    fn a_signature_made_with_a_plain_hmac_verifies() {
        let now = chrono::Utc::now().timestamp();
        let event = verify(SECRET, &signed(BODY, now), BODY.as_bytes()).expect("valid");
        let approval = event.approval().expect("an approval");
        assert!(!approval.approved);
        assert_eq!(approval.reason, "no");
        assert!(event.batch_approvals().is_none());
    }

    #[test]
    fn tampering_a_wrong_secret_and_staleness_are_refused() {
        let now = chrono::Utc::now().timestamp();
        let headers = signed(BODY, now);
        let tampered = BODY.replace("denied", "approved");
        assert_eq!(
            verify(SECRET, &headers, tampered.as_bytes()),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                &headers,
                BODY.as_bytes()
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, &signed(BODY, now - 3600), BODY.as_bytes()),
            Err(VerifyError::Stale)
        );
        let mut missing = headers.clone();
        missing.remove("webhook-signature");
        assert!(matches!(
            verify(SECRET, &missing, BODY.as_bytes()),
            Err(VerifyError::Header(_))
        ));
    }
}
