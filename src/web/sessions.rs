//! Sign-in state of the web review page: the tokens behind sessions (an `HttpOnly`,
//! `SameSite=Strict` cookie) and one-time sign-in links, how they are hashed for the
//! store, and the CSRF token each session's forms carry.
//!
//! Sessions and links live in the database (`crate::store::web_sessions`), so every
//! replica sharing it knows them and a restart signs nobody out. Tokens are 256 random
//! bits from the operating system's generator; the store only ever holds their
//! SHA-256 ([`token_hash`]), so a copy of the database cannot be replayed as a cookie
//! or a link. The CSRF token is derived from the cookie ([`csrf_for`]), so it needs no
//! column and differs for every session, and a session is bound to its reviewer's
//! secret at sign-in ([`binding`]): changing a reviewer's secret ends their sessions.

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a session lasts after sign-in (a working day and then some).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a one-time sign-in link stays valid after `serve` printed it.
pub const LINK_TTL: Duration = Duration::from_secs(3600);

/// 32 random bytes from the OS, as 64 hex characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Hex SHA-256 of `parts`, each ended by a NUL (no part may run into the next).
fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())
}

/// What the store keeps for a cookie or link token: its SHA-256, 64 hex characters.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The CSRF token of the session behind `cookie`: a SHA-256 of it under a label of its
/// own, so it is not the stored [`token_hash`], and the page showing it (the cookie is
/// `HttpOnly`) reveals nothing that signs anyone in.
pub fn csrf_for(cookie: &str) -> String {
    digest(&["greenlight web csrf", cookie])
}

/// Ties a session to its reviewer's secret: a SHA-256 of the cookie and the secret, so
/// the stored value says nothing about the secret without the cookie (which is never
/// stored). `None` (the local reviewer, whose secret is random per process) binds to
/// nothing: the empty string.
pub fn binding(cookie: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) => digest(&["greenlight web session", cookie, secret]),
        None => String::new(),
    }
}

/// Is a stored binding the one expected? Constant time.
pub fn binding_matches(stored: &str, expected: &str) -> bool {
    bool::from(stored.as_bytes().ct_eq(expected.as_bytes()))
}

/// Does a presented CSRF token equal the session's? Constant time; empty never matches.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn csrf_must_match_exactly() {
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("abc", ""));
        assert!(!csrf_matches("", ""));
    }

    #[test]
    fn what_is_stored_is_not_the_token_and_not_the_csrf() {
        let cookie = random_token();
        let stored = token_hash(&cookie);
        assert_eq!(stored.len(), 64);
        assert_ne!(stored, cookie);
        assert_eq!(stored, token_hash(&cookie), "stable across replicas");
        let csrf = csrf_for(&cookie);
        assert_ne!(csrf, stored);
        assert_ne!(csrf, csrf_for(&random_token()));
    }

    #[test]
    fn a_changed_secret_breaks_the_binding() {
        let cookie = random_token();
        let bound = binding(&cookie, Some("alice-secret-0123456789"));
        assert!(binding_matches(
            &bound,
            &binding(&cookie, Some("alice-secret-0123456789"))
        ));
        assert!(!binding_matches(
            &bound,
            &binding(&cookie, Some("alice-secret-rotated!!"))
        ));
        assert!(!binding_matches(
            &bound,
            &binding(&random_token(), Some("alice-secret-0123456789"))
        ));
        assert!(!binding_matches(&bound, ""));
        assert!(binding_matches(&binding(&cookie, None), ""));
        assert!(!bound.contains("alice"));
    }
}
