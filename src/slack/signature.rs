//! Slack request signing (v0): the only thing that makes a button click trustworthy.
//!
//! Verification runs over the raw body bytes and the headers, before any parsing, so
//! nothing a forger sends is interpreted until the signature holds.

use std::fmt;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Slack's replay window: a signed request older (or newer) than this is refused.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
const SIGNATURE_HEADER: &str = "x-slack-signature";

/// Why a request was refused. Deliberately coarse: the caller answers 401 for all of
/// them, the variant only feeds logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// `X-Slack-Request-Timestamp` or `X-Slack-Signature` is absent, or not visible
    /// ASCII.
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature header")]
    MissingHeader,
    /// The timestamp header is not an integer (Slack sends unix seconds).
    #[error("X-Slack-Request-Timestamp is not a unix timestamp")]
    MalformedTimestamp,
    /// The timestamp is more than [`MAX_CLOCK_SKEW_SECS`] (300 s) from our clock,
    /// either way: a replay, or a badly skewed clock.
    #[error("request timestamp is outside the 5 minute window")]
    StaleTimestamp,
    /// The signature lacks the `v0=` prefix or its rest is not hex.
    #[error("X-Slack-Signature is not of the form v0=<hex>")]
    MalformedSignature,
    /// Well-formed, but not the HMAC-SHA256 of `v0:{timestamp}:{body}` under our
    /// signing secret: a forgery, a body changed on the way, or the wrong secret.
    #[error("signature does not match")]
    Mismatch,
}

/// Verifies Slack signatures with one signing secret.
#[derive(Clone)]
pub struct SignatureVerifier {
    secret: SecretString,
}

impl fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SignatureVerifier {
    /// A verifier for the app's signing secret (Slack's "Signing Secret", used as its
    /// UTF-8 bytes, never hex-decoded).
    pub fn new(secret: SecretString) -> Self {
        Self { secret }
    }

    /// Checks the headers and raw body of one request at time `now` (unix seconds).
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(SignatureError::MissingHeader)
        };
        let timestamp = header(TIMESTAMP_HEADER)?;
        let signature = header(SIGNATURE_HEADER)?;
        self.verify_parts(timestamp, signature, body, now)
    }

    fn verify_parts(
        &self,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| SignatureError::MalformedTimestamp)?;
        // abs_diff: a hostile timestamp such as i64::MIN must not overflow.
        if now.abs_diff(ts) > MAX_CLOCK_SKEW_SECS.unsigned_abs() {
            return Err(SignatureError::StaleTimestamp);
        }
        let hex_part = signature
            .strip_prefix("v0=")
            .ok_or(SignatureError::MalformedSignature)?;
        let expected = hex::decode(hex_part).map_err(|_| SignatureError::MalformedSignature)?;
        // `verify_slice` compares in constant time.
        self.mac(timestamp.trim(), body)
            .verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// The `v0=…` signature Slack would send for this body; used by tests and by
    /// anything that needs to sign a synthetic request.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(&timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v0={}", hex::encode(tag))
    }

    fn mac(&self, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        // The secret is used as its UTF-8 bytes, not hex-decoded.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"v0:");
        mac.update(timestamp.as_bytes());
        mac.update(b":");
        mac.update(body);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const VECTOR_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const VECTOR_TS: i64 = 1531420618;
    const VECTOR_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const VECTOR_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn verifier(secret: &str) -> SignatureVerifier {
        SignatureVerifier::new(secret.to_owned().into())
    }

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "X-Slack-Request-Timestamp",
            HeaderValue::from_str(ts).expect("ascii"),
        );
        h.insert(
            "X-Slack-Signature",
            HeaderValue::from_str(sig).expect("ascii"),
        );
        h
    }

    #[test]
    fn published_vector_signs_and_verifies() {
        assert_eq!(VECTOR_BODY.len(), 362);
        let v = verifier(VECTOR_SECRET);
        assert_eq!(v.sign(VECTOR_TS, VECTOR_BODY.as_bytes()), VECTOR_SIG);
        let h = headers(&VECTOR_TS.to_string(), VECTOR_SIG);
        assert_eq!(v.verify(&h, VECTOR_BODY.as_bytes(), VECTOR_TS + 10), Ok(()));
    }

    #[test]
    fn second_vector() {
        let v = verifier("fa2c05deeef5a4077494e89f54394de0");
        let sig = "v0=baa91ef62d346e56607bbdd278a8acd570b91226854f15a382f43d33be42f666";
        assert_eq!(v.sign(VECTOR_TS, b"test-body"), sig);
        assert_eq!(
            v.verify(&headers("1531420618", sig), b"test-body", VECTOR_TS),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_wrong_secret_and_bad_hex_are_refused() {
        let h = headers(&VECTOR_TS.to_string(), VECTOR_SIG);
        let mut body = VECTOR_BODY.as_bytes().to_vec();
        body[10] ^= 1;
        assert_eq!(
            verifier(VECTOR_SECRET).verify(&h, &body, VECTOR_TS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verifier("another-secret").verify(&h, VECTOR_BODY.as_bytes(), VECTOR_TS),
            Err(SignatureError::Mismatch)
        );
        let upper = headers(&VECTOR_TS.to_string(), &VECTOR_SIG.to_uppercase());
        assert_eq!(
            verifier(VECTOR_SECRET).verify(&upper, VECTOR_BODY.as_bytes(), VECTOR_TS),
            Err(SignatureError::MalformedSignature),
            "the V0= prefix is case-sensitive"
        );
        for bad in [
            "a2114d57",
            "v0=zz",
            "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=",
        ] {
            let err = verifier(VECTOR_SECRET)
                .verify(
                    &headers(&VECTOR_TS.to_string(), bad),
                    VECTOR_BODY.as_bytes(),
                    VECTOR_TS,
                )
                .expect_err(bad);
            assert!(
                matches!(
                    err,
                    SignatureError::MalformedSignature | SignatureError::Mismatch
                ),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn window_is_five_minutes_both_ways() {
        let v = verifier(VECTOR_SECRET);
        let h = headers(&VECTOR_TS.to_string(), VECTOR_SIG);
        let body = VECTOR_BODY.as_bytes();
        assert_eq!(v.verify(&h, body, VECTOR_TS + 300), Ok(()));
        assert_eq!(v.verify(&h, body, VECTOR_TS - 300), Ok(()));
        assert_eq!(
            v.verify(&h, body, VECTOR_TS + 301),
            Err(SignatureError::StaleTimestamp)
        );
        assert_eq!(
            v.verify(&h, body, VECTOR_TS - 301),
            Err(SignatureError::StaleTimestamp)
        );
    }

    #[test]
    fn missing_or_malformed_headers() {
        let v = verifier(VECTOR_SECRET);
        assert_eq!(
            v.verify(&HeaderMap::new(), b"x", 0),
            Err(SignatureError::MissingHeader)
        );
        let mut only_ts = HeaderMap::new();
        only_ts.insert("x-slack-request-timestamp", HeaderValue::from_static("1"));
        assert_eq!(
            v.verify(&only_ts, b"x", 1),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            v.verify(&headers("yesterday", VECTOR_SIG), b"x", 0),
            Err(SignatureError::MalformedTimestamp)
        );
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let v = verifier(VECTOR_SECRET);
        for ts in [i64::MIN, i64::MAX] {
            assert_eq!(
                v.verify(&headers(&ts.to_string(), VECTOR_SIG), b"x", VECTOR_TS),
                Err(SignatureError::StaleTimestamp)
            );
        }
    }

    #[test]
    fn debug_redacts_secret() {
        assert!(!format!("{:?}", verifier(VECTOR_SECRET)).contains(VECTOR_SECRET));
    }
}
