//! The request signature check (`src/slack/signature.rs`): runs on every byte a
//! stranger sends to `/slack/interactions`, before anything is parsed.

use axum::http::{HeaderMap, HeaderValue};
use greenlight::slack::signature::{SignatureError, SignatureVerifier, MAX_CLOCK_SKEW_SECS};
use proptest::prelude::*;

use crate::{assert_clear, fuzz};

const NOW: i64 = 1_764_000_000;

fn headers(timestamp: &[u8], signature: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // Bytes a header value cannot hold are dropped by `from_bytes` refusing them:
    // such a request never reaches the check.
    if let Ok(value) = HeaderValue::from_bytes(timestamp) {
        headers.insert("x-slack-request-timestamp", value);
    }
    if let Ok(value) = HeaderValue::from_bytes(signature) {
        headers.insert("x-slack-signature", value);
    }
    headers
}

fn verifier(secret: &str) -> SignatureVerifier {
    SignatureVerifier::new(secret.to_owned().into())
}

/// Header values: numbers near and far from now, Slack's shape, and junk.
fn timestamp() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (-400i64..400).prop_map(|d| (NOW + d).to_string().into_bytes()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        "[ 0-9+-]{0,24}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..32),
    ]
}

fn signature() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "v0=[0-9a-f]{64}".prop_map(String::into_bytes),
        "v0=[0-9a-fA-F]{0,130}".prop_map(String::into_bytes),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..80),
    ]
}

/// Any headers, body and clock: an answer, never a panic; refusals are clear.
#[test]
fn any_headers_and_body() {
    fuzz(
        "signature: any input",
        (
            "\\PC{1,40}",
            timestamp(),
            signature(),
            prop::collection::vec(any::<u8>(), 0..1024),
            prop_oneof![Just(NOW), any::<i64>()],
        ),
        |(secret, ts, sig, body, now)| {
            let result = verifier(&secret).verify(&headers(&ts, &sig), &body, now);
            if let Err(error) = result {
                assert_clear(&error.to_string());
            }
            Ok(())
        },
    );
}

/// A body Slack signed passes within the window and fails outside it; the smallest
/// change to body, timestamp, signature or secret fails.
#[test]
fn only_the_exact_signed_request_passes() {
    fuzz(
        "signature: signed then tampered",
        (
            "\\PC{1,40}",
            prop::collection::vec(any::<u8>(), 0..512),
            -600i64..600,
            any::<prop::sample::Index>(),
            1u8..=255,
        ),
        |(secret, body, skew, at, flip)| {
            let verifier = verifier(&secret);
            let ts = NOW + skew;
            let signed = verifier.sign(ts, &body);
            let good = verifier.verify(
                &headers(ts.to_string().as_bytes(), signed.as_bytes()),
                &body,
                NOW,
            );
            if skew.abs() <= MAX_CLOCK_SKEW_SECS {
                prop_assert_eq!(good, Ok(()));
            } else {
                prop_assert_eq!(good, Err(SignatureError::StaleTimestamp));
                return Ok(());
            }
            let h = headers(ts.to_string().as_bytes(), signed.as_bytes());
            if !body.is_empty() {
                let mut tampered = body.clone();
                let i = at.index(tampered.len());
                tampered[i] ^= flip;
                prop_assert_eq!(
                    verifier.verify(&h, &tampered, NOW),
                    Err(SignatureError::Mismatch)
                );
            }
            let mut longer = body.clone();
            longer.push(flip);
            prop_assert_eq!(
                verifier.verify(&h, &longer, NOW),
                Err(SignatureError::Mismatch)
            );
            // Another timestamp, still inside the window.
            let other_ts = if skew > 0 { ts - 1 } else { ts + 1 };
            let other = headers(other_ts.to_string().as_bytes(), signed.as_bytes());
            prop_assert_eq!(
                verifier.verify(&other, &body, NOW),
                Err(SignatureError::Mismatch)
            );
            let mut sig = signed.clone().into_bytes();
            let i = 3 + at.index(sig.len() - 3);
            sig[i] = if sig[i] == b'0' { b'1' } else { b'0' };
            let bad = headers(ts.to_string().as_bytes(), &sig);
            prop_assert_eq!(
                verifier.verify(&bad, &body, NOW),
                Err(SignatureError::Mismatch)
            );
            let wrong_secret = SignatureVerifier::new(format!("{secret}x").into());
            prop_assert_eq!(
                wrong_secret.verify(&h, &body, NOW),
                Err(SignatureError::Mismatch)
            );
            Ok(())
        },
    );
}
