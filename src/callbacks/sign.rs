//! Signing a callback as Standard Webhooks specifies (standardwebhooks.com): the
//! headers `webhook-id`, `webhook-timestamp` and `webhook-signature` =
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's
//! base64-decoded bytes.
//!
//! The HMAC and its encoding are the `standardwebhooks` crate's (the reference Rust
//! implementation of the specification), so greenlight signs exactly as receivers'
//! libraries verify. The timestamp is the attempt's, not the decision's: receivers
//! refuse timestamps more than five minutes off, and a retry may come much later.

use super::settings::CallbackSecret;

/// The three Standard Webhooks headers of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `webhook-id`: the delivery's id (`msg_…`), the same on every attempt, so a
    /// receiver can deduplicate.
    pub id: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// `v1,<base64>`.
    pub signature: String,
}

/// Signs `body` for delivery `id` at `timestamp` (Unix seconds). Fails only for a
/// secret that is not base64 or a body that is not UTF-8; settings and the store
/// rule both out.
pub fn sign(
    secret: &CallbackSecret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Signed, String> {
    let webhook = standardwebhooks::Webhook::new(secret.expose()).map_err(|e| e.to_string())?;
    let signature = webhook
        .sign(id, timestamp, body)
        .map_err(|e| e.to_string())?;
    Ok(Signed {
        id: id.to_owned(),
        timestamp,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's published example (the Standard Webhooks repository's
    /// test vectors, also svix's).
    #[test]
    fn signs_the_published_vector() {
        let secret =
            CallbackSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let signed = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .expect("signs");
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// Checked by hand with HMAC-SHA256 (the `hmac` crate), not the signing crate.
    #[test]
    fn agrees_with_a_plain_hmac() {
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        let raw_key = [7u8; 24];
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw_key);
        let secret = CallbackSecret::parse(&format!("whsec_{encoded}")).expect("secret");
        let body = br#"{"type":"approval.decided"}"#;
        let signed = sign(&secret, "msg_1", 1700000000, body).expect("signs");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&raw_key).expect("key");
        mac.update(b"msg_1.1700000000.");
        mac.update(body);
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(signed.signature, format!("v1,{expected}"));
    }
}
