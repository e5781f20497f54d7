//! Who may sign in to the web review page: `GREENLIGHT_REVIEWERS`, parsed here.
//!
//! The shape mirrors `GREENLIGHT_API_TOKENS`: comma-separated entries, each
//! `name:secret` or `name:SLACK_USER_ID:secret`. The Slack user id makes the web
//! reviewer the same person as in Slack: approver lists (`GREENLIGHT_APPROVERS`, policy
//! rules) name them by it, a vote in either place counts once, and the no-self-approval
//! rule compares it with the request's `requester_slack_id`. Without one, the reviewer
//! is `web:<name>`, which approver lists may name like a Slack user id
//! (`approvers = ["web:alice", "U0SRE"]`).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::model::{is_user_id, Reviewer, Surface};

/// Shortest secret accepted: as for agents' tokens, guessing must not be an option.
pub const MIN_SECRET_CHARS: usize = 16;

/// One reviewer of the web page.
#[derive(Clone)]
pub struct WebReviewer {
    /// 1–64 letters, digits, `-`, `_`, `.`: shown on the page and in the audit trail.
    pub name: String,
    /// Their Slack user id (`U…`/`W…`), when they are also in the Slack workspace.
    pub slack_user_id: Option<String>,
    /// What they type to sign in (at least [`MIN_SECRET_CHARS`] characters).
    pub secret: SecretString,
}

impl fmt::Debug for WebReviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebReviewer")
            .field("name", &self.name)
            .field("slack_user_id", &self.slack_user_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl WebReviewer {
    /// The reviewer as the approval domain knows them: their Slack user id when they
    /// have one, else `web:<name>`.
    pub fn reviewer(&self) -> Reviewer {
        Reviewer {
            id: self.id(),
            name: Some(self.name.clone()),
            surface: Surface::Web,
        }
    }

    /// What approver lists, votes and `decided_by` hold for this reviewer.
    pub fn id(&self) -> String {
        self.slack_user_id
            .clone()
            .unwrap_or_else(|| crate::model::web_reviewer_id(&self.name))
    }
}

/// The reviewer whose secret is `presented`, by index. Every secret is compared in
/// constant time, all of them, so timing tells nothing about near misses.
pub fn by_secret(reviewers: &[WebReviewer], presented: &str) -> Option<usize> {
    let mut found = None;
    for (index, reviewer) in reviewers.iter().enumerate() {
        let expected = reviewer.secret.expose_secret().as_bytes();
        if bool::from(expected.ct_eq(presented.as_bytes())) {
            found = Some(index);
        }
    }
    found
}

/// Parses `GREENLIGHT_REVIEWERS`. `Err` is the problem in words, naming the entry
/// by position and name, never by its secret.
pub fn parse(raw: &str) -> Result<Vec<WebReviewer>, String> {
    let mut reviewers: Vec<WebReviewer> = Vec::new();
    for (index, entry) in raw.split(',').map(str::trim).enumerate() {
        let n = index + 1;
        let parts: Vec<&str> = entry.splitn(3, ':').map(str::trim).collect();
        let (name, slack_user_id, secret) = match parts.as_slice() {
            [name, secret] => (*name, None, *secret),
            [name, "", secret] => (*name, None, *secret),
            [name, id, secret] => (*name, Some((*id).to_owned()), *secret),
            _ => {
                return Err(format!(
                    "entry {n} must be name:secret or name:SLACK_USER_ID:secret"
                ))
            }
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "entry {n}: the name must be 1-64 letters, digits, '-', '_' or '.'"
            ));
        }
        if let Some(id) = &slack_user_id {
            if !is_user_id(id) {
                return Err(format!(
                    "entry {n} ({name}): {id:?} is not a Slack user id (U… or W…)"
                ));
            }
        }
        if secret.chars().count() < MIN_SECRET_CHARS {
            return Err(format!(
                "entry {n} ({name}): the secret must be at least {MIN_SECRET_CHARS} characters"
            ));
        }
        if reviewers.iter().any(|r| r.name == name) {
            return Err(format!("the name {name:?} is used twice"));
        }
        if reviewers.iter().any(|r| r.secret.expose_secret() == secret) {
            return Err(format!("entry {n} ({name}) repeats another entry's secret"));
        }
        reviewers.push(WebReviewer {
            name: name.to_owned(),
            slack_user_id,
            secret: secret.to_owned().into(),
        });
    }
    Ok(reviewers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_parse() {
        let list =
            parse("alice:U0ALICE:alice-secret-0123456789, bob:bob-secret-0123456789").expect("ok");
        assert_eq!(list[0].name, "alice");
        assert_eq!(list[0].id(), "U0ALICE");
        assert_eq!(list[1].id(), "web:bob");
        assert_eq!(list[1].reviewer().surface, Surface::Web);
        assert_eq!(by_secret(&list, "bob-secret-0123456789"), Some(1));
        assert_eq!(by_secret(&list, "bob-secret-012345678"), None);
        assert_eq!(by_secret(&list, ""), None);
    }

    #[test]
    fn a_secret_may_contain_colons() {
        let list = parse("carol::a:b:c:0123456789abcdef").expect("ok");
        assert_eq!(list[0].slack_user_id, None);
        assert_eq!(by_secret(&list, "a:b:c:0123456789abcdef"), Some(0));
    }

    #[test]
    fn problems_are_named_without_the_secret() {
        for raw in [
            "alice",
            "alice:short",
            "al ice:0123456789abcdefgh",
            "alice:#ops:0123456789abcdefgh",
            "a:0123456789abcdefgh,a:0123456789abcdefgX",
            "a:0123456789abcdefgh,b:0123456789abcdefgh",
        ] {
            let err = parse(raw).expect_err(raw);
            assert!(!err.contains("0123456789abcdefgh"), "{raw}: {err}");
        }
        let debug = format!("{:?}", parse("x:0123456789abcdefgh").expect("ok"));
        assert!(!debug.contains("0123456789"), "{debug}");
    }
}
