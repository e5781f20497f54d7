//! Sign-in state of the web review page, in memory: sessions (behind an `HttpOnly`,
//! `SameSite=Strict` cookie, each with its CSRF token) and one-time sign-in links.
//!
//! Nothing here survives a restart: reviewers sign in again, and `serve` prints a
//! fresh link. Tokens are 256 random bits from the operating system's generator, and
//! the maps are keyed by their SHA-256, so a memory dump or a debug print of a key
//! cannot be replayed as a cookie or a link.

use std::time::Duration;

use dashmap::DashMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

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

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Does a presented CSRF token equal the session's? Constant time; empty never matches.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A signed-in reviewer: which one (an index into the configured reviewers), and the
/// token every state-changing request of this session must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub reviewer: usize,
    pub csrf: String,
    expires: Instant,
}

/// Live sessions, by the SHA-256 of their cookie value.
#[derive(Debug, Default)]
pub struct Sessions {
    map: DashMap<[u8; 32], Session>,
}

impl Sessions {
    /// Starts a session for `reviewer`; returns the cookie value and the CSRF token.
    pub fn create(&self, reviewer: usize) -> (String, String) {
        self.sweep();
        let (cookie, csrf) = (random_token(), random_token());
        self.map.insert(
            key(&cookie),
            Session {
                reviewer,
                csrf: csrf.clone(),
                expires: Instant::now() + SESSION_TTL,
            },
        );
        (cookie, csrf)
    }

    /// The session behind a cookie value, if it exists and has not expired.
    pub fn get(&self, cookie: &str) -> Option<Session> {
        let key = key(cookie);
        let session = self.map.get(&key).map(|s| s.clone())?;
        if session.expires <= Instant::now() {
            self.map.remove(&key);
            return None;
        }
        Some(session)
    }

    /// Ends a session (sign-out).
    pub fn remove(&self, cookie: &str) {
        self.map.remove(&key(cookie));
    }

    /// Drops expired sessions, so abandoned ones do not accumulate.
    fn sweep(&self) {
        let now = Instant::now();
        self.map.retain(|_, s| s.expires > now);
    }
}

/// One-time sign-in links, by the SHA-256 of their token.
#[derive(Debug, Default)]
pub struct Links {
    map: DashMap<[u8; 32], (usize, Instant)>,
}

impl Links {
    /// A new link token for `reviewer`, valid for `ttl`.
    pub fn issue(&self, reviewer: usize, ttl: Duration) -> String {
        let token = random_token();
        self.map
            .insert(key(&token), (reviewer, Instant::now() + ttl));
        token
    }

    /// Whose link this is, without using it up (the page that asks to confirm).
    pub fn peek(&self, token: &str) -> Option<usize> {
        let entry = self.map.get(&key(token)).map(|e| *e)?;
        (entry.1 > Instant::now()).then_some(entry.0)
    }

    /// Uses the link up: `Some(reviewer)` the first time, before it expires; `None`
    /// for a wrong, used or expired link.
    pub fn redeem(&self, token: &str) -> Option<usize> {
        let (_, (reviewer, expires)) = self.map.remove(&key(token))?;
        (expires > Instant::now()).then_some(reviewer)
    }
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

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_and_end() {
        let sessions = Sessions::default();
        let (cookie, csrf) = sessions.create(2);
        let session = sessions.get(&cookie).expect("live");
        assert_eq!(
            (session.reviewer, session.csrf.as_str()),
            (2, csrf.as_str())
        );
        assert!(sessions.get("forged").is_none());
        tokio::time::advance(SESSION_TTL).await;
        assert!(sessions.get(&cookie).is_none(), "expired");
        let (cookie, _) = sessions.create(0);
        sessions.remove(&cookie);
        assert!(sessions.get(&cookie).is_none(), "signed out");
    }

    #[tokio::test(start_paused = true)]
    async fn links_work_once_and_expire() {
        let links = Links::default();
        let token = links.issue(1, LINK_TTL);
        assert_eq!(links.peek(&token), Some(1));
        assert_eq!(links.redeem(&token), Some(1));
        assert_eq!(links.redeem(&token), None, "used up");
        assert_eq!(links.peek(&token), None);
        assert_eq!(links.redeem("wrong"), None);
        let token = links.issue(0, LINK_TTL);
        tokio::time::advance(LINK_TTL).await;
        assert_eq!(links.peek(&token), None);
        assert_eq!(links.redeem(&token), None, "expired");
    }
}
